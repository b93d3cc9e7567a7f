"""What every fake API server shares: a real HTTP server on 127.0.0.1, a request
log tests can assert on, rate limits counted as the real services count them (a leaky
bucket, requests per fixed window, at most so many in any window), and
fault injection (scripted or seeded-random) for 5xx, rate-limit and timeout
answers.

A fake subclasses `FakeServer` and implements `handle(request) -> Reply`.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def query_dict(self) -> dict[str, str]:
        return dict(self.query)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to stall before answering (a timeout fault)

    @classmethod
    def json(cls, status: int, payload: Any, content_type: str = "application/json") -> Reply:
        return cls(status, json.dumps(payload, ensure_ascii=False).encode(), content_type)


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: list[tuple[str, str]]
    body: bytes
    status: int
    at: float
    fault: str | None = None


class LeakyBucket:
    """Drains `rate` requests per second and refuses once `burst` are queued."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._level = 0.0
        self._stamp = clock()
        self._lock = threading.Lock()
        self.refused = 0  # requests the limit itself refused (not the scripted faults)

    def admit(self) -> bool:
        with self._lock:
            now = self._clock()
            self._level = max(0.0, self._level - (now - self._stamp) * self.rate)
            self._stamp = now
            if self._level + 1 > self.burst:
                self.refused += 1
                return False
            self._level += 1
            return True


class FixedWindow:
    """Admits `limit` requests in each window of `seconds` (0-1 s, 1-2 s, ... on its clock) and
    refuses the rest of that window: a service that counts requests per second (amoCRM)."""

    def __init__(self, limit: int, seconds: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.seconds = seconds
        self._clock = clock
        self._window = -1
        self._count = 0
        self.busiest = 0  # the most requests admitted in one window so far
        self._lock = threading.Lock()
        self.refused = 0

    def admit(self) -> bool:
        with self._lock:
            window = int(self._clock() // self.seconds)
            if window != self._window:
                self._window, self._count = window, 0
            if self._count >= self.limit:
                self.refused += 1
                return False
            self._count += 1
            self.busiest = max(self.busiest, self._count)
            return True


class SlidingWindow:
    """Admits at most `limit` requests in any `seconds` (a log of the admitted times): a
    per-minute limit however the minute is taken. `retry_after()`: when the oldest leaves."""

    def __init__(self, limit: int, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.seconds = seconds
        self._clock = clock
        self._admitted: list[float] = []
        self._lock = threading.Lock()
        self.refused = 0

    def _trim(self, now: float) -> None:
        self._admitted = [t for t in self._admitted if t > now - self.seconds]

    def admit(self) -> bool:
        with self._lock:
            now = self._clock()
            self._trim(now)
            if len(self._admitted) >= self.limit:
                self.refused += 1
                return False
            self._admitted.append(now)
            return True

    def retry_after(self) -> float:
        """0 when a request may go now; else the wait, and the request counts as refused."""
        with self._lock:
            now = self._clock()
            self._trim(now)
            if len(self._admitted) < self.limit:
                return 0.0
            self.refused += 1
            return self._admitted[0] + self.seconds - now


# A fault is a callable that, given the request, returns the Reply to send instead.
Fault = Callable[[Request], Reply]


def slow_fault(seconds: float, late_error: Fault) -> Fault:
    """A fault that answers only after `seconds`: the fake performs the request for real and sends
    its real reply late (a client that timed out cannot know whether a write happened).
    `late_error` is the reply when the fault is called on its own, outside a fake."""

    def slow_reply(request: Request) -> Reply:
        reply = late_error(request)
        reply.delay = seconds
        return reply

    # Read back by FakeServer._pick_fault (which performs the request for real); a function has no
    # declared attributes.
    slow_reply.answer_after = seconds  # type: ignore[attr-defined]
    slow_reply.__name__ = f"slow_{seconds:g}s"
    return slow_reply


class FakeServer:
    """Base class: start() binds 127.0.0.1 on a free port and serves in a thread."""

    name = "fake"

    def __init__(self) -> None:
        self.log: list[LoggedRequest] = []
        self._log_lock = threading.Lock()
        self._scripted: list[tuple[Callable[[Request], bool], Fault]] = []
        self._random_faults: list[tuple[float, Fault, Callable[[Request], bool]]] = []
        self._rng = random.Random(0)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.RLock()  # guards the fake's state
        # Webhooks for changes made through the REST API, not yet sent: a portal sends them from
        # its event queue after answering, never inside the request (which would make a big
        # write as slow as the receiver). `flush_echoes` sends them; the local stack does so
        # before each drain of its queue.
        self.pending_echoes: list[bytes] = []

    # ----- lifecycle
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{self.name} is not started")
        host, port = self._httpd.server_address[:2]
        if isinstance(host, bytes):  # typeshed allows it for other families; an IP socket's host is a str
            host = host.decode()
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; with Nagle on, each keep-alive request waits ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                fake._dispatch(self)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- faults
    def fail_next(self, fault: Fault, times: int = 1, when: Callable[[Request], bool] | None = None) -> None:
        """Answer the next `times` matching requests with `fault` instead of the real reply."""
        match = when or (lambda _r: True)
        with self._log_lock:
            self._scripted.extend((match, fault) for _ in range(times))

    def fail_randomly(
        self,
        probability: float,
        fault: Fault,
        seed: int | None = None,
        when: Callable[[Request], bool] | None = None,
    ) -> None:
        """Answer each matching request with `fault` with the given probability (seeded, reproducible)."""
        if seed is not None:
            self._rng = random.Random(seed)
        self._random_faults.append((probability, fault, when or (lambda _r: True)))

    def clear_faults(self) -> None:
        with self._log_lock:
            self._scripted.clear()
            self._random_faults.clear()

    def _pick_fault(self, request: Request) -> Fault | None:
        fault = self._scheduled_fault(request)
        delay = getattr(fault, "answer_after", None)
        if fault is None or delay is None:
            return fault

        def answer_late(req: Request) -> Reply:
            reply = self.handle(req)
            reply.delay = delay
            return reply

        answer_late.__name__ = fault.__name__
        return answer_late

    def _scheduled_fault(self, request: Request) -> Fault | None:
        with self._log_lock:
            for index, (match, fault) in enumerate(self._scripted):
                if match(request):
                    del self._scripted[index]
                    return fault
            for probability, fault, match in self._random_faults:
                if match(request) and self._rng.random() < probability:
                    return fault
        return None

    def flush_echoes(self) -> int:
        """Send the webhooks of the REST writes answered so far (through `deliver`); how many."""
        with self.lock:
            bodies, self.pending_echoes = self.pending_echoes, []
        deliver = getattr(self, "deliver", None)
        for body in bodies:
            if deliver is not None:
                deliver(body)
        return len(bodies)

    # ----- log
    def requests(self, path_contains: str = "", method: str | None = None) -> list[LoggedRequest]:
        with self._log_lock:
            return [r for r in self.log if path_contains in r.path and (method is None or r.method == method)]

    def clear_log(self) -> None:
        with self._log_lock:
            self.log.clear()

    # ----- plumbing
    def handle(self, request: Request) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError

    def _dispatch(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = Request(
            method=handler.command,
            path=parts.path,
            query=parse_qsl(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
        )
        fault = self._pick_fault(request)
        fault_name = None
        if fault is not None:
            reply = fault(request)
            fault_name = getattr(fault, "__name__", "fault")
        else:
            try:
                reply = self.handle(request)
            except Exception as exc:  # a bug in the fake must not hang the client
                reply = Reply.json(500, {"error": "FAKE_BUG", "error_description": repr(exc)})
        with self._log_lock:
            self.log.append(
                LoggedRequest(
                    request.method, request.path, request.query, body, reply.status, time.time(), fault_name
                )
            )
        if reply.delay:
            time.sleep(reply.delay)
        # The client may have given up waiting (a timeout fault): then there is nobody to answer.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._write(handler, reply)

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body)))
        for key, value in reply.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if reply.body:
            handler.wfile.write(reply.body)
