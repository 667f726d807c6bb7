"""The connect flow end to end: the callback handler on moto, both provider sandboxes on 127.0.0.1.

The service is the one ``Runtime`` builds for the callback function, with the sandboxes' app
credentials stored where an operator stores them (``tokenbroker/<stage>/apps/<provider>``). One
ManualClock drives the stores, the providers and the sandboxes, so expiry is tested by advancing
it, never by sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import ManualClock
from tokenbroker.events import MemorySink
from tokenbroker.observability import logger
from tokenbroker.providers import Catalog
from tokenbroker.settings import Settings
from tokenbroker.wiring import Runtime

from infra.localstack.resources import seed_app_secret
from infra.sandboxes import WorklySandbox, WorksectionSandbox
from tests.integration.connect.harness import PUBLIC_BASE_URL, RETURN_BASE, Harness, capture_logs
from tests.support.handlers import load_function

WORKLY_EMAIL = "ann@example.com"
WORKLY_PASSWORD = "correct-horse-battery"
WS_EMAIL = "bob@example.com"
WS_PASSWORD = "bob-password-1"


@pytest.fixture
def workly(clock: ManualClock) -> Iterator[WorklySandbox]:
    with WorklySandbox(clock=clock) as sandbox:
        sandbox.add_user(WORKLY_EMAIL, WORKLY_PASSWORD, full_name="Ann Example")
        yield sandbox


@pytest.fixture
def worksection(clock: ManualClock) -> Iterator[WorksectionSandbox]:
    with WorksectionSandbox(clock=clock) as sandbox:
        sandbox.add_user(WS_EMAIL, WS_PASSWORD, accounts=("acme",), first_name="Bob", last_name="Builder")
        yield sandbox


@pytest.fixture
def catalog(tmp_path: Path, workly: WorklySandbox, worksection: WorksectionSandbox) -> Catalog:
    extra = tmp_path / "providers.yaml"
    extra.write_text(
        "providers:\n"
        f"  workly: {{base_url: '{workly.base_url}'}}\n"
        f"  worksection: {{base_url: '{worksection.url}'}}\n"
        # A PKCE provider that is never called over HTTP: only its authorize URL is built.
        "  acme:\n"
        "    auth_mode: authorization_code\n"
        "    authorize_url: https://login.acme.example/authorize\n"
        "    token_url: https://login.acme.example/token\n"
        "    pkce: true\n"
        "    default_scopes: [openid]\n",
        encoding="utf-8",
    )
    return Catalog.load(extra, environ={})


@pytest.fixture
def harness(  # noqa: PLR0917 - pytest injects fixtures by name
    aws_clients: AwsClients,
    table: DynamoTable,
    clock: ManualClock,
    catalog: Catalog,
    workly: WorklySandbox,
    worksection: WorksectionSandbox,
) -> Iterator[Harness]:
    credentials = {
        "workly": (workly.client_id, workly.client_secret),
        "worksection": (worksection.client_id, worksection.client_secret),
        "acme": ("acme-client", "acme-client-secret"),
    }
    for provider, (client_id, client_secret) in credentials.items():
        seed_app_secret(
            aws_clients.secretsmanager,
            stage="test",
            provider=provider,
            client_id=client_id,
            client_secret=client_secret,
        )
    settings = Settings(
        table_name=table.name,
        stage="test",
        allowed_return_urls=(RETURN_BASE, "http://localhost:8080/"),
        public_base_url=PUBLIC_BASE_URL,
    )
    events = MemorySink()
    runtime = Runtime(settings, aws=aws_clients, clock=clock, events=events, catalog=catalog)
    service = runtime.connect
    handler = load_function("callback")
    handler.use_service(service)
    stream, log_handler = capture_logs(logger)
    try:
        yield Harness(
            handler=handler,
            service=service,
            clock=clock,
            tokens=runtime.tokens,
            connections=runtime.connections,
            onetime=runtime.onetime,
            events=events,
            workly=workly,
            worksection=worksection,
            log=stream,
        )
    finally:
        logger.removeHandler(log_handler)
        handler.use_service(None)
