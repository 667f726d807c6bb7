"""functions/vend/app.py: every route and the direct invoke, through real payload-2.0 events, with
in-memory collaborators (tests/integration/vending runs the same handler on moto and sandboxes)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tokenbroker.clock import ManualClock
from tokenbroker.errors import (
    InvalidInput,
    ProviderError,
    ProviderErrorKind,
)
from tokenbroker.events import EventType, MemorySink
from tokenbroker.models import ConnectionStatus
from tokenbroker.repository import ConnectionRepository
from tokenbroker.vending import VendingService

from tests.support.handlers import load_function
from tests.unit.vending.apigw import API_DOMAIN, Answer, LambdaContext, iam_event, invoke
from tests.unit.vending.fakes import (
    KEY,
    NOW,
    FakeCatalog,
    FakeConnections,
    FakeRefresher,
    FakeTokens,
    Result,
    connection,
    newer,
    stored,
)

TOKEN_PATH = "/tokens/worksection/acme-1"


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class Link:
    connect_url: str
    expires_at: int
    session_id: str = "s3ss10n"


@dataclass
class FakeConnect:
    calls: list[dict[str, Any]] = field(default_factory=list)

    def create_session(
        self,
        provider: str,
        connection_id: str,
        *,
        return_to: str | None = None,
        scopes: Sequence[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        end_user_id: str | None = None,
        confirm: bool = False,
        request_base_url: str | None = None,
    ) -> Link:
        if return_to is not None and not return_to.startswith("https://app.example.com/"):
            raise InvalidInput("return_to is not an allowed return URL", field="return_to")
        self.calls.append(
            {
                "provider": provider,
                "connection_id": connection_id,
                "return_to": return_to,
                "scopes": scopes,
                "metadata": metadata,
                "end_user_id": end_user_id,
                "confirm": confirm,
                "request_base_url": request_base_url,
            }
        )
        return Link(f"{request_base_url or 'https://connect.example'}/connect/s3ss10n", int(NOW) + 900)


@dataclass
class World:
    handler: ModuleType
    tokens: FakeTokens
    connections: FakeConnections
    refresher: FakeRefresher
    connect: FakeConnect
    events: MemorySink

    def call(self, method: str, path: str, **options: Any) -> Answer:
        return invoke(self.handler, iam_event(method, path, **options))

    def direct(self, event: dict[str, Any]) -> Any:
        return self.handler.lambda_handler(event, LambdaContext())


@pytest.fixture
def handler() -> Iterator[ModuleType]:
    module = load_function("vend")
    yield module
    module.use_services(None)


def world(
    handler: ModuleType,
    tokens: FakeTokens,
    refresher: FakeRefresher | None = None,
    connections: FakeConnections | None = None,
) -> World:
    refresher = refresher or FakeRefresher(Result("refreshed"))
    connections = connections or FakeConnections(connection())
    events = MemorySink()
    connect = FakeConnect()
    vending = VendingService(
        repository=ConnectionRepository(items=connections, secrets=tokens, clock=ManualClock(NOW)),
        refresher=refresher,
        clock=ManualClock(NOW),
        wait_seconds=1,
        events=events,
        catalog=FakeCatalog("worksection", "workly"),
    )
    handler.use_services(handler.Services(vending=vending, connect=connect))
    return World(handler, tokens, connections, refresher, connect, events)


def refreshing_to(new: Any) -> FakeRefresher:
    return FakeRefresher(Result("refreshed", stored=new))


# --- GET /tokens/{provider}/{connection_id} ------------------------------------------------------


def test_vend_answers_the_token_and_never_a_refresh_token(handler: ModuleType) -> None:
    w = world(handler, FakeTokens(stored(expires_in=3600)))

    answer = w.call("GET", TOKEN_PATH)

    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json == {
        "access_token": "access-token-0001",
        "token_type": "Bearer",
        "expires_at": int(NOW + 3600),
        "expires_in": 3600,
        "scopes": ["projects_read", "tasks_read"],
        "generation": 3,
        "metadata": {"account_url": "https://acme.worksection.com", "user_email": "ann@example.com"},
    }
    assert "refresh-token-0001" not in answer.body
    assert w.tokens.gets == 1 and w.refresher.calls == []


def test_vend_with_min_ttl_refreshes_an_expiring_token(handler: ModuleType) -> None:
    old = stored(expires_in=100)
    refresher = FakeRefresher(Result("refreshed", stored=newer(old, "access-token-0002")))
    w = world(handler, FakeTokens(old), refresher)

    assert w.call("GET", TOKEN_PATH, query={"min_ttl": "60"}).json["access_token"] == "access-token-0001"
    answer = w.call("GET", TOKEN_PATH, query={"min_ttl": "600"})

    assert answer.status == 200 and answer.json["access_token"] == "access-token-0002"
    assert refresher.calls == [(KEY, "vend")]


def test_the_default_min_ttl_is_60_seconds(handler: ModuleType) -> None:
    old = stored(expires_in=59)
    refresher = FakeRefresher(Result("refreshed", stored=newer(old, "access-token-0002")))
    w = world(handler, FakeTokens(old), refresher)
    assert w.call("GET", TOKEN_PATH).json["access_token"] == "access-token-0002"


@pytest.mark.parametrize("min_ttl", ["-1", "86401", "abc", "1.5", "60,61", ""])
def test_a_bad_min_ttl_is_400(handler: ModuleType, min_ttl: str) -> None:
    w = world(handler, FakeTokens(stored()))
    answer = w.call("GET", TOKEN_PATH, query={"min_ttl": min_ttl})
    assert answer.status == 400
    assert answer.json["error"] == "bad_request" and "min_ttl" in answer.json["message"]
    assert w.tokens.gets == 0


@pytest.mark.parametrize(
    "path",
    [
        "/tokens/Worksection/acme-1",
        "/tokens/worksection/acme%201",
        "/tokens/worksection/" + "a" * 129,
        "/tokens/worksection/..",  # would be tokenbroker/<stage>/worksection/.. as a secret name
        "/tokens/worksection/.",
        "/connections/worksection/..",
    ],
)
def test_a_bad_provider_or_connection_id_is_400_before_any_aws_call(handler: ModuleType, path: str) -> None:
    w = world(handler, FakeTokens(stored()))
    answer = w.call("GET", path)
    assert answer.status == 400 and answer.json["error"] == "bad_request"
    assert w.tokens.gets == 0


def test_an_unknown_connection_is_404(handler: ModuleType) -> None:
    answer = world(handler, FakeTokens()).call("GET", TOKEN_PATH)
    assert answer.status == 404 and answer.json["error"] == "not_found"


def test_a_provider_outside_the_catalog_is_404(handler: ModuleType) -> None:
    answer = world(handler, FakeTokens(stored())).call("GET", "/tokens/nosuchprovider/acme-1")
    assert answer.status == 404 and answer.json["error"] == "unknown_provider"


def test_needs_reauth_is_409_with_a_connect_session_hint(handler: ModuleType) -> None:
    answer = world(handler, FakeTokens(stored(status=ConnectionStatus.NEEDS_REAUTH))).call("GET", TOKEN_PATH)
    assert answer.status == 409
    assert answer.json["error"] == "needs_reauth"
    assert "/connect-sessions" in answer.json["message"]


def test_a_refresh_held_by_another_worker_is_503_refresh_in_progress_with_retry_after(handler: ModuleType) -> None:
    w = world(handler, FakeTokens(stored(expires_in=5)), FakeRefresher(Result("contended", retry_after=2.2)))
    answer = w.call("GET", TOKEN_PATH)
    assert answer.status == 503
    assert answer.json["error"] == "refresh_in_progress"
    assert answer.headers["retry-after"] == "3"
    assert answer.json["retry_after"] == 3


def test_a_provider_outage_is_503_provider_unavailable_with_retry_after(handler: ModuleType) -> None:
    error = ProviderError(ProviderErrorKind.TRANSIENT, "HTTP 502", provider="worksection", retry_after=30)
    w = world(handler, FakeTokens(stored(expires_in=5)), FakeRefresher(Result("transient_failure", error=error)))
    answer = w.call("GET", TOKEN_PATH)
    assert answer.status == 503
    assert answer.json["error"] == "provider_unavailable"
    assert answer.headers["retry-after"] == "30"


def test_an_unexpected_error_is_a_bare_500(handler: ModuleType) -> None:
    class Exploding(FakeTokens):
        def get(self, key: Any) -> Any:
            raise RuntimeError("boom with access-token-0001 inside")

    answer = world(handler, Exploding()).call("GET", TOKEN_PATH)
    assert answer.status == 500
    assert answer.json == {"error": "internal_error", "message": "internal error"}


def _throttled() -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        "GetSecretValue",
    )


class _Throttled(FakeTokens):
    def get(self, key: Any) -> Any:
        raise _throttled()


def test_aws_throttling_after_retries_is_503_service_unavailable_with_retry_after(handler: ModuleType) -> None:
    answer = world(handler, _Throttled()).call("GET", TOKEN_PATH)
    assert answer.status == 503
    assert answer.json["error"] == "service_unavailable"
    assert answer.headers["retry-after"] == "1"


def test_direct_invoke_maps_aws_throttling_to_503_too(handler: ModuleType) -> None:
    answer = world(handler, _Throttled()).direct(
        {"action": "vend", "provider": "worksection", "connection_id": "acme-1"}
    )
    assert answer["error"] == "service_unavailable" and answer["retry_after"] == 1


def test_a_request_without_an_iam_caller_is_403(handler: ModuleType) -> None:
    w = world(handler, FakeTokens(stored()))
    answer = w.call("GET", TOKEN_PATH, authorizer=None)
    assert answer.status == 403 and answer.json["error"] == "forbidden"
    assert w.tokens.gets == 0
    assert w.call("GET", TOKEN_PATH, authorizer={"iam": {"userArn": None}}).status == 403


def test_an_unknown_route_is_a_json_404(handler: ModuleType) -> None:
    answer = world(handler, FakeTokens(stored())).call("GET", "/nope")
    assert answer.status == 404 and answer.json["error"] == "not_found"


# --- POST /tokens/{provider}/{connection_id}/refresh ---------------------------------------------


def test_compare_and_refresh_with_a_stale_hash_returns_the_current_token(handler: ModuleType) -> None:
    current = stored("access-token-0002", generation=9)
    w = world(handler, FakeTokens(current))
    answer = w.call("POST", TOKEN_PATH + "/refresh", json_body={"rejected_token_sha256": sha("access-token-0001")})
    assert answer.status == 200 and answer.json["access_token"] == "access-token-0002"
    assert w.refresher.calls == []


def test_compare_and_refresh_with_the_current_hash_refreshes(handler: ModuleType) -> None:
    current = stored("access-token-0001")
    w = world(
        handler, FakeTokens(current), FakeRefresher(Result("refreshed", stored=newer(current, "access-token-0002")))
    )
    answer = w.call(
        "POST",
        TOKEN_PATH + "/refresh",
        json_body={"rejected_token_sha256": sha("access-token-0001")},
        base64_body=True,
    )
    assert answer.status == 200 and answer.json["access_token"] == "access-token-0002"
    assert w.refresher.calls == [(KEY, "vend")]


@pytest.mark.parametrize("body", [None, "", "{}"])
def test_compare_and_refresh_without_a_hash_forces_a_refresh(handler: ModuleType, body: str | None) -> None:
    current = stored("access-token-0001")
    w = world(
        handler, FakeTokens(current), FakeRefresher(Result("refreshed", stored=newer(current, "access-token-0002")))
    )
    answer = w.call("POST", TOKEN_PATH + "/refresh", body=body)
    assert answer.status == 200 and answer.json["access_token"] == "access-token-0002"


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        json.dumps({"rejected_token_sha256": "abc"}),
        json.dumps({"rejected_token": "access-token-0001"}),
    ],
)
def test_a_bad_refresh_body_is_400_and_never_echoes_a_token(handler: ModuleType, body: str) -> None:
    w = world(handler, FakeTokens(stored()))
    answer = w.call("POST", TOKEN_PATH + "/refresh", body=body)
    assert answer.status == 400 and answer.json["error"] == "bad_request"
    assert "access-token-0001" not in answer.body
    assert w.refresher.calls == []


# --- connections ---------------------------------------------------------------------------------


def test_get_connection_shows_status_and_metadata(handler: ModuleType) -> None:
    answer = world(handler, FakeTokens(stored())).call("GET", "/connections/worksection/acme-1")
    assert answer.status == 200
    assert answer.json["status"] == "active" and answer.json["connection_id"] == "acme-1"
    assert "access_token" not in answer.body and "refresh_token" not in answer.body


def test_get_connection_of_an_unknown_connection_is_404(handler: ModuleType) -> None:
    answer = world(handler, FakeTokens(), connections=FakeConnections()).call("GET", "/connections/worksection/x")
    assert answer.status == 404


def test_list_connections_passes_limit_and_cursor(handler: ModuleType) -> None:
    w = world(handler, FakeTokens(), connections=FakeConnections(connection()))
    answer = w.call("GET", "/connections", query={"provider": "worksection", "limit": "10", "cursor": "abc"})
    assert answer.status == 200
    assert [c["connection_id"] for c in answer.json["connections"]] == ["acme-1"]
    assert answer.json["cursor"] is None
    assert w.connections.list_calls == [("worksection", 10, "abc")]


@pytest.mark.parametrize(
    "query",
    [{}, {"provider": "Bad!"}, {"provider": "worksection", "limit": "0"}, {"provider": "worksection", "limit": "101"}],
)
def test_list_connections_rejects_bad_queries(handler: ModuleType, query: dict[str, str]) -> None:
    answer = world(handler, FakeTokens()).call("GET", "/connections", query=query)
    assert answer.status == 400


def test_delete_connection_is_204_and_publishes_connection_deleted(handler: ModuleType) -> None:
    w = world(handler, FakeTokens(stored()))
    answer = w.call("DELETE", "/connections/worksection/acme-1")
    assert answer.status == 204 and answer.body == ""
    assert w.tokens.deleted == [KEY]
    assert len(w.events.of_type(EventType.CONNECTION_DELETED)) == 1
    assert w.call("DELETE", "/connections/worksection/acme-1").status == 404


# --- POST /connect-sessions ----------------------------------------------------------------------


def test_create_connect_session_is_201_with_the_link(handler: ModuleType) -> None:
    w = world(handler, FakeTokens())
    body = {
        "provider": "worksection",
        "connection_id": "acme-1",
        "return_to": "https://app.example.com/done",
        "scopes": ["projects_read"],
        "metadata": {"tenant": "acme"},
    }
    answer = w.call("POST", "/connect-sessions", json_body=body)
    assert answer.status == 201
    assert answer.json == {
        "connect_url": f"https://{API_DOMAIN}/connect/s3ss10n",
        "expires_at": int(NOW) + 900,
        "session_id": "s3ss10n",
    }
    assert w.connect.calls == [
        {**body, "end_user_id": None, "confirm": False, "request_base_url": f"https://{API_DOMAIN}"}
    ]


def test_create_connect_session_passes_confirm_mode_on(handler: ModuleType) -> None:
    w = world(handler, FakeTokens())
    body = {"provider": "worksection", "connection_id": "acme-1", "end_user_id": "user-42", "confirm": True}
    assert w.call("POST", "/connect-sessions", json_body=body).status == 201
    assert (w.connect.calls[0]["end_user_id"], w.connect.calls[0]["confirm"]) == ("user-42", True)


@pytest.mark.parametrize(
    "body",
    [
        {"connection_id": "acme-1"},
        {"provider": "worksection"},
        {"provider": "worksection", "connection_id": "a b"},
        {"provider": "worksection", "connection_id": ".."},
        {"provider": "worksection", "connection_id": "."},
        {"provider": "worksection", "connection_id": "acme-1", "scopes": "projects_read"},
        {"provider": "worksection", "connection_id": "acme-1", "metadata": ["x"]},
        {"provider": "worksection", "connection_id": "acme-1", "return_to": 5},
        {"provider": "worksection", "connection_id": "acme-1", "return_to": "https://evil.example/"},
        {"provider": "worksection", "connection_id": "acme-1", "surprise": True},
        {"provider": "worksection", "connection_id": "acme-1", "confirm": "yes"},
        {"provider": "worksection", "connection_id": "acme-1", "end_user_id": 42},
        {"provider": "worksection", "connection_id": "acme-1", "end_user_id": "u" * 257},
    ],
)
def test_create_connect_session_rejects_bad_bodies(handler: ModuleType, body: dict[str, Any]) -> None:
    answer = world(handler, FakeTokens()).call("POST", "/connect-sessions", json_body=body)
    assert answer.status == 400 and answer.json["error"] == "bad_request"


# --- direct invoke -------------------------------------------------------------------------------


def test_direct_invoke_vend_answers_the_route_body(handler: ModuleType) -> None:
    w = world(handler, FakeTokens(stored()))
    via_route = w.call("GET", TOKEN_PATH, query={"min_ttl": "30"}).json
    direct = w.direct({"action": "vend", "provider": "worksection", "connection_id": "acme-1", "min_ttl": 30})
    assert direct == via_route


def test_direct_invoke_refresh_with_a_hash(handler: ModuleType) -> None:
    current = stored("access-token-0002")
    w = world(handler, FakeTokens(current))
    answer = w.direct(
        {
            "action": "refresh",
            "provider": "worksection",
            "connection_id": "acme-1",
            "rejected_token_sha256": sha("access-token-0001"),
        }
    )
    assert answer["access_token"] == "access-token-0002"


def test_direct_invoke_connections(handler: ModuleType) -> None:
    w = world(handler, FakeTokens(stored()))
    got = w.direct({"action": "get_connection", "provider": "worksection", "connection_id": "acme-1"})
    assert got["status"] == "active"
    listed = w.direct({"action": "list_connections", "provider": "worksection", "limit": 5})
    assert [c["connection_id"] for c in listed["connections"]] == ["acme-1"]
    deleted = w.direct({"action": "delete_connection", "provider": "worksection", "connection_id": "acme-1"})
    assert deleted == {"deleted": True, "provider": "worksection", "connection_id": "acme-1"}


def test_direct_invoke_create_connect_session(handler: ModuleType) -> None:
    w = world(handler, FakeTokens())
    answer = w.direct({"action": "create_connect_session", "provider": "workly", "connection_id": "w-1"})
    assert answer["connect_url"].endswith("/connect/s3ss10n")
    assert w.connect.calls[0]["request_base_url"] is None


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"action": "vend", "provider": "worksection", "connection_id": "acme-1", "min_ttl": -1}, "bad_request"),
        ({"action": "vend", "provider": "worksection", "connection_id": "nope"}, "not_found"),
        ({"action": "explode"}, "bad_request"),
        ({}, "bad_request"),
        ({"action": "vend", "provider": "worksection", "connection_id": "acme-1", "extra": 1}, "bad_request"),
    ],
)
def test_direct_invoke_errors_are_error_and_message(handler: ModuleType, event: dict[str, Any], code: str) -> None:
    tokens = FakeTokens(stored())

    class OnlyAcme(FakeTokens):
        def get(self, key: Any) -> Any:
            if key.connection_id != "acme-1":
                return FakeTokens().get(key)
            return tokens.get(key)

    w = world(handler, OnlyAcme())
    answer = w.direct(event)
    assert answer["error"] == code and isinstance(answer["message"], str)


def test_direct_invoke_503_carries_retry_after(handler: ModuleType) -> None:
    w = world(handler, FakeTokens(stored(expires_in=5)), FakeRefresher(Result("contended")))
    answer = w.direct({"action": "vend", "provider": "worksection", "connection_id": "acme-1"})
    assert answer["error"] == "refresh_in_progress" and answer["retry_after"] >= 1


def test_an_api_gateway_event_is_never_mistaken_for_a_direct_invoke(handler: ModuleType) -> None:
    assert handler.is_direct_invoke({"action": "vend"}) is True
    assert handler.is_direct_invoke(iam_event("GET", TOKEN_PATH)) is False
    assert handler.is_direct_invoke({"routeKey": "$default", "action": "vend"}) is False
