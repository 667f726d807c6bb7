"""The direct Lambda invoke transport: ``{"action": ..., inputs...}`` -> the operation's answer.

Callers inside AWS may use ``lambda:InvokeFunction`` instead of HTTP: the same operations
(``tokenbroker.api.operations``), flat events, the route's JSON body or an ``ErrorAnswer`` back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tokenbroker.api.contract import known_fields
from tokenbroker.api.failures import domain_failure, unexpected_failure
from tokenbroker.api.operations import BY_ACTION, ApiServices, Inputs
from tokenbroker.errors import InvalidInput, TokenBrokerError


def is_direct_invoke(event: object) -> bool:
    """API Gateway events carry requestContext and routeKey; a direct invoke carries neither."""
    return isinstance(event, Mapping) and "requestContext" not in event and "routeKey" not in event


def handle_direct(event: Mapping[str, Any], services: Callable[[], ApiServices]) -> tuple[int, Any]:
    """(the HTTP route's status, its JSON body or ``{"error", "message"[, "retry_after"]}``).

    A delete answers ``{"deleted": true, ...}`` where HTTP sends 204 without a body.
    """
    action = event.get("action")
    operation = BY_ACTION.get(action) if isinstance(action, str) else None
    try:
        if operation is None:
            raise InvalidInput(f"action must be one of {', '.join(BY_ACTION)}", field="action")
        values = known_fields(event, operation.fields | {"action"})
        return operation.status, operation.run(services(), Inputs(values))
    except TokenBrokerError as error:
        failure = domain_failure(error)
    except Exception as error:
        failure = unexpected_failure(error, action=action if isinstance(action, str) else None)
    return failure.status, failure.answer
