"""Target 4, one minibatch SGD epoch: the engine-driven loop vs. a NumPy loop in memory.

Timed in one run, rounds taking turns, over the same seeded batch order
(:class:`dsoftmax.sampling.EpochSampler`, seed 0) with the same learning rate and no momentum:

* dsoftmax: :func:`dsoftmax.training.train` with ``solver="sgd"`` for one epoch over a
  ``DaskEngine`` whose workers hold the blocks (``engine.sums`` per batch, finalize, the SGD
  update on the client: what ``SoftmaxRegression(solver="sgd")`` runs after loading);
* NumPy: per batch ``X[rows]``, ``y[rows]`` from the whole array in this process's memory, the
  naive loss and gradient of :mod:`benchmarks.bench_pass`, and ``W -= lr·∇W``.

Target: the dsoftmax epoch takes at most 0.8× the NumPy epoch (medians). Both end with the
same weights (the largest difference is reported).

Run ``python -m benchmarks.bench_epoch [--quick]`` from the repository root.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsoftmax.objective import Params
from dsoftmax.sampling import EpochSampler

from .bench_pass import naive_loss_and_grad
from .common import (
    Section,
    Verdict,
    bench_main,
    connect,
    markdown_table,
    measure_interleaved,
    plural,
    start_cluster,
    teacher_dataset,
)

__all__ = ["FULL", "NAME", "QUICK", "THRESHOLD", "EpochConfig", "numpy_sgd_epoch", "run"]

NAME = "epoch"
#: Target 4: the dsoftmax epoch ÷ the NumPy epoch, at most.
THRESHOLD = 0.8


@dataclass(frozen=True)
class EpochConfig:
    """Sizes of the minibatch-epoch benchmark."""

    n_samples: int = 1_000_000
    n_features: int = 128
    n_classes: int = 10
    chunk_rows: int = 62_500
    batch_size: int = 8192
    learning_rate: float = 0.1
    l2: float = 1e-4
    n_workers: int = 2
    repeat: int = 5


FULL = EpochConfig()
QUICK = EpochConfig(n_samples=50_000, n_features=32, chunk_rows=6_250, batch_size=2048, repeat=2)


#: Untimed epochs of each loop before the timed ones.
EPOCH_WARMUP = 1


def numpy_sgd_epoch(
    X: np.ndarray,
    y: np.ndarray,
    params: Params,
    sampler: EpochSampler,
    learning_rate: float,
    l2: float,
    epoch: int = 0,
) -> Params:
    """One epoch of plain minibatch SGD in memory, in the sampler's batch order.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    params : Params
        Starting point (not modified).
    sampler : EpochSampler
    learning_rate, l2 : float
    epoch : int

    Returns
    -------
    Params
        After ``sampler.n_batches`` updates ``θ ← θ − lr·∇θ``.
    """
    order = sampler.epoch_rows(epoch)
    coef, intercept = params
    for start in range(0, sampler.n_rows, sampler.batch_size):
        # Sorted, as the sampler hands them to the engine: the same rows in the same order.
        rows = np.sort(order[start : start + sampler.batch_size])
        _, grad = naive_loss_and_grad(Params(coef, intercept), X[rows], y[rows], l2)
        coef = coef - learning_rate * grad.coef
        intercept = None if intercept is None else intercept - learning_rate * grad.intercept
    return Params(coef, intercept)


def _engine_epoch(engine: Any, params: Params, config: EpochConfig) -> Params:
    from dsoftmax.engine import EngineProblem
    from dsoftmax.training import TrainConfig, train

    train_config = TrainConfig(
        solver="sgd",
        l2=config.l2,
        max_iter=1,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        momentum=0.0,
        random_state=0,
    )
    return train(EngineProblem(engine, config.l2), params, train_config).params


def run(config: EpochConfig, workdir: Path) -> Section:
    """Run the benchmark.

    Parameters
    ----------
    config : EpochConfig
    workdir : Path
        A directory for the dataset (shared with the other benchmarks of a run).
    """

    from dsoftmax.engine import DaskEngine

    zero = Params(np.zeros((config.n_classes, config.n_features)), np.zeros(config.n_classes))
    sampler = EpochSampler(config.n_samples, config.batch_size, seed=0)
    results: dict[str, Params] = {}
    with start_cluster(config.n_workers) as cluster, connect(cluster) as client:
        dataset, _ = teacher_dataset(
            workdir, config.n_samples, config.n_features, config.n_classes, config.chunk_rows,
            client,
        )  # fmt: skip
        X = dataset.X.compute(scheduler="threads")
        y = dataset.y.compute(scheduler="threads")
        started = time.perf_counter()
        with DaskEngine(client, dataset.X, dataset.y) as engine:
            engine.sums(zero)  # waits for the blocks to load
            load = time.perf_counter() - started
            hold = getattr(engine, "hold", "memory")
            trips_before = engine.n_round_trips

            def on_workers(_: int) -> None:
                results["dsoftmax"] = _engine_epoch(engine, zero, config)

            def in_memory(_: int) -> None:
                results["numpy"] = numpy_sgd_epoch(
                    X, y, zero, sampler, config.learning_rate, config.l2
                )

            timings = measure_interleaved(
                {"dsoftmax": on_workers, "numpy": in_memory}, config.repeat, warmup=EPOCH_WARMUP
            )
            # The untimed epochs made round trips too.
            trips = (engine.n_round_trips - trips_before) / (config.repeat + EPOCH_WARMUP)

    ratio = timings["dsoftmax"].median / timings["numpy"].median
    difference = max(
        float(np.max(np.abs(results["dsoftmax"].coef - results["numpy"].coef))),
        float(np.max(np.abs(results["dsoftmax"].intercept - results["numpy"].intercept))),
    )
    n_batches = sampler.n_batches
    table = markdown_table(
        ["one SGD epoch", "median s", "min s", "max s", "ms per step", "÷ NumPy"],
        [
            [f"dsoftmax.training.train(sgd, 1 epoch), DaskEngine, {config.n_workers} workers "
             f"(hold={hold!r})", *timings["dsoftmax"].cells(),
             f"{1e3 * timings['dsoftmax'].median / n_batches:.2f}", f"{ratio:.2f}"],
            ["NumPy: X[rows] + naive loss/gradient + update, in process",
             *timings["numpy"].cells(), f"{1e3 * timings['numpy'].median / n_batches:.2f}",
             "1.00"],
        ],
    )  # fmt: skip
    body = "\n".join(
        [
            f"{config.n_samples:,} × {config.n_features} float32, {config.n_classes} classes, "
            f"chunks of {config.chunk_rows:,} rows; {n_batches} batches of "
            f"{config.batch_size:,} rows (EpochSampler, seed 0), lr = {config.learning_rate:g}, "
            f"no momentum, λ = {config.l2:g}, from zero; {plural(config.repeat, 'round')} after "
            "an untimed one, the two loops taking turns. The workers held the blocks before the "
            "timing (load "
            f"{load:.2f} s).",
            "",
            table,
            "",
            f"Round trips per epoch: {trips:.0f} for {n_batches} steps. Largest difference "
            f"between the two loops' final weights: {difference:.1e}.",
        ]
    )
    return Section(
        name=NAME,
        title=f"4. Minibatch epoch: SGD, batch {config.batch_size:,}",
        body=body,
        verdicts=[
            Verdict("4 minibatch epoch", "dsoftmax SGD epoch ÷ NumPy loop epoch (medians)",
                    ratio, THRESHOLD)
        ],
    )  # fmt: skip


if __name__ == "__main__":  # worker processes are spawned and import __main__
    bench_main(__doc__, run, FULL, QUICK)
