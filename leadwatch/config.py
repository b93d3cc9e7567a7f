"""Per-tenant configuration: one YAML file per tenant, validated with messages
that name the file, the key and the problem.

Secrets are never in the file: a secret is named by reference,
`{env: NAME}` or `{ssm: /parameter/name}`, and resolved by `leadwatch.secrets`.
"""

from __future__ import annotations

import re
from datetime import date, time
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_INTERVAL = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


class ConfigError(Exception):
    """A tenant file is missing, unreadable or invalid. The message is for a human."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """Where a secret lives: an environment variable or an SSM parameter."""

    env: str | None = None
    ssm: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_a_literal(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "a secret must not be written in the file; name where it lives: "
                "{env: VARIABLE_NAME} or {ssm: /parameter/name}"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if (self.env is None) == (self.ssm is None):
            raise ValueError("give exactly one of 'env' or 'ssm'")
        return self

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"SSM parameter {self.ssm}"


def _parse_clock(text: str) -> time:
    hours, _, minutes = text.partition(":")
    try:
        value = time(int(hours), int(minutes))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a time of day HH:MM") from exc
    return value


class Interval(_Strict):
    start: time
    end: time

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _INTERVAL.match(value.strip())
            if not match:
                raise ValueError(f"{value!r} is not an interval like '09:00-13:00'")
            h1, m1, h2, m2 = (int(g) for g in match.groups())
            if h2 == 24 and m2 == 0:
                raise ValueError(f"{value!r}: end a day at 23:59, not 24:00")
            try:
                return {"start": time(h1, m1), "end": time(h2, m2)}
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an interval like '09:00-13:00'") from exc
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if self.end <= self.start:
            raise ValueError(f"interval {self.start:%H:%M}-{self.end:%H:%M} ends before it starts")
        return self


def _check_intervals(intervals: list[Interval]) -> list[Interval]:
    ordered = sorted(intervals, key=lambda i: i.start)
    for before, after in pairwise(ordered):
        if after.start < before.end:
            raise ValueError(
                f"intervals {before.start:%H:%M}-{before.end:%H:%M} and "
                f"{after.start:%H:%M}-{after.end:%H:%M} overlap"
            )
    return ordered


Intervals = Annotated[list[Interval], Field(default_factory=list)]


class WeeklyHours(_Strict):
    mon: Intervals
    tue: Intervals
    wed: Intervals
    thu: Intervals
    fri: Intervals
    sat: Intervals
    sun: Intervals

    _sorted = field_validator(*WEEKDAYS)(_check_intervals)

    def for_weekday(self, weekday: int) -> list[Interval]:
        return list(getattr(self, WEEKDAYS[weekday]))

    @model_validator(mode="after")
    def _some_working_time(self) -> WeeklyHours:
        if not any(getattr(self, day) for day in WEEKDAYS):
            raise ValueError("no working hours on any weekday")
        return self


class DateOverride(_Strict):
    """A dated exception to the weekly hours.

    holiday: not a working day. working: a working day (hours default to the
    hours of an ordinary weekday of the same name, else Monday's). short: a
    working day with other hours, or with `shorten_minutes` cut from its end.
    """

    date: date
    kind: Literal["holiday", "working", "short"]
    hours: list[Interval] | None = None
    shorten_minutes: int | None = Field(default=None, ge=1, le=12 * 60)

    @field_validator("hours")
    @classmethod
    def _sorted(cls, value: list[Interval] | None) -> list[Interval] | None:
        return None if value is None else _check_intervals(value)

    @model_validator(mode="after")
    def _consistent(self) -> DateOverride:
        if self.kind == "holiday" and (self.hours or self.shorten_minutes):
            raise ValueError("a holiday has no hours and nothing to shorten")
        if self.kind == "short" and not self.hours and not self.shorten_minutes:
            raise ValueError("a short day needs 'hours' or 'shorten_minutes'")
        if self.hours is not None and self.shorten_minutes is not None:
            raise ValueError("give 'hours' or 'shorten_minutes', not both")
        return self


class CalendarConfig(_Strict):
    timezone: str
    country: str | None = Field(default=None, description="python-holidays country code, e.g. RU")
    subdivision: str | None = None
    hours: WeeklyHours
    # Russian Labour Code art. 95: the last working day before a public holiday is one hour
    # shorter. None means the country's rule: 60 minutes for RU and BY, else 0.
    pre_holiday_shortening_minutes: int | None = Field(default=None, ge=0, le=240)
    overrides: list[DateOverride] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like Europe/Moscow)") from exc
        return value

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        if value is None:
            return None
        import holidays

        if value.upper() not in holidays.list_supported_countries():
            raise ValueError(f"python-holidays has no calendar for country {value!r}")
        return value.upper()

    @field_validator("overrides")
    @classmethod
    def _unique_dates(cls, value: list[DateOverride]) -> list[DateOverride]:
        seen: set[date] = set()
        for item in value:
            if item.date in seen:
                raise ValueError(f"date {item.date} is overridden twice")
            seen.add(item.date)
        return value

    def pre_holiday_minutes(self) -> int:
        if self.pre_holiday_shortening_minutes is not None:
            return self.pre_holiday_shortening_minutes
        return 60 if self.country in {"RU", "BY"} else 0


class Bitrix24Config(_Strict):
    kind: Literal["bitrix24"]
    base_url: str = Field(description="portal URL, e.g. https://acme.bitrix24.ru")
    webhook_user_id: int = Field(ge=1)
    webhook_code: SecretRef
    application_token: SecretRef
    entities: list[Literal["lead", "deal"]] = Field(default_factory=lambda: ["lead"], min_length=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class AmoCrmConfig(_Strict):
    kind: Literal["amocrm"]
    base_url: str = Field(description="account URL, e.g. https://acme.amocrm.ru")
    access_token: SecretRef = Field(description="long-lived token of a private integration")
    hook_secret: SecretRef = Field(description="secret carried in the webhook URL as ?key=")
    account_id: str | None = Field(default=None, description="if set, webhooks must carry this account[id]")

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("account_id", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


class VerdictValues(_Strict):
    yes: str | int | bool = "Y"
    no: str | int | bool = "N"

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 reads the bare keys `yes:` and `no:` as booleans.
        if isinstance(value, dict):
            return {
                ({True: "yes", False: "no"}.get(k, k) if isinstance(k, bool) else k): v
                for k, v in value.items()
            }
        return value


class TimelinessConfig(_Strict):
    enabled: bool = True
    control_start: time = time(11, 0)
    reaction_minutes: int = Field(default=15, ge=1, le=24 * 60)
    unprocessed_stages: list[str] = Field(min_length=1)
    intake_field: str = Field(description="CRM field id that receives the intake timestamp")
    verdict_field: str = Field(description="CRM field id that receives the on-time verdict")
    verdict_values: VerdictValues = Field(default_factory=VerdictValues)
    # An activity (call, e-mail, comment) by the responsible manager counts as processing.
    activity_counts_as_processed: bool = True

    @field_validator("control_start", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> Any:
        return _parse_clock(value) if isinstance(value, str) else value

    @field_validator("unprocessed_stages", mode="before")
    @classmethod
    def _stage_text(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("intake_field", "verdict_field", mode="before")
    @classmethod
    def _field_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class DialingConfig(_Strict):
    """Dialing discipline (DOMAIN.md section 2): the plan every new lead is dialed by."""

    enabled: bool = True
    attempts_per_day: int = Field(default=3, ge=1, le=50)
    plan_days: int = Field(default=5, ge=1, le=60, description="working days from intake")
    min_attempts_before_rejection: int = Field(default=15, ge=0, le=1000)
    touch_seconds: int = Field(
        default=30, ge=0, le=3600, description="a call longer than this is a successful touch"
    )
    report_time: time = time(18, 30)
    # None: the CRM's own rejected/closed stages (Bitrix24 JUNK / CONVERTED, amoCRM 143 / 142).
    rejected_stages: list[str] | None = Field(default=None, min_length=1)
    closed_stages: list[str] | None = None

    @field_validator("report_time", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> Any:
        return _parse_clock(value) if isinstance(value, str) else value

    @field_validator("rejected_stages", "closed_stages", mode="before")
    @classmethod
    def _stage_text(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value


# Stages every account has: Bitrix24's lead statuses, amoCRM's fixed "lost" and "won" in each pipeline.
DEFAULT_REJECTED_STAGES = {"bitrix24": ["JUNK"], "amocrm": ["143"]}
DEFAULT_CLOSED_STAGES = {"bitrix24": ["CONVERTED"], "amocrm": ["142"]}


class TelegramConfig(_Strict):
    chat_id: str
    bot_token: SecretRef
    api_base: str = "https://api.telegram.org"

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("api_base")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class TenantConfig(_Strict):
    tenant: str
    crm: Annotated[Bitrix24Config | AmoCrmConfig, Field(discriminator="kind")]
    calendar: CalendarConfig
    timeliness: TimelinessConfig
    dialing: DialingConfig = Field(default_factory=DialingConfig)
    telegram: TelegramConfig
    api_key: SecretRef | None = Field(default=None, description="key for the read API")
    managers: dict[str, str] = Field(default_factory=dict, description="CRM user id -> display name")

    @field_validator("tenant")
    @classmethod
    def _tenant_id(cls, value: str) -> str:
        if not _TENANT_ID.match(value):
            raise ValueError(f"{value!r}: use 2-63 lowercase letters, digits and dashes")
        return value

    @field_validator("managers", mode="before")
    @classmethod
    def _manager_keys(cls, value: Any) -> Any:
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _control_start_reachable(self) -> TenantConfig:
        closes = [iv.end for day in WEEKDAYS for iv in getattr(self.calendar.hours, day)]
        if closes and self.timeliness.control_start >= max(closes):
            raise ValueError(
                f"timeliness.control_start {self.timeliness.control_start:%H:%M} is at or after the latest "
                f"closing time {max(closes):%H:%M}: carried-over leads would never be checked"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _default_dialing_stages(cls, data: Any) -> Any:
        # The defaults depend on the CRM, so they are filled in before the frozen models are built.
        if not isinstance(data, dict) or not isinstance(data.get("crm"), dict):
            return data
        kind = data["crm"].get("kind")
        dialing = data.get("dialing", {})
        if kind not in DEFAULT_REJECTED_STAGES or not isinstance(dialing, dict):
            return data
        dialing = dict(dialing)
        dialing.setdefault("rejected_stages", DEFAULT_REJECTED_STAGES[kind])
        dialing.setdefault("closed_stages", DEFAULT_CLOSED_STAGES[kind])
        return {**data, "dialing": dialing}

    @model_validator(mode="after")
    def _dialing_stages(self) -> TenantConfig:
        rejected = set(self.dialing.rejected_stages or ())
        both = rejected & set(self.dialing.closed_stages or ())
        if both:
            raise ValueError(f"dialing: stages {sorted(both)} are both rejected_stages and closed_stages")
        unprocessed = rejected & set(self.timeliness.unprocessed_stages)
        if unprocessed:
            raise ValueError(
                f"dialing.rejected_stages {sorted(unprocessed)} are also timeliness.unprocessed_stages: "
                "a rejected lead would count as never processed"
            )
        return self

    def manager_name(self, manager_id: str | None) -> str:
        if manager_id is None:
            return "unassigned"
        return self.managers.get(manager_id, f"user {manager_id}")

    def secrets(self) -> dict[str, SecretRef]:
        """Every secret reference in this file, keyed by where it sits."""
        found = {f"crm.{k}": v for k, v in self.crm if isinstance(v, SecretRef)}
        found["telegram.bot_token"] = self.telegram.bot_token
        if self.api_key is not None:
            found["api_key"] = self.api_key
        return found


def _format_errors(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid tenant configuration"]
    for item in error.errors():
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in item["loc"])
        path = path.replace(".[", "[")
        # pydantic prefixes the discriminated union member's tag; drop it from the key path.
        path = re.sub(r"^crm\.(bitrix24|amocrm)\b", "crm", path)
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "required key is missing"
        elif item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        lines.append(f"  {path or '(top level)'}: {message}")
    return "\n".join(lines)


def parse_tenant(text: str, source: str) -> TenantConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    try:
        config = TenantConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    return config


def load_tenant_file(path: Path) -> TenantConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    config = parse_tenant(text, str(path))
    if config.tenant != path.stem:
        raise ConfigError(f"{path}: tenant: {config.tenant!r} must match the file name ({path.stem!r})")
    return config


class TenantRegistry:
    """All tenants of a deployment, from one directory of `<tenant>.yaml` files."""

    def __init__(self, tenants: dict[str, TenantConfig]):
        self._tenants = dict(tenants)

    @classmethod
    def from_dir(cls, directory: Path) -> TenantRegistry:
        if not directory.is_dir():
            raise ConfigError(f"{directory}: tenant directory does not exist")
        tenants: dict[str, TenantConfig] = {}
        problems: list[str] = []
        for path in sorted(directory.glob("*.yaml")):
            try:
                config = load_tenant_file(path)
            except ConfigError as exc:
                problems.append(str(exc))
                continue
            tenants[config.tenant] = config
        if problems:
            raise ConfigError("\n".join(problems))
        return cls(tenants)

    def get(self, tenant: str) -> TenantConfig | None:
        return self._tenants.get(tenant)

    def __iter__(self):
        return iter(self._tenants.values())

    def __len__(self) -> int:
        return len(self._tenants)

    def ids(self) -> list[str]:
        return sorted(self._tenants)
