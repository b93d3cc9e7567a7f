"""Per-tenant scheduling through the real Lambdas (dispatcher, the jobs Lambda invoked
asynchronously) on the local stack: one tenant's failing job holds up no other tenant, is tried
once more, parked as dead where its alarm sees it, and done at a later tick; a job that cannot
finish in one go continues; an idle minute starts no job."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import workflows.timeliness.sweep as sweep_module
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock

pytestmark = pytest.mark.integration

MSK = ZoneInfo("Europe/Moscow")
MONDAY_9 = datetime(2025, 11, 10, 9, 0, tzinfo=MSK)


@pytest.fixture(scope="module")
def stack():
    with LocalStack(SimClock(MONDAY_9)) as running:
        yield running


def verdict_of(stack: LocalStack, tenant: str, lead: str) -> str | None:
    return stack.ctx.store.get_lead(tenant, EntityRef(EntityType.LEAD, lead)).verdict


def test_a_failing_tenant_holds_up_no_other_and_is_done_later(stack, monkeypatch):
    monday = MONDAY_9 + timedelta(weeks=1)
    stack.clock.set(monday)
    b24 = BitrixDriver(stack.bitrix).create("Broken tenant's lead", "7", monday)
    amo = AmoDriver(stack.amo).create("Healthy tenant's lead", "7", monday)
    stack.pump()
    real = sweep_module.sweep_tenant

    def broken_for_b24(ctx, config, now, budget=None):
        if config.tenant == B24_TENANT:
            raise RuntimeError("a bug that only this tenant's data triggers")
        return real(ctx, config, now, budget)

    monkeypatch.setattr(sweep_module, "sweep_tenant", broken_for_b24)
    stack.clock.set(monday.replace(hour=11, minute=20))
    failed_before = stack.failed_job_invocations
    reports = stack.sweep()
    assert reports[AMO_TENANT]["closed"] == 1 and B24_TENANT not in reports
    assert verdict_of(stack, AMO_TENANT, amo) == "late" and verdict_of(stack, B24_TENANT, b24) is None
    # Its invocation failed, was tried once more, and went to the dead-letter queue as Lambda's
    # on-failure record, naming the job.
    assert stack.failed_job_invocations - failed_before == 2
    [dead] = [json.loads(m["Body"]) for m in stack.dead_letters()]
    assert dead["requestContext"]["condition"] == "RetriesExhausted"
    assert dead["responsePayload"]["errorType"] == "JobsFailed"
    assert f"timeliness.sweep for {B24_TENANT}" in dead["responsePayload"]["errorMessage"]
    [job] = dead["requestPayload"]["jobs"]
    assert job["job"]["tenant"] == B24_TENANT
    monkeypatch.setattr(sweep_module, "sweep_tenant", real)  # the fix is deployed
    stack.clock.advance(timedelta(minutes=1))
    reports = stack.sweep()
    # The broken tenant's wake-up was never moved on, so its next tick runs it; the other is asleep.
    assert reports[B24_TENANT]["closed"] == 1 and AMO_TENANT not in reports
    assert verdict_of(stack, B24_TENANT, b24) == "late"


def test_a_job_that_cannot_finish_at_once_continues_until_done(stack, monkeypatch):
    monday = MONDAY_9 + timedelta(weeks=2)
    stack.clock.set(monday)
    crm = BitrixDriver(stack.bitrix)
    leads = [crm.create(f"Lead {n}", "7", monday + timedelta(minutes=n)) for n in range(5)]
    stack.pump()
    monkeypatch.setattr(sweep_module, "MAX_PER_SWEEP", 2)  # a page of two: three jobs for five cards
    stack.clock.set(monday.replace(hour=11, minute=30))
    stack.job_reports.clear()
    stack.sweep()
    mine = [report for tenant, report in stack.job_reports if tenant == B24_TENANT]
    assert [r["closed"] for r in mine] == [2, 2, 1] and [r["more"] for r in mine] == [True, True, False]
    assert all(verdict_of(stack, B24_TENANT, lead) == "late" for lead in leads)


def test_an_idle_minute_starts_no_job(stack):
    stack.clock.set(MONDAY_9 + timedelta(weeks=3, hours=5))  # nothing falls due this week
    stack.sweep()  # whatever was still awake settles
    stack.clock.advance(timedelta(minutes=1))
    stack.job_reports.clear()
    calls_before = stack.invocations.calls
    answer = stack.client.lambda_.invoke(
        "timeliness_sweep",
        stack.client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        ),
    ).payload
    assert answer == {"tenants": 2, "due": 0}
    assert stack.invocations.calls == calls_before
    assert stack.pump_jobs() == 0
