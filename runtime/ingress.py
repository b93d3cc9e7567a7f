"""The webhook hot path: authenticate, parse, store once, queue. No CRM call.

A delivery is answered in milliseconds; everything slow happens in the worker.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from crm_adapters.base import MalformedWebhook, WebhookRejected, WebhookRequest
from runtime.context import Context
from tenancy.config import TenantConfig
from tenancy.secrets import SecretMissing
from workflows.events import CrmEvent

log = logging.getLogger("leadwatch.ingress")

MAX_BODY = 256 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


def receive(ctx: Context, tenant_id: str, body: bytes, query: dict[str, str], content_type: str) -> Answer:
    config = ctx.tenant(tenant_id)
    if config is None:
        return Answer(404, {"error": f"unknown tenant {tenant_id!r}"})
    if len(body) > MAX_BODY:
        return _reject(ctx, config, 413, f"body of {len(body)} bytes is over the {MAX_BODY}-byte limit", body)
    try:
        events = ctx.adapter(config).parse_webhook(WebhookRequest(body, query, content_type))
    except MalformedWebhook as exc:
        return _reject(ctx, config, 400, exc.message, body)
    except WebhookRejected as exc:
        log.info("tenant %s: webhook refused (%s): %s", tenant_id, exc.status, exc.message)
        return Answer(exc.status, {"error": exc.message})
    except SecretMissing as exc:
        log.error("tenant %s: cannot authenticate webhooks: %s", tenant_id, exc)
        return Answer(503, {"error": "tenant is misconfigured; see the logs"})
    try:
        new, duplicates = accept(ctx, config, events)
    except Exception:
        log.exception("tenant %s: could not store or queue a webhook", tenant_id)
        return Answer(503, {"error": "temporarily unable to accept events; please retry"})
    return Answer(200, {"accepted": new, "duplicates": duplicates})


def accept(ctx: Context, config: TenantConfig, events: list[CrmEvent]) -> tuple[int, int]:
    """Store each event once (the conditional put is the dedupe) and queue the new ones.

    If queueing fails, the stored events are removed again so the CRM's retry
    (or the next reconciliation) is not mistaken for a duplicate.
    """
    now = ctx.clock()
    fresh: list[CrmEvent] = []
    for event in events:
        if ctx.store.put_event(config.tenant, event.dedupe_key, event.to_dict(), now):
            fresh.append(event)
    if fresh:
        try:
            ctx.queue.send([e.to_dict() for e in fresh])
        except Exception:
            for event in fresh:
                ctx.store.forget_event(config.tenant, event.dedupe_key)
            raise
    return len(fresh), len(events) - len(fresh)


def _reject(ctx: Context, config: TenantConfig, status: int, reason: str, body: bytes) -> Answer:
    ident = uuid.uuid4().hex[:12]
    try:
        ctx.store.put_reject(config.tenant, status, reason, body, ctx.clock(), ident)
    except Exception:
        log.exception("tenant %s: could not keep a rejected body", config.tenant)
    log.info("tenant %s: webhook rejected (%s): %s [kept as %s]", config.tenant, status, reason, ident)
    return Answer(status, {"error": reason, "kept_as": ident})
