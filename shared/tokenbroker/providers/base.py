"""The provider interface: one small ABC every handler and the refresh engine talk to.

Like golang's x/oauth2, callers never see HTTP: they get a normalised ``TokenSet`` or one of the
``ProviderError`` kinds from ``tokenbroker.errors``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from tokenbroker.credentials import AppCredentials
from tokenbroker.errors import UnsupportedOperation
from tokenbroker.tokens import TokenSet, UserInfo

# AppCredentials lives in tokenbroker.credentials (the app-credentials store needs it without the
# providers); re-exported here and from tokenbroker.providers for existing callers.
__all__ = ["AppCredentials", "Provider"]


class Provider(ABC):
    """One OAuth 2.0 provider as declared by its catalog entry."""

    name: str

    @abstractmethod
    def authorization_url(
        self,
        *,
        state: str,
        redirect_uri: str,
        scopes: Sequence[str] | None = None,
        code_challenge: str | None = None,
    ) -> str:
        """The URL to send the end user's browser to (authorization-code providers)."""

    @abstractmethod
    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenSet:
        """Trade an authorization code for tokens."""

    @abstractmethod
    def password_grant(self, *, username: str, password: str, scopes: Sequence[str] | None = None) -> TokenSet:
        """Resource-owner password grant (password providers)."""

    @abstractmethod
    def refresh(self, token: TokenSet) -> TokenSet:
        """Use ``token.refresh_token``; the answer is merged over ``token`` (kept refresh token, extras)."""

    def user_info(self, token: TokenSet) -> UserInfo:
        """Who the token belongs to; providers without a user-info endpoint return an empty one."""
        return UserInfo()

    def request_password_reset(self, email: str) -> str:
        """Ask the provider to mail a password reset; returns its human-readable confirmation."""
        raise UnsupportedOperation(f"{self.name} has no password reset")
