"""Dialing discipline (docs/dialing.md), as pure decisions.

The plan: every lead is dialed `attempts_per_day` times on each of its first
`plan_days` working days, and at least `min_attempts` times in total before it
may be rejected. Day 1 of the plan is the local day of the lead's control time
(the moment the timeliness rule expects the first reaction), so a lead that
arrives in the evening or on a weekend starts its plan on the next working day;
a holiday is never a plan day, so the window stretches over it.

Every call attempt counts, answered or not; a call longer than `touch_seconds`
is a successful touch. Nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from fnmatch import fnmatchcase
from typing import Any, Protocol

from leadwatch.effects import Effect, Notify, RecordViolation, Violation
from leadwatch.events import Call, EntityRef
from workflows.dialing.messages import ReportView, rejection_line, rejection_message, report_message

VIOLATION_TYPE = "improper_rejection"
_ONE_DAY = timedelta(days=1)
_SEARCH_LIMIT_DAYS = 400  # a calendar with no working day in a year is a broken calendar
# A card whose rejection is this close to its creation was created in the rejected stage.
CREATED_REJECTED = timedelta(minutes=1)


class PlanCalendar(Protocol):
    def is_working_day(self, day: date) -> bool: ...

    def add_working_days(self, day: date, n: int) -> date: ...


@dataclass(frozen=True)
class DialingRules:
    attempts_per_day: int = 3
    plan_days: int = 5
    min_attempts: int = 15
    touch_seconds: int = 30
    report_time: time = time(18, 30)
    rejected_stages: frozenset[str] = frozenset()
    closed_stages: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, cfg: Any) -> DialingRules:
        """From a `leadwatch.config.DialingConfig` (duck-typed to keep workflows free of config I/O)."""
        return cls(
            attempts_per_day=cfg.attempts_per_day,
            plan_days=cfg.plan_days,
            min_attempts=cfg.min_attempts_before_rejection,
            touch_seconds=cfg.touch_seconds,
            report_time=cfg.report_time,
            rejected_stages=frozenset(cfg.rejected_stages or ()),
            closed_stages=frozenset(cfg.closed_stages or ()),
        )

    def is_touch(self, call: Call) -> bool:
        """A successful touch: the conversation lasted longer than the threshold (exactly 30 s is not)."""
        return call.duration > self.touch_seconds and call.answered is not False

    def is_rejected(self, stage: str) -> bool:
        return _matches(stage, self.rejected_stages)

    def is_finished(self, stage: str) -> bool:
        """Out of the plan: rejected or closed (won, converted): nobody has to dial it any more."""
        return _matches(stage, self.rejected_stages) or _matches(stage, self.closed_stages)


def _matches(stage: str, patterns: frozenset[str]) -> bool:
    """A stage id listed, or matching a listed pattern with `*` (Bitrix24 deal funnels number
    their stages per funnel: `C*:LOSE` is the lost stage of every funnel but the general one)."""
    if stage in patterns:
        return True
    return any("*" in pattern and fnmatchcase(stage, pattern) for pattern in patterns)


# ---------------------------------------------------------------------------- plan arithmetic


def first_plan_day(due_at: datetime, tz: Any) -> date:
    """Day 1 of a lead's plan: the local day of its control time (always a working day)."""
    return due_at.astimezone(tz).date()


def plan_days(first: date, calendar: PlanCalendar, rules: DialingRules) -> list[date]:
    """The working days of the plan, from day 1 on."""
    start = calendar.add_working_days(first, 0)
    days = [start]
    while len(days) < rules.plan_days:
        days.append(calendar.add_working_days(days[-1], 1))
    return days


def plan_starts_covering(day: date, calendar: PlanCalendar, rules: DialingRules) -> list[date]:
    """Every day 1 whose plan includes `day`: the last `plan_days` working days up to `day`.

    Empty when `day` is not a working day (no plan has a non-working day).
    """
    if not calendar.is_working_day(day):
        return []
    starts: list[date] = []
    current = day
    for _ in range(_SEARCH_LIMIT_DAYS + rules.plan_days):
        if calendar.is_working_day(current):
            starts.append(current)
            if len(starts) == rules.plan_days:
                break
        current -= _ONE_DAY
    return starts


def tells_more(call: Call, have: Call | None) -> bool:
    """Whether `call` says something about a call that `have` (what leadwatch holds) does not."""
    if have is None:
        return True
    return (
        bool(call.record_url and not have.record_url)
        or call.duration > have.duration
        or (call.answered is not None and have.answered is None)
    )


def merged_calls(calls: list[Call]) -> list[Call]:
    """One call per card and key, with what every path told of it (the activity webhook and the
    call-end webhook of one call often arrive in one batch): the longest duration, a recording,
    whether it was answered."""
    found: dict[tuple[Any, str], Call] = {}
    for call in calls:
        have = found.get((call.entity, call.key))
        if have is None:
            found[(call.entity, call.key)] = call
            continue
        found[(call.entity, call.key)] = replace(
            have if have.duration >= call.duration else call,
            record_url=have.record_url or call.record_url,
            answered=have.answered if have.answered is not None else call.answered,
        )
    return list(found.values())


def call_day(call: Call, tz: Any) -> date:
    """The local day an attempt counts under."""
    return call.started_at.astimezone(tz).date()


# ---------------------------------------------------------------------------- daily report


@dataclass(frozen=True)
class PlanLead:
    """One lead in its plan window on the report day, with its counts."""

    entity: EntityRef
    title: str
    manager: str | None
    stage: str
    first_day: date
    day_number: int  # 1..plan_days
    attempts_today: int
    attempts_total: int
    touches_total: int


@dataclass(frozen=True)
class Touch:
    """A successful touch: who called, how long, and where to listen to it."""

    key: str  # the call's key
    entity: EntityRef
    title: str
    manager: str | None
    started_at: datetime
    duration: int
    record_url: str | None


@dataclass(frozen=True)
class ManagerLine:
    manager: str | None
    in_plan: int
    compliant: int
    behind: int
    untouched: int


@dataclass
class DailyReport:
    day: date
    working_day: bool
    untouched: list[PlanLead] = field(default_factory=list)  # no attempt today
    behind: list[PlanLead] = field(default_factory=list)  # 1 .. attempts_per_day-1 today
    compliant: list[PlanLead] = field(default_factory=list)
    managers: list[ManagerLine] = field(default_factory=list)
    touches: list[Touch] = field(default_factory=list)

    @property
    def in_plan(self) -> int:
        return len(self.untouched) + len(self.behind) + len(self.compliant)

    def to_dict(self) -> dict[str, Any]:
        def lead(item: PlanLead) -> dict[str, Any]:
            return {
                "lead": item.entity.key,
                "title": item.title,
                "manager": item.manager,
                "stage": item.stage,
                "plan_day": item.day_number,
                "first_day": item.first_day.isoformat(),
                "attempts_today": item.attempts_today,
                "attempts_total": item.attempts_total,
                "touches_total": item.touches_total,
            }

        return {
            "day": self.day.isoformat(),
            "working_day": self.working_day,
            "in_plan": self.in_plan,
            "untouched": [lead(i) for i in self.untouched],
            "behind": [lead(i) for i in self.behind],
            "compliant": [lead(i) for i in self.compliant],
            "managers": [vars(m) for m in self.managers],
            "touches": [
                {
                    "lead": t.entity.key,
                    "title": t.title,
                    "manager": t.manager,
                    "started_at": t.started_at.isoformat(),
                    "duration": t.duration,
                    "record_url": t.record_url,
                }
                for t in self.touches
            ],
        }


def build_report(
    day: date,
    leads: Iterable[PlanLead],
    touches: Iterable[Touch],
    rules: DialingRules,
    *,
    working_day: bool = True,
) -> DailyReport:
    """Sort the leads of the plan window by today's attempts; finished leads (rejected, won) are out."""
    report = DailyReport(day=day, working_day=working_day)
    per_manager: dict[str | None, list[int]] = {}
    ordered = sorted(leads, key=lambda item: (item.manager or "", item.first_day, item.entity))
    for item in ordered:
        if rules.is_finished(item.stage):
            continue
        counts = per_manager.setdefault(item.manager, [0, 0, 0, 0])
        counts[0] += 1
        if item.attempts_today >= rules.attempts_per_day:
            report.compliant.append(item)
            counts[1] += 1
        elif item.attempts_today > 0:
            report.behind.append(item)
            counts[2] += 1
        else:
            report.untouched.append(item)
            counts[3] += 1
    report.managers = [
        ManagerLine(manager, *counts)
        for manager, counts in sorted(per_manager.items(), key=lambda pair: pair[0] or "")
    ]
    report.touches = sorted(touches, key=lambda t: (t.started_at, t.entity))
    return report


def render_report(report: DailyReport, view: ReportView, rules: DialingRules) -> str:
    """The report as Telegram HTML, in the tenant's language (workflows.dialing.messages)."""
    return report_message(report, view, rules.attempts_per_day, rules.plan_days)


def report_due(now: datetime, calendar: PlanCalendar, rules: DialingRules, tz: Any) -> date | None:
    """The day whose report should go out now: today, on a working day from the report time on."""
    local = now.astimezone(tz)
    if not calendar.is_working_day(local.date()) or local.time() < rules.report_time:
        return None
    return local.date()


# A report not sent on its day (an outage, a missed run) is still sent, late and with its date,
# for this many days back; older ones are history nobody acts on.
CATCH_UP_DAYS = 7


def reports_owed(
    now: datetime, last_sent: date | None, calendar: PlanCalendar, rules: DialingRules, tz: Any
) -> list[date]:
    """The days whose report should go out now, oldest first: working days after the last one
    sent (at most CATCH_UP_DAYS back), today only from its report time on. A tenant with no
    report sent yet starts with today's."""
    local = now.astimezone(tz)
    today = local.date()
    first = today if last_sent is None else max(last_sent + _ONE_DAY, today - timedelta(days=CATCH_UP_DAYS))
    owed = []
    day = first
    while day <= today:
        if calendar.is_working_day(day) and (day < today or local.time() >= rules.report_time):
            owed.append(day)
        day += _ONE_DAY
    return owed


def next_report_at(now: datetime, calendar: PlanCalendar, rules: DialingRules, tz: Any) -> datetime:
    """The next report moment after `now`: a working day's report time, in the tenant's zone."""
    local = now.astimezone(tz)
    day = local.date()
    if not (calendar.is_working_day(day) and local.time() < rules.report_time):
        day = (
            calendar.add_working_days(day, 1)
            if calendar.is_working_day(day)
            else _next_working(day, calendar)
        )
    return datetime.combine(day, rules.report_time, tz)


def _next_working(day: date, calendar: PlanCalendar) -> date:
    for _ in range(_SEARCH_LIMIT_DAYS):
        day += _ONE_DAY
        if calendar.is_working_day(day):
            return day
    raise ValueError("no working day within a year: the calendar is broken")


def report_effect_id(tenant: str, day: date, part: int) -> str:
    return f"report:dialing:{tenant}:{day.isoformat()}:{part}"


# ---------------------------------------------------------------------------- rejections


class DialingState(Protocol):
    tenant: str
    entity: EntityRef
    stage: str
    responsible: str | None
    title: str
    rejected_at: datetime | None
    rejection_checked: datetime | None


def observe_stage(state: Any, stage_changed_at: datetime | None, rules: DialingRules, now: datetime) -> Any:
    """Note when a card enters a rejected stage (and forget it when the card leaves it).

    `state` is a LeadState whose `stage` is already the card's new stage; the rejection
    moment is the CRM's stage-change time when it tells one.
    """
    if rules.is_rejected(state.stage):
        if state.rejected_at is None:
            moment = stage_changed_at or now
            if moment - state.created_at <= CREATED_REJECTED:
                # Born rejected (a robot's spam filter, an import): nobody moved it, nothing to judge.
                return replace(state, rejected_at=moment, rejection_checked=moment)
            return replace(state, rejected_at=moment)
        return state
    if state.rejected_at is not None or state.rejection_checked is not None:
        return replace(state, rejected_at=None, rejection_checked=None)
    return state


def needs_rejection_check(state: Any) -> bool:
    return state.rejected_at is not None and state.rejection_checked != state.rejected_at


def rejection_effects(
    state: Any, attempts: int, touches: int, rules: DialingRules, view: ReportView
) -> list[Effect]:
    """An improper rejection (fewer attempts than the minimum) is a violation and an alert; else nothing."""
    if state.rejected_at is None or attempts >= rules.min_attempts:
        return []
    stamp = int(state.rejected_at.timestamp())
    violation = Violation(
        violation_id=f"{VIOLATION_TYPE}:{state.entity.key}:{stamp}",
        type=VIOLATION_TYPE,
        entity=state.entity,
        manager=state.responsible,
        occurred_at=state.rejected_at,
        details={
            "stage": state.stage,
            "attempts": attempts,
            "touches": touches,
            "required": rules.min_attempts,
            "title": state.title,
        },
    )
    return [
        RecordViolation(violation),
        Notify(
            f"alert:{VIOLATION_TYPE}:{state.tenant}:{state.entity.key}:{stamp}",
            rejection_message(state, attempts, touches, rules.min_attempts, view),
            digest_line=rejection_line(state, attempts, rules.min_attempts, view),
        ),
    ]
