"""Network faults between tokenbroker and a real OAuth server (django-oauth-toolkit) through a
fault-injecting proxy: connect timeout, read timeout after the request was sent, connection
resets before and after the server acted, a load balancer's HTML 502/503, a slow answer.

Two real servers: one rotates refresh tokens (ROTATE_REFRESH_TOKEN, no grace period), one does
not (its refresh answer reuses the refresh token it was sent). Where the server acted but the
answer was lost, the difference decides everything: a non-rotating grant survives, a rotated
one is gone, and tokenbroker must say so once (needs_reauth) instead of retrying forever.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ProviderErrorKind,
)
from tokenbroker.events import EventType
from tokenbroker.http import HttpClient
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus
from tokenbroker.providers import Catalog, Provider, build_provider

from tests.peers.peer_servers import DotPeer
from tests.reliability.harness.dot import NON_ROTATING_SCOPE, ROTATING_SCOPE, start_dot
from tests.reliability.harness.faultproxy import FaultProxy, Mode
from tests.reliability.harness.results import NOTHING, RowLog
from tests.reliability.harness.system import SWEEP_EVERY, System

pytestmark = pytest.mark.peers

READ_TIMEOUT = 2.0  # generous: DOT on a busy CI core can take a second
CONNECT_TIMEOUT = 0.2


@dataclass
class Peer:
    name: str  # catalog name
    rotates: bool
    dot: DotPeer
    proxy: FaultProxy


@pytest.fixture(scope="module")
def dot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DotPeer, FaultProxy]]:
    server = start_dot(tmp_path_factory.mktemp("dot-peer"))
    proxy: FaultProxy | None = None
    try:
        proxy = FaultProxy("127.0.0.1", server.server.port).start()
        yield server, proxy
    finally:
        if proxy is not None:
            proxy.stop()
        server.server.stop()


@pytest.fixture(scope="module")
def peers(dot: tuple[DotPeer, FaultProxy]) -> dict[str, Peer]:
    """One real server behind one proxy; grants with the scope "write" are not rotated."""
    server, proxy = dot
    return {
        "dot-rotating": Peer("dot-rotating", True, server, proxy),
        "dot-plain": Peer("dot-plain", False, server, proxy),
    }


@pytest.fixture
def catalog(peers: dict[str, Peer]) -> Catalog:
    extra = {
        peer.name: {
            "kind": "generic",
            "auth_mode": "password",
            "token_url": f"{peer.proxy.url}/o/token/",
            "client_auth": "basic",
            "scope_separator": " ",
            "default_scopes": [ROTATING_SCOPE if peer.rotates else NON_ROTATING_SCOPE],
            "access_token_ttl": "1h",
            "refresh_token_ttl": "30d",
            "rotates_refresh_token": peer.rotates,
        }
        for peer in peers.values()
    }
    return Catalog.load(environ={}).merged_with(extra)


@pytest.fixture
def system(aws_clients: AwsClients, table: DynamoTable, clock: ManualClock, catalog: Catalog) -> System:
    return System.create(aws_clients, table, clock, catalog=catalog)


@pytest.fixture(autouse=True)
def _quiet_proxy(dot: tuple[DotPeer, FaultProxy]) -> Iterator[None]:
    dot[1].clear()
    yield
    dot[1].clear()


def provider_for(system: System, peer: Peer, *, token_url: str | None = None) -> Provider:
    entry = system.catalog.get(peer.name)
    if token_url is not None:
        entry = (
            Catalog.load(environ={})
            .merged_with({peer.name: {**_entry_fields(system.catalog, peer.name), "token_url": token_url}})
            .get(peer.name)
        )
    http = HttpClient(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT, backoff_factor=0.05)
    return build_provider(entry, peer.dot.credentials, http=http, clock=system.clock)


def _entry_fields(catalog: Catalog, name: str) -> dict[str, object]:
    entry = catalog.get(name)
    return {
        "kind": "generic",
        "auth_mode": "password",
        "client_auth": entry.client_auth.value,
        "scope_separator": entry.scope_separator,
        "default_scopes": list(entry.default_scopes),
        "access_token_ttl": entry.access_token_ttl,
        "refresh_token_ttl": entry.refresh_token_ttl,
        "rotates_refresh_token": entry.rotates_refresh_token,
    }


def connect(system: System, peer: Peer) -> ConnectionKey:
    """A connection holding a fresh grant of the peer's user, due for refresh."""
    provider = provider_for(system, peer)
    system.providers[peer.name] = provider
    token = provider.password_grant(username=peer.dot.username, password=peer.dot.password)
    key = ConnectionKey(peer.name, "peer-user")
    system.seed(key, token)
    system.advance_to_due(key)
    peer.proxy.counts.clear()
    peer.proxy.forwarded = 0
    return key


def bearer_works(peer: Peer, access_token: str) -> bool:
    answer = requests.get(
        f"{peer.dot.server.base_url}/api/userinfo/", headers={"Authorization": f"Bearer {access_token}"}, timeout=5
    )
    return answer.status_code == 200


# --- faults that never reached the server: one retry fixes them ----------------------------------


BEFORE = [
    ("load balancer 502 HTML page", Mode.HTML_502),
    ("load balancer 503 HTML page with Retry-After: 120", Mode.HTML_503),
    ("connection reset before the server saw the request", Mode.RESET_BEFORE),
]


@pytest.mark.parametrize(("fault", "mode"), BEFORE, ids=[m.value for _, m in BEFORE])
def test_a_fault_in_front_of_the_server_is_retried_and_nothing_is_lost(
    system: System, peers: dict[str, Peer], fault: str, mode: Mode, findings: RowLog
) -> None:
    peer = peers["dot-rotating"]
    key = connect(system, peer)
    before = system.secret(key)
    peer.proxy.arm(mode)

    first = system.run_schedule(SWEEP_EVERY)
    assert first.outcomes == ["transient_failure"]
    assert system.secret(key) == before and peer.proxy.forwarded == 0
    item = system.item(key)
    assert item.status is ConnectionStatus.ACTIVE and item.failures == 1
    if mode is Mode.HTML_503:
        assert item.next_refresh_at is not None and item.next_refresh_at - (system.clock.now() - SWEEP_EVERY) >= 120

    later = system.run_schedule(SWEEP_EVERY)  # DOT's tokens live 120 s: one sweep at a time
    assert later.outcomes == ["refreshed"]
    after = system.secret(key)
    assert after.generation == 2 and after.token.refresh_token != before.token.refresh_token
    assert bearer_works(peer, after.token.access_token)
    assert peer.proxy.forwarded == 1 and sum(peer.proxy.counts.values()) == 2
    assert len(system.events_of(EventType.TOKEN_REFRESHED, key)) == 1
    assert system.metrics.total("RefreshOutcome", outcome="transient_failure") == 1
    findings.record(
        "transport",
        fault,
        "django-oauth-toolkit (rotating) via fault proxy",
        "transient_failure, token kept; refreshed at the next eligible sweep"
        + ("; Retry-After 120 s honoured as a floor" if mode is Mode.HTML_503 else ""),
        NOTHING,
        provider_requests=sum(peer.proxy.counts.values()),
    )


def test_a_connect_timeout_is_retried_and_nothing_is_lost(
    system: System, peers: dict[str, Peer], findings: RowLog
) -> None:
    peer = peers["dot-rotating"]
    key = connect(system, peer)
    before = system.secret(key)
    reachable = system.providers[peer.name]
    system.providers[peer.name] = provider_for(system, peer, token_url=peer.proxy.blackhole() + "/o/token/")

    first = system.run_schedule(SWEEP_EVERY)
    assert first.outcomes == ["transient_failure"]
    error = system.item(key).last_error
    assert error is not None and error.code == "provider_unavailable"
    assert system.secret(key) == before and peer.proxy.forwarded == 0

    system.providers[peer.name] = reachable  # the network heals
    later = system.run_schedule(SWEEP_EVERY)
    assert later.outcomes == ["refreshed"] and system.secret(key).generation == 2
    findings.record(
        "transport",
        "connect timeout (nothing sent)",
        "django-oauth-toolkit (rotating), unreachable port",
        "transient_failure (connect retried by urllib3, never re-POSTed), token kept; refreshed once reachable",
    )


# --- the server acted, the answer was lost: rotation decides ----------------------------------------


AFTER = [
    ("read timeout after the request was sent", Mode.HANG_AFTER),
    ("connection reset after the server answered", Mode.RESET_AFTER),
]


@pytest.mark.parametrize("rotates", [True, False], ids=["rotating", "non-rotating"])
@pytest.mark.parametrize(("fault", "mode"), AFTER, ids=[m.value for _, m in AFTER])
def test_an_answer_lost_after_the_server_acted(  # noqa: PLR0917 - fixtures and parameters
    system: System, peers: dict[str, Peer], fault: str, mode: Mode, rotates: bool, findings: RowLog
) -> None:
    peer = peers["dot-rotating" if rotates else "dot-plain"]
    key = connect(system, peer)
    before = system.secret(key)
    peer.proxy.arm(mode, seconds=READ_TIMEOUT + 1.0)

    first = system.run_schedule(SWEEP_EVERY)
    assert first.outcomes == ["transient_failure"]
    assert peer.proxy.forwarded == 1  # the server did refresh
    item = system.item(key)
    assert item.last_error is not None and item.status is ConnectionStatus.ACTIVE
    assert system.secret(key) == before

    later = system.run_schedule(SWEEP_EVERY)
    calls = sum(peer.proxy.counts.values())
    if rotates:
        # DOT revoked the refresh token we still hold: the retry is refused, once, and that is final.
        assert later.outcomes == ["needs_reauth"], later
        assert system.run_schedule(3600).messages == 0  # out of the sweep for good
        secret = system.secret(key)  # marked as the next generation, like any write
        assert secret.status is ConnectionStatus.NEEDS_REAUTH and secret.generation == 2
        [event] = system.events_of(EventType.CONNECTION_NEEDS_REAUTHORIZATION, key)
        assert event.reason is not None and "invalid_grant" in event.reason
        assert calls == 2
        did = "transient_failure; the retry gets invalid_grant: needs_reauth + event, no further calls"
        lost = "the grant: the server rotated and the answer never arrived (the user must reconnect)"
    else:
        assert later.outcomes == ["refreshed"], later
        secret = system.secret(key)
        assert secret.generation == 2 and secret.token.refresh_token == before.token.refresh_token
        assert bearer_works(peer, secret.token.access_token)
        assert not system.events_of(EventType.CONNECTION_NEEDS_REAUTHORIZATION, key)
        assert calls == 2
        did = "transient_failure; the retry with the same (still valid) refresh token succeeds"
        lost = NOTHING
    findings.record(
        "transport",
        f"{fault} ({'rotating' if rotates else 'non-rotating'} server)",
        f"django-oauth-toolkit ({'rotating' if rotates else 'non-rotating'}) via fault proxy",
        did,
        lost,
        provider_requests=calls,
    )


# --- slow but fine, rotating and not -----------------------------------------------------------------


def test_a_slow_answer_within_the_timeout_is_a_normal_refresh(
    system: System, peers: dict[str, Peer], findings: RowLog
) -> None:
    peer = peers["dot-rotating"]
    key = connect(system, peer)
    peer.proxy.arm(Mode.DELAY, seconds=0.3)
    log = system.run_schedule(SWEEP_EVERY)
    assert log.outcomes == ["refreshed"]
    assert system.secret(key).generation == 2 and peer.proxy.forwarded == 1
    findings.record(
        "transport",
        "answer delayed 0.3 s (under the read timeout)",
        "django-oauth-toolkit (rotating) via fault proxy",
        "refreshed normally",
    )


@pytest.mark.parametrize("rotates", [True, False], ids=["rotating", "non-rotating"])
def test_two_consecutive_refreshes(system: System, peers: dict[str, Peer], rotates: bool, findings: RowLog) -> None:
    """Rotation replaces the refresh token (and kills the used one); a non-rotating server's answer
    reuses it, which must not reset its estimated expiry."""
    peer = peers["dot-rotating" if rotates else "dot-plain"]
    key = connect(system, peer)
    seeded = system.secret(key)
    seeded_item = system.item(key)
    seen = [seeded]
    for generation in (2, 3):
        system.advance_to_due(key)
        log = system.run_schedule(SWEEP_EVERY)
        assert log.outcomes == ["refreshed"], log
        current = system.secret(key)
        assert current.generation == generation
        assert bearer_works(peer, current.token.access_token)
        assert not bearer_works(peer, seen[-1].token.access_token)  # DOT replaces the access token
        seen.append(current)
    item = system.item(key)
    if rotates:
        assert len({s.token.refresh_token for s in seen}) == 3
        assert item.refresh_expires_at == seen[-1].token.obtained_at + 30 * 86_400
        stale = provider_for(system, peer)
        with pytest.raises(Exception) as replay:  # the first refresh token is dead
            stale.refresh(seeded.token)
        assert getattr(replay.value, "kind", None) is ProviderErrorKind.REAUTHORIZATION_REQUIRED
        did = "refreshed twice; new refresh token each time, old ones revoked, refresh-token expiry renewed"
    else:
        assert {s.token.refresh_token for s in seen} == {seeded.token.refresh_token}
        assert item.refresh_expires_at == seeded_item.refresh_expires_at  # not renewed: same token
        did = "refreshed twice with the same refresh token (the answer reuses it); its expiry estimate kept"
    assert len(system.events_of(EventType.TOKEN_REFRESHED, key)) == 2
    findings.record(
        "transport",
        f"two consecutive refreshes ({'rotating' if rotates else 'non-rotating: answer reuses the refresh token'})",
        f"django-oauth-toolkit ({'rotating' if rotates else 'non-rotating'})",
        did,
    )
