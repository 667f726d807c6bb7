"""Monthly cost per 1,000 connections on AWS list prices, from the AWS calls the bench counted.

Pure arithmetic: prices and the workload are assumptions (stated here and in docs/performance.md);
the calls per vend, per scheduled refresh and per sweep run are measured. Free tiers are ignored
(they would make a small deployment look free). Not modelled: KMS requests, CloudWatch Logs and
metrics, X-Ray traces, data transfer, the event source mapping's empty long polls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from tokenbroker.schedule import DEFAULT_POLICY

SECONDS_PER_MONTH = 30 * 86_400
# Refresh-ahead (design.md): next refresh = expires_at - max(5 min, 10 % of the lifetime).
REFRESH_AHEAD_MIN = 300.0
REFRESH_AHEAD_SHARE = 0.10


@dataclass(frozen=True, slots=True)
class Prices:
    """USD, us-east-1, on-demand list prices as assumed for 2026 (not fetched: check the pages).

    Sources: aws.amazon.com/secrets-manager/pricing, /dynamodb/pricing/on-demand, /lambda/pricing,
    /sqs/pricing, /eventbridge/pricing (Scheduler and custom bus events), /api-gateway/pricing
    (HTTP APIs).
    """

    secret_per_month: float = 0.40
    secrets_api_per_10k: float = 0.05
    dynamodb_write_per_million: float = 0.625  # on-demand write request units
    dynamodb_read_per_million: float = 0.125  # on-demand read request units
    lambda_requests_per_million: float = 0.20
    lambda_gb_second_arm: float = 0.0000133334
    sqs_requests_per_million: float = 0.40  # standard queue, per 64 KB chunk
    scheduler_invocations_per_million: float = 1.00
    eventbridge_events_per_million: float = 1.00  # custom events (PutEvents entries)
    http_api_requests_per_million: float = 1.00  # first 300 M requests a month


@dataclass(frozen=True, slots=True)
class Workload:
    """What 1,000 connections do in a month: assumptions, not measurements."""

    connections: int = 1000
    vends_per_connection_per_month: float = 720.0  # one vend an hour
    token_lifetime_seconds: float = 86_400.0  # Worksection access tokens live a day
    on_demand_refresh_share: float = 0.0  # refresh-ahead keeps vended tokens fresh
    sweeps_per_month: float = SECONDS_PER_MONTH / DEFAULT_POLICY.interval  # RefreshSchedule's default
    providers: int = 2  # one app-credentials secret each
    memory_gb: float = 0.5  # template.yaml MemorySize 512
    vend_duration_seconds: float = 0.03
    refresh_duration_seconds: float = 0.35  # provider round trip + 4-5 AWS calls
    sweep_duration_seconds: float = 0.2
    events_per_refresh: float = 1.0  # one "Token Refreshed" (billed per event, however batched)
    # DynamoDB write units per UpdateItem (items < 1 KB); the commit also moves the item in the
    # KEYS_ONLY due index (a delete and a put there).
    commit_index_writes: float = 2.0
    query_read_units: float = 0.5  # eventually consistent Query of a few small keys


@dataclass(frozen=True, slots=True)
class MeasuredCalls:
    """Per operation, keyed "service.Operation", as AwsCallCounter.by_service reports them."""

    vend: Mapping[str, float]
    scheduled_refresh: Mapping[str, float]
    on_demand_refresh: Mapping[str, float] = field(default_factory=dict)
    sweep_run: Mapping[str, float] = field(default_factory=dict)  # calls per run that are fixed (Query)
    sweep_per_connection: Mapping[str, float] = field(default_factory=dict)  # e.g. SendMessageBatch 0.1


def refreshes_per_connection_per_month(lifetime_seconds: float) -> float:
    """A token refreshed ``max(5 min, 10 %)`` before it expires lives ``lifetime - margin`` seconds."""
    if lifetime_seconds <= 0:
        raise ValueError("token lifetime must be positive")
    interval = lifetime_seconds - max(REFRESH_AHEAD_MIN, REFRESH_AHEAD_SHARE * lifetime_seconds)
    # Tokens shorter than twice the 5-minute margin: assume a refresh every half lifetime.
    return SECONDS_PER_MONTH / max(interval, lifetime_seconds * 0.5)


def _calls(calls: Mapping[str, float], service: str, operation: str | None = None) -> float:
    return sum(
        n
        for name, n in calls.items()
        if name.split(".", 1)[0] == service and (operation is None or name.split(".", 1)[1] == operation)
    )


@dataclass(frozen=True, slots=True)
class CostEstimate:
    lines: dict[str, float]  # USD per month for the workload
    connections: int

    @property
    def total(self) -> float:
        return sum(self.lines.values())

    @property
    def per_thousand_connections(self) -> float:
        return self.total / self.connections * 1000


def estimate(calls: MeasuredCalls, workload: Workload | None = None, prices: Prices | None = None) -> CostEstimate:
    w = workload or Workload()
    p = prices or Prices()
    vends = w.connections * w.vends_per_connection_per_month
    scheduled = w.connections * refreshes_per_connection_per_month(w.token_lifetime_seconds)
    on_demand = vends * w.on_demand_refresh_share
    refreshes = scheduled + on_demand
    sweeps = w.sweeps_per_month
    due_per_sweep = scheduled / sweeps if sweeps else 0.0
    worker_batches = sweeps * math.ceil(due_per_sweep / 10) if due_per_sweep else 0.0

    def monthly(service: str, operation: str | None = None) -> float:
        return (
            vends * _calls(calls.vend, service, operation)
            + scheduled * _calls(calls.scheduled_refresh, service, operation)
            + on_demand * _calls(calls.on_demand_refresh, service, operation)
            + sweeps * _calls(calls.sweep_run, service, operation)
            + scheduled * _calls(calls.sweep_per_connection, service, operation)
        )

    update_items = monthly("dynamodb", "UpdateItem")
    write_units = update_items + refreshes * w.commit_index_writes
    read_units = monthly("dynamodb", "GetItem") + monthly("dynamodb", "Query") * w.query_read_units
    # The event source receives each batch and deletes it: two more requests per batch.
    sqs_requests = monthly("sqs") + worker_batches * 2
    invocations = vends + worker_batches + sweeps
    gb_seconds = w.memory_gb * (
        vends * w.vend_duration_seconds + refreshes * w.refresh_duration_seconds + sweeps * w.sweep_duration_seconds
    )
    lines = {
        "secrets_manager.secrets": (w.connections + w.providers) * p.secret_per_month,
        "secrets_manager.api_calls": monthly("secretsmanager") / 10_000 * p.secrets_api_per_10k,
        "dynamodb.writes": write_units / 1e6 * p.dynamodb_write_per_million,
        "dynamodb.reads": read_units / 1e6 * p.dynamodb_read_per_million,
        "lambda.requests": invocations / 1e6 * p.lambda_requests_per_million,
        "lambda.duration": gb_seconds * p.lambda_gb_second_arm,
        "api_gateway.http_api": vends / 1e6 * p.http_api_requests_per_million,
        "sqs.requests": sqs_requests / 1e6 * p.sqs_requests_per_million,
        "scheduler.invocations": sweeps / 1e6 * p.scheduler_invocations_per_million,
        "eventbridge.events": refreshes * w.events_per_refresh / 1e6 * p.eventbridge_events_per_million,
    }
    return CostEstimate(lines=lines, connections=w.connections)
