"""Tables and queues as infra/resources.yaml defines them, for tests and the local demo.

The deployment template is the one definition: moto's tables are created from it,
so the tests exercise exactly the keys, indexes and TTL that AWS will have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "infra" / "resources.yaml"


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !GetAtt, !Sub, ...) as plain mappings."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)  # YAML has no fourth kind of node
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    template = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)
    if not isinstance(template, dict):
        raise ValueError(f"{path}: a CloudFormation template is a mapping, not {type(template).__name__}")
    return template


def table_definitions(path: Path = TEMPLATE) -> dict[str, dict[str, Any]]:
    """Logical id -> CloudFormation properties of every DynamoDB table."""
    resources = load_template(path)["Resources"]
    return {
        name: res["Properties"]
        for name, res in resources.items()
        if res.get("Type") == "AWS::DynamoDB::Table"
    }


def queue_definitions(path: Path = TEMPLATE) -> dict[str, dict[str, Any]]:
    resources = load_template(path)["Resources"]
    return {
        name: res["Properties"] for name, res in resources.items() if res.get("Type") == "AWS::SQS::Queue"
    }


def _add_missing_indexes(dynamodb_client: Any, name: str, props: dict[str, Any]) -> None:
    """An existing table from an older release gets the indexes added since (DynamoDB builds them
    in place, one per UpdateTable call); `aws-setup` is thereby also the upgrade."""
    table = dynamodb_client.describe_table(TableName=name)["Table"]
    have = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes", [])}
    for index in props.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] in have:
            continue
        keys = {k["AttributeName"] for k in index["KeySchema"]}
        dynamodb_client.update_table(
            TableName=name,
            AttributeDefinitions=[a for a in props["AttributeDefinitions"] if a["AttributeName"] in keys],
            GlobalSecondaryIndexUpdates=[{"Create": index}],
        )


def create_tables(dynamodb_client: Any, prefix: str = "") -> dict[str, str]:
    """Create every table of the template (idempotent). Returns logical id -> table name."""
    names: dict[str, str] = {}
    existing = set(dynamodb_client.list_tables().get("TableNames", []))
    for logical, props in table_definitions().items():
        name = prefix + props["TableName"]
        names[logical] = name
        if name in existing:
            _add_missing_indexes(dynamodb_client, name, props)
            continue
        params: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            params["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        dynamodb_client.create_table(**params)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            dynamodb_client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    return names


def create_queues(sqs_client: Any, prefix: str = "") -> dict[str, str]:
    """Create the queues with their redrive policy. Returns logical id -> queue URL."""
    definitions = queue_definitions()
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    # Dead-letter queues first: a redrive policy names its target's ARN.
    ordered = sorted(definitions, key=lambda logical: "RedrivePolicy" in definitions[logical])
    for logical in ordered:
        props = definitions[logical]
        attributes: dict[str, str] = {}
        for key in ("VisibilityTimeout", "MessageRetentionPeriod"):
            if key in props:
                attributes[key] = str(props[key])
        redrive = props.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": arns[target], "maxReceiveCount": str(redrive["maxReceiveCount"])}
            )
        url = sqs_client.create_queue(QueueName=prefix + props["QueueName"], Attributes=attributes)[
            "QueueUrl"
        ]
        urls[logical] = url
        arns[logical] = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    return urls
