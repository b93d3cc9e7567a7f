"""How the worker gives back what it could not do: a poisoned event fails alone, tenants not
started in time are given back untouched, and failed messages back off (SQS
ChangeMessageVisibility) long enough to ride out a 40-minute CRM outage before the
dead-letter queue. On the in-memory store, through the real dispatch."""

from __future__ import annotations

import json
from datetime import UTC, timedelta
from pathlib import Path

from leadwatch.dispatch import LAST_RETRY_SECONDS, Message, back_off, handle, retry_delay
from leadwatch.events import CrmEvent, EntityRef, EntityType, EventKind, LeadSnapshot
from leadwatch.store.schema import load_template
from leadwatch.testing.stack import SimClock
from tests.unit.test_processes_in_memory import TUESDAY_10, StubCrm, StubNotifier, context

RESOURCES = Path(__file__).resolve().parents[2] / "infra" / "resources.yaml"


class PoisonedCrm(StubCrm):
    """A CRM whose answer for one card breaks the code that reads it (a bug a card triggers)."""

    poisoned: EntityRef | None = None

    def get_leads(self, entities):
        if self.poisoned in entities:
            raise ValueError("a card the parser chokes on")
        return super().get_leads(entities)


def _event(n: int, tenant: str) -> Message:
    entity = EntityRef(EntityType.LEAD, str(n))
    event = CrmEvent(
        tenant=tenant,
        kind=EventKind.LEAD_CHANGED,
        entity=entity,
        dedupe_key=f"t:{n}",
        occurred_at=TUESDAY_10.astimezone(UTC),
    )
    return Message(f"m{n}", json.dumps(event.to_dict()))


def _card(n: int) -> LeadSnapshot:
    return LeadSnapshot(EntityRef(EntityType.LEAD, str(n)), "NEW", "7", TUESDAY_10.astimezone(UTC))


def test_a_poisoned_event_fails_alone_and_its_neighbours_go_through() -> None:
    crm = PoisonedCrm()
    crm.cards = {_card(n).entity: _card(n) for n in (1, 2, 3)}
    crm.poisoned = EntityRef(EntityType.LEAD, "2")
    ctx = context(SimClock(TUESDAY_10), crm, StubNotifier())
    tenant = next(iter(ctx.registry)).tenant
    report = handle(ctx, [_event(n, tenant) for n in (1, 2, 3)])
    assert report.failed == ["m2"]
    stored = ctx.store.get_leads(tenant, [EntityRef(EntityType.LEAD, n) for n in ("1", "2", "3")])
    assert sorted(e.id for e in stored) == ["1", "3"]


class Spent:
    def spent(self) -> bool:
        return True

    def left(self) -> float:
        return 0.0


def test_tenants_not_started_in_time_are_given_back_untouched() -> None:
    crm = StubCrm()
    ctx = context(SimClock(TUESDAY_10), crm, StubNotifier())
    tenant = next(iter(ctx.registry)).tenant
    report = handle(ctx, [_event(1, tenant), _event(2, tenant)], budget=Spent())
    assert report.deferred == report.failed == ["m1", "m2"]
    assert crm.writes == [] and ctx.store.get_leads(tenant, [EntityRef(EntityType.LEAD, "1")]) == {}


class RecordingQueue:
    def __init__(self) -> None:
        self.changes: dict[str, int] = {}

    def change_visibility(self, handles: dict[str, int]) -> None:
        self.changes.update(handles)


def test_failed_messages_back_off_by_their_receive_count_and_deferred_ones_come_back_at_once() -> None:
    records = [
        {"messageId": f"m{n}", "receiptHandle": f"r{n}", "attributes": {"ApproximateReceiveCount": str(n)}}
        for n in (1, 3, 9, 4)
    ]
    queue = RecordingQueue()
    back_off(queue, records, failed=["m1", "m3", "m9", "m4"], deferred=["m4"])
    assert queue.changes == {"r1": 30, "r3": 120, "r9": LAST_RETRY_SECONDS, "r4": 0}


def test_the_queues_ride_out_a_40_minute_outage_before_the_dead_letter_queue() -> None:
    resources = load_template(RESOURCES)["Resources"]
    receives = resources["EventsQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    # A message is received `receives` times; between them it waits retry_delay(1..receives-1).
    waited = timedelta(seconds=sum(retry_delay(n) for n in range(1, receives)))
    assert waited >= timedelta(minutes=40), waited
    assert [retry_delay(n) for n in range(1, 8)] == [30, 60, 120, 240, 480, 900, 900]


def test_no_retry_waits_longer_than_a_quarter_of_an_hour() -> None:
    assert max(retry_delay(n) for n in range(1, 100)) == LAST_RETRY_SECONDS == 15 * 60
