"""amoCRM webhook parsing: real-shaped bodies in, normalized events out, and every way a
delivery can be refused. Bodies come from the fake account (`webhook_body`) and by hand in
the shapes of the official webhooks-format page and of captured note hooks."""

from __future__ import annotations

import contextlib
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_adapters.amocrm import MAX_CALL_SECONDS, AmoCrmAdapter
from crm_adapters.base import (
    MalformedWebhook,
    WebhookForbidden,
    WebhookRejected,
    WebhookRequest,
    WebhookUnauthorized,
)
from leadwatch.config import AmoCrmConfig, SecretRef
from leadwatch.events import Call, CrmEvent, EntityRef, EntityType, EventKind
from leadwatch.testing.amocrm import FakeAmoCrm

HOOK_SECRET = "hook-secret-Vb93"
START = datetime(2025, 10, 29, 9, 30, tzinfo=UTC)


def resolver(ref: SecretRef) -> str:
    if ref.env == "HOOK":
        return HOOK_SECRET
    raise AssertionError(f"parse_webhook must not resolve {ref.describe()}")


def make_adapter(account_id: str | None = "100500") -> AmoCrmAdapter:
    config = AmoCrmConfig(
        kind="amocrm",
        base_url="https://acme.amocrm.ru",
        access_token=SecretRef(env="TOKEN"),
        hook_secret=SecretRef(env="HOOK"),
        account_id=account_id,
    )
    return AmoCrmAdapter("acme-amo", config, resolver)


@pytest.fixture
def adapter() -> AmoCrmAdapter:
    return make_adapter()


@pytest.fixture
def fake() -> FakeAmoCrm:
    # Python API only: nothing is served, the bodies land in fake.outbox.
    return FakeAmoCrm(clock=lambda: START)


def deliver(adapter: AmoCrmAdapter, body: bytes | str, key: str | None = HOOK_SECRET) -> list[CrmEvent]:
    raw = body.encode() if isinstance(body, str) else body
    return adapter.parse_webhook(WebhookRequest(raw, {"key": key} if key is not None else {}))


def form(pairs: list[tuple[str, str]]) -> bytes:
    return urlencode(pairs, quote_via=quote).encode()


TRAILER = [
    ("account[subdomain]", "acme"),
    ("account[id]", "100500"),
    ("account[_links][self]", "https://acme.amocrm.ru"),
]


def status_pairs(index: int = 0, lead_id: str = "25399013", **override: str) -> list[tuple[str, str]]:
    """A leads[status] item as the official webhooks-format page shows it."""
    base = {
        "id": lead_id,
        "name": "Lead title",
        "old_status_id": "7039101",
        "status_id": "142",
        "price": "0",
        "responsible_user_id": "123123",
        "last_modified": "1413554372",
        "modified_user_id": "123123",
        "created_user_id": "123123",
        "date_create": "1413554349",
        "account_id": "100500",
    }
    base.update(override)
    return [(f"leads[status][{index}][{k}]", v) for k, v in base.items() if v is not None]


# ----------------------------------------------------------------------------- each event kind
def test_lead_created_from_fake(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("Anna Ivanova", responsible_user_id="7", custom_fields={584215: "site"})
    [event] = deliver(adapter, fake.outbox[-1])
    assert event.kind is EventKind.LEAD_CREATED
    assert event.entity == EntityRef(EntityType.LEAD, lead_id)
    assert event.raw_event == "leads[add]"
    assert event.occurred_at == START
    assert event.lead is not None and not event.needs_card()
    assert event.lead.stage == "70011"
    assert event.lead.pipeline == "7001"
    assert event.lead.responsible == "7"
    assert event.lead.title == "Anna Ivanova"
    assert event.lead.created_at == START
    assert event.lead.modified_at == START
    assert event.lead.stage_changed_at is None
    assert event.lead.fields == {"584215": "site"}
    assert event.dedupe_key == f"amo:add:{lead_id}:{int(START.timestamp())}"


def test_stage_changed_carries_when(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    moved = datetime(2025, 10, 29, 9, 41, 7, tzinfo=UTC)
    fake.change_status(lead_id, 70013, at=moved, by="7")
    [event] = deliver(adapter, fake.outbox[-1])
    assert event.kind is EventKind.STAGE_CHANGED
    assert event.lead is not None
    assert event.lead.stage == "70013"
    assert event.lead.stage_changed_at == moved == event.occurred_at
    assert event.lead.created_at == START


def test_responsible_changed(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x", responsible_user_id="1")
    fake.set_responsible(lead_id, "42")
    body = fake.outbox[-1]
    assert b"old_responsible_user_id" in body
    [event] = deliver(adapter, body)
    assert event.kind is EventKind.RESPONSIBLE_CHANGED
    assert event.lead is not None and event.lead.responsible == "42"


def test_lead_changed_with_date_and_select_fields(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    fake.update_lead(lead_id, name="renamed", custom_fields={584211: START, 584213: "Yes"})
    [event] = deliver(adapter, fake.outbox[-1])
    assert event.kind is EventKind.LEAD_CHANGED
    assert event.lead is not None
    assert event.lead.title == "renamed"
    # a date comes bare ([values][0]=unix), a select as [values][0][value] with [enum]
    assert event.lead.fields == {"584211": str(int(START.timestamp())), "584213": "Yes"}


@pytest.mark.parametrize(
    ("note_type", "kind", "direction"),
    [("common", "note", None), ("call_in", "call", "in"), ("call_out", "call", "out")],
)
def test_note_becomes_activity(
    adapter: AmoCrmAdapter, fake: FakeAmoCrm, note_type: str, kind: str, direction: str | None
) -> None:
    lead_id = fake.create_lead("x", responsible_user_id="7")
    at = datetime(2025, 10, 29, 9, 35, tzinfo=UTC)
    note_id = fake.add_note(
        lead_id,
        note_type,
        author="7",
        text="called back",
        created_at=at,
        params={"duration": 42, "link": "https://r/1"},
    )
    [event] = deliver(adapter, fake.outbox[-1])
    assert event.kind is EventKind.ACTIVITY_ADDED
    assert event.entity == EntityRef(EntityType.LEAD, lead_id)
    assert event.activity is not None and not event.needs_activity()
    assert event.activity.id == note_id
    assert event.activity.kind == kind
    assert event.activity.direction == direction
    assert event.activity.author == "7"
    assert event.activity.created_at == at == event.occurred_at
    assert event.raw_event == "leads[note]"
    assert event.dedupe_key == f"amo:note:{note_id}:{int(at.timestamp())}"


def test_official_example_body(adapter: AmoCrmAdapter) -> None:
    """The leads[status] example of amocrm.ru webhooks-format, custom fields with bare values."""
    pairs = status_pairs()
    for n, (field_id, value) in enumerate([("427183", "1"), ("427271", "1412380800"), ("427661", "Валера")]):
        pairs += [
            (f"leads[status][0][custom_fields][{n}][id]", field_id),
            (f"leads[status][0][custom_fields][{n}][name]", "Field"),
            (f"leads[status][0][custom_fields][{n}][values][0]", value),
        ]
    [event] = deliver(adapter, form(pairs + TRAILER))
    assert event.kind is EventKind.STAGE_CHANGED
    assert event.lead is not None
    assert event.lead.stage == "142"
    assert event.lead.responsible == "123123"
    assert event.lead.pipeline is None
    assert event.lead.created_at == datetime.fromtimestamp(1413554349, UTC)
    assert event.occurred_at == datetime.fromtimestamp(1413554372, UTC)
    assert event.lead.fields == {"427183": "1", "427271": "1412380800", "427661": "Валера"}


def test_captured_note_body(adapter: AmoCrmAdapter) -> None:
    """A common note hook in the shape captured from a live account (date_create is local time)."""
    note = {
        "element_type": "2",
        "element_id": "22060555",
        "note_type": "4",
        "text": "Клиент просит перезвонить",
        "account_id": "100500",
        "date_create": "2020-09-28 00:26:51",
        "timestamp_x": "2020-09-28 00:26:51",
        "created_by": "1608151",
        "modified_by": "1608151",
        "main_user_id": "1608151",
        "group_id": "258124",
        "id": "213313359",
        "created_at": "1601242011",
        "updated_at": "1601242011",
    }
    pairs = [(f"leads[note][0][note][{k}]", v) for k, v in note.items()]
    [event] = deliver(adapter, form(pairs + TRAILER))
    assert event.activity is not None
    assert event.activity.kind == "note"
    assert event.activity.author == "1608151"
    assert event.activity.created_at == datetime.fromtimestamp(1601242011, UTC)
    assert event.entity == EntityRef(EntityType.LEAD, "22060555")


def test_call_note_without_created_by_falls_back_to_main_user(adapter: AmoCrmAdapter) -> None:
    pairs = [
        ("leads[note][0][note][id]", "5"),
        ("leads[note][0][note][element_id]", "9"),
        ("leads[note][0][note][element_type]", "2"),
        ("leads[note][0][note][note_type]", "11"),
        (
            "leads[note][0][note][text]",
            json.dumps({"UNIQ": "u1", "DURATION": 12, "LINK": "", "PHONE": "+7999"}),
        ),
        ("leads[note][0][note][main_user_id]", "77"),
        ("leads[note][0][note][created_at]", "1601242011"),
    ]
    [event] = deliver(adapter, form(pairs + TRAILER))
    assert event.activity is not None
    assert (event.activity.kind, event.activity.direction, event.activity.author) == ("call", "out", "77")


# ----------------------------------------------------------------------------- call notes
def call_note_pairs(text: str, note_type: str = "11", **override: str) -> list[tuple[str, str]]:
    """A call note hook in the captured shape, its call as `text`."""
    note = {
        "element_type": "2",
        "element_id": "22060555",
        "note_type": note_type,
        "text": text,
        "account_id": "100500",
        "date_create": "2020-09-28 00:26:51",
        "created_by": "1608151",
        "main_user_id": "1608151",
        "id": "213313360",
        "created_at": "1601242011",
        "updated_at": "1601242011",
    }
    note.update(override)
    return [(f"leads[note][0][note][{k}]", v) for k, v in note.items()] + TRAILER


def call_of(adapter: AmoCrmAdapter, pairs: list[tuple[str, str]]) -> Call:
    [event] = deliver(adapter, form(pairs))
    assert event.kind is EventKind.ACTIVITY_ADDED
    assert event.activity is not None and event.call is not None
    assert event.activity.call == event.call
    return event.call


@pytest.mark.parametrize(("note_type", "direction"), [("call_out", "out"), ("call_in", "in")])
def test_call_note_from_fake_carries_its_call(
    adapter: AmoCrmAdapter, fake: FakeAmoCrm, note_type: str, direction: str
) -> None:
    lead_id = fake.create_lead("x", responsible_user_id="7")
    at = datetime(2025, 10, 29, 9, 35, tzinfo=UTC)
    note_id = fake.add_note(
        lead_id,
        note_type,
        author="7",
        created_at=at,
        params={
            "uniq": "c-1",
            "duration": 95,
            "link": "https://records.example/c-1.mp3",
            "phone": "+79990001122",
            "source": "onlinepbx",
            "call_status": 4,
            "call_result": "Договорились о встрече",
        },
    )
    body = fake.outbox[-1]
    text = json.loads(dict(parse_qsl(body.decode(), keep_blank_values=True))["leads[note][0][note][text]"])
    assert text == {
        "UNIQ": "c-1",
        "DURATION": 95,
        "SRC": "onlinepbx",
        "LINK": "https://records.example/c-1.mp3",
        "PHONE": "+79990001122",
        "call_status": 4,
        "call_result": "Договорились о встрече",
    }
    [event] = deliver(adapter, body)
    assert event.kind is EventKind.ACTIVITY_ADDED
    assert event.activity is not None and event.activity.kind == "call"
    expected = Call(
        key=f"note{note_id}",
        entity=EntityRef(EntityType.LEAD, lead_id),
        direction=direction,
        manager="7",
        started_at=at,
        duration=95,
        answered=True,
        record_url="https://records.example/c-1.mp3",
        activity_id=note_id,
        source="note",
    )
    assert event.call == expected
    assert event.activity.call == expected
    assert CrmEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event


@pytest.mark.parametrize(
    ("data", "duration", "answered", "link"),
    [
        # upper-case keys as captured hooks send them
        ({"UNIQ": "u", "DURATION": 95, "LINK": "https://r.example/1.mp3", "PHONE": "+7"}, 95, True,
         "https://r.example/1.mp3"),
        # lower-case keys, as some integrations and API params name them
        ({"uniq": "u", "duration": 40, "link": "http://r.example/2.mp3", "call_status": 4}, 40, True,
         "http://r.example/2.mp3"),
        # mixed case, DURATION as a string
        ({"Duration": " 17 ", "Link": ""}, 17, True, None),
        ({"DURATION": "12.7"}, 12, True, None),
        # call_status decides over the duration: 6 is "no answer" whatever the line time was
        ({"DURATION": 30, "call_status": 6}, 30, False, None),
        ({"DURATION": "0", "call_status": "4"}, 0, True, None),
        ({"DURATION": 0}, 0, False, None),
        # nothing says whether anyone answered
        ({"UNIQ": "u", "PHONE": "+7"}, 0, None, None),
        ({"DURATION": "about a minute", "call_status": "busy"}, 0, None, None),
        ({"DURATION": -5}, 0, None, None),
        ({"DURATION": True}, 0, None, None),
        # a broken integration's duration is clamped, not refused
        ({"DURATION": 10**30}, MAX_CALL_SECONDS, True, None),
    ],
)  # fmt: skip
def test_call_text_is_read_case_insensitively(
    adapter: AmoCrmAdapter, data: dict[str, Any], duration: int, answered: bool | None, link: str | None
) -> None:
    call = call_of(adapter, call_note_pairs(json.dumps(data)))
    assert (call.duration, call.answered, call.record_url) == (duration, answered, link)
    assert (call.key, call.direction, call.manager, call.activity_id, call.source) == (
        "note213313360",
        "out",
        "1608151",
        "213313360",
        "note",
    )
    assert call.entity == EntityRef(EntityType.LEAD, "22060555")
    assert call.started_at == datetime.fromtimestamp(1601242011, UTC)


@pytest.mark.parametrize(
    "text",
    ["", "not json", "{\"DURATION\": 95", "[95, \"https://r/1.mp3\"]", "null", "95", "\"text\"",
     "[" * 100_000 + "]" * 100_000, "NaN"],
)  # fmt: skip
def test_an_unreadable_call_text_still_counts_the_call(adapter: AmoCrmAdapter, text: str) -> None:
    call = call_of(adapter, call_note_pairs(text, note_type="10"))
    assert call.direction == "in"
    assert (call.duration, call.answered, call.record_url) == (0, None, None)
    assert call.key == "note213313360"


def test_a_call_nested_as_a_form_group_is_read(adapter: AmoCrmAdapter) -> None:
    pairs = [p for p in call_note_pairs("") if not p[0].endswith("[text]")]
    pairs += [
        ("leads[note][0][note][text][DURATION]", "61"),
        ("leads[note][0][note][text][call_status]", "4"),
    ]
    call = call_of(adapter, pairs)
    assert (call.duration, call.answered) == (61, True)


@pytest.mark.parametrize(
    "link",
    ["javascript:alert(1)", "ftp://r.example/1.mp3", "/records/1.mp3", "records/1.mp3", "https://",
     "https://r.example/a b.mp3", "https://r.example/1\n.mp3", "data:audio/mp3;base64,AAAA",
     "https://r.example:99999/1.mp3", "https://[::1/1.mp3", 42],
)  # fmt: skip
def test_a_link_that_is_not_http_is_dropped(adapter: AmoCrmAdapter, link: object) -> None:
    call = call_of(adapter, call_note_pairs(json.dumps({"DURATION": 5, "LINK": link})))
    assert call.record_url is None
    assert (call.duration, call.answered) == (5, True)


def test_a_common_note_has_no_call(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    fake.add_note(lead_id, "common", text=json.dumps({"DURATION": 95, "LINK": "https://r/1.mp3"}))
    [event] = deliver(adapter, fake.outbox[-1])
    assert event.activity is not None and event.activity.kind == "note"
    assert event.call is None and event.activity.call is None
    [captured] = deliver(adapter, form(call_note_pairs(json.dumps({"DURATION": 9}), note_type="4")))
    assert captured.call is None and captured.activity is not None and captured.activity.call is None


def test_a_contact_call_hook_is_not_a_lead_event(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    fake.add_contact_call(41_000_007, "in", params={"duration": 30})
    assert fake.outbox[-1].startswith(b"contacts%5Bnote%5D")
    assert deliver(adapter, fake.outbox[-1]) == []


_DURATIONS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=0, max_value=10**6).map(str),
    st.text(max_size=12),
)
_LINKS = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=40),
    st.builds(
        lambda scheme, host, path: f"{scheme}{host}{path}",
        st.sampled_from(["https://", "http://", "HTTPS://", "ftp://", "javascript:", "", "//"]),
        st.sampled_from(["r.example", "", "r.example:8443", "[::1]", "a b", "r.example:x"]),
        st.text(max_size=20),
    ),
)


@settings(max_examples=400, deadline=None)
@given(
    duration=_DURATIONS,
    link=_LINKS,
    status=st.one_of(st.none(), st.integers(0, 9), st.sampled_from(["4", "6", " 4", "x"])),
    upper=st.booleans(),
)
def test_any_call_text_gives_a_sane_call(duration: Any, link: Any, status: Any, upper: bool) -> None:
    data: dict[str, Any] = {}
    if duration is not None:
        data["DURATION" if upper else "duration"] = duration
    if link is not None:
        data["LINK" if upper else "link"] = link
    if status is not None:
        data["call_status"] = status
    call = call_of(make_adapter(), call_note_pairs(json.dumps(data)))
    assert isinstance(call.duration, int) and 0 <= call.duration <= MAX_CALL_SECONDS
    assert call.record_url is None or call.record_url.lower().startswith(("http://", "https://"))
    if call.record_url is not None:
        assert call.record_url == link.strip() and not any(c.isspace() for c in call.record_url)
    readable_status = str(status).strip() if status is not None else ""
    if readable_status.isdigit():
        assert call.answered is (int(readable_status) == 4)
    elif isinstance(duration, int) and not isinstance(duration, bool) and duration >= 0:
        assert call.duration == min(duration, MAX_CALL_SECONDS)
        assert call.answered is (duration > 0)
    elif isinstance(duration, str) and re.fullmatch("[0-9]+", duration.strip()):
        assert call.duration == min(int(duration), MAX_CALL_SECONDS)
        assert call.answered is (int(duration) > 0)
    elif duration is None:
        assert (call.duration, call.answered) == (0, None)
    json.dumps(
        CrmEvent(tenant="t", kind=EventKind.CALL_ENDED, entity=None, dedupe_key="k", call=call).to_dict()
    )


def test_system_notes_and_other_entities_are_ignored(adapter: AmoCrmAdapter) -> None:
    system = [
        ("leads[note][0][note][id]", "5"),
        ("leads[note][0][note][element_id]", "9"),
        ("leads[note][0][note][note_type]", "3"),  # a stage-change system note, not a person's work
        ("leads[note][0][note][created_at]", "1601242011"),
    ]
    assert deliver(adapter, form(system + TRAILER)) == []
    on_contact = [
        *system[:2],
        ("leads[note][0][note][element_type]", "1"),
        ("leads[note][0][note][note_type]", "4"),
    ]
    assert deliver(adapter, form(on_contact + TRAILER)) == []
    contact = [("contacts[add][0][id]", "10952709"), ("contacts[add][0][name]", "Контакт"), *TRAILER]
    assert deliver(adapter, form(contact)) == []


def test_a_deleted_lead_is_an_event_once_and_a_bad_one_is_refused(adapter: AmoCrmAdapter) -> None:
    deleted = [
        ("leads[delete][0][id]", "31"),
        ("leads[delete][0][status_id]", "142"),
        ("leads[delete][0][pipeline_id]", "3"),
        *TRAILER,
    ]
    [event] = deliver(adapter, form(deleted))
    assert (event.kind, event.entity) == (EventKind.LEAD_DELETED, EntityRef(EntityType.LEAD, "31"))
    assert event.dedupe_key == "amo:delete:31" and not event.needs_card()
    for bad, problem in (("", "leads[delete][0][id] is missing"), ("x1", "leads[delete][0][id]")):
        with pytest.raises(MalformedWebhook, match=problem.replace("[", r"\[").replace("]", r"\]")):
            deliver(adapter, form([("leads[delete][0][id]", bad), *TRAILER]))


def test_a_hook_without_stage_or_creation_time_asks_for_the_card(adapter: AmoCrmAdapter) -> None:
    pairs = [("leads[update][0][id]", "31"), ("leads[update][0][last_modified]", "1601242011"), *TRAILER]
    [event] = deliver(adapter, form(pairs))
    assert event.kind is EventKind.LEAD_CHANGED
    assert event.lead is None and event.needs_card()
    assert event.dedupe_key == "amo:update:31:1601242011"


# ----------------------------------------------------------------------------- several in one POST
def test_several_leads_in_one_post_in_numeric_order(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    ids = [fake.create_lead(f"lead {n}") for n in range(12)]
    pairs: list[tuple[str, str]] = []
    for n, lead_id in enumerate(ids):
        pairs += status_pairs(n, lead_id=lead_id, last_modified=str(1601242000 + n))
    events = deliver(adapter, form(pairs + TRAILER))
    # [10] and [11] come after [9], not after [1]
    assert [e.entity.id for e in events if e.entity] == ids
    assert len({e.dedupe_key for e in events}) == 12


def test_webhook_body_with_several_payloads(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    first, second = fake.create_lead("a"), fake.create_lead("b")
    body = fake.webhook_body(
        "status",
        [
            {"id": first, "status_id": "70012", "last_modified": "1601242011", "date_create": "1601240000"},
            {"id": second, "status_id": "142", "last_modified": "1601242012", "date_create": "1601240000"},
        ],
    )
    events = deliver(adapter, body)
    assert [(e.entity.id if e.entity else None, e.lead.stage if e.lead else None) for e in events] == [
        (first, "70012"),
        (second, "142"),
    ]


def test_mixed_actions_in_one_post(adapter: AmoCrmAdapter) -> None:
    pairs = [
        *status_pairs(0, lead_id="1"),
        ("leads[update][0][id]", "2"),
        ("leads[update][0][status_id]", "70012"),
        ("leads[update][0][last_modified]", "1601242011"),
        ("leads[update][0][date_create]", "1601240000"),
    ]
    kinds = [e.kind for e in deliver(adapter, form(pairs + TRAILER))]
    assert sorted(kinds) == sorted([EventKind.STAGE_CHANGED, EventKind.LEAD_CHANGED])


# ----------------------------------------------------------------------------- dedupe and round trip
def test_dedupe_key_is_stable_across_redeliveries(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    fake.change_status(lead_id, 70012, at=datetime(2025, 10, 29, 9, 40, tzinfo=UTC))
    body = fake.outbox[-1]
    first = deliver(adapter, body)
    again = deliver(adapter, body)
    assert [e.dedupe_key for e in first] == [e.dedupe_key for e in again]
    fake.change_status(lead_id, 70013, at=datetime(2025, 10, 29, 9, 45, tzinfo=UTC))
    later = deliver(adapter, fake.outbox[-1])
    assert later[0].dedupe_key != first[0].dedupe_key


def test_events_survive_json(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x", custom_fields={584213: "No"})
    fake.add_note(lead_id, "call_in", author="1")
    for body in fake.outbox:
        for event in deliver(adapter, body):
            assert CrmEvent.from_dict(json.loads(json.dumps(event.to_dict()))) == event


# ----------------------------------------------------------------------------- refusals
def test_key_missing_is_401_and_wrong_is_403(adapter: AmoCrmAdapter, fake: FakeAmoCrm) -> None:
    fake.create_lead("x")
    body = fake.outbox[-1]
    with pytest.raises(WebhookUnauthorized) as missing:
        deliver(adapter, body, key=None)
    assert missing.value.status == 401 and "key" in missing.value.message
    with pytest.raises(WebhookUnauthorized):
        deliver(adapter, body, key="")
    with pytest.raises(WebhookForbidden) as wrong:
        deliver(adapter, body, key="guess")
    assert wrong.value.status == 403
    assert "guess" not in wrong.value.message and HOOK_SECRET not in wrong.value.message


def test_key_is_checked_before_the_body(adapter: AmoCrmAdapter) -> None:
    with pytest.raises(WebhookForbidden):
        deliver(adapter, b"\xff\xfe not a form", key="guess")


@pytest.mark.parametrize("key", ["\ud800", "\udfff" + HOOK_SECRET, HOOK_SECRET + "\ud83d"])
def test_a_key_that_cannot_be_encoded_is_a_wrong_key(adapter: AmoCrmAdapter, key: str) -> None:
    # Was a UnicodeEncodeError (a 500): a lone surrogate, as %ED%A0%80 decodes to with surrogateescape.
    with pytest.raises(WebhookForbidden) as wrong:
        deliver(adapter, form(status_pairs() + TRAILER), key=key)
    assert wrong.value.status == 403 and "?key= is wrong" in wrong.value.message


def test_a_malformed_delivery_with_the_right_key_says_it_authenticated(adapter: AmoCrmAdapter) -> None:
    for body in (b"\xff\xfe not a form", form(status_pairs(id="abc") + TRAILER), form(TRAILER)):
        with pytest.raises(MalformedWebhook) as caught:
            deliver(adapter, body)
        assert caught.value.authenticated, body


def test_account_id_must_match(adapter: AmoCrmAdapter) -> None:
    other = [("account[subdomain]", "evil"), ("account[id]", "999")]
    with pytest.raises(WebhookForbidden, match=r"account\[id\]"):
        deliver(adapter, form(status_pairs() + other))
    with pytest.raises(WebhookForbidden, match=r"account\[id\] is missing"):
        deliver(adapter, form(status_pairs()))
    # without a configured account id any account's hooks are taken
    assert len(deliver(make_adapter(account_id=None), form(status_pairs() + other))) == 1


@pytest.mark.parametrize(
    ("pairs", "named"),
    [
        (status_pairs(id=None), "leads[status][0][id] is missing"),
        (status_pairs(id="abc"), "leads[status][0][id]"),
        (status_pairs(id="0"), "leads[status][0][id]"),
        (status_pairs(status_id="new"), "leads[status][0][status_id]"),
        (status_pairs(responsible_user_id="boss"), "leads[status][0][responsible_user_id]"),
        (status_pairs(last_modified="yesterday"), "leads[status][0][last_modified]"),
        (status_pairs(last_modified=None), "leads[status][0][last_modified] is missing"),
        (status_pairs(date_create="2020-09-28 00:26:51"), "leads[status][0][date_create]"),
        (status_pairs(last_modified="99999999999999999"), "leads[status][0][last_modified]"),
        ([("leads[status][first][id]", "1")], "leads[status]"),
        ([("leads[status]", "1")], "leads[status]"),
        ([("leads", "1")], "leads must be a group"),
        ([("leads[status][0]", "1")], "leads[status][0]"),
        ([("leads[note][0][note][id]", "1"), ("leads[note][0][note][created_at]", "1601242011")],
         "leads[note][0][note][element_id] is missing"),
        ([("leads[note][0][note][id]", "1"), ("leads[note][0][note][element_id]", "2"),
          ("leads[note][0][note][note_type]", "4"), ("leads[note][0][note][date_create]", "2020-09-28 00:26:51")],
         "leads[note][0][note][created_at] is missing"),
        ([("leads[note][0][id]", "1")], "leads[note][0][note]"),
    ],
)  # fmt: skip
def test_malformed_bodies_name_the_key(
    adapter: AmoCrmAdapter, pairs: list[tuple[str, str]], named: str
) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        deliver(adapter, form(pairs + TRAILER))
    assert caught.value.status == 400
    assert named in caught.value.message


def test_body_without_any_entity(adapter: AmoCrmAdapter) -> None:
    with pytest.raises(MalformedWebhook, match="expected an amoCRM webhook like leads"):
        deliver(adapter, form(TRAILER))
    with pytest.raises(MalformedWebhook, match="expected"):
        deliver(adapter, form([("event", "ONCRMLEADADD"), *TRAILER]))


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"", "empty"),
        (b"\xff\xfeleads", "UTF-8"),
        (b"leads[status][0][id]=1&leads[status][0][id][x]=2", "leads[status][0][id]"),
        (b"=1", "not a form key"),
    ],
)
def test_form_errors_keep_their_message(adapter: AmoCrmAdapter, body: bytes, named: str) -> None:
    with pytest.raises(MalformedWebhook) as caught:
        deliver(adapter, body)
    assert named in caught.value.message


def test_a_weird_custom_field_does_not_cost_the_delivery(adapter: AmoCrmAdapter) -> None:
    pairs = [
        *status_pairs(),
        ("leads[status][0][custom_fields][0][id]", "not-a-number"),
        ("leads[status][0][custom_fields][1][id]", "55"),
        ("leads[status][0][custom_fields][1][values][0][enum]", "3"),  # no value at all
        ("leads[status][0][custom_fields][3][id]", "57"),
        ("leads[status][0][custom_fields][3][values]", "plain"),
        ("leads[status][0][custom_fields][2][id]", "56"),
        ("leads[status][0][custom_fields][2][values][0][value]", "ok"),
    ]
    [event] = deliver(adapter, form(pairs + TRAILER))
    assert event.lead is not None
    assert event.lead.fields == {"55": None, "56": "ok", "57": "plain"}
    assert "not-a-number" not in event.lead.fields


# ----------------------------------------------------------------------------- garbage never escapes
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_are_only_ever_rejected_cleanly(body: bytes) -> None:
    with contextlib.suppress(WebhookRejected):
        make_adapter().parse_webhook(WebhookRequest(body, {"key": HOOK_SECRET}))


_SEGMENTS = st.sampled_from(
    ["leads", "status", "add", "update", "responsible", "note", "0", "1", "10", "id", "name", "status_id",
     "last_modified", "date_create", "created_at", "element_id", "note_type", "custom_fields", "values",
     "value", "account", "x", "", "-1"]
)  # fmt: skip
_VALUES = st.one_of(
    st.sampled_from(
        ["1", "0", "142", "1601242011", "abc", "", "4", "10", "2", "100500", "99999999999999999999"]
    ),
    st.text(max_size=12),
)


@st.composite
def php_forms(draw: st.DrawFn) -> bytes:
    pairs = []
    for _ in range(draw(st.integers(0, 12))):
        head = draw(_SEGMENTS)
        rest = draw(st.lists(_SEGMENTS, max_size=5))
        key = head + "".join(f"[{part}]" for part in rest)
        pairs.append((key, draw(_VALUES)))
    if draw(st.booleans()):
        pairs.append(("account[id]", draw(st.sampled_from(["100500", "1", ""]))))
    return urlencode(pairs).encode()


@settings(max_examples=500, deadline=None)
@given(php_forms())
def test_garbage_forms_are_only_ever_rejected_cleanly(body: bytes) -> None:
    try:
        events = make_adapter().parse_webhook(WebhookRequest(body, {"key": HOOK_SECRET}))
    except WebhookRejected as exc:
        assert exc.message
        return
    for event in events:
        json.dumps(event.to_dict())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_real_bodies_are_parsed_or_rejected_cleanly(data: st.DataObject) -> None:
    pairs: list[tuple[str, Any]] = status_pairs() + TRAILER
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(pairs) - 1))
        key, _value = pairs[index]
        pairs[index] = (key, data.draw(_VALUES))
    with contextlib.suppress(WebhookRejected):
        make_adapter().parse_webhook(WebhookRequest(form(pairs), {"key": HOOK_SECRET}))
