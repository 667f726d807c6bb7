"""Worksection: refresh at its own URL, HTTP-200 errors, ``account_url`` per token, POST user info.

The separate refresh URL is just the catalog's ``refresh_url``; the code here covers what a
catalog cannot say: which answer fields to keep, which ``account_url`` to trust, and the
form-posted user-info resource.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from tokenbroker.errors import ProviderError
from tokenbroker.http import HttpResponse
from tokenbroker.providers.classify import CallContext, Operation, classify_worksection
from tokenbroker.providers.oauth2 import OAuth2Provider, user_info_from_body
from tokenbroker.providers.parsing import account_url_extra
from tokenbroker.tokens import TokenSet, UserInfo


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
