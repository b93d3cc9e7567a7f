"""Running a process schedule: its job once per tenant where the process runs, each tenant on
its own (one that fails is logged and reported, the others go on)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from leadwatch import observability
from leadwatch.process import resolve

if TYPE_CHECKING:
    from leadwatch.context import Context
    from leadwatch.process import Process, Schedule

log = logging.getLogger("leadwatch.scheduling")


@dataclass
class Failed:
    error: str


def run_schedule(
    ctx: Context, process: Process, schedule: Schedule, now: datetime | None = None
) -> dict[str, Any]:
    """Tenant -> the job's report (tenants with nothing to do are left out)."""
    job = resolve(schedule.run)
    when = now or ctx.clock()
    tenants = [config for config in ctx.registry if ctx.processes.is_running(config, process.name)]
    return observability.per_tenant(
        tenants,
        f"{process.name} {schedule.name}",
        lambda config: job(ctx, config, when),
        lambda _, exc: Failed(error=type(exc).__name__),
        log,
    )


def run_process_schedule(
    ctx: Context, process: str, schedule: str, now: datetime | None = None
) -> dict[str, Any]:
    """`run_schedule` by names, for callers that hold no declaration (tests, the demo, the bench)."""
    found = ctx.processes.get(process)
    if found is None:
        raise LookupError(f"no process {process!r} is registered")
    for candidate in found.schedules:
        if candidate.name == schedule:
            return run_schedule(ctx, found, candidate, now)
    raise LookupError(f"process {process!r} has no schedule {schedule!r}")
