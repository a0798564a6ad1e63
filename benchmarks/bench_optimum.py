"""Target 2, time to the optimum: L-BFGS on the workers vs. scipy and scikit-learn in memory.

Three ways to minimize the same objective (no intercept, λ = 1e-4, started from zero), timed in
one run, rounds taking turns:

* dsoftmax: :func:`dsoftmax.optim.minimize_lbfgs` over ``DaskEngine.sums`` with the blocks held
  by the workers (the driver ``SoftmaxRegression(solver="lbfgs")`` uses, float32 noise rule
  included), recording ``(seconds, objective)`` per evaluation;
* scipy: ``scipy.optimize.minimize(method="L-BFGS-B")`` over the blocked NumPy pass of
  :mod:`benchmarks.bench_pass` (2 threads, each half of the blocks with one BLAS thread), on the
  same float32 data in this process's memory;
* scikit-learn: ``LogisticRegression(solver="lbfgs", C=1/(2λN), fit_intercept=False)``, its
  whole ``fit``.

The goal is scikit-learn's objective value ``f_sk``, evaluated with
:func:`dsoftmax.objective.loss_and_grad` at its ``coef_`` on float64 data; a run reaches it at its
first evaluation with objective ``<= f_sk·(1 + 1e-6)``, and stops there. Targets: dsoftmax's time
from the store on disk to the goal, the load onto the workers included, is at most 0.6× scipy's
and 0.15× scikit-learn's fit with the data already in memory for both (medians); loading the
data onto the workers takes no longer than one read of the store with Dask on the same cluster.

Run ``python -m benchmarks.bench_optimum [--quick]`` from the repository root.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsoftmax.objective import Params, block_sums, finalize, sum_blocks

from .bench_pass import blocked_pass
from .common import (
    SETTLE_SECONDS,
    Section,
    Timing,
    Verdict,
    bench_main,
    connect,
    markdown_table,
    plural,
    start_cluster,
    teacher_dataset,
    time_to_target,
)

__all__ = [
    "FULL",
    "NAME",
    "QUICK",
    "THRESHOLD_LOAD",
    "THRESHOLD_SCIPY",
    "THRESHOLD_SKLEARN",
    "OptimumConfig",
    "TargetReachedError",
    "objective_float64",
    "run",
]

NAME = "optimum"
#: Target 2: dsoftmax's load + time to the goal ÷ scipy L-BFGS-B on NumPy, at most.
THRESHOLD_SCIPY = 0.6
#: Target 2: dsoftmax's load + time to the goal ÷ scikit-learn's fit, at most.
THRESHOLD_SKLEARN = 0.15
#: Target 2: loading the data onto the workers ÷ one read of the store with Dask, at most.
THRESHOLD_LOAD = 1.0
#: float32 products put ~1e-8 relative rounding noise into the loss (dsoftmax.training).
FLOAT32_REL_NOISE = 1e-7


@dataclass(frozen=True)
class OptimumConfig:
    """Sizes of the time-to-optimum benchmark."""

    n_samples: int = 1_000_000
    n_features: int = 128
    n_classes: int = 10
    chunk_rows: int = 62_500
    l2: float = 1e-4
    rel_tol: float = 1e-6
    n_workers: int = 2
    repeat: int = 3
    #: scikit-learn's fit is the slowest way by far: fewer repetitions keep the run short.
    sklearn_repeat: int = 2
    load_repeat: int = 3
    #: Evaluations after which a run that has not reached the goal gives up.
    max_evals: int = 200
    sklearn_max_iter: int = 1000


FULL = OptimumConfig()
QUICK = OptimumConfig(
    n_samples=40_000,
    n_features=32,
    chunk_rows=5_000,
    repeat=1,
    sklearn_repeat=1,
    load_repeat=1,
    max_evals=100,
)


class TargetReachedError(Exception):
    """Raised from inside an optimizer's loop to stop it at the first evaluation on target."""


class _Recorder:
    """Wraps ``fun(x) -> (loss, grad)``: records ``(seconds, loss)``, stops on the goal."""

    def __init__(
        self, fun: Callable[[np.ndarray], tuple[float, np.ndarray]], goal: float, max_evals: int
    ) -> None:
        self.fun = fun
        self.goal = goal
        self.max_evals = max_evals
        self.history: list[tuple[float, float]] = []
        self.started = time.perf_counter()

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = self.fun(x)
        self.history.append((time.perf_counter() - self.started, float(loss)))
        if loss <= self.goal or len(self.history) >= self.max_evals:
            raise TargetReachedError
        return loss, grad


@dataclass(frozen=True)
class _Run:
    seconds: float  # to the goal; inf when never reached
    n_evals: int
    best_gap: float  # smallest (f - f_sk) / f_sk seen


def _summarize(recorder: _Recorder, f_sklearn: float) -> _Run:
    seconds = time_to_target(recorder.history, recorder.goal)
    reached = [i for i, (_, loss) in enumerate(recorder.history) if loss <= recorder.goal]
    n_evals = reached[0] + 1 if reached else len(recorder.history)
    best = min(loss for _, loss in recorder.history)
    return _Run(seconds, n_evals, (best - f_sklearn) / abs(f_sklearn))


def _flat(config: OptimumConfig) -> tuple[tuple[int, int], np.ndarray]:
    shape = (config.n_classes, config.n_features)
    return shape, np.zeros(shape[0] * shape[1])


def _dsoftmax_run(engine: Any, config: OptimumConfig, goal: float, f_sklearn: float) -> _Run:
    from dsoftmax.optim import minimize_lbfgs

    shape, x0 = _flat(config)

    def loss_and_flat_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        params = Params(x.reshape(shape), None)
        loss, grad = finalize(engine.sums(params), params, config.l2)
        return loss, grad.coef.ravel()

    recorder = _Recorder(loss_and_flat_grad, goal, config.max_evals)
    try:
        minimize_lbfgs(recorder, x0, max_iter=10_000, tol=1e-10, rel_noise=FLOAT32_REL_NOISE)
    except TargetReachedError:
        pass
    return _summarize(recorder, f_sklearn)


def _scipy_run(
    blocks: list[np.ndarray],
    labels: list[np.ndarray],
    config: OptimumConfig,
    goal: float,
    f_sk: float,
) -> _Run:
    import scipy.optimize

    shape, x0 = _flat(config)

    def loss_and_flat_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        params = Params(x.reshape(shape), None)
        sums = blocked_pass(params, blocks, labels, config.n_workers)
        loss, grad = finalize(sums, params, config.l2)
        return loss, grad.coef.ravel()

    recorder = _Recorder(loss_and_flat_grad, goal, config.max_evals)
    options = {"maxiter": 10_000, "gtol": 1e-12, "ftol": 1e-15}
    try:
        scipy.optimize.minimize(recorder, x0, jac=True, method="L-BFGS-B", options=options)
    except TargetReachedError:
        pass
    return _summarize(recorder, f_sk)


def _sklearn_fit(X: np.ndarray, y: np.ndarray, config: OptimumConfig) -> tuple[float, Any]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(
        solver="lbfgs",
        C=1.0 / (2.0 * config.l2 * X.shape[0]),
        fit_intercept=False,
        max_iter=config.sklearn_max_iter,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    return time.perf_counter() - started, model


def objective_float64(
    coef: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float, block_rows: int = 65_536
) -> float:
    """The objective (no intercept) at ``coef`` with float64 products, one block of rows at a
    time so that no float64 copy of the whole ``X`` is made.

    Parameters
    ----------
    coef : ndarray of shape (n_classes, n_features)
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    l2 : float
    block_rows : int

    Returns
    -------
    float
    """
    params = Params(np.asarray(coef, dtype=np.float64), None)
    parts = [
        block_sums(
            params, X[start : start + block_rows].astype(np.float64), y[start : start + block_rows]
        )
        for start in range(0, X.shape[0], block_rows)
    ]
    return finalize(sum_blocks(parts), params, l2)[0]


def _read_store(dataset: Any) -> None:
    import dask

    dask.compute(dataset.X.sum(), dataset.y.sum())


def _wait_until_released(client: Any, timeout: float = 30.0) -> None:
    """Wait until the workers hold no data any more (a closed engine's blocks, their chunks):
    a timed load must neither overlap their release nor reuse chunks still in memory."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline and any(client.has_what().values()):
        time.sleep(0.05)


def _fill_new_memory(n_bytes: int) -> float:
    """Worker task: seconds to allocate and fill ``n_bytes`` of new memory (then freed)."""
    started = time.perf_counter()
    np.ones(n_bytes // 4, dtype=np.float32)
    return time.perf_counter() - started


def _memory_commit(client: Any, dataset: Any, n_workers: int) -> float:
    """Seconds for every worker at once to allocate and fill its share of the blocks' bytes
    (the slowest worker): what holding the data costs in memory alone, without a read."""
    share = (dataset.X.nbytes + dataset.y.nbytes) // n_workers
    return max(client.run(_fill_new_memory, share).values())


def _load_engine(client: Any, dataset: Any, params: Params) -> tuple[Any, float]:
    from dsoftmax.engine import DaskEngine

    started = time.perf_counter()
    engine = DaskEngine(client, dataset.X, dataset.y)
    engine.sums(params)  # waits for every block
    return engine, time.perf_counter() - started


def run(config: OptimumConfig, workdir: Path) -> Section:
    """Run the benchmark.

    Parameters
    ----------
    config : OptimumConfig
    workdir : Path
        A directory for the dataset (shared with the other benchmarks of a run).
    """

    zero = Params(np.zeros((config.n_classes, config.n_features)), None)
    with start_cluster(config.n_workers) as cluster, connect(cluster) as client:
        dataset, _ = teacher_dataset(
            workdir, config.n_samples, config.n_features, config.n_classes, config.chunk_rows,
            client,
        )  # fmt: skip
        X = dataset.X.compute(scheduler="threads")
        y = dataset.y.compute(scheduler="threads")
        blocks = np.split(X, np.cumsum(dataset.chunk_rows)[:-1])
        labels = np.split(y, np.cumsum(dataset.chunk_rows)[:-1])

        reads, loads, evaluations, commits = [], [], [], []
        engine = None
        for _ in range(config.load_repeat):
            if engine is not None:
                engine.close()
                _wait_until_released(client)
            started = time.perf_counter()
            _read_store(dataset)
            reads.append(time.perf_counter() - started)
            engine, load_and_first = _load_engine(client, dataset, zero)
            started = time.perf_counter()
            engine.sums(zero)
            evaluations.append(time.perf_counter() - started)
            # The first evaluation waited for the load and then ran: take one evaluation off.
            loads.append(load_and_first - evaluations[-1])
            commits.append(_memory_commit(client, dataset, config.n_workers))
        assert engine is not None
        hold = getattr(engine, "hold", "memory")

        sklearn_seconds, model = _sklearn_fit(X, y, config)
        f_sklearn = objective_float64(model.coef_, X, y, config.l2)
        goal = f_sklearn * (1.0 + config.rel_tol)
        runs: dict[str, list[_Run]] = {"dsoftmax": [], "scipy": []}
        sklearn_times = [sklearn_seconds]
        with engine:
            for round_index in range(config.repeat):
                # Each run starts once the BLAS threads of the one before have gone to sleep.
                time.sleep(SETTLE_SECONDS)
                runs["dsoftmax"].append(_dsoftmax_run(engine, config, goal, f_sklearn))
                time.sleep(SETTLE_SECONDS)
                runs["scipy"].append(_scipy_run(blocks, labels, config, goal, f_sklearn))
                if 0 < round_index < config.sklearn_repeat:
                    time.sleep(SETTLE_SECONDS)
                    sklearn_times.append(_sklearn_fit(X, y, config)[0])

    return _section(
        config, runs, Timing(tuple(sklearn_times)), model, f_sklearn, reads, loads, commits,
        hold,
    )


def _median_run(runs: list[_Run]) -> Timing:
    return Timing(tuple(run.seconds for run in runs))


def _ratio(numerator: float, denominator: float) -> float:
    if math.isinf(numerator) or denominator <= 0:
        return math.inf
    return numerator / denominator


def _section(
    config: OptimumConfig,
    runs: dict[str, list[_Run]],
    sklearn: Timing,
    model: Any,
    f_sklearn: float,
    reads: list[float],
    loads: list[float],
    commits: list[float],
    hold: str,
) -> Section:
    dsoftmax, scipy_runs = _median_run(runs["dsoftmax"]), _median_run(runs["scipy"])
    read, load, commit = Timing(tuple(reads)), Timing(tuple(loads)), Timing(tuple(commits))
    loaded = Timing(tuple(sorted(run.seconds + load.median for run in runs["dsoftmax"])))

    def row(name: str, timing: Timing, how: list[_Run] | None) -> list[str]:
        evals = "" if how is None else "/".join(str(r.n_evals) for r in how)
        gap = "" if how is None else f"{min(r.best_gap for r in how):.1e}"
        return [
            name, *timing.cells(), evals, gap,
            f"{_ratio(timing.median, scipy_runs.median):.2f}",
            f"{_ratio(timing.median, sklearn.median):.2f}",
        ]  # fmt: skip

    table = markdown_table(
        ["to scikit-learn's objective (1e-6 relative)", "median s", "min s", "max s",
         "evaluations", "best (f − f_sk)/f_sk", "÷ scipy", "÷ scikit-learn"],
        [
            row(f"dsoftmax, from the store: load + L-BFGS, {config.n_workers} workers "
                f"(hold={hold!r})", loaded, runs["dsoftmax"]),
            row("dsoftmax L-BFGS alone, blocks held", dsoftmax, runs["dsoftmax"]),
            row(f"scipy L-BFGS-B on the blocked NumPy pass ({config.n_workers} threads), "
                "in process", scipy_runs, runs["scipy"]),
            row(f"scikit-learn LogisticRegression(lbfgs).fit, in process "
                f"({int(model.n_iter_[0])} iterations)", sklearn, None),
        ],
    )  # fmt: skip
    load_table = markdown_table(
        ["one-time cost", "median s", "min s", "max s", "÷ read"],
        [
            [f"read the store once with Dask on the {config.n_workers} workers "
             "(X.sum(), y.sum())", *read.cells(), "1.00"],
            ["load the blocks onto the workers (engine + first evaluation − one evaluation)",
             *load.cells(), f"{load.median / read.median:.2f}"],
            ["allocate and fill the blocks' bytes anew on every worker, no read (slowest "
             "worker; after each load)", *commit.cells(), f"{commit.median / read.median:.2f}"],
        ],
    )  # fmt: skip
    body = "\n".join(
        [
            f"{config.n_samples:,} × {config.n_features} float32, {config.n_classes} classes, "
            f"chunks of {config.chunk_rows:,} rows, λ = {config.l2:g}, no intercept, from zero. "
            f"scikit-learn's objective f_sk = {f_sklearn:.9f} (float64, at its coef_); the goal "
            f"is f_sk·(1 + {config.rel_tol:g}). Each L-BFGS run stops at its first evaluation "
            "on the goal (or gives up after "
            f"{config.max_evals} evaluations); {plural(config.repeat, 'round')} of dsoftmax and "
            f"scipy taking turns, {plural(len(sklearn.samples), 'scikit-learn fit')}. "
            "scipy and scikit-learn start from the data in this process's memory; dsoftmax's "
            "first row adds the median load onto the workers (below) to each run.",
            "",
            table,
            "",
            load_table,
            "",
            "The last row is the memory alone: a load keeps the bytes that a read lets go, "
            "and on a virtual machine whose memory is backed lazily, new memory is not free.",
            "",
            f"Load + time to the goal for dsoftmax: {loaded.median:.2f} s.",
        ]
    )
    return Section(
        name=NAME,
        title="2. Time to scikit-learn's optimum: L-BFGS",
        body=body,
        verdicts=[
            Verdict("2 time to optimum",
                    "dsoftmax, load included ÷ scipy L-BFGS-B on blocked NumPy (medians)",
                    _ratio(loaded.median, scipy_runs.median), THRESHOLD_SCIPY),
            Verdict("2 time to optimum", "dsoftmax, load included ÷ scikit-learn fit (medians)",
                    _ratio(loaded.median, sklearn.median), THRESHOLD_SKLEARN),
            Verdict("3 load", "load onto the workers ÷ one read of the store (medians)",
                    load.median / read.median, THRESHOLD_LOAD),
        ],
    )  # fmt: skip


if __name__ == "__main__":  # worker processes are spawned and import __main__
    bench_main(__doc__, run, FULL, QUICK)
