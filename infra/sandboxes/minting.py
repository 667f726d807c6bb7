"""Random values that look like the real providers' tokens (shape only; nothing is signed)."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Mapping
from typing import Any


def hex_token(n_bytes: int = 20) -> str:
    """Workly style: 40 lowercase hex characters by default."""
    return secrets.token_hex(n_bytes)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_like(payload: Mapping[str, Any]) -> str:
    """An RS256-looking JWT: real header and payload, a random 2048-bit "signature"."""
    header = {"typ": "JWT", "alg": "RS256", "jti": payload.get("jti", "")}
    parts = [json.dumps(header, separators=(",", ":")), json.dumps(payload, separators=(",", ":"))]
    encoded = [b64url(p.encode()) for p in parts]
    return ".".join([*encoded, b64url(secrets.token_bytes(256))])


def league_opaque(n_bytes: int = 96) -> str:
    """league/oauth2-server encrypts refresh tokens and codes; they start with ``def50200``."""
    return "def50200" + secrets.token_hex(n_bytes)
