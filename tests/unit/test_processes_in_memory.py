"""Both processes through the framework's real dispatch, scheduling and executor, on the
in-memory store: no moto, no HTTP. A stub CRM records the writes it is asked for and a stub
notifier the messages, so this is how a process's behaviour is unit-tested."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from crm_adapters.base import WriteResult
from leadwatch.config import TenantConfig, TenantRegistry, load_tenant_file
from leadwatch.context import Context
from leadwatch.dispatch import Message, handle
from leadwatch.events import CrmEvent, EntityRef, EntityType, EventKind, LeadSnapshot
from leadwatch.scheduling import WAKE_NAMESPACE, WAKE_PARTITION, Failed, run_process_schedule
from leadwatch.state import MemoryState
from leadwatch.store.memory import MemoryStore
from leadwatch.telegram import visible_length
from leadwatch.testing.stack import SimClock
from workflows.dialing.messages import REJECTION_ALERT, REPORT
from workflows.timeliness.messages import LATE_ALERT

MSK = ZoneInfo("Europe/Moscow")
TUESDAY_10 = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "acme-b24.yaml"
CARD = EntityRef(EntityType.LEAD, "42")


@dataclass
class StubCrm:
    writes: list[tuple[str, dict]] = field(default_factory=list)
    cards: dict[EntityRef, LeadSnapshot] = field(default_factory=dict)  # as the CRM shows them now
    kind: str = "bitrix24"

    def set_fields(self, writes) -> WriteResult:
        self.writes += [(w.entity.key, dict(w.fields)) for w in writes]
        return WriteResult(succeeded={w.effect_id for w in writes})

    def get_leads(self, entities):
        return {entity: self.cards.get(entity) for entity in entities}

    def get_activities(self, ids):
        return {}

    def activities_on(self, entities):
        return {entity: [] for entity in entities}

    def card_url(self, entity: EntityRef) -> str:
        return f"https://crm.example/{entity.key}"

    # Quality control's work items (the example tenant turns it on).
    tasks: list[tuple[str, str]] = field(default_factory=list)

    def create_task(self, task) -> str:
        self.tasks.append((task.entity.key, task.assignee))
        return str(len(self.tasks))

    def complete_task(self, task_id: str) -> None:
        self.tasks.append(("done", task_id))


@dataclass
class StubNotifier:
    sent: list[str] = field(default_factory=list)

    def send(self, chat_id: str, text: str) -> None:
        self.sent.append(text)


class ListQueue:
    def __init__(self) -> None:
        self.sent: list[dict] = []

    def send(self, payloads: list[dict]) -> None:
        self.sent.extend(payloads)


def context(clock: SimClock, crm: StubCrm, telegram: StubNotifier) -> Context:
    config = load_tenant_file(EXAMPLE)
    return Context(
        registry=TenantRegistry({config.tenant: config}),
        store=MemoryStore(),
        queue=ListQueue(),
        secrets=lambda ref: "unused",
        clock=clock,
        adapter_factory=lambda config, secrets: crm,
        notifier_factory=lambda config, secrets: telegram,
        state_store=MemoryState(clock=clock),
        jobs=ListQueue(),
    )


def card(stage: str, at: datetime) -> LeadSnapshot:
    return LeadSnapshot(CARD, stage, "7", TUESDAY_10, modified_at=at, stage_changed_at=at, title="Sofa")


def event(kind: EventKind, stage: str, at: datetime, key: str) -> Message:
    body = CrmEvent("acme-b24", kind, CARD, key, occurred_at=at, lead=card(stage, at)).to_dict()
    return Message(key, json.dumps(body))


def test_a_late_lead_then_junked_without_calls_on_the_memory_store():
    clock, crm, telegram = SimClock(TUESDAY_10), StubCrm(), StubNotifier()
    ctx = context(clock, crm, telegram)
    crm.cards[CARD] = card("NEW", TUESDAY_10)  # nobody touches it: the sweep's re-read finds it so

    report = handle(ctx, [event(EventKind.LEAD_CREATED, "NEW", TUESDAY_10, "e1")])
    assert report.failed == [] and report.processed == 1
    state = ctx.store.get_lead("acme-b24", CARD)
    assert state.due_at == TUESDAY_10 + timedelta(minutes=15) and state.plan_day == TUESDAY_10.date()
    assert crm.writes == [("lead:42", {"UF_CRM_1704817278": TUESDAY_10})]  # the intake stamp
    wake = ctx.state(WAKE_NAMESPACE).get(WAKE_PARTITION, "timeliness.sweep#acme-b24")
    assert wake.value["at"] == state.due_at.timestamp()  # the sweep is woken at its control time
    assert handle(ctx, [event(EventKind.LEAD_CREATED, "NEW", TUESDAY_10, "e1")]).failed == []
    assert len(crm.writes) == 1  # a redelivery performs nothing again

    clock.set(TUESDAY_10 + timedelta(minutes=14))
    assert run_process_schedule(ctx, "timeliness", "sweep") == {}  # not woken yet
    clock.set(TUESDAY_10 + timedelta(minutes=16))
    [(tenant, sweep)] = run_process_schedule(ctx, "timeliness", "sweep").items()
    assert (tenant, sweep.closed, sweep.late, sweep.wake_at) == ("acme-b24", 1, 1, None)
    assert crm.writes[-1] == ("lead:42", {"UF_CRM_1704817301": "N"})
    assert len(telegram.sent) == 1 and "Sofa" in telegram.sent[0]
    # The verdict field was written under the sweep's claim on the card, whose close records it:
    # no ledger row of its own (the alert, sent without a hold on it, has one).
    ledger = ctx.store.ledger
    assert ledger.entries("acme-b24", ["verdict:acme-b24:lead:42"]) == {}
    assert ledger.done("acme-b24", ["alert:late:acme-b24:lead:42"]) == {"alert:late:acme-b24:lead:42"}

    junked = TUESDAY_10 + timedelta(minutes=30)
    clock.set(junked)
    assert handle(ctx, [event(EventKind.STAGE_CHANGED, "JUNK", junked, "e2")]).failed == []
    assert ctx.store.get_lead("acme-b24", CARD).rejection_checked == junked
    # Quality control: junked with no reason given is checked: the manager is asked.
    assert crm.tasks == [("lead:42", "7")]
    # The example tenant writes Russian (its calendar's country is RU).
    assert REJECTION_ALERT.of(telegram.sent[-1]) and "0 звонков из 15 обязательных" in telegram.sent[-1]
    # An older snapshot arriving late moves nothing back.
    assert (
        handle(ctx, [event(EventKind.LEAD_CHANGED, "IN_PROCESS", junked - timedelta(minutes=5), "e3")]).failed
        == []
    )
    assert ctx.store.get_lead("acme-b24", CARD).stage == "JUNK"
    assert len(telegram.sent) == 2


def test_a_new_card_is_stored_once_with_its_intake_written_and_its_plan_day():
    """The intake field is written before the card is stored, and the card is stored saying so,
    with dialing's plan day: one write of the card, no ledger row, and no later event asks again."""
    clock, crm, telegram = SimClock(TUESDAY_10), StubCrm(), StubNotifier()
    ctx = context(clock, crm, telegram)
    store = ctx.store
    writes: list[str] = []
    for name in ("create_lead", "update_lead", "note_dialing"):
        real = getattr(store, name)
        setattr(store, name, lambda *a, _real=real, _name=name, **k: writes.append(_name) or _real(*a, **k))
    crm.cards[CARD] = card("NEW", TUESDAY_10)
    assert handle(ctx, [event(EventKind.LEAD_CREATED, "NEW", TUESDAY_10, "e1")]).failed == []
    state = store.get_lead("acme-b24", CARD)
    assert (state.intake_stamped, state.plan_day, writes) == (True, TUESDAY_10.date(), ["create_lead"])
    assert store.ledger.entries("acme-b24", ["intake:acme-b24:lead:42"]) == {}
    # The CRM's echo of that write, and a change of the card: the intake is not written again.
    assert (
        handle(ctx, [event(EventKind.LEAD_CHANGED, "NEW", TUESDAY_10 + timedelta(seconds=5), "e2")]).failed
        == []
    )
    assert (
        handle(
            ctx, [event(EventKind.STAGE_CHANGED, "IN_PROCESS", TUESDAY_10 + timedelta(minutes=3), "e3")]
        ).failed
        == []
    )
    assert [w for w in crm.writes if "UF_CRM_1704817278" in w[1]] == [
        ("lead:42", {"UF_CRM_1704817278": TUESDAY_10})
    ]
    assert store.ledger.entries("acme-b24", ["intake:acme-b24:lead:42"]) == {}


def test_an_intake_write_that_failed_is_written_by_the_next_sighting_through_the_ledger():
    from crm_adapters.base import CrmUnavailable

    class Failing(StubCrm):
        down = True

        def set_fields(self, writes) -> WriteResult:
            if self.down:
                return WriteResult(failed={w.effect_id: CrmUnavailable("CRM is down") for w in writes})
            return super().set_fields(writes)

    clock, crm, telegram = SimClock(TUESDAY_10), Failing(), StubNotifier()
    ctx = context(clock, crm, telegram)
    crm.cards[CARD] = card("NEW", TUESDAY_10)
    assert handle(ctx, [event(EventKind.LEAD_CREATED, "NEW", TUESDAY_10, "e1")]).failed == ["e1"]
    state = ctx.store.get_lead("acme-b24", CARD)
    assert state is not None and not state.intake_stamped  # stored all the same, without it
    crm.down = False
    clock.set(TUESDAY_10 + timedelta(minutes=1))
    assert handle(ctx, [event(EventKind.LEAD_CREATED, "NEW", TUESDAY_10, "e1")]).failed == []  # the retry
    assert crm.writes == [("lead:42", {"UF_CRM_1704817278": TUESDAY_10})]
    assert ctx.store.ledger.done("acme-b24", ["intake:acme-b24:lead:42"]) == {"intake:acme-b24:lead:42"}
    assert (
        handle(
            ctx, [event(EventKind.STAGE_CHANGED, "IN_PROCESS", TUESDAY_10 + timedelta(minutes=3), "e3")]
        ).failed
        == []
    )
    assert len(crm.writes) == 1


def _many_late(ctx: Context, crm: StubCrm, count: int, title: str = "Lead") -> None:
    messages = []
    for n in range(count):
        entity = EntityRef(EntityType.LEAD, str(100 + n))
        snapshot = LeadSnapshot(entity, "NEW", "7", TUESDAY_10, modified_at=TUESDAY_10, title=f"{title} {n}")
        crm.cards[entity] = snapshot
        body = CrmEvent(
            "acme-b24", EventKind.LEAD_CREATED, entity, f"c{n}", occurred_at=TUESDAY_10, lead=snapshot
        )
        messages.append(Message(f"c{n}", json.dumps(body.to_dict())))
    assert handle(ctx, messages).failed == []


def test_thirty_alerts_due_together_go_out_as_one_digest_once():
    clock, crm, telegram = SimClock(TUESDAY_10), StubCrm(), StubNotifier()
    ctx = context(clock, crm, telegram)
    _many_late(ctx, crm, 30, title="Sofa & <chair>")
    clock.set(TUESDAY_10 + timedelta(minutes=16))
    [(_, sweep)] = run_process_schedule(ctx, "timeliness", "sweep").items()
    assert (sweep.closed, sweep.late) == (30, 30)
    [digest] = telegram.sent
    lines = digest.splitlines()
    assert lines[0] == "🔔 <b>30 оповещений сразу</b>" and len(lines) == 31
    assert all(line.startswith("⏰ <a href=") and "Sofa &amp; &lt;chair&gt;" in line for line in lines[1:])
    assert visible_length(digest) <= 4096
    # Every alert is settled in the ledger: a second sweep (or a racing one) sends nothing again.
    ids = [f"alert:late:acme-b24:lead:{100 + n}" for n in range(30)]
    assert ctx.store.ledger.done("acme-b24", ids) == set(ids)
    clock.set(TUESDAY_10 + timedelta(minutes=17))
    run_process_schedule(ctx, "timeliness", "sweep")
    assert len(telegram.sent) == 1


def test_a_long_digest_goes_in_parts_of_whole_lines_and_few_alerts_go_one_by_one():
    clock, crm, telegram = SimClock(TUESDAY_10), StubCrm(), StubNotifier()
    ctx = context(clock, crm, telegram)
    _many_late(ctx, crm, 60, title="A very long title of a lead that someone typed in full " * 2)
    clock.set(TUESDAY_10 + timedelta(minutes=16))
    run_process_schedule(ctx, "timeliness", "sweep")
    assert len(telegram.sent) >= 2 and all(visible_length(part) <= 4096 for part in telegram.sent)
    assert telegram.sent[0].splitlines()[0] == f"🔔 <b>60 оповещений сразу</b> (1/{len(telegram.sent)})"
    assert sum(len(part.splitlines()) - 1 for part in telegram.sent) == 60

    clock, crm, telegram = SimClock(TUESDAY_10), StubCrm(), StubNotifier()
    ctx = context(clock, crm, telegram)
    _many_late(ctx, crm, ctx.tenant("acme-b24").telegram.digest_over)  # not more than the limit
    clock.set(TUESDAY_10 + timedelta(minutes=16))
    run_process_schedule(ctx, "timeliness", "sweep")
    assert len(telegram.sent) == 5 and all(LATE_ALERT.of(m) for m in telegram.sent)


def test_a_verdict_whose_alert_failed_stands_when_the_sweep_comes_back():
    """The sweep pins the verdict when it claims the card: its alert failing leaves the card due
    with that verdict, and a webhook that comes in meanwhile showing earlier processing does not
    turn it into another (its CRM field was written already)."""
    from crm_adapters.base import CrmUnavailable

    class Down(StubNotifier):
        down = True

        def send(self, chat_id: str, text: str) -> None:
            if self.down:
                raise CrmUnavailable("Telegram is down")
            super().send(chat_id, text)

    clock, crm, telegram = SimClock(TUESDAY_10), StubCrm(), Down()
    ctx = context(clock, crm, telegram)
    crm.cards[CARD] = card("NEW", TUESDAY_10)
    assert handle(ctx, [event(EventKind.LEAD_CREATED, "NEW", TUESDAY_10, "e1")]).failed == []
    clock.set(TUESDAY_10 + timedelta(minutes=16))
    [sweep] = run_process_schedule(ctx, "timeliness", "sweep").values()
    assert (sweep.closed, sweep.retried_later) == (0, 1)
    assert ctx.store.get_lead("acme-b24", CARD).pending_verdict == "late"
    assert crm.writes[-1] == ("lead:42", {"UF_CRM_1704817301": "N"})
    # Let go undone, the card's written verdict field is recorded in the ledger by the sweep.
    assert ctx.store.ledger.done("acme-b24", ["verdict:acme-b24:lead:42"]) == {"verdict:acme-b24:lead:42"}
    # The manager's stage change, made before the control time, arrives only now.
    taken = TUESDAY_10 + timedelta(minutes=10)
    crm.cards[CARD] = card("IN_PROCESS", taken)
    assert handle(ctx, [event(EventKind.STAGE_CHANGED, "IN_PROCESS", taken, "e2")]).failed == []
    telegram.down = False
    clock.set(TUESDAY_10 + timedelta(minutes=17))
    [sweep] = run_process_schedule(ctx, "timeliness", "sweep").values()
    assert (sweep.closed, sweep.late) == (1, 1)
    assert len(telegram.sent) == 1 and "Sofa" in telegram.sent[0]
    assert [w for w in crm.writes if "UF_CRM_1704817301" in w[1]] == [("lead:42", {"UF_CRM_1704817301": "N"})]
    state = ctx.store.get_lead("acme-b24", CARD)
    assert (state.verdict, state.pending_verdict) == ("late", None)


# ----------------------------------------------------------------------------- one tenant's failure


def with_a_broken_tenant(ctx: Context) -> TenantConfig:
    """A second tenant, ahead of acme-b24 in every loop, whose report time is the zoned 00:18:30
    YAML 1.1 once made of a bare 18:30 (the loader now keeps it "18:30"): its report raises a
    TypeError at every run. Built around validation, as the old loader's config was."""
    good = ctx.registry.get("acme-b24")
    broken = good.model_copy(
        update={
            "tenant": "aaa-broken",
            "dialing": good.dialing.model_copy(update={"report_time": time(0, 18, 30, tzinfo=UTC)}),
        }
    )
    ctx.registry = TenantRegistry({"aaa-broken": broken, "acme-b24": good})
    return broken


def a_lead_in_the_plan(ctx: Context, crm: StubCrm) -> None:
    crm.cards[CARD] = card("NEW", TUESDAY_10)
    assert handle(ctx, [event(EventKind.LEAD_CREATED, "NEW", TUESDAY_10, "e1")]).failed == []


def test_a_tenant_whose_report_raises_stops_no_other_tenants_report_in_process():
    clock, crm, telegram = SimClock(TUESDAY_10), StubCrm(), StubNotifier()
    ctx = context(clock, crm, telegram)
    with_a_broken_tenant(ctx)
    a_lead_in_the_plan(ctx, crm)
    clock.set(TUESDAY_10.replace(hour=18, minute=31))
    runs = run_process_schedule(ctx, "dialing", "report")
    assert runs["aaa-broken"] == Failed(error="TypeError")
    assert runs["acme-b24"].sent_parts == 1 and runs["acme-b24"].error is None
    assert len(telegram.sent) == 1 and REPORT.of(telegram.sent[0])


def test_a_tenant_whose_report_raises_stops_no_other_tenants_report_in_the_jobs_lambda():
    """The deployed path: the dispatcher starts one job per tenant, the jobs Lambda runs them; the
    broken tenant's job fails the invocation (Lambda retries it, then parks it as dead) after the
    other's report is sent, and only its own invocation when each job has one."""
    from functions.jobs import JobsFailed, jobs
    from leadwatch.context import set_context
    from leadwatch.scheduling import dispatch

    clock, crm, telegram = SimClock(TUESDAY_10), StubCrm(), StubNotifier()
    ctx = context(clock, crm, telegram)
    with_a_broken_tenant(ctx)
    a_lead_in_the_plan(ctx, crm)
    clock.set(TUESDAY_10.replace(hour=18, minute=31))
    process = ctx.processes.get("dialing")
    ctx.jobs.sent.clear()
    dispatch(ctx, process, next(s for s in process.schedules if s.name == "report"))
    assert [job["job"]["tenant"] for job in ctx.jobs.sent] == ["aaa-broken", "acme-b24"]
    set_context(ctx)
    try:
        with pytest.raises(JobsFailed, match=r"1 of 2 jobs failed: dialing\.report for aaa-broken"):
            jobs({"jobs": ctx.jobs.sent}, None)
        assert len(telegram.sent) == 1 and REPORT.of(telegram.sent[0])
        assert jobs({"jobs": [ctx.jobs.sent[1]]}, None) == {"jobs": 1}  # its own invocation: done
        with pytest.raises(ValueError, match="not a jobs payload"):
            jobs({"Records": []}, None)
    finally:
        set_context(None)
    assert len(telegram.sent) == 1  # the report is out once, however often its job runs


def test_a_tenant_whose_calendar_cannot_be_built_stops_no_other_tenants_reconciliation():
    from leadwatch.scheduling import dispatch_reconcile

    clock, crm, telegram = SimClock(TUESDAY_10), StubCrm(), StubNotifier()
    ctx = context(clock, crm, telegram)
    good = ctx.registry.get("acme-b24")
    broken = good.model_copy(
        update={
            "tenant": "aaa-broken",
            "calendar": good.calendar.model_copy(update={"subdivision": "XX"}),  # refused by the check now
        }
    )
    ctx.registry = TenantRegistry({"aaa-broken": broken, "acme-b24": good})
    done = dispatch_reconcile(ctx)
    assert done.due == 2  # the broken one's job fails alone, where the jobs Lambda's errors show it
    assert [job["job"]["tenant"] for job in ctx.jobs.sent] == ["aaa-broken", "acme-b24"]
