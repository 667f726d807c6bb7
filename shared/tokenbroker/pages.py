"""The few HTML pages an end user sees while connecting an account, and their security headers.

A tiny renderer instead of a template engine: ``string.Template`` files in ``templates/`` and
every substituted value HTML-escaped unless it is a ``Safe`` fragment built here from escaped
parts. Pages load nothing (no scripts, images or fonts), so the Content-Security-Policy can be
``default-src 'none'`` with the one inline style pinned by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from string import Template

from tokenbroker.connect import AuthorizationDenied, ForbiddenRequest, InvalidState, SessionNotFound
from tokenbroker.errors import (
    AccountProblem,
    InvalidInput,
    ProviderConfigurationError,
    ProviderError,
    TokenBrokerError,
    TransientProviderError,
    UnknownProvider,
    UnsupportedOperation,
)

STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;margin:0;padding:2rem 1rem;color:#1b1b1b;background:#f6f6f6}"
    "main{max-width:32rem;margin:auto;background:#fff;padding:1.5rem 2rem;border-radius:8px;"
    "box-shadow:0 1px 3px rgba(0,0,0,.15)}"
    "h1{font-size:1.4rem;margin-top:0}label{display:block;font-weight:600}"
    ".check label{display:inline;font-weight:400}"
    "input[type=email],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font:inherit;"
    "border:1px solid #6b6b6b;border-radius:4px}"
    "input:focus,button:focus{outline:3px solid #1a5fb4;outline-offset:2px}"
    "button{font:inherit;padding:.5rem 1rem;border-radius:4px;border:1px solid #1a5fb4;background:#1a5fb4;color:#fff}"
    "button.link{background:none;border:none;color:#1a5fb4;text-decoration:underline;padding:.5rem}"
    ".help{font-size:.9rem;color:#4a4a4a}.error{color:#a51d2d;font-weight:600}"
    ".notice{color:#26662f}.actions{display:flex;gap:1rem;align-items:center}"
)
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

# Headers on every public response, pages and redirects alike. no-referrer keeps a callback URL
# (which carries the authorization code) out of any Referer; no-store keeps pages out of caches.
BASE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


class Safe(str):
    """HTML that was assembled from escaped parts and must not be escaped again."""


@dataclass(frozen=True, slots=True)
class HtmlResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


def content_security_policy(form_targets: tuple[str, ...] = ()) -> str:
    # form-action also governs where a form post may be redirected (Chrome enforces it on
    # redirects), so the login page lists the return_to origin next to 'self'.
    form_action = " ".join(("'self'", *form_targets))
    return (
        f"default-src 'none'; style-src '{STYLE_HASH}'; form-action {form_action}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


@cache
def _template(name: str) -> Template:
    text = resources.files("tokenbroker").joinpath("templates", name).read_text(encoding="utf-8")
    return Template(text)


def render(name: str, **values: str) -> Safe:
    """Fill ``templates/<name>``; plain strings are escaped, ``Safe`` ones are inserted as they are."""
    escaped = {
        key: value if isinstance(value, Safe) else html.escape(value, quote=True) for key, value in values.items()
    }
    return Safe(_template(name).substitute(escaped))


def page(status: int, title: str, content: Safe, *, form_targets: tuple[str, ...] = ()) -> HtmlResponse:
    body = render("layout.html", title=title, style=Safe(STYLE), content=content)
    headers = {
        **BASE_HEADERS,
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": content_security_policy(form_targets),
    }
    return HtmlResponse(status=status, headers=headers, body=body)


def redirect(location: str) -> HtmlResponse:
    """A 302 with no body worth reading; Location is a validated URL built by the connect service."""
    headers = {**BASE_HEADERS, "Location": location, "Content-Security-Policy": content_security_policy()}
    return HtmlResponse(status=302, headers=headers, body="")


def display_name(provider: str) -> str:
    return provider.replace("_", " ").replace("-", " ").title()


def login_page(
    *,
    provider: str,
    email: str = "",
    remember: bool = False,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
    form_targets: tuple[str, ...] = (),
) -> HtmlResponse:
    name = provider  # the catalog's label
    parts: list[str] = []
    if error:
        parts.append(f'<p class="error" role="alert">{html.escape(error)}</p>')
    if notice:
        parts.append(f'<p class="notice" role="status">{html.escape(notice)}</p>')
    content = render(
        "login.html",
        provider=name,
        email=email,
        messages=Safe("\n".join(parts)),
        remember_checked=Safe(" checked" if remember else ""),
    )
    return page(status, f"Connect {name}", content, form_targets=form_targets)


def success_page(*, provider: str, account: str | None = None, reauthorized: bool = False) -> HtmlResponse:
    name = provider  # the catalog's label
    verb = "reconnected" if reauthorized else "connected"
    detail = f"The {name} account {account} is now {verb}." if account else f"Your {name} account is now {verb}."
    return page(200, f"{name} connected", render("success.html", provider=name, detail=detail))


@dataclass(frozen=True, slots=True)
class ErrorText:
    heading: str
    explanation: str
    advice: str


START_AGAIN = "Go back to the application and start connecting again."


# Most specific first: the first entry whose type matches an error explains it.
_ERROR_TEXTS: tuple[tuple[type[TokenBrokerError], ErrorText], ...] = (
    (
        SessionNotFound,
        ErrorText(
            "This connect link cannot be used",
            "The link has expired, has already been used, or was copied incompletely.",
            START_AGAIN,
        ),
    ),
    (
        InvalidState,
        ErrorText(
            "This sign-in cannot be completed",
            "The sign-in took too long, was already completed, or did not start here. Nothing was stored.",
            START_AGAIN,
        ),
    ),
    (
        AuthorizationDenied,
        ErrorText(
            "Access was not granted",
            "The connection was declined at the provider, so nothing was stored.",
            "If that was a mistake, go back to the application and connect again.",
        ),
    ),
    (
        ForbiddenRequest,
        ErrorText(
            "This request was refused",
            "The form was sent from another site, so it was ignored.",
            "Open the connect link from the application again and submit the form on that page.",
        ),
    ),
    (UnknownProvider, ErrorText("Unknown service", "This service is not available here.", START_AGAIN)),
    (
        ProviderConfigurationError,
        ErrorText(
            "The connection is not set up correctly",
            "The provider refused this service's own credentials. Nothing was stored.",
            "Please tell the application's support team; trying again will not help until they fix it.",
        ),
    ),
    (
        AccountProblem,
        ErrorText(
            "The provider refused this account",
            "The account cannot be used right now (for example, its subscription has ended). Nothing was stored.",
            "Check the account with the provider, then go back to the application and connect again.",
        ),
    ),
    (
        TransientProviderError,
        ErrorText(
            "The provider is not answering",
            "The provider is unavailable or busy right now. Nothing was stored.",
            "Wait a minute, then go back to the application and connect again.",
        ),
    ),
    (
        ProviderError,
        ErrorText(
            "The provider could not complete the connection",
            "The provider refused to finish the sign-in. Nothing was stored.",
            START_AGAIN,
        ),
    ),
)
_INTERNAL = ErrorText(
    "Something went wrong",
    "The connection could not be completed because of a problem on our side. Nothing was stored.",
    "Wait a minute, then go back to the application and connect again.",
)


def _error_text(error: TokenBrokerError) -> ErrorText:
    """What happened and what to do, in words an end user understands. Never secret-bearing."""
    if isinstance(error, InvalidInput | UnsupportedOperation):
        # Our own validation messages: written for people, never echo a secret.
        return ErrorText("The request was not valid", error.message, START_AGAIN)
    for kind, text in _ERROR_TEXTS:
        if isinstance(error, kind):
            return text
    return _INTERNAL


def not_found_page() -> HtmlResponse:
    content = render(
        "error.html",
        heading="Page not found",
        explanation="There is nothing at this address.",
        advice=START_AGAIN,
        details=Safe(""),
    )
    return page(404, "Page not found", content)


def error_page(error: TokenBrokerError) -> HtmlResponse:
    text = _error_text(error)
    details = ""
    if isinstance(error, ProviderError):
        provider_code = f", code {html.escape(error.provider_code)}" if error.provider_code else ""
        details = f'<p class="help">Provider: {html.escape(display_name(error.provider))}{provider_code}.</p>'
    details += f'<p class="help">Error: {html.escape(error.code)}.</p>'
    content = render(
        "error.html",
        heading=text.heading,
        explanation=text.explanation,
        advice=text.advice,
        details=Safe(details),
    )
    response = page(error.http_status, text.heading, content)
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, int | float) and retry_after > 0 and error.http_status == 503:
        response.headers["Retry-After"] = str(max(1, round(retry_after)))
    return response
