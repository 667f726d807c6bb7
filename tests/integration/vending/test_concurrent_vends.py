"""The quality bar: 100 concurrent vends of an expiring token make exactly one provider refresh and
all 100 callers get the new token. Real threads, a moto server over HTTP, a sandbox with 200 ms of
refresh latency, the system clock."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import pytest
from tokenbroker.clock import SystemClock
from tokenbroker.keys import ConnectionKey
from tokenbroker.vending import VendedToken

from infra.sandboxes import WorksectionSandbox
from tests.integration.vending.stack import WS_EMAIL, WS_PASSWORD, Stack, build_stack, sandbox_catalog
from tests.support.aws import clients_for, new_table

CALLERS = 100


class HasEndpoint(Protocol):
    @property
    def endpoint_url(self) -> str: ...


KEY = ConnectionKey("worksection", "acme-1")


@pytest.fixture
def live_worksection() -> Iterator[WorksectionSandbox]:
    with WorksectionSandbox() as sandbox:  # system clock
        sandbox.add_user(WS_EMAIL, WS_PASSWORD, accounts=("acme",))
        sandbox.faults.set_latency(0.2, endpoint="refresh")
        yield sandbox


@pytest.fixture
def live_stack(moto_server: HasEndpoint, live_worksection: WorksectionSandbox, tmp_path: Path) -> Stack:
    clients = clients_for(moto_server.endpoint_url, max_pool_connections=CALLERS + 10)
    return build_stack(
        clients,
        new_table(clients),
        SystemClock(),
        sandbox_catalog(tmp_path, live_worksection),
        live_worksection,
        wait_seconds=10,
        stage=f"t{uuid.uuid4().hex[:12]}",  # the moto server outlives this test: own secret names
    )


def race(callers: int, call: Callable[[], VendedToken]) -> list[VendedToken]:
    start = threading.Barrier(callers)

    def one(_: int) -> VendedToken:
        start.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=callers) as pool:
        return list(pool.map(one, range(callers), timeout=60))


def test_100_concurrent_vends_of_an_expiring_token_make_one_refresh(live_stack: Stack) -> None:
    old = live_stack.seed("acme-1", expires_in=20)

    answers = race(CALLERS, lambda: live_stack.vending.vend(KEY, 60))

    assert live_stack.worksection.calls["refresh"] == 1
    assert len(answers) == CALLERS
    assert {a.access_token for a in answers} == {answers[0].access_token}
    assert answers[0].access_token != old.token.access_token
    assert {a.generation for a in answers} == {old.generation + 1}
    assert all(a.expires_in >= 60 for a in answers)
    assert live_stack.tokens.get(KEY).token.access_token == answers[0].access_token
    assert live_stack.refresh_metrics.total("RefreshOutcome", outcome="refreshed") == 1


def test_100_consumers_rejecting_the_same_rotated_token_make_one_refresh(live_stack: Stack) -> None:
    old = live_stack.seed("acme-1")
    rejected = hashlib.sha256(old.token.access_token.encode()).hexdigest()

    answers = race(CALLERS, lambda: live_stack.vending.refresh_rejected(KEY, rejected))

    assert live_stack.worksection.calls["refresh"] == 1
    assert {a.access_token for a in answers} == {answers[0].access_token}
    assert answers[0].generation == old.generation + 1
