"""Rate limiters: what keeps leadwatch under each outbound API's limit, in one container and
across every Lambda of a deployment.

In-process (one container, every thread of it):
- `WindowLimiter`: at most `limit` requests in any `period` seconds (a sliding log of the
  granted times). For a service that counts requests per time window (amoCRM: 7 a second;
  Telegram: 1 a second in a chat, 20 a minute in a group): a guarantee over *any* span holds
  for whichever way the service's windows fall. A token bucket does not: after a pause it
  grants its burst and then its rate, so a rate-7 burst-6 bucket admits 12 in one second.
- `RateLimiter`: a token bucket, the mirror of a leaky bucket (Bitrix24's portal limit).

Across containers (`SharedLimits` -> `SharedWindowLimiter`): time is cut into slots of
`Window.seconds`, and a request may go only after a conditional atomic increment of its slot's
counter stayed within `Window.limit` (`SlotCounter`: one DynamoDB item per (scope, limit, slot),
TTL'd; leadwatch.store.limits; the scope is the tenant for its CRM, the bot for a Telegram chat). Every container of the deployment takes its slots from the same
counters, so the limit holds however many Lambdas run. A span of `T` seconds touches at most
ceil(T / seconds) + 1 slots, which bounds what it can hold; `Window.spread` chooses slots from
that. The in-process limiter stays in front (`Chain`), so a container never asks the counters
for more than it may send itself.

Every `acquire` sleeps until the request may go and returns the seconds waited. With `max_wait`
it raises `PacingWait` (a retryable `CrmRateLimited`, `retry_after` set) instead of sleeping
longer than that, without taking anything, so a caller near its deadline can leave the work
for the next run.

No AWS code here: the DynamoDB counter is handed in (leadwatch.context builds it).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from crm_adapters.base import CrmRateLimited, CrmUnavailable

Clock = Callable[[], float]
Sleep = Callable[[float], None]
# A claim that comes back after its slot ended is not used; this many in a row in one acquire
# means the counters answer slower than a slot lasts, and the request is left for later.
MAX_LATE = 5


class PacingWait(CrmRateLimited):
    """The limiter would make this request wait longer than the caller allows (`retry_after`)."""

    def __init__(self, what: str, wait: float):
        super().__init__(f"{what}: the next request may go in {wait:.1f} s", retry_after=wait)


class Limiter(Protocol):
    def acquire(self, max_wait: float | None = None) -> float:
        """Wait until one more request may go; the seconds waited. PacingWait past `max_wait`."""
        ...


def _too_long(wait: float, max_wait: float | None) -> bool:
    return max_wait is not None and wait > max_wait


class RateLimiter:
    """Token bucket: `rate` requests per second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic, sleep: Sleep = time.sleep):
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self, max_wait: float | None = None) -> float:
        with self._lock:
            now = self._clock()
            tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            if _too_long(wait, max_wait):
                raise PacingWait(f"{self.rate:g} requests/s", wait)
            self._tokens = tokens - 1
            self._stamp = now
        if wait:
            self._sleep(wait)
        return wait


class WindowLimiter:
    """At most `limit` requests in any `period` seconds (any half-open span of that length), and
    as much for each further (limit, period) in `also`.

    The log holds the times granted, future ones included (a thread told to wait holds its
    time), so concurrent callers queue in order: the next time is the latest of now and, for each
    window, the `limit`-th latest grant plus its `period`. Grants never go backwards. Several
    windows share one log, so each records the time the request really goes (a second limiter
    behind this one would delay it past the time this one recorded).
    """

    def __init__(
        self,
        limit: int,
        period: float,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        *,
        also: tuple[tuple[int, float], ...] = (),
    ):
        self.windows = ((limit, period), *also)
        if any(n < 1 or p <= 0 for n, p in self.windows):
            raise ValueError("a window limiter needs limit >= 1 and period > 0")
        self.limit = limit
        self.period = period
        self._longest = max(p for _, p in self.windows)
        self._deepest = max(n for n, _ in self.windows)
        self._clock = clock
        self._sleep = sleep
        self._granted: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, max_wait: float | None = None) -> float:
        with self._lock:
            now = self._clock()
            granted = self._granted
            while len(granted) > self._deepest or (granted and granted[0] <= now - self._longest):
                granted.popleft()
            at = now
            for limit, period in self.windows:
                if len(granted) >= limit:
                    at = max(at, granted[-limit] + period)
            wait = at - now
            if _too_long(wait, max_wait):
                raise PacingWait(f"{self.limit} requests per {self.period:g} s", wait)
            granted.append(at)
        if wait > 0:
            self._sleep(wait)
        return wait


class Chain:
    """Several limits on one request (a chat's spacing, its group's minute, the shared slots):
    each in turn, in the order given."""

    def __init__(self, *limiters: Limiter):
        self.limiters = limiters

    def acquire(self, max_wait: float | None = None) -> float:
        waited = 0.0
        for limiter in self.limiters:
            waited += limiter.acquire(None if max_wait is None else max(0.0, max_wait - waited))
        return waited


# ----------------------------------------------------------------------------- across containers
@dataclass(frozen=True)
class Window:
    """Slots of `seconds`, each admitting `limit` requests across the whole deployment."""

    seconds: float
    limit: int

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.limit < 1:
            raise ValueError("a window needs seconds > 0 and limit >= 1")

    @classmethod
    def spread(cls, limit: int, period: float) -> Window:
        """One request a slot, slots of period / (limit - 1): any span of `period` touches at most
        `limit` slots, so holds at most `limit` requests wherever it falls; the long-run rate is
        (limit - 1) / period. Finer slots would let the rate reach the limit but break the bound."""
        if limit < 2:
            return cls(period, 1)
        return cls(period / (limit - 1), 1)

    def most_in(self, span: float) -> int:
        """The most requests the slots let into any `span` seconds (however slots and span align)."""
        return (math.ceil(span / self.seconds) + 1) * self.limit


class SlotCounter(Protocol):
    """One counter per (scope, key), shared by every container of the deployment."""

    def claim(self, scope: str, key: str, limit: int, expires_at: int) -> int | None:
        """Add 1 to the counter if it is below `limit` (a missing counter is 0), atomically; the
        new count, or None when it was full. `expires_at` (unix seconds): when it may be deleted."""
        ...


class SharedWindowLimiter:
    """`window` for one (scope, name) across every container, through `counter`.

    A slot is claimed with the clock's reading before the write; if the write came back after
    the slot had ended (a slow call), the claim is not used (the request would fall in the next
    slot, uncounted) and the current slot is tried instead. A slot seen full is not asked again:
    the limiter sleeps to the next one. A count that reached the limit marks the slot full here
    too, saving the write that would be refused.
    """

    def __init__(
        self,
        counter: SlotCounter,
        scope: str,
        name: str,
        window: Window,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        ttl: float = 600.0,
    ):
        self.counter = counter
        self.scope = scope
        self.name = name
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._ttl = ttl
        self._full_until = -math.inf  # the end of the latest slot known to be full
        self._lock = threading.Lock()
        self.claims = 0  # writes to the counter (granted or refused)
        self.refused = 0
        self.late = 0  # slots won after they had ended, left unused

    def acquire(self, max_wait: float | None = None) -> float:
        waited = 0.0
        seconds = self.window.seconds
        late_in_a_row = 0
        while True:
            now = self._clock()
            with self._lock:
                full_until = self._full_until
            if now < full_until:
                pause = full_until - now
                if _too_long(waited + pause, max_wait):
                    raise PacingWait(f"{self.name}: shared limit", waited + pause)
                self._sleep(pause)
                waited += pause
                continue
            slot = math.floor(now / seconds)
            end = (slot + 1) * seconds
            try:
                count = self.counter.claim(
                    self.scope,
                    f"limit#{self.name}#{slot}",
                    self.window.limit,
                    int(time.time() + seconds + self._ttl),  # real time: TTL is AWS's clock
                )
            except Exception as exc:
                # The counters' store failing is an outage like the CRM's: retry later, never
                # send unlimited (repeated 429s end in a block).
                raise CrmUnavailable(f"{self.name}: the shared rate limit's counter failed: {exc}") from exc
            with self._lock:
                self.claims += 1
                if count is None:
                    self.refused += 1
                if count is None or count >= self.window.limit:
                    self._full_until = max(self._full_until, end)
            if count is not None:
                if self._clock() < end:
                    return waited
                with self._lock:
                    self.late += 1
                late_in_a_row += 1
                if late_in_a_row >= MAX_LATE:
                    raise CrmUnavailable(
                        f"{self.name}: the shared rate limit's counter answers slower than its "
                        f"{seconds:g} s slots ({late_in_a_row} claims in a row came back too late)"
                    )

    def __repr__(self) -> str:
        return f"SharedWindowLimiter({self.scope!r}, {self.name!r}, {self.window})"


class SharedLimits:
    """Makes the shared limiters of one container: one counter store, one clock.

    `clock` must be the same for every container (the wall clock; a test's shared virtual one).
    """

    def __init__(
        self, counter: SlotCounter, clock: Clock = time.time, sleep: Sleep = time.sleep, ttl: float = 600.0
    ):
        self.counter = counter
        self.clock = clock
        self.sleep = sleep
        self.ttl = ttl

    def limiter(self, scope: str, name: str, window: Window) -> SharedWindowLimiter:
        return SharedWindowLimiter(self.counter, scope, name, window, self.clock, self.sleep, self.ttl)
