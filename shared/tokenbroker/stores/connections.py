"""Connection store: one DynamoDB item per connection (never a token), leases with fencing.

Key design (table ``pk``/``sk`` strings):

- connection: ``pk = "conn#<provider>"``, ``sk = "<connection_id>"``; listing a provider is a
  Query on ``pk``.
- GSI ``due`` (KEYS_ONLY, sparse): ``due_shard = "due#<0..N-1>"`` (a stable hash of the key) and
  ``next_refresh_at`` (number). Only active connections carry ``due_shard``, so "which active
  connections are due before T" is N small Queries and never a Scan; sharding spreads the GSI
  writes of a large provider over N partition keys.
- a deleted connection becomes a tombstone (``deleted_at``, ``ttl`` beyond the longest secret
  recovery window) that keeps ``generation``: reconnecting the same id continues the generation
  sequence, so a secret version id (derived from the generation) is never reused with new
  content. Tombstones read as absent.

Every lease operation is one conditional UpdateItem. Lock contention is an outcome
(``acquire_lease`` returns None), never an error about credentials; a write by a former owner, or
after the generation moved, raises ``LeaseLost`` (fencing).
"""

from __future__ import annotations

import hashlib
import heapq
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from tokenbroker.aws import DynamoTable
from tokenbroker.clock import Clock
from tokenbroker.errors import ConnectionNotFound, InvalidInput, LeaseLost, TokenBrokerError
from tokenbroker.keys import ConnectionKey, validate_provider_name
from tokenbroker.models import Attempt, Connection, ConnectionStatus, LastError, Lease
from tokenbroker.stores._dynamo import (
    AttributeValue,
    Expression,
    Item,
    decode_cursor,
    encode_cursor,
    get_int,
    get_list,
    get_map,
    get_n,
    get_s,
    is_conditional_failure,
    n,
    old_item_of_failure,
    s,
    string_list,
    string_map,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.literals import ReturnValueType
    from mypy_boto3_dynamodb.service_resource import Table as TableResource

CONNECTION_PREFIX = "conn#"
DUE_INDEX = "due"
DUE_SHARD_PREFIX = "due#"
# Changing the shard count needs a backfill of due_shard on existing items.
DEFAULT_DUE_SHARDS = 16
# Longer than Secrets Manager's longest recovery window (30 days).
DEFAULT_TOMBSTONE_SECONDS = 31 * 86400
MAX_PAGE_SIZE = 1000

_LEASE = ("lease_owner", "lease_until")
_ATTEMPT = ("attempt_owner", "attempt_started_at", "attempt_generation")
_DUE = ("due_shard", "next_refresh_at")


def new_lease_owner() -> str:
    """A random owner id (128 bits): two workers never share one."""
    return secrets.token_hex(16)


def connection_pk(provider: str) -> str:
    return CONNECTION_PREFIX + provider


def due_shard(key: ConnectionKey, shards: int) -> str:
    digest = hashlib.sha256(str(key).encode()).digest()
    return f"{DUE_SHARD_PREFIX}{int.from_bytes(digest[:8], 'big') % shards}"


@dataclass(frozen=True, slots=True)
class ConnectionPage:
    connections: list[Connection]
    cursor: str | None  # opaque; None when there is nothing more


class ConnectionStore:
    def __init__(
        self,
        table: DynamoTable | TableResource,
        *,
        clock: Clock,
        due_shards: int = DEFAULT_DUE_SHARDS,
        tombstone_seconds: int = DEFAULT_TOMBSTONE_SECONDS,
    ) -> None:
        resolved = DynamoTable.of(table)
        self._client = resolved.client
        self._table = resolved.name
        self._clock = clock
        self._shards = due_shards
        self._tombstone_seconds = tombstone_seconds

    # --- reads -------------------------------------------------------------------------------

    def get(self, key: ConnectionKey) -> Connection | None:
        """Strongly consistent read; None for an unknown or deleted connection."""
        answer = self._client.get_item(TableName=self._table, Key=self._key(key), ConsistentRead=True)
        item = answer.get("Item")
        return _connection_of(item) if item else None

    def list_by_provider(self, provider: str, limit: int = 100, cursor: str | None = None) -> ConnectionPage:
        """One page of a provider's connections ordered by connection id (Query, never Scan)."""
        validate_provider_name(provider)
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInput(f"limit must be 1 to {MAX_PAGE_SIZE}", field="limit")
        start: dict[str, Any] | None = None
        if cursor:
            position = decode_cursor(cursor)
            if position.get("p") != provider or "c" not in position:
                raise InvalidInput("cursor belongs to another listing", field="cursor")
            start = {"pk": s(connection_pk(provider)), "sk": s(position["c"])}
        found: list[Connection] = []
        while len(found) < limit:
            params: dict[str, Any] = {
                "TableName": self._table,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": s(connection_pk(provider))},
                "Limit": limit - len(found),
            }
            if start:
                params["ExclusiveStartKey"] = start
            answer = self._client.query(**params)
            for item in answer.get("Items", []):
                connection = _connection_of(item)
                if connection is not None:  # tombstones are skipped
                    found.append(connection)
            start = answer.get("LastEvaluatedKey")
            if not start:
                return ConnectionPage(found, None)
        last = found[-1].key.connection_id
        return ConnectionPage(found, encode_cursor({"p": provider, "c": last}))

    def due(self, before: float, limit: int | None = None) -> Iterator[ConnectionKey]:
        """Active connections with ``next_refresh_at <= before``, earliest first, at most ``limit``.

        Queries every shard of the sparse ``due`` index lazily (paginated) and merges them.
        Eventually consistent (a GSI): callers re-check under the lease.
        """
        if limit is not None and limit <= 0:
            return
        page_size = min(limit or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        shards = [self._due_in_shard(shard, before, page_size) for shard in range(self._shards)]
        for count, (_, key) in enumerate(heapq.merge(*shards, key=lambda entry: entry[0]), start=1):
            yield key
            if limit is not None and count >= limit:
                return

    def _due_in_shard(self, shard: int, before: float, page_size: int) -> Iterator[tuple[float, ConnectionKey]]:
        start: Mapping[str, Any] | None = None
        while True:
            params: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": DUE_INDEX,
                "KeyConditionExpression": "due_shard = :shard AND next_refresh_at <= :before",
                "ExpressionAttributeValues": {
                    ":shard": s(f"{DUE_SHARD_PREFIX}{shard}"),
                    ":before": n(before),
                },
                "Limit": page_size,
            }
            if start:
                params["ExclusiveStartKey"] = start
            answer = self._client.query(**params)
            for item in answer.get("Items", []):
                yield get_n(item, "next_refresh_at") or 0.0, _key_of(item)
            start = answer.get("LastEvaluatedKey")
            if not start:
                return

    # --- connect flow ------------------------------------------------------------------------

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
        """Record a (re)connected grant: generation 1, or the next generation, status active.

        One UpdateItem with ``ADD generation 1``: the generation only ever goes up, even across
        a delete (tombstone) or against a concurrent writer. A brand-new connection comes back
        with ``created_at == updated_at``.

        Race with a running refresh: this clears the lease and bumps the generation, so that
        refresh can no longer commit (``LeaseLost``). Its secret write uses the generation it
        expected + 1, which may be the very generation returned here: write the new token with
        ``TokenStore.put`` after this call, and on ``GenerationConflict`` call ``save_connected``
        again (the generation moves past the refresh's) and put again.
        """
        now = self._clock.now()
        update = Expression()
        update.set("provider", s(key.provider)).set("connection_id", s(key.connection_id))
        update.set("status", s(ConnectionStatus.ACTIVE.value))
        update.set_or_remove("expires_at", _opt_n(expires_at))
        update.set_or_remove("refresh_expires_at", _opt_n(refresh_expires_at))
        self._set_due(update, key, next_refresh_at)
        update.set("metadata", string_map(metadata or {})).set("scopes", string_list(scopes))
        update.set("failures", n(0)).set("updated_at", n(now))
        created_at = update.name("created_at")
        update.set_raw("created_at", f"if_not_exists({created_at}, {update.value(n(now))})")
        update.remove(*_LEASE, *_ATTEMPT, "last_error", "deleted_at", "ttl")
        update.add("generation", n(1))
        answer = self._client.update_item(
            TableName=self._table,
            Key=self._key(key),
            UpdateExpression=update.update_expression(),
            ExpressionAttributeNames=update.names,
            ExpressionAttributeValues=update.values,
            ReturnValues="ALL_NEW",
        )
        return _require(_connection_of(answer.get("Attributes", {})), key)

    def save_pending(self, key: ConnectionKey, *, metadata: Mapping[str, str], scopes: Sequence[str]) -> bool:
        """List a brand-new connection as ``pending`` while its grant awaits the application's
        confirmation: never due, never refreshed, never vended. False (nothing written) when the
        connection already exists: a re-connect keeps its current grant and status until confirmed.
        """
        now = self._clock.now()
        update = Expression()
        update.set("provider", s(key.provider)).set("connection_id", s(key.connection_id))
        update.set("status", s(ConnectionStatus.PENDING.value))
        update.set("metadata", string_map(metadata)).set("scopes", string_list(scopes))
        update.set("failures", n(0)).set("updated_at", n(now)).set("created_at", n(now))
        update.remove(*_DUE, *_LEASE, *_ATTEMPT, "expires_at", "refresh_expires_at", "last_error", "deleted_at", "ttl")
        pk, status = update.name("pk"), update.name("status")
        condition = (
            f"attribute_not_exists({pk}) OR attribute_exists({update.name('deleted_at')}) "
            f"OR {status} = {update.value(s(ConnectionStatus.PENDING.value))}"
        )
        return self._update_if(key, update, condition)

    def delete_pending(self, key: ConnectionKey) -> bool:
        """Remove a connection that never got past ``pending`` (its grant was discarded).

        Conditional on the status: a connection that became active meanwhile is left alone.
        """
        return self._tombstone(key, only_status=ConnectionStatus.PENDING)

    # --- lease -------------------------------------------------------------------------------

    def acquire_lease(
        self, key: ConnectionKey, owner: str, duration: float, *, record_attempt: bool = False
    ) -> Connection | None:
        """Take the lease if it is free, expired, or already ours; None when someone else holds it.

        The returned connection still shows ``attempt`` when a previous refresh was interrupted.
        ``record_attempt=True`` also records our attempt in the same UpdateItem (the refresh engine
        stays within 4 AWS calls); the answer is then the item as it was, with our lease, so a
        previous attempt stays visible. Raises ``ConnectionNotFound`` for an unknown or deleted
        connection.
        """
        now = self._clock.now()
        update = Expression()
        update.set("lease_owner", s(owner)).set("lease_until", n(now + duration))
        if record_attempt:
            update.set("attempt_owner", s(owner)).set("attempt_started_at", n(now))
            update.set_raw("attempt_generation", update.name("generation"))
        pk, owner_name, until = update.name("pk"), update.name("lease_owner"), update.name("lease_until")
        condition = (
            f"attribute_exists({pk}) AND attribute_not_exists({update.name('deleted_at')}) AND "
            f"(attribute_not_exists({owner_name}) OR {until} < {update.value(n(now))} "
            f"OR {owner_name} = {update.value(s(owner))})"
        )
        try:
            answer = self._update(key, update, condition, returns="ALL_OLD" if record_attempt else "ALL_NEW")
        except ClientError as error:
            if not is_conditional_failure(error):
                raise
            if _connection_of(old_item_of_failure(error) or {}) is None:
                raise ConnectionNotFound(f"no connection {key}") from None
            return None
        connection = _require(_connection_of(answer), key)
        if record_attempt:
            connection = replace(connection, lease=Lease(owner, now + duration))
        return connection

    def renew_lease(self, key: ConnectionKey, owner: str, duration: float) -> Lease:
        """Extend our lease; raises ``LeaseLost`` if it was taken over."""
        until = self._clock.now() + duration
        update = Expression().set("lease_until", n(until))
        self._update_as_owner(key, owner, update)
        return Lease(owner, until)

    def record_attempt(self, key: ConnectionKey, owner: str) -> Attempt:
        """Note the refresh about to call the provider, so an interrupted one is visible later."""
        now = self._clock.now()
        update = Expression().set("attempt_owner", s(owner)).set("attempt_started_at", n(now))
        update.set_raw("attempt_generation", update.name("generation"))
        answer = self._update_as_owner(key, owner, update, returns="ALL_NEW")
        return Attempt(owner, now, get_int(answer, "generation"))

    def release(self, key: ConnectionKey, owner: str, *, restore: Attempt | None = None) -> bool:
        """Give the lease back and forget our attempt (or put back ``restore``, the interrupted
        attempt we found: a run that never called the provider leaves the item as it found it).
        A no-op (False) for a non-owner."""
        update = Expression().remove(*_LEASE)
        if restore is None:
            update.remove(*_ATTEMPT)
        else:
            update.set("attempt_owner", s(restore.owner)).set("attempt_started_at", n(restore.started_at))
            update.set("attempt_generation", n(restore.generation))
        try:
            self._update_as_owner(key, owner, update)
        except (LeaseLost, ConnectionNotFound):
            return False
        return True

    # --- outcomes of a refresh (all fenced by the lease) -------------------------------------

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
        """Record the token already written to the token store as ``generation`` (default
        ``expected + 1``; more when the secret ran further ahead).

        Only while ``owner`` holds the lease and the generation is still ``expected_generation``;
        otherwise ``LeaseLost``. Clears lease, attempt, failures and last error; the connection is
        active again. One UpdateItem.
        """
        now = self._clock.now()
        update = Expression()
        update.set("generation", n(expected_generation + 1 if generation is None else generation))
        update.set("status", s(ConnectionStatus.ACTIVE.value))
        update.set_or_remove("expires_at", _opt_n(expires_at))
        update.set_or_remove("refresh_expires_at", _opt_n(refresh_expires_at))
        self._set_due(update, key, next_refresh_at)
        if metadata is not None:
            update.set("metadata", string_map(metadata))
        if scopes is not None:
            update.set("scopes", string_list(scopes))
        update.set("failures", n(0)).set("updated_at", n(now))
        update.remove(*_LEASE, *_ATTEMPT, "last_error")
        condition = f"{update.name('generation')} = {update.value(n(expected_generation))}"
        return self._fenced(key, owner, update, condition, f"expected {expected_generation}")

    def record_failure(
        self,
        key: ConnectionKey,
        owner: str,
        error: LastError | TokenBrokerError,
        next_refresh_at: float,
        *,
        keep_attempt: Attempt | None = None,
    ) -> None:
        """A transient failure: count it, keep the token, retry at ``next_refresh_at``, release.

        ``keep_attempt``: leave that (interrupted) attempt visible instead of forgetting it, so the
        next run still knows a late writer may be about.
        """
        last_error = self._last_error(error)

        def failure_update() -> Expression:
            update = Expression()
            update.add("failures", n(1)).set("last_error", _error_value(last_error))
            update.set("next_refresh_at", n(next_refresh_at)).set("updated_at", n(self._clock.now()))
            if keep_attempt is None:
                return update.remove(*_LEASE, *_ATTEMPT)
            update.set("attempt_owner", s(keep_attempt.owner))
            update.set("attempt_started_at", n(keep_attempt.started_at))
            return update.set("attempt_generation", n(keep_attempt.generation)).remove(*_LEASE)

        # Only an active connection belongs in the due index. It normally has its shard already,
        # but one committed without a next refresh time has not: set it, conditional on active.
        update = failure_update().set("due_shard", s(due_shard(key, self._shards)))
        active = f"{update.name('status')} = {update.value(s(ConnectionStatus.ACTIVE.value))}"
        try:
            self._update_as_owner(key, owner, update, extra_condition=active)
        except _ExtraConditionFailed:
            self._update_as_owner(key, owner, failure_update())

    def mark_needs_reauth(
        self, key: ConnectionKey, owner: str, error: LastError | TokenBrokerError, *, generation: int | None = None
    ) -> Connection:
        """The grant is dead: status needs_reauth, out of the due index, lease released.

        ``generation``: the generation of the secret that says so (the mark is a token write like any
        other); refused with ``LeaseLost`` if the item already went past it.
        """
        last_error = self._last_error(error)
        update = Expression()
        update.set("status", s(ConnectionStatus.NEEDS_REAUTH.value))
        update.set("last_error", _error_value(last_error)).set("updated_at", n(self._clock.now()))
        update.add("failures", n(1))
        update.remove(*_DUE, *_LEASE, *_ATTEMPT)
        condition = None
        if generation is not None:
            update.set("generation", n(generation))
            condition = f"{update.name('generation')} <= {update.value(n(generation))}"
        return self._fenced(key, owner, update, condition, f"marking {generation}")

    # --- disconnect --------------------------------------------------------------------------

    def delete(self, key: ConnectionKey) -> bool:
        """Remove the connection (a tombstone keeps only its generation). False if it did not exist.

        A refresh holding the lease loses it: its owner-only writes (commit included) raise
        ``ConnectionNotFound``.
        """
        return self._tombstone(key)

    def _tombstone(self, key: ConnectionKey, *, only_status: ConnectionStatus | None = None) -> bool:
        now = self._clock.now()
        update = Expression()
        update.set("deleted_at", n(now)).set("updated_at", n(now))
        update.set("ttl", n(int(now) + self._tombstone_seconds))
        update.remove(
            "status", "expires_at", "refresh_expires_at", *_DUE, *_LEASE, *_ATTEMPT,
            "failures", "last_error", "metadata", "scopes", "created_at",
        )  # fmt: skip
        condition = f"attribute_exists({update.name('pk')}) AND attribute_not_exists({update.name('deleted_at')})"
        if only_status is not None:
            condition += f" AND {update.name('status')} = {update.value(s(only_status.value))}"
        return self._update_if(key, update, condition)

    def _update_if(self, key: ConnectionKey, update: Expression, condition: str) -> bool:
        """One conditional UpdateItem; False (nothing written) when the condition did not hold."""
        try:
            self._update(key, update, condition)
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise
        return True

    # --- helpers -----------------------------------------------------------------------------

    def _key(self, key: ConnectionKey) -> dict[str, Any]:
        return {"pk": s(connection_pk(key.provider)), "sk": s(key.connection_id)}

    def _set_due(self, update: Expression, key: ConnectionKey, next_refresh_at: float | None) -> None:
        if next_refresh_at is None:
            update.remove(*_DUE)
        else:
            update.set("next_refresh_at", n(next_refresh_at))
            update.set("due_shard", s(due_shard(key, self._shards)))

    def _last_error(self, error: LastError | TokenBrokerError) -> LastError:
        if isinstance(error, LastError):
            return error
        return LastError.from_exception(error, self._clock.now())

    def _update(
        self, key: ConnectionKey, update: Expression, condition: str, returns: ReturnValueType = "NONE"
    ) -> Item:
        answer = self._client.update_item(
            TableName=self._table,
            Key=self._key(key),
            UpdateExpression=update.update_expression(),
            ConditionExpression=condition,
            ExpressionAttributeNames=update.names,
            ExpressionAttributeValues=update.values,
            ReturnValues=returns,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return answer.get("Attributes", {})

    def _fenced(
        self, key: ConnectionKey, owner: str, update: Expression, generation_condition: str | None, wanted: str
    ) -> Connection:
        """An owner-only update that also needs the generation to be where the caller thinks."""
        try:
            answer = self._update_as_owner(key, owner, update, extra_condition=generation_condition, returns="ALL_NEW")
        except _ExtraConditionFailed as failed:
            raise LeaseLost(f"the generation of {key} moved on to {failed.connection.generation} ({wanted})") from None
        return _require(_connection_of(answer), key)

    def _update_as_owner(
        self,
        key: ConnectionKey,
        owner: str,
        update: Expression,
        *,
        extra_condition: str | None = None,
        returns: ReturnValueType = "NONE",
    ) -> Item:
        """Apply ``update`` only while ``owner`` holds the lease (and ``extra_condition`` holds)."""
        condition = f"{update.name('lease_owner')} = {update.value(s(owner))}"
        if extra_condition:
            condition = f"{condition} AND {extra_condition}"
        try:
            return self._update(key, update, condition, returns)
        except ClientError as error:
            if not is_conditional_failure(error):
                raise
            old = old_item_of_failure(error)
            connection = _connection_of(old or {})
            if connection is None:
                raise ConnectionNotFound(f"no connection {key}") from None
            if connection.lease is None or connection.lease.owner != owner:
                raise LeaseLost(f"lease on {key} is no longer held by this worker") from None
            raise _ExtraConditionFailed(connection) from None


class _ExtraConditionFailed(Exception):
    """Internal: we still own the lease but the caller's extra condition did not hold."""

    def __init__(self, connection: Connection) -> None:
        super().__init__("extra condition failed")
        self.connection = connection


def _opt_n(value: float | None) -> AttributeValue | None:
    return None if value is None else n(value)


def _error_value(error: LastError) -> AttributeValue:
    return {"M": {"code": s(error.code), "message": s(error.message), "at": n(error.at)}}


def _key_of(item: Item) -> ConnectionKey:
    provider = (get_s(item, "pk") or "").removeprefix(CONNECTION_PREFIX)
    return ConnectionKey(provider, get_s(item, "sk") or "")


def _require(connection: Connection | None, key: ConnectionKey) -> Connection:
    if connection is None:
        raise ConnectionNotFound(f"no connection {key}")
    return connection


def _connection_of(item: Item) -> Connection | None:
    """The record of an item; None for a missing item or a tombstone."""
    status = get_s(item, "status")
    if not item or status is None or "deleted_at" in item:
        return None
    lease_owner = get_s(item, "lease_owner")
    attempt_owner = get_s(item, "attempt_owner")
    error = item.get("last_error")
    error_map: Mapping[str, Any] = (error or {}).get("M") or {}
    return Connection(
        key=_key_of(item),
        status=ConnectionStatus(status),
        generation=get_int(item, "generation"),
        expires_at=get_n(item, "expires_at"),
        refresh_expires_at=get_n(item, "refresh_expires_at"),
        next_refresh_at=get_n(item, "next_refresh_at"),
        lease=Lease(lease_owner, get_n(item, "lease_until") or 0.0) if lease_owner else None,
        attempt=Attempt(
            attempt_owner,
            get_n(item, "attempt_started_at") or 0.0,
            get_int(item, "attempt_generation"),
        )
        if attempt_owner
        else None,
        failures=get_int(item, "failures"),
        last_error=LastError(
            code=get_s(error_map, "code") or "",
            message=get_s(error_map, "message") or "",
            at=get_n(error_map, "at") or 0.0,
        )
        if error_map
        else None,
        metadata=get_map(item, "metadata"),
        scopes=get_list(item, "scopes"),
        created_at=get_n(item, "created_at") or 0.0,
        updated_at=get_n(item, "updated_at") or 0.0,
    )
