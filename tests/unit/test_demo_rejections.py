"""The demo's rejections (demo/rejections.py): every rejection of the week has a reason, one manager
per CRM dumps leads into reasons nobody reviews, declined leads lose the calls after the decline,
and the days before the week give the reason audit a baseline on which exactly that manager is
flagged (the audit's own code on the planned rejections; the demo's replay stores the same ones)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from demo.rejections import HISTORY_WEEKS, REASONS, is_junker, plan_rejections
from demo.replay import DEMO_TENANTS
from demo.week import MSK, WEEK_START, demo_week, tally_calls
from leadwatch.events import EntityRef, EntityType
from workflows.qc import audit

MIN_BASELINE = 5  # demo.qc's demo-only setting (importing demo.qc needs the local stack's packages)


@pytest.fixture(scope="module")
def planned():
    week = demo_week(DEMO_TENANTS)
    plan = plan_rejections(week, 7)
    tally_calls(week.actions, week.settle_until)
    return week, plan


def records(week, plan, tenant: str) -> list[audit.RejectionRecord]:
    return [
        audit.RejectionRecord(
            EntityRef(EntityType.LEAD, a.lead.key),
            a.lead.manager.crm_id,
            a.at,
            REASONS[a.lead.reason].action == "ignore",
        )
        for a in [*plan.history, *week.actions]
        if a.kind == "reject" and a.lead.tenant == tenant and a.at <= week.settle_until
    ]


def test_every_rejection_has_a_reason_and_the_dumper_ignores_all(planned) -> None:
    week, plan = planned
    rejects = [a for a in [*plan.history, *week.actions] if a.kind == "reject"]
    assert rejects and all(a.lead.reason in REASONS for a in rejects)
    for tenant, dumper in plan.dumpers.items():
        assert is_junker(dumper) and tenant in DEMO_TENANTS
        dumped = [
            a.lead for a in rejects if a.lead.manager is dumper and a.at.date() >= plan.audited.first_day
        ]
        assert len(dumped) >= 5
        assert all(REASONS[lead.reason].action == "ignore" for lead in dumped)
    # Most rejections of the week have a reason a reviewer checks.
    mine = [a.lead for a in week.actions if a.kind == "reject"]
    assert sum(REASONS[lead.reason].action == "check" for lead in mine) > len(mine) / 2


def test_a_declined_lead_is_not_dialed_after_the_decline(planned) -> None:
    week, plan = planned
    assert plan.declined > 0
    rejected = {a.lead.key: a.at for a in week.actions if a.kind == "reject"}
    assert not [
        a for a in week.actions if a.kind == "call" and a.lead.key in rejected and a.at > rejected[a.lead.key]
    ]


def test_the_days_before_end_where_the_week_begins(planned) -> None:
    _week, plan = planned
    assert plan.history_start.date() == plan.audited.first_day - timedelta(weeks=HISTORY_WEEKS)
    assert all(plan.history_start <= a.at < WEEK_START for a in plan.history)
    assert {lead.tenant for lead in plan.history_leads} == set(DEMO_TENANTS)


def test_the_audit_flags_the_dumping_manager_alone(planned) -> None:
    week, plan = planned
    rules = audit.AuditRules(baseline_weeks=HISTORY_WEEKS, min_baseline=MIN_BASELINE)
    for tenant, dumper in plan.dumpers.items():
        result = audit.audit(records(week, plan, tenant), plan.audited, rules, MSK)
        [flagged] = result.flagged
        assert flagged.subject == dumper.crm_id
        assert min(p for p in (flagged.p_baseline, flagged.p_rest) if p is not None) < rules.significance
        assert flagged.p_baseline is not None  # compared with their own weeks before, too


def test_the_plan_is_the_same_for_the_same_seed() -> None:
    def reasons(seed: int) -> list[tuple[str, str | None]]:
        week = demo_week(DEMO_TENANTS, leads_per_day=10, managers=6, seed=seed)
        plan = plan_rejections(week, seed)
        return [(a.lead.key, a.lead.reason) for a in [*plan.history, *week.actions] if a.kind == "reject"]

    assert reasons(3) == reasons(3) != reasons(4)
