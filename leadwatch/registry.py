"""The registry: the list of control processes a deployment runs, and what is built from it.

`app.py` builds the Chalice app from it (the worker's dispatch, one scheduled Lambda per
process schedule, the read API routes); the CLI adds one command per query; the tenant
file gets one section per process; the test suite checks the IAM policies and the tables
in infra/ against what the processes declare. The processes of a deployment are named by
`LEADWATCH_PROCESSES` ("module:attribute" of a list of `Process`, default
"workflows:PROCESSES"), so the core never imports a process by name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any

from leadwatch.process import Process, Query, Route, Schedule, ViolationType, resolve

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig

DEFAULT_PROCESSES = "workflows:PROCESSES"
# Names the framework's own CLI commands and functions take.
RESERVED_COMMANDS = frozenset({"check-config", "violations", "aws-setup", "processes"})
RESERVED_FUNCTIONS = frozenset({"api_handler", "worker", "reconcile"})
# The framework's own read API paths under /tenants/{tenant}/ (functions.api: the journal).
RESERVED_PATHS = frozenset({"violations"})
FRAMEWORK = "the framework"


class ProcessRegistry:
    def __init__(self, processes: Iterable[Process]):
        self._processes: dict[str, Process] = {}
        for process in processes:
            if process.name in self._processes:
                raise ValueError(f"process {process.name!r} is registered twice")
            missing = [r for r in process.requires if r not in self._processes]
            if missing:
                raise ValueError(f"process {process.name!r} requires {missing}, registered before it")
            self._processes[process.name] = process
        self._check_unique(
            "query", [(q.name, p.name) for p in self for q in p.queries], reserved=RESERVED_COMMANDS
        )
        self._check_unique(
            "route path",
            [(q.path, p.name) for p in self for q in p.queries]
            + [(r.path, p.name) for p in self for r in p.routes],
            reserved=RESERVED_PATHS,
        )
        self._check_unique(
            "violation type",
            [(t.name, p.name) for p in self for t in p.violation_types],
            reserved=frozenset(t.name for owner, t in self.violation_types() if owner == FRAMEWORK),
        )
        self._check_unique(
            "route name",
            [(f"{p.name}_{q.name}", p.name) for p in self for q in p.queries]
            + [(f"{p.name}_{r.name}", p.name) for p in self for r in p.routes],
        )
        self._check_unique(
            "scheduled function",
            [(p.function_name(s), p.name) for p in self for s in p.schedules],
            reserved=RESERVED_FUNCTIONS,
        )

    @staticmethod
    def _check_unique(
        what: str, pairs: list[tuple[str, str]], reserved: frozenset[str] = frozenset()
    ) -> None:
        seen: dict[str, str] = {}
        for name, owner in pairs:
            if name in reserved:
                raise ValueError(f"process {owner!r}: {what} {name!r} is taken by the framework")
            if name in seen:
                raise ValueError(f"{what} {name!r} is declared by both {seen[name]!r} and {owner!r}")
            seen[name] = owner

    def __iter__(self) -> Iterator[Process]:
        return iter(self._processes.values())

    def __len__(self) -> int:
        return len(self._processes)

    def get(self, name: str) -> Process | None:
        return self._processes.get(name)

    def names(self) -> list[str]:
        return list(self._processes)

    def subscribed(self, event_kind: str) -> list[Process]:
        """The processes that consume one kind of event, in registry order."""
        return [p for p in self if event_kind in p.events]

    def deduped(self, config: TenantConfig, event_kind: str) -> bool:
        """Whether a webhook event of this kind must be stored once in the inbox for this tenant:
        some process running for it consumes the kind and does not declare its repeat harmless."""
        return any(
            event_kind in p.events and event_kind not in p.idempotent_events for p in self.running(config)
        )

    def schedules(self) -> list[tuple[Process, Schedule]]:
        return [(p, s) for p in self for s in p.schedules]

    def queries(self) -> list[tuple[Process, Query]]:
        return [(p, q) for p in self for q in p.queries]

    def routes(self) -> list[tuple[Process, Route]]:
        return [(p, r) for p in self for r in p.routes]

    def violation_types(self) -> list[tuple[str, ViolationType]]:
        """(who records it, type) of every journal row type: the framework's, then each process's."""
        from leadwatch.journal import FRAMEWORK_TYPES

        return [(FRAMEWORK, t) for t in FRAMEWORK_TYPES] + [
            (p.name, t) for p in self for t in p.violation_types
        ]

    def running(self, config: TenantConfig) -> list[Process]:
        """The processes enabled for one tenant (and whose required processes are enabled too)."""
        on = {p.name for p in self if config.enabled(p.name)}
        return [p for p in self if p.name in on and all(r in on for r in p.requires)]

    def is_running(self, config: TenantConfig, name: str) -> bool:
        return any(p.name == name for p in self.running(config))

    @cached_property
    def _tenant_model(self) -> type[TenantConfig]:
        from leadwatch.config import tenant_model

        return tenant_model(
            [(p.name, resolve(p.config)) for p in self],
            [resolve(p.check) for p in self if p.check],
        )

    def tenant_model(self) -> type[TenantConfig]:
        """The tenant file's model: the framework's keys plus one section per process."""
        return self._tenant_model

    def describe(self) -> list[dict[str, Any]]:
        """Each process with what it consumes, runs, owns, serves and may do (`leadwatch processes`)."""
        return [
            {
                "name": p.name,
                "title": p.title,
                "description": p.description,
                "config_section": p.name,
                "requires": list(p.requires),
                "events": list(p.events),
                "idempotent_events": list(p.idempotent_events),
                "schedules": [
                    {
                        "function": p.function_name(s),
                        "every_minutes": s.every_minutes,
                        "timeout_seconds": s.timeout_seconds,
                        "fan_out": s.fan_out,
                        "description": s.description,
                    }
                    for s in p.schedules
                ],
                "reconciles": p.reconcile is not None,
                "state": [{"table": s.table, "keys": s.keys, "indexes": list(s.indexes)} for s in p.state],
                "effects": list(p.effects),
                "violation_types": [{"name": t.name, "help": t.help} for t in p.violation_types],
                "routes": [f"GET /tenants/{{tenant}}/{q.path}" for q in p.queries],
                "pages": [
                    f"{'|'.join(r.methods)} /tenants/{{tenant}}/{r.path}"
                    + (" (public: the process checks the link)" if r.auth == "none" else "")
                    for r in p.routes
                ],
                "commands": [_command_line(q) for q in p.queries],
                "permissions": [
                    {
                        "function": _granted_to(p, perm.function),
                        "resource": perm.resource,
                        "actions": list(perm.actions),
                        "why": perm.why,
                    }
                    for perm in p.permissions
                ],
            }
            for p in self
        ]


def _granted_to(process: Process, function: str) -> str:
    """Where a permission lands: a schedule's work and a reconcile hook run as per-tenant jobs
    (leadwatch.scheduling), in the jobs Lambda."""
    if function in ("api", "worker"):
        return function
    if function == "reconcile":
        return "reconcile jobs"
    schedule = next(s for s in process.schedules if s.name == function)
    return f"{process.function_name(schedule)} jobs"


def _command_line(query: Query) -> str:
    parts = [f"leadwatch {query.name} TENANT"]
    for param in query.params:
        if param.in_path:
            parts.append(param.name.upper())
        elif param.kind == "flag":
            parts.append(f"[--{param.name}]")
        else:
            parts.append(f"[--{param.name} {param.name.upper()}]")
    parts.append("[--json]")
    return " ".join(parts)


def load(spec: str | None = None) -> ProcessRegistry:
    """The registry named by `spec` ("module:attribute" of a list of processes)."""
    return ProcessRegistry(resolve(spec or os.environ.get("LEADWATCH_PROCESSES") or DEFAULT_PROCESSES))


@cache
def default_registry() -> ProcessRegistry:
    return load()
