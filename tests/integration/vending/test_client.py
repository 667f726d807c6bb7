"""The consumer SDK over real HTTP: SigV4-signed requests to a gateway that verifies them with
botocore and runs the vend handler (moto + the Worksection sandbox behind it)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import boto3
import pytest
import requests
from tokenbroker.client import AccessDenied, AccessToken, BrokerAuth, TokenBrokerClient
from tokenbroker.errors import ConnectionNotFound, InvalidInput, NeedsReauthorization, RefreshInProgress
from tokenbroker.keys import ConnectionKey

from tests.integration.vending.gateway import CREDENTIALS, SigningGateway
from tests.integration.vending.stack import RETURN_BASE, Stack
from tests.unit.vending.fake_api import FakeApi

KEY = ConnectionKey("worksection", "acme-1")
TOKENS = "GET /tokens/{provider}/{connection_id}"
REFRESH = "POST /tokens/{provider}/{connection_id}/refresh"


def aws_session(secret: str = CREDENTIALS.secret_access_key) -> boto3.Session:
    return boto3.Session(
        aws_access_key_id=CREDENTIALS.access_key_id, aws_secret_access_key=secret, region_name="us-east-1"
    )


@pytest.fixture
def gateway(vend_handler: ModuleType) -> Iterator[SigningGateway]:
    with SigningGateway(vend_handler) as running:
        yield running


@pytest.fixture
def client(gateway: SigningGateway) -> TokenBrokerClient:
    return TokenBrokerClient(gateway.url, session=aws_session())


# --- tokens --------------------------------------------------------------------------------------


def test_get_token_is_signed_and_then_served_from_the_cache(
    stack: Stack, client: TokenBrokerClient, gateway: SigningGateway
) -> None:
    seeded = stack.seed("acme-1")

    tokens = [client.get_token("worksection", "acme-1") for _ in range(3)]

    assert {t.access_token for t in tokens} == {seeded.token.access_token}
    assert tokens[0].metadata["account_url"] == "https://acme.worksection.com"
    assert tokens[0].generation == seeded.generation
    assert gateway.routes[TOKENS] == 1
    assert seeded.token.access_token not in repr(tokens[0])


def test_unsigned_and_badly_signed_requests_are_refused(
    stack: Stack, gateway: SigningGateway, client: TokenBrokerClient
) -> None:
    stack.seed("acme-1")
    assert requests.get(gateway.url + "/tokens/worksection/acme-1", timeout=5).status_code == 403
    forger = TokenBrokerClient(gateway.url, session=aws_session("not-the-secret"))
    with pytest.raises(AccessDenied):
        forger.get_token("worksection", "acme-1")
    assert gateway.refused == 2 and gateway.routes[TOKENS] == 0


def test_concurrent_get_token_in_one_process_makes_one_request(
    stack: Stack, client: TokenBrokerClient, gateway: SigningGateway
) -> None:
    stack.seed("acme-1")
    start = threading.Barrier(20)

    def get(_: int) -> AccessToken:
        start.wait(timeout=10)
        return client.get_token("worksection", "acme-1")

    with ThreadPoolExecutor(max_workers=20) as pool:
        tokens = list(pool.map(get, range(20), timeout=30))

    assert len({t.access_token for t in tokens}) == 1
    assert gateway.routes[TOKENS] == 1


def test_a_token_close_to_min_ttl_is_not_served_from_the_cache(
    stack: Stack, gateway: SigningGateway, vend_handler: ModuleType
) -> None:
    now = [1000.0]
    client = TokenBrokerClient(gateway.url, session=aws_session(), monotonic=lambda: now[0])
    stack.seed("acme-1", expires_in=3600)
    client.get_token("worksection", "acme-1", min_ttl=60)
    now[0] += 3600 - 60 - 30 - 1  # one second before min_ttl + the 30 s cache margin is reached
    client.get_token("worksection", "acme-1", min_ttl=60)
    assert gateway.routes[TOKENS] == 1
    now[0] += 2
    client.get_token("worksection", "acme-1", min_ttl=60)
    assert gateway.routes[TOKENS] == 2


# --- BrokerAuth: one compare-and-refresh retry on 401 --------------------------------------------


def test_a_401_after_a_rotation_elsewhere_is_retried_once_with_the_newer_token(
    stack: Stack, client: TokenBrokerClient, gateway: SigningGateway
) -> None:
    seeded = stack.seed("acme-1")
    cached = client.get_token("worksection", "acme-1")
    # Another consumer forces a refresh: Worksection kills the token this process has cached.
    rotated = stack.vending.refresh_rejected(KEY, None)
    assert stack.worksection.calls["refresh"] == 1

    response = requests.get(
        stack.worksection.api_url,
        params={"action": "get_projects"},
        auth=BrokerAuth(client, "worksection", "acme-1"),
        timeout=5,
    )

    assert response.status_code == 200
    assert [r.status_code for r in response.history] == [401]
    assert response.request.headers["Authorization"] == f"Bearer {rotated.access_token}"
    assert stack.worksection.calls["api"] == 2
    assert gateway.routes[REFRESH] == 1
    assert stack.worksection.calls["refresh"] == 1  # the stale hash refreshed nothing
    assert cached.access_token == seeded.token.access_token
    assert client.get_token("worksection", "acme-1").access_token == rotated.access_token


def test_a_token_the_api_rejects_while_current_is_refreshed_and_retried(
    stack: Stack, client: TokenBrokerClient, gateway: SigningGateway
) -> None:
    stack.seed("acme-1")
    client.get_token("worksection", "acme-1")
    stack.worksection.expire_access_tokens()

    response = requests.get(
        stack.worksection.api_url,
        params={"action": "get_projects"},
        auth=BrokerAuth(client, "worksection", "acme-1"),
        timeout=5,
    )

    assert response.status_code == 200
    assert stack.worksection.calls["refresh"] == 1
    assert gateway.routes[REFRESH] == 1


def test_a_second_401_is_returned_without_another_retry(
    stack: Stack, client: TokenBrokerClient, gateway: SigningGateway
) -> None:
    stack.seed("acme-1")
    with FakeApi(accepts=lambda token: False) as api:
        response = requests.get(api.url, auth=BrokerAuth(client, "worksection", "acme-1"), timeout=5)
        assert response.status_code == 401
        assert len(api.seen) == 2
        assert api.seen[0].authorization != api.seen[1].authorization
    assert gateway.routes[REFRESH] == 1
    assert stack.worksection.calls["refresh"] == 1


@pytest.mark.parametrize("kind", ["json", "bytes", "file"])
def test_the_retried_request_carries_the_same_body(stack: Stack, client: TokenBrokerClient, kind: str) -> None:
    seeded = stack.seed("acme-1")
    payload = b'{"name": "Project X", "tasks": [1, 2, 3]}'
    cases: dict[str, dict[str, Any]] = {
        "json": {"json": {"name": "Project X", "tasks": [1, 2, 3]}},
        "bytes": {"data": payload},
        "file": {"data": io.BytesIO(payload)},
    }
    options = cases[kind]
    with FakeApi(accepts=lambda token: token != seeded.token.access_token) as api:
        response = requests.post(api.url, auth=BrokerAuth(client, "worksection", "acme-1"), timeout=5, **options)
        assert response.status_code == 200
        assert len(api.seen) == 2
        assert api.seen[0].body == api.seen[1].body != b""


def test_a_body_that_cannot_be_replayed_is_not_retried(stack: Stack, client: TokenBrokerClient) -> None:
    seeded = stack.seed("acme-1")

    def stream() -> Iterator[bytes]:
        yield b"part-1;"
        yield b"part-2"

    with FakeApi(accepts=lambda token: token != seeded.token.access_token) as api:
        response = requests.post(api.url, data=stream(), auth=BrokerAuth(client, "worksection", "acme-1"), timeout=5)
        assert response.status_code == 401
        assert len(api.seen) == 1


def test_refresh_rejected_sends_only_a_hash_and_skips_the_request_when_a_newer_token_is_cached(
    stack: Stack, client: TokenBrokerClient, gateway: SigningGateway
) -> None:
    seeded = stack.seed("acme-1")
    newer = client.refresh_rejected("worksection", "acme-1", seeded.token.access_token)
    assert newer.generation == seeded.generation + 1
    assert gateway.routes[REFRESH] == 1
    # The same stale token rejected again: this process already holds the newer one.
    again = client.refresh_rejected("worksection", "acme-1", seeded.token.access_token)
    assert again.access_token == newer.access_token
    assert gateway.routes[REFRESH] == 1


# --- errors and connections ----------------------------------------------------------------------


def test_broker_errors_become_library_exceptions(stack: Stack, client: TokenBrokerClient) -> None:
    with pytest.raises(ConnectionNotFound):
        client.get_token("worksection", "nobody")
    with pytest.raises(InvalidInput):
        client.get_token("worksection", "acme-1", min_ttl=-1)
    with pytest.raises(InvalidInput):
        client.create_connect_session("worksection", "acme-1", return_to="https://evil.example/")

    stack.seed("acme-1", expires_in=30)
    assert stack.connections.acquire_lease(KEY, "another-worker", 120) is not None
    with pytest.raises(RefreshInProgress) as waiting:
        client.get_token("worksection", "acme-1")
    assert waiting.value.retry_after >= 1

    stack.seed("acme-2", expires_in=30)
    stack.worksection.revoke_refresh_tokens()
    with pytest.raises(NeedsReauthorization):
        client.get_token("worksection", "acme-2")


def test_connections_connect_sessions_and_delete(stack: Stack, client: TokenBrokerClient) -> None:
    for index in range(3):
        stack.seed(f"acme-{index}")

    listed = list(client.connections("worksection", page_size=2))
    one = client.connection("worksection", "acme-1")
    link = client.create_connect_session("worksection", "acme-7", return_to=RETURN_BASE + "done")
    client.delete_connection("worksection", "acme-0")

    assert [c.connection_id for c in listed] == ["acme-0", "acme-1", "acme-2"]
    assert one.status == "active" and one.metadata == {"user_email": "bob@example.com"}
    assert "/connect/" in link.connect_url and link.connect_url not in repr(link)
    assert [c.connection_id for c in client.connections("worksection")] == ["acme-1", "acme-2"]
    with pytest.raises(ConnectionNotFound):
        client.get_token("worksection", "acme-0")


def test_a_caller_supplied_session_cannot_break_the_signature(stack: Stack, gateway: SigningGateway) -> None:
    seeded = stack.seed("acme-1")
    http = requests.Session()
    http.auth = ("someone", "else")  # would replace the SigV4 Authorization header in Session.request
    http.headers["X-Team"] = "billing"
    client = TokenBrokerClient(gateway.url, session=aws_session(), http=http)
    assert client.get_token("worksection", "acme-1").access_token == seeded.token.access_token
    assert gateway.refused == 0
