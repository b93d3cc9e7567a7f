"""How the dispatchers start the jobs Lambda (leadwatch.context.LambdaJobs): asynchronous Invoke
calls through the real boto3 client, one job each by default, sent side by side, every refusal
reported after the rest are sent. No AWS: Lambda's answer comes from leadwatch.testing.lambda_invoke."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from leadwatch.context import LambdaJobs
from leadwatch.scheduling import Job
from leadwatch.testing.lambda_invoke import Invocations, lambda_client

AT = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def messages(count: int) -> list[dict[str, Any]]:
    return [Job("timeliness", "sweep", f"t{n:03d}", AT).to_message() for n in range(count)]


def test_each_job_is_one_asynchronous_invocation_of_the_jobs_lambda() -> None:
    invocations = Invocations()
    sink = LambdaJobs("leadwatch-jobs", client=lambda_client(invocations, "eu-central-1"))
    sink.send(messages(25))
    taken = invocations.take()
    assert invocations.calls == 25
    assert {function for function, _ in taken} == {"leadwatch-jobs"}
    # Side by side, so in any order; each payload is one job, readable by the jobs Lambda.
    jobs = [Job.from_message(message) for _, payload in taken for message in payload["jobs"]]
    assert sorted(job.tenant for job in jobs) == [f"t{n:03d}" for n in range(25)]
    assert all(len(payload["jobs"]) == 1 for _, payload in taken)


def test_a_payload_may_carry_several_jobs() -> None:
    sink = LambdaJobs("leadwatch-jobs", per_invocation=10)
    bodies = sink.payloads(messages(25))
    assert [body.count(b'"tenant"') for body in bodies] == [10, 10, 5]
    with pytest.raises(ValueError):
        LambdaJobs("leadwatch-jobs", per_invocation=0)


class SlowLambda:
    """Answers Invoke after a while, counting how many calls are under way at once."""

    def __init__(self, refuse: set[str] = frozenset()) -> None:
        self.refuse = refuse
        self.running = self.most = self.calls = 0
        self._lock = threading.Lock()

    def invoke(self, FunctionName: str, InvocationType: str, Payload: bytes) -> dict[str, Any]:
        assert InvocationType == "Event"
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(0.02)
            if any(tenant.encode() in Payload for tenant in self.refuse):
                raise RuntimeError("TooManyRequestsException")
            return {"StatusCode": 202}
        finally:
            with self._lock:
                self.running -= 1


def test_invocations_are_sent_side_by_side_within_the_thread_limit() -> None:
    client = SlowLambda()
    started = time.perf_counter()
    LambdaJobs("leadwatch-jobs", client=client, threads=8).send(messages(64))
    elapsed = time.perf_counter() - started
    assert client.calls == 64 and 1 < client.most <= 8
    assert elapsed < 64 * 0.02 / 2  # one after another it would take 1.28 s


def test_a_refused_invocation_fails_the_dispatch_after_the_others_are_sent() -> None:
    client = SlowLambda(refuse={"t003", "t007"})
    with pytest.raises(RuntimeError, match="refused 2 of 10 invocations of leadwatch-jobs"):
        LambdaJobs("leadwatch-jobs", client=client).send(messages(10))
    assert client.calls == 10


def test_without_the_jobs_lambdas_name_nothing_is_sent() -> None:
    client = SlowLambda()
    LambdaJobs("", client=client).send([])  # nothing to start: nothing asked
    with pytest.raises(RuntimeError, match="LEADWATCH_JOBS_FUNCTION"):
        LambdaJobs("", client=client).send(messages(1))
    assert client.calls == 0
