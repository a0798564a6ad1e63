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

from dsoftmax import SoftmaxRegression
from dsoftmax.checkpoint import CheckpointManager

pytestmark = pytest.mark.cluster


def _dsoftmax(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dsoftmax", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


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
