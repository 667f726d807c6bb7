"""AWS calls per vend, per on-demand refresh and per scheduled refresh, counted by botocore hooks.

Every count goes through the real handler (vend: an HttpApi event; worker: an SQS batch the real
sweep enqueued) with collaborators built by ``Runtime`` on clients that an ``AwsCallCounter``
watches. The handlers' own ``_services_from_env`` builds the same objects from the environment;
here they are injected (``use_services``) only so that the counter can see the clients.

Each handler gets a warm-up call first: a Lambda instance serves many requests and the first one
also loads the app credentials (one GetSecretValue, then cached for 5 minutes). That first-call
extra is reported in the figure's details, not averaged away silently.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from tokenbroker.aws import AwsCallCounter
from tokenbroker.keys import ConnectionKey

from infra.bench.figures import Applies, Figure, at_most
from infra.bench.lambda_events import context_for, function_id, schedule_event, sqs_event, vend_event
from infra.bench.rig import DAY, PROVIDER, Rig, clients_for, quiet_output
from infra.localstack.functions import load_function

SAMPLES = 10  # operations averaged per figure (one SQS batch for the worker)
SETUP = "in-process handlers, moto server (child process), Worksection sandbox; botocore before-call hooks"


@dataclass(frozen=True, slots=True)
class CallCounts:
    """Calls per operation, measured over ``operations`` operations after a warm-up."""

    operations: int
    total: int
    by_call: dict[str, int]
    first_call_extra: dict[str, int]

    @property
    def per_operation(self) -> float:
        return self.total / self.operations

    @property
    def per_api(self) -> dict[str, float]:
        return {name: n / self.operations for name, n in sorted(self.by_call.items())}

    def details(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "calls_per_operation_by_api": self.per_api,
            "first_call_in_a_new_instance_extra": dict(sorted(self.first_call_extra.items())),
        }


@dataclass(frozen=True, slots=True)
class CallsResult:
    vend: CallCounts
    on_demand: CallCounts
    scheduled: CallCounts
    sweep_calls: dict[str, int]
    swept: int

    def figures(self) -> list[Figure]:
        return [
            Figure(
                "aws_calls.vend_fresh_token",
                self.vend.per_operation,
                "calls/vend",
                target=at_most(1, of=Applies.VALUE),
                setup=SETUP,
                notes="GET /tokens/... through the vend handler, token far from expiry",
                details=self.vend.details(),
            ),
            Figure(
                "aws_calls.on_demand_refresh",
                self.on_demand.per_operation,
                "calls/refresh",
                setup=SETUP,
                notes="a vend whose token has less than min_ttl left: read, lease, re-read, write, commit, event "
                "(no bar in design.md; shown for the cost model)",
                details=self.on_demand.details(),
            ),
            Figure(
                "aws_calls.scheduled_refresh",
                self.scheduled.per_operation,
                "calls/refresh",
                target=at_most(4, of=Applies.VALUE),
                setup=SETUP,
                notes="worker handler, one SQS batch of 10 that the real sweep enqueued; the sweep's own calls "
                "are in aws_calls.sweep_run",
                details=self.scheduled.details(),
            ),
            Figure(
                "aws_calls.sweep_run",
                float(sum(self.sweep_calls.values())),
                "calls/run",
                setup=SETUP,
                notes=f"one sweep run that found {self.swept} due connections: "
                f"{self.sweep_calls.get('dynamodb.Query', 0)} Query (one per due-index shard, whatever is due) + "
                f"{self.sweep_calls.get('sqs.SendMessageBatch', 0)} SendMessageBatch (one per 10 due)",
                details={"calls": dict(sorted(self.sweep_calls.items())), "due_connections": self.swept},
            ),
        ]


def _counted(counter: AwsCallCounter, action: Callable[[], Any], times: int = 1) -> Counter[str]:
    before = Counter(counter.by_service)
    for _ in range(times):
        action()
    return Counter(counter.by_service) - before


def _counts(warm: Counter[str], measured: Counter[str], operations: int) -> CallCounts:
    per_op_warm = {name: n for name, n in warm.items()}
    steady = {name: measured[name] / operations for name in measured}
    extra = {name: round(per_op_warm.get(name, 0) - steady.get(name, 0)) for name in per_op_warm}
    return CallCounts(
        operations=operations,
        total=sum(measured.values()),
        by_call=dict(measured),
        first_call_extra={name: n for name, n in extra.items() if n > 0},
    )


def _check_answer(answer: dict[str, Any]) -> None:
    if answer.get("statusCode") != 200:
        raise RuntimeError(f"vend answered {answer.get('statusCode')}: {str(answer.get('body'))[:200]}")


def measure_vend_calls(rig: Rig, vend: ModuleType) -> tuple[CallCounts, CallCounts]:
    runtime = rig.fresh_runtime()
    vend.use_services(vend.Services(vending=runtime.vending, connect=runtime.connect))
    context = context_for(rig.topology, function_id(rig.topology, "vend"))
    run = uuid.uuid4().hex[:8]
    fresh = ConnectionKey(PROVIDER, f"calls-fresh-{run}")
    rig.seed(fresh, expires_in=DAY)
    expiring = [ConnectionKey(PROVIDER, f"calls-expiring-{run}-{n}") for n in range(SAMPLES + 1)]
    for key in expiring:
        rig.seed(key, expires_in=30)  # min_ttl 60 > 30 s left: the vend refreshes first

    def vend_key(key: ConnectionKey) -> Callable[[], None]:
        return lambda: _check_answer(vend.lambda_handler(vend_event(key.provider, key.connection_id), context))

    try:
        with AwsCallCounter(runtime.aws) as counter:
            warm = _counted(counter, vend_key(fresh))
            measured = _counted(counter, vend_key(fresh), SAMPLES)
            fresh_counts = _counts(warm, measured, SAMPLES)

            warm = _counted(counter, vend_key(expiring[0]))
            measured = Counter[str]()
            for key in expiring[1:]:
                measured += _counted(counter, vend_key(key))
            refresh_counts = _counts(warm, measured, SAMPLES)
    finally:
        vend.use_services(None)
    return fresh_counts, refresh_counts


def measure_scheduled_calls(rig: Rig, refresh: ModuleType) -> tuple[CallCounts, dict[str, int], int]:
    """Seed due connections, run the real sweep, feed its messages to the worker handler."""
    clients = clients_for(rig.moto.url)
    runtime = rig.fresh_runtime(clients)
    queue_url = rig.queue_url
    sweeper = runtime.sweeper  # the rig's Settings name queue_url as the refresh queue
    if sweeper is None:
        raise RuntimeError("the bench rig has no refresh queue")
    refresh.use_services(refresh.Services(worker=runtime.refresh_worker, events=runtime.worker_events, sweeper=sweeper))
    sweep_context = context_for(rig.topology, function_id(rig.topology, "refresh", "app.sweep_handler"))
    worker_context = context_for(rig.topology, function_id(rig.topology, "refresh", "app.worker_handler"))
    queue_arn = next(q.arn for q in rig.resources.queues.values() if q.url == queue_url)
    run = uuid.uuid4().hex[:8]
    keys = [ConnectionKey(PROVIDER, f"calls-due-{run}-{n}") for n in range(SAMPLES + 1)]
    for key in keys:
        rig.seed(key, expires_in=200)  # refresh-ahead makes it due at once

    try:
        with AwsCallCounter(clients) as counter:
            sweep_calls = _counted(counter, lambda: refresh.sweep_handler(schedule_event(), sweep_context))
            bodies = _drain(rig, queue_url, expected=len(keys))
            if len(bodies) != len(keys):
                raise RuntimeError(f"the sweep enqueued {len(bodies)} of {len(keys)} due connections")

            def work(batch: Sequence[str]) -> Callable[[], None]:
                def call() -> None:
                    answer = refresh.worker_handler(sqs_event(batch, queue_arn=queue_arn), worker_context)
                    if answer.get("batchItemFailures"):
                        raise RuntimeError(f"worker reported failures: {answer}")

                return call

            warm = _counted(counter, work(bodies[:1]))
            measured = _counted(counter, work(bodies[1:]))
    finally:
        refresh.use_services(None)
    outcomes = [json.loads(b)["connection_id"] for b in bodies]
    generations = {key.connection_id: runtime.tokens.get(key).generation for key in keys}
    if any(generations[c] < 2 for c in outcomes):
        raise RuntimeError("a scheduled refresh did not write a new generation")
    return _counts(warm, measured, len(bodies) - 1), dict(sweep_calls), len(bodies)


def _drain(rig: Rig, queue_url: str, *, expected: int) -> list[str]:
    """Receive and delete everything the sweep enqueued (Lambda's event source does this on AWS)."""
    sqs: Any = rig.clients.client("sqs")
    bodies: list[str] = []
    for _ in range(20):
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        messages = answer.get("Messages", [])
        if messages:
            bodies.extend(m["Body"] for m in messages)
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)],
            )
        if len(bodies) >= expected:
            break
    return bodies


def measure(rig: Rig) -> CallsResult:
    vend = load_function("vend")
    refresh = load_function("refresh")
    with quiet_output():
        fresh, on_demand = measure_vend_calls(rig, vend)
        scheduled, sweep_calls, swept = measure_scheduled_calls(rig, refresh)
    return CallsResult(fresh, on_demand, scheduled, sweep_calls, swept)
