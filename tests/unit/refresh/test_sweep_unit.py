"""Sweep and worker logic with fakes: batching, retries of failed entries, message parsing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from tokenbroker.clock import ManualClock
from tokenbroker.errors import ConnectionNotFound, InvalidInput
from tokenbroker.keys import ConnectionKey
from tokenbroker.refresh import RefreshOutcome, RefreshResult
from tokenbroker.sweep import RefreshMessage, RefreshWorker, Sweeper


class FakeDue:
    def __init__(self, count: int) -> None:
        self.keys = [ConnectionKey("workly", f"c{n}") for n in range(count)]
        self.asked: list[tuple[float, int | None]] = []

    def due(self, before: float, limit: int | None = None) -> Iterable[ConnectionKey]:
        self.asked.append((before, limit))
        return iter(self.keys[:limit] if limit is not None else self.keys)


class FakeSqs:
    """Fails the entries whose ids are scripted per call; records what was sent."""

    def __init__(self, failures: list[dict[str, bool]] | None = None) -> None:
        self.calls: list[list[dict[str, str]]] = []
        self.failures = failures or []  # per call: {entry id: sender_fault}

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:  # noqa: N803
        assert QueueUrl == "https://sqs.example/queue"
        assert 1 <= len(Entries) <= 10
        self.calls.append(Entries)
        failing = self.failures.pop(0) if self.failures else {}
        failed = [{"Id": e["Id"], "SenderFault": failing[e["Id"]], "Code": "X"} for e in Entries if e["Id"] in failing]
        ok = [{"Id": e["Id"]} for e in Entries if e["Id"] not in failing]
        return {"Successful": ok, "Failed": failed}


def sweeper(due: FakeDue, sqs: FakeSqs, clock: ManualClock, **options: Any) -> Sweeper:
    return Sweeper(connections=due, sqs=sqs, queue_url="https://sqs.example/queue", clock=clock, **options)  # type: ignore[arg-type]


def test_batches_of_ten_with_the_horizon(clock: ManualClock) -> None:
    due, sqs = FakeDue(23), FakeSqs()
    result = sweeper(due, sqs, clock, horizon=120).run()
    assert (result.enqueued, result.failed, result.truncated) == (23, 0, False)
    assert [len(c) for c in sqs.calls] == [10, 10, 3]
    assert due.asked == [(clock.now() + 120, 10_001)]
    bodies = [RefreshMessage.from_body(e["MessageBody"]) for call in sqs.calls for e in call]
    assert [b.key for b in bodies] == due.keys
    assert {b.due_at for b in bodies} == {clock.now() + 120}


def test_failed_entries_are_retried_and_sender_faults_are_not(clock: ManualClock) -> None:
    due = FakeDue(10)
    sqs = FakeSqs([{"3": False, "4": False, "5": True}, {"4": False}])
    result = sweeper(due, sqs, clock).run()
    assert [sorted(e["Id"] for e in call) for call in sqs.calls] == [
        [str(n) for n in range(10)],
        ["3", "4"],
        ["4"],
    ]
    assert (result.enqueued, result.failed) == (9, 1)


def test_entries_failing_every_try_are_counted(clock: ManualClock) -> None:
    sqs = FakeSqs([{"0": False}] * 3)
    result = sweeper(FakeDue(1), sqs, clock).run()
    assert len(sqs.calls) == 3 and (result.enqueued, result.failed) == (0, 1)


def test_bounded_by_max_messages_and_time(clock: ManualClock) -> None:
    due, sqs = FakeDue(30), FakeSqs()
    result = sweeper(due, sqs, clock, max_messages=12).run()
    assert (result.enqueued, result.truncated) == (12, True)
    left = iter([100.0, 100.0, 100.0, 5.0])
    result = sweeper(FakeDue(30), FakeSqs(), clock).run(time_left=lambda: next(left))
    assert (result.enqueued, result.truncated) == (3, True)


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"provider": "workly"}',
        '{"provider": "Workly", "connection_id": "a"}',
        '{"provider": "workly", "connection_id": "../etc"}',
        '{"provider": "workly", "connection_id": "a", "due_at": "soon"}',
        '{"provider": "workly", "connection_id": "a", "due_at": true}',
        '{"provider": "workly", "connection_id": "a", "due_at": NaN}',
        "x" * 5000,
    ],
)
def test_malformed_messages_are_invalid_input(body: str) -> None:
    with pytest.raises(InvalidInput):
        RefreshMessage.from_body(body)


def test_message_round_trip() -> None:
    message = RefreshMessage(ConnectionKey("worksection", "a.b-c_1"), 1_800_000_000.5)
    assert RefreshMessage.from_body(message.to_body()) == message
    # due_at is informational: a message without it is still a refresh request.
    assert RefreshMessage.from_body('{"provider": "workly", "connection_id": "a"}').due_at == 0.0


class FakeEngine:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.keys: list[ConnectionKey] = []

    def refresh(self, key: ConnectionKey, *, reason: str = "scheduled") -> RefreshResult:
        assert reason == "scheduled"
        self.keys.append(key)
        if self.error is not None:
            raise self.error
        return RefreshResult(RefreshOutcome.TRANSIENT_FAILURE, key, 1, None)


def test_worker_completes_every_outcome_and_skips_deleted_connections() -> None:
    body = RefreshMessage(ConnectionKey("workly", "a"), 0).to_body()
    engine = FakeEngine()
    result = RefreshWorker(engine).handle(body)
    assert result is not None and result.outcome is RefreshOutcome.TRANSIENT_FAILURE
    assert RefreshWorker(FakeEngine(ConnectionNotFound("gone"))).handle(body) is None
    with pytest.raises(RuntimeError):
        RefreshWorker(FakeEngine(RuntimeError("outage"))).handle(body)
