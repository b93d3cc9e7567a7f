"""PynamoDB models of the tables in infra/resources.yaml (tests check they agree).

Every table is partitioned by tenant, so no query can reach another tenant's rows.
Times are stored as unix seconds (numbers) so the due index can range over them.
"""

from __future__ import annotations

import os
from typing import Any

from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

_BASE_NAMES = {
    "InboxItem": ("LEADWATCH_INBOX_TABLE", "leadwatch-inbox"),
    "LeadItem": ("LEADWATCH_LEADS_TABLE", "leadwatch-leads"),
    "JournalItem": ("LEADWATCH_JOURNAL_TABLE", "leadwatch-journal"),
    "StateItem": ("LEADWATCH_STATE_TABLE", "leadwatch-state"),
    "CallDayItem": ("LEADWATCH_STATE_TABLE", "leadwatch-state"),
    "ProcessItem": ("LEADWATCH_STATE_TABLE", "leadwatch-state"),
    "LimitItem": ("LEADWATCH_STATE_TABLE", "leadwatch-state"),
    "NamesItem": ("LEADWATCH_STATE_TABLE", "leadwatch-state"),
}


class _Meta:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "eu-central-1"
    host = os.environ.get("LEADWATCH_DYNAMODB_ENDPOINT") or None
    # Lambda retries the whole invocation; a few quick SDK retries are enough here.
    max_retry_attempts = 3
    connect_timeout_seconds = 2
    read_timeout_seconds = 5


class InboxItem(Model):
    class Meta(_Meta):
        table_name = "leadwatch-inbox"

    tenant = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)
    kind = UnicodeAttribute()  # "event", "reject" or "sample" (the hour's count of kept rejects)
    received_at = NumberAttribute()
    payload = UnicodeAttribute(null=True)
    status = NumberAttribute(null=True)
    reason = UnicodeAttribute(null=True)
    body = UnicodeAttribute(null=True)  # a reject's body as text: rows kept before `raw`
    raw = BinaryAttribute(null=True, legacy_encoding=False)  # a reject's body, bytes as they came
    kept = NumberAttribute(null=True)  # a "sample" row: rejects kept in its hour
    expires_at = TTLAttribute(null=True)


class DueIndex(GlobalSecondaryIndex["LeadItem"]):
    class Meta:
        index_name = "due-index"
        # Keys only: a write to a card that leaves its index keys alone (a claim, a counter) then
        # writes the table only, not the index too; readers fetch the few cards they need.
        projection = KeysOnlyProjection()

    due_bucket = UnicodeAttribute(hash_key=True)
    due_at = NumberAttribute(range_key=True)


class PlanIndex(GlobalSecondaryIndex["LeadItem"]):
    class Meta:
        index_name = "plan-index"
        projection = KeysOnlyProjection()

    plan_bucket = UnicodeAttribute(hash_key=True)
    entity = UnicodeAttribute(range_key=True)


class LeadItem(Model):
    class Meta(_Meta):
        table_name = "leadwatch-leads"

    tenant = UnicodeAttribute(hash_key=True)
    entity = UnicodeAttribute(range_key=True)
    created_at = NumberAttribute()
    due_at = NumberAttribute()
    # Present only while the card waits for its verdict: that keeps the due index sparse.
    due_bucket = UnicodeAttribute(null=True)
    stage = UnicodeAttribute()
    responsible = UnicodeAttribute(null=True)
    title = UnicodeAttribute(null=True)
    processed_at = NumberAttribute(null=True)
    processed_how = UnicodeAttribute(null=True)
    crm_modified_at = NumberAttribute(null=True)
    verdict = UnicodeAttribute(null=True)
    verdict_at = NumberAttribute(null=True)
    verdict_pending = UnicodeAttribute(null=True)  # decided and acted on, not yet counted and closed
    claim_token = UnicodeAttribute(null=True)
    claim_until = NumberAttribute(null=True)
    # Dialing: "<tenant>#<day 1 of the dialing plan>", so a report reads only the plan window.
    plan_bucket = UnicodeAttribute(null=True)
    # A card's calls are not counted here (every call would write the card, and the sets of
    # counted calls would grow it past 1 KB): they are in its card-day items (CallDayItem). Rows of
    # older releases still carry call_attempts, call_touches, calls_counted and touches_counted.
    rejected_at = NumberAttribute(null=True)
    rejection_checked = NumberAttribute(null=True)  # the rejected_at whose check is done
    expires_at = TTLAttribute(null=True)  # the tenant's retention after the card arrived
    deleted_at = NumberAttribute(null=True)  # the card was deleted in the CRM: no one watches it
    stamped = BooleanAttribute(null=True)  # its intake field was written before it was stored

    due_index = DueIndex()
    plan_index = PlanIndex()


class JournalItem(Model):
    class Meta(_Meta):
        table_name = "leadwatch-journal"

    tenant = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)  # "<occurred ISO>#<violation id>"
    violation_id = UnicodeAttribute()
    type = UnicodeAttribute()
    entity = UnicodeAttribute()
    manager = UnicodeAttribute(null=True)
    occurred_at = NumberAttribute()
    recorded_at = NumberAttribute()
    details = UnicodeAttribute(null=True)  # JSON
    expires_at = TTLAttribute(null=True)  # the tenant's retention after it happened


class StateItem(Model):
    class Meta(_Meta):
        table_name = "leadwatch-state"

    tenant = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)
    value = UnicodeAttribute(null=True)
    on_time = NumberAttribute(null=True)
    late = NumberAttribute(null=True)
    counted = UnicodeSetAttribute(
        null=True
    )  # the cards (or calls) a counter has counted, so none counts twice
    attempts = NumberAttribute(null=True)
    at = NumberAttribute(null=True)
    expires_at = TTLAttribute(null=True)
    # The effect ledger (`effect#<id>`, leadwatch.store.ledger): claimed / done / unconfirmed; a row
    # without a status is done (written before effects were claimed).
    status = UnicodeAttribute(null=True)
    owner = UnicodeAttribute(null=True)
    lease_until = NumberAttribute(null=True)
    detail = UnicodeAttribute(null=True)
    # An effect's failures (`failure#<id>`): `attempts` in all, `refusals` of them permanent.
    refusals = NumberAttribute(null=True)


class CallDayItem(Model):
    """One card's calls of one local day (`calls#<day>#<card>`, leadwatch.store.calls), in the
    state table. Each call is a top-level map attribute `c#<call key>` (see leadwatch.store.calls
    for its fields): a new call is added to the item, whether it exists yet or not, in one
    UpdateItem (a map of calls would have to exist before a call could be set in it). PynamoDB
    keeps those attributes in `calls` (raw, by call key) when it reads an item."""

    class Meta(_Meta):
        table_name = "leadwatch-state"

    tenant = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)  # the day and the card: no attribute repeats them
    expires_at = TTLAttribute(null=True)  # the tenant's retention after the day's first call

    calls: dict[str, dict[str, Any]]

    @classmethod
    def from_raw_data(cls, data: dict[str, Any]) -> CallDayItem:
        item = super().from_raw_data(data)
        item.calls = {
            name.removeprefix(CALL_PREFIX): value["M"]
            for name, value in data.items()
            if name.startswith(CALL_PREFIX) and "M" in value
        }
        return item


CALL_PREFIX = "c#"  # a call's attribute in a card-day item: c#<call key>


class ProcessItem(Model):
    """A record of a process's own state (`leadwatch.state`): `p#<process>#<key>`, in the state table."""

    class Meta(_Meta):
        table_name = "leadwatch-state"

    tenant = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)
    data = UnicodeAttribute(null=True)  # JSON
    version = NumberAttribute(null=True)
    order = NumberAttribute(null=True, attr_name="ord")
    total = NumberAttribute(null=True)
    counted = UnicodeSetAttribute(null=True)
    expires_at = TTLAttribute(null=True)  # when the process gives one (its retention)


class LimitItem(Model):
    """One slot of a shared rate limit (`limit#<name>#<slot>`, leadwatch.store.limits): how many
    requests every container together has sent in it. Under the tenant for its CRM (`amocrm`,
    `bitrix24`); under `telegram:<bot id>` for a chat (`chat#<chat id>`), which tenants may share.
    Gone by TTL minutes after the slot."""

    class Meta(_Meta):
        table_name = "leadwatch-state"

    tenant = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)
    n = NumberAttribute(null=True)
    expires_at = TTLAttribute(null=True)


class NamesItem(Model):
    """The CRM's names of one kind for a tenant (`names#<kind>`, leadwatch.store.names): the
    list as JSON, when it was read, when a refresh was last claimed. Gone by TTL long after its
    last read."""

    class Meta(_Meta):
        table_name = "leadwatch-state"

    tenant = UnicodeAttribute(hash_key=True)
    key = UnicodeAttribute(range_key=True)
    data = UnicodeAttribute(null=True)  # JSON {"n": {id: name}, "p": {stage key: pipeline name}}
    read_at = NumberAttribute(null=True)
    tried_at = NumberAttribute(null=True)
    truncated = BooleanAttribute(null=True)
    expires_at = TTLAttribute(null=True)


MODELS: tuple[type[Model], ...] = (
    InboxItem,
    LeadItem,
    JournalItem,
    StateItem,
    CallDayItem,
    ProcessItem,
    LimitItem,
    NamesItem,
)


def bind(*, host: str | None = None, region: str | None = None, prefix: str = "") -> None:
    """Point every model at an endpoint (moto's server locally; None for AWS) and its table names.

    Table names come from the environment (set by the deployment template), else the defaults.
    """
    for model in MODELS:
        env_name, default = _BASE_NAMES[model.__name__]
        model.Meta.table_name = prefix + (os.environ.get(env_name) or default)
        model.Meta.host = host
        if region:
            model.Meta.region = region
        model._connection = None


def bind_from_environment() -> None:
    bind(host=os.environ.get("LEADWATCH_DYNAMODB_ENDPOINT") or None, region=_Meta.region)
