"""The state store's interface: everything the runtime and the processes may ask of it.

Two implementations: DynamoDB (`leadwatch.store.dynamodb.Store`, production) and memory
(`leadwatch.store.memory.MemoryStore`, unit tests and replays). One contract suite
(tests/contract/test_store_contract.py) runs against both, so what a caller relies on below
holds for either. Every method is scoped to one tenant; every write that can race is one
conditional write (a lock in memory), so concurrent workers and redelivered or reordered
events cannot make state go backwards. Time is always passed in.

This module loads no PynamoDB: the value types it names (`StatRow`, `JournalRow`, `RejectRow`,
`ClaimResult`, `LedgerEntry`) still live beside the DynamoDB code and are named for type
checking only; `NameList` lives in `leadwatch.store.names`, shared by both stores.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from leadwatch.cards import LeadState
    from leadwatch.effects import Violation
    from leadwatch.events import Call, EntityRef
    from leadwatch.store.dynamodb import JournalRow, RejectRow, StatRow
    from leadwatch.store.ledger import ClaimResult, Failures, LedgerEntry
    from leadwatch.store.names import NameList


class EffectLedgerProtocol(Protocol):
    """Who performs an external effect, and whether it happened (see `leadwatch.store.ledger`).

    A row moves (none) -> claimed -> done | unconfirmed, or claimed -> (none) on release; each
    transition is atomic, so of two workers racing over one effect only one ever holds it.
    """

    def claim(self, tenant: str, effect_id: str, owner: str, now: datetime, lease: timedelta) -> ClaimResult:
        """CLAIMED when free or its last claim's lease ended before `now`; else why not (DONE, UNCONFIRMED, HELD with holder and lease)."""
        ...

    def claim_many(
        self, tenant: str, effect_ids: Iterable[str], owner: str, now: datetime, lease: timedelta
    ) -> dict[str, ClaimResult]:
        """`claim` for each distinct id (duplicates collapse), by id."""
        ...

    def claim_unless(
        self,
        entry: LedgerEntry | None,
        tenant: str,
        effect_id: str,
        owner: str,
        now: datetime,
        lease: timedelta,
    ) -> ClaimResult:
        """The result `entry` (read earlier) implies when it is settled or a live claim; else a real, conditional `claim`."""
        ...

    def confirm(
        self, tenant: str, effect_id: str, owner: str, now: datetime, result: str | None = None
    ) -> bool:
        """Settle as done, keeping `result` (a created task's CRM id) as the row's `detail`; False
        (nothing changes) unless `owner` holds the claim now."""
        ...

    def mark_unconfirmed(self, tenant: str, effect_id: str, owner: str, now: datetime, detail: str) -> bool:
        """Settle as unconfirmed (never claimable again), keeping `detail`; False unless `owner` holds the claim."""
        ...

    def release(self, tenant: str, effect_id: str, owner: str) -> bool:
        """Drop `owner`'s claim so the effect can be claimed again; False unless `owner` holds it."""
        ...

    def mark_done(self, tenant: str, effect_ids: Iterable[str], now: datetime) -> None:
        """Record effects as done unconditionally, whatever their row said (never used by the executor)."""
        ...

    def entries(self, tenant: str, effect_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        """The rows of these effects as they are now (strongly consistent), by id; absent ids are left out."""
        ...

    def done(self, tenant: str, effect_ids: Iterable[str]) -> set[str]:
        """The ids among these that are settled: done or unconfirmed."""
        ...

    def unconfirmed(self, tenant: str, effect_ids: Iterable[str]) -> set[str]:
        """The ids among these settled as unconfirmed."""
        ...

    def mark_gave_up(self, tenant: str, effect_id: str, owner: str, now: datetime, detail: str) -> bool:
        """Settle as given up (never claimable again), keeping `detail`; False unless `owner` holds the claim."""
        ...

    def note_failure(self, tenant: str, effect_id: str, now: datetime, *, permanent: bool) -> Failures:
        """Count one failed attempt of the effect (`permanent`: refused for good); the counts so far,
        with the time of the first failure."""
        ...

    def record_gave_up(
        self, tenant: str, effect_id: str, subject: str, reason: str, details: dict[str, Any], now: datetime
    ) -> bool:
        """One journal row (type `gave_up`) saying why in a person's words; False when that row is there."""
        ...

    def record_unconfirmed(
        self, tenant: str, effect_id: str, subject: str, detail: str, details: dict[str, Any], now: datetime
    ) -> bool:
        """One journal row (type `unconfirmed_message`, keyed by `now` and the id); False when that row is there."""
        ...


class StoreProtocol(Protocol):
    """Every read and write of leadwatch's own state (`leadwatch.store.dynamodb.Store` has the details)."""

    # ----- inbox
    def put_event(self, tenant: str, dedupe_key: str, payload: dict[str, Any], now: datetime) -> bool:
        """Store an event once per dedupe key; False when it is there already (a redelivery)."""
        ...

    def forget_event(self, tenant: str, dedupe_key: str) -> None:
        """Undo `put_event` (no error when absent): the CRM's retry is then stored as new."""
        ...

    def put_reject(
        self,
        tenant: str,
        status: int,
        reason: str,
        body: bytes,
        now: datetime,
        ident: str,
        *,
        per_hour: int = 10,
    ) -> bool:
        """Keep a refused request (its body as bytes capped at 8 KiB, its reason at 1000 characters),
        unless `per_hour` (KEPT_REJECTS_PER_HOUR; the contract suite holds the default equal) were
        kept for the tenant in this UTC hour: then False, nothing kept.
        The caller strips secrets first (leadwatch.ingress)."""
        ...

    def rejects(self, tenant: str) -> list[RejectRow]:
        """The kept refused requests, oldest first."""
        ...

    def events(self, tenant: str) -> list[dict[str, Any]]:
        """The stored event payloads (as JSON gives them back), in dedupe key order."""
        ...

    # ----- leads
    def get_leads(self, tenant: str, entities: Iterable[EntityRef]) -> dict[EntityRef, LeadState]:
        """The stored cards among these, by entity; unknown ones are left out."""
        ...

    def get_lead(self, tenant: str, entity: EntityRef) -> LeadState | None:
        """One stored card, or None."""
        ...

    def create_lead(self, state: LeadState, now: datetime, plan_day: date | None = None) -> bool:
        """Store a new open card (due from `now`'s bucket at the latest), with its plan day and whether its intake
        field is written (`intake_stamped`); False, changing nothing, when it exists."""
        ...

    def update_lead(self, state: LeadState) -> bool:
        """Stage/owner/title only forward in `crm_modified_at` (False when stale); processing is set once, even when stale."""
        ...

    def note_dialing(self, state: LeadState) -> bool:
        """Set the plan day and rejection moment once each; a card no longer rejected loses both. The card must exist.
        False (nothing written) when the stored card is newer than `state` (its CRM modification time)."""
        ...

    def mark_rejection_checked(self, state: LeadState) -> None:
        """Mark the rejection judged, only if the stored rejection is the one at `state.rejected_at`."""
        ...

    # ----- calls (dialing discipline): kept per card and local day
    def record_call(self, tenant: str, call: Call, day: date, touch: bool, now: datetime) -> bool:
        """Keep the call on its card and `day` (a touch if `touch`), once whatever the paths, merging what a later
        report tells more (longest duration, first recording, first word on answering; a touch stays one); True when
        it was new on `day` (best effort: a retried request whose first answer was lost says False; nothing counts
        by it)."""
        ...

    def record_calls(
        self,
        tenant: str,
        calls: Sequence[tuple[Call, date, bool]],
        now: datetime,
        kept: Mapping[str, Call] | None = None,
    ) -> list[bool]:
        """`record_call` for each (call, day, touch), as if one after the other; whether each was new. `kept` is what
        `known_calls` just returned for these calls, if the caller read it (it saves a write per known call)."""
        ...

    def add_recording(self, tenant: str, call: Call, day: date) -> None:
        """Give a known call on `day` (and so its touch) a recording, if it has none yet."""
        ...

    def known_call(self, tenant: str, entity: EntityRef, key: str) -> Call | None:
        """The call as kept (merged over every path and day), or None."""
        ...

    def known_calls(self, tenant: str, keys: Iterable[tuple[EntityRef, date, str]]) -> dict[str, Call]:
        """The kept calls among these (card, local day, call key), by call key."""
        ...

    def calls_of(self, tenant: str, entity: EntityRef) -> list[Call]:
        """Every kept call on one card, by start time then key (a call kept on two days once)."""
        ...

    def call_totals(self, tenant: str, entities: Iterable[EntityRef]) -> dict[EntityRef, tuple[int, int]]:
        """(attempts, touches) per card over all its days, each call once; (0, 0) for a card with none."""
        ...

    def day_counts(self, tenant: str, day: date) -> dict[EntityRef, tuple[int, int]]:
        """(attempts, touches) per card on `day`, for the cards with calls that day."""
        ...

    def touches_on(self, tenant: str, day: date) -> list[Call]:
        """The calls kept as touches on `day`, by start time then key."""
        ...

    def plan_leads(self, tenant: str, first_days: Iterable[date]) -> list[tuple[date, LeadState]]:
        """(plan day, card) for the cards whose plan starts on one of these days, by day then entity key."""
        ...

    # ----- the deadline sweep
    def due_leads(
        self, tenant: str, now: datetime, since: date, limit: int = 1000
    ) -> Iterator[tuple[date, LeadState]]:
        """Open cards due by `now` from the day buckets `since`..today (UTC), bucket by bucket by due time, at most `limit`."""
        ...

    def next_due(self, tenant: str, now: datetime, horizon_days: int = 31) -> datetime | None:
        """The due time of the first open card due after `now` in the day buckets today..today+horizon-1, or None."""
        ...

    def claim(
        self, state: LeadState, token: str, now: datetime, hold: timedelta, verdict: str | None = None
    ) -> bool:
        """Hold an open card for this sweep until now + hold; False while another hold lasts or the
        card is closed. With `verdict`, pin it on the card in the same step (`pending_verdict`; it
        stays through a release): False when another verdict is pinned there."""
        ...

    def release(self, state: LeadState, token: str) -> None:
        """Drop the hold, only if `token` has it."""
        ...

    def close_verdict(
        self, state: LeadState, verdict: str, token: str, now: datetime, day: str, manager: str
    ) -> bool:
        """Under `token`'s hold: count the card once for (day, manager) and close it; idempotent after a crash."""
        ...

    def close_deleted(self, state: LeadState, now: datetime) -> bool:
        """The card was deleted in the CRM: close it for every process, uncounted, whoever holds it
        (verdict "deleted" unless it had one; out of the due and plan indexes). False when it was
        closed as deleted before, or never stored."""
        ...

    # ----- effects
    @property
    def ledger(self) -> EffectLedgerProtocol:
        """The effect ledger, sharing this store's journal."""
        ...

    def effects_done(self, tenant: str, effect_ids: Iterable[str]) -> set[str]:
        """`ledger.done`: the settled ones among these."""
        ...

    def mark_effects(self, tenant: str, effect_ids: Iterable[str], now: datetime) -> None:
        """`ledger.mark_done`."""
        ...

    # ----- journal
    def put_violation(self, tenant: str, violation: Violation, now: datetime) -> bool:
        """Record once per (occurred_at, violation_id); False when that row is there."""
        ...

    def violations(
        self,
        tenant: str,
        start: datetime,
        end: datetime,
        type: str | Collection[str] | None = None,
        manager: str | None = None,
        limit: int | None = None,
    ) -> list[JournalRow]:
        """Journal rows that occurred in [start, end] (both included), oldest first: of one type,
        or of any of several, if given (an empty collection is no filter); of one manager if given
        (a row without one never matches); the first `limit` of them if given. The filters are
        applied to the period's rows: on DynamoDB they cost the period's reads whatever they keep."""
        ...

    # ----- checkpoints and statistics
    def get_checkpoint(self, tenant: str, name: str) -> str | None:
        """The last value set, or None."""
        ...

    def set_checkpoint(self, tenant: str, name: str, value: str) -> None:
        """Overwrite the checkpoint."""
        ...

    def timeliness_stats(self, tenant: str, first: date, last: date) -> list[StatRow]:
        """The verdict counters of days first..last (both included), by day then manager."""
        ...

    # ----- the CRM's names (leadwatch.names): one list per tenant and kind
    def get_names(self, tenant: str, kind: str) -> NameList | None:
        """The list last stored, or None (never stored: at most a refresh was claimed)."""
        ...

    def put_names(self, tenant: str, kind: str, names: NameList) -> bool:
        """Store the list as `leadwatch.store.names.bounded` keeps it, unless one read later
        (`read_at`) is there: False then, nothing written. A refresh claimed stays claimed."""
        ...

    def claim_names_refresh(self, tenant: str, kind: str, now: datetime, every: timedelta) -> bool:
        """True (and claimed at `now`) unless a refresh of this list was claimed in the `every`
        before `now`: one CRM read per tenant, kind and `every`, whichever container asks."""
        ...
