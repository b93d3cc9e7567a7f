"""A whole leadwatch deployment on one machine, for integration tests and the demo.

DynamoDB and SQS: moto's standalone server over real HTTP (tables and queues
created from infra/resources.yaml), or, opt-in with `aws="inprocess"`, moto's
in-process `mock_aws()` (nothing leaves the process; the benchmarks use it).
Bitrix24, amoCRM and Telegram: the fakes, over real HTTP on 127.0.0.1.
leadwatch itself: the real Chalice app, its routes driven through Chalice's
local gateway (in-process) or a local HTTP server, its SQS worker fed from the
real queue, its schedules invoked as EventBridge would, and the jobs they start
(asynchronous invocations of the jobs Lambda, through the real boto3 client,
answered in the process: leadwatch.testing.lambda_invoke) run by `pump_jobs` as
Lambda's queue of asynchronous events would. Time is a simulated clock shared by
everything.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import yaml

from crm_adapters.http import RetryPolicy, Transport
from leadwatch.testing.amocrm import DEFAULT_USERS as AMO_USERS
from leadwatch.testing.amocrm import FakeAmoCrm
from leadwatch.testing.bitrix24 import DEFAULT_USERS as B24_USERS
from leadwatch.testing.bitrix24 import FakeBitrix24
from leadwatch.testing.lambda_invoke import Invocations, lambda_client
from leadwatch.testing.telegram import FakeTelegram

if TYPE_CHECKING:
    from crm_adapters.base import CrmAdapter
    from leadwatch.config import TenantConfig
    from leadwatch.context import SecretSource
    from leadwatch.telegram import TelegramNotifier

REGION = "eu-central-1"
# The jobs Lambda's name in a stack named "leadwatch" (`<stack>-jobs`).
JOBS_FUNCTION = "leadwatch-jobs"


class SimClock:
    """The one clock of a simulated run: everything asks it for "now"."""

    def __init__(self, start: datetime):
        if start.tzinfo is None:
            raise ValueError("SimClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta | float) -> datetime:
        """Moves the clock on by `delta` (a timedelta or seconds)."""
        with self._lock:
            self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
            return self._now


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Sleeps:
    """The waits adapters ask for (rate pacing, backoff, retry_after).

    In tests nothing really waits: a wait moves a shared virtual monotonic clock
    forward instead, and the fakes' rate limits drain by that same clock, so
    pacing and backoff behave as in real time without taking it. The demo waits for real.
    """

    real: bool = False
    waits: list[float] = field(default_factory=list)
    offset: float = 0.0

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.real:
            time.sleep(seconds)
        else:
            self.offset += seconds

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


class MotoProcess:
    """moto's standalone server in its own process: AWS over real HTTP, on the other core.

    Serial (fakes/moto_server.py): moto does not make a conditional write atomic
    under concurrent requests, and leadwatch relies on that atomicity.
    """

    def __init__(self, port: int):
        self.port = port
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "leadwatch.testing.moto_server", str(self.port)],
            cwd=Path(__file__).resolve().parents[2],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError("moto's server exited at start")
            try:
                requests.get(f"http://127.0.0.1:{self.port}/moto-api/", timeout=1)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto's server did not start within 60 s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None


B24_TENANT = "demo-b24"
AMO_TENANT = "demo-amo"
HOURS = ["09:00-13:00", "14:00-18:00"]


def tenant_yaml(
    tenant: str, crm: dict[str, Any], telegram_url: str, unprocessed: list[str], **extra: Any
) -> dict:
    return {
        "tenant": tenant,
        "crm": crm,
        "calendar": {
            "timezone": "Europe/Moscow",
            "country": "RU",
            "hours": {day: HOURS for day in ("mon", "tue", "wed", "thu", "fri")},
        },
        "timeliness": {
            "control_start": "11:00",
            "reaction_minutes": 15,
            "unprocessed_stages": unprocessed,
            "intake_field": "UF_CRM_INTAKE" if crm["kind"] == "bitrix24" else "584211",
            "verdict_field": "UF_CRM_ON_TIME" if crm["kind"] == "bitrix24" else "584213",
            "verdict_values": {"yes": "Y", "no": "N"}
            if crm["kind"] == "bitrix24"
            else {"yes": "Yes", "no": "No"},
        },
        "telegram": {
            "chat_id": "-100777",
            "bot_token": {"env": "DEMO_TELEGRAM_TOKEN"},
            "api_base": telegram_url,
        },
        "api_key": {"env": f"{tenant.upper().replace('-', '_')}_API_KEY"},
        **extra,
    }


def _with_base_url(value: Any, base_url: str) -> Any:
    """`value` with "{base_url}" in its texts replaced by the app's address (with `http=True`)."""
    if isinstance(value, str):
        return value.replace("{base_url}", base_url)
    if isinstance(value, dict):
        return {k: _with_base_url(v, base_url) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_base_url(v, base_url) for v in value]
    return value


class LocalStack:
    """Start with `with LocalStack(clock) as stack:`; see the module docstring."""

    def __init__(
        self,
        clock: SimClock,
        *,
        workdir: Path | None = None,
        crm_rate_scale: float = 1.0,
        real_sleep: bool = False,
        http: bool = False,
        managers: dict[str, str] | None = None,
        aws: str = "server",
        crm_timeout: tuple[float, float] = (5.0, 20.0),
        processes: Any = None,
        tenant_sections: dict[str, dict[str, Any]] | None = None,
        tenant_managers: bool = True,
    ):
        """`processes`: the registry to run (default: the deployment's, workflows.PROCESSES); a
        process author passes one with their own process. `tenant_sections`: extra sections
        written into both tenant files (a process's settings), by section name; a text
        "{base_url}" in them is the app's own address (`http=True`), e.g. for a page's links. `managers` (CRM
        user id -> name) are both CRMs' users, and the tenant files' `managers` map unless
        `tenant_managers` is False (then every name comes from the CRM)."""
        if aws not in ("server", "inprocess"):
            raise ValueError(f"aws must be 'server' or 'inprocess', got {aws!r}")
        self.aws = aws
        self.crm_timeout = crm_timeout
        self.processes = processes
        self.tenant_sections = tenant_sections or {}
        self.clock = clock
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="leadwatch-"))
        self.sleeps = Sleeps(real=real_sleep)
        self.http = http
        self.managers = managers or {}
        self.tenant_managers = tenant_managers
        scale = crm_rate_scale
        self.bitrix = FakeBitrix24(
            webhook_code="b24-webhook-code-Zx81",
            application_token="b24-app-token-Qw77",
            rate=2.0 * scale,
            burst=50,
            clock=clock,
            monotonic=self.sleeps.monotonic,
        )
        self.amo = FakeAmoCrm(
            token="amo-long-lived-token-Lk52",
            rate_limit=7,
            rate_window=1.0 / scale,
            clock=clock,
            monotonic=self.sleeps.monotonic,
        )
        self.telegram = FakeTelegram(
            token="123456:TELEGRAM-demo-token",
            per_chat_rate=1.0 * scale,
            per_chat_burst=3,
            clock=self.sleeps.monotonic,
            group_limit=20,
            group_period=60.0 / scale,
        )
        self.crm_rate_scale = scale
        # The portals' users are the managers (and the admin each has), so their names are the CRM's.
        users = {user: name for user, name in self.managers.items() if user.isdigit() and int(user) > 0}
        self.bitrix.set_users(B24_USERS | users)
        self.amo.set_users({str(user): name for user, name in AMO_USERS.items()} | users)
        self.secrets = {
            "DEMO_B24_WEBHOOK_CODE": "b24-webhook-code-Zx81",
            "DEMO_B24_APP_TOKEN": "b24-app-token-Qw77",
            "DEMO_AMO_TOKEN": "amo-long-lived-token-Lk52",
            "DEMO_AMO_HOOK_SECRET": "amo-hook-secret-Vb93",
            "DEMO_TELEGRAM_TOKEN": "123456:TELEGRAM-demo-token",
            "DEMO_B24_API_KEY": "api-key-b24-Pp12",
            "DEMO_AMO_API_KEY": "api-key-amo-Mm34",
        }
        self._moto: Any = None
        self._mock_aws: Any = None
        self.aws_endpoint: str | None = None
        self._server: Any = None
        self._app_port = 0
        self.base_url = ""
        self.client: Any = None
        self.ctx: Any = None
        self.queue_url = ""
        # The jobs Lambda's asynchronous invocations, taken as Lambda would (pump_jobs runs them).
        self.invocations = Invocations()
        self.lambda_client: Any = None
        self.job_reports: list[tuple[str, dict]] = []
        self.dlq_url = ""
        self.sqs: Any = None
        self.dynamodb: Any = None
        self.dropped: list[tuple[str, bytes]] = []
        self.drop_next = 0
        self.webhook_answers: list[tuple[str, int]] = []
        self.crashes = 0  # invocations that died (the worker's, or the jobs Lambda's other than JobsFailed)
        self.failed_job_invocations = 0  # the jobs Lambda's invocations that failed, retries included
        # False: a failed message is visible again at once, as if its back-off had passed (the
        # clock is simulated, SQS's is not). True: it keeps the back-off the worker gave it.
        self.honour_backoff = False
        self.backed_off: list[str] = []  # receipt handles of the messages left backing off
        # True: a failed event comes back after the worker's back-off on the simulated clock (a
        # CRM outage of 40 minutes is waited out as in AWS, not retried at once into the DLQ).
        self.backoff_on_clock = False
        self._hidden: list[tuple[datetime, str]] = []  # (visible again at, receipt handle)

    # ----- lifecycle
    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ["AWS_DEFAULT_REGION"] = REGION
        if self.aws == "inprocess":
            from moto import mock_aws

            from leadwatch.testing import moto_speed

            moto_speed.install()
            self._mock_aws = mock_aws()
            self._mock_aws.start()
            self.aws_endpoint = None  # boto3 and PynamoDB talk to moto's in-process backends
        else:
            port = free_port()
            self._moto = MotoProcess(port)
            self._moto.start()
            self.aws_endpoint = f"http://127.0.0.1:{port}"
        for fake in (self.bitrix, self.amo, self.telegram):
            fake.start()
        if self.http:
            # Known before the tenant files are written: a section may name it as "{base_url}".
            self._app_port = free_port()
            self.base_url = f"http://127.0.0.1:{self._app_port}"
        self._create_aws()
        self._write_tenants()
        self._build_context()
        self._wire_fakes()

    def stop(self) -> None:
        from leadwatch.context import set_context

        set_context(None)
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for fake in (self.bitrix, self.amo, self.telegram):
            fake.stop()
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        if self._mock_aws is not None:
            self._mock_aws.stop()
            self._mock_aws = None

    def _create_aws(self) -> None:
        import boto3

        from leadwatch.store.models import bind
        from leadwatch.store.schema import create_queues, create_tables

        self.dynamodb = boto3.client("dynamodb", endpoint_url=self.aws_endpoint, region_name=REGION)
        self.sqs = boto3.client("sqs", endpoint_url=self.aws_endpoint, region_name=REGION)
        create_tables(self.dynamodb)
        urls = create_queues(self.sqs)
        self.queue_url = urls["EventsQueue"]
        self.dlq_url = urls["EventsDeadLetterQueue"]
        self.lambda_client = lambda_client(self.invocations, REGION)
        bind(host=self.aws_endpoint, region=REGION)

    def _write_tenants(self) -> None:
        directory = self.workdir / "tenants"
        directory.mkdir(parents=True, exist_ok=True)
        b24 = tenant_yaml(
            B24_TENANT,
            {
                "kind": "bitrix24",
                "base_url": self.bitrix.url,
                "webhook_user_id": 1,
                "webhook_code": {"env": "DEMO_B24_WEBHOOK_CODE"},
                "application_token": {"env": "DEMO_B24_APP_TOKEN"},
            },
            self.telegram.url,
            ["NEW"],
            managers=self.managers if self.tenant_managers else {},
        )
        amo = tenant_yaml(
            AMO_TENANT,
            {
                "kind": "amocrm",
                "base_url": self.amo.url,
                "access_token": {"env": "DEMO_AMO_TOKEN"},
                "hook_secret": {"env": "DEMO_AMO_HOOK_SECRET"},
                "account_id": self.amo.account_id,
            },
            self.telegram.url,
            [str(s) for s in self.amo.first_stages()],
            managers=self.managers if self.tenant_managers else {},
            # Both calendars are Russian; the Bitrix24 tenant writes Russian by that default, this
            # one English, so every flow runs in both languages.
            language="en",
        )
        for data in (b24, amo):
            data.update(_with_base_url(self.tenant_sections, self.base_url))
            (directory / f"{data['tenant']}.yaml").write_text(
                yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
            )
        self.tenants_dir = directory

    def _build_context(self) -> None:
        from crm_adapters.amocrm import AmoCrmAdapter
        from crm_adapters.bitrix24 import Bitrix24Adapter
        from crm_adapters.limits import SharedLimits
        from leadwatch.config import TenantRegistry
        from leadwatch.context import Context, LambdaJobs, SqsQueue, set_context
        from leadwatch.secrets import Secret, SecretResolver
        from leadwatch.store.dynamodb import Store
        from leadwatch.store.limits import DynamoSlotCounter
        from leadwatch.telegram import TelegramNotifier

        scale = self.crm_rate_scale
        policy = RetryPolicy(attempts=5, base_delay=0.05, max_delay=2.0, budget=10.0)

        # The deployment's shared limits, in the state table, on the clock every limiter here shares.
        limits = SharedLimits(DynamoSlotCounter(), clock=self.sleeps.monotonic, sleep=self.sleeps)
        transport = Transport(
            sleep=self.sleeps,
            monotonic=self.sleeps.monotonic,
            policy=policy,
            timeout=self.crm_timeout,
            limits=limits,
        )

        def adapter_factory(config: TenantConfig, secrets: SecretSource) -> CrmAdapter:
            if config.crm.kind == "bitrix24":
                return Bitrix24Adapter(
                    config.tenant,
                    config.crm,
                    secrets,
                    transport=transport,
                    rate=2.0 * scale,
                    burst=50,
                    select_fields=config.card_fields(),
                )
            return AmoCrmAdapter(config.tenant, config.crm, secrets, transport=transport, period=1.0 / scale)

        def notifier_factory(config: TenantConfig, secrets: SecretSource) -> TelegramNotifier:
            return TelegramNotifier(
                Secret(secrets, config.telegram.bot_token),
                api_base=config.telegram.api_base,
                sleep=self.sleeps,
                monotonic=self.sleeps.monotonic,
                policy=policy,
                chat_interval=1.2 / scale,
                group_period=60.0 / scale,
                limits=limits,
            )

        from leadwatch.registry import default_registry
        from leadwatch.scheduling import MARGIN_SECONDS, Budget

        processes = self.processes or default_registry()
        self.processes = processes
        registry = TenantRegistry.from_dir(self.tenants_dir, processes.tenant_model())
        self.ctx = Context(
            processes=processes,
            registry=registry,
            store=Store(retention=registry.retention),
            queue=SqsQueue(self.queue_url, client=self.sqs),
            secrets=SecretResolver(environ=self.secrets),
            clock=self.clock,
            adapter_factory=adapter_factory,
            notifier_factory=notifier_factory,
            sleep=self.sleeps,
            dead_letters=SqsQueue(self.dlq_url, client=self.sqs),
            jobs=LambdaJobs(JOBS_FUNCTION, client=self.lambda_client),
            job_observer=lambda job, report: self.job_reports.append((job.tenant, report)),
            # A deployed jobs Lambda's budget (60 s less the margin), on the simulated clock the
            # fakes' rate limits wait on (chalice's test context would give 3 s of real time).
            job_budget=lambda _context: Budget(60 - MARGIN_SECONDS, monotonic=self.sleeps.monotonic),
        )
        set_context(self.ctx)
        from chalice.test import Client

        from functions.build import build_app

        # The project folder (its .chalice/config.json gives the functions their settings).
        project = Path(__file__).resolve().parents[2]
        self.app, self.handlers = build_app(processes)
        self.client = Client(self.app, stage_name="dev", project_dir=str(project))
        if self.http:
            from chalice.config import Config
            from chalice.local import ChaliceRequestHandler, LocalDevServer

            class QuietHandler(ChaliceRequestHandler):
                # Its access log prints URLs, and an amoCRM hook URL carries the tenant's secret.
                def log_message(self, format: str, *args: object) -> None:
                    pass

            self._server = LocalDevServer(
                self.app, Config(chalice_stage="dev"), "127.0.0.1", self._app_port, handler_cls=QuietHandler
            ).server
            threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _wire_fakes(self) -> None:
        self.bitrix.deliver = lambda body: self.post_hook(B24_TENANT, body)
        self.amo.deliver = lambda body: self.post_hook(
            AMO_TENANT, body, key=self.secrets["DEMO_AMO_HOOK_SECRET"]
        )

    # ----- driving leadwatch
    def hook_path(self, tenant: str, key: str | None = None) -> str:
        return f"/hooks/{tenant}" + (f"?key={key}" if key else "")

    def post_hook(
        self,
        tenant: str,
        body: bytes,
        key: str | None = None,
        content_type: str = "application/x-www-form-urlencoded",
    ) -> tuple[int, dict]:
        """Deliver one webhook as the CRM would (unless the test asked to drop it)."""
        if self.drop_next > 0:
            self.drop_next -= 1
            self.dropped.append((tenant, body))
            return 0, {}
        path = self.hook_path(tenant, key)
        if self.http:
            response = requests.post(
                self.base_url + path, data=body, headers={"Content-Type": content_type}, timeout=30
            )
            status, payload = response.status_code, response.json()
        else:
            response = self.client.http.post(path, headers={"Content-Type": content_type}, body=body)
            status, payload = response.status_code, json.loads(response.body or b"{}")
        self.webhook_answers.append((tenant, status))
        return status, payload

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        if self.http:
            response = requests.get(self.base_url + path, headers=headers or {}, timeout=30)
            return response.status_code, response.json()
        response = self.client.http.get(path, headers=headers or {})
        return response.status_code, json.loads(response.body or b"{}")

    def pump(self, max_batches: int = 10_000, workers: int = 1) -> int:
        """Run the real worker on the real queue until it is empty; returns messages handled.
        `workers` > 1: that many workers side by side (threads), as Lambda runs them, each
        receiving its own batches from the queue."""
        # The portals' webhooks for leadwatch's own writes answered so far arrive first.
        self.bitrix.flush_echoes()
        self.amo.flush_echoes()
        now = self.clock()
        due = [handle for at, handle in self._hidden if at <= now]
        self._hidden = [(at, handle) for at, handle in self._hidden if at > now]
        for handle in due:  # their back-off has passed on the simulated clock
            # Received again meanwhile (a loaded machine let its visibility lapse in real time) or
            # parked, moto answers the old handle invalid: whoever holds it now decides.
            with contextlib.suppress(self.sqs.exceptions.ReceiptHandleIsInvalid):
                self.sqs.change_message_visibility(
                    QueueUrl=self.queue_url, ReceiptHandle=handle, VisibilityTimeout=0
                )
        if workers <= 1:
            return self._drain(self.queue_url, "worker", 10, "leadwatch-events", max_batches)
        import threading

        handled = [0] * workers
        errors: list[BaseException] = []

        def run(n: int) -> None:
            try:
                handled[n] = self._drain(self.queue_url, "worker", 10, "leadwatch-events", max_batches)
            except BaseException as exc:  # surfaced below: a thread's failure must fail the caller
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        # A worker that found the queue empty stopped while another's failures came back: once more.
        return sum(handled) + self._drain(self.queue_url, "worker", 10, "leadwatch-events", max_batches)

    def pump_jobs(self, max_invocations: int = 10_000) -> int:
        """Run the jobs Lambda on every invocation started so far and meanwhile (continuations
        included), as Lambda's queue of asynchronous events would; returns the jobs run in
        invocations that succeeded. An invocation that fails (JobsFailed, or it died) is tried
        again JOBS_RETRIES times, then its event goes to the dead-letter queue in the form of
        Lambda's on-failure destination record (infra/resources.yaml, JobsEventInvokeConfig).
        Lambda waits a minute or two before a retry; here it comes after what is pending."""
        from collections import deque

        from functions.jobs import JobsFailed
        from leadwatch.infra import JOBS_RETRIES

        handled = 0
        pending: deque[tuple[Any, int]] = deque()
        for _ in range(max_invocations):
            pending.extend((payload, 0) for payload in self.invocations.payloads())
            if not pending:
                return handled
            payload, retries = pending.popleft()
            try:
                self.client.lambda_.invoke("jobs", payload)
            except BaseException as failure:
                if isinstance(failure, KeyboardInterrupt):
                    raise
                self.failed_job_invocations += 1
                if not isinstance(failure, JobsFailed):
                    self.crashes += 1
                if retries < JOBS_RETRIES:
                    pending.append((payload, retries + 1))
                else:
                    self._job_dead_letter(payload, failure, retries + 1)
                continue
            handled += len(payload.get("jobs") or [])
        return handled

    def _job_dead_letter(self, payload: Any, failure: BaseException, attempts: int) -> None:
        """What Lambda sends to an SQS on-failure destination for an event whose retries are spent."""
        record = {
            "version": "1.0",
            "timestamp": self.clock().isoformat(),
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": f"arn:aws:lambda:{REGION}:123456789012:function:{JOBS_FUNCTION}:$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": payload,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": {"errorMessage": str(failure), "errorType": type(failure).__name__},
        }
        self.sqs.send_message(QueueUrl=self.dlq_url, MessageBody=json.dumps(record))

    def _drain(self, queue_url: str, function: str, batch: int, queue: str, max_batches: int) -> int:
        """Run the real worker on the real queue until it is empty; returns messages handled.

        A message the worker reports as failed is made visible again at once, as if its
        visibility timeout had passed, and goes to the dead-letter queue after
        maxReceiveCount receives (moto applies the redrive policy).
        """
        handled = 0
        for _ in range(max_batches):
            received = self.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=batch, AttributeNames=["All"], WaitTimeSeconds=0
            ).get("Messages", [])
            if not received:
                return handled
            event = {
                "Records": [
                    {
                        "messageId": m["MessageId"],
                        "receiptHandle": m["ReceiptHandle"],
                        "body": m["Body"],
                        "attributes": m.get("Attributes", {}),
                        "messageAttributes": {},
                        "md5OfBody": m["MD5OfBody"],
                        "eventSource": "aws:sqs",
                        "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{queue}",
                        "awsRegion": REGION,
                    }
                    for m in received
                ]
            }
            try:
                result = self.client.lambda_.invoke(function, event).payload or {}
            except BaseException as crash:
                if isinstance(crash, KeyboardInterrupt):
                    raise
                # The invocation died: Lambda returns the whole batch to the queue.
                self.crashes += 1
                result = {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in received]}
            failed = {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}
            done = [m for m in received if m["MessageId"] not in failed]
            for message in received:
                if message["MessageId"] in failed and self.honour_backoff:
                    self.backed_off.append(message["ReceiptHandle"])
                elif message["MessageId"] in failed and self.backoff_on_clock and function == "worker":
                    from leadwatch.dispatch import retry_delay

                    count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))
                    # Hidden (for real) until the simulated clock passes the back-off: see pump().
                    self.sqs.change_message_visibility(
                        QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=3600
                    )
                    at = self.clock() + timedelta(seconds=retry_delay(count))
                    self._hidden.append((at, message["ReceiptHandle"]))
                elif message["MessageId"] in failed:
                    self.sqs.change_message_visibility(
                        QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                    )
            if done:
                # Lambda's SQS poller deletes a batch's successes with one DeleteMessageBatch.
                self.sqs.delete_message_batch(
                    QueueUrl=queue_url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )
                handled += len(done)
        return handled

    def _scheduled(self, name: str) -> dict:
        event = self.client.events.generate_cw_event(
            source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]
        )
        payload = self.client.lambda_.invoke(name, event).payload
        if not isinstance(payload, dict):
            raise AssertionError(f"schedule {name} returned {payload!r}, not its report")
        return payload

    def run_schedule(self, process: str, schedule: str) -> dict:
        """Invoke one process schedule's Lambda, as EventBridge would, then the jobs Lambda on every
        job it started; returns tenant -> the job's report (as the jobs Lambda logs it)."""
        return self._dispatch_and_run(f"{process}_{schedule}")

    def _dispatch_and_run(self, function: str) -> dict:
        self.job_reports.clear()
        self._scheduled(function)
        self.pump_jobs()
        return {tenant: report for tenant, report in self.job_reports}

    def sweep(self) -> dict:
        return self.run_schedule("timeliness", "sweep")

    def reconcile(self) -> dict:
        return self._dispatch_and_run("reconcile")

    def reconcile_fed(self) -> int:
        """Run reconciliation; how many events (cards and calls) it fed into the queue."""
        return sum(
            report.get("fed", 0) + sum(p.get("fed", 0) for p in report.get("processes", {}).values())
            for report in self.reconcile().values()
        )

    def dialing_report(self) -> dict:
        return self.run_schedule("dialing", "report")

    def settle(self) -> None:
        """Drain the queue, run the sweep, drain again: the state a minute later."""
        self.pump()
        self.sweep()
        self.pump()

    def dead_letters(self) -> list[dict]:
        """Everything now in the dead-letter queue, with message attributes (hidden for a minute after)."""
        found: list[dict] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.dlq_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                VisibilityTimeout=60,
            ).get("Messages", [])
            if not batch:
                return found
            found.extend(batch)

    def api_key(self, tenant: str) -> str:
        return self.secrets[f"{tenant.upper().replace('-', '_')}_API_KEY"]


class CrmDriver:
    """What a sales department does in its CRM, the same words for both fakes."""

    tenant: str

    def create(self, title: str, manager: str, at: datetime) -> str:
        raise NotImplementedError

    def take(self, lead_id: str, manager: str, at: datetime) -> None:
        """Move the card out of its first stage."""
        raise NotImplementedError

    def call(
        self, lead_id: str, manager: str, at: datetime, duration: int = 95, record_url: str | None = None
    ) -> None:
        """An outgoing call on the card, as the CRM's telephony records it (duration 0: no answer)."""
        raise NotImplementedError

    def reject(self, lead_id: str, manager: str, at: datetime) -> None:
        """Move the card to the rejected ("junk", "lost") stage."""
        raise NotImplementedError

    def delete(self, lead_id: str, *, emit: bool = True) -> None:
        """Delete the card (`emit=False`: its deletion webhook is lost)."""
        raise NotImplementedError

    def verdict(self, lead_id: str) -> Any:
        raise NotImplementedError

    def intake(self, lead_id: str) -> Any:
        raise NotImplementedError


class BitrixDriver(CrmDriver):
    tenant = B24_TENANT

    def __init__(self, fake: FakeBitrix24):
        self.fake = fake

    def create(self, title: str, manager: str, at: datetime) -> str:
        return self.fake.create_lead(title=title, assigned_by_id=manager, created_at=at)

    def take(self, lead_id: str, manager: str, at: datetime) -> None:
        self.fake.update_lead(lead_id, at=at, STATUS_ID="IN_PROCESS")

    def call(
        self, lead_id: str, manager: str, at: datetime, duration: int = 95, record_url: str | None = None
    ) -> None:
        # A Voximplant call: the portal logs a call activity and a statistic row and sends both
        # ONCRMACTIVITYADD and ONVOXIMPLANTCALLEND; leadwatch must count it once.
        self.fake.add_call(
            lead_id,
            user_id=manager,
            started_at=at,
            duration=duration,
            failed_code="200" if duration > 0 else "304",
            record_url=record_url,
        )

    def reject(self, lead_id: str, manager: str, at: datetime) -> None:
        self.fake.update_lead(lead_id, at=at, STATUS_ID="JUNK")

    def delete(self, lead_id: str, *, emit: bool = True) -> None:
        self.fake.delete_lead(lead_id, emit=emit)

    def verdict(self, lead_id: str) -> Any:
        return self.fake.lead(lead_id).get("UF_CRM_ON_TIME")

    def intake(self, lead_id: str) -> Any:
        return self.fake.lead(lead_id).get("UF_CRM_INTAKE")


class AmoDriver(CrmDriver):
    tenant = AMO_TENANT

    def __init__(self, fake: FakeAmoCrm):
        self.fake = fake

    def create(self, title: str, manager: str, at: datetime) -> str:
        return self.fake.create_lead(name=title, responsible_user_id=manager, created_at=at)

    def take(self, lead_id: str, manager: str, at: datetime) -> None:
        self.fake.change_status(lead_id, self.fake.work_stage(), at=at)

    def call(
        self, lead_id: str, manager: str, at: datetime, duration: int = 95, record_url: str | None = None
    ) -> None:
        params: dict[str, Any] = {
            "duration": duration,
            "uniq": f"call-{lead_id}-{at.timestamp():.0f}",
            "source": "demo-telephony",
            "phone": "+79990000000",
            "call_status": 4 if duration > 0 else 6,  # talked / no answer
        }
        if record_url:
            params["link"] = record_url
        self.fake.add_note(lead_id, note_type="call_out", author=manager, created_at=at, params=params)

    def reject(self, lead_id: str, manager: str, at: datetime) -> None:
        self.fake.change_status(lead_id, 143, at=at, by=manager)

    def delete(self, lead_id: str, *, emit: bool = True) -> None:
        self.fake.delete_lead(lead_id, emit=emit)

    def _field(self, lead_id: str, field_id: int) -> Any:
        for item in self.fake.lead(lead_id).get("custom_fields_values") or []:
            if int(item["field_id"]) == field_id:
                return item["values"][0]["value"]
        return None

    def verdict(self, lead_id: str) -> Any:
        return self._field(lead_id, 584213)

    def intake(self, lead_id: str) -> Any:
        return self._field(lead_id, 584211)
