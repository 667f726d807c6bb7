"""Both transports of the vend function serve the one operation table and answer alike.

For every operation of ``tokenbroker.api.operations.OPERATIONS`` the same inputs go once through
an API Gateway event (path, query, body placed where the table says) and once as a direct invoke,
each against a fresh copy of the same world: same status, same body. The one documented
difference: a delete over HTTP is 204 without a body, the direct invoke says what it deleted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest
from tokenbroker.api.operations import OPERATIONS, Operation
from tokenbroker.clock import ManualClock
from tokenbroker.errors import ConnectSessionExpired
from tokenbroker.models import Connection
from tokenbroker.repository import ConnectionRepository
from tokenbroker.vending import VendingService

from tests.support.handlers import load_function
from tests.template.sam import load, resources_of
from tests.unit.vending.apigw import LambdaContext, iam_event, invoke
from tests.unit.vending.fakes import (
    NOW,
    FakeCatalog,
    FakeConnections,
    FakeRefresher,
    FakeTokens,
    Result,
    connection,
    stored,
)

# One valid set of inputs per action: a new operation without one fails test_every_operation_has_a_sample.
SAMPLES: dict[str, dict[str, Any]] = {
    "vend": {"provider": "worksection", "connection_id": "acme-1", "min_ttl": 30},
    "refresh": {"provider": "worksection", "connection_id": "acme-1", "rejected_token_sha256": "0" * 64},
    "get_connection": {"provider": "worksection", "connection_id": "acme-1"},
    "list_connections": {"provider": "worksection", "limit": 5},
    "delete_connection": {"provider": "worksection", "connection_id": "acme-1"},
    "create_connect_session": {
        "provider": "workly",
        "connection_id": "w-1",
        "return_to": "https://app.example.com/done",
        "scopes": ["a"],
        "metadata": {"team": "x"},
        "end_user_id": "user-ann",
        "confirm": True,
    },
    "confirm_connect_session": {"session_id": "s3ss10n-0000000000", "end_user_id": "user-ann"},
}
# Inputs each operation refuses (a 400 or a 404 from the service), the same way on both transports.
REFUSALS: dict[str, list[dict[str, Any]]] = {
    "vend": [{"provider": "Not-A-Name"}, {"connection_id": "missing"}, {"min_ttl": 86_401}],
    "refresh": [{"rejected_token_sha256": "ABC"}, {"provider": "unknown"}],
    "get_connection": [{"connection_id": "missing"}, {"connection_id": ".."}],
    "list_connections": [{"limit": 0}, {"cursor": "c" * 2049}, {"provider": "unknown"}],
    "delete_connection": [{"provider": "unknown"}, {"connection_id": ".."}],
    "create_connect_session": [{"provider": "NOPE"}, {"confirm": "yes"}, {"end_user_id": ""}],
    "confirm_connect_session": [{"end_user_id": "u" * 257}, {"session_id": "expired-0000000000"}],
}


@dataclass(frozen=True)
class Link:
    connect_url: str
    expires_at: int
    session_id: str


@dataclass
class FakeConnect:
    base_urls: list[str | None] = field(default_factory=list)

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
        self.base_urls.append(request_base_url)
        return Link(f"https://connect.example/connect/{provider}-{connection_id}", int(NOW) + 900, "s3ss10n")

    def confirm(self, session_id: str, end_user_id: str) -> Connection:
        if session_id.startswith("expired"):
            raise ConnectSessionExpired("the connect session expired")
        return connection()


class OnlyAcme(FakeTokens):
    def get(self, key: Any) -> Any:
        return super().get(key) if key.connection_id == "acme-1" else FakeTokens().get(key)


@pytest.fixture
def handler() -> Iterator[ModuleType]:
    module = load_function("vend")
    yield module
    module.use_services(None)


def fresh_world(handler: ModuleType) -> FakeConnect:
    """The same state for each transport: a request may change it (delete, refresh)."""
    connect = FakeConnect()
    vending = VendingService(
        repository=ConnectionRepository(
            items=FakeConnections(connection()), secrets=OnlyAcme(stored(expires_in=3600)), clock=ManualClock(NOW)
        ),
        refresher=FakeRefresher(Result("refreshed", stored=stored("access-token-0002", generation=4))),
        clock=ManualClock(NOW),
        wait_seconds=0,
        catalog=FakeCatalog("worksection", "workly"),
    )
    handler.use_services(handler.Services(vending=vending, connect=connect))
    return connect


def over_http(handler: ModuleType, operation: Operation, inputs: Mapping[str, Any]) -> tuple[int, Any]:
    """The inputs where the table says they travel: path segments, query string, JSON body."""
    path = re.sub(r"\{(\w+)\}", lambda m: str(inputs[m.group(1)]), operation.path)
    query = {q.name: str(inputs[q.name]) for q in operation.query if q.name in inputs}
    body = {name: inputs[name] for name in operation.body_fields if name in inputs}
    answer = invoke(
        handler,
        iam_event(operation.method, path, query=query or None, json_body=body if operation.body else None),
    )
    return answer.status, (json.loads(answer.body) if answer.body else None)


def directly(handler: ModuleType, operation: Operation, inputs: Mapping[str, Any]) -> tuple[int, Any]:
    status, answer = handler.handle_direct({"action": operation.action, **inputs})
    return int(status), answer


def both(handler: ModuleType, operation: Operation, inputs: Mapping[str, Any]) -> tuple[tuple[int, Any], ...]:
    fresh_world(handler)
    http = over_http(handler, operation, inputs)
    fresh_world(handler)
    return http, directly(handler, operation, inputs)


def test_every_operation_has_a_sample_and_refusals() -> None:
    assert set(SAMPLES) == set(REFUSALS) == {operation.action for operation in OPERATIONS}


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.action)
def test_both_transports_answer_alike(handler: ModuleType, operation: Operation) -> None:
    (http_status, http_body), (direct_status, direct_body) = both(handler, operation, SAMPLES[operation.action])

    assert http_status == direct_status == operation.status
    if operation.answer is None:  # 204: HTTP has no body to send
        assert http_body is None
        assert direct_body == {"deleted": True, "provider": "worksection", "connection_id": "acme-1"}
    else:
        assert http_body == direct_body
        assert http_body  # a real answer, not two empty ones


@pytest.mark.parametrize(
    ("operation", "change"),
    [(operation, change) for operation in OPERATIONS for change in REFUSALS[operation.action]],
    ids=lambda value: value.action if isinstance(value, Operation) else "-".join(value),
)
def test_both_transports_refuse_alike(handler: ModuleType, operation: Operation, change: dict[str, Any]) -> None:
    http, direct = both(handler, operation, {**SAMPLES[operation.action], **change})

    assert http == direct
    assert http[0] in (400, 404, 410) and set(http[1]) == {"error", "message"}


def test_only_http_knows_where_the_request_came_in(handler: ModuleType) -> None:
    create = next(operation for operation in OPERATIONS if operation.action == "create_connect_session")
    connect = fresh_world(handler)
    over_http(handler, create, SAMPLES["create_connect_session"])
    directly(handler, create, SAMPLES["create_connect_session"])
    assert connect.base_urls == ["https://abcdef1234.execute-api.us-east-1.amazonaws.com", None]


def test_the_template_routes_the_vend_function_exactly_the_table() -> None:
    """A new IAM route is one table entry plus its template.yaml event: neither without the other."""
    events = resources_of(load(), "AWS::Serverless::Function")["VendFunction"]["Properties"]["Events"]
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in events.values() if e["Type"] == "HttpApi"}
    assert routes == {(operation.method, operation.path) for operation in OPERATIONS}


def test_the_lambda_handler_answers_the_direct_body(handler: ModuleType) -> None:
    vend = SAMPLES["vend"]
    fresh_world(handler)
    assert (
        handler.lambda_handler({"action": "vend", **vend}, LambdaContext())
        == handler.handle_direct({"action": "vend", **vend})[1]
    )


def test_direct_invoke_refuses_fields_the_operation_does_not_declare(handler: ModuleType) -> None:
    fresh_world(handler)
    for operation in OPERATIONS:
        status, answer = handler.handle_direct({"action": operation.action, **SAMPLES[operation.action], "extra": 1})
        assert (status, answer["message"]) == (400, "unknown field(s): extra"), operation.action
