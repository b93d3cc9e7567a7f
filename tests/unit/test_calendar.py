"""The business calendar: dated control times (docs/timeliness.md), the Russian production
calendar, tenant overrides, DST, and properties of the control time."""

from __future__ import annotations

import ast
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadwatch.calendar import BusinessCalendar, CalendarOverride, calendar_from_config

MSK = ZoneInfo("Europe/Moscow")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")

LUNCH = ((time(9), time(13)), (time(14), time(17)))
WEEKDAYS = dict.fromkeys(range(5), LUNCH)
REACTION = timedelta(minutes=15)
CONTROL = time(11)


def ru(**kwargs) -> BusinessCalendar:
    kwargs.setdefault("pre_holiday_minutes", 60)
    kwargs.setdefault("weekly", WEEKDAYS)
    return BusinessCalendar("Europe/Moscow", country="RU", **kwargs)


CAL = ru()


def msk(y: int, m: int, d: int, hh: int = 0, mm: int = 0, ss: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, ss, tzinfo=MSK)


def control(created: datetime, cal: BusinessCalendar = CAL, reaction: timedelta = REACTION) -> datetime:
    return cal.control_time(created, reaction, CONTROL)


def wall(day: date, clock: time, tz: ZoneInfo) -> datetime:
    """A local wall time read the calendar's way: fold=0, normalised through UTC."""
    return datetime.combine(day, clock).replace(tzinfo=tz, fold=0).astimezone(UTC)


def closes_at(cal: BusinessCalendar, day: date) -> time:
    return cal.intervals(day)[-1][1].timetz().replace(tzinfo=None)


# ---- docs/timeliness.md, dated -------------------------------------------------------

# Tue 2025-11-11 is an ordinary week: Mon 10 .. Fri 14 are working days.
DATED = [
    ("Tue 17:30 -> Wed 11:00", msk(2025, 11, 11, 17, 30), msk(2025, 11, 12, 11)),
    ("Tue 16:50 does not fit -> Wed 11:00", msk(2025, 11, 11, 16, 50), msk(2025, 11, 12, 11)),
    ("Tue 16:45 lands exactly on closing", msk(2025, 11, 11, 16, 45), msk(2025, 11, 11, 17)),
    ("Tue 10:00 -> 10:15", msk(2025, 11, 11, 10), msk(2025, 11, 11, 10, 15)),
    ("Tue 12:55 across lunch -> 14:10", msk(2025, 11, 11, 12, 55), msk(2025, 11, 11, 14, 10)),
    ("Tue 13:30 in lunch -> 14:15", msk(2025, 11, 11, 13, 30), msk(2025, 11, 11, 14, 15)),
    ("Tue 03:00 night -> Tue 11:00", msk(2025, 11, 11, 3), msk(2025, 11, 11, 11)),
    ("Tue 08:59 before opening -> Tue 11:00", msk(2025, 11, 11, 8, 59), msk(2025, 11, 11, 11)),
    ("exact opening 09:00:00 -> 09:15", msk(2025, 11, 11, 9), msk(2025, 11, 11, 9, 15)),
    ("exact closing 17:00:00 -> Wed 11:00", msk(2025, 11, 11, 17), msk(2025, 11, 12, 11)),
    ("exact lunch start 13:00:00 -> 14:15", msk(2025, 11, 11, 13), msk(2025, 11, 11, 14, 15)),
    ("exact lunch end 14:00:00 -> 14:15", msk(2025, 11, 11, 14), msk(2025, 11, 11, 14, 15)),
    ("Fri 19:00 -> Mon 11:00", msk(2025, 11, 14, 19), msk(2025, 11, 17, 11)),
    ("Fri 16:46 does not fit -> Mon 11:00", msk(2025, 11, 14, 16, 46), msk(2025, 11, 17, 11)),
    ("Sat 00:00 -> Mon 11:00", msk(2025, 11, 15, 0), msk(2025, 11, 17, 11)),
    ("Sat 10:00 -> Mon 11:00", msk(2025, 11, 15, 10), msk(2025, 11, 17, 11)),
    ("Sat 18:00 -> Mon 11:00 (Monday is not skipped)", msk(2025, 11, 15, 18), msk(2025, 11, 17, 11)),
    ("Sun 12:00 -> Mon 11:00", msk(2025, 11, 16, 12), msk(2025, 11, 17, 11)),
    ("Sun 23:59 -> Mon 11:00", msk(2025, 11, 16, 23, 59), msk(2025, 11, 17, 11)),
    ("Mon 10:59:59 in hours -> 11:14:59", msk(2025, 11, 17, 10, 59, 59), msk(2025, 11, 17, 11, 14, 59)),
    ("Fri 2025-10-31 18:00 -> working Sat 11:00", msk(2025, 10, 31, 18), msk(2025, 11, 1, 11)),
    ("working Sat evening -> Wed 11:00", msk(2025, 11, 1, 19), msk(2025, 11, 5, 11)),
    ("moved day off Mon 2025-11-03 -> Wed", msk(2025, 11, 3, 10), msk(2025, 11, 5, 11)),
    ("Unity Day 2025-11-04 -> Wed", msk(2025, 11, 4, 12), msk(2025, 11, 5, 11)),
    ("pre-holiday Sat 15:45 lands on its 16:00 close", msk(2025, 11, 1, 15, 45), msk(2025, 11, 1, 16)),
    ("pre-holiday Sat 15:50 -> Wed 11:00", msk(2025, 11, 1, 15, 50), msk(2025, 11, 5, 11)),
    ("pre-holiday Sat 16:00 (closed) -> Wed 11:00", msk(2025, 11, 1, 16), msk(2025, 11, 5, 11)),
    ("2025-12-30 evening -> 2026-01-12 11:00", msk(2025, 12, 30, 18), msk(2026, 1, 12, 11)),
    ("2025-12-30 16:45 is a full day -> 17:00", msk(2025, 12, 30, 16, 45), msk(2025, 12, 30, 17)),
    ("New Year week -> 2026-01-12 11:00", msk(2026, 1, 5, 10), msk(2026, 1, 12, 11)),
    ("Thu 2025-03-06 evening -> short Fri 11:00", msk(2025, 3, 6, 20), msk(2025, 3, 7, 11)),
    ("short Fri 2025-03-07 15:50 -> Mon 03-10", msk(2025, 3, 7, 15, 50), msk(2025, 3, 10, 11)),
]


@pytest.mark.parametrize(("created", "expected"), [c[1:] for c in DATED], ids=[c[0] for c in DATED])
def test_control_time_dated(created: datetime, expected: datetime) -> None:
    got = control(created)
    assert got == expected
    assert got.tzinfo == MSK


def test_input_in_another_zone_gives_the_same_instant_in_the_tenant_zone() -> None:
    created = msk(2025, 11, 11, 10).astimezone(NEW_YORK)
    got = control(created)
    assert got == msk(2025, 11, 11, 10, 15)
    assert got.tzinfo == MSK


def test_working_time_boundaries() -> None:
    assert CAL.is_working_time(msk(2025, 11, 11, 9))
    assert CAL.is_working_time(msk(2025, 11, 11, 12, 59, 59))
    assert not CAL.is_working_time(msk(2025, 11, 11, 13))
    assert CAL.is_working_time(msk(2025, 11, 11, 14))
    assert not CAL.is_working_time(msk(2025, 11, 11, 17))
    assert not CAL.is_working_time(msk(2025, 11, 15, 10))  # Saturday
    assert not CAL.is_working_time(msk(2025, 11, 4, 10))  # Unity Day


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2025, 11, 11, 10)
    aware = msk(2025, 11, 11, 10)
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.control_time(naive, REACTION, CONTROL)
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.next_control_start(naive, CONTROL)
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.is_working_time(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.working_time_between(aware, naive)


def test_constructor_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="time zone"):
        BusinessCalendar("Mars/Olympus", WEEKDAYS)
    with pytest.raises(ValueError, match="no working hours"):
        BusinessCalendar("UTC", {})
    with pytest.raises(ValueError, match="overlap"):
        BusinessCalendar("UTC", {0: [(time(9), time(13)), (time(12), time(14))]})
    with pytest.raises(ValueError, match="ends before"):
        BusinessCalendar("UTC", {0: [(time(13), time(9))]})
    with pytest.raises(ValueError, match="country"):
        BusinessCalendar("UTC", WEEKDAYS, country="XX")
    with pytest.raises(ValueError, match="subdivision"):
        BusinessCalendar("UTC", WEEKDAYS, country="RU", subdivision="XX")
    with pytest.raises(ValueError, match="twice"):
        ru(overrides=[CalendarOverride(date(2025, 1, 9), "holiday")] * 2)


# ---- the Russian production calendar --------------------------------------------------


def test_weekend_workday_and_moved_day_off() -> None:
    assert CAL.is_working_day(date(2025, 11, 1))  # Saturday worked for Monday Nov 3
    assert not CAL.is_working_day(date(2025, 11, 3))  # the moved day off
    assert not CAL.is_working_day(date(2025, 11, 4))  # Unity Day
    assert not CAL.is_working_day(date(2025, 12, 31))  # moved from Sunday Jan 5
    assert [d.day for d in CAL.working_days(date(2025, 10, 30), date(2025, 11, 7))] == [30, 31, 1, 5, 6, 7]


def test_pre_holiday_short_days_2025() -> None:
    """Shortened: the eve of a public holiday, and a worked Saturday whose replaced day is one.

    Not shortened: a day followed by a weekend or a moved day off and only then a
    holiday. This reproduces the official 2025 calendar (four short days).
    """
    short = {
        d for d in CAL.working_days(date(2025, 1, 1), date(2025, 12, 31)) if closes_at(CAL, d) != time(17)
    }
    assert short == {date(2025, 3, 7), date(2025, 4, 30), date(2025, 6, 11), date(2025, 11, 1)}
    assert CAL.intervals(date(2025, 11, 1))[-1] == (msk(2025, 11, 1, 14), msk(2025, 11, 1, 16))
    for full in (date(2025, 2, 21), date(2025, 5, 7), date(2025, 12, 30)):
        assert closes_at(CAL, full) == time(17), full


@pytest.mark.parametrize(("year", "days", "hours"), [(2024, 248, 1979), (2025, 247, 1972)])
def test_production_calendar_norm(year: int, days: int, hours: int) -> None:
    """The 40-hour-week norm of the official calendar: working days and hours."""
    cal = ru(weekly=dict.fromkeys(range(5), ((time(9), time(17)),)))
    working = cal.working_days(date(year, 1, 1), date(year, 12, 31))
    total = cal.working_time_between(msk(year, 1, 1), msk(year + 1, 1, 1))
    assert (len(working), total) == (days, timedelta(hours=hours))


def test_weekend_workday_takes_the_hours_of_the_day_it_replaces() -> None:
    weekly = {0: ((time(10), time(19)),)} | dict.fromkeys(range(1, 5), ((time(9), time(18)),))
    cal = ru(weekly=weekly, pre_holiday_minutes=0)
    # Sat 2025-11-01 is worked in exchange for Mon 2025-11-03.
    assert cal.intervals(date(2025, 11, 1)) == [(msk(2025, 11, 1, 10), msk(2025, 11, 1, 19))]


def test_weekend_workday_keeps_a_six_day_shops_own_saturday() -> None:
    cal = ru(weekly=WEEKDAYS | {5: ((time(10), time(14)),)})
    # Its own Saturday hours, minus the pre-holiday hour.
    assert cal.intervals(date(2025, 11, 1)) == [(msk(2025, 11, 1, 10), msk(2025, 11, 1, 13))]
    # An ordinary Saturday of that shop is untouched.
    assert cal.intervals(date(2025, 11, 8)) == [(msk(2025, 11, 8, 10), msk(2025, 11, 8, 14))]


def test_no_shortening_when_disabled() -> None:
    cal = ru(pre_holiday_minutes=0)
    assert closes_at(cal, date(2025, 11, 1)) == time(17)
    assert control(msk(2025, 11, 1, 16, 30), cal) == msk(2025, 11, 1, 16, 45)


def test_shortening_longer_than_the_last_interval_eats_into_the_one_before() -> None:
    cal = ru(pre_holiday_minutes=240)
    assert cal.intervals(date(2025, 11, 1)) == [(msk(2025, 11, 1, 9), msk(2025, 11, 1, 12))]


# ---- tenant overrides -----------------------------------------------------------------


def test_override_extra_holiday() -> None:
    cal = ru(overrides=[CalendarOverride(date(2025, 11, 12), "holiday")])
    assert not cal.is_working_day(date(2025, 11, 12))
    assert control(msk(2025, 11, 11, 17, 30), cal) == msk(2025, 11, 13, 11)
    # A company day off is not a public holiday: its eve keeps full hours.
    assert closes_at(cal, date(2025, 11, 11)) == time(17)


def test_override_extra_working_day_with_default_and_own_hours() -> None:
    cal = ru(
        overrides=[
            CalendarOverride(date(2025, 11, 15), "working"),
            CalendarOverride(date(2025, 11, 22), "working", hours=((time(10), time(14)),)),
        ]
    )
    assert cal.intervals(date(2025, 11, 15)) == [
        (msk(2025, 11, 15, 9), msk(2025, 11, 15, 13)),
        (msk(2025, 11, 15, 14), msk(2025, 11, 15, 17)),
    ]
    assert control(msk(2025, 11, 14, 19), cal) == msk(2025, 11, 15, 11)
    assert control(msk(2025, 11, 21, 19), cal) == msk(2025, 11, 22, 11)
    assert control(msk(2025, 11, 22, 13, 50), cal) == msk(2025, 11, 24, 11)


def test_override_short_day_with_hours_clamps_the_control_start() -> None:
    cal = ru(overrides=[CalendarOverride(date(2025, 11, 11), "short", hours=((time(12), time(16)),))])
    assert cal.intervals(date(2025, 11, 11)) == [(msk(2025, 11, 11, 12), msk(2025, 11, 11, 16))]
    # 11:00 is before the 12:00 opening: the control start moves to the opening instant.
    assert control(msk(2025, 11, 11, 3), cal) == msk(2025, 11, 11, 12)
    assert control(msk(2025, 11, 11, 11, 30), cal) == msk(2025, 11, 11, 12)
    assert control(msk(2025, 11, 11, 15, 45), cal) == msk(2025, 11, 11, 16)
    assert control(msk(2025, 11, 11, 15, 50), cal) == msk(2025, 11, 12, 11)


def test_control_start_after_a_short_days_close_skips_that_day() -> None:
    cal = ru(overrides=[CalendarOverride(date(2025, 11, 11), "short", hours=((time(8), time(10, 30)),))])
    assert control(msk(2025, 11, 11, 3), cal) == msk(2025, 11, 12, 11)
    assert cal.next_control_start(msk(2025, 11, 10, 17), CONTROL) == msk(2025, 11, 12, 11)


def test_a_lead_whose_reaction_does_not_fit_waits_for_the_next_working_day() -> None:
    """Even when the control start lies in the day's last minutes: not the same day's."""
    cal = BusinessCalendar("Europe/Moscow", dict.fromkeys(range(5), ((time(8), time(11, 10)),)))
    assert control(msk(2025, 11, 11, 10, 50), cal) == msk(2025, 11, 11, 11, 5)
    assert control(msk(2025, 11, 11, 10, 58), cal) == msk(2025, 11, 12, 11)
    # Before opening it is still the same day's control start.
    assert control(msk(2025, 11, 11, 7), cal) == msk(2025, 11, 11, 11)


def test_next_control_start_includes_the_instant_itself() -> None:
    assert CAL.next_control_start(msk(2025, 11, 11, 11), CONTROL) == msk(2025, 11, 11, 11)
    assert CAL.next_control_start(msk(2025, 11, 11, 11, 0, 1), CONTROL) == msk(2025, 11, 12, 11)


def test_holiday_tables_are_built_once_per_process() -> None:
    from leadwatch.calendar import _country_year

    ru().control_time(msk(2025, 11, 1, 19), REACTION, CONTROL)
    built = _country_year.cache_info().misses
    for _ in range(20):  # a Lambda rebuilding the calendar per lead
        ru().control_time(msk(2025, 11, 1, 19), REACTION, CONTROL)
    assert _country_year.cache_info().misses == built


def test_control_start_in_a_break_moves_to_the_next_opening() -> None:
    weekly = dict.fromkeys(range(5), ((time(9), time(10, 30)), (time(12), time(17))))
    cal = ru(weekly=weekly)
    assert control(msk(2025, 11, 11, 3), cal) == msk(2025, 11, 11, 12)


def test_override_short_day_with_shorten_minutes() -> None:
    cal = ru(overrides=[CalendarOverride(date(2025, 11, 11), "short", shorten_minutes=120)])
    assert closes_at(cal, date(2025, 11, 11)) == time(15)
    assert control(msk(2025, 11, 11, 14, 45), cal) == msk(2025, 11, 11, 15)
    assert control(msk(2025, 11, 11, 14, 50), cal) == msk(2025, 11, 12, 11)


def test_short_override_on_a_pre_holiday_day_is_final() -> None:
    cal = ru(overrides=[CalendarOverride(date(2025, 3, 7), "short", shorten_minutes=30)])
    assert closes_at(cal, date(2025, 3, 7)) == time(16, 30)


def test_working_override_on_a_holiday_eve_is_shortened() -> None:
    # Sun 2026-03-08 is International Women's Day; a tenant working Saturday the 7th.
    cal = ru(overrides=[CalendarOverride(date(2026, 3, 7), "working")])
    assert closes_at(cal, date(2026, 3, 7)) == time(16)
    assert closes_at(cal, date(2026, 3, 6)) == time(17)  # Friday is followed by a working day
    # Not an eve: a working Sunday before a moved day off.
    cal = ru(overrides=[CalendarOverride(date(2025, 11, 2), "working")])
    assert closes_at(cal, date(2025, 11, 2)) == time(17)


def test_a_public_holiday_the_tenant_works_does_not_shorten_its_eve() -> None:
    cal = ru(overrides=[CalendarOverride(date(2025, 11, 4), "working")])
    assert cal.is_working_day(date(2025, 11, 4))
    assert closes_at(cal, date(2025, 11, 1)) == time(17)
    assert control(msk(2025, 11, 1, 19), cal) == msk(2025, 11, 4, 11)


def test_override_validation() -> None:
    with pytest.raises(ValueError, match="no hours"):
        CalendarOverride(date(2025, 1, 9), "holiday", hours=((time(9), time(10)),))
    with pytest.raises(ValueError, match="needs hours"):
        CalendarOverride(date(2025, 1, 9), "short")
    with pytest.raises(ValueError, match="not both"):
        CalendarOverride(date(2025, 1, 9), "short", hours=((time(9), time(10)),), shorten_minutes=5)
    with pytest.raises(ValueError, match="ends before"):
        CalendarOverride(date(2025, 1, 9), "working", hours=((time(10), time(9)),))


def test_tenant_without_a_country_has_no_holidays() -> None:
    cal = BusinessCalendar("Asia/Yekaterinburg", WEEKDAYS, pre_holiday_minutes=60)
    tz = ZoneInfo("Asia/Yekaterinburg")
    assert cal.is_working_day(date(2025, 11, 3))
    assert cal.is_working_day(date(2026, 1, 1))
    assert not cal.is_working_day(date(2025, 11, 1))  # just a Saturday
    assert closes_at(cal, date(2025, 10, 31)) == time(17)
    got = cal.control_time(datetime(2025, 10, 31, 18, tzinfo=tz), REACTION, CONTROL)
    assert got == datetime(2025, 11, 3, 11, tzinfo=tz)


# ---- DST outside Russia -----------------------------------------------------------------


def test_dst_spring_forward_berlin() -> None:
    cal = BusinessCalendar("Europe/Berlin", WEEKDAYS, country="DE")
    got = cal.control_time(datetime(2025, 3, 28, 18, tzinfo=BERLIN), REACTION, CONTROL)
    assert got.astimezone(UTC) == datetime(2025, 3, 31, 9, tzinfo=UTC)
    assert got.utcoffset() == timedelta(hours=2)
    # Before the change the same wall time was an hour later in UTC.
    got = cal.control_time(datetime(2025, 3, 21, 18, tzinfo=BERLIN), REACTION, CONTROL)
    assert got.astimezone(UTC) == datetime(2025, 3, 24, 10, tzinfo=UTC)


def test_dst_fall_back_new_york() -> None:
    cal = BusinessCalendar("America/New_York", WEEKDAYS, country="US", subdivision="NY")
    got = cal.control_time(datetime(2025, 10, 31, 18, tzinfo=NEW_YORK), REACTION, CONTROL)
    assert got.astimezone(UTC) == datetime(2025, 11, 3, 16, tzinfo=UTC)
    assert got.utcoffset() == timedelta(hours=-5)
    # Tue 2025-11-04 is Election Day in New York: Monday evening -> Wednesday.
    got = cal.control_time(datetime(2025, 11, 3, 18, tzinfo=NEW_YORK), REACTION, CONTROL)
    assert got.astimezone(UTC) == datetime(2025, 11, 5, 16, tzinfo=UTC)


def test_working_time_is_real_time_across_the_fall_back_night() -> None:
    cal = BusinessCalendar("America/New_York", {6: ((time(0), time(3)),)})
    sunday = date(2025, 11, 2)
    (start, end), *_ = cal.intervals(sunday)
    assert cal.working_time_between(start, end) == timedelta(hours=4)
    # 01:30 is ambiguous: fold=0 picks the first (EDT) one.
    got = cal.next_control_start(start, time(1, 30))
    assert got.astimezone(UTC) == datetime(2025, 11, 2, 5, 30, tzinfo=UTC)
    # 15 real minutes from 01:50 EDT is 01:05 EST.
    created = datetime(2025, 11, 2, 5, 50, tzinfo=UTC)
    got = cal.control_time(created, REACTION, time(0))
    assert got.astimezone(UTC) == datetime(2025, 11, 2, 6, 5, tzinfo=UTC)
    assert (got.hour, got.minute, got.utcoffset()) == (1, 5, timedelta(hours=-5))


def test_nonexistent_local_times_in_the_spring_gap() -> None:
    cal = BusinessCalendar("Europe/Berlin", {6: ((time(1), time(4)),), 0: ((time(2), time(3)),)})
    sunday = date(2025, 3, 30)
    (start, end), *_ = cal.intervals(sunday)
    assert cal.working_time_between(start, end) == timedelta(hours=2)
    # 02:30 does not exist; read with fold=0 it is 01:30 UTC, i.e. 03:30 CEST.
    got = cal.next_control_start(start, time(2, 30))
    assert got.astimezone(UTC) == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)
    assert (got.hour, got.minute) == (3, 30)
    # An interval swallowed by a gap leaves no working time. (Berlin's gap is on a
    # Sunday; a Monday 02:00-03:00 elsewhere in the year is ordinary.)
    assert cal.is_working_day(date(2025, 3, 31))
    cal = BusinessCalendar("Europe/Berlin", {6: ((time(2), time(3)),), 0: ((time(9), time(10)),)})
    assert not cal.is_working_day(sunday)


# ---- working time and working days ------------------------------------------------------


def test_working_time_between() -> None:
    between = CAL.working_time_between
    assert between(msk(2025, 11, 11, 12, 30), msk(2025, 11, 11, 14, 30)) == timedelta(hours=1)
    assert between(msk(2025, 11, 11, 16), msk(2025, 11, 12, 10)) == timedelta(hours=2)
    assert between(msk(2025, 11, 11, 0), msk(2025, 11, 12, 0)) == timedelta(hours=7)
    assert between(msk(2025, 11, 14, 16), msk(2025, 11, 17, 10)) == timedelta(hours=2)  # weekend
    # Sat Nov 1 (09-13, 14-16), then Nov 2-4 off, then Wed Nov 5 until 10:00.
    assert between(msk(2025, 11, 1, 15), msk(2025, 11, 5, 10)) == timedelta(hours=2)
    assert between(msk(2025, 11, 11, 13), msk(2025, 11, 11, 14)) == timedelta(0)  # lunch
    assert between(msk(2025, 11, 12), msk(2025, 11, 11)) == timedelta(0)  # reversed
    assert between(msk(2025, 11, 11, 10), msk(2025, 11, 11, 10)) == timedelta(0)


def test_add_working_days() -> None:
    add = CAL.add_working_days
    assert add(date(2025, 11, 14), 1) == date(2025, 11, 17)  # Fri + 1 -> Mon
    assert add(date(2025, 11, 14), 0) == date(2025, 11, 14)
    assert add(date(2025, 11, 15), 0) == date(2025, 11, 17)  # Sat -> Mon
    assert add(date(2025, 11, 15), 1) == date(2025, 11, 17)
    assert add(date(2025, 11, 15), 2) == date(2025, 11, 18)
    assert add(date(2025, 10, 31), 1) == date(2025, 11, 1)  # the working Saturday
    assert add(date(2025, 11, 1), 1) == date(2025, 11, 5)  # over Nov 2-4
    assert add(date(2025, 12, 30), 1) == date(2026, 1, 12)  # over the New Year break
    assert add(date(2025, 11, 10), 5) == date(2025, 11, 17)
    with pytest.raises(ValueError):
        add(date(2025, 11, 10), -1)


def test_working_days_inclusive() -> None:
    assert CAL.working_days(date(2025, 11, 14), date(2025, 11, 17)) == [
        date(2025, 11, 14),
        date(2025, 11, 17),
    ]
    assert CAL.working_days(date(2025, 11, 17), date(2025, 11, 14)) == []


# ---- from the tenant configuration, and purity -------------------------------------------


def test_calendar_from_config() -> None:
    from leadwatch.config import CalendarConfig

    cfg = CalendarConfig.model_validate(
        {
            "timezone": "Europe/Moscow",
            "country": "RU",
            "hours": {day: ["09:00-13:00", "14:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
            "overrides": [
                {"date": "2025-11-12", "kind": "holiday"},
                {"date": "2025-11-15", "kind": "working", "hours": ["10:00-14:00"]},
                {"date": "2025-11-18", "kind": "short", "shorten_minutes": 90},
            ],
        }
    )
    cal = calendar_from_config(cfg)
    assert cal.tz == MSK
    assert closes_at(cal, date(2025, 11, 1)) == time(16)  # RU default: 60 minutes
    assert not cal.is_working_day(date(2025, 11, 12))
    assert cal.intervals(date(2025, 11, 15)) == [(msk(2025, 11, 15, 10), msk(2025, 11, 15, 14))]
    assert closes_at(cal, date(2025, 11, 18)) == time(15, 30)
    assert control(msk(2025, 11, 11, 17, 30), cal) == msk(2025, 11, 13, 11)


def test_workflows_calendar_is_pure() -> None:
    source = Path(__file__).resolve().parents[2] / "leadwatch" / "calendar.py"
    tree = ast.parse(source.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "collections", "dataclasses", "datetime", "functools", "itertools"} | {
        "typing",
        "zoneinfo",
        "holidays",
    }
    text = source.read_text()
    assert ".now(" not in text and "time.time(" not in text


# ---- properties ----------------------------------------------------------------------------


def _every_day(*intervals: tuple[time, time]) -> dict[int, tuple[tuple[time, time], ...]]:
    return dict.fromkeys(range(7), intervals)


# (calendar, control start): several zones, DST rules and hour layouts.
LAYOUTS = [
    (CAL, time(11)),
    (
        BusinessCalendar(
            "Europe/Berlin",
            dict.fromkeys(range(5), ((time(8), time(12)), (time(12, 30), time(16, 30)))),
            "DE",
        ),
        time(11),
    ),
    (
        BusinessCalendar(
            "America/New_York",
            dict.fromkeys(range(5), ((time(9), time(17)),)) | {5: ((time(10), time(14)),)},
            "US",
            "NY",
        ),
        time(9, 30),
    ),
    # Half-hour DST shift at 02:00; the control start falls in the gap once a year.
    (
        BusinessCalendar("Australia/Lord_Howe", _every_day((time(0), time(2, 30)), (time(3), time(23, 59)))),
        time(2, 15),
    ),
    # Opens after the control start: it is clamped to the opening.
    (ru(weekly=dict.fromkeys(range(5), ((time(12), time(16)),))), time(11)),
    # The control start lies in the day's last minutes (the does-not-fit rule matters).
    (
        BusinessCalendar("Europe/Berlin", dict.fromkeys(range(6), ((time(8), time(11, 10)),)), "DE"),
        time(11),
    ),
    # Night shift across a DST change, in the Americas.
    (
        BusinessCalendar("America/Sao_Paulo", _every_day((time(0), time(6)), (time(20), time(23, 59))), "BR"),
        time(1),
    ),
]

SPAN_START, SPAN_END = datetime(2024, 1, 1), datetime(2027, 12, 31)
REACTIONS = st.sampled_from([0, 1, 15, 15, 15, 60, 180, 420]).map(lambda m: timedelta(minutes=m))
layouts = st.sampled_from(LAYOUTS)


@st.composite
def instants(draw: st.DrawFn, cal: BusinessCalendar, start: time) -> datetime:
    """Any instant of 2024-2027, or one near an opening, a close or the control start."""
    moment = draw(st.datetimes(min_value=SPAN_START, max_value=SPAN_END, timezones=st.just(UTC)))
    if draw(st.booleans()):
        day = moment.astimezone(cal.tz).date()
        edges = [edge.astimezone(UTC) for span in cal.intervals(day) for edge in span]
        edge = draw(st.sampled_from([*edges, wall(day, start, cal.tz)]))
        offset = draw(st.one_of(st.sampled_from([-60, -1, 0, 0, 1, 60]), st.integers(-3600, 3600)))
        moment = edge + timedelta(seconds=offset)
    return moment


def in_working_time_or_at_close(cal: BusinessCalendar, moment: datetime) -> bool:
    """Inside working time, a closing instant included."""
    day = moment.astimezone(cal.tz).date()
    return cal.is_working_time(moment) or any(end == moment for _, end in cal.intervals(day))


def handled_in_hours(cal: BusinessCalendar, created: datetime, reaction: timedelta) -> bool:
    """Between the day's opening and last close, with the reaction fitting before that close."""
    spans = cal.intervals(created.astimezone(cal.tz).date())
    if not spans or not spans[0][0] <= created < spans[-1][1]:
        return False
    return cal.working_time_between(created, spans[-1][1]) >= reaction


PROPERTY = settings(
    max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY
@given(data=st.data(), layout=layouts, reaction=REACTIONS)
def test_control_time_is_in_working_time_and_never_before_the_lead(
    data: st.DataObject, layout: tuple[BusinessCalendar, time], reaction: timedelta
) -> None:
    cal, start = layout
    created = data.draw(instants(cal, start))
    got = cal.control_time(created, reaction, start)
    assert got.tzinfo == cal.tz
    assert got >= created
    assert in_working_time_or_at_close(cal, got)
    if handled_in_hours(cal, created, reaction):
        assert cal.working_time_between(created, got) == reaction
    else:
        # Carried over: a control start, or the opening it was clamped to...
        day = got.astimezone(cal.tz).date()
        spans = cal.intervals(created.astimezone(cal.tz).date())
        if spans and spans[0][0] <= created < spans[-1][1]:
            # ... of the next working day, for a lead in hours whose reaction does not fit.
            assert day > created.astimezone(cal.tz).date()
        assert got == wall(day, start, cal.tz) or got in [s for s, _ in cal.intervals(day)]
        assert got >= wall(day, start, cal.tz)
        # ... on the first working day that offers one after the lead.
        first = created.astimezone(cal.tz).date() + timedelta(days=1)
        for skipped in (first + timedelta(days=i) for i in range((day - first).days)):
            assert not any(end > wall(skipped, start, cal.tz) for _, end in cal.intervals(skipped))


@PROPERTY
@given(data=st.data(), layout=layouts, reaction=REACTIONS)
def test_a_later_lead_is_controlled_earlier_only_in_the_documented_way(
    data: st.DataObject, layout: tuple[BusinessCalendar, time], reaction: timedelta
) -> None:
    cal, start = layout
    t1 = data.draw(instants(cal, start))
    gap = data.draw(st.one_of(st.integers(0, 3600), st.integers(0, 4 * 24 * 3600)))
    t2 = t1 + timedelta(seconds=gap)
    c1, c2 = cal.control_time(t1, reaction, start), cal.control_time(t2, reaction, start)
    in1, in2 = handled_in_hours(cal, t1, reaction), handled_in_hours(cal, t2, reaction)
    if in1 == in2:
        assert c1 <= c2
    if c2 < c1:
        # t1 was carried over to a control start, and t2 arrived in hours before it.
        assert not in1 and in2 and t2 < c1


def test_the_documented_inversion_happens() -> None:
    early, late = msk(2025, 11, 12, 3), msk(2025, 11, 12, 10)
    assert control(early) == msk(2025, 11, 12, 11)
    assert control(late) == msk(2025, 11, 12, 10, 15) < control(early)
