"""The connection aggregate: one item (status, schedule, lease) and one secret (the tokens), kept
consistent by one protocol, in the manner of Powertools' ``BasePersistenceLayer``.

The refresh engine, the connect flow, vending and the sweep talk to ``ConnectionRepository`` only;
it owns the rules that keep a rotated refresh token from ever being lost or overwritten:

- **Secret first, item second.** A refresh writes the new secret version, then commits the item
  (fenced by the lease and the generation); a connect writes the item first (which takes the lease
  away from any refresh of the old grant), then the secret.
- **One next generation.** Every write that changes what is current (a refresh, a re-connect, a
  needs_reauth mark) writes generation N + 1 with the same idempotency token, so exactly one of
  them lands; the others get ``GenerationConflict`` and adopt the winner.
- **The secret is the truth.** An item behind its secret (a crash between the two writes) is
  brought up to it by whoever holds the lease next (``adopt``), as active or as needs_reauth,
  whatever the secret says.
- **Durable within the lease.** A secret write after the provider answered is retried until it
  lands or the lease is about to end: later, a new lease holder may act on the old token.

Backends implement the primitives only (``ItemStore``, ``SecretStore``): the AWS one is
``ConnectionStore`` (DynamoDB) + ``TokenStore`` (Secrets Manager); the in-memory twin is
``stores.memory``. A third one (DynamoDB + KMS, say) is one ``SecretStore`` file.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tokenbroker.clock import Clock
from tokenbroker.errors import ConnectionNotFound, LeaseLost, NeedsReauthorization, TokenBrokerError
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import Attempt, Connection, ConnectionStatus, LastError, Lease, PasswordLogin, StoredToken
from tokenbroker.observability import logger
from tokenbroker.schedule import next_refresh_at
from tokenbroker.stores.tokens import GenerationConflict
from tokenbroker.tokens import TokenSet

# Tries of a secret write after the provider answered (the token exists nowhere else).
DEFAULT_PUT_ATTEMPTS = 5
PUT_RETRY_BASE = 0.25
# Stop retrying this long before the lease ends: a write after it races a new lease holder.
LEASE_SAFETY = 5.0
# A connect flow writes item then secret; a refresh of the old grant may take the generation in
# between: move past it this many times.
MAX_SAVE_ATTEMPTS = 3


# --- the primitives a backend implements ----------------------------------------------------------


class ConnectionPageLike(Protocol):
    @property
    def connections(self) -> list[Connection]: ...

    @property
    def cursor(self) -> str | None: ...


class ItemStore(Protocol):
    """One record per connection, every write one conditional update (``stores.connections``)."""

    def get(self, key: ConnectionKey) -> Connection | None: ...

    def list_by_provider(self, provider: str, limit: int = ..., cursor: str | None = ...) -> ConnectionPageLike: ...

    def due(self, before: float, limit: int | None = None) -> Iterator[ConnectionKey]: ...

    def save_connected(
        self,
        key: ConnectionKey,
        *,
        expires_at: float | None,
        refresh_expires_at: float | None,
        next_refresh_at: float | None,
        metadata: Mapping[str, str] | None = None,
        scopes: Sequence[str] = (),
    ) -> Connection: ...

    def save_pending(self, key: ConnectionKey, *, metadata: Mapping[str, str], scopes: Sequence[str]) -> bool: ...

    def delete_pending(self, key: ConnectionKey) -> bool: ...

    def acquire_lease(
        self, key: ConnectionKey, owner: str, duration: float, *, record_attempt: bool = False
    ) -> Connection | None: ...

    def release(self, key: ConnectionKey, owner: str, *, restore: Attempt | None = None) -> bool: ...

    def commit_refresh(
        self,
        key: ConnectionKey,
        owner: str,
        expected_generation: int,
        *,
        expires_at: float | None,
        refresh_expires_at: float | None,
        next_refresh_at: float | None,
        metadata: Mapping[str, str] | None = None,
        scopes: Sequence[str] | None = None,
        generation: int | None = None,
    ) -> Connection: ...

    def record_failure(
        self,
        key: ConnectionKey,
        owner: str,
        error: LastError | TokenBrokerError,
        next_refresh_at: float,
        *,
        keep_attempt: Attempt | None = None,
    ) -> None: ...

    def mark_needs_reauth(
        self, key: ConnectionKey, owner: str, error: LastError | TokenBrokerError, *, generation: int | None = None
    ) -> Connection: ...

    def delete(self, key: ConnectionKey) -> bool: ...


class SecretStore(Protocol):
    """Versioned, idempotent token writes (``stores.tokens``): one version per generation."""

    def get(self, key: ConnectionKey) -> StoredToken: ...

    def put(self, key: ConnectionKey, stored: StoredToken, *, restore_deleted: bool = False) -> str: ...

    def put_pending(self, key: ConnectionKey, stored: StoredToken, *, request_id: str) -> str: ...

    def get_pending(self, key: ConnectionKey, version_id: str) -> StoredToken | None: ...

    def drop_pending(self, key: ConnectionKey, version_id: str) -> None: ...

    def delete(self, key: ConnectionKey, recovery_window_days: int = ...) -> bool: ...


# --- outcomes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Schedule:
    """What the item keeps of a token: its expiry and when to refresh it next."""

    expires_at: float | None
    refresh_expires_at: float | None
    next_refresh_at: float | None


ScheduleOf = Callable[[StoredToken], Schedule]


def initial_schedule(
    token: TokenSet, *, refresh_token_ttl: float | None, login: PasswordLogin | None, now: float
) -> Schedule:
    """The schedule a freshly connected grant starts with (what ``save_connected`` is given).

    ``refresh_token_ttl`` is the catalog entry's refresh-token lifetime (None: unknown, or the
    refresh tokens do not expire): the refresh token's expiry is estimated from it. The first
    refresh is refresh-ahead of the access token's expiry (``schedule.next_refresh_at``). A grant
    with neither a refresh token nor a stored login has nothing to refresh with: it is never due
    and simply lives until it expires.
    """
    refresh_expires_at = (
        float(token.obtained_at + refresh_token_ttl) if token.refresh_token and refresh_token_ttl else None
    )
    due = (
        next_refresh_at(token.expires_at, token.obtained_at, refresh_expires_at, now)
        if token.refresh_token or login
        else None
    )
    return Schedule(float(token.expires_at), refresh_expires_at, due)


class Landed(enum.StrEnum):
    COMMITTED = "committed"  # secret and item agree on our write
    COMMIT_LOST = "commit_lost"  # our secret landed, the item commit lost the lease: the next holder adopts it
    SUPERSEDED = "superseded"  # another writer took this generation: ``current`` is theirs


@dataclass(frozen=True, slots=True)
class Written:
    landed: Landed
    current: StoredToken  # the secret that is current now (ours unless superseded)
    adopted: bool = False  # superseded: the item was brought up to the winner by us


@dataclass(frozen=True, slots=True)
class Saved:
    connection: Connection
    previous: Connection | None  # the item as it was before (None: a brand-new connection)
    stored: StoredToken  # the secret written: current now


Notice = Callable[[str, ConnectionKey], None]


def _ignore(_name: str, _key: ConnectionKey) -> None:
    return None


class ConnectionRepository:
    def __init__(
        self,
        *,
        items: ItemStore,
        secrets: SecretStore,
        clock: Clock,
        put_attempts: int = DEFAULT_PUT_ATTEMPTS,
        notice: Notice = _ignore,
    ) -> None:
        self.items = items
        self.secrets = secrets
        self._clock = clock
        self._put_attempts = max(1, put_attempts)
        # Protocol events worth a metric (TokenWriteLost, TokenWriteConflict, RefreshCommitLost).
        self._notice = notice

    @classmethod
    def memory(cls, clock: Clock, *, put_attempts: int = DEFAULT_PUT_ATTEMPTS) -> ConnectionRepository:
        """The in-memory twin (unit tests, benchmarks, the model-based test)."""
        from tokenbroker.stores.memory import MemoryConnectionStore, MemoryTokenStore  # noqa: PLC0415

        return cls(
            items=MemoryConnectionStore(clock=clock), secrets=MemoryTokenStore(), clock=clock, put_attempts=put_attempts
        )

    def with_notice(self, notice: Notice) -> ConnectionRepository:
        """The same stores, reporting protocol events to ``notice`` (the engine's metrics)."""
        return ConnectionRepository(
            items=self.items, secrets=self.secrets, clock=self._clock, put_attempts=self._put_attempts, notice=notice
        )

    # --- reads ------------------------------------------------------------------------------------

    def get(self, key: ConnectionKey) -> Connection | None:
        """The item (strongly consistent); None for an unknown or deleted connection."""
        return self.items.get(key)

    def token(self, key: ConnectionKey) -> StoredToken:
        """The current secret: one read, what vending serves. Raises ``ConnectionNotFound``."""
        return self.secrets.get(key)

    def due(self, before: float, limit: int | None = None) -> Iterator[ConnectionKey]:
        return self.items.due(before, limit)

    def list_by_provider(self, provider: str, limit: int = 100, cursor: str | None = None) -> ConnectionPageLike:
        return self.items.list_by_provider(provider, limit=limit, cursor=cursor)

    # --- the lease --------------------------------------------------------------------------------

    def acquire(self, key: ConnectionKey, owner: str, duration: float) -> Connection | None:
        """Take the lease and record our attempt (one write); the answer shows an interrupted one."""
        return self.items.acquire_lease(key, owner, duration, record_attempt=True)

    def release(self, key: ConnectionKey, owner: str, *, restore: Attempt | None = None) -> None:
        """Give the lease back; ``restore`` puts back the interrupted attempt this run found."""
        try:
            self.items.release(key, owner, restore=restore)
        except Exception:  # the lease expires by itself; a failed release must not hide a result
            logger.warning("lease release failed", extra=_fields(key), exc_info=True)

    # --- outcomes of a refresh (fenced by the lease) ------------------------------------------------

    def write_refresh(self, connection: Connection, owner: str, new: StoredToken, schedule_of: ScheduleOf) -> Written:
        """Make ``new`` (generation N + 1) current: the secret durably, then the item.

        Raises only when the secret write itself failed for good (the token is lost; logged).
        """
        key = connection.key
        try:
            self._put_durably(connection, new)
        except GenerationConflict:
            return self._superseded(connection, owner, schedule_of)
        landed = Landed.COMMITTED if self._commit(connection, owner, new, schedule_of) else Landed.COMMIT_LOST
        logger.info("token written", extra={**_fields(key), "generation": new.generation, "landed": str(landed)})
        return Written(landed, new)

    def mark_needs_reauth(
        self, connection: Connection, owner: str, stored: StoredToken, error: TokenBrokerError, schedule_of: ScheduleOf
    ) -> Written:
        """The grant is dead: the secret says so first (vends answer 409 at once), then the item.

        The mark is generation N + 1: a re-connect or a late refresh that took that generation first
        wins, and this run adopts it instead of pushing it out of AWSCURRENT.
        """
        generation = max(stored.generation, connection.generation) + 1
        status = ConnectionStatus.NEEDS_REAUTH
        marked = StoredToken(stored.token, generation, status, dict(stored.metadata), stored.login)
        try:
            self._put_durably(connection, marked)
        except GenerationConflict:
            return self._superseded(connection, owner, schedule_of)
        self.items.mark_needs_reauth(connection.key, owner, error, generation=generation)
        return Written(Landed.COMMITTED, marked)

    def adopt(self, connection: Connection, owner: str, current: StoredToken, schedule_of: ScheduleOf) -> bool:
        """Bring the item up to a newer secret another run (or a crashed one) wrote; else release.

        False when there was nothing to adopt or the lease went meanwhile.
        """
        if current.generation <= connection.generation:
            self.release(connection.key, owner)
            return False
        if current.status is ConnectionStatus.NEEDS_REAUTH:
            try:
                error = NeedsReauthorization("the grant is dead (found marked by an earlier run)")
                self.items.mark_needs_reauth(connection.key, owner, error, generation=current.generation)
            except LeaseLost:
                return False
            return True
        return self._commit(connection, owner, current, schedule_of)

    def record_failure(
        self,
        key: ConnectionKey,
        owner: str,
        error: TokenBrokerError,
        next_refresh_at: float,
        *,
        keep_attempt: Attempt | None = None,
    ) -> None:
        """A failure that keeps the token: backoff on the item, lease released."""
        self.items.record_failure(key, owner, error, next_refresh_at, keep_attempt=keep_attempt)

    # --- the connect flow ---------------------------------------------------------------------------

    def save_connected(
        self,
        key: ConnectionKey,
        token: TokenSet,
        *,
        metadata: Mapping[str, str],
        scopes: Sequence[str],
        login: PasswordLogin | None,
        schedule: Schedule,
    ) -> Saved:
        """Make a freshly granted ``token`` current: the item first, then the secret.

        The item write clears any refresh's lease and takes the next generation, so a refresh of
        the old grant can no longer commit; if it already wrote that generation's secret, move past
        it. A brand-new connection whose secret never landed is removed again.
        """
        before = self.items.get(key)
        for attempt in range(1, MAX_SAVE_ATTEMPTS + 1):
            connection = self.items.save_connected(
                key,
                expires_at=schedule.expires_at,
                refresh_expires_at=schedule.refresh_expires_at,
                next_refresh_at=schedule.next_refresh_at,
                metadata=metadata,
                scopes=tuple(scopes),
            )
            stored = StoredToken(token, connection.generation, ConnectionStatus.ACTIVE, dict(metadata), login)
            try:
                self.secrets.put(key, stored, restore_deleted=True)
                return Saved(connection, before, stored)
            except GenerationConflict:
                if attempt == MAX_SAVE_ATTEMPTS:
                    raise
                logger.info("a refresh of the old grant took this generation; moving past it", extra=_fields(key))
            except Exception:
                if before is None:
                    self._forget(key)
                raise
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def save_pending(self, key: ConnectionKey, stored: StoredToken, *, request_id: str) -> str:
        """A grant awaiting the application's confirmation (``stored.status`` pending): its version id.

        Never current for an existing connection; a brand-new one is listed as pending.
        """
        version = self.secrets.put_pending(key, stored, request_id=request_id)
        self.items.save_pending(key, metadata=stored.metadata, scopes=stored.token.scopes)
        return version

    def pending(self, key: ConnectionKey, version_id: str) -> StoredToken | None:
        return self.secrets.get_pending(key, version_id)

    def drop_pending(self, key: ConnectionKey, version_id: str) -> None:
        self.secrets.drop_pending(key, version_id)

    def discard_pending(self, key: ConnectionKey, version_id: str | None) -> None:
        """A pending grant is not wanted: unlabel it; a connection that only ever held it goes too."""
        if version_id:
            self.secrets.drop_pending(key, version_id)
        if self.items.delete_pending(key):
            self.secrets.delete(key)

    # --- disconnect ---------------------------------------------------------------------------------

    def delete(self, key: ConnectionKey) -> Connection | None:
        """The secret first (vending stops at once), then the item. Raises ``ConnectionNotFound``
        when there was nothing; returns the item as it was (None if only a secret existed)."""
        connection = self.items.get(key)
        secret_deleted = self.secrets.delete(key)
        item_deleted = self.items.delete(key)
        if not (secret_deleted or item_deleted):
            raise ConnectionNotFound(f"no connection {key}")
        return connection

    # --- internals ----------------------------------------------------------------------------------

    def _superseded(self, connection: Connection, owner: str, schedule_of: ScheduleOf) -> Written:
        key = connection.key
        self._notice("TokenWriteConflict", key)
        current = self.secrets.get(key)
        logger.warning(
            "another writer wrote this generation first; keeping its token",
            extra={**_fields(key), "generation": current.generation},
        )
        adopted = self.adopt(connection, owner, current, schedule_of)
        return Written(Landed.SUPERSEDED, current, adopted=adopted)

    def _commit(self, connection: Connection, owner: str, new: StoredToken, schedule_of: ScheduleOf) -> bool:
        schedule = schedule_of(new)
        try:
            self.items.commit_refresh(
                connection.key,
                owner,
                connection.generation,
                expires_at=schedule.expires_at,
                refresh_expires_at=schedule.refresh_expires_at,
                next_refresh_at=schedule.next_refresh_at,
                scopes=new.token.scopes,
                generation=new.generation,
            )
        except LeaseLost:
            # The secret holds the new generation and is the truth: whoever holds the item next sees
            # the secret ahead of the item and adopts it.
            logger.warning("token written but the item commit lost its lease", extra=_fields(connection.key))
            self._notice("RefreshCommitLost", connection.key)
            return False
        return True

    def _put_durably(self, connection: Connection, new: StoredToken) -> None:
        """Write until it lands: the same idempotency token makes every retry the same version."""
        key = connection.key
        lease: Lease | None = connection.lease
        lease_ends = lease.until if lease is not None else self._clock.now() + 90.0
        delay = PUT_RETRY_BASE
        for attempt in range(1, self._put_attempts + 1):
            try:
                self.secrets.put(key, new)
                return
            except TokenBrokerError:
                raise  # GenerationConflict, ConnectionNotFound: a decision, not a hiccup
            except Exception:
                out_of_time = self._clock.now() + delay > lease_ends - LEASE_SAFETY
                if attempt == self._put_attempts or out_of_time:
                    logger.error(
                        "token write failed after the provider answered; the new token is lost",
                        extra={**_fields(key), "attempts": attempt},
                    )
                    self._notice("TokenWriteLost", key)
                    raise
                logger.warning("token write failed, retrying", extra={**_fields(key), "attempt": attempt})
                self._clock.sleep(delay)
                delay *= 2

    def _forget(self, key: ConnectionKey) -> None:
        """The token never landed: a brand-new record must not claim an active connection."""
        try:
            self.items.delete(key)
        except Exception:  # the original failure is what the caller must see
            logger.warning("could not remove a half-saved connection", extra=_fields(key))


def _fields(key: ConnectionKey) -> dict[str, str]:
    return {"provider": key.provider, "connection_id": key.connection_id}
