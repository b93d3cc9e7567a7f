"""Bitrix24 behind the `CrmAdapter` interface: outgoing-webhook events in, REST through an
incoming webhook out.

Wire facts (from Bitrix24's REST documentation, the bitrix24/b24restdocs repository): events are
form-encoded and carry only `data[FIELDS][ID]` (except ONVOXIMPLANTCALLEND, whose `data` is flat
and names the CRM activity, not the card), authenticated by `auth[application_token]`
(no signature); REST is `{portal}/rest/{user}/{code}/{method}.json`; `batch` runs up to 50
commands and answers HTTP 200 even when commands fail; a missing card is
`{"error": "", "error_description": "Not found"}`; numbers come as strings and dates as
ISO 8601 with the portal's offset.
"""

from __future__ import annotations

import heapq
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

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
from crm_adapters.formdata import MAX_FIELDS, FormError, encode_form, parse_form
from crm_adapters.http import HttpClient, Transport
from crm_adapters.limits import Window
from crm_adapters.work import task_description
from leadwatch.config import Bitrix24Config, SecretRef
from leadwatch.effects import AddNote, CreateTask, FieldValue, MoveStage, RemindUser, SetCardFields
from leadwatch.events import Activity, Call, CrmEvent, EntityRef, EntityType, EventKind, LeadSnapshot
from leadwatch.secrets import Secret, same_secret

BATCH_LIMIT = 50
_DIGITS = re.compile(r"^[0-9]{1,18}$")
# An empty-code error whose text means "no such card" (crm-lead-get.md, "Possible Errors"), and the
# codes of the newer CRM methods for a missing object or owner (crm-timeline-comment-add.md:
# `NOT_FOUND` "Not found.", `OWNER_NOT_FOUND`).
_MISSING_TEXTS = {"not found", "not found.", "id is not defined or invalid"}
_MISSING_CODES = {"NOT_FOUND", "OWNER_NOT_FOUND"}
_RATE_CODES = {"QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT"}
_DOWN_CODES = {"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"}

_LEAD_EVENTS = {
    "ONCRMLEADADD": EventKind.LEAD_CREATED,
    "ONCRMLEADUPDATE": EventKind.LEAD_CHANGED,
    "ONCRMLEADDELETE": EventKind.LEAD_DELETED,
}
_DEAL_EVENTS = {
    "ONCRMDEALADD": EventKind.LEAD_CREATED,
    "ONCRMDEALUPDATE": EventKind.LEAD_CHANGED,
    "ONCRMDEALDELETE": EventKind.LEAD_DELETED,
}
_ACTIVITY_EVENT = "ONCRMACTIVITYADD"
_CALL_END_EVENT = "ONVOXIMPLANTCALLEND"

# voximplant CALL_TYPE: 1 outgoing, 2 incoming, 3 incoming with redirect, 4 callback (the portal dials
# the client back: the manager's outgoing call). 5, an informational robocall, is nobody's dialing.
_CALL_DIRECTIONS = {"1": "out", "2": "in", "3": "in", "4": "out"}
_INFO_CALL = "5"
_ANSWERED = "200"  # CALL_FAILED_CODE of a call that was picked up
# A CALL_ID goes into the inbox's sort key: visible ASCII, bounded (real ones are ~60 characters).
_CALL_ID = re.compile(r"^[\x21-\x7e]{1,200}$")
_SECONDS = re.compile(r"^[0-9]{1,9}$")
# voximplant.statistic.get's CRM_ENTITY_TYPE for the cards leadwatch watches.
_STAT_ENTITY_TYPES = {"LEAD": EntityType.LEAD, "DEAL": EntityType.DEAL}

# UF_CRM_TASK binds a task to a card by a prefixed id (tasks-task-add.md): L_4 a lead, D_10 a deal.
_BINDINGS = {EntityType.LEAD: "L", EntityType.DEAL: "D"}
_TASK_COMPLETED = "5"  # tasks/fields.md: status 5 is "completed"

_ACTIVITY_KINDS = {"1": "meeting", "2": "call", "3": "task", "4": "email"}
_DIRECTIONS = {"1": "in", "2": "out"}
_OWNER_TYPES = {"1": EntityType.LEAD, "2": EntityType.DEAL}
_OWNER_TYPE_IDS = {kind: int(code) for code, kind in _OWNER_TYPES.items()}
# What `_activity` reads; selecting it keeps a page of 50 activities small (no DESCRIPTION).
_ACTIVITY_SELECT = [
    "ID",
    "OWNER_ID",
    "OWNER_TYPE_ID",
    "TYPE_ID",
    "DIRECTION",
    "RESPONSIBLE_ID",
    "COMPLETED",
    "CREATED",
    "START_TIME",
    "END_TIME",
]

# Names (user-get.md, crm-status-list.md, crm-category-list.md, crm/deals/index.md): a list method
# answers 50 rows a page, `start` picks the page, `total` counts them all, so the pages after the
# first can go in batches of 50. Deal categories are "funnels" of entityTypeId 2; the stages of
# category 0 are the STATUS directory DEAL_STAGE, of category N DEAL_STAGE_N (ids "C<N>:...").
PAGE_SIZE = 50
MAX_LIST_PAGES = 400  # 20,000 users: a bound on one listing's time, far past a sales team
_DEAL_TYPE_ID = 2

# A list selects `UF_*` for the custom fields (a rejection reason among them); a multiple field is
# not in that mask (crm-lead-list.md, crm-deal-list.md) and must be named: `select_fields`.
# crm.lead.get / crm.deal.get answer every field.
_SNAPSHOT_FIELDS = ["ID", "TITLE", "ASSIGNED_BY_ID", "DATE_CREATE", "DATE_MODIFY", "MOVED_TIME"]
_SELECT = {
    EntityType.LEAD: [*_SNAPSHOT_FIELDS, "STATUS_ID", "UF_*"],
    EntityType.DEAL: [*_SNAPSHOT_FIELDS, "STAGE_ID", "CATEGORY_ID", "UF_*"],
}


def _excerpt(text: Any, limit: int = 40) -> str:
    value = str(text)
    return repr(value if len(value) <= limit else value[:limit] + "...")


def classify(response: requests.Response) -> CrmError | None:
    """Map a Bitrix24 answer to the shared error classes (None: a success)."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    code = str(body.get("error") or "") if isinstance(body, dict) else ""
    text = str(body.get("error_description") or "") if isinstance(body, dict) else ""
    label = f"Bitrix24 HTTP {status} {code or '(no code)'}" + (f": {text}" if text else "")
    if status == 503 and code == "QUERY_LIMIT_EXCEEDED":
        return CrmRateLimited(label, status=status)
    if status == 429 or code == "OPERATION_TIME_LIMIT":
        return CrmRateLimited(label, retry_after=_operating_reset(body), status=status)
    if status >= 500:
        return CrmUnavailable(label, status=status)
    return _refusal(code, text, label, status)


def _refusal(code: str, text: str, label: str, status: int | None = None) -> CrmRejected:
    """A method's own refusal: the card (or object) is missing, or the request is refused."""
    if code in _MISSING_CODES or (not code and text.strip().lower() in _MISSING_TEXTS):
        return CrmNotFound(label, status=status)
    return CrmRejected(label, status=status)


def _operating_reset(body: Any) -> float | None:
    """Seconds until `time.operating_reset_at`, measured against the portal's own `time.start`
    when present so that our clock's skew does not matter."""
    block = body.get("time") if isinstance(body, dict) else None
    if not isinstance(block, dict):
        return None
    try:
        reset = float(block["operating_reset_at"])
    except (KeyError, TypeError, ValueError):
        return None
    try:
        now = float(block["start"])
    except (KeyError, TypeError, ValueError):
        now = time.time()
    return max(reset - now, 0.0)


def _dt(value: Any) -> datetime | None:
    """A Bitrix24 datetime as aware UTC; "" / null / unreadable give None."""
    if not value or not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        # Bitrix24 always sends an offset; if a proxy dropped it, UTC is the least wrong guess.
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None  # year 1 or 9999 with an offset: no UTC moment exists (a crafted webhook)


def _id_text(value: Any) -> str | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    return str(value)


def _text(value: Any) -> str | None:
    """A scalar form/JSON value as stripped text; None for absent, empty or a nested group."""
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _activity_ref(value: Any) -> str | None:
    """CRM_ACTIVITY_ID as a canonical id; None when the call is linked to no activity.

    Raises MalformedWebhook for a value that is there but is not an id."""
    text = _text(value)
    if value is not None and not isinstance(value, str):
        raise MalformedWebhook(f"data[CRM_ACTIVITY_ID] is not an activity id: {_excerpt(value)}")
    if text is None:
        return None
    if not _DIGITS.match(text):
        raise MalformedWebhook(f"data[CRM_ACTIVITY_ID] is not an activity id: {_excerpt(value)}")
    # PHP writes an unset integer column as 0: that is "no activity", not activity number 0.
    return str(int(text)) if int(text) > 0 else None


def _answered(code: Any) -> bool | None:
    text = _text(code)
    return None if text is None else text == _ANSWERED


def _stat_activity(value: Any) -> str | None:
    """A listing's CRM_ACTIVITY_ID (a string, or a number in JSON); None when there is none."""
    text = _text(value)
    if text is None or not _DIGITS.match(text) or int(text) == 0:
        return None
    return str(int(text))


def _seconds(value: Any) -> int:
    """A duration from a listing: unreadable counts as 0 rather than losing the call."""
    text = _text(value)
    return int(text) if text is not None and _SECONDS.match(text) else 0


def encode_value(value: FieldValue) -> str:
    """A field value as Bitrix24 takes it: ISO 8601 with the value's own offset, Y/N, text."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a naive datetime cannot be written: its time zone is unknown")
        return value.isoformat(timespec="seconds")
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value)


def _card_id(entity: EntityRef) -> str:
    """A card's id as Bitrix24 takes it; ValueError for one it cannot have."""
    if entity.type not in _BINDINGS or not _DIGITS.match(entity.id) or int(entity.id) == 0:
        raise ValueError(f"card id {_excerpt(entity.id)} is not a Bitrix24 {entity.type.value} id")
    return str(int(entity.id))


def _user_id(value: str) -> str:
    text = value.strip()
    if not _DIGITS.match(text) or int(text) == 0:
        raise ValueError(f"{_excerpt(value)} is not a Bitrix24 user id")
    return str(int(text))


def _task_id(value: str) -> str:
    """A task id to send; one no portal can have is a task that does not exist."""
    text = value.strip()
    if not _DIGITS.match(text) or int(text) == 0:
        raise CrmNotFound(f"Bitrix24 has no task {_excerpt(value)}")
    return str(int(text))


def _members(value: Any) -> dict[str, Any]:
    """A batch member: PHP writes an empty array as [] and a 0..n-1 keyed one as a list."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


def _unique(activities: list[Activity]) -> list[Activity]:
    """Each activity once: offset paging over a live list can show a row twice."""
    return list({a.id: a for a in activities}.values())


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _shared_window(rate: float, burst: int) -> Window:
    """Deployment-wide slots under the portal's leaky bucket (`burst` deep, draining `rate`/s;
    apidocs.bitrix24.ru/limits.html: 50 and 2 on most plans). Slots of C = burst // 2 requests,
    C / rate seconds long: a span just over k-1 slots long touches k+1 of them, (k+1)C requests,
    and the bucket takes burst + rate (k-1) C / rate = burst + (k-1)C >= (k+1)C while 2C <= burst,
    for every k; the long-run rate is `rate`. A busy container claims up to a quarter of a
    slot's requests in one write (`Window.batch`): four busy containers can each hold a claim in
    one slot, and what one holds unused is lost to the others for that slot only."""
    per_slot = max(1, burst // 2)
    return Window(per_slot / rate, per_slot, batch=max(1, per_slot // 4))


class Bitrix24Adapter:
    kind = "bitrix24"

    def __init__(
        self,
        tenant: str,
        config: Bitrix24Config,
        resolve: Callable[[SecretRef], str],
        *,
        transport: Transport | None = None,
        rate: float = 2.0,
        burst: int = 50,
        select_fields: Sequence[str] = (),
    ):
        """`select_fields`: custom fields listings must name besides `UF_*` (multiple ones)."""
        self.tenant = tenant
        self.config = config
        extra = [name for name in dict.fromkeys(select_fields) if name]
        self._select = {kind: [*fields, *extra] for kind, fields in _SELECT.items()}
        self._resolve = resolve
        self._transport = transport or Transport()
        # The real bucket is shared with whatever else calls the portal from our IP, and our
        # clock and the portal's never agree exactly: keep a little of the burst spare.
        headroom = max(1, burst // 10) if burst > 1 else 0
        local = self._transport.limiter(rate, burst - headroom)
        self.limiter = self._transport.shared(
            local, tenant, "bitrix24", _shared_window(rate, burst - headroom)
        )
        self._lock = threading.Lock()
        # Asked for at each call, never held: a code rotated in SSM is used as soon as it is read,
        # and a 401 makes it be read again (Secret.call).
        self._code = Secret(resolve, config.webhook_code)
        self._client: HttpClient | None = None
        self._client_code: str | None = None

    # ------------------------------------------------------------------ secrets & HTTP
    @property
    def http(self) -> HttpClient:
        return self._client_for(self._code.get())

    def _client_for(self, code: str) -> HttpClient:
        """The HTTP client for this webhook code, made again when the code changes (it is a
        secret: the client masks it in every error)."""
        with self._lock:
            if self._client is None or code != self._client_code:
                self._client = self._transport.client(classify, self.limiter, (code,))
                self._client_code = code
            return self._client

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, idempotent: bool = True
    ) -> dict[str, Any]:
        """One REST method, POST JSON; returns the decoded envelope or raises a CrmError.
        A 401 (the webhook code was replaced) is tried once more with the code read again: the
        portal refused it, so even a call that is not `idempotent` (it adds something) did nothing."""
        return self._code.call(lambda code: self._call_with(code, method, params, idempotent))

    def _call_with(
        self, code: str, method: str, params: Mapping[str, Any] | None, idempotent: bool
    ) -> dict[str, Any]:
        client = self._client_for(code)
        url = f"{self.config.base_url}/rest/{self.config.webhook_user_id}/{code}/{method}.json"
        response = client.request("POST", url, json=dict(params or {}), idempotent=idempotent)
        try:
            body = response.json()
        except ValueError:
            raise CrmUnavailable(
                f"Bitrix24 {method}: HTTP {response.status_code} with a body that is not JSON"
            ) from None
        if not isinstance(body, dict) or "result" not in body:
            raise CrmUnavailable(f"Bitrix24 {method}: the answer has no 'result'")
        return body

    def batch(self, commands: Mapping[str, str], halt: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run up to 50 `method?query` commands in one request: (results, errors) by key."""
        outer = self._batch(commands, halt)
        return _members(outer.get("result")), _members(outer.get("result_error"))

    def _batch(
        self, commands: Mapping[str, str], halt: bool = False, *, idempotent: bool = True
    ) -> dict[str, Any]:
        """The whole `batch` answer (`result`, `result_error`, `result_next`, ...)."""
        if len(commands) > BATCH_LIMIT:
            raise ValueError(f"a batch holds at most {BATCH_LIMIT} commands, got {len(commands)}")
        body = self.call("batch", {"halt": 1 if halt else 0, "cmd": dict(commands)}, idempotent=idempotent)
        outer = body["result"]
        if not isinstance(outer, dict):
            raise CrmUnavailable("Bitrix24 batch: 'result' is not an object")
        return outer

    # ------------------------------------------------------------------ webhooks
    def parse_webhook(self, request: WebhookRequest) -> list[CrmEvent]:
        try:
            form = parse_form(request.body)
        except FormError as exc:
            raise MalformedWebhook(str(exc), authenticated=self._carries_token(request.body)) from None
        self._authenticate(form.get("auth"))
        try:
            return self._events(form)
        except MalformedWebhook as exc:
            exc.authenticated = True
            raise

    def _authenticate(self, auth: Any) -> None:
        """auth[application_token] must be one of the tenant's; auth[domain] and auth[member_id],
        where a delivery carries them, must name the tenant's portal (a token copied to another
        portal's handler, or a second portal posting to this URL, is refused)."""
        fields: Mapping[str, Any] = auth if isinstance(auth, dict) else {}
        given = fields.get("application_token")
        if not isinstance(given, str) or not given:
            raise WebhookUnauthorized("auth[application_token] is missing")
        if not self._known_token(given):
            raise WebhookForbidden("auth[application_token] does not match this portal's token")
        domain = fields.get("domain")
        if domain is not None and not self._our_domain(domain):
            raise WebhookForbidden(
                f"auth[domain] {_excerpt(domain)} is not this tenant's portal ({self.config.portal_domain})"
            )
        member, expected = fields.get("member_id"), self.config.member_id
        if member is not None and expected is not None and not self._our_member(member, expected):
            raise WebhookForbidden(
                f"auth[member_id] {_excerpt(member)} is not this tenant's portal (member_id {expected})"
            )

    def _known_token(self, given: str) -> bool:
        # Every token is compared, so the time taken does not tell which one matched.
        matched = False
        for ref in self.config.application_tokens:
            matched |= same_secret(given, self._resolve(ref))
        return matched

    @staticmethod
    def _our_member(member: Any, expected: str) -> bool:
        return isinstance(member, str) and same_secret(member.strip(), expected)

    def _our_domain(self, domain: Any) -> bool:
        if not isinstance(domain, str):
            return False
        parts = urlsplit(self.config.base_url)
        return domain.strip().rstrip(".").lower() in {parts.netloc.lower(), (parts.hostname or "").lower()}

    def _carries_token(self, body: bytes) -> bool:
        """Whether a body that is not a valid form still carries one of the tenant's tokens (read
        leniently): such a delivery is the portal's, and worth keeping for inspection."""
        if b"application_token" not in body:
            return False
        try:
            pairs = parse_qsl(
                body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS
            )
        except ValueError:
            return False
        return any(
            key == "auth[application_token]" and value and self._known_token(value) for key, value in pairs
        )

    def _events(self, form: Mapping[str, Any]) -> list[CrmEvent]:
        raw_event = form.get("event")
        if not isinstance(raw_event, str) or not raw_event.strip():
            raise MalformedWebhook("event is missing")
        event = raw_event.strip().upper()
        entity_type: EntityType | None
        if event in _LEAD_EVENTS:
            kind, entity_type = _LEAD_EVENTS[event], EntityType.LEAD
        elif event in _DEAL_EVENTS:
            if "deal" not in self.config.entities:
                return []
            kind, entity_type = _DEAL_EVENTS[event], EntityType.DEAL
        elif event == _ACTIVITY_EVENT:
            kind, entity_type = EventKind.ACTIVITY_ADDED, None
        elif event == _CALL_END_EVENT:
            return self._call_ended(event, form.get("data"))
        else:
            # Contacts, companies, other telephony events...: valid deliveries leadwatch does not act on.
            return []

        data = form.get("data")
        fields = data.get("FIELDS") if isinstance(data, dict) else None
        raw_id = fields.get("ID") if isinstance(fields, dict) else None
        if raw_id is None:
            raise MalformedWebhook("data[FIELDS][ID] is missing")
        if not isinstance(raw_id, str) or not _DIGITS.match(raw_id) or int(raw_id) == 0:
            raise MalformedWebhook(f"data[FIELDS][ID] is not a positive number: {_excerpt(raw_id)}")
        ident = str(int(raw_id))

        raw_ts = form.get("ts")
        if raw_ts is None:
            raise MalformedWebhook("ts is missing")
        if not isinstance(raw_ts, str) or not _DIGITS.match(raw_ts.strip()):
            raise MalformedWebhook(f"ts is not unix seconds: {_excerpt(raw_ts)}")
        ts = int(raw_ts.strip())
        try:
            occurred_at = datetime.fromtimestamp(ts, UTC)
        except (OverflowError, OSError, ValueError):
            raise MalformedWebhook(f"ts is out of range: {_excerpt(raw_ts)}") from None

        entity = EntityRef(entity_type, ident) if entity_type is not None else None
        return [
            CrmEvent(
                tenant=self.tenant,
                kind=kind,
                entity=entity,
                dedupe_key=f"b24:{event}:{ident}:{ts}",
                source="webhook",
                raw_event=event,
                occurred_at=occurred_at,
                activity_id=ident if entity is None else None,
            )
        ]

    def _call_ended(self, event: str, data: Any) -> list[CrmEvent]:
        """ONVOXIMPLANTCALLEND: a flat `data` (no FIELDS) that names the call's CRM activity but
        not the card; the worker finds the card through the activity."""
        fields: Mapping[str, Any] = data if isinstance(data, dict) else {}
        call_id = fields.get("CALL_ID")
        if call_id is None:
            raise MalformedWebhook("data[CALL_ID] is missing")
        if not isinstance(call_id, str) or not _CALL_ID.match(call_id):
            raise MalformedWebhook(f"data[CALL_ID] is not a call id: {_excerpt(call_id)}")
        call_type = fields.get("CALL_TYPE")
        if not isinstance(call_type, str) or (
            call_type.strip() not in _CALL_DIRECTIONS and call_type.strip() != _INFO_CALL
        ):
            raise MalformedWebhook(f"data[CALL_TYPE] is not a call type 1-5: {_excerpt(call_type)}")
        if call_type.strip() == _INFO_CALL:
            return []  # a robocall reading out a message: no manager dialed anyone
        activity_id = _activity_ref(fields.get("CRM_ACTIVITY_ID"))
        if activity_id is None:
            # Linked to nothing in the CRM; reconciliation reads the statistics rows that have a card.
            return []
        duration = fields.get("CALL_DURATION")
        if not isinstance(duration, str) or not _SECONDS.match(duration.strip()):
            raise MalformedWebhook(f"data[CALL_DURATION] is not a number of seconds: {_excerpt(duration)}")
        started_at = _dt(fields.get("CALL_START_DATE"))
        if started_at is None:
            raise MalformedWebhook(
                f"data[CALL_START_DATE] is not an ISO 8601 datetime: {_excerpt(fields.get('CALL_START_DATE'))}"
            )
        call = Call(
            key=f"act{activity_id}",
            entity=None,
            direction=_CALL_DIRECTIONS[call_type.strip()],
            manager=_id_text(_text(fields.get("PORTAL_USER_ID"))),
            started_at=started_at,
            duration=int(duration.strip()),
            answered=_answered(fields.get("CALL_FAILED_CODE")),
            record_url=None,
            activity_id=activity_id,
            source="telephony",
        )
        return [
            CrmEvent(
                tenant=self.tenant,
                kind=EventKind.CALL_ENDED,
                entity=None,
                # One call ends once: its id is the delivery's identity, whatever `ts` a redelivery has.
                dedupe_key=f"b24:{event}:{call_id}",
                source="webhook",
                raw_event=event,
                occurred_at=started_at,
                activity_id=activity_id,
                call=call,
            )
        ]

    # ------------------------------------------------------------------ reads
    def get_leads(self, entities: list[EntityRef]) -> dict[EntityRef, LeadSnapshot | None]:
        wanted = list(dict.fromkeys(entities))
        found: dict[EntityRef, LeadSnapshot | None] = {}
        valid: list[EntityRef] = []
        for entity in wanted:
            if _DIGITS.match(entity.id) and int(entity.id) > 0:
                valid.append(entity)
            else:
                found[entity] = None  # Bitrix24 would answer "ID is not defined or invalid"
        raw = self._get_many([(f"crm.{e.type.value}.get", e.id) for e in valid])
        for entity, item in zip(valid, raw, strict=True):
            found[entity] = self._snapshot(entity.type, item) if item is not None else None
        return found

    def get_activities(self, activity_ids: list[str]) -> dict[str, Activity | None]:
        wanted = list(dict.fromkeys(str(i) for i in activity_ids))
        found: dict[str, Activity | None] = {}
        valid = [i for i in wanted if _DIGITS.match(i) and int(i) > 0]
        for ident in wanted:
            found[ident] = None
        raw = self._get_many([("crm.activity.get", i) for i in valid])
        for ident, item in zip(valid, raw, strict=True):
            found[ident] = self._activity(item) if item is not None else None
        return found

    def activities_on(self, entities: list[EntityRef]) -> dict[EntityRef, list[Activity]]:
        wanted = list(dict.fromkeys(entities))
        found: dict[EntityRef, list[Activity]] = {e: [] for e in wanted}
        # An id Bitrix24 cannot have owns no activity: asking would only earn an error.
        valid = [e for e in wanted if _DIGITS.match(e.id) and int(e.id) > 0 and e.type in _OWNER_TYPE_IDS]
        if len(valid) == 1:
            found[valid[0]] = self._activity_pages(valid[0], 0)
            return found
        for chunk in _chunks(valid, BATCH_LIMIT):
            commands = {
                f"a{n}": f"crm.activity.list?{encode_form(self._activity_query(e)).decode('ascii')}"
                for n, e in enumerate(chunk)
            }
            outer = self._batch(commands)
            results, errors = _members(outer.get("result")), _members(outer.get("result_error"))
            nexts = _members(outer.get("result_next"))
            for n, entity in enumerate(chunk):
                key = f"a{n}"
                if key in errors:
                    error = self._command_error(errors[key], f"crm.activity.list for {entity.key}")
                    if isinstance(error, CrmNotFound):
                        continue  # no such card: it has no activities
                    raise error
                rows = results.get(key)
                if not isinstance(rows, list):
                    raise CrmUnavailable(f"Bitrix24 batch gave no activity list for {entity.key}")
                activities = self._owned_activities(entity, rows)
                if nexts.get(key) is not None:
                    # A batch command answers one page of 50; the rest of a busy card comes
                    # page by page rather than being dropped.
                    start = self._next_start(nexts[key], f"crm.activity.list for {entity.key}")
                    activities.extend(self._activity_pages(entity, start))
                found[entity] = _unique(activities)
        return found

    @staticmethod
    def _activity_query(entity: EntityRef) -> dict[str, Any]:
        return {
            "filter": {"OWNER_TYPE_ID": _OWNER_TYPE_IDS[entity.type], "OWNER_ID": entity.id},
            # ID order keeps offset paging stable: a new activity lands after the pages read.
            "order": {"ID": "ASC"},
            "select": _ACTIVITY_SELECT,
        }

    def _activity_pages(self, entity: EntityRef, start: int) -> list[Activity]:
        """A card's activities from offset `start` to the end, with plain list calls."""
        method = "crm.activity.list"
        found: list[Activity] = []
        while True:
            try:
                body = self.call(method, {**self._activity_query(entity), "start": start})
            except CrmNotFound:
                return _unique(found)
            rows = body["result"]
            if not isinstance(rows, list):
                raise CrmUnavailable(f"Bitrix24 {method}: 'result' is not a list")
            found.extend(self._owned_activities(entity, rows))
            if body.get("next") is None:
                return _unique(found)
            start = self._next_start(body["next"], method)

    @staticmethod
    def _next_start(value: Any, what: str) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise CrmUnavailable(f"Bitrix24 {what}: 'next' is not a number") from None

    def _owned_activities(self, entity: EntityRef, rows: list[Any]) -> list[Activity]:
        found: list[Activity] = []
        for row in rows:
            activity = self._activity(row) if isinstance(row, dict) else None
            # Only this card's: a portal that ignored the filter must not credit another card.
            if activity is not None and activity.entity == entity:
                found.append(activity)
        return found

    def _get_many(self, calls: list[tuple[str, str]]) -> list[dict[str, Any] | None]:
        """Run `method(id)` for each pair; None where the object does not exist."""
        if not calls:
            return []
        if len(calls) == 1:
            method, ident = calls[0]
            try:
                result = self.call(method, {"id": ident})["result"]
            except CrmNotFound:
                return [None]
            return [result if isinstance(result, dict) else None]
        out: list[dict[str, Any] | None] = []
        for chunk in _chunks(calls, BATCH_LIMIT):
            commands = {
                f"c{n}": f"{method}?{encode_form({'id': ident}).decode()}"
                for n, (method, ident) in enumerate(chunk)
            }
            results, errors = self.batch(commands)
            for n, (method, ident) in enumerate(chunk):
                key = f"c{n}"
                if key in errors:
                    error = self._command_error(errors[key], f"{method} id={ident}")
                    if isinstance(error, CrmNotFound):
                        out.append(None)
                        continue
                    raise error
                result = results.get(key)
                if not isinstance(result, dict):
                    raise CrmUnavailable(f"Bitrix24 batch gave no result for {method} id={ident}")
                out.append(result)
        return out

    @staticmethod
    def _command_error(error: Any, what: str) -> CrmError:
        """A batch member's `result_error` entry as a CrmError (HTTP status unknown there)."""
        code = str(error.get("error") or "") if isinstance(error, dict) else ""
        text = str(error.get("error_description") or "") if isinstance(error, dict) else str(error)
        label = f"Bitrix24 {what}: {code or '(no code)'}" + (f": {text}" if text else "")
        if code in _RATE_CODES:
            return CrmRateLimited(label)
        if code in _DOWN_CODES:
            return CrmUnavailable(label)
        return _refusal(code, text, label)

    def _snapshot(self, entity_type: EntityType, item: Mapping[str, Any]) -> LeadSnapshot:
        ident = str(item.get("ID") or "")
        stage_key = "STATUS_ID" if entity_type is EntityType.LEAD else "STAGE_ID"
        created = _dt(item.get("DATE_CREATE"))
        modified = _dt(item.get("DATE_MODIFY"))
        return LeadSnapshot(
            entity=EntityRef(entity_type, ident),
            stage=str(item.get(stage_key) or ""),
            responsible=_id_text(item.get("ASSIGNED_BY_ID")),
            created_at=created or modified or datetime.fromtimestamp(0, UTC),
            modified_at=modified,
            stage_changed_at=_dt(item.get("MOVED_TIME")),
            title=str(item.get("TITLE") or ""),
            pipeline=_id_text(item.get("CATEGORY_ID")) if entity_type is EntityType.DEAL else None,
            fields={k: v for k, v in item.items() if k.startswith("UF_CRM_")},
        )

    @staticmethod
    def _activity(item: Mapping[str, Any]) -> Activity | None:
        owner_type = _OWNER_TYPES.get(str(item.get("OWNER_TYPE_ID") or ""))
        owner_id = str(item.get("OWNER_ID") or "")
        if owner_type is None or not owner_id:
            return None  # a contact's or company's activity: not a card leadwatch watches
        ident = str(item.get("ID") or "")
        entity = EntityRef(owner_type, owner_id)
        created = _dt(item.get("CREATED")) or _dt(item.get("START_TIME"))
        kind = _ACTIVITY_KINDS.get(str(item.get("TYPE_ID") or ""), "other")
        call: Call | None = None
        completed = str(item.get("COMPLETED") or "") == "Y"
        # A call planned for later ("call back on Friday") is a task, not an attempt.
        if kind == "call" and completed:
            started = _dt(item.get("START_TIME")) or created or datetime.fromtimestamp(0, UTC)
            ended = _dt(item.get("END_TIME"))
            call = Call(
                key=f"act{ident}",
                entity=entity,
                direction="out" if str(item.get("DIRECTION") or "") == "2" else "in",
                manager=_id_text(item.get("RESPONSIBLE_ID")),
                started_at=started,
                # A call activity has no duration field; its time span is the closest it tells.
                duration=max(0, int((ended - started).total_seconds())) if ended else 0,
                answered=None,
                record_url=None,
                activity_id=ident,
                source="activity",
            )
        return Activity(
            id=ident,
            entity=entity,
            kind=kind,
            author=_id_text(item.get("RESPONSIBLE_ID")),
            created_at=created or datetime.fromtimestamp(0, UTC),
            direction=_DIRECTIONS.get(str(item.get("DIRECTION") or "")),
            completed=completed,
            call=call,
        )

    # ------------------------------------------------------------------ calls
    def list_calls(self, since: datetime) -> Iterator[Call]:
        if since.tzinfo is None:
            raise ValueError("list_calls needs an aware datetime")
        types = [EntityType.LEAD]
        if "deal" in self.config.entities:
            types.append(EntityType.DEAL)
        seen: set[str] = set()
        # Activity keys the statistics show to be robocalls: their activity must not count either.
        ignored: set[str] = set()
        # Statistics first: a row there is richer (answered, recording) than the activity it made.
        for call in self._statistic_calls(since, types, ignored):
            if call.key not in seen:
                seen.add(call.key)
                yield call
        for entity_type in types:
            query = {
                "filter": {
                    "TYPE_ID": 2,
                    "OWNER_TYPE_ID": _OWNER_TYPE_IDS[entity_type],
                    ">=START_TIME": since.isoformat(timespec="seconds"),
                },
                # ID order keeps offset paging stable: a new activity lands after the pages read.
                "order": {"ID": "ASC"},
                "select": _ACTIVITY_SELECT,
            }
            for row in self._rows("crm.activity.list", query):
                activity = self._activity(row)
                logged = activity.call if activity is not None else None
                if logged is None or logged.entity is None or logged.entity.type is not entity_type:
                    continue  # a portal that ignored the filter must not pass off another kind
                if logged.key in seen or logged.key in ignored:
                    continue
                seen.add(logged.key)
                yield logged

    def _statistic_calls(self, since: datetime, types: list[EntityType], ignored: set[str]) -> Iterator[Call]:
        query = {
            "FILTER": {">=CALL_START_DATE": since.isoformat(timespec="seconds")},
            "SORT": "CALL_START_DATE",
            "ORDER": "ASC",
        }
        for row in self._rows("voximplant.statistic.get", query):
            call_type = _text(row.get("CALL_TYPE"))
            activity_id = _stat_activity(row.get("CRM_ACTIVITY_ID"))
            if call_type == _INFO_CALL and activity_id is not None:
                ignored.add(f"act{activity_id}")
            call = self._statistic_call(row, types, activity_id)
            if call is not None:
                yield call

    @staticmethod
    def _statistic_call(
        row: Mapping[str, Any], types: list[EntityType], activity_id: str | None
    ) -> Call | None:
        """A voximplant.statistic.get row as a Call; None for what leadwatch does not count
        (robocalls, calls on contacts or companies, rows without a card or a start)."""
        direction = _CALL_DIRECTIONS.get(_text(row.get("CALL_TYPE")) or "")
        entity_type = _STAT_ENTITY_TYPES.get((_text(row.get("CRM_ENTITY_TYPE")) or "").upper())
        entity_id = _text(row.get("CRM_ENTITY_ID"))
        started = _dt(row.get("CALL_START_DATE"))
        call_id = _text(row.get("CALL_ID"))
        if direction is None or entity_type is None or entity_type not in types or started is None:
            return None
        if entity_id is None or not _DIGITS.match(entity_id) or int(entity_id) == 0:
            return None
        if activity_id is not None:
            key = f"act{activity_id}"
        elif call_id is not None:
            key = f"vox{call_id}"  # a call no activity was made for: the telephony id is all it has
        else:
            return None
        return Call(
            key=key,
            entity=EntityRef(entity_type, str(int(entity_id))),
            direction=direction,
            manager=_id_text(_text(row.get("PORTAL_USER_ID"))),
            started_at=started,
            duration=_seconds(row.get("CALL_DURATION")),
            answered=_answered(row.get("CALL_FAILED_CODE")),
            record_url=_text(row.get("CALL_RECORD_URL")),
            activity_id=activity_id,
            source="statistic",
        )

    def _rows(self, method: str, query: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Every row of a list method, page by page (start/next)."""
        start = 0
        while True:
            body = self.call(method, {**query, "start": start})
            page = body["result"]
            if not isinstance(page, list):
                raise CrmUnavailable(f"Bitrix24 {method}: 'result' is not a list")
            yield from (row for row in page if isinstance(row, dict))
            if body.get("next") is None:
                return
            start = self._next_start(body["next"], method)

    def list_changed_leads(self, since: datetime) -> Iterator[LeadSnapshot]:
        if since.tzinfo is None:
            raise ValueError("list_changed_leads needs an aware datetime")
        types = [EntityType.LEAD]
        if "deal" in self.config.entities:
            types.append(EntityType.DEAL)
        streams = [self._list_changed(t, since) for t in types]
        # Each listing is oldest change first; merge them so the caller sees one ordered stream.
        yield from heapq.merge(*streams, key=lambda s: s.modified_at or s.created_at)

    def _list_changed(self, entity_type: EntityType, since: datetime) -> Iterator[LeadSnapshot]:
        method = f"crm.{entity_type.value}.list"
        start = 0
        seen: dict[str, datetime | None] = {}
        while True:
            body = self.call(
                method,
                {
                    "filter": {">=DATE_MODIFY": since.isoformat(timespec="seconds")},
                    "order": {"DATE_MODIFY": "ASC", "ID": "ASC"},
                    "select": self._select[entity_type],
                    "start": start,
                },
            )
            page = body["result"]
            if not isinstance(page, list):
                raise CrmUnavailable(f"Bitrix24 {method}: 'result' is not a list")
            for item in page:
                if not isinstance(item, dict):
                    continue
                snapshot = self._snapshot(entity_type, item)
                # Offset paging over a live list: a card changed meanwhile moves to the end and
                # shows up twice. Yield it again only if it carries newer data.
                if snapshot.entity.id in seen and seen[snapshot.entity.id] == snapshot.modified_at:
                    continue
                seen[snapshot.entity.id] = snapshot.modified_at
                yield snapshot
            next_start = body.get("next")
            if next_start is None:
                return
            try:
                start = int(next_start)
            except (TypeError, ValueError):
                raise CrmUnavailable(f"Bitrix24 {method}: 'next' is not a number") from None

    # ------------------------------------------------------------------ writes
    def set_fields(self, writes: list[SetCardFields]) -> WriteResult:
        outcome = WriteResult()
        commands: list[tuple[str, str]] = []  # (effect_id, command)
        for write in writes:
            if not write.fields:
                outcome.succeeded.add(write.effect_id)  # nothing to write is written
                continue
            try:
                commands.append((write.effect_id, self._update_command(write)))
            except ValueError as exc:
                outcome.failed[write.effect_id] = CrmRejected(f"{write.entity.key}: {exc}")
        broken: CrmError | None = None
        for chunk in _chunks(commands, BATCH_LIMIT):
            if broken is not None:
                # The portal already failed a whole batch after every retry; do not spend the
                # rest of the time budget proving it again. The executor retries these later.
                for effect_id, _command in chunk:
                    outcome.failed[effect_id] = broken
                continue
            keyed = {f"w{n}": command for n, (_effect, command) in enumerate(chunk)}
            try:
                results, errors = self.batch(keyed)
            except CrmError as error:
                broken = error
                for effect_id, _command in chunk:
                    outcome.failed[effect_id] = error
                continue
            for n, (effect_id, _command) in enumerate(chunk):
                key = f"w{n}"
                if key in errors:
                    outcome.failed[effect_id] = self._command_error(errors[key], f"update for {effect_id}")
                elif results.get(key) is True:
                    outcome.succeeded.add(effect_id)
                elif key in results:
                    outcome.failed[effect_id] = CrmRejected(
                        f"Bitrix24 update for {effect_id} answered {_excerpt(results[key])}"
                    )
                else:
                    outcome.failed[effect_id] = CrmUnavailable(
                        f"Bitrix24 batch gave no answer for {effect_id}"
                    )
        return outcome

    @staticmethod
    def _update_command(write: SetCardFields) -> str:
        fields = {str(key): encode_value(value) for key, value in write.fields.items()}
        query = encode_form({"id": _card_id(write.entity), "fields": fields}).decode("ascii")
        return f"crm.{write.entity.type.value}.update?{query}"

    # ------------------------------------------------------------------ work items
    # b24restdocs: tasks/tasks-task-add.md (`fields`, UF_CRM_TASK bindings "L_<id>" / "D_<id>",
    # answer `result.task.id`), tasks/status/tasks-task-complete.md (`taskId`; 400 `"0"` "Action on
    # the task is not allowed" both for a task that is missing and one the webhook may not close),
    # tasks/comment-item/task-comment-item-add.md (TASKID, FIELDS.POST_MESSAGE; still working with
    # the new task card, tasks/tasks-new.md), tasks/tasks-task-list.md (`result.tasks` of camelCase
    # rows, status "5" completed), crm/timeline/comments/crm-timeline-comment-add.md (400
    # NOT_FOUND for a missing card), crm/leads/crm-lead-update.md, crm/deals/crm-deal-update.md.
    def create_task(self, task: CreateTask) -> str:
        """The card is read in the same batch, halting on its error: the task is added only to a
        card that exists (a binding to a missing card would not be refused), in one request."""
        try:
            card = _card_id(task.entity)
            responsible = _user_id(task.assignee)
            fields = {
                "TITLE": task.title,
                "DESCRIPTION": task_description(task.text, task.link),
                "RESPONSIBLE_ID": responsible,
                "DEADLINE": encode_value(task.deadline),
                "UF_CRM_TASK": [f"{_BINDINGS[task.entity.type]}_{card}"],
            }
        except ValueError as exc:
            raise CrmRejected(f"Bitrix24 task on {task.entity.key}: {exc}") from None
        read = f"crm.{task.entity.type.value}.get"
        outer = self._batch(
            {"card": _command(read, {"id": card}), "task": _command("tasks.task.add", {"fields": fields})},
            halt=True,
            idempotent=False,
        )
        errors = _members(outer.get("result_error"))
        if "card" in errors:
            raise self._command_error(errors["card"], f"{read} id={card}")
        if "task" in errors:
            raise self._command_error(errors["task"], f"tasks.task.add on {task.entity.key}")
        added = _members(outer.get("result")).get("task")
        made = added.get("task") if isinstance(added, dict) else None
        ident = _id_text(made.get("id")) if isinstance(made, dict) else None
        if ident is None:
            raise CrmUnavailable(f"Bitrix24 tasks.task.add on {task.entity.key} answered no task id")
        return ident

    def complete_task(self, task_id: str) -> None:
        ident = _task_id(task_id)
        try:
            self.call("tasks.task.complete", {"taskId": ident})
        except CrmRejected as refused:
            # The same refusal means "no such task" and "already closed": the task's row tells.
            if self._task_status(ident, refused) != _TASK_COMPLETED:
                raise

    def remind(self, task_id: str | None, reminder: RemindUser) -> None:
        if task_id is None:
            self._comment(reminder.entity, reminder.text)
            return
        ident = _task_id(task_id)
        fields = {"TASKID": ident, "FIELDS": {"POST_MESSAGE": reminder.text}}
        try:
            self.call("task.commentitem.add", fields, idempotent=False)
        except CrmRejected as refused:
            self._task_status(ident, refused)  # CrmNotFound when the task is gone
            raise

    def move_stage(self, move: MoveStage) -> None:
        stage_field = "STATUS_ID" if move.entity.type is EntityType.LEAD else "STAGE_ID"
        try:
            params = {"id": _card_id(move.entity), "fields": {stage_field: move.stage}}
        except ValueError as exc:
            raise CrmRejected(f"Bitrix24 stage move of {move.entity.key}: {exc}") from None
        method = f"crm.{move.entity.type.value}.update"
        result = self.call(method, params)["result"]
        if result is not True:
            raise CrmRejected(f"Bitrix24 {method} id={params['id']} answered {_excerpt(result)}")

    def add_note(self, note: AddNote) -> None:
        self._comment(note.entity, note.text)

    def _comment(self, entity: EntityRef, text: str) -> None:
        """A comment in the card's timeline (crm.timeline.comment.add)."""
        try:
            card = _card_id(entity)
        except ValueError as exc:
            raise CrmRejected(f"Bitrix24 comment on {entity.key}: {exc}") from None
        fields = {"ENTITY_ID": card, "ENTITY_TYPE": entity.type.value, "COMMENT": text}
        self.call("crm.timeline.comment.add", {"fields": fields}, idempotent=False)

    def _task_status(self, task_id: str, refused: CrmRejected) -> str:
        """The status of a task a call was refused for; CrmNotFound (from `refused`) when the
        webhook's user sees no such task: deleted, or never one this portal has."""
        if isinstance(refused, CrmNotFound):
            raise refused
        body = self.call("tasks.task.list", {"filter": {"ID": task_id}, "select": ["ID", "STATUS"]})
        rows = body["result"].get("tasks") if isinstance(body["result"], dict) else None
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, dict) and _id_text(row.get("id", row.get("ID"))) == task_id:
                return str(row.get("status", row.get("STATUS")) or "")
        raise CrmNotFound(f"Bitrix24 task {task_id} does not exist ({refused})", status=refused.status)

    # ------------------------------------------------------------------ links
    def card_url(self, entity: EntityRef) -> str:
        return f"{self.config.base_url}/crm/{entity.type.value}/details/{entity.id}/"

    # ------------------------------------------------------------------ names
    def list_users(self) -> dict[str, str]:
        """`user.get` (b24restdocs api-reference/user/user-get.md), every page: employees, fired
        ones included (only `FILTER[ACTIVE]` would leave them out), without bots and e-mail users.
        A name is "NAME LAST_NAME" as the portal shows it, else the e-mail (scopes `user_basic`
        and `user` give it; `user_brief`, which is enough for names, does not). The webhook
        needs one of those scopes: without, the portal answers 403 insufficient_scope."""
        active: dict[str, str] = {}
        left: dict[str, str] = {}
        for row in self._all_rows("user.get", {"sort": "ID", "order": "ASC"}):
            ident = _id_text(row.get("ID"))
            name = _user_name(row)
            if ident is None or name is None:
                continue
            (left if _inactive(row.get("ACTIVE")) else active)[ident] = name
        return {**active, **{k: v for k, v in left.items() if k not in active}}

    def list_stages(self) -> dict[str, StageName]:
        """Lead statuses (`crm.status.list`, ENTITY_ID STATUS) and, with deals watched, every deal
        category (`crm.category.list`, entityTypeId 2) with its stages (ENTITY_ID DEAL_STAGE,
        DEAL_STAGE_<id>), as b24restdocs api-reference/crm/deals/index.md says to read them: one
        batch for the statuses, the categories and the general category's stages, then one per
        50 other categories. A portal that refuses crm.category.list (an old on-premise one)
        shows the general category only."""
        lists: dict[str, tuple[str, dict[str, Any]]] = {"lead": _status_query("STATUS")}
        deals = "deal" in self.config.entities
        if deals:
            lists["categories"] = ("crm.category.list", {"entityTypeId": _DEAL_TYPE_ID})
            lists["deal0"] = _status_query("DEAL_STAGE")
        outer = self._batch({key: _command(*query) for key, query in lists.items()})
        stages = {
            stage_key(EntityType.LEAD, status): StageName(name)
            for status, name in _statuses(self._command_rows(outer, "lead", *lists["lead"]))
        }
        if not deals:
            return stages
        categories = self._categories(outer, *lists["categories"])
        found = {0: _statuses(self._command_rows(outer, "deal0", *lists["deal0"]))}
        for chunk in _chunks(sorted(c for c in categories if c != 0), BATCH_LIMIT):
            keyed = {f"deal{c}": _status_query(f"DEAL_STAGE_{c}") for c in chunk}
            more = self._batch({key: _command(*query) for key, query in keyed.items()})
            for category in chunk:
                key = f"deal{category}"
                found[category] = _statuses(self._command_rows(more, key, *keyed[key]))
        for category, rows in found.items():
            for status, name in rows:
                stages[stage_key(EntityType.DEAL, status)] = StageName(name, categories.get(category))
        return stages

    def _categories(
        self, outer: Mapping[str, Any], method: str, query: dict[str, Any]
    ) -> dict[int, str | None]:
        """Deal category id -> name, from the batch's crm.category.list (`result.categories`)."""
        errors = _members(outer.get("result_error"))
        if "categories" in errors:
            error = self._command_error(errors["categories"], method)
            if isinstance(error, CrmRejected):
                return {0: None}
            raise error
        found: dict[int, str | None] = {0: None}
        for row in self._command_rows(outer, "categories", method, query, _category_rows):
            ident = _text(row.get("id"))
            if ident is not None and ident.isdigit():
                found[int(ident)] = _text(row.get("name"))
        return found

    def _command_rows(
        self,
        outer: Mapping[str, Any],
        key: str,
        method: str,
        query: dict[str, Any],
        rows_of: Callable[[Any], Any] = lambda result: result,
    ) -> list[dict[str, Any]]:
        """The rows one list command of a batch answered, and its later pages (`result_next`)
        read with plain calls."""
        errors = _members(outer.get("result_error"))
        if key in errors:
            raise self._command_error(errors[key], method)
        rows = rows_of(_members(outer.get("result")).get(key))
        if not isinstance(rows, list):
            raise CrmUnavailable(f"Bitrix24 batch gave no list for {method}")
        found = [row for row in rows if isinstance(row, dict)]
        following = _members(outer.get("result_next")).get(key)
        if following is not None:
            found += self._rows_from(method, query, self._next_start(following, method), rows_of)
        return found

    def _all_rows(
        self, method: str, query: Mapping[str, Any], rows_of: Callable[[Any], Any] = lambda result: result
    ) -> list[dict[str, Any]]:
        """Every row of a list method: the first page, then the rest in batches of 50 pages
        (2,500 rows a request) planned from its `total`; following `next` when there is none."""
        body = self.call(method, {**query, "start": 0})
        rows = rows_of(body["result"])
        if not isinstance(rows, list):
            raise CrmUnavailable(f"Bitrix24 {method}: no list in 'result'")
        found = [row for row in rows if isinstance(row, dict)]
        if body.get("next") is None:
            return found
        first = self._next_start(body["next"], method)
        try:
            total = int(body["total"])
        except (KeyError, TypeError, ValueError):
            return found + self._rows_from(method, query, first, rows_of)
        starts = list(range(first, min(total, MAX_LIST_PAGES * PAGE_SIZE), PAGE_SIZE))
        for chunk in _chunks(starts, BATCH_LIMIT):
            keyed = {f"p{start}": _command(method, {**query, "start": start}) for start in chunk}
            outer = self._batch(keyed)
            results, errors = _members(outer.get("result")), _members(outer.get("result_error"))
            for key in keyed:
                if key in errors:
                    raise self._command_error(errors[key], method)
                page = rows_of(results.get(key))
                if not isinstance(page, list):
                    raise CrmUnavailable(f"Bitrix24 batch gave no list for {method}")
                found += [row for row in page if isinstance(row, dict)]
        return found

    def _rows_from(
        self, method: str, query: Mapping[str, Any], start: int, rows_of: Callable[[Any], Any]
    ) -> list[dict[str, Any]]:
        """Rows of a list method from offset `start` on, page by page, at most MAX_LIST_PAGES."""
        found: list[dict[str, Any]] = []
        for _ in range(MAX_LIST_PAGES):
            body = self.call(method, {**query, "start": start})
            rows = rows_of(body["result"])
            if not isinstance(rows, list):
                raise CrmUnavailable(f"Bitrix24 {method}: no list in 'result'")
            found += [row for row in rows if isinstance(row, dict)]
            if body.get("next") is None:
                break
            start = self._next_start(body["next"], method)
        return found


def _command(method: str, query: Mapping[str, Any]) -> str:
    """A batch command: the method and its parameters as a query string."""
    return f"{method}?{encode_form(dict(query)).decode()}"


def _status_query(entity_id: str) -> tuple[str, dict[str, Any]]:
    return "crm.status.list", {"filter": {"ENTITY_ID": entity_id}, "order": {"SORT": "ASC"}}


def _statuses(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(STATUS_ID, NAME) of a crm.status.list listing; a status without a name shows its id."""
    found = []
    for row in rows:
        status = _text(row.get("STATUS_ID"))
        if status is not None:
            found.append((status, _text(row.get("NAME")) or status))
    return found


def _category_rows(result: Any) -> Any:
    """crm.category.list answers `{"categories": [...]}` where other lists answer the list."""
    return result.get("categories") if isinstance(result, dict) else None


def _user_name(row: Mapping[str, Any]) -> str | None:
    full = " ".join(part for part in (_text(row.get("NAME")), _text(row.get("LAST_NAME"))) if part)
    return full or _text(row.get("EMAIL"))


def _inactive(value: Any) -> bool:
    """ACTIVE is a JSON boolean in user.get; a portal answering "N" (as other fields say it) too."""
    return value is False or (isinstance(value, str) and value.strip().upper() in {"N", "FALSE", "0"})
