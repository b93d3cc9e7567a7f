"""The command line: config checks, the timeliness table, and aws-setup against moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from cli.main import main
from storage.store import Store
from workflows.events import EntityRef, EntityType
from workflows.timeliness import LeadState

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
