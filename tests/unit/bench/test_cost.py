"""The cost model's arithmetic: refresh counts from the refresh-ahead rule, and every price line."""

from __future__ import annotations

import pytest

from infra.bench.cost import (
    SECONDS_PER_MONTH,
    MeasuredCalls,
    Prices,
    Workload,
    estimate,
    refreshes_per_connection_per_month,
)

CALLS = MeasuredCalls(
    vend={"secretsmanager.GetSecretValue": 1.0},
    scheduled_refresh={
        "dynamodb.UpdateItem": 2.0,
        "secretsmanager.GetSecretValue": 1.0,
        "secretsmanager.PutSecretValue": 1.0,
        "events.PutEvents": 1.0,
    },
    sweep_run={"dynamodb.Query": 16.0},
    sweep_per_connection={"sqs.SendMessageBatch": 0.1},
)


def test_refresh_ahead_sets_how_often_a_token_is_refreshed() -> None:
    # A day-long token is refreshed 10 % (2.4 h) early: every 21.6 h.
    assert refreshes_per_connection_per_month(86_400) == pytest.approx(SECONDS_PER_MONTH / 77_760)
    # A half-hour token: the 5-minute floor is larger than 10 % (every 25 min).
    assert refreshes_per_connection_per_month(1_800) == pytest.approx(SECONDS_PER_MONTH / 1_500)
    # Shorter than twice the margin: every half lifetime.
    assert refreshes_per_connection_per_month(400) == pytest.approx(SECONDS_PER_MONTH / 200)
    with pytest.raises(ValueError, match="positive"):
        refreshes_per_connection_per_month(0)


def test_every_line_follows_from_calls_workload_and_prices() -> None:
    workload = Workload(
        connections=1000,
        vends_per_connection_per_month=100,
        token_lifetime_seconds=SECONDS_PER_MONTH / 9 * 10 / 9,  # refreshed every 1/9 month: 9 a month
        sweeps_per_month=1000,
        providers=2,
        memory_gb=0.5,
        vend_duration_seconds=0.02,
        refresh_duration_seconds=0.4,
        sweep_duration_seconds=0.1,
    )
    prices = Prices()
    result = estimate(CALLS, workload, prices)
    vends, refreshes, sweeps = 100_000, 9_000, 1000
    lines = result.lines
    assert lines["secrets_manager.secrets"] == pytest.approx(1002 * 0.40)
    assert lines["secrets_manager.api_calls"] == pytest.approx((vends + 2 * refreshes) / 10_000 * 0.05)
    assert lines["dynamodb.writes"] == pytest.approx((2 + 2) * refreshes / 1e6 * 0.625)
    assert lines["dynamodb.reads"] == pytest.approx(16 * sweeps * 0.5 / 1e6 * 0.125)
    batches = sweeps * 1  # 9 due per sweep: one batch each
    assert lines["lambda.requests"] == pytest.approx((vends + batches + sweeps) / 1e6 * 0.20)
    gb_seconds = 0.5 * (vends * 0.02 + refreshes * 0.4 + sweeps * 0.1)
    assert lines["lambda.duration"] == pytest.approx(gb_seconds * 0.0000133334)
    assert lines["api_gateway.http_api"] == pytest.approx(vends / 1e6 * 1.00)
    assert lines["sqs.requests"] == pytest.approx((0.1 * refreshes + 2 * batches) / 1e6 * 0.40)
    assert lines["scheduler.invocations"] == pytest.approx(sweeps / 1e6)
    assert lines["eventbridge.events"] == pytest.approx(refreshes / 1e6)
    assert result.total == pytest.approx(sum(lines.values()))
    assert result.per_thousand_connections == pytest.approx(result.total)


def test_cost_per_thousand_scales_with_connections_and_secret_storage_dominates() -> None:
    small = estimate(CALLS, Workload(connections=100))
    large = estimate(CALLS, Workload(connections=10_000))
    # Fixed costs (app secrets, sweeps) weigh more on a small fleet.
    assert small.per_thousand_connections > large.per_thousand_connections
    assert large.lines["secrets_manager.secrets"] > 0.9 * large.total


def test_fewer_calls_cost_less() -> None:
    cheaper = MeasuredCalls(
        vend=CALLS.vend,
        scheduled_refresh={**CALLS.scheduled_refresh, "secretsmanager.GetSecretValue": 0.0},
        sweep_run=CALLS.sweep_run,
        sweep_per_connection=CALLS.sweep_per_connection,
    )
    assert estimate(cheaper).total < estimate(CALLS).total
