"""The counters behind the deployment's shared rate limits (crm_adapters.limits.SlotCounter).

DynamoDB: one item per (scope, limit, slot) in the state table (`LimitItem`, key
`limit#<name>#<slot>`), raised by one conditional UpdateItem, `ADD n :1` only while `n` is below
the slot's limit, so every container of the deployment counts into the same item and no slot
ever holds more than its limit. Each claim is one write (1 WCU, refused or not: a refused
conditional write is billed too); the item is a few dozen bytes and goes by TTL minutes after
its slot. Needs dynamodb:UpdateItem on the state table in every function that calls a CRM or
Telegram.

Memory: the same counters under one lock, for unit tests and benchmarks without AWS.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from pynamodb.exceptions import UpdateError

from leadwatch.store.conditions import lost_condition
from leadwatch.store.models import LimitItem


class DynamoSlotCounter:
    def __init__(self) -> None:
        self.writes = 0  # UpdateItem calls made (granted or refused)

    def claim(self, scope: str, key: str, limit: int, expires_at: int) -> int | None:
        item = LimitItem(scope, key)
        self.writes += 1
        try:
            # PynamoDB's update() puts the ALL_NEW answer into `item`.
            item.update(
                actions=[
                    LimitItem.n.add(1),
                    LimitItem.expires_at.set(datetime.fromtimestamp(expires_at, UTC)),
                ],
                condition=LimitItem.n.does_not_exist() | (LimitItem.n < limit),
            )
        except UpdateError as exc:
            if lost_condition(exc):
                return None
            raise
        return int(item.n or 0)


class MemorySlotCounter:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.writes = 0
        self._lock = threading.Lock()

    def claim(self, scope: str, key: str, limit: int, expires_at: int) -> int | None:
        with self._lock:
            self.writes += 1
            count = self.counts.get((scope, key), 0)
            if count >= limit:
                return None
            self.counts[(scope, key)] = count + 1
            return count + 1
