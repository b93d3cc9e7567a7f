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
    ACTIVITY_ADDED = "activity.added"


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
class Activity:
    """Something a person did on a card: a call, an e-mail, a note, a meeting."""

    id: str
    entity: EntityRef
    kind: str
    author: str | None
    created_at: datetime
    direction: str | None = None
    completed: bool = True


@dataclass(frozen=True)
class CrmEvent:
    """One normalized thing that happened in a tenant's CRM.

    `dedupe_key` identifies the delivery so a redelivered webhook is recognised
    (it is the inbox's sort key). `lead` is filled when the payload carried the
    card (amoCRM webhooks, reconciliation); Bitrix24 events carry only the id,
    so the worker reads the card. `activity_id` is set for an activity whose
    details still have to be read (Bitrix24 `ONCRMACTIVITYADD`).
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

    def needs_card(self) -> bool:
        return self.lead is None and self.kind is not EventKind.ACTIVITY_ADDED

    def needs_activity(self) -> bool:
        return self.kind is EventKind.ACTIVITY_ADDED and self.activity is None

    def to_dict(self) -> dict[str, Any]:
        return _encode(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrmEvent:
        lead = data.get("lead")
        activity = data.get("activity")
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
    )


def snapshot_to_dict(snapshot: LeadSnapshot) -> dict[str, Any]:
    return _encode(asdict(snapshot))


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


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value
