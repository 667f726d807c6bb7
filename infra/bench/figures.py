"""Figures: one measured value, its baseline, the ratio, the target and whether it is met.

A target applies either to the value itself (AWS calls per vend <= 1) or to the ratio of value to
baseline (vend p50 <= 1.5 x raw GetSecretValue p50). A figure without a target is context for the
others (moto's own cost, CPU time, the layer size) and is neither met nor missed.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class Applies(enum.StrEnum):
    VALUE = "value"
    RATIO = "ratio"


class Op(enum.StrEnum):
    AT_MOST = "<="
    EXACTLY = "=="


@dataclass(frozen=True, slots=True)
class Target:
    applies_to: Applies
    op: Op
    limit: float

    def met_by(self, figure_value: float | None, ratio: float | None) -> bool | None:
        """None when the number the target applies to could not be measured."""
        subject = figure_value if self.applies_to is Applies.VALUE else ratio
        if subject is None or math.isnan(subject):
            return None
        if self.op is Op.EXACTLY:
            return math.isclose(subject, self.limit, rel_tol=0.0, abs_tol=1e-9)
        return subject <= self.limit + 1e-9

    def describe(self) -> str:
        return f"{self.applies_to} {self.op} {_number(self.limit)}"

    def to_json(self) -> dict[str, Any]:
        return {"applies_to": str(self.applies_to), "op": str(self.op), "limit": self.limit, "text": self.describe()}


def at_most(limit: float, *, of: Applies = Applies.RATIO) -> Target:
    return Target(of, Op.AT_MOST, limit)


def exactly(limit: float, *, of: Applies = Applies.VALUE) -> Target:
    return Target(of, Op.EXACTLY, limit)


def ratio_of(value: float | None, baseline: float | None) -> float | None:
    """value / baseline; None when either is missing or the baseline is not positive."""
    if value is None or baseline is None or baseline <= 0 or math.isnan(value) or math.isnan(baseline):
        return None
    return value / baseline


@dataclass(frozen=True, slots=True)
class Figure:
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    target: Target | None = None
    setup: str = ""
    notes: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return ratio_of(self.value, self.baseline)

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met_by(self.value, self.ratio)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "target": self.target.to_json() if self.target is not None else None,
            "met": self.met,
            "setup": self.setup,
            "notes": self.notes,
            "details": dict(self.details),
        }


def _number(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value == int(value) and abs(value) < 1e9:
        return str(int(value))
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _met_text(met: bool | None, target: Target | None) -> str:
    if target is None:
        return ""
    return {True: "yes", False: "NO", None: "n/a"}[met]


TABLE_COLUMNS = ("figure", "value", "unit", "baseline", "ratio", "target", "met")


def table_rows(figures: Iterable[Figure]) -> list[tuple[str, ...]]:
    return [
        (
            f.name,
            _number(f.value),
            f.unit,
            _number(f.baseline),
            _number(f.ratio),
            f.target.describe() if f.target else "",
            _met_text(f.met, f.target),
        )
        for f in figures
    ]


def render_table(figures: Sequence[Figure]) -> str:
    rows = [TABLE_COLUMNS, *table_rows(figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(figures: Sequence[Figure]) -> str:
    """The same table for docs/performance.md."""
    header = "| " + " | ".join(TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    body = ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table_rows(figures)]
    return "\n".join([header, rule, *body])


def write_results(path: Path, figures: Sequence[Figure], environment: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"environment": dict(environment), "figures": [f.to_json() for f in figures]}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
