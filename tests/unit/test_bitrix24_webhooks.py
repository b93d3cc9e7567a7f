"""Bitrix24 outgoing-webhook parsing: real-shaped form bodies in, CrmEvents or a precise rejection out."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
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
from leadwatch.config import Bitrix24Config, SecretRef
from leadwatch.events import Call, EntityRef, EntityType, EventKind
from leadwatch.testing.bitrix24 import FakeBitrix24

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


@pytest.mark.parametrize(("event", "kind"), [("ONCRMLEADDELETE", "lead"), ("ONCRMDEALDELETE", "deal")])
def test_a_deletion_is_an_event_and_a_bad_one_is_refused(event: str, kind: str) -> None:
    [deleted] = parse(body(event=event, ident="77"), entities=("lead", "deal"))
    assert deleted.kind is EventKind.LEAD_DELETED
    assert deleted.entity == EntityRef(EntityType(kind), "77")
    assert not deleted.needs_card()
    for bad in ("", "0", "abc"):
        with pytest.raises(MalformedWebhook, match=r"data\[FIELDS\]\[ID\]"):
            parse(body(event=event, ident=bad), entities=("lead", "deal"))


def test_recognised_but_unused_events_give_nothing() -> None:
    assert parse(body(event="ONCRMCONTACTADD")) == []
    # ONVOXIMPLANTCALLEND has a flat `data` with no FIELDS; linked to no CRM activity, nothing acts on it.
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


# ----------------------------------------------------------------------------- several senders, one portal
OTHER = "webhook-token-Kk31"


def portal_adapter(
    tokens: tuple[str, ...] = (TOKEN,),
    member_id: str | None = None,
    base_url: str = "https://acme.bitrix24.ru",
) -> Bitrix24Adapter:
    values = {f"T{n}": token for n, token in enumerate(tokens)}
    refs = [SecretRef(env=name) for name in values]
    config = Bitrix24Config(
        kind="bitrix24",
        base_url=base_url,
        webhook_user_id=1,
        webhook_code=SecretRef(env="B24_CODE"),
        application_token=refs if len(refs) > 1 else refs[0],
        member_id=member_id,
    )
    return Bitrix24Adapter("acme", config, lambda ref: values[ref.env or ""])


def delivered(
    token: str = TOKEN, domain: str | None = "acme.bitrix24.ru", member: str | None = "m1"
) -> bytes:
    pairs = [("event", "ONCRMLEADADD"), ("data[FIELDS][ID]", "20931"), ("ts", TS)]
    if domain is not None:
        pairs.append(("auth[domain]", domain))
    if member is not None:
        pairs.append(("auth[member_id]", member))
    return form([*pairs, ("auth[application_token]", token)])


def test_a_portal_with_an_app_and_an_outbound_webhook_accepts_both_tokens_and_no_other() -> None:
    adapter = portal_adapter((TOKEN, OTHER))
    for token in (TOKEN, OTHER):
        [event] = adapter.parse_webhook(WebhookRequest(delivered(token), {}))
        assert event.entity == EntityRef(EntityType.LEAD, "20931")
    with pytest.raises(WebhookForbidden) as caught:
        adapter.parse_webhook(WebhookRequest(delivered("stranger-token"), {}))
    assert "application_token" in caught.value.message and OTHER not in caught.value.message


def test_every_configured_token_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    portal_adapter((TOKEN, OTHER)).parse_webhook(WebhookRequest(delivered(TOKEN), {}))
    assert compared == [TOKEN.encode(), OTHER.encode()]  # no early exit: timing tells nothing


@pytest.mark.parametrize("domain", ["acme.bitrix24.ru", "ACME.Bitrix24.ru", "acme.bitrix24.ru."])
def test_the_portals_own_domain_is_accepted_in_any_case(domain: str) -> None:
    assert portal_adapter().parse_webhook(WebhookRequest(delivered(domain=domain), {}))


def test_a_delivery_naming_another_portal_is_403_even_with_the_right_token() -> None:
    with pytest.raises(WebhookForbidden) as caught:
        portal_adapter().parse_webhook(WebhookRequest(delivered(domain="evil.bitrix24.ru"), {}))
    assert caught.value.status == 403
    assert (
        "auth[domain] 'evil.bitrix24.ru' is not this tenant's portal (acme.bitrix24.ru)"
        in caught.value.message
    )


def test_a_portal_on_its_own_server_and_port_is_named_by_host_and_port() -> None:
    adapter = portal_adapter(base_url="https://crm.acme.ru:8443")
    assert adapter.parse_webhook(WebhookRequest(delivered(domain="crm.acme.ru:8443"), {}))
    assert adapter.parse_webhook(WebhookRequest(delivered(domain="crm.acme.ru"), {}))
    with pytest.raises(WebhookForbidden):
        adapter.parse_webhook(WebhookRequest(delivered(domain="crm.acme.ru:9000"), {}))


def test_member_id_is_checked_when_configured_and_delivered() -> None:
    configured = portal_adapter(member_id="a1b2c3")
    assert configured.parse_webhook(WebhookRequest(delivered(member="a1b2c3"), {}))
    assert configured.parse_webhook(WebhookRequest(delivered(member=None), {}))  # where present only
    with pytest.raises(WebhookForbidden) as caught:
        configured.parse_webhook(WebhookRequest(delivered(member="zzz999"), {}))
    assert "auth[member_id] 'zzz999' is not this tenant's portal (member_id a1b2c3)" in caught.value.message
    # Without a configured member_id any is taken; without auth[domain] the domain is not checked.
    assert portal_adapter().parse_webhook(WebhookRequest(delivered(member="zzz999", domain=None), {}))


def test_the_token_is_checked_before_the_portal_so_a_stranger_learns_nothing_of_it() -> None:
    with pytest.raises(WebhookForbidden) as caught:
        portal_adapter().parse_webhook(WebhookRequest(delivered("nope", domain="evil.bitrix24.ru"), {}))
    assert "application_token" in caught.value.message and "acme.bitrix24.ru" not in caught.value.message


# ----------------------------------------------------------------------------- authenticated or not
@pytest.mark.parametrize(
    ("raw", "authenticated"),
    [
        (body(ident="abc"), True),  # the token matched, then the id was wrong
        (body(ts=None), True),
        (b"\xff\xfe" + body()[2:], True),  # not UTF-8, yet its token is there and right
        (body()[:-3] + b"%ZZ&[[=", False),  # cut inside the token: nobody proved anything
        (b"\xff\xfe" + body(token="forged-token")[2:], False),
        (b"<xml>not a form</xml>", False),
        (b"\xff" * 100, False),
    ],
    ids=["bad-id", "no-ts", "not-utf8-right-token", "cut-token", "not-utf8-wrong-token", "xml", "binary"],
)
def test_a_malformed_delivery_says_whether_it_authenticated(raw: bytes, authenticated: bool) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        parse(raw)
    assert caught.value.authenticated is authenticated


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
        "data[CALL_ID]",
        "data[CALL_TYPE]",
        "data[CALL_DURATION]",
        "data[CALL_START_DATE]",
        "data[CRM_ACTIVITY_ID]",
        "data[CRM_ACTIVITY_ID][]",
        "data[CALL_FAILED_CODE]",
    ]
)
_VALUES = st.one_of(
    st.sampled_from(
        [
            "ONCRMLEADADD",
            "ONCRMDEALUPDATE",
            "onCrmActivityAdd",
            "ONVOXIMPLANTCALLEND",
            TOKEN,
            "1",
            "0",
            "",
            TS,
            "99999999999",
            "2026-03-11T17:28:46+02:00",
            "0001-01-01T00:00:00+05:00",
            "externalCall.1",
        ]
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


# ----------------------------------------------------------------------------- ONVOXIMPLANTCALLEND
DOC_CALL_ID = "externalCall.7b0c7de811455ef32b18dc5917e4306a.1773239327"
DOC_START = datetime(2026, 3, 11, 15, 28, 46, tzinfo=UTC)  # 17:28:46+02:00


def call_end(
    *, token: str | None = TOKEN, drop: tuple[str, ...] = (), ts: str = "1773239624", **data: str
) -> bytes:
    """The body of on-voximplant-call-end.md's example, form-encoded, with `data` overridden."""
    fields = {
        "CALL_ID": DOC_CALL_ID,
        "CALL_TYPE": "1",
        "PHONE_NUMBER": "+19061234567",
        "PORTAL_NUMBER": "REST_APP:",
        "PORTAL_USER_ID": "1269",
        "CALL_DURATION": "0",
        "CALL_START_DATE": "2026-03-11T17:28:46+02:00",
        "COST": "0",
        "COST_CURRENCY": "",
        "CALL_FAILED_CODE": "304",
        "CALL_FAILED_REASON": "Call canceled",
        "CRM_ACTIVITY_ID": "7953",
        **data,
    }
    pairs = [("event", "ONVOXIMPLANTCALLEND"), ("event_handler_id", "1061")]
    pairs += [(f"data[{key}]", value) for key, value in fields.items() if key not in drop]
    pairs += [("ts", ts), ("auth[domain]", "acme.bitrix24.ru"), ("auth[member_id]", "m1")]
    if token is not None:
        pairs.append(("auth[application_token]", token))
    return form(pairs)


def test_call_end_from_the_docs_example_is_one_call_ended_event() -> None:
    [event] = parse(call_end())
    assert event.kind is EventKind.CALL_ENDED
    assert event.entity is None
    assert event.activity_id == "7953"
    assert event.dedupe_key == f"b24:ONVOXIMPLANTCALLEND:{DOC_CALL_ID}"
    assert event.raw_event == "ONVOXIMPLANTCALLEND" and event.source == "webhook"
    assert event.occurred_at == DOC_START
    assert event.call == Call(
        key="act7953",
        entity=None,
        direction="out",
        manager="1269",
        started_at=DOC_START,
        duration=0,
        answered=False,  # 304: missed
        record_url=None,
        activity_id="7953",
        source="telephony",
    )
    # The call names no card: the worker reads the activity to find it.
    assert event.needs_activity() and not event.needs_card()


@pytest.mark.parametrize(("call_type", "direction"), [("1", "out"), ("2", "in"), ("3", "in"), ("4", "out")])
def test_call_type_gives_the_direction(call_type: str, direction: str) -> None:
    [event] = parse(call_end(CALL_TYPE=call_type))
    assert event.call is not None and event.call.direction == direction


def test_an_answered_incoming_call_keeps_its_duration_and_manager() -> None:
    [event] = parse(call_end(CALL_TYPE="2", CALL_DURATION="95", CALL_FAILED_CODE="200", PORTAL_USER_ID="17"))
    assert event.call is not None
    assert (event.call.direction, event.call.duration, event.call.answered, event.call.manager) == (
        "in",
        95,
        True,
        "17",
    )


@pytest.mark.parametrize("code", ["304", "603", "603-S", "486", "480", "404", "402", "OTHER"])
def test_a_failed_call_is_not_answered(code: str) -> None:
    [event] = parse(call_end(CALL_FAILED_CODE=code, CALL_DURATION="0"))
    assert event.call is not None and event.call.answered is False


def test_a_call_without_a_result_code_does_not_say_whether_it_was_answered() -> None:
    [event] = parse(call_end(drop=("CALL_FAILED_CODE", "CALL_FAILED_REASON")))
    assert event.call is not None and event.call.answered is None


def test_call_end_dedupe_key_is_the_call_not_the_delivery() -> None:
    first = parse(call_end(ts="1773239624"))[0]
    again = parse(call_end(ts="1773239999"))[0]
    other = parse(call_end(CALL_ID="externalCall.ffff.1773239327"))[0]
    assert first.dedupe_key == again.dedupe_key
    assert other.dedupe_key != first.dedupe_key
    # The key of the call itself is the activity's, whatever path reports it.
    assert first.call is not None and first.call.key == "act7953"


def test_call_end_event_code_is_case_insensitive_and_activity_id_canonical() -> None:
    raw = call_end(CRM_ACTIVITY_ID="007953").replace(b"ONVOXIMPLANTCALLEND", b"onVoximplantCallEnd")
    [event] = parse(raw)
    assert event.dedupe_key == f"b24:ONVOXIMPLANTCALLEND:{DOC_CALL_ID}"
    assert event.activity_id == "7953" and event.call is not None and event.call.key == "act7953"


@pytest.mark.parametrize(
    "raw",
    [
        call_end(CALL_TYPE="5"),
        call_end(drop=("CRM_ACTIVITY_ID",)),
        call_end(CRM_ACTIVITY_ID=""),
        call_end(CRM_ACTIVITY_ID="0"),
        # Nothing acts on these, so their other fields are not held against them.
        call_end(CALL_TYPE="5", CALL_DURATION="x"),
        call_end(drop=("CRM_ACTIVITY_ID", "CALL_START_DATE")),
    ],
    ids=["informational", "no-activity", "empty-activity", "zero-activity", "info-bad", "no-activity-bad"],
)
def test_informational_and_unlinked_calls_are_valid_deliveries_with_nothing_to_do(raw: bytes) -> None:
    assert parse(raw) == []


def test_the_fake_portals_own_call_end_body_parses_to_its_call() -> None:
    fake = portal()
    card = fake.create_lead("dialed")
    made = fake.add_call(
        card,
        user_id="31",
        started_at=datetime(2026, 11, 23, 7, 15, 9, tzinfo=UTC),
        duration=42,
        failed_code="200",
        call_type=4,
        record_url="https://records.example/1.mp3",
    )
    activity_added, ended = made["events"]
    [added] = parse(activity_added)
    assert added.kind is EventKind.ACTIVITY_ADDED and added.activity_id == made["activity_id"]
    [event] = parse(ended)
    assert event.dedupe_key == f"b24:ONVOXIMPLANTCALLEND:{made['call_id']}"
    assert event.call == Call(
        key=f"act{made['activity_id']}",
        entity=None,
        direction="out",
        manager="31",
        started_at=datetime(2026, 11, 23, 7, 15, 9, tzinfo=UTC),
        duration=42,
        answered=True,
        record_url=None,  # the event never carries the recording
        activity_id=made["activity_id"],
        source="telephony",
    )


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        (call_end(drop=("CALL_ID",)), "data[CALL_ID]"),
        (call_end(CALL_ID=""), "data[CALL_ID]"),
        (call_end(CALL_ID="external Call"), "data[CALL_ID]"),
        (call_end(CALL_ID="x" * 201), "data[CALL_ID]"),
        (call_end(drop=("CALL_TYPE",)), "data[CALL_TYPE]"),
        (call_end(CALL_TYPE="9"), "data[CALL_TYPE]"),
        (call_end(drop=("CALL_DURATION",)), "data[CALL_DURATION]"),
        (call_end(CALL_DURATION="-1"), "data[CALL_DURATION]"),
        (call_end(CALL_DURATION="1.5"), "data[CALL_DURATION]"),
        (call_end(CALL_DURATION="１２"), "data[CALL_DURATION]"),
        (call_end(drop=("CALL_START_DATE",)), "data[CALL_START_DATE]"),
        (call_end(CALL_START_DATE="yesterday"), "data[CALL_START_DATE]"),
        (call_end(CALL_START_DATE="0001-01-01T00:00:00+05:00"), "data[CALL_START_DATE]"),
        (call_end(CRM_ACTIVITY_ID="abc"), "data[CRM_ACTIVITY_ID]"),
        (call_end(CRM_ACTIVITY_ID="-3"), "data[CRM_ACTIVITY_ID]"),
        (
            form(
                [
                    ("event", "ONVOXIMPLANTCALLEND"),
                    ("data[CALL_ID]", "externalCall.1"),
                    ("data[CALL_TYPE]", "1"),
                    ("data[CRM_ACTIVITY_ID][x]", "1"),
                    ("auth[application_token]", TOKEN),
                ]
            ),
            "data[CRM_ACTIVITY_ID]",
        ),
        (form([("event", "ONVOXIMPLANTCALLEND"), ("auth[application_token]", TOKEN)]), "data[CALL_ID]"),
    ],
    ids=[
        "no-call-id",
        "empty-call-id",
        "call-id-with-space",
        "call-id-too-long",
        "no-call-type",
        "unknown-call-type",
        "no-duration",
        "negative-duration",
        "fractional-duration",
        "unicode-digit-duration",
        "no-start",
        "start-text",
        "start-overflows",
        "activity-text",
        "activity-negative",
        "activity-group",
        "no-data",
    ],
)
def test_malformed_call_end_is_400_naming_the_key(raw: bytes, names: str) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        parse(raw)
    assert caught.value.status == 400
    assert caught.value.message.startswith(names)
    assert len(caught.value.message) < 120  # an excerpt, not the whole value


def test_duration_message_says_what_was_wrong() -> None:
    with pytest.raises(MalformedWebhook) as caught:
        parse(call_end(CALL_DURATION="ninety"))
    assert caught.value.message == "data[CALL_DURATION] is not a number of seconds: 'ninety'"


def test_call_end_with_a_wrong_or_missing_token_is_refused_before_anything_else() -> None:
    with pytest.raises(WebhookForbidden) as forbidden:
        parse(call_end(token="wrong", CALL_DURATION="garbage"))
    assert forbidden.value.status == 403 and TOKEN not in forbidden.value.message
    with pytest.raises(WebhookUnauthorized) as missing:
        parse(call_end(token=None))
    assert missing.value.status == 401


_OFFSETS = st.integers(min_value=-12 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
_STARTS = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=_OFFSETS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    call_id=st.from_regex(r"[A-Za-z0-9._:-]{1,120}", fullmatch=True),
    call_type=st.sampled_from(["1", "2", "3", "4"]),
    user=st.integers(min_value=1, max_value=10**9),
    duration=st.integers(min_value=0, max_value=10**8),
    start=_STARTS,
    code=st.sampled_from(["200", "304", "603", "603-S", "486", "480", "404", "484", "503", "OTHER"]),
    activity=st.integers(min_value=1, max_value=10**15),
    zeros=st.integers(min_value=0, max_value=2),
    noise=st.text(max_size=30),
)
def test_any_valid_call_end_parses_to_the_same_call(
    call_id: str,
    call_type: str,
    user: int,
    duration: int,
    start: datetime,
    code: str,
    activity: int,
    zeros: int,
    noise: str,
) -> None:
    start = start.replace(microsecond=0)
    raw = call_end(
        CALL_ID=call_id,
        CALL_TYPE=call_type,
        PORTAL_USER_ID=str(user),
        CALL_DURATION=str(duration),
        CALL_START_DATE=start.isoformat(),
        CALL_FAILED_CODE=code,
        CRM_ACTIVITY_ID="0" * zeros + str(activity),
        PHONE_NUMBER=noise,
        CALL_FAILED_REASON=noise,
    )
    [event] = parse(raw)
    expected = Call(
        key=f"act{activity}",
        entity=None,
        direction="out" if call_type in {"1", "4"} else "in",
        manager=str(user),
        started_at=start.astimezone(UTC),
        duration=duration,
        answered=code == "200",
        record_url=None,
        activity_id=str(activity),
        source="telephony",
    )
    assert event.call == expected
    assert event.kind is EventKind.CALL_ENDED and event.entity is None
    assert event.dedupe_key == f"b24:ONVOXIMPLANTCALLEND:{call_id}"
    assert event.occurred_at == expected.started_at and event.activity_id == str(activity)
    # And it survives the inbox and SQS unchanged.
    assert type(event).from_dict(event.to_dict()) == event
