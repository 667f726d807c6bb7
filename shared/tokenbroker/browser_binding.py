"""The browser-binding cookie of the connect flow (design.md "Who completes a connect flow").

``GET /connect/{session}`` gives the browser a random binding id in an HttpOnly, SameSite=Lax
cookie and the connect service stores its hash with the OAuth state or the login session; the
callback and the form post must carry the same cookie. SameSite=Lax still sends it on the
provider's top-level redirect back to the callback. On HTTPS the cookie is ``__Host-`` prefixed
and Secure (pinned to this host, no Domain, Path=/); on the plain-HTTP local stack browsers refuse
both, so it is a plain cookie there.

One id per browser, reused while it lives, so that two links opened in one browser both work.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from aws_lambda_powertools.shared.cookies import Cookie, SameSite

PLAIN_NAME = "tb_binding"
SECURE_NAME = "__Host-tb_binding"
# Longer than a connect session (15 min) and its slowest consent screen; renewed on every opening.
MAX_AGE_SECONDS = 3600
_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")


def cookie_name(*, secure: bool) -> str:
    return SECURE_NAME if secure else PLAIN_NAME


def new_binding() -> str:
    """256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def read_binding(cookies: Iterable[str], *, secure: bool) -> str | None:
    """The binding id among ``name=value`` request cookies; None when absent or malformed."""
    name = cookie_name(secure=secure)
    for cookie in cookies:
        key, _, value = cookie.strip().partition("=")
        if key == name and _VALUE.fullmatch(value):
            return value
    return None


def binding_cookie(binding: str, *, secure: bool) -> Cookie:
    return Cookie(
        name=cookie_name(secure=secure),
        value=binding,
        path="/",
        secure=secure,
        http_only=True,
        max_age=MAX_AGE_SECONDS,
        same_site=SameSite.LAX_MODE,
    )
