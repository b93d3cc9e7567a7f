"""Quality control at work: the worker's card events, the deadline sweep, the pages' decisions.

**Rejections.** Each rejected card's last known place is kept (`card#<card>`: in a failure stage or
not, as of the CRM's modification time; a card never seen rejected costs one read an event and no
write); a card seen entering a failure stage of a QC funnel, or seen for
the first time already there, is a rejection: noted once for the audit and, with a `check`
reason, a review is opened and started (the manager's task). Edits of a card that stays rejected
start nothing; a card that comes back and is rejected again is a new rejection. Out-of-order
snapshots (older than the one kept) change nothing. A card that leaves its failure stages, or is
deleted, ends its open reviews quietly.

**Decide, then perform.** A transition is saved (one conditional write over the version read: of
two workers, or two clicks, one wins) together with the effects it asks for (`pending`), then the
effects are performed and the pending list cleared. Whoever comes next (a redelivery, the sweep)
performs what is still pending: the effect ids are stable and the ledger skips what was done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from leadwatch import executor
from leadwatch.effects import Effect, from_data, to_data
from leadwatch.events import CrmEvent, EntityRef, EventKind, LeadSnapshot
from workflows.qc import rules
from workflows.qc.reviews import NAMESPACE, Reviews, Stored, rejection_key

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context
    from leadwatch.dispatch import EventBatch, Message
    from workflows.qc.messages import QcView

log = logging.getLogger("leadwatch.qc")
CARD = "card#"
ATTEMPTS = 5  # conditional writes lost in a row before leaving it to the retry
RETRY_AFTER = timedelta(minutes=5)  # effects not done are tried again by the sweep after this


@dataclass
class Tenant:
    """What every QC step of one tenant needs, built once per batch or job."""

    ctx: Context
    config: TenantConfig
    rules: rules.QcRules
    calendar: Any
    reviews: Reviews
    key: bytes | None = None  # the page links' key, when the caller has it already (a page)
    _view: QcView | None = None

    @classmethod
    def of(cls, ctx: Context, config: TenantConfig, key: bytes | None = None) -> Tenant:
        section = config.section("qc")
        return cls(
            ctx,
            config,
            rules.QcRules.from_config(section),
            ctx.calendar(config),
            Reviews(ctx.state(NAMESPACE), config.tenant, config.retention_months),
            key,
        )

    @property
    def view(self) -> QcView:
        if self._view is None:
            from workflows.qc.view import link_key, view

            self._view = view(self.ctx, self.config, self.key or link_key(self.ctx, self.config))
        return self._view

    @property
    def lang(self) -> str:
        return str(self.config.language)


# ----------------------------------------------------------------------------- decide, then perform


def pending_of(value: dict[str, Any]) -> list[Effect]:
    return [from_data(d) for d in value.get("pending") or ()]


def decide(
    t: Tenant,
    review_id: str,
    step: Callable[[rules.Review], rules.Transition],
    now: datetime,
) -> tuple[rules.Transition | None, list[Effect]]:
    """Run `step` on the review as stored and save what it decided with its effects pending. A
    lost write reloads and runs `step` again on what is there now. Returns the transition and
    every effect now pending for the review (its own and any left from before), to perform.
    (None, []): no such review, or too many lost writes."""
    for _ in range(ATTEMPTS):
        record = t.reviews.record(review_id)  # the review and its pending effects, one read
        if record is None:
            return None, []
        stored = Stored(rules.Review.from_dict(record.value), record.version)
        transition = step(stored.review)
        pending = pending_of(record.value)
        if not transition.ok or (transition.review == stored.review and not transition.effects):
            return transition, pending
        effects = [*pending, *transition.effects]
        if t.reviews.save(stored, transition.review, now, [to_data(e) for e in effects]):
            return transition, effects
    log.warning(
        "tenant %s: review %s: lost %d writes in a row; left to a retry", t.config.tenant, review_id, ATTEMPTS
    )
    return None, []


def apply(
    t: Tenant,
    review_id: str,
    step: Callable[[rules.Review], rules.Transition],
    now: datetime,
) -> tuple[rules.Transition | None, executor.Outcome | None]:
    """`decide`, then perform what is pending. (None, None): no such review."""
    transition, effects = decide(t, review_id, step, now)
    if transition is None:
        return None, None
    if not effects:
        return transition, None
    return transition, settle(t, transition.review, effects, now)


def with_pending(t: Tenant, review_id: str, effects: Sequence[Effect]) -> list[Effect]:
    """What a transition about to be saved must keep pending: what was still pending before it,
    then its own effects."""
    return [*_pending(t, review_id), *effects]


def settle(t: Tenant, review: rules.Review, effects: Sequence[Effect], now: datetime) -> executor.Outcome:
    """The review is saved with `effects` pending: perform them, clear what is done, and have the
    sweep come by for what is not (and at the review's next control point)."""
    outcome = executor.perform(t.ctx, t.config, effects)
    _settled(t, review, effects, outcome, now)
    return outcome


def _settled(
    t: Tenant,
    review: rules.Review,
    effects: Sequence[Effect],
    outcome: executor.Outcome,
    now: datetime,
    *,
    wake: bool = True,
) -> None:
    """After a perform: clear what is done from the review's pending list (the last writer of
    the list wins only over the version it read; a lost write leaves it for the next run), and
    wake the sweep for what is left (`wake=False`: the sweep itself, which reports its next time)."""
    left = [e for e in effects if e.effect_id not in outcome.done]
    t.reviews.set_pending(review.review_id, [to_data(e) for e in left], {e.effect_id for e in effects})
    if wake:
        _wake(t, review, outcome, now)


def _wake(t: Tenant, review: rules.Review, outcome: executor.Outcome, now: datetime) -> None:
    """Have the deadline sweep come by at the review's next control point, or soon when some of
    its effects are still to be done."""
    moments = [at] if (at := rules.next_check_at(review)) is not None else []
    if outcome.failed or outcome.held:
        moments.append(now + RETRY_AFTER)
    if moments:
        t.ctx.wake(t.config.tenant, "qc", "sweep", min(moments))


def _pending(t: Tenant, review_id: str) -> list[Effect]:
    record = t.reviews.record(review_id)
    return pending_of(record.value) if record is not None else []


# ----------------------------------------------------------------------------- events


def on_events(
    ctx: Context, config: TenantConfig, batch: EventBatch, items: list[tuple[Message, CrmEvent]]
) -> set[str]:
    """Returns the ids of the messages whose effects are not all done (to be retried)."""
    t = Tenant.of(ctx, config)
    now = ctx.clock()
    retry: set[str] = set()
    needing = {ref for _, e in items if (ref := batch.entity_of(e)) is not None and e.needs_card()}
    cards = batch.cards(needing) if needing else {}
    for message, event in items:
        entity = batch.entity_of(event)
        if entity is None:
            continue
        if event.kind is EventKind.LEAD_DELETED:
            done = _end_reviews(t, entity, now, lambda review: rules.card_gone(review, now))
        else:
            snapshot = event.lead or cards.get(entity)
            if snapshot is None:
                continue
            done = observe(t, snapshot, now)
        if not done:
            retry.add(message.message_id)
    return retry


def observe(t: Tenant, card: LeadSnapshot, now: datetime) -> bool:
    """Take in the card as the CRM shows it; False when some effect is still to be done."""
    routing = rules.route_card(t.rules, card)
    failing = routing.action != "none"
    seen = card.modified_at or card.stage_changed_at or now
    rejected_at: datetime | None = None
    was_failing = False
    for _ in range(ATTEMPTS):
        record = t.reviews.state.get(t.config.tenant, CARD + card.entity.key)
        if record is None and not failing:
            # Never seen rejected: nothing to keep, nothing open (one read per event of most cards).
            return True
        kept = record.value if record is not None else None
        was_failing = bool(kept and kept["failing"])
        if kept is not None:
            kept_seen = datetime.fromisoformat(kept["seen"])
            # An older snapshot than the one kept tells nothing new. Of two from the same second
            # the rejected one is taken as the later: a card is created, worked, then rejected,
            # and an echo of an earlier save can come in after the rejection.
            if kept_seen > seen or (kept_seen == seen and was_failing and not failing):
                return True
        value: dict[str, Any] = {
            "failing": failing,
            "stage": card.stage,
            "seen": seen.astimezone(UTC).isoformat(),
        }
        if kept is not None and kept.get("rejected_at") and failing and was_failing:
            value["rejected_at"] = kept["rejected_at"]
        if failing and not was_failing:
            rejected_at = card.stage_changed_at or seen
            value["rejected_at"] = rejected_at.astimezone(UTC).isoformat()
        if kept == value:
            break
        if record is None:
            won = t.reviews.state.create(
                t.config.tenant, CARD + card.entity.key, value, t.reviews.expiry(now)
            )
        else:
            won = t.reviews.state.update(t.config.tenant, CARD + card.entity.key, value, record.version)
        if won:
            break
        rejected_at = None  # somebody else moved the card first: read it again
    else:
        return False
    if not failing:
        if not was_failing:
            return True  # back in work before, or an edit since: its reviews were ended then
        return _end_reviews(
            t, card.entity, now, lambda r: rules.card_changed(r, card.stage, card.pipeline, now, t.rules)
        )
    if rejected_at is None:
        # Still rejected: make sure the review of this rejection got going (a crash, a retry);
        # one read when it did, and the sweep performs whatever it left pending.
        kept_at = value.get("rejected_at")
        if not isinstance(kept_at, str) or routing.action != "check":
            return True
        at = datetime.fromisoformat(kept_at)
        stored = t.reviews.get(rules.review_id(card.entity, at))
        if stored is not None and stored.review.status is not rules.Status.OPENED:
            return True
        return _open(t, card, routing, at, now)
    if _note_rejection(t, card, routing, rejected_at, now):
        from workflows.qc.audit import AuditRules, next_audit_at

        arules = AuditRules.from_config(t.config.section("qc"))
        t.ctx.wake(t.config.tenant, "qc", "audit", next_audit_at(now, arules, t.calendar.tz))
    if routing.action != "check":
        return True
    return _open(t, card, routing, rejected_at, now)


def _note_rejection(
    t: Tenant, card: LeadSnapshot, routing: rules.Routing, at: datetime, now: datetime
) -> bool:
    return t.reviews.note_rejection(
        rejection_key(card.entity.key, at),
        {
            "entity": card.entity.key,
            "manager": card.responsible,
            "at": at.astimezone(UTC).isoformat(),
            "action": routing.action,
            "reason_id": routing.reason_id,
            "reason": routing.reason_name,
            "funnel": routing.funnel.name if routing.funnel else None,
            "stage": card.stage,
            "title": card.title,
        },
        now,
    )


def _open(
    t: Tenant, card: LeadSnapshot, routing: rules.Routing, rejected_at: datetime, now: datetime
) -> bool:
    review = rules.open_review(t.config.tenant, card, routing, rejected_at, t.rules, t.lang)
    if review is None:
        return True
    t.reviews.create(review, now)  # False: made before; it is started below if it was not
    return start(t, review.review_id, now)


def start(t: Tenant, review_id: str, now: datetime) -> bool:
    transition, outcome = apply(t, review_id, lambda r: rules.start(r, now, t.rules, t.calendar, t.view), now)
    return _all_done(transition, outcome)


def _all_done(transition: rules.Transition | None, outcome: executor.Outcome | None) -> bool:
    if outcome is None:
        return transition is not None
    return not outcome.failed and not outcome.held


def _end_reviews(
    t: Tenant, entity: EntityRef, now: datetime, step: Callable[[rules.Review], rules.Transition]
) -> bool:
    done = True
    for review_id in t.reviews.open_of(entity):
        transition, outcome = apply(t, review_id, step, now)
        done &= _all_done(transition, outcome)
    return done


# ----------------------------------------------------------------------------- the deadline sweep


@dataclass
class SweepReport:
    checked: int = 0
    started: int = 0
    reminded: int = 0
    overdue: int = 0
    escalated: int = 0
    mended: int = 0
    left: int = 0  # effects not done this time (the next sweep performs them)
    more: bool = False
    wake_at: datetime | None = None


def sweep(ctx: Context, config: TenantConfig, now: datetime, budget: Any) -> SweepReport | None:
    """Every open review whose next control point has come, or with effects still pending: each
    decided and saved first, then all their effects performed together (many escalations due at
    once go to the head as one digest, as the framework's executor sends them)."""
    t = Tenant.of(ctx, config)
    report = SweepReport()
    decided: list[tuple[rules.Review, list[Effect]]] = []
    for review_id, next_check, pending in t.reviews.open_ids():
        if budget is not None and budget.spent():
            report.more = True
            break
        if not pending and next_check is not None and next_check > now:
            continue
        stored = t.reviews.get(review_id)
        if stored is None or (stored.review.status not in rules.OPEN and not pending):
            t.reviews.mend(review_id, now)
            report.mended += 1
            continue
        report.checked += 1
        review, effects = _check(t, stored, now, report)
        if effects:
            decided.append((review, effects))
    if decided:
        outcome = executor.perform(ctx, config, [e for _, effects in decided for e in effects], budget)
        report.left = len(outcome.failed) + len(outcome.held)
        for review, effects in decided:
            _settled(t, review, effects, outcome, now, wake=False)
    # The next control point of what is still open, or soon for effects still to be done.
    moments = [now + RETRY_AFTER if pending else at for _, at, pending in t.reviews.open_ids()]
    report.wake_at = min((m for m in moments if m is not None), default=None)
    return report


def _check(
    t: Tenant, stored: Stored, now: datetime, report: SweepReport
) -> tuple[rules.Review, list[Effect]]:
    before = stored.review

    def step(review: rules.Review) -> rules.Transition:
        if review.status is rules.Status.OPENED:
            return rules.start(review, now, t.rules, t.calendar, t.view)
        return rules.check_deadlines(review, now, t.calendar, t.view)

    transition, effects = decide(t, before.review_id, step, now)
    if transition is None:
        return before, []
    task, after = before.open_task, transition.review.open_task
    if before.status is rules.Status.OPENED and transition.ok:
        report.started += 1
    elif task is not None and after is not None:
        report.reminded += int(after.reminded_at is not None and task.reminded_at is None)
        report.overdue += int(after.overdue_at is not None and task.overdue_at is None)
        report.escalated += int(after.escalated_at is not None and task.escalated_at is None)
    return transition.review, effects
