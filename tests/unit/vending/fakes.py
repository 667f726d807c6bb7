"""In-memory collaborators of VendingService: just enough behaviour to test its decisions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from tokenbroker.errors import ConnectionNotFound, ProviderError, UnknownProvider
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import Connection, ConnectionStatus, Lease, StoredToken
from tokenbroker.tokens import TokenSet

NOW = 1_800_000_000.0
KEY = ConnectionKey("worksection", "acme-1")


def token_set(
    access_token: str = "access-token-0001", *, expires_in: float = 3600, lifetime: float = 86400
) -> TokenSet:
    expires_at = int(NOW + expires_in)
    return TokenSet(
        access_token=access_token,
        token_type="bearer",
        expires_at=expires_at,
        obtained_at=int(expires_at - lifetime),
        refresh_token="refresh-token-0001",
        scopes=("projects_read", "tasks_read"),
        extra={"account_url": "https://acme.worksection.com", "id_token": "id-token-secret-0001"},
    )


def stored(
    access_token: str = "access-token-0001",
    *,
    generation: int = 3,
    expires_in: float = 3600,
    lifetime: float = 86400,
    status: ConnectionStatus = ConnectionStatus.ACTIVE,
) -> StoredToken:
    return StoredToken(
        token=token_set(access_token, expires_in=expires_in, lifetime=lifetime),
        generation=generation,
        status=status,
        metadata={"user_email": "ann@example.com"},
    )


def connection(key: ConnectionKey = KEY, *, lease_until: float | None = None) -> Connection:
    return Connection(
        key=key,
        status=ConnectionStatus.ACTIVE,
        generation=3,
        expires_at=NOW + 3600,
        refresh_expires_at=NOW + 30 * 86400,
        next_refresh_at=NOW + 3000,
        lease=Lease("someone", lease_until) if lease_until is not None else None,
        attempt=None,
        failures=0,
        last_error=None,
        metadata={"user_email": "ann@example.com"},
        scopes=("projects_read",),
        created_at=NOW - 86400,
        updated_at=NOW - 60,
    )


class FakeTokens:
    """``get`` answers from a script of versions (the last one repeats), counting calls."""

    def __init__(self, *versions: StoredToken) -> None:
        self.versions = list(versions)
        self.gets = 0
        self.deleted: list[ConnectionKey] = []
        self._lock = threading.Lock()

    def get(self, key: ConnectionKey) -> StoredToken:
        with self._lock:
            self.gets += 1
            if not self.versions:
                raise ConnectionNotFound(f"no connection {key}")
            return self.versions.pop(0) if len(self.versions) > 1 else self.versions[0]

    def delete(self, key: ConnectionKey, recovery_window_days: int = 7) -> bool:
        self.deleted.append(key)
        existed = bool(self.versions)
        self.versions = []
        return existed


@dataclass
class FakePage:
    connections: list[Connection]
    cursor: str | None


class FakeConnections:
    def __init__(self, *items: Connection) -> None:
        self.items = {c.key: c for c in items}
        self.list_calls: list[tuple[str, int, str | None]] = []

    def get(self, key: ConnectionKey) -> Connection | None:
        return self.items.get(key)

    def list_by_provider(self, provider: str, limit: int = 100, cursor: str | None = None) -> FakePage:
        self.list_calls.append((provider, limit, cursor))
        found = [c for k, c in sorted(self.items.items(), key=lambda kv: str(kv[0])) if k.provider == provider]
        return FakePage(found[:limit], "next-page" if len(found) > limit else None)

    def delete(self, key: ConnectionKey) -> bool:
        return self.items.pop(key, None) is not None


@dataclass(frozen=True)
class Result:
    outcome: str
    key: ConnectionKey = KEY
    generation: int | None = None
    stored: StoredToken | None = None
    error: ProviderError | None = None
    retry_after: float | None = None


@dataclass
class FakeRefresher:
    """Answers with ``result``; records the predicate so tests can probe it."""

    result: Result
    calls: list[tuple[ConnectionKey, str]] = field(default_factory=list)
    predicates: list[Callable[[StoredToken], bool]] = field(default_factory=list)

    def refresh(
        self,
        key: ConnectionKey,
        *,
        reason: str = "scheduled",
        should_refresh: Callable[[StoredToken], bool] | None = None,
    ) -> Result:
        self.calls.append((key, reason))
        if should_refresh is not None:
            self.predicates.append(should_refresh)
        return self.result


class FakeCatalog:
    def __init__(self, *names: str) -> None:
        self.known = set(names)

    def get(self, name: str) -> object:
        if name not in self.known:
            raise UnknownProvider(f"unknown provider {name}")
        return name


def newer(previous: StoredToken, access_token: str, *, expires_in: float = 86400) -> StoredToken:
    return replace(
        previous,
        token=token_set(access_token, expires_in=expires_in),
        generation=previous.generation + 1,
    )
