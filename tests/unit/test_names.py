"""Names (leadwatch.names) on the memory store with a stand-in adapter: the tenant file's map wins,
lists are cached in the store and the container, a miss refreshes at most once per interval in the
whole deployment, a CRM that fails leaves ids readable, and a list past its TTL is read again."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest

from crm_adapters.base import CrmRejected, CrmUnavailable, StageName
from leadwatch.events import EntityType
from leadwatch.names import Names, cached_only
from leadwatch.store.memory import MemoryStore
from leadwatch.store.names import STAGES, USERS, NameList

T0 = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Crm:
    """What Names reads, counting the reads; `fail` makes the next reads raise it."""

    def __init__(self) -> None:
        self.users = {"9120031": "Анна Петрова", "7": "O'Brien & <Sons>"}
        self.stages = {
            "lead:NEW": StageName("Не разобран"),
            "deal:NEW": StageName("Новая сделка", "Общая"),
            "deal:C1:NEW": StageName("Новая", "Опт"),
            "lead:142": StageName("Успешно реализовано"),
        }
        self.reads: list[str] = []
        self.fail: Exception | None = None
        self._lock = threading.Lock()

    def list_users(self) -> dict[str, str]:
        with self._lock:
            self.reads.append(USERS)
        if self.fail is not None:
            raise self.fail
        return dict(self.users)

    def list_stages(self) -> dict[str, StageName]:
        with self._lock:
            self.reads.append(STAGES)
        if self.fail is not None:
            raise self.fail
        return dict(self.stages)


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.claims = 0
        self.broken = False

    def get_names(self, tenant, kind):
        self.gets += 1
        if self.broken:
            raise RuntimeError("DynamoDB is down")
        return super().get_names(tenant, kind)

    def claim_names_refresh(self, tenant, kind, now, every):
        self.claims += 1
        return super().claim_names_refresh(tenant, kind, now, every)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def crm() -> Crm:
    return Crm()


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


def names_of(store, crm, clock, **options) -> Names:
    """One container's Names for tenant t1."""
    return Names("t1", store, lambda: crm, clock, **options)


def test_the_tenant_files_map_wins_and_costs_nothing(store, crm, clock):
    names = names_of(store, crm, clock, managers={"7": "Anna from the file"})
    assert names.manager("7") == "Anna from the file"
    assert names.manager(None) == "unassigned"
    assert crm.reads == [] and store.gets == 0


def test_a_name_comes_from_the_crm_once_then_from_the_container(store, crm, clock):
    names = names_of(store, crm, clock)
    assert names.manager("9120031") == "Анна Петрова"
    assert names.manager("7") == "O'Brien & <Sons>"  # as the CRM has it: escaping is the renderer's
    clock.advance(hours=23)
    assert names.manager("9120031") == "Анна Петрова"
    assert crm.reads == [USERS] and store.gets == 1


def test_a_cold_container_reads_the_store_not_the_crm(store, crm, clock):
    names_of(store, crm, clock).manager("7")
    clock.advance(minutes=30)
    other = names_of(store, crm, clock)
    assert other.manager("9120031") == "Анна Петрова"
    assert crm.reads == [USERS]


def test_stages_by_entity_type_with_their_pipelines(store, crm, clock):
    names = names_of(store, crm, clock)
    assert names.stage("NEW") == "Не разобран"
    assert names.stage("NEW", EntityType.DEAL) == "Новая сделка"
    assert names.stage("C1:NEW", EntityType.DEAL) == "Новая"
    assert names.pipeline("C1:NEW", EntityType.DEAL) == "Опт"
    assert names.pipeline("NEW") is None and names.pipeline("142") is None
    assert names.stage(None) == "no stage" and names.pipeline(None) is None
    assert crm.reads == [STAGES]


def test_a_miss_reads_the_crm_once_the_list_is_older_than_the_interval(store, crm, clock):
    names = names_of(store, crm, clock)
    assert names.manager("7") == "O'Brien & <Sons>"
    crm.users["555"] = "Новый Сотрудник"
    # Just read: an id missing from it is not in the CRM either, for now.
    assert names.manager("555") == "user 555"
    clock.advance(minutes=10)
    assert names.manager("555") == "Новый Сотрудник"
    assert names.manager("9120031") == "Анна Петрова"
    assert crm.reads == [USERS, USERS]


def test_a_storm_of_misses_reads_the_crm_once_per_interval(store, crm, clock):
    names = names_of(store, crm, clock)
    for n in range(3600):  # an unknown id every second for an hour
        assert names.stage(str(61_234_501 + n)) == f"stage {61_234_501 + n}"
        clock.advance(seconds=1)
    assert crm.reads.count(STAGES) <= 1 + 6
    assert store.gets <= 1 + 6


def test_many_containers_missing_together_read_the_crm_once_per_interval(store, crm, clock):
    containers = [names_of(store, crm, clock) for _ in range(8)]
    containers[0].manager("7")
    for minute in range(60):
        for n, names in enumerate(containers):
            names.manager(f"{1000 + minute * 10 + n}")
        clock.advance(minutes=1)
    assert crm.reads.count(USERS) <= 1 + 6


def test_a_crm_that_fails_leaves_ids_readable_and_is_tried_again_later(store, crm, clock, caplog):
    caplog.set_level(logging.WARNING, logger="leadwatch.names")
    crm.fail = CrmUnavailable("Bitrix24 HTTP 503")
    names = names_of(store, crm, clock)
    assert names.manager("9120031") == "user 9120031"
    assert names.stage("61234501") == "stage 61234501"
    assert names.manager("7") == "user 7"  # within the interval: not asked again
    assert crm.reads == [USERS, STAGES]
    assert "cannot read the CRM's users names" in caplog.text
    crm.fail = None
    clock.advance(minutes=10)
    assert names.manager("9120031") == "Анна Петрова"


def test_a_refusal_and_a_broken_store_fall_back_too(store, crm, clock):
    crm.fail = CrmRejected("amoCRM HTTP 403 Forbidden")
    assert names_of(store, crm, clock).manager("7") == "user 7"
    store.broken = True
    crm.fail = None
    assert names_of(store, crm, clock).manager("7") == "user 7"


def test_a_list_past_its_ttl_is_read_again(store, crm, clock):
    names = names_of(store, crm, clock)
    assert names.manager("7") == "O'Brien & <Sons>"
    crm.users["7"] = "Renamed"
    clock.advance(hours=23, minutes=59)
    assert names.manager("7") == "O'Brien & <Sons>"
    clock.advance(minutes=1)
    assert names.manager("7") == "Renamed"
    assert crm.reads == [USERS, USERS]
    assert store.get_names("t1", USERS).read_at == clock()


def test_a_stale_list_serves_while_the_crm_cannot_be_read(store, crm, clock):
    names = names_of(store, crm, clock, ttl=timedelta(hours=1))
    names.manager("7")
    crm.fail = CrmUnavailable("timeout")
    clock.advance(hours=2)
    assert names.manager("7") == "O'Brien & <Sons>"
    assert crm.reads == [USERS, USERS]


def test_a_newer_list_another_container_stored_is_taken_from_the_store(store, crm, clock):
    first = names_of(store, crm, clock)
    first.manager("7")
    clock.advance(minutes=20)
    crm.users["555"] = "Новый Сотрудник"
    second = names_of(store, crm, clock)
    assert second.manager("555") == "Новый Сотрудник"  # its own read: the stored list lacked 555
    assert first.manager("555") == "Новый Сотрудник"  # the store has it now: no CRM read
    assert crm.reads == [USERS, USERS]


def test_cached_only_reads_the_store_and_never_the_crm(store, crm, clock):
    with cached_only():
        assert names_of(store, crm, clock).manager("7") == "user 7"
    assert crm.reads == [] and store.claims == 0
    names_of(store, crm, clock).manager("7")  # a worker caches the list
    clock.advance(minutes=15)
    with cached_only():
        reader = names_of(store, crm, clock)
        assert reader.manager("7") == "O'Brien & <Sons>"
        assert reader.manager("404") == "user 404"
    assert crm.reads == [USERS]


def test_the_tenant_files_map_overrides_the_crm_but_the_crm_fills_its_gaps(store, crm, clock):
    names = names_of(store, crm, clock, managers={"7": "Boss"})
    assert names.manager("7") == "Boss"
    assert names.manager("9120031") == "Анна Петрова"


def test_lookups_from_threads_read_the_crm_once(store, crm, clock):
    names = names_of(store, crm, clock)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(names.manager("7"))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["O'Brien & <Sons>"] * 16
    assert crm.reads == [USERS]


def test_what_the_store_keeps_is_what_names_read(store, crm, clock):
    names_of(store, crm, clock).stage("NEW")
    kept = store.get_names("t1", STAGES)
    assert kept == NameList(
        {k: v.name for k, v in crm.stages.items()},
        T0,
        {"deal:NEW": "Общая", "deal:C1:NEW": "Опт"},
    )


def test_intervals_come_from_the_environment():
    from leadwatch.names import DEFAULT_RETRY, DEFAULT_TTL, intervals_from

    assert intervals_from({}) == (DEFAULT_TTL, DEFAULT_RETRY) == (timedelta(hours=24), timedelta(minutes=10))
    given = {"LEADWATCH_NAMES_TTL_MINUTES": "60", "LEADWATCH_NAMES_RETRY_MINUTES": "2.5"}
    assert intervals_from(given) == (timedelta(hours=1), timedelta(minutes=2.5))
    for bad in ({"LEADWATCH_NAMES_TTL_MINUTES": "soon"}, {"LEADWATCH_NAMES_RETRY_MINUTES": "0"}):
        with pytest.raises(ValueError, match="LEADWATCH_NAMES_"):
            intervals_from(bad)


def test_the_context_keeps_one_names_per_tenant_with_the_tenant_files_map(crm, clock):
    from pathlib import Path

    from leadwatch.config import TenantRegistry, load_tenant_file
    from leadwatch.context import Context

    config = load_tenant_file(Path(__file__).resolve().parents[2] / "config" / "examples" / "acme-b24.yaml")
    built: list[str] = []

    def adapter_factory(config, secrets):
        built.append(config.tenant)
        return crm

    ctx = Context(
        registry=TenantRegistry({config.tenant: config}),
        store=MemoryStore(),
        queue=None,
        secrets=lambda ref: "unused",
        clock=clock,
        adapter_factory=adapter_factory,
        names_retry=timedelta(minutes=1),
    )
    names = ctx.names(config)
    assert ctx.names(config) is names and built == []  # nothing read before a name is asked for
    assert names.manager("7") == "Ivan Sidorov"  # the file's map
    assert names.manager("9120031") == "Анна Петрова"  # the CRM's
    assert names.retry_every == timedelta(minutes=1) and names.ttl == timedelta(hours=24)
    assert built == ["acme-b24"]


def test_find_gives_none_for_what_nobody_knows_so_a_template_can_word_it(store, crm, clock):
    names = names_of(store, crm, clock, managers={"1": "From the file"})
    assert names.find_manager("1") == "From the file"
    assert names.find_manager("7") == "O'Brien & <Sons>"
    assert names.find_manager("404") is None and names.find_manager(None) is None
    assert names.find_stage("C1:NEW", EntityType.DEAL) == "Новая"
    assert names.find_stage("C1:NEW") is None  # not a lead status
    assert names.find_stage("") is None
