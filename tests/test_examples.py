"""The examples run top to bottom as a user runs them, at small sizes, and print sane results.

Each example prints one ``result: key=value ...`` line; these tests run it in a subprocess (a
fresh interpreter, as from a shell) and check the values, not just the exit code.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
#: Seconds for one example, cluster start-up included, on a busy 2-core machine.
EXAMPLE_TIMEOUT = 180


def run_script(args: list[str], cwd: Path) -> str:
    """Run ``python ARGS`` in ``cwd``; return its stdout, or fail with both streams."""
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 0, (
        f"{' '.join(args)} exited with {completed.returncode}\n"
        f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr[-4000:]}"
    )
    return completed.stdout


def result_fields(stdout: str) -> dict[str, str]:
    """The ``key=value`` pairs of the single ``result:`` line."""
    lines = [line for line in stdout.splitlines() if line.startswith("result: ")]
    assert len(lines) == 1, f"expected one 'result:' line, got {len(lines)} in:\n{stdout}"
    pairs = lines[0].removeprefix("result: ").split()
    return dict(pair.split("=", 1) for pair in pairs)


def test_quickstart_numpy_reaches_scikit_learns_optimum(tmp_path: Path) -> None:
    stdout = run_script([str(EXAMPLES / "quickstart_numpy.py"), "--C", "0.5"], cwd=tmp_path)
    result = result_fields(stdout)
    # The same objective with C converted to l2: both solvers land on the same optimum.
    assert float(result["objective_relative_gap"]) < 1e-5
    assert float(result["prediction_agreement"]) >= 0.99
    assert float(result["accuracy"]) > 0.95
    assert abs(float(result["accuracy"]) - float(result["sklearn_accuracy"])) <= 0.01


@pytest.mark.cluster
def test_zarr_local_cluster_trains_evaluates_and_reloads(tmp_path: Path) -> None:
    args = [str(EXAMPLES / "zarr_local_cluster.py"), "--n-samples", "8000", "--workdir", "."]
    stdout = run_script(args, cwd=tmp_path)
    result = result_fields(stdout)
    # 4 classes with 10% of the labels redrawn: a linear model reaches about 92.5%.
    assert 0.85 < float(result["test_accuracy"]) <= 1.0
    assert result["reloaded_same"] == "True"
    assert (tmp_path / "model").is_dir()
    # The example's own local cluster listens on loopback only.
    assert re.search(r"^cluster: scheduler tcp://127\.0\.0\.1:\d+, \d+ workers?", stdout, re.M)


@pytest.mark.cluster
def test_minibatch_sgd_prints_one_curve_row_per_epoch(tmp_path: Path) -> None:
    args = [
        str(EXAMPLES / "minibatch_sgd.py"),
        "--n-samples", "8000",
        "--batch-size", "1000",
        "--epochs", "4",
        "--workdir", ".",
    ]  # fmt: skip
    stdout = run_script(args, cwd=tmp_path)
    result = result_fields(stdout)
    epochs = int(result["epochs"])
    assert 1 <= epochs <= 4
    header = stdout.splitlines().index("epoch  train loss  val loss  val accuracy")
    curve = stdout.splitlines()[header + 1 : header + 1 + epochs]
    assert [int(row.split()[0]) for row in curve] == list(range(1, epochs + 1))
    assert 0.8 < float(result["val_accuracy"]) <= 1.0
    assert 0.8 < float(result["test_accuracy"]) <= 1.0


@pytest.mark.slow
@pytest.mark.cluster
def test_quick_benchmarks_write_their_report(tmp_path: Path) -> None:
    report_path = tmp_path / "quick.md"
    run_script(["-m", "benchmarks.run", "--quick", "--out", str(report_path)], cwd=REPO)
    report = report_path.read_text(encoding="utf-8")
    for heading in ("### Full-batch pass", "### Minibatch steps", "- memory:"):
        assert heading in report
    assert "DaskEngine.sums, 2 workers (blocks in worker memory)" in report
    trips_per_step = re.search(
        r"DaskEngine\.n_round_trips: \d+ for \d+ steps \(([\d.]+) per", report
    )
    # One wait per evaluation, plus the engine's occasional look-up of where blocks live.
    assert trips_per_step is not None and 1.0 <= float(trips_per_step[1]) < 1.5
