"""Vend latency p50/p99 versus a raw GetSecretValue against the same moto server.

Primary setup: the local stack as users run it (``python -m infra.localstack`` in a child
process: moto, the SigV4-checking gateway and the real vend handler in that process). The bench
process plays the consumer: ``TokenBrokerClient.send`` (the SDK's signed, uncached request) for
the vend, a boto3 Secrets Manager client for the baseline, both on kept-alive connections.

Second setup, always measured: the vend handler in-process (an HttpApi event, no HTTP, no SigV4)
against the bench's moto child. It separates the handler's own cost from the gateway's. When the
local stack cannot start, the in-process figure stands in for the stack figure and says so.

Samples alternate (vend, raw, raw, vend, ...) so that drift in machine load hits both series alike.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from tokenbroker.aws import DynamoTable
from tokenbroker.client import TokenBrokerClient
from tokenbroker.clock import SystemClock
from tokenbroker.keys import ConnectionKey
from tokenbroker.models import StoredToken
from tokenbroker.stores.connections import ConnectionStore
from tokenbroker.stores.tokens import TokenStore
from tokenbroker.tokens import TokenSet

from infra.bench import profiling
from infra.bench.figures import Figure, at_most
from infra.bench.lambda_events import context_for, function_id, vend_event
from infra.bench.moto_process import REPO_ROOT
from infra.bench.rig import DAY, PROVIDER, Rig, quiet_output
from infra.bench.stats import Summary
from infra.localstack.functions import load_function

SAMPLES = 300
WARMUP = 20
READY_TIMEOUT = 90.0
TARGET_P50_RATIO = 1.5
PROFILE_RATE = 1000  # samples per second: a few seconds of vends need a dense profile


@dataclass(frozen=True, slots=True)
class LatencyPair:
    vend: Summary  # seconds
    raw: Summary  # seconds
    setup: str

    def figures(self, prefix: str, *, target: bool, notes: str = "") -> list[Figure]:
        vend, raw = self.vend.scaled(1000), self.raw.scaled(1000)
        details = {
            "samples": vend.count,
            "vend_ms": {"p50": vend.p50, "p90": vend.p90, "p99": vend.p99, "min": vend.minimum},
            "raw_get_secret_value_ms": {"p50": raw.p50, "p90": raw.p90, "p99": raw.p99, "min": raw.minimum},
        }
        return [
            Figure(
                f"{prefix}.p50",
                vend.p50,
                "ms",
                baseline=raw.p50,
                baseline_name="raw GetSecretValue p50, same moto server",
                target=at_most(TARGET_P50_RATIO) if target else None,
                setup=self.setup,
                notes=notes,
                details=details,
            ),
            Figure(
                f"{prefix}.p99",
                vend.p99,
                "ms",
                baseline=raw.p99,
                baseline_name="raw GetSecretValue p99, same moto server",
                setup=self.setup,
            ),
        ]


def _interleaved(
    vend: Callable[[], None],
    raw: Callable[[], None],
    samples: int,
    around: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> tuple[list[float], list[float]]:
    """Warm up (first requests build clients and collaborators), then alternate the two series."""
    for _ in range(WARMUP):
        vend()
        raw()
    vend_times: list[float] = []
    raw_times: list[float] = []
    with around():
        for n in range(samples):
            order = ((vend, vend_times), (raw, raw_times)) if n % 2 == 0 else ((raw, raw_times), (vend, vend_times))
            for call, times in order:
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
    return vend_times, raw_times


def _fresh_token() -> TokenSet:
    now = int(time.time())
    return TokenSet(
        access_token=secrets.token_urlsafe(600),  # about the size of a Worksection JWT
        token_type="Bearer",
        expires_at=now + int(DAY),
        obtained_at=now,
        refresh_token=secrets.token_urlsafe(48),
        scopes=("projects_read",),
        extra={"account_url": "https://bench.worksection.com"},
    )


# --- over the local stack ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunningStack:
    info: dict[str, Any]
    log: Path
    pid: int


@contextmanager
def local_stack(workdir: Path) -> Iterator[RunningStack]:
    """``python -m infra.localstack`` on free ports; stopped (this child only) whatever happens."""
    ready = workdir / "stack-ready.json"
    log = workdir / "stack.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TOKENBROKER_", "POWERTOOLS_"))}
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "infra.localstack", "--port", "0", "--ready-file", str(ready)]
    command += ["--sweep-interval", "3600"]  # no sweep during the measurement
    with log.open("w", encoding="utf-8") as output:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not ready.exists():
                if process.poll() is not None:
                    raise RuntimeError(f"the local stack exited with {process.returncode}; see {log}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the local stack was not ready within {READY_TIMEOUT:.0f} s; see {log}")
                time.sleep(0.2)
            time.sleep(0.2)  # the file is written in one go, but give the writer its close()
            yield RunningStack(json.loads(ready.read_text(encoding="utf-8")), log, process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def measure_local_stack(workdir: Path, samples: int = SAMPLES, profile_dir: Path | None = None) -> LatencyPair:
    """``profile_dir``: py-spy the stack process and the bench process while the samples run."""
    with local_stack(workdir) as stack:
        info = stack.info
        session = boto3.Session(
            aws_access_key_id=info["access_key_id"],
            aws_secret_access_key=info["secret_access_key"],
            region_name=info["region"],
        )
        config = Config(retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=2, read_timeout=10)
        secretsmanager: Any = session.client("secretsmanager", endpoint_url=info["moto_url"], config=config)
        dynamodb: Any = session.client("dynamodb", endpoint_url=info["moto_url"], config=config)
        tokens = TokenStore(secretsmanager, stage=info["stage"])
        connections = ConnectionStore(DynamoTable(dynamodb, info["table_name"]), clock=SystemClock())
        key = ConnectionKey(PROVIDER, f"latency-{uuid.uuid4().hex[:8]}")
        token = _fresh_token()
        connection = connections.save_connected(
            key, expires_at=token.expires_at, refresh_expires_at=None, next_refresh_at=None, scopes=token.scopes
        )
        tokens.put(key, StoredToken(token=token, generation=connection.generation))
        client = TokenBrokerClient(info["api_url"], session=session, region=info["region"])
        path = f"/tokens/{key.provider}/{key.connection_id}"
        name = tokens.secret_name(key)

        def vend() -> None:
            response = client.send("GET", path, query={"min_ttl": "60"})
            if response.status_code != 200:
                raise RuntimeError(f"vend over the local stack answered {response.status_code}")

        def raw() -> None:
            secretsmanager.get_secret_value(SecretId=name)

        vend_times, raw_times = _interleaved(vend, raw, samples, around=lambda: _profiled(profile_dir, stack.pid))
    setup = (
        "local stack in a child process (python -m infra.localstack: moto + SigV4 gateway + vend handler); "
        "consumer = TokenBrokerClient.send (SigV4, kept-alive HTTP) in the bench process; "
        "baseline = boto3 GetSecretValue from the bench process to the stack's moto server"
    )
    return LatencyPair(Summary.of(vend_times), Summary.of(raw_times), setup)


@contextmanager
def _profiled(profile_dir: Path | None, stack_pid: int) -> Iterator[None]:
    if profile_dir is None:
        yield
        return
    profile_dir.mkdir(parents=True, exist_ok=True)
    samplers = [
        profiling.Sampler(stack_pid, profile_dir / "profile-vend-stack.raw", rate=PROFILE_RATE),
        profiling.Sampler(os.getpid(), profile_dir / "profile-vend-consumer.raw", rate=PROFILE_RATE),
    ]
    for sampler in samplers:
        sampler.start()
    try:
        yield
    finally:
        report = ""
        for sampler in samplers:
            sampler.stop()
            if sampler.out.exists():
                report += profiling.render(sampler.out.name, profiling.summarise(sampler.out, top=25)) + "\n"
        (profile_dir / "profile-vend.txt").write_text(report, encoding="utf-8")


# --- in-process handler --------------------------------------------------------------------------


def measure_in_process(rig: Rig, samples: int = SAMPLES) -> LatencyPair:
    handler = load_function("vend")
    runtime = rig.fresh_runtime()
    handler.use_services(handler.Services(vending=runtime.vending, connect=runtime.connect))
    context = context_for(rig.topology, function_id(rig.topology, "vend"))
    key = ConnectionKey(PROVIDER, f"latency-{uuid.uuid4().hex[:8]}")
    rig.seed(key, expires_in=DAY, runtime=runtime)
    raw_client: Any = rig.clients.secretsmanager
    name = runtime.tokens.secret_name(key)

    def vend() -> None:
        answer = handler.lambda_handler(vend_event(key.provider, key.connection_id, min_ttl=60), context)
        if answer.get("statusCode") != 200:
            raise RuntimeError(f"in-process vend answered {answer.get('statusCode')}")

    def raw() -> None:
        raw_client.get_secret_value(SecretId=name)

    try:
        with quiet_output():
            vend_times, raw_times = _interleaved(vend, raw, samples)
    finally:
        handler.use_services(None)
    setup = (
        "vend handler in the bench process, HttpApi v2 event (no HTTP, no SigV4), moto server in a child process; "
        "baseline = boto3 GetSecretValue from the bench process to the same moto server"
    )
    return LatencyPair(Summary.of(vend_times), Summary.of(raw_times), setup)


def measure(
    rig: Rig, workdir: Path | None = None, samples: int = SAMPLES, profile_dir: Path | None = None
) -> list[Figure]:
    in_process = measure_in_process(rig, samples)
    directory = workdir or Path(tempfile.mkdtemp(prefix="tokenbroker-bench-stack-"))
    try:
        over_stack = measure_local_stack(directory, samples, profile_dir)
    except Exception as error:  # the stack is someone else's part: measure without it, say so
        reason = f"local stack unavailable ({type(error).__name__}: {error}); measured in-process instead"
        substitute = LatencyPair(in_process.vend, in_process.raw, f"{in_process.setup}. {reason}")
        return [
            *substitute.figures("vend_latency.local_stack", target=True, notes=reason),
            *in_process.figures("vend_latency.in_process_handler", target=False),
        ]
    return [
        *over_stack.figures("vend_latency.local_stack", target=True),
        *in_process.figures(
            "vend_latency.in_process_handler",
            target=False,
            notes="the handler's own share: no HTTP hop, no SigV4 on either side",
        ),
    ]
