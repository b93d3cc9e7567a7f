"""What the route handlers read of Chalice's current request, typed as they use it."""

from __future__ import annotations

from chalice import Chalice
from chalice.app import Request


def current_request(app: Chalice) -> Request:
    """The request being answered. Chalice sets it before it calls a route handler; its type
    allows None because the same attribute exists between requests."""
    request = app.current_request
    if request is None:
        raise RuntimeError("no current request: a route handler was called outside a request")
    return request


def raw_body(request: Request) -> bytes:
    """The body as sent. Chalice declares `raw_body` as `str | bytes` but decodes base64 and
    encodes text itself; a str is encoded here all the same rather than trusted to be bytes."""
    body = request.raw_body
    return body.encode("utf-8") if isinstance(body, str) else body
