"""AmoCrmAdapter against FakeAmoCrm over real HTTP on 127.0.0.1: batching, 204s, bulk
PATCH with partial rejection, retries on 429/502, persistent failures, paging, the rate
limit, and secrets kept out of errors."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
import requests

from crm_adapters.amocrm import AmoCrmAdapter, activity_from_note
from crm_adapters.base import CrmRateLimited, CrmRejected, CrmUnavailable, WebhookRequest
from leadwatch.config import AmoCrmConfig, SecretRef
from leadwatch.effects import SetCardFields
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.amocrm import (
    FakeAmoCrm,
    bad_gateway,
    internal_error,
    too_many_requests,
    too_many_requests_problem,
)
from leadwatch.testing.server import FixedWindow
from tests.integration.amocrm.helpers import (
    INTAKE,
    START,
    TOKEN,
    VERDICT,
    Clock,
    Sleeps,
    lead_ref,
    make_adapter,
)

pytestmark = pytest.mark.integration


def stamp_writes(ids: list[str], when: datetime = START) -> list[SetCardFields]:
    return [SetCardFields(f"intake:{i}", lead_ref(i), {INTAKE: when, VERDICT: "Yes"}) for i in ids]


def field_value(lead: dict, field_id: str) -> object:
    for entry in lead["custom_fields_values"] or []:
        if str(entry["field_id"]) == field_id:
            return entry["values"][0]["value"]
    return None


# ----------------------------------------------------------------------------- reads
def test_get_leads_reads_120_cards_in_one_call(fake: FakeAmoCrm) -> None:
    ids = [fake.create_lead(f"lead {n}", responsible_user_id=str(n % 3 + 1)) for n in range(120)]
    fake.change_status(ids[5], 70013)
    adapter = make_adapter(fake)
    fake.clear_log()
    missing = [lead_ref("999"), lead_ref("31999999")]
    cards = adapter.get_leads([lead_ref(i) for i in ids] + missing)
    assert len(fake.requests("/api/v4/leads", "GET")) == 1
    assert all(cards[m] is None for m in missing)
    assert {ref.id for ref, card in cards.items() if card is not None} == set(ids)
    card = cards[lead_ref(ids[5])]
    assert card is not None
    assert (card.stage, card.pipeline, card.title, card.created_at) == ("70013", "7001", "lead 5", START)
    assert card.responsible == "3"


def test_get_leads_splits_long_id_lists(fake: FakeAmoCrm) -> None:
    adapter = make_adapter(fake)
    wanted = [lead_ref(str(31_000_001 + n)) for n in range(600)]  # none exists: each call is a 204
    cards = adapter.get_leads(wanted)
    calls = fake.requests("/api/v4/leads", "GET")
    assert all(card is None for card in cards.values())
    assert len(calls) >= math.ceil(600 / 250)
    assert all(call.status == 204 for call in calls)
    assert all(sum(1 for k, _ in call.query if k == "filter[id][]") <= 250 for call in calls)
    assert sorted(int(v) for call in calls for k, v in call.query if k == "filter[id][]") == sorted(
        int(ref.id) for ref in wanted
    )


def test_get_leads_empty_result_is_a_204(fake: FakeAmoCrm) -> None:
    adapter = make_adapter(fake)
    assert adapter.get_leads([lead_ref("5"), EntityRef(EntityType.DEAL, "6")]) == {
        lead_ref("5"): None,
        EntityRef(EntityType.DEAL, "6"): None,
    }
    [call] = fake.requests("/api/v4/leads")
    assert call.status == 204
    assert adapter.get_leads([]) == {}


def test_get_activities_needs_no_call(fake: FakeAmoCrm) -> None:
    assert make_adapter(fake).get_activities(["1", "2"]) == {"1": None, "2": None}
    assert fake.requests() == []


# ----------------------------------------------------------------------------- writes
def test_set_fields_writes_120_cards_in_bulk(fake: FakeAmoCrm, clock: Clock) -> None:
    ids = [fake.create_lead(f"lead {n}") for n in range(120)]
    fake.outbox.clear()
    adapter = make_adapter(fake, bulk_size=50)
    clock.advance(60)
    result = adapter.set_fields(stamp_writes(ids))
    assert result.failed == {}
    assert result.succeeded == {f"intake:{i}" for i in ids}
    assert len(fake.requests("/api/v4/leads", "PATCH")) == math.ceil(120 / 50)
    for lead_id in ids:
        lead = fake.lead(lead_id)
        assert field_value(lead, INTAKE) == int(START.timestamp())
        assert field_value(lead, VERDICT) == "Yes"
        assert lead["updated_at"] == int(START.timestamp()) + 60  # our own write moves updated_at
    # As a real account does, our own REST writes come back as webhooks (after the answers): one
    # per card written.
    assert fake.outbox == [] and fake.flush_echoes() == 120
    assert len(fake.outbox) == 120 and all(body.startswith(b"leads%5Bupdate%5D") for body in fake.outbox)


def test_two_effects_on_one_card_share_one_item(fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    adapter = make_adapter(fake)
    result = adapter.set_fields(
        [
            SetCardFields("intake", lead_ref(lead_id), {INTAKE: START}),
            SetCardFields("verdict", lead_ref(lead_id), {VERDICT: "No"}),
        ]
    )
    assert result.succeeded == {"intake", "verdict"}
    [call] = fake.requests("/api/v4/leads", "PATCH")
    assert call.body.count(b'"id"') == 1
    assert field_value(fake.lead(lead_id), VERDICT) == "No"


def test_one_rejected_item_fails_alone(fake: FakeAmoCrm) -> None:
    ids = [fake.create_lead(f"lead {n}") for n in range(10)]
    adapter = make_adapter(fake)
    writes = stamp_writes(ids)
    writes.insert(3, SetCardFields("ghost", lead_ref("31999999"), {VERDICT: "Yes"}))
    writes.append(SetCardFields("bad-choice", lead_ref(ids[8]), {VERDICT: "Maybe"}))
    result = adapter.set_fields(writes)
    # ids[8]'s intake stamp and the bad choice were one item: amoCRM rejected both together
    assert set(result.failed) == {"ghost", "bad-choice", f"intake:{ids[8]}"}
    assert all(isinstance(e, CrmRejected) and not e.retryable for e in result.failed.values())
    assert "31999999" in str(result.failed["ghost"])
    assert "custom_fields_values.1.values.0.value" in str(result.failed["bad-choice"])
    # ids[8] had two effects: the intake stamp shared the rejected item
    assert result.succeeded == {f"intake:{i}" for i in ids if i != ids[8]}
    assert len(fake.requests("/api/v4/leads", "PATCH")) == 2  # the rejected bulk, then the rest once
    assert Counter(lead_id for _, lead_id in fake.applied) == {int(i): 1 for i in ids if i != ids[8]}


def test_invalid_writes_fail_before_any_call(fake: FakeAmoCrm) -> None:
    adapter = make_adapter(fake)
    result = adapter.set_fields(
        [
            SetCardFields("deal", EntityRef(EntityType.DEAL, "1"), {VERDICT: "Yes"}),
            SetCardFields("naive", lead_ref("1"), {INTAKE: datetime(2025, 1, 1)}),
        ]
    )
    assert set(result.failed) == {"deal", "naive"} and not result.succeeded
    assert "naive datetime" in str(result.failed["naive"])
    assert fake.requests() == []


def test_429_and_502_once_are_retried_nothing_lost_nothing_doubled(fake: FakeAmoCrm) -> None:
    ids = [fake.create_lead(f"lead {n}") for n in range(120)]
    sleeps = Sleeps()
    adapter = make_adapter(fake, sleep=sleeps)
    fake.fail_next(too_many_requests, when=lambda r: r.method == "PATCH")
    fake.fail_next(bad_gateway, when=lambda r: r.method == "PATCH")
    result = adapter.set_fields(stamp_writes(ids))
    assert result.failed == {} and len(result.succeeded) == 120
    assert [r.status for r in fake.requests("/api/v4/leads", "PATCH")] == [429, 502, 200, 200, 200]
    assert Counter(lead_id for _, lead_id in fake.applied) == {int(i): 1 for i in ids}
    assert len(sleeps.waits) == 2

    fake.fail_next(too_many_requests)
    cards = adapter.get_leads([lead_ref(i) for i in ids])
    assert all(card is not None for card in cards.values())


def test_problem_json_429_retry_after_is_respected(fake: FakeAmoCrm) -> None:
    """Kommo's documented 429 asks for 300 s: more than a call may wait, so it gives up at once
    (nothing sent early) and the work is left for the next run."""
    lead_id = fake.create_lead("x")
    sleeps = Sleeps()
    adapter = make_adapter(fake, sleep=sleeps)
    fake.fail_next(too_many_requests_problem)
    with pytest.raises(CrmRateLimited) as caught:
        adapter.get_leads([lead_ref(lead_id)])
    assert caught.value.retry_after == 300 and caught.value.retryable
    assert sleeps.waits == [] and len(fake.requests()) == 1
    fake.fail_next(too_many_requests_problem)
    result = adapter.set_fields(stamp_writes([lead_id]))
    assert isinstance(result.failed[f"intake:{lead_id}"], CrmRateLimited)


def test_persistent_500_fails_every_effect_without_raising(fake: FakeAmoCrm) -> None:
    ids = [fake.create_lead(f"lead {n}") for n in range(120)]
    adapter = make_adapter(fake)
    fake.fail_randomly(1.0, internal_error)
    result = adapter.set_fields(stamp_writes(ids))
    assert result.succeeded == set()
    assert set(result.failed) == {f"intake:{i}" for i in ids}
    assert all(isinstance(e, CrmUnavailable) and e.retryable for e in result.failed.values())
    # one chunk tried `attempts` times; the later chunks are left for the next run
    assert len(fake.requests("/api/v4/leads", "PATCH")) == 5
    assert fake.applied == []


def test_rate_limit_that_outlasts_the_retries_defers_the_rest(fake: FakeAmoCrm) -> None:
    ids = [fake.create_lead(f"lead {n}") for n in range(60)]
    adapter = make_adapter(fake, bulk_size=20)
    fake.fail_randomly(1.0, too_many_requests)
    result = adapter.set_fields(stamp_writes(ids))
    assert len(result.failed) == 60
    assert all(isinstance(e, CrmRateLimited) for e in result.failed.values())


# ----------------------------------------------------------------------------- listing
def test_list_changed_leads_walks_three_pages(fake: FakeAmoCrm, clock: Clock) -> None:
    ids = []
    for n in range(600):
        ids.append(fake.create_lead(f"lead {n}"))
        clock.advance(1)
    adapter = make_adapter(fake)
    since = START + timedelta(seconds=10)
    listed = list(adapter.list_changed_leads(since))
    assert [card.entity.id for card in listed] == ids[10:]
    assert [card.modified_at for card in listed] == sorted(card.modified_at for card in listed)
    calls = fake.requests("/api/v4/leads", "GET")
    assert len(calls) == 3
    assert all(
        ("order[updated_at]", "asc") in call.query and ("limit", "250") in call.query for call in calls
    )
    assert calls[0].query[0] == ("filter[updated_at][from]", str(int(since.timestamp())))


def test_list_changed_leads_with_one_timestamp_pages_by_number(fake: FakeAmoCrm) -> None:
    ids = {fake.create_lead(f"lead {n}") for n in range(600)}  # all in the same second
    listed = [card.entity.id for card in make_adapter(fake).list_changed_leads(START)]
    assert sorted(listed) == sorted(ids)
    assert len(fake.requests("/api/v4/leads", "GET")) == 3


def test_a_card_that_changes_while_listing_is_not_skipped(fake: FakeAmoCrm, clock: Clock) -> None:
    ids = []
    for n in range(300):
        ids.append(fake.create_lead(f"lead {n}"))
        clock.advance(1)
    listing = make_adapter(fake).list_changed_leads(START)
    first = next(listing)  # page one is read
    # A manager touches an early card: it moves to the end of the updated_at order, and plain
    # page 2 would now start one card later than it should.
    fake.update_lead(ids[0], name="touched")
    rest = [card.entity.id for card in listing]
    assert first.entity.id == ids[0]
    assert set(ids) <= {first.entity.id, *rest}
    assert len(rest) == len(set(rest))


def test_empty_listing(fake: FakeAmoCrm) -> None:
    assert list(make_adapter(fake).list_changed_leads(START)) == []
    [call] = fake.requests("/api/v4/leads")
    assert call.status == 204


# ----------------------------------------------------------------------------- the real limit
def test_the_rate_limit_hits_raw_requests_but_not_the_adapter(clock: Clock) -> None:
    server = FakeAmoCrm(token=TOKEN, rate_limit=5, rate_window=0.1, clock=clock).start()
    try:
        lead_ids = [server.create_lead(f"lead {n}") for n in range(5)]

        def hit(results: list[requests.Response]) -> None:
            results.append(
                requests.get(
                    server.url + "/api/v4/leads", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
                )
            )

        answers: list[requests.Response] = []
        threads = [threading.Thread(target=hit, args=(answers,)) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        limited = [a for a in answers if a.status_code == 429]
        assert limited, "20 requests at once must overflow 5 a window"
        assert all(a.headers["Content-Type"].startswith("text/plain") for a in limited)
        assert all("Retry-After" not in a.headers for a in limited)

        time.sleep(0.2)  # the next window
        server.clear_log()
        # One request a window less than the fake: it absorbs the network jitter between our
        # clock (when a request is granted) and the server's (when it lands).
        adapter = make_adapter(server, limit=4, period=0.1, real_sleep=True)
        for n in range(20):
            adapter.get_leads([lead_ref(lead_ids[n % 5])])
        statuses = [r.status for r in server.requests("/api/v4/leads")]
        assert len(statuses) == 20 and set(statuses) == {200}
    finally:
        server.stop()


# ----------------------------------------------------------------------------- auth and secrets
def test_bad_token_is_rejected_and_never_shown(fake: FakeAmoCrm) -> None:
    wrong = "wrong-token-Qq11"
    adapter = make_adapter(fake, token=wrong)
    with pytest.raises(CrmRejected) as caught:
        adapter.get_leads([lead_ref("1")])
    assert caught.value.status == 401 and not caught.value.retryable
    assert wrong not in str(caught.value) and TOKEN not in str(caught.value)
    assert len(fake.requests()) == 1  # a 401 is not retried
    result = adapter.set_fields(stamp_writes(["1"]))
    error = result.failed["intake:1"]
    assert isinstance(error, CrmRejected) and wrong not in str(error)


def test_secrets_are_resolved_lazily(fake: FakeAmoCrm) -> None:
    asked: list[str] = []
    config = AmoCrmConfig(
        kind="amocrm",
        base_url=fake.url,
        access_token=SecretRef(env="AMO_TOKEN"),
        hook_secret=SecretRef(env="AMO_HOOK"),
    )

    def resolve(ref: SecretRef) -> str:
        asked.append(ref.env or "")
        return {"AMO_TOKEN": TOKEN, "AMO_HOOK": "k"}[ref.env or ""]

    adapter = AmoCrmAdapter("acme-amo", config, resolve)
    assert asked == []
    assert adapter.card_url(lead_ref("31000001")) == f"{fake.url}/leads/detail/31000001"
    assert asked == []
    adapter.get_activities(["1"])
    assert asked == []
    adapter.get_leads([lead_ref("1")])
    assert asked == ["AMO_TOKEN"]


# ----------------------------------------------------------------------------- the fake's own wire
def test_fake_wire_details(fake: FakeAmoCrm) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    lead_id = fake.create_lead("x")
    one = requests.get(f"{fake.url}/api/v4/leads/{lead_id}", headers=auth, timeout=5)
    assert one.status_code == 200 and one.headers["Content-Type"] == "application/hal+json"
    assert one.json()["_embedded"] == {"tags": [], "companies": []}
    assert one.json()["custom_fields_values"] is None
    assert requests.get(f"{fake.url}/api/v4/leads/1", headers=auth, timeout=5).status_code == 204
    unauthorized = requests.get(f"{fake.url}/api/v4/leads", timeout=5)
    assert unauthorized.status_code == 401
    assert unauthorized.headers["Content-Type"] == "application/problem+json"
    assert unauthorized.json()["type"] == "https://httpstatus.es/401"
    assert requests.get(f"{fake.url}/api/v4/nothing", headers=auth, timeout=5).status_code == 404
    assert requests.delete(f"{fake.url}/api/v4/leads", headers=auth, timeout=5).status_code == 405
    too_many = [{"id": int(lead_id)}] * 251
    over = requests.patch(f"{fake.url}/api/v4/leads", json=too_many, headers=auth, timeout=5)
    assert over.status_code == 422 and over.json()["detail"] == "Limit 250 per page"
    pipelines = requests.get(f"{fake.url}/api/v4/leads/pipelines", headers=auth, timeout=5).json()
    statuses = [s["id"] for s in pipelines["_embedded"]["pipelines"][0]["_embedded"]["statuses"]]
    assert statuses == [70011, 70012, 70013, 142, 143]
    single = requests.patch(
        f"{fake.url}/api/v4/leads/{lead_id}", json={"status_id": 142}, headers=auth, timeout=5
    )
    assert single.status_code == 200 and fake.lead(lead_id)["closed_at"] is not None
    bad = requests.patch(
        f"{fake.url}/api/v4/leads",
        json=[{"id": int(lead_id), "custom_fields_values": [{"field_id": 1, "values": [{"value": "x"}]}]}],
        headers=auth,
        timeout=5,
    )
    assert bad.status_code == 400
    assert bad.json()["validation-errors"] == [
        {
            "request_id": "0",
            "errors": [
                {
                    "code": "NotSupportedChoice",
                    "path": "custom_fields_values.0.field_id",
                    "detail": "The value you selected is not a valid choice.",
                }
            ],
        }
    ]
    created = requests.post(f"{fake.url}/api/v4/leads", json=[{"name": "api"}], headers=auth, timeout=5)
    assert created.status_code == 200
    assert fake.lead(str(created.json()["_embedded"]["leads"][0]["id"]))["name"] == "api"


def test_rest_writes_emit_webhooks_unless_switched_off(fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    fake.outbox.clear()
    adapter = make_adapter(fake)
    assert not adapter.set_fields(stamp_writes([lead_id])).failed
    fake.flush_echoes()
    [body] = fake.outbox
    [event] = adapter.parse_webhook(WebhookRequest(body, {"key": "hook-secret"}))
    assert event.raw_event == "leads[update]"
    assert event.lead is not None and event.lead.fields[VERDICT] == "Yes"
    fake.emit_on_rest_writes = False
    assert not adapter.set_fields(stamp_writes([lead_id])).failed
    fake.flush_echoes()
    assert fake.outbox == [body]


# ----------------------------------------------------------------------------- activities on cards
def test_activities_on_120_cards_is_one_call_and_keeps_each_cards_own(fake: FakeAmoCrm, clock: Clock) -> None:
    ids = [fake.create_lead(f"lead {n}", responsible_user_id="7") for n in range(120)]
    clock.advance(90)
    out = fake.add_note(ids[0], "call_out", author="7")
    clock.advance(30)
    common = fake.add_note(ids[0], "common", author="8", text="called back")
    heard = fake.add_note(ids[5], "call_in", author="7")
    unasked = fake.create_lead("not asked")
    fake.add_note(unasked, "call_out")
    wanted = [lead_ref(i) for i in ids]
    fake.clear_log()

    found = make_adapter(fake).activities_on(wanted)

    [call] = fake.requests("/api/v4/leads/notes", "GET")
    assert len(fake.requests()) == 1
    assert call.status == 200
    assert sorted(int(v) for k, v in call.query if k == "filter[entity_id][]") == sorted(int(i) for i in ids)
    assert sorted(v for k, v in call.query if k == "filter[note_type][]") == ["call_in", "call_out", "common"]
    assert ("limit", "250") in call.query and ("page", "1") in call.query
    assert list(found) == wanted
    first = found[lead_ref(ids[0])]
    assert [(a.id, a.kind, a.direction, a.author) for a in first] == [
        (out, "call", "out", "7"),
        (common, "note", None, "8"),
    ]
    assert first[0].entity == lead_ref(ids[0])
    assert first[0].created_at == START + timedelta(seconds=90)
    assert first[1].created_at == START + timedelta(seconds=120)
    assert [(a.id, a.kind, a.direction) for a in found[lead_ref(ids[5])]] == [(heard, "call", "in")]
    assert all(found[lead_ref(i)] == [] for i in ids if i not in (ids[0], ids[5]))
    assert lead_ref(unasked) not in found


def test_activities_on_reads_the_same_activity_a_note_webhook_gives(fake: FakeAmoCrm, clock: Clock) -> None:
    lead_id = fake.create_lead("x", responsible_user_id="3")
    clock.advance(45)
    fake.outbox.clear()
    fake.add_note(lead_id, "call_in", author="3", params={"duration": 12})
    fake.add_note(lead_id, "common", author="4", text="hi")
    adapter = make_adapter(fake)
    hooked = [
        event.activity
        for body in fake.outbox
        for event in adapter.parse_webhook(WebhookRequest(body, {"key": "hook-secret"}))
    ]
    assert adapter.activities_on([lead_ref(lead_id)]) == {lead_ref(lead_id): hooked}


def test_activities_on_cards_without_notes_is_a_204(fake: FakeAmoCrm) -> None:
    ids = [fake.create_lead(f"lead {n}") for n in range(3)]
    adapter = make_adapter(fake)
    wanted = [lead_ref(i) for i in ids] + [lead_ref("31999999")]
    assert adapter.activities_on(wanted) == {ref: [] for ref in wanted}
    [call] = fake.requests()
    assert call.status == 204


def test_activities_on_pages_past_250_notes(fake: FakeAmoCrm) -> None:
    busy, quiet = fake.create_lead("busy"), fake.create_lead("quiet")
    many = [fake.add_note(busy, "common", text=str(n)) for n in range(260)]
    one = fake.add_note(quiet, "call_out")
    found = make_adapter(fake).activities_on([lead_ref(busy), lead_ref(quiet)])
    assert [a.id for a in found[lead_ref(busy)]] == many
    assert [a.id for a in found[lead_ref(quiet)]] == [one]
    calls = fake.requests("/api/v4/leads/notes")
    assert [dict(c.query)["page"] for c in calls] == ["1", "2"]


def test_activities_on_asks_nothing_for_cards_amocrm_cannot_have(fake: FakeAmoCrm) -> None:
    adapter = make_adapter(fake)
    odd = [EntityRef(EntityType.DEAL, "5"), lead_ref("x1")]
    assert adapter.activities_on(odd) == {ref: [] for ref in odd}
    assert adapter.activities_on([]) == {}
    assert fake.requests() == []


def test_activities_on_retries_a_5xx_once_and_raises_when_it_lasts(fake: FakeAmoCrm) -> None:
    lead_id = fake.create_lead("x")
    note = fake.add_note(lead_id, "call_out")
    sleeps = Sleeps()
    adapter = make_adapter(fake, sleep=sleeps)
    fake.fail_next(bad_gateway)
    found = adapter.activities_on([lead_ref(lead_id)])
    assert [a.id for a in found[lead_ref(lead_id)]] == [note]
    assert [r.status for r in fake.requests()] == [502, 200]
    assert len(sleeps.waits) == 1

    fake.fail_randomly(1.0, internal_error)
    with pytest.raises(CrmUnavailable):
        adapter.activities_on([lead_ref(lead_id)])


def test_a_note_read_back_maps_like_its_webhook() -> None:
    base = {"id": 5, "entity_id": 31000001, "note_type": "call_out", "created_at": 1761728400}
    by_user = activity_from_note({**base, "created_by": 12, "responsible_user_id": 7})
    assert by_user is not None and (by_user.author, by_user.kind, by_user.direction) == ("12", "call", "out")
    no_author = activity_from_note({**base, "created_by": None, "responsible_user_id": 7})
    assert no_author is not None and no_author.author == "7"
    robot = activity_from_note({**base, "created_by": 0, "responsible_user_id": 7})
    assert robot is not None and robot.author == "0"  # a robot's note is not the manager's work
    assert activity_from_note({**base, "note_type": "service_message"}) is None
    assert activity_from_note({**base, "note_type": "sms_in"}) is None
    assert activity_from_note({**base, "created_at": None}) is None


def test_fake_notes_route(fake: FakeAmoCrm) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{fake.url}/api/v4/leads/notes"
    lead_id = fake.create_lead("x", responsible_user_id="9")
    common = fake.add_note(lead_id, "common", author="4", text="hello")
    out = fake.add_note(lead_id, "call_out", author="4", params={"duration": 30, "phone": "+7900"})
    assert requests.get(url, timeout=5).status_code == 401
    only = requests.get(url, params={"filter[note_type]": "call_out"}, headers=auth, timeout=5)
    assert only.status_code == 200 and only.headers["Content-Type"] == "application/hal+json"
    [note] = only.json()["_embedded"]["notes"]
    assert note == {
        "id": int(out),
        "entity_id": int(lead_id),
        "created_by": 4,
        "updated_by": 4,
        "created_at": int(START.timestamp()),
        "updated_at": int(START.timestamp()),
        "responsible_user_id": 9,
        "group_id": 0,
        "note_type": "call_out",
        "params": {"duration": 30, "phone": "+7900"},
        "account_id": int(fake.account_id),
        "_links": {"self": {"href": f"{fake.account_url}/api/v4/leads/{lead_id}/notes/{out}"}},
    }
    newest = requests.get(url, params={"order[id]": "desc", "limit": 1}, headers=auth, timeout=5).json()
    assert [n["id"] for n in newest["_embedded"]["notes"]] == [int(out)]
    assert (
        "page=2" in newest["_links"]["next"]["href"]
        and "/api/v4/leads/notes?" in newest["_links"]["next"]["href"]
    )
    second = requests.get(url, params={"order[id]": "desc", "limit": 1, "page": 2}, headers=auth, timeout=5)
    assert [n["id"] for n in second.json()["_embedded"]["notes"]] == [int(common)]
    assert "next" not in second.json()["_links"]
    nothing = requests.get(url, params={"filter[entity_id][]": "1"}, headers=auth, timeout=5)
    assert nothing.status_code == 204 and nothing.content == b""
    bad = requests.get(url, params={"filter[entity_id][]": "x"}, headers=auth, timeout=5)
    assert bad.status_code == 400
    generous = fake.rate_limit
    fake.rate_limit = FixedWindow(1, 1000.0)
    try:
        statuses = [requests.get(url, headers=auth, timeout=5).status_code for _ in range(2)]
    finally:
        fake.rate_limit = generous
    assert statuses == [200, 429]
