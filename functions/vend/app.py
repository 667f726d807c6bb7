"""Vend function: the IAM routes of the HttpApi, and the same operations by direct Lambda invoke.

Thin on purpose: both transports serve the one operation table (``tokenbroker.api.operations``),
whose entries parse their inputs with the wire contract (``tokenbroker.api.contract``) and call one
method of ``VendingService`` or the connect flow. Failures answer ``{"error", "message"}``.

Collaborators are built on first use from ``Settings.from_env()`` (cold start stays cheap and tests
set the environment first); ``use_services`` injects them instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from tokenbroker.api.direct import handle_direct as _handle_direct
from tokenbroker.api.direct import is_direct_invoke
from tokenbroker.api.operations import ConnectLinkLike, ConnectSessions, Services
from tokenbroker.api.routes import api_resolver
from tokenbroker.lazy import Lazy
from tokenbroker.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from aws_lambda_powertools.utilities.typing import LambdaContext
    from tokenbroker.models import Connection

__all__ = ["Services", "app", "handle_direct", "is_direct_invoke", "lambda_handler", "services", "use_services"]


# --- collaborators -------------------------------------------------------------------------------


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


# --- the two transports of the one operation table -----------------------------------------------

app = api_resolver(services)


def handle_direct(event: Mapping[str, Any]) -> tuple[int, Any]:
    """``{"action": ..., ...}`` -> (HTTP-equivalent status, the route's JSON body or an error answer)."""
    return _handle_direct(event, services)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@tracer.capture_lambda_handler(capture_response=False)  # answers carry tokens
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if is_direct_invoke(event):
        status, answer = handle_direct(event)
        _count(status)
        # Lambda's contract for a handler is "a JSON-serialisable value"; a direct answer is an object.
        direct_answer: dict[str, Any] = answer
        return direct_answer
    response = app.resolve(event, context)
    _count(int(response.get("statusCode", 500)))
    return response


def _count(status: int) -> None:
    metrics.add_metric(name="VendRequests", unit=MetricUnit.Count, value=1)
    if status >= 500:
        metrics.add_metric(name="VendServerErrors", unit=MetricUnit.Count, value=1)
    elif status >= 400:
        metrics.add_metric(name="VendClientErrors", unit=MetricUnit.Count, value=1)
