"""The normalised token every provider returns and the token store keeps."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tokenbroker.redaction import remember_secret


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenSet:
    """A provider's answer, normalised. ``repr`` hides the secrets so that it is safe to log.

    ``expires_at`` is absolute epoch seconds computed when the answer arrived; when the provider
    omits ``expires_in`` the catalog's lifetime is used, never "does not expire".
    """

    access_token: str = field(repr=False)
    token_type: str
    expires_at: int
    obtained_at: int
    refresh_token: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        remember_secret(self.access_token, self.refresh_token)

    @property
    def access_token_sha256(self) -> str:
        return sha256_hex(self.access_token)

    def expires_in(self, now: float) -> int:
        return max(0, int(self.expires_at - now))

    def merged_over(self, previous: TokenSet) -> TokenSet:
        """Keep what a refresh answer may omit: the refresh token and the provider extras."""
        return replace(
            self,
            refresh_token=self.refresh_token or previous.refresh_token,
            scopes=self.scopes or previous.scopes,
            extra={**previous.extra, **self.extra},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "obtained_at": self.obtained_at,
            "scopes": list(self.scopes),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenSet:
        scopes: Sequence[str] = data.get("scopes") or ()
        return cls(
            access_token=str(data["access_token"]),
            refresh_token=data.get("refresh_token") or None,
            token_type=str(data.get("token_type") or "Bearer"),
            expires_at=int(data["expires_at"]),
            obtained_at=int(data.get("obtained_at") or 0),
            scopes=tuple(str(s) for s in scopes),
            extra={str(k): str(v) for k, v in (data.get("extra") or {}).items()},
        )


@dataclass(frozen=True, slots=True)
class UserInfo:
    """Who the connection belongs to, as the provider reports it (metadata, never a secret)."""

    id: str | None = None
    name: str | None = None
    email: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        values = {"user_id": self.id, "user_name": self.name, "user_email": self.email, **self.extra}
        return {k: v for k, v in values.items() if v}
