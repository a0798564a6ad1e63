"""Target 9, a regularization grid in one pass: ``SoftmaxRegressionCV`` against one fit.

On one local cluster, from the same store (the load onto the workers included in every fit):

* one ``SoftmaxRegression(solver="lbfgs")`` fit at the grid's smallest λ (the slowest to converge);
* ``SoftmaxRegressionCV`` with 10 λ on one validation split (``cv="validation"``), refit included;
* ``SoftmaxRegressionCV`` with 8 λ × 3 stratified folds, refit included.

The three take turns, ``repeat`` rounds after a warm-up round; medians. On a smaller workload held
in memory, the 8 λ × 3 folds grid runs against scikit-learn's ``LogisticRegressionCV`` with the
same penalties (``C = 1 / (2·λ·n_train)``), the same folds and the same iteration cap, with as
many jobs as the cluster has workers. Last, the memory of a wide model's grid (10 λ × 5 folds of
``n_classes × n_features`` weights, a few iterations): the client's and each worker's peak
resident memory, beside the size of the stacked weights and the client's bound, ``grid_memory``
(the optimizers of the models training at once) plus two copies of every model's result.

Targets: 10 λ on a validation split ≤ 3× one fit; 8 λ × 3 folds + refit ≤ 8× one fit; ≤ 0.15×
scikit-learn's ``LogisticRegressionCV``; the wide grid's client growth within its bound.

Run ``python -m benchmarks.bench_grid [--quick]`` from the repository root.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from dask.utils import parse_bytes

from dsoftmax.defaults import DEFAULT_GRID_MEMORY
from dsoftmax.grid.loop import lbfgs_models_within

from .common import (
    MIB,
    MemorySampler,
    Section,
    Timing,
    Verdict,
    bench_main,
    connect,
    markdown_table,
    measure_interleaved,
    start_cluster,
    stored_codec,
    teacher_dataset,
    worker_max_rss,
    worker_processes,
)

__all__ = [
    "FULL",
    "NAME",
    "QUICK",
    "THRESHOLD_FOLDS",
    "THRESHOLD_SKLEARN",
    "THRESHOLD_VALIDATION",
    "THRESHOLD_WIDE_CLIENT",
    "GridConfig",
    "run",
]

NAME = "grid"
#: Target 9: 10 λ on one validation split ÷ one fit at the smallest λ, at most.
THRESHOLD_VALIDATION = 3.0
#: Target 9: 8 λ × 3 folds and the refit ÷ one fit at the smallest λ, at most.
THRESHOLD_FOLDS = 8.0
#: Target 9: the same grid and folds ÷ scikit-learn's LogisticRegressionCV, at most.
THRESHOLD_SKLEARN = 0.15
#: Target 9: the client's peak growth over the wide grid ÷ its bound (``grid_memory`` for the
#: optimizers plus two copies of every model's result: the results and ``coefs_paths_``).
THRESHOLD_WIDE_CLIENT = 1.0


@dataclass(frozen=True)
class GridConfig:
    """Sizes of the grid benchmark."""

    n_samples: int = 1_000_000
    n_features: int = 128
    n_classes: int = 10
    chunk_rows: int = 62_500
    smallest_l2: float = 1e-6
    largest_l2: float = 1e-2
    max_iter: int = 100
    n_workers: int = 2
    repeat: int = 3
    sklearn_samples: int = 100_000
    wide_samples: int = 2048
    wide_features: int = 1024
    wide_classes: int = 1000
    wide_max_iter: int = 2
    wide_grid_memory: str = DEFAULT_GRID_MEMORY


FULL = GridConfig()
QUICK = GridConfig(
    n_samples=40_000, n_features=32, chunk_rows=5_000, max_iter=30, repeat=1,
    sklearn_samples=10_000, wide_samples=1024, wide_features=128, wide_classes=100,
)  # fmt: skip


def _l2s(config: GridConfig, n: int) -> list[float]:
    return np.logspace(np.log10(config.smallest_l2), np.log10(config.largest_l2), n).tolist()


def _quiet(fit: Any) -> Any:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # scikit-learn's notices of coming changes to LogisticRegressionCV's defaults.
        warnings.simplefilter("ignore", FutureWarning)
        # The wide model's rarest classes have fewer rows than folds: a benchmark of memory.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return fit()


def _candidates(client: Any, url: str, config: GridConfig, fits: dict) -> dict:
    """The three fits from the store, by name; each keeps its last model in ``fits``."""
    from dsoftmax import SoftmaxRegression, SoftmaxRegressionCV, open_dataset

    def single(_: int) -> None:
        model = SoftmaxRegression(l2=config.smallest_l2, max_iter=config.max_iter, client=client)
        fits["one fit"] = _quiet(lambda: model.fit(open_dataset(url)))

    def grid(name: str, l2s: list[float], cv: Any) -> Any:
        def fit(_: int) -> None:
            model = SoftmaxRegressionCV(l2s=l2s, cv=cv, max_iter=config.max_iter,
                                        random_state=0, client=client)  # fmt: skip
            fits[name] = _quiet(lambda: model.fit(open_dataset(url)))

        return fit

    return {
        "one fit": single,
        "10 λ, validation split": grid("10 λ, validation split", _l2s(config, 10), "validation"),
        "8 λ × 3 folds": grid("8 λ × 3 folds", _l2s(config, 8), 3),
    }


def _against_sklearn(client: Any, config: GridConfig) -> dict[str, Any]:
    """The 8 λ × 3 folds grid in memory, dsoftmax against LogisticRegressionCV."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    from dsoftmax import SoftmaxRegressionCV

    rng = np.random.default_rng(0)
    n, d, k = config.sklearn_samples, config.n_features, config.n_classes
    X = rng.standard_normal((n, d))
    y = np.argmax(X @ rng.standard_normal((d, k)) + rng.gumbel(size=(n, k)), axis=1)
    l2s = _l2s(config, 8)
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    n_train = n - n // 3
    ours = SoftmaxRegressionCV(l2s=l2s, cv=folds, max_iter=config.max_iter, client=client)
    theirs = LogisticRegressionCV(
        Cs=[1.0 / (2.0 * l2 * n_train) for l2 in l2s], cv=folds, max_iter=config.max_iter,
        n_jobs=config.n_workers, scoring="neg_log_loss",
    )  # fmt: skip
    seconds = {}
    for name, model in (("dsoftmax", ours), ("scikit-learn", theirs)):
        started = time.perf_counter()
        _quiet(lambda model=model: model.fit(X, y))
        seconds[name] = time.perf_counter() - started
    chosen_theirs = 1.0 / (2.0 * float(theirs.C_[0]) * n_train)
    return {"seconds": seconds, "l2": (ours.l2_, chosen_theirs), "n": n}


def _wide_memory(client: Any, config: GridConfig, workdir: Path) -> dict[str, Any]:
    """Peak memory of 10 λ × 5 folds of the wide model, a few iterations from the store."""
    from dsoftmax import SoftmaxRegressionCV

    dataset, _ = teacher_dataset(
        workdir, config.wide_samples, config.wide_features, config.wide_classes,
        max(config.wide_samples // 8, 1), client,
    )  # fmt: skip
    pids = {"client": os.getpid(), **worker_processes(client)}
    n_params = config.wide_classes * (config.wide_features + 1)
    budget = parse_bytes(config.wide_grid_memory)
    model = SoftmaxRegressionCV(l2s=_l2s(config, 10), cv=5, max_iter=config.wide_max_iter,
                                random_state=0, client=client,
                                grid_memory=config.wide_grid_memory)  # fmt: skip
    with MemorySampler(pids) as memory:
        started = time.perf_counter()
        _quiet(lambda: model.fit(dataset))
        seconds = time.perf_counter() - started
    workers = worker_max_rss(client)
    return {
        "seconds": seconds,
        "client_growth": memory.peak_delta("client"),
        "worker_growth": max(memory.peak_delta(name) for name in workers),
        "worker_peak": max(workers.values()),
        "stack_bytes": 50 * n_params * 8,
        "at_once": min(50, lbfgs_models_within(budget, n_params)),
        "bound": budget + 2 * 50 * n_params * 8,
    }


def run(config: GridConfig, workdir: Path) -> Section:
    """Run the benchmark.

    Parameters
    ----------
    config : GridConfig
    workdir : Path
        A directory for the datasets (shared with the other benchmarks of a run).
    """
    with start_cluster(config.n_workers) as cluster, connect(cluster) as client:
        dataset, _ = teacher_dataset(
            workdir, config.n_samples, config.n_features, config.n_classes, config.chunk_rows,
            client,
        )  # fmt: skip
        fits: dict[str, Any] = {}
        timings = measure_interleaved(
            _candidates(client, str(dataset.url), config, fits), repeat=config.repeat
        )
        sklearn = _against_sklearn(client, config)
        wide = _wide_memory(client, config, workdir)
    return _section(config, timings, fits, sklearn, wide, stored_codec(dataset))


def _iterations(model: Any) -> str:
    grid = getattr(model, "n_iter_", None)
    if isinstance(grid, np.ndarray):
        return f"{int(grid.max())} max per model, refit {len(model.loss_curve_)}"
    return str(model.n_iter_)


def _section(
    config: GridConfig, timings: dict[str, Timing], fits: dict[str, Any], sklearn: dict,
    wide: dict, codec: str,
) -> Section:  # fmt: skip
    one = timings["one fit"].median
    rows = [
        [name, *timing.cells(), f"{timing.median / one:.2f}", _iterations(fits[name]),
         f"{getattr(fits[name], 'l2_', config.smallest_l2):.3g}"]
        for name, timing in timings.items()
    ]  # fmt: skip
    table = markdown_table(
        ["load + fit (L-BFGS) from the store", "median s", "min s", "max s", "÷ one fit",
         "iterations", "λ (chosen)"],
        rows,
    )  # fmt: skip
    seconds = sklearn["seconds"]
    sk_ratio = seconds["dsoftmax"] / seconds["scikit-learn"]
    sk_table = markdown_table(
        ["8 λ × 3 folds + refit, in memory", "s", "chosen λ"],
        [["dsoftmax SoftmaxRegressionCV", f"{seconds['dsoftmax']:.2f}", f"{sklearn['l2'][0]:.3g}"],
         ["scikit-learn LogisticRegressionCV", f"{seconds['scikit-learn']:.2f}",
          f"{sklearn['l2'][1]:.3g}"]],
    )  # fmt: skip
    wide_table = markdown_table(
        ["10 λ × 5 folds of the wide model", "value"],
        [["stacked weights (50 models, float64) MiB", f"{wide['stack_bytes'] / MIB:.0f}"],
         [f"models training at once (grid_memory={config.wide_grid_memory})",
          str(wide["at_once"])],
         ["client's bound (grid_memory + 2 copies of the results) MiB",
          f"{wide['bound'] / MIB:.0f}"],
         ["client's peak growth MiB", f"{wide['client_growth'] / MIB:.0f}"],
         ["a worker's peak growth MiB", f"{wide['worker_growth'] / MIB:.0f}"],
         ["a worker's peak resident MiB (VmHWM)", f"{wide['worker_peak'] / MIB:.0f}"],
         ["seconds", f"{wide['seconds']:.1f}"]],
    )  # fmt: skip
    body = "\n".join(
        [
            f"{config.n_samples:,} × {config.n_features}, {config.n_classes} classes, chunks of "
            f"{config.chunk_rows:,} rows ({codec}); λ log-spaced from {config.smallest_l2:g} to "
            f"{config.largest_l2:g}; at most {config.max_iter} iterations per model; "
            f"{config.n_workers} local workers. The fits take turns, {config.repeat} rounds "
            "after a warm-up round; each opens the store and fits from it, the load included.",
            "",
            table,
            "",
            f"Against scikit-learn: {sklearn['n']:,} × {config.n_features}, "
            f"{config.n_classes} classes in memory, the same 8 λ and stratified folds, "
            f"{config.n_workers} jobs, at most {config.max_iter} iterations.",
            "",
            sk_table,
            "",
            f"Memory: {config.wide_samples:,} rows × {config.wide_features:,} features, "
            f"{config.wide_classes:,} classes, {config.wide_max_iter} iterations per model.",
            "",
            wide_table,
        ]
    )
    return Section(
        name=NAME,
        title="9. A regularization grid in one pass: SoftmaxRegressionCV",
        body=body,
        verdicts=[
            Verdict("9 grid", "10 λ on a validation split ÷ one fit (medians)",
                    timings["10 λ, validation split"].median / one, THRESHOLD_VALIDATION),
            Verdict("9 grid", "8 λ × 3 folds + refit ÷ one fit (medians)",
                    timings["8 λ × 3 folds"].median / one, THRESHOLD_FOLDS),
            Verdict("9 grid", "8 λ × 3 folds ÷ scikit-learn LogisticRegressionCV",
                    sk_ratio, THRESHOLD_SKLEARN),
            Verdict("9 grid", "wide grid: client's peak growth ÷ its bound",
                    wide["client_growth"] / wide["bound"], THRESHOLD_WIDE_CLIENT),
        ],
    )  # fmt: skip


if __name__ == "__main__":  # worker processes are spawned and import __main__
    bench_main(__doc__, run, FULL, QUICK)
