"""Signed links to the answer and review pages: whoever holds one may act on one review, in one
role, until it expires; nothing else is needed to open the page (no login on a phone).

A token is `<payload>.<mac>`, both base64url without padding. The payload is the review id, the
role (`m` manager, `r` reviewer) and the expiry in unix seconds, joined by newlines (a review id
holds no newline); the mac is HMAC-SHA256 over the payload's bytes under the tenant's link key.
The whole token is rebuilt from what it says and compared with what came in, in constant time,
so any change to any character (a non-canonical base64 spelling of the same bytes too) is refused.

The link key is derived per tenant from the tenant's read API key (`api_key`):
HMAC(api_key, "leadwatch qc links v1|<tenant>"). One tenant's links are worthless to another,
the key is never stored, and changing the API key voids every link given out (people ask for
new ones; the deadline sweep's reminders carry fresh ones).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal, NamedTuple
from urllib.parse import quote

Role = Literal["manager", "reviewer"]

KEY_LABEL = "leadwatch qc links v1|"
ROLE_CODES: dict[str, Role] = {"m": "manager", "r": "reviewer"}
CODE_OF: dict[str, str] = {role: code for code, role in ROLE_CODES.items()}
# The page a role's link opens: the manager answers, the reviewer reviews.
PAGE_OF: dict[str, str] = {"manager": "answer", "reviewer": "review"}
# Far more than any review id and expiry take (about 120 characters): a longer token is junk, and
# is refused before any decoding or hashing work.
MAX_TOKEN_CHARS = 512
MAX_EXPIRY = 253_402_300_799  # 9999-12-31 23:59:59 UTC, the last second a datetime holds
_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class LinkProblem(StrEnum):
    MALFORMED = "malformed"  # not a token at all (cut short in a message, mangled by a mail client)
    TAMPERED = "tampered"  # well formed, but not signed by this tenant's key
    EXPIRED = "expired"  # genuine, past its expiry


class Signed(NamedTuple):
    review_id: str
    role: Role
    expires_at: datetime


def derive_key(api_key: str, tenant: str) -> bytes:
    """The tenant's link key, from its read API key."""
    return hmac.new(api_key.encode("utf-8"), (KEY_LABEL + tenant).encode("utf-8"), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    """Strict base64url without padding (ValueError otherwise)."""
    if not text or any(c not in _ALPHABET for c in text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def _unix(moment: datetime | int) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        # Down to the second: a link never outlives the moment it was given.
        moment = math.floor(moment.timestamp())
    if not 0 < moment <= MAX_EXPIRY:
        raise ValueError(f"expiry {moment}: not a moment a link can carry")
    return int(moment)


def _payload(review_id: str, role: str, expires: int) -> bytes:
    return f"{review_id}\n{CODE_OF[role]}\n{expires}".encode()


def _sign(payload: bytes, key: bytes) -> str:
    return f"{_b64(payload)}.{_b64(hmac.new(key, payload, hashlib.sha256).digest())}"


def make_token(review_id: str, role: str, expires_at: datetime | int, key: bytes) -> str:
    if role not in CODE_OF:
        raise ValueError(f"role {role!r}: manager or reviewer")
    if not review_id or "\n" in review_id:
        raise ValueError(f"review id {review_id!r}: not empty, one line")
    return _sign(_payload(review_id, role, _unix(expires_at)), key)


def page_path(tenant: str, role: str, token: str) -> str:
    return f"/tenants/{quote(tenant, safe='')}/qc/{PAGE_OF[role]}/{token}"


def make_link(
    pages_url: str, tenant: str, review_id: str, role: str, expires_at: datetime | int, key: bytes
) -> str:
    """The page's address: `{pages_url}/tenants/{tenant}/qc/{answer|review}/{token}`."""
    return pages_url.rstrip("/") + page_path(tenant, role, make_token(review_id, role, expires_at, key))


def check(token: str, key: bytes, now: datetime) -> Signed | LinkProblem:
    """What a token grants, or why not. The signature is checked before the expiry: a forged
    link reads as forged whatever expiry it claims."""
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        return LinkProblem.MALFORMED
    head, _, _ = token.partition(".")
    try:
        payload = _unb64(head)
        review_id, code, expires_text = payload.decode("utf-8").split("\n")
    except ValueError:  # UnicodeDecodeError is a ValueError
        return LinkProblem.MALFORMED
    if not expires_text.isascii() or not expires_text.isdigit():
        return LinkProblem.MALFORMED
    expected = _sign(payload, key)
    if not hmac.compare_digest(expected.encode("ascii"), token.encode("utf-8", "surrogatepass")):
        return LinkProblem.TAMPERED
    role = ROLE_CODES.get(code)
    if role is None or not review_id:
        return LinkProblem.TAMPERED  # signed by us, never made by make_token: treat as foreign
    expires = int(expires_text)
    if now.timestamp() >= expires:
        return LinkProblem.EXPIRED
    return Signed(review_id, role, datetime.fromtimestamp(expires, UTC))
