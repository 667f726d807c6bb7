"""The composition root: every collaborator of the handlers, built lazily from ``Settings``.

Handlers call ``Runtime.from_env()`` on their first request (not at import, so a cold start
only pays for what it uses) and tests build a ``Runtime`` around their own clock and sink.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from tokenbroker.aws import AwsClients
from tokenbroker.clock import Clock, SystemClock
from tokenbroker.events import EventBridgeSink, EventSink, MemorySink
from tokenbroker.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient

    from tokenbroker.connect import ConnectService
    from tokenbroker.providers.catalog import Catalog
    from tokenbroker.providers.registry import ProviderResolver
    from tokenbroker.refresh import RefreshEngine, RefreshMetrics
    from tokenbroker.repository import ConnectionRepository
    from tokenbroker.stores.app_credentials import AppCredentialsStore
    from tokenbroker.stores.connections import ConnectionStore
    from tokenbroker.stores.onetime import OneTimeStore
    from tokenbroker.stores.tokens import TokenStore
    from tokenbroker.sweep import RefreshWorker, Sweeper
    from tokenbroker.vending import VendingService

T = TypeVar("T")


class Runtime:
    """Builds each collaborator once, on first use, as the deployed functions use it.

    Deployments pass ``settings`` only (``from_env``). Every keyword argument replaces one
    collaborator, and everything else is still built from ``settings`` around it, so a test runs
    the deployed graph with only what it names swapped (None: build it as deployed):

    - ``aws``, ``clock``, ``events``, ``catalog``: AWS clients, time, the event sink, the catalog;
    - ``providers``: resolves a provider name instead of the catalog plus the app credentials in
      Secrets Manager (a scripted provider, a sandbox with its own timeouts);
    - ``connections``, ``tokens``: the item and secret stores the repository writes through (a
      wrapper that injects faults or crashes, a store with one due shard);
    - ``refresh_metrics``: where the refresh engine's metrics go (default: EMF via Powertools);
    - ``rng``: the refresh engine's backoff jitter (default ``random.random``).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        aws: AwsClients | None = None,
        clock: Clock | None = None,
        events: EventSink | None = None,
        catalog: Catalog | None = None,
        providers: ProviderResolver | None = None,
        connections: ConnectionStore | None = None,
        tokens: TokenStore | None = None,
        refresh_metrics: RefreshMetrics | None = None,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.aws = aws or AwsClients()
        self.clock: Clock = clock or SystemClock()
        self._events = events
        self._catalog = catalog
        self._providers = providers
        self._connections = connections
        self._tokens = tokens
        self._refresh_metrics = refresh_metrics
        self._rng = rng
        self._built: dict[str, object] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_env(cls) -> Runtime:
        return cls(Settings.from_env())

    def _once(self, name: str, build: Callable[[], T]) -> T:
        # The local stack serves requests on threads: build each collaborator exactly once.
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return cast(T, self._built[name])

    # Providers (requests, PyYAML) are imported on first use: a vend of a fresh token needs neither.
    @property
    def catalog(self) -> Catalog:
        from tokenbroker.providers.catalog import Catalog  # noqa: PLC0415

        return self._catalog or self._once("catalog", lambda: Catalog.load(self.settings.providers_file))

    @property
    def events(self) -> EventSink:
        if self._events is not None:
            return self._events
        bus = self.settings.event_bus_name
        if not bus:
            return self._once("events", MemorySink)
        return self._once("events", lambda: EventBridgeSink(cast("EventBridgeClient", self.aws.client("events")), bus))

    @property
    def sqs(self) -> SQSClient:
        return cast("SQSClient", self.aws.client("sqs"))

    @property
    def tokens(self) -> TokenStore:
        if self._tokens is not None:
            return self._tokens
        from tokenbroker.stores.tokens import TokenStore  # noqa: PLC0415

        return self._once(
            "tokens",
            lambda: TokenStore(self.aws.secretsmanager, stage=self.settings.stage, kms_key_id=self.settings.kms_key_id),
        )

    @property
    def app_credentials(self) -> AppCredentialsStore:
        from tokenbroker.stores.app_credentials import AppCredentialsStore  # noqa: PLC0415

        return self._once(
            "app_credentials",
            lambda: AppCredentialsStore(
                self.aws.secretsmanager, stage=self.settings.stage, catalog=self.catalog, clock=self.clock
            ),
        )

    @property
    def connections(self) -> ConnectionStore:
        if self._connections is not None:
            return self._connections
        from tokenbroker.stores.connections import ConnectionStore  # noqa: PLC0415

        return self._once(
            "connections",
            lambda: ConnectionStore(self.aws.table(self.settings.table_name), clock=self.clock),
        )

    @property
    def repository(self) -> ConnectionRepository:
        """The connection aggregate over this stack's table and secrets."""
        from tokenbroker.repository import ConnectionRepository  # noqa: PLC0415

        return self._once(
            "repository",
            lambda: ConnectionRepository(items=self.connections, secrets=self.tokens, clock=self.clock),
        )

    @property
    def onetime(self) -> OneTimeStore:
        from tokenbroker.stores.onetime import OneTimeStore  # noqa: PLC0415

        return self._once("onetime", lambda: OneTimeStore(self.aws.table(self.settings.table_name), clock=self.clock))

    @property
    def providers(self) -> ProviderResolver:
        if self._providers is not None:
            return self._providers
        from tokenbroker.providers.registry import ProviderRegistry  # noqa: PLC0415

        return self._once("providers", lambda: ProviderRegistry(self.catalog, self.app_credentials, clock=self.clock))

    def _engine(self, events: EventSink) -> RefreshEngine:
        from tokenbroker.refresh import RefreshEngine  # noqa: PLC0415

        return RefreshEngine(
            repository=self.repository,
            providers=self.providers,
            events=events,
            clock=self.clock,
            lease_seconds=self.settings.lease_seconds,
            catalog=self.catalog,
            schedule_slack=self.settings.schedule.slack,
            metrics=self._refresh_metrics,
            rng=self._rng or random.random,
        )

    @property
    def refresher(self) -> RefreshEngine:
        """The engine for on-demand refreshes: events are published as they happen."""
        return self._once("refresher", lambda: self._engine(self.events))

    @property
    def worker_events(self) -> EventSink:
        """The refresh worker's sink: one PutEvents per SQS batch, flushed by the handler after it.

        This keeps a scheduled refresh within its budget of 4 AWS calls plus the provider call.
        """
        bus = self.settings.event_bus_name
        if not bus:
            return self.events
        from tokenbroker.sweep import BatchingEventSink  # noqa: PLC0415

        return self._once(
            "worker_events", lambda: BatchingEventSink(cast("EventBridgeClient", self.aws.client("events")), bus)
        )

    @property
    def refresh_worker(self) -> RefreshWorker:
        from tokenbroker.sweep import RefreshWorker  # noqa: PLC0415

        return self._once("refresh_worker", lambda: RefreshWorker(self._engine(self.worker_events)))

    @property
    def sweeper(self) -> Sweeper | None:
        """None where this deployment has no refresh queue (a worker-only process)."""
        queue_url = self.settings.refresh_queue_url
        if not queue_url:
            return None
        from tokenbroker.sweep import Sweeper  # noqa: PLC0415

        return self._once(
            "sweeper",
            lambda: Sweeper(
                connections=self.repository,
                sqs=self.sqs,
                queue_url=queue_url,
                clock=self.clock,
                horizon=self.settings.schedule.horizon,
                max_messages=self.settings.sweep_max_messages,
            ),
        )

    @property
    def vending(self) -> VendingService:
        from tokenbroker.vending import VendingService  # noqa: PLC0415

        return self._once(
            "vending",
            lambda: VendingService(
                repository=self.repository,
                refresher=self.refresher,
                clock=self.clock,
                wait_seconds=self.settings.vend_wait_seconds,
                events=self.events,
                catalog=self.catalog,
            ),
        )

    @property
    def connect(self) -> ConnectService:
        from tokenbroker.connect import ConnectService  # noqa: PLC0415

        return self._once(
            "connect",
            lambda: ConnectService(
                catalog=self.catalog,
                onetime=self.onetime,
                repository=self.repository,
                providers=self.providers,
                events=self.events,
                clock=self.clock,
                allowed_return_urls=self.settings.allowed_return_urls,
                public_base_url=self.settings.public_base_url,
                session_seconds=self.settings.connect_session_seconds,
            ),
        )
