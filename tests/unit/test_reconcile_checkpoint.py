"""Where reconciliation's checkpoint moves after a listing, and when it is not written at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from leadwatch.reconcile import OVERLAP, next_checkpoint

NOW = datetime(2025, 11, 11, 7, 0, tzinfo=UTC)


def listed(*minutes_ago: float) -> list[SimpleNamespace]:
    return [SimpleNamespace(modified_at=NOW - timedelta(minutes=m)) for m in minutes_ago]


def test_the_first_run_sets_it_even_with_nothing_listed() -> None:
    since = NOW - timedelta(days=1)
    assert next_checkpoint(None, [], since, NOW) == NOW - OVERLAP
    assert next_checkpoint(None, listed(30, 20), since, NOW) == NOW - timedelta(minutes=20)


def test_nothing_newer_leaves_it_unwritten() -> None:
    stored = (NOW - timedelta(minutes=20)).isoformat()
    since = NOW - timedelta(minutes=25)
    assert next_checkpoint(stored, [], since, NOW) is None
    assert next_checkpoint(stored, listed(20), since, NOW) is None  # the overlap lists it again
    assert next_checkpoint(stored, listed(22), since, NOW) is None  # never back


def test_a_newer_change_moves_it_but_never_past_now() -> None:
    stored = (NOW - timedelta(minutes=20)).isoformat()
    since = NOW - timedelta(minutes=25)
    assert next_checkpoint(stored, listed(20, 3), since, NOW) == NOW - timedelta(minutes=3)
    assert next_checkpoint(stored, listed(-2), since, NOW) == NOW  # a CRM clock ahead of ours
