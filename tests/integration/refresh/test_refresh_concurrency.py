"""50 concurrent refreshers of one connection, over a real (threaded) moto server and the
Worksection sandbox: exactly one provider call, everyone else contended or not_needed."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from tokenbroker.aws import AwsClients
from tokenbroker.clock import ManualClock
from tokenbroker.keys import ConnectionKey
from tokenbroker.refresh import RefreshOutcome, RefreshResult

from infra.sandboxes import WorksectionSandbox
from infra.sandboxes.catalog import sandbox_provider, token_from_answer
from tests.integration.refresh.harness import WS_EMAIL, WS_PASSWORD, Rig, outcomes
from tests.support.aws import new_table

REFRESHERS = 50


@pytest.fixture
def server_rig(server_clients: AwsClients) -> Iterator[tuple[Rig, WorksectionSandbox]]:
    clock = ManualClock()
    rig = Rig.create(server_clients, new_table(server_clients), clock)
    with WorksectionSandbox(clock=clock) as sandbox:
        sandbox.add_user(WS_EMAIL, WS_PASSWORD, accounts=("acme",))
        rig.providers["worksection"] = sandbox_provider(rig.catalog, sandbox, clock)
        yield rig, sandbox


def test_fifty_concurrent_refreshers_make_one_provider_call(server_rig: tuple[Rig, WorksectionSandbox]) -> None:
    rig, sandbox = server_rig
    key = ConnectionKey("worksection", f"race-{uuid.uuid4().hex[:8]}")  # the server outlives tests
    rig.seed(key, token_from_answer(sandbox.issue_tokens(WS_EMAIL), rig.clock.now()))
    sandbox.faults.set_latency(0.2, endpoint="refresh")  # keep the lease busy while others arrive
    engine = rig.engine()
    start = threading.Barrier(REFRESHERS)
    results: list[RefreshResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def refresher() -> None:
        start.wait(10)
        try:
            # What a vend asks: refresh generation 1, whoever gets there first.
            result = engine.refresh(key, reason="vend", should_refresh=lambda s: s.generation == 1)
        except BaseException as error:
            with lock:
                errors.append(error)
            return
        with lock:
            results.append(result)

    threads = [threading.Thread(target=refresher) for _ in range(REFRESHERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert not errors, errors
    assert len(results) == REFRESHERS
    counts = outcomes(results)
    assert counts.get("refreshed") == 1, counts
    assert set(counts) <= {"refreshed", "contended", "not_needed"}, counts
    assert sandbox.calls["refresh"] == 1 and sandbox.refreshes == 1
    assert rig.tokens.get(key).generation == 2 and rig.item(key).generation == 2
    assert rig.metrics.total("LeaseContention", provider="worksection") == counts.get("contended", 0)
    winner = next(r for r in results if r.outcome is RefreshOutcome.REFRESHED)
    assert winner.stored == rig.tokens.get(key)
