"""tokenbroker's generic provider against panva/oidc-provider: code + PKCE, rotation, userinfo, errors.

The browser part (login and consent on oidc-provider's development pages) is played by
``browser.authorize_as`` with plain HTTP; everything else goes through the provider built from an
extra catalog file, as a deployment would declare it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ProviderError,
    ProviderErrorKind,
)
from tokenbroker.http import HttpClient
from tokenbroker.providers import AppCredentials, Catalog, Provider, build_provider, new_pkce_pair
from tokenbroker.tokens import TokenSet

from tests.peers.browser import AuthorizationResponse, authorize_as
from tests.peers.peer_servers import OidcPeer, write_catalog
from tests.support.errors import raises_kind

pytestmark = pytest.mark.peers

CLIENT_AUTHS = ("basic", "body")
SCOPES = ("openid", "offline_access", "email", "profile")


@pytest.fixture(scope="module")
def catalog_file(oidc_peer: OidcPeer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    entries = {
        f"oidc-{mode}": {
            "kind": "generic",
            "auth_mode": "authorization_code",
            "base_url": oidc_peer.base_url,
            "authorize_url": "{base_url}/auth",
            "token_url": "{base_url}/token",
            "userinfo_url": "{base_url}/me",
            "client_auth": mode,
            "pkce": True,
            "scope_separator": " ",
            "default_scopes": list(SCOPES),
            # OpenID Connect grants offline_access (a refresh token) only with prompt=consent.
            "authorize_params": {"prompt": "consent"},
            "access_token_ttl": "1h",
            "refresh_token_ttl": "10m",
            "rotates_refresh_token": True,
        }
        for mode in CLIENT_AUTHS
    }
    return write_catalog(tmp_path_factory.mktemp("oidc-catalog") / "providers.yaml", entries)


@pytest.fixture(scope="module")
def http() -> Iterator[HttpClient]:
    with HttpClient(read_timeout=5.0) as client:
        yield client


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make_provider(
    oidc_peer: OidcPeer,
    catalog_file: Path,
    http: HttpClient,
    clock: ManualClock,
    *,
    client_auth: str = "basic",
    credentials: AppCredentials | None = None,
) -> Provider:
    entry = Catalog.load(catalog_file).get(f"oidc-{client_auth}")
    return build_provider(entry, credentials or oidc_peer.clients[client_auth], http=http, clock=clock)


@dataclass(frozen=True)
class Authorized:
    response: AuthorizationResponse
    verifier: str
    state: str


def authorize(provider: Provider, oidc_peer: OidcPeer, login: str) -> Authorized:
    """Start the flow as tokenbroker would, and let the end user log in and consent."""
    state = secrets.token_urlsafe(24)
    verifier, challenge = new_pkce_pair()
    url = provider.authorization_url(state=state, redirect_uri=oidc_peer.redirect_uri, code_challenge=challenge)
    response = authorize_as(url, redirect_uri=oidc_peer.redirect_uri, login=login)
    assert response.state == state
    assert response.issuer == oidc_peer.base_url  # RFC 9207: the answer names who issued the code
    return Authorized(response, verifier, state)


def connect(provider: Provider, oidc_peer: OidcPeer, login: str) -> TokenSet:
    authorized = authorize(provider, oidc_peer, login)
    return provider.exchange_code(
        code=authorized.response.code, redirect_uri=oidc_peer.redirect_uri, code_verifier=authorized.verifier
    )


def assert_no_secret_in(error: ProviderError, *secrets_sent: str | None) -> None:
    shown = " ".join((str(error), error.message, repr(error)))
    for secret in secrets_sent:
        assert secret
        assert secret not in shown


def test_authorization_url_carries_client_state_pkce_scopes_and_prompt(
    oidc_peer: OidcPeer, catalog_file: Path, http: HttpClient, clock: ManualClock
) -> None:
    provider = make_provider(oidc_peer, catalog_file, http, clock)
    verifier, challenge = new_pkce_pair()

    url = provider.authorization_url(state="s-123", redirect_uri=oidc_peer.redirect_uri, code_challenge=challenge)

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{oidc_peer.base_url}/auth"
    query = {key: values[0] for key, values in parse_qs(parts.query, strict_parsing=True).items()}
    assert query == {
        "response_type": "code",
        "client_id": oidc_peer.clients["basic"].client_id,
        "redirect_uri": oidc_peer.redirect_uri,
        "state": "s-123",
        "scope": " ".join(SCOPES),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "prompt": "consent",
    }
    assert verifier not in url


@pytest.mark.parametrize("client_auth", CLIENT_AUTHS)
def test_code_flow_gives_a_refreshable_token_set_and_user_info(
    oidc_peer: OidcPeer, catalog_file: Path, http: HttpClient, clock: ManualClock, client_auth: str
) -> None:
    provider = make_provider(oidc_peer, catalog_file, http, clock, client_auth=client_auth)
    login = f"alice-{client_auth}"

    token = connect(provider, oidc_peer, login)

    assert token.access_token
    assert token.refresh_token  # offline_access was granted: prompt=consent reached the server
    assert token.token_type == "Bearer"
    assert token.obtained_at == int(clock.now())
    assert token.expires_at == int(clock.now()) + oidc_peer.access_ttl
    assert set(token.scopes) == set(SCOPES)
    # userinfo: GET with the Bearer header, OIDC claims mapped onto UserInfo.
    user = provider.user_info(token)
    assert (user.id, user.email, user.name) == (login, f"{login}@peer.test", f"Peer {login}")


def test_refresh_rotates_and_a_replayed_old_refresh_token_needs_reauthorization(
    oidc_peer: OidcPeer, catalog_file: Path, http: HttpClient, clock: ManualClock
) -> None:
    provider = make_provider(oidc_peer, catalog_file, http, clock, client_auth="body")
    first = connect(provider, oidc_peer, "bob")
    clock.advance(60)

    second = provider.refresh(first)

    assert second.refresh_token
    assert second.refresh_token != first.refresh_token
    assert second.access_token != first.access_token
    assert second.expires_at == int(clock.now()) + oidc_peer.access_ttl
    assert set(second.scopes) == set(SCOPES)
    assert provider.user_info(second).id == "bob"

    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as raised:
        provider.refresh(first)
    assert raised.value.provider_code == "invalid_grant"
    assert raised.value.status == 400
    assert_no_secret_in(raised.value, first.refresh_token, oidc_peer.clients["body"].client_secret)

    # oidc-provider treats the replay as theft and revokes the whole grant, the current tokens
    # included: exactly why a refresher must never re-send a rotated refresh token blindly.
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):
        provider.refresh(second)
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as dead_access:
        provider.user_info(second)
    assert dead_access.value.provider_code == "invalid_token"
    assert dead_access.value.status == 401


def test_a_wrong_code_verifier_needs_reauthorization(
    oidc_peer: OidcPeer, catalog_file: Path, http: HttpClient, clock: ManualClock
) -> None:
    provider = make_provider(oidc_peer, catalog_file, http, clock)
    authorized = authorize(provider, oidc_peer, "carol")
    other_verifier, _ = new_pkce_pair()

    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as raised:
        provider.exchange_code(
            code=authorized.response.code, redirect_uri=oidc_peer.redirect_uri, code_verifier=other_verifier
        )

    assert raised.value.provider_code == "invalid_grant"
    assert_no_secret_in(raised.value, authorized.response.code, other_verifier, authorized.verifier)


def test_a_code_is_exchanged_once(
    oidc_peer: OidcPeer, catalog_file: Path, http: HttpClient, clock: ManualClock
) -> None:
    provider = make_provider(oidc_peer, catalog_file, http, clock)
    authorized = authorize(provider, oidc_peer, "dave")
    token = provider.exchange_code(
        code=authorized.response.code, redirect_uri=oidc_peer.redirect_uri, code_verifier=authorized.verifier
    )
    assert token.refresh_token

    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as raised:
        provider.exchange_code(
            code=authorized.response.code, redirect_uri=oidc_peer.redirect_uri, code_verifier=authorized.verifier
        )
    assert raised.value.provider_code == "invalid_grant"


@pytest.mark.parametrize("client_auth", CLIENT_AUTHS)
def test_a_bad_client_secret_is_a_configuration_error(
    oidc_peer: OidcPeer, catalog_file: Path, http: HttpClient, clock: ManualClock, client_auth: str
) -> None:
    registered = oidc_peer.clients[client_auth]
    provider = make_provider(oidc_peer, catalog_file, http, clock, client_auth=client_auth)
    authorized = authorize(provider, oidc_peer, "erin")
    wrong = AppCredentials(registered.client_id, registered.client_secret + "x")
    misconfigured = make_provider(oidc_peer, catalog_file, http, clock, client_auth=client_auth, credentials=wrong)

    with raises_kind(ProviderErrorKind.CONFIGURATION) as raised:
        misconfigured.exchange_code(
            code=authorized.response.code, redirect_uri=oidc_peer.redirect_uri, code_verifier=authorized.verifier
        )

    assert raised.value.provider_code == "invalid_client"
    assert raised.value.status == 401
    assert_no_secret_in(raised.value, wrong.client_secret, authorized.response.code)
