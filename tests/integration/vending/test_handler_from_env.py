"""The vend function as deployed: collaborators built from the environment (tokenbroker.wiring) on
its first request, on moto, with app credentials read from Secrets Manager."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.clock import SystemClock
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import StoredToken
from tokenbroker.stores import ConnectionStore, TokenStore
from tokenbroker.tokens import TokenSet

from infra.sandboxes import WorksectionSandbox
from tests.integration.vending.stack import WS_EMAIL, WS_PASSWORD
from tests.support.handlers import load_function
from tests.unit.vending.apigw import API_DOMAIN, iam_event, invoke

KEY = ConnectionKey("worksection", "acme-1")


@pytest.fixture
def sandbox() -> Iterator[WorksectionSandbox]:
    with WorksectionSandbox(client_id="ws-prod-client", client_secret="ws-prod-secret-123") as running:
        running.add_user(WS_EMAIL, WS_PASSWORD, accounts=("acme",))
        yield running


@pytest.fixture
def deployed(
    aws_clients: AwsClients,
    table: DynamoTable,
    sandbox: WorksectionSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ModuleType]:
    providers = tmp_path / "providers.yaml"
    providers.write_text(f"providers:\n  worksection: {{base_url: '{sandbox.url}'}}\n", encoding="utf-8")
    monkeypatch.setenv("TABLE_NAME", table.name)
    monkeypatch.setenv("STAGE", "prod")
    monkeypatch.setenv("TOKENBROKER_PROVIDERS_FILE", str(providers))
    monkeypatch.setenv("ALLOWED_RETURN_URLS", "https://app.example.com/")
    for name in ("PUBLIC_BASE_URL", "EVENT_BUS_NAME"):
        monkeypatch.delenv(name, raising=False)
    aws_clients.secretsmanager.create_secret(
        Name="tokenbroker/prod/apps/worksection",
        SecretString=json.dumps({"client_id": "ws-prod-client", "client_secret": "ws-prod-secret-123"}),
    )
    handler = load_function("vend")
    handler.use_services(None)
    yield handler
    handler.use_services(None)


def seed(aws_clients: AwsClients, table: DynamoTable, sandbox: WorksectionSandbox, *, expires_in: float) -> str:
    issued = sandbox.issue_tokens(WS_EMAIL)
    clock = SystemClock()
    now = clock.now()
    token = TokenSet(
        access_token=issued["access_token"],
        token_type="bearer",
        expires_at=int(now + expires_in),
        obtained_at=int(now + expires_in - 86_400),
        refresh_token=issued["refresh_token"],
        extra={"account_url": issued["account_url"]},
    )
    connection = ConnectionStore(table, clock=clock).save_connected(
        KEY, expires_at=token.expires_at, refresh_expires_at=None, next_refresh_at=token.expires_at - 300
    )
    TokenStore(aws_clients.secretsmanager, stage="prod").put(KEY, StoredToken(token, connection.generation))
    return token.access_token


def test_a_cold_handler_vends_from_the_stage_secrets(
    deployed: ModuleType, aws_clients: AwsClients, table: DynamoTable, sandbox: WorksectionSandbox
) -> None:
    access_token = seed(aws_clients, table, sandbox, expires_in=3600)
    answer = invoke(deployed, iam_event("GET", "/tokens/worksection/acme-1"))
    assert answer.status == 200 and answer.json["access_token"] == access_token


def test_a_cold_handler_refreshes_with_the_app_credentials_from_secrets_manager(
    deployed: ModuleType, aws_clients: AwsClients, table: DynamoTable, sandbox: WorksectionSandbox
) -> None:
    access_token = seed(aws_clients, table, sandbox, expires_in=10)
    answer = invoke(deployed, iam_event("GET", "/tokens/worksection/acme-1"))
    assert answer.status == 200
    assert answer.json["access_token"] != access_token
    assert sandbox.refreshes == 1


def test_a_cold_handler_links_connect_sessions_to_the_api_domain(deployed: ModuleType) -> None:
    answer = invoke(
        deployed,
        iam_event(
            "POST",
            "/connect-sessions",
            json_body={"provider": "worksection", "connection_id": "team-1", "return_to": "https://app.example.com/x"},
        ),
    )
    assert answer.status == 201
    assert answer.json["connect_url"].startswith(f"https://{API_DOMAIN}/connect/")
