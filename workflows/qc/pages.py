"""The answer and review pages, as plain HTML: read on a phone by a sales manager or a head of
sales, opened from a CRM task. Server-rendered, one file each: inline CSS, no script, no font or
image from elsewhere, readable at 360 px. Every value from outside (titles, names, questions,
answers, URLs) is escaped here; a link from outside is kept only when it is http(s).

Pure: each function takes what it shows (the review, the card's history, the tenant's view) and
returns the page; `routes` reads the store and decides which page to show.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from leadwatch.i18n import Lang
from workflows.qc import messages
from workflows.qc.rules import MAX_ANSWER_CHARS, MAX_COMMENT_CHARS, Refusal, Review, Status

if TYPE_CHECKING:
    from leadwatch.cards import LeadState
    from leadwatch.events import Call
    from leadwatch.messages import Writer
    from workflows.qc.messages import QcView

# A card with years of calls still makes a page a phone opens at once: the newest are shown.
MAX_CALLS_SHOWN = 100
TOUCH_SECONDS = 30  # dialing's default: a call longer than this is a talk


@dataclass(frozen=True)
class PageTexts:
    answer_title: str
    review_title: str
    spot_title: str
    open_card: str
    reason: str
    manager: str
    rejected: str
    due: str
    up_to: str  # {n}: the most characters an answer or a comment takes
    send_answers: str
    answers: str
    no_answers: str  # a spot check: nobody was asked
    history: str
    no_history: str
    created: str
    control_time: str
    first_action: str
    not_yet: str
    timeliness: str
    verdicts: dict[str, str]  # on_time / late
    no_verdict: str
    calls_by_day: str
    day: str
    attempts: str
    touches: str
    calls: str
    no_calls: str
    more_calls: str  # {n}: calls not listed
    outgoing: str
    incoming: str
    not_answered: str
    recording: str
    comment: str
    return_button: str
    confirm_button: str
    decision: str  # the legend of the two buttons
    answered_title: str
    answered_text: str
    returned_title: str
    returned_text: str
    confirmed_title: str
    confirmed_text: str
    decided_by: str  # {who} {when}
    bad_link_title: str
    bad_link_text: str
    expired_title: str
    refusal_titles: dict[str, str]  # by rules.Refusal
    error_title: str
    error_text: str
    busy_text: str
    bad_choice: str


TEXTS: dict[Lang, PageTexts] = {
    "ru": PageTexts(
        answer_title="Вопросы по отказу",
        review_title="Проверка отказа",
        spot_title="Выборочная проверка отказа",
        open_card="Открыть карточку в CRM",
        reason="Причина отказа",
        manager="Менеджер",
        rejected="Отказ",
        due="Срок",
        up_to="До {n} знаков.",
        send_answers="Отправить ответы",
        answers="Ответы менеджера",
        no_answers="Выборочная проверка: менеджеру вопросы не задавались.",
        history="История карточки",
        no_history="История этой карточки не записана.",
        created="Создана",
        control_time="Контрольное время",
        first_action="Первое действие",
        not_yet="нет",
        timeliness="Обработка",
        verdicts={"on_time": "вовремя", "late": "с опозданием"},
        no_verdict="ещё не оценена",
        calls_by_day="Звонки по дням",
        day="День",
        attempts="Попытки",
        touches="Разговоры",
        calls="Звонки",
        no_calls="Звонков не было.",
        more_calls="И ещё звонков раньше: {n}.",
        outgoing="исходящий",
        incoming="входящий",
        not_answered="без ответа",
        recording="запись",
        comment="Комментарий (необязательно)",
        return_button="Вернуть в работу",
        confirm_button="Подтвердить отказ",
        decision="Решение",
        answered_title="Ответы отправлены",
        answered_text="Спасибо! Ответы переданы на проверку.",
        returned_title="Возвращено в работу",
        returned_text="Карточка вернётся в работу, менеджер получит задачу.",
        confirmed_title="Отказ подтверждён",
        confirmed_text="Решение записано в карточку.",
        decided_by="{who}, {when}",
        bad_link_title="Ссылка не работает",
        bad_link_text="Ссылка повреждена или неполная. Откройте её ещё раз из задачи в CRM.",
        expired_title="Ссылка устарела",
        refusal_titles={
            "already_answered": "Ответы уже отправлены",
            "already_decided": "Решение уже принято",
            "closed": "Проверка закрыта",
            "not_yet": "Пока рано",
            "wrong_role": "Ссылка не подходит",
            "already_started": "Проверка уже начата",
            "expired": "Ссылка устарела",
            "incomplete": "Ответьте на все вопросы",
            "too_long": "Слишком длинный текст",
        },
        error_title="Что-то пошло не так",
        error_text="Попробуйте ещё раз через минуту. Если не выйдет, напишите руководителю.",
        busy_text="Сейчас эту проверку меняет кто-то ещё. Обновите страницу.",
        bad_choice="Выберите одно из двух решений.",
    ),
    "en": PageTexts(
        answer_title="Questions about a rejection",
        review_title="Review a rejection",
        spot_title="Spot check of a rejection",
        open_card="Open the card in the CRM",
        reason="Rejection reason",
        manager="Manager",
        rejected="Rejected",
        due="Due",
        up_to="Up to {n} characters.",
        send_answers="Send answers",
        answers="The manager's answers",
        no_answers="Spot check: the manager was not asked.",
        history="The card's history",
        no_history="No history is recorded for this card.",
        created="Created",
        control_time="Control time",
        first_action="First action",
        not_yet="none",
        timeliness="Handled",
        verdicts={"on_time": "on time", "late": "late"},
        no_verdict="not judged yet",
        calls_by_day="Calls per day",
        day="Day",
        attempts="Attempts",
        touches="Talks",
        calls="Calls",
        no_calls="No calls.",
        more_calls="And {n} earlier calls.",
        outgoing="outgoing",
        incoming="incoming",
        not_answered="not answered",
        recording="recording",
        comment="Comment (optional)",
        return_button="Return to work",
        confirm_button="Confirm the rejection",
        decision="Decision",
        answered_title="Answers sent",
        answered_text="Thank you! Your answers went to the reviewer.",
        returned_title="Returned to work",
        returned_text="The card goes back to work; the manager gets a task.",
        confirmed_title="Rejection confirmed",
        confirmed_text="The decision is noted on the card.",
        decided_by="{who}, {when}",
        bad_link_title="This link does not work",
        bad_link_text="The link is damaged or cut short. Open it again from the task in the CRM.",
        expired_title="This link has expired",
        refusal_titles={
            "already_answered": "Answers already sent",
            "already_decided": "Already decided",
            "closed": "Review closed",
            "not_yet": "Not yet",
            "wrong_role": "Wrong link",
            "already_started": "Already started",
            "expired": "This link has expired",
            "incomplete": "Answer every question",
            "too_long": "Text too long",
        },
        error_title="Something went wrong",
        error_text="Please try again in a minute. If it still fails, tell your head of sales.",
        busy_text="Someone else is changing this review right now. Reload the page.",
        bad_choice="Choose one of the two decisions.",
    ),
}

STYLE = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
color:#1b1f24;background:#f2f3f5}
main{max-width:40rem;margin:0 auto;padding:16px 14px 32px}
h1{font-size:1.3rem;line-height:1.25;margin:4px 0 12px}
h2{font-size:1.05rem;margin:20px 0 8px}
p{margin:0 0 10px}
a{color:#0757ba;overflow-wrap:anywhere}
.box{background:#fff;border-radius:8px;padding:12px 14px;margin:0 0 12px;
box-shadow:0 1px 2px rgba(0,0,0,.1)}
dl{margin:0}
dt{color:#57606a;font-size:.85rem}
dd{margin:0 0 8px;overflow-wrap:anywhere}
label{display:block;font-weight:600;margin:0 0 6px;overflow-wrap:anywhere}
textarea{display:block;width:100%;min-height:6.5em;padding:10px;font:inherit;color:inherit;
background:#fff;border:1px solid #8c959f;border-radius:6px;resize:vertical}
textarea.bad{border:2px solid #c62828}
.hint{color:#57606a;font-size:.8rem;margin:4px 0 16px}
.alert{background:#fdecea;border:1px solid #c62828;border-radius:6px;padding:10px 12px;margin:0 0 12px}
.done{background:#e6f4ea;border-color:#1e7e34}
.q{font-weight:600;margin:10px 0 2px;overflow-wrap:anywhere}
.a{white-space:pre-wrap;overflow-wrap:anywhere;margin:0 0 8px}
button{display:block;width:100%;min-height:48px;margin:10px 0 0;padding:12px;font:inherit;
font-weight:600;border-radius:8px;cursor:pointer}
.primary{background:#0757ba;color:#fff;border:1px solid #0757ba}
.secondary{background:#fff;color:#1b1f24;border:1px solid #57606a}
table{width:100%;border-collapse:collapse;font-size:.9rem}
th,td{text-align:left;padding:5px 6px;border-bottom:1px solid #d0d7de;vertical-align:top}
ul.calls{list-style:none;padding:0;margin:0}
ul.calls li{padding:6px 0;border-bottom:1px solid #d0d7de;overflow-wrap:anywhere}
.muted{color:#57606a}
""".strip()


# ----------------------------------------------------------------------------- the card's history


@dataclass(frozen=True)
class History:
    """What leadwatch knows of a card: its stored state (None: never watched) and its calls."""

    lead: LeadState | None
    calls: Sequence[Call] = ()
    touch_seconds: int = TOUCH_SECONDS

    def is_touch(self, call: Call) -> bool:
        return call.duration > self.touch_seconds and call.answered is not False

    def by_day(self, writer: Writer) -> list[tuple[date, int, int]]:
        """(local day, attempts, talks), by day."""
        days: dict[date, list[int]] = defaultdict(lambda: [0, 0])
        for call in self.calls:
            counts = days[call.started_at.astimezone(writer.tz).date()]
            counts[0] += 1
            counts[1] += self.is_touch(call)
        return [(day, n, talks) for day, (n, talks) in sorted(days.items())]


@dataclass(frozen=True)
class Page:
    """A page and its HTTP status."""

    body: str
    status: int = 200
    extra: Mapping[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------- parts


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def safe_url(url: str | None) -> str | None:
    """An outside URL fit for an href: http(s) with a host, else None (no javascript: or data:)."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    return url.strip() if parts.scheme in ("http", "https") and parts.netloc else None


def _link(url: str | None, label: str) -> str:
    safe = safe_url(url)
    if safe is None:
        return _e(label)
    return f'<a href="{_e(safe)}" rel="noreferrer noopener" target="_blank">{_e(label)}</a>'


def _document(lang: Lang, title: str, body: str) -> str:
    return (
        "<!doctype html>\n"
        f'<html lang="{_e(lang)}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="robots" content="noindex, nofollow">\n'
        f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _field(label: str, value_html: str) -> str:
    return f"<dt>{_e(label)}</dt><dd>{value_html}</dd>"


def _card_box(review: Review, view: QcView, t: PageTexts, due: datetime | None) -> str:
    w = view.writer
    title = w.card_title(review.title, review.entity.type, review.entity.id)
    rows = [
        _field(t.reason, _e(messages.reason_text(review, w.lang))),
        _field(t.manager, _e(w.manager_name(review.manager))),
        _field(t.rejected, _e(w.when(review.rejected_at))),
    ]
    if due is not None:
        rows.append(_field(t.due, _e(w.when(due))))
    return (
        f'<div class="box"><p><b>{_e(title)}</b><br>{_link(view.card_url(review.entity), t.open_card)}</p>'
        f"<dl>{''.join(rows)}</dl></div>"
    )


def _alert(text: str, done: bool = False) -> str:
    return f'<div class="alert{" done" if done else ""}" role="alert">{_e(text)}</div>'


def _message_page(lang: Lang, title: str, text: str, extra_html: str = "", done: bool = False) -> str:
    return _document(lang, title, f"<h1>{_e(title)}</h1>\n{_alert(text, done)}\n{extra_html}")


# ----------------------------------------------------------------------------- the answer page


def answer_form(
    review: Review,
    view: QcView,
    answers: Sequence[str] = (),
    problem: Refusal | None = None,
) -> Page:
    """One textarea per question, the text given kept (after a refused submit, with what is wrong
    said at the top and the fields at fault marked)."""
    w = view.writer
    t = TEXTS[w.lang]
    due = review.answer_task.due_at if review.answer_task else None
    parts = [f"<h1>{_e(t.answer_title)}</h1>"]
    if problem is not None:
        parts.append(_alert(messages.refusal_text(problem, w.lang)))
    parts.append(_card_box(review, view, t, due))
    fields = []
    for n, question in enumerate(review.questions):
        given = answers[n] if n < len(answers) else ""
        bad = problem is not None and (
            (problem is Refusal.INCOMPLETE and not given.strip())
            or (problem is Refusal.TOO_LONG and len(given.strip()) > MAX_ANSWER_CHARS)
        )
        marked = ' class="bad" aria-invalid="true"' if bad else ""
        fields.append(
            f'<label for="answer-{n}">{n + 1}. {_e(question)}</label>'
            f'<textarea id="answer-{n}" name="answer-{n}" maxlength="{MAX_ANSWER_CHARS}" required'
            f"{marked}>{_e(given)}</textarea>"
            f'<p class="hint">{_e(t.up_to.format(n=MAX_ANSWER_CHARS))}</p>'
        )
    parts.append(
        '<form method="post" class="box" accept-charset="utf-8">'
        + "".join(fields)
        + f'<button type="submit" class="primary" id="send">{_e(t.send_answers)}</button></form>'
    )
    status = 200 if problem is None else 422
    return Page(_document(w.lang, t.answer_title, "\n".join(parts)), status)


def answered_page(review: Review, view: QcView) -> Page:
    t = TEXTS[view.writer.lang]
    title = view.writer.card_title(review.title, review.entity.type, review.entity.id)
    return Page(
        _message_page(view.writer.lang, t.answered_title, t.answered_text, f"<p>{_e(title)}</p>", True)
    )


# ----------------------------------------------------------------------------- the review page


def _history_box(history: History, w: Writer, t: PageTexts) -> str:
    lead = history.lead
    parts = [f"<h2>{_e(t.history)}</h2>", '<div class="box">']
    if lead is None:
        parts.append(f'<p class="muted">{_e(t.no_history)}</p>')
    else:
        verdict = t.verdicts.get(lead.verdict or "", t.no_verdict)
        first = w.when(lead.processed_at) if lead.processed_at else t.not_yet
        rows = [
            _field(t.created, _e(w.when(lead.created_at))),
            _field(t.control_time, _e(w.when(lead.due_at))),
            _field(t.first_action, _e(first)),
            _field(t.timeliness, _e(verdict)),
        ]
        parts.append(f"<dl>{''.join(rows)}</dl>")
    parts.append("</div>")

    parts.append(f"<h2>{_e(t.calls_by_day)}</h2>")
    days = history.by_day(w)
    if not days:
        parts.append(f'<div class="box"><p class="muted">{_e(t.no_calls)}</p></div>')
        return "\n".join(parts)
    rows_html = "".join(
        f"<tr><td>{_e(w.day(day))}</td><td>{n}</td><td>{talks}</td></tr>" for day, n, talks in days
    )
    parts.append(
        f'<div class="box"><table><thead><tr><th>{_e(t.day)}</th><th>{_e(t.attempts)}</th>'
        f"<th>{_e(t.touches)}</th></tr></thead><tbody>{rows_html}</tbody></table></div>"
    )
    parts.append(f"<h2>{_e(t.calls)}</h2>")
    calls = sorted(history.calls, key=lambda c: (c.started_at, c.key))
    shown = calls[-MAX_CALLS_SHOWN:]
    items = [_call_item(call, history, w, t) for call in reversed(shown)]
    more = len(calls) - len(shown)
    tail = f'<p class="muted">{_e(t.more_calls.format(n=more))}</p>' if more else ""
    parts.append(f'<div class="box"><ul class="calls">{"".join(items)}</ul>{tail}</div>')
    return "\n".join(parts)


def _duration(seconds: int) -> str:
    minutes, rest = divmod(max(0, int(seconds)), 60)
    return f"{minutes}:{rest:02d}"


def _call_item(call: Call, history: History, w: Writer, t: PageTexts) -> str:
    direction = t.incoming if call.direction == "in" else t.outgoing
    bits = [_e(w.when(call.started_at)), _e(direction), _e(w.manager_name(call.manager))]
    bits.append(_e(t.not_answered) if call.answered is False else _e(_duration(call.duration)))
    text = ", ".join(bits)
    if history.is_touch(call):
        text = f"<b>{text}</b>"
    recording = safe_url(call.record_url)
    if recording is not None:
        text += f" · {_link(recording, t.recording)}"
    return f"<li>{text}</li>"


def review_page(
    review: Review,
    view: QcView,
    history: History,
    comment: str = "",
    problem: str | None = None,
) -> Page:
    """The reason, the manager's answers (none for a spot check), the card's history, and the two
    decisions with an optional comment. `problem`: what was wrong with the last submit."""
    w = view.writer
    t = TEXTS[w.lang]
    heading = t.spot_title if review.kind == "spot_check" else t.review_title
    due = review.review_task.due_at if review.review_task else None
    parts = [f"<h1>{_e(heading)}</h1>"]
    if problem is not None:
        parts.append(_alert(problem))
    parts.append(_card_box(review, view, t, due))
    parts.append(f"<h2>{_e(t.answers)}</h2>")
    if review.answers:
        qa = "".join(
            f'<p class="q">{_e(q)}</p><p class="a">{_e(a)}</p>'
            for q, a in zip(review.questions, review.answers, strict=False)
        )
        parts.append(f'<div class="box">{qa}</div>')
    else:
        parts.append(f'<div class="box"><p class="muted">{_e(t.no_answers)}</p></div>')
    parts.append(_history_box(history, w, t))
    parts.append(
        f'<h2>{_e(t.decision)}</h2><form method="post" class="box" accept-charset="utf-8">'
        f'<label for="comment">{_e(t.comment)}</label>'
        f'<textarea id="comment" name="comment" maxlength="{MAX_COMMENT_CHARS}">{_e(comment)}</textarea>'
        f'<p class="hint">{_e(t.up_to.format(n=MAX_COMMENT_CHARS))}</p>'
        f'<button type="submit" name="decision" value="return" class="primary" id="return">'
        f"{_e(t.return_button)}</button>"
        f'<button type="submit" name="decision" value="confirm" class="secondary" id="confirm">'
        f"{_e(t.confirm_button)}</button></form>"
    )
    return Page(_document(w.lang, heading, "\n".join(parts)), 200 if problem is None else 422)


def _decided_line(review: Review, w: Writer, t: PageTexts) -> str:
    if review.decided_at is None:
        return ""
    who = t.decided_by.format(who=w.manager_name(review.reviewer), when=w.when(review.decided_at))
    comment = f'<p class="a">{_e(review.comment)}</p>' if review.comment else ""
    return f"<p>{_e(who)}</p>{comment}"


def decided_page(review: Review, view: QcView) -> Page:
    """What a decision did, after it was made."""
    w = view.writer
    t = TEXTS[w.lang]
    returned = review.status is Status.RETURNED
    title = t.returned_title if returned else t.confirmed_title
    text = t.returned_text if returned else t.confirmed_text
    card = w.card_title(review.title, review.entity.type, review.entity.id)
    extra = f"<p><b>{_e(card)}</b></p>{_decided_line(review, w, t)}"
    return Page(_message_page(w.lang, title, text, extra, True))


# ----------------------------------------------------------------------------- refusals


def refusal_page(
    refusal: Refusal, lang: Lang, review: Review | None = None, writer: Writer | None = None
) -> Page:
    """A refused action, said plainly. An already decided review says what was decided."""
    t = TEXTS[lang]
    extra = ""
    if review is not None and writer is not None and refusal is Refusal.ALREADY_DECIDED:
        decision = t.returned_title if review.status is Status.RETURNED else t.confirmed_title
        extra = f"<p><b>{_e(decision)}</b></p>{_decided_line(review, writer, t)}"
    status = 410 if refusal is Refusal.EXPIRED else 409
    return Page(
        _message_page(lang, t.refusal_titles[refusal], messages.refusal_text(refusal, lang), extra), status
    )


def bad_link_page(lang: Lang) -> Page:
    """A link that is cut short, changed, for another page, or for a review no longer kept."""
    t = TEXTS[lang]
    return Page(_message_page(lang, t.bad_link_title, t.bad_link_text), 404)


def expired_page(lang: Lang) -> Page:
    t = TEXTS[lang]
    return Page(_message_page(lang, t.expired_title, messages.refusal_text(Refusal.EXPIRED, lang)), 410)


def error_page(lang: Lang, busy: bool = False) -> Page:
    t = TEXTS[lang]
    return Page(
        _message_page(lang, t.error_title, t.busy_text if busy else t.error_text), 503 if busy else 500
    )


def bad_choice(lang: Lang) -> str:
    return TEXTS[lang].bad_choice
