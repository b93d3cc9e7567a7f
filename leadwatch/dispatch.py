"""The queue worker's dispatch: each event to the processes subscribed to it.

A batch is grouped by tenant so card reads and CRM writes are batched too; each
tenant's events go to every process enabled for the tenant that consumes their kind,
in registry order. The processes share one view of the batch (`EventBatch`), so the
activities and cards the events point to are read from the CRM once, whoever asks.
A process that fails fails only its own work: the others still run, and since every
effect is ledgered, the retry of the message repeats none of theirs.
Returns the ids of the messages that must be retried (SQS partial batch failure).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from crm_adapters.base import CrmError
from leadwatch import observability
from leadwatch.config import TenantConfig
from leadwatch.context import Context
from leadwatch.events import Activity, CrmEvent, EntityRef, LeadSnapshot
from leadwatch.process import resolve

log = logging.getLogger("leadwatch.worker")


# A failed message comes back after 30 s, then 1, 2, 4, 8 minutes, then every 15 minutes: with the
# queues' maxReceiveCount of 10 (infra/resources.yaml) a CRM outage of 75 minutes is ridden out
# before anything reaches the dead-letter queue (40 minutes of outage cost 7 tries).
FIRST_RETRY_SECONDS = 30
LAST_RETRY_SECONDS = 900


def retry_delay(receive_count: int) -> int:
    """Seconds until a message that failed on its `receive_count`-th receive is tried again."""
    # Doubling by a shift: `2 ** n` is not an int to a type checker (n might be negative).
    return min(FIRST_RETRY_SECONDS * (1 << max(receive_count - 1, 0)), LAST_RETRY_SECONDS)


def back_off(queue: Any, records: list[dict[str, Any]], failed: list[str], deferred: list[str]) -> None:
    """Set when each failed message comes back (SQS ChangeMessageVisibility): failures back off,
    deferred ones (never attempted) come back at once. Best effort: without it a message still
    comes back, at the queue's visibility timeout."""
    change = getattr(queue, "change_visibility", None)
    if change is None or not failed:
        return
    by_id = {r.get("messageId"): r for r in records}
    handles = {}
    for message_id in failed:
        record = by_id.get(message_id)
        if record is None or not record.get("receiptHandle"):
            continue
        count = int((record.get("attributes") or {}).get("ApproximateReceiveCount") or 1)
        handles[record["receiptHandle"]] = 0 if message_id in deferred else retry_delay(count)
    try:
        change(handles)
    except Exception:
        log.exception("could not set when %d failed messages come back", len(handles))


@dataclass(frozen=True)
class Message:
    message_id: str
    body: str


@dataclass
class BatchReport:
    failed: list[str] = field(default_factory=list)
    poison: dict[str, str] = field(default_factory=dict)  # message id -> reason
    processed: int = 0
    # Not attempted: the invocation ran out of time first (also in `failed`; retried at once).
    deferred: list[str] = field(default_factory=list)


def handle(ctx: Context, messages: list[Message], budget: Any = None) -> BatchReport:
    """`budget` (a leadwatch.scheduling.Budget): no tenant is started once it is spent; its
    messages are given back untouched rather than lost with a killed invocation."""
    report = BatchReport()
    by_tenant: dict[str, list[tuple[Message, CrmEvent]]] = {}
    for message in messages:
        try:
            event = CrmEvent.from_dict(json.loads(message.body))
        except (ValueError, KeyError, TypeError) as exc:
            report.poison[message.message_id] = f"unreadable event: {type(exc).__name__}: {exc}"
            continue
        if ctx.tenant(event.tenant) is None:
            report.poison[message.message_id] = f"unknown tenant {event.tenant!r}"
            continue
        by_tenant.setdefault(event.tenant, []).append((message, event))
    bodies = {m.message_id: m.body for m in messages}
    for poisoned, reason in report.poison.items():
        log.error("message %s is poison: %s", poisoned, reason)
        # Retrying cannot help: park it now, with its reason, instead of after maxReceiveCount tries.
        try:
            if ctx.dead_letters is None:
                raise RuntimeError("no dead-letter queue configured")
            ctx.dead_letters.send_dead_letter(bodies[poisoned], reason)
        except Exception:
            log.exception("message %s could not be parked; SQS's redrive will move it", poisoned)
            report.failed.append(poisoned)

    for tenant, items in by_tenant.items():
        if budget is not None and budget.spent():
            report.deferred.extend(m.message_id for m, _ in items)
            report.failed.extend(m.message_id for m, _ in items)
            continue
        config = ctx.tenant(tenant)
        assert config is not None
        observability.bind(tenant=tenant)
        try:
            failed = _dispatch(ctx, config, items)
        except CrmError as exc:  # reading the batch's activities failed: no process could start
            log.warning("tenant %s: CRM unavailable, %d events will be retried: %s", tenant, len(items), exc)
            observability.crm_failure(tenant, exc)
            failed = {m.message_id for m, _ in items}
        except Exception:  # a tenant that cannot even start (its secrets, its adapter) stops no other
            log.exception("tenant %s: %d events failed and will be retried", tenant, len(items))
            failed = {m.message_id for m, _ in items}
        report.failed.extend(sorted(failed))
        report.processed += len(items) - len(failed)
    observability.unbind("tenant")
    return report


class EventBatch:
    """One tenant's events of one queue batch, in the order they happened, with what they point to.

    The activities the events name are read in one batched call up front; cards are read on
    demand (`cards`), batched, and kept for the next process that asks.
    """

    def __init__(self, ctx: Context, config: TenantConfig, items: list[tuple[Message, CrmEvent]]):
        self.ctx = ctx
        self.config = config
        self.adapter = ctx.adapter(config)
        self.items = sorted(
            items, key=lambda pair: pair[1].occurred_at.timestamp() if pair[1].occurred_at else 0.0
        )
        wanted = [e.activity_id for _, e in items if e.needs_activity() and e.activity_id]
        self._activities: dict[str, Activity | None] = self.adapter.get_activities(wanted) if wanted else {}
        self._cards: dict[EntityRef, LeadSnapshot | None] = {}

    def only(self, kinds: Iterable[str]) -> list[tuple[Message, CrmEvent]]:
        wanted = set(kinds)
        return [(m, e) for m, e in self.items if e.kind.value in wanted]

    def activity_of(self, event: CrmEvent) -> Activity | None:
        return event.activity or (self._activities.get(event.activity_id) if event.activity_id else None)

    def entity_of(self, event: CrmEvent) -> EntityRef | None:
        """The card an event is about: named by the event, its call or its activity (None: a contact's)."""
        if event.entity is not None:
            return event.entity
        if event.call is not None and event.call.entity is not None:
            return event.call.entity
        activity = self.activity_of(event)
        return activity.entity if activity else None

    def cards(self, entities: Iterable[EntityRef]) -> dict[EntityRef, LeadSnapshot | None]:
        """The cards as the CRM shows them now, read in one batched call for those not read yet."""
        wanted = set(entities)
        missing = sorted(wanted - self._cards.keys())
        if missing:
            self._cards.update(self.adapter.get_leads(missing))
        return {entity: self._cards.get(entity) for entity in wanted}


def _dispatch(ctx: Context, config: TenantConfig, items: list[tuple[Message, CrmEvent]]) -> set[str]:
    tenant = config.tenant
    kinds = {e.kind.value for _, e in items}
    running = [p for p in ctx.processes.running(config) if kinds & set(p.events)]
    if not running:
        return set()  # every process these events concern is off for this tenant
    batch = EventBatch(ctx, config, items)
    failed: set[str] = set()
    for process in running:
        assert process.on_events is not None  # Process requires it with events
        mine = batch.only(process.events)
        try:
            failed |= resolve(process.on_events)(ctx, config, batch, mine)
        except CrmError as exc:
            log.warning(
                "tenant %s: %s: CRM unavailable, %d events will be retried: %s",
                tenant,
                process.name,
                len(mine),
                exc,
            )
            observability.crm_failure(tenant, exc)
            failed |= {m.message_id for m, _ in mine}
        except Exception:
            log.exception("tenant %s: %s failed on %d events", tenant, process.name, len(mine))
            failed |= (
                _one_by_one(ctx, config, batch, process, mine) if len(mine) > 1 else {mine[0][0].message_id}
            )
    return failed


def _one_by_one(
    ctx: Context, config: TenantConfig, batch: EventBatch, process: Any, items: list[tuple[Message, CrmEvent]]
) -> set[str]:
    """A batch that failed as a whole is tried again one message at a time, so one poisoned
    event fails alone instead of taking its neighbours to the dead-letter queue with it (what
    succeeded the first time is in the ledger and is not done again)."""
    failed: set[str] = set()
    for item in items:
        try:
            failed |= resolve(process.on_events)(ctx, config, batch, [item])
        except CrmError as exc:
            observability.crm_failure(config.tenant, exc)
            failed.add(item[0].message_id)
        except Exception:
            log.exception(
                "tenant %s: %s failed on message %s", config.tenant, process.name, item[0].message_id
            )
            failed.add(item[0].message_id)
    if len(failed) < len(items):
        log.warning(
            "tenant %s: %s: %d of %d failed alone", config.tenant, process.name, len(failed), len(items)
        )
    return failed
