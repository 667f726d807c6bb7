"""Every documented failure shape of providers.md lands in the right ProviderError subclass."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from tokenbroker.errors import (
    ProviderErrorKind,
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

WORKLY_CODES: list[tuple[int, int, ProviderErrorKind]] = [
    (400, 7001, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
    (400, 7002, ProviderErrorKind.INVALID_CREDENTIALS),
    (401, 7003, ProviderErrorKind.CONFIGURATION),
    (403, 7004, ProviderErrorKind.ACCOUNT),
    (400, 7005, ProviderErrorKind.CONFIGURATION),
    (400, 7006, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
    (401, 7007, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
    (401, 7008, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
    (401, 7009, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
    (426, 7010, ProviderErrorKind.CONFIGURATION),
    (400, 7010, ProviderErrorKind.CONFIGURATION),
    (429, 6000, ProviderErrorKind.TRANSIENT),
    (200, 6000, ProviderErrorKind.TRANSIENT),
    (500, 5000, ProviderErrorKind.TRANSIENT),
    (400, 5000, ProviderErrorKind.TRANSIENT),
]


@pytest.mark.parametrize(("status", "code", "kind"), WORKLY_CODES)
def test_workly_codes(status: int, code: int, kind: ProviderErrorKind) -> None:
    error = classify_workly(answer(status, {"message": "Описание ошибки", "code": code}), ctx("workly"))
    assert (error).kind is kind
    assert error.provider == "workly"
    assert error.provider_code == str(code)
    assert error.status == status
    assert "Описание ошибки" in error.message


@pytest.mark.parametrize("code", [7006, 7008, 7009])
def test_workly_dead_refresh_token_codes_need_reauthorisation(code: int) -> None:
    error = classify_workly(answer(401, {"message": "token", "code": str(code)}), ctx("workly"))
    assert error.kind is ProviderErrorKind.REAUTHORIZATION_REQUIRED
    assert error.kind is not ProviderErrorKind.INVALID_CREDENTIALS


def test_workly_wrong_password_is_invalid_user_credentials() -> None:
    error = classify_workly(
        answer(400, {"message": "Неверный логин или пароль", "code": 7002}), ctx("workly", Operation.PASSWORD)
    )
    assert error.kind is ProviderErrorKind.INVALID_CREDENTIALS
    assert error.code == "invalid_credentials"


@pytest.mark.parametrize("code", [8001, 8005, 8010])
def test_workly_validation_errors_depend_on_the_operation(code: int) -> None:
    body = {"message": "Password must be at least 8 characters", "code": code}
    for operation, kind in [
        (Operation.PASSWORD, ProviderErrorKind.INVALID_CREDENTIALS),
        (Operation.PASSWORD_RESET, ProviderErrorKind.INVALID_CREDENTIALS),
        (Operation.REFRESH, ProviderErrorKind.CONFIGURATION),
    ]:
        assert classify_workly(answer(422, body), ctx("workly", operation)).kind is kind, operation


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (answer(402, {"message": "Subscription expired"}), ProviderErrorKind.ACCOUNT),
        (answer(402, "<html>Payment Required</html>"), ProviderErrorKind.ACCOUNT),
        (answer(426, "<html>Upgrade Required</html>"), ProviderErrorKind.CONFIGURATION),
        (answer(503, "<html><body>Maintenance</body></html>"), ProviderErrorKind.TRANSIENT),
        (answer(502, "<html>Bad gateway</html>"), ProviderErrorKind.TRANSIENT),
        (answer(500, {"message": "Internal error"}), ProviderErrorKind.TRANSIENT),
        (answer(200, "not json at all"), ProviderErrorKind.TRANSIENT),
        (answer(200, b""), ProviderErrorKind.TRANSIENT),
        (answer(200, {"message": "ok?"}), ProviderErrorKind.TRANSIENT),
        (answer(400, {"message": "Something new", "code": 7777}), ProviderErrorKind.CONFIGURATION),
        (
            answer(404, {"name": "Not Found", "message": "Page not found.", "code": 0, "status": 404}),
            ProviderErrorKind.CONFIGURATION,
        ),
        (
            answer(400, {"error": "invalid_grant", "error_description": "Refresh token expired"}),
            ProviderErrorKind.REAUTHORIZATION_REQUIRED,
        ),
        (answer(302, b"", {"Location": "https://workly.io/login"}), ProviderErrorKind.CONFIGURATION),
    ],
)
def test_workly_statuses_and_shapes(response: Any, kind: ProviderErrorKind) -> None:
    assert (classify_workly(response, ctx("workly"))).kind is kind


def test_workly_rate_limit_reads_retry_after_seconds_and_dates() -> None:
    error = classify_workly(answer(429, {"message": "Too many", "code": 6000}, {"Retry-After": "42"}), ctx("workly"))
    assert error.kind is ProviderErrorKind.TRANSIENT
    assert error.retry_after == 42
    dated = answer(429, "<html>slow down</html>", {"Retry-After": "Fri, 15 Jan 2027 08:00:30 GMT"})
    error = classify_workly(dated, CallContext("workly", Operation.REFRESH, now=1_799_999_990.0))
    expected = 1_800_000_030.0 - 1_799_999_990.0  # 15 Jan 2027 08:00:30 UTC is epoch 1_800_000_030
    assert error.retry_after == pytest.approx(expected)
    bare = classify_workly(answer(429, {"message": "Too many", "code": 6000}), ctx("workly"))
    assert bare.retry_after is None


# --- Worksection (league/oauth2-server behind a wrapper) -------------------------------------------------

WORKSECTION_SHAPES: list[tuple[int, Mapping[str, Any], ProviderErrorKind]] = [
    (
        200,
        {"error": "invalid_request", "errorDescription": "Cannot decrypt the refresh token"},
        ProviderErrorKind.REAUTHORIZATION_REQUIRED,
    ),
    (
        200,
        {"error": "invalid_client", "errorDescription": "Client authentication failed"},
        ProviderErrorKind.CONFIGURATION,
    ),
    (
        200,
        {"error": "invalid_request", "errorDescription": "Authorization code has been revoked"},
        ProviderErrorKind.REAUTHORIZATION_REQUIRED,
    ),
    (
        400,
        {"error": "invalid_request", "error_description": "Token has expired"},
        ProviderErrorKind.REAUTHORIZATION_REQUIRED,
    ),
    (
        401,
        {"error": "invalid_request", "hint": "Token has been revoked", "message": "The refresh token is invalid."},
        ProviderErrorKind.REAUTHORIZATION_REQUIRED,
    ),
    (
        401,
        {
            "error": "invalid_request",
            "error_description": "The refresh token is invalid.",
            "hint": "Token is not linked to client",
        },
        ProviderErrorKind.REAUTHORIZATION_REQUIRED,
    ),
    (
        400,
        {
            "error": "invalid_grant",
            "error_description": "The refresh token is invalid.",
            "hint": "Token has been revoked",
        },
        ProviderErrorKind.REAUTHORIZATION_REQUIRED,
    ),
    (400, {"error": "invalid_grant"}, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
    (401, {"error": "invalid_client", "message": "Client authentication failed"}, ProviderErrorKind.CONFIGURATION),
    (400, {"error": "unsupported_grant_type"}, ProviderErrorKind.CONFIGURATION),
    (400, {"error": "invalid_scope", "hint": "Check the `scope` parameter"}, ProviderErrorKind.CONFIGURATION),
    (400, {"error": "invalid_request", "hint": "Check the `refresh_token` parameter"}, ProviderErrorKind.CONFIGURATION),
    (400, {"error": "invalid_request"}, ProviderErrorKind.CONFIGURATION),
    (200, {"error": "server_error", "errorDescription": "Oops"}, ProviderErrorKind.TRANSIENT),
    (500, {"error": "server_error"}, ProviderErrorKind.TRANSIENT),
    (200, {}, ProviderErrorKind.TRANSIENT),
    (200, {"token_type": "bearer", "expires_in": 86400}, ProviderErrorKind.TRANSIENT),
    (200, {"status": "error", "message": "Something"}, ProviderErrorKind.TRANSIENT),
    (400, {"message": "no error key"}, ProviderErrorKind.CONFIGURATION),
]


@pytest.mark.parametrize(("status", "body", "kind"), WORKSECTION_SHAPES)
def test_worksection_shapes_including_http_200_errors(
    status: int, body: Mapping[str, Any], kind: ProviderErrorKind
) -> None:
    error = classify_worksection(answer(status, body), ctx("worksection"))
    assert (error).kind is kind
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
        (answer(200, "<html><body>Welcome</body></html>"), ProviderErrorKind.TRANSIENT),
        (answer(502, "<html>Bad Gateway</html>"), ProviderErrorKind.TRANSIENT),
        (answer(504, b""), ProviderErrorKind.TRANSIENT),
        (answer(429, "", {"Retry-After": "7"}), ProviderErrorKind.TRANSIENT),
        (answer(200, b"[1, 2]"), ProviderErrorKind.TRANSIENT),
    ],
)
def test_worksection_non_json_answers_are_transient(response: Any, kind: ProviderErrorKind) -> None:
    error = classify_worksection(response, ctx("worksection"))
    assert (error).kind is kind
    assert "<html" not in error.message


# --- generic RFC 6749 -----------------------------------------------------------------------------------------

RFC_SHAPES: list[tuple[int, Mapping[str, Any], ProviderErrorKind]] = [
    (
        400,
        {"error": "invalid_grant", "error_description": "Invalid refresh token"},
        ProviderErrorKind.REAUTHORIZATION_REQUIRED,
    ),
    (400, {"error": "invalid_grant"}, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
    (401, {"error": "invalid_client"}, ProviderErrorKind.CONFIGURATION),
    (400, {"error": "unauthorized_client"}, ProviderErrorKind.CONFIGURATION),
    (
        400,
        {"error": "invalid_request", "error_description": "Missing parameter: grant_type"},
        ProviderErrorKind.CONFIGURATION,
    ),
    (400, {"error": "access_denied"}, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
    (503, {"error": "temporarily_unavailable"}, ProviderErrorKind.TRANSIENT),
    (400, {"error": "something_new"}, ProviderErrorKind.CONFIGURATION),
    (503, {"error": "something_new"}, ProviderErrorKind.TRANSIENT),
    (404, {"detail": "Not found"}, ProviderErrorKind.CONFIGURATION),
    (408, {}, ProviderErrorKind.TRANSIENT),
    (200, {"error": "invalid_grant"}, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
]


@pytest.mark.parametrize(("status", "body", "kind"), RFC_SHAPES)
def test_rfc6749_shapes(status: int, body: Mapping[str, Any], kind: ProviderErrorKind) -> None:
    assert (classify_rfc6749(answer(status, body), ctx("acme"))).kind is kind


def test_rfc6750_www_authenticate_error_on_user_info() -> None:
    response = answer(401, b"", {"WWW-Authenticate": 'Bearer realm="x", error="invalid_token"'})
    error = classify_rfc6749(response, ctx("acme", Operation.USERINFO))
    assert error.kind is ProviderErrorKind.REAUTHORIZATION_REQUIRED
    assert error.provider_code == "invalid_token"
    assert error.message.startswith("user info failed")


def test_kinds_match_the_taxonomy() -> None:
    dead = {kind for kind in ProviderErrorKind if kind.grant_is_dead}
    assert dead == {ProviderErrorKind.REAUTHORIZATION_REQUIRED, ProviderErrorKind.INVALID_CREDENTIALS}
    # An answer lost in flight reads like any outage to a caller; only the engine tells them apart.
    assert ProviderErrorKind.OUTCOME_UNKNOWN.code == ProviderErrorKind.TRANSIENT.code == "provider_unavailable"
    assert ProviderErrorKind.of_code("provider_unavailable") is ProviderErrorKind.TRANSIENT
    assert all(ProviderErrorKind.of_code(kind.code) is not None for kind in ProviderErrorKind)
    assert ProviderErrorKind.of_code("bad_request") is None


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
        (Operation.PASSWORD, ProviderErrorKind.INVALID_CREDENTIALS),
        # ...on a refresh or a code exchange it is a dead grant.
        (Operation.REFRESH, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
        (Operation.AUTHORIZATION_CODE, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
    ],
)
def test_invalid_grant_depends_on_the_operation(operation: Operation, expected: ProviderErrorKind) -> None:
    error = classify_rfc6749(
        answer(400, {"error": "invalid_grant", "error_description": "Invalid credentials given."}),
        ctx("acme", operation),
    )
    assert error.kind is expected
