"""The deadline sweep: verdicts for the cards whose control time has come.

A job per tenant (leadwatch.scheduling), woken when the tenant's next card falls due (the
worker wakes it for each new card; the job names the next one it knows of).

Reads only the due cards (the sparse due index), looks again in the CRM at those about to be
called late, decides each verdict and claims the card with it pinned in one conditional write
(an overlapping sweep leaves it alone), performs the verdict's effects, and closes the card
(per-manager counter, then verdict). A card whose effects did not all succeed is released and
stays due, with its verdict pinned, for the next sweep.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from crm_adapters.base import CrmError
from leadwatch import executor, observability
from leadwatch.cards import LeadState
from leadwatch.config import TenantConfig
from leadwatch.context import Context
from leadwatch.effects import SetCardFields
from leadwatch.messages import writer_for
from workflows.timeliness import rules as timeliness

log = logging.getLogger("leadwatch.sweep")

FIRST_LOOKBACK = timedelta(days=7)  # where the very first sweep of a tenant starts reading
CHECKPOINT = "sweep"  # the oldest day bucket that may still hold an open card
CLAIM_HOLD = timedelta(minutes=5)
MAX_PER_SWEEP = 1000
RETRY_AFTER = timedelta(minutes=1)


@dataclass
class SweepReport:
    due: int = 0
    closed: int = 0
    late: int = 0
    retried_later: int = 0
    skipped: int = 0
    gave_up: int = 0  # closed with an effect given up (journalled with its reason)
    errors: dict[str, str] = field(default_factory=dict)
    more: bool = False  # a full page, or out of time: continue at once (leadwatch.scheduling)
    wake_at: datetime | None = None  # when the tenant's next card falls due


def sweep(ctx: Context, now: datetime | None = None) -> dict[str, SweepReport]:
    """Run the sweep over every tenant now, as its Lambda does (tests, the demo, the bench)."""
    from leadwatch.scheduling import run_process_schedule

    return run_process_schedule(ctx, "timeliness", "sweep", now)


def sweep_tenant(ctx: Context, config: TenantConfig, now: datetime, budget: Any = None) -> SweepReport:
    """One tenant's due cards (at most MAX_PER_SWEEP a job; the rest in its continuation)."""
    report = SweepReport()
    store = ctx.store
    today = now.astimezone(UTC).date()
    stored = store.get_checkpoint(config.tenant, CHECKPOINT)
    since = date.fromisoformat(stored) if stored else (now - FIRST_LOOKBACK).date()
    due = list(store.due_leads(config.tenant, now, since=since, limit=MAX_PER_SWEEP))
    report.due = len(due)
    token = uuid.uuid4().hex
    still_open: set[date] = set()  # buckets that keep an open card after this sweep
    adapter = ctx.adapter(config)
    writer = writer_for(ctx, config)
    calendar = ctx.calendar(config)
    rules = timeliness.TimelinessRules.from_config(config.section("timeliness"))
    try:
        looked = _refresh_unprocessed(ctx, config, due, now)
    except CrmError as exc:
        # Without a fresh look a lost webhook could turn into a false "late": try again next minute.
        log.warning("tenant %s: cannot re-read due cards, sweep postponed: %s", config.tenant, exc)
        observability.crm_failure(config.tenant, exc)
        still_open |= {day for day, _ in due}
        report.retried_later = len(due)
        report.errors["refresh"] = str(exc)
        looked = []
    plans = []
    effects = []
    for day, state in looked:
        if state is None:
            continue  # deleted in the CRM: closed without a verdict
        view = timeliness.CardView(adapter.card_url(state.entity), writer)
        # A verdict pinned by an earlier sweep stands: its effects are made again (the ledger does
        # only those not done yet), then it is counted and the card closed.
        verdict, lead_effects = timeliness.decide_verdict(state, rules, view, state.pending_verdict)
        # One write claims the card, so an overlapping sweep leaves it alone, and pins its verdict,
        # so a sweep that fails or dies before closing it leaves the next one the same verdict.
        if not store.claim(state, token, now, CLAIM_HOLD, verdict=verdict):
            still_open.add(day)
            report.skipped += 1
            continue
        plans.append(
            (day, replace(state, pending_verdict=verdict), verdict, [e.effect_id for e in lead_effects])
        )
        effects.extend(lead_effects)
    # The cards claimed above are this sweep's until it closes or releases them: their verdict
    # fields are written without a ledger claim or row (leadwatch.executor._write_cards).
    held = [state.entity for _, state, _, _ in plans]
    outcome = executor.perform(ctx, config, effects, budget, held) if effects else executor.Outcome()
    writes = {e.effect_id for e in effects if isinstance(e, SetCardFields)}
    for day, state, verdict, ids in plans:
        if not outcome.all_done(ids):
            still_open.add(day)
            # Its verdict field, written now under the card's claim, left no ledger row (closing
            # the card records it): record it, so the next sweep does not write it again.
            written = [i for i in ids if i in writes and i in outcome.done and i not in outcome.gave_up]
            if written:
                store.mark_effects(config.tenant, written, now)
            store.release(state, token)
            report.retried_later += 1
            for effect_id in ids:
                if effect_id in outcome.failed:
                    report.errors[effect_id] = outcome.failed[effect_id]
            continue
        stats_day = timeliness.stats_day(state, calendar.tz)
        if store.close_verdict(state, verdict, token, now, stats_day, state.responsible or "unassigned"):
            report.closed += 1
            report.late += verdict == timeliness.LATE
            observability.verdict(config.tenant, verdict)
            log.info(
                "tenant %s: %s is %s",
                config.tenant,
                state.entity.key,
                verdict,
                extra={"lead": state.entity.key},
            )
        given_up = {outcome.gave_up[i] for i in ids if i in outcome.gave_up}
        if given_up:
            report.gave_up += 1
            if executor.CARD_DELETED in given_up:
                # Its deletion webhook was lost (or never subscribed): judged, and now let go.
                store.close_deleted(state, now)
    # Past buckets hold only cards already due, so one that yielded nothing still open is empty for
    # good. Yesterday is read again for an hour after midnight UTC: a worker whose clock lags may
    # still write there. A full page may have left cards unread: then keep reading from the same place.
    since_midnight = now.astimezone(UTC) - datetime.combine(today, datetime.min.time(), UTC)
    floor = today - timedelta(days=1) if since_midnight < timedelta(hours=1) else today
    checkpoint = since if len(due) >= MAX_PER_SWEEP else min(still_open | {floor})
    if checkpoint.isoformat() != stored:
        store.set_checkpoint(config.tenant, CHECKPOINT, checkpoint.isoformat())
    # Out of time with messages left unsent: continue at once, if this run got anywhere (a CRM or
    # Telegram that fails is waited for, a minute at a time, not hammered).
    out_of_time = budget is not None and budget.spent() and report.retried_later > 0 and report.closed > 0
    report.more = len(due) >= MAX_PER_SWEEP or out_of_time
    if report.retried_later:
        report.wake_at = now + RETRY_AFTER  # what failed stays due: look again next minute
    elif not report.more:
        report.wake_at = store.next_due(config.tenant, now)
    return report


def _refresh_unprocessed(
    ctx: Context, config: TenantConfig, due: list[tuple[date, LeadState]], now: datetime
) -> list[tuple[date, LeadState | None]]:
    """Look again at the cards about to be called late: the card, then its activities.

    Bitrix24 never redelivers a lost event and amoCRM hooks can be lost, so the
    stored state may miss a stage change or a call; the CRM does not. Both reads
    are batched (one call per 50 cards on Bitrix24, per 250 on amoCRM), and only
    cards still looking unprocessed are read. A card deleted from the CRM is
    closed without a verdict (None).
    """
    adapter = ctx.adapter(config)
    calendar = ctx.calendar(config)
    rules = timeliness.TimelinessRules.from_config(config.section("timeliness"))
    current: dict = {state.entity: state for _, state in due}
    # Unprocessed, or processed only after the control time: an earlier call whose webhook is late
    # (queued behind an outage) must not make it late.
    suspects = [
        entity
        for entity, state in current.items()
        if (state.processed_at is None or state.processed_at > state.due_at) and state.pending_verdict is None
    ]
    if not suspects:
        return list(due)
    cards = adapter.get_leads(suspects)
    changed = set()
    for entity in suspects:
        card = cards.get(entity)
        if card is None:
            ctx.store.close_deleted(current[entity], now)
            current[entity] = None
            continue
        decision = timeliness.observe(config.tenant, current[entity], card, calendar, rules, now)
        if decision.state is not None:
            current[entity] = decision.state
            changed.add(entity)
    still = [
        e
        for e in suspects
        if current[e] is not None
        and (current[e].processed_at is None or current[e].processed_at > current[e].due_at)
    ]
    if still and rules.activity_counts_as_processed:
        for entity, activities in adapter.activities_on(still).items():
            for activity in sorted(activities, key=lambda a: a.created_at):
                decision = timeliness.observe_activity(current[entity], activity, rules)
                if decision.state is not None:
                    current[entity] = decision.state
                    changed.add(entity)
    for entity in changed:
        ctx.store.update_lead(current[entity])
    return [(day, current[state.entity]) for day, state in due]
