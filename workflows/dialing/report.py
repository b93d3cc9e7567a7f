"""Dialing discipline in the running system: the daily report and the reconciliation of calls.

The counting itself happens in the worker (every call event, whatever its path);
here the stored counters become the head's report at the tenant's report time,
and the CRM's own call records fill in what webhooks missed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from leadwatch import executor
from leadwatch.config import TenantConfig
from leadwatch.context import Context
from leadwatch.effects import Notify
from leadwatch.events import Call, CrmEvent, EntityRef, EventKind
from leadwatch.messages import writer_for
from workflows.dialing import rules as dialing
from workflows.dialing.messages import report_parts
from workflows.dialing.rules import DialingRules

log = logging.getLogger("leadwatch.dialing")

REPORT_CHECKPOINT = "dialing-report"  # the last day whose report went out whole
CALLS_CHECKPOINT = "reconcile-calls"
# Telephony statistics list a call by its start once it has ended: re-read an hour back so a
# long call that ended after the last run is still found.
CALLS_OVERLAP = timedelta(hours=1)


def _sent(ctx: Context) -> set[tuple[str, str]]:
    """The (tenant, day) reports this warm function already knows are out, so most minutes cost no
    read at all. Kept on the context: a new context (another deployment, a test's stack) starts empty."""
    sent: set[tuple[str, str]] = ctx.warm.setdefault("dialing.reports_sent", set())
    return sent


# ---------------------------------------------------------------------------- the report


def daily_report(ctx: Context, config: TenantConfig, day: date) -> dialing.DailyReport:
    """The dialing report of one local day, from the plan index and the day's counters."""
    tenant = config.tenant
    calendar = ctx.calendar(config)
    plan = DialingRules.from_config(config.section("dialing"))
    starts = dialing.plan_starts_covering(day, calendar, plan)
    in_window = ctx.store.plan_leads(tenant, starts) if starts else []
    counts = ctx.store.day_counts(tenant, day)
    totals = ctx.store.call_totals(tenant, [state.entity for _, state in in_window]) if in_window else {}
    leads = []
    titles: dict[EntityRef, str] = {}
    for first, state in in_window:
        titles[state.entity] = state.title
        days = dialing.plan_days(first, calendar, plan)
        attempts_today, _ = counts.get(state.entity, (0, 0))
        attempts_total, touches_total = totals.get(state.entity, (0, 0))
        leads.append(
            dialing.PlanLead(
                entity=state.entity,
                title=state.title,
                manager=state.responsible,
                stage=state.stage,
                first_day=first,
                day_number=days.index(day) + 1 if day in days else 0,
                attempts_today=attempts_today,
                attempts_total=attempts_total,
                touches_total=touches_total,
            )
        )
    calls = ctx.store.touches_on(tenant, day)
    missing = {c.entity for c in calls if c.entity is not None and c.entity not in titles}
    if missing:
        titles.update({e: s.title for e, s in ctx.store.get_leads(tenant, missing).items()})
    touches = [
        dialing.Touch(
            key=call.key,
            entity=call.entity,
            title=titles.get(call.entity, ""),
            manager=call.manager,
            started_at=call.started_at,
            duration=call.duration,
            record_url=call.record_url,
        )
        for call in calls
        if call.entity is not None
    ]
    return dialing.build_report(day, leads, touches, plan, working_day=calendar.is_working_day(day))


def report_view(ctx: Context, config: TenantConfig) -> dialing.ReportView:
    return dialing.ReportView(ctx.adapter(config).card_url, writer_for(ctx, config))


def report_text(ctx: Context, config: TenantConfig, report: dialing.DailyReport) -> str:
    return dialing.render_report(
        report, report_view(ctx, config), DialingRules.from_config(config.section("dialing"))
    )


@dataclass
class ReportRun:
    day: str | None = None
    sent_parts: int = 0
    error: str | None = None
    in_plan: int = 0
    late_days: list[str] = field(default_factory=list)  # earlier days' reports sent late now
    wake_at: datetime | None = None  # the next report moment (leadwatch.scheduling)


def send_due_report(
    ctx: Context, config: TenantConfig, now: datetime, budget: Any = None
) -> ReportRun | None:
    """The reports owed now: today's from its report time on a working day, and any earlier day's
    not sent on its day (sent late, with its date). One job per tenant, woken at report time."""
    calendar = ctx.calendar(config)
    rules = DialingRules.from_config(config.section("dialing"))
    wake_at = dialing.next_report_at(now, calendar, rules, calendar.tz)
    last = ctx.store.get_checkpoint(config.tenant, REPORT_CHECKPOINT)
    owed = [
        day
        for day in dialing.reports_owed(
            now, date.fromisoformat(last) if last else None, calendar, rules, calendar.tz
        )
        if (config.tenant, day.isoformat()) not in _sent(ctx)
    ]
    if not owed:
        return ReportRun(wake_at=wake_at)
    run = ReportRun(wake_at=wake_at)
    for day in owed:
        part = _send_report(ctx, config, day)
        run.day, run.in_plan, run.error = part.day, part.in_plan, part.error
        run.sent_parts += part.sent_parts
        if part.error:
            run.wake_at = now + timedelta(minutes=1)  # the next minute sends the rest
            break
        if day != now.astimezone(calendar.tz).date():
            run.late_days.append(day.isoformat())
    return run


def _send_report(ctx: Context, config: TenantConfig, day: date) -> ReportRun:
    tenant = config.tenant
    run = ReportRun(day=day.isoformat())
    if ctx.store.get_checkpoint(tenant, REPORT_CHECKPOINT) == day.isoformat():
        _sent(ctx).add((tenant, day.isoformat()))
        return run
    report = daily_report(ctx, config, day)
    if any(touch.record_url is None for touch in report.touches):
        _fill_recordings(ctx, config, day, report)
    run.in_plan = report.in_plan
    if report.in_plan == 0 and not report.touches:
        # Nothing to dial and nothing dialed (a new tenant, a quiet week): no message to ignore.
        ctx.store.set_checkpoint(tenant, REPORT_CHECKPOINT, day.isoformat())
        _sent(ctx).add((tenant, day.isoformat()))
        return run
    parts = report_parts(report_text(ctx, config, report))
    effects = [Notify(dialing.report_effect_id(tenant, day, index), part) for index, part in enumerate(parts)]
    outcome = executor.perform(ctx, config, effects)
    run.sent_parts = outcome.performed
    if outcome.all_done([e.effect_id for e in effects]):
        ctx.store.set_checkpoint(tenant, REPORT_CHECKPOINT, day.isoformat())
        _sent(ctx).add((tenant, day.isoformat()))
    else:
        run.error = "some parts not sent; the next run sends the rest"
    return run


def _fill_recordings(ctx: Context, config: TenantConfig, day: date, report: dialing.DailyReport) -> None:
    """Bitrix24's call webhooks carry no recording: read the day's calls once so the head gets the links.

    A CRM that cannot answer now leaves the links out rather than holding the report back.
    """
    calendar = ctx.calendar(config)
    start = datetime.combine(day, datetime.min.time(), calendar.tz)
    try:
        known = {
            call.key: call
            for call in ctx.adapter(config).list_calls(start)
            if call.record_url and call.entity is not None
        }
    except Exception as exc:
        log.warning("tenant %s: recordings not read for the report: %s", config.tenant, exc)
        return
    filled = []
    for touch in report.touches:
        call = known.get(touch.key)
        if touch.record_url is None and call is not None and call.entity == touch.entity:
            ctx.store.add_recording(config.tenant, call, day)
            touch = replace(touch, record_url=call.record_url)
        filled.append(touch)
    report.touches = filled


# ---------------------------------------------------------------------------- reconciliation


@dataclass
class CallsReconcile:
    listed: int = 0
    fed: int = 0
    errors: list[str] = field(default_factory=list)


def reconcile_calls(ctx: Context, config: TenantConfig, now: datetime) -> CallsReconcile:
    """Feed the calls the CRM holds and leadwatch does not (or knows less about) through the queue.

    Known calls with nothing new are skipped here; the worker counts a call once per key anyway.
    """
    tenant = config.tenant
    result = CallsReconcile()
    stored = ctx.store.get_checkpoint(tenant, CALLS_CHECKPOINT)
    if stored:
        since = datetime.fromisoformat(stored) - CALLS_OVERLAP
    else:
        local = now.astimezone(ctx.calendar(config).tz)
        since = local.replace(hour=0, minute=0, second=0, microsecond=0)
    calls = [c for c in ctx.adapter(config).list_calls(since) if c.entity is not None]
    result.listed = len(calls)
    tz = ctx.calendar(config).tz
    keys = [(c.entity, dialing.call_day(c, tz), c.key) for c in calls if c.entity is not None]
    known = ctx.store.known_calls(tenant, keys)
    events = [_call_event(tenant, call) for call in calls if dialing.tells_more(call, known.get(call.key))]
    if events:
        # Queued without the inbox's dedupe row (a write each): a call fed twice (an overlapping
        # run, before the worker merged the first) is merged once, and the second changes nothing.
        ctx.queue.send([event.to_dict() for event in events])
        result.fed = len(events)
    # Moved to now only once the listing reaches a call older than two overlaps (and on the first
    # run): until then the next listing from the same place holds only calls of the last two
    # hours, each a known call to skip, so a busy tenant's reconciliation writes about once an
    # hour instead of at every tick, and a quiet one's not at all.
    if not stored or any(c.started_at < now - 2 * CALLS_OVERLAP for c in calls):
        ctx.store.set_checkpoint(tenant, CALLS_CHECKPOINT, now.isoformat())
    return result


def _call_event(tenant: str, call: Call) -> CrmEvent:
    return CrmEvent(
        tenant=tenant,
        kind=EventKind.CALL_ENDED,
        entity=call.entity,
        dedupe_key=f"recon:call:{call.key}:{call.duration}:{int(bool(call.record_url))}",
        source="reconcile",
        raw_event="reconcile",
        occurred_at=call.started_at,
        call=call,
    )


def send_due_reports(ctx: Context, now: datetime | None = None) -> dict[str, ReportRun]:
    """Run the report schedule over every tenant now, as its Lambda does (tests, the demo, the bench)."""
    from leadwatch.scheduling import run_process_schedule

    return run_process_schedule(ctx, "dialing", "report", now)
