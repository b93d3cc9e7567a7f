"""PHP-style form bodies, as Bitrix24 and amoCRM send them.

`data[FIELDS][ID]=7&auth[application_token]=x` becomes
`{"data": {"FIELDS": {"ID": "7"}}, "auth": {"application_token": "x"}}`.
Numeric keys stay strings (`leads[status][0][id]` gives `{"0": {...}}`); use
`indexed()` to read such a mapping as a list in key order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
MAX_DEPTH = 12
MAX_FIELDS = 5000

FormTree = dict[str, Any]


class FormError(ValueError):
    """The body is not a PHP-style form. The message names the offending key."""


def parse_form(body: bytes | str) -> FormTree:
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormError(f"body is not UTF-8 text (byte {exc.start})") from None
    else:
        text = body
    if not text.strip():
        raise FormError("body is empty")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_FIELDS)
    except ValueError as exc:
        raise FormError(f"body is not form-encoded ({exc})") from None
    tree: FormTree = {}
    for key, value in pairs:
        _insert(tree, key, value)
    return tree


def _insert(tree: FormTree, key: str, value: str) -> None:
    match = _KEY.match(key)
    if not match:
        raise FormError(f"key {key!r} is not a form key like name[sub][0]")
    path = [match.group(1), *_PART.findall(match.group(2))]
    if len(path) > MAX_DEPTH:
        raise FormError(f"key {key!r} is nested deeper than {MAX_DEPTH} levels")
    node: Any = tree
    for depth, part in enumerate(path[:-1]):
        if part == "":
            part = str(len(node))
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            where = "".join(f"[{p}]" for p in path[1 : depth + 1])
            raise FormError(f"key {key!r} conflicts with the plain value of {path[0]}{where}")
        node = child
    last = path[-1] or str(len(node))
    if isinstance(node.get(last), dict):
        raise FormError(f"key {key!r} is both a value and a group")
    node[last] = value


def indexed(group: Any) -> list[Any]:
    """Items of a `[0]`, `[1]`, ... group in numeric order; a missing group gives []."""
    if group is None:
        return []
    if isinstance(group, list):
        return group
    if not isinstance(group, Mapping):
        raise FormError("expected a list of items like [0][...], [1][...]")
    try:
        keys = sorted(group, key=int)
    except ValueError:
        raise FormError(f"expected numbered items, got keys {sorted(group)[:3]}") from None
    return [group[k] for k in keys]


def encode_form(tree: Mapping[str, Any]) -> bytes:
    """The inverse of parse_form, for fakes and tests: nested mappings/lists to PHP-style pairs."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}[{k}]" if prefix else str(k), v)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        elif value is None:
            pairs.append((prefix, ""))
        elif isinstance(value, bool):
            pairs.append((prefix, "1" if value else "0"))
        else:
            pairs.append((prefix, str(value)))

    walk("", tree)
    return urlencode(pairs, quote_via=quote).encode("ascii")
