"""The rate limiters on a virtual clock: what each guarantees over any span, and what the old
token bucket did not."""

from __future__ import annotations

import itertools
import math
import threading
from collections import Counter

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


# ----------------------------------------------------------------------------- claims of several
AMO = Window.spread(6, 1.0, batch=5)  # one a 0.2 s slot, up to 5 a claim


def test_a_busy_container_claims_several_slots_in_one_write() -> None:
    clock = VirtualTime()  # 1000.0: the first slot of a counter
    counter = MemorySlotCounter()
    limiter = SharedLimits(counter, clock, clock.sleep).limiter("t1", "amocrm", AMO)
    times = grant_times(limiter, clock, 100)
    assert most_in_any(times, 1.0) <= 6
    assert [round(b - a, 6) for a, b in itertools.pairwise(times)] == [0.2] * 99  # every slot used
    # 1, 2, 4, 5, 5, 3 (the counter's last slots), then 5 a claim: 22 writes for 100 requests.
    assert counter.writes == limiter.claims == 22 and limiter.lost == 0
    assert all(n <= 20 for n in counter.counts.values())  # 20 slots a counter, one request each


def test_a_container_that_calls_now_and_then_holds_nothing_back() -> None:
    clock = VirtualTime()
    counter = MemorySlotCounter()
    limits = SharedLimits(counter, clock, clock.sleep)
    a, b = limits.limiter("t1", "amocrm", AMO), limits.limiter("t1", "amocrm", AMO)
    for _ in range(3):  # a request now and then: a claim of one each
        assert a.acquire() == 0
        clock.sleep(3.0)
    assert (a.claims, a.lost) == (3, 0)
    # a holds no slot in reserve: b, another container, goes in the next one.
    assert a.acquire() == 0
    assert b.acquire() == pytest.approx(0.2)


def test_a_claim_at_the_start_of_a_burst_takes_what_recent_bursts_took() -> None:
    sizes: list[int] = []

    class Sizes(MemorySlotCounter):
        def claim(self, scope, key, limit, expires_at, count=1, start=0):  # type: ignore[no-untyped-def]
            sizes.append(count)
            return super().claim(scope, key, limit, expires_at, count, start)

    clock = VirtualTime()
    limiter = SharedLimits(Sizes(), clock, clock.sleep).limiter("t1", "amocrm", AMO)
    claims = []
    for i, n in enumerate([3, 3, 1, 1, 1, 1, 1]):  # bursts of requests, each from a counter's first slot
        clock.now = 1_004.0 + 4.0 * i
        before = len(sizes)
        grant_times(limiter, clock, n)
        claims.append(sizes[before:])
    # The first burst learns (1 then 2), the next ones take the longest of the last four bursts
    # at once: a write a burst; once four bursts in a row were of one request, one a claim.
    assert claims == [[1, 2], [3], [3], [3], [3], [3], [1]]
    assert limiter.lost == 2 * 4  # the two spare of each burst of one that claimed three


def test_two_containers_taking_turns_share_the_counters_and_keep_the_bound() -> None:
    clock = VirtualTime()
    counter = MemorySlotCounter()
    a, b = (SharedLimits(counter, clock, clock.sleep).limiter("t1", "amocrm", AMO) for _ in range(2))
    times = []
    for turn in range(8):  # a burst of 15 requests each in turn
        times += grant_times(a if turn % 2 == 0 else b, clock, 15)
    assert most_in_any(times, 1.0) <= 6
    assert max(Counter(math.floor(t / AMO.seconds + 1e-9) for t in times).values()) == 1
    assert counter.writes <= 0.4 * len(times)


def test_two_containers_alternating_request_by_request_keep_the_bound() -> None:
    """The worst case for claims of several: here each one's waits pass the slots the other
    holds, so permits are lost and claims stay small, about a write a request as one at a
    time takes; the bound holds all the same."""
    clock = VirtualTime()
    counter = MemorySlotCounter()
    limiters = [SharedLimits(counter, clock, clock.sleep).limiter("t1", "amocrm", AMO) for _ in range(2)]
    times = []
    for n in range(120):
        limiters[n % 3 % 2].acquire()  # a, b, a, a, b, a, ...
        times.append(clock())
    assert times == sorted(times)
    assert most_in_any(times, 1.0) <= 6
    assert max(Counter(math.floor(t / AMO.seconds + 1e-9) for t in times).values()) == 1
    assert counter.writes <= 1.1 * len(times)


def test_a_counter_left_behind_is_moved_on_past_the_slots_that_ended() -> None:
    clock = VirtualTime()  # the first of a counter's 20 slots
    counter = MemorySlotCounter()
    limits = SharedLimits(counter, clock, clock.sleep)
    a = limits.limiter("t1", "amocrm", AMO)
    a.acquire()
    clock.sleep(2.0)  # slot 10 of the same counter: permits 1..9 are of slots that ended
    assert a.acquire() == 0
    assert (a.claims, a.refused) == (2, 0)  # a saw the counter behind: one claim_from
    assert counter.counts[("t1", "limit#amocrm#5000+20")] == 11
    b = limits.limiter("t1", "amocrm", AMO)  # new: it has not seen the counter
    assert b.acquire() == pytest.approx(0.2)  # the next slot, in one write
    assert (b.claims, b.refused) == (1, 0)
    clock.sleep(1.0)  # slot 16: b left the counter at 12, but had found a there before it
    assert b.acquire() == 0
    assert (b.claims, b.refused) == (3, 1)  # so it guessed others were claiming: one write more


def test_a_slot_of_many_is_claimed_a_batch_at_a_time() -> None:
    clock = VirtualTime(1_001.0)  # Bitrix24's slots: 22 requests in 11 s
    counter = MemorySlotCounter()
    limiter = SharedWindowLimiter(counter, "t1", "bitrix24", Window(11.0, 22, batch=5), clock, clock.sleep)
    times = grant_times(limiter, clock, 23)
    assert times[:22] == [1_001.0] * 22 and times[22] == 1_012.0
    assert counter.counts[("t1", "limit#bitrix24#91")] == 22
    # 1, 2, 4, 5, 5, 5 (the slot full: not asked again), then one in the next slot.
    assert (limiter.claims, limiter.refused) == (7, 0)


def test_permits_held_for_later_slots_are_kept_past_a_max_wait() -> None:
    clock = VirtualTime()
    counter = MemorySlotCounter()
    limiter = SharedLimits(counter, clock, clock.sleep).limiter("t1", "amocrm", AMO)
    grant_times(limiter, clock, 3)  # claims of 1 and 2; the 4th holds a claim of 4
    assert limiter.acquire() == pytest.approx(0.2) and limiter.claims == 3
    with pytest.raises(PacingWait) as caught:
        limiter.acquire(max_wait=0.1)
    assert caught.value.retry_after == pytest.approx(0.2)
    assert limiter.acquire() == pytest.approx(0.2) and limiter.claims == 3  # no write: it held one
