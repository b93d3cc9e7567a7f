"""The data access layer against in-process moto: dedupe, the sparse due index,
claims, and the verdict transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from leadwatch.effects import Violation
from leadwatch.events import EntityRef, EntityType
from leadwatch.store.dynamodb import Store
from leadwatch.store.models import MODELS
from leadwatch.store.schema import table_definitions
from workflows.timeliness.rules import LeadState

NOW = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)


def lead(n: int, due: datetime, tenant: str = "t1") -> LeadState:
    return LeadState(tenant, EntityRef(EntityType.LEAD, str(n)), due - timedelta(minutes=15), due, "NEW", "7")


def test_models_match_the_deployment_template():
    definitions = {props["TableName"]: props for props in table_definitions().values()}
    for model in MODELS:
        props = definitions[model.Meta.table_name]
        schema = model._get_schema()
        assert {(k["AttributeName"], k["KeyType"]) for k in props["KeySchema"]} == {
            (k["AttributeName"], k["KeyType"]) for k in schema["key_schema"]
        }
        template_indexes = {i["IndexName"]: i for i in props.get("GlobalSecondaryIndexes", [])}
        model_indexes = {i["index_name"]: i for i in schema["global_secondary_indexes"]}
        assert set(template_indexes) == set(model_indexes)
        for name, index in template_indexes.items():
            assert {(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]} == {
                (k["AttributeName"], k["KeyType"]) for k in model_indexes[name]["key_schema"]
            }
        declared = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
        modelled = {a["AttributeName"]: a["AttributeType"] for a in schema["attribute_definitions"]}
        assert declared == modelled


def test_an_event_is_stored_once(aws):
    store = Store()
    assert store.put_event("t1", "b24:ONCRMLEADADD:1:100", {"x": 1}, NOW)
    assert not store.put_event("t1", "b24:ONCRMLEADADD:1:100", {"x": 1}, NOW)
    assert store.put_event("t2", "b24:ONCRMLEADADD:1:100", {"x": 1}, NOW)  # another tenant's is its own
    assert len(store.events("t1")) == 1


def test_due_index_reads_only_what_is_due(aws):
    store = Store()
    for n in range(30):
        store.create_lead(lead(n, NOW + timedelta(minutes=n - 10)), NOW)  # 11 due (n <= 10), 19 later
    store.create_lead(lead(99, NOW - timedelta(minutes=1), tenant="t2"), NOW)
    due = list(store.due_leads("t1", NOW, since=NOW.date() - timedelta(days=7)))
    assert sorted(int(s.entity.id) for _, s in due) == list(range(11))


def test_a_card_stored_overdue_lands_in_todays_bucket(aws):
    store = Store()
    store.create_lead(lead(1, NOW - timedelta(days=3)), NOW)  # found late by reconciliation
    assert [s.entity.id for _, s in store.due_leads("t1", NOW, since=NOW.date())] == ["1"]


def test_due_index_spans_days_and_the_lookback(aws):
    store = Store()
    store.create_lead(lead(1, NOW - timedelta(days=2)), NOW - timedelta(days=2))
    store.create_lead(lead(2, NOW - timedelta(days=9)), NOW - timedelta(days=9))
    due = list(store.due_leads("t1", NOW, since=NOW.date() - timedelta(days=7)))
    assert [s.entity.id for _, s in due] == ["1"]


def test_create_is_conditional(aws):
    store = Store()
    assert store.create_lead(lead(1, NOW), NOW)
    assert not store.create_lead(lead(1, NOW + timedelta(hours=1)), NOW)
    assert store.get_lead("t1", EntityRef(EntityType.LEAD, "1")).due_at == NOW


def test_processing_time_is_set_once(aws):
    from dataclasses import replace

    store = Store()
    state = lead(1, NOW)
    store.create_lead(state, NOW)
    store.update_lead(
        replace(state, stage="IN_PROCESS", processed_at=NOW - timedelta(minutes=5), processed_how="stage")
    )
    store.update_lead(replace(state, stage="CONVERTED", processed_at=NOW, processed_how="activity:call"))
    got = store.get_lead("t1", state.entity)
    assert got.stage == "CONVERTED"
    assert got.processed_at == NOW - timedelta(minutes=5) and got.processed_how == "stage"


def test_claims_exclude_an_overlapping_sweep_until_they_expire(aws):
    store = Store()
    state = lead(1, NOW)
    store.create_lead(state, NOW)
    assert store.claim(state, "a", NOW, timedelta(minutes=5))
    assert not store.claim(state, "b", NOW + timedelta(minutes=1), timedelta(minutes=5))
    assert store.claim(state, "b", NOW + timedelta(minutes=6), timedelta(minutes=5))  # "a" crashed


def test_close_verdict_counts_once_and_closes_once(aws):
    store = Store()
    state = lead(1, NOW)
    store.create_lead(state, NOW)
    assert store.claim(state, "a", NOW, timedelta(minutes=5))
    assert not store.close_verdict(state, "late", "b", NOW, "2025-11-11", "7")  # not b's claim
    assert store.close_verdict(state, "late", "a", NOW, "2025-11-11", "7")
    assert not store.close_verdict(state, "late", "a", NOW, "2025-11-11", "7")  # already closed
    assert list(store.due_leads("t1", NOW, since=NOW.date())) == []
    [row] = store.timeliness_stats("t1", NOW.date(), NOW.date())
    assert (row.manager, row.on_time, row.late) == ("7", 0, 1)
    assert store.get_lead("t1", state.entity).verdict == "late"


def test_released_claim_can_be_taken_again(aws):
    store = Store()
    state = lead(1, NOW)
    store.create_lead(state, NOW)
    store.claim(state, "a", NOW, timedelta(minutes=5))
    store.release(state, "a")
    assert store.claim(state, "b", NOW, timedelta(minutes=5))


def test_ledger_and_journal(aws):
    store = Store()
    store.mark_effects("t1", ["x", "y"], NOW)
    assert store.effects_done("t1", ["x", "y", "z"]) == {"x", "y"}
    assert store.effects_done("t2", ["x"]) == set()
    violation = Violation(
        "late:lead:1", "late_first_processing", EntityRef(EntityType.LEAD, "1"), "7", NOW, {"a": 1}
    )
    assert store.put_violation("t1", violation, NOW)
    assert not store.put_violation("t1", violation, NOW + timedelta(minutes=1))
    rows = store.violations("t1", NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert [(r.violation_id, r.manager, r.details) for r in rows] == [("late:lead:1", "7", {"a": 1})]
    assert store.violations("t2", NOW - timedelta(hours=1), NOW + timedelta(hours=1)) == []


def test_rejects_are_kept_capped(aws):
    store = Store()
    store.put_reject("t1", 400, "missing data[FIELDS][ID]", b"x" * 20000, NOW, "abc")
    [row] = store.rejects("t1")
    assert row.status == 400 and len(row.body) == 8192 and "FIELDS" in row.reason


def test_a_sweep_that_died_between_count_and_close_is_not_counted_twice(aws):
    store = Store()
    state = lead(1, NOW)
    store.create_lead(state, NOW)
    store.claim(state, "a", NOW, timedelta(minutes=5))
    store.close_verdict(state, "late", "a", NOW, "2025-11-11", "7")
    # Simulate "a" dying after counting: reopen the card as if the close never happened.
    from leadwatch.store.models import LeadItem

    LeadItem("t1", state.entity.key).update(
        actions=[LeadItem.verdict.remove(), LeadItem.due_bucket.set("t1#2025-11-11")]
    )
    later = NOW + timedelta(minutes=6)
    assert store.claim(state, "b", later, timedelta(minutes=5))
    assert store.close_verdict(state, "late", "b", later, "2025-11-11", "7")
    [row] = store.timeliness_stats("t1", NOW.date(), NOW.date())
    assert row.late == 1


def test_a_verdict_pinned_by_a_dead_sweep_comes_back_with_the_card(aws):
    from leadwatch.store.models import LeadItem

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
