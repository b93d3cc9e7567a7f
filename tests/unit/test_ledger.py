"""The effect ledger against in-process moto: claims, leases, and the owner conditions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from leadwatch.store.dynamodb import LEDGER_TTL, Store
from leadwatch.store.ledger import UNCONFIRMED_TYPE, ClaimState, EffectLedger, Status
from leadwatch.store.models import StateItem

NOW = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)
LEASE = timedelta(minutes=2)


def ledger() -> EffectLedger:
    return EffectLedger(LEDGER_TTL)


def test_an_effect_is_claimed_once(aws):
    book = ledger()
    assert book.claim("t1", "e1", "alice", NOW, LEASE).claimed
    second = book.claim("t1", "e1", "bob", NOW + timedelta(seconds=5), LEASE)
    assert second.state is ClaimState.HELD and not second.settled
    assert second.holder == "alice" and second.lease_until == NOW + LEASE
    assert book.done("t1", ["e1"]) == set()  # claimed is not done


def test_an_expired_claim_is_taken_over(aws):
    book = ledger()
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert book.claim("t1", "e1", "bob", NOW + LEASE, LEASE).state is ClaimState.HELD  # not yet expired
    assert book.claim("t1", "e1", "bob", NOW + LEASE + timedelta(seconds=1), LEASE).claimed
    # The claimant that died cannot settle what is no longer its own.
    assert not book.confirm("t1", "e1", "alice", NOW + timedelta(minutes=3))
    assert not book.release("t1", "e1", "alice")
    assert book.confirm("t1", "e1", "bob", NOW + timedelta(minutes=3))
    assert book.done("t1", ["e1"]) == {"e1"}


def test_a_confirmed_effect_is_done_for_good(aws):
    book = ledger()
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert book.confirm("t1", "e1", "alice", NOW)
    later = NOW + timedelta(days=1)
    assert book.claim("t1", "e1", "bob", later, LEASE).state is ClaimState.DONE
    assert not book.confirm("t1", "e1", "alice", later)  # done is not a claim any more
    assert not book.release("t1", "e1", "alice")
    item = StateItem.get("t1", "effect#e1")
    assert item.status == "done" and item.lease_until is None
    assert item.expires_at == NOW + LEDGER_TTL


def test_confirm_release_and_unconfirmed_need_the_owner(aws):
    book = ledger()
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert not book.confirm("t1", "e1", "bob", NOW)
    assert not book.release("t1", "e1", "bob")
    assert not book.mark_unconfirmed("t1", "e1", "bob", NOW, "timed out")
    assert book.entries("t1", ["e1"])["e1"].status is Status.CLAIMED
    assert not book.confirm("t1", "missing", "alice", NOW)
    assert not book.release("t1", "missing", "alice")


def test_a_released_effect_can_be_claimed_again(aws):
    book = ledger()
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert book.release("t1", "e1", "alice")
    assert book.entries("t1", ["e1"]) == {}
    assert book.claim("t1", "e1", "bob", NOW, LEASE).claimed


def test_an_unconfirmed_effect_is_settled_never_claimed_again(aws):
    book = ledger()
    book.claim("t1", "e1", "alice", NOW, LEASE)
    assert book.mark_unconfirmed("t1", "e1", "alice", NOW, "ReadTimeout after sending")
    for moment in (NOW, NOW + LEASE * 10):
        assert book.claim("t1", "e1", "bob", moment, LEASE).state is ClaimState.UNCONFIRMED
    assert book.done("t1", ["e1"]) == {"e1"}  # settled for callers: they move on
    assert book.unconfirmed("t1", ["e1"]) == {"e1"}
    entry = book.entries("t1", ["e1"])["e1"]
    assert entry.detail == "ReadTimeout after sending" and entry.owner == "alice"
    assert not book.release("t1", "e1", "alice") and not book.confirm("t1", "e1", "alice", NOW)


def test_tenants_are_isolated(aws):
    book = ledger()
    assert book.claim("t1", "e1", "alice", NOW, LEASE).claimed
    assert book.claim("t2", "e1", "bob", NOW, LEASE).claimed  # the same id, another tenant's own
    book.confirm("t1", "e1", "alice", NOW)
    assert book.done("t2", ["e1"]) == set()
    assert not book.release("t1", "e1", "bob")  # bob's claim is in t2
    assert book.release("t2", "e1", "bob")
    assert book.done("t1", ["e1"]) == {"e1"}


def test_claim_many_reads_once_and_still_claims_conditionally(aws):
    book = ledger()
    book.claim("t1", "done", "x", NOW, LEASE)
    book.confirm("t1", "done", "x", NOW)
    book.claim("t1", "busy", "x", NOW, LEASE)
    book.claim("t1", "dead", "x", NOW - LEASE * 2, LEASE)
    results = book.claim_many("t1", ["done", "busy", "dead", "new", "new"], "me", NOW, LEASE)
    assert {i: r.state for i, r in results.items()} == {
        "done": ClaimState.DONE,
        "busy": ClaimState.HELD,
        "dead": ClaimState.CLAIMED,
        "new": ClaimState.CLAIMED,
    }
    assert book.entries("t1", ["dead"])["dead"].owner == "me"


def test_rows_written_before_claims_count_as_done(aws):
    # The ledger rows of earlier releases had no status: they are done, never claimed again.
    StateItem("t1", "effect#old", at=NOW.timestamp(), expires_at=NOW + LEDGER_TTL).save()
    book = ledger()
    assert book.done("t1", ["old"]) == {"old"}
    assert book.claim("t1", "old", "me", NOW, LEASE).state is ClaimState.DONE


def test_the_store_delegates_to_the_ledger(aws):
    store = Store()
    store.mark_effects("t1", ["x", "y"], NOW)
    assert store.effects_done("t1", ["x", "y", "z"]) == {"x", "y"}
    assert store.ledger.claim("t1", "x", "me", NOW, LEASE).state is ClaimState.DONE
    assert store.ledger.claim("t1", "z", "me", NOW, LEASE).claimed
    assert store.effects_done("t1", ["z"]) == set()


def test_an_unconfirmed_message_is_journalled_once(aws):
    store = Store()
    book = store.ledger
    assert book.record_unconfirmed("t1", "e1", "telegram:-100", "ReadTimeout", {"text": "hi"}, NOW)
    assert not book.record_unconfirmed("t1", "e1", "telegram:-100", "ReadTimeout", {"text": "hi"}, NOW)
    [row] = store.violations("t1", NOW - timedelta(hours=1), NOW + timedelta(hours=1), type=UNCONFIRMED_TYPE)
    assert row.entity == "telegram:-100" and row.manager is None
    assert row.details == {"effect_id": "e1", "detail": "ReadTimeout", "text": "hi"}
