"""Read side of dialing discipline: the day's report and one card's calls (API and CLI)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from leadwatch.params import card, day
from leadwatch.process import QueryError, QueryResult
from workflows.dialing import rules as dialing
from workflows.dialing.rules import DialingRules

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context


def report(ctx: Context, config: TenantConfig, today: date, params: dict[str, str]) -> QueryResult:
    """The dialing report of a day (default: the tenant's today), as the head gets it at report time."""
    from leadwatch.messages import terminal, writer_for
    from workflows.dialing.messages import not_working_day
    from workflows.dialing.report import daily_report, report_text

    when = day(params, "date", today)
    found = daily_report(ctx, config, when)
    message = report_text(ctx, config, found)
    data = {"tenant": config.tenant, **found.to_dict()}
    if params.get("format") == "text":
        data["text"] = message
    text = terminal(message)
    if not found.working_day:
        text += "\n" + not_working_day(writer_for(ctx, config), when)
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
    from leadwatch.messages import writer_for
    from workflows.dialing.messages import calls_text

    url = ctx.adapter(config).card_url(entity)
    return QueryResult(data, calls_text(state, found, rules.is_touch, writer_for(ctx, config), url))
