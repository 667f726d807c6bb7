"""Workly: password grant and refresh on one URL, ``{"message", "code"}`` errors, password reset.

Everything else is the catalog entry (base URL, comma-separated scopes, 30/60-day lifetimes, the
documented client id). Workly's documented app secret is configuration, so without one configured
every token call fails early with a ``configuration`` error. Its error codes are in
docs/providers.md ("Workly"); their meaning for the refresher is the tables below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from tokenbroker.errors import ProviderError, ProviderErrorKind
from tokenbroker.http import HttpResponse
from tokenbroker.providers.classify import (
    CallContext,
    Operation,
    classify_by_status,
    classify_rfc6749,
    classify_transport_level,
    describe,
    error_description,
    integer_code,
    make_error,
    not_json_error,
    safe_code,
    sanitize_code,
)
from tokenbroker.providers.kinds import register_kind
from tokenbroker.providers.oauth2 import OAuth2Provider


@register_kind("workly")
class WorklyProvider(OAuth2Provider):
    requires_client_secret: ClassVar[bool] = True

    def classify(self, response: HttpResponse, ctx: CallContext) -> ProviderError:
        return classify_workly(response, ctx)

    def is_error_body(self, body: Mapping[str, Any]) -> bool:
        # A Workly error is {"message", "code"}; a success may carry a message but no error code.
        return super().is_error_body(body) or workly_code(body) not in (None, 0, 200)


# --- errors -----------------------------------------------------------------------------------------

WORKLY_REAUTH = frozenset(
    {
        7001,  # authorisation error: the grant itself was refused; retrying the same grant cannot help
        7006,  # refresh token expired
        7007,  # not authenticated: the presented refresh token is not recognised
        7008,  # invalid token
        7009,  # token expired
    }
)
WORKLY_BAD_LOGIN = frozenset({7002})  # wrong login or password
WORKLY_CONFIG = frozenset({7003, 7005, 7010})  # invalid client, invalid grant_type, client update required
WORKLY_ACCOUNT = frozenset({7004})  # access denied: authenticated, but the account may not use the API
WORKLY_TRANSIENT = frozenset({5000, 6000})  # service error, too many requests
WORKLY_VALIDATION = range(8001, 8011)


def workly_code(body: Mapping[str, Any]) -> int | None:
    """The numeric ``code`` of a Workly answer, if any."""
    return integer_code(body.get("code"))


def classify_workly(response: HttpResponse, ctx: CallContext) -> ProviderError:
    """Workly's ``{"message", "code"}`` errors, then RFC 6749 bodies, then the status."""
    body = response.json_object()
    code = workly_code(body) if body is not None else None
    code_text = safe_code(str(code), ctx) if code is not None else None
    detail = describe(code_text, error_description(body) if body is not None else "", ctx)
    by_status = _workly_status_rule(response.status, code)
    if by_status is not None:
        kind, fallback = by_status
        return make_error(kind, response, ctx, detail or fallback, code=code_text)
    if body is None:
        return classify_transport_level(response, ctx) or not_json_error(response, ctx)
    kind_for_code = _workly_kind(code, ctx.operation) if code is not None else None
    if kind_for_code is not None:
        return make_error(kind_for_code, response, ctx, detail, code=code_text)
    if sanitize_code(body.get("error")) is not None:
        return classify_rfc6749(response, ctx)
    failure = classify_transport_level(response, ctx) or classify_by_status(response, ctx, detail)
    failure.provider_code = code_text
    return failure


def _workly_status_rule(status: int, code: int | None) -> tuple[ProviderErrorKind, str] | None:
    """Statuses that decide on their own, whatever (or whether) the body says."""
    if status == 429 or code == 6000:
        return ProviderErrorKind.TRANSIENT, "rate limited"
    if status == 426 or code == 7010:
        return ProviderErrorKind.CONFIGURATION, "client update required (HTTP 426): replace the app credentials"
    if status == 402:
        return ProviderErrorKind.ACCOUNT, "payment required (HTTP 402)"
    return None


_WORKLY_KINDS: tuple[tuple[frozenset[int], ProviderErrorKind], ...] = (
    (WORKLY_BAD_LOGIN, ProviderErrorKind.INVALID_CREDENTIALS),
    (WORKLY_REAUTH, ProviderErrorKind.REAUTHORIZATION_REQUIRED),
    (WORKLY_CONFIG, ProviderErrorKind.CONFIGURATION),
    (WORKLY_ACCOUNT, ProviderErrorKind.ACCOUNT),
    (WORKLY_TRANSIENT, ProviderErrorKind.TRANSIENT),
)


def _workly_kind(code: int, operation: Operation) -> ProviderErrorKind | None:
    for codes, kind in _WORKLY_KINDS:
        if code in codes:
            return kind
    if code in WORKLY_VALIDATION:
        # During a login or a reset the only inputs are the user's: tell them. Otherwise we sent junk.
        if operation in (Operation.PASSWORD, Operation.PASSWORD_RESET):
            return ProviderErrorKind.INVALID_CREDENTIALS
        return ProviderErrorKind.CONFIGURATION
    return None
