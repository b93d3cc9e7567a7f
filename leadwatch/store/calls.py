"""A card's calls in DynamoDB: one item per local day and card, `calls#<day>#<card>`, in the
state table (model `CallDayItem`).

Why one item per card-day: a call used to cost a call row, a touch row, a day counter and two
counters on the card, each a write of its own (about 29 write units a lead). Here a new call is
one UpdateItem of its card-day item, whatever paths report it, and the day's attempts and touches
are read off the item (its calls, and those flagged as touches) rather than counted beside it.

- Each call is a top-level map attribute `c#<call key>` (fields below), set with
  `if_not_exists`: a call already in the item changes nothing (a redelivery, another path, a
  retry), so concurrent reports of one call add it once and concurrent calls all land, with no
  condition that could fail. A map attribute holding all calls could not be used: a call can be
  set inside a map only once the map exists, which would take a failed write (or a read) on
  every card's first call of a day. The update returns the item as it was (ALL_OLD, free of
  read units): a call not in it was new.
- What a later report tells more (a longer duration, a recording, whether it was answered, that
  it is a touch) is merged into the kept call by a second UpdateItem, only then: the longest
  duration under a condition (a concurrent longer report wins), the rest set if absent.
- Keys: day first, `calls#<day>#<card>`, so a day's calls (the daily report) are one Query of
  the base table (begins_with `calls#<day>#`) and no index is written: a sparse day index cost a
  write of its own for every card's first call of a day (3.4 write units a lead). A card's calls
  are read over the days it can have calls on: from two days before it arrived (its `created_at`
  as a UTC day, less one day for any time zone and one for a call logged a moment before the
  card across midnight) to the tenant's latest day with calls (one Query of one key), one
  BatchGetItem of its card-days; the totals of many cards are one Query of the tenant's days
  over their spans. A card leadwatch does not hold is read from the tenant's first day with
  calls. A call kept on a day before that span (a call logged by hand into the past, before the
  card existed) counts on its day but not on the card.
- The card row holds no call counters (they wrote the card on every call and their sets of
  counted calls grew it past 1 KB, doubling every later write of the card): a card's totals are
  counted from its items (`totals`), by call key, so a call reported on two days (its paths
  disagreeing about its start around midnight) counts on each day but once on the card.
- Expiry: an item goes the tenant's retention after its day's first call (`expires_at`, set
  once), as the call rows did after their call.
- Rows of older releases (`calls#<card>#<day>`, whose card key starts with a letter) are never
  read: every read here stays between `calls#0` and `calls#9~`, the keys that start with a day.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.operand import Path, Value

from leadwatch.events import Call, EntityRef
from leadwatch.store.conditions import update_if
from leadwatch.store.models import CALL_PREFIX, CallDayItem, LeadItem

# Calls set by one UpdateItem at most: keeps its expression far below DynamoDB's 4 KB.
MAX_CALLS_PER_WRITE = 25
# Merges lost to a concurrent longer report before giving up (the message is then retried).
MERGE_TRIES = 10

# A kept call's fields, by the short names its map uses (attribute names count in an item's
# size, and so in every write of it).
_DIRECTION, _MANAGER, _STARTED, _DURATION = "d", "m", "s", "l"
_ANSWERED, _RECORD, _SOURCE, _ACTIVITY, _TOUCH = "a", "r", "o", "i", "t"


@dataclass(frozen=True)
class KeptCall:
    """A call as leadwatch keeps it, with whether it counts as a successful touch."""

    call: Call
    touch: bool


def card_day_key(entity: EntityRef, day: date) -> str:
    return f"{day_prefix(day)}{entity.key}"


def day_prefix(day: date) -> str:
    return f"calls#{day.isoformat()}#"


def key_parts(key: str) -> tuple[date, EntityRef]:
    """The day and the card of a card-day key."""
    _, day, entity = key.split("#", 2)
    return date.fromisoformat(day), EntityRef.parse(entity)


# Every card-day key lies between these (a day starts with a digit); rows of older releases
# (`calls#<card>#<day>`) do not.
FIRST_KEY, LAST_KEY = "calls#0", "calls#9~"


def first_call_day(created_at: datetime) -> date:
    """The first local day a card's calls are looked for on (see the module docstring)."""
    return created_at.astimezone(UTC).date() - timedelta(days=2)


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def merged(kept: Call, call: Call) -> Call:
    """What another report of a kept call adds: the longest duration, the first recording, the
    first word on answering; everything else stays as first told."""
    return replace(
        kept,
        record_url=kept.record_url or call.record_url,
        answered=call.answered if kept.answered is None else kept.answered,
        duration=max(kept.duration, call.duration),
    )


def _attribute(call_key: str) -> str:
    # A document path segment may not hold brackets (PynamoDB reads them as list indexes).
    return CALL_PREFIX + call_key.replace("%", "%25").replace("[", "%5B").replace("]", "%5D")


def _call_key(name: str) -> str:
    return name.replace("%5D", "]").replace("%5B", "[").replace("%25", "%")


def _number(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _entry(call: Call, touch: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {
        _DIRECTION: {"S": call.direction},
        _STARTED: _number(call.started_at.timestamp()),
        _DURATION: _number(call.duration),
    }
    optional = {
        _MANAGER: call.manager,
        _RECORD: call.record_url,
        _SOURCE: call.source or None,
        _ACTIVITY: call.activity_id,
    }
    fields.update({name: {"S": value} for name, value in optional.items() if value})
    if call.answered is not None:
        fields[_ANSWERED] = {"BOOL": call.answered}
    if touch:
        fields[_TOUCH] = {"BOOL": True}
    return {"M": fields}


def _kept(entity: str, call_key: str, raw: dict[str, Any]) -> KeptCall:
    def text(name: str) -> str | None:
        value = raw.get(name)
        return None if value is None else value["S"]

    answered = raw.get(_ANSWERED)
    call = Call(
        key=call_key,
        entity=EntityRef.parse(entity),
        direction=raw[_DIRECTION]["S"],
        manager=text(_MANAGER),
        started_at=datetime.fromtimestamp(float(raw[_STARTED]["N"]), UTC),
        duration=int(float(raw[_DURATION]["N"])),
        answered=None if answered is None else bool(answered["BOOL"]),
        record_url=text(_RECORD),
        activity_id=text(_ACTIVITY),
        source=text(_SOURCE) or "",
    )
    return KeptCall(call, bool(raw.get(_TOUCH, {}).get("BOOL")))


def _calls_of(item: CallDayItem) -> dict[str, KeptCall]:
    entity = key_parts(item.key)[1].key
    return {_call_key(name): _kept(entity, _call_key(name), raw) for name, raw in item.calls.items()}


class CallDays:
    """The card-day items of every tenant. `retention(tenant)` says how long a day's calls stay."""

    def __init__(self, retention: Callable[[str], timedelta]):
        self.retention = retention

    # ----- writes
    def record(
        self, tenant: str, calls: Sequence[tuple[Call, date, bool]], kept: Mapping[str, Call] | None = None
    ) -> list[bool]:
        """Keep each (call, its local day, whether it is a touch); for each, whether it was new on
        its day. One UpdateItem per card-day, and a second only to merge what a known call tells
        more; a call found in `kept` (what `known` returned for these calls) is merged into its
        entry in one write instead. The same call twice in `calls` is merged first and is new at
        most once."""
        kept = kept or {}
        new = [False] * len(calls)
        groups: dict[tuple[str, date], dict[str, tuple[int, Call, bool]]] = {}
        for index, (call, day, touch) in enumerate(calls):
            assert call.entity is not None, "a call is recorded on its card"
            group = groups.setdefault((call.entity.key, day), {})
            have = group.get(call.key)
            if have is None:
                group[call.key] = (index, call, touch)
            else:
                group[call.key] = (have[0], merged(have[1], call), have[2] or touch)
        for (entity_key, day), group in groups.items():
            entity = EntityRef.parse(entity_key)
            reports = list(group.values())
            for start in range(0, len(reports), MAX_CALLS_PER_WRITE):
                chunk = reports[start : start + MAX_CALLS_PER_WRITE]
                hinted = {
                    call.key: KeptCall(kept[call.key], False)  # a touch flag set again changes nothing
                    for _, call, _ in chunk
                    if call.key in kept and kept[call.key].entity == entity
                }
                missing: set[str] = set()
                if hinted:
                    told = [(c, t) for _, c, t in chunk if c.key in hinted]
                    missing = self._merge(tenant, card_day_key(entity, day), told, hinted)
                plain = [(i, c, t) for i, c, t in chunk if c.key not in hinted or c.key in missing]
                if plain:
                    fresh = self._add(tenant, entity, day, [(c, t) for _, c, t in plain])
                    for (index, _, _), is_new in zip(plain, fresh, strict=True):
                        new[index] = is_new
        return new

    def _add(self, tenant: str, entity: EntityRef, day: date, reports: list[tuple[Call, bool]]) -> list[bool]:
        key = card_day_key(entity, day)
        first = min(call.started_at for call, _ in reports)
        expires = int((first + self.retention(tenant)).timestamp())
        actions = [Path(["expires_at"]).set(Path(["expires_at"]) | Value({"N": str(expires)}))]
        for call, touch in reports:
            name = _attribute(call.key)
            actions.append(Path([name]).set(Path([name]) | Value(_entry(call, touch))))
        # No condition: if_not_exists leaves every call already there as it is.
        answer = CallDayItem._get_connection().update_item(
            tenant, range_key=key, actions=actions, return_values="ALL_OLD"
        )
        before = answer.get("Attributes") or {}
        known = {
            call.key: _kept(entity.key, call.key, before[_attribute(call.key)]["M"])
            for call, _ in reports
            if _attribute(call.key) in before
        }
        if known:
            self._merge(tenant, key, [(c, t) for c, t in reports if c.key in known], known)
        return [call.key not in known for call, _ in reports]

    def _merge(
        self, tenant: str, key: str, reports: list[tuple[Call, bool]], known: dict[str, KeptCall]
    ) -> set[str]:
        """Add to kept calls (`known`: as last read) what these reports tell more; re-read and
        retry when the item is not as read (a concurrent report lengthened a call first). Returns
        the keys of the calls the item turned out not to hold."""
        missing: set[str] = set()
        for _ in range(MERGE_TRIES):
            actions: list[Any] = []
            condition: Any = None
            for call, touch in reports:
                kept = known.get(call.key)
                if kept is None:
                    missing.add(call.key)
                    continue
                entry = Path([_attribute(call.key)])
                mine: list[Any] = []
                # The entry must still be there (a path inside a missing map cannot be set).
                needs: list[Condition] = [entry.exists()]
                if call.duration > kept.call.duration:
                    mine.append(entry[_DURATION].set(Value(_number(call.duration))))
                    needs.append(entry[_DURATION] < Value(_number(call.duration)))
                if call.record_url and not kept.call.record_url:
                    mine.append(entry[_RECORD].set(entry[_RECORD] | Value({"S": call.record_url})))
                if call.answered is not None and kept.call.answered is None:
                    mine.append(entry[_ANSWERED].set(entry[_ANSWERED] | Value({"BOOL": call.answered})))
                if touch and not kept.touch:
                    mine.append(entry[_TOUCH].set(Value({"BOOL": True})))
                if mine:
                    actions += mine
                    for need in needs:
                        condition = need if condition is None else condition & need
            if not actions or update_if(CallDayItem(tenant, key), actions, condition):
                return missing
            try:
                known = _calls_of(CallDayItem.get(tenant, key, consistent_read=True))
            except CallDayItem.DoesNotExist:
                known = {}
        raise RuntimeError(f"{tenant}: calls of {key} kept changing under the merge; retry")

    def add_recording(self, tenant: str, call: Call, day: date) -> None:
        """A recording learnt late, on a kept call that has none (an unknown call: nothing)."""
        assert call.entity is not None and call.record_url
        entry = Path([_attribute(call.key)])
        update_if(
            CallDayItem(tenant, card_day_key(call.entity, day)),
            [entry[_RECORD].set(Value({"S": call.record_url}))],
            entry.exists() & entry[_RECORD].does_not_exist(),
        )

    # ----- reads
    def known(self, tenant: str, wanted: Iterable[tuple[EntityRef, date, str]]) -> dict[str, Call]:
        """The kept calls among (card, local day, call key), by call key: one BatchGetItem (per
        100 card-days)."""
        keys: dict[str, set[str]] = {}
        for entity, day, call_key in wanted:
            keys.setdefault(card_day_key(entity, day), set()).add(call_key)
        if not keys:
            return {}
        found: dict[str, Call] = {}
        for item in CallDayItem.batch_get([(tenant, key) for key in sorted(keys)]):
            for call_key, kept in _calls_of(item).items():
                if call_key in keys.get(item.key, ()):
                    found[call_key] = kept.call
        return found

    def of_card(self, tenant: str, entity: EntityRef) -> list[KeptCall]:
        """Every kept call on a card, by start then key; a call kept on two days once. Its
        card-days over its span (module docstring): one BatchGetItem per 100 days."""
        spans = self._spans(tenant, [entity])
        if entity not in spans:
            return []
        first, last = spans[entity]
        items = CallDayItem.batch_get([(tenant, card_day_key(entity, d)) for d in days_between(first, last)])
        return _by_card(items).get(entity, [])

    def totals(self, tenant: str, entities: Iterable[EntityRef]) -> dict[EntityRef, tuple[int, int]]:
        """(attempts, touches) per card over all its days: one Query of the tenant's card-days
        over the cards' spans (a BatchGetItem of the card-days where that reads fewer items)."""
        wanted = set(entities)
        found: dict[EntityRef, list[KeptCall]] = {}
        spans = self._spans(tenant, wanted)
        if spans:
            first = min(f for f, _ in spans.values())
            last = max(last for _, last in spans.values())
            keys = [
                (tenant, card_day_key(entity, d))
                for entity, (start, end) in spans.items()
                for d in days_between(start, end)
            ]
            if len(keys) <= _BATCH_GET_KEYS:
                found = _by_card(CallDayItem.batch_get(keys))
            else:
                query = CallDayItem.key.between(day_prefix(first), day_prefix(last) + "~")
                found = _by_card(item for item in CallDayItem.query(tenant, query) if _card(item) in wanted)
        return {entity: _counts(found.get(entity, [])) for entity in sorted(wanted)}

    def of_day(self, tenant: str, day: date) -> dict[EntityRef, list[KeptCall]]:
        """Each card's kept calls of a local day: one Query (begins_with `calls#<day>#`)."""
        found = {}
        for item in CallDayItem.query(tenant, CallDayItem.key.startswith(day_prefix(day))):
            calls = _calls_of(item)
            if calls:
                found[_card(item)] = list(calls.values())
        return found

    def _spans(self, tenant: str, entities: Iterable[EntityRef]) -> dict[EntityRef, tuple[date, date]]:
        """The days each card's calls are looked for on: none when the tenant has no calls."""
        wanted = sorted(set(entities))
        last = self._edge_day(tenant, latest=True)
        if not wanted or last is None:
            return {}
        arrived = {
            EntityRef.parse(item.entity): first_call_day(datetime.fromtimestamp(item.created_at, UTC))
            for item in LeadItem.batch_get(
                [(tenant, e.key) for e in wanted], attributes_to_get=["entity", "created_at"]
            )
        }
        earliest = None
        if any(e not in arrived for e in wanted):
            earliest = self._edge_day(tenant, latest=False)
        spans = {}
        for entity in wanted:
            first = arrived.get(entity, earliest)
            if first is not None and first <= last:
                spans[entity] = (first, last)
        return spans

    @staticmethod
    def _edge_day(tenant: str, *, latest: bool) -> date | None:
        """The tenant's first or latest day with calls: one Query of one key."""
        for item in CallDayItem.query(
            tenant,
            CallDayItem.key.between(FIRST_KEY, LAST_KEY),
            scan_index_forward=not latest,
            limit=1,
            attributes_to_get=["tenant", "key"],
        ):
            return key_parts(item.key)[0]
        return None


# Card-days read by key at most, beyond which reading the cards' days whole is the cheaper read
# (a key costs a read unit's half found or not; a Query, half a unit per 4 KB it reads).
_BATCH_GET_KEYS = 100


def _card(item: CallDayItem) -> EntityRef:
    return key_parts(item.key)[1]


def _counts(kept: list[KeptCall]) -> tuple[int, int]:
    return len(kept), sum(1 for k in kept if k.touch)


def _by_card(items: Iterable[CallDayItem]) -> dict[EntityRef, list[KeptCall]]:
    """Each card's kept calls over these items, by start then key; a call on two days once."""
    found: dict[EntityRef, dict[str, KeptCall]] = {}
    for item in items:
        calls = found.setdefault(_card(item), {})
        for call_key, kept in _calls_of(item).items():
            have = calls.get(call_key)
            calls[call_key] = (
                kept if have is None else KeptCall(merged(have.call, kept.call), have.touch or kept.touch)
            )
    return {
        entity: sorted(calls.values(), key=lambda k: (k.call.started_at, k.call.key))
        for entity, calls in found.items()
    }
