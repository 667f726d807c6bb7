"""OneTimeStore: connect sessions and OAuth states are consumed exactly once and expire on time."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from tokenbroker.aws import AwsCallCounter, AwsClients, DynamoTable
from tokenbroker.clock import ManualClock
from tokenbroker.errors import InvalidInput
from tokenbroker.keys import ConnectionKey
from tokenbroker.stores.onetime import (
    SESSION_TTL_SECONDS,
    STATE_TTL_SECONDS,
    ConnectSession,
    OAuthState,
    OneTimeStore,
    new_nonce,
)

KEY = ConnectionKey("worksection", "acme")


@pytest.fixture
def store(table: DynamoTable, clock: ManualClock) -> OneTimeStore:
    return OneTimeStore(table, clock=clock)


def item_exists(table: DynamoTable, pk: str, sk: str) -> bool:
    answer = table.client.get_item(TableName=table.name, Key={"pk": {"S": pk}, "sk": {"S": sk}})
    return "Item" in answer


def test_session_round_trip_and_exactly_once(store: OneTimeStore, clock: ManualClock, aws_clients: AwsClients) -> None:
    session = store.create_session(
        KEY, return_to="https://app.test/done", scopes=["projects_read"], metadata={"tenant": "t1"}
    )
    assert session.expires_at == clock.now() + SESSION_TTL_SECONDS == clock.now() + 900
    assert store.get_session(session.session_id) == session
    assert store.get_session(session.session_id) == session  # reading does not consume

    with AwsCallCounter(aws_clients) as counter:
        first = store.consume_session(session.session_id)
        second = store.consume_session(session.session_id)

    assert first == session
    assert second is None
    assert counter.calls == {"DeleteItem": 2}  # one call per consume
    assert store.get_session(session.session_id) is None


def test_state_round_trip_keeps_every_field(store: OneTimeStore, clock: ManualClock) -> None:
    state = store.create_state(
        KEY,
        redirect_uri="https://broker.test/callback/worksection",
        code_verifier="v" * 64,
        session_id=new_nonce(),
        return_to="https://app.test/",
        scopes=["a", "b"],
        metadata={"k": "v"},
    )
    assert state.expires_at == clock.now() + STATE_TTL_SECONDS == clock.now() + 600
    assert store.consume_state(state.state) == state
    assert store.consume_state(state.state) is None


def test_state_without_optional_fields(store: OneTimeStore) -> None:
    state = store.create_state(KEY, redirect_uri="https://broker.test/callback/worksection")
    consumed = store.consume_state(state.state)
    assert consumed == state
    assert consumed is not None
    assert (consumed.code_verifier, consumed.session_id, consumed.return_to) == (None, None, None)


def test_expired_items_that_dynamodb_has_not_removed_are_absent(
    store: OneTimeStore, clock: ManualClock, table: DynamoTable
) -> None:
    session = store.create_session(KEY)
    state = store.create_state(KEY, redirect_uri="https://broker.test/cb")
    clock.advance(STATE_TTL_SECONDS + 1)

    assert store.consume_state(state.state) is None
    assert item_exists(table, f"state#{state.state}", "state")  # still stored: TTL deletion is lazy
    assert store.get_session(session.session_id) is not None  # sessions live longer

    clock.advance(SESSION_TTL_SECONDS)
    assert store.get_session(session.session_id) is None
    assert store.consume_session(session.session_id) is None


def test_item_expires_within_its_last_second(store: OneTimeStore, clock: ManualClock) -> None:
    state = store.create_state(KEY, redirect_uri="https://broker.test/cb", ttl_seconds=10.5)
    clock.advance(10.6)  # ttl (whole seconds, rounded up) has not passed, expires_at has
    assert store.consume_state(state.state) is None


def test_unknown_ids_are_absent(store: OneTimeStore) -> None:
    assert store.consume_session(new_nonce()) is None
    assert store.consume_state(new_nonce()) is None
    assert store.get_session(new_nonce()) is None


@pytest.mark.parametrize("bad", ["", "short", "x" * 129, "has space in it....", "../../etc/passwd_x"])
def test_malformed_ids_are_refused_before_any_call(store: OneTimeStore, aws_clients: AwsClients, bad: str) -> None:
    with AwsCallCounter(aws_clients) as counter:
        with pytest.raises(InvalidInput):
            store.consume_session(bad)
        with pytest.raises(InvalidInput):
            store.consume_state(bad)
    assert counter.total == 0


def test_put_never_overwrites(store: OneTimeStore, clock: ManualClock) -> None:
    session = ConnectSession(
        session_id=new_nonce(),
        provider="workly",
        connection_id="c",
        return_to=None,
        scopes=(),
        metadata={},
        created_at=clock.now(),
        expires_at=clock.now() + 60,
    )
    store.put_session(session)
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):
        store.put_session(session)


def test_nonces_are_long_random_and_hidden_from_repr() -> None:
    values = {new_nonce() for _ in range(100)}
    assert len(values) == 100
    assert all(len(v) >= 43 for v in values)  # 32 bytes = 256 bits, url-safe base64
    state = OAuthState(
        state="S" * 43,
        provider="worksection",
        connection_id="c",
        session_id="I" * 43,
        redirect_uri="https://x",
        code_verifier="V" * 43,
        return_to=None,
        scopes=(),
        metadata={},
        expires_at=0.0,
    )
    assert "SSSS" not in repr(state)
    assert "VVVV" not in repr(state)
    assert "IIII" not in repr(state)
