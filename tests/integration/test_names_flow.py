"""Names end to end, on each CRM: with no `managers` map in the tenant files, a late-lead alert names
the manager and the stage as the CRM has them (read once, kept in the state table), an id the CRM
does not know stays readable, and the read API answers from what is kept, never calling the CRM."""

from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

import pytest

from leadwatch.store.names import STAGES, USERS
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock

MSK = ZoneInfo("Europe/Moscow")
TUESDAY_10 = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)
ANNA = "Анна О'Брайен & <Сыновья>"
B24_NEW = "Не обработан <новый> & срочный"
AMO_FIRST = "Неразобранное & <входящие>"


@pytest.fixture(scope="module")
def stack():
    with LocalStack(
        SimClock(TUESDAY_10), managers={"7": ANNA, "8": "Ivan Orlov"}, tenant_managers=False
    ) as s:
        s.bitrix.rename_stage("STATUS", "NEW", B24_NEW)
        s.amo.statuses[s.amo.first_stages()[0]] = AMO_FIRST
        yield s


@pytest.fixture(params=[B24_TENANT, AMO_TENANT])
def crm(request, stack):
    stack.clock.set(TUESDAY_10)
    stack.telegram.messages.clear()
    for fake in (stack.bitrix, stack.amo):
        fake.clear_log()
    return BitrixDriver(stack.bitrix) if request.param == B24_TENANT else AmoDriver(stack.amo)


def name_reads(stack: LocalStack, tenant: str) -> list[str]:
    """The CRM requests that read names: users, stages."""
    if tenant == B24_TENANT:
        return [
            r.path.rsplit("/", 1)[-1]
            for r in stack.bitrix.requests("/rest/")
            if any(m in r.path or m.encode() in r.body for m in ("user.get", "crm.status.list"))
        ]
    return [r.path for r in stack.amo.requests() if r.path in ("/api/v4/users", "/api/v4/leads/pipelines")]


def test_a_late_alert_names_the_manager_and_the_stage_from_the_crm(stack, crm):
    tenant = crm.tenant
    assert stack.ctx.tenant(tenant).managers == {}
    t0 = stack.clock()
    crm.create("Заявка & <i>test", "7", t0)
    crm.create("Nobody's", "4242", t0)
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=16))
    stack.settle()

    texts = [m.text for m in stack.telegram.messages]
    [alert] = [t for t in texts if "Заявка &amp; &lt;i&gt;test" in t]
    stage = B24_NEW if tenant == B24_TENANT else AMO_FIRST
    # In the tenant's language: the Bitrix24 tenant's is Russian, the amoCRM one's English.
    if tenant == B24_TENANT:
        manager, still_in, unknown = "Менеджер: ", "Всё ещё на этапе: ", "Менеджер: пользователь 4242"
    else:
        manager, still_in, unknown = "Manager: ", "Still in: ", "Manager: user 4242"
    assert f"{manager}{escape(ANNA, quote=False)}" in alert
    assert f"{still_in}{escape(stage, quote=False)}" in alert
    [other] = [t for t in texts if "Nobody" in t]
    assert unknown in other
    # Read once each and kept for the tenant: the next container reads the state table instead.
    assert len(name_reads(stack, tenant)) == 2
    kept = stack.ctx.store.get_names(tenant, USERS)
    assert kept.names["7"] == ANNA and "4242" not in kept.names
    assert stack.ctx.store.get_names(tenant, STAGES).names

    # The read API names the manager from what is kept, and calls no CRM.
    for fake in (stack.bitrix, stack.amo):
        fake.clear_log()
    status, body = stack.get(
        f"/tenants/{tenant}/timeliness?from={t0.date()}&to={t0.date()}",
        headers={"X-Api-Key": stack.api_key(tenant)},
    )
    assert status == 200
    assert {row["manager"]: row["name"] for row in body["managers"]} == {"7": ANNA, "4242": "user 4242"}
    assert stack.bitrix.requests() == [] and stack.amo.requests() == []
