"""docs/openapi.json is what the vend function's resolver generates (UPDATE_OPENAPI=1 rewrites it)."""

from __future__ import annotations

import json
import os

from tests.support.openapi import OPENAPI_FILE, generate


def test_the_committed_openapi_document_matches_the_resolver() -> None:
    generated = generate()
    if os.environ.get("UPDATE_OPENAPI") == "1":
        OPENAPI_FILE.write_text(generated)
    assert OPENAPI_FILE.exists(), "run: UPDATE_OPENAPI=1 .venv/bin/pytest tests/unit/vending/test_openapi.py"
    assert OPENAPI_FILE.read_text() == generated, (
        "docs/openapi.json is stale; run: UPDATE_OPENAPI=1 .venv/bin/pytest tests/unit/vending/test_openapi.py"
    )


def test_the_document_covers_every_route_with_its_inputs_and_errors() -> None:
    document = json.loads(generate())
    operations = {
        (method.upper(), path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }
    assert set(operations) == {
        ("GET", "/tokens/{provider}/{connection_id}"),
        ("POST", "/tokens/{provider}/{connection_id}/refresh"),
        ("GET", "/connections/{provider}/{connection_id}"),
        ("GET", "/connections"),
        ("DELETE", "/connections/{provider}/{connection_id}"),
        ("POST", "/connect-sessions"),
        ("POST", "/connect-sessions/{session_id}/confirm"),
    }
    vend = operations[("GET", "/tokens/{provider}/{connection_id}")]
    min_ttl = next(p for p in vend["parameters"] if p["name"] == "min_ttl")
    assert min_ttl["in"] == "query" and min_ttl["schema"]["default"] == 60
    assert set(vend["responses"]) == {"200", "400", "403", "404", "409", "503"}
    assert "Retry-After" in vend["responses"]["503"]["headers"]
    listing = operations[("GET", "/connections")]
    assert {(p["name"], p["required"]) for p in listing["parameters"]} == {
        ("provider", True),
        ("limit", False),
        ("cursor", False),
    }
    assert "201" in operations[("POST", "/connect-sessions")]["responses"]
    confirm = operations[("POST", "/connect-sessions/{session_id}/confirm")]
    assert set(confirm["responses"]) == {"200", "400", "403", "404", "409", "410"}
    session = document["components"]["schemas"]["ConnectSessionRequest"]["properties"]
    assert session["confirm"]["type"] == "boolean" and session["end_user_id"]["type"] == "string"
    assert "204" in operations[("DELETE", "/connections/{provider}/{connection_id}")]["responses"]
    token = document["components"]["schemas"]["TokenAnswer"]
    assert "refresh_token" not in token["properties"]
    assert set(token["required"]) == {
        "access_token",
        "token_type",
        "expires_at",
        "expires_in",
        "scopes",
        "generation",
        "metadata",
    }
