"""Runs in a fresh interpreter started by test_package.py: `python -I -S -B bundle_probe.py SPEC OUT`.

`-I -S`: no site-packages, no user site, no PYTHON* variables, so sys.path is the standard
library only; this script then puts the unzipped bundle first (Lambda's /var/task) and the
directory of runtime-provided packages after it, as the Lambda Python runtime orders them.
It invokes the handlers the way Lambda does, `app.<name>(event, context)`, with events in the
services' formats, and writes what it saw to OUT as JSON. It imports nothing from the
developer's tree: whatever it loads comes from the bundle, the runtime directory or the
standard library, and it reports any module that does not.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

SPEC = json.loads(Path(sys.argv[1]).read_text())
STDLIB = [p for p in sys.path if p]
sys.path[:0] = [SPEC["bundle"], SPEC["runtime"]]


class LambdaContext:
    """The attributes and method of Lambda's Python context object."""

    def __init__(self, function: str, timeout_s: int = 60) -> None:
        self.function_name = f"leadwatch-dev-{function}"
        self.function_version = "$LATEST"
        self.invoked_function_arn = (
            f"arn:aws:lambda:{SPEC['region']}:123456789012:function:{self.function_name}"
        )
        self.memory_limit_in_mb = "512"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "2026/01/01/[$LATEST]probe"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def api_event(method: str, path: str, **request: Any) -> dict:
    """An HTTP API's event in payload format 1.0 (the "Payload format structure" of the HTTP API
    Lambda integration page, API Gateway developer guide): the REST proxy event's shape, but
    resourcePath is not promised to be the route's template, so it is left out here and `resource`
    is the raw path; the adapter (leadwatch/http_api.py) routes on the path itself."""
    headers = {k.lower(): v for k, v in request.get("headers", {}).items()}
    query = request.get("query") or None
    return {
        "version": "1.0",
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "requestContext": {
            "httpMethod": method,
            "path": path,
            "stage": "$default",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "203.0.113.7", "userAgent": "probe"},
            "accountId": "123456789012",
            "apiId": "probe",
        },
        "pathParameters": None,
        "stageVariables": None,
        "body": request.get("body"),
        "isBase64Encoded": False,
    }


def run_queue(handler: Any, queue_url: str, queue: str, batch_size: int) -> tuple[int, Any]:
    """One batch from the queue through `handler`, as Lambda's SQS poller builds it (the "Example
    Amazon SQS message event" of the Lambda guide); (messages, the handler's answer)."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=SPEC["sqs_endpoint"], region_name=SPEC["region"])
    received = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=batch_size, AttributeNames=["All"], WaitTimeSeconds=0
    ).get("Messages", [])
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
                "eventSourceARN": f"arn:aws:sqs:{SPEC['region']}:123456789012:{queue}",
                "awsRegion": SPEC["region"],
            }
            for m in received
        ]
    }
    return len(received), handler(event, LambdaContext(queue.removeprefix("leadwatch-")))


def catch_invocations() -> list[tuple[str, Any]]:
    """Lambda's Invoke answered in this process, as the service takes an asynchronous event (202),
    through the runtime's boto3: every client made from its default session from now on hands its
    Invoke requests here (function name, payload) instead of sending them."""
    import boto3
    from botocore.awsrequest import AWSResponse

    caught: list[tuple[str, Any]] = []

    class Empty:
        def read(self, *_: Any, **__: Any) -> bytes:
            return b""

        def stream(self, **_: Any) -> Any:
            yield b""

    def answer(request: Any, **_: Any) -> Any:
        kind = request.headers.get("X-Amz-Invocation-Type", b"")
        assert (kind.decode() if isinstance(kind, bytes) else kind) == "Event", kind
        function = request.url.split("/functions/", 1)[1].split("/", 1)[0]
        caught.append((function, json.loads(request.body)))
        return AWSResponse(request.url, 202, {"x-amzn-RequestId": str(uuid.uuid4())}, Empty())

    boto3.setup_default_session()
    boto3.DEFAULT_SESSION.events.register_first("before-send.lambda.Invoke", answer)
    return caught


def calendar_dates(table: Any) -> dict[str, list]:
    """A leadwatch.calendar._CountryYear as JSON (the test computes the same with the venv's holidays)."""
    return {
        "days_off": sorted(d.isoformat() for d in table.days_off),
        "public": sorted(d.isoformat() for d in table.public),
        "workday_replaces": sorted(
            [w.isoformat(), m.isoformat() if m else None] for w, m in table.workday_replaces.items()
        ),
    }


def i18n_sample(i18n: Any, lang: str) -> list[str]:
    """Every kind of formatting leadwatch.i18n does (the test computes the same with the venv's Babel)."""
    from datetime import UTC, date, datetime
    from zoneinfo import ZoneInfo

    moment, zone = datetime(2025, 11, 14, 14, 50, tzinfo=UTC), ZoneInfo("Europe/Moscow")
    word = i18n.Plural("one", "other", few="few", many="many")
    return [
        i18n.weekday_time(moment, zone, lang),
        i18n.clock(moment, zone, lang),
        i18n.weekday_date(date(2025, 11, 4), lang),
        i18n.day_text(date(2025, 11, 4), lang),
        i18n.number(12345.5, lang, 1),
        i18n.percent(0.125, lang),
        *(i18n.count(n, word, lang) for n in (0, 1, 2, 5, 21, 1000)),
    ]


def babel_files() -> list[str]:
    """The files of Babel's data that this interpreter has loaded (by the bundle's own paths)."""
    from babel import core, localedata

    loaded = sorted(f"locale-data/{name}.dat" for name in localedata._cache)
    return (["global.dat"] if core._global_data is not None else []) + loaded


def main() -> dict[str, Any]:
    seen: dict[str, Any] = {"sys_path": list(sys.path)}
    import app

    seen["handlers"] = {name: callable(getattr(app, name, None)) for name in SPEC["handlers"]}
    seen["routes"] = sorted(app.app.routes)
    tenant = SPEC["tenant"]

    # Webhooks, as the CRM posts them: stored and queued.
    seen["webhooks"] = []
    for body in SPEC["webhook_bodies"]:
        event = api_event(
            "POST",
            f"/hooks/{tenant}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=body,
        )
        answer = app.http_api(event, LambdaContext("api_handler"))
        seen["webhooks"].append({"status": answer["statusCode"], "body": json.loads(answer["body"])})

    # The worker on what the webhooks queued.
    seen["worker_batch"], seen["worker"] = run_queue(app.worker, SPEC["queue_url"], "leadwatch-events", 10)

    # A scheduled dispatcher, as EventBridge invokes it.
    scheduled = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": SPEC["region"],
        "resources": [f"arn:aws:events:{SPEC['region']}:123456789012:rule/probe"],
        "detail": {},
    }
    invocations = catch_invocations()
    seen["sweep"] = app.timeliness_sweep(scheduled, LambdaContext("timeliness_sweep", 55))
    # The jobs Lambda on the jobs the dispatcher started (asynchronous invocations, as Lambda
    # hands each event to the function).
    seen["invoked"] = sorted({function for function, _ in invocations})
    seen["jobs"] = [app.jobs(payload, LambdaContext("jobs")) for _, payload in invocations]

    # The read API: with the tenant's key, without it, for a tenant that does not exist.
    def get(path_tenant: str, headers: dict[str, str], query: dict[str, str] | None = None) -> dict:
        event = api_event("GET", f"/tenants/{path_tenant}/timeliness", headers=headers, query=query)
        answer = app.http_api(event, LambdaContext("api_handler"))
        return {"status": answer["statusCode"], "body": json.loads(answer["body"])}

    seen["api"] = {
        "keyed": get(tenant, {"X-Api-Key": SPEC["api_key"]}),
        "text": get(tenant, {"X-Api-Key": SPEC["api_key"]}, {"format": "text"}),
        "no_key": get(tenant, {}),
        "unknown": get("nobody", {"X-Api-Key": SPEC["api_key"]}),
    }

    # Formatting in each language leadwatch writes, from the bundle's slimmed Babel.
    from leadwatch import i18n

    seen["i18n"] = {lang: i18n_sample(i18n, lang) for lang in i18n.LANGUAGES}
    seen["babel_files"] = babel_files()

    # Country calendars as the bundle's python-holidays computes them.
    from leadwatch.calendar import _country_year

    seen["calendars"] = {}
    for key in SPEC["calendars"]:
        country, year = key.split("/")
        seen["calendars"][key] = calendar_dates(_country_year(country, None, int(year)))

    # Every module loaded came from the bundle, the runtime directory or the standard library.
    roots = tuple(str(Path(p)) + "/" for p in [SPEC["bundle"], SPEC["runtime"], *STDLIB])
    seen["foreign_modules"] = sorted(
        f"{name}: {module.__file__}"
        for name, module in list(sys.modules.items())
        if getattr(module, "__file__", None)
        and not str(module.__file__).startswith(roots)
        and Path(module.__file__).resolve() != Path(__file__).resolve()  # this script (__main__, __mp_main__)
    )
    # Which of the runtime's packages were used (by file: requests.packages aliases urllib3's modules).
    runtime = SPEC["runtime"] + "/"
    seen["loaded_from_runtime"] = sorted(
        {
            str(module.__file__)[len(runtime) :].split("/")[0].removesuffix(".py")
            for module in list(sys.modules.values())
            if str(getattr(module, "__file__", "") or "").startswith(runtime)
        }
    )
    return seen


if __name__ == "__main__":
    Path(sys.argv[2]).write_text(json.dumps(main(), default=str))
