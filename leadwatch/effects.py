"""What a workflow asks the world to do, as data.

Workflows return effects and perform no I/O; `leadwatch.executor` performs them,
batching CRM field writes per adapter and skipping any effect whose `effect_id` it has
already performed, so re-running a workflow on a redelivered event or in an
overlapping sweep repeats nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from leadwatch.events import EntityRef

# A datetime is written in the CRM's own date format (Bitrix24 ISO 8601, amoCRM unix seconds).
FieldValue = str | int | bool | datetime


@dataclass(frozen=True)
class SetCardFields:
    """Write custom-field values on a CRM card (batched by the executor)."""

    effect_id: str
    entity: EntityRef
    fields: dict[str, FieldValue]


@dataclass(frozen=True)
class Notify:
    """Send the head a Telegram message. `text` is Telegram HTML, already escaped.

    An alert about one card also gives its `digest_line` (one line of HTML): when more alerts
    fall due together than the tenant's `telegram.digest_over`, the executor sends one digest
    listing their lines instead of a message each (a group chat takes 20 messages a minute).
    """

    effect_id: str
    text: str
    digest_line: str | None = None


@dataclass(frozen=True)
class Violation:
    """A recorded breach of a rule: one row in the violation journal.

    `violation_id` is stable (derived from the rule and the card), so writing
    the same violation twice keeps one row.
    """

    violation_id: str
    type: str
    entity: EntityRef
    manager: str | None
    occurred_at: datetime
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordViolation:
    violation: Violation

    @property
    def effect_id(self) -> str:
        return f"violation:{self.violation.violation_id}"


# ----------------------------------------------------------------------------- CRM work items
# Tasks, stage moves and notes: what a process asks of a person or a card beyond a field value.
# A task is named by `task_ref`, the `effect_id` of the `CreateTask` that made it: the CRM's own
# task id is known only once the task exists, so the executor keeps the id it got in the effect
# ledger under that ref, for the `CompleteTask` and `RemindUser` that name it later.
# Texts are plain text (a CRM task, a note), never Telegram HTML.


@dataclass(frozen=True)
class CreateTask:
    """A CRM task bound to the card (Bitrix24 `tasks.task.add` with UF_CRM_TASK; amoCRM
    `POST /api/v4/tasks` with entity_id), for `assignee`, due at `deadline`."""

    effect_id: str
    entity: EntityRef
    assignee: str
    title: str
    text: str  # the task's description: what to do, and the page's link
    deadline: datetime
    link: str | None = None

    @property
    def task_ref(self) -> str:
        return self.effect_id


@dataclass(frozen=True)
class CompleteTask:
    """Close a task leadwatch made (answered, decided, or its review ended)."""

    effect_id: str
    task_ref: str
    entity: EntityRef


@dataclass(frozen=True)
class RemindUser:
    """Remind the assignee of an open task (Bitrix24: a comment on the task, which notifies them;
    amoCRM: a note on the card addressed to them)."""

    effect_id: str
    user: str
    entity: EntityRef
    task_ref: str
    text: str


@dataclass(frozen=True)
class MoveStage:
    """Move the card to a stage ("returned to work"). `pipeline`: amoCRM's pipeline id, when
    the stage is in another one than the card's."""

    effect_id: str
    entity: EntityRef
    stage: str
    pipeline: str | None = None


@dataclass(frozen=True)
class AddNote:
    """A note (a comment in the card's timeline) with the review's outcome."""

    effect_id: str
    entity: EntityRef
    text: str


CrmWork = CreateTask | CompleteTask | RemindUser | MoveStage | AddNote
Effect = SetCardFields | Notify | RecordViolation | CrmWork


# ----------------------------------------------------------------------------- as data at rest
# A process that decides first and performs after (a reviewer's click is saved, then acted on)
# keeps the effects still to perform with its state, so whoever comes next performs them: the
# effect ids are stable, so a repeat of ones already done is skipped by the ledger.
_KINDS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        SetCardFields,
        Notify,
        RecordViolation,
        CreateTask,
        CompleteTask,
        RemindUser,
        MoveStage,
        AddNote,
    )
}


def _plain(value: Any) -> Any:
    if isinstance(value, EntityRef):
        return {"$ref": value.key}
    if isinstance(value, datetime):
        return {"$at": value.isoformat()}
    if isinstance(value, Violation):
        return {"$violation": {f: _plain(getattr(value, f)) for f in value.__dataclass_fields__}}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _typed(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            return EntityRef.parse(value["$ref"])
        if set(value) == {"$at"}:
            return datetime.fromisoformat(value["$at"])
        if set(value) == {"$violation"}:
            return Violation(**{k: _typed(v) for k, v in value["$violation"].items()})
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return value


def to_data(effect: Effect) -> dict[str, Any]:
    """An effect as JSON-ready data, its id under "id" (`from_data` gives it back, equal)."""
    kind = type(effect).__name__
    if kind not in _KINDS:
        raise TypeError(f"not an effect leadwatch keeps: {kind}")
    fields = {f: _plain(getattr(effect, f)) for f in effect.__dataclass_fields__}
    return {"kind": kind, "id": effect.effect_id, "fields": fields}


def from_data(data: dict[str, Any]) -> Effect:
    fields = {k: _typed(v) for k, v in data["fields"].items()}
    effect: Effect = _KINDS[data["kind"]](**fields)
    return effect
