"""Runs the sweep handler every few seconds, as EventBridge Scheduler does every few minutes on AWS."""

from __future__ import annotations

import sys
import threading
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

from infra.localstack.functions import LambdaHandler
from infra.localstack.gateway import LambdaContext
from infra.localstack.topology import FunctionSpec


class Scheduler:
    def __init__(
        self,
        function: FunctionSpec,
        handler: LambdaHandler,
        *,
        interval: float,
        region: str,
        account_id: str,
    ) -> None:
        if interval <= 0:
            raise ValueError("the sweep interval must be positive")
        self._function = function
        self._handler = handler
        self._interval = interval
        self._region = region
        self._account_id = account_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"schedule-{function.logical_id}", daemon=True)
        self.runs = 0
        self.failures = 0
        self._last_failure: str | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # A sweep in progress finishes its page of work; do not wait forever for it.
        self._thread.join(timeout=5)

    def event(self) -> dict[str, Any]:
        """What EventBridge Scheduler delivers to a Lambda target (its default input)."""
        name = f"tokenbroker-local-{self._function.logical_id}"
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.scheduler",
            "account": self._account_id,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self._region,
            "resources": [f"arn:aws:scheduler:{self._region}:{self._account_id}:schedule/default/{name}"],
            "detail": {},
        }

    def run_once(self) -> None:
        context = LambdaContext.for_function(self._function, region=self._region, account_id=self._account_id)
        try:
            self._handler(self.event(), context)
            self._last_failure = None
        except Exception as error:
            self.failures += 1
            summary = f"{type(error).__name__}: {error}"
            if summary == self._last_failure:
                # The same failure every few seconds: one line, not another traceback.
                print(f"[schedule] {self._function.logical_id} failed again: {summary}", file=sys.stderr)
            else:
                print(f"[schedule] {self._function.logical_id} raised:", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
            self._last_failure = summary
        finally:
            self.runs += 1

    def _run(self) -> None:
        # The first sweep runs one interval after start, like a fresh rate() schedule.
        while not self._stop.wait(self._interval):
            self.run_once()
