"""The real vending stack for tests: the deployed wiring (``Runtime``) on moto, providers on the sandboxes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import Clock
from tokenbroker.connect import ConnectService
from tokenbroker.events import MemorySink
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import StoredToken
from tokenbroker.providers import Catalog
from tokenbroker.refresh import MemoryRefreshMetrics, RefreshEngine
from tokenbroker.settings import Settings
from tokenbroker.stores import ConnectionStore, OneTimeStore, TokenStore
from tokenbroker.tokens import TokenSet
from tokenbroker.vending import VendingService
from tokenbroker.wiring import Runtime

from infra.localstack.resources import seed_app_secret
from infra.sandboxes import WorklySandbox, WorksectionSandbox
from tests.support.seeding import seed_connection

WS_EMAIL = "bob@example.com"
WS_PASSWORD = "bob-password-1"
WORKLY_EMAIL = "ann@example.com"
WORKLY_PASSWORD = "correct-horse-battery"
RETURN_BASE = "https://app.example.com/integrations/"
DAY = 86_400.0


def sandbox_catalog(directory: Path, worksection: WorksectionSandbox, workly: WorklySandbox | None = None) -> Catalog:
    extra = directory / "providers.yaml"
    lines = ["providers:", f"  worksection: {{base_url: '{worksection.url}'}}"]
    if workly is not None:
        lines.append(f"  workly: {{base_url: '{workly.base_url}'}}")
    extra.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Catalog.load(extra, environ={})


@dataclass
class Stack:
    """Vending, the connect flow and the refresh engine as ``Runtime`` builds them for the vend function."""

    clients: AwsClients
    table: DynamoTable
    clock: Clock
    catalog: Catalog
    worksection: WorksectionSandbox
    runtime: Runtime
    events: MemorySink
    refresh_metrics: MemoryRefreshMetrics

    @property
    def tokens(self) -> TokenStore:
        return self.runtime.tokens

    @property
    def connections(self) -> ConnectionStore:
        return self.runtime.connections

    @property
    def onetime(self) -> OneTimeStore:
        return self.runtime.onetime

    @property
    def engine(self) -> RefreshEngine:
        return self.runtime.refresher

    @property
    def vending(self) -> VendingService:
        return self.runtime.vending

    @property
    def connect(self) -> ConnectService:
        return self.runtime.connect

    def seed(
        self, connection_id: str, *, expires_in: float = DAY, lifetime: float = DAY, email: str = WS_EMAIL
    ) -> StoredToken:
        """A Worksection connection holding a sandbox-issued grant, ``lifetime - expires_in`` seconds old."""
        issued = self.worksection.issue_tokens(email)
        now = self.clock.now()
        token = TokenSet(
            access_token=issued["access_token"],
            token_type=issued["token_type"],
            expires_at=int(now + expires_in),
            obtained_at=int(now + expires_in - lifetime),
            refresh_token=issued["refresh_token"],
            scopes=("projects_read",),
            extra={"account_url": issued["account_url"]},
        )
        key = ConnectionKey("worksection", connection_id)
        saved = seed_connection(
            self.runtime.repository, self.catalog, self.clock, key, token, metadata={"user_email": email}
        )
        return saved.stored


def build_stack(
    clients: AwsClients,
    table: DynamoTable,
    clock: Clock,
    catalog: Catalog,
    worksection: WorksectionSandbox,
    *,
    wait_seconds: float = 8.0,
    lease_seconds: float = 90.0,
    stage: str = "test",
) -> Stack:
    """The vend function's ``Runtime`` for ``stage``; the sandbox's app credentials are stored where
    an operator stores them (``tokenbroker/<stage>/apps/worksection``), so providers resolve as deployed."""
    seed_app_secret(
        clients.secretsmanager,
        stage=stage,
        provider="worksection",
        client_id=worksection.client_id,
        client_secret=worksection.client_secret,
    )
    settings = Settings(
        table_name=table.name,
        stage=stage,
        allowed_return_urls=(RETURN_BASE,),
        lease_seconds=lease_seconds,
        vend_wait_seconds=wait_seconds,
    )
    events, metrics = MemorySink(), MemoryRefreshMetrics()
    runtime = Runtime(settings, aws=clients, clock=clock, events=events, catalog=catalog, refresh_metrics=metrics)
    return Stack(
        clients=clients,
        table=table,
        clock=clock,
        catalog=catalog,
        worksection=worksection,
        runtime=runtime,
        events=events,
        refresh_metrics=metrics,
    )
