"""Run the benchmarks and write the report: ``python -m benchmarks.run [--quick] [--only NAMES]``.

One benchmark per target, in this order: ``pass`` (1), ``optimum`` (2), ``steps`` (3),
``epoch`` (4), ``out_of_core`` (5), ``wide`` (6), ``scaling`` (7), ``half`` (8, half-precision
storage), ``grid`` (9, a regularization grid), ``sparse`` (10, sparse features) and
``end_to_end`` (11, Parquet to test accuracy with the ``dsoftmax`` command against a
scikit-learn script). Each starts its own cluster or processes; datasets go to one temporary
directory, shared, and removed at the end.

Where the report goes (``--out PATH`` overrides; the plot goes beside it, as ``.png``):

* full run of every benchmark: ``benchmarks/results/latest.md`` and ``latest.png``;
* ``--quick`` (small sizes, a smoke test): ``benchmarks/results/tmp/quick.md``;
* ``--only``: ``benchmarks/results/tmp/only-NAMES[-quick].md``, so that a partial run never
  replaces the full results.

Exit status: 0 when every target passed, or in a ``--quick`` run (its verdicts are informational:
the sizes are too small to judge); 1 when a full run missed a target; 2 when a benchmark raised
(quick or full); the report is written in every case.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from . import (
    bench_end_to_end,
    bench_epoch,
    bench_grid,
    bench_half,
    bench_optimum,
    bench_out_of_core,
    bench_pass,
    bench_scaling,
    bench_sparse,
    bench_steps,
    bench_wide,
)
from .common import Section, machine_description, usable_cpus
from .report import error_section, exit_status, plot_report, summary_table

__all__ = ["BENCHMARKS", "main", "render", "report_paths", "run_all", "select_benchmarks"]

RESULTS = Path(__file__).resolve().parent / "results"
FULL_REPORT = RESULTS / "latest.md"
SCRATCH = RESULTS / "tmp"

#: Every benchmark, by the name ``--only`` takes, in the order of the issue's targets.
BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        bench_pass,
        bench_optimum,
        bench_steps,
        bench_epoch,
        bench_out_of_core,
        bench_wide,
        bench_scaling,
        bench_half,
        bench_grid,
        bench_sparse,
        bench_end_to_end,
    )
}


def select_benchmarks(only: str | None) -> list[str]:
    """Names of the benchmarks to run: all of them, or those of a comma-separated list.

    Examples
    --------
    >>> select_benchmarks("steps, pass")
    ['pass', 'steps']
    """
    if only is None:
        return list(BENCHMARKS)
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown or not wanted:
        raise ValueError(
            f"--only takes benchmark names separated by commas, got {only!r} "
            f"(unknown: {', '.join(unknown) or 'none given'}); choose from {', '.join(BENCHMARKS)}."
        )
    return [name for name in BENCHMARKS if name in wanted]


def report_paths(out: Path | None, names: list[str], quick: bool) -> tuple[Path, Path]:
    """The Markdown report's path and the plot's path."""
    if out is None:
        if len(names) < len(BENCHMARKS):
            out = SCRATCH / f"only-{'-'.join(names)}{'-quick' if quick else ''}.md"
        else:
            out = SCRATCH / "quick.md" if quick else FULL_REPORT
    return out, out.with_suffix(".png")


def run_all(names: list[str], *, quick: bool) -> tuple[list[Section], list[str], list[float]]:
    """Run the named benchmarks; a benchmark that raises becomes an error section.

    Returns
    -------
    sections : list of Section
    errors : list of str
        Names of the benchmarks that raised.
    seconds : list of float
        Wall-clock time of each benchmark.
    """
    sections, errors, seconds = [], [], []
    with tempfile.TemporaryDirectory(prefix="dsoftmax-bench-") as workdir:
        for name in names:
            module = BENCHMARKS[name]
            print(f"benchmarks: running {name}", file=sys.stderr, flush=True)
            started = time.perf_counter()
            try:
                section = module.run(module.QUICK if quick else module.FULL, Path(workdir))
            except Exception as error:  # reported, and the run goes on to the next benchmark
                section = error_section(name, error)
                errors.append(name)
            seconds.append(time.perf_counter() - started)
            print(f"benchmarks: {name} took {seconds[-1]:.0f} s", file=sys.stderr, flush=True)
            sections.append(section)
    return sections, errors, seconds


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return float("nan")


def render(
    sections: list[Section],
    errors: list[str],
    seconds: list[float],
    *,
    quick: bool,
    command: str,
    loads: tuple[float, float],
    plot_name: str,
) -> str:
    """The Markdown report."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    busy = max(loads) > (os.cpu_count() or 1)
    header = (
        f"Run {stamp}, {'quick (smoke-test sizes)' if quick else 'full'}: `{command}`, "
        f"{sum(seconds):.0f} s in all. Load average (1 min) before the run {loads[0]:.2f}, "
        f"after it {loads[1]:.2f}, on {os.cpu_count()} cores"
        f"{' (other work shared the machine)' if busy else ''}; compare ratios within one run "
        "rather than seconds across runs."
    )
    if quick:
        header += (
            " Quick sizes are too small to judge the targets: the verdicts are informational "
            "and do not change the exit status."
        )
    timing = ", ".join(
        f"{section.name} {took:.0f} s" for section, took in zip(sections, seconds, strict=True)
    )
    parts = [
        "# dsoftmax benchmark results",
        header,
        machine_description(),
        "## Summary",
        summary_table(sections, errors, informational=quick),
        f"Time per benchmark: {timing}. Plot: `{plot_name}`.",
        f"![value ÷ threshold per target, and scaling]({plot_name})",
        "## Benchmarks",
        *(section.markdown(informational=quick) for section in sections),
    ]
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run, write the report and the plot; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description="Run the dsoftmax benchmarks."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated benchmarks to run, among: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--out", type=Path, help="report path (the plot goes beside it)")
    args = parser.parse_args(argv)
    try:
        names = select_benchmarks(args.only)
    except ValueError as error:
        parser.error(str(error))
    report_path, plot_path = report_paths(args.out, names, args.quick)
    command = "python -m benchmarks.run" + " ".join(
        [""] + (["--quick"] if args.quick else []) + ([f"--only {args.only}"] if args.only else [])
    )
    load_before = _load_average()
    sections, errors, seconds = run_all(names, quick=args.quick)
    report = render(
        sections, errors, seconds, quick=args.quick, command=command,
        loads=(load_before, _load_average()), plot_name=plot_path.name,
    )  # fmt: skip
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(report, encoding="utf-8")
    title = f"dsoftmax benchmarks ({'quick' if args.quick else 'full'}), {command}"
    plot_report(sections, plot_path, title, cores=usable_cpus())
    print(report)
    print(f"written to {report_path} and {plot_path}")
    verdicts = [verdict for section in sections for verdict in section.verdicts]
    return exit_status(verdicts, len(errors), quick=args.quick)


if __name__ == "__main__":  # worker processes are spawned and import __main__
    sys.exit(main())
