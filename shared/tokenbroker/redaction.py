"""Keeps secrets out of logs, pages and error bodies.

Two nets, because either alone leaks: field names that always hold secrets are masked wherever
they appear in structured data, and every secret value this process has handled is remembered
(bounded, most recent first) so that it is masked even when it hides inside free text, such as a
provider's error description or an exception message.

``code`` is deliberately not a secret field name (error codes are useful in logs): whoever
receives an authorization code registers it with ``remember_secret``.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

MASK = "***"
# Values shorter than this are too likely to collide with ordinary words to be replaced in text.
MIN_SECRET_LENGTH = 8
MAX_REMEMBERED = 2048

SECRET_FIELD_NAMES = frozenset(
    {
        "access_token",
        "refresh_token",
        "id_token",
        "authorization_code",
        "code_verifier",
        "password",
        "client_secret",
        "authorization",
        "x-amz-security-token",
        "secretstring",
        "secret_string",
        "login",
        "token",
    }
)


class SecretRegistry:
    def __init__(self, capacity: int = MAX_REMEMBERED) -> None:
        self._capacity = capacity
        self._values: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, *values: str | None) -> None:
        with self._lock:
            for value in values:
                if value and len(value) >= MIN_SECRET_LENGTH:
                    # Also as it appears inside a JSON log line (a password with a quote or an accent).
                    for form in {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}:
                        self._values[form] = None
                        self._values.move_to_end(form)
            while len(self._values) > self._capacity:
                self._values.popitem(last=False)

    def scrub(self, text: str) -> str:
        with self._lock:
            candidates = [value for value in self._values if value in text]
        # Longest first, so that a secret containing another is masked whole.
        for value in sorted(candidates, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text


SECRETS = SecretRegistry()


def remember_secret(*values: str | None) -> None:
    """Declare values as secret for the life of this process (masked in every log line)."""
    SECRETS.remember(*values)


def redact(value: Any, *, scrub_values: bool = True) -> Any:
    """A copy of ``value`` with secret fields masked and (by default) remembered secret values scrubbed.

    ``scrub_values=False`` masks fields only, for a caller that scrubs the serialised result once
    (the log formatter: one pass over the final line instead of one per string field).
    """
    if isinstance(value, str):
        return SECRETS.scrub(value) if scrub_values else value
    if isinstance(value, Mapping):
        return {
            key: MASK if str(key).lower() in SECRET_FIELD_NAMES and item else redact(item, scrub_values=scrub_values)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item, scrub_values=scrub_values) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else (an exception, a dataclass) is serialised with str() later: scrub that form.
    return SECRETS.scrub(str(value)) if scrub_values else str(value)
