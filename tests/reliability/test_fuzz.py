"""Both HTTP APIs fuzzed from OpenAPI documents with schemathesis, against the running local stack.

- IAM routes: docs/openapi.json (generated from the vend function), every request SigV4-signed
  so it reaches the handler, valid and invalid data (positive and negative generation);
- public routes: harness/public_openapi.json (no generated document exists for them), with half of
  the connect requests aimed at a real, live Workly connect session so the form handler runs.

Checks: never a 5xx, every status and content type documented, every JSON answer matching its
schema; and no secret in any answer (the scan of test_security.py covers the logs).
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.reliability.harness.localstack import LiveStack
from tests.reliability.harness.results import NOTHING, REPO, Row, RowLog

pytestmark = pytest.mark.e2e

EXAMPLES = 40
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]

IAM_SCHEMA = schemathesis.openapi.from_path(REPO / "docs" / "openapi.json")
IAM_SCHEMA.config.generation.update(modes=MODES, max_examples=EXAMPLES)
PUBLIC_SCHEMA = schemathesis.openapi.from_path(Path(__file__).parent / "harness" / "public_openapi.json")
PUBLIC_SCHEMA.config.generation.update(modes=MODES, max_examples=EXAMPLES)

# Hypothesis reseeds the global ``random`` for every example: steering needs a generator of its own.
_steering = random.Random(20261122)
_statuses: dict[str, Counter[int]] = {}
_rows: dict[str, Row] = {}
_lock = threading.Lock()
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def live_session(stack: LiveStack) -> str:
    """A Workly connect session that stays valid: fuzzed passwords never sign in."""
    return urlsplit(stack.connect_link("workly", "fuzz-target")).path.rsplit("/", 1)[-1]


@pytest.fixture(scope="module")
def connected(stack: LiveStack) -> Iterator[str]:
    """A real Worksection connection, so vend routes also answer 200 sometimes."""
    stack.connect_worksection("fuzz")
    yield "fuzz"


@IAM_SCHEMA.parametrize()
@FUZZ_SETTINGS
def test_iam_api(case: schemathesis.Case, stack: LiveStack, connected: str, findings: RowLog) -> None:
    steer = _steering.random() < 0.3
    if steer and case.method != "DELETE" and "connection_id" in (case.path_parameters or {}):
        case.path_parameters = {**(case.path_parameters or {}), "provider": "worksection", "connection_id": connected}
    elif steer and case.path == "/connections":
        case.query = {**(case.query or {}), "provider": "worksection"}
    elif steer and case.path == "/connect-sessions" and isinstance(case.body, dict):
        case.body = {**case.body, "provider": "worksection"}
    response = case.call(base_url=stack.url, auth=stack.auth, timeout=15)
    stack.record_fuzzed(response, vend=case.path.startswith("/tokens/"))
    if case.path.startswith("/tokens/") and response.status_code == 200:
        stack.secrets.add(response.json().get("access_token"), kind="access token")
    count(findings, "IAM (SigV4-signed)", case, response.status_code)
    case.validate_response(response, checks=CHECKS)
    assert not stack.leaks([stack.answers[-1]], lines=[])


@PUBLIC_SCHEMA.parametrize()
@FUZZ_SETTINGS
def test_public_api(case: schemathesis.Case, stack: LiveStack, live_session: str, findings: RowLog) -> None:
    if "session" in (case.path_parameters or {}) and _steering.random() < 0.5:
        case.path_parameters = {"session": live_session}
    response = case.call(base_url=stack.url, timeout=15, allow_redirects=False)
    stack.record_fuzzed(response)
    count(findings, "public", case, response.status_code)
    case.validate_response(response, checks=CHECKS)
    assert not stack.leaks([stack.answers[-1]], lines=[])


def count(findings: RowLog, api: str, case: schemathesis.Case, status: int) -> None:
    """One row per operation, kept up to date example by example (the row is the test's own)."""
    label = f"{api} {case.operation.label}"
    with _lock:
        statuses = _statuses.setdefault(label, Counter())
        statuses[status] += 1
        row = _rows.get(label)
        if row is None or row not in findings.rows:
            row = findings.record(
                "fuzz",
                f"schemathesis: {label}",
                "local stack over HTTP",
                "positive and negative data: no 5xx, statuses and content types as documented, JSON answers "
                "match their schemas, no secret in any answer",
                NOTHING,
            )
            _rows[label] = row
        row.measures["requests"] = sum(statuses.values())
        row.measures["statuses"] = ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
