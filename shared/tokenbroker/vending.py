"""Vending: hand a valid access token to an authorised caller, refreshing through the one engine.

The fast path is one AWS call: the connection secret carries token, generation, status and
metadata, so a fresh token is answered from a single GetSecretValue. Anything else goes through
``RefreshEngine.refresh`` (the single-flight algorithm shared with the scheduled worker) with a
predicate that the engine evaluates on the token it re-reads under the lease.

When another worker holds the lease (``contended``), a vend does not refresh again: it polls the
secret until the winner's generation appears, for at most ``wait_seconds``, then answers
``RefreshInProgress``. There is deliberately no in-process token cache: every answer reflects the
current secret version, so a token rotated away by a refresh is never served afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from tokenbroker.api.contract import (
    MIN_TTL_DEFAULT,
    ConnectionAnswer,
    ConnectionListAnswer,
    LastErrorAnswer,
    TokenAnswer,
    validate_min_ttl,
    validate_token_sha256,
)
from tokenbroker.errors import (
    ConnectionNotFound,
    NeedsReauthorization,
    PendingConfirmation,
    ProviderError,
    ProviderErrorKind,
    RefreshInProgress,
)
from tokenbroker.events import DomainEvent, EventSink, EventType
from tokenbroker.keys import ConnectionKey, validate_provider_name
from tokenbroker.models import Connection, ConnectionStatus, StoredToken
from tokenbroker.redaction import SECRET_FIELD_NAMES

if TYPE_CHECKING:
    from tokenbroker.clock import Clock
    from tokenbroker.repository import ConnectionRepository

# A vend never refreshes a token that still has this share of its lifetime left, whatever min_ttl
# asks: asking for more than a provider's lifetime would otherwise refresh on every vend, and on a
# rotating provider (Worksection) each refresh kills the token every other consumer holds.
FRESH_SHARE = 0.9
# Polling for the winner's generation: short first (a refresh takes ~100 ms-1 s), then capped.
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 0.5
# Retry-After when nobody told us better: about one refresh round trip.
DEFAULT_RETRY_AFTER = 1.0
DEFAULT_PROVIDER_RETRY_AFTER = 5.0
# Token extras that are never vended as metadata even if a provider put them into `extra`.
_SECRET_WORDS = ("token", "secret", "password", "code", "verifier")

REAUTH_HINT = "create a new connect session (POST /connect-sessions) and send the end user to its connect_url"


# --- collaborators: only what vending needs, satisfied structurally by the real stores ---------


class RefreshResultLike(Protocol):
    @property
    def outcome(self) -> str: ...

    @property
    def generation(self) -> int | None: ...

    @property
    def stored(self) -> StoredToken | None: ...

    @property
    def error(self) -> ProviderError | None: ...

    @property
    def retry_after(self) -> float | None: ...


class Refresher(Protocol):
    def refresh(
        self,
        key: ConnectionKey,
        *,
        reason: str = ...,
        should_refresh: Callable[[StoredToken], bool] | None = ...,
    ) -> RefreshResultLike: ...


class ProviderNames(Protocol):
    """The catalog: ``get`` raises ``UnknownProvider`` for a name it does not know."""

    def get(self, name: str) -> object: ...


# --- answers ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VendedToken:
    """What a consumer receives. Never a refresh token; ``repr`` hides the access token."""

    access_token: str = field(repr=False)
    token_type: str
    expires_at: int
    expires_in: int
    scopes: tuple[str, ...]
    generation: int
    metadata: Mapping[str, str]

    @classmethod
    def of(cls, stored: StoredToken, now: float) -> VendedToken:
        token = stored.token
        return cls(
            access_token=token.access_token,
            token_type="Bearer" if token.token_type.lower() == "bearer" else token.token_type,
            expires_at=token.expires_at,
            expires_in=token.expires_in(now),
            scopes=token.scopes,
            generation=stored.generation,
            metadata={**_public_extras(token.extra), **stored.metadata},
        )

    def to_json(self) -> TokenAnswer:
        return {
            "access_token": self.access_token,
            "token_type": self.token_type,
            "expires_at": self.expires_at,
            "expires_in": self.expires_in,
            "scopes": list(self.scopes),
            "generation": self.generation,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True, slots=True)
class ConnectionView:
    """Status and metadata of a connection, as the API shows it: never a token."""

    provider: str
    connection_id: str
    status: str
    generation: int
    expires_at: float | None
    refresh_expires_at: float | None
    next_refresh_at: float | None
    refresh_in_progress: bool
    failures: int
    last_error: LastErrorAnswer | None
    metadata: Mapping[str, str]
    scopes: tuple[str, ...]
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, connection: Connection, now: float) -> ConnectionView:
        error = connection.last_error
        return cls(
            provider=connection.key.provider,
            connection_id=connection.key.connection_id,
            status=str(connection.status),
            generation=connection.generation,
            expires_at=connection.expires_at,
            refresh_expires_at=connection.refresh_expires_at,
            next_refresh_at=connection.next_refresh_at,
            refresh_in_progress=connection.lease_held(now),
            failures=connection.failures,
            last_error=None if error is None else {"code": error.code, "message": error.message, "at": error.at},
            metadata=dict(connection.metadata),
            scopes=connection.scopes,
            created_at=connection.created_at,
            updated_at=connection.updated_at,
        )

    def to_json(self) -> ConnectionAnswer:
        return {
            "provider": self.provider,
            "connection_id": self.connection_id,
            "status": self.status,
            "generation": self.generation,
            "expires_at": self.expires_at,
            "refresh_expires_at": self.refresh_expires_at,
            "next_refresh_at": self.next_refresh_at,
            "refresh_in_progress": self.refresh_in_progress,
            "failures": self.failures,
            "last_error": None if self.last_error is None else LastErrorAnswer(**self.last_error),
            "metadata": dict(self.metadata),
            "scopes": list(self.scopes),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class ConnectionList:
    connections: list[ConnectionView]
    cursor: str | None

    def to_json(self) -> ConnectionListAnswer:
        return {"connections": [c.to_json() for c in self.connections], "cursor": self.cursor}


def needs_refresh(stored: StoredToken, min_ttl: int, now: float) -> bool:
    """Expired, or fewer than ``min_ttl`` seconds left unless the token is as fresh as a new one would be."""
    token = stored.token
    remaining = token.expires_at - now
    lifetime = token.expires_at - token.obtained_at if token.obtained_at > 0 else math.inf
    return remaining <= 0 or remaining < min(min_ttl, lifetime * FRESH_SHARE)


def _public_extras(extra: Mapping[str, str]) -> dict[str, str]:
    return {
        name: value
        for name, value in extra.items()
        if name.lower() not in SECRET_FIELD_NAMES and not any(word in name.lower() for word in _SECRET_WORDS)
    }


# --- the service ------------------------------------------------------------------------------


class VendingService:
    def __init__(
        self,
        *,
        repository: ConnectionRepository,
        refresher: Refresher,
        clock: Clock,
        wait_seconds: float,
        events: EventSink | None = None,
        catalog: ProviderNames | None = None,
    ) -> None:
        self._repo = repository
        self._refresher = refresher
        self._clock = clock
        self._wait_seconds = max(0.0, wait_seconds)
        self._events = events
        self._catalog = catalog

    # --- tokens ---------------------------------------------------------------------------------

    def vend(self, key: ConnectionKey, min_ttl: int = MIN_TTL_DEFAULT) -> VendedToken:
        """A token with at least ``min_ttl`` seconds left (or as fresh as the provider makes them).

        Fresh token: exactly one AWS call (GetSecretValue).
        """
        min_ttl = validate_min_ttl(min_ttl)
        self._check_provider(key.provider)
        stored = self._repo.token(key)
        _require_usable(stored)
        if not needs_refresh(stored, min_ttl, self._clock.now()):
            return VendedToken.of(stored, self._clock.now())

        def stale(candidate: StoredToken) -> bool:
            return needs_refresh(candidate, min_ttl, self._clock.now())

        current = self._refresh(key, stored, should_refresh=stale, accept=lambda s: not stale(s))
        return VendedToken.of(current, self._clock.now())

    def refresh_rejected(self, key: ConnectionKey, rejected_token_sha256: str | None = None) -> VendedToken:
        """Compare-and-refresh: refresh only while the rejected token is still the current one.

        Many consumers that all saw a 401 for the same token cause one refresh; the others get the
        newer token. Without a hash, force a refresh of the generation seen now (still single-flight:
        concurrent forced refreshes of one generation make one provider call).
        """
        if rejected_token_sha256 is not None:
            rejected_token_sha256 = validate_token_sha256(rejected_token_sha256)
        self._check_provider(key.provider)
        stored = self._repo.token(key)
        _require_usable(stored)
        seen = stored.generation

        def still_current(candidate: StoredToken) -> bool:
            if rejected_token_sha256 is None:
                return candidate.generation == seen
            return candidate.token.access_token_sha256 == rejected_token_sha256

        if not still_current(stored):
            return VendedToken.of(stored, self._clock.now())
        current = self._refresh(key, stored, should_refresh=still_current, accept=lambda s: not still_current(s))
        return VendedToken.of(current, self._clock.now())

    def _refresh(
        self,
        key: ConnectionKey,
        seen: StoredToken,
        *,
        should_refresh: Callable[[StoredToken], bool],
        accept: Callable[[StoredToken], bool],
    ) -> StoredToken:
        result = self._refresher.refresh(key, reason="vend", should_refresh=should_refresh)
        outcome = str(result.outcome)
        if outcome in ("refreshed", "reauthenticated", "not_needed"):
            current = result.stored or self._repo.token(key)
            _require_usable(current)
            return current
        if outcome == "contended":
            return self._await_winner(key, seen.generation, accept, result.retry_after)
        if outcome == "needs_reauth":
            raise NeedsReauthorization(f"the connection needs re-authorisation: {REAUTH_HINT}")
        if outcome == "transient_failure":
            retry_after = result.retry_after or (result.error.retry_after if result.error else None)
            raise ProviderError(
                ProviderErrorKind.TRANSIENT,
                f"{key.provider} is unavailable, the token could not be refreshed; try again later",
                provider=key.provider,
                provider_code=result.error.provider_code if result.error else None,
                retry_after=retry_after or DEFAULT_PROVIDER_RETRY_AFTER,
            )
        if result.error is not None:  # configuration_failure, account_failure: keep their own code
            raise result.error
        raise ProviderError(
            ProviderErrorKind.TRANSIENT,
            f"refresh of {key} ended with {outcome}",
            provider=key.provider,
            retry_after=DEFAULT_RETRY_AFTER,
        )

    def _await_winner(
        self,
        key: ConnectionKey,
        seen_generation: int,
        accept: Callable[[StoredToken], bool],
        retry_after: float | None,
    ) -> StoredToken:
        """Poll the secret (one GetSecretValue per poll) until the lease holder's write lands."""
        deadline = self._clock.now() + self._wait_seconds
        for delay in _poll_delays():
            remaining = deadline - self._clock.now()
            if remaining <= 0:
                break
            self._clock.sleep(min(delay, remaining))
            current = self._repo.token(key)
            _require_usable(current)
            if current.generation > seen_generation and accept(current):
                return current
        raise RefreshInProgress(
            f"a refresh of {key} is in progress; try again shortly",
            retry_after=max(DEFAULT_RETRY_AFTER, retry_after or 0.0),
        )

    # --- connections ----------------------------------------------------------------------------

    def get_connection(self, key: ConnectionKey) -> ConnectionView:
        self._check_provider(key.provider)
        connection = self._repo.get(key)
        if connection is None:
            raise ConnectionNotFound(f"no connection {key}")
        return ConnectionView.of(connection, self._clock.now())

    def view(self, connection: Connection) -> ConnectionView:
        """What the API shows of ``connection`` (never a token)."""
        return ConnectionView.of(connection, self._clock.now())

    def list_connections(self, provider: str, *, limit: int = 50, cursor: str | None = None) -> ConnectionList:
        self._check_provider(validate_provider_name(provider))
        page = self._repo.list_by_provider(provider, limit=limit, cursor=cursor)
        now = self._clock.now()
        return ConnectionList([ConnectionView.of(c, now) for c in page.connections], page.cursor)

    def delete_connection(self, key: ConnectionKey) -> None:
        """Disconnect: the secret first (vending stops at once), then the item, then the event."""
        self._check_provider(key.provider)
        connection = self._repo.delete(key)
        if self._events is not None:
            generation = connection.generation if connection is not None else None
            self._events.publish(
                DomainEvent.for_key(EventType.CONNECTION_DELETED, key, generation=generation, reason="api")
            )

    def _check_provider(self, provider: str) -> None:
        """404 for a provider the catalog does not know (no AWS call: the catalog is packaged)."""
        if self._catalog is not None:
            self._catalog.get(provider)


def _require_usable(stored: StoredToken) -> None:
    if stored.status == ConnectionStatus.PENDING:
        # A brand-new connection in confirm mode: its only grant is not the application's yet.
        raise PendingConfirmation("the connection awaits the application's confirmation of its connect session")
    # needs_reauth and disabled alike: only a new connect session brings the connection back.
    if stored.status != ConnectionStatus.ACTIVE:
        raise NeedsReauthorization(f"the connection is {stored.status}: {REAUTH_HINT}")


def _poll_delays() -> Iterator[float]:
    delay = FIRST_POLL_SECONDS
    while True:
        yield delay
        delay = min(delay * 2, MAX_POLL_SECONDS)
