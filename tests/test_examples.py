"""The examples run top to bottom as a user runs them, at small sizes, and print sane results.

Each example prints one ``result: key=value ...`` line; these tests run it in a subprocess (a
fresh interpreter, as from a shell) and check the values, not just the exit code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from daskprocs import dask_processes

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
#: Seconds for one example, cluster start-up included, on a busy 2-core machine.
EXAMPLE_TIMEOUT = 180


def run_script(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``python ARGS`` in ``cwd`` (``env`` added to the environment); return its stdout, or
    fail with both streams."""
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
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


@pytest.mark.cluster
def test_remote_cluster_trains_on_the_scheduler_it_is_given(tmp_path: Path) -> None:
    args = [str(EXAMPLES / "remote_cluster.py"), "--n-samples", "8000", "--workdir", "."]
    with dask_processes(n_workers=2) as procs:
        stdout = run_script(args, cwd=tmp_path, env={"DSOFTMAX_SCHEDULER": procs.address})
    result = result_fields(stdout)
    # The cluster it was given, not a local one of its own.
    assert f"cluster: scheduler {procs.address}, 2 workers" in stdout
    assert int(result["n_workers"]) == 2
    assert 0.85 < float(result["test_accuracy"]) <= 1.0
    # The workers wrote the datasets at the absolute path of the relative --workdir.
    assert (tmp_path / "train.zarr" / "X").is_dir()
    assert (tmp_path / "test.zarr" / "X").is_dir()


def test_remote_cluster_without_an_address_says_how_to_give_one(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if name != "DSOFTMAX_SCHEDULER"}
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / "remote_cluster.py"), "--workdir", "."],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=EXAMPLE_TIMEOUT,
        check=False,
    )
    assert completed.returncode == 2
    assert "pass --scheduler ADDRESS or set DSOFTMAX_SCHEDULER" in completed.stderr


@pytest.mark.slow  # writes and streams 2 GiB: 50-120 s on 2 busy cores
@pytest.mark.cluster
def test_out_of_core_streams_data_larger_than_the_workers_memory(tmp_path: Path) -> None:
    # A small limit that still leaves room: a worker's Python, NumPy, Dask, Zarr and the compiled
    # block kernel take ~280 MiB, minibatches hold the blocks that fit below Dask's pause
    # threshold (80%), and the shuffle window spans no more blocks than that.
    args = [str(EXAMPLES / "out_of_core.py"), "--memory-limit", "512MiB", "--workdir", "."]
    stdout = run_script(args, cwd=tmp_path)
    result = result_fields(stdout)
    # hold_data="auto" chose to stream, as the data is larger than the workers' memory.
    assert re.search(r"^dsoftmax: .* streamed from the store", stdout, re.M), stdout
    limit = int(result["worker_memory_limit"])
    assert limit == 512 * 2**20
    assert int(result["total_worker_memory_limit"]) == 2 * limit
    assert int(result["dataset_bytes"]) >= 2 * int(result["total_worker_memory_limit"])
    # Each worker's peak resident memory, over the whole run, stayed below its limit; a worker
    # restarted after hitting it would have reported a fresh peak.
    assert result["workers_restarted"] == "False", stdout
    assert 0 < int(result["peak_worker_rss"]) < limit, stdout
    # Below the pause threshold too: a paused worker stalls the fit until its memory drops.
    assert int(result["peak_worker_rss"]) < 0.8 * limit, stdout
    # 4 classes with 10% of the labels redrawn: a linear model reaches about 92.5%.
    assert 0.85 < float(result["test_accuracy"]) <= 1.0, stdout


@pytest.mark.cluster
def test_parquet_probe_predicts_the_string_labels(tmp_path: Path) -> None:
    args = [str(EXAMPLES / "parquet_probe.py"), "--n-samples", "8000", "--workdir", "."]
    result = result_fields(run_script(args, cwd=tmp_path))
    classes = ["bird", "cat", "dog", "fish"]
    assert result["classes"].split(",") == classes
    predicted = result["predicted_sample"].split(",")
    assert len(predicted) == 8 and set(predicted) <= set(classes)
    # The nearest true centroid is the best rule there is on this data; a probe matches it.
    accuracy = float(result["accuracy"])
    assert accuracy >= float(result["nearest_centroid_accuracy"]) - 0.02
    assert 0.85 < accuracy <= 1.0
    assert (tmp_path / "train.zarr" / "X").is_dir()


def test_resume_after_a_kill_ends_where_an_uninterrupted_fit_ends(tmp_path: Path) -> None:
    args = [str(EXAMPLES / "resume.py"), "--checkpoint-every", "100", "--workdir", "."]
    result = result_fields(run_script(args, cwd=tmp_path))
    resumed_from = int(result["resumed_from_step"])
    assert resumed_from > 0 and resumed_from % 100 == 0
    assert int(result["epochs"]) >= 1
    assert result["same_as_uninterrupted"] == "True"


@pytest.mark.slow  # hashes, converts and fits on a local cluster: 40-60 s on 2 busy cores
@pytest.mark.cluster
def test_text_classifier_learns_topics_from_hashed_raw_text(tmp_path: Path) -> None:
    args = [str(EXAMPLES / "text_classifier.py"), "--n-docs", "4000", "--workdir", "."]
    stdout = run_script(args, cwd=tmp_path)
    result = result_fields(stdout)
    # 15% of each document's words come from its topic: the topics are nearly separable.
    assert float(result["test_accuracy"]) > 0.95
    assert result["layout"] == "csr" and result["example_topic"] == "sports"
    assert re.search(r"^data: 4000 documents x 262144 hashed columns", stdout, re.M)
