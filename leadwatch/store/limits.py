"""The counters behind the deployment's shared rate limits (crm_adapters.limits.SlotCounter).

DynamoDB: one item per (scope, limit, counter) in the state table (`LimitItem`, key
`limit#<name>#<first slot>[+<slots>]`), raised by one conditional UpdateItem, so every container
of the deployment counts into the same item and no counter ever hands out more than its limit:
`claim` is `SET n = if_not_exists(n, :start) + :count` only while `n` is missing or at least
`start` and stays within the limit, `claim_from` is `SET n = :start + :count` only while `n`
is missing or at most `start`. Each is one write (1 WCU,
refused or not: a refused conditional write is billed too), whatever `count`; the item is a few
dozen bytes and goes by TTL minutes after its last slot. Needs dynamodb:UpdateItem on the state
table in every function that calls a CRM or Telegram.

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

    def claim(
        self, scope: str, key: str, limit: int, expires_at: int, count: int = 1, start: int = 0
    ) -> int | None:
        if start + count > limit:
            return None
        item = LimitItem(scope, key)
        self.writes += 1
        try:
            # PynamoDB's update() puts the ALL_NEW answer into `item`.
            item.update(
                actions=[
                    LimitItem.n.set((LimitItem.n | start) + count),
                    LimitItem.expires_at.set(datetime.fromtimestamp(expires_at, UTC)),
                ],
                condition=LimitItem.n.does_not_exist() | LimitItem.n.between(start, limit - count),
            )
        except UpdateError as exc:
            if lost_condition(exc):
                return None
            raise
        return int(item.n or 0)

    def claim_from(self, scope: str, key: str, start: int, count: int, expires_at: int) -> bool:
        item = LimitItem(scope, key)
        self.writes += 1
        try:
            item.update(
                actions=[
                    LimitItem.n.set(start + count),
                    LimitItem.expires_at.set(datetime.fromtimestamp(expires_at, UTC)),
                ],
                condition=LimitItem.n.does_not_exist() | (LimitItem.n <= start),
            )
        except UpdateError as exc:
            if lost_condition(exc):
                return False
            raise
        return True


class MemorySlotCounter:
    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self.writes = 0
        self._lock = threading.Lock()

    def claim(
        self, scope: str, key: str, limit: int, expires_at: int, count: int = 1, start: int = 0
    ) -> int | None:
        if start + count > limit:
            return None
        with self._lock:
            self.writes += 1
            now = self.counts.get((scope, key), start)
            if now < start or now + count > limit:
                return None
            self.counts[(scope, key)] = now + count
            return now + count

    def claim_from(self, scope: str, key: str, start: int, count: int, expires_at: int) -> bool:
        with self._lock:
            self.writes += 1
            if self.counts.get((scope, key), 0) > start:
                return False
            self.counts[(scope, key)] = start + count
            return True
