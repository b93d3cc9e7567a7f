"""The timeliness workflow, pure: no AWS, no HTTP, the clock passed in."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from leadwatch.effects import Notify, RecordViolation, SetCardFields
from leadwatch.events import Activity, EntityRef, EntityType, LeadSnapshot
from leadwatch.messages import StaticNames, Writer
from workflows.timeliness import rules as timeliness

MSK = ZoneInfo("Europe/Moscow")
LEAD = EntityRef(EntityType.LEAD, "42")
T0 = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)  # a Tuesday


class FixedCalendar:
    """Reaction time added as plain minutes: the calendar has its own tests."""

    def control_time(self, created: datetime, reaction: timedelta, control_start: time) -> datetime:
        return created + reaction


RULES = timeliness.TimelinessRules(
    control_start=time(11, 0),
    reaction=timedelta(minutes=15),
    unprocessed_stages=frozenset({"NEW"}),
    intake_field="UF_CRM_INTAKE",
    verdict_field="UF_CRM_ONTIME",
    verdict_yes="Y",
    verdict_no="N",
)
# The English writer of a tenant whose CRM knows manager 7 and no stage.
VIEW = timeliness.CardView("https://crm/lead/42", Writer("en", MSK, StaticNames({"7": "Anna <Smith> & Co"})))


def snapshot(
    stage: str = "NEW",
    *,
    modified: datetime | None = None,
    moved: datetime | None = None,
    responsible: str = "7",
) -> LeadSnapshot:
    return LeadSnapshot(
        entity=LEAD,
        stage=stage,
        responsible=responsible,
        created_at=T0,
        modified_at=modified or T0,
        stage_changed_at=moved,
        title="Window <b>order</b>",
    )


def intake(**kwargs) -> timeliness.LeadState:
    decision = timeliness.observe("t1", None, snapshot(**kwargs), FixedCalendar(), RULES, T0)
    assert decision.created and decision.state is not None
    return decision.state


def test_intake_records_creation_time_due_time_and_stamps_the_card():
    decision = timeliness.observe("t1", None, snapshot(), FixedCalendar(), RULES, T0 + timedelta(seconds=3))
    assert decision.created
    state = decision.state
    assert state.created_at == T0 and state.due_at == T0 + timedelta(minutes=15)
    assert state.processed_at is None and state.open
    assert decision.effects == [SetCardFields("intake:t1:lead:42", LEAD, {"UF_CRM_INTAKE": T0})]


def test_a_card_created_already_processed_is_processed_at_creation():
    state = intake(stage="IN_PROCESS")
    assert state.processed_at == T0 and state.processed_how == "stage"


def test_stage_change_marks_processing_at_the_crm_time_not_the_arrival_time():
    state = intake()
    moved = T0 + timedelta(minutes=9)
    later = T0 + timedelta(minutes=30)  # the webhook arrived late
    decision = timeliness.observe(
        "t1", state, snapshot("IN_PROCESS", modified=moved, moved=moved), FixedCalendar(), RULES, later
    )
    assert decision.state.processed_at == moved
    assert not decision.created


def test_an_older_sighting_does_not_roll_the_card_back():
    state = intake()
    newer = timeliness.observe(
        "t1", state, snapshot("IN_PROCESS", modified=T0 + timedelta(minutes=5)), FixedCalendar(), RULES, T0
    ).state
    stale = timeliness.observe(
        "t1", newer, snapshot("NEW", modified=T0 + timedelta(minutes=1)), FixedCalendar(), RULES, T0
    )
    assert stale.state is None
    assert [e.effect_id for e in stale.effects] == ["intake:t1:lead:42"]  # the stamp is still asked for


def test_a_sighting_that_moves_only_the_modification_time_is_not_stored():
    state = intake()
    echo = timeliness.observe(  # the echo of the intake stamp leadwatch wrote
        "t1", state, snapshot(modified=T0 + timedelta(minutes=1)), FixedCalendar(), RULES, T0
    )
    assert echo.state is None
    assert [e.effect_id for e in echo.effects] == ["intake:t1:lead:42"]
    moved = timeliness.observe(
        "t1", state, snapshot(responsible="8", modified=T0 + timedelta(minutes=2)), FixedCalendar(), RULES, T0
    )
    assert moved.state is not None and moved.state.crm_modified_at == T0 + timedelta(minutes=2)


def test_processing_once_recorded_is_never_moved():
    state = intake()
    first = timeliness.observe(
        "t1", state, snapshot("IN_PROCESS", modified=T0 + timedelta(minutes=5)), FixedCalendar(), RULES, T0
    ).state
    back = timeliness.observe(
        "t1", first, snapshot("NEW", modified=T0 + timedelta(minutes=6)), FixedCalendar(), RULES, T0
    ).state
    assert back.processed_at == T0 + timedelta(minutes=5)
    assert back.stage == "NEW"


def test_activity_by_the_responsible_manager_counts_as_processing():
    state = intake()
    call = Activity("a1", LEAD, "call", "7", T0 + timedelta(minutes=4), "out")
    decision = timeliness.observe_activity(state, call, RULES)
    assert decision.state.processed_at == T0 + timedelta(minutes=4)
    assert decision.state.processed_how == "activity:call"


def test_an_earlier_activity_learnt_late_moves_processing_earlier_until_the_verdict():
    state = replace(intake(), processed_at=T0 + timedelta(minutes=20), processed_how="stage")
    call = Activity("a1", LEAD, "call", "7", T0 + timedelta(minutes=4), "out")
    earlier = timeliness.observe_activity(state, call, RULES).state
    assert (earlier.processed_at, earlier.processed_how) == (T0 + timedelta(minutes=4), "activity:call")
    later = Activity("a2", LEAD, "call", "7", T0 + timedelta(minutes=30), "out")
    assert timeliness.observe_activity(earlier, later, RULES).state is None
    assert timeliness.observe_activity(replace(state, verdict="late"), call, RULES).state is None


def test_activity_by_someone_else_does_not_count():
    state = intake()
    call = Activity("a1", LEAD, "call", "99", T0 + timedelta(minutes=4), "out")
    assert timeliness.observe_activity(state, call, RULES).state is None


def test_a_task_set_for_later_is_not_processing():
    task = Activity("a1", LEAD, "task", "7", T0 + timedelta(minutes=4))
    assert timeliness.observe_activity(intake(), task, RULES).state is None


def test_a_call_planned_for_later_is_not_processing():
    planned = Activity("a1", LEAD, "call", "7", T0 + timedelta(minutes=4), "out", completed=False)
    assert timeliness.observe_activity(intake(), planned, RULES).state is None


def test_an_email_received_is_not_processing_but_one_sent_is():
    received = Activity("a1", LEAD, "email", "7", T0 + timedelta(minutes=4), "in")
    assert timeliness.observe_activity(intake(), received, RULES).state is None
    sent = Activity("a2", LEAD, "email", "7", T0 + timedelta(minutes=5), "out")
    assert timeliness.observe_activity(intake(), sent, RULES).state.processed_how == "activity:email"


def test_activity_counting_can_be_switched_off():
    rules = timeliness.TimelinessRules(**{**RULES.__dict__, "activity_counts_as_processed": False})
    call = Activity("a1", LEAD, "call", "7", T0 + timedelta(minutes=4), "out")
    assert timeliness.observe_activity(intake(), call, rules).state is None


def test_on_time_verdict_writes_yes_and_nothing_else():
    state = intake(stage="IN_PROCESS")
    verdict, effects = timeliness.decide_verdict(state, RULES, VIEW)
    assert verdict == timeliness.ON_TIME
    assert effects == [SetCardFields("verdict:t1:lead:42", LEAD, {"UF_CRM_ONTIME": "Y"})]


def test_processed_exactly_at_the_control_time_is_on_time():
    state = intake()
    due = state.due_at
    state = timeliness.observe(
        "t1", state, snapshot("IN_PROCESS", modified=due, moved=due), FixedCalendar(), RULES, due
    ).state
    verdict, _ = timeliness.decide_verdict(state, RULES, VIEW)
    assert verdict == timeliness.ON_TIME


def test_late_verdict_writes_no_records_a_violation_and_alerts_once():
    state = intake()
    verdict, effects = timeliness.decide_verdict(state, RULES, VIEW)
    assert verdict == timeliness.LATE
    kinds = [type(e) for e in effects]
    assert kinds == [SetCardFields, RecordViolation, Notify]
    assert effects[0].fields == {"UF_CRM_ONTIME": "N"}
    violation = effects[1].violation
    assert violation.violation_id == "late_first_processing:lead:42"
    assert violation.manager == "7" and violation.occurred_at == state.due_at
    alert = effects[2]
    assert alert.effect_id == "alert:late:t1:lead:42"
    # Telegram HTML: the link and every user-supplied text escaped.
    assert '<a href="https://crm/lead/42">Window &lt;b&gt;order&lt;/b&gt;</a>' in alert.text
    assert "Anna &lt;Smith&gt; &amp; Co" in alert.text
    assert "10:15" in alert.text
    assert "Still in: stage NEW" in alert.text  # a stage nobody names: its id


def test_the_alert_names_the_manager_and_the_stage_as_the_view_gives_them():
    asked: list[tuple] = []

    class Names(StaticNames):
        def find_stage(self, stage_id, entity=EntityType.LEAD):
            asked.append((stage_id, entity))
            return "Не разобран <&>"

    view = timeliness.CardView("https://crm/lead/42", Writer("ru", MSK, Names({"7": "Анна"})))
    _, effects = timeliness.decide_verdict(intake(), RULES, view)
    alert = effects[2]
    assert "Менеджер: Анна" in alert.text
    assert "Всё ещё на этапе: Не разобран &lt;&amp;&gt;" in alert.text
    assert asked == [("NEW", EntityType.LEAD)]
    assert "Анна, просрочен" in alert.digest_line
    # An on-time card asks for no name at all.
    timeliness.decide_verdict(replace(intake(), processed_at=T0), RULES, view)
    assert len(asked) == 1


def test_a_pinned_verdict_keeps_its_effects_whatever_the_card_shows_since():
    state = replace(intake(stage="IN_PROCESS"), pending_verdict=timeliness.LATE)
    verdict, effects = timeliness.decide_verdict(state, RULES, VIEW, state.pending_verdict)
    assert verdict == timeliness.LATE
    assert [type(e) for e in effects] == [SetCardFields, RecordViolation, Notify]
    assert effects[0].fields == {"UF_CRM_ONTIME": "N"}


def test_effect_ids_are_stable_so_reruns_repeat_nothing():
    state = intake()
    first = timeliness.decide_verdict(state, RULES, VIEW)[1]
    second = timeliness.decide_verdict(state, RULES, VIEW)[1]
    assert [e.effect_id for e in first] == [e.effect_id for e in second]


def test_stats_day_is_the_local_arrival_date():
    late_evening = datetime(2025, 11, 11, 23, 30, tzinfo=MSK)
    state = timeliness.LeadState("t1", LEAD, late_evening.astimezone(UTC), late_evening, "NEW", "7")
    assert timeliness.stats_day(state, MSK) == "2025-11-11"


def test_a_huge_title_is_cut_in_the_alert():
    from dataclasses import replace

    state = replace(intake(), title="x" * 10_000)
    _, effects = timeliness.decide_verdict(state, RULES, VIEW)
    assert len(effects[2].text) < 600
