"""Which events the webhook path dedupes in the inbox (one write each), and which it queues as
they come because every process consuming them declares a repeat harmless."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from leadwatch.events import CrmEvent, EntityRef, EntityType, EventKind
from leadwatch.ingress import accept
from leadwatch.process import Process
from leadwatch.registry import ProcessRegistry
from leadwatch.store.memory import MemoryStore
from workflows import PROCESSES

NOW = datetime(2025, 11, 11, 7, 0, tzinfo=UTC)
BOTH = SimpleNamespace(tenant="t1", enabled=lambda name: True)
TIMELINESS_ONLY = SimpleNamespace(tenant="t1", enabled=lambda name: name == "timeliness")


def test_a_cards_arrival_and_deletion_are_deduped_the_rest_is_not() -> None:
    registry = ProcessRegistry(PROCESSES)
    deduped = {kind.value for kind in EventKind if registry.deduped(BOTH, kind.value)}  # type: ignore[arg-type]
    assert deduped == {"lead.created", "lead.deleted"}
    assert {kind.value for kind in EventKind if registry.deduped(TIMELINESS_ONLY, kind.value)} == deduped  # type: ignore[arg-type]


def test_a_kind_is_deduped_unless_every_process_consuming_it_says_a_repeat_is_harmless() -> None:
    def process(name: str, idempotent: tuple[str, ...]) -> Process:
        return Process(
            name=name,
            title=name,
            config="x:y",
            events=("lead.changed",),
            on_events="x:y",
            idempotent_events=idempotent,
        )

    registry = ProcessRegistry([process("careful", ()), process("relaxed", ("lead.changed",))])
    assert registry.deduped(BOTH, "lead.changed")  # type: ignore[arg-type]
    only_relaxed = SimpleNamespace(enabled=lambda name: name == "relaxed")
    assert not registry.deduped(only_relaxed, "lead.changed")  # type: ignore[arg-type]
    assert not registry.deduped(BOTH, "call.ended")  # type: ignore[arg-type]  # nobody consumes it
    with pytest.raises(ValueError, match="idempotent_events it does not consume"):
        process("odd", ("call.ended",))


class Queue:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send(self, payloads: list[dict[str, Any]]) -> None:
        self.sent += payloads


def event(kind: EventKind, key: str, source: str = "webhook") -> CrmEvent:
    return CrmEvent(
        tenant="t1", kind=kind, entity=EntityRef(EntityType.LEAD, "42"), dedupe_key=key, source=source
    )


def test_accept_writes_the_inbox_only_for_the_events_it_dedupes() -> None:
    store, queue = MemoryStore(), Queue()
    ctx = SimpleNamespace(clock=lambda: NOW, store=store, queue=queue, processes=ProcessRegistry(PROCESSES))
    events = [
        event(EventKind.LEAD_CREATED, "add:42"),
        event(EventKind.STAGE_CHANGED, "update:42:1"),
        event(EventKind.CALL_ENDED, "call:7"),
        event(EventKind.LEAD_CHANGED, "recon:lead:42:NEW", source="reconcile"),
    ]
    assert accept(ctx, BOTH, events) == (4, 0)  # type: ignore[arg-type]
    assert [e["dedupe_key"] for e in store.events("t1")] == ["add:42", "recon:lead:42:NEW"]
    # Delivered again: the deduped ones are recognised, the others queued again.
    assert accept(ctx, BOTH, events) == (2, 2)  # type: ignore[arg-type]
    assert [e["dedupe_key"] for e in queue.sent[4:]] == ["update:42:1", "call:7"]


def test_a_failed_queueing_forgets_only_what_it_stored() -> None:
    class Down(Queue):
        def send(self, payloads: list[dict[str, Any]]) -> None:
            raise RuntimeError("SQS is down")

    store = MemoryStore()
    ctx = SimpleNamespace(clock=lambda: NOW, store=store, queue=Down(), processes=ProcessRegistry(PROCESSES))
    with pytest.raises(RuntimeError):
        accept(ctx, BOTH, [event(EventKind.LEAD_CREATED, "add:42"), event(EventKind.STAGE_CHANGED, "u:1")])  # type: ignore[arg-type]
    assert store.events("t1") == []


def test_a_card_too_big_even_with_its_title_cut_is_left_for_the_worker_to_read():
    from datetime import UTC, datetime

    from leadwatch.events import CrmEvent, EntityRef, EntityType, EventKind, LeadSnapshot
    from leadwatch.ingress import MAX_EVENT_BYTES, _fit

    entity = EntityRef(EntityType.LEAD, "1")
    at = datetime(2025, 11, 11, tzinfo=UTC)
    lead = LeadSnapshot(entity, "143", "7", at, title="x" * 1000, fields={"f": "y" * MAX_EVENT_BYTES})
    event = CrmEvent("t", EventKind.STAGE_CHANGED, entity, "k", lead=lead)
    assert _fit(event).lead is None and _fit(event).needs_card()
    small = CrmEvent(
        "t", EventKind.STAGE_CHANGED, entity, "k", lead=LeadSnapshot(entity, "143", "7", at, fields={"r": 1})
    )
    assert _fit(small) == small
