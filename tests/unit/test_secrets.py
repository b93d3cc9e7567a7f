"""SecretResolver's cache: a secret rotated in SSM reaches a warm Lambda within the TTL
(5 minutes by default), without an SSM read per request, and a failed refresh keeps the
last value instead of failing the request."""

from __future__ import annotations

from typing import Any

import pytest

from leadwatch.config import SecretRef
from leadwatch.secrets import DEFAULT_TTL, RETRY_AFTER, SecretMissing, SecretResolver

NAME = "/leadwatch/acme-b24/webhook-code"
REF = SecretRef(ssm=NAME)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSsm:
    """get_parameter over a dict; `down` makes every call fail like a throttled SSM."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.calls = 0
        self.down = False

    def get_parameter(self, Name: str, WithDecryption: bool) -> dict[str, Any]:
        assert WithDecryption
        self.calls += 1
        if self.down:
            error = Exception("throttled")
            error.response = {"Error": {"Code": "ThrottlingException"}}  # type: ignore[attr-defined]
            raise error
        if Name not in self.values:
            error = Exception("not found")
            error.response = {"Error": {"Code": "ParameterNotFound"}}  # type: ignore[attr-defined]
            raise error
        return {"Parameter": {"Name": Name, "Value": self.values[Name]}}


def resolver(ssm: FakeSsm, clock: FakeClock, **kwargs: Any) -> SecretResolver:
    return SecretResolver(environ={}, ssm_client=lambda: ssm, clock=clock, **kwargs)


def test_the_default_ttl_is_five_minutes():
    assert DEFAULT_TTL == 300


def test_a_rotated_secret_is_read_again_once_the_ttl_has_passed():
    ssm, clock = FakeSsm({NAME: "old-code"}), FakeClock()
    secrets = resolver(ssm, clock)
    assert secrets(REF) == "old-code"
    ssm.values[NAME] = "new-code"  # rotated in SSM
    clock.now += DEFAULT_TTL - 1
    assert secrets(REF) == "old-code"  # still cached: no SSM read per request
    assert ssm.calls == 1
    clock.now += 1
    assert secrets(REF) == "new-code"
    assert ssm.calls == 2
    clock.now += DEFAULT_TTL - 1
    assert secrets(REF) == "new-code" and ssm.calls == 2


def test_a_failed_refresh_keeps_the_last_value_and_asks_again_later():
    ssm, clock = FakeSsm({NAME: "code"}), FakeClock()
    secrets = resolver(ssm, clock)
    assert secrets(REF) == "code"
    ssm.down = True
    clock.now += DEFAULT_TTL
    assert secrets(REF) == "code"
    assert ssm.calls == 2
    clock.now += RETRY_AFTER - 1
    assert secrets(REF) == "code" and ssm.calls == 2  # not hammering SSM while it is down
    clock.now += 1
    assert secrets(REF) == "code" and ssm.calls == 3
    ssm.down = False
    ssm.values[NAME] = "rotated"
    clock.now += RETRY_AFTER
    assert secrets(REF) == "rotated" and ssm.calls == 4


def test_a_secret_never_read_fails_with_its_name_and_not_a_value():
    ssm, clock = FakeSsm({}), FakeClock()
    with pytest.raises(SecretMissing) as caught:
        resolver(ssm, clock)(REF)
    assert NAME in str(caught.value) and "ParameterNotFound" in str(caught.value)


def test_a_custom_ttl_and_environment_secrets_follow_the_same_cache():
    environ = {"TOKEN": "one"}
    clock = FakeClock()
    secrets = SecretResolver(environ=environ, clock=clock, ttl=10)
    assert secrets(SecretRef(env="TOKEN")) == "one"
    environ["TOKEN"] = "two"
    clock.now += 9
    assert secrets(SecretRef(env="TOKEN")) == "one"
    clock.now += 1
    assert secrets(SecretRef(env="TOKEN")) == "two"
    assert secrets.known_values() == ["two"]
