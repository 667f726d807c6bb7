"""Every deployed handler logs with Powertools' Lambda context and a correlation id, and traces
without recording responses (they carry tokens, codes and redirect URLs).

Static part: the decorators on each handler the template names. Dynamic part: an HTTP handler's
log line carries the API Gateway request id as ``correlation_id``.
"""

from __future__ import annotations

import ast
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from tokenbroker.errors import TokenBrokerError
from tokenbroker.observability import logger

from tests.support.handlers import load_function
from tests.template.sam import ROOT, load, resources_of

HTTP_EVENT_TYPES = {"HttpApi", "Api"}


def handlers() -> dict[str, tuple[Path, str, set[str]]]:
    """Function logical id -> (app.py, handler function name, event types)."""
    found = {}
    for name, function in resources_of(load(), "AWS::Serverless::Function").items():
        properties = function["Properties"]
        module, _, attribute = properties["Handler"].rpartition(".")
        path = ROOT / properties["CodeUri"] / f"{module}.py"
        found[name] = (path, attribute, {e["Type"] for e in properties.get("Events", {}).values()})
    return found


def decorators(path: Path, function_name: str) -> dict[str, ast.Call]:
    """``name -> call`` for decorators like ``@logger.inject_lambda_context(...)``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    [function] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function_name]
    found = {}
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute):
            found[decorator.func.attr] = decorator
    return found


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_every_handler_injects_the_lambda_context_and_traces_without_responses() -> None:
    found = handlers()
    assert len(found) == 4
    for name, (path, function_name, events) in found.items():
        decorated = decorators(path, function_name)
        assert "inject_lambda_context" in decorated, name
        tracing = decorated.get("capture_lambda_handler")
        assert tracing is not None, f"{name} is not traced"
        response = keyword(tracing, "capture_response")
        assert isinstance(response, ast.Constant) and response.value is False, f"{name} would trace its response"
        if events & HTTP_EVENT_TYPES:
            path_kw = keyword(decorated["inject_lambda_context"], "correlation_id_path")
            assert ast.unparse(path_kw or ast.Constant(None)) == "correlation_paths.API_GATEWAY_HTTP", name
        log_event = keyword(decorated["inject_lambda_context"], "log_event")
        assert log_event is None or (isinstance(log_event, ast.Constant) and log_event.value is False), name


def test_no_traced_method_records_its_response() -> None:
    for root in (ROOT / "shared" / "tokenbroker", ROOT / "functions"):
        for path in root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("capture_method", "capture_lambda_handler")
                ):
                    response = keyword(node, "capture_response")
                    assert isinstance(response, ast.Constant) and response.value is False, f"{path}:{node.lineno}"


@contextmanager
def powertools_lines() -> Iterator[list[dict[str, Any]]]:
    """The JSON lines the library's Powertools logger writes, through its own (redacting) formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    target = logging.getLogger(logger.name)
    target.addHandler(handler)
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        target.removeHandler(handler)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{"))


class LambdaContext:
    function_name = "Fn"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:Fn"
    aws_request_id = "lambda-request-1"

    def get_remaining_time_in_millis(self) -> int:
        return 10_000


def http_event(method: str, path: str, request_id: str, *, iam: bool) -> dict[str, Any]:
    context: dict[str, Any] = {
        "accountId": "123456789012",
        "apiId": "abcdef1234",
        "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "198.51.100.7"},
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
    }
    if iam:
        context["authorizer"] = {"iam": {"userArn": "arn:aws:iam::123456789012:role/caller", "callerId": "AROA:x"}}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": context["domainName"]},
        "requestContext": context,
        "isBase64Encoded": False,
    }


class Failing:
    """Any method call fails: the handler logs the failure, which is the line under test."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def fail(*args: object, **kwargs: object) -> NoReturn:
            raise self.error

        return fail


def test_a_callback_log_line_carries_the_api_request_id() -> None:
    callback = load_function("callback")
    callback.use_service(Failing(TokenBrokerError("session expired")))
    try:
        with powertools_lines() as lines:
            answer = callback.lambda_handler(http_event("GET", "/connect/abc", "req-cb-7", iam=False), LambdaContext())
    finally:
        callback.use_service(None)
    assert answer["statusCode"] >= 400
    [line] = [line for line in lines if line["message"] == "connect request failed"]
    assert line["correlation_id"] == "req-cb-7"
    assert line["function_request_id"] == "lambda-request-1"
    assert line["service"] == "tokenbroker"


def test_a_vend_log_line_carries_the_api_request_id() -> None:
    vend = load_function("vend")
    vend.use_services(vend.Services(vending=Failing(RuntimeError("boom")), connect=Failing(RuntimeError("boom"))))
    try:
        with powertools_lines() as lines:
            event = http_event("GET", "/tokens/workly/c-1", "req-vend-7", iam=True)
            answer = vend.lambda_handler(event, LambdaContext())
    finally:
        vend.use_services(None)
    assert answer["statusCode"] == 500
    [line] = [line for line in lines if line["message"] == "unexpected error"]
    assert line["correlation_id"] == "req-vend-7"
    assert line["function_request_id"] == "lambda-request-1"


class LoggingWorker:
    """Stands in for RefreshWorker: logs like it while handling a message."""

    def handle(self, body: str) -> None:
        logger.info("refresh message handled", extra={"body_size": len(body)})


def sqs_record(message_id: str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": "r",
        "body": '{"provider": "workly", "connection_id": "c-1", "due_at": 0}',
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:RefreshQueue",
        "awsRegion": "us-east-1",
    }


def test_worker_log_lines_carry_their_sqs_message_id_and_nothing_leaks_past_the_message() -> None:
    from tokenbroker.events import MemorySink  # noqa: PLC0415

    refresh = load_function("refresh")
    refresh.use_services(refresh.Services(worker=LoggingWorker(), events=MemorySink()))
    try:
        with powertools_lines() as lines:
            answer = refresh.worker_handler({"Records": [sqs_record("m-1"), sqs_record("m-2")]}, LambdaContext())
            logger.info("after the batch")
    finally:
        refresh.use_services(None)
    assert answer == {"batchItemFailures": []}
    handled = [line for line in lines if line["message"] == "refresh message handled"]
    assert [line["correlation_id"] for line in handled] == ["m-1", "m-2"]
    [after] = [line for line in lines if line["message"] == "after the batch"]
    assert "correlation_id" not in after
