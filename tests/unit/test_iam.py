"""The functions' IAM policies are generated from the declarations (leadwatch.iam) and cannot
drift: the files in .chalice/ are what the registry gives, every Lambda of the app has one, and
every table, index and queue a declaration names is one of infra/resources.yaml's. No AWS."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from leadwatch import iam
from leadwatch.process import Permission, Process, Schedule, StateDecl
from leadwatch.registry import ProcessRegistry
from leadwatch.store.schema import queue_definitions, table_definitions
from workflows import PROCESSES

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ProcessRegistry(PROCESSES)


def _process(**changes) -> Process:
    base = Process(
        name="probe",
        title="Probe",
        config="workflows.timeliness.config:TimelinessConfig",
        events=("lead.created",),
        on_events="workflows.timeliness.service:on_events",
        schedules=(Schedule("tick", 1, "workflows.timeliness.sweep:sweep_tenant", "a tick"),),
        state=(StateDecl("state", "probe#<x>"),),
    )
    return replace(base, **changes)


def _template_names() -> tuple[dict[str, set[str]], set[str]]:
    """Table name -> its index names, and the queue names, as infra/resources.yaml defines them."""
    tables = {
        props["TableName"]: {i["IndexName"] for i in props.get("GlobalSecondaryIndexes", [])}
        for props in table_definitions().values()
    }
    queues = {props["QueueName"] for props in queue_definitions().values()}
    return tables, queues


def test_the_policy_files_and_the_config_are_what_the_declarations_give():
    found = iam.differences(ROOT, REGISTRY)
    assert not found, (
        "the IAM files are not what the process declarations and leadwatch/iam.py give:\n  "
        + "\n  ".join(found)
        + f"\nregenerate them with `{iam.REGENERATE}` (from the project directory) and review the diff"
    )


def test_every_lambda_of_the_app_has_a_policy_and_a_config_entry():
    from functions.build import build_app

    app, handlers = build_app(REGISTRY)
    assert app.routes  # served by one Lambda, the API handler
    lambdas = {"api_handler", *handlers}
    generated = iam.functions(REGISTRY)
    assert set(generated) == lambdas, "a new function needs its grants in leadwatch/iam.py"
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    for name, stage in config["stages"].items():
        assert set(stage["lambda_functions"]) == lambdas, name
        assert stage.get("autogen_policy") is False, f"stage {name}: Chalice must not write its own policy"
    for process, schedule in REGISTRY.schedules():
        name = process.function_name(schedule)
        assert generated[name]["lambda_timeout"] == schedule.timeout_seconds
        assert (ROOT / ".chalice" / iam.policy_file(name)).exists(), name


def test_every_declared_table_index_and_queue_is_in_the_template():
    tables, queues = _template_names()
    for grant in iam.grants(REGISTRY):
        kind, _, name = grant.resource.partition(":")
        where = f"{grant.owner}: {grant.resource} for {grant.function}"
        if kind == "table":
            assert iam.PREFIX + name in tables, where
        elif kind == "index":
            table, index = name.split("/")
            assert index in tables.get(iam.PREFIX + table, set()), where
        elif kind == "queue":
            assert iam.PREFIX + name in queues, where


def test_every_table_and_index_of_the_template_is_used_by_some_declaration():
    tables, _ = _template_names()
    used = {grant.resource for grant in iam.grants(REGISTRY)}
    for table, indexes in tables.items():
        name = table.removeprefix(iam.PREFIX)
        assert f"table:{name}" in used, f"no function may touch {table}: drop it or declare who uses it"
        for index in indexes:
            assert f"index:{name}/{index}" in used, f"no function queries {table}/{index}"


def test_each_process_declares_state_and_indexes_it_has_permissions_on():
    for process in REGISTRY:
        declared = {s.table for s in process.state}
        for permission in process.permissions:
            table = iam.table_of(permission.resource)
            assert table is None or table in declared, (process.name, permission)


def test_functions_that_perform_effects_finish_before_a_claim_lease_ends():
    # A live claimant must never be taken over (leadwatch.executor.LEASE).
    from leadwatch.executor import LEASE

    settings = iam.functions(REGISTRY)
    app_timeout = json.loads((ROOT / ".chalice" / "config.json").read_text())["lambda_timeout"]
    for process in REGISTRY:
        if not process.effects:
            continue
        for name in iam.effect_functions(process):
            timeout = settings[name].get("lambda_timeout", app_timeout)
            assert timeout < LEASE.total_seconds(), name


def test_a_policy_has_one_statement_per_resource_with_sorted_actions():
    for name in iam.functions(REGISTRY):
        statements = iam.policy_for(name, REGISTRY)["Statement"]
        resources = [s["Resource"] for s in statements]
        assert len(resources) == len(set(resources)), name
        sids = [s["Sid"] for s in statements]
        assert len(sids) == len(set(sids)) and all(sid.isalnum() for sid in sids), name
        for statement in statements:
            assert statement["Action"] == sorted(set(statement["Action"])), (name, statement["Sid"])
            assert statement["Effect"] == "Allow"


def test_arns_and_statement_ids():
    assert iam.arn("table:leads") == "arn:aws:dynamodb:*:*:table/leadwatch-leads"
    assert iam.arn("index:leads/due-index") == "arn:aws:dynamodb:*:*:table/leadwatch-leads/index/due-index"
    assert iam.arn("queue:events-dlq") == "arn:aws:sqs:*:*:leadwatch-events-dlq"
    assert iam.arn("ssm") == "arn:aws:ssm:*:*:parameter/leadwatch/*"
    assert iam.arn("logs") == "arn:aws:logs:*:*:log-group:/aws/lambda/*"
    assert iam.sid("table:leads") == "LeadsTable"
    assert iam.sid("index:leads/plan-index") == "LeadsPlanIndex"
    assert iam.sid("queue:events-dlq") == "EventsDlqQueue"
    assert iam.policy_file("timeliness_sweep") == "policy-timeliness-sweep.json"


def test_the_effect_ledger_is_the_frameworks_and_follows_the_declared_effects():
    # A schedule's own Lambda only dispatches; its jobs (and their effects) run in the jobs Lambda.
    without = ProcessRegistry([_process(effects=())])
    assert iam.actions_by_resource("probe_tick", without) == {
        "table:state": {"Query"},
        "queue:jobs": {"SendMessage", "GetQueueUrl"},
        "ssm": {"GetParameter"},
        "logs": {"CreateLogGroup", "CreateLogStream", "PutLogEvents"},
    }
    assert iam.actions_by_resource("jobs", without)["table:state"] == {"GetItem", "PutItem", "UpdateItem"}
    assert "table:journal" not in iam.actions_by_resource("jobs", without)
    only_violations = ProcessRegistry(
        [_process(effects=("RecordViolation",), state=(StateDecl("journal", "x"),))]
    )
    assert iam.actions_by_resource("jobs", only_violations)["table:journal"] == {"PutItem"}
    assert "DeleteItem" not in iam.actions_by_resource("jobs", only_violations)["table:state"]
    messages = ProcessRegistry([_process(effects=("Notify",))])
    for name in ("worker", "jobs"):
        granted = iam.actions_by_resource(name, messages)
        assert set(iam.LEDGER) <= granted["table:state"] and granted["table:journal"] == {"PutItem"}
    assert iam.actions_by_resource("probe_tick", messages) == iam.actions_by_resource("probe_tick", without)


def test_a_permission_for_an_unknown_function_is_refused():
    with pytest.raises(ValueError, match="'nightly'"):
        _process(permissions=(Permission("nightly", "table:state", ("GetItem",), "x"),))


@pytest.mark.parametrize(
    ("permission", "changes", "message"),
    [
        (Permission("tick", "bucket:files", ("GetObject",), "x"), {}, "bucket:files"),
        (Permission("tick", "table:state", ("dynamodb:GetItem",), "x"), {}, "without the 'dynamodb:' prefix"),
        (Permission("tick", "table:state", ("Scan",), "x"), {}, "Scan"),
        (Permission("tick", "index:state/by-day", ("Query",), "x"), {}, "not an index of its declared state"),
        (Permission("tick", "table:leads", ("GetItem",), "x"), {}, "not in its declared state"),
        (Permission("tick", "table:state", ("GetItem",), " "), {}, "say why"),
        (Permission("api", "table:state", ("Query",), "x"), {}, "has no query"),
        (Permission("reconcile", "table:state", ("GetItem",), "x"), {}, "no reconcile hook"),
        (
            Permission("worker", "table:state", ("GetItem",), "x"),
            {"events": (), "on_events": None},
            "consumes no events",
        ),
        (Permission("tick", "table:state", ("GetItem",), "x"), {"effects": ("SendEmail",)}, "SendEmail"),
    ],
)
def test_a_wrong_declaration_is_refused(permission, changes, message):
    registry = ProcessRegistry([_process(permissions=(permission,), **changes)])
    with pytest.raises(ValueError, match=message):
        iam.grants(registry)


def test_a_function_not_in_the_deployment_has_no_policy():
    with pytest.raises(KeyError, match="timeliness_report"):
        iam.policy_for("timeliness_report", REGISTRY)


def test_writing_regenerates_the_owned_parts_only(tmp_path):
    chalice = tmp_path / ".chalice"
    chalice.mkdir()
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    stage = config["stages"]["dev"]
    stage["lambda_functions"] = {
        "worker": {"lambda_timeout": 900, "lambda_memory_size": 1024, "iam_policy_file": "old.json"},
        "gone": {"iam_policy_file": "policy-gone.json"},
    }
    (chalice / "config.json").write_text(json.dumps(config))
    (chalice / "policy-gone.json").write_text("{}")
    (chalice / "notes.json").write_text("{}")

    changed = iam.write_chalice_config(tmp_path, REGISTRY)

    assert "policy-gone.json" in changed and not (chalice / "policy-gone.json").exists()
    assert (chalice / "notes.json").exists()  # not a policy file: not the generator's
    assert iam.differences(tmp_path, REGISTRY) == []
    written = json.loads((chalice / "config.json").read_text())
    worker = written["stages"]["dev"]["lambda_functions"]["worker"]
    assert worker == {
        "lambda_timeout": 60,
        "lambda_memory_size": 1024,
        "iam_policy_file": "policy-worker.json",
    }
    assert {k: v for k, v in written.items() if k != "stages"} == {
        k: v for k, v in config.items() if k != "stages"
    }
    assert iam.write_chalice_config(tmp_path, REGISTRY) == []  # idempotent


def test_check_mode_names_the_command_that_regenerates(tmp_path, capsys, monkeypatch):
    shutil.copytree(ROOT / ".chalice", tmp_path / ".chalice", ignore=shutil.ignore_patterns("deployments"))
    monkeypatch.delenv("LEADWATCH_PROCESSES", raising=False)
    assert iam.main(["--check", "--project-dir", str(tmp_path)]) == 0
    (tmp_path / ".chalice" / "policy-worker.json").write_text("{}\n")
    assert iam.main(["--check", "--project-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "policy-worker.json" in err and iam.REGENERATE in err
    assert iam.main(["--project-dir", str(tmp_path)]) == 0
    assert iam.main(["--check", "--project-dir", str(tmp_path)]) == 0
