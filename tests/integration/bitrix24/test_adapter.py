"""Bitrix24Adapter against FakeBitrix24 over real HTTP: batching, retries, the leaky bucket,
errors, and the fake portal's own wire behaviour."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from crm_adapters.base import CrmRateLimited, CrmRejected, CrmUnavailable
from crm_adapters.http import RetryPolicy
from leadwatch.effects import SetCardFields
from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.bitrix24 import (
    FakeBitrix24,
    internal_error,
    operation_time_limit,
    query_limit_exceeded,
    slow,
)
from tests.integration.bitrix24.helpers import CODE, T0, TOKEN, Clock, Sleeps, deal, lead, make_adapter, rest

pytestmark = pytest.mark.integration


def batch_commands(fake: FakeBitrix24) -> list[int]:
    """How many commands each logged batch request carried."""
    return [len(json.loads(r.body)["cmd"]) for r in fake.requests("/batch")]


# ----------------------------------------------------------------------------- reads
def test_get_leads_for_120_cards_takes_3_batch_calls_and_maps_cards(fake: FakeBitrix24, clock: Clock) -> None:
    ids = [
        fake.create_lead(f"Lead {n}", assigned_by_id=str(n % 3 + 1), UF_CRM_INTAKE="x") for n in range(119)
    ]
    clock.set(T0 + timedelta(minutes=5))
    fake.update_lead(ids[0], STATUS_ID="IN_PROCESS")
    wanted = [lead(i) for i in ids] + [lead("9999")]
    fake.clear_log()

    cards = make_adapter(fake).get_leads(wanted)

    assert len(fake.requests()) == 3
    assert batch_commands(fake) == [50, 50, 20]
    assert cards[lead("9999")] is None
    first = cards[lead(ids[0])]
    assert first is not None
    assert first.stage == "IN_PROCESS"
    assert first.responsible == "1"
    assert first.title == "Lead 0"
    assert first.created_at == T0 and first.created_at.tzinfo is not None
    assert first.modified_at == first.stage_changed_at == T0 + timedelta(minutes=5)
    assert first.fields == {"UF_CRM_INTAKE": "x"}
    assert first.pipeline is None
    assert all(cards[lead(i)] is not None for i in ids)


def test_one_card_uses_the_plain_method_and_deals_map_stage_and_pipeline(fake: FakeBitrix24) -> None:
    ident = fake.create_deal(
        "Big deal", assigned_by_id="7", stage_id="PREPARATION", category_id="3", UF_CRM_5="Y"
    )
    fake.clear_log()
    adapter = make_adapter(fake)

    cards = adapter.get_leads([EntityRef(EntityType.DEAL, ident)])
    missing = adapter.get_leads([EntityRef(EntityType.DEAL, "404")])

    assert [r.path for r in fake.requests()] == ["/rest/1/" + CODE + "/crm.deal.get.json"] * 2
    card = cards[EntityRef(EntityType.DEAL, ident)]
    assert card is not None
    assert (card.stage, card.pipeline, card.responsible) == ("PREPARATION", "3", "7")
    assert card.fields == {"UF_CRM_5": "Y"}
    assert missing == {EntityRef(EntityType.DEAL, "404"): None}


def test_get_activities_maps_kind_owner_direction_and_skips_contacts(
    fake: FakeBitrix24, clock: Clock
) -> None:
    card = fake.create_lead("With calls")
    deal = fake.create_deal("D")
    call = fake.add_activity(card, type_id=2, direction=1, responsible_id="4", completed=False)
    mail = fake.add_activity(deal, owner_type_id=2, type_id=4, direction=2)
    other = fake.add_activity(card, type_id=6)
    contact = fake.add_activity("3", owner_type_id=3)

    found = make_adapter(fake).get_activities([call, mail, other, contact, "777"])

    assert len(fake.requests("/batch")) == 1
    first = found[call]
    assert first is not None
    assert (first.entity, first.kind, first.direction, first.author, first.completed) == (
        lead(card),
        "call",
        "in",
        "4",
        False,
    )
    assert first.created_at == T0
    # A call planned for later (not completed) is no attempt: it carries no call.
    assert first.call is None
    done = fake.add_activity(card, type_id=2, direction=1, responsible_id="4")
    first = make_adapter(fake).get_activities([done])[done]
    assert first is not None and first.completed
    call = done
    # A call activity carries its call, keyed by the activity as every other path keys it.
    assert first.call is not None
    assert (first.call.key, first.call.entity, first.call.direction, first.call.manager) == (
        f"act{call}",
        lead(card),
        "in",
        "4",
    )
    assert (first.call.started_at, first.call.duration, first.call.source) == (T0, 0, "activity")
    second = found[mail]
    assert second is not None
    assert (second.entity, second.kind, second.direction, second.completed) == (
        EntityRef(EntityType.DEAL, deal),
        "email",
        "out",
        True,
    )
    assert second.call is None
    assert found[other] is not None and found[other].kind == "other"  # type: ignore[union-attr]
    assert found[contact] is None
    assert found["777"] is None


def test_list_changed_leads_follows_next_over_3_pages(fake: FakeBitrix24, clock: Clock) -> None:
    for n in range(130):
        fake.create_lead(f"L{n}", created_at=T0 + timedelta(minutes=n))
    # Touch an old card: it now belongs at the end of the listing.
    clock.set(T0 + timedelta(hours=5))
    fake.update_lead("1", STATUS_ID="JUNK")
    since = T0 + timedelta(minutes=11)
    fake.clear_log()

    snapshots = list(make_adapter(fake, entities=("lead",)).list_changed_leads(since))

    listing = fake.requests("crm.lead.list")
    assert len(listing) == len(fake.requests()) == 3
    assert [json.loads(r.body)["start"] for r in listing] == [0, 50, 100]
    assert len(snapshots) == 120
    assert [s.entity.id for s in snapshots][:2] == ["12", "13"]
    assert snapshots[-1].entity == lead("1") and snapshots[-1].stage == "JUNK"
    modified = [s.modified_at for s in snapshots]
    assert all(m is not None and m >= since for m in modified)
    assert modified == sorted(modified)  # type: ignore[type-var]
    sent = json.loads(listing[0].body)
    assert sent["filter"] == {">=DATE_MODIFY": since.isoformat()}
    assert sent["order"]["DATE_MODIFY"] == "ASC"
    assert "UF_*" in sent["select"]


def test_list_changed_leads_merges_deals_in_change_order(fake: FakeBitrix24) -> None:
    fake.create_lead("a", created_at=T0 + timedelta(minutes=1))
    fake.create_deal("b", created_at=T0 + timedelta(minutes=2))
    fake.create_lead("c", created_at=T0 + timedelta(minutes=3))

    snapshots = list(make_adapter(fake).list_changed_leads(T0))

    assert [s.entity.key for s in snapshots] == ["lead:1", "deal:1", "lead:2"]
    assert [s.title for s in snapshots] == ["a", "b", "c"]


# ----------------------------------------------------------------------------- writes
def writes_for(ids: list[str], **fields: Any) -> list[SetCardFields]:
    return [SetCardFields(f"eff-{i}", lead(i), dict(fields)) for i in ids]


def test_set_fields_for_120_cards_takes_3_batch_calls(fake: FakeBitrix24) -> None:
    ids = [fake.create_lead(f"L{n}") for n in range(120)]
    intake = datetime(2026, 11, 23, 9, 15, tzinfo=UTC)
    fake.clear_log()

    result = make_adapter(fake).set_fields(
        writes_for(ids, UF_CRM_INTAKE=intake, UF_CRM_ON_TIME=True, UF_CRM_N=3)
    )

    assert batch_commands(fake) == [50, 50, 20]
    assert len(fake.requests()) == 3
    assert result.succeeded == {f"eff-{i}" for i in ids} and result.failed == {}
    card = fake.lead(ids[77])
    assert card["UF_CRM_INTAKE"] == "2026-11-23T09:15:00+00:00"
    assert card["UF_CRM_ON_TIME"] == "Y"
    assert card["UF_CRM_N"] == "3"
    # The wire command: one PHP-style query string per card, `+` of the offset escaped.
    command = json.loads(fake.requests("/batch")[0].body)["cmd"]["w0"]
    method, _, query = command.partition("?")
    assert method == "crm.lead.update"
    assert parse_qs(query)["fields[UF_CRM_INTAKE]"] == ["2026-11-23T09:15:00+00:00"]
    # As a real portal does, our own REST writes come back as events, after the answers: the
    # 120 adds (made through the Python API) came at once, the 120 updates now.
    assert fake.flush_echoes() == 120
    kinds = [parse_qs(body.decode())["event"][0] for body in fake.outbox]
    assert kinds == ["ONCRMLEADADD"] * 120 + ["ONCRMLEADUPDATE"] * 120


def test_a_per_command_error_fails_only_that_effect(fake: FakeBitrix24) -> None:
    ids = [fake.create_lead() for _ in range(3)]
    writes = [*writes_for(ids, UF_CRM_X="1"), SetCardFields("eff-missing", lead("5000"), {"UF_CRM_X": "1"})]

    result = make_adapter(fake).set_fields(writes)

    assert result.succeeded == {f"eff-{i}" for i in ids}
    assert set(result.failed) == {"eff-missing"}
    error = result.failed["eff-missing"]
    assert isinstance(error, CrmRejected) and not error.retryable
    assert "Not found" in str(error)
    assert len(fake.requests()) == 1


def test_writes_that_cannot_be_sent_fail_locally(fake: FakeBitrix24) -> None:
    ident = fake.create_lead()
    writes = [
        SetCardFields("naive", lead(ident), {"UF_CRM_T": datetime(2026, 1, 1, 9, 0)}),
        SetCardFields("bad-id", lead("x1"), {"UF_CRM_T": "1"}),
        SetCardFields("empty", lead(ident), {}),
    ]
    result = make_adapter(fake).set_fields(writes)
    assert set(result.failed) == {"naive", "bad-id"}
    assert result.succeeded == {"empty"}
    assert fake.requests() == []


def test_rate_limit_and_server_error_once_are_retried_nothing_lost_nothing_doubled(
    fake: FakeBitrix24,
) -> None:
    ids = [fake.create_lead() for _ in range(120)]
    fake.fail_next(query_limit_exceeded)
    fake.fail_next(internal_error)
    sleeps = Sleeps()

    result = make_adapter(fake, sleep=sleeps).set_fields(writes_for(ids, UF_CRM_X="done"))

    assert result.failed == {} and len(result.succeeded) == 120
    assert [r.status for r in fake.requests()] == [503, 500, 200, 200, 200]
    assert sorted(fake.applied, key=lambda a: int(a[1])) == [("crm.lead.update", i) for i in ids]
    assert all(fake.lead(i)["UF_CRM_X"] == "done" for i in ids)
    assert len(sleeps.waits) == 2  # two backoffs, no real waiting


def test_operation_time_limit_waits_until_operating_reset_at(fake: FakeBitrix24) -> None:
    ident = fake.create_lead()
    fake.fail_next(operation_time_limit)
    sleeps = Sleeps()

    cards = make_adapter(fake, sleep=sleeps).get_leads([lead(ident)])

    assert cards[lead(ident)] is not None
    assert [r.status for r in fake.requests()] == [429, 200]
    # operating_reset_at is ~2 s after the portal's time.start (whole seconds, as the real one).
    assert len(sleeps.waits) == 1 and 1.0 < sleeps.waits[0] <= 2.0


def test_a_persistent_server_error_fails_the_chunk_without_raising(fake: FakeBitrix24) -> None:
    ids = [fake.create_lead() for _ in range(120)]
    fake.fail_randomly(1.0, internal_error)

    result = make_adapter(fake).set_fields(writes_for(ids, UF_CRM_X="done"))

    assert result.succeeded == set()
    assert set(result.failed) == {f"eff-{i}" for i in ids}
    assert all(isinstance(e, CrmUnavailable) and e.retryable for e in result.failed.values())
    # The first chunk used every attempt; later chunks were not sent into a failing portal.
    assert len(fake.requests()) == RetryPolicy().attempts
    assert fake.applied == []


def test_reads_raise_after_retries_are_exhausted(fake: FakeBitrix24) -> None:
    fake.fail_randomly(1.0, query_limit_exceeded)
    with pytest.raises(CrmRateLimited):
        make_adapter(fake).get_leads([lead("1"), lead("2")])


# ----------------------------------------------------------------------------- limits & auth
def test_the_leaky_bucket_refuses_a_raw_burst_but_not_the_adapters_paced_calls(clock: Clock) -> None:
    with FakeBitrix24(webhook_code=CODE, rate=50.0, burst=5, clock=clock) as raw_portal:
        raw_portal.create_lead()
        with requests.Session() as session:
            answers = [
                session.get(f"{raw_portal.url}/rest/1/{CODE}/crm.lead.get.json", params={"id": 1}, timeout=5)
                for _ in range(60)
            ]
        refused = [a for a in answers if a.status_code == 503]
        assert len(refused) > 10
        assert refused[0].json() == {
            "error": "QUERY_LIMIT_EXCEEDED",
            "error_description": "Too many requests",
        }

    with FakeBitrix24(webhook_code=CODE, rate=50.0, burst=5, clock=clock) as paced_portal:
        ident = paced_portal.create_lead()
        adapter = make_adapter(paced_portal, sleep=time.sleep, rate=50.0, burst=5)
        started = time.monotonic()
        for _ in range(60):
            adapter.get_leads([lead(ident)])
        assert [r.status for r in paced_portal.requests()] == [200] * 60
        assert time.monotonic() - started < 5


def test_wrong_webhook_code_is_rejected_without_leaking_it(fake: FakeBitrix24) -> None:
    wrong = "wrong-code-Pp90"
    ident = fake.create_lead()
    adapter = make_adapter(fake, code=wrong)

    with pytest.raises(CrmRejected) as caught:
        adapter.get_leads([lead(ident)])
    assert caught.value.status == 401 and not caught.value.retryable
    assert "NO_AUTH_FOUND" in str(caught.value)
    assert wrong not in str(caught.value)

    result = adapter.set_fields(writes_for([ident, ident], UF_CRM_X="1"))
    assert all(isinstance(e, CrmRejected) and wrong not in str(e) for e in result.failed.values())
    assert len(fake.requests()) == 2  # not retried


def test_connection_failure_message_redacts_the_code() -> None:
    portal = FakeBitrix24(webhook_code=CODE).start()
    adapter = make_adapter(portal)
    portal.stop()  # nothing listens on that port any more
    with pytest.raises(CrmUnavailable) as caught:
        adapter.get_leads([lead("1")])
    assert CODE not in str(caught.value)


def test_card_url(fake: FakeBitrix24) -> None:
    adapter = make_adapter(fake)
    assert adapter.card_url(lead("42")) == f"{fake.url}/crm/lead/details/42/"
    assert adapter.card_url(EntityRef(EntityType.DEAL, "7")) == f"{fake.url}/crm/deal/details/7/"


# ----------------------------------------------------------------------------- the fake portal itself
def test_fake_get_with_php_style_query_and_filter_prefixes(fake: FakeBitrix24) -> None:
    for n in range(4):
        fake.create_lead(
            f"L{n}",
            assigned_by_id=str(n),
            status_id="JUNK" if n == 2 else "NEW",
            created_at=T0 + timedelta(hours=n),
        )
    answer = rest(
        fake,
        "crm.lead.list.json",
        http="GET",
        params=[
            ("filter[>=DATE_CREATE]", "2026-11-23T10:00:00+03:00"),  # = T0 + 1h
            ("filter[@STATUS_ID][]", "NEW"),
            ("filter[@STATUS_ID][]", "IN_PROCESS"),
            ("order[ID]", "DESC"),
            ("select[]", "ID"),
            ("select[]", "STATUS_ID"),
        ],
    ).json()
    assert answer["result"] == [{"ID": "4", "STATUS_ID": "NEW"}, {"ID": "2", "STATUS_ID": "NEW"}]
    assert answer["total"] == 2 and "next" not in answer
    assert set(answer["time"]) == {
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    }
    form = rest(fake, "crm.lead.get", data={"ID": "3"}).json()["result"]
    assert form["ASSIGNED_BY_ID"] == "2" and form["DATE_CREATE"] == "2026-11-23T11:00:00+03:00"
    assert form["DATE_CLOSED"] == "2026-11-23T11:00:00+03:00"  # JUNK is a final stage


def test_fake_update_moves_dates_and_emits_its_events(fake: FakeBitrix24, clock: Clock) -> None:
    ident = fake.create_lead("x")
    clock.set(T0 + timedelta(minutes=10))
    assert (
        rest(fake, "crm.lead.update", json={"id": ident, "fields": {"TITLE": "y"}}).json()["result"] is True
    )
    fake.flush_echoes()  # the portal's event queue sends the update's event
    card = fake.lead(ident)
    assert (
        card["DATE_MODIFY"] == "2026-11-23T09:10:00+03:00"
        and card["MOVED_TIME"] == "2026-11-23T09:00:00+03:00"
    )
    clock.set(T0 + timedelta(minutes=20))
    fake.update_lead(ident, status_id="IN_PROCESS")
    assert fake.lead(ident)["MOVED_TIME"] == "2026-11-23T09:20:00+03:00"
    events = [parse_qs(b.decode()) for b in fake.outbox]
    # The REST update echoes as a real portal's does, then the Python API's change.
    assert [(e["event"][0], e["data[FIELDS][ID]"][0]) for e in events] == [
        ("ONCRMLEADADD", ident),
        ("ONCRMLEADUPDATE", ident),
        ("ONCRMLEADUPDATE", ident),
    ]
    assert events[1]["ts"] == [str(int((T0 + timedelta(minutes=10)).timestamp()))]
    assert events[2]["ts"] == [str(int((T0 + timedelta(minutes=20)).timestamp()))]
    assert events[2]["auth[application_token]"] == [TOKEN]


def test_fake_emits_on_rest_writes_unless_switched_off(clock: Clock) -> None:
    delivered: list[bytes] = []
    with FakeBitrix24(webhook_code=CODE, clock=clock) as portal:
        portal.deliver = delivered.append
        new_id = rest(portal, "crm.lead.add", json={"fields": {"TITLE": "t"}}).json()["result"]
        rest(portal, "batch", json={"cmd": {"u": f"crm.lead.update?id={new_id}&fields[TITLE]=u"}})
        assert delivered == []  # sent after the answers, not inside the requests
        portal.emit_on_rest_writes = False
        rest(portal, "crm.lead.update", json={"id": new_id, "fields": {"TITLE": "v"}})
        portal.flush_echoes()
    assert [parse_qs(b.decode())["event"][0] for b in delivered] == ["ONCRMLEADADD", "ONCRMLEADUPDATE"]


def test_fake_batch_shapes_and_limits(fake: FakeBitrix24) -> None:
    fake.create_lead()
    ok = rest(fake, "batch", json={"halt": 0, "cmd": {"a": "crm.lead.get?id=1"}}).json()["result"]
    assert ok["result_error"] == [] and ok["result_next"] == [] and ok["result_total"] == []
    listed = rest(fake, "batch", json={"cmd": {"l": "crm.status.list?filter[ENTITY_ID]=STATUS"}}).json()[
        "result"
    ]
    assert [s["STATUS_ID"] for s in listed["result"]["l"]] == [
        "NEW",
        "IN_PROCESS",
        "PROCESSED",
        "JUNK",
        "CONVERTED",
    ]
    assert listed["result_total"] == {"l": 5}
    mixed = rest(
        fake,
        "batch",
        json={
            "halt": 0,
            "cmd": {"n": "batch?cmd[x]=crm.lead.get", "m": "crm.nope", "g": "crm.lead.get?id=1"},
        },
    )
    assert mixed.status_code == 200
    errors = mixed.json()["result"]["result_error"]
    assert errors["n"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"
    assert errors["m"]["error"] == "ERROR_METHOD_NOT_FOUND"
    halted = rest(fake, "batch", json={"halt": 1, "cmd": {"m": "crm.nope", "g": "crm.lead.get?id=1"}}).json()
    assert halted["result"]["result"] == []
    too_many = rest(fake, "batch", json={"cmd": {f"c{n}": "crm.lead.get?id=1" for n in range(51)}})
    assert too_many.status_code == 400 and too_many.json()["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"
    unknown = rest(fake, "crm.lead.nope.json", json={})
    assert unknown.status_code == 404 and unknown.json()["error"] == "ERROR_METHOD_NOT_FOUND"
    missing = rest(fake, "crm.lead.update", json={"id": 99, "fields": {"TITLE": "x"}})
    assert missing.status_code == 400 and missing.json() == {"error": "", "error_description": "Not found"}


def test_fake_slow_fault_performs_the_call_and_answers_late(fake: FakeBitrix24) -> None:
    ident = fake.create_lead()
    fake.fail_next(slow(0.5))
    with pytest.raises(requests.Timeout):
        rest(fake, "crm.lead.update", json={"id": ident, "fields": {"UF_CRM_X": "1"}}, timeout=0.1)
    # The client gave up, but the portal did the write: exactly what makes retries need idempotency.
    assert fake.lead(ident)["UF_CRM_X"] == "1"


# ----------------------------------------------------------------------------- activities on cards
def activity_commands(fake: FakeBitrix24) -> list[dict[str, list[str]]]:
    """Every crm.activity.list command sent inside a batch, as its parsed query."""
    found = []
    for request in fake.requests("/batch"):
        for command in json.loads(request.body)["cmd"].values():
            method, _, query = command.partition("?")
            assert method == "crm.activity.list"
            found.append(parse_qs(query))
    return found


def test_activities_on_120_cards_takes_3_batch_calls_and_keeps_each_cards_own(
    fake: FakeBitrix24, clock: Clock
) -> None:
    ids = [fake.create_lead(f"L{n}") for n in range(119)]
    deal_id = fake.create_deal("D")  # deal 1: the same number as lead 1
    clock.set(T0 + timedelta(minutes=3))
    call = fake.add_activity(ids[0], type_id=2, direction=1, responsible_id="4")
    mail = fake.add_activity(ids[0], type_id=4, direction=2, responsible_id="4", completed=False)
    on_deal = fake.add_activity(deal_id, owner_type_id=2, type_id=1, responsible_id="9")
    fake.add_activity(ids[0], owner_type_id=3)  # a contact with lead 1's number
    unasked = fake.create_lead("not asked")
    fake.add_activity(unasked, type_id=2)
    wanted = [lead(i) for i in ids] + [deal(deal_id)]
    fake.clear_log()

    found = make_adapter(fake).activities_on(wanted)

    assert len(fake.requests()) == math.ceil(120 / 50) == 3
    assert batch_commands(fake) == [50, 50, 20]
    assert list(found) == wanted
    first = found[lead(ids[0])]
    assert [a.id for a in first] == [call, mail]
    assert (first[0].kind, first[0].direction, first[0].author, first[0].entity) == (
        "call",
        "in",
        "4",
        lead("1"),
    )
    assert first[0].created_at == T0 + timedelta(minutes=3) and first[0].completed
    assert (first[1].kind, first[1].direction, first[1].completed) == ("email", "out", False)
    [meeting] = found[deal(deal_id)]
    assert (meeting.id, meeting.entity, meeting.kind, meeting.author) == (on_deal, deal("1"), "meeting", "9")
    assert all(found[lead(i)] == [] for i in ids[1:])
    assert lead(unasked) not in found
    # The wire commands: owner type 1 for leads, 2 for deals, ordered by ID, only what is mapped.
    commands = activity_commands(fake)
    assert commands[0]["filter[OWNER_TYPE_ID]"] == ["1"] and commands[0]["filter[OWNER_ID]"] == [ids[0]]
    assert commands[-1]["filter[OWNER_TYPE_ID]"] == ["2"] and commands[-1]["filter[OWNER_ID]"] == [deal_id]
    assert commands[0]["order[ID]"] == ["ASC"]
    selected = {v for k, vs in commands[0].items() if k.startswith("select[") for v in vs}
    assert {"ID", "OWNER_ID", "OWNER_TYPE_ID", "TYPE_ID", "RESPONSIBLE_ID", "CREATED"} <= selected
    # A call's Call is made from its time span and direction: they must be selected too.
    assert {"START_TIME", "END_TIME", "DIRECTION"} <= selected
    assert "DESCRIPTION" not in selected


def test_fake_activity_list_filters_on_owner_type_and_owner_id(fake: FakeBitrix24) -> None:
    """The adapter also drops rows of other cards, so check the fake's filter on its own."""
    ident = fake.create_lead()
    fake.create_deal()
    mine = fake.add_activity(ident)
    fake.add_activity(ident, owner_type_id=2)  # deal 1
    fake.add_activity(ident, owner_type_id=3)  # contact 1
    fake.add_activity(fake.create_lead())
    query = "filter[OWNER_TYPE_ID]=1&filter[OWNER_ID]=1&order[ID]=ASC&select[]=ID&select[]=OWNER_ID"
    answer = rest(fake, "batch", json={"cmd": {"a": f"crm.activity.list?{query}"}}).json()["result"]
    assert answer["result"]["a"] == [{"ID": mine, "OWNER_ID": ident}]
    assert answer["result_total"] == {"a": 1} and answer["result_next"] == []


def test_activities_on_a_busy_card_fetches_past_the_first_page(fake: FakeBitrix24) -> None:
    busy, quiet = fake.create_lead("busy"), fake.create_lead("quiet")
    many = [fake.add_activity(busy, type_id=2) for _ in range(120)]
    few = [fake.add_activity(quiet, type_id=4) for _ in range(2)]
    fake.clear_log()

    found = make_adapter(fake).activities_on([lead(busy), lead(quiet)])

    assert [a.id for a in found[lead(busy)]] == many
    assert [a.id for a in found[lead(quiet)]] == few
    assert len(fake.requests("/batch")) == 1
    pages = fake.requests("crm.activity.list")
    assert [json.loads(r.body)["start"] for r in pages] == [50, 100]
    assert all(json.loads(r.body)["filter"] == {"OWNER_TYPE_ID": 1, "OWNER_ID": busy} for r in pages)


def test_activities_on_one_card_no_card_or_bad_ids(fake: FakeBitrix24) -> None:
    ident = fake.create_lead()
    note = fake.add_activity(ident, type_id=6)
    adapter = make_adapter(fake)

    assert adapter.activities_on([]) == {}
    assert adapter.activities_on([lead("x1"), lead("0")]) == {lead("x1"): [], lead("0"): []}
    assert fake.requests() == []
    found = adapter.activities_on([lead(ident), lead("x1")])
    assert [(a.id, a.kind) for a in found[lead(ident)]] == [(note, "other")]
    assert found[lead("x1")] == []
    [plain] = fake.requests()
    assert plain.path.endswith("/crm.activity.list.json")
    assert adapter.activities_on([lead("404"), deal("404")]) == {lead("404"): [], deal("404"): []}


def test_activities_on_retries_a_5xx_once_and_raises_when_the_portal_stays_down(
    fake: FakeBitrix24,
) -> None:
    ids = [fake.create_lead() for _ in range(3)]
    done = fake.add_activity(ids[1], type_id=2)
    fake.fail_next(internal_error)
    sleeps = Sleeps()

    found = make_adapter(fake, sleep=sleeps).activities_on([lead(i) for i in ids])

    assert [r.status for r in fake.requests()] == [500, 200]
    assert [a.id for a in found[lead(ids[1])]] == [done]
    assert found[lead(ids[0])] == found[lead(ids[2])] == []
    assert len(sleeps.waits) == 1

    fake.fail_randomly(1.0, internal_error)
    with pytest.raises(CrmUnavailable):
        make_adapter(fake).activities_on([lead(i) for i in ids])
