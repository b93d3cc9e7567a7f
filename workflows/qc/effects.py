"""What quality control asks the CRM to do, as data (leadwatch.effects has the rest: Notify,
RecordViolation).

Each effect carries a stable `effect_id` (derived from the review and the step), so the
effect ledger performs it once however often a review is re-run. A task is named by
`task_ref`, the `effect_id` of the `CreateTask` that made it: the CRM's own task id is known
only once the task exists, so whoever performs `CreateTask` keeps the id it got under that ref
for the `CompleteTask` and `RemindUser` that name it later.

Texts here are plain text (a CRM task, a note, a notification), never Telegram HTML.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from leadwatch.events import EntityRef


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


QcEffect = CreateTask | CompleteTask | RemindUser | MoveStage | AddNote
EFFECT_KINDS = ("CreateTask", "CompleteTask", "RemindUser", "MoveStage", "AddNote")
