"""amoCRM (Kommo) behind the `CrmAdapter` interface: account webhooks in, API v4 out.

Wire facts (each with the page it was checked on in leadwatch/testing/amocrm.py):
webhooks are form-encoded `leads[{action}][N][...]` bodies that already carry the card
(and, for notes, the note), with no signature: the tenant's secret travels in the webhook
URL as `?key=`. The API answers HAL JSON, 204 with no body for an empty list, problem+json
errors with `validation-errors` whose `request_id` is the index of the item in the request,
and 429 over 7 requests/s. At most 250 leads per list page or write (50 recommended).

Calls: a call note (note_type 10/11, API `call_in`/`call_out`) carries its call as a JSON
string in the webhook's `text` (`UNIQ`, `DURATION`, `LINK`, `PHONE`, `SRC`, `call_status`,
`call_result`, key case varies between telephony integrations) and as `params` (`uniq`,
`duration`, `link`, `phone`, `source`, `call_status`, `call_result`) in API v4. The events feed
`GET /api/v4/events` (at most 100 per page on amocrm.ru) lists `outgoing_call` / `incoming_call`
events that point to their note in `value_after[].note.id`.

Names (amocrm.ru/developers/content/crm_platform/users-api and leads_pipelines, mirrored in the
biradrags/amo-docs repository): `GET /api/v4/users` pages HAL `_embedded.users` of `{id, name,
email, rights: {is_active, ...}}` (`limit` at most 250) and is open to account admins only (403
otherwise); `GET /api/v4/leads/pipelines` lists every pipeline (at most 50, no paging) with its
statuses in `_embedded.statuses` of `{id, name, pipeline_id, ...}`; status ids are unique in the
account except 142 (won) and 143 (lost), which every pipeline has, each under its own name.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from crm_adapters.base import (
    CrmError,
    CrmNotFound,
    CrmRateLimited,
    CrmRejected,
    CrmUnavailable,
    MalformedWebhook,
    StageName,
    WebhookForbidden,
    WebhookRequest,
    WebhookUnauthorized,
    WriteResult,
    stage_key,
)
from crm_adapters.formdata import FormError, parse_form
from crm_adapters.http import HttpClient, Transport
from crm_adapters.limits import Window
from crm_adapters.work import task_description
from leadwatch.config import AmoCrmConfig, SecretRef
from leadwatch.effects import AddNote, CreateTask, FieldValue, MoveStage, RemindUser, SetCardFields
from leadwatch.events import Activity, Call, CrmEvent, EntityRef, EntityType, EventKind, LeadSnapshot
from leadwatch.secrets import Secret, same_secret

PAGE_LIMIT = 250  # leads-api: "limit ... (Максимум – 250)"
BULK_LIMIT = 250  # Kommo limitations: at most 250 entities added or updated per request
# A list request names every id in its query; keep it well under the 8 KB request line that
# common proxies (nginx's default large_client_header_buffers) accept.
MAX_QUERY_CHARS = 6000
MAX_PAGES = 10_000  # a safety stop for a server that keeps answering full pages

_DIGITS = re.compile(r"^[0-9]{1,18}$")
_LEAD_ACTIONS = {
    "add": EventKind.LEAD_CREATED,
    "update": EventKind.LEAD_CHANGED,
    "status": EventKind.STAGE_CHANGED,
    "responsible": EventKind.RESPONSIBLE_CHANGED,
}
# Note types as note webhooks carry them (numbers) and as API v4 names them. Only notes a person
# writes count as activity: system notes (lead created, stage changed, ...) are ignored.
_NOTE_KINDS: dict[str, tuple[str, str | None]] = {
    "4": ("note", None),
    "common": ("note", None),
    "10": ("call", "in"),
    "call_in": ("call", "in"),
    "11": ("call", "out"),
    "call_out": ("call", "out"),
}
# The API names of the note types above: the notes read asks for exactly these, so a note is an
# activity (or not) whether it arrived by webhook or was read back.
_NOTE_TYPE_NAMES = sorted(k for k in _NOTE_KINDS if not k.isdigit())
# The notes list query besides its ids, budgeted like them against MAX_QUERY_CHARS.
_NOTES_FIXED_QUERY = "&".join(
    [f"{quote('filter[note_type][]', safe='')}={t}" for t in _NOTE_TYPE_NAMES]
    + [f"{quote('order[id]', safe='')}=asc", f"limit={PAGE_LIMIT}", f"page={MAX_PAGES}"]
)
# The notes-by-id read besides its ids (list_calls), budgeted like them against MAX_QUERY_CHARS.
_NOTES_BY_ID_FIXED_QUERY = f"limit={PAGE_LIMIT}&page={MAX_PAGES}"
# events-api: amocrm.ru says at most 100 per page, Kommo's English page 250; the smaller is safe.
EVENTS_LIMIT = 100
_CALL_EVENT_TYPES = ("outgoing_call", "incoming_call")
# call_status 4 is "talked" (разговор состоялся); 1 left a message, 2 call back later, 3 not
# available, 5 wrong number, 6 no answer, 7 busy all mean nobody was talked to.
_CALL_TALKED = 4
# A duration past a week is a broken integration, not a call; clamping keeps the number storable
# (DynamoDB numbers end at 38 digits) while the call still counts as talked.
MAX_CALL_SECONDS = 7 * 86_400
_SECONDS = re.compile(r"^[0-9]{1,12}(?:\.[0-9]{0,9})?$")
_RECORD_SCHEMES = ("http", "https")
# Every pipeline has 143, "closed and not realised" (leads_pipelines); a lead closed there may carry
# its loss reason's id (`loss_reason_id`, leads-api), which snapshots keep in `fields` under that name
# (workflows/qc reads it there). The documented status webhook shows no loss reason (webhooks-format):
# a hook for a lost lead that does not say its reason cannot stand for the card, which is read.
LOST = 143
LOSS_REASON_FIELD = "loss_reason_id"
# Work items (tasks-api, events-and-notes): a task's type 1 is "follow-up" (Связаться); a closed task
# takes a result text, which CompleteTask does not give.
TASK_TYPE_FOLLOW_UP = 1
TASK_RESULT = "Closed by leadwatch"
# Entities amoCRM can send webhooks about that leadwatch does not watch.
_OTHER_ENTITIES = {
    "contacts",
    "companies",
    "customers",
    "task",
    "tasks",
    "catalogs",
    "unsorted",
    "talk",
    "message",
}


class AmoValidationError(CrmRejected):
    """A 400 whose `validation-errors` name the rejected items by `request_id`."""

    def __init__(self, message: str, errors: list[dict[str, Any]], status: int | None = 400):
        super().__init__(message, status=status)
        self.errors = errors

    def rejected(self) -> dict[int, str]:
        """Item index -> what was wrong with it."""
        found: dict[int, str] = {}
        for entry in self.errors:
            if not isinstance(entry, dict):
                continue
            index = _to_int(entry.get("request_id"))
            if index is None:
                continue
            listed = entry.get("errors")
            problems = listed if isinstance(listed, list) else []
            text = "; ".join(
                f"{p.get('path', '?')}: {p.get('code', '?')} {p.get('detail', '')}".strip()
                for p in problems
                if isinstance(p, dict)
            )
            found[index] = text or "rejected"
        return found


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _DIGITS.match(value):
        return int(value)
    return None


def _excerpt(text: Any, limit: int = 200) -> str:
    value = str(text)
    return value if len(value) <= limit else value[:limit] + "..."


def classify(response: requests.Response) -> CrmError | None:
    """Map an amoCRM answer to the shared error classes (None: a success, 204 included)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    problem = body if isinstance(body, dict) else {}
    title = str(problem.get("title") or "")
    detail = str(problem.get("detail") or "")
    label = (
        f"amoCRM HTTP {status}" + (f" {title}" if title else "") + (f": {_excerpt(detail)}" if detail else "")
    )
    if status == 429:
        return CrmRateLimited(label, retry_after=_retry_after(response, problem), status=status)
    if status >= 500:
        return CrmUnavailable(label, status=status)
    errors = problem.get("validation-errors")
    if status == 400 and isinstance(errors, list) and errors:
        return AmoValidationError(label, errors, status=status)
    # 401 (bad or expired token), 402 (account not paid), 403 (rights, or an IP block after
    # repeated 429s), 404, 422 (over a limit): trying again with the same request cannot help.
    return CrmRejected(label, status=status)


def _retry_after(response: requests.Response, problem: Mapping[str, Any]) -> float | None:
    """Seconds to wait: a Retry-After header if one ever comes, else Kommo's `retry_after`."""
    for raw in (response.headers.get("Retry-After"), problem.get("retry_after")):
        if raw is None or isinstance(raw, bool):
            continue
        try:
            seconds = float(raw)
        except (TypeError, ValueError):
            continue
        if seconds >= 0:
            return seconds
    return None


def encode_value(value: FieldValue) -> Any:
    """A field value as amoCRM takes it: unix seconds for a datetime, JSON bool, else as given."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a naive datetime cannot be written: its time zone is unknown")
        return int(value.timestamp())
    return value


def _field_ref(field_name: str) -> dict[str, Any]:
    # Tenant files name fields by id; a non-numeric name is taken as the field's symbolic code.
    return {"field_id": int(field_name)} if _DIGITS.match(field_name) else {"field_code": field_name}


def _first_value(values: Any) -> Any:
    """First value of a custom field, from a webhook group or an API `values` list."""
    if isinstance(values, Mapping):
        keys = sorted((k for k in values if _DIGITS.match(str(k))), key=int)
        first = values[keys[0]] if keys else None
    elif isinstance(values, list):
        first = values[0] if values else None
    else:
        first = values
    if isinstance(first, Mapping):
        first = first.get("value")
    if isinstance(first, bool):
        return "1" if first else "0"
    return None if first is None else first if isinstance(first, str) else str(first)


def _stamp(value: Any) -> datetime | None:
    seconds = _to_int(value)
    if seconds is None:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def snapshot_from_api(lead: Mapping[str, Any]) -> LeadSnapshot | None:
    """A LeadSnapshot from an API v4 lead object; None if it lacks what a snapshot needs."""
    ident = _to_int(lead.get("id"))
    created = _stamp(lead.get("created_at"))
    status = _to_int(lead.get("status_id"))
    if ident is None or created is None or status is None:
        return None
    responsible = _to_int(lead.get("responsible_user_id"))
    pipeline = _to_int(lead.get("pipeline_id"))
    fields: dict[str, Any] = {}
    for entry in lead.get("custom_fields_values") or []:
        if isinstance(entry, Mapping) and _to_int(entry.get("field_id")) is not None:
            fields[str(entry["field_id"])] = _first_value(entry.get("values"))
    embedded = lead.get("_embedded")
    reasons = embedded.get("loss_reason") if isinstance(embedded, Mapping) else None
    # `with=loss_reason` embeds the reason as a list of one; the id is top level either way.
    named = (
        reasons[0].get("id")
        if isinstance(reasons, list) and reasons and isinstance(reasons[0], Mapping)
        else None
    )
    reason = _loss_reason(lead.get(LOSS_REASON_FIELD)) or _loss_reason(named)
    if reason is not None:
        fields[LOSS_REASON_FIELD] = reason
    name = lead.get("name")
    return LeadSnapshot(
        entity=EntityRef(EntityType.LEAD, str(ident)),
        stage=str(status),
        responsible=str(responsible) if responsible is not None else None,
        created_at=created,
        modified_at=_stamp(lead.get("updated_at")),
        # API v4 has no "moved at": the stage change time is only known from a status webhook.
        stage_changed_at=None,
        title=name if isinstance(name, str) else "",
        pipeline=str(pipeline) if pipeline is not None else None,
        fields=fields,
    )


def _loss_reason(value: Any) -> str | None:
    """A loss reason id as text; None for none (null, 0, empty) or a value that is not an id."""
    ident = _to_int(value.strip() if isinstance(value, str) else value)
    return str(ident) if ident is not None and ident > 0 else None


def activity_from_note(note: Mapping[str, Any]) -> Activity | None:
    """An Activity from an API v4 lead note; None for a note type that is not a person's work
    (the same `_NOTE_KINDS` as note webhooks) or a note lacking what an Activity needs."""
    kind = _NOTE_KINDS.get(str(note.get("note_type") or ""))
    ident = _to_int(note.get("id"))
    lead_id = _to_int(note.get("entity_id"))
    created = _stamp(note.get("created_at"))
    if kind is None or ident is None or lead_id is None or created is None:
        return None
    # created_by 0 (a robot or an integration) stays "0", as the note webhook gives it: falling
    # back to the responsible user would credit the manager with a robot's note.
    author = _to_int(note.get("created_by"))
    if author is None:
        author = _to_int(note.get("responsible_user_id"))
    entity = EntityRef(EntityType.LEAD, str(lead_id))
    manager = str(author) if author is not None else None
    call = None
    if kind[0] == "call":
        params = note.get("params")
        data = params if isinstance(params, Mapping) else {}
        call = call_from_note(str(ident), entity, kind[1] or "out", manager, created, data)
    return Activity(
        id=str(ident),
        entity=entity,
        kind=kind[0],
        author=manager,
        created_at=created,
        direction=kind[1],
        call=call,
    )


def call_from_note(
    note_id: str,
    entity: EntityRef,
    direction: str,
    manager: str | None,
    started_at: datetime,
    data: Mapping[Any, Any],
) -> Call:
    """The Call of a call note, from its webhook `text` (decoded) or its API v4 `params`.

    Keys are matched case-insensitively: the webhook names them `DURATION`, `LINK`, the API
    `duration`, `link`, and integrations differ. What cannot be read is left out rather than
    refused: the call happened either way, so it counts with duration 0 and no recording.
    """
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(key, str):
            fields.setdefault(key.strip().lower(), value)
    seconds = _call_seconds(fields.get("duration"))
    status = _call_status(fields.get("call_status"))
    if status is not None:
        answered: bool | None = status == _CALL_TALKED
    elif seconds is not None:
        answered = seconds > 0
    else:
        answered = None  # neither says: the caller must not guess
    return Call(
        key=f"note{note_id}",
        entity=entity,
        direction=direction,
        manager=manager,
        started_at=started_at,
        duration=seconds or 0,
        answered=answered,
        record_url=_record_url(fields.get("link")),
        activity_id=note_id,
        source="note",
    )


def call_data_of_text(text: Any) -> Mapping[Any, Any]:
    """A call note webhook's `text` as a mapping: JSON in a string as amoCRM sends it, or a form
    group (`[text][DURATION]=...`) if an integration nested it. Anything else reads as no data."""
    if isinstance(text, Mapping):
        return text
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _call_seconds(value: Any) -> int | None:
    """Seconds from a number or a numeric string (telephony integrations send both); None when
    there is no readable, non-negative duration."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not _SECONDS.match(text):
            return None
        value = float(text) if "." in text else int(text)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value)
    if not isinstance(value, int) or value < 0:
        return None
    return min(value, MAX_CALL_SECONDS)


def _call_status(value: Any) -> int | None:
    if isinstance(value, str):
        value = value.strip()
    return _to_int(value)


def _record_url(value: Any) -> str | None:
    """A recording link worth showing a person: an absolute http(s) URL. A `javascript:` or
    relative link must never reach a Telegram message or a card."""
    if not isinstance(value, str):
        return None
    link = value.strip()
    if not link or len(link) > 2048 or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in link):
        return None
    try:
        parts = urlsplit(link)
        _ = parts.port  # raises on a malformed port, which a browser would not open either
    except ValueError:
        return None
    if parts.scheme.lower() not in _RECORD_SCHEMES or not parts.hostname:
        return None
    return link


@dataclass
class _Item:
    """One lead's pending write: the merged fields of every effect that targets it."""

    lead_id: int
    effect_ids: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.lead_id,
            "custom_fields_values": [
                {**_field_ref(name), "values": [{"value": value}]} for name, value in self.values.items()
            ],
        }


class AmoCrmAdapter:
    kind = "amocrm"

    def __init__(
        self,
        tenant: str,
        config: AmoCrmConfig,
        resolve: Callable[[SecretRef], str],
        *,
        transport: Transport | None = None,
        limit: int = 6,
        period: float = 1.0,
        bulk_size: int = BULK_LIMIT,
    ):
        """`limit` requests in any `period` seconds, in this container and (with the transport's
        shared limits) across the deployment. amoCRM answers 429 past 7 requests a second and
        blocks the IP (403) when that repeats (developers.kommo.com/docs/limitations). 6 leaves
        one spare: a request granted at the end of one of our seconds and delayed on the way
        may land in the next of the service's. A busy container claims up to a period's worth
        of the shared slots (limit - 1) in one write: it holds at most a second of the account's
        rate ahead of the others, and claims one at a time when it calls now and then."""
        if not 1 <= bulk_size <= BULK_LIMIT:
            raise ValueError(f"bulk_size must be 1..{BULK_LIMIT}")
        self.tenant = tenant
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        self.bulk_size = bulk_size
        self._resolve = resolve
        self._transport = transport or Transport()
        self.limiter = self._transport.shared(
            self._transport.window(limit, period),
            tenant,
            "amocrm",
            Window.spread(limit, period, batch=max(1, limit - 1)),
        )
        self._client: HttpClient | None = None
        self._client_token: str | None = None
        # Asked for at each call, never held: a 401 (the token was replaced) reads it again.
        self._token = Secret(resolve, config.access_token)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ webhooks
    def parse_webhook(self, request: WebhookRequest) -> list[CrmEvent]:
        self._check_key(request.query.get("key"))
        try:
            return self._events(request.body)
        except MalformedWebhook as exc:
            exc.authenticated = True  # the URL's key matched: the account sent it
            raise

    def _check_key(self, key: str | None) -> None:
        if not key:
            raise WebhookUnauthorized(
                "the webhook URL carries no ?key= (register it as .../hooks/<tenant>?key=<secret>)"
            )
        if not same_secret(key, self._resolve(self.config.hook_secret)):
            raise WebhookForbidden("the webhook URL's ?key= is wrong")

    def _events(self, body: bytes) -> list[CrmEvent]:
        try:
            tree = parse_form(body)
        except FormError as exc:
            raise MalformedWebhook(str(exc)) from None
        self._check_account(tree.get("account"))
        leads = tree.get("leads")
        if leads is None:
            if _OTHER_ENTITIES & set(tree):
                return []  # a contact, company, task ... hook: not watched
            raise MalformedWebhook(
                f"expected an amoCRM webhook like leads[status][0][id]=...; got top-level keys {sorted(tree)[:5]}"
            )
        if not isinstance(leads, dict):
            raise MalformedWebhook("leads must be a group like leads[status][0][id], not a plain value")
        events: list[CrmEvent] = []
        for action, group in leads.items():
            if action in _LEAD_ACTIONS:
                for index, item in _numbered(group, f"leads[{action}]"):
                    events.append(self._lead_event(action, index, item))
            elif action == "note":
                for index, item in _numbered(group, "leads[note]"):
                    event = self._note_event(index, item)
                    if event is not None:
                        events.append(event)
            elif action == "delete":
                for index, item in _numbered(group, "leads[delete]"):
                    events.append(self._deleted_event(index, item))
            # restore and unknown actions: nothing for leadwatch to do (a restored card's next
            # change brings it back).
        return events

    def _check_account(self, account: Any) -> None:
        expected = self.config.account_id
        if expected is None:
            return
        got = account.get("id") if isinstance(account, dict) else None
        if not isinstance(got, str) or not got:
            raise WebhookForbidden("account[id] is missing; this tenant accepts hooks from one account only")
        if not same_secret(got, str(expected)):
            raise WebhookForbidden(f"account[id] {_excerpt(got, 24)!r} is not this tenant's amoCRM account")

    def _lead_event(self, action: str, index: str, item: Any) -> CrmEvent:
        where = f"leads[{action}][{index}]"
        if not isinstance(item, dict):
            raise MalformedWebhook(f"{where} must be a group of fields like {where}[id]")
        lead_id = _require_id(item, "id", where)
        modified = _timestamp(item, ("last_modified", "updated_at"), where, required=True)
        assert modified is not None
        created = _timestamp(item, ("date_create", "created_at"), where, required=False)
        status = _optional_id(item, "status_id", where)
        pipeline = _optional_id(item, "pipeline_id", where)
        responsible = _optional_id(item, "responsible_user_id", where)
        entity = EntityRef(EntityType.LEAD, lead_id)
        snapshot = None
        fields = _hook_fields(item.get("custom_fields"))
        reason = _loss_reason(item.get(LOSS_REASON_FIELD))
        if reason is not None:
            fields[LOSS_REASON_FIELD] = reason
        unsaid = status == str(LOST) and LOSS_REASON_FIELD not in item
        # Without a stage or a creation time, or lost without saying why, the hook cannot stand
        # for the card: the worker reads it.
        if status is not None and created is not None and not unsaid:
            name = item.get("name")
            snapshot = LeadSnapshot(
                entity=entity,
                stage=status,
                responsible=responsible,
                created_at=created,
                modified_at=modified,
                stage_changed_at=modified if action == "status" else None,
                title=name if isinstance(name, str) else "",
                pipeline=pipeline,
                fields=fields,
            )
        return CrmEvent(
            tenant=self.tenant,
            kind=_LEAD_ACTIONS[action],
            entity=entity,
            dedupe_key=f"amo:{action}:{lead_id}:{int(modified.timestamp())}",
            raw_event=f"leads[{action}]",
            occurred_at=modified,
            lead=snapshot,
        )

    def _deleted_event(self, index: str, item: Any) -> CrmEvent:
        where = f"leads[delete][{index}]"
        if not isinstance(item, dict):
            raise MalformedWebhook(f"{where} must be a group of fields like {where}[id]")
        lead_id = _require_id(item, "id", where)
        # A deletion happens once: its id is its identity, whatever time the hook carries.
        return CrmEvent(
            tenant=self.tenant,
            kind=EventKind.LEAD_DELETED,
            entity=EntityRef(EntityType.LEAD, lead_id),
            dedupe_key=f"amo:delete:{lead_id}",
            raw_event="leads[delete]",
            occurred_at=_timestamp(item, ("last_modified", "updated_at"), where, required=False),
        )

    def _note_event(self, index: str, item: Any) -> CrmEvent | None:
        where = f"leads[note][{index}][note]"
        note = item.get("note") if isinstance(item, dict) else None
        if not isinstance(note, dict):
            raise MalformedWebhook(f"expected the note's fields as {where}[...]")
        note_id = _require_id(note, "id", where)
        lead_id = _require_id(note, "element_id", where)
        element_type = note.get("element_type")
        if element_type not in (None, "", "2"):
            return None  # 2 is a lead; a note on anything else is not about a card we watch
        kind = _NOTE_KINDS.get(str(note.get("note_type", "")).strip())
        if kind is None:
            return None
        # date_create is the account's local "YYYY-MM-DD HH:MM:SS", so unix created_at comes first.
        created = _timestamp(note, ("created_at", "date_create"), where, required=True)
        assert created is not None
        updated = _timestamp(note, ("updated_at",), where, required=False) or created
        author = (
            _optional_id(note, "created_by", where)
            or _optional_id(note, "main_user_id", where)
            or _optional_id(note, "responsible_user_id", where)
        )
        entity = EntityRef(EntityType.LEAD, lead_id)
        call = None
        if kind[0] == "call":
            # A `text` that is not the expected JSON must not reject the delivery: a rejected
            # hook is retried and lost the same way, and the call would never be counted.
            data = call_data_of_text(note.get("text"))
            call = call_from_note(note_id, entity, kind[1] or "out", author, created, data)
        activity = Activity(
            id=note_id,
            entity=entity,
            kind=kind[0],
            author=author,
            created_at=created,
            direction=kind[1],
            call=call,
        )
        return CrmEvent(
            tenant=self.tenant,
            kind=EventKind.ACTIVITY_ADDED,
            entity=entity,
            dedupe_key=f"amo:note:{note_id}:{int(updated.timestamp())}",
            raw_event="leads[note]",
            occurred_at=created,
            activity=activity,
            activity_id=note_id,
            call=call,
        )

    # ------------------------------------------------------------------ REST
    def _http(self, token: str) -> HttpClient:
        """The HTTP client for this token, made again when the token changes (it masks it)."""
        with self._lock:
            if self._client is None or token != self._client_token:
                self._client = self._transport.client(classify, self.limiter, (token,))
                self._client_token = token
            return self._client

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, Any]] | None = None,
        payload: Any = None,
        idempotent: bool = True,
    ) -> Any:
        """One API call (retried by HttpClient); returns the decoded body, None for a 204. A 401
        (the token was rotated) is tried once more with the token read again; amoCRM applies
        nothing of a refused request, so a PATCH, or even a POST that adds something (not
        `idempotent`: never sent again once it may have arrived), is safe to send again."""
        return self._token.call(
            lambda token: self._call_with(token, method, path, params, payload, idempotent)
        )

    def _call_with(
        self,
        token: str,
        method: str,
        path: str,
        params: list[tuple[str, Any]] | None,
        payload: Any,
        idempotent: bool,
    ) -> Any:
        client = self._http(token)
        response = client.request(
            method,
            self.base_url + path,
            params=params,
            json=payload,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/hal+json"},
            idempotent=idempotent,
        )
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CrmUnavailable(f"amoCRM HTTP {response.status_code}: the answer is not JSON") from None

    def get_leads(self, entities: list[EntityRef]) -> dict[EntityRef, LeadSnapshot | None]:
        found: dict[EntityRef, LeadSnapshot | None] = {e: None for e in entities}
        ids = sorted({int(e.id) for e in entities if e.type is EntityType.LEAD and _DIGITS.match(e.id)})
        for chunk in _id_chunks(ids):
            params: list[tuple[str, Any]] = [("filter[id][]", i) for i in chunk]
            # Without a limit the API pages by 50, so 120 ids would need three calls.
            params.append(("limit", min(len(chunk), PAGE_LIMIT)))
            for page in range(1, MAX_PAGES + 1):
                body = self._call("GET", "/api/v4/leads", params=[*params, ("page", page)])
                leads = _embedded(body, "leads")
                for lead in leads:
                    snapshot = snapshot_from_api(lead)
                    # Only what was asked: a server that ignored the filter must not add cards.
                    if snapshot is not None and snapshot.entity in found:
                        found[snapshot.entity] = snapshot
                if len(leads) < min(len(chunk), PAGE_LIMIT) or not _has_next(body):
                    break
        return found

    def get_activities(self, activity_ids: list[str]) -> dict[str, Activity | None]:
        # Note webhooks carry the note itself, so no event ever needs an activity read.
        return {activity_id: None for activity_id in activity_ids}

    def activities_on(self, entities: list[EntityRef]) -> dict[EntityRef, list[Activity]]:
        found: dict[EntityRef, list[Activity]] = {e: [] for e in entities}
        # amoCRM has leads only; an id it cannot have owns no note and costs no call.
        ids = sorted({int(e.id) for e in entities if e.type is EntityType.LEAD and _DIGITS.match(e.id)})
        seen: set[str] = set()
        for chunk in _id_chunks(ids, key="filter[entity_id][]", reserved=len(_NOTES_FIXED_QUERY)):
            params: list[tuple[str, Any]] = [("filter[entity_id][]", i) for i in chunk]
            params += [("filter[note_type][]", t) for t in _NOTE_TYPE_NAMES]
            # id order: a note added while we page lands after the pages already read.
            params += [("order[id]", "asc"), ("limit", PAGE_LIMIT)]
            for page in range(1, MAX_PAGES + 1):
                body = self._call("GET", "/api/v4/leads/notes", params=[*params, ("page", page)])
                notes = _embedded(body, "notes")
                for note in notes:
                    activity = activity_from_note(note)
                    # Only what was asked: a server that ignored the filter must not credit
                    # another card; a page boundary that moved must not count a note twice.
                    if activity is not None and activity.entity in found and activity.id not in seen:
                        seen.add(activity.id)
                        found[activity.entity].append(activity)
                if len(notes) < PAGE_LIMIT or not _has_next(body):
                    break
            else:
                raise CrmUnavailable(f"amoCRM listed more than {MAX_PAGES} pages of notes")
        return found

    def list_calls(self, since: datetime) -> Iterator[Call]:
        """Calls amoCRM recorded at or after `since`: the events feed names them, their notes hold them.

        The window is the event's `created_at` (when amoCRM recorded the call), which is when
        its webhook was sent: a call an integration records late, with an earlier start, is
        still found when its webhook was lost. Calls on contacts or companies only are left out
        (no card to credit). Every note id is collected before any note is read so the reads
        take as few requests as the query budget allows; a note deleted since is skipped.
        """
        if since.tzinfo is None:
            raise ValueError("since must be an aware datetime")
        note_ids = self._call_note_ids(max(int(since.timestamp()), 0))
        for chunk in _id_chunks(sorted(note_ids), reserved=len(_NOTES_BY_ID_FIXED_QUERY)):
            wanted = set(chunk)
            limit = min(len(chunk), PAGE_LIMIT)
            # Without a limit the API pages by 50, so 190 ids would need four calls.
            params: list[tuple[str, Any]] = [("filter[id][]", i) for i in chunk] + [("limit", limit)]
            for page in range(1, MAX_PAGES + 1):
                body = self._call("GET", "/api/v4/leads/notes", params=[*params, ("page", page)])
                notes = _embedded(body, "notes")
                for note in notes:
                    activity = activity_from_note(note)
                    # Only what was asked, once: a server that ignored the filter or a page
                    # boundary that moved must not add or double a call.
                    if activity is None or activity.call is None or int(activity.id) not in wanted:
                        continue
                    wanted.discard(int(activity.id))
                    yield activity.call
                if len(notes) < limit or not _has_next(body):
                    break
            else:
                raise CrmUnavailable(f"amoCRM listed more than {MAX_PAGES} pages of call notes")

    def _call_note_ids(self, from_ts: int) -> set[int]:
        """Ids of the lead notes behind call events created at or after `from_ts`, all pages."""
        found: set[int] = set()
        params: list[tuple[str, Any]] = [
            ("filter[type]", ",".join(_CALL_EVENT_TYPES)),
            ("filter[created_at][from]", from_ts),
            ("limit", EVENTS_LIMIT),
        ]
        # The feed lists newest first, so an event recorded while we page pushes the rest one
        # place down: a note may be seen twice (the set keeps it once), never skipped.
        for page in range(1, MAX_PAGES + 1):
            body = self._call("GET", "/api/v4/events", params=[*params, ("page", page)])
            events = _embedded(body, "events")
            for event in events:
                if event.get("type") not in _CALL_EVENT_TYPES or event.get("entity_type") != "lead":
                    continue  # a call on a contact or company names no card
                stamp = _to_int(event.get("created_at"))
                if stamp is not None and stamp < from_ts:
                    continue  # a server that ignored the window must not widen it
                found.update(_event_note_ids(event))
            if len(events) < EVENTS_LIMIT or not _has_next(body):
                return found
        raise CrmUnavailable(f"amoCRM listed more than {MAX_PAGES} pages of call events")

    def list_changed_leads(self, since: datetime) -> Iterator[LeadSnapshot]:
        """Leads changed at or after `since`, oldest change first.

        Pages are walked by `updated_at` rather than by page number alone: a card that changes
        while we list moves to the end of the order, and plain page N+1 would then skip the
        card that slid into page N. Each step restarts one second before the last change seen
        (whether `[from]` is inclusive or not), dropping cards already yielded; only when a whole
        page shares that second does it step to the next page number.
        """
        if since.tzinfo is None:
            raise ValueError("since must be an aware datetime")
        from_ts = max(int(since.timestamp()), 0)
        page = 1
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params: list[tuple[str, Any]] = [
                ("filter[updated_at][from]", from_ts),
                ("order[updated_at]", "asc"),
                ("limit", PAGE_LIMIT),
                ("page", page),
            ]
            body = self._call("GET", "/api/v4/leads", params=params)
            leads = _embedded(body, "leads")
            last_ts: int | None = None
            for lead in leads:
                snapshot = snapshot_from_api(lead)
                stamp = _to_int(lead.get("updated_at"))
                if stamp is not None:
                    last_ts = stamp if last_ts is None else max(last_ts, stamp)
                if snapshot is None or snapshot.entity.id in seen:
                    continue
                seen.add(snapshot.entity.id)
                yield snapshot
            if len(leads) < PAGE_LIMIT or not _has_next(body):
                return
            boundary = (last_ts - 1) if last_ts is not None else from_ts
            if boundary > from_ts:
                from_ts, page = boundary, 1
            else:
                page += 1
        raise CrmUnavailable(f"amoCRM listed more than {MAX_PAGES} pages of changed leads")

    def set_fields(self, writes: list[SetCardFields]) -> WriteResult:
        result = WriteResult()
        items: dict[int, _Item] = {}
        for write in writes:
            try:
                lead_id = _lead_number(write.entity)
            except CrmRejected as refused:
                result.failed[write.effect_id] = refused
                continue
            try:
                values = {str(name): encode_value(value) for name, value in write.fields.items()}
            except ValueError as exc:
                result.failed[write.effect_id] = CrmRejected(f"{write.entity.key}: {exc}")
                continue
            # Two effects on one card (intake stamp, verdict) become one item: amoCRM takes a
            # card once per request, and it halves the calls.
            item = items.setdefault(lead_id, _Item(lead_id))
            item.effect_ids.append(write.effect_id)
            item.values.update(values)
        pending = list(items.values())
        for start in range(0, len(pending), self.bulk_size):
            chunk = pending[start : start + self.bulk_size]
            error = self._patch(chunk, result, second_try=False)
            if error is not None and error.retryable:
                # Still throttled or down after the retries: leave the rest for the next run
                # instead of spending the Lambda's time on calls that will fail the same way.
                for later in pending[start + self.bulk_size :]:
                    for effect_id in later.effect_ids:
                        result.failed[effect_id] = error
                break
        return result

    def _patch(self, chunk: list[_Item], result: WriteResult, *, second_try: bool) -> CrmError | None:
        """PATCH one chunk; returns the error that failed the whole chunk, if any."""
        try:
            self._call("PATCH", "/api/v4/leads", payload=[item.payload() for item in chunk])
        except AmoValidationError as exc:
            rejected = {i: text for i, text in exc.rejected().items() if 0 <= i < len(chunk)}
            for index, text in rejected.items():
                item = chunk[index]
                # A card deleted since: refused for good, and told apart from a bad value.
                kind = CrmNotFound if "NotFound" in text else CrmRejected
                error = kind(f"amoCRM rejected lead {item.lead_id}: {_excerpt(text)}", status=exc.status)
                for effect_id in item.effect_ids:
                    result.failed[effect_id] = error
            rest = [item for i, item in enumerate(chunk) if i not in rejected]
            if not rest:
                return None
            if rejected and not second_try:
                # amoCRM applies nothing of a rejected bulk: send the accepted items once more.
                return self._patch(rest, result, second_try=True)
            for item in rest:
                for effect_id in item.effect_ids:
                    result.failed[effect_id] = exc
            return exc
        except CrmError as exc:
            for item in chunk:
                for effect_id in item.effect_ids:
                    result.failed[effect_id] = exc
            return exc
        for item in chunk:
            result.succeeded.update(item.effect_ids)
        return None

    def card_url(self, entity: EntityRef) -> str:
        return f"{self.base_url}/leads/detail/{quote(entity.id, safe='')}"

    # ------------------------------------------------------------------ work items
    # tasks-api (POST /api/v4/tasks: text and complete_till required, `_embedded.tasks[].id`;
    # PATCH /api/v4/tasks/{id} with is_completed and result.text closes one), events-and-notes
    # (POST /api/v4/leads/notes, note_type common with params.text), leads-api (PATCH
    # /api/v4/leads/{id}; GET answers 204 for a lead that does not exist). How amoCRM refuses a
    # write naming a missing card or task is not documented: a refusal is followed by a read of
    # what it named, and CrmNotFound raised when that is gone.
    def create_task(self, task: CreateTask) -> str:
        lead_id = _lead_number(task.entity)
        responsible = _to_int(task.assignee.strip())
        if responsible is None or responsible <= 0:
            raise CrmRejected(f"amoCRM task on {task.entity.key}: {task.assignee!r} is not a user id")
        try:
            due = encode_value(task.deadline)
        except ValueError as exc:
            raise CrmRejected(f"amoCRM task on {task.entity.key}: {exc}") from None
        item = {
            "text": task_description(task.text, task.link, title=task.title),
            "complete_till": due,
            "entity_id": lead_id,
            "entity_type": "leads",
            "responsible_user_id": responsible,
            "task_type_id": TASK_TYPE_FOLLOW_UP,
        }
        body = self._write(task.entity, "POST", "/api/v4/tasks", [item], idempotent=False)
        made = _embedded(body, "tasks")
        ident = _to_int(made[0].get("id")) if made else None
        if ident is None:
            raise CrmUnavailable(f"amoCRM POST /api/v4/tasks on {task.entity.key} answered no task id")
        return str(ident)

    def complete_task(self, task_id: str) -> None:
        ident = _to_int(task_id.strip())
        if ident is None or ident <= 0:
            raise CrmNotFound(f"amoCRM has no task {task_id!r}")
        path = f"/api/v4/tasks/{ident}"
        try:
            self._call("PATCH", path, payload={"is_completed": True, "result": {"text": TASK_RESULT}})
        except CrmRejected as refused:
            task = self._read_or_gone(path, f"task {ident}", refused)
            if task.get("is_completed") is not True:
                raise

    def remind(self, task_id: str | None, reminder: RemindUser) -> None:
        # amoCRM has no call to comment a task: the reminder is a note on the card.
        self._note(reminder.entity, reminder.text)

    def move_stage(self, move: MoveStage) -> None:
        lead_id = _lead_number(move.entity)
        status = _to_int(move.stage.strip())
        pipeline = _to_int(move.pipeline.strip()) if move.pipeline is not None else None
        if status is None or (move.pipeline is not None and pipeline is None):
            raise CrmRejected(
                f"amoCRM stage move of {move.entity.key}: {move.stage!r} / {move.pipeline!r} is no status id"
            )
        change: dict[str, Any] = {"status_id": status}
        if pipeline is not None:
            change["pipeline_id"] = pipeline
        self._write(move.entity, "PATCH", f"/api/v4/leads/{lead_id}", change, idempotent=True)

    def add_note(self, note: AddNote) -> None:
        self._note(note.entity, note.text)

    def _note(self, entity: EntityRef, text: str) -> None:
        item = {"entity_id": _lead_number(entity), "note_type": "common", "params": {"text": text}}
        self._write(entity, "POST", "/api/v4/leads/notes", [item], idempotent=False)

    def _write(self, entity: EntityRef, method: str, path: str, payload: Any, *, idempotent: bool) -> Any:
        """A write about one card; a refusal is CrmNotFound when the card is gone."""
        try:
            return self._call(method, path, payload=payload, idempotent=idempotent)
        except CrmRejected as refused:
            self._read_or_gone(f"/api/v4/leads/{_lead_number(entity)}", f"lead {entity.id}", refused)
            raise

    def _read_or_gone(self, path: str, what: str, refused: CrmRejected) -> Mapping[str, Any]:
        """What `path` names, read after `refused`; CrmNotFound when it does not exist (204, 404)."""
        if isinstance(refused, CrmNotFound):
            raise refused
        try:
            found = self._call("GET", path)
        except CrmRejected as exc:
            if exc.status != 404:
                raise
            found = None
        if not isinstance(found, Mapping):
            raise CrmNotFound(f"amoCRM has no {what} ({refused})", status=refused.status) from None
        return found

    def list_loss_reasons(self) -> dict[str, str]:
        """The account's loss reasons, id -> name (`GET /api/v4/leads/loss_reasons`, Kommo's
        reference "Get loss reasons": id, name, sort, created_at, updated_at), every page."""
        found: dict[str, str] = {}
        for page in range(1, MAX_PAGES + 1):
            params: list[tuple[str, Any]] = [("limit", PAGE_LIMIT), ("page", page)]
            body = self._call("GET", "/api/v4/leads/loss_reasons", params=params)
            reasons = _embedded(body, "loss_reasons")
            for reason in reasons:
                ident = _loss_reason(reason.get("id"))
                if ident is not None:
                    found[ident] = _clean(reason.get("name")) or ident
            if len(reasons) < PAGE_LIMIT or not _has_next(body):
                return found
        raise CrmUnavailable(f"amoCRM listed more than {MAX_PAGES} pages of loss reasons")

    def list_users(self) -> dict[str, str]:
        """`GET /api/v4/users`, every page of 250 (users-api): `name` is the user's full name, the
        e-mail stands in for an empty one. The token must be an account admin's: amoCRM answers
        others 403, which is raised (CrmRejected) like any refusal."""
        active: dict[str, str] = {}
        left: dict[str, str] = {}
        for page in range(1, MAX_PAGES + 1):
            body = self._call("GET", "/api/v4/users", params=[("limit", PAGE_LIMIT), ("page", page)])
            users = _embedded(body, "users")
            for user in users:
                ident = _to_int(user.get("id"))
                name = _clean(user.get("name")) or _clean(user.get("email"))
                if ident is None or name is None:
                    continue
                rights = user.get("rights")
                gone = isinstance(rights, Mapping) and rights.get("is_active") is False
                (left if gone else active)[str(ident)] = name
            if len(users) < PAGE_LIMIT or not _has_next(body):
                break
        else:
            raise CrmUnavailable(f"amoCRM listed more than {MAX_PAGES} pages of users")
        return {**active, **{k: v for k, v in left.items() if k not in active}}

    def list_stages(self) -> dict[str, StageName]:
        """Every status of every pipeline, in one `GET /api/v4/leads/pipelines` (leads_pipelines).
        142 and 143, in every pipeline, take the main pipeline's names and no pipeline (a card's
        stored state does not keep its pipeline)."""
        pipelines = sorted(
            _embedded(self._call("GET", "/api/v4/leads/pipelines"), "pipelines"),
            key=lambda p: (p.get("is_main") is not True, _to_int(p.get("sort")) or 0),
        )
        stages: dict[str, StageName] = {}
        shared: set[str] = set()
        for pipeline in pipelines:
            title = _clean(pipeline.get("name"))
            embedded = pipeline.get("_embedded")
            statuses = embedded.get("statuses") if isinstance(embedded, Mapping) else None
            for status in statuses if isinstance(statuses, list) else []:
                ident = _to_int(status.get("id")) if isinstance(status, Mapping) else None
                if ident is None:
                    continue
                key = stage_key(EntityType.LEAD, str(ident))
                if key in stages:
                    shared.add(key)
                    continue
                stages[key] = StageName(_clean(status.get("name")) or str(ident), title)
        for key in shared:
            stages[key] = StageName(stages[key].name)
        return stages


# ----------------------------------------------------------------------------- helpers
def _embedded(body: Any, name: str) -> list[Mapping[str, Any]]:
    """The items of a HAL list answer (`_embedded.<name>`); None (HTTP 204) is an empty list."""
    if body is None:
        return []
    embedded = body.get("_embedded") if isinstance(body, dict) else None
    items = embedded.get(name) if isinstance(embedded, dict) else None
    if not isinstance(items, list):
        raise CrmUnavailable(f"amoCRM answered a {name[:-1]} list without _embedded.{name}")
    return [item for item in items if isinstance(item, Mapping)]


def _lead_number(entity: EntityRef) -> int:
    """The amoCRM lead id of a card; CrmRejected for a card amoCRM cannot have (it has leads only)."""
    ident = _to_int(entity.id) if entity.type is EntityType.LEAD else None
    if ident is None or ident <= 0:
        raise CrmRejected(f"amoCRM has no lead {entity.key}")
    return ident


def _clean(value: Any) -> str | None:
    """A name as text, stripped; None for anything else or nothing."""
    return value.strip() or None if isinstance(value, str) else None


def _has_next(body: Any) -> bool:
    links = body.get("_links") if isinstance(body, dict) else None
    return isinstance(links, dict) and isinstance(links.get("next"), dict)


def _event_note_ids(event: Mapping[str, Any]) -> list[int]:
    """Note ids a call event points to: `value_after: [{"note": {"id": N}}]`."""
    after = event.get("value_after")
    ids: list[int] = []
    for entry in after if isinstance(after, list) else []:
        note = entry.get("note") if isinstance(entry, Mapping) else None
        ident = _to_int(note.get("id")) if isinstance(note, Mapping) else None
        if ident is not None and ident > 0:
            ids.append(ident)
    return ids


def _numbered(group: Any, where: str) -> list[tuple[str, Any]]:
    """Items of a `[0]`, `[1]`, ... group as (index, item) in numeric order."""
    if not isinstance(group, dict):
        raise MalformedWebhook(f"{where} must hold numbered items like {where}[0][...]")
    keys = list(group)
    bad = [k for k in keys if not _DIGITS.match(k)]
    if bad:
        raise MalformedWebhook(
            f"{where} must hold numbered items like {where}[0][...], got {where}[{_excerpt(bad[0], 24)}]"
        )
    return [(k, group[k]) for k in sorted(keys, key=int)]


def _require_id(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if value is None or value == "":
        raise MalformedWebhook(f"{where}[{key}] is missing")
    ident = _to_int(value) if isinstance(value, str) else None
    if ident is None or ident <= 0:
        raise MalformedWebhook(f"{where}[{key}] must be a positive integer id, got {_excerpt(value, 24)!r}")
    return str(ident)


def _optional_id(item: Mapping[str, Any], key: str, where: str) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    ident = _to_int(value) if isinstance(value, str) else None
    if ident is None:
        raise MalformedWebhook(f"{where}[{key}] must be an integer, got {_excerpt(value, 24)!r}")
    return str(ident)


def _timestamp(
    item: Mapping[str, Any], keys: tuple[str, ...], where: str, *, required: bool
) -> datetime | None:
    """The first of `keys` present as unix seconds. A non-numeric value in the first key is an
    error; later keys are fallbacks and are skipped when they hold something else."""
    for position, key in enumerate(keys):
        value = item.get(key)
        if value is None or value == "":
            continue
        moment = _stamp(value) if isinstance(value, str) else None
        if moment is not None:
            return moment
        if position == 0:
            raise MalformedWebhook(f"{where}[{key}] must be unix seconds, got {_excerpt(value, 24)!r}")
    if required:
        raise MalformedWebhook(f"{where}[{keys[0]}] is missing")
    return None


def _hook_fields(group: Any) -> dict[str, Any]:
    """{field id: first value} from `[custom_fields][N][id|values]`. An entry we cannot read is
    skipped, not fatal: one odd field type must not cost the whole delivery."""
    if not isinstance(group, dict):
        return {}
    fields: dict[str, Any] = {}
    for key in sorted((k for k in group if _DIGITS.match(k)), key=int):
        entry = group[key]
        if not isinstance(entry, dict):
            continue
        field_id = entry.get("id")
        if not isinstance(field_id, str) or not _DIGITS.match(field_id):
            continue
        fields[field_id] = _first_value(entry.get("values"))
    return fields


def _id_chunks(ids: list[int], key: str = "filter[id][]", reserved: int = 0) -> Iterator[list[int]]:
    """Ids in groups of at most PAGE_LIMIT whose encoded `key=` query, with `reserved` characters
    of other parameters, stays short."""
    per_id = len(quote(key, safe="")) + 2  # "=" and "&"
    chunk: list[int] = []
    size = reserved
    for ident in ids:
        cost = per_id + len(str(ident))
        if chunk and (len(chunk) >= PAGE_LIMIT or size + cost > MAX_QUERY_CHARS):
            yield chunk
            chunk, size = [], reserved
        chunk.append(ident)
        size += cost
    if chunk:
        yield chunk
