"""Dialing discipline on the worker: calls counted once per CRM call, rejections judged.

It reads the card state timeliness control keeps (created, control time, stage, owner),
so it runs for a tenant only where timeliness runs; what it writes there is its own:
the card's plan day, when it entered a rejected stage and which rejection was judged.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from leadwatch import executor
from leadwatch.cards import LeadState
from leadwatch.events import Call, CrmEvent, EntityRef, LeadSnapshot
from leadwatch.messages import writer_for
from workflows.dialing import rules as dialing
from workflows.dialing.rules import DialingRules

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context
    from leadwatch.dispatch import EventBatch, Message

# Clocks of the CRM and of its telephony differ a little: a call logged a moment after the
# stage change was still made before it.
REJECTION_GRACE = timedelta(minutes=2)


def on_events(
    ctx: Context, config: TenantConfig, batch: EventBatch, items: list[tuple[Message, CrmEvent]]
) -> set[str]:
    """Returns the ids of the messages to retry: those of cards whose rejection alert failed."""
    tenant = config.tenant
    now = ctx.clock()
    calendar = ctx.calendar(config)
    plan = DialingRules.from_config(config.section("dialing"))

    entities = {ref for _, e in items if (ref := batch.entity_of(e)) is not None}
    states: dict[EntityRef, LeadState] = {
        entity: state
        for entity, state in ctx.store.get_leads(tenant, entities).items()
        if state.deleted_at is None  # deleted in the CRM: out of every plan
    }
    needing = {
        ref for _, e in items if (ref := batch.entity_of(e)) is not None and ref in states and e.needs_card()
    }
    cards = batch.cards(needing) if needing else {}
    snapshots: list[tuple[Message, CrmEvent, EntityRef | None, LeadSnapshot | None]] = []
    for message, event in items:
        ref = batch.entity_of(event)
        snapshots.append((message, event, ref, event.lead or (cards.get(ref) if ref is not None else None)))
    # A batch older than what the card already shows (an out-of-order hook, a slow reconciliation)
    # must not move its stage back.
    newest: dict[EntityRef, datetime] = {}
    for _, _, entity, snapshot in snapshots:
        if entity is not None and snapshot is not None and snapshot.modified_at is not None:
            newest[entity] = max(newest.get(entity, snapshot.modified_at), snapshot.modified_at)

    current = dict(states)
    seen: dict[EntityRef, datetime] = {}
    calls: list[Call] = []
    for _, event, entity, snapshot in snapshots:
        if entity is None or entity not in current:
            continue  # a contact's activity, or a card timeliness has not taken in
        state = current[entity]
        if snapshot is not None and _is_current(snapshot.modified_at, entity, state, newest, seen):
            current[entity] = dialing.observe_stage(
                replace(state, stage=snapshot.stage),
                snapshot.stage_changed_at or snapshot.modified_at,
                plan,
                now,
            )
        activity = batch.activity_of(event)
        call = event.call or (activity.call if activity else None)
        if call is not None:
            calls.append(replace(call, entity=call.entity or entity))

    for entity, state in current.items():
        if state.plan_day is None:
            state = current[entity] = replace(
                state, plan_day=dialing.first_plan_day(state.due_at, calendar.tz)
            )
        if _dialing_fields(state) != _dialing_fields(states[entity]):
            ctx.store.note_dialing(state)
    dated = [(call, dialing.call_day(call, calendar.tz)) for call in dialing.merged_calls(calls)]
    # A call held already with nothing new (its other webhook, a redelivery) costs one read, not
    # a write that changes nothing.
    # Every call is on its card by now (above); the filter tells the type checker so.
    keys = [(c.entity, day, c.key) for c, day in dated if c.entity is not None]
    known = ctx.store.known_calls(tenant, keys) if keys else {}
    telling = [(c, day, plan.is_touch(c)) for c, day in dated if dialing.tells_more(c, known.get(c.key))]
    if telling:
        ctx.store.record_calls(tenant, telling, now, known)  # a write per card and day, or per known call

    rejections = judge_rejections(ctx, config, current, plan, now)
    effects = [effect for found in rejections.values() for effect in found]
    outcome = executor.perform(ctx, config, effects)
    unfinished = set()
    for entity, found in rejections.items():
        if outcome.all_done([e.effect_id for e in found]):
            ctx.store.mark_rejection_checked(current[entity])
        else:
            unfinished.add(entity)
    # A rejection whose alert failed is judged again with the next event on its card, or by the
    # messages that brought it, retried here.
    return {message.message_id for message, _, entity, _ in snapshots if entity in unfinished}


def new_card(ctx: Context, config: TenantConfig, state: LeadState) -> LeadState:
    """Day 1 of a new card's plan, stored with the card (`Process.new_card`)."""
    if state.plan_day is not None:
        return state
    return replace(state, plan_day=dialing.first_plan_day(state.due_at, ctx.calendar(config).tz))


def _is_current(
    modified: datetime | None,
    entity: EntityRef,
    state: LeadState,
    newest: dict[EntityRef, datetime],
    seen: dict[EntityRef, datetime],
) -> bool:
    if modified is None:
        return True
    if state.crm_modified_at is not None and newest[entity] < state.crm_modified_at:
        return False
    if modified < seen.get(entity, modified):
        return False
    seen[entity] = modified
    return True


def _dialing_fields(state: LeadState) -> tuple:
    return (state.plan_day, state.rejected_at, state.rejection_checked)


def judge_rejections(
    ctx: Context,
    config: TenantConfig,
    current: dict[EntityRef, LeadState],
    plan: DialingRules,
    now: datetime,
) -> dict[EntityRef, list]:
    """Effects for the cards just moved to a rejected stage: none for a proper rejection.

    Before calling a rejection improper, the card's calls are read back from the CRM once:
    a call whose webhook was lost or is still queued must not make a manager look bad.
    Only attempts made up to the rejection count.
    """
    tenant = config.tenant
    candidates = {entity: state for entity, state in current.items() if dialing.needs_rejection_check(state)}
    if not candidates:
        return {}
    calendar = ctx.calendar(config)
    counts = {entity: attempts_before(ctx, tenant, state, plan) for entity, state in candidates.items()}
    doubtful = sorted(entity for entity, (attempts, _) in counts.items() if attempts < plan.min_attempts)
    if doubtful:
        found = ctx.adapter(config).activities_on(doubtful)
        read_back = [
            replace(activity.call, entity=activity.call.entity or entity)
            for entity in doubtful
            for activity in found.get(entity, [])
            if activity.call is not None
        ]
        if read_back:
            ctx.store.record_calls(
                tenant, [(c, dialing.call_day(c, calendar.tz), plan.is_touch(c)) for c in read_back], now
            )
        for entity in doubtful:
            counts[entity] = attempts_before(ctx, tenant, candidates[entity], plan)
    view = dialing.ReportView(ctx.adapter(config).card_url, writer_for(ctx, config))
    return {
        entity: dialing.rejection_effects(state, *counts[entity], plan, view)
        for entity, state in candidates.items()
    }


def attempts_before(ctx: Context, tenant: str, state: LeadState, plan: DialingRules) -> tuple[int, int]:
    assert state.rejected_at is not None
    limit = state.rejected_at + REJECTION_GRACE
    made = [call for call in ctx.store.calls_of(tenant, state.entity) if call.started_at <= limit]
    return len(made), sum(1 for call in made if plan.is_touch(call))
