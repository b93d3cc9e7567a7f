from __future__ import annotations

from collections.abc import Iterator

import pytest

from leadwatch.testing.bitrix24 import FakeBitrix24
from tests.integration.bitrix24.helpers import CODE, T0, TOKEN, Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture(scope="module")
def portal() -> Iterator[FakeBitrix24]:
    # One server a module (stopping one costs ~0.5 s); `fake` resets it for each test.
    server = FakeBitrix24(webhook_code=CODE, application_token=TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake(portal: FakeBitrix24, clock: Clock) -> FakeBitrix24:
    portal.reset()
    portal.clock = clock
    return portal
