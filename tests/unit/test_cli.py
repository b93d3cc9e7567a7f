"""The command line: config checks, the timeliness table, and aws-setup against moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from leadwatch.cards import LeadState
from leadwatch.cli import main
from leadwatch.events import EntityRef, EntityType
from leadwatch.store.dynamodb import Store

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


def test_check_config_ok_and_bad(tmp_path, capsys):
    assert main(["check-config", str(EXAMPLES)]) == 0
    assert "2 tenant(s) valid" in capsys.readouterr().out
    data = yaml.safe_load((EXAMPLES / "acme-b24.yaml").read_text())
    data["calendar"]["timezone"] = "Mars/Olympus"
    (tmp_path / "acme-b24.yaml").write_text(yaml.safe_dump(data))
    assert main(["check-config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "acme-b24.yaml" in err and "calendar.timezone" in err


def test_timeliness_table_reads_the_counters(aws, capsys):
    store = Store()
    now = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)
    for n, verdict in enumerate(["on_time", "late", "late"]):
        state = LeadState("acme-b24", EntityRef(EntityType.LEAD, str(n)), now, now, "NEW", "7")
        store.create_lead(state, now)
        store.claim(state, "t", now, timedelta(minutes=5))
        store.close_verdict(state, verdict, "t", now, "2025-11-11", "7")
    code = main(
        [
            "--tenants-dir",
            str(EXAMPLES),
            "timeliness",
            "acme-b24",
            "--from",
            "2025-11-10",
            "--to",
            "2025-11-12",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Ivan Sidorov" in out and "66.7%" in out


def test_aws_setup_creates_tables_and_queues(capsys):
    import boto3
    from moto import mock_aws

    with mock_aws():
        assert main(["aws-setup"]) == 0
        assert main(["aws-setup"]) == 0  # idempotent
        names = boto3.client("dynamodb").list_tables()["TableNames"]
        assert {"leadwatch-inbox", "leadwatch-leads", "leadwatch-journal", "leadwatch-state"} <= set(names)
        urls = boto3.client("sqs").list_queues()["QueueUrls"]
        assert any(u.endswith("/leadwatch-events") for u in urls)


def test_dialing_report_and_calls_for_any_date(aws, capsys):
    from datetime import date

    from leadwatch.events import Call

    store = Store()
    monday = datetime(2025, 11, 10, 7, 0, tzinfo=UTC)  # 10:00 in Moscow
    lead = EntityRef(EntityType.LEAD, "5")
    state = LeadState(
        "acme-b24", lead, monday, monday + timedelta(minutes=15), "IN_PROCESS", "7", title="Sofa"
    )
    store.create_lead(state, monday, plan_day=date(2025, 11, 10))
    for n, duration in enumerate([0, 75]):
        call = Call(f"act{n}", lead, "out", "7", monday + timedelta(minutes=20 * n), duration, duration > 0)
        store.record_call("acme-b24", call, date(2025, 11, 10), duration > 30, monday)
    args = ["--tenants-dir", str(EXAMPLES)]
    assert main([*args, "dialing", "acme-b24", "--date", "2025-11-10"]) == 0
    out = capsys.readouterr().out
    assert "Dialing report for Mon 10.11.2025" in out
    assert "Sofa <https://acme.bitrix24.ru/crm/lead/details/5/>" in out and "2 of 3 today" in out
    assert "<b>" not in out  # the terminal gets no markup
    assert main([*args, "dialing", "acme-b24", "--date", "2025-11-15", "--json"]) == 0
    assert '"working_day": false' in capsys.readouterr().out
    assert main([*args, "calls", "acme-b24", "5"]) == 0
    out = capsys.readouterr().out
    assert "2 attempt(s), 1 successful touch(es)" in out and "touch" in out


def test_aws_setup_adds_the_indexes_a_new_release_brings(capsys):
    """A leads table made by an older release (due index only) gets the plan index."""
    import boto3
    from moto import mock_aws

    from leadwatch.store.schema import table_definitions

    props = next(p for p in table_definitions().values() if p["TableName"] == "leadwatch-leads")
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="leadwatch-leads",
            AttributeDefinitions=[
                a for a in props["AttributeDefinitions"] if a["AttributeName"] != "plan_bucket"
            ],
            KeySchema=props["KeySchema"],
            BillingMode="PAY_PER_REQUEST",
            GlobalSecondaryIndexes=[
                i for i in props["GlobalSecondaryIndexes"] if i["IndexName"] == "due-index"
            ],
        )
        assert main(["aws-setup"]) == 0
        indexes = client.describe_table(TableName="leadwatch-leads")["Table"]["GlobalSecondaryIndexes"]
        assert {i["IndexName"] for i in indexes} == {"due-index", "plan-index"}
        assert main(["aws-setup"]) == 0  # and again: nothing left to add


def test_aws_setup_gives_an_older_state_table_the_calls_day_index():
    """A state table made before calls were kept per card and day (no index at all) gets the day index."""
    import boto3
    from moto import mock_aws

    from leadwatch.store.schema import table_definitions

    props = next(p for p in table_definitions().values() if p["TableName"] == "leadwatch-state")
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="leadwatch-state",
            AttributeDefinitions=[
                a for a in props["AttributeDefinitions"] if a["AttributeName"] in ("tenant", "key")
            ],
            KeySchema=props["KeySchema"],
            BillingMode="PAY_PER_REQUEST",
        )
        assert main(["aws-setup"]) == 0
        indexes = client.describe_table(TableName="leadwatch-state")["Table"]["GlobalSecondaryIndexes"]
        assert {i["IndexName"] for i in indexes} == {"calls-day-index"}
        assert main(["aws-setup"]) == 0


def test_processes_lists_each_process_with_what_it_declares(capsys):
    assert main(["processes"]) == 0
    out = capsys.readouterr().out
    assert "timeliness: Timeliness control" in out and "dialing: Dialing discipline" in out
    assert "schedule: timeliness_sweep every 1 min" in out and "schedule: dialing_report every 1 min" in out
    assert "route: GET /tenants/{tenant}/leads/{lead}/calls" in out
    assert "command: leadwatch calls TENANT LEAD [--json]" in out
    assert "runs where these run too: timeliness" in out
    assert "permission: timeliness_sweep jobs: Query on index:leads/due-index" in out
