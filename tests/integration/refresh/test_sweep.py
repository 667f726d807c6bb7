"""The sweep against moto: a Query of the due index, SendMessageBatch to a real (moto) queue."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.keys import ConnectionKey
from tokenbroker.refresh import RefreshResult
from tokenbroker.schedule import SchedulePolicy
from tokenbroker.stores.connections import DEFAULT_DUE_SHARDS, due_shard
from tokenbroker.sweep import RefreshMessage

from tests.integration.refresh.harness import Rig, ScriptedProvider, outcomes

HORIZON = 300.0


@pytest.fixture
def sqs(aws_clients: AwsClients) -> Any:
    return aws_clients.client("sqs")


@pytest.fixture
def queue_url(sqs: Any) -> str:
    return str(sqs.create_queue(QueueName="refresh")["QueueUrl"])


def drain(sqs: Any, queue_url: str) -> list[RefreshMessage]:
    messages: list[RefreshMessage] = []
    for _ in range(1000):  # bounded: 10 per receive
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=600)
        batch = answer.get("Messages", [])
        if not batch:
            return messages
        messages += [RefreshMessage.from_body(m["Body"]) for m in batch]
        # Deleted as we go: moto walks every in-flight message on each receive.
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)]
        assert not sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")
    raise AssertionError("queue did not drain")


def seed_items(rig: Rig, table: DynamoTable, count: int) -> set[ConnectionKey]:
    """``count`` connections with mixed due times; returns the ones due within the horizon.

    One connection is written by the store; the rest are copies of its raw item with their own key,
    shard and due time, in BatchWriteItem calls (moto parses every UpdateItem expression slowly:
    1,000 save_connected calls take minutes on a loaded machine).
    """
    now = rig.clock.now()
    offsets: list[float | None] = [-3600.0, -1.0, 0.0, HORIZON - 1, HORIZON + 60, 86_400.0, None]
    template_key = ConnectionKey("worksection", "template")
    rig.connections.save_connected(
        template_key, expires_at=now + 86_400, refresh_expires_at=None, next_refresh_at=now + 86_400
    )
    raw = table.client.get_item(TableName=table.name, Key={"pk": {"S": "conn#worksection"}, "sk": {"S": "template"}})
    template = raw["Item"]
    table.client.delete_item(TableName=table.name, Key={"pk": {"S": "conn#worksection"}, "sk": {"S": "template"}})
    due: set[ConnectionKey] = set()
    requests: list[Any] = []
    for index in range(count):
        key = ConnectionKey("worksection", f"conn-{index:05d}")
        offset = offsets[index % len(offsets)]
        item = {**template, "sk": {"S": key.connection_id}, "connection_id": {"S": key.connection_id}}
        item.pop("next_refresh_at", None)
        item.pop("due_shard", None)
        if offset is not None:
            item["next_refresh_at"] = {"N": str(int(now + offset))}
            item["due_shard"] = {"S": due_shard(key, DEFAULT_DUE_SHARDS)}
            if offset <= HORIZON:
                due.add(key)
        requests.append({"PutRequest": {"Item": item}})
    for start in range(0, len(requests), 25):
        answer = table.client.batch_write_item(RequestItems={table.name: requests[start : start + 25]})
        assert not answer.get("UnprocessedItems")
    # The copies read back as proper connections.
    copy = rig.connections.get(ConnectionKey("worksection", "conn-00000"))
    assert copy is not None and copy.next_refresh_at == int(now - 3600)
    return due


@pytest.mark.slow  # about 10 s on an idle machine: moto answers each SQS call in tens of ms
def test_sweep_of_a_thousand_connections_enqueues_exactly_the_due_ones(
    rig: Rig, table: DynamoTable, sqs: Any, queue_url: str
) -> None:
    due = seed_items(rig, table, 1000)
    assert len(due) == 572  # 4 of every 7, by construction
    sweeper = rig.sweeper(queue_url, schedule=SchedulePolicy(HORIZON))
    result = sweeper.run()
    assert result.enqueued == len(due) and result.failed == 0 and not result.truncated
    messages = drain(sqs, queue_url)
    assert len(messages) == len(due)
    assert {m.key for m in messages} == due
    assert {m.due_at for m in messages} == {rig.clock.now() + HORIZON}


def test_sweep_is_bounded_and_the_rest_comes_next_run(rig: Rig, table: DynamoTable, sqs: Any, queue_url: str) -> None:
    due = seed_items(rig, table, 70)
    sweeper = rig.sweeper(queue_url, schedule=SchedulePolicy(HORIZON), sweep_max_messages=25)
    first = sweeper.run()
    assert (first.enqueued, first.truncated) == (25, True)
    assert len(drain(sqs, queue_url)) == 25
    # Time is up: stop before sending anything.
    assert sweeper.run(time_left=lambda: 1.0).enqueued == 0
    # Nothing changed on the items (the worker did not run): the next sweep sends them again.
    assert len(due) == 40
    unbounded = rig.sweeper(queue_url, schedule=SchedulePolicy(HORIZON))
    assert unbounded.run().enqueued == 40


def test_duplicate_messages_are_harmless(rig: Rig, sqs: Any, queue_url: str) -> None:
    provider = ScriptedProvider("worksection", rig.clock)
    rig.providers["worksection"] = provider
    keys = [ConnectionKey("worksection", f"dup-{n}") for n in range(3)]
    for key in keys:
        rig.seed(key, provider.issue())
    rig.clock.advance(86_400 - 0.1 * 86_400 + 1)  # all due now
    sweeper = rig.sweeper(queue_url, schedule=SchedulePolicy(HORIZON))
    assert sweeper.run().enqueued == 3
    assert sweeper.run().enqueued == 3  # the sweep ran twice before any worker
    worker = rig.runtime().refresh_worker
    results: list[RefreshResult] = []
    for message in drain(sqs, queue_url):
        result = worker.handle(message.to_body())
        assert result is not None
        results.append(result)
    assert outcomes(results) == {"refreshed": 3, "not_needed": 3}
    assert provider.refresh_calls == 3
    assert all(rig.tokens.get(key).generation == 2 for key in keys)
    # Refreshed connections are no longer due: the next sweep sends nothing.
    assert sweeper.run().enqueued == 0
    assert json.loads(RefreshMessage(keys[0], 1.5).to_body()) == {
        "provider": "worksection",
        "connection_id": "dup-0",
        "due_at": 1.5,
    }
