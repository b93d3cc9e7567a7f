"""Timeliness end to end, on each CRM: webhook -> inbox -> queue -> worker -> sweep,
with moto's server and the fake CRM and Telegram servers over HTTP."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock
from tests.integration.conftest import checkpoint_writes
from workflows.timeliness.messages import LATE_ALERT

MSK = ZoneInfo("Europe/Moscow")
TUESDAY_10 = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)


@pytest.fixture(scope="module")
def stack():
    clock = SimClock(TUESDAY_10)
    with LocalStack(clock, managers={"7": "Anna Petrova", "8": "Ivan Orlov"}) as running:
        yield running


@pytest.fixture(params=[B24_TENANT, AMO_TENANT])
def crm(request, stack):
    """A fresh start for each test: clock back to Tuesday 10:00, logs and faults cleared."""
    stack.clock.set(TUESDAY_10)
    for fake in (stack.bitrix, stack.amo, stack.telegram):
        fake.clear_faults()
        fake.clear_log()
    stack.telegram.messages.clear()
    stack.drop_next = 0
    driver = BitrixDriver(stack.bitrix) if request.param == B24_TENANT else AmoDriver(stack.amo)
    return driver


def _week(stack: LocalStack, weeks: int) -> None:
    """Each test lives in its own week so tests in one module never share due buckets."""
    stack.clock.set(TUESDAY_10 + timedelta(days=7 * weeks))


def journal(stack: LocalStack, tenant: str) -> list:
    now = stack.clock()
    return stack.ctx.store.violations(tenant, now - timedelta(days=400), now + timedelta(days=400))


def messages_about(stack: LocalStack, lead_id: str, tenant: str | None = None) -> list:
    """Telegram messages linking to this card (its URL as the adapter builds it)."""
    found = []
    for name in [tenant] if tenant else [B24_TENANT, AMO_TENANT]:
        config = stack.ctx.tenant(name)
        url = stack.ctx.adapter(config).card_url(_entity(lead_id))
        found += [m for m in stack.telegram.messages if f'href="{url}"' in m.text]
    return found


def test_on_time_and_late_leads_get_their_verdicts(stack, crm):
    _week(stack, 1)
    t0 = stack.clock()
    quick = crm.create("Quick one", "7", t0)
    slow = crm.create("Forgotten one", "8", t0)
    stack.pump()
    assert crm.intake(quick) is not None and crm.intake(slow) is not None  # the intake stamp is on the card
    crm.take(quick, "7", t0 + timedelta(minutes=9))
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=16))
    stack.settle()
    yes, no = ("Y", "N") if crm.tenant == B24_TENANT else ("Yes", "No")
    assert crm.verdict(quick) == yes
    assert crm.verdict(slow) == no
    assert messages_about(stack, quick) == []
    [alert] = messages_about(stack, slow)
    assert "Forgotten one" in alert.text and "Ivan Orlov" in alert.text
    # In the tenant's language: the Bitrix24 tenant's is Russian (its calendar's), the amoCRM one's English.
    header = (
        "⏰ <b>Лид не обработан вовремя</b>"
        if crm.tenant == B24_TENANT
        else "⏰ <b>Lead not processed on time</b>"
    )
    assert LATE_ALERT.of(alert.text) and alert.text.startswith(header)
    late = [row for row in journal(stack, crm.tenant) if row.entity == f"lead:{slow}"]
    assert len(late) == 1 and late[0].manager == "8" and late[0].type == "late_first_processing"
    status, body = stack.get(
        f"/tenants/{crm.tenant}/timeliness?from={t0.date()}&to={t0.date()}",
        headers={"X-Api-Key": stack.api_key(crm.tenant)},
    )
    assert status == 200
    by_name = {row["name"]: row for row in body["managers"]}
    assert by_name["Anna Petrova"]["on_time"] >= 1
    assert by_name["Ivan Orlov"]["late"] >= 1


def test_a_call_by_the_responsible_manager_counts_as_processing(stack, crm):
    _week(stack, 2)
    t0 = stack.clock()
    lead = crm.create("Called back", "7", t0)
    stack.pump()
    crm.call(lead, "7", t0 + timedelta(minutes=5))
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=16))
    stack.settle()
    assert crm.verdict(lead) == ("Y" if crm.tenant == B24_TENANT else "Yes")
    assert messages_about(stack, lead) == []


def test_the_same_webhook_three_times_is_one_lead_and_one_message(stack, crm):
    _week(stack, 3)
    t0 = stack.clock()
    bodies: list[bytes] = []
    fake = stack.bitrix if crm.tenant == B24_TENANT else stack.amo
    deliver = fake.deliver
    fake.deliver = bodies.append
    try:
        lead = crm.create("Sent thrice", "8", t0)
    finally:
        fake.deliver = deliver
    [body] = bodies
    key = stack.secrets["DEMO_AMO_HOOK_SECRET"] if crm.tenant == AMO_TENANT else None
    answers = [stack.post_hook(crm.tenant, body, key=key) for _ in range(3)]
    assert [a[0] for a in answers] == [200, 200, 200]
    assert [a[1]["accepted"] for a in answers] == [1, 0, 0]
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=16))
    stack.settle()
    stack.sweep()
    assert len(messages_about(stack, lead)) == 1
    assert len([r for r in journal(stack, crm.tenant) if r.entity == f"lead:{lead}"]) == 1
    assert stack.ctx.store.get_lead(crm.tenant, _entity(lead)) is not None


def _entity(lead_id: str):
    from leadwatch.events import EntityRef, EntityType

    return EntityRef(EntityType.LEAD, lead_id)


def test_bad_credentials_are_refused(stack, crm):
    if crm.tenant == B24_TENANT:
        body = stack.bitrix.event_body("ONCRMLEADADD", "1").replace(b"b24-app-token-Qw77", b"forged")
        status, payload = stack.post_hook(B24_TENANT, body)
        assert status == 403 and "application_token" in payload["error"]
        status, payload = stack.post_hook(B24_TENANT, b"event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=1")
        assert status == 401
    else:
        body = stack.amo.webhook_body("add", [{"id": 1, "status_id": 70011, "pipeline_id": 7001}])
        assert stack.post_hook(AMO_TENANT, body, key="wrong")[0] == 403
        assert stack.post_hook(AMO_TENANT, body)[0] == 401
    assert "forged" not in str(stack.ctx.store.rejects(crm.tenant))


def test_garbage_is_a_400_with_a_message_and_is_kept_only_when_authenticated(stack, crm):
    key = stack.secrets["DEMO_AMO_HOOK_SECRET"] if crm.tenant == AMO_TENANT else None
    before = len(stack.ctx.store.rejects(crm.tenant))
    status, payload = stack.post_hook(crm.tenant, b"\xff\xfe not a form at all [[[", key=key)
    assert status == 400
    assert payload["error"] and "Traceback" not in payload["error"]
    kept = stack.ctx.store.rejects(crm.tenant)
    if crm.tenant == AMO_TENANT:  # the URL's key proved the account sent it
        assert len(kept) == before + 1 and payload["kept_as"]
        assert "not a form" in max(kept, key=lambda r: r.received_at).text
    else:  # no token in it: anyone could have sent it, so nothing is stored
        assert len(kept) == before and "kept_as" not in payload


def test_an_unknown_tenant_is_a_404(stack, crm):
    assert stack.post_hook("nobody", b"a=1")[0] == 404


def test_crm_errors_during_the_sweep_are_retried_nothing_lost_nothing_doubled(stack, crm):
    _week(stack, 4)
    t0 = stack.clock()
    leads = [crm.create(f"Flaky {n}", "8", t0) for n in range(3)]
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=16))
    fake = stack.bitrix if crm.tenant == B24_TENANT else stack.amo
    if crm.tenant == B24_TENANT:
        from leadwatch.testing.bitrix24 import internal_error, query_limit_exceeded

        fake.fail_next(query_limit_exceeded, times=2)
        fake.fail_next(internal_error, times=1)
    else:
        from leadwatch.testing.amocrm import bad_gateway, too_many_requests

        fake.fail_next(too_many_requests, times=2)
        fake.fail_next(bad_gateway, times=1)
    from leadwatch.testing.telegram import too_many_requests as telegram_429

    stack.telegram.fail_next(telegram_429(retry_after=2), times=1)
    stack.settle()
    no = "N" if crm.tenant == B24_TENANT else "No"
    assert [crm.verdict(lead) for lead in leads] == [no, no, no]
    assert [len(messages_about(stack, lead)) for lead in leads] == [1, 1, 1]
    assert 2 in stack.sleeps.waits  # Telegram's retry_after was honoured


def test_a_crm_outage_leaves_leads_due_until_it_is_over(stack, crm):
    _week(stack, 5)
    t0 = stack.clock()
    lead = crm.create("During an outage", "8", t0)
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=16))
    fake = stack.bitrix if crm.tenant == B24_TENANT else stack.amo
    module = __import__(
        f"leadwatch.testing.{'bitrix24' if crm.tenant == B24_TENANT else 'amocrm'}",
        fromlist=["internal_error"],
    )
    fake.fail_randomly(1.0, module.internal_error)
    stack.sweep()
    assert crm.verdict(lead) is None
    assert len(messages_about(stack, lead)) <= 1
    fake.clear_faults()
    stack.clock.set(t0 + timedelta(minutes=17))
    stack.sweep()
    stack.sweep()
    assert crm.verdict(lead) == ("N" if crm.tenant == B24_TENANT else "No")
    assert len(messages_about(stack, lead)) == 1
    assert len([r for r in journal(stack, crm.tenant) if r.entity == f"lead:{lead}"]) == 1


def test_overlapping_sweeps_alert_once(stack, crm):
    _week(stack, 6)
    t0 = stack.clock()
    leads = [crm.create(f"Overlap {n}", "8", t0) for n in range(5)]
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=16))
    from workflows.timeliness.sweep import sweep

    threads = [threading.Thread(target=sweep, args=(stack.ctx,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stack.sweep()
    assert [len(messages_about(stack, lead)) for lead in leads] == [1] * 5


def test_lost_webhooks_are_found_by_reconciliation(stack, crm):
    _week(stack, 7)
    t0 = stack.clock()
    stack.drop_next = 4
    lost = [crm.create(f"Lost {n}", "7", t0) for n in range(4)]
    assert len(stack.dropped) >= 4
    crm.take(lost[0], "7", t0 + timedelta(minutes=3))  # this one's hook arrives: the worker reads the card
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=10))
    stack.reconcile()
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=16))
    stack.settle()
    yes, no = ("Y", "N") if crm.tenant == B24_TENANT else ("Yes", "No")
    assert [crm.verdict(lead) for lead in lost] == [yes, no, no, no]
    assert [len(messages_about(stack, lead)) for lead in lost] == [0, 1, 1, 1]


def test_a_quiet_reconciliation_writes_no_checkpoint_and_still_finds_a_lost_webhook(stack, crm, monkeypatch):
    _week(stack, 7)  # in the afternoon: after every other test's checkpoint
    t0 = stack.clock() + timedelta(hours=4)
    stack.clock.set(t0)
    crm.create("Seen", "7", t0)
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=1))
    stack.reconcile()  # the checkpoint moves to the card's change
    writes = checkpoint_writes(stack, monkeypatch, crm.tenant, "reconcile")
    for minute in (2, 3, 4):  # nothing changed: the card is listed again (the overlap), no write
        stack.clock.set(t0 + timedelta(minutes=minute))
        stack.reconcile()
    assert writes == []
    stack.clock.set(t0 + timedelta(minutes=5))
    stack.drop_next = 1
    lost = crm.create("Lost", "7", stack.clock())
    assert stack.drop_next == 0
    stack.clock.set(t0 + timedelta(minutes=10))
    stack.reconcile()
    stack.pump()
    assert len(writes) == 1
    stack.clock.set(t0 + timedelta(minutes=21))  # its control time (15 minutes) has passed
    stack.settle()
    assert crm.verdict(lost) == ("N" if crm.tenant == B24_TENANT else "No")
    assert len(messages_about(stack, lost)) == 1


def _crm_writes(stack: LocalStack) -> list:
    """The requests that changed a card in a fake CRM (Bitrix24 `crm.lead.update`, alone or in
    a batch; amoCRM PATCH)."""
    bitrix = [r for r in stack.bitrix.requests() if b"crm.lead.update" in r.path.encode() + r.body]
    return bitrix + stack.amo.requests(method="PATCH")


def test_repeated_stage_activity_and_call_webhooks_are_queued_again_and_change_nothing(stack, crm):
    """Only a card's arrival and deletion are deduped by the inbox: a stage change, an activity
    or a call delivered again is queued and processed again, and changes nothing."""
    _week(stack, 9)
    t0 = stack.clock()
    lead = crm.create("Said twice", "7", t0)
    stack.pump()
    fake = stack.bitrix if crm.tenant == B24_TENANT else stack.amo
    key = stack.secrets["DEMO_AMO_HOOK_SECRET"] if crm.tenant == AMO_TENANT else None
    bodies: list[bytes] = []
    deliver = fake.deliver
    fake.deliver = bodies.append
    try:
        stack.clock.set(t0 + timedelta(minutes=3))
        crm.call(lead, "7", stack.clock(), 40, "https://records.example/twice.mp3")
        stack.clock.set(t0 + timedelta(minutes=4))
        crm.take(lead, "7", stack.clock())
    finally:
        fake.deliver = deliver
    assert len(bodies) >= 2
    first = [stack.post_hook(crm.tenant, body, key=key) for body in bodies]
    stack.pump()
    state = stack.ctx.store.get_lead(crm.tenant, _entity(lead))
    assert state is not None and state.processed_at is not None
    assert stack.ctx.store.call_totals(crm.tenant, [_entity(lead)])[_entity(lead)][0] == 1
    inbox = stack.ctx.store.events(crm.tenant)
    writes = len(_crm_writes(stack))
    assert writes >= 1  # the intake stamp
    for _ in range(2):
        again = [stack.post_hook(crm.tenant, body, key=key) for body in bodies]
        # Queued again, not taken for duplicates: nothing was written to recognise them by.
        assert [a[1] for a in again] == [a[1] for a in first]
        assert all(a[1]["accepted"] >= 1 and a[1]["duplicates"] == 0 for a in again)
        stack.pump()
    assert stack.ctx.store.get_lead(crm.tenant, _entity(lead)) == state
    assert stack.ctx.store.events(crm.tenant) == inbox  # no inbox row for any of them
    assert len(_crm_writes(stack)) == writes
    stack.clock.set(t0 + timedelta(minutes=16))
    stack.settle()
    assert crm.verdict(lead) == ("Y" if crm.tenant == B24_TENANT else "Yes")
    assert messages_about(stack, lead) == []
    status, body = stack.get(
        f"/tenants/{crm.tenant}/leads/{lead}/calls", headers={"X-Api-Key": stack.api_key(crm.tenant)}
    )
    assert status == 200 and (body["attempts_total"], body["touches_total"]) == (1, 1)
