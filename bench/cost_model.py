"""The cost benchmark's model: AWS list prices, DynamoDB's capacity rules, and the arithmetic from
counted usage to dollars per 1,000 leads. Pure (no AWS, no clock), so it is unit-tested on
crafted counts (tests/unit/test_bench_cost.py); bench/cost.py measures what goes in.

Usage is a Counter of meters ("dynamodb.wru", "lambda.gb_s", ...) per *class* of work, and each
class has a driver it grows with (see DRIVERS in bench/cost.py): CRM actions of one kind, leads,
working days, simulated minutes, or the fires of one scheduled Lambda. A month is each class's
usage per unit of its driver times the driver's count in a month. A meter named
"<meter>:<detail>" (e.g. "dynamodb.wru:state/calls") is a breakdown of <meter>, scaled the
same way and never priced.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

REGION = "eu-central-1"
PRICES_TAKEN = "2026-12-02"
MONTH_HOURS = 730  # AWS's month for per-hour proration (metrics) and the schedules below
MONTH_MINUTES = MONTH_HOURS * 60  # 43,800
GIB = 2**30  # AWS bills "GB" of logs and storage as 2^30 bytes


@dataclass(frozen=True)
class Price:
    usd: float  # for `per` units
    per: float
    unit: str
    note: str

    def of(self, amount: float) -> float:
        return self.usd * amount / self.per


# The one price table: AWS list prices, Europe (Frankfurt) eu-central-1, on-demand, no free tier,
# first pricing tier, USD, as of PRICES_TAKEN. Sources: the AWS pricing pages of each service
# (aws.amazon.com/<service>/pricing); the Frankfurt request prices of Lambda ($0.20/M,
# $0.0000166667/GB-s, EUC1-Request / EUC1-Lambda-GB-Second) as read from the AWS Price List API.
# API Gateway: the deployed API is an HTTP API ($1.20/M in Frankfurt, usage type
# EUC1-ApiGatewayHttpRequest, from the pricing page; it was not re-read from the Price List on
# this machine, which has no internet); the REST API Chalice would deploy costs $3.70/M there
# (EUC1-ApiGatewayRequest, Price List API). DynamoDB's on-demand request
# prices are Frankfurt's $1.525/M writes and $0.305/M reads halved by the 1 Nov 2024 cut of
# on-demand throughput prices in every region.
PRICES: dict[str, Price] = {
    "dynamodb.wru": Price(0.7625, 1e6, "write request unit", "on-demand, Standard table class"),
    "dynamodb.rru": Price(0.1525, 1e6, "read request unit", "on-demand, Standard table class"),
    "dynamodb.storage_gb_month": Price(
        0.306, 1, "GB-month", "table and index storage (first 25 GB free: ignored)"
    ),
    "dynamodb.pitr_gb_month": Price(0.2448, 1, "GB-month", "point-in-time recovery, on the table size"),
    "sqs.requests": Price(0.40, 1e6, "request", "standard queue; each 64 KB chunk of a request is one"),
    "lambda.requests": Price(0.20, 1e6, "invocation", "x86_64 and arm64 alike"),
    "lambda.gb_s": Price(0.0000166667, 1, "GB-second", "x86_64 (Chalice's default); billed per 1 ms"),
    "lambda.gb_s_arm64": Price(0.0000133334, 1, "GB-second", "arm64, for comparison only"),
    "apigateway.requests": Price(
        1.20, 1e6, "request", "HTTP API (leadwatch.bundle's template), first 300 M a month"
    ),
    "logs.bytes": Price(0.63, GIB, "byte ingested", "CloudWatch Logs standard class, $0.63/GB"),
    "logs.storage_gb_month": Price(0.0324, 1, "GB-month", "CloudWatch Logs archive, compressed bytes"),
    "cloudwatch.metric_months": Price(0.30, 1, "metric-month", "custom metrics (EMF), prorated by the hour"),
    "cloudwatch.alarm_months": Price(0.10, 1, "alarm metric-month", "standard resolution alarms"),
    "ssm.requests": Price(0.0, 1, "GetParameter(s)", "free: standard parameters, standard throughput"),
    "eventbridge.invocations": Price(
        0.0, 1, "scheduled invocation", "free: scheduled rules on the default bus"
    ),
}
# What an AWS account gets free every month, for good (not the 12-month tier): what one small
# deployment in an account of its own pays nothing for. On-demand DynamoDB requests, API Gateway
# (its free tier is for the first 12 months only) and logs storage beyond the 5 GB are not free.
# Sources: aws.amazon.com/free ("Always free") and each service's pricing page.
ALWAYS_FREE: dict[str, float] = {
    "lambda.requests": 1_000_000,
    "lambda.gb_s": 400_000,
    "sqs.requests": 1_000_000,
    "cloudwatch.metric_months": 10,
    "cloudwatch.alarm_months": 10,
    "logs.bytes": 5 * GIB,  # 5 GB of logs (ingestion, storage and scanned together): ingestion here
    "dynamodb.storage_gb_month": 25,
}
SERVICES = {
    "dynamodb": ("dynamodb.wru", "dynamodb.rru", "dynamodb.storage_gb_month", "dynamodb.pitr_gb_month"),
    "sqs": ("sqs.requests",),
    "lambda": ("lambda.requests", "lambda.gb_s"),
    "apigateway": ("apigateway.requests",),
    "cloudwatch_logs": ("logs.bytes", "logs.storage_gb_month"),
    "cloudwatch_metrics": ("cloudwatch.metric_months",),
    "cloudwatch_alarms": ("cloudwatch.alarm_months",),
    "ssm": ("ssm.requests",),
    "eventbridge": ("eventbridge.invocations",),
}


# ----------------------------------------------------------------------------- DynamoDB item sizes
def number_size(text: str) -> int:
    """Bytes of a DynamoDB number: about one per two significant digits, plus one
    (developerguide/CapacityUnitCalculations.html: leading and trailing zeroes are trimmed)."""
    mantissa = text.strip().lstrip("+-").lower().split("e")[0]
    digits = mantissa.replace(".", "").strip("0") or "0"
    return (len(digits) + 1) // 2 + 1


def attribute_size(value: Mapping[str, Any]) -> int:
    """Bytes of one AttributeValue (wire format, {"S": "..."}), by DynamoDB's item size rules:
    strings as UTF-8, binary raw, numbers per number_size, BOOL and NULL 1, a set the sum of its
    elements, a list or map 3 bytes plus 1 per element (plus, in a map, each key's name)."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode("utf-8"))
    if kind == "N":
        return number_size(raw)
    if kind == "B":
        return len(raw)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(v.encode("utf-8")) for v in raw)
    if kind == "NS":
        return sum(number_size(v) for v in raw)
    if kind == "BS":
        return sum(len(v) for v in raw)
    if kind == "L":
        return 3 + sum(1 + attribute_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + attribute_size(v) for k, v in raw.items())
    raise ValueError(f"unknown attribute type {kind!r}")


def item_size(item: Mapping[str, Mapping[str, Any]] | None) -> int:
    """Bytes of an item: each attribute's name (UTF-8) plus its value."""
    if not item:
        return 0
    return sum(len(name.encode("utf-8")) + attribute_size(value) for name, value in item.items())


@dataclass(frozen=True)
class IndexSchema:
    name: str
    keys: tuple[str, ...]  # hash key, then range key if any
    projection: str  # ALL | KEYS_ONLY | INCLUDE
    included: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSchema:
    name: str
    keys: tuple[str, ...]
    indexes: tuple[IndexSchema, ...] = ()

    @classmethod
    def from_description(cls, table: Mapping[str, Any]) -> TableSchema:
        """From DescribeTable's "Table" (the tables are created from infra/resources.yaml)."""

        def keys(schema: Iterable[Mapping[str, str]]) -> tuple[str, ...]:
            ordered = sorted(schema, key=lambda k: 0 if k["KeyType"] == "HASH" else 1)
            return tuple(k["AttributeName"] for k in ordered)

        indexes = tuple(
            IndexSchema(
                index["IndexName"],
                keys(index["KeySchema"]),
                index["Projection"]["ProjectionType"],
                tuple(index["Projection"].get("NonKeyAttributes", ())),
            )
            for index in (table.get("GlobalSecondaryIndexes") or [])
        )
        return cls(table["TableName"], keys(table["KeySchema"]), indexes)

    def key_of(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in self.keys}


def index_entry(
    table: TableSchema, index: IndexSchema, item: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The item's entry in a (sparse) global secondary index, None when the item is not in it."""
    if not item or any(key not in item for key in index.keys):
        return None
    if index.projection == "ALL":
        return dict(item)
    wanted = set(table.keys) | set(index.keys)
    if index.projection == "INCLUDE":
        wanted |= set(index.included)
    return {name: value for name, value in item.items() if name in wanted}


def _units(size: int, block: int) -> int:
    return max(1, math.ceil(size / block))


@dataclass
class WriteUnits:
    table: float
    indexes: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.table + sum(self.indexes.values())


def write_units(
    table: TableSchema,
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any] | None,
    *,
    failed: bool = False,
    transactional: bool = False,
) -> WriteUnits:
    """Write request units of one item write (developerguide/read-write-operations.html):

    - Put and Update: 1 per started KB of the larger of the item before and after; Delete: of
      the deleted item; at least 1 (deleting or updating nothing still costs 1).
    - A failed condition still costs the existing item's size (at least 1) and writes no index.
    - Each global secondary index (developerguide/GSI.html, "Provisioned throughput
      considerations"): an item entering the index is one put of its entry, leaving it one
      delete, a changed index key a delete and a put, a changed projected attribute one write;
      an entry not there before or after, or unchanged, costs nothing. Entries are sized like
      items and rounded up per KB.
    - In a transaction everything costs double.
    """
    factor = 2.0 if transactional else 1.0
    if failed:
        return WriteUnits(factor * _units(item_size(old), 1024))
    units = WriteUnits(factor * _units(max(item_size(old), item_size(new)), 1024))
    for index in table.indexes:
        before, after = index_entry(table, index, old), index_entry(table, index, new)
        if before is None and after is None:
            continue
        if before is None:
            cost = _units(item_size(after), 1024)
        elif after is None:
            cost = _units(item_size(before), 1024)
        elif any(before[k] != after[k] for k in index.keys):
            cost = _units(item_size(before), 1024) + _units(item_size(after), 1024)
        elif before != after:
            cost = _units(item_size(after), 1024)
        else:
            continue
        units.indexes[index.name] = factor * cost
    return units


def read_units(sizes: Iterable[int], *, consistent: bool, per_item: bool) -> float:
    """Read request units of one read call. GetItem and BatchGetItem round each item up to 4 KB
    (a missing item still costs one block); Query and Scan round the sum of what they read once.
    Eventually consistent reads cost half."""
    factor = 1.0 if consistent else 0.5
    sizes = list(sizes)
    if per_item:
        return factor * sum(_units(size, 4096) for size in sizes)
    return factor * _units(sum(sizes), 4096)


STORAGE_OVERHEAD = 100  # bytes per item and per index entry (developerguide/CapacityUnitCalculations.html)


def storage_bytes(table: TableSchema, item: Mapping[str, Any]) -> tuple[int, int]:
    """(table bytes, index bytes) an item occupies, each with the 100-byte overhead."""
    indexed = 0
    for index in table.indexes:
        entry = index_entry(table, index, item)
        if entry is not None:
            indexed += item_size(entry) + STORAGE_OVERHEAD
    return item_size(item) + STORAGE_OVERHEAD, indexed


# ----------------------------------------------------------------------------- item kinds
_TABLE_NAMES = {"leadwatch-inbox": "inbox", "leadwatch-leads": "leads", "leadwatch-journal": "journal"}
_NAME_SEGMENT = re.compile(r"^[a-z][a-z_-]*$")


def item_kind(table: str, range_key: str) -> str:
    """What an item is, for the breakdowns: the table and the leading name segments of its range
    key (up to two: "state/checkpoint#sweep", "inbox/event", "state/effect"), up to the first
    segment that is no name: "state/calls" for a card's calls of a day (`calls#<day>#lead:42`).
    Cards ("lead:42") and journal rows are one kind per table."""
    short = _TABLE_NAMES.get(table, table.removeprefix("leadwatch-"))
    if short in ("leads", "journal"):
        return short
    names = []
    for segment in range_key.split("#")[:2]:
        if not _NAME_SEGMENT.match(segment):
            break
        names.append(segment)
    return f"{short}/{'#'.join(names) or '?'}"


# ----------------------------------------------------------------------------- schedules
_UNIT_MINUTES = {"minute": 1, "minutes": 1, "hour": 60, "hours": 60, "day": 1440, "days": 1440}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


def _cron_field(text: str, low: int, high: int, names: Mapping[str, int] | None = None) -> set[int]:
    """The values one field of an AWS cron expression matches (*, ?, a, a-b, a/n, a-b/n, lists)."""

    def value(token: str) -> int:
        return (names or {}).get(token) or int(token)

    if text in ("*", "?"):
        return set(range(low, high + 1))
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/")
            step = int(step_text)
        if part in ("*", ""):
            first, last = low, high
        elif "-" in part:
            a, b = part.split("-")
            first, last = value(a), value(b)
        else:
            first = value(part)
            last = high if step > 1 else first
        values.update(range(first, last + 1, step))
    return values


def fires_per_month(expression: str) -> float:
    """EventBridge fires of a schedule expression in a 730-hour month: rate(N unit) exactly;
    cron(min hour day-of-month month day-of-week year) counted over four reference weeks (UTC,
    from Mon 5 Jan 2026) and scaled to the month."""
    text = expression.strip()
    rate = re.fullmatch(r"rate\((\d+)\s+(\w+)\)", text)
    if rate:
        every = int(rate.group(1)) * _UNIT_MINUTES[rate.group(2).lower()]
        return MONTH_MINUTES / every
    cron = re.fullmatch(r"cron\((.+)\)", text)
    if not cron:
        raise ValueError(f"not a schedule expression: {expression!r}")
    minute, hour, dom, month, dow, _year = cron.group(1).split()
    minutes, hours = _cron_field(minute, 0, 59), _cron_field(hour, 0, 23)
    days_of_month, months = _cron_field(dom, 1, 31), _cron_field(month, 1, 12)
    weekdays = _cron_field(dow.upper(), 1, 7, _DAYS)
    start = datetime(2026, 1, 5)
    reference = 28 * 1440
    fires = 0
    for offset in range(0, reference, 1):
        moment = start + timedelta(minutes=offset)
        weekday = moment.isoweekday() % 7 + 1  # AWS cron: SUN=1 .. SAT=7
        if (
            moment.minute in minutes
            and moment.hour in hours
            and moment.day in days_of_month
            and moment.month in months
            and weekday in weekdays
        ):
            fires += 1
    return fires * MONTH_MINUTES / reference


# ----------------------------------------------------------------------------- the month and its bill
@dataclass
class Measured:
    """What one replay counted."""

    tenants: int  # tenants in the replay (each class's usage is of all of them)
    usage: dict[str, Counter[str]]  # class -> meter -> amount
    units: dict[str, float]  # class -> its driver's count in the replay (summed over tenants; fires)
    tenant_metric_months: float = 0.0  # custom metric-months a month per tenant (tenant-dimensioned)
    deployment_metric_months: float = 0.0  # ... per deployment (no tenant dimension)


@dataclass
class Scenario:
    tenants: int
    leads_per_month: float  # per tenant
    drivers: dict[str, float]  # per-tenant class -> its driver's count in a month, per tenant
    fires: dict[str, float]  # scheduled Lambda -> fires a month (class "fire:<name>")
    idle_sqs_requests: float = 0.0  # a month, the event source's long polls of the empty events queue
    alarm_months: float = 0.0  # the deployment's alarms (metrics they watch) in a month


@dataclass
class Bill:
    scenario: Scenario
    usage: Counter[str]  # meter -> amount in the month, the deployment's
    by_service: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.by_service.values())

    @property
    def leads(self) -> float:
        return self.scenario.tenants * self.scenario.leads_per_month

    def per_1000_leads(self, service: str | None = None) -> float:
        amount = self.total if service is None else self.by_service[service]
        return amount / self.leads * 1000

    def per_lead(self, meter: str) -> float:
        return self.usage[meter] / self.leads


def month_usage(measured: Measured, scenario: Scenario) -> Counter[str]:
    """The deployment's usage in a month of `scenario`.

    A per-tenant class: (its usage / its driver's count) x the driver's count in a tenant's
    month x tenants. A scheduled Lambda's class ("fire:<name>"): usage per fire x fires in the
    month, except that its DynamoDB reads grow with the tenants they read about (the wake-up
    partition holds a record per tenant): each read call of a fire reads its measured bytes x
    tenants / tenants measured, at the units per started 4 KB it was measured at (0.5 or 1), or
    what was measured if more. Then the empty queue's polls, the metrics and the alarms."""
    month: Counter[str] = Counter()
    scale_tenants = scenario.tenants / measured.tenants
    for cls, usage in measured.usage.items():
        count = measured.units.get(cls, 0.0)
        if not count:
            continue
        if cls.startswith("fire:"):
            fires = scenario.fires.get(cls.removeprefix("fire:"), 0.0)
            for meter, amount in usage.items():
                month[meter] += amount / count * fires
            calls = usage["dynamodb.read_calls"]
            if calls:
                measured_rru = usage["dynamodb.rru"] / count
                per_call_bytes = usage["dynamodb.read_bytes"] / calls * scale_tenants
                per_block = usage["dynamodb.rru"] / calls  # a call's units at one 4 KB block
                scaled = calls / count * per_block * max(1, math.ceil(per_call_bytes / 4096))
                month["dynamodb.rru"] += (max(measured_rru, scaled) - measured_rru) * fires
            month["eventbridge.invocations"] += fires
            continue
        per_month = scenario.drivers.get(cls)
        if per_month is None:
            raise KeyError(f"no monthly driver for class {cls!r}")
        for meter, amount in usage.items():
            month[meter] += amount / count * per_month * scenario.tenants
    month["sqs.requests"] += scenario.idle_sqs_requests
    month["cloudwatch.alarm_months"] += scenario.alarm_months
    month["cloudwatch.metric_months"] += (
        measured.tenant_metric_months * scenario.tenants + measured.deployment_metric_months
    )
    return month


def price(
    usage: Mapping[str, float], prices: Mapping[str, Price] = PRICES, free: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Dollars by service for a month's usage (less what `free` gives, per meter)."""
    free = free or {}
    return {
        service: sum(
            prices[meter].of(max(0.0, usage.get(meter, 0.0) - free.get(meter, 0.0))) for meter in meters
        )
        for service, meters in SERVICES.items()
    }


def bill(
    measured: Measured,
    scenario: Scenario,
    prices: Mapping[str, Price] = PRICES,
    free: Mapping[str, float] | None = None,
) -> Bill:
    """The month at list prices; with `free` (ALWAYS_FREE), after the account's free tier."""
    usage = month_usage(measured, scenario)
    return Bill(scenario, usage, price(usage, prices, free))


def top_details(usage: Mapping[str, float], meter: str, n: int) -> list[tuple[str, float]]:
    """The n largest "<meter>:<detail>" breakdowns of a meter, largest first."""
    prefix = meter + ":"
    found = [(name.removeprefix(prefix), amount) for name, amount in usage.items() if name.startswith(prefix)]
    return sorted(found, key=lambda pair: (-pair[1], pair[0]))[:n]


def _condition(template: Mapping[str, Any], expression: Any) -> bool:
    """A template condition (Fn::Equals / Fn::Not / Fn::And / Fn::Or / Condition over Refs) with
    every parameter at its default."""
    parameters = template.get("Parameters") or {}

    def value(node: Any) -> Any:
        if isinstance(node, dict) and "Ref" in node:
            return str(parameters.get(node["Ref"], {}).get("Default"))
        if isinstance(node, dict):
            return _condition(template, node)
        return str(node)

    if "Condition" in expression:
        return _condition(template, template["Conditions"][expression["Condition"]])
    if "Fn::Equals" in expression:
        left, right = expression["Fn::Equals"]
        return value(left) == value(right)
    if "Fn::Not" in expression:
        return not value(expression["Fn::Not"][0])
    if "Fn::And" in expression:
        return all(value(x) for x in expression["Fn::And"])
    if "Fn::Or" in expression:
        return any(value(x) for x in expression["Fn::Or"])
    raise ValueError(f"a condition the cost model cannot read: {expression}")


def alarm_metrics(template: Mapping[str, Any]) -> int:
    """Alarm metrics a CloudFormation template makes with its parameters' defaults: one per alarm
    on a metric, one per metric an alarm on metric math reads (CloudWatch bills alarms per metric
    they evaluate)."""
    count = 0
    for resource in (template.get("Resources") or {}).values():
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        condition = resource.get("Condition")
        if condition is not None and not _condition(template, template["Conditions"][condition]):
            continue
        metrics = (resource.get("Properties") or {}).get("Metrics")
        count += sum(1 for m in metrics if "MetricStat" in m) if metrics else 1
    return count


def billed_ms(ms: float) -> int:
    """Lambda bills duration per started millisecond, at least 1."""
    return max(1, math.ceil(ms - 1e-9))
