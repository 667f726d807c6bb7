"""Successful provider answers -> ``TokenSet``, as pure functions.

Once an answer carries an access token it is accepted whatever else is odd about it: after a
rotating refresh the old refresh token may already be dead, so rejecting the answer over a strange
``expires_in`` or ``scope`` would lose the only valid grant. Odd fields fall back to safe values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tokenbroker.tokens import TokenSet

# An expiry further out than this is treated as a provider bug, not as "practically never".
MAX_EXPIRES_IN = 10 * 365 * 86_400
MAX_SCOPES = 256
MAX_SCOPE_CHARS = 256
_SCOPE_SPLIT = re.compile(r"[\s,]+")


def access_token_of(body: Mapping[str, Any]) -> str | None:
    value = body.get("access_token")
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def split_scopes(value: object) -> tuple[str, ...]:
    """Scopes from a string (commas and/or whitespace) or a list; order kept, duplicates dropped."""
    items: Iterable[object]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list | tuple):
        items = value
    else:
        return ()
    scopes: dict[str, None] = {}
    for item in items:
        if not isinstance(item, str):
            continue
        for scope in _SCOPE_SPLIT.split(item):
            if scope and len(scope) <= MAX_SCOPE_CHARS and scope.isprintable():
                scopes[scope] = None
                if len(scopes) >= MAX_SCOPES:
                    return tuple(scopes)
    return tuple(scopes)


def join_scopes(scopes: Sequence[str], separator: str) -> str:
    return separator.join(scope for scope in scopes if scope)


def expires_in_seconds(value: object, fallback: int) -> int:
    """``expires_in`` as whole seconds; missing, non-positive or garbage -> the catalog's lifetime."""
    seconds: float
    if isinstance(value, bool):
        return fallback
    if isinstance(value, int | float | str):
        try:
            seconds = float(value.strip() if isinstance(value, str) else value)
        except (ValueError, OverflowError):
            return fallback
    else:
        return fallback
    if not math.isfinite(seconds) or seconds <= 0:
        return fallback
    # At least a second: 0.5 must not become 0, a token that expires the moment it arrives.
    return max(1, int(min(seconds, MAX_EXPIRES_IN)))


def normalise_token_type(value: object) -> str:
    """``bearer`` in any case becomes ``Bearer``; anything else is kept (bounded) as given."""
    if not isinstance(value, str) or not value.strip():
        return "Bearer"
    text = value.strip()
    if text.lower() == "bearer":
        return "Bearer"
    cleaned = "".join(ch for ch in text if ch.isprintable())[:32]
    return cleaned or "Bearer"


def token_set_from_body(
    body: Mapping[str, Any],
    *,
    now: float,
    fallback_ttl: int,
    requested_scopes: Sequence[str] = (),
    extra: Mapping[str, str] | None = None,
) -> TokenSet:
    """The token in a successful answer. ``now`` is when the answer arrived."""
    access_token = access_token_of(body)
    if access_token is None:
        raise ValueError("answer has no access_token")
    refresh = body.get("refresh_token")
    refresh_token = refresh.strip() if isinstance(refresh, str) and refresh.strip() else None
    # RFC 6749 5.1: an omitted scope means "as requested".
    scopes = split_scopes(body.get("scope")) or split_scopes(body.get("scopes")) or tuple(requested_scopes)
    return TokenSet(
        access_token=access_token,
        refresh_token=refresh_token,
        token_type=normalise_token_type(body.get("token_type")),
        expires_at=int(now + expires_in_seconds(body.get("expires_in"), fallback_ttl)),
        obtained_at=int(now),
        scopes=scopes,
        extra=dict(extra or {}),
    )
