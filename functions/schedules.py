"""EventBridge schedules: the deadline sweep (every minute) and reconciliation."""

from __future__ import annotations

import os

from chalice import Blueprint, Rate

bp = Blueprint(__name__)

RECONCILE_MINUTES = int(os.environ.get("LEADWATCH_RECONCILE_MINUTES", "10"))


@bp.schedule(Rate(1, unit=Rate.MINUTES), name="deadline_sweep")
def deadline_sweep(event) -> dict:
    from runtime import observability
    from runtime.context import get_context
    from runtime.sweep import sweep

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
    from runtime import observability
    from runtime.context import get_context
    from runtime.reconcile import reconcile as run

    with observability.invocation(event.event_id, lambda_context=event.context) as log:
        reports = run(get_context())
        for tenant, report in reports.items():
            log.info(
                "reconcile: %d changed cards listed, %d fed",
                report.listed,
                report.fed,
                extra={"tenant": tenant},
            )
        return {tenant: vars(report) for tenant, report in reports.items()}
