"""The `dialing:` section of a tenant file."""

from __future__ import annotations

from datetime import time
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from leadwatch.config import Clock, Section

# Stages every account has: Bitrix24's lead statuses and the lost / won stages of its deal funnels
# (the general funnel's LOSE / WON, funnel n's Cn:LOSE / Cn:WON), amoCRM's fixed "lost" and "won"
# in each pipeline. `*` matches any text, so `C*:LOSE` covers every funnel.
DEFAULT_REJECTED_STAGES = {"bitrix24": ["JUNK", "LOSE", "C*:LOSE"], "amocrm": ["143"]}
DEFAULT_CLOSED_STAGES = {"bitrix24": ["CONVERTED", "WON", "C*:WON"], "amocrm": ["142"]}


class DialingConfig(Section):
    """Dialing discipline: the plan every new lead is dialed by."""

    enabled: bool = True
    attempts_per_day: int = Field(default=3, ge=1, le=50)
    plan_days: int = Field(default=5, ge=1, le=60, description="working days from intake")
    min_attempts_before_rejection: int = Field(default=15, ge=0, le=1000)
    touch_seconds: int = Field(
        default=30, ge=0, le=3600, description="a call longer than this is a successful touch"
    )
    report_time: Clock = time(18, 30)
    # None: the CRM's own rejected/closed stages (Bitrix24 JUNK, LOSE, C*:LOSE / CONVERTED, WON,
    # C*:WON; amoCRM 143 / 142). A `*` in a stage id matches any text.
    rejected_stages: list[str] | None = Field(default=None, min_length=1)
    closed_stages: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _crm_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        # The defaults depend on the CRM, which the tenant file names beside this section.
        kind = (info.context or {}).get("crm_kind")
        if not isinstance(data, dict) or kind not in DEFAULT_REJECTED_STAGES:
            return data
        return {
            "rejected_stages": DEFAULT_REJECTED_STAGES[kind],
            "closed_stages": DEFAULT_CLOSED_STAGES[kind],
            **data,
        }

    @field_validator("rejected_stages", "closed_stages", mode="before")
    @classmethod
    def _stage_text(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _disjoint(self) -> DialingConfig:
        both = set(self.rejected_stages or ()) & set(self.closed_stages or ())
        if both:
            raise ValueError(f"stages {sorted(both)} are both rejected_stages and closed_stages")
        return self


def check(config: Any) -> None:
    """A rejected lead must not count as never processed by timeliness control."""
    timeliness = getattr(config, "timeliness", None)
    if timeliness is None or not timeliness.enabled:
        return
    unprocessed = set(config.dialing.rejected_stages or ()) & set(timeliness.unprocessed_stages)
    if unprocessed:
        raise ValueError(
            f"dialing.rejected_stages {sorted(unprocessed)} are also timeliness.unprocessed_stages: "
            "a rejected lead would count as never processed"
        )
