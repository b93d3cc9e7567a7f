"""The CRM's names as the store keeps them (`StoreProtocol.get_names`, `put_names`,
`claim_names_refresh`), run against both stores: in memory and DynamoDB on in-process moto."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from leadwatch.store.dynamodb import Store
from leadwatch.store.interface import StoreProtocol
from leadwatch.store.memory import MemoryStore
from leadwatch.store.names import MAX_BYTES, MAX_NAME_CHARS, STAGES, USERS, NameList, dump

NOW = datetime(2025, 11, 11, 8, 0, 0, 500000, tzinfo=UTC)
EVERY = timedelta(minutes=10)


@pytest.fixture(params=["memory", "dynamodb"])
def store(request) -> StoreProtocol:
    if request.param == "memory":
        return MemoryStore()
    request.getfixturevalue("aws")  # moto with the tables of infra/resources.yaml
    return Store()


def test_nothing_stored_reads_none(store):
    assert store.get_names("t1", USERS) is None


def test_a_list_reads_back_whole_per_tenant_and_kind(store):
    users = NameList({"9120031": "Анна Петрова", "7": "O'Brien & <Sons>"}, NOW)
    stages = NameList({"deal:C1:NEW": "Новая"}, NOW, {"deal:C1:NEW": "Опт"})
    assert store.put_names("t1", USERS, users)
    assert store.put_names("t1", STAGES, stages)
    got = store.get_names("t1", USERS)
    assert got == NameList(users.names, NOW, {}, False)
    assert list(got.names) == ["9120031", "7"]  # the CRM's order is kept
    assert got.read_at.tzinfo is not None
    assert store.get_names("t1", STAGES) == stages
    assert store.get_names("t2", USERS) is None


def test_a_list_read_earlier_does_not_overwrite_a_later_one(store):
    assert store.put_names("t1", USERS, NameList({"1": "New"}, NOW))
    assert not store.put_names("t1", USERS, NameList({"1": "Old"}, NOW - timedelta(minutes=1)))
    assert store.put_names("t1", USERS, NameList({"1": "Same moment"}, NOW))
    assert store.get_names("t1", USERS).names == {"1": "Same moment"}


def test_a_refresh_is_claimed_once_per_interval_per_tenant_and_kind(store):
    assert store.claim_names_refresh("t1", USERS, NOW, EVERY)
    assert not store.claim_names_refresh("t1", USERS, NOW + timedelta(minutes=9), EVERY)
    assert store.claim_names_refresh("t1", STAGES, NOW, EVERY)
    assert store.claim_names_refresh("t2", USERS, NOW, EVERY)
    assert store.get_names("t1", USERS) is None  # a claim alone is no list
    assert store.claim_names_refresh("t1", USERS, NOW + EVERY, EVERY)


def test_storing_a_list_keeps_its_claim_and_a_claim_keeps_the_list(store):
    assert store.claim_names_refresh("t1", USERS, NOW, EVERY)
    store.put_names("t1", USERS, NameList({"1": "A"}, NOW))
    assert not store.claim_names_refresh("t1", USERS, NOW + timedelta(minutes=1), EVERY)
    assert store.claim_names_refresh("t1", USERS, NOW + EVERY, EVERY)
    assert store.get_names("t1", USERS).names == {"1": "A"}


def test_a_list_past_the_item_bound_is_cut_and_says_so(store):
    # 20,000 users of 40-odd characters each: far past what one DynamoDB item holds.
    many = {str(9_000_000 + n): f"Сотрудник номер {n} Длиннофамильный" for n in range(20_000)}
    long_name = "Я" * (MAX_NAME_CHARS + 50)
    assert store.put_names("t1", USERS, NameList({"1": long_name, **many}, NOW))
    got = store.get_names("t1", USERS)
    assert got.truncated
    assert got.names["1"] == "Я" * (MAX_NAME_CHARS - 1) + "…"
    assert 3_000 < len(got.names) < 20_000
    assert list(got.names)[1:4] == ["9000000", "9000001", "9000002"]  # the first ones are kept
    assert len(dump(got).encode()) <= MAX_BYTES
    small = NameList({"1": "A"}, NOW + timedelta(hours=1))
    store.put_names("t1", USERS, small)
    assert store.get_names("t1", USERS) == small


def test_dynamodb_keeps_one_item_per_tenant_and_kind_that_expires(store):
    if isinstance(store, MemoryStore):
        pytest.skip("the item and its TTL are DynamoDB's")
    from leadwatch.store.models import NamesItem

    store.claim_names_refresh("t1", USERS, NOW, EVERY)
    store.put_names("t1", USERS, NameList({"1": "A"}, NOW, {}))
    item = NamesItem.get("t1", "names#users")
    assert json.loads(item.data) == {"n": {"1": "A"}, "p": {}}
    assert item.expires_at > NOW + timedelta(days=60)
    assert [i.key for i in NamesItem.query("t1")] == ["names#users"]
