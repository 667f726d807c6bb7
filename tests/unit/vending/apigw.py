"""API Gateway HTTP API (payload 2.0) events for the vend function's IAM routes, and their answers."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlencode

API_DOMAIN = "abcdef1234.execute-api.us-east-1.amazonaws.com"
CALLER_ARN = "arn:aws:iam::123456789012:role/billing-service"
IAM_AUTHORIZER: dict[str, Any] = {
    "iam": {
        "accessKey": "ASIAEXAMPLEKEY000001",
        "accountId": "123456789012",
        "callerId": "AROAEXAMPLEROLE00001:billing",
        "cognitoIdentity": None,
        "principalOrgId": None,
        "userArn": CALLER_ARN,
        "userId": "AROAEXAMPLEROLE00001:billing",
    }
}
# The HttpApi's routes, as template.yaml declares them (API Gateway fills routeKey and pathParameters).
ROUTES = (
    ("GET", "/tokens/{provider}/{connection_id}"),
    ("POST", "/tokens/{provider}/{connection_id}/refresh"),
    ("GET", "/connections/{provider}/{connection_id}"),
    ("DELETE", "/connections/{provider}/{connection_id}"),
    ("GET", "/connections"),
    ("POST", "/connect-sessions"),
    ("POST", "/connect-sessions/{session_id}/confirm"),
)


@dataclass(frozen=True, slots=True)
class LambdaContext:
    function_name: str = "VendFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:VendFunction"
    aws_request_id: str = "11111111-1111-1111-1111-111111111111"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def _match(method: str, path: str) -> tuple[str, dict[str, str] | None]:
    for route_method, template in ROUTES:
        pattern = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$"
        found = re.match(pattern, path)
        if route_method == method and found:
            return f"{method} {template}", (found.groupdict() or None)
    return "$default", None


def iam_event(
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: str | None = None,
    json_body: Any = None,
    authorizer: dict[str, Any] | None = IAM_AUTHORIZER,
    base64_body: bool = False,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What API Gateway sends for a SigV4-verified request (``authorizer=None``: an unauthenticated route)."""
    if json_body is not None:
        body = json.dumps(json_body)
    route_key, path_parameters = _match(method, path)
    raw_query = urlencode(query or {})
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": {
            "host": API_DOMAIN,
            "user-agent": "python-requests/2.32 tokenbroker-test",
            "x-forwarded-proto": "https",
            "x-amz-date": "20261122T180000Z",
            "authorization": "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLEKEY000001/20261122/us-east-1/execute-api/"
            "aws4_request, SignedHeaders=host;x-amz-date, Signature=" + "0" * 64,
            **({"content-type": "application/json"} if body is not None else {}),
            **{k.lower(): v for k, v in (headers or {}).items()},
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": API_DOMAIN,
            "domainPrefix": "abcdef1234",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "python-requests/2.32 tokenbroker-test",
            },
            "requestId": "req-vend-1",
            "routeKey": route_key,
            "stage": "$default",
            "time": "22/Nov/2026:18:00:00 +0000",
            "timeEpoch": 1_800_000_000_000,
        },
        "isBase64Encoded": False,
    }
    if authorizer is not None:
        event["requestContext"]["authorizer"] = authorizer
    if query:
        event["queryStringParameters"] = {
            k: ",".join(v) for k, v in parse_qs(raw_query, keep_blank_values=True).items()
        }
    if path_parameters:
        event["pathParameters"] = path_parameters
    if body is not None:
        if base64_body:
            event["body"] = base64.b64encode(body.encode()).decode()
            event["isBase64Encoded"] = True
        else:
            event["body"] = body
    return event


def invoke(handler: ModuleType, event: dict[str, Any]) -> Answer:
    raw = handler.lambda_handler(event, LambdaContext())
    body = raw.get("body") or ""
    if raw.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    return Answer(
        status=int(raw["statusCode"]),
        headers={k.lower(): str(v) for k, v in (raw.get("headers") or {}).items()},
        body=body,
    )
