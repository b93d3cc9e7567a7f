"""TelegramNotifier against FakeTelegram over real HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests

from crm_adapters.base import CrmRateLimited, CrmRejected, CrmUnavailable, OutcomeUnknown, OutOfTime
from crm_adapters.http import RetryPolicy, time_limit
from leadwatch.telegram import InvalidMessage, TelegramNotifier, TelegramRejected, escape, link
from leadwatch.testing.telegram import FakeTelegram, bad_gateway, internal_error, slow, too_many_requests

pytestmark = pytest.mark.integration

TOKEN = "123456:SECRET-bot-token-Zq9"
CHAT = "-100777"
OTHER_CHAT = "4242"
POLICY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=5.0, budget=10.0)
SCALE = 50.0  # the fake's limits and the notifier's pacing, this much faster than Telegram's
PACE = {"chat_interval": 1.2 / SCALE, "group_period": 60.0 / SCALE}


class RecordingSleep:
    """Records the waits instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeTelegram]:
    # One server for the module: stopping one takes half a second (serve_forever's poll).
    # Telegram's limits 50 times faster keep the tests quick; the burst tests check pacing against them.
    fake = FakeTelegram(
        token=TOKEN,
        chats={CHAT, OTHER_CHAT},
        per_chat_rate=50.0,
        per_chat_burst=3,
        group_limit=20,
        group_period=60.0 / SCALE,
    )
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake(server: FakeTelegram) -> FakeTelegram:
    server.reset()
    return server


@pytest.fixture
def slept() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def notifier(fake: FakeTelegram, slept: RecordingSleep) -> TelegramNotifier:
    return TelegramNotifier(TOKEN, api_base=fake.url, sleep=slept, policy=POLICY, **PACE)


def sends(fake: FakeTelegram) -> list[int]:
    return [r.status for r in fake.requests("/sendMessage")]


def test_send_delivers_html_without_preview(fake: FakeTelegram, notifier: TelegramNotifier) -> None:
    text = f"<b>Lead 17</b> is late: {link('https://crm.example/lead/17', 'Acme & Co')}"
    message_id = notifier.send(CHAT, text)
    [message] = fake.messages
    assert message.message_id == message_id
    assert (message.chat_id, message.text, message.parse_mode) == (CHAT, text, "HTML")
    assert message.plain_text == "Lead 17 is late: Acme & Co"
    assert message.link_preview_disabled and not message.disable_notification
    assert notifier.send(int(OTHER_CHAT), "quiet", disable_notification=True) == message_id + 1
    assert fake.messages_to(OTHER_CHAT)[0].disable_notification


def test_429_waits_retry_after_then_sends_once(
    fake: FakeTelegram, notifier: TelegramNotifier, slept: RecordingSleep
) -> None:
    fake.fail_next(too_many_requests(retry_after=3))
    notifier.send(CHAT, "after the flood wait")
    assert slept.waits == [3.0]
    assert sends(fake) == [429, 200]
    assert len(fake.messages) == 1


def test_persistent_429_raises_rate_limited(fake: FakeTelegram, notifier: TelegramNotifier) -> None:
    fake.fail_next(too_many_requests(retry_after=2), times=POLICY.attempts)
    with pytest.raises(CrmRateLimited) as caught:
        notifier.send(CHAT, "x")
    assert caught.value.retry_after == 2.0 and caught.value.retryable
    assert fake.messages == []


def test_502_from_nginx_is_retried(
    fake: FakeTelegram, notifier: TelegramNotifier, slept: RecordingSleep
) -> None:
    fake.fail_next(bad_gateway)
    notifier.send(CHAT, "through the gateway")
    assert sends(fake) == [502, 200]
    assert len(slept.waits) == 1 and slept.waits[0] < 1
    assert len(fake.messages) == 1


def test_persistent_500_gives_up_after_the_policy(fake: FakeTelegram, notifier: TelegramNotifier) -> None:
    fake.fail_randomly(1.0, internal_error)
    with pytest.raises(CrmUnavailable) as caught:
        notifier.send(CHAT, "never")
    assert caught.value.status == 500 and "Internal Server Error" in str(caught.value)
    assert sends(fake) == [500] * POLICY.attempts
    assert fake.messages == []


def test_a_send_that_times_out_is_not_sent_again(fake: FakeTelegram, slept: RecordingSleep) -> None:
    # The request left: Telegram may have posted it. A resend could post it twice, so the
    # notifier says it does not know instead (the executor records the message as unconfirmed).
    notifier = TelegramNotifier(
        TOKEN, api_base=fake.url, sleep=slept, policy=POLICY, timeout=(1.0, 0.1), **PACE
    )
    fake.fail_next(slow(0.3, then=fake.handle))
    with pytest.raises(OutcomeUnknown) as caught:
        notifier.send(CHAT, "late but there")
    assert "timed out" in str(caught.value) and TOKEN not in str(caught.value)
    assert [r.fault for r in fake.requests("/sendMessage")] == ["slow"]
    assert len(fake.messages) == 1 and slept.waits == []


def test_a_send_that_never_connected_is_retried(fake: FakeTelegram, slept: RecordingSleep) -> None:
    # Nothing listens there: the request surely did not arrive, so trying again is safe.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    notifier = TelegramNotifier(TOKEN, api_base=f"http://127.0.0.1:{port}", sleep=slept, policy=POLICY)
    with pytest.raises(CrmUnavailable) as caught:
        notifier.send(CHAT, "nobody there")
    assert not isinstance(caught.value, OutcomeUnknown)
    assert notifier.http.calls == POLICY.attempts and len(slept.waits) == POLICY.attempts - 1


def test_a_read_that_times_out_is_retried(fake: FakeTelegram, slept: RecordingSleep) -> None:
    notifier = TelegramNotifier(TOKEN, api_base=fake.url, sleep=slept, policy=POLICY, timeout=(1.0, 0.1))
    fake.fail_next(slow(0.3), when=lambda r: r.path.endswith("/getMe"))
    assert notifier.get_me()["is_bot"] is True
    assert [r.fault for r in fake.requests("/getMe")] == ["slow", None]


def test_wrong_token_is_rejected_and_never_shown(fake: FakeTelegram, slept: RecordingSleep) -> None:
    wrong = "999999:WRONG-token-Kx1"
    notifier = TelegramNotifier(wrong, api_base=fake.url, sleep=slept, policy=POLICY)
    with pytest.raises(CrmRejected) as caught:
        notifier.send(CHAT, "hello")
    error = caught.value
    assert error.status == 401 and not error.retryable
    assert "Unauthorized" in str(error)
    for shown in (str(error), repr(error), repr(notifier), str(error.args)):
        assert wrong not in shown and "WRONG" not in shown
    assert len(fake.requests()) == 1  # not retried
    assert fake.requests()[0].path == f"/bot{wrong}/sendMessage"


def test_network_error_message_hides_the_token(slept: RecordingSleep) -> None:
    notifier = TelegramNotifier(TOKEN, api_base="http://127.0.0.1:9", sleep=slept, policy=POLICY)
    with pytest.raises(CrmUnavailable) as caught:
        notifier.send(CHAT, "x")
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
    assert "bot***" in str(caught.value)


def test_unknown_chat_is_rejected_with_telegrams_description(
    fake: FakeTelegram, notifier: TelegramNotifier
) -> None:
    with pytest.raises(TelegramRejected) as caught:
        notifier.send("-100999", "hello")
    assert caught.value.status == 400
    assert caught.value.description == "Bad Request: chat not found"
    assert "chat not found" in str(caught.value)
    assert sends(fake) == [400]


def test_blocked_bot_and_migrated_group(fake: FakeTelegram, notifier: TelegramNotifier) -> None:
    fake.block(OTHER_CHAT)
    with pytest.raises(CrmRejected, match="Forbidden: bot was blocked by the user") as blocked:
        notifier.send(OTHER_CHAT, "hi")
    assert blocked.value.status == 403

    fake.migrate(CHAT, -1001557912345)
    with pytest.raises(TelegramRejected) as moved:
        notifier.send(CHAT, "hi")
    assert moved.value.migrate_to_chat_id == -1001557912345
    assert "moved" in str(moved.value) and "-1001557912345" in str(moved.value)
    assert fake.messages == []


def test_markup_telegram_cannot_parse_is_rejected(fake: FakeTelegram, notifier: TelegramNotifier) -> None:
    with pytest.raises(CrmRejected, match='can\'t parse entities: Unsupported start tag "font"'):
        notifier.send(CHAT, "<font>x</font>")
    with pytest.raises(InvalidMessage):
        notifier.send(CHAT, "5 < 7")  # caught before sending
    with pytest.raises(InvalidMessage):
        notifier.send(CHAT, "<b> \n </b>")
    assert sends(fake) == [400]


def test_long_report_is_refused_whole_and_delivered_in_parts(
    fake: FakeTelegram, notifier: TelegramNotifier
) -> None:
    lines = [
        f"<b>{i}.</b> {link(f'https://crm.example/lead/{i}', f'Lead #{i} — ООО «Ромашка» & Co')}: "
        f"{escape('no call for > 2 h')}"
        for i in range(250)
    ]
    report = "\n".join(lines)

    # Telegram counts after entity parsing: the raw text is far longer than what it counts.
    raw = requests.post(
        f"{fake.url}/bot{TOKEN}/sendMessage",
        json={"chat_id": CHAT, "text": report, "parse_mode": "HTML"},
        timeout=5,
    )
    assert raw.status_code == 400
    assert raw.json() == {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"}
    with pytest.raises(InvalidMessage, match="split"):
        notifier.send(CHAT, report)

    ids = notifier.send_long(CHAT, report)
    assert len(ids) == len(fake.messages) > 1
    assert [m.message_id for m in fake.messages] == ids
    assert all(len(m.plain_text) <= 4096 for m in fake.messages)
    shown = "\n".join(m.plain_text for m in fake.messages)
    assert shown == "\n".join(f"{i}. Lead #{i} — ООО «Ромашка» & Co: no call for > 2 h" for i in range(250))


def test_burst_paced_by_the_notifier_gets_no_429(fake: FakeTelegram) -> None:
    # One message per 1.2 s (scaled) in a chat that allows one a second: room for network jitter.
    notifier = TelegramNotifier(TOKEN, api_base=fake.url, sleep=time.sleep, policy=POLICY, **PACE)
    for i in range(10):
        notifier.send(CHAT, f"alert {i}")
    assert 429 not in sends(fake)
    assert [m.plain_text for m in fake.messages] == [f"alert {i}" for i in range(10)]


def test_unpaced_burst_meets_the_fakes_limit(fake: FakeTelegram) -> None:
    for i in range(6):
        requests.post(
            f"{fake.url}/bot{TOKEN}/sendMessage", json={"chat_id": CHAT, "text": f"x{i}"}, timeout=5
        )
    answers = fake.requests("/sendMessage")
    assert 429 in [r.status for r in answers]
    refused = requests.post(
        f"{fake.url}/bot{TOKEN}/sendMessage", json={"chat_id": CHAT, "text": "y"}, timeout=5
    )
    if refused.status_code == 429:
        body = refused.json()
        assert body["parameters"]["retry_after"] >= 1
        assert body["description"] == f"Too Many Requests: retry after {body['parameters']['retry_after']}"


def test_form_body_get_me_and_unknown_method(fake: FakeTelegram, notifier: TelegramNotifier) -> None:
    answer = requests.post(
        f"{fake.url}/bot{TOKEN}/sendMessage",
        data={
            "chat_id": CHAT,
            "text": "<i>form</i> &amp; co",
            "parse_mode": "HTML",
            "link_preview_options": '{"is_disabled": true}',
            "disable_notification": "true",
        },
        timeout=5,
    ).json()
    assert answer["ok"] is True
    assert answer["result"]["text"] == "form & co" and answer["result"]["chat"]["type"] == "supergroup"
    [message] = fake.messages
    assert message.link_preview_disabled and message.disable_notification

    assert notifier.get_me()["is_bot"] is True
    missing = requests.post(f"{fake.url}/bot{TOKEN}/sendNothing", json={}, timeout=5)
    assert missing.status_code == 404 and missing.json()["description"] == "Not Found"
    empty = requests.post(f"{fake.url}/bot{TOKEN}/sendMessage", json={"chat_id": CHAT, "text": ""}, timeout=5)
    assert empty.json()["description"] == "Bad Request: message text is empty"


def test_a_flood_wait_longer_than_the_invocation_has_left_gives_up_at_once(
    fake: FakeTelegram, notifier: TelegramNotifier, slept: RecordingSleep
) -> None:
    # Telegram asks for 35 s; the Lambda has 20 s left: waiting would get it killed mid-batch.
    fake.fail_next(too_many_requests(retry_after=35))
    with time_limit(lambda: 20.0), pytest.raises(CrmRateLimited):
        notifier.send(CHAT, "not now")
    assert slept.waits == [] and sends(fake) == [429] and fake.messages == []
    with time_limit(lambda: 0.5), pytest.raises(OutOfTime):
        notifier.send(CHAT, "no time at all")
    assert sends(fake) == [429]  # nothing sent without the time to hear the answer


def test_a_slow_answer_is_waited_for_only_as_long_as_the_invocation_has(
    fake: FakeTelegram, slept: RecordingSleep
) -> None:
    fake.fail_next(slow(seconds=3.0))
    patient = TelegramNotifier(TOKEN, api_base=fake.url, sleep=slept, policy=POLICY, chat_interval=0.02)
    started = time.monotonic()
    with time_limit(lambda: 1.5 - (time.monotonic() - started)), pytest.raises(OutcomeUnknown):
        patient.send(CHAT, "slow")
    assert time.monotonic() - started < 2.5  # the read timeout was cut from 20 s to what was left


def test_a_turn_under_the_pacing_that_comes_after_the_invocation_is_left_to_the_next_run(
    fake: FakeTelegram, slept: RecordingSleep
) -> None:
    clock = {"t": 0.0}
    paced = TelegramNotifier(
        TOKEN, api_base=fake.url, sleep=slept, policy=POLICY, monotonic=lambda: clock["t"], chat_interval=1.2
    )
    paced.send(CHAT, "first")
    with time_limit(lambda: 1.1), pytest.raises(OutOfTime):
        paced.send(CHAT, "second: its turn is 1.2 s away, the invocation has 1.1")
    with time_limit(lambda: 5.0):
        paced.send(CHAT, "third: waits its 1.2 s")
    assert slept.waits == [pytest.approx(1.2)] and len(fake.messages) == 2
