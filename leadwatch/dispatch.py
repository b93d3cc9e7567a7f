"""The queue worker: events in, workflow decisions, effects out.

A batch is grouped by tenant so card reads and CRM writes are batched too.
Returns the ids of the messages that must be retried (SQS partial batch failure).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta

from crm_adapters.base import CrmError
from leadwatch import executor, observability
from leadwatch.config import TenantConfig
from leadwatch.context import Context
from leadwatch.events import Activity, Call, CrmEvent, EntityRef, LeadSnapshot
from workflows.dialing import rules as dialing
from workflows.timeliness import rules as timeliness

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
    plan = ctx.dialing_rules(config)

    wanted_activities = [e.activity_id for _, e in items if e.needs_activity() and e.activity_id]
    activities: dict[str, Activity | None] = (
        adapter.get_activities(wanted_activities) if wanted_activities else {}
    )

    def activity_of(event: CrmEvent) -> Activity | None:
        return event.activity or (activities.get(event.activity_id) if event.activity_id else None)

    def entity_of(event: CrmEvent) -> EntityRef | None:
        if event.entity is not None:
            return event.entity
        if event.call is not None and event.call.entity is not None:
            return event.call.entity
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
    calls: list[tuple[str, Call]] = []  # (message id, call)
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
            state = current.get(entity)
            if state is not None:
                moved = dialing.observe_stage(
                    state, snapshot.stage_changed_at or snapshot.modified_at, plan, now
                )
                if moved != state:
                    current[entity] = moved
                    if entity not in created:
                        changed.add(entity)
        activity = activity_of(event)
        call = event.call or (activity.call if activity else None)
        if call is not None:
            call = replace(call, entity=call.entity or entity)
            calls.append((message.message_id, call))
            if activity is None:
                activity = _call_activity(call)
        if activity is not None:
            decision = timeliness.observe_activity(current.get(entity), activity, rules)
            _apply(decision, entity, current, created, changed)

    for entity in sorted(created | changed):
        state = current[entity]
        assert state is not None
        if entity in created and ctx.store.create_lead(state, now, _plan_day(state, calendar)):
            continue
        ctx.store.update_lead(state)

    if config.dialing.enabled:
        for _, call in calls:
            assert call.entity is not None
            if current.get(call.entity) is None:
                continue  # a call on a card that no longer exists: nothing to hold it against
            ctx.store.record_call(tenant, call, dialing.call_day(call, calendar.tz), plan.is_touch(call), now)
        rejections = _judge_rejections(ctx, config, current, plan, now)
    else:
        rejections = {}
    for effects in rejections.values():
        all_effects.extend(effects)
    outcome = executor.perform(ctx, config, all_effects)
    for entity, effects in rejections.items():
        state = current[entity]
        if state is not None and outcome.all_done([e.effect_id for e in effects]):
            ctx.store.mark_rejection_checked(state)
    failed = {message_id for message_id, ids in effects_of.items() if not outcome.all_done(ids)}
    # A rejection whose alert failed is judged again with the next event on its card, or by the
    # messages that brought it, retried here.
    unfinished = {
        entity
        for entity, effects in rejections.items()
        if not outcome.all_done([e.effect_id for e in effects])
    }
    if unfinished:
        failed |= {m.message_id for m, e in items if entity_of(e) in unfinished}
    return failed


def _plan_day(state: timeliness.LeadState, calendar) -> date:
    return dialing.first_plan_day(state.due_at, calendar.tz)


def _call_activity(call: Call) -> Activity:
    """A call learnt without its activity (reconciliation) still shows the card was worked on."""
    assert call.entity is not None
    return Activity(
        id=call.activity_id or call.key,
        entity=call.entity,
        kind="call",
        author=call.manager,
        created_at=call.started_at,
        direction=call.direction,
        call=call,
    )


def _judge_rejections(
    ctx: Context,
    config: TenantConfig,
    current: dict[EntityRef, timeliness.LeadState | None],
    plan: dialing.DialingRules,
    now: datetime,
) -> dict[EntityRef, list]:
    """Effects for the cards just moved to a rejected stage: none for a proper rejection.

    Before calling a rejection improper, the card's calls are read back from the CRM once:
    a call whose webhook was lost or is still queued must not make a manager look bad.
    Only attempts made up to the rejection count.
    """
    tenant = config.tenant
    candidates = {
        entity: state
        for entity, state in current.items()
        if state is not None and dialing.needs_rejection_check(state)
    }
    if not candidates:
        return {}
    calendar = ctx.calendar(config)
    counts = {entity: _attempts_before(ctx, tenant, state, plan) for entity, state in candidates.items()}
    doubtful = sorted(entity for entity, (attempts, _) in counts.items() if attempts < plan.min_attempts)
    if doubtful:
        found = ctx.adapter(config).activities_on(doubtful)
        for entity in doubtful:
            for activity in found.get(entity, []):
                if activity.call is None:
                    continue
                call = replace(activity.call, entity=activity.call.entity or entity)
                day = dialing.call_day(call, calendar.tz)
                ctx.store.record_call(tenant, call, day, plan.is_touch(call), now)
            counts[entity] = _attempts_before(ctx, tenant, candidates[entity], plan)
    view = dialing.ReportView(ctx.adapter(config).card_url, config.manager_name, calendar.tz)
    return {
        entity: dialing.rejection_effects(state, *counts[entity], plan, view)
        for entity, state in candidates.items()
    }


# Clocks of the CRM and of its telephony differ a little: a call logged a moment after the
# stage change was still made before it.
REJECTION_GRACE = timedelta(minutes=2)


def _attempts_before(
    ctx: Context, tenant: str, state: timeliness.LeadState, plan: dialing.DialingRules
) -> tuple[int, int]:
    assert state.rejected_at is not None
    limit = state.rejected_at + REJECTION_GRACE
    made = [call for call in ctx.store.calls_of(tenant, state.entity) if call.started_at <= limit]
    return len(made), sum(1 for call in made if plan.is_touch(call))


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
