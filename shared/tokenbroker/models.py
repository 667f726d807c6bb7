"""Records the stores keep: the connection item (never a token) and the token secret value."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenbroker.errors import TokenBrokerError
from tokenbroker.keys import ConnectionKey
from tokenbroker.redaction import remember_secret
from tokenbroker.tokens import TokenSet

# A stored error message is shown on status pages and in events: keep it short.
MAX_ERROR_MESSAGE_LENGTH = 500


class ConnectionStatus(enum.StrEnum):
    ACTIVE = "active"
    # A grant that awaits the application's confirmation (connect sessions with ``confirm``).
    PENDING = "pending"
    NEEDS_REAUTH = "needs_reauth"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class LastError:
    """The last refresh failure: our stable error code and a message that is safe to show."""

    code: str
    message: str
    at: float

    def __post_init__(self) -> None:
        if len(self.message) > MAX_ERROR_MESSAGE_LENGTH:
            object.__setattr__(self, "message", self.message[:MAX_ERROR_MESSAGE_LENGTH])

    @classmethod
    def from_exception(cls, error: TokenBrokerError, at: float) -> LastError:
        # TokenBrokerError messages are safe by contract (no tokens, codes or passwords).
        return cls(code=error.code, message=error.message, at=at)


@dataclass(frozen=True, slots=True)
class Lease:
    owner: str
    until: float

    def held_at(self, now: float) -> bool:
        return self.until >= now


@dataclass(frozen=True, slots=True)
class Attempt:
    """A refresh that started under a lease; still present means it never finished."""

    owner: str
    started_at: float
    generation: int


@dataclass(frozen=True, slots=True)
class Connection:
    key: ConnectionKey
    status: ConnectionStatus
    generation: int
    expires_at: float | None
    refresh_expires_at: float | None
    next_refresh_at: float | None
    lease: Lease | None
    attempt: Attempt | None
    failures: int
    last_error: LastError | None
    metadata: dict[str, str]
    scopes: tuple[str, ...]
    created_at: float
    updated_at: float

    @property
    def is_active(self) -> bool:
        return self.status is ConnectionStatus.ACTIVE

    def lease_held(self, now: float) -> bool:
        return self.lease is not None and self.lease.held_at(now)


@dataclass(frozen=True, slots=True)
class PasswordLogin:
    """A Workly login the end user let us keep to re-authenticate. ``repr`` hides the password."""

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        # Read back from a secret by the refresher: mask it in every log line from now on.
        remember_secret(self.password)


@dataclass(frozen=True, slots=True)
class StoredToken:
    """The JSON of one connection secret.

    It carries generation, status and metadata as well as the token so that vending a fresh
    token costs exactly one GetSecretValue.
    """

    token: TokenSet
    generation: int
    status: ConnectionStatus = ConnectionStatus.ACTIVE
    metadata: dict[str, str] = field(default_factory=dict)
    login: PasswordLogin | None = None

    def to_json(self) -> str:
        """Deterministic (sorted, compact): a retried write must send byte-identical content."""
        data: dict[str, Any] = {
            **self.token.to_dict(),
            "generation": self.generation,
            "status": self.status.value,
            "metadata": dict(self.metadata),
        }
        if self.login is not None:
            data["login"] = {"username": self.login.username, "password": self.login.password}
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StoredToken:
        data = json.loads(text)
        if not isinstance(data, Mapping):
            raise ValueError("a token secret must hold a JSON object")
        login = data.get("login")
        return cls(
            token=TokenSet.from_dict(data),
            generation=int(data.get("generation") or 0),
            status=ConnectionStatus(data.get("status") or ConnectionStatus.ACTIVE),
            metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
            login=PasswordLogin(str(login["username"]), str(login["password"])) if login else None,
        )
