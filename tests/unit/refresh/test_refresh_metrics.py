"""The engine's default metrics: one EMF record per metric, with its own provider/outcome dimensions."""

from __future__ import annotations

import json

import pytest
from aws_lambda_powertools.metrics import MetricUnit
from tokenbroker.refresh import MemoryRefreshMetrics, PowertoolsRefreshMetrics


def test_each_metric_is_its_own_emf_record(capsys: pytest.CaptureFixture[str]) -> None:
    metrics = PowertoolsRefreshMetrics()
    metrics.emit("RefreshOutcome", 1, MetricUnit.Count, {"provider": "workly", "outcome": "refreshed"})
    metrics.emit("RefreshOutcome", 1, MetricUnit.Count, {"provider": "worksection", "outcome": "needs_reauth"})
    metrics.emit("RefreshLatency", 12.5, MetricUnit.Milliseconds, {"provider": "workly"})
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(records) == 3
    first, second, latency = records
    assert (first["provider"], first["outcome"], first["RefreshOutcome"]) == ("workly", "refreshed", [1.0])
    assert (second["provider"], second["outcome"]) == ("worksection", "needs_reauth")
    assert latency["RefreshLatency"] == [12.5]
    [directive] = first["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "TokenBroker"
    assert set(directive["Dimensions"][0]) >= {"provider", "outcome"}
    assert "outcome" not in latency  # dimensions never leak from one record into the next


def test_memory_metrics_totals() -> None:
    metrics = MemoryRefreshMetrics()
    metrics.emit("RefreshOutcome", 1, MetricUnit.Count, {"provider": "workly", "outcome": "refreshed"})
    metrics.emit("RefreshOutcome", 1, MetricUnit.Count, {"provider": "workly", "outcome": "contended"})
    assert metrics.total("RefreshOutcome") == 2
    assert metrics.total("RefreshOutcome", outcome="contended") == 1
    assert metrics.total("RefreshOutcome", provider="worksection") == 0
