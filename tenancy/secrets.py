"""Resolving secret references: environment variables locally, SSM Parameter Store in AWS.

Values are cached for the life of the process (a warm Lambda), and never logged:
errors name where a secret should be, not what it is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tenancy.config import SecretRef


class SecretMissing(Exception):
    pass


class SecretResolver:
    def __init__(self, environ: Mapping[str, str] | None = None, ssm_client: Callable[[], Any] | None = None):
        self._environ = environ if environ is not None else os.environ
        self._ssm_factory = ssm_client
        self._ssm: Any = None
        self._cache: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def __call__(self, ref: SecretRef) -> str:
        return self.resolve(ref)

    def resolve(self, ref: SecretRef) -> str:
        key = ("env", ref.env) if ref.env else ("ssm", ref.ssm or "")
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = self._env(ref.env) if ref.env else self._parameter(ref.ssm or "")
        with self._lock:
            self._cache[key] = value
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
            return list(self._cache.values())
