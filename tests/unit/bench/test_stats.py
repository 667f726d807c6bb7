"""Percentiles and summaries of the bench: the numpy "linear" definition, exactly."""

from __future__ import annotations

import pytest

from infra.bench.stats import Summary, median, percentile


def test_percentile_interpolates_between_closest_ranks() -> None:
    samples = [10.0, 20.0, 30.0, 40.0]
    assert percentile(samples, 0) == 10.0
    assert percentile(samples, 100) == 40.0
    assert percentile(samples, 50) == 25.0
    assert percentile(samples, 25) == pytest.approx(17.5)  # rank 0.75
    assert percentile(samples, 99) == pytest.approx(39.7)  # rank 2.97


def test_percentile_ignores_input_order_and_handles_one_sample() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([7.0], 99) == 7.0
    assert median([5.0, 1.0, 4.0, 2.0]) == 3.0


@pytest.mark.parametrize("p", [-1, 100.5, float("nan")])
def test_percentile_refuses_out_of_range(p: float) -> None:
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], p)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_summary_and_unit_scaling() -> None:
    summary = Summary.of([0.001 * n for n in range(1, 101)])  # 1..100 ms in seconds
    assert summary.count == 100
    assert summary.p50 == pytest.approx(0.0505)
    assert summary.p99 == pytest.approx(0.09901)
    millis = summary.scaled(1000)
    assert millis.p50 == pytest.approx(50.5)
    assert millis.minimum == pytest.approx(1.0)
    assert millis.maximum == pytest.approx(100.0)
    assert millis.mean == pytest.approx(50.5)
