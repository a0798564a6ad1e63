"""Checkpoints, exact resume, damaged checkpoints, divergence, and the loss of a worker."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from distributed import Client, LocalCluster
from hostile import npy_bytes, replace_array_file
from sklearn.exceptions import ConvergenceWarning

from dsoftmax import SoftmaxRegression, make_classification, open_dataset
from dsoftmax.persist import FAULT_PAUSE_ENV, CheckpointError, CheckpointManager
from dsoftmax.training import DivergenceError

SGD = {"solver": "sgd", "learning_rate": 0.05, "momentum": 0.9, "batch_size": 64, "l2": 1e-3}
ADAM = {"solver": "adam", "learning_rate": 0.01, "batch_size": 64, "l2": 1e-3}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 6))
    y = np.argmax(X @ rng.normal(size=(6, 4)) + rng.normal(scale=0.5, size=(3000, 4)), axis=1)
    return X, y


def _quiet_fit(model, X, y, **fit_params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, **fit_params)


@pytest.mark.parametrize("solver", [SGD, ADAM], ids=["sgd", "adam"])
def test_resume_after_an_interrupted_run_is_bit_identical(tmp_path, data, solver):
    X, y = data
    reference = _quiet_fit(SoftmaxRegression(random_state=0, max_iter=4, **solver), X, y)

    # Stop early: the first 2 of 4 epochs, checkpointed every 10 steps (mid-epoch positions).
    checkpoints = str(tmp_path / "ckpt")
    first = SoftmaxRegression(
        random_state=0, max_iter=4, checkpoint_dir=checkpoints, checkpoint_every=10, **solver
    )
    total_steps = 4 * int(np.ceil(X.shape[0] / solver["batch_size"]))
    _interrupt_after_steps(first, X, y, stop_at=total_steps // 2 + 6)
    manager = CheckpointManager(checkpoints)
    assert len(manager.steps()) == 3  # kept: the newest three
    newest = manager.latest()
    assert 0 < newest.state.batches_done < 47  # resumes part-way through an epoch

    resumed = SoftmaxRegression(
        random_state=0, max_iter=4, checkpoint_dir=checkpoints, checkpoint_every=10, **solver
    )
    _quiet_fit(resumed, X, y, resume=True)
    np.testing.assert_array_equal(resumed.coef_, reference.coef_)
    np.testing.assert_array_equal(resumed.intercept_, reference.intercept_)
    assert resumed.loss_curve_ == reference.loss_curve_
    assert resumed.n_iter_ == reference.n_iter_


def _interrupt_after_steps(model, X, y, stop_at):
    """Stop ``model.fit`` (as a kill would) right after the checkpoint of step ``stop_at`` or
    later is written: the checkpoint's log line is the hook."""

    class StopError(Exception):
        pass

    def stop():
        raise StopError

    with _log_hook(f"dsoftmax: checkpoint at step {stop_at}", stop), pytest.raises(StopError):
        _quiet_fit(model, X, y)


def _start_trainer(tmp_path, data, params, env=None) -> tuple[subprocess.Popen, Path]:
    """A separate trainer process fitting ``data`` with checkpoints in ``tmp_path/ckpt``."""
    X, y = data
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    checkpoints = tmp_path / "ckpt"
    script = textwrap.dedent(
        f"""
        import numpy as np, warnings
        from dsoftmax import SoftmaxRegression
        X = np.load({str(tmp_path / "X.npy")!r}); y = np.load({str(tmp_path / "y.npy")!r})
        warnings.simplefilter("ignore")
        SoftmaxRegression(checkpoint_dir={str(checkpoints)!r}, **{params!r}).fit(X, y)
        """
    )
    return subprocess.Popen([sys.executable, "-c", script], env=env), checkpoints


def test_trainer_killed_between_checkpoints_resumes_identically(tmp_path, data):
    X, y = data
    params = dict(SGD, max_iter=40, random_state=0, checkpoint_every=20)
    trainer, checkpoints = _start_trainer(tmp_path, data, params)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(CheckpointManager(str(checkpoints)).steps()) < 3:
        time.sleep(0.01)
    os.kill(trainer.pid, signal.SIGKILL)
    assert trainer.wait(timeout=30) == -signal.SIGKILL, "the trainer finished before the kill"
    interrupted_at = CheckpointManager(str(checkpoints)).steps()[-1]
    assert interrupted_at < 40 * 47

    reference = _quiet_fit(SoftmaxRegression(**params), X, y)
    resumed = _quiet_fit(
        SoftmaxRegression(checkpoint_dir=str(checkpoints), **params), X, y, resume=True
    )
    np.testing.assert_array_equal(resumed.coef_, reference.coef_)


def test_trainer_killed_while_writing_a_checkpoint_resumes_identically(tmp_path, data):
    X, y = data
    params = dict(SGD, max_iter=3, random_state=0, checkpoint_every=20)
    # The write of step 60 stops after its files are staged, before they are moved into place.
    env = {**os.environ, FAULT_PAUSE_ENV: "step-0000000060:60"}
    trainer, checkpoints = _start_trainer(tmp_path, data, params, env=env)
    deadline = time.monotonic() + 60
    # Steps 20 and 40 are complete and a staged write exists: it can only be step 60's.
    while time.monotonic() < deadline and not (
        CheckpointManager(str(checkpoints)).steps() == [20, 40]
        and list(checkpoints.glob(".tmp-model-*/manifest.json"))
    ):
        time.sleep(0.01)
    os.kill(trainer.pid, signal.SIGKILL)
    assert trainer.wait(timeout=30) == -signal.SIGKILL
    assert CheckpointManager(str(checkpoints)).steps() == [20, 40]  # step 60 never completed

    reference = _quiet_fit(SoftmaxRegression(**params), X, y)
    resumed = _quiet_fit(
        SoftmaxRegression(checkpoint_dir=str(checkpoints), **params), X, y, resume=True
    )
    np.testing.assert_array_equal(resumed.coef_, reference.coef_)
    assert not list(checkpoints.glob(".tmp-model-*"))  # the killed write's leftovers are gone


def test_half_written_checkpoints_are_ignored(tmp_path, data):
    X, y = data
    checkpoints = tmp_path / "ckpt"
    model = SoftmaxRegression(max_iter=2, checkpoint_dir=str(checkpoints), **SGD)
    _quiet_fit(model, X, y)
    complete = CheckpointManager(str(checkpoints)).steps()
    # What a kill leaves mid-write: a staging directory, and a step directory with no manifest.
    (checkpoints / ".tmp-model-abcd").mkdir()
    (checkpoints / ".tmp-model-abcd" / "coef.npy").write_bytes(b"partial")
    (checkpoints / "step-9999999999").mkdir()
    assert CheckpointManager(str(checkpoints)).steps() == complete
    assert CheckpointManager(str(checkpoints)).latest().state.step == complete[-1]


def test_lbfgs_resume_reaches_the_same_optimum(tmp_path, data):
    X, y = data
    reference = SoftmaxRegression(l2=1e-3, tol=1e-10, max_iter=500).fit(X, y)
    checkpoints = str(tmp_path / "ckpt")
    partial = SoftmaxRegression(
        l2=1e-3, tol=1e-10, max_iter=500, checkpoint_dir=checkpoints, checkpoint_every=3
    )
    _interrupt_after_steps(partial, X, y, stop_at=6)
    resumed = SoftmaxRegression(
        l2=1e-3, tol=1e-10, max_iter=500, checkpoint_dir=checkpoints, checkpoint_every=3
    ).fit(X, y, resume=True)
    np.testing.assert_allclose(resumed.coef_, reference.coef_, rtol=0, atol=1e-6)
    assert (
        abs(resumed.loss_curve_[-1] - reference.loss_curve_[-1])
        <= 1e-10 * reference.loss_curve_[-1]
    )


def _checkpoint_files(tmp_path, data):
    X, y = data
    checkpoints = tmp_path / "ckpt"
    _quiet_fit(SoftmaxRegression(max_iter=1, checkpoint_dir=str(checkpoints), **SGD), X, y)
    newest = checkpoints / f"step-{CheckpointManager(str(checkpoints)).steps()[-1]:010d}"
    return checkpoints, newest


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        ("truncate", "fails its checksum"),
        ("flip", "fails its checksum"),
        ("n_classes", "manifest says 5 classes"),
        ("not_json", "not valid JSON"),
    ],
)
def test_tampered_checkpoints_are_refused(tmp_path, data, tamper, message):
    X, y = data
    checkpoints, newest = _checkpoint_files(tmp_path, data)
    coef_file = newest / "params.coef.npy"
    manifest = newest / "manifest.json"
    if tamper == "truncate":
        coef_file.write_bytes(coef_file.read_bytes()[:-8])
    elif tamper == "flip":
        raw = bytearray(coef_file.read_bytes())
        raw[-3] ^= 0x01
        coef_file.write_bytes(bytes(raw))
    elif tamper == "n_classes":
        document = json.loads(manifest.read_text())
        document["checkpoint"]["data"]["n_classes"] = 5
        manifest.write_text(json.dumps(document))
    else:
        manifest.write_text("{ this is not json")
    before = {path: path.read_bytes() for path in checkpoints.rglob("*") if path.is_file()}
    model = SoftmaxRegression(max_iter=2, checkpoint_dir=str(checkpoints), **SGD)
    with pytest.raises(CheckpointError, match=message):
        _quiet_fit(model, X, y, resume=True)
    after = {path: path.read_bytes() for path in checkpoints.rglob("*") if path.is_file()}
    assert after == before


def test_checkpoint_of_other_data_or_settings_is_refused(tmp_path, data):
    X, y = data
    checkpoints, _ = _checkpoint_files(tmp_path, data)
    other = SoftmaxRegression(max_iter=2, checkpoint_dir=str(checkpoints), **SGD)
    with pytest.raises(CheckpointError, match="made on other data: its fingerprint"):
        _quiet_fit(other, X + 1.0, y, resume=True)
    changed = SoftmaxRegression(
        max_iter=2, checkpoint_dir=str(checkpoints), **{**SGD, "learning_rate": 0.5}
    )
    with pytest.raises(CheckpointError, match=r"learning_rate=0\.05"):
        _quiet_fit(changed, X, y, resume=True)


def test_a_fresh_fit_refuses_a_directory_with_checkpoints(tmp_path, data):
    X, y = data
    checkpoints, _ = _checkpoint_files(tmp_path, data)
    before = sorted(path.name for path in checkpoints.iterdir())
    with pytest.raises(ValueError, match="already holds checkpoints"):
        SoftmaxRegression(checkpoint_dir=str(checkpoints), **SGD).fit(X, y)
    assert sorted(path.name for path in checkpoints.iterdir()) == before


def test_divergence_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, data):
    X, y = data
    checkpoints = str(tmp_path / "ckpt")
    model = SoftmaxRegression(
        solver="sgd",
        learning_rate=1e6,
        momentum=0.9,
        batch_size=64,
        max_iter=5,
        l2=1.0,
        checkpoint_dir=checkpoints,
        checkpoint_every=1,
        random_state=0,
    )
    with pytest.raises(DivergenceError, match=r"at epoch \d+, step \d+; lower the learning rate"):
        model.fit(X * 1e3, y)
    newest = CheckpointManager(checkpoints).latest()
    assert newest is not None and np.isfinite(newest.state.params.coef).all()


def test_weights_that_overflow_in_an_update_are_named_as_such(data):
    X, y = data
    # From zero the loss and gradient are finite; a step of 1e308 × gradient overflows.
    model = SoftmaxRegression(solver="sgd", learning_rate=1e308, momentum=0.0, batch_size=64)
    with pytest.raises(
        DivergenceError, match=r"the weights are not finite at epoch 1, step 1, after the update"
    ):
        model.fit(X * 10, y)


@contextlib.contextmanager
def _two_worker_client():
    """A client of 2 local worker processes (with nannies, which restart killed workers)."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="1GiB",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@contextlib.contextmanager
def _log_hook(trigger, action):
    """Run ``action`` once, inside the fit, when it logs a line starting with ``trigger``."""
    fired = []

    class Hook(logging.Handler):
        def emit(self, record):
            if not fired and record.getMessage().startswith(trigger):
                fired.append(True)
                action()

    logger = logging.getLogger("dsoftmax")
    hook, level = Hook(), logger.level
    logger.addHandler(hook)
    logger.setLevel(logging.INFO)
    try:
        yield fired
    finally:
        logger.removeHandler(hook)
        logger.setLevel(level)


@pytest.mark.cluster
@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
@pytest.mark.slow
def test_a_worker_killed_mid_fit_changes_nothing(tmp_path, solver):
    path = str(tmp_path / "train.zarr")
    make_classification(path, 8000, 8, 3, chunk_rows=1000, seed=5, dtype="float64")
    dataset = open_dataset(path)
    params = (
        {"solver": "sgd", "learning_rate": 0.05, "batch_size": 128, "max_iter": 3}
        if solver == "sgd"
        else {"solver": "lbfgs", "max_iter": 30, "tol": 1e-8}
    )
    with (
        _two_worker_client() as client,
    ):
        model = SoftmaxRegression(random_state=0, client=client, **params)
        reference = _quiet_fit(model, dataset, None).coef_.copy()

        def kill_a_worker():
            victim = sorted(client.scheduler_info()["workers"])[0]
            pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)

        trigger = "dsoftmax: epoch 1/" if solver == "sgd" else "dsoftmax: iteration 3/"
        lost = []
        with (
            _log_hook(trigger, kill_a_worker) as fired,
            _log_hook("dsoftmax: worker", lambda: lost.append(True)),
        ):
            disturbed = _quiet_fit(model, dataset, None).coef_
        assert fired, "no worker was killed during the fit"
        assert lost, "the loss of the worker was not logged"
    np.testing.assert_array_equal(disturbed, reference)


def _poison_block_two(block, marker, block_info=None):
    """Kill the worker process that computes row block 2 once ``marker`` exists: from then on,
    a block no worker survives."""
    if block_info[0]["chunk-location"][0] == 2 and os.path.exists(marker):
        os._exit(1)
    return block


@pytest.mark.cluster
@pytest.mark.slow
def test_a_block_that_kills_every_worker_is_named_and_checkpoints_survive(tmp_path, data):
    import dask
    import dask.array as da

    X, y = data
    checkpoints = str(tmp_path / "ckpt")
    marker = str(tmp_path / "poisoned")
    X_lazy = da.from_array(X, chunks=(500, -1)).map_blocks(_poison_block_two, marker, dtype=X.dtype)
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        _two_worker_client() as client,
    ):
        model = SoftmaxRegression(
            max_iter=3, checkpoint_dir=checkpoints, client=client, random_state=0, **SGD
        )

        def poison_and_kill_the_holder():
            # Block 2 must now be re-read, and reading it kills whoever tries.
            open(marker, "w").close()
            holders = client.who_has()
            victim = sorted(
                address
                for key, addresses in holders.items()
                if "softmax-block" in str(key) and str(key).endswith("-2")
                for address in addresses
            )[0]
            os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)

        with (
            _log_hook("dsoftmax: epoch 1/", poison_and_kill_the_holder) as fired,
            pytest.raises(RuntimeError, match=r"block 2 \(rows 1000-1499\) killed every worker"),
        ):
            _quiet_fit(model, X_lazy, y)
        assert fired
    newest = CheckpointManager(checkpoints).latest()
    assert newest.state.epoch == 1 and np.isfinite(newest.state.params.coef).all()


def _windowed_sgd_run(engine, config, resume=None):
    """A minibatch fit on ``engine``; the states saved at the end of each epoch."""
    import copy

    from dsoftmax.engine import EngineProblem
    from dsoftmax.objective import Params
    from dsoftmax.training import CheckpointHook, train

    saved = []
    hook = CheckpointHook(lambda state: saved.append(copy.deepcopy(state)))
    n_classes = 4
    start = Params(np.zeros((n_classes, engine.blocks[0].X.shape[1])), np.zeros(n_classes))
    problem = EngineProblem(engine, config.l2)
    return train(problem, start, config, resume=resume, checkpoint=hook), saved


def test_a_windowed_fit_resumes_bit_identically_through_a_checkpoint(tmp_path, data):
    from dsoftmax.engine import LocalEngine
    from dsoftmax.persist import Checkpoint
    from dsoftmax.training import TrainConfig

    X, y = data
    config = TrainConfig(solver="sgd", l2=1e-3, max_iter=3, batch_size=64, learning_rate=0.05,
                         random_state=0, shuffle_window=250)  # fmt: skip
    reference, saved = _windowed_sgd_run(LocalEngine(X, y, chunk_rows=300), config)

    # Through a checkpoint file, then on a new engine.
    manager = CheckpointManager(str(tmp_path / "ckpt"))
    description = {"n_classes": 4, "n_features": X.shape[1]}
    manager.save(Checkpoint(saved[0], {}, description))
    after_first_epoch = manager.latest().state
    resumed, _ = _windowed_sgd_run(
        LocalEngine(X, y, chunk_rows=300), config, resume=after_first_epoch
    )
    np.testing.assert_array_equal(resumed.params.coef, reference.params.coef)
    assert resumed.loss_curve == reference.loss_curve

    # The window is part of the fit's configuration: another window, other weights.
    other, _ = _windowed_sgd_run(
        LocalEngine(X, y, chunk_rows=300), replace_config(config, shuffle_window=None)
    )
    assert not np.array_equal(other.params.coef, reference.params.coef)


def replace_config(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


# ------------------------------------------------------------------ damaged checkpoints
# 3000 rows in batches of 64: 47 steps an epoch, 94 in two; checkpoints kept at 70, 80 and 90.
TWO_EPOCHS = dict(SGD, max_iter=2, random_state=0)
STEPS = [70, 80, 90]


@pytest.fixture(scope="module")
def reference(data):
    return _quiet_fit(SoftmaxRegression(**TWO_EPOCHS), *data).coef_


def _checkpointed(directory: Path) -> SoftmaxRegression:
    return SoftmaxRegression(checkpoint_dir=str(directory), checkpoint_every=10, **TWO_EPOCHS)


@pytest.fixture
def checkpoints(tmp_path, data):
    directory = tmp_path / "ckpt"
    _quiet_fit(_checkpointed(directory), *data)
    assert CheckpointManager(str(directory)).steps() == STEPS
    return directory


def _step(directory: Path, step: int) -> Path:
    return directory / f"step-{step:010d}"


def _missing_array(step_dir):
    (step_dir / "params.coef.npy").unlink()


def _manifest_to_dev_zero(step_dir):
    (step_dir / "manifest.json").unlink()
    (step_dir / "manifest.json").symlink_to("/dev/zero")


def _nested_manifest(step_dir):
    (step_dir / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)


def _huge_manifest(step_dir):
    with open(step_dir / "manifest.json", "r+b") as handle:
        handle.truncate(2 * 2**30)


def _fifo_array(step_dir):
    (step_dir / "params.intercept.npy").unlink()
    os.mkfifo(step_dir / "params.intercept.npy")


def _momentum_of_another_shape(step_dir):
    data = npy_bytes(np.zeros((3, 6)))
    replace_array_file(step_dir, "optimizer_state.velocity.coef", data, shape=[3, 6])


def _linked_step(step_dir):
    # A valid checkpoint, but outside the directory: a link there is never followed.
    outside = step_dir.parent.parent / "elsewhere"
    shutil.move(step_dir, outside)
    step_dir.symlink_to(outside, target_is_directory=True)


DAMAGES = {
    "missing-array": (_missing_array, r"params\.coef\.npy is missing"),
    "manifest-dev-zero": (_manifest_to_dev_zero, r"manifest\.json in .* is a symbolic link"),
    "nested-manifest": (_nested_manifest, r"nests objects and lists deeper than 32 levels"),
    "huge-manifest": (_huge_manifest, r"holds 2147483648 bytes, more than the 16777216"),
    "fifo-array": (_fifo_array, r"params\.intercept\.npy in .* is a FIFO"),
    "momentum-shape": (
        _momentum_of_another_shape,
        r"optimizer_state\.velocity\.coef is an array of shape \(3, 6\) and dtype float64, but "
        r"the weights' coef is an array of shape \(4, 6\)",
    ),
    "linked-step": (_linked_step, r"step-0000000090' is a symbolic link, not a directory"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_resume_skips_a_damaged_newest_checkpoint_and_ends_bit_identical(
    checkpoints, data, reference, damage, caplog
):
    make_damage, message = DAMAGES[damage]
    written = CheckpointManager(str(checkpoints)).load(90).state.params.coef
    make_damage(_step(checkpoints, 90))
    with caplog.at_level(logging.WARNING, logger="dsoftmax"):
        resumed = _quiet_fit(_checkpointed(checkpoints), *data, resume=True)
    np.testing.assert_array_equal(resumed.coef_, reference)
    skipped = [r.getMessage() for r in caplog.records if "skipping a damaged" in r.getMessage()]
    assert len(skipped) == 1, caplog.text
    assert "step-0000000090' is damaged" in skipped[0]
    assert re.search(message, skipped[0]), skipped[0]
    # The resumed fit wrote step 90 again, whole, in place of the damaged one.
    manager = CheckpointManager(str(checkpoints))
    assert manager.steps() == STEPS
    assert not _step(checkpoints, 90).is_symlink()
    np.testing.assert_array_equal(manager.load(90).state.params.coef, written)


def test_every_checkpoint_damaged_is_refused_and_left_as_it_is(checkpoints, data):
    for step in STEPS:
        _momentum_of_another_shape(_step(checkpoints, step))
    before = {path: path.read_bytes() for path in checkpoints.rglob("*") if path.is_file()}
    with pytest.raises(
        CheckpointError,
        match=r"every checkpoint in '.*ckpt' is damaged; the newest: checkpoint "
        r"'.*step-0000000090' is damaged: .*optimizer_state\.velocity\.coef .* choose another "
        r"checkpoint_dir",
    ):
        _quiet_fit(_checkpointed(checkpoints), *data, resume=True)
    after = {path: path.read_bytes() for path in checkpoints.rglob("*") if path.is_file()}
    assert after == before


def test_resume_from_a_chosen_step_replaces_the_later_checkpoints(
    checkpoints, data, reference, caplog
):
    with caplog.at_level(logging.WARNING, logger="dsoftmax"):
        resumed = _quiet_fit(_checkpointed(checkpoints), *data, resume=70)
    np.testing.assert_array_equal(resumed.coef_, reference)
    assert "removed the checkpoint of step 90" in caplog.text  # when step 80 was written again
    assert CheckpointManager(str(checkpoints)).steps() == STEPS


def test_a_chosen_step_must_be_a_valid_checkpoint(checkpoints, data):
    model = _checkpointed(checkpoints)
    with pytest.raises(
        CheckpointError, match=r"no checkpoint of step 75 in .* \(its checkpoints: steps 70, 80, 90"
    ):
        _quiet_fit(model, *data, resume=75)
    _missing_array(_step(checkpoints, 80))
    with pytest.raises(
        CheckpointError,
        match=r"step-0000000080' is damaged: .*params\.coef\.npy is missing\. Resume from "
        r"another step \(70, 90\), or with resume=True",
    ):
        _quiet_fit(model, *data, resume=80)
    for wrong in (-1, "80", 2.0):
        with pytest.raises(TypeError, match="resume must be True, False or the step number"):
            _quiet_fit(model, *data, resume=wrong)
    with pytest.raises(ValueError, match="resume=80 needs checkpoint_dir"):
        _quiet_fit(SoftmaxRegression(**TWO_EPOCHS), *data, resume=80)
