"""Quality control of rejections in the demo: the tenants' `qc` sections, the people who answer
and decide reviews, the days before the week, and the report's part about it.

- Both tenant files get a `qc:` section (their CRM's reasons, two reviewers each, the deadlines
  of the example files), with `pages_url` the local stack's own address: the page links in the
  CRM tasks open on the demo's HTTP server, as they would on the deployed API.
- `People` play the managers and reviewers: each opens the link of a task the fake CRM holds for
  them when they get to it (most in time, a slow manager or a busy reviewer now and then late),
  answers the questions or returns the card to work / confirms the rejection, over HTTP.
- `QcSchedules` runs the process's `sweep` and `audit` schedules, as EventBridge would, and keeps
  their reports (reminders, overdue tasks, escalations; audits and their spot checks).
- `replay_history` replays the rejections of the days before the week (demo.rejections) the cheap
  way: leads that come in and are rejected, each review answered and decided in time, on the
  simulated clock without real waits; the audit needs them as its baseline.
- `qc_report` reads the outcome back: rejections checked / ignored, reviews returned / confirmed /
  open, late answers and escalations, the audit of the week with the flag and its p-value (the
  `qc-audit` query of the read API), and the violation journal by type (all processes).
"""

from __future__ import annotations

import heapq
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import requests
import yaml

from demo.rejections import HISTORY_WEEKS, REASONS, QcPlan, tenant_reason_id
from demo.replay import perform
from demo.week import MSK, Manager, PlannedLead
from leadwatch.config import TenantRegistry
from leadwatch.events import EntityRef
from leadwatch.i18n import Lang
from leadwatch.testing.bitrix24 import REASON_FIELD
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, CrmDriver, LocalStack
from workflows.qc.rules import add_working_time

TENANTS = (B24_TENANT, AMO_TENANT)
# Who decides on reviews in each tenant (CRM user id -> name): the first decides briskly, the
# second is busy and now and then lets a review run past its deadline.
REVIEWERS: dict[str, dict[str, str]] = {
    B24_TENANT: {"31": "Elena Smirnova", "32": "Mikhail Sorokin"},
    AMO_TENANT: {"9100031": "Elena Smirnova", "9100032": "Mikhail Sorokin"},
}
LANGS: dict[str, Lang] = {B24_TENANT: "ru", AMO_TENANT: "en"}
# The deadlines of the example tenant files (working time): the manager answers within 4 hours
# (reminded halfway), the reviewer decides within 8 (reminded an hour before, the head told an
# hour after).
DEADLINES = {
    "answer": {"within": "4h", "remind": "50%"},
    "review": {"within": "8h", "remind": "1h", "escalate_after": "1h"},
}
ANSWER_MINUTES, REVIEW_MINUTES, ESCALATE_AFTER = 240, 480, 60
SPOT_CHECKS = 3
# Demo-only: the demo replays HISTORY_WEEKS weeks before the audited one, so that is the baseline,
# and a manager has a handful of rejections in it (a real tenant keeps the defaults: 8 weeks, 20).
MIN_BASELINE = 5
_LINK = re.compile(r"https?://\S+/qc/(answer|review)/\S+")


def qc_section(tenant: str, pages_url: str, stack: LocalStack) -> dict[str, Any]:
    """The tenant file's `qc:` section, in the tenant's language."""
    lang = LANGS[tenant]
    reasons = [
        {
            "id": tenant_reason_id(tenant, r),
            "name": r.names[lang],
            "action": r.action,
            **({"questions": list(r.questions[lang])} if r.action == "check" else {}),
        }
        for r in REASONS.values()
    ]
    if tenant == B24_TENANT:
        funnel: dict[str, Any] = {
            "entity": "lead",
            "stages": ["JUNK"],
            "reason_field": REASON_FIELD,
            "returned_stage": "IN_PROCESS",
        }
    else:
        funnel = {"pipeline": str(stack.amo.pipeline_id), "returned_stage": str(stack.amo.work_stage())}
    return {
        "reviewers": list(REVIEWERS[tenant]),
        "pages_url": pages_url,
        "funnels": [{**funnel, "reasons": reasons}],
        "deadlines": DEADLINES,
        "spot_checks": {"sample_size": SPOT_CHECKS},
        "audit": {"baseline_weeks": HISTORY_WEEKS, "min_baseline": MIN_BASELINE},
    }


def install(stack: LocalStack) -> None:
    """Turn quality control on in both demo tenants. The page links must point at the stack's own
    HTTP server, whose port is known once it runs: the files are written again with it, and read
    again as a deployment reads them."""
    for reason in REASONS.values():
        stack.amo.add_loss_reason(reason.amo_id, reason.names["en"])
    for tenant in TENANTS:
        path = stack.tenants_dir / f"{tenant}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["qc"] = qc_section(tenant, stack.base_url, stack)
        path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    stack.ctx.registry = TenantRegistry.from_dir(stack.tenants_dir, stack.processes.tenant_model())


class ReasonedBitrix(BitrixDriver):
    """A manager rejects with a reason: the status and the list field in one save."""

    def reject_with_reason(self, lead_id: str, manager: str, at: datetime, reason: str) -> None:
        self.fake.reject_lead(lead_id, tenant_reason_id(B24_TENANT, REASONS[reason]), at=at)


class ReasonedAmo(AmoDriver):
    """A manager closes the lead as lost with a loss reason."""

    def reject_with_reason(self, lead_id: str, manager: str, at: datetime, reason: str) -> None:
        self.fake.reject(lead_id, REASONS[reason].amo_id, at=at, by=manager)


def drivers(stack: LocalStack) -> dict[str, CrmDriver]:
    return {B24_TENANT: ReasonedBitrix(stack.bitrix), AMO_TENANT: ReasonedAmo(stack.amo)}


# ----------------------------------------------------------------------------- the schedules


@dataclass
class QcSchedules:
    """The qc process's schedules, run as EventBridge runs them; their reports added up per tenant."""

    stack: LocalStack
    totals: dict[str, Counter] = field(default_factory=dict)
    audits: dict[str, list[dict]] = field(default_factory=dict)

    def sweep(self) -> None:
        for tenant, report in self.stack.run_schedule("qc", "sweep").items():
            counts = self.totals.setdefault(tenant, Counter())
            for key in ("started", "reminded", "overdue", "escalated", "left"):
                counts[key] += int(report.get(key) or 0)

    def audit(self) -> None:
        for tenant, report in self.stack.run_schedule("qc", "audit").items():
            if report.get("week"):
                self.audits.setdefault(tenant, []).append(report)

    def reset(self) -> None:
        self.totals, self.audits = {}, {}


# ----------------------------------------------------------------------------- the people


@dataclass(order=True)
class Job:
    """A person getting to a task of theirs."""

    at: datetime
    seq: int
    tenant: str = field(compare=False)
    task_id: str = field(compare=False)
    role: str = field(compare=False)  # "manager" answers, "reviewer" decides
    link: str = field(compare=False)
    deadline: datetime | None = field(compare=False)
    entity: EntityRef | None = field(compare=False)
    rng: random.Random = field(compare=False)


ANSWERS: dict[Lang, str] = {"ru": "Клиент отказался.", "en": "The client said no."}
COMMENTS: dict[str, dict[Lang, str]] = {
    "no_answer": {
        "ru": "Слишком мало попыток дозвона: продолжайте прозвон.",
        "en": "Too few call attempts: keep dialing.",
    },
    "ignored": {
        "ru": "Контакты в карточке верные: позвоните клиенту.",
        "en": "The contacts on the card are fine: call the client.",
    },
    "again": {
        "ru": "Предложите рассрочку ещё раз.",
        "en": "Offer the instalment plan once more.",
    },
}


class People:
    """The managers and reviewers of both tenants, getting to their QC tasks in the fake CRMs.

    Each task is looked at once, when it appears: who it is for and how long they take, drawn
    from a generator seeded with the task, so the same run makes the same people act alike. A
    manager answers within their usual time (a slow one sometimes past the deadline); a reviewer
    returns a card rejected as "not reached" (too few attempts) or with a reason nobody reviews
    (a spot check of a dumped lead) to work, and confirms most others. `punctual`: everyone acts
    well in time and confirms (the days before the week).
    """

    def __init__(
        self,
        stack: LocalStack,
        leads: dict[tuple[str, str], PlannedLead],
        managers: dict[tuple[str, str], Manager],
        seed: int,
    ):
        self.stack = stack
        self.leads = leads
        self.managers = managers
        self.seed = seed
        self.punctual = False
        self.stats: dict[str, Counter] = {t: Counter() for t in TENANTS}
        self._seen = {t: 0 for t in TENANTS}
        self._jobs: list[Job] = []
        self._seq = 0

    def fake_tasks(self, tenant: str) -> dict:
        return (self.stack.bitrix if tenant == B24_TENANT else self.stack.amo).tasks

    def __call__(self, now: datetime) -> bool:
        """The replay's minute: note the tasks made since, act on those due. True: someone acted."""
        self.scan()
        return self.act(now)

    def scan(self) -> None:
        for tenant in TENANTS:
            tasks = self.fake_tasks(tenant)
            if len(tasks) == self._seen[tenant]:
                continue
            fresh = list(tasks.values())[self._seen[tenant] :]
            self._seen[tenant] = len(tasks)
            for task in fresh:
                found = _LINK.search(task.description or "")
                if found is None or task.completed:
                    continue  # a notice without a page (the card returned to its manager)
                role = "manager" if found[1] == "answer" else "reviewer"
                rng = random.Random(f"demo-people:{self.seed}:{tenant}:{task.id}")
                at = add_working_time(
                    self.stack.ctx.calendar(self.stack.ctx.tenant(tenant)),
                    task.created_at,
                    timedelta(minutes=self._delay(tenant, role, task.responsible, rng)),
                )
                self._seq += 1
                job = Job(at, self._seq, tenant, task.id, role, found[0], task.deadline, task.entity, rng)
                heapq.heappush(self._jobs, job)

    def _delay(self, tenant: str, role: str, person: str, rng: random.Random) -> float:
        """Working minutes until the person acts on a new task."""
        if self.punctual:
            return rng.uniform(10, 100) if role == "manager" else rng.uniform(30, 240)
        if role == "reviewer":
            if person == next(iter(REVIEWERS[tenant])):
                return rng.uniform(20, 240)
            late = rng.random() < 0.25
            # Late: past the deadline and past the escalation an hour later.
            return rng.uniform(560, 700) if late else rng.uniform(120, 460)
        manager = self.managers.get((tenant, person))
        profile = manager.profile.name if manager is not None else "steady"
        if profile == "sharp":
            return rng.uniform(10, 100)
        if profile == "steady":
            return rng.uniform(30, 200)
        return rng.uniform(250, 420) if rng.random() < 0.4 else rng.uniform(60, 230)

    def next_at(self) -> datetime | None:
        return self._jobs[0].at if self._jobs else None

    def pending(self) -> int:
        return len(self._jobs)

    def act(self, now: datetime) -> bool:
        acted = False
        while self._jobs and self._jobs[0].at <= now:
            job = heapq.heappop(self._jobs)
            if job.role == "manager":
                self._answer(job, now)
            else:
                self._decide(job, now)
            acted = True
        return acted

    def _answer(self, job: Job, now: datetime) -> None:
        stats = self.stats[job.tenant]
        page = requests.get(job.link, timeout=30)
        count = len(set(re.findall(r'name="answer-(\d+)"', page.text)))
        if page.status_code != 200 or count == 0:
            stats["pages_refused"] += 1  # answered already, the review ended, the link expired
            return
        lang = LANGS[job.tenant]
        reason = self._reason(job)
        given = reason.answers.get(lang, ()) if reason is not None else ()
        answers = {f"answer-{n}": given[n] if n < len(given) else ANSWERS[lang] for n in range(count)}
        sent = requests.post(job.link, data=answers, timeout=30)
        if sent.status_code != 200:
            raise RuntimeError(f"the answer page refused {job.tenant} task {job.task_id}: {sent.status_code}")
        stats["answered"] += 1
        stats["answered_late"] += int(job.deadline is not None and now > job.deadline)

    def _decide(self, job: Job, now: datetime) -> None:
        stats = self.stats[job.tenant]
        page = requests.get(job.link, timeout=30)
        if page.status_code != 200 or 'name="decision"' not in page.text:
            stats["pages_refused"] += 1
            return
        lang = LANGS[job.tenant]
        reason = self._reason(job)
        decision, comment = "confirm", ""
        if self.punctual or reason is None:
            pass
        elif reason.action == "ignore":
            decision, comment = "return", COMMENTS["ignored"][lang]
        elif reason.key == "no_answer":
            decision, comment = "return", COMMENTS["no_answer"][lang]
        elif job.rng.random() < 0.2:
            decision, comment = "return", COMMENTS["again"][lang]
        sent = requests.post(job.link, data={"decision": decision, "comment": comment}, timeout=30)
        if sent.status_code != 200:
            raise RuntimeError(f"the review page refused {job.tenant} task {job.task_id}: {sent.status_code}")
        stats["returned" if decision == "return" else "confirmed"] += 1
        stats["decided_late"] += int(job.deadline is not None and now > job.deadline)

    def _reason(self, job: Job):
        lead = self.leads.get((job.tenant, job.entity.id)) if job.entity is not None else None
        return REASONS.get(lead.reason) if lead is not None and lead.reason else None


def people_for(stack: LocalStack, plan: QcPlan, leads: list[PlannedLead], teams: dict, seed: int) -> People:
    """The people of both tenants; `leads` must have their CRM ids (after they are created)."""
    return People(stack, _LeadIndex([*plan.history_leads, *leads]), _managers(teams), seed)


class _LeadIndex(dict):
    """(tenant, CRM id) -> planned lead, for leads whose ids the replay fills in as it goes."""

    def __init__(self, leads: list[PlannedLead]):
        super().__init__()
        self._leads = leads

    def get(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self.update({(lead.tenant, lead.crm_id): lead for lead in self._leads if lead.crm_id})
        return super().get(key, default)


def _managers(teams: dict[str, list[Manager]]) -> dict[tuple[str, str], Manager]:
    return {(tenant, m.crm_id): m for tenant, people in teams.items() for m in people}


# ----------------------------------------------------------------------------- the days before


def replay_history(
    stack: LocalStack,
    plan: QcPlan,
    crm: dict[str, CrmDriver],
    people: People,
    schedules: QcSchedules,
) -> dict[str, Any]:
    """The rejections of the days before the week, through the same webhooks and handlers, event
    by event rather than minute by minute, without real waits (rate limits still count on the
    simulated clock the fakes share); the weekly audit at its Monday moments, the reviews
    answered and decided in time. Leaves the clock at the last thing done."""
    real = stack.sleeps.real
    stack.sleeps.real = False
    people.punctual = True
    pending = list(reversed(plan.history))
    audits = sorted(
        datetime.combine(plan.audited.shifted(-n).first_day, time(9, 31), MSK) for n in range(HISTORY_WEEKS)
    )
    try:
        while pending or people.pending():
            moments = [m for m in (pending[-1].at if pending else None, people.next_at()) if m is not None]
            now = min(moments)
            while audits and audits[0] <= now:
                stack.clock.set(audits.pop(0))
                schedules.audit()
                people.scan()
            stack.clock.set(now)
            acted = False
            while pending and pending[-1].at <= now:
                perform(pending.pop(), crm)
                acted = True
            if acted:
                stack.pump()
            if people.act(now):
                schedules.sweep()  # the pages saved; the sweep makes the CRM's tasks and notes
                stack.pump()
            people.scan()
        for moment in audits:  # a Monday audit after the last rejection
            stack.clock.set(moment)
            schedules.audit()
    finally:
        stack.sleeps.real = real
        people.punctual = False
    return {
        "rejections": sum(1 for a in plan.history if a.kind == "reject"),
        "from": plan.history_start.date().isoformat(),
        "reviews_decided": sum(people.stats[t]["returned"] + people.stats[t]["confirmed"] for t in TENANTS),
    }


# ----------------------------------------------------------------------------- the report

QC_TEXTS: dict[Lang, dict[str, str]] = {
    "ru": {
        "title": "{tenant}: контроль качества отказов",
        "rejections": "отказов с {first}: {total}; с причиной на проверку: {checked}, с игнорируемой причиной: {ignored}",
        "reviews": "проверки: вернули в работу {returned}, подтвердили {confirmed}, ещё открыты {open} "
        "(ждут ответов {awaiting_answers}, ждут решения {awaiting_review}); выборочных проверок после аудита: {spot}",
        "late": "ответов с опозданием: {answer_late}, решений с опозданием: {review_late}; напоминаний: {reminded}; "
        "эскалаций руководителю в Telegram: {escalated}",
        "audit": "Аудит причин за неделю {week} (`qc-audit`; руководитель получил его в понедельник):",
        "journal": "Журнал нарушений {first} – {last} по типам (все процессы):",
    },
    "en": {
        "title": "{tenant}: quality control of rejections",
        "rejections": "rejections since {first}: {total}; with a reason to check: {checked}, with an ignored reason: {ignored}",
        "reviews": "reviews: returned to work {returned}, confirmed {confirmed}, still open {open} "
        "(awaiting answers {awaiting_answers}, awaiting a decision {awaiting_review}); spot checks after the audit: {spot}",
        "late": "answers late: {answer_late}, decisions late: {review_late}; reminders: {reminded}; "
        "escalations to the head in Telegram: {escalated}",
        "audit": "The reason audit of week {week} (`qc-audit`; the head got it on Monday):",
        "journal": "The violation journal {first} .. {last} by type (all processes):",
    },
}
AUDIT_LINES = 24  # of the audit's text (flagged and quiet first; those with too little data last)


def qc_report(
    stack: LocalStack,
    plan: QcPlan,
    leads: list[PlannedLead],
    people: People,
    schedules: QcSchedules,
    first: date,
    last: date,
    history: dict[str, Any],
) -> dict[str, Any]:
    """The QC part of the report, each tenant in its language, checked against what the plan and
    the people did: the rejections noted, the decisions journaled."""
    from leadwatch import i18n
    from workflows.qc.reviews import NAMESPACE, Reviews
    from workflows.qc.rules import Status

    week_start = datetime.combine(first, time(0), MSK)
    texts, markdowns, data = [], [], {"history": history, "audited_week": plan.audited.key, "tenants": {}}
    mismatches: list[tuple] = []
    flags = []
    for tenant in TENANTS:
        lang = LANGS[tenant]
        t = QC_TEXTS[lang]
        key = {"X-Api-Key": stack.api_key(tenant)}
        status, audit = stack.get(
            f"/tenants/{tenant}/qc/audit?week={plan.audited.key}&format=text", headers=key
        )
        if status != 200:
            raise RuntimeError(f"qc-audit answered {status}: {audit}")
        status, journal = stack.get(f"/tenants/{tenant}/violations?from={first}&to={last}", headers=key)
        if status != 200:
            raise RuntimeError(f"the journal answered {status}: {journal}")
        by_type: dict[str, int] = journal["by_type"]
        reviews = Reviews(stack.ctx.state(NAMESPACE), tenant)
        # The rejections QC noted since the week began, against the plan's.
        months = {f"{first:%Y-%m}", f"{last:%Y-%m}"}
        noted = [
            r.value for r in reviews.rejections(months) if datetime.fromisoformat(r.value["at"]) >= week_start
        ]
        planned = [lead for lead in leads if lead.tenant == tenant and lead.rejected_at is not None]
        counts = {
            "total": len(noted),
            "checked": sum(1 for v in noted if v["action"] == "check"),
            "ignored": sum(1 for v in noted if v["action"] == "ignore"),
        }
        want = {
            "total": len(planned),
            "checked": sum(1 for lead in planned if REASONS[lead.reason or ""].action == "check"),
            "ignored": sum(1 for lead in planned if REASONS[lead.reason or ""].action == "ignore"),
        }
        if counts != want:
            mismatches.append((tenant, "rejections", counts, want))
        opened = [s.review for s in reviews.get_many([i for i, _, _ in reviews.open_ids()]).values()]
        did = people.stats[tenant]
        for kind, decided in (("qc_returned_to_work", did["returned"]), ("qc_confirmed", did["confirmed"])):
            if by_type.get(kind, 0) != decided:
                mismatches.append((tenant, kind, by_type.get(kind, 0), decided))
        sweeps = schedules.totals.get(tenant, Counter())
        spot = sum(int(a.get("spot_checks") or 0) for a in schedules.audits.get(tenant, []))
        figures = {
            "returned": by_type.get("qc_returned_to_work", 0),
            "confirmed": by_type.get("qc_confirmed", 0),
            "open": len(opened),
            "awaiting_answers": sum(1 for r in opened if r.status is Status.AWAITING_ANSWERS),
            "awaiting_review": sum(1 for r in opened if r.status is Status.AWAITING_REVIEW),
            "spot": spot,
            "answer_late": by_type.get("qc_answer_overdue", 0),
            "review_late": by_type.get("qc_review_overdue", 0),
            "reminded": sweeps["reminded"],
            "escalated": sweeps["escalated"],
        }
        dumper = plan.dumpers.get(tenant)
        flagged = [v for v in audit["verdicts"] if v["flagged"] and v["subject"] != "department"]
        flag = next((v for v in flagged if dumper is not None and v["subject"] == dumper.crm_id), None)
        flags.append((tenant, dumper, flag, flagged))
        lines = [
            t["rejections"].format(first=i18n.day_text(first, lang), **counts),
            t["reviews"].format(**figures),
            t["late"].format(**figures),
        ]
        audit_lines = _audit_text(audit["text"])
        journal_lines = [f"{kind}: {count}" for kind, count in sorted(by_type.items())]
        journal_title = t["journal"].format(first=i18n.day_text(first, lang), last=i18n.day_text(last, lang))
        texts.append(
            "\n".join(
                [
                    t["title"].format(tenant=tenant),
                    *(f"  {line}" for line in lines),
                    "",
                    "  " + t["audit"].format(week=plan.audited.key),
                    *(f"  | {line}" for line in audit_lines),
                    "",
                    "  " + journal_title,
                    *(f"    {line}" for line in journal_lines),
                ]
            )
        )
        markdowns.append(
            "\n".join(
                [
                    f"### {t['title'].format(tenant=tenant)}",
                    "",
                    *(f"- {line}" for line in lines),
                    "",
                    t["audit"].format(week=plan.audited.key),
                    "",
                    "```",
                    *audit_lines,
                    "```",
                    "",
                    journal_title,
                    "",
                    "| type | count |",
                    "|---|---:|",
                    *(f"| {kind} | {count} |" for kind, count in sorted(by_type.items())),
                ]
            )
        )
        data["tenants"][tenant] = {
            "rejections": counts,
            "planned_rejections": want,
            "reviews": {
                k: figures[k]
                for k in ("returned", "confirmed", "open", "awaiting_answers", "awaiting_review")
            },
            "spot_checks": spot,
            "answers_late": figures["answer_late"],
            "decisions_late": figures["review_late"],
            "reminders": figures["reminded"],
            "escalations": figures["escalated"],
            "people": dict(did),
            "dumper": {"id": dumper.crm_id, "name": dumper.name} if dumper is not None else None,
            "flagged": flagged,
            "flag_is_the_dumper": flag is not None and len(flagged) == 1,
            "audit": audit,
            "journal_by_type": by_type,
        }
    facts = [
        f"quality control: the {history['rejections']} rejections of the days before (from {history['from']}) "
        "were replayed first, only the rejections, each review answered and decided in time",
    ]
    for tenant, dumper, flag, flagged in flags:
        if flag is not None:
            p = min(x for x in (flag["p_baseline"], flag["p_rest"]) if x is not None)
            facts.append(
                f"the audit of {plan.audited.key} flags {tenant}'s {dumper.name if dumper else '?'} "
                f"({flag['week']['ignored']} of {flag['week']['total']} rejections with ignored reasons), "
                f"p = {p:.2g}; the manager who dumps leads into ignored reasons: "
                + ("yes" if len(flagged) == 1 else f"yes, and {len(flagged) - 1} more")
            )
        else:
            facts.append(f"the audit of {plan.audited.key} flags {tenant}: {[v['subject'] for v in flagged]}")
    if mismatches:
        facts.append("QC MISMATCHES (tenant, what, got, want): " + ", ".join(map(str, mismatches)))
    data["mismatches"] = len(mismatches)
    text = "\n\n".join(texts) + "\n\n" + "\n".join(facts)
    markdown = "\n\n".join(markdowns) + "\n\n" + "\n".join(f"- {f}" for f in facts)
    return {"text": text, "markdown": markdown, "data": data}


def _audit_text(text: str) -> list[str]:
    """The audit message as the terminal shows it, the flagged and the quiet in full; of those
    with too little data only as many lines as fit."""
    lines = text.splitlines()
    if len(lines) <= AUDIT_LINES:
        return lines
    return [*lines[:AUDIT_LINES], f"… (+{len(lines) - AUDIT_LINES})"]
