"""`make bench` / `python -m infra.bench`: measure the quality bars, print a table, write JSON.

Exit status 0 when every section ran (a missed target is a finding, not a failure), 1 when a
section could not be measured (its error is in the results).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from infra.bench import coldstart, cost, environment, figures, profiling
from infra.bench.figures import Figure
from infra.bench.moto_process import REPO_ROOT
from infra.bench.rig import isolate_aws_environment, progress

DEFAULT_OUT = REPO_ROOT / ".bench" / "results.json"
SECTIONS = ("coldstart", "calls", "emulator", "concurrency", "latency", "sweep", "layer", "cost")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m infra.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000-connection sweep, fewer samples (iteration)")
    parser.add_argument("--connections", type=int, help="sweep size (default 10,000; 1,000 with --quick)")
    parser.add_argument("--concurrency", type=int, default=10, help="sweep worker threads (default 10)")
    parser.add_argument("--samples", type=int, help="vend latency samples per series (default 300; 150 quick)")
    parser.add_argument("--cold-runs", type=int, help="fresh processes per cold-start figure (default 7; 5 quick)")
    parser.add_argument("--build", action="store_true", help="run `sam build` first (about 25 s) to size the layer")
    parser.add_argument("--only", help=f"comma-separated sections to run, of: {', '.join(SECTIONS)}")
    parser.add_argument("--profile", action="store_true", help="py-spy the sweep, -X importtime the cold starts")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results file (default .bench/results.json)")
    args = parser.parse_args(argv)
    if args.connections is None:
        args.connections = 1_000 if args.quick else 10_000
    if args.samples is None:
        args.samples = 150 if args.quick else 300
    if args.cold_runs is None:
        args.cold_runs = 5 if args.quick else coldstart.RUNS
    wanted = [s.strip() for s in (args.only or ",".join(SECTIONS)).split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    args.sections = wanted
    return args


class Run:
    """Collects figures and, per section, its duration and how busy the whole machine was."""

    def __init__(self) -> None:
        self.figures: list[Figure] = []
        self.sections: dict[str, dict[str, Any]] = {}
        self.failed: list[str] = []

    def section(self, name: str, measure: Callable[[], list[Figure]]) -> None:
        progress(f"{name} ...")
        before = environment.CpuSnapshot.take()
        started = time.perf_counter()
        try:
            found = measure()
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            self.failed.append(name)
            found = [Figure(f"{name}.error", None, "", notes=f"{type(error).__name__}: {error}"[:500])]
        seconds = time.perf_counter() - started
        busy = environment.machine_share(before, environment.CpuSnapshot.take())
        self.sections[name] = {
            "seconds": round(seconds, 1),
            "machine_cpu_busy_share": None if busy is None else round(busy, 2),
            "load_average_after": environment.load_average(),
        }
        progress(f"{name}: {seconds:.1f} s" + ("" if busy is None else f", machine CPU {busy:.0%} busy"))
        self.figures.extend(found)


@contextlib.contextmanager
def _sweep_profile(out_dir: Path, bench_pid: int, moto_pid: int | None) -> Iterator[None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    samplers = [profiling.Sampler(bench_pid, out_dir / "profile-sweep-bench.raw")]
    if moto_pid is not None:
        samplers.append(profiling.Sampler(moto_pid, out_dir / "profile-sweep-moto.raw"))
    for sampler in samplers:
        sampler.start()
    try:
        yield
    finally:
        for sampler in samplers:
            sampler.stop()
        report = ""
        for sampler in samplers:
            if sampler.out.exists():
                focus = ("tokenbroker", "botocore/client", "app.py", "powertools", "requests/sessions", "moto")
                summary = profiling.summarise(sampler.out, only=focus)
                report += profiling.render(sampler.out.name, summary) + "\n"
        (out_dir / "profile-sweep.txt").write_text(report, encoding="utf-8")
        progress(f"profiles: {out_dir / 'profile-sweep.txt'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    isolate_aws_environment()
    run = Run()
    env = environment.describe()
    env["options"] = {
        "connections": args.connections,
        "concurrency": args.concurrency,
        "samples": args.samples,
        "cold_runs": args.cold_runs,
        "sections": args.sections,
    }
    wanted = set(args.sections)
    if "coldstart" in wanted:
        run.section("coldstart", lambda: _cold_start(args))
    measured = Measured()
    if wanted & {"calls", "emulator", "concurrency", "latency", "sweep", "cost"}:
        _with_rig(run, args, measured)
    if "layer" in wanted:
        run.section("layer", lambda: [coldstart.layer_figure(build=args.build)])
    if "cost" in wanted:
        run.section("cost", lambda: [cost_figure(measured.calls, measured.sweep)])

    env["sections"] = run.sections
    env["load_average_at_end"] = environment.load_average()
    figures.write_results(args.out, run.figures, env)
    print(figures.render_table(run.figures))
    print(f"\nresults: {args.out}")
    if run.failed:
        print(f"could not measure: {', '.join(run.failed)} (see stderr)", file=sys.stderr)
        return 1
    return 0


class Measured:
    """Results that later sections (the cost model) build on."""

    calls: Any = None
    sweep: Any = None


def _cold_start(args: argparse.Namespace) -> list[Figure]:
    found = coldstart.measure(args.cold_runs)
    if args.profile:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        (args.out.parent / "profile-coldstart.txt").write_text(coldstart.import_profiles(), encoding="utf-8")
    return found


def _with_rig(run: Run, args: argparse.Namespace, measured: Measured) -> None:
    """The sections that need moto, the sandbox and the template's resources, on one rig."""
    # Imported after the environment is set: tokenbroker.observability reads it at import.
    from infra.bench import calls, concurrency, emulator, latency, sweep  # noqa: PLC0415
    from infra.bench.rig import build_rig  # noqa: PLC0415

    wanted = set(args.sections)
    out_dir = args.out.parent
    profile_dir = out_dir if args.profile else None
    progress("starting moto (child process), resources from template.yaml, the Worksection sandbox ...")
    with build_rig() as rig:
        if "calls" in wanted or "cost" in wanted:

            def count() -> list[Figure]:
                result = calls.measure(rig)
                measured.calls = result
                return result.figures() if "calls" in wanted else []

            run.section("calls", count)
        if "emulator" in wanted:
            run.section("emulator", lambda: emulator.measure(rig).figures())
        if "concurrency" in wanted:
            run.section("concurrency", lambda: concurrency.measure(rig).figures())
        if "latency" in wanted:
            run.section(
                "latency", lambda: latency.measure(rig, rig.workdir, samples=args.samples, profile_dir=profile_dir)
            )
        if "sweep" in wanted:

            def sweep_figures() -> list[Figure]:
                around = (
                    (lambda: _sweep_profile(out_dir, os.getpid(), rig.moto.pid))
                    if args.profile
                    else contextlib.nullcontext
                )
                result = sweep.measure(
                    rig, connections=args.connections, concurrency=args.concurrency, around_run=around
                )
                measured.sweep = result
                return result.figures()

            run.section("sweep", sweep_figures)


def cost_figure(calls_result: Any, sweep_result: Any) -> Figure:
    if calls_result is None:
        raise RuntimeError("the cost model needs the calls section")
    measured = cost.MeasuredCalls(
        vend=calls_result.vend.per_api,
        scheduled_refresh=calls_result.scheduled.per_api,
        on_demand_refresh=calls_result.on_demand.per_api,
        sweep_run={k: v for k, v in calls_result.sweep_calls.items() if k == "dynamodb.Query"},
        sweep_per_connection=_sqs_per_connection(calls_result, sweep_result),
    )
    workload = cost.Workload()
    estimate = cost.estimate(measured, workload)
    storage = estimate.lines["secrets_manager.secrets"]
    return Figure(
        "cost.per_1000_connections_month",
        estimate.per_thousand_connections,
        "USD/month",
        setup="AWS list prices us-east-1 (assumed, see infra/bench/cost.py); workload assumptions in details",
        notes=f"secret storage ${storage:.2f} of it (one secret per connection at $0.40); "
        f"everything else ${estimate.total - storage:.2f}",
        details={
            "lines_usd": {k: round(v, 4) for k, v in estimate.lines.items()},
            "workload": {k: getattr(workload, k) for k in workload.__dataclass_fields__},
            "measured_calls": {
                "vend": dict(measured.vend),
                "scheduled_refresh": dict(measured.scheduled_refresh),
                "on_demand_refresh": dict(measured.on_demand_refresh),
                "sweep_run": dict(measured.sweep_run),
                "sweep_per_connection": dict(measured.sweep_per_connection),
            },
        },
    )


def _sqs_per_connection(calls_result: Any, sweep_result: Any) -> dict[str, float]:
    if sweep_result is not None and sweep_result.enqueued:
        sends = sweep_result.poller_calls.get("sqs.SendMessageBatch", 0)
        return {"sqs.SendMessageBatch": sends / sweep_result.enqueued}
    sends = calls_result.sweep_calls.get("sqs.SendMessageBatch", 0)
    return {"sqs.SendMessageBatch": sends / max(1, calls_result.swept)}


if __name__ == "__main__":
    sys.exit(main())
