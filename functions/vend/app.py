"""Vend function: the IAM routes of the HttpApi, and the same operations by direct Lambda invoke.

Thin on purpose: parse the request, call one method of ``VendingService`` (or
``ConnectService.create_session``), map ``TokenBrokerError`` to ``{"error", "message"}``.

Inputs are validated by hand, not with Powertools' ``enable_validation``: that imports pydantic,
which adds ~0.1 s to every cold start (measured in docs/vending.md) against a budget of 1.3x
``import boto3`` + one client. The route signatures still declare every input and answer, so
``app.get_openapi_json_schema()`` documents them (docs/openapi.json).

Collaborators are built on first use from ``Settings.from_env()`` (cold start stays cheap and tests
set the environment first); ``use_services`` injects them instead.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NotRequired, Protocol, TypedDict

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from tokenbroker.aws import is_transient_aws_error
from tokenbroker.errors import AwsUnavailable, InvalidInput, TokenBrokerError
from tokenbroker.keys import ConnectionKey, validate_connection_id, validate_provider_name
from tokenbroker.lazy import Lazy
from tokenbroker.observability import logger, metrics, tracer
from tokenbroker.vending import MIN_TTL_DEFAULT, VendingService, validate_min_ttl, validate_token_sha256

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aws_lambda_powertools.utilities.typing import LambdaContext
    from tokenbroker.models import Connection

LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 100
MAX_CURSOR_LENGTH = 2048
MAX_RETURN_TO_LENGTH = 2048
JSON = "application/json"


# --- collaborators -------------------------------------------------------------------------------


class ConnectLinkLike(Protocol):
    @property
    def connect_url(self) -> str: ...

    @property
    def expires_at(self) -> int: ...

    @property
    def session_id(self) -> str: ...


class ConnectSessions(Protocol):
    """``ConnectService.create_session`` and ``confirm``: all this function needs of the connect flow."""

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
    ) -> ConnectLinkLike: ...

    def confirm(self, session_id: str, end_user_id: str) -> Connection: ...


@dataclass(frozen=True, slots=True)
class Services:
    vending: VendingService
    connect: ConnectSessions


def use_services(services: Services | None) -> None:
    """Inject collaborators (tests, the local stack); ``None`` builds them from the environment again."""
    _services.use(services)


def services() -> Services:
    return _services.get()


def _services_from_env() -> Services:
    # Imported here, not at module level: only the first request of a cold start pays for it.
    from tokenbroker.wiring import Runtime  # noqa: PLC0415

    runtime = Runtime.from_env()
    return Services(vending=runtime.vending, connect=_ConnectOnDemand(lambda: runtime.connect))


_services: Lazy[Services] = Lazy(_services_from_env)


class _ConnectOnDemand:
    """Builds the connect flow (its pages, PKCE, one-time store) only when a session is requested:
    vending, the hot path, never pays for importing it."""

    def __init__(self, build: Callable[[], ConnectSessions]) -> None:
        self._build = build

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
    ) -> ConnectLinkLike:
        return self._build().create_session(
            provider,
            connection_id,
            return_to=return_to,
            scopes=scopes,
            metadata=metadata,
            end_user_id=end_user_id,
            confirm=confirm,
            request_base_url=request_base_url,
        )

    def confirm(self, session_id: str, end_user_id: str) -> Connection:
        return self._build().confirm(session_id, end_user_id)


# --- request and answer shapes (documentation for OpenAPI; parsed by hand below) -------------------


class TokenAnswer(TypedDict):
    access_token: str
    token_type: str
    expires_at: int
    expires_in: int
    scopes: list[str]
    generation: int
    metadata: dict[str, str]


class RefreshRequest(TypedDict, total=False):
    rejected_token_sha256: str


class LastErrorAnswer(TypedDict):
    code: str
    message: str
    at: float


class ConnectionAnswer(TypedDict):
    provider: str
    connection_id: str
    status: str
    generation: int
    expires_at: float | None
    refresh_expires_at: float | None
    next_refresh_at: float | None
    refresh_in_progress: bool
    failures: int
    last_error: LastErrorAnswer | None
    metadata: dict[str, str]
    scopes: list[str]
    created_at: float
    updated_at: float


class ConnectionListAnswer(TypedDict):
    connections: list[ConnectionAnswer]
    cursor: str | None


class ConnectSessionRequest(TypedDict):
    provider: str
    connection_id: str
    return_to: NotRequired[str]
    scopes: NotRequired[list[str]]
    metadata: NotRequired[dict[str, str]]
    end_user_id: NotRequired[str]
    confirm: NotRequired[bool]


class ConnectSessionAnswer(TypedDict):
    connect_url: str
    expires_at: int
    session_id: str


class ConfirmRequest(TypedDict):
    end_user_id: str


class ErrorAnswer(TypedDict):
    error: str
    message: str
    retry_after: NotRequired[int]


def _errors(*statuses: int) -> dict[int, Any]:
    text = {
        400: "bad input (provider name, connection id, min_ttl, body)",
        403: "the request is not signed with SigV4 or the caller may not invoke this route",
        404: "unknown connection or provider",
        409: "needs_reauth (create a new connect session), pending_confirmation or connect_session_not_completed",
        410: "connect_session_expired: the session (and its pending grant) expired or was replaced",
        503: "provider_unavailable, refresh_in_progress or service_unavailable; see the Retry-After header",
    }
    answers: dict[int, Any] = {}
    for status in statuses:
        answers[status] = {"description": text[status], "content": {JSON: {"model": ErrorAnswer}}}
        if status == 503:
            answers[status]["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    return answers


def _ok(description: str, status: int = 200) -> dict[int, Any]:
    return {status: {"description": description}}


# --- hand parsing: one function per input, shared by the routes and the direct invoke ------------


def _body_object(raw: str | None, allowed: frozenset[str]) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
        raise InvalidInput("the body must be JSON", field="body") from None
    return _known_fields(body, allowed)


def _known_fields(body: object, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    unknown = sorted(set(body) - allowed)
    if unknown:
        # Names only, never values: a caller may have sent a token by mistake.
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)[:200]}", field="body")
    return body


def _optional_str(body: Mapping[str, Any], name: str, max_length: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise InvalidInput(f"{name} must be a string of at most {max_length} characters", field=name)
    return value


def parse_limit(value: object) -> int:
    if value is None:
        return LIST_LIMIT_DEFAULT
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIST_LIMIT_MAX:
        raise InvalidInput(f"limit must be an integer from 1 to {LIST_LIMIT_MAX}", field="limit")
    return value


def parse_cursor(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_CURSOR_LENGTH:
        raise InvalidInput("cursor must be the opaque string of a previous page", field="cursor")
    return value


def parse_provider(value: object) -> str:
    if value is None:
        raise InvalidInput("provider is required", field="provider")
    return validate_provider_name(value)


def parse_min_ttl(value: object) -> int:
    return MIN_TTL_DEFAULT if value is None else validate_min_ttl(value)


def parse_rejected(body: Mapping[str, Any]) -> str | None:
    value = body.get("rejected_token_sha256")
    return None if value is None else validate_token_sha256(value)


REFRESH_FIELDS = frozenset({"rejected_token_sha256"})
CONNECT_FIELDS = frozenset({"provider", "connection_id", "return_to", "scopes", "metadata", "end_user_id", "confirm"})
CONFIRM_FIELDS = frozenset({"end_user_id"})
MAX_END_USER_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    provider: str
    connection_id: str
    return_to: str | None
    scopes: list[str] | None
    metadata: dict[str, str] | None
    end_user_id: str | None = None
    confirm: bool = False

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> ConnectRequest:
        scopes = body.get("scopes")
        if scopes is not None and not isinstance(scopes, list):
            raise InvalidInput("scopes must be a list of strings", field="scopes")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidInput("metadata must be an object of strings", field="metadata")
        confirm = body.get("confirm", False)
        if not isinstance(confirm, bool):
            raise InvalidInput("confirm must be true or false", field="confirm")
        return cls(
            provider=validate_provider_name(body.get("provider")),
            connection_id=validate_connection_id(body.get("connection_id")),
            return_to=_optional_str(body, "return_to", MAX_RETURN_TO_LENGTH),
            scopes=scopes,
            metadata=metadata,
            end_user_id=_optional_str(body, "end_user_id", MAX_END_USER_ID_LENGTH),
            confirm=confirm,
        )


def parse_end_user_id(body: Mapping[str, Any]) -> str:
    value = _optional_str(body, "end_user_id", MAX_END_USER_ID_LENGTH)
    if value is None:
        raise InvalidInput("end_user_id is required", field="end_user_id")
    return value


def _key(provider: str, connection_id: str) -> ConnectionKey:
    return ConnectionKey(validate_provider_name(provider), validate_connection_id(connection_id))


# --- HTTP API ------------------------------------------------------------------------------------

app = APIGatewayHttpResolver()


def _query(name: str) -> str | None:
    return app.current_event.get_query_string_value(name)


def _inputs(**parsers: Callable[[], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Fill these keyword arguments of a route from the request, parsed by hand.

    The route's signature still declares them (Powertools documents them in OpenAPI), while
    Powertools itself passes only path parameters when validation is off.
    """

    def decorate(route: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(route)
        def call(**path: str) -> Any:
            return route(**path, **{name: parse() for name, parse in parsers.items()})

        return call

    return decorate


def require_iam_caller(router: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Defence in depth: answer only requests that API Gateway authenticated with IAM (SigV4).

    The HttpApi's default authorizer is AWS_IAM; a route that lost it by mistake must not vend.
    """
    iam = router.current_event.request_context.authorizer.iam
    if not iam.user_arn and not iam.caller_id:
        return _error_response(403, "forbidden", "this route requires a SigV4-signed request (IAM auth)")
    logger.append_keys(caller=iam.user_arn or iam.caller_id)
    return next_middleware(router)


app.use(middlewares=[require_iam_caller])


@app.get(
    "/tokens/<provider>/<connection_id>",
    summary="Vend a valid access token",
    description=(
        "Refreshes first (single-flight) when fewer than min_ttl seconds remain. min_ttl is 0..86400, "
        f"default {MIN_TTL_DEFAULT}; a token that still has 90 % of its lifetime left is never refreshed by "
        "a vend, so a min_ttl beyond the provider's token lifetime does not refresh on every call."
    ),
    tags=["tokens"],
    responses={**_ok("a token with at least min_ttl seconds left"), **_errors(400, 403, 404, 409, 503)},
)
@_inputs(min_ttl=lambda: parse_min_ttl(_query("min_ttl")))
def get_token(provider: str, connection_id: str, min_ttl: int = MIN_TTL_DEFAULT) -> TokenAnswer:
    vended = services().vending.vend(_key(provider, connection_id), min_ttl)
    metrics.add_metric(name="TokensVended", unit=MetricUnit.Count, value=1)
    return vended.to_json()  # type: ignore[return-value]


@app.post(
    "/tokens/<provider>/<connection_id>/refresh",
    summary="Compare-and-refresh after a rejected token",
    description=(
        "Send the lower-case hex SHA-256 of the access token the third-party API rejected (never the "
        "token). The token is refreshed only if it is still the current one; otherwise the newer token "
        "is returned. Without a hash the current generation is refreshed. Single-flight either way."
    ),
    tags=["tokens"],
    responses={
        **_ok("the current token, refreshed if the rejected one was current"),
        **_errors(400, 403, 404, 409, 503),
    },
)
@_inputs(body=lambda: _body_object(app.current_event.decoded_body, REFRESH_FIELDS))
def refresh_rejected_token(provider: str, connection_id: str, body: RefreshRequest | None = None) -> TokenAnswer:
    vended = services().vending.refresh_rejected(_key(provider, connection_id), parse_rejected(body or {}))
    metrics.add_metric(name="RejectedTokenRefreshes", unit=MetricUnit.Count, value=1)
    return vended.to_json()  # type: ignore[return-value]


@app.get(
    "/connections/<provider>/<connection_id>",
    summary="Status and metadata of one connection (never a token)",
    tags=["connections"],
    responses={**_ok("the connection"), **_errors(400, 403, 404)},
)
def get_connection(provider: str, connection_id: str) -> ConnectionAnswer:
    return services().vending.get_connection(_key(provider, connection_id)).to_json()  # type: ignore[return-value]


@app.get(
    "/connections",
    summary="One page of a provider's connections",
    description=f"provider is required; limit 1..{LIST_LIMIT_MAX} (default {LIST_LIMIT_DEFAULT}); "
    "pass the answer's cursor to get the next page (null when there is none).",
    tags=["connections"],
    responses={**_ok("a page of connections"), **_errors(400, 403, 404)},
)
@_inputs(
    provider=lambda: parse_provider(_query("provider")),
    limit=lambda: parse_limit(_query("limit")),
    cursor=lambda: parse_cursor(_query("cursor")),
)
def list_connections(provider: str, limit: int = LIST_LIMIT_DEFAULT, cursor: str | None = None) -> ConnectionListAnswer:
    return services().vending.list_connections(provider, limit=limit, cursor=cursor).to_json()  # type: ignore[return-value]


@app.delete(
    "/connections/<provider>/<connection_id>",
    summary="Disconnect: secret scheduled for deletion, item removed, Connection Deleted event",
    tags=["connections"],
    responses={204: {"description": "deleted", "content": {}}, **_errors(400, 403, 404)},
)
def delete_connection(provider: str, connection_id: str) -> Response[None]:
    services().vending.delete_connection(_key(provider, connection_id))
    return Response(status_code=204)


@app.post(
    "/connect-sessions",
    summary="A one-time connect link for the end user",
    tags=["connect"],
    responses={
        201: {"description": "the link; send the end user's browser to connect_url"},
        **_errors(400, 403, 404),
    },
)
@_inputs(body=lambda: _body_object(app.current_event.decoded_body, CONNECT_FIELDS))
def create_connect_session(body: ConnectSessionRequest) -> Response[ConnectSessionAnswer]:
    link = _create_session(ConnectRequest.parse(body), request_base_url=_request_base_url())
    return Response(status_code=201, content_type=JSON, body=_link_answer(link))


@app.post(
    "/connect-sessions/<session_id>/confirm",
    summary="Confirm mode: the pending grant becomes the connection's when end_user_id is the one the link was for",
    tags=["connect"],
    responses={
        **_ok("the connection, now active"),
        **_errors(400, 403, 404, 409, 410),
    },
)
@_inputs(body=lambda: _body_object(app.current_event.decoded_body, CONFIRM_FIELDS))
def confirm_connect_session(session_id: str, body: ConfirmRequest) -> ConnectionAnswer:
    connection = services().connect.confirm(session_id, parse_end_user_id(body))
    return services().vending.view(connection).to_json()  # type: ignore[return-value]


def _link_answer(link: ConnectLinkLike) -> ConnectSessionAnswer:
    return {"connect_url": link.connect_url, "expires_at": link.expires_at, "session_id": link.session_id}


def _create_session(request: ConnectRequest, *, request_base_url: str | None) -> ConnectLinkLike:
    return services().connect.create_session(
        request.provider,
        request.connection_id,
        return_to=request.return_to,
        scopes=request.scopes,
        metadata=request.metadata,
        end_user_id=request.end_user_id,
        confirm=request.confirm,
        request_base_url=request_base_url,
    )


def _request_base_url() -> str | None:
    """The public origin this request came in on: API Gateway serves the public /connect routes there too."""
    event = app.current_event
    domain = event.request_context.domain_name
    if not domain:
        return None
    scheme = (event.headers or {}).get("x-forwarded-proto") or "https"
    return f"{scheme}://{domain}"


def on_domain_error(error: TokenBrokerError) -> Response[Any]:
    return _error_response(error.http_status, error.code, error.message, _retry_after(error))


def on_unexpected_error(error: Exception) -> Response[Any]:
    if is_transient_aws_error(error):
        logger.warning("AWS throttled or failed after retries", exc_info=True)
        return on_domain_error(AWS_UNAVAILABLE)
    logger.exception("unexpected error")
    return _error_response(500, "internal_error", "internal error")


# Throttling or an AWS 5xx that outlived botocore's retries: nothing changed, the caller may retry.
AWS_UNAVAILABLE = AwsUnavailable("AWS is throttling or unavailable; retry after the indicated delay")

app.exception_handler(TokenBrokerError)(on_domain_error)
app.exception_handler(Exception)(on_unexpected_error)


@app.not_found
def on_unknown_route(_: Exception) -> Response[Any]:
    return _error_response(404, "not_found", "no such route")


def _retry_after(error: TokenBrokerError) -> int | None:
    seconds = getattr(error, "retry_after", None)
    if error.http_status != 503 and seconds is None:
        return None
    return max(1, math.ceil(seconds or 1))


def error_body(code: str, message: str, retry_after: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if retry_after is not None:
        body["retry_after"] = retry_after
    return body


def _error_response(status: int, code: str, message: str, retry_after: int | None = None) -> Response[Any]:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(
        status_code=status, content_type=JSON, body=json.dumps(error_body(code, message, retry_after)), headers=headers
    )


# --- direct Lambda invoke ------------------------------------------------------------------------

KEY_FIELDS = frozenset({"action", "provider", "connection_id"})


def _direct_vend(event: Mapping[str, Any]) -> Any:
    _known_fields(event, KEY_FIELDS | {"min_ttl"})
    key = _key(event.get("provider"), event.get("connection_id"))  # type: ignore[arg-type]
    return services().vending.vend(key, parse_min_ttl(event.get("min_ttl"))).to_json()


def _direct_refresh(event: Mapping[str, Any]) -> Any:
    body = _known_fields(event, KEY_FIELDS | REFRESH_FIELDS)
    key = _key(event.get("provider"), event.get("connection_id"))  # type: ignore[arg-type]
    return services().vending.refresh_rejected(key, parse_rejected(body)).to_json()


def _direct_get_connection(event: Mapping[str, Any]) -> Any:
    _known_fields(event, KEY_FIELDS)
    key = _key(event.get("provider"), event.get("connection_id"))  # type: ignore[arg-type]
    return services().vending.get_connection(key).to_json()


def _direct_list_connections(event: Mapping[str, Any]) -> Any:
    _known_fields(event, frozenset({"action", "provider", "limit", "cursor"}))
    provider = parse_provider(event.get("provider"))
    limit, cursor = parse_limit(event.get("limit")), parse_cursor(event.get("cursor"))
    return services().vending.list_connections(provider, limit=limit, cursor=cursor).to_json()


def _direct_delete_connection(event: Mapping[str, Any]) -> Any:
    _known_fields(event, KEY_FIELDS)
    key = _key(event.get("provider"), event.get("connection_id"))  # type: ignore[arg-type]
    services().vending.delete_connection(key)
    return {"deleted": True, "provider": key.provider, "connection_id": key.connection_id}


def _direct_create_connect_session(event: Mapping[str, Any]) -> Any:
    body = _known_fields(event, CONNECT_FIELDS | {"action"})
    link = _create_session(ConnectRequest.parse(body), request_base_url=None)
    return _link_answer(link)


def _direct_confirm_connect_session(event: Mapping[str, Any]) -> Any:
    body = _known_fields(event, CONFIRM_FIELDS | {"action", "session_id"})
    session_id = body.get("session_id")
    if not isinstance(session_id, str):
        raise InvalidInput("session_id is required", field="session_id")
    connection = services().connect.confirm(session_id, parse_end_user_id(body))
    return services().vending.view(connection).to_json()


DIRECT_ACTIONS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "vend": _direct_vend,
    "refresh": _direct_refresh,
    "get_connection": _direct_get_connection,
    "list_connections": _direct_list_connections,
    "delete_connection": _direct_delete_connection,
    "create_connect_session": _direct_create_connect_session,
    "confirm_connect_session": _direct_confirm_connect_session,
}


def handle_direct(event: Mapping[str, Any]) -> tuple[int, Any]:
    """``{"action": ..., ...}`` -> (HTTP-equivalent status, the route's JSON body or
    ``{"error", "message"[, "retry_after"]}``)."""
    action = event.get("action")
    handler = DIRECT_ACTIONS.get(action) if isinstance(action, str) else None
    try:
        if handler is None:
            raise InvalidInput(f"action must be one of {', '.join(DIRECT_ACTIONS)}", field="action")
        return 200, handler(event)
    except TokenBrokerError as error:
        return error.http_status, error_body(error.code, error.message, _retry_after(error))
    except Exception as error:
        if is_transient_aws_error(error):
            logger.warning("AWS throttled or failed after retries", extra={"action": action}, exc_info=True)
            return AWS_UNAVAILABLE.http_status, error_body(
                AWS_UNAVAILABLE.code, AWS_UNAVAILABLE.message, _retry_after(AWS_UNAVAILABLE)
            )
        logger.exception("unexpected error", extra={"action": action})
        return 500, error_body("internal_error", "internal error")


def is_direct_invoke(event: object) -> bool:
    """API Gateway events carry requestContext and routeKey; a direct invoke carries neither."""
    return isinstance(event, Mapping) and "requestContext" not in event and "routeKey" not in event


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler(capture_response=False)  # answers carry tokens
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if is_direct_invoke(event):
        status, answer = handle_direct(event)
        _count(status)
        return answer  # type: ignore[no-any-return]
    response = app.resolve(event, context)
    _count(int(response.get("statusCode", 500)))
    return response


def _count(status: int) -> None:
    metrics.add_metric(name="VendRequests", unit=MetricUnit.Count, value=1)
    if status >= 500:
        metrics.add_metric(name="VendServerErrors", unit=MetricUnit.Count, value=1)
    elif status >= 400:
        metrics.add_metric(name="VendClientErrors", unit=MetricUnit.Count, value=1)
