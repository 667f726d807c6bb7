"""functions/refresh/app.py through real SQS event shapes (messages received from moto's queue)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import pytest
from tokenbroker.aws import AwsCallCounter, AwsClients
from tokenbroker.events import MemorySink
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import StoredToken
from tokenbroker.sweep import BatchingEventSink, RefreshMessage

from tests.integration.refresh.harness import Rig, ScriptedProvider
from tests.support.handlers import load_function

REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class FakeContext:
    function_name: str = "RefreshWorkerFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:RefreshWorkerFunction"
    aws_request_id: str = "11111111-2222-3333-4444-555555555555"
    remaining_ms: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def app() -> Any:
    module: ModuleType = load_function("refresh")
    yield module
    module.use_services(None)


@pytest.fixture
def sqs(aws_clients: AwsClients) -> Any:
    return aws_clients.client("sqs")


@pytest.fixture
def queue_url(sqs: Any) -> str:
    return str(sqs.create_queue(QueueName="refresh-queue")["QueueUrl"])


def sqs_event(sqs: Any, queue_url: str) -> dict[str, Any]:
    """What Lambda's event source mapping hands the worker, built from messages really received."""
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    answer = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"], MessageAttributeNames=["All"]
    )
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {}),
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": REGION,
            }
            for m in answer.get("Messages", [])
        ]
    }


def test_worker_reports_exactly_the_poison_messages(app: Any, rig: Rig, sqs: Any, queue_url: str) -> None:
    provider = ScriptedProvider("worksection", rig.clock)
    rig.providers["worksection"] = provider
    keys = [ConnectionKey("worksection", f"w{n}") for n in range(3)]
    for key in keys:
        rig.seed(key, provider.issue())
    rig.clock.advance(0.9 * 86_400 + 1)
    runtime = rig.runtime()
    app.use_services(app.Services(worker=runtime.refresh_worker, events=runtime.worker_events))

    for key in keys:
        sqs.send_message(QueueUrl=queue_url, MessageBody=RefreshMessage(key, rig.clock.now()).to_body())
    poison = sqs.send_message(QueueUrl=queue_url, MessageBody="{not json")["MessageId"]
    # A connection whose provider nobody can build: an unexpected error, not a refresh outcome.
    broken_key = ConnectionKey("brokenprovider", "b1")
    rig.connections.save_connected(broken_key, expires_at=0, refresh_expires_at=None, next_refresh_at=0)
    rig.tokens.put(broken_key, _stored(provider, broken_key, rig))
    broken = sqs.send_message(QueueUrl=queue_url, MessageBody=RefreshMessage(broken_key, 0).to_body())["MessageId"]
    gone = RefreshMessage(ConnectionKey("worksection", "never-connected"), 0).to_body()
    sqs.send_message(QueueUrl=queue_url, MessageBody=gone)

    event = sqs_event(sqs, queue_url)
    assert len(event["Records"]) == 6
    answer = app.worker_handler(event, FakeContext())
    assert sorted(f["itemIdentifier"] for f in answer["batchItemFailures"]) == sorted([poison, broken])
    assert provider.refresh_calls == 3
    assert all(rig.tokens.get(key).generation == 2 for key in keys)
    # The broken connection's lease was released (the error came before any provider call).
    broken_item = rig.connections.get(broken_key)
    assert broken_item is not None and broken_item.lease is None


def _stored(provider: ScriptedProvider, key: ConnectionKey, rig: Rig) -> StoredToken:
    """An expired token (so the scheduled rule wants to refresh it)."""
    connection = rig.connections.get(key)
    assert connection is not None
    token = replace(provider.issue(), expires_at=int(rig.clock.now()) - 10)
    return StoredToken(token, connection.generation)


def test_worker_batch_publishes_events_in_one_put_events(
    app: Any, rig: Rig, aws_clients: AwsClients, sqs: Any, queue_url: str
) -> None:
    events_client: Any = aws_clients.client("events")
    events_client.create_event_bus(Name="tokenbroker-test")
    provider = ScriptedProvider("worksection", rig.clock)
    rig.providers["worksection"] = provider
    keys = [ConnectionKey("worksection", f"e{n}") for n in range(10)]
    for key in keys:
        rig.seed(key, provider.issue())
    rig.clock.advance(0.9 * 86_400 + 1)
    runtime = rig.runtime(event_bus_name="tokenbroker-test")  # the deployed worker's batching sink
    assert isinstance(runtime.worker_events, BatchingEventSink)
    app.use_services(app.Services(worker=runtime.refresh_worker, events=runtime.worker_events))
    for key in keys:
        sqs.send_message(QueueUrl=queue_url, MessageBody=RefreshMessage(key, rig.clock.now()).to_body())
    event = sqs_event(sqs, queue_url)
    with AwsCallCounter(aws_clients) as counter:
        answer = app.worker_handler(event, FakeContext())
    assert answer["batchItemFailures"] == []
    calls = counter.by_service
    assert calls["events.PutEvents"] == 1
    # Per refresh: acquire+attempt, read, write, commit.
    assert calls["dynamodb.UpdateItem"] == 20
    assert calls["secretsmanager.GetSecretValue"] == 10 and calls["secretsmanager.PutSecretValue"] == 10
    assert counter.total == 41


def test_sweep_handler_enqueues_due_connections(app: Any, rig: Rig, sqs: Any, queue_url: str) -> None:
    for n in range(12):
        rig.connections.save_connected(
            ConnectionKey("workly", f"s{n}"),
            expires_at=rig.clock.now() + 3600,
            refresh_expires_at=None,
            next_refresh_at=rig.clock.now() - n,
        )
    runtime = rig.runtime(refresh_queue_url=queue_url)
    app.use_services(app.Services(worker=runtime.refresh_worker, events=runtime.worker_events, sweeper=runtime.sweeper))
    scheduler_event = {"version": "0", "detail-type": "Scheduled Event", "source": "aws.scheduler", "detail": {}}
    assert app.sweep_handler(scheduler_event, FakeContext()) == {
        "enqueued": 12,
        "failed": 0,
        "truncated": False,
        "discarded": 0,
    }
    # Out of time: nothing sent, the next run takes it.
    assert app.sweep_handler(scheduler_event, FakeContext(remaining_ms=2_000))["truncated"] is True
    bodies = [json.loads(r["body"]) for r in sqs_event(sqs, queue_url)["Records"]]
    assert len(bodies) == 10 and {b["provider"] for b in bodies} == {"workly"}


def test_sweep_handler_without_a_queue_fails_loudly(app: Any, rig: Rig) -> None:
    runtime = rig.runtime()  # no REFRESH_QUEUE_URL: no sweeper
    app.use_services(app.Services(worker=runtime.refresh_worker, events=runtime.worker_events, sweeper=runtime.sweeper))
    with pytest.raises(RuntimeError, match="REFRESH_QUEUE_URL"):
        app.sweep_handler({}, FakeContext())


def test_handlers_build_their_collaborators_from_the_environment(
    app: Any, table: Any, queue_url: str, aws_clients: AwsClients, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No injection: Settings from the environment, wiring.Runtime, a batching event sink."""
    sqs = aws_clients.client("sqs")
    events_client: Any = aws_clients.client("events")
    events_client.create_event_bus(Name="tokenbroker-env")
    monkeypatch.setenv("TABLE_NAME", table.name)
    monkeypatch.setenv("STAGE", "test")
    monkeypatch.setenv("REFRESH_QUEUE_URL", queue_url)
    monkeypatch.setenv("EVENT_BUS_NAME", "tokenbroker-env")
    monkeypatch.setenv("REFRESH_SCHEDULE", "rate(1 minute)")
    app.use_services(None)
    from tokenbroker.clock import SystemClock  # noqa: PLC0415
    from tokenbroker.stores import ConnectionStore  # noqa: PLC0415

    store = ConnectionStore(table, clock=SystemClock())
    now = SystemClock().now()
    store.save_connected(
        ConnectionKey("workly", "env-due"), expires_at=now + 30, refresh_expires_at=None, next_refresh_at=now + 30
    )
    store.save_connected(
        ConnectionKey("workly", "env-later"), expires_at=now + 900, refresh_expires_at=None, next_refresh_at=now + 90
    )
    assert app.sweep_handler({}, FakeContext())["enqueued"] == 1  # horizon 60 s: the schedule from the environment
    services = app.services()
    assert isinstance(services.events, BatchingEventSink)
    assert services.threads == 10  # the deployed worker refreshes a batch's records side by side
    # A message for a connection that is not due: handled (not_needed), nothing fails.
    event = sqs_event(sqs, queue_url)
    event["Records"][0]["body"] = RefreshMessage(ConnectionKey("workly", "env-later"), now).to_body()
    assert app.worker_handler(event, FakeContext()) == {"batchItemFailures": []}


class _BarrierWorker:
    """Each good record waits until three are in flight together: one after another, it times out."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=5)
        self.handled: list[str] = []
        self._lock = threading.Lock()

    def handle(self, body: str) -> None:
        if body == "poison":
            raise ValueError("a message no worker can read")
        self.barrier.wait()
        with self._lock:
            self.handled.append(body)


def test_a_batch_is_refreshed_side_by_side_and_failures_stay_per_record(app: Any, sqs: Any, queue_url: str) -> None:
    for body in ("a", "b", "poison", "c"):
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)
    event = sqs_event(sqs, queue_url)
    assert len(event["Records"]) == 4
    worker = _BarrierWorker(parties=3)
    app.use_services(app.Services(worker=worker, events=MemorySink(), threads=4))

    answer = app.worker_handler(event, FakeContext())

    poison_id = next(r["messageId"] for r in event["Records"] if r["body"] == "poison")
    assert answer == {"batchItemFailures": [{"itemIdentifier": poison_id}]}
    assert sorted(worker.handled) == ["a", "b", "c"]
