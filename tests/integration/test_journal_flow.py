"""The violation journal end to end, on each CRM: a late lead (timeliness) and an improper
rejection (dialing) reach the journal through webhooks, the worker and the sweep; then the read
API's `GET /tenants/{tenant}/violations` answers them with every filter, as JSON and as CSV,
refuses what is wrong with a 400 and a missing key with a 401, and asks the CRM nothing.
moto's server and the fake CRM and Telegram servers over HTTP; names from the CRM (the tenant
files have none), as the worker and the sweep cached them."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest

from leadwatch.events import EntityRef, EntityType
from leadwatch.testing.stack import (
    AMO_TENANT,
    B24_TENANT,
    AmoDriver,
    BitrixDriver,
    CrmDriver,
    LocalStack,
    SimClock,
)

pytestmark = pytest.mark.integration

MSK = ZoneInfo("Europe/Moscow")
TUESDAY_10 = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)
TRICKY_NAME = 'Петрова, Анна "Аня"'
TITLE = 'Кухня, "под ключ"; ёлка'


@pytest.fixture(scope="module")
def stack():
    managers = {"7": TRICKY_NAME, "8": "Ivan Orlov"}
    with LocalStack(SimClock(TUESDAY_10), managers=managers, tenant_managers=False) as running:
        yield running


@pytest.fixture(params=[B24_TENANT, AMO_TENANT])
def crm(request, stack) -> CrmDriver:
    stack.clock.set(TUESDAY_10)
    for fake in (stack.bitrix, stack.amo, stack.telegram):
        fake.clear_faults()
        fake.clear_log()
    return BitrixDriver(stack.bitrix) if request.param == B24_TENANT else AmoDriver(stack.amo)


def fake_of(stack: LocalStack, crm: CrmDriver) -> Any:
    return stack.bitrix if crm.tenant == B24_TENANT else stack.amo


def get(stack: LocalStack, tenant: str, query: str = "", key: str | None = "right") -> Any:
    headers = {} if key is None else {"X-Api-Key": stack.api_key(tenant) if key == "right" else key}
    return stack.client.http.get(f"/tenants/{tenant}/violations{query}", headers=headers)


def answer(stack: LocalStack, tenant: str, query: str = "") -> dict:
    response = get(stack, tenant, query)
    assert response.status_code == 200, response.body
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.body)


def ids(stack: LocalStack, tenant: str, query: str) -> list[tuple[str, str]]:
    return [(v["type"], v["card"]) for v in answer(stack, tenant, query)["violations"]]


def test_a_late_lead_and_an_improper_rejection_through_the_api(stack, crm):
    t0 = TUESDAY_10
    late = crm.create(TITLE, "8", t0)  # nobody takes it
    rejected = crm.create("Окна", "7", t0)
    stack.pump()
    crm.take(rejected, "7", t0 + timedelta(minutes=3))
    for n in range(2):
        moment = t0 + timedelta(minutes=5 + n)
        stack.clock.set(moment)
        crm.call(rejected, "7", moment, 0)
    stack.pump()
    stack.clock.set(t0 + timedelta(minutes=16))
    stack.settle()  # the late verdict, its alert (names read from the CRM and cached) and its row
    stack.clock.set(t0 + timedelta(minutes=30))
    crm.reject(rejected, "7", stack.clock())
    stack.pump()  # 2 attempts of the 15 required: an improper rejection

    fake = fake_of(stack, crm)
    fake.clear_log()
    adapter = stack.ctx.adapter(stack.ctx.tenant(crm.tenant))
    late_card, rejected_card = EntityRef(EntityType.LEAD, late), EntityRef(EntityType.LEAD, rejected)

    body = answer(stack, crm.tenant)  # the default: the seven days ending today
    assert (body["tenant"], body["from"], body["to"], body["time_zone"]) == (
        crm.tenant,
        "2025-11-05",
        "2025-11-11",
        "Europe/Moscow",
    )
    assert body["count"] == 2 and body["by_type"] == {"improper_rejection": 1, "late_first_processing": 1}
    first, second = body["violations"]
    assert {k: first[k] for k in ("type", "tenant", "card", "manager", "manager_name", "when", "link")} == {
        "type": "late_first_processing",
        "tenant": crm.tenant,
        "card": late_card.key,
        "manager": "8",
        "manager_name": "Ivan Orlov",
        "when": "2025-11-11T10:15:00+03:00",  # its control time, in the tenant's zone
        "link": adapter.card_url(late_card),
    }
    assert first["details"]["title"] == TITLE
    assert (second["type"], second["card"], second["manager_name"]) == (
        "improper_rejection",
        rejected_card.key,
        TRICKY_NAME,
    )
    assert second["when"] == "2025-11-11T10:30:00+03:00" and second["details"]["attempts"] == 2
    assert second["link"] == adapter.card_url(rejected_card)

    late_row, rejection_row = (
        ("late_first_processing", late_card.key),
        ("improper_rejection", rejected_card.key),
    )
    assert ids(stack, crm.tenant, "?type=late_first_processing") == [late_row]
    assert ids(stack, crm.tenant, "?type=improper_rejection&type=gave_up") == [rejection_row]
    assert ids(stack, crm.tenant, "?type=improper_rejection,late_first_processing") == [
        late_row,
        rejection_row,
    ]
    assert ids(stack, crm.tenant, "?manager=7") == [rejection_row]
    assert ids(stack, crm.tenant, "?manager=8&type=late_first_processing") == [late_row]
    assert ids(stack, crm.tenant, "?manager=8&type=improper_rejection") == []
    assert ids(stack, crm.tenant, "?from=2025-11-11&to=2025-11-11") == [late_row, rejection_row]
    assert ids(stack, crm.tenant, "?from=2025-11-01&to=2025-11-10") == []
    assert ids(stack, crm.tenant, "?to=2025-11-17") == [late_row, rejection_row]  # the week up to Monday
    assert ids(stack, crm.tenant, "?manager=&type=&format=json") == [late_row, rejection_row]  # blank form

    response = get(stack, crm.tenant, "?format=csv&manager=7")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="violations-{crm.tenant}-2025-11-05-2025-11-11.csv"'
    )
    data = response.body
    assert data.startswith(b"\xef\xbb\xbf")
    header, row = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    assert header == ["when", "type", "card", "card_link", "manager_id", "manager_name", "details"]
    assert row[:6] == [
        "2025-11-11T10:30:00+03:00",
        "improper_rejection",
        rejected_card.key,
        adapter.card_url(rejected_card),
        "7",
        TRICKY_NAME,
    ]
    assert json.loads(row[6])["title"] == "Окна"
    both = get(stack, crm.tenant, "?format=csv&sep=semicolon").body.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(both, newline=""), delimiter=";"))
    assert len(rows) == 3 and json.loads(rows[1][6])["title"] == TITLE

    # Names came from the store as the worker cached them, links from the configuration: the
    # read API asked the CRM nothing.
    assert fake.log == []


@pytest.mark.parametrize("tenant", [B24_TENANT, AMO_TENANT])
def test_the_journal_route_refuses_clearly(stack, tenant):
    for key in (None, "", "wrong", stack.api_key(AMO_TENANT if tenant == B24_TENANT else B24_TENANT)):
        response = get(stack, tenant, "?type=late_first_processing", key=key)
        assert response.status_code == 401, key
        assert "X-Api-Key" in json.loads(response.body)["error"]
    assert get(stack, "nobody", key="x").status_code == 404
    for query, message in (
        ("?from=2025-02-30", "'from' must be a date like 2025-11-05, got '2025-02-30'"),
        ("?to=11.11.2025", "'to' must be a date like"),
        ("?from=2025-11-12&to=2025-11-11", "'from' (2025-11-12) is after 'to' (2025-11-11)"),
        ("?from=2020-01-01&to=2025-11-11", "at most 366 days"),
        ("?type=late", "unknown violation type 'late'; known types: gave_up, improper_rejection,"),
        ("?type=late_first_processing&type=" + "x" * 300, "unknown violation type 'xxxx"),
        ("?manager=" + quote("7\n"), "'manager' must be a CRM user id"),
        ("?format=xml", "'format' must be json or csv, got 'xml'"),
        ("?format=csv&sep=pipe", "'sep' must be comma, semicolon or tab"),
    ):
        response = get(stack, tenant, query)
        assert response.status_code == 400, (query, response.body)
        error = json.loads(response.body)["error"]
        assert message in error and len(error) < 400, (query, error)
