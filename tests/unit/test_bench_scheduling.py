"""The scheduling bench's model and its SQS stub (no AWS: nothing leaves the process)."""

from __future__ import annotations

import json

import pytest

from bench.scheduling import _completion, _min_concurrency, _SqsAccepts, _stubbed_sqs_client


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


def test_stubbed_client_answers_batches_and_refuses_the_rest(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    accepted = _SqsAccepts()
    client = _stubbed_sqs_client(accepted)
    url = "https://sqs.eu-central-1.amazonaws.com/123456789012/jobs"
    bodies = [
        {
            "job": {
                "process": "timeliness",
                "schedule": "sweep",
                "tenant": f"t{i}",
                "at": "2025-11-11T08:00:00+00:00",
            }
        }
        for i in range(3)
    ]
    answer = client.send_message_batch(
        QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": json.dumps(b)} for i, b in enumerate(bodies)]
    )
    assert [entry["Id"] for entry in answer["Successful"]] == ["0", "1", "2"]
    assert not answer.get("Failed")
    assert [job.tenant for job in accepted.jobs()] == ["t0", "t1", "t2"]
    with pytest.raises(RuntimeError, match="only sends batches"):
        client.send_message(QueueUrl=url, MessageBody="{}")
