"""A grid on sparse features: ``SoftmaxRegressionCV`` and ``dsoftmax train --cv`` on CSR input,
a converted svmlight file and a sparse Zarr store on two workers. Every (λ, fold) model is
scikit-learn's fit of its fold, the sparse grid equals the dense grid on the same rows, and the
stacked sparse kernel equals the sparse block kernel model by model."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse
from distributed import Client, LocalCluster
from sklearn.datasets import dump_svmlight_file
from sklearn.exceptions import ConvergenceWarning
from test_estimator_cv import assert_every_model_is_scikit_learns_fit_of_its_fold

from dsoftmax import SoftmaxRegression, SoftmaxRegressionCV, open_dataset, write_dataset
from dsoftmax.data import make_bag_of_words
from dsoftmax.kernels import sparse
from dsoftmax.kernels.stacked import ROLE_HELD_OUT, ROLE_TRAIN, Stack, prepare_stack, stack_sums
from dsoftmax.kernels.stacked_sparse import (
    prepare_sparse_stack,
    sparse_stack_metrics,
    sparse_stack_sums,
)
from dsoftmax.objective import Params

L2S = [1e-4, 1e-3, 1e-2]
TIGHT = {"tol": 1e-10, "max_iter": 2000}


@pytest.fixture(scope="module")
def bag():
    """Hashed-text rows: 900 documents, 512 columns, 3 classes, ~20 words each."""
    return make_bag_of_words(900, 2**9, 3, nnz_per_row=20, seed=2, dtype="float64")


def test_every_sparse_grid_model_is_scikit_learns_fit_of_its_fold(bag):
    X, y = bag
    search = SoftmaxRegressionCV(l2s=L2S, cv=3, random_state=0, **TIGHT).fit(X, y)
    assert_every_model_is_scikit_learns_fit_of_its_fold(search, X, y, L2S, "neg_log_loss")


@pytest.mark.parametrize(
    "settings",
    [
        {"cv": 3},
        {"cv": "validation", "class_weight": "balanced"},
        {"cv": 2, "solver": "sgd", "learning_rates": [0.1, 0.02], "max_iter": 2, "batch_size": 64},
    ],
    ids=["folds", "validation-weighted", "sgd"],
)
def test_the_sparse_grid_equals_the_dense_grid_on_the_same_rows(bag, settings):
    X, y = bag
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    models = []
    for features in (X, X.toarray()):
        search = SoftmaxRegressionCV(l2s=L2S, random_state=0, **settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            models.append(search.fit(features, y, sample_weight=weights))
    sparse_fit, dense_fit = models
    # The two kernels round their products differently (1e-16 relative); L-BFGS's stopping
    # test amplifies that to ~1e-10 in the scores.
    np.testing.assert_allclose(sparse_fit.scores_, dense_fit.scores_, rtol=0, atol=1e-8)
    assert sparse_fit.l2_ == dense_fit.l2_
    np.testing.assert_allclose(sparse_fit.coef_, dense_fit.coef_, rtol=0, atol=1e-6)


def _takes(stack: Stack, codes: np.ndarray, j: int, role: int) -> np.ndarray:
    """Which evaluated rows model ``j`` takes in ``role`` (every row for EVERY_ROW)."""
    split = stack.splits[j]
    return np.ones(len(codes), bool) if split < 0 else stack.roles[codes, split] == role


def test_the_stacked_sparse_kernel_is_the_block_kernel_model_by_model(bag):
    X, y = bag
    rng = np.random.default_rng(1)
    m, K, d = 4, 3, X.shape[1]
    # Codes 0, 1, 2: trains split 0 and is held out by split 1; the reverse; trains split 0 only.
    roles = [[ROLE_TRAIN, ROLE_HELD_OUT], [ROLE_HELD_OUT, ROLE_TRAIN], [ROLE_TRAIN, 0]]
    stack = Stack(rng.normal(0, 0.1, (m, K, d)), rng.normal(0, 0.1, (m, K)),
                  np.array([-1, 0, 1, 1]), np.array(roles, dtype=np.uint8))  # fmt: skip
    codes = rng.integers(0, 3, X.shape[0]).astype(np.uint8)
    weights = rng.uniform(0.5, 2.0, X.shape[0])
    prepared, dense_prepared = prepare_sparse_stack(stack, X.dtype), prepare_stack(stack, X.dtype)
    for rows in (None, np.sort(rng.choice(X.shape[0], 200, replace=False))):
        local = np.arange(X.shape[0]) if rows is None else rows
        inputs = (y[local], weights[local], codes[local])
        sums = sparse_stack_sums(prepared, X, *inputs, rows=rows)
        dense = stack_sums(dense_prepared, X.toarray(), *inputs, rows=rows)
        metrics = sparse_stack_metrics(prepared, X, *inputs, rows=rows)
        for j in range(m):
            model = sparse.prepare(Params(stack.coef[j], stack.intercept[j]), X.dtype)
            train = _takes(stack, codes[local], j, ROLE_TRAIN)
            expected = sparse.rows_sums(model, X, y[local][train], weights[local][train],
                                        local[train])  # fmt: skip
            assert sums.loss_sum[j] == expected.loss_sum
            np.testing.assert_array_equal(sums.grad_coef_sum[j], expected.grad_coef_sum)
            np.testing.assert_array_equal(sums.grad_intercept_sum[j], expected.grad_intercept_sum)
            assert sums.weight_sum[j] == expected.weight_sum
            np.testing.assert_allclose(sums.grad_coef_sum[j], dense.grad_coef_sum[j], rtol=1e-10,
                                       atol=1e-10)  # fmt: skip
            held = _takes(stack, codes[local], j, ROLE_HELD_OUT)
            scored = sparse.block_metrics(model, X, y[local][held], weights[local][held],
                                          local[held])  # fmt: skip
            assert tuple(field[j] for field in metrics) == tuple(scored)


def test_a_sparse_store_grid_on_two_workers_is_the_in_process_grid_bit_for_bit(bag, tmp_path):
    X, y = bag
    dataset = write_dataset(tmp_path / "bag.zarr", X, y, chunk_rows=300)
    assert dataset.layout == "csr"
    here = SoftmaxRegressionCV(l2s=L2S, cv=3, random_state=0).fit(open_dataset(dataset.url))
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                     memory_limit="1GiB") as cluster,
        Client(cluster, set_as_default=False) as client,
    ):  # fmt: skip
        there = SoftmaxRegressionCV(l2s=L2S, cv=3, random_state=0, client=client)
        there.fit(open_dataset(dataset.url))
    np.testing.assert_array_equal(there.scores_, here.scores_)
    np.testing.assert_array_equal(there.coef_, here.coef_)
    assert there.l2_ == here.l2_


def test_dsoftmax_train_cv_on_a_converted_svmlight_file(bag, tmp_path):
    X, y = bag
    source = tmp_path / "bag.svm"
    dump_svmlight_file(X, y, str(source), zero_based=True)
    store, model = tmp_path / "bag.zarr", tmp_path / "model"
    run = [sys.executable, "-m", "dsoftmax"]
    converted = subprocess.run([*run, "convert", source, "--out", store, "--zero-based", "yes",
                                "--dtype", "float64"],
                               capture_output=True, text=True, timeout=180)  # fmt: skip
    assert converted.returncode == 0, converted.stderr
    trained = subprocess.run(
        [*run, "train", store, "--model", model, "--l2", ",".join(map(str, L2S)), "--cv", "3",
         "--tol", "1e-8"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert "chose l2=" in trained.stdout
    saved = SoftmaxRegression.load(str(model))
    assert scipy.sparse.issparse(open_dataset(store).X.blocks[0].compute())
    # The saved refit is the fit at the chosen λ on every row.
    chosen = float(trained.stdout.split("chose l2=")[1].split(";")[0])
    direct = SoftmaxRegression(l2=chosen, tol=1e-10, max_iter=2000).fit(X, y)
    np.testing.assert_allclose(saved.coef_, direct.coef_, rtol=0, atol=1e-6)
