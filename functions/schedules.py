"""EventBridge schedules: the deadline sweep (every minute) and reconciliation."""

from __future__ import annotations

import os

from chalice import Blueprint, Rate

bp = Blueprint(__name__)

RECONCILE_MINUTES = int(os.environ.get("LEADWATCH_RECONCILE_MINUTES", "10"))


@bp.schedule(Rate(1, unit=Rate.MINUTES), name="deadline_sweep")
def deadline_sweep(event) -> dict:
    from runtime.context import get_context
    from runtime.sweep import sweep

    return {tenant: vars(report) for tenant, report in sweep(get_context()).items()}


@bp.schedule(Rate(RECONCILE_MINUTES, unit=Rate.MINUTES), name="reconcile")
def reconcile(event) -> dict:
    from runtime.context import get_context
    from runtime.reconcile import reconcile as run

    return {tenant: vars(report) for tenant, report in run(get_context()).items()}
