"""ConnectionStore against moto's DynamoDB: every conditional path of the lease and the connect flow."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tokenbroker.aws import AwsCallCounter, AwsClients, DynamoTable
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ConnectionNotFound,
    LeaseLost,
    ProviderError,
    ProviderErrorKind,
)
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import Connection, ConnectionStatus, LastError
from tokenbroker.stores.connections import ConnectionStore

KEY = ConnectionKey("workly", "user-42")
HOUR = 3600.0


@pytest.fixture
def store(table: DynamoTable, clock: ManualClock) -> ConnectionStore:
    return ConnectionStore(table, clock=clock)


def connect(store: ConnectionStore, clock: ManualClock, key: ConnectionKey = KEY) -> Connection:
    now = clock.now()
    return store.save_connected(
        key,
        expires_at=now + HOUR,
        refresh_expires_at=now + 30 * 86400,
        next_refresh_at=now + HOUR - 360,
        metadata={"user_email": "u@workly.test"},
        scopes=("read",),
    )


def raw_item(table: DynamoTable, key: ConnectionKey) -> dict[str, object]:
    answer = table.client.get_item(
        TableName=table.name, Key={"pk": {"S": f"conn#{key.provider}"}, "sk": {"S": key.connection_id}}
    )
    return dict(answer.get("Item", {}))


def due_now(store: ConnectionStore, clock: ManualClock) -> list[ConnectionKey]:
    return list(store.due(clock.now() + 2 * HOUR))


# --- connect flow -------------------------------------------------------------------------------


def test_unknown_connection_reads_as_none(store: ConnectionStore) -> None:
    assert store.get(KEY) is None


def test_first_connect_is_generation_one_active_and_due(
    store: ConnectionStore, clock: ManualClock, table: DynamoTable
) -> None:
    connection = connect(store, clock)

    assert connection.generation == 1
    assert connection.status is ConnectionStatus.ACTIVE
    assert connection.created_at == connection.updated_at == clock.now()
    assert connection.metadata == {"user_email": "u@workly.test"}
    assert connection.scopes == ("read",)
    assert store.get(KEY) == connection
    assert due_now(store, clock) == [KEY]
    item = raw_item(table, KEY)
    assert not any("token" in name for name in item)  # the item never holds a token


def test_reconnect_moves_to_the_next_generation_and_keeps_created_at(
    store: ConnectionStore, clock: ManualClock
) -> None:
    first = connect(store, clock)
    clock.advance(60)
    second = connect(store, clock)
    assert second.generation == first.generation + 1
    assert second.created_at == first.created_at < second.updated_at


def test_reconnect_of_a_needs_reauth_connection_makes_it_active_and_due_again(
    store: ConnectionStore, clock: ManualClock
) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "worker", 30)
    store.mark_needs_reauth(KEY, "worker", LastError("invalid_grant", "refresh token revoked", clock.now()))
    assert due_now(store, clock) == []

    again = connect(store, clock)

    assert again.status is ConnectionStatus.ACTIVE
    assert again.generation == 2
    assert again.last_error is None
    assert due_now(store, clock) == [KEY]


def test_reconnect_clears_a_running_refresh_lease_so_that_refresh_cannot_commit(
    store: ConnectionStore, clock: ManualClock
) -> None:
    connect(store, clock)
    assert store.acquire_lease(KEY, "refresher", 30) is not None

    connect(store, clock)

    with pytest.raises(LeaseLost):
        store.commit_refresh(KEY, "refresher", 1, expires_at=1.0, refresh_expires_at=None, next_refresh_at=2.0)


# --- lease --------------------------------------------------------------------------------------


def test_free_lease_is_acquired_in_one_call(
    store: ConnectionStore, clock: ManualClock, aws_clients: AwsClients
) -> None:
    connect(store, clock)
    with AwsCallCounter(aws_clients) as counter:
        leased = store.acquire_lease(KEY, "a", 30)
    assert counter.calls == {"UpdateItem": 1}
    assert leased is not None
    assert leased.lease is not None
    assert (leased.lease.owner, leased.lease.until) == ("a", clock.now() + 30)
    assert leased.lease_held(clock.now())


def test_held_lease_is_contention_not_an_error(store: ConnectionStore, clock: ManualClock) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)
    clock.advance(29)
    assert store.acquire_lease(KEY, "b", 30) is None
    current = store.get(KEY)
    assert current is not None
    assert current.lease is not None
    assert current.lease.owner == "a"


def test_expired_lease_is_stolen_and_the_former_owner_is_fenced_off(store: ConnectionStore, clock: ManualClock) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)
    clock.advance(31)
    stolen = store.acquire_lease(KEY, "b", 30)
    assert stolen is not None
    assert stolen.lease is not None
    assert stolen.lease.owner == "b"

    for fenced in (
        lambda: store.commit_refresh(KEY, "a", 1, expires_at=1.0, refresh_expires_at=None, next_refresh_at=2.0),
        lambda: store.record_attempt(KEY, "a"),
        lambda: store.renew_lease(KEY, "a", 30),
        lambda: store.record_failure(KEY, "a", LastError("x", "y", 0.0), clock.now()),
        lambda: store.mark_needs_reauth(KEY, "a", LastError("x", "y", 0.0)),
    ):
        with pytest.raises(LeaseLost):
            fenced()
    after = store.get(KEY)
    assert after is not None
    assert after.generation == 1
    assert after.status is ConnectionStatus.ACTIVE


def test_same_owner_may_acquire_again(store: ConnectionStore, clock: ManualClock) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)
    assert store.acquire_lease(KEY, "a", 60) is not None  # a retry whose first answer was lost


def test_acquire_of_an_unknown_connection_is_not_found(store: ConnectionStore) -> None:
    with pytest.raises(ConnectionNotFound):
        store.acquire_lease(KEY, "a", 30)


def test_renew_extends_the_lease(store: ConnectionStore, clock: ManualClock) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)
    clock.advance(20)
    lease = store.renew_lease(KEY, "a", 30)
    assert lease.until == clock.now() + 30
    clock.advance(20)  # past the first lease's end, within the renewed one
    assert store.acquire_lease(KEY, "b", 30) is None


def test_release_by_a_non_owner_is_a_no_op(store: ConnectionStore, clock: ManualClock) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)

    assert store.release(KEY, "b") is False
    assert store.acquire_lease(KEY, "b", 30) is None

    assert store.release(KEY, "a") is True
    assert store.acquire_lease(KEY, "b", 30) is not None
    assert store.release(ConnectionKey("workly", "missing"), "a") is False


def test_interrupted_attempt_is_visible_to_the_next_lease_holder(store: ConnectionStore, clock: ManualClock) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "crashed", 30)
    attempt = store.record_attempt(KEY, "crashed")
    assert (attempt.owner, attempt.generation) == ("crashed", 1)
    clock.advance(31)  # the worker died without releasing

    next_run = store.acquire_lease(KEY, "next", 30)

    assert next_run is not None
    assert next_run.attempt == attempt


# --- outcomes -----------------------------------------------------------------------------------


def test_commit_advances_the_generation_and_clears_lease_attempt_and_failures(
    store: ConnectionStore, clock: ManualClock, aws_clients: AwsClients
) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)
    store.record_failure(KEY, "a", LastError("provider_unavailable", "503", clock.now()), clock.now())
    store.acquire_lease(KEY, "a", 30)
    store.record_attempt(KEY, "a")
    clock.advance(5)

    with AwsCallCounter(aws_clients) as counter:
        committed = store.commit_refresh(
            KEY, "a", 1, expires_at=clock.now() + HOUR, refresh_expires_at=None, next_refresh_at=clock.now() + 3000
        )

    assert counter.calls == {"UpdateItem": 1}
    assert committed.generation == 2
    assert committed.lease is None
    assert committed.attempt is None
    assert committed.failures == 0
    assert committed.last_error is None
    assert committed.refresh_expires_at is None
    assert committed.next_refresh_at == clock.now() + 3000
    assert committed.updated_at == clock.now()
    assert committed.metadata == {"user_email": "u@workly.test"}  # untouched unless given
    assert store.get(KEY) == committed


def test_commit_after_the_generation_changed_is_refused(store: ConnectionStore, clock: ManualClock) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)
    with pytest.raises(LeaseLost, match="generation"):
        store.commit_refresh(KEY, "a", 7, expires_at=1.0, refresh_expires_at=None, next_refresh_at=2.0)
    current = store.get(KEY)
    assert current is not None
    assert current.generation == 1
    assert current.lease is not None  # still ours: the caller decides what to do


def test_commit_by_a_worker_that_never_held_the_lease_is_refused(store: ConnectionStore, clock: ManualClock) -> None:
    connect(store, clock)
    with pytest.raises(LeaseLost):
        store.commit_refresh(KEY, "a", 1, expires_at=1.0, refresh_expires_at=None, next_refresh_at=2.0)


def test_record_failure_counts_keeps_it_due_later_and_releases(store: ConnectionStore, clock: ManualClock) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)
    error = ProviderError(ProviderErrorKind.TRANSIENT, "workly answered 503", provider="workly", status=503)

    store.record_failure(KEY, "a", error, next_refresh_at=clock.now() + 120)
    store.acquire_lease(KEY, "a", 30)
    store.record_failure(KEY, "a", error, next_refresh_at=clock.now() + 240)

    current = store.get(KEY)
    assert current is not None
    assert current.failures == 2
    assert current.last_error == LastError("provider_unavailable", "workly answered 503", clock.now())
    assert current.lease is None
    assert current.next_refresh_at == clock.now() + 240
    assert list(store.due(clock.now() + 239)) == []
    assert list(store.due(clock.now() + 240)) == [KEY]


def test_record_failure_puts_an_active_connection_without_a_schedule_back_in_the_due_index(
    store: ConnectionStore, clock: ManualClock
) -> None:
    store.save_connected(KEY, expires_at=None, refresh_expires_at=None, next_refresh_at=None)
    assert due_now(store, clock) == []
    store.acquire_lease(KEY, "a", 30)
    store.record_failure(KEY, "a", LastError("x", "y", clock.now()), clock.now() + 60)
    assert due_now(store, clock) == [KEY]


def test_record_failure_on_a_needs_reauth_connection_keeps_it_out_of_the_due_index(
    store: ConnectionStore, clock: ManualClock
) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)
    store.mark_needs_reauth(KEY, "a", LastError("invalid_grant", "dead", clock.now()))
    store.acquire_lease(KEY, "a", 30)  # e.g. a stored-login re-authentication
    store.record_failure(KEY, "a", LastError("provider_unavailable", "503", clock.now()), clock.now() + 60)
    current = store.get(KEY)
    assert current is not None
    assert current.status is ConnectionStatus.NEEDS_REAUTH
    assert current.failures == 2
    assert current.lease is None
    assert due_now(store, clock) == []


def test_mark_needs_reauth_leaves_the_due_index_and_releases(
    store: ConnectionStore, clock: ManualClock, table: DynamoTable
) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)
    store.record_attempt(KEY, "a")

    marked = store.mark_needs_reauth(KEY, "a", LastError("needs_reauth", "invalid_grant", clock.now()))

    assert marked.status is ConnectionStatus.NEEDS_REAUTH
    assert marked.lease is None
    assert marked.attempt is None
    assert marked.next_refresh_at is None
    assert marked.last_error == LastError("needs_reauth", "invalid_grant", clock.now())
    assert "due_shard" not in raw_item(table, KEY)
    assert due_now(store, clock) == []


# --- delete -------------------------------------------------------------------------------------


def test_delete_removes_the_connection_and_fences_a_running_refresh(store: ConnectionStore, clock: ManualClock) -> None:
    connect(store, clock)
    store.acquire_lease(KEY, "a", 30)

    assert store.delete(KEY) is True

    assert store.get(KEY) is None
    assert due_now(store, clock) == []
    assert store.list_by_provider("workly").connections == []
    with pytest.raises(ConnectionNotFound):
        store.commit_refresh(KEY, "a", 1, expires_at=1.0, refresh_expires_at=None, next_refresh_at=2.0)
    with pytest.raises(ConnectionNotFound):
        store.acquire_lease(KEY, "b", 30)
    assert store.delete(KEY) is False
    assert store.delete(ConnectionKey("workly", "never")) is False


def test_connecting_again_after_delete_never_reuses_a_generation(
    store: ConnectionStore, clock: ManualClock, table: DynamoTable
) -> None:
    connect(store, clock)
    connect(store, clock)
    store.delete(KEY)
    tombstone = raw_item(table, KEY)
    assert int(tombstone["ttl"]["N"]) > clock.now() + 30 * 86400  # type: ignore[index]

    clock.advance(10)
    again = connect(store, clock)

    assert again.generation == 3  # a secret version id derived from generation 1 or 2 would clash
    assert again.created_at == again.updated_at == clock.now()
    assert "ttl" not in raw_item(table, KEY)


def test_acquire_can_record_the_attempt_in_the_same_write(
    store: ConnectionStore, clock: ManualClock, aws_clients: AwsClients
) -> None:
    connect(store, clock)
    with AwsCallCounter(aws_clients) as counter:
        first = store.acquire_lease(KEY, "crashed", 30, record_attempt=True)
    assert counter.calls == {"UpdateItem": 1}
    assert first is not None
    assert first.attempt is None  # nothing was interrupted before this run
    assert first.lease is not None
    assert first.lease.owner == "crashed"
    clock.advance(31)  # the run dies after recording its attempt

    second = store.acquire_lease(KEY, "next", 30, record_attempt=True)

    assert second is not None
    assert second.attempt is not None
    assert (second.attempt.owner, second.attempt.generation) == ("crashed", 1)
    assert second.lease is not None
    assert second.lease.owner == "next"
    stored_now = store.get(KEY)
    assert stored_now is not None
    assert stored_now.attempt is not None
    assert stored_now.attempt.owner == "next"
    assert store.acquire_lease(KEY, "third", 30, record_attempt=True) is None


def test_every_connection_write_and_read_is_one_call(
    store: ConnectionStore, clock: ManualClock, aws_clients: AwsClients
) -> None:
    error = LastError("provider_unavailable", "503", clock.now())
    steps: list[tuple[str, Callable[[], object]]] = [
        ("UpdateItem", lambda: connect(store, clock)),
        ("GetItem", lambda: store.get(KEY)),
        ("UpdateItem", lambda: store.acquire_lease(KEY, "a", 30)),
        ("UpdateItem", lambda: store.renew_lease(KEY, "a", 30)),
        ("UpdateItem", lambda: store.record_attempt(KEY, "a")),
        ("UpdateItem", lambda: store.record_failure(KEY, "a", error, clock.now() + 60)),
        ("UpdateItem", lambda: store.acquire_lease(KEY, "a", 30)),
        ("UpdateItem", lambda: store.release(KEY, "a")),
        ("UpdateItem", lambda: store.release(KEY, "not-the-owner")),
        ("UpdateItem", lambda: store.acquire_lease(KEY, "a", 30)),
        ("UpdateItem", lambda: store.mark_needs_reauth(KEY, "a", error)),
        ("UpdateItem", lambda: store.delete(KEY)),
    ]
    for operation, step in steps:
        with AwsCallCounter(aws_clients) as counter:
            step()
        assert counter.calls == {operation: 1}, operation
