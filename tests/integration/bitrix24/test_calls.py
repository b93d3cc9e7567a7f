"""Phone calls through Bitrix24Adapter against FakeBitrix24 over real HTTP: call activities,
ONVOXIMPLANTCALLEND, voximplant.statistic.get and crm.activity.list reconciliation, and the
fake portal's telephony wire behaviour."""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlencode

import pytest

from crm_adapters.base import CrmRateLimited, CrmUnavailable, WebhookRequest
from leadwatch.events import Call, EventKind
from leadwatch.testing.bitrix24 import FakeBitrix24, internal_error, query_limit_exceeded
from tests.integration.bitrix24.helpers import CODE, T0, TOKEN, Clock, Sleeps, deal, lead, make_adapter, rest

pytestmark = pytest.mark.integration

RECORD = "https://acme.bitrix24.ru/disk/downloadFile/{n}/?&ncc=1&filename=call{n}.mp3"


def sent(fake: FakeBitrix24, method: str) -> list[dict]:
    """The JSON bodies of the plain (non-batch) calls of `method`, in order."""
    return [json.loads(r.body) for r in fake.requests(f"/{method}.json")]


# ----------------------------------------------------------------------------- call activities
def test_get_activities_gives_a_call_activity_its_call(fake: FakeBitrix24) -> None:
    card = fake.create_lead("dialed")
    telephony = fake.add_call(
        card,
        user_id="12",
        started_at=T0 + timedelta(minutes=5),
        duration=75,
        record_url=RECORD.format(n=1),
    )
    by_hand = fake.add_activity(
        card, type_id=2, direction=1, responsible_id="4", created_at=T0 + timedelta(minutes=9), duration=30
    )
    mail = fake.add_activity(card, type_id=4)
    fake.clear_log()

    found = make_adapter(fake).get_activities([telephony["activity_id"], by_hand, mail])

    assert len(fake.requests("/batch")) == 1
    made = found[telephony["activity_id"]]
    assert made is not None and made.kind == "call" and made.direction == "out"
    assert made.call == Call(
        key=f"act{telephony['activity_id']}",
        entity=lead(card),
        direction="out",
        manager="12",
        started_at=T0 + timedelta(minutes=5),
        duration=75,
        answered=None,  # an activity does not say; the statistics do
        record_url=None,
        activity_id=telephony["activity_id"],
        source="activity",
    )
    logged = found[by_hand]
    assert logged is not None and logged.call is not None
    assert (logged.call.key, logged.call.direction, logged.call.manager, logged.call.duration) == (
        f"act{by_hand}",
        "in",
        "4",
        30,
    )
    assert logged.call.started_at == T0 + timedelta(minutes=9)
    assert found[mail] is not None and found[mail].call is None  # type: ignore[union-attr]

    # activities_on (one card: a plain list call with the select) carries the same calls.
    on_card = make_adapter(fake).activities_on([lead(card)])[lead(card)]
    assert [a.call for a in on_card] == [made.call, logged.call, None]
    [listing] = sent(fake, "crm.activity.list")
    assert {"START_TIME", "END_TIME", "DIRECTION"} <= set(listing["select"])


def test_every_path_gives_a_call_the_same_key(fake: FakeBitrix24, clock: Clock) -> None:
    card = fake.create_lead()
    clock.set(T0 + timedelta(minutes=3))
    made = fake.add_call(card, user_id="8", started_at=T0 + timedelta(minutes=1), duration=64, call_type=2)
    adapter = make_adapter(fake)
    activity_added, call_end = fake.outbox[-2:]

    [added] = adapter.parse_webhook(WebhookRequest(activity_added, {}))
    [ended] = adapter.parse_webhook(WebhookRequest(call_end, {}))
    assert added.kind is EventKind.ACTIVITY_ADDED and ended.kind is EventKind.CALL_ENDED
    assert added.activity_id == ended.activity_id == made["activity_id"]
    activity = adapter.get_activities([ended.activity_id or ""])[made["activity_id"]]
    [listed] = list(adapter.list_calls(T0))

    assert activity is not None and activity.call is not None and ended.call is not None
    assert ended.call.key == activity.call.key == listed.key == f"act{made['activity_id']}"
    # Each path tells what it knows: only the activity and the listing name the card.
    assert (ended.call.entity, activity.call.entity, listed.entity) == (None, lead(card), lead(card))
    assert (ended.call.duration, activity.call.duration, listed.duration) == (64, 64, 64)
    assert (ended.call.answered, activity.call.answered, listed.answered) == (True, None, True)
    assert ended.call.direction == activity.call.direction == listed.direction == "in"


# ----------------------------------------------------------------------------- list_calls
def test_list_calls_reads_statistics_and_activity_only_calls_across_pages(fake: FakeBitrix24) -> None:
    since = T0 + timedelta(hours=1)
    cards = [fake.create_lead(f"L{n}") for n in range(40)]
    a_deal = fake.create_deal("D")
    # Before `since`: left out on both paths.
    fake.add_call(cards[0], user_id="1", started_at=since - timedelta(seconds=1), duration=10)
    fake.add_activity(cards[0], type_id=2, created_at=since - timedelta(minutes=5))
    expected: dict[str, Call] = {}
    for n in range(120):
        start = since + timedelta(minutes=n)
        code = "200" if n % 3 else "486"
        url = RECORD.format(n=n) if n % 2 == 0 else None
        made = fake.add_call(
            cards[n % 40],
            user_id=str(n % 7 + 1),
            started_at=start,
            duration=n * 3 if code == "200" else 0,
            failed_code=code,
            call_type=2 if n % 5 == 0 else 1,
            record_url=url,
        )
        expected[f"act{made['activity_id']}"] = Call(
            key=f"act{made['activity_id']}",
            entity=lead(cards[n % 40]),
            direction="in" if n % 5 == 0 else "out",
            manager=str(n % 7 + 1),
            started_at=start,
            duration=n * 3 if code == "200" else 0,
            answered=code == "200",
            record_url=url if code == "200" else None,
            activity_id=made["activity_id"],
            source="statistic",
        )
    late = since + timedelta(hours=3)
    for n in range(3):  # telephony calls no CRM activity was made for
        made = fake.add_call(
            cards[n], user_id="2", started_at=late + timedelta(minutes=n), duration=5, activity=False
        )
        assert made["activity_id"] is None
        expected[f"vox{made['call_id']}"] = Call(
            key=f"vox{made['call_id']}",
            entity=lead(cards[n]),
            direction="out",
            manager="2",
            started_at=late + timedelta(minutes=n),
            duration=5,
            answered=True,
            activity_id=None,
            source="statistic",
        )
    for n in range(3):  # call activities logged by hand: no statistics row
        ident = fake.add_activity(
            cards[n],
            type_id=2,
            direction=1,
            responsible_id="5",
            created_at=late + timedelta(minutes=10 + n),
            duration=20,
        )
        expected[f"act{ident}"] = Call(
            key=f"act{ident}",
            entity=lead(cards[n]),
            direction="in",
            manager="5",
            started_at=late + timedelta(minutes=10 + n),
            duration=20,
            answered=None,
            activity_id=ident,
            source="activity",
        )
    on_deal = fake.add_call(a_deal, user_id="9", started_at=late, duration=33, entity_type="DEAL")
    expected[f"act{on_deal['activity_id']}"] = Call(
        key=f"act{on_deal['activity_id']}",
        entity=deal(a_deal),
        direction="out",
        manager="9",
        started_at=late,
        duration=33,
        answered=True,
        activity_id=on_deal["activity_id"],
        source="statistic",
    )
    # Never counted: calls on contacts, robocalls (their activity included), e-mails.
    for n in range(5):
        fake.add_call(cards[n], user_id="3", started_at=late, duration=40, entity_type="CONTACT")
    robocalls = [
        fake.add_call(cards[n], user_id="3", started_at=late, duration=12, call_type=5) for n in range(4)
    ]
    fake.add_activity(cards[0], type_id=4, created_at=late)
    fake.clear_log()

    calls = list(make_adapter(fake).list_calls(since))

    assert Counter(c.key for c in calls).most_common(1)[0][1] == 1  # each call once
    assert {c.key: c for c in calls} == expected
    assert not {f"act{r['activity_id']}" for r in robocalls} & {c.key for c in calls}
    recorded = [c for c in calls if c.record_url]
    assert len(recorded) == 40 and all(c.record_url == RECORD.format(n=int(c.duration / 3)) for c in recorded)
    # Statistics first (oldest first), then what only the activities know.
    assert [c.source for c in calls] == ["statistic"] * 124 + ["activity"] * 3
    starts = [c.started_at for c in calls[:124]]
    assert starts == sorted(starts)

    statistic = sent(fake, "voximplant.statistic.get")
    # 120 + 3 + 1 deal + 5 contact + 4 robocalls at or after `since`: three pages of 50.
    assert [page["start"] for page in statistic] == [0, 50, 100]
    assert statistic[0] == {
        "FILTER": {">=CALL_START_DATE": since.isoformat()},
        "SORT": "CALL_START_DATE",
        "ORDER": "ASC",
        "start": 0,
    }
    activities = sent(fake, "crm.activity.list")
    # Lead calls: 120 + 4 robocalls + 3 by hand = 127 -> 3 pages; deal calls: 1 page.
    assert [(p["filter"]["OWNER_TYPE_ID"], p["start"]) for p in activities] == [
        (1, 0),
        (1, 50),
        (1, 100),
        (2, 0),
    ]
    assert all(
        p["filter"]["TYPE_ID"] == 2 and p["filter"][">=START_TIME"] == since.isoformat() for p in activities
    )
    assert all({"START_TIME", "END_TIME", "DIRECTION"} <= set(p["select"]) for p in activities)

    # Without deals configured, the deal's call is not read at all.
    lead_only = {c.key for c in make_adapter(fake, entities=("lead",)).list_calls(since)}
    assert lead_only == set(expected) - {f"act{on_deal['activity_id']}"}


def test_list_calls_yields_a_row_shifted_by_offset_paging_once(fake: FakeBitrix24) -> None:
    card = fake.create_lead()
    for n in range(60):
        fake.add_call(card, user_id="1", started_at=T0 + timedelta(minutes=n), duration=n)
    stream = make_adapter(fake).list_calls(T0)
    first_page = [next(stream) for _ in range(50)]

    # A call that started early but ended (and was logged) now lands inside the pages already
    # read: every later row moves one place, so the next page starts with one already seen.
    late_logged = fake.add_call(card, user_id="2", started_at=T0 + timedelta(seconds=30), duration=7)
    rest_of_it = list(stream)

    keys = [c.key for c in first_page + rest_of_it]
    assert len(keys) == len(set(keys)) == 61
    # The statistics pages missed it; the activity listing (ID order) still finds it.
    [found] = [c for c in rest_of_it if c.key == f"act{late_logged['activity_id']}"]
    assert (found.source, found.duration, found.entity) == ("activity", 7, lead(card))
    assert [json.loads(r.body)["start"] for r in fake.requests("voximplant.statistic.get")] == [0, 50]


def test_list_calls_with_nothing_since_and_a_naive_since(fake: FakeBitrix24) -> None:
    card = fake.create_lead()
    fake.add_call(card, user_id="1", started_at=T0, duration=5)
    adapter = make_adapter(fake)
    assert list(adapter.list_calls(T0 + timedelta(seconds=1))) == []
    assert len(fake.requests()) == 3  # statistics, lead activities, deal activities: one page each
    with pytest.raises(ValueError, match="aware"):
        list(adapter.list_calls(datetime(2026, 1, 1)))


# ----------------------------------------------------------------------------- limits and errors
def test_list_calls_stays_under_the_portals_leaky_bucket(clock: Clock) -> None:
    with FakeBitrix24(webhook_code=CODE, rate=10.0, burst=3, clock=clock) as small:
        card = small.create_lead()
        for n in range(260):
            small.add_call(card, user_id="1", started_at=T0 + timedelta(seconds=n), duration=1, emit=False)
        adapter = make_adapter(small, sleep=time.sleep, rate=10.0, burst=3)

        calls = list(adapter.list_calls(T0))

        statuses = [r.status for r in small.requests()]
        # 6 statistics pages, 6 lead activity pages, 1 deal page; not one QUERY_LIMIT_EXCEEDED.
        assert statuses == [200] * 13
        assert len(calls) == len({c.key for c in calls}) == 260
        assert all(c.source == "statistic" for c in calls)


def test_the_fakes_bucket_refuses_a_raw_burst_of_statistics_calls(clock: Clock) -> None:
    with FakeBitrix24(webhook_code=CODE, rate=1.0, burst=3, clock=clock) as small:
        answers = [rest(small, "voximplant.statistic.get", json={}) for _ in range(8)]
    refused = [a for a in answers if a.status_code == 503]
    assert len(refused) >= 4
    assert refused[0].json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}


def test_list_calls_retries_a_refused_page_and_loses_nothing(fake: FakeBitrix24) -> None:
    card = fake.create_lead()
    for n in range(70):
        fake.add_call(card, user_id="1", started_at=T0 + timedelta(minutes=n), duration=1)
    fake.fail_next(query_limit_exceeded, when=lambda r: r.path.endswith("voximplant.statistic.get.json"))
    fake.fail_next(internal_error, when=lambda r: r.path.endswith("crm.activity.list.json"))
    sleeps = Sleeps()

    calls = list(make_adapter(fake, sleep=sleeps).list_calls(T0))

    assert len(calls) == len({c.key for c in calls}) == 70
    assert [r.status for r in fake.requests("voximplant.statistic.get")] == [503, 200, 200]
    assert [r.status for r in fake.requests("crm.activity.list")] == [500, 200, 200, 200]
    assert len(sleeps.waits) == 2


@pytest.mark.parametrize(
    ("fault", "error"), [(query_limit_exceeded, CrmRateLimited), (internal_error, CrmUnavailable)]
)
def test_list_calls_raises_a_crm_error_when_the_portal_stays_down(
    fake: FakeBitrix24, fault: object, error: type[Exception]
) -> None:
    fake.add_call(fake.create_lead(), user_id="1", started_at=T0, duration=1)
    fake.fail_randomly(1.0, fault)  # type: ignore[arg-type]
    with pytest.raises(error) as caught:
        list(make_adapter(fake).list_calls(T0))
    assert caught.value.retryable  # type: ignore[attr-defined]
    assert CODE not in str(caught.value)


# ----------------------------------------------------------------------------- the fake portal itself
def test_fake_add_call_records_activity_statistics_and_two_events(fake: FakeBitrix24, clock: Clock) -> None:
    card = fake.create_lead()
    clock.set(T0 + timedelta(minutes=2))
    start = T0 + timedelta(seconds=30)
    answered = fake.add_call(card, user_id="5", started_at=start, duration=61, record_url=RECORD.format(n=1))
    missed = fake.add_call(
        card, user_id="5", started_at=start, duration=0, failed_code="304", call_type=3, record_url="ignored"
    )

    activity = fake.activity(answered["activity_id"])
    assert {
        k: activity[k] for k in ("TYPE_ID", "DIRECTION", "OWNER_TYPE_ID", "OWNER_ID", "RESPONSIBLE_ID")
    } == {
        "TYPE_ID": "2",
        "DIRECTION": "2",
        "OWNER_TYPE_ID": "1",
        "OWNER_ID": card,
        "RESPONSIBLE_ID": "5",
    }
    assert (activity["START_TIME"], activity["END_TIME"]) == (
        "2026-11-23T09:00:30+03:00",
        "2026-11-23T09:01:31+03:00",
    )
    assert (activity["PROVIDER_ID"], activity["COMPLETED"]) == ("VOXIMPLANT_CALL", "Y")
    assert activity["ORIGIN_ID"] == f"VI_{answered['call_id']}"
    assert fake.activity(missed["activity_id"])["DIRECTION"] == "1"

    row = fake.call_statistic(answered["call_id"])
    assert answered["call_id"].startswith("externalCall.") and answered["call_id"].endswith(
        f".{int(start.timestamp())}"
    )
    assert (row["ID"], row["CALL_DURATION"], row["CALL_START_DATE"]) == (
        answered["statistic_id"],
        "61",
        "2026-11-23T09:00:30+03:00",
    )
    assert (row["CRM_ENTITY_TYPE"], row["CRM_ENTITY_ID"], row["CRM_ACTIVITY_ID"]) == (
        "LEAD",
        card,
        answered["activity_id"],
    )
    assert (row["CALL_RECORD_URL"], row["CALL_FAILED_CODE"], row["CALL_TYPE"]) == (
        RECORD.format(n=1),
        "200",
        "1",
    )
    assert isinstance(row["RECORD_FILE_ID"], int)
    unanswered = fake.call_statistic(missed["call_id"])
    assert (unanswered["CALL_RECORD_URL"], unanswered["RECORD_FILE_ID"]) == (None, None)
    assert (unanswered["CALL_FAILED_CODE"], unanswered["CALL_FAILED_REASON"]) == ("304", "Missed call")

    events = [parse_qs(b.decode()) for b in fake.outbox[1:]]
    assert [e["event"][0] for e in events] == ["ONCRMACTIVITYADD", "ONVOXIMPLANTCALLEND"] * 2
    assert events[0]["data[FIELDS][ID]"] == [answered["activity_id"]]
    call_end = events[1]
    assert not [k for k in call_end if k.startswith("data[FIELDS]")]  # flat data
    assert call_end["data[CALL_ID]"] == [answered["call_id"]]
    assert call_end["data[CRM_ACTIVITY_ID]"] == [answered["activity_id"]]
    assert call_end["data[CALL_START_DATE]"] == ["2026-11-23T09:00:30+03:00"]
    assert call_end["data[CALL_DURATION]"] == ["61"] and call_end["data[PORTAL_USER_ID]"] == ["5"]
    assert call_end["auth[application_token]"] == [TOKEN]
    assert "data[CALL_RECORD_URL]" not in call_end and "data[CRM_ENTITY_ID]" not in call_end

    quiet = fake.add_call(card, user_id="5", started_at=start, duration=1, activity=False, emit=False)
    assert len(fake.outbox) == 5 and quiet["activity_id"] is None
    assert "data[CRM_ACTIVITY_ID]" not in parse_qs(quiet["events"][0].decode())


def test_fake_statistic_get_filters_sorts_and_pages_also_in_a_batch(fake: FakeBitrix24) -> None:
    card, other = fake.create_lead(), fake.create_lead()
    made = [
        fake.add_call(
            card if n % 2 else other, user_id=str(n % 3 + 1), started_at=T0 + timedelta(minutes=n), duration=n
        )
        for n in range(55)
    ]
    fake.add_call(card, user_id="1", started_at=T0 + timedelta(hours=2), duration=1, entity_type="CONTACT")

    everything = rest(
        fake, "voximplant.statistic.get", json={"SORT": "CALL_START_DATE", "ORDER": "DESC"}
    ).json()
    assert everything["total"] == 56 and everything["next"] == 50 and len(everything["result"]) == 50
    assert everything["result"][0]["CRM_ENTITY_TYPE"] == "CONTACT"
    tail = rest(
        fake, "voximplant.statistic.get", json={"SORT": "CALL_START_DATE", "ORDER": "DESC", "start": 50}
    ).json()
    assert len(tail["result"]) == 6 and "next" not in tail
    assert tail["result"][-1]["CALL_ID"] == made[0]["call_id"]

    window = {
        "FILTER": {
            ">=CALL_START_DATE": (T0 + timedelta(minutes=10)).isoformat(),
            "<=CALL_START_DATE": "2026-11-23T09:20:00+03:00",  # T0 + 20 min in the portal's zone
            "CRM_ENTITY_TYPE": "LEAD",
            "CRM_ENTITY_ID": card,
            "PORTAL_USER_ID": "2",
        },
        "SORT": "CALL_START_DATE",
        "ORDER": "ASC",
    }
    rows = rest(fake, "voximplant.statistic.get", json=window).json()["result"]
    # card holds the odd minutes, user 2 the minutes n % 3 == 1: 13 and 19.
    assert [r["CALL_DURATION"] for r in rows] == ["13", "19"]

    one = urlencode({"FILTER[CALL_ID]": made[7]["call_id"]})
    paged = urlencode({"FILTER[CRM_ENTITY_TYPE]": "LEAD", "SORT": "ID", "ORDER": "ASC", "start": "50"})
    batch = rest(
        fake,
        "batch",
        json={"cmd": {"one": f"voximplant.statistic.get?{one}", "page": f"voximplant.statistic.get?{paged}"}},
    ).json()["result"]
    assert [r["CRM_ACTIVITY_ID"] for r in batch["result"]["one"]] == [made[7]["activity_id"]]
    assert [r["CALL_ID"] for r in batch["result"]["page"]] == [m["call_id"] for m in made[50:]]
    assert batch["result_total"] == {"one": 1, "page": 55} and batch["result_error"] == []


def test_fake_activity_list_filters_calls_by_type_owner_and_start(fake: FakeBitrix24) -> None:
    card, other = fake.create_lead(), fake.create_lead()
    early = fake.add_activity(card, type_id=2, created_at=T0)
    wanted = fake.add_call(card, user_id="1", started_at=T0 + timedelta(hours=1), duration=9)["activity_id"]
    fake.add_activity(card, type_id=4, created_at=T0 + timedelta(hours=1))  # an e-mail
    fake.add_call(other, user_id="1", started_at=T0 + timedelta(hours=1), duration=9)
    fake.add_call(card, user_id="1", started_at=T0 + timedelta(hours=1), duration=9, entity_type="CONTACT")
    query = urlencode(
        {
            "filter[TYPE_ID]": "2",
            "filter[OWNER_TYPE_ID]": "1",
            "filter[OWNER_ID]": card,
            "filter[>=START_TIME]": "2026-11-23T09:30:00+03:00",
            "select[0]": "ID",
            "select[1]": "START_TIME",
            "select[2]": "END_TIME",
            "select[3]": "DIRECTION",
        }
    )
    answer = rest(fake, f"crm.activity.list?{query}", http="GET").json()
    assert answer["result"] == [
        {
            "ID": wanted,
            "START_TIME": "2026-11-23T10:00:00+03:00",
            "END_TIME": "2026-11-23T10:00:09+03:00",
            "DIRECTION": "2",
        }
    ]
    got = rest(fake, "crm.activity.get", json={"id": early}).json()["result"]
    assert (got["START_TIME"], got["END_TIME"], got["DIRECTION"]) == (
        "2026-11-23T09:00:00+03:00",
        "2026-11-23T09:00:00+03:00",
        "2",
    )


def test_fake_reset_forgets_the_call_log(fake: FakeBitrix24) -> None:
    made = fake.add_call(fake.create_lead(), user_id="1", started_at=T0, duration=1)
    fake.reset()
    assert rest(fake, "voximplant.statistic.get", json={}).json()["result"] == []
    with pytest.raises(KeyError):
        fake.call_statistic(made["call_id"])
