"""The data-parallel engine against the single-machine reference, on real worker processes."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster

from dsoftmax.engine import DaskEngine, LocalEngine, tree_reduce
from dsoftmax.objective import Params, block_sums, finalize, loss_and_grad
from dsoftmax.sampling import rows_to_blocks

N_SAMPLES, N_FEATURES, N_CLASSES = 701, 5, 4
UNEVEN_CHUNKS = (200, 1, 150, 99, 100, 51, 100)  # 7 uneven blocks
L2 = 0.03


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(N_SAMPLES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, N_SAMPLES)
    weights = rng.uniform(0.5, 2.0, N_SAMPLES)
    params = Params(rng.normal(size=(N_CLASSES, N_FEATURES)), rng.normal(size=N_CLASSES))
    return X, y, weights, params


def _cluster(n_workers: int) -> LocalCluster:
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit="1GiB",
    )


@pytest.fixture(scope="module", params=[1, 2, 3], ids=lambda n: f"{n}-workers")
def client(request):
    with _cluster(request.param) as cluster, Client(cluster) as client:
        yield client


def _dask_inputs(X, y, weights, chunks):
    return (
        da.from_array(X, chunks=(chunks, -1)),
        da.from_array(y, chunks=(chunks,)),
        None if weights is None else da.from_array(weights, chunks=(chunks,)),
    )


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


# Results per chunking and worker count, to compare bit for bit across worker counts.
_seen: dict[tuple, tuple] = {}


@pytest.mark.cluster
@pytest.mark.parametrize("chunks", [(N_SAMPLES,), UNEVEN_CHUNKS], ids=["1-chunk", "7-uneven"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_distributed_gradient_equals_reference(client, problem, chunks, weighted):
    X, y, weights, params = problem
    weights = weights if weighted else None
    with DaskEngine(client, *_dask_inputs(X, y, weights, chunks)) as engine:
        loss, grad = finalize(engine.sums(params), params, L2)
        assert engine.n_round_trips == 2  # the placement look-up, then the evaluation
        for _ in range(3):
            engine.sums(params)
        assert engine.n_round_trips == 5
    expected_loss, expected = loss_and_grad(params, X, y, L2, weights)
    assert abs(loss - expected_loss) / abs(expected_loss) < 1e-10
    assert _relative_error(grad.coef, expected.coef) < 1e-10
    assert _relative_error(grad.intercept, expected.intercept) < 1e-10

    key = (chunks, weighted)
    result = (loss, grad.coef.tobytes(), grad.intercept.tobytes())
    n_workers = len(client.scheduler_info()["workers"])
    if key in _seen:
        assert _seen[key][1] == result, f"differs between {_seen[key][0]} and {n_workers} workers"
    else:
        _seen[key] = (n_workers, result)


@pytest.mark.cluster
def test_minibatch_sums_cover_exactly_the_selected_rows(client, problem):
    X, y, weights, params = problem
    rows = np.random.default_rng(3).choice(N_SAMPLES, size=97, replace=False)
    batch = rows_to_blocks(rows, UNEVEN_CHUNKS)
    with DaskEngine(client, *_dask_inputs(X, y, weights, UNEVEN_CHUNKS)) as engine:
        sums = engine.sums(params, batch)
        metrics = engine.metrics(params, batch)
    expected = block_sums(params, X[np.sort(rows)], y[np.sort(rows)], weights[np.sort(rows)])
    assert sums.weight_sum == pytest.approx(expected.weight_sum, rel=1e-12)
    assert _relative_error(sums.grad_coef_sum, expected.grad_coef_sum) < 1e-10
    assert metrics.loss_sum == pytest.approx(expected.loss_sum, rel=1e-10)


@pytest.mark.cluster
def test_float32_blocks_stay_float32_and_accumulate_in_float64(client, problem):
    X, y, _, params = problem
    X32 = X.astype(np.float32)
    with DaskEngine(client, *_dask_inputs(X32, y, None, UNEVEN_CHUNKS)) as engine:
        sums = engine.sums(params)
    assert sums.grad_coef_sum.dtype == np.float64
    reference = block_sums(params, X, y)
    assert _relative_error(sums.grad_coef_sum, reference.grad_coef_sum) < 1e-5


def test_local_engine_matches_reference_and_reduce_order_is_fixed(problem):
    X, y, weights, params = problem
    engine = LocalEngine(X, y, weights, chunk_rows=64)
    loss, grad = finalize(engine.sums(params), params, L2)
    expected_loss, expected = loss_and_grad(params, X, y, L2, weights)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    assert _relative_error(grad.coef, expected.coef) < 1e-12
    assert len(engine.blocks) == int(np.ceil(N_SAMPLES / 64))


def test_tree_reduce_groups_in_block_order():
    calls = []

    def add_group(group):
        calls.append(list(group))
        return "(" + "+".join(group) + ")"

    result = tree_reduce([str(i) for i in range(6)], add_group)
    assert result == "((0+1+2+3)+(4+5))"
    with pytest.raises(ValueError, match="empty"):
        tree_reduce([], add_group)


def test_engine_refuses_misaligned_chunks(problem):
    X, y, _, _ = problem
    with pytest.raises(ValueError, match="different row chunks"):
        DaskEngine(None, da.from_array(X, chunks=(100, -1)), da.from_array(y, chunks=(50,)))
    with pytest.raises(ValueError, match="chunked by rows only"):
        DaskEngine(None, da.from_array(X, chunks=(100, 2)), da.from_array(y, chunks=(100,)))
