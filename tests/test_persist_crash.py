"""Saves killed mid-way and saves racing each other, in real processes: a model path always holds
one whole model, and nothing is left beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dsoftmax import SoftmaxRegression
from dsoftmax.persist import FAULT_PAUSE_ENV, FAULT_PAUSE_MID_SWAP_ENV

N_SAVES = 150


def _fitted(value: float) -> SoftmaxRegression:
    model = SoftmaxRegression().fit(np.eye(4), [0, 1, 0, 1])
    model.coef_ = np.full_like(model.coef_, value)
    return model


def _saver(path: Path, value: float, n_saves: int = 1, env: dict | None = None) -> subprocess.Popen:
    """A process that saves a model whose coefficients are all ``value``, ``n_saves`` times
    (``n_iter_`` counts the saves)."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from dsoftmax import SoftmaxRegression
        model = SoftmaxRegression().fit(np.eye(4), [0, 1, 0, 1])
        model.coef_ = np.full_like(model.coef_, {value!r})
        for count in range({n_saves}):
            model.n_iter_ = count
            model.save({str(path)!r})
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True
    )


def _wait_for(condition, process: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the saver never reached the fault point"
        time.sleep(0.005)


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def test_a_save_killed_between_its_two_renames_leaves_the_old_model(tmp_path):
    path = tmp_path / "victim"
    _fitted(1.0).save(str(path))
    # Where RENAME_EXCHANGE is missing, a save renames the old model away, then the new one in.
    env = {**os.environ, FAULT_PAUSE_MID_SWAP_ENV: f"{path}:60"}
    saver = _saver(path, 2.0, env=env)
    _wait_for(lambda: not path.exists() and list(tmp_path.glob(".old-model-victim-*")), saver)
    _kill(saver)
    assert not path.exists()  # killed with the old model renamed away, the new one staged

    loaded = SoftmaxRegression.load(str(path))  # restores the old model first
    assert np.all(loaded.coef_ == 1.0)
    assert sorted(os.listdir(tmp_path)) == ["victim"]  # no backup, staged copy or lock left


def test_a_save_killed_before_its_swap_leaves_the_old_model_and_the_next_save_cleans_up(tmp_path):
    path = tmp_path / "victim"
    _fitted(1.0).save(str(path))
    saver = _saver(path, 2.0, env={**os.environ, FAULT_PAUSE_ENV: f"{path}:60"})
    _wait_for(lambda: list(tmp_path.glob(".tmp-model-victim-*/manifest.json")), saver)
    _kill(saver)
    assert np.all(SoftmaxRegression.load(str(path)).coef_ == 1.0)

    _fitted(3.0).save(str(path))
    assert np.all(SoftmaxRegression.load(str(path)).coef_ == 3.0)
    assert sorted(os.listdir(tmp_path)) == ["victim"]


def _reader(path: Path, stop: Path) -> subprocess.Popen:
    """A process that loads ``path`` until ``stop`` exists; every load must give a whole model
    (one save's uniform coefficients); it prints how many loads it made."""
    script = textwrap.dedent(
        f"""
        import os
        import numpy as np
        from dsoftmax import SoftmaxRegression
        loads = 0
        while not os.path.exists({str(stop)!r}):
            coef = SoftmaxRegression.load({str(path)!r}).coef_
            assert np.all(coef == coef.flat[0]), coef
            loads += 1
        print(loads)
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("swap", ["exchange", "two-rename"])
def test_two_processes_saving_to_one_path_take_turns_and_the_last_save_wins(tmp_path, swap):
    path = tmp_path / "shared"
    _fitted(0.0).save(str(path))
    env = {**os.environ}
    if swap == "two-rename":
        env[FAULT_PAUSE_MID_SWAP_ENV] = f"{path}:0"
    stop = tmp_path.parent / f"{tmp_path.name}-stop"
    reader = _reader(path, stop)
    savers = [_saver(path, value, N_SAVES, env=env) for value in (1.0, 2.0)]
    try:
        for saver in savers:
            assert saver.wait(timeout=240) == 0, saver.stderr.read()
    finally:
        stop.touch()
    output, errors = reader.communicate(timeout=60)
    assert reader.returncode == 0, errors
    assert int(output) > 0

    final = SoftmaxRegression.load(str(path))
    assert final.n_iter_ == N_SAVES - 1  # a last save, not an earlier one
    assert final.coef_.flat[0] in (1.0, 2.0) and np.all(final.coef_ == final.coef_.flat[0])
    assert sorted(os.listdir(tmp_path)) == ["shared"]
