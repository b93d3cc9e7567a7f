"""What timeliness control writes for the head, in each language (the design: leadwatch.messages).

The late-lead alert, its line in a digest, and the per-manager table of the `timeliness` query.
Golden files of each, in both languages: tests/golden/timeliness/.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from leadwatch.i18n import Lang
from leadwatch.messages import Kind, Writer, message
from leadwatch.names import UNASSIGNED

if TYPE_CHECKING:
    from collections.abc import Sequence

    from leadwatch.cards import LeadState
    from workflows.timeliness.queries import ManagerTimeliness

LATE_ALERT = Kind("late", "⏰")


@dataclass(frozen=True)
class Texts:
    late: str  # the alert's header
    arrived: str  # {arrived}, {due}
    processed_late: str  # {at}
    still_in: str  # {stage}
    late_line: str  # one line of a digest: {card}, {manager}, {due}
    table: str  # {tenant}, {first}, {last}
    columns: tuple[str, str, str, str, str]  # manager, leads, on time, late, share late


TEXTS: dict[Lang, Texts] = {
    "ru": Texts(
        late="Лид не обработан вовремя",
        arrived="Поступил: {arrived}, срок: {due}",
        processed_late="Обработан только {at}",
        still_in="Всё ещё на этапе: {stage}",
        late_line="{card}: {manager}, просрочен (срок {due})",
        table="Своевременность, {tenant}, {first} – {last}",
        columns=("менеджер", "лидов", "вовремя", "с опозданием", "% опозданий"),
    ),
    "en": Texts(
        late="Lead not processed on time",
        arrived="Arrived: {arrived}, due: {due}",
        processed_late="Processed only at {at}",
        still_in="Still in: {stage}",
        late_line="{card}: {manager}, late (due {due})",
        table="Timeliness, {tenant}, {first} .. {last}",
        columns=("manager", "leads", "on time", "late", "late %"),
    ),
}


@dataclass(frozen=True)
class CardView:
    """How to show a card to the head: its link, and the tenant's writer (language, zone, names;
    a name is asked for only when a message is written)."""

    url: str
    writer: Writer


def _card(state: LeadState, view: CardView) -> str:
    return view.writer.card(view.url, state.title, state.entity.type, state.entity.id)


def late_message(state: LeadState, view: CardView) -> str:
    """The alert about one late card."""
    w = view.writer
    t = TEXTS[w.lang]
    lines = [
        w.header(LATE_ALERT, t.late),
        _card(state, view),
        w.field(w.texts.manager, w.manager(state.responsible)),
        t.arrived.format(arrived=w.when(state.created_at), due=w.when(state.due_at)),
    ]
    if state.processed_at is not None:
        lines.append(t.processed_late.format(at=w.when(state.processed_at)))
    else:
        lines.append(t.still_in.format(stage=w.stage(state.stage, state.entity.type)))
    return message(lines)


def late_line(state: LeadState, view: CardView) -> str:
    """The alert as one line of a digest."""
    w = view.writer
    line = TEXTS[w.lang].late_line.format(
        card=_card(state, view), manager=w.manager(state.responsible), due=w.when(state.due_at)
    )
    return f"{LATE_ALERT.icon} {line}"


def table(rows: Sequence[ManagerTimeliness], writer: Writer, tenant: str, first: date, last: date) -> str:
    """On time / late per manager, as plain text (the CLI, `format=text`)."""
    w = writer
    t = TEXTS[w.lang]
    total_on = sum(r.on_time for r in rows)
    total_late = sum(r.late for r in rows)
    total = total_on + total_late
    cells = [
        (
            w.manager_name(None if r.manager == UNASSIGNED else r.manager),
            w.number(r.leads),
            w.number(r.on_time),
            w.number(r.late),
            r.share_late,
        )
        for r in rows
    ]
    cells.append(
        (
            w.texts.total,
            w.number(total),
            w.number(total_on),
            w.number(total_late),
            total_late / total if total else 0,
        )
    )
    shown = [(name, leads, on, late, w.percent(share)) for name, leads, on, late, share in cells]
    widths = [max(len(row[i]) for row in [t.columns, *shown]) for i in range(5)]
    title = t.table.format(tenant=tenant, first=w.date_text(first), last=w.date_text(last))

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            [
                row[0].ljust(widths[0]),
                *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)),
            ]
        ).rstrip()

    return message([title, line(t.columns), *(line(row) for row in shown)])
