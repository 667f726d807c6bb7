"""Connection identity. Validated before any AWS call: ids become part of secret names and IAM ARNs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tokenbroker.errors import InvalidInput

CONNECTION_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
# The pattern admits them, but "." and ".." are path segments: in a secret name or a route ARN
# (tokenbroker/<stage>/<provider>/..) they would point at a different resource.
DOT_SEGMENTS = frozenset({".", ".."})
PROVIDER_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# tokenbroker/<stage>/apps/<provider> holds app credentials: no provider may share that prefix.
RESERVED_PROVIDER_NAMES = frozenset({"apps"})


def validate_connection_id(value: object) -> str:
    """``value`` when it is a usable connection id, else InvalidInput (HTTP 400)."""
    if not isinstance(value, str) or not CONNECTION_ID_PATTERN.fullmatch(value):
        raise InvalidInput("connection_id must match [A-Za-z0-9._-]{1,128}", field="connection_id")
    if value in DOT_SEGMENTS:
        raise InvalidInput(
            "connection_id must not be '.' or '..' (it becomes part of a secret name and an IAM ARN)",
            field="connection_id",
        )
    return value


def validate_provider_name(value: object) -> str:
    if not isinstance(value, str) or not PROVIDER_NAME_PATTERN.fullmatch(value):
        raise InvalidInput("provider must be a lower-case catalog name", field="provider")
    if value in RESERVED_PROVIDER_NAMES:
        raise InvalidInput(f"{value!r} is reserved and cannot name a provider", field="provider")
    return value


@dataclass(frozen=True, slots=True)
class ConnectionKey:
    provider: str
    connection_id: str

    def __post_init__(self) -> None:
        validate_provider_name(self.provider)
        validate_connection_id(self.connection_id)

    def __str__(self) -> str:
        return f"{self.provider}/{self.connection_id}"
