"""A fake amoCRM (Kommo) account: REST API v4 over real HTTP, and the account webhooks.

Wire facts and where they were checked:

- Leads API (amocrm.ru/developers/content/crm_platform/leads-api, mirrored in the
  biradrags/amo-docs repository): `GET /api/v4/leads` with `page`, `limit` (at most 250),
  `filter`, `order[created_at|updated_at|id]=asc|desc`; HAL JSON `{"_page", "_links": {"self",
  "next"}, "_embedded": {"leads": [...]}}`; `GET /api/v4/leads/{id}` answers **204** for a
  lead that does not exist; `PATCH /api/v4/leads` takes an array, `PATCH /api/v4/leads/{id}`
  one object; both answer `{"_embedded": {"leads": [{"id", "updated_at", ...}]}}`.
- Filters (filters-api): `filter[id]` may be one value or an array (`filter[id][]=`,
  `filter[id][0]=`); `filter[updated_at][from|to]` are unix seconds.
- Custom field writes (custom-fields#cf-fill-examples): `{"field_id"|"field_code", "values":
  [{"value"}]}`; date/date_time take unix seconds (or RFC 3339); checkbox a bool; select a
  `value`, `enum_id` or `enum_code`.
- Limits (developers.kommo.com/docs/limitations): 7 requests/s, then 429; at most 250
  entities added or updated per request (50 recommended). The fake counts requests per second
  of its clock (`FixedWindow`), as "7 a second" reads: a client that keeps to at most 7 in any
  second is never refused, one that bursts twice its bucket across a second's edge is. Kommo's http-codes page shows the
  over-250 answer as 422 `{"detail": "Limit 250 per page"}`.
- 429 body: the official PHP client (amocrm/amocrm-api-php, AmoCRMApiRequest::parseResponse)
  raises TooManyRequests only when the 429 body is *not* JSON, so the fake answers plain
  text; Kommo's http-codes page shows a problem+json body with `"retry_after": 300` instead,
  available as `too_many_requests_problem`. No source shows a Retry-After header: none is sent.
- Webhooks (crm_platform/webhooks-format): form-encoded `leads[{action}][0][...]`, custom
  fields as `[custom_fields][N][id|name|values]`, where a date or checkbox value is bare
  (`[values][0]=1412380800`) and others are `[values][0][value]` (+ `[enum]` for selects);
  then `account[subdomain|id|_links][self]`.
- Note webhooks are not in the docs; their shape comes from bodies captured in public code:
  `leads[note][0][note][id|element_id|element_type|note_type|text|created_by|modified_by|
  main_user_id|group_id|account_id|date_create|timestamp_x|created_at|updated_at]`, with a
  numeric `note_type` (4 common, 10 incoming call, 11 outgoing call), `date_create` as the
  account's local "YYYY-MM-DD HH:MM:SS", and a call's details as JSON in `text`
  (`UNIQ`, `DURATION`, `LINK`, `PHONE`, `SRC`).

- Notes list (crm_platform/events-and-notes, "Список примечаний по типу сущности"):
  `GET /api/v4/leads/notes` with `page`, `limit` (at most 250), `filter[id]`,
  `filter[entity_id]` (an array), `filter[note_type]` (string or array), `order[id|updated_at]`;
  HAL `_embedded.notes` of `{id, entity_id, created_by, updated_by, created_at, updated_at,
  responsible_user_id, group_id, note_type (a name such as "call_out"), params, account_id}`;
  204 when nothing matches, as every v4 list.
- Call notes: API v4 `params` {uniq, duration, source, link, phone, call_status, call_result}
  (call_status 4 talked, 1 left a message, 2 call back later, 3 not available, 5 wrong number,
  6 no answer, 7 busy); the note webhook carries the same call as a JSON string in `text` with
  upper-case `UNIQ`, `DURATION`, `SRC`, `LINK`, `PHONE` (public handlers read `text["LINK"]`)
  and `call_status`, `call_result` as given.
- Events (crm_platform/events-and-notes, developers.kommo.com/reference/events-filtration):
  `GET /api/v4/events` with `page`, `limit` (at most 100 on amocrm.ru; Kommo's English page
  says 250, the fake keeps the stricter), `filter[type]` (a comma list), `filter[created_at]`
  (a timestamp or `[from]`/`[to]`), `filter[entity]`; HAL `_embedded.events` of `{id (a
  string), type, entity_id, entity_type, created_by, created_at, value_after, value_before,
  account_id, _links, _embedded}`; a call event's `value_after` is `[{"note": {"id": N}}]`;
  204 when nothing matches. Listed newest first, as the account's event feed shows them.

- Users (crm_platform/users-api): `GET /api/v4/users` with `page`, `limit` (at most 250); HAL
  `{"_total_items", "_page", "_page_count", "_links", "_embedded": {"users": [{id, name, email,
  lang, rights: {..., is_admin, is_free, is_active, group_id, role_id}, _links}]}}`; "available
  only with the account admin's rights": 403 otherwise (`token_is_admin=False`).
- Pipelines (crm_platform/leads_pipelines): `GET /api/v4/leads/pipelines` lists them all (at most
  50, no paging), each with `_embedded.statuses` of `{id, name, sort, is_editable, pipeline_id,
  color, type, account_id}`; every pipeline has 142 and 143, under names of its own.

- Loss reasons (leads-api; Kommo's reference "Get loss reasons"): a lead's `loss_reason_id` (an
  int or null, top level; `with=loss_reason` also embeds `_embedded.loss_reason`, a list of one
  `{id, name, sort, created_at, updated_at}`); `GET /api/v4/leads/loss_reasons` lists them in
  `_embedded.loss_reasons`. The documented `leads[status]` hook shows no loss reason, so the fake
  sends none. `reject` closes a lead as lost (143) with a reason, as a manager does.
- Pipelines: a lead moves to another pipeline with `pipeline_id`; its `status_id` must be one of
  that pipeline's (142 and 143 are in each).
- Tasks (crm_platform/tasks-api): `POST /api/v4/tasks` (an array; text and complete_till required;
  entity_id with entity_type "leads"; the responsible an account user, the token's by default;
  task_type_id 1 or 2) answers `_embedded.tasks[{id, request_id}]`; `PATCH /api/v4/tasks/{id}`
  (is_completed, result.text, text, complete_till); `GET /api/v4/tasks/{id}` (204 when missing).
  How a missing lead or task is refused is not documented: the fake answers as for a missing lead
  in a PATCH (validation-errors with code NotFound).
- Notes (events-and-notes, "Добавление примечаний"): `POST /api/v4/leads/notes` (an array of
  `{entity_id, note_type, params}`; common needs params.text), by the token's user unless
  `created_by` is given; each note's `leads[note]` hook is echoed like other REST writes.

Tests read tasks and notes through leadwatch.testing.work: `fake.tasks[task_id]` (a `FakeTask`,
title None) and `fake.notes_on(entity)` (the lead's common notes as `FakeNote`s).

REST writes come back as webhooks (`emit_on_rest_writes`, on by default), as a real account
sends its hooks for changes made through the API too: leadwatch sees its own verdict writes.
Tasks send none (`task[...]` hooks are not modelled; leadwatch does not read them).

Tests set the account's users with `set_users` / `add_user` and add pipelines with `add_pipeline`;
`reset` brings back the defaults (one admin user, the main pipeline).

Not modelled: contacts and companies themselves (a contact call exists only as its event and
note), tags, a single note by id, the task list, tasks on anything but leads, event types other
than calls, access rights beyond the users list's admin check, the 403 IP block after repeated
429s.
"""

from __future__ import annotations

import copy
import hmac
import itertools
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, TypeVar
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from crm_adapters.formdata import encode_form
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.server import FakeServer, Fault, FixedWindow, Reply, Request, slow_fault
from leadwatch.testing.work import FakeNote, FakeTask

PAGE_LIMIT_DEFAULT = 50
FIRST_LEAD_ID = 31_000_001
FIRST_NOTE_ID = 213_000_001
PAGE_LIMIT_MAX = 250
EVENTS_LIMIT_MAX = 100
FIRST_CONTACT_ID = 41_000_001
BULK_LIMIT = 250
WON = 142
LOST = 143
HAL = "application/hal+json"
PROBLEM = "application/problem+json"

# The account's owner, an admin (the token's user), as on a new account.
DEFAULT_USERS: dict[int, str] = {1: "Account Owner"}
MAIN_PIPELINE = "Воронка"  # a new account's main pipeline, as leads_pipelines shows it

DEFAULT_STATUSES: dict[int, str] = {
    70011: "Неразобранное",
    70012: "Первичный контакт",
    70013: "Переговоры",
    WON: "Успешно реализовано",
    LOST: "Закрыто и не реализовано",
}

# A new account's loss reasons (id -> name); tests add their own with `add_loss_reason`.
DEFAULT_LOSS_REASONS: dict[int, str] = {
    4203748: "Пропала потребность",
    4203751: "Дорого",
    4203754: "Не выходит на связь",
}
FIRST_TASK_ID = 4_745_251
TASK_TYPES = {1: "Связаться", 2: "Встреча"}  # tasks-api: the two standard types

# note_type as the webhook carries it (a number) and as API v4 names it.
NOTE_TYPES: dict[str, int] = {"common": 4, "call_in": 10, "call_out": 11}
# The event a call note records, by the note's type.
CALL_EVENTS: dict[str, str] = {"call_in": "incoming_call", "call_out": "outgoing_call"}
# An event's `entity_type` (singular, as filter[entity] takes it) -> the entity's API path.
_EVENT_ENTITY_PATHS: dict[str, str] = {"lead": "leads", "contact": "contacts", "company": "companies"}

_T = TypeVar("_T")
_LEAD_PATH = re.compile(r"^/api/v4/leads/([^/]+)/?$")
_TASK_PATH = re.compile(r"^/api/v4/tasks/([^/]+)/?$")
_DIGITS = re.compile(r"^[0-9]{1,18}$")
_FILTER_ID_KEY = re.compile(r"^filter\[id\](\[[0-9]*\])?$")
_FILTER_ENTITY_ID_KEY = re.compile(r"^filter\[entity_id\](\[[0-9]*\])?$")
_FILTER_NOTE_TYPE_KEY = re.compile(r"^filter\[note_type\](\[[0-9]*\])?$")
_FILTER_TYPE_KEY = re.compile(r"^filter\[type\](\[[0-9]*\])?$")
_FILTER_ENTITY_KEY = re.compile(r"^filter\[entity\](\[[0-9]*\])?$")


@dataclass(frozen=True)
class CustomField:
    """A lead custom field of the account. `enums` maps enum id -> value (select fields)."""

    id: int
    name: str
    type: str = "text"  # text, textarea, numeric, checkbox, select, multiselect, date, date_time
    enums: dict[int, str] = field(default_factory=dict)
    code: str | None = None


DEFAULT_FIELDS: tuple[CustomField, ...] = (
    CustomField(584211, "Дата поступления", "date_time"),
    CustomField(584213, "Обработана вовремя", "select", {1584213: "Yes", 2584213: "No"}),
    CustomField(584215, "Источник", "text"),
)

_DATE_TYPES = {"date", "date_time", "birthday"}
_ENUM_TYPES = {"select", "multiselect", "radiobutton"}
_BARE_HOOK_TYPES = _DATE_TYPES | {"checkbox"}


def _utc_now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------- faults
def _problem(status: int, title: str, detail: str, **extra: Any) -> Reply:
    body = {
        "title": title,
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
        **extra,
    }
    return Reply.json(status, body, content_type=PROBLEM)


def too_many_requests(request: Request) -> Reply:
    """429 with a non-JSON body, the shape the official PHP client recognises."""
    return Reply(429, b"Too Many Requests", content_type="text/plain; charset=utf-8")


def too_many_requests_problem(request: Request) -> Reply:
    """429 as developers.kommo.com/docs/http-codes shows it: problem+json with retry_after."""
    return _problem(
        429,
        "Too Many Requests",
        "You have sent too many requests in a given amount of time. Please try again later.",
        retry_after=300,
    )


def internal_error(request: Request) -> Reply:
    return _problem(500, "Internal Server Error", "Internal Server Error")


def bad_gateway(request: Request) -> Reply:
    # A proxy in front of the API answers, so the body is its HTML page, not problem+json.
    return Reply(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")


def slow(seconds: float) -> Fault:
    """A fault that answers after `seconds`, with the real reply (see leadwatch.testing.server.slow_fault)."""
    return slow_fault(seconds, internal_error)


# ----------------------------------------------------------------------------- errors
class _Invalid(Exception):
    """One validation error of one item, in amoCRM's `validation-errors` vocabulary."""

    def __init__(self, code: str, path: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.path = path
        self.detail = detail

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "detail": self.detail}


class _BadRequest(Exception):
    def __init__(self, reply: Reply):
        super().__init__(reply.status)
        self.reply = reply


def _validation_failed(errors: dict[int, list[_Invalid]]) -> Reply:
    return _problem(
        400,
        "Bad Request",
        "Request validation failed",
        **{
            "validation-errors": [
                {"request_id": str(index), "errors": [e.as_dict() for e in found]}
                for index, found in sorted(errors.items())
            ]
        },
    )


def _each_valid(items: list[Any], check: Callable[[Any], _T]) -> list[_T]:
    """`check` of every item of a bulk request. amoCRM validates the whole request first: one
    invalid item refuses it all (400 with each item's errors by `request_id`), nothing applied."""
    errors: dict[int, list[_Invalid]] = {}
    checked: list[_T] = []
    for index, item in enumerate(items):
        try:
            checked.append(check(item))
        except _Invalid as exc:
            errors[index] = [exc]
    if errors:
        raise _BadRequest(_validation_failed(errors))
    return checked


def _int_value(value: Any) -> int | None:
    """An int from JSON (int or digit string); bools and everything else give None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.match(value.strip()):
        return int(value.strip())
    return None


# ----------------------------------------------------------------------------- the account
class FakeAmoCrm(FakeServer):
    name = "amocrm"

    def __init__(
        self,
        subdomain: str = "acme",
        account_id: str = "100500",
        token: str = "token",
        rate_limit: int = 7,
        rate_window: float = 1.0,
        clock: Callable[[], datetime] = _utc_now,
        pipeline_id: int = 7001,
        statuses: dict[int, str] | None = None,
        *,
        custom_fields: tuple[CustomField, ...] | list[CustomField] = DEFAULT_FIELDS,
        timezone: str = "Europe/Moscow",
        emit_on_rest_writes: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        """`rate_limit` requests in each `rate_window` seconds of `monotonic`, then 429."""
        super().__init__()
        self.subdomain = subdomain
        self.account_id = str(account_id)
        self.token = token
        self.clock = clock
        self.pipeline_id = pipeline_id
        self.statuses: dict[int, str] = dict(statuses or DEFAULT_STATUSES)
        for closed, title in ((WON, DEFAULT_STATUSES[WON]), (LOST, DEFAULT_STATUSES[LOST])):
            self.statuses.setdefault(closed, title)  # 142 and 143 exist in every pipeline
        self.fields: dict[int, CustomField] = {f.id: f for f in custom_fields}
        # The account's users (id -> {name, email, active}) and pipelines besides the main one
        # (id -> (name, statuses)); kept across `reset` only as the defaults. False: the token is
        # not an admin's, and /api/v4/users answers 403.
        self.token_is_admin = True
        # The user whose long-lived token the API is called with (the account owner by default):
        # the author of the tasks and notes an integration adds, and a task's responsible when
        # none is given.
        self.token_user_id = 1
        self.loss_reasons: dict[int, str] = {}
        self.pipeline_name = MAIN_PIPELINE
        self.users: dict[int, dict[str, Any]] = {}
        self.other_pipelines: dict[int, tuple[str, dict[int, str]]] = {}
        self._default_names()
        self.zone = ZoneInfo(timezone)
        self.emit_on_rest_writes = self._emit_default = emit_on_rest_writes
        # Seconds of `monotonic` (real by default), not `clock`: a simulated clock that stands
        # still would never move on to the next window.
        self.monotonic = monotonic
        self._rate = (rate_limit, rate_window)
        self.rate_limit = FixedWindow(rate_limit, rate_window, clock=monotonic)
        self.outbox: list[bytes] = []
        # What it returns is not read: a test's list.append, the local stack's post_hook.
        self.deliver: Callable[[bytes], object] = self.outbox.append
        # REST writes actually applied, in order: (method, lead id). Lets a test see that a
        # retried bulk PATCH wrote each card exactly once.
        self.applied: list[tuple[str, int]] = []
        self._leads: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        # Notes on contacts: not served by /api/v4/leads/notes, only pointed to by their events.
        self.contact_notes: dict[int, dict[str, Any]] = {}
        # The account's event feed (calls only), in the order they were recorded.
        self.events: list[dict[str, Any]] = []
        # Tasks by id (leadwatch.testing.work.FakeTask; `title` is None: amoCRM tasks have a text only).
        self.tasks: dict[str, FakeTask] = {}
        self._task_ids = itertools.count(FIRST_TASK_ID)
        self._lead_ids = itertools.count(FIRST_LEAD_ID)
        self._note_ids = itertools.count(FIRST_NOTE_ID)
        self._event_ids = itertools.count(1)
        self._request_ids = itertools.count(1)

    def reset(self) -> None:
        """Forget every lead, note, webhook, log entry and fault, as a fresh account would be
        (tests can share one running server instead of paying for a start and stop each)."""
        with self.lock:
            self._leads.clear()
            self.notes.clear()
            self.contact_notes.clear()
            self.events.clear()
            self.tasks.clear()
            self._task_ids = itertools.count(FIRST_TASK_ID)
            self._lead_ids = itertools.count(FIRST_LEAD_ID)
            self._note_ids = itertools.count(FIRST_NOTE_ID)
            self._event_ids = itertools.count(1)
            self.outbox.clear()
            self.pending_echoes.clear()
            self.deliver = self.outbox.append
            self.applied.clear()
            self.emit_on_rest_writes = self._emit_default
            self.rate_limit = FixedWindow(*self._rate, clock=self.monotonic)
            self._default_names()
        self.clear_faults()
        self.clear_log()

    # ------------------------------------------------------------------ setup helpers
    @property
    def account_url(self) -> str:
        """The account's public address, as webhooks and HAL links name it."""
        return f"https://{self.subdomain}.amocrm.ru"

    def first_stages(self) -> list[int]:
        """Where a new lead waits before anyone works it: the unsorted stage and the first one."""
        return [s for s in self.statuses if s not in (WON, LOST)][:2]

    def work_stage(self) -> int:
        """The stage a manager moves a lead to when taking it: the first after `first_stages`."""
        open_stages = [s for s in self.statuses if s not in (WON, LOST)]
        later = open_stages[2:] or open_stages[-1:] or [WON]
        return later[0]

    def add_field(
        self,
        field_id: int,
        name: str,
        field_type: str = "text",
        enums: dict[int, str] | None = None,
        code: str | None = None,
    ) -> None:
        with self.lock:
            self.fields[field_id] = CustomField(field_id, name, field_type, dict(enums or {}), code)

    def add_user(
        self, user_id: int | str, name: str, *, active: bool = True, email: str = "", admin: bool = False
    ) -> None:
        """A user of the account, as /api/v4/users lists them (an existing id is replaced)."""
        ident = _int_value(user_id)
        if ident is None or ident <= 0:
            raise ValueError(f"a user id is a positive integer, got {user_id!r}")
        with self.lock:
            self.users[ident] = {
                "name": name,
                "email": email or f"user{ident}@example.com",
                "active": active,
                "admin": admin,
            }

    def set_users(self, users: Mapping[Any, str]) -> None:
        """Replace every user: id -> full name."""
        with self.lock:
            self.users.clear()
            for user_id, name in users.items():
                self.add_user(user_id, name)

    def add_pipeline(self, pipeline_id: int, name: str, statuses: Mapping[int, str]) -> None:
        """Another pipeline with these statuses (142 and 143 are added, as every pipeline has
        them; give them to name them otherwise). Leads are not moved into it."""
        own = dict(statuses)
        for closed in (WON, LOST):
            own.setdefault(closed, DEFAULT_STATUSES[closed])
        with self.lock:
            self.other_pipelines[pipeline_id] = (name, own)

    def add_loss_reason(self, reason_id: int, name: str) -> None:
        """A loss reason of the account, as /api/v4/leads/loss_reasons lists them."""
        with self.lock:
            self.loss_reasons[reason_id] = name

    def statuses_of(self, pipeline_id: int) -> dict[int, str] | None:
        """A pipeline's statuses (142 and 143 included); None for a pipeline the account lacks."""
        if pipeline_id == self.pipeline_id:
            return self.statuses
        other = self.other_pipelines.get(pipeline_id)
        return other[1] if other is not None else None

    def _default_names(self) -> None:
        self.token_is_admin = True
        self.token_user_id = 1
        self.loss_reasons = dict(DEFAULT_LOSS_REASONS)
        self.users = {}
        for user_id, name in DEFAULT_USERS.items():
            self.add_user(user_id, name, admin=True)
        self.other_pipelines = {}

    # ------------------------------------------------------------------ Python API
    def create_lead(
        self,
        name: str = "",
        responsible_user_id: str = "1",
        status_id: int | str | None = None,
        created_at: datetime | None = None,
        custom_fields: Mapping[int | str, Any] | None = None,
        *,
        price: int = 0,
        by: str | None = None,
    ) -> str:
        with self.lock:
            now = self._stamp(created_at)
            author = int(by if by is not None else responsible_user_id)
            lead = self._new_lead(name, int(responsible_user_id), now, author)
            changes: dict[str, Any] = {"price": price}
            if status_id is not None:
                changes["status_id"] = int(status_id)
            if custom_fields:
                changes["custom_fields_values"] = [
                    {
                        ("field_id" if str(k).isdigit() else "field_code"): (
                            int(k) if str(k).isdigit() else k
                        ),
                        "values": self._python_values(v),
                    }
                    for k, v in custom_fields.items()
                ]
            self._apply_or_raise(lead, changes, now, author)
            self._leads[lead["id"]] = lead
            body = self.webhook_body("add", [self._hook_payload(lead)])
        self.deliver(body)
        return str(lead["id"])

    def change_status(
        self, lead_id: str | int, status_id: int | str, *, at: datetime | None = None, by: str = "1"
    ) -> None:
        self._change(lead_id, {"status_id": int(status_id)}, at, by, "status")

    def reject(
        self,
        lead_id: str | int,
        reason_id: int | None = None,
        *,
        at: datetime | None = None,
        by: str = "1",
    ) -> None:
        """A manager closes the lead as lost (143), with a loss reason when given: the account sends
        `leads[status]`, which, as the documented one, does not carry the reason."""
        changes: dict[str, Any] = {"status_id": LOST}
        if reason_id is not None:
            changes["loss_reason_id"] = reason_id
        self._change(lead_id, changes, at, by, "status")

    def notes_on(self, entity: EntityRef) -> list[FakeNote]:
        """The lead's common notes, oldest first, however added (the API or `add_note`)."""
        ident = _int_value(entity.id) if entity.type is EntityType.LEAD else None
        with self.lock:
            return [
                FakeNote(
                    str(note["id"]),
                    entity,
                    str(note["params"].get("text", "")),
                    str(note["created_by"]),
                    datetime.fromtimestamp(note["created_at"], UTC),
                )
                for note in sorted(self.notes.values(), key=itemgetter("id"))
                if note["entity_id"] == ident and note["note_type"] == "common"
            ]

    def set_responsible(
        self, lead_id: str | int, user_id: str | int, *, at: datetime | None = None, by: str = "1"
    ) -> None:
        self._change(lead_id, {"responsible_user_id": int(user_id)}, at, by, "responsible")

    def update_lead(
        self, lead_id: str | int, *, at: datetime | None = None, by: str = "1", **fields: Any
    ) -> None:
        """Change name, price, status_id, responsible_user_id or custom_fields ({id: value})."""
        unknown = set(fields) - {"name", "price", "status_id", "responsible_user_id", "custom_fields"}
        if unknown:
            raise ValueError(f"update_lead cannot change {sorted(unknown)}")
        changes = {k: v for k, v in fields.items() if k != "custom_fields"}
        if "custom_fields" in fields:
            changes["custom_fields_values"] = [
                {"field_id": int(k), "values": self._python_values(v)}
                for k, v in fields["custom_fields"].items()
            ]
        self._change(lead_id, changes, at, by, "update")

    def add_note(
        self,
        lead_id: str | int,
        note_type: str = "common",
        author: str = "1",
        text: str = "",
        created_at: datetime | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        """A note on a lead. `call_in` / `call_out` notes take params uniq, duration, link, phone,
        source, call_status, call_result (kept as given, so a test can send a string duration), and
        also record an `incoming_call` / `outgoing_call` event in the feed, as the account does."""
        if note_type not in NOTE_TYPES:
            raise ValueError(f"note_type must be one of {sorted(NOTE_TYPES)}")
        with self.lock:
            lead = self._find(lead_id)
            note_id, body = self._insert_note(
                lead, note_type, int(author), text, self._stamp(created_at), params
            )
        self.deliver(body)
        return str(note_id)

    def _insert_note(
        self,
        lead: dict[str, Any],
        note_type: str,
        author: int,
        text: str,
        moment: int,
        params: Mapping[str, Any] | None,
    ) -> tuple[int, bytes]:
        """Keep a note (and a call note's event); returns its id and its `leads[note]` hook."""
        note_id = next(self._note_ids)
        call = dict(params or {})
        self.notes[note_id] = {
            "id": note_id,
            "entity_id": lead["id"],
            "note_type": note_type,
            "created_by": author,
            "updated_by": author,
            "created_at": moment,
            "updated_at": moment,
            # The notes API shows the card's responsible user as the note's.
            "responsible_user_id": lead["responsible_user_id"],
            "group_id": lead["group_id"],
            "params": call if note_type != "common" else {"text": text},
        }
        if note_type == "common":
            wire_text = text
        else:
            wire_text = self._call_text(note_id, call)
            self._record_call_event(note_type, "lead", lead["id"], note_id, author, moment)
        payload = self._note_hook(note_id, "2", lead["id"], note_type, wire_text, str(author), moment)
        payload["note"]["main_user_id"] = str(lead["responsible_user_id"])
        return note_id, self.webhook_body("note", [payload])

    def add_contact_call(
        self,
        contact_id: str | int = FIRST_CONTACT_ID,
        direction: str = "out",
        author: str = "1",
        created_at: datetime | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> str:
        """A call on a contact only (no lead): its note and an event with entity_type "contact".
        The note is not on a lead, so /api/v4/leads/notes never shows it. Returns the note id."""
        if direction not in ("in", "out"):
            raise ValueError('direction must be "in" or "out"')
        note_type = "call_in" if direction == "in" else "call_out"
        ident = _int_value(contact_id)
        if ident is None:
            raise ValueError(f"contact id must be an integer, got {contact_id!r}")
        with self.lock:
            moment = self._stamp(created_at)
            note_id = next(self._note_ids)
            call = dict(params or {})
            self.contact_notes[note_id] = {
                "id": note_id,
                "entity_id": ident,
                "note_type": note_type,
                "created_by": int(author),
                "created_at": moment,
                "params": call,
            }
            self._record_call_event(note_type, "contact", ident, note_id, int(author), moment)
            payload = self._note_hook(
                note_id, "1", ident, note_type, self._call_text(note_id, call), author, moment
            )
            body = self.webhook_body("note", [payload], entity="contacts")
        self.deliver(body)
        return str(note_id)

    def delete_note(self, note_id: str | int) -> None:
        """Delete a lead note; its call event stays in the feed, pointing at nothing."""
        ident = _int_value(note_id)
        with self.lock:
            if ident is None or self.notes.pop(ident, None) is None:
                raise KeyError(f"no note {note_id}")

    def call_events(self) -> list[dict[str, Any]]:
        """Copies of the feed's call events, as `GET /api/v4/events` shows them, oldest first."""
        with self.lock:
            return [self._event_wire(event) for event in self.events]

    def lead(self, lead_id: str | int) -> dict[str, Any]:
        """A copy of the lead as `GET /api/v4/leads/{id}` returns it."""
        with self.lock:
            return copy.deepcopy(self._wire(self._find(lead_id)))

    @property
    def limit_refusals(self) -> int:
        """Requests the account's per-second limit refused (429), scripted faults aside."""
        return self.rate_limit.refused

    def delete_lead(self, lead_id: str | int, *, emit: bool = True) -> None:
        """Delete a lead as a person would; the account sends `leads[delete]` with the card's id,
        stage and pipeline (unless `emit` is False: a lost hook)."""
        with self.lock:
            lead = self._find(lead_id)
            del self._leads[lead["id"]]
            payload = {
                "id": str(lead["id"]),
                "status_id": str(lead["status_id"]),
                "pipeline_id": str(lead["pipeline_id"]),
            }
            body = self.webhook_body("delete", [payload])
        if emit:
            self.deliver(body)

    def lead_ids(self) -> list[str]:
        with self.lock:
            return [str(i) for i in self._leads]

    def webhook_body(
        self, action: str, entity_payloads: list[dict[str, Any]], entity: str = "leads"
    ) -> bytes:
        """The form body amoCRM POSTs for `{entity}[action]`, one `[N]` group per payload."""
        return encode_form(
            {
                entity: {action: list(entity_payloads)},
                "account": {
                    "subdomain": self.subdomain,
                    "id": self.account_id,
                    "_links": {"self": self.account_url},
                },
            }
        )

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _call_text(note_id: int, call: Mapping[str, Any]) -> str:
        """A call note hook's `text`: the call as JSON with the upper-case keys of captured hooks.
        DURATION, call_status and call_result appear only when the call has them, so the hook
        and the API's `params` tell the same call."""
        data: dict[str, Any] = {"UNIQ": str(call.get("uniq", f"call-{note_id}"))}
        if "duration" in call:
            data["DURATION"] = call["duration"]
        data["SRC"] = str(call.get("source", "telephony"))
        data["LINK"] = call.get("link", "")
        data["PHONE"] = str(call.get("phone", ""))
        for key in ("call_status", "call_result"):
            if key in call:
                data[key] = call[key]
        return json.dumps(data, ensure_ascii=False)

    def _note_hook(
        self,
        note_id: int,
        element_type: str,
        element_id: int,
        note_type: str,
        text: str,
        author: str,
        moment: int,
    ) -> dict[str, Any]:
        local = datetime.fromtimestamp(moment, UTC).astimezone(self.zone).strftime("%Y-%m-%d %H:%M:%S")
        return {
            "note": {
                "element_type": element_type,
                "element_id": str(element_id),
                "note_type": str(NOTE_TYPES[note_type]),
                "text": text,
                "account_id": self.account_id,
                "date_create": local,
                "timestamp_x": local,
                "created_by": str(author),
                "modified_by": str(author),
                "main_user_id": str(author),
                "group_id": "0",
                "id": str(note_id),
                "created_at": str(moment),
                "updated_at": str(moment),
            }
        }

    def _record_call_event(
        self, note_type: str, entity_type: str, entity_id: int, note_id: int, author: int, moment: int
    ) -> None:
        self.events.append(
            {
                # Event ids are strings (hex-like in live accounts), unlike every other id.
                "id": f"{next(self._event_ids):024x}",
                "type": CALL_EVENTS[note_type],
                "entity_id": entity_id,
                "entity_type": entity_type,
                "created_by": author,
                "created_at": moment,
                "value_after": [{"note": {"id": note_id}}],
                "value_before": [],
            }
        )

    def _stamp(self, at: datetime | None = None) -> int:
        moment = at or self.clock()
        if moment.tzinfo is None:
            raise ValueError("the fake account needs aware datetimes")
        return int(moment.timestamp())

    def _find(self, lead_id: str | int) -> dict[str, Any]:
        ident = _int_value(lead_id)
        lead = self._leads.get(ident) if ident is not None else None
        if lead is None:
            raise KeyError(f"no lead {lead_id}")
        return lead

    def _new_lead(self, name: str, responsible: int, now: int, author: int) -> dict[str, Any]:
        return {
            "id": next(self._lead_ids),
            "name": name,
            "price": 0,
            "responsible_user_id": responsible,
            "group_id": 0,
            "status_id": self.first_stages()[0],
            "pipeline_id": self.pipeline_id,
            "loss_reason_id": None,
            "created_by": author,
            "updated_by": author,
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
            "cf": {},
        }

    @staticmethod
    def _python_values(value: Any) -> list[dict[str, Any]] | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return [{"value": int(value.timestamp())}]
        return [{"value": value}]

    def _apply_or_raise(
        self, lead: dict[str, Any], changes: dict[str, Any], now: int, by: int
    ) -> dict[str, Any]:
        try:
            plan = self._validate(changes, lead, "")
        except _Invalid as exc:
            raise ValueError(f"{exc.path}: {exc.detail}") from None
        return self._apply(lead, plan, now, by)

    def _change(
        self, lead_id: str | int, changes: dict[str, Any], at: datetime | None, by: str, action: str
    ) -> None:
        with self.lock:
            lead = self._find(lead_id)
            now = self._stamp(at)
            before = self._apply_or_raise(lead, changes, now, int(by))
            body = self.webhook_body(action, [self._hook_payload(lead, before)])
        self.deliver(body)

    def _validate(self, item: Mapping[str, Any], lead: dict[str, Any] | None, prefix: str) -> dict[str, Any]:
        """Check one lead's changes; returns them normalized. Raises _Invalid (the first problem)."""
        plan: dict[str, Any] = {}
        if "name" in item:
            if not isinstance(item["name"], str):
                raise _Invalid("InvalidType", f"{prefix}name", "This value should be of type string.")
            plan["name"] = item["name"]
        for key in ("price", "responsible_user_id", "created_by", "updated_by"):
            if key in item:
                value = _int_value(item[key])
                if value is None:
                    raise _Invalid("InvalidType", f"{prefix}{key}", "This value should be of type int.")
                plan[key] = value
        pipeline = lead["pipeline_id"] if lead is not None else self.pipeline_id
        if "pipeline_id" in item:
            pipeline = _int_value(item["pipeline_id"]) or 0
            if self.statuses_of(pipeline) is None:
                raise _Invalid(
                    "NotSupportedChoice",
                    f"{prefix}pipeline_id",
                    "The value you selected is not a valid choice.",
                )
            plan["pipeline_id"] = pipeline
        statuses = self.statuses_of(pipeline) or {}
        if "status_id" in item:
            status = _int_value(item["status_id"])
            # A status belongs to one pipeline (142 and 143 to each): the lead's, or the one given.
            if status not in statuses:
                raise _Invalid(
                    "NotSupportedChoice",
                    f"{prefix}status_id",
                    "The value you selected is not a valid choice.",
                )
            plan["status_id"] = status
        elif "pipeline_id" in plan and lead is not None and plan["pipeline_id"] != lead["pipeline_id"]:
            plan["status_id"] = next(iter(statuses))  # moved to another pipeline: its first stage
        if "loss_reason_id" in item:
            raw = item["loss_reason_id"]
            reason = _int_value(raw) if raw is not None else 0
            if reason is None or (reason != 0 and reason not in self.loss_reasons):
                raise _Invalid(
                    "NotSupportedChoice",
                    f"{prefix}loss_reason_id",
                    "The value you selected is not a valid choice.",
                )
            plan["loss_reason_id"] = reason or None
        if "custom_fields_values" in item:
            plan["cf"] = self._validate_fields(item["custom_fields_values"], f"{prefix}custom_fields_values")
        return plan

    def _validate_fields(self, raw: Any, path: str) -> dict[int, list[dict[str, Any]] | None]:
        if raw is None:
            return {}
        if not isinstance(raw, list):
            raise _Invalid("InvalidType", path, "This value should be of type array.")
        by_code = {f.code: f for f in self.fields.values() if f.code}
        out: dict[int, list[dict[str, Any]] | None] = {}
        for index, entry in enumerate(raw):
            where = f"{path}.{index}"
            if not isinstance(entry, dict):
                raise _Invalid("InvalidType", where, "This value should be of type object.")
            spec: CustomField | None
            if "field_id" in entry:
                field_id = _int_value(entry["field_id"])
                spec = self.fields.get(field_id) if field_id is not None else None
                if spec is None:
                    raise _Invalid(
                        "NotSupportedChoice",
                        f"{where}.field_id",
                        "The value you selected is not a valid choice.",
                    )
            elif "field_code" in entry:
                spec = by_code.get(entry["field_code"]) if isinstance(entry["field_code"], str) else None
                if spec is None:
                    raise _Invalid(
                        "NotSupportedChoice",
                        f"{where}.field_code",
                        "The value you selected is not a valid choice.",
                    )
            else:
                raise _Invalid("NotBlank", f"{where}.field_id", "This value should not be blank.")
            values = entry.get("values")
            if values is None:
                out[spec.id] = None  # `"values": null` clears the field
                continue
            if not isinstance(values, list) or not values:
                raise _Invalid("InvalidType", f"{where}.values", "This value should be of type array.")
            if len(values) > 1 and spec.type != "multiselect":
                raise _Invalid("NotSupportedChoice", f"{where}.values", "This field takes one value.")
            out[spec.id] = [self._field_value(spec, v, f"{where}.values.{n}") for n, v in enumerate(values)]
        return out

    def _field_value(self, spec: CustomField, raw: Any, where: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise _Invalid("InvalidType", where, "This value should be of type object.")
        if spec.type in _ENUM_TYPES:
            enum_id = _int_value(raw.get("enum_id"))
            if enum_id is None and isinstance(raw.get("value"), str):
                enum_id = next((i for i, v in spec.enums.items() if v == raw["value"]), None)
            if enum_id not in spec.enums:
                raise _Invalid(
                    "NotSupportedChoice", f"{where}.value", "The value you selected is not a valid choice."
                )
            return {"value": spec.enums[enum_id], "enum_id": enum_id, "enum_code": None}
        if "value" not in raw:
            raise _Invalid("NotBlank", f"{where}.value", "This value should not be blank.")
        value = raw["value"]
        if spec.type in _DATE_TYPES:
            stamp = _int_value(value)
            if stamp is None and isinstance(value, str):
                try:
                    parsed = datetime.fromisoformat(value)
                except ValueError:
                    parsed = None
                if parsed is not None and parsed.tzinfo is not None:
                    stamp = int(parsed.timestamp())
            if stamp is None:
                raise _Invalid(
                    "InvalidType", f"{where}.value", "This value should be a unix timestamp or RFC-3339."
                )
            return {"value": stamp}
        if spec.type == "checkbox":
            if not isinstance(value, bool):
                raise _Invalid("InvalidType", f"{where}.value", "This value should be of type bool.")
            return {"value": value}
        if spec.type == "numeric":
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise _Invalid("InvalidType", f"{where}.value", "This value should be numeric.")
            try:
                float(value)
            except ValueError:
                raise _Invalid("InvalidType", f"{where}.value", "This value should be numeric.") from None
            return {"value": str(value)}
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise _Invalid("InvalidType", f"{where}.value", "This value should be of type string.")
        return {"value": str(value)}

    def _apply(self, lead: dict[str, Any], plan: dict[str, Any], now: int, by: int) -> dict[str, Any]:
        """Apply validated changes; returns the lead as it was before (for `old_*` hook keys)."""
        before = copy.deepcopy(lead)
        for key, value in plan.items():
            if key == "cf":
                for field_id, values in value.items():
                    if values is None:
                        lead["cf"].pop(field_id, None)
                    else:
                        lead["cf"][field_id] = values
            else:
                lead[key] = value
        if lead["status_id"] != before["status_id"]:
            lead["closed_at"] = now if lead["status_id"] in (WON, LOST) else None
        lead["updated_at"] = now
        lead["updated_by"] = by
        return before

    def _wire(self, lead: dict[str, Any], with_reason: bool = False) -> dict[str, Any]:
        values = [
            {
                "field_id": field_id,
                "field_name": self.fields[field_id].name if field_id in self.fields else "",
                "field_code": self.fields[field_id].code if field_id in self.fields else None,
                "field_type": self.fields[field_id].type if field_id in self.fields else "text",
                "values": copy.deepcopy(vals),
            }
            for field_id, vals in lead["cf"].items()
        ]
        return {
            "id": lead["id"],
            "name": lead["name"],
            "price": lead["price"],
            "responsible_user_id": lead["responsible_user_id"],
            "group_id": lead["group_id"],
            "status_id": lead["status_id"],
            "pipeline_id": lead["pipeline_id"],
            "loss_reason_id": lead["loss_reason_id"],
            "created_by": lead["created_by"],
            "updated_by": lead["updated_by"],
            "created_at": lead["created_at"],
            "updated_at": lead["updated_at"],
            "closed_at": lead["closed_at"],
            "closest_task_at": None,
            "is_deleted": False,
            "custom_fields_values": values or None,
            "score": None,
            "account_id": int(self.account_id) if self.account_id.isdigit() else self.account_id,
            "labor_cost": None,
            "_links": {"self": {"href": f"{self.account_url}/api/v4/leads/{lead['id']}"}},
            "_embedded": {"tags": [], "companies": [], **self._reason_embedded(lead, with_reason)},
        }

    def _reason_embedded(self, lead: dict[str, Any], wanted: bool) -> dict[str, Any]:
        """`with=loss_reason`: the lead's reason in `_embedded.loss_reason`, a list of one
        (leads-api's example), or nothing when the lead has none."""
        reason = lead["loss_reason_id"]
        if not wanted or reason is None:
            return {}
        return {"loss_reason": [self._loss_reason_wire((reason, self.loss_reasons.get(reason, "")))]}

    def _loss_reason_wire(self, entry: tuple[int, str]) -> dict[str, Any]:
        ident, name = entry
        return {
            "id": ident,
            "name": name,
            "sort": 100000 + ident % 1000,
            "created_at": 1582117280,
            "updated_at": 1582117280,
            "_links": {"self": {"href": f"{self.account_url}/api/v4/leads/loss_reasons/{ident}"}},
        }

    def _hook_payload(self, lead: dict[str, Any], before: dict[str, Any] | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(lead["id"]),
            "name": lead["name"],
            "status_id": str(lead["status_id"]),
            "pipeline_id": str(lead["pipeline_id"]),
        }
        if before is not None and before["status_id"] != lead["status_id"]:
            payload["old_status_id"] = str(before["status_id"])
            payload["old_pipeline_id"] = str(before["pipeline_id"])
        payload["price"] = str(lead["price"])
        payload["responsible_user_id"] = str(lead["responsible_user_id"])
        if before is not None and before["responsible_user_id"] != lead["responsible_user_id"]:
            payload["old_responsible_user_id"] = str(before["responsible_user_id"])
        payload.update(
            {
                "last_modified": str(lead["updated_at"]),
                "modified_user_id": str(lead["updated_by"]),
                "created_user_id": str(lead["created_by"]),
                "date_create": str(lead["created_at"]),
                "created_at": str(lead["created_at"]),
                "updated_at": str(lead["updated_at"]),
                "account_id": self.account_id,
            }
        )
        fields = []
        for field_id, values in lead["cf"].items():
            spec = self.fields.get(field_id, CustomField(field_id, ""))
            entry: dict[str, Any] = {"id": str(field_id), "name": spec.name}
            if spec.type in _BARE_HOOK_TYPES:
                entry["values"] = [_hook_scalar(v["value"]) for v in values]
            elif spec.type in _ENUM_TYPES:
                entry["values"] = [{"value": v["value"], "enum": str(v["enum_id"])} for v in values]
            else:
                entry["values"] = [{"value": _hook_scalar(v["value"])} for v in values]
            fields.append(entry)
        if fields:
            payload["custom_fields"] = fields
        return payload

    # ------------------------------------------------------------------ HTTP
    def handle(self, request: Request) -> Reply:
        reply = self._route(request)
        reply.headers.setdefault("X-Request-Id", f"fake-{next(self._request_ids)}")
        return reply

    def _route(self, request: Request) -> Reply:
        path = request.path.rstrip("/") or "/"
        if not path.startswith("/api/v4/"):
            return _problem(404, "Not Found", "Not Found")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.token.encode()):
            return _problem(
                401, "Unauthorized", "Authorization failed: the access token is missing or invalid"
            )
        if not self.rate_limit.admit():
            return too_many_requests(request)
        events: list[bytes] = []
        handlers: dict[str, Callable[[Request, list[bytes]], Reply]]
        try:
            if path == "/api/v4/leads":
                handlers = {"GET": self._list, "PATCH": self._patch_many, "POST": self._create_many}
            elif path == "/api/v4/leads/pipelines":
                handlers = {"GET": self._pipelines}
            elif path == "/api/v4/leads/loss_reasons":
                handlers = {"GET": self._loss_reasons}
            elif path == "/api/v4/tasks":
                handlers = {"POST": self._create_tasks}
            elif _TASK_PATH.match(path):
                handlers = {"GET": self._get_task, "PATCH": self._patch_task}
            elif path == "/api/v4/users":
                handlers = {"GET": self._users}
            elif path == "/api/v4/leads/notes":
                handlers = {"GET": self._notes, "POST": self._create_notes}
            elif path == "/api/v4/events":
                handlers = {"GET": self._events}
            elif _LEAD_PATH.match(path):
                handlers = {"GET": self._get_one, "PATCH": self._patch_one}
            else:
                return _problem(404, "Not Found", f"Route {request.path} not found")
            handler = handlers.get(request.method)
            if handler is None:
                return _problem(405, "Method Not Allowed", "Method Not Allowed")
            with self.lock:
                reply = handler(request, events)
        except _BadRequest as exc:
            return exc.reply
        finally:
            # Sent after the answer, as the account's hook queue does: see flush_echoes.
            with self.lock:
                self.pending_echoes += events
        return reply

    def _hal(self, payload: Any) -> Reply:
        return Reply.json(200, payload, content_type=HAL)

    def _json_body(self, request: Request) -> Any:
        try:
            return json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise _BadRequest(_problem(400, "Bad Request", "Request body is not valid JSON")) from None

    # ---- GET /api/v4/leads
    def _list(self, request: Request, events: list[bytes]) -> Reply:
        query = request.query
        single = {k: v for k, v in query}
        page = self._query_int(single, "page", 1, minimum=1)
        limit = min(self._query_int(single, "limit", PAGE_LIMIT_DEFAULT, minimum=1), PAGE_LIMIT_MAX)
        wanted: set[int] | None = None
        for key, value in query:
            if _FILTER_ID_KEY.match(key):
                ident = _int_value(value)
                if ident is None:
                    raise _BadRequest(_problem(400, "Bad Request", f"{key} must be an integer"))
                wanted = (wanted or set()) | {ident}
        bounds: list[tuple[str, Callable[[int, int], bool], int]] = []
        for stamp_field in ("created_at", "updated_at", "closed_at"):
            for side, test in (("from", lambda a, b: a >= b), ("to", lambda a, b: a <= b)):
                key = f"filter[{stamp_field}][{side}]"
                if key in single:
                    bounds.append((stamp_field, test, self._query_int(single, key, 0, minimum=0)))
        leads = [
            lead
            for lead in self._leads.values()
            if (wanted is None or lead["id"] in wanted)
            and all(lead[f] is not None and test(lead[f], bound) for f, test, bound in bounds)
        ]
        order = [(k[6:-1], v.lower()) for k, v in query if k.startswith("order[") and k.endswith("]")]
        leads.sort(key=lambda lead: lead["id"])
        for order_field, direction in reversed(order):
            if order_field not in ("created_at", "updated_at", "id") or direction not in ("asc", "desc"):
                raise _BadRequest(
                    _problem(400, "Bad Request", f"order[{order_field}]={direction} is not supported")
                )
            leads.sort(key=itemgetter(order_field), reverse=direction == "desc")
        reasons = _wants_reason(query)
        return self._page(
            query, "/api/v4/leads", "leads", leads, lambda lead: self._wire(lead, reasons), page, limit
        )

    def _page(
        self,
        query: list[tuple[str, str]],
        path: str,
        name: str,
        items: list[Any],
        wire: Callable[[Any], Any],
        page: int,
        limit: int,
    ) -> Reply:
        """One HAL page of `items`, each put on the wire: 204 past the end, next/prev/first links."""
        chunk = [wire(item) for item in items[(page - 1) * limit : page * limit]]
        if not chunk:
            return Reply(204, b"", content_type=HAL)
        base = [(k, v) for k, v in query if k not in ("page", "limit")]
        links: dict[str, Any] = {"self": {"href": self._href(base, page, limit, path)}}
        if page * limit < len(items):
            links["next"] = {"href": self._href(base, page + 1, limit, path)}
        if page > 1:
            links["first"] = {"href": self._href(base, 1, limit, path)}
            links["prev"] = {"href": self._href(base, page - 1, limit, path)}
        return self._hal({"_page": page, "_links": links, "_embedded": {name: chunk}})

    def _href(self, base: list[tuple[str, str]], page: int, limit: int, path: str = "/api/v4/leads") -> str:
        root = self.url if self._httpd is not None else self.account_url
        return f"{root}{path}?" + urlencode([*base, ("page", str(page)), ("limit", str(limit))])

    # ---- GET /api/v4/leads/notes
    def _notes(self, request: Request, events: list[bytes]) -> Reply:
        query = request.query
        single = {k: v for k, v in query}
        page = self._query_int(single, "page", 1, minimum=1)
        limit = min(self._query_int(single, "limit", PAGE_LIMIT_DEFAULT, minimum=1), PAGE_LIMIT_MAX)
        ids: set[int] | None = None
        leads: set[int] | None = None
        types: set[str] | None = None
        for key, value in query:
            if _FILTER_ID_KEY.match(key) or _FILTER_ENTITY_ID_KEY.match(key):
                ident = _int_value(value)
                if ident is None:
                    raise _BadRequest(_problem(400, "Bad Request", f"{key} must be an integer"))
                if _FILTER_ID_KEY.match(key):
                    ids = (ids or set()) | {ident}
                else:
                    leads = (leads or set()) | {ident}
            elif _FILTER_NOTE_TYPE_KEY.match(key):
                types = (types or set()) | {value}
        notes = [
            note
            for note in self.notes.values()
            if (ids is None or note["id"] in ids)
            and (leads is None or note["entity_id"] in leads)
            and (types is None or note["note_type"] in types)
        ]
        order = [(k[6:-1], v.lower()) for k, v in query if k.startswith("order[") and k.endswith("]")]
        notes.sort(key=lambda note: note["id"])
        for order_field, direction in reversed(order):
            # events-and-notes: "Доступные поля для сортировки: updated_at, id".
            if order_field not in ("updated_at", "id") or direction not in ("asc", "desc"):
                raise _BadRequest(
                    _problem(400, "Bad Request", f"order[{order_field}]={direction} is not supported")
                )
            notes.sort(key=itemgetter(order_field), reverse=direction == "desc")
        return self._page(query, "/api/v4/leads/notes", "notes", notes, self._note_wire, page, limit)

    # ---- GET /api/v4/events
    def _events(self, request: Request, hooks: list[bytes]) -> Reply:
        query = request.query
        single = {k: v for k, v in query}
        page = self._query_int(single, "page", 1, minimum=1)
        limit = self._query_int(single, "limit", PAGE_LIMIT_DEFAULT, minimum=1)
        if limit > EVENTS_LIMIT_MAX:
            raise _BadRequest(
                _problem(400, "Bad Request", f"limit must be at most {EVENTS_LIMIT_MAX} for events")
            )
        types: set[str] | None = None
        entities: set[str] | None = None
        for key, value in query:
            if _FILTER_TYPE_KEY.match(key):
                types = (types or set()) | {t.strip() for t in value.split(",") if t.strip()}
            elif _FILTER_ENTITY_KEY.match(key):
                entities = (entities or set()) | {e.strip() for e in value.split(",") if e.strip()}
        low: int | None = None
        high: int | None = None
        if "filter[created_at]" in single:
            # A bare timestamp asks for the events created from it on.
            low = self._query_int(single, "filter[created_at]", 0, minimum=0)
        if "filter[created_at][from]" in single:
            low = self._query_int(single, "filter[created_at][from]", 0, minimum=0)
        if "filter[created_at][to]" in single:
            high = self._query_int(single, "filter[created_at][to]", 0, minimum=0)
        chosen = [
            event
            for event in self.events
            if (types is None or event["type"] in types)
            and (entities is None or event["entity_type"] in entities)
            and (low is None or event["created_at"] >= low)
            and (high is None or event["created_at"] <= high)
        ]
        # Newest first, as the account's feed lists them; the position breaks ties in a second.
        ordered = [
            e for _, e in sorted(enumerate(chosen), key=lambda p: (p[1]["created_at"], p[0]), reverse=True)
        ]
        return self._page(query, "/api/v4/events", "events", ordered, self._event_wire, page, limit)

    def _event_wire(self, event: dict[str, Any]) -> dict[str, Any]:
        plural = _EVENT_ENTITY_PATHS[event["entity_type"]]
        return {
            **copy.deepcopy(event),
            "account_id": int(self.account_id) if self.account_id.isdigit() else self.account_id,
            "_links": {"self": {"href": f"{self.account_url}/api/v4/events/{event['id']}"}},
            "_embedded": {
                "entity": {
                    "id": event["entity_id"],
                    "_links": {"self": {"href": f"{self.account_url}/api/v4/{plural}/{event['entity_id']}"}},
                }
            },
        }

    def _note_wire(self, note: dict[str, Any]) -> dict[str, Any]:
        lead = self._leads.get(note["entity_id"])
        return {
            "id": note["id"],
            "entity_id": note["entity_id"],
            "created_by": note["created_by"],
            "updated_by": note.get("updated_by", note["created_by"]),
            "created_at": note["created_at"],
            "updated_at": note.get("updated_at", note["created_at"]),
            "responsible_user_id": note.get(
                "responsible_user_id", lead["responsible_user_id"] if lead else note["created_by"]
            ),
            "group_id": note.get("group_id", 0),
            "note_type": note["note_type"],
            "params": copy.deepcopy(note["params"]),
            "account_id": int(self.account_id) if self.account_id.isdigit() else self.account_id,
            "_links": {
                "self": {"href": f"{self.account_url}/api/v4/leads/{note['entity_id']}/notes/{note['id']}"}
            },
        }

    @staticmethod
    def _query_int(single: dict[str, str], key: str, default: int, minimum: int) -> int:
        if key not in single:
            return default
        value = _int_value(single[key])
        if value is None or value < minimum:
            raise _BadRequest(_problem(400, "Bad Request", f"{key} must be an integer >= {minimum}"))
        return value

    # ---- GET /api/v4/leads/{id}
    def _get_one(self, request: Request, events: list[bytes]) -> Reply:
        match = _LEAD_PATH.match(request.path.rstrip("/"))
        ident = _int_value(match.group(1)) if match else None
        lead = self._leads.get(ident) if ident is not None else None
        if lead is None:
            return Reply(204, b"", content_type=HAL)  # leads-api: "204 — no lead with this ID"
        return self._hal(self._wire(lead, _wants_reason(request.query)))

    # ---- GET /api/v4/leads/loss_reasons
    def _loss_reasons(self, request: Request, events: list[bytes]) -> Reply:
        single = dict(request.query)
        page = self._query_int(single, "page", 1, minimum=1)
        limit = min(self._query_int(single, "limit", PAGE_LIMIT_DEFAULT, minimum=1), PAGE_LIMIT_MAX)
        reasons = sorted(self.loss_reasons.items())
        path = "/api/v4/leads/loss_reasons"
        return self._page(request.query, path, "loss_reasons", reasons, self._loss_reason_wire, page, limit)

    # ---- tasks: POST /api/v4/tasks, GET and PATCH /api/v4/tasks/{id}
    def _create_tasks(self, request: Request, events: list[bytes]) -> Reply:
        """tasks-api: text and complete_till required; bound to a lead by entity_id with
        entity_type "leads" (contacts and others are not modelled); the responsible an account
        user (the token's by default); task_type_id 1 or 2. Validated whole, as leads are."""
        items = self._items(request)
        now = self._stamp()
        made = _each_valid(items, lambda item: self._new_task(item, now))
        for task in made:
            self.tasks[task.id] = task
            self.applied.append(("task", int(task.id)))
        return self._hal(
            {
                "_links": {"self": {"href": f"{self.account_url}/api/v4/tasks"}},
                "_embedded": {
                    "tasks": [
                        {
                            "id": int(task.id),
                            "request_id": str(items[n].get("request_id", n)),
                            "_links": {"self": {"href": f"{self.account_url}/api/v4/tasks/{task.id}"}},
                        }
                        for n, task in enumerate(made)
                    ]
                },
            }
        )

    def _new_task(self, item: Any, now: int) -> FakeTask:
        if not isinstance(item, dict):
            raise _Invalid("InvalidType", "", "This value should be of type object.")
        text = item.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _Invalid("NotBlank", "text", "This value should not be blank.")
        due = _int_value(item.get("complete_till"))
        if due is None:
            raise _Invalid("NotBlank", "complete_till", "This value should not be blank.")
        entity: EntityRef | None = None
        if item.get("entity_id") is not None:
            if item.get("entity_type") != "leads":
                raise _Invalid(
                    "NotSupportedChoice", "entity_type", "The value you selected is not a valid choice."
                )
            lead_id = _int_value(item["entity_id"])
            if lead_id is None or lead_id not in self._leads:
                raise _Invalid("NotFound", "entity_id", "Entity not found")
            entity = EntityRef(EntityType.LEAD, str(lead_id))
        responsible = _int_value(item.get("responsible_user_id", self.token_user_id))
        if responsible not in self.users:
            raise _Invalid(
                "NotSupportedChoice", "responsible_user_id", "The value you selected is not a valid choice."
            )
        if _int_value(item.get("task_type_id", 1)) not in TASK_TYPES:
            raise _Invalid(
                "NotSupportedChoice", "task_type_id", "The value you selected is not a valid choice."
            )
        author = _int_value(item.get("created_by", self.token_user_id))
        return FakeTask(
            id=str(next(self._task_ids)),
            title=None,
            description=text,
            responsible=str(responsible),
            deadline=datetime.fromtimestamp(due, UTC),
            entity=entity,
            created_by=str(author),
            created_at=datetime.fromtimestamp(now, UTC),
        )

    def _task_of(self, request: Request) -> FakeTask | None:
        match = _TASK_PATH.match(request.path.rstrip("/"))
        ident = _int_value(match.group(1)) if match else None
        return self.tasks.get(str(ident)) if ident is not None else None

    def _get_task(self, request: Request, events: list[bytes]) -> Reply:
        task = self._task_of(request)
        if task is None:
            return Reply(204, b"", content_type=HAL)  # as for a lead: nothing with this id
        return self._hal(self._task_wire(task))

    def _patch_task(self, request: Request, events: list[bytes]) -> Reply:
        """Edit one task; `is_completed` with a `result` closes it (tasks-api "Выполнение задачи").
        A missing task is refused as a missing lead is (validation-errors, NotFound)."""
        item = self._json_body(request)
        if not isinstance(item, dict):
            raise _BadRequest(_problem(400, "Bad Request", "Request body must be a task object"))
        task = self._task_of(request)
        if task is None:
            return _validation_failed({0: [_Invalid("NotFound", "id", "Task not found")]})
        result = item.get("result")
        if result is not None and not (isinstance(result, dict) and isinstance(result.get("text"), str)):
            return _validation_failed(
                {0: [_Invalid("InvalidType", "result.text", "This value should be of type string.")]}
            )
        if isinstance(item.get("text"), str) and item["text"].strip():
            task.description = item["text"]
        if _int_value(item.get("complete_till")) is not None:
            task.deadline = datetime.fromtimestamp(int(item["complete_till"]), UTC)
        if item.get("is_completed") is True and not task.completed:
            task.completed, task.completed_at = True, self.clock().astimezone(UTC).replace(microsecond=0)
        elif item.get("is_completed") is False:
            task.completed, task.completed_at = False, None
        if result is not None:
            task.result = result["text"]
        self.applied.append(("task", int(task.id)))
        return self._hal(
            {
                "id": int(task.id),
                "updated_at": self._stamp(),
                "_links": {"self": {"href": f"{self.account_url}/api/v4/tasks/{task.id}"}},
            }
        )

    def _task_wire(self, task: FakeTask) -> dict[str, Any]:
        deadline = int(task.deadline.timestamp()) if task.deadline is not None else None
        entity_id = int(task.entity.id) if task.entity is not None else 0
        return {
            "id": int(task.id),
            "created_by": int(task.created_by),
            "updated_by": int(task.created_by),
            "created_at": int(task.created_at.timestamp()),
            "updated_at": int((task.completed_at or task.created_at).timestamp()),
            "responsible_user_id": int(task.responsible),
            "group_id": 0,
            "entity_id": entity_id,
            "entity_type": "leads" if task.entity is not None else None,
            "duration": 0,
            "is_completed": task.completed,
            "task_type_id": 1,
            "text": task.description,
            "result": {"text": task.result} if task.result is not None else [],
            "complete_till": deadline,
            "account_id": int(self.account_id) if self.account_id.isdigit() else self.account_id,
            "_links": {"self": {"href": f"{self.account_url}/api/v4/tasks/{task.id}"}},
        }

    # ---- POST /api/v4/leads/notes
    def _create_notes(self, request: Request, events: list[bytes]) -> Reply:
        """events-and-notes "Добавление примечаний": entity_id (a lead), note_type (common, call_in,
        call_out modelled), params (common: text). Each note's `leads[note]` hook is echoed."""
        items = self._items(request)
        _each_valid(items, self._check_note)
        now = self._stamp()
        created = []
        for index, item in enumerate(items):
            lead = self._leads[_int_value(item["entity_id"]) or 0]
            params = item.get("params") or {}
            author = _int_value(item.get("created_by", self.token_user_id)) or 0
            note_id, hook = self._insert_note(
                lead, item["note_type"], author, str(params.get("text", "")), now, params
            )
            self.applied.append(("note", lead["id"]))
            if self.emit_on_rest_writes:
                events.append(hook)
            created.append(
                {
                    "id": note_id,
                    "entity_id": lead["id"],
                    "request_id": str(item.get("request_id", index)),
                    "_links": {
                        "self": {"href": f"{self.account_url}/api/v4/leads/{lead['id']}/notes/{note_id}"}
                    },
                }
            )
        return self._hal(
            {
                "_links": {"self": {"href": f"{self.account_url}/api/v4/leads/notes"}},
                "_embedded": {"notes": created},
            }
        )

    def _check_note(self, item: Any) -> None:
        if not isinstance(item, dict):
            raise _Invalid("InvalidType", "", "This value should be of type object.")
        lead_id = _int_value(item.get("entity_id"))
        if lead_id is None or lead_id not in self._leads:
            raise _Invalid("NotFound", "entity_id", "Entity not found")
        if item.get("note_type") not in NOTE_TYPES:
            raise _Invalid("NotSupportedChoice", "note_type", "The value you selected is not a valid choice.")
        params = item.get("params")
        if not isinstance(params, dict):
            raise _Invalid("NotBlank", "params", "This value should not be blank.")
        if item["note_type"] == "common" and not (
            isinstance(params.get("text"), str) and params["text"].strip()
        ):
            raise _Invalid("NotBlank", "params.text", "This value should not be blank.")

    def _items(self, request: Request) -> list[Any]:
        """A bulk request's body: a non-empty JSON array of at most BULK_LIMIT entities."""
        items = self._json_body(request)
        if not isinstance(items, list) or not items:
            raise _BadRequest(_problem(400, "Bad Request", "Request body must be a non-empty array"))
        if len(items) > BULK_LIMIT:
            raise _BadRequest(_problem(422, "Unprocessable Entity", f"Limit {BULK_LIMIT} per page"))
        return items

    # ---- GET /api/v4/leads/pipelines
    def _pipelines(self, request: Request, events: list[bytes]) -> Reply:
        account = int(self.account_id) if self.account_id.isdigit() else self.account_id
        listed = [(self.pipeline_id, self.pipeline_name, self.statuses, True)]
        listed += [(ident, name, own, False) for ident, (name, own) in sorted(self.other_pipelines.items())]
        pipelines = []
        for sort, (pipeline_id, name, statuses, main) in enumerate(listed, start=1):
            base = f"{self.account_url}/api/v4/leads/pipelines/{pipeline_id}"
            pipelines.append(
                {
                    "id": pipeline_id,
                    "name": name,
                    "sort": sort,
                    "is_main": main,
                    "is_unsorted_on": True,
                    "is_archive": False,
                    "account_id": account,
                    "_links": {"self": {"href": base}},
                    "_embedded": {
                        "statuses": [
                            {
                                "id": status_id,
                                "name": title,
                                "sort": 10000
                                if status_id == WON
                                else 11000
                                if status_id == LOST
                                else 10 * (n + 1),
                                "is_editable": status_id not in (WON, LOST) and n > 0,
                                "pipeline_id": pipeline_id,
                                "color": "#99ccff",
                                "type": 1 if n == 0 else 0,
                                "account_id": account,
                                "_links": {"self": {"href": f"{base}/statuses/{status_id}"}},
                            }
                            for n, (status_id, title) in enumerate(statuses.items())
                        ]
                    },
                }
            )
        return self._hal(
            {
                "_total_items": len(pipelines),
                "_links": {"self": {"href": f"{self.account_url}/api/v4/leads/pipelines"}},
                "_embedded": {"pipelines": pipelines},
            }
        )

    # ---- GET /api/v4/users
    def _users(self, request: Request, events: list[bytes]) -> Reply:
        if not self.token_is_admin:
            return _problem(403, "Forbidden", "Access denied")
        single = dict(request.query)
        page = self._query_int(single, "page", 1, minimum=1)
        limit = min(self._query_int(single, "limit", PAGE_LIMIT_DEFAULT, minimum=1), PAGE_LIMIT_MAX)
        users = sorted(self.users.items())
        reply = self._page(request.query, "/api/v4/users", "users", users, self._user_wire, page, limit)
        if reply.status == 200:
            body = json.loads(reply.body)
            body = {"_total_items": len(users), "_page_count": -(-len(users) // limit), **body}
            reply = self._hal(body)
        return reply

    def _user_wire(self, entry: tuple[int, dict[str, Any]]) -> dict[str, Any]:
        ident, user = entry
        rights = {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"}
        return {
            "id": ident,
            "name": user["name"],
            "email": user["email"],
            "lang": "ru",
            "rights": {
                "leads": dict(rights),
                "contacts": dict(rights),
                "companies": dict(rights),
                "tasks": {"edit": "A", "delete": "A"},
                "mail_access": False,
                "catalog_access": False,
                "status_rights": None,
                "is_admin": user["admin"],
                "is_free": False,
                "is_active": user["active"],
                "group_id": None,
                "role_id": None,
            },
            "_links": {"self": {"href": f"{self.account_url}/api/v4/users/{ident}"}},
        }

    # ---- PATCH /api/v4/leads and /api/v4/leads/{id}
    def _patch_many(self, request: Request, events: list[bytes]) -> Reply:
        items = self._json_body(request)
        if not isinstance(items, list) or not items:
            raise _BadRequest(_problem(400, "Bad Request", "Request body must be a non-empty array of leads"))
        if len(items) > BULK_LIMIT:
            raise _BadRequest(_problem(422, "Unprocessable Entity", f"Limit {BULK_LIMIT} per page"))
        return self._patch(items, events, with_ids=True)

    def _patch_one(self, request: Request, events: list[bytes]) -> Reply:
        item = self._json_body(request)
        if not isinstance(item, dict):
            raise _BadRequest(_problem(400, "Bad Request", "Request body must be a lead object"))
        match = _LEAD_PATH.match(request.path.rstrip("/"))
        item = {**item, "id": match.group(1) if match else None}
        reply = self._patch([item], events, with_ids=True)
        if reply.status == 200:
            lead = json.loads(reply.body)["_embedded"]["leads"][0]
            return self._hal(lead)
        return reply

    def _patch(self, items: list[Any], events: list[bytes], with_ids: bool) -> Reply:
        plans = _each_valid(items, self._lead_change)
        now = self._stamp()
        done = []
        for lead, plan in plans:
            before = self._apply(lead, plan, now, by=0)
            self.applied.append(("patch", lead["id"]))
            if self.emit_on_rest_writes:
                events.append(
                    self.webhook_body(self._action_of(before, lead), [self._hook_payload(lead, before)])
                )
            done.append(
                {
                    "id": lead["id"],
                    "updated_at": lead["updated_at"],
                    "_links": {"self": {"href": f"{self.account_url}/api/v4/leads/{lead['id']}"}},
                }
            )
        return self._hal(
            {"_links": {"self": {"href": f"{self.account_url}/api/v4/leads"}}, "_embedded": {"leads": done}}
        )

    def _lead_change(self, item: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        if not isinstance(item, dict):
            raise _Invalid("InvalidType", "", "This value should be of type object.")
        ident = _int_value(item.get("id"))
        lead = self._leads.get(ident) if ident is not None else None
        if lead is None:
            raise _Invalid("NotFound", "id", "Lead not found")
        return lead, self._validate(item, lead, "")

    @staticmethod
    def _action_of(before: dict[str, Any], after: dict[str, Any]) -> str:
        if before["status_id"] != after["status_id"]:
            return "status"
        if before["responsible_user_id"] != after["responsible_user_id"]:
            return "responsible"
        return "update"

    # ---- POST /api/v4/leads
    def _create_many(self, request: Request, events: list[bytes]) -> Reply:
        items = self._json_body(request)
        if not isinstance(items, list) or not items:
            raise _BadRequest(_problem(400, "Bad Request", "Request body must be a non-empty array of leads"))
        if len(items) > BULK_LIMIT:
            raise _BadRequest(_problem(422, "Unprocessable Entity", f"Limit {BULK_LIMIT} per page"))
        now = self._stamp()
        errors: dict[int, list[_Invalid]] = {}
        plans: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for index, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise _Invalid("InvalidType", "", "This value should be of type object.")
                author = _int_value(item.get("created_by", 0))
                lead = self._new_lead(
                    "", _int_value(item.get("responsible_user_id", 0)) or 0, now, author or 0
                )
                for stamp_key in ("created_at", "updated_at"):
                    if stamp_key in item:
                        stamp = _int_value(item[stamp_key])
                        if stamp is None:
                            raise _Invalid("InvalidType", stamp_key, "This value should be of type int.")
                        lead[stamp_key] = stamp
                plans.append((lead, self._validate(item, None, "")))
            except _Invalid as exc:
                errors[index] = [exc]
        if errors:
            return _validation_failed(errors)
        created = []
        for index, (lead, plan) in enumerate(plans):
            stamp = lead["updated_at"]
            self._apply(lead, plan, stamp, by=lead["created_by"])
            self._leads[lead["id"]] = lead
            self.applied.append(("post", lead["id"]))
            if self.emit_on_rest_writes:
                events.append(self.webhook_body("add", [self._hook_payload(lead)]))
            created.append(
                {
                    "id": lead["id"],
                    "request_id": str(items[index].get("request_id", index)),
                    "_links": {"self": {"href": f"{self.account_url}/api/v4/leads/{lead['id']}"}},
                }
            )
        return self._hal(
            {
                "_links": {"self": {"href": f"{self.account_url}/api/v4/leads"}},
                "_embedded": {"leads": created},
            }
        )


def _wants_reason(query: list[tuple[str, str]]) -> bool:
    """Whether `with=` (a comma list) asks for the loss reason."""
    return any(key == "with" and "loss_reason" in value.split(",") for key, value in query)


def _hook_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)
