"""The scheduling bench's model and its Lambda stub (no AWS: nothing leaves the process)."""

from __future__ import annotations

import json

import pytest

from bench.scheduling import _completion, _min_concurrency
from leadwatch.testing.lambda_invoke import Invocations, lambda_client


def test_completion_is_waves_of_the_longest_job():
    assert _completion(1000, 100, 18.0) == 180.0
    assert _completion(1000, 1000, 18.0) == 18.0
    assert _completion(1000, 167, 18.0) == 6 * 18.0


def test_min_concurrency_is_the_smallest_that_fits():
    c = _min_concurrency(1000, 18.8, 120.0)
    assert c == 167
    assert _completion(1000, c, 18.8) <= 120.0 < _completion(1000, c - 1, 18.8)
    assert _min_concurrency(10, 0.1, 600.0) == 1
    assert _min_concurrency(1000, 130.0, 120.0) == "none"


def test_the_stubbed_lambda_takes_asynchronous_invokes_and_refuses_the_rest(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    invocations = Invocations()
    client = lambda_client(invocations, "eu-central-1")
    payload = {
        "jobs": [
            {
                "job": {
                    "process": "timeliness",
                    "schedule": "sweep",
                    "tenant": "t0",
                    "at": "2025-11-11T08:00:00+00:00",
                }
            }
        ]
    }
    answer = client.invoke(FunctionName="bench-jobs", InvocationType="Event", Payload=json.dumps(payload))
    assert answer["StatusCode"] == 202 and answer["Payload"].read() == b""
    assert invocations.take() == [("bench-jobs", payload)] and invocations.calls == 1
    with pytest.raises(RuntimeError, match="only asynchronous invocations"):
        client.invoke(FunctionName="bench-jobs", Payload=b"{}")
    with pytest.raises(RuntimeError, match="only Lambda's Invoke"):
        client.list_functions()
    assert invocations.take() == []
