"""The redacting log formatter: secrets never reach a log line, by field name or by value."""

from __future__ import annotations

import io
import json
import logging
import uuid

from aws_lambda_powertools import Logger
from tokenbroker.models import PasswordLogin
from tokenbroker.observability import NoTracer, RedactingFormatter, tracing_enabled
from tokenbroker.providers.base import AppCredentials
from tokenbroker.redaction import MASK, redact, remember_secret
from tokenbroker.tokens import TokenSet


def _logger() -> tuple[Logger, io.StringIO]:
    stream = io.StringIO()
    logger = Logger(
        # Powertools reuses a logger per service name: a fresh name gives this test its own stream.
        service=f"redaction-test-{uuid.uuid4().hex}",
        logger_formatter=RedactingFormatter(),
        logger_handler=logging.StreamHandler(stream),
    )
    return logger, stream


def test_secret_fields_are_masked_wherever_they_appear() -> None:
    logger, stream = _logger()
    logger.info("answer", extra={"body": {"access_token": "field-only-1", "nested": [{"password": "pw-field-2"}]}})
    line = stream.getvalue()
    assert "field-only-1" not in line
    assert "pw-field-2" not in line
    assert json.loads(line)["body"]["access_token"] == MASK


def test_values_of_tokens_credentials_and_logins_are_masked_in_free_text() -> None:
    token = TokenSet(
        access_token="acc-7f3c9e1d2b", token_type="Bearer", expires_at=2, obtained_at=1, refresh_token="ref-5a8b0c4d6e"
    )
    AppCredentials("client-id", "client-secret-91ab")
    PasswordLogin("ann@example.com", "hunter2-correct-horse")
    logger, stream = _logger()
    logger.warning(
        "provider said: bad %s / %s / %s", token.refresh_token, "client-secret-91ab", "hunter2-correct-horse"
    )
    try:
        raise RuntimeError(f"boom {token.access_token}")
    except RuntimeError:
        logger.exception("failed")
    text = stream.getvalue()
    for secret in ("acc-7f3c9e1d2b", "ref-5a8b0c4d6e", "client-secret-91ab", "hunter2-correct-horse"):
        assert secret not in text
    assert text.count(MASK) >= 4


def test_short_values_are_not_treated_as_secrets() -> None:
    remember_secret("abc")  # too short: replacing it would mangle ordinary words
    assert redact("abcdef") == "abcdef"


def test_reprs_hide_secrets() -> None:
    token = TokenSet(
        access_token="repr-access-1", token_type="b", expires_at=1, obtained_at=0, refresh_token="repr-r-2"
    )
    login = PasswordLogin("ann@example.com", "repr-password-3")
    assert "repr-access-1" not in repr(token) and "repr-r-2" not in repr(token)
    assert "repr-password-3" not in repr(login)


def test_tracing_only_inside_lambda_and_never_when_disabled() -> None:
    assert tracing_enabled({"AWS_LAMBDA_FUNCTION_NAME": "vend"})
    assert not tracing_enabled({"AWS_LAMBDA_FUNCTION_NAME": "vend", "POWERTOOLS_TRACE_DISABLED": "true"})
    assert not tracing_enabled({})


def test_no_tracer_keeps_the_handler_itself() -> None:
    def handler(event: dict[str, str], context: object) -> str:
        return "answer"

    assert NoTracer().capture_lambda_handler(capture_response=False)(handler) is handler
    assert NoTracer().capture_lambda_handler(handler) is handler


def test_a_secret_that_json_escapes_is_masked_in_the_final_line() -> None:
    PasswordLogin("ann@example.com", 'p"ss\\wörd-42')
    logger, stream = _logger()
    logger.info("login failed for %s", 'p"ss\\wörd-42')
    line = stream.getvalue()
    assert "ss\\\\w" not in line and "wörd-42" not in line and "w\\u00f6rd" not in line
    assert MASK in json.loads(line)["message"]
