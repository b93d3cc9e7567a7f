"""The read API: the framework's violation journal, and one GET route per process query
(`GET /tenants/{tenant}/<query path>`), built from the registry; `leadwatch processes` lists
those. For example:

  GET /tenants/{tenant}/violations?from=&to=&type=&manager=&format=csv   the journal (leadwatch.journal)
  GET /tenants/{tenant}/timeliness?from=YYYY-MM-DD&to=YYYY-MM-DD   on time / late per manager and day
  GET /tenants/{tenant}/dialing?date=YYYY-MM-DD                     the day's dialing report
  GET /tenants/{tenant}/leads/{lead}/calls                          a card's attempts and touches

Every request needs the tenant's own key in `X-Api-Key`; a tenant whose file has
no `api_key` has the read API switched off. The key is compared in constant time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

from chalice import Chalice, Response

from functions.request import current_request, raw_body

if TYPE_CHECKING:
    from chalice.app import Request

    from leadwatch.config import TenantConfig
    from leadwatch.context import Context
    from leadwatch.process import Process, Query, Route

log = logging.getLogger("leadwatch.api")

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


def _authorize(ctx: Context, request: Request, tenant: str) -> TenantConfig | Response:
    """The tenant's configuration when the caller holds its key, else the answer that refuses.

    An unknown tenant gets 404 before any key is looked at: tenant ids are not secrets (each is
    in the webhook URL its CRM holds and in the tenant's file name), so hiding them behind a
    uniform 401 would cost operators a clear answer to a typo and protect nothing. What the key
    guards is the data, and no answer other than a 200 carries any.
    """
    from leadwatch.secrets import SecretMissing, same_secret

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
    given = request.headers.get("x-api-key") or ""
    if not given:
        return _json(401, {"error": "the X-Api-Key header is missing; send the tenant's read API key"})
    try:
        expected = ctx.secrets_of(config)(config.api_key)
    except SecretMissing as exc:
        log.error("tenant %s: cannot check read API keys: %s", tenant, exc)
        return _json(503, {"error": "tenant is misconfigured; see the logs"})
    if not same_secret(given, expected):
        return _json(401, {"error": "X-Api-Key is not this tenant's read API key"})
    return config


def _observed(routes: Chalice, tenant: str, answer: Callable[[Request], Response]) -> Response:
    """Run one read under the request's correlation id, with the tenant in every log line."""
    from leadwatch import observability
    from leadwatch.names import cached_only

    request = current_request(routes)
    # Names as the worker and the jobs cached them: this function holds no CRM credentials.
    with (
        observability.invocation(
            (request.context or {}).get("requestId"), tenant=tenant, lambda_context=routes.lambda_context
        ),
        cached_only(),
    ):
        return answer(request)


def _open(
    request: Request, tenant: str, keyed: bool = True
) -> tuple[Context, TenantConfig, dict[str, str], date] | Response:
    """The context, the tenant's configuration (key checked unless not `keyed`), the query and the
    tenant's today."""
    from leadwatch.context import get_context

    ctx = get_context()
    if keyed:
        config = _authorize(ctx, request, tenant)
    else:
        config = ctx.tenant(tenant) or _json(404, {"error": f"unknown tenant {_echo(tenant)}"})
    if isinstance(config, Response):
        return config
    # Only the parameters a route names mean anything; others are ignored, as caches and proxies add some.
    params = dict(request.query_params or {})
    return ctx, config, params, ctx.clock().astimezone(ctx.calendar(config).tz).date()


def _answer(request: Request, process: Process, query: Query, tenant: str, path: dict[str, str]) -> Response:
    from leadwatch.process import QueryError, resolve

    opened = _open(request, tenant)
    if isinstance(opened, Response):
        return opened
    ctx, config, params, today = opened
    if not ctx.processes.is_running(config, process.name):
        return _json(404, {"error": f"{process.title} is off for tenant {tenant!r}"})
    try:
        result = resolve(query.run)(ctx, config, today, {**params, **path})
    except QueryError as exc:
        return _json(exc.status, {"error": str(exc)})
    return _json(200, result.data)


def query_route(routes: Chalice, process: Process, query: Query) -> Any:
    """The route handler of one process query (Chalice passes the path's parameters by name)."""

    def handler(tenant: str, **path: str) -> Response:
        return _observed(routes, tenant, lambda request: _answer(request, process, query, tenant, path))

    handler.__name__ = handler.__qualname__ = f"{process.name}_{query.name}"
    return handler


def _serve(request: Request, process: Process, route: Route, tenant: str, path: dict[str, str]) -> Response:
    from leadwatch.process import QueryError, RouteRequest, resolve

    opened = _open(request, tenant, keyed=route.auth == "api_key")
    if isinstance(opened, Response):
        return opened
    ctx, config, params, today = opened
    if not ctx.processes.is_running(config, process.name):
        return _text(404, f"{process.title} is off for tenant {tenant!r}")
    asked = RouteRequest(
        method=request.method,
        params={**params, **path},
        body=raw_body(request),
        content_type=request.headers.get("content-type", ""),
        headers=dict(request.headers),
        today=today,
    )
    try:
        answer = resolve(route.run)(ctx, config, asked)
    except QueryError as exc:
        return _text(exc.status, str(exc))
    return Response(
        body=answer.body,
        status_code=answer.status,
        headers={"Content-Type": answer.content_type, **answer.headers},
    )


def _journal(request: Request, tenant: str) -> Response:
    """The violation journal of every process (leadwatch.journal): JSON, or CSV with format=csv."""
    from leadwatch import journal
    from leadwatch.process import QueryError

    opened = _open(request, tenant)
    if isinstance(opened, Response):
        return opened
    ctx, config, params, today = opened
    if request.query_params is not None and "type" in params:
        # `type=a&type=b` as well as `type=a,b`.
        params["type"] = ",".join(request.query_params.getlist("type"))
    try:
        answer = journal.answer(ctx, config, today, params)
    except QueryError as exc:
        return _json(exc.status, {"error": str(exc)})
    return Response(
        body=answer.body,
        status_code=answer.status,
        headers={"Content-Type": answer.content_type, **answer.headers},
    )


def journal_route(routes: Chalice) -> Any:
    def violations(tenant: str) -> Response:
        return _observed(routes, tenant, lambda request: _journal(request, tenant))

    return violations


def _text(status: int, message: str) -> Response:
    return Response(body=message, status_code=status, headers={"Content-Type": "text/plain; charset=utf-8"})


def page_route(routes: Chalice, process: Process, route: Route) -> Any:
    def handler(tenant: str, **path: str) -> Response:
        return _observed(routes, tenant, lambda request: _serve(request, process, route, tenant, path))

    handler.__name__ = handler.__qualname__ = f"{process.name}_{route.name}"
    return handler


# Pages post forms; JSON and text are accepted so a wrong body gets the process's own answer.
PAGE_CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "application/json",
    "text/plain",
]


def register(app: Chalice, processes: Any) -> None:
    """The read API's routes: the framework's journal, one per process query, and each process's
    own routes (pages). The registry keeps processes off the framework's paths (RESERVED_PATHS)."""
    app.route("/tenants/{tenant}/violations", methods=["GET"], name="violations")(journal_route(app))
    for process, query in processes.queries():
        app.route(f"/tenants/{{tenant}}/{query.path}", methods=["GET"], name=f"{process.name}_{query.name}")(
            query_route(app, process, query)
        )
    for process, route in processes.routes():
        app.route(
            f"/tenants/{{tenant}}/{route.path}",
            methods=list(route.methods),
            name=f"{process.name}_{route.name}",
            content_types=PAGE_CONTENT_TYPES,
        )(page_route(app, process, route))
