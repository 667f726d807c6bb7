"""Powertools Logger, Metrics and Tracer for every handler, with secrets redacted from logs."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.types import LogRecord

from tokenbroker.redaction import SECRETS, redact

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "tokenbroker")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "TokenBroker")


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Masks secret fields and every remembered secret value before a record is serialised."""

    def serialize(self, log: LogRecord) -> str:
        # Fields by name in the structure; values in one pass over the final line, which also
        # catches whatever a json_default produced.
        redacted: Any = redact(dict(log), scrub_values=False)
        return SECRETS.scrub(super().serialize(redacted))


F = TypeVar("F", bound=Callable[..., Any])


class NoTracer:
    """Powertools Tracer's decorators, doing nothing.

    Constructing a real ``Tracer`` imports the X-Ray SDK (about 0.1 s of cold start) even when
    tracing is disabled, so a process that will not trace never builds one. This class is also
    the typed face of the real Tracer: handlers only use these decorators.
    """

    @overload
    def capture_lambda_handler(self, lambda_handler: F, **options: bool) -> F: ...
    @overload
    def capture_lambda_handler(self, lambda_handler: None = None, **options: bool) -> Callable[[F], F]: ...
    def capture_lambda_handler(self, lambda_handler: F | None = None, **options: bool) -> F | Callable[[F], F]:
        return lambda_handler if lambda_handler is not None else _identity

    @overload
    def capture_method(self, method: F, **options: bool) -> F: ...
    @overload
    def capture_method(self, method: None = None, **options: bool) -> Callable[[F], F]: ...
    def capture_method(self, method: F | None = None, **options: bool) -> F | Callable[[F], F]:
        return method if method is not None else _identity


def _identity[G: Callable[..., Any]](function: G) -> G:
    return function


def tracing_enabled(env: dict[str, str] | None = None) -> bool:
    """Trace only inside Lambda and only when the stack has not switched tracing off."""
    env = dict(os.environ) if env is None else env
    disabled = env.get("POWERTOOLS_TRACE_DISABLED", "").lower() in {"1", "true", "yes"}
    return bool(env.get("AWS_LAMBDA_FUNCTION_NAME")) and not disabled


def _tracer() -> NoTracer:
    if not tracing_enabled():
        return NoTracer()
    from aws_lambda_powertools import Tracer  # noqa: PLC0415 - the X-Ray SDK only where it is used

    return cast(NoTracer, Tracer(service=SERVICE))  # same decorators, see NoTracer


logger = Logger(service=SERVICE, logger_formatter=RedactingFormatter())
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# Handlers decorate with capture_response=False everywhere: answers carry tokens.
tracer = _tracer()
