"""Keeping secrets out of log lines and out of kept request bodies.

Two nets, because neither alone is enough:
- the values themselves: every secret `leadwatch.secrets` resolves is remembered here (raw and
  percent-encoded), so a value is masked wherever it turns up;
- the places secrets travel in, whatever their value: a Bitrix24 inbound webhook's code in
  `/rest/<user>/<code>/`, a Telegram bot token in `/bot<token>/`, amoCRM's `?key=`, OAuth
  tokens in a query or a form, `Authorization` headers, `auth[...]` form fields (Bitrix24's
  application token, an installed app's access and refresh tokens) and SSM's `"Value"`.

`RedactingFilter` applies both to log records (leadwatch.observability puts it on the service's
handler and the root logger's); `strip_body` removes secret-bearing form fields from a body
before it is kept. Nothing here logs.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus, unquote_plus

_S = TypeVar("_S", str, bytes)

MASK = "***"
# Shorter values are not masked: a 3-character "secret" would blank ordinary words and ids.
MIN_LENGTH = 6

# Form or JSON field names whose value is a credential wherever they appear.
SECRET_FIELDS = frozenset(
    {
        "key",
        "token",
        "access_token",
        "refresh_token",
        "application_token",
        "client_secret",
        "secret",
        "password",
        "api_key",
    }
)
_FIELD_NAMES = "|".join(sorted(SECRET_FIELDS, key=len, reverse=True))

# (pattern, replacement) applied to text, in order.
_PLACES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Bitrix24 inbound webhook: {portal}/rest/{user}/{code}/{method}
    (re.compile(r"(/rest/\d+/)[^/\s?#'\"]+"), r"\1" + MASK),
    # Telegram Bot API: /bot<id>:<token>/<method>
    (re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+"), r"\1" + MASK),
    # Query or form fields: ?key=..., &access_token=..., application_token=...
    (re.compile(rf"((?:^|[?&\s\"'])(?:{_FIELD_NAMES})=)[^&\s#'\"]+", re.IGNORECASE), r"\1" + MASK),
    # auth[...]=... in a form, raw or percent-encoded (auth%5Bapplication_token%5D=...)
    (re.compile(r"(auth(?:\[|%5B)[^=&\s]*=)[^&\s'\"]+", re.IGNORECASE), r"\1" + MASK),
    # JSON fields: "access_token": "...", and SSM's "Value": "..."
    (
        re.compile(rf"(\"(?:{_FIELD_NAMES}|Value)\"\s*:\s*\")(?:[^\"\\]|\\.)*", re.IGNORECASE),
        r"\1" + MASK,
    ),
    # Authorization: Bearer xyz / 'Authorization': 'Basic xyz' / X-Api-Key: xyz
    (
        re.compile(
            r"((?:authorization|x-api-key)['\"]?\s*[:=]\s*['\"]?(?:(?:bearer|basic|token)\s+)?)[^\s'\",}]+",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
)

_lock = threading.Lock()
_known: set[str] = set()
# The first MIN_LENGTH characters of every known form -> the forms, longest first. Scanning a line
# costs one dict lookup per character however many secrets are known (a warm Lambda may know a
# thousand tenants'); one big regex alternation would try each of them at every character.
_index: dict[str, tuple[str, ...]] = {}
_byte_index: dict[bytes, tuple[bytes, ...]] = {}


def remember(value: str) -> None:
    """A secret value to mask from now on (leadwatch.secrets calls this for every value it reads)."""
    if len(value) < MIN_LENGTH:
        return
    forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
    with _lock:
        for form in forms - _known:
            _known.add(form)
            _add(_index, form)
            _add(_byte_index, form.encode("utf-8", "surrogatepass"))


def _add(index: dict[Any, tuple[Any, ...]], form: Any) -> None:
    key = form[:MIN_LENGTH]
    index[key] = tuple(sorted({*index.get(key, ()), form}, key=len, reverse=True))


def forget_all() -> None:
    """For tests: start from no known value."""
    with _lock:
        _known.clear()
        _index.clear()
        _byte_index.clear()


def _mask_known(text: _S, index: dict[_S, tuple[_S, ...]], mask: _S) -> _S:
    if not index:
        return text
    parts: list[_S] = []
    start = i = 0
    last = len(text) - MIN_LENGTH
    while i <= last:
        for form in index.get(text[i : i + MIN_LENGTH], ()):
            if text.startswith(form, i):
                parts += [text[start:i], mask]
                i = start = i + len(form)
                break
        else:
            i += 1
    if not parts:
        return text
    parts.append(text[start:])
    return text[:0].join(parts)


def redact(text: str) -> str:
    """`text` with every known secret value and every secret-looking part masked."""
    text = _mask_known(text, _index, MASK)
    for place, replacement in _PLACES:
        text = place.sub(replacement, text)
    return text


def redact_bytes(data: bytes) -> bytes:
    """`redact` for raw bytes: known values in UTF-8, and the places (all ASCII) byte for byte."""
    data = _mask_known(data, _byte_index, MASK.encode())
    # latin-1 maps every byte to one character and back, so the places match without decoding.
    return redact(data.decode("latin-1")).encode("latin-1")


def _field_name(piece: bytes) -> str:
    name = unquote_plus(piece.split(b"=", 1)[0].decode("latin-1")).strip().lower()
    return name.split("[", 1)[0] if not name.startswith("auth[") else name


def strip_body(body: bytes) -> bytes:
    """A request body fit to keep: form fields `auth[...]` and credential-named ones dropped
    (whatever their value), then every known secret and secret-looking part masked."""
    kept = [
        piece
        for piece in body.split(b"&")
        if not (_field_name(piece).startswith("auth[") or _field_name(piece) in SECRET_FIELDS)
    ]
    return redact_bytes(b"&".join(kept))


class RedactingFilter(logging.Filter):
    """Masks secrets in a record before any handler formats it: the message with its arguments,
    an exception's text and a stack. A record that carries none is left as it is."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: the handler will report it as it would
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and record.exc_info[0] is not None:
            text = self._formatter.formatException(record.exc_info)
            masked = redact(text)
            if masked != text:
                # Formatters (Powertools' too) render exc_info, not exc_text: put in its place an
                # exception of the same name whose text is the masked traceback.
                kind = record.exc_info[0]
                stand_in = type(kind.__name__, (Exception,), {"__module__": kind.__module__})
                record.exc_info = (stand_in, stand_in(masked), None)
                record.exc_text = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
