from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from leadwatch.store.models import bind
from leadwatch.store.schema import create_tables
from leadwatch.testing.stack import REGION, MotoProcess, free_port


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/integration is an integration test (`-m "not integration"` is the
    unit tier), whether or not its module says so."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def progress(pytestconfig: pytest.Config, request: pytest.FixtureRequest) -> Callable[[str], None]:
    """`progress(text)` prints `[slow] <test>: <text>` on the terminal at once, past pytest's
    capture and from an xdist worker too (its stderr is the terminal's), so a replay that runs
    for minutes shows where it is instead of a silent percentage."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    started = time.monotonic()

    def say(text: str) -> None:
        line = f"\n[slow] {request.node.name}: {text} ({time.monotonic() - started:.0f} s)\n"
        with capture.global_and_fixture_disabled():
            sys.stderr.write(line)
            sys.stderr.flush()

    say("started")
    return say


@pytest.fixture(scope="module")
def moto_tables() -> str:
    """moto's server (served serially, as atomically as DynamoDB) with leadwatch's tables, every
    model bound to it; its endpoint. For tests that race workers over real conditional writes."""
    port = free_port()
    moto = MotoProcess(port)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        create_tables(boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION))
        bind(host=endpoint, region=REGION)
        yield endpoint
    finally:
        moto.stop()


def checkpoint_writes(stack, monkeypatch: pytest.MonkeyPatch, tenant: str, name: str) -> list[str]:
    """The values written to one tenant's checkpoint from now on (the writes still go through)."""
    writes: list[str] = []
    set_checkpoint = stack.ctx.store.set_checkpoint

    def recording(written_tenant: str, written_name: str, value: str) -> None:
        if written_tenant == tenant and written_name == name:
            writes.append(value)
        set_checkpoint(written_tenant, written_name, value)

    monkeypatch.setattr(stack.ctx.store, "set_checkpoint", recording)
    return writes
