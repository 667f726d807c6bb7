"""Fixtures of the reliability suite: the row log behind docs/reliability.md, and shared servers.

Every test that injects a fault takes ``findings`` and records what happened. The rows of a run are
written when the session ends (one file per xdist worker, grouped by xdist's run id) and
``python -m tests.reliability.harness.render`` turns the newest run into docs/reliability.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator

import pytest

from tests.reliability.harness.localstack import LiveStack, live_stack
from tests.reliability.harness.results import Row, RowLog, prune_runs, write_rows

_RESULT_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
_SESSION_ROWS: list[Row] = []


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    item.stash.setdefault(_RESULT_KEY, {})[report.when] = report
    return report


def _result_of(item: pytest.Item) -> str:
    reports = item.stash.get(_RESULT_KEY, {})
    if any(r.failed for r in reports.values()):
        return "failed"
    call = reports.get("call")
    return "passed" if call is not None and call.passed else "not run"


@pytest.fixture
def findings(request: pytest.FixtureRequest) -> Iterator[RowLog]:
    """Record rows for the docs table; they get this test's id and final result."""
    log = RowLog(test=request.node.nodeid)
    yield log
    result = _result_of(request.node)
    for row in log.rows:
        row.result = result
    _SESSION_ROWS.extend(log.rows)


@pytest.fixture(scope="session", autouse=True)
def _write_rows_at_the_end(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    workerinput = getattr(request.config, "workerinput", None)
    run_id = workerinput["testrunuid"] if workerinput else uuid.uuid4().hex
    worker = workerinput["workerid"] if workerinput else "main"
    write_rows(_SESSION_ROWS, run_id=run_id, worker=worker)
    prune_runs()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    """The local stack (python -m infra.localstack) in a subprocess, once per test process."""
    with live_stack(tmp_path_factory.mktemp("local-stack")) as running:
        yield running
