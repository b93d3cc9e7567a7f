"""The violation journal, read through one interface for every process: the read API's
`GET /tenants/{tenant}/violations` (functions.api) and `leadwatch violations` (leadwatch.cli).

A row (`Entry`) is what a process recorded (`RecordViolation`) or the framework did (`gave_up`,
`unconfirmed_message`): its type, the tenant, the card, the manager, when it happened (in the
tenant's time zone), the details the process recorded, and a link to the card in the CRM, built
by the tenant's adapter (`card_url`) from its configuration alone: no CRM request. A row whose
subject is no card (a Telegram chat, for a message) has no link.

Filters: the period (the days `from`..`to` in the tenant's time zone; default the seven days
ending today, at most `leadwatch.params.MAX_RANGE`), the type (one or several, each one the
framework or a registered process declares: `Process.violation_types`), the manager (a CRM user
id; rows without a manager never match). The type and manager filters run in the store, over
the period's rows (leadwatch.store.interface: `violations`), so they cost what the period costs.

CSV (`format=csv`, `--csv`): UTF-8 with a byte order mark (so Excel reads it as UTF-8), a header
row, one row per violation, quoted by the csv module (commas, quotes and line breaks in a value
stay in their cell), CRLF line ends. Times are ISO 8601 in the tenant's time zone with its UTC
offset (`2025-11-11T10:15:00+03:00`): the local time a head expects, and unambiguous. Details are
the recorded JSON. A cell that a spreadsheet would take for a formula (=, +, -, @ first) gets a
leading apostrophe: a name from the CRM must not run as a formula.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from typing import TYPE_CHECKING, Any

from leadwatch.params import echo, period
from leadwatch.process import QueryError, RouteResponse, ViolationType

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context
    from leadwatch.store.dynamodb import JournalRow

# The rows the framework writes itself (leadwatch.store.ledger's UNCONFIRMED_TYPE and
# GAVE_UP_TYPE; a unit test holds them equal: importing the ledger here would load PynamoDB
# wherever the registry is built).
FRAMEWORK_TYPES = (
    ViolationType("gave_up", "work leadwatch closed undone (a deleted card, a refused write), with why"),
    ViolationType("unconfirmed_message", "a Telegram message sent without an answer: it may be missing"),
)

# The read API answers at most this many rows, in at most this many bytes: Lambda's answer to API
# Gateway may hold 6 MB. A longer journal is asked for in parts, or read with the CLI.
MAX_API_ROWS = 5000
MAX_API_BYTES = 5 * 1024 * 1024

CSV_COLUMNS = ("when", "type", "card", "card_link", "manager_id", "manager_name", "details")
BOM = "\ufeff"
# `sep` of the CSV: a comma by default; Excel set to a locale whose list separator is ";" (Russian,
# German) splits columns on ";" when it opens a file by double click.
SEPARATORS = {"comma": ",", ",": ",", "semicolon": ";", ";": ";", "tab": "\t"}
FORMATS = ("json", "csv")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_MANAGER = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


@dataclass(frozen=True)
class JournalQuery:
    """What is asked of the journal: the days first..last (the tenant's), the types (none: all),
    the manager (None: all)."""

    first: date
    last: date
    types: tuple[str, ...] = ()
    manager: str | None = None


@dataclass(frozen=True)
class Entry:
    id: str
    type: str
    tenant: str
    card: str  # the card's key (`lead:42`, `deal:7`), or what stands for it (`telegram:<chat>`)
    manager: str | None
    manager_name: str | None
    when: datetime  # in the tenant's time zone
    details: dict[str, Any]
    link: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "tenant": self.tenant,
            "card": self.card,
            "manager": self.manager,
            "manager_name": self.manager_name,
            "when": iso(self.when),
            "details": self.details,
            "link": self.link,
        }


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def known_types(ctx: Context) -> list[str]:
    return sorted(t.name for _, t in ctx.processes.violation_types())


def parse_query(params: Mapping[str, str], today: date, known: Collection[str]) -> JournalQuery:
    """The filters of a request (API) or command line; `QueryError` names what is wrong. An empty
    parameter counts as absent (a form left blank); `type` may list several, comma-separated."""
    given = {name: value for name, value in params.items() if value != ""}
    first, last = period(given, today)
    types: list[str] = []
    for name in (part.strip() for part in given.get("type", "").split(",")):
        if not name:
            continue
        if name not in known:
            raise QueryError(f"unknown violation type {echo(name)}; known types: {', '.join(sorted(known))}")
        if name not in types:
            types.append(name)
    manager = given.get("manager")
    if manager is not None and not (_MANAGER.fullmatch(manager) and _encodes(manager)):
        raise QueryError(f"'manager' must be a CRM user id (at most 64 characters), got {echo(manager)}")
    return JournalQuery(first, last, tuple(types), manager)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no store can compare it
        return False
    return True


def bounds(first: date, last: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """The period's first and last moment in UTC; days at the ends of the calendar are clamped
    (0001-01-01 in a zone ahead of UTC starts before year 1)."""
    return (
        _utc(datetime.combine(first, time.min, tz), datetime.min),
        _utc(datetime.combine(last, time.max, tz), datetime.max),
    )


def _utc(moment: datetime, fallback: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return fallback.replace(tzinfo=UTC)


def _local(moment: datetime, tz: tzinfo) -> datetime:
    try:
        return moment.astimezone(tz)
    except OverflowError:
        return moment


def read(ctx: Context, config: TenantConfig, query: JournalQuery, limit: int | None = None) -> list[Entry]:
    """The rows asked for, oldest first (at most `limit`), with names and links."""
    tz = ctx.calendar(config).tz
    start, end = bounds(query.first, query.last, tz)
    rows = ctx.store.violations(
        config.tenant, start, end, type=query.types or None, manager=query.manager, limit=limit
    )
    return entries(ctx, config, rows, tz)


def entries(ctx: Context, config: TenantConfig, rows: Iterable[JournalRow], tz: tzinfo) -> list[Entry]:
    names = ctx.names(config)
    found: dict[str, str] = {}
    links: dict[str, str | None] = {}
    result = []
    for row in rows:
        if row.manager and row.manager not in found:
            found[row.manager] = names.manager(row.manager)
        if row.entity not in links:
            links[row.entity] = card_link(ctx, config, row.entity)
        result.append(
            Entry(
                id=row.violation_id,
                type=row.type,
                tenant=config.tenant,
                card=row.entity,
                manager=row.manager,
                manager_name=found[row.manager] if row.manager else None,
                when=_local(row.occurred_at, tz),
                details=row.details,
                link=links[row.entity],
            )
        )
    return result


def card_link(ctx: Context, config: TenantConfig, key: str) -> str | None:
    """The card's URL in the CRM (the adapter builds it from the tenant's configuration), or None
    when `key` names no card."""
    from leadwatch.events import EntityRef

    try:
        entity = EntityRef.parse(key)
    except ValueError:
        return None
    if not entity.id.isdigit():
        return None
    return ctx.adapter(config).card_url(entity)


def as_data(config: TenantConfig, query: JournalQuery, found: list[Entry], zone: str) -> dict[str, Any]:
    """The JSON answer (API and `--json`)."""
    return {
        "tenant": config.tenant,
        "from": query.first.isoformat(),
        "to": query.last.isoformat(),
        "time_zone": zone,
        "types": list(query.types),
        "manager": query.manager,
        "count": len(found),
        "by_type": dict(sorted(Counter(e.type for e in found).items())),
        "violations": [e.to_dict() for e in found],
    }


def _cell(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA) else value


def as_csv(found: Iterable[Entry], sep: str = ",") -> str:
    """The CSV text, BOM first (see the module docstring); encode it as UTF-8."""
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out, delimiter=sep, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in found:
        details = json.dumps(e.details, ensure_ascii=False, default=str) if e.details else ""
        writer.writerow(
            [_cell(v) for v in (iso(e.when), e.type, e.card, e.link, e.manager, e.manager_name, details)]
        )
    return out.getvalue()


def as_text(found: list[Entry]) -> str:
    lines = [
        f"{e.when:%Y-%m-%d %H:%M}  {e.type:<24} {e.card:<14} {e.manager_name or '-'}"
        + (f"  {e.link}" if e.link else "")
        for e in found
    ]
    return "\n".join([*lines, f"{len(found)} violation(s)"])


def separator(params: Mapping[str, str]) -> str:
    value = params.get("sep") or "comma"
    if value not in SEPARATORS:
        raise QueryError(f"'sep' must be comma, semicolon or tab, got {echo(value)}")
    return SEPARATORS[value]


def csv_filename(config: TenantConfig, query: JournalQuery) -> str:
    return f"violations-{config.tenant}-{query.first.isoformat()}-{query.last.isoformat()}.csv"


def answer(ctx: Context, config: TenantConfig, today: date, params: Mapping[str, str]) -> RouteResponse:
    """The read API's answer: JSON, or CSV with `format=csv` (`sep` chooses its separator)."""
    fmt = params.get("format") or "json"
    if fmt not in FORMATS:
        raise QueryError(f"'format' must be json or csv, got {echo(fmt)}")
    sep = separator(params)
    query = parse_query(params, today, known_types(ctx))
    found = read(ctx, config, query, limit=MAX_API_ROWS + 1)
    if len(found) > MAX_API_ROWS:
        raise QueryError(_too_much(query, f"more than {MAX_API_ROWS} violations"))
    if fmt == "csv":
        body = as_csv(found, sep)
        response = RouteResponse(
            body,
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{csv_filename(config, query)}"'},
        )
    else:
        zone = str(ctx.calendar(config).tz)
        body = json.dumps(as_data(config, query, found, zone), ensure_ascii=False)
        response = RouteResponse(body, content_type="application/json")
    size = len(body.encode("utf-8"))
    if size > MAX_API_BYTES:
        raise QueryError(_too_much(query, f"{size / 1024 / 1024:.1f} MB of violations"))
    return response


def _too_much(query: JournalQuery, what: str) -> str:
    return (
        f"{what} from {query.first} to {query.last}, more than the read API answers at once: ask for "
        "a shorter period, a type or a manager (`leadwatch violations` has no such limit)"
    )
