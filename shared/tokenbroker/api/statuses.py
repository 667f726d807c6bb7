"""The one place an error becomes an HTTP status: the IAM API, the connect pages and their logs.

Errors carry a ``code`` (their name on the wire) and, for a provider's, a ``kind``; what status
that is belongs to the edge that speaks HTTP, so it is decided here and nowhere else. An error
code missing from the table is a 500, and a test walks every error class to keep that from
happening by accident.
"""

from __future__ import annotations

from tokenbroker.errors import ProviderError, ProviderErrorKind, TokenBrokerError

UNAVAILABLE = 503  # nothing changed; the answer carries Retry-After

STATUS_BY_CODE: dict[str, int] = {
    # the caller's request
    "bad_request": 400,
    "unsupported": 400,
    "forbidden": 403,
    "unknown_provider": 404,
    "not_found": 404,
    # the connection's state
    "needs_reauth": 409,
    "pending_confirmation": 409,
    # confirm mode
    "end_user_mismatch": 403,
    "connect_session_not_completed": 409,
    "connect_session_expired": 410,
    # the connect pages
    "invalid_state": 400,
    "browser_mismatch": 400,
    "access_denied": 403,
    "connect_session_not_found": 404,
    "connect_link_used_up": 429,
    # try again
    "refresh_in_progress": UNAVAILABLE,
    "service_unavailable": UNAVAILABLE,
    "lease_lost": UNAVAILABLE,
    # ours to fix
    "internal_error": 500,
    "configuration_error": 500,
    "catalog_invalid": 500,
}

# A provider's failure is a bad gateway unless waiting helps; never the caller's 4xx.
STATUS_BY_PROVIDER_KIND: dict[ProviderErrorKind, int] = {
    ProviderErrorKind.REAUTHORIZATION_REQUIRED: 502,
    ProviderErrorKind.INVALID_CREDENTIALS: 502,
    ProviderErrorKind.CONFIGURATION: 502,
    ProviderErrorKind.ACCOUNT: 502,
    ProviderErrorKind.REFUSED: 502,
    ProviderErrorKind.TRANSIENT: UNAVAILABLE,
    ProviderErrorKind.OUTCOME_UNKNOWN: UNAVAILABLE,
}


def http_status(error: TokenBrokerError) -> int:
    if isinstance(error, ProviderError):
        return STATUS_BY_PROVIDER_KIND[error.kind]
    return STATUS_BY_CODE.get(error.code, 500)
