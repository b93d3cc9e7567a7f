"""Lambda's asynchronous Invoke answered inside the process: the local stack, the tests and the
benchmarks start the jobs Lambda through the real boto3 client (validation, serialization and
signing all done), and this takes each event as Lambda's service would, with a 202, keeping its
payload for whoever runs the jobs (leadwatch.testing.stack.LocalStack.pump_jobs). Nothing leaves
the process: no moto, no network.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit


class Invocations:
    """A botocore `before-send` handler for Lambda's Invoke (InvocationType=Event only); it keeps
    (function name, payload) of every event it takes."""

    def __init__(self) -> None:
        self._events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self.calls = 0  # Invoke requests answered

    def __call__(self, request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        path = urlsplit(request.url).path  # /2015-03-31/functions/<name>/invocations
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[1] != "functions" or parts[3] != "invocations":
            raise RuntimeError(f"only Lambda's Invoke is answered here, not {request.method} {path}")
        kind = request.headers.get("X-Amz-Invocation-Type", b"")
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind != "Event":
            raise RuntimeError(f"only asynchronous invocations (Event) are answered here, not {kind!r}")
        body = request.body
        payload = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body or "{}")
        with self._lock:
            self._events.append((unquote(parts[2]), payload))
            self.calls += 1
        return AWSResponse(request.url, 202, {"x-amzn-RequestId": str(uuid.uuid4())}, _Empty())

    def take(self) -> list[tuple[str, Any]]:
        """Every event taken since the last call, oldest first."""
        with self._lock:
            events, self._events = self._events, []
            return events

    def payloads(self) -> list[Any]:
        """The payloads taken since the last call (`take` without the function names)."""
        return [payload for _, payload in self.take()]


class _Empty:
    """The body of a 202: nothing (botocore reads Invoke's answer as a stream)."""

    def read(self, *_: Any, **__: Any) -> bytes:
        return b""

    def stream(self, **_: Any) -> Any:
        yield b""


def lambda_client(invocations: Invocations, region: str) -> Any:
    """A boto3 Lambda client whose requests `invocations` answers (first in line, so neither moto,
    where it is active, nor the network sees them)."""
    import boto3

    client = boto3.client("lambda", region_name=region)
    try:
        from moto.core.models import botocore_stubber

        client.meta.events.unregister("before-send", botocore_stubber)
    except ImportError:  # moto is a test dependency; nothing of it to take off without it
        pass
    client.meta.events.register_first("before-send", invocations)
    return client
