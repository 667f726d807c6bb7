"""Render docs/reliability.md from the newest run of tests/reliability.

    .venv/bin/pytest tests/reliability        # writes .bench/reliability/run-<id>/<worker>.json
    .venv/bin/python -m tests.reliability.harness.render [--run ID] [--output docs/reliability.md]

Without ``--run`` it takes the newest run that covered every area, so running one test file
afterwards does not shrink the table.

The page is generated whole: edit the words here, not in the page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

from tests.reliability.harness.results import AREA_ORDER, NOTHING, REPO, RESULTS_DIR, Row, latest_run

DEFAULT_OUTPUT = REPO / "docs" / "reliability.md"

SECTIONS = {
    "provider": (
        "Provider faults (sandboxes)",
        "Each fault is armed on a provider sandbox; the real sweep and worker handlers "
        "(functions/refresh/app.py) run on a simulated clock until the connection settles. "
        "'provider_calls' counts requests to the refresh endpoint: bounded means no busy loop.",
    ),
    "transport": (
        "Network faults (fault proxy in front of django-oauth-toolkit)",
        "A TCP proxy on 127.0.0.1 (harness/faultproxy.py) in front of a real django-oauth-toolkit server "
        "whose grants either rotate the refresh token or keep it (the answer reuses it).",
    ),
    "aws": (
        "AWS faults (botocore, moto)",
        "Throttling and 5xx answered inside botocore with AWS's own error bodies (harness/awsfaults.py), "
        "one attempt per call (what survives the SDK's retries); conditional-check failures are real: "
        "another owner takes the lease right before the conditional write.",
    ),
    "crash": (
        "Crashes (worker subprocess killed with SIGKILL)",
        "The real worker handler in a subprocess kills itself at one step (harness/crashworker.py wraps "
        "the stores and the provider; the library has no test hooks). The moto server and the sandbox "
        "live in the test process, so state survives; recovery is the real schedule after the lease.",
    ),
    "race": ("Races (real threads, moto server, system clock)", ""),
    "security": ("Security (local stack over HTTP)", "python -m infra.localstack in a subprocess."),
    "fuzz": (
        "Fuzzing (schemathesis)",
        "docs/openapi.json for the IAM routes (SigV4-signed requests), harness/public_openapi.json for "
        "the public routes; positive and negative data.",
    ),
}


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _measures(row: Row) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(row.measures.items()))


def _result(row: Row) -> str:
    return {"passed": "pass", "failed": "**FAIL**"}.get(row.result, row.result)


def render(run_id: str, rows: Sequence[Row], *, generated_at: dt.datetime | None = None) -> str:
    when = (generated_at or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    failed = [r for r in rows if r.result != "passed"]
    lost = [r for r in rows if r.lost != NOTHING]
    out = [
        "# Reliability and security",
        "",
        "What tokenbroker does under provider, network and AWS faults, crashes, races and hostile input,",
        "and what was lost each time (the goal is *nothing*). Generated from the last run of",
        "`tests/reliability` by `python -m tests.reliability.harness.render`; do not edit by hand.",
        "",
        f"Run `{run_id[:12]}`, rendered {when}: {len(rows)} faults, {len(rows) - len(failed)} as expected, "
        f"{len(failed)} failing, {len(lost)} with something lost.",
        "",
        "Reproduce: `.venv/bin/pytest tests/reliability -n 2` (one to two minutes on two cores), then the renderer.",
        "",
        "Found by this suite and fixed in the library while it was written: a vend during an outage called "
        "the provider every time (no backoff on the vend path); Retry-After was cut short by the sweep's "
        "five-minute horizon; a reconciled token and a needs_reauth finished by a later run were never "
        "announced (no event, no metric); a worker that outlived its lease left the item needs_reauth while "
        "the secret held a valid token; a deeply nested JSON body was a 500 on the IAM routes.",
        "",
    ]
    by_area: dict[str, list[Row]] = {}
    for row in rows:
        by_area.setdefault(row.area, []).append(row)
    for area in sorted(by_area, key=lambda a: AREA_ORDER.get(a, 99)):
        title, intro = SECTIONS.get(area, (area.title(), ""))
        out += [f"## {title}", ""]
        if intro:
            out += [intro, ""]
        out += ["| fault | against | what tokenbroker did | lost | numbers | result |", "|---|---|---|---|---|---|"]
        out += [
            f"| {_cell(r.fault)} | {_cell(r.target)} | {_cell(r.did)} | {_cell(r.lost)} | {_cell(_measures(r))} "
            f"| {_result(r)} |"
            for r in by_area[area]
        ]
        out.append("")
    out += ["## What was lost", ""]
    if not lost:
        out += ["Nothing.", ""]
    for row in lost:
        out.append(f"- **{_cell(row.fault)}** ({row.area}): {_cell(row.lost)}.")
    out.append("")
    if failed:
        out += ["## Failing tests", ""]
        out += [f"- `{row.test}`: {_cell(row.fault)}" for row in failed]
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--run", help="a run id (default: the newest whole-suite run)")
    parser.add_argument("--json", type=Path, help="also write the rows as one JSON file")
    args = parser.parse_args(argv)
    run_id, rows = latest_run(args.results, args.run)
    args.output.write_text(render(run_id, rows), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1), encoding="utf-8")
    print(f"wrote {args.output} from run {run_id[:12]} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
