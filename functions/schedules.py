"""EventBridge schedules: one Lambda per process schedule (built from the registry) and the
framework's reconciliation. Each runs its job once per tenant where its process is enabled."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING, Any

from chalice import Chalice, Rate

if TYPE_CHECKING:
    from leadwatch.process import Process, Schedule
    from leadwatch.registry import ProcessRegistry

RECONCILE_MINUTES = int(os.environ.get("LEADWATCH_RECONCILE_MINUTES", "10"))


def _as_dict(report: Any) -> dict:
    return asdict(report) if is_dataclass(report) else dict(report)


def scheduled_job(process: Process, schedule: Schedule) -> Callable[[Any], dict]:
    """The Lambda handler of one process schedule."""

    def handler(event) -> dict:
        from leadwatch import observability
        from leadwatch.context import get_context
        from leadwatch.scheduling import run_schedule

        with observability.invocation(event.event_id, lambda_context=event.context) as log:
            reports = run_schedule(get_context(), process, schedule)
            for tenant, report in reports.items():
                log.info(f"{schedule.name}: %s", _as_dict(report), extra={"tenant": tenant})
            return {tenant: _as_dict(report) for tenant, report in reports.items()}

    handler.__name__ = handler.__qualname__ = process.function_name(schedule)
    return handler


def reconcile(event) -> dict:
    from leadwatch import observability
    from leadwatch.context import get_context
    from leadwatch.reconcile import reconcile as run

    with observability.invocation(event.event_id, lambda_context=event.context) as log:
        ctx = get_context()
        if observability.metrics_enabled():
            depth = observability.queue_depth_of(ctx.queue)
            if depth is not None:
                observability.queue_depth(depth)
        reports = run(ctx)
        for tenant, report in reports.items():
            log.info(
                "reconcile: %d changed cards listed, %d fed; processes: %s",
                report.listed,
                report.fed,
                report.processes,
                extra={"tenant": tenant},
            )
        return {tenant: _as_dict(report) for tenant, report in reports.items()}


def register(app: Chalice, processes: ProcessRegistry) -> dict[str, Any]:
    """Every schedule on the app; returns the handlers by name, for app.py to expose them where
    Lambda looks (`app.<name>`)."""
    handlers: dict[str, Any] = {
        "reconcile": app.schedule(Rate(RECONCILE_MINUTES, unit=Rate.MINUTES), name="reconcile")(reconcile)
    }
    for process, schedule in processes.schedules():
        name = process.function_name(schedule)
        handlers[name] = app.schedule(Rate(schedule.every_minutes, unit=Rate.MINUTES), name=name)(
            scheduled_job(process, schedule)
        )
    return handlers
