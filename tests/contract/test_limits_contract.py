"""The shared rate limit's slot counters, one contract for both: in memory
(`MemorySlotCounter`) and DynamoDB (`DynamoSlotCounter` over moto's server, which serves one
request at a time and so keeps a conditional write atomic, as DynamoDB does; in-process moto
does not lock items). Racing threads, each its own "container", must never get more claims
into a slot than its limit."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import boto3
import pytest

from crm_adapters.limits import SharedLimits, SharedWindowLimiter, SlotCounter, Window
from leadwatch.store.limits import DynamoSlotCounter, MemorySlotCounter
from leadwatch.testing.stack import REGION, MotoProcess, free_port


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    from leadwatch.store.models import bind
    from leadwatch.store.schema import create_tables

    moto = MotoProcess(free_port())
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{moto.port}"
        create_tables(boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION))
        bind(host=endpoint, region=REGION)
        yield endpoint
    finally:
        moto.stop()


@pytest.fixture(params=["memory", "dynamodb"])
def new_counter(request) -> type:
    """A factory: each call a counter object of its own (another container), on the same store."""
    if request.param == "memory":
        shared = MemorySlotCounter()
        return lambda: shared
    request.getfixturevalue("moto_server")
    return DynamoSlotCounter


def test_a_claim_counts_up_to_the_limit_then_refuses(new_counter) -> None:
    counter: SlotCounter = new_counter()
    key = f"limit#x#{time.monotonic_ns()}"
    assert [counter.claim("t1", key, 3, 2_000_000_000) for _ in range(5)] == [1, 2, 3, None, None]
    assert counter.claim("t2", key, 3, 2_000_000_000) == 1  # another tenant's slot
    assert counter.claim("t1", key + "0", 3, 2_000_000_000) == 1  # another slot


def test_racing_claims_never_pass_the_limit(new_counter) -> None:
    run = time.monotonic_ns()
    granted: Counter[str] = Counter()
    lock = threading.Lock()

    def container(n: int) -> None:
        counter = new_counter()
        for i in range(30):
            key = f"limit#race{run}#{i % 5}"
            if counter.claim("t1", key, 4, 2_000_000_000) is not None:
                with lock:
                    granted[key] += 1

    threads = [threading.Thread(target=container, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # 4 containers x 6 claims of each of 5 slots: 24 asks a slot, exactly 4 granted.
    assert granted == {f"limit#race{run}#{i}": 4 for i in range(5)}


def test_racing_limiters_keep_every_slot_within_its_window(new_counter) -> None:
    window = Window(0.05, 2)
    scope = f"t{time.monotonic_ns()}"
    done: list[int] = []
    limiters = []
    lock = threading.Lock()

    def container() -> None:
        limiter = SharedLimits(new_counter()).limiter(scope, "amocrm", window)
        with lock:
            limiters.append(limiter)
        # A fixed number of requests, not a fixed time: under load a thread may get little CPU.
        sent = 0
        for _ in range(12):
            limiter.acquire()
            sent += 1
        with lock:
            done.append(sent)

    threads = [threading.Thread(target=container) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts = _slot_counts(new_counter(), scope)
    assert counts and max(counts.values()) <= window.limit
    # Every acquire stands on a claim of its own; late claims are the only others.
    assert sum(done) == sum(counts.values()) - sum(limiter.late for limiter in limiters)
    assert sum(done) == 4 * 12
    # 48 requests at 2 a slot need at least 24 slots, all of them used within their limit.
    assert len(counts) >= sum(done) // window.limit


def _slot_counts(counter: SlotCounter, scope: str) -> dict[str, int]:
    if isinstance(counter, MemorySlotCounter):
        return {key: n for (s, key), n in counter.counts.items() if s == scope}
    from leadwatch.store.models import LimitItem

    return {item.key: int(item.n) for item in LimitItem.query(scope)}


def test_a_claim_of_several_takes_them_all_or_none(new_counter) -> None:
    counter: SlotCounter = new_counter()
    key = f"limit#many#{time.monotonic_ns()}"
    assert counter.claim("t1", key, 5, 2_000_000_000, 3) == 3
    assert counter.claim("t1", key, 5, 2_000_000_000, 3) is None  # 2 left: none taken
    assert counter.claim("t1", key, 5, 2_000_000_000, 2) == 5
    assert counter.claim("t1", key, 5, 2_000_000_000) is None
    assert counter.claim("t1", key + "x", 2, 2_000_000_000, 3) is None  # more than the limit


def test_a_claim_from_skips_the_permits_behind_it_but_never_goes_back(new_counter) -> None:
    counter: SlotCounter = new_counter()
    key = f"limit#from#{time.monotonic_ns()}"
    assert counter.claim_from("t1", key, 4, 2, 2_000_000_000)  # a missing counter: 0..3 skipped
    assert counter.claim("t1", key, 10, 2_000_000_000) == 7
    assert not counter.claim_from("t1", key, 6, 2, 2_000_000_000)  # 6 was handed out
    assert counter.claim_from("t1", key, 7, 3, 2_000_000_000)  # right after the last one
    assert counter.claim("t1", key, 10, 2_000_000_000) is None


class _Recording(SharedWindowLimiter):
    """Records the slot of every permit it uses, as it takes it (and, per thread, the last)."""

    def __init__(self, *args, taken: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.taken = taken
        self.mine = threading.local()

    def _take(self, now: float) -> None:
        held = self._held
        assert held is not None
        slot = self._slot_of(held.group, held.next)
        self.taken.append(slot)
        self.mine.slot = slot
        super()._take(now)


@pytest.mark.parametrize(
    "window",
    [Window(0.04, 1, batch=4), Window(0.1, 3, batch=2)],
    ids=["one-a-slot", "three-a-slot"],
)
def test_racing_limiters_claiming_several_never_pass_a_slots_limit(new_counter, window: Window) -> None:
    """Four containers, each claiming up to `batch` permits a write, and within each two threads
    sharing its permits: no slot is used more than its limit, every request waited for its slot."""
    scope = f"t{time.monotonic_ns()}"
    taken: list[int] = []
    early: list[float] = []
    lock = threading.Lock()
    limiters = [_Recording(new_counter(), scope, "amocrm", window, taken=taken) for _ in range(4)]

    def thread(limiter: _Recording) -> None:
        deadline = time.time() + 0.8
        while time.time() < deadline:
            limiter.acquire()
            begins = limiter.mine.slot * window.seconds
            if time.time() < begins - 0.002:
                with lock:
                    early.append(begins - time.time())

    threads = [threading.Thread(target=thread, args=(lim,)) for lim in limiters for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_slot = Counter(taken)
    assert per_slot and max(per_slot.values()) <= window.limit
    assert early == []
    # How many writes the claims take per request is a cost, measured by `python -m bench limits`
    # (claims per request sent): a timed test on a loaded machine cannot hold it.
    # And the slots were used: over a third of the 0.8 s worth.
    assert len(taken) >= (0.8 / window.seconds) * window.limit / 3
