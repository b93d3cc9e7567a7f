"""leadwatch.redaction: secrets masked in log lines by value and by where they travel, and
secret-bearing fields dropped from a body before it is kept; observability's setup pins the
chatty libraries whatever the root level and puts the filter on the handlers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import requests

from leadwatch import observability, redaction
from leadwatch.redaction import MASK, RedactingFilter, redact, strip_body


@pytest.fixture(autouse=True)
def no_known_values() -> Iterator[None]:
    redaction.forget_all()
    yield
    redaction.forget_all()


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        (
            '"POST /rest/1/b24-code-Zx81/crm.lead.get.json HTTP/1.1" 200 512',
            '"POST /rest/1/***/crm.lead.get.json HTTP/1.1" 200 512',
        ),
        (
            "https://acme.bitrix24.ru/rest/17/k3y/batch.json",
            "https://acme.bitrix24.ru/rest/17/***/batch.json",
        ),
        (
            '"POST /bot123456:AAH-tok_en/sendMessage HTTP/1.1" 200 240',
            '"POST /bot***/sendMessage HTTP/1.1" 200 240',
        ),
        ("POST /hooks/demo-amo?key=amo-hook-Vb93&x=1", "POST /hooks/demo-amo?key=***&x=1"),
        (
            "GET /oauth?access_token=abc.def&refresh_token=ghi",
            "GET /oauth?access_token=***&refresh_token=***",
        ),
        ("event=X&auth[application_token]=tok123&ts=1", "event=X&auth[application_token]=***&ts=1"),
        ("ts=1&auth%5Baccess_token%5D=tok%2F123", "ts=1&auth%5Baccess_token%5D=***"),
        (
            "{'Authorization': 'Bearer eyJhbGciOi.x.y', 'Accept': 'a'}",
            "{'Authorization': 'Bearer ***', 'Accept': 'a'}",
        ),
        ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
        ("X-Api-Key: api-key-Pp12", "X-Api-Key: ***"),
        ('{"access_token": "t0k\\"en", "expires_in": 3600}', '{"access_token": "***", "expires_in": 3600}'),
        (
            'b\'{"Parameter":{"Name":"/a","Value":"s3cret"}}\'',
            'b\'{"Parameter":{"Name":"/a","Value":"***"}}\'',
        ),
    ],
    ids=[
        "b24-request-line",
        "b24-url",
        "telegram-request-line",
        "amo-key",
        "oauth-query",
        "b24-auth-field",
        "b24-auth-field-encoded",
        "authorization-bearer",
        "authorization-basic",
        "x-api-key",
        "json-token",
        "ssm-value",
    ],
)
def test_secret_places_are_masked_whatever_the_value(line: str, masked: str) -> None:
    assert redact(line) == masked


def test_ordinary_lines_are_left_alone() -> None:
    for line in (
        "tenant demo-b24: lead:4711 is late",
        "GET /rest/ and /bots/ and monkey=1 and ?keys=3",
        '{"Name": "/leadwatch/acme/webhook-code", "Version": 1}',
    ):
        assert redact(line) == line


def test_known_values_are_masked_raw_and_percent_encoded_anywhere() -> None:
    redaction.remember("s3cret/with+chars")
    redaction.remember("abc")  # too short to mask: it would blank ordinary words
    redaction.remember("two words here")
    text = "x s3cret/with+chars y s3cret%2Fwith%2Bchars z two+words+here w two%20words%20here abc"
    assert redact(text) == f"x {MASK} y {MASK} z {MASK} w {MASK} abc"
    assert redaction.redact_bytes(b"\xff s3cret/with+chars \xfe") == b"\xff *** \xfe"


def test_a_body_to_keep_loses_every_auth_field_and_credential_but_nothing_else() -> None:
    redaction.remember("amo-hook-Vb93")
    body = (
        b"event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=abc&ts=1&auth[domain]=acme.bitrix24.ru"
        b"&auth%5Bapplication_token%5D=tok&auth[access_token]=a&AUTH[refresh_token]=r&access_token=q"
        b"&note=the+key+is+amo-hook-Vb93&\xff\xfe=1"
    )
    kept = strip_body(body)
    assert kept == b"event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=abc&ts=1&note=the+key+is+***&\xff\xfe=1"
    # JSON or anything else that is not a form: the values and places are masked in place.
    assert strip_body(b'{"auth": {"application_token": "tok"}}') == b'{"auth": {"application_token": "***"}}'


def record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("urllib3.connectionpool", logging.DEBUG, __file__, 1, message, args, info)


def test_the_filter_masks_the_message_with_its_arguments() -> None:
    redaction.remember("123456:TELEGRAM-token")
    rec = record(
        '%s://%s:%s "%s %s %s"',
        "https",
        "api.telegram.org",
        443,
        "POST",
        "/bot123456:TELEGRAM-token/getMe",
        "HTTP/1.1",
    )
    assert RedactingFilter().filter(rec)
    assert rec.getMessage() == 'https://api.telegram.org:443 "POST /bot***/getMe HTTP/1.1"'
    clean = record("tenant %s: %d events", "acme", 3)
    RedactingFilter().filter(clean)
    assert clean.args == ("acme", 3)  # untouched when there is nothing to mask


def test_the_filter_masks_an_exceptions_text_and_its_causes_for_any_formatter() -> None:
    try:
        try:
            raise requests.ConnectionError(
                "HTTPSConnectionPool: Max retries with url: /rest/1/c0de-Zx81/batch.json"
            )
        except requests.ConnectionError as inner:
            raise RuntimeError("sending failed for /bot1:tok-Qw/sendMessage") from inner
    except RuntimeError as exc:
        rec = record("failed", exc=exc)
    RedactingFilter().filter(rec)
    plain = logging.Formatter().format(rec)
    assert "c0de-Zx81" not in plain and "tok-Qw" not in plain
    assert "/rest/1/***/batch.json" in plain and "/bot***/sendMessage" in plain and "RuntimeError" in plain
    from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

    line = json.loads(LambdaPowertoolsFormatter().format(rec))
    assert "c0de-Zx81" not in json.dumps(line) and line["exception_name"] == "RuntimeError"


def test_setup_pins_the_libraries_whatever_the_root_level_and_guards_the_handlers() -> None:
    root = logging.getLogger()
    saved = root.level
    child = logging.getLogger("botocore.parsers")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        root.setLevel(logging.DEBUG)
        child.setLevel(logging.DEBUG)  # someone asked for it explicitly
        observability.guard_secrets([handler])
        observability.guard_secrets([handler])  # idempotent
        for name in (
            "urllib3",
            "botocore",
            "boto3",
            "s3transfer",
            "botocore.parsers",
            "urllib3.connectionpool",
        ):
            assert logging.getLogger(name).getEffectiveLevel() == logging.WARNING, name
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        child.debug("Response body: %s", b'{"Value": "s3cret"}')  # dropped: below WARNING
        logging.getLogger("leadwatch.test").warning("url /rest/1/c0de/x")
        assert stream.getvalue() == "url /rest/1/***/x\n"
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        child.setLevel(logging.NOTSET)
