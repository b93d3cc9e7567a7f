"""Tenant isolation: one tenant's credentials neither read nor write another tenant's data.

Over HTTP through the real app on one LocalStack: webhooks signed for one tenant and posted
to the other, read API keys used across tenants, and leads of both tenants run through the
worker and the sweep. Then the data access layer itself: every `Store` method that takes a
tenant touches only that tenant's partition, even when both tenants use the same keys.

Not tested: a queue message naming another tenant. The queue is written only by leadwatch's
own functions, and a message's tenant comes from the tenant the webhook was authenticated for
(never from the body); a forged message needs SQS write access, which is already past every
check this file is about.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import pytest

from leadwatch.cards import LeadState
from leadwatch.effects import Violation
from leadwatch.events import EntityRef, EntityType
from leadwatch.store.dynamodb import Store, due_bucket
from leadwatch.testing.stack import (
    AMO_TENANT,
    B24_TENANT,
    AmoDriver,
    BitrixDriver,
    CrmDriver,
    LocalStack,
    SimClock,
)

pytestmark = pytest.mark.integration

MSK = ZoneInfo("Europe/Moscow")
TUESDAY_10 = datetime(2025, 11, 11, 10, 0, tzinfo=MSK)
MANAGERS = {"7": "Anna Petrova", "8": "Ivan Orlov"}
# Each tenant's leads go to its own manager, so a manager in the wrong table is a leak.
MANAGER_OF = {B24_TENANT: "7", AMO_TENANT: "8"}
OTHER = {B24_TENANT: AMO_TENANT, AMO_TENANT: B24_TENANT}


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    with LocalStack(SimClock(TUESDAY_10), managers=MANAGERS) as running:
        yield running


@pytest.fixture(scope="module")
def leads(stack: LocalStack) -> dict[str, str]:
    """One late lead per tenant, through webhooks, the worker and the deadline sweep."""
    drivers: dict[str, CrmDriver] = {B24_TENANT: BitrixDriver(stack.bitrix), AMO_TENANT: AmoDriver(stack.amo)}
    created = {
        tenant: driver.create(f"Lead of {tenant}", MANAGER_OF[tenant], TUESDAY_10)
        for tenant, driver in drivers.items()
    }
    stack.pump()
    stack.clock.set(TUESDAY_10 + timedelta(hours=2))  # past the 11:15 control time
    stack.settle()
    no = {B24_TENANT: "N", AMO_TENANT: "No"}
    assert {t: drivers[t].verdict(lead) for t, lead in created.items()} == no
    return created


def lead_ref(lead_id: str) -> EntityRef:
    return EntityRef(EntityType.LEAD, lead_id)


def inbox_counts(stack: LocalStack) -> dict[str, tuple[int, int]]:
    return {
        t: (len(stack.ctx.store.events(t)), len(stack.ctx.store.rejects(t))) for t in (B24_TENANT, AMO_TENANT)
    }


def captured(fake: Any, act: Any) -> bytes:
    """The body the fake CRM would have posted for `act`, without posting it."""
    bodies: list[bytes] = []
    deliver = fake.deliver
    fake.deliver = bodies.append
    try:
        act()
    finally:
        fake.deliver = deliver
    assert bodies
    return bodies[-1]


def journal(stack: LocalStack, tenant: str) -> list[Any]:
    return stack.ctx.store.violations(
        tenant, TUESDAY_10 - timedelta(days=30), TUESDAY_10 + timedelta(days=30)
    )


# ---------------------------------------------------------------- webhooks across tenants


# These tests ask for `leads` only so the leads' statistics are settled before they add cards.


def test_a_webhook_signed_for_one_tenant_is_refused_by_the_other(stack: LocalStack, leads: dict[str, str]):
    b24_token = stack.secrets["DEMO_B24_APP_TOKEN"]
    amo_key = stack.secrets["DEMO_AMO_HOOK_SECRET"]
    b24_body = captured(
        stack.bitrix,
        lambda: stack.bitrix.create_lead(title="Cross", assigned_by_id="7", created_at=TUESDAY_10),
    )
    amo_body = captured(
        stack.amo, lambda: stack.amo.create_lead(name="Cross", responsible_user_id="8", created_at=TUESDAY_10)
    )
    assert b24_token.encode() in b24_body  # the Bitrix24 body really is signed for demo-b24
    # amoCRM's hook secret, used as a Bitrix24 application token.
    b24_with_amo_key = urlencode(
        [(k, amo_key if k == "auth[application_token]" else v) for k, v in parse_qsl(b24_body.decode())]
    ).encode()
    before = inbox_counts(stack)

    attempts = [
        # Bitrix24's signed body at amoCRM's endpoint: no ?key=, the wrong ?key=, its token as ?key=.
        (AMO_TENANT, b24_body, None, 401),
        (AMO_TENANT, b24_body, "wrong", 403),
        (AMO_TENANT, b24_body, b24_token, 403),
        # amoCRM's ?key= at Bitrix24's endpoint: the key is ignored, the body carries no token.
        (B24_TENANT, amo_body, amo_key, 401),
        (B24_TENANT, b24_with_amo_key, amo_key, 403),
    ]
    for tenant, body, key, expected in attempts:
        status, payload = stack.post_hook(tenant, body, key=key)
        assert status == expected, (tenant, key, status, payload)
        assert (
            set(payload) == {"error"}
            and b24_token not in payload["error"]
            and amo_key not in payload["error"]
        )
    # Refused before parsing: nothing stored under either tenant, not even as a kept reject.
    assert inbox_counts(stack) == before


def test_a_body_cannot_name_another_tenant(stack: LocalStack, leads: dict[str, str]):
    # Whatever the body says, its events belong to the tenant the URL's credentials proved.
    amo_key = stack.secrets["DEMO_AMO_HOOK_SECRET"]
    body = captured(
        stack.amo, lambda: stack.amo.create_lead(name="Named", responsible_user_id="8", created_at=TUESDAY_10)
    )
    body += f"&tenant={B24_TENANT}&leads[add][0][tenant]={B24_TENANT}&account[tenant]={B24_TENANT}".encode()
    b24_before = stack.ctx.store.events(B24_TENANT)
    status, payload = stack.post_hook(AMO_TENANT, body, key=amo_key)
    assert status == 200 and payload["accepted"] == 1
    assert stack.ctx.store.events(B24_TENANT) == b24_before
    assert {event["tenant"] for event in stack.ctx.store.events(AMO_TENANT)} == {AMO_TENANT}


# ---------------------------------------------------------------- read API across tenants


@pytest.mark.parametrize("tenant", [B24_TENANT, AMO_TENANT])
def test_one_tenants_api_key_does_not_open_the_others_data(
    stack: LocalStack, leads: dict[str, str], tenant: str
):
    other = OTHER[tenant]
    path = f"/tenants/{tenant}/timeliness?from=2025-11-01&to=2025-11-30"
    status, payload = stack.get(path, headers={"X-Api-Key": stack.api_key(other)})
    assert status == 401 and set(payload) == {"error"}
    text = json.dumps(payload, ensure_ascii=False)
    for leaked in (MANAGERS[MANAGER_OF[tenant]], f"Lead of {tenant}", leads[tenant]):
        assert leaked not in text

    status, payload = stack.get(path, headers={"X-Api-Key": stack.api_key(tenant)})
    assert status == 200 and payload["tenant"] == tenant
    assert [(m["manager"], m["late"]) for m in payload["managers"]] == [(MANAGER_OF[tenant], 1)]
    assert {row["manager"] for row in payload["days"]} == {MANAGER_OF[tenant]}


# ---------------------------------------------------------------- the data of both tenants


def test_each_tenants_leads_stay_in_its_own_partition(stack: LocalStack, leads: dict[str, str]):
    store = stack.ctx.store
    for tenant, lead_id in leads.items():
        other = OTHER[tenant]
        state = store.get_lead(tenant, lead_ref(lead_id))
        assert state is not None and state.tenant == tenant and state.verdict == "late"
        assert store.get_lead(other, lead_ref(lead_id)) is None

        rows = journal(stack, tenant)
        assert [(r.entity, r.manager) for r in rows] == [(f"lead:{lead_id}", MANAGER_OF[tenant])]
        assert f"lead:{leads[other]}" not in {r.entity for r in rows}

        stats = store.timeliness_stats(tenant, date(2025, 11, 1), date(2025, 11, 30))
        assert [(s.manager, s.late) for s in stats] == [(MANAGER_OF[tenant], 1)]

        events = store.events(tenant)
        assert events and {e["tenant"] for e in events} == {tenant}
        ids = {e["entity"]["id"] for e in events if e.get("entity")}
        assert lead_id in ids and leads[other] not in ids


# ---------------------------------------------------------------- the Store, method by method

NOW = datetime(2025, 11, 11, 8, 0, tzinfo=UTC)
A, B = "iso-a", "iso-b"
SHARED = EntityRef(EntityType.LEAD, "42")  # the same card id in both tenants' CRMs


def state(tenant: str, due: datetime, title: str) -> LeadState:
    return LeadState(tenant, SHARED, due - timedelta(minutes=15), due, "NEW", "7", title=title)


def test_every_store_method_stays_in_its_tenants_partition(stack: LocalStack):
    store: Store = stack.ctx.store
    due = NOW - timedelta(minutes=1)

    # Writes with identical keys for both tenants: each must land in its own partition.
    for tenant in (A, B):
        assert store.put_event(tenant, "k:1", {"tenant": tenant}, NOW)
        store.put_reject(tenant, 400, f"bad for {tenant}", f"body of {tenant}".encode(), NOW, "r1")
        assert store.create_lead(state(tenant, due, f"title of {tenant}"), NOW)
        store.mark_effects(tenant, ["effect-1"], NOW)
        store.set_checkpoint(tenant, "reconcile", f"checkpoint of {tenant}")
        violation = Violation("v1", "late_first_processing", SHARED, "7", due, {"tenant": tenant})
        assert store.put_violation(tenant, violation, NOW)
    assert due_bucket(A, due, NOW) != due_bucket(B, due, NOW)

    for tenant in (A, B):
        assert store.events(tenant) == [{"tenant": tenant}]
        assert [r.body for r in store.rejects(tenant)] == [f"body of {tenant}".encode()]
        assert store.get_lead(tenant, SHARED).title == f"title of {tenant}"  # type: ignore[union-attr]
        assert [s.title for _, s in store.due_leads(tenant, NOW, NOW.date())] == [f"title of {tenant}"]
        assert store.effects_done(tenant, ["effect-1", "effect-2"]) == {"effect-1"}
        assert store.get_checkpoint(tenant, "reconcile") == f"checkpoint of {tenant}"
        [row] = store.violations(tenant, NOW - timedelta(days=1), NOW + timedelta(days=1))
        assert row.details == {"tenant": tenant}

    # Changes made as A leave B exactly as it was.
    store.forget_event(A, "k:1")
    assert store.events(A) == [] and store.events(B) == [{"tenant": B}]

    a_state = store.get_lead(A, SHARED)
    assert a_state is not None
    store.update_lead(
        LeadState(A, SHARED, a_state.created_at, a_state.due_at, "IN_PROCESS", "9", title="changed")
    )
    b_state = store.get_lead(B, SHARED)
    assert b_state is not None and (b_state.stage, b_state.responsible, b_state.title) == (
        "NEW",
        "7",
        f"title of {B}",
    )

    # A claim by A's sweep does not hold B's card, and A's verdict neither closes nor counts B's.
    assert store.claim(a_state, "token-a", NOW, timedelta(minutes=5))
    assert store.claim(b_state, "token-b", NOW, timedelta(minutes=5))
    assert store.close_verdict(a_state, "late", "token-a", NOW, "2025-11-11", "7")
    assert store.get_lead(B, SHARED).verdict is None  # type: ignore[union-attr]
    assert [s.title for _, s in store.due_leads(B, NOW, NOW.date())] == [f"title of {B}"]
    assert list(store.due_leads(A, NOW, NOW.date())) == []
    assert [(s.manager, s.late) for s in store.timeliness_stats(A, NOW.date(), NOW.date())] == [("7", 1)]
    assert store.timeliness_stats(B, NOW.date(), NOW.date()) == []
    store.release(b_state, "token-a")  # A's token cannot release B's claim...
    assert not store.close_verdict(b_state, "late", "token-a", NOW, "2025-11-11", "7")  # ...nor close it
    assert store.close_verdict(b_state, "on_time", "token-b", NOW, "2025-11-11", "7")
    assert [(s.on_time, s.late) for s in store.timeliness_stats(A, NOW.date(), NOW.date())] == [(0, 1)]
    assert [(s.on_time, s.late) for s in store.timeliness_stats(B, NOW.date(), NOW.date())] == [(1, 0)]

    assert store.close_deleted(LeadState(A, SHARED, due, due, "NEW", "7"), NOW)
    assert store.get_lead(A, SHARED).deleted_at == NOW  # type: ignore[union-attr]
    assert store.get_lead(B, SHARED).deleted_at is None  # type: ignore[union-attr]
    assert store.get_lead(B, SHARED).verdict == "on_time"  # type: ignore[union-attr]

    # Nothing either tenant wrote is visible under a tenant id that merely resembles it.
    for lookalike in ("iso", "iso-", "ISO-A", "iso-a#", "iso-a ", "iso-ab"):
        assert store.events(lookalike) == [] and store.rejects(lookalike) == []
        assert store.get_lead(lookalike, SHARED) is None
        assert store.get_checkpoint(lookalike, "reconcile") is None
        assert store.violations(lookalike, NOW - timedelta(days=1), NOW + timedelta(days=1)) == []
        assert list(store.due_leads(lookalike, NOW, NOW.date() - timedelta(days=1))) == []
