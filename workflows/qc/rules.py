"""Quality control of rejected leads and deals, as pure decisions: no I/O, no clock.

**Routing.** A card entering a failure stage of a funnel is a rejection. Its reason is the
stage itself when the tenant lists the stage as a reason (Bitrix24 `C1:APOLOGY`), else the
value of the funnel's reason field (a list field of the portal; amoCRM's loss reason). A
`check` reason starts a review, an `ignore` reason only counts for the audit. A reason the file
does not list, or none at all, is handled as `qc.unknown_reasons` says, `check` by default: a
new reason in the portal or a blank field must not be a way around the review, and a review
costs a reviewer minutes where a dumped lead costs a client.

**The review**, a state machine; each transition is a function returning a `Transition`: the
new review, the effects to perform, or a `Refusal` with the review unchanged.

    opened --start--> awaiting_answers --submit_answers--> awaiting_review --decide--> returned
                   \\                                                            \\--> confirmed
                    `--(spot check, or no manager to ask)--> awaiting_review
    any open state --card_changed (left the failure stages) / card_gone--> closed (quietly)

A decided or closed review refuses any further action; a link past its expiry refuses too,
and changes nothing. Every task runs under its deadline, counted in working time on the
tenant's calendar from the moment the task is created: a reminder to the assignee at the
reminder point, a violation at the deadline, the head told in Telegram at the escalation
point, each once (`check_deadlines`). A return to work and a confirmation are journaled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal, Protocol
from zlib import crc32

from leadwatch.effects import (
    AddNote,
    CompleteTask,
    CreateTask,
    Effect,
    MoveStage,
    Notify,
    RecordViolation,
    RemindUser,
    Violation,
)
from leadwatch.events import EntityRef, EntityType
from workflows.qc import messages
from workflows.qc.messages import QcView

ANSWER_OVERDUE = "qc_answer_overdue"
REVIEW_OVERDUE = "qc_review_overdue"
RETURNED_TO_WORK = "qc_returned_to_work"
CONFIRMED = "qc_confirmed"
VIOLATION_TYPES = (ANSWER_OVERDUE, REVIEW_OVERDUE, RETURNED_TO_WORK, CONFIRMED)

MAX_ANSWER_CHARS = 2000
MAX_COMMENT_CHARS = 1000
_ONE_DAY = timedelta(days=1)
_SEARCH_LIMIT_DAYS = 400  # a calendar with no working time in a year is a broken calendar

Action = Literal["check", "ignore"]
Role = Literal["manager", "reviewer"]
Operation = Literal["answer", "review"]
Decision = Literal["return", "confirm"]
ReviewKind = Literal["rejection", "spot_check"]


class Status(StrEnum):
    OPENED = "opened"  # recorded, no task yet
    AWAITING_ANSWERS = "awaiting_answers"
    AWAITING_REVIEW = "awaiting_review"
    RETURNED = "returned"
    CONFIRMED = "confirmed"
    CLOSED = "closed"  # the card left the failure stages before a decision: ended quietly


OPEN = frozenset({Status.OPENED, Status.AWAITING_ANSWERS, Status.AWAITING_REVIEW})
DECIDED = frozenset({Status.RETURNED, Status.CONFIRMED})


class Refusal(StrEnum):
    WRONG_ROLE = "wrong_role"  # a manager's link used to decide, a reviewer's to answer
    EXPIRED = "expired"
    NOT_YET = "not_yet"  # a decision before the answers, answers before the task
    ALREADY_STARTED = "already_started"
    ALREADY_ANSWERED = "already_answered"
    ALREADY_DECIDED = "already_decided"
    CLOSED = "closed"
    INCOMPLETE = "incomplete"  # an answer missing or blank
    TOO_LONG = "too_long"


# ----------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class ReasonRule:
    name: str
    action: Action
    questions: tuple[str, ...] = ()
    id: str | None = None
    stage: str | None = None


@dataclass(frozen=True)
class FunnelRule:
    name: str
    entity: EntityType
    stages: frozenset[str]
    returned_stage: str
    reason_field: str | None = None
    pipeline: str | None = None
    reasons: tuple[ReasonRule, ...] = ()

    def takes(self, entity: EntityType, stage: str, pipeline: str | None) -> bool:
        """Whether a card of this type in this stage (and pipeline) is rejected in this funnel."""
        if entity is not self.entity or stage not in self.stages:
            return False
        return self.pipeline is None or pipeline is None or str(pipeline) == self.pipeline

    def reason_for_stage(self, stage: str) -> ReasonRule | None:
        return next((r for r in self.reasons if r.stage == stage), None)

    def reason_for_id(self, reason_id: str) -> ReasonRule | None:
        return next((r for r in self.reasons if r.id == reason_id), None)


@dataclass(frozen=True)
class DeadlineRule:
    """An operation's regulated time, in working minutes, and its control points."""

    minutes: int
    remind_percent: int | None = 50
    remind_before: int | None = None  # working minutes before the deadline
    escalate: bool = True
    escalate_after: int = 0  # working minutes after the deadline

    @classmethod
    def from_config(cls, cfg: Any) -> DeadlineRule:
        remind = cfg.remind
        return cls(
            minutes=cfg.within,
            remind_percent=remind.percent if remind else None,
            remind_before=remind.before_minutes if remind else None,
            escalate=cfg.escalate,
            escalate_after=cfg.escalate_after,
        )


@dataclass(frozen=True)
class QcRules:
    funnels: tuple[FunnelRule, ...]
    reviewers: tuple[str, ...]
    unknown_reasons: Action = "check"
    default_questions: tuple[str, ...] = ()
    answer: DeadlineRule = DeadlineRule(4 * 60)
    review: DeadlineRule = DeadlineRule(8 * 60)
    links_valid: timedelta = timedelta(days=14)

    @classmethod
    def from_config(cls, cfg: Any) -> QcRules:
        """From a `workflows.qc.config.QcConfig` (duck-typed: the rules never read a file)."""
        return cls(
            funnels=tuple(
                FunnelRule(
                    name=f.name,
                    entity=EntityType(f.entity),
                    stages=frozenset(f.stages),
                    returned_stage=f.returned_stage,
                    reason_field=f.reason_field,
                    pipeline=f.pipeline,
                    reasons=tuple(
                        ReasonRule(r.name, r.action, tuple(r.questions), r.id, r.stage) for r in f.reasons
                    ),
                )
                for f in cfg.funnels
            ),
            reviewers=tuple(cfg.reviewers),
            unknown_reasons=cfg.unknown_reasons,
            default_questions=tuple(cfg.default_questions),
            answer=DeadlineRule.from_config(cfg.deadlines.answer),
            review=DeadlineRule.from_config(cfg.deadlines.review),
            links_valid=timedelta(days=cfg.links_valid_days),
        )

    def deadline(self, operation: Operation) -> DeadlineRule:
        return self.answer if operation == "answer" else self.review

    def funnel(self, name: str) -> FunnelRule | None:
        return next((f for f in self.funnels if f.name == name), None)


# ----------------------------------------------------------------------------- routing


@dataclass(frozen=True)
class Routing:
    """What a card's stage and reason mean for QC. `action` "none": not a rejection QC watches."""

    action: Literal["check", "ignore", "none"]
    why: str
    funnel: FunnelRule | None = None
    reason: ReasonRule | None = None  # None: not listed (or none given)
    reason_id: str | None = None  # what the card holds in the reason field

    @property
    def reason_name(self) -> str:
        if self.reason is not None:
            return self.reason.name
        return self.reason_id or ""


def funnel_of(
    rules: QcRules, entity: EntityType, stage: str, pipeline: str | None = None
) -> FunnelRule | None:
    return next((f for f in rules.funnels if f.takes(entity, stage, pipeline)), None)


def reason_value(value: Any) -> str | None:
    """A reason field's value as an id: a list field gives its item id (as text or a number, in
    a list when the field is multiple), amoCRM a loss reason id; empty, 0 and false are none."""
    if isinstance(value, list | tuple):
        return next((found for item in value if (found := reason_value(item)) is not None), None)
    if isinstance(value, dict):
        return reason_value(value.get("id", value.get("value")))
    if value is None or isinstance(value, bool) or value == 0:
        return None
    text = str(value).strip()
    return text if text and text != "0" else None


def route(
    rules: QcRules,
    entity: EntityType,
    stage: str,
    pipeline: str | None = None,
    fields: Mapping[str, Any] | None = None,
) -> Routing:
    """Route a card in `stage` (with its custom `fields`, keyed by field id): check, ignore or none."""
    funnel = funnel_of(rules, entity, stage, pipeline)
    if funnel is None:
        return Routing("none", f"{stage!r} is not a failure stage of a quality-control funnel")
    by_stage = funnel.reason_for_stage(stage)
    if by_stage is not None:
        return Routing(by_stage.action, f"the stage {stage!r} is the reason", funnel, by_stage)
    given = reason_value((fields or {}).get(funnel.reason_field)) if funnel.reason_field else None
    if given is not None:
        listed = funnel.reason_for_id(given)
        if listed is not None:
            return Routing(listed.action, f"reason {given} ({listed.name}) is listed", funnel, listed, given)
        why = f"reason {given} is not listed: handled as unknown reasons are ({rules.unknown_reasons})"
        return Routing(rules.unknown_reasons, why, funnel, None, given)
    where = f"in {funnel.reason_field}" if funnel.reason_field else "(the funnel names no reason field)"
    why = f"no reason given {where}: handled as unknown reasons are ({rules.unknown_reasons})"
    return Routing(rules.unknown_reasons, why, funnel)


def route_card(rules: QcRules, card: Any) -> Routing:
    """`route` for a `leadwatch.events.LeadSnapshot`."""
    return route(rules, card.entity.type, card.stage, card.pipeline, card.fields)


def questions_for(routing: Routing, rules: QcRules, lang: Any) -> tuple[str, ...]:
    """The reason's own questions, else the tenant's default ones, else the standard question."""
    own = routing.reason.questions if routing.reason is not None else ()
    return own or rules.default_questions or (messages.default_question(lang),)


def pick_reviewer(reviewers: Sequence[str], manager: str | None, review_id: str) -> str:
    """A reviewer other than the manager where there is one, spread evenly and stably by review."""
    if not reviewers:
        raise ValueError("no reviewers: qc needs at least one")
    others = [r for r in reviewers if r != manager] or list(reviewers)
    return others[crc32(review_id.encode()) % len(others)]


# ----------------------------------------------------------------------------- working time


class WorkCalendar(Protocol):
    def intervals(self, day: date) -> list[tuple[datetime, datetime]]: ...

    def working_time_between(self, start: datetime, end: datetime) -> timedelta: ...

    @property
    def tz(self) -> Any: ...


def add_working_time(calendar: WorkCalendar, start: datetime, amount: timedelta) -> datetime:
    """`start` plus `amount` of working time: time outside the calendar's intervals (nights,
    weekends, holidays, a lunch break) does not count. Lands inside an interval or on its close
    (a deadline at 18:00 is 18:00, not the next morning); a zero amount from outside working time
    is the next opening. In UTC, so across a clock change it is real elapsed time."""
    if amount < timedelta(0):
        raise ValueError("working time to add must not be negative")
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    instant = start.astimezone(UTC)
    remaining = amount
    day = instant.astimezone(calendar.tz).date()
    for _ in range(_SEARCH_LIMIT_DAYS):
        for open_, close in calendar.intervals(day):
            begin, end = max(open_.astimezone(UTC), instant), close.astimezone(UTC)
            if end <= begin:
                continue
            if remaining <= end - begin:
                return (begin + remaining).astimezone(calendar.tz)
            remaining -= end - begin
        day += _ONE_DAY
    raise ValueError(f"no working time within {_SEARCH_LIMIT_DAYS} days after {start.isoformat()}")


@dataclass(frozen=True)
class TaskClock:
    """One task of a review and its control points, fixed when it is created (a later change of
    the tenant's settings applies to new tasks)."""

    operation: Operation
    assignee: str
    task_ref: str  # the CreateTask's effect id
    opened_at: datetime
    due_at: datetime
    link_expires_at: datetime
    remind_at: datetime | None = None
    escalate_at: datetime | None = None
    reminded_at: datetime | None = None
    overdue_at: datetime | None = None  # when the violation was recorded
    escalated_at: datetime | None = None
    done_at: datetime | None = None

    @property
    def role(self) -> Role:
        return "manager" if self.operation == "answer" else "reviewer"


def task_clock(
    operation: Operation,
    assignee: str,
    task_ref: str,
    opened_at: datetime,
    rule: DeadlineRule,
    calendar: WorkCalendar,
    links_valid: timedelta,
) -> TaskClock:
    """A task opened at `opened_at`: its deadline, reminder and escalation points in working time."""
    allowed = timedelta(minutes=rule.minutes)
    due = add_working_time(calendar, opened_at, allowed)
    remind: datetime | None = None
    if rule.remind_percent is not None:
        remind = add_working_time(calendar, opened_at, allowed * rule.remind_percent / 100)
    elif rule.remind_before is not None and rule.remind_before < rule.minutes:
        remind = add_working_time(calendar, opened_at, allowed - timedelta(minutes=rule.remind_before))
    escalate: datetime | None = None
    if rule.escalate:
        after = timedelta(minutes=rule.escalate_after)
        escalate = due if not after else add_working_time(calendar, due, after)
    # A link outlives its deadline: a late answer is still worth having.
    expires = max(opened_at + links_valid, (escalate or due) + links_valid)
    return TaskClock(operation, assignee, task_ref, opened_at, due, expires, remind, escalate)


# ----------------------------------------------------------------------------- the review


@dataclass(frozen=True)
class Review:
    review_id: str
    tenant: str
    entity: EntityRef
    kind: ReviewKind
    funnel: str
    stage: str
    reason_id: str | None
    reason_name: str
    manager: str | None  # the card's responsible manager when it was rejected
    reviewer: str
    questions: tuple[str, ...]
    rejected_at: datetime
    title: str = ""
    status: Status = Status.OPENED
    answer_task: TaskClock | None = None
    review_task: TaskClock | None = None
    answers: tuple[str, ...] = ()
    answered_at: datetime | None = None
    decided_at: datetime | None = None
    comment: str = ""
    closed_at: datetime | None = None

    @property
    def open_task(self) -> TaskClock | None:
        """The task the review waits on now."""
        if self.status is Status.AWAITING_ANSWERS:
            return self.answer_task
        if self.status is Status.AWAITING_REVIEW:
            return self.review_task
        return None

    def task_of(self, role: Role) -> TaskClock | None:
        return self.answer_task if role == "manager" else self.review_task

    def to_dict(self) -> dict[str, Any]:
        return _encode(
            {
                **{f: getattr(self, f) for f in self.__dataclass_fields__},
                "entity": self.entity.key,
                "status": self.status.value,
                "answer_task": _task_dict(self.answer_task),
                "review_task": _task_dict(self.review_task),
                "questions": list(self.questions),
                "answers": list(self.answers),
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Review:
        return cls(
            review_id=data["review_id"],
            tenant=data["tenant"],
            entity=EntityRef.parse(data["entity"]),
            kind=data["kind"],
            funnel=data["funnel"],
            stage=data["stage"],
            reason_id=data.get("reason_id"),
            reason_name=data.get("reason_name", ""),
            manager=data.get("manager"),
            reviewer=data["reviewer"],
            questions=tuple(data.get("questions") or ()),
            rejected_at=_moment(data["rejected_at"]),
            title=data.get("title", ""),
            status=Status(data["status"]),
            answer_task=_task_from(data.get("answer_task")),
            review_task=_task_from(data.get("review_task")),
            answers=tuple(data.get("answers") or ()),
            answered_at=_maybe_moment(data.get("answered_at")),
            decided_at=_maybe_moment(data.get("decided_at")),
            comment=data.get("comment", ""),
            closed_at=_maybe_moment(data.get("closed_at")),
        )


def _encode(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v.astimezone(UTC).isoformat() if isinstance(v, datetime) else v for k, v in data.items()}


def _task_dict(task: TaskClock | None) -> dict[str, Any] | None:
    return None if task is None else _encode({f: getattr(task, f) for f in task.__dataclass_fields__})


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime in a review: {text!r}")
    return moment.astimezone(UTC)


def _maybe_moment(text: str | None) -> datetime | None:
    return _moment(text) if text else None


def _task_from(data: Mapping[str, Any] | None) -> TaskClock | None:
    if data is None:
        return None
    moments = {
        k: _maybe_moment(data.get(k))
        for k in ("remind_at", "escalate_at", "reminded_at", "overdue_at", "escalated_at", "done_at")
    }
    return TaskClock(
        operation=data["operation"],
        assignee=data["assignee"],
        task_ref=data["task_ref"],
        opened_at=_moment(data["opened_at"]),
        due_at=_moment(data["due_at"]),
        link_expires_at=_moment(data["link_expires_at"]),
        **moments,
    )


def review_id(entity: EntityRef, rejected_at: datetime) -> str:
    """One review per rejection: the same card rejected again later is a new review; the same
    rejection seen twice (a redelivered webhook, reconciliation) is the same one."""
    return f"{entity.key}:{int(rejected_at.timestamp())}"


def spot_check_id(entity: EntityRef, week_key: str) -> str:
    return f"spot:{entity.key}:{week_key}"


@dataclass(frozen=True)
class Transition:
    review: Review
    effects: tuple[Effect, ...] = ()
    refused: Refusal | None = None

    @property
    def ok(self) -> bool:
        return self.refused is None


def _with_task(review: Review, task: TaskClock) -> Review:
    if task.operation == "answer":
        return replace(review, answer_task=task)
    return replace(review, review_task=task)


def _refuse(review: Review, why: Refusal) -> Transition:
    return Transition(review, (), why)


def open_review(
    tenant: str,
    card: Any,
    routing: Routing,
    rejected_at: datetime,
    rules: QcRules,
    lang: Any,
) -> Review | None:
    """A review of a rejection whose reason is checked (None otherwise). `card` is a
    `LeadSnapshot` (or anything with entity, stage, responsible, title)."""
    if routing.action != "check" or routing.funnel is None:
        return None
    return _review(
        review_id(card.entity, rejected_at),
        "rejection",
        tenant,
        card,
        routing,
        rejected_at,
        rules,
        questions_for(routing, rules, lang),
    )


def open_spot_check(
    tenant: str,
    card: Any,
    routing: Routing,
    rejected_at: datetime,
    week_key: str,
    rules: QcRules,
) -> Review:
    """A spot check of a rejection with an `ignore` reason, picked by the audit's sample: it goes
    straight to a reviewer, without questions to the manager."""
    if routing.funnel is None:
        raise ValueError(f"{card.entity.key}: not in a quality-control funnel")
    return _review(
        spot_check_id(card.entity, week_key), "spot_check", tenant, card, routing, rejected_at, rules, ()
    )


def _review(
    rid: str,
    kind: ReviewKind,
    tenant: str,
    card: Any,
    routing: Routing,
    rejected_at: datetime,
    rules: QcRules,
    questions: tuple[str, ...],
) -> Review:
    """A new review of a routed card (its funnel known), its reviewer picked for its id."""
    assert routing.funnel is not None
    return Review(
        review_id=rid,
        tenant=tenant,
        entity=card.entity,
        kind=kind,
        funnel=routing.funnel.name,
        stage=card.stage,
        reason_id=routing.reason_id,
        reason_name=routing.reason_name,
        manager=card.responsible,
        reviewer=pick_reviewer(rules.reviewers, card.responsible, rid),
        questions=questions,
        rejected_at=rejected_at,
        title=card.title or "",
    )


def _task_id(review: Review, step: str) -> str:
    return f"qc:task:{review.tenant}:{review.review_id}:{step}"


def _new_task(
    review: Review,
    operation: Operation,
    assignee: str,
    now: datetime,
    rules: QcRules,
    calendar: WorkCalendar,
    view: QcView,
) -> tuple[TaskClock, CreateTask]:
    clock = task_clock(
        operation,
        assignee,
        _task_id(review, operation),
        now,
        rules.deadline(operation),
        calendar,
        rules.links_valid,
    )
    link = view.page_link(review, clock.role, clock.link_expires_at)
    effect = CreateTask(
        effect_id=clock.task_ref,
        entity=review.entity,
        assignee=assignee,
        title=messages.task_title(review, clock, view),
        text=messages.task_text(review, clock, link, view),
        deadline=clock.due_at,
        link=link,
    )
    return clock, effect


def start(review: Review, now: datetime, rules: QcRules, calendar: WorkCalendar, view: QcView) -> Transition:
    """opened -> awaiting answers (the manager's task), or straight to awaiting review (a spot
    check; a card with no responsible manager, as nobody can answer for it)."""
    if review.status is not Status.OPENED:
        return _refuse(review, Refusal.CLOSED if review.status is Status.CLOSED else Refusal.ALREADY_STARTED)
    if review.kind == "rejection" and review.manager:
        clock, effect = _new_task(review, "answer", review.manager, now, rules, calendar, view)
        return Transition(replace(review, status=Status.AWAITING_ANSWERS, answer_task=clock), (effect,))
    clock, effect = _new_task(review, "review", review.reviewer, now, rules, calendar, view)
    return Transition(replace(review, status=Status.AWAITING_REVIEW, review_task=clock), (effect,))


def _closed_refusal(review: Review) -> Refusal | None:
    if review.status is Status.CLOSED:
        return Refusal.CLOSED
    if review.status in DECIDED:
        return Refusal.ALREADY_DECIDED
    return None


def link_refusal(review: Review, role: Role, link_expires_at: datetime, now: datetime) -> Refusal | None:
    """Whether a page link (signed for this review, a role and an expiry) may act now. An expired
    link is refused before anything else and changes nothing."""
    if now >= link_expires_at:
        return Refusal.EXPIRED
    if review.task_of(role) is None and review.status not in DECIDED | {Status.CLOSED}:
        return Refusal.NOT_YET
    return None


def _finish(
    review: Review, task: TaskClock, now: datetime, calendar: WorkCalendar
) -> tuple[TaskClock, list[Effect]]:
    """A task done: closed in the CRM, and journaled as overdue if it was late and no sweep saw it."""
    effects: list[Effect] = [
        CompleteTask(
            f"qc:done:{review.tenant}:{review.review_id}:{task.operation}", task.task_ref, review.entity
        )
    ]
    done = replace(task, done_at=now)
    if now > task.due_at and task.overdue_at is None:
        effects.append(_overdue_violation(review, task, now, calendar))
        done = replace(done, overdue_at=now)
    return done, effects


def submit_answers(
    review: Review,
    answers: Sequence[str],
    now: datetime,
    rules: QcRules,
    calendar: WorkCalendar,
    view: QcView,
    role: Role = "manager",
) -> Transition:
    """awaiting answers -> awaiting review: the manager's task is closed and the reviewer's opened."""
    if role != "manager":
        return _refuse(review, Refusal.WRONG_ROLE)
    if (closed := _closed_refusal(review)) is not None:
        return _refuse(review, closed)
    if review.status is Status.AWAITING_REVIEW:
        return _refuse(review, Refusal.ALREADY_ANSWERED)
    if review.status is not Status.AWAITING_ANSWERS or review.answer_task is None:
        return _refuse(review, Refusal.NOT_YET)
    cleaned = tuple(a.strip() for a in answers)
    if len(cleaned) != len(review.questions) or not all(cleaned):
        return _refuse(review, Refusal.INCOMPLETE)
    if any(len(a) > MAX_ANSWER_CHARS for a in cleaned):
        return _refuse(review, Refusal.TOO_LONG)
    answered = replace(review, answers=cleaned, answered_at=now)
    done, effects = _finish(answered, review.answer_task, now, calendar)
    answered = replace(answered, answer_task=done)
    clock, create = _new_task(answered, "review", review.reviewer, now, rules, calendar, view)
    effects.append(create)
    return Transition(replace(answered, status=Status.AWAITING_REVIEW, review_task=clock), tuple(effects))


def decide(
    review: Review,
    decision: Decision,
    now: datetime,
    rules: QcRules,
    calendar: WorkCalendar,
    view: QcView,
    comment: str = "",
    role: Role = "reviewer",
) -> Transition:
    """awaiting review -> returned (the card moves to the funnel's returned stage, its manager gets
    a task saying so, a note and a journal row) or confirmed (a note and a journal row)."""
    if role != "reviewer":
        return _refuse(review, Refusal.WRONG_ROLE)
    if (closed := _closed_refusal(review)) is not None:
        return _refuse(review, closed)
    if review.status is not Status.AWAITING_REVIEW or review.review_task is None:
        return _refuse(review, Refusal.NOT_YET)
    comment = comment.strip()
    if len(comment) > MAX_COMMENT_CHARS:
        return _refuse(review, Refusal.TOO_LONG)
    funnel = rules.funnel(review.funnel)
    if decision == "return" and funnel is None:
        raise ValueError(f"review {review.review_id}: funnel {review.funnel!r} is no longer configured")
    status = Status.RETURNED if decision == "return" else Status.CONFIRMED
    decided = replace(review, status=status, decided_at=now, comment=comment)
    done, effects = _finish(decided, review.review_task, now, calendar)
    decided = replace(decided, review_task=done)
    if decision == "return":
        assert funnel is not None
        effects.append(
            MoveStage(
                f"qc:move:{review.tenant}:{review.review_id}",
                review.entity,
                funnel.returned_stage,
                funnel.pipeline,
            )
        )
        if review.manager:
            effects.append(
                CreateTask(
                    effect_id=_task_id(review, "rework"),
                    entity=review.entity,
                    assignee=review.manager,
                    title=messages.rework_title(decided, view),
                    text=messages.rework_text(decided, view),
                    deadline=add_working_time(calendar, now, timedelta(minutes=rules.answer.minutes)),
                )
            )
    effects.append(
        AddNote(
            f"qc:note:{review.tenant}:{review.review_id}",
            review.entity,
            messages.decision_note(decided, view),
        )
    )
    effects.append(RecordViolation(_decision_row(decided, now)))
    return Transition(decided, tuple(effects))


def _decision_row(review: Review, now: datetime) -> Violation:
    kind = RETURNED_TO_WORK if review.status is Status.RETURNED else CONFIRMED
    return Violation(
        violation_id=f"{kind}:{review.review_id}",
        type=kind,
        entity=review.entity,
        manager=review.manager,
        occurred_at=now,
        details={
            "review": review.review_id,
            "kind": review.kind,
            "funnel": review.funnel,
            "stage": review.stage,
            "reason": review.reason_name,
            "reason_id": review.reason_id,
            "reviewer": review.reviewer,
            "comment": review.comment,
            "title": review.title,
            "rejected_at": review.rejected_at.isoformat(),
        },
    )


def _close(review: Review, now: datetime) -> Transition:
    task = review.open_task
    effects: list[Effect] = []
    closed = replace(review, status=Status.CLOSED, closed_at=now)
    if task is not None:
        effects.append(
            CompleteTask(
                f"qc:done:{review.tenant}:{review.review_id}:{task.operation}", task.task_ref, review.entity
            )
        )
        closed = _with_task(closed, replace(task, done_at=now))
    return Transition(closed, tuple(effects))


def card_changed(
    review: Review, stage: str, pipeline: str | None, now: datetime, rules: QcRules
) -> Transition:
    """The card was seen in `stage`. Out of its funnel's failure stages before a decision: the
    review ends quietly (its open task is closed; no message, no violation). Still rejected, or
    already decided (a return moves the card on purpose): unchanged."""
    if review.status not in OPEN:
        return Transition(review)
    funnel = rules.funnel(review.funnel)
    if funnel is not None and funnel.takes(review.entity.type, stage, pipeline):
        return Transition(review)
    return _close(review, now)


def card_gone(review: Review, now: datetime) -> Transition:
    """The card was deleted in the CRM: an open review ends quietly."""
    return _close(review, now) if review.status in OPEN else Transition(review)


# ----------------------------------------------------------------------------- deadlines


def _overdue_violation(
    review: Review, task: TaskClock, now: datetime, calendar: WorkCalendar
) -> RecordViolation:
    kind = ANSWER_OVERDUE if task.operation == "answer" else REVIEW_OVERDUE
    return RecordViolation(
        Violation(
            violation_id=f"{kind}:{review.review_id}",
            type=kind,
            entity=review.entity,
            manager=task.assignee,  # who let it run over: the manager, or the reviewer
            occurred_at=task.due_at,
            details={
                "review": review.review_id,
                "kind": review.kind,
                "operation": task.operation,
                "assignee": task.assignee,
                "card_manager": review.manager,
                "opened_at": task.opened_at.isoformat(),
                "due_at": task.due_at.isoformat(),
                "reason": review.reason_name,
                "title": review.title,
            },
        )
    )


def check_deadlines(review: Review, now: datetime, calendar: WorkCalendar, view: QcView) -> Transition:
    """The control loop of the task the review waits on: remind the assignee at the reminder point
    (not once the deadline has passed), journal the task as overdue at the deadline, tell the head
    at the escalation point; each once, whatever how often it is run."""
    task = review.open_task
    if task is None:
        return Transition(review)
    effects: list[Effect] = []
    updated = task
    if task.remind_at is not None and task.reminded_at is None and task.remind_at <= now < task.due_at:
        link = view.page_link(review, task.role, task.link_expires_at)
        effects.append(
            RemindUser(
                f"qc:remind:{review.tenant}:{review.review_id}:{task.operation}",
                task.assignee,
                review.entity,
                task.task_ref,
                messages.reminder_text(review, task, link, view),
            )
        )
        updated = replace(updated, reminded_at=now)
    if now >= task.due_at and task.overdue_at is None:
        effects.append(_overdue_violation(review, task, now, calendar))
        updated = replace(updated, overdue_at=now)
    if task.escalate_at is not None and task.escalated_at is None and now >= task.escalate_at:
        late = calendar.working_time_between(task.due_at, now).total_seconds() / 60
        effects.append(
            Notify(
                f"alert:qc_overdue:{review.tenant}:{review.review_id}:{task.operation}",
                messages.overdue_message(review, task, late, view),
                digest_line=messages.overdue_line(review, task, view),
            )
        )
        updated = replace(updated, escalated_at=now)
    if updated == task:
        return Transition(review)
    return Transition(_with_task(review, updated), tuple(effects))


def next_check_at(review: Review) -> datetime | None:
    """When `check_deadlines` has something to do next for this review (None: nothing more)."""
    task = review.open_task
    if task is None:
        return None
    pending = []
    if task.remind_at is not None and task.reminded_at is None and task.overdue_at is None:
        pending.append(task.remind_at)
    if task.overdue_at is None:
        pending.append(task.due_at)
    if task.escalate_at is not None and task.escalated_at is None:
        pending.append(task.escalate_at)
    return min(pending) if pending else None


def due_reviews(reviews: Iterable[Review], now: datetime) -> list[Review]:
    """The reviews a deadline sweep at `now` has work for."""
    return [r for r in reviews if (at := next_check_at(r)) is not None and at <= now]
