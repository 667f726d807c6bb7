"""The machine the figures came from: CPUs, load, versions, and how busy everyone else kept it."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("boto3", "botocore", "moto", "aws-lambda-powertools", "werkzeug", "requests")


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    """Machine-wide busy and total CPU time (seconds, all cores) from /proc/stat."""

    busy: float
    total: float

    @classmethod
    def take(cls) -> CpuSnapshot | None:
        try:
            first = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0]
        except OSError:
            return None
        ticks = [int(v) for v in first.split()[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        hz = os.sysconf("SC_CLK_TCK")
        return cls(busy=(sum(ticks) - idle) / hz, total=sum(ticks) / hz)


def machine_share(before: CpuSnapshot | None, after: CpuSnapshot | None) -> float | None:
    """How busy all cores were between two snapshots (0..1), or None without /proc/stat."""
    if before is None or after is None or after.total <= before.total:
        return None
    return (after.busy - before.busy) / (after.total - before.total)


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def describe() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": load_average(),
        "packages": versions,
    }
