"""The providers over HTTP against a scripted loopback server: requests sent, answers normalised."""

from __future__ import annotations

import base64
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ProviderErrorKind,
    UnsupportedOperation,
)
from tokenbroker.http import HttpClient
from tokenbroker.providers import (
    AppCredentials,
    Catalog,
    CatalogEntry,
    OAuth2Provider,
    WorklyProvider,
    WorksectionProvider,
    build_provider,
    new_pkce_pair,
)
from tokenbroker.tokens import TokenSet

from tests.support.errors import raises_kind
from tests.unit.providers.scripted import Drop, Hang, Reply, ScriptedServer, closed_port

WORKLY_ACCESS = "a1" * 20
WORKLY_REFRESH = "b2" * 20
WS_JWT = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2lnbmF0dXJlLXZhbHVl"
WS_REFRESH = "def50200" + "c3" * 40


def worksection(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> WorksectionProvider:
    entry = catalog.get("worksection").with_base_url(server.url)
    provider = build_provider(entry, credentials, http=http, clock=clock)
    assert isinstance(provider, WorksectionProvider)
    return provider


def workly(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> WorklyProvider:
    entry = catalog.get("workly").with_base_url(server.url + "/v1")
    provider = build_provider(entry, credentials, http=http, clock=clock)
    assert isinstance(provider, WorklyProvider)
    return provider


def generic(
    server: ScriptedServer, credentials: AppCredentials, http: HttpClient, clock: ManualClock, **fields: object
) -> OAuth2Provider:
    values: dict[str, object] = {
        "base_url": server.url,
        "authorize_url": "{base_url}/authorize",
        "token_url": "{base_url}/token",
        "userinfo_url": "{base_url}/userinfo",
        "access_token_ttl": 600,
        **fields,
    }
    entry = CatalogEntry(name="acme", **values)  # type: ignore[arg-type]
    provider = build_provider(entry, credentials, http=http, clock=clock)
    assert type(provider) is OAuth2Provider
    return provider


def ws_token(**extra: object) -> dict[str, object]:
    return {"token_type": "Bearer", "expires_in": 86400, "access_token": WS_JWT, "refresh_token": WS_REFRESH, **extra}


# --- Worksection -------------------------------------------------------------------------------------------


def test_worksection_code_exchange(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = worksection(server, catalog, credentials, http, clock)
    server.script(Reply(200, ws_token(token_type="bearer", account_url="https://acme.worksection.com")))
    token = provider.exchange_code(code="auth-code-123456", redirect_uri="https://broker.test/callback/worksection")
    seen = server.seen[0]
    assert seen.path == "/oauth2/token"
    assert seen.form == {
        "grant_type": "authorization_code",
        "code": "auth-code-123456",
        "redirect_uri": "https://broker.test/callback/worksection",
        "client_id": "client-id-1",
        "client_secret": "client-secret-value-1",
    }
    assert token.access_token == WS_JWT and token.refresh_token == WS_REFRESH
    assert token.token_type == "Bearer"
    assert token.expires_at == int(clock.now()) + 86400
    assert token.extra == {"account_url": "https://acme.worksection.com"}


def test_worksection_refresh_uses_its_own_url_and_keeps_account_url(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = worksection(server, catalog, credentials, http, clock)
    old = TokenSet(
        "tb-old-access-0",
        "Bearer",
        1,
        0,
        refresh_token=WS_REFRESH,
        scopes=("tasks_read",),
        extra={"account_url": "https://acme.worksection.com"},
    )
    new_refresh = "def50200" + "d4" * 40
    server.script(Reply(200, ws_token(refresh_token=new_refresh)))
    clock.advance(1000)
    token = provider.refresh(old)
    seen = server.seen[0]
    assert seen.path == "/oauth2/refresh"
    assert seen.form["grant_type"] == "refresh_token" and seen.form["refresh_token"] == WS_REFRESH
    assert token.refresh_token == new_refresh
    assert token.extra == {"account_url": "https://acme.worksection.com"}  # omitted -> kept
    assert token.scopes == ("tasks_read",)
    assert token.expires_at == int(clock.now()) + 86400


def test_worksection_refresh_drops_a_bad_account_url_and_keeps_the_stored_one(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = worksection(server, catalog, credentials, http, clock)
    old = TokenSet(
        "tb-old-access-0",
        "Bearer",
        1,
        0,
        refresh_token=WS_REFRESH,
        extra={"account_url": "https://acme.worksection.com"},
    )
    for bad in ("https://evil.com", "http://x.worksection.com", "https://worksection.com.evil.com"):
        server.script(Reply(200, ws_token(account_url=bad)))
        assert provider.refresh(old).extra == {"account_url": "https://acme.worksection.com"}
    server.script(Reply(200, ws_token(account_url="https://evil.com")))
    fresh = provider.exchange_code(code="c0de-c0de", redirect_uri="https://b.test/cb")
    assert fresh.extra == {}


def test_worksection_http_200_error_on_refresh(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = worksection(server, catalog, credentials, http, clock)
    old = TokenSet("tb-old-access-0", "Bearer", 1, 0, refresh_token=WS_REFRESH)
    server.script(Reply(200, {"error": "invalid_request", "errorDescription": "Cannot decrypt the refresh token"}))
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as caught:
        provider.refresh(old)
    assert caught.value.status == 200 and caught.value.provider_code == "invalid_request"
    server.script(Reply(200, {"error": "invalid_client", "errorDescription": "Client authentication failed"}))
    with raises_kind(ProviderErrorKind.CONFIGURATION):
        provider.refresh(old)


def test_worksection_user_info(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = worksection(server, catalog, credentials, http, clock)
    token = TokenSet(WS_JWT, "Bearer", 1, 0)
    server.script(
        Reply(
            200,
            {
                "id": 42,
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "ada@acme.test",
                "account_url": "https://acme.worksection.com",
            },
        )
    )
    info = provider.user_info(token)
    seen = server.seen[0]
    assert seen.method == "POST" and seen.path == "/oauth2/resource"
    assert seen.form == {"client_id": "client-id-1", "client_secret": "client-secret-value-1", "access_token": WS_JWT}
    assert (info.id, info.name, info.email) == ("42", "Ada Lovelace", "ada@acme.test")
    assert info.extra == {"account_url": "https://acme.worksection.com"}
    assert info.to_metadata()["account_url"] == "https://acme.worksection.com"

    server.script(Reply(200, {"id": 1, "email": "x@y.z", "account_url": "https://evil.com"}))
    assert provider.user_info(token).extra == {}
    server.script(Reply(200, {"error": "invalid_request", "errorDescription": "Token has expired"}))
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):
        provider.user_info(token)


def test_worksection_authorization_url(catalog: Catalog, credentials: AppCredentials, http: HttpClient) -> None:
    provider = build_provider(catalog.get("worksection"), credentials, http=http)
    _, challenge = new_pkce_pair()
    url = provider.authorization_url(
        state="st4te",
        redirect_uri="https://broker.test/callback/worksection",
        scopes=["projects_read", "tasks_write"],
        code_challenge=challenge,
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "worksection.com", "/oauth2/authorize")
    assert parse_qs(parts.query) == {
        "response_type": ["code"],
        "client_id": ["client-id-1"],
        "redirect_uri": ["https://broker.test/callback/worksection"],
        "state": ["st4te"],
        "scope": ["projects_read,tasks_write"],
        "code_challenge": [challenge],
        "code_challenge_method": ["S256"],
    }
    default = parse_qs(
        urlsplit(
            provider.authorization_url(state="s", redirect_uri="https://b.test/cb", code_challenge=challenge)
        ).query
    )
    assert default["scope"] == ["projects_read,tasks_read,users_read"]
    none = parse_qs(
        urlsplit(
            provider.authorization_url(state="s", redirect_uri="https://b.test/cb", scopes=[], code_challenge=challenge)
        ).query
    )
    assert "scope" not in none
    # PKCE is on for Worksection by default: an authorize URL without a challenge is a bug.
    with pytest.raises(ValueError, match="PKCE"):
        provider.authorization_url(state="s", redirect_uri="https://b.test/cb")


def test_worksection_has_no_password_grant(catalog: Catalog, credentials: AppCredentials, http: HttpClient) -> None:
    provider = build_provider(catalog.get("worksection"), credentials, http=http)
    with pytest.raises(UnsupportedOperation):
        provider.password_grant(username="u", password="p" * 8)
    with pytest.raises(UnsupportedOperation):
        provider.request_password_reset("a@b.c")


# --- Workly --------------------------------------------------------------------------------------------------


def workly_token(**extra: object) -> dict[str, object]:
    return {
        "access_token": WORKLY_ACCESS,
        "expires_in": 2592000,
        "token_type": "bearer",
        "scope": "v1:list:employee,v1:view:employee",
        "refresh_token": WORKLY_REFRESH,
        **extra,
    }


def test_workly_password_grant(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = workly(server, catalog, credentials, http, clock)
    server.script(Reply(200, workly_token()))
    token = provider.password_grant(username="ada@acme.test", password="tb-correct-horse")
    seen = server.seen[0]
    assert seen.path == "/v1/oauth/token"
    assert seen.form == {
        "grant_type": "password",
        "username": "ada@acme.test",
        "password": "tb-correct-horse",
        "client_id": "client-id-1",
        "client_secret": "client-secret-value-1",
    }
    assert token.scopes == ("v1:list:employee", "v1:view:employee")
    assert token.expires_at == int(clock.now()) + 2_592_000
    assert token.extra == {}


def test_workly_refresh_on_the_same_url_rotates(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = workly(server, catalog, credentials, http, clock)
    old = TokenSet("old", "Bearer", 1, 0, refresh_token=WORKLY_REFRESH)
    rotated = "e5" * 20
    server.script(Reply(200, workly_token(refresh_token=rotated)))
    token = provider.refresh(old)
    assert server.seen[0].path == "/v1/oauth/token"
    assert server.seen[0].form["grant_type"] == "refresh_token"
    assert token.refresh_token == rotated


def test_workly_errors(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = workly(server, catalog, credentials, http, clock)
    server.script(Reply(400, {"message": "Неверный логин или пароль", "code": 7002}))
    with raises_kind(ProviderErrorKind.INVALID_CREDENTIALS) as caught:
        provider.password_grant(username="ada@acme.test", password="tb-wrong-pass-1")
    assert "tb-wrong-pass-1" not in str(caught.value)
    old = TokenSet("old", "Bearer", 1, 0, refresh_token=WORKLY_REFRESH)
    server.script(Reply(401, {"message": "Refresh token expired", "code": 7006}))
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):
        provider.refresh(old)
    server.script(Reply(429, {"message": "Too many requests", "code": 6000}, {"Retry-After": "30"}))
    with raises_kind(ProviderErrorKind.TRANSIENT) as transient:
        provider.refresh(old)
    assert transient.value.retry_after == 30


def test_workly_without_a_configured_secret_fails_before_calling(
    server: ScriptedServer, catalog: Catalog, http: HttpClient, clock: ManualClock
) -> None:
    defaults = catalog.get("workly").default_credentials()
    assert defaults is not None
    provider = workly(server, catalog, defaults, http, clock)
    with raises_kind(ProviderErrorKind.CONFIGURATION, match="no client secret configured"):
        provider.password_grant(username="a@b.c", password="tb-pass-12345678")
    assert server.seen == []


def test_workly_password_reset(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = workly(server, catalog, credentials, http, clock)
    server.script(Reply(200, {"message": "Инструкция отправлена на почту"}))
    assert provider.request_password_reset("ada@acme.test") == "Инструкция отправлена на почту"
    seen = server.seen[0]
    assert seen.path == "/v1/sign-in/password-reset" and seen.form == {"email": "ada@acme.test"}
    server.script(Reply(422, {"message": "Email not found", "code": 8003}))
    with raises_kind(ProviderErrorKind.INVALID_CREDENTIALS):
        provider.request_password_reset("nobody@acme.test")
    server.script(Reply(503, "<html>maintenance</html>"))
    with raises_kind(ProviderErrorKind.TRANSIENT):
        provider.request_password_reset("ada@acme.test")


def test_workly_has_no_browser_flow(catalog: Catalog, credentials: AppCredentials, http: HttpClient) -> None:
    provider = build_provider(catalog.get("workly"), credentials, http=http)
    with pytest.raises(UnsupportedOperation):
        provider.authorization_url(state="s", redirect_uri="https://b.test/cb")
    assert provider.user_info(TokenSet("x" * 10, "Bearer", 1, 0)).to_metadata() == {}


# --- generic RFC 6749 -------------------------------------------------------------------------------------------


def test_generic_basic_auth_and_pkce(
    server: ScriptedServer, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    creds = AppCredentials("id with:colon", "sec/ret+value")
    provider = generic(
        server,
        creds,
        http,
        clock,
        client_auth="basic",
        pkce=True,
        default_scopes=("openid", "email"),
        authorize_params={"prompt": "consent"},
    )
    verifier, challenge = new_pkce_pair()
    url = provider.authorization_url(
        state="s", redirect_uri="http://127.0.0.1:3000/callback/acme", code_challenge=challenge
    )
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge"] == [challenge] and query["code_challenge_method"] == ["S256"]
    assert query["scope"] == ["openid email"] and query["prompt"] == ["consent"]
    with pytest.raises(ValueError, match="PKCE"):
        provider.authorization_url(state="s", redirect_uri="http://127.0.0.1/cb")

    server.script(
        Reply(
            200, {"access_token": "at-123", "token_type": "Bearer", "refresh_token": "rt-123", "scope": "openid email"}
        )
    )
    token = provider.exchange_code(
        code="tb-the-code", redirect_uri="http://127.0.0.1:3000/callback/acme", code_verifier=verifier
    )
    seen = server.seen[0]
    assert seen.form == {
        "grant_type": "authorization_code",
        "code": "tb-the-code",
        "redirect_uri": "http://127.0.0.1:3000/callback/acme",
        "code_verifier": verifier,
    }
    assert (
        base64.b64decode(seen.headers["authorization"].removeprefix("Basic ")) == b"id%20with%3Acolon:sec%2Fret%2Bvalue"
    )
    assert token.expires_at == int(clock.now()) + 600  # no expires_in: the catalog lifetime


def test_generic_refresh_keeps_the_old_refresh_token(
    server: ScriptedServer, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = generic(server, credentials, http, clock)
    old = TokenSet("old", "Bearer", 1, 0, refresh_token="tb-keep-refresh-1", scopes=("a",))
    server.script(Reply(200, {"access_token": "tb-new-access-0", "expires_in": "120"}))
    token = provider.refresh(old)
    assert token.access_token == "tb-new-access-0" and token.refresh_token == "tb-keep-refresh-1"
    assert token.expires_at == int(clock.now()) + 120
    assert token.scopes == ("a",)


def test_generic_refresh_without_a_refresh_token_needs_reauthorisation(
    server: ScriptedServer, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = generic(server, credentials, http, clock)
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):
        provider.refresh(TokenSet("old", "Bearer", 1, 0))
    assert server.seen == []


def test_client_credentials_mode_refreshes_by_asking_again(
    server: ScriptedServer, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = generic(server, credentials, http, clock, auth_mode="client_credentials", authorize_url=None)
    server.script(Reply(200, {"access_token": "cc-1", "expires_in": 60}))
    token = provider.refresh(TokenSet("old", "Bearer", 1, 0, scopes=("api",)))
    assert server.seen[0].form == {
        "grant_type": "client_credentials",
        "scope": "api",
        "client_id": "client-id-1",
        "client_secret": "client-secret-value-1",
    }
    assert token.access_token == "cc-1"


def test_generic_user_info_is_a_bearer_get(
    server: ScriptedServer, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = generic(server, credentials, http, clock)
    server.script(Reply(200, {"sub": "u-1", "given_name": "Ada", "family_name": "L", "email": "ada@x.test"}))
    info = provider.user_info(TokenSet("tb-bearer-token-1", "Bearer", 1, 0))
    assert server.seen[0].method == "GET"
    assert server.seen[0].headers["authorization"] == "Bearer tb-bearer-token-1"
    assert (info.id, info.name, info.email) == ("u-1", "Ada L", "ada@x.test")
    no_endpoint = generic(server, credentials, http, clock, userinfo_url=None)
    assert no_endpoint.user_info(TokenSet("t", "Bearer", 1, 0)).id is None


def test_generic_public_client_sends_no_secret(server: ScriptedServer, http: HttpClient, clock: ManualClock) -> None:
    provider = generic(server, AppCredentials("public-app", ""), http, clock, pkce=True)
    server.script(Reply(200, {"access_token": "x"}))
    provider.exchange_code(code="c", redirect_uri="http://127.0.0.1/cb", code_verifier="v" * 43)
    assert "client_secret" not in server.seen[0].form
    assert server.seen[0].form["client_id"] == "public-app"


# --- transport outcomes ------------------------------------------------------------------------------------------


def test_a_refresh_whose_answer_is_lost_is_outcome_unknown(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = worksection(server, catalog, credentials, http, clock)
    old = TokenSet("old", "Bearer", 1, 0, refresh_token=WS_REFRESH)
    server.script(Hang())
    started = time.monotonic()
    with raises_kind(ProviderErrorKind.OUTCOME_UNKNOWN) as caught:
        provider.refresh(old)
    assert time.monotonic() - started < 3
    assert WS_REFRESH not in str(caught.value)
    server.script(Drop())
    with raises_kind(ProviderErrorKind.OUTCOME_UNKNOWN):
        provider.refresh(old)
    assert len(server.seen) == 2  # each refresh POST went out exactly once


def test_a_refresh_that_never_connected_is_plain_transient(
    catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    entry = catalog.get("worksection").with_base_url(f"http://127.0.0.1:{closed_port()}")
    provider = build_provider(entry, credentials, http=http, clock=clock)
    with raises_kind(ProviderErrorKind.TRANSIENT) as caught:
        provider.refresh(TokenSet("old", "Bearer", 1, 0, refresh_token=WS_REFRESH))
    assert caught.value.kind is not ProviderErrorKind.OUTCOME_UNKNOWN


def test_html_error_page_is_transient(
    server: ScriptedServer, catalog: Catalog, credentials: AppCredentials, http: HttpClient, clock: ManualClock
) -> None:
    provider = workly(server, catalog, credentials, http, clock)
    server.script(Reply(502, "<html><body>nginx</body></html>", {"Content-Type": "text/html"}))
    with raises_kind(ProviderErrorKind.TRANSIENT) as caught:
        provider.refresh(TokenSet("old", "Bearer", 1, 0, refresh_token=WORKLY_REFRESH))
    assert "nginx" not in caught.value.message


def test_provider_repr_hides_the_secret(catalog: Catalog, credentials: AppCredentials, http: HttpClient) -> None:
    provider = build_provider(catalog.get("workly"), credentials, http=http)
    assert "client-secret-value-1" not in repr(provider)
