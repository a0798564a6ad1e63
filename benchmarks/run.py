"""Run every benchmark and write the report: ``python -m benchmarks.run [--quick] [--out PATH]``.

The full run writes ``benchmarks/results/latest.md`` (a few minutes on 2 cores). ``--quick`` runs
small sizes in seconds, as a smoke test, and writes ``benchmarks/results/tmp/quick.md``
(ignored by git) so that it never replaces the full results.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

from . import bench_pass, bench_steps
from .common import machine_description

RESULTS = Path(__file__).resolve().parent / "results"
FULL_REPORT = RESULTS / "latest.md"
QUICK_REPORT = RESULTS / "tmp" / "quick.md"


def run_all(*, quick: bool) -> str:
    """Run both benchmarks, each on a fresh local cluster; return the Markdown report."""
    pass_config = bench_pass.QUICK if quick else bench_pass.FULL
    steps_config = bench_steps.QUICK if quick else bench_steps.FULL
    load_before = _load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dsoftmax-bench-") as workdir:
        sections = [
            bench_pass.run(pass_config, Path(workdir)),
            bench_steps.run(steps_config, Path(workdir)),
        ]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m benchmarks.run" + (" --quick" if quick else "")
    load_after = _load_average()
    header = (
        f"Run {stamp}, {'quick (smoke-test sizes)' if quick else 'full'}: `{command}`, "
        f"{time.perf_counter() - started:.0f} s in all. Load average (1 min) before the run "
        f"{load_before:.2f}, after it {load_after:.2f}, on {os.cpu_count()} cores"
        f"{' (other work shared the machine)' if max(load_before, load_after) > 2.5 else ''}; "
        "compare ratios within one run rather than seconds across runs."
    )
    parts = ["# dsoftmax benchmark results", header, machine_description(), *sections]
    return "\n\n".join(parts) + "\n"


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the dsoftmax benchmarks.")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--out",
        type=Path,
        help=f"report path (default {FULL_REPORT.relative_to(RESULTS.parent.parent)}, "
        f"or {QUICK_REPORT.relative_to(RESULTS.parent.parent)} with --quick)",
    )
    args = parser.parse_args(argv)
    report = run_all(quick=args.quick)
    out = args.out or (QUICK_REPORT if args.quick else FULL_REPORT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    print(report)
    print(f"written to {out}")


if __name__ == "__main__":  # worker processes are spawned and import __main__
    main()
