"""Worksection: refresh at its own URL, HTTP-200 errors, ``account_url`` per token, POST user info.

The separate refresh URL is just the catalog's ``refresh_url``; the code here covers what a
catalog cannot say: which answer fields to keep, which ``account_url`` to trust, and the
form-posted user-info resource.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from tokenbroker.errors import ProviderError
from tokenbroker.http import HttpResponse
from tokenbroker.providers.classify import CallContext, Operation, classify_rfc6749
from tokenbroker.providers.kinds import register_kind
from tokenbroker.providers.oauth2 import OAuth2Provider, user_info_from_body
from tokenbroker.tokens import TokenSet, UserInfo

logger = logging.getLogger(__name__)

_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


# An entry of this kind that names no account_url_domains (a second Worksection, an extra file's
# `account_url_domains: null`) still trusts only Worksection's own account hosts.
@register_kind("worksection", defaults={"account_url_domains": ["worksection.com"]})
class WorksectionProvider(OAuth2Provider):
    requires_client_secret: ClassVar[bool] = True

    def classify(self, response: HttpResponse, ctx: CallContext) -> ProviderError:
        return classify_worksection(response, ctx)

    def token_extras(self, body: Mapping[str, Any]) -> dict[str, str]:
        # A refresh answer may omit account_url or carry a bad one: then the stored one is kept.
        return account_url_extra(body, self.entry.account_url_domains, provider=self.name)

    def user_info(self, token: TokenSet) -> UserInfo:
        """POST /oauth2/resource with the app credentials and the access token in the form."""
        if not self.entry.userinfo_url:
            return UserInfo()
        self._require_client_secret(Operation.USERINFO)
        form = {
            "client_id": self.credentials.client_id,
            "client_secret": self.credentials.client_secret,
            "access_token": token.access_token,
        }
        response = self._send("POST", self.entry.userinfo_url, Operation.USERINFO, form=form)
        return self.user_info_from_response(response, self._context(Operation.USERINFO, form))

    def user_info_from_response(self, response: HttpResponse, ctx: CallContext) -> UserInfo:
        body = response.json_object()
        if 200 <= response.status < 300 and body is not None and not self.is_error_body(body):
            profile = _profile(body)
            if profile is not None:
                info = user_info_from_body(profile)
                extra = account_url_extra(profile, self.entry.account_url_domains, provider=self.name)
                return UserInfo(id=info.id, name=info.name, email=info.email, extra=extra)
        raise self.classify(response, ctx)

    def is_error_body(self, body: Mapping[str, Any]) -> bool:
        return super().is_error_body(body) or body.get("status") == "error"


def _profile(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The user object: the body itself, or (defensively) a ``data``/``user`` wrapper."""
    for candidate in (body, body.get("data"), body.get("user")):
        if isinstance(candidate, Mapping) and any(key in candidate for key in ("id", "email")):
            return candidate
    return None


# --- errors -----------------------------------------------------------------------------------------


def classify_worksection(response: HttpResponse, ctx: CallContext) -> ProviderError:
    """Worksection speaks league/oauth2-server RFC 6749, including its HTTP-200 error bodies.

    The RFC classifier already reads camelCase ``errorDescription`` and ``hint`` and maps
    ``invalid_request`` about a dead refresh token to re-authorisation; Worksection needs nothing
    more, but keeps its own name so that a future quirk has one place to go.
    """
    return classify_rfc6749(response, ctx)


# --- account_url ------------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname.lower().rstrip("."), port


def validate_account_url(value: object, allowed: Sequence[str]) -> str | None:
    """``value`` as ``https://<host>`` if it may be trusted as an account's API host, else None.

    ``allowed`` holds base domains (``worksection.com``: any https subdomain of it, never the
    domain itself nor a look-alike such as ``worksection.com.evil.com``) and exact origins
    (``http://127.0.0.1:8001``: that origin only, for sandboxes).
    """
    if not isinstance(value, str) or not value.strip() or len(value) > 2048 or not value.isprintable():
        return None
    origin = _origin(value)
    if origin is None:
        return None
    scheme, host, port = origin
    for allowed_rule in allowed:
        rule = allowed_rule.strip().lower()
        if "://" in rule:
            expected = _origin(rule)
            if expected is not None and expected == origin:
                return f"{scheme}://{host}" + (f":{port}" if port is not None else "")
            continue
        domain = rule.strip(".")
        if not domain or scheme != "https" or port not in (None, 443):
            continue
        if not host.endswith("." + domain):
            continue
        labels = host[: -len(domain) - 1].split(".")
        if _is_ip(host) or not all(_HOST_LABEL.fullmatch(label) for label in labels):
            continue
        return f"https://{host}"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def account_url_extra(body: Mapping[str, Any], allowed: Sequence[str], *, provider: str) -> dict[str, str]:
    """``{"account_url": ...}`` when the answer names a trustworthy one; a bad one is dropped and logged."""
    raw = body.get("account_url")
    if raw is None or raw == "":
        return {}
    valid = validate_account_url(raw, allowed)
    if valid is None:
        origin = _origin(raw) if isinstance(raw, str) else None
        host = origin[1] if origin is not None else "unparseable"
        logger.warning(
            "dropped an account_url outside the allowed domains",
            extra={"provider": provider, "account_host": host[:100], "allowed": list(allowed)},
        )
        return {}
    return {"account_url": valid}
