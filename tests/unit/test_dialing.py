"""Dialing discipline, pure: plan arithmetic over the business calendar, the touch threshold,
the daily report's sorting and text, and improper rejections."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadwatch.calendar import BusinessCalendar, CalendarOverride
from leadwatch.cards import LeadState
from leadwatch.effects import Notify, RecordViolation
from leadwatch.events import Call, EntityRef, EntityType
from leadwatch.messages import StaticNames, Writer
from workflows.dialing import rules as dialing

MSK = ZoneInfo("Europe/Moscow")
HOURS = [(time(9), time(13)), (time(14), time(18))]
# Russia, November 2025: Tue 4 Nov is a public holiday (Unity Day), Mon 3 Nov a moved day off.
CALENDAR = BusinessCalendar(
    "Europe/Moscow", {d: HOURS for d in range(5)}, country="RU", pre_holiday_minutes=60
)
ROOT_EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"
RULES = dialing.DialingRules(rejected_stages=frozenset({"JUNK"}), closed_stages=frozenset({"CONVERTED"}))


def lead(n: int = 1, **extra) -> EntityRef:
    return EntityRef(EntityType.LEAD, str(n))


def call(duration: int, answered: bool | None = True, **extra) -> Call:
    return Call(
        key=extra.pop("key", "act1"),
        entity=extra.pop("entity", lead()),
        direction="out",
        manager="7",
        started_at=extra.pop("started_at", datetime(2025, 11, 11, 9, 0, tzinfo=UTC)),
        duration=duration,
        answered=answered,
        **extra,
    )


# ---------------------------------------------------------------------------- touches


@pytest.mark.parametrize(
    ("seconds", "touch"), [(0, False), (29, False), (30, False), (31, True), (600, True)]
)
def test_a_touch_is_a_call_longer_than_30_seconds(seconds: int, touch: bool) -> None:
    assert RULES.is_touch(call(seconds)) is touch


def test_a_call_the_telephony_calls_failed_is_no_touch_whatever_its_length() -> None:
    assert not RULES.is_touch(call(45, answered=False))
    assert RULES.is_touch(call(45, answered=None))  # a call note or activity that does not say


def test_the_threshold_is_the_tenants() -> None:
    strict = dialing.DialingRules(touch_seconds=60)
    assert not strict.is_touch(call(60))
    assert strict.is_touch(call(61))


# ---------------------------------------------------------------------------- plan windows


def test_plan_of_a_monday_lead_is_monday_to_friday() -> None:
    days = dialing.plan_days(date(2025, 11, 10), CALENDAR, RULES)
    assert days == [date(2025, 11, d) for d in (10, 11, 12, 13, 14)]


def test_plan_stretches_over_the_weekend() -> None:
    days = dialing.plan_days(date(2025, 11, 13), CALENDAR, RULES)  # Thursday
    assert days == [
        date(2025, 11, 13),
        date(2025, 11, 14),
        date(2025, 11, 17),
        date(2025, 11, 18),
        date(2025, 11, 19),
    ]


def test_plan_stretches_over_the_holidays() -> None:
    # Fri 31 Oct, then Sat 1 Nov (a working Saturday in RU 2025), Mon 3 and Tue 4 Nov off.
    days = dialing.plan_days(date(2025, 10, 31), CALENDAR, RULES)
    assert date(2025, 11, 3) not in days and date(2025, 11, 4) not in days
    assert days[0] == date(2025, 10, 31)
    assert days[-1] == date(2025, 11, 7)
    assert all(CALENDAR.is_working_day(d) for d in days)


def test_a_tenant_holiday_override_is_no_plan_day() -> None:
    calendar = BusinessCalendar(
        "Europe/Moscow",
        {d: HOURS for d in range(5)},
        overrides=[CalendarOverride(date(2025, 11, 12), "holiday")],
    )
    days = dialing.plan_days(date(2025, 11, 10), calendar, RULES)
    assert days == [
        date(2025, 11, 10),
        date(2025, 11, 11),
        date(2025, 11, 13),
        date(2025, 11, 14),
        date(2025, 11, 17),
    ]


def test_day_one_is_the_day_of_the_control_time() -> None:
    morning = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)  # Tuesday, due 10:15 the same day
    due = CALENDAR.control_time(morning, timedelta(minutes=15), time(11))
    assert dialing.first_plan_day(due, MSK) == date(2025, 11, 11)
    evening = datetime(2025, 11, 11, 17, 50, tzinfo=MSK)  # too late to react today: Wednesday 11:00
    due = CALENDAR.control_time(evening, timedelta(minutes=15), time(11))
    assert dialing.first_plan_day(due, MSK) == date(2025, 11, 12)
    friday_night = datetime(2025, 11, 14, 21, 0, tzinfo=MSK)
    due = CALENDAR.control_time(friday_night, timedelta(minutes=15), time(11))
    assert dialing.first_plan_day(due, MSK) == date(2025, 11, 17)  # Monday


def test_the_window_on_a_day_is_the_last_five_working_days() -> None:
    starts = dialing.plan_starts_covering(date(2025, 11, 17), CALENDAR, RULES)  # Monday
    assert starts == [date(2025, 11, d) for d in (17, 14, 13, 12, 11)]


def test_no_window_on_a_day_off() -> None:
    assert dialing.plan_starts_covering(date(2025, 11, 15), CALENDAR, RULES) == []  # Saturday
    assert dialing.plan_starts_covering(date(2025, 11, 4), CALENDAR, RULES) == []  # Unity Day


working_days = st.dates(min_value=date(2024, 1, 1), max_value=date(2027, 12, 31)).filter(
    CALENDAR.is_working_day
)


@settings(max_examples=150, deadline=None)
@given(first=working_days, plan_length=st.integers(min_value=1, max_value=10))
def test_a_plan_day_is_covered_by_exactly_the_plans_that_hold_it(first: date, plan_length: int) -> None:
    rules = dialing.DialingRules(plan_days=plan_length)
    days = dialing.plan_days(first, CALENDAR, rules)
    assert len(days) == plan_length == len(set(days))
    assert days == sorted(days) and all(CALENDAR.is_working_day(d) for d in days)
    # Nothing skipped: every working day between the first and the last is in the plan.
    assert days == CALENDAR.working_days(days[0], days[-1])
    for day in days:
        assert first in dialing.plan_starts_covering(day, CALENDAR, rules)
    after = CALENDAR.add_working_days(days[-1], 1)
    assert first not in dialing.plan_starts_covering(after, CALENDAR, rules)


# ---------------------------------------------------------------------------- the daily report


def plan_lead(n: int, today: int, manager: str = "7", stage: str = "IN_PROCESS", total: int | None = None):
    return dialing.PlanLead(
        entity=lead(n),
        title=f"Lead {n}",
        manager=manager,
        stage=stage,
        first_day=date(2025, 11, 10),
        day_number=2,
        attempts_today=today,
        attempts_total=today if total is None else total,
        touches_total=0,
    )


def test_report_sorts_leads_by_todays_attempts_and_counts_per_manager() -> None:
    leads = [
        plan_lead(1, 0),
        plan_lead(2, 1),
        plan_lead(3, 2),
        plan_lead(4, 3),
        plan_lead(5, 5, manager="8"),
        plan_lead(6, 0, manager="8"),
        plan_lead(7, 0, stage="JUNK"),  # rejected: out of the plan
        plan_lead(8, 1, stage="CONVERTED"),  # won: out of the plan
    ]
    report = dialing.build_report(date(2025, 11, 11), leads, [], RULES)
    assert [i.entity.id for i in report.untouched] == ["1", "6"]
    assert [i.entity.id for i in report.behind] == ["2", "3"]
    assert [i.entity.id for i in report.compliant] == ["4", "5"]
    assert report.in_plan == 6
    assert report.managers == [
        dialing.ManagerLine("7", in_plan=4, compliant=1, behind=2, untouched=1),
        dialing.ManagerLine("8", in_plan=2, compliant=1, behind=0, untouched=1),
    ]


VIEW = dialing.ReportView(
    card_url=lambda e: f"https://crm.example/lead/{e.id}/?a=1&b=2",
    writer=Writer("en", MSK, StaticNames({"7": "Anna <Boss> & Co"})),
)


def test_report_text_escapes_names_and_links_recordings() -> None:
    touch = dialing.Touch(
        key="act4",
        entity=lead(4),
        title="Pipes & <valves>",
        manager="7",
        started_at=datetime(2025, 11, 11, 12, 5, tzinfo=MSK),
        duration=95,
        record_url="https://records.example/1.mp3?x=1&y=2",
    )
    report = dialing.build_report(date(2025, 11, 11), [plan_lead(1, 0), plan_lead(2, 1)], [touch], RULES)
    text = dialing.render_report(report, VIEW, RULES)
    assert "Anna &lt;Boss&gt; &amp; Co" in text
    assert "Pipes &amp; &lt;valves&gt;" in text
    assert 'href="https://records.example/1.mp3?x=1&amp;y=2">recording</a>' in text
    assert "12:05" in text and "1:35" in text
    assert "1 of 3 today" in text
    # Balanced markup: every opened tag is closed.
    for tag in ("a", "b"):
        assert len(re.findall(f"<{tag}[ >]", text)) == text.count(f"</{tag}>")


def test_report_due_from_the_report_time_on_working_days_only() -> None:
    tuesday = datetime(2025, 11, 11, 18, 29, tzinfo=MSK)
    assert dialing.report_due(tuesday, CALENDAR, RULES, MSK) is None
    assert dialing.report_due(tuesday + timedelta(minutes=1), CALENDAR, RULES, MSK) == date(2025, 11, 11)
    assert dialing.report_due(datetime(2025, 11, 4, 18, 45, tzinfo=MSK), CALENDAR, RULES, MSK) is None
    assert dialing.report_due(datetime(2025, 11, 15, 19, 0, tzinfo=MSK), CALENDAR, RULES, MSK) is None


# ---------------------------------------------------------------------------- rejections


def state(stage: str = "IN_PROCESS", **extra) -> LeadState:
    created = datetime(2025, 11, 10, 9, 0, tzinfo=UTC)
    return LeadState(
        "t",
        lead(9),
        created,
        created + timedelta(minutes=15),
        stage,
        "7",
        title="Acme",
        **extra,
    )


NOW = datetime(2025, 11, 12, 10, 0, tzinfo=UTC)


def test_entering_a_rejected_stage_notes_when() -> None:
    moved = datetime(2025, 11, 12, 9, 58, tzinfo=UTC)
    seen = dialing.observe_stage(state("JUNK"), moved, RULES, NOW)
    assert seen.rejected_at == moved
    assert dialing.needs_rejection_check(seen)
    # A later sighting of the same rejection keeps its moment.
    assert dialing.observe_stage(seen, NOW, RULES, NOW).rejected_at == moved
    # Checked, it needs no more checking; reopened, the mark goes; rejected again, a new check.
    checked = replace(seen, rejection_checked=moved)
    assert not dialing.needs_rejection_check(checked)
    reopened = dialing.observe_stage(replace(checked, stage="IN_PROCESS"), None, RULES, NOW)
    assert reopened.rejected_at is None and reopened.rejection_checked is None
    again = dialing.observe_stage(replace(reopened, stage="JUNK"), None, RULES, NOW)
    assert again.rejected_at == NOW and dialing.needs_rejection_check(again)


def test_a_stage_that_is_not_rejected_is_left_alone() -> None:
    plain = state("IN_PROCESS")
    assert dialing.observe_stage(plain, NOW, RULES, NOW) is plain


def test_improper_rejection_gives_one_violation_and_one_alert() -> None:
    rejected = state("JUNK", rejected_at=datetime(2025, 11, 12, 9, 58, tzinfo=UTC))
    effects = dialing.rejection_effects(rejected, 14, 2, RULES, VIEW)
    violations = [e for e in effects if isinstance(e, RecordViolation)]
    alerts = [e for e in effects if isinstance(e, Notify)]
    assert len(violations) == 1 and len(alerts) == 1
    violation = violations[0].violation
    assert violation.type == "improper_rejection"
    assert violation.manager == "7"
    assert violation.details["attempts"] == 14 and violation.details["required"] == 15
    assert "14 call attempts of the 15 required" in alerts[0].text
    assert "Anna &lt;Boss&gt; &amp; Co" in alerts[0].text
    assert 'href="https://crm.example/lead/9/?a=1&amp;b=2"' in alerts[0].text
    # The same rejection judged again yields the same ids: the ledger keeps one of each.
    assert [e.effect_id for e in dialing.rejection_effects(rejected, 3, 0, RULES, VIEW)] == [
        e.effect_id for e in effects
    ]


def test_a_proper_rejection_has_no_effects() -> None:
    rejected = state("JUNK", rejected_at=NOW)
    assert dialing.rejection_effects(rejected, 15, 0, RULES, VIEW) == []
    assert dialing.rejection_effects(rejected, 40, 3, RULES, VIEW) == []


def test_a_long_report_splits_under_4096_with_whole_tags() -> None:
    from leadwatch.telegram import MAX_MESSAGE_LENGTH, split_message, visible_length

    leads = [plan_lead(n, n % 3, manager=str(n % 7)) for n in range(400)]
    report = dialing.build_report(date(2025, 11, 11), leads, [], RULES)
    text = dialing.render_report(report, VIEW, RULES)
    parts = split_message(text)
    assert len(parts) > 1
    for part in parts:
        assert visible_length(part) <= MAX_MESSAGE_LENGTH
        for tag in ("a", "b"):
            assert len(re.findall(f"<{tag}[ >]", part)) == part.count(f"</{tag}>")
    # Nothing lost: every lead's link is in exactly one part.
    for n in range(400):
        if n % 3 < RULES.attempts_per_day:
            assert sum(f"/lead/{n}/?" in part for part in parts) == 1


def test_a_card_born_rejected_is_not_judged() -> None:
    """A robot's spam filter or an import creates cards straight in "junk": no manager moved them."""
    born = state("JUNK")
    seen = dialing.observe_stage(born, born.created_at + timedelta(seconds=20), RULES, NOW)
    assert seen.rejected_at is not None and not dialing.needs_rejection_check(seen)
    moved = dialing.observe_stage(born, born.created_at + timedelta(minutes=5), RULES, NOW)
    assert dialing.needs_rejection_check(moved)


def test_bitrix24_defaults_cover_deal_funnels_and_lead_statuses() -> None:
    from leadwatch.config import parse_tenant

    text = (ROOT_EXAMPLES / "acme-b24.yaml").read_text(encoding="utf-8")
    rules = dialing.DialingRules.from_config(parse_tenant(text, "acme-b24.yaml").dialing)
    for stage in ("JUNK", "LOSE", "C1:LOSE", "C12:LOSE"):
        assert rules.is_rejected(stage), stage
    for stage in ("CONVERTED", "WON", "C3:WON"):
        assert rules.is_finished(stage) and not rules.is_rejected(stage), stage
    for stage in ("NEW", "IN_PROCESS", "C1:NEW", "C1:PREPARATION", "LOSER", "XLOSE"):
        assert not rules.is_finished(stage), stage


def test_a_listed_stage_matches_exactly_unless_it_has_a_star() -> None:
    rules = dialing.DialingRules(rejected_stages=frozenset({"C*:APOLOGY", "5"}))
    assert rules.is_rejected("C2:APOLOGY") and rules.is_rejected("5")
    assert not rules.is_rejected("55") and not rules.is_rejected("C2:APOLOGY2")
