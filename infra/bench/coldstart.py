"""Cold start per handler, in fresh python3.12 processes, and the size of the built layer.

Each sample is one new interpreter (``python -c``) that times, inside itself:

- handler: ``import app`` from ``functions/<name>/`` (as Lambda imports the Handler's module from
  the task root) plus the first request's initialisation (``services()`` / ``get_service()``:
  ``Runtime.from_env()`` and every collaborator the handler uses), with the environment the
  template gives that function and ``AWS_ENDPOINT_URL`` at an unused loopback port, so that any
  network call during construction would fail loudly instead of reaching anything;
- baseline: ``import boto3; boto3.client("secretsmanager")``.

Interpreter start-up is the same for both and is left out. Samples are taken round-robin (every
handler, then the baseline, again) so that a burst of machine load hits all of them alike; the
figure is the median of ``RUNS`` samples.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.bench.figures import Figure, at_most
from infra.bench.moto_process import REPO_ROOT
from infra.bench.stats import median
from infra.localstack.template import DEFAULT_TEMPLATE, Resolver, load_template, resources_of_type
from infra.localstack.topology import read_topology

RUNS = 7
TARGET_RATIO = 1.3
TIMEOUT = 120.0
LAYER_DIR = REPO_ROOT / ".aws-sam" / "build" / "SharedLayer"
LAMBDA_UNZIPPED_LIMIT_MB = 250.0
REQUIREMENTS = REPO_ROOT / "shared" / "requirements.txt"
HOST_LAYER = REPO_ROOT / ".bench" / "layer-host"
PIP_INSTALL = (sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")

# Lambda imports the Handler's module from the task root; the layer's packages are on sys.path
# (here: the venv, where tokenbroker is installed). Prints seconds: import, then initialisation.
HANDLER_SCRIPT = """\
import time
started = time.perf_counter()
import sys
sys.path.insert(0, {code_dir!r})
import app
imported = time.perf_counter()
app.{init}()
ready = time.perf_counter()
print("COLD", imported - started, ready - imported)
"""
BASELINE_SCRIPT = """\
import time
started = time.perf_counter()
import boto3
imported = time.perf_counter()
boto3.client("secretsmanager")
ready = time.perf_counter()
print("COLD", imported - started, ready - imported)
"""
INITIALISERS = {"vend": "services", "refresh": "services", "callback": "get_service"}


@dataclass(frozen=True, slots=True)
class Subject:
    name: str
    script: str
    env: dict[str, str]
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Packages:
    """Where the children import packages from: interpreter flags, extra environment, a description."""

    flags: tuple[str, ...]
    env: dict[str, str]
    description: str


def host_layer() -> Path:
    """The layer's requirements for this machine's architecture, installed once into .bench/.

    ``sam build`` makes an arm64 layer (template.yaml) whose compiled parts do not load here, and
    the venv also holds dev-only packages (awscrt, cryptography) that botocore imports when it
    finds them, on both sides of the comparison. This replica has exactly the layer's packages.
    """
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = HOST_LAYER / f".requirements-{digest}"
    target = HOST_LAYER / "python"
    if not stamp.exists():
        shutil.rmtree(HOST_LAYER, ignore_errors=True)
        subprocess.run(  # noqa: S603 - this venv's pip, the project's own requirements
            [*PIP_INSTALL, "--target", str(target), "--only-binary=:all:", "-r", str(REQUIREMENTS)],
            check=True,
            timeout=600,
            capture_output=True,
        )
        stamp.touch()
    return target


def packages() -> Packages:
    """The layer's packages (plus tokenbroker from shared/) when they can be installed, else the venv."""
    try:
        layer = host_layer()
    except (OSError, subprocess.SubprocessError) as error:
        return Packages((), {}, f"the venv's packages (layer replica failed: {type(error).__name__})")
    return Packages(
        ("-S",),  # no site-packages: only the layer's packages and the standard library
        {"PYTHONPATH": f"{layer}{os.pathsep}{REPO_ROOT / 'shared'}", "PYTHONNOUSERSITE": "1"},
        f"the layer's packages ({REQUIREMENTS.relative_to(REPO_ROOT)}, host architecture, in "
        f"{HOST_LAYER.relative_to(REPO_ROOT)}) + tokenbroker from shared/; python -S",
    )


@dataclass(frozen=True, slots=True)
class Timing:
    imported: float
    initialised: float

    @property
    def total(self) -> float:
        return self.imported + self.initialised


def unused_loopback_url() -> str:
    """http://127.0.0.1:<port> where nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _placeholder_resolver(document: Mapping[str, Any]) -> Resolver:
    """Resolves the template's Refs to plausible names without creating anything."""
    resolver = Resolver(document, parameters={"Stage": "bench", "AppName": "Bench"}, stack_name="tokenbroker-bench")
    for logical_id in document.get("Resources") or {}:
        resolver.refs[logical_id] = f"tokenbroker-bench-{logical_id}"
    for logical_id in resources_of_type(document, "AWS::SQS::Queue"):
        resolver.refs[logical_id] = f"https://sqs.us-east-1.amazonaws.com/123456789012/tokenbroker-bench-{logical_id}"
    return resolver


def lambda_environment(
    function_env: Mapping[str, Any], resolver: Resolver, logical_id: str, memory: int
) -> dict[str, str]:
    """What Lambda gives the function: the template's variables plus the runtime's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_", "TOKENBROKER_"))}
    env.update({name: str(value) for name, value in resolver.resolve(dict(function_env)).items()})
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": unused_loopback_url(),
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            # Powertools switches tracing on when it sees these (the template says Tracing: Active).
            "AWS_LAMBDA_FUNCTION_NAME": f"tokenbroker-bench-{logical_id}",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        }
    )
    return env


def subjects(template: Path = DEFAULT_TEMPLATE, using: Packages | None = None) -> list[Subject]:
    chosen = using or Packages((), {}, "the venv's packages")
    document = load_template(template)
    topology = read_topology(document, template.parent)
    resolver = _placeholder_resolver(document)
    found: list[Subject] = []
    for logical_id, function in sorted(topology.functions.items()):
        init = INITIALISERS.get(function.code_dir.name)
        if init is None:
            continue
        env = lambda_environment(function.environment, resolver, logical_id, function.memory_mb) | chosen.env
        script = HANDLER_SCRIPT.format(code_dir=str(function.code_dir), init=init)
        handler = function.handler.rpartition(".")[2]
        found.append(Subject(f"{function.code_dir.name}:{handler}", script, env, chosen.flags))
    baseline_env = lambda_environment({}, resolver, "baseline", 512) | chosen.env
    found.append(Subject("baseline", BASELINE_SCRIPT, baseline_env, chosen.flags))
    return found


def run_once(subject: Subject, python: str = sys.executable) -> Timing:
    done = subprocess.run(  # noqa: S603 - this interpreter, a script of this module
        [python, *subject.flags, "-c", subject.script],
        cwd=REPO_ROOT,
        env=subject.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith("COLD "):
            _, imported, initialised = line.split()
            return Timing(float(imported), float(initialised))
    raise RuntimeError(f"{subject.name} cold start failed ({done.returncode}): {done.stderr.strip()[-800:]}")


def measure(runs: int = RUNS) -> list[Figure]:
    using = packages()
    every = subjects(using=using)
    samples: dict[str, list[Timing]] = {s.name: [] for s in every}
    for _ in range(runs):
        for subject in every:
            samples[subject.name].append(run_once(subject))
    baseline = samples.pop("baseline")
    base_total = median([t.total for t in baseline])
    figures = []
    for name, timings in samples.items():
        figures.append(
            Figure(
                f"cold_start.{name}",
                median([t.total for t in timings]) * 1000,
                "ms",
                baseline=base_total * 1000,
                baseline_name='import boto3 + boto3.client("secretsmanager")',
                target=at_most(TARGET_RATIO),
                setup=f"fresh python3.12 -c processes, median of {runs}, round-robin; {using.description}; "
                "Lambda environment from template.yaml (tracing on), AWS_ENDPOINT_URL at an unused loopback port",
                notes=f"import {median([t.imported for t in timings]) * 1000:.0f} ms + first-request init "
                f"{median([t.initialised for t in timings]) * 1000:.0f} ms; baseline import "
                f"{median([t.imported for t in baseline]) * 1000:.0f} ms + client "
                f"{median([t.initialised for t in baseline]) * 1000:.0f} ms",
                details={
                    "import_ms": [t.imported * 1000 for t in timings],
                    "init_ms": [t.initialised * 1000 for t in timings],
                    "baseline_total_ms": [t.total * 1000 for t in baseline],
                },
            )
        )
    return figures


# --- layer size ------------------------------------------------------------------------------------


def directory_bytes(path: Path) -> int:
    """Apparent size of every regular file below ``path`` (what the zip holds before compression)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = Path(root, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return total


def largest_entries(path: Path, count: int = 8) -> dict[str, float]:
    """The biggest top-level packages of the layer's python/ directory, in MB."""
    base = path / "python" if (path / "python").is_dir() else path
    sizes = {
        entry.name: directory_bytes(entry) if entry.is_dir() else entry.stat().st_size
        for entry in base.iterdir()
        if not entry.name.endswith((".dist-info", ".egg-info"))
    }
    biggest = sorted(sizes.items(), key=lambda item: item[1], reverse=True)[:count]
    return {name: round(size / 1e6, 2) for name, size in biggest}


def build_layer() -> None:
    """``sam build`` as ``make build`` runs it (about 25 s)."""
    sam = shutil.which("sam", path=str(Path(sys.executable).parent)) or "sam"
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(  # noqa: S603 - the venv's sam, fixed arguments
        [sam, "build", "--template-file", str(DEFAULT_TEMPLATE)],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        timeout=600,
        capture_output=True,
    )


def layer_figure(*, build: bool) -> Figure:
    if build:
        build_layer()
    if not LAYER_DIR.is_dir() or not any(LAYER_DIR.iterdir()):
        return Figure(
            "layer.size_unzipped",
            None,
            "MB",
            setup="not built: run `make bench ARGS=--build` (or `make build` first)",
            notes="not built",
        )
    size = directory_bytes(LAYER_DIR) / 1e6
    return Figure(
        "layer.size_unzipped",
        size,
        "MB",
        baseline=LAMBDA_UNZIPPED_LIMIT_MB,
        baseline_name="Lambda limit, function + layers unzipped",
        setup=f"du of {LAYER_DIR.relative_to(REPO_ROOT)} (sam build, BuildMethod python3.12)",
        details={"largest_mb": largest_entries(LAYER_DIR)},
    )


# --- where the import time goes (--profile) -------------------------------------------------------


def import_times(subject: Subject, python: str = sys.executable) -> list[tuple[float, str]]:
    """``-X importtime`` of one cold start: (ms, top-level package), the self time of every
    module summed per package, so the lazy imports of the first request count too."""
    done = subprocess.run(  # noqa: S603 - this interpreter, a script of this module
        [python, *subject.flags, "-X", "importtime", "-c", subject.script],
        cwd=REPO_ROOT,
        env=subject.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return sorted(((ms, name) for name, ms in parse_importtime(done.stderr).items()), reverse=True)


def parse_importtime(stderr: str) -> dict[str, float]:
    """Self time (ms) per top-level package from ``-X importtime`` lines
    (``import time: <self us> | <cumulative us> | <indented module name>``)."""
    totals: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        root = parts[2].strip().split(".", 1)[0]
        totals[root] = totals.get(root, 0.0) + int(parts[0]) / 1000
    return totals


def import_profiles(top: int = 12) -> str:
    lines = []
    for subject in subjects(using=packages()):
        found = import_times(subject)
        total = sum(ms for ms, _ in found)
        lines.append(f"## {subject.name}: import self time per top-level package (ms, one run, -X importtime)")
        lines += [f"  {ms:8.1f}  {ms / total:5.1%}  {module}" for ms, module in found[:top]]
        lines.append(f"  {total:8.1f}  total")
        lines.append("")
    return "\n".join(lines)
