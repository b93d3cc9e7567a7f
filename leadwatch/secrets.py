"""Resolving secret references: environment variables locally, SSM Parameter Store in AWS.

A tenant's secrets are read together: the first one asked for (through `for_tenant`) brings every
SSM-backed secret of that tenant in one GetParameters call (at most 10 names a call, API
reference "GetParameters"), so a cold reconciliation over N tenants costs N SSM requests, not
one per secret. Parameter Store's default throughput, 40 transactions a second per account and
region, is shared by GetParameter and GetParameters ("Systems Manager endpoints and quotas").

Values are cached for `ttl` (an hour by default; `LEADWATCH_SECRETS_TTL_SECONDS`). A rotated
secret does not wait for that: a CRM or Telegram answering 401 makes the caller ask again
(`Secret.call`), which re-reads the tenant's secrets, at most once per `REFRESH_INTERVAL`.
If SSM cannot be read when a value expires, the last value is kept and SSM is asked again
`RETRY_AFTER` seconds later. Values are never logged: errors name where a secret should be,
not what it is, and every value read is handed to `leadwatch.redaction` so that no log line
can carry it.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from leadwatch import redaction
from leadwatch.config import SecretRef

if TYPE_CHECKING:
    from leadwatch.config import TenantConfig

log = logging.getLogger("leadwatch.secrets")


class SecretMissing(Exception):
    pass


DEFAULT_TTL = 3600.0  # seconds
TTL_VARIABLE = "LEADWATCH_SECRETS_TTL_SECONDS"
RETRY_AFTER = 30.0  # seconds before SSM is asked again after a failed refresh
# A tenant's secrets are re-read on an authentication failure at most this often: a token that is
# wrong in SSM too must not turn every CRM call into an SSM call.
REFRESH_INTERVAL = 30.0  # seconds
SSM_BATCH = 10  # names per GetParameters call (the API's limit)

_Key = tuple[str, str]  # ("env", NAME) or ("ssm", /parameter/name)


def _key(ref: SecretRef) -> _Key:
    return ("env", ref.env) if ref.env else ("ssm", ref.ssm or "")


def ttl_from(environ: Mapping[str, str]) -> float:
    """The cache lifetime a deployment configures (`LEADWATCH_SECRETS_TTL_SECONDS`), else an hour."""
    raw = environ.get(TTL_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_TTL
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{TTL_VARIABLE}={raw!r} is not a number of seconds") from None
    if not 0 <= seconds <= 86_400:
        raise ValueError(f"{TTL_VARIABLE}={raw!r} must be between 0 and 86400 seconds")
    return seconds


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of what a caller sent with a secret.

    surrogatepass: text decoded from a URL or a header can hold a lone surrogate (`%ED%A0%80`,
    `\\ud800`), which strict UTF-8 cannot encode; such a value is a wrong secret, not a crash.
    """
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


class SecretResolver:
    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        ssm_client: Callable[[], Any] | None = None,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._environ = environ if environ is not None else os.environ
        self._ssm_factory = ssm_client
        self._ssm: Any = None
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[_Key, tuple[str, float]] = {}  # key -> (value, read at)
        self._refreshed: dict[frozenset[_Key], float] = {}  # group -> when it was last re-read
        # Names SSM could not give (and never gave): name -> (why, when). Asked again only after
        # RETRY_AFTER, so a misconfigured tenant does not cost an SSM call per request.
        self._missing: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, ref: SecretRef) -> str:
        return self.resolve(ref)

    def for_tenant(self, config: TenantConfig) -> TenantSecrets:
        """The tenant's secrets in groups by kind (leadwatch.config.SECRET_PLACES): reading one
        reads its group in one call. Not all of them: each function may read only the kinds it
        uses (leadwatch.iam), and one name it may not read would fail the whole call."""
        from leadwatch.config import secret_kind

        groups: dict[str, list[SecretRef]] = {}
        for place, ref in config.secrets().items():
            groups.setdefault(secret_kind(place) or place, []).append(ref)
        return TenantSecrets(self, tuple(tuple(group) for group in groups.values()))

    def resolve(self, ref: SecretRef, together: Iterable[SecretRef] = ()) -> str:
        """The value of `ref`; an SSM read also brings the stale ones among `together`."""
        key = _key(ref)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        if ref.env:
            return self._from_env(key, ref.env, now)
        with self._lock:
            missing = self._missing.get(key[1])
        if cached is None and missing is not None and now - missing[1] < RETRY_AFTER:
            raise SecretMissing(f"SSM parameter {key[1]} could not be read ({missing[0]})")
        wanted = [key[1]] + [k[1] for k in self._stale({_key(r) for r in together}, now) if k != key]
        self._read_ssm(wanted, now)
        with self._lock:
            found = self._cache.get(key)
        if found is None:  # never read, and SSM did not give it (_read_ssm raised for the first name)
            raise SecretMissing(f"SSM parameter {key[1]} could not be read")
        return found[0]

    def refresh(self, ref: SecretRef, together: Iterable[SecretRef] = ()) -> str:
        """Re-read `ref` and the secrets read with it (an authentication failed), then return it.

        Within REFRESH_INTERVAL of the group's last re-read nothing is read again: the value
        cached now is the freshest there is.
        """
        group = frozenset({_key(ref)} | {_key(r) for r in together})
        now = self._clock()
        with self._lock:
            last = self._refreshed.get(group)
            if last is None or now - last >= REFRESH_INTERVAL:
                self._refreshed[group] = now
                for key in group:
                    if key in self._cache:
                        # Expired, but kept: if SSM cannot be read the last value still serves.
                        self._cache[key] = (self._cache[key][0], now - self._ttl - 1)
        return self.resolve(ref, together)

    def _stale(self, keys: set[_Key], now: float) -> list[_Key]:
        with self._lock:
            return sorted(
                k
                for k in keys
                if k[0] == "ssm" and (k not in self._cache or now - self._cache[k][1] >= self._ttl)
            )

    def _from_env(self, key: _Key, name: str, now: float) -> str:
        value = self._environ.get(name)
        if not value:
            raise SecretMissing(f"environment variable {name} is not set")
        self._remember(key, value, now)
        return value

    def _remember(self, key: _Key, value: str, now: float) -> None:
        redaction.remember(value)
        with self._lock:
            self._cache[key] = (value, now)

    def _client(self) -> Any:
        if self._ssm is None:
            if self._ssm_factory is None:
                import boto3

                self._ssm = boto3.client("ssm")
            else:
                self._ssm = self._ssm_factory()
        return self._ssm

    def _read_ssm(self, names: list[str], now: float) -> None:
        """Read `names` (the first is the one asked for) in calls of SSM_BATCH; cache what comes.

        Raises SecretMissing only for the first name, and only when no earlier value of it is
        cached; the others are best effort (each is asked for again when it is needed).
        """
        first = names[0]
        for start in range(0, len(names), SSM_BATCH):
            chunk = names[start : start + SSM_BATCH]
            try:
                response = self._client().get_parameters(Names=chunk, WithDecryption=True)
            except Exception as exc:  # botocore errors vary; the name is what the operator needs
                code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
                self._keep_last(chunk, now)
                if first in chunk and not self._has(first):
                    self._note_missing(first, code, now)
                    raise SecretMissing(f"SSM parameter {first} could not be read ({code})") from None
                log.warning("SSM parameters could not be read (%s); using the last values", code)
                continue
            for parameter in response.get("Parameters", []):
                if parameter.get("Name") in chunk and isinstance(parameter.get("Value"), str):
                    self._remember(("ssm", parameter["Name"]), parameter["Value"], now)
            invalid = set(response.get("InvalidParameters", []))
            self._keep_last([n for n in invalid if n in chunk], now)
            if first in invalid and not self._has(first):
                self._note_missing(first, "ParameterNotFound", now)
                raise SecretMissing(f"SSM parameter {first} could not be read (ParameterNotFound)")

    def _note_missing(self, name: str, why: str, now: float) -> None:
        with self._lock:
            self._missing[name] = (why, now)

    def _has(self, name: str) -> bool:
        with self._lock:
            return ("ssm", name) in self._cache

    def _keep_last(self, names: list[str], now: float) -> None:
        """Unreadable for now (SSM throttled or down, a parameter deleted): keep the last values
        and ask again a little later."""
        with self._lock:
            for name in names:
                cached = self._cache.get(("ssm", name))
                if cached is not None:
                    self._cache[("ssm", name)] = (cached[0], now - self._ttl + min(RETRY_AFTER, self._ttl))

    def known_values(self) -> list[str]:
        """Every secret resolved so far (for redaction checks)."""
        with self._lock:
            return [value for value, _ in self._cache.values()]


@dataclass(frozen=True)
class TenantSecrets:
    """One tenant's view of the resolver: its secrets are read, cached and refreshed together."""

    resolver: SecretResolver
    groups: tuple[tuple[SecretRef, ...], ...]

    def _group(self, ref: SecretRef) -> tuple[SecretRef, ...]:
        return next((group for group in self.groups if ref in group), ())

    def __call__(self, ref: SecretRef) -> str:
        return self.resolver.resolve(ref, self._group(ref))

    def refresh(self, ref: SecretRef) -> str:
        return self.resolver.refresh(ref, self._group(ref))


_T = TypeVar("_T")


@dataclass(frozen=True)
class Secret:
    """One secret as a client uses it: asked for at each use (never held), and asked again when
    the service says it is wrong, for it may have been rotated since it was read."""

    resolve: Callable[[SecretRef], str]
    ref: SecretRef

    @classmethod
    def fixed(cls, value: str) -> Secret:
        """A value given as it is (tests, tools): nothing to re-read."""
        return cls(lambda _ref: value, SecretRef(env="FIXED"))

    def get(self) -> str:
        return self.resolve(self.ref)

    def fresh(self, stale: str) -> str | None:
        """The value re-read after `stale` was refused; None when it is still the same (or the
        resolver cannot re-read), as trying it again could not help."""
        refresh = getattr(self.resolve, "refresh", None)
        if refresh is None:
            return None
        value = refresh(self.ref)
        return value if value != stale else None

    def call(self, use: Callable[[str], _T]) -> _T:
        """`use(value)`; when the service answers 401 (the token was rotated or revoked), once more
        with the value read again, if it changed."""
        value = self.get()
        try:
            return use(value)
        except Exception as exc:
            if getattr(exc, "status", None) != 401:
                raise
            fresh = self.fresh(value)
            if fresh is None:
                raise
            log.info("a secret was refused (HTTP 401) and has changed since it was read: trying again")
            return use(fresh)
