"""Reconciliation: find what webhooks missed.

Bitrix24 never redelivers a failed event and amoCRM hooks can be lost or come
out of order, so on a schedule leadwatch lists the cards changed since its
checkpoint and feeds those it has not seen (or has seen in another stage or
with another owner) through the same idempotent path as webhooks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from datetime import datetime, timedelta
from typing import Any

from crm_adapters.base import CrmError
from leadwatch import observability
from leadwatch.config import TenantConfig
from leadwatch.context import Context
from leadwatch.events import CrmEvent, EventKind, LeadSnapshot
from leadwatch.ingress import accept
from leadwatch.process import resolve

log = logging.getLogger("leadwatch.reconcile")

FIRST_LOOKBACK = timedelta(days=1)
# Re-read a little before the checkpoint: a change committed late, or clocks a little apart.
OVERLAP = timedelta(minutes=5)
CHECKPOINT = "reconcile"


@dataclass
class ReconcileReport:
    listed: int = 0
    fed: int = 0
    error: str | None = None
    # What each process's own reconciliation fed (a process's `reconcile` hook), by process.
    processes: dict[str, dict[str, Any]] = field(default_factory=dict)


def reconcile(ctx: Context, now: datetime | None = None) -> dict[str, ReconcileReport]:
    when = now or ctx.clock()
    return observability.per_tenant(
        [config for config in ctx.registry if ctx.processes.running(config)],
        "reconciliation",
        lambda config: reconcile_tenant(ctx, config, when),
        lambda _, exc: ReconcileReport(error=type(exc).__name__),
        log,
    )


def next_checkpoint(
    stored: str | None, snapshots: Sequence[LeadSnapshot], since: datetime, now: datetime
) -> datetime | None:
    """Where the checkpoint moves after a listing from `since`, None when it stays (no write).

    It is the newest change listed, never past now (a CRM clock ahead of ours must not hide
    changes) and never back. A listing with nothing newer leaves it where it is: the next tick
    lists from the same place, which holds no more than what changed since (a card changed while
    the tenant was quiet is listed all the same), so a quiet tenant's reconciliation writes
    nothing. The first run sets it, so a tenant's lookback is a day once only.
    """
    previous = datetime.fromisoformat(stored) if stored else None
    newest = max((s.modified_at for s in snapshots if s.modified_at), default=None)
    if newest is None:
        return max(since, now - OVERLAP) if previous is None else None
    moved = min(newest, now)
    if previous is not None and moved <= previous:
        return None
    return moved


def reconcile_tenant(ctx: Context, config: TenantConfig, now: datetime) -> ReconcileReport:
    report = ReconcileReport()
    stored = ctx.store.get_checkpoint(config.tenant, CHECKPOINT)
    since = datetime.fromisoformat(stored) - OVERLAP if stored else now - FIRST_LOOKBACK
    try:
        snapshots = list(ctx.adapter(config).list_changed_leads(since))
    except CrmError as exc:
        # The CRM down or throttling: the next tick reads from the same checkpoint. Not a failed
        # job: retrying it at once would only hammer the CRM, and ten failures park it as dead.
        log.warning("tenant %s: reconciliation postponed, the CRM cannot answer: %s", config.tenant, exc)
        observability.crm_failure(config.tenant, exc)
        report.error = f"CRM unavailable: {type(exc).__name__}"
        return report
    report.listed = len(snapshots)
    states = ctx.store.get_leads(config.tenant, [s.entity for s in snapshots])
    events = []
    for snapshot in snapshots:
        state = states.get(snapshot.entity)
        if state is not None and state.stage == snapshot.stage and state.responsible == snapshot.responsible:
            continue
        modified = snapshot.modified_at or snapshot.created_at
        events.append(
            CrmEvent(
                tenant=config.tenant,
                kind=EventKind.LEAD_CREATED if state is None else EventKind.LEAD_CHANGED,
                entity=snapshot.entity,
                dedupe_key=f"recon:{snapshot.entity.key}:{snapshot.stage}:{snapshot.responsible}:{int(modified.timestamp())}",
                source="reconcile",
                raw_event="reconcile",
                occurred_at=modified,
                lead=snapshot,
            )
        )
    if events:
        report.fed, _ = accept(ctx, config, events)
    checkpoint = next_checkpoint(stored, snapshots, since, now)
    if checkpoint is not None:
        ctx.store.set_checkpoint(config.tenant, CHECKPOINT, checkpoint.isoformat())
    for process in ctx.processes.running(config):
        if process.reconcile is None:
            continue
        # Each its own try: a portal without telephony rights must not stop the reconciliation of cards.
        try:
            found = resolve(process.reconcile)(ctx, config, now)
        except Exception as exc:
            log.exception("tenant %s: reconciliation of %s failed", config.tenant, process.name)
            observability.crm_failure(config.tenant, exc)
            report.error = f"{process.name}: {type(exc).__name__}"
        else:
            report.processes[process.name] = (
                asdict(found) if is_dataclass(found) and not isinstance(found, type) else dict(found or {})
            )
    return report
