"""`enabled: false` switches a process off for one tenant completely: no CRM read or write,
no state, no schedule work and no message for it, on both CRMs. One test per process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.stack import (
    AMO_TENANT,
    B24_TENANT,
    AmoDriver,
    BitrixDriver,
    CrmDriver,
    LocalStack,
    SimClock,
)
from workflows.dialing.messages import REJECTION_ALERT, REPORT

pytestmark = pytest.mark.integration

MSK = ZoneInfo("Europe/Moscow")
MONDAY_9 = datetime(2025, 11, 10, 9, 0, tzinfo=MSK)
WEEKS = iter(range(1, 1000))
# The CRM calls only dialing makes: the telephony statistics and amoCRM's events feed.
TELEPHONY = ("voximplant.statistic", "/api/v4/events", "crm.activity.list", "/notes")


@pytest.fixture(scope="module")
def stack():
    with LocalStack(SimClock(MONDAY_9), managers={"7": "Anna Petrova"}) as running:
        yield running


@pytest.fixture(params=[B24_TENANT, AMO_TENANT])
def crm(request, stack) -> CrmDriver:
    stack.clock.set(MONDAY_9 + timedelta(weeks=next(WEEKS)))
    stack.telegram.messages.clear()
    return BitrixDriver(stack.bitrix) if request.param == B24_TENANT else AmoDriver(stack.amo)


@contextmanager
def switched_off(stack: LocalStack, tenant: str, process: str) -> Iterator[None]:
    config = stack.ctx.tenant(tenant)
    section = config.section(process).model_copy(update={"enabled": False})
    stack.ctx.registry.put(config.model_copy(update={process: section}))
    try:
        yield
    finally:
        stack.ctx.registry.put(config)


def fake_of(stack: LocalStack, crm: CrmDriver):
    return stack.bitrix if crm.tenant == B24_TENANT else stack.amo


def mine(stack: LocalStack, crm: CrmDriver) -> list[str]:
    """The messages about this tenant's cards (both tenants of the stack share one chat)."""
    return [m.text for m in stack.telegram.messages if fake_of(stack, crm).url in m.text]


def test_timeliness_off_reads_writes_stores_and_sends_nothing(stack, crm):
    fake = fake_of(stack, crm)
    with switched_off(stack, crm.tenant, "timeliness"):
        fake.clear_log()
        start = stack.clock()
        lead = crm.create("Nobody watches this one", "7", start)
        stack.pump()
        stack.clock.set(start + timedelta(hours=3))  # long past its control time
        stack.settle()
        stack.reconcile()
        stack.pump()
        assert fake.log == []  # not one CRM request: no card read, no intake stamp, no verdict
        assert crm.intake(lead) in (None, "") and crm.verdict(lead) in (None, "")
        assert stack.ctx.store.get_lead(crm.tenant, EntityRef(EntityType.LEAD, lead)) is None
        assert mine(stack, crm) == []
        status, body = stack.get(
            f"/tenants/{crm.tenant}/timeliness", {"X-Api-Key": stack.api_key(crm.tenant)}
        )
        assert status == 404 and "off" in body["error"]
    # Switched on again, the next sighting of the card takes it in.
    crm.take(lead, "7", stack.clock())
    stack.pump()
    assert stack.ctx.store.get_lead(crm.tenant, EntityRef(EntityType.LEAD, lead)) is not None


def test_dialing_off_counts_judges_reports_and_reconciles_nothing(stack, crm):
    fake = fake_of(stack, crm)
    with switched_off(stack, crm.tenant, "dialing"):
        start = stack.clock().replace(hour=10)
        stack.clock.set(start)
        lead = crm.create("Dialed twice, then junked", "7", start)
        crm.take(lead, "7", start + timedelta(minutes=2))
        for n in range(2):
            moment = start + timedelta(minutes=10 + 5 * n)
            stack.clock.set(moment)
            crm.call(lead, "7", moment, 45, None)
        stack.pump()
        fake.clear_log()
        crm.reject(lead, "7", stack.clock() + timedelta(minutes=1))
        stack.pump()
        stack.clock.set(start.replace(hour=18, minute=31))
        reports = stack.run_schedule("dialing", "report")
        stack.reconcile()
        stack.pump()
        entity = EntityRef(EntityType.LEAD, lead)
        assert stack.ctx.store.calls_of(crm.tenant, entity) == []
        state = stack.ctx.store.get_lead(crm.tenant, entity)
        assert state is not None and state.rejected_at is None
        assert not [r for r in fake.log if any(part in r.path for part in TELEPHONY)]
        assert not [m for m in mine(stack, crm) if REJECTION_ALERT.of(m) or REPORT.of(m)]
        assert crm.tenant not in reports
        status, body = stack.get(
            f"/tenants/{crm.tenant}/leads/{lead}/calls", {"X-Api-Key": stack.api_key(crm.tenant)}
        )
        assert status == 404 and "off" in body["error"]
    # Timeliness went on as usual: the card was taken in and judged on time.
    assert state.processed_at is not None
