"""End-to-end tests of the ``dsoftmax`` command: real subprocesses, real Zarr stores on disk and
a real ``dask scheduler`` with two ``dask worker`` processes on 127.0.0.1.

Every command runs as ``python -m dsoftmax ...``. Each start pays for importing dask, zarr and
scikit-learn, so independent commands are started together (:func:`run_cli_many`), and the
commands that compute use one module-wide cluster (``--scheduler``) instead of starting a local
cluster each; one test covers the default local cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import distributed
import numpy as np
import psutil
import pytest
import zarr
from daskprocs import DaskProcesses, dask_processes
from sklearn.metrics import log_loss

from dsoftmax import SoftmaxRegression, open_dataset, write_dataset
from dsoftmax.evaluation import evaluate_model, format_report

CLI = (sys.executable, "-m", "dsoftmax")
COMMAND_TIMEOUT = 180.0
SUBCOMMANDS = ("make-data", "convert", "train", "evaluate", "predict", "demo", "plot")
N_SAMPLES, N_FEATURES, N_CLASSES, CHUNK_ROWS = 20_000, 8, 4, 4000


# --------------------------------------------------------------------------- running the CLI
def run_cli_many(
    *argvs: Sequence[object], env: dict[str, str] | None = None, cwd: Path | None = None
) -> list[subprocess.CompletedProcess]:
    """Run several ``dsoftmax`` commands at once (they are independent); results in order."""
    processes = [
        subprocess.Popen(
            [*CLI, *map(str, argv)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        for argv in argvs
    ]
    results = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
            results.append(
                subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
            )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def run_cli(*argv: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_cli_many(argv, env=env)[0]


def run_cli_on_terminal(*argv: object) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal of 120 columns: ``(exit code, stdout, terminal)``."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    process = subprocess.Popen(
        [*CLI, *map(str, argv)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    shown = bytearray()
    try:
        # Read while it runs, so that a full terminal buffer never blocks the command.
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the command closed the terminal
                break
            if not data:
                break
            shown += data
        stdout, _ = process.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stdout, shown.decode(errors="replace")


def describe(result: subprocess.CompletedProcess) -> str:
    return (
        f"{' '.join(result.args[2:])} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def assert_clean_success(result: subprocess.CompletedProcess) -> None:
    """Exit 0 and nothing on stderr: no warning, no shutdown noise, no progress bar."""
    assert result.returncode == 0, describe(result)
    assert result.stderr == "", describe(result)


def assert_one_line_error(
    result: subprocess.CompletedProcess, exit_code: int, pattern: str
) -> None:
    assert result.returncode == exit_code, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("dsoftmax: error: "), describe(result)
    assert re.search(pattern, lines[0]), describe(result)
    assert "Traceback" not in result.stdout + result.stderr


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskProcesses]:
    with dask_processes(n_workers=2) as procs:
        yield procs


@pytest.fixture(scope="module")
def client(cluster: DaskProcesses) -> Iterator[distributed.Client]:
    """The test's own view of the cluster: which worker processes ran what."""
    with distributed.Client(cluster.address, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="module")
def teacher_data(tmp_path_factory: pytest.TempPathFactory, cluster: DaskProcesses) -> Path:
    path = tmp_path_factory.mktemp("cli") / "train.zarr"
    result = run_cli(
        "make-data", path, "--n-samples", N_SAMPLES, "--n-features", N_FEATURES,
        "--n-classes", N_CLASSES, "--chunk-rows", CHUNK_ROWS, "--scheduler", cluster.address,
    )  # fmt: skip
    assert_clean_success(result)
    assert re.fullmatch(
        rf"wrote {N_SAMPLES} x {N_FEATURES} float32 with {N_CLASSES} classes to \S+ in [\d.]+ s\n",
        result.stdout,
    ), describe(result)
    return path


@pytest.fixture(scope="module")
def lbfgs_model(teacher_data: Path, cluster: DaskProcesses) -> Path:
    model = teacher_data.parent / "model"
    result = run_cli(
        "train", teacher_data, "--model", model, "--solver", "lbfgs", "--l2", "1e-4",
        "--scheduler", cluster.address,
    )  # fmt: skip
    assert_clean_success(result)
    assert re.fullmatch(
        rf"trained lbfgs on {N_SAMPLES} rows in [\d.]+ s: \d+ iterations?, final loss [\d.]+; "
        rf"model saved to {re.escape(str(model))}\n",
        result.stdout,
    ), describe(result)
    return model


@pytest.fixture(scope="module")
def nan_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid dataset (8 features, like the model's) whose store then gets one NaN in X."""
    path = tmp_path_factory.mktemp("nan") / "nan.zarr"
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, N_FEATURES)).astype(np.float32)
    write_dataset(path, X, rng.integers(0, N_CLASSES, 2000), chunk_rows=500)
    features = zarr.open_group(str(path), mode="r+")["X"]
    block = features[500:1000]
    block[7, 3] = np.nan
    features[500:1000] = block  # write_dataset refuses NaN: corrupt the store behind its back
    return path


def worker_task_keys(client: distributed.Client, cluster: DaskProcesses) -> list[str]:
    """Keys computed by the cluster's workers, after checking they are its two processes."""

    # Local, so that cloudpickle ships it by value: the workers cannot import this module.
    def computed_task_keys(dask_worker: distributed.Worker) -> list[str]:
        return [
            str(entry[0])
            for entry in dask_worker.state.log
            if len(entry) > 2 and entry[1] == "compute-task"
        ]

    pids = client.run(os.getpid)
    spawned = {
        child.pid
        for worker in cluster.workers
        for child in psutil.Process(worker.pid).children(recursive=True)
    }
    assert len(pids) == 2
    assert set(pids.values()) <= spawned, (pids, spawned)
    return [key for keys in client.run(computed_task_keys).values() for key in keys]


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


# ------------------------------------------------------------------- the cluster end to end
@pytest.mark.cluster
def test_make_data_and_train_run_on_the_scheduler_workers(
    lbfgs_model: Path, client: distributed.Client, cluster: DaskProcesses
) -> None:
    keys = worker_task_keys(client, cluster)
    # make-data writes chunks in tasks; train loads blocks and starts the block servers that
    # compute the sums on the workers.
    assert any(key.startswith("dsoftmax-make-classification-") for key in keys), keys[:20]
    assert any("softmax-block-" in key for key in keys), keys[:20]
    assert any(key.startswith("softmax-server-") for key in keys), keys[:20]
    model = SoftmaxRegression.load(str(lbfgs_model))
    assert model.coef_.shape == (N_CLASSES, N_FEATURES)
    assert model.classes_.tolist() == list(range(N_CLASSES))


@pytest.mark.cluster
def test_evaluate_reports_what_the_model_scores_as_text_and_json(
    lbfgs_model: Path,
    teacher_data: Path,
    client: distributed.Client,
    cluster: DaskProcesses,
) -> None:
    text, as_json = run_cli_many(
        ("evaluate", lbfgs_model, teacher_data, "--scheduler", cluster.address),
        ("evaluate", lbfgs_model, teacher_data, "--json", "--scheduler", cluster.address),
    )
    assert_clean_success(text)
    assert_clean_success(as_json)
    report = json.loads(as_json.stdout)
    assert set(report) == {
        "n_samples", "weight_sum", "loss", "accuracy", "per_class", "confusion_matrix",
    }  # fmt: skip
    assert report["n_samples"] == N_SAMPLES
    assert [row["label"] for row in report["per_class"]] == list(range(N_CLASSES))
    assert sum(row["support"] for row in report["per_class"]) == N_SAMPLES
    assert np.sum(report["confusion_matrix"]) == N_SAMPLES

    # The second oracle: scikit-learn's metrics on the model's in-memory predictions.
    dataset = open_dataset(teacher_data)
    X, y = dataset.X.compute(scheduler="sync"), dataset.y.compute(scheduler="sync")
    model = SoftmaxRegression.load(str(lbfgs_model))
    assert report["accuracy"] == pytest.approx(np.mean(model.predict(X) == y), abs=1e-12)
    assert report["loss"] == pytest.approx(log_loss(y, model.predict_proba(X)), rel=1e-4)
    assert report["accuracy"] > 0.8  # noise 0.1 over 4 classes caps it near 0.925

    accuracy = re.search(r"^accuracy: (\d\.\d{4})$", text.stdout, flags=re.MULTILINE)
    assert accuracy is not None, describe(text)
    assert float(accuracy.group(1)) == pytest.approx(report["accuracy"], abs=5e-5)
    assert re.search(r"^\s+3 +[\d.]+ +[\d.]+ +[\d.]+ +\d+$", text.stdout, flags=re.MULTILINE)
    assert any(key.startswith("dsoftmax-evaluate-") for key in worker_task_keys(client, cluster))


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_evaluate_and_predict_start_without_importing_scikit_learn(
    lbfgs_model: Path, teacher_data: Path, tmp_path: Path, command: str
) -> None:
    # They need the saved weights only: the estimator (and scikit-learn's import) stays
    # out of the command's start.
    script = (
        "import sys; from dsoftmax.cli import main; code = main(sys.argv[1:]); "
        "print('sklearn' in sys.modules); sys.exit(code)"
    )
    out = tmp_path / "predicted.zarr"
    options = ["--json"] if command == "evaluate" else ["--out", str(out), "--proba"]
    done = subprocess.run(
        [sys.executable, "-c", script, command, str(lbfgs_model), str(teacher_data), *options],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed, imported = done.stdout.rstrip().rsplit("\n", 1)
    assert imported == "False"
    if command == "evaluate":
        assert json.loads(printed)["n_samples"] == N_SAMPLES
    else:  # what it writes: test_predict_writes_what_the_python_api_predicts
        assert printed == f"wrote predictions and probabilities for {N_SAMPLES} rows to {out}"


@pytest.mark.cluster
def test_make_data_teacher_seed_makes_held_out_rows_of_the_same_task(
    lbfgs_model: Path, teacher_data: Path, cluster: DaskProcesses
) -> None:
    from dsoftmax import make_classification

    held_out = teacher_data.parent / "held-out.zarr"
    result = run_cli(
        "make-data", held_out, "--n-samples", N_SAMPLES, "--n-features", N_FEATURES,
        "--n-classes", N_CLASSES, "--chunk-rows", CHUNK_ROWS, "--seed", 1, "--teacher-seed", 0,
        "--scheduler", cluster.address,
    )  # fmt: skip
    assert_clean_success(result)
    expected = make_classification(
        teacher_data.parent / "expected.zarr", N_SAMPLES, N_FEATURES, N_CLASSES,
        chunk_rows=CHUNK_ROWS, seed=1, teacher_seed=0,
    )  # fmt: skip
    made = open_dataset(held_out)
    np.testing.assert_array_equal(made.X.compute(), expected.X.compute())
    np.testing.assert_array_equal(made.y.compute(), expected.y.compute())
    train = open_dataset(teacher_data)
    assert not np.array_equal(made.X[:10].compute(), train.X[:10].compute())  # new rows
    # The model of the training rows labels them as well as its own rows: the same teacher.
    model = SoftmaxRegression.load(str(lbfgs_model))
    assert model.score(made.X.compute(), made.y.compute()) > 0.8


@pytest.mark.cluster
def test_predict_writes_what_the_python_api_predicts(
    lbfgs_model: Path,
    teacher_data: Path,
    tmp_path: Path,
    client: distributed.Client,
    cluster: DaskProcesses,
) -> None:
    out = tmp_path / "predictions.zarr"
    result = run_cli(
        "predict", lbfgs_model, teacher_data, "--out", out, "--proba",
        "--scheduler", cluster.address,
    )  # fmt: skip
    assert_clean_success(result)
    assert result.stdout == (f"wrote predictions and probabilities for {N_SAMPLES} rows to {out}\n")
    written = zarr.open_group(str(out), mode="r")
    predictions, probabilities = written["predictions"][:], written["probabilities"][:]
    assert predictions.shape == (N_SAMPLES,)
    model = SoftmaxRegression.load(str(lbfgs_model))
    dataset = open_dataset(teacher_data)
    expected = model.predict(dataset).compute(scheduler="sync")
    np.testing.assert_array_equal(predictions, expected)
    np.testing.assert_allclose(
        probabilities, model.predict_proba(dataset).compute(scheduler="sync"), rtol=1e-6
    )
    assert any(key.startswith("dsoftmax-block-stats-") for key in worker_task_keys(client, cluster))


@pytest.mark.cluster
def test_train_sgd_shows_its_progress_bar_with_the_loss_on_a_terminal_only(
    teacher_data: Path, tmp_path: Path, cluster: DaskProcesses
) -> None:
    # tol=0 and 2 epochs cannot meet the stopping rule: the run ends at max_iter, deterministically.
    options = (
        "--solver", "sgd", "--batch-size", 2000, "--learning-rate", 0.1, "--momentum", 0.9,
        "--max-iter", 2, "--tol", 0, "--seed", 3, "--scheduler", cluster.address,
    )  # fmt: skip
    piped = subprocess.Popen(
        [*CLI, "train", str(teacher_data), "--model", str(tmp_path / "piped"), *map(str, options)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        code, stdout, terminal = run_cli_on_terminal(
            "train", teacher_data, "--model", tmp_path / "terminal", *options
        )
        piped_out, piped_err = piped.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        if piped.poll() is None:
            piped.kill()
            piped.wait()

    stopped = re.compile(
        rf"trained sgd on {N_SAMPLES} rows in [\d.]+ s: 2 epochs, stopped at max_iter, "
        r"final loss [\d.]+; model saved to \S+\n"
    )
    warning = "dsoftmax: warning: sgd did not converge in max_iter=2 epochs"
    assert piped.returncode == 0, piped_err
    assert stopped.fullmatch(piped_out), piped_out
    # Not a terminal: the one warning line, no bar (no carriage returns, no rate).
    assert piped_err.startswith(warning) and piped_err.count("\n") == 1, piped_err
    assert "\r" not in piped_err and "epoch/s" not in piped_err

    assert code == 0, terminal
    assert stopped.fullmatch(stdout), stdout
    # tqdm shows the rate as epoch/s, or inverted as s/epoch when an epoch takes over a second.
    assert re.search(r"\d/2 \[.*(epoch/s|s/epoch), loss=[\d.]+\]", terminal), terminal
    assert warning in terminal and "Traceback" not in terminal

    # Same seed and options: the same weights, whether a terminal watched or not.
    piped_model = SoftmaxRegression.load(str(tmp_path / "piped"))
    terminal_model = SoftmaxRegression.load(str(tmp_path / "terminal"))
    assert piped_model.n_iter_ == 2
    np.testing.assert_array_equal(piped_model.coef_, terminal_model.coef_)


# --------------------------------------------------------------------------- usage errors
USAGE_ERRORS = {
    "unknown solver": (
        ("train", "d.zarr", "--model", "m", "--solver", "newton"),
        r"argument --solver: invalid choice: 'newton'.*'dsoftmax train --help'",
    ),
    "negative l2": (
        ("train", "d.zarr", "--model", "m", "--l2", "-1"),
        r"argument --l2: must be a number in \[0, inf\), got '-1'",
    ),
    "zero batch size": (
        ("train", "d.zarr", "--model", "m", "--batch-size", "0"),
        r"argument --batch-size: must be an integer in \[1, inf\), got '0'",
    ),
    "nesterov without momentum": (
        ("train", "d.zarr", "--model", "m", "--nesterov", "--momentum", "0"),
        r"--nesterov needs --momentum > 0",
    ),
    "momentum of one": (
        ("train", "d.zarr", "--model", "m", "--momentum", "1"),
        r"argument --momentum: must be a number in \[0\.0, 1\.0\), got '1'",
    ),
    "fractional iterations": (
        ("train", "d.zarr", "--model", "m", "--max-iter", "2.5"),
        r"argument --max-iter: must be an integer, got '2\.5'",
    ),
    "missing arguments": (
        ("train",),
        r"the following arguments are required: data, --model",
    ),
}
HELP_COMMANDS = {"dsoftmax": (), **{name: (name,) for name in SUBCOMMANDS}}


@pytest.fixture(scope="module")
def argument_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every usage-error and --help command, run at once in an empty directory (none of them
    may touch a file)."""
    cwd = tmp_path_factory.mktemp("usage")
    argvs = [argv for argv, _ in USAGE_ERRORS.values()]
    argvs += [(*argv, "--help") for argv in HELP_COMMANDS.values()]
    results = run_cli_many(*argvs, cwd=cwd)
    names = [f"error: {name}" for name in USAGE_ERRORS]
    names += [f"help: {name}" for name in HELP_COMMANDS]
    assert list(cwd.iterdir()) == []
    return dict(zip(names, results, strict=True))


@pytest.mark.parametrize("case", USAGE_ERRORS)
def test_usage_errors_exit_2_with_one_line(case: str, argument_results: dict) -> None:
    assert_one_line_error(argument_results[f"error: {case}"], 2, USAGE_ERRORS[case][1])


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help_of_each_command_exits_0(command: str, argument_results: dict) -> None:
    result = argument_results[f"help: {command}"]
    assert_clean_success(result)
    prog = "dsoftmax" if command == "dsoftmax" else f"dsoftmax {command}"
    assert result.stdout.startswith(f"usage: {prog} ")
    if command in ("train", "evaluate", "predict", "make-data", "demo"):
        assert "--scheduler ADDR" in result.stdout
    if command == "dsoftmax":  # python -m dsoftmax --help
        assert all(name in result.stdout for name in SUBCOMMANDS)
        assert "Exit codes: 0 success, 1 data or runtime failure, 2 usage error." in result.stdout


# ---------------------------------------------------------------------------- data errors
@pytest.mark.cluster
@pytest.mark.slow
def test_data_errors_exit_1_with_one_line_and_leave_the_model_untouched(
    lbfgs_model: Path,
    teacher_data: Path,
    nan_data: Path,
    tmp_path: Path,
    cluster: DaskProcesses,
) -> None:
    existing = tmp_path / "existing-model"
    shutil.copytree(lbfgs_model, existing)
    before = file_bytes(existing)
    dataset_before = file_bytes(teacher_data)
    scheduler = ("--scheduler", cluster.address)
    missing, nan_train, nan_evaluate, nan_predict, not_a_model, not_a_model_target = run_cli_many(
        ("train", tmp_path / "missing.zarr", "--model", existing, *scheduler),
        ("train", nan_data, "--model", existing, *scheduler),
        ("evaluate", lbfgs_model, nan_data, *scheduler),
        ("predict", lbfgs_model, nan_data, "--out", tmp_path / "p.zarr", *scheduler),
        ("evaluate", teacher_data, teacher_data, *scheduler),
        ("train", teacher_data, "--model", teacher_data, *scheduler),
    )
    assert_one_line_error(missing, 1, r"no Zarr group at '.*missing\.zarr'")
    nan_message = r"X in '.*nan\.zarr' has 1 non-finite value\(s\) .* first in row 507"
    assert_one_line_error(nan_train, 1, nan_message)
    assert_one_line_error(nan_evaluate, 1, nan_message)
    assert_one_line_error(nan_predict, 1, nan_message)
    assert_one_line_error(not_a_model, 1, r"'.*train\.zarr' is not a dsoftmax model")
    assert_one_line_error(
        not_a_model_target, 1, r"--model '.*train\.zarr' exists and is not a dsoftmax model"
    )
    assert file_bytes(existing) == before
    assert file_bytes(teacher_data) == dataset_before
    assert not (tmp_path / "p.zarr").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["existing-model"]  # no staging left


@pytest.mark.cluster
def test_a_damaged_chunk_shows_as_one_line_and_the_worker_log_only_with_verbose(
    tmp_path: Path,
) -> None:
    path = tmp_path / "damaged.zarr"
    rng = np.random.default_rng(3)
    write_dataset(path, rng.standard_normal((1200, 3)).astype(np.float32), rng.integers(0, 3, 1200),
                  chunk_rows=400)  # fmt: skip
    (path / "X/c/1/0").write_bytes(b"these bytes are not a zstd frame " * 4)
    # The default local cluster: its workers run the failing task and would log it here.
    quiet, verbose = run_cli_many(
        ("train", path, "--model", tmp_path / "quiet-model"),
        ("train", path, "--model", tmp_path / "verbose-model", "-v"),
    )
    damaged = r"cannot read chunk 1 of X in '.*damaged\.zarr' \(rows 400 to 799"
    assert_one_line_error(quiet, 1, damaged)
    assert "Compute Failed" not in quiet.stderr
    assert verbose.returncode == 1, describe(verbose)
    assert "Compute Failed" in verbose.stderr and "read_row_chunk" in verbose.stderr
    last = verbose.stderr.splitlines()[-1]
    assert last.startswith("dsoftmax: error: ") and re.search(damaged, last), describe(verbose)
    assert not (tmp_path / "quiet-model").exists() and not (tmp_path / "verbose-model").exists()


def test_the_options_take_their_defaults_and_choices_from_the_library(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dsoftmax.cli import build_parser
    from dsoftmax.defaults import CODECS, DEFAULT_CHUNK_ROWS, HOLD_CHOICES, SCHEDULES, SOLVERS

    parser = build_parser()
    train = parser.parse_args(["train", "d.zarr", "--model", "m"])
    estimator = SoftmaxRegression().get_params()
    for option in ("l2", "batch_size", "learning_rate", "lr_schedule", "momentum", "nesterov",
                   "max_iter", "tol", "early_stopping", "validation_fraction", "class_weight",
                   "hold_data", "checkpoint_every", "keep_checkpoints", "solver"):  # fmt: skip
        assert getattr(train, option) == estimator[option], option
    assert train.no_intercept is not estimator["fit_intercept"]
    make = parser.parse_args(["make-data", "d.zarr"])
    assert make.chunk_rows == DEFAULT_CHUNK_ROWS and estimator["chunk_rows"] == "auto"
    helps = {}
    for command in ("train", "make-data"):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        helps[command] = capsys.readouterr().out
    for choices in (SOLVERS, SCHEDULES, HOLD_CHOICES):
        assert "{" + ",".join(choices) + "}" in helps["train"]
    assert "--codec {" + ",".join(CODECS) + "}" in helps["make-data"]


# -------------------------------------------------------------------------------- convert
def test_convert_npz_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    X = rng.standard_normal((900, 5))
    y = rng.integers(0, 3, 900) * 10
    np.savez(tmp_path / "data.npz", features=X, target=y)
    result = run_cli(
        "convert", tmp_path / "data.npz", "--out", tmp_path / "data.zarr",
        "--feature-key", "features", "--label-key", "target", "--chunk-rows", 250,
    )  # fmt: skip
    assert_clean_success(result)
    assert result.stdout == f"wrote 900 x 5 with 3 classes to {tmp_path / 'data.zarr'}\n"
    dataset = open_dataset(tmp_path / "data.zarr")
    assert dataset.chunk_rows == (250, 250, 250, 150)
    np.testing.assert_array_equal(dataset.X.compute(scheduler="sync"), X)
    np.testing.assert_array_equal(dataset.classes[dataset.y.compute(scheduler="sync")], y)


@pytest.mark.cluster
def test_string_labels_convert_train_evaluate_and_predict_on_the_default_local_cluster(
    tmp_path: Path, cluster: DaskProcesses
) -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((1200, 4)).astype(np.float32)
    names = np.array(["cat", "dog", "emu"])
    labels = names[np.argmax(X[:, :3] + 0.3 * rng.standard_normal((1200, 3)), axis=1)]
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", labels)
    data, model = tmp_path / "animals.zarr", tmp_path / "animals-model"

    converted = run_cli("convert", tmp_path / "X.npy", tmp_path / "y.npy", "--out", data)
    assert_clean_success(converted)
    dataset = open_dataset(data)
    assert dataset.classes.tolist() == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(dataset.X.compute(scheduler="sync"), X)
    np.testing.assert_array_equal(dataset.classes[dataset.y.compute(scheduler="sync")], labels)

    assert_clean_success(run_cli("train", data, "--model", model, "--scheduler", cluster.address))
    # The default path: without --scheduler, evaluate starts a local cluster and must shut it
    # down before exiting, without noise on stderr and without leaving a process behind.
    marker = uuid.uuid4().hex
    predicted_path = tmp_path / "animals-predicted.zarr"
    evaluated, predicted = run_cli_many(
        ("evaluate", model, data, "--json"),
        ("predict", model, data, "--out", predicted_path, "--scheduler", cluster.address),
        env={"DSOFTMAX_TEST_MARKER": marker},
    )
    assert_clean_success(evaluated)
    assert_clean_success(predicted)
    assert not _processes_with_marker(marker)
    report = json.loads(evaluated.stdout)
    assert [row["label"] for row in report["per_class"]] == ["cat", "dog", "emu"]
    fitted = SoftmaxRegression.load(str(model))
    assert report["accuracy"] == pytest.approx(np.mean(fitted.predict(X) == labels), abs=1e-12)
    assert report["accuracy"] > 0.8
    written = zarr.open_group(str(predicted_path), mode="r")["predictions"]
    assert written[:].tolist() == fitted.predict(X).tolist()


def _processes_with_marker(marker: str, grace: float = 10.0) -> list[int]:
    """Pids of live processes whose environment holds the marker, after a short grace."""
    deadline = time.monotonic() + grace
    while True:
        found = []
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if process.environ().get("DSOFTMAX_TEST_MARKER") == marker:
                    found.append(process.pid)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


# ------------------------------------------------- the evaluation behind `dsoftmax evaluate`
@pytest.fixture(scope="module")
def three_class_model() -> tuple[SoftmaxRegression, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    X = rng.standard_normal((600, 3))
    labels = np.array(["a", "b", "c"])[np.argmax(X + 0.5 * rng.standard_normal(X.shape), axis=1)]
    return SoftmaxRegression(l2=1e-3).fit(X, labels), X, labels


def test_evaluate_model_reports_every_model_class_when_the_data_lacks_one(
    three_class_model: tuple, tmp_path: Path
) -> None:
    model, X, labels = three_class_model
    keep = labels != "b"
    weights = np.linspace(0.5, 2.0, int(keep.sum()))
    dataset = write_dataset(
        tmp_path / "ac.zarr", X[keep], labels[keep], sample_weight=weights, chunk_rows=100
    )
    assert dataset.classes.tolist() == ["a", "c"]

    report = evaluate_model(model, dataset)

    assert [row["label"] for row in report["per_class"]] == ["a", "b", "c"]
    assert report["per_class"][1]["support"] == 0
    assert report["n_samples"] == int(keep.sum())
    assert report["weight_sum"] == pytest.approx(weights.sum())
    correct = model.predict(X[keep]) == labels[keep]
    assert report["accuracy"] == pytest.approx(np.average(correct, weights=weights), abs=1e-12)
    expected_loss = log_loss(
        labels[keep], model.predict_proba(X[keep]), sample_weight=weights, labels=model.classes_
    )
    assert report["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert "b" in format_report(report)


def test_evaluate_model_scores_probability_rows_against_their_cross_entropy(
    three_class_model: tuple, tmp_path: Path
) -> None:
    model, X, _ = three_class_model
    Y = np.random.default_rng(6).dirichlet(np.ones(3), size=len(X))
    dataset = write_dataset(tmp_path / "soft.zarr", X, Y=Y, classes=["a", "b", "c"])

    report = evaluate_model(model, dataset)

    log_probs = model.predict_log_proba(X)
    assert report["loss"] == pytest.approx(-np.mean(np.sum(Y * log_probs, axis=1)), rel=1e-9)
    hits = model.predict(X) == np.array(["a", "b", "c"])[Y.argmax(axis=1)]
    assert report["accuracy"] == pytest.approx(hits.mean(), abs=1e-12)


def test_evaluate_model_refuses_classes_the_model_does_not_know(
    three_class_model: tuple, tmp_path: Path
) -> None:
    model, X, labels = three_class_model
    dataset = write_dataset(tmp_path / "z.zarr", X, np.where(labels == "c", "z", labels))
    with pytest.raises(ValueError, match=r"has classes \['z'\] that the model does not know"):
        evaluate_model(model, dataset)
