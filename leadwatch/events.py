"""The one event vocabulary both CRM adapters speak.

An adapter turns a webhook (or a reconciliation listing) into `CrmEvent`s; the
workflows never see a CRM-specific payload. Times are tz-aware UTC datetimes.
Everything here round-trips through JSON (`to_dict` / `from_dict`) because
events are stored in the inbox and travel through SQS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    LEAD_CREATED = "lead.created"
    LEAD_CHANGED = "lead.changed"
    STAGE_CHANGED = "lead.stage_changed"
    RESPONSIBLE_CHANGED = "lead.responsible_changed"
    # The card was deleted in the CRM: nothing is left to judge or write.
    LEAD_DELETED = "lead.deleted"
    ACTIVITY_ADDED = "activity.added"
    CALL_ENDED = "call.ended"


class EntityType(StrEnum):
    LEAD = "lead"
    DEAL = "deal"


@dataclass(frozen=True, order=True)
class EntityRef:
    type: EntityType
    id: str

    @property
    def key(self) -> str:
        """Storage key, unique within a tenant: `lead:42`, `deal:7`."""
        return f"{self.type.value}:{self.id}"

    @classmethod
    def parse(cls, key: str) -> EntityRef:
        kind, _, ident = key.partition(":")
        return cls(EntityType(kind), ident)


@dataclass(frozen=True)
class LeadSnapshot:
    """A card as the CRM shows it now, normalized.

    `stage` is the CRM's own stage id as a string (Bitrix24 `STATUS_ID` such as
    `NEW`; amoCRM `status_id` such as `"143"`). `fields` holds custom-field values
    keyed by the CRM field id as a string, so a workflow can see what leadwatch
    already wrote.
    """

    entity: EntityRef
    stage: str
    responsible: str | None
    created_at: datetime
    modified_at: datetime | None = None
    stage_changed_at: datetime | None = None
    title: str = ""
    pipeline: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Call:
    """One phone call, as any path tells it (telephony event, call activity or note, statistics).

    `key` is the CRM's own identity of the call and is the same on every path, so a
    call reported by a webhook, by an activity and by reconciliation is counted once
    (Bitrix24: `act<CRM activity id>`, or `vox<CALL_ID>` for a call with no activity;
    amoCRM: `note<note id>`). `entity` is None when the path does not name the card
    (Bitrix24 ONVOXIMPLANTCALLEND): it is then found through `activity_id`.
    `direction` is "out" or "in". `answered` is None when the path does not say.
    """

    key: str
    entity: EntityRef | None
    direction: str
    manager: str | None
    started_at: datetime
    duration: int
    answered: bool | None = None
    record_url: str | None = None
    activity_id: str | None = None
    source: str = ""


@dataclass(frozen=True)
class Activity:
    """Something a person did on a card: a call, an e-mail, a note, a meeting.

    A call activity (Bitrix24 TYPE_ID 2, amoCRM call_in/call_out notes) carries the
    call itself in `call`, with its duration and recording when the CRM has them.
    """

    id: str
    entity: EntityRef
    kind: str
    author: str | None
    created_at: datetime
    direction: str | None = None
    completed: bool = True
    call: Call | None = None


@dataclass(frozen=True)
class CrmEvent:
    """One normalized thing that happened in a tenant's CRM.

    `dedupe_key` identifies the delivery so a redelivered webhook is recognised
    (it is the inbox's sort key). `lead` is filled when the payload carried the
    card (amoCRM webhooks, reconciliation); Bitrix24 events carry only the id,
    so the worker reads the card. `activity_id` is set for an activity whose
    details still have to be read (Bitrix24 `ONCRMACTIVITYADD`, and
    `ONVOXIMPLANTCALLEND`, whose call names no card). `call` is set for a
    `CALL_ENDED` event and for an activity webhook that already carries its call.
    """

    tenant: str
    kind: EventKind
    entity: EntityRef | None
    dedupe_key: str
    source: str = "webhook"
    raw_event: str = ""
    occurred_at: datetime | None = None
    lead: LeadSnapshot | None = None
    activity: Activity | None = None
    activity_id: str | None = None
    call: Call | None = None

    def needs_card(self) -> bool:
        return self.lead is None and self.kind not in (
            EventKind.ACTIVITY_ADDED,
            EventKind.CALL_ENDED,
            EventKind.LEAD_DELETED,
        )

    def needs_activity(self) -> bool:
        if self.kind is EventKind.CALL_ENDED:
            return self.activity is None and (self.call is None or self.call.entity is None)
        return self.kind is EventKind.ACTIVITY_ADDED and self.activity is None

    def to_dict(self) -> dict[str, Any]:
        return _encode_fields(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrmEvent:
        lead = data.get("lead")
        activity = data.get("activity")
        call = data.get("call")
        return cls(
            tenant=data["tenant"],
            kind=EventKind(data["kind"]),
            entity=_entity(data["entity"]) if data.get("entity") else None,
            dedupe_key=data["dedupe_key"],
            source=data.get("source", "webhook"),
            raw_event=data.get("raw_event", ""),
            occurred_at=_dt(data.get("occurred_at")),
            lead=snapshot_from_dict(lead) if lead else None,
            activity=activity_from_dict(activity) if activity else None,
            activity_id=data.get("activity_id"),
            call=call_from_dict(call) if call else None,
        )


def snapshot_from_dict(data: dict[str, Any]) -> LeadSnapshot:
    return LeadSnapshot(
        entity=_entity(data["entity"]),
        stage=str(data["stage"]),
        responsible=data.get("responsible"),
        created_at=_dt(data["created_at"]) or datetime.fromtimestamp(0, UTC),
        modified_at=_dt(data.get("modified_at")),
        stage_changed_at=_dt(data.get("stage_changed_at")),
        title=data.get("title", ""),
        pipeline=data.get("pipeline"),
        fields=dict(data.get("fields") or {}),
    )


def activity_from_dict(data: dict[str, Any]) -> Activity:
    return Activity(
        id=str(data["id"]),
        entity=_entity(data["entity"]),
        kind=data["kind"],
        author=data.get("author"),
        created_at=_dt(data["created_at"]) or datetime.fromtimestamp(0, UTC),
        direction=data.get("direction"),
        completed=bool(data.get("completed", True)),
        call=call_from_dict(data["call"]) if data.get("call") else None,
    )


def call_from_dict(data: dict[str, Any]) -> Call:
    answered = data.get("answered")
    return Call(
        key=str(data["key"]),
        entity=_entity(data["entity"]) if data.get("entity") else None,
        direction=str(data.get("direction") or "out"),
        manager=data.get("manager"),
        started_at=_dt(data["started_at"]) or datetime.fromtimestamp(0, UTC),
        duration=int(data.get("duration") or 0),
        answered=None if answered is None else bool(answered),
        record_url=data.get("record_url"),
        activity_id=data.get("activity_id"),
        source=data.get("source", ""),
    )


def snapshot_to_dict(snapshot: LeadSnapshot) -> dict[str, Any]:
    return _encode_fields(asdict(snapshot))


def _entity(data: dict[str, Any] | str) -> EntityRef:
    if isinstance(data, str):
        return EntityRef.parse(data)
    return EntityRef(EntityType(data["type"]), str(data["id"]))


def _dt(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"naive datetime in event: {value!r}")
    return parsed.astimezone(UTC)


def _encode_fields(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: _encode(v) for k, v in fields.items()}


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        return _encode_fields(value)
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value
