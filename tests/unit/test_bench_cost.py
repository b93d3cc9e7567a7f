"""The cost benchmark's arithmetic on crafted counts: DynamoDB's capacity rules, schedules, the
month and its bill (bench/cost_model.py), and the small pure parts of the meter. The replay itself
(`python -m bench cost`, minutes) is not part of the test suite."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.cost import GROUPS, TaggedDriver, configured_memory, split
from bench.cost_meter import CostMeter
from bench.cost_model import (
    MONTH_MINUTES,
    PRICES,
    IndexSchema,
    Measured,
    Scenario,
    TableSchema,
    alarm_metrics,
    bill,
    billed_ms,
    fires_per_month,
    index_entry,
    item_kind,
    item_size,
    month_usage,
    number_size,
    read_units,
    storage_bytes,
    top_details,
    write_units,
)

LEADS = TableSchema(
    "leadwatch-leads",
    ("tenant", "entity"),
    (
        IndexSchema("due-index", ("due_bucket", "due_at"), "ALL"),
        IndexSchema("plan-index", ("plan_bucket", "entity"), "KEYS_ONLY"),
    ),
)


def card(**extra: dict) -> dict:
    item = {"tenant": {"S": "t1"}, "entity": {"S": "lead:42"}, "stage": {"S": "NEW"}}
    item.update(extra)
    return item


def padded(size: int) -> dict:
    """A card of exactly `size` bytes (the padding attribute makes up the rest)."""
    item = card()
    item["pad"] = {"S": ""}
    item["pad"] = {"S": "x" * (size - item_size(item))}
    assert item_size(item) == size
    return item


# ----------------------------------------------------------------------------- sizes
def test_item_size_counts_names_and_values_by_dynamodbs_rules():
    assert item_size({"tenant": {"S": "abc"}}) == 6 + 3
    assert item_size({"name": {"S": "Жанна"}}) == 4 + 10  # UTF-8 bytes, not characters
    assert number_size("1761718800") == 5  # 8 significant digits (trailing zeros trimmed) / 2 + 1
    assert number_size("1761718800.123456") == 9
    assert number_size("-0.5") == 2
    assert item_size({"n": {"N": "7"}}) == 1 + 2
    assert item_size({"s": {"SS": ["ab", "c"]}}) == 1 + 3
    assert item_size({"l": {"L": [{"S": "ab"}, {"N": "1"}]}}) == 1 + 3 + (1 + 2) + (1 + 2)
    assert item_size({"m": {"M": {"k": {"S": "v"}}}}) == 1 + 3 + (1 + 1 + 1)
    assert item_size({"b": {"BOOL": True}, "z": {"NULL": True}}) == 2 + 2
    assert item_size(None) == 0


def test_index_entry_projects_what_the_index_holds():
    item = card(due_bucket={"S": "t1#2025-11-11"}, due_at={"N": "1"}, plan_bucket={"S": "t1#2025-11-11"})
    assert index_entry(LEADS, LEADS.indexes[0], item) == item  # ALL
    assert set(index_entry(LEADS, LEADS.indexes[1], item)) == {"tenant", "entity", "plan_bucket"}
    assert index_entry(LEADS, LEADS.indexes[0], card()) is None  # sparse: no key, no entry


def test_table_schema_from_describe_table():
    described = {
        "TableName": "leadwatch-leads",
        "KeySchema": [
            {"AttributeName": "entity", "KeyType": "RANGE"},
            {"AttributeName": "tenant", "KeyType": "HASH"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "due-index",
                "KeySchema": [
                    {"AttributeName": "due_bucket", "KeyType": "HASH"},
                    {"AttributeName": "due_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["stage"]},
            }
        ],
    }
    schema = TableSchema.from_description(described)
    assert schema.keys == ("tenant", "entity")
    assert schema.indexes == (IndexSchema("due-index", ("due_bucket", "due_at"), "INCLUDE", ("stage",)),)


# ----------------------------------------------------------------------------- write units
def test_writes_cost_a_unit_per_started_kb_of_the_larger_image():
    table = TableSchema("leadwatch-state", ("tenant", "key"))
    assert write_units(table, None, padded(1024)).total == 1
    assert write_units(table, None, padded(1025)).total == 2
    assert write_units(table, padded(900), padded(1100)).total == 2  # update: the larger of the two
    assert write_units(table, padded(2500), None).total == 3  # delete: the deleted item
    assert write_units(table, None, None).total == 1  # deleting nothing still costs one
    assert write_units(table, None, padded(1500), transactional=True).total == 4


def test_a_failed_condition_costs_the_existing_item_and_writes_no_index():
    new = card(due_bucket={"S": "b"}, due_at={"N": "1"})
    assert write_units(LEADS, None, new, failed=True).total == 1
    failed = write_units(LEADS, padded(2500), new, failed=True)
    assert (failed.table, failed.indexes) == (3, {})


def test_index_writes_follow_the_gsi_rules():
    base = card(due_bucket={"S": "b1"}, due_at={"N": "1"}, plan_bucket={"S": "p1"})
    # A new card in both indexes: one put each.
    assert write_units(LEADS, None, base).indexes == {"due-index": 1, "plan-index": 1}
    # A counter on the card: the ALL index rewrites its entry, the KEYS_ONLY one does not change.
    counted = {**base, "call_attempts": {"N": "1"}}
    assert write_units(LEADS, base, counted).indexes == {"due-index": 1}
    # The due bucket removed (the card closed): one delete from that index.
    closed = {k: v for k, v in counted.items() if k not in ("due_bucket", "due_at")}
    assert write_units(LEADS, counted, closed).indexes == {"due-index": 1}
    # An index key changed: a delete and a put.
    moved = {**base, "due_at": {"N": "2"}}
    assert write_units(LEADS, base, moved).indexes == {"due-index": 2}
    # In neither index before nor after: nothing.
    assert write_units(LEADS, card(), card(stage={"S": "IN_PROCESS"})).indexes == {}
    # Rewritten unchanged: nothing for the index.
    assert write_units(LEADS, base, dict(base)).indexes == {}


# ----------------------------------------------------------------------------- read units
def test_read_units():
    assert read_units([0], consistent=False, per_item=True) == 0.5  # a missing item costs a block
    assert read_units([5000], consistent=True, per_item=True) == 2
    assert read_units([1500, 6500], consistent=True, per_item=True) == 3  # 4 KB + 8 KB, each rounded
    assert read_units([2048, 2048, 2048], consistent=False, per_item=False) == 1.0  # 6 KB -> 8 KB, halved
    assert read_units([], consistent=True, per_item=False) == 1  # an empty query still costs one


def test_storage_counts_the_overhead_and_each_index_entry():
    item = card(due_bucket={"S": "b1"}, due_at={"N": "1"})
    table_bytes, index_bytes = storage_bytes(LEADS, item)
    assert table_bytes == item_size(item) + 100
    assert index_bytes == item_size(item) + 100  # in the ALL index only


def test_item_kinds():
    assert item_kind("leadwatch-leads", "lead:42") == "leads"
    assert item_kind("leadwatch-journal", "2025-11-11T08:00:00+00:00#v1") == "journal"
    assert item_kind("leadwatch-inbox", "event#b24:ONCRMLEADADD:42:1") == "inbox/event"
    assert item_kind("leadwatch-state", "calls#2025-11-11#lead:42") == "state/calls"
    assert item_kind("leadwatch-state", "calls#2025-11-11#deal:7") == "state/calls"
    assert item_kind("leadwatch-state", "checkpoint#dialing-report") == "state/checkpoint#dialing-report"
    assert item_kind("leadwatch-state", "effect#violation:v1") == "state/effect"
    assert item_kind("leadwatch-state", "p#wake#timeliness.sweep#t1") == "state/p#wake"
    assert item_kind("leadwatch-state", "42") == "state/?"


# ----------------------------------------------------------------------------- schedules, Lambda
def test_fires_per_month():
    assert fires_per_month("rate(1 minute)") == MONTH_MINUTES
    assert fires_per_month("rate(10 minutes)") == 4380
    assert fires_per_month("rate(1 hour)") == 730
    # Every 10 minutes 06:00-20:59 on weekdays: 6 x 15 x 5 = 450 a week.
    assert fires_per_month("cron(0/10 6-20 ? * MON-FRI *)") == pytest.approx(450 * MONTH_MINUTES / 10080)
    assert fires_per_month("cron(0 9 ? * 2 *)") == pytest.approx(
        MONTH_MINUTES / 10080
    )  # Mondays (AWS: SUN=1)
    with pytest.raises(ValueError):
        fires_per_month("every minute")


def test_alarm_metrics_of_a_template():
    template = {
        "Resources": {
            "Queue": {"Type": "AWS::SQS::Queue"},
            "DlqAlarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"MetricName": "X"}},
            "Ratio": {
                "Type": "AWS::CloudWatch::Alarm",
                "Properties": {
                    "Metrics": [{"Id": "a", "MetricStat": {}}, {"Id": "b", "MetricStat": {}}, {"Id": "e"}]
                },
            },
        }
    }
    assert alarm_metrics(template) == 3
    from leadwatch.store.schema import load_template

    assert alarm_metrics(load_template()) >= 1  # the dead-letter queue's, at least


def test_billed_duration_rounds_up_per_millisecond():
    assert billed_ms(0.2) == 1
    assert billed_ms(12.0) == 12
    assert billed_ms(12.01) == 13


def test_configured_memory_follows_chalices_precedence(tmp_path: Path):
    (tmp_path / ".chalice").mkdir()
    (tmp_path / ".chalice" / "config.json").write_text(
        '{"lambda_memory_size": 512, "stages": {"dev": {"lambda_functions": {"worker": {"lambda_memory_size": 1024}}}}}'
    )
    assert configured_memory(tmp_path, "worker") == 1024
    assert configured_memory(tmp_path, "jobs") == 512
    (tmp_path / ".chalice" / "config.json").write_text("{}")
    assert configured_memory(tmp_path, "jobs") == 128


# ----------------------------------------------------------------------------- the month and its bill
def crafted() -> Measured:
    return Measured(
        tenants=2,
        usage={
            "call": Counter(
                {"dynamodb.wru": 100.0, "dynamodb.wru:state/call": 60.0, "apigateway.requests": 20.0}
            ),
            "time": Counter({"sqs.requests": 50.0, "lambda.gb_s": 10.0}),
            "fire:timeliness_sweep": Counter(
                {
                    "lambda.requests": 4.0,
                    "dynamodb.rru": 4.0,
                    "dynamodb.read_bytes": 400.0,
                    "dynamodb.read_calls": 4.0,
                }
            ),
            "idle": Counter({"sqs.requests": 999.0}),  # no driver: never extrapolated
        },
        units={"call": 10.0, "time": 100.0, "fire:timeliness_sweep": 4.0},
        tenant_metric_months=0.5,
        deployment_metric_months=1.0,
    )


def scenario(tenants: int) -> Scenario:
    return Scenario(
        tenants,
        leads_per_month=2200,
        drivers={"call": 90.0, "time": MONTH_MINUTES},
        fires={"timeliness_sweep": MONTH_MINUTES},
        idle_sqs_requests=1000.0,
        alarm_months=2.0,
    )


def test_month_usage_scales_each_class_by_its_driver():
    month = month_usage(crafted(), scenario(1))
    assert month["dynamodb.wru"] == pytest.approx(100 / 10 * 90)
    assert month["dynamodb.wru:state/call"] == pytest.approx(60 / 10 * 90)
    assert month["apigateway.requests"] == pytest.approx(180)
    assert month["sqs.requests"] == pytest.approx(50 / 100 * MONTH_MINUTES + 1000)
    assert month["lambda.requests"] == pytest.approx(MONTH_MINUTES)
    assert month["dynamodb.rru"] == pytest.approx(MONTH_MINUTES)  # one consistent 1-block read a fire
    assert month["eventbridge.invocations"] == pytest.approx(MONTH_MINUTES)
    assert month["cloudwatch.metric_months"] == pytest.approx(1.5)
    assert month["cloudwatch.alarm_months"] == 2.0


def test_at_scale_tenants_multiply_and_the_dispatchers_reads_grow():
    month = month_usage(crafted(), scenario(1000))
    assert month["dynamodb.wru"] == pytest.approx(900 * 1000)
    assert month["sqs.requests"] == pytest.approx(50 / 100 * MONTH_MINUTES * 1000 + 1000)  # idle polls once
    assert month["lambda.requests"] == pytest.approx(MONTH_MINUTES)  # a fire is a fire, whatever the tenants
    # 100 bytes a call at 2 tenants -> 50,000 bytes at 1,000: 13 blocks of 4 KB, 1 unit each.
    assert month["dynamodb.rru"] == pytest.approx(13 * MONTH_MINUTES)
    assert month["cloudwatch.metric_months"] == pytest.approx(0.5 * 1000 + 1)
    assert month["cloudwatch.alarm_months"] == 2.0  # the deployment's, once


def test_the_bill_prices_each_meter_and_divides_by_the_leads():
    result = bill(crafted(), scenario(1))
    month = result.usage
    dynamodb = month["dynamodb.wru"] * 0.7625 / 1e6 + month["dynamodb.rru"] * 0.1525 / 1e6
    assert result.by_service["dynamodb"] == pytest.approx(dynamodb)
    assert result.by_service["sqs"] == pytest.approx(month["sqs.requests"] * 0.40 / 1e6)
    lambda_usd = MONTH_MINUTES * 0.20 / 1e6 + month["lambda.gb_s"] * 0.0000166667
    assert result.by_service["lambda"] == pytest.approx(lambda_usd)
    assert result.by_service["apigateway"] == pytest.approx(180 * PRICES["apigateway.requests"].usd / 1e6)
    assert result.by_service["cloudwatch_metrics"] == pytest.approx(1.5 * 0.30)
    assert result.by_service["cloudwatch_alarms"] == pytest.approx(2 * 0.10)
    assert result.by_service["ssm"] == result.by_service["eventbridge"] == 0
    assert result.per_1000_leads() == pytest.approx(result.total / 2200 * 1000)
    assert result.per_lead("dynamodb.wru") == pytest.approx(900 / 2200)
    assert top_details(month, "dynamodb.wru", 8) == [("state/call", pytest.approx(540))]


def test_the_groups_add_up_to_the_bill():
    for tenants in (1, 1000):
        whole = bill(crafted(), scenario(tenants))
        parts = split(crafted(), scenario(tenants))
        assert set(parts) == set(GROUPS)
        assert sum(p.total for p in parts.values()) == pytest.approx(whole.total)


def test_every_priced_meter_has_a_price_and_the_free_ones_are_free():
    assert PRICES["ssm.requests"].usd == PRICES["eventbridge.invocations"].usd == 0
    assert all(
        price.usd > 0
        for name, price in PRICES.items()
        if name not in ("ssm.requests", "eventbridge.invocations")
    )


# ----------------------------------------------------------------------------- meter parts
def test_job_classes_come_from_the_job_message():
    assert CostMeter._job_class({"job": {"process": "timeliness", "schedule": "sweep"}}) == "verdict"
    assert CostMeter._job_class({"job": {"process": "dialing", "schedule": "report"}}) == "day"
    assert CostMeter._job_class({"job": {"process": "framework", "schedule": "reconcile"}}) == "time"
    assert CostMeter._job_class("not a message") == "time"
    # An invocation of the jobs Lambda (and its Invoke call) is its jobs' (one each by default).
    meter = CostMeter(rtt_s={}, memory_mb={})
    sweep, report = (
        {"job": {"process": "timeliness", "schedule": "sweep"}},
        {"job": {"process": "dialing", "schedule": "report"}},
    )
    assert meter._shares_of_invocation("jobs", {"jobs": [sweep]}) == {"verdict": 1.0}
    assert meter._shares_of_invocation("jobs", {"jobs": [sweep, report]}) == {"verdict": 0.5, "day": 0.5}
    assert meter._shares_of_invocation("jobs", {}) == {"other": 1.0}


def test_a_tagged_driver_counts_its_actions_and_passes_everything_through():
    class Driver:
        def create(self, title: str, manager: str, at: object) -> str:
            return "42"

        def verdict(self, lead_id: str) -> str:
            return "Y"

    meter = CostMeter(rtt_s={}, memory_mb={})
    driver = TaggedDriver(Driver(), meter)
    assert driver.create("t", "1", None) == "42"
    assert driver.verdict("42") == "Y"
    assert meter.units == Counter({"create": 1})


def test_moto_reports_no_real_consumed_capacity_so_the_meter_computes_it(monkeypatch):
    """Why bench/cost_meter.py sizes items itself: moto answers ReturnConsumedCapacity with one
    unit per write whatever the item's size, and no index writes. Should moto ever report what
    DynamoDB bills, this fails, and the meter could read ConsumedCapacity instead."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-central-1")
        client.create_table(
            TableName="leadwatch-leads",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": name, "AttributeType": kind}
                for name, kind in (("tenant", "S"), ("entity", "S"), ("due_bucket", "S"), ("due_at", "N"))
            ],
            KeySchema=[
                {"AttributeName": "tenant", "KeyType": "HASH"},
                {"AttributeName": "entity", "KeyType": "RANGE"},
            ],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "due-index",
                    "KeySchema": [
                        {"AttributeName": "due_bucket", "KeyType": "HASH"},
                        {"AttributeName": "due_at", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        item = {**padded(3000), "due_bucket": {"S": "t1#2025-11-11"}, "due_at": {"N": "1"}}
        answer = client.put_item(TableName="leadwatch-leads", Item=item, ReturnConsumedCapacity="INDEXES")
        schema = TableSchema.from_description(client.describe_table(TableName="leadwatch-leads")["Table"])
    billed = write_units(schema, None, item)
    assert (billed.table, billed.indexes) == (3, {"due-index": 3})
    assert answer["ConsumedCapacity"]["CapacityUnits"] == 1.0
    assert "GlobalSecondaryIndexes" not in answer["ConsumedCapacity"]


def test_a_webhook_belongs_to_its_action_or_to_the_invocation_whose_write_it_echoes():
    meter = CostMeter(rtt_s={}, memory_mb={})
    assert meter._shares_of_webhook() == {"other": 1.0}
    with meter.action("call"):
        assert meter._shares_of_webhook() == {"call": 1.0}
    from bench.cost_meter import Invocation

    meter._active.append(Invocation("jobs", {"verdict": 1.0}, 0.0, 0.0, {}))
    assert meter._shares_of_webhook() == {"verdict": 1.0}


def test_the_always_free_tier_takes_off_what_an_account_gets_for_nothing():
    from bench.cost_model import ALWAYS_FREE, price

    usage = {"lambda.requests": 1.5e6, "cloudwatch.alarm_months": 8, "dynamodb.wru": 1e6}
    listed, free = price(usage), price(usage, free=ALWAYS_FREE)
    assert listed["lambda"] == pytest.approx(0.30) and free["lambda"] == pytest.approx(0.10)
    assert listed["cloudwatch_alarms"] == pytest.approx(0.80) and free["cloudwatch_alarms"] == 0
    assert free["dynamodb"] == listed["dynamodb"]  # on-demand requests are never free


def test_only_the_alarms_the_defaults_make_are_billed():
    from leadwatch.store.schema import load_template

    template = load_template()
    made = alarm_metrics(template)
    assert made == 8  # the DLQ, 4 on leadwatch's failures, 3 for the deployment's functions
    on = {**template, "Parameters": {**template["Parameters"], "FunctionAlarms": {"Default": "on"}}}
    assert alarm_metrics(on) == made - 3 + 3 * 8  # 3 per function instead
