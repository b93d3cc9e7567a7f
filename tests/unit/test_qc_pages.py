"""Quality control's answer and review pages through the real Chalice routes, on the in-memory
store: the link in the manager's task opens the questions, the answers move the review on and
put a task with the review link to the reviewer, whose decision is saved once whatever the
clicks and races; every refusal has its own page, every value is escaped, nothing leaks a
traceback. Effects are asserted as the transitions produced them (the executor's CRM part is
built elsewhere)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo

import pytest
import yaml
from chalice.test import Client

from leadwatch.cards import LeadState
from leadwatch.config import TenantRegistry, parse_tenant
from leadwatch.context import Context
from leadwatch.effects import AddNote, CompleteTask, CreateTask, MoveStage, RecordViolation
from leadwatch.events import Call, EntityRef, EntityType, LeadSnapshot
from leadwatch.registry import ProcessRegistry
from leadwatch.state import MemoryState
from leadwatch.store.memory import MemoryStore
from leadwatch.testing.stack import SimClock
from workflows import PROCESSES
from workflows.qc import links, routes
from workflows.qc import rules as qc
from workflows.qc.reviews import Reviews
from workflows.qc.view import link_key, view

MSK = ZoneInfo("Europe/Moscow")
TENANT = "acme-b24"
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "examples" / "acme-b24.yaml"
REGISTRY = ProcessRegistry(PROCESSES)
CARD = EntityRef(EntityType.LEAD, "42")
REJECTED = datetime(2025, 11, 11, 15, 0, tzinfo=MSK)  # a Tuesday afternoon
SECTION = {
    "reviewers": ["1"],
    "pages_url": "https://lw.example.com",
    "funnels": [
        {
            "stages": ["JUNK"],
            "reason_field": "UF_CRM_1",
            "returned_stage": "IN_PROCESS",
            "reasons": [
                {
                    "id": 44,
                    "name": "Price <too> high",
                    "action": "check",
                    "questions": ["Expected <b>price</b>?", "Discount offered?"],
                },
                {"id": 45, "name": "Spam", "action": "ignore"},
            ],
        }
    ],
}


@dataclass
class StubCrm:
    def card_url(self, entity: EntityRef) -> str:
        return f"https://acme.bitrix24.ru/crm/{entity.type.value}/details/{entity.id}/"


class RacingState(MemoryState):
    """Memory state whose first read of a review, in each of `parties` threads, waits until all
    have read: every one of them then writes over the same version, and all but one lose."""

    def __init__(self) -> None:
        super().__init__()
        self.barrier: threading.Barrier | None = None
        self._seen = threading.local()
        self.lost = 0  # writes over a version another thread had moved on

    def update(self, namespace, tenant, key, value, version, expires_at=None):
        won = super().update(namespace, tenant, key, value, version, expires_at)
        self.lost += not won and key.startswith("review#")
        return won

    def get(self, namespace: str, tenant: str, key: str):
        record = super().get(namespace, tenant, key)
        if self.barrier is not None and key.startswith("review#") and not getattr(self._seen, "done", False):
            self._seen.done = True
            self.barrier.wait(timeout=10)
        return record


@dataclass
class Performed:
    batches: list[list[Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, ctx, config, effects, budget=None):
        from leadwatch.executor import Outcome

        with self.lock:
            self.batches.append(list(effects))
        return Outcome(done={e.effect_id for e in effects})

    @property
    def kinds(self) -> list[list[str]]:
        return [[type(e).__name__ for e in batch] for batch in self.batches]


def tenant_config(language: str | None = None, **qc_section: Any):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["qc"] = {**SECTION, **qc_section}
    if language:
        data["language"] = language
    return parse_tenant(yaml.safe_dump(data, allow_unicode=True), "acme-b24.yaml", REGISTRY.tenant_model())


@dataclass
class World:
    ctx: Context
    clock: SimClock
    state: RacingState
    client: Client
    performed: Performed

    @property
    def config(self):
        return self.ctx.tenant(TENANT)

    @property
    def reviews(self) -> Reviews:
        return Reviews(self.ctx.state("qc"), TENANT)

    def review(self, review_id: str) -> qc.Review:
        stored = self.reviews.get(review_id)
        assert stored is not None
        return stored.review

    def open(self, snapshot: LeadSnapshot | None = None, spot: bool = False) -> tuple[qc.Review, str]:
        """A review started as the worker will start it: stored, its first task's link returned."""
        config = self.config
        rules = qc.QcRules.from_config(config.qc)
        snapshot = snapshot or card()
        routing = qc.route_card(rules, snapshot)
        if spot:
            review = qc.open_spot_check(TENANT, snapshot, routing, REJECTED, "2025-W46", rules)
        else:
            review = qc.open_review(TENANT, snapshot, routing, REJECTED, rules, config.language)
        assert review is not None
        key = link_key(self.ctx, config)
        step = qc.start(review, self.clock(), rules, self.ctx.calendar(config), view(self.ctx, config, key))
        assert step.ok and self.reviews.create(step.review, self.clock())
        [task] = step.effects
        assert isinstance(task, CreateTask) and task.link is not None
        return step.review, task.link

    def get(self, link: str):
        return self.client.http.get(path_of(link))

    def post(self, link: str, form: dict[str, str]):
        """Post the form, then let the deadline sweep run as it does within a minute of a decision:
        the page only saves, the sweep performs what it saved."""
        page = self.client.http.post(
            path_of(link),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=urlencode(form).encode(),
        )
        self.settle()
        return page

    def settle(self) -> None:
        from workflows.qc import service

        service.sweep(self.ctx, self.config, self.clock(), None)


def path_of(link: str) -> str:
    assert link.startswith("https://lw.example.com/tenants/")
    return urlsplit(link).path


def card(title: str = "Pipes & <valves>", reason: str = "44", manager: str | None = "7") -> LeadSnapshot:
    return LeadSnapshot(
        CARD,
        "JUNK",
        manager,
        REJECTED - timedelta(days=1),
        modified_at=REJECTED,
        stage_changed_at=REJECTED,
        title=title,
        fields={"UF_CRM_1": reason},
    )


@pytest.fixture
def world(monkeypatch) -> World:
    return make_world(monkeypatch)


def make_world(monkeypatch, language: str | None = None) -> World:
    from functions.build import build_app
    from leadwatch.context import set_context

    clock = SimClock(REJECTED)
    config = tenant_config(language)
    state = RacingState()
    ctx = Context(
        processes=REGISTRY,
        registry=TenantRegistry({TENANT: config}),
        store=MemoryStore(),
        queue=None,
        secrets=lambda ref: "api-key-b24-Pp12",
        clock=clock,
        adapter_factory=lambda config, secrets: StubCrm(),
        state_store=state,
    )
    performed = Performed()
    monkeypatch.setattr(routes.service.executor, "perform", performed)
    set_context(ctx)
    app, _ = build_app(REGISTRY)
    return World(ctx, clock, state, Client(app), performed)


@pytest.fixture(autouse=True)
def _no_context():
    from leadwatch.context import set_context

    yield
    set_context(None)


def answered(world: World) -> tuple[qc.Review, str]:
    """A review whose manager answered: the reviewer's link, from the reviewer's task."""
    review, link = world.open()
    world.clock.advance(timedelta(hours=1))
    assert world.post(link, {"answer-0": "50k", "answer-1": "No"}).status_code == 200
    [[_, task]] = world.performed.batches
    assert isinstance(task, CreateTask) and task.link is not None
    world.performed.batches.clear()
    return world.review(review.review_id), task.link


def text_of(response) -> str:
    return response.body.decode() if isinstance(response.body, bytes) else response.body


# ----------------------------------------------------------------------------- the answer page


def test_the_link_in_the_managers_task_opens_the_questions(world):
    _, link = world.open()
    page = world.get(link)
    body = text_of(page)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in body
    assert '<html lang="ru">' in body and "Вопросы по отказу" in body
    assert body.count("<textarea") == 2 and 'name="answer-1"' in body
    assert "Expected &lt;b&gt;price&lt;/b&gt;?" in body and "<b>price</b>" not in body
    assert "Pipes &amp; &lt;valves&gt;" in body and "Price &lt;too&gt; high" in body
    assert 'href="https://acme.bitrix24.ru/crm/lead/details/42/"' in body
    # Nothing from elsewhere: no script, no stylesheet, font or image to fetch.
    assert "<script" not in body and "<link" not in body and "src=" not in body and "@import" not in body
    assert page.headers["Referrer-Policy"] == "no-referrer" and page.headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]


def test_answers_move_the_review_to_the_reviewer_once(world):
    review, link = world.open()
    world.clock.advance(timedelta(minutes=30))
    page = world.post(link, {"answer-0": "  50k\r\nor less ", "answer-1": "No"})
    assert page.status_code == 200 and "Ответы отправлены" in text_of(page)
    saved = world.review(review.review_id)
    assert saved.status is qc.Status.AWAITING_REVIEW and saved.answers == ("50k\nor less", "No")
    [[done, task]] = world.performed.batches
    assert isinstance(done, CompleteTask) and done.task_ref == review.answer_task.task_ref
    assert isinstance(task, CreateTask) and task.assignee == "1" and "/qc/review/" in task.link

    again = world.post(link, {"answer-0": "changed my mind", "answer-1": "Yes"})
    assert again.status_code == 409 and "Ответы уже отправлены" in text_of(again)
    assert world.review(review.review_id).answers == ("50k\nor less", "No")
    assert len(world.performed.batches) == 1  # the second submit performed nothing
    shown = world.get(link)
    assert shown.status_code == 409 and "Ответы уже отправлены" in text_of(shown)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"answer-0": "50k", "answer-1": "   "}, "Ответьте, пожалуйста, на все вопросы."),
        ({"answer-0": "50k"}, "Ответьте, пожалуйста, на все вопросы."),
        ({"answer-0": "x" * (qc.MAX_ANSWER_CHARS + 1), "answer-1": "No"}, "Ответ слишком длинный"),
    ],
)
def test_an_incomplete_or_too_long_answer_gets_the_form_back_with_the_text_kept(world, form, message):
    review, link = world.open()
    page = world.post(link, {**form, "answer-0": form["answer-0"] + "</textarea><script>x</script>"})
    body = text_of(page)
    assert page.status_code == 422 and message in body and 'role="alert"' in body
    assert "&lt;/textarea&gt;&lt;script&gt;x&lt;/script&gt;</textarea>" in body and "<script>" not in body
    assert 'aria-invalid="true"' in body
    assert world.review(review.review_id).status is qc.Status.AWAITING_ANSWERS
    assert world.performed.batches == []


def test_a_line_break_counts_once_as_the_browser_counted_it(world):
    review, link = world.open()
    answer = "ab\r\n" * (qc.MAX_ANSWER_CHARS // 3)  # 2,000 characters with CRLF counted as two
    assert len(answer) > qc.MAX_ANSWER_CHARS
    page = world.post(link, {"answer-0": answer, "answer-1": "No"})
    assert page.status_code == 200
    assert world.review(review.review_id).answers[0] == answer.replace("\r\n", "\n").strip()


# ----------------------------------------------------------------------------- the review page


def test_the_review_page_shows_the_answers_and_the_cards_history(world):
    store = world.ctx.store
    lead = LeadState(
        TENANT,
        CARD,
        created_at=REJECTED - timedelta(days=1),
        due_at=REJECTED - timedelta(days=1) + timedelta(minutes=15),
        stage="JUNK",
        responsible="7",
        title="Pipes & <valves>",
        processed_at=REJECTED - timedelta(days=1) + timedelta(minutes=40),
        processed_how="call",
    )
    store.create_lead(lead, lead.created_at)
    assert store.claim(lead, "t", lead.due_at, timedelta(minutes=1))
    assert store.close_verdict(lead, "late", "t", lead.due_at, "2025-11-10", "7")
    calls = [
        Call(
            "c1",
            CARD,
            "out",
            "7",
            REJECTED - timedelta(days=1, hours=-1),
            95,
            True,
            "https://rec.example/1.mp3",
        ),
        Call("c2", CARD, "out", "7", REJECTED - timedelta(hours=2), 0, False),
        Call("c3", CARD, "out", "7", REJECTED - timedelta(hours=1), 12, True, "javascript:alert(1)"),
    ]
    for call in calls:
        store.record_call(TENANT, call, call.started_at.astimezone(MSK).date(), call.duration > 30, REJECTED)
    _, link = answered(world)
    page = world.get(link)
    body = text_of(page)
    assert page.status_code == 200 and "Проверка отказа" in body
    assert "50k" in body and "Expected &lt;b&gt;price&lt;/b&gt;?" in body
    assert "с опозданием" in body  # the timeliness verdict
    assert "<tr><td>пн 10.11.2025</td><td>1</td><td>1</td></tr>" in body
    assert "<tr><td>вт 11.11.2025</td><td>2</td><td>0</td></tr>" in body
    assert 'href="https://rec.example/1.mp3" rel="noreferrer noopener"' in body
    assert "javascript:" not in body and "без ответа" in body and "1:35" in body
    assert 'value="return"' in body and 'value="confirm"' in body and 'name="comment"' in body


def test_a_card_leadwatch_never_watched_says_so(world):
    _, link = answered(world)
    body = text_of(world.get(link))
    assert "История этой карточки не записана." in body and "Звонков не было." in body


def test_returning_to_work_is_saved_once_and_a_second_click_is_told_it_is_decided(world):
    review, link = answered(world)
    world.clock.advance(timedelta(hours=1))
    page = world.post(link, {"decision": "return", "comment": "Call them <again>"})
    assert page.status_code == 200 and "Возвращено в работу" in text_of(page)
    saved = world.review(review.review_id)
    assert saved.status is qc.Status.RETURNED and saved.comment == "Call them <again>"
    [batch] = world.performed.batches
    assert [type(e) for e in batch] == [CompleteTask, MoveStage, CreateTask, AddNote, RecordViolation]
    assert batch[1].stage == "IN_PROCESS" and batch[2].assignee == "7"
    assert batch[4].violation.type == qc.RETURNED_TO_WORK

    second = world.post(link, {"decision": "confirm"})
    body = text_of(second)
    assert second.status_code == 409 and "Решение уже принято" in body and "Возвращено в работу" in body
    assert "Call them &lt;again&gt;" in body
    assert world.review(review.review_id).status is qc.Status.RETURNED and len(world.performed.batches) == 1
    assert world.get(link).status_code == 409


def test_a_too_long_comment_or_no_choice_gets_the_page_back_with_the_comment_kept(world):
    review, link = answered(world)
    long = "y" * (qc.MAX_COMMENT_CHARS + 1)
    page = world.post(link, {"decision": "confirm", "comment": long})
    assert page.status_code == 422 and "Ответ слишком длинный" in text_of(page) and long in text_of(page)
    page = world.post(link, {"comment": "hmm"})
    assert page.status_code == 422 and "Выберите одно из двух решений." in text_of(page)
    assert world.review(review.review_id).status is qc.Status.AWAITING_REVIEW
    assert world.performed.batches == []


def test_a_spot_check_has_no_answers_and_can_be_confirmed(world):
    review, link = world.open(card(reason="45"), spot=True)
    assert "/qc/review/" in link
    body = text_of(world.get(link))
    assert "Выборочная проверка отказа" in body and "менеджеру вопросы не задавались" in body
    page = world.post(link, {"decision": "confirm"})
    assert page.status_code == 200 and "Отказ подтверждён" in text_of(page)
    assert world.review(review.review_id).status is qc.Status.CONFIRMED


def test_english_pages_for_an_english_tenant(monkeypatch):
    world = make_world(monkeypatch, language="en")
    _, link = world.open()
    body = text_of(world.get(link))
    assert '<html lang="en">' in body and "Questions about a rejection" in body and "Send answers" in body


# ----------------------------------------------------------------------------- races


def race(world: World, calls: list) -> list:
    world.state.barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            results[n] = calls[n]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    world.state.barrier = None
    assert not errors
    return results


def request(world: World, link: str, form: dict[str, str]):
    from leadwatch.process import RouteRequest

    token = link.rsplit("/", 1)[1]
    asked = RouteRequest("POST", {"token": token}, urlencode(form).encode(), "", {}, None)
    run = routes.answer_page if "/qc/answer/" in link else routes.review_page
    return lambda: run(world.ctx, world.config, asked)


def test_two_reviewers_racing_one_decides_and_the_other_is_told(world):
    review, link = answered(world)
    returned, confirmed = race(
        world,
        [request(world, link, {"decision": "return"}), request(world, link, {"decision": "confirm"})],
    )
    statuses = sorted([returned.status, confirmed.status])
    assert statuses == [200, 409]
    saved = world.review(review.review_id)
    winner = returned if returned.status == 200 else confirmed
    loser = confirmed if winner is returned else returned
    expected = qc.Status.RETURNED if winner is returned else qc.Status.CONFIRMED
    assert saved.status is expected and "Решение уже принято" in loser.body
    assert world.state.lost == 1  # the loser wrote over the version both read, reloaded, was told
    world.settle()
    assert len(world.performed.batches) == 1  # only the winner's effects


def test_a_double_submit_of_the_answers_saves_one(world):
    review, link = world.open()
    first, second = race(
        world,
        [
            request(world, link, {"answer-0": "A", "answer-1": "B"}),
            request(world, link, {"answer-0": "C", "answer-1": "D"}),
        ],
    )
    assert sorted([first.status, second.status]) == [200, 409]
    saved = world.review(review.review_id)
    assert saved.answers == (("A", "B") if first.status == 200 else ("C", "D"))
    world.settle()
    assert world.performed.kinds == [["CompleteTask", "CreateTask"]] and world.state.lost == 1


# ----------------------------------------------------------------------------- refusals


def test_a_tampered_cut_or_misplaced_link_gets_the_bad_link_page(world):
    review, link = world.open()
    token = link.rsplit("/", 1)[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (
        link.rsplit("/", 1)[0] + "/" + flipped,
        link[:-5],
        link.replace("/qc/answer/", "/qc/review/"),  # a manager's link on the reviewer's page
        link.rsplit("/", 1)[0] + "/not-a-token",
    ):
        for page in (world.get(bad), world.post(bad, {"answer-0": "x", "answer-1": "y"})):
            assert page.status_code == 404 and "Ссылка не работает" in text_of(page), bad
    assert world.review(review.review_id).status is qc.Status.AWAITING_ANSWERS
    assert world.performed.batches == []


def test_a_genuine_link_to_a_review_not_kept_gets_the_bad_link_page(world):
    key = link_key(world.ctx, world.config)
    link = links.make_link(
        "https://lw.example.com", TENANT, "lead:9:1", "manager", REJECTED + timedelta(days=1), key
    )
    assert world.get(link).status_code == 404


def test_an_expired_link_gets_its_page_and_changes_nothing(world):
    review, link = world.open()
    world.clock.set(review.answer_task.link_expires_at)
    for page in (world.get(link), world.post(link, {"answer-0": "x", "answer-1": "y"})):
        assert page.status_code == 410 and "Ссылка устарела" in text_of(page)
    assert world.review(review.review_id).status is qc.Status.AWAITING_ANSWERS


def test_a_review_ended_by_the_card_leaving_the_rejected_stage_says_so(world):
    review, link = world.open()
    config = world.config
    step = qc.card_changed(review, "IN_PROCESS", None, world.clock(), qc.QcRules.from_config(config.qc))
    stored = world.reviews.get(review.review_id)
    assert world.reviews.save(stored, step.review, world.clock())
    for page in (world.get(link), world.post(link, {"answer-0": "x", "answer-1": "y"})):
        assert page.status_code == 409 and "карточка ушла с этапа отказа" in text_of(page)


def test_a_reviewer_link_before_the_answers_is_not_yet(world):
    review, _ = world.open()
    key = link_key(world.ctx, world.config)
    early = links.make_link(
        "https://lw.example.com", TENANT, review.review_id, "reviewer", REJECTED + timedelta(days=1), key
    )
    for page in (world.get(early), world.post(early, {"decision": "return"})):
        assert page.status_code == 409 and "Проверка ещё не дошла до этого шага." in text_of(page)


def test_a_failure_inside_gets_a_plain_page_not_a_traceback(world, monkeypatch, caplog):
    _, link = world.open()

    def broken(*args, **kwargs):
        raise RuntimeError("the store is down <secret>")

    monkeypatch.setattr(Reviews, "get", broken)
    page = world.get(link)
    body = text_of(page)
    assert page.status_code == 500 and "Что-то пошло не так" in body
    assert "Traceback" not in body and "secret" not in body and "RuntimeError" not in body
    assert "the qc answer page failed" in caplog.text


def test_the_page_saves_and_leaves_the_crm_to_the_sweep_which_retries_what_failed(world, monkeypatch):
    review, link = world.open()
    performed = world.performed

    def down(*args, **kwargs):
        raise ConnectionError("crm down")

    monkeypatch.setattr(routes.service.executor, "perform", down)
    page = world.client.http.post(
        path_of(link),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=urlencode({"answer-0": "A", "answer-1": "B"}).encode(),
    )
    assert page.status_code == 200 and world.review(review.review_id).status is qc.Status.AWAITING_REVIEW
    with pytest.raises(ConnectionError):
        world.settle()  # the sweep's job fails; its next run tries again
    monkeypatch.setattr(routes.service.executor, "perform", performed)
    world.settle()
    assert performed.kinds == [["CompleteTask", "CreateTask"]]
    world.settle()
    assert performed.kinds == [["CompleteTask", "CreateTask"]]  # done: nothing pending


def test_a_tenant_without_an_api_key_cannot_have_links(world):
    from workflows.qc.view import LinksOff

    config = world.config.model_copy(update={"api_key": None})
    with pytest.raises(LinksOff, match="api_key"):
        link_key(world.ctx, config)


def test_a_write_lost_every_time_gives_up_with_a_page_and_performs_nothing(world, monkeypatch):
    review, link = world.open()
    monkeypatch.setattr(Reviews, "save", lambda self, stored, review, now, pending=None: False)
    page = world.post(link, {"answer-0": "A", "answer-1": "B"})
    assert page.status_code == 503 and "Обновите страницу" in text_of(page)
    assert world.performed.batches == []
    assert world.review(review.review_id).status is qc.Status.AWAITING_ANSWERS
