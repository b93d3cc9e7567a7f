"""What quality control writes, in each language (the design: leadwatch.messages).

For the head, in Telegram (HTML): the overdue-task escalation and its digest line, and the
weekly reason audit (counts, shares and p-values; "too little data" where the counts cannot
carry a verdict). For the CRM (plain text): the tasks put to the manager and the reviewer, the
reminder, the note a decision leaves on the card. For the pages: what a refused action says.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from leadwatch.i18n import Lang, Plural
from leadwatch.messages import Kind, Writer, message
from leadwatch.telegram import escape

if TYPE_CHECKING:
    from leadwatch.events import EntityRef
    from workflows.qc.audit import AuditResult, DriftVerdict
    from workflows.qc.rules import Review, TaskClock

OVERDUE = Kind("qc_overdue", "⌛")
AUDIT = Kind("qc_audit", "🔍")
# A p-value below this is written as "p < 0.001": more digits say nothing a reader acts on.
P_FLOOR = 0.001


@dataclass(frozen=True)
class Texts:
    # Telegram, to the head
    overdue: str  # the escalation's header
    operations: dict[str, str]  # answer / review / spot_check -> what the task asks
    assignee: str  # label
    reason: str  # label
    due: str  # {due} {late}: the deadline, and how far past it in working time
    overdue_line: str  # one line of a digest: {card} {assignee} {operation} {due}
    audit: str  # the audit's header: {first} {last}
    flagged: str  # section: a significant rise
    quiet: str  # section: no significant rise
    little_data: str  # section: too little data
    department: str
    subject_line: str  # {who}: {ignored} {total} {share}
    vs_baseline: str  # {weeks} {share} {ignored} {total} {p}
    vs_rest: str  # {share} {ignored} {total} {p}
    too_little: str  # {total} {need}
    no_reference: str  # a comparison without enough reference rejections: {what}
    baseline_word: str
    rest_word: str
    spot_checks: str  # {cards} {reviewer}
    # CRM, plain text
    answer_title: str  # {card}
    answer_text: str  # {reason} {due} {link}
    review_title: str  # {card}
    review_text: str  # {manager} {reason} {due} {link}
    spot_title: str  # {card}
    spot_text: str  # {manager} {reason} {due} {link}
    rework_title: str  # {card}
    rework_text: str  # {reviewer} {comment}
    returned_note: str  # {reviewer} {when} {comment}
    confirmed_note: str  # {reviewer} {when} {comment}
    comment: str  # {comment}
    reminder: str  # {operation} {card} {due} {link}
    default_question: str
    no_reason: str  # a rejection with no reason given
    # pages: a refused action
    refusals: dict[str, str]
    rejections: Plural
    weeks: Plural
    checks: Plural


TEXTS: dict[Lang, Texts] = {
    "ru": Texts(
        overdue="Просрочена задача контроля качества",
        operations={
            "answer": "ответить на уточняющие вопросы по отказу",
            "review": "проверить отказ и принять решение",
            "spot_check": "выборочно проверить отказ",
        },
        assignee="Исполнитель",
        reason="Причина отказа",
        due="Срок: {due}, просрочено на {late} рабочего времени",
        overdue_line="{card}: {assignee}, {operation}, срок {due}",
        audit="Аудит причин отказов за {first} – {last}",
        flagged="Значимый рост доли игнорируемых причин",
        quiet="Без значимого роста",
        little_data="Мало данных для вывода",
        department="Отдел в целом",
        subject_line="{who}: {total}, из них с игнорируемой причиной {ignored} ({share})",
        vs_baseline="своя база за {weeks}: {share} ({ignored} из {total}), {p}",
        vs_rest="остальной отдел: {share} ({ignored} из {total}), {p}",
        too_little="мало данных: {total} за неделю, нужно не меньше {need}",
        no_reference="{what}: мало данных для сравнения",
        baseline_word="своя база",
        rest_word="остальной отдел",
        spot_checks="На выборочную проверку ({reviewer}): {cards}",
        answer_title="Отказ по «{card}»: ответьте на вопросы",
        answer_text="Причина отказа: {reason}.\nОтветьте на уточняющие вопросы до {due}:\n{link}",
        review_title="Проверьте отказ по «{card}»",
        review_text=(
            "Менеджер: {manager}. Причина отказа: {reason}.\n"
            "Ответы менеджера и история карточки, решение до {due}:\n{link}"
        ),
        spot_title="Выборочная проверка отказа: «{card}»",
        spot_text=(
            "Менеджер: {manager}. Причина отказа: {reason} (не проверяется автоматически).\n"
            "История карточки и решение до {due}:\n{link}"
        ),
        rework_title="Возвращено в работу: «{card}»",
        rework_text="{reviewer} вернул(а) карточку в работу после проверки отказа.{comment}",
        returned_note="Контроль качества: отказ не подтверждён, карточка возвращена в работу ({reviewer}, {when}).{comment}",
        confirmed_note="Контроль качества: отказ подтверждён ({reviewer}, {when}).{comment}",
        comment=" Комментарий: {comment}",
        reminder="Напоминание: {operation} по «{card}» до {due}:\n{link}",
        default_question=(
            "Что было сделано по карточке до отказа (звонки, сообщения) и почему клиент отказался?"
        ),
        no_reason="не указана",
        refusals={
            "wrong_role": "Эта ссылка не для этого действия.",
            "expired": "Срок действия ссылки истёк. Попросите новую у руководителя.",
            "not_yet": "Проверка ещё не дошла до этого шага.",
            "already_answered": "Ответы уже отправлены. Спасибо!",
            "already_decided": "Решение по этой проверке уже принято.",
            "closed": "Проверка закрыта: карточка ушла с этапа отказа.",
            "incomplete": "Ответьте, пожалуйста, на все вопросы.",
            "too_long": "Ответ слишком длинный: сократите его.",
            "already_started": "Проверка уже начата.",
        },
        rejections=Plural("отказ", "отказа", few="отказа", many="отказов"),
        weeks=Plural("неделю", "недели", few="недели", many="недель"),
        checks=Plural("карточка", "карточки", few="карточки", many="карточек"),
    ),
    "en": Texts(
        overdue="Quality control task overdue",
        operations={
            "answer": "answer the clarifying questions about the rejection",
            "review": "review the rejection and decide",
            "spot_check": "spot-check the rejection",
        },
        assignee="Assignee",
        reason="Rejection reason",
        due="Due: {due}, overdue by {late} of working time",
        overdue_line="{card}: {assignee}, {operation}, due {due}",
        audit="Rejection reason audit, {first} .. {last}",
        flagged="Significant rise in ignored reasons",
        quiet="No significant rise",
        little_data="Too little data for a verdict",
        department="The department",
        subject_line="{who}: {total}, {ignored} with an ignored reason ({share})",
        vs_baseline="own baseline over {weeks}: {share} ({ignored} of {total}), {p}",
        vs_rest="rest of the department: {share} ({ignored} of {total}), {p}",
        too_little="too little data: {total} this week, at least {need} needed",
        no_reference="{what}: too little data to compare",
        baseline_word="own baseline",
        rest_word="rest of the department",
        spot_checks="Spot checks ({reviewer}): {cards}",
        answer_title="Rejected «{card}»: answer the questions",
        answer_text="Rejection reason: {reason}.\nAnswer the clarifying questions by {due}:\n{link}",
        review_title="Review the rejection of «{card}»",
        review_text=(
            "Manager: {manager}. Rejection reason: {reason}.\n"
            "The manager's answers and the card's history, decide by {due}:\n{link}"
        ),
        spot_title="Spot check of a rejection: «{card}»",
        spot_text=(
            "Manager: {manager}. Rejection reason: {reason} (not reviewed by default).\n"
            "The card's history, decide by {due}:\n{link}"
        ),
        rework_title="Returned to work: «{card}»",
        rework_text="{reviewer} returned the card to work after reviewing its rejection.{comment}",
        returned_note="Quality control: rejection not upheld, the card is returned to work ({reviewer}, {when}).{comment}",
        confirmed_note="Quality control: rejection confirmed ({reviewer}, {when}).{comment}",
        comment=" Comment: {comment}",
        reminder="Reminder: {operation} for «{card}» by {due}:\n{link}",
        default_question="What was done before the rejection (calls, messages), and why did the client decline?",
        no_reason="not given",
        refusals={
            "wrong_role": "This link is not for this action.",
            "expired": "This link has expired. Ask your head of sales for a new one.",
            "not_yet": "The review has not reached this step yet.",
            "already_answered": "The answers are already in. Thank you!",
            "already_decided": "This review has already been decided.",
            "closed": "The review is closed: the card has left the rejected stage.",
            "incomplete": "Please answer every question.",
            "too_long": "An answer is too long: please shorten it.",
            "already_started": "The review has already started.",
        },
        rejections=Plural("rejection", "rejections"),
        weeks=Plural("week", "weeks"),
        checks=Plural("card", "cards"),
    ),
}


@dataclass(frozen=True)
class QcView:
    """How quality control shows cards and people: the tenant's writer, a card's CRM link, and
    a page link signed for one review, one role and an expiry (made by the pages, which check it)."""

    writer: Writer
    card_url: Callable[[EntityRef], str]
    page_link: Callable[[Review, str, datetime], str]


def _span(minutes: float, lang: Lang) -> str:
    hours, rest = divmod(round(minutes), 60)
    if lang == "ru":
        return f"{hours} ч {rest:02d} мин" if hours else f"{rest} мин"
    return f"{hours} h {rest:02d} min" if hours else f"{rest} min"


def operation(review: Review, task: TaskClock, lang: Lang) -> str:
    key = "spot_check" if task.operation == "review" and review.kind == "spot_check" else task.operation
    return TEXTS[lang].operations[key]


def reason_text(review: Review, lang: Lang) -> str:
    return review.reason_name or TEXTS[lang].no_reason


# ----------------------------------------------------------------------------- Telegram


def _card(review: Review, view: QcView) -> str:
    return view.writer.card(view.card_url(review.entity), review.title, review.entity.type, review.entity.id)


def overdue_message(review: Review, task: TaskClock, late_minutes: float, view: QcView) -> str:
    """The escalation to the head: a task past its deadline."""
    w = view.writer
    t = TEXTS[w.lang]
    return message(
        [
            w.header(OVERDUE, t.overdue),
            _card(review, view),
            w.field(t.assignee, w.manager(task.assignee)),
            w.field(w.texts.manager, w.manager(review.manager)),
            w.field(t.reason, escape(reason_text(review, w.lang))),
            escape(operation(review, task, w.lang)).capitalize(),
            t.due.format(due=w.when(task.due_at), late=_span(late_minutes, w.lang)),
        ]
    )


def overdue_line(review: Review, task: TaskClock, view: QcView) -> str:
    w = view.writer
    line = TEXTS[w.lang].overdue_line.format(
        card=_card(review, view),
        assignee=w.manager(task.assignee),
        operation=escape(operation(review, task, w.lang)),
        due=w.when(task.due_at),
    )
    return f"{OVERDUE.icon} {line}"


def p_text(p: float, writer: Writer) -> str:
    """A p-value as the language writes numbers, in plain text: p = 0,012 / p < 0.001."""
    if p < P_FLOOR:
        return f"p < {writer.number(P_FLOOR, 3)}"
    return f"p = {writer.number(p, 3)}"


def _who(verdict: DriftVerdict, w: Writer) -> str:
    return escape(TEXTS[w.lang].department) if verdict.subject is None else w.manager(verdict.subject)


def verdict_lines(verdict: DriftVerdict, weeks: int, w: Writer) -> list[str]:
    """A subject's counts, then each comparison with its p-value (or why there is none)."""
    t = TEXTS[w.lang]
    head = t.subject_line.format(
        who=_who(verdict, w),
        ignored=w.number(verdict.week.ignored),
        total=w.count(verdict.week.total, t.rejections),
        share=w.percent(verdict.week.share),
    )
    if verdict.week.total < verdict.min_week:
        return [
            w.bullet(
                f"{head}: {t.too_little.format(total=w.number(verdict.week.total), need=w.number(verdict.min_week))}"
            )
        ]
    lines = [w.bullet(head)]
    if verdict.p_baseline is None:
        lines.append("  " + t.no_reference.format(what=t.baseline_word))
    else:
        lines.append(
            "  "
            + t.vs_baseline.format(
                weeks=w.count(weeks, t.weeks),
                share=w.percent(verdict.baseline.share),
                ignored=w.number(verdict.baseline.ignored),
                total=w.number(verdict.baseline.total),
                p=escape(p_text(verdict.p_baseline, w)),
            )
        )
    if verdict.rest is not None:
        if verdict.p_rest is None:
            lines.append("  " + t.no_reference.format(what=t.rest_word))
        else:
            lines.append(
                "  "
                + t.vs_rest.format(
                    share=w.percent(verdict.rest.share),
                    ignored=w.number(verdict.rest.ignored),
                    total=w.number(verdict.rest.total),
                    p=escape(p_text(verdict.p_rest, w)),
                )
            )
    return lines


def audit_message(result: AuditResult, w: Writer) -> str:
    """The weekly audit for the head: the flagged first, with counts and p-values; the quiet by
    name; those with too little data, saying so instead of a verdict."""
    t = TEXTS[w.lang]
    lines = [
        w.header(
            AUDIT,
            t.audit.format(first=w.date_text(result.week.first_day), last=w.date_text(result.week.last_day)),
        )
    ]
    groups = (
        (t.flagged, [v for v in result.verdicts if v.flagged]),
        (t.quiet, [v for v in result.verdicts if not v.flagged and not v.too_little_data]),
        (t.little_data, [v for v in result.verdicts if v.too_little_data]),
    )
    for title, verdicts in groups:
        if not verdicts:
            continue
        lines += ["", w.section(title, len(verdicts))]
        for verdict in verdicts:
            lines += verdict_lines(verdict, result.baseline_weeks, w)
    return message(lines)


def spot_check_line(reviewer: str, cards: list[str], w: Writer) -> str:
    """The spot checks sent after an audit: `cards` are links (HTML) to the sampled cards."""
    return TEXTS[w.lang].spot_checks.format(reviewer=w.manager(reviewer), cards=", ".join(cards))


# ----------------------------------------------------------------------------- CRM (plain text)


def _title(review: Review, w: Writer) -> str:
    return w.card_title(review.title, review.entity.type, review.entity.id)


def task_title(review: Review, task: TaskClock, view: QcView) -> str:
    w = view.writer
    t = TEXTS[w.lang]
    if task.operation == "answer":
        template = t.answer_title
    else:
        template = t.spot_title if review.kind == "spot_check" else t.review_title
    return template.format(card=_title(review, w))


def task_text(review: Review, task: TaskClock, link: str, view: QcView) -> str:
    w = view.writer
    t = TEXTS[w.lang]
    reason = reason_text(review, w.lang)
    due = w.when(task.due_at)
    if task.operation == "answer":
        return t.answer_text.format(reason=reason, due=due, link=link)
    template = t.spot_text if review.kind == "spot_check" else t.review_text
    return template.format(manager=w.manager_name(review.manager), reason=reason, due=due, link=link)


def _comment(comment: str, lang: Lang) -> str:
    return TEXTS[lang].comment.format(comment=comment) if comment else ""


def rework_title(review: Review, view: QcView) -> str:
    return TEXTS[view.writer.lang].rework_title.format(card=_title(review, view.writer))


def rework_text(review: Review, view: QcView) -> str:
    w = view.writer
    return TEXTS[w.lang].rework_text.format(
        reviewer=w.manager_name(review.reviewer), comment=_comment(review.comment, w.lang)
    )


def decision_note(review: Review, view: QcView) -> str:
    """The note a decision leaves on the card."""
    w = view.writer
    t = TEXTS[w.lang]
    template = t.returned_note if review.status == "returned" else t.confirmed_note
    assert review.decided_at is not None
    return template.format(
        reviewer=w.manager_name(review.reviewer),
        when=w.when(review.decided_at),
        comment=_comment(review.comment, w.lang),
    )


def reminder_text(review: Review, task: TaskClock, link: str, view: QcView) -> str:
    w = view.writer
    return TEXTS[w.lang].reminder.format(
        operation=operation(review, task, w.lang),
        card=_title(review, w),
        due=w.when(task.due_at),
        link=link,
    )


def default_question(lang: Lang) -> str:
    return TEXTS[lang].default_question


# ----------------------------------------------------------------------------- pages


def refusal_text(refusal: str, lang: Lang) -> str:
    """What a page says when the action is refused (a `rules.Refusal`)."""
    return TEXTS[lang].refusals[refusal]
