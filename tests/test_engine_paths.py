"""Every way an evaluation runs gives the same bits, and so do the fits built on them.

One evaluation can reach the rows through a block server (the actor), one task per worker over
held blocks, a task streaming blocks from the store, or this process (LocalEngine); a minibatch
fit can hold its data or stream it. The weights depend on the data, the seed and the
hyper-parameters only.
"""

from __future__ import annotations

import os
import signal
import warnings

import dask.array as da
import numpy as np
import pytest
from daskprocs import small_local_cluster
from distributed import Client, LocalCluster
from sklearn.exceptions import ConvergenceWarning

from dsoftmax import SoftmaxRegression, open_dataset, write_dataset
from dsoftmax.engine import DaskEngine, LocalEngine
from dsoftmax.objective import Params
from dsoftmax.sampling import rows_to_blocks

N_SAMPLES, N_FEATURES, N_CLASSES = 1_200, 6, 3
CHUNK_ROWS = 150  # 8 blocks


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(N_SAMPLES, N_FEATURES)).astype(np.float32)
    teacher = rng.normal(size=(N_CLASSES, N_FEATURES))
    y = np.argmax(X @ teacher.T + rng.gumbel(size=(N_SAMPLES, N_CLASSES)), axis=1)
    weights = rng.uniform(0.5, 2.0, N_SAMPLES)
    params = Params(rng.normal(size=(N_CLASSES, N_FEATURES)), rng.normal(size=N_CLASSES))
    return X, y, weights, params


@pytest.fixture(scope="module")
def store(problem, tmp_path_factory):
    X, y, weights, _ = problem
    url = str(tmp_path_factory.mktemp("paths") / "train.zarr")
    write_dataset(url, X, y, sample_weight=weights, chunk_rows=CHUNK_ROWS)
    return url


def _cluster(n_workers: int, memory_limit: str = "1GiB") -> LocalCluster:
    return small_local_cluster(n_workers, memory_limit)


@pytest.fixture(scope="module", params=[1, 2, 3], ids=lambda n: f"{n}-workers")
def client(request):
    with (
        _cluster(request.param) as cluster,
        Client(cluster, set_as_default=False, direct_to_workers=True) as client,
    ):
        yield client


def _bits(value) -> tuple:
    return tuple(
        field.tobytes() if isinstance(field, np.ndarray) else float(field) for field in value
    )


def _evaluations(engine, params, class_weight):
    """Every kind of evaluation, over all rows and over a minibatch spread over blocks."""
    batch = rows_to_blocks(np.arange(5, N_SAMPLES, 7), engine.chunk_rows)
    return [
        _bits(engine.sums(params, class_weight=class_weight)),
        _bits(engine.sums(params, batch, class_weight=class_weight)),
        _bits(engine.metrics(params, batch, class_weight=class_weight)),
        _bits(engine.report(params, class_weight=class_weight)),
    ]


@pytest.mark.cluster
def test_every_evaluation_path_gives_the_local_engines_bits(client, problem, store):
    X, y, weights, params = problem
    class_weight = np.array([1.0, 2.0, 0.5])
    expected = _evaluations(LocalEngine(X, y, weights, chunk_rows=CHUNK_ROWS), params, class_weight)
    dataset = open_dataset(store)
    inputs = (dataset.X, dataset.y, dataset.sample_weight)
    with DaskEngine(client, *inputs, hold="memory") as held:
        assert _evaluations(held, params, class_weight) == expected  # block servers
        held._use_servers = False
        assert _evaluations(held, params, class_weight) == expected  # tasks over held blocks
    with DaskEngine(client, *inputs, hold="stream") as streamed:
        streamed.window = 2  # fewer blocks than any of these evaluations: every one streams
        assert _evaluations(streamed, params, class_weight) == expected
    local_stream = LocalEngine(*inputs, hold="stream")
    assert _evaluations(local_stream, params, class_weight) == expected


@pytest.mark.cluster
@pytest.mark.slow
def test_evaluations_after_a_worker_is_lost_keep_their_bits(problem, store):
    X, y, weights, params = problem
    expected = _evaluations(LocalEngine(X, y, weights, chunk_rows=CHUNK_ROWS), params, None)
    dataset = open_dataset(store)
    with (
        _cluster(2) as cluster,
        Client(cluster, set_as_default=False, direct_to_workers=True) as two,
        DaskEngine(two, dataset.X, dataset.y, dataset.sample_weight) as engine,
    ):
        assert _evaluations(engine, params, None) == expected
        victim = sorted(two.scheduler_info()["workers"])[0]
        os.kill(two.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
        assert _evaluations(engine, params, None) == expected


def _fit(solver: str, train, *, client, hold: str, **options) -> np.ndarray:
    model = SoftmaxRegression(
        solver=solver, max_iter=2, batch_size=64, learning_rate=0.05, random_state=3,
        shuffle_window=300, client=client, hold_data=hold, chunk_rows=CHUNK_ROWS, **options,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if isinstance(train, tuple):
            model.fit(*train)
        else:
            model.fit(train)
    return np.concatenate([model.coef_.ravel(), model.intercept_])


_fitted: dict[tuple, bytes] = {}


@pytest.mark.cluster
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_minibatch_weights_are_the_same_held_streamed_or_from_numpy(
    client, problem, store, solver
):
    X, y, weights, _ = problem
    dataset = open_dataset(store)
    in_process = _fit(solver, (X, y, weights), client=None, hold="auto")
    runs = {
        "memory": _fit(solver, dataset, client=client, hold="memory"),
        "stream": _fit(solver, dataset, client=client, hold="stream"),
        "numpy on the cluster": _fit(solver, (X, y, weights), client=client, hold="memory"),
        "dask arrays": _fit(
            solver,
            (dataset.X, da.from_array(y, chunks=CHUNK_ROWS), dataset.sample_weight),
            client=client,
            hold="auto",
        ),
    }
    for name, weights_found in runs.items():
        assert weights_found.tobytes() == in_process.tobytes(), name
    # And across worker counts (the module's cluster fixture runs 1, 2 and 3 workers).
    previous = _fitted.setdefault(("fit", solver), in_process.tobytes())
    assert previous == in_process.tobytes()
    assert np.abs(in_process).max() > 0.01  # it trained


@pytest.mark.cluster
def test_streamed_minibatches_need_a_shuffle_window(store):
    with (
        _cluster(1) as cluster,
        Client(cluster, set_as_default=False) as one,
    ):
        model = SoftmaxRegression(solver="sgd", client=one, hold_data="stream")
        with pytest.raises(ValueError, match="Set shuffle_window"):
            model.fit(open_dataset(store))


def test_a_shuffle_window_wider_than_the_streamed_blocks_held_is_refused(store):
    from dsoftmax.fitting import check_streamed_minibatches
    from dsoftmax.training import TrainConfig

    dataset = open_dataset(store)
    engine = DaskEngine(None, dataset.X, dataset.y, hold="stream")
    engine.window = 4  # as on workers with little memory: 4 blocks of 150 rows held at most
    narrow = TrainConfig(solver="sgd", shuffle_window=150)
    check_streamed_minibatches(engine, narrow)  # 2 windows of up to 2 blocks each
    wide = TrainConfig(solver="sgd", shuffle_window=600)
    with pytest.raises(ValueError, match=r"shuffle_window=600 rows spans up to 8 blocks"):
        check_streamed_minibatches(engine, wide)
    check_streamed_minibatches(engine, TrainConfig(solver="lbfgs"))  # full passes stream


def test_workers_without_room_for_a_batchs_blocks_refuse_minibatches_before_the_fit(store):
    from dsoftmax.engine.plan import WorkerMemory, window_blocks
    from dsoftmax.fitting import check_streamed_minibatches
    from dsoftmax.training import TrainConfig

    dataset = open_dataset(store)
    engine = DaskEngine(None, dataset.X, dataset.y, hold="stream")
    # Workers whose own memory already reaches their pause budget hold no block at all.
    crowded = [WorkerMemory(f"tcp://127.0.0.1:{port}", 512 * 2**20, 400 * 2**20) for port in (1, 2)]
    engine.window = window_blocks(
        engine.block_bytes, crowded, work_bytes=0, budget_fraction=0.8
    )
    assert engine.window == 0
    smallest = TrainConfig(solver="sgd", shuffle_window=1)
    with pytest.raises(ValueError, match=r"room for 0 below Dask's pause threshold.*more memory"):
        check_streamed_minibatches(engine, smallest)
    check_streamed_minibatches(engine, TrainConfig(solver="lbfgs"))  # full passes stream


class _ThreadCountingProblem:
    """An in-process engine's objective that records the BLAS threads each evaluation sees."""

    def __init__(self, engine):
        from dsoftmax.engine import EngineProblem

        self.inner = EngineProblem(engine, l2=1e-3)
        self.n_samples = self.inner.n_samples
        self.weighted = False
        self.blas_threads = []

    def value_and_grad(self, params, rows=None, *, weight=None):
        from threadpoolctl import threadpool_info

        blas = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        self.blas_threads.append(max(blas))
        return self.inner.value_and_grad(params, rows, weight=weight)

    def metrics(self, params, rows=None):
        return self.inner.metrics(params, rows)


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_a_fit_runs_this_processs_blas_on_one_thread_and_restores_it(solver):
    from threadpoolctl import threadpool_info, threadpool_limits

    from dsoftmax.training import TrainConfig, train

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((400, 6)), rng.integers(0, 3, 400)
    problem = _ThreadCountingProblem(LocalEngine(X, y, chunk_rows=100, n_threads=2))
    start = Params(np.zeros((3, 6)), np.zeros(3))
    with threadpool_limits(limits=2, user_api="blas"):
        before = [pool["num_threads"] for pool in threadpool_info()]
        train(problem, start, TrainConfig(solver=solver, max_iter=3, batch_size=100))
        after = [pool["num_threads"] for pool in threadpool_info()]
    assert problem.blas_threads and set(problem.blas_threads) == {1}
    assert after == before and 2 in before
