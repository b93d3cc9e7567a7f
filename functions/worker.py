"""The SQS worker: thin glue from a queue batch to leadwatch.dispatch, reporting partial failures."""

from __future__ import annotations

import os
from typing import Any

from chalice import Chalice
from chalice.app import SQSEvent

QUEUE_NAME = os.environ.get("LEADWATCH_QUEUE_NAME", "leadwatch-events")


def worker(event: SQSEvent) -> dict[str, Any]:
    from crm_adapters.http import time_limit
    from leadwatch import observability
    from leadwatch.context import get_context
    from leadwatch.dispatch import Message, back_off, handle
    from leadwatch.scheduling import Budget

    records = [record.to_dict() for record in event]
    messages = [Message(record["messageId"], record["body"]) for record in records]
    correlation = observability.correlation_of([m.message_id for m in messages])
    with observability.invocation(correlation, lambda_context=event.context) as log:
        ctx = get_context()
        # Every CRM and Telegram call ends within the invocation: a killed worker would return
        # its whole batch, other tenants' messages included.
        budget = (ctx.job_budget or Budget.of_invocation)(event.context)
        with time_limit(budget.left):
            report = handle(ctx, messages, budget)
        back_off(ctx.queue, records, report.failed, report.deferred)
        log.info(
            "batch of %d: %d processed, %d to retry (%d not started in time), %d parked as poison",
            len(messages),
            report.processed,
            len(report.failed),
            len(report.deferred),
            len(report.poison),
        )
        # Needs FunctionResponseTypes: [ReportBatchItemFailures] on the event source (infra/resources.yaml).
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in report.failed]}


def register(app: Chalice) -> dict[str, Any]:
    """The worker on the app; returned by name for app.py to expose as `app.worker` (Lambda's handler)."""
    return {"worker": app.on_sqs_message(queue=QUEUE_NAME, batch_size=10, name="worker")(worker)}
