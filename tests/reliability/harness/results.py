"""What each reliability test observed, kept for docs/reliability.md.

A test records one ``Row`` per fault it injected: what the system did and what was lost (the goal
is "nothing"). Rows of one pytest run (all xdist workers of it) land in
``.bench/reliability/run-<run id>/<worker>.json``; ``render.py`` turns the newest run into the
table of docs/reliability.md. Rows are written whatever the test's result, with that result, so a
failing test shows up in the table as failing instead of disappearing from it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
RESULTS_DIR = Path(os.environ.get("TOKENBROKER_RELIABILITY_RESULTS", REPO / ".bench" / "reliability"))
NOTHING = "nothing"


@dataclass
class Row:
    area: str  # provider, transport, aws, crash, race, security, fuzz
    fault: str  # what was injected
    target: str  # where: "Worksection sandbox", "django-oauth-toolkit via fault proxy", "moto" ...
    did: str  # what tokenbroker did about it (state, token, event, metric)
    lost: str = NOTHING  # what was lost; "nothing" is the goal
    measures: dict[str, float | int | str] = field(default_factory=dict)  # numbers worth quoting
    test: str = ""  # pytest node id, filled in by the fixture
    result: str = "unknown"  # passed / failed, filled in after the test ran

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Row:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class RowLog:
    """The rows one test records; the conftest fixture stamps the test id and result on them."""

    test: str
    rows: list[Row] = field(default_factory=list)

    def record(
        self,
        area: str,
        fault: str,
        target: str,
        did: str,
        lost: str = NOTHING,
        **measures: float | int | str,
    ) -> Row:
        row = Row(area, fault, target, did, lost, dict(measures), test=self.test)
        self.rows.append(row)
        return row


def write_rows(rows: list[Row], *, run_id: str, worker: str, directory: Path = RESULTS_DIR) -> Path | None:
    """Write this worker's rows of run ``run_id``; returns the file (None when there was nothing)."""
    if not rows:
        return None
    target = directory / f"run-{run_id}"
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{worker}.json"
    document = {"run_id": run_id, "worker": worker, "written_at": time.time(), "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(document, indent=1, sort_keys=True), encoding="utf-8")
    return path


def _load_run(run_dir: Path) -> list[Row]:
    rows: list[Row] = []
    for path in sorted(run_dir.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        rows.extend(Row.from_dict(r) for r in document["rows"])
    rows.sort(key=lambda r: (AREA_ORDER.get(r.area, 99), r.test, r.fault))
    return rows


def latest_run(directory: Path = RESULTS_DIR, run_id: str | None = None) -> tuple[str, list[Row]]:
    """The rows of one run (all its workers), in a stable order.

    ``run_id`` picks a run; otherwise the newest run that covers every area (a whole-suite run),
    or the newest run at all when none does (a single test run must not replace the table).
    """
    runs = [p for p in directory.glob("run-*") if p.is_dir() and any(p.glob("*.json"))]
    if run_id is not None:
        runs = [p for p in runs if p.name == f"run-{run_id}"]
    if not runs:
        raise FileNotFoundError(f"no reliability results under {directory}: run pytest tests/reliability first")
    runs.sort(key=lambda p: max(f.stat().st_mtime for f in p.glob("*.json")), reverse=True)
    loaded = [(p, _load_run(p)) for p in runs]
    complete = [(p, rows) for p, rows in loaded if {r.area for r in rows} >= set(AREA_ORDER)]
    chosen, rows = (complete or loaded)[0]
    return chosen.name.removeprefix("run-"), rows


def prune_runs(keep: int = 20, directory: Path = RESULTS_DIR) -> None:
    """Drop all but the newest ``keep`` runs (the directory is a cache, not history)."""
    runs = sorted(
        (p for p in directory.glob("run-*") if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in runs[keep:]:
        for file in old.glob("*"):
            file.unlink(missing_ok=True)
        old.rmdir()


AREA_ORDER = {"provider": 0, "transport": 1, "aws": 2, "crash": 3, "race": 4, "security": 5, "fuzz": 6}
