"""Races, with real threads on a real moto server and the system clock.

- 100 concurrent vends plus the scheduled sweep (real handlers) on one expiring connection;
- a lease that expires while its holder is still refreshing (rotating provider);
- two consecutive rotations while consumers keep rejecting the tokens they hold;
- re-connecting a connection (the OAuth flow) while a refresh of the old grant is in flight.

Invariants everywhere: one provider refresh per rotation, every consumer ends with the newest
token, the secret and the item agree, no needs_reauth for a connection that is alive.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from tokenbroker.aws import AwsClients
from tokenbroker.browser_binding import new_binding
from tokenbroker.clock import SystemClock
from tokenbroker.connect import ConnectService, Redirect
from tokenbroker.events import EventType
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus, StoredToken
from tokenbroker.providers import AppCredentials, Catalog, build_provider
from tokenbroker.stores import TokenStore
from tokenbroker.vending import VendedToken

from infra.sandboxes import WorksectionSandbox, submit_consent, write_catalog_file
from infra.sandboxes.catalog import sandbox_provider, token_from_answer
from tests.reliability.harness.results import NOTHING, RowLog
from tests.reliability.harness.system import WS_EMAIL, WS_PASSWORD, System
from tests.support.aws import MotoServer, clients_for, new_table

CALLERS = 100
KEY = ConnectionKey("worksection", "race")
OTHER_EMAIL = "carol@example.com"
OTHER_PASSWORD = "carol-password-1"


@pytest.fixture
def worksection() -> Iterator[WorksectionSandbox]:
    with WorksectionSandbox() as sandbox:  # the system clock
        sandbox.add_user(WS_EMAIL, WS_PASSWORD, accounts=("acme",))
        sandbox.add_user(OTHER_EMAIL, OTHER_PASSWORD, accounts=("other",))
        yield sandbox


@pytest.fixture
def clients(moto_server: MotoServer) -> AwsClients:
    return clients_for(moto_server.endpoint_url, max_pool_connections=CALLERS + 20)


@pytest.fixture
def catalog(worksection: WorksectionSandbox, tmp_path: Path) -> Catalog:
    return Catalog.load(write_catalog_file(tmp_path / "providers.yaml", worksection=worksection), environ={})


def live_system(clients: AwsClients, catalog: Catalog, worksection: WorksectionSandbox, lease: float = 90.0) -> System:
    system = System.create(clients, new_table(clients), SystemClock(), catalog=catalog, lease_seconds=lease)
    system.providers["worksection"] = sandbox_provider(catalog, worksection, system.clock, read_timeout=5.0)
    return system


def seed_expiring(system: System, sandbox: WorksectionSandbox, seconds_left: float) -> StoredToken:
    now = time.time()
    token = token_from_answer(sandbox.issue_tokens(WS_EMAIL), now - sandbox.knobs.access_ttl + seconds_left)
    stored = system.seed(KEY, token)
    sandbox.reset()
    return stored


def race(callers: int, call: Callable[[], Any]) -> list[Any]:
    start = threading.Barrier(callers)

    def one(_: int) -> Any:
        start.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=callers) as pool:
        return list(pool.map(one, range(callers), timeout=60))


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_ok(sandbox: WorksectionSandbox, access_token: str) -> bool:
    answer = requests.get(
        sandbox.api_url,
        params={"action": "get_projects"},
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=5,
    )
    return answer.status_code == 200


def test_100_vends_and_the_sweep_on_one_expiring_connection(
    clients: AwsClients, catalog: Catalog, worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system = live_system(clients, catalog, worksection)
    old = seed_expiring(system, worksection, seconds_left=20)
    worksection.faults.set_latency(0.2, endpoint="refresh")  # keep the lease busy while others arrive
    vending = system.vending(wait_seconds=10)
    sweep_logs = []

    def caller(index: int) -> VendedToken | None:
        if index == 0:  # one caller is the scheduler: sweep -> queue -> worker handler
            sweep_logs.append(system.sweep_once())
            return None
        return vending.vend(KEY, 60)

    counter = iter(range(CALLERS + 1))
    lock = threading.Lock()

    def next_call() -> VendedToken | None:
        with lock:
            index = next(counter)
        return caller(index)

    answers = [a for a in race(CALLERS + 1, next_call) if a is not None]
    [sweep] = sweep_logs
    assert len(answers) == CALLERS
    assert worksection.refreshes == 1 and worksection.calls["refresh"] == 1
    assert {a.access_token for a in answers} == {answers[0].access_token} != {old.token.access_token}
    assert {a.generation for a in answers} == {2}
    assert set(sweep.outcomes) <= {"refreshed", "contended", "not_needed"}, sweep
    assert system.secret(KEY).generation == system.item(KEY).generation == 2
    assert api_ok(worksection, answers[0].access_token) and not api_ok(worksection, old.token.access_token)
    assert len(system.events_of(EventType.TOKEN_REFRESHED, KEY)) == 1
    assert not system.events_of(EventType.CONNECTION_NEEDS_REAUTHORIZATION)
    findings.record(
        "race",
        "100 concurrent vends + the scheduled sweep/worker on one expiring connection",
        "moto server, Worksection sandbox (200 ms refresh latency)",
        f"1 provider refresh; all 100 vends got generation 2; the worker: {', '.join(sweep.outcomes) or 'nothing'}",
    )


def test_two_rotations_while_consumers_reject_their_tokens(
    clients: AwsClients, catalog: Catalog, worksection: WorksectionSandbox, findings: RowLog
) -> None:
    """Worksection kills the old access token at each rotation. 50 consumers that all got a 401 for
    the same token cause one rotation; a straggler still holding generation 1 after the second
    rotation gets generation 3 without a third one."""
    system = live_system(clients, catalog, worksection)
    first = seed_expiring(system, worksection, seconds_left=3600)
    vending = system.vending(wait_seconds=10)
    worksection.faults.set_latency(0.1, endpoint="refresh")

    second = race(50, lambda: vending.refresh_rejected(KEY, sha(first.token.access_token)))
    assert {a.generation for a in second} == {2} and worksection.refreshes == 1
    third = race(50, lambda: vending.refresh_rejected(KEY, sha(second[0].access_token)))
    assert {a.generation for a in third} == {3} and worksection.refreshes == 2
    straggler = vending.refresh_rejected(KEY, sha(first.token.access_token))
    assert straggler.generation == 3 and worksection.refreshes == 2
    assert api_ok(worksection, third[0].access_token)
    assert not api_ok(worksection, second[0].access_token) and not api_ok(worksection, first.token.access_token)
    assert system.item(KEY).generation == 3
    findings.record(
        "race",
        "two consecutive rotations, 50 consumers rejecting the same token each time, a late straggler",
        "moto server, Worksection sandbox",
        "exactly 2 provider refreshes; every consumer got the newest token; the straggler's stale hash "
        "returned generation 3 without a refresh",
    )


def test_a_lease_that_expires_mid_refresh(
    clients: AwsClients, catalog: Catalog, worksection: WorksectionSandbox, findings: RowLog
) -> None:
    """Worker A's provider call outlives its 1 s lease (the answer comes after 1.5 s; the grant was
    performed at once, so the old refresh token is dead). Worker B takes the expired lease and
    refreshes with the refresh token it has: dead. Whatever B concludes, once A's answer is durable
    the connection must end up active on A's token, in the secret and in the item, and scheduled."""
    system = live_system(clients, catalog, worksection, lease=1.0)
    seed_expiring(system, worksection, seconds_left=120)
    worksection.faults.hang(1.5, endpoint="refresh", after=True)  # A's call: granted, answer late
    results: dict[str, Any] = {}

    def worker_a() -> None:
        results["A"] = system.engine().refresh(KEY)

    a = threading.Thread(target=worker_a)
    a.start()
    deadline = time.monotonic() + 5
    while worksection.refreshes == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.1)  # A's lease is over; A still waits for its answer
    results["B"] = system.engine().refresh(KEY)
    a.join(10)

    a_result, b_result = results["A"], results["B"]
    secret, item = system.secret(KEY), system.item(KEY)
    b_said = str(b_result.outcome)
    reauth_events = system.events_of(EventType.CONNECTION_NEEDS_REAUTHORIZATION, KEY)
    # Let the schedule look at it once more (as the next sweep would).
    settle = system.sweep_once()
    secret_after, item_after = system.secret(KEY), system.item(KEY)
    converged = (
        secret_after.status is ConnectionStatus.ACTIVE
        and item_after.status is ConnectionStatus.ACTIVE
        and item_after.generation == secret_after.generation
        and item_after.next_refresh_at is not None
    )
    findings.record(
        "race",
        "lease expires mid-refresh (rotating provider, answer arrives after the takeover)",
        "moto server, Worksection sandbox, 1 s lease",
        f"A: {a_result.outcome} (committed={a_result.committed}); B: {b_said}; secret gen {secret.generation} "
        f"{secret.status}, item gen {item.generation} {item.status}; after one more sweep: item "
        f"{item_after.status}, 'Needs Reauthorization' events: {len(reauth_events)}",
        NOTHING
        if converged
        else "the connection's schedule: the item stays needs_reauth (out of the sweep) while the secret "
        "holds a valid token, and a false 'Needs Reauthorization' was sent",
        sweep_outcomes=",".join(settle.outcomes) or "none",
    )
    assert a_result.outcome.has_fresh_token and secret.token.access_token == a_result.stored.token.access_token
    assert api_ok(worksection, secret.token.access_token)  # A's token is the live one
    assert converged, (
        f"secret {secret_after.generation}/{secret_after.status}, item {item_after.generation}/{item_after.status}"
    )


def test_reconnecting_while_a_refresh_of_the_old_grant_runs(
    clients: AwsClients, catalog: Catalog, worksection: WorksectionSandbox, findings: RowLog
) -> None:
    """The user re-connects (another Worksection account, even) while the scheduled refresh of the
    old grant waits for its answer. The re-connected grant must win, wherever the refresh lands."""
    system = live_system(clients, catalog, worksection)
    seed_expiring(system, worksection, seconds_left=120)
    connect = connect_service(system, catalog, worksection)
    worksection.faults.set_latency(0.8, endpoint="refresh")
    outcome: dict[str, Any] = {}

    def scheduled() -> None:
        outcome["log"] = system.sweep_once()

    refresher = threading.Thread(target=scheduled)
    refresher.start()
    deadline = time.monotonic() + 5
    while worksection.calls["refresh"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    done = reconnect(connect, worksection)  # completes while the refresh waits
    refresher.join(10)

    secret, item = system.secret(KEY), system.item(KEY)
    assert done.generation == 2 and done.reauthorized
    assert secret.metadata.get("user_email") == OTHER_EMAIL or secret.token.extra.get("account_url", "").startswith(
        "https://other."
    ), secret.metadata
    assert item.generation == secret.generation and item.status is ConnectionStatus.ACTIVE
    assert item.lease is None
    assert api_ok(worksection, secret.token.access_token)
    assert system.events_of(EventType.CONNECTION_REAUTHORIZED, KEY)
    findings.record(
        "race",
        "re-connect (OAuth flow, another account) while the refresh of the old grant is in flight",
        "moto server, Worksection sandbox",
        f"the re-connected grant won (generation {secret.generation}); the refresh: "
        f"{', '.join(outcome['log'].outcomes)}; item and secret agree",
    )


def test_reconnecting_between_the_refresh_write_and_its_commit(
    clients: AwsClients, catalog: Catalog, worksection: WorksectionSandbox, findings: RowLog
) -> None:
    system = live_system(clients, catalog, worksection)
    seed_expiring(system, worksection, seconds_left=120)
    connect = connect_service(system, catalog, worksection)
    reconnected: list[Any] = []

    class ReconnectAfterWrite(TokenStore):
        def __init__(self, inner: TokenStore) -> None:
            self.__dict__.update(inner.__dict__)

        def put(self, key: ConnectionKey, stored: StoredToken, *, restore_deleted: bool = False) -> str:
            version = super().put(key, stored, restore_deleted=restore_deleted)
            if not reconnected:
                reconnected.append(reconnect(connect, worksection))
            return version

    log = system.sweep_once(tokens=ReconnectAfterWrite(system.tokens))
    [done] = reconnected
    secret, item = system.secret(KEY), system.item(KEY)
    assert done.generation == 3  # moved past the refresh's generation 2
    assert secret.generation == item.generation == 3 and item.status is ConnectionStatus.ACTIVE
    assert secret.token.extra.get("account_url", "").startswith("https://other."), secret.token.extra
    assert item.lease is None
    assert api_ok(worksection, secret.token.access_token)
    findings.record(
        "race",
        "re-connect between the refresh's secret write and its commit",
        "moto server, Worksection sandbox",
        f"the connect flow moved past generation 2 and wrote 3; the refresh: {', '.join(log.outcomes)} "
        "(its commit refused); the re-connected grant is current",
    )


# --- the connect flow, for the re-connect races -----------------------------------------------------


def connect_service(system: System, catalog: Catalog, worksection: WorksectionSandbox) -> ConnectService:
    """The callback function's connect flow (its own ``Runtime``) on the system's table and secrets."""
    assert catalog is system.catalog
    credentials = AppCredentials(worksection.client_id, worksection.client_secret)
    provider = build_provider(catalog.get("worksection"), credentials, clock=system.clock)
    runtime = system.runtime(providers=lambda _name: provider, public_base_url="https://connect.example.test")
    return runtime.connect


def reconnect(connect: ConnectService, worksection: WorksectionSandbox) -> Any:
    """The whole browser flow for KEY, signed in as the other user (account "other")."""
    link = connect.create_session(KEY.provider, KEY.connection_id)
    session_id = urlsplit(link.connect_url).path.rsplit("/", 1)[-1]
    binding = new_binding()  # one browser from the link to the callback
    redirect = connect.begin(session_id, binding=binding)
    assert isinstance(redirect, Redirect)
    callback = submit_consent(requests.Session(), redirect.location, email=OTHER_EMAIL, password=OTHER_PASSWORD)
    query = dict(parse_qsl(urlsplit(callback).query))
    return connect.complete_callback("worksection", query, binding=binding)
