"""Rate limits across containers: K "containers" hammering one tenant's CRM account or one
Telegram group, with each container's own limiter only, then through the shared slots.

Each container is a thread with objects of its own, as a separate Lambda container has them: its
own adapter or notifier, transport, in-process limiter and slot counter object; the shared
counters are DynamoDB items on moto's server (served one request at a time, so a conditional
write is atomic as on DynamoDB; a local round trip of about a millisecond, where DynamoDB in
the region answers in a few). For K = 1, 2, 4 and each mode, for `SECONDS` of real time every
container sends as fast as its limiters let it (a Bitrix24 or amoCRM card read, a Telegram
message), with no retries (`attempts=1`) so each refusal is one answer in the fake's log.

The fakes count as the services do, at the services' limits: amoCRM 7 requests in each second;
Bitrix24 a leaky bucket 50 deep draining 2 a second (503 QUERY_LIMIT_EXCEEDED); Telegram a group
(1 message a second a chat with short bursts, 20 a minute a group) with its minute shortened
`TELEGRAM_SCALE` times (limits and pacing alike) so a run sees several of them.

Per service, K and mode: requests sent, refused (429 / 503), the achieved rate of accepted
requests, and (shared) DynamoDB writes per request sent (every claim is one conditional
UpdateItem, refused or not) with the mean time a claim took. Ratios: the shared mode's accepted
rate over the per-container mode's, at the same K. Targets: 0 refused through the shared slots;
the per-container mode gets none, its figures show what the shared slots prevent.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.common import Figure, note

SECONDS = 4.0
KS = (1, 2, 4)
TELEGRAM_SCALE = 20.0
GROUP = "-100777"
TOKENS = {"amocrm": "bench-amo-token", "bitrix24": "bench-webhook-code", "telegram": "555:bench-bot-token"}


@dataclass
class TimedCounter:
    """A slot counter that counts its writes and the time they took."""

    inner: Any
    writes: int = 0
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(
        self, scope: str, key: str, limit: int, expires_at: int, count: int = 1, start: int = 0
    ) -> int | None:
        with self._timed():
            return self.inner.claim(scope, key, limit, expires_at, count, start)

    def claim_from(self, scope: str, key: str, start: int, count: int, expires_at: int) -> bool:
        with self._timed():
            return self.inner.claim_from(scope, key, start, count, expires_at)

    @contextlib.contextmanager
    def _timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            with self._lock:
                self.writes += 1
                self.seconds += time.perf_counter() - started


@dataclass
class Run:
    sent: int
    refused: int
    rate: float  # accepted requests a second
    claims: int
    claim_ms: float


def _policy() -> Any:
    from crm_adapters.http import RetryPolicy

    return RetryPolicy(attempts=1)


def _services() -> dict[str, tuple[Callable[[], Any], Callable[[Any, Any], Callable[[], None]], str, int]]:
    """service -> (start a fake, make one container's sender(fake, limits), path, refusal status)."""
    from crm_adapters.amocrm import AmoCrmAdapter
    from crm_adapters.bitrix24 import Bitrix24Adapter
    from crm_adapters.http import Transport
    from leadwatch.config import AmoCrmConfig, Bitrix24Config, SecretRef
    from leadwatch.events import EntityRef, EntityType
    from leadwatch.telegram import TelegramNotifier
    from leadwatch.testing.amocrm import FakeAmoCrm
    from leadwatch.testing.bitrix24 import FakeBitrix24
    from leadwatch.testing.telegram import FakeTelegram

    def amo_fake() -> Any:
        fake = FakeAmoCrm(token=TOKENS["amocrm"]).start()
        fake.lead_ref = EntityRef(EntityType.LEAD, fake.create_lead("bench"))
        return fake

    def amo_sender(fake: Any, limits: Any) -> Callable[[], None]:
        config = AmoCrmConfig(
            kind="amocrm", base_url=fake.url, access_token=SecretRef(env="A"), hook_secret=SecretRef(env="H")
        )
        adapter = AmoCrmAdapter(
            "bench-amo",
            config,
            lambda _ref: TOKENS["amocrm"],
            transport=Transport(policy=_policy(), limits=limits),
        )
        return lambda: adapter.get_leads([fake.lead_ref])

    def b24_fake() -> Any:
        fake = FakeBitrix24(webhook_code=TOKENS["bitrix24"]).start()
        fake.lead_ref = EntityRef(EntityType.LEAD, fake.create_lead("bench"))
        return fake

    def b24_sender(fake: Any, limits: Any) -> Callable[[], None]:
        config = Bitrix24Config(
            kind="bitrix24",
            base_url=fake.url,
            webhook_user_id=1,
            webhook_code=SecretRef(env="C"),
            application_token=SecretRef(env="T"),
        )
        adapter = Bitrix24Adapter(
            "bench-b24",
            config,
            lambda _ref: TOKENS["bitrix24"],
            transport=Transport(policy=_policy(), limits=limits),
        )
        return lambda: adapter.get_leads([fake.lead_ref])

    def tg_fake() -> Any:
        return FakeTelegram(
            token=TOKENS["telegram"],
            per_chat_rate=1.0 * TELEGRAM_SCALE,
            group_period=60.0 / TELEGRAM_SCALE,
        ).start()

    def tg_sender(fake: Any, limits: Any) -> Callable[[], None]:
        notifier = TelegramNotifier(
            TOKENS["telegram"],
            api_base=fake.url,
            policy=_policy(),
            chat_interval=1.2 / TELEGRAM_SCALE,
            group_period=60.0 / TELEGRAM_SCALE,
            limits=limits,
        )
        return lambda: notifier.send(GROUP, "Lead 17 is late")

    return {
        "amocrm": (amo_fake, amo_sender, "/api/v4/leads", 429),
        "bitrix24": (b24_fake, b24_sender, "/rest/", 503),
        "telegram": (tg_fake, tg_sender, "/sendMessage", 429),
    }


def _run(
    fake: Any,
    make_sender: Callable[[Any, Any], Callable[[], None]],
    path: str,
    status: int,
    k: int,
    shared: bool,
) -> Run:
    from crm_adapters.base import CrmError
    from crm_adapters.limits import SharedLimits
    from leadwatch.store.limits import DynamoSlotCounter

    fake.reset()  # an empty bucket or window, nothing sent
    if hasattr(fake, "lead_ref"):
        fake.create_lead("bench")  # the card the senders read, under the same id again
    counters = [TimedCounter(DynamoSlotCounter()) for _ in range(k)]
    senders = [make_sender(fake, SharedLimits(c) if shared else None) for c in counters]
    fake.clear_log()
    barrier = threading.Barrier(k)
    ends: list[float] = []

    def container(send: Callable[[], None]) -> None:
        barrier.wait()
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            with contextlib.suppress(CrmError):  # refusals are counted from the fake's log
                send()
        ends.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=container, args=(s,)) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = max(ends) - started
    statuses = [r.status for r in fake.requests(path)]
    claims = sum(c.writes for c in counters)
    claim_seconds = sum(c.seconds for c in counters)
    return Run(
        sent=len(statuses),
        refused=statuses.count(status),
        rate=statuses.count(200) / elapsed,
        claims=claims,
        claim_ms=1000 * claim_seconds / claims if claims else 0.0,
    )


def measure() -> list[Figure]:
    import os

    import boto3

    from leadwatch.store.models import bind
    from leadwatch.store.schema import create_tables
    from leadwatch.testing.stack import REGION, MotoProcess, free_port

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    moto = MotoProcess(free_port())
    moto.start()
    figures: list[Figure] = []
    try:
        endpoint = f"http://127.0.0.1:{moto.port}"
        create_tables(boto3.client("dynamodb", endpoint_url=endpoint, region_name=REGION))
        bind(host=endpoint, region=REGION)
        for service, (start_fake, make_sender, path, status) in _services().items():
            fake = start_fake()
            try:
                for k in KS:
                    runs = {
                        mode: _run(fake, make_sender, path, status, k, shared=mode == "shared")
                        for mode in ("local", "shared")
                    }
                    figures += _figures(service, k, runs, status)
            finally:
                fake.stop()
    finally:
        moto.stop()
    return figures


def _figures(service: str, k: int, runs: dict[str, Run], status: int) -> list[Figure]:
    local, shared = runs["local"], runs["shared"]
    name = f"limits_{service}_k{k}"
    note(
        f"{name}: per-container {local.sent} sent, {local.refused} x {status}, {local.rate:.2f}/s accepted; "
        f"shared {shared.sent} sent, {shared.refused} x {status}, {shared.rate:.2f}/s accepted, "
        f"{shared.claims} claims ({shared.claims / max(shared.sent, 1):.2f} a request, {shared.claim_ms:.1f} ms each)"
    )
    unit = (
        "accepted requests a second"
        if service != "telegram"
        else f"messages a second ({TELEGRAM_SCALE:g}x Telegram's)"
    )
    return [
        Figure(
            f"{name}_local_refused",
            local.refused,
            definition=f"{status} answers, {k} containers each pacing on its own, {SECONDS:g} s",
            extra={"sent": local.sent},
        ),
        Figure(
            f"{name}_shared_refused",
            shared.refused,
            "==0",
            shared.refused == 0,
            definition=f"{status} answers, {k} containers through the shared slots, {SECONDS:g} s",
            extra={"sent": shared.sent},
        ),
        Figure(f"{name}_local_rate", round(local.rate, 2), definition=unit + ", per-container limiters"),
        Figure(f"{name}_shared_rate", round(shared.rate, 2), definition=unit + ", shared slots"),
        Figure(
            f"{name}_shared_over_local_rate",
            round(shared.rate / local.rate, 2) if local.rate else 0.0,
            definition="accepted rate through the shared slots / each container on its own",
        ),
        Figure(
            f"{name}_ddb_writes_per_request",
            round(shared.claims / max(shared.sent, 1), 2),
            definition="conditional UpdateItem calls (granted or refused) per request sent, shared slots",
            extra={"claim_ms_moto": round(shared.claim_ms, 2)},
        ),
    ]
