"""POST /hooks/{tenant}: the CRMs' webhooks. Thin glue over leadwatch.ingress."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalice import Chalice, Response

from functions.request import current_request, raw_body

# amoCRM and Bitrix24 post forms; JSON and text are accepted so a wrong body gets our 400, not Chalice's 415.
CONTENT_TYPES = ["application/x-www-form-urlencoded", "application/json", "text/plain", "multipart/form-data"]


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(
        body=json.dumps(body, ensure_ascii=False),
        status_code=status,
        headers={"Content-Type": "application/json"},
    )


def register(app: Chalice) -> None:
    app.route("/hooks/{tenant}", methods=["POST"], content_types=CONTENT_TYPES)(_handler(app))


def _handler(app: Chalice) -> Callable[[str], Response]:
    def receive_webhook(tenant: str) -> Response:
        return _receive(app, tenant)

    return receive_webhook


def _receive(app: Chalice, tenant: str) -> Response:
    from leadwatch import observability
    from leadwatch.context import get_context
    from leadwatch.ingress import receive

    request = current_request(app)
    # The delivery's request id until its events are parsed; then their dedupe keys (leadwatch.ingress).
    request_id = (request.context or {}).get("requestId")
    with observability.invocation(request_id, tenant=tenant, lambda_context=app.lambda_context) as log:
        body = raw_body(request)
        query = dict(request.query_params or {})  # amoCRM's carries the hook secret: never logged
        content_type = request.headers.get("content-type", "")
        answer = receive(get_context(), tenant, body, query, content_type)
        # Status and counts only: an error text may quote what the caller sent.
        log.info(
            "webhook answered %d",
            answer.status,
            extra={k: answer.body[k] for k in ("accepted", "duplicates", "kept_as") if k in answer.body},
        )
        return _json(answer.status, answer.body)
