"""Runs inside the django-oauth-toolkit peer process (see dot_settings.py), never in the tests."""

from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator

NON_ROTATING_SCOPE = "write"


class ScopeRotationValidator(OAuth2Validator):  # type: ignore[misc]
    def rotate_refresh_token(self, request: Any) -> bool:
        # oauthlib has restored the grant's original scopes on the request by now.
        return NON_ROTATING_SCOPE not in (request.scopes or [])
