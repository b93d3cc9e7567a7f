"""What the fake CRMs keep of the work leadwatch asks of people: tasks and card notes.

Both fakes (leadwatch.testing.bitrix24, leadwatch.testing.amocrm) show them the same way, so a
test reads them alike whichever CRM it runs against:

- `fake.tasks`: task id (the text the CRM answered) -> `FakeTask`.
- `fake.notes_on(entity)`: the card's notes, oldest first, as `FakeNote`s (Bitrix24 timeline
  comments; amoCRM common notes, whether added through the API or by `add_note`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from leadwatch.events import EntityRef


@dataclass
class FakeTask:
    """A task as the fake CRM holds it. `title` is None on amoCRM, whose tasks have only a text.
    `deadline` (None: none set) and `created_at` are aware UTC; `entity` is the card the task is bound to (None:
    bound to nothing leadwatch watches). `comments` are Bitrix24's task comments (POST_MESSAGE);
    `result` is the text amoCRM was given when the task was closed. `bindings` are the
    UF_CRM_TASK values Bitrix24 was sent ("L_4"); amoCRM's are empty."""

    id: str
    title: str | None
    description: str
    responsible: str
    deadline: datetime | None
    entity: EntityRef | None
    created_by: str
    created_at: datetime
    completed: bool = False
    completed_at: datetime | None = None
    result: str | None = None
    comments: list[str] = field(default_factory=list)
    bindings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FakeNote:
    """A note on a card (a Bitrix24 timeline comment, an amoCRM common note)."""

    id: str
    entity: EntityRef
    text: str
    author: str
    created_at: datetime
