"""EventBridge schedules: the deadline sweep (every minute), reconciliation, the dialing report."""

from __future__ import annotations

import os

from chalice import Blueprint, Rate

bp = Blueprint(__name__)

RECONCILE_MINUTES = int(os.environ.get("LEADWATCH_RECONCILE_MINUTES", "10"))


@bp.schedule(Rate(1, unit=Rate.MINUTES), name="deadline_sweep")
def deadline_sweep(event) -> dict:
    from leadwatch import observability
    from leadwatch.context import get_context
    from workflows.timeliness.sweep import sweep

    with observability.invocation(event.event_id, lambda_context=event.context) as log:
        ctx = get_context()
        if observability.metrics_enabled():
            depth = observability.queue_depth_of(ctx.queue)
            if depth is not None:
                observability.queue_depth(depth)
        reports = sweep(ctx)
        for tenant, report in reports.items():
            log.info(
                "sweep: %d due, %d closed (%d late), %d retried later",
                report.due,
                report.closed,
                report.late,
                report.retried_later,
                extra={"tenant": tenant},
            )
        return {tenant: vars(report) for tenant, report in reports.items()}


@bp.schedule(Rate(RECONCILE_MINUTES, unit=Rate.MINUTES), name="reconcile")
def reconcile(event) -> dict:
    from leadwatch import observability
    from leadwatch.context import get_context
    from leadwatch.reconcile import reconcile as run

    with observability.invocation(event.event_id, lambda_context=event.context) as log:
        reports = run(get_context())
        for tenant, report in reports.items():
            log.info(
                "reconcile: %d changed cards listed, %d fed; %d calls listed, %d fed",
                report.listed,
                report.fed,
                report.calls_listed,
                report.calls_fed,
                extra={"tenant": tenant},
            )
        return {tenant: vars(report) for tenant, report in reports.items()}


# Every minute, but a tenant's report goes out once a working day, at its own local report time:
# tenants live in different time zones and calendars, which one cron expression cannot follow.
@bp.schedule(Rate(1, unit=Rate.MINUTES), name="dialing_report")
def dialing_report(event) -> dict:
    from leadwatch import observability
    from leadwatch.context import get_context
    from workflows.dialing.report import send_due_reports

    with observability.invocation(event.event_id, lambda_context=event.context) as log:
        runs = send_due_reports(get_context())
        for tenant, run in runs.items():
            log.info(
                "dialing report for %s: %d leads in plan, %d parts sent%s",
                run.day,
                run.in_plan,
                run.sent_parts,
                f" ({run.error})" if run.error else "",
                extra={"tenant": tenant},
            )
        return {tenant: vars(run) for tenant, run in runs.items()}
