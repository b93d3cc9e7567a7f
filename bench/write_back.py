"""CRM write-back: HTTP calls, rate-limit answers and wall time for n verdicts.

For each n, a fresh fake (Bitrix24: leaky bucket 2 req/s, burst 50; amoCRM: 7 requests
in each second -- the real services' limits, by the real clock) holds n leads, and a
fresh adapter built as production builds it (`leadwatch.context.default_adapter`'s
defaults: its own limiter and retry policy, real `time.sleep`, real `time.monotonic`)
writes one verdict field on each with one `set_fields` call. Counted from the fake's
request log: write requests, and answers 503 QUERY_LIMIT_EXCEEDED / 429. The fastest the
limit allows for C calls starting from an empty bucket is max(0, C - burst) / rate
seconds; wall / allowed must stay <= 1.2. When the calls fit in the burst (allowed 0),
the absolute wall time is shown and must stay under 1 s.

Targets for the calls: Bitrix24 `batch` takes 50 commands, so ceil(n/50); amoCRM's bulk
PATCH takes at most 250 leads per request (Kommo limits), so ceil(n/250).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

from bench.common import Figure, note

NS = (50, 120, 500)
CRMS = {
    # kind: (rate, burst, commands per call the API allows, the request path, rate-limit status)
    "bitrix24": (2.0, 50, 50, "/rest/", 503),
    "amocrm": (7.0, 7, 250, "/api/v4/leads", 429),
}
CREATED = datetime(2025, 11, 12, 6, 0, tzinfo=UTC)


def _setup(kind: str):
    from crm_adapters.amocrm import AmoCrmAdapter
    from crm_adapters.bitrix24 import Bitrix24Adapter
    from leadwatch.config import AmoCrmConfig, Bitrix24Config, SecretRef
    from leadwatch.testing.amocrm import FakeAmoCrm
    from leadwatch.testing.bitrix24 import FakeBitrix24

    rate, burst, _, _, _ = CRMS[kind]
    secrets = {"CODE": "bench-webhook-code", "TOKEN": "bench-app-token", "AMO": "bench-amo-token"}

    def resolve(ref: SecretRef) -> str:
        return secrets[ref.env or ""]

    if kind == "bitrix24":
        fake = FakeBitrix24(
            webhook_code=secrets["CODE"], application_token=secrets["TOKEN"], rate=rate, burst=burst
        ).start()
        config = Bitrix24Config(
            kind="bitrix24",
            base_url=fake.url,
            webhook_user_id=1,
            webhook_code=SecretRef(env="CODE"),
            application_token=SecretRef(env="TOKEN"),
        )

        def adapter():
            return Bitrix24Adapter("bench-b24", config, resolve)

        def create(i: int) -> str:
            return fake.create_lead(title=f"Bench {i}", assigned_by_id="7", created_at=CREATED)

        verdict = {"UF_CRM_ON_TIME": "Y"}
    else:
        fake = FakeAmoCrm(token=secrets["AMO"], rate_limit=burst, rate_window=burst / rate).start()
        amo_config = AmoCrmConfig(
            kind="amocrm",
            base_url=fake.url,
            access_token=SecretRef(env="AMO"),
            hook_secret=SecretRef(env="TOKEN"),
        )

        def adapter():
            return AmoCrmAdapter("bench-amo", amo_config, resolve)

        def create(i: int) -> str:
            return fake.create_lead(name=f"Bench {i}", responsible_user_id="9100001", created_at=CREATED)

        verdict = {"584213": "Yes"}
    return fake, adapter, create, verdict


def _measure_one(kind: str, n: int, fake, make_adapter, create, verdict) -> list[Figure]:
    from leadwatch.effects import SetCardFields
    from leadwatch.events import EntityRef, EntityType

    rate, burst, per_call, path, limited_status = CRMS[kind]
    fake.reset()
    ids = [create(i) for i in range(n)]
    writes = [
        SetCardFields(f"verdict:bench:lead:{lead_id}", EntityRef(EntityType.LEAD, lead_id), dict(verdict))
        for lead_id in ids
    ]
    # reset() gave the fake an empty bucket and creating leads made no requests: a quiet portal.
    fake.clear_log()
    adapter = make_adapter()
    started = time.perf_counter()
    result = adapter.set_fields(writes)
    wall = time.perf_counter() - started
    if result.failed or len(result.succeeded) != n:
        raise RuntimeError(
            f"{kind} n={n}: {len(result.failed)} writes failed: {list(result.failed.values())[:3]}"
        )
    log = fake.requests(path)
    calls = len(log)
    limited = sum(1 for r in log if r.status == limited_status)
    target_calls = math.ceil(n / per_call)
    allowed = max(0, calls - burst) / rate
    note(
        f"write-back {kind} n={n}: {calls} calls, {limited} limited, {wall:.2f} s (limit allows {allowed:.2f} s)"
    )
    prefix = f"write_back_{kind}_n{n}"
    figures = [
        Figure(
            f"{prefix}_calls",
            calls,
            f"<={target_calls}",
            calls <= target_calls,
            f"HTTP requests to the fake {kind} for {n} verdicts (retries included); target "
            f"ceil(n/{per_call})",
        ),
        Figure(
            f"{prefix}_rate_limited",
            limited,
            "==0",
            limited == 0,
            f"answers {limited_status} (rate limit) in the fake's log at {rate:g} req/s burst {burst}",
        ),
    ]
    if allowed > 0:
        ratio = wall / allowed
        figures.append(
            Figure(
                f"{prefix}_wall_ratio",
                ratio,
                "<=1.2",
                ratio <= 1.2,
                f"wall {wall:.2f} s / {allowed:.2f} s, the least the limit allows for {calls} calls "
                f"(max(0, calls - {burst}) / {rate:g})",
                {"wall_s": wall, "allowed_s": allowed},
            )
        )
    else:
        figures.append(
            Figure(
                f"{prefix}_wall_s",
                wall,
                "<1s(fits_burst)",
                wall < 1.0,
                f"wall seconds; the {calls} calls fit in the burst of {burst}, so the limit allows ~0 s",
                {"wall_s": wall, "allowed_s": allowed},
            )
        )
    return figures


def measure(ns: tuple[int, ...] = NS) -> list[Figure]:
    figures: list[Figure] = []
    for kind in CRMS:
        fake, make_adapter, create, verdict = _setup(kind)
        try:
            for n in ns:
                figures += _measure_one(kind, n, fake, make_adapter, create, verdict)
        finally:
            fake.stop()
    return figures
