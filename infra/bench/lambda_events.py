"""The events AWS hands the handlers, for invoking them in-process: API Gateway v2, SQS, Scheduler."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from infra.localstack.gateway import LambdaContext
from infra.localstack.topology import FunctionSpec, Topology

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
API_DOMAIN = "bench0000.execute-api.us-east-1.amazonaws.com"
CALLER = {
    "iam": {
        "accessKey": "ASIABENCHKEY00000001",
        "accountId": ACCOUNT_ID,
        "callerId": "AROABENCHROLE0000001:bench",
        "cognitoIdentity": None,
        "principalOrgId": None,
        "userArn": f"arn:aws:iam::{ACCOUNT_ID}:role/bench-consumer",
        "userId": "AROABENCHROLE0000001:bench",
    }
}


def vend_event(provider: str, connection_id: str, *, min_ttl: int | None = None) -> dict[str, Any]:
    """``GET /tokens/{provider}/{connection_id}`` as an HttpApi (payload 2.0) event, IAM-authorised."""
    path = f"/tokens/{provider}/{connection_id}"
    query = f"min_ttl={min_ttl}" if min_ttl is not None else ""
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "GET /tokens/{provider}/{connection_id}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"host": API_DOMAIN, "x-forwarded-proto": "https", "user-agent": "tokenbroker-bench"},
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "bench0000",
            "authorizer": CALLER,
            "domainName": API_DOMAIN,
            "domainPrefix": "bench0000",
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "tokenbroker-bench",
            },
            "requestId": uuid.uuid4().hex[:16],
            "routeKey": "GET /tokens/{provider}/{connection_id}",
            "stage": "$default",
            "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "pathParameters": {"provider": provider, "connection_id": connection_id},
        "isBase64Encoded": False,
    }
    if min_ttl is not None:
        event["queryStringParameters"] = {"min_ttl": str(min_ttl)}
    return event


def sqs_event(bodies: Sequence[str], *, queue_arn: str) -> dict[str, Any]:
    """An SQS event source batch carrying ``bodies`` (what Lambda's event source mapping delivers)."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": uuid.uuid4().hex,
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for body in bodies
        ]
    }


def schedule_event() -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": ACCOUNT_ID,
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [],
        "detail": {},
    }


def context_for(topology: Topology, logical_id: str) -> LambdaContext:
    function: FunctionSpec = topology.functions[logical_id]
    return LambdaContext.for_function(function, region=REGION, account_id=ACCOUNT_ID)


def function_id(topology: Topology, code_dir: str, handler: str = "app.lambda_handler") -> str:
    """The logical id of the function with CodeUri ``functions/<code_dir>/`` and this Handler."""
    for logical_id, function in topology.functions.items():
        if function.code_dir.name == code_dir and function.handler == handler:
            return logical_id
    raise KeyError(f"template.yaml has no function functions/{code_dir}/ {handler}")
