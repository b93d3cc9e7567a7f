"""Secrets through the whole deployment, on both CRMs: the tenants' secrets live in SSM (moto's
server), the webhooks go through the real route, the worker, the sweep and the Telegram alert run
as deployed.

- A refused delivery is kept only when it authenticated, without its `auth[...]` fields, as the
  bytes it came as, at most KEPT_REJECTS_PER_HOUR per tenant an hour; anything else is only
  answered and logged.
- With every logger at DEBUG, no configured secret appears in any line any logger writes.
- A token rotated in SSM and at the service is picked up on the service's 401, with one SSM call.
- amoCRM's `?key=` with a lone surrogate is a wrong key (403), not a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode
from zoneinfo import ZoneInfo

import boto3
import pytest

from leadwatch import observability
from leadwatch.config import SecretRef, TenantConfig, TenantRegistry
from leadwatch.ingress import MAX_BODY
from leadwatch.secrets import SecretResolver
from leadwatch.store.dynamodb import KEPT_REJECTS_PER_HOUR
from leadwatch.testing.stack import (
    AMO_TENANT,
    B24_TENANT,
    REGION,
    AmoDriver,
    BitrixDriver,
    CrmDriver,
    LocalStack,
    SimClock,
)

pytestmark = pytest.mark.integration

MSK = ZoneInfo("Europe/Moscow")
TUESDAY_10 = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)


class CountingSsm:
    """An SSM client on moto's server that counts the requests leadwatch makes."""

    def __init__(self, endpoint: str):
        self.client = boto3.client("ssm", endpoint_url=endpoint, region_name=REGION)
        self.calls: list[str] = []
        self.client.meta.events.register("before-call.ssm.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        self.calls.append(model.name)


def in_ssm(stack: LocalStack, ssm: CountingSsm, config: TenantConfig) -> TenantConfig:
    """The tenant with every secret moved from the environment to an SSM parameter."""

    def moved(ref: SecretRef | None) -> SecretRef | None:
        if ref is None or ref.env is None:
            return ref
        name = f"/leadwatch/{config.tenant}/{ref.env.lower()}"
        ssm.client.put_parameter(Name=name, Value=stack.secrets[ref.env], Type="SecureString", Overwrite=True)
        return SecretRef(ssm=name)

    crm = config.crm.model_copy(update={k: moved(v) for k, v in config.crm if isinstance(v, SecretRef)})
    telegram = config.telegram.model_copy(update={"bot_token": moved(config.telegram.bot_token)})
    return config.model_copy(update={"crm": crm, "telegram": telegram, "api_key": moved(config.api_key)})


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # moto in its own process: its own DEBUG lines (it logs what it stores) are not leadwatch's.
    with LocalStack(SimClock(TUESDAY_10), managers={"7": "Anna Petrova", "8": "Ivan Orlov"}) as running:
        ssm = CountingSsm(running.aws_endpoint or "")
        running.ctx.registry = TenantRegistry(
            {c.tenant: in_ssm(running, ssm, c) for c in running.ctx.registry}
        )
        running.ctx.secrets = SecretResolver(environ={}, ssm_client=lambda: ssm.client)
        running.ctx._adapters.clear()
        running.ctx._notifiers.clear()
        running.ssm = ssm  # type: ignore[attr-defined]
        yield running


@pytest.fixture(params=[B24_TENANT, AMO_TENANT])
def crm(request: pytest.FixtureRequest, stack: LocalStack) -> CrmDriver:
    for fake in (stack.bitrix, stack.amo, stack.telegram):
        fake.clear_faults()
    stack.telegram.messages.clear()
    return BitrixDriver(stack.bitrix) if request.param == B24_TENANT else AmoDriver(stack.amo)


def hook_key(stack: LocalStack, tenant: str) -> str | None:
    return stack.secrets["DEMO_AMO_HOOK_SECRET"] if tenant == AMO_TENANT else None


def captured_body(stack: LocalStack, crm: CrmDriver, at: datetime) -> bytes:
    """What the CRM would post for a new card, taken instead of posted."""
    fake = stack.bitrix if crm.tenant == B24_TENANT else stack.amo
    bodies: list[bytes] = []
    deliver, fake.deliver = fake.deliver, bodies.append
    try:
        crm.create("Captured", "7", at)
    finally:
        fake.deliver = deliver
    return bodies[0]


def with_pairs(body: bytes, change: dict[str, str], extra: list[tuple[str, str]] = ()) -> bytes:  # type: ignore[assignment]
    pairs = parse_qsl(body.decode(), keep_blank_values=True)
    return urlencode([(k, change.get(k, v)) for k, v in pairs] + list(extra), quote_via=quote).encode()


def an_hour(stack: LocalStack, hours: int) -> None:
    """Each test samples in an hour of its own."""
    stack.clock.set(TUESDAY_10 + timedelta(hours=hours))


# ---------------------------------------------------------------- rejected bodies


def test_an_authenticated_malformed_delivery_is_kept_without_its_auth_fields(
    stack: LocalStack, crm: CrmDriver
):
    an_hour(stack, 1)
    body = captured_body(stack, crm, stack.clock())
    if crm.tenant == B24_TENANT:
        # An installed app's delivery also carries OAuth tokens in auth[...].
        extra = [("auth[access_token]", "oauth-access-Xy12"), ("auth[refresh_token]", "oauth-refresh-Zw34")]
        bad = with_pairs(body, {"data[FIELDS][ID]": "abc"}, extra)
        secrets = [stack.secrets["DEMO_B24_APP_TOKEN"], "oauth-access-Xy12", "oauth-refresh-Zw34"]
    else:
        id_key = next(
            k for k, _ in parse_qsl(body.decode()) if k.startswith("leads[") and k.endswith("][id]")
        )
        bad = with_pairs(body, {id_key: "abc"})
        secrets = [stack.secrets["DEMO_AMO_HOOK_SECRET"]]
    before = stack.ctx.store.rejects(crm.tenant)
    status, payload = stack.post_hook(crm.tenant, bad, key=hook_key(stack, crm.tenant))
    assert status == 400 and payload["kept_as"]
    [kept] = [r for r in stack.ctx.store.rejects(crm.tenant) if r not in before]
    assert kept.key.endswith(payload["kept_as"]) and kept.status == 400
    assert b"abc" in kept.body  # what was wrong is there to see
    assert b"auth" not in kept.body and not any(s.encode() in kept.body for s in secrets)
    kept_pairs = dict(parse_qsl(kept.text))
    sent_pairs = dict(parse_qsl(bad.decode()))
    assert kept_pairs == {k: v for k, v in sent_pairs.items() if not k.startswith("auth[")}


def test_a_non_utf8_body_is_kept_as_its_bytes_not_inflated(stack: LocalStack, crm: CrmDriver):
    an_hour(stack, 2)
    body = captured_body(stack, crm, stack.clock())
    # Not UTF-8 (a proxy re-encoded it), yet still the CRM's: the token or the URL's key is there.
    bad = b"\xff\xfe" * 300 + b"&" + body
    status, payload = stack.post_hook(crm.tenant, bad, key=hook_key(stack, crm.tenant))
    assert status == 400 and payload["kept_as"]
    [kept] = [r for r in stack.ctx.store.rejects(crm.tenant) if r.key.endswith(payload["kept_as"])]
    assert kept.body.startswith(b"\xff\xfe" * 300)  # bytes as they came, 1 byte each (3 as text)
    assert len(kept.body) <= len(bad)
    assert kept.text.startswith("\ufffd")  # read as text only when shown


def test_anonymous_or_oversized_deliveries_are_answered_and_logged_never_kept(
    stack: LocalStack, crm: CrmDriver, caplog: pytest.LogCaptureFixture
):
    an_hour(stack, 3)
    caplog.set_level(logging.INFO, logger="leadwatch")
    body = captured_body(stack, crm, stack.clock())
    key = hook_key(stack, crm.tenant)
    before = stack.ctx.store.rejects(crm.tenant)
    attempts: list[tuple[bytes, str | None, int]] = [
        (b"\xff\xfe anonymous garbage [[[", None, 400 if crm.tenant == B24_TENANT else 401),
        (b"x=1&" * (MAX_BODY // 4 + 1), key, 413),  # over the cap even with the right key
    ]
    if crm.tenant == B24_TENANT:
        forged = with_pairs(body, {"auth[application_token]": "forged-token-Pq11", "data[FIELDS][ID]": "abc"})
        attempts += [
            (forged, None, 403),
            (body.replace(b"application_token", b"application_tokex"), None, 401),
        ]
        other_portal = with_pairs(body, {"auth[domain]": "evil.bitrix24.ru", "data[FIELDS][ID]": "abc"})
        attempts.append((other_portal, None, 403))
    else:
        attempts += [(body + b"&%ZZ[[", "wrong-key", 403), (b"\xff\xfe", None, 401)]
    for sent, with_key, expected in attempts:
        status, payload = stack.post_hook(crm.tenant, sent, key=with_key)
        assert status == expected, (sent[:80], status, payload)
        assert "kept_as" not in payload and payload["error"]
    assert stack.ctx.store.rejects(crm.tenant) == before
    lines = [r.getMessage() for r in caplog.records if r.name == "leadwatch.ingress"]
    assert len(lines) == len(attempts)
    assert not any("garbage" in line or "forged" in line or "x=1" in line for line in lines)


def test_kept_rejects_are_sampled_per_tenant_and_hour(stack: LocalStack, crm: CrmDriver):
    an_hour(stack, 4)
    body = captured_body(stack, crm, stack.clock())
    key = hook_key(stack, crm.tenant)
    bad = body + b"&[[=1"  # authenticated, and not a form
    other = AMO_TENANT if crm.tenant == B24_TENANT else B24_TENANT
    others_before = len(stack.ctx.store.rejects(other))
    before = len(stack.ctx.store.rejects(crm.tenant))
    answers = [stack.post_hook(crm.tenant, bad, key=key) for _ in range(KEPT_REJECTS_PER_HOUR + 3)]
    assert all(status == 400 for status, _ in answers)
    assert ["kept_as" in payload for _, payload in answers] == [True] * KEPT_REJECTS_PER_HOUR + [False] * 3
    assert len(stack.ctx.store.rejects(crm.tenant)) == before + KEPT_REJECTS_PER_HOUR
    assert len(stack.ctx.store.rejects(other)) == others_before  # another tenant's sample is its own
    stack.clock.advance(timedelta(hours=1))
    status, payload = stack.post_hook(crm.tenant, bad, key=key)
    assert status == 400 and payload["kept_as"]


# ---------------------------------------------------------------- keys and tokens


def test_an_amocrm_key_with_a_lone_surrogate_is_a_403_not_a_500(stack: LocalStack):
    body = captured_body(stack, AmoDriver(stack.amo), stack.clock())
    for key in ("\ud800", "%ED%A0%80", stack.secrets["DEMO_AMO_HOOK_SECRET"] + "\udfff"):
        response = stack.client.http.post(
            f"/hooks/{AMO_TENANT}?key={key}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=body,
        )
        assert response.status_code == 403, (key, response.body)
        assert b"?key= is wrong" in response.body


def test_a_bitrix24_portal_delivering_through_an_app_and_a_webhook_is_accepted_from_both(stack: LocalStack):
    config = stack.ctx.tenant(B24_TENANT)
    ssm: CountingSsm = stack.ssm  # type: ignore[attr-defined]
    ssm.client.put_parameter(
        Name="/leadwatch/demo-b24/app-token-2", Value="b24-second-token-Hh56", Type="SecureString"
    )
    stack.secrets["B24_SECOND_TOKEN"] = "b24-second-token-Hh56"  # so the DEBUG test looks for it too
    tokens = [config.crm.application_token, SecretRef(ssm="/leadwatch/demo-b24/app-token-2")]
    two = config.model_copy(
        update={"crm": config.crm.model_copy(update={"application_token": tokens, "member_id": "m1"})}
    )
    previous = stack.ctx.registry.put(two)
    stack.ctx._adapters.clear()
    try:
        body = captured_body(stack, BitrixDriver(stack.bitrix), stack.clock())
        assert stack.post_hook(B24_TENANT, body)[0] == 200
        second = with_pairs(body, {"auth[application_token]": "b24-second-token-Hh56"})
        assert stack.post_hook(B24_TENANT, second)[0] == 200
        status, payload = stack.post_hook(B24_TENANT, with_pairs(body, {"auth[member_id]": "m2"}))
        assert status == 403 and "auth[member_id] 'm2' is not this tenant's portal" in payload["error"]
        status, payload = stack.post_hook(B24_TENANT, with_pairs(body, {"auth[domain]": "evil.bitrix24.ru"}))
        assert (
            status == 403
            and "auth[domain] 'evil.bitrix24.ru' is not this tenant's portal" in payload["error"]
        )
    finally:
        stack.ctx.registry.put(previous)
        stack.ctx._adapters.clear()


def test_a_token_rotated_in_ssm_is_used_on_the_services_401_with_one_ssm_call(
    stack: LocalStack, crm: CrmDriver
):
    an_hour(stack, 6)
    ssm: CountingSsm = stack.ssm  # type: ignore[attr-defined]
    config = stack.ctx.tenant(crm.tenant)
    lead = crm.create("Warm before the rotation", "7", stack.clock())
    stack.pump()  # adapter, notifier and secrets are warm: the old values are cached for an hour
    assert crm.intake(lead) is not None
    if crm.tenant == B24_TENANT:
        ref, fake, attribute, new = (
            config.crm.webhook_code,
            stack.bitrix,
            "webhook_code",
            "b24-code-rotated-Nn78",
        )
    else:
        ref, fake, attribute, new = config.crm.access_token, stack.amo, "token", "amo-token-rotated-Rr90"
    old = getattr(fake, attribute)
    bot_old = stack.telegram.token
    try:
        ssm.client.put_parameter(Name=ref.ssm, Value=new, Type="SecureString", Overwrite=True)
        ssm.client.put_parameter(
            Name=config.telegram.bot_token.ssm,
            Value="654321:TELEGRAM-rotated",
            Type="SecureString",
            Overwrite=True,
        )
        setattr(fake, attribute, new)  # the old one is revoked: the CRM answers it 401
        stack.telegram.token = "654321:TELEGRAM-rotated"
        stack.secrets[f"ROTATED_{crm.tenant}"] = new
        calls = len(ssm.calls)
        fake.clear_log()
        late = crm.create("Created after the rotation", "8", stack.clock())
        stack.pump()
        assert crm.intake(late) is not None  # the CRM write went through with the new token
        assert [r.status for r in fake.requests()][:1] == [401]  # the old one was refused once
        assert all(r.status != 401 for r in fake.requests()[1:])
        stack.clock.advance(timedelta(hours=2))
        stack.settle()
        assert crm.verdict(late) is not None
        assert any("Created after the rotation" in m.text for m in stack.telegram.messages)
        # One GetParameters for the CRM's 401 brought the tenant's secrets, the bot token included;
        # Telegram's 401 found it already read within the refresh interval, or read it once more.
        assert 1 <= ssm.calls[calls:].count("GetParameters") <= 2 and len(ssm.calls) - calls <= 2
    finally:
        setattr(fake, attribute, old)
        stack.telegram.token = bot_old
        ssm.client.put_parameter(Name=ref.ssm, Value=old, Type="SecureString", Overwrite=True)
        ssm.client.put_parameter(
            Name=config.telegram.bot_token.ssm, Value=bot_old, Type="SecureString", Overwrite=True
        )
        stack.ctx.secrets = SecretResolver(environ={}, ssm_client=lambda: ssm.client)
        stack.ctx._adapters.clear()
        stack.ctx._notifiers.clear()


# ---------------------------------------------------------------- nothing secret at DEBUG


class Capture(logging.Handler):
    """Every line written, formatted as a plain handler would (message, exception, stack)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.loggers: set[tuple[str, int]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.loggers.add((record.name.split(".")[0], record.levelno))


@pytest.fixture
def everything_at_debug(monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    """The root logger and every logger at DEBUG, one capturing handler where records end up
    (as Lambda's runtime has one on the root logger), and "in Lambda" so leadwatch's own lines
    go out as JSON on stdout too."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "leadwatch-dev-debug")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "DEBUG")
    capture = Capture()
    root = logging.getLogger()
    saved = {
        name: (lg.level, lg.propagate)
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    saved_root = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(capture)
    for existing in logging.root.manager.loggerDict.values():
        if isinstance(existing, logging.Logger):
            existing.setLevel(logging.DEBUG)
            if not existing.propagate:
                existing.addHandler(capture)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(saved_root)
        for name, existing in logging.root.manager.loggerDict.items():
            if isinstance(existing, logging.Logger):
                existing.removeHandler(capture)
                level, _ = saved.get(name, (logging.NOTSET, True))
                existing.setLevel(level)
        logging.getLogger("leadwatch").setLevel(logging.NOTSET)
        observability.guard_secrets()


def test_a_full_flow_at_debug_writes_no_secret_in_any_line(
    stack: LocalStack, everything_at_debug: Capture, capsys: pytest.CaptureFixture[str]
):
    capture = everything_at_debug
    stack.clock.set(TUESDAY_10 + timedelta(days=7))
    stack.telegram.messages.clear()
    ssm: CountingSsm = stack.ssm  # type: ignore[attr-defined]
    stack.ctx.secrets = SecretResolver(environ={}, ssm_client=lambda: ssm.client)  # cold: SSM is read
    stack.ctx._adapters.clear()
    stack.ctx._notifiers.clear()
    reads = len(ssm.calls)
    leads = {}
    for driver in (BitrixDriver(stack.bitrix), AmoDriver(stack.amo)):
        leads[driver.tenant] = (driver, driver.create("Forgotten at DEBUG", "8", stack.clock()))
    stack.pump()
    stack.clock.advance(timedelta(minutes=16))
    stack.settle()
    # The flow ran: both verdicts written, both alerts sent, the secrets read from SSM.
    for driver, lead in leads.values():
        assert driver.verdict(lead) in ("N", "No")
    assert sum("Forgotten at DEBUG" in m.text for m in stack.telegram.messages) == 2
    assert "GetParameters" in ssm.calls[reads:]
    # Its read API too (the key is a header).
    for tenant in (B24_TENANT, AMO_TENANT):
        assert stack.get(f"/tenants/{tenant}/timeliness", {"X-Api-Key": stack.api_key(tenant)})[0] == 200

    # A second net, should a library be let loose again: its lines are masked all the same.
    for name, existing in list(logging.root.manager.loggerDict.items()):
        if isinstance(existing, logging.Logger) and name.split(".")[0] in ("urllib3", "botocore"):
            existing.setLevel(logging.DEBUG)
    stack.ctx.notifier(stack.ctx.tenant(B24_TENANT)).get_me()
    config = stack.ctx.tenant(AMO_TENANT)
    stack.ctx.secrets.refresh(config.crm.access_token, config.secrets().values())
    stack.ctx.adapter(stack.ctx.tenant(B24_TENANT)).call("crm.status.list")
    assert any(line.startswith("urllib3") and "/bot***/getMe" in line for line in capture.lines)
    assert any(line.startswith("urllib3") and "/rest/1/***/crm.status.list" in line for line in capture.lines)
    assert any(
        line.startswith("botocore") and '"Value":"***"' in line.replace(" ", "") for line in capture.lines
    )

    out, err = capsys.readouterr()
    written = capture.lines + out.splitlines() + err.splitlines()
    assert ("pynamodb", logging.DEBUG) in capture.loggers  # the capture really was at DEBUG, beyond leadwatch
    # leadwatch's own lines go out once, as JSON on stdout (Powertools keeps them off the root's handler).
    assert sum('"service":"leadwatch"' in line for line in out.splitlines()) > 10
    secrets = set(stack.secrets.values())
    leaked = [
        (s[:6], line[:200]) for line in written for s in secrets if s in line or quote(s, safe="") in line
    ]
    assert leaked == []
