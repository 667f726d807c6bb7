"""A model-checked refresh: Hypothesis drives the real engine, vending and repository through
connects, re-connects, refreshes, vends, compare-and-refreshes, deletes, lease expiry, provider
revocations, lost answers, crashes between any two steps and late workers, and checks the
invariants that make a token broker trustworthy.

The provider is a small in-memory OAuth server (``ModelProvider``): one live grant per connection,
refresh rotates it and kills the old refresh token (Worksection). A refresh can be told to lose
its answer (the provider rotated, the caller never heard) or to run other operations while it is
"on the wire" (a late worker: the clock passes its lease, others act, then its answer arrives).

Crashes are ``SimulatedCrash`` (a ``BaseException``, like a killed process: no handler of the
library catches it) raised in front of a chosen primitive of the repository's stores.

Invariants, after every step:
- a deleted connection vends nothing;
- a connection marked needs_reauth holds no grant the provider still honours;
- a refresh token is presented twice only after something went wrong in between (a crash, a lost
  answer, a late worker): the single-flight lease holds otherwise.
And after settling (leases and backoffs run out, the item adopts its secret, one refresh runs):
- item and secret agree on generation and status;
- the provider's live grant is the current secret's, or the connection is needs_reauth with its
  event published after it was last connected.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    ConnectionNotFound,
    NeedsReauthorization,
    ProviderError,
    ProviderErrorKind,
    RefreshInProgress,
    TokenBrokerError,
)
from tokenbroker.events import EventType, MemorySink
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus
from tokenbroker.providers.base import Provider
from tokenbroker.refresh import MemoryRefreshMetrics, RefreshEngine
from tokenbroker.repository import ConnectionRepository, Schedule
from tokenbroker.tokens import TokenSet, UserInfo
from tokenbroker.vending import VendingService

KEY = ConnectionKey("modelprov", "c1")
# The steps of a refresh where a crash or another caller can come in: store.primitive.
STEPS = ("secrets.get", "secrets.put", "items.commit_refresh", "items.mark_needs_reauth", "items.record_failure")
LEASE = 60.0
LIFETIME = 3600


class SimulatedCrash(BaseException):
    """The process died here: nothing below this call ran (no library handler catches it)."""


# --- the provider ---------------------------------------------------------------------------------


@dataclass
class ModelProvider(Provider):
    """One live grant; refresh rotates it (the old refresh token dies at once)."""

    clock: ManualClock
    name: str = "modelprov"
    live: str | None = None  # the refresh token the provider honours now
    serial: Iterator[int] = field(default_factory=itertools.count)
    presented: dict[str, int] = field(default_factory=dict)  # refresh token -> disturbances seen then
    delivered: set[str] = field(default_factory=set)  # refresh tokens a caller received (and kept going)
    disturbances: int = 0
    lose_next_answer: bool = False
    on_the_wire: list[Callable[[], None]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def issue(self) -> TokenSet:
        n = next(self.serial)
        self.live = f"rt-{n:04d}"
        now = int(self.clock.now())
        return TokenSet(f"at-{n:04d}", "bearer", now + LIFETIME, now, self.live, ("all",))

    def deliver(self, token: TokenSet) -> TokenSet:
        self.delivered.add(token.refresh_token or "")
        return token

    def refresh(self, token: TokenSet) -> TokenSet:
        presented = token.refresh_token or ""
        if presented in self.presented and self.presented[presented] == self.disturbances:
            self.violations.append(f"{presented} presented twice with nothing gone wrong in between")
        self.presented[presented] = self.disturbances
        alive = presented == self.live
        answer = self.issue() if alive else None  # rotation happens at the provider, answer or not
        self._wire()
        if answer is None:
            raise ProviderError(
                ProviderErrorKind.REAUTHORIZATION_REQUIRED,
                "invalid_grant",
                provider=self.name,
                provider_code="invalid_grant",
            )
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise ProviderError(ProviderErrorKind.OUTCOME_UNKNOWN, "the answer was lost", provider=self.name)
        return self.deliver(answer)

    def _wire(self) -> None:
        while self.on_the_wire:
            self.on_the_wire.pop(0)()

    def authorization_url(
        self, *, state: str, redirect_uri: str, scopes: Any = None, code_challenge: str | None = None
    ) -> str:
        raise AssertionError("not used")

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenSet:
        raise AssertionError("not used")

    def password_grant(self, *, username: str, password: str, scopes: Any = None) -> TokenSet:
        raise AssertionError("not used")

    def user_info(self, token: TokenSet) -> UserInfo:
        return UserInfo()


# --- crashes --------------------------------------------------------------------------------------


class Crashing:
    """A store whose next call of ``armed`` dies first (the wrapped store is not called), or runs
    ``meanwhile`` first (another process acting between two steps of this one)."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.armed: str | None = None
        self.meanwhile: tuple[str, Callable[[], None]] | None = None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.armed == name:
                self.armed = None
                raise SimulatedCrash(f"died before {name}")
            if self.meanwhile is not None and self.meanwhile[0] == name:
                _, action = self.meanwhile
                self.meanwhile = None
                action()
            return attribute(*args, **kwargs)

        return call


# --- the system under test ------------------------------------------------------------------------

RepositoryFactory = Callable[[ManualClock], ConnectionRepository]


@dataclass
class System:
    clock: ManualClock
    repository: ConnectionRepository
    items: Crashing
    secrets: Crashing
    provider: ModelProvider
    events: MemorySink
    engine: RefreshEngine
    vending: VendingService

    @classmethod
    def build(cls, make_repository: RepositoryFactory) -> System:
        clock = ManualClock()
        plain = make_repository(clock)
        items, secrets = Crashing(plain.items), Crashing(plain.secrets)
        repository = ConnectionRepository(items=items, secrets=secrets, clock=clock)  # type: ignore[arg-type]
        provider = ModelProvider(clock)
        events = MemorySink()
        engine = RefreshEngine(
            repository=repository,
            providers=lambda _name: provider,
            events=events,
            clock=clock,
            lease_seconds=LEASE,
            metrics=MemoryRefreshMetrics(),
            rng=lambda: 1.0,
        )
        vending = VendingService(repository=repository, refresher=engine, clock=clock, wait_seconds=0, events=events)
        return cls(clock, repository, items, secrets, provider, events, engine, vending)


class RefreshMachine(RuleBasedStateMachine):
    """Subclasses set ``make_repository`` (in-memory or moto)."""

    make_repository: RepositoryFactory

    def __init__(self) -> None:
        super().__init__()
        self.system = System.build(type(self).make_repository)
        self.connected_at: int | None = None  # event count when the connection was last (re)connected
        self.deleted = False

    # --- helpers ------------------------------------------------------------------------------

    @property
    def s(self) -> System:
        return self.system

    def connect(self) -> None:
        """A completed connect flow (what ConnectService saves): a new grant, current at once."""
        token = self.s.provider.deliver(self.s.provider.issue())
        due = token.expires_at - 300
        self.s.repository.save_connected(
            KEY, token, metadata={}, scopes=token.scopes, login=None, schedule=Schedule(token.expires_at, None, due)
        )
        self.connected_at = len(self.s.events.events)
        self.deleted = False

    @contextmanager
    def disturbed(self) -> Iterator[None]:
        """Something goes wrong in here (a crash, a lost answer): presenting a refresh token again
        is allowed afterwards, and a token handed to the dead process is lost with it."""
        delivered = set(self.s.provider.delivered)
        try:
            with suppress(SimulatedCrash):
                yield
        finally:
            self.s.provider.disturbances += 1
            self.s.provider.delivered = delivered

    def quietly(self, operation: Callable[[], object]) -> None:
        """Run an operation as a caller would: outcomes and answered errors are fine."""
        with suppress(TokenBrokerError, RefreshInProgress):
            operation()

    def vend(self, min_ttl: int = 0) -> None:
        self.quietly(lambda: self.s.vending.vend(KEY, min_ttl))

    def compare_and_refresh(self) -> None:
        def call() -> None:
            current = self.s.repository.token(KEY)
            self.s.vending.refresh_rejected(KEY, current.token.access_token_sha256)

        self.quietly(call)

    def scheduled(self) -> None:
        self.quietly(lambda: self.s.engine.refresh(KEY))

    # --- rules ----------------------------------------------------------------------------------

    @initialize()
    def a_user_connects(self) -> None:
        self.connect()

    @rule()
    def connect_or_reconnect(self) -> None:
        self.connect()

    @precondition(lambda self: self.connected_at is not None)
    @rule(seconds=st.sampled_from([1.0, 30.0, LEASE + 1, 600.0, LIFETIME - 200.0]))
    def time_passes(self, seconds: float) -> None:
        self.s.clock.advance(seconds)

    @precondition(lambda self: self.connected_at is not None)
    @rule()
    def scheduled_refresh(self) -> None:
        self.scheduled()

    @precondition(lambda self: self.connected_at is not None)
    @rule(min_ttl=st.sampled_from([0, 60, 3000]))
    def vend_with_min_ttl(self, min_ttl: int) -> None:
        self.vend(min_ttl)

    @precondition(lambda self: self.connected_at is not None)
    @rule()
    def a_consumer_saw_a_401(self) -> None:
        self.compare_and_refresh()

    @precondition(lambda self: self.connected_at is not None)
    @rule()
    def disconnect(self) -> None:
        self.quietly(lambda: self.s.vending.delete_connection(KEY))
        self.deleted = True

    @precondition(lambda self: self.connected_at is not None)
    @rule()
    def provider_revokes_the_grant(self) -> None:
        self.s.provider.live = None

    @precondition(lambda self: self.connected_at is not None)
    @rule()
    def an_answer_is_lost(self) -> None:
        """The provider rotated; the worker never heard (a timeout after the request was sent)."""
        self.s.provider.lose_next_answer = True
        with self.disturbed():
            self.s.clock.advance(LEASE + 1)  # due or not: whoever retries finds the attempt interrupted
            self.quietly(lambda: self.s.engine.refresh(KEY, reason="vend", should_refresh=lambda _: True))
        self.s.provider.lose_next_answer = False

    @precondition(lambda self: self.connected_at is not None)
    @rule(step=st.sampled_from(STEPS), forced=st.booleans())
    def a_worker_dies(self, step: str, forced: bool) -> None:
        """A refresh dies in front of one of its steps; its lease is left to expire."""
        store, operation = step.split(".")
        crashing: Crashing = getattr(self.s, store)
        crashing.armed = operation
        with self.disturbed():
            self.quietly(
                lambda: self.s.engine.refresh(KEY, reason="vend", should_refresh=(lambda _: True) if forced else None)
            )
        crashing.armed = None

    def actions(self) -> dict[str, Callable[[], None]]:
        return {
            "reconnect": self.connect,
            "scheduled": self.scheduled,
            "compare": self.compare_and_refresh,
            "vend": lambda: self.vend(3000),
        }

    @precondition(lambda self: self.connected_at is not None)
    @rule(others=st.lists(st.sampled_from(["reconnect", "scheduled", "compare", "vend"]), min_size=1, max_size=3))
    def a_late_worker(self, others: list[str]) -> None:
        """A refresh whose provider call outlives its lease: others act meanwhile, then it writes."""
        actions = self.actions()

        def meanwhile() -> None:
            self.s.clock.advance(LEASE + 1)
            self.s.provider.disturbances += 1  # the lease ran out under a worker still at work
            for name in others:
                actions[name]()

        self.s.provider.on_the_wire.append(meanwhile)
        self.quietly(lambda: self.s.engine.refresh(KEY, reason="vend", should_refresh=lambda _: True))
        self.s.provider.on_the_wire.clear()

    @precondition(lambda self: self.connected_at is not None)
    @rule(
        step=st.sampled_from(STEPS),
        other=st.sampled_from(["reconnect", "compare", "vend"]),
    )
    def someone_acts_between_two_steps(self, step: str, other: str) -> None:
        """A refresh runs; right before one of its reads or writes another caller acts (a user
        re-connecting, a consumer's compare-and-refresh). No lease expiry: the lease must hold."""
        store, operation = step.split(".")
        crashing: Crashing = getattr(self.s, store)
        crashing.meanwhile = (operation, self.actions()[other])
        self.quietly(lambda: self.s.engine.refresh(KEY, reason="vend", should_refresh=lambda _: True))
        crashing.meanwhile = None

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def single_flight(self) -> None:
        assert not self.s.provider.violations, self.s.provider.violations

    @invariant()
    def nothing_is_vendable_after_a_delete(self) -> None:
        if self.deleted:
            try:
                self.s.vending.vend(KEY, 0)
            except ConnectionNotFound:
                return
            raise AssertionError("a deleted connection vended a token")

    @invariant()
    def needs_reauth_never_hides_a_live_grant(self) -> None:
        item = self.s.repository.get(KEY)
        if item is None or item.status is not ConnectionStatus.NEEDS_REAUTH:
            return
        secret = self.s.repository.token(KEY)
        if secret.status is ConnectionStatus.NEEDS_REAUTH:
            assert secret.token.refresh_token != self.s.provider.live, "needs_reauth on a grant the provider honours"

    def teardown(self) -> None:
        if self.connected_at is not None and not self.deleted:
            self.settle_and_check()

    def settle_and_check(self) -> None:
        """Run the system as the scheduler would until it is quiet: leases and backoffs run out and
        whatever the due index holds is refreshed when it falls due. Then check the end state."""
        s = self.s
        s.clock.advance(3 * LEASE)
        for _ in range(4):
            item = s.repository.get(KEY)
            if item is None or KEY not in set(s.repository.due(float("inf"))):
                break
            # Wait for the schedule: the item's own time and the token's refresh-ahead point.
            target = max(item.next_refresh_at or 0.0, s.repository.token(KEY).token.expires_at - 300.0)
            s.clock.advance(max(0.0, target - s.clock.now()))
            self.scheduled()
            s.clock.advance(3 * LEASE)
        item, secret = s.repository.get(KEY), s.repository.token(KEY)
        assert item is not None
        assert (item.generation, item.status) == (secret.generation, secret.status), (item, secret)
        live = s.provider.live
        if secret.status is ConnectionStatus.ACTIVE:
            assert secret.token.refresh_token == live, "an active connection holds a dead grant"
        else:
            assert secret.status is ConnectionStatus.NEEDS_REAUTH, secret.status
            assert live is None or live not in s.provider.delivered, "needs_reauth hides a live grant we received"
            assert self.connected_at is not None
            since = s.events.events[self.connected_at :]
            assert any(e.type is EventType.CONNECTION_NEEDS_REAUTHORIZATION for e in since), "needs_reauth untold"
        with_needs_reauth_vend_refused(s)


def with_needs_reauth_vend_refused(s: System) -> None:
    """Vending agrees with the connection's status."""
    item = s.repository.get(KEY)
    assert item is not None
    try:
        s.vending.vend(KEY, 0)
    except NeedsReauthorization:
        assert item.status is ConnectionStatus.NEEDS_REAUTH
        return
    assert item.status is ConnectionStatus.ACTIVE
