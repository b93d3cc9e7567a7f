"""Calls through AmoCrmAdapter against FakeAmoCrm over real HTTP on 127.0.0.1: call notes read
back with their Call, and `list_calls` over the events feed (pages of at most 100, calls on
contacts left out, 204s, the `since` window, notes read by id within the query budget, 429s)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import requests

from crm_adapters.amocrm import MAX_QUERY_CHARS, AmoCrmAdapter, activity_from_note
from crm_adapters.base import CrmRateLimited, CrmUnavailable, WebhookRequest
from leadwatch.events import Call, EntityRef, EntityType
from leadwatch.testing.amocrm import FakeAmoCrm, internal_error, too_many_requests, too_many_requests_problem
from leadwatch.testing.server import FixedWindow
from tests.integration.amocrm.helpers import START, TOKEN, Clock, Sleeps, lead_ref, make_adapter

pytestmark = pytest.mark.integration

EVENTS = "/api/v4/events"
NOTES = "/api/v4/leads/notes"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def hooked_calls(fake: FakeAmoCrm, adapter: AmoCrmAdapter) -> dict[str, Call]:
    """The Calls the fake's webhooks gave, by key."""
    calls: dict[str, Call] = {}
    for body in fake.outbox:
        for event in adapter.parse_webhook(WebhookRequest(body, {"key": "hook-secret"})):
            if event.call is not None:
                calls[event.call.key] = event.call
    return calls


def ids_asked(fake: FakeAmoCrm) -> list[int]:
    return [int(v) for r in fake.requests(NOTES) for k, v in r.query if k == "filter[id][]"]


# ----------------------------------------------------------------------------- calls on cards
def test_activities_on_returns_call_activities_with_their_calls(fake: FakeAmoCrm, clock: Clock) -> None:
    lead_id = fake.create_lead("x", responsible_user_id="7")
    clock.advance(60)
    out = fake.add_note(
        lead_id,
        "call_out",
        author="7",
        params={"uniq": "a1", "duration": 95, "link": "https://rec.example/a1.mp3", "call_status": 4},
    )
    clock.advance(60)
    missed = fake.add_note(lead_id, "call_in", author="8", params={"duration": "0", "call_status": 6})
    clock.advance(60)
    bare = fake.add_note(lead_id, "call_out", author="7", params={"link": "ftp://rec.example/x.mp3"})
    common = fake.add_note(lead_id, "common", author="7", text="перезвонить завтра")
    adapter = make_adapter(fake)

    [found] = adapter.activities_on([lead_ref(lead_id)]).values()

    entity = lead_ref(lead_id)
    assert [(a.id, a.kind, a.direction) for a in found] == [
        (out, "call", "out"),
        (missed, "call", "in"),
        (bare, "call", "out"),
        (common, "note", None),
    ]
    assert [a.call for a in found] == [
        Call(f"note{out}", entity, "out", "7", START + timedelta(seconds=60), 95, True,
             "https://rec.example/a1.mp3", out, "note"),
        Call(f"note{missed}", entity, "in", "8", START + timedelta(seconds=120), 0, False, None, missed, "note"),
        # no duration, no status: whether anyone answered is unknown; an ftp link is no recording
        Call(f"note{bare}", entity, "out", "7", START + timedelta(seconds=180), 0, None, None, bare, "note"),
        None,
    ]  # fmt: skip
    # the webhook of each call note told the same call
    assert hooked_calls(fake, adapter) == {a.call.key: a.call for a in found if a.call is not None}


def test_a_call_note_read_back_takes_its_params_in_any_case() -> None:
    base = {"id": 5, "entity_id": 31000001, "note_type": "call_in", "created_at": 1761728400, "created_by": 3}
    activity = activity_from_note(
        {**base, "params": {"DURATION": "42", "Link": "https://r.example/5.mp3", "CALL_STATUS": "4"}}
    )
    assert activity is not None and activity.call == Call(
        key="note5",
        entity=EntityRef(EntityType.LEAD, "31000001"),
        direction="in",
        manager="3",
        started_at=datetime.fromtimestamp(1761728400, UTC),
        duration=42,
        answered=True,
        record_url="https://r.example/5.mp3",
        activity_id="5",
        source="note",
    )
    for params in (None, "not an object", [], {"duration": "n/a"}):
        odd = activity_from_note({**base, "params": params})
        assert odd is not None and odd.call is not None
        assert (odd.call.duration, odd.call.answered, odd.call.record_url) == (0, None, None)
    common = activity_from_note({**base, "note_type": "common", "params": {"text": "hi"}})
    assert common is not None and common.call is None


# ----------------------------------------------------------------------------- list_calls
def test_list_calls_walks_every_page_and_gives_each_lead_call_once(fake: FakeAmoCrm, clock: Clock) -> None:
    leads = [fake.create_lead(f"lead {n}", responsible_user_id=str(n % 4 + 1)) for n in range(20)]
    clock.advance(10)
    made: dict[str, tuple[str, str, str, int]] = {}  # note id -> lead, direction, manager, duration
    for n in range(205):
        lead_id = leads[n % len(leads)]
        direction = "in" if n % 5 == 0 else "out"
        manager = str(n % 4 + 1)
        note_id = fake.add_note(
            lead_id,
            f"call_{direction}",
            author=manager,
            params={"uniq": f"u{n}", "duration": n % 7 * 10, "link": f"https://rec.example/{n}.mp3"},
        )
        made[note_id] = (lead_id, direction, manager, n % 7 * 10)
        if n % 50 == 0:
            fake.add_contact_call(41_000_001 + n, "out", author=manager, params={"duration": 30})
        clock.advance(7)
    adapter = make_adapter(fake)
    fake.clear_log()

    calls = list(adapter.list_calls(START))

    assert sorted(c.activity_id or "" for c in calls) == sorted(made)  # every lead call, once
    assert len({c.key for c in calls}) == len(calls) == 205
    for call in calls:
        assert call.activity_id is not None
        lead_id, direction, manager, duration = made[call.activity_id]
        assert call.key == f"note{call.activity_id}"
        assert call.entity == lead_ref(lead_id)
        assert (call.direction, call.manager, call.duration, call.source) == (
            direction,
            manager,
            duration,
            "note",
        )
        assert call.answered is (duration > 0)
        assert call.record_url is not None and call.record_url.startswith("https://rec.example/")
    # the reconciliation path and the webhook path tell the same calls
    assert {c.key: c for c in calls} == hooked_calls(fake, adapter)

    pages = fake.requests(EVENTS, "GET")
    assert [dict(r.query)["page"] for r in pages] == ["1", "2", "3"]  # 210 events, 100 a page
    assert all(r.status == 200 for r in pages)
    first = dict(pages[0].query)
    assert first["filter[type]"] == "outgoing_call,incoming_call"
    assert first["filter[created_at][from]"] == str(int(START.timestamp()))
    assert first["limit"] == "100"
    # 205 note ids do not fit one query under the budget, so two reads, no note asked twice
    reads = fake.requests(NOTES, "GET")
    assert len(reads) == 2 and all(r.status == 200 for r in reads)
    assert all(len(urlencode(r.query)) <= MAX_QUERY_CHARS for r in reads)
    assert sorted(ids_asked(fake)) == sorted(int(i) for i in made)
    assert len(fake.requests()) == 5


def test_list_calls_leaves_out_contact_calls_and_deleted_notes(fake: FakeAmoCrm, clock: Clock) -> None:
    lead_id = fake.create_lead("x", responsible_user_id="7")
    kept = fake.add_note(lead_id, "call_out", author="7", params={"duration": 12})
    gone = fake.add_note(lead_id, "call_in", author="7", params={"duration": 30})
    contact_note = fake.add_contact_call(41_000_009, "in", author="7", params={"duration": 40})
    fake.add_note(lead_id, "common", author="7", text="no call")
    fake.delete_note(gone)
    feed = fake.call_events()
    assert [(e["type"], e["entity_type"]) for e in feed] == [
        ("outgoing_call", "lead"),
        ("incoming_call", "lead"),
        ("incoming_call", "contact"),
    ]
    assert feed[2]["value_after"] == [{"note": {"id": int(contact_note)}}]
    fake.clear_log()

    calls = list(make_adapter(fake).list_calls(START))

    assert [(c.key, c.duration, c.answered) for c in calls] == [(f"note{kept}", 12, True)]
    # the contact's note is never asked for; the deleted one is asked for and simply not there
    assert sorted(ids_asked(fake)) == sorted([int(kept), int(gone)])


def test_list_calls_with_no_calls_is_a_204(fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    fake.add_note(lead_id, "common", text="not a call")
    assert list(make_adapter(fake).list_calls(START)) == []
    [call] = fake.requests()
    assert (call.path, call.status) == (EVENTS, 204)  # nothing to read notes for


def test_list_calls_when_every_note_was_deleted(fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    fake.delete_note(fake.add_note(lead_id, "call_out", params={"duration": 5}))
    assert list(make_adapter(fake).list_calls(START)) == []
    assert [(r.path, r.status) for r in fake.requests()] == [(EVENTS, 200), (NOTES, 204)]


def test_list_calls_respects_since(fake: FakeAmoCrm, clock: Clock) -> None:
    lead_id = fake.create_lead("x")
    notes = []
    for _ in range(4):
        notes.append(fake.add_note(lead_id, "call_out", params={"duration": 20}))
        clock.advance(60)
    adapter = make_adapter(fake)
    since = START + timedelta(seconds=120)
    calls = list(adapter.list_calls(since))
    assert sorted(c.key for c in calls) == [f"note{n}" for n in notes[2:]]
    assert [c.started_at for c in sorted(calls, key=lambda c: c.started_at)] == [
        since,
        since + timedelta(seconds=60),
    ]
    [events] = fake.requests(EVENTS)
    assert dict(events.query)["filter[created_at][from]"] == str(int(since.timestamp()))
    assert list(adapter.list_calls(START + timedelta(hours=1))) == []
    with pytest.raises(ValueError, match="aware"):
        list(adapter.list_calls(datetime(2025, 10, 29, 9, 0)))


def test_list_calls_honours_429_and_gives_up_on_a_long_wait(fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    notes = [fake.add_note(lead_id, "call_out", params={"duration": 9}) for _ in range(3)]
    sleeps = Sleeps()
    adapter = make_adapter(fake, sleep=sleeps)
    fake.fail_next(too_many_requests, when=lambda r: r.path == EVENTS)
    fake.fail_next(too_many_requests, when=lambda r: r.path == NOTES)
    calls = list(adapter.list_calls(START))
    assert sorted(c.key for c in calls) == sorted(f"note{n}" for n in notes)
    assert [(r.path, r.status) for r in fake.requests()] == [
        (EVENTS, 429),
        (EVENTS, 200),
        (NOTES, 429),
        (NOTES, 200),
    ]
    assert len(sleeps.waits) == 2

    # Kommo's documented 429 asks for 300 s: more than a call may wait, so it raises at once.
    fake.clear_log()
    sleeps.waits.clear()
    fake.fail_next(too_many_requests_problem)
    with pytest.raises(CrmRateLimited) as caught:
        list(adapter.list_calls(START))
    assert caught.value.retry_after == 300 and sleeps.waits == []
    assert len(fake.requests()) == 1


def test_list_calls_under_the_real_limit_paces_itself(clock: Clock) -> None:
    server = FakeAmoCrm(token=TOKEN, rate_limit=5, rate_window=0.1, clock=clock).start()
    try:
        lead_id = server.create_lead("x")
        made = {server.add_note(lead_id, "call_out", params={"duration": 3}) for _ in range(450)}
        adapter = make_adapter(server, limit=4, period=0.1, real_sleep=True)
        for _ in range(2):
            assert {c.activity_id for c in adapter.list_calls(START)} == made
        statuses = [r.status for r in server.requests()]
        assert len(statuses) == 2 * (5 + 3) and set(statuses) == {200}  # 5 event pages, 3 note reads
    finally:
        server.stop()


def test_list_calls_raises_when_the_feed_stays_down(fake: FakeAmoCrm) -> None:
    fake.add_note(fake.create_lead("x"), "call_out")
    fake.fail_randomly(1.0, internal_error, when=lambda r: r.path == EVENTS)
    with pytest.raises(CrmUnavailable):
        list(make_adapter(fake).list_calls(START))
    fake.clear_faults()
    fake.fail_randomly(1.0, internal_error, when=lambda r: r.path == NOTES)
    with pytest.raises(CrmUnavailable):
        list(make_adapter(fake).list_calls(START))


# ----------------------------------------------------------------------------- the fake's wire
def get(fake: FakeAmoCrm, path: str, params: list[tuple[str, Any]] | dict[str, Any]) -> requests.Response:
    return requests.get(fake.url + path, params=params, headers=AUTH, timeout=5)


def test_fake_events_route(fake: FakeAmoCrm, clock: Clock) -> None:
    lead_id = fake.create_lead("x", responsible_user_id="9")
    out = fake.add_note(lead_id, "call_out", author="4", params={"duration": 30})
    clock.advance(60)
    heard = fake.add_note(lead_id, "call_in", author="5", params={"duration": 0})
    clock.advance(60)
    on_contact = fake.add_contact_call(41_000_003, "out", author="6")
    t0 = int(START.timestamp())

    assert requests.get(fake.url + EVENTS, timeout=5).status_code == 401
    every = get(fake, EVENTS, {})
    assert every.status_code == 200 and every.headers["Content-Type"] == "application/hal+json"
    listed = every.json()["_embedded"]["events"]
    assert [e["value_after"] for e in listed] == [  # newest first
        [{"note": {"id": int(on_contact)}}],
        [{"note": {"id": int(heard)}}],
        [{"note": {"id": int(out)}}],
    ]
    first = listed[2]
    assert isinstance(first["id"], str)
    assert {k: v for k, v in first.items() if k not in ("id", "_links", "_embedded")} == {
        "type": "outgoing_call",
        "entity_id": int(lead_id),
        "entity_type": "lead",
        "created_by": 4,
        "created_at": t0,
        "value_after": [{"note": {"id": int(out)}}],
        "value_before": [],
        "account_id": int(fake.account_id),
    }
    assert first["_links"]["self"]["href"].endswith(f"/api/v4/events/{first['id']}")
    assert "next" not in every.json()["_links"]

    def notes_of(params: list[tuple[str, Any]] | dict[str, Any]) -> list[int]:
        answer = get(fake, EVENTS, params)
        if answer.status_code == 204:
            assert answer.content == b""
            return []
        return [e["value_after"][0]["note"]["id"] for e in answer.json()["_embedded"]["events"]]

    assert notes_of({"filter[type]": "incoming_call"}) == [int(heard)]
    assert notes_of({"filter[type]": "outgoing_call,incoming_call", "filter[entity]": "lead"}) == [
        int(heard),
        int(out),
    ]
    assert notes_of([("filter[type][]", "outgoing_call"), ("filter[entity][]", "contact")]) == [
        int(on_contact)
    ]
    assert notes_of({"filter[created_at][from]": t0 + 60}) == [int(on_contact), int(heard)]
    assert notes_of({"filter[created_at][to]": t0 + 60}) == [int(heard), int(out)]
    assert notes_of({"filter[created_at]": t0 + 120}) == [int(on_contact)]
    assert notes_of({"filter[type]": "lead_added"}) == []

    paged = get(fake, EVENTS, {"limit": 2}).json()
    assert (
        "page=2" in paged["_links"]["next"]["href"] and "/api/v4/events?" in paged["_links"]["next"]["href"]
    )
    last = get(fake, EVENTS, {"limit": 2, "page": 2}).json()
    assert [e["value_after"][0]["note"]["id"] for e in last["_embedded"]["events"]] == [int(out)]
    assert "next" not in last["_links"]
    assert get(fake, EVENTS, {"limit": 2, "page": 3}).status_code == 204

    too_many = get(fake, EVENTS, {"limit": 101})
    assert too_many.status_code == 400 and too_many.headers["Content-Type"] == "application/problem+json"
    assert "100" in too_many.json()["detail"]
    assert get(fake, EVENTS, {"limit": 100}).status_code == 200
    assert get(fake, EVENTS, {"filter[created_at][from]": "yesterday"}).status_code == 400

    by_id = get(fake, NOTES, [("filter[id][]", out), ("filter[id][]", heard), ("filter[id][]", on_contact)])
    assert sorted(n["id"] for n in by_id.json()["_embedded"]["notes"]) == sorted([int(out), int(heard)])

    fake.fail_next(internal_error, when=lambda r: r.path == EVENTS)
    assert get(fake, EVENTS, {}).status_code == 500
    generous = fake.rate_limit
    fake.rate_limit = FixedWindow(1, 1000.0)
    try:
        statuses = [get(fake, EVENTS, {}).status_code for _ in range(2)]
    finally:
        fake.rate_limit = generous
    assert statuses == [200, 429]


def test_reset_forgets_the_feed(fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    fake.add_note(lead_id, "call_out")
    fake.add_contact_call()
    assert len(fake.call_events()) == 2
    fake.reset()
    assert fake.call_events() == [] and fake.contact_notes == {}
    assert get(fake, EVENTS, {}).status_code == 204
