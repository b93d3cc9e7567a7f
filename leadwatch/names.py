"""What the head reads instead of CRM ids: the names of managers, stages and pipelines.

`Names` answers for one tenant (`ctx.names(config)`), in this order:

1. the tenant file's `managers` map (manager names only): it always wins;
2. the CRM's own list, kept in the state table, one item per tenant and kind (`users`,
   `stages`; leadwatch.store.names), and in the container once read;
3. a readable stand-in ("user 9120031", "stage 61234501") when the CRM does not know the id or
   cannot be read. A lookup never raises.

A list is read from the CRM (the adapter's `list_users` / `list_stages`, through its transport:
shared rate limits, retries, the invocation's time budget) when there is none or it is older than
`ttl` (24 h), and on a miss, an id the list lacks (a new hire, a new stage). Such a read happens at
most once per `retry_every` (10 min) per tenant and kind in the whole deployment (a claim in the
store, `claim_names_refresh`), and a container asks the store at most that often too, so a storm
of misses costs neither the CRM nor DynamoDB more than that. Inside `cached_only()` (the read API,
whose function holds neither the CRM's credentials nor write access) names come from the store
alone.

Names are returned as the CRM holds them: escaping them for HTML is the renderer's business.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from crm_adapters.base import StageName, stage_key
from leadwatch.events import EntityType
from leadwatch.store.names import STAGES, USERS, NameList

log = logging.getLogger("leadwatch.names")

DEFAULT_TTL = timedelta(hours=24)
DEFAULT_RETRY = timedelta(minutes=10)
# A deployment may choose other intervals (minutes; .chalice/config.json's environment_variables).
TTL_VARIABLE = "LEADWATCH_NAMES_TTL_MINUTES"
RETRY_VARIABLE = "LEADWATCH_NAMES_RETRY_MINUTES"
UNASSIGNED = "unassigned"

_cached_only: ContextVar[bool] = ContextVar("leadwatch_names_cached_only", default=False)


def intervals_from(environ: Mapping[str, str]) -> tuple[timedelta, timedelta]:
    """(ttl, retry_every) as the deployment sets them, else 24 h and 10 min."""
    found = []
    for variable, default, most in (
        (TTL_VARIABLE, DEFAULT_TTL, 7 * 1440),
        (RETRY_VARIABLE, DEFAULT_RETRY, 1440),
    ):
        raw = environ.get(variable, "").strip()
        if not raw:
            found.append(default)
            continue
        try:
            minutes = float(raw)
        except ValueError:
            raise ValueError(f"{variable}={raw!r} is not a number of minutes") from None
        if not 1 <= minutes <= most:
            raise ValueError(f"{variable}={raw!r} must be between 1 and {most} minutes")
        found.append(timedelta(minutes=minutes))
    return found[0], found[1]


@contextmanager
def cached_only() -> Iterator[None]:
    """Inside, names come from the store only: no CRM read, no store write."""
    token = _cached_only.set(True)
    try:
        yield
    finally:
        _cached_only.reset(token)


class NameSource(Protocol):
    """What `Names` reads from the CRM (a `CrmAdapter` is one)."""

    def list_users(self) -> dict[str, str]: ...

    def list_stages(self) -> dict[str, StageName]: ...


class NameStore(Protocol):
    """What `Names` keeps in the store (`StoreProtocol` has it)."""

    def get_names(self, tenant: str, kind: str) -> NameList | None: ...

    def put_names(self, tenant: str, kind: str, names: NameList) -> bool: ...

    def claim_names_refresh(self, tenant: str, kind: str, now: datetime, every: timedelta) -> bool: ...


@dataclass
class _Kept:
    """One kind's list in this container, and when this container last asked the store for it."""

    listed: NameList | None = None
    asked_at: datetime | None = None


class Names:
    """The names of one tenant's managers and stages (see the module docstring)."""

    def __init__(
        self,
        tenant: str,
        store: NameStore,
        source: Callable[[], NameSource],
        clock: Callable[[], datetime],
        *,
        managers: Mapping[str, str] | None = None,
        ttl: timedelta = DEFAULT_TTL,
        retry_every: timedelta = DEFAULT_RETRY,
    ):
        """`source` gives the CRM adapter when a list must be read (so building Names costs
        nothing); `managers`: the tenant file's map, which overrides the CRM."""
        self.tenant = tenant
        self._store = store
        self._source = source
        self._clock = clock
        self._managers = dict(managers or {})
        self.ttl = ttl
        self.retry_every = retry_every
        self._kept = {USERS: _Kept(), STAGES: _Kept()}
        self._locks = {USERS: threading.Lock(), STAGES: threading.Lock()}

    # ------------------------------------------------------------------ lookups
    def manager(self, user_id: str | None) -> str:
        """The manager's name: the tenant file's, else the CRM's, else "user <id>"; "unassigned"
        for no one."""
        if user_id is None or user_id == "":
            return UNASSIGNED
        return self.find_manager(user_id) or f"user {user_id}"

    def stage(self, stage_id: str | None, entity: EntityType = EntityType.LEAD) -> str:
        """The stage's name as the CRM shows it, else "stage <id>"; "no stage" for none.
        `entity`: the card's type (Bitrix24's lead statuses and its general deal category share
        ids such as NEW)."""
        if stage_id is None or stage_id == "":
            return "no stage"
        return self.find_stage(stage_id, entity) or f"stage {stage_id}"

    def pipeline(self, stage_id: str | None, entity: EntityType = EntityType.LEAD) -> str | None:
        """The name of the stage's pipeline (a Bitrix24 deal category, an amoCRM pipeline), or
        None: a Bitrix24 lead status, amoCRM's won and lost (in every pipeline), an unknown stage."""
        if stage_id is None or stage_id == "":
            return None
        key = stage_key(entity, stage_id)
        listed = self._lookup(STAGES, key)
        return listed.pipelines.get(key) if listed is not None else None

    def find_manager(self, user_id: str | None) -> str | None:
        """The manager's name when the tenant file or the CRM knows it, else None (a template
        words the unknown its own way)."""
        if user_id is None or user_id == "":
            return None
        override = self._managers.get(user_id)
        if override:
            return override
        listed = self._lookup(USERS, user_id)
        return listed.names[user_id] if listed is not None else None

    def find_stage(self, stage_id: str | None, entity: EntityType = EntityType.LEAD) -> str | None:
        """The stage's name when the CRM knows it, else None."""
        if stage_id is None or stage_id == "":
            return None
        key = stage_key(entity, stage_id)
        listed = self._lookup(STAGES, key)
        return listed.names[key] if listed is not None else None

    # ------------------------------------------------------------------ the lists
    def _lookup(self, kind: str, key: str) -> NameList | None:
        """The list holding `key` (reading it if it must be), or None when none does."""
        with self._locks[kind]:
            kept = self._kept[kind]
            now = self._clock()
            known = kept.listed is not None and bool(kept.listed.names.get(key))
            if not (known and self._fresh(kept.listed, now)) and self._may_ask(kept, now):
                self._sync(kind, kept, now, key)
            listed = kept.listed
            return listed if listed is not None and listed.names.get(key) else None

    def _fresh(self, listed: NameList | None, now: datetime) -> bool:
        return listed is not None and now - listed.read_at < self.ttl

    def _may_ask(self, kept: _Kept, now: datetime) -> bool:
        """A container asks the store (and maybe the CRM) about a kind at most once per interval."""
        return kept.asked_at is None or now - kept.asked_at >= self.retry_every

    def _sync(self, kind: str, kept: _Kept, now: datetime, wanted: str) -> None:
        """Take the stored list if it is newer than ours; read the CRM when that is still stale, or
        lacks `wanted` and is older than the interval, and the deployment's claim for this
        interval is ours. Failures leave what is kept as it was."""
        kept.asked_at = now
        try:
            stored = self._store.get_names(self.tenant, kind)
            if stored is not None and (kept.listed is None or stored.read_at > kept.listed.read_at):
                kept.listed = stored
            listed = kept.listed
            if listed is not None and self._fresh(listed, now) and wanted in listed.names:
                return
            if listed is not None and now - listed.read_at < self.retry_every:
                return  # read moments ago, without it: the CRM does not know it either
            if _cached_only.get() or not self._store.claim_names_refresh(
                self.tenant, kind, now, self.retry_every
            ):
                return
            fresh = self._read(kind, now)
            self._store.put_names(self.tenant, kind, fresh)
            kept.listed = fresh
        except Exception as exc:  # a name is never worth failing the caller's work
            self._failed(kind, exc)

    def _read(self, kind: str, now: datetime) -> NameList:
        source = self._source()
        if kind == USERS:
            return NameList(source.list_users(), now)
        stages = source.list_stages()
        return NameList(
            {key: stage.name for key, stage in stages.items()},
            now,
            {key: stage.pipeline for key, stage in stages.items() if stage.pipeline is not None},
        )

    def _failed(self, kind: str, exc: Exception) -> None:
        from leadwatch import observability

        log.warning(
            "tenant %s: cannot read the CRM's %s names (ids shown instead): %s", self.tenant, kind, exc
        )
        observability.crm_failure(self.tenant, exc)
