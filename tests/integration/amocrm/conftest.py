from __future__ import annotations

from collections.abc import Iterator

import pytest

from leadwatch.testing.amocrm import FakeAmoCrm
from tests.integration.amocrm.helpers import START, TOKEN, Clock


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[FakeAmoCrm, Clock]]:
    # One running server a module (a stop costs half a second); each test resets it.
    # The limit is generous: only the tests about the limit build their own.
    clock = Clock(START)
    server = FakeAmoCrm(token=TOKEN, rate_limit=10_000, clock=clock)
    server.start()
    yield server, clock
    server.stop()


@pytest.fixture
def clock(shared: tuple[FakeAmoCrm, Clock]) -> Clock:
    shared[1].set(START)
    return shared[1]


@pytest.fixture
def fake(shared: tuple[FakeAmoCrm, Clock], clock: Clock) -> FakeAmoCrm:
    shared[0].reset()
    return shared[0]
