"""Quality control, pure: reason routing, the review's state machine, deadlines in working time
(nights, weekends, Russian holidays), reminders and escalation once, the reason-drift tests
against known p-values, reproducible spot-check samples, and the texts."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadwatch.calendar import BusinessCalendar
from leadwatch.effects import (
    AddNote,
    CompleteTask,
    CreateTask,
    MoveStage,
    Notify,
    RecordViolation,
    RemindUser,
)
from leadwatch.events import EntityRef, EntityType, LeadSnapshot
from leadwatch.messages import StaticNames, Writer
from workflows.qc import audit as qa
from workflows.qc import messages as qm
from workflows.qc import rules as qc
from workflows.qc.config import QcConfig

MSK = ZoneInfo("Europe/Moscow")
HOURS = [(time(9), time(13)), (time(14), time(18))]
# Russia 2025: Sat 1 Nov is worked (for Mon 3 Nov, a moved day off), Tue 4 Nov is Unity Day; the
# eves of public holidays are an hour shorter (Fri 7 Mar, Wed 30 Apr, Sat 1 Nov end at 17:00).
CALENDAR = BusinessCalendar(
    "Europe/Moscow", {d: HOURS for d in range(5)}, country="RU", pre_holiday_minutes=60
)

SECTION = {
    "reviewers": ["1", "2"],
    "pages_url": "https://lw.example.com",
    "funnels": [
        {
            "stages": ["JUNK"],
            "reason_field": "UF_CRM_1",
            "returned_stage": "1",
            "reasons": [
                {
                    "id": 44,
                    "name": "Price too high",
                    "action": "check",
                    "questions": ["Expected price?", "Discount?"],
                },
                {"id": 45, "name": "Spam", "action": "ignore"},
                {"id": 46, "name": "Not reached", "action": "check"},
            ],
        },
        {
            "entity": "deal",
            "stages": ["C1:LOSE", "C1:APOLOGY"],
            "reason_field": "UF_CRM_2",
            "returned_stage": "C1:NEW",
            "reasons": [
                {
                    "stage": "C1:APOLOGY",
                    "name": "Analysis of failure",
                    "action": "check",
                    "questions": ["What failed?"],
                },
                {"id": 51, "name": "Chose a competitor", "action": "ignore"},
            ],
        },
    ],
    "deadlines": {"answer": {"within": "2h", "remind": "50%"}, "review": {"within": "4h", "remind": "30m"}},
}


def rules_of(section: dict, crm: str = "bitrix24") -> qc.QcRules:
    return qc.QcRules.from_config(QcConfig.model_validate(section, context={"crm_kind": crm}))


RULES = rules_of(SECTION)
WRITER = Writer("en", MSK, StaticNames({"7": "Ivan <Sidorov>", "1": "Anna", "2": "Boris"}))
VIEW = qm.QcView(
    writer=WRITER,
    card_url=lambda e: f"https://acme.bitrix24.ru/crm/{e.type}/details/{e.id}/",
    page_link=lambda review, role, expires: (
        f"https://lw.example/qc/{review.review_id}/{role}?exp={int(expires.timestamp())}"
    ),
)
REJECTED = datetime(2025, 11, 14, 17, 30, tzinfo=MSK)  # Friday evening


def card(
    stage: str = "JUNK", reason: object = "44", entity: EntityRef | None = None, manager: str | None = "7"
) -> LeadSnapshot:
    entity = entity or EntityRef(EntityType.LEAD, "42")
    field = "UF_CRM_1" if entity.type is EntityType.LEAD else "UF_CRM_2"
    return LeadSnapshot(
        entity=entity,
        stage=stage,
        responsible=manager,
        created_at=datetime(2025, 11, 10, 9, 0, tzinfo=MSK),
        title="Pipes & <valves>",
        fields={field: reason} if reason is not None else {},
    )


def opened(snapshot: LeadSnapshot | None = None, rules: qc.QcRules = RULES) -> qc.Review:
    snapshot = snapshot or card()
    review = qc.open_review("acme", snapshot, qc.route_card(rules, snapshot), REJECTED, rules, "en")
    assert review is not None
    return review


def started(snapshot: LeadSnapshot | None = None, now: datetime = REJECTED) -> qc.Review:
    return qc.start(opened(snapshot), now, RULES, CALENDAR, VIEW).review


def answered(now: datetime = REJECTED + timedelta(days=3)) -> qc.Review:
    step = qc.submit_answers(started(), ["5k", "No"], now, RULES, CALENDAR, VIEW)
    assert step.ok
    return step.review


def kinds(step: qc.Transition) -> list[str]:
    return [type(e).__name__ for e in step.effects]


# ---------------------------------------------------------------------------- routing


@pytest.mark.parametrize(
    ("reason", "action"),
    [("44", "check"), ("45", "ignore"), (46, "check"), (["45"], "ignore"), ({"id": 44}, "check")],
)
def test_a_listed_reason_routes_as_listed_whatever_shape_the_field_has(reason, action):
    routing = qc.route_card(RULES, card(reason=reason))
    assert routing.action == action and routing.funnel is not None and routing.funnel.name == "leads"
    assert routing.reason is not None and "is listed" in routing.why


def test_a_failure_stage_can_be_the_reason_itself():
    deal = EntityRef(EntityType.DEAL, "7")
    routing = qc.route_card(RULES, card("C1:APOLOGY", reason="51", entity=deal))
    assert routing.action == "check" and routing.reason_name == "Analysis of failure"
    assert "stage 'C1:APOLOGY' is the reason" in routing.why
    # The other failure stage reads its reason field.
    assert qc.route_card(RULES, card("C1:LOSE", reason="51", entity=deal)).action == "ignore"


@pytest.mark.parametrize("reason", ["99", None, "", 0, [], "0"])
def test_an_unknown_or_missing_reason_is_checked_by_default_and_says_why(reason):
    routing = qc.route_card(RULES, card(reason=reason))
    assert routing.action == "check" and routing.reason is None
    assert "handled as unknown reasons are (check)" in routing.why
    lenient = rules_of({**SECTION, "unknown_reasons": "ignore"})
    assert qc.route_card(lenient, card(reason=reason)).action == "ignore"


def test_an_unknown_reason_keeps_its_id_for_the_reviewer_and_the_audit():
    routing = qc.route_card(RULES, card(reason="99"))
    assert routing.reason_id == "99" and routing.reason_name == "99"


@pytest.mark.parametrize(
    ("stage", "entity"),
    [
        ("IN_PROCESS", EntityType.LEAD),
        ("CONVERTED", EntityType.LEAD),
        ("C1:LOSE", EntityType.LEAD),  # a deal stage on a lead: not this funnel's
        ("JUNK", EntityType.DEAL),
        ("LOSE", EntityType.DEAL),  # the general deal funnel is not under QC here
    ],
)
def test_a_stage_outside_the_funnels_is_not_a_rejection(stage, entity):
    routing = qc.route_card(RULES, card(stage, entity=EntityRef(entity, "1")))
    assert routing.action == "none" and routing.funnel is None


def test_amocrm_lost_status_is_told_apart_by_pipeline():
    amo = rules_of(
        {
            "reviewers": [1],
            "pages_url": "https://lw.example.com",
            "funnels": [
                {
                    "pipeline": 100,
                    "returned_stage": 1001,
                    "reasons": [{"id": 9, "name": "Дорого", "action": "check"}],
                },
                {
                    "pipeline": 200,
                    "returned_stage": 2001,
                    "reasons": [{"id": 9, "name": "Дорого", "action": "ignore"}],
                },
            ],
        },
        crm="amocrm",
    )
    fields = {"loss_reason_id": 9}
    first = qc.route(amo, EntityType.LEAD, "143", "100", fields)
    second = qc.route(amo, EntityType.LEAD, "143", "200", fields)
    assert (first.action, first.funnel and first.funnel.returned_stage) == ("check", "1001")
    assert (second.action, second.funnel and second.funnel.returned_stage) == ("ignore", "2001")
    assert qc.route(amo, EntityType.LEAD, "143", "300", fields).action == "none"


def test_questions_come_from_the_reason_then_the_tenant_then_the_standard_one():
    assert opened(card(reason="44")).questions == ("Expected price?", "Discount?")
    assert opened(card(reason="46")).questions == (qm.TEXTS["en"].default_question,)
    own = rules_of({**SECTION, "default_questions": ["What happened?"]})
    assert opened(card(reason="46"), own).questions == ("What happened?",)
    routing = qc.route_card(RULES, card(reason="99"))
    assert qc.questions_for(routing, RULES, "ru") == (qm.TEXTS["ru"].default_question,)


def test_an_ignored_reason_opens_no_review():
    snapshot = card(reason="45")
    assert qc.open_review("acme", snapshot, qc.route_card(RULES, snapshot), REJECTED, RULES, "en") is None


def test_the_reviewer_is_never_the_rejecting_manager_when_another_is_there():
    for n in range(40):
        assert qc.pick_reviewer(["1", "2"], "1", f"lead:{n}:0") == "2"
    assert qc.pick_reviewer(["1"], "1", "lead:1:0") == "1"  # nobody else: the only reviewer
    picked = {qc.pick_reviewer(["1", "2", "3"], "9", f"lead:{n}:0") for n in range(40)}
    assert picked == {"1", "2", "3"}  # spread over all of them
    assert qc.pick_reviewer(["1", "2", "3"], "9", "lead:5:0") == qc.pick_reviewer(
        ["1", "2", "3"], "9", "lead:5:0"
    )


def test_one_rejection_seen_twice_is_one_review_and_a_later_one_another():
    assert opened().review_id == opened().review_id == f"lead:42:{int(REJECTED.timestamp())}"
    again = qc.open_review(
        "acme", card(), qc.route_card(RULES, card()), REJECTED + timedelta(days=9), RULES, "en"
    )
    assert again is not None and again.review_id != opened().review_id


# ---------------------------------------------------------------------------- working time


@pytest.mark.parametrize(
    ("start", "hours", "deadline"),
    [
        # Within a day, over the lunch break.
        (datetime(2025, 11, 11, 12, 30, tzinfo=MSK), 1, datetime(2025, 11, 11, 14, 30, tzinfo=MSK)),
        # Over a night.
        (datetime(2025, 11, 11, 17, 0, tzinfo=MSK), 2, datetime(2025, 11, 12, 10, 0, tzinfo=MSK)),
        # Friday 17:30 with 2 working hours: half an hour on Friday, the rest on Monday.
        (datetime(2025, 11, 14, 17, 30, tzinfo=MSK), 2, datetime(2025, 11, 17, 10, 30, tzinfo=MSK)),
        # The worked Saturday before Unity Day ends at 17:00; Mon 3 and Tue 4 Nov are off.
        (datetime(2025, 11, 1, 16, 30, tzinfo=MSK), 2, datetime(2025, 11, 5, 10, 30, tzinfo=MSK)),
        # 30 April ends at 17:00; 1-4 May off (2 May a moved day off): Monday 5 May.
        (datetime(2025, 4, 30, 16, 0, tzinfo=MSK), 2, datetime(2025, 5, 5, 10, 0, tzinfo=MSK)),
        # Opened in the night or on a holiday: counted from the next opening.
        (datetime(2025, 11, 4, 12, 0, tzinfo=MSK), 1, datetime(2025, 11, 5, 10, 0, tzinfo=MSK)),
        (datetime(2025, 11, 12, 3, 0, tzinfo=MSK), 4, datetime(2025, 11, 12, 13, 0, tzinfo=MSK)),
        # Landing on a close stays there (18:00, not the next morning).
        (datetime(2025, 11, 12, 16, 0, tzinfo=MSK), 2, datetime(2025, 11, 12, 18, 0, tzinfo=MSK)),
    ],
)
def test_a_deadline_counts_only_working_time(start, hours, deadline):
    found = qc.add_working_time(CALENDAR, start, timedelta(hours=hours))
    assert found == deadline
    assert CALENDAR.working_time_between(start, found) == timedelta(hours=hours)


def test_a_zero_amount_from_outside_working_time_is_the_next_opening():
    saturday = datetime(2025, 11, 15, 12, 0, tzinfo=MSK)
    assert qc.add_working_time(CALENDAR, saturday, timedelta(0)) == datetime(2025, 11, 17, 9, 0, tzinfo=MSK)
    with pytest.raises(ValueError, match="negative"):
        qc.add_working_time(CALENDAR, saturday, timedelta(minutes=-1))
    with pytest.raises(ValueError, match="aware"):
        qc.add_working_time(CALENDAR, datetime(2025, 11, 15, 12, 0), timedelta(0))


moments = st.datetimes(
    min_value=datetime(2024, 12, 1), max_value=datetime(2026, 6, 30), timezones=st.just(MSK)
)


@settings(max_examples=200, deadline=None)
@given(start=moments, minutes=st.integers(min_value=1, max_value=5 * 8 * 60))
def test_a_deadline_is_inside_working_time_never_before_the_start_and_exactly_that_long(start, minutes):
    amount = timedelta(minutes=minutes)
    deadline = qc.add_working_time(CALENDAR, start, amount)
    assert deadline > start
    # Inside an interval, or on its close: the last working minute is working time.
    assert CALENDAR.is_working_time(deadline - timedelta(microseconds=1))
    assert CALENDAR.working_time_between(start, deadline) == amount


def test_a_task_clock_puts_its_points_in_working_time():
    friday = datetime(2025, 11, 14, 17, 30, tzinfo=MSK)
    half = qc.task_clock(
        "answer", "7", "t", friday, qc.DeadlineRule(120, remind_percent=50), CALENDAR, timedelta(14)
    )
    assert half.due_at == datetime(2025, 11, 17, 10, 30, tzinfo=MSK)
    assert half.remind_at == datetime(2025, 11, 17, 9, 30, tzinfo=MSK)  # an hour of working time in
    assert half.escalate_at == half.due_at
    before = qc.task_clock(
        "answer",
        "7",
        "t",
        friday,
        qc.DeadlineRule(120, remind_percent=None, remind_before=30, escalate_after=60),
        CALENDAR,
        timedelta(14),
    )
    assert before.remind_at == datetime(2025, 11, 17, 10, 0, tzinfo=MSK)
    assert before.escalate_at == datetime(2025, 11, 17, 11, 30, tzinfo=MSK)
    quiet = qc.task_clock(
        "review",
        "1",
        "t",
        friday,
        qc.DeadlineRule(120, remind_percent=None, escalate=False),
        CALENDAR,
        timedelta(14),
    )
    assert quiet.remind_at is None and quiet.escalate_at is None
    # The link outlives the deadline: a late answer is still taken.
    assert half.link_expires_at >= half.due_at + timedelta(days=14)


# ---------------------------------------------------------------------------- transitions


def test_start_puts_the_questions_to_the_manager_as_a_crm_task():
    review = opened()
    assert review.status is qc.Status.OPENED and review.reviewer in ("1", "2")
    step = qc.start(review, REJECTED, RULES, CALENDAR, VIEW)
    assert step.ok and step.review.status is qc.Status.AWAITING_ANSWERS
    (task,) = step.effects
    assert isinstance(task, CreateTask)
    assert task.assignee == "7" and task.entity == review.entity
    assert task.deadline == datetime(2025, 11, 17, 10, 30, tzinfo=MSK)
    assert task.link is not None and task.link in task.text and "/manager?" in task.link
    assert task.title == "Rejected «Pipes & <valves>»: answer the questions"  # plain text, not HTML
    assert step.review.answer_task is not None and step.review.answer_task.task_ref == task.effect_id
    again = qc.start(step.review, REJECTED, RULES, CALENDAR, VIEW)
    assert again.refused is qc.Refusal.ALREADY_STARTED and again.review == step.review and not again.effects


def test_a_card_without_a_manager_and_a_spot_check_go_straight_to_the_reviewer():
    step = qc.start(opened(card(manager=None)), REJECTED, RULES, CALENDAR, VIEW)
    assert step.review.status is qc.Status.AWAITING_REVIEW and step.review.answer_task is None
    assert isinstance(step.effects[0], CreateTask) and step.effects[0].assignee == step.review.reviewer
    spam = card(reason="45")
    spot = qc.open_spot_check("acme", spam, qc.route_card(RULES, spam), REJECTED, "2025-W46", RULES)
    assert spot.review_id == "spot:lead:42:2025-W46" and spot.questions == () and spot.reviewer in ("1", "2")
    step = qc.start(spot, REJECTED, RULES, CALENDAR, VIEW)
    assert step.review.status is qc.Status.AWAITING_REVIEW
    task = step.effects[0]
    assert isinstance(task, CreateTask) and task.title.startswith("Spot check of a rejection")
    assert "/reviewer?" in (task.link or "")


def test_answers_close_the_managers_task_and_open_the_reviewers():
    review = started()
    now = datetime(2025, 11, 17, 10, 0, tzinfo=MSK)  # before the deadline
    step = qc.submit_answers(review, ["  5k  ", "No"], now, RULES, CALENDAR, VIEW)
    assert step.ok and step.review.status is qc.Status.AWAITING_REVIEW
    assert step.review.answers == ("5k", "No") and step.review.answered_at == now
    assert kinds(step) == ["CompleteTask", "CreateTask"]
    done, create = step.effects
    assert isinstance(done, CompleteTask) and done.task_ref == review.answer_task.task_ref
    assert isinstance(create, CreateTask) and create.assignee == review.reviewer
    assert create.deadline == datetime(2025, 11, 17, 15, 0, tzinfo=MSK)  # 4 working hours, lunch skipped
    assert step.review.answer_task.done_at == now


@pytest.mark.parametrize(
    ("answers", "refusal"),
    [(["5k"], "incomplete"), (["5k", "  "], "incomplete"), (["5k", "x" * 2001], "too_long")],
)
def test_incomplete_or_oversized_answers_are_refused_and_change_nothing(answers, refusal):
    review = started()
    step = qc.submit_answers(review, answers, REJECTED, RULES, CALENDAR, VIEW)
    assert step.refused == refusal and step.review == review and not step.effects


def test_answers_twice_or_with_the_wrong_link_are_refused():
    review = answered()
    step = qc.submit_answers(review, ["a", "b"], REJECTED, RULES, CALENDAR, VIEW)
    assert step.refused is qc.Refusal.ALREADY_ANSWERED and step.review == review and not step.effects
    step = qc.submit_answers(started(), ["a", "b"], REJECTED, RULES, CALENDAR, VIEW, role="reviewer")
    assert step.refused is qc.Refusal.WRONG_ROLE
    assert (
        qc.submit_answers(opened(), ["a", "b"], REJECTED, RULES, CALENDAR, VIEW).refused is qc.Refusal.NOT_YET
    )


def test_a_decision_before_the_answers_is_refused():
    review = started()
    for decision in ("return", "confirm"):
        step = qc.decide(review, decision, REJECTED, RULES, CALENDAR, VIEW)
        assert step.refused is qc.Refusal.NOT_YET and step.review == review and not step.effects
    assert (
        qc.decide(answered(), "return", REJECTED, RULES, CALENDAR, VIEW, role="manager").refused
        is qc.Refusal.WRONG_ROLE
    )


def test_return_to_work_moves_the_card_tells_the_manager_notes_and_journals():
    review = answered(datetime(2025, 11, 17, 10, 0, tzinfo=MSK))
    now = datetime(2025, 11, 17, 11, 0, tzinfo=MSK)
    step = qc.decide(review, "return", now, RULES, CALENDAR, VIEW, comment="Call them back")
    assert step.ok and step.review.status is qc.Status.RETURNED and step.review.decided_at == now
    assert kinds(step) == ["CompleteTask", "MoveStage", "CreateTask", "AddNote", "RecordViolation"]
    move = next(e for e in step.effects if isinstance(e, MoveStage))
    assert move.stage == "1" and move.entity == review.entity
    tell = next(e for e in step.effects if isinstance(e, CreateTask))
    assert tell.assignee == "7" and tell.title == "Returned to work: «Pipes & <valves>»"
    assert "Call them back" in tell.text
    note = next(e for e in step.effects if isinstance(e, AddNote))
    assert "returned to work" in note.text and "Call them back" in note.text
    row = next(e for e in step.effects if isinstance(e, RecordViolation)).violation
    assert (
        row.type == "qc_returned_to_work" and row.manager == "7" and row.details["reason"] == "Price too high"
    )
    assert row.violation_id == f"qc_returned_to_work:{review.review_id}"


def test_confirm_notes_and_journals_and_moves_nothing():
    review = answered(datetime(2025, 11, 17, 10, 0, tzinfo=MSK))
    step = qc.decide(review, "confirm", datetime(2025, 11, 17, 11, 0, tzinfo=MSK), RULES, CALENDAR, VIEW)
    assert step.review.status is qc.Status.CONFIRMED
    assert kinds(step) == ["CompleteTask", "AddNote", "RecordViolation"]
    assert step.effects[-1].violation.type == "qc_confirmed"


@pytest.mark.parametrize(
    ("first", "second"), [("return", "confirm"), ("confirm", "return"), ("return", "return")]
)
def test_a_second_decision_is_refused_and_changes_nothing(first, second):
    decided = qc.decide(answered(), first, REJECTED, RULES, CALENDAR, VIEW).review
    step = qc.decide(decided, second, REJECTED, RULES, CALENDAR, VIEW)
    assert step.refused is qc.Refusal.ALREADY_DECIDED and step.review == decided and not step.effects
    assert (
        qc.submit_answers(decided, ["a", "b"], REJECTED, RULES, CALENDAR, VIEW).refused
        is qc.Refusal.ALREADY_DECIDED
    )


def test_a_card_leaving_the_rejected_stage_ends_the_review_quietly():
    review = started()
    now = datetime(2025, 11, 17, 9, 10, tzinfo=MSK)
    assert qc.card_changed(review, "JUNK", None, now, RULES).review == review  # still rejected
    step = qc.card_changed(review, "IN_PROCESS", None, now, RULES)
    assert step.review.status is qc.Status.CLOSED and step.review.closed_at == now
    # Its open task is closed; nobody is told, nothing journaled.
    assert kinds(step) == ["CompleteTask"]
    assert not any(isinstance(e, Notify | RecordViolation) for e in step.effects)
    closed = step.review
    assert qc.submit_answers(closed, ["a", "b"], now, RULES, CALENDAR, VIEW).refused is qc.Refusal.CLOSED
    assert qc.decide(closed, "confirm", now, RULES, CALENDAR, VIEW).refused is qc.Refusal.CLOSED
    assert qc.check_deadlines(closed, now + timedelta(days=30), CALENDAR, VIEW).effects == ()
    assert qc.card_changed(closed, "JUNK", None, now, RULES).review == closed


def test_a_quiet_close_before_any_task_and_after_a_decision():
    step = qc.card_changed(opened(), "NEW", None, REJECTED, RULES)
    assert step.review.status is qc.Status.CLOSED and step.effects == ()
    returned = qc.decide(answered(), "return", REJECTED, RULES, CALENDAR, VIEW).review
    # The return moved the card on purpose: the review stays decided.
    assert qc.card_changed(returned, "1", None, REJECTED, RULES).review == returned
    gone = qc.card_gone(started(), REJECTED)
    assert gone.review.status is qc.Status.CLOSED and kinds(gone) == ["CompleteTask"]


def test_an_expired_link_is_refused_and_changes_nothing():
    review = started()
    task = review.answer_task
    assert (
        qc.link_refusal(review, "manager", task.link_expires_at, task.link_expires_at - timedelta(seconds=1))
        is None
    )
    assert (
        qc.link_refusal(review, "manager", task.link_expires_at, task.link_expires_at) is qc.Refusal.EXPIRED
    )
    assert qc.link_refusal(review, "reviewer", task.link_expires_at, REJECTED) is qc.Refusal.NOT_YET


def test_a_review_round_trips_through_its_stored_form():
    for review in (
        opened(),
        started(),
        answered(),
        qc.decide(answered(), "return", REJECTED, RULES, CALENDAR, VIEW).review,
    ):
        assert qc.Review.from_dict(review.to_dict()) == replace(
            review,
            rejected_at=review.rejected_at.astimezone(UTC),
            decided_at=review.decided_at and review.decided_at.astimezone(UTC),
            answered_at=review.answered_at and review.answered_at.astimezone(UTC),
        )


# ---------------------------------------------------------------------------- the control loop


def test_remind_at_the_point_then_journal_and_escalate_once_when_overdue():
    review = started()  # Fri 17:30, 2 working hours: reminder Mon 09:30, deadline Mon 10:30
    quiet = qc.check_deadlines(review, datetime(2025, 11, 17, 9, 29, tzinfo=MSK), CALENDAR, VIEW)
    assert quiet.effects == () and quiet.review == review
    assert qc.next_check_at(review) == datetime(2025, 11, 17, 9, 30, tzinfo=MSK)

    step = qc.check_deadlines(review, datetime(2025, 11, 17, 9, 30, tzinfo=MSK), CALENDAR, VIEW)
    (remind,) = step.effects
    assert (
        isinstance(remind, RemindUser)
        and remind.user == "7"
        and remind.task_ref == review.answer_task.task_ref
    )
    assert "by Mon 17.11 10:30" in remind.text and "https://lw.example/qc/" in remind.text
    review = step.review
    assert qc.check_deadlines(review, datetime(2025, 11, 17, 10, 0, tzinfo=MSK), CALENDAR, VIEW).effects == ()
    assert qc.next_check_at(review) == datetime(2025, 11, 17, 10, 30, tzinfo=MSK)

    step = qc.check_deadlines(review, datetime(2025, 11, 17, 10, 31, tzinfo=MSK), CALENDAR, VIEW)
    assert kinds(step) == ["RecordViolation", "Notify"]
    row = step.effects[0].violation
    assert row.type == "qc_answer_overdue" and row.manager == "7"
    assert row.occurred_at == datetime(2025, 11, 17, 10, 30, tzinfo=MSK)
    alert = step.effects[1]
    assert (
        qm.OVERDUE.of(alert.text)
        and "Ivan &lt;Sidorov&gt;" in alert.text
        and "overdue by 1 min" in alert.text
    )
    assert alert.digest_line is not None and alert.digest_line.startswith(qm.OVERDUE.icon)
    review = step.review
    assert qc.next_check_at(review) is None
    for later in (timedelta(hours=1), timedelta(days=3)):
        again = qc.check_deadlines(review, datetime(2025, 11, 17, 10, 31, tzinfo=MSK) + later, CALENDAR, VIEW)
        assert again.effects == () and again.review == review


def test_escalation_waits_for_its_own_point_and_comes_once():
    rules = rules_of(
        {**SECTION, "deadlines": {"answer": {"within": "2h", "remind": "off", "escalate_after": "1h"}}}
    )
    review = qc.start(opened(rules=rules), REJECTED, rules, CALENDAR, VIEW).review
    at_due = qc.check_deadlines(review, datetime(2025, 11, 17, 10, 30, tzinfo=MSK), CALENDAR, VIEW)
    assert kinds(at_due) == ["RecordViolation"]
    assert qc.next_check_at(at_due.review) == datetime(2025, 11, 17, 11, 30, tzinfo=MSK)
    escalated = qc.check_deadlines(at_due.review, datetime(2025, 11, 17, 11, 30, tzinfo=MSK), CALENDAR, VIEW)
    assert kinds(escalated) == ["Notify"] and "overdue by 1 h 00 min" in escalated.effects[0].text
    assert (
        qc.check_deadlines(escalated.review, datetime(2025, 11, 18, 9, 0, tzinfo=MSK), CALENDAR, VIEW).effects
        == ()
    )


def test_a_sweep_that_comes_late_skips_the_reminder_and_escalates_once():
    review = started()
    step = qc.check_deadlines(review, datetime(2025, 11, 18, 12, 0, tzinfo=MSK), CALENDAR, VIEW)
    assert kinds(step) == ["RecordViolation", "Notify"]
    assert step.review.answer_task.reminded_at is None


def test_a_late_answer_is_journaled_as_overdue_even_if_no_sweep_saw_it():
    late = datetime(2025, 11, 17, 12, 0, tzinfo=MSK)
    step = qc.submit_answers(started(), ["a", "b"], late, RULES, CALENDAR, VIEW)
    assert kinds(step) == ["CompleteTask", "RecordViolation", "CreateTask"]
    row = step.effects[1].violation
    # The same row a sweep would write: the journal keeps one.
    swept = qc.check_deadlines(started(), late, CALENDAR, VIEW).effects[0].violation
    assert row.violation_id == swept.violation_id == f"qc_answer_overdue:{step.review.review_id}"


def test_the_review_task_has_its_own_deadline_reminder_and_violation():
    review = answered(datetime(2025, 11, 17, 10, 0, tzinfo=MSK))  # review due 15:00, reminder 30 min before
    assert review.review_task.remind_at == datetime(2025, 11, 17, 14, 30, tzinfo=MSK)
    remind = qc.check_deadlines(review, datetime(2025, 11, 17, 14, 45, tzinfo=MSK), CALENDAR, VIEW)
    assert kinds(remind) == ["RemindUser"] and remind.effects[0].user == review.reviewer
    overdue = qc.check_deadlines(remind.review, datetime(2025, 11, 17, 15, 0, tzinfo=MSK), CALENDAR, VIEW)
    row = overdue.effects[0].violation
    assert (
        row.type == "qc_review_overdue"
        and row.manager == review.reviewer
        and row.details["card_manager"] == "7"
    )
    assert [
        r.review_id
        for r in qc.due_reviews([review, overdue.review], datetime(2025, 11, 17, 15, 0, tzinfo=MSK))
    ] == [review.review_id]


# ---------------------------------------------------------------------------- the exact tests


def test_binomial_tail_against_hand_computed_values():
    # P(X >= 8), X ~ Bin(10, 1/2) = (C(10,8) + C(10,9) + C(10,10)) / 2^10 = 56/1024.
    assert qa.binomial_tail(8, 10, Fraction(1, 2)) == pytest.approx(56 / 1024, rel=1e-15)
    # P(X >= 9), X ~ Bin(12, 0.1): 220*.1^9*.9^3 + 66*.1^10*.9^2 + 12*.1^11*.9 + .1^12
    # = (160380 + 5346 + 108 + 1) * 1e-12.
    assert qa.binomial_tail(9, 12, Fraction(1, 10)) == pytest.approx(165835e-12, rel=1e-12)
    assert qa.binomial_tail(0, 12, Fraction(1, 10)) == 1.0
    assert qa.binomial_tail(13, 12, Fraction(1, 10)) == 0.0
    assert qa.binomial_tail(3, 3, 1) == 1.0 and qa.binomial_tail(1, 3, 0) == 0.0


def test_fisher_against_known_values():
    # Fisher's lady tasting tea (The Design of Experiments, 1935): 3 of 4 cups right,
    # one-sided p = (C(4,3)C(4,1) + C(4,4)C(4,0)) / C(8,4) = 17/70.
    assert qa.fisher_greater(3, 1, 1, 3) == pytest.approx(17 / 70, rel=1e-15)
    # Wikipedia's "Fisher's exact test" example, transposed to the upper tail: [[11, 3], [1, 9]],
    # p = (C(12,11)C(12,3) + C(12,12)C(12,2)) / C(24,14) = 2706/1961256 ~ 0.001379728.
    assert qa.fisher_greater(11, 3, 1, 9) == pytest.approx(2706 / 1961256, rel=1e-15)
    assert qa.fisher_greater(11, 3, 1, 9) == pytest.approx(0.001379728, abs=1e-9)
    assert qa.fisher_greater(0, 5, 0, 5) == 1.0


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 60), ignored=st.integers(0, 60), base=st.integers(1, 200))
def test_the_binomial_p_value_is_a_probability_falling_with_the_count(n, ignored, base):
    rate = Fraction(min(ignored, base), base)
    tails = [qa.binomial_tail(k, n, rate) for k in range(n + 2)]
    assert all(0.0 <= p <= 1.0 for p in tails)
    assert all(later <= earlier for earlier, later in itertools.pairwise(tails))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 40), c=st.integers(0, 60), d=st.integers(0, 60))
def test_the_fisher_p_value_is_a_probability_falling_with_the_count(n, c, d):
    values = [qa.fisher_greater(a, n - a, c, d) for a in range(n + 1)]
    assert all(0.0 <= p <= 1.0 for p in values)
    assert all(later <= earlier + 1e-15 for earlier, later in itertools.pairwise(values))


# ---------------------------------------------------------------------------- the drift audit

AUDIT = qa.AuditRules(baseline_weeks=8, significance=0.01, min_week=5, min_baseline=20)
W46 = qa.IsoWeek(2025, 46)


def test_a_real_rise_is_flagged_against_the_own_baseline_and_the_department():
    week = {"7": qa.Counts(9, 12), "8": qa.Counts(1, 10), "9": qa.Counts(2, 10)}
    baseline = {"7": qa.Counts(10, 100), "8": qa.Counts(8, 80), "9": qa.Counts(9, 90)}
    result = qa.drift(week, baseline, AUDIT, W46)
    by = {v.subject: v for v in result.verdicts}
    dumping = by["7"]
    assert dumping.flagged and not dumping.too_little_data
    assert dumping.p_baseline == pytest.approx(165835e-12, rel=1e-12)  # 9 of 12 against 10%
    assert dumping.rest == qa.Counts(3, 20)
    assert dumping.p_rest == pytest.approx(qa.fisher_greater(9, 3, 3, 17)) and dumping.p_rest < 0.01
    assert not by["8"].flagged and not by["9"].flagged
    assert by[None].week == qa.Counts(12, 32) and by[None].flagged  # the department rose too
    assert [v.subject for v in result.flagged] == [None, "7"]


def test_noise_stays_quiet():
    week = {"7": qa.Counts(2, 12), "8": qa.Counts(1, 10)}
    baseline = {"7": qa.Counts(10, 100), "8": qa.Counts(8, 80)}
    result = qa.drift(week, baseline, AUDIT, W46)
    assert not result.flagged
    seven = next(v for v in result.verdicts if v.subject == "7")
    assert seven.p_baseline == pytest.approx(qa.binomial_tail(2, 12, Fraction(1, 10)))
    assert 0.3 < seven.p_baseline < 0.4  # 2 of 12 against 10%: entirely ordinary


def test_two_of_three_is_too_little_data_not_a_verdict():
    result = qa.drift({"7": qa.Counts(2, 3)}, {"7": qa.Counts(10, 100)}, AUDIT, W46)
    seven = next(v for v in result.verdicts if v.subject == "7")
    assert seven.too_little_data and not seven.flagged
    assert seven.p_baseline is None and seven.p_rest is None


def test_a_thin_baseline_leaves_the_department_comparison():
    week = {"new": qa.Counts(8, 10), "8": qa.Counts(2, 20), "9": qa.Counts(1, 20)}
    result = qa.drift(
        week, {"new": qa.Counts(1, 6), "8": qa.Counts(9, 90), "9": qa.Counts(9, 90)}, AUDIT, W46
    )
    new = next(v for v in result.verdicts if v.subject == "new")
    assert new.p_baseline is None and new.p_rest is not None and new.flagged and not new.too_little_data


def test_a_clean_baseline_does_not_make_one_ignored_reason_an_alarm():
    result = qa.drift({"7": qa.Counts(1, 10)}, {"7": qa.Counts(0, 40)}, AUDIT, W46)
    seven = next(v for v in result.verdicts if v.subject == "7")
    assert seven.p_baseline is not None and seven.p_baseline > 0.1 and not seven.flagged
    assert qa.baseline_rate(qa.Counts(0, 40)) == Fraction(1, 82)


def test_the_week_is_counted_by_local_dates():
    lead = EntityRef(EntityType.LEAD, "1")
    records = [
        qa.RejectionRecord(lead, "7", datetime(2025, 11, 16, 23, 30, tzinfo=MSK), True),  # Sun: week 46
        qa.RejectionRecord(
            lead, "7", datetime(2025, 11, 16, 21, 30, tzinfo=UTC), False
        ),  # Mon 00:30 MSK: week 47
        qa.RejectionRecord(lead, "7", datetime(2025, 11, 10, 0, 0, tzinfo=MSK), False),  # Mon: week 46
        qa.RejectionRecord(
            lead, "7", datetime(2025, 9, 21, 12, 0, tzinfo=MSK), True
        ),  # week 38: in the baseline
        qa.RejectionRecord(lead, "7", datetime(2025, 9, 14, 12, 0, tzinfo=MSK), True),  # week 37: too old
        qa.RejectionRecord(lead, None, datetime(2025, 11, 12, 12, 0, tzinfo=MSK), True),
    ]
    week, baseline = qa.tally(records, W46, 8, MSK)
    assert week == {"7": qa.Counts(1, 2), None: qa.Counts(1, 1)}
    assert baseline == {"7": qa.Counts(1, 1)}
    result = qa.audit(records, W46, AUDIT, MSK)
    assert result.verdicts[0].week == qa.Counts(2, 3) and [v.subject for v in result.verdicts] == [None, "7"]


def test_the_audit_runs_once_a_week_at_its_time_and_catches_up():
    rules = qa.AuditRules(weekday=0, at=time(9, 30))
    monday = datetime(2025, 11, 17, 9, 29, tzinfo=MSK)
    assert qa.audit_due(monday, qa.IsoWeek(2025, 45), rules, MSK) is None
    assert qa.audit_due(monday + timedelta(minutes=1), qa.IsoWeek(2025, 45), rules, MSK) == W46
    assert qa.audit_due(monday + timedelta(minutes=1), W46, rules, MSK) is None
    assert qa.audit_due(datetime(2025, 11, 21, 12, 0, tzinfo=MSK), W46, rules, MSK) is None
    # A missed Monday: the owed week goes out on the next run.
    assert qa.audit_due(monday, qa.IsoWeek(2025, 44), rules, MSK) == qa.IsoWeek(2025, 45)
    assert qa.next_audit_at(monday, rules, MSK) == datetime(2025, 11, 17, 9, 30, tzinfo=MSK)
    assert qa.next_audit_at(monday + timedelta(hours=1), rules, MSK) == datetime(
        2025, 11, 24, 9, 30, tzinfo=MSK
    )
    assert qa.IsoWeek.parse("2025-W46") == W46 and W46.first_day == date(2025, 11, 10)
    assert qa.IsoWeek(2025, 1).shifted(-1) == qa.IsoWeek(2024, 52)


# ---------------------------------------------------------------------------- spot checks


POOL = [EntityRef(EntityType.LEAD, str(n)) for n in range(50)]


def test_a_sample_is_the_same_for_a_tenant_and_week_whatever_the_order():
    first = qa.sample("acme", W46, POOL, 5)
    shuffled = list(POOL)
    random.Random(1).shuffle(shuffled)
    assert qa.sample("acme", W46, shuffled, 5) == first
    assert len(first) == len(set(first)) == 5 and set(first) <= set(POOL)


def test_a_sample_differs_across_weeks_and_tenants():
    weeks = {tuple(qa.sample("acme", W46.shifted(n), POOL, 5)) for n in range(6)}
    assert len(weeks) == 6
    assert qa.sample("other", W46, POOL, 5) != qa.sample("acme", W46, POOL, 5)
    assert set(qa.sample("acme", W46, POOL[:3], 5)) == set(POOL[:3])  # fewer than asked: all of them
    assert qa.sample("acme", W46, [], 5) == [] and qa.sample("acme", W46, POOL, 0) == []


def test_spot_checks_come_from_the_flagged_managers_ignored_rejections():
    at = datetime(2025, 11, 12, 12, 0, tzinfo=MSK)
    records = [qa.RejectionRecord(POOL[n], "7", at, n < 9) for n in range(12)]
    records += [qa.RejectionRecord(POOL[20 + n], "8", at, n < 1) for n in range(10)]
    records += [qa.RejectionRecord(POOL[40 + n], "9", at, n < 2) for n in range(10)]
    rules = replace(AUDIT, min_baseline=5, sample_size=3)
    result = qa.audit(records, W46, rules, MSK)
    # No earlier weeks: the department has no baseline, manager 7 stands out against the rest.
    assert [v.subject for v in result.flagged] == ["7"] and result.verdicts[0].too_little_data
    picked = qa.spot_checks("acme", result, records, rules, MSK)
    assert len(picked) == 3 and all(int(e.id) < 9 for e in picked)  # manager 7's ignored ones
    assert picked == qa.spot_checks("acme", result, records, rules, MSK)
    every = qa.spot_checks("acme", result, records, replace(rules, sample_when="always"), MSK)
    assert len(every) == 3 and all(r.ignored for r in records if r.entity in every)


# ---------------------------------------------------------------------------- texts


def test_the_audit_alert_gives_counts_and_p_values_and_says_too_little_data():
    week = {"7": qa.Counts(9, 12), "8": qa.Counts(1, 10), "9": qa.Counts(2, 3)}
    baseline = {"7": qa.Counts(10, 100), "8": qa.Counts(8, 80), "9": qa.Counts(3, 30)}
    result = qa.drift(week, baseline, AUDIT, W46)
    text = qm.audit_message(result, WRITER)
    assert qm.AUDIT.of(text) and "10.11.2025 .. 16.11.2025" in text
    assert "Ivan &lt;Sidorov&gt;: 12 rejections, 9 with an ignored reason (75.0%)" in text
    assert "own baseline over 8 weeks: 10.0% (10 of 100), p &lt; 0.001" in text
    assert (
        "user 9: 3 rejections, 2 with an ignored reason (66.7%): too little data: 3 this week, at least 5 needed"
        in text
    )
    assert text.index("Significant rise") < text.index("No significant rise") < text.index("Too little data")
    ru = qm.audit_message(result, Writer("ru", MSK, StaticNames({"7": "Иван"})))
    assert (
        "Иван: 12 отказов, из них с игнорируемой причиной 9 (75,0" in ru
        and "своя база за 8 недель" in ru
        and "p &lt; 0,001" in ru
    )
    assert "мало данных: 3 за неделю, нужно не меньше 5" in ru


def test_a_p_value_reads_in_the_tenants_language():
    assert qm.p_text(0.0123, WRITER) == "p = 0.012"
    assert qm.p_text(0.0123, Writer("ru", MSK)) == "p = 0,012"
    assert qm.p_text(1.6e-7, WRITER) == "p < 0.001"


def test_every_text_exists_in_both_languages():
    for lang in ("ru", "en"):
        texts = qm.TEXTS[lang]
        assert set(texts.refusals) == {r.value for r in qc.Refusal}
        assert set(texts.operations) == {"answer", "review", "spot_check"}
    for refusal in qc.Refusal:
        assert qm.refusal_text(refusal, "ru") and qm.refusal_text(refusal, "en")


def test_the_russian_reminder_and_escalation():
    view = replace(VIEW, writer=Writer("ru", MSK, StaticNames({"7": "Иван"})))
    review = qc.start(opened(), REJECTED, RULES, CALENDAR, view).review
    step = qc.check_deadlines(review, datetime(2025, 11, 17, 9, 45, tzinfo=MSK), CALENDAR, view)
    assert step.effects[0].text.startswith(
        "Напоминание: ответить на уточняющие вопросы по отказу по «Pipes & <valves>» до пн 17.11 10:30"
    )
    step = qc.check_deadlines(step.review, datetime(2025, 11, 17, 11, 0, tzinfo=MSK), CALENDAR, view)
    alert = step.effects[-1]
    assert isinstance(alert, Notify) and "Просрочена задача контроля качества" in alert.text
    assert (
        "просрочено на 30 мин рабочего времени" in alert.text and "Pipes &amp; &lt;valves&gt;" in alert.text
    )
