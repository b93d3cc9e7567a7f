"""The executor performs CRM work items (tasks, reminders, stage moves, notes) exactly once on the
memory store: a task's CRM id is kept and found by the effects that name it, a repeat of the same
effects does nothing, two workers racing perform each once, no answer settles what a repeat would
double and releases what it would not, a card gone is given up after the refusals, and an effect
kind nobody performs is a loud error."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crm_adapters.base import CrmNotFound, CrmUnavailable, OutcomeUnknown
from leadwatch import executor
from leadwatch.config import TenantRegistry, load_tenant_file
from leadwatch.context import Context
from leadwatch.effects import AddNote, CompleteTask, CreateTask, MoveStage, RemindUser
from leadwatch.events import EntityRef, EntityType
from leadwatch.registry import default_registry
from leadwatch.store.ledger import UNCONFIRMED_TYPE
from leadwatch.store.memory import MemoryStore
from leadwatch.testing.stack import SimClock

NOW = datetime(2025, 11, 11, 9, 0, tzinfo=UTC)
EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
CARD = EntityRef(EntityType.LEAD, "42")


@dataclass
class WorkCrm:
    """Records every call; `fail` maps a call name to the exception its next calls raise."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    slow: float = 0.0

    def _call(self, name: str, what: str) -> None:
        if self.slow:
            threading.Event().wait(self.slow)
        with self.lock:
            self.calls.append((name, what))
        if name in self.fail:
            raise self.fail[name]

    def create_task(self, task: CreateTask) -> str:
        self._call("create_task", task.title)
        return str(100 + sum(1 for c in self.calls if c[0] == "create_task"))

    def complete_task(self, task_id: str) -> None:
        self._call("complete_task", task_id)

    def remind(self, task_id: str | None, reminder: RemindUser) -> None:
        self._call("remind", str(task_id))

    def move_stage(self, move: MoveStage) -> None:
        self._call("move_stage", move.stage)

    def add_note(self, note: AddNote) -> None:
        self._call("add_note", note.text)

    def card_url(self, entity: EntityRef) -> str:
        return f"https://acme.bitrix24.ru/crm/lead/details/{entity.id}/"


def context(crm: WorkCrm, clock: SimClock | None = None) -> tuple[Context, object]:
    config = load_tenant_file(EXAMPLES / "acme-b24.yaml")
    ctx = Context(
        registry=TenantRegistry({config.tenant: config}),
        store=MemoryStore(),
        queue=None,  # type: ignore[arg-type]
        secrets=lambda ref: "unused",
        clock=clock or SimClock(NOW),
        adapter_factory=lambda config, secrets: crm,  # type: ignore[return-value,arg-type]
        processes=default_registry(),
    )
    return ctx, config


TASK = CreateTask(
    "task:1", CARD, "7", "Answer the questions", "https://lw/qc/answer/x", NOW + timedelta(hours=4)
)


def test_a_task_is_made_once_and_closed_by_the_id_the_crm_gave():
    crm = WorkCrm()
    ctx, config = context(crm)
    first = executor.perform(ctx, config, [TASK])
    assert first.results == {"task:1": "101"} and first.performed == 1
    again = executor.perform(ctx, config, [TASK])  # a redelivery: nothing is made twice
    assert again.performed == 0 and "task:1" in again.done
    remind = RemindUser("remind:1", "7", CARD, "task:1", "Two hours left")
    done = CompleteTask("done:1", "task:1", CARD)
    executor.perform(
        ctx, config, [remind, done, MoveStage("move:1", CARD, "IN_PROCESS"), AddNote("note:1", CARD, "ok")]
    )
    executor.perform(ctx, config, [remind, done])
    assert crm.calls == [
        ("create_task", "Answer the questions"),
        ("remind", "101"),
        ("complete_task", "101"),
        ("move_stage", "IN_PROCESS"),
        ("add_note", "ok"),
    ]


def test_a_task_made_and_closed_in_one_call_is_closed_by_its_new_id():
    crm = WorkCrm()
    ctx, config = context(crm)
    executor.perform(ctx, config, [TASK, CompleteTask("done:1", "task:1", CARD)])
    assert crm.calls == [("create_task", "Answer the questions"), ("complete_task", "101")]


def test_closing_a_task_that_was_never_made_is_done_without_a_call():
    crm = WorkCrm()
    ctx, config = context(crm)
    outcome = executor.perform(ctx, config, [CompleteTask("done:9", "task:9", CARD)])
    assert "done:9" in outcome.done and crm.calls == []


def test_two_workers_racing_make_each_task_and_note_once():
    crm = WorkCrm(slow=0.02)
    ctx, config = context(crm)
    effects = [TASK, AddNote("note:1", CARD, "decided"), MoveStage("move:1", CARD, "IN_PROCESS")]
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        executor.perform(ctx, config, effects)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    executor.perform(ctx, config, effects)  # the retries of whoever was held
    assert sorted(name for name, _ in crm.calls) == ["add_note", "create_task", "move_stage"]


def test_no_answer_settles_a_note_for_good_and_releases_a_stage_move():
    crm = WorkCrm(fail={"add_note": OutcomeUnknown("timed out"), "move_stage": OutcomeUnknown("timed out")})
    ctx, config = context(crm)
    note, move = AddNote("note:1", CARD, "decided"), MoveStage("move:1", CARD, "IN_PROCESS")
    outcome = executor.perform(ctx, config, [note, move])
    assert outcome.unconfirmed == {"note:1"} and "move:1" in outcome.failed
    crm.fail.clear()
    executor.perform(ctx, config, [note, move])
    assert [name for name, _ in crm.calls] == ["add_note", "move_stage", "move_stage"]
    rows = ctx.store.violations(
        config.tenant, NOW - timedelta(days=1), NOW + timedelta(days=1), UNCONFIRMED_TYPE
    )
    assert [(r.type, r.entity) for r in rows] == [(UNCONFIRMED_TYPE, CARD.key)]


def test_a_card_gone_is_given_up_after_the_refusals_and_journalled_once():
    clock = SimClock(NOW)
    crm = WorkCrm(fail={"create_task": CrmNotFound("Not found")})
    ctx, config = context(crm, clock)
    for _ in range(executor.REFUSALS_BEFORE_GIVING_UP + 2):
        outcome = executor.perform(ctx, config, [TASK])
        clock.advance(timedelta(minutes=5))
    assert outcome.gave_up == {"task:1": "given up before"}
    assert len(crm.calls) == executor.REFUSALS_BEFORE_GIVING_UP
    rows = ctx.store.violations(config.tenant, NOW - timedelta(days=1), NOW + timedelta(days=1), "gave_up")
    assert len(rows) == 1


def test_a_crm_outage_is_retried_by_the_next_run():
    crm = WorkCrm(fail={"create_task": CrmUnavailable("503")})
    ctx, config = context(crm)
    assert "task:1" in executor.perform(ctx, config, [TASK]).failed
    crm.fail.clear()
    assert executor.perform(ctx, config, [TASK]).results == {"task:1": "102"}


def test_an_effect_nobody_performs_is_a_loud_error():
    @dataclass(frozen=True)
    class Launch:
        effect_id: str

    ctx, config = context(WorkCrm())
    with pytest.raises(TypeError, match="Launch"):
        executor.perform(ctx, config, [Launch("rocket")])  # type: ignore[list-item]


def test_every_kind_of_effect_survives_being_kept_as_json():
    import json

    from leadwatch.effects import Notify, RecordViolation, SetCardFields, Violation, from_data, to_data

    effects = [
        TASK,
        CompleteTask("done:1", "task:1", CARD),
        RemindUser("remind:1", "7", CARD, "task:1", "soon"),
        MoveStage("move:1", CARD, "C1:NEW", "12"),
        AddNote("note:1", CARD, "Причина: «цена»"),
        Notify("n:1", "<b>late</b>", digest_line="one"),
        SetCardFields("f:1", CARD, {"UF_CRM_X": NOW, "UF_CRM_Y": "on time", "UF_CRM_Z": 3}),
        RecordViolation(Violation("v:1", "qc_confirmed", CARD, "7", NOW, {"review": "r", "at": ["x", 1]})),
    ]
    for effect in effects:
        assert from_data(json.loads(json.dumps(to_data(effect)))) == effect
