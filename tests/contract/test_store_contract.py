"""One contract for leadwatch's state store, run against both implementations: in memory
(`leadwatch.store.memory`, what unit tests and replays use) and DynamoDB (PynamoDB on in-process
moto). Whatever a caller can observe through `StoreProtocol` must be the same on both.

Races: the memory store is raced here with threads; DynamoDB's conditions are raced over moto's
server (tests/integration/test_call_counting.py, test_effects_race.py): in-process moto does not
lock items. What only DynamoDB can show (a sweep dying between two of its writes, rows written
by older releases, the models against the deployment template) stays in tests/unit.
"""

from __future__ import annotations

import inspect
import itertools
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from leadwatch.cards import LeadState
from leadwatch.effects import Violation
from leadwatch.events import Call, EntityRef, EntityType
from leadwatch.store.dynamodb import Store
from leadwatch.store.interface import EffectLedgerProtocol, StoreProtocol
from leadwatch.store.ledger import UNCONFIRMED_TYPE, ClaimState, EffectLedger, Status
from leadwatch.store.memory import MemoryLedger, MemoryStore

NOW = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)
DAY = date(2025, 11, 11)
LEASE = timedelta(minutes=2)
HOLD = timedelta(minutes=5)
MSK = ZoneInfo("Europe/Moscow")


@pytest.fixture(params=["memory", "dynamodb"])
def impl(request) -> str:
    return request.param


@pytest.fixture
def store(impl, request) -> StoreProtocol:
    if impl == "memory":
        return MemoryStore()
    request.getfixturevalue("aws")  # moto with the tables of infra/resources.yaml
    return Store()


@pytest.fixture
def known_bug(impl, request) -> Callable[..., None]:
    """Mark this run an expected failure on the implementations that have the bug (strict: a fix
    shows up as a failure here, to drop the mark)."""

    def mark(*affected: str, reason: str, raises: type[BaseException] = AssertionError) -> None:
        if impl in affected:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason, raises=raises))

    return mark


@pytest.fixture
def stale_writes(monkeypatch) -> list[str]:
    from leadwatch import observability

    seen: list[str] = []
    monkeypatch.setattr(observability, "stale_write", lambda process, count=1: seen.append(process))
    return seen


def ref(n: int | str) -> EntityRef:
    return EntityRef(EntityType.LEAD, str(n))


def lead(n: int | str, due: datetime = NOW, tenant: str = "t1", **fields) -> LeadState:
    return replace(LeadState(tenant, ref(n), due - timedelta(minutes=15), due, "NEW", "7"), **fields)


def call(n: int, entity: EntityRef | None = None, **fields) -> Call:
    values = dict(
        key=f"act{n}",
        entity=entity or ref(42),
        direction="out",
        manager="7",
        started_at=NOW + timedelta(minutes=n),
        duration=10,
        answered=True,
    )
    return Call(**(values | fields))  # type: ignore[arg-type]


def violation(
    vid: str, occurred_at: datetime = NOW, type: str = "late_first_processing", **details
) -> Violation:
    return Violation(vid, type, ref(1), "7", occurred_at, details)


# ----- the interface itself


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


@pytest.mark.parametrize(
    ("protocol", "implementations"),
    [(StoreProtocol, (Store, MemoryStore)), (EffectLedgerProtocol, (EffectLedger, MemoryLedger))],
)
def test_the_protocol_has_every_public_method_with_its_exact_signature(protocol, implementations):
    for cls in implementations:
        assert _public(cls) == _public(protocol), cls.__name__
    for name in _public(protocol):
        member = getattr(protocol, name)
        if isinstance(member, property):  # Store.ledger: an attribute on one, a property on the other
            assert name == "ledger"
            continue
        expected = inspect.signature(member)
        for cls in implementations:
            assert inspect.signature(getattr(cls, name)) == expected, f"{cls.__name__}.{name}"
        assert (member.__doc__ or "").strip(), f"{protocol.__name__}.{name} says its contract"


# ----- inbox


def test_an_event_is_stored_once_per_tenant(store):
    assert store.put_event("t1", "b24:ONCRMLEADADD:1:100", {"x": 1}, NOW)
    assert not store.put_event("t1", "b24:ONCRMLEADADD:1:100", {"x": 2}, NOW)  # a redelivery
    assert store.put_event("t2", "b24:ONCRMLEADADD:1:100", {"x": 3}, NOW)  # another tenant's is its own
    assert store.events("t1") == [{"x": 1}]
    assert store.events("t2") == [{"x": 3}]


def test_events_come_back_as_json_in_dedupe_key_order(store):
    store.put_event("t1", "b", {"n": (1, 2), "s": "щ"}, NOW)
    store.put_event("t1", "a", {}, NOW)
    assert store.events("t1") == [{}, {"n": [1, 2], "s": "щ"}]
    assert store.events("t3") == []


def test_a_forgotten_event_is_stored_again(store):
    store.put_event("t1", "k", {"x": 1}, NOW)
    store.forget_event("t1", "k")
    assert store.events("t1") == []
    assert store.put_event("t1", "k", {"x": 1}, NOW)  # the CRM's retry is not taken for a duplicate
    store.forget_event("t1", "never-stored")  # no error
    assert store.events("t1") == [{"x": 1}]


def test_rejects_are_kept_capped_and_in_order(store):
    later = NOW + timedelta(seconds=1, microseconds=500)
    assert store.put_reject("t1", 403, "bad token", b"{}", later, "b")
    assert store.put_reject("t1", 400, "missing data[FIELDS][ID]" + "!" * 2000, b"x" * 20000, NOW, "a")
    assert store.put_reject("t1", 400, "again", b"x", NOW, "a")  # the same moment and ident: one row
    first, second = store.rejects("t1")
    assert (first.status, first.reason, first.body, first.received_at) == (400, "again", b"x", NOW)
    assert first.key.startswith("reject#") and first.key.endswith("#a")
    assert (second.status, second.reason, second.body, second.received_at) == (403, "bad token", b"{}", later)
    store.put_reject("t2", 400, "r" * 2000, b"x" * 20000, NOW, "c")
    [row] = store.rejects("t2")
    assert len(row.reason) == 1000 and len(row.body) == 8192


def test_a_reject_body_is_kept_as_its_bytes_and_read_as_text_with_marks(store):
    # Bytes, not text: 8 KiB of invalid UTF-8 stays 8 KiB (decoded to text it would triple).
    store.put_reject("t1", 400, "bad", b"\xff\xfe" * 5000, NOW, "a")
    store.put_reject("t1", 400, "bad", ("x" + "я" * 5000).encode(), NOW + timedelta(seconds=1), "b")
    binary, cut = store.rejects("t1")
    assert binary.body == b"\xff\xfe" * 4096
    assert cut.body == ("x" + "я" * 5000).encode()[:8192]
    assert cut.text == "x" + "я" * 4095 + "\ufffd"  # 8192 bytes: half a letter became a mark


def test_rejects_are_sampled_per_tenant_and_hour(store):
    kept = [
        store.put_reject("t1", 400, f"bad {n}", b"x", NOW + timedelta(minutes=n), f"r{n}", per_hour=3)
        for n in range(5)
    ]
    assert kept == [True, True, True, False, False]
    assert [r.reason for r in store.rejects("t1")] == ["bad 0", "bad 1", "bad 2"]
    assert store.put_reject("t2", 400, "other tenant", b"x", NOW, "o", per_hour=3)  # its own sample
    next_hour = NOW + timedelta(hours=1)
    assert store.put_reject("t1", 400, "next hour", b"x", next_hour, "n", per_hour=3)
    assert len(store.rejects("t1")) == 4 and len(store.rejects("t2")) == 1


# ----- leads


def test_create_is_conditional(store):
    assert store.create_lead(lead(1, NOW), NOW)
    assert not store.create_lead(lead(1, NOW + timedelta(hours=1)), NOW)
    assert store.get_lead("t1", ref(1)).due_at == NOW


def test_a_created_card_reads_back_whole_in_utc(store):
    due = datetime(2025, 11, 11, 12, 0, tzinfo=MSK)
    state = LeadState(
        "t1",
        ref(1),
        created_at=due - timedelta(minutes=15),
        due_at=due,
        stage="IN_PROCESS",
        responsible="7",
        title="Acme",
        processed_at=due - timedelta(minutes=5),
        processed_how="activity:call",
        crm_modified_at=due - timedelta(minutes=5),
        rejected_at=due - timedelta(minutes=1),
        rejection_checked=due - timedelta(minutes=1),
        plan_day=DAY,
        intake_stamped=True,
    )
    assert store.create_lead(state, NOW)
    got = store.get_lead("t1", ref(1))
    assert got == state
    assert {got.created_at.tzinfo, got.due_at.tzinfo, got.processed_at.tzinfo} == {UTC}
    assert store.get_lead("t2", ref(1)) is None


def test_a_created_card_is_open_whatever_the_state_says(store):
    # Verdicts are the store's to set: a new card starts open.
    store.create_lead(lead(1, verdict="late", verdict_at=NOW), NOW)
    got = store.get_lead("t1", ref(1))
    assert (got.verdict, got.verdict_at) == (None, None)
    assert [s.entity for _, s in store.due_leads("t1", NOW, since=DAY)] == [ref(1)]


def test_a_cards_intake_stays_as_it_was_stored(store):
    """Written before the card was stored, or not: later writes of the card leave that alone."""
    store.create_lead(lead(1, intake_stamped=True), NOW)
    store.create_lead(lead(2), NOW)
    store.update_lead(lead(1, stage="IN_PROCESS", crm_modified_at=NOW))
    store.note_dialing(lead(1, plan_day=DAY))
    store.claim(lead(1), "a", NOW, HOLD)
    store.close_verdict(lead(1), "on_time", "a", NOW, DAY.isoformat(), "7")
    found = store.get_leads("t1", [ref(1), ref(2)])
    assert (found[ref(1)].intake_stamped, found[ref(2)].intake_stamped) == (True, False)
    assert found[ref(1)].stage == "IN_PROCESS" and found[ref(1)].verdict == "on_time"


def test_the_plan_day_argument_wins_over_the_states(store):
    store.create_lead(lead(1, plan_day=DAY), NOW, plan_day=DAY + timedelta(days=1))
    assert store.get_lead("t1", ref(1)).plan_day == DAY + timedelta(days=1)


def test_get_leads_returns_the_known_ones(store):
    store.create_lead(lead(1), NOW)
    store.create_lead(lead(2), NOW)
    store.create_lead(lead(3, tenant="t2"), NOW)
    found = store.get_leads("t1", [ref(1), ref(3), ref(1), EntityRef(EntityType.DEAL, "2")])
    assert set(found) == {ref(1)} and found[ref(1)].entity == ref(1)
    assert store.get_leads("t1", []) == {}


def test_processing_time_is_set_once(store):
    state = lead(1)
    store.create_lead(state, NOW)
    store.update_lead(
        replace(state, stage="IN_PROCESS", processed_at=NOW - timedelta(minutes=5), processed_how="stage")
    )
    store.update_lead(replace(state, stage="CONVERTED", processed_at=NOW, processed_how="activity:call"))
    got = store.get_lead("t1", state.entity)
    assert got.stage == "CONVERTED"
    assert got.processed_at == NOW - timedelta(minutes=5) and got.processed_how == "stage"


def test_processing_learnt_late_but_earlier_moves_it_earlier_until_the_card_is_judged(store):
    state = lead(1)
    store.create_lead(state, NOW)
    store.update_lead(replace(state, stage="IN_PROCESS", processed_at=NOW, processed_how="stage"))
    # The call's webhook came after the stage change's: it was earlier.
    store.update_lead(
        replace(
            state, stage="IN_PROCESS", processed_at=NOW - timedelta(minutes=7), processed_how="activity:call"
        )
    )
    got = store.get_lead("t1", state.entity)
    assert (got.processed_at, got.processed_how) == (NOW - timedelta(minutes=7), "activity:call")
    assert store.claim(got, "a", NOW, HOLD)
    assert store.close_verdict(got, "on_time", "a", NOW, DAY.isoformat(), "7")
    store.update_lead(replace(state, processed_at=NOW - timedelta(hours=1), processed_how="activity:note"))
    assert store.get_lead("t1", state.entity).processed_at == NOW - timedelta(minutes=7)  # judged: fixed


def test_processing_without_a_how_is_by_stage(store):
    store.create_lead(lead(1), NOW)
    store.update_lead(lead(1, processed_at=NOW))
    assert store.get_lead("t1", ref(1)).processed_how == "stage"


def test_a_sighting_moves_the_card_only_forward_in_crm_time(store):
    sightings = [
        (NOW + timedelta(minutes=m), stage) for m, stage in ((1, "IN_PROCESS"), (2, "JUNK"), (3, "WON"))
    ]
    for n, order in enumerate(itertools.permutations(sightings)):
        store.create_lead(lead(n, crm_modified_at=NOW), NOW)
        newest = NOW
        for modified, stage in order:
            won = store.update_lead(lead(n, stage=stage, crm_modified_at=modified))
            assert won == (modified >= newest), order
            newest = max(newest, modified)
        got = store.get_lead("t1", ref(n))
        assert (got.stage, got.crm_modified_at) == ("WON", NOW + timedelta(minutes=3)), order


def test_a_sighting_of_the_same_moment_wins_and_one_without_a_moment_always_does(store):
    store.create_lead(lead(1, crm_modified_at=NOW), NOW)
    assert store.update_lead(lead(1, stage="A", crm_modified_at=NOW))
    assert store.update_lead(lead(1, stage="B"))  # the path did not say when: nothing to compare
    got = store.get_lead("t1", ref(1))
    assert (got.stage, got.crm_modified_at) == ("B", NOW)


def test_a_stale_sighting_changes_nothing_but_still_records_processing(store, stale_writes):
    store.create_lead(lead(1, crm_modified_at=NOW, title="Acme"), NOW)
    assert not store.update_lead(
        replace(
            lead(
                1, crm_modified_at=NOW - timedelta(minutes=1), processed_at=NOW, processed_how="activity:call"
            ),
            stage="OLD",
            responsible="9",
            title="Old",
        )
    )
    got = store.get_lead("t1", ref(1))
    assert (got.stage, got.responsible, got.title, got.crm_modified_at) == ("NEW", "7", "Acme", NOW)
    assert (got.processed_at, got.processed_how) == (NOW, "activity:call")  # an activity proves it
    assert stale_writes == ["timeliness"]


def test_a_sighting_without_owner_or_title_clears_them(store):
    store.create_lead(lead(1, title="Acme"), NOW)
    assert store.update_lead(replace(lead(1), responsible=None, title=""))
    got = store.get_lead("t1", ref(1))
    assert (got.responsible, got.title) == (None, "")


def test_a_sighting_of_an_unknown_card_stores_nothing(store):
    assert not store.update_lead(lead(1))
    assert store.get_lead("t1", ref(1)) is None


def test_a_processed_sighting_of_an_unknown_card_stores_nothing(store):
    assert not store.update_lead(lead(1, processed_at=NOW))
    assert store.get_lead("t1", ref(1)) is None


def test_note_dialing_fixes_the_plan_day_and_the_rejection_once(store):
    store.create_lead(lead(1), NOW)
    rejected = NOW - timedelta(hours=1)
    store.note_dialing(lead(1, plan_day=DAY, rejected_at=rejected))
    store.note_dialing(
        lead(1, plan_day=DAY + timedelta(days=1), rejected_at=NOW, rejection_checked=NOW)  # a later event
    )
    got = store.get_lead("t1", ref(1))
    assert (got.plan_day, got.rejected_at, got.rejection_checked) == (DAY, rejected, NOW)
    store.note_dialing(lead(1, rejection_checked=NOW))  # back out of the rejected stage
    got = store.get_lead("t1", ref(1))
    assert (got.plan_day, got.rejected_at, got.rejection_checked) == (DAY, None, None)
    store.note_dialing(lead(1, rejected_at=NOW))  # rejected again: a new moment
    assert store.get_lead("t1", ref(1)).rejected_at == NOW


def test_note_dialing_needs_the_card(store):
    with pytest.raises(LookupError):
        store.note_dialing(lead(1, plan_day=DAY))
    assert store.get_lead("t1", ref(1)) is None


def test_note_dialing_from_a_stale_read_writes_nothing(store):
    store.create_lead(lead(1), NOW)
    store.update_lead(lead(1, stage="IN_PROCESS", crm_modified_at=NOW))
    # Read before that sighting: it still saw the card rejected.
    assert not store.note_dialing(
        lead(1, rejected_at=NOW - timedelta(minutes=5), crm_modified_at=NOW - timedelta(minutes=5))
    )
    assert store.get_lead("t1", ref(1)).rejected_at is None
    assert store.note_dialing(lead(1, plan_day=DAY, crm_modified_at=NOW))
    assert store.get_lead("t1", ref(1)).plan_day == DAY


def test_a_rejection_is_marked_checked_only_if_it_is_the_stored_one(store):
    store.create_lead(lead(1), NOW)
    first = NOW - timedelta(hours=2)
    store.note_dialing(lead(1, rejected_at=first))
    store.mark_rejection_checked(lead(1, rejected_at=NOW))  # a rejection the store does not hold
    assert store.get_lead("t1", ref(1)).rejection_checked is None
    store.mark_rejection_checked(lead(1))  # none at all: nothing to mark
    assert store.get_lead("t1", ref(1)).rejection_checked is None
    store.mark_rejection_checked(lead(1, rejected_at=first))
    assert store.get_lead("t1", ref(1)).rejection_checked == first
    store.mark_rejection_checked(lead(2, rejected_at=first))  # an unknown card: no error, nothing stored
    assert store.get_lead("t1", ref(2)) is None


# ----- calls


def totals(store, tenant: str = "t1") -> tuple[int, int]:
    """(attempts, touches) of card 42."""
    return store.call_totals(tenant, [ref(42)])[ref(42)]


def test_each_call_counts_once_on_its_card_and_its_day(store):
    store.create_lead(lead(42), NOW)
    assert store.record_call("t1", call(1), DAY, False, NOW)
    assert store.record_call("t1", call(2), DAY, True, NOW)
    assert not store.record_call("t1", call(2), DAY, True, NOW)  # a redelivery
    assert totals(store) == (2, 1)
    assert store.day_counts("t1", DAY) == {ref(42): (2, 1)}
    assert [c.key for c in store.calls_of("t1", ref(42))] == ["act1", "act2"]
    assert [c.key for c in store.touches_on("t1", DAY)] == ["act2"]


def test_the_same_call_by_every_path_and_again_counts_once(store):
    store.create_lead(lead(42), NOW)
    activity = call(1, duration=20, answered=None, source="activity")  # the activity's times say 20 s
    telephony = replace(activity, duration=45, answered=True, source="telephony")
    statistic = replace(
        telephony, record_url="https://records.example/1.mp3", answered=False, source="statistic"
    )
    assert store.record_call("t1", activity, DAY, False, NOW) is True
    assert store.record_call("t1", telephony, DAY, True, NOW) is False
    assert store.record_call("t1", statistic, DAY, True, NOW) is False
    assert store.record_call("t1", statistic, DAY, True, NOW) is False  # a redelivery
    assert totals(store) == (1, 1)
    assert store.day_counts("t1", DAY) == {ref(42): (1, 1)}
    [kept] = store.calls_of("t1", ref(42))
    # The longest duration, the first recording and the first word on answering; the rest as first told.
    assert (kept.duration, kept.record_url, kept.answered, kept.source) == (
        45,
        "https://records.example/1.mp3",
        True,
        "activity",
    )
    assert store.touches_on("t1", DAY) == [kept]  # the touch is the call as kept
    store.record_call("t1", replace(activity, duration=3, record_url="https://other"), DAY, False, NOW)
    assert store.known_call("t1", ref(42), "act1") == kept  # a shorter, later report changes nothing
    assert store.known_calls("t1", [(ref(42), DAY, "act1")]) == {"act1": kept}


def test_calls_recorded_together_are_each_kept_once(store):
    store.create_lead(lead(42), NOW)
    store.record_call("t1", call(1), DAY, False, NOW)
    batch = [
        (call(1, duration=50, record_url="https://r/1"), DAY, True),  # known: told more
        (call(2), DAY, False),
        (call(2, duration=40), DAY, True),  # the same call twice in the batch
        (call(3, entity=ref(7)), DAY, False),  # another card
        (call(4), DAY + timedelta(days=1), True),  # another day
    ]
    assert store.record_calls("t1", batch, NOW) == [False, True, False, True, True]
    assert store.record_calls("t1", batch, NOW) == [False] * 5  # the batch again
    assert store.record_calls("t1", [], NOW) == []
    assert store.day_counts("t1", DAY) == {ref(42): (2, 2), ref(7): (1, 0)}
    assert store.day_counts("t1", DAY + timedelta(days=1)) == {ref(42): (1, 1)}
    assert [(c.key, c.duration, c.record_url) for c in store.calls_of("t1", ref(42))] == [
        ("act1", 50, "https://r/1"),
        ("act2", 40, None),
        ("act4", 10, None),
    ]
    assert store.call_totals("t1", [ref(42), ref(7), ref(8)]) == {
        ref(42): (3, 3),
        ref(7): (1, 0),
        ref(8): (0, 0),
    }


def test_calls_told_more_after_known_calls_merge_as_without_it(store):
    store.create_lead(lead(42), NOW)
    store.record_call("t1", call(1, duration=5), DAY, False, NOW)
    kept = store.known_calls("t1", [(ref(42), DAY, "act1"), (ref(42), DAY, "act2")])
    more = [(call(1, duration=50, record_url="https://r/1"), DAY, True), (call(2), DAY, False)]
    assert store.record_calls("t1", more, NOW, kept) == [False, True]
    # What was read is out of date (act1 is longer by now), or of another day (act2 on the next).
    stale = {"act1": call(1, duration=5), "act2": call(2)}
    later = [(call(1, duration=30), DAY, False), (call(2, duration=60), DAY + timedelta(days=1), True)]
    assert store.record_calls("t1", later, NOW, stale) == [False, True]
    assert [(c.key, c.duration, c.record_url) for c in store.calls_of("t1", ref(42))] == [
        ("act1", 50, "https://r/1"),
        ("act2", 60, None),
    ]
    assert store.day_counts("t1", DAY) == {ref(42): (2, 1)}
    assert store.day_counts("t1", DAY + timedelta(days=1)) == {ref(42): (1, 1)}
    assert totals(store) == (2, 2)


def test_a_call_on_another_day_counts_on_that_day_not_again_on_the_card(store):
    store.create_lead(lead(42), NOW)
    store.record_call("t1", call(1), DAY, True, NOW)
    store.record_call("t1", call(1, duration=60), DAY + timedelta(days=1), True, NOW)
    assert totals(store) == (1, 1)
    assert store.day_counts("t1", DAY) == store.day_counts("t1", DAY + timedelta(days=1)) == {ref(42): (1, 1)}
    [kept] = store.calls_of("t1", ref(42))  # once, with what both days tell
    assert (kept.key, kept.duration) == ("act1", 60)


def test_counts_are_per_day_and_per_tenant(store):
    store.create_lead(lead(42, tenant="a"), NOW)
    store.create_lead(lead(42, tenant="b"), NOW)
    store.record_call("a", call(1), DAY, False, NOW)
    store.record_call("a", call(2), DAY + timedelta(days=1), False, NOW)
    store.record_call("b", call(1), DAY, False, NOW)  # the same call key in another tenant
    assert store.day_counts("a", DAY) == {ref(42): (1, 0)}
    assert store.day_counts("a", DAY + timedelta(days=1)) == {ref(42): (1, 0)}
    assert totals(store, tenant="a") == (2, 0)
    assert totals(store, tenant="b") == (1, 0)
    assert [c.key for c in store.calls_of("b", ref(42))] == ["act1"]
    assert store.known_calls("a", [(ref(42), DAY, "act1"), (ref(42), DAY, "act9")]).keys() == {"act1"}
    assert store.known_calls("a", [(ref(42), DAY, "act2")]) == {}  # kept on the next day
    assert store.day_counts("c", DAY) == {}


def test_a_call_on_an_unknown_card_is_kept_and_counted(store):
    assert store.record_call("t1", call(1), DAY, True, NOW)
    assert store.day_counts("t1", DAY) == {ref(42): (1, 1)}
    assert store.get_lead("t1", ref(42)) is None
    store.create_lead(lead(42), NOW)  # the card arrives later: its calls were kept for it
    assert not store.record_call("t1", call(1), DAY, True, NOW)
    assert totals(store) == (1, 1)
    assert store.day_counts("t1", DAY) == {ref(42): (1, 1)}


def test_a_touch_learnt_later_counts_once(store):
    store.create_lead(lead(42), NOW)
    short = call(1, duration=3)
    store.record_call("t1", short, DAY, False, NOW)
    assert store.day_counts("t1", DAY) == {ref(42): (1, 0)}
    store.record_call("t1", replace(short, duration=40), DAY, True, NOW)
    store.record_call("t1", replace(short, duration=40), DAY, True, NOW)
    store.record_call("t1", replace(short, duration=5), DAY, False, NOW)  # a touch stays one
    assert totals(store) == (1, 1)
    assert store.day_counts("t1", DAY) == {ref(42): (1, 1)}
    [touch] = store.touches_on("t1", DAY)
    assert (touch.key, touch.duration) == ("act1", 40)


def test_a_touch_reported_again_keeps_its_recording_and_longest_duration(store):
    store.create_lead(lead(42), NOW)
    store.record_call("t1", call(1, duration=50, record_url="https://records.example/1.mp3"), DAY, True, NOW)
    store.record_call("t1", call(1, duration=30), DAY, True, NOW)  # a shorter report by another path
    [touch] = store.touches_on("t1", DAY)
    assert (touch.duration, touch.record_url) == (50, "https://records.example/1.mp3")


def test_a_recording_learnt_late_lands_on_the_call_and_its_touch_once(store):
    store.create_lead(lead(42), NOW)
    store.record_call("t1", call(1), DAY, True, NOW)
    store.record_call("t1", call(2), DAY, False, NOW)
    store.add_recording("t1", call(1, record_url="https://r/1"), DAY)
    store.add_recording("t1", call(1, record_url="https://r/other"), DAY)  # the first stays
    store.add_recording("t1", call(2, record_url="https://r/2"), DAY)  # a call with no touch
    store.add_recording("t1", call(3, record_url="https://r/3"), DAY)  # an unknown call: nothing
    store.add_recording("t1", call(4, record_url="https://r/4"), DAY + timedelta(days=1))  # nor a day without
    assert {c.key: c.record_url for c in store.calls_of("t1", ref(42))} == {
        "act1": "https://r/1",
        "act2": "https://r/2",
    }
    assert [(c.key, c.record_url) for c in store.touches_on("t1", DAY)] == [("act1", "https://r/1")]
    assert store.day_counts("t1", DAY + timedelta(days=1)) == {}


def test_known_calls_read_back_as_kept(store):
    kept = call(1, entity=ref(7), started_at=datetime(2025, 11, 11, 11, 0, tzinfo=MSK), activity_id="55")
    store.record_call("t1", kept, DAY, False, NOW)
    got = store.known_call("t1", ref(7), "act1")
    assert got == kept and got.started_at.tzinfo == UTC and got.source == ""
    assert store.known_call("t1", ref(8), "act1") is None  # the key is the card's own
    assert store.known_call("t2", ref(7), "act1") is None
    assert store.known_calls("t1", [(ref(7), DAY, "act1"), (ref(8), DAY, "act1")]) == {"act1": got}
    assert store.known_calls("t1", []) == {}


def test_call_keys_of_any_shape_are_kept_as_told(store):
    # Bitrix24's CALL_IDs hold dots; nothing in a CRM's key may be taken for a document path.
    keys = ["voxexternalCall.6b1d.1699", "note[3]", "a%5Bb", "x#y", "act 1"]
    store.record_calls("t1", [(call(n, key=key), DAY, n % 2 == 0) for n, key in enumerate(keys)], NOW)
    assert [c.key for c in store.calls_of("t1", ref(42))] == keys
    assert store.known_calls("t1", [(ref(42), DAY, key) for key in keys]).keys() == set(keys)
    store.add_recording("t1", call(1, key="note[3]", record_url="https://r/3"), DAY)
    assert store.known_call("t1", ref(42), "note[3]").record_url == "https://r/3"
    assert [c.key for c in store.touches_on("t1", DAY)] == keys[::2]


def test_calls_of_one_card_only_in_time_order(store):
    store.record_call("t1", call(5, entity=ref(1)), DAY, False, NOW)
    store.record_call("t1", call(3, entity=ref(1)), DAY, True, NOW)
    store.record_call("t1", call(1, entity=ref(10)), DAY, True, NOW)  # "lead:10" starts like "lead:1"
    store.record_call("t1", call(2, entity=ref(1), started_at=NOW + timedelta(minutes=3)), DAY, False, NOW)
    assert [c.key for c in store.calls_of("t1", ref(1))] == ["act2", "act3", "act5"]
    assert [c.key for c in store.touches_on("t1", DAY)] == ["act1", "act3"]
    assert store.touches_on("t1", DAY + timedelta(days=1)) == []
    assert store.day_counts("t1", DAY) == {ref(1): (3, 1), ref(10): (1, 1)}
    assert store.call_totals("t1", [ref(1), ref(10)]) == {ref(1): (3, 1), ref(10): (1, 1)}


def test_a_cards_calls_are_read_from_two_days_before_it_arrived(store):
    """A card's calls are looked for from two UTC days before it arrived (any time zone, a call
    logged a moment before the card): one logged into the past before that counts on its day
    only. A card leadwatch does not hold is read over every day with calls."""
    store.create_lead(lead(42), NOW)  # arrived 07:45 UTC on DAY
    early = DAY - timedelta(days=3)
    store.record_call("t1", call(1, started_at=NOW - timedelta(days=3)), early, False, NOW)
    store.record_call("t1", call(2, started_at=NOW - timedelta(days=2)), DAY - timedelta(days=2), False, NOW)
    store.record_call("t1", call(3), DAY + timedelta(days=30), True, NOW)
    assert store.day_counts("t1", early) == {ref(42): (1, 0)}
    assert [c.key for c in store.calls_of("t1", ref(42))] == ["act2", "act3"]
    assert totals(store) == (2, 1)
    store.record_call("t1", call(4, entity=ref(7)), early, False, NOW)  # a card not held
    assert [c.key for c in store.calls_of("t1", ref(7))] == ["act4"]
    assert store.call_totals("t1", [ref(7), ref(8)]) == {ref(7): (1, 0), ref(8): (0, 0)}


def test_the_totals_of_many_cards_count_each_cards_calls_over_its_days(store):
    for n in range(60):
        store.create_lead(lead(n), NOW)
        store.record_call("t1", call(n, entity=ref(n)), DAY, n % 3 == 0, NOW)
        if n % 2 == 0:
            store.record_call("t1", call(100 + n, entity=ref(n)), DAY + timedelta(days=1), False, NOW)
    store.record_call("t1", call(999, entity=ref(500)), DAY - timedelta(days=5), True, NOW)  # not held
    store.record_call("t2", call(1, entity=ref(1)), DAY, True, NOW)  # another tenant
    cards = [ref(n) for n in range(60)] + [ref(500), ref(501)]
    expected = {ref(n): (2 if n % 2 == 0 else 1, 1 if n % 3 == 0 else 0) for n in range(60)}
    assert store.call_totals("t1", cards) == expected | {ref(500): (1, 1), ref(501): (0, 0)}
    assert store.call_totals("t1", []) == {}


def test_the_plan_index_returns_the_cards_of_a_plan_day(store):
    for n, day in ((2, DAY), (1, DAY), (3, DAY + timedelta(days=1)), (4, None)):
        store.create_lead(lead(n), NOW, plan_day=day)
    store.create_lead(lead(5), NOW)
    store.note_dialing(lead(5, plan_day=DAY - timedelta(days=1)))
    found = store.plan_leads("t1", [DAY + timedelta(days=1), DAY, DAY, DAY - timedelta(days=1)])
    assert [(d, s.entity.id) for d, s in found] == [
        (DAY - timedelta(days=1), "5"),
        (DAY, "1"),
        (DAY, "2"),
        (DAY + timedelta(days=1), "3"),
    ]
    assert found[1][1] == store.get_lead("t1", ref(1))
    assert store.plan_leads("another", [DAY]) == []
    assert store.plan_leads("t1", []) == []


# ----- the deadline sweep


def test_due_index_reads_only_what_is_due(store):
    for n in range(30):
        store.create_lead(lead(n, NOW + timedelta(minutes=n - 10)), NOW)  # 11 due (n <= 10), 19 later
    store.create_lead(lead(99, NOW - timedelta(minutes=1), tenant="t2"), NOW)
    due = list(store.due_leads("t1", NOW, since=NOW.date() - timedelta(days=7)))
    assert [int(s.entity.id) for _, s in due] == list(range(11))  # by due time
    assert {d for d, _ in due} == {DAY}


def test_a_card_stored_overdue_lands_in_todays_bucket(store):
    store.create_lead(lead(1, NOW - timedelta(days=3)), NOW)  # found late by reconciliation
    assert [(d, s.entity.id) for d, s in store.due_leads("t1", NOW, since=NOW.date())] == [(DAY, "1")]


def test_due_index_spans_days_and_the_lookback(store):
    store.create_lead(lead(1, NOW - timedelta(days=2)), NOW - timedelta(days=2))
    store.create_lead(lead(2, NOW - timedelta(days=9)), NOW - timedelta(days=9))
    store.create_lead(lead(3, NOW - timedelta(minutes=1)), NOW - timedelta(minutes=1))
    due = list(store.due_leads("t1", NOW, since=NOW.date() - timedelta(days=7)))
    assert [(d, s.entity.id) for d, s in due] == [(DAY - timedelta(days=2), "1"), (DAY, "3")]
    assert [s.entity.id for _, s in store.due_leads("t1", NOW, since=DAY)] == ["3"]


def test_due_leads_stop_at_the_limit_across_buckets(store):
    for n in range(3):
        store.create_lead(lead(n, NOW - timedelta(days=1, minutes=n)), NOW - timedelta(days=1))
        store.create_lead(lead(10 + n, NOW - timedelta(minutes=n)), NOW)
    due = list(store.due_leads("t1", NOW, since=DAY - timedelta(days=1), limit=4))
    assert [s.entity.id for _, s in due] == ["2", "1", "0", "12"]
    assert list(store.due_leads("t1", NOW, since=DAY, limit=0)) == []


def test_a_closed_card_is_no_longer_due(store):
    store.create_lead(lead(1, NOW - timedelta(minutes=1)), NOW)
    store.create_lead(lead(2, NOW - timedelta(minutes=2)), NOW)
    assert store.claim(lead(1), "a", NOW, HOLD)
    assert store.close_verdict(lead(1), "on_time", "a", NOW, "2025-11-11", "7")
    assert [s.entity.id for _, s in store.due_leads("t1", NOW, since=DAY)] == ["2"]
    assert store.plan_leads("t1", [DAY]) == []


def test_next_due_is_the_first_open_card_due_after_now(store):
    assert store.next_due("t1", NOW) is None
    store.create_lead(lead(1, NOW - timedelta(minutes=5)), NOW)  # due already: not next
    store.create_lead(lead(2, NOW + timedelta(days=2)), NOW)
    assert store.next_due("t1", NOW) == NOW + timedelta(days=2)
    store.create_lead(lead(3, NOW + timedelta(minutes=30)), NOW)
    store.create_lead(lead(4, NOW + timedelta(minutes=10)), NOW)
    assert store.next_due("t1", NOW) == NOW + timedelta(minutes=10)
    assert store.claim(lead(4), "a", NOW + timedelta(minutes=10), HOLD)
    store.close_verdict(lead(4), "on_time", "a", NOW, "2025-11-11", "7")
    assert store.next_due("t1", NOW) == NOW + timedelta(minutes=30)
    assert store.next_due("t1", NOW + timedelta(hours=1), horizon_days=1) is None  # day 2 is past the horizon
    assert store.next_due("t2", NOW) is None


def test_claims_exclude_an_overlapping_sweep_until_they_expire(store):
    state = lead(1)
    store.create_lead(state, NOW)
    assert store.claim(state, "a", NOW, HOLD)
    assert not store.claim(state, "a", NOW, HOLD)  # not even the same token twice
    assert not store.claim(state, "b", NOW + timedelta(minutes=1), HOLD)
    assert not store.claim(state, "b", NOW + HOLD, HOLD)  # the hold lasts to its last moment
    assert store.claim(state, "b", NOW + timedelta(minutes=6), HOLD)  # "a" crashed


def test_only_an_open_known_card_can_be_claimed(store):
    assert not store.claim(lead(1), "a", NOW, HOLD)
    store.create_lead(lead(2), NOW)
    store.close_deleted(lead(2), NOW)
    assert not store.claim(lead(2), "a", NOW, HOLD)


def test_released_claim_can_be_taken_again_only_by_its_token(store):
    state = lead(1)
    store.create_lead(state, NOW)
    store.claim(state, "a", NOW, HOLD)
    store.release(state, "b")  # not b's to release
    assert not store.claim(state, "b", NOW, HOLD)
    store.release(state, "a")
    assert store.claim(state, "b", NOW, HOLD)
    store.release(lead(9), "b")  # an unknown card: no error


def test_close_verdict_counts_once_and_closes_once(store):
    state = lead(1)
    store.create_lead(state, NOW)
    assert store.claim(state, "a", NOW, HOLD)
    assert not store.close_verdict(state, "late", "b", NOW, "2025-11-11", "7")  # not b's claim
    assert store.close_verdict(state, "late", "a", NOW, "2025-11-11", "7")
    assert not store.close_verdict(state, "late", "a", NOW, "2025-11-11", "7")  # already closed
    assert list(store.due_leads("t1", NOW, since=NOW.date())) == []
    [row] = store.timeliness_stats("t1", NOW.date(), NOW.date())
    assert (row.day, row.manager, row.on_time, row.late) == ("2025-11-11", "7", 0, 1)
    got = store.get_lead("t1", state.entity)
    assert (got.verdict, got.verdict_at, got.pending_verdict) == ("late", NOW, None)


def test_a_claim_pins_its_verdict_which_outlives_a_release_and_is_never_replaced(store):
    state = lead(1)
    store.create_lead(state, NOW)
    assert store.claim(state, "a", NOW, HOLD, verdict="late")
    store.release(state, "a")  # its alert failed: the card stays due, with its verdict
    [(_, again)] = list(store.due_leads("t1", NOW, since=DAY))
    assert again.pending_verdict == "late" and again.verdict is None
    assert not store.claim(again, "b", NOW, HOLD, verdict="on_time")  # another verdict: refused
    assert store.claim(again, "b", NOW, HOLD, verdict="late")
    # Pinned by the claim: closing it counts and closes without pinning again.
    assert store.close_verdict(again, "late", "b", NOW, "2025-11-11", "7")
    assert not store.close_verdict(again, "late", "b", NOW, "2025-11-11", "7")  # closed
    [row] = store.timeliness_stats("t1", DAY, DAY)
    assert (row.on_time, row.late) == (0, 1)
    got = store.get_lead("t1", state.entity)
    assert (got.verdict, got.pending_verdict) == ("late", None)


def test_a_verdict_pinned_by_a_claim_is_counted_once_whoever_closes_it(store):
    state = lead(1)
    store.create_lead(state, NOW)
    assert store.claim(state, "a", NOW, HOLD, verdict="on_time")
    later = NOW + HOLD + timedelta(seconds=1)  # "a" is slow: its hold ran out
    assert store.claim(state, "b", later, HOLD, verdict="on_time")
    pinned = replace(state, pending_verdict="on_time")
    assert store.close_verdict(pinned, "on_time", "b", later, "2025-11-11", "7")
    assert not store.close_verdict(pinned, "on_time", "a", later, "2025-11-11", "7")
    assert [(r.on_time, r.late) for r in store.timeliness_stats("t1", DAY, DAY)] == [(1, 0)]


def test_a_sweep_whose_hold_was_taken_over_neither_counts_nor_closes(store):
    state = lead(1)
    store.create_lead(state, NOW)
    store.claim(state, "a", NOW, HOLD)
    later = NOW + HOLD + timedelta(seconds=1)
    assert store.claim(state, "b", later, HOLD)
    assert not store.close_verdict(state, "on_time", "a", later, "2025-11-11", "7")
    assert store.timeliness_stats("t1", DAY, DAY) == []
    assert store.close_verdict(state, "on_time", "b", later, "2025-11-11", "7")
    assert [(r.on_time, r.late) for r in store.timeliness_stats("t1", DAY, DAY)] == [(1, 0)]


def test_an_unclaimed_card_is_not_closed(store):
    store.create_lead(lead(1), NOW)
    assert not store.close_verdict(lead(1), "late", "a", NOW, "2025-11-11", "7")
    assert not store.close_verdict(lead(2), "late", "a", NOW, "2025-11-11", "7")
    assert store.get_lead("t1", ref(1)).verdict is None
    assert store.timeliness_stats("t1", DAY, DAY) == []


def test_statistics_per_day_and_manager_in_a_closed_range(store):
    closes = [
        (1, "on_time", "2025-11-10", "7"),
        (2, "late", "2025-11-11", "7"),
        (3, "on_time", "2025-11-11", "7"),
    ]
    closes += [
        (4, "late", "2025-11-11", "12"),
        (5, "late", "2025-11-12", "7"),
        (6, "late", "2025-11-13", "7"),
    ]
    for n, verdict, day, manager in closes:
        store.create_lead(lead(n), NOW)
        assert store.claim(lead(n), "a", NOW, HOLD)
        assert store.close_verdict(lead(n), verdict, "a", NOW, day, manager)
    rows = store.timeliness_stats("t1", date(2025, 11, 11), date(2025, 11, 12))
    assert [(r.day, r.manager, r.on_time, r.late) for r in rows] == [
        ("2025-11-11", "12", 0, 1),
        ("2025-11-11", "7", 1, 1),
        ("2025-11-12", "7", 0, 1),
    ]
    assert store.timeliness_stats("t2", date(2025, 11, 10), date(2025, 11, 13)) == []


def test_a_deleted_card_is_closed_uncounted_whoever_holds_it(store):
    store.create_lead(lead(1), NOW)
    store.claim(lead(1), "a", NOW, HOLD)
    store.close_deleted(lead(1), NOW + timedelta(minutes=1))
    got = store.get_lead("t1", ref(1))
    assert (got.verdict, got.verdict_at) == ("deleted", NOW + timedelta(minutes=1))
    assert list(store.due_leads("t1", NOW + timedelta(hours=1), since=DAY)) == []
    assert not store.close_verdict(lead(1), "late", "a", NOW, "2025-11-11", "7")
    assert store.timeliness_stats("t1", DAY, DAY) == []


def test_closing_an_unknown_deleted_card_stores_nothing(store):
    assert not store.close_deleted(lead(1), NOW)
    assert store.get_lead("t1", ref(1)) is None


def test_a_deleted_card_keeps_its_verdict_and_leaves_the_plan_once(store):
    state = replace(lead(1), plan_day=DAY)
    store.create_lead(state, NOW)
    assert [s.entity for _, s in store.plan_leads("t1", [DAY])] == [ref(1)]
    assert store.claim(state, "a", NOW, HOLD)
    assert store.close_verdict(state, "on_time", "a", NOW, "2025-11-11", "7")
    assert store.close_deleted(state, NOW + timedelta(hours=1))
    assert not store.close_deleted(state, NOW + timedelta(hours=2))  # a redelivered deletion
    got = store.get_lead("t1", ref(1))
    assert (got.verdict, got.deleted_at) == ("on_time", NOW + timedelta(hours=1))
    assert store.plan_leads("t1", [DAY]) == []
    assert [(r.on_time, r.late) for r in store.timeliness_stats("t1", DAY, DAY)] == [(1, 0)]


# ----- the effect ledger


def test_an_effect_is_claimed_once(store):
    book = store.ledger
    assert book.claim("t1", "e1", "alice", NOW, LEASE).claimed
    second = book.claim("t1", "e1", "bob", NOW + timedelta(seconds=5), LEASE)
    assert second.state is ClaimState.HELD and not second.settled
    assert second.holder == "alice" and second.lease_until == NOW + LEASE
    assert book.done("t1", ["e1"]) == set()  # claimed is not done
    entry = book.entries("t1", ["e1"])["e1"]
    assert (entry.status, entry.owner, entry.lease_until, entry.at, entry.detail) == (
        Status.CLAIMED,
        "alice",
        NOW + LEASE,
        NOW,
        None,
    )


def test_an_expired_claim_is_taken_over(store):
    book = store.ledger
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert book.claim("t1", "e1", "bob", NOW + LEASE, LEASE).state is ClaimState.HELD  # not yet expired
    assert book.claim("t1", "e1", "bob", NOW + LEASE + timedelta(seconds=1), LEASE).claimed
    # The claimant that died cannot settle what is no longer its own.
    assert not book.confirm("t1", "e1", "alice", NOW + timedelta(minutes=3))
    assert not book.release("t1", "e1", "alice")
    assert book.confirm("t1", "e1", "bob", NOW + timedelta(minutes=3))
    assert book.done("t1", ["e1"]) == {"e1"}


def test_an_expired_claim_not_yet_taken_over_can_still_be_confirmed(store):
    book = store.ledger
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert book.confirm("t1", "e1", "alice", NOW + LEASE * 5)  # nobody took it: it is still alice's
    assert book.done("t1", ["e1"]) == {"e1"}


def test_a_confirmed_effect_is_done_for_good(store):
    book = store.ledger
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert book.confirm("t1", "e1", "alice", NOW + timedelta(seconds=3))
    later = NOW + timedelta(days=1)
    assert book.claim("t1", "e1", "bob", later, LEASE).state is ClaimState.DONE
    assert not book.confirm("t1", "e1", "alice", later)  # done is not a claim any more
    assert not book.release("t1", "e1", "alice")
    entry = book.entries("t1", ["e1"])["e1"]
    assert (entry.status, entry.lease_until, entry.at) == (Status.DONE, None, NOW + timedelta(seconds=3))


def test_a_confirmation_keeps_the_effects_result(store):
    book = store.ledger
    book.claim("t1", "task", "alice", NOW, LEASE)
    assert book.confirm("t1", "task", "alice", NOW, result="4711")
    book.claim("t1", "plain", "alice", NOW, LEASE)
    assert book.confirm("t1", "plain", "alice", NOW)
    entries = book.entries("t1", ["task", "plain"])
    assert (entries["task"].status, entries["task"].detail) == (Status.DONE, "4711")
    assert entries["plain"].detail is None


def test_confirm_release_and_unconfirmed_need_the_owner(store):
    book = store.ledger
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert not book.confirm("t1", "e1", "bob", NOW)
    assert not book.release("t1", "e1", "bob")
    assert not book.mark_unconfirmed("t1", "e1", "bob", NOW, "timed out")
    assert book.entries("t1", ["e1"])["e1"].status is Status.CLAIMED
    assert not book.confirm("t1", "missing", "alice", NOW)
    assert not book.release("t1", "missing", "alice")
    assert not book.mark_unconfirmed("t1", "missing", "alice", NOW, "timed out")
    assert book.entries("t1", ["missing"]) == {}


def test_a_released_effect_can_be_claimed_again(store):
    book = store.ledger
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert book.release("t1", "e1", "alice")
    assert book.entries("t1", ["e1"]) == {}
    assert book.claim("t1", "e1", "bob", NOW, LEASE).claimed


def test_an_unconfirmed_effect_is_settled_never_claimed_again(store):
    book = store.ledger
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert book.mark_unconfirmed("t1", "e1", "alice", NOW, "ReadTimeout after sending")
    for moment in (NOW, NOW + LEASE * 10):
        result = book.claim("t1", "e1", "bob", moment, LEASE)
        assert result.state is ClaimState.UNCONFIRMED and result.settled and result.unconfirmed
    assert book.done("t1", ["e1"]) == {"e1"}  # settled for callers: they move on
    assert book.unconfirmed("t1", ["e1", "e2"]) == {"e1"}
    entry = book.entries("t1", ["e1"])["e1"]
    assert entry.detail == "ReadTimeout after sending" and entry.owner == "alice"
    assert not book.release("t1", "e1", "alice") and not book.confirm("t1", "e1", "alice", NOW)


def test_failures_are_counted_across_claims_and_a_given_up_effect_is_settled(store):
    book = store.ledger
    for n, permanent in enumerate((False, True, True), start=1):
        assert book.claim("t1", "e1", f"w{n}", NOW + timedelta(minutes=n), LEASE).claimed
        got = book.note_failure("t1", "e1", NOW + timedelta(minutes=n), permanent=permanent)
        assert (got.attempts, got.refusals, got.first_at) == (n, n - 1, NOW + timedelta(minutes=1))
        if n < 3:
            assert book.release("t1", "e1", f"w{n}")
    assert book.note_failure("t2", "e1", NOW, permanent=True).attempts == 1  # another tenant's own
    assert not book.mark_gave_up("t1", "e1", "w1", NOW, "card deleted")  # not w1's any more
    assert book.mark_gave_up("t1", "e1", "w3", NOW, "card deleted: Not found")
    result = book.claim("t1", "e1", "w4", NOW + LEASE * 10, LEASE)
    assert result.state is ClaimState.GAVE_UP and result.settled and result.gave_up
    assert book.done("t1", ["e1"]) == {"e1"}
    assert book.entries("t1", ["e1"])["e1"].detail == "card deleted: Not found"
    assert book.record_gave_up("t1", "e1", "lead:1", "card deleted", {"attempts": 3}, NOW)
    assert not book.record_gave_up("t1", "e1", "lead:1", "card deleted", {"attempts": 3}, NOW)
    [row] = store.violations("t1", NOW - timedelta(days=1), NOW + timedelta(days=1), type="gave_up")
    assert (row.entity, row.violation_id) == ("lead:1", "gave_up:e1")
    details = json.loads(row.details) if isinstance(row.details, str) else row.details
    assert details == {"effect_id": "e1", "detail": "card deleted", "attempts": 3}


def test_an_unconfirmed_detail_is_capped_and_never_empty(store):
    book = store.ledger
    book.claim("t1", "long", "alice", NOW, LEASE)
    book.claim("t1", "empty", "alice", NOW, LEASE)
    assert book.mark_unconfirmed("t1", "long", "alice", NOW, "x" * 5000)
    assert book.mark_unconfirmed("t1", "empty", "alice", NOW, "")
    entries = book.entries("t1", ["long", "empty"])
    assert (len(entries["long"].detail), entries["empty"].detail) == (1000, "-")


def test_tenants_are_isolated_in_the_ledger(store):
    book = store.ledger
    assert book.claim("t1", "e1", "alice", NOW, LEASE).claimed
    assert book.claim("t2", "e1", "bob", NOW, LEASE).claimed  # the same id, another tenant's own
    book.confirm("t1", "e1", "alice", NOW)
    assert book.done("t2", ["e1"]) == set()
    assert not book.release("t1", "e1", "bob")  # bob's claim is in t2
    assert book.release("t2", "e1", "bob")
    assert book.done("t1", ["e1"]) == {"e1"}


def test_claim_many_reads_once_and_still_claims_conditionally(store):
    book = store.ledger
    book.claim("t1", "done", "x", NOW, LEASE)
    book.confirm("t1", "done", "x", NOW)
    book.claim("t1", "busy", "x", NOW, LEASE)
    book.claim("t1", "dead", "x", NOW - LEASE * 2, LEASE)
    results = book.claim_many("t1", ["done", "busy", "dead", "new", "new"], "me", NOW, LEASE)
    assert list(results) == ["done", "busy", "dead", "new"]
    assert {i: r.state for i, r in results.items()} == {
        "done": ClaimState.DONE,
        "busy": ClaimState.HELD,
        "dead": ClaimState.CLAIMED,
        "new": ClaimState.CLAIMED,
    }
    assert results["busy"].holder == "x"
    assert book.entries("t1", ["dead"])["dead"].owner == "me"
    assert book.claim_many("t1", [], "me", NOW, LEASE) == {}


def test_claim_unless_trusts_a_settling_entry_but_claims_conditionally(store):
    book = store.ledger
    book.claim("t1", "e1", "alice", NOW, LEASE)
    stale = book.entries("t1", ["e1"])["e1"]  # read while alice held it
    assert book.confirm("t1", "e1", "alice", NOW)
    assert book.claim_unless(stale, "t1", "e1", "bob", NOW, LEASE).held  # the entry said so: no write
    later = NOW + LEASE * 2
    # The entry says the lease ended; the claim still asks the store, which knows it is done.
    assert book.claim_unless(stale, "t1", "e1", "bob", later, LEASE).state is ClaimState.DONE
    assert book.claim_unless(None, "t1", "e2", "bob", NOW, LEASE).claimed
    assert book.entries("t1", ["e1", "e2"])["e2"].owner == "bob"


def test_mark_done_settles_whatever_the_row_said(store):
    book = store.ledger
    book.claim("t1", "held", "alice", NOW, LEASE)
    store.mark_effects("t1", ["held", "new", "new"], NOW + timedelta(seconds=1))
    entries = book.entries("t1", ["held", "new"])
    assert {i: (e.status, e.owner, e.lease_until) for i, e in entries.items()} == {
        "held": (Status.DONE, None, None),
        "new": (Status.DONE, None, None),
    }
    assert not book.confirm("t1", "held", "alice", NOW)  # alice's claim is gone


def test_the_store_delegates_to_the_ledger(store):
    store.mark_effects("t1", ["x", "y"], NOW)
    assert store.effects_done("t1", ["x", "y", "z"]) == {"x", "y"}
    assert store.effects_done("t2", ["x"]) == set()
    assert store.ledger.claim("t1", "x", "me", NOW, LEASE).state is ClaimState.DONE
    assert store.ledger.claim("t1", "z", "me", NOW, LEASE).claimed
    assert store.effects_done("t1", ["z"]) == set()


def test_an_unconfirmed_message_is_journalled_once(store):
    book = store.ledger
    assert book.record_unconfirmed("t1", "e1", "telegram:-100", "ReadTimeout", {"text": "hi"}, NOW)
    assert not book.record_unconfirmed("t1", "e1", "telegram:-100", "ReadTimeout", {"text": "hi"}, NOW)
    [row] = store.violations("t1", NOW - timedelta(hours=1), NOW + timedelta(hours=1), type=UNCONFIRMED_TYPE)
    assert (row.violation_id, row.type, row.entity, row.manager, row.occurred_at) == (
        "unconfirmed:e1",
        UNCONFIRMED_TYPE,
        "telegram:-100",
        None,
        NOW,
    )
    assert row.details == {"effect_id": "e1", "detail": "ReadTimeout", "text": "hi"}
    assert store.violations("t1", NOW, NOW, type="late_first_processing") == []


# ----- journal


def test_a_violation_is_journalled_once(store):
    v = violation("late:lead:1", a=1)
    assert store.put_violation("t1", v, NOW)
    assert not store.put_violation("t1", v, NOW + timedelta(minutes=1))
    rows = store.violations("t1", NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert [(r.violation_id, r.type, r.entity, r.manager, r.occurred_at, r.details) for r in rows] == [
        ("late:lead:1", "late_first_processing", "lead:1", "7", NOW, {"a": 1})
    ]
    assert store.violations("t2", NOW - timedelta(hours=1), NOW + timedelta(hours=1)) == []


def test_the_same_violation_at_another_moment_is_another_row(store):
    # Rows are keyed by (occurred_at, violation_id): callers keep occurred_at stable for one breach.
    assert store.put_violation("t1", violation("v"), NOW)
    assert store.put_violation("t1", violation("v", NOW + timedelta(minutes=1)), NOW)
    assert len(store.violations("t1", NOW, NOW + timedelta(minutes=1))) == 2


def test_violations_of_a_closed_period_and_type_in_time_order(store):
    moments = {
        "before": NOW - timedelta(microseconds=1),
        "start": NOW,
        "inside": NOW + timedelta(seconds=30, microseconds=500_000),
        "end": NOW + timedelta(minutes=1),
        "after": NOW + timedelta(minutes=1, microseconds=1),
    }
    for vid, moment in reversed(moments.items()):
        store.put_violation("t1", violation(vid, moment.astimezone(MSK)), NOW)
    store.put_violation("t1", violation("other", NOW + timedelta(seconds=1), type="missed_call"), NOW)
    rows = store.violations("t1", NOW.astimezone(MSK), NOW + timedelta(minutes=1))
    assert [r.violation_id for r in rows] == ["start", "other", "inside", "end"]
    assert rows[2].occurred_at == moments["inside"]
    typed = store.violations("t1", NOW, NOW + timedelta(minutes=1), type="late_first_processing")
    assert [r.violation_id for r in typed] == ["start", "inside", "end"]


def test_violations_of_several_types_and_of_one_manager(store):
    def put(vid: str, minutes: int, type: str, manager: str | None) -> None:
        v = Violation(vid, type, ref(minutes), manager, NOW + timedelta(minutes=minutes))
        assert store.put_violation("t1", v, NOW)

    put("late-7", 1, "late_first_processing", "7")
    put("reject-8", 2, "improper_rejection", "8")
    put("reject-7", 3, "improper_rejection", "7")
    put("gave-up", 4, "gave_up", None)
    put("late-7-again", 5, "late_first_processing", "7")
    store.put_violation("t2", Violation("t2", "late_first_processing", ref(9), "7", NOW), NOW)
    end = NOW + timedelta(hours=1)

    def ids(**filters) -> list[str]:
        return [r.violation_id for r in store.violations("t1", NOW, end, **filters)]

    assert ids() == ["late-7", "reject-8", "reject-7", "gave-up", "late-7-again"]
    assert ids(type=("late_first_processing", "gave_up")) == ["late-7", "gave-up", "late-7-again"]
    assert ids(type=["improper_rejection"]) == ids(type="improper_rejection") == ["reject-8", "reject-7"]
    assert ids(type=()) == ids()  # no types: no filter
    assert ids(manager="7") == ["late-7", "reject-7", "late-7-again"]
    assert ids(manager="7", type="improper_rejection") == ["reject-7"]
    assert ids(manager="9") == ids(manager="") == ids(type="missed_call") == []
    # A row without a manager matches no manager filter; the period still bounds the filters.
    assert ids(manager="unassigned") == []
    assert [r.violation_id for r in store.violations("t1", NOW, NOW + timedelta(minutes=3), manager="7")] == [
        "late-7",
        "reject-7",
    ]
    # `limit`: the oldest rows that match.
    assert ids(manager="7", limit=2) == ["late-7", "reject-7"]
    assert ids(limit=1) == ["late-7"] and ids(limit=0) == [] and ids(limit=99) == ids()
    assert [r.entity for r in store.violations("t1", NOW, end, type="gave_up")] == ["lead:4"]


def test_violation_filters_take_any_text(store):
    # What the read API passes through after its own checks: quotes, non-ASCII, a DynamoDB keyword.
    odd = 'Анна "7", ok'
    store.put_violation("t1", Violation("v", "late_first_processing", ref(1), odd, NOW), NOW)
    assert [r.manager for r in store.violations("t1", NOW, NOW, manager=odd)] == [odd]
    assert store.violations("t1", NOW, NOW, manager="type") == []


def test_violation_details_come_back_as_json(store):
    store.put_violation("t1", violation("v", seen=NOW, n=[1, 2], text="опоздание"), NOW)
    [row] = store.violations("t1", NOW, NOW)
    assert row.details == {"seen": str(NOW), "n": [1, 2], "text": "опоздание"}


# ----- checkpoints


def test_checkpoints_are_overwritten_per_tenant_and_name(store):
    assert store.get_checkpoint("t1", "sweep") is None
    store.set_checkpoint("t1", "sweep", "2025-11-10")
    store.set_checkpoint("t1", "sweep", "2025-11-11")
    store.set_checkpoint("t1", "other", "x")
    assert store.get_checkpoint("t1", "sweep") == "2025-11-11"
    assert store.get_checkpoint("t1", "other") == "x"
    assert store.get_checkpoint("t2", "sweep") is None


# ----- races (memory; DynamoDB is raced over moto's server in tests/integration)


def _race(n: int, work: Callable[[int], object]) -> list[object]:
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: a missing lock shows
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    return results


# A race is lost only now and then: every test runs several rounds.
ROUNDS = 20


def test_racing_calls_each_count_once_in_memory():
    for _ in range(ROUNDS // 2):
        store = MemoryStore()
        store.create_lead(lead(42), NOW)
        # 50 distinct calls, every fifth a touch, each reported by two paths at once.
        new = _race(100, lambda i, store=store: store.record_call("t1", call(i % 50), DAY, i % 5 == 0, NOW))
        assert sum(bool(n) for n in new) == 50  # each call was new to exactly one path
        assert totals(store) == (50, 10)
        assert store.day_counts("t1", DAY) == {ref(42): (50, 10)}
        assert len(store.calls_of("t1", ref(42))) == 50
        assert len(store.touches_on("t1", DAY)) == 10


def test_racing_claims_of_one_effect_have_one_winner_in_memory():
    book = MemoryStore().ledger
    for n in range(ROUNDS):
        results = _race(40, lambda i, n=n: book.claim("t1", f"e{n}", f"w{i}", NOW, LEASE))
        assert sum(r.claimed for r in results) == 1  # type: ignore[attr-defined]
        holder = book.entries("t1", [f"e{n}"])[f"e{n}"].owner
        assert {r.holder for r in results if r.held} == {holder}  # type: ignore[attr-defined]


def test_racing_claim_many_gives_each_effect_one_owner_in_memory():
    ids = [f"e{n}" for n in range(30)]
    for _ in range(ROUNDS // 2):
        book = MemoryStore().ledger
        results = _race(
            20, lambda i, book=book: book.claim_many("t1", ids[i % 10 :] + ids[: i % 10], f"w{i}", NOW, LEASE)
        )
        for effect_id in ids:
            owners = [f"w{i}" for i, r in enumerate(results) if r[effect_id].claimed]  # type: ignore[index]
            assert owners == [book.entries("t1", [effect_id])[effect_id].owner]


def test_racing_sweeps_claim_and_count_a_card_once_in_memory():
    store = MemoryStore()
    for n in range(ROUNDS):
        store.create_lead(lead(n), NOW)

        def sweep(i: int, n: int = n) -> bool:
            return store.claim(lead(n), f"s{i}", NOW, HOLD) and store.close_verdict(
                lead(n), "late", f"s{i}", NOW, "2025-11-11", "7"
            )

        assert sum(bool(r) for r in _race(30, sweep)) == 1
    assert [(r.on_time, r.late) for r in store.timeliness_stats("t1", DAY, DAY)] == [(0, ROUNDS)]


def test_a_tenants_rows_expire_after_its_retention(store):
    """Cards, a card's calls of a day, counters and journal rows carry their expiry (DynamoDB TTL);
    the memory store does not model expiry, so this reads DynamoDB's rows only."""
    if isinstance(store, MemoryStore):
        pytest.skip("expiry is DynamoDB's (TTL); the memory store keeps everything")
    from leadwatch.store.models import CallDayItem, JournalItem, LeadItem, StateItem

    store.retention = lambda tenant: timedelta(days=30) if tenant == "t1" else timedelta(days=396)
    state = lead(1)
    store.create_lead(state, NOW)
    call = Call("c1", ref(1), "out", "7", NOW, 95, answered=True)
    store.record_call("t1", call, DAY, True, NOW)
    store.record_call("t1", replace(call, key="c2", started_at=NOW + timedelta(hours=2)), DAY, False, NOW)
    store.claim(state, "a", NOW, HOLD)
    store.close_verdict(state, "on_time", "a", NOW, DAY.isoformat(), "7")
    store.put_violation("t1", Violation("v1", "late", ref(1), "7", NOW), NOW)
    month = (NOW + timedelta(days=30)).timestamp()
    assert LeadItem.get("t1", "lead:1").expires_at.timestamp() == state.created_at.timestamp() + 30 * 86400
    # Set by the day's first call, not moved by later ones.
    assert CallDayItem.get("t1", f"calls#{DAY}#lead:1").expires_at.timestamp() == month
    assert StateItem.get("t1", f"stats#timeliness#{DAY}#7").expires_at.timestamp() == (
        state.created_at.timestamp() + 30 * 86400
    )
    [row] = JournalItem.query("t1")
    assert row.expires_at.timestamp() == month
    store.create_lead(lead(2, tenant="t2"), NOW)
    assert LeadItem.get("t2", "lead:2").expires_at > NOW + timedelta(days=390)
