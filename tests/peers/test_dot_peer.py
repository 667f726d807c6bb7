"""tokenbroker's generic provider against django-oauth-toolkit: password grant, rotation, errors.

The server is a real DOT (see dot_project/) with ROTATE_REFRESH_TOKEN and no grace period; the
provider is built from an extra catalog file exactly as a deployment would declare it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ProviderError,
    ProviderErrorKind,
)
from tokenbroker.http import HttpClient
from tokenbroker.providers import AppCredentials, Catalog, Provider, build_provider

from tests.peers.peer_servers import DotPeer, write_catalog
from tests.support.errors import raises_kind

pytestmark = pytest.mark.peers

CLIENT_AUTHS = ("basic", "body")


@pytest.fixture(scope="module")
def catalog_file(dot_peer: DotPeer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    entries = {
        f"dot-{mode}": {
            "kind": "generic",
            "auth_mode": "password",
            "token_url": dot_peer.token_url,
            "userinfo_url": dot_peer.userinfo_url,
            "client_auth": mode,
            "scope_separator": " ",
            "default_scopes": ["read"],
            "access_token_ttl": "1h",  # the fallback; DOT does send expires_in
            "rotates_refresh_token": True,
        }
        for mode in CLIENT_AUTHS
    }
    return write_catalog(tmp_path_factory.mktemp("dot-catalog") / "providers.yaml", entries)


@pytest.fixture(scope="module")
def http() -> Iterator[HttpClient]:
    with HttpClient(read_timeout=5.0) as client:
        yield client


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make_provider(
    catalog_file: Path,
    http: HttpClient,
    clock: ManualClock,
    credentials: AppCredentials,
    client_auth: str = "basic",
) -> Provider:
    entry = Catalog.load(catalog_file).get(f"dot-{client_auth}")
    return build_provider(entry, credentials, http=http, clock=clock)


def assert_no_secret_in(error: ProviderError, *secrets: str | None) -> None:
    shown = " ".join((str(error), error.message, repr(error)))
    for secret in secrets:
        assert secret
        assert secret not in shown


@pytest.mark.parametrize("client_auth", CLIENT_AUTHS)
def test_password_grant_gives_a_working_token_set(
    dot_peer: DotPeer, catalog_file: Path, http: HttpClient, clock: ManualClock, client_auth: str
) -> None:
    provider = make_provider(catalog_file, http, clock, dot_peer.credentials, client_auth)

    token = provider.password_grant(username=dot_peer.username, password=dot_peer.password)

    assert token.access_token
    assert token.refresh_token
    assert token.token_type == "Bearer"
    assert token.obtained_at == int(clock.now())
    assert token.expires_at == int(clock.now()) + dot_peer.access_ttl  # from DOT's expires_in
    assert token.scopes == ("read",)
    # The token is accepted by a resource that DOT protects, and says whose it is.
    user = provider.user_info(token)
    assert user.name == dot_peer.username
    assert user.email == dot_peer.email
    assert user.id is not None


def test_refresh_rotates_and_the_replayed_old_refresh_token_needs_reauthorization(
    dot_peer: DotPeer, catalog_file: Path, http: HttpClient, clock: ManualClock
) -> None:
    provider = make_provider(catalog_file, http, clock, dot_peer.credentials)
    first = provider.password_grant(username=dot_peer.username, password=dot_peer.password)
    clock.advance(45)

    second = provider.refresh(first)

    assert second.refresh_token
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert second.expires_at == int(clock.now()) + dot_peer.access_ttl
    assert second.scopes == ("read",)
    assert provider.user_info(second).name == dot_peer.username

    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as raised:
        provider.refresh(first)
    error = raised.value
    assert error.provider_code == "invalid_grant"
    assert error.status == 400
    # A dead refresh token is not a wrong password: the user is not asked to fix their login.
    assert error.kind is not ProviderErrorKind.INVALID_CREDENTIALS
    assert_no_secret_in(error, first.refresh_token, dot_peer.credentials.client_secret)

    # Without reuse protection DOT leaves the current grant alive: a stale worker's replay must not
    # be read as "the connection is dead" (design: fatal only if the token used is still current).
    third = provider.refresh(second)
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)


@pytest.mark.parametrize("username_is_known", [True, False], ids=["wrong-password", "unknown-user"])
def test_bad_user_credentials_are_invalid_user_credentials(
    dot_peer: DotPeer, catalog_file: Path, http: HttpClient, clock: ManualClock, username_is_known: bool
) -> None:
    # DOT answers 400 invalid_grant "Invalid credentials given." to a password grant with a bad
    # login. For a password grant invalid_grant can only mean the user's login: ask them again.
    provider = make_provider(catalog_file, http, clock, dot_peer.credentials)
    username = dot_peer.username if username_is_known else "nobody-here"
    wrong_password = dot_peer.password + "-wrong"

    with raises_kind(ProviderErrorKind.INVALID_CREDENTIALS) as raised:
        provider.password_grant(username=username, password=wrong_password)

    error = raised.value
    assert error.provider_code == "invalid_grant"
    assert error.status == 400
    assert_no_secret_in(error, wrong_password, dot_peer.credentials.client_secret)


@pytest.mark.parametrize("client_auth", CLIENT_AUTHS)
def test_bad_client_secret_is_a_configuration_error(
    dot_peer: DotPeer, catalog_file: Path, http: HttpClient, clock: ManualClock, client_auth: str
) -> None:
    wrong = AppCredentials(dot_peer.credentials.client_id, dot_peer.credentials.client_secret + "x")
    provider = make_provider(catalog_file, http, clock, wrong, client_auth)

    with raises_kind(ProviderErrorKind.CONFIGURATION) as raised:
        provider.password_grant(username=dot_peer.username, password=dot_peer.password)

    error = raised.value
    assert error.provider_code == "invalid_client"
    assert error.status == 401
    assert_no_secret_in(error, wrong.client_secret, dot_peer.password)


def test_refresh_with_a_bad_client_secret_keeps_the_grant(
    dot_peer: DotPeer, catalog_file: Path, http: HttpClient, clock: ManualClock
) -> None:
    good = make_provider(catalog_file, http, clock, dot_peer.credentials)
    token = good.password_grant(username=dot_peer.username, password=dot_peer.password)
    wrong = AppCredentials(dot_peer.credentials.client_id, "not-the-secret-" + dot_peer.credentials.client_secret)
    misconfigured = make_provider(catalog_file, http, clock, wrong)

    # Our configuration is wrong, not the user's grant: a configuration error, never a re-auth.
    with raises_kind(ProviderErrorKind.CONFIGURATION) as raised:
        misconfigured.refresh(token)
    assert raised.value.kind is not ProviderErrorKind.REAUTHORIZATION_REQUIRED
    assert_no_secret_in(raised.value, token.refresh_token, wrong.client_secret)

    # And the refresh token is still good once the configuration is fixed.
    refreshed = good.refresh(token)
    assert refreshed.refresh_token not in (None, token.refresh_token)
