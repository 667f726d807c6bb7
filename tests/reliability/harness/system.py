"""tokenbroker's refresh side wired as deployed, on moto, driven by a simulated schedule.

``System`` holds the real stores (Secrets Manager, DynamoDB), an SQS queue and the functions'
``Settings``; the refresh engine, vending, the sweep and the worker are what ``Runtime`` builds
from them, injected into the real Lambda handlers of functions/refresh/app.py (sweep and worker).
``run_schedule`` plays EventBridge Scheduler and the SQS event source: every ``sweep_every``
simulated seconds the sweep runs, then every queued message goes to the worker handler as an SQS
batch. Time is a ManualClock, so hours of schedule take milliseconds and "no busy loop" is a
count of provider calls over a known span of time.
"""

from __future__ import annotations

import itertools
import json
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ClientError
from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import Clock, ManualClock
from tokenbroker.events import DomainEvent, EventType, MemorySink
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import Connection, PasswordLogin, StoredToken
from tokenbroker.providers import Catalog, Provider
from tokenbroker.providers.registry import ProviderResolver
from tokenbroker.refresh import MemoryRefreshMetrics, RefreshEngine
from tokenbroker.repository import ConnectionRepository
from tokenbroker.settings import Settings
from tokenbroker.stores import ConnectionStore, TokenStore
from tokenbroker.sweep import DEFAULT_HORIZON, RefreshMessage, RefreshWorker, Sweeper
from tokenbroker.tokens import TokenSet
from tokenbroker.vending import VendingService
from tokenbroker.wiring import Runtime

from tests.support.handlers import load_function
from tests.support.seeding import seed_connection

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

DAY = 86_400.0
SWEEP_EVERY = 300.0  # the template's default schedule: rate(5 minutes)
WORKLY_EMAIL = "ann@example.com"
WORKLY_PASSWORD = "correct-horse-battery"
WS_EMAIL = "bob@example.com"
WS_PASSWORD = "bob-password-1"

_refresh_module: ModuleType | None = None


def refresh_function() -> ModuleType:
    """functions/refresh/app.py, imported once per process (its services are injected per test)."""
    global _refresh_module  # noqa: PLW0603 - one import per process, like a warm Lambda
    if _refresh_module is None:
        _refresh_module = load_function("refresh")
    return _refresh_module


@dataclass(frozen=True, slots=True)
class LambdaContext:
    function_name: str = "tokenbroker-RefreshWorkerFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:tokenbroker-RefreshWorkerFunction"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@dataclass
class ScheduleLog:
    """What a simulated span of schedule did."""

    sweeps: int = 0
    messages: int = 0
    failed_records: int = 0  # records the worker reported as failed (SQS would retry them)
    outcomes: list[str] = field(default_factory=list)
    by_key: dict[ConnectionKey, list[str]] = field(default_factory=dict)


@dataclass
class System:
    clock: ManualClock | Clock
    clients: AwsClients
    table: DynamoTable
    settings: Settings  # the functions' environment: table, stage, queue, lease
    tokens: TokenStore
    connections: ConnectionStore
    catalog: Catalog
    providers: dict[str, Provider] = field(default_factory=dict)
    events: MemorySink = field(default_factory=MemorySink)
    metrics: MemoryRefreshMetrics = field(default_factory=MemoryRefreshMetrics)
    seeded: list[ConnectionKey] = field(default_factory=list)
    rng: Callable[[], float] = lambda: 1.0  # the top of the jitter: deterministic backoff

    @classmethod
    def create(
        cls,
        clients: AwsClients,
        table: DynamoTable,
        clock: ManualClock | Clock,
        *,
        catalog: Catalog | None = None,
        stage: str | None = None,
        lease_seconds: float = 90.0,
    ) -> System:
        sqs = cast("SQSClient", clients.client("sqs"))
        queue_url = sqs.create_queue(QueueName=f"refresh-{uuid.uuid4().hex[:10]}")["QueueUrl"]
        settings = Settings(
            table_name=table.name,
            # A stage of its own: a moto server outlives a test, secret names must not collide.
            stage=stage or f"r{uuid.uuid4().hex[:10]}",
            refresh_queue_url=queue_url,
            lease_seconds=lease_seconds,
        )
        return cls(
            clock=clock,
            clients=clients,
            table=table,
            settings=settings,
            tokens=Runtime(settings, aws=clients, clock=clock).tokens,
            # One due shard: a sweep is one Query instead of 16 (sharding is the stores' own test).
            connections=ConnectionStore(table, clock=clock, due_shards=1),
            catalog=catalog or Catalog.load(environ={}),
        )

    @property
    def queue_url(self) -> str:
        assert self.settings.refresh_queue_url is not None
        return self.settings.refresh_queue_url

    @property
    def lease_seconds(self) -> float:
        return self.settings.lease_seconds

    @property
    def manual_clock(self) -> ManualClock:
        assert isinstance(self.clock, ManualClock)
        return self.clock

    @property
    def sqs(self) -> SQSClient:
        return cast("SQSClient", self.clients.client("sqs"))

    # --- collaborators ---------------------------------------------------------------------------

    def resolve(self, name: str) -> Provider:
        return self.providers[name]

    def runtime(
        self,
        *,
        connections: ConnectionStore | None = None,
        tokens: TokenStore | None = None,
        providers: ProviderResolver | None = None,
        **settings: Any,
    ) -> Runtime:
        """A fresh ``Runtime`` (one function's cold start) around this system's stores and providers.

        ``connections``, ``tokens`` and ``providers`` replace one of them (a faulty store, say);
        ``settings`` replaces ``Settings`` fields.
        """
        return Runtime(
            replace(self.settings, **settings),
            aws=self.clients,
            clock=self.clock,
            events=self.events,
            catalog=self.catalog,
            providers=self.resolve if providers is None else providers,
            connections=self.connections if connections is None else connections,
            tokens=self.tokens if tokens is None else tokens,
            refresh_metrics=self.metrics,
            rng=self.rng,
        )

    def engine(self, *, connections: ConnectionStore | None = None, tokens: TokenStore | None = None) -> RefreshEngine:
        return self.runtime(connections=connections, tokens=tokens).refresher

    def vending(self, *, wait_seconds: float = 2.0) -> VendingService:
        return self.runtime(vend_wait_seconds=wait_seconds).vending

    def repository(self) -> ConnectionRepository:
        return self.runtime().repository

    def sweeper(self) -> Sweeper:
        sweeper = self.runtime().sweeper
        assert sweeper is not None
        return sweeper

    # --- state -----------------------------------------------------------------------------------

    def seed(
        self,
        key: ConnectionKey,
        token: TokenSet,
        *,
        login: PasswordLogin | None = None,
        metadata: dict[str, str] | None = None,
    ) -> StoredToken:
        """A connection as the connect flow leaves it: item first, then the secret."""
        saved = seed_connection(self.repository(), self.catalog, self.clock, key, token, login=login, metadata=metadata)
        self.seeded.append(key)
        return saved.stored

    def item(self, key: ConnectionKey) -> Connection:
        connection = self.connections.get(key)
        assert connection is not None, f"no item for {key}"
        return connection

    def secret(self, key: ConnectionKey) -> StoredToken:
        return self.tokens.get(key)

    def advance_to_due(self, key: ConnectionKey) -> None:
        due = self.item(key).next_refresh_at
        assert due is not None
        self.manual_clock.advance(max(0.0, due - self.clock.now()) + 1)

    def events_of(self, type_: EventType, key: ConnectionKey | None = None) -> list[DomainEvent]:
        return [
            e
            for e in self.events.of_type(type_)
            if key is None or (e.provider, e.connection_id) == (key.provider, key.connection_id)
        ]

    # --- the schedule ----------------------------------------------------------------------------

    def run_schedule(
        self,
        seconds: float,
        *,
        sweep_every: float = SWEEP_EVERY,
        connections: ConnectionStore | None = None,
        tokens: TokenStore | None = None,
    ) -> ScheduleLog:
        """Play ``seconds`` of schedule: sweep, then hand every queued message to the worker handler.

        Sweeps that cannot find anything are skipped arithmetically (still counted): when none of
        the connections this system seeded falls due within the sweep's horizon at a tick, the
        clock jumps to the first tick where one does. A skipped sweep is one whose Query returns
        nothing, so the outcome is the same, only faster. ``connections`` and ``tokens`` replace a
        store of the worker function only (a wrapped store, for instance); the sweep's are plain.
        """
        worker = _RecordingWorker(self.runtime(connections=connections, tokens=tokens).refresh_worker)
        log = ScheduleLog()
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            idle = self._idle_ticks(sweep_every, end)
            if idle:
                log.sweeps += idle
                self.manual_clock.advance(idle * sweep_every)
                continue
            self._sweep_and_work(worker, log)
            self.manual_clock.advance(sweep_every)
        return log

    def sweep_once(
        self, *, connections: ConnectionStore | None = None, tokens: TokenStore | None = None
    ) -> ScheduleLog:
        """One sweep and the worker runs it causes, on whatever clock the system has (no advance)."""
        log = ScheduleLog()
        worker = _RecordingWorker(self.runtime(connections=connections, tokens=tokens).refresh_worker)
        self._sweep_and_work(worker, log)
        return log

    def _sweep_and_work(self, worker: _RecordingWorker, log: ScheduleLog) -> None:
        module = refresh_function()
        module.use_services(module.Services(worker=worker, events=self.events, sweeper=self.sweeper()))
        try:
            module.sweep_handler({}, LambdaContext())
            log.sweeps += 1
            for batch in self._drain():
                log.messages += len(batch)
                try:
                    answer = module.worker_handler(_sqs_event(batch), LambdaContext())
                except BatchProcessingError:  # every record failed: the invocation fails, all return
                    log.failed_records += len(batch)
                else:
                    log.failed_records += len(answer.get("batchItemFailures", []))
        finally:
            module.use_services(None)
        log.outcomes = [outcome for _, outcome in worker.handled]
        log.by_key = {}
        for key, outcome in worker.handled:
            log.by_key.setdefault(key, []).append(outcome)

    def _idle_ticks(self, sweep_every: float, end: float) -> int:
        """How many sweeps from now on would find none of the seeded connections due."""
        now = self.clock.now()
        due_times = []
        for key in self.seeded:
            connection = self.connections.get(key)
            if connection is not None and connection.is_active and connection.next_refresh_at is not None:
                due_times.append(connection.next_refresh_at)
        horizon = DEFAULT_HORIZON
        first_due = min(due_times, default=math.inf)
        if first_due <= now + horizon:
            return 0
        ticks_left = math.ceil((end - now) / sweep_every)
        if math.isinf(first_due):
            return ticks_left
        ticks_to_due = math.ceil((first_due - horizon - now) / sweep_every)
        return max(0, min(ticks_left, ticks_to_due))

    def _drain(self) -> Iterator[list[dict[str, Any]]]:
        """Every queued message, in batches of 10. Failed records are deleted too: the sweep
        re-enqueues what is still due, which is what SQS redelivery amounts to here."""
        for _ in range(1000):
            answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = answer.get("Messages", [])
            if not messages:
                return
            yield cast("list[dict[str, Any]]", messages)
            for message in messages:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


class _RecordingWorker(RefreshWorker):
    """The worker function's own ``RefreshWorker`` (``Runtime.refresh_worker``), noting each outcome."""

    def __init__(self, worker: RefreshWorker) -> None:
        self.__dict__.update(worker.__dict__)
        self.handled: list[tuple[ConnectionKey, str]] = []

    def handle(self, body: str) -> Any:
        key = RefreshMessage.from_body(body).key
        try:
            result = super().handle(body)
        except Exception as error:
            name = "ClientError" if isinstance(error, ClientError) else type(error).__name__
            self.handled.append((key, f"raised {name}"))
            raise
        self.handled.append((key, "gone" if result is None else str(result.outcome)))
        return result


_message_ids = itertools.count(1)


def _sqs_event(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "Records": [
            {
                "messageId": message.get("MessageId") or f"m-{next(_message_ids)}",
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:refresh",
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
    }


def public_json(value: object) -> str:
    """``value`` as the JSON a log scan compares against (default=str for odd types)."""
    return json.dumps(value, default=str, sort_keys=True)
