"""The few HTML pages an end user sees while connecting an account, and their security headers.

A tiny renderer instead of a template engine: ``string.Template`` files in ``templates/`` and
every substituted value HTML-escaped unless it is a ``Safe`` fragment built here from escaped
parts. Pages load nothing but the stack's own logo (no scripts or fonts), so the
Content-Security-Policy can be ``default-src 'none'`` with the one inline style pinned by its
hash and, only when a logo is configured, ``img-src`` for exactly the logo's origin.

Every page names the application that sent the user here (``Branding``, from the stack's
``AppName``, ``AppLogoUrl`` and ``AppAccentColor`` parameters): a page that only says "the
application" gives a phished user no reason to stop.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from string import Template
from typing import TYPE_CHECKING

from tokenbroker.api.statuses import UNAVAILABLE, http_status
from tokenbroker.connect import (
    AuthorizationDenied,
    BrowserMismatch,
    ForbiddenRequest,
    InvalidState,
    LinkUsedUp,
    SessionNotFound,
)
from tokenbroker.errors import (
    ConfigurationError,
    ConnectSessionExpired,
    ConnectSessionNotCompleted,
    EndUserMismatch,
    InvalidInput,
    ProviderError,
    ProviderErrorKind,
    TokenBrokerError,
    UnknownProvider,
    UnsupportedOperation,
)
from tokenbroker.return_urls import parse_strict
from tokenbroker.settings import DEFAULT_APP_NAME

if TYPE_CHECKING:
    from tokenbroker.settings import Settings

# --- branding --------------------------------------------------------------------------------------

MAX_APP_NAME = 64
MAX_LOGO_URL = 2048
DEFAULT_ACCENT = "#1a5fb4"
WHITE = "#ffffff"
# Pure black, not a softer near-black: only black reaches 4.5:1 on every accent that white misses
# (the worst accent, luminance ~0.18, gives 4.58:1 with black but only ~4.15:1 with #1b1b1b).
BLACK = "#000000"
AA_TEXT = 4.5

_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
# Loopback over plain http: the local stack serves its own files there, nothing else may.
_LOCAL_HOSTS = ("127.0.0.1", "localhost")
# Quotes could end an attribute or a CSP source if escaping were ever lost on the way.
_LOGO_FORBIDDEN = re.compile(r"[\"'`\s]")


@dataclass(frozen=True, slots=True)
class Branding:
    """What the pages say and show about the application that sends users here. Build with ``of``."""

    app_name: str
    logo_url: str | None = None
    accent_color: str | None = None

    @classmethod
    def of(cls, app_name: str | None, logo_url: str | None, accent_color: str | None) -> Branding:
        """Validated branding; raises ConfigurationError (the message never echoes the value)."""
        name = DEFAULT_APP_NAME if app_name is None else app_name.strip()
        if not 1 <= len(name) <= MAX_APP_NAME or not name.isprintable():
            raise ConfigurationError(f"APP_NAME must be 1-{MAX_APP_NAME} printable characters")
        return cls(app_name=name, logo_url=_checked_logo_url(logo_url), accent_color=_checked_colour(accent_color))

    @property
    def subject(self) -> str:
        """The name at the start of a sentence (the generic fallback is lower case mid-sentence)."""
        if self.app_name == DEFAULT_APP_NAME:
            return self.app_name[:1].upper() + self.app_name[1:]
        return self.app_name

    @property
    def is_generic(self) -> bool:
        return self.app_name == DEFAULT_APP_NAME and self.logo_url is None

    @property
    def logo_origin(self) -> str | None:
        return parse_strict(self.logo_url, what="AppLogoUrl").origin if self.logo_url else None


def branding_from_settings(settings: Settings) -> Branding:
    return Branding.of(settings.app_name, settings.app_logo_url, settings.app_accent_color)


def _checked_logo_url(url: str | None) -> str | None:
    if not url:
        return None
    refusal = ConfigurationError(
        "APP_LOGO_URL must be an https URL (http only for 127.0.0.1 or localhost) of at most "
        f"{MAX_LOGO_URL} characters, without credentials, quotes or whitespace"
    )
    if len(url) > MAX_LOGO_URL or _LOGO_FORBIDDEN.search(url):
        raise refusal
    try:
        # Strict: lower-case scheme, plain ASCII host, no userinfo, no controls or backslashes.
        parsed = parse_strict(url, what="AppLogoUrl")
    except InvalidInput:
        raise refusal from None
    if parsed.scheme != "https" and parsed.host not in _LOCAL_HOSTS:
        raise refusal
    return url


def _checked_colour(colour: str | None) -> str | None:
    if not colour:
        return None
    if not _HEX_COLOUR.fullmatch(colour):
        raise ConfigurationError("APP_ACCENT_COLOR must be a #rrggbb hex colour")
    return colour.lower()


# --- colour and contrast (WCAG 2.x) ----------------------------------------------------------------


def relative_luminance(colour: str) -> float:
    """WCAG relative luminance of a ``#rrggbb`` colour (0 = black, 1 = white)."""

    def linear(channel: int) -> float:
        value = channel / 255
        return value / 12.92 if value <= 0.03928 else ((value + 0.055) / 1.055) ** 2.4

    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def contrast_ratio(first: str, second: str) -> float:
    lighter, darker = sorted((relative_luminance(first), relative_luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def text_on(background: str) -> str:
    """White or black, whichever reads better on ``background`` (always >= 4.5:1, see BLACK)."""
    return WHITE if contrast_ratio(WHITE, background) >= contrast_ratio(BLACK, background) else BLACK


def readable_on_white(colour: str) -> str:
    """``colour``, darkened just enough to be link text on the white page (>= 4.5:1)."""
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    for step in range(21):
        keep = 1 - step / 20
        candidate = f"#{round(r * keep):02x}{round(g * keep):02x}{round(b * keep):02x}"
        if contrast_ratio(candidate, WHITE) >= AA_TEXT:
            return candidate
    return BLACK  # not reached: step 20 is black


# --- style and headers -----------------------------------------------------------------------------


def _style(accent: str) -> str:
    link = readable_on_white(accent)
    return (
        "body{font:16px/1.5 system-ui,sans-serif;margin:0;padding:2rem 1rem;color:#1b1b1b;background:#f6f6f6}"
        "main{max-width:32rem;margin:auto;background:#fff;padding:1.5rem 2rem;border-radius:8px;"
        "box-shadow:0 1px 3px rgba(0,0,0,.15);overflow-wrap:anywhere}"
        "@media (max-width:30rem){body{padding:1rem .5rem}main{padding:1rem}}"
        ".brand{margin:0 0 1rem;font-weight:600;color:#4a4a4a}"
        ".brand img{display:block;max-width:100%;max-height:3rem;height:auto}"
        "h1{font-size:1.4rem;margin-top:0}label{display:block;font-weight:600}"
        ".check label{display:inline;font-weight:400}"
        "input[type=email],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font:inherit;"
        "border:1px solid #6b6b6b;border-radius:4px}"
        f"a{{color:{link}}}"
        f"input:focus,button:focus,a:focus{{outline:3px solid {link};outline-offset:2px}}"
        f"button,a.button{{font:inherit;padding:.5rem 1rem;border-radius:4px;border:1px solid {accent};"
        f"background:{accent};color:{text_on(accent)}}}"
        "a.button{display:inline-block;text-decoration:none}"
        f"button.link{{background:none;border:none;color:{link};text-decoration:underline;padding:.5rem}}"
        ".help{font-size:.9rem;color:#4a4a4a}.error{color:#a51d2d;font-weight:600}"
        ".notice{color:#26662f}.actions{display:flex;flex-wrap:wrap;gap:1rem;align-items:center}"
        "figure{margin:1rem 0}figcaption{font-size:.9rem;color:#4a4a4a}"
        "blockquote{margin:.25rem 0 0;padding:.25rem .75rem;border-left:3px solid #6b6b6b}"
    )


@cache
def style_for(accent_color: str | None) -> tuple[str, str]:
    """The inline style for an accent and its CSP hash: the hash is always of the served style."""
    style = _style(accent_color or DEFAULT_ACCENT)
    return style, "sha256-" + base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()


STYLE, STYLE_HASH = style_for(None)

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


def content_security_policy(
    form_targets: tuple[str, ...] = (), *, style_hash: str = STYLE_HASH, img_origin: str | None = None
) -> str:
    # form-action also governs where a form post may be redirected (Chrome enforces it on
    # redirects), so the login page lists the return_to origin next to 'self'.
    form_action = " ".join(("'self'", *form_targets))
    images = f"img-src {img_origin}; " if img_origin else ""
    return (
        f"default-src 'none'; style-src '{style_hash}'; {images}form-action {form_action}; "
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


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _brand(branding: Branding) -> Safe:
    if branding.logo_url:
        return Safe(f'<p class="brand"><img src="{_escape(branding.logo_url)}" alt="{_escape(branding.app_name)}"></p>')
    if branding.is_generic:
        return Safe("")
    return Safe(f'<p class="brand">{_escape(branding.app_name)}</p>')


def page(
    status: int, title: str, content: Safe, *, branding: Branding, form_targets: tuple[str, ...] = ()
) -> HtmlResponse:
    style, style_hash = style_for(branding.accent_color)
    body = render("layout.html", title=title, style=Safe(style), brand=_brand(branding), content=content)
    headers = {
        **BASE_HEADERS,
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": content_security_policy(
            form_targets, style_hash=style_hash, img_origin=branding.logo_origin
        ),
    }
    return HtmlResponse(status=status, headers=headers, body=body)


def redirect(location: str) -> HtmlResponse:
    """A 302 with no body worth reading; Location is a validated URL built by the connect service."""
    headers = {**BASE_HEADERS, "Location": location, "Content-Security-Policy": content_security_policy()}
    return HtmlResponse(status=302, headers=headers, body="")


def display_name(provider: str) -> str:
    return provider.replace("_", " ").replace("-", " ").title()


def connect_heading(branding: Branding, provider: str) -> str:
    """The words the issue asks for wherever a page introduces a connection (plain text, unescaped)."""
    return f"{branding.subject} wants to connect your {provider} account"


def _back_link(branding: Branding, return_to: str | None) -> str:
    """A "Back to <App>" button, only for an http(s) URL (an escaped javascript: URL still runs)."""
    if not return_to:
        return ""
    try:
        parse_strict(return_to)
    except InvalidInput:
        return ""
    return f'<p><a class="button" href="{_escape(return_to)}">Back to {_escape(branding.app_name)}</a></p>'


# --- the password form -----------------------------------------------------------------------------

MAX_PROVIDER_TEXT = 1000
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_LATIN = re.compile(r"[A-Za-z]")
FULL_ATTEMPTS = 5  # the connect service's failed-login budget per link


def _provider_words(provider: str, original: str) -> str:
    """The provider's own message, quoted and attributed, next to our English summary."""
    text = original.strip()[:MAX_PROVIDER_TEXT]
    # lang lets screen readers switch voice; Workly answers in Russian.
    lang = ' lang="ru"' if len(_CYRILLIC.findall(text)) > len(_LATIN.findall(text)) else ""
    return (
        f"<figure><figcaption>{_escape(provider)}&rsquo;s own message:</figcaption>"
        f"<blockquote{lang}><p>{_escape(text)}</p></blockquote></figure>"
    )


def _attempts(attempts_left: int | None) -> str:
    if attempts_left is None or attempts_left >= FULL_ATTEMPTS:
        return ""
    if attempts_left <= 0:
        text = "This link has no sign-in attempts left."
    elif attempts_left == 1:
        text = "This link allows 1 more sign-in attempt."
    else:
        text = f"This link allows {attempts_left} more sign-in attempts."
    return f'<p class="help">{text}</p>'


def login_page(
    *,
    branding: Branding,
    provider: str,
    provider_host: str | None = None,
    email: str = "",
    remember: bool = False,
    error: str | None = None,
    notice: str | None = None,
    notice_original: str | None = None,
    status: int = 200,
    form_targets: tuple[str, ...] = (),
    attempts_left: int | None = None,
) -> HtmlResponse:
    """``provider`` is the catalog's label. ``notice_original`` is the provider's own text, quoted."""
    parts: list[str] = []
    if error:
        parts.append(f'<p class="error" role="alert">{_escape(error)}</p>')
    if notice:
        parts.append(f'<p class="notice" role="status">{_escape(notice)}</p>')
    if notice_original and notice_original.strip():
        parts.append(_provider_words(provider, notice_original))
    parts.append(_attempts(attempts_left))
    heading = connect_heading(branding, provider)
    # Only what is true: this service posts the password to the provider's token endpoint and
    # keeps it only when "remember" is ticked; the application itself never receives it.
    host = f" (host {provider_host})" if provider_host else ""
    content = render(
        "login.html",
        heading=heading,
        app=branding.app_name,
        app_subject=branding.subject,
        provider=provider,
        host=host,
        email=email,
        messages=Safe("\n".join(part for part in parts if part)),
        remember_checked=Safe(" checked" if remember else ""),
    )
    return page(status, heading, content, branding=branding, form_targets=form_targets)


# --- outcomes --------------------------------------------------------------------------------------


def success_page(
    *,
    branding: Branding,
    provider: str,
    account: str | None = None,
    reauthorized: bool = False,
    pending: bool = False,
    return_to: str | None = None,
) -> HtmlResponse:
    """``provider`` is the catalog's label; ``pending``: the application must still confirm."""
    app = branding.app_name
    back = _back_link(branding, return_to)
    if pending:
        heading = f"Almost done: go back to {app} to finish connecting"
        detail = f"{branding.subject} still has to confirm this connection before it can use your {provider} account."
        close = f"Until {app} confirms it, nothing from this sign-in is used."
    else:
        verb = "reconnected" if reauthorized else "connected"
        heading = f"Your {provider} account is {verb} to {app}"
        what = f"The {provider} account {account}" if account else f"Your {provider} account"
        detail = f"{what} is now {verb}: {app} can use it on your behalf."
        close = f"You can close this window and go back to {app}."
    content = render("success.html", heading=heading, detail=detail, close=close, back=Safe(back))
    return page(200, heading, content, branding=branding)


@dataclass(frozen=True, slots=True)
class ErrorText:
    """Plain text; ``{app}`` stands for the application's name."""

    heading: str
    explanation: str
    advice: str


START_AGAIN = "Go back to {app} and start connecting again."


# Most specific first: the first entry whose type matches an error explains it. A provider's
# error is explained by its kind (below).
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
        BrowserMismatch,
        ErrorText(
            "Finish in the browser where you started",
            "This sign-in was started in another browser or in a private window, so it cannot be "
            "finished here. Nothing was stored.",
            "Open the connect link from {app} again in this browser and sign in there.",
        ),
    ),
    (
        LinkUsedUp,
        ErrorText(
            "This connect link is used up",
            "There were too many failed sign-in attempts with this link, so it no longer works. Nothing was stored.",
            "Go back to {app} to get a new link.",
        ),
    ),
    (
        ConnectSessionExpired,
        ErrorText(
            "This connect link has expired",
            "The connection was not finished and confirmed in time, so nothing from it was kept.",
            START_AGAIN,
        ),
    ),
    (
        ConnectSessionNotCompleted,
        ErrorText(
            "Connecting is not finished yet",
            "The sign-in for this connect link has not been completed.",
            "Finish signing in on the connect page, or go back to {app} and start connecting again.",
        ),
    ),
    (
        EndUserMismatch,
        ErrorText(
            "This connection was not accepted",
            "{app} did not confirm this connection for the person signed in there, so it was discarded.",
            "Go back to {app}, check which user you are signed in as, and connect again.",
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
            "If that was a mistake, go back to {app} and connect again.",
        ),
    ),
    (
        ForbiddenRequest,
        ErrorText(
            "This request was refused",
            "The form was sent from another site, so it was ignored.",
            "Open the connect link from {app} again and submit the form on that page.",
        ),
    ),
    (UnknownProvider, ErrorText("Unknown service", "This service is not available here.", START_AGAIN)),
)
_PROVIDER_REFUSED = ErrorText(
    "The provider could not complete the connection",
    "The provider refused to finish the sign-in. Nothing was stored.",
    START_AGAIN,
)
_PROVIDER_UNAVAILABLE = ErrorText(
    "The provider is not answering",
    "The provider is unavailable or busy right now. Nothing was stored.",
    "Wait a minute, then go back to {app} and connect again.",
)
_PROVIDER_TEXTS: dict[ProviderErrorKind, ErrorText] = {
    ProviderErrorKind.CONFIGURATION: ErrorText(
        "The connection is not set up correctly",
        "The provider refused this service's own credentials. Nothing was stored.",
        "Please tell the support team of {app}; trying again will not help until they fix it.",
    ),
    ProviderErrorKind.ACCOUNT: ErrorText(
        "The provider refused this account",
        "The account cannot be used right now (for example, its subscription has ended). Nothing was stored.",
        "Check the account with the provider, then go back to {app} and connect again.",
    ),
    ProviderErrorKind.TRANSIENT: _PROVIDER_UNAVAILABLE,
    ProviderErrorKind.OUTCOME_UNKNOWN: _PROVIDER_UNAVAILABLE,
    ProviderErrorKind.REAUTHORIZATION_REQUIRED: _PROVIDER_REFUSED,
    ProviderErrorKind.INVALID_CREDENTIALS: _PROVIDER_REFUSED,
    ProviderErrorKind.REFUSED: _PROVIDER_REFUSED,
}
_INTERNAL = ErrorText(
    "Something went wrong",
    "The connection could not be completed because of a problem on our side. Nothing was stored.",
    "Wait a minute, then go back to {app} and connect again.",
)


def _named(text: str, branding: Branding) -> str:
    """``{app}`` replaced by the application's name (capitalised at the start of a sentence)."""
    if text.startswith("{app}"):
        return branding.subject + text[len("{app}") :].replace("{app}", branding.app_name)
    return text.replace("{app}", branding.app_name)


def _error_text(error: TokenBrokerError, branding: Branding) -> ErrorText:
    """What happened and what to do, in words an end user understands. Never secret-bearing."""
    if isinstance(error, InvalidInput | UnsupportedOperation):
        # Our own validation messages: written for people, never echo a secret (and no template).
        return ErrorText("The request was not valid", error.message, _named(START_AGAIN, branding))
    if isinstance(error, ProviderError):
        text = _PROVIDER_TEXTS[error.kind]
    else:
        text = next((text for kind, text in _ERROR_TEXTS if isinstance(error, kind)), _INTERNAL)
    return ErrorText(text.heading, _named(text.explanation, branding), _named(text.advice, branding))


def not_found_page(*, branding: Branding) -> HtmlResponse:
    content = render(
        "error.html",
        heading="Page not found",
        explanation="There is nothing at this address.",
        advice=_named(START_AGAIN, branding),
        back=Safe(""),
        details=Safe(""),
    )
    return page(404, f"Page not found - {branding.app_name}", content, branding=branding)


def error_page(error: TokenBrokerError, *, branding: Branding, return_to: str | None = None) -> HtmlResponse:
    text = _error_text(error, branding)
    details = ""
    if isinstance(error, ProviderError):
        provider_code = f", code {_escape(error.provider_code)}" if error.provider_code else ""
        details = f'<p class="help">Provider: {_escape(display_name(error.provider))}{provider_code}.</p>'
    details += f'<p class="help">Error: {_escape(error.code)}.</p>'
    content = render(
        "error.html",
        heading=text.heading,
        explanation=text.explanation,
        advice=text.advice,
        back=Safe(_back_link(branding, return_to)),
        details=Safe(details),
    )
    status = http_status(error)
    response = page(status, f"{text.heading} - {branding.app_name}", content, branding=branding)
    retry_after = getattr(error, "retry_after", None)
    if isinstance(retry_after, int | float) and retry_after > 0 and status == UNAVAILABLE:
        response.headers["Retry-After"] = str(max(1, round(retry_after)))
    return response
