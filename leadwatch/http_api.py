"""The API handler behind an API Gateway *HTTP API* (payload format 1.0) instead of the REST API
Chalice deploys.

Why: every webhook is one API request, about 18 a lead, and an HTTP API request costs a third of a
REST API one ($1.20 against $3.70 a million in eu-central-1); leadwatch uses nothing only the REST
API has (no usage plans, no request mapping, no caching: API keys are checked by the app itself).
The HTTP API keeps what matters: routes (an unknown path is answered 404 by API Gateway without
invoking the function), stage throttling, a 30 s integration timeout.

The template half lives in leadwatch.bundle (`use_http_api`): the REST API Chalice generated is
replaced by an `AWS::Serverless::HttpApi` with one route per Chalice route, payload format 1.0,
integrated with the API handler, whose Lambda handler becomes `app.http_api` (this adapter).

The event half is here. Format 1.0 is the REST proxy event's shape (multiValueHeaders,
multiValueQueryStringParameters, requestContext.httpMethod), but Chalice routes on
requestContext.resourcePath, the route's *template* (/hooks/{tenant}), which the REST API sets
and the HTTP API does not promise. The adapter therefore matches the request path against the
app's own route templates and fills resourcePath and pathParameters itself, so routing never
depends on what API Gateway puts there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote


class RestApp(Protocol):
    """A Chalice app: its route table and its REST proxy handler."""

    routes: dict[str, Any]

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]: ...


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Route:
    template: str
    pattern: re.Pattern[str]
    names: tuple[str, ...]

    @classmethod
    def of(cls, template: str) -> Route:
        names = tuple(_PARAM.findall(template))
        parts = _PARAM.split(template)
        # split() alternates literal text and parameter names.
        regex = "".join(re.escape(p) if i % 2 == 0 else "([^/]+)" for i, p in enumerate(parts))
        return cls(template, re.compile(f"^{regex}/?$"), names)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in zip(self.names, found.groups(), strict=True)}


def not_found(path: str) -> dict[str, Any]:
    return {
        "statusCode": 404,
        "headers": {"Content-Type": "application/json"},
        "body": json.dumps({"Code": "NotFoundError", "Message": f"no route for {path[:200]}"}),
        "isBase64Encoded": False,
    }


class HttpApiHandler:
    """Lambda handler: an HTTP API (payload format 1.0) event to the Chalice app's REST handling."""

    def __init__(self, app: RestApp):
        self.app = app
        # Literal routes first, then those with fewer parameters: /a/b before /a/{x}.
        self.routes = sorted(
            (Route.of(t) for t in app.routes), key=lambda r: (len(r.names), -len(r.template))
        )

    def route(self, event: dict[str, Any]) -> tuple[str, dict[str, str]] | None:
        """The route template and path parameters of the request, or None."""
        context = event.get("requestContext") or {}
        path = event.get("path") or context.get("path") or "/"
        stage = context.get("stage")
        candidates = [path]
        # Under a named stage (not $default) the path may carry the stage as its first segment.
        if stage and stage != "$default" and path.startswith(f"/{stage}/"):
            candidates.append(path[len(stage) + 1 :])
        for candidate in candidates:
            for route in self.routes:
                params = route.match(candidate)
                if params is not None:
                    return route.template, params
        return None

    def as_rest_event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        found = self.route(event)
        if found is None:
            return None
        template, params = found
        context = dict(event.get("requestContext") or {})
        context["resourcePath"] = template
        context.setdefault("httpMethod", event.get("httpMethod"))
        headers = event.get("headers") or {}
        query = event.get("queryStringParameters")
        multi_query = event.get("multiValueQueryStringParameters")
        if multi_query is None and query:
            multi_query = {k: [v] for k, v in query.items()}
        return {
            **event,
            "resource": template,
            "headers": headers,
            "multiValueHeaders": event.get("multiValueHeaders") or {k: [v] for k, v in headers.items()},
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "pathParameters": {**params, **(event.get("pathParameters") or {})} or None,
            "stageVariables": event.get("stageVariables"),
            "requestContext": context,
            "body": event.get("body"),
            "isBase64Encoded": bool(event.get("isBase64Encoded", False)),
        }

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        rest = self.as_rest_event(event)
        if rest is None:
            # API Gateway routes only the app's paths here; this is a misconfigured integration.
            return not_found(str(event.get("path")))
        return self.app(rest, context)
