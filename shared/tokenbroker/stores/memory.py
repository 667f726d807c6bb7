"""The in-memory twin of the AWS backend: the same primitives with the same conditions.

``MemoryConnectionStore`` mirrors ``ConnectionStore`` (one DynamoDB item per connection, every
write one conditional update) and ``MemoryTokenStore`` mirrors ``TokenStore`` (one Secrets Manager
secret per connection: versions keyed by an idempotency token, the AWSCURRENT/AWSPREVIOUS labels, a
pending label, deletion with a recovery window). Each operation runs under one lock, as DynamoDB
serialises the writes to one item. Unit tests, benchmarks and the model-based test run the
``ConnectionRepository`` on these instead of moto; tests/integration/stores runs both backends
through the same contract tests.
"""

from __future__ import annotations

import hashlib
import heapq
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from tokenbroker.clock import Clock
from tokenbroker.errors import ConnectionNotFound, InvalidInput, LeaseLost, TokenBrokerError
from tokenbroker.keys import ConnectionKey, validate_provider_name
from tokenbroker.models import Attempt, Connection, ConnectionStatus, LastError, Lease, StoredToken
from tokenbroker.stores.connections import DEFAULT_DUE_SHARDS, MAX_PAGE_SIZE, ConnectionPage
from tokenbroker.stores.tokens import PENDING_STAGE, GenerationConflict, validate_stage

# --- the connection item -----------------------------------------------------------------------


@dataclass
class _Item:
    key: ConnectionKey
    status: ConnectionStatus | None  # None: a tombstone
    generation: int = 0
    expires_at: float | None = None
    refresh_expires_at: float | None = None
    next_refresh_at: float | None = None
    due: bool = False  # carries due_shard (in the sparse due index)
    lease: Lease | None = None
    attempt: Attempt | None = None
    failures: int = 0
    last_error: LastError | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    scopes: tuple[str, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0

    def record(self) -> Connection | None:
        if self.status is None:
            return None
        return Connection(
            key=self.key,
            status=self.status,
            generation=self.generation,
            expires_at=self.expires_at,
            refresh_expires_at=self.refresh_expires_at,
            next_refresh_at=self.next_refresh_at,
            lease=self.lease,
            attempt=self.attempt,
            failures=self.failures,
            last_error=self.last_error,
            metadata=dict(self.metadata),
            scopes=self.scopes,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class MemoryConnectionStore:
    """``ConnectionStore``'s contract without DynamoDB."""

    def __init__(self, *, clock: Clock, due_shards: int = DEFAULT_DUE_SHARDS) -> None:
        self._clock = clock
        self._shards = due_shards
        self._items: dict[ConnectionKey, _Item] = {}
        self._lock = threading.RLock()
        self.calls = 0  # primitives called (the in-memory "AWS calls")

    def _enter(self, _operation: str) -> None:
        self.calls += 1

    # --- reads ---------------------------------------------------------------------------------

    def get(self, key: ConnectionKey) -> Connection | None:
        with self._lock:
            self._enter("get")
            item = self._items.get(key)
            return item.record() if item else None

    def list_by_provider(self, provider: str, limit: int = 100, cursor: str | None = None) -> ConnectionPage:
        validate_provider_name(provider)
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"limit must be 1 to {MAX_PAGE_SIZE}", field="limit")
        with self._lock:
            self._enter("list_by_provider")
            ids = sorted(k.connection_id for k, i in self._items.items() if k.provider == provider and i.status)
        if cursor:
            ids = [i for i in ids if i > cursor]
        page = ids[:limit]
        found = [c for c in (self.get(ConnectionKey(provider, i)) for i in page) if c is not None]
        return ConnectionPage(found, page[-1] if len(ids) > limit else None)

    def due(self, before: float, limit: int | None = None) -> Iterator[ConnectionKey]:
        with self._lock:
            self._enter("due")
            due = [
                (item.next_refresh_at, str(key), key)
                for key, item in self._items.items()
                if item.due and item.next_refresh_at is not None and item.next_refresh_at <= before
            ]
        for count, (_, _, key) in enumerate(heapq.nsmallest(len(due), due), start=1):
            yield key
            if limit is not None and count >= limit:
                return

    # --- connect flow --------------------------------------------------------------------------

    def save_connected(
        self,
        key: ConnectionKey,
        *,
        expires_at: float | None,
        refresh_expires_at: float | None,
        next_refresh_at: float | None,
        metadata: Mapping[str, str] | None = None,
        scopes: Sequence[str] = (),
    ) -> Connection:
        with self._lock:
            self._enter("save_connected")
            now = self._clock.now()
            item = self._items.get(key)
            if item is None:
                item = self._items[key] = _Item(key, None, created_at=now)
            if item.status is None:
                item.created_at = now
            item.status = ConnectionStatus.ACTIVE
            item.generation += 1
            item.expires_at, item.refresh_expires_at = expires_at, refresh_expires_at
            self._set_due(item, next_refresh_at)
            item.metadata, item.scopes = dict(metadata or {}), tuple(scopes)
            item.failures, item.last_error, item.lease, item.attempt = 0, None, None, None
            item.updated_at = now
            return self._record(item)

    def save_pending(self, key: ConnectionKey, *, metadata: Mapping[str, str], scopes: Sequence[str]) -> bool:
        with self._lock:
            self._enter("save_pending")
            item = self._items.get(key)
            if item is not None and item.status not in (None, ConnectionStatus.PENDING):
                return False
            now = self._clock.now()
            generation = item.generation if item else 0
            self._items[key] = _Item(
                key,
                ConnectionStatus.PENDING,
                generation=generation,
                metadata=dict(metadata),
                scopes=tuple(scopes),
                created_at=now,
                updated_at=now,
            )
            return True

    def delete_pending(self, key: ConnectionKey) -> bool:
        return self._tombstone(key, only_status=ConnectionStatus.PENDING)

    # --- lease ---------------------------------------------------------------------------------

    def acquire_lease(
        self, key: ConnectionKey, owner: str, duration: float, *, record_attempt: bool = False
    ) -> Connection | None:
        with self._lock:
            self._enter("acquire_lease")
            item = self._live(key)
            now = self._clock.now()
            if item.lease is not None and item.lease.until >= now and item.lease.owner != owner:
                return None
            before = item.record()
            item.lease = Lease(owner, now + duration)
            if record_attempt:
                item.attempt = Attempt(owner, now, item.generation)
                assert before is not None
                return replace(before, lease=item.lease)  # the item as it was, with our lease
            return self._record(item)

    def renew_lease(self, key: ConnectionKey, owner: str, duration: float) -> Lease:
        with self._lock:
            self._enter("renew_lease")
            item = self._owned(key, owner)
            item.lease = Lease(owner, self._clock.now() + duration)
            return item.lease

    def record_attempt(self, key: ConnectionKey, owner: str) -> Attempt:
        with self._lock:
            self._enter("record_attempt")
            item = self._owned(key, owner)
            item.attempt = Attempt(owner, self._clock.now(), item.generation)
            return item.attempt

    def release(self, key: ConnectionKey, owner: str, *, restore: Attempt | None = None) -> bool:
        with self._lock:
            self._enter("release")
            try:
                item = self._owned(key, owner)
            except (LeaseLost, ConnectionNotFound):
                return False
            item.lease, item.attempt = None, restore
            return True

    # --- outcomes of a refresh (fenced by the lease) -------------------------------------------

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
    ) -> Connection:
        with self._lock:
            self._enter("commit_refresh")
            item = self._owned(key, owner)
            if item.generation != expected_generation:
                moved = f"the generation of {key} moved on to {item.generation} (expected {expected_generation})"
                raise LeaseLost(moved)
            item.generation = expected_generation + 1 if generation is None else generation
            item.status = ConnectionStatus.ACTIVE
            item.expires_at, item.refresh_expires_at = expires_at, refresh_expires_at
            self._set_due(item, next_refresh_at)
            if metadata is not None:
                item.metadata = dict(metadata)
            if scopes is not None:
                item.scopes = tuple(scopes)
            item.failures, item.last_error, item.lease, item.attempt = 0, None, None, None
            item.updated_at = self._clock.now()
            return self._record(item)

    def record_failure(
        self,
        key: ConnectionKey,
        owner: str,
        error: LastError | TokenBrokerError,
        next_refresh_at: float,
        *,
        keep_attempt: Attempt | None = None,
    ) -> None:
        with self._lock:
            self._enter("record_failure")
            item = self._owned(key, owner)
            item.failures += 1
            item.last_error = self._last_error(error)
            item.next_refresh_at = next_refresh_at
            if item.status is ConnectionStatus.ACTIVE:
                item.due = True
            item.updated_at = self._clock.now()
            item.lease, item.attempt = None, keep_attempt

    def mark_needs_reauth(
        self, key: ConnectionKey, owner: str, error: LastError | TokenBrokerError, *, generation: int | None = None
    ) -> Connection:
        with self._lock:
            self._enter("mark_needs_reauth")
            item = self._owned(key, owner)
            if generation is not None:
                if item.generation > generation:
                    raise LeaseLost(f"the generation of {key} moved on to {item.generation} (marking {generation})")
                item.generation = generation
            item.status = ConnectionStatus.NEEDS_REAUTH
            item.last_error = self._last_error(error)
            item.failures += 1
            item.updated_at = self._clock.now()
            item.due, item.next_refresh_at, item.lease, item.attempt = False, None, None, None
            return self._record(item)

    # --- disconnect ----------------------------------------------------------------------------

    def delete(self, key: ConnectionKey) -> bool:
        return self._tombstone(key)

    def _tombstone(self, key: ConnectionKey, *, only_status: ConnectionStatus | None = None) -> bool:
        with self._lock:
            self._enter("delete")
            item = self._items.get(key)
            if item is None or item.status is None:
                return False
            if only_status is not None and item.status is not only_status:
                return False
            # A tombstone keeps only its generation: a re-connect continues the sequence.
            self._items[key] = _Item(key, None, generation=item.generation, updated_at=self._clock.now())
            return True

    # --- helpers -------------------------------------------------------------------------------

    def _live(self, key: ConnectionKey) -> _Item:
        item = self._items.get(key)
        if item is None or item.status is None:
            raise ConnectionNotFound(f"no connection {key}")
        return item

    def _owned(self, key: ConnectionKey, owner: str) -> _Item:
        item = self._live(key)
        if item.lease is None or item.lease.owner != owner:
            raise LeaseLost(f"lease on {key} is no longer held by this worker")
        return item

    @staticmethod
    def _set_due(item: _Item, next_refresh_at: float | None) -> None:
        item.next_refresh_at = next_refresh_at
        item.due = next_refresh_at is not None

    def _last_error(self, error: LastError | TokenBrokerError) -> LastError:
        return error if isinstance(error, LastError) else LastError.from_exception(error, self._clock.now())

    @staticmethod
    def _record(item: _Item) -> Connection:
        record = item.record()
        assert record is not None
        return record


# --- the token secret --------------------------------------------------------------------------


@dataclass
class _Secret:
    versions: dict[str, str] = field(default_factory=dict)  # version id (= request token) -> JSON
    labels: dict[str, str] = field(default_factory=dict)  # label -> version id
    deleted: bool = False


class MemoryTokenStore:
    """``TokenStore``'s contract without Secrets Manager (version ids are the request tokens)."""

    def __init__(self, *, stage: str = "memory") -> None:
        self._stage = validate_stage(stage)
        self._secrets: dict[ConnectionKey, _Secret] = {}
        self._lock = threading.RLock()
        self.calls = 0  # primitives called (the in-memory "AWS calls")
        self.writes = 0  # versions written (the in-memory PutSecretValue count)

    def _enter(self, _operation: str) -> None:
        self.calls += 1

    def secret_name(self, key: ConnectionKey) -> str:
        return f"tokenbroker/{self._stage}/{key.provider}/{key.connection_id}"

    def client_request_token(self, key: ConnectionKey, generation: int) -> str:
        return hashlib.sha256(f"{self.secret_name(key)}|{generation}".encode()).hexdigest()[:36]

    # --- reads ---------------------------------------------------------------------------------

    def get(self, key: ConnectionKey) -> StoredToken:
        return self._read(key, "AWSCURRENT")

    def get_previous(self, key: ConnectionKey) -> StoredToken | None:
        try:
            return self._read(key, "AWSPREVIOUS")
        except ConnectionNotFound:
            return None

    def _read(self, key: ConnectionKey, label: str) -> StoredToken:
        with self._lock:
            self._enter("get")
            secret = self._secrets.get(key)
            version = secret.labels.get(label) if secret and not secret.deleted else None
            if secret is None or version is None:
                raise ConnectionNotFound(f"no connection {key}")
            return StoredToken.from_json(secret.versions[version])

    # --- writes --------------------------------------------------------------------------------

    def put(self, key: ConnectionKey, stored: StoredToken, *, restore_deleted: bool = False) -> str:
        token = self.client_request_token(key, stored.generation)
        with self._lock:
            self._enter("put")
            secret = self._secrets.setdefault(key, _Secret())
            if secret.deleted:
                if not restore_deleted:
                    raise ConnectionNotFound(f"connection {key} is being deleted")
                secret.deleted = False
            body = stored.to_json()
            existing = secret.versions.get(token)
            if existing is not None and existing != body:
                raise GenerationConflict(f"this generation of {key} was already written by another writer")
            if existing is None:
                self.writes += 1
                secret.versions[token] = body
                self._make_current(secret, token)
            return token

    def put_pending(self, key: ConnectionKey, stored: StoredToken, *, request_id: str) -> str:
        if stored.status is not ConnectionStatus.PENDING:
            raise ValueError("a pending grant must carry status pending")
        token = hashlib.sha256(f"{self.secret_name(key)}|pending|{request_id}".encode()).hexdigest()[:36]
        with self._lock:
            self._enter("put_pending")
            secret = self._secrets.setdefault(key, _Secret())
            secret.deleted = False
            if token not in secret.versions:
                self.writes += 1
                secret.versions[token] = stored.to_json()
                if "AWSCURRENT" not in secret.labels:  # the first version of a secret is always current
                    secret.labels["AWSCURRENT"] = token
            secret.labels[PENDING_STAGE] = token
            return token

    def get_pending(self, key: ConnectionKey, version_id: str) -> StoredToken | None:
        with self._lock:
            self._enter("get_pending")
            secret = self._secrets.get(key)
            if secret is None or secret.deleted or secret.labels.get(PENDING_STAGE) != version_id:
                return None
            return StoredToken.from_json(secret.versions[version_id])

    def drop_pending(self, key: ConnectionKey, version_id: str) -> None:
        with self._lock:
            self._enter("drop_pending")
            secret = self._secrets.get(key)
            if secret is not None and secret.labels.get(PENDING_STAGE) == version_id:
                del secret.labels[PENDING_STAGE]

    def delete(self, key: ConnectionKey, recovery_window_days: int = 7) -> bool:
        if not 7 <= recovery_window_days <= 30:
            raise InvalidInput("recovery window must be 7 to 30 days", field="recovery_window_days")
        with self._lock:
            self._enter("delete")
            secret = self._secrets.get(key)
            if secret is None or secret.deleted:
                return False
            secret.deleted = True
            return True

    @staticmethod
    def _make_current(secret: _Secret, version: str) -> None:
        current = secret.labels.get("AWSCURRENT")
        if current is not None and current != version:
            secret.labels["AWSPREVIOUS"] = current
        secret.labels["AWSCURRENT"] = version
