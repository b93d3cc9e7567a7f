"""The answer and review pages' routes (`Route`s of the qc process, auth "none": the signed link in
the path is the authentication). GET shows the page the review's state calls for; POST acts.

An action reads the review, runs the transition (`rules.submit_answers`, `rules.decide`), and
writes it over the version read, with its effects pending (workflows.qc.service); a lost race (a
double submit, two reviewers at once, the deadline sweep) reads again and decides again on what
is there now, so of two clicks one acts and the other is told it is done already. The deadline
sweep, woken at once, then performs the saved effects (exactly once each, by the executor's
ledger) within a minute: a transition that lost left nothing pending.

Whatever goes wrong, the person gets a page in their language, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from leadwatch.effects import to_data
from leadwatch.process import RouteRequest, RouteResponse
from workflows.qc import links, messages, pages, service
from workflows.qc import rules as qc
from workflows.qc.links import LinkProblem, Signed
from workflows.qc.reviews import Stored
from workflows.qc.rules import Refusal, Review, Status
from workflows.qc.view import link_key

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context
    from leadwatch.effects import Effect
    from workflows.qc.messages import QcView

log = logging.getLogger("leadwatch.qc.pages")

# Writes lost in a row before the page gives up: each loss means another writer moved the review
# on, and the next read sees it decided, so more than a couple means something is wrong.
MAX_TRIES = 5
HEADERS = {
    # The token in the URL is the key to the page: no cache keeps the page, no Referer carries it on.
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


def answer_page(ctx: Context, config: TenantConfig, request: RouteRequest) -> RouteResponse:
    """`qc/answer/{token}`: the manager's questions (GET) and their answers (POST)."""
    return _guarded(ctx, config, request, "manager")


def review_page(ctx: Context, config: TenantConfig, request: RouteRequest) -> RouteResponse:
    """`qc/review/{token}`: the answers and the card's history (GET), the decision (POST)."""
    return _guarded(ctx, config, request, "reviewer")


def _respond(page: pages.Page) -> RouteResponse:
    return RouteResponse(page.body, page.status, headers={**HEADERS, **page.extra})


def _guarded(ctx: Context, config: TenantConfig, request: RouteRequest, role: qc.Role) -> RouteResponse:
    try:
        return _respond(_page(ctx, config, request, role))
    except Exception:
        log.exception("tenant %s: the qc %s page failed", config.tenant, links.PAGE_OF[role])
        return _respond(pages.error_page(config.language))


class _Page:
    """One request's reading of its link: the tenant as the service sees it, the review it names."""

    def __init__(self, ctx: Context, config: TenantConfig, signed: Signed, key: bytes):
        self.ctx = ctx
        self.config = config
        self.signed = signed
        self.lang = config.language
        self.tenant = service.Tenant.of(ctx, config, key)
        self.reviews = self.tenant.reviews
        self.rules = self.tenant.rules
        self.calendar = self.tenant.calendar

    @property
    def view(self) -> QcView:
        return self.tenant.view

    def load(self) -> Stored | None:
        return self.reviews.get(self.signed.review_id)


def _page(ctx: Context, config: TenantConfig, request: RouteRequest, role: qc.Role) -> pages.Page:
    lang = config.language
    now = ctx.clock()
    key = link_key(ctx, config)
    signed = links.check(request.params.get("token", ""), key, now)
    if signed is LinkProblem.EXPIRED:
        return pages.expired_page(lang)
    if isinstance(signed, LinkProblem) or signed.role != role:
        return pages.bad_link_page(lang)
    page = _Page(ctx, config, signed, key)
    stored = page.load()
    if stored is None:  # never made here, or past the tenant's retention
        return pages.bad_link_page(lang)
    if request.method == "POST":
        form = request.form()
        if role == "manager":
            return _answer(page, stored, form)
        return _decide(page, stored, form)
    return _show(page, stored.review, role)


def _standing(review: Review, role: qc.Role) -> Refusal | None:
    """Why this role has nothing to do on the review as it stands (None: its page is shown)."""
    if review.status is Status.CLOSED:
        return Refusal.CLOSED
    if role == "manager":
        if review.status is Status.AWAITING_ANSWERS:
            return None
        if review.status is Status.OPENED:
            return Refusal.NOT_YET
        return Refusal.ALREADY_ANSWERED
    if review.status is Status.AWAITING_REVIEW:
        return None
    return Refusal.ALREADY_DECIDED if review.status in qc.DECIDED else Refusal.NOT_YET


def _refused(page: _Page, review: Review, refusal: Refusal) -> pages.Page:
    if refusal is Refusal.EXPIRED:
        return pages.expired_page(page.lang)
    if refusal is Refusal.WRONG_ROLE:
        return pages.bad_link_page(page.lang)
    if refusal is Refusal.ALREADY_DECIDED:
        return pages.refusal_page(refusal, page.lang, review, page.view.writer)
    return pages.refusal_page(refusal, page.lang)


def _show(page: _Page, review: Review, role: qc.Role) -> pages.Page:
    now = page.ctx.clock()
    refusal = qc.link_refusal(review, role, page.signed.expires_at, now) or _standing(review, role)
    if refusal is not None:
        return _refused(page, review, refusal)
    if role == "manager":
        return pages.answer_form(review, page.view)
    return pages.review_page(review, page.view, _history(page, review))


def _history(page: _Page, review: Review) -> pages.History:
    store = page.ctx.store
    # Dialing's own threshold where the tenant has it: a talk here is a talk in its reports.
    touch = getattr(getattr(page.config, "dialing", None), "touch_seconds", pages.TOUCH_SECONDS)
    return pages.History(
        store.get_lead(page.config.tenant, review.entity),
        store.calls_of(page.config.tenant, review.entity),
        touch_seconds=touch,
    )


def _text(value: str) -> str:
    """A posted text as the rules count it: a browser sends line breaks as CRLF, and its maxlength
    counts each as one character."""
    return value.replace("\r\n", "\n").replace("\r", "\n")


def _act(
    page: _Page,
    stored: Stored,
    attempt: Callable[[Review, datetime], pages.Page | qc.Transition],
    done: Callable[[Review], pages.Page],
) -> pages.Page:
    """Run `attempt` on the review as read and write what it gives over that version; when another
    writer got there first, read again and attempt again on what is there now. `attempt` returns
    the transition to save, or the page that says why there is none."""
    current: Stored | None = stored
    for _ in range(MAX_TRIES):
        if current is None:
            return pages.bad_link_page(page.lang)
        now = page.ctx.clock()
        outcome = attempt(current.review, now)
        if isinstance(outcome, pages.Page):
            return outcome
        effects = service.with_pending(page.tenant, outcome.review.review_id, outcome.effects)
        if page.reviews.save(current, outcome.review, now, [to_data(e) for e in effects]):
            _perform(page, outcome.review, effects, now)
            return done(outcome.review)
        current = page.load()
    log.warning(
        "tenant %s: review %s: gave up after %d lost writes",
        page.config.tenant,
        page.signed.review_id,
        MAX_TRIES,
    )
    return pages.error_page(page.lang, busy=True)


def _answer(page: _Page, stored: Stored, form: dict[str, str]) -> pages.Page:
    def attempt(review: Review, now: datetime) -> pages.Page | qc.Transition:
        answers = [_text(form.get(f"answer-{n}", "")) for n in range(len(review.questions))]
        refusal = qc.link_refusal(review, "manager", page.signed.expires_at, now)
        if refusal is not None:
            return _refused(page, review, refusal)
        step = qc.submit_answers(review, answers, now, page.rules, page.calendar, page.view)
        if step.refused in (Refusal.INCOMPLETE, Refusal.TOO_LONG):
            return pages.answer_form(review, page.view, answers, step.refused)
        if step.refused is not None:
            return _refused(page, review, step.refused)
        return step

    return _act(page, stored, attempt, lambda review: pages.answered_page(review, page.view))


def _decide(page: _Page, stored: Stored, form: dict[str, str]) -> pages.Page:
    given = form.get("decision", "")
    decision: qc.Decision | None = (
        "return" if given == "return" else "confirm" if given == "confirm" else None
    )
    comment = _text(form.get("comment", ""))

    def attempt(review: Review, now: datetime) -> pages.Page | qc.Transition:
        refusal = qc.link_refusal(review, "reviewer", page.signed.expires_at, now)
        if refusal is not None:
            return _refused(page, review, refusal)
        if decision is None:
            if (standing := _standing(review, "reviewer")) is not None:
                return _refused(page, review, standing)
            problem = pages.bad_choice(page.lang)
            return pages.review_page(review, page.view, _history(page, review), comment, problem)
        step = qc.decide(review, decision, now, page.rules, page.calendar, page.view, comment)
        if step.refused is Refusal.TOO_LONG:
            problem = messages.refusal_text(Refusal.TOO_LONG, page.lang)
            return pages.review_page(review, page.view, _history(page, review), comment, problem)
        if step.refused is not None:
            return _refused(page, review, step.refused)
        return step

    return _act(page, stored, attempt, lambda review: pages.decided_page(review, page.view))


def _perform(page: _Page, review: Review, effects: list[Effect], now: datetime) -> None:
    """The decision is saved with its effects pending: the deadline sweep performs them within a
    minute. The public API handler holds no CRM or bot credentials, so a page never calls the CRM
    itself (a leaked or abused page can change a review, never write to the CRM directly)."""
    page.ctx.wake(page.config.tenant, "qc", "sweep", now)
