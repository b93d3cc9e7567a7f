"""What dialing discipline writes for the head, in each language (the design: leadwatch.messages).

The daily report, the improper-rejection alert and its digest line, and the text of the `calls`
query. Golden files of each, in both languages: tests/golden/dialing/.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from leadwatch.i18n import Lang, Plural
from leadwatch.messages import Kind, Writer, link, message, parts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from leadwatch.cards import LeadState
    from leadwatch.events import Call, EntityRef
    from workflows.dialing.rules import DailyReport

REPORT = Kind("dialing_report", "📞")
REJECTION_ALERT = Kind("improper_rejection", "🚫")


@dataclass(frozen=True)
class Texts:
    report: str  # the report's header: {day}
    summary: str  # {in_plan} {needed} {calls} {compliant} {behind} {untouched}
    by_manager: str
    by_manager_columns: str
    untouched: str
    untouched_item: str  # {card} {manager} {day} {days} {calls}
    behind: str
    behind_item: str  # {card} {manager} {made} {needed} {day} {days}
    touches: str
    touch_item: str  # {clock} {card} {manager} {duration}
    recording: str
    not_working_day: str  # {day}
    rejection: str  # the alert's header
    rejected: str  # {when} {attempts} {required} {touches}
    rejection_line: str  # one line of a digest: {card} {manager} {made} {required}
    calls_head: str  # {card} {manager} {stage}
    directions: dict[str, str]  # a call's direction as the CRM tells it -> as shown
    touch_mark: str
    seconds: str  # {n}
    leads: Plural
    calls: Plural
    touches_count: Plural


TEXTS: dict[Lang, Texts] = {
    "ru": Texts(
        report="Отчёт о прозвоне за {day}",
        summary="В плане: {in_plan} · по норме ({needed}+ {calls} за день): {compliant}"
        " · отстают: {behind} · без звонков сегодня: {untouched}",
        by_manager="По менеджерам",
        by_manager_columns="(в плане / по норме / отстают / без звонков)",
        untouched="Без звонков сегодня",
        untouched_item="{card} — {manager}, день {day}/{days}, всего {calls}",
        behind="Отстают от плана сегодня",
        behind_item="{card} — {manager}, сегодня {made} из {needed}, день {day}/{days}",
        touches="Результативные звонки сегодня",
        touch_item="{clock} {card} — {manager}, {duration}",
        recording="запись",
        not_working_day="({day} — нерабочий день: дня плана нет, отчёт не отправляется)",
        rejection="Необоснованный отказ",
        rejected="Отказ {when}: {attempts} из {required} обязательных ({touches})",
        rejection_line="{card}: {manager}, отказ после {made} из {required} звонков",
        calls_head="{card}, {manager}, этап: {stage}",
        directions={"in": "вх", "out": "исх"},
        touch_mark="результативный",
        seconds="{n} с",
        leads=Plural("лид", "лида", few="лида", many="лидов"),
        calls=Plural("звонок", "звонка", few="звонка", many="звонков"),
        touches_count=Plural("результативный", "результативных"),
    ),
    "en": Texts(
        report="Dialing report for {day}",
        summary="In plan: {in_plan} · compliant ({needed}+ {calls} today): {compliant}"
        " · behind: {behind} · no attempt today: {untouched}",
        by_manager="By manager",
        by_manager_columns="(in plan / compliant / behind / untouched)",
        untouched="No attempt today",
        untouched_item="{card} — {manager}, day {day}/{days}, {calls} in total",
        behind="Behind plan today",
        behind_item="{card} — {manager}, {made} of {needed} today, day {day}/{days}",
        touches="Successful touches today",
        touch_item="{clock} {card} — {manager}, {duration}",
        recording="recording",
        not_working_day="({day} is not a working day: no plan day, no report is sent)",
        rejection="Improper rejection",
        rejected="Rejected {when} after {attempts} of the {required} required ({touches})",
        rejection_line="{card}: {manager}, rejected after {made} of {required} attempts",
        calls_head="{card}, {manager}, stage: {stage}",
        directions={"in": "in", "out": "out"},
        touch_mark="touch",
        seconds="{n} s",
        leads=Plural("lead", "leads"),
        calls=Plural("call attempt", "call attempts"),
        touches_count=Plural("successful touch", "successful touches"),
    ),
}


@dataclass(frozen=True)
class ReportView:
    """How to show cards and people to the head: each card's link, and the tenant's writer."""

    card_url: Callable[[EntityRef], str]
    writer: Writer


def _card(view: ReportView, entity: EntityRef, title: str | None) -> str:
    return view.writer.card(view.card_url(entity), title, entity.type, entity.id)


def _duration(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{minutes}:{rest:02d}"


def report_message(report: DailyReport, view: ReportView, attempts_per_day: int, plan_days: int) -> str:
    """The day's report (a `rules.DailyReport`) as Telegram HTML, one line per item, so it can
    be cut between lines."""
    w = view.writer
    t = TEXTS[w.lang]
    lines = [
        w.header(REPORT, t.report.format(day=w.day(report.day))),
        t.summary.format(
            in_plan=w.count(report.in_plan, t.leads),
            needed=w.number(attempts_per_day),
            calls=w.word(attempts_per_day, t.calls),
            compliant=w.number(len(report.compliant)),
            behind=w.number(len(report.behind)),
            untouched=w.number(len(report.untouched)),
        ),
    ]
    if report.managers:
        lines += ["", f"{w.section(t.by_manager)} {t.by_manager_columns}"]
        for line in report.managers:
            counts = " / ".join(
                w.number(n) for n in (line.in_plan, line.compliant, line.behind, line.untouched)
            )
            lines.append(w.bullet(f"{w.manager(line.manager)}: {counts}"))
    if report.untouched:
        lines += ["", w.section(t.untouched, len(report.untouched))]
        for item in report.untouched:
            text = t.untouched_item.format(
                card=_card(view, item.entity, item.title),
                manager=w.manager(item.manager),
                day=item.day_number,
                days=plan_days,
                calls=w.count(item.attempts_total, t.calls),
            )
            lines.append(w.bullet(text))
    if report.behind:
        lines += ["", w.section(t.behind, len(report.behind))]
        for item in report.behind:
            text = t.behind_item.format(
                card=_card(view, item.entity, item.title),
                manager=w.manager(item.manager),
                made=w.number(item.attempts_today),
                needed=w.number(attempts_per_day),
                day=item.day_number,
                days=plan_days,
            )
            lines.append(w.bullet(text))
    lines += ["", w.section(t.touches, len(report.touches))]
    if not report.touches:
        lines.append(w.texts.none)
    for touch in report.touches:
        text = t.touch_item.format(
            clock=w.clock(touch.started_at),
            card=_card(view, touch.entity, touch.title),
            manager=w.manager(touch.manager),
            duration=_duration(touch.duration),
        )
        if touch.record_url:
            text += f" · {link(touch.record_url, t.recording)}"
        lines.append(w.bullet(text))
    return message(lines)


def report_parts(html_text: str) -> list[str]:
    """The report as it is sent: one message, or parts of whole lines, each headed by the report's
    first line and numbered (leadwatch.messages.parts)."""
    return parts(html_text, header=html_text.split("\n", 1)[0])


def not_working_day(writer: Writer, day: date) -> str:
    return TEXTS[writer.lang].not_working_day.format(day=writer.day(day))


def rejection_message(state: LeadState, attempts: int, touches: int, required: int, view: ReportView) -> str:
    """The alert about a card rejected after fewer call attempts than required."""
    w = view.writer
    t = TEXTS[w.lang]
    assert state.rejected_at is not None
    return message(
        [
            w.header(REJECTION_ALERT, t.rejection),
            _card(view, state.entity, state.title),
            w.field(w.texts.manager, w.manager(state.responsible)),
            t.rejected.format(
                when=w.when(state.rejected_at),
                attempts=w.count(attempts, t.calls),
                required=w.number(required),
                touches=w.count(touches, t.touches_count),
            ),
        ]
    )


def rejection_line(state: LeadState, attempts: int, required: int, view: ReportView) -> str:
    """The alert as one line of a digest."""
    w = view.writer
    line = TEXTS[w.lang].rejection_line.format(
        card=_card(view, state.entity, state.title),
        manager=w.manager(state.responsible),
        made=w.number(attempts),
        required=w.number(required),
    )
    return f"{REJECTION_ALERT.icon} {line}"


def calls_text(
    state: LeadState, calls: Sequence[Call], is_touch: Callable[[Call], bool], writer: Writer, url: str
) -> str:
    """A card's calls as plain text (the CLI, the `calls` query): who, when, how long."""
    from leadwatch.messages import terminal

    w = writer
    t = TEXTS[w.lang]
    head = t.calls_head.format(
        card=w.card(url, state.title, state.entity.type, state.entity.id),
        manager=w.manager(state.responsible),
        stage=w.stage(state.stage, state.entity.type),
    )
    rows = [
        (
            w.when(call.started_at),
            t.directions.get(call.direction, call.direction),
            t.seconds.format(n=w.number(call.duration)),
            w.manager_name(call.manager),
            t.touch_mark if is_touch(call) else "",
            call.record_url or "",
        )
        for call in calls
    ]
    widths = [max([len(row[i]) for row in rows] + [0]) for i in range(5)]
    lines = [terminal(head)]
    for row in rows:
        cells = [row[0], row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3].ljust(widths[3])]
        lines.append(("  " + "  ".join(cells) + "  " + row[4].ljust(widths[4]) + "  " + row[5]).rstrip())
    touches = sum(1 for call in calls if is_touch(call))
    lines.append(f"{w.count(len(calls), t.calls)}, {w.count(touches, t.touches_count)}")
    return "\n".join(lines)
