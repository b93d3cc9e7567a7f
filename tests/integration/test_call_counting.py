"""Counting calls in DynamoDB (moto's server over HTTP, served one request at a time as
atomically as DynamoDB): every attempt once, concurrently, whatever the number of paths. A card's
calls of a day are one item (leadwatch.store.calls), so every race here is over that item."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pytest

from leadwatch.cards import LeadState
from leadwatch.events import Call, EntityRef, EntityType
from leadwatch.store.dynamodb import Store

NOW = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)
DAY = date(2025, 11, 11)
LEAD = EntityRef(EntityType.LEAD, "42")
_T = TypeVar("_T")


@pytest.fixture(scope="module")
def store(moto_tables):
    return Store()


def _lead(store: Store, tenant: str, entity: EntityRef = LEAD) -> None:
    state = LeadState(tenant, entity, NOW, NOW + timedelta(minutes=15), "NEW", "7", title="Acme")
    store.create_lead(state, NOW, plan_day=DAY)


def _call(n: int, duration: int = 10, **extra) -> Call:
    return Call(
        key=f"act{n}",
        entity=extra.pop("entity", LEAD),
        direction="out",
        manager="7",
        started_at=NOW + timedelta(minutes=n),
        duration=duration,
        answered=True,
        **extra,
    )


def _race(n: int, work: Callable[[int], _T]) -> list[_T]:
    """`work(i)` for i in range(n), all threads released at once; a thread's failure fails the test."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    return results


def test_fifty_concurrent_calls_on_one_lead_count_fifty(store: Store) -> None:
    tenant = "concurrent"
    _lead(store, tenant)
    # 50 calls, every fifth a touch, each reported by two paths at once: all into one item.
    new = _race(
        100,
        lambda i: store.record_call(
            tenant, _call(i % 50, duration=40 if i % 5 == 0 else 5), DAY, i % 5 == 0, NOW
        ),
    )
    # Each call is new to one of its paths at most. At most: a request whose answer was lost and
    # was sent again (botocore's retry, as under this suite's load on moto's server) finds its own
    # call there and says known. Nothing counts by this answer; the counts below are the truth.
    assert sum(new) <= 50
    assert store.call_totals(tenant, [LEAD]) == {LEAD: (50, 10)}
    assert store.day_counts(tenant, DAY) == {LEAD: (50, 10)}
    assert len(store.calls_of(tenant, LEAD)) == 50
    assert len(store.touches_on(tenant, DAY)) == 10


def test_concurrent_reports_of_one_call_keep_the_most_any_told(store: Store) -> None:
    """Workers racing over one kept call, each with another duration, recording or touch: the
    longest duration wins whatever the order, a recording stays, the touch counts once."""
    tenant = "merging"
    _lead(store, tenant)
    for round_ in range(3):
        first = replace(_call(100 + round_, duration=1), answered=None)
        store.record_call(tenant, first, DAY, False, NOW)

        def report(i: int, first: Call = first) -> bool:
            told = replace(
                first,
                duration=10 + i,
                answered=i % 3 == 0,
                record_url=f"https://r/{i}" if i % 4 == 0 else None,
            )
            # Half of them bring what they read before (`known_calls`): already out of date.
            hint = {first.key: first} if i % 2 else None
            return store.record_calls(tenant, [(told, DAY, i % 2 == 0)], NOW, hint)[0]

        assert _race(20, report) == [False] * 20
        kept = store.known_call(tenant, LEAD, first.key)
        assert kept is not None and kept.duration == 29
        assert kept.answered is not None and kept.record_url in {f"https://r/{i}" for i in range(0, 20, 4)}
    assert store.day_counts(tenant, DAY) == {LEAD: (3, 3)}


def test_concurrent_batches_over_the_cards_of_a_day_count_each_call_once(store: Store) -> None:
    """Workers recording overlapping batches (several cards, two days) at once."""
    tenant = "batches"
    cards = [EntityRef(EntityType.LEAD, str(n)) for n in range(1, 4)]
    calls = [(_call(n, entity=cards[n % 3]), DAY + timedelta(days=n % 2), n % 4 == 0) for n in range(30)]

    def worker(i: int) -> list[bool]:
        mine = calls[i * 3 :] + calls[: i * 3]  # each its own order
        return store.record_calls(tenant, mine, NOW)

    results = _race(10, worker)
    assert sum(sum(r) for r in results) == 30
    totals = store.call_totals(tenant, cards)
    assert sum(a for a, _ in totals.values()) == 30
    assert sum(t for _, t in totals.values()) == 8
    per_day = [store.day_counts(tenant, DAY + timedelta(days=d)) for d in (0, 1)]
    assert sum(a for counts in per_day for a, _ in counts.values()) == 30


def test_the_same_call_by_every_path_and_again_counts_once(store: Store) -> None:
    tenant = "paths"
    _lead(store, tenant)
    activity = _call(1, duration=20, source="activity")  # the activity's times say 20 s
    telephony = replace(activity, duration=45, source="telephony")  # the telephony says 45 s
    statistic = replace(telephony, record_url="https://records.example/1.mp3", source="statistic")
    assert store.record_call(tenant, activity, DAY, False, NOW) is True
    assert store.record_call(tenant, telephony, DAY, True, NOW) is False
    assert store.record_call(tenant, statistic, DAY, True, NOW) is False
    assert store.record_call(tenant, statistic, DAY, True, NOW) is False  # a redelivery
    assert store.call_totals(tenant, [LEAD]) == {LEAD: (1, 1)}
    assert store.day_counts(tenant, DAY) == {LEAD: (1, 1)}
    [kept] = store.calls_of(tenant, LEAD)
    assert kept.duration == 45
    assert kept.record_url == "https://records.example/1.mp3"
    [touch] = store.touches_on(tenant, DAY)
    assert touch.key == "act1"
    # A shorter report of the same call later does not shorten it.
    store.record_call(tenant, replace(activity, duration=3), DAY, False, NOW)
    assert store.calls_of(tenant, LEAD)[0].duration == 45


def test_counts_are_per_day_and_per_tenant(store: Store) -> None:
    _lead(store, "a")
    _lead(store, "b")
    store.record_call("a", _call(1), DAY, False, NOW)
    store.record_call("a", _call(2), DAY + timedelta(days=1), False, NOW)
    store.record_call("b", _call(1), DAY, False, NOW)  # the same call key in another tenant
    assert store.day_counts("a", DAY) == {LEAD: (1, 0)}
    assert store.day_counts("a", DAY + timedelta(days=1)) == {LEAD: (1, 0)}
    assert store.call_totals("a", [LEAD]) == {LEAD: (2, 0)}
    assert store.call_totals("b", [LEAD]) == {LEAD: (1, 0)}
    assert [c.key for c in store.calls_of("b", LEAD)] == ["act1"]
    assert store.known_calls("a", [(LEAD, DAY, "act1"), (LEAD, DAY, "act9")]).keys() == {"act1"}


def test_the_plan_index_returns_the_cards_of_a_plan_day(store: Store) -> None:
    tenant = "plans"
    for n, day in ((1, DAY), (2, DAY), (3, DAY + timedelta(days=1))):
        state = LeadState(tenant, EntityRef(EntityType.LEAD, str(n)), NOW, NOW, "NEW", "7")
        store.create_lead(state, NOW, plan_day=day)
    found = store.plan_leads(tenant, [DAY])
    assert sorted(s.entity.id for _, s in found) == ["1", "2"]
    assert {d for d, _ in found} == {DAY}
    assert len(store.plan_leads(tenant, [DAY, DAY + timedelta(days=1)])) == 3
    assert store.plan_leads("another", [DAY]) == []
