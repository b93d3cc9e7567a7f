"""EventBridge schedules: one small Lambda per process schedule (built from the registry) and the
framework's reconciliation. Each only dispatches: one job per tenant with due work, started as an
asynchronous invocation of the jobs Lambda, which runs it (leadwatch.scheduling)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chalice import Chalice, Rate
from chalice.app import CloudWatchEvent

if TYPE_CHECKING:
    from leadwatch.process import Process, Schedule
    from leadwatch.registry import ProcessRegistry

RECONCILE_MINUTES = int(os.environ.get("LEADWATCH_RECONCILE_MINUTES", "10"))  # as leadwatch.scheduling


def dispatcher(process: Process, schedule: Schedule) -> Callable[[CloudWatchEvent], dict[str, Any]]:
    """The Lambda handler of one process schedule."""

    def handler(event: CloudWatchEvent) -> dict[str, Any]:
        from leadwatch import observability
        from leadwatch.context import get_context
        from leadwatch.scheduling import as_dict, dispatch

        with observability.invocation(event.event_id, lambda_context=event.context) as log:
            done = dispatch(get_context(), process, schedule)
            log.info(f"{process.name} {schedule.name}: %d of %d tenants due", done.due, done.tenants)
            return as_dict(done)

    handler.__name__ = handler.__qualname__ = process.function_name(schedule)
    return handler


def reconcile(event: CloudWatchEvent) -> dict[str, Any]:
    from leadwatch import observability
    from leadwatch.context import get_context
    from leadwatch.scheduling import as_dict, dispatch_reconcile

    with observability.invocation(event.event_id, lambda_context=event.context) as log:
        ctx = get_context()
        if observability.metrics_enabled():
            depth = observability.queue_depth_of(ctx.queue)
            if depth is not None:
                observability.queue_depth(depth)
        done = dispatch_reconcile(ctx)
        log.info("reconcile: %d tenants", done.due)
        return as_dict(done)


def register(app: Chalice, processes: ProcessRegistry) -> dict[str, Any]:
    """Every schedule on the app; returns the handlers by name, for app.py to expose them where
    Lambda looks (`app.<name>`)."""
    handlers: dict[str, Any] = {
        "reconcile": app.schedule(Rate(RECONCILE_MINUTES, unit=Rate.MINUTES), name="reconcile")(reconcile)
    }
    for process, schedule in processes.schedules():
        name = process.function_name(schedule)
        handlers[name] = app.schedule(Rate(schedule.every_minutes, unit=Rate.MINUTES), name=name)(
            dispatcher(process, schedule)
        )
    return handlers
