"""The block kernel (dsoftmax.kernels) against the NumPy reference (dsoftmax.objective), finite
differences, and its own invariants: rows_sums is block_sums of the gathered rows bit for bit,
half-precision storage is widened exactly, and repeated or concurrent calls give the same bits."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dsoftmax import kernels, objective
from dsoftmax.metrics import block_metrics as reference_block_metrics
from dsoftmax.objective import Params

ml_dtypes = pytest.importorskip("ml_dtypes")

PATHS = ("fused", "blas")


def make_problem(n_rows=300, n_features=70, n_classes=7, seed=0, dtype=np.float64, scale=0.3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features)).astype(dtype)
    params = Params(
        scale * rng.standard_normal((n_classes, n_features)), rng.standard_normal(n_classes)
    )
    ids = rng.integers(0, n_classes, n_rows)
    # Rows that sum to 1.3, to exercise the rule for rows that do not sum to one.
    probabilities = rng.dirichlet(np.ones(n_classes), n_rows) * 1.3
    weights = rng.random(n_rows) * 2
    return params, X, ids, probabilities, weights


def relative_error(actual, expected):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-300))


def assert_sums_close(actual, expected, tolerance):
    assert relative_error(actual.loss_sum, expected.loss_sum) < tolerance
    assert relative_error(actual.grad_coef_sum, expected.grad_coef_sum) < tolerance
    assert relative_error(actual.grad_intercept_sum, expected.grad_intercept_sum) < tolerance
    assert actual.weight_sum == pytest.approx(expected.weight_sum, rel=1e-15)


def assert_sums_identical(left, right):
    assert left.loss_sum == right.loss_sum
    assert left.weight_sum == right.weight_sum
    np.testing.assert_array_equal(left.grad_coef_sum, right.grad_coef_sum)
    np.testing.assert_array_equal(left.grad_intercept_sum, right.grad_intercept_sum)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("labels_kind", ["ids", "rows"])
@pytest.mark.parametrize("weighted", [False, True])
def test_float64_matches_the_reference(path, labels_kind, weighted):
    params, X, ids, probabilities, weights = make_problem()
    labels = ids if labels_kind == "ids" else probabilities
    sample_weight = weights if weighted else None
    prepared = kernels.prepare(params, X.dtype, path=path)
    sums = kernels.block_sums(prepared, X, labels, sample_weight)
    assert_sums_close(sums, objective.block_sums(params, X, labels, sample_weight), 1e-12)
    assert sums.grad_coef_sum.dtype == np.float64
    assert sums.grad_coef_sum.shape == params.coef.shape


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("labels_kind", ["ids", "rows"])
def test_float32_matches_the_reference(path, labels_kind):
    params, X, ids, probabilities, weights = make_problem(n_rows=1000, dtype=np.float32)
    labels = ids if labels_kind == "ids" else probabilities
    prepared = kernels.prepare(params, X.dtype, path=path)
    sums = kernels.block_sums(prepared, X, labels, weights)
    assert_sums_close(sums, objective.block_sums(params, X, labels, weights), 2e-6)


@pytest.mark.parametrize(
    ("n_classes", "n_features"), [(1, 1), (2, 3), (3, 64), (5, 128), (11, 130), (12, 200)]
)
def test_any_number_of_classes_and_features(n_classes, n_features):
    params, X, ids, _, _ = make_problem(n_rows=257, n_features=n_features, n_classes=n_classes)
    prepared = kernels.prepare(params, X.dtype)
    assert prepared.path == "fused"
    sums = kernels.block_sums(prepared, X, ids)
    assert_sums_close(sums, objective.block_sums(params, X, ids), 1e-12)


def test_wide_models_take_the_blas_path_and_match_the_reference():
    params, X, ids, _, weights = make_problem(n_rows=120, n_features=300, n_classes=260)
    assert 260 * 300 > kernels.FUSED_MAX_WEIGHTS
    prepared = kernels.prepare(params, X.dtype)
    assert prepared.path == "blas"
    sums = kernels.block_sums(prepared, X, ids, weights)
    assert_sums_close(sums, objective.block_sums(params, X, ids, weights), 1e-12)


def test_the_blas_path_reuses_its_work_arrays_from_block_to_block():
    """A Dask worker turns every temporary over 128 KiB into fresh pages (it sets
    ``MALLOC_TRIM_THRESHOLD_``); the wide path's logits and gradient product are reused."""
    import tracemalloc

    params, X, ids, _, _ = make_problem(n_rows=256, n_features=512, n_classes=300, dtype=np.float32)
    prepared = kernels.prepare(params, np.float32)
    assert prepared.path == "blas"
    out = (np.empty(prepared.coef.shape), np.empty(prepared.coef.shape[0]))
    first = kernels.block_sums(prepared, X, ids, out=out)
    first = first._replace(
        grad_coef_sum=first.grad_coef_sum.copy(), grad_intercept_sum=first.grad_intercept_sum.copy()
    )
    tracemalloc.start()
    try:
        again = kernels.block_sums(prepared, X, ids, out=out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    product_bytes = 300 * 512 * 4
    assert peak < product_bytes / 4
    assert_sums_identical(again, first)


@pytest.mark.parametrize("path", PATHS)
def test_gradient_matches_finite_differences_of_the_objective(path):
    params, X, _ids, probabilities, weights = make_problem(n_rows=40, n_features=6, n_classes=4)
    l2 = 0.01

    def objective_value(theta):
        candidate = Params(theta[:24].reshape(4, 6), theta[24:])
        prepared = kernels.prepare(candidate, X.dtype, path=path)
        return objective.finalize(
            kernels.block_sums(prepared, X, probabilities, weights), candidate, l2
        )[0]

    prepared = kernels.prepare(params, X.dtype, path=path)
    _, grad = objective.finalize(
        kernels.block_sums(prepared, X, probabilities, weights), params, l2
    )
    theta = np.concatenate([params.coef.ravel(), params.intercept])
    step = 1e-6
    numeric = np.array(
        [
            (objective_value(theta + step * e) - objective_value(theta - step * e)) / (2 * step)
            for e in np.eye(theta.size)
        ]
    )
    analytic = np.concatenate([grad.coef.ravel(), grad.intercept])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_stay_finite(path, dtype):
    _params, X, ids, probabilities, _ = make_problem(n_rows=50, n_features=4, n_classes=3)
    X = np.sign(X).astype(dtype)
    big = Params(np.array([[1e4, 0, 0, 0], [-1e4, 0, 0, 0], [0, 1e4, 0, 0]]), np.zeros(3))
    prepared = kernels.prepare(big, X.dtype, path=path)
    for labels in (ids, probabilities):
        sums = kernels.block_sums(prepared, X, labels)
        assert np.isfinite(sums.loss_sum)
        assert np.all(np.isfinite(sums.grad_coef_sum))
        reference = objective.block_sums(big, X, labels)
        assert sums.loss_sum == pytest.approx(reference.loss_sum, rel=1e-6)
        np.testing.assert_allclose(sums.grad_coef_sum, reference.grad_coef_sum, atol=1e-3)


@pytest.mark.parametrize("path", PATHS)
def test_one_row_and_zero_rows(path):
    params, X, ids, probabilities, weights = make_problem()
    prepared = kernels.prepare(params, X.dtype, path=path)
    one = kernels.block_sums(prepared, X[:1], probabilities[:1], weights[:1])
    assert_sums_close(
        one, objective.block_sums(params, X[:1], probabilities[:1], weights[:1]), 1e-12
    )
    none = kernels.block_sums(prepared, X[:0], ids[:0])
    assert none.loss_sum == 0.0 and none.weight_sum == 0.0
    assert not np.any(none.grad_coef_sum)
    empty = kernels.rows_sums(prepared, X, ids[:0], None, np.zeros(0, dtype=np.int64))
    assert_sums_identical(empty, none)


@pytest.mark.parametrize("path", PATHS)
def test_zero_weight_rows_add_nothing(path):
    params, X, ids, _, weights = make_problem()
    weights[::3] = 0.0
    prepared = kernels.prepare(params, X.dtype, path=path)
    sums = kernels.block_sums(prepared, X, ids, weights)
    kept = weights > 0
    without = kernels.block_sums(prepared, X[kept], ids[kept], weights[kept])
    assert_sums_close(sums, without, 1e-13)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, "bfloat16"])
@pytest.mark.parametrize("labels_kind", ["ids", "rows"])
def test_rows_sums_is_block_sums_of_the_gathered_rows_bit_for_bit(path, dtype, labels_kind):
    dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    params, X, ids, probabilities, weights = make_problem(n_rows=700, dtype=dtype)
    labels = ids if labels_kind == "ids" else probabilities
    prepared = kernels.prepare(params, X.dtype, path=path)
    rng = np.random.default_rng(1)
    for count in (1, 2, 3, 7, 129, 130, 333):
        rows = np.sort(rng.choice(len(X), count, replace=False))
        for sample_weight in (None, weights):
            gathered_weight = None if sample_weight is None else sample_weight[rows]
            assert_sums_identical(
                kernels.rows_sums(prepared, X, labels[rows], gathered_weight, rows),
                kernels.block_sums(prepared, X[rows], labels[rows], gathered_weight),
            )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_rows_loss_does_not_depend_on_its_place_in_the_tile(dtype):
    # The fused path computes the logits of four rows at a time: each row's loss must be the
    # same bits whatever rows it is grouped with. A block of at most one tile adds its rows'
    # losses in order from zero, as Python's sum does.
    params, X, ids, _, _ = make_problem(n_rows=11, dtype=dtype)
    prepared = kernels.prepare(params, X.dtype, path="fused")
    one_by_one = [kernels.block_sums(prepared, X[i : i + 1], ids[i : i + 1]) for i in range(11)]
    for start in range(4):
        sums = kernels.block_sums(prepared, X[start:], ids[start:])
        assert sums.loss_sum == sum(single.loss_sum for single in one_by_one[start:])


def test_kernels_compile_their_products_with_wide_vectors():
    from numba import njit

    from dsoftmax.kernels.compile import VECTOR_BITS, wide_vectors

    @njit
    def scaled(values):
        wide_vectors()
        return values * 2.0

    scaled(np.ones(3))
    (ir,) = scaled.inspect_llvm().values()
    assert f'"prefer-vector-width"="{VECTOR_BITS}"' in ir


def test_the_sums_of_rows_do_not_depend_on_the_rest_of_the_block():
    params, X, ids, _, weights = make_problem(n_rows=500, dtype=np.float32)
    prepared = kernels.prepare(params, X.dtype)
    rows = np.arange(100, 400, 3)
    other = X.copy()
    other[np.setdiff1d(np.arange(len(X)), rows)] = 7.0
    assert_sums_identical(
        kernels.rows_sums(prepared, X, ids[rows], weights[rows], rows),
        kernels.rows_sums(prepared, other, ids[rows], weights[rows], rows),
    )


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("half", [np.float16, "bfloat16"])
def test_half_storage_computes_exactly_as_its_float32_widening(path, half):
    half = np.dtype(ml_dtypes.bfloat16) if half == "bfloat16" else np.dtype(half)
    params, X, ids, _, weights = make_problem(n_rows=400, dtype=half)
    if half == np.float16:
        # Subnormals, signed zeros and the largest finite value widen exactly too.
        X[0, :6] = np.array([6e-8, -6e-8, 3e-5, -0.0, 65504, -65504], dtype=np.float16)
    widened = X.astype(np.float32)
    half_sums = kernels.block_sums(kernels.prepare(params, half, path=path), X, ids, weights)
    single = kernels.block_sums(
        kernels.prepare(params, np.float32, path=path), widened, ids, weights
    )
    assert_sums_identical(half_sums, single)
    assert_sums_close(half_sums, objective.block_sums(params, widened, ids, weights), 2e-6)


@pytest.mark.parametrize("way", ["_widen_float16_in_hardware", "_widen_float16_bits"])
def test_every_float16_bit_pattern_widens_to_numpys_float32(way):
    from dsoftmax.kernels import fused

    if way == "_widen_float16_in_hardware" and not fused.half_conversion_in_hardware():
        pytest.skip("numba compiles for a processor without a binary16 conversion here")
    bits = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    widened = np.empty(len(bits), dtype=np.float32)
    getattr(fused, way)(bits, widened)
    expected = bits.view(np.float16).astype(np.float32)
    is_nan = np.isnan(expected)
    np.testing.assert_array_equal(widened[~is_nan].view(np.uint32),
                                  expected[~is_nan].view(np.uint32))  # fmt: skip
    assert np.isnan(widened[is_nan]).all()


def test_float16_is_widened_in_hardware_only_where_numba_compiles_for_it(monkeypatch):
    import platform

    import numba

    from dsoftmax.kernels import fused

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+sse2,+avx,-f16c")
    assert not fused.half_conversion_in_hardware()
    monkeypatch.setattr(numba.config, "CPU_FEATURES", "+sse2,+avx,+f16c")
    assert fused.half_conversion_in_hardware()
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert fused.half_conversion_in_hardware()
    monkeypatch.setattr(platform, "machine", lambda: "ppc64le")
    assert not fused.half_conversion_in_hardware()

    def unreadable():
        raise RuntimeError("failed to get host cpu features")

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(numba.config, "CPU_FEATURES", None)
    monkeypatch.setattr(fused.llvm, "get_host_cpu_features", unreadable)
    assert not fused.half_conversion_in_hardware()


@pytest.mark.parametrize("path", PATHS)
def test_repeated_and_concurrent_calls_give_the_same_bits(path):
    params, X, _ids, probabilities, weights = make_problem(n_rows=2000, dtype=np.float32)
    prepared = kernels.prepare(params, X.dtype, path=path)
    first = kernels.block_sums(prepared, X, probabilities, weights)
    assert_sums_identical(first, kernels.block_sums(prepared, X, probabilities, weights))
    results = [None] * 4

    def evaluate(slot):
        results[slot] = kernels.block_sums(prepared, X, probabilities, weights)

    threads = [threading.Thread(target=evaluate, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        assert_sums_identical(result, first)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("labels_kind", ["ids", "rows"])
def test_metrics_match_the_reference(path, labels_kind):
    params, X, ids, probabilities, weights = make_problem(n_rows=500)
    labels = ids if labels_kind == "ids" else probabilities
    prepared = kernels.prepare(params, X.dtype, path=path)
    metrics = kernels.block_metrics(prepared, X, labels, weights)
    reference = reference_block_metrics(params, X, labels, weights)
    assert metrics.loss_sum == pytest.approx(reference.loss_sum, rel=1e-12)
    assert metrics.correct_sum == pytest.approx(reference.correct_sum, rel=1e-12)
    assert metrics.weight_sum == pytest.approx(reference.weight_sum, rel=1e-15)
    rows = np.arange(3, 400, 7)
    selected = kernels.block_metrics(prepared, X, labels[rows], weights[rows], rows)
    gathered = kernels.block_metrics(prepared, X[rows], labels[rows], weights[rows])
    assert selected == gathered


def test_metrics_count_the_first_largest_logit_as_the_prediction():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    params = Params(np.array([[1.0, 0.0], [0.0, 1.0]]), None)
    for path in PATHS:
        prepared = kernels.prepare(params, X.dtype, path=path)
        # The third row's logits tie: the first class is predicted.
        metrics = kernels.block_metrics(prepared, X, np.array([0, 1, 0]))
        assert metrics.correct_sum == 3.0
        assert kernels.block_metrics(prepared, X, np.array([0, 1, 1])).correct_sum == 2.0


def test_prepare_pads_and_casts_the_weights_once():
    params, _, _, _, _ = make_problem(n_classes=7, n_features=9)
    prepared = kernels.prepare(params, np.float16)
    assert prepared.coef.dtype == np.float32 and prepared.coef.flags.c_contiguous
    assert prepared.coef.shape == (10, 9)
    np.testing.assert_array_equal(prepared.coef[:7], params.coef.astype(np.float32))
    assert not np.any(prepared.coef[7:]) and not np.any(prepared.intercept[7:])
    no_intercept = kernels.prepare(Params(params.coef, None), np.float64)
    assert not np.any(no_intercept.intercept)
    assert kernels.compute_dtype(np.float64) == np.float64
    assert kernels.compute_dtype(np.float16) == np.float32


def test_bad_input_is_refused_with_a_clear_message():
    params, X, ids, _, _ = make_problem()
    prepared = kernels.prepare(params, X.dtype)
    with pytest.raises(TypeError, match=r"X has dtype int64; the block kernel reads float64"):
        kernels.prepare(params, np.int64)
    with pytest.raises(TypeError, match=r"prepared for float64; call prepare\(params, X.dtype\)"):
        kernels.block_sums(prepared, X.astype(np.float32), ids)
    with pytest.raises(ValueError, match="X has 69 features but the model has 70"):
        kernels.block_sums(prepared, X[:, 1:], ids)
    with pytest.raises(ValueError, match=r"class ids must lie in \[0, 7\), got values from 1 to 7"):
        kernels.block_sums(prepared, X, np.where(ids == 0, 7, ids))
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 300\)"):
        kernels.rows_sums(prepared, X, ids[:2], None, np.array([0, 300]))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(300,\)"):
        kernels.block_sums(prepared, X, ids, np.ones(3))
    with pytest.raises(ValueError, match="path must be 'fused' or 'blas', got 'gpu'"):
        kernels.prepare(params, X.dtype, path="gpu")
    with pytest.raises(ValueError, match=r"labels must have shape \(300,\)"):
        kernels.block_sums(prepared, X, ids[:5])


def test_the_benchmark_baseline_computes_the_reference_sums():
    from benchmarks.kernel_baselines import blocked_numpy_stages, blocked_numpy_sums

    params, X, ids, _, _ = make_problem(n_rows=1000, dtype=np.float32)
    sums = blocked_numpy_sums(params, X, ids, tile_rows=300)
    assert_sums_close(sums, objective.block_sums(params, X, ids), 2e-6)
    stages = blocked_numpy_stages(params, X, ids, tile_rows=300)
    assert set(stages) == {"logits product", "softmax and residual", "gradient product"}
    assert all(seconds > 0 for seconds in stages.values())
