"""The local demo: a generated sales week replayed through leadwatch's real handlers.

    python -m demo [--seed N] [--leads-per-day N] [--managers N] [--out DIR]

DynamoDB and SQS are moto's server, Bitrix24 / amoCRM / Telegram are the fakes,
all over HTTP on 127.0.0.1. The fakes post their webhooks to leadwatch's HTTP
endpoint; the queue is drained by the real worker; the deadline sweep and
reconciliation run as EventBridge would run them, on a simulated clock.
At the end the per-manager tables come from the read API and are written to a file, each in its
tenant's language (the Bitrix24 tenant writes Russian, the amoCRM one English), beside a few of the
Telegram messages each head read.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from demo import qc
from demo.rejections import plan_rejections
from demo.replay import DEMO_TENANTS, lose_some_webhooks, replay
from demo.week import DAYS, WEEK_START, PlannedLead, demo_week, on_time_by_plan, tally_calls
from leadwatch import i18n
from leadwatch.i18n import Lang, Plural
from leadwatch.messages import CORE, StaticNames, Writer
from leadwatch.telegram import visible_text
from leadwatch.testing import snapshot
from leadwatch.testing.stack import (
    AMO_TENANT,
    B24_TENANT,
    LocalStack,
    SimClock,
)
from workflows.dialing.messages import REJECTION_ALERT, REPORT
from workflows.qc.messages import OVERDUE
from workflows.timeliness.messages import LATE_ALERT
from workflows.timeliness.messages import TEXTS as TIMELINESS_TEXTS
from workflows.timeliness.messages import table as timeliness_table
from workflows.timeliness.queries import ManagerTimeliness

# The demo's own table headings, in each tenant's language (the Bitrix24 tenant writes Russian,
# the amoCRM one English: leadwatch.testing.stack).
DEMO_TEXTS: dict[Lang, dict[str, str]] = {
    "ru": {
        "timeliness": "{tenant} ({crm}), лиды, поступившие {first} – {last}",
        "dialing": "{tenant}: прозвон по плану, лидо-дни в плане за {days}",
        "messages": "Что руководитель получил в Telegram ({tenant}), например:",
    },
    "en": {
        "timeliness": "{tenant} ({crm}), leads that arrived {first} .. {last}",
        "dialing": "{tenant}: dialing compliance, lead-days in plan on {days}",
        "messages": "What the head read in Telegram ({tenant}), for example:",
    },
}
WORKING_DAYS: dict[Lang, Plural] = {
    "ru": Plural("рабочий день", "рабочих дня", few="рабочих дня", many="рабочих дней"),
    "en": Plural("working day", "working days"),
}
DIALING_HEADERS: dict[Lang, tuple[str, ...]] = {
    "ru": ("лидо-дней", "3+ в день", "отстают", "без звонков", "результат.", "необосн. отк.", "по норме"),
    "en": ("lead-days", "3+ a day", "behind", "no call", "touches", "improper rej.", "compliant"),
}


MSK = ZoneInfo("Europe/Moscow")  # both demo tenants' zone


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


@dataclass
class Marks:
    """Counters as the week began: what the days before it left in the fakes is not the week's."""

    telegram: int = 0
    bitrix_calls: int = 0
    amo_calls: int = 0
    webhooks: int = 0

    @classmethod
    def of(cls, stack: LocalStack) -> Marks:
        return cls(
            len(stack.telegram.messages),
            len(stack.bitrix.requests("/rest/")),
            len(stack.amo.requests("/api/v4/")),
            len(stack.webhook_answers),
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    week = demo_week(
        DEMO_TENANTS, seed=args.seed, leads_per_day=args.leads_per_day, managers=args.managers, days=args.days
    )
    # The week's rejections get their reasons (and a few more happen); the days before it are planned.
    plan = plan_rejections(week, args.seed)
    calendar, leads, actions = week.calendar, week.leads, week.actions
    end, settle_until = week.end, week.settle_until
    names = week.names | {user: name for people in qc.REVIEWERS.values() for user, name in people.items()}
    tally_calls(actions, settle_until)
    clock = SimClock(plan.history_start)

    # Calls planned after the replay stops are not made; the header counts what the end reports.
    calls = sum(lead.calls for lead in leads)
    print(
        f"leadwatch demo: {len(leads)} leads and {calls} calls "
        f"for {2 * args.managers} managers in two CRMs, leads arriving "
        f"{WEEK_START:%a %d %b} .. {end - timedelta(days=1):%a %d %b %Y} (Europe/Moscow), seed {args.seed};\n"
        f"the replay runs on to {settle_until:%a %d %b %H:%M}, when the last of them falls due;\n"
        f"{sum(1 for lead in leads if lead.rejected_at)} of them are rejected ({plan.declined} after a client said no "
        "on a call), and one manager in each CRM rejects into reasons nobody reviews: "
        + ", ".join(f"{m.name} ({tenant})" for tenant, m in plan.dumpers.items())
    )
    print("starting moto (DynamoDB, SQS) and fake Bitrix24, amoCRM and Telegram servers on 127.0.0.1 ...")
    started = time.monotonic()
    drop_rng = random.Random(args.seed + 1)
    with LocalStack(
        clock, http=True, crm_rate_scale=args.rate_scale, real_sleep=True, managers=names
    ) as stack:
        qc.install(stack)
        drivers = qc.drivers(stack)
        people = qc.people_for(stack, plan, leads, week.teams, args.seed)
        schedules = qc.QcSchedules(stack)
        print(
            f"first the {sum(1 for a in plan.history if a.kind == 'reject')} rejections of the days before "
            f"(from {plan.history_start:%a %d %b}), the baseline of the weekly reason audit ..."
        )
        history_started = time.monotonic()
        history = qc.replay_history(stack, plan, drivers, people, schedules)
        history["seconds"] = round(time.monotonic() - history_started, 1)
        people.stats = {tenant: Counter() for tenant in people.stats}
        schedules.reset()
        marks = Marks.of(stack)
        stack.clock.set(WEEK_START - timedelta(minutes=1))
        lose_some_webhooks(stack, args.drop, drop_rng)
        replay(stack, calendar, actions, drivers, settle_until, reports=True, people=people, qc=schedules)
        report = build_report(stack, leads, drivers, calendar, args, time.monotonic() - started, marks)
        quality = qc.qc_report(
            stack, plan, leads, people, schedules, WEEK_START.date(), settle_until.date(), history
        )
        saved = snapshot.save(stack.dynamodb, args.out / "state", stack.tenants_dir, stack.secrets)
    report["text"] += "\n\n" + quality["text"]
    report["markdown"] += "\n## Quality control of rejections\n\n" + quality["markdown"] + "\n"
    report["data"]["qc"] = quality["data"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(report["markdown"], encoding="utf-8")
    (args.out / "report.json").write_text(
        json.dumps(report["data"], ensure_ascii=False, indent=2), encoding="utf-8"
    )
    print(report["text"])
    print(f"\nreport written to {args.out / 'report.md'} and {args.out / 'report.json'}")
    lead = next(lead.crm_id for lead in leads if lead.tenant == B24_TENANT and lead.crm_id)
    print(asking(args.out / "state", saved, WEEK_START.date(), last_day(args), lead, plan.audited.key))
    data = report["data"]
    clean = data["mismatches"] == 0 and data["dialing"]["mismatches"] == 0 and data["qc"]["mismatches"] == 0
    return 0 if clean else 1


def last_day(args: argparse.Namespace) -> date:
    return (WEEK_START + timedelta(days=args.days - 1)).date()


def asking(state: Path, items: int, first: date, last: date, lead: str, week: str) -> str:
    """How to ask the CLI and the read API about this run, with this run's tenants and days."""
    cli = f".venv/bin/leadwatch --state {state}"
    return "\n".join(
        [
            f"\nthe demo's state ({items} items) is saved in {state}; ask about it:",
            f"  {cli} timeliness {B24_TENANT} --from {first} --to {last}",
            f"  {cli} dialing {AMO_TENANT} --date {first + timedelta(days=1)}",
            f"  {cli} calls {B24_TENANT} {lead}",
            f"  {cli} violations {B24_TENANT} --from {first} --to {last}",
            f"  {cli} violations {AMO_TENANT} --type qc_returned_to_work --from {first} --to {last + timedelta(days=1)}",
            f"  {cli} qc-audit {B24_TENANT} --week {week}",
            f"  {cli} serve      # the read API on http://127.0.0.1:8000, for curl (it prints the keys)",
        ]
    )


def build_report(
    stack: LocalStack, leads: list[PlannedLead], drivers, calendar, args, elapsed: float, marks: Marks
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
        lang = language(stack, tenant)
        title = DEMO_TEXTS[lang]["timeliness"].format(
            tenant=tenant,
            crm="Bitrix24" if tenant == B24_TENANT else "amoCRM",
            first=i18n.day_text(first, lang),
            last=i18n.day_text(last, lang),
        )
        sections_text.append(table_text(title, rows, lang, tenant, first, last))
        sections_md.append(table_markdown(title, rows, lang))
    # Check every verdict leadwatch wrote into the CRM cards against the plan's truth.
    expected_late = 0
    for lead in leads:
        on_time = on_time_by_plan(lead, calendar)
        expected_late += not on_time
        value = drivers[lead.tenant].verdict(lead.crm_id)
        want = ("Y" if on_time else "N") if lead.tenant == B24_TENANT else ("Yes" if on_time else "No")
        if value != want:
            mismatches.append((lead.key, lead.crm_id, value, want))
    messages = len(stack.telegram.messages) - marks.telegram
    b24_calls = len(stack.bitrix.requests("/rest/")) - marks.bitrix_calls
    amo_calls = len(stack.amo.requests("/api/v4/")) - marks.amo_calls
    webhooks = len(stack.webhook_answers) - marks.webhooks
    facts = [
        f"leads: {len(leads)}; late by the plan's truth: {expected_late}; Telegram messages sent this week: {messages}",
        f"verdicts in the CRM cards matching the plan: {len(leads) - len(mismatches)}/{len(leads)}",
        f"webhooks lost on the way: {len(stack.dropped)} (their leads were found by reconciliation)",
        f"CRM API calls this week: Bitrix24 {b24_calls}, amoCRM {amo_calls}; webhooks answered: {webhooks}",
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
    dialing = dialing_section(stack, leads, calendar, args, marks)
    data["dialing"] = dialing["data"]
    samples = sample_messages(stack, marks)
    text = (
        "\n\n".join(sections_text)
        + "\n\n"
        + "\n".join(facts)
        + "\n\n"
        + dialing["text"]
        + "\n\n"
        + samples["text"]
    )
    markdown = (
        "# leadwatch demo\n\n## Timeliness of first processing\n\n"
        + "\n\n".join(sections_md)
        + "\n\n"
        + "\n".join(f"- {f}" for f in facts)
        + "\n\n## Dialing discipline\n\n"
        + dialing["markdown"]
        + "\n\n## Messages in Telegram\n\n"
        + samples["markdown"]
        + "\n"
    )
    return {"text": text, "markdown": markdown, "data": data}


def dialing_section(stack: LocalStack, leads: list[PlannedLead], calendar, args, marks: Marks) -> dict:
    """Per manager over the week's report days, from the read API; every counter checked against the plan."""
    first = WEEK_START.date()
    days = calendar.working_days(first, first + timedelta(days=args.days - 1))
    rows: dict[str, dict[str, dict]] = {}
    for tenant in (B24_TENANT, AMO_TENANT):
        # Names as the tenant's messages give them, the unknown in its language.
        names = Writer(language(stack, tenant), MSK, stack.ctx.names(stack.ctx.tenant(tenant)))
        per: dict[str, dict] = {}
        for day in days:
            status, body = stack.get(
                f"/tenants/{tenant}/dialing?date={day}", headers={"X-Api-Key": stack.api_key(tenant)}
            )
            if status != 200:
                raise RuntimeError(f"read API answered {status}: {body}")
            for line in body["managers"]:
                row = _row(per, names.manager_name(line["manager"]))
                row["lead_days"] += line["in_plan"]
                row["compliant"] += line["compliant"]
                row["behind"] += line["behind"]
                row["untouched"] += line["untouched"]
            for touch in body["touches"]:
                _row(per, names.manager_name(touch["manager"]))["touches"] += 1
        start = datetime.combine(first, datetime.min.time(), calendar.tz)
        for row in stack.ctx.store.violations(
            tenant, start, start + timedelta(days=30), "improper_rejection"
        ):
            _row(per, names.manager_name(row.manager))["improper"] += 1
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
    week_messages = stack.telegram.messages[marks.telegram :]
    reports = [m for m in week_messages if REPORT.of(m.text)]
    alerts = [m for m in week_messages if REJECTION_ALERT.of(m.text)]
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
        lang = language(stack, tenant)
        title = DEMO_TEXTS[lang]["dialing"].format(
            tenant=tenant, days=i18n.count(len(days), WORKING_DAYS[lang], lang)
        )
        text_parts.append(_dialing_text(title, per, lang))
        md_parts.append(_dialing_markdown(title, per, lang))
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


def _share(row: dict) -> float:
    return row["compliant"] / row["lead_days"] * 100 if row["lead_days"] else 0.0


def _dialing_rows(per: dict[str, dict], lang: Lang) -> list[tuple[str, dict]]:
    """Worst compliance first, as the timeliness tables put the latest first, then the total."""
    ordered = sorted(per.items(), key=lambda item: (_share(item[1]), item[0]))
    total = {c: sum(row[c] for row in per.values()) for c in DIALING_COLUMNS}
    return [*ordered, (CORE[lang].total, total)]


def _dialing_text(title: str, per: dict[str, dict], lang: Lang) -> str:
    manager = TIMELINESS_TEXTS[lang].columns[0]
    rows = _dialing_rows(per, lang)
    width = max([len(name) for name, _ in rows] + [len(manager)])
    headers = DIALING_HEADERS[lang]
    widths = [max(len(h), 9) for h in headers]
    lines = [
        title,
        f"  {manager:<{width}}  " + "  ".join(f"{h:>{w}}" for h, w in zip(headers, widths, strict=True)),
    ]
    for name, row in rows:
        cells = [i18n.number(row[c], lang) for c in DIALING_COLUMNS] + [i18n.percent(_share(row) / 100, lang)]
        lines.append(
            f"  {name:<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )
    return "\n".join(lines)


def _dialing_markdown(title: str, per: dict[str, dict], lang: Lang) -> str:
    manager = TIMELINESS_TEXTS[lang].columns[0]
    lines = [f"### {title}", "", f"| {manager} | " + " | ".join(DIALING_HEADERS[lang]) + " |"]
    lines.append("|---|" + "---:|" * len(DIALING_HEADERS[lang]))
    for name, row in _dialing_rows(per, lang):
        label = f"**{name}**" if name == CORE[lang].total else name
        lines.append(
            f"| {label} | "
            + " | ".join(str(row[c]) for c in DIALING_COLUMNS)
            + f" | {i18n.percent(_share(row) / 100, lang)} |"
        )
    return "\n".join(lines)


def language(stack: LocalStack, tenant: str) -> Lang:
    return stack.ctx.tenant(tenant).language


def _managers(rows: list[dict]) -> list[ManagerTimeliness]:
    return [ManagerTimeliness(r["manager"], r["name"], r["leads"], r["on_time"], r["late"]) for r in rows]


def table_text(title: str, rows: list[dict], lang: Lang, tenant: str, first: date, last: date) -> str:
    """The per-manager table as the CLI and `format=text` show it, in the tenant's language."""
    writer = Writer(lang, MSK, StaticNames({r["manager"]: r["name"] for r in rows}))
    table = timeliness_table(_managers(rows), writer, tenant, first, last)
    return "\n".join([title, *(f"  {line}" for line in table.splitlines()[1:])])


def table_markdown(title: str, rows: list[dict], lang: Lang) -> str:
    columns = TIMELINESS_TEXTS[lang].columns
    lines = [f"## {title}", "", "| " + " | ".join(columns) + " |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['leads']} | {r['on_time']} | {r['late']} | {i18n.percent(r['share_late'], lang)} |"
        )
    total = sum(r["leads"] for r in rows)
    late = sum(r["late"] for r in rows)
    share = i18n.percent(late / total if total else 0, lang)
    lines.append(f"| **{CORE[lang].total}** | {total} | {total - late} | {late} | {share} |")
    return "\n".join(lines)


SAMPLE_LINES = 16  # of a long message (a report) shown in the demo's output


def sample_messages(stack: LocalStack, marks: Marks) -> dict[str, str]:
    """One late alert, one daily report, one improper-rejection alert and one overdue QC task of
    each tenant, as the head read them in Telegram this week (tags removed), in plain text and as
    Markdown."""
    text, markdown = [], []
    for tenant in (B24_TENANT, AMO_TENANT):
        base = (stack.bitrix if tenant == B24_TENANT else stack.amo).url
        mine = [m.text for m in stack.telegram.messages[marks.telegram :] if base in m.text]
        shown = []
        for kind in (LATE_ALERT, REPORT, REJECTION_ALERT, OVERDUE):
            found = next((m for m in mine if kind.of(m)), None)
            if found is None:
                continue
            lines = visible_text(found).splitlines()
            if len(lines) > SAMPLE_LINES:
                lines = [*lines[:SAMPLE_LINES], f"… (+{len(lines) - SAMPLE_LINES})"]
            shown.append(lines)
        heading = DEMO_TEXTS[language(stack, tenant)]["messages"].format(tenant=tenant)
        text.append("\n\n".join([heading, *("\n".join(f"  | {line}" for line in lines) for lines in shown)]))
        markdown.append(
            "\n\n".join([f"### {heading}", *("```\n" + "\n".join(lines) + "\n```" for lines in shown)])
        )
    return {"text": "\n\n".join(text), "markdown": "\n\n".join(markdown)}


if __name__ == "__main__":
    sys.exit(main())
