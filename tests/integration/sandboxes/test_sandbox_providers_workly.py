"""tokenbroker.providers driven against the Workly sandbox over real HTTP, through an extra catalog file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ProviderErrorKind,
)
from tokenbroker.http import HttpClient
from tokenbroker.providers import AppCredentials, Catalog, Provider, build_provider
from tokenbroker.tokens import TokenSet

from infra.sandboxes import WorklySandbox, write_catalog_file
from tests.support.errors import raises_kind

EMAIL = "ann@example.com"
PASSWORD = "correct-horse-battery"
READ_TIMEOUT = 0.5


@pytest.fixture
def http() -> Iterator[HttpClient]:
    with HttpClient(connect_timeout=1, read_timeout=READ_TIMEOUT, backoff_factor=0) as client:
        yield client


@pytest.fixture
def catalog(tmp_path: Path, workly: WorklySandbox) -> Catalog:
    return Catalog.load(write_catalog_file(tmp_path / "providers.yaml", workly=workly), environ={})


@pytest.fixture
def provider(catalog: Catalog, workly: WorklySandbox, http: HttpClient, clock: ManualClock) -> Provider:
    entry = catalog.get("workly")
    credentials = entry.default_credentials()
    assert credentials == AppCredentials(workly.client_id, workly.client_secret)
    return build_provider(entry, credentials, http=http, clock=clock)


def login(provider: Provider) -> TokenSet:
    return provider.password_grant(username=EMAIL, password=PASSWORD)


def api_status(workly: WorklySandbox, token: TokenSet) -> int:
    headers = {"Authorization": f"{token.token_type} {token.access_token}"}
    return requests.get(workly.api_url, headers=headers, timeout=5).status_code


def test_catalog_points_at_the_sandbox(catalog: Catalog, workly: WorklySandbox) -> None:
    entry = catalog.get("workly")
    assert entry.token_url == workly.token_url
    assert entry.refresh_url == workly.token_url  # Workly refreshes on the same URL
    assert entry.access_token_ttl == 3600


def test_password_grant(provider: Provider, workly: WorklySandbox, clock: ManualClock) -> None:
    token = login(provider)
    assert token.token_type == "Bearer"
    assert token.expires_at == int(clock.now()) + 3600
    assert token.scopes == ("v1:list:employee", "v1:view:employee")
    assert token.refresh_token and token.refresh_token != token.access_token
    assert api_status(workly, token) == 200
    assert workly.outcomes["password"] == 1


def test_two_refreshes_rotate_and_the_old_refresh_token_needs_reauthorization(
    provider: Provider, workly: WorklySandbox, clock: ManualClock
) -> None:
    first = login(provider)
    clock.advance(600)
    second = provider.refresh(first)
    third = provider.refresh(second)
    assert len({first.refresh_token, second.refresh_token, third.refresh_token}) == 3
    assert second.expires_at == int(clock.now()) + 3600
    assert workly.refreshes == 2
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as caught:
        provider.refresh(first)
    assert caught.value.provider_code == "7008"
    assert caught.value.kind is not ProviderErrorKind.INVALID_CREDENTIALS
    # Workly's old access token (unverified upstream) lives on until its expiry by default.
    assert api_status(workly, first) == 200
    assert api_status(workly, third) == 200


def test_expired_refresh_token_needs_reauthorization(provider: Provider, clock: ManualClock) -> None:
    token = login(provider)
    clock.advance(7200)
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as caught:
        provider.refresh(token)
    assert caught.value.provider_code == "7006"


@pytest.mark.parametrize(("password", "code"), [("wrong-password", "7002"), ("short", "8002")])
def test_wrong_password_is_invalid_user_credentials(provider: Provider, password: str, code: str) -> None:
    with raises_kind(ProviderErrorKind.INVALID_CREDENTIALS) as caught:
        provider.password_grant(username=EMAIL, password=password)
    assert caught.value.provider_code == code
    assert password not in str(caught.value)


def test_password_reset_returns_the_providers_message(provider: Provider, workly: WorklySandbox) -> None:
    message = provider.request_password_reset(EMAIL)
    assert message == "Инструкция по восстановлению пароля отправлена на ваш e-mail"
    assert [r.email for r in workly.password_resets] == [EMAIL]


def test_wrong_client_secret_is_a_configuration_problem(
    catalog: Catalog, workly: WorklySandbox, http: HttpClient, clock: ManualClock
) -> None:
    provider = build_provider(
        catalog.get("workly"), AppCredentials(workly.client_id, "rotated-away"), http=http, clock=clock
    )
    with raises_kind(ProviderErrorKind.CONFIGURATION) as caught:
        login(provider)
    assert caught.value.provider_code == "7003"


@pytest.mark.parametrize(
    ("knobs", "error", "code"),
    [
        ({"upgrade_required": True}, ProviderErrorKind.CONFIGURATION, "7010"),
        ({"maintenance": True}, ProviderErrorKind.TRANSIENT, None),
        ({"rate_limit_per_minute": 0}, ProviderErrorKind.TRANSIENT, "6000"),
    ],
)
def test_provider_wide_knobs(
    provider: Provider,
    workly: WorklySandbox,
    knobs: dict[str, object],
    error: ProviderErrorKind,
    code: str | None,
) -> None:
    token = login(provider)
    workly.knobs.update(knobs)
    with raises_kind(error) as caught:
        provider.refresh(token)
    assert caught.value.provider_code == code
    assert workly.refreshes == 0


def test_expired_subscription_is_an_account_problem(provider: Provider, workly: WorklySandbox) -> None:
    token = login(provider)
    workly.set_subscription_expired(EMAIL)
    with raises_kind(ProviderErrorKind.ACCOUNT) as caught:
        provider.refresh(token)
    assert caught.value.status == 402


# --- fault knobs -> error kinds -------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_html_error_pages_are_transient(provider: Provider, workly: WorklySandbox, status: int) -> None:
    token = login(provider)
    workly.faults.fail(status, endpoint="token")
    with raises_kind(ProviderErrorKind.TRANSIENT) as caught:
        provider.refresh(token)
    assert caught.value.kind is ProviderErrorKind.TRANSIENT
    assert caught.value.status == status
    assert provider.refresh(token).refresh_token  # nothing rotated: the same token still works


@pytest.mark.parametrize("retry_after", [None, 30])
def test_rate_limit_is_transient_with_retry_after(
    provider: Provider, workly: WorklySandbox, retry_after: int | None
) -> None:
    token = login(provider)
    workly.faults.rate_limit(retry_after=retry_after, endpoint="token")
    with raises_kind(ProviderErrorKind.TRANSIENT) as caught:
        provider.refresh(token)
    assert caught.value.status == 429
    assert caught.value.retry_after == retry_after


def test_error_body_with_http_200_is_transient(provider: Provider, workly: WorklySandbox) -> None:
    token = login(provider)
    workly.faults.error_200(endpoint="token")
    with raises_kind(ProviderErrorKind.TRANSIENT) as caught:
        provider.refresh(token)
    assert caught.value.provider_code == "5000" and caught.value.status == 200


def test_error_body_with_http_200_keeps_its_meaning(provider: Provider, workly: WorklySandbox) -> None:
    workly.faults.error_200(endpoint="token", body='{"message": "Неверный токен", "code": 7008}')
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):
        provider.refresh(login(provider))


def test_malformed_json_is_transient(provider: Provider, workly: WorklySandbox) -> None:
    token = login(provider)
    workly.faults.malformed_json(endpoint="token")
    with raises_kind(ProviderErrorKind.TRANSIENT) as caught:
        provider.refresh(token)
    assert caught.value.kind is ProviderErrorKind.TRANSIENT


def test_missing_refresh_token_keeps_the_old_one(provider: Provider, workly: WorklySandbox) -> None:
    token = login(provider)
    workly.faults.omit_fields("refresh_token", endpoint="token")
    fresh = provider.refresh(token)
    assert fresh.access_token != token.access_token
    assert fresh.refresh_token == token.refresh_token


def test_missing_expires_in_falls_back_to_the_catalog_lifetime(
    provider: Provider, workly: WorklySandbox, clock: ManualClock, catalog: Catalog
) -> None:
    workly.faults.omit_fields("expires_in", endpoint="token")
    token = login(provider)
    assert token.expires_at == int(clock.now()) + catalog.get("workly").access_token_ttl


def test_hang_before_the_refresh_is_outcome_unknown_and_loses_nothing(
    provider: Provider, workly: WorklySandbox
) -> None:
    token = login(provider)
    workly.faults.hang(READ_TIMEOUT * 6, endpoint="token")
    with raises_kind(ProviderErrorKind.OUTCOME_UNKNOWN):
        provider.refresh(token)
    assert workly.refreshes == 0
    assert workly.calls["token"] == 2  # sent once: never re-POSTed after the timeout
    assert provider.refresh(token).refresh_token != token.refresh_token


def test_hang_after_the_refresh_is_outcome_unknown_and_the_grant_rotated(
    provider: Provider, workly: WorklySandbox
) -> None:
    token = login(provider)
    workly.faults.hang(READ_TIMEOUT * 6, endpoint="token", after=True)
    with raises_kind(ProviderErrorKind.OUTCOME_UNKNOWN):
        provider.refresh(token)
    assert workly.refreshes == 1
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):
        provider.refresh(token)


@pytest.mark.parametrize("after", [False, True])
def test_dropped_connection_is_outcome_unknown(provider: Provider, workly: WorklySandbox, after: bool) -> None:
    token = login(provider)
    workly.faults.drop(endpoint="token", after=after)
    with raises_kind(ProviderErrorKind.OUTCOME_UNKNOWN):
        provider.refresh(token)
    assert workly.calls["token"] == 2
    assert workly.refreshes == (1 if after else 0)


def test_latency_below_the_timeout_is_harmless(provider: Provider, workly: WorklySandbox) -> None:
    workly.faults.set_latency(READ_TIMEOUT / 5, endpoint="token")
    assert login(provider).access_token


def test_unreachable_provider_is_transient_not_outcome_unknown(
    catalog: Catalog, workly: WorklySandbox, clock: ManualClock
) -> None:
    entry = catalog.get("workly")
    assert entry.default_credentials() is not None
    workly.stop()  # nothing listens on the port any more: the request is never sent
    with HttpClient(connect_timeout=1, read_timeout=1, connect_retries=0) as http:
        provider = build_provider(entry, AppCredentials("x", "y"), http=http, clock=clock)
        with raises_kind(ProviderErrorKind.TRANSIENT) as caught:
            provider.password_grant(username=EMAIL, password=PASSWORD)
    assert caught.value.kind is not ProviderErrorKind.OUTCOME_UNKNOWN
