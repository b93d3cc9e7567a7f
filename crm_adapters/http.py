"""One HTTP client for every outbound API (Bitrix24, amoCRM, Telegram).

It paces requests under the API's limit (crm_adapters.limits), retries what can be
retried with exponential backoff (honouring the server's `retry_after`), and
gives up within a time budget so a Lambda never sleeps past its timeout. What
still fails is raised as a `CrmError` and left for the next run. Time and
sleep are injected so tests and benchmarks do not wait for real.

A request that may have reached the server without an answer coming back (a read
timeout, a connection dropped after sending) raises `OutcomeUnknown`. It is retried
only when the caller says the request is idempotent (reads, setting a field); a
Telegram message is not, so it is never sent again blindly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import requests
from urllib3.exceptions import MaxRetryError

from crm_adapters.base import CrmError, CrmUnavailable, OutcomeUnknown, OutOfTime
from crm_adapters.limits import Chain, Limiter, PacingWait, RateLimiter, SharedLimits, Window, WindowLimiter

__all__ = ["HttpClient", "RateLimiter", "RetryPolicy", "Transport", "WindowLimiter", "time_limit"]

Classify = Callable[[requests.Response], CrmError | None]

# What an invocation still has for HTTP (seconds, as a function of now), set by the Lambda glue.
_time_left: ContextVar[Callable[[], float] | None] = ContextVar("leadwatch_http_time_left", default=None)
# Less than this left: no new attempt (a request needs time to be answered, the caller to record it).
MIN_ATTEMPT_SECONDS = 1.0


@contextmanager
def time_limit(left: Callable[[], float]) -> Iterator[None]:
    """Bound every HTTP call made inside, with its retries and waits, by `left()` seconds.

    A Lambda killed at its timeout returns its whole batch, other tenants' messages included,
    and leaves its claims to expire: far better that a call gives up in time (a retryable
    error: the work is left for the next run) than that one slow API takes the invocation down.
    """
    token = _time_left.set(left)
    try:
        yield
    finally:
        _time_left.reset(token)


def time_left() -> float | None:
    """Seconds this invocation still has for HTTP, or None when nothing bounds it."""
    left = _time_left.get()
    return None if left is None else left()


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    budget: float = 60.0  # total seconds of waiting one call may spend

    def delay(self, attempt: int, error: CrmError, rng: random.Random) -> float:
        if error.retry_after is not None:
            # Never retry before the server allows; if that is past the budget, the call gives up
            # and the work is left for the next run.
            return max(error.retry_after, 0.0)
        backoff = min(self.base_delay * 2.0**attempt, self.max_delay)
        return backoff * (0.5 + rng.random() / 2)


class HttpClient:
    def __init__(
        self,
        classify: Classify,
        *,
        limiter: Limiter | None = None,
        policy: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: tuple[float, float] = (5.0, 20.0),
        secrets: tuple[str, ...] = (),
        user_agent: str = "leadwatch/0.1",
    ):
        self._classify = classify
        self.limiter = limiter
        self.policy = policy or RetryPolicy()
        self._session = session or requests.Session()
        self._sleep = sleep
        self._timeout = timeout
        self._secrets = tuple(s for s in secrets if s)
        self._rng = random.Random()
        self._headers = {"User-Agent": user_agent}
        self.calls = 0  # HTTP requests actually sent, retries included

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> requests.Response:
        """Send, retrying what can be retried. `idempotent=False`: a request that may have arrived
        (OutcomeUnknown) is not sent again, as doing it twice would show (a chat message)."""
        waited = 0.0
        attempt = 0
        while True:
            left = time_left()
            if left is not None and left < MIN_ATTEMPT_SECONDS:
                raise OutOfTime(f"{method} {self.redact(url)}: no time left in this invocation")
            timeout = self._timeout if left is None else _within(self._timeout, left)
            try:
                return self._once(
                    method, url, params=params, json=json, data=data, headers=headers, timeout=timeout
                )
            except CrmError as error:
                attempt += 1
                if isinstance(error, OutcomeUnknown) and not idempotent:
                    raise
                if not error.retryable or attempt >= self.policy.attempts:
                    raise
                delay = self.policy.delay(attempt - 1, error, self._rng)
                if waited + delay > self.policy.budget:
                    raise
                left = time_left()
                if left is not None and delay + MIN_ATTEMPT_SECONDS > left:
                    raise  # the retry could not finish in this invocation: the next run does it
                waited += delay
                self._sleep(delay)

    def _once(
        self, method: str, url: str, *, timeout: tuple[float, float], **kwargs: Any
    ) -> requests.Response:
        if self.limiter is not None:
            acquire_within(self.limiter, f"{method} {self.redact(url)}")
        headers = dict(self._headers)
        if kwargs.get("headers"):
            headers.update(kwargs["headers"])
        kwargs["headers"] = headers
        self.calls += 1
        try:
            response = self._session.request(method, url, timeout=timeout, **kwargs)
        except requests.RequestException as exc:
            what = "timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__
            if _maybe_delivered(exc):
                raise OutcomeUnknown(f"{method} {self.redact(url)}: {what} after sending") from None
            raise CrmUnavailable(f"{method} {self.redact(url)}: {what}") from None
        error = self._classify(response)
        if error is not None:
            error.args = (self.redact(str(error)),)
            raise error
        return response


def acquire_within(limiter: Limiter, what: str) -> float:
    """Wait for the limiter's turn, but not past the invocation's time: a turn that comes later
    than that is taken by the next run (OutOfTime), not slept towards."""
    left = time_left()
    if left is None:
        return limiter.acquire()
    try:
        return limiter.acquire(max(left - MIN_ATTEMPT_SECONDS, 0.0))
    except PacingWait as wait:
        raise OutOfTime(
            f"{what}: its turn under the rate limit comes after this invocation ({wait})"
        ) from None


def _within(timeout: tuple[float, float], left: float) -> tuple[float, float]:
    """Connect and read timeouts cut to what the invocation has left (less a moment to record
    the outcome)."""
    room = max(left - MIN_ATTEMPT_SECONDS / 2, MIN_ATTEMPT_SECONDS / 2)
    return min(timeout[0], room), min(timeout[1], room)


def _maybe_delivered(exc: requests.RequestException) -> bool:
    """Whether the request may have reached the server. Only a failure to connect (refused, no such
    host, connect timeout, TLS handshake: urllib3 gives those up as MaxRetryError) or to build the
    request says surely not; a read timeout or a connection dropped later may follow delivery."""
    if isinstance(exc, requests.ConnectionError):
        return not (exc.args and isinstance(exc.args[0], MaxRetryError))
    return isinstance(
        exc,
        requests.ReadTimeout
        | requests.exceptions.ChunkedEncodingError
        | requests.exceptions.ContentDecodingError,
    )


@dataclass(frozen=True)
class Transport:
    """How an adapter talks HTTP, the same for every CRM: session, waits, retries, timeouts, and
    the deployment's shared limits (None: each container paces on its own).

    Tests and the local stack pass virtual `sleep` / `monotonic` so pacing and backoff
    move a clock instead of waiting.
    """

    session: requests.Session | None = None
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    policy: RetryPolicy | None = None
    timeout: tuple[float, float] = (5.0, 20.0)
    limits: SharedLimits | None = None

    def limiter(self, rate: float, burst: int) -> RateLimiter:
        return RateLimiter(rate, burst, clock=self.monotonic, sleep=self.sleep)

    def window(self, limit: int, period: float) -> WindowLimiter:
        return WindowLimiter(limit, period, clock=self.monotonic, sleep=self.sleep)

    def shared(self, local: Limiter, scope: str, name: str, window: Window) -> Limiter:
        """`local` in front of the deployment-wide `window` for (scope, name), or `local` alone
        when there are no shared limits."""
        if self.limits is None:
            return local
        return Chain(local, self.limits.limiter(scope, name, window))

    def client(self, classify: Classify, limiter: Limiter, secrets: tuple[str, ...]) -> HttpClient:
        return HttpClient(
            classify,
            limiter=limiter,
            policy=self.policy,
            session=self.session,
            sleep=self.sleep,
            timeout=self.timeout,
            secrets=secrets,
        )
