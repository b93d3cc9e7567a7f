"""The effect ledger: which worker performs an external effect, and whether it happened.

One row per effect in the state table (`effect#<effect id>`), moved through its states by
conditional writes only, so two workers racing over the same effect cannot both perform it:

    (none) --claim--> claimed --confirm--> done
                         |  \\--mark_unconfirmed--> unconfirmed
                         |  \\--give_up--> gave_up        (failed too often: never attempted again)
                         \\--release--> (none)            (the effect surely did not happen)

- A claim is a lease: a claimant that died (a Lambda killed mid-send) is taken over once its
  lease has expired. Pick a lease longer than any invocation's timeout, so a live claimant is
  never taken over.
- `unconfirmed`: the request left and no answer came (a read timeout, a connection reset after
  sending). The effect may or may not have happened; it is never claimed again, so a message is
  not sent twice blindly. Callers treat it as settled ("done") and it stays visible: in the
  ledger (`unconfirmed`) and as one journal row (`record_unconfirmed`).
- A row without a status is `done`: written before effects were claimed (and by `mark_done`).

Every transition is ONE conditional write. Only when a claim is refused does the ledger read the
row (strongly consistent) to say why; the read decides nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pynamodb.exceptions import DeleteError, PutError, UpdateError
from pynamodb.expressions.update import Action

from leadwatch.store.conditions import lost_condition
from leadwatch.store.models import JournalItem, StateItem

UNCONFIRMED_TYPE = "unconfirmed_message"  # the journal row of an effect whose outcome is unknown
GAVE_UP_TYPE = "gave_up"  # the journal row of an effect given up after failing too often
_MAX_DETAIL = 1000
# The ledger knows no tenant's settings: its journal rows are kept the default retention.
JOURNAL_RETENTION = timedelta(days=396)


class Status(StrEnum):
    CLAIMED = "claimed"
    DONE = "done"
    UNCONFIRMED = "unconfirmed"
    GAVE_UP = "gave_up"


class ClaimState(StrEnum):
    CLAIMED = "claimed"  # this owner holds it now: perform, then confirm / release / mark_unconfirmed
    DONE = "done"  # performed and confirmed earlier: nothing to do
    HELD = "held"  # another live claimant holds it: not done for this caller, try again later
    UNCONFIRMED = "unconfirmed"  # attempted with an unknown outcome: settled, never attempted again
    GAVE_UP = "gave_up"  # failed too often: settled, never attempted again


@dataclass(frozen=True)
class ClaimResult:
    effect_id: str
    state: ClaimState
    holder: str | None = None  # the other claimant, when held
    lease_until: datetime | None = None  # its lease, when held

    @property
    def claimed(self) -> bool:
        return self.state is ClaimState.CLAIMED

    @property
    def held(self) -> bool:
        return self.state is ClaimState.HELD

    @property
    def unconfirmed(self) -> bool:
        return self.state is ClaimState.UNCONFIRMED

    @property
    def gave_up(self) -> bool:
        return self.state is ClaimState.GAVE_UP

    @property
    def settled(self) -> bool:
        """Done or unconfirmed: a caller moves on and never performs it again."""
        return self.state in (ClaimState.DONE, ClaimState.UNCONFIRMED, ClaimState.GAVE_UP)


@dataclass(frozen=True)
class LedgerEntry:
    effect_id: str
    status: Status
    owner: str | None
    lease_until: datetime | None
    at: datetime | None
    detail: str | None

    def live_claim(self, now: datetime) -> bool:
        return self.status is Status.CLAIMED and self.lease_until is not None and self.lease_until >= now

    @property
    def settled(self) -> bool:
        return self.status in (Status.DONE, Status.UNCONFIRMED, Status.GAVE_UP)


@dataclass(frozen=True)
class Failures:
    """How often an effect has failed so far (its `failure#` row): in all, and refused for good."""

    attempts: int
    refusals: int
    first_at: datetime


def _key(effect_id: str) -> str:
    return f"effect#{effect_id}"


def _failure_key(effect_id: str) -> str:
    return f"failure#{effect_id}"


def settlement_id(type_: str, effect_id: str) -> str:
    """The journal id of an effect's settlement row: one per effect and kind."""
    return f"{'unconfirmed' if type_ == UNCONFIRMED_TYPE else type_}:{effect_id}"


def settlement_details(effect_id: str, detail: str, details: dict[str, Any]) -> str:
    return json.dumps(
        {"effect_id": effect_id, "detail": detail[:_MAX_DETAIL], **details}, ensure_ascii=False, default=str
    )


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(float(value), UTC)


def _entry(item: StateItem) -> LedgerEntry:
    return LedgerEntry(
        effect_id=item.key.removeprefix("effect#"),
        status=Status(item.status) if item.status else Status.DONE,
        owner=item.owner,
        lease_until=_dt(item.lease_until),
        at=_dt(item.at),
        detail=item.detail,
    )


class EffectLedger:
    """Claims, confirmations and releases of external effects, per tenant (see the module docstring)."""

    def __init__(self, ttl: timedelta):
        self.ttl = ttl  # every row expires: a ledger only has to outlive the redeliveries and retries

    # ----- the transitions (one conditional write each)
    def claim(self, tenant: str, effect_id: str, owner: str, now: datetime, lease: timedelta) -> ClaimResult:
        """Take the effect for `owner` until now + lease: when no one has, or the last claim expired."""
        item = StateItem(
            tenant,
            _key(effect_id),
            status=Status.CLAIMED.value,
            owner=owner,
            lease_until=(now + lease).timestamp(),
            at=now.timestamp(),
            expires_at=now + self.ttl,
        )
        free = StateItem.key.does_not_exist() | (
            (StateItem.status == Status.CLAIMED.value) & (StateItem.lease_until < now.timestamp())
        )
        try:
            item.save(condition=free)
        except PutError as exc:
            if not lost_condition(exc):
                raise
            return self._refused(tenant, effect_id)
        return ClaimResult(effect_id, ClaimState.CLAIMED)

    def claim_many(
        self, tenant: str, effect_ids: Iterable[str], owner: str, now: datetime, lease: timedelta
    ) -> dict[str, ClaimResult]:
        """`claim` for many ids; one batch read first spares the writes for those settled or held."""
        ids = list(dict.fromkeys(effect_ids))
        known = self.entries(tenant, ids)
        return {i: self.claim_unless(known.get(i), tenant, i, owner, now, lease) for i in ids}

    def claim_unless(
        self,
        entry: LedgerEntry | None,
        tenant: str,
        effect_id: str,
        owner: str,
        now: datetime,
        lease: timedelta,
    ) -> ClaimResult:
        """`claim`, unless `entry` (read earlier) already settles it or shows a live claim. The claim
        itself stays conditional: the entry may be stale."""
        if entry is not None and (entry.settled or entry.live_claim(now)):
            return _result_of(entry)
        return self.claim(tenant, effect_id, owner, now, lease)

    def confirm(
        self, tenant: str, effect_id: str, owner: str, now: datetime, result: str | None = None
    ) -> bool:
        """The effect happened (its `result`, such as the CRM's id of a task it made, kept in the
        row's detail). False if `owner` no longer holds it (its lease expired and was taken)."""
        return self._settle(tenant, effect_id, owner, now, Status.DONE, result)

    def mark_unconfirmed(self, tenant: str, effect_id: str, owner: str, now: datetime, detail: str) -> bool:
        """The request left and no answer came: settle it as unconfirmed, never to be claimed again."""
        return self._settle(tenant, effect_id, owner, now, Status.UNCONFIRMED, detail)

    def mark_gave_up(self, tenant: str, effect_id: str, owner: str, now: datetime, detail: str) -> bool:
        """The effect failed too often: settle it as given up, never to be claimed again."""
        return self._settle(tenant, effect_id, owner, now, Status.GAVE_UP, detail)

    def note_failure(self, tenant: str, effect_id: str, now: datetime, *, permanent: bool) -> Failures:
        """Count one failed attempt (a permanent refusal also as a refusal); the counts so far.

        A row of its own, so a claim (a put) never wipes the count; written only when something
        failed, so the effects that succeed cost nothing more."""
        item = StateItem(tenant, _failure_key(effect_id))
        actions: list[Action] = [
            StateItem.attempts.add(1),
            StateItem.refusals.add(1 if permanent else 0),
            StateItem.at.set(StateItem.at | now.timestamp()),
            StateItem.expires_at.set(now + self.ttl),
        ]
        item.update(actions=actions)
        return Failures(int(item.attempts or 0), int(item.refusals or 0), _dt(item.at) or now)

    def release(self, tenant: str, effect_id: str, owner: str) -> bool:
        """The effect surely did not happen: drop the claim so the next run tries again."""
        try:
            StateItem(tenant, _key(effect_id)).delete(condition=self._held_by(owner))
        except DeleteError as exc:
            if lost_condition(exc):
                return False
            raise
        return True

    def mark_done(self, tenant: str, effect_ids: Iterable[str], now: datetime) -> None:
        """Record effects as done, unconditionally and in batches: for idempotent effects (the
        executor's CRM field writes, once performed under their claims) and effects performed
        outside the executor."""
        with StateItem.batch_write() as batch:
            for effect_id in dict.fromkeys(effect_ids):
                batch.save(
                    StateItem(
                        tenant,
                        _key(effect_id),
                        status=Status.DONE.value,
                        at=now.timestamp(),
                        expires_at=now + self.ttl,
                    )
                )

    # ----- reading
    def entries(self, tenant: str, effect_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        """The ledger rows of these effects (strongly consistent), by effect id."""
        keys = sorted({(tenant, _key(i)) for i in effect_ids})
        if not keys:
            return {}
        return {
            entry.effect_id: entry for entry in map(_entry, StateItem.batch_get(keys, consistent_read=True))
        }

    def done(self, tenant: str, effect_ids: Iterable[str]) -> set[str]:
        """The effects that are settled: done, or unconfirmed (attempted, outcome unknown, never
        retried). A caller that sees all its effects here moves on; `unconfirmed` tells them apart."""
        return {i for i, entry in self.entries(tenant, effect_ids).items() if entry.settled}

    def unconfirmed(self, tenant: str, effect_ids: Iterable[str]) -> set[str]:
        return {
            i for i, entry in self.entries(tenant, effect_ids).items() if entry.status is Status.UNCONFIRMED
        }

    # ----- visibility
    def record_unconfirmed(
        self, tenant: str, effect_id: str, subject: str, detail: str, details: dict[str, Any], now: datetime
    ) -> bool:
        """One journal row for an effect settled as unconfirmed (False when it is already there).

        `subject` stands where a violation has its card (the chat, for a message). Called only by the
        owner whose `mark_unconfirmed` succeeded, which happens once per effect: one row per effect.
        """
        return self._journal_once(tenant, effect_id, UNCONFIRMED_TYPE, subject, detail, details, now)

    def record_gave_up(
        self, tenant: str, effect_id: str, subject: str, reason: str, details: dict[str, Any], now: datetime
    ) -> bool:
        """One journal row (type `gave_up`) for an effect settled as given up, saying why in a
        person's words ("card deleted", "alert failed: bot not in chat"); as `record_unconfirmed`."""
        return self._journal_once(tenant, effect_id, GAVE_UP_TYPE, subject, reason, details, now)

    def _journal_once(
        self,
        tenant: str,
        effect_id: str,
        type_: str,
        subject: str,
        detail: str,
        details: dict[str, Any],
        now: datetime,
    ) -> bool:
        violation_id = settlement_id(type_, effect_id)
        item = JournalItem(
            tenant,
            f"{now.astimezone(UTC).isoformat()}#{violation_id}",
            violation_id=violation_id,
            type=type_,
            entity=subject,
            manager=None,
            occurred_at=now.timestamp(),
            recorded_at=now.timestamp(),
            details=settlement_details(effect_id, detail, details),
            expires_at=now + JOURNAL_RETENTION,
        )
        try:
            item.save(condition=JournalItem.key.does_not_exist())
        except PutError as exc:
            if lost_condition(exc):
                return False
            raise
        return True

    # ----- internals
    @staticmethod
    def _held_by(owner: str) -> Any:
        return (StateItem.owner == owner) & (StateItem.status == Status.CLAIMED.value)

    def _settle(
        self, tenant: str, effect_id: str, owner: str, now: datetime, status: Status, detail: str | None
    ) -> bool:
        actions: list[Action] = [
            StateItem.status.set(status.value),
            StateItem.at.set(now.timestamp()),
            StateItem.expires_at.set(now + self.ttl),
            StateItem.lease_until.remove(),
        ]
        if detail is not None:
            actions.append(StateItem.detail.set(detail[:_MAX_DETAIL] or "-"))
        try:
            StateItem(tenant, _key(effect_id)).update(actions=actions, condition=self._held_by(owner))
        except UpdateError as exc:
            if lost_condition(exc):
                return False
            raise
        return True

    def _refused(self, tenant: str, effect_id: str) -> ClaimResult:
        """Why a claim was refused. A row gone by now was released in between: say held, retry later."""
        entry = self.entries(tenant, [effect_id]).get(effect_id)
        if entry is None:
            return ClaimResult(effect_id, ClaimState.HELD)
        return _result_of(entry)


def _result_of(entry: LedgerEntry) -> ClaimResult:
    if entry.status is Status.DONE:
        return ClaimResult(entry.effect_id, ClaimState.DONE)
    if entry.status is Status.UNCONFIRMED:
        return ClaimResult(entry.effect_id, ClaimState.UNCONFIRMED)
    if entry.status is Status.GAVE_UP:
        return ClaimResult(entry.effect_id, ClaimState.GAVE_UP)
    return ClaimResult(entry.effect_id, ClaimState.HELD, holder=entry.owner, lease_until=entry.lease_until)
