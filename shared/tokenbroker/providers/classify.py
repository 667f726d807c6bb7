"""Failed provider answers -> one ``ProviderError`` subclass, as pure functions of the response.

Three dialects: RFC 6749 (``error``/``error_description``), Worksection (RFC 6749 from
league/oauth2-server behind a wrapper: HTTP-200 errors, camelCase ``errorDescription``, dead refresh
tokens reported as ``invalid_request``) and Workly (``{"message", "code"}``). Each dialect falls back
to the next more general rule, ending with the HTTP status, so every answer gets a kind.

Messages are built by us from sanitised provider text: control characters removed, anything that
looks like a token or that we sent as a secret masked, length bounded. Request bodies are never
echoed.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from tokenbroker.errors import (
    AccountProblem,
    InvalidUserCredentials,
    ProviderConfigurationError,
    ProviderError,
    ReauthorizationRequired,
    TransientProviderError,
)
from tokenbroker.http import HttpResponse
from tokenbroker.redaction import MASK, SECRETS

MAX_MESSAGE_CHARS = 200
MAX_RETRY_AFTER_SECONDS = 86_400.0
# Explicit secrets shorter than this are not masked in free text: they would mangle ordinary words.
MIN_EXPLICIT_SECRET = 4


class Operation(enum.StrEnum):
    """What was asked of the provider; some answers mean different things per operation."""

    AUTHORIZATION_CODE = "authorization_code"
    PASSWORD = "password"  # noqa: S105 - a grant name
    REFRESH = "refresh_token"
    CLIENT_CREDENTIALS = "client_credentials"
    USERINFO = "userinfo"
    PASSWORD_RESET = "password_reset"  # noqa: S105 - an operation name

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Operation.AUTHORIZATION_CODE: "code exchange",
    Operation.PASSWORD: "password login",
    Operation.REFRESH: "token refresh",
    Operation.CLIENT_CREDENTIALS: "client credentials grant",
    Operation.USERINFO: "user info",
    Operation.PASSWORD_RESET: "password reset",
}


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who was called for what, when the answer arrived, and which secrets went out with it."""

    provider: str
    operation: Operation
    now: float
    secrets: tuple[str, ...] = ()


# --- sanitising --------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES = re.compile(r"\s+")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*)?")
# An opaque run this long with a digit in it is a token, a hash or a key: never worth showing.
_OPAQUE = re.compile(r"(?=[A-Za-z0-9_\-+/=~]*\d)[A-Za-z0-9_\-+/=~]{24,}")
_CODE_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")


def sanitize(text: object, *, secrets: Iterable[str | None] = (), limit: int = MAX_MESSAGE_CHARS) -> str:
    """Provider text made safe for a log line, an error body or a page."""
    if not isinstance(text, str):
        return ""
    cleaned = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_EXPLICIT_SECRET}, key=len, reverse=True):
        cleaned = cleaned.replace(secret, MASK)
    cleaned = SECRETS.scrub(cleaned)
    cleaned = _OPAQUE.sub(MASK, _JWT.sub(MASK, cleaned))
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned


def clean_text(text: object, *, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Provider data that is not secret (a user's name): one line, bounded, no control characters."""
    if not isinstance(text, str):
        return ""
    cleaned = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1].rstrip() + "…"


def sanitize_code(value: object) -> str | None:
    """A provider's error code as a short identifier (``invalid_grant``, ``7006``), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = workly_code({"code": value})
        return str(number) if number is not None else None
    if isinstance(value, str):
        code = _CODE_CHARS.sub("", value.strip())[:64]
        if len(code) >= 24:  # an "error" this long is not a code; never risk echoing a token
            return None
        return code or None
    return None


# --- Retry-After -------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or HTTP date), bounded; None if absent/bad."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds: float | None = float(text)
    except ValueError:
        seconds = _seconds_until_http_date(text, now)
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _seconds_until_http_date(text: str, now: float) -> float | None:
    try:
        moment = parsedate_to_datetime(text)
        if moment.tzinfo is None:  # "-0000" and bare dates: RFC 9110 dates are always GMT
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


# --- reading error bodies ------------------------------------------------------------------------

DESCRIPTION_KEYS = ("error_description", "errorDescription", "message", "hint", "error_message", "detail")


def error_description(body: Mapping[str, Any]) -> str:
    """Every human-readable field a provider may use, joined (Worksection alone uses three)."""
    parts: list[str] = []
    for key in DESCRIPTION_KEYS:
        value = body.get(key)
        if isinstance(value, str) and value.strip() and value.strip() not in parts:
            parts.append(value.strip())
    return " - ".join(parts)


def _www_authenticate_error(response: HttpResponse) -> str | None:
    header = response.header("www-authenticate") or ""
    match = re.search(r'error="?([A-Za-z0-9_]+)"?', header)
    return match.group(1) if match else None


def _make(
    cls: type[ProviderError],
    response: HttpResponse,
    ctx: CallContext,
    detail: str,
    *,
    code: str | None = None,
) -> ProviderError:
    return cls(
        f"{ctx.operation.label} failed: {detail}" if detail else f"{ctx.operation.label} failed",
        provider=ctx.provider,
        provider_code=code,
        status=response.status,
        retry_after=parse_retry_after(response.header("retry-after"), ctx.now),
    )


def _safe_code(code: str | None, ctx: CallContext) -> str | None:
    """A code is echoed verbatim, so it must not be (or contain) a secret a provider reflected back."""
    if code is None:
        return None
    return code if sanitize(code, secrets=ctx.secrets) == code else MASK


def _describe(code: str | None, description: str, ctx: CallContext) -> str:
    text = sanitize(description, secrets=ctx.secrets)
    if code and text:
        return f"{code}: {text}"
    return code or text


# --- the shared first pass -----------------------------------------------------------------------


def classify_transport_level(response: HttpResponse, ctx: CallContext) -> ProviderError | None:
    """What the status alone decides, before looking into the body."""
    if response.status == 429:
        return _make(TransientProviderError, response, ctx, "rate limited (HTTP 429)", code=None)
    if 300 <= response.status < 400:
        return _make(
            ProviderConfigurationError,
            response,
            ctx,
            f"redirected (HTTP {response.status}); check the endpoint URL in the catalog",
        )
    return None


def _not_json(response: HttpResponse, ctx: CallContext) -> ProviderError:
    kind = response.content_type or "no content type"
    if not response.body.strip():
        kind = "empty body"
    return _make(TransientProviderError, response, ctx, f"answer is not a JSON object ({kind}, HTTP {response.status})")


def classify_by_status(response: HttpResponse, ctx: CallContext, detail: str) -> ProviderError:
    """The last resort when the body names nothing we know."""
    status = response.status
    if status in (408, 425, 429) or status >= 500 or status < 300:
        # 2xx here means "no access_token and no recognisable error": a broken answer, try later.
        return _make(TransientProviderError, response, ctx, detail or f"unexpected answer (HTTP {status})")
    # Any other 4xx without a known error code: our request is wrong. Keep the tokens, alert.
    return _make(ProviderConfigurationError, response, ctx, detail or f"request rejected (HTTP {status})")


# --- RFC 6749 (generic and Worksection) -------------------------------------------------------------

RFC_REAUTH = frozenset({"invalid_grant", "access_denied", "invalid_token", "expired_token", "consent_required"})
RFC_CONFIG = frozenset(
    {
        "invalid_client",
        "unauthorized_client",
        "unsupported_grant_type",
        "unsupported_response_type",
        "invalid_scope",
        "invalid_request",
        "unsupported_token_type",
        "invalid_redirect_uri",
        "redirect_uri_mismatch",
    }
)
RFC_TRANSIENT = frozenset({"server_error", "temporarily_unavailable", "slow_down"})

# league/oauth2-server (Worksection and many PHP servers) reports a dead refresh token or code as
# invalid_request with one of these texts; a malformed request stays a configuration problem.
_DEAD_GRANT_TEXT = re.compile(
    r"cannot decrypt the (?:refresh token|authorization code|code)"
    r"|token (?:has|is) (?:expired|been revoked|revoked)"
    r"|token has been revoked"
    r"|not linked to (?:this |the )?client"
    r"|refresh token is (?:invalid|expired|revoked)"
    r"|invalid refresh token"
    r"|(?:authorization )?code (?:has expired|has been revoked|is expired|is invalid)"
    r"|code was not issued to this client",
    re.IGNORECASE,
)


def describes_dead_grant(description: str) -> bool:
    return bool(_DEAD_GRANT_TEXT.search(description))


def classify_rfc6749(response: HttpResponse, ctx: CallContext) -> ProviderError:
    """RFC 6749 section 5.2 error bodies; the status decides when the body names nothing."""
    early = classify_transport_level(response, ctx)
    if early is not None:
        return early
    body = response.json_object()
    if body is None:
        header_code = _safe_code(_www_authenticate_error(response), ctx)
        if header_code is not None:
            return _from_rfc_code(header_code, "", response, ctx)
        return _not_json(response, ctx)
    code = _safe_code(sanitize_code(body.get("error")), ctx)
    description = error_description(body)
    if code is None:
        header_code = _safe_code(_www_authenticate_error(response), ctx)
        if header_code is not None:
            return _from_rfc_code(header_code, description, response, ctx)
        return classify_by_status(response, ctx, _describe(None, description, ctx))
    return _from_rfc_code(code, description, response, ctx)


def _from_rfc_code(code: str, description: str, response: HttpResponse, ctx: CallContext) -> ProviderError:
    detail = _describe(code, description, ctx)
    lowered = code.lower()
    if lowered == "invalid_grant" and ctx.operation is Operation.PASSWORD:
        # RFC 6749 5.2: for a password grant the "grant" is the user's login: ask them again.
        return _make(InvalidUserCredentials, response, ctx, detail, code=code)
    if lowered in RFC_REAUTH:
        return _make(ReauthorizationRequired, response, ctx, detail, code=code)
    if lowered == "invalid_request" and describes_dead_grant(description):
        return _make(ReauthorizationRequired, response, ctx, detail, code=code)
    if lowered in RFC_CONFIG:
        return _make(ProviderConfigurationError, response, ctx, detail, code=code)
    if lowered in RFC_TRANSIENT:
        return _make(TransientProviderError, response, ctx, detail, code=code)
    failure = classify_by_status(response, ctx, detail)
    failure.provider_code = code
    return failure


def classify_worksection(response: HttpResponse, ctx: CallContext) -> ProviderError:
    """Worksection speaks league/oauth2-server RFC 6749, including its HTTP-200 error bodies.

    The RFC classifier already reads camelCase ``errorDescription`` and ``hint`` and maps
    ``invalid_request`` about a dead refresh token to re-authorisation; Worksection needs nothing
    more, but keeps its own name so that a future quirk has one place to go.
    """
    return classify_rfc6749(response, ctx)


# --- Workly -----------------------------------------------------------------------------------------

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
    value = body.get("code")
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and abs(value) < 10**9:
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal() and len(value.strip()) <= 9:
        return int(value.strip())
    return None


def classify_workly(response: HttpResponse, ctx: CallContext) -> ProviderError:
    """Workly's ``{"message", "code"}`` errors, then RFC 6749 bodies, then the status."""
    body = response.json_object()
    code = workly_code(body) if body is not None else None
    code_text = _safe_code(str(code), ctx) if code is not None else None
    detail = _describe(code_text, error_description(body) if body is not None else "", ctx)
    by_status = _workly_status_rule(response.status, code)
    if by_status is not None:
        kind, fallback = by_status
        return _make(kind, response, ctx, detail or fallback, code=code_text)
    if body is None:
        return classify_transport_level(response, ctx) or _not_json(response, ctx)
    kind_for_code = _workly_kind(code, ctx.operation) if code is not None else None
    if kind_for_code is not None:
        return _make(kind_for_code, response, ctx, detail, code=code_text)
    if sanitize_code(body.get("error")) is not None:
        return classify_rfc6749(response, ctx)
    failure = classify_transport_level(response, ctx) or classify_by_status(response, ctx, detail)
    failure.provider_code = code_text
    return failure


def _workly_status_rule(status: int, code: int | None) -> tuple[type[ProviderError], str] | None:
    """Statuses that decide on their own, whatever (or whether) the body says."""
    if status == 429 or code == 6000:
        return TransientProviderError, "rate limited"
    if status == 426 or code == 7010:
        return ProviderConfigurationError, "client update required (HTTP 426): replace the app credentials"
    if status == 402:
        return AccountProblem, "payment required (HTTP 402)"
    return None


_WORKLY_KINDS: tuple[tuple[frozenset[int], type[ProviderError]], ...] = (
    (WORKLY_BAD_LOGIN, InvalidUserCredentials),
    (WORKLY_REAUTH, ReauthorizationRequired),
    (WORKLY_CONFIG, ProviderConfigurationError),
    (WORKLY_ACCOUNT, AccountProblem),
    (WORKLY_TRANSIENT, TransientProviderError),
)


def _workly_kind(code: int, operation: Operation) -> type[ProviderError] | None:
    for codes, kind in _WORKLY_KINDS:
        if code in codes:
            return kind
    if code in WORKLY_VALIDATION:
        # During a login or a reset the only inputs are the user's: tell them. Otherwise we sent junk.
        if operation in (Operation.PASSWORD, Operation.PASSWORD_RESET):
            return InvalidUserCredentials
        return ProviderConfigurationError
    return None
