"""The Chalice app of a deployment, built from its process registry."""

from __future__ import annotations

from typing import Any

from chalice import Chalice

from leadwatch.registry import ProcessRegistry


def build_app(processes: ProcessRegistry, name: str = "leadwatch") -> tuple[Chalice, dict[str, Any]]:
    """The app (webhooks, read API with one route per query, worker, one schedule per process
    schedule, reconciliation) and the scheduled handlers by Lambda name."""
    from functions import api, jobs, schedules, webhooks, worker

    app = Chalice(app_name=name)
    webhooks.register(app)
    api.register(app, processes)
    # Each build registers fresh handlers: a Chalice Blueprint cannot serve two apps (tests build many).
    return app, {**worker.register(app), **jobs.register(app), **schedules.register(app, processes)}
