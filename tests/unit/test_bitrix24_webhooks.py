"""Bitrix24 outgoing-webhook parsing: real-shaped form bodies in, CrmEvents or a precise rejection out."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_adapters.base import (
    MalformedWebhook,
    WebhookForbidden,
    WebhookRejected,
    WebhookRequest,
    WebhookUnauthorized,
)
from crm_adapters.bitrix24 import Bitrix24Adapter
from fakes.bitrix24 import FakeBitrix24
from tenancy.config import Bitrix24Config, SecretRef
from workflows.events import EntityRef, EntityType, EventKind

TOKEN = "app-token-Qw77"
CODE = "webhook-code-Zx81"
MOMENT = datetime(2026, 11, 23, 8, 30, 5, tzinfo=UTC)
TS = str(int(MOMENT.timestamp()))


def resolver(resolved: list[str] | None = None) -> Callable[[SecretRef], str]:
    values = {"B24_CODE": CODE, "B24_TOKEN": TOKEN}

    def resolve(ref: SecretRef) -> str:
        assert ref.env is not None
        if resolved is not None:
            resolved.append(ref.env)
        return values[ref.env]

    return resolve


def adapter(entities: tuple[str, ...] = ("lead",), resolved: list[str] | None = None) -> Bitrix24Adapter:
    config = Bitrix24Config(
        kind="bitrix24",
        base_url="https://acme.bitrix24.ru",
        webhook_user_id=1,
        webhook_code=SecretRef(env="B24_CODE"),
        application_token=SecretRef(env="B24_TOKEN"),
        entities=list(entities),
    )
    return Bitrix24Adapter("acme", config, resolver(resolved))


def portal(token: str = TOKEN) -> FakeBitrix24:
    # Not started: only its event_body() is used, which needs no HTTP.
    return FakeBitrix24(application_token=token, clock=lambda: MOMENT)


def form(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs, quote_via=quote).encode()


def body(
    event: str = "ONCRMLEADADD", ident: str = "20931", ts: str | None = TS, token: str | None = TOKEN
) -> bytes:
    pairs = [("event", event), ("event_handler_id", "412"), ("data[FIELDS][ID]", ident)]
    if ts is not None:
        pairs.append(("ts", ts))
    pairs += [("auth[domain]", "acme.bitrix24.ru"), ("auth[member_id]", "m1")]
    if token is not None:
        pairs.append(("auth[application_token]", token))
    return form(pairs)


def parse(raw: bytes, entities: tuple[str, ...] = ("lead",)) -> list:
    return adapter(entities).parse_webhook(WebhookRequest(body=raw, query={}))


# ----------------------------------------------------------------------------- events
@pytest.mark.parametrize(
    ("event", "kind"),
    [("ONCRMLEADADD", EventKind.LEAD_CREATED), ("ONCRMLEADUPDATE", EventKind.LEAD_CHANGED)],
)
def test_lead_events_from_the_portals_own_body(event: str, kind: EventKind) -> None:
    [parsed] = parse(portal().event_body(event, "42"))
    assert parsed.kind is kind
    assert parsed.entity == EntityRef(EntityType.LEAD, "42")
    assert parsed.tenant == "acme"
    assert parsed.source == "webhook"
    assert parsed.raw_event == event
    assert parsed.occurred_at == MOMENT
    assert parsed.dedupe_key == f"b24:{event}:42:{TS}"
    assert parsed.lead is None and parsed.needs_card()


def test_deal_events_are_ignored_unless_deals_are_configured() -> None:
    raw = portal().event_body("ONCRMDEALUPDATE", "7")
    assert parse(raw, entities=("lead",)) == []
    [parsed] = parse(raw, entities=("lead", "deal"))
    assert parsed.kind is EventKind.LEAD_CHANGED
    assert parsed.entity == EntityRef(EntityType.DEAL, "7")
    [added] = parse(portal().event_body("ONCRMDEALADD", "8"), entities=("deal",))
    assert added.kind is EventKind.LEAD_CREATED and added.entity == EntityRef(EntityType.DEAL, "8")


def test_activity_event_carries_only_the_activity_id() -> None:
    [parsed] = parse(portal().event_body("ONCRMACTIVITYADD", "555"))
    assert parsed.kind is EventKind.ACTIVITY_ADDED
    assert parsed.entity is None
    assert parsed.activity_id == "555"
    assert parsed.needs_activity() and not parsed.needs_card()
    assert parsed.dedupe_key == f"b24:ONCRMACTIVITYADD:555:{TS}"


def test_event_code_is_compared_case_insensitively() -> None:
    # One b24restdocs page shows `onCrmActivityAdd`; the key must match the upper-case delivery.
    [mixed] = parse(body(event="onCrmActivityAdd", ident="9"))
    [upper] = parse(body(event="ONCRMACTIVITYADD", ident="9"))
    assert mixed.dedupe_key == upper.dedupe_key == f"b24:ONCRMACTIVITYADD:9:{TS}"
    assert mixed.raw_event == "ONCRMACTIVITYADD"


def test_recognised_but_unused_events_give_nothing() -> None:
    assert parse(body(event="ONCRMLEADDELETE")) == []
    assert parse(body(event="ONCRMCONTACTADD")) == []
    # ONVOXIMPLANTCALLEND has a flat `data` with no FIELDS: still not an error.
    call_end = form(
        [
            ("event", "ONVOXIMPLANTCALLEND"),
            ("data[CALL_ID]", "externalCall.1"),
            ("data[CALL_TYPE]", "2"),
            ("ts", TS),
            ("auth[application_token]", TOKEN),
        ]
    )
    assert parse(call_end) == []


def test_dedupe_key_is_stable_across_redeliveries_and_differs_per_change() -> None:
    first = parse(body(ident="77"))[0].dedupe_key
    again = parse(body(ident="77"))[0].dedupe_key
    later = parse(body(ident="77", ts=str(int(TS) + 1)))[0].dedupe_key
    padded = parse(body(ident="0077"))[0]
    assert first == again
    assert later != first
    assert padded.dedupe_key == first and padded.entity == EntityRef(EntityType.LEAD, "77")


def test_keys_order_and_extra_auth_fields_do_not_matter() -> None:
    raw = form(
        [
            ("auth[application_token]", TOKEN),
            ("auth[access_token]", "ignored"),
            ("auth[expires_in]", "3600"),
            ("ts", TS),
            ("data[FIELDS][ID]", "5"),
            ("event", "ONCRMLEADUPDATE"),
        ]
    )
    [parsed] = parse(raw)
    assert parsed.entity == EntityRef(EntityType.LEAD, "5")


def test_parse_webhook_needs_only_the_application_token() -> None:
    resolved: list[str] = []
    adapter(resolved=resolved).parse_webhook(WebhookRequest(body(), {}))
    assert resolved == ["B24_TOKEN"]


# ----------------------------------------------------------------------------- authentication
@pytest.mark.parametrize(
    "raw",
    [
        body(token=None),
        body(token=""),
        form([("event", "ONCRMLEADADD"), ("data[FIELDS][ID]", "1"), ("ts", TS), ("auth", TOKEN)]),
        form([("event", "ONCRMLEADADD"), ("auth[application_token][x]", TOKEN)]),
    ],
    ids=["absent", "empty", "auth-not-a-group", "token-is-a-group"],
)
def test_missing_token_is_401(raw: bytes) -> None:
    with pytest.raises(WebhookUnauthorized) as caught:
        parse(raw)
    assert caught.value.status == 401
    assert "auth[application_token]" in caught.value.message


@pytest.mark.parametrize("token", ["wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), " " + TOKEN])
def test_wrong_token_is_403_and_the_message_reveals_no_token(token: str) -> None:
    with pytest.raises(WebhookForbidden) as caught:
        parse(body(token=token))
    assert caught.value.status == 403
    assert "auth[application_token]" in caught.value.message
    assert TOKEN not in caught.value.message and token.strip() not in caught.value.message


def test_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    parse(body())
    assert calls == [(TOKEN.encode(), TOKEN.encode())]


def test_authentication_comes_before_payload_checks() -> None:
    # A stranger learns nothing about what a valid body would look like.
    garbage_but_wrong_token = form([("auth[application_token]", "nope"), ("data[FIELDS][ID]", "x")])
    with pytest.raises(WebhookForbidden):
        parse(garbage_but_wrong_token)


# ----------------------------------------------------------------------------- malformed bodies
@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (form([("data[FIELDS][ID]", "1"), ("ts", TS), ("auth[application_token]", TOKEN)]), "event"),
        (body(event=""), "event"),
        (
            form([("event", "ONCRMLEADADD"), ("ts", TS), ("auth[application_token]", TOKEN)]),
            "data[FIELDS][ID]",
        ),
        (
            form(
                [("event", "ONCRMLEADADD"), ("data[ID]", "1"), ("ts", TS), ("auth[application_token]", TOKEN)]
            ),
            "data[FIELDS][ID]",
        ),
        (body(ident="abc"), "data[FIELDS][ID]"),
        (body(ident="-4"), "data[FIELDS][ID]"),
        (body(ident="0"), "data[FIELDS][ID]"),
        (body(ident="１２"), "data[FIELDS][ID]"),  # full-width digits pass str.isdigit()
        (body(ts="yesterday"), "ts"),
        (body(ts="1.5"), "ts"),
        (body(ts=None), "ts"),
        (body(ts="9" * 18), "ts"),
    ],
    ids=[
        "no-event",
        "empty-event",
        "no-id",
        "id-not-in-FIELDS",
        "id-text",
        "id-negative",
        "id-zero",
        "id-unicode-digits",
        "ts-text",
        "ts-float",
        "ts-missing",
        "ts-out-of-range",
    ],
)
def test_malformed_bodies_are_400_naming_the_key(raw: bytes, names: str) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        parse(raw)
    assert caught.value.status == 400
    assert caught.value.message.startswith(names)


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"\xff\xfe\x00", b'{"event": "ONCRMLEADADD"}', b"a[b]=1&a=2", b"x" + b"[a]" * 20 + b"=1"],
    ids=["empty", "blank", "not-utf8", "json", "conflicting-keys", "too-deep"],
)
def test_bodies_that_are_not_php_forms_are_400(raw: bytes) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        parse(raw)
    assert caught.value.status == 400 and caught.value.message


# ----------------------------------------------------------------------------- properties
_KEYS = st.sampled_from(
    [
        "event",
        "ts",
        "data[FIELDS][ID]",
        "data[FIELDS]",
        "data",
        "data[FIELDS][ID][]",
        "auth[application_token]",
        "auth",
        "auth[]",
        "event[]",
        "ts[x]",
    ]
)
_VALUES = st.one_of(
    st.sampled_from(
        ["ONCRMLEADADD", "ONCRMDEALUPDATE", "onCrmActivityAdd", TOKEN, "1", "0", "", TS, "99999999999"]
    ),
    st.text(max_size=30),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_webhook_rejections(raw: bytes) -> None:
    try:
        events = parse(raw, entities=("lead", "deal"))
    except WebhookRejected as rejected:
        assert rejected.status in {400, 401, 403} and rejected.message
    else:
        assert isinstance(events, list)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=8), st.booleans())
def test_garbage_forms_only_ever_raise_webhook_rejections(
    pairs: list[tuple[str, str]], with_token: bool
) -> None:
    if with_token:
        pairs = [("auth[application_token]", TOKEN), *pairs]
    try:
        events = parse(form(pairs), entities=("lead", "deal"))
    except WebhookRejected as rejected:
        assert rejected.status in {400, 401, 403} and rejected.message
    else:
        for event in events:
            assert event.dedupe_key.startswith("b24:")
            assert event.occurred_at is not None and event.occurred_at.tzinfo is not None
