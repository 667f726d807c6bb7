"""Powertools Logger, Metrics and Tracer for every handler, with secrets redacted from logs."""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.types import LogRecord

from tokenbroker.redaction import SECRETS, redact

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "tokenbroker")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "TokenBroker")


class RedactingFormatter(LambdaPowertoolsFormatter):
    """Masks secret fields and every remembered secret value before a record is serialised."""

    def serialize(self, log: LogRecord) -> str:
        redacted: Any = redact(dict(log))
        # A last pass over the final line catches a secret that a json_default produced.
        return SECRETS.scrub(super().serialize(redacted))


logger = Logger(service=SERVICE, logger_formatter=RedactingFormatter())
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# Responses are never captured: they carry tokens.
tracer = Tracer(service=SERVICE)
