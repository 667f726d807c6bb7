"""wiring.Runtime: a collaborator a test names replaces the deployed one; the rest is built around it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenbroker import schedule
from tokenbroker.clock import ManualClock
from tokenbroker.errors import ProviderError, ProviderErrorKind
from tokenbroker.events import MemorySink
from tokenbroker.keys import ConnectionKey
from tokenbroker.providers import Catalog, Provider
from tokenbroker.providers.registry import ProviderRegistry
from tokenbroker.refresh import MemoryRefreshMetrics, PowertoolsRefreshMetrics, RefreshOutcome
from tokenbroker.settings import Settings
from tokenbroker.stores.memory import MemoryConnectionStore, MemoryTokenStore
from tokenbroker.tokens import TokenSet
from tokenbroker.wiring import Runtime

from tests.support.seeding import seed_connection

KEY = ConnectionKey("workly", "ann")
HOUR = 3600


class DownProvider(Provider):
    """Every refresh fails transiently: what the engine then schedules shows its jitter."""

    name = "workly"

    def __init__(self) -> None:
        self.calls = 0

    def refresh(self, token: TokenSet) -> TokenSet:
        self.calls += 1
        raise ProviderError(ProviderErrorKind.TRANSIENT, "down", provider=self.name, status=503)

    def authorization_url(
        self, *, state: str, redirect_uri: str, scopes: Sequence[str] | None = None, code_challenge: str | None = None
    ) -> str:
        raise NotImplementedError

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenSet:
        raise NotImplementedError

    def password_grant(self, *, username: str, password: str, scopes: Sequence[str] | None = None) -> TokenSet:
        raise NotImplementedError


def test_named_collaborators_are_used_and_the_graph_is_built_around_them() -> None:
    clock = ManualClock()
    connections, tokens = MemoryConnectionStore(clock=clock), MemoryTokenStore()
    provider, metrics, events = DownProvider(), MemoryRefreshMetrics(), MemorySink()
    catalog = Catalog.load(environ={})
    runtime = Runtime(
        Settings(table_name="unused"),
        clock=clock,
        events=events,
        catalog=catalog,
        providers=lambda _name: provider,
        connections=connections,  # type: ignore[arg-type]  # the in-memory twin stands in for moto
        tokens=tokens,  # type: ignore[arg-type]
        refresh_metrics=metrics,
        rng=lambda: 0.5,
    )
    assert runtime.connections is connections and runtime.tokens is tokens
    assert runtime.repository.items is connections and runtime.repository.secrets is tokens
    now = int(clock.now())
    token = TokenSet("a", "Bearer", expires_at=now + HOUR, obtained_at=now, refresh_token="r")
    seed_connection(runtime.repository, catalog, clock, KEY, token)
    clock.advance(HOUR - 300)  # due

    result = runtime.refresher.refresh(KEY)
    assert result.outcome is RefreshOutcome.TRANSIENT_FAILURE and provider.calls == 1
    assert metrics.total("RefreshOutcome", outcome="transient_failure") == 1
    item = connections.get(KEY)
    assert item is not None
    expected = schedule.backoff_until(
        now=clock.now(),
        failures=1,
        expires_at=item.expires_at,
        refresh_expires_at=item.refresh_expires_at,
        rng=lambda: 0.5,
    )
    assert item.next_refresh_at == expected  # the injected jitter, not random.random


def test_without_replacements_the_deployed_collaborators_are_built() -> None:
    runtime = Runtime(Settings(table_name="tokenbroker-test", stage="test"), catalog=Catalog.load(environ={}))
    assert isinstance(runtime.providers, ProviderRegistry)
    engine: Any = runtime.refresher
    assert isinstance(engine._metrics, PowertoolsRefreshMetrics)
    assert runtime.repository.items is runtime.connections and runtime.repository.secrets is runtime.tokens
    assert runtime.tokens.secret_name(KEY) == "tokenbroker/test/workly/ann"
