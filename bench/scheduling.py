"""Per-tenant scheduling at scale: what the dispatchers cost, and how long the jobs take.

Three targets, measured in one run on one local stack (`LocalStack(aws="inprocess")`: DynamoDB
and SQS in in-process moto, the fake Bitrix24, amoCRM and Telegram at their production limits
on the stack's simulated clock):

1. 1,000 tenants, idle minute -> the timeliness sweep's dispatcher works <= 2 s. A Context with
   1,000 tenants (copies of the stack's tenant files, half Bitrix24, half amoCRM) starting its
   jobs through its own Lambda client; every tenant has a sweep wake-up in the future
   (`leadwatch.scheduling.wake`). Timed: `dispatch(ctx, timeliness, sweep, now)` before the
   wake-ups (idle) and after them (all 1,000 due, one job each), with every AWS call counted
   (bench.common.AwsCalls). The jobs' Invoke calls (leadwatch.context.LambdaJobs: asynchronous,
   16 at a time) go through the real boto3 client and are answered at botocore's HTTP layer, in
   the process, as Lambda takes an event (leadwatch.testing.lambda_invoke): the client's work is
   measured, the network round trip is not (it is stated below).
2. 1,000 tenants with 20 leads each falling due at 11:00 -> every verdict within 2 minutes of
   its control time. 20,000 leads through moto would take too long; instead the real sweep job
   of one tenant of each CRM with 20 leads created before opening (08:00-08:19, so all checked
   at 11:00) and never processed runs at 11:00 through the dispatcher Lambda and the jobs Lambda
   (`stack.run_schedule`), and its duration is taken on the clock the rate limiters run by
   (`stack.sleeps.monotonic()`: wall time plus every simulated wait). The time for 1,000 tenants
   follows from a stated model (see the figures' definitions).
3. 10,000 tenants -> reconciliation covers each every 10 minutes. Timed: `dispatch_reconcile`
   for 10,000 tenants; one real reconcile job per CRM (20 cards changed with their webhooks
   lost, fed by it) on the simulated clock; coverage time from the same model.

Between the stack's steps the simulated clock moves on (08:00 -> 11:00 -> 11:16) and the
rate limiters' clock moves with it, so every bucket is as full as it would be after that
time: a job starts with its tenant's limits unspent, as in production.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bench.common import AwsCalls, Figure, note

MSK = ZoneInfo("Europe/Moscow")
DAY = datetime(2025, 11, 11, tzinfo=MSK)  # a Tuesday; hours 09:00-13:00, 14:00-18:00
CREATED = DAY.replace(hour=8)  # before opening: checked at the control start, 11:00
CONTROL = DAY.replace(hour=11)
TENANTS = 1_000
RECONCILE_TENANTS = 10_000
LEADS = 20
RECONCILE_CARDS = 20
DEADLINE_S = 120.0  # a verdict within 2 minutes of its control time
TICK_S = 60.0  # the sweep's dispatcher runs every minute
RECONCILE_EVERY_S = 600.0
RECONCILE_TIMEOUT_S = 60.0  # .chalice/config.json: the reconcile dispatcher's lambda_timeout
# Round trips the local stack does not have (moto and the fakes answer at once), for the figures
# marked "_rtt": stated assumptions, not measurements. Added in full, as if nothing overlapped.
LAMBDA_RTT_S = 0.03  # one Invoke (InvocationType=Event) from a Lambda in the same region
CRM_RTT_S = 1.0  # one request to a slow Bitrix24 portal or amoCRM account
TELEGRAM_RTT_S = 0.3  # one sendMessage
STATED_CONCURRENCY = (100, 1000)
REPEAT = 3
BENCH_JOBS_FUNCTION = "leadwatch-bench-scheduling-jobs"


# ----------------------------------------------------------------------------- helpers
def _completion(tenants: int, concurrency: int, job_s: float) -> float:
    """Every tenant's job done: ceil(tenants / C) waves of the longest job."""
    return math.ceil(tenants / concurrency) * job_s


def _min_concurrency(tenants: int, job_s: float, within_s: float) -> int | str:
    """The smallest C with ceil(tenants / C) * job_s <= within_s ("none" when one job alone is too long)."""
    waves = math.floor(within_s / job_s) if job_s > 0 else tenants
    if waves < 1:
        return "none"
    return math.ceil(tenants / min(waves, tenants))


@contextmanager
def _job_recorder(stack: Any):
    """Wraps `leadwatch.scheduling.run_job` (functions/jobs.py imports it at each invocation) to
    record, per job: the rate limiters' clock before and after, the simulated waits, wall time,
    and the CRM / Telegram requests the fakes logged meanwhile (jobs run one at a time)."""
    import leadwatch.scheduling as scheduling

    original = scheduling.run_job
    records: list[dict[str, Any]] = []

    def run_job(ctx: Any, job: Any, budget: Any, requeue: Any = None) -> Any:
        before = {
            "mono": stack.sleeps.monotonic(),
            "offset": stack.sleeps.offset,
            "wall": time.perf_counter(),
            "bitrix24": len(stack.bitrix.log),
            "amocrm": len(stack.amo.log),
            "telegram": len(stack.telegram.log),
            "sent": len(stack.telegram.messages),
        }
        try:
            return original(ctx, job, budget, requeue)
        finally:
            kind = ctx.tenant(job.tenant).crm.kind
            records.append(
                {
                    "tenant": job.tenant,
                    "crm": kind,
                    "job": f"{job.process}.{job.schedule}#{job.part}",
                    "sim_s": stack.sleeps.monotonic() - before["mono"],
                    "waited_s": stack.sleeps.offset - before["offset"],
                    "wall_s": time.perf_counter() - before["wall"],
                    "crm_requests": len(stack.bitrix.log if kind == "bitrix24" else stack.amo.log)
                    - before[kind],
                    "telegram_requests": len(stack.telegram.log) - before["telegram"],
                    "telegram_sent": len(stack.telegram.messages) - before["sent"],
                }
            )

    scheduling.run_job = run_job
    try:
        yield records
    finally:
        scheduling.run_job = original


def _per_crm(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per CRM: a tenant's jobs of one run summed (continuations included)."""
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        row = rows.setdefault(record["crm"], {"tenant": record["tenant"], "jobs": 0})
        row["jobs"] += 1
        for key, value in record.items():
            if key not in ("tenant", "crm", "job"):
                row[key] = row.get(key, 0) + value
    return rows


def _advance(stack: Any, to: datetime) -> None:
    """The simulated clock to `to`, and the rate limiters' clock by as much."""
    delta = (to - stack.clock()).total_seconds()
    if delta < 0:
        raise RuntimeError(f"the clock would go back {-delta:.0f} s")
    stack.clock.set(to)
    stack.sleeps.offset += delta


# ----------------------------------------------------------------------------- 1 and 3: dispatchers
def _big_context(stack: Any, configs: list[Any], client: Any) -> Any:
    from leadwatch.config import TenantRegistry
    from leadwatch.context import Context, LambdaJobs

    return Context(
        processes=stack.processes,
        registry=TenantRegistry({c.tenant: c for c in configs}),
        store=stack.ctx.store,
        queue=stack.ctx.queue,
        secrets=stack.ctx.secrets,
        clock=stack.clock,
        jobs=LambdaJobs(BENCH_JOBS_FUNCTION, client=client),
    )


def _configs(stack: Any, count: int) -> list[Any]:
    from leadwatch.testing.stack import AMO_TENANT, B24_TENANT

    b24, amo = stack.ctx.tenant(B24_TENANT), stack.ctx.tenant(AMO_TENANT)
    return [(b24 if i % 2 == 0 else amo).model_copy(update={"tenant": f"t{i:05d}"}) for i in range(count)]


def _timed(calls: AwsCalls, run: Any) -> dict[str, Any]:
    calls.reset()
    started = time.perf_counter()
    done = run()
    seconds = time.perf_counter() - started
    return {
        "s": seconds,
        "due": done.due,
        "tenants": done.tenants,
        "aws": calls.breakdown(),
        "items_read": calls.dynamodb_items_read(),
    }


def _check_jobs(invocations: Any, tenants: list[str], label: str) -> None:
    from leadwatch.scheduling import Job

    taken = invocations.take()
    if {function for function, _ in taken} - {BENCH_JOBS_FUNCTION}:
        raise RuntimeError(f"{label}: a job was sent to another function")
    jobs = [Job.from_message(message) for _, payload in taken for message in payload["jobs"]]
    if sorted(job.tenant for job in jobs) != sorted(tenants):
        raise RuntimeError(f"{label}: the jobs started are not one per tenant ({len(jobs)} jobs)")


def _measure_dispatchers(stack: Any) -> dict[str, Any]:
    from leadwatch.scheduling import dispatch, dispatch_reconcile, wake
    from leadwatch.testing.lambda_invoke import Invocations, lambda_client
    from leadwatch.testing.stack import REGION

    invocations = Invocations()
    client = lambda_client(invocations, REGION)
    configs = _configs(stack, RECONCILE_TENANTS)
    ctx = _big_context(stack, configs[:TENANTS], client)
    process = stack.processes.get("timeliness")
    schedule = next(s for s in process.schedules if s.name == "sweep")
    started = time.perf_counter()
    for config in configs[:TENANTS]:
        wake(ctx, config.tenant, process.name, schedule.name, CONTROL)
    note(
        f"scheduling: {TENANTS} sweep wake-ups for {CONTROL:%H:%M} written in {time.perf_counter() - started:.1f} s"
    )

    idle_at, due_at = CONTROL - timedelta(minutes=30), CONTROL + timedelta(seconds=5)
    calls = AwsCalls().install([stack.sqs, stack.dynamodb, client])
    out: dict[str, Any] = {"idle": [], "due": [], "threads": ctx.jobs.threads}
    try:
        for _ in range(REPEAT):
            out["idle"].append(_timed(calls, lambda: dispatch(ctx, process, schedule, idle_at)))
            _check_jobs(invocations, [], "idle dispatch")
        for _ in range(REPEAT):
            out["due"].append(_timed(calls, lambda: dispatch(ctx, process, schedule, due_at)))
            _check_jobs(invocations, [c.tenant for c in configs[:TENANTS]], "all-due dispatch")
        big = _big_context(stack, configs, client)
        out["reconcile"] = _timed(calls, lambda: dispatch_reconcile(big, CONTROL))
        _check_jobs(invocations, [c.tenant for c in configs], "reconcile dispatch")
    finally:
        calls.uninstall()
    note(f"scheduling: idle dispatch {out['idle']}")
    note(f"scheduling: all-due dispatch {out['due']}")
    note(f"scheduling: reconcile dispatch {out['reconcile']}")
    return out


# ----------------------------------------------------------------------------- 2: the sweep job
def _measure_sweep_jobs(stack: Any) -> dict[str, Any]:
    from leadwatch.testing.stack import AMO_TENANT, AmoDriver, BitrixDriver

    # Tenants are separate companies: each its own portal or account, its own bot and chat. The
    # stack's two tenant files share a chat; give the amoCRM one its own, as production would.
    amo = stack.ctx.tenant(AMO_TENANT)
    stack.ctx.registry.put(
        amo.model_copy(update={"telegram": amo.telegram.model_copy(update={"chat_id": "-100888"})})
    )
    drivers = {"bitrix24": BitrixDriver(stack.bitrix), "amocrm": AmoDriver(stack.amo)}
    leads: dict[str, list[str]] = {kind: [] for kind in drivers}
    for i in range(LEADS):
        at = CREATED + timedelta(minutes=i)
        _advance(stack, at)
        for kind, driver in drivers.items():
            leads[kind].append(driver.create(f"Scheduling bench lead {i}", "7", at))
    handled = stack.pump()
    note(f"scheduling: {LEADS} leads per CRM created 08:00-08:{LEADS - 1:02d}, {handled} events handled")

    _advance(stack, CONTROL)
    with _job_recorder(stack) as records:
        reports = stack.run_schedule("timeliness", "sweep")
    note(f"scheduling: sweep at 11:00: reports {reports}; jobs {records}")
    for kind, driver in drivers.items():
        # Summed over the tenant's job and its continuations (the group's 18-a-minute pacing can
        # carry the alerts past one invocation's budget).
        mine = [report for tenant, report in stack.job_reports if tenant == driver.tenant]
        closed, late = (sum(report.get(key, 0) for report in mine) for key in ("closed", "late"))
        if closed != LEADS or late != LEADS:
            raise RuntimeError(f"{kind}: expected {LEADS} late verdicts, the sweep's jobs reported {mine}")
        missing = [lead for lead in leads[kind] if driver.verdict(lead) in (None, "")]
        if missing:
            raise RuntimeError(f"{kind}: no verdict written on {missing}")
    rows = _per_crm(records)
    for kind, row in rows.items():
        # More alerts due together than the tenant's digest_over go out as one digest message.
        digest_over = stack.ctx.tenant(drivers[kind].tenant).telegram.digest_over
        expected = 1 if 0 < digest_over < LEADS else LEADS
        if row["telegram_sent"] != expected:
            raise RuntimeError(f"{kind}: {row['telegram_sent']} Telegram messages, not {expected}")
        row["digest_over"] = digest_over
    return {"rows": rows, "records": records, "reports": reports}


# ----------------------------------------------------------------------------- 3: the reconcile job
def _measure_reconcile_jobs(stack: Any) -> dict[str, Any]:
    from leadwatch.testing.stack import AmoDriver, BitrixDriver

    # The previous run, ten minutes before the measured one (its checkpoint is where this one reads from).
    _advance(stack, CONTROL + timedelta(minutes=6))
    stack.reconcile()
    stack.pump()
    drivers = {"bitrix24": BitrixDriver(stack.bitrix), "amocrm": AmoDriver(stack.amo)}
    # Webhooks lost: only reconciliation can find these cards.
    stack.bitrix.deliver = lambda body: None
    stack.amo.deliver = lambda body: None
    try:
        for i in range(RECONCILE_CARDS):
            at = CONTROL + timedelta(minutes=7, seconds=10 * i)
            _advance(stack, at)
            for driver in drivers.values():
                driver.create(f"Lost webhook lead {i}", "7", at)
    finally:
        stack._wire_fakes()
    _advance(stack, CONTROL + timedelta(minutes=16))
    with _job_recorder(stack) as records:
        reports = stack.reconcile()
    note(f"scheduling: reconcile at 11:16: reports {reports}; jobs {records}")
    for kind, driver in drivers.items():
        report = reports.get(driver.tenant) or {}
        if report.get("fed") != RECONCILE_CARDS or report.get("error"):
            raise RuntimeError(f"{kind}: expected {RECONCILE_CARDS} cards fed, reconcile reported {report}")
    stack.pump()
    return {"rows": _per_crm(records), "records": records, "reports": reports}


# ----------------------------------------------------------------------------- figures
def measure() -> list[Figure]:
    from leadwatch.testing.stack import LocalStack, SimClock

    with LocalStack(SimClock(CREATED - timedelta(minutes=30)), aws="inprocess", crm_rate_scale=1.0) as stack:
        started = time.perf_counter()
        dispatchers = _measure_dispatchers(stack)
        note(f"scheduling: dispatchers measured in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        sweep = _measure_sweep_jobs(stack)
        reconcile = _measure_reconcile_jobs(stack)
        note(f"scheduling: jobs measured in {time.perf_counter() - started:.0f} s")
    return _figures(dispatchers, sweep, reconcile)


def _with_rtt(row: dict[str, Any]) -> float:
    """A job's duration with the assumed round trips of its CRM and Telegram requests added."""
    return row["sim_s"] + row["crm_requests"] * CRM_RTT_S + row["telegram_requests"] * TELEGRAM_RTT_S


def _figures(dispatchers: dict[str, Any], sweep: dict[str, Any], reconcile: dict[str, Any]) -> list[Figure]:
    figures: list[Figure] = []
    rtt = (
        f"assumed round trips (not measured; added in full): Lambda Invoke {LAMBDA_RTT_S * 1000:.0f} ms "
        f"({dispatchers['threads']} side by side), "
        f"CRM request {CRM_RTT_S:.1f} s, Telegram sendMessage {TELEGRAM_RTT_S:.1f} s"
    )

    # 1: the sweep's dispatcher with 1,000 tenants.
    idle, due = dispatchers["idle"], dispatchers["due"]
    idle_s = max(r["s"] for r in idle)
    idle_aws = idle[-1]["aws"]
    queries = idle_aws.get("dynamodb:Query", 0)
    idle_other = sum(n for op, n in idle_aws.items() if op != "dynamodb:Query")
    due_s = max(r["s"] for r in due)
    due_invokes = due[-1]["aws"].get("lambda:Invoke", 0)
    threads = dispatchers["threads"]
    due_waves = math.ceil(due_invokes / threads)
    figures += [
        Figure(
            f"scheduling_idle_dispatch_{TENANTS}_s",
            round(idle_s, 3),
            "<=2",
            idle_s <= 2,
            f"wall seconds of dispatch(ctx, timeliness, sweep, now) with {TENANTS} tenants whose sweep "
            f"wake-ups are all in the future (an idle minute), DynamoDB in in-process moto; the slowest "
            f"of {REPEAT} runs",
            {"runs": idle},
        ),
        Figure(
            "scheduling_idle_dispatch_queries",
            queries,
            "<=1",
            queries <= 1,
            "DynamoDB Query calls (pages) of that idle dispatch: every tenant's wake-up of the schedule "
            "lives in one partition",
            {"aws_calls": idle_aws},
        ),
        Figure(
            "scheduling_idle_dispatch_other_aws_calls",
            idle_other,
            "==0",
            idle_other == 0,
            "AWS calls of the idle dispatch besides that Query (per-tenant reads, Invoke...)",
            {"aws_calls": idle_aws},
        ),
        Figure(
            "scheduling_idle_dispatch_items_read",
            idle[-1]["items_read"],
            definition="wake-up records that Query read: one per tenant, due or not (the read grows "
            "with the tenants, not with the due work)",
        ),
        Figure(
            f"scheduling_due_dispatch_{TENANTS}_s",
            round(due_s, 3),
            definition=f"wall seconds of the same dispatch when all {TENANTS} tenants are due "
            f"({TENANTS} jobs started), the slowest of {REPEAT} runs. Lambda's Invoke is answered at "
            "botocore's HTTP layer, in the process (the boto3 client's own work, in its "
            f"{threads} threads, is included; the network is not)",
            extra={"runs": due},
        ),
        Figure(
            "scheduling_due_dispatch_invokes",
            due_invokes,
            f"=={TENANTS}",
            due_invokes == TENANTS,
            f"Lambda Invoke calls (asynchronous) of that dispatch: one a job, {threads} at a time",
            {"aws_calls": due[-1]["aws"]},
        ),
        Figure(
            f"scheduling_due_dispatch_{TENANTS}_rtt_s",
            round(due_s + due_waves * LAMBDA_RTT_S, 2),
            definition=f"that dispatch's seconds plus {due_waves} Invoke round trips ({due_invokes} calls, "
            f"{threads} side by side); {rtt}",
        ),
    ]

    # 2: the sweep jobs, and 1,000 tenants of them.
    rows = sweep["rows"]
    job_s = max(row["sim_s"] for row in rows.values())
    for kind, row in sorted(rows.items()):
        figures += [
            Figure(
                f"scheduling_sweep_job_{kind}_sim_s",
                round(row["sim_s"], 1),
                f"<={DEADLINE_S:.0f}",
                row["sim_s"] <= DEADLINE_S,
                f"duration of one {kind} tenant's sweep job at 11:00 ({LEADS} cards due, none processed: "
                f"{LEADS} late verdicts written into the CRM, {LEADS} journal rows, and the alerts: "
                f"one digest listing the {LEADS}, as more than telegram.digest_over "
                f"({row['digest_over']}) fell due together), run by the jobs Lambda, on the rate limiters' clock: wall time plus the "
                "simulated waits the production limits imposed (Bitrix24 2 req/s burst 50, amoCRM 7 req/s, "
                "Telegram 1 msg/s per chat); the fakes answer at once, real round trips come on top",
                row,
            ),
            Figure(
                f"scheduling_sweep_job_{kind}_crm_requests",
                row["crm_requests"],
                definition=f"HTTP requests to the fake {kind} during that job",
            ),
            Figure(
                f"scheduling_sweep_job_{kind}_telegram_requests",
                row["telegram_requests"],
                definition=f"sendMessage requests to the fake Telegram during that job "
                f"({row['telegram_sent']} accepted)",
            ),
        ]
    model = (
        "Model: each tenant's limits are its own (its own Bitrix24 portal or amoCRM account, its own "
        "Telegram bot and chat), so tenants do not slow each other and a job takes as long among "
        f"{TENANTS} tenants as alone; with C jobs Lambdas running at once, {TENANTS} tenants are done "
        "ceil(1000 / C) x the longer job of the two CRMs after the tick (Lambda's scaling ramp and "
        "the account's concurrency limit are not modelled)"
    )
    for c in STATED_CONCURRENCY:
        done = _completion(TENANTS, c, job_s)
        figures.append(
            Figure(
                f"scheduling_due_{TENANTS}_done_at_c{c}_s",
                round(done, 1),
                f"<={DEADLINE_S:.0f}",
                done <= DEADLINE_S,
                f"{model}; here C = {c}: ceil({TENANTS} / {c}) x {job_s:.1f} s",
                {"job_s": job_s, "concurrency": c},
            )
        )
    figures.append(
        Figure(
            f"scheduling_due_{TENANTS}_min_concurrency",
            _min_concurrency(TENANTS, job_s, DEADLINE_S),
            definition=f"{model}; the smallest C with ceil({TENANTS} / C) x {job_s:.1f} s <= {DEADLINE_S:.0f} s",
            extra={"job_s": job_s},
        )
    )
    # Strict: the control time may fall just after a tick, and the dispatcher takes its time.
    slack = DEADLINE_S - TICK_S - due_s
    figures.append(
        Figure(
            f"scheduling_due_{TENANTS}_min_concurrency_strict",
            _min_concurrency(TENANTS, job_s, slack),
            definition=f"{model}; the smallest C with {TICK_S:.0f} s (the control time falls just after "
            f"a tick) + {due_s:.2f} s (the all-due dispatch) + ceil({TENANTS} / C) x {job_s:.1f} s <= "
            f"{DEADLINE_S:.0f} s",
            extra={"job_s": job_s, "slack_s": slack},
        )
    )
    job_rtt_s = max(_with_rtt(row) for row in rows.values())
    figures.append(
        Figure(
            f"scheduling_due_{TENANTS}_min_concurrency_rtt",
            _min_concurrency(TENANTS, job_rtt_s, DEADLINE_S),
            definition=f"{model}; the smallest C with ceil({TENANTS} / C) x {job_rtt_s:.1f} s <= "
            f"{DEADLINE_S:.0f} s, the job's duration with its requests' round trips added; {rtt}",
            extra={"job_rtt_s": job_rtt_s},
        )
    )

    # 3: reconciliation of 10,000 tenants.
    recon = dispatchers["reconcile"]
    recon_s = recon["s"]
    invokes = recon["aws"].get("lambda:Invoke", 0)
    waves = math.ceil(invokes / threads)
    recon_rtt_s = recon_s + waves * LAMBDA_RTT_S
    figures += [
        Figure(
            f"scheduling_reconcile_dispatch_{RECONCILE_TENANTS}_s",
            round(recon_s, 2),
            f"<={RECONCILE_TIMEOUT_S / 2:.0f}",
            recon_s <= RECONCILE_TIMEOUT_S / 2,
            f"wall seconds of dispatch_reconcile with {RECONCILE_TENANTS} tenants ({RECONCILE_TENANTS} jobs), "
            "Invoke answered in the process as above; target: half the reconcile Lambda's "
            f"{RECONCILE_TIMEOUT_S:.0f} s timeout",
            recon,
        ),
        Figure(
            "scheduling_reconcile_dispatch_invokes",
            invokes,
            f"=={RECONCILE_TENANTS}",
            invokes == RECONCILE_TENANTS,
            f"Lambda Invoke calls of that dispatch (one a job, {threads} at a time)",
            {"aws_calls": recon["aws"]},
        ),
        Figure(
            f"scheduling_reconcile_dispatch_{RECONCILE_TENANTS}_rtt_s",
            round(recon_rtt_s, 1),
            definition=f"that dispatch's seconds plus {waves} Invoke round trips ({invokes} calls, {threads} "
            "side by side) "
            f"(the reconcile Lambda times out at {RECONCILE_TIMEOUT_S:.0f} s); {rtt}",
        ),
    ]
    rrows = reconcile["rows"]
    recon_job_s = max(row["sim_s"] for row in rrows.values())
    for kind, row in sorted(rrows.items()):
        report = reconcile["reports"].get(row["tenant"], {})
        figures += [
            Figure(
                f"scheduling_reconcile_job_{kind}_sim_s",
                round(row["sim_s"], 2),
                definition=f"duration of one {kind} tenant's reconcile job ({report.get('listed')} cards "
                f"listed as changed since the last run, {report.get('fed')} of them unseen, their webhooks "
                "lost, and fed; the processes' own reconciliation included), run by the jobs Lambda, on "
                "the rate limiters' clock (wall time plus simulated waits); the fakes answer at once",
                extra={**row, "report": report},
            ),
            Figure(
                f"scheduling_reconcile_job_{kind}_crm_requests",
                row["crm_requests"],
                definition=f"HTTP requests to the fake {kind} during that job",
            ),
        ]
    rmodel = (
        f"Model: each tenant's CRM limits are its own, so jobs do not slow each other; with C jobs "
        f"Lambdas running at once, {RECONCILE_TENANTS} tenants are covered in the dispatch's seconds + "
        f"ceil({RECONCILE_TENANTS} / C) x the longer reconcile job of the two CRMs"
    )
    for c in STATED_CONCURRENCY:
        covered = recon_s + _completion(RECONCILE_TENANTS, c, recon_job_s)
        figures.append(
            Figure(
                f"scheduling_reconcile_{RECONCILE_TENANTS}_covered_at_c{c}_s",
                round(covered, 1),
                f"<={RECONCILE_EVERY_S:.0f}",
                covered <= RECONCILE_EVERY_S,
                f"{rmodel}; here C = {c}: {recon_s:.2f} s + ceil({RECONCILE_TENANTS} / {c}) x "
                f"{recon_job_s:.2f} s",
                {"job_s": recon_job_s, "dispatch_s": recon_s, "concurrency": c},
            )
        )
    figures.append(
        Figure(
            f"scheduling_reconcile_{RECONCILE_TENANTS}_min_concurrency",
            _min_concurrency(RECONCILE_TENANTS, recon_job_s, RECONCILE_EVERY_S - recon_s),
            definition=f"{rmodel}; the smallest C that covers them within {RECONCILE_EVERY_S:.0f} s "
            f"({recon_s:.2f} s + ceil({RECONCILE_TENANTS} / C) x {recon_job_s:.2f} s)",
            extra={"job_s": recon_job_s, "dispatch_s": recon_s},
        )
    )
    recon_job_rtt_s = max(_with_rtt(row) for row in rrows.values())
    figures.append(
        Figure(
            f"scheduling_reconcile_{RECONCILE_TENANTS}_min_concurrency_rtt",
            _min_concurrency(RECONCILE_TENANTS, recon_job_rtt_s, RECONCILE_EVERY_S - recon_rtt_s),
            definition=f"{rmodel}; the smallest C that covers them within {RECONCILE_EVERY_S:.0f} s with "
            f"round trips added ({recon_rtt_s:.1f} s + ceil({RECONCILE_TENANTS} / C) x "
            f"{recon_job_rtt_s:.2f} s); {rtt}",
            extra={"job_rtt_s": recon_job_rtt_s, "dispatch_rtt_s": recon_rtt_s},
        )
    )
    return figures
