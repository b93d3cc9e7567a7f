"""AmoCrmAdapter's work items (tasks, reminders, stage moves, notes) and the loss reason in
snapshots, against FakeAmoCrm over real HTTP."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests

from crm_adapters.amocrm import LOSS_REASON_FIELD, TASK_RESULT, snapshot_from_api
from crm_adapters.base import CrmNotFound, CrmRejected, WebhookRequest
from leadwatch.effects import AddNote, CreateTask, MoveStage, RemindUser
from leadwatch.events import EntityRef, EntityType, EventKind
from leadwatch.testing.amocrm import LOST, FakeAmoCrm, bad_gateway, slow, too_many_requests
from leadwatch.testing.server import FixedWindow
from tests.integration import work_items
from tests.integration.amocrm.helpers import START, TOKEN, Clock, Sleeps, lead_ref, make_adapter
from tests.integration.work_items import LINK, MANAGER, NUDGE, TEXT, TITLE

pytestmark = pytest.mark.integration

MSK = timezone(timedelta(hours=3))
DUE = datetime(2025, 10, 30, 18, 0, tzinfo=MSK)
HOOK = {"key": "hook-secret"}
PRICE = 4203751  # "Дорого", one of the fake account's loss reasons


@pytest.fixture
def account(fake: FakeAmoCrm) -> FakeAmoCrm:
    fake.add_user(MANAGER, "Иван Петров")
    return fake


def task_for(entity: EntityRef, *, assignee: str = MANAGER, deadline: datetime = DUE) -> CreateTask:
    return work_items.task_for(entity, assignee=assignee, deadline=deadline)


def remind(entity: EntityRef) -> RemindUser:
    return work_items.reminder(entity, MANAGER)


def events_of(fake: FakeAmoCrm, bodies: list[bytes]) -> list[tuple[EventKind, EntityRef | None]]:
    adapter = make_adapter(fake)
    return [(e.kind, e.entity) for body in bodies for e in adapter.parse_webhook(WebhookRequest(body, HOOK))]


def api(fake: FakeAmoCrm, method: str, path: str, **kwargs: object) -> requests.Response:
    """A raw call to the fake account's API, past the adapter."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return requests.request(method, f"{fake.url}{path}", headers=headers, timeout=5, **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- tasks
def test_create_task_binds_it_to_the_lead_for_the_assignee(account: FakeAmoCrm) -> None:
    lead_id = account.create_lead("Acme")
    account.clear_log()

    task_id = make_adapter(account).create_task(task_for(lead_ref(lead_id)))

    task = account.tasks[task_id]
    assert task.entity == lead_ref(lead_id) and task.responsible == MANAGER
    assert task.title is None  # amoCRM tasks have a text only: the title leads it
    assert task.description == f"{TITLE}\n{TEXT}\n{LINK}"
    assert task.deadline == DUE and not task.completed and task.created_by == "1"  # the token's user
    [request] = account.requests("/api/v4/tasks", method="POST")
    [sent] = json.loads(request.body)
    assert sent["complete_till"] == int(DUE.timestamp()) == 1761836400  # unix seconds
    assert (sent["entity_id"], sent["entity_type"], sent["task_type_id"]) == (int(lead_id), "leads", 1)
    assert sent["responsible_user_id"] == int(MANAGER)


def test_create_task_on_a_missing_lead_raises_not_found_and_adds_nothing(account: FakeAmoCrm) -> None:
    with pytest.raises(CrmNotFound):
        make_adapter(account).create_task(task_for(lead_ref("31999999")))
    assert account.tasks == {}
    # Refused, then the lead read to tell why (204: there is none).
    assert [(r.method, r.status) for r in account.requests()] == [("POST", 400), ("GET", 204)]


def test_create_task_refusals_are_not_not_found(account: FakeAmoCrm) -> None:
    lead_id = account.create_lead()
    adapter = make_adapter(account)

    with pytest.raises(CrmRejected) as stranger:
        adapter.create_task(task_for(lead_ref(lead_id), assignee="99"))  # not a user of the account
    assert not isinstance(stranger.value, CrmNotFound)
    account.clear_log()
    naive = task_for(lead_ref(lead_id), deadline=datetime(2025, 10, 30, 18, 0))
    for bad in (naive, task_for(EntityRef(EntityType.DEAL, "5")), task_for(lead_ref("x1"))):
        with pytest.raises(CrmRejected):
            adapter.create_task(bad)
    assert account.requests() == [] and account.tasks == {}


def test_complete_task_closes_it_with_a_result_and_a_closed_one_is_no_error(account: FakeAmoCrm) -> None:
    adapter = make_adapter(account)
    task_id = adapter.create_task(task_for(lead_ref(account.create_lead())))

    adapter.complete_task(task_id)
    adapter.complete_task(task_id)

    task = account.tasks[task_id]
    assert task.completed and task.result == TASK_RESULT
    assert [r.method for r in account.requests(f"/api/v4/tasks/{task_id}")] == ["PATCH", "PATCH"]


def test_complete_of_a_missing_task_raises_not_found(account: FakeAmoCrm) -> None:
    adapter = make_adapter(account)
    with pytest.raises(CrmNotFound):
        adapter.complete_task("4999999")
    with pytest.raises(CrmNotFound):
        adapter.complete_task("not-a-task")
    assert [(r.method, r.status) for r in account.requests()] == [("PATCH", 400), ("GET", 204)]


def test_remind_is_a_note_on_the_card_with_or_without_the_task(account: FakeAmoCrm) -> None:
    adapter = make_adapter(account)
    card = lead_ref(account.create_lead())
    task_id = adapter.create_task(task_for(card))

    adapter.remind(task_id, remind(card))
    adapter.remind(None, remind(card))

    assert [n.text for n in account.notes_on(card)] == [NUDGE] * 2
    assert account.tasks[task_id].comments == []  # amoCRM cannot comment a task


# ----------------------------------------------------------------------------- stages and notes
def test_move_stage_moves_the_lead_and_the_account_sends_its_status_hook(
    account: FakeAmoCrm, clock: Clock
) -> None:
    adapter = make_adapter(account)
    lead_id = account.create_lead(status_id=LOST)
    clock.advance(timedelta(hours=2))
    account.outbox.clear()

    adapter.move_stage(MoveStage("qc:return", lead_ref(lead_id), str(account.work_stage())))

    moved = account.lead(lead_id)
    assert moved["status_id"] == account.work_stage() and moved["closed_at"] is None
    assert moved["updated_at"] == int((START + timedelta(hours=2)).timestamp())
    assert account.flush_echoes() == 1
    assert events_of(account, account.outbox) == [(EventKind.STAGE_CHANGED, lead_ref(lead_id))]


def test_move_stage_into_another_pipeline(account: FakeAmoCrm) -> None:
    account.add_pipeline(8002, "Повторные", {80021: "Новый", 80022: "В работе"})
    lead_id = account.create_lead(status_id=LOST)
    adapter = make_adapter(account)

    adapter.move_stage(MoveStage("m", lead_ref(lead_id), "80022", pipeline="8002"))
    with pytest.raises(CrmRejected) as elsewhere:
        adapter.move_stage(MoveStage("m", lead_ref(lead_id), str(account.work_stage())))  # the main one's

    assert (account.lead(lead_id)["pipeline_id"], account.lead(lead_id)["status_id"]) == (8002, 80022)
    assert not isinstance(elsewhere.value, CrmNotFound)
    [sent] = [json.loads(r.body) for r in account.requests(f"/api/v4/leads/{lead_id}", method="PATCH")][:1]
    assert sent == {"status_id": 80022, "pipeline_id": 8002}


def test_add_note_is_a_common_note_and_comes_back_as_its_hook(account: FakeAmoCrm) -> None:
    card = lead_ref(account.create_lead())
    account.outbox.clear()

    make_adapter(account).add_note(AddNote("qc:note", card, "Проверка: отказ обоснован."))

    [note] = account.notes_on(card)
    assert note.text == "Проверка: отказ обоснован." and note.author == "1"
    [sent] = json.loads(account.requests("/api/v4/leads/notes", method="POST")[0].body)
    assert sent == {
        "entity_id": int(card.id),
        "note_type": "common",
        "params": {"text": "Проверка: отказ обоснован."},
    }
    # The account sends its note hook for an integration's note too: leadwatch sees its own.
    account.flush_echoes()
    assert events_of(account, account.outbox) == [(EventKind.ACTIVITY_ADDED, card)]


def test_stage_moves_and_notes_on_a_missing_lead_raise_not_found(account: FakeAmoCrm) -> None:
    adapter = make_adapter(account)
    gone = lead_ref("31999999")
    for call in (
        lambda: adapter.move_stage(MoveStage("m", gone, str(account.work_stage()))),
        lambda: adapter.add_note(AddNote("n", gone, "text")),
        lambda: adapter.remind("4745251", remind(gone)),
    ):
        with pytest.raises(CrmNotFound):
            call()


# ----------------------------------------------------------------------------- limits and faults
def test_work_items_ride_out_429_and_502_without_doing_anything_twice(account: FakeAmoCrm) -> None:
    card = lead_ref(account.create_lead())
    sleeps = Sleeps()
    adapter = make_adapter(account, sleep=sleeps)
    account.clear_log()

    account.fail_next(too_many_requests)
    task_id = adapter.create_task(task_for(card))
    account.fail_next(bad_gateway)
    adapter.add_note(AddNote("n", card, "note"))
    account.fail_next(too_many_requests)
    adapter.complete_task(task_id)

    assert [r.status for r in account.requests()] == [429, 200, 502, 200, 429, 200]
    assert len(account.tasks) == 1 and len(account.notes_on(card)) == 1 and account.tasks[task_id].completed
    assert len(sleeps.waits) == 3


def test_a_task_or_note_that_may_have_been_added_is_not_sent_again(account: FakeAmoCrm) -> None:
    card = lead_ref(account.create_lead())
    stage = str(account.work_stage())

    work_items.answered_too_late(
        account, make_adapter(account, timeout=(1.0, 0.2)), card, stage, slow(0.5), DUE
    )

    assert len(account.tasks) == 1 and len(account.notes_on(card)) == 1  # done once, late
    assert len(account.requests(f"/api/v4/leads/{card.id}", method="PATCH")) == 2
    assert account.lead(card.id)["status_id"] == int(stage)


def test_the_accounts_limit_counts_work_calls_like_any_other(account: FakeAmoCrm) -> None:
    lead_id = int(account.create_lead())
    account.rate_limit = FixedWindow(2, 1.0, clock=lambda: 0.0)  # reset() brings back the fixture's

    answers = [
        api(
            account,
            "POST",
            "/api/v4/tasks",
            json=[{"text": "t", "complete_till": 1, "entity_id": lead_id, "entity_type": "leads"}],
        ),
        api(
            account,
            "POST",
            "/api/v4/leads/notes",
            json=[{"entity_id": lead_id, "note_type": "common", "params": {"text": "x"}}],
        ),
        api(account, "GET", "/api/v4/leads/loss_reasons"),
    ]

    assert [a.status_code for a in answers] == [200, 200, 429]
    assert account.limit_refusals == 1


# ----------------------------------------------------------------------------- the loss reason
def test_the_loss_reason_reaches_snapshot_fields_on_reads(account: FakeAmoCrm, clock: Clock) -> None:
    adapter = make_adapter(account)
    lost = account.create_lead("Дорого")
    kept = account.create_lead("В работе")
    clock.advance(timedelta(minutes=30))

    account.reject(lost, PRICE)

    cards = adapter.get_leads([lead_ref(lost), lead_ref(kept)])
    listed = {s.entity: s for s in adapter.list_changed_leads(START + timedelta(minutes=1))}
    for card in (cards[lead_ref(lost)], listed[lead_ref(lost)]):
        assert card is not None and card.stage == str(LOST) and card.fields[LOSS_REASON_FIELD] == str(PRICE)
    untouched = cards[lead_ref(kept)]
    assert untouched is not None and LOSS_REASON_FIELD not in untouched.fields
    assert adapter.list_loss_reasons()[str(PRICE)] == "Дорого"


def test_a_lost_leads_hook_without_its_reason_makes_the_worker_read_the_card(account: FakeAmoCrm) -> None:
    adapter = make_adapter(account)
    lead_id = account.create_lead()
    account.outbox.clear()

    account.reject(lead_id, PRICE)

    [event] = adapter.parse_webhook(WebhookRequest(account.outbox[0], HOOK))
    assert event.kind is EventKind.STAGE_CHANGED and event.lead is None and event.needs_card()
    # A hook that does carry the reason (or says there is none) stands for the card.
    payload = {"id": lead_id, "status_id": str(LOST), "pipeline_id": "7001", "last_modified": "1761732000"}
    payload["date_create"] = "1761728400"
    said = account.webhook_body("status", [{**payload, LOSS_REASON_FIELD: str(PRICE)}])
    none = account.webhook_body("status", [{**payload, LOSS_REASON_FIELD: "0"}])
    moved = account.webhook_body("status", [{**payload, "status_id": "70013"}])
    snapshots = [adapter.parse_webhook(WebhookRequest(body, HOOK))[0].lead for body in (said, none, moved)]
    assert [s.fields.get(LOSS_REASON_FIELD) if s else "read" for s in snapshots] == [str(PRICE), None, None]


def test_snapshots_read_the_embedded_reason_and_the_fake_embeds_it_when_asked(account: FakeAmoCrm) -> None:
    lead_id = account.create_lead()
    account.reject(lead_id, PRICE)

    plain = api(account, "GET", f"/api/v4/leads/{lead_id}").json()
    embedded = api(account, "GET", f"/api/v4/leads/{lead_id}", params={"with": "loss_reason"}).json()

    assert plain["loss_reason_id"] == PRICE and "loss_reason" not in plain["_embedded"]
    assert embedded["_embedded"]["loss_reason"][0]["id"] == PRICE
    assert embedded["_embedded"]["loss_reason"][0]["name"] == "Дорого"
    only_embedded = {**embedded, "loss_reason_id": None}
    snapshot = snapshot_from_api(only_embedded)
    assert snapshot is not None and snapshot.fields[LOSS_REASON_FIELD] == str(PRICE)


def test_the_fake_refuses_an_unknown_loss_reason(account: FakeAmoCrm) -> None:
    lead_id = account.create_lead()
    with pytest.raises(ValueError, match="loss_reason_id"):
        account.reject(lead_id, 999)
    refused = api(account, "PATCH", f"/api/v4/leads/{lead_id}", json={"loss_reason_id": 999})
    assert refused.status_code == 400
    assert refused.json()["validation-errors"][0]["errors"][0]["path"] == "loss_reason_id"
    account.add_loss_reason(999, "Своя причина")
    account.reject(lead_id, 999)
    assert account.lead(lead_id)["loss_reason_id"] == 999
