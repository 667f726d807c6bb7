"""PKCE S256 (RFC 7636)."""

from __future__ import annotations

import re

import pytest
from tokenbroker.providers import new_pkce_pair, pkce_challenge


def test_rfc7636_appendix_b_vector() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_pair_is_a_valid_fresh_verifier_and_its_challenge() -> None:
    verifier, challenge = new_pkce_pair()
    assert re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier)
    assert challenge == pkce_challenge(verifier)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge)  # 32 bytes, base64url, no padding
    assert new_pkce_pair()[0] != verifier


@pytest.mark.parametrize("verifier", ["short", "x" * 129, "has space" + "x" * 40, "ü" * 50])
def test_invalid_verifiers_are_refused(verifier: str) -> None:
    with pytest.raises(ValueError, match="43-128"):
        pkce_challenge(verifier)
