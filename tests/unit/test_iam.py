"""The functions' IAM policies and the per-function part of the template are generated from the
declarations (leadwatch.iam, leadwatch.infra) and cannot drift: the files in .chalice/ and the
generated part of infra/resources.yaml are what the registry gives, every Lambda of the app has a
policy, every table, index and queue a declaration names is one of infra/resources.yaml's, and each
grant is scoped: a named region and account, the function's own log group, only the SSM parameters
the tenant files name for the secrets the function uses, BatchWriteItem only where the function may
put and delete anyway. No AWS."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from leadwatch import iam, infra
from leadwatch.config import SecretRef, load_tenant_file
from leadwatch.process import Permission, Process, Schedule, StateDecl
from leadwatch.registry import ProcessRegistry
from leadwatch.store.schema import load_template, queue_definitions, table_definitions
from workflows import PROCESSES

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = ProcessRegistry(PROCESSES)
EXAMPLES = [
    load_tenant_file(path, REGISTRY.tenant_model())
    for path in sorted((ROOT / "config/examples").glob("*.yaml"))
]
PROD = iam.Target("eu-central-1", "123456789012", "prod")


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
        elif kind == "function":
            assert name in iam.functions(REGISTRY), where


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
        statements = iam.policy_for(name, REGISTRY, iam.STACK, iam.secret_uses(EXAMPLES))["Statement"]
        resources = [text for s in statements for text in _arn_texts(s["Resource"])]
        assert len(resources) == len(set(resources)), name
        sids = [s["Sid"] for s in statements]
        assert len(sids) == len(set(sids)) and all(sid.isalnum() for sid in sids), name
        for statement in statements:
            assert statement["Action"] == sorted(set(statement["Action"])), (name, statement["Sid"])
            assert statement["Effect"] == "Allow"


def test_arns_and_statement_ids():
    # For the stack: CloudFormation fills in the partition, region and account.
    sub = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:"
    assert iam.arn("table:leads") == {"Fn::Sub": sub + "table/leadwatch-leads"}
    assert iam.arn("index:leads/due-index") == {"Fn::Sub": sub + "table/leadwatch-leads/index/due-index"}
    # For `chalice deploy` of a stage given a region and account: those.
    assert iam.arn("table:leads", PROD) == "arn:aws:dynamodb:eu-central-1:123456789012:table/leadwatch-leads"
    assert iam.arn("queue:events-dlq", PROD) == "arn:aws:sqs:eu-central-1:123456789012:leadwatch-events-dlq"
    china = iam.Target("cn-north-1", "123456789012", "prod")
    assert iam.arn("queue:events", china) == "arn:aws-cn:sqs:cn-north-1:123456789012:leadwatch-events"
    # A function: its unqualified ARN, by the name the stack or Chalice gives it.
    assert iam.arn("function:jobs") == {
        "Fn::Sub": "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-jobs"
    }
    assert (
        iam.arn("function:jobs", PROD)
        == "arn:aws:lambda:eu-central-1:123456789012:function:leadwatch-prod-jobs"
    )
    assert iam.sid("function:jobs") == "JobsFunction"
    assert iam.parameter_arn("/leadwatch/acme/api-key", PROD) == (
        "arn:aws:ssm:eu-central-1:123456789012:parameter/leadwatch/acme/api-key"
    )
    assert iam.log_group_arns("worker", PROD) == [
        "arn:aws:logs:eu-central-1:123456789012:log-group:/aws/lambda/leadwatch-prod-worker",
        "arn:aws:logs:eu-central-1:123456789012:log-group:/aws/lambda/leadwatch-prod-worker:*",
    ]
    # Chalice names the API handler after the app and stage alone; the stack names it like the rest.
    assert iam.log_group_arns("api_handler", PROD)[0].endswith(":log-group:/aws/lambda/leadwatch-prod")
    assert iam.log_group_arns("api_handler")[0] == {
        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:"
        "log-group:/aws/lambda/${AWS::StackName}-api_handler"
    }
    assert iam.sid("table:leads") == "LeadsTable"
    assert iam.sid("index:leads/plan-index") == "LeadsPlanIndex"
    assert iam.sid("queue:events-dlq") == "EventsDlqQueue"
    assert iam.sid("secret:crm") == "Secrets"
    assert iam.policy_file("timeliness_sweep") == "policy-timeliness-sweep.json"
    assert iam.policy_file("timeliness_sweep", "prod") == "policy-prod-timeliness-sweep.json"


@pytest.mark.parametrize(
    ("region", "account", "stage", "message"),
    [
        ("*", "123456789012", "prod", "region"),
        ("eu-central-1", "*", "prod", "account"),
        ("eu-central-1", "12345", "prod", "account"),
        ("eu-central-1", "123456789012", None, "stage"),
    ],
)
def test_a_deploy_target_names_a_real_region_and_account(region, account, stage, message):
    with pytest.raises(ValueError, match=message):
        iam.Target(region, account, stage)


def _arn_texts(value: Any) -> list[str]:
    """Every ARN in a policy document, as text (the template's Fn::Sub unwrapped)."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
        return [value["Fn::Sub"]]
    if isinstance(value, dict):
        return [text for v in value.values() for text in _arn_texts(v)]
    if isinstance(value, list):
        return [text for v in value for text in _arn_texts(v)]
    return [value] if isinstance(value, str) and value.startswith("arn:") else []


def _split_arn(text: str) -> list[str]:
    """arn:partition:service:region:account:resource, the pseudo parameters' '::' kept whole."""
    return [part.replace("\0", "::") for part in text.replace("::", "\0").split(":", 5)]


def _resources(statement: dict) -> list:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def test_every_arn_names_its_region_and_account_and_no_resource_is_a_wildcard():
    for target in (iam.STACK, PROD):
        for name in iam.functions(REGISTRY):
            policy = iam.policy_for(name, REGISTRY, target, iam.secret_uses(EXAMPLES))
            for statement in policy["Statement"]:
                assert statement["Resource"] != "*"
                for text in _arn_texts(_resources(statement)):
                    _, partition, service, region, account, rest = _split_arn(text)
                    if target.stack:
                        assert (partition, region, account) == (
                            "${AWS::Partition}",
                            "${AWS::Region}",
                            "${AWS::AccountId}",
                        ), text
                    else:
                        assert (partition, region, account) == ("aws", "eu-central-1", "123456789012"), text
                    # Only a log group's streams end in a wildcard: the table, queue or parameter is named.
                    assert "*" not in rest or (service == "logs" and rest.endswith(":*")), text


def test_the_committed_policies_are_the_stacks():
    for name in iam.functions(REGISTRY):
        committed = json.loads((ROOT / ".chalice" / iam.policy_file(name)).read_text())
        for statement in committed["Statement"]:
            for resource in _resources(statement):
                assert (
                    isinstance(resource, dict) and "${AWS::Region}:${AWS::AccountId}" in resource["Fn::Sub"]
                )


def test_the_effect_ledger_is_the_frameworks_and_follows_the_declared_effects():
    # A schedule's own Lambda only dispatches; its jobs (and their effects) run in the jobs Lambda.
    without = ProcessRegistry([_process(effects=())])
    assert iam.actions_by_resource("probe_tick", without) == {
        "table:state": {"Query"},
        "function:jobs": {"InvokeFunction"},
        "logs": {"CreateLogGroup", "CreateLogStream", "PutLogEvents"},
    }
    assert "secret:telegram" not in iam.actions_by_resource("jobs", without)
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
        # Whoever sends messages reads the bot token.
        assert granted["secret:telegram"] == {"GetParameter", "GetParameters"}
    assert iam.actions_by_resource("probe_tick", messages) == iam.actions_by_resource("probe_tick", without)


def test_the_read_api_queries_the_journal_and_writes_none_of_it():
    # The framework's journal route (leadwatch.journal), whatever processes are registered.
    for registry in (ProcessRegistry([_process(effects=())]), REGISTRY):
        assert iam.actions_by_resource("api_handler", registry)["table:journal"] == {"Query"}


def test_a_permission_for_an_unknown_function_is_refused():
    with pytest.raises(ValueError, match="'nightly'"):
        _process(permissions=(Permission("nightly", "table:state", ("GetItem",), "x"),))


@pytest.mark.parametrize(
    ("permission", "changes", "message"),
    [
        (Permission("tick", "bucket:files", ("GetObject",), "x"), {}, "bucket:files"),
        (Permission("tick", "ssm", ("GetParameter",), "x"), {}, "secret:<kind>"),
        (Permission("tick", "secret:everything", ("GetParameter",), "x"), {}, "secret:<kind>"),
        (Permission("tick", "secret:crm", ("GetParametersByPath",), "x"), {}, "GetParametersByPath"),
        (Permission("tick", "table:state", ("BatchWriteItem",), "x"), {}, "also deletes"),
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

    changed = iam.write_files(tmp_path, REGISTRY)

    assert ".chalice/policy-gone.json" in changed and not (chalice / "policy-gone.json").exists()
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
    assert iam.write_files(tmp_path, REGISTRY) == []  # idempotent


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


# ----- secrets: each function reads only the parameters the tenant files name, of the kinds it uses


def _secret_names(function: str, uses: list[iam.SecretUse], target: iam.Target = iam.STACK) -> set[str]:
    for statement in iam.policy_for(function, REGISTRY, target, uses)["Statement"]:
        if statement["Sid"] == "Secrets":
            assert statement["Action"] == ["ssm:GetParameter", "ssm:GetParameters"]
            return {text.split(":parameter", 1)[1] for text in _arn_texts(statement["Resource"])}
    return set()


def test_each_function_reads_only_the_secrets_of_the_kinds_it_uses():
    uses = iam.secret_uses(EXAMPLES)
    # The amoCRM example names its bot token and API key by environment variable: nothing to grant.
    assert {u.name for u in uses} == {
        "/leadwatch/acme-b24/webhook-code",
        "/leadwatch/acme-b24/application-token",
        "/leadwatch/acme-b24/telegram-bot-token",
        "/leadwatch/acme-b24/api-key",
        "/leadwatch/acme-amo/access-token",
        "/leadwatch/acme-amo/hook-secret",
    }
    # The public API handler: what checks the CRM's webhooks and the read API's key; no CRM or bot token.
    assert _secret_names("api_handler", uses) == {
        "/leadwatch/acme-b24/application-token",
        "/leadwatch/acme-amo/hook-secret",
        "/leadwatch/acme-b24/api-key",
    }
    # Who calls the CRM and sends alerts: the CRM credentials and the bot token, nothing that
    # authenticates webhooks; the read API's key only to sign quality control's page links (it
    # reads nothing these functions cannot read already).
    for function in ("worker", "jobs"):
        assert _secret_names(function, uses) == {
            "/leadwatch/acme-b24/webhook-code",
            "/leadwatch/acme-amo/access-token",
            "/leadwatch/acme-b24/telegram-bot-token",
            "/leadwatch/acme-b24/api-key",
        }, function
    # The dispatchers only queue jobs.
    for function in iam.dispatchers(REGISTRY):
        assert _secret_names(function, uses) == set(), function
    # No tenant file, no secret to read.
    for function in iam.functions(REGISTRY):
        assert _secret_names(function, []) == set(), function
    assert _secret_names("worker", uses, PROD) == _secret_names("worker", uses)


@dataclass
class _Tenant:
    tenant: str
    places: dict[str, SecretRef]

    def secrets(self) -> dict[str, SecretRef]:
        return self.places


def test_a_secret_in_a_place_of_no_known_kind_is_refused():
    odd = _Tenant("acme", {"crm.client_secret": SecretRef(ssm="/leadwatch/acme/client-secret")})
    with pytest.raises(ValueError, match=r"crm\.client_secret.*SECRET_PLACES"):
        iam.secret_uses([odd])
    listed = _Tenant("acme", {"crm.application_tokens[1]": SecretRef(ssm="/leadwatch/acme/app-2")})
    assert iam.secret_uses([listed]) == [iam.SecretUse("acme", "webhook", "/leadwatch/acme/app-2")]


def _tenants(n: int, layout: str = "/leadwatch/{tenant}/{secret}") -> list[_Tenant]:
    return [
        _Tenant(
            f"tenant-{i:04d}",
            {
                place: SecretRef(ssm=layout.format(tenant=f"tenant-{i:04d}", secret=secret, i=i))
                for place, secret in (
                    ("crm.webhook_code", "webhook-code"),
                    ("crm.application_token", "application-token"),
                    ("telegram.bot_token", "telegram-bot-token"),
                    ("api_key", "api-key"),
                )
            },
        )
        for i in range(n)
    ]


def test_past_iams_size_quota_the_names_are_folded_per_kind_never_to_all_parameters():
    few = iam.secret_uses(_tenants(20))
    assert len(_secret_names("worker", few)) == 60  # exact while the policy fits
    many = iam.secret_uses(_tenants(1000))
    for function in iam.functions(REGISTRY):
        policy = iam.policy_for(function, REGISTRY, iam.STACK, many)
        assert iam.policy_size(policy) <= iam.ROLE_POLICY_LIMIT, function
    assert _secret_names("worker", many) == {
        "/leadwatch/*/webhook-code",
        "/leadwatch/*/telegram-bot-token",
        "/leadwatch/*/api-key",
    }
    assert _secret_names("api_handler", many) == {"/leadwatch/*/application-token", "/leadwatch/*/api-key"}
    # Names that share no layout cannot be folded: refused, rather than granted wholesale.
    scattered = iam.secret_uses(_tenants(1000, "/secrets/{i}-{secret}"))
    with pytest.raises(ValueError, match="exceeds IAM's 10240 characters"):
        iam.policy_for("worker", REGISTRY, iam.STACK, scattered)


# ----- logs, BatchWriteItem


def test_each_function_writes_only_its_own_log_group():
    for target in (iam.STACK, PROD):
        for name in iam.functions(REGISTRY):
            [logs] = [s for s in iam.policy_for(name, REGISTRY, target)["Statement"] if s["Sid"] == "Logs"]
            group = f"log-group:/aws/lambda/{target.function_name(name)}"
            assert [_split_arn(t)[5] for t in _arn_texts(logs["Resource"])] == [group, group + ":*"]
    assert iam.STACK.function_name("worker") == "${AWS::StackName}-worker"
    assert PROD.function_name("worker") == "leadwatch-prod-worker"


def test_batch_writes_only_where_the_function_may_put_and_delete_the_same_table():
    # IAM cannot tell a batch's puts from its deletes, and LeadingKeys sees only the partition key,
    # which is the tenant: the batch is granted only beside PutItem and DeleteItem on the table.
    holders = set()
    for name in iam.functions(REGISTRY):
        for resource, actions in iam.actions_by_resource(name, REGISTRY).items():
            if "BatchWriteItem" in actions:
                holders.add((name, resource))
                assert {"PutItem", "DeleteItem"} <= actions, (name, resource)
    assert holders == {("worker", "table:state"), ("jobs", "table:state")}


# ----- the generated part of the template


def _template_resources() -> dict[str, Any]:
    return load_template()["Resources"]


def test_each_function_is_named_as_its_policy_names_its_log_group_and_has_three_alarms():
    resources = _template_resources()
    app_timeout = json.loads((ROOT / ".chalice" / "config.json").read_text())["lambda_timeout"]
    for name, settings in iam.functions(REGISTRY).items():
        logical = infra.logical_id(name)
        assert resources[logical]["Properties"]["FunctionName"] == {"Fn::Sub": f"${{AWS::StackName}}-{name}"}
        alarms = {
            props["MetricName"]: props
            for props in (
                r["Properties"] for r in resources.values() if r.get("Type") == "AWS::CloudWatch::Alarm"
            )
            if props.get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": logical}}]
        }
        assert set(alarms) == {"Errors", "Throttles", "Duration"}, name
        assert alarms["Errors"]["Threshold"] == alarms["Throttles"]["Threshold"] == 0
        timeout_ms = settings.get("lambda_timeout", app_timeout) * 1000
        duration = alarms["Duration"]
        assert duration["Statistic"] == "Maximum" and duration["Period"] == 300
        assert 0.75 * timeout_ms <= duration["Threshold"] < timeout_ms or name == "api_handler", name
        for props in alarms.values():
            assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]
            assert props["TreatMissingData"] == "notBreaching"
    # The API answers within API Gateway's 29 s; a job uses its whole budget by design.
    from leadwatch.scheduling import MARGIN_SECONDS

    assert resources["APIHandlerDurationAlarm"]["Properties"]["Threshold"] == 0.8 * 29_000
    jobs_timeout = iam.functions(REGISTRY)["jobs"]["lambda_timeout"]
    assert (jobs_timeout - MARGIN_SECONDS) * 1000 < resources["JobsDurationAlarm"]["Properties"]["Threshold"]


def test_concurrency_and_throttling_come_from_the_stacks_parameters():
    template = load_template()
    resources, parameters = template["Resources"], template["Parameters"]
    api = resources["APIHandler"]["Properties"]["ReservedConcurrentExecutions"]
    assert api == {
        "Fn::If": ["ReserveApiConcurrency", {"Ref": "ApiReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert resources["Jobs"]["Properties"]["ReservedConcurrentExecutions"]["Fn::If"][1] == {
        "Ref": "JobsReservedConcurrency"
    }
    assert parameters["JobsReservedConcurrency"]["Default"] == 0  # not reserved unless sized
    # `chalice deploy` reserves the same for the API handler, in every stage (none overrides it).
    config = json.loads((ROOT / ".chalice" / "config.json").read_text())
    reserved = config["lambda_functions"]["api_handler"]["reserved_concurrency"]
    assert reserved == parameters["ApiReservedConcurrency"]["Default"]
    for stage in config["stages"].values():
        assert "reserved_concurrency" not in stage["lambda_functions"]["api_handler"]
    [source] = resources["Worker"]["Properties"]["Events"].values()
    assert source["Properties"]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "WorkerMaxConcurrency"}}
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 2 <= parameters["WorkerMaxConcurrency"]["Default"] <= 1000  # SQS ScalingConfig's range
    # The jobs Lambda is invoked asynchronously: no event source, and its reserved concurrency (when
    # set) is its only ceiling.
    assert "Events" not in resources["Jobs"]["Properties"]
    assert "JobsMaxConcurrency" not in parameters
    stage = resources["HttpAPI"]["Properties"]["DefaultRouteSettings"]
    assert stage == {
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
    }


def test_a_40_minute_crm_outage_stays_out_of_the_dead_letter_queue():
    # The worker backs a failed message off: 30 s, doubling per receive, at most 900 s.
    def visibility(receive: int) -> int:
        return min(30 * 2 ** (receive - 1), 900)

    [props] = [q for q in queue_definitions().values() if q["QueueName"] == "leadwatch-events"]
    receives = props["RedrivePolicy"]["maxReceiveCount"]
    last_receive_at = sum(visibility(n) for n in range(1, receives))
    assert last_receive_at >= 40 * 60
    assert last_receive_at <= 2 * 60 * 60  # a dead message is still seen the same morning
    # There is no jobs queue: a job's failure waits for no back-off, its next tick runs it again.
    assert {q["QueueName"] for q in queue_definitions().values()} == {
        "leadwatch-events",
        "leadwatch-events-dlq",
    }


def test_a_failed_job_is_tried_once_more_then_parked_in_the_dead_letter_queue():
    """The jobs Lambda's asynchronous invocations: one retry (not Lambda's default two: the next
    tick dispatches the job again anyway), an hour at most in Lambda's queue, then the dead-letter
    queue, which its alarm watches; the function's own role may send there, and nothing else."""
    template = load_template()
    resources = template["Resources"]
    config = resources["JobsEventInvokeConfig"]
    assert config["Type"] == "AWS::Lambda::EventInvokeConfig"
    assert config["Properties"] == {
        "FunctionName": {"Ref": "Jobs"},
        "Qualifier": "$LATEST",
        "MaximumRetryAttempts": 1,
        "MaximumEventAgeInSeconds": 3600,
        "DestinationConfig": {"OnFailure": {"Destination": {"Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]}}},
    }
    granted = iam.actions_by_resource("jobs", REGISTRY)
    assert granted["queue:events-dlq"] == {"SendMessage"}
    assert not [
        r for r in granted if r.startswith("queue:") and r not in ("queue:events", "queue:events-dlq")
    ]
    # The dispatchers start the jobs, and the jobs Lambda its continuations: InvokeFunction on the
    # jobs Lambda alone, and no SQS action on any jobs queue.
    for name in [*iam.dispatchers(REGISTRY), "jobs"]:
        actions = iam.actions_by_resource(name, REGISTRY)
        assert [r for r in actions if r.startswith("function:")] == ["function:jobs"], name
        assert actions["function:jobs"] == {"InvokeFunction"}, name
    for name in ("api_handler", "worker"):
        assert not [r for r in iam.actions_by_resource(name, REGISTRY) if r.startswith("function:")], name
    # The stack tells every function the jobs Lambda's name.
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["LEADWATCH_JOBS_FUNCTION"] == {"Fn::Sub": "${AWS::StackName}-jobs"}
    assert "LEADWATCH_JOBS_QUEUE_URL" not in variables


def test_the_template_without_its_generated_part_is_refused():
    text = (ROOT / infra.TEMPLATE).read_text()
    with pytest.raises(ValueError, match="one generated part"):
        infra.rendered_template(text.replace(infra.END, "# gone"), REGISTRY)


# ----- chalice deploy: a stage with a region and account


def test_a_stage_given_a_region_and_account_gets_policies_with_those(tmp_path, monkeypatch):
    shutil.copytree(ROOT / ".chalice", tmp_path / ".chalice", ignore=shutil.ignore_patterns("deployments"))
    shutil.copytree(ROOT / "infra", tmp_path / "infra")
    (tmp_path / "config" / "tenants").mkdir(parents=True)
    shutil.copy(ROOT / "config/examples/acme-b24.yaml", tmp_path / "config/tenants/acme-b24.yaml")
    monkeypatch.delenv("LEADWATCH_PROCESSES", raising=False)
    args = ["--project-dir", str(tmp_path)]
    assert iam.main([*args, "--check"]) == 1  # a tenant file was added: its secrets need grants
    assert iam.main([*args, "--stage", "prod", "--region", "eu-central-1", "--account", "123456789012"]) == 0
    assert iam.main([*args, "--check"]) == 0

    config = json.loads((tmp_path / ".chalice/config.json").read_text())
    prod = config["stages"]["prod"]
    assert prod["leadwatch_aws"] == {"region": "eu-central-1", "account": "123456789012"}
    assert prod["autogen_policy"] is False
    for name in iam.functions(REGISTRY):
        assert prod["lambda_functions"][name]["iam_policy_file"] == iam.policy_file(name, "prod")
        assert config["stages"]["dev"]["lambda_functions"][name]["iam_policy_file"] == iam.policy_file(name)
    text = (tmp_path / ".chalice" / iam.policy_file("worker", "prod")).read_text()
    assert "${" not in text and ":*:*:" not in text
    assert "arn:aws:ssm:eu-central-1:123456789012:parameter/leadwatch/acme-b24/webhook-code" in text
    assert "log-group:/aws/lambda/leadwatch-prod-worker:*" in text
    api = (tmp_path / ".chalice" / iam.policy_file("api_handler", "prod")).read_text()
    assert "application-token" in api and "webhook-code" not in api and "telegram" not in api
    # Its dispatchers invoke the jobs Lambda Chalice names for the stage, told by the stage's
    # environment (the stack's template tells its own; `dev` is packaged, so it has none).
    sweep = (tmp_path / ".chalice" / iam.policy_file("timeliness_sweep", "prod")).read_text()
    assert '"arn:aws:lambda:eu-central-1:123456789012:function:leadwatch-prod-jobs"' in sweep
    assert prod["environment_variables"] == {"LEADWATCH_JOBS_FUNCTION": "leadwatch-prod-jobs"}
    assert "LEADWATCH_JOBS_FUNCTION" not in config["stages"]["dev"].get("environment_variables", {})

    with pytest.raises(SystemExit):
        iam.main([*args, "--stage", "prod", "--region", "eu-central-1", "--account", "*"])
    with pytest.raises(SystemExit):
        iam.main([*args, "--stage", "prod"])
