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
`Window.seconds`, each with `Window.limit` permits, and a request may go only inside the slot of
a permit it holds. Permits are handed out by conditional atomic writes to counters
(`SlotCounter`: one DynamoDB item per (scope, limit, run of slots), TTL'd; leadwatch.store.limits;
the scope is the tenant for its CRM, the bot for a Telegram chat) that never hand one out
twice; a claim may take several (`Window.batch`), kept by the container for its next requests.
Every container of the deployment takes its permits from the same counters, so the limit holds
however many Lambdas run. A span of `T` seconds touches at most ceil(T / seconds) + 1 slots,
which bounds what it can hold; `Window.spread` chooses slots from that. The in-process limiter
stays in front (`Chain`), so a container never asks the counters for more than it may send
itself.

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
    """Slots of `seconds`, each admitting `limit` requests across the whole deployment.

    `batch`: the most of them one container may take in one write of the shared counter (see
    `SharedWindowLimiter`); 1 takes them one at a time, a write per request.
    """

    seconds: float
    limit: int
    batch: int = 1

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.limit < 1 or self.batch < 1:
            raise ValueError("a window needs seconds > 0, limit >= 1 and batch >= 1")

    @classmethod
    def spread(cls, limit: int, period: float, batch: int = 1) -> Window:
        """One request a slot, slots of period / (limit - 1): any span of `period` touches at most
        `limit` slots, so holds at most `limit` requests wherever it falls; the long-run rate is
        (limit - 1) / period. Finer slots would let the rate reach the limit but break the bound."""
        if limit < 2:
            return cls(period, 1, batch)
        return cls(period / (limit - 1), 1, batch)

    def most_in(self, span: float) -> int:
        """The most requests the slots let into any `span` seconds (however slots and span align)."""
        return (math.ceil(span / self.seconds) + 1) * self.limit

    @property
    def slots_per_counter(self) -> int:
        """Slots one counter covers: one while a batch fits a slot's share many times over; else
        enough for four batches, so a claim is seldom cut short at the counter's last slot."""
        if self.batch == 1:
            return 1
        return max(1, math.ceil(4 * self.batch / self.limit))


class SlotCounter(Protocol):
    """One counter per (scope, key), shared by every container of the deployment. A counter
    hands out numbered permits in order: the n-th (from 0) is the one that took it to n + 1."""

    def claim(
        self, scope: str, key: str, limit: int, expires_at: int, count: int = 1, start: int = 0
    ) -> int | None:
        """Add `count` to the counter, counting from `start` if it is missing, atomically, in one
        write; the new count, or None when that would pass `limit` or the counter is below
        `start`. `expires_at` (unix seconds): when it may be deleted."""
        ...

    def claim_from(self, scope: str, key: str, start: int, count: int, expires_at: int) -> bool:
        """Set the counter to `start + count` if it is missing or at most `start` (permits
        below `start` are skipped, never handed out), atomically, in one write; False when it
        was already past `start`. The caller keeps `start + count` within the limit."""
        ...


@dataclass
class _Permits:
    """The permits a container holds: `slot_of(p)` for p in [next, end), in the slots' order."""

    group: int
    next: int
    end: int


class SharedWindowLimiter:
    """`window` for one (scope, name) across every container, through `counter`.

    Each counter covers `window.slots_per_counter` consecutive slots (`limit#<name>#<first
    slot>` when that is 1, `limit#<name>#<first slot>+<slots>` else) and hands out their
    `limit` permits a slot in order: permit p is in the counter's slot p // limit. A request
    goes only inside the slot of a permit it holds, and no permit is handed out twice, so no
    slot ever holds more than its limit: the bound of `Window.most_in` stands, whoever holds
    which permits. A claim takes up to `window.batch` permits in one write; the container
    keeps them and uses them for its next requests, each waiting for its permit's slot to
    begin. A permit whose slot ended unused is lost (its slot holds a request fewer: safe).

    How many a claim takes follows the container's demand. Requests come in bursts (an
    invocation reads a card, its activities, its calls; then nothing for a while): the first
    claim of a burst asks for as many as the longest of the container's last few bursts took,
    a later one for twice the last claim when every permit of it was used, or for as many as
    were used when some were lost; never more than `batch`. A busy container thus claims
    `batch` at a time (a write per `batch` requests), one whose bursts are of three claims three
    at a time (a write a burst), and one that sends a request now and then claims one at a time:
    it holds nothing in reserve, so takes no capacity from the other containers. What a
    container can take from the others is what it holds unused: at most `batch` permits, and
    only while their slots last.

    When the counter has fallen behind the current slot (nobody claimed for a while), permits
    of the slots passed are skipped (`claim_from`), else the next ones are taken (`claim`); the
    container guesses which from the count it last saw (if it was alone on the counter then),
    and a wrong guess costs a refused write. A counter seen full is not asked again until its
    last slot ends.

    A claim is made with the clock's reading before the write; permits whose slot had ended when
    it came back (a slow call) are not used, and the current slot is tried instead.
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
        self._span = window.slots_per_counter
        self._full_until = -math.inf  # the end of the latest counter known to be full
        self._held: _Permits | None = None
        self._seen: tuple[int, int] = (-1, 0)  # (group, the count last seen in its counter)
        # Whether the last claim found the counter where this container had left it (nobody
        # else claiming): then a counter seen behind the current slot is likely still behind.
        self._alone = True
        self._want = 1  # permits the next claim asks for
        self._used = 0  # permits of the current claim used so far
        self._last = -math.inf  # when this container last took a permit
        self._burst = 0  # permits taken in the current burst
        self._bursts: deque[int] = deque(maxlen=4)  # the lengths of the last bursts
        # No request for this long ends a burst.
        self._quiet = max(window.seconds, 1.0)
        self._lock = threading.Lock()
        # One claim at a time in a container: its other threads wait for it and share what it got.
        self._claiming = False
        self._claimed = threading.Condition(self._lock)
        self.claims = 0  # writes to the counter (granted or refused)
        self.refused = 0
        self.late = 0  # claims that came back after all their permits' slots had ended
        self.lost = 0  # permits whose slot ended unused

    # ------------------------------------------------------------------ permits held
    def _slot_of(self, group: int, permit: int) -> int:
        return group * self._span + permit // self.window.limit

    def _drop_passed(self, now: float) -> None:
        """Forget held permits whose slot has ended (under the lock)."""
        held = self._held
        if held is None:
            return
        seconds = self.window.seconds
        while held.next < held.end and (self._slot_of(held.group, held.next) + 1) * seconds <= now:
            held.next += 1
            self.lost += 1
        if held.next >= held.end:
            self._held = None
            # Some lost: the container needs fewer than it took. None lost: all were used.
            self._want = (
                max(1, self._used) if self._used < self._want else min(self.window.batch, 2 * self._want)
            )

    def _burst_begins(self, now: float) -> None:
        """After a quiet spell, end the last burst and size the next claim by the recent ones
        (under the lock)."""
        if now - self._last > self._quiet and self._burst:
            self._bursts.append(self._burst)
            self._burst = 0
            self._want = min(self.window.batch, max(self._bursts))

    def _keep(self, group: int, first: int, count: int) -> None:
        """Hold permits [first, first + count) of `group`'s counter (under the lock)."""
        if self._held is not None:  # another thread of this container claimed too: keep the later
            self.lost += self._held.end - self._held.next
        self._held = _Permits(group, first, first + count)
        self._want = count
        self._used = 0

    # ------------------------------------------------------------------ acquire
    def acquire(self, max_wait: float | None = None) -> float:
        waited = 0.0
        seconds = self.window.seconds
        late_in_a_row = 0
        while True:
            now = self._clock()
            with self._lock:
                self._drop_passed(now)
                begins = self._next_begins()
                full_until = self._full_until
                if begins is not None:
                    pause = max(0.0, begins - now)
                    if _too_long(waited + pause, max_wait):
                        raise PacingWait(f"{self.name}: shared limit", waited + pause)
                    self._take(now)  # this thread's now; the others take the next ones
                elif now >= full_until and self._claiming:
                    self._claimed.wait(timeout=1.0)
                    continue
            if begins is not None:
                if pause > 0:
                    self._sleep(pause)
                    waited += pause
                    if self._clock() >= begins + seconds:  # slept past the whole slot: not used
                        with self._lock:
                            self.lost += 1
                        continue
                return waited
            if now < full_until:
                pause = full_until - now
                if _too_long(waited + pause, max_wait):
                    raise PacingWait(f"{self.name}: shared limit", waited + pause)
                self._sleep(pause)
                waited += pause
                continue
            with self._lock:
                if self._claiming:
                    continue
                self._claiming = True
            try:
                outcome = self._claim(now)
            finally:
                with self._lock:
                    self._claiming = False
                    self._claimed.notify_all()
            if outcome == "go":
                return waited
            if outcome != "late":
                late_in_a_row = 0
                continue
            late_in_a_row += 1
            if late_in_a_row >= MAX_LATE:
                raise CrmUnavailable(
                    f"{self.name}: the shared rate limit's counter answers slower than its "
                    f"{seconds:g} s slots ({late_in_a_row} claims in a row came back too late)"
                )

    def _next_begins(self) -> float | None:
        """When the first permit held begins, None when none is held (under the lock)."""
        held = self._held
        if held is None:
            return None
        return self._slot_of(held.group, held.next) * self.window.seconds

    def _take(self, now: float) -> None:
        """Use the first permit held (under the lock)."""
        assert self._held is not None
        self._held.next += 1
        self._used += 1
        self._burst_begins(now)
        self._burst += 1
        self._last = now
        self._drop_passed(now)

    def _claim(self, now: float) -> str:
        """Claim permits from the current slot on: "go" when the first is in the current slot and
        this request took it, "held" when they are kept for later slots, "full" when the counter
        had none left (it is not asked again before its last slot ends), "late" when the claim
        came back after all its permits' slots had ended."""
        window = self.window
        slot = math.floor(now / window.seconds)
        group = slot // self._span
        first_slot = group * self._span
        capacity = self._span * window.limit
        position = (slot - first_slot) * window.limit  # the current slot's first permit
        with self._lock:
            seen = self._seen[1] if self._seen[0] == group else None
            alone = self._alone
            self._burst_begins(now)
            want = self._want
        count = max(1, min(want, capacity - max(position, seen or 0)))
        key = f"limit#{self.name}#{first_slot}"
        if self._span > 1:
            key += f"+{self._span}"
        # Real time: the TTL is on AWS's clock.
        expires_at = int(time.time() + (first_slot + self._span - slot) * window.seconds + self._ttl)
        tally = [0, 0]  # writes, refused
        try:
            got, count = self._write(
                key, capacity, position, count, seen if alone else None, expires_at, tally
            )
        except Exception as exc:
            # The counters' store failing is an outage like the CRM's: retry later, never
            # send unlimited (repeated 429s end in a block).
            raise CrmUnavailable(f"{self.name}: the shared rate limit's counter failed: {exc}") from exc
        writes, refused = tally
        with self._lock:
            self.claims += writes
            self.refused += refused
            self._alone = refused == 0 and (got is None or got - count <= max(position, seen or 0))
            if got is None or got >= capacity:
                end_of_group = (first_slot + self._span) * window.seconds
                self._full_until = max(self._full_until, end_of_group)
            if got is None:
                self._seen = (group, capacity)
                return "full"
            self._seen = (group, max(got, seen or 0))
            self._keep(group, got - count, count)
            after = self._clock()
            self._drop_passed(after)
            begins = self._next_begins()
            if begins is None:
                self.late += 1
                return "late"
            if begins <= after:
                self._take(after)
                return "go"
            return "held"

    def _write(
        self,
        key: str,
        capacity: int,
        position: int,
        count: int,
        seen: int | None,
        expires_at: int,
        tally: list[int],
    ) -> tuple[int | None, int]:
        """The counter's writes of one claim: the count after it (None: the counter is full) and
        how many permits it took, the last `count` below that count. `seen`: the count this
        container saw last, None when unknown or others have claimed since. `tally`: writes,
        refused."""

        def claim(n: int) -> int | None:
            tally[0] += 1
            if n == 1 and position == 0:  # the counter's original call, a claim of one
                got = self.counter.claim(self.scope, key, capacity, expires_at)
            else:
                got = self.counter.claim(self.scope, key, capacity, expires_at, n, position)
            tally[1] += got is None
            return got

        def claim_from(n: int) -> int | None:
            tally[0] += 1
            if self.counter.claim_from(self.scope, key, position, n, expires_at):
                return position + n
            tally[1] += 1
            return None

        # A counter this container left behind this slot is moved on past the slots that ended.
        behind = position > 0 and seen is not None and seen < position
        if behind and (got := claim_from(count)) is not None:
            return got, count
        while True:
            if (got := claim(count)) is not None:
                return got, count
            # Refused: the counter is behind this slot, or has fewer permits left than asked for.
            if position > 0 and not behind:
                behind = True
                if (got := claim_from(count)) is not None:
                    return got, count
            if count == 1:
                return None, 1
            count = 1  # take one, and learn from the count how many are left

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
