"""What the commands import before they work: ``dsoftmax train``, ``evaluate``, ``predict``
and ``convert`` in this process start without scikit-learn, distributed and pandas, whose
imports would be a third of a small command's time; and the trainer behind ``dsoftmax train``
fits the model ``SoftmaxRegression`` fits, bit for bit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dsoftmax import SoftmaxRegression, make_classification, open_dataset
from dsoftmax.trainer import SoftmaxTrainer

COMMAND_TIMEOUT = 120.0
#: Prints, after the command, which of these packages the process imported.
SCRIPT = (
    "import sys; from dsoftmax.cli import main; code = main(sys.argv[1:]); "
    "print(sorted({'sklearn', 'distributed', 'pandas', 'scipy.optimize'} & set(sys.modules))); "
    "sys.exit(code)"
)


def run_command(*argv: object) -> tuple[str, str]:
    """The command's output and the heavy packages it imported."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *map(str, argv)],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed, imported = done.stdout.rstrip().rsplit("\n", 1)
    return printed, imported


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("start") / "train.zarr"
    make_classification(path, 3000, 12, 4, chunk_rows=1000, seed=0)
    return path


def test_train_evaluate_and_predict_in_this_process_import_no_heavy_package(
    store: Path, tmp_path: Path
) -> None:
    printed, imported = run_command(
        "train", store, "--model", tmp_path / "model", "--l2", "1e-3", "--seed", "0"
    )
    assert imported == "['scipy.optimize']", printed  # L-BFGS; loading a model needs none of it
    assert printed.startswith("trained lbfgs on 3000 rows")
    printed, imported = run_command("evaluate", tmp_path / "model", store, "--json")
    assert imported == "[]", printed
    out = tmp_path / "predictions.zarr"
    printed, imported = run_command("predict", tmp_path / "model", store, "--out", out, "--proba")
    assert imported == "[]", printed
    assert printed == f"wrote predictions and probabilities for 3000 rows to {out}"

    saved = SoftmaxRegression.load(str(tmp_path / "model"))
    fitted = SoftmaxRegression(l2=1e-3, random_state=0).fit(open_dataset(store))
    np.testing.assert_array_equal(saved.coef_, fitted.coef_)
    np.testing.assert_array_equal(saved.intercept_, fitted.intercept_)
    assert saved.n_iter_ == fitted.n_iter_
    assert saved.loss_curve_ == fitted.loss_curve_


def test_convert_of_parquet_in_this_process_imports_no_heavy_package(tmp_path: Path) -> None:
    X = np.random.default_rng(0).standard_normal((500, 8)).astype(np.float32)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 8)
    pq.write_table(pa.table({"embedding": embedding, "label": np.arange(500) % 3}),
                   tmp_path / "part.parquet")  # fmt: skip
    printed, imported = run_command(
        "convert", tmp_path / "part.parquet", "--out", tmp_path / "out.zarr",
        "--label-column", "label", "--embedding-column", "embedding",
    )  # fmt: skip
    assert imported == "[]", printed
    np.testing.assert_array_equal(open_dataset(tmp_path / "out.zarr").X.compute(), X)


def test_train_and_test_on_parquet_files_in_this_process_import_no_distributed(tmp_path):
    rng = np.random.default_rng(1)
    for name, n_rows in (("train", 600), ("test", 200)):
        X = rng.standard_normal((n_rows, 6)).astype(np.float32)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), 6)
        labels = np.array(["cat", "dog", "eel"])[np.argmax(X[:, :3], axis=1)]
        pq.write_table(pa.table({"embedding": embedding, "label": labels}),
                       tmp_path / f"{name}.parquet", row_group_size=250)  # fmt: skip
    printed, imported = run_command(
        "train", tmp_path / "train.parquet", "--model", tmp_path / "model",
        "--test", tmp_path / "test.parquet", "--label-column", "label",
        "--embedding-column", "embedding",
    )  # fmt: skip
    # The label pass of each set's row groups runs in threads: no client to look for.
    assert imported == "['scipy.optimize']", printed
    assert "accuracy:" in printed


def test_the_program_passes_on_the_commands_exit_code_with_its_heap_frozen(tmp_path) -> None:
    script = (
        "import atexit, gc, sys; from dsoftmax.cli import run\n"
        "atexit.register(lambda: print(gc.get_freeze_count() > 0, gc.get_threshold()[0]))\n"
        "sys.argv[0] = 'dsoftmax'; run()"
    )
    for argv, code in (
        (["evaluate", tmp_path / "no-model", tmp_path / "no.zarr"], 1),
        (["train", "--l2", "-1"], 2),
        (["--version"], 0),
    ):
        done = subprocess.run(
            [sys.executable, "-c", script, *map(str, argv)],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False,
        )  # fmt: skip
        assert done.returncode == code, done.stderr
        assert done.stdout.rstrip().rsplit("\n", 1)[-1] == "True 10000", done.stdout


def test_the_trainer_has_the_estimators_parameters_and_refuses_to_save_unfitted(tmp_path):
    assert SoftmaxTrainer().get_params() == SoftmaxRegression().get_params()
    assert SoftmaxTrainer(l2=0.5, solver="sgd").get_params()["solver"] == "sgd"
    assert SoftmaxTrainer.convergence_warning is UserWarning
    with pytest.raises(ValueError, match="not fitted yet: call fit before save"):
        SoftmaxTrainer().save(str(tmp_path / "model"))
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(("given", "expected"), [(None, "0"), ("1", "1")])
def test_commands_run_without_numpys_huge_page_requests_unless_told(given, expected) -> None:
    import os

    environment = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if given is not None:
        environment["NUMPY_MADVISE_HUGEPAGE"] = given
    script = (
        "import os, sys, contextlib; from dsoftmax.cli import main\n"
        "with contextlib.suppress(SystemExit): main(sys.argv[1:])\n"
        "print('numpy' in sys.modules, os.environ.get('NUMPY_MADVISE_HUGEPAGE'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "make-data", "--help"],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False, env=environment,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # Set before NumPy loaded (it reads the variable once, when imported); the user's value wins.
    assert done.stdout.rstrip().rsplit("\n", 1)[-1] == f"False {expected}"
