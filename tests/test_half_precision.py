"""Features stored as float16: half the bytes stored, read and held; a fit computes in float32
from them and reaches the optimum of the rounded values."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr
from daskprocs import small_local_cluster
from distributed import Client
from sklearn.linear_model import LogisticRegression

from dsoftmax import SoftmaxRegression, make_classification, open_dataset, write_dataset
from dsoftmax.engine import DaskEngine
from dsoftmax.objective import Params, loss_and_grad

L2 = 1e-3


@pytest.fixture(scope="module")
def rounded_problem():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3_000, 8)).astype(np.float32)
    y = np.argmax(X @ rng.normal(size=(8, 4)) + rng.gumbel(size=(3_000, 4)), axis=1)
    return X, y


def _objective(model, X64: np.ndarray, y: np.ndarray) -> float:
    params = Params(np.asarray(model.coef_, np.float64), np.asarray(model.intercept_, np.float64))
    return loss_and_grad(params, X64, y, L2)[0]


def test_a_float16_store_holds_float16_and_so_do_the_workers(tmp_path, rounded_problem):
    X, y = rounded_problem
    dataset = write_dataset(tmp_path / "half.zarr", X, y, chunk_rows=500, dtype="float16")
    assert dataset.X.dtype == np.float16
    assert zarr.open_group(str(tmp_path / "half.zarr"), mode="r")["X"].dtype == np.float16
    np.testing.assert_array_equal(dataset.X.compute(), X.astype(np.float16))
    with (
        small_local_cluster(2) as cluster,
        Client(cluster, set_as_default=False) as client,
        DaskEngine(client, dataset.X, dataset.y) as engine,
    ):
        engine.sums(Params(np.zeros((4, 8)), np.zeros(4)))
        held = client.gather(engine.blocks)
        assert {block.X.dtype for block in held} == {np.dtype(np.float16)}


def test_a_fit_on_float16_storage_reaches_the_optimum_of_the_rounded_values(
    tmp_path, rounded_problem
):
    X, y = rounded_problem
    dataset = write_dataset(tmp_path / "half.zarr", X, y, chunk_rows=500, dtype="float16")
    rounded = X.astype(np.float16).astype(np.float64)
    reference = LogisticRegression(C=1 / (2 * L2 * len(y)), tol=1e-12, max_iter=10_000)
    reference.fit(rounded, y)
    with small_local_cluster(2) as cluster, Client(cluster, set_as_default=False) as client:
        model = SoftmaxRegression(l2=L2, tol=1e-8, max_iter=500, client=client).fit(dataset)
    assert model.coef_.dtype == np.float32
    expected = _objective(reference, rounded, y)
    assert abs(_objective(model, rounded, y) - expected) / expected < 1e-6
    # The same model from the float16 values in memory, in this process.
    in_memory = SoftmaxRegression(l2=L2, tol=1e-8, max_iter=500).fit(X.astype(np.float16), y)
    assert abs(_objective(in_memory, rounded, y) - expected) / expected < 1e-6
    predicted = model.predict(dataset.X).compute()
    assert np.array_equal(in_memory.predict(X.astype(np.float16)), predicted)


def test_values_beyond_float16s_range_are_refused_before_writing(tmp_path, rounded_problem):
    X, y = rounded_problem
    X = X.copy()
    X[7, 2] = 1e5
    with pytest.raises(ValueError, match=r"X has values beyond float16's range \(±65504\), "
                       r"such as 100000 in row 7, column 2; use dtype='float32'"):  # fmt: skip
        write_dataset(tmp_path / "big.zarr", X, y, dtype="float16")
    assert not (tmp_path / "big.zarr").exists()
    with pytest.raises(TypeError, match="dtype must be one of"):
        write_dataset(tmp_path / "other.zarr", X, y, dtype="int8")


def test_make_data_writes_float16_from_the_command_line(tmp_path):
    url = tmp_path / "made.zarr"
    done = subprocess.run(
        [sys.executable, "-m", "dsoftmax", "make-data", str(url), "--n-samples", "2000",
         "--n-features", "6", "--n-classes", "3", "--chunk-rows", "500", "--dtype", "float16"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = open_dataset(url)
    assert made.X.dtype == np.float16
    # The labels follow the stored values: the same rows as a float32 dataset, rounded.
    full = make_classification(tmp_path / "full.zarr", 2000, 6, 3, chunk_rows=500)
    np.testing.assert_array_equal(made.X.compute(), full.X.compute().astype(np.float16))
