"""The cost benchmark's meter: counts, during a replay on `LocalStack(aws="inprocess")`, what AWS
would bill, and to which class of work each unit belongs (see bench/cost_model.py).

Nothing leadwatch runs is replaced; the meter only watches:

- DynamoDB and SQS through botocore's own events on every client (bench.common.AwsCalls'
  hooking, plus `before-parameter-build` for the request's parameters and `after-call` for the
  answer, correlated through botocore's request context). moto answers ReturnConsumedCapacity
  with 1.0 per write and 0.5 per read whatever the size and without index writes (moto 5.2,
  dynamodb/responses.py `include_consumed_capacity`), so the units are computed from the items
  themselves: before a write the item's old image, after it the new one, both read from moto's
  in-process backend (no API call, nothing counted), priced by cost_model.write_units.
- Lambda: the Chalice test client's `lambda_.invoke` (worker, jobs, the scheduled Lambdas) and
  `http.request` (api_handler) wrapped. The jobs' asynchronous Invoke calls (the dispatchers' and
  the continuations', leadwatch.context.LambdaJobs, answered in the process) are counted as
  `lambda.invoke_calls`, which has no price: Lambda bills the invocation each one causes, counted
  when the jobs Lambda runs it. Their time in the invoking Lambda is replaced by one stated round
  trip per wave of calls sent side by side. Billed duration of each handler call = its wall time,
  less the meter's own time in its hooks and the time spent in botocore + in-process moto (moto
  is no model of DynamoDB's latency: its queries scan whole tables), plus the simulated waits
  the call made (rate pacing and back-off move a virtual clock, `stack.sleeps.offset`, instead
  of sleeping), plus a stated round trip per AWS call and per request to the CRM and Telegram
  fakes (they answer from 127.0.0.1 in a millisecond); rounded up per ms, at the function's
  configured memory.
- Logs: the handlers run "in Lambda" (AWS_LAMBDA_FUNCTION_NAME set, as tests/unit/
  test_observability.py does), so leadwatch.observability writes its JSON lines and EMF metrics
  to stdout at INFO, where the meter counts every line's bytes per invocation, adds Lambda's own
  START / END / REPORT lines, compresses the stream to learn the archive's size, and reads the
  EMF lines for the metrics emitted (name + dimension values, per simulated hour).
- SSM: the stack's secrets come from a dict, through a SecretResolver per function (one warm
  container each) on the simulated clock; each value it has to fetch again is one GetParameter.

Each unit is charged to the shares of the invocation it happens in; outside any (the stack's
SQS polling on behalf of the event source) to the shares of the messages received or deleted.
Shares: a webhook belongs to the CRM action that sent it (create/take/call/reject), an event
message to its webhook (or "found" when reconciliation fed it), a worker batch to its messages,
a job (its Invoke call and its invocation) to its schedule (JOB_CLASSES), a scheduled Lambda's
invocation to "fire:<name>".
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import threading
import time
import uuid
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.common import AwsCalls
from bench.cost_model import (
    GIB,
    MONTH_HOURS,
    MONTH_MINUTES,
    TableSchema,
    billed_ms,
    item_kind,
    item_size,
    read_units,
    storage_bytes,
    write_units,
)

WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
READS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan"})
SQS_CHUNK = 64 * 1024
# A job's class by its process.schedule: the sweep's jobs come with cards falling due (one
# verdict each), the dialing report once a working day, reconciliation every 10 minutes.
JOB_CLASSES = {"timeliness.sweep": "verdict", "dialing.report": "day", "framework.reconcile": "time"}
Shares = dict[str, float]


@dataclass
class Invocation:
    function: str
    shares: Shares
    started: float
    waits_before: float
    http_before: dict[str, int]
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    hook_s: float = 0.0  # the meter's own time inside this invocation
    aws_s: float = 0.0  # time inside botocore and moto (replaced by stated round trips)
    aws_calls: Counter[str] = field(default_factory=Counter)  # service -> calls
    nested_s: float = 0.0  # other invocations run meanwhile (a webhook the CRM fake echoed)
    log_bytes: int = 0
    log_lines: int = 0
    partial: str = ""


def _normalized(counts: Mapping[str, float]) -> Shares:
    total = sum(counts.values())
    return {k: v / total for k, v in counts.items()} if total else {"other": 1.0}


class _CountingEnviron(Mapping[str, str]):
    """The stack's secrets dict, counting each read as one SSM GetParameter."""

    def __init__(self, meter: CostMeter, values: Mapping[str, str]):
        self._meter, self._values = meter, values

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        self._meter.charge("ssm.requests", 1)
        return self._values.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class _SecretsPerFunction:
    """ctx.secrets for the replay: one SecretResolver (and cache) per Lambda function."""

    def __init__(self, meter: CostMeter, values: Mapping[str, str], clock: Any):
        self._meter, self._values, self._clock = meter, values, clock
        self._resolvers: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _resolver(self) -> Any:
        from leadwatch.secrets import SecretResolver

        current = self._meter.current()
        name = current.function if current else "outside"
        with self._lock:
            if name not in self._resolvers:
                self._resolvers[name] = SecretResolver(
                    environ=_CountingEnviron(self._meter, self._values),
                    clock=lambda: self._clock().timestamp(),
                )
            return self._resolvers[name]

    def __call__(self, ref: Any) -> str:
        return self._resolver().resolve(ref)

    def resolve(self, ref: Any) -> str:
        return self._resolver().resolve(ref)

    def known_values(self) -> list[str]:
        return sorted({v for r in self._resolvers.values() for v in r.known_values()})


class _Stdout:
    """sys.stdout during the replay: inside an invocation every line is the function's log line
    (counted, compressed, read for EMF); outside one, writes pass through."""

    def __init__(self, meter: CostMeter, passthrough: Any):
        self._meter, self._passthrough = meter, passthrough
        self.encoding = getattr(passthrough, "encoding", "utf-8")

    def write(self, text: str) -> int:
        current = self._meter.current()
        if current is None:
            return self._passthrough.write(text)
        started = time.perf_counter()
        lines = (current.partial + text).split("\n")
        current.partial = lines.pop()
        for line in lines:
            self._meter.log_line(current, line)
        current.hook_s += time.perf_counter() - started
        return len(text)

    def flush(self) -> None:
        self._passthrough.flush()

    def isatty(self) -> bool:
        return False


class CostMeter(AwsCalls):
    """Install with `meter.install(stack)`; read `usage`, `units` and the rest after `uninstall()`."""

    def __init__(self, *, rtt_s: Mapping[str, float], memory_mb: Mapping[str, int]):
        super().__init__()
        self.rtt_s = dict(rtt_s)  # fake name -> seconds added per request
        self.memory_mb = dict(memory_mb)  # function -> configured memory
        self.usage: dict[str, Counter[str]] = defaultdict(Counter)
        self.units: Counter[str] = Counter()
        self.metric_hours: dict[tuple[str, str, tuple[tuple[str, str], ...]], set[int]] = defaultdict(set)
        self.invocations: Counter[str] = Counter()
        self.log_raw = 0
        self.log_compressed = 0
        self._zip = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._local = threading.local()
        self._active: list[Invocation] = []
        self._active_lock = threading.Lock()
        self._message_shares: dict[str, Shares] = {}  # SQS message id -> shares
        self._receipt_shares: dict[str, Shares] = {}  # receipt handle -> shares
        self._first_write: dict[tuple[str, str], tuple[float, Shares]] = {}
        self._schemas: dict[str, TableSchema] = {}
        self._ttl: dict[str, str] = {}
        self._backend: Any = None
        self._stack: Any = None
        self._last_sim: Any = None
        self._restore: list[Any] = []
        self.scheduled: set[str] = set()

    # ----------------------------------------------------------------- attribution
    def current(self) -> Invocation | None:
        stack = getattr(self._local, "stack", None)
        return stack[-1] if stack else None

    def charge(
        self, meter: str, amount: float, shares: Shares | None = None, detail: str | None = None
    ) -> None:
        if shares is None:
            current = self.current()
            shares = current.shares if current else {"outside": 1.0}
        with self._lock:
            for cls, share in shares.items():
                self.usage[cls][meter] += amount * share
                if detail is not None:
                    self.usage[cls][f"{meter}:{detail}"] += amount * share

    @contextlib.contextmanager
    def action(self, kind: str) -> Iterator[None]:
        """A CRM action of this kind happens now: the webhooks it sends are its."""
        self.units[kind] += 1
        previous = getattr(self._local, "action", None)
        self._local.action = kind
        try:
            yield
        finally:
            self._local.action = previous

    # ----------------------------------------------------------------- install
    def install(self, stack: Any) -> CostMeter:  # type: ignore[override]
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        self._stack = stack
        self._backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][stack.dynamodb.meta.region_name]
        for name in stack.dynamodb.list_tables()["TableNames"]:
            self._schemas[name] = TableSchema.from_description(
                stack.dynamodb.describe_table(TableName=name)["Table"]
            )
            ttl = stack.dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if ttl.get("TimeToLiveStatus") == "ENABLED":
                self._ttl[name] = ttl["AttributeName"]
        self._queues = {stack.queue_url: "events", stack.dlq_url: "dlq"}
        from chalice.app import ScheduledEventConfig

        self.scheduled = {s.name for s in stack.app.event_sources if isinstance(s, ScheduledEventConfig)}
        self._last_sim = stack.clock()
        self._wrap_clients(stack)
        # The handlers log as in Lambda: JSON lines and EMF to stdout, at INFO.
        os.environ["AWS_LAMBDA_FUNCTION_NAME"] = "leadwatch-dev"
        os.environ.pop("POWERTOOLS_LOG_LEVEL", None)
        os.environ.pop("LOG_LEVEL", None)
        self._stdout = sys.stdout
        sys.stdout = _Stdout(self, self._stdout)  # type: ignore[assignment]
        self._secrets = stack.ctx.secrets
        stack.ctx.secrets = _SecretsPerFunction(self, stack.secrets, stack.clock)
        stack.ctx._adapters.clear()  # built again on first use, with the per-function secrets
        stack.ctx._notifiers.clear()
        super().install([stack.sqs, stack.dynamodb, stack.lambda_client])
        return self

    def uninstall(self) -> None:
        super().uninstall()
        sys.stdout = self._stdout
        os.environ.pop("AWS_LAMBDA_FUNCTION_NAME", None)
        for target, name, original in reversed(self._restore):
            setattr(target, name, original)
        self._stack.ctx.secrets = self._secrets
        self.log_compressed += len(self._zip.flush())

    def hook(self, client: Any) -> Any:
        if client is None or getattr(client, "_bench_counted_by", None) is self:
            return client
        super().hook(client)
        client.meta.events.register(
            "before-parameter-build", self._before, unique_id=f"cost-before-{id(self)}"
        )
        client.meta.events.register("after-call", self._after, unique_id=f"cost-after-{id(self)}")
        return client

    def _wrap_clients(self, stack: Any) -> None:
        lambdas, http = stack.client.lambda_, stack.client.http
        original_invoke, original_request = lambdas.invoke, http.request
        meter = self

        def invoke(function_name: str, payload: Any = None) -> Any:
            with meter._invocation(function_name, meter._shares_of_invocation(function_name, payload)):
                return original_invoke(function_name, payload)

        def request(method: str, path: str, headers: Any = None, body: bytes = b"") -> Any:
            shares = meter._shares_of_webhook()
            with meter._invocation("api_handler", shares):
                meter.charge(
                    "apigateway.requests", 1, detail=f"{method} {path.split('?')[0].rsplit('/', 1)[0]}"
                )
                return original_request(method, path, headers=headers, body=body)

        lambdas.invoke, http.request = invoke, request
        self._restore += [(lambdas, "invoke", original_invoke), (http, "request", original_request)]

        # The jobs' Invoke calls: sent side by side from a thread pool, where no invocation is
        # current, so their time is taken here, in the invoking Lambda's thread, and stands for
        # one round trip per wave of `threads` calls.
        sink = stack.ctx.jobs
        original_send = sink.send

        def send(payloads: list[Any]) -> None:
            record = meter.current()
            started, hooks_before = time.perf_counter(), record.hook_s if record else 0.0
            try:
                original_send(payloads)
            finally:
                if record is not None and payloads:
                    hooks = record.hook_s - hooks_before
                    record.aws_s += max(0.0, time.perf_counter() - started - hooks)
                    calls = math.ceil(len(payloads) / sink.per_invocation)
                    record.aws_calls["lambda"] += math.ceil(calls / sink.threads)

        sink.send = send
        self._restore.append((sink, "send", original_send))

    # ----------------------------------------------------------------- invocations
    def _shares_of_webhook(self) -> Shares:
        """A webhook belongs to the CRM action that sent it; one a CRM fake echoes back for
        leadwatch's own write (delivered from the fake's thread while that write's invocation
        waits for the answer) to the work of that invocation."""
        kind = getattr(self._local, "action", None)
        if kind:
            return {kind: 1.0}
        with self._active_lock:
            return dict(self._active[-1].shares) if self._active else {"other": 1.0}

    def _shares_of_invocation(self, function: str, payload: Any) -> Shares:
        if function in self.scheduled:
            self.units[f"fire:{function}"] += 1
            return {f"fire:{function}": 1.0}
        records = (payload or {}).get("Records") or []
        if function == "worker":
            counts: Counter[str] = Counter()
            for record in records:
                for cls, share in self._message_shares.get(record["messageId"], {"found": 1.0}).items():
                    counts[cls] += share
            return _normalized(counts)
        if function == "jobs":
            return self._jobs_shares(payload)
        return {"other": 1.0}

    def _jobs_shares(self, payload: Any) -> Shares:
        """A jobs payload's (`{"jobs": [message, ...]}`) shares: its jobs' classes."""
        messages = (payload or {}).get("jobs") if isinstance(payload, dict) else None
        return _normalized(Counter(self._job_class(message) for message in messages or []))

    @staticmethod
    def _job_class(message: Any) -> str:
        try:
            job = message["job"]
            return JOB_CLASSES.get(f"{job['process']}.{job['schedule']}", "time")
        except (KeyError, TypeError):
            return "time"

    def _fakes(self) -> dict[str, Any]:
        return {"bitrix24": self._stack.bitrix, "amocrm": self._stack.amo, "telegram": self._stack.telegram}

    @contextlib.contextmanager
    def _invocation(self, function: str, shares: Shares) -> Iterator[Invocation]:
        stack = self._stack
        with self._active_lock:
            outermost = not self._active
            if outermost:
                # The rate limiters' clock keeps pace with the simulated one between invocations:
                # a minute later, every bucket is as full as it would be a minute later.
                now = stack.clock()
                stack.sleeps.offset += max(0.0, (now - self._last_sim).total_seconds())
                self._last_sim = now
        record = Invocation(
            function,
            shares,
            time.perf_counter(),
            stack.sleeps.offset,
            {name: len(fake.log) for name, fake in self._fakes().items()},
        )
        with self._active_lock:
            self._active.append(record)
        self._local.stack = [*getattr(self._local, "stack", []), record]
        try:
            yield record
        finally:
            wall = time.perf_counter() - record.started
            self._local.stack = self._local.stack[:-1]
            with self._active_lock:
                self._active.remove(record)
                for other in self._active:
                    other.nested_s += wall
            self._close(record, wall)

    def _close(self, record: Invocation, wall: float) -> None:
        if record.partial:
            self.log_line(record, record.partial)
        requests = {name: len(fake.log) - record.http_before[name] for name, fake in self._fakes().items()}
        waits = self._stack.sleeps.offset - record.waits_before
        calls = {**requests, **record.aws_calls}
        latency = sum(n * self.rtt_s.get(name, 0.0) for name, n in calls.items())
        measured = max(0.0, wall - record.hook_s - record.nested_s - record.aws_s)
        billed = billed_ms((measured + waits + latency) * 1000)
        memory = self.memory_mb.get(record.function, 128)
        gb_s = billed / 1000 * memory / 1024
        fn, shares = record.function, record.shares
        self.invocations[fn] += 1
        self.charge("lambda.requests", 1, shares, fn)
        self.charge("lambda.gb_s", gb_s, shares, fn)
        self.charge("lambda.gb_s_arm64", gb_s, shares)
        self.charge("lambda.ms_measured", measured * 1000, shares, fn)
        self.charge("lambda.ms_moto", record.aws_s * 1000, shares, fn)
        self.charge("lambda.ms_waits", waits * 1000, shares, fn)
        self.charge("lambda.ms_rtt", latency * 1000, shares, fn)
        self.charge("lambda.ms_billed", billed, shares, fn)
        self.charge("crm.requests", requests["bitrix24"], shares, "bitrix24")
        self.charge("crm.requests", requests["amocrm"], shares, "amocrm")
        self.charge("telegram.requests", requests["telegram"], shares)
        # Lambda's own lines (text format) for every invocation.
        rid = record.request_id
        platform = [
            f"START RequestId: {rid} Version: $LATEST",
            f"END RequestId: {rid}",
            f"REPORT RequestId: {rid}\tDuration: {billed - 0.5:.2f} ms\tBilled Duration: {billed} ms\t"
            f"Memory Size: {memory} MB\tMax Memory Used: {memory // 4} MB\t",
        ]
        for line in platform:
            self._count_line(record, line)
        self.charge("logs.bytes", record.log_bytes, shares, fn)
        self.charge("logs.lines", record.log_lines, shares)

    # ----------------------------------------------------------------- logs and metrics
    def _count_line(self, record: Invocation, line: str) -> None:
        data = line.encode("utf-8")
        record.log_bytes += len(data)
        record.log_lines += 1
        with self._lock:
            self.log_raw += len(data) + 1
            self.log_compressed += len(self._zip.compress(data + b"\n"))

    def log_line(self, record: Invocation, line: str) -> None:
        self._count_line(record, line)
        if line.startswith('{"_aws"'):
            self._emf(line)

    def _emf(self, line: str) -> None:
        document = json.loads(line)
        hour = int(self._stack.clock().timestamp() // 3600)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for dimensions in directive["Dimensions"] or [[]]:
                values = tuple(sorted((name, str(document.get(name))) for name in dimensions))
                for metric in directive["Metrics"]:
                    with self._lock:
                        self.metric_hours[(directive["Namespace"], metric["Name"], values)].add(hour)

    def metric_months(self, replay_minutes: float, tenants: int) -> tuple[float, float, list[dict[str, Any]]]:
        """(per tenant, per deployment) metric-months in a month: each metric (name + dimension
        values) is billed for the hours it was sent in (prorated by the hour), those of the
        replay scaled to a month by time and capped at the month's 730."""
        scale = MONTH_MINUTES / replay_minutes
        tenant_total, deployment_total, rows = 0.0, 0.0, []
        for (namespace, name, dims), hours in sorted(self.metric_hours.items()):
            months = min(MONTH_HOURS, len(hours) * scale) / MONTH_HOURS
            if any(dim == "tenant" for dim, _ in dims):
                tenant_total += months
            else:
                deployment_total += months
            rows.append(
                {
                    "metric": f"{namespace}/{name}",
                    "dimensions": dict(dims),
                    "hours": len(hours),
                    "months": months,
                }
            )
        return tenant_total / tenants, deployment_total, rows

    # ----------------------------------------------------------------- botocore events
    def _before(self, params: Any = None, model: Any = None, context: Any = None, **_: Any) -> None:
        """Keeps the caller's parameters in botocore's request context (the one dict every event
        of a call shares) for `_after`, and before a DynamoDB write the old image of each item."""
        if model is None or context is None or not self._counting:
            return
        started = time.perf_counter()
        context["bench_cost_params"] = params
        if model.service_model.service_name == "dynamodb" and model.name in WRITES:
            context["bench_cost_old"] = [
                (table, key, self._item(table, key)) for table, key, _ in self._targets(model.name, params)
            ]
        self._charge_hook_time(started)
        context["bench_cost_sent"] = time.perf_counter()

    def _after(self, parsed: Any = None, model: Any = None, context: Any = None, **_: Any) -> None:
        if model is None or not self._counting or not isinstance(parsed, dict):
            return
        started = time.perf_counter()
        service, operation = model.service_model.service_name, model.name
        current = self.current()
        # (Lambda's Invoke: its time and round trips are charged where the jobs are sent.)
        if current is not None and context and "bench_cost_sent" in context and service != "lambda":
            current.aws_s += started - context["bench_cost_sent"]
            current.aws_calls[service] += 1
        params = (context or {}).get("bench_cost_params")
        try:
            if service == "dynamodb" and operation in WRITES:
                self._charge_write(operation, parsed, (context or {}).get("bench_cost_old", []))
            elif service == "dynamodb" and operation in READS:
                self._charge_read(operation, parsed, params)
            elif service == "sqs":
                self._charge_sqs(operation, parsed, params)
            elif service == "lambda" and operation == "Invoke" and params is not None:
                body = params.get("Payload") or b"{}"
                payload = json.loads(body.decode("utf-8") if isinstance(body, bytes) else body)
                self.charge("lambda.invoke_calls", 1, self._jobs_shares(payload), params.get("FunctionName"))
        finally:
            self._charge_hook_time(started)

    def _charge_hook_time(self, started: float) -> None:
        current = self.current()
        if current is not None:
            current.hook_s += time.perf_counter() - started

    # ----------------------------------------------------------------- DynamoDB
    def _item(self, table: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        try:
            found = self._backend.get_item(table, dict(key))
        except Exception:
            return None
        return found.to_json()["Attributes"] if found is not None else None

    def _targets(self, operation: str, params: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
        """(table, key, write kind) of every item a write touches."""
        if operation == "PutItem":
            schema = self._schemas[params["TableName"]]
            return [(params["TableName"], schema.key_of(params["Item"]), "put")]
        if operation in ("UpdateItem", "DeleteItem"):
            return [(params["TableName"], dict(params["Key"]), operation)]
        found = []
        if operation == "BatchWriteItem":
            for table, requests in params["RequestItems"].items():
                for request in requests:
                    if "PutRequest" in request:
                        found.append(
                            (table, self._schemas[table].key_of(request["PutRequest"]["Item"]), "put")
                        )
                    else:
                        found.append((table, dict(request["DeleteRequest"]["Key"]), "delete"))
        if operation == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((action, body),) = entry.items()
                table = body["TableName"]
                key = self._schemas[table].key_of(body["Item"]) if action == "Put" else dict(body["Key"])
                found.append((table, key, action))
        return found

    def _charge_write(self, operation: str, parsed: Mapping[str, Any], old: list[Any]) -> None:
        code = (parsed.get("Error") or {}).get("Code")
        failed = code in ("ConditionalCheckFailedException", "TransactionCanceledException")
        if code and not failed:
            return  # refused before writing anything (validation): not billed
        current = self.current()
        shares = current.shares if current else {"outside": 1.0}
        moment = self._stack.clock().timestamp()
        for table, key, before in old:
            schema = self._schemas[table]
            after = None if failed else self._item(table, key)
            units = write_units(
                schema, before, after, failed=failed, transactional=operation == "TransactWriteItems"
            )
            kind = item_kind(table, str(next(iter(key[schema.keys[-1]].values()))))
            self.charge("dynamodb.wru", units.table, shares, kind)
            for index, amount in units.indexes.items():
                self.charge("dynamodb.wru", amount, shares, f"{kind}>{index}")
            self.charge(
                "dynamodb.wru_by_op",
                units.total,
                shares,
                operation + (" (condition failed)" if failed else ""),
            )
            self.charge("dynamodb.item_writes", 1, shares)
            if after is not None:
                ident = (table, json.dumps(key, sort_keys=True))
                with self._lock:
                    self._first_write.setdefault(ident, (moment, dict(shares)))

    def _charge_read(
        self, operation: str, parsed: Mapping[str, Any], params: Mapping[str, Any] | None
    ) -> None:
        if parsed.get("Error") or params is None:
            return
        if operation == "GetItem":
            table = params["TableName"]
            item = self._item(table, params["Key"])
            sizes, per_item, consistent, where = (
                [item_size(item)],
                True,
                bool(params.get("ConsistentRead")),
                table,
            )
        elif operation == "BatchGetItem":
            sizes, consistent, where = [], False, ""
            for table, request in params["RequestItems"].items():
                sizes += [item_size(self._item(table, key)) for key in request["Keys"]]
                consistent = consistent or bool(request.get("ConsistentRead"))
                where = table
            per_item = True
        else:
            table = params["TableName"]
            items = parsed.get("Items") or []
            if params.get("ProjectionExpression") or params.get("AttributesToGet"):
                schema = self._schemas[table]
                items = [self._item(table, schema.key_of(item)) or item for item in items]
            sizes = [item_size(item) for item in items]
            scanned, count = parsed.get("ScannedCount", len(items)), max(len(items), 1)
            if scanned > len(items) and sizes:  # filtered out: read all the same, at the mean size
                sizes += [sum(sizes) // count] * (scanned - len(items))
            per_item, consistent = False, bool(params.get("ConsistentRead"))
            where = table + (f">{params['IndexName']}" if params.get("IndexName") else "")
            if not params.get("IndexName"):
                # Which items the Query reads: the kind of its range key's prefix (begins_with).
                prefixes = [
                    v["S"]
                    for v in (params.get("ExpressionAttributeValues") or {}).values()
                    if "S" in v and "#" in v["S"]
                ]
                if prefixes:
                    where = item_kind(table, prefixes[0])
        units = read_units(sizes, consistent=consistent, per_item=per_item)
        kind = where.removeprefix("leadwatch-")
        self.charge("dynamodb.rru", units, detail=f"{kind} {operation}")
        self.charge("dynamodb.read_bytes", sum(sizes))
        self.charge("dynamodb.read_calls", 1)
        self.charge("dynamodb.items_read", len(sizes))

    # ----------------------------------------------------------------- SQS
    def _charge_sqs(
        self, operation: str, parsed: Mapping[str, Any], params: Mapping[str, Any] | None
    ) -> None:
        if params is None:
            return
        queue = self._queues.get(params.get("QueueUrl", ""), "other")
        current = self.current()
        shares: Shares
        if operation in ("SendMessage", "SendMessageBatch"):
            entries = params.get("Entries") or [params]
            size = sum(len(e.get("MessageBody", "").encode("utf-8")) + _attributes_size(e) for e in entries)
            requests = max(1, math.ceil(size / SQS_CHUNK))
            if current is not None and queue == "events" and set(current.shares) <= {"time"}:
                shares = {"found": 1.0}  # reconciliation feeding what a lost webhook would have brought
            else:
                shares = current.shares if current else {"outside": 1.0}
            ids = [e["MessageId"] for e in parsed.get("Successful", [])] or [parsed.get("MessageId")]
            for message_id in ids:
                if message_id:
                    self._message_shares[message_id] = shares
        elif operation == "ReceiveMessage":
            messages = parsed.get("Messages") or []
            size = sum(len(m.get("Body", "").encode("utf-8")) for m in messages)
            requests = max(1, math.ceil(size / SQS_CHUNK))
            if current is not None:
                shares = current.shares
            elif not messages:
                shares = {"idle": 1.0}  # an empty poll: the event sources' polling is modelled instead
            else:
                counts: Counter[str] = Counter()
                for message in messages:
                    for cls, share in self._message_shares.get(message["MessageId"], {"found": 1.0}).items():
                        counts[cls] += share
                shares = _normalized(counts)
            for message in messages:
                per_message = self._message_shares.get(message["MessageId"], {"found": 1.0})
                self._receipt_shares[message["ReceiptHandle"]] = per_message
        else:
            requests = 1
            handles = [e["ReceiptHandle"] for e in params.get("Entries", [])] or [params.get("ReceiptHandle")]
            if current is not None:
                shares = current.shares
            else:
                counts = Counter()
                for handle in handles:
                    for cls, share in self._receipt_shares.get(handle or "", {"other": 1.0}).items():
                        counts[cls] += share
                shares = _normalized(counts)
            if operation.startswith("DeleteMessage"):
                for handle in handles:
                    self._receipt_shares.pop(handle or "", None)
        self.charge("sqs.requests", requests, shares, f"{queue} {operation}")

    # ----------------------------------------------------------------- storage
    def storage(self, retention_months: float) -> None:
        """Charge each item left in the tables with the GB-months it will be stored: until its
        TTL when it has one (from its first write), else `retention_months`; to the shares that
        first wrote it. Tables and indexes; PITR on the tables alone."""
        seconds_a_month = MONTH_HOURS * 3600
        for name, schema in self._schemas.items():
            for item in self._backend.get_table(name).all_items():
                attrs = item.to_json()["Attributes"]
                table_bytes, index_bytes = storage_bytes(schema, attrs)
                key = schema.key_of(attrs)
                written, shares = self._first_write.get(
                    (name, json.dumps(key, sort_keys=True)), (None, {"outside": 1.0})
                )
                ttl = attrs.get(self._ttl.get(name, ""))
                if ttl is not None and "N" in ttl and written is not None:
                    months = max(0.0, float(ttl["N"]) - written) / seconds_a_month
                else:
                    months = retention_months
                kind = item_kind(name, str(next(iter(key[schema.keys[-1]].values()))))
                self.charge(
                    "dynamodb.storage_gb_month", (table_bytes + index_bytes) * months / GIB, shares, kind
                )
                self.charge("dynamodb.pitr_gb_month", table_bytes * months / GIB, shares)
                self.charge("dynamodb.stored_bytes", table_bytes + index_bytes, shares, kind)
                if ttl is None:
                    self.charge("dynamodb.stored_bytes_kept", table_bytes + index_bytes, shares)

    def log_storage(self, retention_months: float) -> float:
        """Charge the compressed archive of every class's log bytes for `retention_months`;
        returns the compression ratio measured (deflate of the whole stream)."""
        ratio = self.log_compressed / self.log_raw if self.log_raw else 0.0
        for usage in self.usage.values():
            usage["logs.storage_gb_month"] += usage["logs.bytes"] * ratio * retention_months / GIB
        return ratio


def _attributes_size(entry: Mapping[str, Any]) -> int:
    size = 0
    for name, value in (entry.get("MessageAttributes") or {}).items():
        size += len(name) + len(value.get("DataType", "")) + len(str(value.get("StringValue", "")))
    return size
