"""The wire contract of the IAM API: every request and answer shape, and their parsers, once.

The vend function (both transports), ``VendingService`` answers and the consumer SDK all use these
shapes; docs/openapi.json is generated from them. Stdlib and ``tokenbroker.errors``/``keys`` only:
the SDK imports this module, and pydantic must stay off the vend function's cold path.

No ``from __future__ import annotations`` here: TypedDict computes ``__required_keys__`` from real
annotations (string annotations would make every ``NotRequired`` key required), and the body
parsers derive their known fields from those keys.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict, cast

from tokenbroker.errors import InvalidInput
from tokenbroker.keys import ConnectionKey, validate_connection_id, validate_provider_name

MIN_TTL_DEFAULT = 60
MIN_TTL_MAX = 86_400
LIST_LIMIT_DEFAULT = 50
LIST_LIMIT_MAX = 100
MAX_CURSOR_LENGTH = 2048
MAX_RETURN_TO_LENGTH = 2048
MAX_END_USER_ID_LENGTH = 256
SHA256_HEX_LENGTH = 64
_HEX = frozenset("0123456789abcdef")


# --- shapes (class names are the OpenAPI schema names: keep them; no docstrings, they would
# become schema descriptions) ----------------------------------------------------------------------


class TokenAnswer(TypedDict):
    access_token: str
    token_type: str
    expires_at: int
    expires_in: int
    scopes: list[str]
    generation: int
    metadata: dict[str, str]


class RefreshRequest(TypedDict, total=False):
    rejected_token_sha256: str


class LastErrorAnswer(TypedDict):
    code: str
    message: str
    at: float


class ConnectionAnswer(TypedDict):
    provider: str
    connection_id: str
    status: str
    generation: int
    expires_at: float | None
    refresh_expires_at: float | None
    next_refresh_at: float | None
    refresh_in_progress: bool
    failures: int
    last_error: LastErrorAnswer | None
    metadata: dict[str, str]
    scopes: list[str]
    created_at: float
    updated_at: float


class ConnectionListAnswer(TypedDict):
    connections: list[ConnectionAnswer]
    cursor: str | None


class ConnectSessionRequest(TypedDict):
    provider: str
    connection_id: str
    return_to: NotRequired[str]
    scopes: NotRequired[list[str]]
    metadata: NotRequired[dict[str, str]]
    end_user_id: NotRequired[str]
    confirm: NotRequired[bool]


class ConnectSessionAnswer(TypedDict):
    connect_url: str
    expires_at: int
    session_id: str


class ConfirmRequest(TypedDict):
    end_user_id: str


class DeletedAnswer(TypedDict):
    # Direct invoke only: HTTP answers a delete with 204 and no body.
    deleted: bool
    provider: str
    connection_id: str


class ErrorAnswer(TypedDict):
    error: str
    message: str
    retry_after: NotRequired[int]


def fields_of(shape: type) -> frozenset[str]:
    """Every key a TypedDict declares: the fields a request body may carry."""
    keys: frozenset[str] = getattr(shape, "__required_keys__", frozenset()) | getattr(
        shape, "__optional_keys__", frozenset()
    )
    return keys


def error_answer(code: str, message: str, retry_after: int | None = None) -> ErrorAnswer:
    answer: ErrorAnswer = {"error": code, "message": message}
    if retry_after is not None:
        answer["retry_after"] = retry_after
    return answer


# --- request parsers: each input's rules, for both transports ------------------------------------


def body_object(raw: str | None, allowed: frozenset[str]) -> dict[str, Any]:
    """An HTTP body: empty means ``{}``, else a JSON object with only ``allowed`` fields."""
    if raw is None or not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than the parser goes
        raise InvalidInput("the body must be JSON", field="body") from None
    return known_fields(body, allowed)


def known_fields(body: object, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    unknown = sorted(set(body) - allowed)
    if unknown:
        # Names only, never values: a caller may have sent a token by mistake.
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)[:200]}", field="body")
    return body


def parse_key(provider: object, connection_id: object) -> ConnectionKey:
    return ConnectionKey(validate_provider_name(provider), validate_connection_id(connection_id))


def parse_provider(value: object) -> str:
    if value is None:
        raise InvalidInput("provider is required", field="provider")
    return validate_provider_name(value)


def validate_min_ttl(value: object) -> int:
    """``min_ttl`` in seconds, 0..86400; strings are parsed strictly (query strings)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MIN_TTL_MAX:
        raise InvalidInput(f"min_ttl must be an integer from 0 to {MIN_TTL_MAX}", field="min_ttl")
    return value


def parse_min_ttl(value: object) -> int:
    return MIN_TTL_DEFAULT if value is None else validate_min_ttl(value)


def parse_limit(value: object) -> int:
    if value is None:
        return LIST_LIMIT_DEFAULT
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIST_LIMIT_MAX:
        raise InvalidInput(f"limit must be an integer from 1 to {LIST_LIMIT_MAX}", field="limit")
    return value


def parse_cursor(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_CURSOR_LENGTH:
        raise InvalidInput("cursor must be the opaque string of a previous page", field="cursor")
    return value


def validate_token_sha256(value: object) -> str:
    if not isinstance(value, str) or len(value) != SHA256_HEX_LENGTH or not set(value) <= _HEX:
        raise InvalidInput(
            "rejected_token_sha256 must be the lower-case hex SHA-256 of the rejected access token",
            field="rejected_token_sha256",
        )
    return value


def parse_rejected(value: object) -> str | None:
    return None if value is None else validate_token_sha256(value)


def parse_end_user_id(value: object) -> str:
    end_user_id = _optional_str(value, "end_user_id", MAX_END_USER_ID_LENGTH)
    if end_user_id is None:
        raise InvalidInput("end_user_id is required", field="end_user_id")
    return end_user_id


def parse_session_id(value: object) -> str:
    # Opaque here: the connect service looks it up (404 when unknown).
    if not isinstance(value, str):
        raise InvalidInput("session_id is required", field="session_id")
    return value


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A parsed ``ConnectSessionRequest``."""

    provider: str
    connection_id: str
    return_to: str | None
    scopes: list[str] | None
    metadata: dict[str, str] | None
    end_user_id: str | None = None
    confirm: bool = False

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> "ConnectRequest":
        scopes = body.get("scopes")
        if scopes is not None and not isinstance(scopes, list):
            raise InvalidInput("scopes must be a list of strings", field="scopes")
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidInput("metadata must be an object of strings", field="metadata")
        confirm = body.get("confirm", False)
        if not isinstance(confirm, bool):
            raise InvalidInput("confirm must be true or false", field="confirm")
        return cls(
            provider=validate_provider_name(body.get("provider")),
            connection_id=validate_connection_id(body.get("connection_id")),
            return_to=_optional_str(body.get("return_to"), "return_to", MAX_RETURN_TO_LENGTH),
            scopes=scopes,
            metadata=metadata,
            end_user_id=_optional_str(body.get("end_user_id"), "end_user_id", MAX_END_USER_ID_LENGTH),
            confirm=confirm,
        )


def _optional_str(value: object, name: str, max_length: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= max_length:
        raise InvalidInput(f"{name} must be a string of at most {max_length} characters", field=name)
    return value


# --- answer readers: the consumer side of the same shapes -----------------------------------------


class MalformedAnswer(ValueError):
    """An answer that does not have the contract's shape (the SDK reports it as ``BrokerError``)."""


def read_token_answer(data: object) -> TokenAnswer:
    """A ``TokenAnswer`` from a decoded body; optional-looking fields default as the broker would."""
    body = _object(data)
    try:
        return {
            "access_token": str(body["access_token"]),
            "token_type": str(body.get("token_type") or "Bearer"),
            "expires_at": int(body["expires_at"]),
            "expires_in": int(body["expires_in"]),
            "scopes": [str(scope) for scope in body.get("scopes") or ()],
            "generation": int(body.get("generation") or 0),
            "metadata": {str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise MalformedAnswer("the broker answered without a usable token") from None


def read_connection_answer(data: object) -> ConnectionAnswer:
    body = _object(data)
    try:
        return {
            "provider": str(body["provider"]),
            "connection_id": str(body["connection_id"]),
            "status": str(body["status"]),
            "generation": int(body.get("generation") or 0),
            "expires_at": body.get("expires_at"),
            "refresh_expires_at": body.get("refresh_expires_at"),
            "next_refresh_at": body.get("next_refresh_at"),
            "refresh_in_progress": bool(body.get("refresh_in_progress")),
            "failures": int(body.get("failures") or 0),
            "last_error": body.get("last_error"),
            "metadata": dict(body.get("metadata") or {}),
            "scopes": list(body.get("scopes") or ()),
            "created_at": body.get("created_at") or 0.0,
            "updated_at": body.get("updated_at") or 0.0,
        }
    except (KeyError, TypeError, ValueError):
        raise MalformedAnswer("the broker answered without a usable connection") from None


def read_connect_session_answer(data: object) -> ConnectSessionAnswer:
    body = _object(data)
    try:
        return {
            "connect_url": str(body["connect_url"]),
            "expires_at": int(body["expires_at"]),
            "session_id": str(body.get("session_id") or ""),
        }
    except (KeyError, TypeError, ValueError):
        raise MalformedAnswer("the broker answered without a usable connect link") from None


def _object(data: object) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise MalformedAnswer("the broker answered with an unexpected body")
    return cast(Mapping[str, Any], data)
