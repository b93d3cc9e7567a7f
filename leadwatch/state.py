"""The state a process keeps: one small interface, two implementations (in memory here,
DynamoDB in `leadwatch.store.process_state`), one contract test suite run against both.

A process sees its own namespace only (`ctx.state(<process name>)`), scoped by tenant. No
write is a blind read-modify-write; each one is conditioned so that concurrent workers and
redelivered or reordered events cannot make state go backwards:

- `create` writes a record only if it does not exist yet;
- `update` writes only over the version it read (optimistic locking);
- `advance` writes only if its `order` (for example the CRM's modification time of the
  snapshot it comes from) is not older than the stored one;
- `count` adds to a counter once per `once` token (a lead, a call), however often it is asked;
- `delete` removes a record only at the version it read.

`create`, `update` and `advance` take an optional `expires_at`: the record is gone after it
(DynamoDB's TTL; the memory store forgets it when read after it), so a process keeps what it
must for the tenant's retention and no longer.

A write that loses returns False and is counted in the `StaleWrites` metric.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class Record:
    key: str
    value: dict[str, Any] = field(default_factory=dict)
    count: int = 0
    version: int = 0  # 1 after the first write, +1 with every write
    order: float | None = None  # the order of the last `advance`


class StateStore(Protocol):
    """Tenant-scoped records of one namespace; keys are the caller's own strings."""

    def get(self, namespace: str, tenant: str, key: str) -> Record | None: ...

    def get_many(self, namespace: str, tenant: str, keys: Iterable[str]) -> dict[str, Record]: ...

    def query(self, namespace: str, tenant: str, prefix: str = "") -> list[Record]: ...

    def create(
        self, namespace: str, tenant: str, key: str, value: dict[str, Any], expires_at: datetime | None = None
    ) -> bool: ...

    def update(
        self,
        namespace: str,
        tenant: str,
        key: str,
        value: dict[str, Any],
        version: int,
        expires_at: datetime | None = None,
    ) -> bool: ...

    def advance(
        self,
        namespace: str,
        tenant: str,
        key: str,
        value: dict[str, Any],
        order: float,
        expires_at: datetime | None = None,
    ) -> bool: ...

    def delete(self, namespace: str, tenant: str, key: str, version: int | None = None) -> bool: ...

    def count(self, namespace: str, tenant: str, key: str, once: str, amount: int = 1) -> bool: ...


class ProcessState:
    """One process's view of the store: its namespace, every call scoped by tenant."""

    def __init__(self, store: StateStore, namespace: str, on_stale: Any = None):
        self._store = store
        self.namespace = namespace
        self._on_stale = on_stale

    def _lost(self, won: bool) -> bool:
        if not won and self._on_stale is not None:
            self._on_stale(self.namespace)
        return won

    def get(self, tenant: str, key: str) -> Record | None:
        return self._store.get(self.namespace, tenant, key)

    def get_many(self, tenant: str, keys: Iterable[str]) -> dict[str, Record]:
        return self._store.get_many(self.namespace, tenant, keys)

    def query(self, tenant: str, prefix: str = "") -> list[Record]:
        """Records whose key starts with `prefix`, in key order."""
        return self._store.query(self.namespace, tenant, prefix)

    def create(
        self, tenant: str, key: str, value: dict[str, Any], expires_at: datetime | None = None
    ) -> bool:
        """False when the record exists already (another worker, a redelivery): not a stale write."""
        return self._store.create(self.namespace, tenant, key, value, expires_at)

    def update(
        self, tenant: str, key: str, value: dict[str, Any], version: int, expires_at: datetime | None = None
    ) -> bool:
        return self._lost(self._store.update(self.namespace, tenant, key, value, version, expires_at))

    def advance(
        self, tenant: str, key: str, value: dict[str, Any], order: float, expires_at: datetime | None = None
    ) -> bool:
        return self._lost(self._store.advance(self.namespace, tenant, key, value, order, expires_at))

    def delete(self, tenant: str, key: str, version: int | None = None) -> bool:
        """Remove the record (only at `version` when given); False when it is not there, or at
        another version (not a stale write: whoever changed it decides)."""
        return self._store.delete(self.namespace, tenant, key, version)

    def count(self, tenant: str, key: str, once: str, amount: int = 1) -> bool:
        """True when this `once` was not counted yet (and now is)."""
        return self._store.count(self.namespace, tenant, key, once, amount)


@dataclass
class _Slot:
    record: Record
    counted: set[str] = field(default_factory=set)
    expires_at: datetime | None = None


class MemoryState:
    """The in-memory implementation: unit tests of processes, and replays of a stored event log.

    A lock makes each operation atomic, as DynamoDB's conditional writes are."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._data: dict[tuple[str, str], dict[str, _Slot]] = {}
        self._lock = threading.Lock()
        # With a clock, an expired record is gone as DynamoDB's TTL would remove it (which
        # DynamoDB does within days; a reader never relies on either being prompt).
        self.clock = clock

    def _table(self, namespace: str, tenant: str) -> dict[str, _Slot]:
        table = self._data.setdefault((namespace, tenant), {})
        if self.clock is not None:
            now = self.clock()
            for key in [
                k for k, slot in table.items() if slot.expires_at is not None and slot.expires_at <= now
            ]:
                del table[key]
        return table

    @staticmethod
    def _copy(record: Record) -> Record:
        return Record(record.key, copy.deepcopy(record.value), record.count, record.version, record.order)

    def get(self, namespace: str, tenant: str, key: str) -> Record | None:
        with self._lock:
            slot = self._table(namespace, tenant).get(key)
            return self._copy(slot.record) if slot else None

    def get_many(self, namespace: str, tenant: str, keys: Iterable[str]) -> dict[str, Record]:
        with self._lock:
            table = self._table(namespace, tenant)
            return {k: self._copy(table[k].record) for k in set(keys) if k in table}

    def query(self, namespace: str, tenant: str, prefix: str = "") -> list[Record]:
        with self._lock:
            table = self._table(namespace, tenant)
            return [self._copy(table[k].record) for k in sorted(table) if k.startswith(prefix)]

    def create(
        self, namespace: str, tenant: str, key: str, value: dict[str, Any], expires_at: datetime | None = None
    ) -> bool:
        with self._lock:
            table = self._table(namespace, tenant)
            if key in table:
                return False
            table[key] = _Slot(Record(key, copy.deepcopy(value), 0, 1), expires_at=expires_at)
            return True

    def update(
        self,
        namespace: str,
        tenant: str,
        key: str,
        value: dict[str, Any],
        version: int,
        expires_at: datetime | None = None,
    ) -> bool:
        with self._lock:
            slot = self._table(namespace, tenant).get(key)
            if slot is None or slot.record.version != version:
                return False
            old = slot.record
            slot.record = Record(key, copy.deepcopy(value), old.count, old.version + 1, old.order)
            if expires_at is not None:
                slot.expires_at = expires_at
            return True

    def advance(
        self,
        namespace: str,
        tenant: str,
        key: str,
        value: dict[str, Any],
        order: float,
        expires_at: datetime | None = None,
    ) -> bool:
        with self._lock:
            table = self._table(namespace, tenant)
            slot = table.get(key)
            if slot is None:
                table[key] = _Slot(Record(key, copy.deepcopy(value), 0, 1, order), expires_at=expires_at)
                return True
            old = slot.record
            if old.order is not None and order < old.order:
                return False
            slot.record = Record(key, copy.deepcopy(value), old.count, old.version + 1, order)
            if expires_at is not None:
                slot.expires_at = expires_at
            return True

    def delete(self, namespace: str, tenant: str, key: str, version: int | None = None) -> bool:
        with self._lock:
            table = self._table(namespace, tenant)
            slot = table.get(key)
            if slot is None or (version is not None and slot.record.version != version):
                return False
            del table[key]
            return True

    def count(self, namespace: str, tenant: str, key: str, once: str, amount: int = 1) -> bool:
        with self._lock:
            table = self._table(namespace, tenant)
            slot = table.setdefault(key, _Slot(Record(key)))
            if once in slot.counted:
                return False
            slot.counted.add(once)
            old = slot.record
            slot.record = Record(key, old.value, old.count + amount, old.version, old.order)
            return True
