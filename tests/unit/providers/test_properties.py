"""Property tests: any status, any bytes, any JSON -> a TokenSet or a ProviderError, never a crash or a leak."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tokenbroker.clock import ManualClock
from tokenbroker.errors import ProviderError
from tokenbroker.http import HttpClient, HttpResponse
from tokenbroker.providers import AppCredentials, Catalog, CatalogEntry, OAuth2Provider, build_provider
from tokenbroker.providers.classify import (
    MAX_RETRY_AFTER_SECONDS,
    CallContext,
    Operation,
    parse_retry_after,
    sanitize,
)
from tokenbroker.providers.parsing import split_scopes
from tokenbroker.providers.worksection import validate_account_url
from tokenbroker.tokens import TokenSet, UserInfo

NOW = 1_800_000_000.0
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CATALOG = Catalog.load(environ={})
HTTP = HttpClient()  # never used: the tests feed answers to the pure parsing path
CREDENTIALS = AppCredentials("client-id", "client-secret-for-properties")
PROVIDERS: list[OAuth2Provider] = [
    build_provider(CATALOG.get("workly"), CREDENTIALS, http=HTTP, clock=ManualClock(NOW)),  # type: ignore[list-item]
    build_provider(CATALOG.get("worksection"), CREDENTIALS, http=HTTP, clock=ManualClock(NOW)),  # type: ignore[list-item]
    build_provider(
        CatalogEntry(name="acme", authorize_url="https://a.test/auth", token_url="https://a.test/token"),
        CREDENTIALS,
        http=HTTP,
        clock=ManualClock(NOW),
    ),  # type: ignore[list-item]
]
TOKEN_OPERATIONS = [Operation.AUTHORIZATION_CODE, Operation.PASSWORD, Operation.REFRESH, Operation.CLIENT_CREDENTIALS]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
INTERESTING_KEYS = (
    "access_token",
    "refresh_token",
    "expires_in",
    "token_type",
    "scope",
    "error",
    "error_description",
    "errorDescription",
    "hint",
    "message",
    "code",
    "account_url",
    "id",
    "email",
    "first_name",
    "status",
    "data",
)
interesting_values = (
    json_values
    | st.sampled_from(
        [
            "invalid_grant",
            "invalid_request",
            "invalid_client",
            "Cannot decrypt the refresh token",
            "bearer",
            "https://acme.worksection.com",
            "https://evil.com",
            "7006",
            "7002",
        ]
    )
    | st.sampled_from(
        [7001, 7002, 7003, 7004, 7005, 7006, 7007, 7008, 7009, 7010, 6000, 5000, 8001, 86400, -1, 0, 10**400]
    )
)
# TokenSet remembers its tokens process-wide as secrets to mask in every log line. Generated token
# values carry a prefix that no other test's text contains, so they cannot mask anything elsewhere.
token_values = (
    st.text(max_size=40).map(lambda text: "tok~" + text)
    | st.sampled_from(["", "   "])
    | json_values.filter(lambda value: not isinstance(value, str))
)


def value_for(key: str) -> st.SearchStrategy[Any]:
    return token_values if key in ("access_token", "refresh_token") else interesting_values


token_bodies = st.fixed_dictionaries(
    {"access_token": token_values},
    optional={
        key: value_for(key)
        for key in ("refresh_token", "expires_in", "token_type", "scope", "account_url", "error", "code", "message")
    },
)
bodies = st.one_of(
    token_bodies.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=300),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({}, optional={key: value_for(key) for key in INTERESTING_KEYS}).map(
        lambda value: json.dumps(value).encode()
    ),
    st.just(b"<html><body>502 Bad Gateway</body></html>"),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "content-type": st.sampled_from(["application/json", "text/html", "text/plain", ""]),
        "retry-after": st.text(max_size=40) | st.integers(-100, 10**9).map(str),
        "www-authenticate": st.text(max_size=60) | st.just('Bearer error="invalid_token"'),
    },
)
statuses = st.integers(100, 599) | st.sampled_from([200, 200, 400, 401])
responses = st.builds(HttpResponse, status=statuses, headers=headers, body=bodies)


def check_error(error: ProviderError, provider: OAuth2Provider) -> None:
    assert isinstance(error, ProviderError)
    assert error.provider == provider.name
    assert isinstance(error.message, str) and len(error.message) <= 320
    assert "\n" not in error.message
    assert error.retry_after is None or 0 <= error.retry_after <= MAX_RETRY_AFTER_SECONDS
    assert CREDENTIALS.client_secret not in str(error)


def check_token(token: TokenSet) -> None:
    assert token.access_token.strip()
    assert token.obtained_at == int(NOW)
    assert token.expires_at > token.obtained_at  # never "already expired", never "never expires"
    assert all(scope and "," not in scope and not any(ch.isspace() for ch in scope) for scope in token.scopes)
    assert set(token.extra) <= {"account_url"}
    if "account_url" in token.extra:
        assert token.extra["account_url"].startswith("https://")
        assert token.extra["account_url"].endswith(".worksection.com")


@SETTINGS
@given(response=responses, provider=st.sampled_from(PROVIDERS), operation=st.sampled_from(TOKEN_OPERATIONS))
def test_token_answers_classify_or_parse(
    response: HttpResponse, provider: OAuth2Provider, operation: Operation
) -> None:
    ctx = CallContext(provider.name, operation, NOW, secrets=(CREDENTIALS.client_secret,))
    try:
        token = provider.token_from_response(response, ctx)
    except ProviderError as error:
        event(type(error).__name__)
        check_error(error, provider)
    else:
        event("TokenSet")
        assert 200 <= response.status < 300
        check_token(token)


@SETTINGS
@given(response=responses, provider=st.sampled_from(PROVIDERS))
def test_user_info_answers_classify_or_parse(response: HttpResponse, provider: OAuth2Provider) -> None:
    ctx = CallContext(provider.name, Operation.USERINFO, NOW, secrets=(CREDENTIALS.client_secret,))
    try:
        info = provider.user_info_from_response(response, ctx)
    except ProviderError as error:
        check_error(error, provider)
    else:
        assert isinstance(info, UserInfo)
        assert all(isinstance(v, str) for v in info.to_metadata().values())


secret_text = st.text(alphabet="abcdefABCDEF0123456789-_.~+/", min_size=8, max_size=80)


@SETTINGS
@given(
    secret=secret_text,
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    key=st.sampled_from(["error", "error_description", "errorDescription", "hint", "message", "code"]),
    status=st.sampled_from([200, 400, 401, 403, 426, 429, 500, 503]),
    provider=st.sampled_from(PROVIDERS),
)
def test_a_secret_reflected_by_the_provider_never_reaches_a_message(  # noqa: PLR0917 - hypothesis arguments
    secret: str, before: str, after: str, key: str, status: int, provider: OAuth2Provider
) -> None:
    body: dict[str, Any] = {"error": "invalid_request", key: before + secret + after}
    response = HttpResponse(status, {"content-type": "application/json"}, json.dumps(body).encode())
    ctx = CallContext(provider.name, Operation.REFRESH, NOW, secrets=(secret, CREDENTIALS.client_secret))
    try:
        provider.token_from_response(response, ctx)
    except ProviderError as error:
        assert secret not in str(error)
        assert secret not in (error.provider_code or "")
    else:
        raise AssertionError("an error body became a token")


@SETTINGS
@given(text=st.text(max_size=300), secret=secret_text)
def test_sanitize_never_returns_an_explicit_secret(text: str, secret: str) -> None:
    cleaned = sanitize(text[:150] + secret + text[150:], secrets=(secret,))
    assert secret not in cleaned
    assert len(cleaned) <= 200


@SETTINGS
@given(value=st.text(max_size=60))
def test_retry_after_is_bounded_or_absent(value: str) -> None:
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or 0 <= seconds <= MAX_RETRY_AFTER_SECONDS


@SETTINGS
@given(value=json_values)
def test_scopes_never_contain_separators(value: object) -> None:
    for scope in split_scopes(value):
        assert scope and "," not in scope and not any(ch.isspace() for ch in scope)


@SETTINGS
@given(value=st.text(max_size=80) | st.from_regex(r"https?://[a-z0-9.\-@:\[\]]{0,40}(/.{0,5})?", fullmatch=True))
def test_only_https_worksection_subdomains_pass(value: str) -> None:
    accepted = validate_account_url(value, ("worksection.com",))
    if accepted is not None:
        assert accepted.startswith("https://")
        assert accepted.endswith(".worksection.com")
        assert "@" not in accepted


@SETTINGS
@given(
    body=token_bodies,
    status=st.integers(200, 299),
    provider=st.sampled_from(PROVIDERS),
    operation=st.sampled_from(TOKEN_OPERATIONS),
    content_type=st.sampled_from(["application/json", "text/plain", "text/html"]),
)
def test_a_2xx_answer_with_an_access_token_is_always_accepted(
    body: dict[str, Any], status: int, provider: OAuth2Provider, operation: Operation, content_type: str
) -> None:
    """After a rotating refresh the old grant may be dead: odd fields must never cost the new tokens."""
    response = HttpResponse(status, {"content-type": content_type}, json.dumps(body).encode())
    ctx = CallContext(provider.name, operation, NOW)
    has_token = isinstance(body["access_token"], str) and body["access_token"].strip()
    try:
        token = provider.token_from_response(response, ctx)
    except ProviderError as error:
        assert not has_token, f"rejected a token answer: {error}"
        check_error(error, provider)
    else:
        assert has_token
        check_token(token)
        refresh = body.get("refresh_token")
        if isinstance(refresh, str) and refresh.strip():
            assert token.refresh_token == refresh.strip()
