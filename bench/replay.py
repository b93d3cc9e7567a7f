"""Replay throughput: the demo's generated week through the whole stack, in one process.

The same week `python -m demo` replays (demo.week.plan_week / actions_for: Wed 29 Oct ..
Tue 4 Nov 2025, 20 managers and ~100 leads per working day per CRM, seed 7, 1% of
webhooks lost, CRM/Telegram limits x10 as in the demo) through `LocalStack(aws="inprocess",
http=False)`: moto in-process, the fakes over HTTP on 127.0.0.1, leadwatch's routes
through Chalice's in-process gateway, the real worker on the real (moto) queue, the sweep
every working minute and reconciliation every 10 minutes on the simulated clock. Waits
(rate pacing, backoff) move the stack's virtual clock instead of sleeping. No tqdm.

events = webhook deliveries leadwatch answered (lost ones excluded) + SQS messages the
worker processed (deleted from the queue); throughput = events / wall seconds of the
replay loop (stack start-up and planning excluded, reported separately). Memory: the
process's peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`), measured in the
benchmark's own subprocess. Every verdict in the fake cards is checked against the plan.
"""

from __future__ import annotations

import random
import resource
import sys
import time
from datetime import time as clock_time
from datetime import timedelta
from pathlib import Path

from bench.common import AwsCalls, Figure, note
from demo.replay import lose_some_webhooks, replay

PROBE_CALLS = 300
EVENTS_DEFINITION = (
    "events = webhook deliveries answered by POST /hooks/{tenant} (lost ones excluded) "
    "+ SQS messages processed by the worker"
)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(
    *,
    seed: int = 7,
    leads_per_day: int = 100,
    managers: int = 20,
    drop: float = 0.01,
    rate_scale: float = 10.0,
    days: int | None = None,
    profile: Path | None = None,
) -> list[Figure]:
    from demo.replay import DEMO_TENANTS
    from demo.week import DAYS, WEEK_START, demo_week
    from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock

    days = days or DAYS
    started = time.perf_counter()
    week = demo_week(
        DEMO_TENANTS, seed=seed, leads_per_day=leads_per_day, managers=managers, days=days, dialing=False
    )
    calendar, leads, actions = week.calendar, week.leads, week.actions
    settle_until, names = week.settle_until, week.names
    clock = SimClock(WEEK_START - timedelta(minutes=1))
    drop_rng = random.Random(seed + 1)
    with LocalStack(
        clock, http=False, crm_rate_scale=rate_scale, real_sleep=False, managers=names, aws="inprocess"
    ) as stack:
        drivers = {B24_TENANT: BitrixDriver(stack.bitrix), AMO_TENANT: AmoDriver(stack.amo)}
        lose_some_webhooks(stack, drop, drop_rng)
        setup = time.perf_counter() - started
        rss_before = _rss_mib()
        note(f"replay: {len(leads)} leads, {len(actions)} CRM actions; stack up in {setup:.1f} s")

        counts = {"messages": 0, "sweeps": 0, "reconciles": 0}
        profiler = None
        if profile is not None:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        calls = AwsCalls().install([stack.sqs, stack.dynamodb])
        try:
            loop_started = time.perf_counter()
            replay(stack, calendar, actions, drivers, settle_until, progress=False, counts=counts)
            wall = time.perf_counter() - loop_started
        finally:
            calls.uninstall()
        if profiler is not None:
            profiler.disable()
            _report_profile(profiler, profile)

        # What one small DynamoDB call costs in this in-process moto (a GetItem through PynamoDB,
        # the checkpoint read every sweep makes), to put the throughput in proportion.
        probe_started = time.perf_counter()
        for _ in range(PROBE_CALLS):
            stack.ctx.store.get_checkpoint(B24_TENANT, "sweep")
        moto_ms = (time.perf_counter() - probe_started) * 1000 / PROBE_CALLS

        floor_events, floor_wall = _moto_floor(stack, deliveries=len(stack.webhook_answers))

        mismatches = 0
        for lead in leads:
            due = calendar.control_time(lead.created_at, timedelta(minutes=15), clock_time(11))
            on_time = lead.processed_at is not None and lead.processed_at <= due
            want = ("Y" if on_time else "N") if lead.tenant == B24_TENANT else ("Yes" if on_time else "No")
            mismatches += drivers[lead.tenant].verdict(lead.crm_id) != want
        deliveries = len(stack.webhook_answers)
        dropped = len(stack.dropped)
        crashes = stack.crashes
    events = deliveries + counts["messages"]
    aws_calls = sum(calls.calls.values())
    rate = events / wall
    peak = _rss_mib()
    note(
        f"replay: {deliveries} webhooks answered ({dropped} lost), {counts['messages']} queue messages, "
        f"{counts['sweeps']} sweeps, {counts['reconciles']} reconciliations in {wall:.1f} s; "
        f"AWS calls {calls.breakdown()}; "
        f"RSS peak {peak:.0f} MiB (before the loop {rss_before:.0f} MiB)"
    )
    return [
        Figure(
            "replay_events_per_s",
            rate,
            ">=500",
            rate >= 500,
            f"{EVENTS_DEFINITION}: {events} events / {wall:.1f} s of replay (profiled: {profile is not None})",
            {
                "events": events,
                "webhooks": deliveries,
                "messages": counts["messages"],
                "dropped": dropped,
                "sweeps": counts["sweeps"],
                "reconciles": counts["reconciles"],
                "leads": len(leads),
                "actions": len(actions),
                "wall_s": wall,
                "worker_crashes": crashes,
            },
        ),
        Figure("replay_events", events, definition=EVENTS_DEFINITION),
        Figure(
            "replay_aws_calls_per_event",
            aws_calls / events,
            definition=f"AWS API calls ({aws_calls}: DynamoDB and SQS, sweeps and reconciliations included) per event",
            extra={"aws_calls": calls.breakdown()},
        ),
        Figure(
            "replay_moto_ms_per_call",
            moto_ms,
            definition=f"mean ms of one GetItem through PynamoDB on this in-process moto ({PROBE_CALLS} calls "
            "after the replay); events/s cannot exceed 1000 / (this x AWS calls per event)",
        ),
        Figure(
            "replay_moto_floor_events_per_s",
            floor_events / floor_wall,
            definition=f"the same {floor_events} events with only the AWS calls no design can avoid (per "
            "webhook one inbox PutItem + one SendMessage; per 10 messages one ReceiveMessage + one "
            "DeleteMessageBatch), no leadwatch code, no sweeps, no CRM: the ceiling this in-process moto "
            "puts on replay_events_per_s",
        ),
        Figure("replay_wall_s", wall, definition="wall seconds of the replay loop"),
        Figure(
            "replay_setup_s", setup, definition="planning the week and starting the stack (not in the rate)"
        ),
        Figure(
            "replay_peak_rss_mib",
            peak,
            definition="peak resident memory of the replay's process (ru_maxrss), stack and moto included",
        ),
        Figure(
            "replay_verdict_mismatches",
            mismatches,
            "==0",
            mismatches == 0,
            "verdicts in the fake CRM cards that differ from the plan's truth (the run is only valid at 0)",
        ),
    ]


def _moto_floor(stack, *, deliveries: int) -> tuple[int, float]:
    """Time the bare minimum of AWS calls for `deliveries` webhooks and their messages on this moto."""
    body = "x" * 900  # about the size of a normalized event message
    started = time.perf_counter()
    handled = 0
    for i in range(deliveries):
        stack.dynamodb.put_item(
            TableName="leadwatch-inbox",
            Item={"tenant": {"S": "floor"}, "key": {"S": f"d{i}"}, "body": {"S": body}},
        )
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)
        if i % 10 == 9 or i == deliveries - 1:
            received = stack.sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            )
            if received:
                stack.sqs.delete_message_batch(
                    QueueUrl=stack.queue_url,
                    Entries=[
                        {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(received)
                    ],
                )
            handled += len(received)
    return deliveries + handled, time.perf_counter() - started


def _report_profile(profiler, path: Path) -> None:
    import io
    import pstats

    profiler.dump_stats(str(path))
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats(40)
    print(buffer.getvalue(), file=sys.stderr)
    note(f"replay: cProfile stats written to {path}")
