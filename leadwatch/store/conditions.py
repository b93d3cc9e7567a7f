"""Conditional writes: how every store write that must happen once, or only over what it read,
is made, and how a lost condition is told from a failure."""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import PutError, UpdateError


def lost_condition(exc: Exception) -> bool:
    """The write was refused by its condition (someone else got there first), not broken."""
    cause = getattr(exc, "cause_response_code", None)
    if cause in ("ConditionalCheckFailedException", "TransactionCanceledException"):
        return True
    return "ConditionalCheckFailed" in str(exc)


def put_once(item: Any, condition: Any) -> bool:
    """Put an item only if `condition` holds (usually: not there yet); False when it did not."""
    try:
        item.save(condition=condition)
    except PutError as exc:
        if lost_condition(exc):
            return False
        raise
    return True


def update_if(item: Any, actions: list[Any], condition: Any) -> bool:
    """Apply `actions` only if `condition` holds; False when it did not."""
    try:
        item.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if lost_condition(exc):
            return False
        raise
    return True
