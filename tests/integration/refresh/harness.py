"""Building blocks of the refresh tests: the deployed wiring on moto, seeded connections, fault wrappers.

Plain classes and functions (no pytest) so that test modules import them; fixtures live in
conftest.py.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import ManualClock
from tokenbroker.events import MemorySink
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import Connection, PasswordLogin, StoredToken
from tokenbroker.providers import Catalog, Provider
from tokenbroker.refresh import MemoryRefreshMetrics, RefreshEngine, RefreshResult
from tokenbroker.settings import Settings
from tokenbroker.stores import ConnectionStore, TokenStore
from tokenbroker.sweep import Sweeper
from tokenbroker.tokens import TokenSet
from tokenbroker.wiring import Runtime

from tests.support.seeding import seed_connection

STAGE = "test"
DAY = 86_400.0
WORKLY_EMAIL = "ann@example.com"
WORKLY_PASSWORD = "correct-horse-battery"
WS_EMAIL = "bob@example.com"
WS_PASSWORD = "bob-password-1"


class SimulatedCrash(BaseException):
    """A process dying mid-refresh: BaseException, so the engine runs no cleanup for it."""


@dataclass
class Rig:
    """The deployed wiring (``Runtime``) on moto, with in-memory events and metrics and the
    providers a test puts in ``providers`` by name."""

    clock: ManualClock
    aws: AwsClients
    settings: Settings
    tokens: TokenStore
    connections: ConnectionStore
    catalog: Catalog
    providers: dict[str, Provider] = field(default_factory=dict)
    events: MemorySink = field(default_factory=MemorySink)
    metrics: MemoryRefreshMetrics = field(default_factory=MemoryRefreshMetrics)

    @classmethod
    def create(cls, clients: AwsClients, table: DynamoTable, clock: ManualClock) -> Rig:
        settings = Settings(table_name=table.name, stage=STAGE)
        deployed = Runtime(settings, aws=clients, clock=clock)
        return cls(
            clock=clock,
            aws=clients,
            settings=settings,
            tokens=deployed.tokens,
            connections=deployed.connections,
            catalog=Catalog.load(),
        )

    def resolve(self, name: str) -> Provider:
        return self.providers[name]

    def runtime(
        self,
        *,
        tokens: TokenStore | None = None,
        connections: ConnectionStore | None = None,
        **settings: Any,
    ) -> Runtime:
        """A fresh ``Runtime`` around this rig's stores, providers, events and metrics.

        ``tokens`` and ``connections`` replace a store (a crashing one, say); ``settings`` replaces
        ``Settings`` fields (a queue URL, an event bus, a sweep limit).
        """
        return Runtime(
            replace(self.settings, **settings),
            aws=self.aws,
            clock=self.clock,
            events=self.events,
            catalog=self.catalog,
            providers=self.resolve,
            connections=self.connections if connections is None else connections,
            tokens=self.tokens if tokens is None else tokens,
            refresh_metrics=self.metrics,
            rng=lambda: 1.0,  # the top of the jitter: deterministic backoff in assertions
        )

    def engine(self, *, tokens: TokenStore | None = None, connections: ConnectionStore | None = None) -> RefreshEngine:
        """A new refresh engine as the deployed functions build it (``Runtime.refresher``)."""
        return self.runtime(tokens=tokens, connections=connections).refresher

    def sweeper(self, queue_url: str, **settings: Any) -> Sweeper:
        """The deployed sweep (``Runtime.sweeper``) sending to ``queue_url``."""
        sweeper = self.runtime(refresh_queue_url=queue_url, **settings).sweeper
        assert sweeper is not None
        return sweeper

    def seed(
        self,
        key: ConnectionKey,
        token: TokenSet,
        *,
        login: PasswordLogin | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Connection:
        """A connected connection, as the connect flow leaves it (item first, then the secret)."""
        saved = seed_connection(
            self.runtime().repository, self.catalog, self.clock, key, token, login=login, metadata=metadata
        )
        return saved.connection

    def item(self, key: ConnectionKey) -> Connection:
        connection = self.connections.get(key)
        assert connection is not None
        return connection

    def advance_to_due(self, key: ConnectionKey) -> None:
        """Move the clock to the connection's next_refresh_at."""
        due = self.item(key).next_refresh_at
        assert due is not None
        self.clock.advance(max(0.0, due - self.clock.now()) + 1)


class ScriptedProvider(Provider):
    """A provider in memory: each refresh returns the next distinct token, or raises what it is told.

    It does not rotate (the old refresh token keeps working), which lets two racing workers both
    get an answer: the interleaving the lease-loss tests need.
    """

    def __init__(self, name: str, clock: ManualClock, *, lifetime: float = DAY) -> None:
        self.name = name
        self._clock = clock
        self._lifetime = lifetime
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        self.refresh_calls = 0
        self.failures: list[BaseException] = []
        self.on_answer: Callable[[TokenSet], None] | None = None  # runs after the answer, before return

    def issue(self) -> TokenSet:
        n = next(self._counter)
        now = int(self._clock.now())
        return TokenSet(
            access_token=f"scripted-access-{n:06d}-{self.name}",
            token_type="Bearer",
            expires_at=int(now + self._lifetime),
            obtained_at=now,
            refresh_token=f"scripted-refresh-{n:06d}-{self.name}",
        )

    def refresh(self, token: TokenSet) -> TokenSet:
        with self._lock:
            self.refresh_calls += 1
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure
        answer = self.issue().merged_over(token)
        if self.on_answer is not None:
            self.on_answer(answer)
        return answer

    def authorization_url(
        self,
        *,
        state: str,
        redirect_uri: str,
        scopes: Sequence[str] | None = None,
        code_challenge: str | None = None,
    ) -> str:
        raise NotImplementedError

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenSet:
        raise NotImplementedError

    def password_grant(self, *, username: str, password: str, scopes: Sequence[str] | None = None) -> TokenSet:
        raise NotImplementedError


class CrashingTokenStore(TokenStore):
    """A TokenStore whose ``put`` dies (``SimulatedCrash``) the next ``crashes`` times, before writing."""

    def __init__(self, inner: TokenStore, *, crashes: int = 1) -> None:
        self.__dict__.update(inner.__dict__)
        self.crashes = crashes

    def put(self, key: ConnectionKey, stored: StoredToken, *, restore_deleted: bool = False) -> str:
        if self.crashes > 0:
            self.crashes -= 1
            raise SimulatedCrash("died before the secret write")
        return super().put(key, stored, restore_deleted=restore_deleted)


class CrashingConnectionStore(ConnectionStore):
    """A ConnectionStore whose ``commit_refresh`` dies once, after the secret write landed."""

    def __init__(self, inner: ConnectionStore) -> None:
        self.__dict__.update(inner.__dict__)
        self.crashed = False

    def commit_refresh(self, *args: Any, **kwargs: Any) -> Connection:
        if not self.crashed:
            self.crashed = True
            raise SimulatedCrash("died between the secret write and the item commit")
        return super().commit_refresh(*args, **kwargs)


def outcomes(results: Sequence[RefreshResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        counts[str(result.outcome)] = counts.get(str(result.outcome), 0) + 1
    return counts
