"""Crashes and lost leases: a rotated refresh token is never lost silently and never used twice.

What each test measures is said in its docstring; these are the numbers the refresh report quotes.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from tokenbroker.errors import (
    ProviderError,
    ProviderErrorKind,
)
from tokenbroker.events import EventType
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus, PasswordLogin, StoredToken
from tokenbroker.providers import Provider
from tokenbroker.refresh import RefreshOutcome, RefreshResult
from tokenbroker.stores import ConnectionStore, TokenStore
from tokenbroker.tokens import TokenSet

from infra.sandboxes import WorklySandbox, WorksectionSandbox
from infra.sandboxes.catalog import token_from_answer
from tests.integration.refresh.harness import (
    WORKLY_EMAIL,
    WORKLY_PASSWORD,
    WS_EMAIL,
    CrashingConnectionStore,
    CrashingTokenStore,
    Rig,
    ScriptedProvider,
    SimulatedCrash,
)
from tests.support.errors import raises_kind

WS_KEY = ConnectionKey("worksection", "crash-ws")
WORKLY_KEY = ConnectionKey("workly", "crash-workly")
SCRIPTED_KEY = ConnectionKey("worksection", "scripted")
LEASE = 90.0


def seed_worksection(rig: Rig, sandbox: WorksectionSandbox) -> None:
    rig.seed(WS_KEY, token_from_answer(sandbox.issue_tokens(WS_EMAIL), rig.clock.now()))


def seed_scripted(rig: Rig) -> ScriptedProvider:
    provider = ScriptedProvider("worksection", rig.clock)
    rig.providers["worksection"] = provider
    rig.seed(SCRIPTED_KEY, provider.issue())
    rig.advance_to_due(SCRIPTED_KEY)
    return provider


# --- crash after the provider answered, before the secret write ----------------------------------


def test_crash_before_the_write_loses_the_rotated_token(sandboxed: Rig, worksection: WorksectionSandbox) -> None:
    """Measured: the provider rotated (1 refresh performed), the answer died with the process. Until
    the lease expires other runs are `contended`; then the next run retries the interrupted attempt
    with the only refresh token we have, which rotation killed. A dead grant right after an
    interruption is inconclusive (the interrupted worker might still be writing), so every caller
    backs off until one lease after that worker's lease ended, with the attempt still visible; the
    run after that gets the dead grant again: needs_reauth. Nothing can do better: the secret write
    *is* the first durable place."""
    rig = sandboxed
    seed_worksection(rig, worksection)
    rig.advance_to_due(WS_KEY)
    crashing = rig.engine(tokens=CrashingTokenStore(rig.tokens))
    with pytest.raises(SimulatedCrash):
        crashing.refresh(WS_KEY)
    assert worksection.refreshes == 1
    item = rig.item(WS_KEY)
    assert item.lease is not None and item.attempt is not None and item.attempt.generation == 1
    assert rig.tokens.get(WS_KEY).generation == 1
    crashed_at = item.attempt.started_at

    assert rig.engine().refresh(WS_KEY).outcome is RefreshOutcome.CONTENDED
    rig.clock.advance(LEASE + 1)
    retried = rig.engine().refresh(WS_KEY)
    assert retried.outcome is RefreshOutcome.TRANSIENT_FAILURE and retried.interrupted
    # One lease after the crashed worker's lease: the time a late write of it would need.
    assert retried.next_refresh_at == crashed_at + 2 * LEASE
    attempt = rig.item(WS_KEY).attempt
    assert attempt is not None and attempt.started_at == crashed_at  # still visible
    assert rig.metrics.total("DeadGrantAfterInterruption", provider="worksection") == 1
    # Meanwhile a consumer's compare-and-refresh is deferred, not a second verdict.
    deferred = rig.engine().refresh(WS_KEY, reason="vend", should_refresh=lambda _: True)
    assert deferred.deferred and deferred.outcome is RefreshOutcome.TRANSIENT_FAILURE
    assert not rig.events.of_type(EventType.CONNECTION_NEEDS_REAUTHORIZATION)
    rig.clock.advance(crashed_at + 2 * LEASE - rig.clock.now())  # the next sweep after the backoff
    result = rig.engine().refresh(WS_KEY)
    assert result.outcome is RefreshOutcome.NEEDS_REAUTH and result.interrupted
    [event] = rig.events.of_type(EventType.CONNECTION_NEEDS_REAUTHORIZATION)
    assert event.reason is not None and event.reason.startswith("needs_reauth")
    # Every later try was refused: rotation happened exactly once, with the token we sent once.
    assert worksection.refreshes == 1 and worksection.calls["refresh"] == 3


def test_crash_before_the_write_recovers_with_a_stored_login(sandboxed: Rig, workly: WorklySandbox) -> None:
    rig = sandboxed
    token = rig.providers["workly"].password_grant(username=WORKLY_EMAIL, password=WORKLY_PASSWORD)
    rig.seed(WORKLY_KEY, token, login=PasswordLogin(WORKLY_EMAIL, WORKLY_PASSWORD))
    rig.advance_to_due(WORKLY_KEY)
    with pytest.raises(SimulatedCrash):
        rig.engine(tokens=CrashingTokenStore(rig.tokens)).refresh(WORKLY_KEY)
    rig.clock.advance(LEASE + 1)
    result = rig.engine().refresh(WORKLY_KEY)
    assert result.outcome is RefreshOutcome.REAUTHENTICATED and result.interrupted
    assert rig.tokens.get(WORKLY_KEY).generation == 2
    assert rig.item(WORKLY_KEY).attempt is None


class FlakyTokenStore(TokenStore):
    """``put`` fails with a network error the first ``failures`` times, then writes."""

    def __init__(self, inner: TokenStore, failures: int) -> None:
        self.__dict__.update(inner.__dict__)
        self.failures = failures
        self.puts = 0

    def put(self, key: ConnectionKey, stored: StoredToken, *, restore_deleted: bool = False) -> str:
        self.puts += 1
        if self.failures > 0:
            self.failures -= 1
            raise EndpointConnectionError(endpoint_url="https://secretsmanager.invalid")
        return super().put(key, stored, restore_deleted=restore_deleted)


def test_a_failing_secret_write_is_retried_until_it_lands(rig: Rig) -> None:
    seed_scripted(rig)
    store = FlakyTokenStore(rig.tokens, failures=3)
    started = rig.clock.now()
    result = rig.engine(tokens=store).refresh(SCRIPTED_KEY)
    assert result.outcome is RefreshOutcome.REFRESHED
    assert store.puts == 4
    assert rig.clock.now() - started == pytest.approx(0.25 + 0.5 + 1.0)  # backoff between tries
    assert rig.tokens.get(SCRIPTED_KEY).generation == 2 and rig.item(SCRIPTED_KEY).generation == 2


def test_a_secret_write_that_never_lands_keeps_the_attempt_visible(rig: Rig) -> None:
    provider = seed_scripted(rig)
    store = FlakyTokenStore(rig.tokens, failures=100)
    with pytest.raises(EndpointConnectionError):
        rig.engine(tokens=store).refresh(SCRIPTED_KEY)
    assert store.puts == 5
    assert rig.metrics.total("TokenWriteLost", provider="worksection") == 1
    item = rig.item(SCRIPTED_KEY)
    assert item.attempt is not None and item.lease is not None  # not released: the next run knows
    rig.clock.advance(LEASE + 1)
    again = rig.engine().refresh(SCRIPTED_KEY)
    assert again.outcome is RefreshOutcome.REFRESHED and again.interrupted
    assert provider.refresh_calls == 2


# --- crash after the secret write, before the item commit ----------------------------------------


def test_crash_after_the_write_is_reconciled_without_a_provider_call(
    sandboxed: Rig, worksection: WorksectionSandbox
) -> None:
    """Measured: the secret holds generation 2 (valid, vendable at once), the item still says 1.
    The next run commits the item from the secret: 0 provider calls, the rotated token kept."""
    rig = sandboxed
    seed_worksection(rig, worksection)
    rig.advance_to_due(WS_KEY)
    with pytest.raises(SimulatedCrash):
        rig.engine(connections=CrashingConnectionStore(rig.connections)).refresh(WS_KEY)
    written = rig.tokens.get(WS_KEY)
    assert written.generation == 2 and rig.item(WS_KEY).generation == 1
    assert worksection.refreshes == 1

    rig.clock.advance(LEASE + 1)
    result = rig.engine().refresh(WS_KEY)
    assert result.outcome is RefreshOutcome.NOT_NEEDED
    assert result.reconciled and result.interrupted
    assert worksection.refreshes == 1 and worksection.calls["refresh"] == 1
    item = rig.item(WS_KEY)
    assert item.generation == 2 and item.lease is None and item.attempt is None
    assert item.expires_at == written.token.expires_at
    assert item.refresh_expires_at == written.token.obtained_at + 30 * 86400
    assert rig.metrics.total("RefreshReconciled", provider="worksection") == 1
    # The crashed run never announced generation 2; the reconciling run does, once.
    assert [(e.generation, e.reason) for e in rig.events.of_type(EventType.TOKEN_REFRESHED)] == [(2, "reconciled")]
    # And it keeps refreshing normally from the reconciled token.
    rig.advance_to_due(WS_KEY)
    assert rig.engine().refresh(WS_KEY).outcome is RefreshOutcome.REFRESHED
    assert rig.tokens.get(WS_KEY).generation == 3


def test_reconcile_then_refresh_when_the_caller_still_needs_it(rig: Rig) -> None:
    provider = seed_scripted(rig)
    with pytest.raises(SimulatedCrash):
        rig.engine(connections=CrashingConnectionStore(rig.connections)).refresh(SCRIPTED_KEY)
    rig.clock.advance(LEASE + 1)
    # A vend that wants a token newer than generation 2 (e.g. its consumer was refused generation 2).
    result = rig.engine().refresh(SCRIPTED_KEY, reason="vend", should_refresh=lambda s: s.generation <= 2)
    assert result.outcome is RefreshOutcome.REFRESHED and result.generation == 3
    assert provider.refresh_calls == 2
    assert rig.item(SCRIPTED_KEY).generation == 3


# --- a lease that expires mid-refresh -----------------------------------------------------------


def test_stalled_worker_cannot_clobber_the_takeover(rig: Rig) -> None:
    """A stalls after the provider answered; its lease expires; B refreshes to generation 2. A's
    write of generation 2 carries the same ClientRequestToken with other content: Secrets Manager
    refuses it (GenerationConflict) and B's token stays."""
    provider = seed_scripted(rig)
    results: dict[str, RefreshResult] = {}

    def takeover(_answer: TokenSet) -> None:
        provider.on_answer = None  # only A stalls
        rig.clock.advance(LEASE + 1)
        results["B"] = rig.engine().refresh(SCRIPTED_KEY)

    provider.on_answer = takeover
    results["A"] = rig.engine().refresh(SCRIPTED_KEY)

    assert results["B"].outcome is RefreshOutcome.REFRESHED and results["B"].generation == 2
    assert results["A"].outcome is RefreshOutcome.NOT_NEEDED
    b_token = results["B"].stored
    assert b_token is not None
    current = rig.tokens.get(SCRIPTED_KEY)
    assert current == b_token and results["A"].stored == b_token
    assert rig.item(SCRIPTED_KEY).generation == 2 and rig.item(SCRIPTED_KEY).lease is None
    assert rig.metrics.total("TokenWriteConflict", provider="worksection") == 1
    assert len(rig.events.of_type(EventType.TOKEN_REFRESHED)) == 1


def test_stalled_worker_writes_first_and_the_takeover_adopts_it(rig: Rig) -> None:
    """A and B both hold an answer; A (lease expired) writes generation 2 first, its commit is
    refused (LeaseLost) but its token is durable (refreshed, committed=False). B's write of the
    same generation conflicts; B still holds the lease, so it commits the item from A's secret.
    One token wins everywhere; nobody overwrites anybody."""
    provider = seed_scripted(rig)
    gates = {name: (threading.Event(), threading.Event()) for name in ("A", "B")}

    def stall(_answer: TokenSet) -> None:
        answered, go = gates[threading.current_thread().name]
        answered.set()
        assert go.wait(10)

    provider.on_answer = stall
    results: dict[str, Any] = {}

    def run(name: str) -> None:
        try:
            results[name] = rig.engine().refresh(SCRIPTED_KEY)
        except BaseException as error:  # surfaced by the asserts below
            results[name] = error

    a = threading.Thread(target=run, args=("A",), name="A")
    a.start()
    assert gates["A"][0].wait(10)
    rig.clock.advance(LEASE + 1)
    b = threading.Thread(target=run, args=("B",), name="B")
    b.start()
    assert gates["B"][0].wait(10)
    gates["A"][1].set()
    a.join(10)
    gates["B"][1].set()
    b.join(10)

    result_a, result_b = results["A"], results["B"]
    assert isinstance(result_a, RefreshResult) and isinstance(result_b, RefreshResult), results
    assert result_a.outcome is RefreshOutcome.REFRESHED and not result_a.committed
    assert result_b.outcome is RefreshOutcome.NOT_NEEDED and result_b.reconciled
    current = rig.tokens.get(SCRIPTED_KEY)
    assert current == result_a.stored == result_b.stored
    assert current.token.access_token.startswith("scripted-access-000002")  # A's answer (seed was 1)
    item = rig.item(SCRIPTED_KEY)
    assert item.generation == 2 and item.lease is None and item.expires_at == current.token.expires_at
    assert provider.refresh_calls == 2
    assert rig.metrics.total("RefreshCommitLost", provider="worksection") == 1
    # One announcement of generation 2, by the run that committed the item.
    assert [(e.generation, e.reason) for e in rig.events.of_type(EventType.TOKEN_REFRESHED)] == [(2, "reconciled")]


class BeforeCall(Provider):
    """Runs ``hook`` once before delegating a refresh (a worker stalled before its provider call)."""

    def __init__(self, inner: Provider, hook: Any) -> None:
        self.name = inner.name
        self._inner = inner
        self._hook = hook

    def refresh(self, token: TokenSet) -> TokenSet:
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()
        return self._inner.refresh(token)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def authorization_url(self, **kwargs: Any) -> str:
        return self._inner.authorization_url(**kwargs)

    def exchange_code(self, **kwargs: Any) -> TokenSet:
        return self._inner.exchange_code(**kwargs)

    def password_grant(self, **kwargs: Any) -> TokenSet:
        return self._inner.password_grant(**kwargs)


def test_stalled_worker_with_rotation_sees_the_takeover(sandboxed: Rig, worksection: WorksectionSandbox) -> None:
    """Rotating provider: A stalls before its call, B takes over and rotates. A's old refresh token
    is dead; A re-reads, sees generation 2 and answers not_needed (no needs_reauth, no event)."""
    rig = sandboxed
    seed_worksection(rig, worksection)
    rig.advance_to_due(WS_KEY)
    seeded = rig.tokens.get(WS_KEY)
    real = rig.providers["worksection"]
    b_result: list[RefreshResult] = []

    def takeover() -> None:
        rig.providers["worksection"] = real
        rig.clock.advance(LEASE + 1)
        b_result.append(rig.engine().refresh(WS_KEY))

    rig.providers["worksection"] = BeforeCall(real, takeover)
    a_result = rig.engine().refresh(WS_KEY)
    assert b_result[0].outcome is RefreshOutcome.REFRESHED
    assert a_result.outcome is RefreshOutcome.NOT_NEEDED and a_result.generation == 2
    assert worksection.calls["refresh"] == 2 and worksection.refreshes == 1
    assert rig.tokens.get(WS_KEY).status is ConnectionStatus.ACTIVE
    assert not rig.events.of_type(EventType.CONNECTION_NEEDS_REAUTHORIZATION)
    with raises_kind(ProviderErrorKind.REAUTHORIZATION_REQUIRED):  # the token A used really was dead
        real.refresh(seeded.token)


class CrashOnMark(ConnectionStore):
    """A ConnectionStore whose ``mark_needs_reauth`` dies (the secret is already marked by then)."""

    def __init__(self, inner: ConnectionStore) -> None:
        self.__dict__.update(inner.__dict__)

    def mark_needs_reauth(self, *args: Any, **kwargs: Any) -> Any:
        raise SimulatedCrash("died between marking the secret and the item")


def test_crash_between_marking_the_secret_and_the_item(sandboxed: Rig, worksection: WorksectionSandbox) -> None:
    """The secret says needs_reauth (vends answer 409 at once); the item was never marked and no
    event went out. The next run finishes the job: item marked, event and metric, once."""
    rig = sandboxed
    seed_worksection(rig, worksection)
    worksection.revoke_refresh_tokens()
    rig.advance_to_due(WS_KEY)
    with pytest.raises(SimulatedCrash):
        rig.engine(connections=CrashOnMark(rig.connections)).refresh(WS_KEY)
    assert rig.tokens.get(WS_KEY).status is ConnectionStatus.NEEDS_REAUTH
    assert rig.item(WS_KEY).status is ConnectionStatus.ACTIVE
    assert not rig.events.of_type(EventType.CONNECTION_NEEDS_REAUTHORIZATION)
    rig.clock.advance(LEASE + 1)
    calls = worksection.calls["refresh"]
    result = rig.engine().refresh(WS_KEY)
    assert result.outcome is RefreshOutcome.NEEDS_REAUTH and result.interrupted
    assert worksection.calls["refresh"] == calls  # no second try of a dead grant
    assert rig.item(WS_KEY).status is ConnectionStatus.NEEDS_REAUTH
    [event] = rig.events.of_type(EventType.CONNECTION_NEEDS_REAUTHORIZATION)
    assert event.reason == "needs_reauth:recovered"
    assert rig.metrics.total("ConnectionsNeedingReauth", provider="worksection") == 1


def test_a_newer_secret_after_needs_reauth_is_adopted(rig: Rig) -> None:
    """The item says needs_reauth, yet a newer active token landed in the secret afterwards (a worker
    that outlived its lease wrote it). The next engine run adopts it: active, scheduled, announced."""
    provider = seed_scripted(rig)
    stale = rig.tokens.get(SCRIPTED_KEY)
    # The item was marked (an older version marked the item before or without the secret)...
    owner = "marker"
    assert rig.connections.acquire_lease(SCRIPTED_KEY, owner, LEASE) is not None
    assert stale.generation == 1
    rig.connections.mark_needs_reauth(
        SCRIPTED_KEY, owner, ProviderError(ProviderErrorKind.REAUTHORIZATION_REQUIRED, "dead", provider="worksection")
    )
    # ...then the late writer's generation 2 lands.
    late = StoredToken(provider.issue(), 2)
    rig.tokens.put(SCRIPTED_KEY, late)

    result = rig.engine().refresh(SCRIPTED_KEY, reason="vend", should_refresh=lambda s: s.generation < 2)
    assert result.outcome is RefreshOutcome.NOT_NEEDED and result.reconciled
    item = rig.item(SCRIPTED_KEY)
    assert item.status is ConnectionStatus.ACTIVE and item.generation == 2 and item.next_refresh_at is not None
    assert rig.tokens.get(SCRIPTED_KEY) == late
    assert [(e.generation, e.reason) for e in rig.events.of_type(EventType.TOKEN_REFRESHED)] == [(2, "reconciled")]
    assert provider.refresh_calls == 0
    # Back in the due index: the sweep sees it again when it falls due.
    assert SCRIPTED_KEY in set(rig.connections.due(late.token.expires_at))


def test_needs_reauth_without_a_newer_secret_stays_put(rig: Rig) -> None:
    provider = seed_scripted(rig)
    stale = rig.tokens.get(SCRIPTED_KEY)
    assert rig.connections.acquire_lease(SCRIPTED_KEY, "marker", LEASE) is not None
    rig.connections.mark_needs_reauth(
        SCRIPTED_KEY,
        "marker",
        ProviderError(ProviderErrorKind.REAUTHORIZATION_REQUIRED, "dead", provider="worksection"),
    )
    # The secret was never marked (that write failed): the engine repairs it, so vends answer 409.
    result = rig.engine().refresh(SCRIPTED_KEY, reason="vend", should_refresh=lambda _: True)
    assert result.outcome is RefreshOutcome.NEEDS_REAUTH
    assert rig.tokens.get(SCRIPTED_KEY).status is ConnectionStatus.NEEDS_REAUTH
    assert rig.tokens.get(SCRIPTED_KEY).token == stale.token
    assert provider.refresh_calls == 0 and rig.item(SCRIPTED_KEY).lease is None
