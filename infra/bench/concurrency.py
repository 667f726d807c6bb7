"""100 concurrent vends of an expiring token: one provider refresh, one token for all, and the wait.

Real threads call ``VendingService.vend`` (the library function behind GET /tokens/...) released
together by a barrier, against the moto server in its child process and the Worksection sandbox
with a fixed refresh latency. The Powertools HTTP resolver in the vend handler keeps the current
event on a module global (Lambda serves one request per process), so 100 threads share the
service, not the handler.

Baseline of the p99 latency: the sandbox's configured refresh latency, the least any caller who
needs the new token must wait.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tokenbroker.aws import AwsCallCounter
from tokenbroker.keys import ConnectionKey

from infra.bench.figures import Figure, exactly
from infra.bench.rig import PROVIDER, Rig, clients_for, quiet_output
from infra.bench.stats import Summary

CALLERS = 100
REFRESH_LATENCY = 0.2  # seconds, as in tests/integration/vending/test_concurrent_vends.py
SETUP = (
    f"{CALLERS} threads, VendingService.vend(min_ttl=60) on a token with 20 s left, moto server (child process), "
    f"Worksection sandbox with {REFRESH_LATENCY * 1000:.0f} ms refresh latency"
)


@dataclass(frozen=True, slots=True)
class ConcurrencyResult:
    provider_refreshes: int
    distinct_tokens: int
    new_generation: bool
    latency: Summary  # seconds
    errors: int
    aws_calls: dict[str, int]
    moto_cpu_seconds: float | None
    wall_seconds: float

    def figures(self) -> list[Figure]:
        millis = self.latency.scaled(1000)
        return [
            Figure(
                "concurrent_vends.provider_refreshes",
                float(self.provider_refreshes),
                "calls",
                target=exactly(1),
                setup=SETUP,
                notes=f"refresh calls the sandbox counted; {self.distinct_tokens} distinct token(s) among "
                f"{CALLERS - self.errors} answers, new generation: {self.new_generation}, errors: {self.errors}",
            ),
            Figure(
                "concurrent_vends.distinct_tokens",
                float(self.distinct_tokens),
                "tokens",
                target=exactly(1),
                setup=SETUP,
                notes="all callers must get the same, new token",
            ),
            Figure(
                "concurrent_vends.p99_latency",
                millis.p99,
                "ms",
                baseline=REFRESH_LATENCY * 1000,
                baseline_name="sandbox refresh latency",
                setup=SETUP,
                notes=f"p50 {millis.p50:.0f} ms, min {millis.minimum:.0f} ms, max {millis.maximum:.0f} ms; losers "
                f"poll the secret (50 ms, doubling, capped at 500 ms) until the winner's generation appears; "
                f"{sum(self.aws_calls.values())} AWS calls in all, moto busy {self._moto_share()} of the wall time",
                details={
                    "p50_ms": millis.p50,
                    "p90_ms": millis.p90,
                    "min_ms": millis.minimum,
                    "max_ms": millis.maximum,
                    "aws_calls": dict(sorted(self.aws_calls.items())),
                    "moto_cpu_seconds": self.moto_cpu_seconds,
                    "wall_seconds": self.wall_seconds,
                },
            ),
        ]

    def _moto_share(self) -> str:
        if self.moto_cpu_seconds is None or self.wall_seconds <= 0:
            return "(unknown)"
        return f"{self.moto_cpu_seconds / self.wall_seconds:.0%}"


def measure(rig: Rig) -> ConcurrencyResult:
    clients = clients_for(rig.moto.url, max_pool_connections=CALLERS + 10)
    runtime = rig.fresh_runtime(clients)
    key = ConnectionKey(PROVIDER, f"concurrent-{uuid.uuid4().hex[:8]}")
    old = rig.seed(key, expires_in=20, runtime=runtime)
    # Warm the app-credentials cache and the clients, as a running Lambda instance would have them.
    runtime.app_credentials.get(PROVIDER)
    rig.worksection.faults.set_latency(REFRESH_LATENCY, endpoint="refresh")
    before = rig.worksection.calls["refresh"]
    barrier = threading.Barrier(CALLERS)

    def one(_: int) -> tuple[float, str | None, int | None]:
        barrier.wait(timeout=30)
        started = time.perf_counter()
        try:
            vended = runtime.vending.vend(key, 60)
        except Exception:
            return time.perf_counter() - started, None, None
        return time.perf_counter() - started, vended.access_token, vended.generation

    moto_before = rig.moto.cpu_seconds()
    started = time.perf_counter()
    try:
        with quiet_output(), AwsCallCounter(clients) as counter, ThreadPoolExecutor(max_workers=CALLERS) as pool:
            answers = list(pool.map(one, range(CALLERS), timeout=120))
    finally:
        rig.worksection.faults.set_latency(0, endpoint="refresh")
    wall = time.perf_counter() - started
    moto_after = rig.moto.cpu_seconds()
    refreshes = rig.worksection.calls["refresh"] - before
    tokens = {token for _, token, _ in answers if token is not None}
    generations = {generation for _, _, generation in answers if generation is not None}
    errors = sum(1 for _, token, _ in answers if token is None)
    return ConcurrencyResult(
        provider_refreshes=refreshes,
        distinct_tokens=len(tokens),
        new_generation=generations == {old.generation + 1} and old.token.access_token not in tokens,
        latency=Summary.of([seconds for seconds, _, _ in answers]),
        errors=errors,
        aws_calls=counter.by_service,
        moto_cpu_seconds=None if moto_before is None or moto_after is None else moto_after - moto_before,
        wall_seconds=wall,
    )
