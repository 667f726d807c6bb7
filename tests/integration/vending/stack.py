"""The real vending stack for tests: stores on moto, the refresh engine, providers on the sandboxes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import Clock
from tokenbroker.connect import ConnectService
from tokenbroker.events import MemorySink
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import StoredToken
from tokenbroker.providers import AppCredentials, Catalog, Provider, build_provider
from tokenbroker.refresh import MemoryRefreshMetrics, RefreshEngine
from tokenbroker.repository import ConnectionRepository
from tokenbroker.stores import ConnectionStore, OneTimeStore, TokenStore
from tokenbroker.tokens import TokenSet
from tokenbroker.vending import VendingService

from infra.sandboxes import WorklySandbox, WorksectionSandbox

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
    clients: AwsClients
    table: DynamoTable
    clock: Clock
    catalog: Catalog
    worksection: WorksectionSandbox
    tokens: TokenStore
    connections: ConnectionStore
    onetime: OneTimeStore
    events: MemorySink
    engine: RefreshEngine
    vending: VendingService
    connect: ConnectService
    refresh_metrics: MemoryRefreshMetrics
    _providers: dict[str, Provider] = field(default_factory=dict)

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
        metadata = {"user_email": email}
        connection = self.connections.save_connected(
            key,
            expires_at=token.expires_at,
            refresh_expires_at=now + 30 * DAY,
            next_refresh_at=token.expires_at - 300,
            metadata=metadata,
            scopes=token.scopes,
        )
        stored = StoredToken(token=token, generation=connection.generation, metadata=metadata)
        self.tokens.put(key, stored)
        return stored


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
    credentials = {"worksection": AppCredentials(worksection.client_id, worksection.client_secret)}
    built: dict[str, Provider] = {}

    def providers(name: str) -> Provider:
        if name not in built:
            built[name] = build_provider(catalog.get(name), credentials[name], clock=clock)
        return built[name]

    tokens = TokenStore(clients.secretsmanager, stage=stage)
    connections = ConnectionStore(table, clock=clock)
    onetime = OneTimeStore(table, clock=clock)
    events = MemorySink()
    metrics = MemoryRefreshMetrics()
    repository = ConnectionRepository(items=connections, secrets=tokens, clock=clock)
    engine = RefreshEngine(
        repository=repository,
        providers=providers,
        events=events,
        clock=clock,
        lease_seconds=lease_seconds,
        metrics=metrics,
    )
    vending = VendingService(
        repository=repository,
        refresher=engine,
        clock=clock,
        wait_seconds=wait_seconds,
        events=events,
        catalog=catalog,
    )
    connect = ConnectService(
        catalog=catalog,
        onetime=onetime,
        repository=repository,
        providers=providers,
        events=events,
        clock=clock,
        allowed_return_urls=(RETURN_BASE,),
    )
    return Stack(
        clients=clients,
        table=table,
        clock=clock,
        catalog=catalog,
        worksection=worksection,
        tokens=tokens,
        connections=connections,
        onetime=onetime,
        events=events,
        engine=engine,
        vending=vending,
        connect=connect,
        refresh_metrics=metrics,
        _providers=built,
    )
