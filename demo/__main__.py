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
from datetime import date, datetime, timedelta
from pathlib import Path

from demo.replay import DEMO_TENANTS, lose_some_webhooks, replay
from demo.week import DAYS, WEEK_START, PlannedLead, demo_week, on_time_by_plan, tally_calls
from leadwatch.testing import snapshot
from leadwatch.testing.stack import (
    AMO_TENANT,
    B24_TENANT,
    AmoDriver,
    BitrixDriver,
    CrmDriver,
    LocalStack,
    SimClock,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7, help="random seed of the generated week (default 7)")
    parser.add_argument(
        "--leads-per-day",
        type=int,
        default=40,
        help="leads per working day per CRM (default 40; each is dialed for days, so calls are many more)",
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
    week = demo_week(
        DEMO_TENANTS, seed=args.seed, leads_per_day=args.leads_per_day, managers=args.managers, days=args.days
    )
    calendar, leads, actions = week.calendar, week.leads, week.actions
    end, settle_until, names = week.end, week.settle_until, week.names
    tally_calls(actions, settle_until)

    # Calls planned after the replay stops are not made; the header counts what the end reports.
    calls = sum(lead.calls for lead in leads)
    print(
        f"leadwatch demo: {len(leads)} leads and {calls} calls "
        f"for {2 * args.managers} managers in two CRMs, leads arriving "
        f"{WEEK_START:%a %d %b} .. {end - timedelta(days=1):%a %d %b %Y} (Europe/Moscow), seed {args.seed};\n"
        f"the replay runs on to {settle_until:%a %d %b %H:%M}, when the last of them falls due"
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
        replay(stack, calendar, actions, drivers, settle_until, reports=True)
        report = build_report(stack, leads, drivers, calendar, args, time.monotonic() - started)
        saved = snapshot.save(stack.dynamodb, args.out / "state", stack.tenants_dir, stack.secrets)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(report["markdown"], encoding="utf-8")
    (args.out / "report.json").write_text(
        json.dumps(report["data"], ensure_ascii=False, indent=2), encoding="utf-8"
    )
    print(report["text"])
    print(f"\nreport written to {args.out / 'report.md'} and {args.out / 'report.json'}")
    lead = next(lead.crm_id for lead in leads if lead.tenant == B24_TENANT and lead.crm_id)
    print(asking(args.out / "state", saved, WEEK_START.date(), last_day(args), lead))
    data = report["data"]
    return 0 if data["mismatches"] == 0 and data["dialing"]["mismatches"] == 0 else 1


def last_day(args: argparse.Namespace) -> date:
    return (WEEK_START + timedelta(days=args.days - 1)).date()


def asking(state: Path, items: int, first: date, last: date, lead: str) -> str:
    """How to ask the CLI and the read API about this run, with this run's tenants and days."""
    cli = f".venv/bin/leadwatch --state {state}"
    return "\n".join(
        [
            f"\nthe demo's state ({items} items) is saved in {state}; ask about it:",
            f"  {cli} timeliness {B24_TENANT} --from {first} --to {last}",
            f"  {cli} dialing {AMO_TENANT} --date {first + timedelta(days=1)}",
            f"  {cli} calls {B24_TENANT} {lead}",
            f"  {cli} violations {B24_TENANT} --from {first} --to {last}",
            f"  {cli} serve      # the read API on http://127.0.0.1:8000, for curl (it prints the keys)",
        ]
    )


def build_report(
    stack: LocalStack, leads: list[PlannedLead], drivers, calendar, args, elapsed: float
) -> dict:
    first = WEEK_START.date()
    last = last_day(args)
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
    dialing = dialing_section(stack, leads, calendar, args)
    data["dialing"] = dialing["data"]
    text = "\n\n".join(sections_text) + "\n\n" + "\n".join(facts) + "\n\n" + dialing["text"]
    markdown = (
        "# leadwatch demo\n\n## Timeliness of first processing\n\n"
        + "\n\n".join(sections_md)
        + "\n\n"
        + "\n".join(f"- {f}" for f in facts)
        + "\n\n## Dialing discipline\n\n"
        + dialing["markdown"]
        + "\n"
    )
    return {"text": text, "markdown": markdown, "data": data}


def dialing_section(stack: LocalStack, leads: list[PlannedLead], calendar, args) -> dict:
    """Per manager over the week's report days, from the read API; every counter checked against the plan."""
    first = WEEK_START.date()
    days = calendar.working_days(first, first + timedelta(days=args.days - 1))
    rows: dict[str, dict[str, dict]] = {}
    for tenant in (B24_TENANT, AMO_TENANT):
        names = stack.ctx.names(stack.ctx.tenant(tenant))
        per: dict[str, dict] = {}
        for day in days:
            status, body = stack.get(
                f"/tenants/{tenant}/dialing?date={day}", headers={"X-Api-Key": stack.api_key(tenant)}
            )
            if status != 200:
                raise RuntimeError(f"read API answered {status}: {body}")
            for line in body["managers"]:
                row = _row(per, names.manager(line["manager"]))
                row["lead_days"] += line["in_plan"]
                row["compliant"] += line["compliant"]
                row["behind"] += line["behind"]
                row["untouched"] += line["untouched"]
            for touch in body["touches"]:
                _row(per, names.manager(touch["manager"]))["touches"] += 1
        start = datetime.combine(first, datetime.min.time(), calendar.tz)
        for row in stack.ctx.store.violations(
            tenant, start, start + timedelta(days=30), "improper_rejection"
        ):
            _row(per, names.manager(row.manager))["improper"] += 1
        rows[tenant] = per
    # The truth: every planned call counted once on its card, every planned early rejection flagged.
    mismatches = []
    for tenant in (B24_TENANT, AMO_TENANT):
        mine = [lead for lead in leads if lead.tenant == tenant and lead.crm_id]
        totals = stack.ctx.store.call_totals(tenant, [_ref(lead) for lead in mine])
        for lead in mine:
            got = totals.get(_ref(lead), (0, 0))
            if got != (lead.calls, lead.touches):
                mismatches.append((lead.key, got, (lead.calls, lead.touches)))
    planned_improper = sum(1 for lead in leads if lead.rejected_at is not None and lead.calls < 15)
    flagged = sum(row["improper"] for per in rows.values() for row in per.values())
    if flagged != planned_improper:
        mismatches.append(("improper rejections", flagged, planned_improper))
    reports = [m for m in stack.telegram.messages if "Dialing report" in m.text]
    alerts = [m for m in stack.telegram.messages if "Improper rejection" in m.text]
    calls = sum(lead.calls for lead in leads)
    facts = [
        f"calls: {calls}, counted on their cards as planned: "
        f"{sum(1 for lead in leads if lead.crm_id) - len([m for m in mismatches if m[0] != 'improper rejections'])}"
        f"/{sum(1 for lead in leads if lead.crm_id)} leads",
        f"improper rejections flagged: {flagged} (planned {planned_improper}); alerts sent: {len(alerts)}",
        f"daily dialing reports sent at 18:30 on working days ({', '.join(f'{d:%a %d.%m}' for d in days)}): "
        f"{len(reports)} Telegram message(s)",
    ]
    if mismatches:
        facts.append("DIALING MISMATCHES (lead, got, want): " + ", ".join(map(str, mismatches[:10])))
    text_parts, md_parts = [], []
    for tenant, per in rows.items():
        title = f"{tenant}: dialing compliance, lead-days in plan on {len(days)} working days"
        text_parts.append(_dialing_text(title, per))
        md_parts.append(_dialing_markdown(title, per))
    return {
        "text": "\n\n".join(text_parts) + "\n\n" + "\n".join(facts),
        "markdown": "\n\n".join(md_parts) + "\n\n" + "\n".join(f"- {f}" for f in facts),
        "data": {
            "tenants": rows,
            "calls": calls,
            "improper_rejections": flagged,
            "planned_improper_rejections": planned_improper,
            "reports_sent": len(reports),
            "mismatches": len(mismatches),
        },
    }


def _row(per: dict[str, dict], name: str) -> dict:
    return per.setdefault(name, dict.fromkeys(DIALING_COLUMNS, 0))


def _ref(lead: PlannedLead):
    from leadwatch.events import EntityRef, EntityType

    return EntityRef(EntityType.LEAD, str(lead.crm_id))


DIALING_COLUMNS = ("lead_days", "compliant", "behind", "untouched", "touches", "improper")
DIALING_HEADERS = ("lead-days", "3+ a day", "behind", "no call", "touches", "improper rej.")


def _share(row: dict) -> float:
    return row["compliant"] / row["lead_days"] * 100 if row["lead_days"] else 0.0


def _dialing_rows(per: dict[str, dict]) -> list[tuple[str, dict]]:
    """Worst compliance first, as the timeliness tables put the latest first, then the total."""
    ordered = sorted(per.items(), key=lambda item: (_share(item[1]), item[0]))
    total = {c: sum(row[c] for row in per.values()) for c in DIALING_COLUMNS}
    return [*ordered, ("TOTAL", total)]


def _dialing_text(title: str, per: dict[str, dict]) -> str:
    width = max([len(name) for name in per] + [7])
    lines = [
        title,
        f"  {'manager':<{width}}  " + "  ".join(f"{h:>9}" for h in DIALING_HEADERS) + "  compliant",
    ]
    for name, row in _dialing_rows(per):
        lines.append(
            f"  {name:<{width}}  "
            + "  ".join(f"{row[c]:>9}" for c in DIALING_COLUMNS)
            + f"  {_share(row):>8.1f}%"
        )
    return "\n".join(lines)


def _dialing_markdown(title: str, per: dict[str, dict]) -> str:
    lines = [f"### {title}", "", "| manager | " + " | ".join(DIALING_HEADERS) + " | compliant |"]
    lines.append("|---|" + "---:|" * (len(DIALING_HEADERS) + 1))
    for name, row in _dialing_rows(per):
        label = "**total**" if name == "TOTAL" else name
        lines.append(
            f"| {label} | " + " | ".join(str(row[c]) for c in DIALING_COLUMNS) + f" | {_share(row):.1f}% |"
        )
    return "\n".join(lines)


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
