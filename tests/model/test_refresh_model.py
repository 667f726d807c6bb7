"""The refresh model (tests/model/refresh_model.py) against the in-memory backend, many examples.

`make test` runs a budget that fits its time; `make soak` runs the same machine far longer
(MODEL_EXAMPLES, default 2,000 there).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from tokenbroker.clock import ManualClock
from tokenbroker.repository import ConnectionRepository

from tests.model.refresh_model import RefreshMachine

EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "1500"))


class InMemoryRefresh(RefreshMachine):
    @staticmethod
    def make_repository(clock: ManualClock) -> ConnectionRepository:
        return ConnectionRepository.memory(clock)


InMemoryRefresh.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=int(os.environ.get("MODEL_STEPS", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_refresh_model_in_memory = InMemoryRefresh.TestCase
