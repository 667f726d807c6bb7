"""The scheduled side of refreshing: a sweep that enqueues due connections, a worker that refreshes them.

Sweep (EventBridge Scheduler, every few minutes): Query the sparse, sharded ``due`` index (never a
Scan) for active connections whose ``next_refresh_at`` falls before the next sweep, and send one
SQS message per connection with SendMessageBatch (10 per call; failed entries retried). Bounded
per invocation (``max_messages`` and the Lambda's remaining time): what is left stays due and the
next run takes it.

Worker (SQS event source): parse the message, ``RefreshEngine.refresh``. Every refresh outcome,
failures included, completes the message: a failure is already recorded on the item (backoff,
pause or needs_reauth) and the sweep brings it back when it is due. Only what the engine could not
handle (an AWS outage, a lost lease, a malformed message) fails the record, so SQS retries it and
finally moves it to the DLQ.

Duplicates are harmless: the engine re-reads under the lease and answers ``not_needed``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tokenbroker.clock import Clock
from tokenbroker.errors import ConnectionNotFound, InvalidInput
from tokenbroker.events import SOURCE, DomainEvent, EventSink
from tokenbroker.keys import ConnectionKey, validate_connection_id, validate_provider_name
from tokenbroker.observability import logger
from tokenbroker.refresh import RefreshResult
from tokenbroker.schedule import DEFAULT_POLICY

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef

MAX_BATCH = 10  # SendMessageBatch and PutEvents both take at most 10 entries
# Deployments pass SchedulePolicy.horizon (wiring.py); the engine's slack is the same number.
DEFAULT_HORIZON = DEFAULT_POLICY.horizon
DEFAULT_MAX_MESSAGES = 10_000
SEND_ATTEMPTS = 3
SEND_RETRY_DELAY = 0.2
# Stop enqueueing when the invocation has less than this left (seconds).
TIME_MARGIN = 10.0
MAX_BODY_BYTES = 1024


class DueConnections(Protocol):
    """``ConnectionStore.due``."""

    def due(self, before: float, limit: int | None = None) -> Iterable[ConnectionKey]: ...


class Refresher(Protocol):
    def refresh(self, key: ConnectionKey, *, reason: str = ...) -> RefreshResult: ...


@dataclass(frozen=True, slots=True)
class RefreshMessage:
    """One queued refresh. ``due_at``: the sweep found the connection due no later than this."""

    key: ConnectionKey
    due_at: float

    def to_body(self) -> str:
        return json.dumps(
            {"provider": self.key.provider, "connection_id": self.key.connection_id, "due_at": self.due_at},
            separators=(",", ":"),
        )

    @classmethod
    def from_body(cls, body: str) -> RefreshMessage:
        """Raises ``InvalidInput`` for anything but the shape ``to_body`` writes."""
        if len(body) > MAX_BODY_BYTES:
            raise InvalidInput("refresh message too large")
        try:
            data: Any = json.loads(body)
        except ValueError:
            raise InvalidInput("refresh message is not JSON") from None
        if not isinstance(data, Mapping):
            raise InvalidInput("refresh message must be a JSON object")
        # The validators narrow JSON's Any to str (ConnectionKey checks again: cheap, and keeps one rule).
        key = ConnectionKey(
            validate_provider_name(data.get("provider")), validate_connection_id(data.get("connection_id"))
        )
        due_at = data.get("due_at", 0.0)
        if isinstance(due_at, bool) or not isinstance(due_at, int | float) or not math.isfinite(due_at):
            raise InvalidInput("due_at must be a number", field="due_at")
        return cls(key, float(due_at))


@dataclass(frozen=True, slots=True)
class SweepResult:
    enqueued: int
    failed: int  # entries SQS refused even after retries; still due, the next sweep retries them
    truncated: bool  # stopped early (max_messages or time): the rest waits for the next run
    before: float


class Sweeper:
    def __init__(
        self,
        *,
        connections: DueConnections,
        sqs: SQSClient,
        queue_url: str,
        clock: Clock,
        horizon: float = DEFAULT_HORIZON,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        send_attempts: int = SEND_ATTEMPTS,
    ) -> None:
        self._connections = connections
        self._sqs = sqs
        self._queue_url = queue_url
        self._clock = clock
        self._horizon = horizon
        self._max_messages = max(1, max_messages)
        self._send_attempts = max(1, send_attempts)

    def run(self, *, time_left: Callable[[], float] | None = None) -> SweepResult:
        """One sweep. ``time_left``: seconds this invocation still has (Lambda context)."""
        before = self._clock.now() + self._horizon
        enqueued = failed = 0
        truncated = False
        batch: list[RefreshMessage] = []
        # One more than allowed, to know whether we stopped short.
        for count, key in enumerate(self._connections.due(before, limit=self._max_messages + 1), start=1):
            if count > self._max_messages or (time_left is not None and time_left() < TIME_MARGIN):
                truncated = True
                break
            batch.append(RefreshMessage(key, before))
            if len(batch) == MAX_BATCH:
                sent, lost = self._send(batch)
                enqueued, failed, batch = enqueued + sent, failed + lost, []
        if batch:
            sent, lost = self._send(batch)
            enqueued, failed = enqueued + sent, failed + lost
        result = SweepResult(enqueued, failed, truncated, before)
        log = logger.warning if failed or truncated else logger.info
        log("sweep finished", extra={"enqueued": enqueued, "failed": failed, "truncated": truncated})
        return result

    def _send(self, messages: list[RefreshMessage]) -> tuple[int, int]:
        """SendMessageBatch with retries of the failed entries; returns (sent, failed)."""
        pending = {str(index): message for index, message in enumerate(messages)}
        refused = 0
        for attempt in range(1, self._send_attempts + 1):
            entries: list[SendMessageBatchRequestEntryTypeDef] = [
                {"Id": entry_id, "MessageBody": message.to_body()} for entry_id, message in pending.items()
            ]
            answer = self._sqs.send_message_batch(QueueUrl=self._queue_url, Entries=entries)
            retry: dict[str, RefreshMessage] = {}
            for failure in answer.get("Failed", []):
                if failure.get("SenderFault"):
                    refused += 1  # our request is wrong: sending it again cannot help
                    logger.error("SQS refused a refresh message", extra={"code": failure.get("Code")})
                else:
                    retry[failure["Id"]] = pending[failure["Id"]]
            pending = retry
            if not pending:
                break
            if attempt < self._send_attempts:
                self._clock.sleep(SEND_RETRY_DELAY * attempt)
        failed = refused + len(pending)
        return len(messages) - failed, failed


class RefreshWorker:
    """Turns one queue message into one engine call."""

    def __init__(self, refresher: Refresher) -> None:
        self._refresher = refresher

    def handle(self, body: str) -> RefreshResult | None:
        """Raises for a message that should be retried (or dead-lettered); None: nothing to do."""
        message = RefreshMessage.from_body(body)
        try:
            result = self._refresher.refresh(message.key, reason="scheduled")
        except ConnectionNotFound:
            # Deleted after the sweep saw it: done, not a failure.
            logger.info("connection no longer exists", extra=_fields(message.key))
            return None
        logger.info(
            "refresh message handled",
            extra={**_fields(message.key), "outcome": str(result.outcome), "generation": result.generation},
        )
        return result


class BatchingEventSink:
    """Collects events and publishes them with PutEvents, 10 per call, when flushed.

    A worker invocation handles up to 10 messages: one PutEvents for the batch instead of one per
    refresh keeps a scheduled refresh within its AWS-call budget. Best effort, like
    ``EventBridgeSink``: the tokens are durable before any event is published.
    """

    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name
        self._pending: list[DomainEvent] = []
        self._lock = threading.Lock()  # the local stack runs workers on threads

    def publish(self, event: DomainEvent) -> None:
        with self._lock:
            self._pending.append(event)

    def flush(self) -> int:
        """Publish what was collected; returns how many events the bus accepted."""
        with self._lock:
            pending, self._pending = self._pending, []
        accepted = 0
        for start in range(0, len(pending), MAX_BATCH):
            chunk = pending[start : start + MAX_BATCH]
            entries: list[Any] = [
                {
                    "Source": SOURCE,
                    "DetailType": str(event.type),
                    "Detail": json.dumps(event.detail()),
                    "EventBusName": self._bus_name,
                }
                for event in chunk
            ]
            try:
                answer = self._client.put_events(Entries=entries)
            except Exception:  # must not fail a batch whose tokens are already written
                logger.warning("events not published", extra={"count": len(chunk)}, exc_info=True)
                continue
            failed = int(answer.get("FailedEntryCount", 0))
            if failed:
                logger.warning("events rejected by the bus", extra={"count": failed})
            accepted += len(chunk) - failed
        return accepted


def flush_events(sink: EventSink) -> None:
    """Flush a ``BatchingEventSink``; other sinks publish at once and have nothing to flush."""
    if isinstance(sink, BatchingEventSink):
        sink.flush()


def _fields(key: ConnectionKey) -> dict[str, str]:
    return {"provider": key.provider, "connection_id": key.connection_id}
