"""Tests of the objective: finite differences, scikit-learn as an outside oracle, invariants.

The math under test is written down in ``docs/derivation.md``; the names here follow it
(``W`` coef, ``b`` intercept, ``T = P - Y``, ``S`` the weight sum, ``λ`` the L2 strength).
"""

from __future__ import annotations

import doctest
import itertools

import numpy as np
import pytest
from sklearn._loss.loss import HalfMultinomialLoss
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model._linear_loss import LinearModelLoss

from dsoftmax import metrics, objective
from dsoftmax.metrics import block_metrics
from dsoftmax.objective import (
    Params,
    add_sums,
    block_sums,
    decision_function,
    empty_sums,
    finalize,
    l2_from_sklearn_C,
    l2_from_spark_reg_param,
    log_softmax,
    loss_and_grad,
    segment_sums,
    softmax,
    sum_blocks,
)

# (n_classes, n_features, n_samples): the corners of K = 2..5, d = 1..6, N = 1..40.
SHAPES = [(2, 1, 1), (3, 2, 7), (4, 6, 40), (5, 3, 13), (2, 5, 40), (5, 6, 1)]
LABEL_KINDS = ["ids", "one_hot", "soft", "soft_unnormalized"]


def make_labels(rng: np.random.Generator, kind: str, n_samples: int, n_classes: int) -> np.ndarray:
    ids = rng.integers(0, n_classes, size=n_samples)
    if kind == "ids":
        return ids
    if kind == "one_hot":
        return np.eye(n_classes)[ids]
    rows = rng.dirichlet(np.ones(n_classes), size=n_samples)
    if kind == "soft":
        return rows
    # Rows that sum to s_i != 1, e.g. labels already multiplied by a per-row confidence.
    return rows * rng.uniform(0.3, 2.0, size=(n_samples, 1))


def make_problem(
    shape: tuple[int, int, int],
    label_kind: str = "ids",
    weighted: bool = False,
    fit_intercept: bool = True,
    seed: int = 0,
) -> tuple[Params, np.ndarray, np.ndarray, np.ndarray | None]:
    n_classes, n_features, n_samples = shape
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_samples, n_features))
    labels = make_labels(rng, label_kind, n_samples, n_classes)
    params = Params(
        rng.normal(size=(n_classes, n_features)),
        rng.normal(size=n_classes) if fit_intercept else None,
    )
    sample_weight = None
    if weighted:
        sample_weight = rng.uniform(0.0, 3.0, size=n_samples)
        sample_weight[0] = max(sample_weight[0], 0.5)  # keep S > 0 when n_samples == 1
        if n_samples > 2:
            sample_weight[1] = 0.0  # a zero-weight row must drop out of loss and gradient
    return params, X, labels, sample_weight


def flatten(params: Params) -> np.ndarray:
    parts = [np.ravel(params.coef)]
    if params.intercept is not None:
        parts.append(np.ravel(params.intercept))
    return np.concatenate(parts)


def unflatten(theta: np.ndarray, like: Params) -> Params:
    n_coef = like.coef.size
    coef = theta[:n_coef].reshape(like.coef.shape)
    intercept = None if like.intercept is None else theta[n_coef:]
    return Params(coef, intercept)


def central_differences(fun, params: Params, step: float = 1e-5) -> np.ndarray:
    theta = flatten(params)
    grad = np.empty_like(theta)
    for j in range(theta.size):
        plus, minus = theta.copy(), theta.copy()
        plus[j] += step
        minus[j] -= step
        grad[j] = (fun(unflatten(plus, params)) - fun(unflatten(minus, params))) / (2 * step)
    return grad


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-300))


def assert_same_result(left: tuple[float, Params], right: tuple[float, Params], rtol: float):
    (loss_l, grad_l), (loss_r, grad_r) = left, right
    assert loss_l == pytest.approx(loss_r, rel=rtol, abs=0)
    assert relative_error(flatten(grad_l), flatten(grad_r)) < rtol


# --- gradient = finite differences -------------------------------------------------------


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no_intercept"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("label_kind", LABEL_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "K{}-d{}-N{}".format(*s))
def test_gradient_matches_central_differences(shape, label_kind, weighted, fit_intercept):
    params, X, labels, sample_weight = make_problem(shape, label_kind, weighted, fit_intercept)
    l2 = 0.05

    def loss_at(p: Params) -> float:
        return loss_and_grad(p, X, labels, l2, sample_weight)[0]

    _, grad = loss_and_grad(params, X, labels, l2, sample_weight)
    assert (grad.intercept is None) == (not fit_intercept)
    assert relative_error(flatten(grad), central_differences(loss_at, params)) < 1e-6


def test_loss_is_weighted_mean_cross_entropy_plus_penalty():
    params, X, labels, sample_weight = make_problem((4, 3, 25), "soft_unnormalized", True)
    l2 = 0.3
    log_probs = log_softmax(decision_function(params, X))
    expected = -np.sum(sample_weight * np.sum(labels * log_probs, axis=1)) / sample_weight.sum()
    expected += l2 * np.sum(params.coef**2)
    loss, _ = loss_and_grad(params, X, labels, l2, sample_weight)
    assert loss == pytest.approx(expected, rel=1e-12)


# --- an outside oracle: scikit-learn ------------------------------------------------------


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no_intercept"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("label_kind", ["ids", "one_hot"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "K{}-d{}-N{}".format(*s))
def test_loss_and_gradient_equal_sklearn_linear_model_loss(
    shape, label_kind, weighted, fit_intercept
):
    params, X, labels, sample_weight = make_problem(shape, label_kind, weighted, fit_intercept)
    n_classes = shape[0]
    l2 = 0.07
    class_ids = labels if labels.ndim == 1 else np.argmax(labels, axis=1)
    sk_loss = LinearModelLoss(HalfMultinomialLoss(n_classes=n_classes), fit_intercept)
    # scikit-learn's coef is (n_classes, n_features [+ 1]), intercept in the last column;
    # its penalty is ½·l2_reg_strength·‖W‖², so l2_reg_strength = 2λ.
    sk_coef = params.coef if not fit_intercept else np.column_stack([params.coef, params.intercept])
    sk_value, sk_grad = sk_loss.loss_gradient(
        sk_coef, X, class_ids.astype(np.float64), sample_weight, l2_reg_strength=2 * l2
    )

    loss, grad = loss_and_grad(params, X, labels, l2, sample_weight)

    assert loss == pytest.approx(sk_value, rel=1e-12)
    np.testing.assert_allclose(grad.coef, sk_grad[:, : X.shape[1]], rtol=1e-10, atol=1e-13)
    if fit_intercept:
        np.testing.assert_allclose(grad.intercept, sk_grad[:, -1], rtol=1e-10, atol=1e-13)


def balanced_classification(n_samples: int, n_features: int, n_classes: int, seed: int):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n_samples) % n_classes)
    centers = rng.normal(size=(n_classes, n_features))
    X = centers[y] + rng.normal(size=(n_samples, n_features))
    return X, y


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize(("n_classes", "C"), [(3, 0.5), (4, 10.0)])
def test_gradient_vanishes_at_sklearn_logistic_regression_optimum(n_classes, C, weighted):
    n_samples = 60
    X, y = balanced_classification(n_samples, 4, n_classes, seed=n_classes)
    sample_weight = np.random.default_rng(7).uniform(0.2, 3.0, n_samples) if weighted else None
    model = LogisticRegression(C=C, tol=1e-12, max_iter=10000).fit(X, y, sample_weight)
    weight_sum = n_samples if sample_weight is None else sample_weight.sum()
    params = Params(model.coef_, model.intercept_)

    _, grad = loss_and_grad(params, X, y, l2_from_sklearn_C(C, weight_sum), sample_weight)

    assert np.abs(flatten(grad)).max() < 1e-6
    # The stationarity conditions summed over classes: Σ_k w_k = 0 ...
    np.testing.assert_allclose(model.coef_.sum(axis=0), 0.0, atol=1e-10)
    assert model.intercept_.sum() == pytest.approx(0.0, abs=1e-10)  # the centred intercept
    # ... and, with an intercept, the predicted class totals equal the observed ones.
    weights = np.ones(n_samples) if sample_weight is None else sample_weight
    predicted_totals = weights @ softmax(decision_function(params, X))
    observed_totals = weights @ np.eye(n_classes)[y]
    np.testing.assert_allclose(predicted_totals, observed_totals, rtol=1e-6)


def test_sklearn_binary_fit_maps_to_two_symmetric_classes_with_twice_the_l2():
    """For two classes scikit-learn fits one sigmoid vector v, not two softmax rows: its
    optimum is ours at W = [-v/2, v/2] with λ = 1/(C·S), twice l2_from_sklearn_C."""
    n_samples, C = 60, 0.5
    X, y = balanced_classification(n_samples, 4, 2, seed=2)
    model = LogisticRegression(C=C, tol=1e-12, max_iter=10000).fit(X, y)
    v, c = model.coef_[0], model.intercept_[0]
    params = Params(np.stack([-v / 2, v / 2]), np.array([-c / 2, c / 2]))

    _, grad = loss_and_grad(params, X, y, 2 * l2_from_sklearn_C(C, n_samples))
    _, grad_multinomial_mapping = loss_and_grad(params, X, y, l2_from_sklearn_C(C, n_samples))

    assert np.abs(flatten(grad)).max() < 1e-6
    assert np.abs(grad_multinomial_mapping.coef).max() > 1e-3


# --- sums over any split of the rows ------------------------------------------------------

SPLITS = {
    "one_block": [0, 40],
    "seven_uneven_blocks": [0, 1, 3, 9, 10, 22, 31, 40],
    "one_row_blocks": list(range(41)),
}


@pytest.mark.parametrize("fit_intercept", [True, False], ids=["intercept", "no_intercept"])
@pytest.mark.parametrize("label_kind", ["ids", "soft_unnormalized"])
@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
def test_block_sums_over_any_split_finalize_to_the_whole(split, label_kind, fit_intercept):
    params, X, labels, sample_weight = make_problem((4, 5, 40), label_kind, True, fit_intercept)
    l2 = 0.2
    parts = [
        block_sums(params, X[lo:hi], labels[lo:hi], sample_weight[lo:hi])
        for lo, hi in itertools.pairwise(split)
    ]
    whole = loss_and_grad(params, X, labels, l2, sample_weight)

    assert_same_result(finalize(sum_blocks(parts), params, l2), whole, rtol=1e-12)
    folded = empty_sums(4, 5)
    for part in parts:
        folded = add_sums(folded, part)
    assert_same_result(finalize(folded, params, l2), whole, rtol=1e-12)


def test_integer_sample_weights_equal_repeated_rows():
    params, X, labels, _ = make_problem((3, 4, 12), "soft_unnormalized")
    counts = np.array([0, 1, 2, 3, 1, 1, 0, 4, 1, 2, 1, 1])
    repeated = np.repeat(np.arange(12), counts)
    weighted = loss_and_grad(params, X, labels, 0.1, counts.astype(np.float64))
    assert_same_result(weighted, loss_and_grad(params, X[repeated], labels[repeated], 0.1), 1e-12)


def test_block_sums_are_sums_not_means():
    params, X, labels, _ = make_problem((3, 2, 30), "ids")
    first, second = block_sums(params, X[:5], labels[:5]), block_sums(params, X[5:], labels[5:])
    whole = block_sums(params, X, labels)
    assert (first.weight_sum, second.weight_sum, whole.weight_sum) == (5.0, 25.0, 30.0)
    assert first.loss_sum + second.loss_sum == pytest.approx(whole.loss_sum, rel=1e-12)


@pytest.mark.parametrize("label_kind", ["ids", "soft"])
def test_sub_block_rows_do_not_change_the_result(label_kind):
    params, X, labels, sample_weight = make_problem((3, 4, 40), label_kind, True)
    small = block_sums(params, X, labels, sample_weight, sub_block_rows=3)
    default = block_sums(params, X, labels, sample_weight)
    assert_same_result(finalize(small, params, 0.1), finalize(default, params, 0.1), rtol=1e-12)


def test_sum_blocks_rejects_an_empty_list():
    with pytest.raises(ValueError, match="at least one BlockSums"):
        sum_blocks([])


def test_block_sums_leave_their_inputs_unchanged():
    params, X, labels, sample_weight = make_problem((3, 4, 20), "soft", True)
    inputs = (params.coef, params.intercept, X, labels, sample_weight)
    copies = [np.copy(a) for a in inputs]
    block_sums(params, X, labels, sample_weight, sub_block_rows=7)
    for before, after in zip(copies, inputs, strict=True):
        np.testing.assert_array_equal(before, after)


# --- invariances and numerics -------------------------------------------------------------


@pytest.mark.parametrize("label_kind", ["ids", "soft"])
def test_adding_a_constant_to_every_intercept_changes_nothing(label_kind):
    params, X, labels, sample_weight = make_problem((4, 3, 30), label_kind, True)
    shifted = Params(params.coef, params.intercept + 17.25)
    loss, grad = loss_and_grad(params, X, labels, 0.1, sample_weight)
    loss_shifted, grad_shifted = loss_and_grad(shifted, X, labels, 0.1, sample_weight)
    assert loss_shifted == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(grad_shifted.coef, grad.coef, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grad_shifted.intercept, grad.intercept, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("label_kind", LABEL_KINDS)
def test_intercept_gradient_sums_to_zero_over_classes(label_kind):
    """Why the intercept stays centred: a step along the gradient keeps Σ_k b_k unchanged."""
    params, X, labels, sample_weight = make_problem((5, 3, 30), label_kind, True)
    _, grad = loss_and_grad(params, X, labels, 0.1, sample_weight)
    assert np.abs(grad.intercept).max() > 1e-3
    assert grad.intercept.sum() == pytest.approx(0.0, abs=1e-14)


def test_log_softmax_and_softmax_are_invariant_to_a_constant_per_row():
    z = np.random.default_rng(3).normal(size=(6, 4)) * 10
    c = np.array([[-1e3], [-2.5], [0.0], [3.0], [50.0], [1e3]])
    np.testing.assert_allclose(log_softmax(z + c), log_softmax(z), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(softmax(z + c), softmax(z), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        log_softmax(z.T + c.T, axis=0), log_softmax(z.T, axis=0), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(softmax(z).sum(axis=1), 1.0, rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_of_1e4_give_finite_and_correct_loss_and_gradient(dtype):
    # Row 0 is confidently wrong (logit gap 2e4), row 1 confidently right.
    X = np.ones((2, 1), dtype=dtype)
    params = Params(np.array([[1e4], [-1e4]]), np.zeros(2))
    labels = np.array([1, 0])

    sums = block_sums(params, X, labels)
    loss, grad = finalize(sums, params, 0.0)

    assert sums.loss_sum == 2e4  # log(e^{1e4} + e^{-1e4}) + 1e4, the logit gap
    assert loss == 1e4
    np.testing.assert_array_equal(grad.coef, [[0.5], [-0.5]])
    np.testing.assert_array_equal(grad.intercept, [0.5, -0.5])
    logits = np.array([[1e4, -1e4, 0.0]], dtype=dtype)
    assert np.all(np.isfinite(log_softmax(logits)))
    np.testing.assert_array_equal(softmax(logits), [[1.0, 0.0, 0.0]])
    assert log_softmax(logits)[0, 1] == -2e4


def test_float32_data_keeps_products_float32_and_accumulators_float64():
    params, X64, labels, sample_weight = make_problem((4, 10, 200), "ids", True)
    X32 = X64.astype(np.float32)

    assert decision_function(params, X32).dtype == np.float32
    sums32 = block_sums(params, X32, labels, sample_weight, sub_block_rows=64)
    # The same float32 values, computed in float64: differs only by float32 rounding.
    sums64 = block_sums(params, X32.astype(np.float64), labels, sample_weight, sub_block_rows=64)

    assert sums32.grad_coef_sum.dtype == np.float64
    assert sums32.grad_intercept_sum.dtype == np.float64
    assert isinstance(sums32.loss_sum, float) and isinstance(sums32.weight_sum, float)
    assert sums32.loss_sum == pytest.approx(sums64.loss_sum, rel=1e-5)
    np.testing.assert_allclose(sums32.grad_coef_sum, sums64.grad_coef_sum, rtol=1e-4, atol=1e-3)
    # Had the products been promoted to float64, the two would agree to the last bit.
    assert not np.array_equal(sums32.grad_coef_sum, sums64.grad_coef_sum)


def test_float32_products_see_float32_parameters_and_return_float32_values():
    params, X64, labels, sample_weight = make_problem((3, 5, 50), "ids", True)
    X32 = X64.astype(np.float32)
    rounded = Params(
        params.coef.astype(np.float32).astype(np.float64),
        params.intercept.astype(np.float32).astype(np.float64),
    )
    sums = block_sums(params, X32, labels, sample_weight)  # one sub-block: one GEMM

    # The parameters enter the products rounded to float32 ...
    same = block_sums(rounded, X32, labels, sample_weight)
    assert sums.loss_sum == same.loss_sum
    np.testing.assert_array_equal(sums.grad_coef_sum, same.grad_coef_sum)
    # ... and Tᵀ X comes out of a float32 product: every entry is a float32 number.
    as_float32 = sums.grad_coef_sum.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(sums.grad_coef_sum, as_float32)


# --- errors -------------------------------------------------------------------------------


def test_labels_of_the_wrong_shape_are_rejected():
    params, X, labels, _ = make_problem((3, 2, 10), "ids")
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\).*\(10, 3\).*got \(9,\)"):
        block_sums(params, X, labels[:9])
    with pytest.raises(ValueError, match=r"got \(10, 4\)"):
        block_sums(params, X, np.eye(4)[labels])
    with pytest.raises(ValueError, match="labels must have shape"):
        block_metrics(params, X, labels[:, None])


def test_float_class_ids_are_rejected():
    params, X, labels, _ = make_problem((3, 2, 10), "ids")
    with pytest.raises(TypeError, match="class-id labels must be integers, got dtype float64"):
        block_sums(params, X, labels.astype(np.float64))
    with pytest.raises(TypeError, match="one-hot or probability rows"):
        block_metrics(params, X, labels.astype(np.float64))


def test_finalize_with_zero_total_weight_is_rejected():
    params, X, labels, _ = make_problem((3, 2, 4), "ids")
    sums = block_sums(params, X, labels, np.zeros(4))
    with pytest.raises(ValueError, match=r"total sample weight is 0\.0; at least one row"):
        finalize(sums, params, 0.1)


# --- conversions --------------------------------------------------------------------------


def test_l2_from_sklearn_c():
    assert l2_from_sklearn_C(1.0, 100) == pytest.approx(0.005)
    assert l2_from_sklearn_C(0.25, 12.5) == pytest.approx(1 / (2 * 0.25 * 12.5))


@pytest.mark.parametrize(
    ("C", "n_samples", "message"),
    [
        (0.0, 10, "C must be > 0"),
        (-1.0, 10, "C must be > 0"),
        (float("nan"), 10, "C must be"),
        (1.0, 0, "n_samples must be > 0"),
        (1.0, -3.5, "n_samples must be > 0, got -3.5"),
    ],
)
def test_l2_from_sklearn_c_rejects_non_positive_values(C, n_samples, message):
    with pytest.raises(ValueError, match=message):
        l2_from_sklearn_C(C, n_samples)


def test_l2_from_spark_reg_param():
    assert l2_from_spark_reg_param(0.1) == pytest.approx(0.05)
    assert l2_from_spark_reg_param(0.0) == 0.0


@pytest.mark.parametrize("reg_param", [-0.1, float("nan")])
def test_l2_from_spark_reg_param_rejects_negative_values(reg_param):
    with pytest.raises(ValueError, match="regParam must be >= 0"):
        l2_from_spark_reg_param(reg_param)


# --- evaluation metrics -------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("label_kind", LABEL_KINDS)
def test_block_metrics_agree_with_block_sums_and_a_direct_accuracy(label_kind, weighted):
    params, X, labels, sample_weight = make_problem((4, 3, 40), label_kind, weighted)
    metrics = block_metrics(params, X, labels, sample_weight)
    sums = block_sums(params, X, labels, sample_weight)

    weights = np.ones(40) if sample_weight is None else sample_weight
    targets = labels if labels.ndim == 1 else np.argmax(labels, axis=1)
    predicted = np.argmax(decision_function(params, X), axis=1)
    assert 0 < np.mean(predicted == targets) < 1  # neither check below is trivial
    assert metrics.loss_sum == pytest.approx(sums.loss_sum, rel=1e-12)
    assert metrics.correct_sum == pytest.approx(np.sum(weights * (predicted == targets)), rel=1e-12)
    assert metrics.weight_sum == pytest.approx(weights.sum(), rel=1e-15)


def test_block_metrics_add_up_over_blocks():
    params, X, labels, sample_weight = make_problem((3, 2, 30), "ids", True)
    left = block_metrics(params, X[:11], labels[:11], sample_weight[:11])
    right = block_metrics(params, X[11:], labels[11:], sample_weight[11:])
    whole = block_metrics(params, X, labels, sample_weight)
    np.testing.assert_allclose(metrics.add_metrics(left, right), whole, rtol=1e-12)


# --- documentation ------------------------------------------------------------------------


def test_docstring_examples_run():
    result = doctest.testmod(objective, raise_on_error=False, verbose=False)
    assert result.attempted > 0
    assert result.failed == 0


def test_reused_work_arrays_give_the_same_bits_as_fresh_ones(monkeypatch):
    rng = np.random.default_rng(11)
    params = Params(rng.normal(size=(7, 9)).astype(np.float32), rng.normal(size=7))
    # Sizes that grow and shrink, so the thread's work arrays are reused at other shapes.
    blocks = [
        (rng.normal(size=(rows, 9)).astype(np.float32), rng.integers(0, 7, rows))
        for rows in (300, 50, 1000, 1, 300)
    ]
    reused = [block_sums(params, X, y, sub_block_rows=128) for X, y in blocks]
    monkeypatch.setattr("dsoftmax.objective.SCRATCH_BYTES", 0)
    fresh = [block_sums(params, X, y, sub_block_rows=128) for X, y in blocks]
    for a, b in zip(reused, fresh, strict=True):
        assert a.loss_sum == b.loss_sum
        assert np.array_equal(a.grad_coef_sum, b.grad_coef_sum)
        assert np.array_equal(a.grad_intercept_sum, b.grad_intercept_sum)


@pytest.mark.parametrize("kind", LABEL_KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_segment_sums_equal_block_sums_of_each_segment_bit_for_bit(kind, dtype, weighted):
    rng = np.random.default_rng(21)
    n_classes, n_features = 10, 33
    # Empty, single-row and odd-sized segments, as a minibatch spread over blocks gives.
    sizes = [517, 0, 1, 64, 3, 1000, 250]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    X = rng.normal(size=(bounds[-1], n_features)).astype(dtype)
    labels = make_labels(rng, kind, bounds[-1], n_classes)
    weights = rng.random(bounds[-1]) if weighted else None
    params = Params(rng.normal(size=(n_classes, n_features)), rng.normal(size=n_classes))
    together = segment_sums(params, X, labels, bounds, weights)
    assert len(together) == len(sizes)
    for (start, stop), got in zip(itertools.pairwise(bounds), together, strict=True):
        alone = block_sums(
            params,
            X[start:stop],
            labels[start:stop],
            None if weights is None else weights[start:stop],
        )
        assert got.loss_sum == alone.loss_sum
        assert got.weight_sum == alone.weight_sum
        assert np.array_equal(got.grad_coef_sum, alone.grad_coef_sum)
        assert np.array_equal(got.grad_intercept_sum, alone.grad_intercept_sum)


@pytest.mark.parametrize(
    ("bounds", "message"),
    [
        ([0, 5], "from 0 to the 6 rows"),
        ([1, 6], "from 0 to the 6 rows"),
        ([0, 4, 2, 6], "non-decreasing"),
    ],
)
def test_segment_sums_reject_bounds_that_do_not_cover_the_rows(bounds, message):
    params = Params(np.zeros((3, 2)), None)
    with pytest.raises(ValueError, match=message):
        segment_sums(params, np.ones((6, 2)), np.zeros(6, dtype=int), bounds)
