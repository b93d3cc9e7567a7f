"""One message design for every process: the parts every message to the head is built from.

A process keeps its templates in its own folder (`workflows/<process>/messages.py`): a frozen
dataclass of texts with one instance per language (`dict[Lang, Texts]`, so a text missing in one
language is a type error, not a surprise in production), and functions that fill them with the
parts a `Writer` makes here. So a new process looks like the others without copying:

- `Writer.header(kind, title)`: the first line, `⏰ <b>title</b>`; `Kind` names the message kind
  by its icon, which is what tests and the demo tell messages apart by, in any language;
- `Writer.card(url, title, entity)`: the card's link, its title cleaned (no line breaks or
  control characters), shortened at a word to `TITLE_CHARS` and escaped; "Лид #42" / "Lead #42"
  when it has none;
- `Writer.manager(id)`, `Writer.stage(id, entity)`: names from the tenant file or the CRM
  (leadwatch.names), shortened and escaped; an id nobody knows reads "пользователь 9120031" /
  "user 9120031", "этап 61234501" / "stage 61234501";
- `Writer.when(moment)` (пт 14.11 17:50, in the tenant's zone), `day`, `clock`, `count` (1 лид,
  2 лида, 5 лидов), `number`, `percent` (leadwatch.i18n);
- `Writer.field(label, value)`, `section(title, n)`, `bullet(html)`, and `message(lines)`.

Every piece of text that comes from outside (titles, names) goes through `escape` here, and
each is bounded, so a one-card message stays far below Telegram's 4,096 characters whatever the
CRM holds; a long one (a report) is cut into parts of whole lines by `parts`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import TYPE_CHECKING, Protocol

from leadwatch import i18n
from leadwatch.events import EntityType
from leadwatch.i18n import Lang, Plural
from leadwatch.telegram import MAX_MESSAGE_LENGTH, escape, split_message, visible_length, visible_text

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig
    from leadwatch.context import Context

TITLE_CHARS = 120  # a card title in any message
NAME_CHARS = 80  # a manager's or a stage's name


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of message, known by the icon its header starts with (the same in every language)."""

    name: str
    icon: str

    def of(self, html_text: str) -> bool:
        """Whether `html_text` is a message of this kind (its first part, for a split one)."""
        return html_text.startswith(f"{self.icon} <b>")


DIGEST = Kind("digest", "🔔")


# ----------------------------------------------------------------------------- names
class NameLookup(Protocol):
    """Where names come from (`leadwatch.names.Names` is one): None for an id nobody knows."""

    def find_manager(self, user_id: str | None) -> str | None: ...

    def find_stage(self, stage_id: str | None, entity: EntityType = EntityType.LEAD) -> str | None: ...


@dataclass(frozen=True)
class StaticNames:
    """Names from fixed maps (tests, golden files, a tenant without a CRM to ask)."""

    managers: Mapping[str, str] = field(default_factory=dict)
    stages: Mapping[str, str] = field(default_factory=dict)

    def find_manager(self, user_id: str | None) -> str | None:
        return self.managers.get(user_id) if user_id else None

    def find_stage(self, stage_id: str | None, entity: EntityType = EntityType.LEAD) -> str | None:
        return self.stages.get(stage_id) if stage_id else None


NO_NAMES = StaticNames()


# ----------------------------------------------------------------------------- shared texts
@dataclass(frozen=True)
class CoreTexts:
    manager: str  # the label of a message's manager line
    unassigned: str  # a card with no responsible manager
    user: str  # a manager nobody knows: {id}
    stage: str  # a stage nobody knows: {id}
    no_stage: str
    lead: str  # a card without a title: {id}
    deal: str
    total: str  # the last row of a table
    none: str  # an empty list
    alerts: Plural
    at_once: str  # the digest's header: {alerts}


CORE: dict[Lang, CoreTexts] = {
    "ru": CoreTexts(
        manager="Менеджер",
        unassigned="не назначен",
        user="пользователь {id}",
        stage="этап {id}",
        no_stage="без этапа",
        lead="Лид #{id}",
        deal="Сделка #{id}",
        total="ИТОГО",
        none="нет",
        alerts=Plural("оповещение", "оповещения", few="оповещения", many="оповещений"),
        at_once="{alerts} сразу",
    ),
    "en": CoreTexts(
        manager="Manager",
        unassigned="unassigned",
        user="user {id}",
        stage="stage {id}",
        no_stage="no stage",
        lead="Lead #{id}",
        deal="Deal #{id}",
        total="TOTAL",
        none="none",
        alerts=Plural("alert", "alerts"),
        at_once="{alerts} at once",
    ),
}


# ----------------------------------------------------------------------------- outside text
_SPACES = re.compile(r"\s+")


def clean(text: str) -> str:
    """Text from outside as one line: control characters and line breaks become spaces, runs of
    spaces one, lone surrogates (which no message can carry) go."""
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cs":
            continue
        kept.append(" " if category in ("Cc", "Zl", "Zp") else char)
    return _SPACES.sub(" ", "".join(kept)).strip()


def shorten(text: str, limit: int) -> str:
    """At most `limit` characters: cut at the last space in the final third when there is one
    (so a word stays whole), without the punctuation left hanging there, and end with "…"."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    space = head.rfind(" ")
    if space >= limit * 2 // 3:
        head = head[:space]
    return (head.rstrip(" ,;:-–—") or head) + "…"


# ----------------------------------------------------------------------------- the writer
@dataclass(frozen=True)
class Writer:
    """Parts of messages in one tenant's language and zone, naming through `names`."""

    lang: Lang
    tz: tzinfo
    names: NameLookup = NO_NAMES

    @property
    def texts(self) -> CoreTexts:
        return CORE[self.lang]

    # plain text (tables, the terminal): escape before putting it in HTML
    def manager_name(self, user_id: str | None) -> str:
        if user_id is None or user_id == "":
            return self.texts.unassigned
        found = clean(self.names.find_manager(user_id) or "")
        return shorten(found, NAME_CHARS) if found else self.texts.user.format(id=shorten(user_id, 32))

    def stage_name(self, stage_id: str | None, entity: EntityType = EntityType.LEAD) -> str:
        if stage_id is None or stage_id == "":
            return self.texts.no_stage
        found = clean(self.names.find_stage(stage_id, entity) or "")
        return shorten(found, NAME_CHARS) if found else self.texts.stage.format(id=shorten(stage_id, 32))

    def card_title(self, title: str | None, entity_type: EntityType, entity_id: str) -> str:
        found = clean(title or "")
        if found:
            return shorten(found, TITLE_CHARS)
        template = self.texts.deal if entity_type is EntityType.DEAL else self.texts.lead
        return template.format(id=shorten(entity_id, 32))

    # HTML
    def manager(self, user_id: str | None) -> str:
        return escape(self.manager_name(user_id))

    def stage(self, stage_id: str | None, entity: EntityType = EntityType.LEAD) -> str:
        return escape(self.stage_name(stage_id, entity))

    def card(self, url: str, title: str | None, entity_type: EntityType, entity_id: str) -> str:
        return link(url, self.card_title(title, entity_type, entity_id))

    def header(self, kind: Kind, title: str) -> str:
        return f"{kind.icon} <b>{escape(title)}</b>"

    def field(self, label: str, value_html: str) -> str:
        return f"{escape(label)}: {value_html}"

    def section(self, title: str, n: int | None = None) -> str:
        return f"<b>{escape(title)}</b>" + (f" ({self.number(n)})" if n is not None else "")

    def bullet(self, html_text: str) -> str:
        return f"• {html_text}"

    # formats
    def when(self, moment: datetime) -> str:
        return i18n.weekday_time(moment, self.tz, self.lang)

    def clock(self, moment: datetime) -> str:
        return i18n.clock(moment, self.tz, self.lang)

    def day(self, day: date) -> str:
        return i18n.weekday_date(day, self.lang)

    def date_text(self, day: date) -> str:
        return i18n.day_text(day, self.lang)

    def count(self, n: int, word: Plural) -> str:
        return i18n.count(n, word, self.lang)

    def word(self, n: int, word: Plural) -> str:
        """The form of `word` that goes with `n`, without the number."""
        return word.form(i18n.plural_category(n, self.lang))

    def number(self, value: float, digits: int = 0) -> str:
        return i18n.number(value, self.lang, digits)

    def percent(self, share: float) -> str:
        return i18n.percent(share, self.lang)


def writer_for(ctx: Context, config: TenantConfig) -> Writer:
    """The tenant's writer: its language, its calendar's zone, its names."""
    return Writer(config.language, ctx.calendar(config).tz, ctx.names(config))


def link(url: str, label: str) -> str:
    """A link whose label is text (escaped here)."""
    return f'<a href="{escape(url, quote=True)}">{escape(label)}</a>'


def message(lines: Iterable[str]) -> str:
    """Lines of HTML as one message (each line whole: `parts` cuts only between lines)."""
    return "\n".join(lines)


def parts(html_text: str, limit: int = MAX_MESSAGE_LENGTH, *, header: str | None = None) -> list[str]:
    """A message as Telegram takes it: parts of at most `limit` characters after entity parsing,
    cut between lines (whole tags), none of them blank.

    `header`: the message's first line (whole HTML). When the message needs more than one part,
    the first part's header is numbered and every other part starts with it, so each part says
    what it belongs to: `📞 <b>Отчёт о прозвоне за ср 05.11.2025</b> (2/3)`."""
    whole = [part for part in split_message(html_text, limit) if visible_text(part).strip()]
    if header is None or len(whole) <= 1 or not html_text.startswith(header + "\n"):
        return whole
    numbered = len(f" ({len(whole) * 10}/{len(whole) * 10})\n")  # room for the numbers, with a digit to spare
    body = html_text[len(header) + 1 :]
    found = [
        p for p in split_message(body, limit - visible_length(header) - numbered) if visible_text(p).strip()
    ]
    return [f"{header} ({n}/{len(found)})\n{part.lstrip(chr(10))}" for n, part in enumerate(found, start=1)]


# A digest part's lines, in characters after entity parsing: its header fits in what is left of
# Telegram's 4,096; and in characters of markup, as split_message bounds a part by default.
DIGEST_PART_CHARS = 3500
DIGEST_PART_RAW = 4 * MAX_MESSAGE_LENGTH


def pack_lines(
    lines: Sequence[str], limit: int = DIGEST_PART_CHARS, raw_limit: int = DIGEST_PART_RAW
) -> list[int]:
    """How many of `lines` (whole lines of HTML, in order) go into each part of a digest."""
    sizes: list[int] = []
    seen = raw = 0
    for line in lines:
        length, markup = visible_length(line) + 1, len(line) + 1
        if not sizes or seen + length > limit or raw + markup > raw_limit:
            sizes.append(0)
            seen = raw = 0
        sizes[-1] += 1
        seen += length
        raw += markup
    return sizes


def digest(lang: Lang, lines: Sequence[str], total: int, part: int = 1, of: int = 1) -> str:
    """Many alerts due together as one message: a header counting them, one line each."""
    texts = CORE[lang]
    title = texts.at_once.format(alerts=i18n.count(total, texts.alerts, lang))
    where = f" ({part}/{of})" if of > 1 else ""
    return message([f"{DIGEST.icon} <b>{escape(title)}</b>{where}", *lines])


_LINK = re.compile(r'<a href="([^"]*)">(.*?)</a>', re.S)


def terminal(html_text: str) -> str:
    """A message as a terminal shows it: a link becomes "label <url>", the rest loses its tags."""
    return visible_text(_LINK.sub(lambda m: f"{m[2]} &lt;{m[1]}&gt;", html_text))
