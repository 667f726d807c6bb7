"""Sweep throughput: N due connections refreshed against a provider with 50 ms latency.

Setup (timed and reported separately): N Worksection connections whose tokens the sandbox really
issued, all due now (``Rig.seed_many``). Then, timed: the real sweep handler enqueues them (Query on
the due index, SendMessageBatch) while ``concurrency`` worker threads take batches of up to 10
(Lambda's SQS event source with BatchSize 10) and call the real worker handler, until every
message is done. Ideal: N x latency / concurrency, as if AWS and our code cost nothing.

The refresh queue is an in-memory stand-in (``MemoryQueue``), not moto's SQS: moto recomputes the
queue's attributes over every queued message on each send, so each SendMessage costs it O(queue
length) (a batch of 10 took 43 ms with 250 messages queued) and 10,000 messages would measure
little but that. DynamoDB, Secrets Manager and EventBridge stay on moto; the SQS calls the sweep
and the event source would make are still counted.

Everything but moto runs in the bench process on threads (Lambda would give every concurrent
worker its own process), so the figure also reports the CPU time of the bench process and of the
moto child: when either is close to the wall time, that process's single core was the limit,
not the provider latency.
"""

from __future__ import annotations

import resource
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from tokenbroker.aws import AwsCallCounter
from tokenbroker.keys import ConnectionKey
from tokenbroker.sweep import Sweeper

from infra.bench.environment import CpuSnapshot, machine_share
from infra.bench.figures import Figure, at_most
from infra.bench.lambda_events import context_for, function_id, schedule_event, sqs_event
from infra.bench.rig import PROVIDER, Rig, clients_for, progress, quiet_output
from infra.localstack.functions import load_function

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

CONNECTIONS = 10_000
QUICK_CONNECTIONS = 1_000
LATENCY = 0.05
DEFAULT_CONCURRENCY = 10  # template.yaml WorkerMaxConcurrency default
TARGET_RATIO = 1.5
SEED_THREADS = 4
BATCH_SIZE = 10  # template.yaml: the worker's SQS event source BatchSize
# A CPU share above this means that process's one core (one GIL) was the bottleneck.
SATURATED = 0.85


def ideal_seconds(connections: int, latency: float, concurrency: int) -> float:
    """The provider latency alone, perfectly spread over the workers."""
    if concurrency <= 0:
        raise ValueError("concurrency must be positive")
    return connections * latency / concurrency


def bottleneck(wall: float, bench_cpu: float | None, moto_cpu: float | None, machine_busy: float | None = None) -> str:
    """What limited the run, judged by CPU time against wall time.

    Each process is one interpreter (one GIL): near one CPU-second per second means it was the
    limit. A machine whose cores were all busy (other work included) starved both.
    """
    if wall <= 0:
        return "unknown"
    busy = []
    if moto_cpu is not None and moto_cpu / wall >= SATURATED:
        busy.append("moto server (emulator) CPU")
    if bench_cpu is not None and bench_cpu / wall >= SATURATED:
        busy.append("bench process CPU (workers, boto3, sandbox: one GIL)")
    if machine_busy is not None and machine_busy >= SATURATED:
        busy.append(f"the machine's CPU ({machine_busy:.0%} of all cores busy, other processes included)")
    return " and ".join(busy) if busy else "provider latency / waiting (no CPU saturated)"


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True, slots=True)
class SweepResult:
    connections: int
    concurrency: int
    latency: float
    setup_seconds: float
    sweep_seconds: float
    total_seconds: float | None  # None: not finished within the time limit
    done: int
    failed: int
    provider_refreshes: int
    enqueued: int
    bench_cpu_seconds: float
    moto_cpu_seconds: float | None
    worker_calls: dict[str, int]
    poller_calls: dict[str, int]
    machine_busy: float | None = None  # share of all cores busy during the timed part
    machine_busy_seconds: float | None = None  # CPU-seconds all processes used meanwhile

    @property
    def ideal(self) -> float:
        return ideal_seconds(self.connections, self.latency, self.concurrency)

    @property
    def aws_calls(self) -> int:
        """Calls that reached moto (the queue's are in memory)."""
        return sum(self.worker_calls.values())

    def _others(self) -> float | None:
        """CPU-seconds that neither the bench nor moto used while the sweep ran (other work)."""
        if self.machine_busy_seconds is None or self.moto_cpu_seconds is None:
            return None
        return max(0.0, self.machine_busy_seconds - self.bench_cpu_seconds - self.moto_cpu_seconds)

    def figures(self) -> list[Figure]:
        setup = (
            f"{self.connections} due connections; sweep handler + {self.concurrency} threads calling the worker "
            f"handler with batches of {BATCH_SIZE}; Worksection sandbox with {self.latency * 1000:.0f} ms latency; "
            "DynamoDB, Secrets Manager, EventBridge on moto (child process); refresh queue in memory"
        )
        wall = self.total_seconds
        limit = bottleneck(wall or 0.0, self.bench_cpu_seconds, self.moto_cpu_seconds, self.machine_busy)
        moto_per_call = (
            self.moto_cpu_seconds / self.aws_calls * 1000 if self.moto_cpu_seconds and self.aws_calls else None
        )
        return [
            Figure(
                "sweep.total",
                wall,
                "s",
                baseline=self.ideal,
                baseline_name="ideal = connections x latency / concurrency",
                target=at_most(TARGET_RATIO),
                setup=setup,
                notes=(
                    f"done {self.done}/{self.connections}, failed {self.failed}, provider refreshes "
                    f"{self.provider_refreshes}; limited by: {limit}"
                    if wall is not None
                    else f"NOT FINISHED: {self.done}/{self.connections} done when the time limit hit"
                ),
                details={
                    "enqueued": self.enqueued,
                    "sweep_seconds": self.sweep_seconds,
                    "bench_cpu_seconds": self.bench_cpu_seconds,
                    "moto_cpu_seconds": self.moto_cpu_seconds,
                    "machine_busy_share": self.machine_busy,
                    "other_processes_cpu_seconds": self._others(),
                    "aws_calls_worker_and_sweep": dict(sorted(self.worker_calls.items())),
                    "sqs_calls_in_memory_queue": dict(sorted(self.poller_calls.items())),
                },
            ),
            Figure(
                "sweep.enqueue",
                self.sweep_seconds,
                "s",
                setup=setup,
                notes=f"the sweep handler alone ({self.enqueued} messages), while the workers already ran",
            ),
            Figure(
                "sweep.moto_cpu_share",
                self.moto_cpu_seconds,
                "s",
                baseline=wall,
                baseline_name="sweep wall time",
                setup=setup,
                notes=f"CPU the emulator used during the run ({self.aws_calls} AWS calls, "
                f"{moto_per_call:.2f} ms CPU each)"
                if moto_per_call is not None
                else "moto CPU time not available on this platform",
            ),
            Figure(
                "sweep.bench_cpu_share",
                self.bench_cpu_seconds,
                "s",
                baseline=wall,
                baseline_name="sweep wall time",
                setup=setup,
                notes=f"CPU of the bench process (workers, boto3, sandbox) during the run: "
                f"{self.bench_cpu_seconds / max(1, self.done) * 1000:.1f} ms per refresh",
            ),
            Figure(
                "sweep.setup_seconds",
                self.setup_seconds,
                "s",
                setup=f"seeding {self.connections} connections through the stores on {SEED_THREADS} threads "
                "(one save_connected, then BatchWriteItem of clones + one CreateSecret each); not part of the figure",
            ),
        ]


class MemoryQueue:
    """The refresh queue as the sweep and the event source use it: send in batches, take batches."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._messages: deque[str] = deque()
        self._ready = threading.Condition()
        self.calls: Counter[str] = Counter()

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        if QueueUrl != self.url:
            raise ValueError(f"unknown queue {QueueUrl}")
        with self._ready:
            self.calls["sqs.SendMessageBatch"] += 1
            self._messages.extend(str(entry["MessageBody"]) for entry in Entries)
            self._ready.notify_all()
        return {"Successful": [{"Id": e["Id"], "MessageId": uuid.uuid4().hex} for e in Entries], "Failed": []}

    def take(self, most: int, wait: float) -> list[str]:
        """Up to ``most`` messages, waiting at most ``wait`` seconds for the first (a long poll)."""
        with self._ready:
            if not self._messages:
                self._ready.wait(wait)
            self.calls["sqs.ReceiveMessage"] += 1
            batch = [self._messages.popleft() for _ in range(min(most, len(self._messages)))]
            if batch:
                self.calls["sqs.DeleteMessageBatch"] += 1  # what the event source does after success
            return batch


class Workers:
    """``concurrency`` threads feeding batches to the worker handler, as Lambda's event source does."""

    def __init__(self, handler: Any, context: Any, queue: MemoryQueue, *, queue_arn: str, concurrency: int) -> None:
        self._handler = handler
        self._context = context
        self._queue = queue
        self._arn = queue_arn
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.done = 0
        self.failed = 0
        self.batches = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            bodies = self._queue.take(BATCH_SIZE, wait=0.2)
            if not bodies:
                continue
            try:
                answer = self._handler(sqs_event(bodies, queue_arn=self._arn), self._context)
                failures = len(answer.get("batchItemFailures") or [])
            except Exception:
                failures = len(bodies)
            with self._lock:
                self.batches += 1
                self.done += len(bodies) - failures
                self.failed += failures


def measure(
    rig: Rig,
    *,
    connections: int,
    concurrency: int = DEFAULT_CONCURRENCY,
    latency: float = LATENCY,
    around_run: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> SweepResult:
    """``around_run``: entered around the timed part only (the bench's ``--profile`` samplers)."""
    run = uuid.uuid4().hex[:6]
    keys = [ConnectionKey(PROVIDER, f"sweep-{run}-{n:05d}") for n in range(connections)]
    progress(f"sweep: seeding {connections} due connections ...")
    setup_seconds = rig.seed_many(keys, expires_in=200, threads=SEED_THREADS)
    progress(f"sweep: seeded in {setup_seconds:.1f} s; refreshing at concurrency {concurrency} ...")

    clients = clients_for(rig.moto.url, max_pool_connections=concurrency * 2 + 8)
    runtime = rig.fresh_runtime(clients)
    queue = MemoryQueue(rig.queue_url)
    refresh = load_function("refresh")
    sweeper = Sweeper(
        connections=runtime.connections, sqs=cast("SQSClient", queue), queue_url=queue.url, clock=runtime.clock
    )
    refresh.use_services(refresh.Services(worker=runtime.refresh_worker, events=runtime.worker_events, sweeper=sweeper))
    worker_context = context_for(rig.topology, function_id(rig.topology, "refresh", "app.worker_handler"))
    sweep_context = context_for(rig.topology, function_id(rig.topology, "refresh", "app.sweep_handler"))
    queue_arn = next(q.arn for q in rig.resources.queues.values() if q.url == rig.queue_url)
    workers = Workers(refresh.worker_handler, worker_context, queue, queue_arn=queue_arn, concurrency=concurrency)
    # Generous: against moto on a busy 2-core machine the sweep runs several times its ideal.
    time_limit = ideal_seconds(connections, latency, concurrency) * 25 + 300
    refreshes_before = rig.worksection.calls["refresh"]
    rig.worksection.faults.set_latency(latency)
    moto_before = rig.moto.cpu_seconds()
    cpu_before = _self_cpu()
    machine_before = CpuSnapshot.take()
    total: float | None = None
    try:
        with around_run(), quiet_output(), AwsCallCounter(clients) as counter:
            started = time.perf_counter()
            workers.start()
            swept: Any = refresh.sweep_handler(schedule_event(), sweep_context)
            sweep_seconds = time.perf_counter() - started
            while time.perf_counter() - started < time_limit:
                if workers.done + workers.failed >= connections:
                    total = time.perf_counter() - started
                    break
                time.sleep(0.02)
            workers.stop()
            aws_calls = counter.by_service
    finally:
        rig.worksection.faults.set_latency(0)
        refresh.use_services(None)
    cpu = _self_cpu() - cpu_before
    moto_after = rig.moto.cpu_seconds()
    machine_after = CpuSnapshot.take()
    return SweepResult(
        connections=connections,
        concurrency=concurrency,
        latency=latency,
        setup_seconds=setup_seconds,
        sweep_seconds=sweep_seconds,
        total_seconds=total,
        done=workers.done,
        failed=workers.failed,
        provider_refreshes=rig.worksection.calls["refresh"] - refreshes_before,
        enqueued=int(swept.get("enqueued", 0)),
        bench_cpu_seconds=cpu,
        machine_busy=machine_share(machine_before, machine_after),
        machine_busy_seconds=None
        if machine_before is None or machine_after is None
        else machine_after.busy - machine_before.busy,
        moto_cpu_seconds=None if moto_before is None or moto_after is None else moto_after - moto_before,
        worker_calls=aws_calls,
        poller_calls=dict(queue.calls),
    )
