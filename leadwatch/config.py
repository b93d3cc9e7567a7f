"""Per-tenant configuration: one YAML file per tenant (`<tenant>.yaml` or `<tenant>.yml`),
validated with messages that name the file, the key and the problem.

Secrets are never in the file: a secret is named by reference, `{env: NAME}` or
`{ssm: /leadwatch/<tenant>/<name>}`, and resolved by `leadwatch.secrets`.

The files are read with `TenantLoader`, PyYAML's safe loader minus the YAML 1.1 readings that
turn a time of day into something else: `18:30` stays the text "18:30" (not the sexagesimal
number 1110) and `2026-02-30` stays text for the date check to name (not a constructor crash).
The CLI's `check-config` and the deployed functions (leadwatch.context) load through the same
`TenantRegistry`, so a file the check passes is the file the functions run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from leadwatch.i18n import Lang, default_language, parse_language

DEFAULT_RETENTION_MONTHS = 13

# The kind of each secret a tenant file may hold, by where it sits: each function is granted (and
# reads, in one call per kind) only the kinds it uses (leadwatch.iam, leadwatch.secrets).
SECRET_PLACES: dict[str, str] = {
    "crm.webhook_code": "crm",  # Bitrix24 inbound webhook
    "crm.access_token": "crm",  # amoCRM long-lived token
    "crm.application_token": "webhook",  # Bitrix24 outbound webhook
    "crm.application_tokens": "webhook",  # several, where a portal delivers through more than one
    "crm.hook_secret": "webhook",  # amoCRM ?key=
    "telegram.bot_token": "telegram",
    "api_key": "api-key",
}


def secret_kind(place: str) -> str | None:
    """The kind of the secret at `place` (`crm.application_tokens[1]` is a webhook secret)."""
    return SECRET_PLACES.get(re.sub(r"\[\d+\]$", "", place))


def retention_of(months: int) -> timedelta:
    return timedelta(days=round(months * 30.44))


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TENANT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
_INTERVAL = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
TENANT_SUFFIXES = (".yaml", ".yml")
# Where a tenant's SSM parameters live: each function's role is granted the names the tenant files
# give (leadwatch.iam), so a file may name only parameters under its own tenant's path, never
# another tenant's or another application's.
SSM_PREFIX = "/leadwatch/"
_SSM_NAME = re.compile(r"^[A-Za-z0-9_.\-/]+$")


class ConfigError(Exception):
    """A tenant file is missing, unreadable or invalid. The message is for a human."""


# ----------------------------------------------------------------------------- reading YAML
_INT, _FLOAT, _TIMESTAMP = (f"tag:yaml.org,2002:{t}" for t in ("int", "float", "timestamp"))
# PyYAML's YAML 1.1 int and float patterns without their base-60 forms (`18:30` -> 1110).
_PLAIN_NUMBERS = {
    _INT: re.compile(
        r"""^(?:[-+]?0b[0-1_]+
        |[-+]?0[0-7_]+
        |[-+]?(?:0|[1-9][0-9_]*)
        |[-+]?0x[0-9a-fA-F_]+)$""",
        re.X,
    ),
    _FLOAT: re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
        |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
}


class TenantLoader(yaml.SafeLoader):
    """PyYAML's safe loader for tenant files, with three differences, each a silent misreading:

    - `18:30` and `11:00` are text, as they are quoted: YAML 1.1 reads an unquoted one as the
      base-60 number 1110 (`09:30`, with its leading zero, was text already);
    - `2026-12-31` is text, parsed by the model (which names the key of an impossible date)
      instead of by PyYAML's timestamp constructor (which raises with neither file nor key);
    - a key written twice in one mapping is an error (PyYAML keeps the last one silently).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[type, Any], yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                marker = (type(key), key)
                hash(marker)
            except TypeError:
                continue
            if marker in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is written twice in one mapping (first on line {seen[marker].line + 1}); "
                    "keep one",
                    key_node.start_mark,
                )
            seen[marker] = key_node.start_mark
        return super().construct_mapping(node, deep)


# The class's own table (PyYAML copies the base's on the first add_implicit_resolver).
TenantLoader.yaml_implicit_resolvers = {
    first: [(tag, _PLAIN_NUMBERS.get(tag, regexp)) for tag, regexp in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str, source: str) -> Any:
    """The document in `text`, read as tenant files are; a problem is a ConfigError naming `source`
    and the line."""
    try:
        return yaml.load(text, Loader=TenantLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ConfigError(f"{source}: not valid YAML: {where}{problem}") from None
    except (yaml.YAMLError, ValueError, TypeError) as exc:
        # An explicit tag the value does not fit (`!!int x`, `!!timestamp 2026-02-30`).
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None


class Section(BaseModel):
    """Base of every part of a tenant file, a process's section included: unknown keys are
    mistakes (reported with the key), and a loaded configuration never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_Strict = Section


class SecretRef(_Strict):
    """Where a secret lives: an environment variable or an SSM parameter.

    Validated with the tenant in its context (as `parse_tenant` does), an SSM name must be under
    `/leadwatch/<tenant>/`."""

    env: str | None = None
    ssm: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_a_literal(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                "a secret must not be written in the file; name where it lives: "
                "{env: VARIABLE_NAME} or {ssm: /leadwatch/<tenant>/<name>}"
            )
        return value

    @model_validator(mode="after")
    def _exactly_one(self, info: ValidationInfo) -> SecretRef:
        if (self.env is None) == (self.ssm is None):
            raise ValueError("give exactly one of 'env' or 'ssm'")
        tenant = (info.context or {}).get("tenant")
        if self.ssm is not None and isinstance(tenant, str):
            _check_parameter(self.ssm, tenant)
        return self

    def describe(self) -> str:
        return f"environment variable {self.env}" if self.env else f"SSM parameter {self.ssm}"


def _check_parameter(name: str, tenant: str) -> None:
    own = f"{SSM_PREFIX}{tenant}/"
    if not name.startswith(own) or not _SSM_NAME.match(name) or "//" in name or name.endswith("/"):
        raise ValueError(
            f"SSM parameter {name!r} is not one of this tenant's: name it {own}<name> (letters, digits "
            "and _ . - /); the functions' roles are granted only each tenant's own parameters"
        )


def parse_clock(text: str) -> time:
    match = _CLOCK.match(text.strip())
    try:
        if not match:
            raise ValueError(text)
        return time(int(match[1]), int(match[2]))
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day HH:MM") from None


def _clock(value: Any) -> Any:
    """A time of day from "HH:MM" (quoted or not: TenantLoader keeps both as text), local to the
    tenant's calendar, so never one with a zone; a number is refused rather than read as seconds."""
    if isinstance(value, str):
        return parse_clock(value)
    if isinstance(value, time) and value.tzinfo is None:
        return value
    if isinstance(value, time):
        raise ValueError(f'{value.isoformat()} has a time zone: write the local time as "HH:MM"')
    raise ValueError(f'{value!r} is not a time of day: write it as "HH:MM", e.g. "18:30"')


# A local time of day, "HH:MM" in the file; every time setting of a section is one.
Clock = Annotated[time, BeforeValidator(_clock)]


class Interval(_Strict):
    start: Clock
    end: Clock

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

    @field_validator("subdivision")
    @classmethod
    def _known_subdivision(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if "country" not in info.data:
            return value  # the country itself is wrong, and said so
        country = info.data["country"]
        if country is None:
            raise ValueError("a subdivision needs its 'country'")
        import holidays

        try:
            holidays.country_holidays(country, subdiv=value)  # as leadwatch.calendar builds it
        except NotImplementedError:
            known = holidays.list_supported_countries().get(country, [])
            listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
            raise ValueError(
                f"python-holidays has no subdivision {value!r} of {country} (known: {listed or 'none'})"
            ) from None
        return value

    @field_validator("overrides")
    @classmethod
    def _unique_dates(cls, value: list[DateOverride]) -> list[DateOverride]:
        seen: set[date] = set()
        for item in value:
            if item.date in seen:
                raise ValueError(f"date {item.date} is overridden twice")
            seen.add(item.date)
        return value

    @model_validator(mode="after")
    def _builds(self) -> CalendarConfig:
        # The calendar the functions build from this section at run time: what it refuses is
        # refused here, with the file named, instead of at every lead of the tenant.
        from leadwatch.calendar import calendar_from_config

        calendar_from_config(self)
        return self

    def pre_holiday_minutes(self) -> int:
        if self.pre_holiday_shortening_minutes is not None:
            return self.pre_holiday_shortening_minutes
        return 60 if self.country in {"RU", "BY"} else 0


MAX_APPLICATION_TOKENS = 10


Entity = Literal["lead", "deal"]


def _leads_only() -> list[Entity]:
    return ["lead"]


class Bitrix24Config(_Strict):
    kind: Literal["bitrix24"]
    base_url: str = Field(description="portal URL, e.g. https://acme.bitrix24.ru")
    webhook_user_id: int = Field(ge=1)
    webhook_code: SecretRef
    # One reference, or a list when events come from several senders (an installed app and an
    # outbound webhook each have their own token): a delivery carrying any of them is accepted.
    application_token: SecretRef | list[SecretRef]
    # If set, a delivery's auth[member_id] (the portal's id) must be this one.
    member_id: str | None = Field(default=None, min_length=1, max_length=128)
    entities: list[Entity] = Field(default_factory=_leads_only, min_length=1)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("application_token", mode="before")
    @classmethod
    def _one_or_several(cls, value: Any, info: ValidationInfo) -> Any:
        """One reference or a list of them, with one message per problem (not one per union member)."""
        if not isinstance(value, list):
            return _secret_ref(value, "", info.context)
        if not value:
            raise ValueError("give at least one application token")
        if len(value) > MAX_APPLICATION_TOKENS:
            raise ValueError(f"give at most {MAX_APPLICATION_TOKENS} application tokens")
        refs = [_secret_ref(item, f"[{n}]: ", info.context) for n, item in enumerate(value)]
        if len({ref.describe() for ref in refs}) < len(refs):
            raise ValueError("an application token is listed twice")
        return refs

    @field_validator("member_id", mode="before")
    @classmethod
    def _member_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @property
    def application_tokens(self) -> list[SecretRef]:
        token = self.application_token
        return list(token) if isinstance(token, list) else [token]

    @property
    def portal_domain(self) -> str:
        """The portal's host as deliveries name it in auth[domain] (from `base_url`), lower case."""
        return urlsplit(self.base_url).netloc.lower()


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


def _secret_ref(value: Any, where: str, context: dict[str, Any] | None) -> SecretRef:
    try:
        return SecretRef.model_validate(value, context=context)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling)"
        key = ".".join(map(str, error["loc"]))
        raise ValueError(f"{where}{key + ': ' if key else ''}{message}") from None


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


class TelegramConfig(_Strict):
    chat_id: str
    bot_token: SecretRef
    api_base: str = "https://api.telegram.org"
    # More alerts than this due together go out as one digest message (0: never a digest).
    digest_over: int = Field(default=5, ge=0)

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("api_base")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value)


class TenantConfig(_Strict):
    """The framework's part of a tenant file. The model a deployment loads adds one section per
    registered process (`tenant_model`), under the process's name."""

    # Checks across sections (a process's `check`), run once every section is valid.
    _section_checks: ClassVar[tuple[Callable[[Any], None], ...]] = ()

    tenant: str
    crm: Annotated[Bitrix24Config | AmoCrmConfig, Field(discriminator="kind")]
    calendar: CalendarConfig
    telegram: TelegramConfig
    api_key: SecretRef | None = Field(default=None, description="key for the read API")
    managers: dict[str, str] = Field(default_factory=dict, description="CRM user id -> display name")
    # What the head reads is written in this language (leadwatch.i18n): `ru` or `en`; by default
    # Russian where the calendar's country is RU, BY, KZ or KG, else English.
    language: Lang = "en"
    # How long leadwatch keeps a tenant's cards, calls, counters and journal (client names among
    # them): each row goes this many months after what it records happened (DynamoDB TTL).
    retention_months: int = Field(default=DEFAULT_RETENTION_MONTHS, ge=1, le=120)

    @property
    def retention(self) -> timedelta:
        return retention_of(self.retention_months)

    @field_validator("tenant")
    @classmethod
    def _tenant_id(cls, value: str) -> str:
        if not _TENANT_ID.match(value):
            raise ValueError(f"{value!r}: use 2-63 lowercase letters, digits and dashes")
        return value

    @model_validator(mode="before")
    @classmethod
    def _language_by_country(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("language") is not None:
            return data
        calendar = data.get("calendar")
        country = calendar.get("country") if isinstance(calendar, dict) else None
        return {**data, "language": default_language(country if isinstance(country, str) else None)}

    @field_validator("language", mode="before")
    @classmethod
    def _known_language(cls, value: Any) -> Lang:
        return parse_language(value)

    @field_validator("managers", mode="before")
    @classmethod
    def _manager_keys(cls, value: Any) -> Any:
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _across_sections(self) -> TenantConfig:
        for check in type(self)._section_checks:
            check(self)
        return self

    def section(self, process: str) -> Any:
        """The tenant's settings for one process (its defaults when the file has no section)."""
        return getattr(self, process)

    def enabled(self, process: str) -> bool:
        """Whether a process runs for this tenant: a process switched off reads, writes and sends nothing."""
        section = getattr(self, process, None)
        return section is not None and bool(getattr(section, "enabled", True))

    def card_fields(self) -> list[str]:
        """The CRM's custom fields the enabled processes read from a card (a section's own
        `card_fields()`, e.g. quality control's reason field): an adapter that must name such
        fields in its card reads (Bitrix24 lists leave out multiple fields otherwise) asks here."""
        found: list[str] = []
        for name in type(self).model_fields:
            section = getattr(self, name, None)
            wanted = getattr(section, "card_fields", None)
            if callable(wanted) and self.enabled(name):
                found += [f for f in wanted() if f not in found]
        return found

    def manager_name(self, manager_id: str | None) -> str:
        if manager_id is None:
            return "unassigned"
        return self.managers.get(manager_id, f"user {manager_id}")

    def secrets(self) -> dict[str, SecretRef]:
        """Every secret reference in this file, keyed by where it sits."""
        found: dict[str, SecretRef] = {}
        for key, value in self.crm:
            if isinstance(value, SecretRef):
                found[f"crm.{key}"] = value
            elif isinstance(value, list):
                found.update({f"crm.{key}[{n}]": v for n, v in enumerate(value) if isinstance(v, SecretRef)})
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


def tenant_model(
    sections: Iterable[tuple[str, type[BaseModel]]], checks: Iterable[Callable[[Any], None]] = ()
) -> type[TenantConfig]:
    """The tenant file's model with one section per process, each optional: a section left out
    is validated from `{}` (so its defaults apply, with the same context as a written one)."""
    fields: dict[str, Any] = {
        name: (model, Field(default_factory=dict, validate_default=True)) for name, model in sections
    }
    model = create_model("TenantConfig", __base__=TenantConfig, **fields)
    model._section_checks = tuple(checks)
    return model


@cache
def default_model() -> type[TenantConfig]:
    """The tenant model of this deployment's registered processes."""
    from leadwatch.registry import default_registry

    return default_registry().tenant_model()


def parse_tenant(text: str, source: str, model: type[TenantConfig] | None = None) -> TenantConfig:
    data = load_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level")
    crm = data.get("crm")
    context = {
        # Sections whose defaults depend on the CRM (its own stage ids) read the kind from here.
        "crm_kind": crm.get("kind") if isinstance(crm, dict) else None,
        # Secret references must name this tenant's own SSM parameters.
        "tenant": data.get("tenant"),
    }
    try:
        config = (model or default_model()).model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None
    except Exception as exc:
        # A check that trips over a value the model let through is a bug in the check, but the
        # person running it still learns which file, and the other files are still checked.
        raise ConfigError(
            f"{source}: could not be checked ({type(exc).__name__}: {exc}); "
            "this is a bug in leadwatch's checks, please report it with the file"
        ) from exc
    return config


def load_tenant_file(path: Path, model: type[TenantConfig] | None = None) -> TenantConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    config = parse_tenant(text, str(path), model)
    if config.tenant != path.stem:
        raise ConfigError(f"{path}: tenant: {config.tenant!r} must match the file name ({path.stem!r})")
    return config


def tenant_files(directory: Path) -> list[Path]:
    """The tenant files of a directory: `*.yaml` and `*.yml`, by name."""
    return sorted(p for p in directory.iterdir() if p.suffix in TENANT_SUFFIXES and p.is_file())


@dataclass
class TenantScan:
    """What reading tenant files found: the valid tenants, and one message per problem (each
    starting with its file), every file read whatever the others hold."""

    files: list[Path]
    tenants: dict[str, TenantConfig] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def scan_tenants(path: Path, model: type[TenantConfig] | None = None) -> TenantScan:
    """Read one tenant file, or every tenant file of a directory (`leadwatch check-config PATH`,
    and through `TenantRegistry.from_dir` the deployed functions)."""
    if path.is_dir():
        files = tenant_files(path)
    elif not path.exists():
        return TenantScan([], problems=[f"{path}: no such file or directory"])
    elif path.suffix not in TENANT_SUFFIXES:
        return TenantScan([], problems=[f"{path}: not a tenant file (<tenant>.yaml or <tenant>.yml)"])
    else:
        files = [path]
    found = TenantScan(files)
    first: dict[str, Path] = {}
    for file in files:
        if file.stem in first:
            # acme.yaml beside acme.yml: which one the functions run is not for chance to decide.
            found.problems.append(
                f"{file}: tenant {file.stem!r} is already defined by {first[file.stem]}; keep one file"
            )
            continue
        first[file.stem] = file
        try:
            config = load_tenant_file(file, model)
        except ConfigError as exc:
            found.problems.append(str(exc))
            continue
        found.tenants[config.tenant] = config
    return found


class TenantRegistry:
    """All tenants of a deployment, from one directory of `<tenant>.yaml` (or `.yml`) files."""

    def __init__(self, tenants: dict[str, TenantConfig]):
        self._tenants = dict(tenants)

    @classmethod
    def from_dir(cls, directory: Path, model: type[TenantConfig] | None = None) -> TenantRegistry:
        """Every tenant file of `directory`; every problem of every file in one ConfigError."""
        if not directory.is_dir():
            raise ConfigError(f"{directory}: tenant directory does not exist")
        found = scan_tenants(directory, model)
        if found.problems:
            raise ConfigError("\n".join(found.problems))
        return cls(found.tenants)

    def get(self, tenant: str) -> TenantConfig | None:
        return self._tenants.get(tenant)

    def retention(self, tenant: str) -> timedelta:
        """How long the store keeps this tenant's rows (the default for a tenant it does not know)."""
        config = self._tenants.get(tenant)
        return config.retention if config else retention_of(DEFAULT_RETENTION_MONTHS)

    def put(self, config: TenantConfig) -> TenantConfig | None:
        """Add or replace one tenant (a reloaded file, a test's variant); returns the one it replaced."""
        previous = self._tenants.get(config.tenant)
        self._tenants[config.tenant] = config
        return previous

    def __iter__(self) -> Iterator[TenantConfig]:
        return iter(self._tenants.values())

    def __len__(self) -> int:
        return len(self._tenants)

    def ids(self) -> list[str]:
        return sorted(self._tenants)
