"""Golden files: every message kind and report the head reads, in both languages, for a crafted set
of cards, kept in tests/golden/<process>/<kind>.<lang>.txt so a reviewer sees exactly what goes to
Telegram (the HTML as sent, and the text as the head reads it) and what the CLI and the read API's
`format=text` print.

The crafted cards: HTML-special characters in titles and names (`Заявка & <i>test`,
`O'Brien & <Sons>`), a title far too long for a message, a card with no title and no manager, a
manager the CRM does not know and a stage it does not know (the fallbacks), a lead that arrived on
Friday 31.10.2025 17:50 and is due on Wednesday 05.11.2025 11:00 around the Russian Unity Day
holiday, times stored in UTC and shown in the tenant's zone (Europe/Moscow).

A rendering that changes without its golden file fails here, and so does a golden file nothing
renders any more. After a deliberate change, rewrite them and review the diff:

    LEADWATCH_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_messages_golden.py

A property test besides: whatever a title or a name holds, each message is valid Telegram HTML
(the splitter's own tokenizer reads it back) within 4,096 characters after entity parsing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadwatch.calendar import BusinessCalendar, CalendarOverride
from leadwatch.cards import LeadState
from leadwatch.events import Call, EntityRef, EntityType
from leadwatch.i18n import LANGUAGES, Lang
from leadwatch.messages import StaticNames, Writer, digest, pack_lines, parts, terminal
from leadwatch.telegram import MAX_MESSAGE_LENGTH, visible_length, visible_text
from workflows.dialing import messages as dialing_messages
from workflows.dialing import rules as dialing
from workflows.timeliness import messages as timeliness_messages
from workflows.timeliness.queries import ManagerTimeliness

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
UPDATE = os.environ.get("LEADWATCH_UPDATE_GOLDEN") == "1"
MSK = ZoneInfo("Europe/Moscow")
HOURS = [(time(9), time(13)), (time(14), time(18))]
# Russia's calendar, for an office that does not work the moved Saturday 01.11.2025: from Friday
# evening the next working day is Wednesday 05.11 (Mon 03.11 moved off, Tue 04.11 Unity Day).
CALENDAR = BusinessCalendar(
    "Europe/Moscow",
    {d: HOURS for d in range(5)},
    country="RU",
    overrides=[CalendarOverride(date(2025, 11, 1), "holiday")],
    pre_holiday_minutes=60,
)
NAMES = StaticNames(
    managers={"7": "Анна Петрова", "8": "O'Brien & <Sons>", "9": "Ivan Orlov"},
    stages={"NEW": "Не разобран", "IN_PROCESS": "В работе <срочно> & важно"},
)
LONG_TITLE = (
    "Заявка с сайта: кухонный гарнитур угловой, фасады МДФ эмаль, столешница из искусственного камня, "
    "встроенная техника, доставка и монтаж в Подмосковье, клиент просит перезвонить после 18:00 "
    "и прислать расчёт на почту"
)


def url(entity: EntityRef) -> str:
    return f'https://acme.bitrix24.ru/crm/{entity.type.value}/details/{entity.id}/?from=tg&x="1"'


def writer(lang: Lang) -> Writer:
    return Writer(lang, MSK, NAMES)


def msk(*args: int) -> datetime:
    return datetime(*args, tzinfo=MSK).astimezone(UTC)  # stored in UTC, shown in Moscow time


def lead(n: int, kind: EntityType = EntityType.LEAD) -> EntityRef:
    return EntityRef(kind, str(n))


def state(
    n: int,
    title: str,
    manager: str | None,
    stage: str,
    created: datetime,
    *,
    kind: EntityType = EntityType.LEAD,
    processed: datetime | None = None,
    rejected: datetime | None = None,
) -> LeadState:
    due = CALENDAR.control_time(created, timedelta(minutes=15), time(11))
    return LeadState(
        "acme",
        lead(n, kind),
        created,
        due,
        stage,
        manager,
        title=title,
        processed_at=processed,
        rejected_at=rejected,
    )


FRIDAY = msk(2025, 11, 14, 17, 50)
CARDS = {
    "HTML-special title, known manager and stage": state(1, "Заявка & <i>test", "7", "NEW", FRIDAY),
    "HTML-special manager name, processed after its control time": state(
        2,
        'O\'Brien & <Sons>: заказ "под ключ"',
        "8",
        "IN_PROCESS",
        FRIDAY,
        processed=msk(2025, 11, 17, 12, 3),
    ),
    "a title too long for a message, a manager and a stage the CRM does not know": state(
        3, LONG_TITLE, "9120031", "61234501", FRIDAY
    ),
    "a deal with no title and no manager": state(4, "", None, "NEW", FRIDAY, kind=EntityType.DEAL),
    "arrived Fri 31.10 17:50, due Wed 05.11 11:00 across the Unity Day holiday": state(
        5, "Двери в офис", "9", "NEW", msk(2025, 10, 31, 17, 50)
    ),
}


# ----------------------------------------------------------------------------- rendering
def html_case(label: str, html_text: str) -> str:
    """One message: as sent (parse_mode=HTML) and as the head reads it."""
    return f"=== {label} ===\n--- sent (HTML) ---\n{html_text}\n--- read ---\n{visible_text(html_text)}\n"


def text_case(label: str, text: str) -> str:
    return f"=== {label} ===\n{text}\n"


def late_alerts(lang: Lang) -> str:
    cases = []
    for label, card in CARDS.items():
        view = timeliness_messages.CardView(url(card.entity), writer(lang))
        cases.append(html_case(label, timeliness_messages.late_message(card, view)))
    return "\n".join(cases)


def timeliness_table(lang: Lang) -> str:
    rows = [
        ManagerTimeliness("8", "O'Brien & <Sons>", 7, 3, 4),
        ManagerTimeliness("9120031", "user 9120031", 21, 20, 1),
        ManagerTimeliness("7", "Анна Петрова", 1250, 1248, 2),
        ManagerTimeliness("unassigned", "unassigned", 2, 2, 0),
    ]
    return text_case(
        "11 days, four rows (an unknown manager, no manager)",
        timeliness_messages.table(rows, writer(lang), "acme", date(2025, 11, 5), date(2025, 11, 15)),
    )


REPORT_DAY = date(2025, 11, 5)  # the first working day after the holidays
RULES = dialing.DialingRules(rejected_stages=frozenset({"JUNK"}))


def plan_lead(
    n: int, title: str, manager: str | None, today: int, total: int, day_number: int = 1
) -> dialing.PlanLead:
    return dialing.PlanLead(
        entity=lead(n),
        title=title,
        manager=manager,
        stage="NEW",
        first_day=REPORT_DAY,
        day_number=day_number,
        attempts_today=today,
        attempts_total=total,
        touches_total=0,
    )


def daily_report() -> dialing.DailyReport:
    leads = [
        plan_lead(1, "Заявка & <i>test", "7", 0, 0),
        plan_lead(2, "O'Brien & <Sons>: заказ", "8", 1, 1),
        plan_lead(3, LONG_TITLE, "9120031", 2, 5, day_number=2),
        plan_lead(4, "", None, 0, 21, day_number=5),
        plan_lead(5, "Двери в офис", "9", 3, 3),
        plan_lead(6, "Окна", "9", 4, 11, day_number=3),
    ]
    touches = [
        dialing.Touch("c1", lead(5), "Двери в офис", "9", msk(2025, 11, 5, 9, 12), 95, None),
        dialing.Touch(
            "c2", lead(6), "Окна", "9", msk(2025, 11, 5, 16, 40), 31, 'https://rec.example/a.mp3?x=1&y="2"'
        ),
        dialing.Touch("c3", lead(2), "O'Brien & <Sons>: заказ", "8", msk(2025, 11, 5, 17, 59), 3600, None),
    ]
    return dialing.build_report(REPORT_DAY, leads, touches, RULES)


def report_view(lang: Lang) -> dialing.ReportView:
    return dialing.ReportView(url, writer(lang))


def daily_reports(lang: Lang) -> str:
    view = report_view(lang)
    empty = dialing.build_report(REPORT_DAY, [], [], RULES)
    return "\n".join(
        [
            html_case(
                "six leads in the plan, three touches", dialing.render_report(daily_report(), view, RULES)
            ),
            html_case("nothing in the plan", dialing.render_report(empty, view, RULES)),
        ]
    )


def long_report(lang: Lang) -> str:
    """A report too long for one message: where it is cut (each part's size and its edges)."""
    leads = [
        plan_lead(n, f"{LONG_TITLE[: 20 + n % 60]} #{n}", str(n % 9), n % 4, n % 16) for n in range(1, 161)
    ]
    text = dialing.render_report(dialing.build_report(REPORT_DAY, leads, [], RULES), report_view(lang), RULES)
    found = dialing_messages.report_parts(text)
    cases = []
    for number, part in enumerate(found, start=1):
        lines = part.splitlines()
        edges = [*lines[:4], "…", *lines[-2:]]
        label = f"part {number}/{len(found)}: {len(lines)} lines, {visible_length(part)} characters after entity parsing"
        cases.append(text_case(label, "\n".join(edges)))
    return "\n".join(cases)


def report_texts(lang: Lang) -> str:
    """The report as the CLI and the read API print it, and the note for a day off."""
    text = terminal(dialing.render_report(daily_report(), report_view(lang), RULES))
    holiday = terminal(
        dialing.render_report(
            dialing.build_report(date(2025, 11, 4), [], [], RULES), report_view(lang), RULES
        )
    )
    holiday += "\n" + dialing_messages.not_working_day(writer(lang), date(2025, 11, 4))
    return "\n".join([text_case("a working day", text), text_case("Unity Day, 04.11.2025", holiday)])


REJECTED = msk(2025, 11, 5, 12, 58)


def rejection_alerts(lang: Lang) -> str:
    view = report_view(lang)
    cases = [
        ("14 call attempts of 15, 2 touches; HTML-special title", 1, "Заявка & <i>test", "8", 14, 2),
        ("1 call attempt, 1 touch; a manager the CRM does not know", 2, "Окна", "9120031", 1, 1),
        ("no call at all; no title, no manager", 3, "", None, 0, 0),
        ("21 call attempts of 25 required", 4, LONG_TITLE, "7", 21, 0),
    ]
    rendered = []
    for label, n, title, manager, attempts, touches in cases:
        card = state(n, title, manager, "JUNK", FRIDAY, rejected=REJECTED)
        required = 25 if attempts > 15 else 15
        rendered.append(
            html_case(label, dialing_messages.rejection_message(card, attempts, touches, required, view))
        )
    return "\n".join(rendered)


def calls_texts(lang: Lang) -> str:
    card = CARDS["HTML-special manager name, processed after its control time"]
    calls = [
        Call("a1", card.entity, "out", "8", msk(2025, 11, 17, 11, 2), 0, False),
        Call(
            "a2", card.entity, "out", "8", msk(2025, 11, 17, 11, 40), 31, True, "https://rec.example/a2.mp3"
        ),
        Call("a3", card.entity, "in", "9120031", msk(2025, 11, 18, 9, 5), 1234, True),
    ]
    text = dialing_messages.calls_text(card, calls, RULES.is_touch, writer(lang), url(card.entity))
    none = dialing_messages.calls_text(
        CARDS["a deal with no title and no manager"],
        [],
        RULES.is_touch,
        writer(lang),
        url(lead(4, EntityType.DEAL)),
    )
    return "\n".join([text_case("three calls, two of them touches", text), text_case("no call yet", none)])


def digests(lang: Lang) -> str:
    lines = []
    for card in CARDS.values():
        lines.append(
            timeliness_messages.late_line(card, timeliness_messages.CardView(url(card.entity), writer(lang)))
        )
    rejected = state(6, "O'Brien & <Sons>", "8", "JUNK", FRIDAY, rejected=REJECTED)
    lines.append(dialing_messages.rejection_line(rejected, 3, 15, report_view(lang)))
    cases = [html_case(f"{len(lines)} alerts due together", digest(lang, lines, len(lines)))]
    sizes = pack_lines(lines, limit=400)  # as if the lines were long: cut into parts of whole lines
    start = 0
    for number, size in enumerate(sizes, start=1):
        text = digest(lang, lines[start : start + size], len(lines), number, len(sizes))
        cases.append(html_case(f"the same in parts of at most 400 characters: {number}/{len(sizes)}", text))
        start += size
    return "\n".join(cases)


RENDERINGS: dict[str, Callable[[Lang], str]] = {
    "timeliness/late_alert": late_alerts,
    "timeliness/table": timeliness_table,
    "dialing/daily_report": daily_reports,
    "dialing/daily_report_parts": long_report,
    "dialing/report_text": report_texts,
    "dialing/rejection_alert": rejection_alerts,
    "dialing/calls": calls_texts,
    "leadwatch/digest": digests,
}
CASES = [(name, lang) for name in RENDERINGS for lang in LANGUAGES]


def golden_path(name: str, lang: Lang) -> Path:
    return GOLDEN / f"{name}.{lang}.txt"


# ----------------------------------------------------------------------------- the tests
@pytest.mark.parametrize(("name", "lang"), CASES, ids=[f"{n}.{lang}" for n, lang in CASES])
def test_rendering_matches_its_golden_file(name: str, lang: Lang) -> None:
    rendered = RENDERINGS[name](lang)
    path = golden_path(name, lang)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: render it with LEADWATCH_UPDATE_GOLDEN=1 and review it"
    expected = path.read_text(encoding="utf-8")
    assert rendered == expected, (
        f"{name} in {lang} renders differently from {path.relative_to(GOLDEN.parent.parent)}; if the change "
        "is meant, rewrite the golden files with LEADWATCH_UPDATE_GOLDEN=1 and review the diff"
    )


def test_every_golden_file_is_rendered_by_a_test() -> None:
    expected = {golden_path(name, lang) for name, lang in CASES}
    found = set(GOLDEN.rglob("*.txt"))
    assert found - expected == set(), "golden files nothing renders any more: delete them"


@pytest.mark.parametrize(("name", "lang"), CASES, ids=[f"{n}.{lang}" for n, lang in CASES])
def test_every_golden_message_is_valid_telegram_html_within_the_limit(name: str, lang: Lang) -> None:
    for sent in re.findall(r"--- sent \(HTML\) ---\n(.*?)\n--- read ---", RENDERINGS[name](lang), re.S):
        assert visible_length(sent) <= MAX_MESSAGE_LENGTH  # and it parses: the tokenizer raises otherwise


def test_both_languages_differ_everywhere_but_in_names() -> None:
    """A template left untranslated shows as the same line in both languages."""
    for name in RENDERINGS:
        ru, en = (RENDERINGS[name](lang) for lang in ("ru", "en"))
        shared = set(ru.splitlines()) & set(en.splitlines())
        words = [
            line for line in shared if re.search(r"\b(the|of|and|today|total|stage|manager)\b", line, re.I)
        ]
        assert not [w for w in words if not w.startswith("===")], (name, words)


# ----------------------------------------------------------------------------- any text at all
# Any characters, with more of those that matter to HTML and to lines than chance would give.
OUTSIDE_TEXT = st.lists(
    st.one_of(st.characters(), st.sampled_from([*"<>&\"'\n\r\t\x00\u2028 #;/=", "&amp;", "<b>", "</a>"])),
    max_size=300,
).map("".join)


def _valid(html_text: str) -> None:
    assert visible_length(html_text) <= MAX_MESSAGE_LENGTH  # parses, or raises ValueError


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(title=OUTSIDE_TEXT, manager=OUTSIDE_TEXT, stage=OUTSIDE_TEXT, lang=st.sampled_from(LANGUAGES))
def test_any_title_or_name_renders_to_valid_html_within_the_limit(
    title: str, manager: str, stage: str, lang: Lang
):
    names = StaticNames({"7": manager}, {"S": stage})
    w = Writer(lang, MSK, names)
    card = LeadState(
        "acme", lead(1), FRIDAY, FRIDAY + timedelta(minutes=15), "S", "7", title=title, rejected_at=REJECTED
    )
    view = timeliness_messages.CardView(url(card.entity), w)
    alert = timeliness_messages.late_message(card, view)
    _valid(alert)
    assert visible_text(alert).count("\n") == 4  # names and titles stay on their own line
    line = timeliness_messages.late_line(card, view)
    _valid(line)
    assert "\n" not in line
    report_view = dialing.ReportView(url, w)
    _valid(dialing_messages.rejection_message(card, 3, 1, 15, report_view))
    _valid(digest(lang, [line] * 20, 20))
    leads = [dialing.PlanLead(lead(n), title, "7", "S", REPORT_DAY, 1, n % 4, n, 0) for n in range(60)]
    text = dialing.render_report(dialing.build_report(REPORT_DAY, leads, [], RULES), report_view, RULES)
    found = parts(text)
    for part in found:
        _valid(part)
    assert re.sub(r"\s", "", "".join(visible_text(p) for p in found)) == re.sub(r"\s", "", visible_text(text))
