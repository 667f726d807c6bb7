"""Optional sampling profiles (``--profile``): py-spy on the bench process and the moto child.

py-spy samples every thread of another process without changing it; ``--gil`` keeps only the
samples of the thread holding the GIL, i.e. where the Python CPU time goes (waiting on sockets
drops out). The raw output is one line per distinct stack ("frame;frame;... count"); ``summarise``
turns it into the few lines docs/performance.md quotes.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

SAMPLE_RATE = 100  # per second
MAX_SECONDS = 1800


def py_spy() -> str | None:
    """The py-spy next to this interpreter (``pip install py-spy``), else one on PATH."""
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


class Sampler:
    """py-spy recording ``pid`` into ``out`` until ``stop()`` (SIGINT: py-spy then writes its file)."""

    def __init__(self, pid: int, out: Path, *, rate: int = SAMPLE_RATE) -> None:
        self._pid = pid
        self.out = out
        self._rate = rate
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        command = [binary, "record", "--pid", str(self._pid), "--rate", str(self._rate)]
        command += ["--duration", str(MAX_SECONDS), "--format", "raw", "--output", str(self.out)]
        command += ["--nonblocking", "--gil"]
        self._process = subprocess.Popen(  # noqa: S603 - py-spy on a process of this bench
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        if process.stderr is not None:
            process.stderr.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    self_time: list[tuple[float, str]]  # share of samples, frame
    inclusive: list[tuple[float, str]]


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:123)`` -> ``func (path/to/file.py)``: lines split one function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def summarise(raw: Path, *, top: int = 15, only: tuple[str, ...] = ()) -> Profile:
    """Self and inclusive shares per function; ``only``: keep inclusive frames whose text contains one."""
    own: Counter[str] = Counter()
    total_by_frame: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_frame_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            total_by_frame[frame] += n
    if samples == 0:
        return Profile(0, [], [])
    inclusive = [
        (n / samples, frame)
        for frame, n in total_by_frame.most_common()
        if not only or any(text in frame for text in only)
    ]
    return Profile(
        samples=samples,
        self_time=[(n / samples, frame) for frame, n in own.most_common(top)],
        inclusive=inclusive[:top],
    )


def render(title: str, profile: Profile) -> str:
    lines = [f"## {title} ({profile.samples} samples holding the GIL)", "", "self:"]
    lines += [f"  {share:6.1%}  {frame}" for share, frame in profile.self_time]
    lines += ["", "inclusive:"]
    lines += [f"  {share:6.1%}  {frame}" for share, frame in profile.inclusive]
    return "\n".join(lines) + "\n"
