"""Performs the effects workflows return: CRM writes batched per adapter, journal
rows, Telegram messages.

Exactly once under concurrency: each external effect is claimed in the effect ledger
(`leadwatch.store.ledger`) before it is performed, so of two workers racing over the
same effects (two webhooks of one card, overlapping sweeps or reports) only one
performs each. Then:

- success: confirmed (done);
- a definite failure (an error answer, nothing sent): counted, released, the next run retries;
  an effect refused for good (a deleted card, a bot removed from the chat, no rights) is given
  up after REFUSALS_BEFORE_GIVING_UP refusals, one that keeps failing otherwise (the CRM or
  Telegram down) after GIVE_UP_AFTER: settled as `gave_up`, journalled once with the reason in a
  person's words (type `gave_up`) and counted (metric GaveUp), so no work stays stuck on it;
- no answer after sending (`OutcomeUnknown`): a CRM field write is released (writing a
  value again is harmless); a Telegram message is settled as unconfirmed, never sent
  again, and journalled once (type `unconfirmed_message`) so a person can look;
- claimed by another worker: skipped and reported as `held`; not done for this caller,
  whose retry (the SQS redelivery, the next sweep) finds it done.

CRM work items (`leadwatch.effects.CrmWork`: tasks, reminders, stage moves, notes) are performed
one by one in the order given (a task is made before a later effect closes it), each claimed just
before its call. Those a repeat cannot harm (closing a task, moving a card to a stage) are handled
as field writes on no answer (released, done again later); those a repeat would double (a new task,
a reminder, a note) as messages (unconfirmed, journalled once, never repeated). A task's CRM id is
kept with its ledger row (`confirm(result=)`): a `CompleteTask` or `RemindUser` finds it there by
`task_ref`. An effect of a kind the executor does not know is a bug in its process: it raises.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from crm_adapters.base import CrmError, CrmNotFound, OutcomeUnknown, OutOfTime
from leadwatch import observability
from leadwatch.config import TenantConfig
from leadwatch.context import Context
from leadwatch.effects import (
    AddNote,
    CompleteTask,
    CreateTask,
    CrmWork,
    Effect,
    MoveStage,
    Notify,
    RecordViolation,
    RemindUser,
    SetCardFields,
)
from leadwatch.events import EntityRef
from leadwatch.secrets import SecretMissing

if TYPE_CHECKING:  # the ledger module loads PynamoDB; the executor reaches it through ctx.store
    from leadwatch.store.ledger import ClaimResult, EffectLedger, Failures, LedgerEntry

log = logging.getLogger("leadwatch.executor")

# How long a claim keeps other workers off an effect. Longer than any function's timeout (60 s at
# most): a claimant still alive is never taken over; one that died is, after this.
LEASE = timedelta(minutes=2)
# A refusal can be a passing state (a permission being fixed, a bot being added back): a few
# tries, a sweep apart, before giving up. Anything else failing for a day is not coming back.
REFUSALS_BEFORE_GIVING_UP = 3
CARD_DELETED = "card deleted"  # the reason a write to a card that is gone was given up
GIVE_UP_AFTER = timedelta(hours=24)


@dataclass
class Outcome:
    done: set[str] = field(default_factory=set)  # settled: performed now or before, or unconfirmed
    failed: dict[str, str] = field(default_factory=dict)  # effect id -> why (retry later)
    performed: int = 0  # effects performed now (not found in the ledger), confirmed
    # Being performed by another worker, or a message queued behind one that is: retry later.
    held: set[str] = field(default_factory=set)
    unconfirmed: set[str] = field(default_factory=set)  # sent without an answer (also in `done`)
    results: dict[str, str] = field(default_factory=dict)  # effect id -> what it made (a task's id)
    # Failed too often, now or before: effect id -> why, in a person's words (also in `done`).
    gave_up: dict[str, str] = field(default_factory=dict)

    def all_done(self, effect_ids: list[str]) -> bool:
        return all(i in self.done for i in effect_ids)


@dataclass(frozen=True)
class _Run:
    """One perform call: its tenant, its ledger and the owner its claims carry."""

    ctx: Context
    config: TenantConfig
    ledger: EffectLedger
    owner: str
    budget: Any = None  # a leadwatch.scheduling.Budget: stop sending when it is spent

    @property
    def tenant(self) -> str:
        return self.config.tenant

    def claim(self, effect_ids: list[str]) -> dict[str, ClaimResult]:
        return self.ledger.claim_many(self.tenant, effect_ids, self.owner, self.ctx.clock(), LEASE)

    def claim_one(self, effect_id: str, known: LedgerEntry | None) -> ClaimResult:
        return self.ledger.claim_unless(known, self.tenant, effect_id, self.owner, self.ctx.clock(), LEASE)

    def confirm(self, effect_id: str, result: str | None = None) -> None:
        if not self.ledger.confirm(self.tenant, effect_id, self.owner, self.ctx.clock(), result):
            # Our lease ran out and another worker took the effect over: it may be done twice.
            log.warning("tenant %s: effect %s was taken over before it was confirmed", self.tenant, effect_id)

    def release(self, effect_id: str) -> None:
        self.ledger.release(self.tenant, effect_id, self.owner)

    def fail(self, effect: SetCardFields | Notify | CrmWork, error: CrmError, outcome: Outcome) -> bool:
        """An attempt failed with an answer (nothing happened): count it, and either release the
        effect for the next run or, when it has failed too often, give it up. True: given up."""
        if isinstance(error, OutOfTime):  # never sent: the next run sends it, nothing counted
            self.release(effect.effect_id)
            outcome.failed[effect.effect_id] = str(error)
            return False
        now = self.ctx.clock()
        failures = self.ledger.note_failure(self.tenant, effect.effect_id, now, permanent=not error.retryable)
        why = _give_up(effect, error, failures, now)
        if why is None:
            self.release(effect.effect_id)
            outcome.failed[effect.effect_id] = str(error)
            return False
        kind, reason = why
        if self.ledger.mark_gave_up(self.tenant, effect.effect_id, self.owner, now, f"{reason}: {error}"):
            details: dict[str, Any]
            if isinstance(effect, SetCardFields):
                subject, details = effect.entity.key, {"fields": sorted(effect.fields)}
            elif isinstance(effect, Notify):
                subject, details = f"telegram:{self.config.telegram.chat_id}", {"text": effect.text}
            else:
                subject, details = effect.entity.key, {"work": type(effect).__name__}
            details |= {"error": str(error), "attempts": failures.attempts}
            self.ledger.record_gave_up(self.tenant, effect.effect_id, subject, reason, details, now)
            observability.gave_up(self.tenant, kind)
            log.warning("tenant %s: gave %s up: %s (%s)", self.tenant, effect.effect_id, reason, error)
        outcome.done.add(effect.effect_id)
        outcome.gave_up[effect.effect_id] = reason
        return True


def perform(
    ctx: Context,
    config: TenantConfig,
    effects: Sequence[Effect],
    budget: Any = None,
    held: Collection[EntityRef] = (),
) -> Outcome:
    """Perform effects exactly once. With a `budget` (a scheduled job's time), messages not sent
    when it is spent are left failed ("deferred") for the job's continuation. `held`: cards whose
    field writes the caller stands for and records itself (the sweep, on the cards it claimed,
    by closing them; timeliness, on a new card not stored yet, by storing it so): those writes
    take no ledger claim and leave no ledger row (`_write_cards`)."""
    unique: dict[str, Effect] = {}
    for effect in effects:
        unique.setdefault(effect.effect_id, effect)
    outcome = Outcome()
    if not unique:
        return outcome
    run = _Run(ctx, config, ctx.store.ledger, uuid.uuid4().hex, budget)

    writes = [e for e in unique.values() if isinstance(e, SetCardFields)]
    if writes:
        _write_cards(run, writes, outcome, frozenset(held))

    for effect in unique.values():
        if isinstance(effect, RecordViolation):
            # A conditional put: a second write of the same violation keeps one row.
            if ctx.store.put_violation(config.tenant, effect.violation, ctx.clock()):
                observability.violation(config.tenant, effect.violation.type)
                _check_declared(ctx, effect.violation.type)
            outcome.done.add(effect.effect_id)

    work = [e for e in unique.values() if isinstance(e, CRM_WORK)]
    if work:
        _crm_work(run, work, outcome)

    messages = [e for e in unique.values() if isinstance(e, Notify)]
    if messages:
        _notify(run, messages, outcome)
    if unknown := [e for e in unique.values() if not isinstance(e, KNOWN)]:
        raise TypeError(
            f"effects of a kind the executor does not perform: {sorted({type(e).__name__ for e in unknown})}"
        )
    return outcome


CRM_WORK = (CreateTask, CompleteTask, RemindUser, MoveStage, AddNote)
KNOWN = (SetCardFields, Notify, RecordViolation, *CRM_WORK)
# A repeat of these changes nothing (the task is closed, the card is in that stage): on no answer
# they are released and done again; the others are settled unconfirmed and never repeated.
REPEATABLE = (CompleteTask, MoveStage)
NO_TASK = "no task to close: it was never made in the CRM, or its id is no longer kept"


def _check_declared(ctx: Context, type_: str) -> None:
    """The row is kept whatever its type; a type no process declares (`violation_types`) cannot be
    asked for by type in the journal (leadwatch.journal refuses it), so say so where it is written."""
    if all(declared.name != type_ for _, declared in ctx.processes.violation_types()):
        log.warning(
            "journal type %r is declared by no process (Process.violation_types): the journal's "
            "type filter refuses it",
            type_,
        )


def _crm_work(run: _Run, work: list[CrmWork], outcome: Outcome) -> None:
    try:
        adapter = run.ctx.adapter(run.config)
    except SecretMissing as exc:
        log.error("tenant %s: cannot reach the CRM: %s", run.tenant, exc)
        outcome.failed.update({w.effect_id: str(exc) for w in work})
        return
    refs = [w.task_ref for w in work if isinstance(w, CompleteTask | RemindUser)]
    known = run.ledger.entries(run.tenant, [w.effect_id for w in work] + refs)
    for index, effect in enumerate(work):
        if run.budget is not None and run.budget.spent():
            for later in work[index:]:
                outcome.failed[later.effect_id] = "deferred: out of time, the job's continuation does it"
            return
        task_id: str | None = None
        if isinstance(effect, CompleteTask | RemindUser):
            task_id = outcome.results.get(effect.task_ref)
            made = known.get(effect.task_ref)
            if task_id is None and made is not None and made.status.value == "done":
                task_id = made.detail
            if task_id is None and isinstance(effect, CompleteTask):
                outcome.done.add(effect.effect_id)  # nothing to close; the review goes on
                log.info("tenant %s: %s: %s", run.tenant, effect.effect_id, NO_TASK)
                continue
        claim = run.claim_one(effect.effect_id, known.get(effect.effect_id))
        if not claim.claimed:
            _sort_claims({effect.effect_id: claim}, outcome)
            continue
        try:
            result = _perform_work(adapter, effect, task_id)
        except OutcomeUnknown as exc:
            if isinstance(effect, REPEATABLE):
                run.release(effect.effect_id)
                outcome.failed[effect.effect_id] = str(exc)
            else:
                _unconfirmed(run, effect, exc, outcome)
            continue
        except CrmError as exc:
            log.warning("tenant %s: CRM %s failed: %s", run.tenant, effect.effect_id, exc)
            observability.crm_failure(run.tenant, exc)
            run.fail(effect, exc, outcome)
            continue
        except BaseException as exc:
            if isinstance(effect, REPEATABLE):
                run.release(effect.effect_id)
            else:
                _unconfirmed(run, effect, exc, outcome)
            raise
        run.confirm(effect.effect_id, result)
        if result is not None:
            outcome.results[effect.effect_id] = result
        outcome.done.add(effect.effect_id)
        outcome.performed += 1


def _perform_work(adapter: Any, effect: CrmWork, task_id: str | None) -> str | None:
    """One CRM call; what it made (a new task's id) or None."""
    if isinstance(effect, CreateTask):
        return str(adapter.create_task(effect))
    if isinstance(effect, CompleteTask):
        assert task_id is not None
        adapter.complete_task(task_id)
    elif isinstance(effect, RemindUser):
        adapter.remind(task_id, effect)
    elif isinstance(effect, MoveStage):
        adapter.move_stage(effect)
    else:
        adapter.add_note(effect)
    return None


def _sort_claims(claims: dict[str, ClaimResult], outcome: Outcome) -> list[str]:
    """Note what is settled or held elsewhere; return the ids this run holds now."""
    mine = []
    for effect_id, claim in claims.items():
        if claim.claimed:
            mine.append(effect_id)
        elif claim.held:
            outcome.held.add(effect_id)
        else:
            outcome.done.add(effect_id)
            if claim.unconfirmed:
                outcome.unconfirmed.add(effect_id)
            if claim.gave_up:
                outcome.gave_up[effect_id] = "given up before"
    return mine


def _write_cards(
    run: _Run, writes: list[SetCardFields], outcome: Outcome, held: frozenset[EntityRef] = frozenset()
) -> None:
    # A write to a card the caller holds (`perform`'s `held`) has its record kept by the caller
    # (the verdict on the closed card, or `mark_done` when the sweep lets it go undone; the new
    # card stored as stamped): no claim here and no done row, two ledger writes saved. Only its
    # row is read, for what a claim would find: settled before, or another's live claim. Should
    # two callers hold one (a lapsed hold, two workers taking a new card in), the same value is
    # written twice, which is harmless. A failed one is claimed then, to be counted and given up
    # as any other.
    free = {w.effect_id for w in writes if w.entity in held}
    if free:
        now = run.ctx.clock()
        known = run.ledger.entries(run.tenant, free)
        # claim_one claims nothing for these: it reports the row.
        found = {i: run.claim_one(i, e) for i, e in known.items() if e.settled or e.live_claim(now)}
        _sort_claims(found, outcome)
        free -= found.keys()
    claimed = [w.effect_id for w in writes if w.effect_id not in free]
    mine = set(_sort_claims(run.claim(claimed), outcome)) if claimed else set()
    writes = [w for w in writes if w.effect_id in mine or w.effect_id in free]
    if not writes:
        return
    try:
        result = run.ctx.adapter(run.config).set_fields(writes)
    except BaseException as exc:
        # Nothing to say any write happened, and writing a field again is harmless: let them go.
        for write in writes:
            if write.effect_id not in free:
                run.release(write.effect_id)
        if not isinstance(exc, SecretMissing):
            raise
        log.error("tenant %s: cannot write to the CRM: %s", run.tenant, exc)
        outcome.failed.update({w.effect_id: str(exc) for w in writes})
        return
    if result.succeeded - free:
        # A field write is idempotent, so done is recorded in batches (25 a call) rather
        # than one conditional confirm each: overwriting a claim could only mark done what its
        # holder would write again, unchanged.
        run.ledger.mark_done(run.tenant, result.succeeded - free, run.ctx.clock())
    outcome.done |= result.succeeded
    outcome.performed += len(result.succeeded)
    by_id = {w.effect_id: w for w in writes}
    unclaimed = [i for i in result.failed if i in free]
    if unclaimed:
        mine |= set(_sort_claims(run.claim(unclaimed), outcome))
    for effect_id, error in result.failed.items():
        # Failed or unknown (OutcomeUnknown): either way a later write of the same value is safe.
        log.warning(
            "tenant %s: CRM write %s failed: %s",
            run.tenant,
            effect_id,
            error,
            extra={"lead": by_id[effect_id].entity.key},
        )
        observability.crm_failure(run.tenant, error)
        if effect_id in mine:
            run.fail(by_id[effect_id], error, outcome)


def _notify(run: _Run, messages: list[Notify], outcome: Outcome) -> None:
    try:
        notifier = run.ctx.notifier(run.config)
    except SecretMissing as exc:
        log.error("tenant %s: cannot send Telegram messages: %s", run.tenant, exc)
        outcome.failed.update({m.effect_id: str(exc) for m in messages})
        return
    alerts = [m for m in messages if m.digest_line is not None]
    over = run.config.telegram.digest_over
    if over and len(alerts) > over:
        messages = [m for m in messages if m.digest_line is None]
        _send_digest(run, notifier, alerts, outcome)
    # One read spares a claim for each message already sent (a redelivery, a retried report).
    known = run.ledger.entries(run.tenant, [m.effect_id for m in messages])
    for index, message in enumerate(messages):
        later = messages[index + 1 :]
        if run.budget is not None and run.budget.spent():
            _defer(messages[index:], "deferred: out of time, the job's continuation sends it", outcome)
            return
        # Claimed one at a time, just before sending: a lease covers one send, and the parts of a
        # report go out in order (one held part stops this run before the next).
        claim = run.claim_one(message.effect_id, known.get(message.effect_id))
        if not claim.claimed:
            _sort_claims({message.effect_id: claim}, outcome)
            if claim.held:
                # Whoever holds it is sending this list too: it sends the rest, in order.
                outcome.held |= {m.effect_id for m in later}
                return
            continue
        try:
            notifier.send(run.config.telegram.chat_id, message.text)
        except OutcomeUnknown as exc:
            _unconfirmed(run, message, exc, outcome)
            _defer(later, "deferred: Telegram did not answer", outcome)
            return
        except CrmError as exc:
            # An error answer: Telegram did not post it.
            log.warning("tenant %s: Telegram message %s failed: %s", run.tenant, message.effect_id, exc)
            observability.telegram_failure(run.tenant, exc)
            run.fail(message, exc, outcome)
            if exc.retryable:
                # Telegram is still throttling or down after the retries: leave the rest for the next run.
                _defer(later, "deferred: Telegram unavailable", outcome)
                return
            continue
        except BaseException as exc:
            # Not an answer we understand (a bug, the runtime stopping us): it may have gone out.
            _unconfirmed(run, message, exc, outcome)
            raise
        # Confirmed one by one: a crash between two sends must not resend the first.
        run.confirm(message.effect_id)
        outcome.done.add(message.effect_id)
        outcome.performed += 1


def _send_digest(run: _Run, notifier: Any, alerts: list[Notify], outcome: Outcome) -> None:
    """Many alerts due together go out as one digest (in parts of whole lines when long), with a
    header in the tenant's language (leadwatch.messages.digest).

    Each alert is still its own effect in the ledger: all are claimed first, each part's alerts
    are settled with it, so a racing worker sends none of them again, and an alert that keeps
    failing is given up on its own."""
    from leadwatch.messages import digest, pack_lines

    mine = set(_sort_claims(run.claim([a.effect_id for a in alerts]), outcome))
    alerts = [a for a in alerts if a.effect_id in mine]
    parts: list[list[Notify]] = []
    for size in pack_lines([a.digest_line or "" for a in alerts]):
        start = sum(len(p) for p in parts)
        parts.append(alerts[start : start + size])
    for number, part in enumerate(parts, start=1):
        if run.budget is not None and run.budget.spent():
            _let_go(run, [a for p in parts[number - 1 :] for a in p], "deferred: out of time", outcome)
            return
        lines = [a.digest_line or "" for a in part]
        text = digest(run.config.language, lines, len(alerts), number, len(parts))
        try:
            notifier.send(run.config.telegram.chat_id, text)
        except OutcomeUnknown as exc:
            for alert in part:
                _unconfirmed(run, alert, exc, outcome)
            _let_go(run, [a for p in parts[number:] for a in p], "deferred: Telegram did not answer", outcome)
            return
        except CrmError as exc:
            log.warning("tenant %s: Telegram digest failed: %s", run.tenant, exc)
            observability.telegram_failure(run.tenant, exc)
            for alert in part:
                run.fail(alert, exc, outcome)
            if exc.retryable:
                _let_go(
                    run, [a for p in parts[number:] for a in p], "deferred: Telegram unavailable", outcome
                )
                return
            continue
        except BaseException as exc:
            for alert in part:
                _unconfirmed(run, alert, exc, outcome)
            raise
        for alert in part:
            run.confirm(alert.effect_id)
            outcome.done.add(alert.effect_id)
        outcome.performed += len(part)


def _let_go(run: _Run, alerts: list[Notify], reason: str, outcome: Outcome) -> None:
    """Claimed and not sent: released for the next run, nothing counted against them."""
    for alert in alerts:
        run.release(alert.effect_id)
        outcome.failed[alert.effect_id] = reason


def _give_up(
    effect: SetCardFields | Notify | CrmWork, error: CrmError, failures: Failures, now: datetime
) -> tuple[str, str] | None:
    """(metric kind, reason) when the effect has failed too often; None: try again later."""
    refused = failures.refusals >= REFUSALS_BEFORE_GIVING_UP and not error.retryable
    if not refused and now - failures.first_at < GIVE_UP_AFTER:
        return None
    if isinstance(effect, CompleteTask | RemindUser) and isinstance(error, CrmNotFound):
        return "crm_refused", "task deleted in the CRM"  # one metric reason fewer: it is a refusal
    if not isinstance(effect, Notify):
        if isinstance(error, CrmNotFound):
            return "card_deleted", CARD_DELETED
        if refused:
            return "crm_refused", "CRM refused the write"
        return "crm_unavailable", f"CRM unavailable for {_span(now - failures.first_at)}"
    from leadwatch.telegram import TelegramRejected

    if isinstance(error, TelegramRejected) and error.not_in_chat:
        return "alert_failed", "alert failed: bot not in chat"
    if refused:
        return "alert_failed", "alert failed: Telegram refused it"
    return "alert_failed", f"alert failed: Telegram unavailable for {_span(now - failures.first_at)}"


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.0f} hours" if hours >= 2 else f"{delta.total_seconds() / 60:.0f} minutes"


def _defer(messages: list[Notify], reason: str, outcome: Outcome) -> None:
    for message in messages:
        outcome.failed[message.effect_id] = reason


def _unconfirmed(run: _Run, message: Notify | CrmWork, exc: BaseException, outcome: Outcome) -> None:
    """Sent, no answer: settle it so it is never sent again, and journal it once for a person."""
    from leadwatch.store.ledger import UNCONFIRMED_TYPE

    now = run.ctx.clock()
    detail = f"{type(exc).__name__}: {exc}"
    what = "Telegram message" if isinstance(message, Notify) else f"CRM {type(message).__name__}"
    log.warning(
        "tenant %s: %s %s may or may not have been done (%s); it will not be repeated",
        run.tenant,
        what,
        message.effect_id,
        detail,
    )
    if isinstance(message, Notify):
        observability.telegram_failure(run.tenant, exc)
        subject, details = f"telegram:{run.config.telegram.chat_id}", {"text": message.text}
    else:
        observability.crm_failure(run.tenant, exc)
        subject, details = message.entity.key, {"work": type(message).__name__}
    if run.ledger.mark_unconfirmed(run.tenant, message.effect_id, run.owner, now, detail):
        run.ledger.record_unconfirmed(run.tenant, message.effect_id, subject, detail, details, now)
        observability.violation(run.tenant, UNCONFIRMED_TYPE)
        observability.unconfirmed_messages(run.tenant)
    outcome.done.add(message.effect_id)
    outcome.unconfirmed.add(message.effect_id)
