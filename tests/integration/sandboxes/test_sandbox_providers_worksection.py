"""tokenbroker.providers driven through the Worksection sandbox: the browser flow done with requests,
code exchange, user info, rotation that kills both old tokens, HTTP-200 errors and every fault knob."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ProviderError,
    ProviderErrorKind,
)
from tokenbroker.http import HttpClient
from tokenbroker.providers import AppCredentials, Catalog, Provider, build_provider, new_pkce_pair
from tokenbroker.tokens import TokenSet

from infra.sandboxes import WorksectionSandbox, submit_consent, write_catalog_file
from tests.support.errors import raises_kind

REDIRECT_URI = "https://broker.example.com/callback/worksection"
READ_TIMEOUT = 0.5


@pytest.fixture
def http() -> Iterator[HttpClient]:
    with HttpClient(connect_timeout=1, read_timeout=READ_TIMEOUT, backoff_factor=0) as client:
        yield client


def make_provider(
    tmp_path: Path, sandbox: WorksectionSandbox, http: HttpClient, clock: ManualClock
) -> tuple[Catalog, Provider]:
    catalog = Catalog.load(write_catalog_file(tmp_path / "providers.yaml", worksection=sandbox), environ={})
    entry = catalog.get("worksection")
    credentials = entry.default_credentials()
    assert credentials is not None
    return catalog, build_provider(entry, credentials, http=http, clock=clock)


@pytest.fixture
def provider(tmp_path: Path, worksection: WorksectionSandbox, http: HttpClient, clock: ManualClock) -> Provider:
    return make_provider(tmp_path, worksection, http, clock)[1]


@dataclass(frozen=True)
class Authorized:
    """What the callback receives (the code) and what only the flow's starter holds (the verifier)."""

    code: str
    verifier: str = field(repr=False)


def authorize(
    provider: Provider,
    email: str = "bob@example.com",
    password: str = "bob-password-1",
    account: str | None = None,
) -> Authorized:
    """The end user's part: open the authorize URL (with a PKCE challenge), sign in, approve."""
    verifier, challenge = new_pkce_pair()
    url = provider.authorization_url(state="state-xyz", redirect_uri=REDIRECT_URI, code_challenge=challenge)
    with requests.Session() as browser:
        location = submit_consent(browser, url, email=email, password=password, account=account)
    assert location.startswith(REDIRECT_URI + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["state"] == "state-xyz"
    return Authorized(query["code"], verifier)


def redeem(provider: Provider, authorized: Authorized) -> TokenSet:
    return provider.exchange_code(code=authorized.code, redirect_uri=REDIRECT_URI, code_verifier=authorized.verifier)


def connect(provider: Provider, **login: str) -> TokenSet:
    return redeem(provider, authorize(provider, **login))


def api_status(sandbox: WorksectionSandbox, token: TokenSet) -> int:
    headers = {"Authorization": f"{token.token_type} {token.access_token}"}
    return requests.get(sandbox.api_url, params={"action": "get_projects"}, headers=headers, timeout=5).status_code


def test_authorization_url_targets_the_sandbox(provider: Provider, worksection: WorksectionSandbox) -> None:
    _, challenge = new_pkce_pair()
    url = provider.authorization_url(state="s1", redirect_uri=REDIRECT_URI, code_challenge=challenge)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == worksection.authorize_url
    query = parse_qs(parts.query)
    assert query["client_id"] == [worksection.client_id]
    assert query["scope"] == ["projects_read,tasks_read,users_read"]
    assert query["code_challenge"] == [challenge] and query["code_challenge_method"] == ["S256"]
    assert requests.get(url, timeout=5).status_code == 200  # the sandbox accepts every default scope


def test_connect_exchange_and_user_info(
    provider: Provider, worksection: WorksectionSandbox, clock: ManualClock
) -> None:
    token = connect(provider)
    assert token.token_type == "Bearer"
    assert token.expires_at == int(clock.now()) + 3600
    assert token.refresh_token and token.refresh_token.startswith("def50200")
    assert token.extra == {"account_url": "https://acme.worksection.com"}
    info = provider.user_info(token)
    assert (info.id, info.name, info.email) == ("1", "Bob User", "bob@example.com")
    assert info.extra == {"account_url": "https://acme.worksection.com"}
    assert api_status(worksection, token) == 200


def test_several_accounts_user_picks_one(provider: Provider) -> None:
    token = connect(provider, email="carol@example.com", password="carol-password-1", account="beta")
    assert token.extra["account_url"] == "https://beta.worksection.com"


def test_two_refreshes_kill_old_tokens_and_keep_account_url(
    provider: Provider, worksection: WorksectionSandbox, clock: ManualClock
) -> None:
    first = connect(provider)
    clock.advance(60)
    second = provider.refresh(first)
    assert second.extra == {"account_url": "https://acme.worksection.com"}  # omitted by the answer, kept
    assert api_status(worksection, first) == 401  # the old access token died with the rotation
    assert api_status(worksection, second) == 200
    third = provider.refresh(second)
    assert api_status(worksection, second) == 401
    assert api_status(worksection, third) == 200
    assert third.extra["account_url"] == "https://acme.worksection.com"
    assert worksection.refreshes == 2
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):
        provider.refresh(first)


def test_token_type_is_normalised(provider: Provider, worksection: WorksectionSandbox) -> None:
    worksection.knobs.token_type = "Bearer"
    assert connect(provider).token_type == "Bearer"


def test_account_url_outside_the_allowed_domains_is_dropped(
    provider: Provider, worksection: WorksectionSandbox
) -> None:
    worksection.knobs.account_url_template = "https://{account}.worksection.com.evil.example"
    assert "account_url" not in connect(provider).extra


def test_account_url_on_the_sandbox_origin(
    tmp_path: Path, worksection: WorksectionSandbox, http: HttpClient, clock: ManualClock
) -> None:
    worksection.knobs.account_url_template = "{url}"
    _, provider = make_provider(tmp_path, worksection, http, clock)
    token = connect(provider)
    assert token.extra["account_url"] == worksection.url
    url = token.extra["account_url"] + "/api/oauth2?action=get_projects"
    headers = {"Authorization": f"Bearer {token.access_token}"}
    assert requests.get(url, headers=headers, timeout=5).json()["status"] == "ok"


# --- errors with HTTP 200 and league dialects --------------------------------------------------------


def test_code_reuse_needs_reauthorization(provider: Provider) -> None:
    authorized = authorize(provider)
    redeem(provider, authorized)
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as caught:
        redeem(provider, authorized)
    assert caught.value.provider_code == "invalid_request"
    assert authorized.code not in str(caught.value)


def test_an_injected_code_is_useless_without_its_verifier(provider: Provider, worksection: WorksectionSandbox) -> None:
    """RFC 9700 section 4.5: the code leaks, the attacker replays it with their own (or no) verifier."""
    victim = authorize(provider)
    attacker = authorize(provider, email="carol@example.com", password="carol-password-1", account="alpha")
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as caught:
        provider.exchange_code(code=victim.code, redirect_uri=REDIRECT_URI, code_verifier=attacker.verifier)
    assert caught.value.provider_code == "invalid_grant"
    assert victim.code not in str(caught.value) and attacker.verifier not in str(caught.value)
    with pytest.raises(ProviderError):
        provider.exchange_code(code=victim.code, redirect_uri=REDIRECT_URI)
    assert worksection.outcomes["authorization_code"] == 0
    assert redeem(provider, victim).extra == {"account_url": "https://acme.worksection.com"}


def test_pkce_off_in_the_catalog_sends_no_challenge(
    tmp_path: Path, worksection: WorksectionSandbox, http: HttpClient, clock: ManualClock
) -> None:
    catalog, _ = make_provider(tmp_path, worksection, http, clock)
    entry = catalog.merged_with({"worksection": {"pkce": False}}).get("worksection")
    credentials = entry.default_credentials()
    assert credentials is not None
    plain = build_provider(entry, credentials, http=http, clock=clock)
    url = plain.authorization_url(state="state-xyz", redirect_uri=REDIRECT_URI)
    assert "code_challenge" not in parse_qs(urlsplit(url).query)
    with requests.Session() as browser:
        location = submit_consent(browser, url, email="bob@example.com", password="bob-password-1")
    code = parse_qs(urlsplit(location).query)["code"][0]
    assert plain.exchange_code(code=code, redirect_uri=REDIRECT_URI).access_token


@pytest.mark.parametrize("status", [200, 400])
def test_code_errors_with_any_status(
    provider: Provider, worksection: WorksectionSandbox, clock: ManualClock, status: int
) -> None:
    worksection.knobs.invalid_request_status = status
    authorized = authorize(provider)
    clock.advance(601)
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as caught:
        redeem(provider, authorized)
    assert caught.value.status == status


@pytest.mark.parametrize(("league_version", "status"), [(8, 200), (8, 400), (8, 401), (9, 400)])
def test_dead_refresh_token_in_every_dialect(
    provider: Provider, worksection: WorksectionSandbox, league_version: int, status: int
) -> None:
    worksection.knobs.league_version = league_version
    worksection.knobs.invalid_request_status = status
    first = connect(provider)
    provider.refresh(first)
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as caught:
        provider.refresh(first)
    assert caught.value.provider_code == ("invalid_grant" if league_version >= 9 else "invalid_request")
    assert caught.value.status == (400 if league_version >= 9 else status)


@pytest.mark.parametrize("status", [200, 401])
def test_invalid_client_is_a_configuration_problem(
    tmp_path: Path, worksection: WorksectionSandbox, http: HttpClient, clock: ManualClock, status: int
) -> None:
    worksection.knobs.invalid_client_status = status
    catalog, good = make_provider(tmp_path, worksection, http, clock)
    token = connect(good)
    bad = build_provider(
        catalog.get("worksection"), AppCredentials(worksection.client_id, "wrong"), http=http, clock=clock
    )
    with raises_kind(ProviderErrorKind.CONFIGURATION) as caught:
        bad.refresh(token)
    assert caught.value.provider_code == "invalid_client" and caught.value.status == status
    with raises_kind(ProviderErrorKind.CONFIGURATION):
        bad.user_info(token)
    assert worksection.refreshes == 0


def test_user_info_with_a_dead_access_token(provider: Provider, worksection: WorksectionSandbox) -> None:
    token = connect(provider)
    worksection.expire_access_tokens()
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED) as caught:
        provider.user_info(token)
    assert caught.value.status == 401


# --- fault knobs on the refresh URL -> error kinds ----------------------------------------------------


@pytest.mark.parametrize(
    ("arm", "error", "rotated"),
    [
        (lambda s: s.faults.fail(500, endpoint="refresh"), ProviderErrorKind.TRANSIENT, False),
        (lambda s: s.faults.fail(502, endpoint="refresh"), ProviderErrorKind.TRANSIENT, False),
        (lambda s: s.faults.fail(503, endpoint="refresh", retry_after=12), ProviderErrorKind.TRANSIENT, False),
        (lambda s: s.faults.rate_limit(endpoint="refresh"), ProviderErrorKind.TRANSIENT, False),
        (lambda s: s.faults.rate_limit(retry_after=5, endpoint="refresh"), ProviderErrorKind.TRANSIENT, False),
        (lambda s: s.faults.error_200(endpoint="refresh"), ProviderErrorKind.TRANSIENT, False),
        (lambda s: s.faults.malformed_json(endpoint="refresh"), ProviderErrorKind.TRANSIENT, False),
        (lambda s: s.faults.malformed_json(endpoint="refresh", after=True), ProviderErrorKind.TRANSIENT, True),
        (lambda s: s.faults.hang(READ_TIMEOUT * 6, endpoint="refresh"), ProviderErrorKind.OUTCOME_UNKNOWN, False),
        (
            lambda s: s.faults.hang(READ_TIMEOUT * 6, endpoint="refresh", after=True),
            ProviderErrorKind.OUTCOME_UNKNOWN,
            True,
        ),
        (lambda s: s.faults.drop(endpoint="refresh"), ProviderErrorKind.OUTCOME_UNKNOWN, False),
        (lambda s: s.faults.drop(endpoint="refresh", after=True), ProviderErrorKind.OUTCOME_UNKNOWN, True),
    ],
    ids=[
        "500",
        "502",
        "503-retry-after",
        "429",
        "429-retry-after",
        "error-200",
        "malformed-json",
        "malformed-json-after",
        "hang",
        "hang-after",
        "drop",
        "drop-after",
    ],
)
def test_refresh_faults(
    provider: Provider,
    worksection: WorksectionSandbox,
    arm: object,
    error: ProviderErrorKind,
    rotated: bool,
) -> None:
    token = connect(provider)
    assert callable(arm)
    arm(worksection)
    with raises_kind(error):
        provider.refresh(token)
    assert worksection.calls["refresh"] == 1  # a token POST is never sent twice
    assert worksection.refreshes == (1 if rotated else 0)
    if rotated:
        # The answer was lost after the rotation: the old grant is dead, the kept token useless.
        with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):
            provider.refresh(token)
        assert api_status(worksection, token) == 401
    else:
        assert provider.refresh(token).access_token != token.access_token


def test_retry_after_reaches_the_error(provider: Provider, worksection: WorksectionSandbox) -> None:
    token = connect(provider)
    worksection.faults.rate_limit(retry_after=5, endpoint="refresh")
    with raises_kind(ProviderErrorKind.TRANSIENT) as caught:
        provider.refresh(token)
    assert caught.value.retry_after == 5


def test_missing_fields_in_the_refresh_answer(
    tmp_path: Path, worksection: WorksectionSandbox, http: HttpClient, clock: ManualClock
) -> None:
    catalog, provider = make_provider(tmp_path, worksection, http, clock)
    token = connect(provider)
    worksection.faults.omit_fields("expires_in", "refresh_token", endpoint="refresh")
    fresh = provider.refresh(token)
    assert fresh.expires_at == int(clock.now()) + catalog.get("worksection").access_token_ttl
    assert fresh.refresh_token == token.refresh_token  # kept (and, on Worksection, now dead)
    assert fresh.extra["account_url"] == "https://acme.worksection.com"


def test_missing_account_url_in_the_exchange(provider: Provider, worksection: WorksectionSandbox) -> None:
    worksection.faults.omit_fields("account_url", endpoint="token")
    token = connect(provider)
    assert "account_url" not in token.extra
    assert provider.user_info(token).extra["account_url"] == "https://acme.worksection.com"
