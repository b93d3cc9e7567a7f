"""Quality control's signed page links: a round trip gives back what was signed; any change to
any character, another tenant's key, a cut or a lengthened token is refused; expiry is exact."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workflows.qc import links
from workflows.qc.links import LinkProblem, Signed

KEY = links.derive_key("api-key-b24-Pp12", "acme-b24")
NOW = datetime(2025, 11, 14, 14, 30, tzinfo=UTC)
LATER = NOW + timedelta(days=14)
REVIEW = "lead:42:1763130600"
TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")

review_ids = st.text(min_size=1, max_size=80).filter(lambda s: "\n" not in s)
roles = st.sampled_from(["manager", "reviewer"])
expiries = st.integers(min_value=int(NOW.timestamp()) + 1, max_value=links.MAX_EXPIRY)


def token(review: str = REVIEW, role: str = "manager", expires: datetime | int = LATER) -> str:
    return links.make_token(review, role, expires, KEY)


def test_the_key_is_hmac_of_the_tenant_under_its_api_key():
    expected = hmac.new(b"api-key-b24-Pp12", b"leadwatch qc links v1|acme-b24", hashlib.sha256).digest()
    assert expected == KEY
    assert links.derive_key("api-key-b24-Pp12", "acme-amo") != KEY
    assert links.derive_key("another-key", "acme-b24") != KEY


def test_a_link_is_the_page_of_the_role_under_the_pages_address():
    answer = links.make_link("https://lw.example.com/api/", "acme-b24", REVIEW, "manager", LATER, KEY)
    review = links.make_link("https://lw.example.com/api", "acme-b24", REVIEW, "reviewer", LATER, KEY)
    prefix = "https://lw.example.com/api/tenants/acme-b24/qc/"
    assert answer.startswith(prefix + "answer/") and review.startswith(prefix + "review/")
    for link in (answer, review):
        assert TOKEN_CHARS.match(link.rsplit("/", 1)[1]) and "=" not in link
    assert links.check(answer.rsplit("/", 1)[1], KEY, NOW) == Signed(REVIEW, "manager", LATER)


@given(review_ids, roles, expiries)
def test_a_token_gives_back_what_was_signed(review, role, expires):
    made = links.make_token(review, role, expires, KEY)
    assert TOKEN_CHARS.match(made)
    assert links.check(made, KEY, NOW) == (review, role, datetime.fromtimestamp(expires, UTC))


@given(review_ids, roles, expiries, st.data())
def test_any_change_to_any_character_is_refused(review, role, expires, data):
    made = links.make_token(review, role, expires, KEY)
    at = data.draw(st.integers(0, len(made) - 1), label="position")
    char = data.draw(st.characters(codec="utf-8").filter(lambda c: c != made[at]), label="char")
    tampered = made[:at] + char + made[at + 1 :]
    assert links.check(tampered, KEY, NOW) in (LinkProblem.TAMPERED, LinkProblem.MALFORMED)


@given(review_ids, roles, expiries, st.data())
def test_a_token_cut_short_or_lengthened_is_refused(review, role, expires, data):
    made = links.make_token(review, role, expires, KEY)
    cut = data.draw(st.integers(0, len(made) - 1), label="cut")
    extra = data.draw(st.text(min_size=1, max_size=8), label="extra")
    for changed in (made[:cut], made + extra, extra + made):
        assert isinstance(links.check(changed, KEY, NOW), LinkProblem)


@given(review_ids, roles, expiries)
def test_another_tenants_key_is_refused(review, role, expires):
    made = links.make_token(review, role, expires, KEY)
    other = links.derive_key("api-key-b24-Pp12", "acme-amo")
    assert links.check(made, other, NOW) is LinkProblem.TAMPERED


def test_a_non_canonical_spelling_of_the_same_bytes_is_refused():
    made = token()
    head, mac = made.split(".")
    # 32 bytes take 43 characters, the last carrying 2 unused bits: flip one of those.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    spelled = alphabet[alphabet.index(mac[-1]) ^ 1]
    assert links._unb64(mac[:-1] + spelled) == links._unb64(mac)
    assert links.check(f"{head}.{mac[:-1]}{spelled}", KEY, NOW) is LinkProblem.TAMPERED


def test_a_link_works_until_the_second_it_expires():
    made = token(expires=LATER)
    assert links.check(made, KEY, LATER - timedelta(seconds=1)) == (REVIEW, "manager", LATER)
    assert links.check(made, KEY, LATER) is LinkProblem.EXPIRED
    # Sub-second expiries are cut to the second: a link never outlives the moment it was given.
    assert links.check(token(expires=LATER + timedelta(milliseconds=900)), KEY, LATER) is LinkProblem.EXPIRED


def test_a_forged_link_reads_as_forged_whatever_expiry_it_claims():
    head, mac = token(expires=NOW - timedelta(days=1)).split(".")
    forged = links._b64(f"{REVIEW}\nr\n{int(NOW.timestamp()) - 5}".encode())
    assert links.check(f"{forged}.{mac}", KEY, NOW) is LinkProblem.TAMPERED
    assert links.check(f"{head}.{mac}", KEY, NOW) is LinkProblem.EXPIRED


@pytest.mark.parametrize(
    "junk",
    ["", ".", "abc", "a.b.c", "!!!!.AAAA", "A.AAAA", "x" * 600 + ".y", "w6k.AAAA", "\ud800.AAAA"],
)
def test_what_is_not_a_token_is_malformed(junk):
    assert links.check(junk, KEY, NOW) in (LinkProblem.MALFORMED, LinkProblem.TAMPERED)


def test_shapes_that_cannot_be_tokens_are_malformed_before_any_signature_work():
    three = links._b64(b"lead:1\nm")  # two fields, not three
    assert links.check(f"{three}.AAAA", KEY, NOW) is LinkProblem.MALFORMED
    words = links._b64(b"lead:1\nm\nsoon")
    assert links.check(f"{words}.AAAA", KEY, NOW) is LinkProblem.MALFORMED
    assert links.check("x" * 600 + ".y", KEY, NOW) is LinkProblem.MALFORMED


@pytest.mark.parametrize(
    ("review", "role", "expires"),
    [
        ("", "manager", LATER),
        ("a\nb", "manager", LATER),
        (REVIEW, "head", LATER),
        (REVIEW, "manager", NOW.replace(tzinfo=None)),
        (REVIEW, "manager", links.MAX_EXPIRY + 1),
        (REVIEW, "manager", 0),
    ],
)
def test_what_cannot_be_signed_is_refused(review, role, expires):
    with pytest.raises(ValueError):
        links.make_token(review, role, expires, KEY)
