"""Each Lambda's least-privilege IAM policy, generated from the registry: the framework's own
grants (below, declared like a process's) plus what every process declares.

Who gets what:
- `FRAMEWORK`: what the framework's functions do themselves (webhooks and the read API share the
  API handler; the worker; reconciliation), and what every function needs (secrets, logs).
- `EFFECTS`: what the executor (`leadwatch.executor`) does to perform one kind of effect. A
  process's effects are performed by the worker (its `on_events`) and by its schedules, so those
  functions get the grants of the effect kinds the process declares. The effect ledger and the
  journal rows of violations and unconfirmed messages are thus the framework's, not the process's.
- A process's `permissions`: what its own code does through `ctx.store` in each function. Feeding
  events from a `reconcile` hook goes through `leadwatch.ingress.accept`, which the framework's
  reconciliation grants already.

Actions are read off the code paths (every DynamoDB call is in leadwatch.store): PynamoDB's
save=PutItem, update=UpdateItem, delete=DeleteItem, get=GetItem, query=Query, batch_get=BatchGetItem,
batch_write=BatchWriteItem (a condition or ReturnValues needs nothing more; PynamoDB 6 never calls
DescribeTable); boto3 SQS send_message(_batch)=SendMessage, get_queue_url=GetQueueUrl (only when
the template's URL is absent), get_queue_attributes=GetQueueAttributes. A process's own records
(`ctx.state`, leadwatch.store.process_state) are in the state table: get=GetItem, get_many=BatchGetItem,
query=Query, create=PutItem, update/advance/count=UpdateItem.

The policy files (`.chalice/policy-<function>.json`) and the `lambda_functions` of every stage in
`.chalice/config.json` are written from here; the unit tests fail when they differ from what the
registry gives. Regenerate from the project directory:

    python -m leadwatch.iam            # rewrite the files
    python -m leadwatch.iam --check    # only compare (exit code 1 when they differ)
    python -m leadwatch.iam --explain  # each function's grants, with who asks for them and why
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leadwatch.process import Permission, Process
from leadwatch.registry import ProcessRegistry

REGENERATE = "python -m leadwatch.iam"  # (from the project directory; `leadwatch.iam.main()`)

PREFIX = "leadwatch-"  # of every table and queue name (infra/resources.yaml)
EVERY = "*"  # a framework grant every function of the deployment gets
# The framework's functions: the name a permission uses -> the Lambda (Chalice handler) name.
API, WORKER, RECONCILE, JOBS = "api", "worker", "reconcile", "jobs"
FRAMEWORK_FUNCTIONS = {API: "api_handler", WORKER: "worker", RECONCILE: "reconcile", JOBS: "jobs"}
# Every scheduled Lambda (each process schedule's, and reconcile's) only dispatches jobs.
DISPATCHERS = "dispatchers"
# Their timeouts (seconds); None: the app's `lambda_timeout`. A process schedule's is its own.
FRAMEWORK_TIMEOUTS: dict[str, int | None] = {"api_handler": None, "worker": 60, "reconcile": 60, "jobs": 60}

# The effect ledger (leadwatch.store.ledger) in the state table: claim_many and the refused claim's
# look read it (BatchGetItem, strongly consistent), claim is a conditional PutItem, confirm and
# mark_unconfirmed a conditional UpdateItem, release a conditional DeleteItem.
LEDGER = ("BatchGetItem", "PutItem", "UpdateItem", "DeleteItem")

FRAMEWORK: tuple[Permission, ...] = (
    # Webhooks (leadwatch.ingress): put_event (conditional put), forget_event when queueing failed,
    # put_reject keeps a refused body; the accepted events go to the queue (SqsQueue.send).
    Permission(API, "table:inbox", ("PutItem", "DeleteItem"), "webhooks: store once, undo, keep rejects"),
    Permission(API, "queue:events", ("SendMessage", "GetQueueUrl"), "queue accepted events"),
    # The SQS event source polls with the worker's role; poison is parked by the worker itself.
    Permission(
        WORKER,
        "queue:events",
        ("ReceiveMessage", "DeleteMessage", "GetQueueAttributes", "ChangeMessageVisibility"),
        "its event source",
    ),
    Permission(WORKER, "queue:events-dlq", ("SendMessage", "GetQueueUrl"), "park poison messages"),
    # ctx.wake (leadwatch.scheduling): a process's worker code wakes a tenant's schedule (read, then
    # a conditional create or update of its wake-up record).
    Permission(WORKER, "table:state", ("GetItem", "PutItem", "UpdateItem"), "wake-ups"),
    # The dispatchers (functions.schedules): every tenant's wake-up of a schedule in one query, one
    # job per tenant with due work on the jobs queue; reconcile's reads the queue depth metric.
    Permission(DISPATCHERS, "table:state", ("Query",), "wake-ups"),
    Permission(DISPATCHERS, "queue:jobs", ("SendMessage", "GetQueueUrl"), "queue the tenants' jobs"),
    Permission(RECONCILE, "queue:events", ("GetQueueAttributes", "GetQueueUrl"), "queue depth metric"),
    # The jobs Lambda (functions.jobs): its event source, continuations, the wake-up it sets after a
    # job; and reconciliation's jobs (leadwatch.reconcile: checkpoint, get_leads, ingress.accept).
    Permission(
        JOBS,
        "queue:jobs",
        (
            "ReceiveMessage",
            "DeleteMessage",
            "GetQueueAttributes",
            "ChangeMessageVisibility",
            "SendMessage",
            "GetQueueUrl",
        ),
        "its event source; continuations",
    ),
    Permission(JOBS, "table:state", ("GetItem", "PutItem", "UpdateItem"), "wake-ups; checkpoint"),
    Permission(JOBS, "table:leads", ("BatchGetItem",), "reconciliation: the cards it knows"),
    Permission(JOBS, "table:inbox", ("PutItem", "DeleteItem"), "reconciliation: feed what webhooks missed"),
    Permission(
        JOBS, "queue:events", ("SendMessage", "GetQueueUrl"), "reconciliation: feed what webhooks missed"
    ),
    Permission(EVERY, "ssm", ("GetParameter",), "tenant secrets"),
    Permission(EVERY, "logs", ("CreateLogGroup", "CreateLogStream", "PutLogEvents"), "logs"),
)

# Effect kind (a class of leadwatch.effects) -> what the executor does to perform one.
EFFECTS: dict[str, tuple[Permission, ...]] = {
    # CRM field writes are idempotent: done is recorded in batches (EffectLedger.mark_done).
    "SetCardFields": (Permission(EVERY, "table:state", (*LEDGER, "BatchWriteItem"), "effect ledger"),),
    "Notify": (
        Permission(EVERY, "table:state", LEDGER, "effect ledger"),
        Permission(EVERY, "table:journal", ("PutItem",), "unconfirmed messages"),
    ),
    "RecordViolation": (Permission(EVERY, "table:journal", ("PutItem",), "violations"),),
}

# The actions a declaration may name, per resource kind. No Scan: it reads across tenants.
ACTIONS: dict[str, frozenset[str]] = {
    "table": frozenset(
        {
            "GetItem",
            "PutItem",
            "UpdateItem",
            "DeleteItem",
            "Query",
            "BatchGetItem",
            "BatchWriteItem",
            "ConditionCheckItem",
        }
    ),
    "index": frozenset({"Query"}),
    "queue": frozenset(
        {
            "SendMessage",
            "GetQueueUrl",
            "GetQueueAttributes",
            "ReceiveMessage",
            "DeleteMessage",
            "ChangeMessageVisibility",
        }
    ),
    "ssm": frozenset({"GetParameter"}),
    "logs": frozenset({"CreateLogGroup", "CreateLogStream", "PutLogEvents"}),
}
SERVICE = {"table": "dynamodb", "index": "dynamodb", "queue": "sqs", "ssm": "ssm", "logs": "logs"}
_KIND_ORDER = list(SERVICE)
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclass(frozen=True)
class Grant:
    """One permission as it lands in one function's policy."""

    function: str  # Lambda name
    resource: str
    actions: tuple[str, ...]
    why: str
    owner: str  # "framework", or the process that declares it (or whose effects need it)


# ----------------------------------------------------------------------------- resources


def _parse(resource: str) -> tuple[str, str]:
    """(kind, name) of a declared resource; ValueError for anything not understood."""
    kind, colon, name = resource.partition(":")
    if kind in ("ssm", "logs"):
        if colon:
            raise ValueError(f"resource {resource!r}: {kind!r} takes no name")
        return kind, ""
    if kind not in ("table", "index", "queue") or not name:
        raise ValueError(
            f"resource {resource!r}: use 'table:<name>', 'index:<table>/<index>', 'queue:<name>' or 'ssm'"
        )
    parts = name.split("/")
    if len(parts) != (2 if kind == "index" else 1) or not all(_NAME.match(p) for p in parts):
        raise ValueError(f"resource {resource!r}: malformed name")
    return kind, name


def arn(resource: str) -> str:
    kind, name = _parse(resource)
    if kind == "table":
        return f"arn:aws:dynamodb:*:*:table/{PREFIX}{name}"
    if kind == "index":
        table, index = name.split("/")
        return f"arn:aws:dynamodb:*:*:table/{PREFIX}{table}/index/{index}"
    if kind == "queue":
        return f"arn:aws:sqs:*:*:{PREFIX}{name}"
    if kind == "ssm":
        return "arn:aws:ssm:*:*:parameter/leadwatch/*"
    return "arn:aws:logs:*:*:log-group:/aws/lambda/*"


def sid(resource: str) -> str:
    """A readable statement id: "table:leads" -> LeadsTable, "index:leads/due-index" -> LeadsDueIndex."""
    kind, name = _parse(resource)
    if kind == "ssm":
        return "Secrets"
    if kind == "logs":
        return "Logs"
    camel = "".join(word.capitalize() for word in re.split(r"[-/]", name))
    suffix = {"table": "Table", "index": "Index", "queue": "Queue"}[kind]
    return camel if camel.endswith(suffix) else camel + suffix


def table_of(resource: str) -> str | None:
    """The table (logical name) a table or index resource is on."""
    kind, name = _parse(resource)
    return name.split("/")[0] if kind in ("table", "index") else None


def _check_permission(permission: Permission, owner: str) -> list[str]:
    try:
        kind, _ = _parse(permission.resource)
    except ValueError as exc:
        return [f"{owner}: {exc}"]
    problems = []
    if not permission.actions:
        problems.append(f"{owner}: no actions on {permission.resource!r}")
    unknown = sorted(set(permission.actions) - ACTIONS[kind])
    if unknown:
        problems.append(
            f"{owner}: {unknown} on {permission.resource!r}: allowed are {sorted(ACTIONS[kind])} "
            f"(without the '{SERVICE[kind]}:' prefix)"
        )
    if not permission.why.strip():
        problems.append(f"{owner}: say why {permission.function!r} needs {permission.resource!r}")
    return problems


# ----------------------------------------------------------------------------- the registry's grants


def function_of(process: Process, permission: Permission) -> str:
    """The Lambda a process permission is granted to. A schedule's work and a reconcile hook run
    as per-tenant jobs in the jobs Lambda (leadwatch.scheduling); its own Lambda only dispatches."""
    if permission.function == RECONCILE:
        return FRAMEWORK_FUNCTIONS[JOBS]
    if permission.function in FRAMEWORK_FUNCTIONS:
        return FRAMEWORK_FUNCTIONS[permission.function]
    for schedule in process.schedules:
        if schedule.name == permission.function:
            return FRAMEWORK_FUNCTIONS[JOBS]
    # Process.__post_init__ refuses this already; a hand-built object may still get here.
    raise ValueError(f"process {process.name!r}: no function {permission.function!r}")


def effect_functions(process: Process) -> list[str]:
    """The functions that perform the process's effects: the worker (if it consumes events) and
    the jobs Lambda (if it has schedules). A `reconcile` hook feeds events; it performs none."""
    found = [FRAMEWORK_FUNCTIONS[WORKER]] if process.on_events else []
    return found + ([FRAMEWORK_FUNCTIONS[JOBS]] if process.schedules else [])


def dispatchers(registry: ProcessRegistry) -> list[str]:
    return [FRAMEWORK_FUNCTIONS[RECONCILE]] + [p.function_name(s) for p, s in registry.schedules()]


def check(registry: ProcessRegistry) -> list[str]:
    """What is wrong with the declarations, as far as IAM goes (empty: nothing)."""
    problems = [p for perm in FRAMEWORK for p in _check_permission(perm, "framework")]
    for process in registry:
        owner = f"process {process.name!r}"
        for kind in process.effects:
            if kind not in EFFECTS:
                problems.append(f"{owner}: unknown effect kind {kind!r} (known: {sorted(EFFECTS)})")
        tables = {s.table for s in process.state}
        indexes = {f"{s.table}/{i}" for s in process.state for i in s.indexes}
        for permission in process.permissions:
            problems += _check_permission(permission, owner)
            if permission.function == API and not process.queries:
                problems.append(f"{owner}: a permission for the API handler, but the process has no query")
            if permission.function == WORKER and not process.on_events:
                problems.append(f"{owner}: a permission for the worker, but the process consumes no events")
            if permission.function == RECONCILE and not process.reconcile:
                problems.append(f"{owner}: a permission for reconcile, but the process has no reconcile hook")
            try:
                kind, name = _parse(permission.resource)
            except ValueError:
                continue
            if kind == "table" and name not in tables:
                problems.append(
                    f"{owner}: {permission.resource!r} is not in its declared state {sorted(tables)}"
                )
            if kind == "index" and name not in indexes:
                problems.append(
                    f"{owner}: {permission.resource!r} is not an index of its declared state {sorted(indexes)}"
                )
    return problems


def grants(registry: ProcessRegistry) -> list[Grant]:
    """Every grant of the deployment, function by function (framework first, then registry order)."""
    problems = check(registry)
    if problems:
        raise ValueError("IAM declarations:\n  " + "\n  ".join(problems))
    names = list(functions(registry))
    found: list[Grant] = []
    for permission in FRAMEWORK:
        if permission.function == EVERY:
            targets = names
        elif permission.function == DISPATCHERS:
            targets = dispatchers(registry)
        else:
            targets = [FRAMEWORK_FUNCTIONS[permission.function]]
        found += [
            Grant(f, permission.resource, permission.actions, permission.why, "framework") for f in targets
        ]
    for process in registry:
        for permission in process.permissions:
            found.append(
                Grant(
                    function_of(process, permission),
                    permission.resource,
                    permission.actions,
                    permission.why,
                    process.name,
                )
            )
        for kind in process.effects:
            for permission in EFFECTS[kind]:
                found += [
                    Grant(
                        f,
                        permission.resource,
                        permission.actions,
                        f"executor, {kind}: {permission.why}",
                        process.name,
                    )
                    for f in effect_functions(process)
                ]
    return found


def actions_by_resource(function_name: str, registry: ProcessRegistry) -> dict[str, set[str]]:
    """Resource -> the actions (without the service prefix) one function is granted on it."""
    merged: dict[str, set[str]] = {}
    for grant in grants(registry):
        if grant.function == function_name:
            merged.setdefault(grant.resource, set()).update(grant.actions)
    return merged


def policy_for(function_name: str, registry: ProcessRegistry) -> dict[str, Any]:
    """The IAM policy document of one function: one statement per resource, actions sorted."""
    if function_name not in functions(registry):
        raise KeyError(f"no function {function_name!r} in this deployment: {sorted(functions(registry))}")
    merged = actions_by_resource(function_name, registry)

    def order(resource: str) -> tuple[int, str]:
        return _KIND_ORDER.index(_parse(resource)[0]), resource

    statements = []
    for resource in sorted(merged, key=order):
        service = SERVICE[_parse(resource)[0]]
        statements.append(
            {
                "Sid": sid(resource),
                "Effect": "Allow",
                "Action": sorted(f"{service}:{action}" for action in merged[resource]),
                "Resource": arn(resource),
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def policy_file(function_name: str) -> str:
    return f"policy-{function_name.replace('_', '-')}.json"


def functions(registry: ProcessRegistry) -> dict[str, dict[str, Any]]:
    """Every Lambda of the deployment -> its Chalice settings (`lambda_functions` entry):
    the framework's, then one per process schedule, in registry order."""
    timeouts = dict(FRAMEWORK_TIMEOUTS)
    for process, schedule in registry.schedules():
        timeouts[process.function_name(schedule)] = schedule.timeout_seconds
    settings: dict[str, dict[str, Any]] = {}
    for name, timeout in timeouts.items():
        entry: dict[str, Any] = {} if timeout is None else {"lambda_timeout": timeout}
        entry["iam_policy_file"] = policy_file(name)
        settings[name] = entry
    return settings


# ----------------------------------------------------------------------------- the files

OWNED_SETTINGS = ("lambda_timeout", "iam_policy_file")  # of a lambda_functions entry; others are kept


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def rendered(project_dir: Path | str, registry: ProcessRegistry) -> dict[str, str]:
    """File name under `.chalice/` -> the text it must have: config.json (its `lambda_functions`
    regenerated in every stage, everything else as it is) and one policy file per function."""
    chalice = Path(project_dir) / ".chalice"
    config = json.loads((chalice / "config.json").read_text(encoding="utf-8"))
    wanted = functions(registry)
    for stage in (config.get("stages") or {}).values():
        current = stage.get("lambda_functions") or {}
        stage["lambda_functions"] = {
            name: {
                **{k: v for k, v in current.get(name, {}).items() if k not in OWNED_SETTINGS},
                **settings,
            }
            for name, settings in wanted.items()
        }
    files = {"config.json": _dump(config)}
    for name, settings in wanted.items():
        files[settings["iam_policy_file"]] = _dump(policy_for(name, registry))
    return files


def differences(project_dir: Path | str, registry: ProcessRegistry) -> list[str]:
    """The files under `.chalice/` that differ from what the registry gives (empty: none)."""
    chalice = Path(project_dir) / ".chalice"
    files = rendered(project_dir, registry)
    found = []
    for name, text in files.items():
        path = chalice / name
        if not path.exists():
            found.append(f".chalice/{name} is missing")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f".chalice/{name} differs from what the declarations give")
    found += [
        f".chalice/{p.name} is stale (no such function)"
        for p in _policy_files(chalice)
        if p.name not in files
    ]
    return found


def _policy_files(chalice: Path) -> list[Path]:
    return sorted(chalice.glob("policy-*.json"))


def write_chalice_config(project_dir: Path | str, registry: ProcessRegistry) -> list[str]:
    """(Re)write the policy files and the `lambda_functions` of .chalice/config.json; remove the
    policy files of functions that are gone. Returns the names of the files changed or removed."""
    chalice = Path(project_dir) / ".chalice"
    files = rendered(project_dir, registry)
    changed = []
    for name, text in files.items():
        path = chalice / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    for path in _policy_files(chalice):
        if path.name not in files:
            path.unlink()
            changed.append(path.name)
    return changed


def explain(registry: ProcessRegistry) -> str:
    """Each function's grants with who asks for them and why (for people reading a policy)."""
    lines = []
    all_grants = grants(registry)
    for name in functions(registry):
        lines.append(f"{name} ({policy_file(name)}):")
        for grant in all_grants:
            if grant.function == name:
                lines.append(
                    f"  {grant.resource:<24} {','.join(grant.actions):<48} {grant.owner}: {grant.why}"
                )
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m leadwatch.iam",
        description="Write each function's IAM policy and Chalice settings from the process registry.",
    )
    parser.add_argument("--project-dir", default=".", help="the Chalice project (holds .chalice/)")
    parser.add_argument("--processes", help="'module:attribute' of the process list (LEADWATCH_PROCESSES)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only compare; exit 1 when the files differ")
    mode.add_argument("--explain", action="store_true", help="print each function's grants and why")
    args = parser.parse_args(list(argv) if argv is not None else None)
    from leadwatch.registry import load

    registry = load(args.processes)
    if args.explain:
        print(explain(registry))
        return 0
    if not (Path(args.project_dir) / ".chalice" / "config.json").exists():
        print(f"no .chalice/config.json under {Path(args.project_dir).resolve()}", file=sys.stderr)
        return 2
    if args.check:
        found = differences(args.project_dir, registry)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            print(f"regenerate with: {REGENERATE}", file=sys.stderr)
        return 1 if found else 0
    changed = write_chalice_config(args.project_dir, registry)
    print("\n".join(f".chalice/{name}" for name in changed) or "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
