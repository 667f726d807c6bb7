"""What moto itself costs per call, so that the reader can tell the emulator's time from ours.

One thread, one call at a time, against the moto child: the round trip the bench process sees
(p50) and the CPU the moto process spends per call (its CPU time over a loop of calls, divided by
the calls). The calls are the five of a scheduled refresh, made through the stores as the
refresh engine makes them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from tokenbroker.keys import ConnectionKey
from tokenbroker.models import StoredToken

from infra.bench.figures import Figure
from infra.bench.rig import DAY, PROVIDER, Rig
from infra.bench.stats import median

CALLS = 40
# The sweep figure's ideal time per refresh: 50 ms provider latency over 10 workers.
IDEAL_MS_PER_REFRESH = 50.0 / 10


@dataclass(frozen=True, slots=True)
class ApiCost:
    round_trip_ms: float  # p50 seen by the bench process
    moto_cpu_ms: float | None  # per call


@dataclass
class EmulatorCost:
    apis: dict[str, ApiCost] = field(default_factory=dict)

    @property
    def refresh_cpu_ms(self) -> float | None:
        """moto CPU of one scheduled refresh: GetSecretValue, 2 UpdateItem, PutSecretValue, PutEvents."""
        costs = [self.apis[name].moto_cpu_ms for name in REFRESH_MIX]
        if any(c is None for c in costs):
            return None
        return sum(c for c in costs if c is not None)

    @property
    def refresh_round_trips_ms(self) -> float:
        return sum(self.apis[name].round_trip_ms for name in REFRESH_MIX)

    def figures(self) -> list[Figure]:
        setup = f"one thread, {CALLS} sequential calls per API through the stores, moto server in a child process"
        details = {
            name: {"round_trip_p50_ms": cost.round_trip_ms, "moto_cpu_ms_per_call": cost.moto_cpu_ms}
            for name, cost in self.apis.items()
        }
        get = self.apis["GetSecretValue"]
        return [
            Figure(
                "emulator.get_secret_value_round_trip",
                get.round_trip_ms,
                "ms",
                setup=setup,
                notes=f"p50 round trip of one GetSecretValue; moto spends {_ms(get.moto_cpu_ms)} of CPU on it",
                details=details,
            ),
            Figure(
                "emulator.cpu_per_scheduled_refresh",
                self.refresh_cpu_ms,
                "ms",
                baseline=IDEAL_MS_PER_REFRESH,
                baseline_name="ideal sweep time per refresh (50 ms / 10 workers)",
                setup=setup,
                notes="moto CPU for the 5 AWS calls of one scheduled refresh (round trips: "
                f"{self.refresh_round_trips_ms:.1f} ms); a ratio above 1 means moto alone, on one core, "
                "cannot keep up with the sweep's ideal",
                details=details,
            ),
        ]


REFRESH_MIX = ("GetSecretValue", "UpdateItem (lease)", "PutSecretValue", "UpdateItem (commit)", "PutEvents")


def _ms(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} ms"


def _cost(rig: Rig, calls: list[Callable[[], Any]]) -> ApiCost:
    times: list[float] = []
    cpu_before = rig.moto.cpu_seconds()
    for call in calls:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    cpu_after = rig.moto.cpu_seconds()
    cpu = None if cpu_before is None or cpu_after is None else (cpu_after - cpu_before) / len(calls) * 1000
    return ApiCost(round_trip_ms=median(times) * 1000, moto_cpu_ms=cpu)


def measure(rig: Rig) -> EmulatorCost:
    runtime = rig.fresh_runtime()
    tokens, connections = runtime.tokens, runtime.connections
    run = uuid.uuid4().hex[:6]
    keys = [ConnectionKey(PROVIDER, f"emulator-{run}-{n}") for n in range(CALLS)]
    rig.seed_many(keys, expires_in=DAY)
    stored = {key: tokens.get(key) for key in keys[:2]}  # warm the clients
    owner = uuid.uuid4().hex
    events: Any = runtime.aws.client("events")
    bus = rig.settings.event_bus_name
    cost = EmulatorCost()
    cost.apis["GetSecretValue"] = _cost(rig, [partial(tokens.get, key) for key in keys])
    cost.apis["UpdateItem (lease)"] = _cost(
        rig, [partial(connections.acquire_lease, key, owner, 90, record_attempt=True) for key in keys]
    )
    sample = stored[keys[0]]

    def put(key: ConnectionKey) -> None:
        tokens.put(key, StoredToken(sample.token, sample.generation + 1, metadata=dict(sample.metadata)))

    cost.apis["PutSecretValue"] = _cost(rig, [partial(put, key) for key in keys])

    def commit(key: ConnectionKey) -> None:
        token = sample.token
        connections.commit_refresh(
            key,
            owner,
            sample.generation,
            expires_at=token.expires_at,
            refresh_expires_at=token.expires_at + DAY,
            next_refresh_at=token.expires_at - 300,
            scopes=token.scopes,
        )

    cost.apis["UpdateItem (commit)"] = _cost(rig, [partial(commit, key) for key in keys])
    entry = {"Source": "tokenbroker", "DetailType": "Token Refreshed", "Detail": "{}", "EventBusName": bus}
    cost.apis["PutEvents"] = _cost(rig, [partial(events.put_events, Entries=[entry]) for _ in keys])
    return cost
