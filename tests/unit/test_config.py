"""Tenant YAML validation: errors name the file, the key and the problem."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from leadwatch.config import ConfigError, TenantRegistry, load_tenant_file, parse_tenant, scan_tenants
from leadwatch.secrets import SecretMissing, SecretResolver

EXAMPLES = Path(__file__).resolve().parents[2] / "config" / "examples"


def example(name: str = "acme-b24") -> dict:
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def errors_for_text(text: str, source: str = "tenants/acme-b24.yaml") -> str:
    with pytest.raises(ConfigError) as caught:
        parse_tenant(text, source)
    return str(caught.value)


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


# ----------------------------------------------------------------------------- traps in the YAML


def example_text(name: str = "acme-b24", *edits: tuple[str, str]) -> str:
    """An example file as written (times, dates and quotes as a person types them), edited."""
    text = (EXAMPLES / f"{name}.yaml").read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return text


EXAMPLE_B24_TEXT = (EXAMPLES / "acme-b24.yaml").read_text()


def with_dialing(text: str, report_time: str) -> str:
    """The file with its dialing section (the example's, if any, dropped) set to this one line."""
    kept, inside = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("dialing:"):
            inside = True
            continue
        if inside and line[:1] not in (" ", "#", "\n"):
            inside = False
        if not inside:
            kept.append(line)
    return "".join(kept) + f"dialing:\n  report_time: {report_time}\n"


@pytest.mark.parametrize("written", ["18:30", '"18:30"', "'18:30'"])
def test_a_report_time_is_the_same_quoted_or_not(written):
    """YAML 1.1 reads a bare 18:30 as the base-60 number 1110 (once taken for 00:18:30 UTC)."""
    config = parse_tenant(with_dialing(example_text(), written), "acme-b24.yaml")
    assert config.dialing.report_time == time(18, 30)
    assert config.dialing.report_time.tzinfo is None


@pytest.mark.parametrize("written", ["11:00", '"11:00"', "10:30", "09:30"])
def test_a_control_start_is_the_same_quoted_or_not(written):
    """A bare 11:00 once crashed the check itself (a zoned time compared with the closing hours)."""
    text = example_text("acme-b24", ('control_start: "11:00"', f"control_start: {written}"))
    expected = time(*map(int, written.strip('"').split(":")))
    assert parse_tenant(text, "acme-b24.yaml").timeliness.control_start == expected


@given(
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    padded=st.booleans(),
    quote=st.sampled_from(["", '"', "'"]),
)
@settings(max_examples=60, deadline=None)
def test_any_clock_time_reads_alike_however_it_is_written(hour, minute, padded, quote):
    written = f"{hour:02d}:{minute:02d}" if padded else f"{hour}:{minute:02d}"
    config = parse_tenant(with_dialing(EXAMPLE_B24_TEXT, f"{quote}{written}{quote}"), "acme-b24.yaml")
    assert config.dialing.report_time == time(hour, minute)


@pytest.mark.parametrize(
    ("written", "problem"),
    [
        ("1830", "dialing.report_time: 1830 is not a time of day"),
        ("18.5", "dialing.report_time: 18.5 is not a time of day"),
        ("25:00", "dialing.report_time: '25:00' is not a time of day HH:MM"),
        ("18:30:00", "dialing.report_time: '18:30:00' is not a time of day HH:MM"),
        ("!!int 18:30", "dialing.report_time: 1110 is not a time of day"),
    ],
)
def test_a_time_that_is_not_hh_mm_is_named(written, problem):
    assert problem in errors_for_text(with_dialing(EXAMPLE_B24_TEXT, written))


def test_an_impossible_date_is_named_with_file_and_key_and_the_other_files_are_still_checked(tmp_path):
    (tmp_path / "acme-b24.yaml").write_text(example_text("acme-b24", ("2026-12-31", "2026-02-30")))
    (tmp_path / "acme-amo.yaml").write_text(
        example_text("acme-amo", ("timezone: Europe/Moscow", "timezone: Nowhere/Land"))
    )
    (tmp_path / "good-one.yaml").write_text(
        example_text("acme-b24", ("acme-b24", "good-one"), ('"11:00"', "11:00"))
    )
    found = scan_tenants(tmp_path)
    assert found.tenants.keys() == {"good-one"}
    assert len(found.problems) == 2
    dated = next(p for p in found.problems if p.startswith(str(tmp_path / "acme-b24.yaml")))
    assert "calendar.overrides[0].date:" in dated and "Traceback" not in dated
    with pytest.raises(ConfigError) as caught:
        TenantRegistry.from_dir(tmp_path)
    assert "acme-b24.yaml" in str(caught.value) and "acme-amo.yaml" in str(caught.value)


def test_a_key_written_twice_is_named_with_its_line():
    text = with_dialing(EXAMPLE_B24_TEXT, '"18:30"') + '  report_time: "19:00"\n'
    message = errors_for_text(text)
    assert "tenants/acme-b24.yaml: not valid YAML" in message
    assert "key 'report_time' is written twice" in message and "line" in message


def test_a_check_that_trips_names_the_file_instead_of_a_traceback():
    from leadwatch.config import tenant_model

    def tripping(config):
        return config.retention_months < "13"  # a TypeError, as a zoned time once raised

    data = example()
    del data["timeliness"], data["dialing"], data["qc"]  # a model without process sections
    with pytest.raises(ConfigError, match=r"x\.yaml: could not be checked \(TypeError"):
        parse_tenant(yaml.safe_dump(data), "x.yaml", tenant_model([], [tripping]))


def test_an_unknown_holiday_subdivision_is_named():
    data = example()
    data["calendar"]["subdivision"] = "XX"
    assert "calendar.subdivision: python-holidays has no subdivision 'XX' of RU" in errors_for(data)
    data["calendar"].update(country="US", subdivision="CA")
    assert parse_tenant(yaml.safe_dump(data), "acme-b24.yaml").calendar.subdivision == "CA"


# ----------------------------------------------------------------------------- which files


def test_yml_files_are_tenants_too(tmp_path):
    (tmp_path / "acme-b24.yml").write_text(EXAMPLE_B24_TEXT)
    (tmp_path / "acme-amo.yaml").write_text((EXAMPLES / "acme-amo.yaml").read_text())
    (tmp_path / "notes.txt").write_text("not a tenant")
    assert TenantRegistry.from_dir(tmp_path).ids() == ["acme-amo", "acme-b24"]


def test_a_tenant_defined_twice_across_yaml_and_yml_is_refused(tmp_path):
    (tmp_path / "acme-b24.yaml").write_text(EXAMPLE_B24_TEXT)
    (tmp_path / "acme-b24.yml").write_text(EXAMPLE_B24_TEXT)
    with pytest.raises(ConfigError) as caught:
        TenantRegistry.from_dir(tmp_path)
    assert f"{tmp_path / 'acme-b24.yml'}: tenant 'acme-b24' is already defined by" in str(caught.value)
    assert str(tmp_path / "acme-b24.yaml") in str(caught.value)


def test_one_file_or_a_directory_can_be_scanned(tmp_path):
    (tmp_path / "acme-b24.yaml").write_text(EXAMPLE_B24_TEXT)
    assert scan_tenants(tmp_path / "acme-b24.yaml").tenants.keys() == {"acme-b24"}
    assert scan_tenants(tmp_path).tenants.keys() == {"acme-b24"}
    assert scan_tenants(tmp_path / "missing.yaml").problems == [
        f"{tmp_path / 'missing.yaml'}: no such file or directory"
    ]
    (tmp_path / "acme.json").write_text("{}")
    assert "not a tenant file" in scan_tenants(tmp_path / "acme.json").problems[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert scan_tenants(empty).files == [] and scan_tenants(empty).problems == []


def test_the_functions_load_tenants_through_the_same_rules(tmp_path, monkeypatch):
    """The deployed functions' context reads the directory check-config reads, with its loader."""
    from leadwatch.context import build_from_environment
    from leadwatch.store.models import bind

    (tmp_path / "acme-b24.yml").write_text(
        with_dialing(EXAMPLE_B24_TEXT.replace('"11:00"', "11:00"), "18:30")
    )
    monkeypatch.setenv("LEADWATCH_TENANTS_DIR", str(tmp_path))
    try:
        config = build_from_environment().registry.get("acme-b24")
        assert config is not None and config.dialing.report_time == time(18, 30)
        (tmp_path / "acme-b24.yaml").write_text(EXAMPLE_B24_TEXT)
        with pytest.raises(ConfigError, match="already defined by"):
            build_from_environment()
    finally:
        bind(host=None, region="eu-central-1")


# ----------------------------------------------------------------------------- secret references


@pytest.mark.parametrize(
    ("where", "name"),
    [
        (("crm", "webhook_code"), "/other/webhook-code"),
        (("crm", "webhook_code"), "/leadwatch/acme-amo/webhook-code"),  # another tenant's
        (("telegram", "bot_token"), "/leadwatch/acme-b24/"),
        (("telegram", "bot_token"), "/leadwatch/acme-b24//token"),
        (("api_key",), "/leadwatch/acme-b24/key with space"),
    ],
)
def test_an_ssm_name_outside_the_tenants_own_path_is_refused_with_the_key(where, name):
    data = example()
    target = data
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = {"ssm": name}
    message = errors_for(data)
    assert f"{'.'.join(where)}: SSM parameter {name!r} is not one of this tenant's" in message
    assert "/leadwatch/acme-b24/<name>" in message


def test_an_ssm_name_in_a_token_list_is_checked_too():
    data = example()
    data["crm"]["application_token"] = [{"ssm": "/leadwatch/acme-b24/a"}, {"ssm": "/elsewhere/b"}]
    assert "crm.application_token: [1]: SSM parameter '/elsewhere/b'" in errors_for(data)
