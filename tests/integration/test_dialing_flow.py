"""Dialing discipline end to end, on each CRM: call webhooks -> inbox -> queue -> worker ->
counters; the report at 18:30; improper rejections; duplicates and reconciliation.
moto's server and the fake CRM and Telegram servers over HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from leadwatch.events import EntityRef, EntityType
from leadwatch.messages import Kind, Writer
from leadwatch.testing.stack import (
    AMO_TENANT,
    B24_TENANT,
    AmoDriver,
    BitrixDriver,
    CrmDriver,
    LocalStack,
    SimClock,
)
from tests.integration.conftest import checkpoint_writes
from workflows.dialing.messages import REJECTION_ALERT, REPORT

MSK = ZoneInfo("Europe/Moscow")
MONDAY_9 = datetime(2025, 11, 10, 9, 0, tzinfo=MSK)  # a plain week: Mon 10 .. Fri 14 Nov 2025


@pytest.fixture(scope="module")
def stack():
    with LocalStack(SimClock(MONDAY_9), managers={"7": "Anna Petrova", "8": "Ivan Orlov"}) as running:
        yield running


WEEKS = iter(range(1, 1000))


@pytest.fixture(params=[B24_TENANT, AMO_TENANT])
def crm(request, stack) -> CrmDriver:
    """Each test in a week of its own (so report days and plan windows never overlap), faults cleared."""
    calendar = stack.ctx.calendar(stack.ctx.tenant(request.param))
    monday = MONDAY_9 + timedelta(weeks=next(WEEKS))
    while not all(calendar.is_working_day(monday.date() + timedelta(days=d)) for d in range(5)):
        monday = MONDAY_9 + timedelta(weeks=next(WEEKS))  # New Year holidays and the like: the next week
    stack.clock.set(monday)
    for fake in (stack.bitrix, stack.amo, stack.telegram):
        fake.clear_faults()
        fake.clear_log()
    stack.telegram.messages.clear()
    stack.drop_next = 0
    return BitrixDriver(stack.bitrix) if request.param == B24_TENANT else AmoDriver(stack.amo)


def at(stack: LocalStack, hours: float) -> datetime:
    """A moment of the current test week's Monday."""
    monday = stack.clock().astimezone(MSK).replace(hour=0, minute=0, second=0, microsecond=0)
    monday -= timedelta(days=monday.weekday())
    return monday + timedelta(hours=hours)


def lead_with_calls(
    stack: LocalStack, crm: CrmDriver, durations: list[int], manager: str = "7", start: float = 10.0
) -> str:
    stack.clock.set(at(stack, start))
    lead = crm.create("Kitchen for the Ivanovs", manager, stack.clock())
    crm.take(lead, manager, stack.clock() + timedelta(minutes=3))
    for n, duration in enumerate(durations):
        moment = at(stack, start) + timedelta(minutes=10 + 5 * n)
        stack.clock.set(moment)
        crm.call(
            lead, manager, moment, duration, f"https://records.example/{lead}/{n}.mp3" if duration else None
        )
    stack.pump()
    return lead


def entity(lead: str) -> EntityRef:
    return EntityRef(EntityType.LEAD, lead)


def calls_api(stack: LocalStack, tenant: str, lead: str) -> dict:
    status, body = stack.get(
        f"/tenants/{tenant}/leads/{lead}/calls", headers={"X-Api-Key": stack.api_key(tenant)}
    )
    assert status == 200, body
    return body


def alerts(stack: LocalStack, marker: str) -> list:
    return [m for m in stack.telegram.messages if marker in m.text]


def of_kind(stack: LocalStack, kind: Kind) -> list:
    return [m for m in stack.telegram.messages if kind.of(m.text)]


# What each tenant's head reads: the Bitrix24 tenant writes Russian (its calendar's country), the
# amoCRM one English (its file says so).
WORDS = {
    B24_TENANT: {
        "behind": "<b>Отстают от плана сегодня</b>",
        "touches": "<b>Результативные звонки сегодня</b>",
        "1 of 3": "сегодня 1 из 3",
        "14 of 15": "Отказ {when}: 14 звонков из 15 обязательных (0 результативных)",
    },
    AMO_TENANT: {
        "behind": "<b>Behind plan today</b>",
        "touches": "<b>Successful touches today</b>",
        "1 of 3": "1 of 3 today",
        "14 of 15": "Rejected {when} after 14 call attempts of the 15 required (0 successful touches)",
    },
}


def test_calls_are_counted_with_touches_and_recordings(stack, crm):
    lead = lead_with_calls(stack, crm, [0, 12, 30, 31, 95])
    body = calls_api(stack, crm.tenant, lead)
    assert body["attempts_total"] == 5
    assert body["touches_total"] == 2  # 31 s and 95 s; exactly 30 s is not a touch
    assert [c["duration"] for c in body["calls"]] == [0, 12, 30, 31, 95]
    assert [c["touch"] for c in body["calls"]] == [False, False, False, True, True]
    # Bitrix24's call webhooks carry no recording: the next reconciliation (telephony statistics)
    # brings it; amoCRM's call notes carry the link at once.
    stack.clock.advance(timedelta(minutes=10))
    stack.reconcile_fed()
    stack.pump()
    body = calls_api(stack, crm.tenant, lead)
    assert body["attempts_total"] == 5
    assert body["calls"][4]["record_url"] == f"https://records.example/{lead}/4.mp3"
    assert body["attempts_by_day"] == {at(stack, 10).date().isoformat(): 5}
    assert len(body["plan_days"]) == 5


def test_duplicated_and_reconciled_calls_count_once(stack, crm):
    fake = stack.bitrix if crm.tenant == B24_TENANT else stack.amo
    bodies: list[bytes] = []
    deliver = fake.deliver

    def twice(body: bytes) -> None:
        bodies.append(body)
        deliver(body)
        deliver(body)  # the CRM delivers it again

    fake.deliver = twice
    try:
        lead = lead_with_calls(stack, crm, [40, 0, 0])
    finally:
        fake.deliver = deliver
    assert stack.reconcile_fed() >= 0
    stack.pump()
    stack.clock.advance(timedelta(minutes=30))
    stack.reconcile_fed()
    stack.pump()
    assert stack.ctx.store.call_totals(crm.tenant, [entity(lead)]) == {entity(lead): (3, 1)}


def test_a_lost_call_webhook_is_found_by_reconciliation(stack, crm):
    lead = lead_with_calls(stack, crm, [50])
    # The next call's webhooks are lost (Bitrix24 sends two per call: both lost).
    stack.drop_next = 2 if crm.tenant == B24_TENANT else 1
    moment = stack.clock() + timedelta(minutes=5)
    stack.clock.set(moment)
    crm.call(lead, "7", moment, 65, "https://records.example/lost.mp3")
    stack.pump()
    assert stack.ctx.store.call_totals(crm.tenant, [entity(lead)])[entity(lead)][0] == 1
    stack.clock.advance(timedelta(minutes=10))
    assert stack.reconcile_fed() >= 1
    stack.pump()
    body = calls_api(stack, crm.tenant, lead)
    assert body["attempts_total"] == 2 and body["touches_total"] == 2
    assert body["calls"][-1]["record_url"] == "https://records.example/lost.mp3"


def test_report_at_18_30_on_a_working_day(stack, crm):
    behind = lead_with_calls(stack, crm, [0], manager="7", start=10)
    compliant = lead_with_calls(stack, crm, [0, 45, 0], manager="8", start=11)
    untouched = lead_with_calls(stack, crm, [], manager="8", start=12)
    rejected = lead_with_calls(stack, crm, [0] * 15, manager="7", start=14)
    stack.clock.set(at(stack, 16))
    crm.reject(rejected, "7", stack.clock())
    stack.pump()
    stack.clock.set(at(stack, 18.49))  # 18:29
    stack.dialing_report()
    assert (
        reports(stack, crm, at(stack, 0)) == []
    )  # (earlier days' reports this tenant missed may go out late)
    stack.clock.set(at(stack, 18.5))
    stack.dialing_report()
    stack.clock.advance(timedelta(minutes=1))
    stack.dialing_report()  # the next minute: already sent, nothing more
    url = stack.ctx.adapter(stack.ctx.tenant(crm.tenant)).card_url
    [report] = [m for m in of_kind(stack, REPORT) if url(entity(untouched)) in m.text]
    text, words = report.text, WORDS[crm.tenant]
    assert report in reports(stack, crm, at(stack, 0))
    no_attempt, _, rest = text.partition(words["behind"])
    assert f'href="{url(entity(untouched))}"' in no_attempt
    assert f'href="{url(entity(behind))}"' in rest.split(words["touches"])[0]
    assert words["1 of 3"] in text
    assert f'href="{url(entity(compliant))}"' in text.split(words["touches"])[1]  # its 45 s touch
    assert f'href="{url(entity(rejected))}"' not in text  # rejected: out of the plan
    assert "Anna Petrova: 1 / 0 / 1 / 0" in text and "Ivan Orlov: 2 / 1 / 0 / 1" in text
    assert f"https://records.example/{compliant}/1.mp3" in text
    # The API gives the same report.
    status, body = stack.get(
        f"/tenants/{crm.tenant}/dialing?date={at(stack, 0).date()}",
        headers={"X-Api-Key": stack.api_key(crm.tenant)},
    )
    assert status == 200
    assert [i["lead"] for i in body["untouched"]] == [entity(untouched).key]
    assert [i["lead"] for i in body["behind"]] == [entity(behind).key]
    assert [i["lead"] for i in body["compliant"]] == [entity(compliant).key]
    assert [t["duration"] for t in body["touches"]] == [45]


def reports(stack: LocalStack, crm: CrmDriver, day: datetime) -> list:
    """This tenant's reports of `day` (they link its cards: both tenants of the stack share one
    chat), known by their header in either language."""
    base = (stack.bitrix if crm.tenant == B24_TENANT else stack.amo).url
    return [
        m
        for m in of_kind(stack, REPORT)
        if base in m.text and f"{day:%d.%m.%Y}</b>" in m.text.splitlines()[0]
    ]


def test_a_report_missed_on_its_day_is_sent_late_with_its_date(stack, crm):
    lead_with_calls(stack, crm, [0], manager="7", start=10)
    stack.clock.set(at(stack, 18.5))
    stack.dialing_report()
    monday = at(stack, 0)
    assert len(reports(stack, crm, monday)) == 1
    # No run at all on Tuesday evening (an outage): Wednesday morning's run sends Tuesday's report.
    stack.clock.set(at(stack, 24 + 10))
    lead_with_calls(stack, crm, [0, 0], manager="8", start=24 + 10)
    stack.clock.set(at(stack, 48 + 9))
    stack.dialing_report()
    tuesday = at(stack, 24)
    assert len(reports(stack, crm, tuesday)) == 1
    assert reports(stack, crm, at(stack, 48)) == []  # not yet 18:30
    stack.dialing_report()
    assert len(reports(stack, crm, tuesday)) == 1 and len(reports(stack, crm, monday)) == 1  # once each


def test_no_report_on_a_holiday(stack, crm):
    # Tue 4 Nov 2025 (Unity Day) is no working day in Russia.
    stack.clock.set(datetime(2025, 11, 4, 18, 45, tzinfo=MSK))
    stack.dialing_report()
    assert of_kind(stack, REPORT) == []
    status, body = stack.get(
        f"/tenants/{crm.tenant}/dialing?date=2025-11-04", headers={"X-Api-Key": stack.api_key(crm.tenant)}
    )
    assert status == 200 and body["working_day"] is False and body["in_plan"] == 0


def _rejections(stack: LocalStack, tenant: str, lead: str) -> list:
    now = stack.clock()
    return [
        row
        for row in stack.ctx.store.violations(tenant, now - timedelta(days=30), now + timedelta(days=1))
        if row.type == "improper_rejection" and row.entity == entity(lead).key
    ]


@pytest.mark.parametrize(("calls", "improper"), [(14, True), (15, False)])
def test_rejection_with_fewer_than_15_attempts_is_improper(stack, crm, calls: int, improper: bool):
    lead = lead_with_calls(stack, crm, [0] * calls)
    stack.clock.set(stack.clock() + timedelta(minutes=5))
    crm.reject(lead, "7", stack.clock())
    stack.pump()
    stack.clock.advance(timedelta(minutes=10))
    stack.reconcile_fed()  # the card and its calls read again: nothing may change the verdict
    stack.pump()
    url = stack.ctx.adapter(stack.ctx.tenant(crm.tenant)).card_url(entity(lead))
    sent = alerts(stack, f'href="{url}"')
    if improper:
        [row] = _rejections(stack, crm.tenant, lead)
        assert row.manager == "7" and row.details["attempts"] == 14
        [alert] = sent
        tenant = stack.ctx.tenant(crm.tenant)
        when = Writer(tenant.language, MSK).when(row.occurred_at)
        assert (
            REJECTION_ALERT.of(alert.text) and WORDS[crm.tenant]["14 of 15"].format(when=when) in alert.text
        )
        assert "Anna Petrova" in alert.text
    else:
        assert _rejections(stack, crm.tenant, lead) == []
        assert [m for m in sent if REJECTION_ALERT.of(m.text)] == []


def test_a_rejection_right_after_calls_whose_webhooks_are_late_is_not_improper(stack, crm):
    """The stage change arrives before the call webhooks: leadwatch reads the calls back first."""
    fake = stack.bitrix if crm.tenant == B24_TENANT else stack.amo
    held: list[bytes] = []
    deliver = fake.deliver
    lead = lead_with_calls(stack, crm, [0] * 10)
    fake.deliver = held.append
    try:
        for _ in range(5):
            moment = stack.clock() + timedelta(minutes=2)
            stack.clock.set(moment)
            crm.call(lead, "7", moment, 0)
    finally:
        fake.deliver = deliver
    stack.clock.advance(timedelta(minutes=1))
    crm.reject(lead, "7", stack.clock())
    stack.pump()
    assert _rejections(stack, crm.tenant, lead) == []
    for body in held:  # the late webhooks, at last
        deliver(body)
    stack.pump()
    assert stack.ctx.store.call_totals(crm.tenant, [entity(lead)])[entity(lead)][0] == 15
    assert _rejections(stack, crm.tenant, lead) == []


def test_calls_api_needs_the_key_and_a_known_card(stack, crm):
    status, _ = stack.get(f"/tenants/{crm.tenant}/leads/1/calls")
    assert status == 401
    key = {"X-Api-Key": stack.api_key(crm.tenant)}
    assert stack.get(f"/tenants/{crm.tenant}/leads/99999999/calls", headers=key)[0] == 404
    status, body = stack.get(f"/tenants/{crm.tenant}/leads/abc/calls", headers=key)
    assert status == 400 and "positive number" in body["error"]
    other = AMO_TENANT if crm.tenant == B24_TENANT else B24_TENANT
    lead = lead_with_calls(stack, crm, [33])
    assert stack.get(f"/tenants/{other}/leads/{lead}/calls", headers=key)[0] == 401


def test_calls_reconciliation_moves_its_checkpoint_about_once_in_two_hours(stack, crm, monkeypatch):
    lead = lead_with_calls(stack, crm, [50])
    stack.clock.advance(timedelta(minutes=5))
    stack.reconcile_fed()
    stack.pump()
    writes = checkpoint_writes(stack, monkeypatch, crm.tenant, "reconcile-calls")
    for _ in range(3):  # the known call is listed again (the hour's overlap): nothing new, no write
        stack.clock.advance(timedelta(minutes=10))
        assert stack.reconcile_fed() == 0
    # A call whose webhooks are lost is found from the same checkpoint, still without a write.
    stack.drop_next = 2 if crm.tenant == B24_TENANT else 1
    stack.clock.advance(timedelta(minutes=5))
    crm.call(lead, "7", stack.clock(), 65, "https://records.example/lost-later.mp3")
    stack.pump()
    stack.clock.advance(timedelta(minutes=10))
    assert stack.reconcile_fed() >= 1
    stack.pump()
    body = calls_api(stack, crm.tenant, lead)
    assert (
        body["attempts_total"] == 2
        and body["calls"][-1]["record_url"] == "https://records.example/lost-later.mp3"
    )
    assert writes == []
    # Two hours after the first call the listing reaches back that far: the checkpoint moves, once.
    stack.clock.set(at(stack, 12.5))
    assert stack.reconcile_fed() == 0
    stack.clock.advance(timedelta(minutes=10))
    assert stack.reconcile_fed() == 0
    assert len(writes) == 1
