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

from crm_adapters.base import CrmError
from leadwatch import observability
from leadwatch.config import TenantConfig
from leadwatch.context import Context
from leadwatch.events import Activity, CrmEvent, EntityRef, LeadSnapshot
from leadwatch.process import resolve

log = logging.getLogger("leadwatch.worker")


@dataclass(frozen=True)
class Message:
    message_id: str
    body: str


@dataclass
class BatchReport:
    failed: list[str] = field(default_factory=list)
    poison: dict[str, str] = field(default_factory=dict)  # message id -> reason
    processed: int = 0


def handle(ctx: Context, messages: list[Message]) -> BatchReport:
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
            log.exception(
                "tenant %s: %s failed on %d events; they will be retried", tenant, process.name, len(mine)
            )
            failed |= {m.message_id for m, _ in mine}
    return failed
