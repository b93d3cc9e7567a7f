"""Proof of the seam: a control process written only in this module, registered beside the
product's own, runs end to end on both CRMs over the local stack (webhook, dispatch, its own
state, its own schedule, a Telegram message, its API route and CLI command) without a line of
the framework changed. README "Write your own control process" walks through the same code.

The process: count new leads per manager each day and send the head the day's count at a
report time of the tenant's choosing.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import field_validator

from leadwatch import executor
from leadwatch.config import Section, parse_clock
from leadwatch.effects import Notify
from leadwatch.params import day
from leadwatch.process import (
    Param,
    Permission,
    Process,
    Query,
    QueryError,
    QueryResult,
    Route,
    RouteResponse,
    Schedule,
    StateDecl,
)
from leadwatch.registry import ProcessRegistry
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock
from workflows import PROCESSES

pytestmark = pytest.mark.integration

MSK = ZoneInfo("Europe/Moscow")
MONDAY_9 = datetime(2025, 11, 10, 9, 0, tzinfo=MSK)


# ----------------------------------------------------------------------------- the process
class LeadCountsConfig(Section):
    enabled: bool = True
    report_time: time = time(18, 0)

    @field_validator("report_time", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> Any:
        return parse_clock(value) if isinstance(value, str) else value


def on_events(ctx, config, batch, items) -> set[str]:
    """Count each new card once on the local day it was created, under its manager."""
    state = ctx.state("lead_counts")
    tz = ctx.calendar(config).tz
    for _, event in items:
        entity = batch.entity_of(event)
        card = event.lead or batch.cards([entity])[entity]
        if card is None:
            continue  # deleted before we looked
        created = card.created_at.astimezone(tz).date()
        state.count(config.tenant, f"day#{created}#{card.responsible or '-'}", once=entity.key)
    return set()


def counts_of(ctx, config, on: date) -> dict[str, int]:
    records = ctx.state("lead_counts").query(config.tenant, f"day#{on}#")
    return {r.key.rsplit("#", 1)[1]: r.count for r in records}


def text_of(config, on: date, counts: dict[str, int]) -> str:
    lines = [f"New leads on {on:%d.%m}: {sum(counts.values())}"]
    lines += [f"{config.manager_name(m)}: {n}" for m, n in sorted(counts.items())]
    return "\n".join(lines)


def daily(ctx, config, now: datetime, budget=None) -> dict | None:
    local = now.astimezone(ctx.calendar(config).tz)
    if local.time() < config.lead_counts.report_time:
        return None
    counts = counts_of(ctx, config, local.date())
    if not counts:
        return None
    # The effect id makes the message once a day, however often and however many Lambdas run this.
    message = Notify(f"lead_counts:{config.tenant}:{local.date()}", text_of(config, local.date(), counts))
    outcome = executor.perform(ctx, config, [message])
    return {"day": local.date().isoformat(), "sent": outcome.performed}


def lead_counts(ctx, config, today: date, params: dict[str, str]) -> QueryResult:
    on = day(params, "date", today)
    counts = counts_of(ctx, config, on)
    return QueryResult(
        {"tenant": config.tenant, "day": on.isoformat(), "managers": counts}, text_of(config, on, counts)
    )


def page(ctx, config, request) -> RouteResponse:
    """An HTML page of the day's counts and the notes left on it (behind the tenant's API key)."""
    on = day(request.params, "date", request.today)
    counts = counts_of(ctx, config, on)
    notes = [r.value["text"] for r in ctx.state("lead_counts").query(config.tenant, f"note#{on}#")]
    items = "".join(f"<li>{escape(config.manager_name(m))}: {n}</li>" for m, n in sorted(counts.items()))
    remarks = "".join(f"<p>{escape(text)}</p>" for text in notes)
    return RouteResponse(f"<!doctype html><title>New leads</title><ul>{items}</ul>{remarks}")


def leave_note(ctx, config, request) -> RouteResponse:
    """A public form: whoever holds the day's link may leave a note (the process checks the link)."""
    form = request.form()
    if form.get("token") != f"signed-{config.tenant}":  # a real process signs and expires its links
        raise QueryError("this link is not valid", status=403)
    on = day(form, "date", request.today)
    ctx.state("lead_counts").create(config.tenant, f"note#{on}#{len(form['text'])}", {"text": form["text"]})
    return RouteResponse("<!doctype html><p>Saved</p>", status=201)


HERE = __name__
LEAD_COUNTS = Process(
    name="lead_counts",
    title="New leads per manager",
    description="counts new leads per manager and day; the head gets the day's count at report time",
    config=f"{HERE}:LeadCountsConfig",
    events=("lead.created",),
    on_events=f"{HERE}:on_events",
    schedules=(Schedule("daily", 1, f"{HERE}:daily", "the day's count at the tenant's report time"),),
    queries=(
        Query(
            "lead-counts",
            "lead-counts",
            f"{HERE}:lead_counts",
            "new leads per manager on a day",
            (Param("date", "the day (default today)", kind="date"),),
        ),
    ),
    routes=(
        Route("page", "lead-counts/page", f"{HERE}:page", "the day's counts as a page"),
        Route(
            "note", "lead-counts/notes", f"{HERE}:leave_note", "leave a note", methods=("POST",), auth="none"
        ),
    ),
    state=(StateDecl("state", "p#lead_counts#day#<day>#<manager>, p#lead_counts#note#<day>#<n>"),),
    effects=("Notify",),
    permissions=(
        Permission("worker", "table:state", ("UpdateItem",), "count"),
        Permission("daily", "table:state", ("Query",), "the day's counts"),
        Permission("api", "table:state", ("Query",), "the day's counts and notes"),
        Permission("api", "table:state", ("PutItem",), "a note left on the public form"),
    ),
)
PROCESSES_WITH_COUNTS = [*PROCESSES, LEAD_COUNTS]


# ----------------------------------------------------------------------------- the proof
def post_form(stack: LocalStack, path: str, body: str) -> tuple[int, str]:
    response = stack.client.http.post(
        path, headers={"Content-Type": "application/x-www-form-urlencoded"}, body=body.encode()
    )
    return response.status_code, response.body.decode()


def get_page(stack: LocalStack, path: str, key: str) -> tuple[int, str]:
    response = stack.client.http.get(path, headers={"X-Api-Key": key})
    return response.status_code, response.body.decode()


@pytest.fixture(scope="module")
def stack():
    registry = ProcessRegistry(PROCESSES_WITH_COUNTS)
    managers = {"7": "Anna Petrova", "8": "Ivan Orlov"}
    sections = {"lead_counts": {"report_time": "17:30"}}
    with LocalStack(SimClock(MONDAY_9), processes=registry, managers=managers, tenant_sections=sections) as s:
        yield s


@pytest.mark.parametrize("tenant", [B24_TENANT, AMO_TENANT])
def test_a_process_written_outside_the_framework_runs_end_to_end(stack, tenant, monkeypatch, capsys):
    week = 1 if tenant == B24_TENANT else 2
    monday = MONDAY_9 + timedelta(weeks=week)
    stack.clock.set(monday)
    stack.telegram.messages.clear()
    crm = BitrixDriver(stack.bitrix) if tenant == B24_TENANT else AmoDriver(stack.amo)
    for n, manager in enumerate(["7", "7", "8"]):
        crm.create(f"Lead {n}", manager, monday + timedelta(minutes=n))
    stack.pump()
    # A redelivered creation webhook changes nothing.
    stack.reconcile()
    stack.pump()

    stack.clock.set(monday.replace(hour=17, minute=29))
    assert tenant not in stack.run_schedule("lead_counts", "daily")  # before its report time
    stack.clock.set(monday.replace(hour=17, minute=31))
    first = stack.run_schedule("lead_counts", "daily")
    again = stack.run_schedule("lead_counts", "daily")
    assert first[tenant]["sent"] == 1 and again[tenant]["sent"] == 0

    chat = stack.ctx.tenant(tenant).telegram.chat_id
    sent = [m.text for m in stack.telegram.messages_to(chat) if m.text.startswith("New leads")]
    assert sent == [f"New leads on {monday:%d.%m}: 3\nAnna Petrova: 2\nIvan Orlov: 1"]

    status, body = stack.get(
        f"/tenants/{tenant}/lead-counts?date={monday.date()}", {"X-Api-Key": stack.api_key(tenant)}
    )
    assert status == 200 and body["managers"] == {"7": 2, "8": 1}
    status, body = stack.get(
        f"/tenants/{tenant}/lead-counts?date=11-11", {"X-Api-Key": stack.api_key(tenant)}
    )
    assert status == 400 and "'date' must be a date" in body["error"]

    # Its own pages: a public form (the process checks the link) and an HTML page behind the key.
    notes = f"/tenants/{tenant}/lead-counts/notes"
    form = f"token=signed-{tenant}&date={monday.date()}&text=Anna+%26+Ivan:+good+day"
    assert post_form(stack, notes, form) == (201, "<!doctype html><p>Saved</p>")
    assert post_form(stack, notes, "token=forged&text=x")[0] == 403
    status, html = get_page(
        stack, f"/tenants/{tenant}/lead-counts/page?date={monday.date()}", stack.api_key(tenant)
    )
    assert status == 200 and "<li>Anna Petrova: 2</li>" in html and "<p>Anna &amp; Ivan: good day</p>" in html
    assert get_page(stack, f"/tenants/{tenant}/lead-counts/page", "wrong key")[0] == 401

    from leadwatch import iam, registry
    from leadwatch.cli import main

    assert iam.check(ProcessRegistry(PROCESSES_WITH_COUNTS)) == []  # its declared grants are well formed

    monkeypatch.setenv("LEADWATCH_PROCESSES", f"{HERE}:PROCESSES_WITH_COUNTS")
    monkeypatch.setenv("LEADWATCH_DYNAMODB_ENDPOINT", stack.aws_endpoint)
    registry.default_registry.cache_clear()
    try:
        capsys.readouterr()
        code = main(
            ["--tenants-dir", str(stack.tenants_dir), "lead-counts", tenant, "--date", str(monday.date())]
        )
        assert code == 0 and "Anna Petrova: 2" in capsys.readouterr().out
        assert main(["processes"]) == 0
        assert "lead_counts: New leads per manager" in capsys.readouterr().out
    finally:
        registry.default_registry.cache_clear()


def test_switched_off_for_one_tenant_it_does_nothing_there(stack):
    monday = MONDAY_9 + timedelta(weeks=3)
    stack.clock.set(monday)
    config = stack.ctx.tenant(B24_TENANT)
    off = config.model_copy(update={"lead_counts": LeadCountsConfig(enabled=False)})
    stack.ctx.registry.put(off)
    try:
        BitrixDriver(stack.bitrix).create("Quiet", "7", monday)
        stack.pump()
        assert stack.ctx.state("lead_counts").query(B24_TENANT, f"day#{monday.date()}#") == []
        stack.clock.set(monday.replace(hour=18))
        assert B24_TENANT not in stack.run_schedule("lead_counts", "daily")
        status, body = stack.get(
            f"/tenants/{B24_TENANT}/lead-counts", {"X-Api-Key": stack.api_key(B24_TENANT)}
        )
        assert status == 404 and "off" in body["error"]
    finally:
        stack.ctx.registry.put(config)
