"""boto3 clients built once per process, and a counter of the AWS calls they make.

Clients come from one ``boto3.Session`` with explicit timeouts and standard retries. boto3 itself
honours ``AWS_ENDPOINT_URL`` (and ``AWS_ENDPOINT_URL_<SERVICE>``), which is how the local stack
points everything at its moto server: nothing here special-cases it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from tokenbroker import USER_AGENT

if TYPE_CHECKING:
    from botocore.client import BaseClient
    from botocore.hooks import BaseEventHooks
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.service_resource import Table as TableResource
    from mypy_boto3_secretsmanager import SecretsManagerClient

# Lambda gives one request at a time per process, but the refresh worker and the local stack fan out
# on threads; one pool slot per thread avoids "connection pool is full" churn.
DEFAULT_MAX_POOL_CONNECTIONS = 50
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_READ_TIMEOUT = 5.0
DEFAULT_MAX_ATTEMPTS = 3


def default_config(
    *,
    max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> Config:
    return Config(
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        user_agent_extra=USER_AGENT.split(" ", 1)[0],
    )


@dataclass(frozen=True, slots=True)
class DynamoTable:
    """A table as the stores use it: the low-level client (no resource layer: faster cold start)."""

    client: DynamoDBClient
    name: str

    @classmethod
    def of(cls, table: DynamoTable | TableResource) -> DynamoTable:
        """Accept a ``DynamoTable`` or a boto3 ``Table`` resource."""
        if isinstance(table, DynamoTable):
            return table
        return cls(client=table.meta.client, name=table.name)


# Codes AWS answers when it is busy or broken rather than when the request is wrong.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestThrottledException",
        "InternalServiceError",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
    }
)


def is_transient_aws_error(error: BaseException) -> bool:
    """True for throttling, AWS 5xx and network failures: the caller may retry the same request."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return code in TRANSIENT_ERROR_CODES or status >= 500
    return isinstance(error, EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError | ReadTimeoutError)


class AwsClients:
    """Lazily created clients sharing one session and one botocore ``Config``. Thread-safe."""

    def __init__(
        self,
        session: boto3.Session | None = None,
        *,
        region_name: str | None = None,
        config: Config | None = None,
        endpoint_url: str | None = None,
    ) -> None:
        self._session = session or boto3.Session(region_name=region_name)
        self._config = config or default_config()
        # Normally None: boto3 reads AWS_ENDPOINT_URL itself. Explicit for tests and benchmarks.
        self._endpoint_url = endpoint_url
        self._clients: dict[str, BaseClient] = {}
        self._observers: list[Callable[[BaseClient], None]] = []
        self._lock = threading.Lock()

    @property
    def session(self) -> boto3.Session:
        return self._session

    def client(self, service_name: str) -> BaseClient:
        with self._lock:
            existing = self._clients.get(service_name)
            if existing is not None:
                return existing
            # boto3.Session.client is not safe to call concurrently, hence inside the lock.
            # The ignore stays: boto3-stubs types Session.client only per literal service name,
            # and this one is a runtime str; the ignore is narrower than casting the session to Any.
            created: BaseClient = self._session.client(  # type: ignore[call-overload]
                service_name, config=self._config, endpoint_url=self._endpoint_url
            )
            self._clients[service_name] = created
            observers = list(self._observers)
        for observe in observers:
            observe(created)
        return created

    @property
    def dynamodb(self) -> DynamoDBClient:
        return cast("DynamoDBClient", self.client("dynamodb"))

    @property
    def secretsmanager(self) -> SecretsManagerClient:
        return cast("SecretsManagerClient", self.client("secretsmanager"))

    def table(self, name: str) -> DynamoTable:
        return DynamoTable(client=self.dynamodb, name=name)

    def created_clients(self) -> list[BaseClient]:
        with self._lock:
            return list(self._clients.values())

    def add_observer(self, observe: Callable[[BaseClient], None]) -> None:
        """Call ``observe`` for every client created from now on (used by ``AwsCallCounter``)."""
        with self._lock:
            self._observers.append(observe)

    def remove_observer(self, observe: Callable[[BaseClient], None]) -> None:
        with self._lock:
            if observe in self._observers:
                self._observers.remove(observe)


class AwsCallCounter:
    """Counts AWS API calls per operation through botocore's ``before-call`` event.

    ``before-call`` fires once per API call (retries of the same call are not counted again;
    ``sends`` counts HTTP attempts via ``before-send``). Targets: clients, ``DynamoTable``s,
    boto3 ``Table`` resources, an ``AwsClients`` (its existing and future clients) or a
    ``boto3.Session`` (clients created from it afterwards). Keys are ``"OperationName"``;
    ``by_service`` keys are ``"service.OperationName"``.
    """

    def __init__(self, *targets: Any) -> None:
        self._targets = targets
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._by_service: Counter[str] = Counter()
        self._sends = 0
        self._registered: list[BaseEventHooks] = []
        self._observed: list[AwsClients] = []
        self._unique = f"tokenbroker-call-counter-{id(self)}"

    # --- results -------------------------------------------------------------------------------

    @property
    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)

    @property
    def by_service(self) -> dict[str, int]:
        with self._lock:
            return dict(self._by_service)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._calls.values())

    @property
    def sends(self) -> int:
        with self._lock:
            return self._sends

    def count(self, operation: str) -> int:
        with self._lock:
            return self._calls[operation]

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()
            self._by_service.clear()
            self._sends = 0

    # --- hooks ---------------------------------------------------------------------------------

    def _on_call(self, model: Any = None, **_: Any) -> None:
        # Must return None: a value returned from before-call would replace the real response.
        if model is None:
            return
        service = str(model.service_model.service_name)
        with self._lock:
            self._calls[str(model.name)] += 1
            self._by_service[f"{service}.{model.name}"] += 1

    def _on_send(self, **_: Any) -> None:
        with self._lock:
            self._sends += 1

    def _register(self, events: BaseEventHooks) -> None:
        events.register("before-call", self._on_call, unique_id=f"{self._unique}-call")
        events.register("before-send", self._on_send, unique_id=f"{self._unique}-send")
        self._registered.append(events)

    def _observe_client(self, client: BaseClient) -> None:
        self._register(client.meta.events)

    def _events_of(self, target: Any) -> Iterable[BaseEventHooks]:
        if isinstance(target, AwsClients):
            target.add_observer(self._observe_client)
            self._observed.append(target)
            return [c.meta.events for c in target.created_clients()]
        if isinstance(target, DynamoTable):
            return [target.client.meta.events]
        if isinstance(target, boto3.Session):
            return [target.events]
        meta = getattr(target, "meta", None)
        if meta is not None and hasattr(meta, "events"):  # a botocore client
            return [meta.events]
        if meta is not None and hasattr(meta, "client"):  # a boto3 resource
            return [meta.client.meta.events]
        raise TypeError(f"cannot count AWS calls of {type(target).__name__}")

    def __enter__(self) -> Self:
        for target in self._targets:
            for events in self._events_of(target):
                self._register(events)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for clients in self._observed:
            clients.remove_observer(self._observe_client)
        self._observed.clear()
        for events in self._registered:
            events.unregister("before-call", unique_id=f"{self._unique}-call")
            events.unregister("before-send", unique_id=f"{self._unique}-send")
        self._registered.clear()
