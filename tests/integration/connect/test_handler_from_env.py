"""The handler as deployed: collaborators built from the environment (tokenbroker.wiring), on moto."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from tokenbroker.aws import AwsClients, DynamoTable
from tokenbroker.errors import InvalidInput

from tests.integration.connect.harness import LambdaContext, api_event
from tests.support.handlers import load_function


@pytest.fixture
def deployed(aws_clients: AwsClients, table: DynamoTable, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setenv("TABLE_NAME", table.name)
    monkeypatch.setenv("STAGE", "prod")
    monkeypatch.setenv("ALLOWED_RETURN_URLS", "https://app.example.com/done, https://admin.example.com/")
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    monkeypatch.delenv("EVENT_BUS_NAME", raising=False)
    monkeypatch.delenv("TOKENBROKER_PROVIDERS_FILE", raising=False)
    aws_clients.secretsmanager.create_secret(
        Name="tokenbroker/prod/apps/worksection",
        SecretString=json.dumps({"client_id": "ws-prod-client", "client_secret": "ws-prod-secret-123"}),
    )
    handler = load_function("callback")
    handler.use_service(None)
    return handler


def call(handler: object, event: dict[str, object]) -> dict[str, object]:
    return handler.lambda_handler(event, LambdaContext())  # type: ignore[attr-defined,no-any-return]


def test_a_cold_handler_builds_its_service_from_the_environment(deployed: object) -> None:
    domain = "abc123.execute-api.eu-west-1.amazonaws.com"
    service = deployed.get_service()  # type: ignore[attr-defined]
    link = service.create_session(
        "worksection", "team-1", return_to="https://app.example.com/done", request_base_url=f"https://{domain}"
    )
    assert link.connect_url.startswith(f"https://{domain}/connect/")

    answer = call(deployed, api_event("GET", urlsplit(link.connect_url).path, domain=domain))
    assert answer["statusCode"] == 302
    location = answer["headers"]["Location"]  # type: ignore[index]
    assert location.startswith("https://worksection.com/oauth2/authorize?")
    params = parse_qs(urlsplit(location).query)
    assert params["client_id"] == ["ws-prod-client"]  # from Secrets Manager, not the catalog
    assert params["redirect_uri"] == [f"https://{domain}/callback/worksection"]
    assert "ws-prod-secret-123" not in location


def test_a_cold_handler_answers_unknown_pages_with_html(deployed: object) -> None:
    answer = call(deployed, api_event("GET", "/nowhere"))
    assert answer["statusCode"] == 404
    assert answer["headers"]["Content-Type"].startswith("text/html")  # type: ignore[index]
    assert answer["headers"]["X-Frame-Options"] == "DENY"  # type: ignore[index]
    session = call(deployed, api_event("GET", "/connect/" + "Z" * 43))
    assert session["statusCode"] == 404
    assert "connect link cannot be used" in str(session["body"])


def test_return_to_outside_the_stacks_allow_list_is_refused(deployed: object) -> None:
    service = deployed.get_service()  # type: ignore[attr-defined]
    with pytest.raises(InvalidInput):
        service.create_session(
            "workly", "a", return_to="https://evil.example/done", request_base_url="https://x.example"
        )
    assert service.create_session(
        "workly", "a", return_to="https://admin.example.com/x", request_base_url="https://x.example"
    ).connect_url.startswith("https://x.example/connect/")


def test_a_cold_handler_names_the_application_from_the_environment(
    deployed: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_NAME", "Acme CRM")
    monkeypatch.setenv("APP_LOGO_URL", "https://cdn.acme.example/logo.png")
    monkeypatch.setenv("APP_ACCENT_COLOR", "#2e7d32")
    answer = call(deployed, api_event("GET", "/connect/" + "Z" * 43))
    body = str(answer["body"])
    assert answer["statusCode"] == 404
    assert "Go back to Acme CRM and start connecting again." in body
    assert '<img src="https://cdn.acme.example/logo.png" alt="Acme CRM">' in body
    assert "img-src https://cdn.acme.example;" in answer["headers"]["Content-Security-Policy"]  # type: ignore[index]
    assert "#2e7d32" in body


def test_invalid_branding_falls_back_to_unbranded_pages_instead_of_failing(
    deployed: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_NAME", "Acme CRM")
    monkeypatch.setenv("APP_LOGO_URL", "http://cdn.acme.example/logo.png")  # not https
    answer = call(deployed, api_event("GET", "/nowhere"))
    assert answer["statusCode"] == 404
    assert "Go back to the application" in str(answer["body"])
    assert "img-src" not in answer["headers"]["Content-Security-Policy"]  # type: ignore[index]
