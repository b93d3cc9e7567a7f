"""The work items (leadwatch.effects.CrmWork) the adapter tests of both CRMs send."""

from __future__ import annotations

from datetime import datetime

import pytest

from crm_adapters.base import CrmAdapter, OutcomeUnknown
from leadwatch.effects import AddNote, CreateTask, MoveStage, RemindUser
from leadwatch.events import EntityRef
from leadwatch.testing.server import FakeServer, Fault

LINK = "https://pages.example/answer/abc"
TITLE = "Объясните отказ"
TEXT = "Почему карточка закрыта? Ответьте на странице."
NUDGE = "Прошла половина срока: ответьте, пожалуйста."
MANAGER = "7"  # the assignee: a user the tests add to the fake CRM


def task_for(entity: EntityRef, *, assignee: str, deadline: datetime) -> CreateTask:
    """A QC answer task on `entity`: a title, a text that does not hold its link, the link."""
    return CreateTask(f"qc:task:{entity.key}", entity, assignee, TITLE, TEXT, deadline, link=LINK)


def reminder(entity: EntityRef, user: str) -> RemindUser:
    return RemindUser(f"qc:remind:{entity.key}", user, entity, f"qc:task:{entity.key}", NUDGE)


def answered_too_late(
    fake: FakeServer, adapter: CrmAdapter, card: EntityRef, stage: str, late: Fault, deadline: datetime
) -> None:
    """Three calls the CRM performs but answers after the client gave up (`late`): a task and a
    note, which a second send would double, raise OutcomeUnknown; a stage move, the same however
    often it is made, is sent again and succeeds."""
    for call in (
        lambda: adapter.create_task(task_for(card, assignee=MANAGER, deadline=deadline)),
        lambda: adapter.add_note(AddNote("qc:note", card, TEXT)),
    ):
        fake.fail_next(late)
        with pytest.raises(OutcomeUnknown):
            call()
    fake.fail_next(late)
    adapter.move_stage(MoveStage("qc:return", card, stage))
