"""Quality control at work on the memory store, with a stub CRM that records its calls: a rejection
opens one review (however often and however concurrently it is seen), an `ignore` reason only
counts, a card leaving the rejected stage ends the review quietly, the deadline sweep reminds,
journals and escalates once each, a decision moves the card and journals it, and effects the CRM
refused at first are performed by the next sweep."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from crm_adapters.base import CrmUnavailable
from leadwatch.config import TenantRegistry, parse_tenant
from leadwatch.context import Context
from leadwatch.effects import AddNote, CreateTask, MoveStage, RemindUser
from leadwatch.events import EntityRef, EntityType, LeadSnapshot
from leadwatch.messages import writer_for
from leadwatch.registry import default_registry
from leadwatch.state import MemoryState
from leadwatch.store.memory import MemoryStore
from leadwatch.testing.stack import SimClock
from workflows.qc import rules, service
from workflows.qc.messages import QcView

MSK_OFFSET = timedelta(hours=3)
# Tuesday 2025-11-11, 10:00 in Moscow.
NOW = datetime(2025, 11, 11, 7, 0, tzinfo=UTC)
TENANT = "acme-b24"


def tenant_text() -> str:
    data = {
        "tenant": TENANT,
        "crm": {
            "kind": "bitrix24",
            "base_url": "https://acme.bitrix24.ru",
            "webhook_user_id": 1,
            "webhook_code": {"env": "B24_CODE"},
            "application_token": {"env": "B24_TOKEN"},
            "entities": ["lead"],
        },
        "calendar": {
            "timezone": "Europe/Moscow",
            "country": "RU",
            "hours": {d: ["09:00-13:00", "14:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        },
        "telegram": {"chat_id": -100123, "bot_token": {"env": "TG"}},
        "api_key": {"env": "API_KEY"},
        "language": "en",
        "managers": {"7": "Ivan", "1": "Anna"},
        "qc": {
            "reviewers": [1],
            "pages_url": "https://lw.example.com",
            "funnels": [
                {
                    "entity": "lead",
                    "stages": ["JUNK"],
                    "reason_field": "UF_CRM_R",
                    "returned_stage": "IN_PROCESS",
                    "reasons": [
                        {"id": 44, "name": "Price", "action": "check", "questions": ["Expected price?"]},
                        {"id": 45, "name": "Spam", "action": "ignore"},
                    ],
                }
            ],
            "deadlines": {
                "answer": {"within": "2h", "remind": "50%", "escalate_after": "1h"},
                "review": {"within": "4h", "remind": "1h"},
            },
        },
    }
    return yaml.safe_dump(data, allow_unicode=True)


@dataclass
class WorkCrm:
    calls: list[tuple[str, str]] = field(default_factory=list)
    down: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _call(self, name: str, what: str) -> None:
        if self.down:
            raise CrmUnavailable("503 Service Unavailable")
        with self.lock:
            self.calls.append((name, what))

    def create_task(self, task: CreateTask) -> str:
        self._call("create_task", task.assignee)
        return str(500 + len(self.calls))

    def complete_task(self, task_id: str) -> None:
        self._call("complete_task", task_id)

    def remind(self, task_id: str | None, reminder: RemindUser) -> None:
        self._call("remind", reminder.user)

    def move_stage(self, move: MoveStage) -> None:
        self._call("move_stage", move.stage)

    def add_note(self, note: AddNote) -> None:
        self._call("add_note", note.text.splitlines()[0])

    def card_url(self, entity: EntityRef) -> str:
        return f"https://acme.bitrix24.ru/crm/lead/details/{entity.id}/"

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@dataclass
class Telegram:
    sent: list[str] = field(default_factory=list)

    def send(self, chat_id: str, text: str) -> None:
        self.sent.append(text)


@pytest.fixture
def world(monkeypatch):
    processes = default_registry()
    config = parse_tenant(tenant_text(), f"{TENANT}.yaml", processes.tenant_model())
    clock = SimClock(NOW)
    crm, telegram = WorkCrm(), Telegram()
    ctx = Context(
        registry=TenantRegistry({TENANT: config}),
        store=MemoryStore(),
        queue=None,  # type: ignore[arg-type]
        secrets=lambda ref: str(ref),
        clock=clock,
        adapter_factory=lambda config, secrets: crm,  # type: ignore[return-value,arg-type]
        notifier_factory=lambda config, secrets: telegram,  # type: ignore[return-value,arg-type]
        processes=processes,
        state_store=MemoryState(clock=clock),
    )

    def view(self: service.Tenant) -> QcView:
        return QcView(
            writer_for(self.ctx, self.config),
            crm.card_url,
            lambda review, role, expires: f"https://lw.example.com/{role}/{review.review_id}",
        )

    monkeypatch.setattr(service.Tenant, "view", property(view))
    return ctx, config, clock, crm, telegram


def snapshot(
    stage: str = "JUNK", reason: str | None = "44", at: datetime = NOW, card: str = "42"
) -> LeadSnapshot:
    return LeadSnapshot(
        entity=EntityRef(EntityType.LEAD, card),
        stage=stage,
        responsible="7",
        created_at=NOW - timedelta(days=1),
        modified_at=at,
        stage_changed_at=at,
        title="Pipes & valves",
        fields={"UF_CRM_R": reason} if reason else {},
    )


def tenant(ctx, config) -> service.Tenant:
    return service.Tenant.of(ctx, config)


def the_review(ctx, config) -> rules.Review:
    ids = tenant(ctx, config).reviews.open_ids()
    assert len(ids) == 1
    stored = tenant(ctx, config).reviews.get(ids[0][0])
    assert stored is not None
    return stored.review


def test_a_checked_rejection_opens_one_review_and_gives_the_manager_a_task(world):
    ctx, config, _clock, crm, _ = world
    assert service.observe(tenant(ctx, config), snapshot(), NOW)
    assert service.observe(tenant(ctx, config), snapshot(), NOW)  # a redelivery
    # An edit of the card while it stays rejected is no new rejection.
    assert service.observe(tenant(ctx, config), snapshot(at=NOW + timedelta(minutes=5)), NOW)
    assert crm.calls == [("create_task", "7")]
    review = the_review(ctx, config)
    assert review.status is rules.Status.AWAITING_ANSWERS and review.reason_name == "Price"
    rejections = tenant(ctx, config).reviews.rejections(["2025-11"])
    assert [r.value["action"] for r in rejections] == ["check"]


def test_racing_workers_open_one_review(world):
    ctx, config, _, crm, _ = world
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        service.observe(tenant(ctx, config), snapshot(), NOW)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    service.sweep(ctx, config, NOW, None)  # whoever was held: done by the sweep, not twice
    assert crm.names() == ["create_task"]
    assert len(tenant(ctx, config).reviews.rejections(["2025-11"])) == 1


def test_an_ignored_reason_starts_nothing_but_is_counted(world):
    ctx, config, _, crm, _ = world
    assert service.observe(tenant(ctx, config), snapshot(reason="45"), NOW)
    assert crm.calls == [] and tenant(ctx, config).reviews.open_ids() == []
    [row] = tenant(ctx, config).reviews.rejections(["2025-11"])
    assert (row.value["action"], row.value["reason"], row.value["manager"]) == ("ignore", "Spam", "7")


def test_a_card_back_in_work_ends_its_review_quietly_and_a_new_rejection_is_a_new_review(world):
    ctx, config, _, crm, telegram = world
    service.observe(tenant(ctx, config), snapshot(), NOW)
    service.observe(tenant(ctx, config), snapshot("IN_PROCESS", at=NOW + timedelta(minutes=10)), NOW)
    assert crm.names() == ["create_task", "complete_task"] and telegram.sent == []
    assert tenant(ctx, config).reviews.open_ids() == []
    # An older snapshot arriving late does not move the card back.
    service.observe(tenant(ctx, config), snapshot(at=NOW + timedelta(minutes=1)), NOW)
    assert crm.names() == ["create_task", "complete_task"]
    service.observe(tenant(ctx, config), snapshot(at=NOW + timedelta(hours=1)), NOW + timedelta(hours=1))
    assert crm.names() == ["create_task", "complete_task", "create_task"]
    assert len(tenant(ctx, config).reviews.rejections(["2025-11"])) == 2


def test_the_sweep_reminds_journals_and_escalates_once_each(world):
    ctx, config, clock, crm, telegram = world
    service.observe(tenant(ctx, config), snapshot(), NOW)
    task = the_review(ctx, config).answer_task
    assert task is not None and task.remind_at and task.escalate_at
    clock.set(task.remind_at)
    report = service.sweep(ctx, config, clock(), None)
    assert report is not None and report.reminded == 1 and crm.names()[-1] == "remind"
    clock.set(task.escalate_at + timedelta(minutes=1))
    for _ in range(3):
        service.sweep(ctx, config, clock(), None)
    assert crm.names().count("remind") == 1
    assert len(telegram.sent) == 1 and "Pipes" in telegram.sent[0]
    rows = ctx.store.violations(TENANT, NOW, clock() + timedelta(days=1), "qc_answer_overdue")
    assert [(r.manager, r.entity) for r in rows] == [("7", "lead:42")]
    assert service.sweep(ctx, config, clock(), None).wake_at is None  # nothing more to watch


def test_answers_then_a_return_to_work_move_the_card_and_journal_it(world):
    ctx, config, _clock, crm, _ = world
    service.observe(tenant(ctx, config), snapshot(), NOW)
    t = tenant(ctx, config)
    review_id = the_review(ctx, config).review_id
    later = NOW + timedelta(minutes=30)
    transition, outcome = service.apply(
        t, review_id, lambda r: rules.submit_answers(r, ["60k"], later, t.rules, t.calendar, t.view), later
    )
    assert transition is not None and transition.ok and outcome is not None and not outcome.failed
    decided = later + timedelta(minutes=30)
    transition, _ = service.apply(
        t,
        review_id,
        lambda r: rules.decide(r, "return", decided, t.rules, t.calendar, t.view, "call again"),
        decided,
    )
    assert transition is not None and transition.ok
    assert crm.names() == [
        "create_task",  # the manager's questions
        "complete_task",
        "create_task",  # the reviewer's review
        "complete_task",
        "move_stage",
        "create_task",  # back to the manager: work on it
        "add_note",
    ]
    assert ("move_stage", "IN_PROCESS") in crm.calls
    # A second click is refused and changes nothing.
    again, _ = service.apply(
        t, review_id, lambda r: rules.decide(r, "confirm", decided, t.rules, t.calendar, t.view), decided
    )
    assert again is not None and again.refused is rules.Refusal.ALREADY_DECIDED
    assert len(crm.calls) == 7
    rows = ctx.store.violations(TENANT, NOW, decided + timedelta(days=1), "qc_returned_to_work")
    assert len(rows) == 1 and rows[0].details["comment"] == "call again"
    assert t.reviews.open_ids() == []


def test_a_task_the_crm_refused_at_first_is_made_by_the_next_sweep(world):
    ctx, config, clock, crm, _ = world
    crm.down = True
    assert not service.observe(tenant(ctx, config), snapshot(), NOW)  # the message is retried
    crm.down = False
    [(_review_id, _, pending)] = tenant(ctx, config).reviews.open_ids()
    assert pending
    clock.advance(timedelta(minutes=5))
    service.sweep(ctx, config, clock(), None)
    service.sweep(ctx, config, clock(), None)
    assert crm.names() == ["create_task"]
    [(_, _, pending)] = tenant(ctx, config).reviews.open_ids()
    assert not pending


def test_of_two_snapshots_from_the_same_second_the_rejected_one_stands(world):
    ctx, config, _, crm, _ = world
    service.observe(tenant(ctx, config), snapshot(), NOW)
    service.observe(tenant(ctx, config), snapshot("NEW", reason=None), NOW)  # an echo of an earlier save
    assert crm.names() == ["create_task"] and len(tenant(ctx, config).reviews.open_ids()) == 1
