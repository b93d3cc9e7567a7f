"""Nothing stays stuck, on each CRM: a card deleted in the CRM (with its webhook, or with the
webhook lost) and a bot removed from the head's chat each close their work with a journalled
reason after a bounded number of attempts, and no checkpoint stays behind on them.
Through the real handlers: moto's server, the fake CRM and Telegram servers over HTTP."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from leadwatch.events import EntityRef, EntityType
from leadwatch.executor import REFUSALS_BEFORE_GIVING_UP
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock
from workflows.timeliness.sweep import CHECKPOINT

pytestmark = pytest.mark.integration

MSK = ZoneInfo("Europe/Moscow")
TUESDAY_10 = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)
CHAT = "-100777"


@pytest.fixture(scope="module")
def stack():
    with LocalStack(SimClock(TUESDAY_10), managers={"7": "Anna Petrova"}) as running:
        yield running


@pytest.fixture(params=[B24_TENANT, AMO_TENANT])
def crm(request, stack):
    for fake in (stack.bitrix, stack.amo, stack.telegram):
        fake.clear_faults()
        fake.clear_log()
    stack.telegram.messages.clear()
    stack.telegram.blocked.clear()
    return BitrixDriver(stack.bitrix) if request.param == B24_TENANT else AmoDriver(stack.amo)


def _week(stack: LocalStack, weeks: int, crm) -> datetime:
    # Each test (and CRM) in a week of its own: no test sees another's due cards.
    offset = 2 * weeks + (crm.tenant == AMO_TENANT)
    stack.clock.set(TUESDAY_10 + timedelta(days=7 * offset))
    return stack.clock()


def _card(stack: LocalStack, crm, lead_id: str):
    return stack.ctx.store.get_lead(crm.tenant, EntityRef(EntityType.LEAD, lead_id))


def _gave_up(stack: LocalStack, crm, since: datetime) -> list:
    rows = stack.ctx.store.violations(crm.tenant, since, stack.clock() + timedelta(days=1))
    return [row for row in rows if row.type == "gave_up"]


def _writes(stack: LocalStack, crm) -> int:
    """Card writes sent to the CRM (Bitrix24 batches of crm.*.update; amoCRM bulk PATCH)."""
    if crm.tenant == B24_TENANT:
        return len(stack.bitrix.requests("/batch")) + len(stack.bitrix.requests("crm.lead.update"))
    return len(stack.amo.requests("/api/v4/leads", method="PATCH"))


def _sweep_minutes(stack: LocalStack, minutes: int) -> None:
    for _ in range(minutes):
        stack.clock.advance(timedelta(minutes=1))
        stack.settle()


def test_a_deletion_webhook_closes_the_card_at_once_and_nothing_is_written_to_it(stack, crm):
    t0 = _week(stack, 1, crm)
    lead = crm.create("Deleted soon", "7", t0)
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=3))
    crm.take(lead, "7", t0 + timedelta(minutes=3))
    crm.delete(lead)
    stack.pump()
    card = _card(stack, crm, lead)
    assert card.deleted_at is not None and card.verdict == "deleted"
    stack.clock.set(t0 + timedelta(minutes=20))
    for fake in (stack.bitrix, stack.amo):
        fake.clear_log()
    stack.settle()
    assert _writes(stack, crm) == 0
    assert _gave_up(stack, crm, t0) == []


def test_a_card_deleted_with_its_webhook_lost_is_given_up_after_three_refusals(stack, crm):
    t0 = _week(stack, 2, crm)
    lead = crm.create("Deleted, webhook lost", "7", t0)
    other = crm.create("Still here", "7", t0)
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=3))  # a Bitrix24 event's identity is its second
    crm.take(lead, "7", t0 + timedelta(minutes=3))
    stack.clock.set(t0 + timedelta(minutes=4))
    crm.take(other, "7", t0 + timedelta(minutes=4))
    stack.pump()
    crm.delete(lead, emit=False)
    for fake in (stack.bitrix, stack.amo):
        fake.clear_log()
    stack.clock.set(t0 + timedelta(minutes=15))
    _sweep_minutes(stack, REFUSALS_BEFORE_GIVING_UP + 3)

    [row] = _gave_up(stack, crm, t0)
    assert row.entity == f"lead:{lead}"
    details = json.loads(row.details) if isinstance(row.details, str) else row.details
    assert details["detail"] == "card deleted" and details["attempts"] == REFUSALS_BEFORE_GIVING_UP
    card = _card(stack, crm, lead)
    # Judged while it existed (processed in 3 minutes), then let go: out of every index.
    assert card.verdict == "on_time" and card.deleted_at is not None
    assert _card(stack, crm, other).verdict == "on_time"
    yes = "Y" if crm.tenant == B24_TENANT else "Yes"
    assert crm.verdict(other) == yes
    # Nothing holds the sweep's checkpoint any more, and no further write goes to the deleted card.
    checkpoint = stack.ctx.store.get_checkpoint(crm.tenant, CHECKPOINT)
    assert checkpoint == stack.clock().astimezone(ZoneInfo("UTC")).date().isoformat()
    for fake in (stack.bitrix, stack.amo):
        fake.clear_log()
    _sweep_minutes(stack, 3)
    assert _writes(stack, crm) == 0


def test_a_bot_removed_from_the_chat_closes_the_alert_with_its_reason(stack, crm):
    t0 = _week(stack, 3, crm)
    stack.telegram.block(CHAT, "Forbidden: bot was kicked from the group chat")
    late = crm.create("Nobody took it", "7", t0)
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=16))
    stack.settle()
    _sweep_minutes(stack, REFUSALS_BEFORE_GIVING_UP + 2)
    [row] = _gave_up(stack, crm, t0)
    assert row.entity == f"telegram:{CHAT}"
    details = json.loads(row.details) if isinstance(row.details, str) else row.details
    assert details["detail"] == "alert failed: bot not in chat"
    assert "Nobody took it" in details["text"]
    card = _card(stack, crm, late)
    assert card.verdict == "late"  # the verdict stands, only its alert is lost
    assert stack.telegram.messages == []

    # The bot is added back: the next late lead is alerted as usual.
    stack.telegram.blocked.clear()
    t1 = stack.clock()
    again = crm.create("Also late", "7", t1)
    stack.pump()
    stack.clock.set(t1 + timedelta(minutes=16))
    stack.settle()
    assert _card(stack, crm, again).verdict == "late"
    assert [m for m in stack.telegram.messages if "Also late" in m.text]
    assert len(_gave_up(stack, crm, t0)) == 1


def test_a_message_that_failed_backs_off_in_the_real_queue(stack, crm):
    t0 = _week(stack, 4, crm)
    fake = stack.bitrix if crm.tenant == B24_TENANT else stack.amo
    lead = crm.create("During an outage", "7", t0)
    fake.fail_next(crm_internal_error(crm), times=1000)  # the CRM is down
    stack.honour_backoff = True
    try:
        stack.pump()
        attributes = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])
        counts = attributes["Attributes"]
        # Not back at once (the worker set 30 s), not lost, not in the dead-letter queue.
        assert counts["ApproximateNumberOfMessagesNotVisible"] == "1"
        assert counts["ApproximateNumberOfMessages"] == "0"
        assert stack.pump() == 0
    finally:
        stack.honour_backoff = False
        fake.clear_faults()
    # Thirty seconds later (told to SQS by the receipt), the outage over: the card is taken in.
    for handle in stack.backed_off:
        stack.sqs.change_message_visibility(
            QueueUrl=stack.queue_url, ReceiptHandle=handle, VisibilityTimeout=0
        )
    stack.backed_off.clear()
    assert stack.pump() >= 1  # the card's event, and the echo of leadwatch's own intake stamp
    assert _card(stack, crm, lead) is not None


def crm_internal_error(crm):
    from leadwatch.testing import amocrm, bitrix24

    return bitrix24.internal_error if crm.tenant == B24_TENANT else amocrm.internal_error


def test_reconciliation_is_dense_near_working_hours_and_finds_a_lost_lead_before_its_control_time(stack, crm):
    # Wednesday 02:30 in Moscow: a lead arrives at night and its webhook is lost.
    night = (_week(stack, 5, crm) + timedelta(days=1)).astimezone(MSK).replace(hour=2, minute=30)
    stack.clock.set(night)
    stack.drop_next = 1
    lead = crm.create("Lost at night", "7", night)
    assert stack.dropped and _card(stack, crm, lead) is None
    found_at, runs = None, {}
    tick = night
    while tick < night.replace(hour=12):  # ticks every 10 minutes until noon
        stack.clock.set(tick)
        reports = stack.reconcile()
        runs[tick] = crm.tenant in reports
        stack.pump()
        if found_at is None and _card(stack, crm, lead) is not None:
            found_at = tick
        tick += timedelta(minutes=10)
    card = _card(stack, crm, lead)
    assert found_at is not None and found_at <= night + timedelta(hours=1)
    assert found_at < card.due_at  # found hours before its control time (11:00)
    at_night = [t for t, ran in runs.items() if t.hour < 8 and ran]
    # Once an hour at night: the first tick of each hour (02:30 .. 02:50 wait for 03:00).
    assert at_night == [night.replace(hour=h, minute=0) for h in range(3, 8)]
    assert all(ran for t, ran in runs.items() if t.hour >= 8)  # every tick from an hour before work

    # In working hours a lost lead is found by the next tick, before its 15 minutes are up.
    stack.clock.set(night.replace(hour=10, minute=5))
    stack.drop_next = 1
    day_lead = crm.create("Lost by day", "7", stack.clock())
    stack.clock.set(night.replace(hour=10, minute=10))
    stack.reconcile()
    stack.pump()
    day_card = _card(stack, crm, day_lead)
    assert day_card is not None and stack.clock() < day_card.due_at
