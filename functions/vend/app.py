"""Vend function: the IAM routes of the HttpApi, and the same operations by direct Lambda invoke.

Thin on purpose: both transports serve the one operation table (``tokenbroker.api.operations``),
whose entries parse their inputs with the wire contract (``tokenbroker.api.contract``) and call one
method of ``VendingService`` or the connect flow. Failures answer ``{"error", "message"}``.

Collaborators are built on first use from ``Settings.from_env()`` (cold start stays cheap and tests
set the environment first); ``use_services`` injects them instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from tokenbroker.api.direct import handle_direct as _handle_direct
from tokenbroker.api.direct import is_direct_invoke
from tokenbroker.api.operations import ApiServices, Services
from tokenbroker.api.routes import api_resolver
from tokenbroker.lazy import Lazy
from tokenbroker.observability import logger, metrics, tracer

if TYPE_CHECKING:
    from collections.abc import Mapping

    from aws_lambda_powertools.utilities.typing import LambdaContext
    from tokenbroker.connect import ConnectService
    from tokenbroker.vending import VendingService
    from tokenbroker.wiring import Runtime

__all__ = ["Services", "app", "handle_direct", "is_direct_invoke", "lambda_handler", "services", "use_services"]


# --- collaborators -------------------------------------------------------------------------------


def use_services(services: ApiServices | None) -> None:
    """Inject collaborators (tests, the local stack); ``None`` builds them from the environment again."""
    _services.use(services)


def services() -> ApiServices:
    return _services.get()


def _services_from_env() -> ApiServices:
    # Imported here, not at module level: only the first request of a cold start pays for it.
    from tokenbroker.wiring import Runtime  # noqa: PLC0415

    runtime = Runtime.from_env()
    return _RuntimeServices(vending=runtime.vending, runtime=runtime)


@dataclass(frozen=True, slots=True)
class _RuntimeServices:
    """Vending is built at once; the connect flow (its pages, PKCE, one-time store) only when a
    session is requested: vending, the hot path, never pays for importing it."""

    vending: VendingService
    runtime: Runtime

    @property
    def connect(self) -> ConnectService:
        return self.runtime.connect


_services: Lazy[ApiServices] = Lazy(_services_from_env)


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
