"""The one table of the IAM API's operations, served by both transports.

Each entry declares an operation once: its route, its inputs (path, query, body), the service call
that parses them and answers, its success status and what OpenAPI says about it. The HTTP routes
(``tokenbroker.api.routes``) and the direct-invoke actions (``tokenbroker.api.direct``) are built
from this table, so a new IAM route is one entry here plus its template.yaml event.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from tokenbroker.api.contract import (
    LIST_LIMIT_DEFAULT,
    LIST_LIMIT_MAX,
    MIN_TTL_DEFAULT,
    ConfirmRequest,
    ConnectionAnswer,
    ConnectionListAnswer,
    ConnectRequest,
    ConnectSessionAnswer,
    ConnectSessionRequest,
    DeletedAnswer,
    RefreshRequest,
    TokenAnswer,
    fields_of,
    parse_cursor,
    parse_end_user_id,
    parse_key,
    parse_limit,
    parse_min_ttl,
    parse_provider,
    parse_rejected,
    parse_session_id,
)
from tokenbroker.keys import ConnectionKey
from tokenbroker.observability import metrics

if TYPE_CHECKING:
    from tokenbroker.connect import ConnectService  # typing only: vending never imports the connect flow
    from tokenbroker.vending import VendingService


# --- collaborators -------------------------------------------------------------------------------


class ApiServices(Protocol):
    """What the operations call: vending and the connect flow (which may be built on first use)."""

    @property
    def vending(self) -> VendingService: ...

    @property
    def connect(self) -> ConnectService: ...


@dataclass(frozen=True, slots=True)
class Services:
    """Ready collaborators (tests, the local stack)."""

    vending: VendingService
    connect: ConnectService


# --- one request, whichever transport brought it -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Inputs:
    """An operation's raw inputs by name (path, query and body alike) and where the request came in."""

    values: Mapping[str, object]
    # The public origin of an HTTP request (connect links point there); None for a direct invoke.
    base_url: str | None = None

    def get(self, name: str) -> object:
        return self.values.get(name)

    def key(self) -> ConnectionKey:
        return parse_key(self.get("provider"), self.get("connection_id"))


@dataclass(frozen=True, slots=True)
class Query:
    """A query parameter, typed for OpenAPI (its parser runs inside the operation)."""

    name: str
    annotation: Any
    default: object = field(default=...)

    @property
    def required(self) -> bool:
        return self.default is ...


_PATH_PARAMETER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True, slots=True)
class Operation:
    action: str  # the direct-invoke name
    function: str  # the HTTP route's name: OpenAPI derives the operationId from it
    method: str
    path: str  # as template.yaml and API Gateway write it: /tokens/{provider}/{connection_id}
    run: Callable[[ApiServices, Inputs], Any]  # parse the inputs, call the service, return the answer
    answer: Any  # the answer's shape (None: no body over HTTP)
    summary: str
    tags: tuple[str, ...]
    errors: tuple[int, ...]
    ok: str  # what the success status means
    status: int = 200
    description: str | None = None
    query: tuple[Query, ...] = ()
    body: type | None = None  # the request body's TypedDict
    body_optional: bool = False
    # Counts a successful HTTP answer (the direct invoke never counted these metrics).
    count: Callable[[], None] | None = None

    @property
    def path_fields(self) -> tuple[str, ...]:
        return tuple(_PATH_PARAMETER.findall(self.path))

    @property
    def body_fields(self) -> frozenset[str]:
        return fields_of(self.body) if self.body is not None else frozenset()

    @property
    def fields(self) -> frozenset[str]:
        """Every input a direct invoke may name (besides ``action``)."""
        return frozenset(self.path_fields) | {q.name for q in self.query} | self.body_fields


# --- metrics: literal names, so that tests/template can match the dashboard against them --------


def _count_tokens_vended() -> None:
    metrics.add_metric(name="TokensVended", unit=MetricUnit.Count, value=1)


def _count_rejected_token_refreshes() -> None:
    metrics.add_metric(name="RejectedTokenRefreshes", unit=MetricUnit.Count, value=1)


# --- the operations ------------------------------------------------------------------------------


def _vend(services: ApiServices, inputs: Inputs) -> TokenAnswer:
    key = inputs.key()
    return services.vending.vend(key, parse_min_ttl(inputs.get("min_ttl"))).to_json()


def _refresh(services: ApiServices, inputs: Inputs) -> TokenAnswer:
    key = inputs.key()
    return services.vending.refresh_rejected(key, parse_rejected(inputs.get("rejected_token_sha256"))).to_json()


def _get_connection(services: ApiServices, inputs: Inputs) -> ConnectionAnswer:
    return services.vending.get_connection(inputs.key()).to_json()


def _list_connections(services: ApiServices, inputs: Inputs) -> ConnectionListAnswer:
    provider = parse_provider(inputs.get("provider"))
    limit, cursor = parse_limit(inputs.get("limit")), parse_cursor(inputs.get("cursor"))
    return services.vending.list_connections(provider, limit=limit, cursor=cursor).to_json()


def _delete_connection(services: ApiServices, inputs: Inputs) -> DeletedAnswer:
    key = inputs.key()
    services.vending.delete_connection(key)
    return {"deleted": True, "provider": key.provider, "connection_id": key.connection_id}


def _create_connect_session(services: ApiServices, inputs: Inputs) -> ConnectSessionAnswer:
    request = ConnectRequest.parse(inputs.values)
    link = services.connect.create_session(
        request.provider,
        request.connection_id,
        return_to=request.return_to,
        scopes=request.scopes,
        metadata=request.metadata,
        end_user_id=request.end_user_id,
        confirm=request.confirm,
        request_base_url=inputs.base_url,
    )
    return {"connect_url": link.connect_url, "expires_at": link.expires_at, "session_id": link.session_id}


def _confirm_connect_session(services: ApiServices, inputs: Inputs) -> ConnectionAnswer:
    session_id = parse_session_id(inputs.get("session_id"))
    connection = services.connect.confirm(session_id, parse_end_user_id(inputs.get("end_user_id")))
    return services.vending.view(connection).to_json()


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        action="vend",
        function="get_token",
        method="GET",
        path="/tokens/{provider}/{connection_id}",
        run=_vend,
        answer=TokenAnswer,
        summary="Vend a valid access token",
        description=(
            "Refreshes first (single-flight) when fewer than min_ttl seconds remain. min_ttl is 0..86400, "
            f"default {MIN_TTL_DEFAULT}; a token that still has 90 % of its lifetime left is never refreshed by "
            "a vend, so a min_ttl beyond the provider's token lifetime does not refresh on every call."
        ),
        tags=("tokens",),
        ok="a token with at least min_ttl seconds left",
        errors=(400, 403, 404, 409, 503),
        query=(Query("min_ttl", int, MIN_TTL_DEFAULT),),
        count=_count_tokens_vended,
    ),
    Operation(
        action="refresh",
        function="refresh_rejected_token",
        method="POST",
        path="/tokens/{provider}/{connection_id}/refresh",
        run=_refresh,
        answer=TokenAnswer,
        summary="Compare-and-refresh after a rejected token",
        description=(
            "Send the lower-case hex SHA-256 of the access token the third-party API rejected (never the "
            "token). The token is refreshed only if it is still the current one; otherwise the newer token "
            "is returned. Without a hash the current generation is refreshed. Single-flight either way."
        ),
        tags=("tokens",),
        ok="the current token, refreshed if the rejected one was current",
        errors=(400, 403, 404, 409, 503),
        body=RefreshRequest,
        body_optional=True,
        count=_count_rejected_token_refreshes,
    ),
    Operation(
        action="get_connection",
        function="get_connection",
        method="GET",
        path="/connections/{provider}/{connection_id}",
        run=_get_connection,
        answer=ConnectionAnswer,
        summary="Status and metadata of one connection (never a token)",
        tags=("connections",),
        ok="the connection",
        errors=(400, 403, 404),
    ),
    Operation(
        action="list_connections",
        function="list_connections",
        method="GET",
        path="/connections",
        run=_list_connections,
        answer=ConnectionListAnswer,
        summary="One page of a provider's connections",
        description=f"provider is required; limit 1..{LIST_LIMIT_MAX} (default {LIST_LIMIT_DEFAULT}); "
        "pass the answer's cursor to get the next page (null when there is none).",
        tags=("connections",),
        ok="a page of connections",
        errors=(400, 403, 404),
        query=(Query("provider", str), Query("limit", int, LIST_LIMIT_DEFAULT), Query("cursor", str | None, None)),
    ),
    Operation(
        action="delete_connection",
        function="delete_connection",
        method="DELETE",
        path="/connections/{provider}/{connection_id}",
        run=_delete_connection,
        answer=None,
        status=204,
        summary="Disconnect: secret scheduled for deletion, item removed, Connection Deleted event",
        tags=("connections",),
        ok="deleted",
        errors=(400, 403, 404),
    ),
    Operation(
        action="create_connect_session",
        function="create_connect_session",
        method="POST",
        path="/connect-sessions",
        run=_create_connect_session,
        answer=ConnectSessionAnswer,
        status=201,
        summary="A one-time connect link for the end user",
        tags=("connect",),
        ok="the link; send the end user's browser to connect_url",
        errors=(400, 403, 404),
        body=ConnectSessionRequest,
    ),
    Operation(
        action="confirm_connect_session",
        function="confirm_connect_session",
        method="POST",
        path="/connect-sessions/{session_id}/confirm",
        run=_confirm_connect_session,
        answer=ConnectionAnswer,
        summary="Confirm mode: the pending grant becomes the connection's when end_user_id is the one the link was for",
        tags=("connect",),
        ok="the connection, now active",
        errors=(400, 403, 404, 409, 410),
        body=ConfirmRequest,
    ),
)

BY_ACTION: Mapping[str, Operation] = {operation.action: operation for operation in OPERATIONS}
