"""Target 9, sparse features: bag-of-words rows held as CSR blocks on the workers.

Hashed-text rows from :func:`dsoftmax.data.make_bag_of_words` (float32, unit L2 norm, about
``nnz_per_row`` distinct words each) are written as a sparse dataset (row blocks of CSR) and
loaded onto a local cluster whose workers have ``memory_limit`` each. Measured in one run:

* a pass: ``DaskEngine.sums`` (loss and gradient sums with the sparse block kernel) against the
  same math in this process with scipy.sparse (``X @ Wᵀ``, softmax, ``(Tᵀ X)`` as ``X.T @ T``),
  rounds taking turns;
* the time to scikit-learn's objective: ``LogisticRegression(solver="lbfgs",
  fit_intercept=False)``'s whole ``fit`` on the CSR matrix in memory, against dsoftmax's L-BFGS
  over the workers' blocks from the store on disk (the load included) until its objective is
  within ``rel_tol`` of scikit-learn's;
* the store: the bytes of its arrays (uncompressed, and on disk) against the CSR arrays' bytes;
* memory: the dense form's bytes, each worker's largest resident memory, and whether a worker
  restarted (its process id changed) during the run.

Targets: a pass at most 0.6× scipy.sparse's; the time to scikit-learn's objective at most 0.5×
its fit; the store at most 1.5× the CSR bytes; no worker restart.

Run ``python -m benchmarks.bench_sparse [--quick]`` from the repository root.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsoftmax.objective import Params, finalize

from .bench_optimum import FLOAT32_REL_NOISE, TargetReachedError, _Recorder
from .bench_pass import random_params
from .common import (
    Section,
    Verdict,
    bench_main,
    connect,
    directory_bytes,
    markdown_table,
    measure_interleaved,
    start_cluster,
    time_to_target,
    worker_max_rss,
    worker_processes,
)

__all__ = [
    "FULL",
    "NAME",
    "QUICK",
    "THRESHOLD_PASS",
    "THRESHOLD_SKLEARN",
    "THRESHOLD_STORE",
    "SparseConfig",
    "run",
    "scipy_sparse_sums",
]

NAME = "sparse"
#: Target 9: a pass on the workers ÷ a single-process scipy.sparse pass, at most.
THRESHOLD_PASS = 0.6
#: Target 9: dsoftmax's load + time to scikit-learn's objective ÷ scikit-learn's fit, at most.
THRESHOLD_SKLEARN = 0.5
#: Target 9: the store's array bytes ÷ the CSR arrays' bytes, at most.
THRESHOLD_STORE = 1.5


@dataclass(frozen=True)
class SparseConfig:
    """Sizes of the sparse benchmark."""

    n_samples: int = 200_000
    n_features: int = 2**18
    n_classes: int = 20
    nnz_per_row: int = 100
    chunk_rows: int = 25_000
    l2: float = 1e-5
    rel_tol: float = 1e-6
    n_workers: int = 2
    memory_limit: str = "1GiB"
    repeat: int = 3
    max_evals: int = 500
    sklearn_max_iter: int = 1000


FULL = SparseConfig()
QUICK = SparseConfig(
    n_samples=4_000, n_features=2**14, nnz_per_row=50, chunk_rows=1_000, repeat=1, max_evals=200
)


def scipy_sparse_sums(params: Params, X: Any, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The loss sum and ``Tᵀ X`` of a CSR ``X``, with scipy.sparse's products in process.

    Parameters
    ----------
    params : Params
        ``coef`` of shape (n_classes, n_features); no intercept.
    X : scipy.sparse.csr_matrix of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)

    Returns
    -------
    loss_sum : float
    grad_coef_sum : ndarray of shape (n_classes, n_features)
    """
    logits = np.asarray(X @ params.coef.T.astype(X.dtype), dtype=np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits).sum(axis=1))
    rows = np.arange(y.shape[0])
    loss_sum = float(np.sum(log_norm - logits[rows, y]))
    residual = np.exp(logits - log_norm[:, None])
    residual[rows, y] -= 1.0
    return loss_sum, np.asarray((X.T @ residual.astype(X.dtype)).T)


def _sklearn_fit(X: Any, y: np.ndarray, config: SparseConfig) -> tuple[float, Any]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(
        C=1.0 / (2.0 * config.l2 * X.shape[0]), fit_intercept=False,
        max_iter=config.sklearn_max_iter,
    )  # fmt: skip
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    return time.perf_counter() - started, model


def _time_to_goal(client: Any, dataset: Any, config: SparseConfig, goal: float) -> tuple:
    """Seconds from the store to the first objective ``<= goal`` (the load included), the
    evaluations it took and the best objective seen."""
    from dsoftmax.engine import DaskEngine
    from dsoftmax.optim import minimize_lbfgs

    shape = (config.n_classes, config.n_features)
    started = time.perf_counter()
    with DaskEngine(client, dataset.X, dataset.y) as engine:

        def loss_and_flat_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
            params = Params(x.reshape(shape), None)
            loss, grad = finalize(engine.sums(params), params, config.l2)
            return loss, grad.coef.ravel()

        recorder = _Recorder(loss_and_flat_grad, goal, config.max_evals)
        recorder.started = started
        try:
            minimize_lbfgs(recorder, np.zeros(math.prod(shape)), max_iter=10_000, tol=1e-10,
                           rel_noise=FLOAT32_REL_NOISE)  # fmt: skip
        except TargetReachedError:
            pass
    best = min(loss for _, loss in recorder.history)
    return time_to_target(recorder.history, goal), len(recorder.history), best


def _store_bytes(dataset: Any, url: Path) -> tuple[int, int]:
    """The stored arrays of ``X``: their uncompressed bytes, and the directory's bytes."""
    import zarr

    group = zarr.open_group(str(url), mode="r")
    logical = sum(group[name].nbytes for name in ("X/data", "X/indices", "X/row_nnz"))
    return logical, directory_bytes(url / "X")


def run(config: SparseConfig, workdir: Path) -> Section:
    """Run the benchmark.

    Parameters
    ----------
    config : SparseConfig
    workdir : Path
        A directory for the dataset (shared with the other benchmarks of a run).
    """
    from dsoftmax.data import make_bag_of_words, write_dataset
    from dsoftmax.engine import DaskEngine

    X, y = make_bag_of_words(
        config.n_samples, config.n_features, config.n_classes,
        nnz_per_row=config.nnz_per_row, seed=0, dtype="float32",
    )  # fmt: skip
    url = workdir / f"sparse-{config.n_samples}x{config.n_features}.zarr"
    dataset = write_dataset(url, X, y, chunk_rows=config.chunk_rows, overwrite=True)
    csr_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    logical, on_disk = _store_bytes(dataset, url)
    dense_bytes = config.n_samples * config.n_features * 4

    sklearn_seconds, reference = _sklearn_fit(X, y, config)
    reference_params = Params(reference.coef_.astype(np.float64), None)
    f_sklearn = finalize(_sums_in_process(reference_params, X, y), reference_params, config.l2)[0]
    goal = f_sklearn * (1 + config.rel_tol)

    params = random_params(config.n_classes, config.n_features)
    params = Params(params.coef, None)
    with start_cluster(config.n_workers, config.memory_limit) as cluster, connect(
        cluster
    ) as client:
        pids = worker_processes(client)
        to_goal, n_evals, best = _time_to_goal(client, dataset, config, goal)
        with DaskEngine(client, dataset.X, dataset.y) as engine:
            engine.sums(params)  # waits for every block
            timings = measure_interleaved(
                {
                    "workers": lambda _: engine.sums(params),
                    "scipy": lambda _: scipy_sparse_sums(params, X, y),
                },
                config.repeat,
                warmup=1,
            )
        peaks = worker_max_rss(client)
        restarted = worker_processes(client) != pids

    pass_ratio = timings["workers"].median / timings["scipy"].median
    sklearn_ratio = to_goal / sklearn_seconds
    store_ratio = logical / csr_bytes
    mib = 2**20
    table = markdown_table(
        ["measure", "value"],
        [
            ["pass, DaskEngine.sums on the workers (median s)", f"{timings['workers'].median:.4f}"],
            ["pass, scipy.sparse in one process (median s)", f"{timings['scipy'].median:.4f}"],
            ["scikit-learn LogisticRegression fit (s)", f"{sklearn_seconds:.2f}"],
            [f"dsoftmax load + L-BFGS to its objective ·(1+{config.rel_tol:g}) (s)",
             f"{to_goal:.2f} ({n_evals} evaluations)"],
            ["best objective gap to scikit-learn's", f"{(best - f_sklearn) / f_sklearn:.1e}"],
            ["CSR arrays (MiB)", f"{csr_bytes / mib:.1f}"],
            ["store arrays, uncompressed / on disk (MiB)",
             f"{logical / mib:.1f} / {on_disk / mib:.1f}"],
            ["dense form of X, float32 (GiB)", f"{dense_bytes / 2**30:.1f}"],
            [f"largest worker RSS, limit {config.memory_limit} (MiB)",
             f"{max(peaks.values()) / mib:.0f}"],
            ["a worker restarted", str(restarted)],
        ],
    )  # fmt: skip
    body = "\n".join(
        [
            f"{config.n_samples:,} documents × {config.n_features:,} hashed columns, "
            f"{config.n_classes} classes, {X.nnz / X.shape[0]:.0f} non-zeros per row on average "
            f"(float32); {len(dataset.chunk_rows)} blocks of {config.chunk_rows:,} rows, zstd; "
            f"{config.n_workers} local workers × 1 thread, {config.memory_limit} each; "
            f"l2 = {config.l2:g}, no intercept. {config.repeat} timed pass rounds after a "
            "warm-up, the two candidates taking turns.",
            "",
            table,
        ]
    )
    return Section(
        name=NAME,
        title=f"10. Sparse features: {config.n_samples:,} documents × {config.n_features:,} "
        f"columns, {config.n_classes} classes",
        body=body,
        verdicts=[
            Verdict("10 sparse", "pass, workers ÷ scipy.sparse in one process", pass_ratio,
                    THRESHOLD_PASS),
            Verdict("10 sparse", "load + time to scikit-learn's objective ÷ its fit",
                    sklearn_ratio, THRESHOLD_SKLEARN),
            Verdict("10 sparse", "store array bytes ÷ CSR bytes", store_ratio, THRESHOLD_STORE),
            Verdict("10 sparse", "worker restarts on 1 GiB workers", float(restarted), 0.0),
        ],
    )  # fmt: skip


def _sums_in_process(params: Params, X: Any, y: np.ndarray) -> Any:
    """The block sums of all of ``X`` by the sparse kernel, in this process."""
    from dsoftmax import kernels

    return kernels.block_sums(kernels.prepare_for(params, X), X, y)


if __name__ == "__main__":
    bench_main(__doc__, run, FULL, QUICK)
