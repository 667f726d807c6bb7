"""Where an API Gateway (HTTP API) request came in: the public origin both functions build links on."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2


def request_base_url(event: APIGatewayProxyEventV2) -> str | None:
    """``scheme://domain[/stage]`` of this request: used only when PUBLIC_BASE_URL is not configured.

    A named stage is part of every URL API Gateway serves (``$default`` is not). The scheme comes
    from x-forwarded-proto but only as http or https: anything else must not end up in a link.
    """
    context = event.request_context
    domain = context.domain_name
    if not domain:
        return None
    proto = ((event.headers or {}).get("x-forwarded-proto") or "https").lower()
    scheme = proto if proto in ("http", "https") else "https"
    stage = context.stage
    prefix = "" if not stage or stage == "$default" else f"/{stage}"
    return f"{scheme}://{domain}{prefix}"
