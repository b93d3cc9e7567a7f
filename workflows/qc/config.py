"""The `qc:` section of a tenant file: quality control of rejected leads and deals.

A funnel is where cards are rejected: Bitrix24's lead list (status JUNK), one deal funnel
(its failure stages, `LOSE`, `C1:LOSE`, `C1:APOLOGY`), an amoCRM pipeline (status 143). Each
funnel names where the card keeps its rejection reason (a list field of the portal, amoCRM's
loss reason) and lists the reasons, each `check` (a review starts) or `ignore` (counted by the
audit, nothing more). A failure stage can be the reason itself (`stage:` instead of `id:`).

    qc:
      reviewers: [1]
      pages_url: https://abcd1234.execute-api.eu-central-1.amazonaws.com/api
      funnels:
        - entity: lead
          stages: [JUNK]
          reason_field: UF_CRM_1704817400
          returned_stage: "1"
          reasons:
            - {id: 44, name: Price too high, action: check, questions: [What price did they expect?]}
            - {id: 45, name: Spam, action: ignore}
      deadlines:
        answer: {within: 4h, remind: 50%}
        review: {within: 8h, remind: 1h}

Deadlines are working time on the tenant's calendar (`90m`, `4h`, `1h30m` or a number of
minutes); a working day is not a fixed number of hours, so days are refused.
"""

from __future__ import annotations

import re
from datetime import time as dtime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from leadwatch.config import WEEKDAYS, Clock, Section

Action = Literal["check", "ignore"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Entity = Literal["lead", "deal"]

# Stages every account has, by CRM and card type: where a funnel's cards go when rejected.
DEFAULT_STAGES: dict[tuple[str, str], list[str]] = {
    ("bitrix24", "lead"): ["JUNK"],
    ("bitrix24", "deal"): ["LOSE"],
    ("amocrm", "lead"): ["143"],
}
# amoCRM keeps a lost lead's reason in its own attribute, not in a custom field.
AMOCRM_REASON_FIELD = "loss_reason_id"
MAX_QUESTIONS = 10
QUESTION_CHARS = 300
_DEAL_CATEGORY = re.compile(r"^C(\d+):")
_DURATION = re.compile(r"^(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?$")


def _text_id(value: Any) -> Any:
    """CRM ids come as numbers or text; YAML reads `44` as a number: both are the same id."""
    if isinstance(value, bool):
        return value  # left for the str check to refuse: `yes` is not an id
    return str(value) if isinstance(value, int) else value


def _text_ids(value: Any) -> Any:
    return [_text_id(v) for v in value] if isinstance(value, list) else value


# ----------------------------------------------------------------------------- working time


def parse_duration(value: Any) -> int:
    """Working minutes from `90` (minutes), `"90m"`, `"4h"` or `"1h30m"`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration: write minutes (90) or hours and minutes ('1h30m')")
    text = value.strip().lower()
    if re.fullmatch(r"\d+\s*d(ays?)?", text):
        raise ValueError(
            f"{value!r}: give working hours or minutes ('8h'), not days: a working day's length "
            "depends on the calendar"
        )
    match = _DURATION.match(text)
    if not text or not match or not (match[1] or match[2]):
        raise ValueError(f"{value!r} is not a duration like '90m', '4h' or '1h30m'")
    return int(match[1] or 0) * 60 + int(match[2] or 0)


WorkingMinutes = Annotated[int, BeforeValidator(parse_duration)]


class ReminderPoint(Section):
    """When a task's assignee is reminded: at a share of the allowed time (`50%`), or a working
    time before the deadline (`1h`)."""

    percent: int | None = Field(default=None, ge=1, le=99)
    before_minutes: int | None = Field(default=None, ge=1)


def _reminder(value: Any) -> Any:
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    if isinstance(value, dict | ReminderPoint):
        return value
    if isinstance(value, str) and value.strip().endswith("%"):
        number = value.strip()[:-1].strip()
        if not number.isdigit() or not 1 <= int(number) <= 99:
            raise ValueError(f"{value!r}: a share of the allowed time is 1% .. 99%")
        return ReminderPoint(percent=int(number))
    try:
        minutes = parse_duration(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a reminder point: a share of the allowed time ('50%'), a working time "
            "before the deadline ('1h', '30m') or off"
        ) from None
    if minutes < 1:
        raise ValueError(f"{value!r}: a reminder before the deadline is at least a minute before it")
    return ReminderPoint(before_minutes=minutes)


class Deadline(Section):
    """The regulated time of one operation, counted in working time from the task's creation."""

    within: WorkingMinutes = Field(ge=1, le=60 * 24 * 30)
    remind: Annotated[ReminderPoint | None, BeforeValidator(_reminder)] = ReminderPoint(percent=50)
    # Overdue: the head hears of it in Telegram, once, this much working time after the deadline.
    escalate: bool = True
    escalate_after: WorkingMinutes = Field(default=0, ge=0, le=60 * 24 * 30)

    @model_validator(mode="after")
    def _remind_before_the_deadline(self) -> Deadline:
        before = self.remind.before_minutes if self.remind else None
        if before is not None and before >= self.within:
            raise ValueError(
                f"remind: {before} minutes before the deadline is at or before the task's start "
                f"(the task has {self.within} working minutes)"
            )
        return self


def _answer_deadline() -> Deadline:
    return Deadline(within=4 * 60)


def _review_deadline() -> Deadline:
    return Deadline(within=8 * 60)


class Deadlines(Section):
    answer: Deadline = Field(default_factory=_answer_deadline, description="the manager answers")
    review: Deadline = Field(default_factory=_review_deadline, description="the reviewer decides")


# ----------------------------------------------------------------------------- reasons and funnels


class Reason(Section):
    """One rejection reason: a value of the funnel's reason field (`id`), or a failure stage that
    is the reason by itself (`stage`)."""

    id: str | None = Field(default=None, min_length=1, max_length=64)
    stage: str | None = Field(default=None, min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=120)
    action: Action
    questions: list[str] = Field(default_factory=list, max_length=MAX_QUESTIONS)

    _ids = field_validator("id", "stage", mode="before")(_text_id)

    @field_validator("questions")
    @classmethod
    def _questions(cls, value: list[str]) -> list[str]:
        cleaned = [q.strip() for q in value]
        for n, question in enumerate(cleaned):
            if not question:
                raise ValueError(f"question [{n}] is empty")
            if len(question) > QUESTION_CHARS:
                raise ValueError(f"question [{n}] is longer than {QUESTION_CHARS} characters")
        return cleaned

    @model_validator(mode="after")
    def _consistent(self) -> Reason:
        if (self.id is None) == (self.stage is None):
            raise ValueError(
                "give exactly one of 'id' (a value of the reason field) or 'stage' (a failure stage "
                "that is the reason itself)"
            )
        if self.action == "ignore" and self.questions:
            raise ValueError("questions are put only for a `check` reason; this one is `ignore`")
        return self

    @property
    def key(self) -> str:
        return f"id:{self.id}" if self.id is not None else f"stage:{self.stage}"


def deal_category(stage: str) -> str:
    """The Bitrix24 deal funnel (CATEGORY_ID) a deal stage belongs to: `C1:LOSE` -> "1", `LOSE` -> "0"."""
    match = _DEAL_CATEGORY.match(stage)
    return match[1] if match else "0"


class Funnel(Section):
    name: str = Field(default="", max_length=40, description="default: leads / deals")
    entity: Entity = "lead"
    # amoCRM: the pipeline id (143 is in every pipeline). Bitrix24 deals: the CATEGORY_ID.
    pipeline: str | None = Field(default=None, min_length=1)
    stages: list[str] = Field(min_length=1)
    reason_field: str | None = Field(default=None, min_length=1)
    returned_stage: str = Field(min_length=1, description='the "returned to work" stage')
    reasons: list[Reason] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _crm_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        kind = str((info.context or {}).get("crm_kind"))
        entity = str(data.get("entity", "lead"))
        filled = dict(data)
        if "stages" not in filled and (kind, entity) in DEFAULT_STAGES:
            filled["stages"] = DEFAULT_STAGES[(kind, entity)]
        if kind == "amocrm" and "reason_field" not in filled:
            filled["reason_field"] = AMOCRM_REASON_FIELD
        if not filled.get("name"):
            filled["name"] = f"{entity}s" + (f"-{_text_id(data['pipeline'])}" if data.get("pipeline") else "")
        return filled

    _ids = field_validator("pipeline", "reason_field", "returned_stage", mode="before")(_text_id)
    _stage_ids = field_validator("stages", mode="before")(_text_ids)

    @field_validator("entity")
    @classmethod
    def _amocrm_has_leads(cls, value: str, info: ValidationInfo) -> str:
        if value == "deal" and (info.context or {}).get("crm_kind") == "amocrm":
            raise ValueError("amoCRM calls its deals leads: use entity: lead with the pipeline's id")
        return value

    @field_validator("stages")
    @classmethod
    def _plain_stages(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if len(set(value)) < len(value):
            raise ValueError("a stage is listed twice")
        if patterned := [s for s in value if "*" in s]:
            raise ValueError(
                f"{patterned}: list each failure stage (no '*'): a pattern covering several funnels "
                "leaves no one stage to return their cards to"
            )
        if info.data.get("entity") == "deal" and (info.context or {}).get("crm_kind") == "bitrix24":
            categories = {deal_category(s) for s in value}
            if len(categories) > 1:
                raise ValueError(
                    f"stages {value} are in different deal funnels ({', '.join(sorted(categories))}): "
                    "give each deal funnel its own entry"
                )
        return value

    @field_validator("returned_stage")
    @classmethod
    def _returns_within(cls, value: str, info: ValidationInfo) -> str:
        stages = info.data.get("stages") or []
        if value in stages:
            raise ValueError(
                f"{value!r} is one of the funnel's failure stages: a returned card would stay rejected"
            )
        bitrix_deals = (
            info.data.get("entity") == "deal" and (info.context or {}).get("crm_kind") == "bitrix24"
        )
        if bitrix_deals and stages and deal_category(value) != deal_category(stages[0]):
            raise ValueError(
                f"{value!r} is in deal funnel {deal_category(value)}, the failure stages {stages} in "
                f"funnel {deal_category(stages[0])}: a card returns within its own funnel"
            )
        return value

    @field_validator("reasons")
    @classmethod
    def _distinct_reasons(cls, value: list[Reason], info: ValidationInfo) -> list[Reason]:
        seen: dict[str, int] = {}
        stages = info.data.get("stages")
        for n, reason in enumerate(value):
            if reason.key in seen:
                what = f"id {reason.id!r}" if reason.id is not None else f"stage {reason.stage!r}"
                raise ValueError(f"[{n}]: {what} is listed twice (first at [{seen[reason.key]}])")
            seen[reason.key] = n
            if reason.stage is not None and stages is not None and reason.stage not in stages:
                raise ValueError(f"[{n}]: stage {reason.stage!r} is not one of the funnel's stages {stages}")
        if (
            any(r.id is not None for r in value)
            and "reason_field" in info.data
            and not info.data["reason_field"]
        ):
            raise ValueError("reasons with an 'id' need the funnel's reason_field (where the card keeps it)")
        return value

    @model_validator(mode="after")
    def _pipeline_matches(self, info: ValidationInfo) -> Funnel:
        bitrix_deals = self.entity == "deal" and (info.context or {}).get("crm_kind") == "bitrix24"
        if bitrix_deals and self.pipeline is not None and self.pipeline != deal_category(self.stages[0]):
            raise ValueError(
                f"pipeline {self.pipeline!r}: the stages {self.stages} are in deal funnel "
                f"{deal_category(self.stages[0])} (leave pipeline out: the stage ids name it)"
            )
        return self

    def reason_for_stage(self, stage: str) -> Reason | None:
        return next((r for r in self.reasons if r.stage == stage), None)

    def reason_for_id(self, reason_id: str) -> Reason | None:
        return next((r for r in self.reasons if r.id == reason_id), None)


# ----------------------------------------------------------------------------- audit


class SpotChecks(Section):
    """Rejections with `ignore` reasons sent to a reviewer at random, after each weekly audit."""

    sample_size: int = Field(default=5, ge=0, le=100, description="cards per flagged manager")
    # flagged: only from a manager (or the department) the audit flags; always: every week.
    when: Literal["flagged", "always"] = "flagged"


class AuditConfig(Section):
    """The weekly reason audit: the share of `ignore` reasons against the manager's own baseline
    and the rest of the department, by exact tests on the counts."""

    weekday: Weekday = "mon"
    time: Clock = dtime(9, 30)
    baseline_weeks: int = Field(default=8, ge=2, le=52)
    # Several managers are tested each week: a strict level keeps false alarms rare.
    significance: float = Field(default=0.01, gt=0, le=0.2)
    min_week: int = Field(default=5, ge=1, le=1000, description="rejections in the audited week")
    min_baseline: int = Field(default=20, ge=1, le=10000, description="rejections to compare with")

    @property
    def weekday_number(self) -> int:
        return WEEKDAYS.index(self.weekday)


# ----------------------------------------------------------------------------- the section


class QcConfig(Section):
    """Off until a funnel is named: a file without the section is valid."""

    enabled: bool = True
    funnels: list[Funnel] = Field(default_factory=list)
    reviewers: list[str] = Field(default_factory=list, description="CRM user ids")
    # A reason the file does not list (a new one in the portal, or none given): checked unless
    # the tenant says otherwise, so an unlisted reason is no way around the review.
    unknown_reasons: Action = "check"
    default_questions: list[str] = Field(default_factory=list, max_length=MAX_QUESTIONS)
    deadlines: Deadlines = Field(default_factory=Deadlines)
    links_valid_days: int = Field(default=14, ge=1, le=90, description="answer and review links")
    # Where people open the answer and review pages: the deployment's API address (`chalice
    # deploy` prints it as "Rest API URL"), or a domain in front of it.
    pages_url: str | None = Field(default=None, description="the API's public address")
    spot_checks: SpotChecks = Field(default_factory=SpotChecks)
    audit: AuditConfig = Field(default_factory=AuditConfig)

    @model_validator(mode="before")
    @classmethod
    def _off_when_absent(cls, data: Any) -> Any:
        if isinstance(data, dict) and "enabled" not in data and not data.get("funnels"):
            return {**data, "enabled": False}
        return data

    _reviewer_ids = field_validator("reviewers", mode="before")(_text_ids)

    @field_validator("pages_url")
    @classmethod
    def _pages_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value.strip())
        local = parts.hostname in ("localhost", "127.0.0.1")
        if (
            parts.scheme not in ("https", "http")
            or not parts.netloc
            or (parts.scheme == "http" and not local)
        ):
            raise ValueError(
                f"{value!r}: give the https:// address the pages are served on "
                "(http only for localhost or 127.0.0.1)"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: an address without ?query or #fragment")
        return value.strip().rstrip("/")

    @field_validator("reviewers")
    @classmethod
    def _distinct_reviewers(cls, value: list[str]) -> list[str]:
        if len(set(value)) < len(value):
            raise ValueError("a reviewer is listed twice")
        return value

    @field_validator("default_questions")
    @classmethod
    def _questions(cls, value: list[str]) -> list[str]:
        return Reason._questions(value)

    @field_validator("funnels")
    @classmethod
    def _funnels_apart(cls, value: list[Funnel]) -> list[Funnel]:
        names: dict[str, int] = {}
        for n, funnel in enumerate(value):
            if funnel.name in names:
                raise ValueError(
                    f"[{n}]: name {funnel.name!r} is taken by [{names[funnel.name]}]: give each funnel its own name"
                )
            names[funnel.name] = n
        for n, funnel in enumerate(value):
            for m in range(n):
                other = value[m]
                shared = set(funnel.stages) & set(other.stages)
                same_place = (
                    funnel.pipeline is None or other.pipeline is None or funnel.pipeline == other.pipeline
                )
                if funnel.entity == other.entity and shared and same_place:
                    raise ValueError(
                        f"[{m}] and [{n}] both take stage {sorted(shared)[0]!r} of {funnel.entity}s"
                        + ("" if funnel.pipeline and other.pipeline else ": give each its pipeline")
                    )
        return value

    @model_validator(mode="after")
    def _complete_when_enabled(self) -> QcConfig:
        if not self.enabled:
            return self
        if not self.funnels:
            raise ValueError("funnels: name at least one funnel while qc is enabled")
        if not self.reviewers:
            raise ValueError("reviewers: name at least one reviewer (a CRM user id) while qc is enabled")
        if not self.pages_url:
            raise ValueError(
                "pages_url: give the address the answer and review pages are served on (the "
                "deployment's API URL, which `chalice deploy` prints) while qc is enabled"
            )
        return self

    def funnel(self, name: str) -> Funnel | None:
        return next((f for f in self.funnels if f.name == name), None)

    def card_fields(self) -> list[str]:
        """The reason fields, for the CRM's card reads (leadwatch.config.TenantConfig.card_fields)."""
        return [f.reason_field for f in self.funnels if f.reason_field]


def check(config: Any) -> None:
    """A deal funnel is watched only where the CRM's deals are."""
    section = config.qc
    if not section.enabled:
        return
    entities = getattr(config.crm, "entities", None)
    if entities is None:
        return  # amoCRM: its leads are its deals
    for n, funnel in enumerate(section.funnels):
        if funnel.entity not in entities:
            raise ValueError(
                f"qc.funnels[{n}] is a {funnel.entity} funnel, but crm.entities {list(entities)} does "
                f"not watch {funnel.entity}s: add {funnel.entity!r} there"
            )
