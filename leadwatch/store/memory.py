"""The state store in memory: `StoreProtocol` for unit tests of processes and replays.

It keeps what DynamoDB keeps, the way `leadwatch.store.dynamodb` keeps it (times as unix
seconds, sort keys built from the same strings, payloads and details through JSON), so what a
caller observes is the same on both; tests/contract/test_store_contract.py holds both to that.
One lock makes each method atomic, as each of DynamoDB's conditional writes is; a method that
DynamoDB does in several writes is one step here, which only removes interleavings.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from leadwatch.cards import DELETED, LeadState
from leadwatch.effects import Violation
from leadwatch.events import Call, EntityRef

# The value types still live beside the DynamoDB code (so importing this loads PynamoDB);
# see the note in leadwatch.store.interface.
from leadwatch.store.calls import KeptCall, card_day_key, day_prefix, first_call_day, key_parts, merged
from leadwatch.store.dynamodb import (
    KEPT_REJECTS_PER_HOUR,
    MAX_KEPT_BODY,
    JournalRow,
    RejectRow,
    StatRow,
    due_bucket,
    reject_hour,
)
from leadwatch.store.ledger import (
    _MAX_DETAIL,
    ClaimResult,
    ClaimState,
    EffectLedger,
    Failures,
    LedgerEntry,
    Status,
    _result_of,
    settlement_details,
    settlement_id,
)
from leadwatch.store.names import NameList, bounded

_V = TypeVar("_V")


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _at(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _dt(value: float | None) -> datetime | None:
    return None if value is None else _at(value)


def _plan_bucket(tenant: str, day: date | None) -> str | None:
    return f"{tenant}#{day.isoformat()}" if day else None


def _kept(call: Call) -> Call:
    """A call as DynamoDB gives it back: its start in UTC, no source as ""."""
    return replace(call, started_at=_at(call.started_at.timestamp()), source=call.source or "")


@dataclass
class _Lead:
    """One card, field for field as `LeadItem` holds it."""

    created_at: float
    due_at: float
    due_bucket: str | None
    stage: str
    responsible: str | None
    title: str | None
    processed_at: float | None = None
    processed_how: str | None = None
    crm_modified_at: float | None = None
    verdict: str | None = None
    verdict_at: float | None = None
    verdict_pending: str | None = None
    claim_token: str | None = None
    claim_until: float | None = None
    plan_bucket: str | None = None
    rejected_at: float | None = None
    rejection_checked: float | None = None
    deleted_at: float | None = None
    stamped: bool = False

    def state(self, tenant: str, entity: str) -> LeadState:
        return LeadState(
            tenant=tenant,
            entity=EntityRef.parse(entity),
            created_at=_at(self.created_at),
            due_at=_at(self.due_at),
            stage=self.stage,
            responsible=self.responsible,
            title=self.title or "",
            processed_at=_dt(self.processed_at),
            processed_how=self.processed_how,
            crm_modified_at=_dt(self.crm_modified_at),
            verdict=self.verdict,
            verdict_at=_dt(self.verdict_at),
            pending_verdict=self.verdict_pending,
            rejected_at=_dt(self.rejected_at),
            rejection_checked=_dt(self.rejection_checked),
            plan_day=date.fromisoformat(self.plan_bucket.rpartition("#")[2]) if self.plan_bucket else None,
            deleted_at=_dt(self.deleted_at),
            intake_stamped=self.stamped,
        )


@dataclass
class _Stat:
    on_time: int = 0
    late: int = 0


@dataclass
class _Effect:
    status: Status
    owner: str | None
    lease_until: float | None
    at: float
    detail: str | None = None

    def entry(self, effect_id: str) -> LedgerEntry:
        return LedgerEntry(
            effect_id, self.status, self.owner, _dt(self.lease_until), _dt(self.at), self.detail
        )


@dataclass(frozen=True)
class _Violation:
    violation_id: str
    type: str
    entity: str
    manager: str | None
    occurred_at: float
    details: str  # JSON, as DynamoDB keeps it: what `default=str` made of the values stays a string


class _Journal:
    """The violation journal, shared by the store and its ledger. Callers hold the lock."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, _Violation]] = {}

    def put_once(self, tenant: str, occurred_at: datetime, row: _Violation) -> bool:
        rows = self.rows.setdefault(tenant, {})
        key = f"{occurred_at.astimezone(UTC).isoformat()}#{row.violation_id}"
        if key in rows:
            return False
        rows[key] = row
        return True


class MemoryLedger:
    """`EffectLedgerProtocol` in memory: the transitions of `leadwatch.store.ledger`, each atomic."""

    def __init__(self, lock: threading.RLock, journal: _Journal) -> None:
        self._lock = lock
        self._journal = journal
        self._rows: dict[str, dict[str, _Effect]] = {}
        self._failures: dict[tuple[str, str], tuple[int, int, datetime]] = {}

    def _table(self, tenant: str) -> dict[str, _Effect]:
        return self._rows.setdefault(tenant, {})

    def claim(self, tenant: str, effect_id: str, owner: str, now: datetime, lease: timedelta) -> ClaimResult:
        with self._lock:
            rows = self._table(tenant)
            row = rows.get(effect_id)
            lapsed = (
                row is not None
                and row.status is Status.CLAIMED
                and row.lease_until is not None
                and row.lease_until < now.timestamp()
            )
            if row is not None and not lapsed:
                return _result_of(row.entry(effect_id))
            rows[effect_id] = _Effect(Status.CLAIMED, owner, (now + lease).timestamp(), now.timestamp())
            return ClaimResult(effect_id, ClaimState.CLAIMED)

    # The same on both ledgers: one read of the entries, then each claim through claim_unless.
    claim_many = EffectLedger.claim_many

    def claim_unless(
        self,
        entry: LedgerEntry | None,
        tenant: str,
        effect_id: str,
        owner: str,
        now: datetime,
        lease: timedelta,
    ) -> ClaimResult:
        if entry is not None and (entry.settled or entry.live_claim(now)):
            return _result_of(entry)
        return self.claim(tenant, effect_id, owner, now, lease)

    def confirm(
        self, tenant: str, effect_id: str, owner: str, now: datetime, result: str | None = None
    ) -> bool:
        return self._settle(tenant, effect_id, owner, now, Status.DONE, result)

    def mark_unconfirmed(self, tenant: str, effect_id: str, owner: str, now: datetime, detail: str) -> bool:
        return self._settle(tenant, effect_id, owner, now, Status.UNCONFIRMED, detail)

    def release(self, tenant: str, effect_id: str, owner: str) -> bool:
        with self._lock:
            rows = self._table(tenant)
            if not self._held_by(rows.get(effect_id), owner):
                return False
            del rows[effect_id]
            return True

    def mark_done(self, tenant: str, effect_ids: Iterable[str], now: datetime) -> None:
        with self._lock:
            rows = self._table(tenant)
            for effect_id in dict.fromkeys(effect_ids):
                rows[effect_id] = _Effect(Status.DONE, None, None, now.timestamp())

    def entries(self, tenant: str, effect_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        with self._lock:
            rows = self._table(tenant)
            return {i: rows[i].entry(i) for i in set(effect_ids) if i in rows}

    def done(self, tenant: str, effect_ids: Iterable[str]) -> set[str]:
        return {i for i, entry in self.entries(tenant, effect_ids).items() if entry.settled}

    def unconfirmed(self, tenant: str, effect_ids: Iterable[str]) -> set[str]:
        return {
            i for i, entry in self.entries(tenant, effect_ids).items() if entry.status is Status.UNCONFIRMED
        }

    # The same on both ledgers: one journal row through this ledger's own `_journal_once`.
    record_unconfirmed = EffectLedger.record_unconfirmed
    record_gave_up = EffectLedger.record_gave_up

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
        row = _Violation(
            violation_id=settlement_id(type_, effect_id),
            type=type_,
            entity=subject,
            manager=None,
            occurred_at=now.timestamp(),
            details=settlement_details(effect_id, detail, details),
        )
        with self._lock:
            return self._journal.put_once(tenant, now, row)

    def mark_gave_up(self, tenant: str, effect_id: str, owner: str, now: datetime, detail: str) -> bool:
        return self._settle(tenant, effect_id, owner, now, Status.GAVE_UP, detail)

    def note_failure(self, tenant: str, effect_id: str, now: datetime, *, permanent: bool) -> Failures:
        with self._lock:
            attempts, refusals, first = self._failures.get((tenant, effect_id), (0, 0, now))
            counts = (attempts + 1, refusals + permanent, first)
            self._failures[(tenant, effect_id)] = counts
            return Failures(*counts)

    @staticmethod
    def _held_by(row: _Effect | None, owner: str) -> bool:
        return row is not None and row.owner == owner and row.status is Status.CLAIMED

    def _settle(
        self, tenant: str, effect_id: str, owner: str, now: datetime, status: Status, detail: str | None
    ) -> bool:
        with self._lock:
            row = self._table(tenant).get(effect_id)
            if row is None or not self._held_by(row, owner):
                return False
            row.status = status
            row.at = now.timestamp()
            row.lease_until = None
            if detail is not None:
                row.detail = detail[:_MAX_DETAIL] or "-"
            return True


class MemoryStore:
    """`StoreProtocol` in memory (see the module docstring). Expiry (TTL) is not modelled."""

    def __init__(self) -> None:
        # Re-entrant: record_call records through record_calls under the same lock.
        self._lock = threading.RLock()
        self._inbox: dict[str, dict[str, str]] = {}  # event key -> payload JSON
        self._rejects: dict[str, dict[str, RejectRow]] = {}
        self._reject_counts: dict[str, dict[str, int]] = {}  # hour -> rejects kept in it
        self._leads: dict[str, dict[str, _Lead]] = {}
        # "calls#<day>#<card>" -> call key -> the call kept and whether it is a touch, as CallDayItem.
        self._call_days: dict[str, dict[str, dict[str, KeptCall]]] = {}
        self._stats: dict[str, dict[str, _Stat]] = {}  # "stats#timeliness#<day>#<manager>"
        self._checkpoints: dict[str, dict[str, str]] = {}
        # "names#<kind>" -> (the list or None, when a refresh was last claimed), as NamesItem.
        self._names: dict[str, dict[str, tuple[NameList | None, float | None]]] = {}
        self._journal = _Journal()
        self._ledger = MemoryLedger(self._lock, self._journal)

    @staticmethod
    def _part(tables: dict[str, dict[str, _V]], tenant: str) -> dict[str, _V]:
        return tables.setdefault(tenant, {})

    # ----- inbox
    def put_event(self, tenant: str, dedupe_key: str, payload: dict[str, Any], now: datetime) -> bool:
        text = json.dumps(payload, separators=(",", ":"))
        with self._lock:
            events = self._part(self._inbox, tenant)
            if dedupe_key in events:
                return False
            events[dedupe_key] = text
            return True

    def forget_event(self, tenant: str, dedupe_key: str) -> None:
        with self._lock:
            self._part(self._inbox, tenant).pop(dedupe_key, None)

    def put_reject(
        self,
        tenant: str,
        status: int,
        reason: str,
        body: bytes,
        now: datetime,
        ident: str,
        *,
        per_hour: int = KEPT_REJECTS_PER_HOUR,
    ) -> bool:
        key = f"reject#{now.astimezone(UTC).isoformat()}#{ident}"
        row = RejectRow(key, _at(now.timestamp()), status, reason[:1000], bytes(body[:MAX_KEPT_BODY]))
        with self._lock:
            counts = self._part(self._reject_counts, tenant)
            hour = reject_hour(now)
            if counts.get(hour, 0) >= per_hour:
                return False
            counts[hour] = counts.get(hour, 0) + 1
            self._part(self._rejects, tenant)[key] = row
            return True

    def rejects(self, tenant: str) -> list[RejectRow]:
        with self._lock:
            rows = self._part(self._rejects, tenant)
            return [rows[k] for k in sorted(rows)]

    def events(self, tenant: str) -> list[dict[str, Any]]:
        with self._lock:
            events = self._part(self._inbox, tenant)
            texts = [events[k] for k in sorted(events)]
        return [json.loads(text) for text in texts]

    # ----- leads
    def get_leads(self, tenant: str, entities: Iterable[EntityRef]) -> dict[EntityRef, LeadState]:
        with self._lock:
            leads = self._part(self._leads, tenant)
            return {e: leads[e.key].state(tenant, e.key) for e in set(entities) if e.key in leads}

    def get_lead(self, tenant: str, entity: EntityRef) -> LeadState | None:
        return self.get_leads(tenant, [entity]).get(entity)

    def create_lead(self, state: LeadState, now: datetime, plan_day: date | None = None) -> bool:
        # Only what a sighting knows: verdicts and counters start empty, as in DynamoDB.
        lead = _Lead(
            created_at=state.created_at.timestamp(),
            due_at=state.due_at.timestamp(),
            due_bucket=due_bucket(state.tenant, state.due_at, now),
            stage=state.stage,
            responsible=state.responsible,
            title=state.title or None,
            processed_at=_ts(state.processed_at),
            processed_how=state.processed_how,
            crm_modified_at=_ts(state.crm_modified_at),
            plan_bucket=_plan_bucket(state.tenant, plan_day or state.plan_day),
            rejected_at=_ts(state.rejected_at),
            rejection_checked=_ts(state.rejection_checked),
            stamped=state.intake_stamped,
        )
        with self._lock:
            leads = self._part(self._leads, state.tenant)
            if state.entity.key in leads:
                return False
            leads[state.entity.key] = lead
            return True

    def update_lead(self, state: LeadState) -> bool:
        with self._lock:
            lead = self._part(self._leads, state.tenant).get(state.entity.key)
            if lead is None:
                # DynamoDB raises here when the sighting carries processing (a bug, see the contract suite).
                return False
            if state.processed_at is not None:
                when = state.processed_at.timestamp()
                earlier = (
                    lead.processed_at is not None
                    and when < lead.processed_at
                    and lead.verdict is None
                    and lead.verdict_pending is None
                )
                if lead.processed_at is None or earlier:
                    lead.processed_at = when
                    lead.processed_how = state.processed_how or "stage"
                if lead.processed_how is None:
                    lead.processed_how = state.processed_how or "stage"
            modified = _ts(state.crm_modified_at)
            if modified is not None and lead.crm_modified_at is not None and lead.crm_modified_at > modified:
                stale = True
            else:
                stale = False
                lead.stage = state.stage
                lead.responsible = state.responsible or None
                lead.title = state.title or None
                if modified is not None:
                    lead.crm_modified_at = modified
        if stale:
            from leadwatch import observability  # as the DynamoDB store does: loaded when needed

            observability.stale_write("timeliness")
        return not stale

    def note_dialing(self, state: LeadState) -> bool:
        with self._lock:
            lead = self._part(self._leads, state.tenant).get(state.entity.key)
            if lead is None:
                raise LookupError(f"{state.tenant}: no card {state.entity.key} to note dialing on")
            modified = _ts(state.crm_modified_at)
            if modified is not None and lead.crm_modified_at is not None and lead.crm_modified_at > modified:
                return False  # the card moved on since `state` was read
            if state.plan_day is not None and lead.plan_bucket is None:
                lead.plan_bucket = _plan_bucket(state.tenant, state.plan_day)
            if state.rejected_at is None:
                lead.rejected_at = lead.rejection_checked = None
                return True
            # The first sighting of a rejection fixes its moment; a later event must not move it.
            if lead.rejected_at is None:
                lead.rejected_at = state.rejected_at.timestamp()
            if state.rejection_checked is not None and lead.rejection_checked is None:
                lead.rejection_checked = state.rejection_checked.timestamp()
            return True

    def mark_rejection_checked(self, state: LeadState) -> None:
        if state.rejected_at is None:
            return
        stamp = state.rejected_at.timestamp()
        with self._lock:
            lead = self._part(self._leads, state.tenant).get(state.entity.key)
            if lead is not None and lead.rejected_at == stamp:
                lead.rejection_checked = stamp

    # ----- calls (dialing discipline)
    def record_call(self, tenant: str, call: Call, day: date, touch: bool, now: datetime) -> bool:
        return self.record_calls(tenant, [(call, day, touch)], now)[0]

    def record_calls(
        self,
        tenant: str,
        calls: Sequence[tuple[Call, date, bool]],
        now: datetime,
        kept: Mapping[str, Call] | None = None,  # DynamoDB's shortcut; the outcome is the same
    ) -> list[bool]:
        new = []
        with self._lock:
            days = self._part(self._call_days, tenant)
            for call, day, touch in calls:
                assert call.entity is not None, "a call is recorded on its card"
                kept_calls = days.setdefault(card_day_key(call.entity, day), {})
                held = kept_calls.get(call.key)
                if held is None:
                    kept_calls[call.key] = KeptCall(_kept(call), touch)
                else:
                    kept_calls[call.key] = KeptCall(merged(held.call, _kept(call)), held.touch or touch)
                new.append(held is None)
        return new

    def add_recording(self, tenant: str, call: Call, day: date) -> None:
        assert call.entity is not None and call.record_url
        with self._lock:
            kept_calls = self._part(self._call_days, tenant).get(card_day_key(call.entity, day), {})
            kept = kept_calls.get(call.key)
            if kept is not None and kept.call.record_url is None:
                kept_calls[call.key] = KeptCall(replace(kept.call, record_url=call.record_url), kept.touch)

    def _of_card(self, tenant: str, entity: EntityRef) -> list[KeptCall]:
        """As DynamoDB reads a card's calls: from its first call day on, if the card is held."""
        found: dict[str, KeptCall] = {}
        with self._lock:
            lead = self._part(self._leads, tenant).get(entity.key)
            first = None if lead is None else first_call_day(_at(lead.created_at))
            days = self._part(self._call_days, tenant)
            for key in sorted(days):
                day, card = key_parts(key)
                if card != entity or (first is not None and day < first):
                    continue
                for call_key, kept in days[key].items():
                    have = found.get(call_key)
                    found[call_key] = (
                        kept
                        if have is None
                        else KeptCall(merged(have.call, kept.call), have.touch or kept.touch)
                    )
        return sorted(found.values(), key=lambda k: (k.call.started_at, k.call.key))

    def known_call(self, tenant: str, entity: EntityRef, key: str) -> Call | None:
        return next((k.call for k in self._of_card(tenant, entity) if k.call.key == key), None)

    def known_calls(self, tenant: str, keys: Iterable[tuple[EntityRef, date, str]]) -> dict[str, Call]:
        with self._lock:
            days = self._part(self._call_days, tenant)
            found = {}
            for entity, day, call_key in keys:
                kept = days.get(card_day_key(entity, day), {}).get(call_key)
                if kept is not None:
                    found[call_key] = kept.call
            return found

    def calls_of(self, tenant: str, entity: EntityRef) -> list[Call]:
        return [kept.call for kept in self._of_card(tenant, entity)]

    def call_totals(self, tenant: str, entities: Iterable[EntityRef]) -> dict[EntityRef, tuple[int, int]]:
        found = {}
        for entity in sorted(set(entities)):
            kept = self._of_card(tenant, entity)
            found[entity] = (len(kept), sum(1 for k in kept if k.touch))
        return found

    def _of_day(self, tenant: str, day: date) -> dict[EntityRef, list[KeptCall]]:
        with self._lock:
            return {
                key_parts(key)[1]: list(kept_calls.values())
                for key, kept_calls in self._part(self._call_days, tenant).items()
                if key.startswith(day_prefix(day)) and kept_calls
            }

    def day_counts(self, tenant: str, day: date) -> dict[EntityRef, tuple[int, int]]:
        return {
            entity: (len(kept), sum(1 for k in kept if k.touch))
            for entity, kept in self._of_day(tenant, day).items()
        }

    def touches_on(self, tenant: str, day: date) -> list[Call]:
        calls = [k.call for kept in self._of_day(tenant, day).values() for k in kept if k.touch]
        return sorted(calls, key=lambda c: (c.started_at, c.key))

    def plan_leads(self, tenant: str, first_days: Iterable[date]) -> list[tuple[date, LeadState]]:
        found = []
        with self._lock:
            leads = self._part(self._leads, tenant)
            for day in sorted(set(first_days)):
                bucket = _plan_bucket(tenant, day)
                found += [
                    (day, leads[k].state(tenant, k)) for k in sorted(leads) if leads[k].plan_bucket == bucket
                ]
        return found

    # ----- the deadline sweep
    def due_leads(
        self, tenant: str, now: datetime, since: date, limit: int = 1000
    ) -> Iterator[tuple[date, LeadState]]:
        day = since
        today = now.astimezone(UTC).date()
        remaining = limit
        while day <= today and remaining > 0:
            bucket = f"{tenant}#{day.isoformat()}"
            with self._lock:
                # The due index: the bucket's cards ordered by due time, up to now.
                leads = self._part(self._leads, tenant)
                due = sorted(
                    (lead.due_at, key)
                    for key, lead in leads.items()
                    if lead.due_bucket == bucket and lead.due_at <= now.timestamp()
                )[:remaining]
                states = [leads[key].state(tenant, key) for _, key in due]
            # Yield outside the lock: the caller may write to the store between cards.
            for state in states:
                remaining -= 1
                yield day, state
            day += timedelta(days=1)

    def next_due(self, tenant: str, now: datetime, horizon_days: int = 31) -> datetime | None:
        day = now.astimezone(UTC).date()
        with self._lock:
            leads = self._part(self._leads, tenant).values()
            for _ in range(horizon_days):
                bucket = f"{tenant}#{day.isoformat()}"
                later = [
                    lead.due_at
                    for lead in leads
                    if lead.due_bucket == bucket and lead.due_at > now.timestamp()
                ]
                if later:
                    return _dt(min(later))
                day += timedelta(days=1)
        return None

    def claim(
        self, state: LeadState, token: str, now: datetime, hold: timedelta, verdict: str | None = None
    ) -> bool:
        with self._lock:
            lead = self._part(self._leads, state.tenant).get(state.entity.key)
            if lead is None or lead.due_bucket is None:
                return False
            if lead.claim_until is not None and lead.claim_until >= now.timestamp():
                return False
            if verdict is not None and lead.verdict_pending not in (None, verdict):
                return False
            lead.claim_token = token
            lead.claim_until = (now + hold).timestamp()
            if verdict is not None:
                lead.verdict_pending = verdict
            return True

    def release(self, state: LeadState, token: str) -> None:
        with self._lock:
            lead = self._part(self._leads, state.tenant).get(state.entity.key)
            if lead is not None and lead.claim_token == token:
                lead.claim_token = lead.claim_until = None

    def close_verdict(
        self, state: LeadState, verdict: str, token: str, now: datetime, day: str, manager: str
    ) -> bool:
        # DynamoDB's three writes (pin, count, close) in one step: nothing can die in between here,
        # and what it leaves is what DynamoDB leaves when all three succeed.
        with self._lock:
            lead = self._part(self._leads, state.tenant).get(state.entity.key)
            if lead is None or lead.claim_token != token or lead.verdict is not None:
                return False  # not (or no longer) this sweep's card: it must not count it either
            stat = self._part(self._stats, state.tenant).setdefault(
                f"stats#timeliness#{day}#{manager}", _Stat()
            )
            # No set of counted cards as in DynamoDB: a card closes once here, so it counts once.
            if verdict == "on_time":
                stat.on_time += 1
            else:
                stat.late += 1
            lead.verdict = verdict
            lead.verdict_at = now.timestamp()
            lead.due_bucket = lead.claim_token = lead.claim_until = lead.verdict_pending = None
            return True

    def close_deleted(self, state: LeadState, now: datetime) -> bool:
        with self._lock:
            lead = self._part(self._leads, state.tenant).get(state.entity.key)
            if lead is None or lead.deleted_at is not None:
                return False
            if lead.verdict is None:
                lead.verdict, lead.verdict_at = DELETED, now.timestamp()
            lead.deleted_at = now.timestamp()
            lead.due_bucket = lead.plan_bucket = lead.claim_token = lead.claim_until = None
            return True

    # ----- effects
    @property
    def ledger(self) -> MemoryLedger:
        return self._ledger

    def effects_done(self, tenant: str, effect_ids: Iterable[str]) -> set[str]:
        return self._ledger.done(tenant, effect_ids)

    def mark_effects(self, tenant: str, effect_ids: Iterable[str], now: datetime) -> None:
        self._ledger.mark_done(tenant, effect_ids, now)

    # ----- journal
    def put_violation(self, tenant: str, violation: Violation, now: datetime) -> bool:
        row = _Violation(
            violation_id=violation.violation_id,
            type=violation.type,
            entity=violation.entity.key,
            manager=violation.manager,
            occurred_at=violation.occurred_at.timestamp(),
            details=json.dumps(violation.details, ensure_ascii=False, default=str),
        )
        with self._lock:
            return self._journal.put_once(tenant, violation.occurred_at, row)

    def violations(
        self,
        tenant: str,
        start: datetime,
        end: datetime,
        type: str | Collection[str] | None = None,
        manager: str | None = None,
        limit: int | None = None,
    ) -> list[JournalRow]:
        if limit is not None and limit <= 0:
            return []
        # The same string range as DynamoDB's sort key condition, so the same rows fall inside.
        lower = start.astimezone(UTC).isoformat()
        upper = end.astimezone(UTC).isoformat() + "\uffff"
        types = {type} if isinstance(type, str) else set(type or ())
        with self._lock:
            rows = self._journal.rows.get(tenant, {})
            found = [
                rows[k]
                for k in sorted(rows)
                if lower <= k <= upper
                and (not types or rows[k].type in types)
                and (manager is None or rows[k].manager == manager)
            ]
        return [
            JournalRow(
                r.violation_id,
                r.type,
                r.entity,
                r.manager,
                _at(r.occurred_at),
                json.loads(r.details),
            )
            for r in found[:limit]
        ]

    # ----- checkpoints and statistics
    def get_checkpoint(self, tenant: str, name: str) -> str | None:
        with self._lock:
            return self._part(self._checkpoints, tenant).get(name)

    def set_checkpoint(self, tenant: str, name: str, value: str) -> None:
        with self._lock:
            self._part(self._checkpoints, tenant)[name] = value

    def timeliness_stats(self, tenant: str, first: date, last: date) -> list[StatRow]:
        lower = f"stats#timeliness#{first.isoformat()}"
        upper = f"stats#timeliness#{last.isoformat()}#\uffff"
        with self._lock:
            stats = self._part(self._stats, tenant)
            rows = []
            for key in sorted(stats):
                if lower <= key <= upper:
                    _, _, day, manager = key.split("#", 3)
                    rows.append(StatRow(day, manager, stats[key].on_time, stats[key].late))
            return rows

    # ----- the CRM's names
    def get_names(self, tenant: str, kind: str) -> NameList | None:
        with self._lock:
            return self._part(self._names, tenant).get(f"names#{kind}", (None, None))[0]

    def put_names(self, tenant: str, kind: str, names: NameList) -> bool:
        kept = bounded(names)
        # Through unix seconds and back, as DynamoDB keeps it.
        kept = replace(kept, read_at=_at(kept.read_at.timestamp()))
        with self._lock:
            lists = self._part(self._names, tenant)
            stored, tried = lists.get(f"names#{kind}", (None, None))
            if stored is not None and stored.read_at > kept.read_at:
                return False
            lists[f"names#{kind}"] = (kept, tried)
            return True

    def claim_names_refresh(self, tenant: str, kind: str, now: datetime, every: timedelta) -> bool:
        with self._lock:
            lists = self._part(self._names, tenant)
            stored, tried = lists.get(f"names#{kind}", (None, None))
            if tried is not None and tried > (now - every).timestamp():
                return False
            lists[f"names#{kind}"] = (stored, now.timestamp())
            return True
