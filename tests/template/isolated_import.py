"""Import, initialise and invoke one built Lambda function with nothing but its code and the layer.

Run as ``python -I -S isolated_import.py '<json spec>'`` by ``buildcheck``: ``-I`` ignores PYTHON*
variables, the user site and the script's own folder; ``-S`` skips ``site``, so no
site-packages exist. This script then puts exactly the function's build folder and the layer's
``python/`` folder first on ``sys.path``, as Lambda does (/var/task, then /opt/python), so an
import that works here works on Lambda and a dependency missing from the layer fails here.

Stdlib only. Any socket use is refused and reported: initialising a handler must not reach
the network (AWS_ENDPOINT_URL points at a closed loopback port as a second net).
Prints one line ``RESULT <json>`` with what happened.
"""

from __future__ import annotations

import importlib
import json
import socket
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any

RESULT_PREFIX = "RESULT "
# Lazy-initialisation hooks the handlers expose (first found is called): they build every
# collaborator from the environment, as the first request of a cold start does.
INIT_HOOKS = ("services", "get_service")


class _FakeContext:
    function_name = "buildcheck"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:buildcheck"
    memory_limit_in_mb = 512
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/buildcheck"
    log_stream_name = "buildcheck"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def _http_event() -> dict[str, Any]:
    """An HTTP API (v2) request for a route no handler serves: a 404 that touches no AWS API."""
    path = "/__buildcheck__/no-such-route"
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "example.execute-api.us-east-1.amazonaws.com", "user-agent": "buildcheck"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "example",
            "domainName": "example.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "example",
            # As API Gateway passes a SigV4-verified caller, so that an IAM-only handler routes it.
            "authorizer": {
                "iam": {
                    "accessKey": "AKIAEXAMPLE",
                    "accountId": "123456789012",
                    "callerId": "AIDAEXAMPLE",
                    "principalOrgId": None,
                    "userArn": "arn:aws:iam::123456789012:user/buildcheck",
                    "userId": "AIDAEXAMPLE",
                }
            },
            "http": {
                "method": "GET",
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "buildcheck",
            },
            "requestId": "buildcheck",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 1767225600000,
        },
        "isBase64Encoded": False,
    }


_MESSAGE_ID = "buildcheck-malformed-message"


def _sqs_event() -> dict[str, Any]:
    """One SQS record whose body is not a refresh message: the worker rejects it before any
    store is used, so it never reaches AWS."""
    return {
        "Records": [
            {
                "messageId": _MESSAGE_ID,
                "receiptHandle": "buildcheck",
                "body": "{}",
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1767225600000"},
                "messageAttributes": {},
                "md5OfBody": "99914b932bd37a50b983c5e7c90ae93b",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:buildcheck",
                "awsRegion": "us-east-1",
            }
        ]
    }


class _NetworkGuard:
    """Refuses every outgoing connection and remembers who tried."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def install(self) -> None:
        guard = self

        def refuse(_self: socket.socket, address: object, *args: object) -> Any:
            guard.attempts.append(repr(address))
            raise OSError(f"buildcheck: network access to {address!r} refused")

        socket.socket.connect = refuse  # type: ignore[method-assign,assignment]
        socket.socket.connect_ex = refuse  # type: ignore[method-assign,assignment]
        socket.socket.sendto = refuse  # type: ignore[method-assign,assignment]


def _outside(allowed: list[Path]) -> list[str]:
    """Modules loaded from anywhere but the allowed folders (function, layer, standard library)."""
    found = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not file or name in ("__main__", "__mp_main__"):
            continue
        path = Path(file).resolve()
        if not any(path.is_relative_to(root) for root in allowed):
            found.append(f"{name} ({path})")
    return sorted(found)


def main(spec: dict[str, Any]) -> dict[str, Any]:
    function_dir = Path(spec["function_dir"]).resolve()
    layer_dir = Path(spec["layer_dir"]).resolve()
    sys.path[:0] = [str(function_dir), str(layer_dir)]
    stdlib = [Path(sysconfig.get_paths()[key]).resolve() for key in ("stdlib", "platstdlib")]
    result: dict[str, Any] = {"ok": False, "stage": "import", "sys_path": list(sys.path)}
    guard = _NetworkGuard()
    guard.install()
    try:
        module_name, _, attribute = spec["handler"].rpartition(".")
        module = importlib.import_module(module_name)
        handler = getattr(module, attribute)
        if not callable(handler):
            raise TypeError(f"{spec['handler']} is not callable")
        result["module_file"] = str(Path(module.__file__ or "").resolve())

        result["stage"] = "initialise"
        hook = next((getattr(module, name) for name in INIT_HOOKS if callable(getattr(module, name, None))), None)
        if hook is None:
            raise LookupError(f"{module_name} exposes none of the init hooks {INIT_HOOKS}")
        result["initialised"] = type(hook()).__name__

        result["stage"] = "invoke"
        trigger = spec.get("trigger")
        if trigger == "http":
            answer = handler(_http_event(), _FakeContext())
            result["invoked"] = {"trigger": trigger, "status": answer.get("statusCode")}
            if answer.get("statusCode") != 404:
                raise AssertionError(f"an unknown route answered {answer.get('statusCode')}, expected 404")
        elif trigger == "sqs":
            try:
                answer = handler(_sqs_event(), _FakeContext())
            except Exception as error:
                # Powertools fails the whole invocation when every record of a batch failed.
                if type(error).__name__ != "BatchProcessingError" or "InvalidInput" not in str(error):
                    raise
                answer = {"raised": type(error).__name__, "record_error": "InvalidInput"}
            result["invoked"] = {"trigger": trigger, "answer": answer}
            if answer.get("record_error") != "InvalidInput":
                raise AssertionError(f"a malformed message answered {answer!r}, expected it rejected")
        result["stage"] = "done"
        result["ok"] = True
    except BaseException as error:  # everything is reported to the parent
        result["error"] = f"{type(error).__name__}: {error}"
        result["traceback"] = traceback.format_exc(limit=8)
    result["foreign_modules"] = _outside([function_dir, layer_dir, *stdlib])
    result["network_attempts"] = guard.attempts
    if result["foreign_modules"] or result["network_attempts"]:
        result["ok"] = False
    return result


if __name__ == "__main__":
    outcome = main(json.loads(sys.argv[1]))
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(outcome), flush=True)
