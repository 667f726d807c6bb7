"""Provider text is cleaned before it becomes part of a message; Retry-After in both forms."""

from __future__ import annotations

import pytest
from tokenbroker.providers.classify import MAX_RETRY_AFTER_SECONDS, parse_retry_after, sanitize, sanitize_code
from tokenbroker.redaction import remember_secret

NOW = 1_800_000_000.0


def test_sanitize_masks_explicit_and_remembered_secrets() -> None:
    remember_secret("remembered-secret-value")
    text = "bad pw hunter22 and remembered-secret-value here"
    assert sanitize(text, secrets=("hunter22",)) == "bad pw *** and *** here"


def test_sanitize_masks_jwts_and_long_opaque_runs_but_keeps_words() -> None:
    text = "Token eyJhbGciOi.eyJzdWIiOi.sig and abcdef0123456789ABCDEF0123 internationalization"
    assert sanitize(text) == "Token *** and *** internationalization"


def test_sanitize_removes_control_characters_and_truncates() -> None:
    assert sanitize("a\x00b\r\nc\u2028d\te") == "a b c d e"
    long = sanitize("word " * 100, limit=50)
    assert len(long) == 50 and long.endswith("…")


@pytest.mark.parametrize("value", [None, 42, ["x"], {"a": "b"}])
def test_sanitize_ignores_non_text(value: object) -> None:
    assert sanitize(value) == ""


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("invalid_grant", "invalid_grant"),
        (" invalid grant<script> ", "invalidgrantscript"),
        (7006, "7006"),
        (7006.0, "7006"),
        (True, None),
        ("", None),
        ("0123456789abcdef0123456789abcdef", None),
        (None, None),
    ],
)
def test_sanitize_code(value: object, code: str | None) -> None:
    assert sanitize_code(value) == code


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-30", 0.0),
        ("99999999", MAX_RETRY_AFTER_SECONDS),
        ("Fri, 15 Jan 2027 08:01:00 GMT", 60.0),
        ("Fri, 15 Jan 2027 07:00:00 GMT", 0.0),
        ("Friday, 15-Jan-27 08:00:10 GMT", 10.0),
        ("Fri, 15 Jan 2027 08:00:20 -0000", 20.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
        ("inf", MAX_RETRY_AFTER_SECONDS),
        ("Fri, 99 Foo 99999 99:99:99 GMT", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds
