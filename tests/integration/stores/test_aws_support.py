"""The table made from template.yaml, and AwsCallCounter counting real (moto) calls."""

from __future__ import annotations

import threading

import boto3
import pytest
from botocore.exceptions import ClientError
from tokenbroker.aws import AwsCallCounter, AwsClients, DynamoTable


def test_table_from_template_has_keys_gsi_and_ttl(table: DynamoTable) -> None:
    described = table.client.describe_table(TableName=table.name)["Table"]
    assert [k["AttributeName"] for k in described["KeySchema"]] == ["pk", "sk"]
    [index] = described["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "due"
    assert index["Projection"]["ProjectionType"] == "KEYS_ONLY"
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = table.client.describe_time_to_live(TableName=table.name)["TimeToLiveDescription"]
    assert (ttl.get("AttributeName"), ttl.get("TimeToLiveStatus")) == ("ttl", "ENABLED")


def test_counter_counts_per_operation_and_stops_at_exit(aws_clients: AwsClients, table: DynamoTable) -> None:
    key = {"pk": {"S": "x"}, "sk": {"S": "y"}}
    with AwsCallCounter(table) as counter:
        table.client.get_item(TableName=table.name, Key=key)
        table.client.get_item(TableName=table.name, Key=key)
        table.client.put_item(TableName=table.name, Item=key)
    table.client.get_item(TableName=table.name, Key=key)

    assert counter.calls == {"GetItem": 2, "PutItem": 1}
    assert counter.by_service == {"dynamodb.GetItem": 2, "dynamodb.PutItem": 1}
    assert counter.total == 3
    assert counter.sends == 3
    assert counter.count("Query") == 0
    counter.reset()
    assert counter.total == 0


def test_counter_on_aws_clients_sees_clients_created_later(aws_clients: AwsClients) -> None:
    with AwsCallCounter(aws_clients) as counter:
        aws_clients.client("sts").get_caller_identity()  # type: ignore[attr-defined]
        aws_clients.secretsmanager.list_secrets()
    aws_clients.secretsmanager.list_secrets()
    assert counter.by_service == {"sts.GetCallerIdentity": 1, "secretsmanager.ListSecrets": 1}


def test_counter_on_a_session_and_a_resource(mocked_aws: None) -> None:
    session = boto3.Session(region_name="us-east-1")
    with AwsCallCounter(session) as counter:
        session.client("sts").get_caller_identity()
    assert counter.calls == {"GetCallerIdentity": 1}

    resource_table = session.resource("dynamodb").Table("missing")
    # The table does not exist; only the call matters.
    with AwsCallCounter(resource_table) as counter, pytest.raises(ClientError):
        resource_table.load()
    assert counter.calls == {"DescribeTable": 1}


def test_counter_is_thread_safe(aws_clients: AwsClients) -> None:
    client = aws_clients.secretsmanager
    with AwsCallCounter(client) as counter:
        threads = [threading.Thread(target=lambda: [client.list_secrets() for _ in range(10)]) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert counter.calls == {"ListSecrets": 80}
