"""Telegram HTML helpers: escape, link, split_message.

Parts are checked with the fake's validator (`leadwatch.testing.telegram.parse_html`), an
implementation independent of the splitter's own tokenizer.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leadwatch.telegram import (
    InvalidMessage,
    escape,
    link,
    split_message,
    visible_length,
    visible_text,
)
from leadwatch.testing.telegram import EntityParseError, parse_html, utf16_length


def check_parts(original: str, parts: list[str], limit: int, raw_limit: int | None = None) -> None:
    raw_limit = max(4 * limit, 4096) if raw_limit is None else raw_limit
    for part in parts:
        plain = parse_html(part)  # raises if Telegram would refuse the markup
        assert utf16_length(plain) <= limit, part
        assert len(part) <= raw_limit, part
        assert plain, "a part with no visible character"
    assert "".join(parse_html(p) for p in parts) == parse_html(original)


# ----- escape / link
def test_escape_makes_markup_characters_text() -> None:
    assert escape('a<b>&"c"') == 'a&lt;b&gt;&amp;"c"'
    assert escape('say "hi"', quote=True) == "say &quot;hi&quot;"
    assert escape("&lt;") == "&amp;lt;"  # already-escaped input is text too
    assert parse_html(escape("<b>Acme & Co</b> 5 > 3")) == "<b>Acme & Co</b> 5 > 3"


@given(st.text())
@settings(max_examples=200, deadline=None)
def test_escaped_text_parses_back_to_itself(text: str) -> None:
    assert parse_html(escape(text)) == text
    assert parse_html(escape(text, quote=True)) == text


def test_link_escapes_url_and_label() -> None:
    html = link('https://crm.example/lead?id=1&x="2"', "Acme <Ltd> & Co")
    assert html == '<a href="https://crm.example/lead?id=1&amp;x=&quot;2&quot;">Acme &lt;Ltd&gt; &amp; Co</a>'
    assert parse_html(html) == "Acme <Ltd> & Co"


def test_visible_length_counts_after_entity_parsing() -> None:
    assert visible_length("<b>a&amp;b</b>") == 3
    assert visible_text('<a href="https://x">&lt;x&gt;</a>') == "<x>"
    assert visible_length("&#128512;😀") == 4  # UTF-16: an astral character is two units


# ----- split_message: examples
def test_short_message_is_one_part_unchanged() -> None:
    text = "<b>Lead 7</b>: no answer for 2 h"
    assert split_message(text) == [text]
    assert split_message("") == []
    assert split_message("<b></b>") == []


def test_cuts_at_line_boundaries() -> None:
    lines = [f"<b>Lead {i}</b> — {link(f'https://crm.example/{i}', f'Acme {i}')} is late" for i in range(300)]
    text = "\n".join(lines)
    parts = split_message(text, 1000)
    check_parts(text, parts, 1000)
    assert len(parts) > 1
    for part in parts[:-1]:
        assert part.endswith("\n")  # whole lines only
    assert "\n".join(p.rstrip("\n") for p in parts) == text


def test_falls_back_to_words_then_hard_cuts() -> None:
    words = "lorem ipsum " * 50
    parts = split_message(words, 100)
    check_parts(words, parts, 100)
    assert all(parse_html(p).endswith(" ") for p in parts[:-1])

    word = "x" * 250
    parts = split_message(word, 100)
    assert parts == ["x" * 100, "x" * 100, "x" * 50]


def test_tags_open_across_a_cut_are_closed_and_reopened() -> None:
    text = '<b>bold <a href="https://crm.example/?a=1&amp;b=2">' + "link " * 40 + "</a> tail</b>"
    parts = split_message(text, 60)
    check_parts(text, parts, 60)
    for part in parts[1:-1]:
        assert part.startswith('<b><a href="https://crm.example/?a=1&amp;b=2">')
        assert part.endswith("</a></b>")
    assert parts[-1].endswith("tail</b>")


def test_pre_with_language_is_reopened_whole() -> None:
    code = "\n".join(f"x_{i} = {i}" for i in range(100))
    text = f'<pre><code class="language-python">{escape(code)}</code></pre>'
    parts = split_message(text, 200)
    check_parts(text, parts, 200)
    assert all(p.startswith('<pre><code class="language-python">') for p in parts)
    assert all(p.endswith("</code></pre>") for p in parts)


def test_entities_are_never_cut() -> None:
    text = "&amp;&lt;&gt;&quot;&#128512;" * 300
    parts = split_message(text, 97)
    check_parts(text, parts, 97)


def test_astral_characters_count_two() -> None:
    text = "😀" * 100
    parts = split_message(text, 51)
    check_parts(text, parts, 51)
    assert [len(p) for p in parts] == [25, 25, 25, 25]


def test_custom_emoji_is_not_split() -> None:
    emoji = '<tg-emoji emoji-id="5368324170671202286">👍👍</tg-emoji>'
    text = ("ab" + emoji) * 50
    parts = split_message(text, 7)
    check_parts(text, parts, 7)
    for part in parts:
        assert part.count("<tg-emoji") == part.count("</tg-emoji>")
        assert "<tg-emoji" not in part or emoji in part


def test_raw_limit_keeps_long_hrefs_in_check() -> None:
    url = "https://crm.example/" + "p" * 300
    text = "\n".join(link(url, f"lead {i}") for i in range(60))
    parts = split_message(text, 4096, raw_limit=1000)
    check_parts(text, parts, 4096, raw_limit=1000)
    assert len(parts) > 1


def test_raw_limit_too_small_for_one_character_is_an_error() -> None:
    text = link("https://crm.example/" + "p" * 300, "lead") + "x" * 100
    with pytest.raises(ValueError, match="raw_limit"):
        split_message(text, 50, raw_limit=100)


@pytest.mark.parametrize("bad", ["a < b", "<b>open", "<b>x</i>", "</b>"])
def test_malformed_markup_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        split_message(bad * 100, 50)


def test_invalid_message_is_a_value_error_and_a_crm_rejection() -> None:
    from crm_adapters.base import CrmRejected

    error = InvalidMessage("telegram: not sent: too long")
    assert isinstance(error, ValueError) and isinstance(error, CrmRejected)
    assert error.retryable is False


# ----- split_message: properties
TEXT_ALPHABET = st.sampled_from([*"abcxyz АБВ  \n\n<>&\"'", "😀", "👍", "\t"])
plain_runs = st.text(TEXT_ALPHABET, min_size=1, max_size=40).map(escape)
entity_runs = st.sampled_from(["&amp;", "&lt;", "&gt;", "&quot;", "&#65;", "&#x1F600;", "&#1046;"])
long_words = st.integers(min_value=20, max_value=300).map(lambda n: "w" * n)
long_lines = st.integers(min_value=5, max_value=60).map(lambda n: " ".join(["word"] * n) + "\n")
leaves = st.one_of(plain_runs, plain_runs, entity_runs, long_words, long_lines)

SIMPLE_TAGS = ["b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "tg-spoiler", "code", "blockquote"]


def wrap(children: list[str], tag: str) -> str:
    inner = "".join(children)
    if tag == "a":
        return f'<a href="https://crm.example/lead?id=1&amp;q=&quot;x&quot;">{inner}</a>'
    if tag == "spoiler":
        return f'<span class="tg-spoiler">{inner}</span>'
    if tag == "expandable":
        return f"<blockquote expandable>{inner}</blockquote>"
    if tag == "pre":
        return f'<pre><code class="language-python">{inner}</code></pre>'
    return f"<{tag}>{inner}</{tag}>"


def _element(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    tags = st.sampled_from([*SIMPLE_TAGS, "a", "spoiler", "expandable", "pre"])
    return st.builds(wrap, st.lists(children, min_size=0, max_size=4), tags)


custom_emoji = st.just('<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>')
documents = st.lists(
    st.recursive(st.one_of(leaves, custom_emoji), _element, max_leaves=25), min_size=1, max_size=8
).map("".join)


@given(documents, st.integers(min_value=2, max_value=300))
@settings(max_examples=200, deadline=None)
def test_parts_are_valid_fit_and_add_up(text: str, limit: int) -> None:
    parse_html(text)  # the generator builds valid Telegram HTML
    assert visible_text(text) == parse_html(text)  # the two tokenizers agree
    parts = split_message(text, limit)
    check_parts(text, parts, limit)
    if utf16_length(parse_html(text)) <= limit and len(text) <= max(4 * limit, 4096):
        assert parts == ([text] if parse_html(text) else [])


@given(
    st.lists(
        st.text(TEXT_ALPHABET.filter(lambda c: c != "\n"), max_size=60).map(escape), min_size=1, max_size=80
    )
)
@settings(max_examples=200, deadline=None)
def test_lines_that_fit_are_never_cut(lines: list[str]) -> None:
    text = "\n".join(f"<b>{line}</b>" if i % 3 == 0 else line for i, line in enumerate(lines))
    limit = 61 * 2 + 1  # the longest line and its newline fit (astral characters count two)
    parts = split_message(text, limit, raw_limit=100_000)
    check_parts(text, parts, limit, raw_limit=100_000)
    for part in parts[:-1]:
        assert parse_html(part).endswith("\n")


@given(st.text(TEXT_ALPHABET, max_size=200))
@settings(max_examples=100, deadline=None)
def test_fake_refuses_what_is_not_escaped(text: str) -> None:
    if any(c in text for c in "<&"):
        with pytest.raises(EntityParseError):
            parse_html(text.replace("&", "& "))  # a bare ampersand is never an entity
