"""The packaging path (`python -m leadwatch.bundle`: `chalice package`, then the zip without
what the Lambda runtime provides) produces a bundle that works: under 5 MB, every dependency
either bundled or provided by the runtime, and, unzipped next to nothing but the runtime's own
packages, it imports `app` and serves webhooks, the worker, a schedule and the read API in a
fresh interpreter. The template (with infra/ merged) holds the tables, queue and schedules and is
clean under cfn-lint; each function's role is the policy leadwatch.iam generates from the
declarations (and the most sensitive grants are pinned by hand: named region and account, the
function's own log group, only the secrets its tenants' files name for it, BatchWriteItem only
beside put and delete), and the alarms cover the dead-letter queue, every function and
leadwatch's failure metrics."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from chalice.utils import to_cfn_resource_name
from packaging.requirements import Requirement

from leadwatch import bundle, i18n, iam
from leadwatch.calendar import _country_year
from leadwatch.events import EntityRef, EntityType
from leadwatch.i18n import LANGUAGES
from leadwatch.registry import ProcessRegistry
from leadwatch.testing.stack import B24_TENANT, BitrixDriver, LocalStack, SimClock
from workflows import PROCESSES

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROBE = Path(__file__).with_name("bundle_probe.py")
# Years and countries with moved days off, to show the calendar is the same without translations.
CALENDARS = ("RU/2025", "RU/2026", "BY/2025", "KZ/2025", "UA/2021", "DE/2025", "US/2025")


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("package") / "sam"
    bundle.package(out)
    return out


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
    out = tmp_path_factory.mktemp("tenants-package") / "sam"
    bundle.chalice_package(out, None, project)  # the roles are what this reads: no need to slim
    return out


@pytest.fixture(scope="module")
def unzipped(package: Path, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("task")  # Lambda's /var/task
    with zipfile.ZipFile(package / "deployment.zip") as archive:
        archive.extractall(directory)
    return directory


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> Path:
    """The packages the Lambda Python runtime provides, and only those: links to the venv's copies.

    LEADWATCH_LAMBDA_RUNTIME_DIR names another directory to use instead, e.g. the site-packages
    of a Lambda base image, or a `pip install --target` of the SDK versions a runtime documents.
    """
    given = os.environ.get("LEADWATCH_LAMBDA_RUNTIME_DIR")
    if given:
        return Path(given).resolve()
    directory = tmp_path_factory.mktemp("runtime")
    for name in sorted(bundle.RUNTIME_PROVIDED):
        dist = importlib.metadata.distribution(name)
        tops = {
            Path(str(f)).parts[0] for f in dist.files or () if not str(f).startswith((".", "__pycache__"))
        }
        for top in sorted(tops):
            source = Path(str(dist.locate_file(top)))
            if source.exists() and not (directory / top).exists():
                (directory / top).symlink_to(source)
    return directory


def test_bundle_is_under_5_mb_and_leaves_out_what_the_runtime_provides(package):
    size = (package / "deployment.zip").stat().st_size
    assert size < bundle.TARGET_MB * bundle.MB, f"{size / bundle.MB:.2f} MB"
    with zipfile.ZipFile(package / "deployment.zip") as archive:
        names = archive.namelist()
    tops = {n.split("/", 1)[0] for n in names}
    for own in ("app.py", "chalice", "functions", "crm_adapters", "workflows", "leadwatch", "config"):
        assert own in tops, f"{own} missing from the bundle"
    for provided in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py"):
        assert provided not in tops, provided
    assert not [
        t
        for t in tops
        if t.endswith(".dist-info") and bundle.normalize(t.split("-")[0]) in bundle.RUNTIME_PROVIDED
    ]
    assert not [
        n for n in names if n.startswith(("tests/", "fakes/", "demo/", "bench/", "leadwatch/testing/"))
    ]
    assert not [n for n in names if "__pycache__/" in n or n.endswith(".pyc")]
    # Of Babel's locale data, only the languages leadwatch writes in and their parent.
    locales = sorted(n for n in names if n.startswith("babel/locale-data/"))
    assert locales == sorted(f"babel/locale-data/{name}.dat" for name in bundle.BABEL_LOCALES)
    assert "babel/global.dat" in names and not [n for n in names if n.startswith("babel/messages/")]


def _lambda_environment() -> dict[str, str]:
    """The markers pip would evaluate on the Lambda runtime the template names (Linux x86_64)."""
    return {
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
        "python_full_version": ".".join(map(str, sys.version_info[:3])),
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }


def test_every_dependency_is_bundled_or_provided_by_the_runtime(unzipped):
    # Names only: the runtime's SDK versions depend on the runtime and Region (see leadwatch.bundle).
    metadata = {
        p.parent.name: importlib.metadata.PathDistribution(p.parent).metadata
        for p in unzipped.glob("*.dist-info/METADATA")
    }
    bundled = {bundle.normalize(m["Name"]) for m in metadata.values()}
    environment = _lambda_environment()
    missing = []
    for dist_info, meta in metadata.items():
        for line in meta.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            name = bundle.normalize(requirement.name)
            if name not in bundled and name not in bundle.RUNTIME_PROVIDED:
                missing.append(f"{dist_info} needs {line}")
    assert not missing
    assert {"pynamodb", "requests", "pydantic", "pydantic-core", "pyyaml", "holidays"} <= bundled


def test_handlers_work_from_the_bundle_next_to_only_the_runtimes_packages(
    package, unzipped, runtime, tmp_path
):
    template = _template(package)
    functions = {
        n: r["Properties"]
        for n, r in template["Resources"].items()
        if r["Type"] == "AWS::Serverless::Function"
    }
    # The bundle's compiled packages (pydantic-core) are for the runtime the template names.
    assert {f["Runtime"] for f in functions.values()} == {
        f"python{sys.version_info.major}.{sys.version_info.minor}"
    }
    handlers = sorted(f["Handler"].split(".", 1)[1] for f in functions.values())

    with LocalStack(SimClock(datetime.now(UTC).replace(microsecond=0))) as stack:
        bodies: list[bytes] = []
        stack.bitrix.deliver = bodies.append  # the portal's webhooks go to the bundle, not the in-process app
        # The echo of the bundle's own intake write would come after the probe has delivered its bodies.
        stack.bitrix.emit_on_rest_writes = False
        lead = BitrixDriver(stack.bitrix).create("Lead via the bundle", "1", stack.clock())
        spec = {
            "bundle": str(unzipped),
            "runtime": str(runtime),
            "region": "eu-central-1",
            "handlers": handlers,
            "tenant": B24_TENANT,
            "webhook_bodies": [b.decode() for b in bodies],
            "api_key": stack.api_key(B24_TENANT),
            "sqs_endpoint": stack.aws_endpoint,
            "queue_url": stack.queue_url,
            "calendars": CALENDARS,
        }
        (tmp_path / "spec.json").write_text(json.dumps(spec))
        env = {
            "PATH": "/usr/bin:/bin",
            # What Lambda sets (the "Defined runtime environment variables" of the Lambda guide).
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LAMBDA_TASK_ROOT": str(unzipped),
            "AWS_REGION": "eu-central-1",
            "AWS_DEFAULT_REGION": "eu-central-1",
            "AWS_LAMBDA_FUNCTION_NAME": "leadwatch-dev",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_SERVICE_NAME": "leadwatch",
            # Where this stack's tables, queues and tenant files are.
            "LEADWATCH_TENANTS_DIR": str(stack.tenants_dir),
            "LEADWATCH_DYNAMODB_ENDPOINT": stack.aws_endpoint,
            "LEADWATCH_SQS_ENDPOINT": stack.aws_endpoint,
            "LEADWATCH_QUEUE_URL": stack.queue_url,
            "LEADWATCH_JOBS_FUNCTION": "leadwatch-jobs",
            "LEADWATCH_DLQ_URL": stack.dlq_url,
            **stack.secrets,
        }
        result = subprocess.run(
            [
                sys.executable,
                "-I",
                "-S",
                "-B",  # /var/task is read-only on Lambda; and nothing is written into the venv's SDK
                str(PROBE),
                str(tmp_path / "spec.json"),
                str(tmp_path / "seen.json"),
            ],
            cwd=unzipped,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        seen = json.loads((tmp_path / "seen.json").read_text())
        stored = stack.ctx.store.get_lead(B24_TENANT, EntityRef(EntityType.LEAD, lead))

    assert not [p for p in seen["sys_path"] if "site-packages" in p and not p.startswith(str(runtime))]
    assert seen["foreign_modules"] == [], seen["foreign_modules"]
    assert {"botocore", "boto3", "urllib3", "dateutil", "jmespath"} <= set(seen["loaded_from_runtime"])
    assert seen["handlers"] == dict.fromkeys(handlers, True)
    assert "/hooks/{tenant}" in seen["routes"]
    # The lead's webhook was accepted and queued, the worker stored the lead, the sweep's dispatcher
    # invoked the jobs Lambda once per tenant and the jobs Lambda ran them.
    assert [w["status"] for w in seen["webhooks"]] == [200] * len(bodies) and bodies
    assert sum(w["body"].get("accepted", 0) for w in seen["webhooks"]) >= 1
    assert seen["worker_batch"] >= 1 and seen["worker"] == {"batchItemFailures": []}
    assert stored is not None
    assert seen["sweep"]["tenants"] == 2
    assert seen["invoked"] == ["leadwatch-jobs"]
    assert seen["jobs"] == [{"jobs": 1}] * seen["sweep"]["due"] and seen["sweep"]["due"] >= 1
    assert seen["api"]["keyed"]["status"] == 200, seen["api"]["keyed"]
    assert seen["api"]["no_key"]["status"] == 401
    # Written in the tenant's language (the stack's Bitrix24 tenant: Russian) by the slimmed Babel,
    # which formats every language leadwatch writes exactly as the full one does.
    assert seen["api"]["text"]["status"] == 200
    assert seen["api"]["text"]["body"]["text"].startswith(f"Своевременность, {B24_TENANT}, ")
    assert seen["i18n"] == {lang: _i18n_sample(lang) for lang in LANGUAGES}
    assert seen["babel_files"] == sorted(
        ["global.dat", *(f"locale-data/{name}.dat" for name in bundle.BABEL_LOCALES)]
    )
    assert seen["api"]["unknown"]["status"] == 404
    # Holiday names are not bundled: the calendars are the same dates as with them.
    assert seen["calendars"] == {key: _calendar_dates(key) for key in CALENDARS}


def _i18n_sample(lang: str) -> list[str]:
    """What bundle_probe.i18n_sample gives, computed with the venv's full Babel."""
    moment, zone = datetime(2025, 11, 14, 14, 50, tzinfo=UTC), ZoneInfo("Europe/Moscow")
    word = i18n.Plural("one", "other", few="few", many="many")
    return [
        i18n.weekday_time(moment, zone, lang),
        i18n.clock(moment, zone, lang),
        i18n.weekday_date(date(2025, 11, 4), lang),
        i18n.day_text(date(2025, 11, 4), lang),
        i18n.number(12345.5, lang, 1),
        i18n.percent(0.125, lang),
        *(i18n.count(n, word, lang) for n in (0, 1, 2, 5, 21, 1000)),
    ]


def _calendar_dates(key: str) -> dict[str, list]:
    country, year = key.split("/")
    table = _country_year(country, None, int(year))
    return {
        "days_off": sorted(d.isoformat() for d in table.days_off),
        "public": sorted(d.isoformat() for d in table.public),
        "workday_replaces": sorted(
            [w.isoformat(), m.isoformat() if m else None] for w, m in table.workday_replaces.items()
        ),
    }


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
    assert types["EventsQueue"] == types["EventsDeadLetterQueue"] == "AWS::SQS::Queue"
    assert "JobsQueue" not in types
    assert resources["LeadsTable"]["Properties"]["GlobalSecondaryIndexes"][0]["IndexName"] == "due-index"
    worker_events = resources["Worker"]["Properties"]["Events"]
    assert worker_events["WorkerSqsEventSource"]["Properties"]["FunctionResponseTypes"] == [
        "ReportBatchItemFailures"
    ]
    # The jobs Lambda has no event source: the dispatchers invoke it asynchronously, and Lambda
    # tries a failed job once more, then sends it to the dead-letter queue.
    assert not resources["Jobs"]["Properties"].get("Events")
    invoke_config = resources["JobsEventInvokeConfig"]
    assert invoke_config["Type"] == "AWS::Lambda::EventInvokeConfig"
    assert invoke_config["Properties"]["MaximumRetryAttempts"] == 1
    assert invoke_config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["EventsDeadLetterQueue", "Arn"]
    }
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
        assert services <= {"dynamodb", "sqs", "lambda", "ssm", "logs"}, function


def test_with_tenants_each_role_reads_only_the_secrets_its_function_uses(tenants_package):
    resources = _template(tenants_package)["Resources"]
    secrets = {f: _grants(_role_statements(resources, f), "ssm", "parameter/") for f in FUNCTIONS}
    read = {"GetParameter", "GetParameters"}
    # The public API handler: the webhooks' token or key and the read API key, never a CRM or bot token.
    assert secrets["APIHandler"] == {
        "leadwatch/acme-b24/application-token": read,
        "leadwatch/acme-b24/api-key": read,
        "leadwatch/acme-amo/hook-secret": read,
    }
    # Whoever calls the CRM and sends alerts; the read API key only to sign quality control's
    # page links (it reads nothing these functions cannot read already).
    for function in ("Worker", "Jobs"):
        assert secrets[function] == {
            "leadwatch/acme-b24/webhook-code": read,
            "leadwatch/acme-amo/access-token": read,
            "leadwatch/acme-b24/telegram-bot-token": read,
            "leadwatch/acme-b24/api-key": read,
        }, function
    for dispatcher in ("TimelinessSweep", "DialingReport", "QcSweep", "QcAudit", "Reconcile"):
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
    # The API handler (public webhooks, read API, process pages) writes the inbox and queues
    # events; of the state table only what a page saves (a review decided, the sweep woken); never
    # the cards or the journal.
    for table in ("leadwatch-leads", "leadwatch-journal"):
        assert not tables["APIHandler"].get(table, set()) & TABLE_WRITES, table
    assert tables["APIHandler"]["leadwatch-state"] & TABLE_WRITES <= {"PutItem", "UpdateItem", "DeleteItem"}
    # (UpdateItem: the hourly counter of kept rejected bodies.)
    assert tables["APIHandler"]["leadwatch-inbox"] == {"PutItem", "DeleteItem", "UpdateItem"}
    assert queues["APIHandler"] == {"leadwatch-events": {"SendMessage", "GetQueueUrl"}}
    # Only webhooks and reconciliation's jobs store events; only the worker consumes them or parks
    # poison; the jobs Lambda's failed invocations reach the dead-letter queue with its role (its
    # on-failure destination); nothing else sends there.
    assert {f for f, t in tables.items() if "leadwatch-inbox" in t} == {"APIHandler", "Jobs"}
    for function, granted in queues.items():
        assert set(granted) <= {"leadwatch-events", "leadwatch-events-dlq"}, function  # no jobs queue
        for queue, actions in granted.items():
            if function != "Worker":
                assert not actions & (SQS_CONSUME - {"GetQueueAttributes"}), (function, queue)
    assert {f for f, granted in queues.items() if "leadwatch-events-dlq" in granted} == {"Worker", "Jobs"}
    assert queues["Jobs"]["leadwatch-events-dlq"] == {"SendMessage"}
    # The worker backs a failed message off on its queue (ChangeMessageVisibility).
    assert queues["Worker"]["leadwatch-events"] == SQS_CONSUME
    # The scheduled Lambdas start the tenants' jobs, and the jobs Lambda its continuations: each
    # may invoke exactly the stack's jobs Lambda; no other function may invoke any.
    jobs_arn = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:${AWS::StackName}-jobs"
    assert _function_name(resources, "Jobs") == "${AWS::StackName}-jobs"
    for function in FUNCTIONS:
        invokes = [
            (action, resource)
            for statement in _role_statements(resources, function)
            for action in _as_list(statement["Action"])
            if action.startswith("lambda:")
            for resource in _as_list(statement["Resource"])
        ]
        expected = function in ("TimelinessSweep", "DialingReport", "QcSweep", "QcAudit", "Reconcile", "Jobs")
        assert invokes == ([("lambda:InvokeFunction", {"Fn::Sub": jobs_arn})] if expected else []), function
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
    # The journal is append-only: its writers only put; the API handler only queries it (the read
    # API's journal, one tenant's partition). Nothing scans a table (a scan reads every tenant).
    assert tables["APIHandler"]["leadwatch-journal"] == {"Query"}
    for function, granted in tables.items():
        if function != "APIHandler":
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
    assert ours == {"CrmErrors", "TelegramErrors", "UnconfirmedMessages", "GaveUp", "NearTimeout"}
    # By default (FunctionAlarms=off) three alarms stand for the per-function ones, so a deployment
    # keeps within the account's 10 free alarms.
    assert template["Parameters"]["FunctionAlarms"]["Default"] == "off"
    by_default = [a for a in alarms if a.get("Condition") != "WithFunctionAlarms"]
    assert len(by_default) <= 10
    deployment = {
        a["Properties"]["MetricName"] for a in alarms if a.get("Condition") == "WithDeploymentAlarms"
    }
    assert deployment == {"Errors", "Throttles", "NearTimeout"}
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_the_api_is_throttled_and_has_reserved_concurrency(package):
    template = _template(package)
    resources, parameters = template["Resources"], template["Parameters"]
    settings = resources["HttpAPI"]["Properties"]["DefaultRouteSettings"]
    assert settings["ThrottlingRateLimit"] == {"Ref": "ApiThrottlingRateLimit"}
    assert settings["ThrottlingBurstLimit"] == {"Ref": "ApiThrottlingBurstLimit"}
    assert resources["APIHandler"]["Properties"]["ReservedConcurrentExecutions"]["Fn::If"][1] == {
        "Ref": "ApiReservedConcurrency"
    }
    assert parameters["ApiReservedConcurrency"]["Default"] > 0
    assert resources["EventsQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"] == 10


def test_the_api_is_an_http_api_with_one_route_per_chalice_route(package):
    """The REST API Chalice generates is replaced (leadwatch/http_api.py says why): each route of
    the app is a route of the HTTP API, in payload format 1.0, to the adapter's handler."""
    import app as leadwatch_app

    template = _template(package)
    resources = template["Resources"]
    assert "RestAPI" not in resources and "APIHandlerInvokePermission" not in resources
    assert resources["HttpAPI"]["Type"] == "AWS::Serverless::HttpApi"
    handler = resources["APIHandler"]["Properties"]
    assert handler["Handler"] == "app.http_api"
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in handler["Events"].values()}
    expected = {(m, p) for p, methods in leadwatch_app.app.routes.items() for m in methods}
    assert routes == expected
    for event in handler["Events"].values():
        assert event["Type"] == "HttpApi"
        assert event["Properties"]["PayloadFormatVersion"] == "1.0"
        assert event["Properties"]["TimeoutInMillis"] <= 30_000
    assert "HttpAPI" in json.dumps(template["Outputs"]["EndpointURL"])
    assert "RestAPI" not in json.dumps(template)
