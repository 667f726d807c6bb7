"""Crashes: the refresh worker runs in a subprocess and is killed (SIGKILL) at each step of a refresh.

Each crash point gets its own moto table, secret stage and provider sandbox, all served by this
test process (the moto server of tests/conftest.py, sandboxes on 127.0.0.1), so the state survives
the kill. All crash workers run at once (harness/crashworker.py). Then, per point:

1. while the dead worker's lease is still running: another run is ``contended`` and a consumer is
   vended whatever the secret holds;
2. after the lease expired: the real sweep and worker handler take over (a ManualClock set past
   the lease), and the test reports what they made of it and what, if anything, was lost.

The control run (no crash) and the runs that got past the secret write measure the window between
the provider's answer and the durable write: the only moment where a rotated token exists nowhere
but in one process's memory.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tokenbroker.clock import ManualClock, SystemClock
from tokenbroker.events import EventType
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import ConnectionStatus, PasswordLogin, StoredToken
from tokenbroker.providers import Catalog
from tokenbroker.refresh import RefreshOutcome
from tokenbroker.stores import ConnectionStore

from infra.sandboxes import WorklySandbox, WorksectionSandbox, write_catalog_file
from infra.sandboxes.catalog import sandbox_provider, token_from_answer
from tests.reliability.harness.crashworker import CrashConfig
from tests.reliability.harness.results import NOTHING, REPO, RowLog
from tests.reliability.harness.system import (
    WORKLY_EMAIL,
    WORKLY_PASSWORD,
    WS_EMAIL,
    WS_PASSWORD,
    System,
)
from tests.support.aws import MotoServer, clients_for, new_table

LEASE = 30.0  # the crashed worker's lease; recovery runs on a clock set past it
WORKER_TIMEOUT = 60.0


@dataclass(frozen=True)
class Point:
    name: str
    provider: str = "worksection"
    login: bool = False  # Workly connection that kept the login (re-authenticates)

    @property
    def id(self) -> str:
        return f"{self.name}-{self.provider}" + ("-login" if self.login else "")


POINTS = [
    Point("after_lease"),
    Point("before_provider_call"),
    Point("after_provider_answer"),
    Point("after_provider_answer", "workly", login=True),
    Point("after_secret_write"),
    Point("after_commit"),
    Point("none"),
]


@dataclass
class Crash:
    point: Point
    system: System
    sandbox: WorksectionSandbox | WorklySandbox
    key: ConnectionKey
    seeded: StoredToken
    catalog_file: Path
    returncode: int | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""

    def step(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.steps if s["step"] == name), None)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if s["step"] == "event"]

    def window(self) -> float | None:
        """Seconds from the provider's answer to the secret write returning, in the worker."""
        answered, written = self.step("provider_answered"), self.step("secret_written")
        if answered is None or written is None:
            return None
        return float(written["t"]) - float(answered["t"])


def _prepare(point: Point, moto: MotoServer, workdir: Path) -> Crash:
    clock = SystemClock()
    sandbox: WorksectionSandbox | WorklySandbox
    if point.provider == "worksection":
        sandbox = WorksectionSandbox()
        sandbox.add_user(WS_EMAIL, WS_PASSWORD, accounts=("acme",))
    else:
        sandbox = WorklySandbox()
        sandbox.add_user(WORKLY_EMAIL, WORKLY_PASSWORD)
    sandbox.start()
    clients = clients_for(moto.endpoint_url)
    catalog_file = write_catalog_file(workdir / f"{point.id}.yaml", **{point.provider: sandbox})  # type: ignore[arg-type]
    catalog = Catalog.load(catalog_file, environ={})
    system = System.create(clients, new_table(clients), clock, catalog=catalog, lease_seconds=LEASE)
    system.providers[point.provider] = sandbox_provider(catalog, sandbox, clock)
    email = WS_EMAIL if point.provider == "worksection" else WORKLY_EMAIL
    now = time.time()
    # A day-old token with two minutes left: due for refresh now.
    answer = sandbox.issue_tokens(email)
    token = token_from_answer(answer, now - sandbox.knobs.access_ttl + 120)
    login = PasswordLogin(WORKLY_EMAIL, WORKLY_PASSWORD) if point.login else None
    key = ConnectionKey(point.provider, f"crash-{point.name.replace('_', '-')}")
    seeded = system.seed(key, token, login=login)
    sandbox.reset()  # counters from here on
    return Crash(point, system, sandbox, key, seeded, catalog_file)


def _launch(crash: Crash, moto: MotoServer, workdir: Path) -> subprocess.Popen[str]:
    config = CrashConfig(
        moto_url=moto.endpoint_url,
        table=crash.system.table.name,
        stage=crash.system.tokens._stage,
        catalog_file=str(crash.catalog_file),
        provider=crash.point.provider,
        connection_id=crash.key.connection_id,
        point=crash.point.name,
        lease_seconds=LEASE,
    )
    config_file = workdir / f"{crash.point.id}.json"
    config_file.write_text(config.to_json(), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'shared'}", "POWERTOOLS_TRACE_DISABLED": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.harness.crashworker", str(config_file)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def crashes(moto_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Crash]]:
    workdir = tmp_path_factory.mktemp("crashes")
    prepared: list[Crash] = []
    processes: list[subprocess.Popen[str]] = []
    try:
        for point in POINTS:
            prepared.append(_prepare(point, moto_server, workdir))
        processes = [_launch(crash, moto_server, workdir) for crash in prepared]
        for crash, process in zip(prepared, processes, strict=True):
            out, err = process.communicate(timeout=WORKER_TIMEOUT)
            crash.returncode, crash.stderr = process.returncode, err
            crash.steps = [json.loads(line) for line in out.splitlines() if line.startswith('{"step"')]
        yield {crash.point.id: crash for crash in prepared}
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=5)
        for crash in prepared:
            crash.sandbox.stop()


def _recovery(crash: Crash, seconds_after_crash: float) -> System:
    """The same table, stage and provider, on a clock ``seconds_after_crash`` ahead."""
    clock = ManualClock(time.time() + seconds_after_crash)
    dead = crash.system
    assert dead.lease_seconds == LEASE
    system = System(
        clock=clock,
        clients=dead.clients,
        table=dead.table,
        settings=dead.settings,  # its queue, its stage, the same lease
        tokens=dead.tokens,
        connections=ConnectionStore(dead.table, clock=clock, due_shards=1),
        catalog=dead.catalog,
        seeded=[crash.key],
    )
    system.providers[crash.point.provider] = sandbox_provider(dead.catalog, crash.sandbox, clock)
    return system


def _provider_refreshes(crash: Crash) -> int:
    return crash.sandbox.refreshes


@pytest.mark.parametrize("point", POINTS, ids=[p.id for p in POINTS])
def test_recovery_after_a_crash(crashes: dict[str, Crash], point: Point, findings: RowLog) -> None:
    crash = crashes[point.id]
    key, seeded = crash.key, crash.seeded
    if point.name == "none":
        assert crash.returncode == 0, crash.stderr[-3000:]
    else:
        assert crash.returncode == -9, f"expected SIGKILL, got {crash.returncode}: {crash.stderr[-3000:]}"
        assert crash.step("killed") is not None and crash.step("killed")["point"] == point.name  # type: ignore[index]
    refreshed_by_worker = _provider_refreshes(crash)

    # --- before the dead worker's lease runs out ---------------------------------------------------
    now_system = _recovery(crash, 0.0)
    item = now_system.item(key)
    secret = now_system.secret(key)
    holds_lease = point.name not in ("after_commit", "none")
    assert (item.lease is not None) is holds_lease, item
    if holds_lease:
        assert item.attempt is not None and item.attempt.generation == 1  # the attempt is visible
        assert now_system.engine().refresh(key).outcome is RefreshOutcome.CONTENDED
    vended = now_system.vending(wait_seconds=0).vend(key, min_ttl=0)
    expected_generation = 2 if point.name in ("after_secret_write", "after_commit", "none") else 1
    assert vended.generation == secret.generation == expected_generation

    # --- after it: the schedule takes over -----------------------------------------------------------
    system = _recovery(crash, LEASE + 5)
    log = system.run_schedule(3600)
    outcomes = log.by_key.get(key, [])
    settled = [o for o in outcomes if o != "not_needed"]
    secret, item = system.secret(key), system.item(key)
    refreshes = _provider_refreshes(crash) - refreshed_by_worker
    published = [e["type"] for e in crash.events]
    lost = NOTHING
    match point.name:
        case "after_lease" | "before_provider_call":
            assert settled == ["refreshed"], log
            assert secret.generation == 2 and item.generation == 2 and refreshes == 1
            assert system.metrics.total("RefreshInterrupted") == 1
            did = "lease and attempt left behind; contended until the lease expired, then the interrupted attempt "
            did += "was retried once: refreshed"
        case "after_provider_answer" if point.login:
            assert refreshed_by_worker == 1
            assert settled == ["reauthenticated"], log
            assert secret.generation == 2 and secret.status is ConnectionStatus.ACTIVE
            did = "the rotated answer died with the worker; the retry found the grant dead and re-logged in "
            did += "with the stored login: reauthenticated"
        case "after_provider_answer":
            assert refreshed_by_worker == 1  # the provider rotated: our refresh token is dead
            # A dead grant right after an interrupted attempt may be checked once more before it is final.
            assert settled in (["needs_reauth"], ["transient_failure", "needs_reauth"]), log
            assert secret.status is ConnectionStatus.NEEDS_REAUTH and item.status is ConnectionStatus.NEEDS_REAUTH
            [event] = system.events_of(EventType.CONNECTION_NEEDS_REAUTHORIZATION, key)
            assert event.reason is not None and event.reason.startswith("needs_reauth")
            assert refreshes == 0  # the retries were refused: the dead token was not rotated again
            did = f"the rotated answer died with the worker; the retries ({', '.join(settled)}) found the grant "
            did += "dead: needs_reauth + event"
            lost = "the grant (rotated, never written): the user must reconnect"
        case "after_secret_write":
            assert outcomes[:1] == ["not_needed"] and not settled, log
            assert secret.generation == 2 and item.generation == 2 and item.lease is None and item.attempt is None
            assert refreshes == 0 and system.metrics.total("RefreshReconciled") == 1
            did = "the secret (generation 2) was vended at once; the next run reconciled the item from it, "
            did += "no provider call"
            if "Token Refreshed" not in published and not system.events_of(EventType.TOKEN_REFRESHED, key):
                lost = "the 'Token Refreshed' event of generation 2 (see the AWS commit-failure row)"
        case "after_commit":
            assert not settled, log  # nothing left to do
            assert item.generation == 2 and item.lease is None and secret.generation == 2 and refreshes == 0
            did = "the refresh was complete; nothing to recover"
            if "Token Refreshed" not in published:
                lost = "the 'Token Refreshed' event (published after the commit, best effort)"
        case _:
            assert not settled and secret.generation == 2 and "Token Refreshed" in published
            did = "control run: refreshed, event published"
    assert secret.generation >= seeded.generation
    window = crash.window()
    measures: dict[str, float | int | str] = {"provider_refreshes": refreshed_by_worker + refreshes}
    if window is not None:
        measures["answer_to_durable_write_ms"] = round(window * 1000, 1)
    where = point.provider + (", stored login" if point.login else "")
    fault = "no crash (control run)" if point.name == "none" else f"SIGKILL {point.name.replace('_', ' ')}"
    findings.record("crash", f"{fault} ({where})", "worker subprocess, moto server, sandbox", did, lost, **measures)


def test_the_window_between_the_answer_and_the_durable_write(crashes: dict[str, Crash], findings: RowLog) -> None:
    """Measured in the worker: provider answered -> PutSecretValue returned (moto server over HTTP)."""
    windows = [w for c in crashes.values() if (w := c.window()) is not None]
    assert len(windows) >= 3, [c.steps for c in crashes.values()]
    assert all(0 <= w < 5.0 for w in windows), windows
    findings.record(
        "crash",
        "window: provider answer -> durable secret write",
        "subprocess worker, moto server",
        f"{len(windows)} runs: median {statistics.median(windows) * 1000:.1f} ms, max {max(windows) * 1000:.1f} ms "
        "(one PutSecretValue); a crash inside it loses a rotated grant (see the after-provider-answer row)",
        NOTHING,
        median_ms=round(statistics.median(windows) * 1000, 1),
        max_ms=round(max(windows) * 1000, 1),
    )
