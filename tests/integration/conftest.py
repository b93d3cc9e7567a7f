from __future__ import annotations

import boto3
import pytest

from leadwatch.store.models import bind
from leadwatch.store.schema import create_tables
from leadwatch.testing.stack import REGION, MotoProcess, free_port


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
