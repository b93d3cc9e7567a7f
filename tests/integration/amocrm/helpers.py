"""What the amoCRM adapter tests share besides fixtures: the account's token and field ids,
an adapter aimed at the fake and a lead ref."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from crm_adapters.amocrm import AmoCrmAdapter
from crm_adapters.http import RetryPolicy, Transport
from leadwatch.config import AmoCrmConfig, SecretRef
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.amocrm import FakeAmoCrm
from leadwatch.testing.stack import SimClock as Clock
from leadwatch.testing.stack import Sleeps

__all__ = ["INTAKE", "START", "TOKEN", "VERDICT", "Clock", "Sleeps", "lead_ref", "make_adapter"]

TOKEN = "amo-long-lived-token-Lk52"
INTAKE, VERDICT = "584211", "584213"
START = datetime(2025, 10, 29, 9, 0, tzinfo=UTC)


def make_adapter(
    fake: FakeAmoCrm,
    *,
    token: str = TOKEN,
    sleep: Sleeps | None = None,
    limit: int = 10_000,
    period: float = 1.0,
    bulk_size: int = 50,
    policy: RetryPolicy | None = None,
    real_sleep: bool = False,
    timeout: tuple[float, float] = (5.0, 20.0),
) -> AmoCrmAdapter:
    config = AmoCrmConfig(
        kind="amocrm",
        base_url=fake.url,
        access_token=SecretRef(env="AMO_TOKEN"),
        hook_secret=SecretRef(env="AMO_HOOK"),
        account_id=fake.account_id,
    )
    secrets = {"AMO_TOKEN": token, "AMO_HOOK": "hook-secret"}
    return AmoCrmAdapter(
        "acme-amo",
        config,
        lambda ref: secrets[ref.env or ""],
        transport=Transport(
            sleep=time.sleep if real_sleep else (sleep or Sleeps()),
            policy=policy or RetryPolicy(attempts=5, base_delay=0.01, max_delay=2.0, budget=30.0),
            timeout=timeout,
        ),
        limit=limit,
        period=period,
        bulk_size=bulk_size,
    )


def lead_ref(lead_id: str) -> EntityRef:
    return EntityRef(EntityType.LEAD, lead_id)
