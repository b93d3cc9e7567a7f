"""What the Bitrix24 adapter tests share besides fixtures: the portal's secrets, an adapter
aimed at the fake, entity refs and a raw REST call."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import requests

from crm_adapters.bitrix24 import Bitrix24Adapter
from crm_adapters.http import RetryPolicy, Transport
from leadwatch.config import Bitrix24Config, SecretRef
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.bitrix24 import FakeBitrix24
from leadwatch.testing.stack import SimClock as Clock
from leadwatch.testing.stack import Sleeps

__all__ = ["CODE", "T0", "TOKEN", "Clock", "Sleeps", "deal", "lead", "make_adapter", "rest"]

CODE = "b24-webhook-code-Zx81"
TOKEN = "b24-app-token-Qw77"
T0 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def make_adapter(
    fake: FakeBitrix24,
    *,
    code: str = CODE,
    entities: tuple[str, ...] = ("lead", "deal"),
    sleep: Callable[[float], None] | None = None,
    rate: float = 2.0,
    burst: int = 50,
    policy: RetryPolicy | None = None,
    timeout: tuple[float, float] = (5.0, 20.0),
    select_fields: tuple[str, ...] = (),
) -> Bitrix24Adapter:
    config = Bitrix24Config(
        kind="bitrix24",
        base_url=fake.url,
        webhook_user_id=1,
        webhook_code=SecretRef(env="B24_CODE"),
        application_token=SecretRef(env="B24_TOKEN"),
        entities=list(entities),
    )
    secrets = {"B24_CODE": code, "B24_TOKEN": TOKEN}
    return Bitrix24Adapter(
        "acme",
        config,
        lambda ref: secrets[ref.env or ""],
        transport=Transport(sleep=sleep or Sleeps(), policy=policy, timeout=timeout),
        rate=rate,
        burst=burst,
        select_fields=select_fields,
    )


def lead(ident: str) -> EntityRef:
    return EntityRef(EntityType.LEAD, ident)


def deal(ident: str) -> EntityRef:
    return EntityRef(EntityType.DEAL, ident)


def rest(fake: FakeBitrix24, method: str, **kwargs: Any) -> requests.Response:
    """A raw call to the fake portal's REST, past the adapter."""
    method_name = kwargs.pop("http", "POST")
    timeout = kwargs.pop("timeout", 5)
    return requests.request(method_name, f"{fake.url}/rest/1/{CODE}/{method}", timeout=timeout, **kwargs)
