"""Refresh functions: the sweep (EventBridge Scheduler) and the worker (SQS), one module.

- ``sweep_handler``: enqueue the connections that fall due before the next sweep (``Sweeper``),
  then discard the grants whose connect session expired while waiting for confirmation.
- ``worker_handler``: one ``RefreshEngine.refresh`` per SQS record, reporting partial batch
  failures. Refresh outcomes, failures included, complete the record (the item carries the
  backoff); only unexpected exceptions (AWS outage, ``LeaseLost``, a malformed message) fail it,
  so SQS retries it and finally dead-letters it.

Collaborators are built on first use from the environment; ``use_services`` injects them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import EventType, process_partial_response
from tokenbroker.batch import ConcurrentBatchProcessor
from tokenbroker.events import EventSink
from tokenbroker.lazy import Lazy
from tokenbroker.observability import logger, tracer
from tokenbroker.sweep import RefreshWorker, Sweeper, flush_events

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext


@dataclass(frozen=True, slots=True)
class Services:
    worker: RefreshWorker
    events: EventSink  # flushed after every batch (a BatchingEventSink publishes then)
    sweeper: Sweeper | None = None  # None: this deployment has no queue (worker only)
    threads: int = 1  # records of a batch in flight at once (the deployed worker: WORKER_THREADS)
    # ConnectService.discard_expired_pending: unconfirmed grants past their session's expiry.
    discard_expired_pending: Callable[[], int] | None = None


def use_services(services: Services | None) -> None:
    """Inject collaborators (tests, the local stack); ``None`` builds them from the environment again."""
    _services.use(services)


def services() -> Services:
    return _services.get()


def _services_from_env() -> Services:
    # Imported here: only the first invocation of a cold start pays for it.
    from tokenbroker.wiring import Runtime  # noqa: PLC0415

    runtime = Runtime.from_env()
    return Services(
        worker=runtime.refresh_worker,
        events=runtime.worker_events,
        sweeper=runtime.sweeper,
        threads=runtime.settings.worker_threads,
        discard_expired_pending=lambda: runtime.connect.discard_expired_pending(),  # noqa: PLW0108 - built on first use
    )


_services: Lazy[Services] = Lazy(_services_from_env)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def sweep_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    sweeper = services().sweeper
    if sweeper is None:
        raise RuntimeError("REFRESH_QUEUE_URL is not set: the sweep has nowhere to send work")
    result = sweeper.run(time_left=lambda: context.get_remaining_time_in_millis() / 1000.0)
    return {
        "enqueued": result.enqueued,
        "failed": result.failed,
        "truncated": result.truncated,
        "discarded": _discard_expired_pending(),
    }


def _discard_expired_pending() -> int:
    discard = services().discard_expired_pending
    if discard is None:
        return 0
    try:
        return discard()
    except Exception:
        # Refreshing is this function's first job: a failed clean-up waits for the next run.
        logger.exception("discarding expired pending grants failed")
        return 0


def _record_handler(record: SQSRecord) -> None:
    # Every line logged for this message carries its id (as the DLQ and a redrive show it).
    # Thread-local: the local stack runs batches on threads; Lambda runs one at a time.
    logger.thread_safe_append_keys(correlation_id=record.message_id)
    try:
        services().worker.handle(record.body)
    finally:
        logger.thread_safe_remove_keys(["correlation_id"])


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def worker_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    # A processor per invocation: it keeps per-batch state, and the local stack polls on threads.
    processor = ConcurrentBatchProcessor(EventType.SQS, max_workers=services().threads)
    try:
        return process_partial_response(
            event=event, record_handler=_record_handler, processor=processor, context=context
        )
    finally:
        flush_events(services().events)
