"""A local stack's state, saved to a folder and opened again after the stack has stopped.

The demo saves one when it ends (`out/state/`): every item of every leadwatch table as
DynamoDB JSON, the tenant files it ran with, and the local secrets those files name (random
values the demo made up; never a real credential). `leadwatch --state out/state ...` then
answers the README's questions against the demo's data: `open_state` loads the items into
an in-process moto, points the models and the tenant directory at them and puts the secrets
into the environment, for as long as the command runs.

    state/
      tables/<table name>.jsonl   one item a line, as DynamoDB's Scan returns it
      tenants/*.yaml              the tenant files
      secrets.json                {"DEMO_B24_API_KEY": "...", ...}
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REGION = "eu-central-1"


class StateError(Exception):
    """A folder that is not a saved state, said in one line."""


def save(dynamodb_client: Any, directory: Path, tenants_dir: Path, secrets: Mapping[str, str]) -> int:
    """Writes the state folder (replacing an older one); returns the number of items saved."""
    from leadwatch.store.schema import table_definitions

    if directory.exists():
        shutil.rmtree(directory)
    tables = directory / "tables"
    tables.mkdir(parents=True)
    count = 0
    for props in table_definitions().values():
        name = props["TableName"]
        with (tables / f"{name}.jsonl").open("w", encoding="utf-8") as out:
            for page in dynamodb_client.get_paginator("scan").paginate(TableName=name):
                for item in page["Items"]:
                    out.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
                    count += 1
    shutil.copytree(tenants_dir, directory / "tenants")
    (directory / "secrets.json").write_text(json.dumps(dict(secrets), indent=2), encoding="utf-8")
    return count


def _check(directory: Path) -> None:
    missing = [part for part in ("tables", "tenants", "secrets.json") if not (directory / part).exists()]
    if missing:
        raise StateError(
            f"{directory} is not a saved leadwatch state (missing {', '.join(missing)}); "
            "`./scripts/demo` writes one to out/state"
        )


@contextmanager
def open_state(directory: Path) -> Iterator[Path]:
    """Loads a saved state into an in-process moto and yields its tenant directory."""
    _check(directory)
    # Before boto3 is first used: the in-process moto needs a region and some credentials.
    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(
        AWS_DEFAULT_REGION=os.environ.get("AWS_DEFAULT_REGION") or REGION,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        LEADWATCH_TENANTS_DIR=str(directory / "tenants"),
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("LEADWATCH_DYNAMODB_ENDPOINT", None)
    secrets = json.loads((directory / "secrets.json").read_text(encoding="utf-8"))
    for key in secrets:
        saved.setdefault(key, os.environ.get(key))
    os.environ.update(secrets)
    import boto3
    from moto import mock_aws

    from leadwatch.store.models import bind
    from leadwatch.store.schema import create_tables

    try:
        with mock_aws():
            client = boto3.client("dynamodb", region_name=os.environ["AWS_DEFAULT_REGION"])
            create_tables(client)
            for path in sorted((directory / "tables").glob("*.jsonl")):
                _load(client, path.stem, path)
            bind(host=None, region=os.environ["AWS_DEFAULT_REGION"])
            yield directory / "tenants"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_ENV = (
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LEADWATCH_TENANTS_DIR",
    "LEADWATCH_DYNAMODB_ENDPOINT",
)


def _load(client: Any, table: str, path: Path) -> None:
    batch: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                batch.append({"PutRequest": {"Item": json.loads(line)}})
            if len(batch) == 25:  # BatchWriteItem's most
                _write(client, table, batch)
                batch = []
    if batch:
        _write(client, table, batch)


def _write(client: Any, table: str, batch: list[dict[str, Any]]) -> None:
    requests = {table: batch}
    while requests:
        requests = client.batch_write_item(RequestItems=requests).get("UnprocessedItems") or {}
