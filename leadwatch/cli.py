"""`leadwatch`: the command line. The framework's commands, and one per process query:

  leadwatch check-config [DIR]                      validate tenant files
  leadwatch processes                               the processes and what each declares
  leadwatch violations TENANT [--from D] [--to D]   the violation journal
  leadwatch aws-setup [--worker-function NAME]      tables and queues for `chalice deploy`
  leadwatch timeliness TENANT [--from D] [--to D]   per-manager on-time / late table
  leadwatch dialing TENANT [--date D] [--json]      the dialing report of a day (default today)
  leadwatch calls TENANT LEAD [--json]              a card's call attempts and touches

Reads the same DynamoDB tables as the functions: in AWS with your credentials,
locally with LEADWATCH_DYNAMODB_ENDPOINT pointing at moto's server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leadwatch.process import Process, Query


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2025-11-05") from None


def _add_query(commands: Any, query: Query) -> None:
    sub = commands.add_parser(query.name, help=query.help, description=query.help)
    sub.add_argument("tenant", help="tenant id (its file name without .yaml)")
    for param in query.params:
        if param.in_path:
            sub.add_argument(param.name, help=param.help)
        elif param.kind == "flag":
            sub.add_argument(f"--{param.name}", action="store_true", help=param.help)
        else:
            sub.add_argument(
                f"--{param.name}",
                dest=f"param_{param.name}",
                type=_day if param.kind == "date" else str,
                help=param.help,
            )
    sub.add_argument("--json", action="store_true", help="print the API's JSON instead of text")


def _query_params(query: Query, args: argparse.Namespace) -> dict[str, str]:
    params: dict[str, str] = {}
    for param in query.params:
        value = getattr(args, param.name if param.in_path else f"param_{param.name}", None)
        if value not in (None, False):
            params[param.name] = value.isoformat() if isinstance(value, date) else str(value)
    return params


def main(argv: list[str] | None = None) -> int:
    from leadwatch.registry import default_registry

    processes = default_registry()
    parser = argparse.ArgumentParser(prog="leadwatch", description="leadwatch command line")
    parser.add_argument("--tenants-dir", type=Path, help="tenant YAML directory (default: config/tenants)")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate tenant files")
    check.add_argument("directory", nargs="?", type=Path)
    commands.add_parser(
        "processes", help="the control processes: events, schedules, state, routes, permissions"
    )
    violations = commands.add_parser("violations", help="the violation journal of every process")
    violations.add_argument("tenant")
    violations.add_argument(
        "--from", dest="first", type=_day, help="first day (default: six days before --to)"
    )
    violations.add_argument("--to", dest="last", type=_day, help="last day (default: today)")
    violations.add_argument("--json", action="store_true", help="print JSON instead of a table")
    queries = {query.name: (process, query) for process, query in processes.queries()}
    for _, query in queries.values():
        _add_query(commands, query)
    setup = commands.add_parser("aws-setup", help="create the tables and queues (for `chalice deploy`)")
    setup.add_argument(
        "--worker-function",
        help="after `chalice deploy`: the worker's Lambda name (e.g. leadwatch-dev-worker), to turn on "
        "partial batch failure reports on its SQS event source",
    )
    args = parser.parse_args(argv)
    if args.command == "aws-setup":
        return aws_setup(args.worker_function)
    if args.command == "processes":
        return processes_command(processes)

    from leadwatch.config import ConfigError, TenantRegistry
    from leadwatch.context import tenants_dir

    directory = getattr(args, "directory", None) or args.tenants_dir or tenants_dir()
    try:
        registry = TenantRegistry.from_dir(directory, processes.tenant_model())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(f"{directory}: {len(registry)} tenant(s) valid: {', '.join(registry.ids()) or '-'}")
        return 0

    config = registry.get(args.tenant)
    if config is None:
        print(f"unknown tenant {args.tenant!r}; known: {', '.join(registry.ids())}", file=sys.stderr)
        return 2
    from leadwatch.context import Context, SqsQueue
    from leadwatch.secrets import SecretResolver
    from leadwatch.store.dynamodb import Store
    from leadwatch.store.models import bind_from_environment

    bind_from_environment()
    ctx = Context(
        registry=registry, store=Store(), queue=SqsQueue(""), secrets=SecretResolver(), processes=processes
    )
    if args.command in queries:
        return query_command(ctx, config, *queries[args.command], args)
    return violations_command(ctx, config, args)


def query_command(ctx: Any, config: Any, process: Process, query: Query, args: argparse.Namespace) -> int:
    from leadwatch.process import QueryError, resolve

    if not ctx.processes.is_running(config, process.name):
        print(f"{process.title} is off for tenant {config.tenant!r}", file=sys.stderr)
        return 2
    today = datetime.now(ctx.calendar(config).tz).date()
    try:
        result = resolve(query.run)(ctx, config, today, _query_params(query, args))
    except QueryError as exc:
        print(exc, file=sys.stderr)
        return 2 if exc.status == 400 else 1
    print(json.dumps(result.data, ensure_ascii=False, indent=2) if args.json else result.text)
    return 0


def violations_command(ctx: Any, config: Any, args: argparse.Namespace) -> int:
    tz = ctx.calendar(config).tz
    last = args.last or datetime.now(tz).date()
    first = args.first or last - timedelta(days=6)
    start = datetime.combine(first, time.min, tz)
    end = datetime.combine(last, time.max, tz)
    rows = ctx.store.violations(config.tenant, start, end)
    if args.json:
        print(
            json.dumps(
                [{**vars(r), "occurred_at": r.occurred_at.isoformat()} for r in rows],
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        for r in rows:
            print(
                f"{r.occurred_at.astimezone(tz):%Y-%m-%d %H:%M}  {r.type:<24} {r.entity:<14} {config.manager_name(r.manager)}"
            )
        print(f"{len(rows)} violation(s)")
    return 0


def processes_command(processes: Any) -> int:
    for item in processes.describe():
        print(f"{item['name']}: {item['title']}")
        if item["description"]:
            print(f"  {item['description']}")
        print(f"  tenant file section: {item['config_section']}:")
        if item["requires"]:
            print(f"  runs where these run too: {', '.join(item['requires'])}")
        print(f"  events: {', '.join(item['events']) or '-'}")
        if item["idempotent_events"]:
            print(f"  repeats change nothing (not deduped): {', '.join(item['idempotent_events'])}")
        for schedule in item["schedules"]:
            print(
                f"  schedule: {schedule['function']} every {schedule['every_minutes']} min: "
                f"{schedule['description']} (one job per tenant"
                f"{' whose wake-up time has come' if schedule['fan_out'] == 'wake' else ''})"
            )
        if item["reconciles"]:
            print("  reconciliation: feeds what its webhooks missed, with the framework's reconciliation")
        for state in item["state"]:
            indexes = f" [indexes: {', '.join(state['indexes'])}]" if state["indexes"] else ""
            print(f"  state: {state['table']}: {state['keys']}{indexes}")
        print(f"  effects: {', '.join(item['effects']) or '-'}")
        for route, command in zip(item["routes"], item["commands"], strict=True):
            print(f"  route: {route}")
            print(f"  command: {command}")
        for page in item["pages"]:
            print(f"  page: {page}")
        for permission in item["permissions"]:
            print(
                f"  permission: {permission['function']}: {', '.join(permission['actions'])} on "
                f"{permission['resource']} ({permission['why']})"
            )
        print()
    return 0


def aws_setup(worker_function: str | None) -> int:
    """What the SAM template creates, for those who deploy with plain `chalice deploy`."""
    import boto3

    from leadwatch.store.schema import create_queues, create_tables

    endpoint = os.environ.get("LEADWATCH_DYNAMODB_ENDPOINT") or None
    tables = create_tables(boto3.client("dynamodb", endpoint_url=endpoint))
    queues = create_queues(boto3.client("sqs", endpoint_url=os.environ.get("LEADWATCH_SQS_ENDPOINT") or None))
    print("tables:", ", ".join(sorted(tables.values())))
    print("queues:", ", ".join(sorted(queues.values())))
    if worker_function:
        client = boto3.client("lambda")
        mappings = client.list_event_source_mappings(FunctionName=worker_function)["EventSourceMappings"]
        if not mappings:
            print(
                f"{worker_function} has no SQS event source yet: run `chalice deploy` first", file=sys.stderr
            )
            return 2
        for mapping in mappings:
            # Without it Lambda takes the worker's partial-failure answer as full success and drops failures.
            client.update_event_source_mapping(
                UUID=mapping["UUID"], FunctionResponseTypes=["ReportBatchItemFailures"]
            )
            print(f"partial batch failures reported for {mapping['EventSourceArn']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
