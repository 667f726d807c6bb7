"""The two queries of the connection store: due connections (sparse sharded GSI) and listing."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest
from tokenbroker.aws import AwsCallCounter, AwsClients, DynamoTable
from tokenbroker.clock import ManualClock
from tokenbroker.errors import InvalidInput
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import LastError
from tokenbroker.stores._dynamo import Item
from tokenbroker.stores.connections import DEFAULT_DUE_SHARDS, ConnectionStore, due_shard


@pytest.fixture
def store(table: DynamoTable, clock: ManualClock) -> ConnectionStore:
    return ConnectionStore(table, clock=clock)


def seed_like(table: DynamoTable, template: dict[str, Any], key: ConnectionKey, next_refresh_at: float) -> Item:
    """A copy of an item the store wrote, moved to ``key`` (and to its due shard and time if it has one)."""
    item = copy.deepcopy(template)
    item["pk"] = {"S": f"conn#{key.provider}"}
    item["sk"] = {"S": key.connection_id}
    item["provider"] = {"S": key.provider}
    item["connection_id"] = {"S": key.connection_id}
    if "due_shard" in item:
        item["due_shard"] = {"S": due_shard(key, DEFAULT_DUE_SHARDS)}
        item["next_refresh_at"] = {"N": f"{next_refresh_at:.3f}"}
    return item


def write_all(table: DynamoTable, items: list[Item]) -> None:
    for start in range(0, len(items), 25):
        batch: list[Any] = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
        table.client.batch_write_item(RequestItems={table.name: batch})


def test_due_returns_exactly_the_due_active_connections_across_shards(
    store: ConnectionStore, clock: ManualClock, aws_clients: AwsClients, table: DynamoTable
) -> None:
    """1,000 connections with mixed times and statuses.

    Each kind of connection is written once through the store (active, active without a
    schedule, needs_reauth, deleted); the 1,000 are copies of those items under other keys,
    because moto evaluates each long update expression slowly (about 15 ms).
    """
    now = clock.now()
    templates: dict[str, dict[str, Any]] = {}
    for kind in ("active", "unscheduled", "needs_reauth", "deleted"):
        key = ConnectionKey("template", kind)
        store.save_connected(
            key,
            expires_at=now + 7200,
            refresh_expires_at=None,
            next_refresh_at=None if kind == "unscheduled" else now - 7200,
        )
        if kind == "needs_reauth":
            store.acquire_lease(key, "w", 30)
            store.mark_needs_reauth(key, "w", LastError("needs_reauth", "invalid_grant", now))
        elif kind == "deleted":
            store.delete(key)
        templates[kind] = dict(table.client.get_item(TableName=table.name, Key=store._key(key))["Item"])
        table.client.delete_item(TableName=table.name, Key=store._key(key))

    rng = random.Random(20261122)
    cutoff = now + 600
    expected: dict[ConnectionKey, float] = {}
    shards_used: set[str] = set()
    items: list[Item] = []
    for i in range(1000):
        key = ConnectionKey(rng.choice(["workly", "worksection", "github"]), f"conn-{i:04d}")
        next_refresh_at = round(now + rng.uniform(-3600, 3600), 3)
        kind = rng.choices(list(templates), weights=[80, 5, 10, 5])[0]
        items.append(seed_like(table, templates[kind], key, next_refresh_at))
        if kind == "active" and next_refresh_at <= cutoff:
            expected[key] = next_refresh_at
            shards_used.add(due_shard(key, DEFAULT_DUE_SHARDS))
    write_all(table, items)

    with AwsCallCounter(aws_clients) as counter:
        found = list(store.due(cutoff))

    assert 300 < len(expected) < 700  # the mix is what the test claims
    assert set(found) == set(expected)
    assert len(found) == len(expected)  # no duplicates
    assert [expected[k] for k in found] == sorted(expected.values())  # earliest first
    assert len(shards_used) == DEFAULT_DUE_SHARDS
    assert set(counter.calls) == {"Query"}  # never a Scan
    assert counter.calls["Query"] >= DEFAULT_DUE_SHARDS

    earliest = list(store.due(cutoff, limit=50))
    assert earliest == found[:50]


def test_due_paginates_within_a_shard(store: ConnectionStore, clock: ManualClock, aws_clients: AwsClients) -> None:
    single = ConnectionStore(store_table(store), clock=clock, due_shards=1)
    keys = [ConnectionKey("workly", f"c{i:03d}") for i in range(25)]
    for offset, key in enumerate(keys):
        single.save_connected(key, expires_at=None, refresh_expires_at=None, next_refresh_at=clock.now() + offset)

    with AwsCallCounter(aws_clients) as counter:
        found = list(single._due_in_shard(0, clock.now() + 100, page_size=10))

    assert [key for _, key in found] == keys
    assert counter.calls == {"Query": 3}


def test_due_with_nothing_due_and_zero_limit(store: ConnectionStore, clock: ManualClock) -> None:
    store.save_connected(
        ConnectionKey("workly", "later"), expires_at=None, refresh_expires_at=None, next_refresh_at=clock.now() + 60
    )
    assert list(store.due(clock.now())) == []
    assert list(store.due(clock.now() + 60, limit=0)) == []
    assert list(store.due(clock.now() + 60)) == [ConnectionKey("workly", "later")]


def store_table(store: ConnectionStore) -> DynamoTable:
    return DynamoTable(store._client, store._table)


def test_list_by_provider_paginates_with_an_opaque_cursor(store: ConnectionStore, clock: ManualClock) -> None:
    for i in range(25):
        store.save_connected(
            ConnectionKey("workly", f"w{i:02d}"), expires_at=None, refresh_expires_at=None, next_refresh_at=None
        )
    store.save_connected(
        ConnectionKey("worksection", "ws"), expires_at=None, refresh_expires_at=None, next_refresh_at=None
    )
    store.delete(ConnectionKey("workly", "w03"))

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = store.list_by_provider("workly", limit=10, cursor=cursor)
        pages += 1
        assert len(page.connections) <= 10
        seen.extend(c.key.connection_id for c in page.connections)
        cursor = page.cursor
        if cursor is None:
            break
        assert "w0" not in cursor  # opaque, not a raw key
    assert seen == [f"w{i:02d}" for i in range(25) if i != 3]
    assert pages == 3
    assert all(c.key.provider == "worksection" for c in store.list_by_provider("worksection").connections)


def test_list_by_provider_refuses_foreign_or_forged_cursors(store: ConnectionStore, clock: ManualClock) -> None:
    for i in range(3):
        store.save_connected(
            ConnectionKey("workly", f"w{i}"), expires_at=None, refresh_expires_at=None, next_refresh_at=None
        )
    cursor = store.list_by_provider("workly", limit=1).cursor
    assert cursor is not None
    with pytest.raises(InvalidInput):
        store.list_by_provider("worksection", cursor=cursor)
    with pytest.raises(InvalidInput):
        store.list_by_provider("workly", cursor="not-a-cursor!")
    with pytest.raises(InvalidInput):
        store.list_by_provider("workly", limit=0)
    with pytest.raises(InvalidInput):
        store.list_by_provider("Bad Provider")
