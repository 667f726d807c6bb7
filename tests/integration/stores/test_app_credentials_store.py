"""AppCredentialsStore: the app secret wins, the catalog default is the fallback, answers are cached."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from tokenbroker.aws import AwsCallCounter, AwsClients
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ProviderErrorKind,
    UnknownProvider,
)
from tokenbroker.providers.base import AppCredentials
from tokenbroker.stores.app_credentials import AppCredentialsStore

from tests.support.errors import raises_kind


@dataclass(frozen=True)
class Entry:
    default_client_id: str | None = None
    default_client_secret: str | None = None


class FakeCatalog:
    def __init__(self, **entries: Entry) -> None:
        self.entries = entries

    def get(self, name: str) -> Entry:
        if name not in self.entries:
            raise UnknownProvider(f"unknown provider {name}")
        return self.entries[name]


CATALOG = FakeCatalog(
    workly=Entry("workly-public-id", "workly-public-secret"),
    worksection=Entry(),
)


@pytest.fixture
def store(aws_clients: AwsClients, clock: ManualClock) -> AppCredentialsStore:
    return AppCredentialsStore(aws_clients.secretsmanager, stage="test", catalog=CATALOG, clock=clock)


def put_app_secret(aws_clients: AwsClients, provider: str, value: str) -> None:
    aws_clients.secretsmanager.create_secret(Name=f"tokenbroker/test/apps/{provider}", SecretString=value)


def test_configured_secret_wins_over_the_catalog_default(store: AppCredentialsStore, aws_clients: AwsClients) -> None:
    put_app_secret(aws_clients, "workly", json.dumps({"client_id": "ours", "client_secret": "s3cret"}))
    assert store.get("workly") == AppCredentials("ours", "s3cret")


def test_catalog_default_applies_when_no_secret_exists(store: AppCredentialsStore) -> None:
    assert store.get("workly") == AppCredentials("workly-public-id", "workly-public-secret")


def test_no_secret_and_no_default_is_a_configuration_error(store: AppCredentialsStore) -> None:
    with raises_kind(ProviderErrorKind.CONFIGURATION) as caught:
        store.get("worksection")
    assert "tokenbroker/test/apps/worksection" in caught.value.message


def test_malformed_secret_is_a_configuration_error_that_does_not_echo_it(
    store: AppCredentialsStore, aws_clients: AwsClients
) -> None:
    put_app_secret(aws_clients, "worksection", '{"client_secret": "do-not-leak"}')
    with raises_kind(ProviderErrorKind.CONFIGURATION) as caught:
        store.get("worksection")
    assert "do-not-leak" not in str(caught.value)


def test_unknown_provider_fails_before_any_aws_call(store: AppCredentialsStore, aws_clients: AwsClients) -> None:
    with AwsCallCounter(aws_clients) as counter, pytest.raises(UnknownProvider):
        store.get("nope")
    assert counter.total == 0


def test_answers_are_cached_for_five_minutes(
    store: AppCredentialsStore, aws_clients: AwsClients, clock: ManualClock
) -> None:
    put_app_secret(aws_clients, "workly", json.dumps({"client_id": "v1", "client_secret": "x"}))
    with AwsCallCounter(aws_clients) as counter:
        assert store.get("workly").client_id == "v1"
        aws_clients.secretsmanager.put_secret_value(
            SecretId="tokenbroker/test/apps/workly", SecretString=json.dumps({"client_id": "v2"})
        )
        clock.advance(299)
        assert store.get("workly").client_id == "v1"
        clock.advance(2)
        assert store.get("workly") == AppCredentials("v2", "")
    assert counter.calls == {"GetSecretValue": 2, "PutSecretValue": 1}


def test_repr_hides_the_client_secret(store: AppCredentialsStore, aws_clients: AwsClients) -> None:
    put_app_secret(aws_clients, "workly", json.dumps({"client_id": "ours", "client_secret": "s3cret"}))
    assert "s3cret" not in repr(store.get("workly"))
