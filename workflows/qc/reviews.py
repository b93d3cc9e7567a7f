"""Where quality control keeps its reviews: the process's own records (`ctx.state("qc")`).

- `review#<review id>`: the review (`rules.Review.to_dict()`), written only over the version
  read, so of two workers (a redelivered webhook, two clicks of one form, the sweep and a page)
  one wins and the other reloads and decides again on what is there now.
- `open#<review id>`: a small pointer for each review that still waits on someone, with the
  time its deadlines next need a look, so the deadline sweep reads the open reviews only
  (dozens) rather than a tenant's history. Written after the review, removed after it closes:
  a pointer whose review is closed, or that is missing for an open one, is mended by the next
  save or sweep (a crash between the two writes costs a look, never a deadline).
- `rejection#<month>#<card>#<moment>`: each rejection routed by the funnels (reason, action,
  manager), for the weekly audit's counts; one per rejection however often it is seen.

Every record expires after the tenant's retention (`retention_months`) from when it was made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

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

    # ----- reviews
    def get(self, review_id: str) -> Stored | None:
        record = self.state.get(self.tenant, REVIEW + review_id)
        return None if record is None else Stored(Review.from_dict(record.value), record.version)

    def get_many(self, review_ids: Iterable[str]) -> dict[str, Stored]:
        records = self.state.get_many(self.tenant, [REVIEW + r for r in review_ids])
        return {r.key[len(REVIEW) :]: Stored(Review.from_dict(r.value), r.version) for r in records.values()}

    def create(self, review: Review, now: datetime) -> bool:
        """False when the review is there already (the same rejection seen again)."""
        made = self.state.create(
            self.tenant,
            REVIEW + review.review_id,
            review.to_dict(),
            retention_end(now, self.retention_months),
        )
        if made:
            self._point(review, now)
        return made

    def save(self, stored: Stored, review: Review, now: datetime) -> bool:
        """Write `review` over the version read; False when another worker wrote first."""
        if not self.state.update(self.tenant, REVIEW + review.review_id, review.to_dict(), stored.version):
            return False
        self._point(review, now)
        return True

    def _point(self, review: Review, now: datetime) -> None:
        at = next_check_at(review)
        key = OPEN + review.review_id
        if review.open_task is None and review.status is not Status.OPENED:
            self.state.delete(self.tenant, key)
            return
        value = {"next_check": at.astimezone(UTC).isoformat() if at else None}
        pointer = self.state.get(self.tenant, key)
        if pointer is None:
            self.state.create(self.tenant, key, value, retention_end(now, self.retention_months))
        elif pointer.value != value:
            self.state.update(self.tenant, key, value, pointer.version)

    def open_ids(self) -> list[tuple[str, datetime | None]]:
        """(review id, next check) of every review waiting on someone, by id."""
        out = []
        for record in self.state.query(self.tenant, OPEN):
            at = record.value.get("next_check")
            out.append((record.key[len(OPEN) :], datetime.fromisoformat(at) if at else None))
        return out

    def mend(self, review_id: str, now: datetime) -> None:
        """Drop a pointer whose review is closed or gone (a crash between two writes)."""
        stored = self.get(review_id)
        if stored is None:
            self.state.delete(self.tenant, OPEN + review_id)
        else:
            self._point(stored.review, now)

    # ----- rejections, for the audit
    def note_rejection(self, key: str, value: dict[str, Any], now: datetime) -> bool:
        """One row per rejection (`key` from `rejection_key`); False when it was noted already."""
        return self.state.create(
            self.tenant, REJECTION + key, value, retention_end(now, self.retention_months)
        )

    def rejections(self, months: Iterable[str]) -> list[Record]:
        """The rejections noted in these months (`YYYY-MM`), by key."""
        out: list[Record] = []
        for month in sorted(set(months)):
            out.extend(self.state.query(self.tenant, f"{REJECTION}{month}#"))
        return out


def rejection_key(entity_key: str, rejected_at: datetime) -> str:
    moment = rejected_at.astimezone(UTC)
    return f"{moment:%Y-%m}#{entity_key}#{int(moment.timestamp())}"
