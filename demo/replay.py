"""Replaying planned CRM actions through a LocalStack, minute by minute.

Shared by the demo and the fault-injection test: CRM actions (and so their
webhooks) at their planned times, the real queue drained by the real worker,
the deadline sweep and reconciliation as EventBridge would run them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, time, timedelta
from typing import Protocol

from demo.week import MSK, Action, PlannedLead
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, CrmDriver, LocalStack

QC_SWEEP_EVERY = 5  # minutes
# The demo's two tenants and the CRM id of each one's first manager (amoCRM's user ids are long).
DEMO_TENANTS = {B24_TENANT: 1, AMO_TENANT: 9100001}


def replay(
    stack: LocalStack,
    calendar,
    actions: list[Action],
    drivers: dict[str, CrmDriver],
    until: datetime,
    *,
    progress: bool = True,
    every_minute: Callable[[datetime], None] | None = None,
    sweep_every: int = 1,
    counts: dict[str, int] | None = None,
    reports: bool = False,
    workers: int = 1,
    report: Callable[[str], None] | None = None,
    people: Callable[[datetime], bool] | None = None,
    qc: QcRunner | None = None,
) -> None:
    """Walk the clock minute by minute: CRM actions (their webhooks), the queue, the schedules.

    `sweep_every` > 1 runs the deadline sweep less often than AWS would (every minute): verdicts
    do not depend on when the sweep runs, only alerts come later, so long fault runs may save time.
    `reports` runs the dialing report schedule every minute too. `workers` workers drain the
    queue side by side (as Lambda runs them). `report` is told each tenth of the way done (the
    slow tests show it, as the demo shows its progress bar). `people` act each minute on what the
    CRM asks of them (True: someone did something, such as a page submitted); `qc` runs quality
    control's schedules: the deadline sweep every few working minutes and after people acted (a
    page wakes it at once), the weekly audit every hour.
    """
    from tqdm import tqdm

    tally = counts if counts is not None else {}
    for key in ("messages", "sweeps", "reconciles"):
        tally.setdefault(key, 0)

    def pump() -> None:
        tally["messages"] += stack.pump(workers=workers)

    def sweep() -> None:
        tally["sweeps"] += 1
        stack.sweep()  # queues nothing: no pump needed after it

    def reconcile() -> None:
        tally["reconciles"] += 1
        if stack.reconcile_fed():
            pump()

    start = stack.clock()
    minutes = int((until - start).total_seconds() // 60) + 1
    pending = list(reversed(actions))
    with tqdm(
        total=minutes,
        disable=not progress,
        unit="min",
        desc="replaying the week",
        dynamic_ncols=True,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} simulated minutes "
        "[{elapsed}<{remaining}] {postfix}",
    ) as bar:
        for minute in range(minutes):
            now = start + timedelta(minutes=minute)
            acted = False
            while pending and pending[-1].at <= min(now + timedelta(minutes=1), until):
                action = pending.pop()
                stack.clock.set(max(action.at, now))
                perform(action, drivers)
                acted = True
            stack.clock.set(now + timedelta(minutes=1))
            if every_minute is not None:
                every_minute(stack.clock())
                acted = True
            busy = people is not None and people(stack.clock())
            if acted or busy:
                pump()
            # The sweep runs every minute in AWS. A control time always falls inside working time
            # (or exactly at closing), so outside it there is nothing to sweep and the replay skips it.
            moment = stack.clock()
            working = calendar.is_working_time(moment) or calendar.is_working_time(
                moment - timedelta(minutes=1)
            )
            if working and minute % sweep_every == 0:
                sweep()
            if qc is not None:
                # Its control points are working time and a page wakes it at once: every fifth
                # working minute (its docs' pace where something is due) and after people acted.
                if busy or (working and minute % QC_SWEEP_EVERY == 0):
                    qc.sweep()
                if minute % 60 == 0:
                    qc.audit()
            if minute % 10 == 0:
                reconcile()
            local = moment.astimezone(MSK)
            if reports and time(18, 30) <= local.time() < time(19, 0):
                # EventBridge runs it every minute; outside this half hour it does nothing for the
                # demo tenants (report time 18:30), so the replay spares those invocations.
                stack.dialing_report()
            if minute % 60 == 0:
                bar.set_postfix_str(
                    f"{moment.astimezone(MSK):%a %d.%m %H:%M} MSK, telegram {len(stack.telegram.messages)}"
                )
            bar.update(1)
            if report is not None and (minute + 1) * 10 // minutes > minute * 10 // minutes:
                report(
                    f"{(minute + 1) * 100 // minutes}% of {minutes} simulated minutes, at "
                    f"{moment.astimezone(MSK):%a %d.%m %H:%M} MSK; messages handled {tally['messages']}"
                )
        reconcile()
        pump()
        sweep()
        if qc is not None:
            qc.sweep()


class QcRunner(Protocol):
    """Quality control's schedules (demo.qc.QcSchedules)."""

    def sweep(self) -> None: ...

    def audit(self) -> None: ...


def lose_some_webhooks(stack: LocalStack, share: float, rng: random.Random) -> None:
    """Deliver the fakes' webhooks, dropping `share` of them on the floor (only reconciliation finds those)."""
    original = {B24_TENANT: stack.bitrix.deliver, AMO_TENANT: stack.amo.deliver}

    def wire(tenant: str) -> Callable[[bytes], None]:
        def deliver(body: bytes) -> None:
            if rng.random() < share:
                stack.dropped.append((tenant, body))
                return
            status, payload = original[tenant](body)
            if status != 200:
                raise RuntimeError(f"leadwatch answered {status}: {payload}")

        return deliver

    stack.bitrix.deliver = wire(B24_TENANT)
    stack.amo.deliver = wire(AMO_TENANT)


def perform(action: Action, drivers: dict[str, CrmDriver]) -> None:
    lead: PlannedLead = action.lead
    driver = drivers[lead.tenant]
    if action.kind == "create":
        lead.crm_id = driver.create(lead.title, lead.manager.crm_id, action.at)
    elif action.kind == "call":
        call = action.call
        if call is None:
            driver.call(lead.crm_id, lead.manager.crm_id, action.at)  # type: ignore[arg-type]
        else:
            driver.call(lead.crm_id, lead.manager.crm_id, action.at, call.duration, call.record_url)  # type: ignore[arg-type]
    elif action.kind == "reject":
        # A reason where the plan gives one and the driver can set it (demo.qc's drivers).
        with_reason = getattr(driver, "reject_with_reason", None)
        if lead.reason is not None and with_reason is not None:
            with_reason(lead.crm_id, lead.manager.crm_id, action.at, lead.reason)
        else:
            driver.reject(lead.crm_id, lead.manager.crm_id, action.at)  # type: ignore[arg-type]
    else:
        driver.take(lead.crm_id, lead.manager.crm_id, action.at)  # type: ignore[arg-type]
