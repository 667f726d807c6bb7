"""The refresh engine: one single-flight, rotation-safe algorithm for the worker and for vending.

design.md "Refresh: single-flight and rotation-safe", step by step:

1. Acquire the lease on the connection item (conditional update, random owner). Held by someone
   else -> ``contended`` (never an error). The attempt is recorded in the same UpdateItem, and the
   answer still shows a previous, unfinished attempt (an interrupted run).
2. The item alone may end it here: not due yet (a duplicated message, an early sweep), or backing
   off after a failure, which *every* caller honours (a vend gets the last failure, ``deferred``).
3. Re-read the secret under the lease (no cache). Someone already refreshed it, or the caller's
   predicate is false -> release, ``not_needed``.
4. Call the provider; the answer is merged over the stored token (kept refresh token and extras).
   An interrupted attempt is retried this way once and reported (metric, log, event reason).
5. Persist first: ``TokenStore.put`` of generation + 1 with a deterministic ClientRequestToken,
   retried (bounded by the lease) until it lands. Only then ``commit_refresh`` on the item, and
   only a committed run announces ``Token Refreshed``.

AWS calls of a scheduled refresh: acquire, GetSecretValue, PutSecretValue, commit = 4.

The secret is the source of truth for tokens; the item only schedules them. Consequences:

* Crash after the secret write, before the commit: the secret's generation is ahead of the item's.
  The next run sees that under its lease and commits the item from the secret without calling the
  provider ("reconciled"), and announces the token the crashed run never announced.
* Crash after the provider answered, before the secret write: the answer is gone. With a rotating
  provider the stored refresh token is now dead and the next run gets a dead grant. A dead grant
  right after an interrupted attempt is inconclusive (that worker may have outlived its lease and
  still be writing), so it is looked at again at the next sweep: reconciled if the write landed,
  else the grant is refused again -> re-login (stored Workly login) or ``needs_reauth``. Nothing can
  do better: the secret write *is* the first durable place.
* Lease lost mid-refresh: both workers would write generation + 1 with the same ClientRequestToken
  and different content; Secrets Manager refuses the second (``GenerationConflict``) and its writer
  adopts the first. A commit refused with ``LeaseLost`` after our write landed leaves the item
  behind the secret for the lease holder (or the next run) to reconcile; the token is durable, so
  the result is still ``refreshed`` with ``committed=False``.
* A dead grant is fatal only if the refresh token used is still current: the secret is re-read
  first, and a newer generation means another worker won.

Failures are outcomes, not exceptions: transient ones back off on the item (token kept,
"Token Refresh Failed" from the 3rd consecutive one, then every 3rd), configuration and account
problems pause the connection for an hour (no retry storm; event every time), a dead grant marks
the connection (secret first, so vends answer 409, then the item) ``needs_reauth``. Only the
unexpected (an AWS outage, ``LeaseLost`` outside the commit, a bug) raises. An exception before the
provider call releases the lease; after it, the lease is left to expire so the recorded attempt
stays visible.
"""

from __future__ import annotations

import enum
import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from tokenbroker import schedule
from tokenbroker.clock import Clock
from tokenbroker.errors import (
    LeaseLost,
    NeedsReauthorization,
    ProviderError,
    ProviderErrorKind,
    TokenBrokerError,
    UnknownProvider,
    UnsupportedOperation,
)
from tokenbroker.events import DomainEvent, EventSink, EventType
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import Connection, ConnectionStatus, LastError, PasswordLogin, StoredToken
from tokenbroker.observability import NAMESPACE, SERVICE, logger
from tokenbroker.providers.base import Provider
from tokenbroker.providers.catalog import CatalogEntry
from tokenbroker.providers.registry import ProviderResolver
from tokenbroker.repository import ConnectionRepository, Landed, Schedule, Written
from tokenbroker.tokens import TokenSet

ShouldRefresh = Callable[[StoredToken], bool]

# How early a scheduled refresh may run: the sweep's query horizon (it enqueues what falls due
# before its next run). schedule.is_due clamps it for short-lived tokens.
DEFAULT_SCHEDULE_SLACK = schedule.DEFAULT_POLICY.slack
# "Token Refresh Failed" for transient failures: at the Nth consecutive one and every Nth after.
DEFAULT_FAILURE_EVENT_EVERY = 3


class RefreshOutcome(enum.StrEnum):
    REFRESHED = "refreshed"
    REAUTHENTICATED = "reauthenticated"  # dead grant, new one from the stored login (Workly)
    NOT_NEEDED = "not_needed"  # someone else refreshed, or the predicate was false under the lease
    CONTENDED = "contended"  # another worker holds the lease: not an error
    TRANSIENT_FAILURE = "transient_failure"
    NEEDS_REAUTH = "needs_reauth"
    CONFIGURATION_FAILURE = "configuration_failure"
    ACCOUNT_FAILURE = "account_failure"

    @property
    def has_fresh_token(self) -> bool:
        return self in (RefreshOutcome.REFRESHED, RefreshOutcome.REAUTHENTICATED)


@dataclass(frozen=True, slots=True)
class RefreshResult:
    outcome: RefreshOutcome
    key: ConnectionKey
    generation: int | None
    stored: StoredToken | None  # the current secret as this run knows it (None: not read)
    error: ProviderError | None = None
    retry_after: float | None = None  # the provider's own hint, when it gave one
    next_refresh_at: float | None = None  # when the item is eligible again (failures)
    interrupted: bool = False  # this run retried an attempt an earlier run left unfinished
    reconciled: bool = False  # the item was brought up to a secret an earlier run wrote
    committed: bool = True  # False: the token is durable but the item update lost the lease
    deferred: bool = False  # no provider call: the connection is backing off after a failure


class CatalogLike(Protocol):
    """``Catalog.get``: raises ``UnknownProvider`` for a name it does not know."""

    def get(self, name: str) -> CatalogEntry: ...


class RefreshMetrics(Protocol):
    def emit(self, name: str, value: float, unit: MetricUnit, dimensions: Mapping[str, str]) -> None: ...


class PowertoolsRefreshMetrics:
    """One EMF record per metric: dimensions (provider, outcome) differ per call, and Powertools'
    shared ``Metrics`` object keeps dimensions per flush, which would mix providers."""

    def emit(self, name: str, value: float, unit: MetricUnit, dimensions: Mapping[str, str]) -> None:
        with single_metric(
            name=name, unit=unit, value=value, namespace=NAMESPACE, default_dimensions={"service": SERVICE}
        ) as metric:
            for dimension, dimension_value in dimensions.items():
                metric.add_dimension(name=dimension, value=dimension_value)


@dataclass
class MemoryRefreshMetrics:
    """Keeps metrics in memory (tests, local stack)."""

    records: list[tuple[str, float, dict[str, str]]] = field(default_factory=list)

    def emit(self, name: str, value: float, unit: MetricUnit, dimensions: Mapping[str, str]) -> None:
        self.records.append((name, value, dict(dimensions)))

    def total(self, name: str, **dimensions: str) -> float:
        return sum(
            value
            for metric, value, dims in self.records
            if metric == name and all(dims.get(k) == v for k, v in dimensions.items())
        )


def new_owner() -> str:
    """A random lease owner (128 bits): two runs never share one."""
    return secrets.token_hex(16)


@dataclass
class _Run:
    """What one refresh knows about itself while it holds the lease."""

    key: ConnectionKey
    owner: str
    connection: Connection
    reason: str
    interrupted: bool = False
    provider: Provider | None = None
    provider_called: bool = False


class _Again(Exception):
    """Internal: the item was reconciled and the token still needs a refresh: start over once."""


# A provider failure that is not a dead grant; anything unnamed here is worth retrying.
_FAILURE_OUTCOMES = {
    ProviderErrorKind.CONFIGURATION: RefreshOutcome.CONFIGURATION_FAILURE,
    ProviderErrorKind.ACCOUNT: RefreshOutcome.ACCOUNT_FAILURE,
}


class RefreshEngine:
    def __init__(
        self,
        *,
        repository: ConnectionRepository,
        providers: ProviderResolver,
        events: EventSink,
        clock: Clock,
        lease_seconds: float = 90.0,
        owner_factory: Callable[[], str] = new_owner,
        metrics: RefreshMetrics | None = None,
        catalog: CatalogLike | None = None,
        schedule_slack: float = DEFAULT_SCHEDULE_SLACK,
        failure_event_every: int = DEFAULT_FAILURE_EVENT_EVERY,
        rng: Callable[[], float] = random.random,
    ) -> None:
        # The repository owns how tokens are persisted; its protocol events become our metrics.
        self._repo = repository.with_notice(lambda name, key: self._emit(name, 1, key.provider))
        self._providers = providers
        self._events = events
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._owner_factory = owner_factory
        self._metrics: RefreshMetrics = metrics or PowertoolsRefreshMetrics()
        self._catalog = catalog
        self._slack = schedule_slack
        self._failure_event_every = max(1, failure_event_every)
        self._rng = rng

    # --- public ------------------------------------------------------------------------------

    def refresh(
        self,
        key: ConnectionKey,
        *,
        reason: str = "scheduled",
        should_refresh: ShouldRefresh | None = None,
    ) -> RefreshResult:
        """Refresh ``key`` if it still needs it, as the only worker doing so.

        ``should_refresh`` is evaluated on the token re-read under the lease; None means the
        scheduled rule (due per refresh-ahead, within the sweep's slack, and not backing off).
        Raises ``ConnectionNotFound`` for an unknown or deleted connection.
        """
        owner = self._owner_factory()
        for _ in range(2):
            try:
                result = self._attempt(key, owner, reason, should_refresh)
            except _Again:
                continue
            self._count(result)
            return result
        # Reconciled twice in a row: a writer keeps getting ahead of the item. Say so, refresh later.
        logger.warning("refresh gave up after reconciling twice", extra=_log_fields(key))
        result = RefreshResult(RefreshOutcome.CONTENDED, key, None, None)
        self._count(result)
        return result

    # --- the algorithm -----------------------------------------------------------------------

    def _attempt(
        self, key: ConnectionKey, owner: str, reason: str, should_refresh: ShouldRefresh | None
    ) -> RefreshResult:
        connection = self._acquire(key, owner)
        if connection is None:
            self._emit("LeaseContention", 1, key.provider)
            return RefreshResult(RefreshOutcome.CONTENDED, key, None, None)
        run = _Run(key, owner, connection, reason, interrupted=connection.attempt is not None)
        if run.interrupted:
            self._emit("RefreshInterrupted", 1, key.provider)
            attempt = connection.attempt
            logger.warning(
                "an earlier refresh was interrupted before it committed; retrying it once",
                extra={
                    **_log_fields(key),
                    "attempt_started_at": attempt.started_at if attempt else None,
                    "attempt_generation": attempt.generation if attempt else None,
                },
            )
        try:
            return self._under_lease(run, should_refresh)
        except (_Again, LeaseLost):
            raise  # the lease is already gone (committed or taken over)
        except Exception:
            if not run.provider_called:
                self._release(run)
            # Else leave the lease to expire: the recorded attempt tells the next run what happened.
            raise

    def _acquire(self, key: ConnectionKey, owner: str) -> Connection | None:
        # The attempt is recorded in the same UpdateItem (step 3 folded into step 1: one AWS call
        # fewer); the answer is the item as it was, so a previous, interrupted attempt shows. A run
        # that ends without calling the provider releases, which forgets the attempt again.
        return self._repo.acquire(key, owner, self._lease_seconds)

    def _under_lease(self, run: _Run, should_refresh: ShouldRefresh | None) -> RefreshResult:
        connection = run.connection
        if not connection.is_active:
            return self._inactive(run)
        if not run.interrupted:
            stopped = self._item_gate(run, should_refresh)
            if stopped is not None:
                return stopped

        stored = self._repo.token(run.key)
        if stored.generation > connection.generation:
            return self._reconcile(run, stored, should_refresh)  # a late write landed: adopt it, always
        if stored.status is not ConnectionStatus.ACTIVE:
            # An earlier run (of a version that marked at the same generation) marked the secret and
            # died before the item: finish it, with the event and metric that run never got to.
            error = NeedsReauthorization("the grant is dead (found marked by an earlier run)")
            self._repo.items.mark_needs_reauth(run.key, run.owner, error, generation=stored.generation)
            return self._announce_needs_reauth(run, stored, error, "needs_reauth:recovered")
        if run.interrupted:
            # An interrupted attempt is retried at once, due or not, unless a backoff says a late writer
            # may still land its token: then nobody (a vend included) spends the grant or concludes.
            stopped = self._item_gate(run, should_refresh, backoff_only=True)
            if stopped is not None:
                return stopped
        return self._refresh_if_wanted(run, stored, should_refresh)

    def _refresh_if_wanted(self, run: _Run, stored: StoredToken, should_refresh: ShouldRefresh | None) -> RefreshResult:
        if not self._wanted(run, stored, should_refresh):
            self._release(run)
            return RefreshResult(RefreshOutcome.NOT_NEEDED, run.key, stored.generation, stored)
        return self._refresh_token(run, stored)

    def _item_gate(
        self, run: _Run, should_refresh: ShouldRefresh | None, *, backoff_only: bool = False
    ) -> RefreshResult | None:
        """What the item alone decides, before the secret is read; None: go on."""
        connection, now = run.connection, self._clock.now()
        if _backing_off(connection, now):
            # A failure set the next attempt (backoff, Retry-After, pause): every caller honours it,
            # or each vend during an outage would become one more provider call.
            self._release(run)
            if should_refresh is None:
                return RefreshResult(RefreshOutcome.NOT_NEEDED, run.key, connection.generation, None)
            return self._deferred(run, now)
        if not backoff_only and should_refresh is None and not self._item_due(connection, now):
            # Not due yet: a duplicated message or an early sweep.
            self._release(run)
            return RefreshResult(RefreshOutcome.NOT_NEEDED, run.key, connection.generation, None)
        return None

    def _item_due(self, connection: Connection, now: float) -> bool:
        """The item's refresh-ahead schedule, ``slack`` early at most (the sweep's horizon)."""
        return connection.next_refresh_at is None or connection.next_refresh_at <= now + self._slack

    def _deferred(self, run: _Run, now: float) -> RefreshResult:
        """A caller with its own predicate (a vend) during a backoff: the last failure, no provider call."""
        connection = run.connection
        assert connection.next_refresh_at is not None  # _backing_off checked it
        wait = connection.next_refresh_at - now
        error = _error_of(connection.last_error, run.key.provider, wait)
        self._emit("RefreshDeferred", 1, run.key.provider)
        return RefreshResult(
            _FAILURE_OUTCOMES.get(error.kind, RefreshOutcome.TRANSIENT_FAILURE),
            run.key,
            connection.generation,
            None,
            error=error,
            retry_after=wait,
            next_refresh_at=connection.next_refresh_at,
            deferred=True,
        )

    def _wanted(self, run: _Run, stored: StoredToken, should_refresh: ShouldRefresh | None) -> bool:
        if should_refresh is not None:
            return should_refresh(stored)
        token = stored.token
        return schedule.is_due(
            token.expires_at,
            token.obtained_at,
            run.connection.refresh_expires_at,
            self._clock.now(),
            slack=self._slack,
        )

    def _refresh_token(self, run: _Run, stored: StoredToken) -> RefreshResult:
        try:
            provider = self._providers(run.key.provider)
        except UnknownProvider as error:
            return self._failed(run, stored, _misconfigured(error, run.key.provider))
        except ProviderError as error:  # its app credentials are missing or unreadable
            return self._failed(run, stored, error)
        run.provider = provider

        run.provider_called = True
        started = time.perf_counter()
        try:
            fresh = provider.refresh(stored.token)
        except ProviderError as error:
            self._latency(run.key.provider, started)
            if error.kind.grant_is_dead:
                return self._dead_grant(run, stored, provider, error)
            return self._failed(run, stored, error)
        self._latency(run.key.provider, started)
        # Providers merge already; doing it again costs nothing and protects against one that does not.
        return self._persist(run, stored, fresh.merged_over(stored.token), RefreshOutcome.REFRESHED)

    # --- success -----------------------------------------------------------------------------

    def _persist(self, run: _Run, stored: StoredToken, fresh: TokenSet, outcome: RefreshOutcome) -> RefreshResult:
        generation = max(stored.generation, run.connection.generation) + 1
        new = StoredToken(
            token=fresh,
            generation=generation,
            status=ConnectionStatus.ACTIVE,
            metadata=dict(stored.metadata),
            login=stored.login,
        )
        written = self._repo.write_refresh(run.connection, run.owner, new, self._schedule_of(run, stored.token))
        if written.landed is Landed.SUPERSEDED:
            return self._superseded(run, written)
        committed = written.landed is Landed.COMMITTED
        if committed:  # else whoever adopts the item announces it (exactly one event per generation)
            reason = "interrupted" if run.interrupted else run.reason
            if outcome is RefreshOutcome.REAUTHENTICATED:
                reason = "stored_login"
            self._publish(EventType.TOKEN_REFRESHED, run.key, new, reason)
        logger.info(
            "token refreshed",
            extra={**_log_fields(run.key), "outcome": str(outcome), "generation": generation, "committed": committed},
        )
        return RefreshResult(
            outcome,
            run.key,
            generation,
            new,
            interrupted=run.interrupted,
            committed=committed,
        )

    def _superseded(self, run: _Run, written: Written) -> RefreshResult:
        """Another writer (a re-connect, a late refresh) took our generation: its token is current."""
        current = written.current
        if written.adopted:
            self._announce_adopted(run, current)
        return RefreshResult(
            RefreshOutcome.NOT_NEEDED, run.key, current.generation, current, reconciled=written.adopted
        )

    def _announce_adopted(self, run: _Run, current: StoredToken) -> None:
        """The run that wrote ``current`` never committed it, so never announced it: once, here."""
        if current.status is ConnectionStatus.ACTIVE:
            self._publish(EventType.TOKEN_REFRESHED, run.key, current, "reconciled")
        elif current.status is ConnectionStatus.NEEDS_REAUTH:
            self._emit("ConnectionsNeedingReauth", 1, run.key.provider)
            self._publish(EventType.CONNECTION_NEEDS_REAUTHORIZATION, run.key, current, "needs_reauth:recovered")

    def _schedule_of(self, run: _Run, previous: TokenSet | None) -> Callable[[StoredToken], Schedule]:
        def schedule_of(new: StoredToken) -> Schedule:
            token = new.token
            return Schedule(
                expires_at=token.expires_at,
                refresh_expires_at=self._refresh_expires_at(run, previous, token),
                next_refresh_at=self._next_refresh_at(run, previous, token),
            )

        return schedule_of

    def _reconcile(self, run: _Run, stored: StoredToken, should_refresh: ShouldRefresh | None) -> RefreshResult:
        """The secret is ahead of the item: an earlier run wrote it and never committed."""
        if stored.generation > run.connection.generation + 1:
            logger.error(
                "secret is more than one generation ahead of the item",
                extra={**_log_fields(run.key), "secret": stored.generation, "item": run.connection.generation},
            )
        self._emit("RefreshReconciled", 1, run.key.provider)
        logger.warning(
            "committing a token an earlier run wrote but never committed",
            extra={**_log_fields(run.key), "generation": stored.generation},
        )
        if not self._repo.adopt(run.connection, run.owner, stored, self._schedule_of(run, None)):
            raise LeaseLost(f"lease on {run.key} lost while reconciling")
        self._announce_adopted(run, stored)
        if stored.status is ConnectionStatus.NEEDS_REAUTH:
            return RefreshResult(
                RefreshOutcome.NEEDS_REAUTH, run.key, stored.generation, stored, interrupted=run.interrupted
            )
        if stored.status is ConnectionStatus.ACTIVE and self._wanted(run, stored, should_refresh):
            raise _Again
        return RefreshResult(
            RefreshOutcome.NOT_NEEDED,
            run.key,
            stored.generation,
            stored,
            interrupted=run.interrupted,
            reconciled=True,
        )

    # --- failures ----------------------------------------------------------------------------

    def _dead_grant(self, run: _Run, stored: StoredToken, provider: Provider, error: ProviderError) -> RefreshResult:
        current = self._repo.token(run.key)
        if current.generation > stored.generation:
            # Another worker refreshed meanwhile (our refresh token was the old one): not fatal.
            logger.info("dead grant on an old refresh token; a newer one exists", extra=_log_fields(run.key))
            reconciled = self._repo.adopt(run.connection, run.owner, current, self._schedule_of(run, None))
            if reconciled:
                self._announce_adopted(run, current)
            return RefreshResult(RefreshOutcome.NOT_NEEDED, run.key, current.generation, current, reconciled=reconciled)
        if stored.login is not None:
            # A new grant is safe even if an interrupted worker still writes: same generation, and
            # Secrets Manager keeps whichever lands first.
            return self._relogin(run, stored, provider, error, stored.login)
        if self._late_writer_possible(run):
            return self._inconclusive(run, stored, error)
        return self._needs_reauth(run, stored, error)

    def _late_writer_possible(self, run: _Run) -> bool:
        """An interrupted attempt may still land its token until one more lease after its own ended
        (a worker that outlived its lease finishes its write): until then a dead grant proves nothing."""
        attempt = run.connection.attempt
        if not run.interrupted or attempt is None:
            return False
        return self._clock.now() < attempt.started_at + 2 * self._lease_seconds

    def _relogin(
        self,
        run: _Run,
        stored: StoredToken,
        provider: Provider,
        error: ProviderError,
        login: PasswordLogin,
    ) -> RefreshResult:
        try:
            fresh = provider.password_grant(
                username=login.username, password=login.password, scopes=stored.token.scopes or None
            )
        except UnsupportedOperation:
            return self._needs_reauth(run, stored, error)
        except ProviderError as login_error:
            if login_error.kind.grant_is_dead:  # the password changed (Workly 7002) or the account went
                return self._needs_reauth(run, stored, login_error)
            return self._failed(run, stored, login_error)
        logger.info("dead grant; re-authenticated with the stored login", extra=_log_fields(run.key))
        return self._persist(run, stored, fresh.merged_over(stored.token), RefreshOutcome.REAUTHENTICATED)

    def _inconclusive(self, run: _Run, stored: StoredToken, error: ProviderError) -> RefreshResult:
        """A dead grant right after an interrupted attempt proves nothing yet: that attempt may have
        rotated the token and still be writing it (a worker that outlived its lease). Every caller
        backs off until one lease after that attempt's lease ended, the attempt stays visible, and
        the run after that sees its token landed (and adopts it) or concludes: needs_reauth. Costs
        one provider call; avoids both a false needs_reauth and one raced by the late write."""
        now = self._clock.now()
        attempt = run.connection.attempt
        assert attempt is not None  # _late_writer_possible checked it
        until = max(now, attempt.started_at + 2 * self._lease_seconds)
        self._emit("DeadGrantAfterInterruption", 1, run.key.provider)
        retry = ProviderError(
            ProviderErrorKind.TRANSIENT,
            "the grant was refused right after an interrupted refresh; checking again",
            provider=run.key.provider,
            provider_code=error.provider_code,
            status=error.status,
        )
        self._repo.record_failure(run.key, run.owner, retry, until, keep_attempt=attempt)
        logger.warning("dead grant after an interrupted refresh; checking again", extra=_log_fields(run.key))
        return RefreshResult(
            RefreshOutcome.TRANSIENT_FAILURE,
            run.key,
            stored.generation,
            stored,
            error=retry,
            retry_after=until - now,
            next_refresh_at=until,
            interrupted=True,
        )

    def _needs_reauth(self, run: _Run, stored: StoredToken, error: ProviderError) -> RefreshResult:
        # The secret first (a vend reads only the secret and must answer 409 from now on), as the
        # next generation: a re-connect that got there first wins and we adopt it.
        written = self._repo.mark_needs_reauth(run.connection, run.owner, stored, error, self._schedule_of(run, None))
        if written.landed is Landed.SUPERSEDED:
            return self._superseded(run, written)
        return self._announce_needs_reauth(run, written.current, error, _reason(error, run))

    def _announce_needs_reauth(
        self, run: _Run, marked: StoredToken, error: TokenBrokerError, reason: str
    ) -> RefreshResult:
        """Secret and item say needs_reauth: the operator is told (once)."""
        self._emit("ConnectionsNeedingReauth", 1, run.key.provider)
        self._publish(EventType.CONNECTION_NEEDS_REAUTHORIZATION, run.key, marked, reason)
        logger.warning("connection needs re-authorisation", extra={**_log_fields(run.key), "reason": reason})
        return RefreshResult(
            RefreshOutcome.NEEDS_REAUTH,
            run.key,
            marked.generation,
            marked,
            error=error if isinstance(error, ProviderError) else None,
            interrupted=run.interrupted,
        )

    def _failed(self, run: _Run, stored: StoredToken, error: ProviderError) -> RefreshResult:
        now = self._clock.now()
        failures = run.connection.failures + 1
        outcome = _FAILURE_OUTCOMES.get(error.kind, RefreshOutcome.TRANSIENT_FAILURE)
        if outcome is RefreshOutcome.TRANSIENT_FAILURE:
            next_at = schedule.backoff_until(
                now=now,
                failures=failures,
                expires_at=stored.token.expires_at,
                refresh_expires_at=run.connection.refresh_expires_at,
                retry_after=error.retry_after,
                rng=self._rng,
            )
            loud = failures % self._failure_event_every == 0
        else:
            # Our setup or the user's account: retrying will not fix it, an operator must.
            next_at = schedule.pause_until(now=now, retry_after=error.retry_after)
            loud = True
            self._emit("RefreshProblem", 1, run.key.provider, kind=str(error.kind))
        self._repo.record_failure(run.key, run.owner, error, next_at)
        reason = _reason(error, run)
        log = logger.error if loud else logger.warning
        log(
            "token refresh failed",
            extra={**_log_fields(run.key), "reason": reason, "failures": failures, "retry_in": round(next_at - now)},
        )
        if loud:
            self._publish(EventType.TOKEN_REFRESH_FAILED, run.key, stored, reason)
        return RefreshResult(
            outcome,
            run.key,
            stored.generation,
            stored,
            error=error,
            retry_after=error.retry_after,
            next_refresh_at=next_at,
            interrupted=run.interrupted,
        )

    def _inactive(self, run: _Run) -> RefreshResult:
        """The item is not active. Normally the secret agrees; repair it when it does not."""
        if run.connection.status is ConnectionStatus.PENDING:
            self._release(run)  # a grant awaiting confirmation: nothing to refresh yet
            return RefreshResult(RefreshOutcome.NOT_NEEDED, run.key, run.connection.generation, None)
        stored = self._repo.token(run.key)
        if stored.generation > run.connection.generation and stored.status is ConnectionStatus.ACTIVE:
            # A newer token landed after the item was marked (a late writer): it is the truth.
            return self._reconcile(run, stored, None)
        if run.connection.status is ConnectionStatus.NEEDS_REAUTH and stored.status is ConnectionStatus.ACTIVE:
            # The item says dead, the secret does not: mark the secret too (the next generation, as
            # every write that changes what is current), so vends answer 409.
            error = NeedsReauthorization("the grant is dead (the item said so before the secret)")
            schedule_of = self._schedule_of(run, None)
            written = self._repo.mark_needs_reauth(run.connection, run.owner, stored, error, schedule_of)
            return RefreshResult(RefreshOutcome.NEEDS_REAUTH, run.key, written.current.generation, written.current)
        self._release(run)
        return RefreshResult(RefreshOutcome.NEEDS_REAUTH, run.key, stored.generation, stored)

    # --- schedule of the new token -----------------------------------------------------------

    def _refresh_expires_at(self, run: _Run, previous: TokenSet | None, token: TokenSet) -> float | None:
        """Estimated from the catalog: a new refresh token lives its full lifetime from now on."""
        ttl, rotates = self._refresh_token_facts(run)
        rotated = rotates if previous is None else token.refresh_token != previous.refresh_token
        if rotated or run.connection.refresh_expires_at is None:
            return None if ttl is None else float(token.obtained_at + ttl)
        return run.connection.refresh_expires_at

    def _next_refresh_at(self, run: _Run, previous: TokenSet | None, token: TokenSet) -> float:
        return schedule.next_refresh_at(
            token.expires_at, token.obtained_at, self._refresh_expires_at(run, previous, token), self._clock.now()
        )

    def _refresh_token_facts(self, run: _Run) -> tuple[int | None, bool]:
        """(refresh-token lifetime, rotates) from the catalog entry, when there is one.

        From the catalog when the engine has it (no app credentials needed), else from the
        provider this run already resolved (catalog providers carry their entry)."""
        entry: object = None
        try:
            if self._catalog is not None:
                entry = self._catalog.get(run.key.provider)
            elif run.provider is not None:
                entry = getattr(run.provider, "entry", None)
            else:
                entry = getattr(self._providers(run.key.provider), "entry", None)
        except TokenBrokerError:
            entry = None
        if isinstance(entry, CatalogEntry):
            return entry.refresh_token_ttl, entry.rotates_refresh_token
        return None, False

    # --- small helpers -----------------------------------------------------------------------

    def _release(self, run: _Run) -> None:
        # A run that never called the provider leaves an interrupted attempt it found visible: the
        # next run must still treat a dead grant as possibly raced by that late writer.
        self._repo.release(run.key, run.owner, restore=None if run.provider_called else run.connection.attempt)

    def _publish(self, type_: EventType, key: ConnectionKey, stored: StoredToken, reason: str | None) -> None:
        self._events.publish(
            DomainEvent.for_key(
                type_, key, generation=stored.generation, expires_at=int(stored.token.expires_at), reason=reason
            )
        )

    def _count(self, result: RefreshResult) -> None:
        # A deferred vend is not another failure: alarms on failures count provider answers only.
        outcome = "deferred" if result.deferred else str(result.outcome)
        self._emit("RefreshOutcome", 1, result.key.provider, outcome=outcome)

    def _latency(self, provider: str, started: float) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self._metrics.emit("RefreshLatency", elapsed_ms, MetricUnit.Milliseconds, {"provider": provider})

    def _emit(self, name: str, value: float, provider: str, **dimensions: str) -> None:
        self._metrics.emit(name, value, MetricUnit.Count, {"provider": provider, **dimensions})


def _backing_off(connection: Connection, now: float) -> bool:
    return connection.failures > 0 and connection.next_refresh_at is not None and connection.next_refresh_at > now


def _error_of(last_error: LastError | None, provider: str, retry_after: float) -> ProviderError:
    """The recorded failure as an error again (its message was sanitised when it was recorded)."""
    if last_error is None:
        return ProviderError(
            ProviderErrorKind.TRANSIENT, "the provider failed recently", provider=provider, retry_after=retry_after
        )
    kind = ProviderErrorKind.of_code(last_error.code)
    if kind not in _FAILURE_OUTCOMES:  # not an operator's problem: for the caller, "try later"
        kind = ProviderErrorKind.TRANSIENT
    return ProviderError(kind, last_error.message, provider=provider, retry_after=retry_after)


def _misconfigured(error: TokenBrokerError, provider: str) -> ProviderError:
    """The catalog does not (or no longer) know the provider of a stored connection."""
    return ProviderError(ProviderErrorKind.CONFIGURATION, error.message, provider=provider, provider_code=error.code)


def _reason(error: ProviderError, run: _Run) -> str:
    parts = [error.code]
    if error.provider_code:
        parts.append(error.provider_code)
    if run.interrupted:
        parts.append("interrupted")
    return ":".join(parts)


def _log_fields(key: ConnectionKey) -> dict[str, str]:
    return {"provider": key.provider, "connection_id": key.connection_id}
