"""Start `python -m infra.localstack` as a subprocess, wait for its ready line, always stop it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.localstack.banner import READY_PREFIX

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0


@dataclass
class StackProcess:
    process: subprocess.Popen[str]
    info: dict[str, Any]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        return str(self.info["api_url"])

    def output(self) -> str:
        return "".join(self.stdout) + "\n--- stderr ---\n" + "".join(self.stderr[-200:])


def _pump(stream: Any, lines: list[str], ready: threading.Event | None) -> None:
    for line in stream:
        lines.append(line)
        if ready is not None and line.startswith(READY_PREFIX):
            ready.set()


def stack_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TOKENBROKER_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@contextmanager
def running_stack(args: Sequence[str], workdir: Path, *, env: dict[str, str] | None = None) -> Iterator[StackProcess]:
    """The stack on a free port; killed (SIGTERM, then SIGKILL) whatever happens in the test."""
    ready_file = workdir / "ready.json"
    command = [sys.executable, "-m", "infra.localstack", "--port", "0", "--ready-file", str(ready_file), *args]
    process = subprocess.Popen(
        command, cwd=REPO, env=env or stack_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stack = StackProcess(process=process, info={})
    ready = threading.Event()
    pumps = [
        threading.Thread(target=_pump, args=(process.stdout, stack.stdout, ready), daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, stack.stderr, None), daemon=True),
    ]
    for pump in pumps:
        pump.start()
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.wait(0.2):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the local stack did not become ready:\n{stack.output()}")
        stack.info = json.loads(ready_file.read_text())
        yield stack
    finally:
        stop(process)
        for pump in pumps:
            pump.join(timeout=5)


def stop(process: subprocess.Popen[str], timeout: float = 10.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    return process.returncode
