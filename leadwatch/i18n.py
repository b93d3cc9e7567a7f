"""Formatting in a tenant's language: plural forms, weekdays and dates, numbers (Babel, CLDR data).

leadwatch writes in Russian and English (`Lang`). A tenant's `language` defaults to Russian where
its calendar's country is one whose state language Russian is, or one of (RU, BY, KZ, KG: the
countries Bitrix24 and amoCRM serve in Russian first), else English.

Babel is imported on the first formatting call, never at import: `import app` and the handlers'
modules stay as cheap as they were (bench cold_start), and a function that writes no message
never loads it. Its locale data comes from the bundle's `babel/locale-data/{root,ru,en}.dat` and
`babel/global.dat`, the only files leadwatch.bundle keeps of it.

Texts themselves are not here: the shared parts are in leadwatch.messages, each process's
templates in its own `messages.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from functools import cache
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from babel import Locale

Lang = Literal["ru", "en"]
LANGUAGES: tuple[Lang, ...] = get_args(Lang)
# Russian is a state or official language in these: their heads of sales read Russian first.
RUSSIAN_SPEAKING = frozenset({"RU", "BY", "KZ", "KG"})

WEEKDAY_TIME = "EEE dd.MM HH:mm"  # пт 14.11 17:50 / Fri 14.11 17:50
WEEKDAY_DATE = "EEE dd.MM.yyyy"  # пт 14.11.2025 / Fri 14.11.2025
DATE = "dd.MM.yyyy"
CLOCK = "HH:mm"


def default_language(country: str | None) -> Lang:
    """The language of a tenant whose file names none, from its calendar's country."""
    return "ru" if country is not None and country.strip().upper() in RUSSIAN_SPEAKING else "en"


def parse_language(value: object) -> Lang:
    """`value` as a language leadwatch writes in (case and spaces ignored), or ValueError."""
    if isinstance(value, str):
        wanted = value.strip().lower()
        for lang in LANGUAGES:
            if wanted == lang:
                return lang
    raise ValueError(f"{value!r} is not a language leadwatch writes in: use one of {', '.join(LANGUAGES)}")


@cache
def locale(lang: Lang) -> Locale:
    """Babel's locale of `lang` (loaded once per process)."""
    from babel import Locale

    return Locale.parse(lang)


# ----------------------------------------------------------------------------- plurals
@dataclass(frozen=True, slots=True)
class Plural:
    """The forms of one word in one language by CLDR plural category: English has `one` and
    `other`; Russian `one` (1, 21), `few` (2-4, 22), `many` (0, 5-20, 25, 111) and `other`
    (fractions), each falling back to `other` when not given."""

    one: str
    other: str
    few: str | None = None
    many: str | None = None

    def form(self, category: str) -> str:
        if category == "one":
            return self.one
        if category == "few" and self.few is not None:
            return self.few
        if category == "many" and self.many is not None:
            return self.many
        return self.other


def plural_category(n: int, lang: Lang) -> str:
    """CLDR's plural category of `n` in `lang`: one, few, many or other."""
    return locale(lang).plural_form(n)


def count(n: int, word: Plural, lang: Lang) -> str:
    """`n` and the word in its form for `n`: 1 лид, 2 лида, 5 лидов; 1 lead, 2 leads."""
    return f"{number(n, lang)} {word.form(plural_category(n, lang))}"


# ----------------------------------------------------------------------------- numbers
def number(value: float, lang: Lang, digits: int = 0) -> str:
    """A number as the language writes it (12 345 / 12,345; 12,5 / 12.5), `digits` after the point."""
    from babel.numbers import format_decimal

    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, pattern, locale=locale(lang))


def percent(share: float, lang: Lang) -> str:
    """A share (0.125) as a percentage with one decimal: 12,5% / 12.5%."""
    from babel.numbers import format_percent

    return format_percent(share, "#,##0.0%", locale=locale(lang))


# ----------------------------------------------------------------------------- dates and times
def _local(moment: datetime, tz: tzinfo) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a moment to show must carry its time zone")
    return moment.astimezone(tz)


def weekday_time(moment: datetime, tz: tzinfo, lang: Lang) -> str:
    """`moment` in the tenant's zone with its weekday: пт 14.11 17:50 / Fri 14.11 17:50."""
    from babel.dates import format_datetime

    return format_datetime(_local(moment, tz), WEEKDAY_TIME, locale=locale(lang))


def clock(moment: datetime, tz: tzinfo, lang: Lang) -> str:
    """The time of day of `moment` in the tenant's zone: 17:50."""
    from babel.dates import format_time

    return format_time(_local(moment, tz), CLOCK, locale=locale(lang))


def weekday_date(day: date, lang: Lang) -> str:
    """A day with its weekday: пт 14.11.2025 / Fri 14.11.2025."""
    from babel.dates import format_date

    return format_date(day, WEEKDAY_DATE, locale=locale(lang))


def day_text(day: date, lang: Lang) -> str:
    """A day: 14.11.2025 (the same in both languages leadwatch writes)."""
    from babel.dates import format_date

    return format_date(day, DATE, locale=locale(lang))
