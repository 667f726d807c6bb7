"""The docs table generator: rows of a run in, a Markdown page out."""

from __future__ import annotations

import os
from pathlib import Path

from tests.reliability.harness.render import main, render
from tests.reliability.harness.results import AREA_ORDER, Row, latest_run, write_rows


def rows() -> list[Row]:
    return [
        Row(
            "crash",
            "SIGKILL after commit",
            "subprocess",
            "nothing to recover",
            "an event",
            {"ms": 3.5},
            "t::a",
            "passed",
        ),
        Row("provider", "HTTP 503 | HTML", "sandbox", "backoff", "nothing", {}, "t::b", "failed"),
    ]


def test_the_page_has_one_section_per_area_in_order_and_lists_losses_and_failures() -> None:
    page = render("abcdef0123456789", rows())
    assert page.index("## Provider faults") < page.index("## Crashes")
    assert "| HTTP 503 \\| HTML | sandbox | backoff | nothing |  | **FAIL** |" in page
    assert "| SIGKILL after commit | subprocess | nothing to recover | an event | ms=3.5 | pass |" in page
    assert "- **SIGKILL after commit** (crash): an event." in page
    assert "## Failing tests\n\n- `t::b`: HTTP 503 \\| HTML" in page
    assert "2 faults, 1 as expected, 1 failing, 1 with something lost" in page


def test_a_whole_suite_run_wins_over_a_newer_partial_one(tmp_path: Path) -> None:
    every_area = [Row(area, f"fault {area}", "t", "did") for area in AREA_ORDER]
    full = write_rows(every_area, run_id="full", worker="gw0", directory=tmp_path)
    assert full is not None
    os.utime(full, (1_000_000_000, 1_000_000_000))
    write_rows(rows()[:1], run_id="partial", worker="main", directory=tmp_path)
    assert latest_run(tmp_path)[0] == "full"


def test_the_newest_run_of_every_worker_is_rendered(tmp_path: Path) -> None:
    old = write_rows(rows()[:1], run_id="old", worker="gw0", directory=tmp_path)
    assert old is not None
    os.utime(old, (1_000_000_000, 1_000_000_000))
    write_rows(rows()[:1], run_id="new", worker="gw0", directory=tmp_path)
    write_rows(rows()[1:], run_id="new", worker="gw1", directory=tmp_path)
    run_id, found = latest_run(tmp_path)
    assert run_id == "new" and [r.area for r in found] == ["provider", "crash"]
    assert latest_run(tmp_path, "old")[0] == "old"
    output = tmp_path / "reliability.md"
    assert main(["--results", str(tmp_path), "--output", str(output)]) == 0
    assert "Run `new`" in output.read_text(encoding="utf-8")
