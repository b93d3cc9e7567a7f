"""Names from an amoCRM account: users (GET /api/v4/users, paged) and every pipeline's statuses
(GET /api/v4/leads/pipelines), read by AmoCrmAdapter from FakeAmoCrm over HTTP, and the fake's wire."""

from __future__ import annotations

import pytest
import requests

from crm_adapters.base import CrmRejected, StageName
from leadwatch.testing.amocrm import LOST, WON, FakeAmoCrm
from tests.integration.amocrm.helpers import TOKEN, make_adapter

pytestmark = pytest.mark.integration


def get(fake: FakeAmoCrm, path: str, **params: object) -> requests.Response:
    return requests.get(
        f"{fake.url}{path}", params=params, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
    )


def test_300_users_come_in_two_pages_active_ones_first(fake: FakeAmoCrm) -> None:
    fake.set_users({9_100_000 + n: f"Менеджер {n}" for n in range(1, 301)})
    fake.add_user(9_100_007, "Ушедший Сотрудник", active=False)
    fake.add_user(9_100_400, "O'Brien & <Sons>")
    fake.add_user(9_100_401, "  ", email="only@mail.example")
    fake.clear_log()

    users = make_adapter(fake).list_users()

    assert [r.query for r in fake.requests("/api/v4/users")] == [
        [("limit", "250"), ("page", "1")],
        [("limit", "250"), ("page", "2")],
    ]
    assert len(users) == 302
    assert users["9100001"] == "Менеджер 1"
    assert users["9100400"] == "O'Brien & <Sons>"
    assert users["9100401"] == "only@mail.example"
    assert list(users)[-1] == "9100007" and users["9100007"] == "Ушедший Сотрудник"


def test_a_token_without_admin_rights_is_refused(fake: FakeAmoCrm) -> None:
    fake.token_is_admin = False
    assert get(fake, "/api/v4/users").status_code == 403
    with pytest.raises(CrmRejected, match="403"):
        make_adapter(fake).list_users()


def test_every_pipelines_statuses_in_one_request(fake: FakeAmoCrm) -> None:
    fake.add_pipeline(7002, "Повторные <продажи> & Co", {80011: "Новый", 80012: "Счёт", WON: "Оплачено"})
    fake.clear_log()

    stages = make_adapter(fake).list_stages()

    assert len(fake.requests()) == 1
    assert stages["lead:70012"] == StageName("Первичный контакт", "Воронка")
    assert stages["lead:80012"] == StageName("Счёт", "Повторные <продажи> & Co")
    # 142 and 143 are in every pipeline: the main one's names, and no pipeline.
    assert stages[f"lead:{WON}"] == StageName("Успешно реализовано")
    assert stages[f"lead:{LOST}"] == StageName("Закрыто и не реализовано")
    assert len(stages) == 5 + 2


def test_fake_lists_speak_the_documented_shapes(fake: FakeAmoCrm) -> None:
    fake.set_users({n: f"User {n}" for n in range(1, 4)})
    fake.add_user(2, "Left", active=False)
    body = get(fake, "/api/v4/users", limit=2).json()
    assert (body["_total_items"], body["_page"], body["_page_count"]) == (3, 1, 2)
    assert "next" in body["_links"]
    [first, second] = body["_embedded"]["users"]
    assert first["id"] == 1 and first["rights"]["is_active"] is True
    assert second["rights"]["is_active"] is False
    assert get(fake, "/api/v4/users", limit=2, page=3).status_code == 204
    pipelines = get(fake, "/api/v4/leads/pipelines").json()["_embedded"]["pipelines"]
    assert [p["is_main"] for p in pipelines] == [True]
    assert [s["id"] for s in pipelines[0]["_embedded"]["statuses"]][-2:] == [WON, LOST]


def test_reset_brings_back_the_accounts_defaults(fake: FakeAmoCrm) -> None:
    fake.set_users({5: "Some One"})
    fake.add_pipeline(7003, "Gone", {90001: "X"})
    fake.token_is_admin = False
    fake.reset()
    assert make_adapter(fake).list_users() == {"1": "Account Owner"}
    assert "lead:90001" not in make_adapter(fake).list_stages()
