"""Each Lambda's least-privilege IAM policy, generated from the registry: the framework's own
grants (below, declared like a process's) plus what every process declares.

Who gets what:
- `FRAMEWORK`: what the framework's functions do themselves (webhooks and the read API share the
  API handler; the worker; reconciliation), and what every function needs (its own log group).
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
the template's URL is absent), get_queue_attributes=GetQueueAttributes; boto3 Lambda
invoke=InvokeFunction (on the function's unqualified ARN: `function:<name>`). A process's own records
(`ctx.state`, leadwatch.store.process_state) are in the state table: get=GetItem, get_many=BatchGetItem,
query=Query, create=PutItem, update/advance/count=UpdateItem.

Scoping:
- Every ARN names its region and account: `${AWS::Region}`/`${AWS::AccountId}` (CloudFormation
  resolves them; the policy files as committed are for `chalice package`), or, for a stage given a
  region and account (`--stage S --region R --account A`, recorded in .chalice/config.json under
  the stage's `leadwatch_aws`), those, for `chalice deploy --stage S`.
- Secrets: a function reads only the SSM parameters the tenant files (config/tenants/*.yaml and
  *.yml, bundled with the functions; each under /leadwatch/<tenant>/, leadwatch.config) name for
  the kinds of secret it uses (`SECRET_PLACES`): the API handler the
  webhook token or key and the read API key, the worker and the jobs Lambda the CRM credentials,
  and whoever sends messages the Telegram bot token; the dispatchers none. No tenant file, no grant.
  A role's inline policies may hold 10,240 characters (IAM quotas); past that the names are folded
  per kind, the tenant's path segment written `*` (`/leadwatch/*/webhook-code`).
- Logs: the function's own log group only (the stack names each function `<stack>-<name>`,
  leadwatch/infra.py; `chalice deploy` names them `<app>-<stage>[-<name>]`).
- BatchWriteItem: IAM cannot tell a batch's puts from its deletes, and `dynamodb:LeadingKeys` sees
  only the partition key, which is the tenant on every table, so no condition can confine the batch
  to the ledger's rows. It is granted only where the same function holds PutItem and DeleteItem on
  the table anyway (the ledger claims and releases), so a batch can do nothing the role could not
  do item by item; `grants` refuses it elsewhere.

The policy files (`.chalice/policy-<function>.json`), the `lambda_functions` of every stage in
`.chalice/config.json` and the generated part of infra/resources.yaml (leadwatch.infra) are written
from here; the unit tests fail when they differ from what the registry and the tenant files give.
Regenerate from the project directory (after adding a process, a tenant or a secret reference):

    python -m leadwatch.iam            # rewrite the files
    python -m leadwatch.iam --check    # only compare (exit code 1 when they differ)
    python -m leadwatch.iam --explain  # each function's grants, with who asks for them and why
    python -m leadwatch.iam --stage prod --region eu-central-1 --account 123456789012
                                       # the stage's policies with these ARNs, for chalice deploy
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leadwatch.config import secret_kind
from leadwatch.process import Permission, Process
from leadwatch.registry import ProcessRegistry

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig

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

SSM_READ = ("GetParameter", "GetParameters")

# The effect ledger (leadwatch.store.ledger) in the state table: claim_many and the refused claim's
# look read it (BatchGetItem, strongly consistent), claim is a conditional PutItem, confirm and
# mark_unconfirmed a conditional UpdateItem, release a conditional DeleteItem.
LEDGER = ("BatchGetItem", "PutItem", "UpdateItem", "DeleteItem")

FRAMEWORK: tuple[Permission, ...] = (
    # Webhooks (leadwatch.ingress): put_event (conditional put), forget_event when queueing failed,
    # put_reject keeps a refused body; the accepted events go to the queue (SqsQueue.send).
    Permission(
        API,
        "table:inbox",
        ("PutItem", "DeleteItem", "UpdateItem"),
        "webhooks: store once, undo, keep rejects (counted per hour)",
    ),
    Permission(API, "queue:events", ("SendMessage", "GetQueueUrl"), "queue accepted events"),
    # The SQS event source polls with the worker's role; poison is parked by the worker itself, and
    # a failed message is backed off by setting its visibility (ChangeMessageVisibility).
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
    # job per tenant with due work, started as an asynchronous invocation of the jobs Lambda;
    # reconcile's reads the queue depth metric.
    Permission(DISPATCHERS, "table:state", ("Query",), "wake-ups"),
    Permission(DISPATCHERS, "function:jobs", ("InvokeFunction",), "start the tenants' jobs"),
    Permission(RECONCILE, "queue:events", ("GetQueueAttributes", "GetQueueUrl"), "queue depth metric"),
    # The jobs Lambda (functions.jobs): continuations (it invokes itself), the wake-up it sets
    # after a job, the on-failure destination of its asynchronous invocations (Lambda sends a
    # failed job's event to the dead-letter queue with the function's role); and reconciliation's
    # jobs (leadwatch.reconcile: checkpoint, get_leads, ingress.accept).
    Permission(JOBS, "function:jobs", ("InvokeFunction",), "continuations"),
    Permission(JOBS, "queue:events-dlq", ("SendMessage",), "its on-failure destination: failed jobs"),
    Permission(JOBS, "table:state", ("GetItem", "PutItem", "UpdateItem"), "wake-ups; checkpoint"),
    Permission(JOBS, "table:leads", ("BatchGetItem",), "reconciliation: the cards it knows"),
    Permission(JOBS, "table:inbox", ("PutItem", "DeleteItem"), "reconciliation: feed what webhooks missed"),
    Permission(
        JOBS, "queue:events", ("SendMessage", "GetQueueUrl"), "reconciliation: feed what webhooks missed"
    ),
    # The CRM's names (leadwatch.names, leadwatch.store.names): whoever renders for the head reads
    # the tenant's cached lists (GetItem); the worker and the jobs also claim a refresh and store
    # what they read from the CRM (conditional UpdateItem). The read API only reads them
    # (names.cached_only): it holds no CRM credentials.
    Permission(API, "table:state", ("GetItem",), "names: the CRM's names as cached"),
    # The violation journal of every process (leadwatch.journal, GET /tenants/{tenant}/violations):
    # one Query over the tenant's period; the API handler writes no journal row.
    Permission(API, "table:journal", ("Query",), "read API: the violation journal"),
    Permission(WORKER, "table:state", ("GetItem", "UpdateItem"), "names: read, refresh, keep"),
    Permission(JOBS, "table:state", ("GetItem", "UpdateItem"), "names: read, refresh, keep"),
    # Secrets (leadwatch.secrets: one GetParameter per name): the webhook checks need only what
    # authenticates the CRM's deliveries and the read API its key; whoever calls the CRM needs its
    # credentials (the worker's batched card reads; the jobs' sweeps, reports and reconciliation).
    Permission(API, "secret:webhook", SSM_READ, "webhooks: the CRM's token or key"),
    Permission(API, "secret:api-key", SSM_READ, "read API: the tenant's key"),
    Permission(WORKER, "secret:crm", SSM_READ, "the CRM client"),
    Permission(JOBS, "secret:crm", SSM_READ, "the CRM client"),
    Permission(EVERY, "logs", ("CreateLogGroup", "CreateLogStream", "PutLogEvents"), "its own logs"),
)

# Effect kind (a class of leadwatch.effects) -> what the executor does to perform one.
EFFECTS: dict[str, tuple[Permission, ...]] = {
    # CRM field writes are idempotent: done is recorded in batches (EffectLedger.mark_done).
    "SetCardFields": (Permission(EVERY, "table:state", (*LEDGER, "BatchWriteItem"), "effect ledger"),),
    "Notify": (
        Permission(EVERY, "table:state", LEDGER, "effect ledger"),
        Permission(EVERY, "table:journal", ("PutItem",), "unconfirmed messages"),
        Permission(EVERY, "secret:telegram", SSM_READ, "the tenant's bot"),
    ),
    "RecordViolation": (Permission(EVERY, "table:journal", ("PutItem",), "violations"),),
}
# CRM work items (leadwatch.effects.CrmWork): each claimed and confirmed one by one in the ledger
# (the CRM's task id kept with it); one that may have been done twice is journalled once.
_CRM_WORK = (
    Permission(EVERY, "table:state", LEDGER, "effect ledger"),
    Permission(EVERY, "table:journal", ("PutItem",), "unconfirmed or given-up work"),
    Permission(EVERY, "secret:crm", SSM_READ, "the CRM client"),
)
EFFECTS |= {kind: _CRM_WORK for kind in ("CreateTask", "CompleteTask", "RemindUser", "MoveStage", "AddNote")}

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
    # A function of the deployment, by its Chalice name (the stack's `<stack>-<name>`).
    "function": frozenset({"InvokeFunction"}),
    # GetParameters (several names in one call) reads no more than GetParameter on the same names.
    "secret": frozenset({"GetParameter", "GetParameters"}),
    "logs": frozenset({"CreateLogGroup", "CreateLogStream", "PutLogEvents"}),
}
SERVICE = {
    "table": "dynamodb",
    "index": "dynamodb",
    "queue": "sqs",
    "function": "lambda",
    "secret": "ssm",
    "logs": "logs",
}
_KIND_ORDER = list(SERVICE)
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")

# The kinds of tenant secret a function may be granted ("secret:<kind>"), and where each sits in a
# tenant file (the keys of TenantConfig.secrets(), a list's index dropped).
SECRET_KINDS: dict[str, str] = {
    "crm": "the CRM client's credentials",
    "webhook": "what authenticates the CRM's webhooks",
    "telegram": "the Telegram bot token",
    "api-key": "the read API key",
}
# IAM quotas: a role's inline policies together, in characters without white space.
ROLE_POLICY_LIMIT = 10_240


@dataclass(frozen=True)
class Grant:
    """One permission as it lands in one function's policy."""

    function: str  # Lambda name
    resource: str
    actions: tuple[str, ...]
    why: str
    owner: str  # "framework", or the process that declares it (or whose effects need it)


# ----------------------------------------------------------------------------- resources

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_ACCOUNT = re.compile(r"^\d{12}$")
_STAGE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


@dataclass(frozen=True)
class Target:
    """Where a policy's ARNs point. `STACK`: CloudFormation's pseudo parameters and the stack's
    function names (`<stack>-<name>`, leadwatch.infra), resolved when the stack is deployed. A
    region, account and Chalice stage: what `chalice deploy --stage <stage>` creates there."""

    region: str | None = None
    account: str | None = None
    stage: str | None = None
    app: str = "leadwatch"

    def __post_init__(self) -> None:
        if self.region is None and self.account is None and self.stage is None:
            return
        if not (self.region and _REGION.match(self.region)):
            raise ValueError(f"region {self.region!r}: expected a region code such as eu-central-1")
        if not (self.account and _ACCOUNT.match(self.account)):
            raise ValueError(f"account {self.account!r}: expected the 12-digit AWS account id")
        if not (self.stage and _STAGE.match(self.stage)):
            raise ValueError(f"stage {self.stage!r}: expected a Chalice stage name")

    @property
    def stack(self) -> bool:
        return self.region is None

    def arn(self, service: str, resource: str) -> str | dict[str, str]:
        if self.region is None:
            return {
                "Fn::Sub": f"arn:${{AWS::Partition}}:{service}:${{AWS::Region}}:${{AWS::AccountId}}:{resource}"
            }
        return f"arn:{partition(self.region)}:{service}:{self.region}:{self.account}:{resource}"

    def function_name(self, function: str) -> str:
        if self.region is None:
            return "${AWS::StackName}-" + function
        # Chalice names the API handler "<app>-<stage>" and every other "<app>-<stage>-<name>"
        # (chalice.deploy.appgraph).
        base = f"{self.app}-{self.stage}"
        return base if function == FRAMEWORK_FUNCTIONS[API] else f"{base}-{function}"


STACK = Target()


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _parse(resource: str) -> tuple[str, str]:
    """(kind, name) of a declared resource; ValueError for anything not understood."""
    kind, colon, name = resource.partition(":")
    if kind == "logs":
        if colon:
            raise ValueError(f"resource {resource!r}: 'logs' takes no name")
        return kind, ""
    if kind == "secret":
        if name not in SECRET_KINDS:
            raise ValueError(f"resource {resource!r}: use 'secret:<kind>', a kind of {sorted(SECRET_KINDS)}")
        return kind, name
    if kind not in ("table", "index", "queue", "function") or not name:
        raise ValueError(
            f"resource {resource!r}: use 'table:<name>', 'index:<table>/<index>', 'queue:<name>', "
            "'function:<name>' or 'secret:<kind>'"
        )
    parts = name.split("/")
    if len(parts) != (2 if kind == "index" else 1) or not all(_NAME.match(p) for p in parts):
        raise ValueError(f"resource {resource!r}: malformed name")
    return kind, name


def arn(resource: str, target: Target = STACK) -> str | dict[str, str]:
    """The ARN of a table, index, queue or function (secrets and logs depend on the function and
    tenants). A function's is its unqualified ARN: invoking `$LATEST`, no version or alias."""
    kind, name = _parse(resource)
    if kind == "function":
        return target.arn("lambda", f"function:{target.function_name(name)}")
    if kind == "table":
        return target.arn("dynamodb", f"table/{PREFIX}{name}")
    if kind == "index":
        table, index = name.split("/")
        return target.arn("dynamodb", f"table/{PREFIX}{table}/index/{index}")
    if kind == "queue":
        return target.arn("sqs", f"{PREFIX}{name}")
    raise ValueError(f"{resource!r} has no ARN of its own")


def log_group_arns(function_name: str, target: Target = STACK) -> list[str | dict[str, str]]:
    """The function's own log group: the group (CreateLogGroup) and its streams (the rest)."""
    group = f"log-group:/aws/lambda/{target.function_name(function_name)}"
    return [target.arn("logs", group), target.arn("logs", group + ":*")]


def parameter_arn(name: str, target: Target = STACK) -> str | dict[str, str]:
    # An SSM parameter's ARN drops the leading slash of a hierarchical name: parameter/leadwatch/x.
    return target.arn("ssm", "parameter/" + name.lstrip("/"))


def sid(resource: str) -> str:
    """A readable statement id: "table:leads" -> LeadsTable, "index:leads/due-index" -> LeadsDueIndex."""
    kind, name = _parse(resource)
    if kind == "secret":
        return "Secrets"
    if kind == "logs":
        return "Logs"
    camel = "".join(word.capitalize() for word in re.split(r"[-/]", name))
    suffix = {"table": "Table", "index": "Index", "queue": "Queue", "function": "Function"}[kind]
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


# ----------------------------------------------------------------------------- tenant secrets


@dataclass(frozen=True)
class SecretUse:
    """One SSM parameter a tenant file names, and what kind of secret it is."""

    tenant: str
    kind: str
    name: str


def secret_uses(tenants: Iterable[TenantConfig]) -> list[SecretUse]:
    """The SSM parameters the tenant files reference (an `{env: ...}` reference needs no grant).
    A secret in a place `SECRET_PLACES` does not know is refused: no function would be granted it."""
    found = set()
    for config in tenants:
        for place, ref in config.secrets().items():
            kind = secret_kind(place)
            if kind is None:
                raise ValueError(
                    f"tenant {config.tenant}: the secret at {place!r} has no kind: add it to "
                    f"leadwatch.iam.SECRET_PLACES (kinds: {sorted(SECRET_KINDS)})"
                )
            if ref.ssm:
                found.add(SecretUse(config.tenant, kind, ref.ssm))
    return sorted(found, key=lambda use: (use.kind, use.name, use.tenant))


def tenant_configs(project_dir: Path | str, registry: ProcessRegistry) -> list[TenantConfig]:
    """The deployment's tenant files (config/tenants/*.yaml and *.yml, bundled with the functions)."""
    from leadwatch.config import TenantRegistry

    directory = Path(project_dir) / "config" / "tenants"
    if not directory.is_dir():
        return []
    return list(TenantRegistry.from_dir(directory, registry.tenant_model()))


def _folded(use: SecretUse) -> str:
    """The name with the tenant's own path segment as a wildcard: /leadwatch/acme/webhook-code ->
    /leadwatch/*/webhook-code (a name without such a segment stays as it is)."""
    parts = use.name.split("/")
    return "/".join("*" if part == use.tenant else part for part in parts)


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
    the jobs Lambda (if it has schedules). A `reconcile` hook feeds events; it performs none. The
    public API handler performs no effect: a process's page records what was decided and leaves
    the CRM and Telegram to its schedule (the API handler holds no CRM or bot credentials)."""
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
            if permission.function == API and not (process.queries or process.routes):
                problems.append(
                    f"{owner}: a permission for the API handler, but the process has no query or route"
                )
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
    problems = _batch_write_problems(found)
    if problems:
        raise ValueError("IAM declarations:\n  " + "\n  ".join(problems))
    return found


def _batch_write_problems(found: list[Grant]) -> list[str]:
    """BatchWriteItem may put or delete any item of the table, and IAM cannot tell which (see the
    module docstring): grant it only where the function may put and delete there anyway."""
    held: dict[tuple[str, str], set[str]] = {}
    for grant in found:
        held.setdefault((grant.function, grant.resource), set()).update(grant.actions)
    return [
        f"{function}: BatchWriteItem on {resource!r} also deletes, so it needs PutItem and DeleteItem "
        "there too (or write item by item)"
        for (function, resource), actions in held.items()
        if "BatchWriteItem" in actions and not {"PutItem", "DeleteItem"} <= actions
    ]


def actions_by_resource(function_name: str, registry: ProcessRegistry) -> dict[str, set[str]]:
    """Resource -> the actions (without the service prefix) one function is granted on it."""
    merged: dict[str, set[str]] = {}
    for grant in grants(registry):
        if grant.function == function_name:
            merged.setdefault(grant.resource, set()).update(grant.actions)
    return merged


def policy_for(
    function_name: str,
    registry: ProcessRegistry,
    target: Target = STACK,
    secrets: Iterable[SecretUse] = (),
) -> dict[str, Any]:
    """The IAM policy document of one function: one statement per resource (the secrets it reads
    in one, its log group in one), actions sorted. `secrets`: what the tenant files reference."""
    if function_name not in functions(registry):
        raise KeyError(f"no function {function_name!r} in this deployment: {sorted(functions(registry))}")
    merged = actions_by_resource(function_name, registry)
    uses = list(secrets)
    policy = _policy(function_name, merged, target, uses, fold=False)
    if policy_size(policy) > ROLE_POLICY_LIMIT:
        policy = _policy(function_name, merged, target, uses, fold=True)
        if policy_size(policy) > ROLE_POLICY_LIMIT:
            raise ValueError(
                f"{function_name}: its policy exceeds IAM's {ROLE_POLICY_LIMIT} characters even with "
                "the secrets' names folded per kind; name the tenants' secrets alike, "
                "/leadwatch/<tenant>/<secret>"
            )
    return policy


def _policy(
    function_name: str, merged: dict[str, set[str]], target: Target, uses: list[SecretUse], fold: bool
) -> dict[str, Any]:
    def order(resource: str) -> tuple[int, str]:
        return _KIND_ORDER.index(_parse(resource)[0]), resource

    statements: list[dict[str, Any]] = []
    secrets_at = 0
    secret_actions: set[str] = set()
    secret_names: set[str] = set()
    for resource in sorted(merged, key=order):
        kind, name = _parse(resource)
        actions = sorted(f"{SERVICE[kind]}:{action}" for action in merged[resource])
        if kind == "secret":
            # Every kind of secret the function reads, in one statement, by the names in use.
            secrets_at = len(statements)
            chosen = {_folded(u) if fold else u.name for u in uses if u.kind == name}
            if chosen:
                secret_names |= chosen
                secret_actions.update(actions)
            continue
        place: Any = log_group_arns(function_name, target) if kind == "logs" else arn(resource, target)
        statements.append({"Sid": sid(resource), "Effect": "Allow", "Action": actions, "Resource": place})
    if secret_names:
        statements.insert(secrets_at, _secrets_statement(secret_actions, secret_names, target))
    return {"Version": "2012-10-17", "Statement": statements}


def _secrets_statement(actions: set[str], names: set[str], target: Target) -> dict[str, Any]:
    return {
        "Sid": "Secrets",
        "Effect": "Allow",
        "Action": sorted(actions),
        "Resource": [parameter_arn(name, target) for name in sorted(names)],
    }


# The longest values CloudFormation may put in place of the pseudo parameters, for the size check.
_WORST_CASE = {
    "${AWS::Partition}": "aws-us-gov",
    "${AWS::Region}": "xx-xxxxxxxxxx-99",
    "${AWS::AccountId}": "123456789012",
    "${AWS::StackName}": "x" * 48,
}


def policy_size(policy: dict[str, Any]) -> int:
    """Characters IAM counts against its quota (white space is not counted), pseudo parameters at
    their longest."""

    def resolved(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"]
            for name, worst in _WORST_CASE.items():
                text = text.replace(name, worst)
            return text
        if isinstance(value, dict):
            return {k: resolved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolved(v) for v in value]
        return value

    return len(json.dumps(resolved(policy), separators=(",", ":")))


def policy_file(function_name: str, stage: str | None = None) -> str:
    """`policy-<function>.json`, or for a stage deployed with `chalice deploy`,
    `policy-<stage>-<function>.json`."""
    middle = "" if stage is None else f"{stage}-"
    return f"policy-{middle}{function_name.replace('_', '-')}.json"


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
# The environment variable naming the jobs Lambda the dispatchers invoke (leadwatch.context), set
# in a `chalice deploy` stage's environment_variables; the stack sets it in its template.
JOBS_FUNCTION_VARIABLE = "LEADWATCH_JOBS_FUNCTION"
# A stage's entry in .chalice/config.json naming where `chalice deploy` puts it (Chalice ignores it).
STAGE_TARGET = "leadwatch_aws"
CONFIG = ".chalice/config.json"


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def stage_target(config: dict[str, Any], stage_name: str) -> Target:
    """The stage's recorded region and account (its `leadwatch_aws`), else STACK."""
    where = ((config.get("stages") or {}).get(stage_name) or {}).get(STAGE_TARGET)
    if not where:
        return STACK
    return Target(where.get("region"), where.get("account"), stage_name, config.get("app_name", "leadwatch"))


def rendered(project_dir: Path | str, registry: ProcessRegistry) -> dict[str, str]:
    """Path (under the project) -> the text it must have: `.chalice/config.json` (its
    `lambda_functions` regenerated in every stage, and in each stage given a region and account
    the jobs Lambda's name in its environment; everything else as it is), one policy file per
    function (and per function of each stage given a region and account), and infra/resources.yaml
    with its generated part (leadwatch.infra), where the project has that file."""
    from leadwatch import infra

    project = Path(project_dir)
    config = json.loads((project / CONFIG).read_text(encoding="utf-8"))
    uses = secret_uses(tenant_configs(project, registry))
    wanted = functions(registry)
    files: dict[str, str] = {}
    for name in wanted:
        files[f".chalice/{policy_file(name)}"] = _dump(policy_for(name, registry, STACK, uses))
    for stage_name, stage in (config.get("stages") or {}).items():
        target = stage_target(config, stage_name)
        current = stage.get("lambda_functions") or {}
        entries = {}
        for name, settings in wanted.items():
            entry = {k: v for k, v in current.get(name, {}).items() if k not in OWNED_SETTINGS}
            entries[name] = {**entry, **settings}
            if not target.stack:
                entries[name]["iam_policy_file"] = policy_file(name, stage_name)
                files[f".chalice/{policy_file(name, stage_name)}"] = _dump(
                    policy_for(name, registry, target, uses)
                )
        stage["lambda_functions"] = entries
        if not target.stack:
            # The stack sets it in every function (infra/resources.yaml, Globals); here Chalice does.
            variables = stage.setdefault("environment_variables", {})
            variables[JOBS_FUNCTION_VARIABLE] = target.function_name(FRAMEWORK_FUNCTIONS[JOBS])
    files[CONFIG] = _dump(config)
    template = project / infra.TEMPLATE
    if template.exists():
        app_timeout = int(config.get("lambda_timeout", infra.CHALICE_TIMEOUT))
        files[str(infra.TEMPLATE)] = infra.rendered_template(
            template.read_text(encoding="utf-8"), registry, app_timeout
        )
    return files


def differences(project_dir: Path | str, registry: ProcessRegistry) -> list[str]:
    """The files that differ from what the registry and the tenant files give (empty: none)."""
    project = Path(project_dir)
    files = rendered(project, registry)
    found = []
    for name, text in files.items():
        path = project / name
        if not path.exists():
            found.append(f"{name} is missing")
        elif path.read_text(encoding="utf-8") != text:
            found.append(f"{name} differs from what the declarations give")
    found += [f"{name} is stale (no such function)" for name in _policy_files(project) if name not in files]
    return found


def _policy_files(project: Path) -> list[str]:
    return sorted(f".chalice/{p.name}" for p in (project / ".chalice").glob("policy-*.json"))


def write_files(project_dir: Path | str, registry: ProcessRegistry) -> list[str]:
    """(Re)write the policy files, the `lambda_functions` of .chalice/config.json and the generated
    part of infra/resources.yaml; remove the policy files of functions that are gone. Returns the
    paths changed or removed."""
    project = Path(project_dir)
    files = rendered(project, registry)
    changed = []
    for name, text in files.items():
        path = project / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    for name in _policy_files(project):
        if name not in files:
            (project / name).unlink()
            changed.append(name)
    return changed


def set_stage_target(project_dir: Path | str, stage: str, region: str, account: str) -> None:
    """Record in .chalice/config.json that `stage` is deployed with `chalice deploy` to this region
    and account (a new stage is made with Chalice's policy generation off)."""
    path = Path(project_dir) / CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    Target(region, account, stage, config.get("app_name", "leadwatch"))  # refuses malformed values
    stages = config.setdefault("stages", {})
    entry = stages.setdefault(stage, {"api_gateway_stage": "api", "autogen_policy": False})
    entry[STAGE_TARGET] = {"region": region, "account": account}
    path.write_text(_dump(config), encoding="utf-8")


def explain(registry: ProcessRegistry, secrets: Iterable[SecretUse] = ()) -> str:
    """Each function's grants with who asks for them and why (for people reading a policy), and
    the SSM parameters each kind of secret stands for."""
    lines = []
    all_grants = grants(registry)
    uses = list(secrets)
    for name in functions(registry):
        lines.append(f"{name} ({policy_file(name)}):")
        for grant in all_grants:
            if grant.function == name:
                lines.append(
                    f"  {grant.resource:<24} {','.join(grant.actions):<48} {grant.owner}: {grant.why}"
                )
                kind, secret = _parse(grant.resource)
                if kind == "secret":
                    names = sorted({u.name for u in uses if u.kind == secret}) or [
                        "(no tenant file names one)"
                    ]
                    lines += [f"    {n}" for n in names]
    return "\n".join(lines)


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m leadwatch.iam",
        description="Write each function's IAM policy, its Chalice settings and the per-function part of "
        "infra/resources.yaml from the process registry and the tenant files.",
    )
    parser.add_argument("--project-dir", default=".", help="the Chalice project (holds .chalice/)")
    parser.add_argument("--processes", help="'module:attribute' of the process list (LEADWATCH_PROCESSES)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only compare; exit 1 when the files differ")
    mode.add_argument("--explain", action="store_true", help="print each function's grants and why")
    parser.add_argument(
        "--stage",
        help="a Chalice stage deployed with `chalice deploy`: record --region and --account for it and "
        "write its policies with those ARNs (the stack's policies need neither)",
    )
    parser.add_argument("--region", help="with --stage: the AWS region, e.g. eu-central-1")
    parser.add_argument(
        "--account",
        help="with --stage: the 12-digit account id (`aws sts get-caller-identity --query Account`)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if bool(args.stage) != bool(args.region and args.account) or (args.stage and args.check):
        parser.error("--stage takes --region and --account (and writes; it does not go with --check)")
    from leadwatch.registry import load

    registry = load(args.processes)
    project = Path(args.project_dir)
    if args.explain:
        print(explain(registry, secret_uses(tenant_configs(project, registry))))
        return 0
    if not (project / CONFIG).exists():
        print(f"no {CONFIG} under {project.resolve()}", file=sys.stderr)
        return 2
    if args.check:
        found = differences(project, registry)
        for line in found:
            print(line, file=sys.stderr)
        if found:
            print(f"regenerate with: {REGENERATE}", file=sys.stderr)
        return 1 if found else 0
    if args.stage:
        try:
            set_stage_target(project, args.stage, args.region, args.account)
        except ValueError as exc:
            parser.error(str(exc))
    changed = write_files(project, registry)
    print("\n".join(changed) or "up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
