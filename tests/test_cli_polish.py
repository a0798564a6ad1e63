"""The command line's own wording: a warning for each option given that the command ignores,
errors that name the command's options rather than the library's Python parameters, and
``dsoftmax --version``."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from dsoftmax import make_classification
from dsoftmax.cli.output import command_line_wording

COMMAND_TIMEOUT = 120.0
#: The warning line of an ignored option.
IGNORED = re.compile(r"^dsoftmax: warning: (--[a-z-]+) is ignored (by|without|here) ")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("polish") / "small.zarr"
    make_classification(path, 2000, 4, 3, chunk_rows=500, seed=0)
    return path


def ignored(stderr: str) -> list[str]:
    """The options that the warnings on ``stderr`` name as ignored, in order."""
    return [match[1] for line in stderr.splitlines() if (match := IGNORED.match(line))]


def assert_one_line_error(code: int, stderr: str, exit_code: int, pattern: str) -> str:
    assert code == exit_code, stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith("dsoftmax: error: ") and re.search(pattern, stderr), stderr
    return stderr


# ------------------------------------------------------------------------ ignored options
MINIBATCH_OPTIONS = (
    "--batch-size", "100", "--learning-rate", "0.1", "--lr-schedule", "cosine",
    "--shuffle-window", "500", "--early-stopping", "--momentum", "0.5", "--nesterov",
    "--validation-fraction", "0.2",
)  # fmt: skip
GRID_OPTIONS = ("--no-refit", "--scoring", "accuracy", "--grid-memory", "1GiB")


def test_options_that_lbfgs_and_a_single_fit_ignore_are_each_named_once(
    store, tmp_path, run_cli_here
):
    code, stdout, stderr = run_cli_here(
        "train", store, "--model", tmp_path / "model", *MINIBATCH_OPTIONS, *GRID_OPTIONS,
        "--keep-checkpoints", "2", "--seed", "3",
    )  # fmt: skip
    assert code == 0, stderr
    assert stdout.startswith("trained lbfgs on 2000 rows")
    assert ignored(stderr) == [
        "--batch-size", "--learning-rate", "--lr-schedule", "--shuffle-window",
        "--early-stopping", "--momentum", "--nesterov", "--validation-fraction", "--no-refit",
        "--scoring", "--grid-memory", "--keep-checkpoints", "--seed",
    ]  # fmt: skip
    assert len(stderr.splitlines()) == 13, stderr
    assert (
        "dsoftmax: warning: --batch-size is ignored by --solver lbfgs (it sets the minibatch "
        "size of sgd and adam)\n" in stderr
    )
    assert (
        "--scoring is ignored without a grid (--cv, several --l2 or --learning-rate values, or "
        "--l2-grid)" in stderr
    )


def test_defaults_and_options_in_use_are_not_named(store, tmp_path, run_cli_here):
    code, _, stderr = run_cli_here("train", store, "--model", tmp_path / "lbfgs")
    assert (code, stderr) == (0, "")
    code, _, stderr = run_cli_here(
        "train", store, "--model", tmp_path / "sgd", "--solver", "sgd", "--max-iter", "20",
        "--tol", "1", *MINIBATCH_OPTIONS,
    )  # fmt: skip
    assert (code, stderr) == (0, "")


def test_an_option_given_at_its_default_or_abbreviated_is_named(store, tmp_path, run_cli_here):
    code, _, stderr = run_cli_here(
        "train", store, "--model", tmp_path / "model", "--batch-size", "8192", "--mom", "0.9"
    )
    assert code == 0, stderr
    assert ignored(stderr) == ["--batch-size", "--momentum"]


def test_adam_ignores_the_options_of_sgd(store, tmp_path, run_cli_here):
    code, _, stderr = run_cli_here(
        "train", store, "--model", tmp_path / "model", "--solver", "adam", "--max-iter", "20",
        "--tol", "1", "--momentum", "0.5", "--batch-size", "100",
    )  # fmt: skip
    assert code == 0, stderr
    assert stderr == (
        "dsoftmax: warning: --momentum is ignored by --solver adam (it sets the momentum of sgd)\n"
    )


def test_a_grid_uses_its_options_and_names_the_ones_it_ignores(store, tmp_path, run_cli_here):
    code, _, stderr = run_cli_here(
        "train", store, "--model", tmp_path / "lbfgs", "--cv", "2", "--max-iter", "5",
        *GRID_OPTIONS,
    )  # fmt: skip
    assert code == 0, stderr
    assert ignored(stderr) == []
    code, _, stderr = run_cli_here(
        "train", store, "--model", tmp_path / "sgd", "--solver", "sgd", "--cv", "validation",
        "--validation-fraction", "0.2", "--max-iter", "20", "--tol", "1", *GRID_OPTIONS,
    )  # fmt: skip
    assert code == 0, stderr
    assert ignored(stderr) == ["--grid-memory"]


def test_ignored_options_do_not_add_lines_to_a_usage_error(store, tmp_path, run_cli_here):
    code, _, stderr = run_cli_here(
        "train", store, "--model", tmp_path / "model", "--nesterov", "--momentum", "0",
        "--batch-size", "10",
    )  # fmt: skip
    assert_one_line_error(code, stderr, 2, r"--nesterov needs --momentum > 0")


def test_tls_files_without_a_scheduler_are_named_and_refused_with_tcp(tmp_path, run_cli_here):
    tls = ("--tls-ca-file", tmp_path / "ca.pem", "--tls-cert", tmp_path / "c.pem",
           "--tls-key", tmp_path / "c.key")  # fmt: skip
    code, stdout, stderr = run_cli_here(
        "make-data", tmp_path / "d.zarr", "--n-samples", "100", "--n-features", "2", *tls,
        "--scheduler-timeout", "5",
    )  # fmt: skip
    assert code == 0, stderr
    assert stdout.startswith("wrote 100 x 2")
    assert ignored(stderr) == ["--tls-ca-file", "--tls-cert", "--tls-key", "--scheduler-timeout"]
    assert "--tls-key is ignored without --scheduler" in stderr
    # With a scheduler the files are used: checked, and never ignored.
    code, _, stderr = run_cli_here(
        "make-data", tmp_path / "e.zarr", "--scheduler", "tcp://127.0.0.1:9", *tls
    )
    assert_one_line_error(code, stderr, 1, r"--tls-ca-file file not found")


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_a_fit_stopped_at_max_iter_is_said_once_even_with_v(store, tmp_path, solver, run_cli_here):
    code, stdout, stderr = run_cli_here(
        "train", store, "--model", tmp_path / "model", "--solver", solver, "--max-iter", "2", "-v"
    )
    assert code == 0, stderr
    assert "stopped at max_iter" in stdout
    said = [line for line in stderr.splitlines() if "converge" in line]
    assert len(said) == 1, stderr
    assert said[0].startswith(f"dsoftmax: warning: {solver} did not converge in max_iter=2 ")
    assert said[0].endswith("increase --max-iter or --tol to let it converge")


def test_plot_without_data_names_the_cluster_options_it_ignores(store, tmp_path, run_cli_here):
    pytest.importorskip("matplotlib")
    code, _, stderr = run_cli_here("train", store, "--model", tmp_path / "model")
    assert code == 0, stderr
    # Port 9 (discard) has no scheduler: plotting the curves alone never connects.
    code, stdout, stderr = run_cli_here(
        "plot", tmp_path / "model", "--out", tmp_path / "curves.png",
        "--scheduler", "tcp://127.0.0.1:9", "--scheduler-timeout", "1",
    )  # fmt: skip
    assert code == 0, stderr
    assert stdout.startswith("wrote training curves to ")
    assert ignored(stderr) == ["--scheduler", "--scheduler-timeout"]
    assert "--scheduler is ignored without --data" in stderr
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon"])
def test_a_scheduler_timeout_that_is_not_a_positive_number_is_a_usage_error(
    store, value, run_cli_here
):
    code, _, stderr = run_cli_here(
        "evaluate", "model", store, "--scheduler", "tcp://127.0.0.1:9",
        "--scheduler-timeout", value,
    )  # fmt: skip
    assert code == 2, stderr
    assert "--scheduler-timeout" in stderr and repr(value) in stderr, stderr


# ------------------------------------------------------------------ errors in option names
def test_checkpoint_errors_name_the_options(store, tmp_path, run_cli_here):
    checkpoints = tmp_path / "checkpoints"
    train = ("train", store, "--model", tmp_path / "model", "--checkpoint-dir", checkpoints)
    code, _, stderr = run_cli_here(*train, "--l2", "1e-3")
    assert (code, stderr) == (0, "")
    code, _, stderr = run_cli_here(*train, "--l2", "1e-3")
    assert_one_line_error(
        code, stderr, 1, r"--checkpoint-dir '.*checkpoints' already holds checkpoints "
        r"\(newest: step \d+\); pass --resume to continue that fit",
    )  # fmt: skip
    assert "resume=" not in stderr and "checkpoint_dir" not in stderr
    code, _, stderr = run_cli_here(*train, "--l2", "1e-2", "--resume")
    assert_one_line_error(
        code, stderr, 1, r"was made with --l2 0\.001, this fit has --l2 0\.01; resume with the "
        r"same settings, or start afresh in another \(or an emptied\) --checkpoint-dir\.",
    )  # fmt: skip


def test_overwrite_errors_name_the_option(store, tmp_path, run_cli_here):
    code, _, stderr = run_cli_here("make-data", store, "--n-samples", "10")
    assert_one_line_error(code, stderr, 1, r"already exists; pass --overwrite to replace it")
    assert "overwrite=True" not in stderr


def test_a_streamed_minibatch_fit_names_shuffle_window(store, tmp_path, run_cli_here):
    code, _, stderr = run_cli_here(
        "train", store, "--model", tmp_path / "model", "--solver", "sgd", "--hold-data", "stream"
    )
    assert_one_line_error(code, stderr, 1, r"\(--hold-data stream: .* Set --shuffle-window ")
    assert "shuffle_window" not in stderr and "hold_data" not in stderr


def test_more_folds_than_rows_is_a_usage_error(store, tmp_path, run_cli_here):
    code, _, stderr = run_cli_here("train", store, "--model", tmp_path / "model", "--cv", "5000")
    assert_one_line_error(
        code, stderr, 2, r"--cv 5000 needs at least 5000 rows; '.*small\.zarr' has 2000\. Give "
        r"fewer folds, or --cv validation\.",
    )  # fmt: skip
    assert not (tmp_path / "model").exists()


def test_npz_refusals_give_advice_the_command_line_can_follow(tmp_path, run_cli_here):
    np.savez(tmp_path / "ints.npz", X=np.arange(20).reshape(10, 2), y=np.arange(10) % 2)
    code, _, stderr = run_cli_here("convert", tmp_path / "ints.npz", "--out", tmp_path / "a.zarr")
    assert_one_line_error(code, stderr, 1, r"X must be float32 or float64, got dtype int64.*"
                          r"save the array as float32 or float64")  # fmt: skip
    assert "dtype=" not in stderr
    np.savez(tmp_path / "one.npz", X=np.ones((10, 2), np.float32), y=np.zeros(10, np.int64))
    code, _, stderr = run_cli_here("convert", tmp_path / "one.npz", "--out", tmp_path / "b.zarr")
    assert_one_line_error(code, stderr, 1, r"needs at least 2 classes.*Add rows of the other")
    assert "classes=[" not in stderr


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("pass resume=True to go on", "pass --resume to go on"),
        ("with random_state=3 and class_weight=None", "with --seed 3 and no --class-weight"),
        ("made with solver='sgd'.", "made with --solver sgd."),
        ("Check label_column / feature_columns / embedding_column.",
         "Check --label-column / --feature-columns / --embedding-column."),
        # Paths, quoted names, other identifiers and bare words stay as they are.
        ("at '/tmp/checkpoint_dir/x' or 'l2=1'", "at '/tmp/checkpoint_dir/x' or 'l2=1'"),
        ("my_shuffle_window, n_splits=3, resume the cv", "my_shuffle_window, n_splits=3, "
         "resume the cv"),
    ],
)  # fmt: skip
def test_command_line_wording_translates_parameters_only(message, expected):
    assert command_line_wording(message) == expected


# ---------------------------------------------------------------------------------- version
@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_the_installed_version(flag, run_cli_here):
    assert run_cli_here(flag) == (0, f"dsoftmax {version('dsoftmax')}\n", "")


def test_version_imports_neither_numpy_nor_dask():
    script = (
        "import sys; from dsoftmax.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit as exit_:\n    code = exit_.code\n"
        "print(code, sorted({'numpy', 'dask', 'zarr'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"dsoftmax {version('dsoftmax')}", "0 []"]
