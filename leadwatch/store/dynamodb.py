"""The data access layer: every DynamoDB read and write leadwatch makes, in one place.

Workflows never see this module; the runtime loads state through it and hands
the workflows plain dataclasses.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pynamodb.expressions.condition import Condition

from leadwatch.cards import DELETED, LeadState
from leadwatch.effects import Violation
from leadwatch.events import Call, EntityRef
from leadwatch.store.calls import CallDays
from leadwatch.store.conditions import put_once, update_if
from leadwatch.store.ledger import EffectLedger
from leadwatch.store.models import InboxItem, JournalItem, LeadItem, NamesItem, StateItem
from leadwatch.store.names import KEEP, NameList, bounded, dump, load

INBOX_TTL = timedelta(days=14)
DEFAULT_RETENTION = timedelta(days=396)  # 13 months (leadwatch.config.DEFAULT_RETENTION_MONTHS)
LEDGER_TTL = timedelta(days=30)
MAX_KEPT_BODY = 8 * 1024
# Rejected bodies kept per tenant per clock hour (UTC): enough to diagnose a broken integration,
# while a portal sending garbage all day costs at most this many item writes an hour.
KEPT_REJECTS_PER_HOUR = 10


def reject_hour(now: datetime) -> str:
    """The sampling window a reject at `now` counts in."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H")


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _at(value: float) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


def _dt(value: float | None) -> datetime | None:
    return None if value is None else _at(value)


def due_bucket(tenant: str, due_at: datetime, stored_at: datetime) -> str:
    """The due index partition: the UTC day the card falls due, or the day it was stored if later.

    A card stored already overdue (found late by reconciliation) lands in today's
    bucket, so every bucket before today holds only cards already due, and a
    sweep needs to read only from the oldest bucket still holding an open card.
    """
    day = max(due_at, stored_at).astimezone(UTC).date()
    return f"{tenant}#{day.isoformat()}"


def _plan_bucket(tenant: str, day: date | None) -> str | None:
    return f"{tenant}#{day.isoformat()}" if day else None


@dataclass(frozen=True)
class StatRow:
    day: str
    manager: str
    on_time: int
    late: int


@dataclass(frozen=True)
class JournalRow:
    violation_id: str
    type: str
    entity: str
    manager: str | None
    occurred_at: datetime
    details: dict[str, Any]


@dataclass(frozen=True)
class RejectRow:
    key: str
    received_at: datetime
    status: int
    reason: str
    body: bytes  # as it came (stripped of secrets), at most MAX_KEPT_BODY bytes

    @property
    def text(self) -> str:
        """The body for reading: invalid UTF-8 (or a character cut at the cap) shown as U+FFFD."""
        return self.body.decode("utf-8", errors="replace")


class Store:
    """DynamoDB through PynamoDB. Every method is scoped to one tenant.

    `retention` says how long a tenant's cards, calls, counters and journal rows are kept (each
    row expires that long after what it records happened); 13 months unless told.
    """

    def __init__(self, retention: Callable[[str], timedelta] | None = None):
        self.retention = retention or (lambda _tenant: DEFAULT_RETENTION)
        # Through self.retention at each write, so setting it later applies to calls too.
        self.calls = CallDays(lambda tenant: self.retention(tenant))

    # ----- inbox
    def put_event(self, tenant: str, dedupe_key: str, payload: dict[str, Any], now: datetime) -> bool:
        """Store an event once. False when it is already there (a redelivery)."""
        item = InboxItem(
            tenant,
            f"event#{dedupe_key}",
            kind="event",
            received_at=now.timestamp(),
            payload=json.dumps(payload, separators=(",", ":")),
            expires_at=now + INBOX_TTL,
        )
        return put_once(item, InboxItem.key.does_not_exist())

    def forget_event(self, tenant: str, dedupe_key: str) -> None:
        """Undo put_event when the event could not be queued, so the CRM's retry is not taken for a duplicate."""
        InboxItem(tenant, f"event#{dedupe_key}").delete()

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
        """Keep a refused request unless `per_hour` were kept for the tenant this hour: one
        conditional counter update (the hour's "sample" row, expiring with its hour), then the
        row. The body is stored as bytes (a binary attribute counts its length, where decoding
        invalid UTF-8 to text would triple it)."""
        hour = reject_hour(now)
        counter = InboxItem(tenant, f"sample#reject#{hour}")
        counted = update_if(
            counter,
            [
                InboxItem.kept.add(1),
                InboxItem.kind.set("sample"),
                InboxItem.received_at.set(now.timestamp()),
                InboxItem.expires_at.set(now + timedelta(hours=2)),
            ],
            InboxItem.kept.does_not_exist() | (InboxItem.kept < per_hour),
        )
        if not counted:
            return False
        InboxItem(
            tenant,
            f"reject#{now.astimezone(UTC).isoformat()}#{ident}",
            kind="reject",
            received_at=now.timestamp(),
            status=status,
            reason=reason[:1000],
            raw=body[:MAX_KEPT_BODY],
            expires_at=now + INBOX_TTL,
        ).save()
        return True

    def rejects(self, tenant: str) -> list[RejectRow]:
        return [
            RejectRow(
                item.key,
                _at(item.received_at),
                int(item.status),
                item.reason or "",
                item.raw if item.raw is not None else (item.body or "").encode("utf-8"),
            )
            for item in InboxItem.query(tenant, InboxItem.key.startswith("reject#"))
        ]

    def events(self, tenant: str) -> list[dict[str, Any]]:
        return [
            json.loads(item.payload)
            for item in InboxItem.query(tenant, InboxItem.key.startswith("event#"))
            if item.payload
        ]

    # ----- leads
    @staticmethod
    def _to_state(item: LeadItem) -> LeadState:
        return LeadState(
            tenant=item.tenant,
            entity=EntityRef.parse(item.entity),
            created_at=_at(item.created_at),
            due_at=_at(item.due_at),
            stage=item.stage,
            responsible=item.responsible,
            title=item.title or "",
            processed_at=_dt(item.processed_at),
            processed_how=item.processed_how,
            crm_modified_at=_dt(item.crm_modified_at),
            verdict=item.verdict,
            verdict_at=_dt(item.verdict_at),
            pending_verdict=item.verdict_pending,
            rejected_at=_dt(item.rejected_at),
            rejection_checked=_dt(item.rejection_checked),
            plan_day=date.fromisoformat(item.plan_bucket.rpartition("#")[2]) if item.plan_bucket else None,
            deleted_at=_dt(item.deleted_at),
            intake_stamped=bool(item.stamped),
        )

    def get_leads(self, tenant: str, entities: Iterable[EntityRef]) -> dict[EntityRef, LeadState]:
        keys = sorted({(tenant, e.key) for e in entities})
        found: dict[EntityRef, LeadState] = {}
        if not keys:
            return found
        for item in LeadItem.batch_get(keys):
            state = self._to_state(item)
            found[state.entity] = state
        return found

    def get_lead(self, tenant: str, entity: EntityRef) -> LeadState | None:
        return self.get_leads(tenant, [entity]).get(entity)

    def create_lead(self, state: LeadState, now: datetime, plan_day: date | None = None) -> bool:
        """Store a newly seen card. False when another worker stored it first.

        `plan_day` is day 1 of its dialing plan: the card joins that day's plan bucket.
        """
        item = LeadItem(
            state.tenant,
            state.entity.key,
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
            expires_at=state.created_at + self.retention(state.tenant),
            stamped=state.intake_stamped or None,
        )
        return put_once(item, LeadItem.entity.does_not_exist())

    def update_lead(self, state: LeadState) -> bool:
        """Record a later sighting; False when the stored card is newer (the sighting is stale).

        The card's stage, owner and title move only forward in the CRM's modification time, so a
        worker holding an older snapshot cannot roll the card back. Processing, once recorded, is
        never erased, only moved earlier while the card is not judged, and is recorded even from a
        stale sighting (an activity proves it).
        """
        item = LeadItem(state.tenant, state.entity.key)
        processed = []
        if state.processed_at is not None:
            processed = [
                LeadItem.processed_at.set(LeadItem.processed_at | state.processed_at.timestamp()),
                LeadItem.processed_how.set(LeadItem.processed_how | (state.processed_how or "stage")),
            ]
        actions = [
            LeadItem.stage.set(state.stage),
            LeadItem.responsible.set(state.responsible)
            if state.responsible
            else LeadItem.responsible.remove(),
            LeadItem.title.set(state.title) if state.title else LeadItem.title.remove(),
            *processed,
        ]
        condition = LeadItem.entity.exists()
        if state.crm_modified_at is not None:
            modified = state.crm_modified_at.timestamp()
            actions.append(LeadItem.crm_modified_at.set(modified))
            condition &= LeadItem.crm_modified_at.does_not_exist() | (LeadItem.crm_modified_at <= modified)
        if update_if(item, actions, condition):
            self._earlier_processing(item, state)
            return True
        from leadwatch import observability

        if processed and not update_if(item, processed, LeadItem.entity.exists()):
            return False  # no such card: nothing to record, and nothing stale either
        self._earlier_processing(item, state)
        observability.stale_write("timeliness")
        return False

    @staticmethod
    def _earlier_processing(item: LeadItem, state: LeadState) -> None:
        """Processing learnt late but earlier than the one recorded (an activity whose webhook came
        after the stage change's) moves it earlier, while the card is not judged. `item` holds the
        row as the update left it, so the extra write happens only when it is needed."""
        if state.processed_at is None or item.processed_at is None:
            return
        when = state.processed_at.timestamp()
        if item.processed_at <= when or item.verdict is not None or item.verdict_pending is not None:
            return
        update_if(
            item,
            [LeadItem.processed_at.set(when), LeadItem.processed_how.set(state.processed_how or "stage")],
            (LeadItem.processed_at > when)
            & LeadItem.verdict.does_not_exist()
            & LeadItem.verdict_pending.does_not_exist(),
        )

    def note_dialing(self, state: LeadState) -> bool:
        """Dialing's part of a card: its plan day, and when it entered a rejected stage (or left it).

        False (nothing written, a stale write counted) when the card has moved on since `state` was
        read: a newer sighting's own dialing pass decides then."""
        item = LeadItem(state.tenant, state.entity.key)
        actions: list[Any] = []
        if state.plan_day is not None:
            actions.append(
                LeadItem.plan_bucket.set(LeadItem.plan_bucket | _plan_bucket(state.tenant, state.plan_day))
            )
        if state.rejected_at is not None:
            # The first sighting of a rejection fixes its moment; a later event must not move it.
            actions.append(LeadItem.rejected_at.set(LeadItem.rejected_at | state.rejected_at.timestamp()))
            if state.rejection_checked is not None:
                actions.append(
                    LeadItem.rejection_checked.set(
                        LeadItem.rejection_checked | state.rejection_checked.timestamp()
                    )
                )
        else:
            actions += [LeadItem.rejected_at.remove(), LeadItem.rejection_checked.remove()]
        condition = LeadItem.entity.exists()
        if state.crm_modified_at is not None:
            modified = state.crm_modified_at.timestamp()
            condition &= LeadItem.crm_modified_at.does_not_exist() | (LeadItem.crm_modified_at <= modified)
        if update_if(item, actions, condition):
            return True
        if self.get_lead(state.tenant, state.entity) is None:
            raise LookupError(f"{state.tenant}: no card {state.entity.key} to note dialing on")
        from leadwatch import observability

        observability.stale_write("dialing")
        return False

    def mark_rejection_checked(self, state: LeadState) -> None:
        """The rejection seen at `state.rejected_at` is judged; a later rejection will be judged anew."""
        if state.rejected_at is None:
            return
        stamp = state.rejected_at.timestamp()
        update_if(
            LeadItem(state.tenant, state.entity.key),
            [LeadItem.rejection_checked.set(stamp)],
            LeadItem.rejected_at == stamp,
        )

    # ----- calls (dialing discipline): one item per card and local day, leadwatch.store.calls
    def record_call(self, tenant: str, call: Call, day: date, touch: bool, now: datetime) -> bool:
        """Keep a call on its card and day, once whatever paths bring it; True when it was new on
        that day. One UpdateItem (a second when a known call is told more of)."""
        return self.calls.record(tenant, [(call, day, touch)])[0]

    def record_calls(
        self,
        tenant: str,
        calls: Sequence[tuple[Call, date, bool]],
        now: datetime,
        kept: Mapping[str, Call] | None = None,
    ) -> list[bool]:
        """`record_call` for many: one UpdateItem per card-day among them; a call in `kept`
        (`known_calls` of these calls) is merged into its entry in one UpdateItem of its own."""
        return self.calls.record(tenant, calls, kept)

    def add_recording(self, tenant: str, call: Call, day: date) -> None:
        """A recording learnt late, on the kept call (and so on its touch) if it has none."""
        self.calls.add_recording(tenant, call, day)

    def known_call(self, tenant: str, entity: EntityRef, key: str) -> Call | None:
        return next((k.call for k in self.calls.of_card(tenant, entity) if k.call.key == key), None)

    def known_calls(self, tenant: str, keys: Iterable[tuple[EntityRef, date, str]]) -> dict[str, Call]:
        """The calls leadwatch already holds among (card, local day, call key), by call key."""
        return self.calls.known(tenant, keys)

    def calls_of(self, tenant: str, entity: EntityRef) -> list[Call]:
        return [kept.call for kept in self.calls.of_card(tenant, entity)]

    def call_totals(self, tenant: str, entities: Iterable[EntityRef]) -> dict[EntityRef, tuple[int, int]]:
        """(attempts, touches) per card over all its days; a card with no calls (0, 0)."""
        return self.calls.totals(tenant, entities)

    def day_counts(self, tenant: str, day: date) -> dict[EntityRef, tuple[int, int]]:
        """(attempts, touches) per card on one local day."""
        return {
            entity: (len(kept), sum(1 for k in kept if k.touch))
            for entity, kept in self.calls.of_day(tenant, day).items()
        }

    def touches_on(self, tenant: str, day: date) -> list[Call]:
        calls = [k.call for kept in self.calls.of_day(tenant, day).values() for k in kept if k.touch]
        return sorted(calls, key=lambda c: (c.started_at, c.key))

    def _expiry(self, tenant: str, happened: datetime) -> Any:
        """Set a counter row's expiry once, from what it first counted."""
        return StateItem.expires_at.set(StateItem.expires_at | (happened + self.retention(tenant)))

    def plan_leads(self, tenant: str, first_days: Iterable[date]) -> list[tuple[date, LeadState]]:
        """The cards whose dialing plan starts on one of these days (the plan index only)."""
        found = []
        for day in sorted(set(first_days)):
            keys = [item.entity for item in LeadItem.plan_index.query(f"{tenant}#{day.isoformat()}")]
            states = self.get_leads(tenant, map(EntityRef.parse, keys))
            found += [(day, states[entity]) for entity in sorted(states)]
        return found

    def due_leads(
        self, tenant: str, now: datetime, since: date, limit: int = 1000
    ) -> Iterator[tuple[date, LeadState]]:
        """Open cards whose control time has come, with their day bucket, from `since` to today.

        Reads the sparse due index only: what it returns is what is due.
        """
        day = since
        today = now.astimezone(UTC).date()
        remaining = limit
        while day <= today and remaining > 0:
            bucket = f"{tenant}#{day.isoformat()}"
            query = LeadItem.due_index.query(bucket, LeadItem.due_at <= now.timestamp(), limit=remaining)
            keys = [EntityRef.parse(item.entity) for item in query]
            remaining -= len(keys)
            states = self.get_leads(tenant, keys)
            # The index lags the table a moment: a card closed since shows no due bucket's worth.
            for state in sorted(states.values(), key=lambda s: (s.due_at, s.entity)):
                if state.verdict is None:
                    yield day, state
            day += timedelta(days=1)

    def next_due(self, tenant: str, now: datetime, horizon_days: int = 31) -> datetime | None:
        """When the tenant's next open card falls due after `now` (None: none within the horizon).

        One query per day bucket from today on, one item each; cards fall due within days of
        arriving, so this usually stops at today's or tomorrow's bucket."""
        day = now.astimezone(UTC).date()
        for _ in range(horizon_days):
            bucket = f"{tenant}#{day.isoformat()}"
            for item in LeadItem.due_index.query(bucket, LeadItem.due_at > now.timestamp(), limit=1):
                return _dt(item.due_at)
            day += timedelta(days=1)
        return None

    def claim(
        self, state: LeadState, token: str, now: datetime, hold: timedelta, verdict: str | None = None
    ) -> bool:
        """Take a due card for this sweep, so an overlapping sweep leaves it alone; with `verdict`,
        pin it on the card in the same write (refused when another verdict is pinned there)."""
        actions = [LeadItem.claim_token.set(token), LeadItem.claim_until.set((now + hold).timestamp())]
        condition = LeadItem.due_bucket.exists() & (
            LeadItem.claim_until.does_not_exist() | (LeadItem.claim_until < now.timestamp())
        )
        if verdict is not None:
            actions.append(LeadItem.verdict_pending.set(verdict))
            condition &= LeadItem.verdict_pending.does_not_exist() | (LeadItem.verdict_pending == verdict)
        return update_if(LeadItem(state.tenant, state.entity.key), actions, condition)

    def release(self, state: LeadState, token: str) -> None:
        update_if(
            LeadItem(state.tenant, state.entity.key),
            [LeadItem.claim_token.remove(), LeadItem.claim_until.remove()],
            LeadItem.claim_token == token,
        )

    def close_verdict(
        self, state: LeadState, verdict: str, token: str, now: datetime, day: str, manager: str
    ) -> bool:
        """Count the card for its manager and mark it done, only if this sweep still holds it.

        Up to three conditional writes, no read and no transaction (which costs double):
        the verdict is first pinned on the card under the claim, then counted (the
        counter remembers which cards it counted), then the card is closed. A sweep
        that dies in between leaves the card due with its pinned verdict; the next
        sweep finishes the job with that same verdict and counts it once. A card whose
        state shows this verdict pinned already (by the claim, or by a sweep that died)
        is not pinned again: whichever sweep counts it counts that verdict, once.
        """
        lead = LeadItem(state.tenant, state.entity.key)
        held = (LeadItem.claim_token == token) & LeadItem.verdict.does_not_exist()
        if state.pending_verdict != verdict and not update_if(
            lead, [LeadItem.verdict_pending.set(verdict)], held
        ):
            return False  # not (or no longer) this sweep's card: it must not count it either
        counter = StateItem(state.tenant, f"stats#timeliness#{day}#{manager}")
        field = StateItem.on_time if verdict == "on_time" else StateItem.late
        update_if(
            counter,
            [
                field.add(1),
                StateItem.counted.add({state.entity.key}),
                self._expiry(state.tenant, state.created_at),
            ],
            ~StateItem.counted.contains(state.entity.key),
        )
        return update_if(
            lead,
            [
                LeadItem.verdict.set(verdict),
                LeadItem.verdict_at.set(now.timestamp()),
                LeadItem.due_bucket.remove(),
                LeadItem.claim_token.remove(),
                LeadItem.claim_until.remove(),
                LeadItem.verdict_pending.remove(),
            ],
            held,
        )

    def close_deleted(self, state: LeadState, now: datetime) -> bool:
        """The card is gone from the CRM: nothing to judge or plan, stop watching it. A verdict it
        already has stays (it was judged while it existed); a card leadwatch never stored stays
        unstored. False when it was closed as deleted before (or never stored)."""
        return update_if(
            LeadItem(state.tenant, state.entity.key),
            [
                LeadItem.verdict.set(LeadItem.verdict | DELETED),
                LeadItem.verdict_at.set(LeadItem.verdict_at | now.timestamp()),
                LeadItem.deleted_at.set(now.timestamp()),
                LeadItem.due_bucket.remove(),
                LeadItem.plan_bucket.remove(),
                LeadItem.claim_token.remove(),
                LeadItem.claim_until.remove(),
            ],
            LeadItem.entity.exists() & LeadItem.deleted_at.does_not_exist(),
        )

    # ----- effect ledger
    ledger = EffectLedger(LEDGER_TTL)  # claims, confirmations, releases: leadwatch.store.ledger

    def effects_done(self, tenant: str, effect_ids: Iterable[str]) -> set[str]:
        """Settled effects: done, or unconfirmed (attempted with an unknown outcome; never retried)."""
        return self.ledger.done(tenant, effect_ids)

    def mark_effects(self, tenant: str, effect_ids: Iterable[str], now: datetime) -> None:
        """Record effects as done without claiming them (the executor claims; see EffectLedger)."""
        self.ledger.mark_done(tenant, effect_ids, now)

    # ----- journal
    def put_violation(self, tenant: str, violation: Violation, now: datetime) -> bool:
        """Record a violation once; False when it was already in the journal."""
        item = JournalItem(
            tenant,
            f"{violation.occurred_at.astimezone(UTC).isoformat()}#{violation.violation_id}",
            violation_id=violation.violation_id,
            type=violation.type,
            entity=violation.entity.key,
            manager=violation.manager,
            occurred_at=violation.occurred_at.timestamp(),
            recorded_at=now.timestamp(),
            details=json.dumps(violation.details, ensure_ascii=False, default=str),
            expires_at=violation.occurred_at + self.retention(tenant),
        )
        return put_once(item, JournalItem.key.does_not_exist())

    def violations(
        self,
        tenant: str,
        start: datetime,
        end: datetime,
        type: str | Collection[str] | None = None,
        manager: str | None = None,
        limit: int | None = None,
    ) -> list[JournalRow]:
        """One Query over the period's key range, the filters as its FilterExpression: DynamoDB
        bills the rows the range holds (0.5 read unit per 4 KB, eventually consistent) whatever
        the filter keeps, and sends back only those kept. An index per manager would save reads
        only on journals far larger than a person reads, and cost a write per row."""
        if limit is not None and limit <= 0:
            return []
        lower = start.astimezone(UTC).isoformat()
        upper = end.astimezone(UTC).isoformat() + "\uffff"
        types = sorted({type} if isinstance(type, str) else set(type or ()))
        condition: Condition | None = JournalItem.type.is_in(*types) if types else None
        if manager is not None:
            same = JournalItem.manager == manager
            condition = same if condition is None else condition & same
        rows: list[JournalRow] = []
        for item in JournalItem.query(
            tenant, JournalItem.key.between(lower, upper), filter_condition=condition
        ):
            rows.append(
                JournalRow(
                    item.violation_id,
                    item.type,
                    item.entity,
                    item.manager,
                    _at(item.occurred_at),
                    json.loads(item.details or "{}"),
                )
            )
            if limit is not None and len(rows) >= limit:
                break
        return rows

    # ----- checkpoints and statistics
    def get_checkpoint(self, tenant: str, name: str) -> str | None:
        try:
            return StateItem.get(tenant, f"checkpoint#{name}").value
        except StateItem.DoesNotExist:
            return None

    def set_checkpoint(self, tenant: str, name: str, value: str) -> None:
        StateItem(tenant, f"checkpoint#{name}", value=value).save()

    def timeliness_stats(self, tenant: str, first: date, last: date) -> list[StatRow]:
        lower = f"stats#timeliness#{first.isoformat()}"
        upper = f"stats#timeliness#{last.isoformat()}#\uffff"
        rows = []
        for item in StateItem.query(tenant, StateItem.key.between(lower, upper)):
            _, _, day, manager = item.key.split("#", 3)
            rows.append(StatRow(day, manager, int(item.on_time or 0), int(item.late or 0)))
        return rows

    # ----- the CRM's names (leadwatch.store.names): one item per tenant and kind
    def get_names(self, tenant: str, kind: str) -> NameList | None:
        """One GetItem (eventually consistent: a list a moment old serves as well)."""
        try:
            item = NamesItem.get(tenant, f"names#{kind}")
        except NamesItem.DoesNotExist:
            return None
        if item.read_at is None:
            return None  # only a refresh was claimed
        return load(item.data or "", _at(item.read_at), bool(item.truncated))

    def put_names(self, tenant: str, kind: str, names: NameList) -> bool:
        """One conditional UpdateItem: only over a list read earlier (or none)."""
        kept = bounded(names)
        read_at = kept.read_at.timestamp()
        return update_if(
            NamesItem(tenant, f"names#{kind}"),
            [
                NamesItem.data.set(dump(kept)),
                NamesItem.read_at.set(read_at),
                NamesItem.truncated.set(kept.truncated),
                NamesItem.expires_at.set(kept.read_at + KEEP),
            ],
            NamesItem.read_at.does_not_exist() | (NamesItem.read_at <= read_at),
        )

    def claim_names_refresh(self, tenant: str, kind: str, now: datetime, every: timedelta) -> bool:
        """One conditional UpdateItem on the list's item (made if absent, then expiring too)."""
        return update_if(
            NamesItem(tenant, f"names#{kind}"),
            [
                NamesItem.tried_at.set(now.timestamp()),
                NamesItem.expires_at.set(NamesItem.expires_at | (now + KEEP)),
            ],
            NamesItem.tried_at.does_not_exist() | (NamesItem.tried_at <= (now - every).timestamp()),
        )
