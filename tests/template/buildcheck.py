"""`make templates`: `sam build` (no Docker), then import and initialise every built function alone.

    python -m tests.template.buildcheck [--force]

1. ``sam build`` of template.yaml into .aws-sam/build, as `make build` and `sam deploy` use it.
2. The layer is built for arm64, so its compiled wheels (pydantic_core, PyYAML's _yaml,
   charset_normalizer, wrapt) cannot load on an x86_64 machine. Rather than skipping those, the
   same layer (the template's own SharedLayer definition, ContentUri and requirements) is built
   once more by `sam build` for the host architecture, and the check first proves that both
   builds hold exactly the same distributions (name and version) and the same tokenbroker files.
   Installing requirements.txt by hand would test pip, not what `sam build` puts in the layer.
3. For every function of the built template: a fresh ``python3.12 -I -S`` process
   (isolated_import.py) with only the function's build folder and the layer's python/ folder on
   sys.path imports the handler module, calls its lazy-initialisation hook (builds every client,
   store and provider from the template's environment), and invokes the handler with a harmless
   event of its trigger (HTTP: an unknown route -> 404; SQS: an empty batch). No network: sockets
   are refused and AWS_ENDPOINT_URL is a closed loopback port.

Builds are skipped when no input changed since the last successful check (stamp in .aws-sam).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.localstack.template import Resolver, function_properties, load_template, resources_of_type

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAM_DIR = ROOT / ".aws-sam"
BUILD_DIR = SAM_DIR / "build"
HOST_DIR = SAM_DIR / "host-layer"
STAMP = SAM_DIR / "buildcheck.stamp"
LAYER_ID = "SharedLayer"
BOOTSTRAP = Path(__file__).resolve().parent / "isolated_import.py"
# Inputs of `sam build`: a change to any of them invalidates the stamp.
INPUTS = ("template.yaml", "samconfig.toml", "shared", "functions")
IGNORED_PARTS = frozenset({"__pycache__", ".mypy_cache", ".pytest_cache"})
# Lambda's limit for a function and its layers, unzipped.
UNZIPPED_LIMIT_BYTES = 250 * 1024 * 1024
SUBPROCESS_TIMEOUT = 600.0
IMPORT_TIMEOUT = 120.0


class BuildCheckError(Exception):
    """The build or a built function is not deployable; the message says which and why."""


# --- inputs and stamp ----------------------------------------------------------------------------


def _input_files(root: Path) -> Iterator[Path]:
    for name in INPUTS:
        path = root / name
        if path.is_file():
            yield path
        elif path.is_dir():
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(root).parts
                if file.is_file() and not IGNORED_PARTS.intersection(relative) and not _ignored(file):
                    yield file


def _ignored(file: Path) -> bool:
    return file.suffix == ".pyc" or any(part.endswith(".egg-info") for part in file.parts)


def inputs_digest(root: Path = ROOT, sam_version: str = "") -> str:
    digest = hashlib.sha256(sam_version.encode())
    for file in _input_files(root):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Stamp:
    digest: str
    built_template_mtime_ns: int
    host_layer: str

    @classmethod
    def read(cls, path: Path = STAMP) -> Stamp | None:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["digest"]), int(data["built_template_mtime_ns"]), str(data["host_layer"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path = STAMP) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "digest": self.digest,
                    "built_template_mtime_ns": self.built_template_mtime_ns,
                    "host_layer": self.host_layer,
                }
            )
        )


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


# --- sam build -----------------------------------------------------------------------------------


def _tool_env() -> dict[str, str]:
    """sam needs python3.12 on PATH (the venv's) and a region; it never reaches AWS here."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env["SAM_CLI_TELEMETRY"] = "0"
    return env


def _sam() -> str:
    beside = Path(sys.executable).parent / "sam"
    found = str(beside) if beside.exists() else shutil.which("sam")
    if not found:
        raise BuildCheckError("sam (aws-sam-cli) is not installed in this environment")
    return found


def sam_version() -> str:
    answer = subprocess.run([_sam(), "--version"], capture_output=True, text=True, env=_tool_env(), check=False)
    return answer.stdout.strip()


def _run(command: list[str], *, cwd: Path, what: str) -> float:
    started = time.perf_counter()
    answer = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, env=_tool_env(), timeout=SUBPROCESS_TIMEOUT, check=False
    )
    if answer.returncode != 0:
        tail = "\n".join((answer.stdout + answer.stderr).strip().splitlines()[-25:])
        raise BuildCheckError(f"{what} failed (exit {answer.returncode}):\n{tail}")
    return time.perf_counter() - started


def build_stack(build_dir: Path = BUILD_DIR) -> float:
    return _run(
        [_sam(), "build", "--template-file", str(TEMPLATE), "--build-dir", str(build_dir), "--cached", "--parallel"],
        cwd=ROOT,
        what="sam build",
    )


def host_architecture() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in ("arm64", "aarch64") else "x86_64"


def host_layer_template(template: Mapping[str, Any], architecture: str, root: Path = ROOT) -> dict[str, Any]:
    """The template's own layer resource, alone, with an absolute ContentUri, for ``architecture``."""
    layer = json.loads(json.dumps(template["Resources"][LAYER_ID]))
    properties = layer.setdefault("Properties", {})
    properties["ContentUri"] = str((root / str(properties["ContentUri"])).resolve())
    properties["CompatibleArchitectures"] = [architecture]
    properties.pop("LayerName", None)  # a !Sub of parameters this one-resource template lacks
    layer.setdefault("Metadata", {})["BuildArchitecture"] = architecture
    return {"Transform": "AWS::Serverless-2016-10-31", "Resources": {LAYER_ID: layer}}


def build_host_layer(template: Mapping[str, Any], work_dir: Path = HOST_DIR) -> tuple[Path, float]:
    """The layer built for this machine's architecture; returns (its python/ folder, seconds)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "template.yaml").write_text(yaml.safe_dump(host_layer_template(template, host_architecture())))
    seconds = _run(
        [_sam(), "build", LAYER_ID, "--template-file", "template.yaml", "--build-dir", "build",
         "--cache-dir", "cache", "--cached"],
        cwd=work_dir,
        what=f"sam build of the layer for {host_architecture()}",
    )  # fmt: skip
    return work_dir / "build" / LAYER_ID / "python", seconds


# --- what was built ------------------------------------------------------------------------------


def distributions(layer_python: Path) -> set[str]:
    """``name-version`` of every distribution installed in a built layer."""
    return {path.name.removesuffix(".dist-info") for path in layer_python.glob("*.dist-info")}


def package_files(layer_python: Path, package: str = "tokenbroker") -> set[str]:
    root = layer_python / package
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def same_layer_contents(deployed: Path, host: Path) -> None:
    """The host build is a faithful stand-in for the deployed one, or the check means nothing."""
    problems = []
    only_deployed, only_host = (
        distributions(deployed) - distributions(host),
        distributions(host) - distributions(deployed),
    )
    if only_deployed or only_host:
        problems.append(f"distributions differ: arm64 only {sorted(only_deployed)}, host only {sorted(only_host)}")
    if package_files(deployed) != package_files(host):
        problems.append(f"tokenbroker files differ: {sorted(package_files(deployed) ^ package_files(host))}")
    if not distributions(deployed):
        problems.append(f"no distributions in {deployed}")
    if problems:
        raise BuildCheckError("the host-architecture layer is not the deployed layer: " + "; ".join(problems))


def directory_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


@dataclass(frozen=True, slots=True)
class BuiltFunction:
    logical_id: str
    code_dir: Path
    handler: str
    environment: dict[str, str]
    trigger: str | None  # "http", "sqs", "schedule" or None: decides the harmless test event


_QUEUE_TYPE = "AWS::SQS::Queue"
_TRIGGERS = {"HttpApi": "http", "Api": "http", "SQS": "sqs", "ScheduleV2": "schedule", "Schedule": "schedule"}


def _placeholder_resolver(template: Mapping[str, Any]) -> Resolver:
    """Parameters keep their defaults (AppName has none); every resource resolves to a recognisable fake name."""
    resolver = Resolver(template, parameters={"AppName": "Build Check"}, stack_name="buildcheck")
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") == _QUEUE_TYPE:
            resolver.refs[logical_id] = f"http://127.0.0.1:9/123456789012/buildcheck-{logical_id}"
        else:
            resolver.refs[logical_id] = f"buildcheck-{logical_id}"
        resolver.attributes[(logical_id, "Arn")] = f"arn:aws:buildcheck:us-east-1:123456789012:{logical_id}"
    return resolver


def built_functions(build_dir: Path = BUILD_DIR) -> list[BuiltFunction]:
    template = load_template(build_dir / "template.yaml")
    resolver = _placeholder_resolver(template)
    found = []
    for logical_id in resources_of_type(template, "AWS::Serverless::Function"):
        properties = function_properties(template, logical_id)
        variables = resolver.resolve((properties.get("Environment") or {}).get("Variables") or {})
        triggers = {_TRIGGERS.get(str(event.get("Type"))) for event in (properties.get("Events") or {}).values()}
        found.append(
            BuiltFunction(
                logical_id=logical_id,
                code_dir=build_dir / str(properties["CodeUri"]),
                handler=str(properties["Handler"]),
                environment={str(k): "" if v is None else str(v) for k, v in variables.items()},
                trigger=next((t for t in ("http", "sqs", "schedule") if t in triggers), None),
            )
        )
    if not found:
        raise BuildCheckError(f"{build_dir / 'template.yaml'} has no functions")
    return found


# --- the isolated import -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportReport:
    logical_id: str
    ok: bool
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    output: str = ""

    def describe(self) -> str:
        if self.ok:
            invoked = self.details.get("invoked") or "not invoked (scheduled: it would query the table)"
            return f"{self.logical_id}: ok in {self.seconds:.1f} s, initialised, {invoked}"
        lines = [f"{self.logical_id}: FAILED at {self.details.get('stage', '?')}: {self.details.get('error', '')}"]
        for key in ("foreign_modules", "network_attempts"):
            if self.details.get(key):
                lines.append(f"  {key}: {self.details[key]}")
        if self.details.get("traceback"):
            lines.append("  " + self.details["traceback"].rstrip().replace("\n", "\n  "))
        if not self.details:
            lines.append("  " + self.output[-3000:].replace("\n", "\n  "))
        return "\n".join(lines)


def lambda_environment(function: BuiltFunction, scratch: Path) -> dict[str, str]:
    """What Lambda would set, plus the template's variables; nothing from this machine's shell."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # fake, as every value here
        "AWS_SESSION_TOKEN": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        # A closed port: any AWS call during initialisation fails fast instead of reaching AWS.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_LAMBDA_FUNCTION_NAME": function.logical_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "LAMBDA_TASK_ROOT": str(function.code_dir),
        # Tracing is on (Tracing: Active), so the X-Ray SDK is imported and patches boto3; the
        # trace is not sampled, so nothing is sent.
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
        **function.environment,
    }


def check_function(function: BuiltFunction, layer_python: Path, scratch: Path) -> ImportReport:
    spec = {
        "function_dir": str(function.code_dir),
        "layer_dir": str(layer_python),
        "handler": function.handler,
        "trigger": function.trigger,
    }
    started = time.perf_counter()
    scratch.mkdir(parents=True, exist_ok=True)
    answer = subprocess.run(
        [sys.executable, "-I", "-S", str(BOOTSTRAP), json.dumps(spec)],
        cwd=scratch,
        env=lambda_environment(function, scratch),
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT,
        check=False,
    )
    seconds = time.perf_counter() - started
    output = answer.stdout + answer.stderr
    result_lines = [line for line in answer.stdout.splitlines() if line.startswith("RESULT ")]
    if not result_lines:
        return ImportReport(function.logical_id, False, seconds, output=output)
    details: dict[str, Any] = json.loads(result_lines[-1].removeprefix("RESULT "))
    return ImportReport(
        function.logical_id, bool(details.get("ok")) and answer.returncode == 0, seconds, details, output
    )


def check_functions(functions: Iterable[BuiltFunction], layer_python: Path, scratch_root: Path) -> list[ImportReport]:
    items = list(functions)
    with ThreadPoolExecutor(max_workers=2) as pool:  # two cores: two interpreters at a time
        return list(pool.map(lambda f: check_function(f, layer_python, scratch_root / f.logical_id), items))


# --- main ----------------------------------------------------------------------------------------


def run(force: bool = False) -> list[str]:
    """The whole check; returns the report lines or raises ``BuildCheckError``."""
    lines = []
    template = load_template(TEMPLATE)
    digest = inputs_digest(ROOT, sam_version())
    stamp = Stamp.read()
    built_template = BUILD_DIR / "template.yaml"
    host_python = HOST_DIR / "build" / LAYER_ID / "python"
    reuse = (
        not force
        and stamp is not None
        and stamp.digest == digest
        and stamp.built_template_mtime_ns == _mtime_ns(built_template)
        and stamp.host_layer == host_architecture()
        and host_python.is_dir()
    )
    if reuse:
        lines.append("sam build: inputs unchanged since the last check, reusing .aws-sam/build")
    else:
        STAMP.unlink(missing_ok=True)
        # The two builds are independent (own build and cache folders): mostly pip downloads, so
        # running them side by side saves most of the second one's time.
        with ThreadPoolExecutor(max_workers=2) as pool:
            stack = pool.submit(build_stack)
            host = None if host_architecture() == "arm64" else pool.submit(build_host_layer, template)
            lines.append(f"sam build: {stack.result():.1f} s (arm64, no Docker)")
            if host is None:
                host_python = BUILD_DIR / LAYER_ID / "python"
            else:
                host_python, seconds = host.result()
                lines.append(f"layer built for {host_architecture()} alongside (import check only): {seconds:.1f} s")
    deployed_python = BUILD_DIR / LAYER_ID / "python"
    same_layer_contents(deployed_python, host_python)
    size = directory_bytes(BUILD_DIR / LAYER_ID)
    lines.append(
        f"layer: {size / 1e6:.1f} MB unzipped, {len(distributions(deployed_python))} distributions "
        f"(limit with the function: {UNZIPPED_LIMIT_BYTES / 1e6:.0f} MB)"
    )
    functions = built_functions()
    started = time.perf_counter()
    reports = check_functions(functions, host_python, SAM_DIR / "importcheck")
    lines.append(f"import check: {len(reports)} functions in {time.perf_counter() - started:.1f} s")
    lines.extend("  " + report.describe().replace("\n", "\n  ") for report in reports)
    failures = [report for report in reports if not report.ok]
    too_big = [f.logical_id for f in functions if size + directory_bytes(f.code_dir) > UNZIPPED_LIMIT_BYTES]
    if failures or too_big:
        if too_big:
            lines.append(f"over Lambda's unzipped size limit: {too_big}")
        raise BuildCheckError("\n".join(lines))
    Stamp(digest, _mtime_ns(built_template), host_architecture()).write()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true", help="build even when no input changed")
    options = parser.parse_args(argv)
    try:
        for line in run(force=options.force):
            print(line)
    except BuildCheckError as error:
        print(f"build check FAILED\n{error}", file=sys.stderr)
        return 1
    print("build check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
