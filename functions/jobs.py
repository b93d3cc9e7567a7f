"""The jobs Lambda: runs the tenants' scheduled jobs it is invoked with (leadwatch.scheduling),
one at a time, within the invocation's remaining time. It is invoked asynchronously, by the
dispatchers and by itself (a job's continuation), with `{"jobs": [{"job": {...}}, ...]}`.

A job that fails is logged with its tenant, the others of the payload still run, and then the
invocation fails (JobsFailed): Lambda counts the error, tries the payload once more and parks it
in the dead-letter queue (MaximumRetryAttempts and the on-failure destination: infra/resources.yaml,
JobsEventInvokeConfig). The tenant's wake-up is untouched, so the next tick runs its job again.
"""

from __future__ import annotations

from typing import Any

from chalice import Chalice


class JobsFailed(Exception):
    """Some jobs of the invocation failed (each is logged with its tenant and traceback)."""

    def __init__(self, failed: list[str], total: int):
        super().__init__(f"{len(failed)} of {total} jobs failed: {', '.join(failed)}")
        self.failed = failed


def jobs(event: Any, context: Any) -> dict[str, Any]:
    from crm_adapters.http import time_limit
    from leadwatch import observability
    from leadwatch.context import get_context
    from leadwatch.scheduling import Budget, Job, as_dict, run_job

    messages = event.get("jobs") if isinstance(event, dict) else None
    if not isinstance(messages, list) or not messages:
        # Only the dispatchers and this Lambda invoke it: anything else is a bug, parked as dead.
        raise ValueError(
            f"not a jobs payload (keys: {sorted(event) if isinstance(event, dict) else type(event)})"
        )
    parsed: list[Job | None] = []
    for message in messages:
        try:
            parsed.append(Job.from_message(message))
        except (ValueError, KeyError, TypeError):
            parsed.append(None)
    correlation = observability.correlation_of([job.key for job in parsed if job is not None])
    failed: list[str] = []
    with observability.invocation(correlation, lambda_context=context) as log:
        ctx = get_context()
        budget = (ctx.job_budget or Budget.of_invocation)(context)
        for n, job in enumerate(parsed):
            if job is None:
                # Only the dispatchers write jobs: an unreadable one is a bug.
                log.error("job %d of %d is unreadable: %.200s", n + 1, len(messages), messages[n])
                failed.append(f"#{n + 1} (unreadable)")
                continue
            try:
                with time_limit(budget.left):
                    report = run_job(ctx, job, budget)
            except Exception:
                log.exception(
                    "job %s.%s for %s failed; the next tick runs it again",
                    job.process,
                    job.schedule,
                    job.tenant,
                )
                failed.append(f"{job.process}.{job.schedule} for {job.tenant}")
                continue
            finally:
                observability.unbind("tenant")
            summary = as_dict(report)
            log.info(f"{job.schedule}: %s", summary, extra={"tenant": job.tenant})
            if report is not None and ctx.job_observer is not None:
                ctx.job_observer(job, summary)
    if failed:
        raise JobsFailed(failed, len(messages))
    return {"jobs": len(messages)}


def register(app: Chalice) -> dict[str, Any]:
    # A plain function, invoked asynchronously (leadwatch.context.LambdaJobs), one job an
    # invocation: each gets the whole time budget, and a slow tenant delays nobody.
    return {"jobs": app.lambda_function(name="jobs")(jobs)}
