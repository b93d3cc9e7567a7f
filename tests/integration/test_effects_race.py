"""Exactly-once effects under concurrency: workers racing over the same effects, through the real
executor, moto's (serial) server over HTTP and the fake CRMs and Telegram over HTTP.

Every race here used to double a Telegram message: the executor checked its ledger, performed,
then recorded, so two workers could both pass the check. Now it claims each effect first.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from leadwatch import executor
from leadwatch.effects import Notify, SetCardFields
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.stack import (
    AMO_TENANT,
    B24_TENANT,
    AmoDriver,
    BitrixDriver,
    CrmDriver,
    LocalStack,
    SimClock,
)
from leadwatch.testing.telegram import slow
from workflows.dialing.messages import REJECTION_ALERT, REPORT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MSK = ZoneInfo("Europe/Moscow")
MONDAY_9 = datetime(2025, 11, 10, 9, 0, tzinfo=MSK)  # a plain week: Mon 10 .. Fri 14 Nov 2025
WORKERS = 20


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(SimClock(MONDAY_9), managers={"7": "Anna Petrova"}) as running:
        yield running


WEEKS = iter(range(1, 1000))


@pytest.fixture
def fresh(stack: LocalStack) -> LocalStack:
    """Each test in a week of its own (report days and plan windows never overlap), faults cleared."""
    calendar = stack.ctx.calendar(stack.ctx.tenant(B24_TENANT))
    monday = MONDAY_9 + timedelta(weeks=next(WEEKS))
    while not all(calendar.is_working_day(monday.date() + timedelta(days=d)) for d in range(5)):
        monday = MONDAY_9 + timedelta(weeks=next(WEEKS))
    stack.clock.set(monday)
    for fake in (stack.bitrix, stack.amo, stack.telegram):
        fake.clear_faults()
        fake.clear_log()
    stack.bitrix.applied.clear()
    stack.amo.applied.clear()
    stack.telegram.messages.clear()
    return stack


def driver(stack: LocalStack, tenant: str) -> CrmDriver:
    return BitrixDriver(stack.bitrix) if tenant == B24_TENANT else AmoDriver(stack.amo)


def at_once(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run the jobs in threads released together; returns their results (re-raises the first error)."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[index] = jobs[index]()
        except BaseException as exc:  # surfaced below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


def slow_first_send(stack: LocalStack, seconds: float = 1.0) -> None:
    """The first message takes a while (well within the client's timeout): a wide race window."""
    stack.telegram.fail_next(
        slow(seconds, then=stack.telegram.handle), when=lambda r: r.path.endswith("/sendMessage")
    )


# ----------------------------------------------------------------------------- the executor itself


def _quiet_leads(stack: LocalStack, tenant: str, count: int) -> list[str]:
    """Cards in the fake CRM whose creation webhooks go nowhere (this test drives the executor only)."""
    fake = stack.bitrix if tenant == B24_TENANT else stack.amo
    deliver = fake.deliver
    fake.deliver = lambda body: None
    try:
        return [driver(stack, tenant).create(f"Race card {n}", "7", stack.clock()) for n in range(count)]
    finally:
        fake.deliver = deliver


@pytest.mark.parametrize("tenant", [B24_TENANT, AMO_TENANT])
def test_twenty_workers_perform_the_same_effects_once(fresh: LocalStack, tenant: str):
    stack = fresh
    config = stack.ctx.tenant(tenant)
    run = uuid.uuid4().hex[:8]
    cards = _quiet_leads(stack, tenant, 3)
    field = config.timeliness.intake_field
    writes = [
        SetCardFields(f"race:{run}:write:{card}", EntityRef(EntityType.LEAD, card), {field: stack.clock()})
        for card in cards
    ]
    notes = [Notify(f"race:{run}:note:{n}", f"Race {run} message {n}") for n in range(3)]
    effects = [*writes, *notes]
    slow_first_send(stack)

    outcomes = at_once([lambda: executor.perform(stack.ctx, config, effects)] * WORKERS)

    sent = Counter(m.text for m in stack.telegram.messages if run in m.text)
    assert sent == Counter(n.text for n in notes)
    applied = stack.bitrix.applied if tenant == B24_TENANT else stack.amo.applied
    assert Counter(str(card) for _, card in applied) == Counter(cards)
    # Whoever did not perform an effect saw it held (to retry later) or already done; never failed.
    assert all(not outcome.failed for outcome in outcomes), [o.failed for o in outcomes]
    assert sum(outcome.performed for outcome in outcomes) == len(effects)
    # A later run (the retry of a worker that saw them held) finds everything done and sends nothing.
    again = executor.perform(stack.ctx, config, effects)
    assert again.all_done([e.effect_id for e in effects]) and again.performed == 0
    assert len([m for m in stack.telegram.messages if run in m.text]) == len(notes)


# ----------------------------------------------------------------------------- the reproductions


def _receive_all(stack: LocalStack) -> list[Any]:
    """Everything in the worker's queue now, as dispatch messages (hidden from other receivers)."""
    from leadwatch.dispatch import Message

    found: dict[str, Message] = {}
    while True:
        batch = stack.sqs.receive_message(
            QueueUrl=stack.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=300, WaitTimeSeconds=0
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            found[message["MessageId"]] = Message(message["MessageId"], message["Body"])
            stack.sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return list(found.values())


def _work(stack: LocalStack, messages: list[Any]) -> list[str]:
    """One worker invocation on these messages; the ids it asks SQS to retry."""
    from leadwatch import dispatch

    return list(dispatch.handle(stack.ctx, messages).failed)


def _rejections(stack: LocalStack, tenant: str, lead: str) -> list:
    now = stack.clock()
    return [
        row
        for row in stack.ctx.store.violations(tenant, now - timedelta(days=30), now + timedelta(days=1))
        if row.type == "improper_rejection" and row.entity == f"lead:{lead}"
    ]


@pytest.mark.parametrize("tenant", [B24_TENANT, AMO_TENANT])
def test_two_workers_on_two_updates_of_one_junked_lead_send_one_alert(fresh: LocalStack, tenant: str):
    stack = fresh
    crm = driver(stack, tenant)
    start = stack.clock() + timedelta(hours=1)
    stack.clock.set(start)
    lead = crm.create("Junked too soon", "7", start)
    crm.take(lead, "7", start + timedelta(minutes=3))
    for n in range(2):
        crm.call(lead, "7", start + timedelta(minutes=10 + n), 0)
    stack.pump()
    # Rejected, then edited: two update webhooks, two queue messages. (amoCRM's hook tells no stage
    # change time, so its edit comes in the same second: both workers see one rejection moment.)
    moment = start + timedelta(minutes=30)
    stack.clock.set(moment)
    crm.reject(lead, "7", moment)
    if tenant == B24_TENANT:
        stack.clock.advance(timedelta(seconds=1))  # Bitrix24's delivery stamp is what tells them apart
        stack.bitrix.update_lead(lead, at=stack.clock(), TITLE="Junked too soon (spam?)")
    else:
        stack.amo.update_lead(lead, at=moment, name="Junked too soon (spam?)")
    messages = _receive_all(stack)
    assert len(messages) == 2
    slow_first_send(stack)

    retry = at_once([lambda m=m: _work(stack, [m]) for m in messages])
    # SQS redelivers what a worker asked to retry (the alert was held by the other one).
    leftovers = [m for m in messages if any(m.message_id in ids for ids in retry)]
    if leftovers:
        assert _work(stack, leftovers) == []

    url = stack.ctx.adapter(stack.ctx.tenant(tenant)).card_url(EntityRef(EntityType.LEAD, lead))
    alerts = [m for m in stack.telegram.messages if REJECTION_ALERT.of(m.text) and url in m.text]
    assert len(alerts) == 1
    assert len(_rejections(stack, tenant, lead)) == 1


def _at(stack: LocalStack, hours: float) -> datetime:
    monday = stack.clock().astimezone(MSK).replace(hour=0, minute=0, second=0, microsecond=0)
    monday -= timedelta(days=monday.weekday())
    return monday + timedelta(hours=hours)


@pytest.mark.parametrize("tenant", [B24_TENANT, AMO_TENANT])
def test_two_overlapping_dialing_report_runs_send_it_once(fresh: LocalStack, tenant: str):
    from workflows.dialing.report import send_due_reports

    stack = fresh
    crm = driver(stack, tenant)
    stack.clock.set(_at(stack, 10))
    lead = crm.create("Call me maybe", "7", stack.clock())
    crm.take(lead, "7", stack.clock() + timedelta(minutes=3))
    crm.call(lead, "7", stack.clock() + timedelta(minutes=10), 45)
    stack.pump()
    stack.clock.set(_at(stack, 18.5))
    slow_first_send(stack)

    at_once([lambda: send_due_reports(stack.ctx)] * 2)
    stack.clock.advance(timedelta(minutes=1))
    send_due_reports(stack.ctx)  # the next minute's run: the report is out, nothing more

    url = stack.ctx.adapter(stack.ctx.tenant(tenant)).card_url(EntityRef(EntityType.LEAD, lead))
    reports = [m for m in stack.telegram.messages if REPORT.of(m.text) and url in m.text]
    assert len(reports) == 1


@pytest.mark.parametrize("tenant", [B24_TENANT, AMO_TENANT])
def test_a_sweep_job_delivered_twice_at_once_judges_alerts_and_counts_once(fresh: LocalStack, tenant: str):
    """Lambda may deliver an asynchronous event more than once: the jobs Lambda runs the same job
    twice side by side (and a third time after), and nothing is doubled."""
    stack = fresh
    crm = driver(stack, tenant)
    stack.clock.set(_at(stack, 10))
    lead = crm.create("Nobody calls back", "7", stack.clock())  # never taken: late at 10:15
    stack.pump()
    for applied in (stack.bitrix.applied, stack.amo.applied):
        applied.clear()
    stack.clock.set(_at(stack, 10.5))
    stack.invocations.take()  # whatever earlier steps started
    stack._scheduled("timeliness_sweep")  # the dispatcher starts the due tenants' jobs
    payloads = stack.invocations.payloads()
    mine = [p for p in payloads if p["jobs"][0]["job"]["tenant"] == tenant]
    assert len(mine) == 1
    slow_first_send(stack)
    jobs = stack.handlers["jobs"]

    at_once([lambda: jobs(mine[0], None)] * 2)
    jobs(mine[0], None)  # delivered once more, later

    assert stack.ctx.store.get_lead(tenant, EntityRef(EntityType.LEAD, lead)).verdict == "late"
    url = stack.ctx.adapter(stack.ctx.tenant(tenant)).card_url(EntityRef(EntityType.LEAD, lead))
    assert len([m for m in stack.telegram.messages if url in m.text]) == 1
    now = stack.clock()
    journal = stack.ctx.store.violations(tenant, now - timedelta(days=1), now + timedelta(days=1))
    assert [row.entity for row in journal].count(f"lead:{lead}") == 1
    day = now.astimezone(MSK).date()
    assert sum(row.on_time + row.late for row in stack.ctx.store.timeliness_stats(tenant, day, day)) == 1
    applied = stack.bitrix.applied if tenant == B24_TENANT else stack.amo.applied
    assert [str(card) for _, card in applied].count(str(lead)) == 1  # the verdict written once


# ----------------------------------------------------------------------------- an unknown outcome


class _ShortReadTimeout:
    """The stack's context, but its Telegram client gives up waiting for an answer after 0.2 s."""

    def __init__(self, stack: LocalStack):
        from leadwatch.telegram import TelegramNotifier

        self._ctx = stack.ctx
        self._notifier = TelegramNotifier(
            stack.secrets["DEMO_TELEGRAM_TOKEN"],
            api_base=stack.telegram.url,
            sleep=stack.sleeps,
            monotonic=stack.sleeps.monotonic,
            chat_interval=0.01,
            timeout=(2.0, 0.2),
        )

    def notifier(self, config: Any) -> Any:
        return self._notifier

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def test_a_message_without_an_answer_is_unconfirmed_journalled_once_and_never_resent(fresh: LocalStack):
    from leadwatch.store.ledger import UNCONFIRMED_TYPE

    stack = fresh
    config = stack.ctx.tenant(B24_TENANT)
    run = uuid.uuid4().hex[:8]
    lost, after = Notify(f"lost:{run}", f"Lost {run}"), Notify(f"after:{run}", f"After {run}")
    stack.sleeps(60)  # the chat's rate limit (on the stack's clock) refills after the earlier tests' sends
    # Telegram posts the message but answers only after the client stopped waiting.
    stack.telegram.fail_next(
        slow(1.0, then=stack.telegram.handle), when=lambda request: lost.text.encode() in request.body
    )

    first = executor.perform(_ShortReadTimeout(stack), config, [lost, after])

    assert first.unconfirmed == {lost.effect_id} and lost.effect_id in first.done
    assert first.failed == {after.effect_id: "deferred: Telegram did not answer"}
    assert stack.ctx.store.effects_done(B24_TENANT, [lost.effect_id]) == {lost.effect_id}
    assert stack.ctx.store.ledger.unconfirmed(B24_TENANT, [lost.effect_id]) == {lost.effect_id}

    second = executor.perform(stack.ctx, config, [lost, after])  # the retry, Telegram healthy again
    assert second.all_done([lost.effect_id, after.effect_id])
    assert second.unconfirmed == {lost.effect_id} and second.performed == 1
    # The fake posts the lost message when its slow answer ends, which may be after the retry.
    deadline = time.monotonic() + 10
    while lost.text not in [m.text for m in stack.telegram.messages] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(m.text for m in stack.telegram.messages if run in m.text) == sorted([lost.text, after.text])
    assert len(stack.telegram.requests("/sendMessage")) == 2  # the unconfirmed one went out once

    now = stack.clock()
    rows = stack.ctx.store.violations(
        B24_TENANT, now - timedelta(days=1), now + timedelta(days=1), type=UNCONFIRMED_TYPE
    )
    [row] = [r for r in rows if r.details.get("effect_id") == lost.effect_id]
    assert row.entity == f"telegram:{config.telegram.chat_id}" and "timed out" in row.details["detail"]
    assert row.details["text"] == lost.text
