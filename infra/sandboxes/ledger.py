"""Issued tokens and their state; the owning sandbox's lock guards every call."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class TokenState(enum.StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class TokenRecord:
    subject: str  # the user's e-mail
    client_id: str
    expires_at: float
    scopes: tuple[str, ...] = ()
    account: str | None = None
    revoked: bool = False
    sibling: str | None = None  # for a refresh token: the access token issued with it


@dataclass(slots=True)
class TokenLedger:
    # repr=False: the keys are tokens (fake ones, but a repr must never show a token).
    access: dict[str, TokenRecord] = field(repr=False)
    refresh: dict[str, TokenRecord] = field(repr=False)

    @classmethod
    def empty(cls) -> TokenLedger:
        return cls(access={}, refresh={})

    def add_pair(
        self,
        *,
        access_token: str,
        refresh_token: str,
        subject: str,
        client_id: str,
        now: float,
        access_ttl: float,
        refresh_ttl: float,
        scopes: tuple[str, ...] = (),
        account: str | None = None,
    ) -> None:
        self.access[access_token] = TokenRecord(subject, client_id, now + access_ttl, scopes, account)
        self.refresh[refresh_token] = TokenRecord(
            subject, client_id, now + refresh_ttl, scopes, account, sibling=access_token
        )

    @staticmethod
    def state_of(record: TokenRecord | None, now: float) -> TokenState:
        if record is None:
            return TokenState.UNKNOWN
        if record.revoked:
            return TokenState.REVOKED
        if now >= record.expires_at:
            return TokenState.EXPIRED
        return TokenState.VALID

    def access_state(self, token: str, now: float) -> tuple[TokenState, TokenRecord | None]:
        record = self.access.get(token)
        return self.state_of(record, now), record

    def refresh_state(self, token: str, now: float) -> tuple[TokenState, TokenRecord | None]:
        record = self.refresh.get(token)
        return self.state_of(record, now), record

    def retire(self, refresh_token: str, *, with_access: bool) -> None:
        """Rotation: the used refresh token dies, and with ``with_access`` its access token too."""
        record = self.refresh[refresh_token]
        record.revoked = True
        if with_access and record.sibling in self.access:
            self.access[record.sibling].revoked = True

    def expire_access(self, now: float, subject: str | None = None) -> int:
        count = 0
        for record in self.access.values():
            if (subject is None or record.subject == subject) and record.expires_at > now:
                record.expires_at = now
                count += 1
        return count

    def revoke_refresh(self, subject: str | None = None) -> int:
        count = 0
        for record in self.refresh.values():
            if (subject is None or record.subject == subject) and not record.revoked:
                record.revoked = True
                count += 1
        return count

    def live_refresh_tokens(self, now: float) -> int:
        return sum(1 for r in self.refresh.values() if self.state_of(r, now) is TokenState.VALID)

    def clear(self) -> None:
        self.access.clear()
        self.refresh.clear()
