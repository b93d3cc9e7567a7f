"""A process's state in DynamoDB with workers racing (moto's server over HTTP, served one
request at a time as atomically as DynamoDB): counts once per token, reordered snapshots end
in the newest state, one of several optimistic updates wins."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from leadwatch.state import ProcessState
from leadwatch.store.process_state import DynamoState

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(moto_tables):
    return DynamoState()


def race(jobs: list[Callable[[], object]]) -> list[object]:
    results: list[object] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(i: int) -> None:
        start.wait()
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_twenty_workers_count_each_lead_once(store):
    state = ProcessState(store, "sources")
    leads = [f"lead:{n}" for n in range(10)]
    jobs = [lambda lead=lead: state.count("race-1", "day#site", once=lead) for lead in leads * 2]
    assert sum(bool(won) for won in race(jobs)) == 10
    assert state.get("race-1", "day#site").count == 10


def test_reordered_snapshots_of_one_card_end_in_the_newest(store):
    stale: list[str] = []
    state = ProcessState(store, "cards", on_stale=stale.append)
    snapshots = [({"stage": f"S{n}", "modified": n}, float(n)) for n in range(20)]
    random.Random(7).shuffle(snapshots)
    race(
        [
            lambda value=value, order=order: state.advance("race-2", "lead:1", value, order)
            for value, order in snapshots
        ]
    )
    record = state.get("race-2", "lead:1")
    assert record.value == {"stage": "S19", "modified": 19} and record.order == 19.0
    assert len(stale) == 20 - record.version  # every write that did not land was counted


def test_one_of_twenty_updates_over_the_same_version_wins(store):
    state = ProcessState(store, "cards")
    state.create("race-3", "k", {"v": 0})
    version = state.get("race-3", "k").version
    won = race([lambda n=n: state.update("race-3", "k", {"v": n}, version) for n in range(1, 21)])
    assert sum(bool(w) for w in won) == 1
    assert state.get("race-3", "k").value == {"v": won.index(True) + 1}


def test_concurrent_and_reordered_sightings_of_one_card_end_in_the_newest(store):
    from datetime import UTC, datetime, timedelta

    from leadwatch.cards import LeadState
    from leadwatch.events import EntityRef, EntityType
    from leadwatch.store.dynamodb import Store

    leads = Store()
    start = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)
    card = LeadState(
        "race-4", EntityRef(EntityType.LEAD, "9"), start, start + timedelta(minutes=15), "NEW", "7"
    )
    assert leads.create_lead(card, start)
    sightings = [
        LeadState(
            card.tenant,
            card.entity,
            start,
            card.due_at,
            stage=f"S{n}",
            responsible=str(n),
            title=f"t{n}",
            crm_modified_at=start + timedelta(seconds=n),
            # One old sighting carries the proof of processing: it must land although it is stale.
            processed_at=start + timedelta(minutes=1) if n == 3 else None,
            processed_how="activity:call" if n == 3 else None,
        )
        for n in range(1, 21)
    ]
    random.Random(11).shuffle(sightings)
    race([lambda s=s: leads.update_lead(s) for s in sightings])
    final = leads.get_lead(card.tenant, card.entity)
    assert (final.stage, final.responsible, final.title) == ("S20", "20", "t20")
    assert final.crm_modified_at == start + timedelta(seconds=20)
    assert final.processed_at == start + timedelta(minutes=1) and final.processed_how == "activity:call"
