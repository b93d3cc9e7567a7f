"""The local stack's moto Query shortcut (leadwatch/testing/moto_speed.py) answers exactly as moto
does: the same items in the same order, page by page, forward and backward, on every table of
infra/resources.yaml and on each of its indexes, sparse ones and ties on their keys included."""

from __future__ import annotations

import random
from typing import Any

import boto3
from moto import mock_aws

from leadwatch.store.schema import create_tables, table_definitions
from leadwatch.testing import moto_speed


def _value(kind: str, rng: random.Random) -> dict[str, str]:
    # Few distinct values, so many items share a hash key and index keys tie.
    return {"N": str(rng.randrange(5))} if kind == "N" else {"S": f"v{rng.randrange(4)}"}


def _fill(client: Any, name: str, props: dict[str, Any], rng: random.Random) -> None:
    kinds = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    table_keys = [k["AttributeName"] for k in props["KeySchema"]]
    for n in range(300):
        item = {key: _value(kinds[key], rng) for key in table_keys}
        item[table_keys[-1]] = {"S": f"k{n:04d}"} if kinds[table_keys[-1]] == "S" else {"N": str(n)}
        for attribute, kind in kinds.items():
            if attribute not in item and rng.random() < 0.6:  # sparse indexes: some items lack the key
                item[attribute] = _value(kind, rng)
        client.put_item(TableName=name, Item=item)


def _answers(client: Any, name: str, props: dict[str, Any]) -> list[list[list[dict]]]:
    kinds = {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]}
    targets = [(None, props["KeySchema"][0]["AttributeName"])] + [
        (index["IndexName"], index["KeySchema"][0]["AttributeName"])
        for index in props.get("GlobalSecondaryIndexes", [])
    ]
    answers = []
    for index, hash_key in targets:
        for value in range(3):
            typed = {"N": str(value)} if kinds[hash_key] == "N" else {"S": f"v{value}"}
            for forward in (True, False):
                pages, start = [], None
                while True:
                    extra: dict[str, Any] = {"IndexName": index} if index else {}
                    if start:
                        extra["ExclusiveStartKey"] = start
                    page = client.query(
                        TableName=name,
                        KeyConditionExpression="#h = :v",
                        ExpressionAttributeNames={"#h": hash_key},
                        ExpressionAttributeValues={":v": typed},
                        ScanIndexForward=forward,
                        Limit=7,
                        **extra,
                    )
                    pages.append(page["Items"])
                    start = page.get("LastEvaluatedKey")
                    if not start:
                        break
                answers.append(pages)
    return answers


def test_query_answers_do_not_change() -> None:
    moto_speed.uninstall()
    try:
        with mock_aws():
            client = boto3.client("dynamodb", region_name="eu-central-1")
            create_tables(client)
            plain, quick, scans = [], [], []
            for number, props in enumerate(table_definitions().values()):
                name = props["TableName"]
                _fill(client, name, props, random.Random(number))
                moto_speed.uninstall()
                plain.append(_answers(client, name, props))
                scans.append(client.scan(TableName=name, Limit=50)["Items"])
                moto_speed.install()
                quick.append(_answers(client, name, props))
                scans.append(client.scan(TableName=name, Limit=50)["Items"])
    finally:
        moto_speed.install()
    found = sum(len(page) for table in plain for pages in table for page in pages)
    assert found > 1000
    assert quick == plain
    assert scans[0::2] == scans[1::2]
