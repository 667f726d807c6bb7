"""The refresh worker in a process of its own that kills itself (SIGKILL) at one step of a refresh.

    python -m tests.reliability.harness.crashworker CONFIG.json

The worker is the real one: functions/refresh/app.py's ``worker_handler`` gets an SQS event with
one refresh message, and runs the ``RefreshWorker`` that ``Runtime`` builds for the worker function
against a moto server and a provider sandbox that the test started (so all state outlives this
process). The library is unchanged: the crash point is injected here by wrapping the deployed
stores and the provider (Runtime's ``connections``, ``tokens`` and ``providers``); the wrapper does
the real work, then kills the process:

    after_lease            ConnectionStore.acquire_lease returned (lease and attempt recorded)
    before_provider_call   the token was re-read under the lease; the provider is about to be called
    after_provider_answer  Provider.refresh returned the new tokens (nothing written yet)
    after_secret_write     TokenStore.put returned (the new token is durable)
    after_commit           ConnectionStore.commit_refresh returned (the item says so too)
    none                   no crash: the control run

Progress goes to stdout as JSON lines, flushed at once: ``{"step": ..., "t": monotonic seconds}``
and the events published before the end. CLOCK_MONOTONIC is system-wide on Linux, so the test can
compare the times with its own.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenbroker.aws import AwsClients
from tokenbroker.clock import SystemClock
from tokenbroker.events import DomainEvent
from tokenbroker.http import HttpClient
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import Connection, StoredToken
from tokenbroker.providers import Catalog, Provider, build_provider
from tokenbroker.refresh import MemoryRefreshMetrics
from tokenbroker.settings import Settings
from tokenbroker.stores import ConnectionStore, TokenStore
from tokenbroker.sweep import RefreshMessage
from tokenbroker.tokens import TokenSet, UserInfo
from tokenbroker.wiring import Runtime

from infra.localstack.functions import load_function

POINTS = (
    "after_lease",
    "before_provider_call",
    "after_provider_answer",
    "after_secret_write",
    "after_commit",
    "none",
)


@dataclass(frozen=True)
class CrashConfig:
    moto_url: str
    table: str
    stage: str
    catalog_file: str
    provider: str
    connection_id: str
    point: str
    lease_seconds: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_file(cls, path: str | Path) -> CrashConfig:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def say(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, "t": time.monotonic(), **fields}), flush=True)


def die(point: str) -> None:
    say("killed", point=point)
    os.kill(os.getpid(), signal.SIGKILL)


class PrintingSink:
    def publish(self, event: DomainEvent) -> None:
        say("event", type=str(event.type), generation=event.generation, reason=event.reason)


class CrashingConnections(ConnectionStore):
    def __init__(self, inner: ConnectionStore, point: str) -> None:
        self.__dict__.update(inner.__dict__)
        self.point = point

    def acquire_lease(self, key: ConnectionKey, owner: str, duration: float, **kw: Any) -> Connection | None:
        connection = super().acquire_lease(key, owner, duration, **kw)
        say("lease", acquired=connection is not None)
        if self.point == "after_lease" and connection is not None:
            die(self.point)
        return connection

    def commit_refresh(self, key: ConnectionKey, *args: Any, **kw: Any) -> Connection:
        committed = super().commit_refresh(key, *args, **kw)
        say("committed", generation=committed.generation)
        if self.point == "after_commit":
            die(self.point)
        return committed


class CrashingTokens(TokenStore):
    def __init__(self, inner: TokenStore, point: str) -> None:
        self.__dict__.update(inner.__dict__)
        self.point = point

    def put(self, key: ConnectionKey, stored: StoredToken, *, restore_deleted: bool = False) -> str:
        version = super().put(key, stored, restore_deleted=restore_deleted)
        say("secret_written", generation=stored.generation, status=str(stored.status))
        if self.point == "after_secret_write":
            die(self.point)
        return version


class CrashingProvider(Provider):
    def __init__(self, inner: Provider, point: str) -> None:
        self.name = inner.name
        self._inner = inner
        self.point = point

    def refresh(self, token: TokenSet) -> TokenSet:
        if self.point == "before_provider_call":
            die(self.point)
        say("provider_call")
        fresh = self._inner.refresh(token)
        say("provider_answered")
        if self.point == "after_provider_answer":
            die(self.point)
        return fresh

    def password_grant(self, *, username: str, password: str, scopes: Sequence[str] | None = None) -> TokenSet:
        say("provider_call", grant="password")
        fresh = self._inner.password_grant(username=username, password=password, scopes=scopes)
        say("provider_answered", grant="password")
        return fresh

    def authorization_url(
        self, *, state: str, redirect_uri: str, scopes: Sequence[str] | None = None, code_challenge: str | None = None
    ) -> str:
        return self._inner.authorization_url(
            state=state, redirect_uri=redirect_uri, scopes=scopes, code_challenge=code_challenge
        )

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str | None = None) -> TokenSet:
        return self._inner.exchange_code(code=code, redirect_uri=redirect_uri, code_verifier=code_verifier)

    def user_info(self, token: TokenSet) -> UserInfo:
        return self._inner.user_info(token)


@dataclass(frozen=True, slots=True)
class _Context:
    function_name: str = "tokenbroker-RefreshWorkerFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:tokenbroker-RefreshWorkerFunction"
    aws_request_id: str = "crash-worker"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def main(argv: list[str]) -> int:
    config = CrashConfig.from_file(argv[1])
    say("started", point=config.point)
    clock = SystemClock()
    clients = AwsClients(endpoint_url=config.moto_url)
    catalog = Catalog.load(config.catalog_file, environ={})
    entry = catalog.get(config.provider)
    credentials = entry.default_credentials()
    assert credentials is not None, "the catalog file must carry the sandbox's app credentials"
    provider = build_provider(entry, credentials, http=HttpClient(connect_timeout=1.0, read_timeout=5.0), clock=clock)
    settings = Settings(table_name=config.table, stage=config.stage, lease_seconds=config.lease_seconds)
    deployed = Runtime(settings, aws=clients, clock=clock)
    runtime = Runtime(
        settings,
        aws=clients,
        clock=clock,
        events=PrintingSink(),
        catalog=catalog,
        providers=lambda _name: CrashingProvider(provider, config.point),
        connections=CrashingConnections(deployed.connections, config.point),
        tokens=CrashingTokens(deployed.tokens, config.point),
        refresh_metrics=MemoryRefreshMetrics(),
    )
    module = load_function("refresh")
    module.use_services(module.Services(worker=runtime.refresh_worker, events=runtime.worker_events))
    key = ConnectionKey(config.provider, config.connection_id)
    body = RefreshMessage(key, clock.now()).to_body()
    event = {
        "Records": [
            {
                "messageId": f"crash-{config.point}",
                "receiptHandle": "crash",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:refresh",
                "awsRegion": "us-east-1",
            }
        ]
    }
    say("handling")
    answer = module.worker_handler(event, _Context())
    say("done", failures=len(answer.get("batchItemFailures", [])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
