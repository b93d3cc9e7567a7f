"""SecretResolver against moto's SSM (in-process), with every SSM request counted.

A tenant's SSM secrets come in one GetParameters call (10 names a call at most) and are cached
for an hour; a failed refresh keeps the last value and asks again 30 s later; a service that
refuses a secret (HTTP 401) makes it be read again, at most once per 30 s per tenant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError
from moto import mock_aws

from crm_adapters.base import CrmRejected, CrmUnavailable
from leadwatch import redaction
from leadwatch.config import SecretRef, TenantConfig, parse_tenant
from leadwatch.secrets import (
    DEFAULT_TTL,
    REFRESH_INTERVAL,
    RETRY_AFTER,
    Secret,
    SecretMissing,
    SecretResolver,
    TenantSecrets,
    same_secret,
    ttl_from,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "acme-b24.yaml"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingSsm:
    """moto's SSM client, counting requests by operation; `down` answers like a throttled SSM."""

    def __init__(self, client: Any):
        self.client = client
        self.calls: Counter[str] = Counter()
        self.names: list[list[str]] = []
        self.down = False

    def get_parameters(self, **kwargs: Any) -> dict[str, Any]:
        self.calls["GetParameters"] += 1
        self.names.append(list(kwargs["Names"]))
        assert kwargs["WithDecryption"] is True and len(kwargs["Names"]) <= 10
        if self.down:
            error = {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}
            raise ClientError(error, "GetParameters")  # type: ignore[arg-type]
        return self.client.get_parameters(**kwargs)

    def total(self) -> int:
        return sum(self.calls.values())


@pytest.fixture
def ssm() -> Iterator[CountingSsm]:
    with mock_aws():
        yield CountingSsm(boto3.client("ssm", region_name="eu-central-1"))


def put(ssm: CountingSsm, name: str, value: str) -> None:
    ssm.client.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=True)


def tenant(name: str = "acme-b24", tokens: int = 1) -> TenantConfig:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["tenant"] = name
    refs = [{"ssm": f"/leadwatch/{name}/application-token-{n}"} for n in range(tokens)]
    data["crm"]["application_token"] = refs[0] if tokens == 1 else refs
    data["crm"]["webhook_code"] = {"ssm": f"/leadwatch/{name}/webhook-code"}
    data["telegram"]["bot_token"] = {"ssm": f"/leadwatch/{name}/bot-token"}
    data["api_key"] = {"ssm": f"/leadwatch/{name}/api-key"}
    return parse_tenant(yaml.safe_dump(data), f"{name}.yaml")


def put_all(ssm: CountingSsm, config: TenantConfig, prefix: str = "v1") -> None:
    for ref in config.secrets().values():
        assert ref.ssm is not None
        put(ssm, ref.ssm, f"{prefix}:{ref.ssm}")


def resolver(ssm: CountingSsm, clock: FakeClock, **kwargs: Any) -> SecretResolver:
    return SecretResolver(environ={}, ssm_client=lambda: ssm, clock=clock, **kwargs)


def test_the_default_ttl_is_an_hour_and_a_deployment_may_set_its_own():
    assert DEFAULT_TTL == 3600
    assert ttl_from({}) == 3600 and ttl_from({"LEADWATCH_SECRETS_TTL_SECONDS": "600"}) == 600
    for bad in ("soon", "-1", "100000"):
        with pytest.raises(ValueError, match="LEADWATCH_SECRETS_TTL_SECONDS"):
            ttl_from({"LEADWATCH_SECRETS_TTL_SECONDS": bad})


def test_a_tenants_secrets_come_one_call_per_kind_and_are_cached_for_the_ttl(ssm):
    # One call per kind of secret, not one for all: each function may read only the kinds it
    # uses (leadwatch.iam), and a name it may not read would fail the whole GetParameters.
    config, clock = tenant(), FakeClock()
    put_all(ssm, config)
    secrets = resolver(ssm, clock).for_tenant(config)
    assert secrets(config.crm.webhook_code) == f"v1:{config.crm.webhook_code.ssm}"
    assert ssm.names == [[config.crm.webhook_code.ssm]]  # the CRM client's kind only
    for ref in config.secrets().values():
        assert secrets(ref) == f"v1:{ref.ssm}"
    assert ssm.calls == {"GetParameters": 4} and sorted(map(len, ssm.names)) == [1, 1, 1, 1]
    clock.now += DEFAULT_TTL - 1
    assert all(secrets(ref) == f"v1:{ref.ssm}" for ref in config.secrets().values())
    assert ssm.total() == 4  # no SSM read per request
    put_all(ssm, config, "v2")  # rotated in SSM
    clock.now += 1
    assert all(secrets(ref) == f"v2:{ref.ssm}" for ref in config.secrets().values())
    assert ssm.total() == 8  # expired, read again, a call per kind


def test_a_cold_reconciliation_costs_one_call_per_kind_not_one_per_secret(ssm):
    configs = [tenant(f"t{n:03d}") for n in range(50)]
    for config in configs:
        put_all(ssm, config)
    shared = resolver(ssm, FakeClock())
    for config in configs:  # what reconcile and the sweep resolve per tenant
        secrets = shared.for_tenant(config)
        secrets(config.crm.webhook_code)
        secrets(config.telegram.bot_token)
    assert ssm.total() == 100  # the CRM's kind and Telegram's: 200 with one GetParameter per secret


def test_the_tokens_of_a_kind_come_in_one_call(ssm):
    config, clock = tenant(tokens=8), FakeClock()  # 8 application tokens (webhook) + 3 others
    put_all(ssm, config)
    secrets = resolver(ssm, clock).for_tenant(config)
    first = config.crm.application_tokens[0]
    assert secrets(first) == f"v1:{first.ssm}"
    assert [len(names) for names in ssm.names] == [8]
    for ref in config.secrets().values():
        secrets(ref)
    assert ssm.total() == 4  # + the CRM's, Telegram's and the API key's kinds


def test_a_refresh_reads_the_tenants_secrets_again_at_most_every_30_seconds(ssm):
    config, clock = tenant(), FakeClock()
    put_all(ssm, config)
    secrets = resolver(ssm, clock).for_tenant(config)
    token = config.telegram.bot_token
    assert secrets(token).startswith("v1:") and ssm.total() == 1
    put_all(ssm, config, "v2")  # the token was rotated: Telegram answers 401 to the old one
    assert secrets.refresh(token).startswith("v2:") and ssm.total() == 2
    assert secrets(config.crm.webhook_code).startswith("v2:") and ssm.total() == 3  # its own kind: read now
    clock.now += REFRESH_INTERVAL - 1
    assert secrets.refresh(token).startswith("v2:") and ssm.total() == 3  # a wrong token in SSM too
    clock.now += 1
    secrets.refresh(token)
    assert ssm.total() == 4


def test_a_failed_refresh_keeps_the_last_value_and_asks_again_later(ssm):
    config, clock = tenant(), FakeClock()
    put_all(ssm, config)
    secrets = resolver(ssm, clock).for_tenant(config)
    ref = config.crm.webhook_code
    assert secrets(ref).startswith("v1:")
    ssm.down = True
    clock.now += DEFAULT_TTL
    assert secrets(ref).startswith("v1:") and ssm.total() == 2
    clock.now += RETRY_AFTER - 1
    assert secrets(ref).startswith("v1:") and ssm.total() == 2  # not hammering SSM while it is down
    clock.now += 1
    assert secrets(ref).startswith("v1:") and ssm.total() == 3
    ssm.down = False
    put_all(ssm, config, "v2")
    clock.now += RETRY_AFTER
    assert secrets(ref).startswith("v2:") and ssm.total() == 4


def test_a_secret_never_read_fails_with_its_name_and_not_a_value(ssm):
    config, clock = tenant(), FakeClock()
    put(ssm, config.telegram.bot_token.ssm or "", "only-this-one")
    secrets = resolver(ssm, clock).for_tenant(config)
    with pytest.raises(SecretMissing) as caught:
        secrets(config.crm.webhook_code)
    assert config.crm.webhook_code.ssm in str(caught.value) and "ParameterNotFound" in str(caught.value)
    assert secrets(config.telegram.bot_token) == "only-this-one"  # another kind: read on its own
    assert ssm.total() == 2
    # A misconfigured tenant does not cost an SSM call per request: asked again 30 s later.
    with pytest.raises(SecretMissing, match="ParameterNotFound"):
        secrets(config.crm.webhook_code)
    assert ssm.total() == 2
    put(ssm, config.crm.webhook_code.ssm or "", "added-since")
    clock.now += RETRY_AFTER
    assert secrets(config.crm.webhook_code) == "added-since" and ssm.total() == 3
    ssm.down = True
    with pytest.raises(SecretMissing, match="ThrottlingException"):
        resolver(ssm, clock)(config.crm.webhook_code)


def test_environment_secrets_follow_the_same_cache_and_every_value_is_masked_in_logs():
    environ = {"TOKEN": "one-value"}
    clock = FakeClock()
    secrets = SecretResolver(environ=environ, clock=clock, ttl=10)
    assert secrets(SecretRef(env="TOKEN")) == "one-value"
    environ["TOKEN"] = "two-value"
    clock.now += 9
    assert secrets(SecretRef(env="TOKEN")) == "one-value"
    clock.now += 1
    assert secrets(SecretRef(env="TOKEN")) == "two-value"
    assert secrets.known_values() == ["two-value"]
    assert redaction.redact("a two-value and a one-value") == "a *** and a ***"


class Service:
    """A service that accepts one token and answers 401 to any other."""

    def __init__(self, accepted: str):
        self.accepted = accepted
        self.seen: list[str] = []

    def __call__(self, token: str) -> str:
        self.seen.append(token)
        if token != self.accepted:
            raise CrmRejected("HTTP 401 Unauthorized", status=401)
        return "ok"


def test_a_401_reads_the_secret_again_and_tries_once_more_with_the_new_value():
    environ = {"TOKEN": "old-token"}
    clock = FakeClock()
    ref = SecretRef(env="TOKEN")
    secret = Secret(TenantSecrets(SecretResolver(environ=environ, clock=clock), ((ref,),)), ref)
    assert secret.call(Service("old-token")) == "ok"
    environ["TOKEN"] = "new-token"  # rotated; the cache still holds the old one for an hour
    service = Service("new-token")
    assert secret.call(service) == "ok" and service.seen == ["old-token", "new-token"]
    # Still refused after the re-read (the new value is wrong too): not tried a third time.
    clock.now += REFRESH_INTERVAL
    stubborn = Service("third-token")
    with pytest.raises(CrmRejected):
        secret.call(stubborn)
    assert stubborn.seen == ["new-token"]
    # A resolver that cannot re-read: the 401 stands.
    with pytest.raises(CrmRejected):
        Secret(lambda _ref: "old-token", ref).call(Service("new-token"))

    def down(token: str) -> str:
        raise CrmUnavailable("HTTP 503", status=503)

    with pytest.raises(CrmUnavailable):  # only a 401 is worth a re-read
        secret.call(down)


def test_secrets_compare_in_constant_time_and_a_lone_surrogate_is_just_wrong():
    assert same_secret("abc", "abc") and not same_secret("abd", "abc")
    assert not same_secret("\ud800", "abc") and not same_secret("a\udfffc", "abc")
