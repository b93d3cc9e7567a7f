"""A generated sales week: who sends a lead when, and what each manager does about it.

Deterministic for a seed. The plan also knows the truth (when each lead was
really processed), so the replay can check leadwatch's verdicts against it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from leadwatch.calendar import BusinessCalendar

MSK = ZoneInfo("Europe/Moscow")
# Wed 29 Oct .. Tue 4 Nov 2025 in Russia: nights, a working Saturday (1 Nov, shortened before the
# holiday), a Sunday, a moved day off (Mon 3 Nov) and a public holiday (Tue 4 Nov, Unity Day).
WEEK_START = datetime(2025, 10, 29, 0, 0, tzinfo=MSK)
DAYS = 7

FIRST_NAMES = [
    "Anna", "Boris", "Vera", "Gleb", "Daria", "Egor", "Zhanna", "Ilya", "Kira", "Lev",
    "Maria", "Nikita", "Olga", "Pavel", "Raisa", "Semyon", "Tatiana", "Ulyana", "Fyodor", "Yana",
]  # fmt: skip
LAST_NAMES = [
    "Ivanova", "Petrov", "Sokolova", "Orlov", "Volkova", "Lebedev", "Kozlova", "Novikov", "Morozova", "Popov",
    "Egorova", "Kuznetsov", "Pavlova", "Semenov", "Golubeva", "Vinogradov", "Bogdanova", "Vorobyov", "Fedorov", "Mikhailova",
]  # fmt: skip

# Share of a day's leads arriving in each hour (people write at night too, less).
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 1, 2, 3, 5, 8, 9, 9, 8, 8, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1]


@dataclass(frozen=True)
class Profile:
    name: str
    reaction_mean: float  # minutes, for a lead in working hours
    morning_delay: tuple[int, int]  # minutes after opening when night leads get processed
    forget: float  # share of leads left untouched until the next day


PROFILES = [
    Profile("sharp", 5.0, (5, 70), 0.02),
    Profile("steady", 9.0, (20, 120), 0.06),
    Profile("slow", 16.0, (60, 200), 0.15),
]


@dataclass(frozen=True)
class DialStyle:
    """How a manager works the dialing plan."""

    name: str
    per_day: tuple[int, ...]  # attempts on a plan day, drawn from these
    reject_on_day: int | None = None  # gives up on the lead after this plan day's calls


DIAL_STYLES = [
    DialStyle("three a day", (3, 3, 3, 4)),
    DialStyle("patchy", (3, 3, 2, 1, 0)),
    DialStyle("two, then junk", (2,), reject_on_day=2),
]


@dataclass(frozen=True)
class Manager:
    crm_id: str
    name: str
    profile: Profile
    dial: DialStyle = DIAL_STYLES[0]


@dataclass
class PlannedLead:
    key: str  # unique within the plan
    tenant: str
    title: str
    manager: Manager
    created_at: datetime
    processed_at: datetime | None
    by_call: bool  # processed by a call first (an activity) rather than a stage move
    crm_id: str | None = None  # filled by the replay
    calls: int = 0  # call attempts made on it by the end of the replay (see tally_calls)
    touches: int = 0
    rejected_at: datetime | None = None
    reason: str | None = None  # the rejection reason it is given (demo.rejections.REASONS), if any


@dataclass(frozen=True)
class PlannedCall:
    duration: int  # seconds of conversation; 0 when nobody answered
    answered: bool
    record_url: str | None


@dataclass(order=True)
class Action:
    at: datetime
    order: int
    kind: str = field(compare=False)  # "create" | "call" | "take" | "reject"
    lead: PlannedLead = field(compare=False)
    call: PlannedCall | None = field(default=None, compare=False)


def managers_for(tenant: str, first_id: int, count: int, rng: random.Random) -> list[Manager]:
    people = []
    for i in range(count):
        profile = PROFILES[0] if i % 3 == 0 else PROFILES[1] if i % 3 == 1 else PROFILES[2]
        name = f"{FIRST_NAMES[i % 20]} {LAST_NAMES[(i * 7 + len(tenant)) % 20]}"
        # Half dial by the book, a third are patchy, one in six dials twice and throws the lead out.
        dial = DIAL_STYLES[0] if i % 6 in (0, 2, 4) else DIAL_STYLES[1] if i % 6 in (1, 3) else DIAL_STYLES[2]
        people.append(Manager(str(first_id + i), name, profile, dial))
    rng.shuffle(people)
    return people


def _processing_time(
    created: datetime, manager: Manager, calendar: BusinessCalendar, rng: random.Random
) -> datetime:
    """When this manager gets to this lead (wall clock, in the tenant's zone)."""
    profile = manager.profile
    if calendar.is_working_time(created) and rng.random() >= profile.forget:
        candidate = created + timedelta(minutes=rng.expovariate(1 / profile.reaction_mean) + 0.5)
        if calendar.is_working_time(candidate):
            return candidate
    # A night lead, a forgotten one, or one that spills past closing: a later morning.
    day = created.astimezone(calendar.tz).date()
    while True:
        intervals = calendar.intervals(day)
        if intervals and intervals[0][0] > created:
            break
        day += timedelta(days=1)
    opening = intervals[0][0]
    low, high = profile.morning_delay
    return opening + timedelta(minutes=rng.uniform(low, high))


def plan_week(
    calendar: BusinessCalendar,
    tenants: dict[str, list[Manager]],
    leads_per_day: int,
    seed: int,
    start: datetime = WEEK_START,
    days: int = DAYS,
) -> list[PlannedLead]:
    rng = random.Random(seed)
    leads: list[PlannedLead] = []
    for tenant, people in tenants.items():
        turn = 0
        for offset in range(days):
            day: date = (start + timedelta(days=offset)).date()
            busy = calendar.is_working_day(day)
            count = max(1, round(leads_per_day * (1.0 if busy else 0.4) * rng.uniform(0.85, 1.15)))
            hours = rng.choices(range(24), weights=HOUR_WEIGHTS, k=count)
            for n, hour in enumerate(sorted(hours)):
                created = datetime.combine(day, time(hour), MSK) + timedelta(seconds=rng.randrange(3600))
                manager = people[turn % len(people)]
                turn += 1
                processed = _processing_time(created, manager, calendar, rng)
                if rng.random() < 0.01:
                    processed = None  # never touched at all
                leads.append(
                    PlannedLead(
                        key=f"{tenant}-{day:%m%d}-{n:03d}",
                        tenant=tenant,
                        title=f"Request {day:%d.%m} #{n + 1}: {rng.choice(PRODUCTS)}",
                        manager=manager,
                        created_at=created,
                        processed_at=processed,
                        by_call=rng.random() < 0.4,
                    )
                )
    return leads


PRODUCTS = ["windows", "a kitchen", "a sofa", "doors", "a wardrobe", "flooring", "blinds", "a bathroom"]


def _a_call(rng: random.Random, lead: PlannedLead, n: int) -> PlannedCall:
    # About a third of dials reach the client; a short "call back later" is no successful touch.
    if rng.random() < 0.35:
        duration = rng.choice([rng.randint(8, 30), rng.randint(31, 420), rng.randint(31, 420)])
        return PlannedCall(duration, True, f"https://records.example/{lead.key}/{n}.mp3")
    return PlannedCall(0, False, None)


def actions_for(
    leads: list[PlannedLead],
    calendar: BusinessCalendar | None = None,
    *,
    dialing_until: datetime | None = None,
    seed: int = 7,
    plan_days: int = 5,
) -> list[Action]:
    """What happens to each lead: created, processed (a call or a stage move), and, with a
    calendar, dialed by its manager's style on the working days of its plan until `dialing_until`."""
    rng = random.Random(seed + 2)
    actions: list[Action] = []
    for index, lead in enumerate(leads):
        order = index * 1000
        actions.append(Action(lead.created_at, order, "create", lead))
        if lead.processed_at is None:
            continue
        first_call = None
        if lead.by_call:
            first_call = _a_call(rng, lead, 0)
            actions.append(Action(lead.processed_at, order + 1, "call", lead, first_call))
            # After the call the card moves on too, a little later.
            actions.append(Action(lead.processed_at + timedelta(minutes=7), order + 2, "take", lead))
        else:
            actions.append(Action(lead.processed_at, order + 1, "take", lead))
        if calendar is None:
            continue
        actions += _dialing(lead, calendar, rng, order + 3, first_call is not None, dialing_until, plan_days)
    actions.sort()
    return actions


def _dialing(
    lead: PlannedLead,
    calendar: BusinessCalendar,
    rng: random.Random,
    order: int,
    called_already: bool,
    until: datetime | None,
    plan_days: int,
) -> list[Action]:
    assert lead.processed_at is not None
    style = lead.manager.dial
    due = calendar.control_time(lead.created_at, timedelta(minutes=15), time(11))
    day = calendar.add_working_days(due.astimezone(calendar.tz).date(), 0)
    actions: list[Action] = []
    for number in range(1, plan_days + 1):
        if number > 1:
            day = calendar.add_working_days(day, 1)
        intervals = calendar.intervals(day)
        # Calls start once the manager got to the lead, and stop 15 minutes before closing.
        start = max(intervals[0][0], lead.processed_at + timedelta(minutes=2))
        end = intervals[-1][1] - timedelta(minutes=15)
        wanted = rng.choice(style.per_day) - (1 if called_already and number == 1 else 0)
        if end <= start or (until is not None and end > until):
            break
        moments = sorted(start + (end - start) * rng.random() for _ in range(max(wanted, 0)))
        for moment in moments:
            if not calendar.is_working_time(moment):  # the lunch break
                moment = next(b for b, _ in intervals if b > moment) + timedelta(minutes=rng.randint(1, 20))
            call = _a_call(rng, lead, len(actions) + 1)
            actions.append(Action(moment, order + len(actions), "call", lead, call))
        if style.reject_on_day == number:
            last = max([a.at for a in actions] + [start])
            actions.append(Action(last + timedelta(minutes=5), order + len(actions), "reject", lead))
            break
    return actions


def tally_calls(actions: list[Action], until: datetime) -> None:
    """The truth of dialing: the calls, touches and rejections that happen by `until`, on each lead."""
    for action in actions:
        action.lead.calls = action.lead.touches = 0
        action.lead.rejected_at = None
    for action in actions:
        if action.at > until:
            continue
        if action.kind == "call" and action.call is not None:
            action.lead.calls += 1
            action.lead.touches += action.call.duration > 30
        elif action.kind == "reject":
            action.lead.rejected_at = action.at


def on_time_by_plan(
    lead: PlannedLead,
    calendar: BusinessCalendar,
    reaction: timedelta = timedelta(minutes=15),
    start: time = time(11),
) -> bool:
    """The truth a verdict is checked against: processed no later than the control time, in whole
    seconds as the CRMs record the moment (a call 0.6 s after the control time is logged at it)."""
    due = calendar.control_time(lead.created_at, reaction, start)
    return lead.processed_at is not None and lead.processed_at.replace(microsecond=0) <= due


@dataclass
class DemoWeek:
    """The generated week the demo, the fault replay's siblings and the benchmarks replay."""

    calendar: BusinessCalendar
    teams: dict[str, list[Manager]]
    leads: list[PlannedLead]
    actions: list[Action]
    end: datetime  # the day after the last generated day
    settle_until: datetime  # five minutes after the last control time: every verdict is due by then

    @property
    def names(self) -> dict[str, str]:
        return {m.crm_id: m.name for people in self.teams.values() for m in people}


def demo_calendar() -> BusinessCalendar:
    """The demo tenants' calendar: Moscow, 9-13 and 14-18 on weekdays, Russian holidays."""
    hours = [(time(9), time(13)), (time(14), time(18))]
    return BusinessCalendar(
        "Europe/Moscow", {d: hours for d in range(5)}, country="RU", pre_holiday_minutes=60
    )


def demo_week(
    tenants: dict[str, int],
    *,
    seed: int = 7,
    leads_per_day: int = 40,
    managers: int = 20,
    days: int = DAYS,
    dialing: bool = True,
) -> DemoWeek:
    """The week for `tenants` (tenant -> the CRM id of its first manager): managers, leads and
    what happens to each; `dialing` adds the managers' dialing of each lead over its plan days."""
    calendar = demo_calendar()
    rng = random.Random(seed)
    teams = {tenant: managers_for(tenant, first_id, managers, rng) for tenant, first_id in tenants.items()}
    leads = plan_week(calendar, teams, leads_per_day, seed, days=days)
    end = WEEK_START + timedelta(days=days)
    actions = actions_for(leads, calendar if dialing else None, dialing_until=end, seed=seed)
    # Leads of the last days fall due later (after a holiday: the next working day 11:00).
    settle_until = max(
        calendar.control_time(lead.created_at, timedelta(minutes=15), time(11)) for lead in leads
    ) + timedelta(minutes=5)
    return DemoWeek(calendar, teams, leads, actions, end, settle_until)
