"""Process state in DynamoDB: the records of `leadwatch.state`, in the state table.

Each record is one item keyed `p#<namespace>#<key>` under its tenant, so a process's
records sit apart from the framework's and every query stays inside one tenant and one
namespace. Every write is a single conditional write (see `leadwatch.state`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pynamodb.exceptions import DeleteError

from leadwatch.state import Record
from leadwatch.store.conditions import lost_condition, put_once, update_if
from leadwatch.store.models import ProcessItem

PREFIX = "p#"


def _full(namespace: str, key: str) -> str:
    return f"{PREFIX}{namespace}#{key}"


def _record(namespace: str, item: ProcessItem) -> Record:
    return Record(
        key=item.key[len(_full(namespace, "")) :],
        value=json.loads(item.data) if item.data else {},
        count=int(item.total or 0),
        version=int(item.version or 0),
        order=float(item.order) if item.order is not None else None,
    )


def _dump(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


class DynamoState:
    def get(self, namespace: str, tenant: str, key: str) -> Record | None:
        try:
            return _record(namespace, ProcessItem.get(tenant, _full(namespace, key), consistent_read=True))
        except ProcessItem.DoesNotExist:
            return None

    def get_many(self, namespace: str, tenant: str, keys: Iterable[str]) -> dict[str, Record]:
        wanted = sorted({(tenant, _full(namespace, k)) for k in keys})
        found = (_record(namespace, item) for item in ProcessItem.batch_get(wanted)) if wanted else ()
        return {record.key: record for record in found}

    def query(self, namespace: str, tenant: str, prefix: str = "") -> list[Record]:
        items = ProcessItem.query(
            tenant, ProcessItem.key.startswith(_full(namespace, prefix)), consistent_read=True
        )
        return [_record(namespace, item) for item in items]

    def create(
        self, namespace: str, tenant: str, key: str, value: dict[str, Any], expires_at: datetime | None = None
    ) -> bool:
        item = ProcessItem(tenant, _full(namespace, key), data=_dump(value), version=1, expires_at=expires_at)
        return put_once(item, ProcessItem.key.does_not_exist())

    def _update(
        self, tenant: str, full: str, actions: list[Any], condition: Any, expires_at: datetime | None = None
    ) -> bool:
        if expires_at is not None:
            actions = [*actions, ProcessItem.expires_at.set(expires_at)]
        return update_if(ProcessItem(tenant, full), actions, condition)

    def update(
        self,
        namespace: str,
        tenant: str,
        key: str,
        value: dict[str, Any],
        version: int,
        expires_at: datetime | None = None,
    ) -> bool:
        return self._update(
            tenant,
            _full(namespace, key),
            [ProcessItem.data.set(_dump(value)), ProcessItem.version.add(1)],
            ProcessItem.version == version,
            expires_at,
        )

    def advance(
        self,
        namespace: str,
        tenant: str,
        key: str,
        value: dict[str, Any],
        order: float,
        expires_at: datetime | None = None,
    ) -> bool:
        return self._update(
            tenant,
            _full(namespace, key),
            [ProcessItem.data.set(_dump(value)), ProcessItem.order.set(order), ProcessItem.version.add(1)],
            ProcessItem.order.does_not_exist() | (ProcessItem.order <= order),
            expires_at,
        )

    def delete(self, namespace: str, tenant: str, key: str, version: int | None = None) -> bool:
        condition = ProcessItem.key.exists()
        if version is not None:
            condition &= ProcessItem.version == version
        try:
            ProcessItem(tenant, _full(namespace, key)).delete(condition=condition)
        except DeleteError as exc:
            if lost_condition(exc):
                return False
            raise
        return True

    def count(self, namespace: str, tenant: str, key: str, once: str, amount: int = 1) -> bool:
        return self._update(
            tenant,
            _full(namespace, key),
            [ProcessItem.total.add(amount), ProcessItem.counted.add({once})],
            ~ProcessItem.counted.contains(once),
        )
