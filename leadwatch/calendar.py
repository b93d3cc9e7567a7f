"""The tenant's business calendar: working days, working hours and control times.

Which days are working days, in this order (a later rule wins):

1. The weekly hours: a weekday with no intervals is a day off.
2. The country's calendar from python-holidays (`country`, `subdivision`): public
   holidays and moved days off (RU "Day off (substituted from ...)") are days off;
   a weekend workday (RU: Saturday 2025-11-01, worked in exchange for Monday
   2025-11-03) is a working day. A weekend workday keeps its own weekday's hours if
   the tenant has any (a six-day shop works its usual Saturday); otherwise it takes
   the hours of the weekday it replaces (python-holidays names the moved day off
   after it, so Saturday 2025-11-01 works Monday's hours), else Monday's, else the
   first weekday that has hours. This is the same fallback `DateOverride` documents
   for a "working" override, so both paths give the same hours.
3. The tenant's dated overrides: "holiday" (a day off), "working" (a working day
   with the given hours or the fallback above), "short" (the given hours, or the
   ordinary hours with `shorten_minutes` cut from the end).

The pre-holiday short day (Russian Labour Code art. 95): when
`pre_holiday_minutes` > 0, a working day is shortened by that many minutes, cut
from the end of its last interval(s), when

* the next calendar day is a public holiday (Fri 2025-03-07 before Sat Mar 8), or
* it is a weekend workday and the day it replaces is followed by a public holiday
  (Sat 2025-11-01 replaces Mon Nov 3, which precedes the Nov 4 holiday).

The second clause is how the Russian production calendars transfer the short day
to a worked Saturday. A working day followed only by a weekend or a moved day off
and then a holiday is NOT shortened: Fri 2025-02-21 (Feb 23 is a Sunday),
Wed 2025-05-07 (May 8 is a day off moved from Feb 23) and Tue 2025-12-30 (Dec 31 is
a day off moved from Jan 5) are full days, as in the official 2025 calendar
(four short days: Mar 7, Apr 30, Jun 11, Nov 1). With an 8-hour weekday this rule
gives the official 40-hour-week norms of 2018-2025 (2024: 1979 h, 2025: 1972 h); "the
last working day with only days off before a holiday" would add the three days above
to 2025. "Public holiday" means a
python-holidays entry that is not a moved day off; an "observed" entry (a holiday
falling on a weekend, given on the next weekday) counts as a public holiday. A
public holiday that the tenant overrides to "working" or "short" does not shorten
its eve; the tenant's own "holiday" overrides never do. A "working" override day
is shortened when it is itself such an eve; a "short" override is final (its hours
or its own cut, never the pre-holiday cut on top).

Time: working hours are local wall-clock times of `timezone`. A local time that
does not exist (spring forward) or is ambiguous (fall back) is read with fold=0,
i.e. with the offset in force before the change, and then normalised through UTC:
02:30 on 2025-03-30 in Europe/Berlin becomes 03:30 CEST, and 01:30 on 2025-11-02 in
America/New_York is the first (EDT) 01:30. Arithmetic is done in UTC, so working
time is real elapsed time: a 00:00-03:00 interval on the fall-back night lasts four
hours. An interval that collapses to nothing in a gap is dropped.

Pure: no I/O, no clock. python-holidays lookups are cached per (country,
subdivision, year) for the process, so a Lambda rebuilding the calendar per lead
still builds each holidays object once; day plans are cached per instance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from itertools import pairwise
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

Hours = tuple[tuple[time, time], ...]
_Span = tuple[datetime, datetime]  # UTC

_ONE_DAY = timedelta(days=1)
# Any real calendar has a working day within a few weeks; the bound only stops a
# misconfigured one (every day overridden as a holiday) from looping forever.
_SEARCH_LIMIT_DAYS = 3660


@dataclass(frozen=True)
class CalendarOverride:
    """A dated exception to the weekly hours and the country calendar."""

    day: date
    kind: Literal["holiday", "working", "short"]
    hours: tuple[tuple[time, time], ...] | None = None
    shorten_minutes: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("holiday", "working", "short"):
            raise ValueError(f"{self.day}: unknown override kind {self.kind!r}")
        if self.kind == "holiday" and (self.hours or self.shorten_minutes):
            raise ValueError(f"{self.day}: a holiday has no hours and nothing to shorten")
        if self.kind == "short" and not self.hours and not self.shorten_minutes:
            raise ValueError(f"{self.day}: a short day needs hours or shorten_minutes")
        if self.hours is not None and self.shorten_minutes is not None:
            raise ValueError(f"{self.day}: give hours or shorten_minutes, not both")
        if self.shorten_minutes is not None and self.shorten_minutes < 0:
            raise ValueError(f"{self.day}: shorten_minutes must not be negative")
        if self.hours is not None:
            _check_hours(self.hours, f"override {self.day}")


@dataclass(frozen=True)
class _CountryYear:
    """What one python-holidays year says, reduced to what the calendar needs."""

    days_off: frozenset[date]  # public holidays and moved days off
    public: frozenset[date]  # days off that are holidays in their own right
    # weekend workday -> the moved day off it was exchanged for (None if not named)
    workday_replaces: Mapping[date, date | None]


@lru_cache(maxsize=256)
def _country_year(country: str, subdivision: str | None, year: int) -> _CountryYear:
    # Building a holidays object costs tens of milliseconds the first time; one per
    # (country, subdivision, year) for the whole process is enough.
    table = holidays.country_holidays(country, subdiv=subdivision, years=year)
    moved_from = _moved_days_off(table)
    public = frozenset(day for day in table if day not in moved_from)
    replaces: dict[date, date | None] = dict.fromkeys(table.weekend_workdays)
    for moved, source in moved_from.items():
        if source is not None and source in replaces:
            replaces[source] = moved
    return _CountryYear(days_off=frozenset(table), public=public, workday_replaces=replaces)


def _moved_days_off(table: Any) -> dict[date, date | None]:
    """Moved days off of a holidays table -> the date each was moved from (None if unreadable).

    python-holidays (0.109) has no category or flag for them: it names them with
    `substituted_label` % the source date in `substituted_date_format`, both run
    through the table's own translation (so "Day off (substituted from 11/01/2025)"
    in English, "Выходной (перенесено с 01.11.2025)" in Russian; the language follows
    the process locale unless given). Rebuilding the label with the same `tr` makes
    the match independent of the language.
    """
    label = getattr(table, "substituted_label", None)
    date_format = getattr(table, "substituted_date_format", None)
    if not getattr(table, "has_substituted_holidays", False) or not label or not date_format:
        return {}
    prefix, _, suffix = table.tr(label).partition("%s")
    date_format = table.tr(date_format)
    moved: dict[date, date | None] = {}
    for day in table:
        names = table.get_list(day)
        # A date that is also a real holiday (two names) stays a public holiday.
        if not names or not all(n.startswith(prefix) and n.endswith(suffix) for n in names):
            continue
        source: date | None = None
        text = names[0][len(prefix) : len(names[0]) - len(suffix)]
        try:
            source = datetime.strptime(text, date_format).date()
        except ValueError:
            source = None
        moved[day] = source
    return moved


def _check_hours(hours: Sequence[tuple[time, time]], where: str) -> Hours:
    ordered = sorted((start, end) for start, end in hours)
    for start, end in ordered:
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError(f"{where}: working hours are local times, without a time zone")
        if end <= start:
            raise ValueError(f"{where}: interval {start:%H:%M}-{end:%H:%M} ends before it starts")
    for (_, end), (start, _) in pairwise(ordered):
        if start < end:
            raise ValueError(f"{where}: intervals overlap at {start:%H:%M}")
    return tuple(ordered)


def _utc(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime):
        raise ValueError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


class BusinessCalendar:
    """Working days and hours of one tenant (see the module docstring for the rules)."""

    def __init__(
        self,
        timezone: str,
        weekly: Mapping[int, Sequence[tuple[time, time]]],
        country: str | None = None,
        subdivision: str | None = None,
        overrides: Sequence[CalendarOverride] = (),
        pre_holiday_minutes: int = 0,
    ) -> None:
        try:
            self.tz: ZoneInfo = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {timezone!r}") from exc
        if any(not isinstance(k, int) or not 0 <= k <= 6 for k in weekly):
            raise ValueError("weekly hours are keyed by weekday 0 (Monday) .. 6 (Sunday)")
        self._weekly: tuple[Hours, ...] = tuple(
            _check_hours(weekly.get(i, ()), f"weekday {i}") for i in range(7)
        )
        if not any(self._weekly):
            raise ValueError("no working hours on any weekday")
        self._country = country.upper() if country else None
        if self._country is not None and self._country not in holidays.list_supported_countries():
            raise ValueError(f"python-holidays has no calendar for country {country!r}")
        if self._country is not None:
            try:
                # An empty table (no years) is cheap and validates the subdivision now,
                # not on the first lead that needs it.
                holidays.country_holidays(self._country, subdiv=subdivision)
            except NotImplementedError as exc:
                raise ValueError(str(exc)) from exc
        self._subdivision = subdivision
        if pre_holiday_minutes < 0:
            raise ValueError("pre_holiday_minutes must not be negative")
        self._pre_holiday = timedelta(minutes=pre_holiday_minutes)
        self._overrides: dict[date, CalendarOverride] = {}
        for item in overrides:
            if item.day in self._overrides:
                raise ValueError(f"date {item.day} is overridden twice")
            self._overrides[item.day] = item
        self._spans: dict[date, tuple[_Span, ...]] = {}

    # ---- days ----------------------------------------------------------------

    def is_working_day(self, day: date) -> bool:
        # A day whose hours were all cut away has no working time, so it is not one.
        return bool(self._day_spans(day))

    def intervals(self, day: date) -> list[tuple[datetime, datetime]]:
        """The day's working intervals, tz-aware in the tenant zone, sorted; [] on a day off."""
        return [(start.astimezone(self.tz), end.astimezone(self.tz)) for start, end in self._day_spans(day)]

    def add_working_days(self, day: date, n: int) -> date:
        """The n-th working day after `day`; n=0: `day` itself if working, else the next working day."""
        if n < 0:
            raise ValueError("n must be >= 0")
        current = day if n == 0 else day + _ONE_DAY
        remaining = max(n, 1)
        for _ in range(_SEARCH_LIMIT_DAYS + n):
            if self.is_working_day(current):
                remaining -= 1
                if remaining == 0:
                    return current
            current += _ONE_DAY
        raise ValueError(f"no working day found after {day}")

    def working_days(self, start: date, end: date) -> list[date]:
        """Working days from start to end, both included ([] if end < start)."""
        days: list[date] = []
        current = start
        while current <= end:
            if self.is_working_day(current):
                days.append(current)
            current += _ONE_DAY
        return days

    # ---- instants ------------------------------------------------------------

    def is_working_time(self, moment: datetime) -> bool:
        """start <= moment < end of some interval (a closing instant is not working time)."""
        instant = _utc(moment, "moment")
        return any(start <= instant < end for start, end in self._day_spans(self._local_day(instant)))

    def working_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Working time in [start, end), summed interval by interval; zero if end <= start."""
        first, last = _utc(start, "start"), _utc(end, "end")
        total = timedelta(0)
        if last <= first:
            return total
        day, last_day = self._local_day(first), self._local_day(last)
        while day <= last_day:
            for open_, close in self._day_spans(day):
                overlap = min(close, last) - max(open_, first)
                if overlap > timedelta(0):
                    total += overlap
            day += _ONE_DAY
        return total

    def reaction_deadline(self, created: datetime, reaction: timedelta) -> datetime | None:
        """`created` + `reaction` working time, if the lead is handled in hours; else None.

        In hours means: `created` lies between the day's opening and its last close
        (a lunch break counts, the reaction then runs from the next interval) and the
        reaction fits before the last close. Landing exactly on the close stays there.
        """
        if reaction < timedelta(0):
            raise ValueError("reaction must not be negative")
        instant = _utc(created, "created")
        spans = self._day_spans(self._local_day(instant))
        if not spans or not spans[0][0] <= instant < spans[-1][1]:
            return None
        remaining = reaction
        for open_, close in spans:
            if close <= instant:
                continue
            begin = max(open_, instant)
            if remaining <= close - begin:
                return (begin + remaining).astimezone(self.tz)
            remaining -= close - begin
        return None

    def control_time(self, created: datetime, reaction: timedelta, control_start: time) -> datetime:
        """When a lead created at `created` is checked (docs/timeliness.md, "The control time").

        In hours (see `reaction_deadline`): `created` + `reaction` in working time.
        Otherwise the control start of the next working day: for a lead outside the
        day's hours (night, day off, before opening, after closing),
        `next_control_start(created)`, so a 03:00 lead is checked at 11:00 the same
        day; for a lead in hours whose reaction does not fit,
        `next_control_start(last close of that day)`, i.e. the next working day.

        Not globally monotonic, by design: Wed 03:00 -> Wed 11:00 but Wed 10:00 ->
        Wed 10:15. The only inversion is that one: a lead carried over to a control
        start C, and a later lead created in hours before C. Leads both handled in
        hours, or both carried over, keep their order; and a carried-over lead never
        gets an earlier control time than an earlier in-hours lead.

        Deviation from "next_control_start(created)" for the does-not-fit case: when
        the control start lies in the day's last `reaction` minutes, a 10:58 lead in
        08:00-11:10 hours would otherwise be checked at 11:00 the same day, two
        minutes after arrival, and controlled before an earlier 10:50 lead (11:05).
        With the default 11:00 control start and 15 minutes both read the same.
        """
        deadline = self.reaction_deadline(created, reaction)
        if deadline is not None:
            return deadline
        instant = _utc(created, "created")
        spans = self._day_spans(self._local_day(instant))
        if spans and spans[0][0] <= instant < spans[-1][1]:
            return self.next_control_start(spans[-1][1], control_start)
        return self.next_control_start(created, control_start)

    def next_control_start(self, after: datetime, control_start: time) -> datetime:
        """The first instant >= `after` that is `control_start` on a working day.

        On a day whose working time does not contain `control_start` it is clamped:
        before the opening (or in a break) -> the next opening instant; at or after
        the last close -> the day does not qualify.
        """
        instant = _utc(after, "after")
        day = self._local_day(instant)
        for _ in range(_SEARCH_LIMIT_DAYS):
            candidate = self._control_instant(day, control_start)
            if candidate is not None and candidate >= instant:
                return candidate.astimezone(self.tz)
            day += _ONE_DAY
        raise ValueError(f"no working day within {_SEARCH_LIMIT_DAYS} days after {after.isoformat()}")

    # ---- internals -------------------------------------------------------------

    def _control_instant(self, day: date, control_start: time) -> datetime | None:
        wanted = self._at(day, control_start)
        for open_, close in self._day_spans(day):
            if wanted < open_:
                return open_
            if wanted < close:
                return wanted
        return None

    def _local_day(self, instant: datetime) -> date:
        return instant.astimezone(self.tz).date()

    def _at(self, day: date, clock: time) -> datetime:
        # fold=0 picks the pre-transition offset for gaps and overlaps; the UTC round
        # trip turns a nonexistent wall time into the real instant it denotes.
        return datetime.combine(day, clock).replace(tzinfo=self.tz, fold=0).astimezone(UTC)

    def _day_spans(self, day: date) -> tuple[_Span, ...]:
        cached = self._spans.get(day)
        if cached is None:
            cached = self._spans[day] = self._compute_spans(day)
        return cached

    def _compute_spans(self, day: date) -> tuple[_Span, ...]:
        hours, cut = self._plan(day)
        spans: list[_Span] = []
        for start, end in hours:
            open_, close = self._at(day, start), self._at(day, end)
            if close <= open_:
                continue  # swallowed by a DST gap
            if spans and open_ <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], close))
            else:
                spans.append((open_, close))
        while cut > timedelta(0) and spans:
            open_, close = spans[-1]
            if close - open_ > cut:
                spans[-1] = (open_, close - cut)
                break
            cut -= close - open_
            spans.pop()
        return tuple(spans)

    def _plan(self, day: date) -> tuple[Hours, timedelta]:
        """The day's local hours and how much to cut from their end."""
        no_cut = timedelta(0)
        override = self._overrides.get(day)
        if override is not None:
            if override.kind == "holiday":
                return (), no_cut
            hours = override.hours if override.hours is not None else self._ordinary_hours(day)
            if override.kind == "short":
                return hours, timedelta(minutes=override.shorten_minutes or 0)
            return hours, self._pre_holiday_cut(day)
        if self._country_day_off(day):
            return (), no_cut
        # A country weekend workday is worked like an ordinary weekday.
        hours = self._ordinary_hours(day) if self._weekend_workday(day)[0] else self._weekly[day.weekday()]
        return hours, (self._pre_holiday_cut(day) if hours else no_cut)

    def _ordinary_hours(self, day: date) -> Hours:
        """Hours for a day worked outside the weekly pattern (see the module docstring)."""
        if self._weekly[day.weekday()]:
            return self._weekly[day.weekday()]
        _, replaced = self._weekend_workday(day)
        if replaced is not None and self._weekly[replaced.weekday()]:
            return self._weekly[replaced.weekday()]
        for weekday in range(7):
            if self._weekly[weekday]:
                return self._weekly[weekday]
        return ()

    def _pre_holiday_cut(self, day: date) -> timedelta:
        if not self._pre_holiday:
            return timedelta(0)
        if self._closed_for_public_holiday(day + _ONE_DAY):
            return self._pre_holiday
        is_workday, replaced = self._weekend_workday(day)
        if is_workday and replaced is not None and self._closed_for_public_holiday(replaced + _ONE_DAY):
            return self._pre_holiday
        return timedelta(0)

    def _closed_for_public_holiday(self, day: date) -> bool:
        if self._country is None:
            return False
        override = self._overrides.get(day)
        if override is not None and override.kind != "holiday":
            return False  # the tenant works through it, so its eve is an ordinary day
        return day in _country_year(self._country, self._subdivision, day.year).public

    def _country_day_off(self, day: date) -> bool:
        if self._country is None:
            return False
        return day in _country_year(self._country, self._subdivision, day.year).days_off

    def _weekend_workday(self, day: date) -> tuple[bool, date | None]:
        """(is it a country weekend workday, the day off it was exchanged for)."""
        if self._country is None:
            return False, None
        # python-holidays files the exchange under the year of the moved day off,
        # which may be the year before or after the workday itself.
        for year in (day.year, day.year + 1, day.year - 1):
            table = _country_year(self._country, self._subdivision, year)
            if day in table.workday_replaces:
                return True, table.workday_replaces[day]
        return False, None


def calendar_from_config(cfg: Any) -> BusinessCalendar:
    """From a `leadwatch.config.CalendarConfig` (duck-typed: workflows does not import tenancy)."""
    weekly = {i: [(item.start, item.end) for item in cfg.hours.for_weekday(i)] for i in range(7)}
    overrides = [
        CalendarOverride(
            day=item.date,
            kind=item.kind,
            hours=None if item.hours is None else tuple((i.start, i.end) for i in item.hours),
            shorten_minutes=item.shorten_minutes,
        )
        for item in cfg.overrides
    ]
    return BusinessCalendar(
        timezone=cfg.timezone,
        weekly=weekly,
        country=cfg.country,
        subdivision=cfg.subdivision,
        overrides=overrides,
        pre_holiday_minutes=cfg.pre_holiday_minutes(),
    )
