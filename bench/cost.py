"""Cost: dollars per 1,000 leads at AWS list prices, from a replay of the demo week with counting on.

What is replayed: the demo's week (demo.week.demo_week, as `python -m demo` plays it: Wed 29
Oct .. Tue 4 Nov 2025 and on until the last control time, two tenants, Bitrix24 and amoCRM,
20 managers and `leads_per_day` leads a working day each, every lead dialed by its manager's
style, 1% of webhooks lost, the daily dialing report) through `LocalStack(aws="inprocess")`:
leadwatch's real handlers on moto and the CRM and Telegram fakes at their real rate limits, on
the simulated clock (demo.replay.replay). bench/cost_meter.py counts what AWS would bill and
charges it to a class of work; bench/cost_model.py holds the prices and turns the counts into
a month.

The month of one tenant of `leads_per_day` leads a working day (x 22 working days: 2,200 leads
at 100): each class's usage per unit of what drives it, times that driver in a month:

- a CRM action (create, take, call, reject): its webhooks, their events in the worker and all
  they cause. The replayed week starts empty and stops dialing at its end, so it holds fewer
  calls per lead than a steady month (each lead is dialed over 5 plan days); a month has the
  actions of every lead's whole plan (demo.week.actions_for without an end), per lead;
- a lead: its verdict (the sweep's jobs) and the events reconciliation finds for lost webhooks;
- a working day: the dialing report's jobs;
- a minute: reconciliation's jobs (every 10 minutes, around the clock);
- and per deployment, each scheduled Lambda's fires (its schedule's rate x 43,800 minutes,
  whatever work it finds), the event source's polling of the empty events queue, the metrics.

1,000 tenants: the per-tenant month x 1,000, the deployment's costs once (the dispatchers'
wake-up query grows with the tenants). Stored data: every item left in the tables at the end,
for its TTL if it has one, else RETENTION_MONTHS; the logs' compressed archive as long. No free
tier is counted anywhere. The alarms are those infra/resources.yaml defines, a month each.

Stated, not measured (constants below): the round trip of each request to AWS, the CRMs and
Telegram (the local stack answers in a millisecond; moto's own time is taken out of the
durations), the event source's polling of the empty events queue, the month's 22 working days. Not
counted: Lambda's init phase on cold starts, data transfer, API Gateway's and Lambda's free
tiers, the read API (the replay makes no read requests), SNS (the alarm topic's messages).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import Figure, note
from bench.cost_meter import CostMeter
from bench.cost_model import (
    ALWAYS_FREE,
    MONTH_MINUTES,
    PRICES,
    PRICES_TAKEN,
    REGION,
    SERVICES,
    Bill,
    Measured,
    Scenario,
    alarm_metrics,
    bill,
    fires_per_month,
    top_details,
)

ACTIONS = ("create", "take", "call", "reject")
WORKING_DAYS_A_MONTH = 22  # 100 leads a working day -> 2,200 leads a month
TENANTS_AT_SCALE = 1_000
RETENTION_MONTHS = 13.0  # what is not kept by a TTL, and the log groups (Chalice sets no retention)
# Round trips the local stack does not have (the fakes answer from 127.0.0.1 in a millisecond,
# moto in-process): stated assumptions added to each Lambda's billed duration per request it made,
# not measurements (bench/scheduling.py states 1 s for a slow CRM and 20 ms for SQS).
# "lambda": one wave of asynchronous Invoke calls (the jobs, sent side by side).
RTT_S = {"bitrix24": 0.3, "amocrm": 0.3, "telegram": 0.15, "dynamodb": 0.008, "sqs": 0.02, "lambda": 0.03}
# Lambda's SQS event sources long-poll (20 s) with 5 pollers per queue when idle: 15
# ReceiveMessage a minute per queue (docs.aws.amazon.com/lambda/latest/dg/with-sqs.html; observed
# as ~15 empty receives a minute in getlift/lift#132), billed as SQS requests. Only the worker
# has one (the events queue); the jobs Lambda is invoked asynchronously, with nothing to poll.
IDLE_POLLS_PER_MINUTE = 15
TARGET_ONE_TENANT = 0.10
TARGET_AT_SCALE = 0.05
TARGET_WRU_PER_LEAD = 30


# What the month's bill is made of: the classes of work (bench/cost_meter.py) by what drives them.
GROUPS: dict[str, Callable[[str], bool]] = {
    "per lead": lambda cls: cls in ACTIONS or cls in ("verdict", "found"),
    "per tenant, fixed": lambda cls: cls in ("day", "time"),
    "per deployment, fixed": lambda cls: cls.startswith("fire:"),
}


def split(measured: Measured, scenario: Scenario) -> dict[str, Bill]:
    """The bill of each group alone (metrics with a tenant dimension are the tenant's fixed
    costs; the others, the alarms and the polling of the empty events queue, the deployment's)."""
    found = {}
    for group, member in GROUPS.items():
        part = Measured(
            measured.tenants,
            {cls: usage for cls, usage in measured.usage.items() if member(cls)},
            measured.units,
            measured.tenant_metric_months if group == "per tenant, fixed" else 0.0,
            measured.deployment_metric_months if group == "per deployment, fixed" else 0.0,
        )
        deployment = group == "per deployment, fixed"
        fixed = {"idle_sqs_requests": 0.0, "alarm_months": 0.0} if not deployment else {}
        found[group] = bill(part, replace(scenario, **fixed))
    return found


class TaggedDriver:
    """A CRM driver whose actions tell the meter what they are (their webhooks are theirs)."""

    def __init__(self, driver: Any, meter: CostMeter):
        self._driver, self._meter = driver, meter

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._driver, name)
        if name not in ACTIONS:
            return attribute

        def act(*args: Any, **kwargs: Any) -> Any:
            with self._meter.action(name):
                return attribute(*args, **kwargs)

        return act


def configured_memory(project: Path, function: str, stage: str = "dev") -> int:
    """A function's memory in .chalice/config.json: its own setting, else its stage's, else the
    app's (Chalice's precedence), else Chalice's default 128 MB."""
    config = json.loads((project / ".chalice" / "config.json").read_text())
    stage_config = config.get("stages", {}).get(stage, {})
    for scope in (stage_config.get("lambda_functions", {}).get(function, {}), stage_config, config):
        if "lambda_memory_size" in scope:
            return int(scope["lambda_memory_size"])
    return 128


@dataclass
class Run:
    measured: Measured
    scenarios: dict[int, Scenario]
    bills: dict[int, Bill]
    facts: dict[str, Any]


def measure(
    *,
    days: int | None = None,
    leads_per_day: int = 100,
    managers: int = 20,
    seed: int = 7,
    drop: float = 0.01,
    rate_scale: float = 1.0,
    progress: bool = False,
) -> list[Figure]:
    run = replay_and_count(
        days=days,
        leads_per_day=leads_per_day,
        managers=managers,
        seed=seed,
        drop=drop,
        rate_scale=rate_scale,
        progress=progress,
    )
    report(run)
    return figures(run)


def replay_and_count(
    *,
    days: int | None,
    leads_per_day: int,
    managers: int,
    seed: int,
    drop: float,
    rate_scale: float,
    progress: bool,
) -> Run:
    from chalice.app import ScheduledEventConfig, SQSEventConfig

    from demo.replay import DEMO_TENANTS, lose_some_webhooks, replay
    from demo.week import DAYS, WEEK_START, actions_for, demo_week, on_time_by_plan
    from leadwatch.store.schema import load_template
    from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock

    days = days or DAYS
    week = demo_week(DEMO_TENANTS, seed=seed, leads_per_day=leads_per_day, managers=managers, days=days)
    # Every lead's whole dialing plan: what a steady month holds per lead.
    steady = Counter(a.kind for a in actions_for(week.leads, week.calendar, dialing_until=None, seed=seed))
    start = WEEK_START - timedelta(minutes=1)
    project = Path(__file__).resolve().parents[1]
    tenants = len(DEMO_TENANTS)
    note(
        f"cost: {len(week.leads)} leads, {len(week.actions)} CRM actions "
        f"({sum(a.kind == 'call' for a in week.actions)} calls) for {tenants} tenants over {days} days"
    )
    with LocalStack(
        SimClock(start),
        http=False,
        crm_rate_scale=rate_scale,
        real_sleep=False,
        managers=week.names,
        aws="inprocess",
    ) as stack:
        functions = [*stack.app.handler_map, "api_handler"]
        meter = CostMeter(
            rtt_s=RTT_S,
            memory_mb={fn: configured_memory(project, fn) for fn in functions},
        )
        drivers = {
            B24_TENANT: TaggedDriver(BitrixDriver(stack.bitrix), meter),
            AMO_TENANT: TaggedDriver(AmoDriver(stack.amo), meter),
        }
        lose_some_webhooks(stack, drop, random.Random(seed + 1))
        counts: dict[str, int] = {}
        meter.install(stack)
        started = time.perf_counter()
        try:
            replay(
                stack,
                week.calendar,
                week.actions,
                drivers,
                week.settle_until,
                progress=progress,
                counts=counts,
                reports=True,
            )
        finally:
            meter.uninstall()
        wall = time.perf_counter() - started
        meter.storage(RETENTION_MONTHS)
        compression = meter.log_storage(RETENTION_MONTHS)
        minutes = (stack.clock() - start).total_seconds() / 60
        metric_tenant, metric_deployment, metric_rows = meter.metric_months(minutes, tenants)
        verdicts = mismatches = 0
        for lead in week.leads:
            got = drivers[lead.tenant].verdict(lead.crm_id)
            verdicts += got is not None
            on_time = on_time_by_plan(lead, week.calendar)
            want = ("Y" if on_time else "N") if lead.tenant == B24_TENANT else ("Yes" if on_time else "No")
            mismatches += got != want
        crm_requests = len(stack.bitrix.requests("/rest/")) + len(stack.amo.requests("/api/v4/"))
        schedules = {
            s.name: getattr(s.schedule_expression, "to_string", lambda e=s.schedule_expression: str(e))()
            for s in stack.app.event_sources
            if isinstance(s, ScheduledEventConfig)
        }
        polled = [s.queue for s in stack.app.event_sources if isinstance(s, SQSEventConfig)]
        first_day = WEEK_START.date()
        last_day = stack.clock().astimezone(week.calendar.tz).date()
        working_days = len(week.calendar.working_days(first_day, last_day))

    leads = len(week.leads)
    units: dict[str, float] = {kind: float(meter.units[kind]) for kind in ACTIONS}
    units |= {"verdict": leads, "found": leads, "day": working_days * tenants, "time": minutes * tenants}
    units |= {cls: float(n) for cls, n in meter.units.items() if cls.startswith("fire:")}
    measured = Measured(tenants, dict(meter.usage), units, metric_tenant, metric_deployment)
    leads_a_month = leads_per_day * WORKING_DAYS_A_MONTH
    drivers_a_month = {kind: steady[kind] / leads * leads_a_month for kind in ACTIONS}
    drivers_a_month |= {
        "verdict": leads_a_month,
        "found": leads_a_month,
        "day": WORKING_DAYS_A_MONTH,
        "time": MONTH_MINUTES,
    }
    fires = {name: fires_per_month(expression) for name, expression in schedules.items()}
    idle = IDLE_POLLS_PER_MINUTE * MONTH_MINUTES * len(polled)
    alarms = alarm_metrics(load_template())
    scenarios = {
        n: Scenario(n, leads_a_month, drivers_a_month, fires, idle_sqs_requests=idle, alarm_months=alarms)
        for n in (1, TENANTS_AT_SCALE)
    }
    bills = {n: bill(measured, scenario) for n, scenario in scenarios.items()}
    # The same month after the account's always-free tier: one deployment in an account of its own.
    bills[-1] = bill(measured, scenarios[1], free=ALWAYS_FREE)
    facts = {
        "leads": leads,
        "verdicts": verdicts,
        "mismatches": mismatches,
        "crm_requests": crm_requests,
        "wall_s": wall,
        "minutes": minutes,
        "working_days": working_days,
        "counts": counts,
        "steady_actions_per_lead": {k: steady[k] / leads for k in ACTIONS},
        "replayed_actions_per_lead": {k: units[k] / leads for k in ACTIONS},
        "schedules": schedules,
        "fires": fires,
        "polled_queues": polled,
        "alarm_metrics": alarms,
        "log_compression": compression,
        "metrics": metric_rows,
        "invocations": dict(meter.invocations),
        "memory_mb": meter.memory_mb,
        "not_extrapolated": {
            cls: dict(usage) for cls, usage in meter.usage.items() if not units.get(cls) and cls != "idle"
        },
        "idle_polls_replayed": meter.usage.get("idle", Counter())["sqs.requests"],
    }
    return Run(measured, scenarios, bills, facts)


# ----------------------------------------------------------------------------- output
def _usd(value: float) -> str:
    return f"${value:.4f}" if value < 1 else f"${value:,.2f}"


def report(run: Run) -> None:
    """The human part, on stderr: the bill by service, the top drivers, the functions."""
    one, many = run.bills[1], run.bills[TENANTS_AT_SCALE]
    facts = run.facts
    note(
        f"cost: replayed {facts['minutes']:.0f} simulated minutes in {facts['wall_s']:.0f} s; "
        f"{facts['leads']} leads, {facts['verdicts']} verdicts, {facts['mismatches']} mismatches; "
        f"actions per lead replayed {_fmt(facts['replayed_actions_per_lead'])}, "
        f"in a steady month {_fmt(facts['steady_actions_per_lead'])}"
    )
    note(f"cost: prices of {REGION}, taken {PRICES_TAKEN} (bench/cost_model.py PRICES)")
    lines = [
        f"{'service':<20}{'1 tenant $/month':>18}{'$/1k leads':>12}{'1,000 tenants $/month':>24}{'$/1k leads':>12}"
    ]
    for service in SERVICES:
        lines.append(
            f"{service:<20}{_usd(one.by_service[service]):>18}{one.per_1000_leads(service):>12.4f}"
            f"{_usd(many.by_service[service]):>24}{many.per_1000_leads(service):>12.4f}"
        )
    lines.append(
        f"{'total':<20}{_usd(one.total):>18}{one.per_1000_leads():>12.4f}"
        f"{_usd(many.total):>24}{many.per_1000_leads():>12.4f}"
    )
    note(
        f"cost: the month by service (leads a month: {one.leads:,.0f} / {many.leads:,.0f})\n"
        + "\n".join(lines)
    )
    for n in (1, TENANTS_AT_SCALE):
        parts = split(run.measured, run.scenarios[n])
        note(
            f"cost: {n:,} tenant(s), the month by what drives it: "
            + "; ".join(
                f"{group} {_usd(part.total)} ("
                + ", ".join(f"{k} {_usd(v)}" for k, v in part.by_service.items() if v >= 0.005)
                + ")"
                for group, part in parts.items()
            )
        )
    gb_s = one.usage["lambda.gb_s"]
    arm = PRICES["lambda.gb_s_arm64"].of(gb_s) - PRICES["lambda.gb_s"].of(gb_s)
    note(f"cost: on arm64 Lambda one tenant's month would change by {arm:+.4f} $")
    per_lead = one.per_lead
    rows = _per_lead_rows(one, "dynamodb.wru")
    note(
        f"cost: DynamoDB write units per lead {per_lead('dynamodb.wru'):.1f}, by item kind (>index):\n"
        + "\n".join(rows)
    )
    rows = _per_lead_rows(one, "dynamodb.wru_by_op")
    note("cost: ... by operation:\n" + "\n".join(rows))
    rows = _per_lead_rows(one, "dynamodb.rru")
    note(f"cost: DynamoDB read units per lead {per_lead('dynamodb.rru'):.1f}:\n" + "\n".join(rows))
    rows = _per_lead_rows(one, "sqs.requests", digits=3)
    note(
        f"cost: SQS requests per lead {per_lead('sqs.requests'):.2f} (idle polls included):\n"
        + "\n".join(rows)
    )
    rows = []
    for name, requests in top_details(one.usage, "lambda.requests", 20):
        billed = one.usage[f"lambda.ms_billed:{name}"]
        rows.append(
            f"  {name:<20}{requests:>12,.0f} invocations/month  {billed / max(requests, 1):8.1f} ms billed each "
            f"(measured {one.usage[f'lambda.ms_measured:{name}'] / max(requests, 1):.1f}, in moto "
            f"{one.usage[f'lambda.ms_moto:{name}'] / max(requests, 1):.1f} replaced, waits "
            f"{one.usage[f'lambda.ms_waits:{name}'] / max(requests, 1):.1f}, round trips "
            f"{one.usage[f'lambda.ms_rtt:{name}'] / max(requests, 1):.1f}) at {facts['memory_mb'].get(name)} MB"
        )
    note("cost: Lambda, one tenant's month:\n" + "\n".join(rows))
    rows = [
        f"  {name:<36}{calls:>12,.0f} a month"
        for name, calls in top_details(one.usage, "lambda.invoke_calls", 5)
    ]
    note(
        f"cost: Lambda Invoke calls (asynchronous: the jobs started; no charge of their own, each is "
        f"one of the invocations above), one tenant's month {one.usage['lambda.invoke_calls']:,.0f}:\n"
        + "\n".join(rows)
    )
    note(
        f"cost: API Gateway requests per lead {per_lead('apigateway.requests'):.2f}; log bytes per lead "
        f"{per_lead('logs.bytes'):,.0f} (archive compressed to {facts['log_compression']:.0%}); CRM calls per "
        f"verdict {per_lead('crm.requests'):.2f} (replay: {facts['crm_requests'] / max(facts['verdicts'], 1):.2f}); "
        f"Telegram requests per lead {per_lead('telegram.requests'):.2f}; SSM GetParameter a month "
        f"{one.usage['ssm.requests']:,.0f} (free); EventBridge scheduled invocations a month "
        f"{one.usage['eventbridge.invocations']:,.0f} (free: {', '.join(f'{k} {v:,.0f}' for k, v in facts['fires'].items())})"
    )
    note(
        f"cost: custom metrics: {run.measured.tenant_metric_months:.2f} metric-months per tenant, "
        f"{run.measured.deployment_metric_months:.2f} per deployment; "
        f"stored per lead {per_lead('dynamodb.stored_bytes'):,.0f} bytes (tables + indexes, 100 bytes a row "
        f"included), of which {per_lead('dynamodb.stored_bytes_kept'):,.0f} have no TTL (kept "
        f"{RETENTION_MONTHS:g} months here)"
    )
    if facts["not_extrapolated"]:
        note(f"cost: counted outside any class (not in the month): {facts['not_extrapolated']}")


def _per_lead_rows(bill_: Bill, meter: str, digits: int = 2) -> list[str]:
    """The 12 largest parts of a meter, per lead, one table row each."""
    return [
        f"  {name:<36}{amount / bill_.leads:8.{digits}f}"
        for name, amount in top_details(bill_.usage, meter, 12)
    ]


def _fmt(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in values.items())


def figures(run: Run) -> list[Figure]:
    one, many = run.bills[1], run.bills[TENANTS_AT_SCALE]
    facts = run.facts
    wru = one.per_lead("dynamodb.wru")
    per_one, per_many = one.per_1000_leads(), many.per_1000_leads()
    prices = {
        name: {"usd": p.usd, "per": p.per, "unit": p.unit, "note": p.note} for name, p in PRICES.items()
    }
    found = [
        Figure(
            "cost_usd_per_1000_leads_1_tenant",
            per_one,
            f"<={TARGET_ONE_TENANT}",
            per_one <= TARGET_ONE_TENANT,
            f"one tenant of {one.scenario.leads_per_month / WORKING_DAYS_A_MONTH:g} leads a working day "
            f"({one.leads:,.0f} a month), fixed per-tenant and per-deployment costs included: "
            f"{_usd(one.total)} a month; AWS list prices, {REGION}, {PRICES_TAKEN}",
            {"by_service": one.by_service, "usage": _rounded(one.usage), "prices": prices, "facts": facts},
        ),
        Figure(
            "cost_usd_per_1000_leads_1000_tenants",
            per_many,
            f"<={TARGET_AT_SCALE}",
            per_many <= TARGET_AT_SCALE,
            f"{TENANTS_AT_SCALE:,} such tenants, the deployment's fixed costs spread: {_usd(many.total)} a month",
            {"by_service": many.by_service, "usage": _rounded(many.usage)},
        ),
        Figure(
            "cost_usd_per_1000_leads_1_tenant_always_free",
            run.bills[-1].per_1000_leads(),
            f"<={TARGET_ONE_TENANT}",
            run.bills[-1].per_1000_leads() <= TARGET_ONE_TENANT,
            "the one tenant's month less what an AWS account gets free for good (Lambda 1M requests "
            "and 400k GB-s, SQS 1M requests, 10 metrics, 10 alarms, 5 GB of logs, 25 GB of DynamoDB "
            f"storage): {_usd(run.bills[-1].total)} a month",
            {"by_service": run.bills[-1].by_service},
        ),
        Figure(
            "cost_dynamodb_wru_per_lead",
            wru,
            f"<={TARGET_WRU_PER_LEAD}",
            wru <= TARGET_WRU_PER_LEAD,
            "DynamoDB write request units (tables and indexes) in one tenant's month / its leads",
        ),
        Figure(
            "cost_dynamodb_rru_per_lead",
            one.per_lead("dynamodb.rru"),
            definition="read request units, likewise",
        ),
        Figure(
            "cost_crm_calls_per_verdict",
            one.per_lead("crm.requests"),
            definition="CRM HTTP requests in one tenant's month / its verdicts (one per lead); the replay's own "
            f"ratio: {facts['crm_requests'] / max(facts['verdicts'], 1):.2f}",
        ),
        Figure("cost_usd_a_month_1_tenant", one.total, definition="one tenant's month in dollars"),
        Figure("cost_usd_a_month_1000_tenants", many.total, definition="1,000 tenants' month in dollars"),
    ]
    for service in SERVICES:
        found.append(
            Figure(
                f"cost_usd_per_1000_leads_1_tenant.{service}",
                one.per_1000_leads(service),
                definition=f"{service}'s part of cost_usd_per_1000_leads_1_tenant",
            )
        )
    for service in SERVICES:
        found.append(
            Figure(
                f"cost_usd_per_1000_leads_1000_tenants.{service}",
                many.per_1000_leads(service),
                definition=f"{service}'s part of cost_usd_per_1000_leads_1000_tenants",
            )
        )
    for rank, (kind, amount) in enumerate(top_details(one.usage, "dynamodb.wru", 8), 1):
        found.append(
            Figure(
                f"cost_wru_per_lead.{rank}.{kind}",
                amount / one.leads,
                definition=f"write units per lead of {kind} (item kind, '>index' for its index writes)",
            )
        )
    found += [
        Figure(
            "cost_verdict_mismatches",
            facts["mismatches"],
            "==0",
            facts["mismatches"] == 0,
            "verdicts in the fake CRM cards that differ from the plan (the run counts only at 0)",
        ),
        Figure("cost_replay_wall_s", facts["wall_s"], definition="wall seconds of the counted replay"),
    ]
    return found


def _rounded(usage: Counter[str]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in sorted(usage.items())}
