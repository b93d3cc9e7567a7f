"""Tenant YAML validation: errors name the file, the key and the problem."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest
import yaml

from leadwatch.config import ConfigError, TenantRegistry, load_tenant_file, parse_tenant
from leadwatch.secrets import SecretMissing, SecretResolver

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


def example(name: str = "acme-b24") -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def errors_for(data: dict, source: str = "tenants/acme-b24.yaml") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_tenant(yaml.safe_dump(data), source)
    return str(caught.value)


@pytest.mark.parametrize("name", ["acme-b24", "acme-amo"])
def test_the_examples_are_valid(name):
    config = load_tenant_file(EXAMPLES / f"{name}.yaml")
    assert config.tenant == name
    assert config.timeliness.control_start == time(11, 0)


def test_defaults_from_the_domain():
    data = example()
    del data["timeliness"]["control_start"], data["timeliness"]["reaction_minutes"]
    config = parse_tenant(yaml.safe_dump(data), "x.yaml")
    assert config.timeliness.control_start == time(11, 0)
    assert config.timeliness.reaction_minutes == 15
    assert config.calendar.pre_holiday_minutes() == 60  # RU


def test_a_secret_written_in_the_file_is_refused_with_where_to_put_it():
    data = example()
    data["crm"]["webhook_code"] = "abc123secret"
    message = errors_for(data)
    assert "tenants/acme-b24.yaml" in message
    assert "crm.webhook_code" in message
    assert "{env: VARIABLE_NAME}" in message
    assert "abc123secret" not in message


def test_missing_key_and_unknown_key_are_named():
    data = example()
    del data["timeliness"]["verdict_field"]
    data["timeliness"]["reaction_minuts"] = 10
    message = errors_for(data)
    assert "timeliness.verdict_field: required key is missing" in message
    assert "timeliness.reaction_minuts: unknown key" in message


def test_bad_hours_are_named_with_the_day_and_index():
    data = example()
    data["calendar"]["hours"]["tue"] = ["09:00-13:00", "12:00-18:00"]
    data["calendar"]["hours"]["wed"] = ["9am-5pm"]
    message = errors_for(data)
    assert "calendar.hours.tue" in message and "overlap" in message
    assert "calendar.hours.wed[0]" in message and "'9am-5pm'" in message


def test_unknown_zone_and_country():
    data = example()
    data["calendar"]["timezone"] = "Moscow"
    data["calendar"]["country"] = "XX"
    message = errors_for(data)
    assert "calendar.timezone: unknown time zone 'Moscow'" in message
    assert "calendar.country" in message and "'XX'" in message


def test_wrong_crm_kind_is_named():
    data = example()
    data["crm"]["kind"] = "salesforce"
    assert "crm" in errors_for(data) and "salesforce" in errors_for(data)


def test_override_consistency():
    data = example()
    data["calendar"]["overrides"] = [{"date": "2026-01-02", "kind": "short"}]
    assert "calendar.overrides[0]: a short day needs 'hours' or 'shorten_minutes'" in errors_for(data)


def test_not_yaml_and_not_a_mapping():
    with pytest.raises(ConfigError, match=r"t\.yaml: not valid YAML"):
        parse_tenant("a: [1, 2", "t.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_tenant("- 1\n- 2\n", "t.yaml")


def test_tenant_must_match_file_name(tmp_path):
    data = example()
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="must match the file name"):
        load_tenant_file(tmp_path / "other.yaml")


def test_registry_reports_every_bad_file_at_once(tmp_path):
    good = example()
    (tmp_path / "acme-b24.yaml").write_text(yaml.safe_dump(good))
    bad = example("acme-amo")
    bad["calendar"]["timezone"] = "Nowhere/Land"
    (tmp_path / "acme-amo.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "broken.yaml").write_text("tenant: [")
    with pytest.raises(ConfigError) as caught:
        TenantRegistry.from_dir(tmp_path)
    assert "acme-amo.yaml" in str(caught.value) and "broken.yaml" in str(caught.value)
    bad["calendar"]["timezone"] = "Europe/Moscow"
    (tmp_path / "acme-amo.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "broken.yaml").unlink()
    assert TenantRegistry.from_dir(tmp_path).ids() == ["acme-amo", "acme-b24"]


def test_secrets_resolve_from_env_and_name_the_missing_one():
    config = parse_tenant(yaml.safe_dump(example("acme-amo")), "x.yaml")
    resolver = SecretResolver(environ={"ACME_AMO_TELEGRAM_TOKEN": "123:abc"})
    assert resolver(config.telegram.bot_token) == "123:abc"
    with pytest.raises(SecretMissing, match="ACME_AMO_API_KEY"):
        resolver(config.api_key)


def test_secrets_resolve_from_ssm():
    from moto import mock_aws

    with mock_aws():
        import boto3

        ssm = boto3.client("ssm", region_name="eu-central-1")
        ssm.put_parameter(Name="/leadwatch/acme-b24/webhook-code", Value="s3cret", Type="SecureString")
        config = parse_tenant(yaml.safe_dump(example()), "x.yaml")
        resolver = SecretResolver(environ={}, ssm_client=lambda: ssm)
        assert resolver(config.crm.webhook_code) == "s3cret"
        with pytest.raises(SecretMissing) as caught:
            resolver(config.crm.application_token)
        assert "/leadwatch/acme-b24/application-token" in str(caught.value)


def test_bitrix24_takes_one_application_token_or_a_list_and_an_optional_member_id():
    data = example()
    config = parse_tenant(yaml.safe_dump(data), "x.yaml")
    assert config.crm.application_tokens == [config.crm.application_token]
    assert config.crm.member_id is None and config.crm.portal_domain == "acme.bitrix24.ru"
    tokens = [{"ssm": "/leadwatch/acme-b24/app-token"}, {"ssm": "/leadwatch/acme-b24/webhook-token"}]
    data["crm"].update(application_token=tokens, member_id=123)
    config = parse_tenant(yaml.safe_dump(data), "x.yaml")
    assert [ref.ssm for ref in config.crm.application_tokens] == [t["ssm"] for t in tokens]
    assert config.crm.member_id == "123"
    # Every token is a secret of the tenant (read with the others, scoped in IAM).
    assert {k: v.ssm for k, v in config.secrets().items() if k.startswith("crm.application")} == {
        "crm.application_token[0]": tokens[0]["ssm"],
        "crm.application_token[1]": tokens[1]["ssm"],
    }


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ([], "crm.application_token: give at least one application token"),
        ([{"env": "A"}, {"env": "A"}], "crm.application_token: an application token is listed twice"),
        ([{"env": f"T{n}"} for n in range(11)], "crm.application_token: give at most 10 application tokens"),
        ([{"env": "A"}, "b24-literal-token"], "crm.application_token: [1]: a secret must not be written"),
        ([{"env": "A"}, {"envv": "B"}], "crm.application_token: [1]: envv: unknown key"),
        ({"env": "A", "ssm": "/b"}, "crm.application_token: give exactly one of 'env' or 'ssm'"),
    ],
    ids=["empty", "twice", "eleven", "literal", "typo", "both"],
)
def test_a_wrong_application_token_list_is_named_once(tokens, message):
    data = example()
    data["crm"]["application_token"] = tokens
    errors = errors_for(data)
    assert message in errors and "b24-literal-token" not in errors
    assert len(errors.splitlines()) == 2  # one line per problem, not one per form a token may take


def test_control_start_after_every_closing_is_refused():
    data = example()
    data["timeliness"]["control_start"] = "19:00"
    assert "control_start 19:00 is at or after the latest closing time 18:00" in errors_for(data)
