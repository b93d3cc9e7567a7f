"""Timeliness of first processing (docs/timeliness.md), as pure decisions.

Intake: a card seen for the first time gets its intake time (the CRM's creation
time) and its control time from the business calendar, and the intake timestamp
is written to the card. Observation: every later sighting of the card (webhook,
read, reconciliation) may show it processed: moved out of the "not yet
processed" stages, or touched by the responsible manager. Verdict: at the
control time the card is on time if it was processed no later than its control
time; a late card gets a violation and one Telegram message to the head.

Nothing here performs I/O or reads a clock: `now` and the calendar come in,
state and effects go out.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any, Protocol

from leadwatch.cards import LeadState
from leadwatch.effects import Effect, Notify, RecordViolation, SetCardFields, Violation
from leadwatch.events import Activity, EntityRef, LeadSnapshot
from workflows.timeliness.messages import CardView, late_line, late_message

ON_TIME = "on_time"
LATE = "late"
VIOLATION_TYPE = "late_first_processing"


class Calendar(Protocol):
    def control_time(self, created: datetime, reaction: timedelta, control_start: time) -> datetime: ...


@dataclass(frozen=True)
class TimelinessRules:
    control_start: time
    reaction: timedelta
    unprocessed_stages: frozenset[str]
    intake_field: str
    verdict_field: str
    verdict_yes: Any
    verdict_no: Any
    activity_counts_as_processed: bool = True

    @classmethod
    def from_config(cls, cfg: Any) -> TimelinessRules:
        """From a `leadwatch.config.TimelinessConfig` (duck-typed to keep workflows free of config I/O)."""
        return cls(
            control_start=cfg.control_start,
            reaction=timedelta(minutes=cfg.reaction_minutes),
            unprocessed_stages=frozenset(cfg.unprocessed_stages),
            intake_field=cfg.intake_field,
            verdict_field=cfg.verdict_field,
            verdict_yes=cfg.verdict_values.yes,
            verdict_no=cfg.verdict_values.no,
            activity_counts_as_processed=cfg.activity_counts_as_processed,
        )


@dataclass
class Decision:
    """The outcome of one workflow step: the state to store (None: unchanged) and effects."""

    state: LeadState | None = None
    effects: list[Effect] = field(default_factory=list)
    created: bool = False


def _processed_at(snapshot: LeadSnapshot, rules: TimelinessRules, seen_at: datetime) -> datetime | None:
    """When the card left the unprocessed stages, as exactly as the CRM tells."""
    if snapshot.stage in rules.unprocessed_stages:
        return None
    return snapshot.stage_changed_at or snapshot.modified_at or seen_at


def intake_effect_id(tenant: str, entity: EntityRef) -> str:
    return f"intake:{tenant}:{entity.key}"


def verdict_effect_id(tenant: str, entity: EntityRef) -> str:
    return f"verdict:{tenant}:{entity.key}"


def alert_effect_id(tenant: str, entity: EntityRef) -> str:
    return f"alert:late:{tenant}:{entity.key}"


def observe(
    tenant: str,
    state: LeadState | None,
    snapshot: LeadSnapshot,
    calendar: Calendar,
    rules: TimelinessRules,
    now: datetime,
) -> Decision:
    """A card as the CRM shows it: intake it if new, else track stage, owner and processing.

    The intake stamp is asked for on every sighting of an open card not stored with it
    written (`intake_stamped`): the executor's ledger turns it into a no-op once
    written, and so a write that failed the first time is retried by the next event
    about the card.
    """
    if state is None:
        created = snapshot.created_at
        processed = _processed_at(snapshot, rules, now)
        state = LeadState(
            tenant=tenant,
            entity=snapshot.entity,
            created_at=created,
            due_at=calendar.control_time(created, rules.reaction, rules.control_start),
            stage=snapshot.stage,
            responsible=snapshot.responsible,
            title=snapshot.title,
            processed_at=max(processed, created) if processed else None,
            processed_how="stage" if processed else None,
            crm_modified_at=snapshot.modified_at,
        )
        return Decision(state=state, effects=[intake_stamp(state, rules)], created=True)

    stamp: list[Effect] = [intake_stamp(state, rules)] if state.open and not state.intake_stamped else []
    # An older sighting (out-of-order amoCRM hooks, a slow reconciliation) must not roll the card back.
    if snapshot.modified_at and state.crm_modified_at and snapshot.modified_at < state.crm_modified_at:
        return Decision(effects=stamp)
    updated = replace(
        state,
        stage=snapshot.stage,
        responsible=snapshot.responsible,
        title=snapshot.title or state.title,
        crm_modified_at=snapshot.modified_at or state.crm_modified_at,
    )
    if updated.processed_at is None:
        processed = _processed_at(snapshot, rules, now)
        if processed is not None:
            updated = replace(updated, processed_at=max(processed, state.created_at), processed_how="stage")
    # A sighting that moves only the CRM's modification time (mostly the echo of leadwatch's own
    # intake and verdict fields, or a note) is not stored: a write of the card row for nothing
    # leadwatch reads. What that gives up: the stored time guards against older sightings, so a
    # late one of a stage or owner the card left and came back from since (A, B, A, the B hook
    # retried last) is taken; the card's next sighting (its next change, the echo of the verdict
    # field) sets it right again, and processing, once learnt, is never undone.
    if replace(updated, crm_modified_at=state.crm_modified_at) == state:
        return Decision(effects=stamp)
    return Decision(state=updated, effects=stamp)


def intake_stamp(state: LeadState, rules: TimelinessRules) -> SetCardFields:
    return SetCardFields(
        intake_effect_id(state.tenant, state.entity), state.entity, {rules.intake_field: state.created_at}
    )


# Contact with the client, or a written note of it. A task scheduled for later is not processing.
PROCESSING_ACTIVITIES = frozenset({"call", "email", "meeting", "note"})


def observe_activity(state: LeadState | None, activity: Activity, rules: TimelinessRules) -> Decision:
    """A call, e-mail or note on the card: processing, if the responsible manager did it (done,
    not planned; an e-mail sent, not received).

    Webhooks come out of order (an activity's may wait behind an outage while the stage change's
    arrives), so an activity earlier than the processing known so far moves it earlier, until
    the card is judged."""
    if state is None or not rules.activity_counts_as_processed:
        return Decision()
    if activity.kind not in PROCESSING_ACTIVITIES:
        return Decision()
    # A call or meeting planned for later is a task, and an e-mail that came in is the client's
    # work, not the manager's: neither processes the lead.
    if not activity.completed or (activity.kind == "email" and activity.direction == "in"):
        return Decision()
    if state.responsible is not None and activity.author not in (None, state.responsible):
        return Decision()
    when = max(activity.created_at, state.created_at)
    if state.processed_at is not None and (
        when >= state.processed_at or state.verdict is not None or state.pending_verdict is not None
    ):
        return Decision()
    return Decision(state=replace(state, processed_at=when, processed_how=f"activity:{activity.kind}"))


def decide_verdict(
    state: LeadState, rules: TimelinessRules, view: CardView, verdict: str | None = None
) -> tuple[str, list[Effect]]:
    """The verdict for a card whose control time has come, and what it sets off. A `verdict`
    decided before (pinned on the card) is kept: the effects are those of that one."""
    if verdict is None:
        on_time = state.processed_at is not None and state.processed_at <= state.due_at
        verdict = ON_TIME if on_time else LATE
    on_time = verdict == ON_TIME
    effects: list[Effect] = [
        SetCardFields(
            verdict_effect_id(state.tenant, state.entity),
            state.entity,
            {rules.verdict_field: rules.verdict_yes if on_time else rules.verdict_no},
        )
    ]
    if not on_time:
        details = {
            "created_at": state.created_at.isoformat(),
            "due_at": state.due_at.isoformat(),
            "stage": state.stage,
            "processed_at": state.processed_at.isoformat() if state.processed_at else None,
            "title": state.title,
        }
        effects.append(
            RecordViolation(
                Violation(
                    violation_id=f"{VIOLATION_TYPE}:{state.entity.key}",
                    type=VIOLATION_TYPE,
                    entity=state.entity,
                    manager=state.responsible,
                    occurred_at=state.due_at,
                    details=details,
                )
            )
        )
        effects.append(
            Notify(
                alert_effect_id(state.tenant, state.entity),
                late_message(state, view),
                digest_line=late_line(state, view),
            )
        )
    return verdict, effects


def stats_day(state: LeadState, tz: Any) -> str:
    """The day a card counts under in per-manager statistics: its local arrival date."""
    return state.created_at.astimezone(tz).date().isoformat()
