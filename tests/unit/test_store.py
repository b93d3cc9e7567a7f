"""What only the DynamoDB store can show, against in-process moto: its models against the
deployment template, and a sweep dying between the writes of `close_verdict` (in memory the
three are one step). Everything a caller can observe on both stores is in
tests/contract/test_store_contract.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from leadwatch.cards import LeadState
from leadwatch.events import EntityRef, EntityType
from leadwatch.store.dynamodb import Store
from leadwatch.store.models import MODELS, LeadItem
from leadwatch.store.schema import table_definitions

NOW = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)


def lead(n: int, due: datetime, tenant: str = "t1") -> LeadState:
    return LeadState(tenant, EntityRef(EntityType.LEAD, str(n)), due - timedelta(minutes=15), due, "NEW", "7")


def test_models_match_the_deployment_template():
    # Several models share the state table; each declares the indexes it reads, so the indexes and
    # attribute definitions are compared per table, over its models together.
    definitions = {props["TableName"]: props for props in table_definitions().values()}
    tables: dict[str, list] = {}
    for model in MODELS:
        tables.setdefault(model.Meta.table_name, []).append(model)
    for table, models in tables.items():
        props = definitions[table]
        model_indexes: dict[str, dict] = {}
        modelled: dict[str, str] = {}
        for model in models:
            schema = model._get_schema()
            assert {(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]} == {
                (k["AttributeName"], k["KeyType"]) for k in schema["key_schema"]
            }
            model_indexes |= {i["index_name"]: i for i in schema["global_secondary_indexes"]}
            modelled |= {a["AttributeName"]: a["AttributeType"] for a in schema["attribute_definitions"]}
        template_indexes = {i["IndexName"]: i for i in props.get("GlobalSecondaryIndexes", [])}
        assert set(template_indexes) == set(model_indexes), table
        for name, index in template_indexes.items():
            assert {(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]} == {
                (k["AttributeName"], k["KeyType"]) for k in model_indexes[name]["key_schema"]
            }
            assert (
                index["Projection"]["ProjectionType"] == model_indexes[name]["projection"]["ProjectionType"]
            )
        declared = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
        assert declared == modelled, table


def test_a_sweep_that_died_between_count_and_close_is_not_counted_twice(aws):
    store = Store()
    state = lead(1, NOW)
    store.create_lead(state, NOW)
    store.claim(state, "a", NOW, timedelta(minutes=5))
    store.close_verdict(state, "late", "a", NOW, "2025-11-11", "7")
    # Simulate "a" dying after counting: reopen the card as if the close never happened.
    LeadItem("t1", state.entity.key).update(
        actions=[LeadItem.verdict.remove(), LeadItem.due_bucket.set("t1#2025-11-11")]
    )
    later = NOW + timedelta(minutes=6)
    assert store.claim(state, "b", later, timedelta(minutes=5))
    assert store.close_verdict(state, "late", "b", later, "2025-11-11", "7")
    [row] = store.timeliness_stats("t1", NOW.date(), NOW.date())
    assert row.late == 1


def test_a_verdict_pinned_by_a_dead_sweep_comes_back_with_the_card(aws):
    store = Store()
    state = lead(1, NOW)
    store.create_lead(state, NOW)
    assert store.claim(state, "a", NOW, timedelta(minutes=5))
    # Sweep "a" pinned its verdict (its effects all done) and died before counting and closing.
    LeadItem("t1", state.entity.key).update(actions=[LeadItem.verdict_pending.set("late")])
    later = NOW + timedelta(minutes=6)
    [(_, again)] = list(store.due_leads("t1", later, since=NOW.date()))
    assert again.pending_verdict == "late"
    assert store.claim(again, "b", later, timedelta(minutes=5))
    assert store.close_verdict(again, again.pending_verdict, "b", later, "2025-11-11", "7")
    [row] = store.timeliness_stats("t1", NOW.date(), NOW.date())
    assert (row.on_time, row.late) == (0, 1)
    assert store.get_lead("t1", state.entity).verdict == "late"


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="close_verdict's counter remembers the card per (day, manager): a new owner counts it again",
)
def test_a_card_counted_before_a_crash_is_not_counted_again_for_its_new_owner(aws):
    from dataclasses import replace

    store = Store()
    state = lead(1, NOW)
    store.create_lead(state, NOW)
    store.claim(state, "a", NOW, timedelta(minutes=5))
    store.close_verdict(state, "late", "a", NOW, "2025-11-11", "7")
    # "a" died after counting and before closing; meanwhile the card changed hands.
    LeadItem("t1", state.entity.key).update(
        actions=[
            LeadItem.verdict.remove(),
            LeadItem.verdict_pending.set("late"),
            LeadItem.due_bucket.set("t1#2025-11-11"),
        ]
    )
    store.update_lead(replace(state, responsible="9"))
    later = NOW + timedelta(minutes=6)
    [(_, again)] = list(store.due_leads("t1", later, since=NOW.date()))
    assert store.claim(again, "b", later, timedelta(minutes=5))
    assert store.close_verdict(again, again.pending_verdict, "b", later, "2025-11-11", again.responsible)
    rows = store.timeliness_stats("t1", NOW.date(), NOW.date())
    assert sum(row.late for row in rows) == 1
