"""The rate limiters on a virtual clock: what each guarantees over any span, and what the old
token bucket did not."""

from __future__ import annotations

import itertools
import threading

import pytest

from crm_adapters.base import CrmRateLimited
from crm_adapters.limits import (
    Chain,
    PacingWait,
    RateLimiter,
    SharedLimits,
    SharedWindowLimiter,
    Window,
    WindowLimiter,
)
from leadwatch.store.limits import MemorySlotCounter


class VirtualTime:
    """A clock that moves only when someone sleeps."""

    def __init__(self, start: float = 1_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def most_in_any(times: list[float], span: float) -> int:
    """The most of `times` in any half-open span [a, a + span)."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        best = max(best, sum(1 for t in ordered[i:] if t < start + span))
    return best


def grant_times(limiter, clock: VirtualTime, n: int) -> list[float]:
    times = []
    for _ in range(n):
        limiter.acquire()
        times.append(clock())
    return times


# ----------------------------------------------------------------------------- in one container
def test_the_old_token_bucket_admits_12_in_one_second_after_a_pause() -> None:
    # The finding, kept as the reason for the window limiter: rate 7, burst 6.
    clock = VirtualTime()
    times = grant_times(RateLimiter(7, 6, clock, clock.sleep), clock, 40)
    assert most_in_any(times, 1.0) == 12


def test_the_window_limiter_never_lets_more_than_its_limit_into_any_second() -> None:
    clock = VirtualTime()
    limiter = WindowLimiter(6, 1.0, clock, clock.sleep)
    times = grant_times(limiter, clock, 40)
    clock.sleep(5)  # a pause, then another burst
    times += grant_times(limiter, clock, 40)
    assert most_in_any(times, 1.0) == 6
    # And it is not slower than it must be: 6 at once, then 6 a second.
    assert times[:7] == [1_000.0] * 6 + [1_001.0]


def test_grants_queue_in_order_when_threads_ask_at_once() -> None:
    clock = VirtualTime()  # stands still: nobody really waits
    limiter = WindowLimiter(3, 1.0, clock, lambda _s: None)
    waits: list[float] = []
    lock = threading.Lock()

    def ask() -> None:
        wait = limiter.acquire()
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=ask) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(waits) == [0.0] * 3 + [1.0] * 3 + [2.0] * 3 + [3.0] * 3


def test_a_chat_in_a_group_keeps_both_its_spacing_and_the_groups_minute() -> None:
    clock = VirtualTime()
    limiter = WindowLimiter(1, 1.2, clock, clock.sleep, also=((18, 60.0),))
    times = grant_times(limiter, clock, 30)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(1.2)
    assert most_in_any(times, 60.0) == 18
    assert times[18] - times[0] == pytest.approx(60.0)  # the 19th waits for the first's minute


def test_a_wait_past_max_wait_raises_and_takes_nothing() -> None:
    clock = VirtualTime()
    limiter = WindowLimiter(1, 10.0, clock, clock.sleep)
    assert limiter.acquire(max_wait=0) == 0
    with pytest.raises(PacingWait) as caught:
        limiter.acquire(max_wait=5)
    assert isinstance(caught.value, CrmRateLimited) and caught.value.retryable
    assert caught.value.retry_after == pytest.approx(10.0)
    assert clock() == 1_000.0
    assert limiter.acquire() == pytest.approx(10.0)  # the refused ask held no place
    bucket = RateLimiter(1, 1, clock, clock.sleep)
    bucket.acquire()
    with pytest.raises(PacingWait):
        bucket.acquire(max_wait=0.5)
    assert bucket.acquire() == pytest.approx(1.0)


def test_a_chain_waits_for_each_and_shares_one_max_wait() -> None:
    clock = VirtualTime()
    chain = Chain(WindowLimiter(1, 2.0, clock, clock.sleep), WindowLimiter(1, 3.0, clock, clock.sleep))
    assert chain.acquire() == 0
    with pytest.raises(PacingWait):
        chain.acquire(max_wait=2.5)  # 2 s for the first leaves 0.5 s, the second needs 1 s
    assert clock() == 1_002.0


# ----------------------------------------------------------------------------- slot arithmetic
@pytest.mark.parametrize(("limit", "period"), [(6, 1.0), (7, 1.0), (18, 60.0), (2, 1.2)])
def test_spread_slots_hold_at_most_the_limit_in_any_period(limit: int, period: float) -> None:
    window = Window.spread(limit, period)
    assert window.limit == 1 and window.most_in(period) == limit
    # Checked by brute force: one request at the very start and end of each slot, any alignment.
    times = [t for slot in range(200) for t in (slot * window.seconds, (slot + 1) * window.seconds - 1e-9)]
    assert most_in_any(times[::2], period) <= limit  # one a slot, at its start
    assert most_in_any(times[1::2], period) <= limit  # one a slot, at its end


def leaky_bucket_peak(arrivals: list[float], rate: float) -> float:
    """The highest level a leaky bucket draining `rate`/s reaches under these arrivals."""
    level = peak = 0.0
    last = min(arrivals)
    for at in sorted(arrivals):
        level = max(0.0, level - (at - last) * rate) + 1
        last = at
        peak = max(peak, level)
    return peak


def test_bitrix24_slots_never_overflow_the_portals_leaky_bucket() -> None:
    from crm_adapters.bitrix24 import _shared_window

    window = _shared_window(2.0, 45)  # the portal's 50 less the adapter's headroom of 5
    assert (window.limit, window.seconds) == (22, 11.0)
    # Each slot full, its requests bunched at its start, at its end, or alternately (the worst:
    # one slot's at its end and the next one's at its start).
    for where in ("start", "end", "alternate"):
        arrivals = []
        for slot in range(30):
            at_end = where == "end" or (where == "alternate" and slot % 2 == 0)
            at = (slot + 1) * window.seconds - 1e-6 if at_end else slot * window.seconds
            arrivals += [at] * window.limit
        assert leaky_bucket_peak(arrivals, 2.0) <= 45, where


# ----------------------------------------------------------------------------- shared slots
def test_two_containers_share_one_slot_counter() -> None:
    clock = VirtualTime()
    counter = MemorySlotCounter()
    window = Window.spread(6, 1.0)  # one a 0.2 s slot
    a = SharedLimits(counter, clock, clock.sleep).limiter("t1", "amocrm", window)
    b = SharedLimits(counter, clock, clock.sleep).limiter("t1", "amocrm", window)
    times = []
    for _ in range(30):
        for limiter in (a, b):
            limiter.acquire()
            times.append(clock())
    assert most_in_any(times, 1.0) <= 6
    assert all(count == 1 for count in counter.counts.values())
    # A slot a container itself filled is not asked for again; the other one finds it full once.
    assert a.claims + b.claims == counter.writes
    assert counter.writes <= 2 * len(times)


def test_another_tenant_has_its_own_slots() -> None:
    clock = VirtualTime()
    counter = MemorySlotCounter()
    limits = SharedLimits(counter, clock, clock.sleep)
    window = Window(1.0, 1)
    limits.limiter("t1", "amocrm", window).acquire()
    assert limits.limiter("t2", "amocrm", window).acquire() == 0
    assert limits.limiter("t1", "bitrix24", window).acquire() == 0
    assert limits.limiter("t1", "amocrm", window).acquire() == pytest.approx(1.0)


class SlowCounter(MemorySlotCounter):
    """A counter whose write takes `delay` seconds of the clock."""

    def __init__(self, clock: VirtualTime, delay: float):
        super().__init__()
        self.clock, self.delay = clock, delay

    def claim(self, scope: str, key: str, limit: int, expires_at: int) -> int | None:
        self.clock.sleep(self.delay)
        return super().claim(scope, key, limit, expires_at)


def test_a_slot_won_after_it_ended_is_not_used() -> None:
    clock = VirtualTime(1_000.15)
    counter = SlowCounter(clock, 0.1)  # the write returns after the 0.2 s slot has ended
    limiter = SharedWindowLimiter(counter, "t1", "amocrm", Window(0.2, 1), clock, clock.sleep)
    limiter.acquire()
    assert clock() == pytest.approx(1_000.35)  # in slot 5001, which it claimed second
    assert sorted(counter.counts) == [("t1", "limit#amocrm#5000"), ("t1", "limit#amocrm#5001")]
    assert limiter.late == 1


def test_max_wait_on_shared_slots() -> None:
    clock = VirtualTime()
    limits = SharedLimits(MemorySlotCounter(), clock, clock.sleep)
    window = Window(10.0, 1)
    limits.limiter("t1", "x", window).acquire()
    other = limits.limiter("t1", "x", window)
    with pytest.raises(PacingWait) as caught:
        other.acquire(max_wait=3)
    assert caught.value.retry_after == pytest.approx(10.0)
    assert other.acquire() == pytest.approx(10.0)


def test_the_ttl_is_on_the_real_clock() -> None:
    import time

    seen: list[int] = []

    class Recording(MemorySlotCounter):
        def claim(self, scope: str, key: str, limit: int, expires_at: int) -> int | None:
            seen.append(expires_at)
            return super().claim(scope, key, limit, expires_at)

    clock = VirtualTime(5.0)  # a virtual clock far from the epoch
    SharedLimits(Recording(), clock, clock.sleep, ttl=600).limiter("t1", "x", Window(1.0, 1)).acquire()
    assert abs(seen[0] - (time.time() + 601)) < 5


def test_a_counter_slower_than_its_slots_or_failing_is_an_outage_not_a_free_pass() -> None:
    from crm_adapters.base import CrmUnavailable

    clock = VirtualTime()
    slow = SharedWindowLimiter(SlowCounter(clock, 0.3), "t1", "amocrm", Window(0.2, 1), clock, clock.sleep)
    with pytest.raises(CrmUnavailable, match=r"slower than its 0\.2 s slots"):
        slow.acquire()
    assert slow.late == 5

    class Broken(MemorySlotCounter):
        def claim(self, scope: str, key: str, limit: int, expires_at: int) -> int | None:
            raise OSError("connection refused")

    broken = SharedWindowLimiter(Broken(), "t1", "amocrm", Window(0.2, 1), clock, clock.sleep)
    with pytest.raises(CrmUnavailable, match="counter failed: connection refused") as caught:
        broken.acquire()
    assert caught.value.retryable
