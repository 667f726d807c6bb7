"""TokenStore against moto's Secrets Manager: idempotent writes, uncached reads, scheduled deletion."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from tokenbroker.aws import AwsCallCounter, AwsClients
from tokenbroker.errors import ConnectionNotFound, InvalidInput
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus, PasswordLogin, StoredToken
from tokenbroker.stores.tokens import GenerationConflict, TokenStore
from tokenbroker.tokens import TokenSet

KEY = ConnectionKey("worksection", "acme-1")


def stored(generation: int, access: str = "", status: ConnectionStatus = ConnectionStatus.ACTIVE) -> StoredToken:
    return StoredToken(
        token=TokenSet(
            access_token=access or f"access-{generation}",
            refresh_token=f"refresh-{generation}",
            token_type="Bearer",
            expires_at=1_800_000_000 + generation * 3600,
            obtained_at=1_800_000_000,
            scopes=("projects_read",),
            extra={"account_url": "https://acme.worksection.com"},
        ),
        generation=generation,
        status=status,
        metadata={"user_email": "a@acme.test"},
    )


@pytest.fixture
def store(aws_clients: AwsClients) -> TokenStore:
    return TokenStore(aws_clients.secretsmanager, stage="test")


def version_count(aws_clients: AwsClients, store: TokenStore) -> int:
    answer = aws_clients.secretsmanager.list_secret_version_ids(SecretId=store.secret_name(KEY))
    return len(answer["Versions"])


def test_first_put_creates_a_tagged_secret_named_by_stage_provider_and_id(
    store: TokenStore, aws_clients: AwsClients
) -> None:
    store.put(KEY, stored(1))

    assert store.secret_name(KEY) == "tokenbroker/test/worksection/acme-1"
    described = aws_clients.secretsmanager.describe_secret(SecretId=store.secret_name(KEY))
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags == {"provider": "worksection", "connection_id": "acme-1"}
    assert store.get(KEY) == stored(1)


def test_customer_kms_key_is_used_when_configured(aws_clients: AwsClients) -> None:
    key_id = aws_clients.client("kms").create_key()["KeyMetadata"]["KeyId"]  # type: ignore[attr-defined]
    store = TokenStore(aws_clients.secretsmanager, stage="test", kms_key_id=key_id)
    store.put(KEY, stored(1))
    described = aws_clients.secretsmanager.describe_secret(SecretId=store.secret_name(KEY))
    assert described["KmsKeyId"] == key_id


def test_secret_value_is_the_design_json_with_generation_status_and_metadata(
    store: TokenStore, aws_clients: AwsClients
) -> None:
    value = StoredToken(
        token=stored(3).token, generation=3, metadata={"user_id": "7"}, login=PasswordLogin("u@x.test", "pw")
    )
    store.put(KEY, value)
    raw = json.loads(aws_clients.secretsmanager.get_secret_value(SecretId=store.secret_name(KEY))["SecretString"])
    assert raw["access_token"] == "access-3"
    assert raw["refresh_token"] == "refresh-3"
    assert raw["generation"] == 3
    assert raw["status"] == "active"
    assert raw["metadata"] == {"user_id": "7"}
    assert raw["login"] == {"username": "u@x.test", "password": "pw"}
    assert raw["extra"] == {"account_url": "https://acme.worksection.com"}
    assert store.get(KEY) == value


def test_unknown_connection_is_not_found(store: TokenStore) -> None:
    with pytest.raises(ConnectionNotFound):
        store.get(KEY)
    assert store.get_previous(KEY) is None


def test_retried_put_of_one_generation_is_one_version_and_previous_keeps_the_last_token(
    store: TokenStore, aws_clients: AwsClients
) -> None:
    store.put(KEY, stored(1))
    first = store.put(KEY, stored(2))
    again = store.put(KEY, stored(2))  # the retry of a write whose answer was lost
    third = store.put(KEY, stored(2))

    assert first == again == third
    assert version_count(aws_clients, store) == 2
    assert store.get(KEY).generation == 2
    previous = store.get_previous(KEY)
    assert previous is not None
    assert previous.generation == 1
    assert previous.token.refresh_token == "refresh-1"


def test_late_retry_of_an_older_generation_does_not_become_current(store: TokenStore) -> None:
    store.put(KEY, stored(1))
    store.put(KEY, stored(2))
    store.put(KEY, stored(1))  # a very late retry of the first write
    assert store.get(KEY).generation == 2


def test_other_content_under_the_same_generation_is_a_conflict(store: TokenStore) -> None:
    store.put(KEY, stored(2, access="winner"))
    with pytest.raises(GenerationConflict):
        store.put(KEY, stored(2, access="loser"))
    assert store.get(KEY).token.access_token == "winner"


def test_a_status_change_competes_for_the_generation_like_any_write(store: TokenStore, aws_clients: AwsClients) -> None:
    """A needs_reauth mark is a write like a refresh or a re-connect: it takes the next generation,
    and under a generation already written it conflicts instead of pushing that token out."""
    store.put(KEY, stored(4))
    with pytest.raises(GenerationConflict):
        store.put(KEY, stored(4, status=ConnectionStatus.NEEDS_REAUTH))
    assert store.get(KEY).status is ConnectionStatus.ACTIVE
    store.put(KEY, stored(5, status=ConnectionStatus.NEEDS_REAUTH))
    assert store.get(KEY).status is ConnectionStatus.NEEDS_REAUTH
    assert version_count(aws_clients, store) == 2


def test_reads_are_never_cached(store: TokenStore, aws_clients: AwsClients) -> None:
    store.put(KEY, stored(1))
    assert store.get(KEY).generation == 1
    TokenStore(aws_clients.secretsmanager, stage="test").put(KEY, stored(2))  # another process
    assert store.get(KEY).generation == 2


def test_call_budgets_get_is_one_call_and_put_of_an_existing_secret_is_one_call(
    store: TokenStore, aws_clients: AwsClients
) -> None:
    with AwsCallCounter(aws_clients) as first_write:
        store.put(KEY, stored(1))
    assert first_write.calls == {"PutSecretValue": 1, "CreateSecret": 1}

    with AwsCallCounter(aws_clients) as put:
        store.put(KEY, stored(2))
    assert put.calls == {"PutSecretValue": 1}

    with AwsCallCounter(aws_clients) as get:
        store.get(KEY)
        store.get(KEY)
    assert get.calls == {"GetSecretValue": 2}


def test_delete_schedules_deletion_with_a_recovery_window(store: TokenStore, aws_clients: AwsClients) -> None:
    store.put(KEY, stored(1))
    before = datetime.now(UTC)

    assert store.delete(KEY) is True

    described = aws_clients.secretsmanager.describe_secret(SecretId=store.secret_name(KEY))
    window = described["DeletedDate"] - before
    assert 6.9 < window.total_seconds() / 86400 < 7.1
    with pytest.raises(ConnectionNotFound):
        store.get(KEY)
    assert store.delete(KEY) is False  # already scheduled
    assert store.delete(ConnectionKey("worksection", "never")) is False


def test_recovery_window_is_checked_before_any_call(store: TokenStore, aws_clients: AwsClients) -> None:
    with AwsCallCounter(aws_clients) as counter, pytest.raises(InvalidInput):
        store.delete(KEY, recovery_window_days=3)
    assert counter.total == 0


def test_invalid_stage_is_refused(aws_clients: AwsClients) -> None:
    with pytest.raises(InvalidInput):
        TokenStore(aws_clients.secretsmanager, stage="dev/../prod")
