"""Structured logs and metrics (runtime/observability.py) through the real handlers.

The handlers run through chalice.test.Client on a LocalStack with in-process moto and the
fake CRMs. "In Lambda" is simulated by setting AWS_LAMBDA_FUNCTION_NAME: logs then go to
stdout as JSON lines and metrics as CloudWatch EMF blobs; anywhere else logs go to stderr
and metrics are dropped.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from leadwatch import observability
from leadwatch.testing.bitrix24 import slow
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, AmoDriver, BitrixDriver, LocalStack, SimClock

ROOT = Path(__file__).resolve().parents[2]
MSK = ZoneInfo("Europe/Moscow")
TUESDAY_11 = datetime(2025, 11, 11, 11, 0, tzinfo=MSK)


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    # A short read timeout: a timed-out CRM call's error quotes its URL, which holds the webhook code.
    with LocalStack(
        SimClock(TUESDAY_11), aws="inprocess", managers={"7": "Anna Petrova"}, crm_timeout=(1.0, 0.2)
    ) as running:
        yield running


@pytest.fixture
def in_lambda(monkeypatch):
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "leadwatch-dev-test")
    observability.flush()  # nothing counted by an earlier test leaks into this one
    yield
    # In Lambda the handlers set INFO; outside it the service logger follows the root logger.
    logging.getLogger("leadwatch").setLevel(logging.NOTSET)


def split(text: str) -> tuple[list[dict], list[dict]]:
    """(log lines, EMF blobs) among the JSON lines of captured output; anything else fails."""
    logs, blobs = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        (blobs if "_aws" in record else logs).append(record)
    return logs, blobs


def metric_values(blobs: list[dict]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(metric name, its dimensions) -> summed value, read the way CloudWatch reads EMF."""
    found: dict = {}
    for blob in blobs:
        directive = blob["_aws"]["CloudWatchMetrics"][0]
        assert directive["Namespace"] == "leadwatch"
        [dimension_names] = directive["Dimensions"]
        dimensions = tuple(sorted((name, blob[name]) for name in dimension_names))
        for metric in directive["Metrics"]:
            value = blob[metric["Name"]]
            values = value if isinstance(value, list) else [value]
            key = (metric["Name"], dimensions)
            found[key] = found.get(key, 0) + sum(values)
    return found


def dims(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"service": "leadwatch", **pairs}.items()))


def assert_no_secret(stack: LocalStack, *outputs: str) -> None:
    for secret in stack.secrets.values():
        for output in outputs:
            assert secret not in output, f"a secret leaked into the output: {secret[:6]}..."


def test_handlers_write_json_lines_with_tenant_lead_and_correlation_id_and_emf_metrics(
    stack, in_lambda, capsys
):
    b24, amo = BitrixDriver(stack.bitrix), AmoDriver(stack.amo)
    t0 = stack.clock()
    forgotten = b24.create("Forgotten one", "7", t0)
    amo_lead = amo.create("Another one", "7", t0)
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=20))
    # The first re-read of the due card times out on every retry: counted, sweep postponed.
    stack.bitrix.fail_next(slow(0.4), times=10)
    stack.sweep()
    stack.bitrix.clear_faults()
    stack.clock.advance(timedelta(minutes=1))
    stack.settle()
    stack.reconcile()  # reads the queue depth
    out, err = capsys.readouterr()
    assert_no_secret(stack, out, err)
    assert err == ""  # in Lambda everything goes to stdout
    logs, blobs = split(out)

    assert logs and all(line["service"] == "leadwatch" and line["correlation_id"] for line in logs)
    webhooks = [line for line in logs if line["message"].startswith("webhook answered")]
    assert {line["tenant"] for line in webhooks} == {B24_TENANT, AMO_TENANT}
    # A webhook's correlation id is its event's dedupe key, which the worker's batch follows.
    assert any(line["correlation_id"].startswith("b24:ONCRMLEADADD:") for line in webhooks)
    assert any(line["correlation_id"].startswith("amo:") for line in webhooks)
    batches = [line for line in logs if line["message"].startswith("batch of")]
    assert batches and all(line["function_request_id"] for line in batches)
    [postponed] = [line for line in logs if "sweep postponed" in line["message"]]
    assert postponed["tenant"] == B24_TENANT and postponed["level"] == "WARNING"
    assert "timed out" in postponed["message"] and "/rest/1/***/" in postponed["message"]
    verdicts = {line["lead"]: line for line in logs if line.get("lead")}
    assert verdicts[f"lead:{forgotten}"]["tenant"] == B24_TENANT
    assert verdicts[f"lead:{forgotten}"]["message"].endswith("is late")
    assert verdicts[f"lead:{amo_lead}"]["tenant"] == AMO_TENANT
    sweeps = [line for line in logs if line["message"].startswith("sweep:")]
    assert {line["tenant"] for line in sweeps} == {B24_TENANT, AMO_TENANT}

    # No metric carries the tenant (a custom metric per tenant costs per tenant); the log lines do.
    metrics = metric_values(blobs)
    assert metrics[("Verdicts", dims(verdict="late"))] == 2
    assert metrics[("Violations", dims(type="late_first_processing"))] == 2
    assert metrics[("CrmErrors", dims(kind="unavailable"))] == 1
    assert metrics[("CrmErrors", dims())] == 1  # the total the alarm reads
    assert ("QueueDepth", dims()) in metrics
    assert {name for name, _ in metrics} == {"Verdicts", "Violations", "CrmErrors", "QueueDepth"}
    assert all(name in ("service", "verdict", "type", "kind") for _, d in metrics for name, _ in d)


def test_a_refused_webhook_logs_no_secret_and_no_request_url(stack, in_lambda, capsys):
    key = stack.secrets["DEMO_AMO_HOOK_SECRET"]
    status, _ = stack.post_hook(AMO_TENANT, b"leads[add][0][id]=1", key=key[::-1])
    assert status in (401, 403)
    status, _ = stack.post_hook(
        B24_TENANT, b"event=ONCRMLEADADD&data[FIELDS][ID]=5&auth[application_token]=nope"
    )
    assert status == 403
    out, err = capsys.readouterr()
    assert_no_secret(stack, out, err)
    assert key[::-1] not in out and "nope" not in out and "/hooks/" not in out
    logs, blobs = split(out)
    assert blobs == []  # a refused webhook counts nothing, and an empty flush prints nothing
    refused = [line for line in logs if "refused" in line["message"]]
    assert {line["tenant"] for line in refused} == {AMO_TENANT, B24_TENANT}
    assert all(line["correlation_id"] for line in refused)


def test_outside_lambda_logs_go_to_stderr_caplog_still_sees_them_and_metrics_are_dropped(
    stack, caplog, capsys
):
    caplog.set_level(logging.INFO)
    status, _ = stack.post_hook(
        B24_TENANT, b"event=ONCRMLEADADD&data[FIELDS][ID]=5&auth[application_token]=x"
    )
    assert status == 403
    stack.sweep()
    out, err = capsys.readouterr()
    assert out == ""  # no EMF, no log line on stdout
    logs, blobs = split(err)
    assert blobs == []
    [refused] = [line for line in logs if "refused" in line["message"]]
    assert refused["tenant"] == B24_TENANT and refused["correlation_id"]
    assert any(r.name == "leadwatch.ingress" and "refused" in r.getMessage() for r in caplog.records)
    assert_no_secret(stack, out, err, caplog.text)


def test_metric_helpers_make_one_emf_blob_per_dimension_set(in_lambda, capsys):
    with observability.invocation("sweep-event-id"):
        observability.verdict("acme", "on_time", 3)
        observability.verdict("acme", "late")
        observability.verdict("other", "late")  # another tenant: the same metric
        observability.violation("acme", "late_first_processing")
        observability.crm_error("acme", "rate_limited")
        observability.crm_error("other", "rate_limited")
        observability.crm_error("acme", "rejected")
        observability.queue_depth(5)
        observability.queue_depth(7)  # a gauge: the last reading counts
        observability.verdict("other", "late", 0)  # nothing to count: no blob
    _, blobs = split(capsys.readouterr().out)
    assert metric_values(blobs) == {
        ("Verdicts", dims(verdict="on_time")): 3,
        ("Verdicts", dims(verdict="late")): 2,
        ("Violations", dims(type="late_first_processing")): 1,
        ("CrmErrors", dims(kind="rate_limited")): 2,
        ("CrmErrors", dims(kind="rejected")): 1,
        ("CrmErrors", dims()): 3,
        ("QueueDepth", dims()): 7,
    }
    assert not any("tenant" in blob for blob in blobs)
    assert all(blob["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] == "Count" for blob in blobs)
    # Flushing again, or with nothing counted, prints nothing and raises nothing.
    observability.flush()
    with observability.invocation():
        pass
    assert capsys.readouterr().out == ""


def test_the_alarmed_failures_have_a_total_and_a_small_fixed_set_of_kinds(in_lambda, capsys):
    from crm_adapters.base import CrmRateLimited, CrmUnavailable

    with observability.invocation("job-id"):
        observability.telegram_failure("acme", CrmRateLimited("429"))
        observability.telegram_failure("other", CrmUnavailable("timed out"))
        observability.telegram_failure("acme", ValueError("not a delivery failure"))  # not counted
        observability.unconfirmed_messages("acme")
        observability.gave_up("acme", "card_deleted")
        observability.gave_up("acme", "alert_failed", 2)
        observability.gave_up("other", "bot left the chat at 11:02 for tenant other")  # free text
        observability.gave_up("acme", "crm_refused", 0)
    _, blobs = split(capsys.readouterr().out)
    assert metric_values(blobs) == {
        ("TelegramErrors", dims(kind="rate_limited")): 1,
        ("TelegramErrors", dims(kind="unavailable")): 1,
        ("TelegramErrors", dims()): 2,
        ("UnconfirmedMessages", dims()): 1,
        ("GaveUp", dims(reason="card_deleted")): 1,
        ("GaveUp", dims(reason="alert_failed")): 2,
        ("GaveUp", dims(reason="other")): 1,
        ("GaveUp", dims()): 4,
    }
    assert set(observability.ERROR_KINDS) == {"rate_limited", "unavailable", "rejected"}


class _Context:
    aws_request_id = "req-1"

    def __init__(self, left_ms: int):
        self.left_ms = left_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.left_ms


def test_an_invocation_that_ends_near_its_timeout_is_counted_and_logged(in_lambda, capsys):
    with observability.invocation("job-id", lambda_context=_Context(30_000)):
        pass
    assert capsys.readouterr().out == ""  # half a minute left: nothing to say
    context = _Context(30_000)
    with observability.invocation("job-id", lambda_context=context):
        context.left_ms = observability.NEAR_TIMEOUT_MS - 1
    lines, blobs = split(capsys.readouterr().out)
    assert metric_values(blobs) == {("NearTimeout", dims()): 1}
    assert any("near the timeout" in line["message"] for line in lines)


def test_every_alarm_on_a_leadwatch_metric_reads_a_series_that_is_written():
    """The template's alarms on leadwatch's own metrics read the totals (dimension service only)."""
    from leadwatch.store.schema import load_template

    resources = load_template()["Resources"]
    alarms = {
        props["MetricName"]: props
        for props in (
            r["Properties"] for r in resources.values() if r.get("Type") == "AWS::CloudWatch::Alarm"
        )
        if props.get("Namespace") == observability.NAMESPACE
    }
    assert set(alarms) == {
        observability.CRM_ERRORS,
        observability.TELEGRAM_ERRORS,
        observability.UNCONFIRMED_MESSAGES,
        observability.GAVE_UP,
        observability.NEAR_TIMEOUT,
    }
    for props in alarms.values():
        assert props["Dimensions"] == [{"Name": "service", "Value": observability.SERVICE}]
        assert props["Statistic"] == "Sum" and props["Threshold"] == 0
        assert props["ComparisonOperator"] == "GreaterThanThreshold"
        assert props["TreatMissingData"] == "notBreaching"  # EMF writes nothing while nothing fails
        assert props["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_error_kinds_follow_the_crm_error_classes():
    from crm_adapters.base import CrmError, CrmRateLimited, CrmRejected, CrmUnavailable

    assert observability.error_kind(CrmRateLimited("x")) == "rate_limited"
    assert observability.error_kind(CrmUnavailable("x")) == "unavailable"
    assert observability.error_kind(CrmRejected("x")) == "rejected"
    assert observability.error_kind(CrmError("x", retryable=True)) == "unavailable"
    assert observability.error_kind(ValueError("x")) is None


def test_importing_the_app_does_not_import_powertools():
    result = subprocess.run(
        [sys.executable, "-c", "import app, sys; print('aws_lambda_powertools' in sys.modules)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
