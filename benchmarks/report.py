"""The summary table, the plot and the exit status of a benchmark run.

Pure functions of the :class:`~benchmarks.common.Section` objects the benchmarks return, kept
apart from running them so that they can be tested without a cluster.
"""

from __future__ import annotations

import math
import textwrap
import traceback
from collections.abc import Sequence
from pathlib import Path

from .common import Section, Verdict, markdown_table

__all__ = [
    "EXIT_ERROR",
    "EXIT_MISSED",
    "EXIT_OK",
    "error_section",
    "exit_status",
    "plot_report",
    "share_of_threshold",
    "summary_table",
]

EXIT_OK = 0
#: A full run in which some target was missed.
EXIT_MISSED = 1
#: A benchmark raised (in any run, quick or full).
EXIT_ERROR = 2
#: Bars of the plot stop at this multiple of the threshold.
PLOT_CAP = 3.0


def error_section(name: str, error: BaseException) -> Section:
    """The section of a benchmark that raised: its traceback's last lines, no verdicts."""
    lines = traceback.format_exception(error)
    tail = "".join(lines)[-3000:]
    return Section(
        name=name,
        title=f"{name}: ERROR",
        body=f"The benchmark raised {type(error).__name__}: {error}\n\n```\n{tail}\n```",
    )


def summary_table(sections: Sequence[Section], errors: Sequence[str], informational: bool) -> str:
    """Markdown table: one row per verdict (target, measure, value, threshold, verdict), and one
    ERROR row per benchmark that raised."""
    rows = [
        [verdict.target, verdict.measure, verdict.formatted(verdict.value),
         f"≤ {verdict.formatted(verdict.threshold)}", verdict.status(informational)]
        for section in sections
        for verdict in section.verdicts
    ]  # fmt: skip
    rows += [[name, "the benchmark raised (see its section)", "", "", "ERROR"] for name in errors]
    return markdown_table(["target", "measure", "value", "threshold", "verdict"], rows)


def exit_status(verdicts: Sequence[Verdict], n_errors: int, quick: bool) -> int:
    """:data:`EXIT_ERROR` when a benchmark raised; else :data:`EXIT_MISSED` when a full run
    missed a target; else :data:`EXIT_OK` (a quick run's verdicts are informational).

    Examples
    --------
    >>> missed = [Verdict("1", "ratio", 0.9, 0.6)]
    >>> exit_status(missed, 0, quick=False), exit_status(missed, 0, quick=True)
    (1, 0)
    """
    if n_errors:
        return EXIT_ERROR
    if not quick and not all(verdict.passed for verdict in verdicts):
        return EXIT_MISSED
    return EXIT_OK


def share_of_threshold(verdict: Verdict) -> float:
    """``value / threshold``, capped at :data:`PLOT_CAP`; a zero threshold (a count that must be
    zero) gives 0 when met and the cap when not.

    Examples
    --------
    >>> share_of_threshold(Verdict("t", "m", 0.3, 0.6))
    0.5
    >>> share_of_threshold(Verdict("t", "m", 2.0, 0.0, unit=""))
    3.0
    """
    if math.isnan(verdict.value):
        return PLOT_CAP
    if verdict.threshold <= 0:
        return 0.0 if verdict.passed else PLOT_CAP
    return min(PLOT_CAP, verdict.value / verdict.threshold)


def plot_report(
    sections: Sequence[Section], path: Path, title: str, cores: int | None = None
) -> None:
    """A PNG: each target's value as a share of its threshold (left) and the scaling curves
    (right, when a section has series; ``cores`` draws the best efficiency possible when the
    workers outnumber the cores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    verdicts = [verdict for section in sections for verdict in section.verdicts]
    series = {name: points for section in sections for name, points in section.series.items()}
    n_panels = 2 if series else 1
    figure, axes = plt.subplots(
        1, n_panels, figsize=(7 * n_panels, 0.55 * max(len(verdicts), 6) + 1.5), squeeze=False
    )
    bars = axes[0][0]
    labels = [textwrap.shorten(f"{v.target}: {v.measure}", 90) for v in verdicts]
    labels = [textwrap.fill(label, 48) for label in labels]
    shares = [share_of_threshold(v) for v in verdicts]
    colors = ["tab:green" if v.passed else "tab:red" for v in verdicts]
    positions = range(len(verdicts))
    bars.barh(list(positions), shares, color=colors)
    bars.axvline(1.0, color="black", linestyle="--", linewidth=1)
    bars.set_yticks(list(positions), labels, fontsize=7)
    bars.invert_yaxis()
    bars.set_xlim(0, PLOT_CAP)
    bars.set_xlabel("value ÷ threshold (passes left of the dashed line)")
    for position, verdict, share in zip(positions, verdicts, shares, strict=True):
        bars.text(share + 0.03, position, verdict.formatted(verdict.value), va="center",
                  fontsize=7)  # fmt: skip
    if series:
        curves = axes[0][1]
        for name, points in series.items():
            xs, ys = zip(*points, strict=True)
            curves.plot(xs, ys, marker="o", label=name)
        curves.axhline(1.0, color="black", linestyle="--", linewidth=1, label="ideal")
        counts = sorted({x for points in series.values() for x, _ in points})
        if cores is not None and counts and counts[-1] > cores:
            # More workers than cores: they share cores, and cores / P is the best possible.
            curves.plot(counts, [min(1.0, cores / x) for x in counts], color="grey",
                        linestyle=":", label=f"best possible on {cores} cores")  # fmt: skip
        curves.set_xticks(counts)
        curves.set_xlabel("workers (1 thread each)")
        curves.set_ylabel("efficiency T(1) / (P·T(P))")
        curves.set_ylim(0, 1.2)
        curves.legend(fontsize=8)
        curves.set_title("scaling", fontsize=10)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
