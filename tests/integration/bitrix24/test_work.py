"""Bitrix24Adapter's work items (tasks, reminders, stage moves, timeline notes) and the rejection
reason in snapshots, against FakeBitrix24 over real HTTP."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs

import pytest

from crm_adapters.base import CrmNotFound, CrmRejected, WebhookRequest
from leadwatch.effects import AddNote, CreateTask, MoveStage, RemindUser
from leadwatch.events import EntityRef, EventKind
from leadwatch.testing.bitrix24 import (
    REASON_FIELD,
    FakeBitrix24,
    operation_time_limit,
    query_limit_exceeded,
    slow,
)
from tests.integration import work_items
from tests.integration.bitrix24.helpers import CODE, T0, Clock, Sleeps, deal, lead, make_adapter, rest
from tests.integration.work_items import LINK, MANAGER, NUDGE, TEXT, TITLE

pytestmark = pytest.mark.integration

MSK = timezone(timedelta(hours=3))
DUE = datetime(2026, 11, 24, 18, 0, tzinfo=MSK)


@pytest.fixture
def portal(fake: FakeBitrix24) -> FakeBitrix24:
    fake.add_user(MANAGER, "Ivan", "Petrov")
    return fake


def task_for(entity: EntityRef, *, assignee: str = MANAGER, deadline: datetime = DUE) -> CreateTask:
    return work_items.task_for(entity, assignee=assignee, deadline=deadline)


def remind(entity: EntityRef) -> RemindUser:
    return work_items.reminder(entity, MANAGER)


def sent_task_fields(fake: FakeBitrix24) -> dict[str, list[str]]:
    """The tasks.task.add command of the logged batch, as its parsed query."""
    [request] = fake.requests("/batch")
    command = json.loads(request.body)["cmd"]["task"]
    method, _, query = command.partition("?")
    assert method == "tasks.task.add"
    return parse_qs(query)


# ----------------------------------------------------------------------------- tasks
@pytest.mark.parametrize(("kind", "binding"), [("lead", "L"), ("deal", "D")])
def test_create_task_binds_it_to_the_card_for_the_assignee_in_one_request(
    portal: FakeBitrix24, kind: str, binding: str
) -> None:
    ident = portal.create_lead("Acme") if kind == "lead" else portal.create_deal("Acme")
    entity = lead(ident) if kind == "lead" else deal(ident)
    portal.clear_log()

    task_id = make_adapter(portal).create_task(task_for(entity))

    task = portal.tasks[task_id]
    assert task.entity == entity and task.bindings == [f"{binding}_{ident}"]
    assert task.title == TITLE
    assert task.description == f"{TEXT}\n{LINK}"
    assert task.responsible == MANAGER and task.created_by == "1"  # the webhook's user
    assert task.deadline == DUE and not task.completed
    # One batch: the card read (halting on its error), then the task.
    assert len(portal.requests()) == 1
    sent = sent_task_fields(portal)
    assert sent["fields[DEADLINE]"] == ["2026-11-24T18:00:00+03:00"]  # ISO 8601 with its offset
    assert sent["fields[UF_CRM_TASK][0]"] == [f"{binding}_{ident}"]
    assert sent["fields[RESPONSIBLE_ID]"] == [MANAGER]


def test_create_task_on_a_missing_card_raises_not_found_and_adds_nothing(portal: FakeBitrix24) -> None:
    with pytest.raises(CrmNotFound):
        make_adapter(portal).create_task(task_for(lead("404")))
    assert portal.tasks == {}


def test_create_task_refusals_are_not_not_found(portal: FakeBitrix24) -> None:
    ident = portal.create_lead()
    adapter = make_adapter(portal)

    with pytest.raises(CrmRejected) as stranger:
        adapter.create_task(task_for(lead(ident), assignee="99"))  # not a user of the portal
    assert not isinstance(stranger.value, CrmNotFound)
    assert "Responsible" in str(stranger.value)
    portal.clear_log()
    for bad in (task_for(lead(ident), deadline=datetime(2026, 11, 24, 18, 0)), task_for(lead("x1"))):
        with pytest.raises(CrmRejected):
            adapter.create_task(bad)
    assert portal.requests() == [] and portal.tasks == {}


def test_complete_task_closes_it_and_a_closed_one_is_no_error(portal: FakeBitrix24) -> None:
    adapter = make_adapter(portal)
    task_id = adapter.create_task(task_for(lead(portal.create_lead())))

    adapter.complete_task(task_id)
    assert portal.tasks[task_id].completed
    portal.clear_log()
    adapter.complete_task(task_id)  # refused as "not allowed"; the task's row shows it closed

    assert [r.path.rsplit("/", 1)[-1] for r in portal.requests()] == [
        "tasks.task.complete.json",
        "tasks.task.list.json",
    ]


def test_complete_and_remind_of_a_missing_task_raise_not_found(portal: FakeBitrix24) -> None:
    adapter = make_adapter(portal)
    ident = portal.create_lead()
    for call in (
        lambda: adapter.complete_task("8080"),
        lambda: adapter.remind("8080", remind(lead(ident))),
        lambda: adapter.complete_task("not-a-task"),
    ):
        with pytest.raises(CrmNotFound):
            call()


def test_remind_comments_the_task_or_notes_the_card_without_one(portal: FakeBitrix24) -> None:
    adapter = make_adapter(portal)
    card = lead(portal.create_lead())
    task_id = adapter.create_task(task_for(card))

    adapter.remind(task_id, remind(card))
    adapter.remind(None, remind(card))

    assert portal.tasks[task_id].comments == [NUDGE]
    assert [n.text for n in portal.notes_on(card)] == [NUDGE]


# ----------------------------------------------------------------------------- stages and notes
def test_move_stage_moves_the_card_and_the_portal_sends_its_update_event(
    portal: FakeBitrix24, clock: Clock
) -> None:
    adapter = make_adapter(portal)
    lead_id = portal.create_lead(status_id="JUNK")
    deal_id = portal.create_deal(stage_id="LOSE")
    clock.advance(timedelta(hours=2))

    adapter.move_stage(MoveStage("qc:return:l", lead(lead_id), "IN_PROCESS"))
    adapter.move_stage(MoveStage("qc:return:d", deal(deal_id), "EXECUTING"))

    moved = portal.lead(lead_id)
    assert moved["STATUS_ID"] == "IN_PROCESS" and moved["STATUS_SEMANTIC_ID"] == "P"
    assert (
        moved["DATE_MODIFY"] == moved["MOVED_TIME"] == (T0 + timedelta(hours=2)).astimezone(MSK).isoformat()
    )
    assert portal.deal(deal_id)["STAGE_ID"] == "EXECUTING"
    portal.outbox.clear()
    assert portal.flush_echoes() == 2
    events = [e for body in portal.outbox for e in adapter.parse_webhook(WebhookRequest(body, {}))]
    assert [(e.kind, e.entity) for e in events] == [
        (EventKind.LEAD_CHANGED, lead(lead_id)),
        (EventKind.LEAD_CHANGED, deal(deal_id)),
    ]


def test_add_note_lands_in_the_cards_timeline(portal: FakeBitrix24, clock: Clock) -> None:
    card = deal(portal.create_deal())

    make_adapter(portal).add_note(AddNote("qc:note:1", card, "Review: the rejection stands."))

    [note] = portal.notes_on(card)
    assert note.text == "Review: the rejection stands." and note.author == "1" and note.created_at == T0
    assert portal.notes_on(lead(card.id)) == []  # lead 1 is another card


def test_stage_moves_and_notes_on_a_missing_card_raise_not_found(portal: FakeBitrix24) -> None:
    adapter = make_adapter(portal)
    for call in (
        lambda: adapter.move_stage(MoveStage("m", lead("404"), "IN_PROCESS")),
        lambda: adapter.move_stage(MoveStage("m", deal("404"), "EXECUTING")),
        lambda: adapter.add_note(AddNote("n", lead("404"), "text")),
        lambda: adapter.remind(None, remind(deal("404"))),
    ):
        with pytest.raises(CrmNotFound):
            call()


# ----------------------------------------------------------------------------- limits and faults
def test_work_items_ride_out_the_portals_limits_without_doing_anything_twice(portal: FakeBitrix24) -> None:
    card = lead(portal.create_lead())
    sleeps = Sleeps()
    adapter = make_adapter(portal, sleep=sleeps)

    portal.fail_next(query_limit_exceeded)
    task_id = adapter.create_task(task_for(card))
    portal.fail_next(operation_time_limit)
    adapter.add_note(AddNote("n", card, "note"))
    portal.fail_next(query_limit_exceeded)
    adapter.remind(task_id, remind(card))

    assert [r.status for r in portal.requests()] == [503, 200, 429, 200, 503, 200]
    assert len(portal.tasks) == 1 and len(portal.notes_on(card)) == 1
    assert portal.tasks[task_id].comments == [NUDGE]
    assert len(sleeps.waits) == 3 and 1.0 < sleeps.waits[1] <= 2.0  # until operating_reset_at


def test_a_task_that_may_have_been_added_is_not_sent_again(portal: FakeBitrix24) -> None:
    card = lead(portal.create_lead())

    work_items.answered_too_late(
        portal, make_adapter(portal, timeout=(1.0, 0.2)), card, "IN_PROCESS", slow(0.5), DUE
    )

    assert len(portal.tasks) == 1 and len(portal.notes_on(card)) == 1  # done once, late
    assert len(portal.requests("/batch")) == 1 and len(portal.requests("crm.lead.update")) == 2
    assert portal.lead(card.id)["STATUS_ID"] == "IN_PROCESS"


def test_the_portals_bucket_counts_work_calls_like_any_other(clock: Clock) -> None:
    # A bucket that never drains (its clock stands still) and holds two requests.
    with FakeBitrix24(webhook_code=CODE, rate=0.001, burst=2, clock=clock, monotonic=lambda: 0.0) as own:
        own.add_user(MANAGER, "Ivan")
        ident = own.create_lead()
        fields = {"TITLE": "t", "RESPONSIBLE_ID": MANAGER, "UF_CRM_TASK": [f"L_{ident}"]}
        comment = {"ENTITY_ID": ident, "ENTITY_TYPE": "lead", "COMMENT": "c"}
        answers = [
            rest(own, "tasks.task.add", json={"fields": fields}),
            rest(own, "crm.timeline.comment.add", json={"fields": comment}),
            rest(own, "tasks.task.complete", json={"taskId": 1}),
        ]
        refusals = own.limit_refusals

    assert [a.status_code for a in answers] == [200, 200, 503]
    assert answers[2].json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert refusals == 1


def test_fake_task_and_comment_methods_answer_as_the_portal_documents(portal: FakeBitrix24) -> None:
    ident = portal.create_lead()
    added = rest(portal, "tasks.task.add", json={"fields": {"TITLE": "t", "RESPONSIBLE_ID": MANAGER}}).json()
    task = added["result"]["task"]
    assert task["id"] == "3711" and task["responsibleId"] == MANAGER and task["status"] == "2"
    untitled = rest(portal, "tasks.task.add", json={"fields": {"RESPONSIBLE_ID": MANAGER}})
    assert untitled.status_code == 400 and untitled.json()["error"] == "ERROR_CORE"
    done = rest(portal, "tasks.task.complete", json={"taskId": 3711}).json()["result"]["task"]
    assert done["status"] == "5" and done["closedDate"]
    again = rest(portal, "tasks.task.complete", json={"taskId": 3711})
    assert again.status_code == 400 and again.json() == {
        "error": "0",
        "error_description": "Action on the task is not allowed",
    }
    listed = rest(
        portal, "tasks.task.list", json={"filter": {"ID": 3711}, "select": ["ID", "UF_CRM_TASK"]}
    ).json()
    assert [t["id"] for t in listed["result"]["tasks"]] == ["3711"] and listed["total"] == 1
    assert listed["result"]["tasks"][0]["ufCrmTask"] == []
    comment = rest(portal, "task.commentitem.add", json={"TASKID": 3711, "FIELDS": {"POST_MESSAGE": "hi"}})
    assert isinstance(comment.json()["result"], int)
    lost = rest(portal, "task.commentitem.add", json={"TASKID": 1, "FIELDS": {"POST_MESSAGE": "hi"}})
    assert lost.status_code == 400 and "ACTION_NOT_ALLOWED" in lost.json()["error_description"]
    missing = rest(
        portal,
        "crm.timeline.comment.add",
        json={"fields": {"ENTITY_ID": 99, "ENTITY_TYPE": "deal", "COMMENT": "c"}},
    )
    assert missing.status_code == 400 and missing.json() == {
        "error": "NOT_FOUND",
        "error_description": "Not found.",
    }
    empty = rest(
        portal,
        "crm.timeline.comment.add",
        json={"fields": {"ENTITY_ID": ident, "ENTITY_TYPE": "lead", "COMMENT": ""}},
    )
    assert empty.json()["error"] == "INVALID_ARG_VALUE"


# ----------------------------------------------------------------------------- the rejection reason
def test_the_rejection_reason_reaches_snapshot_fields_on_every_read(
    portal: FakeBitrix24, clock: Clock
) -> None:
    adapter = make_adapter(portal)
    rejected = portal.create_lead("Too expensive")
    other = portal.create_lead("Spam")
    clock.advance(timedelta(minutes=30))
    portal.outbox.clear()

    portal.reject_lead(rejected, "44")
    portal.reject_lead(other, "45")

    # The webhook says only which card changed: the worker reads it.
    [event] = adapter.parse_webhook(WebhookRequest(portal.outbox[0], {}))
    assert event.entity == lead(rejected) and event.needs_card()
    one = adapter.get_leads([lead(rejected)])[lead(rejected)]  # crm.lead.get
    both = adapter.get_leads([lead(rejected), lead(other)])  # batch
    listed = {s.entity: s for s in adapter.list_changed_leads(T0 + timedelta(minutes=1))}  # crm.lead.list
    for card in (one, both[lead(rejected)], listed[lead(rejected)]):
        assert card is not None and card.stage == "JUNK" and card.fields[REASON_FIELD] == "44"
    assert listed[lead(other)].fields[REASON_FIELD] == "45"


def test_a_rejected_deal_keeps_its_reason_in_its_funnels_lose_stage(portal: FakeBitrix24) -> None:
    [_, *_rest, lose] = portal.add_deal_category(3, "Wholesale")
    general = portal.create_deal("A")
    wholesale = portal.create_deal("B", category_id="3")

    portal.reject_deal(general, "12")
    portal.reject_deal(wholesale, "13")

    cards = make_adapter(portal).get_leads([deal(general), deal(wholesale)])
    first, second = cards[deal(general)], cards[deal(wholesale)]
    assert first is not None and second is not None
    assert (first.stage, first.fields[REASON_FIELD]) == ("LOSE", "12")
    assert (second.stage, second.pipeline, second.fields[REASON_FIELD]) == (lose, "3", "13")
    assert lose == "C3:LOSE"


def test_a_multiple_reason_field_is_listed_only_when_named(portal: FakeBitrix24) -> None:
    ident = portal.create_lead()
    portal.reject_lead(ident, ["44", "46"])
    since = T0 - timedelta(minutes=1)

    read = make_adapter(portal).get_leads([lead(ident)])[lead(ident)]
    masked = next(iter(make_adapter(portal).list_changed_leads(since)))
    named = next(iter(make_adapter(portal, select_fields=(REASON_FIELD,)).list_changed_leads(since)))

    assert read is not None and read.fields[REASON_FIELD] == ["44", "46"]
    assert REASON_FIELD not in masked.fields  # `UF_*` leaves multiple fields out
    assert named.fields[REASON_FIELD] == ["44", "46"]


def test_reject_helpers_refuse_cards_the_portal_does_not_have(portal: FakeBitrix24) -> None:
    with pytest.raises(KeyError):
        portal.reject_lead(99, "44")
    with pytest.raises(KeyError):
        portal.reject_deal(99, "44")
