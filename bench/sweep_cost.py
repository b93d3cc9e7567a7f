"""Sweep cost: DynamoDB items one deadline sweep reads, per item that is due.

Setup (in-process moto, `LocalStack(aws="inprocess")`): 100,000 open leads of the
Bitrix24 tenant written straight through the PynamoDB model (`LeadItem.batch_write`,
the same attributes `Store.create_lead` writes). 1,000 of them fell due in the last 30
minutes; the other 99,000 fall due over the next 10 days, so some share today's due
bucket (later in the day) with the due ones and the rest fill the next days' buckets.
990 of the due leads were processed in time (no CRM re-read, verdict "on time"); 10 were
never processed, so the sweep re-reads them from the fake Bitrix24 and calls them late
(journal row and a Telegram message each). The 1,000 due cards exist in the fake portal
so the verdict write-back succeeds.

Measured: one `workflows.timeliness.sweep.sweep_tenant` call; every DynamoDB read's items (Query and
Scan: ScannedCount, GetItem: 0/1, BatchGetItem: len(Responses)) summed, divided by the
items due. The CRM and Telegram run at their real limits on the stack's virtual clock
(waits move the clock, they do not take wall time).
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bench.common import AwsCalls, Figure, note

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2025, 11, 12, 12, 0, tzinfo=MSK)  # a Wednesday, 09:00 UTC
OPEN_LEADS = 100_000
DUE = 1_000
LATE = 10
FUTURE_IDS_FROM = 10_000_000


def _write_leads(stack, tenant: str, due_ids: list[str], total: int, rng: random.Random) -> None:
    from leadwatch.store.dynamodb import due_bucket
    from leadwatch.store.models import LeadItem

    now = NOW.astimezone(UTC)
    with LeadItem.batch_write() as batch:
        for index in range(total):
            if index < len(due_ids):
                entity = f"lead:{due_ids[index]}"
                due_at = now - timedelta(seconds=rng.uniform(0, 1800))
                created = due_at - timedelta(minutes=15)
                processed = None if index < LATE else created + timedelta(minutes=rng.uniform(1, 14))
            else:
                entity = f"lead:{FUTURE_IDS_FROM + index}"
                due_at = now + timedelta(seconds=rng.uniform(1, 10 * 86400))
                created = now - timedelta(minutes=rng.uniform(0, 120))
                processed = None
            batch.save(
                LeadItem(
                    tenant,
                    entity,
                    created_at=created.timestamp(),
                    due_at=due_at.timestamp(),
                    due_bucket=due_bucket(tenant, due_at, created),
                    stage="IN_PROCESS" if processed else "NEW",
                    responsible="7",
                    title=f"Bench lead {index}",
                    processed_at=processed.timestamp() if processed else None,
                    processed_how="stage" if processed else None,
                    crm_modified_at=(processed or created).timestamp(),
                )
            )


def measure(open_leads: int = OPEN_LEADS, due: int = DUE) -> list[Figure]:
    from leadwatch.testing.stack import B24_TENANT, LocalStack, SimClock
    from workflows.timeliness.sweep import sweep_tenant

    rng = random.Random(11)
    with LocalStack(SimClock(NOW), aws="inprocess") as stack:
        # The cards exist in the portal (created 15 minutes before their control time);
        # their creation webhooks go nowhere: the leads are written to DynamoDB directly.
        stack.bitrix.deliver = lambda body: None
        due_ids = [
            stack.bitrix.create_lead(
                title=f"Bench lead {i}", assigned_by_id="7", created_at=NOW - timedelta(minutes=40)
            )
            for i in range(due)
        ]
        started = time.perf_counter()
        _write_leads(stack, B24_TENANT, due_ids, open_leads, rng)
        setup = time.perf_counter() - started
        note(f"sweep cost: wrote {open_leads} open leads ({due} due) in {setup:.1f} s")

        config = stack.ctx.tenant(B24_TENANT)
        crm_before = len(stack.bitrix.log)
        calls = AwsCalls().install([stack.sqs, stack.dynamodb])
        try:
            started = time.perf_counter()
            report = sweep_tenant(stack.ctx, config, NOW)
            elapsed = time.perf_counter() - started
        finally:
            calls.uninstall()
        crm_calls = len(stack.bitrix.log) - crm_before
        items = calls.dynamodb_items_read()
        note(
            f"sweep cost: sweep took {elapsed:.1f} s, report {report}, reads {dict(calls.items)}, "
            f"calls {calls.breakdown()}"
        )
        if report.due != due or report.closed != due:
            raise RuntimeError(f"expected {due} due and closed, the sweep reported {report}")
        ratio = items / due
        return [
            Figure(
                "sweep_items_read_per_due",
                ratio,
                "<=1.1",
                ratio <= 1.1,
                f"DynamoDB items read by one sweep_tenant ({items}) / items due ({due}), with "
                f"{open_leads} open leads in the table",
                {
                    "items_read_by_operation": dict(calls.items),
                    "aws_calls": calls.breakdown(),
                    "report": {"due": report.due, "closed": report.closed, "late": report.late},
                },
            ),
            Figure("sweep_items_read", items, definition="DynamoDB items read by the sweep"),
            Figure("sweep_due", report.due, definition="cards the sweep found due and closed"),
            Figure(
                "sweep_dynamodb_reads",
                calls.dynamodb_reads(),
                definition="DynamoDB read calls (Query, GetItem, BatchGetItem) made by the sweep",
            ),
            Figure(
                "sweep_dynamodb_writes",
                calls.dynamodb_writes(),
                definition="DynamoDB write calls made by the sweep (claims, ledger, journal, closing writes)",
            ),
            Figure(
                "sweep_crm_calls",
                crm_calls,
                definition="Bitrix24 HTTP requests made by the sweep (re-reads and verdict batches)",
            ),
            Figure("sweep_wall_s", round(elapsed, 2), definition="wall time of the one sweep in moto"),
            Figure(
                "sweep_setup_s",
                round(setup, 1),
                definition=f"wall time to write the {open_leads} open leads into in-process moto",
            ),
        ]
