"""Failed provider answers -> one ``ProviderError`` of a kind, as pure functions of the response.

What every provider shares: RFC 6749 (``error``/``error_description``, including the
league/oauth2-server habits many PHP servers have), the status-only rules, and the building blocks
a provider module uses for its own dialect (``workly.py``'s ``{"message", "code"}``). A dialect
falls back to these more general rules, ending with the HTTP status, so every answer gets a kind.

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

from tokenbroker.errors import ProviderError, ProviderErrorKind
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


def integer_code(value: object) -> int | None:
    """A numeric error code (``7006``, ``7006.0``, ``"7006"``) as an int, or None; bounded, never a bool."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and abs(value) < 10**9:
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal() and len(value.strip()) <= 9:
        return int(value.strip())
    return None


def sanitize_code(value: object) -> str | None:
    """A provider's error code as a short identifier (``invalid_grant``, ``7006``), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = integer_code(value)
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


def make_error(
    kind: ProviderErrorKind,
    response: HttpResponse,
    ctx: CallContext,
    detail: str,
    *,
    code: str | None = None,
) -> ProviderError:
    """An error of ``kind`` worded as "<operation> failed: <detail>", with the answer's Retry-After."""
    return ProviderError(
        kind,
        f"{ctx.operation.label} failed: {detail}" if detail else f"{ctx.operation.label} failed",
        provider=ctx.provider,
        provider_code=code,
        status=response.status,
        retry_after=parse_retry_after(response.header("retry-after"), ctx.now),
    )


def safe_code(code: str | None, ctx: CallContext) -> str | None:
    """A code is echoed verbatim, so it must not be (or contain) a secret a provider reflected back."""
    if code is None:
        return None
    return code if sanitize(code, secrets=ctx.secrets) == code else MASK


def describe(code: str | None, description: str, ctx: CallContext) -> str:
    """``code: description`` with the description sanitised (either part may be missing)."""
    text = sanitize(description, secrets=ctx.secrets)
    if code and text:
        return f"{code}: {text}"
    return code or text


# --- the shared first pass -----------------------------------------------------------------------


def classify_transport_level(response: HttpResponse, ctx: CallContext) -> ProviderError | None:
    """What the status alone decides, before looking into the body."""
    if response.status == 429:
        return make_error(ProviderErrorKind.TRANSIENT, response, ctx, "rate limited (HTTP 429)", code=None)
    if 300 <= response.status < 400:
        return make_error(
            ProviderErrorKind.CONFIGURATION,
            response,
            ctx,
            f"redirected (HTTP {response.status}); check the endpoint URL in the catalog",
        )
    return None


def not_json_error(response: HttpResponse, ctx: CallContext) -> ProviderError:
    """An answer that is not a JSON object: a proxy's error page or an outage, so transient."""
    kind = response.content_type or "no content type"
    if not response.body.strip():
        kind = "empty body"
    return make_error(
        ProviderErrorKind.TRANSIENT, response, ctx, f"answer is not a JSON object ({kind}, HTTP {response.status})"
    )


def classify_by_status(response: HttpResponse, ctx: CallContext, detail: str) -> ProviderError:
    """The last resort when the body names nothing we know."""
    status = response.status
    if status in (408, 425, 429) or status >= 500 or status < 300:
        # 2xx here means "no access_token and no recognisable error": a broken answer, try later.
        return make_error(ProviderErrorKind.TRANSIENT, response, ctx, detail or f"unexpected answer (HTTP {status})")
    # Any other 4xx without a known error code: our request is wrong. Keep the tokens, alert.
    return make_error(ProviderErrorKind.CONFIGURATION, response, ctx, detail or f"request rejected (HTTP {status})")


# --- RFC 6749 ------------------------------------------------------------------------------------

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
        header_code = safe_code(_www_authenticate_error(response), ctx)
        if header_code is not None:
            return _from_rfc_code(header_code, "", response, ctx)
        return not_json_error(response, ctx)
    code = safe_code(sanitize_code(body.get("error")), ctx)
    description = error_description(body)
    if code is None:
        header_code = safe_code(_www_authenticate_error(response), ctx)
        if header_code is not None:
            return _from_rfc_code(header_code, description, response, ctx)
        return classify_by_status(response, ctx, describe(None, description, ctx))
    return _from_rfc_code(code, description, response, ctx)


def _from_rfc_code(code: str, description: str, response: HttpResponse, ctx: CallContext) -> ProviderError:
    detail = describe(code, description, ctx)
    lowered = code.lower()
    if lowered == "invalid_grant" and ctx.operation is Operation.PASSWORD:
        # RFC 6749 5.2: for a password grant the "grant" is the user's login: ask them again.
        return make_error(ProviderErrorKind.INVALID_CREDENTIALS, response, ctx, detail, code=code)
    if lowered in RFC_REAUTH:
        return make_error(ProviderErrorKind.REAUTHORIZATION_REQUIRED, response, ctx, detail, code=code)
    if lowered == "invalid_request" and describes_dead_grant(description):
        return make_error(ProviderErrorKind.REAUTHORIZATION_REQUIRED, response, ctx, detail, code=code)
    if lowered in RFC_CONFIG:
        return make_error(ProviderErrorKind.CONFIGURATION, response, ctx, detail, code=code)
    if lowered in RFC_TRANSIENT:
        return make_error(ProviderErrorKind.TRANSIENT, response, ctx, detail, code=code)
    failure = classify_by_status(response, ctx, detail)
    failure.provider_code = code
    return failure
