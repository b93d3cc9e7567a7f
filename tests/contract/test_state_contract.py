"""One contract for a process's state, run against both implementations: in memory (what
process unit tests and replays use) and DynamoDB (PynamoDB on in-process moto). Whatever a
process can observe through `leadwatch.state` must be the same on both."""

from __future__ import annotations

import threading

import pytest

from leadwatch.state import MemoryState, ProcessState, Record


@pytest.fixture(params=["memory", "dynamodb"])
def store(request):
    if request.param == "memory":
        yield MemoryState()
        return
    request.getfixturevalue("aws")  # moto with the tables of infra/resources.yaml
    from leadwatch.store.process_state import DynamoState

    yield DynamoState()


@pytest.fixture
def stale() -> list[str]:
    return []


@pytest.fixture
def state(store, stale) -> ProcessState:
    return ProcessState(store, "sources", on_stale=stale.append)


def test_create_writes_once_and_get_reads_it_back(state):
    assert state.get("t1", "lead:1") is None
    assert state.create("t1", "lead:1", {"source": "site", "n": [1, 2]})
    assert not state.create("t1", "lead:1", {"source": "other"})
    record = state.get("t1", "lead:1")
    assert record == Record("lead:1", {"source": "site", "n": [1, 2]}, 0, 1, None)


def test_tenants_and_namespaces_do_not_see_each_other(store, state):
    other = ProcessState(store, "other")
    state.create("t1", "k", {"a": 1})
    assert state.get("t2", "k") is None
    assert other.get("t1", "k") is None
    assert state.query("t2") == [] and other.query("t1") == []


def test_update_wins_only_over_the_version_it_read(state, stale):
    state.create("t1", "k", {"v": 1})
    first = state.get("t1", "k")
    assert state.update("t1", "k", {"v": 2}, first.version)
    assert not state.update("t1", "k", {"v": 3}, first.version)  # a stale snapshot loses
    assert state.get("t1", "k").value == {"v": 2}
    assert state.get("t1", "k").version == 2
    assert not state.update("t1", "missing", {"v": 1}, 1)
    assert stale == ["sources", "sources"]


def test_advance_never_goes_back_in_order(state, stale):
    assert state.advance("t1", "card", {"stage": "NEW"}, order=100.0)
    assert state.advance("t1", "card", {"stage": "JUNK"}, order=300.0)
    assert not state.advance("t1", "card", {"stage": "IN_WORK"}, order=200.0)  # reordered delivery
    assert state.advance("t1", "card", {"stage": "JUNK", "again": True}, order=300.0)  # same moment: kept
    record = state.get("t1", "card")
    assert record.value == {"stage": "JUNK", "again": True} and record.order == 300.0
    assert stale == ["sources"]


def test_count_adds_once_per_token(state):
    assert state.count("t1", "day#2025-11-10#site", once="lead:1")
    assert state.count("t1", "day#2025-11-10#site", once="lead:2", amount=2)
    assert not state.count("t1", "day#2025-11-10#site", once="lead:1")
    assert state.get("t1", "day#2025-11-10#site").count == 3


def test_query_by_prefix_in_key_order_and_get_many(state):
    for key in ("day#2025-11-11#b", "day#2025-11-10#a", "day#2025-11-10#c", "other"):
        state.create("t1", key, {"k": key})
    assert [r.key for r in state.query("t1", "day#2025-11-10#")] == ["day#2025-11-10#a", "day#2025-11-10#c"]
    assert [r.key for r in state.query("t1")] == sorted(
        ["day#2025-11-11#b", "day#2025-11-10#a", "day#2025-11-10#c", "other"]
    )
    assert set(state.get_many("t1", ["other", "day#2025-11-11#b", "nope"])) == {"other", "day#2025-11-11#b"}
    assert state.get_many("t1", []) == {}


def test_racing_counters_count_each_token_once():
    # Threads share the in-memory store; DynamoDB's conditions are tested racing over moto's
    # server (tests/integration/test_state_race.py): in-process moto does not lock items.
    state = ProcessState(MemoryState(), "sources")
    tokens = [f"lead:{i % 25}" for i in range(200)]
    threads = [threading.Thread(target=state.count, args=("t1", "k", token)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.get("t1", "k").count == 25


def test_delete_removes_only_at_the_version_read(state, stale):
    assert state.create("t1", "open:1", {"at": "x"})
    assert not state.delete("t1", "open:1", version=2)
    assert state.get("t1", "open:1") is not None
    assert state.delete("t1", "open:1", version=1)
    assert state.get("t1", "open:1") is None
    assert not state.delete("t1", "open:1")
    assert state.create("t1", "open:1", {"at": "y"})  # a new life after a delete
    assert state.delete("t1", "open:1")
    assert stale == []


def test_a_record_can_carry_an_expiry(state):
    from datetime import UTC, datetime

    later = datetime(2030, 1, 1, tzinfo=UTC)
    assert state.create("t1", "review:1", {"n": 1}, expires_at=later)
    assert state.update("t1", "review:1", {"n": 2}, version=1, expires_at=later)
    assert state.advance("t1", "review:1", {"n": 3}, order=5.0, expires_at=later)
    assert state.get("t1", "review:1").value == {"n": 3}


def test_the_memory_store_forgets_a_record_after_its_expiry():
    from datetime import UTC, datetime, timedelta

    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    state = ProcessState(MemoryState(clock=lambda: now[0]), "sources")
    state.create("t1", "a", {}, expires_at=now[0] + timedelta(days=1))
    state.create("t1", "b", {})
    now[0] += timedelta(days=2)
    assert [r.key for r in state.query("t1")] == ["b"]
