"""TokenStore paths moto cannot produce (it accepts writes to a secret scheduled for deletion).

botocore's Stubber answers exactly the calls listed, in order, and fails on anything else.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber
from mypy_boto3_secretsmanager import SecretsManagerClient
from tokenbroker.errors import ConnectionNotFound
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import StoredToken
from tokenbroker.stores.tokens import GenerationConflict, TokenStore
from tokenbroker.tokens import TokenSet

KEY = ConnectionKey("workly", "c1")
NAME = "tokenbroker/dev/workly/c1"
STORED = StoredToken(TokenSet("at", "Bearer", 100, 0, "rt"), generation=3)
MARKED = "You can't perform this operation on the secret because it was marked for deletion."
VERSION = "a" * 36


@pytest.fixture
def client() -> SecretsManagerClient:
    return boto3.client("secretsmanager", region_name="us-east-1")


@pytest.fixture
def stub(client: SecretsManagerClient) -> Iterator[Stubber]:
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def put_params(store: TokenStore) -> dict[str, object]:
    return {
        "SecretId": NAME,
        "SecretString": STORED.to_json(),
        "ClientRequestToken": store.client_request_token(KEY, 3),
    }


def test_put_to_a_secret_being_deleted_is_not_found_unless_restoring(
    client: SecretsManagerClient, stub: Stubber
) -> None:
    store = TokenStore(client, stage="dev")
    stub.add_client_error("put_secret_value", "InvalidRequestException", MARKED, expected_params=put_params(store))
    with pytest.raises(ConnectionNotFound):
        store.put(KEY, STORED)


def test_reconnect_restores_a_secret_being_deleted_then_writes(client: SecretsManagerClient, stub: Stubber) -> None:
    store = TokenStore(client, stage="dev")
    stub.add_client_error("put_secret_value", "InvalidRequestException", MARKED, expected_params=put_params(store))
    stub.add_response("restore_secret", {"Name": NAME}, {"SecretId": NAME})
    stub.add_response("put_secret_value", {"VersionId": VERSION}, put_params(store))
    assert store.put(KEY, STORED, restore_deleted=True) == VERSION


def test_create_race_falls_back_to_a_version_on_top(client: SecretsManagerClient, stub: Stubber) -> None:
    store = TokenStore(client, stage="dev", kms_key_id="alias/tokens")
    stub.add_client_error("put_secret_value", "ResourceNotFoundException", expected_params=put_params(store))
    stub.add_client_error(
        "create_secret",
        "ResourceExistsException",
        expected_params={
            "Name": NAME,
            "SecretString": STORED.to_json(),
            "ClientRequestToken": ANY,
            "Description": ANY,
            "KmsKeyId": "alias/tokens",
            "Tags": [{"Key": "provider", "Value": "workly"}, {"Key": "connection_id", "Value": "c1"}],
        },
    )
    stub.add_response("put_secret_value", {"VersionId": VERSION}, put_params(store))
    assert store.put(KEY, STORED) == VERSION


def test_conflicting_version_is_a_generation_conflict(client: SecretsManagerClient, stub: Stubber) -> None:
    store = TokenStore(client, stage="dev")
    stub.add_client_error("put_secret_value", "ResourceExistsException", expected_params=put_params(store))
    with pytest.raises(GenerationConflict) as caught:
        store.put(KEY, STORED)
    assert "at" not in caught.value.message.split()  # no token in the message


def test_reading_a_secret_being_deleted_is_not_found(client: SecretsManagerClient, stub: Stubber) -> None:
    store = TokenStore(client, stage="dev")
    stub.add_client_error(
        "get_secret_value",
        "InvalidRequestException",
        "You can't perform this operation on the secret because it was marked for deletion.",
    )
    with pytest.raises(ConnectionNotFound):
        store.get(KEY)


def test_other_errors_propagate(client: SecretsManagerClient, stub: Stubber) -> None:
    store = TokenStore(client, stage="dev")
    stub.add_client_error("get_secret_value", "AccessDeniedException", "no")
    with pytest.raises(ClientError, match="AccessDenied"):
        store.get(KEY)
