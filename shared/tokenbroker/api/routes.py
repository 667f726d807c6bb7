"""The HTTP transport: one Powertools route per operation of the table, with its OpenAPI description.

Inputs are parsed by the operations, not by Powertools' ``enable_validation``: that imports
pydantic, which adds ~0.1 s to every cold start (measured in docs/vending.md). Each generated route
still carries a typed signature (path, query and body parameters, the answer as return type), so
``app.get_openapi_json_schema()`` documents every input and answer (docs/openapi.json).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

from tokenbroker.api.contract import ErrorAnswer, body_object, error_answer
from tokenbroker.api.failures import Failure, domain_failure, unexpected_failure
from tokenbroker.api.operations import OPERATIONS, ApiServices, Inputs, Operation
from tokenbroker.base_url import request_base_url
from tokenbroker.errors import TokenBrokerError
from tokenbroker.observability import logger

JSON = "application/json"
ERROR_TEXT = {
    400: "bad input (provider name, connection id, min_ttl, body)",
    403: "the request is not signed with SigV4 or the caller may not invoke this route",
    404: "unknown connection or provider",
    409: "needs_reauth (create a new connect session), pending_confirmation or connect_session_not_completed",
    410: "connect_session_expired: the session (and its pending grant) expired or was replaced",
    503: "provider_unavailable, refresh_in_progress or service_unavailable; see the Retry-After header",
}


def api_resolver(services: Callable[[], ApiServices]) -> APIGatewayHttpResolver:
    """A resolver serving every operation of the table for SigV4-signed callers, errors as JSON."""
    app = APIGatewayHttpResolver()
    app.use(middlewares=[require_iam_caller])
    for operation in OPERATIONS:
        app.route(
            _powertools_path(operation.path),
            operation.method,
            summary=operation.summary,
            description=operation.description,
            tags=list(operation.tags),
            responses=_responses(operation),
        )(_Route(app, operation, services))
    app.exception_handler(TokenBrokerError)(lambda error: failure_response(domain_failure(error)))
    app.exception_handler(Exception)(lambda error: failure_response(unexpected_failure(error)))
    app.not_found(lambda _: failure_response(Failure(404, error_answer("not_found", "no such route"))))
    return app


def require_iam_caller(router: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Defence in depth: answer only requests that API Gateway authenticated with IAM (SigV4).

    The HttpApi's default authorizer is AWS_IAM; a route that lost it by mistake must not vend.
    """
    iam = router.current_event.request_context.authorizer.iam
    if not iam.user_arn and not iam.caller_id:
        forbidden = error_answer("forbidden", "this route requires a SigV4-signed request (IAM auth)")
        return failure_response(Failure(403, forbidden))
    logger.append_keys(caller=iam.user_arn or iam.caller_id)
    return next_middleware(router)


def failure_response(failure: Failure) -> Response[Any]:
    retry_after = failure.retry_after
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(status_code=failure.status, content_type=JSON, body=json.dumps(failure.answer), headers=headers)


class _Route:
    """The route Powertools calls with the path parameters (validation off passes no others).

    A callable object rather than a closure: it carries the operation's name (OpenAPI derives the
    operationId from it) and its typed signature, which ``inspect.signature`` reads for OpenAPI.
    """

    def __init__(self, app: APIGatewayHttpResolver, operation: Operation, services: Callable[[], ApiServices]) -> None:
        self._app = app
        self._operation = operation
        self._services = services
        self.__name__ = self.__qualname__ = operation.function
        self.__signature__ = _signature(operation)

    def __call__(self, **path: str) -> Response[Any]:
        operation, event = self._operation, self._app.current_event
        values: dict[str, object] = dict(path)
        for query in operation.query:
            values[query.name] = event.get_query_string_value(query.name)
        if operation.body is not None:
            values.update(body_object(event.decoded_body, operation.body_fields))
        answer = operation.run(self._services(), Inputs(values, base_url=request_base_url(event)))
        if operation.count is not None:
            operation.count()
        if operation.answer is None:
            return Response(status_code=operation.status)
        return Response(status_code=operation.status, content_type=JSON, body=answer)


def _signature(operation: Operation) -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    parameters = [inspect.Parameter(name, kind, annotation=str) for name in operation.path_fields]
    for query in operation.query:
        default = inspect.Parameter.empty if query.required else query.default
        parameters.append(inspect.Parameter(query.name, kind, annotation=query.annotation, default=default))
    if operation.body is not None:
        body: Any = operation.body | None if operation.body_optional else operation.body
        default = None if operation.body_optional else inspect.Parameter.empty
        parameters.append(inspect.Parameter("body", kind, annotation=body, default=default))
    answer = inspect.Signature.empty if operation.answer is None else operation.answer
    return inspect.Signature(parameters, return_annotation=answer)


def _responses(operation: Operation) -> dict[int, Any]:
    ok: dict[str, Any] = {"description": operation.ok}
    if operation.answer is None:
        ok["content"] = {}
    answers: dict[int, Any] = {operation.status: ok}
    for status in operation.errors:
        answers[status] = {"description": ERROR_TEXT[status], "content": {JSON: {"model": ErrorAnswer}}}
        if status == 503:
            answers[status]["headers"] = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
    return answers


def _powertools_path(path: str) -> str:
    # Powertools writes path parameters as <name>, API Gateway and OpenAPI as {name}.
    return path.replace("{", "<").replace("}", ">")
