"""Reading a query's parameters the same way for the read API and the CLI: each mistake is a
`QueryError` whose message names the parameter and quotes (a bounded part of) what was given."""

from __future__ import annotations

from datetime import date, timedelta

from leadwatch.events import EntityRef, EntityType
from leadwatch.process import QueryError

MAX_RANGE = timedelta(days=366)
DEFAULT_DAYS = 6
# Echoed input is clipped so an error answer stays small whatever the caller sent.
ECHO_CHARS = 64


def echo(value: str) -> str:
    return repr(value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "...")


def day(params: dict[str, str], name: str, default: date) -> date:
    value = params.get(name)
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise QueryError(f"'{name}' must be a date like 2025-11-05, got {echo(value)}") from None


def _days_before(moment: date, days: int) -> date:
    try:
        return moment - timedelta(days=days)
    except OverflowError:  # `to=0001-01-03`: the default week cannot start before year 1
        return date.min


def period(params: dict[str, str], today: date) -> tuple[date, date]:
    """`from` .. `to` (default: the week up to today), at most MAX_RANGE long."""
    last = day(params, "to", today)
    first = day(params, "from", _days_before(last, DEFAULT_DAYS))
    if first > last:
        raise QueryError(f"'from' ({first}) is after 'to' ({last})")
    if last - first > MAX_RANGE:
        raise QueryError(f"ask for at most {MAX_RANGE.days} days at once")
    return first, last


def card(text: str) -> EntityRef:
    """`42` is lead 42; `deal:42` (or `lead:42`) names the card type."""
    kind, _, ident = text.rpartition(":")
    if not ident.isdigit() or len(ident) > 20 or int(ident) == 0:
        raise QueryError(
            f"a card id is a positive number, optionally 'deal:' or 'lead:' first; got {echo(text)}"
        )
    try:
        return EntityRef(EntityType(kind or "lead"), str(int(ident)))
    except ValueError:
        raise QueryError(f"unknown card type in {echo(text)}: use 'lead:' or 'deal:'") from None
