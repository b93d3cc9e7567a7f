"""Per-tenant scheduling: a schedule's Lambda only dispatches; the work runs as one job per tenant.

Every process schedule is a small scheduled Lambda (the dispatcher). On each tick it finds the
tenants with due work and starts one job per tenant: an asynchronous invocation of the jobs
Lambda (leadwatch.context.LambdaJobs); the jobs Lambda runs each job within a time budget taken
from its remaining time and, when the work is not finished, starts the job again to continue
from the checkpoint the work left. So one slow or failing tenant delays no other, the number of
tenants does not bound the work a tick can start, and a tick that is missed is caught up by the
next one.

A job that fails is not retried by the job itself: its tenant's wake-up was not moved, so the
next tick dispatches it again (a `fan_out="all"` schedule and reconciliation dispatch every
tenant anyway). The jobs Lambda reports the failure as its own (the invocation fails); Lambda
tries it once more and then parks the event in the dead-letter queue (infra/resources.yaml).
A job may run twice (a duplicate asynchronous delivery, that retry, an overlapping tick): every
job is idempotent, its writes are claims, conditional writes or effects performed once through
the effect ledger (leadwatch.executor).

Which tenants have due work:
- `fan_out="all"`: every tenant where the process runs, every tick (cheap checks that need no
  I/O are the job's first lines);
- `fan_out="wake"`: tenants whose wake-up time has come. A process sets a tenant's next wake-up
  (`ctx.wake(...)`, for example a new card's control time: only earlier wake-ups win) and the job
  returns the next one it knows of (`wake_at` on its report). The dispatcher reads every
  tenant's wake-up of a schedule in one query, so an idle tick costs one read.

A job's report may carry `more = True` (continue now) and `wake_at` (the next wake-up, or None:
asleep until a process wakes it). It is logged, with the job's tenant.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from leadwatch import observability
from leadwatch.process import resolve

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context, Queue
    from leadwatch.process import Process, Schedule
    from leadwatch.state import ProcessState

log = logging.getLogger("leadwatch.scheduling")

# The framework's own schedule (reconciliation) runs as jobs too, under this process name.
FRAMEWORK = "framework"
RECONCILE = "reconcile"
# Wake-ups of every tenant live in one partition of the state table, so one query reads them.
WAKE_NAMESPACE = "wake"
WAKE_PARTITION = "_schedules"
# What a job leaves for the Lambda to answer and start its continuation in.
MARGIN_SECONDS = 10.0
DEFAULT_BUDGET_SECONDS = 45.0


class Budget:
    """The time a job may still use: the invocation's remaining time minus a margin."""

    def __init__(self, seconds: float, monotonic: Callable[[], float] = time.monotonic):
        self._monotonic = monotonic
        self._until = monotonic() + seconds

    @classmethod
    def of_invocation(cls, lambda_context: Any) -> Budget:
        remaining = getattr(lambda_context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return cls(DEFAULT_BUDGET_SECONDS)
        return cls(max(remaining() / 1000 - MARGIN_SECONDS, 1.0))

    def left(self) -> float:
        return self._until - self._monotonic()

    def spent(self) -> bool:
        return self.left() <= 0


@dataclass(frozen=True)
class Job:
    process: str
    schedule: str
    tenant: str
    at: datetime  # the tick that started it
    part: int = 0  # 0 for the tick's job, then one more per continuation

    @property
    def key(self) -> str:
        """The tick's job of one tenant, its continuations and any repeat of them alike (the log
        lines' correlation id)."""
        return f"{self.process}.{self.schedule}#{self.tenant}@{self.at.astimezone(UTC).isoformat()}"

    def to_message(self) -> dict[str, Any]:
        return {"job": {**asdict(self), "at": self.at.isoformat()}}

    @classmethod
    def from_message(cls, body: dict[str, Any]) -> Job:
        job = dict(body["job"])
        return cls(
            process=str(job["process"]),
            schedule=str(job["schedule"]),
            tenant=str(job["tenant"]),
            at=datetime.fromisoformat(job["at"]),
            part=int(job.get("part", 0)),
        )


@dataclass
class Dispatched:
    tenants: int  # where the process runs
    due: int  # jobs started


@dataclass
class Failed:
    error: str


# ----------------------------------------------------------------------------- wake-ups
def _wake_key(process: str, schedule: str, tenant: str) -> str:
    return f"{process}.{schedule}#{tenant}"


def _wakes(ctx: Context) -> ProcessState:
    return ctx.state(WAKE_NAMESPACE)


def wake(ctx: Context, tenant: str, process: str, schedule: str, at: datetime) -> None:
    """Make sure the tenant's job runs at `at` or earlier (a later wake-up than the one set is a no-op)."""
    _set_wake(ctx, tenant, process, schedule, at, lower_only=True)


def _set_wake(
    ctx: Context,
    tenant: str,
    process: str,
    schedule: str,
    at: datetime | None,
    *,
    lower_only: bool,
    seen_version: int = 0,
) -> None:
    state, key = _wakes(ctx), _wake_key(process, schedule, tenant)
    stamp = None if at is None else at.timestamp()
    for _ in range(20):  # each lost round means someone else moved it meanwhile; they are few
        record = state.get(WAKE_PARTITION, key)
        if record is None:
            if state.create(WAKE_PARTITION, key, {"at": stamp}):
                return
            continue
        current = record.value.get("at")
        # A job sets the next wake-up it found, unless someone woke the tenant since the job read
        # it (a new card): then, as for any wake-up, the earlier of the two stays.
        keep_earlier = lower_only or record.version != seen_version
        if keep_earlier and current is not None and (stamp is None or current <= stamp):
            return
        if current == stamp:
            return
        if state.update(WAKE_PARTITION, key, {"at": stamp}, record.version):
            return
    raise RuntimeError(f"wake-up of {key} kept changing under 20 attempts")


def due_tenants(ctx: Context, process: Process, schedule: Schedule, now: datetime) -> list[TenantConfig]:
    running = [config for config in ctx.registry if ctx.processes.is_running(config, process.name)]
    if schedule.fan_out == "all":
        return running
    records = _wakes(ctx).query(WAKE_PARTITION, f"{process.name}.{schedule.name}#")
    wakes: dict[str, float | None] = {r.key.rsplit("#", 1)[1]: r.value.get("at") for r in records}
    stamp = now.timestamp()
    # A tenant never run has no wake-up yet: its first job finds out what it has to do.
    return [
        c for c in running if c.tenant not in wakes or ((at := wakes[c.tenant]) is not None and at <= stamp)
    ]


# ----------------------------------------------------------------------------- the two halves
def jobs_queue(ctx: Context) -> Queue:
    """Where the jobs go (the jobs Lambda's asynchronous invocations); only a context built for
    scheduled work has it."""
    if ctx.jobs is None:
        raise RuntimeError("this context has no jobs sink (Context.jobs): it cannot run scheduled jobs")
    return ctx.jobs


def dispatch(ctx: Context, process: Process, schedule: Schedule, now: datetime | None = None) -> Dispatched:
    """The scheduled Lambda's work: one job per tenant with due work, each started in the jobs Lambda."""
    when = now or ctx.clock()
    due = due_tenants(ctx, process, schedule, when)
    jobs = [Job(process.name, schedule.name, config.tenant, when).to_message() for config in due]
    if jobs:
        jobs_queue(ctx).send(jobs)
    return Dispatched(
        tenants=sum(1 for c in ctx.registry if ctx.processes.is_running(c, process.name)), due=len(jobs)
    )


# Reconciliation ticks this often (the reconcile Lambda's rate) ...
RECONCILE_EVERY = timedelta(minutes=int(os.environ.get("LEADWATCH_RECONCILE_MINUTES", "10")))
# ... and runs at every tick for a tenant in its working hours or this close to them, once an hour
# otherwise: a lead lost at night is due at the next working morning at the earliest, and the
# reconciliations of the night cost CRM calls that find nothing.
NEAR_WORKING_HOURS = timedelta(hours=1)


def reconcile_is_due(calendar: Any, now: datetime, every: timedelta = RECONCILE_EVERY) -> bool:
    """Whether this reconciliation tick covers a tenant with this business calendar."""
    if calendar.working_time_between(now - NEAR_WORKING_HOURS, now + NEAR_WORKING_HOURS) > timedelta(0):
        return True
    # The first tick of each local hour: ticks are `every` apart, so exactly one falls here.
    local = now.astimezone(calendar.tz)
    return timedelta(minutes=local.minute, seconds=local.second) < every


def _reconcile_is_due(ctx: Context, config: TenantConfig, now: datetime) -> bool:
    """A tenant whose calendar cannot be built (a file the check did not stop) is due at every
    tick: its job fails alone, where the jobs Lambda's errors show it, and the other tenants'
    dispatch goes on."""
    try:
        return reconcile_is_due(ctx.calendar(config), now)
    except Exception:
        log.exception("tenant %s: reconcile's working hours unknown; dispatched anyway", config.tenant)
        return True


def dispatch_reconcile(
    ctx: Context, now: datetime | None = None, *, every_tenant: bool = False
) -> Dispatched:
    """One reconciliation job per tenant this tick covers (`every_tenant`: all of them, whatever
    the hour: a run asked for by a person)."""
    when = now or ctx.clock()
    tenants = [config for config in ctx.registry if ctx.processes.running(config)]
    due = [c for c in tenants if every_tenant or _reconcile_is_due(ctx, c, when)]
    jobs = [Job(FRAMEWORK, RECONCILE, config.tenant, when).to_message() for config in due]
    if jobs:
        jobs_queue(ctx).send(jobs)
    return Dispatched(tenants=len(tenants), due=len(jobs))


def run_job(ctx: Context, job: Job, budget: Budget, requeue: Callable[[Job], None] | None = None) -> Any:
    """Run one tenant's job; hand its continuation to `requeue` (default: a new invocation of the
    jobs Lambda) when it says there is more. Returns its report (None when the tenant or process is gone or switched
    off: nothing to do)."""
    config = ctx.tenant(job.tenant)
    if config is None:
        return None
    observability.bind(tenant=job.tenant)
    now = ctx.clock()
    if job.process == FRAMEWORK and job.schedule == RECONCILE:
        from leadwatch.reconcile import reconcile_tenant

        return reconcile_tenant(ctx, config, now) if ctx.processes.running(config) else None
    process = ctx.processes.get(job.process)
    schedule = next((s for s in process.schedules if s.name == job.schedule), None) if process else None
    if process is None or schedule is None or not ctx.processes.is_running(config, process.name):
        return None
    seen = 0
    if schedule.fan_out == "wake":
        record = _wakes(ctx).get(WAKE_PARTITION, _wake_key(process.name, schedule.name, job.tenant))
        seen = record.version if record else 0
    report = resolve(schedule.run)(ctx, config, now, budget)
    if getattr(report, "more", False):
        following = Job(job.process, job.schedule, job.tenant, job.at, job.part + 1)
        if requeue is not None:
            requeue(following)
        else:
            jobs_queue(ctx).send([following.to_message()])
    elif schedule.fan_out == "wake":
        _set_wake(
            ctx,
            job.tenant,
            process.name,
            schedule.name,
            getattr(report, "wake_at", None),
            lower_only=False,
            seen_version=seen,
        )
    return report


def as_dict(report: Any) -> dict[str, Any]:
    if report is None:
        return {}
    data = asdict(report) if is_dataclass(report) and not isinstance(report, type) else dict(report)
    return {k: (v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


# ----------------------------------------------------------------------------- in-process runs
def run_schedule(
    ctx: Context, process: Process, schedule: Schedule, now: datetime | None = None
) -> dict[str, Any]:
    """Dispatch and run the jobs right here, tenant by tenant (tests, the demo, the bench, the CLI):
    tenant -> report, each failure isolated. Continuations run at once."""
    when = now or ctx.clock()
    results: dict[str, Any] = {}
    for config in due_tenants(ctx, process, schedule, when):
        job = Job(process.name, schedule.name, config.tenant, when)

        def run(_: Any, job: Job = job) -> Any:
            return _run_through(ctx, job)

        results.update(
            observability.per_tenant(
                [config],
                f"{process.name} {schedule.name}",
                run,
                lambda _, exc: Failed(error=type(exc).__name__),
                log,
            )
        )
    return results


def _run_through(ctx: Context, job: Job) -> Any:
    """One job and its continuations, in this process (no Lambda is invoked)."""
    pending: list[Job] = []
    report = run_job(ctx, job, Budget(DEFAULT_BUDGET_SECONDS), pending.append)
    while pending:
        report = run_job(ctx, pending.pop(0), Budget(DEFAULT_BUDGET_SECONDS), pending.append)
    return report


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
