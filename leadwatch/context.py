"""The runtime's wiring: tenants, store, queue, clock, adapters and notifiers.

Production builds one `Context` lazily from the environment on the first
invocation (so importing the app stays cheap); tests and the demo install their
own with `set_context` (simulated clock, moto endpoints, fake servers).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from crm_adapters.base import CrmAdapter
    from crm_adapters.limits import SharedLimits
    from leadwatch.calendar import BusinessCalendar
    from leadwatch.config import SecretRef, TenantConfig, TenantRegistry
    from leadwatch.names import Names
    from leadwatch.registry import ProcessRegistry
    from leadwatch.secrets import SecretResolver
    from leadwatch.state import ProcessState, StateStore
    from leadwatch.store.dynamodb import Store
    from leadwatch.telegram import TelegramNotifier

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Queue(Protocol):
    def send(self, payloads: list[dict[str, Any]]) -> None: ...


class SqsQueue:
    """Sends events to the worker's SQS queue, up to 10 per call.

    The template passes the queue URL in; a `chalice deploy` without the template
    has only the queue's name, so the URL is looked up once per cold start.
    """

    def __init__(
        self, url: str, client: Any = None, endpoint: str | None = None, name: str = "leadwatch-events"
    ):
        self._url = url
        self._name = name
        self._client = client
        self._endpoint = endpoint

    @property
    def url(self) -> str:
        if not self._url:
            self._url = self.client.get_queue_url(QueueName=self._name)["QueueUrl"]
        return self._url

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("sqs", endpoint_url=self._endpoint)
        return self._client

    def send(self, payloads: list[dict[str, Any]]) -> None:
        for start in range(0, len(payloads), 10):
            chunk = payloads[start : start + 10]
            entries = [
                {"Id": str(i), "MessageBody": json.dumps(p, separators=(",", ":"))}
                for i, p in enumerate(chunk)
            ]
            result = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
            if result.get("Failed"):
                raise RuntimeError(f"SQS refused {len(result['Failed'])} of {len(entries)} messages")

    def change_visibility(self, receipt_handles: dict[str, int]) -> None:
        """Make received messages visible again after so many seconds each (by receipt handle),
        ten per call: a failed message backs off instead of coming back at the queue's timeout."""
        items = list(receipt_handles.items())
        for start in range(0, len(items), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                for i, (handle, seconds) in enumerate(items[start : start + 10])
            ]
            self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)

    def send_dead_letter(self, body: str, reason: str) -> None:
        """Park a message that can never succeed, with the reason an operator will need."""
        self.client.send_message(
            QueueUrl=self.url,
            MessageBody=body,
            MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:1000]}},
        )


class LambdaJobs:
    """Starts the jobs Lambda (leadwatch.scheduling) asynchronously: Invoke with
    InvocationType=Event, one invocation per `per_invocation` jobs, the invocations sent side by
    side (`threads` at a time), so a dispatcher starts a thousand tenants' jobs in a second or two.

    Lambda keeps each event in its own queue until the function runs it (throttled events wait,
    up to the function's maximum event age), may deliver one twice (every job is idempotent:
    leadwatch.scheduling), and sends an event that failed (after the function's retries) or aged
    out to its on-failure destination (infra/resources.yaml, JobsEventInvokeConfig). An Invoke
    Lambda refuses raises, after the others are sent; the jobs it carried are dispatched again at
    the next tick (their tenants' wake-ups have not moved).

    `function`: the jobs Lambda's name (LEADWATCH_JOBS_FUNCTION: `<stack>-jobs` in the stack,
    `<app>-<stage>-jobs` with `chalice deploy`). One job an invocation by default: each job has
    the whole time budget and fails alone, as one SQS message a batch did before.
    """

    def __init__(self, function: str, client: Any = None, *, per_invocation: int = 1, threads: int = 16):
        if per_invocation < 1 or threads < 1:
            raise ValueError("per_invocation and threads must be at least 1")
        self.function = function
        self.per_invocation = per_invocation
        self.threads = threads
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            # One pooled connection per sending thread (botocore keeps 10 by default).
            self._client = boto3.client("lambda", config=Config(max_pool_connections=self.threads))
        return self._client

    def payloads(self, messages: list[dict[str, Any]]) -> list[bytes]:
        """The invocations' payloads: `{"jobs": [message, ...]}`, `per_invocation` messages each."""
        step = self.per_invocation
        return [
            json.dumps({"jobs": messages[i : i + step]}, separators=(",", ":")).encode("utf-8")
            for i in range(0, len(messages), step)
        ]

    def send(self, payloads: list[dict[str, Any]]) -> None:
        if not payloads:
            return
        if not self.function:
            raise RuntimeError(
                "LEADWATCH_JOBS_FUNCTION is not set: the name of the jobs Lambda to invoke "
                "(the stack sets it; for `chalice deploy`, `python -m leadwatch.iam --stage ...`)"
            )
        bodies = self.payloads(payloads)
        _ = self.client  # made here, once, rather than by several threads at the same time
        if len(bodies) == 1:
            errors = [self._invoke(bodies[0])]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(self.threads, len(bodies))) as pool:
                errors = list(pool.map(self._invoke, bodies))
        refused = [error for error in errors if error is not None]
        if refused:
            raise RuntimeError(
                f"Lambda refused {len(refused)} of {len(bodies)} invocations of {self.function}: {refused[0]}"
            )

    def _invoke(self, body: bytes) -> str | None:
        """None when Lambda took the event, else why not (botocore has retried what it retries)."""
        try:
            answer = self.client.invoke(FunctionName=self.function, InvocationType="Event", Payload=body)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        status = answer.get("StatusCode")
        return None if status == 202 else f"status {status}"


# A factory is given the tenant's own secrets (`SecretResolver.for_tenant`): read together,
# cached together, and read again when a service refuses one. A test's context may give a plain
# function instead.
SecretSource = Callable[["SecretRef"], str]
AdapterFactory = Callable[["TenantConfig", SecretSource], "CrmAdapter"]
NotifierFactory = Callable[["TenantConfig", SecretSource], "TelegramNotifier"]


def default_adapter(
    config: TenantConfig, secrets: SecretSource, limits: SharedLimits | None = None
) -> CrmAdapter:
    """The tenant's CRM adapter; with `limits`, its rate limit holds across the deployment."""
    from crm_adapters.http import Transport

    transport = Transport(limits=limits)
    if config.crm.kind == "bitrix24":
        from crm_adapters.bitrix24 import Bitrix24Adapter

        return Bitrix24Adapter(
            config.tenant, config.crm, secrets, transport=transport, select_fields=config.card_fields()
        )
    from crm_adapters.amocrm import AmoCrmAdapter

    return AmoCrmAdapter(config.tenant, config.crm, secrets, transport=transport)


def default_notifier(
    config: TenantConfig, secrets: SecretSource, limits: SharedLimits | None = None
) -> TelegramNotifier:
    from leadwatch.secrets import Secret
    from leadwatch.telegram import TelegramNotifier

    return TelegramNotifier(
        Secret(secrets, config.telegram.bot_token),
        api_base=config.telegram.api_base,
        limits=limits,
    )


def shared_limits_from_environment() -> SharedLimits | None:
    """The deployment's shared rate limits: counters in the state table (leadwatch.store.limits),
    on the wall clock every Lambda shares. LEADWATCH_SHARED_LIMITS=off: each container paces on
    its own (one write per CRM or Telegram request saved; the limits then hold only while one
    container at a time calls a tenant's CRM)."""
    if os.environ.get("LEADWATCH_SHARED_LIMITS", "on").strip().lower() in ("off", "0", "false", "no"):
        return None
    from crm_adapters.limits import SharedLimits
    from leadwatch.store.limits import DynamoSlotCounter

    return SharedLimits(DynamoSlotCounter())


@dataclass
class Context:
    registry: TenantRegistry
    store: Store
    queue: Queue
    secrets: SecretResolver | SecretSource
    clock: Clock = utc_now
    adapter_factory: AdapterFactory = default_adapter
    notifier_factory: NotifierFactory = default_notifier
    sleep: Callable[[float], None] = time.sleep
    dead_letters: SqsQueue | None = None
    # Where schedules put their per-tenant jobs (leadwatch.scheduling): the jobs Lambda, invoked
    # asynchronously (LambdaJobs); a list in some tests.
    jobs: Queue | None = None
    # The time budget of a job given its invocation's Lambda context; None: the invocation's
    # remaining time (leadwatch.scheduling.Budget.of_invocation). The local stack gives a
    # deployed function's budget on its simulated clock.
    job_budget: Callable[[Any], Any] | None = None
    # Told of every job run with its report (tests and the demo read the reports through it).
    job_observer: Callable[[Any, dict[str, Any]], None] | None = None
    processes: ProcessRegistry = field(default_factory=lambda: _default_processes())
    # Where processes keep their own state (`state()`); DynamoDB unless a test or replay says otherwise.
    state_store: StateStore | None = None
    # What a warm function remembers between invocations, under its keeper's name (a process's
    # `<process>.<what>`): only what saves a read, as a new context starts empty.
    warm: dict[str, Any] = field(default_factory=dict)
    # How long the CRM's names are trusted, and how often a miss may read them again
    # (leadwatch.names; None: 24 h and 10 min).
    names_ttl: timedelta | None = None
    names_retry: timedelta | None = None
    _adapters: dict[str, CrmAdapter] = field(default_factory=dict)
    _names: dict[str, Names] = field(default_factory=dict)
    _notifiers: dict[str, TelegramNotifier] = field(default_factory=dict)
    _calendars: dict[str, BusinessCalendar] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self, process: str) -> ProcessState:
        """One process's own state (its namespace only)."""
        from leadwatch import observability
        from leadwatch.state import ProcessState

        if self.state_store is None:
            from leadwatch.store.process_state import DynamoState

            self.state_store = DynamoState()
        return ProcessState(self.state_store, process, on_stale=observability.stale_write)

    def wake(self, tenant: str, process: str, schedule: str, at: datetime) -> None:
        """Have a process schedule's job run for this tenant at `at` or earlier."""
        from leadwatch.scheduling import wake

        wake(self, tenant, process, schedule, at)

    def tenant(self, tenant_id: str) -> TenantConfig | None:
        return self.registry.get(tenant_id)

    def secrets_of(self, config: TenantConfig) -> SecretSource:
        """The tenant's secrets (one SSM read brings them all). A plain resolving function (a
        test's) is handed on as it is."""
        from leadwatch.secrets import SecretResolver

        if isinstance(self.secrets, SecretResolver):
            return self.secrets.for_tenant(config)
        return self.secrets

    def adapter(self, config: TenantConfig) -> CrmAdapter:
        with self._lock:
            if config.tenant not in self._adapters:
                self._adapters[config.tenant] = self.adapter_factory(config, self.secrets_of(config))
            return self._adapters[config.tenant]

    def notifier(self, config: TenantConfig) -> TelegramNotifier:
        with self._lock:
            if config.tenant not in self._notifiers:
                self._notifiers[config.tenant] = self.notifier_factory(config, self.secrets_of(config))
            return self._notifiers[config.tenant]

    def names(self, config: TenantConfig) -> Names:
        """The names of the tenant's managers and stages (leadwatch.names): made on first use and
        kept for the container; nothing is read until a name is asked for."""
        with self._lock:
            if config.tenant not in self._names:
                from leadwatch.names import DEFAULT_RETRY, DEFAULT_TTL, Names

                self._names[config.tenant] = Names(
                    config.tenant,
                    self.store,
                    lambda: self.adapter(config),
                    self.clock,
                    managers=config.managers,
                    ttl=self.names_ttl or DEFAULT_TTL,
                    retry_every=self.names_retry or DEFAULT_RETRY,
                )
            return self._names[config.tenant]

    def calendar(self, config: TenantConfig) -> BusinessCalendar:
        with self._lock:
            if config.tenant not in self._calendars:
                from leadwatch.calendar import calendar_from_config

                self._calendars[config.tenant] = calendar_from_config(config.calendar)
            return self._calendars[config.tenant]


def _default_processes() -> ProcessRegistry:
    from leadwatch.registry import default_registry

    return default_registry()


_context: Context | None = None
_context_lock = threading.Lock()


def tenants_dir() -> Path:
    configured = os.environ.get("LEADWATCH_TENANTS_DIR")
    if configured:
        return Path(configured)
    # Deployed: config/tenants sits at the bundle root next to app.py (vendored).
    return Path(__file__).resolve().parent.parent / "config" / "tenants"


def build_from_environment() -> Context:
    from leadwatch.config import TenantRegistry
    from leadwatch.names import intervals_from
    from leadwatch.secrets import SecretResolver, ttl_from
    from leadwatch.store.dynamodb import Store
    from leadwatch.store.models import bind_from_environment

    bind_from_environment()
    queue_url = os.environ.get("LEADWATCH_QUEUE_URL", "")
    sqs_endpoint = os.environ.get("LEADWATCH_SQS_ENDPOINT") or None
    limits = shared_limits_from_environment()
    registry = TenantRegistry.from_dir(tenants_dir())
    names_ttl, names_retry = intervals_from(os.environ)
    return Context(
        registry=registry,
        store=Store(retention=registry.retention),
        adapter_factory=functools.partial(default_adapter, limits=limits),
        notifier_factory=functools.partial(default_notifier, limits=limits),
        queue=SqsQueue(
            queue_url,
            endpoint=sqs_endpoint,
            name=os.environ.get("LEADWATCH_QUEUE_NAME", "leadwatch-events"),
        ),
        secrets=SecretResolver(ttl=ttl_from(os.environ)),
        names_ttl=names_ttl,
        names_retry=names_retry,
        dead_letters=SqsQueue(
            os.environ.get("LEADWATCH_DLQ_URL", ""),
            endpoint=sqs_endpoint,
            name=os.environ.get("LEADWATCH_DLQ_NAME", "leadwatch-events-dlq"),
        ),
        jobs=LambdaJobs(os.environ.get("LEADWATCH_JOBS_FUNCTION", "")),
    )


def get_context() -> Context:
    global _context
    with _context_lock:
        if _context is None:
            _context = build_from_environment()
        return _context


def set_context(context: Context | None) -> None:
    global _context
    with _context_lock:
        _context = context
