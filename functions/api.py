"""The read API.

  GET /tenants/{tenant}/timeliness?from=YYYY-MM-DD&to=YYYY-MM-DD   on time / late per manager and day
  GET /tenants/{tenant}/dialing?date=YYYY-MM-DD                     the day's dialing report
  GET /tenants/{tenant}/leads/{lead}/calls                          a card's attempts and touches

Every request needs the tenant's own key in `X-Api-Key`; a tenant whose file has
no `api_key` has the read API switched off. The key is compared in constant time.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from datetime import date, timedelta
from typing import TYPE_CHECKING

from chalice import Blueprint, Response

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context

bp = Blueprint(__name__)
log = logging.getLogger("leadwatch.api")

MAX_RANGE = timedelta(days=366)
DEFAULT_DAYS = 6
# Echoed input is clipped so an error answer stays small whatever the caller sent.
ECHO_CHARS = 64


def _json(status: int, body: dict) -> Response:
    return Response(
        body=json.dumps(body, ensure_ascii=False),
        status_code=status,
        headers={"Content-Type": "application/json"},
    )


def _echo(value: str) -> str:
    return repr(value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "...")


def _day(params: dict[str, str], name: str, default: date) -> date:
    value = params.get(name)
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"'{name}' must be a date like 2025-11-05, got {_echo(value)}") from None


def _days_before(day: date, days: int) -> date:
    try:
        return day - timedelta(days=days)
    except OverflowError:  # `to=0001-01-03`: the default week cannot start before year 1
        return date.min


def _key_matches(given: str, expected: str) -> bool:
    # surrogatepass: a header carrying a lone surrogate is a wrong key, not an encoding crash.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def _authorize(ctx: Context, tenant: str) -> TenantConfig | Response:
    """The tenant's configuration when the caller holds its key, else the answer that refuses.

    An unknown tenant gets 404 before any key is looked at: tenant ids are not secrets (each is
    in the webhook URL its CRM holds and in the tenant's file name), so hiding them behind a
    uniform 401 would cost operators a clear answer to a typo and protect nothing. What the key
    guards is the data, and no answer other than a 200 carries any.
    """
    from leadwatch.secrets import SecretMissing

    config = ctx.tenant(tenant)
    if config is None:
        return _json(404, {"error": f"unknown tenant {_echo(tenant)}"})
    if config.api_key is None:
        return _json(
            403,
            {
                "error": f"the read API is off for tenant {tenant!r} until an api_key is "
                "configured in its tenant file"
            },
        )
    given = bp.current_request.headers.get("x-api-key") or ""
    if not given:
        return _json(401, {"error": "the X-Api-Key header is missing; send the tenant's read API key"})
    try:
        expected = ctx.secrets(config.api_key)
    except SecretMissing as exc:
        log.error("tenant %s: cannot check read API keys: %s", tenant, exc)
        return _json(503, {"error": "tenant is misconfigured; see the logs"})
    if not _key_matches(given, expected):
        return _json(401, {"error": "X-Api-Key is not this tenant's read API key"})
    return config


def _observed(tenant: str, answer: Callable[[], Response]) -> Response:
    """Run one read under the request's correlation id, with the tenant in every log line."""
    from leadwatch import observability

    request = bp.current_request
    with observability.invocation(
        (request.context or {}).get("requestId"), tenant=tenant, lambda_context=bp.lambda_context
    ):
        return answer()


@bp.route("/tenants/{tenant}/timeliness", methods=["GET"])
def timeliness(tenant: str) -> Response:
    return _observed(tenant, lambda: _timeliness(tenant))


def _open(tenant: str) -> tuple[Context, TenantConfig, dict[str, str], date] | Response:
    """The context, the tenant's configuration (key checked), the query and the tenant's today."""
    from leadwatch.context import get_context

    ctx = get_context()
    config = _authorize(ctx, tenant)
    if isinstance(config, Response):
        return config
    # Only the parameters a route names mean anything; others are ignored, as caches and proxies add some.
    params = dict(bp.current_request.query_params or {})
    return ctx, config, params, ctx.clock().astimezone(ctx.calendar(config).tz).date()


def _timeliness(tenant: str) -> Response:
    from workflows.timeliness.queries import timeliness_by_day, timeliness_by_manager

    opened = _open(tenant)
    if isinstance(opened, Response):
        return opened
    ctx, config, params, today = opened
    try:
        last = _day(params, "to", today)
        first = _day(params, "from", _days_before(last, DEFAULT_DAYS))
    except ValueError as exc:
        return _json(400, {"error": str(exc)})
    if first > last:
        return _json(400, {"error": f"'from' ({first}) is after 'to' ({last})"})
    if last - first > MAX_RANGE:
        return _json(400, {"error": f"ask for at most {MAX_RANGE.days} days at once"})
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


@bp.route("/tenants/{tenant}/dialing", methods=["GET"])
def dialing_report(tenant: str) -> Response:
    return _observed(tenant, lambda: _dialing_report(tenant))


def _dialing_report(tenant: str) -> Response:
    from workflows.dialing.report import daily_report, report_text

    opened = _open(tenant)
    if isinstance(opened, Response):
        return opened
    ctx, config, params, today = opened
    try:
        day = _day(params, "date", today)
    except ValueError as exc:
        return _json(400, {"error": str(exc)})
    report = daily_report(ctx, config, day)
    body = {"tenant": tenant, **report.to_dict()}
    if params.get("format") == "text":
        body["text"] = report_text(ctx, config, report)
    return _json(200, body)


@bp.route("/tenants/{tenant}/leads/{lead}/calls", methods=["GET"])
def lead_calls(tenant: str, lead: str) -> Response:
    return _observed(tenant, lambda: _lead_calls(tenant, lead))


def _entity(lead: str):
    """`42` is lead 42; `deal:42` (or `lead:42`) names the card type."""
    from leadwatch.events import EntityRef, EntityType

    kind, _, ident = lead.rpartition(":")
    if not ident.isdigit() or len(ident) > 20 or int(ident) == 0:
        raise ValueError(
            f"a card id is a positive number, optionally 'deal:' or 'lead:' first; got {_echo(lead)}"
        )
    try:
        return EntityRef(EntityType(kind or "lead"), str(int(ident)))
    except ValueError:
        raise ValueError(f"unknown card type in {_echo(lead)}: use 'lead:' or 'deal:'") from None


def _lead_calls(tenant: str, lead: str) -> Response:
    from workflows.dialing import rules as dialing

    opened = _open(tenant)
    if isinstance(opened, Response):
        return opened
    ctx, config, _, _ = opened
    try:
        entity = _entity(lead)
    except ValueError as exc:
        return _json(400, {"error": str(exc)})
    state = ctx.store.get_lead(tenant, entity)
    if state is None:
        return _json(404, {"error": f"leadwatch holds no card {entity.key} for tenant {tenant!r}"})
    rules = ctx.dialing_rules(config)
    calendar = ctx.calendar(config)
    calls = ctx.store.calls_of(tenant, entity)
    by_day: dict[str, int] = {}
    for call in calls:
        day = dialing.call_day(call, calendar.tz).isoformat()
        by_day[day] = by_day.get(day, 0) + 1
    first = dialing.first_plan_day(state.due_at, calendar.tz)
    return _json(
        200,
        {
            "tenant": tenant,
            "lead": entity.key,
            "title": state.title,
            "manager": state.responsible,
            "stage": state.stage,
            "plan_days": [d.isoformat() for d in dialing.plan_days(first, calendar, rules)],
            "attempts_total": state.call_attempts,
            "touches_total": state.call_touches,
            "attempts_by_day": by_day,
            "calls": [
                {
                    "key": call.key,
                    "started_at": call.started_at.isoformat(),
                    "direction": call.direction,
                    "manager": call.manager,
                    "duration": call.duration,
                    "answered": call.answered,
                    "touch": rules.is_touch(call),
                    "record_url": call.record_url,
                    "source": call.source,
                }
                for call in calls
            ],
        },
    )
