"""The scheduler dies mid-fit: the CLI says how to resume, and --resume ends where an
uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from daskprocs import dask_processes
from hostile import npy_bytes, replace_array_file

from dsoftmax import SoftmaxRegression
from dsoftmax.persist import CheckpointManager

pytestmark = pytest.mark.cluster


def _dsoftmax(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dsoftmax", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_scheduler_loss_then_resume_matches_an_uninterrupted_run(tmp_path):
    data = str(tmp_path / "train.zarr")
    train_args = [
        "--solver",
        "sgd",
        "--learning-rate",
        "0.05",
        "--batch-size",
        "64",
        "--max-iter",
        "4",
        "--seed",
        "3",
        "--checkpoint-every",
        "25",
    ]
    with dask_processes(n_workers=2) as procs:
        made = _dsoftmax(
            "make-data",
            data,
            "--n-samples",
            "6000",
            "--n-features",
            "8",
            "--n-classes",
            "3",
            "--chunk-rows",
            "1500",
            "--dtype",
            "float64",
            "--scheduler",
            procs.address,
        )
        assert made.wait(timeout=120) == 0, made.stderr.read()
        reference = _dsoftmax(
            "train",
            data,
            "--model",
            str(tmp_path / "reference"),
            *train_args,
            "--scheduler",
            procs.address,
        )
        assert reference.wait(timeout=300) == 0, reference.stderr.read()

        checkpoints = tmp_path / "ckpt"
        interrupted = _dsoftmax(
            "train",
            data,
            "--model",
            str(tmp_path / "model"),
            *train_args,
            "--checkpoint-dir",
            str(checkpoints),
            "--scheduler",
            procs.address,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(CheckpointManager(str(checkpoints)).steps()) < 2:
            assert interrupted.poll() is None, interrupted.stderr.read()
            time.sleep(0.02)
        os.kill(procs.scheduler.pid, signal.SIGKILL)
        started = time.monotonic()
        code = interrupted.wait(timeout=120)
        stderr = interrupted.stderr.read()
        print(f"trainer exited {time.monotonic() - started:.1f} s after the scheduler died")
    assert code == 1, stderr
    assert "--resume" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "model").exists()
    stopped_at = CheckpointManager(str(checkpoints)).steps()[-1]
    assert 0 < stopped_at < 4 * 94

    with dask_processes(n_workers=2) as procs:
        resumed = _dsoftmax(
            "train",
            data,
            "--model",
            str(tmp_path / "model"),
            *train_args,
            "--checkpoint-dir",
            str(checkpoints),
            "--resume",
            "--scheduler",
            procs.address,
        )
        assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    final = SoftmaxRegression.load(str(tmp_path / "model"))
    expected = SoftmaxRegression.load(str(tmp_path / "reference"))
    np.testing.assert_array_equal(final.coef_, expected.coef_)
    np.testing.assert_array_equal(final.intercept_, expected.intercept_)


@pytest.mark.slow
def test_damaged_checkpoints_are_named_and_resume_goes_on_from_the_newest_valid_one(tmp_path):
    data = str(tmp_path / "train.zarr")
    train_args = (
        "--solver sgd --learning-rate 0.05 --batch-size 64 --max-iter 2 --seed 3 "
        f"--checkpoint-every 10 --checkpoint-dir {tmp_path / 'ckpt'}"
    ).split()
    checkpoints = tmp_path / "ckpt"
    with dask_processes(n_workers=2) as procs:
        scheduler = ("--scheduler", procs.address)
        shape = "--n-samples 2000 --n-features 8 --n-classes 3 --chunk-rows 500 --dtype float64"
        made = _dsoftmax("make-data", data, *shape.split(), *scheduler)
        assert made.wait(timeout=120) == 0, made.stderr.read()
        first = _dsoftmax(
            "train", data, "--model", str(tmp_path / "model"), *train_args, *scheduler
        )
        assert first.wait(timeout=300) == 0, first.stderr.read()
        steps = CheckpointManager(str(checkpoints)).steps()
        assert len(steps) == 3

        # The newest checkpoint lost an array file: skipped, named, and the fit goes on.
        newest = checkpoints / f"step-{steps[-1]:010d}"
        (newest / "params.coef.npy").unlink()
        resumed = _dsoftmax(
            "train", data, "--model", str(tmp_path / "resumed"), *train_args, "--resume", *scheduler
        )
        assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
        warning = resumed.stderr.read()
        assert f"step-{steps[-1]:010d}' is damaged" in warning, warning
        assert "params.coef.npy is missing" in warning, warning

        # Every checkpoint with a momentum of another shape: refused, the model left as it is.
        for step in steps:
            replace_array_file(
                checkpoints / f"step-{step:010d}",
                "optimizer_state.velocity.coef",
                npy_bytes(np.zeros((2, 8))),
                shape=[2, 8],
            )
        model_files = {path: path.read_bytes() for path in (tmp_path / "model").iterdir()}
        refused = _dsoftmax(
            "train", data, "--model", str(tmp_path / "model"), *train_args, "--resume", *scheduler
        )
        assert refused.wait(timeout=300) == 1
        stderr = refused.stderr.read()
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("dsoftmax: error: every checkpoint in"), stderr
    assert "optimizer_state.velocity.coef is an array of shape (2, 8)" in error, stderr
    assert "Restart the cluster" not in stderr
    assert {path: path.read_bytes() for path in (tmp_path / "model").iterdir()} == model_files
    final = SoftmaxRegression.load(str(tmp_path / "resumed"))
    expected = SoftmaxRegression.load(str(tmp_path / "model"))
    np.testing.assert_array_equal(final.coef_, expected.coef_)


@pytest.mark.slow
def test_a_scheduler_killed_mid_fit_is_named_as_a_lost_connection_without_a_traceback(tmp_path):
    data = str(tmp_path / "train.zarr")
    with dask_processes(n_workers=2) as procs:
        made = _dsoftmax(
            "make-data", data, "--n-samples", "20000", "--n-features", "16", "--n-classes",
            "5", "--chunk-rows", "2500", "--scheduler", procs.address,
        )  # fmt: skip
        assert made.wait(timeout=120) == 0, made.stderr.read()
        training = _dsoftmax(
            "train", data, "--model", str(tmp_path / "model"), "--tol", "1e-12", "--max-iter",
            "100000", "--scheduler", procs.address, "-v",
        )  # fmt: skip
        lines = []
        for line in training.stderr:  # -v: one line per L-BFGS iteration
            lines.append(line)
            if "dsoftmax: iteration 2/" in line:
                break
        else:
            pytest.fail("".join(lines))
        os.kill(procs.scheduler.pid, signal.SIGKILL)
        code = training.wait(timeout=120)
        stderr = "".join(lines) + training.stderr.read()
    assert code == 1, stderr
    error = stderr.strip().splitlines()[-1]
    assert error.startswith(
        f"dsoftmax: error: training stopped: the connection to the Dask scheduler {procs.address}"
        " was lost (the scheduler stopped or the network failed). Rerun the command; with "
        "--checkpoint-dir an interrupted fit can be resumed."
    ), stderr
    assert "Traceback" not in stderr, stderr
    assert not (tmp_path / "model").exists()
