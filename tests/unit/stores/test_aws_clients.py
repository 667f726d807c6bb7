"""AwsClients: one session, lazily created clients with explicit retries, timeouts and pool size."""

from __future__ import annotations

import threading
from typing import Any

import boto3
import pytest
from tokenbroker.aws import AwsClients, DynamoTable, default_config


def test_clients_are_created_once_and_share_the_config() -> None:
    clients = AwsClients(boto3.Session(region_name="us-east-1"))
    assert clients.dynamodb is clients.dynamodb
    config: Any = clients.dynamodb.meta.config  # botocore-stubs do not declare Config's options
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert (config.connect_timeout, config.read_timeout) == (2.0, 5.0)
    assert config.max_pool_connections == 50
    assert clients.created_clients() == [clients.dynamodb]


def test_concurrent_first_use_creates_one_client() -> None:
    clients = AwsClients(boto3.Session(region_name="us-east-1"))
    seen: list[object] = []
    barrier = threading.Barrier(8, timeout=10)

    def use() -> None:
        barrier.wait()
        seen.append(clients.secretsmanager)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(seen) == 8
    assert len({id(c) for c in seen}) == 1


def test_aws_endpoint_url_from_the_environment_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    clients = AwsClients(boto3.Session(region_name="us-east-1"))
    assert clients.dynamodb.meta.endpoint_url == "http://127.0.0.1:4566"
    assert clients.secretsmanager.meta.endpoint_url == "http://127.0.0.1:4566"


def test_explicit_endpoint_and_pool_size() -> None:
    clients = AwsClients(
        boto3.Session(region_name="us-east-1"),
        config=default_config(max_pool_connections=7),
        endpoint_url="http://127.0.0.1:9",
    )
    assert clients.dynamodb.meta.endpoint_url == "http://127.0.0.1:9"
    config: Any = clients.dynamodb.meta.config
    assert config.max_pool_connections == 7


def test_table_wraps_the_low_level_client() -> None:
    clients = AwsClients(boto3.Session(region_name="us-east-1"))
    table = clients.table("t")
    assert table == DynamoTable(clients.dynamodb, "t")
    assert DynamoTable.of(table) is table
    resource_table = boto3.Session(region_name="us-east-1").resource("dynamodb").Table("r")
    assert DynamoTable.of(resource_table).name == "r"
