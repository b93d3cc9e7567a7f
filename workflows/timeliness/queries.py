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


def format_table(rows: list[ManagerTimeliness], title: str) -> str:
    width = max([len(r.name) for r in rows] + [7])
    lines = [title, f"{'manager':<{width}}  {'leads':>5}  {'on time':>7}  {'late':>5}  {'late %':>6}"]
    for r in rows:
        lines.append(
            f"{r.name:<{width}}  {r.leads:>5}  {r.on_time:>7}  {r.late:>5}  {r.share_late * 100:>5.1f}%"
        )
    total_on = sum(r.on_time for r in rows)
    total_late = sum(r.late for r in rows)
    total = total_on + total_late
    share = total_late / total * 100 if total else 0.0
    lines.append(f"{'TOTAL':<{width}}  {total:>5}  {total_on:>7}  {total_late:>5}  {share:>5.1f}%")
    return "\n".join(lines)


def timeliness(ctx: Context, config: TenantConfig, today: date, params: dict[str, str]) -> QueryResult:
    """On time / late per manager over a period, and per manager and day."""
    first, last = period(params, today)
    managers = timeliness_by_manager(ctx, config, first, last)
    data = {
        "tenant": config.tenant,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "managers": [m.to_dict() for m in managers],
        "days": timeliness_by_day(ctx, config, first, last),
    }
    return QueryResult(data, format_table(managers, f"Timeliness, {config.tenant}, {first} .. {last}"))
