"""The HTTP API adapter (leadwatch/http_api.py): events in payload format 1.0, without a
resourcePath to route on, reach the right Chalice route with the right parameters."""

from __future__ import annotations

import base64
import json
from typing import Any

from chalice import Chalice
from hypothesis import given
from hypothesis import strategies as st

from leadwatch.http_api import HttpApiHandler


def echo_app() -> Chalice:
    app = Chalice("probe")

    def echo(**params: str) -> dict[str, Any]:
        request = app.current_request
        assert request is not None
        return {
            "route": request.path,
            "params": params,
            "query": dict(request.query_params or {}),
            "body": request.raw_body.decode() if request.raw_body else "",
            "key": request.headers.get("x-api-key"),
        }

    app.route("/hooks/{tenant}", methods=["POST"], content_types=["application/x-www-form-urlencoded"])(
        lambda tenant: echo(tenant=tenant)
    )
    app.route("/tenants/{tenant}/dialing")(lambda tenant: echo(tenant=tenant))
    app.route("/tenants/{tenant}/leads/{lead}/calls")(lambda tenant, lead: echo(tenant=tenant, lead=lead))
    app.route("/tenants/{tenant}/leads/latest/calls")(lambda tenant: echo(tenant=tenant))
    return app


def event(method: str, path: str, body: str | None = None, **extra: Any) -> dict[str, Any]:
    headers = extra.pop("headers", {})
    return {
        "version": "1.0",
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": extra.pop("query", None),
        "multiValueQueryStringParameters": extra.pop("multi_query", None),
        "requestContext": {"httpMethod": method, "path": path, "stage": extra.pop("stage", "$default")},
        "pathParameters": None,
        "stageVariables": None,
        "body": body,
        "isBase64Encoded": extra.pop("base64", False),
        **extra,
    }


def call(handler: HttpApiHandler, ev: dict[str, Any]) -> tuple[int, Any]:
    answer = handler(ev, None)
    return answer["statusCode"], json.loads(answer["body"])


def test_a_webhook_reaches_its_route_with_its_tenant_and_body():
    handler = HttpApiHandler(echo_app())
    status, body = call(
        handler,
        event(
            "POST",
            "/hooks/acme-b24",
            "event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=7",
            headers={"content-type": "application/x-www-form-urlencoded"},
            query={"key": "s"},
            multi_query={"key": ["s"]},
        ),
    )
    assert status == 200
    assert body["route"] == "/hooks/{tenant}" and body["params"] == {"tenant": "acme-b24"}
    assert body["body"].startswith("event=ONCRMLEADADD") and body["query"] == {"key": "s"}


def test_the_literal_route_wins_over_the_parameter_and_params_are_decoded():
    handler = HttpApiHandler(echo_app())
    _, latest = call(handler, event("GET", "/tenants/t1/leads/latest/calls"))
    assert latest["route"] == "/tenants/{tenant}/leads/latest/calls"
    _, one = call(handler, event("GET", "/tenants/t1/leads/lead%3A42/calls", headers={"x-api-key": "k"}))
    assert one["route"] == "/tenants/{tenant}/leads/{lead}/calls"
    assert one["params"] == {"tenant": "t1", "lead": "lead:42"} and one["key"] == "k"


def test_query_without_multi_values_and_a_base64_body_still_arrive():
    handler = HttpApiHandler(echo_app())
    raw = "event=ONCRMLEADADD"
    _, body = call(
        handler,
        event(
            "POST",
            "/hooks/t",
            base64.b64encode(raw.encode()).decode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
            query={"key": "v"},
            base64=True,
        ),
    )
    assert body["body"] == raw and body["query"] == {"key": "v"}


def test_a_named_stage_prefix_is_routed_and_an_unknown_path_is_404_not_an_error():
    handler = HttpApiHandler(echo_app())
    status, body = call(handler, event("GET", "/prod/tenants/t/dialing", stage="prod"))
    assert status == 200 and body["params"] == {"tenant": "t"}
    status, body = call(handler, event("GET", "/nothing/here"))
    assert status == 404 and "/nothing/here" in body["Message"]
    status, _ = call(handler, event("DELETE", "/tenants/t/dialing"))
    assert status == 405


def test_every_route_of_the_real_app_is_reachable():
    import app as leadwatch_app

    handler = HttpApiHandler(leadwatch_app.app)
    for template in leadwatch_app.app.routes:
        path = template.replace("{tenant}", "acme").replace("{lead}", "lead-1")
        found = handler.route(event("GET", path))
        assert found is not None and found[0] == template, template


@given(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,40}", fullmatch=True))
def test_any_tenant_id_routes_to_the_webhook(tenant: str):
    handler = HttpApiHandler(echo_app())
    assert handler.route(event("POST", f"/hooks/{tenant}")) == ("/hooks/{tenant}", {"tenant": tenant})
