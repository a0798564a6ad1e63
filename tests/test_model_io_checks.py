"""What ``evaluate``, ``predict`` and ``train --resume`` read and write, end to end: the label a
value check names, the targets ``predict`` refuses, the model files every loading path refuses,
the dtype of written probabilities and the warning of a resume that finds no checkpoint.

Real ``dsoftmax`` subprocesses (without ``--scheduler``: they run in their own process) and real
API calls, on real Zarr stores on disk.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr
from hostile import edit_manifest
from test_cli import assert_clean_success, assert_one_line_error, describe, run_cli, run_cli_many

from dsoftmax import (
    SoftmaxRegression,
    SoftmaxRegressionCV,
    make_classification,
    open_dataset,
    write_dataset,
)
from dsoftmax.evaluation import SavedWeights, evaluate_model
from dsoftmax.objective import Params
from dsoftmax.persist import ModelFileError, load_fitted_model
from dsoftmax.prediction import logits, write_predictions

N_SAMPLES, N_FEATURES, N_CLASSES, CHUNK_ROWS = 2000, 4, 3, 500


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(data, model)``: the dataset of the reproductions and the model ``train`` saves."""
    root = tmp_path_factory.mktemp("trained")
    data, model = root / "small.zarr", root / "m_small"
    made = run_cli(
        "make-data", data, "--n-samples", N_SAMPLES, "--n-features", N_FEATURES,
        "--n-classes", N_CLASSES, "--chunk-rows", CHUNK_ROWS,
    )  # fmt: skip
    assert made.returncode == 0, describe(made)
    assert_clean_success(run_cli("train", data, "--model", model))
    return data, model


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes."""
    files = (path for path in root.rglob("*") if path.is_file())
    return {str(path.relative_to(root)): path.read_bytes() for path in files}


def _weights(model: Path) -> SavedWeights:
    fitted = load_fitted_model(str(model))
    return SavedWeights(fitted.coef, fitted.intercept, fitted.classes)


# ----------------------------------------------------------- evaluate names the stored label
def test_evaluate_names_the_label_value_stored_in_the_data(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, model = trained
    bad = _copy(data, tmp_path / "bady.zarr")
    zarr.open_group(str(bad), mode="r+")["y"][1500] = 42
    pattern = r"outside \[0, 3\) in block 3 \(rows 1500 to 1999\), first 42 in row 1500"

    evaluated, predicted = run_cli_many(
        ("evaluate", model, bad), ("predict", model, bad, "--out", tmp_path / "p.zarr")
    )

    assert_one_line_error(evaluated, 1, pattern)
    assert_one_line_error(predicted, 1, pattern)
    with pytest.raises(ValueError, match=pattern):
        evaluate_model(_weights(model), open_dataset(bad))


def test_evaluate_checks_class_ids_against_the_datasets_own_classes(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    # A dataset of classes [0, 1] under a 3-class model: its id 2 is out of its own range,
    # though the model has a class at index 2.
    data, model = trained
    dataset = open_dataset(data)
    X, y = dataset.X.compute(), dataset.y.compute()
    keep = y != 2
    subset = write_dataset(tmp_path / "two.zarr", X[keep], y[keep], chunk_rows=CHUNK_ROWS)
    assert subset.classes.tolist() == [0, 1]
    zarr.open_group(str(tmp_path / "two.zarr"), mode="r+")["y"][7] = 2

    with pytest.raises(ValueError, match=r"outside \[0, 2\) in block 0 .*, first 2 in row 7"):
        evaluate_model(_weights(model), open_dataset(tmp_path / "two.zarr"))


def test_evaluate_reports_in_the_models_class_order_whatever_the_datasets(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, model = trained
    dataset = open_dataset(data)
    X, y = dataset.X.compute(), dataset.y.compute()
    reordered = write_dataset(tmp_path / "r.zarr", X, y, classes=[2, 0, 1], chunk_rows=CHUNK_ROWS)
    assert reordered.classes.tolist() == [2, 0, 1]

    expected = evaluate_model(_weights(model), dataset)
    report = evaluate_model(_weights(model), reordered)

    assert report["confusion_matrix"] == expected["confusion_matrix"]
    assert report["per_class"] == expected["per_class"]
    assert report["loss"] == pytest.approx(expected["loss"], rel=1e-6)  # float32 products
    predicted = SoftmaxRegression.load(str(model)).predict(X)
    confusion = np.zeros((N_CLASSES, N_CLASSES))
    np.add.at(confusion, (y, predicted), 1)
    assert report["confusion_matrix"] == confusion.tolist()


# ------------------------------------------------------------ the targets predict refuses
def test_predict_refuses_an_existing_directory_that_is_not_a_zarr_group(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, model = trained
    target = tmp_path / "notzarr"
    target.mkdir()
    (target / "file").write_text("the user's")
    a_file = tmp_path / "a_file"
    a_file.write_text("the user's too")

    into_directory, into_file = run_cli_many(
        ("predict", model, data, "--out", target), ("predict", model, data, "--out", a_file)
    )

    assert_one_line_error(into_directory, 1, r"'.*notzarr' exists and is not a Zarr group")
    assert_one_line_error(into_file, 1, r"'.*a_file' exists and is not a Zarr group")
    assert sorted(path.name for path in target.iterdir()) == ["file"]
    assert a_file.read_text() == "the user's too"
    with pytest.raises(FileExistsError, match=r"exists and is not a Zarr group"):
        write_predictions(_weights(model), open_dataset(data), target)
    assert sorted(path.name for path in target.iterdir()) == ["file"]


def test_predict_refuses_to_write_into_its_input_dataset(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, model = trained
    copy = _copy(data, tmp_path / "input.zarr")
    before = _tree(copy)

    itself, inside = run_cli_many(
        ("predict", model, copy, "--out", copy),
        ("predict", model, copy, "--out", f"{tmp_path}/./input.zarr/X"),
    )

    assert_one_line_error(itself, 1, r"the output '.*input.zarr' is the dataset '.*input.zarr'")
    assert_one_line_error(inside, 1, r"is inside the dataset '.*input.zarr'")
    with pytest.raises(ValueError, match=r"refusing to write predictions into the input data"):
        write_predictions(_weights(model), open_dataset(copy), str(copy), overwrite=True)
    assert _tree(copy) == before


def test_predict_checks_its_target_before_it_reads_the_data(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    # Non-finite features fail the value checks: a target error first means no data was read.
    data, model = trained
    nan_data = _copy(data, tmp_path / "nan.zarr")
    zarr.open_group(str(nan_data), mode="r+")["X"][3, 0] = np.nan
    done = tmp_path / "done.zarr"
    assert_clean_success(run_cli("predict", model, data, "--out", done))

    # One after the other: the second rewrites the target the first must find filled.
    again = run_cli("predict", model, nan_data, "--out", done)
    overwritten = run_cli("predict", model, data, "--out", done, "--overwrite", "--proba")

    assert_one_line_error(
        again, 1, r"'.*done.zarr' already has an array 'predictions'; pass --overwrite"
    )
    assert overwritten.returncode == 0, describe(overwritten)
    assert set(zarr.open_group(str(done), mode="r")) == {"predictions", "probabilities"}
    with pytest.raises(FileExistsError, match=r"pass overwrite=True"):
        write_predictions(_weights(model), open_dataset(nan_data), done)


def test_predict_writes_into_a_new_path_or_an_empty_directory(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, model = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    write_predictions(_weights(model), open_dataset(data), empty)
    write_predictions(_weights(model), open_dataset(data), tmp_path / "new.zarr")
    for target in (empty, tmp_path / "new.zarr"):
        assert zarr.open_group(str(target), mode="r")["predictions"].shape == (N_SAMPLES,)


# ------------------------------------------------------- model files every path refuses
def test_predictions_without_probabilities_remove_the_stale_ones(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, model = trained
    target = tmp_path / "p.zarr"
    write_predictions(_weights(model), open_dataset(data), target, probabilities=True)
    assert set(zarr.open_group(str(target), mode="r").array_keys()) == {
        "predictions", "probabilities",
    }  # fmt: skip
    write_predictions(_weights(model), open_dataset(data), target, overwrite=True)
    assert set(zarr.open_group(str(target), mode="r").array_keys()) == {"predictions"}


def _edited_model(model: Path, target: Path, change: Callable[[dict], object]) -> Path:
    edit_manifest(_copy(model, target), change)
    return target


def _string_classes(manifest: dict) -> None:
    manifest.update(classes=["a", "b", "a"], classes_dtype="<U1")


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (
            lambda manifest: manifest["params"].update(l2=-1),
            r"holds a refused setting: l2 must be in \[0, inf\), got -1.* 'params.l2' of its "
            r"manifest.json",
        ),
        (
            lambda manifest: manifest["params"].update(solver="bogus"),
            r"holds a refused setting: solver must be one of .*'bogus'.* 'params.solver'",
        ),
        (
            lambda manifest: manifest["params"].update(nesterov=True, momentum=0.0),
            # The command line names the setting as its option, Python as its parameter.
            r"holds a refused setting: (nesterov=True|--nesterov) needs momentum > 0.* "
            r"'params.nesterov'",
        ),
        (
            _string_classes,
            r"'classes' in the manifest of '.*edited' \(manifest.json\) lists the class 'a' "
            r"more than once",
        ),
    ],
    ids=["negative-l2", "unknown-solver", "nesterov-without-momentum", "duplicate-classes"],
)
def test_every_loading_path_refuses_the_same_model_files(
    trained: tuple[Path, Path], tmp_path: Path, change: Callable, pattern: str
) -> None:
    data, model = trained
    edited = _edited_model(model, tmp_path / "edited", change)

    evaluated, predicted, plotted = run_cli_many(
        ("evaluate", edited, data),
        ("predict", edited, data, "--out", tmp_path / "p.zarr"),
        ("plot", edited, "--out", tmp_path / "curves.png"),
    )

    for result in (evaluated, predicted, plotted):
        assert_one_line_error(result, 1, pattern)
    assert not (tmp_path / "p.zarr").exists()
    for load in (load_fitted_model, SoftmaxRegression.load):
        with pytest.raises(ModelFileError, match=pattern):
            load(str(edited))


@pytest.mark.parametrize(
    ("name", "value", "other"), [("nesterov", True, "momentum"), ("momentum", 0.0, "nesterov")]
)
def test_model_files_load_with_either_nesterov_setting_alone(
    trained: tuple[Path, Path], tmp_path: Path, name: str, value: object, other: str
) -> None:
    # The other one's default (momentum=0.9, nesterov=False) agrees with it.
    _, model = trained

    def change(manifest: dict) -> None:
        manifest["params"][name] = value
        del manifest["params"][other]

    edited = _edited_model(model, tmp_path / "edited", change)

    assert load_fitted_model(str(edited)).params[name] == value
    assert getattr(SoftmaxRegression.load(str(edited)), name) == value


def test_saved_classes_are_read_back_in_their_order(trained: tuple[Path, Path]) -> None:
    _, model = trained
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["classes"] == list(range(N_CLASSES))
    assert load_fitted_model(str(model)).classes.tolist() == list(range(N_CLASSES))


# ------------------------------------------------------------- the probabilities' dtype
def test_predict_writes_float32_probabilities_for_float16_data(tmp_path: Path) -> None:
    data, model, out = tmp_path / "tr16.zarr", tmp_path / "m16", tmp_path / "p.zarr"
    made = run_cli(
        "make-data", data, "--dtype", "float16", "--n-samples", N_SAMPLES,
        "--n-features", N_FEATURES, "--n-classes", N_CLASSES,
    )  # fmt: skip
    assert made.returncode == 0, describe(made)
    assert_clean_success(run_cli("train", data, "--model", model))

    assert_clean_success(run_cli("predict", model, data, "--out", out, "--proba"))

    probabilities = zarr.open_group(str(out), mode="r")["probabilities"][:]
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert probabilities.min() > 0
    expected = SoftmaxRegression.load(str(model)).predict_proba(open_dataset(data))
    assert expected.dtype == np.float32
    np.testing.assert_allclose(probabilities, expected.compute(scheduler="sync"), rtol=1e-6)


@pytest.mark.parametrize(("stored", "computed"), [("float64", np.float64), ("float32", np.float32)])
def test_probabilities_are_written_in_the_compute_dtype(
    trained: tuple[Path, Path], tmp_path: Path, stored: str, computed: type
) -> None:
    _, model = trained
    dataset = make_classification(
        tmp_path / "d.zarr", 600, N_FEATURES, N_CLASSES, chunk_rows=200, dtype=stored
    )
    fitted = load_fitted_model(str(model))
    scores = logits(Params(fitted.coef, fitted.intercept), dataset.X)
    assert scores.dtype == computed

    write_predictions(_weights(model), dataset, tmp_path / "p.zarr", probabilities=True)

    written = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["probabilities"]
    assert written.dtype == computed


# ------------------------------------------------------- a resume that finds no checkpoint
def test_resume_without_a_checkpoint_warns_and_starts_a_fresh_fit(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = trained
    empty = tmp_path / "empty_checkpoints"
    empty.mkdir()
    train = ("train", data, "--model")

    missing, empty_dir = run_cli_many(
        (*train, tmp_path / "m1", "--checkpoint-dir", tmp_path / "ck_typo", "--resume"),
        (*train, tmp_path / "m2", "--checkpoint-dir", empty, "--resume"),
    )

    for result, directory in ((missing, tmp_path / "ck_typo"), (empty_dir, empty)):
        assert result.returncode == 0, describe(result)
        assert result.stderr == (
            f"dsoftmax: warning: RuntimeWarning: resume found no checkpoint in {directory}; "
            "starting a fresh fit\n"
        ), describe(result)
        assert "trained lbfgs on 2000 rows" in result.stdout
    # The same command again continues from the checkpoints the first run wrote: no warning.
    resumed = run_cli(*train, tmp_path / "m1", "--checkpoint-dir", tmp_path / "ck_typo", "--resume")
    assert_clean_success(resumed)


@pytest.mark.parametrize("estimator", [SoftmaxRegression, SoftmaxRegressionCV])
def test_resume_in_python_without_a_checkpoint_warns_and_fits(tmp_path: Path, estimator) -> None:
    X = np.random.default_rng(0).normal(size=(120, 3))
    y = np.arange(120) % 3
    directory = tmp_path / "nothing_here"
    settings = {"checkpoint_dir": str(directory), "max_iter": 5, "checkpoint_every": 1}
    model = estimator(**settings)
    with pytest.warns(RuntimeWarning, match=r"resume found no checkpoint in \S*nothing_here; "
                      "starting a fresh fit"), warnings.catch_warnings():  # fmt: skip
        warnings.simplefilter("ignore", UserWarning)  # not converged in 5 iterations
        model.fit(X, y, resume=True)
    assert model.coef_.shape == (3, 3)
    # Its checkpoints are there now: resuming again says nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", RuntimeWarning)
        estimator(**settings).fit(X, y, resume=True)
