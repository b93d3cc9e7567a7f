"""Structured logs and metrics: one Powertools `Logger` and `Metrics`, made on first use.

Importing this module is free: Powertools is imported only when a handler opens an
`invocation()` (so `import app` stays as cheap as before). Inside it:

- The Powertools logger is the stdlib logger named "leadwatch", so every
  `logging.getLogger("leadwatch.<module>")` in runtime/ propagates to its handler and
  comes out as one JSON line, carrying the keys bound for this invocation (`tenant`,
  `correlation_id`, and `lead` where a line passes `extra={"lead": ...}`). Records still
  propagate to the root logger (pytest's caplog sees them; Powertools filters them out of
  Lambda's own root handler so nothing is printed twice).
- Metrics are summed in memory and written as CloudWatch EMF at the end of the
  invocation, one blob per dimension set. No metric has a tenant dimension: each distinct
  dimension set is a custom metric ($0.30 a month, by the hours it has data), so a tenant
  dimension would cost that per tenant and metric; the log lines carry the tenant. The failures the alarms watch
  (infra/resources.yaml) are counted twice: by kind or reason, and in a total with no dimension
  but `service`, which is what the alarm reads (one metric per alarm, whatever kinds appear).

In Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set) logs go to stdout at INFO (or
`POWERTOOLS_LOG_LEVEL` / `LOG_LEVEL`) and metrics are printed. Anywhere else (tests, the
demo, the CLI) logs go to stderr at whatever level the root logger has (WARNING unless
someone configures logging) and metrics are dropped, so local output stays quiet.

Nothing here ever receives a secret: callers pass tenant ids, entity keys, dedupe keys,
message ids, counts and error kinds, never URLs, bodies or tokens. Libraries are another matter
at DEBUG (urllib3 logs every request path, with a Bitrix24 webhook code or a Telegram bot token
in it; botocore logs SSM's answers, values included), so the setup pins their loggers at WARNING
whatever the root level, and puts `leadwatch.redaction.RedactingFilter` on the service's handler
and on the root logger's (Lambda's own) as a second net.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Metrics

SERVICE = "leadwatch"
NAMESPACE = "leadwatch"

# Metric names (all Count; every one also has the dimension service=leadwatch): see README "Operations".
VERDICTS = "Verdicts"  # dimensions: verdict (on_time | late)
VIOLATIONS = "Violations"  # dimensions: type (a process's violation types)
CRM_ERRORS = "CrmErrors"  # dimensions: kind (ERROR_KINDS), and the total
TELEGRAM_ERRORS = "TelegramErrors"  # dimensions: kind (ERROR_KINDS), and the total
STALE_WRITES = "StaleWrites"  # dimensions: process; a state write that lost to a newer one
QUEUE_DEPTH = "QueueDepth"  # the events queue's ApproximateNumberOfMessages, once per reconciliation run
NEAR_TIMEOUT = "NearTimeout"  # an invocation that ended with less than NEAR_TIMEOUT_MS left
NEAR_TIMEOUT_MS = 5000  # half the scheduling margin: the jobs Lambda stops at 10 s by design
UNCONFIRMED_MESSAGES = "UnconfirmedMessages"  # a message sent with no answer: settled, never resent
GAVE_UP = "GaveUp"  # dimensions: reason (GAVE_UP_REASONS), and the total; work closed undone

ERROR_KINDS = ("rate_limited", "unavailable", "rejected")
# Why work was closed without being done; any other reason is counted as "other", so the
# dimension stays small whatever callers pass.
GAVE_UP_REASONS = ("card_deleted", "crm_refused", "crm_unavailable", "alert_failed", "other")

MAX_KEY_CHARS = 200  # a bound key (tenant from a URL, joined ids) stays small
# Loggers (and their children) held at WARNING: at DEBUG they write request paths and bodies.
QUIET_LIBRARIES = ("urllib3", "botocore", "boto3", "s3transfer", "requests")

_lock = threading.Lock()
_logger: Logger | None = None
_metrics: Metrics | None = None
_cold_start = True
# (metric name, sorted dimension pairs) -> value; summed, except gauges, which keep the last value.
_pending: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}


def in_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


class _StdStreamHandler(logging.StreamHandler):
    """Writes to the current sys.stdout in Lambda, sys.stderr elsewhere, looked up at each line
    (pytest swaps both per test; a stream captured once would be closed by the next test)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stdout if in_lambda() else sys.stderr


def logger() -> Logger:
    """The service's Powertools logger (the stdlib logger "leadwatch"), made on first use."""
    global _logger
    with _lock:
        if _logger is None:
            from aws_lambda_powertools import Logger

            _logger = Logger(service=SERVICE, logger_handler=_StdStreamHandler())
            if not in_lambda():
                # Chalice left it at ERROR: follow the root logger instead (WARNING, or what caplog sets).
                logging.getLogger(SERVICE).setLevel(logging.NOTSET)
        _own_the_logger(_logger)
        return _logger


def _own_the_logger(log: Logger) -> None:
    """Chalice(app_name="leadwatch") gives this same stdlib logger a plain-text stdout handler at
    level ERROR with propagate=False (its `configure_logs`): left there, it would print each line
    twice, drop the runtime's warnings and hide records from the root logger (pytest's caplog)."""
    std = logging.getLogger(SERVICE)
    chalice_was_here = False
    for handler in list(std.handlers):
        if handler is not log.logger_handler:
            std.removeHandler(handler)
            chalice_was_here = True
    if chalice_was_here:
        # Chalice also set the level to ERROR: back to ours (an app built after the logger was
        # made, as tests build many, would otherwise drop every warning).
        std.setLevel(log.log_level if in_lambda() else logging.NOTSET)
    std.propagate = True
    guard_secrets([log.logger_handler, *logging.getLogger().handlers])


def guard_secrets(handlers: Iterable[logging.Handler] = ()) -> None:
    """Pin the chatty libraries' loggers at WARNING (children set lower too) and put the redaction
    filter on `handlers`. Cheap and idempotent: run at every invocation, so a logger a library
    made or a handler the runtime added since is covered as well."""
    from leadwatch.redaction import RedactingFilter

    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name, existing in list(logging.root.manager.loggerDict.items()):
        if (
            isinstance(existing, logging.Logger)
            and name.split(".", 1)[0] in QUIET_LIBRARIES
            and logging.NOTSET < existing.level < logging.WARNING
        ):
            existing.setLevel(logging.WARNING)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def metrics() -> Metrics:
    """The service's Powertools metrics (CloudWatch EMF), made on first use."""
    global _metrics
    with _lock:
        if _metrics is None:
            from aws_lambda_powertools import Metrics

            _metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
        return _metrics


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_KEY_CHARS:
        return value[:MAX_KEY_CHARS] + "..."
    return value


# ---------------------------------------------------------------- log keys


def bind(**keys: Any) -> None:
    """Add keys (tenant=, lead=, correlation_id=, ...) to this invocation's log lines.

    A no-op until a handler has made the logger: runtime code run from the CLI or a unit
    test, outside any handler, just logs through the stdlib loggers.
    """
    if _logger is None:
        return
    present = {k: _clip(v) for k, v in keys.items() if v is not None}
    if present:
        _logger.thread_safe_append_keys(**present)


def unbind(*names: str) -> None:
    if _logger is None:
        return
    _logger.thread_safe_remove_keys(list(names))


def correlation_of(ids: list[str]) -> str | None:
    """One correlation id for several (a batch's message ids, a delivery's dedupe keys)."""
    if not ids:
        return None
    return ids[0] if len(ids) == 1 else ",".join(ids)


@contextmanager
def invocation(
    correlation_id: str | None = None, *, tenant: str | None = None, lambda_context: Any = None
) -> Iterator[Logger]:
    """Wraps one handler invocation: fresh log keys, then the metrics flushed at the end."""
    global _cold_start
    log = logger()
    if in_lambda():
        log.setLevel(None)  # Powertools: Lambda's log level, else POWERTOOLS_LOG_LEVEL / LOG_LEVEL, else INFO
    log.thread_safe_clear_keys()
    with _lock:
        _pending.clear()  # counts made outside an invocation (CLI, tests) are not this one's
        cold, _cold_start = _cold_start, False
    remaining = getattr(lambda_context, "get_remaining_time_in_millis", None)
    at_start = remaining() if remaining is not None else 0
    request_id = getattr(lambda_context, "aws_request_id", None)
    bind(
        correlation_id=correlation_id or request_id or uuid.uuid4().hex,
        tenant=tenant,
        function_request_id=request_id,
        cold_start=cold,
    )
    try:
        yield log
    finally:
        # Near: little time left, and most of what there was used up (not a short-lived context).
        if remaining is not None and remaining() < min(NEAR_TIMEOUT_MS, at_start * 0.2):
            # Flushed with this invocation's metrics; a killed one says it as a Lambda error.
            _record(NEAR_TIMEOUT, 1)
            log.warning("invocation ended near the timeout: %d ms left", remaining())
        try:
            flush()
        except Exception:
            logging.getLogger("leadwatch.observability").exception("could not write metrics")
        log.thread_safe_clear_keys()


# ---------------------------------------------------------------- metrics


def _record(name: str, value: float, *, gauge: bool = False, **dimensions: str) -> None:
    key = (name, tuple(sorted((k, str(v)) for k, v in dimensions.items())))
    with _lock:
        _pending[key] = value if gauge else _pending.get(key, 0) + value


# The metric helpers take the tenant their call sites know, but record no tenant dimension (see
# the module docstring): the tenant is on the invocation's log lines.


def _with_total(name: str, count: float, **dimensions: str) -> None:
    _record(name, count, gauge=False, **dimensions)
    _record(name, count)


def verdict(tenant: str, verdict: str, count: int = 1) -> None:
    """Verdicts written (on_time | late)."""
    if count:
        _record(VERDICTS, count, verdict=verdict)


def violation(tenant: str, type: str, count: int = 1) -> None:
    """Violations newly recorded in the journal."""
    if count:
        _record(VIOLATIONS, count, type=type)


def crm_error(tenant: str, kind: str, count: int = 1) -> None:
    """CRM calls that failed after the HTTP client's retries (rate_limited | unavailable | rejected)."""
    if count:
        _with_total(CRM_ERRORS, count, kind=kind)


def telegram_error(tenant: str, kind: str, count: int = 1) -> None:
    """Telegram messages that failed after the client's retries (rate_limited | unavailable | rejected)."""
    if count:
        _with_total(TELEGRAM_ERRORS, count, kind=kind)


def unconfirmed_messages(tenant: str, count: int = 1) -> None:
    """Messages whose request left and no answer came: settled as unconfirmed, never sent again."""
    if count:
        _record(UNCONFIRMED_MESSAGES, count)


def gave_up(tenant: str, reason: str, count: int = 1) -> None:
    """Work closed without being done after a permanent refusal or a bounded number of attempts
    (card_deleted | crm_refused | alert_failed; anything else counts as other)."""
    if count:
        _with_total(GAVE_UP, count, reason=reason if reason in GAVE_UP_REASONS else "other")


def stale_write(process: str, count: int = 1) -> None:
    """A state write refused because the state had moved on (a newer snapshot, another worker)."""
    _record(STALE_WRITES, count, process=process)


def queue_depth(n: int) -> None:
    """The events queue's visible backlog (ApproximateNumberOfMessages)."""
    _record(QUEUE_DEPTH, n, gauge=True)


def error_kind(exc: BaseException) -> str | None:
    """rate_limited | unavailable | rejected for a CrmError, None for anything else."""
    from crm_adapters.base import CrmError, CrmRateLimited, CrmRejected, CrmUnavailable

    if isinstance(exc, CrmRateLimited):
        return "rate_limited"
    if isinstance(exc, CrmUnavailable):
        return "unavailable"
    if isinstance(exc, CrmRejected):
        return "rejected"
    if isinstance(exc, CrmError):
        return "unavailable" if exc.retryable else "rejected"
    return None


_Result = TypeVar("_Result")


def per_tenant(
    configs: Iterable[Any],
    what: str,
    run: Callable[[Any], _Result | None],
    failed: Callable[[Any, Exception], _Result],
    logger: logging.Logger,
) -> dict[str, _Result]:
    """One schedule's work, tenant by tenant, each under its tenant's log keys.

    A tenant whose work raises is logged, counted as a CRM error and reported through
    `failed`; the other tenants go on. `run` returns None for a tenant with nothing to do.
    """
    results: dict[str, _Result] = {}
    for config in configs:
        bind(tenant=config.tenant)
        try:
            result = run(config)
        except Exception as exc:
            logger.exception("tenant %s: %s failed", config.tenant, what)
            crm_failure(config.tenant, exc)
            result = failed(config, exc)
        if result is not None:
            results[config.tenant] = result
    unbind("tenant")
    return results


def crm_failure(tenant: str, exc: BaseException) -> None:
    """Count a CRM error by its kind; anything that is not a CrmError is ignored."""
    kind = error_kind(exc)
    if kind is not None:
        crm_error(tenant, kind)


def telegram_failure(tenant: str, exc: BaseException) -> None:
    kind = error_kind(exc)
    if kind is not None:
        telegram_error(tenant, kind)


def metrics_enabled() -> bool:
    """Whether flushed metrics go anywhere (in Lambda); callers skip work done only for metrics."""
    return in_lambda()


def flush() -> None:
    """Write what was counted as EMF, one blob per dimension set; outside Lambda, drop it."""
    with _lock:
        pending = dict(_pending)
        _pending.clear()
    if not pending or not metrics_enabled():
        return
    from aws_lambda_powertools.metrics import MetricUnit

    groups: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
    for (name, dimensions), value in pending.items():
        groups.setdefault(dimensions, {})[name] = value
    emf = metrics()
    for dimensions, values in sorted(groups.items()):
        for dimension, label in dimensions:
            emf.add_dimension(name=dimension, value=label)
        for name, value in sorted(values.items()):
            emf.add_metric(name=name, unit=MetricUnit.Count, value=value)
        emf.flush_metrics(raise_on_empty_metrics=False)
        emf.clear_metrics()  # flush_metrics keeps the set when POWERTOOLS_METRICS_DISABLED is on


def queue_depth_of(queue: Any) -> int | None:
    """ApproximateNumberOfMessages of an SqsQueue (one GetQueueAttributes call); None if unreadable."""
    try:
        answer = queue.client.get_queue_attributes(
            QueueUrl=queue.url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return int(answer["Attributes"]["ApproximateNumberOfMessages"])
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
        logging.getLogger("leadwatch.observability").warning("cannot read the events queue depth (%s)", code)
        return None
