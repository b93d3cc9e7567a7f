"""`leadwatch`: the command line.

  leadwatch check-config [DIR]                      validate tenant files
  leadwatch timeliness TENANT [--from D] [--to D]   per-manager on-time / late table
  leadwatch violations TENANT [--from D] [--to D]   the violation journal
  leadwatch dialing TENANT [--date D] [--json]      the dialing report of a day (default today)
  leadwatch calls TENANT LEAD [--json]              a card's call attempts and touches
  leadwatch aws-setup [--worker-function NAME]      tables and queues for `chalice deploy`

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


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2025-11-05") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leadwatch", description="leadwatch command line")
    parser.add_argument("--tenants-dir", type=Path, help="tenant YAML directory (default: config/tenants)")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check-config", help="validate tenant files")
    check.add_argument("directory", nargs="?", type=Path)
    for name, help_text in (
        ("timeliness", "per-manager timeliness"),
        ("violations", "the violation journal"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("tenant")
        sub.add_argument("--from", dest="first", type=_day)
        sub.add_argument("--to", dest="last", type=_day)
        sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    report = commands.add_parser("dialing", help="the dialing report of a day")
    report.add_argument("tenant")
    report.add_argument("--date", dest="day", type=_day, help="default: today in the tenant's time zone")
    report.add_argument("--json", action="store_true")
    calls = commands.add_parser("calls", help="a card's call attempts and touches")
    calls.add_argument("tenant")
    calls.add_argument("lead", help="lead id, or deal:ID")
    calls.add_argument("--json", action="store_true")
    setup = commands.add_parser("aws-setup", help="create the tables and queues (for `chalice deploy`)")
    setup.add_argument(
        "--worker-function",
        help="after `chalice deploy`: the worker's Lambda name (e.g. leadwatch-dev-worker), to turn on "
        "partial batch failure reports on its SQS event source",
    )
    args = parser.parse_args(argv)
    if args.command == "aws-setup":
        return aws_setup(args.worker_function)

    from leadwatch.config import ConfigError, TenantRegistry
    from leadwatch.context import tenants_dir

    directory = getattr(args, "directory", None) or args.tenants_dir or tenants_dir()
    try:
        registry = TenantRegistry.from_dir(directory)
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
    ctx = Context(registry=registry, store=Store(), queue=SqsQueue(""), secrets=SecretResolver())
    if args.command == "dialing":
        return dialing_command(ctx, config, args.day, args.json)
    if args.command == "calls":
        return calls_command(ctx, config, args.lead, args.json)
    last = args.last or datetime.now(ctx.calendar(config).tz).date()
    first = args.first or last - timedelta(days=6)
    if args.command == "timeliness":
        from workflows.timeliness.queries import format_table, timeliness_by_manager

        rows = timeliness_by_manager(ctx, config, first, last)
        if args.json:
            print(json.dumps([r.to_dict() for r in rows], ensure_ascii=False, indent=2))
        else:
            print(format_table(rows, f"Timeliness, {config.tenant}, {first} .. {last}"))
        return 0
    tz = ctx.calendar(config).tz
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


def dialing_command(ctx, config, day: date | None, as_json: bool) -> int:
    import html
    import re

    from workflows.dialing.report import daily_report, report_text

    day = day or datetime.now(ctx.calendar(config).tz).date()
    report = daily_report(ctx, config, day)
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return 0
    text = report_text(ctx, config, report)
    # The Telegram text, read in a terminal: links become "title <url>", the rest loses its tags.
    text = re.sub(r'<a href="([^"]*)">(.*?)</a>', lambda m: f"{m.group(2)} <{m.group(1)}>", text)
    print(html.unescape(re.sub(r"</?[a-z]+>", "", text)))
    if not report.working_day:
        print(f"({day} is not a working day: no plan day, no report is sent)")
    return 0


def calls_command(ctx, config, lead: str, as_json: bool) -> int:
    from leadwatch.events import EntityRef, EntityType

    kind, _, ident = lead.rpartition(":")
    try:
        entity = EntityRef(EntityType(kind or "lead"), ident)
    except ValueError:
        print(f"{lead!r}: give a lead id, or deal:ID", file=sys.stderr)
        return 2
    state = ctx.store.get_lead(config.tenant, entity)
    if state is None:
        print(f"leadwatch holds no card {entity.key} for {config.tenant}", file=sys.stderr)
        return 1
    calls = ctx.store.calls_of(config.tenant, entity)
    rules = ctx.dialing_rules(config)
    tz = ctx.calendar(config).tz
    if as_json:
        print(
            json.dumps(
                [{**vars(c), "entity": entity.key, "started_at": c.started_at.isoformat()} for c in calls],
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    print(f"{entity.key} {state.title!r}, {config.manager_name(state.responsible)}, stage {state.stage}")
    for call in calls:
        touch = "touch" if rules.is_touch(call) else ""
        print(
            f"  {call.started_at.astimezone(tz):%Y-%m-%d %H:%M}  {call.direction:<3} {call.duration:>5}s  "
            f"{config.manager_name(call.manager):<20} {touch:<5} {call.record_url or ''}"
        )
    print(f"{state.call_attempts} attempt(s), {state.call_touches} successful touch(es)")
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
