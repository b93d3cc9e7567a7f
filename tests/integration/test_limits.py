"""Limits that hold across containers, over real HTTP against the fakes at the services' own limits.

- amoCRM (7 requests in each second of the account): 2 and 4 adapters, each with its own
  objects as a separate Lambda container would have, all reading one account at once through
  the shared limiter (counters in DynamoDB: moto's server) draw no 429; the same adapters each
  pacing on its own draw many.
- Telegram (a group: one message a second with short bursts, 20 a minute): 30 alerts to one
  group draw no 429 and take at least the minute the group's limit needs, on the stack's virtual
  clock; so do two notifiers (two containers) taking turns.
"""

from __future__ import annotations

import contextlib
import itertools
import threading

import pytest

from crm_adapters.amocrm import AmoCrmAdapter
from crm_adapters.base import CrmRateLimited
from crm_adapters.http import RetryPolicy, Transport
from crm_adapters.limits import SharedLimits
from leadwatch.config import AmoCrmConfig, SecretRef
from leadwatch.events import EntityRef, EntityType
from leadwatch.store.limits import DynamoSlotCounter, MemorySlotCounter
from leadwatch.telegram import TelegramNotifier
from leadwatch.testing.amocrm import FakeAmoCrm
from leadwatch.testing.stack import Sleeps
from leadwatch.testing.telegram import FakeTelegram

pytestmark = pytest.mark.integration

TOKEN = "amo-token-Lk52"
BOT = "123456:TELEGRAM-limits-Xy1"
GROUP = "-100555"
ONCE = RetryPolicy(attempts=1)  # a 429 shows as an error here, not as a wait


@pytest.fixture(scope="module")
def account() -> FakeAmoCrm:
    fake = FakeAmoCrm(token=TOKEN)  # 7 requests in each second of the real clock
    fake.start()
    yield fake
    fake.stop()


def amo_adapter(fake: FakeAmoCrm, shared: bool) -> AmoCrmAdapter:
    """An adapter as one Lambda container builds it: its own transport, limiter and counter."""
    config = AmoCrmConfig(
        kind="amocrm",
        base_url=fake.url,
        access_token=SecretRef(env="AMO"),
        hook_secret=SecretRef(env="HOOK"),
    )
    limits = SharedLimits(DynamoSlotCounter()) if shared else None
    return AmoCrmAdapter(
        "acme-amo", config, lambda _ref: TOKEN, transport=Transport(policy=ONCE, limits=limits)
    )


def hammer(fake: FakeAmoCrm, containers: int, each: int, shared: bool) -> list[int]:
    """`containers` adapters read one card `each` times, all at once; the account's answers."""
    fake.reset()
    lead = EntityRef(EntityType.LEAD, fake.create_lead("x"))
    adapters = [amo_adapter(fake, shared) for _ in range(containers)]
    start = threading.Barrier(containers)

    def run(adapter: AmoCrmAdapter) -> None:
        start.wait()
        for _ in range(each):
            with contextlib.suppress(CrmRateLimited):  # counted in the account's log
                adapter.get_leads([lead])

    threads = [threading.Thread(target=run, args=(a,)) for a in adapters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [r.status for r in fake.requests("/api/v4/leads")]


@pytest.mark.parametrize("containers", [2, 4])
def test_concurrent_adapters_on_one_account_draw_no_429(
    account: FakeAmoCrm, moto_tables: str, containers: int
) -> None:
    statuses = hammer(account, containers, 20 // containers, shared=True)
    assert len(statuses) == 20 and set(statuses) == {200}
    assert account.rate_limit.busiest <= 6


def test_containers_pacing_each_on_its_own_overrun_the_account(account: FakeAmoCrm) -> None:
    statuses = hammer(account, 4, 12, shared=False)
    assert statuses.count(429) >= 10  # 4 x 6 a second against 7


# ----------------------------------------------------------------------------- Telegram
def notifier(fake: FakeTelegram, sleeps: Sleeps, limits: SharedLimits | None) -> TelegramNotifier:
    return TelegramNotifier(
        BOT,
        api_base=fake.url,
        sleep=sleeps,
        monotonic=sleeps.monotonic,
        policy=ONCE,
        limits=limits,
    )


@pytest.fixture
def telegram() -> tuple[FakeTelegram, Sleeps]:
    sleeps = Sleeps()  # virtual: waits move the clock the fake counts by
    fake = FakeTelegram(token=BOT, clock=sleeps.monotonic)  # Telegram's limits: 1/s a chat, 20/min a group
    fake.start()
    yield fake, sleeps
    fake.stop()


def test_30_alerts_to_a_group_draw_no_429_and_take_the_groups_minute(
    telegram: tuple[FakeTelegram, Sleeps],
) -> None:
    fake, sleeps = telegram
    started = sleeps.monotonic()
    sender = notifier(fake, sleeps, None)
    for n in range(30):
        sender.send(GROUP, f"Lead {n} is late")
    assert [r.status for r in fake.requests("/sendMessage")] == [200] * 30
    sent = [m.at for m in fake.messages]
    # The 19th waits for the first one's minute (as the fake saw them land: less a little latency).
    assert sent[18] - sent[0] >= 60 - 0.1
    assert sleeps.monotonic() - started >= 60
    assert min(b - a for a, b in itertools.pairwise(sent)) >= 1.2 - 0.1


def test_two_containers_taking_turns_on_one_group_draw_no_429(telegram: tuple[FakeTelegram, Sleeps]) -> None:
    fake, sleeps = telegram
    counter = MemorySlotCounter()
    senders = [
        notifier(fake, sleeps, SharedLimits(counter, clock=sleeps.monotonic, sleep=sleeps)) for _ in range(2)
    ]
    for n in range(30):
        senders[n % 2].send(GROUP, f"Lead {n} is late")
    assert [r.status for r in fake.requests("/sendMessage")] == [200] * 30
    sent = [m.at for m in fake.messages]
    assert all(sum(1 for t in sent if start <= t < start + 60) <= 19 for start in sent)


def test_each_container_pacing_on_its_own_overruns_the_group(telegram: tuple[FakeTelegram, Sleeps]) -> None:
    fake, sleeps = telegram
    senders = [notifier(fake, sleeps, None) for _ in range(2)]
    refused = 0
    for n in range(30):
        try:
            senders[n % 2].send(GROUP, f"Lead {n} is late")
        except CrmRateLimited:
            refused += 1
    assert refused > 0 and 429 in [r.status for r in fake.requests("/sendMessage")]


def test_when_the_fake_telegram_limits_a_group(telegram: tuple[FakeTelegram, Sleeps]) -> None:
    import requests

    fake, sleeps = telegram
    url = f"{fake.url}/bot{BOT}/sendMessage"
    answers = []
    for n in range(21):
        answers.append(requests.post(url, json={"chat_id": GROUP, "text": f"m{n}"}, timeout=5).json())
        sleeps(1.0)  # the chat's own pace is kept: only the group's minute can refuse
    assert [a["ok"] for a in answers] == [True] * 20 + [False]
    assert answers[-1]["error_code"] == 429 and answers[-1]["parameters"]["retry_after"] == 40
    assert requests.post(url, json={"chat_id": "4242", "text": "private"}, timeout=5).json()["ok"]
