"""`leadwatch`: the command line. The framework's commands, and one per process query:

  leadwatch check-config [PATH]                     validate tenant files (a file or a directory)
  leadwatch processes                               the processes and what each declares
  leadwatch violations TENANT [--from D] [--to D] [--type T]... [--manager ID] [--json | --csv]
                       [--sep S] [--out FILE]       the violation journal of every process
  leadwatch aws-setup [--worker-function NAME] [--jobs-function NAME]
                                                    tables and queues for `chalice deploy`
  leadwatch timeliness TENANT [--from D] [--to D]   per-manager on-time / late table
  leadwatch dialing TENANT [--date D] [--json]      the dialing report of a day (default today)
  leadwatch calls TENANT LEAD [--json]              a card's call attempts and touches
  leadwatch serve [--port 8000]                     the read API on this machine, for curl
  leadwatch --state out/state COMMAND ...           any command over the demo's saved state

Where it reads from is in `--help` (ENVIRONMENT): the tenant files, and the same DynamoDB tables
as the functions. A credential, connection or missing-table problem is one line on stderr and
exit code 1 (`problem_line`); a configuration problem names file, key and problem, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leadwatch.config import TenantRegistry
    from leadwatch.process import Process, Query
    from leadwatch.registry import ProcessRegistry

DEFAULT_REGION = "eu-central-1"  # as leadwatch.store.models

ENVIRONMENT = """\
environment (where the commands read):
  LEADWATCH_TENANTS_DIR         directory of tenant files (<tenant>.yaml or .yml), unless
                                --tenants-dir is given; default: config/tenants beside the
                                leadwatch package, here {tenants}
  LEADWATCH_DYNAMODB_ENDPOINT   DynamoDB endpoint URL, e.g. http://127.0.0.1:5000 for a local moto
                                server; unset: AWS's own endpoint for the region
  AWS_REGION, AWS_DEFAULT_REGION  region of the tables (default: {region})
  LEADWATCH_INBOX_TABLE, LEADWATCH_LEADS_TABLE, LEADWATCH_JOURNAL_TABLE, LEADWATCH_STATE_TABLE
                                table names (default: leadwatch-inbox, -leads, -journal, -state)
  LEADWATCH_SQS_ENDPOINT        SQS endpoint URL (aws-setup only)
  AWS credentials               boto3's usual chain: AWS_PROFILE, AWS_ACCESS_KEY_ID and
                                AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role; a local moto
                                server takes any pair (AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x)
"""

PERIOD = "default period: the seven days ending today (in the tenant's time zone)"


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2025-11-05") from None


def _wrap(text: str) -> str:
    # The help's epilog is preformatted (RawDescriptionHelpFormatter), so descriptions are wrapped here.
    return textwrap.fill(text, 80)


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def _tenants_dir(args: argparse.Namespace) -> tuple[Path, str]:
    """The tenant directory the command reads, and what chose it (for messages)."""
    from leadwatch.context import tenants_dir

    given = getattr(args, "tenants_dir", None)  # absent unless given (SUPPRESS, see build_parser)
    if given:
        return given, "--tenants-dir"
    if os.environ.get("LEADWATCH_TENANTS_DIR"):
        return tenants_dir(), "LEADWATCH_TENANTS_DIR"
    return tenants_dir(), "the default; set --tenants-dir or LEADWATCH_TENANTS_DIR"


def _tenant_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "tenant", help="tenant id: the name of its file in the tenant directory, without .yaml / .yml"
    )


def _add_query(commands: Any, query: Query, common: list[argparse.ArgumentParser], epilog: str) -> None:
    has_period = any(param.name in ("from", "to") for param in query.params)
    sub = commands.add_parser(
        query.name,
        help=query.help,
        description=_wrap(f"{query.help}; {PERIOD}." if has_period else f"{query.help}."),
        parents=common,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _tenant_arg(sub)
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
                metavar="YYYY-MM-DD" if param.kind == "date" else param.name.upper(),
                help=param.help,
            )
    sub.add_argument("--json", action="store_true", help="print the API's JSON answer instead of text")


def _query_params(query: Query, args: argparse.Namespace) -> dict[str, str]:
    params: dict[str, str] = {}
    for param in query.params:
        value = getattr(args, param.name if param.in_path else f"param_{param.name}", None)
        if value not in (None, False):
            params[param.name] = value.isoformat() if isinstance(value, date) else str(value)
    return params


def build_parser(processes: ProcessRegistry) -> argparse.ArgumentParser:
    """The command line's parser: every argument of every command carries its help (a test holds it)."""
    from leadwatch.context import tenants_dir

    epilog = ENVIRONMENT.format(tenants=tenants_dir(), region=DEFAULT_REGION)
    # --tenants-dir goes before or after the command; SUPPRESS keeps a command's parser from
    # overwriting a value given before the command with its own default.
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--tenants-dir",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="directory of tenant files (default: $LEADWATCH_TENANTS_DIR, else config/tenants)",
    )
    where.add_argument(
        "--state",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="read a state saved by the demo (out/state) instead of DynamoDB: its tables are loaded "
        "into an in-process moto, its tenant files are the tenant directory",
    )
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="leadwatch",
        description="leadwatch command line: check tenant files, read what the control processes recorded",
        epilog=epilog,
        formatter_class=raw,
        parents=[where],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    check = commands.add_parser(
        "check-config",
        help="validate tenant files",
        description=_wrap(
            "Validate tenant files; every problem names the file, the key and what is wrong, and "
            "every file is checked whatever the others hold. Exit code 0: every file is valid; "
            "2: a problem, or no tenant file at all."
        ),
        parents=[where],
        epilog=epilog,
        formatter_class=raw,
    )
    check.add_argument(
        "path",
        nargs="?",
        type=Path,
        help="a tenant file (<tenant>.yaml or .yml) or a directory of them "
        "(default: the tenant directory, see --tenants-dir)",
    )
    commands.add_parser(
        "processes",
        help="the control processes: events, schedules, state, routes, permissions",
        description="The control processes this deployment registers, and what each declares.",
    )
    types = ", ".join(sorted(t.name for _, t in processes.violation_types()))
    violations = commands.add_parser(
        "violations",
        help="the violation journal of every process",
        description=_wrap(
            f"The violation journal of every process, oldest first; {PERIOD}. Times are ISO 8601 "
            "in the tenant's time zone, with its UTC offset. --csv writes what a spreadsheet opens: "
            "UTF-8 with a byte order mark, a header row, one row per violation."
        ),
        parents=[where],
        epilog=epilog,
        formatter_class=raw,
    )
    _tenant_arg(violations)
    violations.add_argument(
        "--from",
        dest="first",
        type=_day,
        metavar="YYYY-MM-DD",
        help="first day (default: six days before --to)",
    )
    violations.add_argument(
        "--to",
        dest="last",
        type=_day,
        metavar="YYYY-MM-DD",
        help="last day (default: today in the tenant's time zone)",
    )
    violations.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="TYPE",
        help=f"only this type; repeat it (or separate with commas) for several; types: {types}",
    )
    violations.add_argument(
        "--manager", metavar="ID", help="only this manager's rows: the CRM user id (as in --json's manager)"
    )
    output = violations.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="print the read API's JSON answer instead of a table"
    )
    output.add_argument(
        "--csv",
        action="store_true",
        help="write CSV: columns when, type, card, card_link, manager_id, manager_name, details (JSON)",
    )
    violations.add_argument(
        "--sep",
        choices=("comma", "semicolon", "tab"),
        help="the CSV's separator (default comma; semicolon for an Excel whose list separator is ';')",
    )
    violations.add_argument(
        "--out", type=Path, metavar="FILE", help="write to FILE instead of standard output"
    )
    for _, query in processes.queries():
        _add_query(commands, query, [where], epilog)
    setup = commands.add_parser(
        "aws-setup",
        help="create the tables and queues (for `chalice deploy`)",
        description=_wrap(
            "Create (or complete) the DynamoDB tables and SQS queues; running it again changes "
            "nothing that is already there."
        ),
        epilog=epilog,
        formatter_class=raw,
    )
    setup.add_argument(
        "--worker-function",
        metavar="NAME",
        help="after `chalice deploy`: the worker's Lambda name (e.g. leadwatch-dev-worker), to turn on "
        "partial batch failure reports on its SQS event source",
    )
    setup.add_argument(
        "--jobs-function",
        metavar="NAME",
        help="after `chalice deploy`: the jobs Lambda's name (e.g. leadwatch-dev-jobs), to give its "
        "asynchronous invocations the stack's retry, maximum age and dead-letter queue",
    )
    serve = commands.add_parser(
        "serve",
        help="serve the read API on this machine (for curl), e.g. over the demo's --state",
        description=_wrap(
            "Serve the read API (every process's GET route, with its X-Api-Key) on this machine "
            "until Ctrl-C, over the same tables and tenant files as the other commands. Webhooks "
            "are not taken: it only reads. With --state it prints each tenant's API key."
        ),
        parents=[where],
        epilog=epilog,
        formatter_class=raw,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `leadwatch ... | head`: the reader has what it wanted; no traceback on the way out.
        # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        line = problem_line(exc)
        if line is None:
            raise
        print(f"leadwatch: {line}", file=sys.stderr)
        return 1


def _main(argv: list[str] | None) -> int:
    from leadwatch.registry import default_registry

    processes = default_registry()
    args = build_parser(processes).parse_args(argv)
    if args.command == "aws-setup":
        return aws_setup(args.worker_function, args.jobs_function)
    if args.command == "processes":
        return processes_command(processes)

    state = getattr(args, "state", None)
    if state is not None:
        from leadwatch.testing.snapshot import StateError, open_state

        try:
            with open_state(state) as state_tenants:
                if not getattr(args, "tenants_dir", None):
                    args.tenants_dir = state_tenants
                return _run(args, processes, state=True)
        except StateError as exc:
            print(f"leadwatch: {exc}", file=sys.stderr)
            return 2
    return _run(args, processes, state=False)


def _run(args: argparse.Namespace, processes: ProcessRegistry, *, state: bool) -> int:
    from leadwatch.config import ConfigError, TenantRegistry

    directory, chosen_by = _tenants_dir(args)
    if args.command == "check-config":
        return check_config(args.path or directory, processes)
    try:
        registry = TenantRegistry.from_dir(directory, processes.tenant_model())
    except ConfigError as exc:
        print(f"{exc}\n(tenant directory from {chosen_by})", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve_command(registry, processes, args.host, args.port, show_keys=state)

    config = registry.get(args.tenant)
    if config is None:
        known = ", ".join(registry.ids()) or "none (no <tenant>.yaml or .yml file there)"
        print(
            f"leadwatch: unknown tenant {args.tenant!r}: no {args.tenant}.yaml or {args.tenant}.yml in "
            f"{directory} ({chosen_by}); tenants there: {known}",
            file=sys.stderr,
        )
        return 2
    from leadwatch.context import Context, SqsQueue
    from leadwatch.secrets import SecretResolver
    from leadwatch.store.dynamodb import Store
    from leadwatch.store.models import bind_from_environment

    bind_from_environment()
    ctx = Context(
        registry=registry, store=Store(), queue=SqsQueue(""), secrets=SecretResolver(), processes=processes
    )
    queries = {query.name: (process, query) for process, query in processes.queries()}
    if args.command in queries:
        return query_command(ctx, config, *queries[args.command], args)
    return violations_command(ctx, config, args)


def serve_command(
    registry: TenantRegistry, processes: ProcessRegistry, host: str, port: int, *, show_keys: bool
) -> int:
    # The app lives with the Lambda glue (functions/); the testing kit builds it, as the local stack does.
    from leadwatch.testing.serve import serve_read_api

    return serve_read_api(registry, processes, host, port, show_keys=show_keys)


def check_config(path: Path, processes: ProcessRegistry) -> int:
    """Every tenant file at `path` checked, each problem on stderr, the valid ones on stdout."""
    from leadwatch.config import scan_tenants

    found = scan_tenants(path, processes.tenant_model())
    for problem in found.problems:
        print(problem, file=sys.stderr)
    if not found.files and not found.problems:
        print(f"{path}: no tenant files (<tenant>.yaml or <tenant>.yml) here", file=sys.stderr)
        return 2
    valid = ", ".join(sorted(found.tenants)) or "-"
    if found.problems and found.files:
        print(f"{path}: {len(found.tenants)} of {len(found.files)} tenant file(s) valid: {valid}")
    if found.problems:
        return 2
    print(f"{path}: {len(found.tenants)} tenant(s) valid: {valid}")
    return 0


def problem_line(exc: BaseException) -> str | None:
    """One line for a credential, connection, region or missing-table problem met on the way to
    AWS (None for anything else: a bug keeps its traceback). PynamoDB wraps botocore's errors in
    its own (`cause`), as the secrets reader does in SecretMissing (`__cause__`)."""
    from botocore import exceptions as aws

    from leadwatch.secrets import SecretMissing

    endpoint = os.environ.get("LEADWATCH_DYNAMODB_ENDPOINT") or None
    where = endpoint or f"AWS in {_region()}"
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, aws.NoCredentialsError | aws.PartialCredentialsError):
            local = " (a local moto server takes any pair)" if endpoint else ""
            return (
                f"no AWS credentials ({current}): set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY{local}"
            )
        if isinstance(current, aws.ProfileNotFound):
            return f"{current}: set AWS_PROFILE to a profile of ~/.aws/config, or unset it"
        if isinstance(current, aws.NoRegionError):
            return "no AWS region: set AWS_DEFAULT_REGION (e.g. eu-central-1)"
        if isinstance(current, aws.EndpointConnectionError | aws.ConnectionClosedError):
            return _unreachable(current)
        if isinstance(current, aws.ConnectTimeoutError | aws.ReadTimeoutError):
            return f"DynamoDB at {where} did not answer in time ({current})"
        if isinstance(current, aws.ClientError):
            return _client_error(current, where)
        if isinstance(current, SecretMissing):
            return str(current)
        if isinstance(current, ValueError) and str(current).startswith("Invalid endpoint"):
            return f"{current}: LEADWATCH_DYNAMODB_ENDPOINT must be a URL like http://127.0.0.1:5000"
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    return None


def _unreachable(error: Any) -> str:
    url = str(getattr(error, "kwargs", {}).get("endpoint_url") or "")
    for variable in ("LEADWATCH_DYNAMODB_ENDPOINT", "LEADWATCH_SQS_ENDPOINT"):
        configured = os.environ.get(variable)
        if configured and url.startswith(configured.rstrip("/")):
            return f"cannot connect to {configured} ({variable}): is the local server running there?"
    return (
        f"cannot connect to {url or 'AWS'}: check the network and the region (AWS_DEFAULT_REGION={_region()})"
    )


_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
}


def _client_error(error: Any, where: str) -> str:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", "") or str(error)
    if code == "ResourceNotFoundException":
        missing = _missing_tables(where)
        return f"{missing} at {where}: create them with `leadwatch aws-setup` (or deploy the stack)"
    if code in _BAD_CREDENTIALS:
        return f"AWS refused the credentials ({code}: {message}): check AWS_PROFILE or AWS_ACCESS_KEY_ID"
    if code in ("AccessDeniedException", "AccessDenied"):
        return f"not allowed by AWS ({message})"
    return f"DynamoDB at {where} answered {code or 'an error'}: {message}"


def _missing_tables(where: str) -> str:
    """Which of the tables leadwatch reads are missing, asked once more (all of them when even
    that fails)."""
    from leadwatch.store.models import MODELS

    wanted = sorted({model.Meta.table_name for model in MODELS})
    try:
        import boto3

        client = boto3.client(
            "dynamodb",
            endpoint_url=os.environ.get("LEADWATCH_DYNAMODB_ENDPOINT") or None,
            region_name=_region(),
        )
        present = set(client.list_tables()["TableNames"])
    except Exception:
        return f"a table leadwatch reads does not exist (one of {', '.join(wanted)})"
    missing = [name for name in wanted if name not in present] or wanted
    return f"table{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found"


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
    from leadwatch import journal
    from leadwatch.process import QueryError

    if args.sep and not args.csv:
        print("leadwatch: --sep goes with --csv", file=sys.stderr)
        return 2
    tz = ctx.calendar(config).tz
    params = {
        "from": args.first.isoformat() if args.first else "",
        "to": args.last.isoformat() if args.last else "",
        "type": ",".join(args.types or ()),
        "manager": args.manager or "",
    }
    try:
        query = journal.parse_query(params, datetime.now(tz).date(), journal.known_types(ctx))
    except QueryError as exc:
        print(f"leadwatch: {exc}", file=sys.stderr)
        return 2
    found = journal.read(ctx, config, query)
    if args.csv:
        body = journal.as_csv(found, journal.SEPARATORS[args.sep or "comma"]).encode("utf-8")
    elif args.json:
        data = journal.as_data(config, query, found, str(tz))
        body = (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8")
    else:
        body = (journal.as_text(found) + "\n").encode("utf-8")
    if args.out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
        return 0
    try:
        args.out.write_bytes(body)
    except OSError as exc:
        print(f"leadwatch: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"{len(found)} violation(s) from {query.first} to {query.last} written to {args.out}")
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
        for kind in item["violation_types"]:
            print(f"  journal type: {kind['name']}: {kind['help']}")
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


def aws_setup(worker_function: str | None, jobs_function: str | None = None) -> int:
    """What the SAM template creates, for those who deploy with plain `chalice deploy`."""
    import boto3

    from leadwatch.store.schema import create_queues, create_tables

    endpoint = os.environ.get("LEADWATCH_DYNAMODB_ENDPOINT") or None
    region = _region()
    tables = create_tables(boto3.client("dynamodb", endpoint_url=endpoint, region_name=region))
    sqs = boto3.client(
        "sqs", endpoint_url=os.environ.get("LEADWATCH_SQS_ENDPOINT") or None, region_name=region
    )
    queues = create_queues(sqs)
    print("tables:", ", ".join(sorted(tables.values())))
    print("queues:", ", ".join(sorted(queues.values())))
    if jobs_function:
        from leadwatch.infra import DEAD_LETTERS, JOBS_MAX_EVENT_AGE_S, JOBS_RETRIES

        dlq = sqs.get_queue_attributes(QueueUrl=queues[DEAD_LETTERS], AttributeNames=["QueueArn"])
        # As the stack's JobsEventInvokeConfig (the function's role may send to the queue: leadwatch.iam).
        boto3.client("lambda", region_name=region).put_function_event_invoke_config(
            FunctionName=jobs_function,
            MaximumRetryAttempts=JOBS_RETRIES,
            MaximumEventAgeInSeconds=JOBS_MAX_EVENT_AGE_S,
            DestinationConfig={"OnFailure": {"Destination": dlq["Attributes"]["QueueArn"]}},
        )
        print(f"{jobs_function}: failed jobs go to {queues[DEAD_LETTERS]}")
    if worker_function:
        client = boto3.client("lambda", region_name=region)
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
