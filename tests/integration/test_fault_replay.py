"""Fault-injection replay: 10,000 webhook deliveries through the whole stack, 5,000 for each CRM
(this module Bitrix24, test_fault_replay_amocrm.py amoCRM: two runs, so they go side by side on
two cores), with duplicates, reordering, CRM and Telegram errors, malformed bodies, lost
webhooks, poison messages and a worker crash. Nothing may be lost and nothing doubled.

Deterministic: one seed drives the generated leads, the wire's faults and the fakes' faults.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from demo.replay import replay
from demo.week import actions_for, managers_for, on_time_by_plan, plan_week
from leadwatch.calendar import BusinessCalendar
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock

SEED = 20251112
MSK = ZoneInfo("Europe/Moscow")
START = datetime(2025, 11, 12, 0, 0, tzinfo=MSK)  # Wed, Thu: an ordinary two days
DELIVERIES = 5_000  # per CRM

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def two_days(
    rng: random.Random, seed: int, start: datetime, *, managers: int, leads_per_day: int
) -> tuple[BusinessCalendar, list]:
    """The replays' calendar (Moscow, 9-13 and 14-18 on weekdays) and two days of planned leads;
    each tenant's team is drawn from `rng`."""
    hours = [(time(9), time(13)), (time(14), time(18))]
    calendar = BusinessCalendar(
        "Europe/Moscow", {d: hours for d in range(5)}, country="RU", pre_holiday_minutes=60
    )
    teams = {
        B24_TENANT: managers_for(B24_TENANT, 1, managers, rng),
        AMO_TENANT: managers_for(AMO_TENANT, 9100001, managers, rng),
    }
    return calendar, plan_week(calendar, teams, leads_per_day=leads_per_day, seed=seed, start=start, days=2)


def mentions(text: str) -> list[str]:
    """The card links in a message: one for an alert, one per line for a digest."""
    return [part.split('"', 1)[0] for part in text.split('href="')[1:]]


class LambdaDied(BaseException):
    """Not an error the code could catch: the runtime killed the invocation (timeout, out of memory)."""


class FaultyWire:
    """Between the fake CRMs and leadwatch: duplicates, reordering, garbage and losses."""

    def __init__(self, stack: LocalStack, rng: random.Random):
        self.stack = stack
        self.rng = rng
        self.held: list[tuple[datetime, str, bytes]] = []
        self.delivered = 0
        self.duplicates = 0
        self.reordered = 0
        self.dropped = 0
        self.malformed: list[tuple[str, bytes, int, dict]] = []
        self.unexpected: list[tuple[str, int, dict]] = []

    def keys(self, tenant: str) -> str | None:
        return self.stack.secrets["DEMO_AMO_HOOK_SECRET"] if tenant == AMO_TENANT else None

    def post(self, tenant: str, body: bytes) -> None:
        status, payload = self.stack.post_hook(tenant, body, key=self.keys(tenant))
        self.delivered += 1
        if status != 200:
            self.unexpected.append((tenant, status, payload))

    def wire(self, tenant: str):
        def deliver(body: bytes) -> None:
            roll = self.rng.random()
            if roll < 0.01:
                self.dropped += 1  # only reconciliation can find this one
                return
            if self.rng.random() < 0.01:
                garbage = self.garble(body)
                status, payload = self.stack.post_hook(tenant, garbage, key=self.keys(tenant))
                self.delivered += 1
                self.malformed.append((tenant, garbage, status, payload))
            if self.rng.random() < 0.10:
                self.reordered += 1
                self.held.append(
                    (self.stack.clock() + timedelta(minutes=self.rng.randint(1, 3)), tenant, body)
                )
            else:
                self.post(tenant, body)
            if self.rng.random() < 0.10:
                self.duplicates += 1
                when = self.stack.clock() + timedelta(minutes=self.rng.randint(0, 5))
                self.held.append((when, tenant, body))

        return deliver

    def garble(self, body: bytes) -> bytes:
        """A body that is not a valid webhook any more, in one of several ways."""
        kind = self.rng.randrange(4)
        if kind == 0:
            return body[: len(body) // 3] + b"%ZZ&&[[="  # truncated, broken escapes
        if kind == 1:
            return b"\xff\xfe" + body[5:]  # not UTF-8
        if kind == 2:
            return b"<xml>not a form</xml>"
        return body.replace(b"%5Bid%5D", b"%5Bid%5D%5B", 1).replace(b"[id]", b"[id][", 1) + b"&[x]=1"

    def release(self, now: datetime) -> None:
        due = [item for item in self.held if item[0] <= now]
        self.held = [item for item in self.held if item[0] > now]
        for _, tenant, body in due:
            self.post(tenant, body)

    def flush(self) -> None:
        for _, tenant, body in self.held:
            self.post(tenant, body)
        self.held.clear()


def test_five_thousand_faulty_bitrix24_deliveries_lose_nothing_and_double_nothing(caplog, progress):
    faulty_deliveries(B24_TENANT, caplog, progress)


def faulty_deliveries(tenant: str, caplog: pytest.LogCaptureFixture, progress) -> None:
    """Two busy days of one CRM's tenant through the faulty wire; everything checked after."""
    # Everything leadwatch logs, and what its libraries say at INFO and above.
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="leadwatch")
    clock = SimClock(START - timedelta(minutes=1))
    # The fakes echo leadwatch's own card writes back as webhooks, as portals do: about 4.5
    # deliveries a lead, so 560 leads a day make a CRM's 5,000.
    calendar, leads = two_days(random.Random(SEED), SEED, START, managers=20, leads_per_day=560)
    leads = [lead for lead in leads if lead.tenant == tenant]
    actions = actions_for(leads)
    until = max(calendar.control_time(lead.created_at, timedelta(minutes=15), time(11)) for lead in leads)

    with LocalStack(clock, aws="inprocess", crm_timeout=(1.0, 0.3)) as stack:
        import leadwatch.executor
        import leadwatch.testing.amocrm as amo_faults
        import leadwatch.testing.bitrix24 as b24_faults
        import leadwatch.testing.telegram as telegram_faults

        wire = FaultyWire(stack, random.Random(SEED + 1))
        stack.bitrix.deliver = wire.wire(B24_TENANT)
        stack.amo.deliver = wire.wire(AMO_TENANT)
        # 5% of CRM answers fail: 5xx, rate limits, and (rarely: each costs real seconds) timeouts.
        stack.bitrix.fail_randomly(0.022, b24_faults.internal_error, seed=SEED + 2)
        stack.bitrix.fail_randomly(0.025, b24_faults.query_limit_exceeded)
        stack.bitrix.fail_randomly(0.003, b24_faults.slow(0.6))
        stack.amo.fail_randomly(0.022, amo_faults.bad_gateway, seed=SEED + 3)
        stack.amo.fail_randomly(0.025, amo_faults.too_many_requests)
        stack.amo.fail_randomly(0.003, amo_faults.slow(0.6))
        stack.telegram.fail_randomly(0.02, telegram_faults.too_many_requests(retry_after=2), seed=SEED + 4)
        # Poison: messages no retry can fix.
        poison = ["{not json", '{"tenant": "nobody", "kind": "lead.created"}', '{"tenant": "demo-b24"}']
        for body in poison:
            stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)
        # One worker invocation dies after doing its work, before answering.
        real_perform = leadwatch.executor.perform
        calls = {"n": 0}

        def perform_then_crash(*args, **kwargs):
            outcome = real_perform(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == 40:
                raise LambdaDied("the Lambda died mid-batch, after doing its work")
            return outcome

        leadwatch.executor.perform = perform_then_crash
        try:
            drivers = {B24_TENANT: BitrixDriver(stack.bitrix), AMO_TENANT: AmoDriver(stack.amo)}
            replay(
                stack,
                calendar,
                actions,
                drivers,
                until + timedelta(minutes=5),
                progress=False,
                report=progress,
                every_minute=wire.release,
                sweep_every=5,
            )
            wire.flush()
            stack.clock.advance(timedelta(minutes=11))
            stack.reconcile()
            stack.pump()
            for fake in (stack.bitrix, stack.amo, stack.telegram):
                fake.clear_faults()
            stack.sweep()
            stack.pump()
            stack.sweep()
        finally:
            leadwatch.executor.perform = real_perform

        progress(
            f"{wire.delivered} deliveries ({wire.duplicates} duplicated, {wire.reordered} reordered, "
            f"{wire.dropped} lost, {len(wire.malformed)} malformed); checking"
        )
        assert wire.delivered >= DELIVERIES, wire.delivered
        assert wire.duplicates > 0.08 * DELIVERIES and wire.reordered > 0.08 * DELIVERIES
        assert wire.dropped > 0 and wire.malformed
        assert stack.crashes == 1
        assert wire.unexpected == []

        # Every lead has exactly one verdict, the right one, written with one value only.
        truth = {(lead.tenant, lead.crm_id): on_time_by_plan(lead, calendar) for lead in leads}
        drivers = {B24_TENANT: BitrixDriver(stack.bitrix), AMO_TENANT: AmoDriver(stack.amo)}
        wrong = []
        for (tenant, crm_id), on_time in truth.items():
            want = ("Y" if on_time else "N") if tenant == B24_TENANT else ("Yes" if on_time else "No")
            got = drivers[tenant].verdict(crm_id)
            if got != want:
                wrong.append((tenant, crm_id, got, want))
        assert wrong == []
        for tenant in (B24_TENANT, AMO_TENANT):
            rows = stack.ctx.store.timeliness_stats(tenant, START.date() - timedelta(days=1), until.date())
            counted = sum(r.on_time + r.late for r in rows)
            assert counted == sum(1 for t, _ in truth if t == tenant)

        # The journal has exactly the expected violations, once each.
        for tenant in (B24_TENANT, AMO_TENANT):
            late = {f"lead:{crm_id}" for (t, crm_id), ok in truth.items() if t == tenant and not ok}
            rows = stack.ctx.store.violations(tenant, START - timedelta(days=1), until + timedelta(days=1))
            assert Counter(r.entity for r in rows) == Counter(late)

        # The head got exactly one message per late lead.
        # (one link for an alert, one per line for a digest of alerts due together)
        per_card = Counter(url for m in stack.telegram.messages for url in mentions(m.text))
        expected = Counter(
            stack.ctx.adapter(stack.ctx.tenant(tenant)).card_url(EntityRef(EntityType.LEAD, crm_id))
            for (tenant, crm_id), ok in truth.items()
            if not ok
        )
        assert per_card == expected

        # Every malformed body got a 4xx with a message; those that authenticated (amoCRM's key,
        # a Bitrix24 token still readable) were kept for inspection, within the hour's sample.
        assert all(400 <= status < 500 and payload.get("error") for _, _, status, payload in wire.malformed)
        kept = len(stack.ctx.store.rejects(B24_TENANT)) + len(stack.ctx.store.rejects(AMO_TENANT))
        assert kept == sum("kept_as" in payload for _, _, _, payload in wire.malformed)

        # The dead-letter queue holds only the poison, each with its reason.
        parked = stack.dead_letters()
        assert sorted(m["Body"] for m in parked) == sorted(poison)
        assert all(m["MessageAttributes"]["reason"]["StringValue"] for m in parked)

        # No secret in any log line or journal entry.
        logged = "\n".join(record.getMessage() for record in caplog.records)
        journal = str(stack.ctx.store.violations(B24_TENANT, START, until + timedelta(days=1)))
        journal += str(stack.ctx.store.violations(AMO_TENANT, START, until + timedelta(days=1)))
        for secret in stack.secrets.values():
            assert secret not in logged
            assert secret not in journal
