"""Names from a Bitrix24 portal: users (user.get, paged) and stages (lead statuses, deal categories
and their stages), read by Bitrix24Adapter from FakeBitrix24 over HTTP, and the fake's own wire."""

from __future__ import annotations

import json

import pytest

from crm_adapters.base import CrmRejected, CrmUnavailable, StageName
from crm_adapters.http import RetryPolicy
from leadwatch.testing.bitrix24 import FakeBitrix24, internal_error
from tests.integration.bitrix24.helpers import make_adapter, rest

pytestmark = pytest.mark.integration


def methods(fake: FakeBitrix24) -> list[str]:
    """Each logged request as its method, a batch as `batch:<its commands' methods>`."""
    found = []
    for request in fake.requests():
        method = request.path.rsplit("/", 1)[-1].removesuffix(".json")
        if method == "batch":
            commands = json.loads(request.body)["cmd"].values()
            method += ":" + ",".join(sorted({c.partition("?")[0] for c in commands}))
        found.append(method)
    return found


def test_120_users_come_in_one_call_and_one_batch_active_ones_first(fake: FakeBitrix24) -> None:
    fake.set_users({str(n): f"Name{n} Last{n}" for n in range(1, 121)})
    fake.add_user(7, "Fired", "Person", active=False)
    fake.add_user(200, "", "", email="nobody@example.com")
    fake.add_user(201, "", "")  # no name at all: left out
    fake.add_user(202, "O'Brien", "& <Sons>")
    fake.clear_log()

    users = make_adapter(fake).list_users()

    assert methods(fake) == ["user.get", "batch:user.get"]
    assert len(users) == 122
    assert users["1"] == "Name1 Last1" and users["120"] == "Name120 Last120"
    assert users["200"] == "nobody@example.com"
    assert users["202"] == "O'Brien & <Sons>"  # as the CRM has it: escaping is the renderer's
    assert "201" not in users
    assert list(users)[-1] == "7" and users["7"] == "Fired Person"  # who left comes last


def test_a_portal_of_a_few_users_is_one_call(fake: FakeBitrix24) -> None:
    fake.clear_log()
    assert make_adapter(fake).list_users() == {"1": "Portal Admin"}
    assert methods(fake) == ["user.get"]


def test_a_webhook_without_a_user_scope_is_refused(fake: FakeBitrix24) -> None:
    fake.user_scope = False
    answer = rest(fake, "user.get", json={})
    assert answer.status_code == 403 and answer.json()["error"] == "insufficient_scope"
    with pytest.raises(CrmRejected, match="insufficient_scope"):
        make_adapter(fake).list_users()


def test_stages_of_leads_and_of_every_deal_category(fake: FakeBitrix24) -> None:
    fake.rename_stage("STATUS", "NEW", "Не разобран & <новый>")
    fake.add_deal_category(1, "Опт")
    fake.add_deal_category(3, "Retail <b>", [("NEW", "Fresh"), ("WON", "Sold")])
    fake.clear_log()

    stages = make_adapter(fake).list_stages()

    assert methods(fake) == [
        "batch:crm.category.list,crm.status.list",
        "batch:crm.status.list",
    ]
    assert stages["lead:NEW"] == StageName("Не разобран & <новый>")
    assert stages["lead:IN_PROCESS"] == StageName("In progress")
    assert stages["deal:NEW"] == StageName("New", "General")
    assert stages["deal:PREPARATION"] == StageName("Preparing documents", "General")
    assert stages["deal:C1:WON"] == StageName("Deal won", "Опт")
    assert stages["deal:C3:NEW"] == StageName("Fresh", "Retail <b>")
    assert len(stages) == 5 + 7 + 7 + 2


def test_a_portal_of_one_funnel_gives_its_stages_in_one_request(fake: FakeBitrix24) -> None:
    fake.clear_log()
    stages = make_adapter(fake).list_stages()
    assert methods(fake) == ["batch:crm.category.list,crm.status.list"]
    assert {key for key in stages if key.startswith("deal:")} == {
        f"deal:{code}"
        for code in ("NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE", "WON", "LOSE")
    }


def test_leads_only_read_no_deal_stages(fake: FakeBitrix24) -> None:
    fake.clear_log()
    stages = make_adapter(fake, entities=("lead",)).list_stages()
    assert set(stages) == {f"lead:{s}" for s in ("NEW", "IN_PROCESS", "PROCESSED", "JUNK", "CONVERTED")}
    assert methods(fake) == ["batch:crm.status.list"]


def test_a_failing_portal_raises(fake: FakeBitrix24) -> None:
    fake.fail_next(internal_error, times=10)
    with pytest.raises(CrmUnavailable):
        make_adapter(fake, policy=RetryPolicy(attempts=2, base_delay=0.0)).list_stages()


def test_fake_category_and_user_lists_speak_the_documented_shapes(fake: FakeBitrix24) -> None:
    fake.add_deal_category(2, "Second")
    listed = rest(fake, "crm.category.list", json={"entityTypeId": 2}).json()
    assert listed["total"] == 2
    assert [(c["id"], c["name"], c["isDefault"]) for c in listed["result"]["categories"]] == [
        (2, "Second", "N"),
        (0, "General", "Y"),
    ]
    refused = rest(fake, "crm.category.list", json={"entityTypeId": 1}).json()
    assert refused["error"] == "ENTITY_TYPE_NOT_SUPPORTED"
    stages = rest(fake, "crm.status.list", json={"filter": {"ENTITY_ID": "DEAL_STAGE_2"}}).json()["result"]
    assert stages[0]["STATUS_ID"] == "C2:NEW" and stages[0]["CATEGORY_ID"] == "2"

    fake.set_users({str(n): f"U{n} L{n}" for n in range(1, 61)})
    fake.add_user(61, "Gone", "Away", active=False)
    first = rest(fake, "user.get", json={"sort": "ID", "order": "ASC"}).json()
    assert (len(first["result"]), first["total"], first["next"]) == (50, 61, 50)
    assert first["result"][0]["ACTIVE"] is True and first["result"][0]["NAME"] == "U1"
    last = rest(fake, "user.get", json={"start": 50}).json()
    assert len(last["result"]) == 11 and "next" not in last
    active = rest(fake, "user.get", json={"FILTER": {"ACTIVE": True}, "start": 50}).json()
    assert active["total"] == 60


def test_reset_brings_back_the_portals_defaults(fake: FakeBitrix24) -> None:
    fake.set_users({"5": "Some One"})
    fake.add_deal_category(4, "Gone")
    fake.user_scope = False
    fake.reset()
    assert make_adapter(fake).list_users() == {"1": "Portal Admin"}
    assert "deal:C4:NEW" not in make_adapter(fake).list_stages()
