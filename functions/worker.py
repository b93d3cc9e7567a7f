"""The SQS worker: thin glue from a queue batch to leadwatch.dispatch, reporting partial failures."""

from __future__ import annotations

import os
from typing import Any

from chalice import Chalice

QUEUE_NAME = os.environ.get("LEADWATCH_QUEUE_NAME", "leadwatch-events")


def worker(event) -> dict:
    from leadwatch import observability
    from leadwatch.context import get_context
    from leadwatch.dispatch import Message, handle

    messages = [Message(record.to_dict()["messageId"], record.body) for record in event]
    correlation = observability.correlation_of([m.message_id for m in messages])
    with observability.invocation(correlation, lambda_context=event.context) as log:
        report = handle(get_context(), messages)
        log.info(
            "batch of %d: %d processed, %d to retry, %d parked as poison",
            len(messages),
            report.processed,
            len(report.failed),
            len(report.poison),
        )
        # Needs FunctionResponseTypes: [ReportBatchItemFailures] on the event source (infra/resources.yaml).
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in report.failed]}


def register(app: Chalice) -> dict[str, Any]:
    """The worker on the app; returned by name for app.py to expose as `app.worker` (Lambda's handler)."""
    return {"worker": app.on_sqs_message(queue=QUEUE_NAME, batch_size=10, name="worker")(worker)}
