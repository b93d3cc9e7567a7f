"""Resolving secret references: environment variables locally, SSM Parameter Store in AWS.

Values are cached for `ttl` seconds (5 minutes by default), so a secret rotated in SSM
reaches warm Lambdas within that time without an SSM read per request; if SSM cannot be
read when a value expires, the last value is kept and SSM is asked again 30 seconds later. Values
are never logged: errors name where a secret should be, not what it is.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from leadwatch.config import SecretRef


class SecretMissing(Exception):
    pass


DEFAULT_TTL = 300.0  # seconds
RETRY_AFTER = 30.0  # seconds before SSM is asked again after a failed refresh


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
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}  # key -> (value, read at)
        self._lock = threading.Lock()

    def __call__(self, ref: SecretRef) -> str:
        return self.resolve(ref)

    def resolve(self, ref: SecretRef) -> str:
        key = ("env", ref.env) if ref.env else ("ssm", ref.ssm or "")
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        try:
            value = self._env(ref.env) if ref.env else self._parameter(ref.ssm or "")
        except SecretMissing:
            if cached is None:
                raise
            # Unreadable for now (SSM throttled or down): keep the last value, ask again a little later.
            with self._lock:
                self._cache[key] = (cached[0], now - self._ttl + min(RETRY_AFTER, self._ttl))
            return cached[0]
        with self._lock:
            self._cache[key] = (value, now)
        return value

    def _env(self, name: str) -> str:
        value = self._environ.get(name)
        if not value:
            raise SecretMissing(f"environment variable {name} is not set")
        return value

    def _parameter(self, name: str) -> str:
        if self._ssm is None:
            if self._ssm_factory is None:
                import boto3

                self._ssm = boto3.client("ssm")
            else:
                self._ssm = self._ssm_factory()
        try:
            response = self._ssm.get_parameter(Name=name, WithDecryption=True)
        except Exception as exc:  # botocore errors vary; the name is what the operator needs
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
            raise SecretMissing(f"SSM parameter {name} could not be read ({code})") from None
        return response["Parameter"]["Value"]

    def known_values(self) -> list[str]:
        """Every secret resolved so far (for redaction checks)."""
        with self._lock:
            return [value for value, _ in self._cache.values()]
