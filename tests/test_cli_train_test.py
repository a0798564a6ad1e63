"""``dsoftmax train --test DATA``: after the fit, the report on held-out data that
``dsoftmax evaluate`` prints for the saved model, for a single fit and for a grid; a test set
that cannot be scored is refused before any training. Real subprocesses, fits in-process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_cli import assert_clean_success, assert_one_line_error, describe, run_cli_many

from dsoftmax import make_classification

HEADER = "on the test data:\n"


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-test")
    shapes = {"train": (3000, 6, 3, 1), "test": (1000, 6, 3, 2), "narrow": (500, 5, 3, 3),
              "more-classes": (500, 6, 4, 4)}  # fmt: skip
    for name, (n_samples, n_features, n_classes, seed) in shapes.items():
        make_classification(root / f"{name}.zarr", n_samples, n_features, n_classes,
                            chunk_rows=1000, seed=seed)  # fmt: skip
    return {name: root / f"{name}.zarr" for name in shapes}


def _report_after_training(stdout: str) -> str:
    assert stdout.count(HEADER) == 1, stdout
    return stdout.split(HEADER, 1)[1]


@pytest.mark.parametrize("grid", [(), ("--l2", "1e-4,1e-2", "--cv", "2")], ids=["fit", "grid"])
def test_train_with_test_prints_the_report_evaluate_prints_for_the_saved_model(
    stores: dict[str, Path], tmp_path: Path, grid: tuple[str, ...]
) -> None:
    model = tmp_path / "model"
    (trained,) = run_cli_many(("train", stores["train"], "--model", model, "--test",
                               stores["test"], *grid))  # fmt: skip
    assert_clean_success(trained)
    (evaluated,) = run_cli_many(("evaluate", model, stores["test"]))
    assert_clean_success(evaluated)
    report = _report_after_training(trained.stdout)
    assert report == evaluated.stdout
    assert re.search(r"^samples:\s+1000$", report, flags=re.MULTILINE), describe(trained)
    assert "model saved to" in trained.stdout.split(HEADER, 1)[0]


@pytest.mark.parametrize(
    ("test_store", "message"),
    [
        ("narrow", r"--test '\S+narrow\.zarr' has 5 features but the training data '\S+' has 6"),
        ("missing", r"no Zarr group at '\S+missing\.zarr'"),
        ("more-classes", r"'\S+more-classes\.zarr' has classes \[3\] that the model does not "
                         r"know"),
    ],
)
def test_a_test_set_that_cannot_be_scored_is_refused_before_training(
    stores: dict[str, Path], tmp_path: Path, test_store: str, message: str
) -> None:
    model = tmp_path / "model"
    test = stores.get(test_store, tmp_path / f"{test_store}.zarr")
    (result,) = run_cli_many(("train", stores["train"], "--model", model, "--test", test))
    assert_one_line_error(result, 1, message)
    assert "trained" not in result.stdout
    assert not model.exists()
