"""Real concurrency against moto in server mode: one lease winner per round, one consumer per state.

30 threads race for one lease for 80 rounds (a barrier lines them up). Even rounds start from a
released lease, odd rounds from an expired one (steal). Against moto's plain ThreadedMotoServer
this test saw two winners (round 36): moto's backends take no locks. As design.md says, the fix
is in the server, not the test: ``moto_server`` serves DynamoDB requests one at a time (as
DynamoDB serialises writes to one item), and the fully single-threaded server is checked too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from tokenbroker.aws import AwsCallCounter, AwsClients
from tokenbroker.clock import ManualClock
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import Connection
from tokenbroker.stores.connections import ConnectionStore, new_lease_owner
from tokenbroker.stores.onetime import OAuthState, OneTimeStore

from tests.support.aws import MotoServer, clients_for, new_table, running

THREADS = 30
ROUNDS = 80
KEY = ConnectionKey("worksection", "contended")
LEASE_SECONDS = 30.0


def race(threads: int, attempt: Callable[[int], object]) -> list[object]:
    """Run ``attempt(i)`` on ``threads`` threads released together by a barrier."""
    barrier = threading.Barrier(threads, timeout=30)

    def run(i: int) -> object:
        barrier.wait()
        return attempt(i)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(run, range(threads), timeout=60))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_exactly_one_worker_wins_the_lease_every_round(server_clients: AwsClients) -> None:
    winners_per_round = race_for_the_lease(server_clients, ROUNDS)
    assert [len(w) for w in winners_per_round] == [1] * ROUNDS


@pytest.mark.timeout(60)
def test_the_single_threaded_server_also_yields_one_winner() -> None:
    with running(MotoServer(threaded=False)) as server:
        winners_per_round = race_for_the_lease(clients_for(server.endpoint_url), rounds=6)
    assert [len(w) for w in winners_per_round] == [1] * 6


def race_for_the_lease(clients: AwsClients, rounds: int) -> list[list[str]]:
    clock = ManualClock()
    store = ConnectionStore(new_table(clients), clock=clock)
    store.save_connected(KEY, expires_at=None, refresh_expires_at=None, next_refresh_at=None)
    owners = [new_lease_owner() for _ in range(THREADS)]
    winners_per_round: list[list[str]] = []
    previous_crashed: str | None = None

    for round_number in range(rounds):
        results = race(THREADS, lambda i: store.acquire_lease(KEY, owners[i], LEASE_SECONDS))
        winners = [owners[i] for i, result in enumerate(results) if result is not None]
        winners_per_round.append(winners)
        assert len(winners) == 1, f"round {round_number}: {len(winners)} winners"
        won = results[owners.index(winners[0])]
        assert isinstance(won, Connection)
        assert won.lease is not None
        assert won.lease.owner == winners[0]
        current = winners[0]
        if previous_crashed is not None and previous_crashed != current:
            # The crashed owner of the last round wakes up: its release must not free our lease.
            assert store.release(KEY, previous_crashed) is False
            assert store.acquire_lease(KEY, previous_crashed, LEASE_SECONDS) is None
        if round_number % 2 == 0:
            assert store.release(KEY, current)
            previous_crashed = None
        else:
            clock.advance(LEASE_SECONDS + 1)  # the winner "crashes": the next round steals
            previous_crashed = current
    return winners_per_round


def consume_ignoring_index(store: OneTimeStore, state: str, _index: int) -> OAuthState | None:
    return store.consume_state(state)


@pytest.mark.timeout(60)
def test_a_state_is_consumed_exactly_once_under_concurrency(server_clients: AwsClients) -> None:
    store = OneTimeStore(new_table(server_clients), clock=ManualClock())
    for _ in range(10):
        state = store.create_state(KEY, redirect_uri="https://broker.test/cb")
        with AwsCallCounter(server_clients) as counter:
            results = race(THREADS, partial(consume_ignoring_index, store, state.state))
        assert [r for r in results if r is not None] == [state]
        assert counter.calls == {"DeleteItem": THREADS}
