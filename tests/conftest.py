from __future__ import annotations

import os

import pytest
from hypothesis import settings

# CI must pass or fail on the code, not on the draw: there every property test runs the same
# examples each time; local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

os.environ.setdefault("AWS_DEFAULT_REGION", "eu-central-1")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture
def aws():
    """In-process moto with leadwatch's tables and queues, created from infra/resources.yaml."""
    import boto3
    from moto import mock_aws

    from leadwatch.store.models import bind
    from leadwatch.store.schema import create_queues, create_tables

    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="eu-central-1")
        sqs = boto3.client("sqs", region_name="eu-central-1")
        create_tables(dynamodb)
        urls = create_queues(sqs)
        bind(host=None, region="eu-central-1")
        yield {"dynamodb": dynamodb, "sqs": sqs, "queues": urls}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow replays first: with one xdist worker per core each starts on its own worker at
    once, and the short tests fill in around them, instead of a replay starting last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
