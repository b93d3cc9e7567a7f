"""The queue worker: events in, workflow decisions, effects out.

A batch is grouped by tenant so card reads and CRM writes are batched too.
Returns the ids of the messages that must be retried (SQS partial batch failure).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from crm_adapters.base import CrmError
from runtime import executor, observability
from runtime.context import Context
from tenancy.config import TenantConfig
from workflows import timeliness
from workflows.events import Activity, CrmEvent, EntityRef, LeadSnapshot

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
            failed = _handle_tenant(ctx, config, items)
        except CrmError as exc:
            log.warning("tenant %s: CRM unavailable, %d events will be retried: %s", tenant, len(items), exc)
            observability.crm_failure(tenant, exc)
            failed = {m.message_id for m, _ in items}
        except Exception:
            log.exception("tenant %s: %d events failed and will be retried", tenant, len(items))
            failed = {m.message_id for m, _ in items}
        report.failed.extend(sorted(failed))
        report.processed += len(items) - len(failed)
    observability.unbind("tenant")
    return report


def _handle_tenant(ctx: Context, config: TenantConfig, items: list[tuple[Message, CrmEvent]]) -> set[str]:
    tenant = config.tenant
    adapter = ctx.adapter(config)
    now = ctx.clock()
    calendar = ctx.calendar(config)
    rules = ctx.rules(config)

    wanted_activities = [e.activity_id for _, e in items if e.needs_activity() and e.activity_id]
    activities: dict[str, Activity | None] = (
        adapter.get_activities(wanted_activities) if wanted_activities else {}
    )

    def activity_of(event: CrmEvent) -> Activity | None:
        return event.activity or (activities.get(event.activity_id) if event.activity_id else None)

    def entity_of(event: CrmEvent) -> EntityRef | None:
        if event.entity is not None:
            return event.entity
        activity = activity_of(event)
        return activity.entity if activity else None

    entities = {entity_of(e) for _, e in items} - {None}
    states = ctx.store.get_leads(tenant, entities)  # type: ignore[arg-type]
    # Read the card when the event did not carry it, and for activities on cards we never saw
    # (their creation webhook was lost): the card is how they get their intake.
    to_read = {
        entity_of(e)
        for _, e in items
        if (e.needs_card() or entity_of(e) not in states) and e.lead is None and entity_of(e) is not None
    }
    cards: dict[EntityRef, LeadSnapshot | None] = adapter.get_leads(sorted(to_read)) if to_read else {}  # type: ignore[type-var]

    current: dict[EntityRef, timeliness.LeadState | None] = dict(states)
    created: set[EntityRef] = set()
    changed: set[EntityRef] = set()
    effects_of: dict[str, list[str]] = {}
    all_effects = []
    ordered = sorted(items, key=lambda pair: pair[1].occurred_at.timestamp() if pair[1].occurred_at else 0.0)
    for message, event in ordered:
        entity = entity_of(event)
        if entity is None:
            continue  # an activity on a contact or company, or one that no longer exists
        ids = effects_of.setdefault(message.message_id, [])
        snapshot = event.lead or cards.get(entity)
        if snapshot is not None:
            decision = timeliness.observe(tenant, current.get(entity), snapshot, calendar, rules, now)
            _apply(decision, entity, current, created, changed)
            all_effects.extend(decision.effects)
            ids.extend(e.effect_id for e in decision.effects)
        activity = activity_of(event)
        if activity is not None:
            decision = timeliness.observe_activity(current.get(entity), activity, rules)
            _apply(decision, entity, current, created, changed)

    for entity in sorted(created | changed):
        state = current[entity]
        assert state is not None
        if entity in created and ctx.store.create_lead(state, now):
            continue
        ctx.store.update_lead(state)

    outcome = executor.perform(ctx, config, all_effects)
    return {message_id for message_id, ids in effects_of.items() if not outcome.all_done(ids)}


def _apply(
    decision: timeliness.Decision,
    entity: EntityRef,
    current: dict[EntityRef, timeliness.LeadState | None],
    created: set[EntityRef],
    changed: set[EntityRef],
) -> None:
    if decision.state is None:
        return
    current[entity] = decision.state
    if decision.created:
        created.add(entity)
    else:
        changed.add(entity)
