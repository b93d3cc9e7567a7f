"""The deadline sweep: every minute, verdicts for the cards whose control time has come.

Reads only the due cards (the sparse due index), claims each with a conditional
write so an overlapping sweep leaves it alone, performs the verdict's effects,
and closes the card (verdict + per-manager counter) in one transaction. A card
whose effects did not all succeed is released and stays due for the next sweep.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from runtime import executor
from runtime.context import Context
from tenancy.config import TenantConfig
from workflows import timeliness

log = logging.getLogger("leadwatch.sweep")

LOOKBACK = timedelta(days=7)  # a card that keeps failing is retried for a week, then needs a human
CLAIM_HOLD = timedelta(minutes=5)
MAX_PER_SWEEP = 1000


@dataclass
class SweepReport:
    due: int = 0
    closed: int = 0
    late: int = 0
    retried_later: int = 0
    skipped: int = 0
    errors: dict[str, str] = field(default_factory=dict)


def sweep(ctx: Context, now: datetime | None = None) -> dict[str, SweepReport]:
    now = now or ctx.clock()
    reports = {}
    for config in ctx.registry:
        if not config.timeliness.enabled:
            continue
        try:
            reports[config.tenant] = sweep_tenant(ctx, config, now)
        except Exception as exc:
            log.exception("tenant %s: sweep failed", config.tenant)
            reports[config.tenant] = SweepReport(errors={"sweep": type(exc).__name__})
    return reports


def sweep_tenant(ctx: Context, config: TenantConfig, now: datetime) -> SweepReport:
    report = SweepReport()
    store = ctx.store
    due = list(store.due_leads(config.tenant, now, since=(now - LOOKBACK).date(), limit=MAX_PER_SWEEP))
    report.due = len(due)
    if not due:
        return report
    token = uuid.uuid4().hex
    claimed = [state for state in due if store.claim(state, token, now, CLAIM_HOLD)]
    report.skipped = len(due) - len(claimed)
    adapter = ctx.adapter(config)
    calendar = ctx.calendar(config)
    rules = ctx.rules(config)
    plans = []
    effects = []
    for state in claimed:
        view = timeliness.CardView(adapter.card_url(state.entity), config.manager_name(state.responsible))
        verdict, lead_effects = timeliness.decide_verdict(state, rules, view, calendar.tz)
        plans.append((state, verdict, [e.effect_id for e in lead_effects]))
        effects.extend(lead_effects)
    outcome = executor.perform(ctx, config, effects)
    for state, verdict, ids in plans:
        if not outcome.all_done(ids):
            store.release(state, token)
            report.retried_later += 1
            for effect_id in ids:
                if effect_id in outcome.failed:
                    report.errors[effect_id] = outcome.failed[effect_id]
            continue
        day = timeliness.stats_day(state, calendar.tz)
        if store.close_verdict(state, verdict, token, now, day, state.responsible or "unassigned"):
            report.closed += 1
            report.late += verdict == timeliness.LATE
    return report
