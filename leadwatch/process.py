"""What a control process declares: the one object the framework builds everything from.

A process lives in one folder (`workflows/<name>/`) and exposes one `Process` in its
`process.py`. The declaration names code by reference ("module:attribute") instead of
importing it, so listing the processes costs nothing on a Lambda's cold start: each piece
is imported the first time it runs, by the function that runs it.

What the framework does with each part:
- `events`: the worker hands the process every batch of those events for tenants where
  it is enabled (`on_events`); a process that raises fails only its own work.
  `idempotent_events`: those of them whose repeat changes nothing in the process; their
  webhooks are queued without the inbox's dedupe write (see leadwatch.ingress).
- `schedules`: one scheduled Lambda each, running the job once per tenant where the
  process is enabled; one tenant's failure does not stop the others.
- `queries`: each is both a read API route (`GET /tenants/{tenant}/<path>`, behind the
  tenant's API key) and a CLI command (`leadwatch <name> TENANT ...`).
- `config`: the pydantic model of the process's section in the tenant YAML (its key is
  the process name); every field has a default, so a file without the section is valid.
- `state`, `effects`, `permissions`: what the process owns and may do, checked against the
  infrastructure template and the functions' IAM policies by the test suite.
- `violation_types`: the types of the journal rows it records (`RecordViolation`); the
  framework's journal (`leadwatch.journal`: `GET /tenants/{tenant}/violations`, `leadwatch
  violations`) filters by them and refuses a type nobody declares.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,30}$")


def resolve(reference: str) -> Any:
    """The object a "package.module:attribute" reference names, imported now."""
    module, _, attribute = reference.partition(":")
    if not module or not attribute:
        raise ValueError(f"{reference!r} is not a 'module:attribute' reference")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


@dataclass(frozen=True)
class Schedule:
    """A job run on a timer, once per tenant with due work (see leadwatch.scheduling).

    `run(ctx, config, now, budget)` returns a report (a dataclass or dict, logged and returned)
    or None when there was nothing to do; a report with `more = True` is continued at once, and
    with `fan_out="wake"` its `wake_at` is when the tenant's next job is due. The job must stop
    when `budget.spent()` and leave a checkpoint to continue from.
    """

    name: str
    every_minutes: int
    run: str
    description: str
    fan_out: Literal["all", "wake"] = "all"
    timeout_seconds: int = 55


ParamKind = Literal["str", "date", "flag"]


@dataclass(frozen=True)
class Param:
    """One input of a query: a path segment (`in_path`, a positional in the CLI) or an option."""

    name: str
    help: str
    kind: ParamKind = "str"
    in_path: bool = False


@dataclass(frozen=True)
class Query:
    """A read over the process's state, served by the API and the CLI from one function.

    `run(ctx, config, today, **params)` returns a `QueryResult`; a bad parameter raises
    `QueryError` (400 from the API, exit code 2 from the CLI). `today` is the tenant's
    local date (the usual default for a period).
    """

    name: str
    path: str
    run: str
    help: str
    params: tuple[Param, ...] = ()

    @property
    def path_params(self) -> list[Param]:
        return [p for p in self.params if p.in_path]


@dataclass(frozen=True)
class QueryResult:
    data: dict[str, Any]
    text: str


@dataclass(frozen=True)
class Route:
    """An HTTP endpoint of the process at `/tenants/{tenant}/<path>`, for what a query cannot be:
    a page (HTML), a form posted back, a link a person opens. `run(ctx, config, request)` returns
    a `RouteResponse`; a `QueryError` becomes its status with its message as plain text.

    `auth="api_key"`: behind the tenant's read API key, as queries are. `auth="none"`: anyone
    with the URL; the process authenticates the request itself (a signed, expiring link).
    """

    name: str
    path: str
    run: str
    help: str
    methods: tuple[str, ...] = ("GET",)
    auth: Literal["api_key", "none"] = "api_key"


@dataclass(frozen=True)
class RouteRequest:
    method: str
    params: dict[str, str]  # the path's parameters and the query string's
    body: bytes
    content_type: str
    headers: dict[str, str]
    today: Any  # the tenant's local date

    def form(self) -> dict[str, str]:
        """A posted form (application/x-www-form-urlencoded), last value of each key."""
        from urllib.parse import parse_qsl

        return dict(parse_qsl(self.body.decode("utf-8", errors="replace"), keep_blank_values=True))


@dataclass(frozen=True)
class RouteResponse:
    body: str
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class QueryError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ViolationType:
    """One type of row a process writes to the violation journal: its name (as in
    `Violation.type`) and what it means, in a few words for `--help` and error messages."""

    name: str
    help: str


@dataclass(frozen=True)
class StateDecl:
    """A piece of state a process owns: a table of the template, the key namespace it writes
    there and the indexes it queries."""

    table: str
    keys: str
    indexes: tuple[str, ...] = ()


# The functions a permission can be granted to: the framework's own (webhooks and read API
# share the API handler; the worker; core reconciliation) or one of the process's schedules.
FunctionRole = Literal["api", "worker", "reconcile"] | str


@dataclass(frozen=True)
class Permission:
    """AWS actions a function of the deployment needs for this process's work.

    `function` is "api", "worker", "reconcile" or the name of one of the process's schedules;
    `resource` is "table:<name>", "index:<table>/<index>", "queue:<name>" or "ssm".
    """

    function: FunctionRole
    resource: str
    actions: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class Process:
    name: str
    title: str
    config: str
    events: tuple[str, ...] = ()
    on_events: str | None = None
    # The kinds of `events` whose repeat (a redelivered webhook, the same fact by another path)
    # changes nothing here: state merged, calls counted by key, effects through the ledger. A
    # kind every subscribed process lists skips the inbox's dedupe write (one write per webhook).
    idempotent_events: tuple[str, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    queries: tuple[Query, ...] = ()
    routes: tuple[Route, ...] = ()
    state: tuple[StateDecl, ...] = ()
    effects: tuple[str, ...] = ()
    permissions: tuple[Permission, ...] = ()
    # The journal row types its effects record (`Violation.type`); see leadwatch.journal.
    violation_types: tuple[ViolationType, ...] = ()
    # Called by the framework's reconciliation (every few minutes, per tenant where the process is
    # enabled): `reconcile(ctx, config, now)` feeds what webhooks missed and returns counts.
    reconcile: str | None = None
    # Called where a running process takes a new card in, before it is first stored:
    # `new_card(ctx, config, state)` returns the card with this process's own fields set
    # (dialing: its plan day), so they are stored with the card in one write instead of a
    # second write of the card (and its index) moments later.
    new_card: str | None = None
    # Checks across sections of one tenant file: `check(tenant_config)` raises ValueError.
    check: str | None = None
    # Processes whose state this one reads: it runs for a tenant only where they run too.
    requires: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"process name {self.name!r}: use 2-31 lowercase letters, digits and _")
        if bool(self.events) != bool(self.on_events):
            raise ValueError(f"process {self.name!r}: declare both events and on_events, or neither")
        if unknown := sorted(set(self.idempotent_events) - set(self.events)):
            raise ValueError(f"process {self.name!r}: idempotent_events it does not consume: {unknown}")
        names = [s.name for s in self.schedules]
        if len(set(names)) != len(names):
            raise ValueError(f"process {self.name!r}: schedule names repeat: {names}")
        for schedule in self.schedules:
            if not _NAME.match(schedule.name):
                raise ValueError(
                    f"process {self.name!r}: schedule name {schedule.name!r} is not a plain name"
                )
        for route in self.routes:
            unsupported = set(route.methods) - {"GET", "POST"}
            if unsupported or not route.methods:
                raise ValueError(
                    f"process {self.name!r}: route {route.name!r} methods must be GET and/or POST"
                )
        for kind in self.violation_types:
            if not _NAME.match(kind.name) or not kind.help.strip():
                raise ValueError(
                    f"process {self.name!r}: violation type {kind.name!r} needs a plain name "
                    "(2-31 lowercase letters, digits and _) and a help text"
                )
        functions = {"api", "worker", "reconcile", *names}
        for permission in self.permissions:
            if permission.function not in functions:
                raise ValueError(
                    f"process {self.name!r}: a permission for {permission.function!r}, which is neither "
                    f"a framework function (api, worker, reconcile) nor one of its schedules"
                )

    def function_name(self, schedule: Schedule) -> str:
        """The Lambda (Chalice handler) name of one of this process's schedules."""
        return f"{self.name}_{schedule.name}"


def new_card_fields(ctx: Any, config: Any, state: Any) -> Any:
    """A new card with the fields of every process running for the tenant that sets some on new
    cards (`Process.new_card`), in registry order."""
    for process in ctx.processes.running(config):
        if process.new_card is not None:
            state = resolve(process.new_card)(ctx, config, state)
    return state
