"""The one interface every CRM adapter implements.

Everything CRM-specific (payload shapes, status ids, field formats, pagination,
limits, error codes) stays behind `CrmAdapter`. Callers see normalized
`leadwatch.events` types and the errors below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from leadwatch.effects import AddNote, CreateTask, MoveStage, RemindUser, SetCardFields
from leadwatch.events import Activity, Call, CrmEvent, EntityRef, EntityType, LeadSnapshot


class WebhookRejected(Exception):
    """A webhook leadwatch will not accept. `status` is the HTTP answer (4xx)."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MalformedWebhook(WebhookRejected):
    """A delivery leadwatch cannot read. `authenticated`: it proved to come from the tenant's CRM
    (its token or key matched), so its body may be kept for inspection; an anonymous one never is."""

    status = 400

    def __init__(self, message: str, *, authenticated: bool = False):
        super().__init__(message)
        self.authenticated = authenticated


class WebhookUnauthorized(WebhookRejected):
    status = 401


class WebhookForbidden(WebhookRejected):
    status = 403


class CrmError(Exception):
    """A CRM call failed. `retryable` says whether trying again later can help."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after: float | None = None, status: int | None = None
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class CrmRateLimited(CrmError):
    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message, retryable=True, retry_after=retry_after, status=status)


class CrmUnavailable(CrmError):
    """5xx, timeouts, connection errors."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message, retryable=True, status=status)


class OutcomeUnknown(CrmUnavailable):
    """The request was sent and no answer came (a read timeout, a connection dropped after sending):
    it may or may not have taken effect. Retrying is safe only for an idempotent request."""


class OutOfTime(CrmUnavailable):
    """No time left in this invocation for the request (or its next retry): nothing was sent, and
    the work is left for the next run. Not a failure of the request itself."""


class CrmRejected(CrmError):
    """The CRM refused the request itself (bad id, bad field, no rights)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message, retryable=False, status=status)


class CrmNotFound(CrmRejected):
    """The card (or activity) does not exist, or no longer: reads turn this into None, and a write
    to it is refused for good (the card was deleted)."""


@dataclass
class WriteResult:
    """Outcome of a batched write, per effect id. Every input effect lands in one of the two."""

    succeeded: set[str] = field(default_factory=set)
    failed: dict[str, CrmError] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookRequest:
    """What the ingress hands an adapter: the raw body and the URL query."""

    body: bytes
    query: Mapping[str, str]
    content_type: str = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class StageName:
    """A stage as a person reads it in the CRM: its own name, and its pipeline's where the CRM
    has several (a Bitrix24 deal category, an amoCRM pipeline). `pipeline` is None for Bitrix24
    lead statuses, which have none, and for a stage id every amoCRM pipeline shares (142, 143)."""

    name: str
    pipeline: str | None = None


def stage_key(entity_type: EntityType, stage_id: str) -> str:
    """A stage's key in `CrmAdapter.list_stages`: `lead:NEW`, `deal:C1:NEW`, `lead:61234501`.
    The entity type is part of it because Bitrix24's lead statuses and the deal stages of its
    general category share ids (NEW)."""
    return f"{entity_type.value}:{stage_id}"


class CrmAdapter(Protocol):
    kind: str

    def parse_webhook(self, request: WebhookRequest) -> list[CrmEvent]:
        """Authenticate and parse one delivery. Pure: no network.

        Raises MalformedWebhook (400), WebhookUnauthorized (401) or
        WebhookForbidden (403) with a message naming what is wrong. A MalformedWebhook says
        whether the delivery was `authenticated` before it turned out unreadable.
        """
        ...

    def get_leads(self, entities: list[EntityRef]) -> dict[EntityRef, LeadSnapshot | None]:
        """Read cards in as few calls as the API allows. None: the card does not exist."""
        ...

    def get_activities(self, activity_ids: list[str]) -> dict[str, Activity | None]:
        """Read activities by id (Bitrix24 ONCRMACTIVITYADD and ONVOXIMPLANTCALLEND carry only the id).
        A call activity comes with its `call`."""
        ...

    def activities_on(self, entities: list[EntityRef]) -> dict[EntityRef, list[Activity]]:
        """Activities (calls, e-mails, notes, meetings) on these cards, in as few calls as the API allows.
        Every requested entity is a key (an empty list when it has none). Raises CrmError when the CRM cannot answer."""
        ...

    def list_calls(self, since: datetime) -> Iterator[Call]:
        """Calls that started at or after `since`, from the CRM's own records, all pages, for
        reconciliation: Bitrix24 telephony statistics (voximplant.statistic.get) and call
        activities (crm.activity.list, TYPE_ID 2); amoCRM's events feed (outgoing_call,
        incoming_call) and the call notes it points to. Every Call has its `entity` (calls on
        contacts or companies only are left out) and the same `key` the webhook path gives it.
        Raises CrmError when the CRM cannot answer."""
        ...

    def list_changed_leads(self, since: datetime) -> Iterator[LeadSnapshot]:
        """Cards created or changed at or after `since`, oldest change first, all pages."""
        ...

    def set_fields(self, writes: list[SetCardFields]) -> WriteResult:
        """Write custom fields in as few calls as the API allows (Bitrix24 batch of 50,
        amoCRM bulk PATCH). Never raises for a per-card failure: it lands in `failed`."""
        ...

    def card_url(self, entity: EntityRef) -> str:
        """The link a person clicks to open the card."""
        ...

    def list_users(self) -> dict[str, str]:
        """Every user of the account: id -> the name people know them by, all pages. Users still
        active come first (a list cut to size keeps them); people who left stay listed after them
        (old cards are still theirs); a user with no name at all is left out. Raises CrmError when
        the CRM cannot answer or refuses (Bitrix24 without a `user*` scope, amoCRM without admin
        rights)."""
        ...

    def list_stages(self) -> dict[str, StageName]:
        """Every stage a watched card can be in, by `stage_key`, with its pipeline's name: in as
        few calls as the API allows. Raises CrmError when the CRM cannot answer."""
        ...

    # ----- work items (leadwatch.effects.CrmWork). Each is one CRM call; each raises CrmNotFound
    # when the card (or task) is gone, another CrmError when refused or unavailable, and
    # OutcomeUnknown when the request went out and no answer came back.

    def create_task(self, task: CreateTask) -> str:
        """A task on the card for `task.assignee`, due at `task.deadline`, with `task.text` as its
        description (Bitrix24 `tasks.task.add` bound through UF_CRM_TASK `L_<id>` / `D_<id>`;
        amoCRM `POST /api/v4/tasks` with entity_type leads). Returns the CRM's task id."""
        ...

    def complete_task(self, task_id: str) -> None:
        """Close a task (Bitrix24 `tasks.task.complete`; amoCRM `PATCH /api/v4/tasks` with
        is_completed and a result text). A task already closed is no error."""
        ...

    def remind(self, task_id: str | None, reminder: RemindUser) -> None:
        """Remind the assignee of an open task: Bitrix24 a comment on the task
        (`task.commentitem.add`, which notifies its responsible person); amoCRM, which has no
        such call, a note on the card. `task_id` None: the task is unknown, a note on the card."""
        ...

    def move_stage(self, move: MoveStage) -> None:
        """Move the card to a stage (Bitrix24 `crm.lead.update` STATUS_ID / `crm.deal.update`
        STAGE_ID; amoCRM `PATCH /api/v4/leads/{id}` status_id, with pipeline_id when given)."""
        ...

    def add_note(self, note: AddNote) -> None:
        """A comment in the card's timeline (Bitrix24 `crm.timeline.comment.add`; amoCRM
        `POST /api/v4/leads/notes`, note_type common)."""
        ...


Sleep = Callable[[float], None]
