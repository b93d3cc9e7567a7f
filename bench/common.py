"""What the benchmarks share: a figure with its target, and counters of AWS calls.

AWS calls are counted with botocore's own event hooks (`before-call` / `after-call`) on
every client that exists or is created while a counter is installed: the boto3 clients of
the local stack and the queue, and the botocore clients PynamoDB creates for itself
(`pynamodb.connection.base.Connection.client`, from its own `botocore.session.get_session()`,
one per model connection and one per any other `Connection()`). Existing clients are hooked
directly; new ones by wrapping `botocore.session.Session.create_client`, where both boto3 and
PynamoDB end up. Nothing is mocked away: the calls still reach moto.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

DYNAMODB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
DYNAMODB_READS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})


@dataclass
class Figure:
    """One line of output: `name value target`.

    `met` is True/False when the figure has a target, None for a figure reported for
    context only (its target column then reads "-").
    """

    name: str
    value: float | int | str
    target: str = "-"
    met: bool | None = None
    definition: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.name} {format_value(self.value)} {self.target}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_value(value: float | int | str) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 0.01 else f"{value:.2f}"
    return str(value).replace(" ", "_")


def note(message: str) -> None:
    """Progress for a human, on stderr, so stdout stays one figure per line."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def items_read(operation: str, parsed: dict[str, Any]) -> int:
    """Items a DynamoDB read returned (or, for Query/Scan, examined: ScannedCount >= Count)."""
    if operation in ("Query", "Scan"):
        return int(max(parsed.get("Count", 0), parsed.get("ScannedCount", 0)))
    if operation == "GetItem":
        return 1 if parsed.get("Item") else 0
    if operation == "BatchGetItem":
        return sum(len(items) for items in (parsed.get("Responses") or {}).values())
    if operation == "TransactGetItems":
        return sum(1 for response in parsed.get("Responses") or [] if response.get("Item"))
    return 0


class AwsCalls:
    """Counts AWS API calls per (service, operation) and DynamoDB items read.

    `install()` hooks the clients given and every botocore client created until
    `uninstall()`; `reset()` zeroes the counts between measurements.
    """

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.items: Counter[str] = Counter()  # DynamoDB operation -> items read
        self._lock = threading.Lock()
        self._original_create_client: Any = None
        self._counting = False  # hooks stay on the clients; this switch stops them counting

    # ----- counting
    def _before_call(self, model: Any = None, **_: Any) -> None:
        if model is None or not self._counting:
            return
        with self._lock:
            self.calls[(model.service_model.service_name, model.name)] += 1

    def _after_call(self, model: Any = None, parsed: Any = None, **_: Any) -> None:
        if model is None or not self._counting or model.service_model.service_name != "dynamodb":
            return
        if model.name in DYNAMODB_READS and isinstance(parsed, dict):
            with self._lock:
                self.items[model.name] += items_read(model.name, parsed)

    def hook(self, client: Any) -> Any:
        # Marked on the client itself: an id() could be reused by a later client once this one is gone.
        if client is None or getattr(client, "_bench_counted_by", None) is self:
            return client
        client._bench_counted_by = self
        # Registered on the bare event names, so they fire for every service and operation.
        client.meta.events.register("before-call", self._before_call, unique_id=f"bench-before-{id(self)}")
        client.meta.events.register("after-call", self._after_call, unique_id=f"bench-after-{id(self)}")
        return client

    def install(self, clients: Iterable[Any] = ()) -> AwsCalls:
        import botocore.session

        from leadwatch.store.models import MODELS

        self._counting = True
        for client in clients:
            self.hook(client)
        # The clients PynamoDB already made (one per model connection).
        for model in MODELS:
            table_connection = getattr(model, "_connection", None)
            if table_connection is not None:
                self.hook(getattr(table_connection.connection, "_client", None))
        # And every client made from now on (PynamoDB's, boto3's: both end in botocore).
        original = botocore.session.Session.create_client
        counter = self

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            return counter.hook(original(session, *args, **kwargs))

        self._original_create_client = original
        botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
        return self

    def uninstall(self) -> None:
        import botocore.session

        self._counting = False
        if self._original_create_client is not None:
            botocore.session.Session.create_client = self._original_create_client  # type: ignore[method-assign]
            self._original_create_client = None

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.items.clear()

    # ----- reading
    def count(self, service: str, operations: Iterable[str] | None = None) -> int:
        wanted = None if operations is None else set(operations)
        return sum(
            n for (svc, op), n in self.calls.items() if svc == service and (wanted is None or op in wanted)
        )

    def dynamodb_writes(self) -> int:
        return self.count("dynamodb", DYNAMODB_WRITES)

    def dynamodb_reads(self) -> int:
        return self.count("dynamodb", DYNAMODB_READS)

    def dynamodb_items_read(self) -> int:
        return sum(self.items.values())

    def breakdown(self) -> dict[str, int]:
        return {f"{svc}:{op}": n for (svc, op), n in sorted(self.calls.items())}
