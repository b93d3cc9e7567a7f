"""Hot path cost: the AWS and CRM calls one webhook delivery makes.

The local stack runs with in-process moto (`LocalStack(aws="inprocess")`); the fake CRM
creates a lead through its Python API, which posts the real webhook body to POST
/hooks/{tenant} through Chalice's local gateway, synchronously. Everything the request
does in between is counted: DynamoDB and SQS calls with botocore hooks (`bench.common`),
CRM and Telegram HTTP calls from the fakes' request logs. Each CRM gets a first
delivery (a cold `Context`: clients, tenant files, adapters made on first use) and a
second one (warm); the figures are the larger of the two.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bench.common import AwsCalls, Figure, note

MSK = ZoneInfo("Europe/Moscow")
T0 = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)  # a Tuesday, working hours


def _http_calls(stack) -> int:
    return len(stack.bitrix.log) + len(stack.amo.log) + len(stack.telegram.log)


def measure() -> list[Figure]:
    from leadwatch.testing.stack import AmoDriver, BitrixDriver, LocalStack, SimClock

    figures: list[Figure] = []
    with LocalStack(SimClock(T0), aws="inprocess") as stack:
        calls = AwsCalls().install([stack.sqs, stack.dynamodb])
        try:
            for label, driver in (("bitrix24", BitrixDriver(stack.bitrix)), ("amocrm", AmoDriver(stack.amo))):
                rounds = []
                for n in range(2):
                    calls.reset()
                    answers = len(stack.webhook_answers)
                    crm_before = _http_calls(stack)
                    driver.create(f"Hot path lead {n}", "7", T0 + timedelta(seconds=n))
                    delivered = stack.webhook_answers[answers:]
                    if [status for _, status in delivered] != [200]:
                        raise RuntimeError(f"{label}: expected one accepted webhook, got {delivered}")
                    rounds.append(
                        {
                            "dynamodb_writes": calls.dynamodb_writes(),
                            "dynamodb_reads": calls.dynamodb_reads(),
                            "sqs_calls": calls.count("sqs"),
                            "crm_calls": _http_calls(stack) - crm_before,
                            "aws_calls": calls.breakdown(),
                        }
                    )
                note(f"hot path {label}: cold {rounds[0]['aws_calls']}, warm {rounds[1]['aws_calls']}")
                worst = {key: max(r[key] for r in rounds) for key in rounds[0] if key != "aws_calls"}
                extra = {"cold": rounds[0], "warm": rounds[1]}
                figures += [
                    Figure(
                        f"hot_path_{label}_dynamodb_writes",
                        worst["dynamodb_writes"],
                        "<=2",
                        worst["dynamodb_writes"] <= 2,
                        "DynamoDB PutItem/UpdateItem/DeleteItem/BatchWriteItem/TransactWriteItems calls "
                        "made while one webhook is handled (max of a cold and a warm delivery)",
                        extra,
                    ),
                    Figure(
                        f"hot_path_{label}_dynamodb_reads",
                        worst["dynamodb_reads"],
                        definition="DynamoDB GetItem/BatchGetItem/Query/Scan/TransactGetItems calls, same webhook",
                    ),
                    Figure(
                        f"hot_path_{label}_sqs_calls",
                        worst["sqs_calls"],
                        definition="SQS API calls (SendMessageBatch), same webhook",
                    ),
                    Figure(
                        f"hot_path_{label}_crm_calls",
                        worst["crm_calls"],
                        "==0",
                        worst["crm_calls"] == 0,
                        "HTTP requests in the fake Bitrix24, amoCRM and Telegram logs while the webhook is handled",
                    ),
                ]
        finally:
            calls.uninstall()
    return figures
