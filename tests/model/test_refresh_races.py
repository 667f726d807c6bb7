"""The two races issue 14 found by script, kept as explicit regression tests on the real engine
(in-memory backend, through the model's provider and interleaving hooks).

Race 1: a dead-grant refresh overwrote a re-connect. The engine re-read the secret (generation N),
the user re-connected (N + 1, active), then the engine wrote its needs_reauth mark at N with an
idempotency token of its own: the mark became current and pushed the re-connect out.

Race 2: the inconclusive safeguard lasted zero seconds. After a dead grant right after an
interrupted attempt the connection was eligible again at once, so a compare-and-refresh concluded
needs_reauth while the late worker was still writing; its token then landed under an item that
said needs_reauth and was out of the due index.
"""

from __future__ import annotations

from tokenbroker.clock import ManualClock
from tokenbroker.errors import TokenBrokerError
from tokenbroker.events import EventType
from tokenbroker.models import ConnectionStatus
from tokenbroker.refresh import RefreshOutcome
from tokenbroker.repository import ConnectionRepository

from tests.model.refresh_model import KEY, LEASE, RefreshMachine


class Machine(RefreshMachine):
    @staticmethod
    def make_repository(clock: ManualClock) -> ConnectionRepository:
        return ConnectionRepository.memory(clock)


def test_a_reconnect_between_the_dead_grant_and_its_mark_stays_current() -> None:
    m = Machine()
    m.connect_or_reconnect()
    m.provider_revokes_the_grant()
    # The refresh finds the grant dead; right before its needs_reauth mark is written, the user
    # re-connects (a new grant, the next generation, active).
    m.someone_acts_between_two_steps(step="secrets.put", other="reconnect")
    item, secret = m.s.repository.get(KEY), m.s.repository.token(KEY)
    assert item is not None
    assert (secret.status, secret.generation) == (ConnectionStatus.ACTIVE, 2)  # the re-connect is current
    assert secret.token.refresh_token == m.s.provider.live
    assert (item.status, item.generation) == (ConnectionStatus.ACTIVE, 2)
    assert m.s.vending.vend(KEY, 0).access_token == secret.token.access_token
    assert not [e for e in m.s.events.events if e.type is EventType.CONNECTION_NEEDS_REAUTHORIZATION]
    m.settle_and_check()


def test_a_late_workers_token_is_not_raced_by_a_consumers_verdict() -> None:
    m = Machine()
    m.connect_or_reconnect()
    verdicts: list[str] = []

    def consumer() -> None:
        try:
            current = m.s.repository.token(KEY)
            m.s.vending.refresh_rejected(KEY, current.token.access_token_sha256)
            verdicts.append("refreshed")
        except TokenBrokerError as error:
            verdicts.append(error.code)

    def meanwhile() -> None:
        m.s.clock.advance(LEASE + 1)  # the worker's provider call outlives its lease
        m.s.provider.disturbances += 1
        consumer()  # dead grant after an interrupted attempt: inconclusive, backs off
        consumer()  # must not conclude needs_reauth while the late worker may still write

    m.s.provider.on_the_wire.append(meanwhile)
    late = m.s.engine.refresh(KEY, reason="vend", should_refresh=lambda _: True)
    assert late.outcome is RefreshOutcome.REFRESHED  # its write landed
    assert verdicts == ["provider_unavailable", "provider_unavailable"]  # deferred, never needs_reauth
    item, secret = m.s.repository.get(KEY), m.s.repository.token(KEY)
    assert item is not None and item.status is ConnectionStatus.ACTIVE and secret.status is ConnectionStatus.ACTIVE
    assert secret.token.refresh_token == m.s.provider.live
    m.settle_and_check()
