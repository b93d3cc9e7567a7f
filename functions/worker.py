"""The SQS worker: thin glue from a queue batch to runtime.worker, reporting partial failures."""

from __future__ import annotations

import os

from chalice import Blueprint

bp = Blueprint(__name__)

QUEUE_NAME = os.environ.get("LEADWATCH_QUEUE_NAME", "leadwatch-events")


@bp.on_sqs_message(queue=QUEUE_NAME, batch_size=10, name="worker")
def process_events(event) -> dict:
    from runtime.context import get_context
    from runtime.worker import Message, handle

    messages = [Message(record.to_dict()["messageId"], record.body) for record in event]
    report = handle(get_context(), messages)
    # Needs FunctionResponseTypes: [ReportBatchItemFailures] on the event source (infra/resources.yaml).
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in report.failed]}
