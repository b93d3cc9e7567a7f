"""Telegram Bot API: messages to the head of sales, in parse_mode=HTML.

`escape`/`link` build safe HTML, `split_message` cuts a long report into parts
Telegram accepts, and `TelegramNotifier` sends them through `HttpClient`
(pacing per chat, retries that honour `retry_after`). Telegram failures are the
same `CrmError` classes the CRM adapters raise, so the executor treats them alike.

The bot token is part of every URL (`/bot<token>/sendMessage`); it is handed to
`HttpClient` as a secret so no exception message, repr or log carries it.
"""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import requests

from crm_adapters.base import CrmError, CrmRateLimited, CrmRejected, CrmUnavailable
from crm_adapters.http import HttpClient, RetryPolicy, acquire_within
from crm_adapters.limits import Chain, Limiter, SharedLimits, Window, WindowLimiter
from leadwatch.secrets import Secret

MAX_MESSAGE_LENGTH = 4096  # "1-4096 characters after entities parsing"
# Pacing with headroom under the Bot FAQ's limits (core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this):
CHAT_INTERVAL = 1.2  # "avoid sending more than one message per second" in a chat
GROUP_LIMIT, GROUP_PERIOD = 18, 60.0  # "not able to send more than 20 messages per minute to the same group"
GLOBAL_LIMIT = 25  # a second, over all chats: "will not allow more than 30 messages per second or so"

# Elements whose content must stay whole: a custom emoji's fallback emoji, a date-time's text.
_UNSPLITTABLE = frozenset({"tg-emoji", "tg-time"})


# ----- building HTML
def escape(text: str, *, quote: bool = False) -> str:
    """Escape text for parse_mode=HTML; `quote=True` also escapes `"` (attribute values)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&quot;") if quote else text


def link(url: str, label: str) -> str:
    return f'<a href="{escape(url, quote=True)}">{escape(label)}</a>'


# ----- reading HTML (what Telegram will count)
@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["text", "open", "close"]
    raw: str
    name: str = ""  # tag name, lower case (open/close)
    char: str = ""  # the visible character (text)
    units: int = 0  # UTF-16 code units of `char`


_TAG = re.compile(
    r"""<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+[^\s=>/"']+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>"']+))?)*)\s*>"""
)
_ENTITY = re.compile(r"&(?:#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,7}|lt|gt|amp|quot);")


def _units(text: str) -> int:
    # Count UTF-16 code units: never less than code points, so a part that fits
    # by this measure fits whichever way Telegram counts.
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def _tokenize(html_text: str) -> list[_Token]:
    """Tokens of Telegram HTML: one per visible character (an entity is one), one per tag.

    Raises ValueError for a `<` that starts no tag and for unbalanced tags: the
    splitter cannot keep such markup valid. Tag names are not checked here;
    Telegram answers an unsupported tag with 400.
    """
    tokens: list[_Token] = []
    stack: list[str] = []
    index = 0
    while index < len(html_text):
        char = html_text[index]
        if char == "<":
            match = _TAG.match(html_text, index)
            if match is None:
                raise ValueError(f"HTML: '<' at offset {index} starts no tag (escape it as &lt;)")
            closing, name, attributes = match[1] == "/", match[2].lower(), match[3]
            if closing:
                if attributes.strip():
                    raise ValueError(f"HTML: end tag </{name}> at offset {index} has attributes")
                if not stack or stack[-1] != name:
                    expected = f"</{stack[-1]}>" if stack else "no end tag"
                    raise ValueError(f"HTML: </{name}> at offset {index}, expected {expected}")
                stack.pop()
            else:
                stack.append(name)
            tokens.append(_Token("close" if closing else "open", match[0], name))
            index = match.end()
            continue
        match = _ENTITY.match(html_text, index) if char == "&" else None
        if match is not None:
            decoded = html.unescape(match[0])
            tokens.append(_Token("text", match[0], char=decoded, units=_units(decoded)))
            index = match.end()
            continue
        tokens.append(_Token("text", char, char=char, units=_units(char)))
        index += 1
    if stack:
        raise ValueError(f"HTML: <{stack[-1]}> is never closed")
    return tokens


def visible_text(html_text: str) -> str:
    """The text Telegram shows for `html_text` (tags removed, entities decoded, not stripped)."""
    return "".join(t.char for t in _tokenize(html_text))


def visible_length(html_text: str) -> int:
    """Length as Telegram's limit counts it (after entity parsing), in UTF-16 code units."""
    return sum(t.units for t in _tokenize(html_text))


# ----- splitting
def split_message(
    html_text: str, limit: int = MAX_MESSAGE_LENGTH, *, raw_limit: int | None = None
) -> list[str]:
    """Cut Telegram HTML into parts of at most `limit` visible characters each.

    Each part is also at most `raw_limit` characters of markup (default
    max(4 x limit, 4096): long hrefs cost nothing visible but still travel). Cuts go after
    a newline when possible, else after whitespace, else anywhere between two
    visible characters; never inside a tag, an entity or a custom emoji. Tags
    open across a cut are closed at the end of one part and reopened (same
    attributes) at the start of the next, so every part is valid on its own.
    The parts' visible texts concatenate to the original's; parts with no
    visible character at all are left out. A part may be whitespace only
    (Telegram refuses those: `TelegramNotifier.send_long` skips them).

    Raises ValueError for malformed markup, or if a cut cannot fit `raw_limit`.
    """
    if limit < 2:
        raise ValueError("limit must be at least 2 (an emoji is 2 UTF-16 units)")
    raw_limit = max(4 * limit, MAX_MESSAGE_LENGTH) if raw_limit is None else raw_limit
    tokens = _tokenize(html_text)
    if not any(t.kind == "text" for t in tokens):
        return []
    if sum(t.units for t in tokens) <= limit and len(html_text) <= raw_limit:
        return [html_text]

    parts: list[str] = []
    start = 0
    stack: list[_Token] = []  # tags open at `start`, outermost first
    while start < len(tokens):
        cut, stack_after = _next_cut(tokens, start, stack, limit, raw_limit)
        body = "".join(t.raw for t in stack) + "".join(t.raw for t in tokens[start:cut])
        body += "".join(f"</{t.name}>" for t in reversed(stack_after))
        if any(t.kind == "text" for t in tokens[start:cut]):
            parts.append(body)
        start, stack = cut, stack_after
    return parts


def _next_cut(
    tokens: list[_Token], start: int, stack: list[_Token], limit: int, raw_limit: int
) -> tuple[int, list[_Token]]:
    """Where the part starting at `start` ends, and the tags still open there."""
    open_now = list(stack)
    units = 0
    raw = sum(len(t.raw) for t in stack)
    best: dict[str, tuple[int, list[_Token]]] = {}  # "line" | "word" | "hard" -> latest cut of that kind
    last_char = ""
    for index in range(start, len(tokens)):
        token = tokens[index]
        if token.kind == "text":
            if units + token.units > limit:
                break
            units += token.units
            last_char = token.char
        elif token.kind == "open":
            open_now.append(token)
        else:
            open_now.pop()
        raw += len(token.raw)
        if raw > raw_limit:
            break
        cut = index + 1
        if cut == len(tokens):
            return cut, []
        # A cut sits after a visible character plus the end tags right behind it:
        # never after a start tag (it would leave an empty element behind), never
        # inside an element whose content must stay whole.
        if token.kind == "open" or tokens[cut].kind == "close" or units == 0:
            continue
        if any(t.name in _UNSPLITTABLE for t in open_now):
            continue
        if raw + sum(len(t.name) + 3 for t in open_now) > raw_limit:
            continue
        kind = "line" if last_char == "\n" else "word" if last_char.isspace() else "hard"
        best[kind] = (cut, list(open_now))
    for kind in ("line", "word", "hard"):
        if kind in best:
            return best[kind]
    raise ValueError(
        f"cannot cut the message at token {start}: the open tags and the next character "
        f"do not fit raw_limit={raw_limit} / limit={limit}"
    )


# ----- errors
class TelegramRejected(CrmRejected):
    """Telegram refused the request (4xx other than 429). `description` is Telegram's own."""

    def __init__(
        self,
        message: str,
        *,
        description: str,
        status: int | None = None,
        migrate_to_chat_id: int | None = None,
    ):
        super().__init__(message, status=status)
        self.description = description
        self.migrate_to_chat_id = migrate_to_chat_id

    @property
    def not_in_chat(self) -> bool:
        """The bot cannot post to the chat any more: removed from the group, blocked by the person,
        or the chat is gone. Nothing is sent there until someone adds the bot back."""
        text = self.description.lower()
        return (self.status == 403 and any(w in text for w in _NOT_IN_CHAT)) or "chat not found" in text


# Bot API 403 descriptions: "bot was kicked from the group chat", "bot is not a member of the
# supergroup chat", "bot was blocked by the user", "user is deactivated".
_NOT_IN_CHAT = ("kicked", "not a member", "blocked", "deactivated")


class InvalidMessage(CrmRejected, ValueError):
    """The text cannot be sent as it is (too long, empty, malformed HTML); nothing was sent.

    A ValueError for the caller's bug, and a non-retryable CrmRejected so a
    runner that handles CrmError skips this message and goes on with the next.
    """

    def __init__(self, message: str):
        super().__init__(message)


def _payload(response: requests.Response) -> dict[str, Any] | None:
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _chat_id_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | str) and re.fullmatch(r"-?[0-9]+", str(value)) else None


def classify(response: requests.Response) -> CrmError | None:
    """HttpClient's error classification for Bot API answers."""
    status = response.status_code
    payload = _payload(response)
    if 200 <= status < 300:
        if payload is not None and payload.get("ok") is True:
            return None
        # A 200 that is not the Bot API envelope comes from something in between (a proxy).
        return CrmUnavailable(f"telegram: HTTP {status} without an ok answer", status=status)
    description = ""
    parameters: dict[str, Any] = {}
    if payload is not None:
        description = str(payload.get("description") or "")
        if isinstance(payload.get("parameters"), dict):
            parameters = payload["parameters"]
    # nginx error pages are HTML: name the status, never echo the body.
    description = description or f"HTTP {status} {response.reason or ''}".strip()
    if status == 429:
        retry_after = _number(parameters.get("retry_after"))
        if retry_after is None:
            retry_after = _number(response.headers.get("Retry-After"))
        if retry_after is None:
            found = re.search(r"retry after (\d+)", description)
            retry_after = float(found.group(1)) if found else None
        return CrmRateLimited(f"telegram: {description}", retry_after=retry_after, status=status)
    if status >= 500 or status == 408:
        return CrmUnavailable(f"telegram: {description}", status=status)
    migrate_to = parameters.get("migrate_to_chat_id")
    message = f"telegram: {description}"
    if migrate_to is not None:
        message += f" (the chat moved: its new chat_id is {migrate_to}; update the configured chat id)"
    elif status == 401:
        message += " (the bot token is wrong or was revoked)"
    elif status == 404:
        message += " (unknown method, or a malformed bot token)"
    return TelegramRejected(
        message,
        description=description,
        status=status,
        migrate_to_chat_id=_chat_id_or_none(migrate_to),
    )


# ----- sending
class TelegramNotifier:
    """Sends through `HttpClient`, paced under Telegram's limits with headroom (Bot FAQ, "My bot
    is hitting limits": in one chat no more than one message a second, short bursts tolerated; no
    more than 20 messages a minute to one group; about 30 a second in all):

    - one message per `chat_interval` seconds (1.2) in each chat;
    - in a group (a negative chat id: groups, supergroups, channels) at most `group_limit` (18)
      in any `group_period` seconds (60);
    - at most `global_limit` (25) a second from this container, over all chats.

    With `limits` (the deployment's shared limits) each chat's pace also holds across containers
    and tenants (Telegram counts per bot and chat: the counters are the bot's, by its public id,
    not a tenant's; two tenants may share a bot and a group): slots of `chat_interval` (a
    group's: `group_period` / `group_limit`) with one message each. Two messages may then fall at the two ends of a slot
    boundary, which the chat's short-burst allowance takes; in a group any 60 s touch at most 19
    slots. The global pace stays per container: a deployment's alerts are far below 30 a second.

    `token`: the bot token, or a `Secret` to ask for it at each send (so a token replaced in SSM
    is used once read, and a 401 makes it be read again).
    """

    def __init__(
        self,
        token: str | Secret,
        *,
        api_base: str = "https://api.telegram.org",
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        policy: RetryPolicy | None = None,
        chat_interval: float = CHAT_INTERVAL,
        group_limit: int = GROUP_LIMIT,
        group_period: float = GROUP_PERIOD,
        global_limit: int = GLOBAL_LIMIT,
        monotonic: Callable[[], float] = time.monotonic,
        timeout: tuple[float, float] = (5.0, 20.0),
        limits: SharedLimits | None = None,
    ):
        self._token = token if isinstance(token, Secret) else Secret.fixed(token)
        value = self._token.get()
        if not value:
            raise ValueError("the Telegram bot token is empty")
        self.api_base = api_base.rstrip("/")
        self._chat_interval = chat_interval
        self._group_limit = group_limit
        self._group_period = group_period
        self._sleep = sleep
        self._monotonic = monotonic
        self._limits = limits
        self._bot = "telegram:" + value.split(":", 1)[0]  # the bot's id: public, unlike the rest
        self._chat_limiters: dict[str, Limiter] = {}
        self._lock = threading.Lock()
        self._global = WindowLimiter(global_limit, 1.0, monotonic, sleep)
        self._client_settings = (policy, session, timeout)
        self._http_token = value
        self.http = self._new_client(value)

    def _new_client(self, token: str) -> HttpClient:
        policy, session, timeout = self._client_settings
        return HttpClient(
            classify,
            limiter=self._global,
            policy=policy,
            session=session,
            sleep=self._sleep,
            timeout=timeout,
            secrets=(token,),
        )

    def _request(self, token: str, method: str, api_method: str, **kwargs: Any) -> requests.Response:
        """One Bot API request with this token, through a client that masks it (made again when
        the token changed; its call count goes on)."""
        with self._lock:
            if token != self._http_token:
                calls = self.http.calls
                self.http = self._new_client(token)
                self.http.calls = calls
                self._http_token = token
            http = self.http
        return http.request(method, f"{self.api_base}/bot{token}/{api_method}", **kwargs)

    def __repr__(self) -> str:
        return f"TelegramNotifier(api_base={self.api_base!r})"

    def _limiter(self, chat_id: str) -> Limiter:
        with self._lock:
            limiter = self._chat_limiters.get(chat_id)
            if limiter is None:
                limiter = self._chat_limiters[chat_id] = self._new_limiter(chat_id)
            return limiter

    def _new_limiter(self, chat_id: str) -> Limiter:
        # One log for the chat's spacing and its group's minute, so both count the time the
        # message goes; the shared slots come last, right before it goes.
        also: tuple[tuple[int, float], ...] = ()
        window = Window(self._chat_interval, 1)
        if chat_id.startswith(("-", "@")):  # a group, supergroup or channel (@username)
            also = ((self._group_limit, self._group_period),)
            window = Window(max(self._chat_interval, self._group_period / self._group_limit), 1)
        local = WindowLimiter(1, self._chat_interval, self._monotonic, self._sleep, also=also)
        if self._limits is None:
            return local
        return Chain(local, self._limits.limiter(self._bot, f"chat#{chat_id}", window))

    def send(
        self,
        chat_id: str | int,
        html_text: str,
        *,
        disable_preview: bool = True,
        disable_notification: bool = False,
    ) -> int:
        """Send one HTML message; return its message_id.

        Raises InvalidMessage (a ValueError) without sending if the text is
        over 4096 characters after entity parsing (use `split_message` or
        `send_long`), has no visible text, or has malformed markup; CrmError
        subclasses for what Telegram answers; OutcomeUnknown (not retried) when the
        request left and no answer came: the message may have been delivered.
        """
        try:
            tokens = _tokenize(html_text)
        except ValueError as exc:
            raise InvalidMessage(f"telegram: not sent: {exc}") from None
        length = sum(t.units for t in tokens)
        if length > MAX_MESSAGE_LENGTH:
            raise InvalidMessage(
                f"telegram: not sent: the message is {length} characters after entity parsing, "
                f"over Telegram's {MAX_MESSAGE_LENGTH}; split it (split_message / send_long)"
            )
        if not "".join(t.char for t in tokens).strip():
            raise InvalidMessage("telegram: not sent: the message has no visible text")
        payload: dict[str, Any] = {"chat_id": chat_id, "text": html_text, "parse_mode": "HTML"}
        if disable_preview:
            payload["link_preview_options"] = {"is_disabled": True}
        if disable_notification:
            payload["disable_notification"] = True
        acquire_within(self._limiter(str(chat_id)), "telegram: sendMessage")
        # Not idempotent: a send that timed out after leaving may have been delivered, and a retry
        # would post the message twice. It raises OutcomeUnknown instead, for the caller to record.
        # A 401 delivered nothing: sending again with a token read again cannot double a message.
        response = self._token.call(
            lambda token: self._request(token, "POST", "sendMessage", json=payload, idempotent=False)
        )
        return int(response.json()["result"]["message_id"])

    def send_long(
        self,
        chat_id: str | int,
        html_text: str,
        *,
        disable_preview: bool = True,
        disable_notification: bool = False,
    ) -> list[int]:
        """Split `html_text` and send the parts in order; return their message_ids.

        Not atomic: if a part fails, the earlier ones stay delivered and the
        error propagates.
        """
        ids: list[int] = []
        for part in split_message(html_text, MAX_MESSAGE_LENGTH):
            if not visible_text(part).strip():
                continue  # whitespace between two cuts: Telegram refuses an empty message
            ids.append(
                self.send(
                    chat_id, part, disable_preview=disable_preview, disable_notification=disable_notification
                )
            )
        return ids

    def get_me(self) -> dict[str, Any]:
        """The bot's own user: a cheap check that the token works."""
        response = self._token.call(lambda token: self._request(token, "GET", "getMe"))
        return dict(response.json()["result"])
