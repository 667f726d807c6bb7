"""Every documented failure shape of providers.md lands in the right ProviderError subclass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from tokenbroker.errors import (
    AccountProblem,
    ErrorKind,
    InvalidUserCredentials,
    OutcomeUnknown,
    ProviderConfigurationError,
    ProviderError,
    ReauthorizationRequired,
    TransientProviderError,
)
from tokenbroker.providers.classify import (
    CallContext,
    Operation,
    classify_rfc6749,
)
from tokenbroker.providers.workly import classify_workly
from tokenbroker.providers.worksection import classify_worksection

from tests.unit.providers.scripted import answer

NOW = 1_800_000_000.0


def ctx(provider: str, operation: Operation = Operation.REFRESH, secrets: tuple[str, ...] = ()) -> CallContext:
    return CallContext(provider=provider, operation=operation, now=NOW, secrets=secrets)


# --- Workly ---------------------------------------------------------------------------------------------

WORKLY_CODES: list[tuple[int, int, type[ProviderError]]] = [
    (400, 7001, ReauthorizationRequired),
    (400, 7002, InvalidUserCredentials),
    (401, 7003, ProviderConfigurationError),
    (403, 7004, AccountProblem),
    (400, 7005, ProviderConfigurationError),
    (400, 7006, ReauthorizationRequired),
    (401, 7007, ReauthorizationRequired),
    (401, 7008, ReauthorizationRequired),
    (401, 7009, ReauthorizationRequired),
    (426, 7010, ProviderConfigurationError),
    (400, 7010, ProviderConfigurationError),
    (429, 6000, TransientProviderError),
    (200, 6000, TransientProviderError),
    (500, 5000, TransientProviderError),
    (400, 5000, TransientProviderError),
]


@pytest.mark.parametrize(("status", "code", "kind"), WORKLY_CODES)
def test_workly_codes(status: int, code: int, kind: type[ProviderError]) -> None:
    error = classify_workly(answer(status, {"message": "Описание ошибки", "code": code}), ctx("workly"))
    assert type(error) is kind
    assert error.provider == "workly"
    assert error.provider_code == str(code)
    assert error.status == status
    assert "Описание ошибки" in error.message


@pytest.mark.parametrize("code", [7006, 7008, 7009])
def test_workly_dead_refresh_token_codes_need_reauthorisation(code: int) -> None:
    error = classify_workly(answer(401, {"message": "token", "code": str(code)}), ctx("workly"))
    assert isinstance(error, ReauthorizationRequired)
    assert not isinstance(error, InvalidUserCredentials)


def test_workly_wrong_password_is_invalid_user_credentials() -> None:
    error = classify_workly(
        answer(400, {"message": "Неверный логин или пароль", "code": 7002}), ctx("workly", Operation.PASSWORD)
    )
    assert isinstance(error, InvalidUserCredentials)
    assert error.code == "invalid_credentials"


@pytest.mark.parametrize("code", [8001, 8005, 8010])
def test_workly_validation_errors_depend_on_the_operation(code: int) -> None:
    body = {"message": "Password must be at least 8 characters", "code": code}
    assert isinstance(classify_workly(answer(422, body), ctx("workly", Operation.PASSWORD)), InvalidUserCredentials)
    assert isinstance(
        classify_workly(answer(422, body), ctx("workly", Operation.PASSWORD_RESET)), InvalidUserCredentials
    )
    assert type(classify_workly(answer(422, body), ctx("workly", Operation.REFRESH))) is ProviderConfigurationError


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (answer(402, {"message": "Subscription expired"}), AccountProblem),
        (answer(402, "<html>Payment Required</html>"), AccountProblem),
        (answer(426, "<html>Upgrade Required</html>"), ProviderConfigurationError),
        (answer(503, "<html><body>Maintenance</body></html>"), TransientProviderError),
        (answer(502, "<html>Bad gateway</html>"), TransientProviderError),
        (answer(500, {"message": "Internal error"}), TransientProviderError),
        (answer(200, "not json at all"), TransientProviderError),
        (answer(200, b""), TransientProviderError),
        (answer(200, {"message": "ok?"}), TransientProviderError),
        (answer(400, {"message": "Something new", "code": 7777}), ProviderConfigurationError),
        (
            answer(404, {"name": "Not Found", "message": "Page not found.", "code": 0, "status": 404}),
            ProviderConfigurationError,
        ),
        (
            answer(400, {"error": "invalid_grant", "error_description": "Refresh token expired"}),
            ReauthorizationRequired,
        ),
        (answer(302, b"", {"Location": "https://workly.io/login"}), ProviderConfigurationError),
    ],
)
def test_workly_statuses_and_shapes(response: Any, kind: type[ProviderError]) -> None:
    assert type(classify_workly(response, ctx("workly"))) is kind


def test_workly_rate_limit_reads_retry_after_seconds_and_dates() -> None:
    error = classify_workly(answer(429, {"message": "Too many", "code": 6000}, {"Retry-After": "42"}), ctx("workly"))
    assert isinstance(error, TransientProviderError)
    assert error.retry_after == 42
    dated = answer(429, "<html>slow down</html>", {"Retry-After": "Fri, 15 Jan 2027 08:00:30 GMT"})
    error = classify_workly(dated, CallContext("workly", Operation.REFRESH, now=1_799_999_990.0))
    expected = 1_800_000_030.0 - 1_799_999_990.0  # 15 Jan 2027 08:00:30 UTC is epoch 1_800_000_030
    assert error.retry_after == pytest.approx(expected)
    bare = classify_workly(answer(429, {"message": "Too many", "code": 6000}), ctx("workly"))
    assert bare.retry_after is None


# --- Worksection (league/oauth2-server behind a wrapper) -------------------------------------------------

WORKSECTION_SHAPES: list[tuple[int, Mapping[str, Any], type[ProviderError]]] = [
    (
        200,
        {"error": "invalid_request", "errorDescription": "Cannot decrypt the refresh token"},
        ReauthorizationRequired,
    ),
    (200, {"error": "invalid_client", "errorDescription": "Client authentication failed"}, ProviderConfigurationError),
    (
        200,
        {"error": "invalid_request", "errorDescription": "Authorization code has been revoked"},
        ReauthorizationRequired,
    ),
    (400, {"error": "invalid_request", "error_description": "Token has expired"}, ReauthorizationRequired),
    (
        401,
        {"error": "invalid_request", "hint": "Token has been revoked", "message": "The refresh token is invalid."},
        ReauthorizationRequired,
    ),
    (
        401,
        {
            "error": "invalid_request",
            "error_description": "The refresh token is invalid.",
            "hint": "Token is not linked to client",
        },
        ReauthorizationRequired,
    ),
    (
        400,
        {
            "error": "invalid_grant",
            "error_description": "The refresh token is invalid.",
            "hint": "Token has been revoked",
        },
        ReauthorizationRequired,
    ),
    (400, {"error": "invalid_grant"}, ReauthorizationRequired),
    (401, {"error": "invalid_client", "message": "Client authentication failed"}, ProviderConfigurationError),
    (400, {"error": "unsupported_grant_type"}, ProviderConfigurationError),
    (400, {"error": "invalid_scope", "hint": "Check the `scope` parameter"}, ProviderConfigurationError),
    (400, {"error": "invalid_request", "hint": "Check the `refresh_token` parameter"}, ProviderConfigurationError),
    (400, {"error": "invalid_request"}, ProviderConfigurationError),
    (200, {"error": "server_error", "errorDescription": "Oops"}, TransientProviderError),
    (500, {"error": "server_error"}, TransientProviderError),
    (200, {}, TransientProviderError),
    (200, {"token_type": "bearer", "expires_in": 86400}, TransientProviderError),
    (200, {"status": "error", "message": "Something"}, TransientProviderError),
    (400, {"message": "no error key"}, ProviderConfigurationError),
]


@pytest.mark.parametrize(("status", "body", "kind"), WORKSECTION_SHAPES)
def test_worksection_shapes_including_http_200_errors(
    status: int, body: Mapping[str, Any], kind: type[ProviderError]
) -> None:
    error = classify_worksection(answer(status, body), ctx("worksection"))
    assert type(error) is kind
    assert error.status == status
    if "error" in body:
        assert error.provider_code == body["error"]


def test_worksection_reads_camel_case_description_and_hint() -> None:
    body = {"error": "invalid_request", "errorDescription": "Cannot decrypt the refresh token", "hint": "check it"}
    error = classify_worksection(answer(200, body), ctx("worksection"))
    assert "Cannot decrypt the refresh token" in error.message
    assert "check it" in error.message
    assert str(error).startswith("worksection: token refresh failed: invalid_request: ")


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (answer(200, "<html><body>Welcome</body></html>"), TransientProviderError),
        (answer(502, "<html>Bad Gateway</html>"), TransientProviderError),
        (answer(504, b""), TransientProviderError),
        (answer(429, "", {"Retry-After": "7"}), TransientProviderError),
        (answer(200, b"[1, 2]"), TransientProviderError),
    ],
)
def test_worksection_non_json_answers_are_transient(response: Any, kind: type[ProviderError]) -> None:
    error = classify_worksection(response, ctx("worksection"))
    assert type(error) is kind
    assert "<html" not in error.message


# --- generic RFC 6749 -----------------------------------------------------------------------------------------

RFC_SHAPES: list[tuple[int, Mapping[str, Any], type[ProviderError]]] = [
    (400, {"error": "invalid_grant", "error_description": "Invalid refresh token"}, ReauthorizationRequired),
    (400, {"error": "invalid_grant"}, ReauthorizationRequired),
    (401, {"error": "invalid_client"}, ProviderConfigurationError),
    (400, {"error": "unauthorized_client"}, ProviderConfigurationError),
    (
        400,
        {"error": "invalid_request", "error_description": "Missing parameter: grant_type"},
        ProviderConfigurationError,
    ),
    (400, {"error": "access_denied"}, ReauthorizationRequired),
    (503, {"error": "temporarily_unavailable"}, TransientProviderError),
    (400, {"error": "something_new"}, ProviderConfigurationError),
    (503, {"error": "something_new"}, TransientProviderError),
    (404, {"detail": "Not found"}, ProviderConfigurationError),
    (408, {}, TransientProviderError),
    (200, {"error": "invalid_grant"}, ReauthorizationRequired),
]


@pytest.mark.parametrize(("status", "body", "kind"), RFC_SHAPES)
def test_rfc6749_shapes(status: int, body: Mapping[str, Any], kind: type[ProviderError]) -> None:
    assert type(classify_rfc6749(answer(status, body), ctx("acme"))) is kind


def test_rfc6750_www_authenticate_error_on_user_info() -> None:
    response = answer(401, b"", {"WWW-Authenticate": 'Bearer realm="x", error="invalid_token"'})
    error = classify_rfc6749(response, ctx("acme", Operation.USERINFO))
    assert isinstance(error, ReauthorizationRequired)
    assert error.provider_code == "invalid_token"
    assert error.message.startswith("user info failed")


def test_kinds_match_the_taxonomy() -> None:
    assert InvalidUserCredentials.kind is ErrorKind.REAUTHORIZATION_REQUIRED
    assert OutcomeUnknown.kind is ErrorKind.OUTCOME_UNKNOWN
    assert issubclass(OutcomeUnknown, TransientProviderError)


# --- nothing secret in a message ------------------------------------------------------------------------------


def test_a_provider_echoing_our_refresh_token_is_masked() -> None:
    refresh = "def50200" + "ab12" * 30
    body = {"error": "invalid_request", "errorDescription": f"Token {refresh} has been revoked"}
    error = classify_worksection(answer(200, body), ctx("worksection", secrets=(refresh, "sec-ret-value")))
    assert refresh not in str(error) and refresh[:30] not in str(error)
    assert "***" in error.message


@pytest.mark.parametrize(
    "leak",
    [
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",  # a JWT we never saw
        "0123456789abcdef0123456789abcdef01234567",  # a 40-hex Workly token we never saw
    ],
)
def test_token_looking_strings_are_masked_even_when_unknown(leak: str) -> None:
    error = classify_workly(answer(401, {"message": f"bad token {leak} given", "code": 7008}), ctx("workly"))
    assert leak not in str(error)
    assert "bad token" in error.message


def test_messages_are_bounded_and_single_line() -> None:
    error = classify_rfc6749(
        answer(400, {"error": "invalid_grant", "error_description": "x\n\r\x00y " * 500}), ctx("acme")
    )
    assert len(error.message) < 260
    assert "\n" not in error.message and "\x00" not in error.message


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        # RFC 6749 5.2: on a password grant, invalid_grant is the user's wrong login...
        (Operation.PASSWORD, InvalidUserCredentials),
        # ...on a refresh or a code exchange it is a dead grant.
        (Operation.REFRESH, ReauthorizationRequired),
        (Operation.AUTHORIZATION_CODE, ReauthorizationRequired),
    ],
)
def test_invalid_grant_depends_on_the_operation(operation: Operation, expected: type[ProviderError]) -> None:
    error = classify_rfc6749(
        answer(400, {"error": "invalid_grant", "error_description": "Invalid credentials given."}),
        ctx("acme", operation),
    )
    assert type(error) is expected
