"""What a workflow asks the world to do, as data.

Workflows return effects and perform no I/O; `leadwatch.executor` performs them,
batching CRM writes per adapter and skipping any effect whose `effect_id` it has
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


Effect = SetCardFields | Notify | RecordViolation
