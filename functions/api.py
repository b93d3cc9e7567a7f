"""The read API: GET /tenants/{tenant}/timeliness?from=YYYY-MM-DD&to=YYYY-MM-DD."""

from __future__ import annotations

import hmac
import json
from datetime import date, timedelta

from chalice import Blueprint, Response

bp = Blueprint(__name__)

MAX_RANGE = timedelta(days=366)


def _json(status: int, body: dict) -> Response:
    return Response(
        body=json.dumps(body, ensure_ascii=False),
        status_code=status,
        headers={"Content-Type": "application/json"},
    )


def _day(params: dict, name: str, default: date) -> date:
    value = params.get(name)
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{name}' must be a date like 2025-11-05, got {value[:40]!r}") from None


@bp.route("/tenants/{tenant}/timeliness", methods=["GET"])
def timeliness(tenant: str) -> Response:
    from runtime.context import get_context
    from runtime.reports import timeliness_by_day, timeliness_by_manager

    ctx = get_context()
    config = ctx.tenant(tenant)
    if config is None:
        return _json(404, {"error": f"unknown tenant {tenant!r}"})
    if config.api_key is not None:
        given = bp.current_request.headers.get("x-api-key", "")
        expected = ctx.secrets(config.api_key)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _json(401, {"error": "missing or wrong X-Api-Key"})
    params = dict(bp.current_request.query_params or {})
    today = ctx.clock().astimezone(ctx.calendar(config).tz).date()
    try:
        last = _day(params, "to", today)
        first = _day(params, "from", last - timedelta(days=6))
    except ValueError as exc:
        return _json(400, {"error": str(exc)})
    if first > last:
        return _json(400, {"error": "'from' is after 'to'"})
    if last - first > MAX_RANGE:
        return _json(400, {"error": "ask for at most 366 days at once"})
    managers = timeliness_by_manager(ctx, config, first, last)
    return _json(
        200,
        {
            "tenant": tenant,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "managers": [m.to_dict() for m in managers],
            "days": timeliness_by_day(ctx, config, first, last),
        },
    )
