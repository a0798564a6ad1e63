"""``dsoftmax train`` with a grid (``--l2 a,b,c``, ``--l2-grid N``, ``--cv``): the table of
held-out scores, the choice, the saved model, ``dsoftmax plot`` of it, and the refusals; real
subprocesses on a real ``dask scheduler`` with two workers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from daskprocs import DaskProcesses, dask_processes
from matplotlib.image import imread
from test_cli import assert_clean_success, assert_one_line_error, describe, run_cli_many

from dsoftmax import SoftmaxRegression, SoftmaxRegressionCV, make_classification

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskProcesses]:
    with dask_processes(n_workers=2) as procs:
        yield procs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "train.zarr"
    make_classification(path, 3000, 6, 3, chunk_rows=1000, seed=0)
    return path


def _table(stdout: str) -> list[list[str]]:
    """The rows of the printed table: lines that start with a number."""
    return [line.split() for line in stdout.splitlines() if re.match(r"\s*[\d.]+(e-?\d+)?\s", line)]


@pytest.mark.slow
def test_a_grid_prints_its_table_marks_the_choice_and_saves_it(data, cluster, tmp_path):
    listed, counted = tmp_path / "listed", tmp_path / "counted"
    scheduler = ("--scheduler", cluster.address)
    results = run_cli_many(
        ("train", data, "--model", listed, "--l2", "1e-6,1e-4,1e-2", "--cv", 3, "--seed", 0,
         *scheduler),
        ("train", data, "--model", counted, "--l2-grid", 4, "--cv", "validation",
         "--scoring", "accuracy", "--grid-memory", "2kB", "-v", *scheduler),
    )  # fmt: skip
    assert_clean_success(results[0])
    rows = _table(results[0].stdout)
    assert [row[0] for row in rows] == ["1e-06", "0.0001", "0.01"], describe(results[0])
    assert all(len(row) in (3, 5) for row in rows)  # l2, mean, std [, <- chosen]
    (chosen,) = [row for row in rows if row[-1] == "chosen"]
    model = SoftmaxRegressionCV.load(str(listed))
    assert float(chosen[0]) == model.l2_
    np.testing.assert_allclose([float(row[1]) for row in rows], model.scores_.mean(axis=0),
                               atol=1e-6)  # fmt: skip
    assert "3-fold stratified" in results[0].stdout
    assert re.search(rf"trained 9 grid models on 3000 rows in [\d.]+ s, chose l2={chosen[0]}; "
                     r"refit on every row: \d+ iterations?, final loss [\d.]+; model saved to ",
                     results[0].stdout), describe(results[0])  # fmt: skip
    assert SoftmaxRegression.load(str(listed)).l2 == model.l2_

    assert results[1].returncode == 0, describe(results[1])
    rows = _table(results[1].stdout)
    assert len(rows) == 4
    assert all(len(row) in (4, 6) for row in rows)  # and the one split's column, with -v
    assert "held-out accuracy" in results[1].stdout
    assert SoftmaxRegressionCV.load(str(counted)).scores_.shape == (1, 4)

    png = tmp_path / "curve.png"
    plotted = run_cli_many(("plot", listed, "--out", png))[0]
    assert_clean_success(plotted)
    assert imread(png).shape[1] > imread(png).shape[0]  # the curve beside the refit's loss


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--l2", "1e-3", "--l2-grid", 3), "either --l2 values or --l2-grid"),
        (("--l2", "1e-3,1e-2", "--learning-rate", "0.1,0.2"), "need --solver sgd or adam"),
        (("--cv", 3, "--early-stopping"), "Drop --early-stopping"),
        (("--l2", "1e-3,-1"), "--l2"),
        (("--cv", 1), "--cv: must be at least 2 folds"),
        (("--cv", "many"), "--cv: must be a number of folds"),
        (("--cv", 3, "--grid-memory", "lots"), "--grid-memory must be a size such as '2GiB'"),
    ],
)
def test_bad_grid_options_are_one_line_usage_errors(data, tmp_path, options, message):
    (result,) = run_cli_many(("train", data, "--model", tmp_path / "m", *options))
    assert_one_line_error(result, 2, re.escape(message) if "--cv:" not in message else message)
    assert not (tmp_path / "m").exists()


def test_a_grid_over_learning_rates_names_the_chosen_rate(data, tmp_path):
    (result,) = run_cli_many(
        ("train", data, "--model", tmp_path / "m", "--solver", "sgd", "--l2", "1e-4,1e-3",
         "--learning-rate", "0.1,0.01", "--cv", 2, "--max-iter", 2),
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    model = SoftmaxRegressionCV.load(str(tmp_path / "m"))
    assert re.search(rf"chose l2={model.l2_:.6g}, learning rate={model.learning_rate_:.6g}; refit",
                     result.stdout), describe(result)  # fmt: skip
