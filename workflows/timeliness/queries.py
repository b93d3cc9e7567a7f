"""Read side: per-manager timeliness statistics (the `timeliness` query of the API and the CLI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from leadwatch.config import TenantConfig
from leadwatch.context import Context
from leadwatch.params import period
from leadwatch.process import QueryResult


@dataclass(frozen=True)
class ManagerTimeliness:
    manager: str
    name: str
    leads: int
    on_time: int
    late: int

    @property
    def share_late(self) -> float:
        return self.late / self.leads if self.leads else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share_late": round(self.share_late, 4)}


def timeliness_by_manager(
    ctx: Context, config: TenantConfig, first: date, last: date
) -> list[ManagerTimeliness]:
    totals: dict[str, list[int]] = {}
    for row in ctx.store.timeliness_stats(config.tenant, first, last):
        counts = totals.setdefault(row.manager, [0, 0])
        counts[0] += row.on_time
        counts[1] += row.late
    names = ctx.names(config)
    rows = [
        ManagerTimeliness(
            manager, names.manager(None if manager == "unassigned" else manager), on + late, on, late
        )
        for manager, (on, late) in totals.items()
    ]
    return sorted(rows, key=lambda r: (-r.share_late, r.name))


def timeliness_by_day(ctx: Context, config: TenantConfig, first: date, last: date) -> list[dict[str, Any]]:
    names = ctx.names(config)
    return [
        {
            "day": r.day,
            "manager": r.manager,
            "name": names.manager(r.manager),
            "on_time": r.on_time,
            "late": r.late,
        }
        for r in ctx.store.timeliness_stats(config.tenant, first, last)
    ]


def timeliness(ctx: Context, config: TenantConfig, today: date, params: dict[str, str]) -> QueryResult:
    """On time / late per manager over a period, and per manager and day."""
    from leadwatch.messages import writer_for
    from workflows.timeliness.messages import table

    first, last = period(params, today)
    managers = timeliness_by_manager(ctx, config, first, last)
    data: dict[str, Any] = {
        "tenant": config.tenant,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "managers": [m.to_dict() for m in managers],
        "days": timeliness_by_day(ctx, config, first, last),
    }
    text = table(managers, writer_for(ctx, config), config.tenant, first, last)
    if params.get("format") == "text":
        data["text"] = text
    return QueryResult(data, text)
