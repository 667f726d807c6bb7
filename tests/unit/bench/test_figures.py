"""Ratio, target and "met" of a figure, and the table and JSON the bench writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.bench.figures import (
    Applies,
    Figure,
    at_most,
    exactly,
    ratio_of,
    render_markdown,
    render_table,
    write_results,
)


def test_ratio_is_value_over_baseline_and_absent_without_a_usable_baseline() -> None:
    assert ratio_of(3.0, 2.0) == 1.5
    assert ratio_of(3.0, None) is None
    assert ratio_of(None, 2.0) is None
    assert ratio_of(3.0, 0.0) is None
    assert ratio_of(float("nan"), 2.0) is None


def test_ratio_target_is_judged_on_the_ratio() -> None:
    met = Figure("vend.p50", 7.4, "ms", baseline=5.0, target=at_most(1.5))
    missed = Figure("vend.p50", 7.6, "ms", baseline=5.0, target=at_most(1.5))
    assert met.ratio == pytest.approx(1.48)
    assert met.met is True
    assert missed.met is False


def test_value_target_is_judged_on_the_value_and_a_boundary_value_meets_it() -> None:
    assert Figure("calls", 4.0, "calls", target=at_most(4, of=Applies.VALUE)).met is True
    assert Figure("calls", 4.1, "calls", target=at_most(4, of=Applies.VALUE)).met is False
    assert Figure("refreshes", 1.0, "calls", target=exactly(1)).met is True
    assert Figure("refreshes", 2.0, "calls", target=exactly(1)).met is False
    assert Figure("refreshes", 0.0, "calls", target=exactly(1)).met is False


def test_unmeasured_figures_are_neither_met_nor_missed() -> None:
    assert Figure("x", None, "ms", baseline=1.0, target=at_most(1.5)).met is None
    assert Figure("x", 2.0, "ms", baseline=None, target=at_most(1.5)).met is None
    assert Figure("x", 2.0, "ms").met is None  # no target: context only


def test_json_carries_every_field_of_the_issue(tmp_path: Path) -> None:
    figure = Figure("vend.p50", 6.0, "ms", baseline=4.0, baseline_name="raw", target=at_most(1.5), setup="s")
    out = tmp_path / "nested" / "results.json"
    write_results(out, [figure], {"cpus": 2})
    document = json.loads(out.read_text())
    [written] = document["figures"]
    assert {"name", "value", "unit", "baseline", "ratio", "target", "met"} <= written.keys()
    assert written["ratio"] == 1.5
    assert written["met"] is True
    assert written["target"] == {"applies_to": "ratio", "op": "<=", "limit": 1.5, "text": "ratio <= 1.50"}
    assert document["environment"] == {"cpus": 2}


def test_tables_show_misses_and_blank_targets() -> None:
    rows = [
        Figure("a", 2.0, "ms", baseline=1.0, target=at_most(1.5)),
        Figure("b", 40.5, "MB"),
    ]
    text = render_table(rows)
    assert "NO" in text.splitlines()[2]
    assert text.splitlines()[3].split() == ["b", "40.5", "MB", "-", "-"]
    markdown = render_markdown(rows)
    assert markdown.splitlines()[0] == "| figure | value | unit | baseline | ratio | target | met |"
    assert "| a | 2 | ms | 1 | 2 | ratio <= 1.50 | NO |" in markdown
