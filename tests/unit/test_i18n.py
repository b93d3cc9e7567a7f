"""Formatting in the tenant's language (leadwatch.i18n) and the shared parts of messages
(leadwatch.messages): plural forms, weekdays and dates in a zone, numbers, fallbacks, the tenant
setting, and Babel staying out of `import app`."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from leadwatch import i18n
from leadwatch.config import ConfigError, parse_tenant
from leadwatch.events import EntityType
from leadwatch.i18n import Plural
from leadwatch.messages import NAME_CHARS, TITLE_CHARS, StaticNames, Writer, clean, shorten

ROOT = Path(__file__).resolve().parents[2]
MSK = ZoneInfo("Europe/Moscow")
LEADS = {"ru": Plural("лид", "лида", few="лида", many="лидов"), "en": Plural("lead", "leads")}
CALLS = {"ru": Plural("звонок", "звонка", few="звонка", many="звонков"), "en": Plural("call", "calls")}
NUMBERS = (0, 1, 2, 5, 11, 21, 22, 25, 111)


def test_russian_plural_forms() -> None:
    assert [i18n.count(n, LEADS["ru"], "ru") for n in NUMBERS] == [
        "0 лидов",
        "1 лид",
        "2 лида",
        "5 лидов",
        "11 лидов",
        "21 лид",
        "22 лида",
        "25 лидов",
        "111 лидов",
    ]
    assert [i18n.count(n, CALLS["ru"], "ru") for n in (1, 3, 11, 12, 14, 101, 104, 1000)] == [
        "1 звонок",
        "3 звонка",
        "11 звонков",
        "12 звонков",
        "14 звонков",
        "101 звонок",
        "104 звонка",
        "1\xa0000 звонков",  # grouped with a no-break space, as Russian writes it
    ]


def test_english_plural_forms() -> None:
    assert [i18n.count(n, LEADS["en"], "en") for n in NUMBERS] == [
        "0 leads",
        "1 lead",
        "2 leads",
        "5 leads",
        "11 leads",
        "21 leads",
        "22 leads",
        "25 leads",
        "111 leads",
    ]
    assert i18n.count(1000, CALLS["en"], "en") == "1,000 calls"


def test_plural_categories_are_cldrs() -> None:
    assert [i18n.plural_category(n, "ru") for n in NUMBERS] == [
        "many",
        "one",
        "few",
        "many",
        "many",
        "one",
        "few",
        "many",
        "many",
    ]
    assert {i18n.plural_category(n, "en") for n in NUMBERS if n != 1} == {"other"}
    # A form not given falls back to `other`.
    assert Plural("one", "other").form("few") == "other"


def test_weekdays_dates_and_times_in_the_tenants_zone() -> None:
    moment = datetime(2025, 11, 14, 14, 50, tzinfo=UTC)  # 17:50 in Moscow
    assert i18n.weekday_time(moment, MSK, "ru") == "пт 14.11 17:50"
    assert i18n.weekday_time(moment, MSK, "en") == "Fri 14.11 17:50"
    assert i18n.clock(moment, MSK, "ru") == "17:50"
    # The same moment is already Saturday in Vladivostok (UTC+10).
    far_east = ZoneInfo("Asia/Vladivostok")
    assert i18n.weekday_time(moment, far_east, "ru") == "сб 15.11 00:50"
    assert i18n.weekday_time(moment, far_east, "en") == "Sat 15.11 00:50"
    weekdays = [i18n.weekday_date(date(2025, 11, d), "ru").split()[0] for d in range(10, 17)]
    assert weekdays == ["пн", "вт", "ср", "чт", "пт", "сб", "вс"]
    assert i18n.weekday_date(date(2025, 11, 4), "en") == "Tue 04.11.2025"
    assert i18n.day_text(date(2025, 1, 9), "ru") == "09.01.2025"
    with pytest.raises(ValueError, match="time zone"):
        i18n.weekday_time(datetime(2025, 11, 14, 17, 50), MSK, "ru")


def test_numbers_and_percentages() -> None:
    assert i18n.number(12345, "ru") == "12\xa0345" and i18n.number(12345, "en") == "12,345"
    assert i18n.number(2.5, "ru", 1) == "2,5" and i18n.number(2.5, "en", 1) == "2.5"
    assert i18n.percent(0.125, "ru") == "12,5%" and i18n.percent(2 / 3, "en") == "66.7%"


def test_default_language_by_country_and_a_clear_message_for_a_wrong_one() -> None:
    assert [i18n.default_language(c) for c in ("RU", "ru", "BY", "KZ", "KG")] == ["ru"] * 5
    assert [i18n.default_language(c) for c in ("DE", "UA", "US", None)] == ["en"] * 4
    assert i18n.parse_language(" EN ") == "en"
    with pytest.raises(ValueError, match="'de' is not a language leadwatch writes in: use one of ru, en"):
        i18n.parse_language("de")


def _tenant(**changes: object) -> str:
    data = yaml.safe_load((ROOT / "config" / "examples" / "acme-amo.yaml").read_text())
    for key, value in changes.items():
        if key == "country":
            data["calendar"]["country"] = value
        elif value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return yaml.safe_dump(data, allow_unicode=True)


def test_the_tenant_setting() -> None:
    assert parse_tenant(_tenant(language=None), "acme-amo.yaml").language == "ru"  # calendar.country RU
    assert parse_tenant(_tenant(language=None, country="DE"), "acme-amo.yaml").language == "en"
    assert parse_tenant(_tenant(language="en"), "acme-amo.yaml").language == "en"
    assert parse_tenant(_tenant(language="RU", country="DE"), "acme-amo.yaml").language == "ru"
    with pytest.raises(ConfigError) as error:
        parse_tenant(_tenant(language="de"), "config/tenants/acme-amo.yaml")
    assert str(error.value).splitlines() == [
        "config/tenants/acme-amo.yaml: invalid tenant configuration",
        "  language: 'de' is not a language leadwatch writes in: use one of ru, en",
    ]


def test_fallbacks_in_the_tenants_language() -> None:
    ru, en = (Writer(lang, MSK, StaticNames({"7": "Анна"}, {"NEW": "Новый"})) for lang in ("ru", "en"))
    assert (ru.manager_name("7"), en.manager_name("7")) == ("Анна", "Анна")
    assert (ru.manager_name("9120031"), en.manager_name("9120031")) == (
        "пользователь 9120031",
        "user 9120031",
    )
    assert (ru.manager_name(None), en.manager_name("")) == ("не назначен", "unassigned")
    assert (ru.stage_name("61234501"), en.stage_name("61234501")) == ("этап 61234501", "stage 61234501")
    assert (ru.stage_name(None), en.stage_name("NEW")) == ("без этапа", "Новый")
    assert ru.card_title("  ", EntityType.LEAD, "42") == "Лид #42"
    assert en.card_title(None, EntityType.DEAL, "42") == "Deal #42"
    # A name the CRM gives as blank or as control characters only is no name.
    blank = Writer("ru", MSK, StaticNames({"7": " \n\t"}))
    assert blank.manager_name("7") == "пользователь 7"


def test_outside_text_is_one_bounded_escaped_line() -> None:
    assert clean("Заявка\nс сайта\r\n\tсрочно\x00 \u2028!") == "Заявка с сайта срочно !"
    assert clean("a\ud800b") == "ab"  # a lone surrogate cannot travel in a message
    title = "Заявка " + "очень длинная, " * 30
    short = shorten(title, TITLE_CHARS)
    assert len(short) <= TITLE_CHARS and title.startswith(short[:-1]) and short.endswith("…")
    assert title[len(short) - 1] in " ," and short[-2] not in " ,"  # at a word, no comma left hanging
    assert shorten("x" * 500, 10) == "x" * 9 + "…"
    writer = Writer("en", MSK, StaticNames({"7": "O'Brien & <Sons>" * 20}))
    assert writer.manager("7").startswith("O'Brien &amp; &lt;Sons&gt;")
    assert len(writer.manager_name("7")) <= NAME_CHARS
    link = writer.card('https://crm/lead/1?a=1&b="2"', "Заявка & <i>test", EntityType.LEAD, "1")
    assert link == '<a href="https://crm/lead/1?a=1&amp;b=&quot;2&quot;">Заявка &amp; &lt;i&gt;test</a>'


def test_importing_the_app_does_not_import_babel() -> None:
    """Babel is loaded on the first message written, never by a cold start's `import app`."""
    probe = "import app, sys; print(sorted(m for m in sys.modules if m == 'babel' or m.startswith('babel.')))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
    # Nor do the modules that write messages, until they write one.
    probe = (
        "import sys, leadwatch.messages, workflows.timeliness.rules, workflows.dialing.rules, "
        "workflows.dialing.report, workflows.timeliness.sweep; print('babel' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
