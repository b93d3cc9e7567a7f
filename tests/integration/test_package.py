"""`chalice package` produces a bundle that works: the app imports in a clean
interpreter from the unzipped package, and the template (with infra/ merged)
holds the tables, queue and schedules and is clean under cfn-lint, each function's
role is the policy leadwatch.iam generates from the declarations (and the most sensitive
grants are pinned by hand: named region and account, the function's own log group, only the
secrets its tenants' files name for it, BatchWriteItem only beside put and delete), and the
alarms cover the dead-letter queue, every function and leadwatch's failure metrics."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from chalice.utils import to_cfn_resource_name

from leadwatch import iam
from leadwatch.registry import ProcessRegistry
from workflows import PROCESSES

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _chalice_package(project: Path, out: Path) -> Path:
    env = {**os.environ, "AWS_DEFAULT_REGION": "eu-central-1"}
    result = subprocess.run(
        [str(BIN / "chalice"), "package", "--merge-template", "infra/resources.yaml", str(out / "sam")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out / "sam"


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    return _chalice_package(ROOT, tmp_path_factory.mktemp("package"))


@pytest.fixture(scope="module")
def tenants_package(tmp_path_factory) -> Path:
    """The project as a deployment with the two example tenants, its files regenerated."""
    project = tmp_path_factory.mktemp("project")
    for name in ("app.py", "requirements.txt"):
        shutil.copy(ROOT / name, project / name)
    for name in ("functions", "leadwatch", "crm_adapters", "workflows", "config", "infra", ".chalice"):
        shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "vendor", project / "vendor", symlinks=True)
    for example in ("acme-b24", "acme-amo"):
        shutil.copy(
            ROOT / "config/examples" / f"{example}.yaml", project / "config/tenants" / f"{example}.yaml"
        )
    assert iam.main(["--project-dir", str(project)]) == 0
    return _chalice_package(project, tmp_path_factory.mktemp("tenants-package"))


def test_app_imports_from_the_unzipped_bundle_in_a_clean_interpreter(package, tmp_path):
    with zipfile.ZipFile(package / "deployment.zip") as bundle:
        names = bundle.namelist()
        bundle.extractall(tmp_path)
    for top in (
        "app.py",
        "functions/",
        "crm_adapters/",
        "workflows/",
        "leadwatch/",
        "config/",
    ):
        assert any(n == top or n.startswith(top) for n in names), f"{top} missing from the bundle"
    assert not any(n.startswith(("tests/", "fakes/", "demo/", "bench/")) for n in names)
    # -I: no user site, no PYTHON* variables, no cwd on sys.path; only the bundle, like Lambda's /var/task.
    probe = (
        "import sys; sys.path.insert(0, '.');"
        "import app;"
        "import functions.worker, functions.schedules, functions.webhooks, functions.api;"
        "import leadwatch.ingress, leadwatch.dispatch, workflows.timeliness.sweep, leadwatch.reconcile;"
        "import crm_adapters.bitrix24, crm_adapters.amocrm, leadwatch.telegram, leadwatch.calendar;"
        # What the handlers import on their first invocation (Powertools comes from requirements.txt).
        "import leadwatch.observability as o; o.logger(); o.metrics();"
        "print(sorted(app.app.routes))"
    )
    python = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
    result = subprocess.run(
        [python, "-I", "-c", probe],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "eu-central-1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "/hooks/{tenant}" in result.stdout


def _template(package: Path) -> dict:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load((package / "sam.yaml").read_text(), Loader=Loader)


def test_template_has_tables_queue_schedules_and_partial_batch_failures(package):
    resources = _template(package)["Resources"]
    types = {name: res["Type"] for name, res in resources.items()}
    for table in ("InboxTable", "LeadsTable", "JournalTable", "StateTable"):
        assert types[table] == "AWS::DynamoDB::Table"
    assert types["EventsQueue"] == types["JobsQueue"] == "AWS::SQS::Queue"
    assert resources["LeadsTable"]["Properties"]["GlobalSecondaryIndexes"][0]["IndexName"] == "due-index"
    worker_events = resources["Worker"]["Properties"]["Events"]
    assert worker_events["WorkerSqsEventSource"]["Properties"]["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"
    ]
    jobs_events = resources["Jobs"]["Properties"]["Events"]
    assert jobs_events["JobsSqsEventSource"]["Properties"]["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"
    ]
    assert jobs_events["JobsSqsEventSource"]["Properties"]["BatchSize"] == 1
    sweep_events = resources["TimelinessSweep"]["Properties"]["Events"]
    assert any(e["Properties"]["Schedule"] == "rate(1 minute)" for e in sweep_events.values())
    reconcile_events = resources["Reconcile"]["Properties"]["Events"]
    assert any(e["Properties"]["Schedule"] == "rate(10 minutes)" for e in reconcile_events.values())


def test_cfn_lint_reports_no_errors(package):
    result = subprocess.run(
        [str(BIN / "cfn-lint"), str(package / "sam.yaml")], capture_output=True, text=True, timeout=300
    )
    # cfn-lint's exit code is a bit mask: 2 means errors (4 warnings, 8 informational).
    assert result.returncode & 2 == 0, result.stdout[-3000:]


# ----- IAM: each function's role grants only what its code path uses.
# The policies are generated from the declarations (leadwatch.iam: the framework's grants, the
# executor's for each process's effects, each process's own); tests/unit/test_iam.py keeps the
# files in .chalice/ equal to them. Here: what `chalice package` makes of them is exactly that.
REGISTRY = ProcessRegistry(PROCESSES)


def _resource_name(function: str) -> str:
    """The SAM resource of a Chalice function: CamelCase of its name, the API handler by its own."""
    return "APIHandler" if function == "api_handler" else to_cfn_resource_name(function)


FUNCTIONS = {_resource_name(name): name for name in iam.functions(REGISTRY)}
TABLE_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"}
SQS_CONSUME = {"ReceiveMessage", "DeleteMessage", "GetQueueAttributes", "ChangeMessageVisibility"}


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _role_statements(resources: dict, function: str) -> list[dict]:
    role_ref = resources[function]["Properties"]["Role"]
    role = resources[role_ref["Fn::GetAtt"][0]]
    assert role["Type"] == "AWS::IAM::Role"
    return [
        statement
        for policy in role["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


# The stack's ARNs: CloudFormation puts in the partition, region and account.
PSEUDO = ("${AWS::Partition}", "${AWS::Region}", "${AWS::AccountId}")


def _arn_parts(resource) -> list[str]:
    """The six parts of an ARN (a Fn::Sub's text), each pseudo parameter kept whole."""
    assert isinstance(resource, dict) and set(resource) == {"Fn::Sub"}, f"not the stack's ARN: {resource!r}"
    text = resource["Fn::Sub"]
    return [part.replace("\0", "::") for part in text.replace("::", "\0").split(":", 5)]


def _grants(statements: list[dict], service: str, prefix: str = "") -> dict[str, set[str]]:
    """Resource name (the ARN's resource part without `prefix`) -> the service's actions allowed on it."""
    grants: dict[str, set[str]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = [a for a in _as_list(statement["Action"]) if a.startswith(service + ":")]
        if not actions:
            continue
        for resource in _as_list(statement["Resource"]):
            parts = _arn_parts(resource)
            assert len(parts) == 6 and parts[2] == service, f"{service} actions on {resource!r}"
            assert tuple(parts[i] for i in (1, 3, 4)) == PSEUDO, (
                f"{resource!r} is not this region and account"
            )
            assert parts[5].startswith(prefix), f"{service} actions on {resource!r}"
            name = parts[5][len(prefix) :]
            grants.setdefault(name, set()).update(a.split(":", 1)[1] for a in actions)
    return grants


def _expected(function: str, service: str, prefix: str = "") -> dict[str, set[str]]:
    return _grants(iam.policy_for(FUNCTIONS[function], REGISTRY)["Statement"], service, prefix)


def _function_name(resources: dict, function: str) -> str:
    return resources[function]["Properties"]["FunctionName"]["Fn::Sub"]


def test_every_function_has_a_role_of_its_own(package):
    resources = _template(package)["Resources"]
    functions = sorted(n for n, r in resources.items() if r["Type"] == "AWS::Serverless::Function")
    assert functions == sorted(FUNCTIONS), "a new function needs its grants in leadwatch/iam.py"
    roles = {resources[f]["Properties"]["Role"]["Fn::GetAtt"][0] for f in functions}
    assert len(roles) == len(functions)


def test_each_role_is_its_functions_generated_policy(package):
    resources = _template(package)["Resources"]
    for function, name in FUNCTIONS.items():
        assert _role_statements(resources, function) == iam.policy_for(name, REGISTRY)["Statement"], function


def test_no_role_grants_wildcard_actions_or_unscoped_table_and_queue_access(package):
    resources = _template(package)["Resources"]
    for name, resource in resources.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                actions = _as_list(statement["Action"])
                targets = _as_list(statement["Resource"])
                for action in actions:
                    assert action != "*" and not action.endswith(":*"), f"{name}: {action}"
                    assert "*" not in action, f"{name}: {action}"
                for target in targets:
                    assert target != "*", f"{name}: {actions} on *"
                    parts = _arn_parts(target)
                    # The region and account are this stack's, never a wildcard.
                    assert tuple(parts[i] for i in (1, 3, 4)) == PSEUDO, f"{name}: {target}"
                    # The table, queue, parameter or log group is named; only a group's streams are `*`.
                    if any(a.startswith(("dynamodb:", "sqs:", "ssm:")) for a in actions):
                        assert "*" not in parts[5], f"{name}: {target}"


def test_each_function_gets_exactly_its_table_and_queue_actions(package):
    resources = _template(package)["Resources"]
    for function in FUNCTIONS:
        statements = _role_statements(resources, function)
        assert _grants(statements, "dynamodb", "table/") == _expected(function, "dynamodb", "table/"), (
            function
        )
        assert _grants(statements, "sqs") == _expected(function, "sqs"), function


def test_each_function_writes_only_its_own_log_group_and_without_tenants_reads_no_secret(package):
    resources = _template(package)["Resources"]
    for function, name in FUNCTIONS.items():
        statements = _role_statements(resources, function)
        # The repository deploys no tenant: nothing names a secret, so no role reads one.
        assert _grants(statements, "ssm") == {}, function
        # The stack names the function; its role may write that log group and its streams only.
        own = _function_name(resources, function)
        assert own == f"${{AWS::StackName}}-{name}"
        assert _grants(statements, "logs", "log-group:") == {
            f"/aws/lambda/{own}": {"CreateLogGroup", "CreateLogStream", "PutLogEvents"},
            f"/aws/lambda/{own}:*": {"CreateLogGroup", "CreateLogStream", "PutLogEvents"},
        }, function
        services = {a.split(":", 1)[0] for s in statements for a in _as_list(s["Action"])}
        assert services <= {"dynamodb", "sqs", "ssm", "logs"}, function


def test_with_tenants_each_role_reads_only_the_secrets_its_function_uses(tenants_package):
    resources = _template(tenants_package)["Resources"]
    secrets = {f: _grants(_role_statements(resources, f), "ssm", "parameter/") for f in FUNCTIONS}
    read = {"GetParameter"}
    # The public API handler: the webhooks' token or key and the read API key, never a CRM or bot token.
    assert secrets["APIHandler"] == {
        "leadwatch/acme-b24/application-token": read,
        "leadwatch/acme-b24/api-key": read,
        "leadwatch/acme-amo/hook-secret": read,
    }
    for function in ("Worker", "Jobs"):
        assert secrets[function] == {
            "leadwatch/acme-b24/webhook-code": read,
            "leadwatch/acme-amo/access-token": read,
            "leadwatch/acme-b24/telegram-bot-token": read,
        }, function
    for dispatcher in ("TimelinessSweep", "DialingReport", "Reconcile"):
        assert secrets[dispatcher] == {}, dispatcher
    # Everything else is what the repository's own package has.
    result = subprocess.run(
        [str(BIN / "cfn-lint"), str(tenants_package / "sam.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode & 2 == 0, result.stdout[-3000:]


def test_the_most_sensitive_grants_hold_whatever_the_declarations_say(package):
    """A hand-written pin, independent of leadwatch.iam: a declaration that widens one of these
    fails here even when the generated files are in step."""
    resources = _template(package)["Resources"]
    tables = {f: _grants(_role_statements(resources, f), "dynamodb", "table/") for f in FUNCTIONS}
    queues = {f: _grants(_role_statements(resources, f), "sqs") for f in FUNCTIONS}
    # The API handler (public webhooks, read API) writes only the inbox, and queues events.
    for table in ("leadwatch-leads", "leadwatch-state", "leadwatch-journal"):
        assert not tables["APIHandler"].get(table, set()) & TABLE_WRITES, table
    assert tables["APIHandler"]["leadwatch-inbox"] == {"PutItem", "DeleteItem"}
    assert queues["APIHandler"] == {"leadwatch-events": {"SendMessage", "GetQueueUrl"}}
    # Only webhooks and reconciliation's jobs store events; only the worker consumes them or parks
    # poison; only the jobs Lambda consumes jobs, and the scheduled Lambdas only dispatch them.
    assert {f for f, t in tables.items() if "leadwatch-inbox" in t} == {"APIHandler", "Jobs"}
    for function, granted in queues.items():
        for queue, actions in granted.items():
            consumer = {"leadwatch-events": "Worker", "leadwatch-jobs": "Jobs"}.get(queue)
            if function != consumer:
                assert not actions & (SQS_CONSUME - {"GetQueueAttributes"}), (function, queue)
        if function != "Worker":
            assert "leadwatch-events-dlq" not in granted, function
    # Each consumer backs a failed message off on its own queue (ChangeMessageVisibility).
    assert queues["Worker"]["leadwatch-events"] == SQS_CONSUME
    assert queues["Jobs"]["leadwatch-jobs"] == SQS_CONSUME | {"SendMessage", "GetQueueUrl"}
    # A batch write may delete as well as put: only the effect ledger's writers hold it, on the
    # state table, where they may put and delete item by item anyway.
    batch = {
        (f, t)
        for f, granted in tables.items()
        for t, actions in granted.items()
        if "BatchWriteItem" in actions
    }
    assert batch == {("Worker", "leadwatch-state"), ("Jobs", "leadwatch-state")}
    for function, table in batch:
        assert {"PutItem", "DeleteItem"} <= tables[function][table]
    for dispatcher in ("TimelinessSweep", "DialingReport", "Reconcile"):
        assert not {t for t, actions in tables[dispatcher].items() if actions - {"Query"}}, dispatcher
    # The journal is append-only; nothing scans a table (a scan reads every tenant).
    for function, granted in tables.items():
        assert granted.get("leadwatch-journal", {"PutItem"}) == {"PutItem"}, function
        assert not any("Scan" in actions for actions in granted.values()), function


def test_dead_letter_queue_has_an_alarm_with_a_topic(package):
    template = _template(package)
    resources = template["Resources"]
    alarms = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    dlq_alarms = [
        a
        for a in alarms
        if a.get("Namespace") == "AWS/SQS"
        and {"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventsDeadLetterQueue", "QueueName"]}}
        in a.get("Dimensions", [])
    ]
    assert len(dlq_alarms) == 1
    alarm = dlq_alarms[0]
    assert resources["EventsDeadLetterQueue"]["Properties"]["QueueName"] == "leadwatch-events-dlq"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0
    assert alarm["Period"] == 300 and alarm["EvaluationPeriods"] == 1
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
    assert resources["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    assert template["Outputs"]["AlarmTopicArn"]["Value"] == {"Ref": "AlarmTopic"}
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail" and subscription["Type"] == "AWS::SNS::Subscription"
    assert subscription["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""


def test_every_function_and_every_failure_metric_has_an_alarm(package):
    template = _template(package)
    resources = template["Resources"]
    alarms = [r for r in resources.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    for function in FUNCTIONS:
        mine = {
            a["Properties"]["MetricName"]: a
            for a in alarms
            if a["Properties"].get("Dimensions") == [{"Name": "FunctionName", "Value": {"Ref": function}}]
        }
        assert set(mine) == {"Errors", "Throttles", "Duration"}, function
        timeout_ms = resources[function]["Properties"]["Timeout"] * 1000
        assert mine["Duration"]["Properties"]["Threshold"] < timeout_ms, function
        assert all(a["Condition"] == "WithFunctionAlarms" for a in mine.values())
    ours = {a["Properties"]["MetricName"] for a in alarms if a["Properties"].get("Namespace") == "leadwatch"}
    assert ours == {"CrmErrors", "TelegramErrors", "UnconfirmedMessages", "GaveUp"}
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_the_api_is_throttled_and_has_reserved_concurrency(package):
    template = _template(package)
    resources, parameters = template["Resources"], template["Parameters"]
    [settings] = resources["RestAPI"]["Properties"]["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    assert resources["APIHandler"]["Properties"]["ReservedConcurrentExecutions"]["Fn::If"][1] == {
        "Ref": "ApiReservedConcurrency"
    }
    assert parameters["ApiReservedConcurrency"]["Default"] > 0
    for queue in ("EventsQueue", "JobsQueue"):
        assert resources[queue]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 10
