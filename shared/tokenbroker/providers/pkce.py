"""PKCE (RFC 7636) with the S256 method only: ``plain`` protects nothing."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")


def pkce_challenge(verifier: str) -> str:
    """BASE64URL(SHA256(ASCII(verifier))) without padding."""
    if not _VERIFIER.fullmatch(verifier):
        raise ValueError("a PKCE verifier is 43-128 characters of [A-Za-z0-9._~-]")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_pkce_pair() -> tuple[str, str]:
    """A fresh ``(verifier, challenge)``: 64 random bytes give an 86-character verifier."""
    verifier = secrets.token_urlsafe(64)
    return verifier, pkce_challenge(verifier)
