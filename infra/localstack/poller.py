"""Feeds the refresh queue into the worker handler like Lambda's SQS event source mapping.

Long-polls the queue, hands each batch to the handler as an SQS event, deletes the messages that
succeeded and leaves the ones listed in ``batchItemFailures`` (or the whole batch when the
handler raises) to come back after the visibility timeout, up to the queue's redrive policy.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from infra.localstack.functions import LambdaHandler
from infra.localstack.gateway import LambdaContext
from infra.localstack.resources import QueueInfo
from infra.localstack.topology import FunctionSpec

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageTypeDef

# Short enough that Ctrl-C is noticed within a second or two.
LONG_POLL_SECONDS = 1


class QueuePoller:
    def __init__(
        self,
        function: FunctionSpec,
        handler: LambdaHandler,
        queue: QueueInfo,
        sqs: SQSClient,
        *,
        region: str,
        account_id: str,
        batch_size: int = 10,
        batching_window: float = 0.0,
        report_batch_item_failures: bool = True,
        concurrency: int = 1,
    ) -> None:
        self._function = function
        self._handler = handler
        self._queue = queue
        self._sqs = sqs
        self._region = region
        self._account_id = account_id
        self._batch_size = max(1, min(10, batch_size))
        self._batching_window = batching_window
        self._partial = report_batch_item_failures
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"poll-{queue.logical_id}-{n}", daemon=True)
            for n in range(max(1, concurrency))
        ]
        self._lock = threading.Lock()
        self.delivered = 0
        self.deleted = 0
        self.failed = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                messages = self._receive()
                if messages:
                    self.deliver(messages)
            except (BotoCoreError, ClientError):
                if self._stop.is_set():
                    return
                traceback.print_exc(file=sys.stderr)
                self._stop.wait(1)

    def _receive(self) -> list[MessageTypeDef]:
        """One batch: long-poll for the first message, then gather more within the batching window."""
        messages: list[MessageTypeDef] = []
        deadline = time.monotonic() + self._batching_window
        wait = LONG_POLL_SECONDS
        while len(messages) < self._batch_size and not self._stop.is_set():
            answer = self._sqs.receive_message(
                QueueUrl=self._queue.url,
                MaxNumberOfMessages=self._batch_size - len(messages),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            got = answer.get("Messages", [])
            messages.extend(got)
            if not messages or not got or time.monotonic() >= deadline:
                break
            wait = 0
        return messages

    def event(self, messages: list[MessageTypeDef]) -> dict[str, Any]:
        return {"Records": [self._record(message) for message in messages]}

    def _record(self, message: MessageTypeDef) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        for name, value in (message.get("MessageAttributes") or {}).items():
            attribute: dict[str, Any] = {"dataType": value.get("DataType", "String")}
            if "StringValue" in value:
                attribute["stringValue"] = value["StringValue"]
            if "BinaryValue" in value:
                attribute["binaryValue"] = value["BinaryValue"]
            attributes[name] = attribute
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message.get("Body", ""),
            "attributes": dict(message.get("Attributes") or {}),
            "messageAttributes": attributes,
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._queue.arn,
            "awsRegion": self._region,
        }

    def deliver(self, messages: list[MessageTypeDef]) -> None:
        """Invoke the handler with one batch and settle the messages as Lambda would."""
        context = LambdaContext.for_function(self._function, region=self._region, account_id=self._account_id)
        with self._lock:
            self.delivered += len(messages)
        try:
            answer = self._handler(self.event(messages), context)
        except Exception:
            # The whole batch comes back after the visibility timeout.
            print(f"[queue] {self._function.logical_id} raised; the batch will be redelivered:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            with self._lock:
                self.failed += len(messages)
            return
        failed_ids = self._failed_ids(answer, messages)
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self._sqs.delete_message_batch(
                QueueUrl=self._queue.url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(chunk)],
            )
        with self._lock:
            self.deleted += len(done)
            self.failed += len(messages) - len(done)

    def _failed_ids(self, answer: Any, messages: list[MessageTypeDef]) -> set[str]:
        if not self._partial or not isinstance(answer, dict):
            return set()
        failures = answer.get("batchItemFailures")
        if failures is None:
            return set()
        known = {m["MessageId"] for m in messages}
        ids = set()
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if identifier not in known:
                # Lambda treats an unknown or empty identifier as a failure of the whole batch.
                return known
            ids.add(str(identifier))
        return ids
