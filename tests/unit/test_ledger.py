"""The effect ledger in DynamoDB only: what the contract suite (tests/contract) cannot show on both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from leadwatch.store.dynamodb import LEDGER_TTL
from leadwatch.store.ledger import ClaimState, EffectLedger
from leadwatch.store.models import StateItem

NOW = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)
LEASE = timedelta(minutes=2)


def ledger() -> EffectLedger:
    return EffectLedger(LEDGER_TTL)


def test_rows_written_before_claims_count_as_done(aws):
    # The ledger rows of earlier releases had no status: they are done, never claimed again.
    StateItem("t1", "effect#old", at=NOW.timestamp(), expires_at=NOW + LEDGER_TTL).save()
    book = ledger()
    assert book.done("t1", ["old"]) == {"old"}
    assert book.claim("t1", "old", "me", NOW, LEASE).state is ClaimState.DONE
