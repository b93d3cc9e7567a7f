"""Performs the effects workflows return: CRM writes batched per adapter, journal
rows, Telegram messages. Each external effect is recorded in the ledger when it
succeeds and skipped when it is already there, so running the same effects again
(a redelivered event, an overlapping or retried sweep) repeats nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from crm_adapters.base import CrmError
from leadwatch import observability
from leadwatch.config import TenantConfig
from leadwatch.context import Context
from leadwatch.effects import Effect, Notify, RecordViolation, SetCardFields
from leadwatch.secrets import SecretMissing

log = logging.getLogger("leadwatch.executor")


@dataclass
class Outcome:
    done: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    performed: int = 0  # effects performed now (not found in the ledger)

    def all_done(self, effect_ids: list[str]) -> bool:
        return all(i in self.done for i in effect_ids)


def perform(ctx: Context, config: TenantConfig, effects: list[Effect]) -> Outcome:
    tenant = config.tenant
    unique: dict[str, Effect] = {}
    for effect in effects:
        unique.setdefault(effect.effect_id, effect)
    outcome = Outcome()
    if not unique:
        return outcome
    ledgered = [i for i, e in unique.items() if not isinstance(e, RecordViolation)]
    outcome.done |= ctx.store.effects_done(tenant, ledgered)

    writes = [e for e in unique.values() if isinstance(e, SetCardFields) and e.effect_id not in outcome.done]
    if writes:
        _write_cards(ctx, config, writes, outcome)

    for effect in unique.values():
        if isinstance(effect, RecordViolation):
            # A conditional put: a second write of the same violation keeps one row.
            if ctx.store.put_violation(tenant, effect.violation, ctx.clock()):
                observability.violation(tenant, effect.violation.type)
            outcome.done.add(effect.effect_id)

    messages = [e for e in unique.values() if isinstance(e, Notify) and e.effect_id not in outcome.done]
    if messages:
        _notify(ctx, config, messages, outcome)
    return outcome


def _write_cards(ctx: Context, config: TenantConfig, writes: list[SetCardFields], outcome: Outcome) -> None:
    try:
        result = ctx.adapter(config).set_fields(writes)
    except SecretMissing as exc:
        log.error("tenant %s: cannot write to the CRM: %s", config.tenant, exc)
        outcome.failed.update({w.effect_id: str(exc) for w in writes})
        return
    if result.succeeded:
        ctx.store.mark_effects(config.tenant, result.succeeded, ctx.clock())
    outcome.done |= result.succeeded
    outcome.performed += len(result.succeeded)
    leads = {w.effect_id: w.entity.key for w in writes}
    for effect_id, error in result.failed.items():
        outcome.failed[effect_id] = str(error)
        log.warning(
            "tenant %s: CRM write %s failed: %s",
            config.tenant,
            effect_id,
            error,
            extra={"lead": leads.get(effect_id)},
        )
        observability.crm_failure(config.tenant, error)


def _notify(ctx: Context, config: TenantConfig, messages: list[Notify], outcome: Outcome) -> None:
    try:
        notifier = ctx.notifier(config)
    except SecretMissing as exc:
        log.error("tenant %s: cannot send Telegram messages: %s", config.tenant, exc)
        outcome.failed.update({m.effect_id: str(exc) for m in messages})
        return
    for index, message in enumerate(messages):
        try:
            notifier.send(config.telegram.chat_id, message.text)
        except CrmError as exc:
            log.warning("tenant %s: Telegram message %s failed: %s", config.tenant, message.effect_id, exc)
            observability.telegram_failure(config.tenant, exc)
            outcome.failed[message.effect_id] = str(exc)
            if exc.retryable:
                # Telegram is still throttling or down after the retries: leave the rest for the next run.
                for later in messages[index + 1 :]:
                    outcome.failed[later.effect_id] = "deferred: Telegram unavailable"
                return
            continue
        # Recorded one by one: a crash between two sends must not resend the first.
        ctx.store.mark_effects(config.tenant, [message.effect_id], ctx.clock())
        outcome.done.add(message.effect_id)
        outcome.performed += 1
