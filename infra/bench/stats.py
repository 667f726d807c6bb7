"""Order statistics for latency samples: pure functions, no numpy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) with linear interpolation between closest ranks.

    The same definition as numpy's default (``method="linear"``): rank ``(n - 1) * p / 100``.
    """
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= p <= 100 or math.isnan(p):
        raise ValueError("p must be within 0..100")
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    fraction = rank - low
    return ordered[low] + (ordered[high] - ordered[low]) * fraction


def median(samples: Sequence[float]) -> float:
    return percentile(samples, 50)


@dataclass(frozen=True, slots=True)
class Summary:
    """p50/p99 and friends of one series of samples (same unit as the samples)."""

    count: int
    p50: float
    p90: float
    p99: float
    minimum: float
    maximum: float
    mean: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("summary of no samples")
        return cls(
            count=len(samples),
            p50=percentile(samples, 50),
            p90=percentile(samples, 90),
            p99=percentile(samples, 99),
            minimum=min(samples),
            maximum=max(samples),
            mean=sum(samples) / len(samples),
        )

    def scaled(self, factor: float) -> Summary:
        """The same summary in another unit (seconds -> milliseconds: ``scaled(1000)``)."""
        return Summary(
            count=self.count,
            p50=self.p50 * factor,
            p90=self.p90 * factor,
            p99=self.p99 * factor,
            minimum=self.minimum * factor,
            maximum=self.maximum * factor,
            mean=self.mean * factor,
        )
