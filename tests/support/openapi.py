"""docs/openapi.json, generated from the vend function's Powertools resolver.

``python -m tests.support.openapi`` rewrites the file; tests/unit/vending/test_openapi.py fails when
the committed file differs from what the resolver generates (``UPDATE_OPENAPI=1`` rewrites it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenbroker import __version__

from tests.support.handlers import load_function

OPENAPI_FILE = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
TITLE = "tokenbroker vending API"
DESCRIPTION = (
    "IAM routes of the tokenbroker HttpApi. Every request is signed with SigV4 (service execute-api); "
    "access per provider or connection is plain IAM on the route ARN. See docs/vending.md."
)
SIGV4 = {
    "type": "apiKey",
    "name": "Authorization",
    "in": "header",
    "description": "AWS Signature Version 4, service execute-api (API Gateway AWS_IAM authorizer)",
}


def generate() -> str:
    app = load_function("vend").app
    schema: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(
            title=TITLE,
            version=__version__,
            description=DESCRIPTION,
            security_schemes={"sigv4": SIGV4},
            security=[{"sigv4": []}],
        )
    )
    _drop_unused_components(schema)
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def _drop_unused_components(schema: dict[str, Any]) -> None:
    """Powertools always adds its 422 validation-error schemas; this API never answers 422."""
    schemas: dict[str, Any] = schema.get("components", {}).get("schemas", {})
    while True:
        text = json.dumps({k: v for k, v in schema.items() if k != "components"}) + json.dumps(schemas)
        unused = [name for name in schemas if f'"#/components/schemas/{name}"' not in text]
        if not unused:
            return
        for name in unused:
            del schemas[name]


def main() -> None:
    OPENAPI_FILE.parent.mkdir(parents=True, exist_ok=True)
    OPENAPI_FILE.write_text(generate())
    print(f"wrote {OPENAPI_FILE}")


if __name__ == "__main__":
    main()
