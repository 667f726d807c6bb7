"""The refresh engine on the in-memory repository: its decisions in milliseconds, no moto.

The store primitives it calls are counted the way botocore hooks count AWS calls in
tests/integration: a scheduled refresh costs 4 (acquire with the attempt, read the secret, write
it, commit the item), whatever the backend.
"""

from __future__ import annotations

from typing import Any

import pytest
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    NeedsReauthorization,
    ProviderError,
    ProviderErrorKind,
)
from tokenbroker.events import EventType, MemorySink
from tokenbroker.models import ConnectionStatus
from tokenbroker.refresh import MemoryRefreshMetrics, RefreshEngine, RefreshOutcome
from tokenbroker.repository import ConnectionRepository, Schedule
from tokenbroker.stores.memory import MemoryConnectionStore, MemoryTokenStore
from tokenbroker.tokens import TokenSet
from tokenbroker.vending import VendingService

from tests.model.refresh_model import KEY, LEASE, ModelProvider
from tests.support.errors import raises_kind

pytestmark = pytest.mark.timeout(10)


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.items = MemoryConnectionStore(clock=self.clock)
        self.secrets = MemoryTokenStore()
        self.repository = ConnectionRepository(items=self.items, secrets=self.secrets, clock=self.clock)
        self.provider = ModelProvider(self.clock)
        self.events = MemorySink()
        self.metrics = MemoryRefreshMetrics()
        self.engine = RefreshEngine(
            repository=self.repository,
            providers=lambda _name: self.provider,
            events=self.events,
            clock=self.clock,
            lease_seconds=LEASE,
            metrics=self.metrics,
            rng=lambda: 1.0,
        )
        self.vending = VendingService(
            repository=self.repository, refresher=self.engine, clock=self.clock, wait_seconds=0, events=self.events
        )

    def connect(self) -> TokenSet:
        token = self.provider.issue()
        self.repository.save_connected(
            KEY,
            token,
            metadata={},
            scopes=token.scopes,
            login=None,
            schedule=Schedule(token.expires_at, None, token.expires_at - 360),
        )
        return token

    def calls(self) -> int:
        return self.items.calls + self.secrets.calls

    def types(self) -> list[EventType]:
        return [event.type for event in self.events.events]


@pytest.fixture
def world() -> World:
    return World()


def test_a_scheduled_refresh_costs_four_primitive_calls(world: World) -> None:
    first = world.connect()
    world.clock.advance(3600 - 300)
    before = world.calls()
    result = world.engine.refresh(KEY)
    assert result.outcome is RefreshOutcome.REFRESHED
    assert world.calls() - before == 4
    current = world.repository.token(KEY)
    assert (current.generation, current.token.refresh_token) == (2, world.provider.live)
    assert current.token.refresh_token != first.refresh_token
    item = world.repository.get(KEY)
    assert item is not None and (item.generation, item.lease, item.attempt) == (2, None, None)
    assert world.types() == [EventType.TOKEN_REFRESHED]


def test_a_held_lease_is_contention_not_an_error(world: World) -> None:
    world.connect()
    assert world.items.acquire_lease(KEY, "someone-else", LEASE) is not None
    result = world.engine.refresh(KEY, reason="vend", should_refresh=lambda _: True)
    assert result.outcome is RefreshOutcome.CONTENDED
    assert world.provider.presented == {}


def test_a_crash_between_the_write_and_the_commit_is_adopted_without_a_provider_call(world: World) -> None:
    world.connect()
    world.clock.advance(3600 - 300)

    class DiesBeforeCommit(MemoryConnectionStore):
        def commit_refresh(self, *args: Any, **kwargs: Any) -> Any:
            raise KeyboardInterrupt("died after the secret write")  # not an Exception: no handler runs

    world.items.__class__ = DiesBeforeCommit
    with pytest.raises(KeyboardInterrupt):
        world.engine.refresh(KEY)
    world.items.__class__ = MemoryConnectionStore
    assert world.repository.token(KEY).generation == 2  # the token is durable
    world.clock.advance(LEASE + 1)
    presented = len(world.provider.presented)
    result = world.engine.refresh(KEY)
    assert result.reconciled and result.outcome is RefreshOutcome.NOT_NEEDED
    assert len(world.provider.presented) == presented  # adopted, not refreshed again
    item = world.repository.get(KEY)
    assert item is not None and item.generation == 2 and item.lease is None
    assert world.types() == [EventType.TOKEN_REFRESHED]  # announced once, by the adopter


def test_a_dead_grant_is_marked_as_the_next_generation_and_vends_409(world: World) -> None:
    world.connect()
    world.provider.live = None  # revoked
    result = world.engine.refresh(KEY, reason="vend", should_refresh=lambda _: True)
    assert result.outcome is RefreshOutcome.NEEDS_REAUTH
    secret, item = world.repository.token(KEY), world.repository.get(KEY)
    assert item is not None
    assert (secret.status, secret.generation) == (item.status, item.generation) == (ConnectionStatus.NEEDS_REAUTH, 2)
    assert world.types() == [EventType.CONNECTION_NEEDS_REAUTHORIZATION]
    with pytest.raises(NeedsReauthorization):
        world.vending.vend(KEY, 0)


def test_an_outage_backs_off_keeps_the_token_and_defers_vends(world: World) -> None:
    original = world.connect()

    def down(_token: TokenSet) -> TokenSet:
        raise ProviderError(ProviderErrorKind.TRANSIENT, "503", provider="modelprov", retry_after=120)

    world.provider.refresh = down  # type: ignore[method-assign]  # the outage
    world.clock.advance(3600 - 300)
    failed = world.engine.refresh(KEY)
    assert failed.outcome is RefreshOutcome.TRANSIENT_FAILURE
    assert failed.next_refresh_at is not None and failed.next_refresh_at >= world.clock.now() + 120
    assert world.repository.token(KEY).token == original
    with raises_kind(ProviderErrorKind.TRANSIENT):
        world.vending.vend(KEY, 3000)  # wants a refresh, the backoff says not yet: no provider call
    assert world.metrics.total("RefreshOutcome", outcome="deferred") == 1
