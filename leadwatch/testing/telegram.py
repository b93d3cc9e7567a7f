"""A fake Telegram Bot API: `sendMessage` and `getMe` over real HTTP.

It answers with the Bot API envelope (`{"ok": true, "result": ...}` or
`{"ok": false, "error_code": N, "description": "...", "parameters": {...}}`),
parses `parse_mode=HTML` the way Telegram does (only the supported tags, only
`&lt; &gt; &amp; &quot;` and numeric entities), applies the 4096 limit to the
text *after* entity parsing, and throttles as the Bot FAQ describes
(core.telegram.org/bots/faq, "My bot is hitting limits"): each chat with a leaky bucket (one
message a second, short bursts allowed), each group (a negative chat id, or a channel's
@username) to 20 messages in any minute; both answer 429 with `parameters.retry_after`.

Where Telegram's behaviour is unknown or lenient the fake is deliberately
stricter, so that what passes here also passes there:
- a bare `&` that does not start a supported entity is refused (Telegram keeps
  it as text);
- the length is counted in UTF-16 code units (sources disagree on whether
  Telegram counts code points or UTF-16 units; an emoji is 1 or 2);
- MarkdownV2/Markdown are not emulated and are refused as an unsupported
  parse_mode.

`parse_html()` is the validator; tests import it to check HTML the adapter builds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from leadwatch.testing.server import FakeServer, Fault, LeakyBucket, Reply, Request, SlidingWindow

MAX_MESSAGE_LENGTH = 4096

# Bot API "HTML style". tg-time is the newest (date-time entities); kept so the
# fake does not refuse what current Telegram accepts.
ALLOWED_TAGS = frozenset(
    {
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "tg-emoji",
        "tg-time",
        "code",
        "pre",
        "blockquote",
    }
)
NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}

_ENTITY = re.compile(r"&(?:#([0-9]{1,8})|#[xX]([0-9a-fA-F]{1,7})|([a-zA-Z][a-zA-Z0-9]*));")
_UNQUOTED_VALUE = re.compile(r"[A-Za-z0-9.-]*")
_PATH = re.compile(r"/bot([^/]*)/([^/]+)")


class EntityParseError(ValueError):
    """HTML Telegram would refuse. str() is what follows "can't parse entities: "."""


def utf16_length(text: str) -> int:
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def _byte_offset(text: str, index: int) -> int:
    # Telegram reports positions as UTF-8 byte offsets.
    return len(text[:index].encode("utf-8", "surrogatepass"))


def _decode_entity(text: str, index: int) -> tuple[str, int]:
    """The character an entity at `index` stands for and the index after it."""
    match = _ENTITY.match(text, index)
    if match is not None:
        decimal, hexadecimal, name = match.groups()
        if name is None:
            code = int(decimal) if decimal is not None else int(hexadecimal, 16)
            if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                return chr(code), match.end()
        elif name in NAMED_ENTITIES:
            return NAMED_ENTITIES[name], match.end()
    raise EntityParseError(
        f'Character "&" at byte offset {_byte_offset(text, index)} must be escaped as "&amp;" '
        "(only &lt; &gt; &amp; &quot; and numeric entities are supported)"
    )


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index


def _parse_start_tag(text: str, start: int) -> tuple[str, dict[str, str], int]:
    """Parse `<name attr="v" ...>` at `start`; return the name, attributes and the index after `>`."""
    offset = _byte_offset(text, start)
    index = start + 1
    while index < len(text) and not text[index].isspace() and text[index] != ">":
        index += 1
    if index >= len(text):
        raise EntityParseError(f"Unclosed start tag at byte offset {offset}")
    name = text[start + 1 : index].lower()
    if name not in ALLOWED_TAGS:
        raise EntityParseError(f'Unsupported start tag "{name}" at byte offset {offset}')
    attributes: dict[str, str] = {}
    while True:
        index = _skip_space(text, index)
        if index >= len(text):
            raise EntityParseError(f'Unclosed start tag "{name}" at byte offset {offset}')
        if text[index] == ">":
            return name, attributes, index + 1
        attr_start = index
        while index < len(text) and not text[index].isspace() and text[index] not in "=>/\"'":
            index += 1
        attr = text[attr_start:index].lower()
        if not attr:
            raise EntityParseError(f'Empty attribute name in the tag "{name}" at byte offset {offset}')
        index = _skip_space(text, index)
        if index >= len(text) or text[index] != "=":
            attributes[attr] = ""  # a flag such as <blockquote expandable>
            continue
        index = _skip_space(text, index + 1)
        if index >= len(text):
            raise EntityParseError(f'Unclosed start tag "{name}" at byte offset {offset}')
        quote = text[index]
        if quote in "\"'":
            index += 1
            value: list[str] = []
            while index < len(text) and text[index] != quote:
                if text[index] == "&":
                    char, index = _decode_entity(text, index)
                    value.append(char)
                else:
                    value.append(text[index])
                    index += 1
            if index >= len(text):
                raise EntityParseError(f'Unclosed start tag "{name}" at byte offset {offset}')
            attributes[attr] = "".join(value)
            index += 1
        else:
            match = _UNQUOTED_VALUE.match(text, index)
            assert match is not None  # the pattern matches the empty string
            index = match.end()
            if index >= len(text) or not (text[index].isspace() or text[index] == ">"):
                raise EntityParseError(
                    f"Unexpected end of name token at byte offset {_byte_offset(text, match.start())}"
                )
            attributes[attr] = match.group().lower()


def _check_tag(name: str, attributes: dict[str, str], offset: int) -> None:
    if name == "span" and attributes.get("class") != "tg-spoiler":
        raise EntityParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {offset}')
    if name == "tg-emoji" and not attributes.get("emoji-id", "").isdigit():
        raise EntityParseError("Invalid custom emoji identifier specified")
    if name == "tg-time" and not attributes.get("unix", "").isdigit():
        raise EntityParseError("Invalid Unix time specified")


def parse_html(text: str) -> str:
    """The plain text Telegram keeps from `text` sent with parse_mode=HTML.

    Tags are removed and entities decoded; surrounding whitespace is kept (the
    caller strips, as Telegram does). Raises EntityParseError for markup
    Telegram would refuse.
    """
    out: list[str] = []
    stack: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "&":
            decoded, index = _decode_entity(text, index)
            out.append(decoded)
            continue
        if char != "<":
            out.append(char)
            index += 1
            continue
        offset = _byte_offset(text, index)
        if text.startswith("</", index):
            end = index + 2
            while end < len(text) and not text[end].isspace() and text[end] != ">":
                end += 1
            name = text[index + 2 : end].lower()
            end = _skip_space(text, end)
            if end >= len(text) or text[end] != ">":
                raise EntityParseError(f"Unclosed end tag at byte offset {offset}")
            if not stack:
                raise EntityParseError(f"Unexpected end tag at byte offset {offset}")
            if name and name != stack[-1]:
                raise EntityParseError(
                    f'Unmatched end tag at byte offset {offset}, expected "</{stack[-1]}>", found "</{name}>"'
                )
            stack.pop()
            index = end + 1
            continue
        name, attributes, index = _parse_start_tag(text, index)
        _check_tag(name, attributes, offset)
        stack.append(name)
    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1]}"')
    return "".join(out)


@dataclass
class SentMessage:
    chat_id: str
    text: str  # as sent, markup included
    plain_text: str  # what Telegram shows: tags removed, entities decoded, stripped
    parse_mode: str | None
    message_id: int
    at: float  # the fake's clock (monotonic by default) when it was accepted
    link_preview_disabled: bool = False
    disable_notification: bool = False


def telegram_error(status: int, description: str, parameters: dict[str, Any] | None = None) -> Reply:
    payload: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if parameters:
        payload["parameters"] = parameters
    return Reply.json(status, payload)


# ----- faults for fail_next / fail_randomly
def too_many_requests(retry_after: int = 1) -> Fault:
    def too_many_requests(_request: Request) -> Reply:
        return telegram_error(
            429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
        )

    return too_many_requests


def internal_error(_request: Request) -> Reply:
    return telegram_error(500, "Internal Server Error")


def _nginx_page(status: int, reason: str) -> Reply:
    # What the nginx in front of api.telegram.org sends when the backend is gone: HTML, not JSON.
    body = (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    )
    return Reply(status, body.encode(), "text/html")


def bad_gateway(_request: Request) -> Reply:
    return _nginx_page(502, "Bad Gateway")


def slow(seconds: float, then: Fault | None = None) -> Fault:
    """Stall `seconds` before answering: a client with a shorter timeout sees a timeout.

    The eventual answer is `then(request)`; pass the fake's `handle` for a slow
    success (the message is recorded even if the client gave up, as with the
    real API). Without `then` it is nginx's 504.
    """

    def slow(request: Request) -> Reply:
        reply = then(request) if then is not None else _nginx_page(504, "Gateway Time-out")
        return dataclasses.replace(reply, delay=seconds)

    return slow


class FakeTelegram(FakeServer):
    """`POST /bot<token>/sendMessage` (JSON or form body, or query) and `getMe`."""

    name = "fake-telegram"

    def __init__(
        self,
        token: str = "123:ABC",
        chats: set[str] | None = None,
        per_chat_rate: float = 1.0,
        per_chat_burst: int = 3,
        clock: Callable[[], float] = time.monotonic,
        group_limit: int = 20,
        group_period: float = 60.0,
    ) -> None:
        super().__init__()
        self.token = token
        self.chats = {str(chat) for chat in chats} if chats is not None else None  # None: any chat exists
        self.per_chat_rate = per_chat_rate
        self.per_chat_burst = per_chat_burst
        self.group_limit = group_limit
        self.group_period = group_period
        self._clock = clock
        self.messages: list[SentMessage] = []
        self.blocked: dict[str, str] = {}  # chat id -> the 403 description
        self.migrated: dict[str, int] = {}  # old group id -> supergroup id
        self._buckets: dict[str, LeakyBucket] = {}
        self._groups: dict[str, SlidingWindow] = {}
        self._next_message_id = 1

    # ----- scenario helpers
    def reset(self) -> None:
        """Forget messages, requests, faults, limits and chat changes (one server shared by many tests)."""
        self.clear_faults()
        self.clear_log()
        with self.lock:
            self.messages.clear()
            self.blocked.clear()
            self.migrated.clear()
            self._buckets.clear()
            self._groups.clear()

    def block(self, chat_id: str, description: str = "Forbidden: bot was blocked by the user") -> None:
        with self.lock:
            self.blocked[str(chat_id)] = description

    def migrate(self, chat_id: str, to_chat_id: int) -> None:
        """The group became a supergroup: the old id answers 400 with migrate_to_chat_id."""
        with self.lock:
            self.migrated[str(chat_id)] = to_chat_id

    def messages_to(self, chat_id: str) -> list[SentMessage]:
        with self.lock:
            return [m for m in self.messages if m.chat_id == str(chat_id)]

    # ----- HTTP
    def handle(self, request: Request) -> Reply:
        match = _PATH.fullmatch(request.path)
        if match is None:
            return telegram_error(404, "Not Found")
        token, method = match.groups()
        if token != self.token:
            return telegram_error(401, "Unauthorized")
        method = method.lower()  # Bot API method names are case-insensitive
        if method == "getme":
            return self._get_me()
        if method == "sendmessage":
            try:
                params = self._params(request)
            except ValueError as exc:
                return telegram_error(400, f"Bad Request: {exc}")
            return self._send_message(params)
        return telegram_error(404, "Not Found")

    @staticmethod
    def _params(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if not request.body:
            return params
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            try:
                body = json.loads(request.body)
            except ValueError:
                raise ValueError("can't parse JSON encoded request body") from None
            if not isinstance(body, dict):
                raise ValueError("JSON request body must be an object")
            params.update(body)
        else:
            params.update(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        return params

    def _get_me(self) -> Reply:
        bot_id = self.token.split(":", 1)[0]
        return Reply.json(
            200,
            {
                "ok": True,
                "result": {
                    "id": int(bot_id) if bot_id.isdigit() else 1,
                    "is_bot": True,
                    "first_name": "Leadwatch",
                    "username": "leadwatch_fake_bot",
                },
            },
        )

    @staticmethod
    def _chat(chat_id: str) -> dict[str, Any]:
        if chat_id.startswith("@"):
            return {
                "id": -1000000000000 - (sum(map(ord, chat_id)) % 10**9),
                "type": "channel",
                "username": chat_id[1:],
            }
        numeric = int(chat_id) if re.fullmatch(r"-?[0-9]+", chat_id) else 0
        return {"id": numeric, "type": "supergroup" if chat_id.startswith("-") else "private"}

    @property
    def limit_refusals(self) -> int:
        """Messages refused by the service's own limits (per chat, per group), scripted faults aside."""
        with self.lock:
            buckets: list[LeakyBucket | SlidingWindow] = [*self._buckets.values(), *self._groups.values()]
        return sum(b.refused for b in buckets)

    def _limited(self, chat_id: str) -> Reply | None:
        """The 429 for a message over the group's minute or the chat's pace (None: it may go).
        A message refused by its group is not counted against the chat."""
        group = None
        if _is_group(chat_id):
            group = self._groups.get(chat_id)
            if group is None:
                group = self._groups[chat_id] = SlidingWindow(
                    self.group_limit, self.group_period, self._clock
                )
            wait = group.retry_after()
            if wait > 0:
                return _flood(max(1, math.ceil(wait)))
        bucket = self._buckets.get(chat_id)
        if bucket is None:
            bucket = self._buckets[chat_id] = LeakyBucket(
                self.per_chat_rate, self.per_chat_burst, self._clock
            )
        if not bucket.admit():
            return _flood(max(1, math.ceil(1 / self.per_chat_rate)))
        if group is not None:
            group.admit()
        return None

    def _send_message(self, params: dict[str, Any]) -> Reply:
        raw_chat = params.get("chat_id")
        if raw_chat is None or raw_chat == "":
            return telegram_error(400, "Bad Request: chat_id is empty")
        chat_id = str(raw_chat)
        text = params.get("text")
        if not isinstance(text, str) or text == "":
            return telegram_error(400, "Bad Request: message text is empty")
        with self.lock:
            if chat_id in self.migrated:
                return telegram_error(
                    400,
                    "Bad Request: group chat was upgraded to a supergroup chat",
                    {"migrate_to_chat_id": self.migrated[chat_id]},
                )
            if chat_id in self.blocked:
                return telegram_error(403, self.blocked[chat_id])
            if self.chats is not None and chat_id not in self.chats:
                return telegram_error(400, "Bad Request: chat not found")

        parse_mode = params.get("parse_mode") or None
        if parse_mode is not None:
            if str(parse_mode).lower() != "html":
                return telegram_error(400, "Bad Request: unsupported parse_mode")
            try:
                plain = parse_html(text)
            except EntityParseError as exc:
                return telegram_error(400, f"Bad Request: can't parse entities: {exc}")
        else:
            plain = text
        plain = plain.strip()  # Telegram trims the message text
        if not plain:
            return telegram_error(400, "Bad Request: message text is empty")
        if utf16_length(plain) > MAX_MESSAGE_LENGTH:
            return telegram_error(400, "Bad Request: message is too long")

        preview = params.get("link_preview_options")
        if isinstance(preview, str):  # a form body carries it JSON-serialized
            try:
                preview = json.loads(preview) if preview else None
            except ValueError:
                return telegram_error(400, "Bad Request: can't parse link preview options JSON object")
        if preview is not None and not isinstance(preview, dict):
            return telegram_error(400, "Bad Request: link preview options must be an object")
        preview_disabled = bool(preview and _truthy(preview.get("is_disabled")))
        preview_disabled = preview_disabled or _truthy(params.get("disable_web_page_preview"))

        with self.lock:
            limited = self._limited(chat_id)
            if limited is not None:
                return limited
            message_id = self._next_message_id
            self._next_message_id += 1
            self.messages.append(
                SentMessage(
                    chat_id=chat_id,
                    text=text,
                    plain_text=plain,
                    parse_mode=parse_mode,
                    message_id=message_id,
                    at=self._clock(),
                    link_preview_disabled=preview_disabled,
                    disable_notification=_truthy(params.get("disable_notification")),
                )
            )
        return Reply.json(
            200,
            {
                "ok": True,
                "result": {
                    "message_id": message_id,
                    "date": int(time.time()),
                    "chat": self._chat(chat_id),
                    "text": plain,
                },
            },
        )


def _flood(retry_after: int) -> Reply:
    return telegram_error(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})


def _is_group(chat_id: str) -> bool:
    # Groups, supergroups and channels have negative ids; a channel may be named by @username.
    return chat_id.startswith(("-", "@"))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
