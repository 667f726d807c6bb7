"""Partial-batch processing for the refresh worker, with a batch's records refreshed side by side."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType


class ConcurrentBatchProcessor(BatchProcessor):
    """Powertools' ``BatchProcessor`` with up to ``max_workers`` records in flight at once.

    A refresh spends nearly all its time waiting on the provider, so ten records handled one
    after another cost ten provider round trips per invocation. Running them side by side is
    safe here: the queue is a standard one (no order to keep), every refresh takes its own lease,
    and the processor only appends to lists when it records an outcome.
    """

    def __init__(self, event_type: EventType, *, max_workers: int, **kwargs: Any) -> None:
        super().__init__(event_type, **kwargs)
        self._max_workers = max(1, max_workers)

    def process(self) -> list[tuple[Any, ...]]:
        workers = min(self._max_workers, len(self.records))
        if workers <= 1:
            return super().process()
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="refresh") as pool:
            return list(pool.map(self._process_record, self.records))
