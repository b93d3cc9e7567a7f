"""The webhook hot path: authenticate, parse, dedupe where it matters, queue. No CRM call.

A delivery is answered in milliseconds; everything slow happens in the worker. It is answered
only once its events are in SQS, which keeps them until a worker has processed them.

The inbox (one conditional put per event: the dedupe, and the event kept 14 days) is written
only for the events whose repeat some process must not see: those a running process consumes
without declaring them idempotent (`Process.idempotent_events`; today a card's arrival and its
deletion), and every event reconciliation feeds (a card listed again at each tick while the
worker has not caught up is then queued once). The others (stage and owner changes,
activities, calls: most webhooks) are queued as they come, and a redelivered one is processed
again to no effect.

A refused delivery is answered 4xx and logged (tenant, status, reason; never its body or URL).
Its body is kept for inspection only when the delivery authenticated (the adapter says so on
MalformedWebhook) and was unreadable, stripped of every `auth[...]` field and known secret, as
raw bytes, and sampled: at most `KEPT_REJECTS_PER_HOUR` (leadwatch.store.dynamodb) per tenant
an hour. An anonymous caller thus makes leadwatch store nothing, and a broken integration
costs a bounded few writes.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any

from crm_adapters.base import MalformedWebhook, WebhookRejected, WebhookRequest
from leadwatch import observability, redaction
from leadwatch.config import TenantConfig
from leadwatch.context import Context
from leadwatch.events import CrmEvent
from leadwatch.secrets import SecretMissing

log = logging.getLogger("leadwatch.ingress")

MAX_BODY = 256 * 1024
# An inbox item must stay under DynamoDB's 400 KB, and ten events share one SQS batch (256 KiB
# in all on queues made before SQS allowed 1 MiB).
MAX_EVENT_BYTES = 24 * 1024
MAX_TITLE = 255
# Adapters' messages may quote the offending key or value; the answer (and the kept reason)
# stays small whatever the caller sent.
MAX_MESSAGE = 300


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


def receive(ctx: Context, tenant_id: str, body: bytes, query: dict[str, str], content_type: str) -> Answer:
    config = ctx.tenant(tenant_id)
    if config is None:
        return Answer(404, {"error": _clip(f"unknown tenant {tenant_id!r}")})
    if len(body) > MAX_BODY:
        # Not read, so not authenticated: answered and logged, never kept.
        reason = f"body of {len(body)} bytes is over the {MAX_BODY}-byte limit"
        log.info("tenant %s: webhook refused (413): %s", tenant_id, reason)
        return Answer(413, {"error": reason})
    try:
        events = ctx.adapter(config).parse_webhook(WebhookRequest(body, query, content_type))
    except MalformedWebhook as exc:
        if exc.authenticated:
            return _reject(ctx, config, 400, _clip(exc.message), body)
        log.info("tenant %s: webhook refused (400, not authenticated): %s", tenant_id, _clip(exc.message))
        return Answer(400, {"error": _clip(exc.message)})
    except WebhookRejected as exc:
        log.info("tenant %s: webhook refused (%s): %s", tenant_id, exc.status, exc.message)
        return Answer(exc.status, {"error": _clip(exc.message)})
    except SecretMissing as exc:
        log.error("tenant %s: cannot authenticate webhooks: %s", tenant_id, exc)
        return Answer(503, {"error": "tenant is misconfigured; see the logs"})
    observability.bind(correlation_id=observability.correlation_of([e.dedupe_key for e in events]))
    try:
        new, duplicates = accept(ctx, config, events)
    except Exception:
        log.exception("tenant %s: could not store or queue a webhook", tenant_id)
        return Answer(503, {"error": "temporarily unable to accept events; please retry"})
    return Answer(200, {"accepted": new, "duplicates": duplicates})


def accept(ctx: Context, config: TenantConfig, events: list[CrmEvent]) -> tuple[int, int]:
    """Store each event that must be deduped once (the conditional put is the dedupe) and queue
    the new ones with the others; (queued, duplicates).

    If queueing fails, the stored events are removed again so the CRM's retry
    (or the next reconciliation) is not mistaken for a duplicate.
    """
    now = ctx.clock()
    fresh: list[CrmEvent] = []
    stored: list[CrmEvent] = []
    for event in map(_fit, events):
        if not _deduped(ctx, config, event):
            fresh.append(event)
        elif ctx.store.put_event(config.tenant, event.dedupe_key, event.to_dict(), now):
            fresh.append(event)
            stored.append(event)
    if fresh:
        try:
            ctx.queue.send([e.to_dict() for e in fresh])
        except Exception:
            for event in stored:
                ctx.store.forget_event(config.tenant, event.dedupe_key)
            raise
    return len(fresh), len(events) - len(fresh)


def _deduped(ctx: Context, config: TenantConfig, event: CrmEvent) -> bool:
    return event.source != "webhook" or ctx.processes.deduped(config, event.kind.value)


def _fit(event: CrmEvent) -> CrmEvent:
    """The event, slimmed if it is too big to store and queue.

    Only a card carried in an amoCRM hook can be big (a long name, many or long custom fields;
    a control character takes six bytes as JSON). Refusing it would make the CRM retry a
    delivery that can never fit. The title only labels the card in a message: it is cut first.
    The custom fields are read (quality control's rejection reason): when the card is still too
    big, it is dropped from the event, and the worker reads the card from the CRM instead.
    """
    if event.lead is None or _size(event) <= MAX_EVENT_BYTES:
        return event
    slim = replace(event, lead=replace(event.lead, title=event.lead.title[:MAX_TITLE]))
    return slim if _size(slim) <= MAX_EVENT_BYTES else replace(event, lead=None)


def _size(event: CrmEvent) -> int:
    return len(json.dumps(event.to_dict(), separators=(",", ":")))


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."


def _reject(ctx: Context, config: TenantConfig, status: int, reason: str, body: bytes) -> Answer:
    """Answer an authenticated but unreadable delivery, keeping its body (stripped) if the hour's
    sample for the tenant is not full. `kept_as` names the kept row."""
    ident = uuid.uuid4().hex[:12]
    try:
        kept = ctx.store.put_reject(
            config.tenant, status, redaction.redact(reason), redaction.strip_body(body), ctx.clock(), ident
        )
    except Exception:
        log.exception("tenant %s: could not keep a rejected body", config.tenant)
        kept = False
    if not kept:
        log.info("tenant %s: webhook rejected (%s): %s [not kept]", config.tenant, status, reason)
        return Answer(status, {"error": reason})
    log.info("tenant %s: webhook rejected (%s): %s [kept as %s]", config.tenant, status, reason, ident)
    return Answer(status, {"error": reason, "kept_as": ident})
