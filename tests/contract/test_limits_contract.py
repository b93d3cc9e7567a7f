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

from crm_adapters.limits import SharedLimits, SlotCounter, Window
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
        deadline = time.monotonic() + 0.6
        sent = 0
        while time.monotonic() < deadline:
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
    # And the containers did use the slots: over half of the 0.6 s worth.
    assert sum(done) >= 0.5 * (0.6 / window.seconds) * window.limit


def _slot_counts(counter: SlotCounter, scope: str) -> dict[str, int]:
    if isinstance(counter, MemorySlotCounter):
        return {key: n for (s, key), n in counter.counts.items() if s == scope}
    from leadwatch.store.models import LimitItem

    return {item.key: int(item.n) for item in LimitItem.query(scope)}
