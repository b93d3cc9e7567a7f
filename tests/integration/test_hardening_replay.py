"""Hardening replay: two working days on both CRMs with 3 workers draining the queue side by side,
the fakes at the services' real limits, cards deleted after they were worked on (half the deletion
webhooks lost), the bot out of the head's chat for a day and both CRMs down 40 minutes. Nothing
lost, nothing doubled, every stuck card closed with its reason, no answer over a limit, the CRM
calls per verdict bounded (printed)."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from datetime import datetime, time, timedelta

import pytest

from demo.replay import replay
from demo.week import actions_for, on_time_by_plan
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock
from tests.integration.test_fault_replay import MSK, mentions, two_days

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


HARDENING_SEED = 20251119
CHAT = "-100777"  # both demo tenants' head chat


def test_racing_workers_real_limits_deletions_a_lost_bot_and_an_outage_lose_and_double_nothing(
    caplog, progress
):
    """Two working days on both CRMs with 3 workers draining the queue side by side, the fakes at
    the services' real limits (amoCRM 7 a second, Telegram 1 a second per chat and 20 a minute per
    group, Bitrix24's leaky bucket), cards deleted after they were worked on (half of the deletion
    webhooks lost), the bot removed from the head's chat for the first day, and both CRMs down for
    40 minutes on the second morning. Nothing lost, nothing doubled, every stuck card closed with
    its reason, no answer over a limit, and the CRM calls per verdict stay bounded."""
    caplog.set_level(logging.WARNING)
    rng = random.Random(HARDENING_SEED)
    start = datetime(2025, 11, 19, 0, 0, tzinfo=MSK)  # Wed 19, Thu 20 Nov 2025
    clock = SimClock(start - timedelta(minutes=1))
    calendar, leads = two_days(rng, HARDENING_SEED, start, managers=12, leads_per_day=150)
    # 4% of the leads worked on are deleted 5 minutes later; half of those deletions lose their webhook.
    worked = [lead for lead in leads if lead.processed_at is not None]
    deleted = {
        lead.key: (lead.processed_at + timedelta(minutes=5), i % 2 == 0)
        for i, lead in enumerate(rng.sample(worked, len(worked) // 25))
    }  # type: ignore[operator]
    actions = [a for a in actions_for(leads) if a.lead.key not in deleted or a.at < deleted[a.lead.key][0]]
    until = max(calendar.control_time(lead.created_at, timedelta(minutes=15), time(11)) for lead in leads)
    bot_back = start + timedelta(days=1, hours=9)  # removed from the chat for the whole first day
    outage = (start + timedelta(days=1, hours=10), start + timedelta(days=1, hours=10, minutes=40))

    with LocalStack(clock, aws="inprocess") as stack:
        import leadwatch.testing.amocrm as amo_faults
        import leadwatch.testing.bitrix24 as b24_faults

        drivers = {B24_TENANT: BitrixDriver(stack.bitrix), AMO_TENANT: AmoDriver(stack.amo)}
        stack.backoff_on_clock = True  # the outage is waited out as the queue's back-off does in AWS
        stack.telegram.block(CHAT, "Forbidden: bot was kicked from the supergroup chat")

        def down(_request) -> bool:
            return outage[0] <= stack.clock() < outage[1]

        # Every request while the outage lasts (a certain "random" fault limited to the window).
        stack.bitrix.fail_randomly(1.0, b24_faults.internal_error, when=down)
        stack.amo.fail_randomly(1.0, amo_faults.bad_gateway, when=down)
        pending_deletions = sorted((at, key, emit) for key, (at, emit) in deleted.items())
        by_key = {lead.key: lead for lead in leads}

        def every_minute(now: datetime) -> None:
            if stack.telegram.blocked and now >= bot_back:
                stack.telegram.blocked.clear()  # added back to the chat
            while pending_deletions and pending_deletions[0][0] <= now:
                _, key, emit = pending_deletions.pop(0)
                lead = by_key[key]
                drivers[lead.tenant].delete(lead.crm_id, emit=emit)  # type: ignore[arg-type]

        replay(
            stack,
            calendar,
            actions,
            drivers,
            until + timedelta(minutes=10),
            progress=False,
            report=progress,
            every_minute=every_minute,
            workers=3,
        )
        for _ in range(20):  # the last refusals, a sweep apart each, and the last back-offs
            stack.clock.advance(timedelta(minutes=1))
            stack.pump(workers=3)
            stack.sweep()
        stack.pump(workers=3)

        gone = {key for key in deleted}
        truth = {
            (lead.tenant, lead.crm_id): on_time_by_plan(lead, calendar)
            for lead in leads
            if lead.key not in gone
        }
        # Nothing lost: every card still in the CRM has its one right verdict, counted once.
        wrong = []
        for (tenant, crm_id), on_time in truth.items():
            want = ("Y" if on_time else "N") if tenant == B24_TENANT else ("Yes" if on_time else "No")
            if drivers[tenant].verdict(crm_id) != want:
                planned = next(lead for lead in leads if lead.tenant == tenant and lead.crm_id == crm_id)
                state = stack.ctx.store.get_lead(tenant, EntityRef(EntityType.LEAD, crm_id))
                wrong.append(
                    f"{tenant} {crm_id}: {drivers[tenant].verdict(crm_id)} not {want}; planned created "
                    f"{planned.created_at}, processed {planned.processed_at} (by call {planned.by_call}); "
                    f"stored due {state and state.due_at}, processed {state and state.processed_at} "
                    f"({state and state.processed_how}), verdict {state and state.verdict}"
                )
        assert wrong == [], "\n".join(wrong)
        for tenant in (B24_TENANT, AMO_TENANT):
            rows = stack.ctx.store.timeliness_stats(tenant, start.date() - timedelta(days=1), until.date())
            judged = {lead.crm_id for lead in leads if lead.tenant == tenant}
            counted = sum(r.on_time + r.late for r in rows)
            # Every card still there is counted; a deleted one only if it was judged before it went.
            assert sum(1 for t, _ in truth if t == tenant) <= counted <= len(judged)

        # Every deleted card is let go: out of the due index, no verdict written to it, and where
        # its webhook was lost and a verdict was due, one journal row says "card deleted".
        now = stack.clock()
        for tenant in (B24_TENANT, AMO_TENANT):
            assert list(stack.ctx.store.due_leads(tenant, now + timedelta(days=30), since=start.date())) == []
        rows = {
            t: stack.ctx.store.violations(t, start - timedelta(days=1), now + timedelta(days=1))
            for t in (B24_TENANT, AMO_TENANT)
        }
        gave_up = [r for t in rows for r in rows[t] if r.type == "gave_up"]
        reasons = Counter(
            json.loads(r.details)["detail"] if isinstance(r.details, str) else r.details["detail"]
            for r in gave_up
        )
        for key in gone:
            lead = by_key[key]
            state = stack.ctx.store.get_lead(lead.tenant, EntityRef(EntityType.LEAD, lead.crm_id))
            assert state is not None, key
            if deleted[key][1]:  # its deletion webhook came: let go at once
                assert state.deleted_at is not None, (key, state)
            else:  # lost: let go when a write to it was refused, or already judged (nothing pending)
                assert state.deleted_at is not None or state.verdict is not None, (key, state)
        assert set(reasons) <= {"card deleted", "alert failed: bot not in chat"}

        # Nothing doubled: each late card reached the head at most once (an alert, or a digest
        # line), and each one that did not was given up with its reason, only while the bot was out.
        mentioned = Counter(url for m in stack.telegram.messages for url in mentions(m.text))
        assert max(mentioned.values(), default=0) == 1
        late = {
            stack.ctx.adapter(stack.ctx.tenant(t)).card_url(EntityRef(EntityType.LEAD, c))
            for (t, c), ok in truth.items()
            if not ok
        }
        unsent = late - set(mentioned)
        alert_failed = [r for r in gave_up if "bot not in chat" in str(r.details)]
        assert len(unsent) <= len(alert_failed)
        assert alert_failed and all(r.occurred_at < bot_back for r in alert_failed)

        # No answer over a limit, however the workers raced: each tenant's pace held across them.
        assert (stack.bitrix.limit_refusals, stack.amo.limit_refusals, stack.telegram.limit_refusals) == (
            0,
            0,
            0,
        )
        assert stack.dead_letters() == []
        crm_calls = len(stack.bitrix.log) + len(stack.amo.log)
        verdicts = len(truth)
        print(f"\nCRM calls per verdict: {crm_calls / verdicts:.1f} ({crm_calls} calls, {verdicts} verdicts)")
        assert crm_calls / verdicts <= 12
