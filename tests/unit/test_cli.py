"""The command line: config checks, the queries, aws-setup against moto, its help, and one line for
each problem on the way to the data."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from leadwatch.cards import LeadState
from leadwatch.cli import build_parser, main
from leadwatch.events import EntityRef, EntityType
from leadwatch.registry import default_registry
from leadwatch.store.dynamodb import Store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "config" / "examples"


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
    # In the tenant's language: the example's calendar is Russian, so is its table.
    assert "Своевременность, acme-b24, 10.11.2025 – 12.11.2025" in out
    assert "Ivan Sidorov" in out and "66,7%" in out and "ИТОГО" in out


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


def test_aws_setup_gives_the_jobs_lambda_the_stacks_retry_and_dead_letter_queue(capsys):
    """`chalice deploy` makes the jobs Lambda without the template's JobsEventInvokeConfig."""
    import io
    import json
    import zipfile

    import boto3
    from moto import mock_aws

    from leadwatch.infra import JOBS_MAX_EVENT_AGE_S, JOBS_RETRIES

    with mock_aws():
        trust = {"Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}}]}
        role = boto3.client("iam").create_role(RoleName="jobs", AssumeRolePolicyDocument=json.dumps(trust))
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("app.py", "def jobs(event, context):\n    return {}\n")
        lambdas = boto3.client("lambda")
        lambdas.create_function(
            FunctionName="leadwatch-dev-jobs",
            Runtime="python3.11",
            Role=role["Role"]["Arn"],
            Handler="app.jobs",
            Code={"ZipFile": code.getvalue()},
        )
        assert main(["aws-setup", "--jobs-function", "leadwatch-dev-jobs"]) == 0
        config = lambdas.get_function_event_invoke_config(FunctionName="leadwatch-dev-jobs")
        assert config["MaximumRetryAttempts"] == JOBS_RETRIES == 1
        assert config["MaximumEventAgeInSeconds"] == JOBS_MAX_EVENT_AGE_S
        destination = config["DestinationConfig"]["OnFailure"]["Destination"]
        assert destination.startswith("arn:aws:sqs:") and destination.endswith(":leadwatch-events-dlq")
        urls = boto3.client("sqs").list_queues()["QueueUrls"]
        assert not any(u.endswith("/leadwatch-jobs") for u in urls)  # jobs need no queue of their own
    assert "failed jobs go to" in capsys.readouterr().out


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
    assert "Отчёт о прозвоне за пн 10.11.2025" in out
    assert main([*args, "dialing", "acme-b24", "--date", "2025-11-10", "--json"]) == 0
    assert '"manager": "7"' in capsys.readouterr().out  # JSON keeps its ids, in any language
    assert "Sofa <https://acme.bitrix24.ru/crm/lead/details/5/>" in out and "сегодня 2 из 3" in out
    assert "<b>" not in out  # the terminal gets no markup
    assert main([*args, "dialing", "acme-b24", "--date", "2025-11-15", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"working_day": false' in out
    assert main([*args, "dialing", "acme-b24", "--date", "2025-11-15"]) == 0
    assert "(сб 15.11.2025 — нерабочий день" in capsys.readouterr().out
    assert main([*args, "calls", "acme-b24", "5"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "2 звонка, 1 результативный"
    assert "пн 10.11 10:20  исх  75 с  Ivan Sidorov  результативный" in out


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


def test_aws_setup_leaves_an_older_state_tables_day_index_alone():
    """The state table has no index since a day's calls are keyed day first; a table made by an
    older release keeps its calls-day-index (nothing writes it any more) until deleted by hand."""
    import boto3
    from moto import mock_aws

    from leadwatch.store.schema import table_definitions

    props = next(p for p in table_definitions().values() if p["TableName"] == "leadwatch-state")
    assert "GlobalSecondaryIndexes" not in props
    old_index = {
        "IndexName": "calls-day-index",
        "KeySchema": [
            {"AttributeName": "call_day", "KeyType": "HASH"},
            {"AttributeName": "entity", "KeyType": "RANGE"},
        ],
        "Projection": {"ProjectionType": "KEYS_ONLY"},
    }
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="leadwatch-state",
            AttributeDefinitions=[
                *props["AttributeDefinitions"],
                {"AttributeName": "call_day", "AttributeType": "S"},
                {"AttributeName": "entity", "AttributeType": "S"},
            ],
            KeySchema=props["KeySchema"],
            GlobalSecondaryIndexes=[old_index],
            BillingMode="PAY_PER_REQUEST",
        )
        assert main(["aws-setup"]) == 0
        indexes = client.describe_table(TableName="leadwatch-state")["Table"]["GlobalSecondaryIndexes"]
        assert {i["IndexName"] for i in indexes} == {"calls-day-index"}


def test_processes_lists_each_process_with_what_it_declares(capsys):
    assert main(["processes"]) == 0
    out = capsys.readouterr().out
    assert "timeliness: Timeliness control" in out and "dialing: Dialing discipline" in out
    assert "schedule: timeliness_sweep every 1 min" in out and "schedule: dialing_report every 1 min" in out
    assert "route: GET /tenants/{tenant}/leads/{lead}/calls" in out
    assert "command: leadwatch calls TENANT LEAD [--json]" in out
    assert "runs where these run too: timeliness" in out
    assert "permission: timeliness_sweep jobs: Query on index:leads/due-index" in out


# ----------------------------------------------------------------------------- help


def every_parser(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from every_parser(sub)


def test_every_argument_of_every_command_says_what_it_is():
    """A new argument without help fails here: iterated from the parser itself."""
    parser = build_parser(default_registry())
    missing = []
    commands = 0
    for prog, sub in every_parser(parser):
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                commands += len(action.choices)
                missing += [f"{prog} {c.dest}" for c in action._choices_actions if not (c.help or "").strip()]
                assert {c.dest for c in action._choices_actions} == set(action.choices)
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{prog} {'/'.join(action.option_strings) or action.dest}")
    assert commands >= 7 and missing == []


def test_help_shows_the_default_period_and_where_the_data_is():
    parser = build_parser(default_registry())
    subs = dict(every_parser(parser))
    for command in ("violations", "timeliness"):
        text = " ".join(subs[f"leadwatch {command}"].format_help().split())  # as read, unwrapped
        assert "default period: the seven days ending today" in text
        assert "six days before --to" in text and "default: today in the tenant's time zone" in text
    for prog in (
        "leadwatch",
        "leadwatch violations",
        "leadwatch dialing",
        "leadwatch calls",
        "leadwatch check-config",
    ):
        text = subs[prog].format_help()
        for variable in (
            "LEADWATCH_TENANTS_DIR",
            "LEADWATCH_DYNAMODB_ENDPOINT",
            "AWS_ACCESS_KEY_ID",
            "AWS_DEFAULT_REGION",
        ):
            assert variable in text, (prog, variable)


# ----------------------------------------------------------------------------- check-config paths


def test_check_config_takes_one_file(capsys):
    assert main(["check-config", str(EXAMPLES / "acme-b24.yaml")]) == 0
    assert "1 tenant(s) valid: acme-b24" in capsys.readouterr().out


def test_check_config_reads_yml_and_refuses_a_tenant_defined_twice(tmp_path, capsys):
    shutil.copy(EXAMPLES / "acme-b24.yaml", tmp_path / "acme-b24.yml")
    shutil.copy(EXAMPLES / "acme-amo.yaml", tmp_path / "acme-amo.yaml")
    assert main(["check-config", str(tmp_path)]) == 0
    assert "2 tenant(s) valid: acme-amo, acme-b24" in capsys.readouterr().out
    shutil.copy(EXAMPLES / "acme-b24.yaml", tmp_path / "acme-b24.yaml")
    assert main(["check-config", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "acme-b24.yml: tenant 'acme-b24' is already defined by" in err


def test_check_config_of_an_empty_or_missing_place_fails(tmp_path, capsys):
    assert main(["check-config", str(tmp_path)]) == 2
    assert f"{tmp_path}: no tenant files (<tenant>.yaml or <tenant>.yml) here" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "nope")]) == 2
    assert "nope: no such file or directory" in capsys.readouterr().err
    assert main(["--tenants-dir", str(tmp_path), "check-config"]) == 2  # the tenant directory, empty
    assert main(["check-config", "--tenants-dir", str(tmp_path)]) == 2  # the option after the command


def test_check_config_reads_bare_times_and_checks_every_file_past_a_bad_date(tmp_path, capsys):
    b24 = (EXAMPLES / "acme-b24.yaml").read_text().replace('"11:00"', "11:00")
    assert 'report_time: "18:30"' in b24
    b24 = b24.replace('report_time: "18:30"', "report_time: 18:30")
    (tmp_path / "acme-b24.yaml").write_text(b24)
    amo = (EXAMPLES / "acme-amo.yaml").read_text()
    (tmp_path / "acme-amo.yaml").write_text(amo + "calendar_typo: 1\n")
    (tmp_path / "zeta.yaml").write_text(b24.replace("acme-b24", "zeta").replace("2026-12-31", "2026-02-30"))
    assert main(["check-config", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "acme-amo.yaml" in captured.err and "calendar_typo: unknown key" in captured.err
    assert "zeta.yaml" in captured.err and "calendar.overrides[0].date:" in captured.err
    assert "1 of 3 tenant file(s) valid: acme-b24" in captured.out


def test_a_secret_outside_the_tenants_ssm_path_fails_the_check(tmp_path, capsys):
    text = (EXAMPLES / "acme-b24.yaml").read_text()
    text = text.replace("{ssm: /leadwatch/acme-b24/webhook-code}", "{ssm: /other/app/db-password}")
    (tmp_path / "acme-b24.yaml").write_text(text)
    assert main(["check-config", str(tmp_path)]) == 2
    assert "crm.webhook_code: SSM parameter '/other/app/db-password' is not one of this tenant's" in (
        capsys.readouterr().err
    )


# ----------------------------------------------------------------------------- where the data is


def test_an_unknown_tenant_is_named_with_the_known_ones_and_where_they_were_looked_up(tmp_path, capsys):
    assert main(["--tenants-dir", str(EXAMPLES), "violations", "acme"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"unknown tenant 'acme': no acme.yaml or acme.yml in {EXAMPLES} (--tenants-dir)" in err
    assert "tenants there: acme-amo, acme-b24" in err
    os.environ["LEADWATCH_TENANTS_DIR"] = str(tmp_path)
    try:
        assert main(["calls", "acme-b24", "5"]) == 2
    finally:
        del os.environ["LEADWATCH_TENANTS_DIR"]
    err = capsys.readouterr().err
    assert f"in {tmp_path} (LEADWATCH_TENANTS_DIR); tenants there: none" in err


QUERIES = [
    ["violations", "acme-b24"],
    ["timeliness", "acme-b24", "--from", "2025-11-10", "--to", "2025-11-12"],
    ["dialing", "acme-b24", "--date", "2025-11-10"],
    ["calls", "acme-b24", "5"],
]


@pytest.mark.parametrize("command", QUERIES, ids=lambda c: c[0])
def test_missing_tables_are_one_line(command, capsys):
    """moto, in process, with none of leadwatch's tables."""
    from moto import mock_aws

    from leadwatch.store.models import bind

    with mock_aws():
        bind(host=None, region="eu-central-1")
        assert main(["--tenants-dir", str(EXAMPLES), *command]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (
        "leadwatch: tables leadwatch-inbox, leadwatch-journal, leadwatch-leads, leadwatch-state not found"
        in err
    )
    assert "leadwatch aws-setup" in err


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there once the probe is closed


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed command as a user runs it, with only the environment given (no AWS
    credentials from this machine: no files, no instance metadata)."""
    base = {
        "PATH": os.environ["PATH"],
        "HOME": "/nonexistent",
        "PYTHONPATH": str(ROOT),
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "eu-central-1",
    }
    return subprocess.run(
        [sys.executable, "-m", "leadwatch.cli", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def test_no_credentials_is_one_line():
    """The README's case: the local endpoint set, no credentials in the environment."""
    err = one_line(
        run_cli(
            "--tenants-dir",
            str(EXAMPLES),
            "violations",
            "acme-b24",
            LEADWATCH_DYNAMODB_ENDPOINT=closed_port(),
        )
    )
    assert err.startswith("leadwatch: no AWS credentials") and "AWS_ACCESS_KEY_ID" in err
    assert "a local moto server takes any pair" in err


def test_a_closed_endpoint_is_one_line_for_the_queries_and_aws_setup():
    endpoint = closed_port()
    keys = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "LEADWATCH_DYNAMODB_ENDPOINT": endpoint}
    err = one_line(run_cli("timeliness", "acme-b24", "--tenants-dir", str(EXAMPLES), **keys))
    assert (
        err
        == f"leadwatch: cannot connect to {endpoint} (LEADWATCH_DYNAMODB_ENDPOINT): is the local server running there?\n"
    )
    assert one_line(run_cli("aws-setup", **keys)).startswith(f"leadwatch: cannot connect to {endpoint}")


@pytest.mark.parametrize("command", QUERIES, ids=lambda c: c[0])
def test_every_query_reports_a_connection_problem_in_one_line(command, capsys, monkeypatch):
    from leadwatch.store.models import bind

    endpoint = closed_port()
    monkeypatch.setenv("LEADWATCH_DYNAMODB_ENDPOINT", endpoint)
    try:
        assert main(["--tenants-dir", str(EXAMPLES), *command]) == 1
    finally:
        bind(host=None, region="eu-central-1")
    err = capsys.readouterr().err
    assert (
        err
        == f"leadwatch: cannot connect to {endpoint} (LEADWATCH_DYNAMODB_ENDPOINT): is the local server running there?\n"
    )


def test_an_endpoint_that_is_not_a_url_is_one_line(monkeypatch, capsys):
    from leadwatch.store.models import bind

    monkeypatch.setenv("LEADWATCH_DYNAMODB_ENDPOINT", "localhost:5000")
    try:
        assert main(["--tenants-dir", str(EXAMPLES), "violations", "acme-b24"]) == 1
    finally:
        bind(host=None, region="eu-central-1")
    assert "LEADWATCH_DYNAMODB_ENDPOINT must be a URL like http://127.0.0.1:5000" in capsys.readouterr().err
