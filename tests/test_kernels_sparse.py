"""The sparse block kernel (dsoftmax.kernels.sparse) against two oracles -- the NumPy reference
on the densified rows and scipy.sparse's own products -- and its invariants: selected rows give
the bits of the gathered block, int64 indices the bits of int32 ones, repeated calls the same
bits, and a malformed matrix is refused instead of read out of bounds."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from test_kernels import make_problem as dense_problem
from test_kernels import relative_error

from dsoftmax import kernels, objective
from dsoftmax.kernels import sparse
from dsoftmax.metrics import block_metrics as reference_block_metrics
from dsoftmax.objective import Params


def make_problem(n_rows=400, n_features=300, n_classes=6, density=0.04, seed=0, dtype=np.float64):
    """The dense tests' problem with its rows replaced by sparse ones (row 3 empty)."""
    params, _, ids, probabilities, weights = dense_problem(
        n_rows, n_features, n_classes, seed=seed, scale=0.5
    )
    X = scipy.sparse.random(
        n_rows, n_features, density=density, format="csr", random_state=seed, dtype=dtype
    )
    X.data = (X.data * 4 - 2).astype(dtype)
    X = (scipy.sparse.diags((np.arange(n_rows) != 3).astype(dtype)) @ X).tocsr()
    X.eliminate_zeros()
    return params, X, ids, probabilities, weights


def assert_sums_identical(left, right):
    assert left.loss_sum == right.loss_sum
    assert left.weight_sum == right.weight_sum
    np.testing.assert_array_equal(left.grad_coef_sum, right.grad_coef_sum)
    np.testing.assert_array_equal(left.grad_intercept_sum, right.grad_intercept_sum)


@pytest.mark.parametrize("labels_kind", ["ids", "rows"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("intercept", [True, False])
def test_float64_sums_match_the_reference_on_the_dense_rows(labels_kind, weighted, intercept):
    params, X, ids, probabilities, weights = make_problem()
    if not intercept:
        params = Params(params.coef, None)
    labels = ids if labels_kind == "ids" else probabilities
    sample_weight = weights if weighted else None
    prepared = kernels.prepare_for(params, X)
    assert isinstance(prepared, sparse.SparsePrepared)
    sums = kernels.block_sums(prepared, X, labels, sample_weight)
    expected = objective.block_sums(params, X.toarray(), labels, sample_weight)
    assert relative_error(sums.loss_sum, expected.loss_sum) < 1e-13
    assert relative_error(sums.grad_coef_sum, expected.grad_coef_sum) < 1e-12
    assert relative_error(sums.grad_intercept_sum, expected.grad_intercept_sum) < 1e-12
    assert sums.weight_sum == pytest.approx(expected.weight_sum, rel=1e-15)
    assert sums.grad_coef_sum.shape == params.coef.shape


def test_the_gradient_is_scipys_product_of_the_residual():
    params, X, ids, _, weights = make_problem(seed=1)
    sums = kernels.block_sums(kernels.prepare_for(params, X), X, ids, weights)
    logits = np.asarray(X @ params.coef.T) + params.intercept
    residual = objective.softmax(logits)
    residual[np.arange(len(ids)), ids] -= 1
    residual *= weights[:, None]
    # The other oracle: scipy.sparse computes Tᵀ X itself.
    np.testing.assert_allclose(sums.grad_coef_sum, np.asarray((X.T @ residual).T), rtol=1e-11,
                               atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(sums.grad_intercept_sum, residual.sum(axis=0), rtol=1e-11)


def test_float32_values_compute_in_float32_with_float64_sums():
    params, X, ids, _, _ = make_problem(dtype=np.float32, seed=2)
    sums = kernels.block_sums(kernels.prepare_for(params, X), X, ids)
    expected = objective.block_sums(params, X.toarray().astype(np.float64), ids)
    assert sums.grad_coef_sum.dtype == np.float64
    assert relative_error(sums.loss_sum, expected.loss_sum) < 1e-6
    assert relative_error(sums.grad_coef_sum, expected.grad_coef_sum) < 1e-5


@pytest.mark.parametrize("labels_kind", ["ids", "rows"])
def test_selected_rows_give_the_bits_of_the_gathered_block(labels_kind):
    params, X, ids, probabilities, weights = make_problem(seed=3)
    labels = ids if labels_kind == "ids" else probabilities
    rows = np.sort(np.random.default_rng(3).choice(X.shape[0], 97, replace=False))
    prepared = kernels.prepare_for(params, X)
    selected = kernels.rows_sums(prepared, X, labels[rows], weights[rows], rows)
    gathered = kernels.block_sums(prepared, X[rows], labels[rows], weights[rows])
    assert_sums_identical(selected, gathered)
    metrics = kernels.block_metrics(prepared, X, labels[rows], weights[rows], rows)
    assert metrics == kernels.block_metrics(prepared, X[rows], labels[rows], weights[rows])


def test_int64_indices_give_the_bits_of_int32_ones_and_calls_repeat_exactly():
    params, X, ids, _, weights = make_problem(seed=4)
    wide = X.copy()
    # scipy narrows index arrays it builds; set wide ones directly, as a block with more than
    # 2**31 values holds them.
    wide.indices, wide.indptr = X.indices.astype(np.int64), X.indptr.astype(np.int64)
    assert wide.indices.dtype == np.int64 and X.indices.dtype == np.int32
    prepared = kernels.prepare_for(params, X)
    first = kernels.block_sums(prepared, X, ids, weights)
    assert_sums_identical(first, kernels.block_sums(prepared, wide, ids, weights))
    assert_sums_identical(first, kernels.block_sums(prepared, X, ids, weights))


def test_work_arrays_receive_the_gradient_and_a_dense_preparation_is_relaid():
    params, X, ids, _, _ = make_problem(seed=5)
    dense_prepared = kernels.prepare(params, X.dtype)  # padded classes, dense layout
    out = (np.full(dense_prepared.coef.shape, np.nan), np.full(dense_prepared.coef.shape[0], 9.0))
    into = kernels.block_sums(dense_prepared, X, ids, out=out)
    assert np.shares_memory(into.grad_coef_sum, out[0])
    assert_sums_identical(into, kernels.block_sums(kernels.prepare_for(params, X), X, ids))


def test_metrics_and_logits_agree_with_the_reference_predictions():
    params, X, ids, probabilities, weights = make_problem(seed=6)
    prepared = kernels.prepare_for(params, X)
    logits = sparse.decision_function(prepared, X)
    np.testing.assert_allclose(logits, objective.decision_function(params, X.toarray()),
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    for labels in (ids, probabilities):
        metrics = kernels.block_metrics(prepared, X, labels, weights)
        expected = reference_block_metrics(params, X.toarray(), labels, weights)
        assert metrics.loss_sum == pytest.approx(expected.loss_sum, rel=1e-12)
        assert metrics.correct_sum == pytest.approx(expected.correct_sum, rel=1e-12)
    predicted = np.argmax(logits, axis=1)
    assert kernels.block_metrics(prepared, X, predicted).correct_sum == X.shape[0]


def test_repeated_and_unsorted_indices_are_summed_as_scipy_reads_them():
    params, X, ids, _, _ = make_problem(n_rows=50, seed=7)
    rows = [slice(X.indptr[i], X.indptr[i + 1]) for i in range(X.shape[0])]
    # Each row holds its values twice, in reversed column order: repeated and unsorted.
    indices = np.concatenate([np.tile(X.indices[r][::-1], 2) for r in rows])
    data = np.concatenate([np.tile(X.data[r][::-1], 2) for r in rows])
    raw = scipy.sparse.csr_matrix((data, indices, 2 * X.indptr), shape=X.shape)
    assert raw.nnz == 2 * X.nnz and not raw.has_sorted_indices
    sums = kernels.block_sums(kernels.prepare_for(params, X), raw, ids)
    expected = objective.block_sums(params, raw.toarray(), ids)
    assert relative_error(sums.grad_coef_sum, expected.grad_coef_sum) < 1e-12


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda X: X.indices.__setitem__(5, X.shape[1]), r"column index outside \[0, 300\)"),
        (lambda X: X.indices.__setitem__(5, -1), r"column index outside \[0, 300\)"),
        (
            lambda X: X.indptr.__setitem__(-1, X.nnz + 10),
            r"pointers of row \d+ .* malformed|do "
            r"not lie within",
        ),
    ],
    ids=["too large", "negative", "pointer past the values"],
)
def test_a_malformed_matrix_is_refused_instead_of_read_out_of_bounds(tamper, message):
    params, X, ids, _, _ = make_problem(seed=8)
    X = X.copy()
    tamper(X)
    prepared = kernels.prepare_for(params, X)
    with pytest.raises(ValueError, match=message):
        kernels.block_sums(prepared, X, ids)
    with pytest.raises(ValueError, match=message):
        kernels.block_metrics(prepared, X, ids)


def test_wrong_format_dtype_and_width_are_refused_with_the_fix():
    params, X, ids, _, _ = make_problem(seed=9)
    prepared = kernels.prepare_for(params, X)
    with pytest.raises(TypeError, match=r"'csc' format; .* convert with X.tocsr\(\)"):
        kernels.block_sums(prepared, X.tocsc(), ids)
    with pytest.raises(TypeError, match=r"prepared for float64; call prepare"):
        kernels.block_sums(prepared, X.astype(np.float32), ids)
    with pytest.raises(ValueError, match=r"X has 299 features but the model has 300"):
        kernels.block_sums(prepared, X[:, :299], ids)
    with pytest.raises(TypeError, match=r"sparse X has dtype int64; .* float32 or float64"):
        sparse.prepare(params, np.int64)


def test_the_cost_follows_the_non_zeros_not_the_feature_count():
    """A block with 2**22 features but a handful of values evaluates without touching memory
    in proportion to the features: the gradient is returned as a view of one allocation and
    no dense row is ever made."""
    rng = np.random.default_rng(10)
    n_features = 2**22
    X = scipy.sparse.csr_matrix(
        (rng.random(40), np.sort(rng.choice(n_features, 40, replace=False)), [0, 10, 20, 30, 40]),
        shape=(4, n_features),
    )
    params = Params(np.zeros((2, n_features)), np.zeros(2))
    sums = kernels.block_sums(kernels.prepare_for(params, X), X, np.array([0, 1, 0, 1]))
    assert sums.loss_sum == pytest.approx(4 * np.log(2))
    touched = np.flatnonzero(np.any(sums.grad_coef_sum != 0, axis=0))
    np.testing.assert_array_equal(touched, np.unique(X.indices))
