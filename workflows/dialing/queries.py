"""Read side of dialing discipline: the day's report and one card's calls (API and CLI)."""

from __future__ import annotations

import html
import re
from datetime import date
from typing import TYPE_CHECKING

from leadwatch.params import card, day
from leadwatch.process import QueryError, QueryResult
from workflows.dialing import rules as dialing
from workflows.dialing.rules import DialingRules

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context


def _terminal(text: str) -> str:
    """The Telegram text, read in a terminal: links become "title <url>", the rest loses its tags."""
    text = re.sub(r'<a href="([^"]*)">(.*?)</a>', lambda m: f"{m.group(2)} <{m.group(1)}>", text)
    return html.unescape(re.sub(r"</?[a-z]+>", "", text))


def report(ctx: Context, config: TenantConfig, today: date, params: dict[str, str]) -> QueryResult:
    """The dialing report of a day (default: the tenant's today), as the head gets it at report time."""
    from workflows.dialing.report import daily_report, report_text

    when = day(params, "date", today)
    found = daily_report(ctx, config, when)
    message = report_text(ctx, config, found)
    data = {"tenant": config.tenant, **found.to_dict()}
    if params.get("format") == "text":
        data["text"] = message
    text = _terminal(message)
    if not found.working_day:
        text += f"\n({when} is not a working day: no plan day, no report is sent)"
    return QueryResult(data, text)


def calls(ctx: Context, config: TenantConfig, today: date, params: dict[str, str]) -> QueryResult:
    """A card's call attempts and successful touches, by plan day, with every call."""
    entity = card(params["lead"])
    state = ctx.store.get_lead(config.tenant, entity)
    if state is None:
        raise QueryError(f"leadwatch holds no card {entity.key} for tenant {config.tenant!r}", status=404)
    rules = DialingRules.from_config(config.section("dialing"))
    calendar = ctx.calendar(config)
    found = ctx.store.calls_of(config.tenant, entity)
    attempts, touches = len(found), sum(1 for call in found if rules.is_touch(call))
    by_day: dict[str, int] = {}
    for call in found:
        key = dialing.call_day(call, calendar.tz).isoformat()
        by_day[key] = by_day.get(key, 0) + 1
    first = dialing.first_plan_day(state.due_at, calendar.tz)
    data = {
        "tenant": config.tenant,
        "lead": entity.key,
        "title": state.title,
        "manager": state.responsible,
        "stage": state.stage,
        "plan_days": [d.isoformat() for d in dialing.plan_days(first, calendar, rules)],
        "attempts_total": attempts,
        "touches_total": touches,
        "attempts_by_day": by_day,
        "calls": [
            {
                "key": call.key,
                "started_at": call.started_at.isoformat(),
                "direction": call.direction,
                "manager": call.manager,
                "duration": call.duration,
                "answered": call.answered,
                "touch": rules.is_touch(call),
                "record_url": call.record_url,
                "source": call.source,
            }
            for call in found
        ],
    }
    names = ctx.names(config)
    stage = names.stage(state.stage, entity.type)
    lines = [f"{entity.key} {state.title!r}, {names.manager(state.responsible)}, stage {stage}"]
    for call in found:
        touch = "touch" if rules.is_touch(call) else ""
        lines.append(
            f"  {call.started_at.astimezone(calendar.tz):%Y-%m-%d %H:%M}  {call.direction:<3} {call.duration:>5}s  "
            f"{names.manager(call.manager):<20} {touch:<5} {call.record_url or ''}"
        )
    lines.append(f"{attempts} attempt(s), {touches} successful touch(es)")
    return QueryResult(data, "\n".join(lines))
