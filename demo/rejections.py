"""The rejections of the demo's sales week and of the weeks before it, with their reasons.

The week already has rejections: the managers who dial twice a day throw the lead into junk on
day 2 (demo.week). Here each rejection gets a reason, and a few more happen:

- one of those managers (the one with the most rejections in the audited week) has started
  picking reasons nobody reviews ("wrong contacts", "spam", "duplicate"): the weekly reason
  audit should catch them;
- the others give the reasons they always gave: mostly "not reached" or "too expensive", which
  are reviewed, and now and then one of the ignored kinds;
- the other managers now and then lose a client on a call ("too expensive", "chose a
  competitor"): the lead is rejected minutes after the call, and its later calls never happen.

The audit compares a manager's week with the weeks before, so the plan also has the rejections of
`HISTORY_WEEKS` earlier weeks, at the department's usual rates and reasons: only the rejections
(a lead comes in and is rejected minutes later), which the demo replays before the week.

Deterministic for a seed, and drawn from generators of their own: the week's calls, verdicts
and dialing plan are the same as without quality control, except the calls a declined lead
no longer gets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from demo.week import MSK, Action, DemoWeek, Manager, PlannedLead
from leadwatch.calendar import BusinessCalendar
from leadwatch.i18n import Lang
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT
from workflows.qc.audit import IsoWeek

# The weeks before the audited one that the demo replays the rejections of; the tenants' audit
# compares with exactly these (`audit.baseline_weeks`).
HISTORY_WEEKS = 2
# A successful talk that ends the lead: the client said no.
DECLINE_AFTER_TOUCH = 0.2
# Rejections a working day, on average, before this week: the managers who dial twice and give
# up reject about every other day, the others now and then.
DAILY_REJECTIONS = {"junker": 0.55, "other": 0.05}
TOUCH_SECONDS = 30  # dialing's default: a longer call is a conversation


@dataclass(frozen=True)
class Reason:
    """A rejection reason as both demo CRMs list it, and what the tenant files say of it."""

    key: str
    action: str  # "check" | "ignore"
    b24_id: str  # the item id of the Bitrix24 list field that holds the reason
    amo_id: int  # the amoCRM loss reason id
    names: dict[Lang, str]
    questions: dict[Lang, tuple[str, ...]] = field(default_factory=dict)
    answers: dict[Lang, tuple[str, ...]] = field(default_factory=dict)


REASONS: dict[str, Reason] = {
    r.key: r
    for r in (
        Reason(
            "price",
            "check",
            "44",
            9101,
            {"ru": "Дорого", "en": "Too expensive"},
            {
                "ru": ("Какую цену ждал клиент?", "Предлагали рассрочку или скидку?"),
                "en": (
                    "What price did the client expect?",
                    "Did you offer the instalment plan or a discount?",
                ),
            },
            {
                "ru": ("Рассчитывал примерно на 20% дешевле.", "Да, рассрочку на 6 месяцев, отказался."),
                "en": ("About 20% less than our quote.", "Yes, the 6-month instalment plan; still no."),
            },
        ),
        Reason(
            "no_answer",
            "check",
            "46",
            9102,
            {"ru": "Не дозвонились", "en": "Not reached"},
            {
                "ru": ("Сколько раз и когда вы звонили?", "Писали клиенту в мессенджер или на почту?"),
                "en": (
                    "How many times and when did you call?",
                    "Did you write to the client (messenger, e-mail)?",
                ),
            },
            {
                "ru": ("Два дня по два звонка, не берёт трубку.", "Нет, не писал."),
                "en": ("Two calls a day for two days, no answer.", "No, I did not."),
            },
        ),
        Reason(
            "competitor",
            "check",
            "48",
            9104,
            {"ru": "Выбрал конкурента", "en": "Chose a competitor"},
            {
                "ru": ("Кого выбрал клиент и почему?",),
                "en": ("Which company did the client choose, and why?",),
            },
            {
                "ru": ("Местную фирму: обещали монтаж на неделю раньше.",),
                "en": ("A local firm: they promised fitting a week earlier.",),
            },
        ),
        Reason("wrong_contacts", "ignore", "49", 9106, {"ru": "Неверные контакты", "en": "Wrong contacts"}),
        Reason("duplicate", "ignore", "47", 9105, {"ru": "Дубль", "en": "Duplicate"}),
        Reason("spam", "ignore", "45", 9103, {"ru": "Спам", "en": "Spam"}),
    )
}

# Who gives which reason, in a cycle of 20: a manager gives their usual reasons in their usual
# proportions, about 30% of the kinds nobody reviews (web forms bring duplicates and junk); the
# dumping manager's are all of those kinds.
USUAL_GIVE_UP = {"no_answer": 10, "price": 4, "wrong_contacts": 3, "duplicate": 2, "spam": 1}
USUAL_DECLINE = {"price": 9, "competitor": 5, "duplicate": 4, "spam": 2}
DUMPING = {"wrong_contacts": 2, "spam": 1, "duplicate": 1}


class Reasons:
    """Each manager's reasons, drawn in turn from a cycle where every kind is spread evenly (from a
    random point of it): any stretch of a manager's rejections shows their usual mix, as a
    manager's habits do. Drawn independently, a short history could by chance look like a rise."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self._cycles: dict[tuple[str, str], tuple[list[str], int]] = {}

    def draw(self, manager: Manager, tenant: str, kinds: dict[str, int]) -> str:
        key = (f"{tenant}:{manager.crm_id}", ",".join(sorted(kinds)))
        if key not in self._cycles:
            order = sorted(
                ((j + 0.5) / n, self.rng.random(), kind)
                for kind, n in sorted(kinds.items())
                for j in range(n)
            )
            self._cycles[key] = ([kind for _, _, kind in order], self.rng.randrange(len(order)))
        cycle, at = self._cycles[key]
        self._cycles[key] = (cycle, at + 1)
        return cycle[at % len(cycle)]


def is_junker(manager: Manager) -> bool:
    """One of the managers who dial twice a day and throw the lead out on day 2."""
    return manager.dial.reject_on_day is not None


@dataclass
class QcPlan:
    """The week's rejections with their reasons, who dumps leads, and the days before."""

    audited: IsoWeek  # the week the tenants' audit looks at during the replay
    dumpers: dict[str, Manager]  # tenant -> the manager who rejects into ignored reasons
    history: list[Action]  # create and reject actions of the days before the week, in time order
    history_leads: list[PlannedLead]
    declined: int = 0  # leads the week lost on a call (rejected minutes after it)

    @property
    def history_start(self) -> datetime:
        return datetime.combine(self.audited.shifted(-HISTORY_WEEKS).first_day, time(0), MSK)


def audited_week(week: DemoWeek) -> IsoWeek:
    """The ISO week the rejections of the demo fall in (Mon 27 Oct .. Sun 2 Nov for the default
    week: its Monday audit, 3 Nov 09:30, comes before the replay ends)."""
    return IsoWeek.of(min(a.at for a in week.actions).astimezone(MSK).date())


def plan_rejections(week: DemoWeek, seed: int) -> QcPlan:
    """Give the week's rejections their reasons, add the declined leads, and plan the days before
    (the HISTORY_WEEKS weeks before the audited one and the audited week's days before the demo's).
    Changes `week.actions` (reject actions added, the calls after them dropped)."""
    rng = random.Random(f"demo-qc:{seed}")
    decks = Reasons(random.Random(f"demo-qc-reasons:{seed}"))
    audited = audited_week(week)
    monday = datetime.combine(audited.first_day, time(0), MSK)
    dumpers = _dumpers(week, monday, monday + timedelta(days=7))
    history, history_leads = _history(week, audited, dumpers, rng, decks)
    declined = _add_declines(week, rng)
    for action in week.actions:  # in time order: each manager's deck in the order they reject
        if action.kind != "reject":
            continue
        lead = action.lead
        if lead.manager is dumpers.get(lead.tenant):
            kinds = DUMPING
        else:
            kinds = USUAL_GIVE_UP if is_junker(lead.manager) else USUAL_DECLINE
        lead.reason = decks.draw(lead.manager, lead.tenant, kinds)
    return QcPlan(audited, dumpers, history, history_leads, declined)


def _dumpers(week: DemoWeek, start: datetime, end: datetime) -> dict[str, Manager]:
    """Per tenant, the manager who gives up on day 2 with the most rejections in the audited week
    (then the lowest id, for a stable choice)."""
    found: dict[str, Manager] = {}
    for tenant, people in week.teams.items():
        counts = {
            m.crm_id: sum(
                1 for a in week.actions if a.kind == "reject" and a.lead.manager is m and start <= a.at < end
            )
            for m in people
            if is_junker(m)
        }
        if counts:
            best = max(counts.items(), key=lambda item: (item[1], -int(item[0])))[0]
            found[tenant] = next(m for m in people if m.crm_id == best)
    return found


def _add_declines(week: DemoWeek, rng: random.Random) -> int:
    """A lead whose client says no on a call of its dialing plan is rejected minutes later; the
    calls planned after that are not made."""
    by_lead: dict[str, list[Action]] = {}
    for action in week.actions:
        by_lead.setdefault(action.lead.key, []).append(action)
    dropped: set[int] = set()
    added: list[Action] = []
    for actions in by_lead.values():
        lead = actions[0].lead
        if is_junker(lead.manager):
            continue
        # Calls of the dialing plan only (a processing call comes before the card is taken).
        talks = [
            a
            for a in actions
            if a.kind == "call"
            and a.order % 1000 >= 3
            and a.call is not None
            and a.call.duration > TOUCH_SECONDS
        ]
        if not talks or rng.random() >= DECLINE_AFTER_TOUCH:
            continue
        talk = talks[0]
        at = talk.at + timedelta(minutes=rng.randint(3, 12))
        dropped.update(id(a) for a in actions if a.kind == "call" and a.at > talk.at)
        added.append(Action(at, (talk.order // 1000) * 1000 + 999, "reject", lead))
    week.actions[:] = sorted([a for a in week.actions if id(a) not in dropped] + added)
    return len(added)


def _history(
    week: DemoWeek, audited: IsoWeek, dumpers: dict[str, Manager], rng: random.Random, decks: Reasons
) -> tuple[list[Action], list[PlannedLead]]:
    """The rejections of the days before the demo's week, from HISTORY_WEEKS weeks before the audited
    one: each a lead that comes in on a working day and is rejected a few minutes later, with the
    reason its manager usually gives (the dumping manager has dumped since the audited week began)."""
    calendar = week.calendar
    actions: list[Action] = []
    leads: list[PlannedLead] = []
    first = audited.shifted(-HISTORY_WEEKS).first_day
    week_start = min(a.at for a in week.actions).astimezone(MSK).date()
    days = [first + timedelta(days=n) for n in range((week_start - first).days)]
    for day in days:
        if not calendar.is_working_day(day):
            continue
        for tenant, people in week.teams.items():
            for manager in sorted(people, key=lambda m: int(m.crm_id)):
                if rng.random() >= DAILY_REJECTIONS["junker" if is_junker(manager) else "other"]:
                    continue
                if manager is dumpers.get(tenant) and day >= audited.first_day:
                    kinds = DUMPING
                else:
                    kinds = USUAL_GIVE_UP if is_junker(manager) else USUAL_DECLINE
                created = _working_moment(calendar, day, rng)
                rejected = created + timedelta(minutes=rng.randint(4, 12))
                lead = PlannedLead(
                    key=f"{tenant}-h{day:%m%d}-{manager.crm_id}",
                    tenant=tenant,
                    title=f"Request {day:%d.%m}: {rng.choice(HISTORY_PRODUCTS)}",
                    manager=manager,
                    created_at=created,
                    processed_at=rejected,
                    by_call=False,
                    rejected_at=rejected,
                    reason=decks.draw(manager, tenant, kinds),
                )
                leads.append(lead)
                order = len(actions) * 10
                actions.append(Action(created, order, "create", lead))
                actions.append(Action(rejected, order + 1, "reject", lead))
    actions.sort()
    return actions, leads


HISTORY_PRODUCTS = ["windows", "a kitchen", "a sofa", "doors", "a wardrobe", "flooring"]


def _working_moment(calendar: BusinessCalendar, day: date, rng: random.Random) -> datetime:
    """A moment of the day's working hours with time for a rejection before the interval ends."""
    intervals = [(a, b - timedelta(minutes=20)) for a, b in calendar.intervals(day)]
    intervals = [(a, b) for a, b in intervals if b > a]
    begin, end = rng.choices(intervals, weights=[(b - a).total_seconds() for a, b in intervals])[0]
    return begin + (end - begin) * rng.random()


def reason_of(lead: PlannedLead) -> Reason | None:
    return REASONS.get(lead.reason) if lead.reason else None


def tenant_reason_id(tenant: str, reason: Reason) -> str:
    """The id the tenant's CRM keeps the reason under."""
    if tenant == B24_TENANT:
        return reason.b24_id
    if tenant == AMO_TENANT:
        return str(reason.amo_id)
    raise ValueError(f"no CRM for tenant {tenant}")
