"""Quality control end to end, on each CRM: a rejection webhook -> inbox -> queue -> worker -> a
manager's task in the fake CRM with the answer page's link -> answers posted on that page over HTTP
-> the reviewer's task -> the decision on the review page -> the fake card moves back to work and
its manager gets a task (or a note is added on confirm); deadlines remind and escalate once;
`ignore` reasons start nothing; duplicate and concurrent webhooks start one review.
moto's server, the app on a real HTTP server, the fake CRM and Telegram servers."""

from __future__ import annotations

import re
import threading
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
import yaml

from leadwatch.config import TenantRegistry, parse_tenant
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, LocalStack, SimClock
from workflows.qc.messages import AUDIT
from workflows.qc.reviews import Reviews

MSK = ZoneInfo("Europe/Moscow")
MONDAY_10 = datetime(2025, 11, 17, 10, 0, tzinfo=MSK)
MANAGER, REVIEWER = "7", "8"
B24_REASON_FIELD = "UF_CRM_1704817400"
PRICE, SPAM = 44, 45  # Bitrix24 list items; amoCRM loss reasons get the same ids in the fake


def section(kind: str) -> dict[str, Any]:
    reasons = [
        {
            "id": PRICE,
            "name": "Price",
            "action": "check",
            "questions": ["Expected price?", "Offered a discount?"],
        },
        {"id": SPAM, "name": "Spam", "action": "ignore"},
    ]
    funnel: dict[str, Any] = {"returned_stage": "IN_PROCESS", "reasons": reasons}
    if kind == "bitrix24":
        funnel |= {"stages": ["JUNK"], "reason_field": B24_REASON_FIELD}
    return {
        "reviewers": [REVIEWER],
        "pages_url": "{base_url}",
        "funnels": [funnel],
        "deadlines": {
            "answer": {"within": "2h", "remind": "50%", "escalate_after": "30m"},
            "review": {"within": "4h", "remind": "1h"},
        },
        # A short baseline: the audit test replays three weeks, not nine.
        "audit": {"baseline_weeks": 2, "min_week": 5, "min_baseline": 5},
        "spot_checks": {"sample_size": 2},
    }


@pytest.fixture(scope="module")
def stack():
    with LocalStack(
        SimClock(MONDAY_10),
        http=True,
        managers={MANAGER: "Anna Petrova", REVIEWER: "Ivan Orlov"},
        tenant_sections={},
    ) as running:
        yield running


class Crm:
    """One tenant's fake CRM, in the words the test needs."""

    def __init__(self, stack: LocalStack, tenant: str):
        self.stack, self.tenant = stack, tenant
        self.fake: Any = stack.bitrix if tenant == B24_TENANT else stack.amo

    def create(self, title: str, manager: str = MANAGER) -> str:
        if self.tenant == B24_TENANT:
            return self.stack.bitrix.create_lead(
                title=title, assigned_by_id=manager, created_at=self.stack.clock()
            )
        return self.stack.amo.create_lead(
            name=title, responsible_user_id=manager, created_at=self.stack.clock()
        )

    def reject(self, lead: str, reason: int) -> None:
        if self.tenant == B24_TENANT:
            self.stack.bitrix.reject_lead(lead, str(reason), at=self.stack.clock())
        else:
            self.stack.amo.reject(lead, reason, at=self.stack.clock(), by=MANAGER)

    def stage(self, lead: str) -> str:
        card = self.fake.lead(lead)
        return str(card["STATUS_ID"] if self.tenant == B24_TENANT else card["status_id"])

    def returned_stage(self) -> str:
        return "IN_PROCESS" if self.tenant == B24_TENANT else str(self.stack.amo.work_stage())

    def tasks(self, lead: str) -> list[Any]:
        entity = EntityRef(EntityType.LEAD, lead)
        return sorted((t for t in self.fake.tasks.values() if t.entity == entity), key=lambda t: int(t.id))

    def notes(self, lead: str) -> list[str]:
        return [n.text for n in self.fake.notes_on(EntityRef(EntityType.LEAD, lead))]


WEEKS = iter(range(0, 1000))


@pytest.fixture(params=[B24_TENANT, AMO_TENANT])
def crm(request, stack: LocalStack) -> Crm:
    """Each test in a week of its own; the tenant's qc section set for its CRM (the amoCRM funnel
    returns cards to the fake's work stage)."""
    tenant = request.param
    kind = "bitrix24" if tenant == B24_TENANT else "amocrm"
    qc = section(kind)
    if kind == "amocrm":
        qc["funnels"][0]["returned_stage"] = str(stack.amo.work_stage())
        for reason in (PRICE, SPAM):
            stack.amo.add_loss_reason(reason, f"reason {reason}")
    path = stack.tenants_dir / f"{tenant}.yaml"
    data = yaml.safe_load(path.read_text())
    data["qc"] = {**qc, "pages_url": stack.base_url}
    # The other tenant's quality control off: both write to one chat.
    configs = {}
    for other in (B24_TENANT, AMO_TENANT):
        config = stack.ctx.tenant(other)
        configs[other] = config.model_copy(update={"qc": config.qc.model_copy(update={"enabled": False})})
    configs[tenant] = parse_tenant(yaml.safe_dump(data), path.name, stack.ctx.processes.tenant_model())
    stack.ctx.registry = TenantRegistry(configs)
    # Four weeks apart: the audit test's three weeks see no other test's rejections.
    stack.clock.set(MONDAY_10 + timedelta(weeks=4 * next(WEEKS)))
    for fake in (stack.bitrix, stack.amo, stack.telegram):
        fake.clear_faults()
        fake.clear_log()
    stack.telegram.messages.clear()
    return Crm(stack, tenant)


LINK = re.compile(r"https?://\S+/qc/(?:answer|review)/[A-Za-z0-9_.\-]+")


def link_in(task: Any) -> str:
    found = LINK.search(task.description)
    assert found, task.description
    return found[0]


def page(link: str, form: dict[str, str] | None = None) -> requests.Response:
    if form is None:
        return requests.get(link, timeout=10)
    return requests.post(link, data=form, timeout=10)


def settle(stack: LocalStack) -> None:
    """What a minute of the deployment does after a click: the queue drained, the sweep run."""
    stack.pump()
    stack.run_schedule("qc", "sweep")
    stack.pump()


def reviews(stack: LocalStack, tenant: str) -> Reviews:
    return Reviews(stack.ctx.state("qc"), tenant)


def journal(stack: LocalStack, tenant: str, kind: str) -> list[Any]:
    now = stack.clock()
    return stack.ctx.store.violations(tenant, now - timedelta(days=30), now + timedelta(days=30), kind)


def test_rejection_answers_and_a_return_to_work(stack, crm):
    lead = crm.create("Kitchen & <dining> set")
    crm.reject(lead, PRICE)
    stack.pump()
    [task] = crm.tasks(lead)
    assert task.responsible == MANAGER and not task.completed
    answer = link_in(task)
    assert urlsplit(answer).netloc == urlsplit(stack.base_url).netloc
    form = page(answer)
    assert form.status_code == 200 and "Expected price?" in form.text and "&lt;dining&gt;" in form.text

    stack.clock.advance(timedelta(minutes=20))
    done = page(answer, {"answer-0": "About 300k", "answer-1": "Yes, 5%"})
    assert done.status_code == 200
    settle(stack)
    first, second = crm.tasks(lead)
    assert first.completed and second.responsible == REVIEWER and not second.completed
    review_link = link_in(second)
    shown = page(review_link)
    assert shown.status_code == 200 and "About 300k" in shown.text

    stack.clock.advance(timedelta(minutes=30))
    assert page(review_link, {"decision": "return", "comment": "Call them back"}).status_code == 200
    settle(stack)
    assert crm.stage(lead) == crm.returned_stage()
    tasks = crm.tasks(lead)
    assert all(t.completed for t in tasks[:2])
    assert tasks[2].responsible == MANAGER and "Call them back" in tasks[2].description
    assert len(crm.notes(lead)) == 1
    [row] = [r for r in journal(stack, crm.tenant, "qc_returned_to_work") if r.entity == f"lead:{lead}"]
    assert row.manager == MANAGER and row.details["comment"] == "Call them back"
    # A second click, or the manager's old link: told, nothing changes.
    assert page(review_link, {"decision": "confirm"}).status_code == 409
    assert page(answer, {"answer-0": "x", "answer-1": "y"}).status_code == 409
    settle(stack)
    assert len(crm.tasks(lead)) == 3 and len(crm.notes(lead)) == 1
    # The card moved back to work: the echo of leadwatch's own write starts nothing new.
    assert [r for r, _, _ in reviews(stack, crm.tenant).open_ids() if r.startswith(f"lead:{lead}:")] == []


def test_a_confirmation_adds_a_note_and_is_journaled(stack, crm):
    lead = crm.create("Wardrobe")
    crm.reject(lead, PRICE)
    stack.pump()
    [task] = crm.tasks(lead)
    page(link_in(task), {"answer-0": "Too expensive", "answer-1": "No"})
    settle(stack)
    review_task = crm.tasks(lead)[1]
    assert page(link_in(review_task), {"decision": "confirm"}).status_code == 200
    settle(stack)
    assert crm.stage(lead) != crm.returned_stage()
    [note] = crm.notes(lead)
    assert "Ivan Orlov" in note  # who confirmed it, in the tenant's language
    assert [r.entity for r in journal(stack, crm.tenant, "qc_confirmed")].count(f"lead:{lead}") == 1


def test_an_overdue_answer_is_reminded_journaled_and_escalated_once(stack, crm):
    lead = crm.create("Sofa")
    crm.reject(lead, PRICE)
    stack.pump()
    [task] = crm.tasks(lead)
    book = reviews(stack, crm.tenant)
    [stored] = [
        s for s in book.get_many([r for r, _, _ in book.open_ids()]).values() if s.review.entity.id == lead
    ]
    clock = stored.review.answer_task
    assert clock is not None and clock.remind_at and clock.escalate_at
    stack.clock.set(clock.remind_at + timedelta(minutes=1))
    settle(stack)
    if crm.tenant == B24_TENANT:
        assert len(stack.bitrix.tasks[task.id].comments) == 1
    else:
        assert len(crm.notes(lead)) == 1
    stack.clock.set(clock.escalate_at + timedelta(minutes=1))
    for _ in range(3):
        settle(stack)
    escalations = [m for m in stack.telegram.messages if "Sofa" in m.text]
    assert len(escalations) == 1
    assert [
        r.manager for r in journal(stack, crm.tenant, "qc_answer_overdue") if r.entity == f"lead:{lead}"
    ] == [MANAGER]
    if crm.tenant == B24_TENANT:
        assert len(stack.bitrix.tasks[task.id].comments) == 1  # reminded once


def test_an_ignored_reason_starts_nothing(stack, crm):
    lead = crm.create("Spam lead")
    crm.reject(lead, SPAM)
    stack.pump()
    settle(stack)
    assert crm.tasks(lead) == []
    rows = reviews(stack, crm.tenant).rejections([f"{stack.clock():%Y-%m}"])
    [row] = [r for r in rows if r.value["entity"] == f"lead:{lead}"]
    assert row.value["action"] == "ignore"


def test_duplicate_and_concurrent_webhooks_start_one_review(stack, crm):
    lead = crm.create("Table")
    stack.pump()
    # The CRM delivers the rejection three times (its retries), from three threads at once, and
    # four workers take the queue side by side.
    bodies: list[bytes] = []
    deliver = crm.fake.deliver
    crm.fake.deliver = bodies.append
    try:
        crm.reject(lead, PRICE)
    finally:
        crm.fake.deliver = deliver
    assert bodies
    barrier = threading.Barrier(3)

    def send() -> None:
        barrier.wait()
        for body in bodies:
            deliver(body)

    threads = [threading.Thread(target=send) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stack.pump(workers=4)
    settle(stack)
    assert len(crm.tasks(lead)) == 1
    assert len([r for r, _, _ in reviews(stack, crm.tenant).open_ids() if r.startswith(f"lead:{lead}:")]) == 1
    rows = reviews(stack, crm.tenant).rejections([f"{stack.clock():%Y-%m}"])
    assert [r.value["entity"] for r in rows].count(f"lead:{lead}") == 1


def test_racing_reviewers_decide_once(stack, crm):
    lead = crm.create("Chair")
    crm.reject(lead, PRICE)
    stack.pump()
    [task] = crm.tasks(lead)
    page(link_in(task), {"answer-0": "a", "answer-1": "b"})
    settle(stack)
    review_link = link_in(crm.tasks(lead)[1])
    answers: list[int] = []
    barrier = threading.Barrier(2)

    def click(decision: str) -> None:
        barrier.wait()
        answers.append(page(review_link, {"decision": decision}).status_code)

    threads = [threading.Thread(target=click, args=(d,)) for d in ("return", "confirm")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    settle(stack)
    assert sorted(answers) == [200, 409]
    decided = journal(stack, crm.tenant, "qc_returned_to_work") + journal(stack, crm.tenant, "qc_confirmed")
    assert [r.entity for r in decided].count(f"lead:{lead}") == 1
    assert len(crm.notes(lead)) == 1


def test_the_weekly_audit_flags_a_manager_dumping_leads_and_sends_spot_checks(stack, crm):
    """Two weeks of baseline and the audited week: manager 7 goes from 1 ignored reason in 6
    rejections a week to 6 in 7; manager 8 stays at 1 in 6. The audit runs on the Monday after,
    at its time, through the qc audit schedule."""
    monday = stack.clock()
    dumped: list[str] = []
    for week, (mine, ignored_mine) in enumerate([(6, 1), (6, 1), (7, 6)]):
        for manager, total, ignored in ((MANAGER, mine, ignored_mine), (REVIEWER, 6, 1)):
            for n in range(total):
                stack.clock.set(monday + timedelta(weeks=week, days=n % 5, minutes=10 * n))
                lead = crm.create(f"Lead {week}-{manager}-{n}", manager)
                stack.clock.advance(timedelta(minutes=2))
                crm.reject(lead, SPAM if n < ignored else PRICE)
                if week == 2 and n < ignored:
                    dumped.append(lead)
        stack.pump()
    audited = monday + timedelta(weeks=2)
    tasks_before = {t.id for t in crm.fake.tasks.values()}
    # Monday 09:24 of the week after: the week before the audited one was audited on its own
    # Monday already (nothing to flag there); this one's audit is not due yet.
    stack.clock.set(monday + timedelta(weeks=2, hours=0.5))
    stack.run_schedule("qc", "audit")
    stack.telegram.messages.clear()
    stack.clock.set(monday + timedelta(weeks=3, hours=-0.6))
    stack.run_schedule("qc", "audit")
    assert not [m for m in stack.telegram.messages if AUDIT.of(m.text)]
    stack.clock.set(monday + timedelta(weeks=3))  # Monday 10:00, past 09:30
    reports = stack.run_schedule("qc", "audit")
    settle(stack)
    report = reports[crm.tenant]
    # Anna, and with her the department (19 rejections, 8 ignored, against 4 of 24); not Ivan.
    assert MANAGER in report["flagged"] and REVIEWER not in report["flagged"], report
    [message] = [m for m in stack.telegram.messages if AUDIT.of(m.text)]
    assert "Anna Petrova" in message.text
    assert re.search(r"p [=<] 0[.,]\d+", message.text), message.text
    assert "6" in message.text and "7" in message.text
    # The spot checks: two of the week's ignored rejections (the department is flagged too, so drawn
    # from everyone's), to the reviewer, through the review page.
    spot = [t for t in crm.fake.tasks.values() if t.id not in tasks_before]
    assert len(spot) == 2 and all(t.responsible == REVIEWER for t in spot)
    assert {t.entity.id for t in spot} <= set(dumped)
    shown = page(link_in(spot[0]))
    assert shown.status_code == 200
    # Run again: nothing is sent or made twice.
    stack.run_schedule("qc", "audit")
    settle(stack)
    assert len([m for m in stack.telegram.messages if AUDIT.of(m.text)]) == 1
    assert len([t for t in crm.fake.tasks.values() if t.id not in tasks_before]) == 2
    # On demand, for the same week, through the read API.
    week = f"{audited.isocalendar().year}-W{audited.isocalendar().week:02d}"
    status, body = stack.get(
        f"/tenants/{crm.tenant}/qc/audit?week={week}", headers={"X-Api-Key": stack.api_key(crm.tenant)}
    )
    assert status == 200 and body["week"] == week
    [anna] = [v for v in body["verdicts"] if v["subject"] == MANAGER]
    assert anna["flagged"] and anna["week"] == {"ignored": 6, "total": 7, "share": 6 / 7}
    assert anna["p_baseline"] < 0.01
