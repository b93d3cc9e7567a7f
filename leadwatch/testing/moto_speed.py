"""One emulator cost taken out of moto's DynamoDB Query, with the same answers.

moto 5 answers every Query, on the table or on an index, by first sorting *every item of the
table* (`Table.all_items()` sorts by the table's keys, comparing `DynamoType`s in Python) and
then picking the matching ones, which it sorts again by the queried key. The first sort decides
nothing: the second orders the matches by the index's keys and then the table's keys, which
together are unique, so its result does not depend on the order it was given. On the tables a
replay fills (tens of thousands of items) that first sort was a fifth of the fault replay's
time, and it is what made the dispatcher's one-item wake-up query cost 0.7 s there (on DynamoDB
it reads one item).

`install()` makes `all_items()` skip that sort while a Query runs, and hand a Query on the
table itself only its partition's items, and a Query on an index with a string partition key
only the items holding that string, which are all it keeps (Scan still pages through the
sorted order it relies on). The local stack installs it in-process and in its moto server;
tests/unit/test_moto_speed.py checks the answers are the same item for item, pages included.
"""

from __future__ import annotations

import threading
from typing import Any

_state = threading.local()


def install() -> None:
    from moto.dynamodb.models.table import Table

    if getattr(Table, "_leadwatch_query_unsorted", False):
        return
    sorted_all_items = Table.all_items
    query = Table.query

    def all_items(self: Any) -> list[Any]:
        if not getattr(_state, "querying", 0):
            return sorted_all_items(self)
        items: list[Any] = []
        wanted = getattr(_state, "hash_key", None)
        if wanted is not None:
            # A query on the table itself keeps only the items of its partition key.
            found = self.items.get(wanted)
            if found is None:
                return items
            return list(found.values()) if self.range_key_attr else [found]
        for hash_set in self.items.values():
            if self.range_key_attr:
                items.extend(hash_set.values())
            else:
                items.append(hash_set)
        strings = getattr(_state, "index_strings", None)
        if strings:
            # An index query keeps only items whose index partition key equals the asked one;
            # for strings that is the same text, which is cheaper to test than moto's own compare
            # (moto tests every kept item again).
            items = [
                item
                for item in items
                if all(
                    (value := item.attrs.get(name)) is not None and value.type == "S" and value.value == text
                    for name, text in strings
                )
            ]
        return items

    def unsorted_query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        _state.querying = getattr(_state, "querying", 0) + 1
        # Table.query(hash_key, range_comparison, range_objs, limit, exclusive_start_key,
        # scan_index_forward, projection_expressions, index_name, ...), as moto's backend calls it.
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        outer = getattr(_state, "hash_key", None), getattr(_state, "index_strings", None)
        _state.hash_key = None if index_name or hash_key is None else hash_key
        conditions = kwargs.get("hash_key_conditions") or []
        _state.index_strings = (
            [(name, value.value) for name, value in conditions]
            if index_name and conditions and all(value.type == "S" for _, value in conditions)
            else None
        )
        try:
            return query(self, hash_key, *args, **kwargs)
        finally:
            _state.querying -= 1
            _state.hash_key, _state.index_strings = outer

    _originals["all_items"], _originals["query"] = sorted_all_items, query
    Table.all_items = all_items  # type: ignore[method-assign]
    Table.query = unsorted_query  # type: ignore[method-assign]
    Table._leadwatch_query_unsorted = True  # type: ignore[attr-defined]


def uninstall() -> None:
    """moto as it comes (the equivalence test compares both)."""
    from moto.dynamodb.models.table import Table

    if not getattr(Table, "_leadwatch_query_unsorted", False):
        return
    Table.all_items = _originals.pop("all_items")  # type: ignore[method-assign]
    Table.query = _originals.pop("query")  # type: ignore[method-assign]
    Table._leadwatch_query_unsorted = False  # type: ignore[attr-defined]


_originals: dict[str, Any] = {}
