"""The CRM's names as the store keeps them (leadwatch.names reads and refreshes them): one list
per tenant and kind ("users": user id -> name; "stages": stage key -> name, with the stage's
pipeline name), so a cold container reads one item instead of the CRM.

One item must stay under DynamoDB's 400 KB: a list is kept as JSON of at most MAX_BYTES (UTF-8),
each name cut to MAX_NAME_CHARS. That holds about 8,000 users of typical names ("9120031":
"Анна Петрова" is 40 bytes) and 1,600 at the longest; past the bound the entries first in the
CRM's order are kept (adapters list active users first) and the list says it was `truncated`.
Both stores use what is here, so what a caller reads back is the same on either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

MAX_BYTES = 350_000
MAX_NAME_CHARS = 100
# How long a stored list outlives its read (DynamoDB TTL): stale names still beat ids while the
# CRM cannot be read, and a tenant gone from the deployment leaves nothing behind for long.
KEEP = timedelta(days=90)
USERS, STAGES = "users", "stages"


@dataclass(frozen=True)
class NameList:
    """One kind of name as read from the CRM at `read_at`. `pipelines`: for stages, the stage
    key -> its pipeline's name, where it has one."""

    names: dict[str, str]
    read_at: datetime
    pipelines: dict[str, str] = field(default_factory=dict)
    truncated: bool = False


def _cut(text: str) -> str:
    return text if len(text) <= MAX_NAME_CHARS else text[: MAX_NAME_CHARS - 1] + "…"


def _cost(key: str, value: str) -> int:
    """Bytes one entry adds to the JSON object it sits in (quotes, colon and comma included)."""
    return (
        len(json.dumps(key, ensure_ascii=False).encode())
        + len(json.dumps(value, ensure_ascii=False).encode())
        + 2
    )


def bounded(listed: NameList) -> NameList:
    """The list as it is kept: names cut to MAX_NAME_CHARS, then entries (each with its pipeline)
    in order while the JSON stays within MAX_BYTES."""
    names: dict[str, str] = {}
    pipelines: dict[str, str] = {}
    size = len(b'{"n":{},"p":{}}')
    truncated = listed.truncated
    for key, name in listed.names.items():
        short = _cut(name)
        pipeline = listed.pipelines.get(key)
        cost = _cost(key, short) + (_cost(key, _cut(pipeline)) if pipeline is not None else 0)
        if size + cost > MAX_BYTES:
            truncated = True
            break
        size += cost
        names[key] = short
        if pipeline is not None:
            pipelines[key] = _cut(pipeline)
    return NameList(names, listed.read_at, pipelines, truncated)


def dump(listed: NameList) -> str:
    """The JSON a bounded list is stored as."""
    return json.dumps({"n": listed.names, "p": listed.pipelines}, ensure_ascii=False, separators=(",", ":"))


def load(text: str, read_at: datetime, truncated: bool) -> NameList:
    data = json.loads(text) if text else {}
    names = data.get("n") if isinstance(data, dict) else None
    pipelines = data.get("p") if isinstance(data, dict) else None
    return NameList(_strings(names), read_at, _strings(pipelines), truncated)


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}
