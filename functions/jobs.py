"""The jobs Lambda: runs one tenant's scheduled job at a time (leadwatch.scheduling), within the
invocation's remaining time; a job that fails comes back with SQS's retry, alone."""

from __future__ import annotations

import json
import os
from typing import Any

from chalice import Chalice
from chalice.app import SQSEvent

QUEUE_NAME = os.environ.get("LEADWATCH_JOBS_QUEUE_NAME", "leadwatch-jobs")


def jobs(event: SQSEvent) -> dict[str, Any]:
    from crm_adapters.http import time_limit
    from leadwatch import observability
    from leadwatch.context import get_context
    from leadwatch.dispatch import back_off
    from leadwatch.scheduling import Budget, Job, as_dict, run_job

    raw = [record.to_dict() for record in event]
    records = [(record["messageId"], record["body"]) for record in raw]
    correlation = observability.correlation_of([message_id for message_id, _ in records])
    failed = []
    with observability.invocation(correlation, lambda_context=event.context) as log:
        ctx = get_context()
        budget = (ctx.job_budget or Budget.of_invocation)(event.context)
        for message_id, body in records:
            try:
                job = Job.from_message(json.loads(body))
            except (ValueError, KeyError, TypeError) as exc:
                # Only the dispatcher writes jobs: an unreadable one is a bug; let SQS park it.
                log.error("job %s is unreadable: %s", message_id, exc)
                failed.append(message_id)
                continue
            try:
                with time_limit(budget.left):
                    report = run_job(ctx, job, budget)
            except Exception:
                log.exception(
                    "job %s.%s for %s failed; SQS retries it", job.process, job.schedule, job.tenant
                )
                failed.append(message_id)
                continue
            summary = as_dict(report)
            log.info(f"{job.schedule}: %s", summary, extra={"tenant": job.tenant})
            if report is not None and ctx.job_observer is not None:
                ctx.job_observer(job, summary)
        observability.unbind("tenant")
        back_off(ctx.jobs, raw, failed, [])
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in failed]}


def register(app: Chalice) -> dict[str, Any]:
    # One job an invocation: each gets the whole time budget, and a slow tenant delays nobody.
    return {"jobs": app.on_sqs_message(queue=QUEUE_NAME, batch_size=1, name="jobs")(jobs)}
