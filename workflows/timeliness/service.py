"""Timeliness on the worker: each card event updates the card's state and asks for its intake stamp."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from leadwatch import executor
from leadwatch.events import Activity, Call, CrmEvent, EntityRef, EventKind
from leadwatch.process import new_card_fields
from workflows.timeliness import rules as timeliness

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context
    from leadwatch.dispatch import EventBatch, Message


def on_events(
    ctx: Context, config: TenantConfig, batch: EventBatch, items: list[tuple[Message, CrmEvent]]
) -> set[str]:
    """Returns the ids of the messages whose effects are not all done (to be retried)."""
    tenant = config.tenant
    now = ctx.clock()
    calendar = ctx.calendar(config)
    rules = timeliness.TimelinessRules.from_config(config.section("timeliness"))

    entities = {ref for _, e in items if (ref := batch.entity_of(e)) is not None}
    states = ctx.store.get_leads(tenant, entities)
    deleted = {e.entity for _, e in items if e.kind is EventKind.LEAD_DELETED and e.entity is not None}
    for gone in deleted & states.keys():
        # Gone from the CRM: nothing to judge or write any more (a verdict it had stays).
        ctx.store.close_deleted(states[gone], now)
    items = [(m, e) for m, e in items if batch.entity_of(e) not in deleted]
    # Read the card when the event did not carry it, and for activities on cards we never saw
    # (their creation webhook was lost): the card is how they get their intake.
    to_read = {
        ref
        for _, e in items
        if (ref := batch.entity_of(e)) is not None
        and e.lead is None
        and (e.needs_card() or ref not in states)
    }
    cards = batch.cards(to_read) if to_read else {}

    current: dict[EntityRef, timeliness.LeadState | None] = dict(states)
    created: set[EntityRef] = set()
    changed: set[EntityRef] = set()
    effects_of: dict[str, list[str]] = {}
    all_effects = []
    for message, event in items:
        entity = batch.entity_of(event)
        if entity is None:
            continue  # an activity on a contact or company, or one that no longer exists
        ids = effects_of.setdefault(message.message_id, [])
        snapshot = event.lead or cards.get(entity)
        if snapshot is not None:
            decision = timeliness.observe(tenant, current.get(entity), snapshot, calendar, rules, now)
            _apply(decision, entity, current, created, changed)
            all_effects.extend(decision.effects)
            ids.extend(e.effect_id for e in decision.effects)
        activity = batch.activity_of(event)
        call = event.call or (activity.call if activity else None)
        if call is not None and activity is None:
            activity = call_activity(replace(call, entity=call.entity or entity))
        if activity is not None:
            decision = timeliness.observe_activity(current.get(entity), activity, rules)
            _apply(decision, entity, current, created, changed)

    # A new card's intake field is written before the card is stored, and the card is stored
    # saying so: no later sighting asks for it, and the ledger keeps no claim or row of it (two
    # writes a card). Unclaimed (`held`), so two workers taking the same new card in at once may
    # both write it: the same value. One that fails is claimed and counted as any, and the card is
    # stored without it, so the next sighting asks again through the ledger.
    first_ids = {timeliness.intake_effect_id(tenant, entity) for entity in created}
    first = executor.perform(ctx, config, [e for e in all_effects if e.effect_id in first_ids], held=created)
    for entity in sorted(created | changed):
        state = current[entity]
        assert state is not None
        if entity in created:
            stamped = timeliness.intake_effect_id(tenant, entity) in first.done - first.gave_up.keys()
            # The other processes' own fields of a new card go in with it (dialing's plan day).
            new = new_card_fields(ctx, config, replace(state, intake_stamped=stamped))
            if ctx.store.create_lead(new, now):
                # The sweep's job for this tenant must run by the card's control time.
                ctx.wake(tenant, "timeliness", "sweep", max(state.due_at, now))
                continue
        ctx.store.update_lead(state)
    outcome = executor.perform(ctx, config, [e for e in all_effects if e.effect_id not in first_ids])
    done = outcome.done | first.done
    return {message_id for message_id, ids in effects_of.items() if not all(i in done for i in ids)}


def call_activity(call: Call) -> Activity:
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
