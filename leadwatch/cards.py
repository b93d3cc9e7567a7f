"""The watched card: the one record the store keeps per CRM card, which timeliness and dialing
share today (each writes only its own fields; the store conditions every write so none goes
backwards). Part of the core's vocabulary, so the store never imports a process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from leadwatch.events import EntityRef

DELETED = "deleted"  # the verdict of a card deleted in the CRM before it was judged


@dataclass(frozen=True)
class LeadState:
    """What leadwatch keeps about one watched card: the card as last seen (stage, owner, title,
    the CRM's modification time), timeliness's part (control time, processing, verdict) and
    dialing's part (plan day, rejection). A card's calls and their counts are kept apart, per card
    and day (`StoreProtocol.calls_of`, `call_totals`): counting them here wrote the card on every call."""

    tenant: str
    entity: EntityRef
    created_at: datetime
    due_at: datetime
    stage: str
    responsible: str | None
    title: str = ""
    processed_at: datetime | None = None
    processed_how: str | None = None
    crm_modified_at: datetime | None = None
    verdict: str | None = None
    verdict_at: datetime | None = None
    # A verdict a sweep decided and pinned when it claimed the card, kept until the card closes:
    # a sweep that failed or died before closing it leaves it, and the next one acts on the same.
    pending_verdict: str | None = None
    # Dialing discipline (workflows.dialing): when the card entered a rejected stage, and which
    # rejection was already judged.
    rejected_at: datetime | None = None
    rejection_checked: datetime | None = None
    plan_day: date | None = None  # day 1 of its dialing plan
    # Deleted in the CRM: closed for every process (a verdict it had is kept).
    deleted_at: datetime | None = None
    # Timeliness: its intake field was written to the CRM before the card was first stored, so no
    # later sighting asks for it again (cards stored otherwise have it through the effect ledger).
    intake_stamped: bool = False

    @property
    def open(self) -> bool:
        return self.verdict is None
