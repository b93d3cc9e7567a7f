"""Quality control's pages in a real browser, served by the real Chalice routes over HTTP (the
local stack: moto's DynamoDB, the fake CRMs): the manager opens the link from their task on a
phone-sized screen, answers and sees it sent; the reviewer opens theirs, returns the card to work
and sees it done; a tampered link and an expired one get their own pages."""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from leadwatch.cards import LeadState
from leadwatch.config import TenantRegistry
from leadwatch.events import Call, EntityRef, EntityType, LeadSnapshot
from leadwatch.registry import ProcessRegistry
from leadwatch.testing.stack import AMO_TENANT, B24_TENANT, LocalStack, SimClock
from workflows import PROCESSES
from workflows.qc import rules as qc
from workflows.qc.reviews import Reviews
from workflows.qc.view import link_key, view

pytestmark = pytest.mark.timeout(900)  # the first run may install Chromium with apt

MSK = ZoneInfo("Europe/Moscow")
REJECTED = datetime(2025, 11, 11, 15, 0, tzinfo=MSK)  # a Tuesday afternoon
PHONE = {"width": 375, "height": 812}
SECTION = {
    "reviewers": ["1"],
    "pages_url": "http://127.0.0.1",  # the stack's address is known once it runs: set below
    "funnels": [
        {
            "stages": ["JUNK", "143"],
            "reason_field": "UF_CRM_1",
            "returned_stage": "IN_PROCESS",
            "reasons": [
                {
                    "id": 44,
                    "name": "Дорого",
                    "action": "check",
                    "questions": ["Какую цену ждал клиент?", "Предлагали скидку?"],
                }
            ],
        }
    ],
}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    registry = ProcessRegistry(PROCESSES)
    with LocalStack(
        SimClock(REJECTED),
        http=True,
        processes=registry,
        tenant_sections={"qc": SECTION},
        managers={"1": "Анна Петрова", "7": "Иван Сидоров"},
    ) as stack:
        # The links must point at this server, whose port was picked as it started.
        configs = {}
        for tenant in (B24_TENANT, AMO_TENANT):
            config = stack.ctx.tenant(tenant)
            qc_section = config.qc.model_copy(update={"pages_url": stack.base_url})
            configs[tenant] = config.model_copy(update={"qc": qc_section})
        stack.ctx.registry = TenantRegistry(configs)
        yield stack


@pytest.fixture
def phone(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True)
    try:
        yield context.new_page()
    finally:
        context.close()


def open_review(stack: LocalStack, tenant: str, card_id: str) -> tuple[qc.Review, str]:
    """A review started as the worker will start it; the link its manager's task carries."""
    config = stack.ctx.tenant(tenant)
    rules = qc.QcRules.from_config(config.qc)
    stage = "JUNK" if tenant == B24_TENANT else "143"
    card = LeadSnapshot(
        EntityRef(EntityType.LEAD, card_id),
        stage,
        "7",
        REJECTED - timedelta(days=1),
        modified_at=REJECTED,
        title="Трубы и <клапаны>",
        fields={"UF_CRM_1": "44"},
    )
    review = qc.open_review(tenant, card, qc.route_card(rules, card), REJECTED, rules, config.language)
    assert review is not None
    step = qc.start(
        review,
        stack.clock(),
        rules,
        stack.ctx.calendar(config),
        view(stack.ctx, config, link_key(stack.ctx, config)),
    )
    assert Reviews(stack.ctx.state("qc"), tenant).create(step.review, stack.clock())
    [task] = step.effects
    assert task.link.startswith(stack.base_url + f"/tenants/{tenant}/qc/answer/")
    return step.review, task.link


def stored(stack: LocalStack, tenant: str, review_id: str) -> qc.Review:
    found = Reviews(stack.ctx.state("qc"), tenant).get(review_id)
    assert found is not None
    return found.review


def png_pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of pixels of an 8-bit, non-interlaced RGB(A) PNG (Chromium's)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, data, width, height, channels = 8, b"", 0, 0, 0
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        at += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            data += body
    raw, stride, rows, previous = zlib.decompress(data), width * channels, [], bytearray(width * channels)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up, corner = previous[x], previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def assert_fits_the_phone(page: Any, selector: str, button: bool = True) -> None:
    """Nothing wider than the screen, and `selector` (a button: big enough for a thumb) on it once
    scrolled to; a screenshot of the screen that is not blank."""
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    target = page.locator(selector)
    target.scroll_into_view_if_needed()
    box = target.bounding_box()
    assert box is not None
    if button:
        assert box["width"] >= 200 and box["height"] >= 44
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"]
    shot = page.screenshot()
    if folder := os.environ.get("LEADWATCH_SCREENSHOTS"):  # to look at them: a folder to keep them in
        name = re.sub(r"\W+", "-", page.locator("h1").inner_text().lower()).strip("-")
        (Path(folder) / f"{name}.png").write_bytes(shot)
    width, height, rows = png_pixels(shot)
    assert (width, height) == (PHONE["width"], PHONE["height"])
    colours = {row[x : x + 3] for row in rows[::8] for x in range(0, len(row), 3 * 8)}
    assert len(colours) > 5, "the screenshot is blank"


def test_a_manager_answers_and_a_reviewer_returns_the_card_to_work(stack, phone):
    store = stack.ctx.store
    card = EntityRef(EntityType.LEAD, "42")
    lead = LeadState(
        B24_TENANT, card, REJECTED - timedelta(days=1), REJECTED - timedelta(days=1, minutes=-15), "JUNK", "7"
    )
    store.create_lead(lead, lead.created_at)
    call = Call(
        "act1", card, "out", "7", REJECTED - timedelta(hours=3), 75, True, "https://rec.example/1.mp3"
    )
    store.record_call(B24_TENANT, call, call.started_at.astimezone(MSK).date(), True, REJECTED)
    review, answer_link = open_review(stack, B24_TENANT, "42")

    phone.goto(answer_link)
    assert phone.locator("h1").inner_text() == "Вопросы по отказу"
    assert phone.get_by_text("Трубы и <клапаны>").is_visible()
    assert phone.get_by_text("Какую цену ждал клиент?").is_visible()
    assert_fits_the_phone(phone, "#send")

    # Blank answers are refused by the page itself (required); spaces only, by the server.
    phone.fill("#answer-0", "Около 40 тысяч")
    phone.fill("#answer-1", "   ")
    phone.click("#send")
    assert phone.get_by_role("alert").inner_text() == "Ответьте, пожалуйста, на все вопросы."
    assert phone.input_value("#answer-0") == "Около 40 тысяч"  # the text is kept
    phone.fill("#answer-1", "Да, 5%.\nНе помогло.")
    stack.clock.advance(timedelta(minutes=20))
    phone.click("#send")
    assert phone.locator("h1").inner_text() == "Ответы отправлены"
    answered = stored(stack, B24_TENANT, review.review_id)
    assert answered.status is qc.Status.AWAITING_REVIEW
    assert answered.answers == ("Около 40 тысяч", "Да, 5%.\nНе помогло.")

    # The reviewer's link, as the reviewer's task carries it.
    config = stack.ctx.tenant(B24_TENANT)
    qc_view = view(stack.ctx, config, link_key(stack.ctx, config))
    review_link = qc_view.page_link(answered, "reviewer", answered.review_task.link_expires_at)
    phone.goto(review_link)
    assert phone.locator("h1").inner_text() == "Проверка отказа"
    assert phone.get_by_text("Около 40 тысяч").is_visible()
    assert phone.get_by_role("link", name="запись").get_attribute("href") == "https://rec.example/1.mp3"
    assert_fits_the_phone(phone, "#return")
    phone.fill("#comment", "Перезвонить, предложить рассрочку")
    stack.clock.advance(timedelta(minutes=30))
    phone.click("#return")
    assert phone.locator("h1").inner_text() == "Возвращено в работу"
    decided = stored(stack, B24_TENANT, review.review_id)
    assert decided.status is qc.Status.RETURNED and decided.comment == "Перезвонить, предложить рассрочку"

    # Back and click again: the decision stands, and the page says so.
    phone.go_back()
    phone.reload()
    assert phone.locator("h1").inner_text() == "Решение уже принято"


def test_a_tampered_and_an_expired_link_get_their_pages(stack, phone):
    _, link = open_review(stack, AMO_TENANT, "77")
    head, token = link.rsplit("/", 1)
    tampered = head + "/" + token[:10] + ("x" if token[10] != "x" else "y") + token[11:]
    phone.goto(tampered)
    assert phone.locator("h1").inner_text() == "This link does not work"
    assert phone.get_by_role("alert").is_visible()

    phone.goto(link)
    assert phone.locator("h1").inner_text() == "Questions about a rejection"
    stack.clock.advance(timedelta(days=60))
    try:
        phone.goto(link)
        assert phone.locator("h1").inner_text() == "This link has expired"
        assert "Ask your head of sales for a new one." in phone.get_by_role("alert").inner_text()
        assert_fits_the_phone(phone, "h1", button=False)
    finally:
        stack.clock.advance(-timedelta(days=60))
