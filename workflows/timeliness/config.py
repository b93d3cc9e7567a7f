"""The `timeliness:` section of a tenant file."""

from __future__ import annotations

from datetime import time
from typing import Any

from pydantic import Field, field_validator, model_validator

from leadwatch.config import WEEKDAYS, Clock, Section

# Without these the process has nothing to judge or nowhere to write its verdict.
REQUIRED = ("unprocessed_stages", "intake_field", "verdict_field")


class VerdictValues(Section):
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


class TimelinessConfig(Section):
    """Off until the stages and fields it works with are named: a file without the section is valid."""

    enabled: bool = True
    control_start: Clock = time(11, 0)
    reaction_minutes: int = Field(default=15, ge=1, le=24 * 60)
    unprocessed_stages: list[str]
    intake_field: str = Field(description="CRM field id that receives the intake timestamp")
    verdict_field: str = Field(description="CRM field id that receives the on-time verdict")
    verdict_values: VerdictValues = Field(default_factory=VerdictValues)
    # An activity (call, e-mail, comment) by the responsible manager counts as processing.
    activity_counts_as_processed: bool = True

    @model_validator(mode="before")
    @classmethod
    def _off_when_absent(cls, data: Any) -> Any:
        # Off (nothing to judge, nowhere to write) until its stages and fields are named; while
        # on, each of them is a required key.
        if not isinstance(data, dict):
            return data
        if "enabled" not in data and not any(k in data for k in REQUIRED):
            data = {**data, "enabled": False}
        if data.get("enabled") is False:
            return {"unprocessed_stages": [], "intake_field": "", "verdict_field": "", **data}
        return data

    @model_validator(mode="after")
    def _stages_when_enabled(self) -> TimelinessConfig:
        if self.enabled and not self.unprocessed_stages:
            raise ValueError("unprocessed_stages: name at least one stage while timeliness is enabled")
        return self

    @field_validator("unprocessed_stages", mode="before")
    @classmethod
    def _stage_text(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("intake_field", "verdict_field", mode="before")
    @classmethod
    def _field_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


def check(config: Any) -> None:
    """The control start must come before some closing time, or carried-over leads are never checked."""
    section = config.timeliness
    if not section.enabled:
        return
    closes = [iv.end for day in WEEKDAYS for iv in getattr(config.calendar.hours, day)]
    if closes and section.control_start >= max(closes):
        raise ValueError(
            f"timeliness.control_start {section.control_start:%H:%M} is at or after the latest "
            f"closing time {max(closes):%H:%M}: carried-over leads would never be checked"
        )
