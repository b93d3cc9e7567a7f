"""Where quality control keeps its reviews: the process's own records (`ctx.state("qc")`).

- `review#<review id>`: the review (`rules.Review.to_dict()`) and the effects it still asks for
  (`pending`, leadwatch.effects.to_data), written only over the version read, so of two workers
  (a redelivered webhook, two clicks of one form, the sweep and a page) one wins and the other
  reloads and decides again on what is there now.
- `open#<review id>`: a small pointer for each review that still waits on someone or has effects
  pending, with the time its deadlines next need a look, so the deadline sweep reads the open reviews only
  (dozens) rather than a tenant's history. Written after the review, removed after it closes:
  a pointer whose review is closed, or that is missing for an open one, is mended by the next
  save or sweep (a crash between the two writes costs a look, never a deadline).
- `rejection#<month>#<card>#<moment>`: each rejection routed by the funnels (reason, action,
  manager), for the weekly audit's counts; one per rejection however often it is seen.
- `card#<card>`: where the card was last seen (in a failure stage or not), kept by the service.

Every record expires after the tenant's retention (`retention_months`) from when it was made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from leadwatch.events import EntityRef
from leadwatch.state import ProcessState, Record
from workflows.qc.rules import Review, Status, next_check_at

NAMESPACE = "qc"
REVIEW = "review#"
OPEN = "open#"
REJECTION = "rejection#"


@dataclass(frozen=True)
class Stored:
    review: Review
    version: int


def retention_end(now: datetime, months: int) -> datetime:
    return now + timedelta(days=31 * months)


class Reviews:
    """One tenant's reviews and rejections, over the process's state."""

    def __init__(self, state: ProcessState, tenant: str, retention_months: int = 13):
        self.state = state
        self.tenant = tenant
        self.retention_months = retention_months

    def expiry(self, now: datetime) -> datetime:
        return retention_end(now, self.retention_months)

    # ----- reviews
    def record(self, review_id: str) -> Record | None:
        return self.state.get(self.tenant, REVIEW + review_id)

    def get(self, review_id: str) -> Stored | None:
        record = self.record(review_id)
        return None if record is None else Stored(Review.from_dict(record.value), record.version)

    def get_many(self, review_ids: Iterable[str]) -> dict[str, Stored]:
        records = self.state.get_many(self.tenant, [REVIEW + r for r in review_ids])
        return {r.key[len(REVIEW) :]: Stored(Review.from_dict(r.value), r.version) for r in records.values()}

    def create(self, review: Review, now: datetime) -> bool:
        """False when the review is there already (the same rejection seen again)."""
        made = self.state.create(self.tenant, REVIEW + review.review_id, review.to_dict(), self.expiry(now))
        if made:
            self._point(review, False, now)
        return made

    def save(
        self, stored: Stored, review: Review, now: datetime, pending: list[dict[str, Any]] | None = None
    ) -> bool:
        """Write `review` (and the effects still `pending`) over the version read; False when
        another worker wrote first."""
        value = {**review.to_dict(), "pending": pending or []}
        if not self.state.update(self.tenant, REVIEW + review.review_id, value, stored.version):
            return False
        self._point(review, bool(pending), now)
        return True

    def set_pending(self, review_id: str, left: list[dict[str, Any]], tried: set[str]) -> None:
        """After a perform: drop from the pending list the effects `tried` and not `left` (done);
        effects another worker added meanwhile stay. A few lost writes leave it to the next run."""
        left_ids = {d["id"] for d in left}
        for _ in range(3):
            record = self.record(review_id)
            if record is None:
                return
            pending = record.value.get("pending") or []
            kept = [d for d in pending if d["id"] in left_ids or d["id"] not in tried]
            if kept == pending:
                return
            if self.state.update(self.tenant, record.key, {**record.value, "pending": kept}, record.version):
                self._point(Review.from_dict(record.value), bool(kept), None)
                return

    def _point(self, review: Review, pending: bool, now: datetime | None) -> None:
        key = OPEN + review.review_id
        if review.open_task is None and review.status is not Status.OPENED and not pending:
            self.state.delete(self.tenant, key)
            return
        at = next_check_at(review)
        value = {
            "next_check": at.astimezone(UTC).isoformat() if at else None,
            "pending": pending,
            "entity": review.entity.key,
        }
        pointer = self.state.get(self.tenant, key)
        if pointer is None:
            start = now or review.rejected_at
            self.state.create(self.tenant, key, value, self.expiry(start))
        elif pointer.value != value:
            self.state.update(self.tenant, key, value, pointer.version)

    def open_ids(self) -> list[tuple[str, datetime | None, bool]]:
        """(review id, next check, effects pending) of every review waiting on someone or with
        effects pending, by id."""
        out = []
        for record in self.state.query(self.tenant, OPEN):
            at = record.value.get("next_check")
            out.append(
                (
                    record.key[len(OPEN) :],
                    datetime.fromisoformat(at) if at else None,
                    bool(record.value.get("pending")),
                )
            )
        return out

    def open_of(self, entity: EntityRef) -> list[str]:
        """The ids of the card's open reviews (a card has one or two: a rejection, a spot check)."""
        return [
            r.key[len(OPEN) :]
            for r in self.state.query(self.tenant, OPEN)
            if r.value.get("entity") == entity.key
        ]

    def mend(self, review_id: str, now: datetime) -> None:
        """Mend the pointer of a review that is closed or gone (a crash between two writes)."""
        record = self.record(review_id)
        if record is None:
            self.state.delete(self.tenant, OPEN + review_id)
        else:
            self._point(Review.from_dict(record.value), bool(record.value.get("pending")), now)

    # ----- rejections, for the audit
    def note_rejection(self, key: str, value: dict[str, Any], now: datetime) -> bool:
        """One row per rejection (`key` from `rejection_key`); False when it was noted already."""
        return self.state.create(self.tenant, REJECTION + key, value, self.expiry(now))

    def rejections(self, months: Iterable[str]) -> list[Record]:
        """The rejections noted in these months (`YYYY-MM`), by key."""
        out: list[Record] = []
        for month in sorted(set(months)):
            out.extend(self.state.query(self.tenant, f"{REJECTION}{month}#"))
        return out


def rejection_key(entity_key: str, rejected_at: datetime) -> str:
    moment = rejected_at.astimezone(UTC)
    return f"{moment:%Y-%m}#{entity_key}#{int(moment.timestamp())}"
