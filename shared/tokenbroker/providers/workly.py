"""Workly: password grant and refresh on one URL, ``{"message", "code"}`` errors, password reset.

Everything else is the catalog entry (base URL, comma-separated scopes, 30/60-day lifetimes, the
documented client id). Workly's documented app secret is configuration, so without one configured
every token call fails early with ``ProviderConfigurationError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from tokenbroker.errors import ProviderError
from tokenbroker.http import HttpResponse
from tokenbroker.providers.classify import CallContext, classify_workly, workly_code
from tokenbroker.providers.oauth2 import OAuth2Provider


class WorklyProvider(OAuth2Provider):
    requires_client_secret: ClassVar[bool] = True

    def classify(self, response: HttpResponse, ctx: CallContext) -> ProviderError:
        return classify_workly(response, ctx)

    def is_error_body(self, body: Mapping[str, Any]) -> bool:
        # A Workly error is {"message", "code"}; a success may carry a message but no error code.
        return super().is_error_body(body) or workly_code(body) not in (None, 0, 200)
