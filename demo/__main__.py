"""The local demo: a generated sales week replayed through leadwatch's real handlers.

    python -m demo [--seed N] [--leads-per-day N] [--managers N] [--out DIR]

DynamoDB and SQS are moto's server, Bitrix24 / amoCRM / Telegram are the fakes,
all over HTTP on 127.0.0.1. The fakes post their webhooks to leadwatch's HTTP
endpoint; the queue is drained by the real worker; the deadline sweep and
reconciliation run as EventBridge would run them, on a simulated clock.
At the end the per-manager table comes from the read API and is written to a file.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from demo.replay import lose_some_webhooks, replay
from demo.week import DAYS, WEEK_START, PlannedLead, actions_for, managers_for, on_time_by_plan, plan_week
from fakes.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, CrmDriver, LocalStack, SimClock


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7, help="random seed of the generated week (default 7)")
    parser.add_argument(
        "--leads-per-day", type=int, default=100, help="leads per working day per CRM (default 100)"
    )
    parser.add_argument("--managers", type=int, default=20, help="managers per CRM (default 20)")
    parser.add_argument(
        "--drop", type=float, default=0.01, help="share of webhooks lost on the way (default 0.01)"
    )
    parser.add_argument("--days", type=int, default=DAYS, help="days to replay (default 7)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="where the report goes (default ./out)")
    parser.add_argument(
        "--rate-scale",
        type=float,
        default=10.0,
        help="CRM and Telegram rate limits times this, to fit a week into minutes (default 10)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clock = SimClock(WEEK_START - timedelta(minutes=1))
    from workflows.calendar import BusinessCalendar

    hours = [
        (datetime.strptime(a, "%H:%M").time(), datetime.strptime(b, "%H:%M").time())
        for a, b in (("09:00", "13:00"), ("14:00", "18:00"))
    ]
    calendar = BusinessCalendar(
        "Europe/Moscow", {d: hours for d in range(5)}, country="RU", pre_holiday_minutes=60
    )
    rng = random.Random(args.seed)
    teams = {
        B24_TENANT: managers_for(B24_TENANT, 1, args.managers, rng),
        AMO_TENANT: managers_for(AMO_TENANT, 9100001, args.managers, rng),
    }
    names = {m.crm_id: m.name for people in teams.values() for m in people}
    leads = plan_week(calendar, teams, args.leads_per_day, args.seed, days=args.days)
    actions = actions_for(leads)
    end = WEEK_START + timedelta(days=args.days)
    # Leads of the last days fall due later (after a holiday: the next working day 11:00).
    settle_until = max(
        calendar.control_time(
            lead.created_at, timedelta(minutes=15), datetime.strptime("11:00", "%H:%M").time()
        )
        for lead in leads
    ) + timedelta(minutes=5)

    print(
        f"leadwatch demo: {len(leads)} leads for {2 * args.managers} managers in two CRMs, "
        f"{WEEK_START:%a %d %b} .. {end - timedelta(days=1):%a %d %b %Y} (Europe/Moscow), seed {args.seed}"
    )
    print("starting moto (DynamoDB, SQS) and fake Bitrix24, amoCRM and Telegram servers on 127.0.0.1 ...")
    started = time.monotonic()
    drop_rng = random.Random(args.seed + 1)
    with LocalStack(
        clock, http=True, crm_rate_scale=args.rate_scale, real_sleep=True, managers=names
    ) as stack:
        drivers: dict[str, CrmDriver] = {
            B24_TENANT: BitrixDriver(stack.bitrix),
            AMO_TENANT: AmoDriver(stack.amo),
        }
        lose_some_webhooks(stack, args.drop, drop_rng)
        replay(stack, calendar, actions, drivers, settle_until)
        report = build_report(stack, leads, drivers, calendar, args, time.monotonic() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "timeliness-report.md").write_text(report["markdown"], encoding="utf-8")
    (args.out / "timeliness-report.json").write_text(
        json.dumps(report["data"], ensure_ascii=False, indent=2), encoding="utf-8"
    )
    print(report["text"])
    print(
        f"\nreport written to {args.out / 'timeliness-report.md'} and {args.out / 'timeliness-report.json'}"
    )
    return 0 if report["data"]["mismatches"] == 0 else 1


def build_report(
    stack: LocalStack, leads: list[PlannedLead], drivers, calendar, args, elapsed: float
) -> dict:
    first = WEEK_START.date()
    last = (WEEK_START + timedelta(days=args.days - 1)).date()
    sections_text, sections_md, data = (
        [],
        [],
        {"tenants": {}, "period": [first.isoformat(), last.isoformat()]},
    )
    mismatches = []
    for tenant in (B24_TENANT, AMO_TENANT):
        status, body = stack.get(
            f"/tenants/{tenant}/timeliness?from={first}&to={last}",
            headers={"X-Api-Key": stack.api_key(tenant)},
        )
        if status != 200:
            raise RuntimeError(f"read API answered {status}: {body}")
        rows = body["managers"]
        data["tenants"][tenant] = rows
        title = f"{tenant} ({'Bitrix24' if tenant == B24_TENANT else 'amoCRM'}), leads that arrived {first} .. {last}"
        sections_text.append(table_text(title, rows))
        sections_md.append(table_markdown(title, rows))
    # Check every verdict leadwatch wrote into the CRM cards against the plan's truth.
    expected_late = 0
    for lead in leads:
        on_time = on_time_by_plan(lead, calendar)
        expected_late += not on_time
        value = drivers[lead.tenant].verdict(lead.crm_id)
        want = ("Y" if on_time else "N") if lead.tenant == B24_TENANT else ("Yes" if on_time else "No")
        if value != want:
            mismatches.append((lead.key, lead.crm_id, value, want))
    messages = len(stack.telegram.messages)
    b24_calls = len(stack.bitrix.requests("/rest/"))
    amo_calls = len(stack.amo.requests("/api/v4/"))
    facts = [
        f"leads: {len(leads)}; late by the plan's truth: {expected_late}; Telegram alerts sent: {messages}",
        f"verdicts in the CRM cards matching the plan: {len(leads) - len(mismatches)}/{len(leads)}",
        f"webhooks lost on the way: {len(stack.dropped)} (their leads were found by reconciliation)",
        f"CRM API calls: Bitrix24 {b24_calls}, amoCRM {amo_calls}; webhooks answered: {len(stack.webhook_answers)}",
        f"wall time: {elapsed:.0f} s",
    ]
    if mismatches:
        facts.append("MISMATCHES (lead, crm id, got, want): " + ", ".join(map(str, mismatches[:10])))
    data.update(
        leads=len(leads),
        expected_late=expected_late,
        telegram_messages=messages,
        mismatches=len(mismatches),
        dropped_webhooks=len(stack.dropped),
        bitrix_calls=b24_calls,
        amo_calls=amo_calls,
        wall_seconds=round(elapsed, 1),
    )
    text = "\n\n".join(sections_text) + "\n\n" + "\n".join(facts)
    markdown = (
        "# leadwatch demo: timeliness of first processing\n\n"
        + "\n\n".join(sections_md)
        + "\n\n"
        + "\n".join(f"- {f}" for f in facts)
        + "\n"
    )
    return {"text": text, "markdown": markdown, "data": data}


def table_text(title: str, rows: list[dict]) -> str:
    width = max([len(r["name"]) for r in rows] + [7])
    lines = [title, f"  {'manager':<{width}}  {'leads':>5}  {'on time':>7}  {'late':>5}  {'late %':>6}"]
    for r in rows:
        lines.append(
            f"  {r['name']:<{width}}  {r['leads']:>5}  {r['on_time']:>7}  {r['late']:>5}  {r['share_late'] * 100:>5.1f}%"
        )
    total = sum(r["leads"] for r in rows)
    late = sum(r["late"] for r in rows)
    lines.append(
        f"  {'TOTAL':<{width}}  {total:>5}  {total - late:>7}  {late:>5}  {(late / total * 100 if total else 0):>5.1f}%"
    )
    return "\n".join(lines)


def table_markdown(title: str, rows: list[dict]) -> str:
    lines = [
        f"## {title}",
        "",
        "| manager | leads | on time | late | share late |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['leads']} | {r['on_time']} | {r['late']} | {r['share_late'] * 100:.1f}% |"
        )
    total = sum(r["leads"] for r in rows)
    late = sum(r["late"] for r in rows)
    lines.append(
        f"| **total** | {total} | {total - late} | {late} | {(late / total * 100 if total else 0):.1f}% |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
