"""moto in server mode in a child process, so that the emulator has its own interpreter (and GIL).

In one process, moto's request handling and the code under test would share one GIL and one core,
and the emulator's cost would be indistinguishable from ours. In a child process its CPU time can
be read separately (``cpu_seconds``) and it can use the second core.

The child serves moto's app like ``moto.server.ThreadedMotoServer`` (a thread per connection,
HTTP/1.0 as moto ships it) on 127.0.0.1, port 0, except that DynamoDB and Secrets Manager requests
are served one at a time: moto's backends hold no locks, and two racing conditional writes were
both accepted once in 80 rounds of the lease test (infra/moto_app.py). The real services
serialise writes to one item or secret, so serialising keeps the semantics the bench relies on
(one lease winner) at the price of some concurrency inside the emulator.

One more change to the emulator, for speed only: moto's Secrets Manager finds a secret by scanning
every secret on each call (``SecretsStore.__getitem__``/``__contains__``), which made lookups 30 %
of moto's CPU with 10,000 secrets. ``_index_secret_names`` answers a plain secret name (how the
stores address secrets) from the dict moto already keys by name; ARNs still take moto's own path.

The child prints ``MOTO_URL <url>`` once it listens and exits when its stdin closes (so it never
outlives the bench, even when the bench is killed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Self

READY_PREFIX = "MOTO_URL "
START_TIMEOUT = 60.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def _index_secret_names() -> None:
    """O(1) lookups by plain secret name in moto's SecretsStore (a dict keyed by name already)."""
    from moto.secretsmanager.models import SecretsStore  # noqa: PLC0415

    scan_get, scan_contains = SecretsStore.__getitem__, SecretsStore.__contains__

    def getitem(self: Any, key: str) -> Any:
        if not key.startswith("arn:") and dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        return scan_get(self, key)

    def contains(self: Any, key: str) -> bool:
        if not key.startswith("arn:") and dict.__contains__(self, key):
            return True
        return scan_contains(self, key)

    SecretsStore.__getitem__ = getitem  # type: ignore[method-assign]
    SecretsStore.__contains__ = contains  # type: ignore[method-assign]


def serve() -> None:
    """The child: serve until stdin closes."""
    _index_secret_names()
    from moto.moto_server.werkzeug_app import MotoRequestHandler  # noqa: PLC0415 - only the child needs moto
    from werkzeug.serving import make_server  # noqa: PLC0415

    from infra.moto_app import moto_wsgi_app  # noqa: PLC0415 - the app tests and the local stack serve

    class QuietHandler(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            return None

    app = moto_wsgi_app()
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    server.daemon_threads = True  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    print(f"{READY_PREFIX}http://127.0.0.1:{server.server_port}", flush=True)
    sys.stdin.read()  # EOF: the parent is done (or gone)
    server.shutdown()


class MotoProcess:
    """Parent side: start the child, learn its URL, stop it (only this child, by its pid)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> Self:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
        env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "PYTHONUNBUFFERED": "1"})
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.bench.moto_process"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._process = process
        assert process.stdout is not None
        line = _read_line(process, START_TIMEOUT)
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise RuntimeError(f"moto server did not start (said {line!r})")
        self.url = line.removeprefix(READY_PREFIX).strip()
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the child has used so far (Linux /proc), None elsewhere."""
        return process_cpu_seconds(self.pid) if self.pid is not None else None

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the child exits on EOF
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The child's first line, or "" after ``timeout`` seconds (a thread, so the wait is bounded)."""
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.append(process.stdout.readline())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` from /proc/<pid>/stat (clock ticks -> seconds)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    # The command name (field 2) may contain spaces; the fields after its closing ")" do not.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    serve()
