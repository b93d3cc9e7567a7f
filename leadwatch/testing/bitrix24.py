"""A fake Bitrix24 portal: the incoming-webhook REST API and the outbound CRM events.

It speaks the wire formats of the real portal (verified against Bitrix24's REST
documentation, the bitrix24/b24restdocs repository): REST at
`/rest/{user}/{code}/{method}[.json]` with GET query strings, JSON or form
bodies; the `{"result", "time"}` envelope; list pages of 50 with `total` and
`next`; `batch` with its PHP-style empty `[]` members; every number a string
and every date `YYYY-MM-DDThh:mm:ss+03:00`; the per-portal leaky bucket (503
QUERY_LIMIT_EXCEEDED). Changes made through the Python API (`create_lead`,
`update_lead`, `add_activity`, `add_call`, ...) emit the outbound event as the real
form-encoded body and hand it to `self.deliver`; so do REST writes (`emit_on_rest_writes`, on by
default), as a real portal sends its events for changes an integration makes too.

Telephony: `add_call` records a finished call as a real portal does (a call activity, a
`voximplant.statistic.get` row, then ONCRMACTIVITYADD and the flat-`data` ONVOXIMPLANTCALLEND).

Names: `user.get` (user-get.md: pages of 50 by `start`, `total`, ACTIVE a JSON boolean, fired
employees listed unless FILTER[ACTIVE]; 403 insufficient_scope for a webhook without a `user*`
scope, `user_scope=False`), `crm.category.list` (crm-category-list.md: `{"categories": [{id, name,
sort, entityTypeId, isDefault}]}` for entityTypeId 2) and `crm.status.list` over the lead statuses
(STATUS) and each deal category's stages (DEAL_STAGE, DEAL_STAGE_<id> with ids "C<id>:..."). Tests
set them with `set_users` / `add_user`, `add_deal_category` and `rename_stage`; `reset` brings back
the portal's defaults (one admin, the general category).

Quality control (b24restdocs tasks/, crm/timeline/comments/): `tasks.task.add` (TITLE and
RESPONSIBLE_ID, an existing user, required; UF_CRM_TASK "L_<id>" / "D_<id>" bindings kept as sent;
`result.task` of camelCase fields), `tasks.task.complete` (400 `"0"` "Action on the task is not
allowed" for a missing task and for one already completed), `tasks.task.list` (`result.tasks`),
`task.commentitem.add` (a missing task gets ERROR_CORE ...ACTION_NOT_ALLOWED, as the comment
methods document it) and `crm.timeline.comment.add` (400 NOT_FOUND "Not found." for a missing
card), all counted by the leaky bucket and allowed in `batch`. Tests read them through
leadwatch.testing.work: `fake.tasks[task_id]` (a `FakeTask`) and `fake.notes_on(entity)` (the
card's timeline comments as `FakeNote`s). `reject_lead` / `reject_deal` reject a card with a
reason in a list field (`REASON_FIELD` by default) and send the update event, as a manager's save
does. A listing's `UF_*` leaves out multiple custom fields (kept as lists), as the portal's does;
`crm.*.get` shows them. Not modelled: the CRM activity and ONCRMTIMELINECOMMENTADD /
OnTaskAdd events a portal may make of these, task rights (the webhook's user may do anything).

Not modelled: `$result[...]` references between batch commands, multifields
(PHONE, EMAIL), user fields' types, access rights, the operating-time limit
(inject `operation_time_limit` instead).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo

from crm_adapters.formdata import FormError, encode_form, parse_form
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.server import FakeServer, Fault, LeakyBucket, Reply, Request, slow_fault
from leadwatch.testing.work import FakeNote, FakeTask

PAGE_SIZE = 50
BATCH_LIMIT = 50
# A portal's operating-time counter resets on a 10-minute window; the envelope shows when.
OPERATING_WINDOW = 600

_REST_PATH = re.compile(r"^/rest/([^/]+)/([^/]+)/([A-Za-z0-9_.]+?)(\.json)?/?$")
_FILTER_KEY = re.compile(r"^(>=|<=|!@|!=|>|<|=|@|!)?(.+)$")
_POSITIVE_INT = re.compile(r"^[0-9]+$")

# (STATUS_ID, NAME, SEMANTICS, SORT). Semantics: P in progress, S success, F failure.
LEAD_STATUSES: list[tuple[str, str, str, int]] = [
    ("NEW", "Unassigned", "P", 10),
    ("IN_PROCESS", "In progress", "P", 20),
    ("PROCESSED", "Processed", "P", 30),
    ("JUNK", "Junk lead", "F", 40),
    ("CONVERTED", "Good lead", "S", 50),
]
DEAL_STAGES: list[tuple[str, str, str, int]] = [
    ("NEW", "New", "P", 10),
    ("PREPARATION", "Preparing documents", "P", 20),
    ("PREPAYMENT_INVOICE", "Prepayment invoice", "P", 30),
    ("EXECUTING", "In progress", "P", 40),
    ("FINAL_INVOICE", "Final invoice", "P", 50),
    ("WON", "Deal won", "S", 60),
    ("LOSE", "Deal lost", "F", 70),
]

# The portal's own user: the admin who made the webhook (ID 1), as on a new portal.
DEFAULT_USERS: dict[str, str] = {"1": "Portal Admin"}
DEFAULT_CATEGORY = "General"  # the name crm.category.list gives category 0 (crm-category-list.md)

# Outbound event handler ids, as the portal's webhook settings would number them.
EVENT_HANDLER_IDS = {
    "ONCRMLEADADD": "412",
    "ONCRMLEADUPDATE": "413",
    "ONCRMDEALADD": "414",
    "ONCRMDEALUPDATE": "415",
    "ONCRMACTIVITYADD": "416",
    "ONVOXIMPLANTCALLEND": "417",
    "ONCRMLEADDELETE": "418",
    "ONCRMDEALDELETE": "419",
}

# CALL_FAILED_CODE -> CALL_FAILED_REASON, as the statistics show them (voximplant-statistic-get.md).
CALL_FAILED_REASONS = {
    "200": "",
    "304": "Missed call",
    "603": "Declined",
    "603-S": "Call canceled",
    "403": "Forbidden",
    "404": "Invalid number",
    "486": "Busy",
    "484": "Direction unavailable",
    "503": "Direction unavailable",
    "480": "Temporarily unavailable",
    "402": "Insufficient funds",
    "423": "Blocked",
    "OTHER": "Undefined",
}
# Quality control: the list field a test keeps a rejection reason in (any UF_CRM_ name works),
# the first ids the portal hands out, task statuses (tasks/fields.md: 2 pending, 5 completed) and
# the REST methods of work items, by the handler that serves them.
REASON_FIELD = "UF_CRM_1704817400"
FIRST_TASK_ID = 3711
FIRST_COMMENT_ID = 9001
_TASK_PENDING, _TASK_DONE = "2", "5"
_WORK_METHODS = {
    "tasks.task.add": "_task_add",
    "tasks.task.complete": "_task_complete",
    "task.commentitem.add": "_comment_item_add",
    "crm.timeline.comment.add": "_timeline_comment_add",
}
_BINDING = re.compile(r"^(L|D)_([0-9]+)$")

# CRM_ENTITY_TYPE -> the activity's OWNER_TYPE_ID.
CALL_ENTITY_TYPES = {"LEAD": 1, "DEAL": 2, "CONTACT": 3, "COMPANY": 4}
# CALL_TYPE 1 outgoing and 4 callback are the manager dialing out (activity DIRECTION 2).
_OUTGOING_CALL_TYPES = {1, 4}


def _utc_now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------- faults
def _error(status: int, code: str, description: str, **extra: Any) -> Reply:
    return Reply.json(status, {"error": code, "error_description": description, **extra})


def query_limit_exceeded(request: Request) -> Reply:
    """503 QUERY_LIMIT_EXCEEDED: the portal's leaky bucket is full."""
    return _error(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")


def internal_error(request: Request) -> Reply:
    return _error(500, "INTERNAL_SERVER_ERROR", "Internal server error")


# How far ahead `operation_time_limit` puts `operating_reset_at`.
OPERATING_RESET_SECONDS = 2


def operation_time_limit(request: Request) -> Reply:
    """429 OPERATION_TIME_LIMIT, with a `time` block whose `operating_reset_at` is ~2 s ahead."""
    start = time.time()
    return _error(
        429,
        "OPERATION_TIME_LIMIT",
        "Method is blocked due to operation time limit.",
        time={"start": start, "operating_reset_at": int(start) + OPERATING_RESET_SECONDS},
    )


def slow(seconds: float) -> Fault:
    """A fault that answers after `seconds`, with the real reply (see leadwatch.testing.server.slow_fault)."""
    return slow_fault(seconds, internal_error)


class ApiError(Exception):
    """A REST method's error answer: HTTP status, Bitrix24 code (often empty) and text."""

    def __init__(self, status: int, code: str, description: str):
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.description}


def _not_found() -> ApiError:
    # b24restdocs crm-lead-get.md: an empty code, the text in error_description.
    return ApiError(400, "", "Not found")


# ----------------------------------------------------------------------------- tables
@dataclass
class _Table:
    """One CRM entity type's rows, with what its fields are made of."""

    name: str  # lead, deal, activity
    numeric: frozenset[str]
    dates: frozenset[str]
    stage_field: str | None
    stages: dict[str, str]  # stage id -> semantics
    add_event: str
    update_event: str | None
    read_only: frozenset[str]
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    next_id: int = 1

    def find(self, raw_id: Any) -> tuple[int, dict[str, Any]]:
        ident = _positive_id(raw_id)
        row = self.rows.get(ident)
        if row is None:
            raise _not_found()
        return ident, row


_COMMON_NUMERIC = {"ID", "ASSIGNED_BY_ID", "CREATED_BY_ID", "MODIFY_BY_ID", "MOVED_BY_ID", "LAST_ACTIVITY_BY"}
_COMMON_DATES = {"DATE_CREATE", "DATE_MODIFY", "MOVED_TIME", "DATE_CLOSED", "LAST_ACTIVITY_TIME"}
_READ_ONLY = {
    "ID",
    "DATE_CREATE",
    "DATE_MODIFY",
    "MOVED_TIME",
    "MOVED_BY_ID",
    "CREATED_BY_ID",
    "MODIFY_BY_ID",
}


def _positive_id(raw: Any) -> int:
    text = str(raw).strip() if raw is not None and not isinstance(raw, bool) else ""
    if not _POSITIVE_INT.match(text) or int(text) <= 0:
        raise ApiError(400, "", "ID is not defined or invalid")
    return int(text)


def _as_list(value: Any) -> list[Any]:
    """A PHP array from JSON (list/dict), a form group ({"0": ..}) or a lone value."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, Mapping):
        return list(value.values())
    return [value]


def _php_array(members: Mapping[str, Any]) -> dict[str, Any] | list[Any]:
    """How PHP's json_encode writes an array: empty or 0..n-1 keys -> a JSON list."""
    keys = list(members)
    if keys == [str(i) for i in range(len(keys))]:
        return list(members.values())
    return dict(members)


def _lookup(params: Mapping[str, Any], name: str) -> Any:
    """Top-level REST parameters are case-insensitive (`id` and `ID` both work)."""
    if name in params:
        return params[name]
    lowered = name.lower()
    for key, value in params.items():
        if key.lower() == lowered:
            return value
    return None


class FakeBitrix24(FakeServer):
    name = "bitrix24"

    def __init__(
        self,
        webhook_user_id: int = 1,
        webhook_code: str = "code",
        application_token: str = "apptoken",
        domain: str | None = None,
        member_id: str = "m1",
        rate: float = 2.0,
        burst: int = 50,
        clock: Callable[[], datetime] = _utc_now,
        *,
        timezone: str = "Europe/Moscow",
        emit_on_rest_writes: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.webhook_user_id = webhook_user_id
        self.webhook_code = webhook_code
        self.application_token = application_token
        # What deliveries name the portal in auth[domain]: its own address once it serves (as a
        # real portal's is the host of its URL), unless a test gives one.
        self.domain = domain or "acme.bitrix24.ru"
        self._own_domain = domain is None
        self.member_id = member_id
        self.clock = clock
        self.zone = ZoneInfo(timezone)
        # REST writes come back as webhooks, as a portal sends its events for changes made
        # through the API too (leadwatch sees its own verdict writes).
        self.emit_on_rest_writes = self._emit_default = emit_on_rest_writes
        # Seconds of `monotonic` (real by default), not `clock`: a simulated clock that stands still
        # would never drain it.
        self.monotonic = monotonic
        self._bucket_size = (rate, burst)  # what `reset` brings back, whatever a test put in its place
        self.bucket = LeakyBucket(rate, burst, clock=monotonic)
        self.outbox: list[bytes] = []
        # What it returns is not read: a test's list.append, the local stack's post_hook.
        self.deliver: Callable[[bytes], object] = self.outbox.append
        # REST writes actually applied, in order: (method, id). Lets a test see that a retried
        # batch wrote each card exactly once.
        self.applied: list[tuple[str, str]] = []
        # voximplant.statistic.get rows by ID: telephony's own call log, apart from the CRM tables.
        self._statistic: dict[int, dict[str, Any]] = {}
        # Work asked of people (leadwatch.testing.work): tasks by id, timeline comments in order.
        self.tasks: dict[str, FakeTask] = {}
        self._comments: list[FakeNote] = []
        self._task_ids = itertools.count(FIRST_TASK_ID)
        self._comment_ids = itertools.count(FIRST_COMMENT_ID)
        # The account's settings, kept across `reset` only as the defaults: user.get rows by ID,
        # deal categories (id -> name) and the STATUS directories (ENTITY_ID -> rows) of
        # crm.status.list. False: the webhook has no `user*` scope (user.get answers 403).
        self.user_scope = True
        self.users: dict[int, dict[str, Any]] = {}
        self.categories: dict[int, str] = {}
        self.directories: dict[str, list[tuple[str, str, str, int]]] = {}
        self._default_names()
        self._tables = {
            "lead": _Table(
                "lead",
                frozenset(_COMMON_NUMERIC),
                frozenset(_COMMON_DATES),
                "STATUS_ID",
                {s[0]: s[2] for s in LEAD_STATUSES},
                "ONCRMLEADADD",
                "ONCRMLEADUPDATE",
                frozenset(_READ_ONLY | {"STATUS_SEMANTIC_ID"}),
            ),
            "deal": _Table(
                "deal",
                frozenset(_COMMON_NUMERIC | {"CATEGORY_ID", "LEAD_ID"}),
                frozenset(_COMMON_DATES),
                "STAGE_ID",
                {s[0]: s[2] for s in DEAL_STAGES},
                "ONCRMDEALADD",
                "ONCRMDEALUPDATE",
                frozenset(_READ_ONLY | {"STAGE_SEMANTIC_ID", "CATEGORY_ID"}),
            ),
            "activity": _Table(
                "activity",
                frozenset(
                    {
                        "ID",
                        "OWNER_ID",
                        "OWNER_TYPE_ID",
                        "TYPE_ID",
                        "DIRECTION",
                        "RESPONSIBLE_ID",
                        "AUTHOR_ID",
                        "EDITOR_ID",
                        "STATUS",
                        "PRIORITY",
                    }
                ),
                frozenset({"CREATED", "LAST_UPDATED", "START_TIME", "END_TIME", "DEADLINE"}),
                None,
                {},
                "ONCRMACTIVITYADD",
                None,
                frozenset({"ID", "CREATED", "LAST_UPDATED", "EDITOR_ID"}),
            ),
        }

    # ------------------------------------------------------------------ Python API
    def create_lead(
        self,
        title: str = "",
        assigned_by_id: str = "1",
        status_id: str = "NEW",
        created_at: datetime | None = None,
        **uf: Any,
    ) -> str:
        fields = {"TITLE": title, "ASSIGNED_BY_ID": assigned_by_id, "STATUS_ID": status_id, **_upper(uf)}
        return self._create_and_emit("lead", fields, created_at)

    def update_lead(self, lead_id: str | int, *, at: datetime | None = None, **fields: Any) -> None:
        self._update_and_emit("lead", lead_id, _upper(fields), at)

    def lead(self, lead_id: str | int) -> dict[str, Any]:
        return self._read("lead", lead_id)

    @property
    def limit_refusals(self) -> int:
        """Requests the portal's leaky bucket refused (QUERY_LIMIT_EXCEEDED), scripted faults aside."""
        return self.bucket.refused

    def delete_lead(self, lead_id: str | int, *, emit: bool = True) -> None:
        """Delete a lead as a person would; the portal sends ONCRMLEADDELETE (unless `emit` is
        False: a lost webhook)."""
        self._delete_and_emit("lead", lead_id, "ONCRMLEADDELETE", emit)

    def create_deal(
        self,
        title: str = "",
        assigned_by_id: str = "1",
        stage_id: str = "NEW",
        created_at: datetime | None = None,
        category_id: str = "0",
        **uf: Any,
    ) -> str:
        fields = {
            "TITLE": title,
            "ASSIGNED_BY_ID": assigned_by_id,
            "STAGE_ID": stage_id,
            "CATEGORY_ID": category_id,
            **_upper(uf),
        }
        return self._create_and_emit("deal", fields, created_at)

    def update_deal(self, deal_id: str | int, *, at: datetime | None = None, **fields: Any) -> None:
        self._update_and_emit("deal", deal_id, _upper(fields), at)

    def deal(self, deal_id: str | int) -> dict[str, Any]:
        return self._read("deal", deal_id)

    def delete_deal(self, deal_id: str | int, *, emit: bool = True) -> None:
        self._delete_and_emit("deal", deal_id, "ONCRMDEALDELETE", emit)

    # ---- rejections, tasks and notes (quality control)
    def reject_lead(
        self,
        lead_id: str | int,
        reason: Any = None,
        *,
        reason_field: str = REASON_FIELD,
        status_id: str = "JUNK",
        at: datetime | None = None,
    ) -> None:
        """A manager rejects the lead: its status and, given one, the reason (a list field's item
        id; a list of them for a multiple field) in one save, and the portal sends
        ONCRMLEADUPDATE as for any change."""
        fields: dict[str, Any] = {"STATUS_ID": status_id}
        if reason is not None:
            fields[reason_field] = reason
        self._update_and_emit("lead", lead_id, _upper(fields), at)

    def reject_deal(
        self,
        deal_id: str | int,
        reason: Any = None,
        *,
        reason_field: str = REASON_FIELD,
        stage_id: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """`reject_lead` for a deal; the stage is its funnel's LOSE ("C<id>:LOSE" outside the
        general one) unless given. ONCRMDEALUPDATE follows."""
        if stage_id is None:
            category = str(self.deal(deal_id).get("CATEGORY_ID") or "0")
            stage_id = "LOSE" if category == "0" else f"C{category}:LOSE"
        fields: dict[str, Any] = {"STAGE_ID": stage_id}
        if reason is not None:
            fields[reason_field] = reason
        self._update_and_emit("deal", deal_id, _upper(fields), at)

    def notes_on(self, entity: EntityRef) -> list[FakeNote]:
        """The card's timeline comments (crm.timeline.comment.add), oldest first."""
        with self.lock:
            return [note for note in self._comments if note.entity == entity]

    # ---- the account's users, deal categories and stages (what leadwatch reads names from)
    def add_user(
        self,
        user_id: str | int,
        name: str = "",
        last_name: str = "",
        *,
        active: bool = True,
        email: str = "",
        second_name: str = "",
    ) -> None:
        """A user as user.get lists them (an existing id is replaced)."""
        ident = _positive_id(user_id)
        with self.lock:
            self.users[ident] = {
                "ID": str(ident),
                "XML_ID": "",
                "ACTIVE": active,
                "NAME": name,
                "LAST_NAME": last_name,
                "SECOND_NAME": second_name,
                "EMAIL": email,
                "TIME_ZONE": "",
                "IS_ONLINE": "N",
                "WORK_POSITION": "",
                "UF_DEPARTMENT": [1],
                "USER_TYPE": "employee",
            }

    def set_users(self, users: Mapping[Any, str]) -> None:
        """Replace every user: id -> full name, split at its first space into NAME and LAST_NAME."""
        with self.lock:
            self.users.clear()
        for user_id, full in users.items():
            first, _, last = full.partition(" ")
            self.add_user(user_id, first, last)

    def add_deal_category(
        self, category_id: int, name: str, stages: list[tuple[str, str]] | None = None
    ) -> list[str]:
        """A deal category (funnel) with its stages (code, name; the general category's by
        default), each id prefixed "C<id>:" as the portal does. Returns the stage ids."""
        if category_id <= 0:
            raise ValueError("category 0 is the general one; give another id")
        chosen = stages or [(code, title) for code, title, _s, _o in DEAL_STAGES]
        semantics = {code: sem for code, _t, sem, _o in DEAL_STAGES}
        rows = [
            (f"C{category_id}:{code}", title, semantics.get(code, "P"), 10 * (n + 1))
            for n, (code, title) in enumerate(chosen)
        ]
        with self.lock:
            self.categories[category_id] = name
            self.directories[f"DEAL_STAGE_{category_id}"] = rows
            self._tables["deal"].stages.update({row[0]: row[2] for row in rows})
        return [row[0] for row in rows]

    def rename_stage(self, entity_id: str, status_id: str, name: str) -> None:
        """Give a status of a directory (STATUS, DEAL_STAGE, DEAL_STAGE_<id>) another name."""
        with self.lock:
            rows = self.directories[entity_id]
            for n, (code, _title, semantics, sort) in enumerate(rows):
                if code == status_id:
                    rows[n] = (code, name, semantics, sort)
                    return
        raise KeyError(f"no status {status_id} in {entity_id}")

    def _default_names(self) -> None:
        self.user_scope = True
        self.users = {}
        for user_id, full in DEFAULT_USERS.items():
            first, _, last = full.partition(" ")
            self.add_user(user_id, first, last, email="admin@example.com")
        self.categories = {0: DEFAULT_CATEGORY}
        self.directories = {"STATUS": list(LEAD_STATUSES), "DEAL_STAGE": list(DEAL_STAGES)}

    def add_activity(
        self,
        owner_id: str | int,
        *,
        owner_type_id: int = 1,
        type_id: int = 2,
        direction: int = 2,
        responsible_id: str = "1",
        completed: bool = True,
        created_at: datetime | None = None,
        subject: str = "",
        duration: int = 0,
    ) -> str:
        """An activity made by hand or by an app (no telephony statistics row). START_TIME is the
        creation moment and END_TIME `duration` seconds later."""
        moment = self._now(created_at)
        fields = {
            "OWNER_ID": owner_id,
            "OWNER_TYPE_ID": owner_type_id,
            "TYPE_ID": type_id,
            "DIRECTION": direction,
            "RESPONSIBLE_ID": responsible_id,
            "COMPLETED": "Y" if completed else "N",
            "SUBJECT": subject,
            "START_TIME": moment,
            "END_TIME": moment + timedelta(seconds=duration),
        }
        return self._create_and_emit("activity", fields, moment)

    def add_call(
        self,
        lead_id: str | int,
        *,
        user_id: str | int,
        started_at: datetime,
        duration: int,
        failed_code: str = "200",
        call_type: int = 1,
        record_url: str | None = None,
        entity_type: str = "LEAD",
        activity: bool = True,
        emit: bool = True,
    ) -> dict[str, Any]:
        """A finished telephony call on the CRM object `entity_type` `lead_id`, as the portal
        records it: a call activity (unless `activity` is False), a statistics row and, when
        `emit`, ONCRMACTIVITYADD then ONVOXIMPLANTCALLEND.

        Returns {"call_id", "activity_id" (None without an activity), "statistic_id", "events"}:
        `events` are the two bodies in delivery order, also when `emit` is False (a test can then
        lose them or deliver them late). The recording URL is kept only for an answered call."""
        owner_type_id = CALL_ENTITY_TYPES.get(entity_type.upper())
        if owner_type_id is None:
            raise ValueError(f"entity_type must be one of {sorted(CALL_ENTITY_TYPES)}, got {entity_type!r}")
        if duration < 0:
            raise ValueError("a call cannot last a negative number of seconds")
        if call_type not in {1, 2, 3, 4, 5}:
            raise ValueError(f"call_type must be 1-5, got {call_type!r}")
        start = self._now(started_at)
        outgoing = call_type in _OUTGOING_CALL_TYPES
        answered = failed_code == "200"
        with self.lock:
            stat_id = max(self._statistic, default=0) + 1
            digest = hashlib.md5(f"{self.domain}:{stat_id}".encode(), usedforsecurity=False).hexdigest()
            call_id = f"externalCall.{digest}.{int(start.timestamp())}"
            events: list[tuple[str, str]] = []
            activity_id: str | None = None
            if activity:
                activity_id, event = self._insert(
                    self._tables["activity"],
                    {
                        "OWNER_ID": lead_id,
                        "OWNER_TYPE_ID": owner_type_id,
                        "TYPE_ID": 2,
                        "DIRECTION": 2 if outgoing else 1,
                        "RESPONSIBLE_ID": user_id,
                        "PROVIDER_ID": "VOXIMPLANT_CALL",
                        "PROVIDER_TYPE_ID": "CALL",
                        "ORIGIN_ID": f"VI_{call_id}",
                        "COMPLETED": "Y",
                        "SUBJECT": "Outgoing call" if outgoing else "Incoming call",
                        "START_TIME": start,
                        "END_TIME": start + timedelta(seconds=duration),
                    },
                    start,
                    by=str(user_id),
                )
                events.append(event)
            recorded = record_url if answered and record_url else None
            self._statistic[stat_id] = {
                "ID": str(stat_id),
                "PORTAL_USER_ID": str(user_id),
                "PORTAL_NUMBER": "reg1",
                "PHONE_NUMBER": f"+7999{stat_id:07d}",
                "CALL_ID": call_id,
                "EXTERNAL_CALL_ID": None,
                "CALL_CATEGORY": "external",
                "CALL_LOG": None,
                "CALL_DURATION": str(duration),
                "CALL_START_DATE": start,
                "CALL_RECORD_URL": recorded,
                "CALL_VOTE": None,
                "COST": "0.0000",
                "COST_CURRENCY": "RUB",
                "CALL_FAILED_CODE": failed_code,
                "CALL_FAILED_REASON": CALL_FAILED_REASONS.get(failed_code, "Undefined"),
                "CRM_ENTITY_TYPE": entity_type.upper(),
                "CRM_ENTITY_ID": str(lead_id),
                "CRM_ACTIVITY_ID": activity_id,
                "REST_APP_ID": None,
                "REST_APP_NAME": None,
                "TRANSCRIPT_ID": None,
                "TRANSCRIPT_PENDING": "N",
                "SESSION_ID": None,
                "REDIAL_ATTEMPT": None,
                "COMMENT": None,
                "RECORD_DURATION": str(duration) if recorded else None,
                # The only number the real API sends as a JSON int.
                "RECORD_FILE_ID": 9000 + stat_id if recorded else None,
                "CALL_TYPE": str(call_type),
            }
            bodies = [self.event_body(event, ident) for event, ident in events]
            bodies.append(self.call_end_body(call_id))
        if emit:
            for body in bodies:
                self.deliver(body)
        return {
            "call_id": call_id,
            "activity_id": activity_id,
            "statistic_id": str(stat_id),
            "events": bodies,
        }

    def call_statistic(self, call_id: str) -> dict[str, Any]:
        """The voximplant.statistic.get row of a call, as the API shows it."""
        with self.lock:
            for row in self._statistic.values():
                if row["CALL_ID"] == call_id:
                    return self._wire(row, None, include_uf=False)
        raise KeyError(f"no call {call_id}")

    def call_end_body(self, call_id: str) -> bytes:
        """The ONVOXIMPLANTCALLEND form body: flat `data`, no FIELDS, no card and no recording."""
        with self.lock:
            row = next((r for r in self._statistic.values() if r["CALL_ID"] == call_id), None)
            if row is None:
                raise KeyError(f"no call {call_id}")
            data = {
                key: row[key]
                for key in (
                    "CALL_ID",
                    "CALL_TYPE",
                    "PHONE_NUMBER",
                    "PORTAL_NUMBER",
                    "PORTAL_USER_ID",
                    "CALL_DURATION",
                    "CALL_START_DATE",
                    "COST",
                    "COST_CURRENCY",
                    "CALL_FAILED_CODE",
                    "CALL_FAILED_REASON",
                    "CRM_ACTIVITY_ID",
                )
            }
        data["CALL_START_DATE"] = self._format_date(data["CALL_START_DATE"])
        if data["CRM_ACTIVITY_ID"] is None:
            del data["CRM_ACTIVITY_ID"]  # PHP's http_build_query leaves a null out
        return self._event_form("ONVOXIMPLANTCALLEND", data)

    def activity(self, activity_id: str | int) -> dict[str, Any]:
        return self._read("activity", activity_id)

    def event_body(self, event: str, entity_id: str) -> bytes:
        """The form body Bitrix24 POSTs to an outgoing-webhook handler for `event`."""
        return self._event_form(event, {"FIELDS": {"ID": str(entity_id)}})

    def _event_form(self, event: str, data: Mapping[str, Any]) -> bytes:
        code = event.upper()
        return encode_form(
            {
                "event": code,
                "event_handler_id": EVENT_HANDLER_IDS.get(code, "400"),
                "data": dict(data),
                "ts": str(int(self.clock().timestamp())),
                "auth": {
                    "domain": self.domain,
                    "client_endpoint": f"https://{self.domain}/rest/",
                    "server_endpoint": "https://oauth.bitrix.info/rest/",
                    "member_id": self.member_id,
                    "application_token": self.application_token,
                },
            }
        )

    def _create_and_emit(self, table: str, fields: dict[str, Any], created_at: datetime | None) -> str:
        with self.lock:
            ident, event = self._insert(self._tables[table], fields, created_at, by="1")
        self._emit([event])
        return ident

    def _update_and_emit(
        self, table: str, raw_id: str | int, fields: dict[str, Any], at: datetime | None
    ) -> None:
        with self.lock:
            try:
                _ident, row = self._tables[table].find(raw_id)
            except ApiError:
                raise KeyError(f"no {table} {raw_id}") from None
            event = self._change(self._tables[table], row, fields, at, by=fields.get("MODIFY_BY_ID", "1"))
        self._emit([event] if event else [])

    def _delete_and_emit(self, table: str, raw_id: str | int, event: str, emit: bool) -> None:
        with self.lock:
            try:
                ident, _row = self._tables[table].find(raw_id)
            except ApiError:
                raise KeyError(f"no {table} {raw_id}") from None
            del self._tables[table].rows[ident]
        if emit:
            self._emit([(event, str(ident))])

    def _read(self, table: str, raw_id: str | int) -> dict[str, Any]:
        with self.lock:
            try:
                _ident, row = self._tables[table].find(raw_id)
            except ApiError:
                raise KeyError(f"no {table} {raw_id}") from None
            return self._wire(row, None, include_uf=True)

    def _emit(self, events: list[tuple[str, str]]) -> None:
        # Called without self.lock held: a receiver may call the portal's REST API back.
        for event, ident in events:
            self.deliver(self.event_body(event, ident))

    # ------------------------------------------------------------------ storage
    def _now(self, at: datetime | None = None) -> datetime:
        moment = at or self.clock()
        if moment.tzinfo is None:
            raise ValueError("the fake portal needs aware datetimes")
        # The portal stores seconds; a sub-second part would break `>=` filters on echoed values.
        return moment.astimezone(UTC).replace(microsecond=0)

    def _insert(
        self, table: _Table, fields: Mapping[str, Any], created_at: datetime | None, by: str
    ) -> tuple[str, tuple[str, str]]:
        now = self._now(created_at)
        ident = table.next_id
        table.next_id += 1
        row: dict[str, Any]
        if table.name == "activity":
            row = {
                "ID": str(ident),
                "OWNER_ID": "0",
                "OWNER_TYPE_ID": "1",
                "TYPE_ID": "2",
                "PROVIDER_ID": "",
                "PROVIDER_TYPE_ID": "",
                "SUBJECT": "",
                "DIRECTION": "2",
                "COMPLETED": "N",
                "STATUS": "1",
                "PRIORITY": "2",
                "RESPONSIBLE_ID": by,
                "AUTHOR_ID": by,
                "EDITOR_ID": by,
                "DESCRIPTION": "",
                "CREATED": now,
                "LAST_UPDATED": now,
                "START_TIME": now,
                "END_TIME": now,
                "DEADLINE": now,
            }
            self._assign(table, row, fields)
            if not row["PROVIDER_ID"]:
                row["PROVIDER_ID"] = {
                    "1": "CRM_MEETING",
                    "2": "VOXIMPLANT_CALL",
                    "3": "CRM_TASKS_TASK",
                    "4": "CRM_EMAIL",
                }.get(row["TYPE_ID"], "REST_APP")
            if "AUTHOR_ID" not in fields:
                row["AUTHOR_ID"] = row["RESPONSIBLE_ID"]
            row["STATUS"] = "2" if row["COMPLETED"] == "Y" else "1"
            owner = self._tables.get({"1": "lead", "2": "deal"}.get(row["OWNER_TYPE_ID"], ""))
            if owner is not None:
                card = owner.rows.get(int(row["OWNER_ID"])) if row["OWNER_ID"].isdigit() else None
                if card is not None:
                    card["LAST_ACTIVITY_TIME"] = now
                    card["LAST_ACTIVITY_BY"] = row["RESPONSIBLE_ID"]
        else:
            row = {
                "ID": str(ident),
                "TITLE": "",
                "OPENED": "Y",
                "CURRENCY_ID": "RUB",
                "OPPORTUNITY": "0.00",
                "ASSIGNED_BY_ID": by,
                "CREATED_BY_ID": by,
                "MODIFY_BY_ID": by,
                "MOVED_BY_ID": by,
                "DATE_CREATE": now,
                "DATE_MODIFY": now,
                "MOVED_TIME": now,
                "DATE_CLOSED": None,
                "LAST_ACTIVITY_BY": by,
                "LAST_ACTIVITY_TIME": now,
            }
            if table.name == "lead":
                row.update({"STATUS_ID": "NEW", "STATUS_SEMANTIC_ID": "P", "SOURCE_ID": "CALL", "NAME": ""})
            else:
                row.update(
                    {
                        "STAGE_ID": "NEW",
                        "STAGE_SEMANTIC_ID": "P",
                        "CATEGORY_ID": "0",
                        "CLOSED": "N",
                        "LEAD_ID": None,
                    }
                )
                # CATEGORY_ID is immutable after creation, but settable on add.
                if "CATEGORY_ID" in fields:
                    row["CATEGORY_ID"] = str(fields["CATEGORY_ID"])
            self._assign(table, row, fields)
            self._semantics(table, row, now)
        table.rows[ident] = row
        return str(ident), (table.add_event, str(ident))

    def _change(
        self, table: _Table, row: dict[str, Any], fields: Mapping[str, Any], at: datetime | None, by: Any
    ) -> tuple[str, str] | None:
        now = self._now(at)
        stage_before = row.get(table.stage_field) if table.stage_field else None
        self._assign(table, row, fields)
        if table.stage_field and row.get(table.stage_field) != stage_before:
            row["MOVED_TIME"] = now
            row["MOVED_BY_ID"] = str(by)
            self._semantics(table, row, now)
        if table.name == "activity":
            row["LAST_UPDATED"] = now
            row["STATUS"] = "2" if row.get("COMPLETED") == "Y" else "1"
            return None
        row["DATE_MODIFY"] = now
        row["MODIFY_BY_ID"] = str(by)
        return (table.update_event, row["ID"]) if table.update_event else None

    def _semantics(self, table: _Table, row: dict[str, Any], now: datetime) -> None:
        if table.stage_field is None:
            return
        semantic = table.stages.get(str(row.get(table.stage_field)), "P")
        row["STATUS_SEMANTIC_ID" if table.name == "lead" else "STAGE_SEMANTIC_ID"] = semantic
        row["DATE_CLOSED"] = now if semantic in {"S", "F"} else None
        if table.name == "deal":
            row["CLOSED"] = "Y" if semantic in {"S", "F"} else "N"

    def _assign(self, table: _Table, row: dict[str, Any], fields: Mapping[str, Any]) -> None:
        for raw_key, value in fields.items():
            key = str(raw_key).upper()
            if key in table.read_only:
                continue
            row[key] = self._store_value(table, key, value)

    def _store_value(self, table: _Table, key: str, value: Any) -> Any:
        if value is None:
            return None
        if key in table.dates:
            return self._parse_date(value) if value != "" else None
        if isinstance(value, list | tuple | Mapping):
            return [self._scalar(v) for v in _as_list(value)]
        if key in table.numeric:
            return str(int(value)) if str(value).strip().lstrip("-").isdigit() else str(value)
        return self._scalar(value)

    @staticmethod
    def _scalar(value: Any) -> Any:
        if isinstance(value, bool):
            return "Y" if value else "N"
        if isinstance(value, datetime):
            return value
        return str(value) if value is not None else None

    def _parse_date(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            moment = value
        else:
            text = str(value).strip()
            try:
                moment = datetime.fromisoformat(text)
            except ValueError:
                try:
                    moment = datetime.strptime(text, "%d.%m.%Y %H:%M:%S")
                except ValueError:
                    raise ApiError(400, "", f"Invalid date value: {text[:40]}") from None
        if moment.tzinfo is None:
            # A date without an offset is in the portal's time zone, as the real portal reads it.
            moment = moment.replace(tzinfo=self.zone)
        return moment.astimezone(UTC).replace(microsecond=0)

    def _format_date(self, moment: datetime) -> str:
        return moment.astimezone(self.zone).isoformat(timespec="seconds")

    def _wire(self, row: Mapping[str, Any], select: list[str] | None, include_uf: bool) -> dict[str, Any]:
        """A stored row as the API shows it: dates in the portal zone, "" for an empty date."""
        if select:
            wanted = {s.upper() for s in select}
            keep_std = "*" in wanted
            keep_uf = "UF_*" in wanted
        else:
            wanted, keep_std, keep_uf = set(), True, include_uf
        out: dict[str, Any] = {}
        for key, value in row.items():
            # The `UF_*` mask leaves multiple fields (kept as lists) out; a list names them.
            is_uf = key.startswith("UF_")
            uf_kept = keep_uf and not (select and isinstance(value, list))
            if not (key == "ID" or key in wanted or (uf_kept if is_uf else keep_std)):
                continue
            if isinstance(value, datetime):
                out[key] = self._format_date(value)
            elif isinstance(value, list):
                out[key] = [self._format_date(v) if isinstance(v, datetime) else v for v in value]
            elif value is None and key in _COMMON_DATES:
                out[key] = ""
            else:
                out[key] = value
        return out

    # ------------------------------------------------------------------ HTTP
    def start(self) -> FakeBitrix24:
        super().start()
        assert self._httpd is not None
        if self._own_domain:
            self.domain = urlsplit(self.url).netloc
        report = self._httpd.handle_error

        def quiet_disconnects(request: Any, client_address: Any) -> None:
            # A client that timed out on a `slow` fault hangs up before the late answer: expected.
            if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
                return
            report(request, client_address)

        # The server has no other hook for its errors; mypy refuses assigning to a method on principle.
        self._httpd.handle_error = quiet_disconnects  # type: ignore[method-assign]
        return self

    def reset(self) -> None:
        """Forget every card, activity, event, log entry and fault, as a fresh portal would be
        (tests share one running server instead of paying for a start and stop each)."""
        with self.lock:
            for table in self._tables.values():
                table.rows.clear()
                table.next_id = 1
            self._statistic.clear()
            self.tasks.clear()
            self._comments.clear()
            self._task_ids = itertools.count(FIRST_TASK_ID)
            self._comment_ids = itertools.count(FIRST_COMMENT_ID)
            self._default_names()
            self.outbox.clear()
            self.pending_echoes.clear()
            self.deliver = self.outbox.append
            self.applied.clear()
            self.emit_on_rest_writes = self._emit_default
            self.bucket = LeakyBucket(*self._bucket_size, clock=self.monotonic)
        self.clear_faults()
        self.clear_log()

    def handle(self, request: Request) -> Reply:
        match = _REST_PATH.match(request.path)
        if not match:
            return _error(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        user, code, method = match.group(1), match.group(2), match.group(3).lower()
        if user != str(self.webhook_user_id) or not hmac.compare_digest(
            code.encode(), self.webhook_code.encode()
        ):
            return _error(401, "NO_AUTH_FOUND", "Wrong authorization data")
        if not self.bucket.admit():
            return query_limit_exceeded(request)
        try:
            params = self._params(request)
        except (FormError, ValueError) as exc:
            return _error(400, "INVALID_REQUEST", f"Request is not valid: {exc}")
        events: list[tuple[str, str]] = []
        started = time.perf_counter()
        try:
            with self.lock:
                if method == "batch":
                    payload = self._batch(params, events)
                else:
                    result, total, next_start = self._call(method, params, events)
                    payload = {"result": result}
                    if next_start is not None:
                        payload["next"] = next_start
                    if total is not None:
                        payload["total"] = total
                payload["time"] = self._time(started, with_operating=True)
        except ApiError as exc:
            return Reply.json(exc.status, exc.body())
        finally:
            if self.emit_on_rest_writes:
                # Sent after the answer, as a portal's event queue does: see flush_echoes.
                with self.lock:
                    self.pending_echoes += [self.event_body(event, ident) for event, ident in events]
        return Reply.json(200, payload)

    def _params(self, request: Request) -> dict[str, Any]:
        params: dict[str, Any] = _form_tree(request.query)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if request.body:
            if content_type == "application/json":
                body = json.loads(request.body.decode("utf-8"))
                if not isinstance(body, dict):
                    raise ValueError("a JSON body must be an object")
                params.update(body)
            else:
                params.update(_form_tree(parse_qsl(request.body.decode("utf-8"), keep_blank_values=True)))
        return params

    def _time(self, started: float, with_operating: bool) -> dict[str, Any]:
        finish = self.clock().timestamp()
        duration = time.perf_counter() - started
        start = finish - duration
        block: dict[str, Any] = {
            "start": start,
            "finish": finish,
            "duration": duration,
            "processing": duration,
            "date_start": self._format_date(datetime.fromtimestamp(start, UTC)),
            "date_finish": self._format_date(datetime.fromtimestamp(finish, UTC)),
        }
        if with_operating:
            block["operating_reset_at"] = int(start) + OPERATING_WINDOW
            block["operating"] = 0
        return block

    def _batch(self, params: Mapping[str, Any], events: list[tuple[str, str]]) -> dict[str, Any]:
        cmd = _lookup(params, "cmd")
        if isinstance(cmd, list):
            cmd = {str(i): c for i, c in enumerate(cmd)}
        if not isinstance(cmd, Mapping) or not cmd:
            raise ApiError(400, "ERROR_BATCH_EMPTY", "Empty batch")
        if len(cmd) > BATCH_LIMIT:
            raise ApiError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        halt = str(_lookup(params, "halt") or "0").lower() in {"1", "true", "y"}
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for key, command in cmd.items():
            started = time.perf_counter()
            try:
                method, _, query = str(command).partition("?")
                method = method.strip().lower()
                if method == "batch":
                    raise ApiError(
                        405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
                    )
                try:
                    sub = _form_tree(parse_qsl(query, keep_blank_values=True))
                except FormError as exc:
                    raise ApiError(400, "INVALID_REQUEST", str(exc)) from None
                result, total, next_start = self._call(method, sub, events)
            except ApiError as exc:
                errors[str(key)] = exc.body()
                if halt:
                    break
                continue
            results[str(key)] = result
            if total is not None:
                totals[str(key)] = total
            if next_start is not None:
                nexts[str(key)] = next_start
            times[str(key)] = self._time(started, with_operating=False)
        return {
            "result": {
                "result": _php_array(results),
                "result_error": _php_array(errors),
                "result_total": _php_array(totals),
                "result_next": _php_array(nexts),
                "result_time": _php_array(times),
            }
        }

    def _call(
        self, method: str, params: Mapping[str, Any], events: list[tuple[str, str]]
    ) -> tuple[Any, int | None, int | None]:
        """Run one method under self.lock. Returns (result, total, next) - the last two for lists."""
        if method == "crm.status.list":
            return self._status_list(params)
        if method == "crm.category.list":
            return self._category_list(params)
        if method == "user.get":
            return self._user_get(params)
        if method == "voximplant.statistic.get":
            return self._statistic_get(params)
        if method in _WORK_METHODS:
            return getattr(self, _WORK_METHODS[method])(params), None, None
        if method == "tasks.task.list":
            return self._task_list(params)
        parts = method.split(".")
        if len(parts) == 3 and parts[0] == "crm" and parts[1] in self._tables:
            table = self._tables[parts[1]]
            action = parts[2]
            if action == "get":
                _ident, row = table.find(_lookup(params, "id"))
                return self._wire(row, None, include_uf=True), None, None
            if action == "list":
                return self._list(table, params)
            if action == "add":
                fields = _lookup(params, "fields")
                if not isinstance(fields, Mapping):
                    raise ApiError(400, "", "Parameter 'fields' must be array.")
                ident, event = self._insert(table, _upper(fields), None, by=str(self.webhook_user_id))
                self.applied.append((method, ident))
                events.append(event)
                return int(ident), None, None
            if action == "update" and table.name != "activity":
                _ident, row = table.find(_lookup(params, "id"))
                fields = _lookup(params, "fields")
                if not isinstance(fields, Mapping):
                    raise ApiError(400, "", "Parameter 'fields' must be array.")
                changed = self._change(table, row, _upper(fields), None, by=self.webhook_user_id)
                self.applied.append((method, row["ID"]))
                if changed:
                    events.append(changed)
                return True, None, None
        raise ApiError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")

    # ---- tasks and timeline comments
    def _task_add(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """tasks.task.add: TITLE and RESPONSIBLE_ID (an existing user) required; UF_CRM_TASK binds
        the task to cards ("L_4", "D_10"), whether or not they exist."""
        raw = _lookup(params, "fields")
        if not isinstance(raw, Mapping) or not raw:
            raise ApiError(400, "100", "Could not find value for parameter {fields} (internal error)")
        fields = _upper(raw)
        title = str(fields.get("TITLE") or "").strip()
        if not title:
            raise ApiError(400, "ERROR_CORE", "Task title is not specified<br>")
        responsible = str(fields.get("RESPONSIBLE_ID") or "").strip()
        if not responsible:
            raise ApiError(400, "ERROR_CORE", "Responsible person not specified<br>")
        if not _POSITIVE_INT.match(responsible) or int(responsible) not in self.users:
            raise ApiError(400, "ERROR_CORE", 'User specified in the "Responsible" field not found<br>')
        deadline = self._parse_date(fields["DEADLINE"]) if fields.get("DEADLINE") else None
        entity = next(
            (ref for ref in (_binding(b) for b in _as_list(fields.get("UF_CRM_TASK"))) if ref), None
        )
        ident = str(next(self._task_ids))
        task = FakeTask(
            id=ident,
            title=title,
            description=str(fields.get("DESCRIPTION") or ""),
            responsible=str(int(responsible)),
            deadline=deadline,
            entity=entity,
            created_by=str(fields.get("CREATED_BY") or self.webhook_user_id),
            created_at=self._now(),
            bindings=[str(b) for b in _as_list(fields.get("UF_CRM_TASK"))],
        )
        self.tasks[ident] = task
        self.applied.append(("tasks.task.add", ident))
        return {"task": self._task_wire(task, with_crm=False)}

    def _open_task(self, raw_id: Any, refusal: ApiError) -> FakeTask:
        ident = str(raw_id).strip() if raw_id is not None and not isinstance(raw_id, bool) else ""
        if not _POSITIVE_INT.match(ident):
            raise ApiError(400, "0", "wrong task id")
        task = self.tasks.get(str(int(ident)))
        if task is None:
            raise refusal
        return task

    def _task_complete(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """tasks.task.complete: one answer for a task that is missing and for one whose
        "complete" action is not allowed, a task already completed among them (the action map of
        tasks.task.get shows `complete: false` for it)."""
        refusal = ApiError(400, "0", "Action on the task is not allowed")
        task = self._open_task(_lookup(params, "taskId"), refusal)
        if task.completed:
            raise refusal
        task.completed = True
        task.completed_at = self._now()
        self.applied.append(("tasks.task.complete", task.id))
        return {"task": self._task_wire(task, with_crm=False)}

    def _comment_item_add(self, params: Mapping[str, Any]) -> int:
        """task.commentitem.add (TASKID, FIELDS.POST_MESSAGE): the comment id. A missing task gets
        the answer its sibling methods document for one (task-comment-item-update.md)."""
        refusal = ApiError(
            400, "ERROR_CORE", "TASKS_ERROR_EXCEPTION_#4; Action is not allowed; 4/TE/ACTION_NOT_ALLOWED.<br>"
        )
        task = self._open_task(_lookup(params, "TASKID"), refusal)
        fields = _lookup(params, "FIELDS")
        message = _lookup(fields, "POST_MESSAGE") if isinstance(fields, Mapping) else None
        if not isinstance(message, str) or not message.strip():
            raise ApiError(400, "ERROR_CORE", "Comment text is not specified<br>")
        task.comments.append(message)
        self.applied.append(("task.commentitem.add", task.id))
        return next(self._comment_ids)

    def _timeline_comment_add(self, params: Mapping[str, Any]) -> int:
        """crm.timeline.comment.add: fields ENTITY_ID, ENTITY_TYPE (lead, deal), COMMENT; 400
        NOT_FOUND "Not found." for a card that does not exist."""
        raw = _lookup(params, "fields")
        fields = _upper(raw) if isinstance(raw, Mapping) else {}
        if not fields.get("ENTITY_ID") or not fields.get("ENTITY_TYPE"):
            raise ApiError(400, "100", "Required fields are not provided")
        comment = str(fields.get("COMMENT") or "")
        if not comment.strip():
            raise ApiError(400, "INVALID_ARG_VALUE", "Empty comment")
        table = self._tables.get(str(fields["ENTITY_TYPE"]).strip().lower())
        if table is None or table.name == "activity":
            raise ApiError(400, "NOT_FOUND", "Not found.")
        try:
            ident, _row = table.find(fields["ENTITY_ID"])
        except ApiError:
            raise ApiError(400, "NOT_FOUND", "Not found.") from None
        comment_id = next(self._comment_ids)
        entity = EntityRef(EntityType(table.name), str(ident))
        author = str(fields.get("AUTHOR_ID") or self.webhook_user_id)
        self._comments.append(FakeNote(str(comment_id), entity, comment, author, self._now()))
        self.applied.append(("crm.timeline.comment.add", str(ident)))
        return comment_id

    def _task_list(self, params: Mapping[str, Any]) -> tuple[Any, int | None, int | None]:
        """tasks.task.list: `filter` on the upper-case fields (ID, RESPONSIBLE_ID, STATUS, ...),
        newest first unless `order` says otherwise, pages of 50; `{"tasks": [...]}` of camelCase
        rows, with `ufCrmTask` when UF_CRM_TASK is selected."""
        rows = [self._task_row(t) for t in self.tasks.values()]
        types = _FieldTypes(
            frozenset({"ID", "RESPONSIBLE_ID", "CREATED_BY", "STATUS"}),
            frozenset({"DEADLINE"}),
            self._parse_date,
        )
        rows = [r for r in rows if _matches(r, _filter_of(params), types)]
        rows = _ordered(rows, _lookup(params, "order") or {"ID": "DESC"}, types)
        select = {str(s).upper() for s in _as_list(_lookup(params, "select"))}
        try:
            start = max(int(str(_lookup(params, "start") or 0)), 0)
        except ValueError:
            start = 0
        page = rows[start : start + PAGE_SIZE]
        next_start = start + PAGE_SIZE if start + PAGE_SIZE < len(rows) else None
        tasks = [self._task_wire(self.tasks[r["ID"]], with_crm="UF_CRM_TASK" in select) for r in page]
        return {"tasks": tasks}, len(rows), next_start

    @staticmethod
    def _task_row(task: FakeTask) -> dict[str, Any]:
        return {
            "ID": task.id,
            "TITLE": task.title,
            "RESPONSIBLE_ID": task.responsible,
            "CREATED_BY": task.created_by,
            "STATUS": _TASK_DONE if task.completed else _TASK_PENDING,
            "DEADLINE": task.deadline,
        }

    def _task_wire(self, task: FakeTask, with_crm: bool) -> dict[str, Any]:
        """A task as tasks.task.* show it: camelCase keys, numbers as strings, portal-zone dates."""

        def date(moment: datetime | None) -> str | None:
            return self._format_date(moment) if moment is not None else None

        wire: dict[str, Any] = {
            "id": task.id,
            "parentId": None,
            "title": task.title,
            "description": task.description,
            "descriptionInBbcode": "Y",
            "priority": "1",
            "status": _TASK_DONE if task.completed else _TASK_PENDING,
            "createdBy": task.created_by,
            "createdDate": date(task.created_at),
            "responsibleId": task.responsible,
            "closedBy": task.created_by if task.completed else None,
            "closedDate": date(task.completed_at),
            "deadline": date(task.deadline),
            "groupId": "0",
            "commentsCount": str(len(task.comments)) if task.comments else None,
        }
        if with_crm:
            wire["ufCrmTask"] = list(task.bindings)
        return wire

    def _status_list(self, params: Mapping[str, Any]) -> tuple[Any, int | None, int | None]:
        items: list[dict[str, Any]] = []
        ident = 1
        for entity, statuses in self.directories.items():
            category = entity.removeprefix("DEAL_STAGE_") if entity.startswith("DEAL_STAGE_") else None
            for status_id, name, semantics, sort in statuses:
                items.append(
                    {
                        "ID": str(ident),
                        "ENTITY_ID": entity,
                        "STATUS_ID": status_id,
                        "NAME": name,
                        "NAME_INIT": name,
                        "SORT": str(sort),
                        "SYSTEM": "Y",
                        "CATEGORY_ID": category,
                        "COLOR": "#39A8EF",
                        "SEMANTICS": None if semantics == "P" else semantics,
                        "EXTRA": {
                            "SEMANTICS": {"P": "process", "S": "success", "F": "failure"}[semantics],
                            "COLOR": "#39A8EF",
                        },
                    }
                )
                ident += 1
        rows = [r for r in items if _matches(r, _filter_of(params), _STATUS_TYPES)]
        rows = _ordered(rows, _lookup(params, "order") or {"SORT": "ASC"}, _STATUS_TYPES)
        return rows, len(rows), None

    def _category_list(self, params: Mapping[str, Any]) -> tuple[Any, int | None, int | None]:
        """crm.category.list: the funnels of entityTypeId 2 (deals), the general one last as the
        docs' example shows it; other types are refused as the portal refuses them."""
        raw = _lookup(params, "entityTypeId")
        if raw is None:
            raise ApiError(400, "", "Required parameter 'entityTypeId' is not set")
        if str(raw).strip() != "2":
            if str(raw).strip() in {"1", "3", "4"}:
                raise ApiError(400, "ENTITY_TYPE_NOT_SUPPORTED", f"Entity type {raw} is not supported")
            raise ApiError(400, "NOT_FOUND", "SPA not found")
        others = [
            {
                "id": ident,
                "name": name,
                "sort": 200,
                "entityTypeId": 2,
                "isDefault": "N",
                "originId": "",
                "originatorId": "",
            }
            for ident, name in sorted(self.categories.items())
            if ident != 0
        ]
        general = {
            "id": 0,
            "name": self.categories.get(0, DEFAULT_CATEGORY),
            "sort": 300,
            "entityTypeId": 2,
            "isDefault": "Y",
        }
        categories = [*others, general]
        return {"categories": categories}, len(categories), None

    def _user_get(self, params: Mapping[str, Any]) -> tuple[Any, int | None, int | None]:
        """user.get: FILTER (ACTIVE, ID and the other fields), sort / order, pages of 50."""
        if not self.user_scope:
            raise ApiError(
                403,
                "insufficient_scope",
                "The request requires higher privileges than provided by the webhook token",
            )
        conditions = dict(_filter_of(params))
        # ACTIVE is a boolean: "true" keeps the employees, anything else the fired ones.
        active = next((v for k, v in conditions.items() if str(k).upper() == "ACTIVE"), None)
        conditions = {k: v for k, v in conditions.items() if str(k).upper() != "ACTIVE"}
        candidates = [
            u
            for u in self.users.values()
            if active is None or u["ACTIVE"] is (str(active).lower() in {"true", "y", "1"})
        ]
        types = _FieldTypes(frozenset({"ID"}), frozenset(), self._parse_date)
        rows = [u for u in candidates if _matches(u, conditions, types)]
        sort = _lookup(params, "sort")
        order = {str(sort): str(_lookup(params, "order") or "ASC")} if isinstance(sort, str) and sort else {}
        return self._page(_ordered(rows, order, types), params, [])

    def _list(self, table: _Table, params: Mapping[str, Any]) -> tuple[Any, int | None, int | None]:
        types = _FieldTypes(table.numeric | {"SORT"}, table.dates, self._parse_date)
        rows = [r for r in table.rows.values() if _matches(r, _filter_of(params), types)]
        rows = _ordered(rows, _lookup(params, "order") or {}, types)
        select = [str(s) for s in _as_list(_lookup(params, "select"))]
        return self._page(rows, params, select)

    def _statistic_get(self, params: Mapping[str, Any]) -> tuple[Any, int | None, int | None]:
        """voximplant.statistic.get: UPPERCASE FILTER, SORT (a field) and ORDER (ASC/DESC), start."""
        rows = [r for r in self._statistic.values() if _matches(r, _filter_of(params), self._stat_types())]
        sort = _lookup(params, "sort")
        order = {str(sort): str(_lookup(params, "order") or "ASC")} if isinstance(sort, str) and sort else {}
        return self._page(_ordered(rows, order, self._stat_types()), params, [])

    def _stat_types(self) -> _FieldTypes:
        return _FieldTypes(_STAT_NUMERIC, frozenset({"CALL_START_DATE"}), self._parse_date)

    def _page(
        self, rows: list[dict[str, Any]], params: Mapping[str, Any], select: list[str]
    ) -> tuple[Any, int | None, int | None]:
        """One page of 50 from `start`, with the list envelope's total and next."""
        try:
            start = int(str(_lookup(params, "start") or 0))
        except ValueError:
            start = 0
        if start < 0:
            # start=-1 switches off the COUNT: no total, no next (b24restdocs huge-data.md).
            page = rows[:PAGE_SIZE]
            return [self._wire(r, select, include_uf=False) for r in page], None, None
        page = rows[start : start + PAGE_SIZE]
        next_start = start + PAGE_SIZE if start + PAGE_SIZE < len(rows) else None
        return [self._wire(r, select, include_uf=False) for r in page], len(rows), next_start


# ----------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class _FieldTypes:
    numeric: frozenset[str]
    dates: frozenset[str]
    parse_date: Callable[[Any], datetime]

    def coerce(self, key: str, value: Any) -> Any:
        if value is None or value == "":
            return None
        if key in self.dates:
            return value if isinstance(value, datetime) else self.parse_date(value)
        if key in self.numeric:
            try:
                return int(str(value))
            except ValueError:
                return None
        return str(value)


def _parse_iso_utc(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_STAT_NUMERIC = frozenset(
    {
        "ID",
        "PORTAL_USER_ID",
        "CALL_DURATION",
        "CALL_TYPE",
        "CRM_ENTITY_ID",
        "CRM_ACTIVITY_ID",
        "RECORD_DURATION",
        "RECORD_FILE_ID",
        "CALL_VOTE",
    }
)
_STATUS_TYPES = _FieldTypes(frozenset({"ID", "SORT"}), frozenset(), _parse_iso_utc)


def _filter_of(params: Mapping[str, Any]) -> Mapping[str, Any]:
    value = _lookup(params, "filter")
    return value if isinstance(value, Mapping) else {}


def _matches(row: Mapping[str, Any], conditions: Mapping[str, Any], types: _FieldTypes) -> bool:
    for raw_key, wanted in conditions.items():
        match = _FILTER_KEY.match(str(raw_key))
        if not match:
            continue
        op, key = match.group(1) or "=", match.group(2).upper()
        have = types.coerce(key, row.get(key))
        if op in {"@", "!@"}:
            options = {types.coerce(key, v) for v in _as_list(wanted)}
            inside = have in options
            if inside != (op == "@"):
                return False
            continue
        if isinstance(wanted, list | tuple | Mapping):
            # A list value without a prefix means IN, as in the real filter.
            inside = have in {types.coerce(key, v) for v in _as_list(wanted)}
            if inside == (op in {"!", "!="}):
                return False
            continue
        want = types.coerce(key, wanted)
        if op in {"=", "!", "!="}:
            if (have == want) == (op != "="):
                return False
            continue
        if have is None or want is None:
            return False
        try:
            ok = {">=": have >= want, ">": have > want, "<=": have <= want, "<": have < want}[op]
        except TypeError:
            return False
        if not ok:
            return False
    return True


def _ordered(rows: list[dict[str, Any]], order: Any, types: _FieldTypes) -> list[dict[str, Any]]:
    result = sorted(rows, key=lambda r: int(r["ID"]))
    if not isinstance(order, Mapping):
        return result
    for raw_key, direction in reversed(list(order.items())):
        key = str(raw_key).upper()
        descending = str(direction).upper() == "DESC"

        def sort_key(row: dict[str, Any], key: str = key) -> tuple[int, Any]:
            value = types.coerce(key, row.get(key))
            return (0, "") if value is None else (1, value)

        result.sort(key=sort_key, reverse=descending)
    return result


def _form_tree(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """PHP-style pairs (`fields[TITLE]=x`, `select[]=ID`) as nested dicts."""
    pairs = [(k, v) for k, v in pairs if k]
    if not pairs:
        return {}
    return parse_form(urlencode(pairs))


def _binding(value: Any) -> EntityRef | None:
    """A UF_CRM_TASK entry ("L_4", "D_10") as the card it names; None for contacts and others."""
    match = _BINDING.match(str(value).strip())
    if not match:
        return None
    kind = EntityType.LEAD if match.group(1) == "L" else EntityType.DEAL
    return EntityRef(kind, str(int(match.group(2))))


def _upper(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).upper(): v for k, v in fields.items()}
