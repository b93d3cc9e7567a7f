"""Counting calls in DynamoDB (moto's server over HTTP, served one request at a time as
atomically as DynamoDB): every attempt once, concurrently, whatever the number of paths."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from leadwatch.cards import LeadState
from leadwatch.events import Call, EntityRef, EntityType
from leadwatch.store.dynamodb import Store

NOW = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)
DAY = date(2025, 11, 11)
LEAD = EntityRef(EntityType.LEAD, "42")


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


def test_fifty_concurrent_calls_on_one_lead_count_fifty(store: Store) -> None:
    tenant = "concurrent"
    _lead(store, tenant)
    barrier = threading.Barrier(50)
    errors: list[BaseException] = []

    def dial(n: int) -> None:
        try:
            barrier.wait()
            store.record_call(tenant, _call(n, duration=40 if n % 5 == 0 else 5), DAY, n % 5 == 0, NOW)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=dial, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    state = store.get_lead(tenant, LEAD)
    assert state is not None
    assert state.call_attempts == 50
    assert state.call_touches == 10
    assert store.day_counts(tenant, DAY) == {LEAD: (50, 10)}
    assert len(store.calls_of(tenant, LEAD)) == 50
    assert len(store.touches_on(tenant, DAY)) == 10


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
    state = store.get_lead(tenant, LEAD)
    assert state is not None and (state.call_attempts, state.call_touches) == (1, 1)
    assert store.day_counts(tenant, DAY) == {LEAD: (1, 1)}
    [kept] = store.calls_of(tenant, LEAD)
    assert kept.duration == 45
    assert kept.record_url == "https://records.example/1.mp3"
    [touch] = store.touches_on(tenant, DAY)
    assert touch.key == "act1"
    # A shorter report of the same call later does not shorten it.
    store.record_call(tenant, replace(activity, duration=3), DAY, False, NOW)
    assert store.calls_of(tenant, LEAD)[0].duration == 45


def test_a_retry_after_a_crash_between_writes_completes_the_count(store: Store) -> None:
    """Counted, then the process died before the call's own row (written last, so a call held is
    a call counted): the retry counts nothing again and writes the row."""
    from leadwatch.store.models import CallItem

    tenant = "crash"
    _lead(store, tenant)
    call = _call(7)
    assert store.record_call(tenant, call, DAY, False, NOW) is True
    CallItem(tenant, f"call#{LEAD.key}#{call.key}").delete()  # as if the last write never happened
    assert store.known_calls(tenant, [(LEAD, call.key)]) == {}
    assert store.record_call(tenant, call, DAY, False, NOW) is True
    assert store.record_call(tenant, call, DAY, False, NOW) is False
    state = store.get_lead(tenant, LEAD)
    assert state is not None and state.call_attempts == 1
    assert store.day_counts(tenant, DAY) == {LEAD: (1, 0)}
    assert store.known_calls(tenant, [(LEAD, call.key)]).keys() == {call.key}


def test_counts_are_per_day_and_per_tenant(store: Store) -> None:
    _lead(store, "a")
    _lead(store, "b")
    store.record_call("a", _call(1), DAY, False, NOW)
    store.record_call("a", _call(2), DAY + timedelta(days=1), False, NOW)
    store.record_call("b", _call(1), DAY, False, NOW)  # the same call key in another tenant
    assert store.day_counts("a", DAY) == {LEAD: (1, 0)}
    assert store.day_counts("a", DAY + timedelta(days=1)) == {LEAD: (1, 0)}
    assert store.get_lead("a", LEAD).call_attempts == 2  # type: ignore[union-attr]
    assert store.get_lead("b", LEAD).call_attempts == 1  # type: ignore[union-attr]
    assert [c.key for c in store.calls_of("b", LEAD)] == ["act1"]
    assert store.known_calls("a", [(LEAD, "act1"), (LEAD, "act9")]).keys() == {"act1"}


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
