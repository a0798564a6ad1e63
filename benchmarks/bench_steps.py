"""Target 3, synchronous minibatch steps per second: the round trip of one small evaluation.

On a tiny dataset the cost of a minibatch step is the cost of reaching the workers, not the
math. Timed in one run, over the same seeded batches (``dsoftmax.sampling.EpochSampler``):

* ``DaskEngine.sums(params, batch)`` on local worker processes that hold the blocks;
* the naive ``dask.array`` way: the arrays persisted on the same workers, and per step
  ``X[rows]``, ``map_blocks`` of the same block sums, ``sum`` and ``compute``;
* ``LocalEngine.sums(params, batch)``: the same block functions in this process, no cluster.

Target: the median step on the workers takes at most 5 ms (200 steps/s or more).

Run ``python -m benchmarks.bench_steps [--quick]`` from the repository root.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np

from dsoftmax.objective import BlockSums, Params, block_sums
from dsoftmax.sampling import EpochSampler, RowBatch, rows_to_blocks

from .bench_pass import random_params
from .common import (
    Section,
    Timing,
    Verdict,
    bench_main,
    connect,
    markdown_table,
    measure_interleaved,
    start_cluster,
    teacher_dataset,
)

__all__ = [
    "FULL",
    "NAME",
    "QUICK",
    "THRESHOLD_MS",
    "StepsConfig",
    "dask_array_sums",
    "minibatch_rows",
    "run",
]

NAME = "steps"
#: Target 3: the median synchronous step on the workers, in milliseconds, at most.
THRESHOLD_MS = 5.0


@dataclass(frozen=True)
class StepsConfig:
    """Sizes of the minibatch-step benchmark."""

    n_samples: int = 4_000
    n_features: int = 16
    n_classes: int = 4
    chunk_rows: int = 2_000
    batch_size: int = 64
    n_steps: int = 200
    n_warmup: int = 20
    n_workers: int = 2
    #: Steps each way runs in a row before the next way takes its turn; divides n_steps and
    #: n_warmup.
    run_length: int = 20


FULL = StepsConfig()
QUICK = StepsConfig(n_steps=30, n_warmup=10, run_length=10)


def _flat_block_sums(
    X: np.ndarray, y: np.ndarray, coef: np.ndarray, intercept: np.ndarray
) -> np.ndarray:
    """map_blocks task: one block's sums as one row ``[loss, G.ravel(), g_b, n]``."""
    sums = block_sums(Params(coef, intercept), X, y[:, 0])
    return np.concatenate(
        [[sums.loss_sum], sums.grad_coef_sum.ravel(), sums.grad_intercept_sum, [sums.weight_sum]]
    )[None, :]


def dask_array_sums(X: da.Array, y: da.Array, params: Params, rows: np.ndarray) -> BlockSums:
    """The minibatch sums written with ``dask.array`` alone: select, map_blocks, sum, compute.

    Parameters
    ----------
    X : dask array of shape (n_samples, n_features), chunked by rows
    y : dask array of shape (n_samples,)
    params : Params
    rows : ndarray of shape (batch_size,)
        Sorted global row numbers.

    Returns
    -------
    BlockSums
    """
    n_classes, n_features = params.coef.shape
    X_batch, y_batch = X[rows], y[rows]
    width = 1 + n_classes * n_features + n_classes + 1
    flat = da.map_blocks(
        _flat_block_sums,
        X_batch,
        y_batch[:, None],
        params.coef,
        params.intercept,
        dtype=np.float64,
        chunks=((1,) * X_batch.numblocks[0], (width,)),
    )
    total = flat.sum(axis=0).compute()
    grad_end = 1 + n_classes * n_features
    return BlockSums(
        float(total[0]),
        total[1:grad_end].reshape(n_classes, n_features),
        total[grad_end:-1],
        float(total[-1]),
    )


def minibatch_rows(config: StepsConfig) -> list[np.ndarray]:
    """Sorted global rows of ``n_warmup + n_steps`` consecutive seeded minibatches."""
    sampler = EpochSampler(config.n_samples, config.batch_size, seed=0)
    needed = config.n_warmup + config.n_steps
    batches: list[np.ndarray] = []
    epoch = 0
    while len(batches) < needed:
        order = sampler.epoch_rows(epoch)
        for start in range(0, sampler.n_rows, sampler.batch_size):
            batches.append(np.sort(order[start : start + sampler.batch_size]))
        epoch += 1
    return batches[:needed]


def _largest_difference(left: BlockSums, right: BlockSums) -> float:
    return max(
        abs(left.loss_sum - right.loss_sum),
        float(np.max(np.abs(left.grad_coef_sum - right.grad_coef_sum))),
        float(np.max(np.abs(left.grad_intercept_sum - right.grad_intercept_sum))),
    )


def _step_row(name: str, timing: Timing, baseline: Timing) -> list[str]:
    return [
        name,
        f"{1e3 * timing.median:.2f}",
        f"{1e3 * timing.min:.2f}",
        f"{1e3 * timing.max:.2f}",
        f"{len(timing.samples) / timing.total:.0f}",
        f"{baseline.median / timing.median:.1f}",
    ]


def run(config: StepsConfig, workdir: Path) -> Section:
    """Run the benchmark.

    Parameters
    ----------
    config : StepsConfig
    workdir : Path
        An empty directory for the dataset.
    """
    import distributed

    from dsoftmax.engine import DaskEngine, LocalEngine

    params = random_params(config.n_classes, config.n_features)
    rows = minibatch_rows(config)
    with start_cluster(config.n_workers) as cluster, connect(cluster) as client:
        dataset, _ = teacher_dataset(
            workdir, config.n_samples, config.n_features, config.n_classes, config.chunk_rows,
            client,
        )  # fmt: skip
        batches: list[RowBatch] = [rows_to_blocks(r, dataset.chunk_rows) for r in rows]
        X = dataset.X.compute(scheduler="threads")
        y = dataset.y.compute(scheduler="threads")

        local = LocalEngine(X, y, chunk_rows=config.chunk_rows)
        X_held, y_held = client.persist([dataset.X, dataset.y])
        distributed.wait([X_held, y_held])
        with DaskEngine(client, dataset.X, dataset.y) as engine:
            engine.sums(params)  # waits for the blocks to load
            hold = getattr(engine, "hold", "memory")
            trips_before = engine.n_round_trips
            timings = measure_interleaved(
                {
                    "engine": lambda i: engine.sums(params, batches[i]),
                    "dask_array": lambda i: dask_array_sums(X_held, y_held, params, rows[i]),
                    "local": lambda i: local.sums(params, batches[i]),
                },
                config.n_steps // config.run_length,
                warmup=config.n_warmup // config.run_length,
                run_length=config.run_length,
            )
            trips = engine.n_round_trips - trips_before
            engine_sums = engine.sums(params, batches[0])
        array_sums = dask_array_sums(X_held, y_held, params, rows[0])
        expected = local.sums(params, batches[0])

    n_evaluations = config.n_warmup + config.n_steps
    engine_difference = _largest_difference(engine_sums, expected)
    array_difference = _largest_difference(array_sums, expected)
    table = markdown_table(
        ["one minibatch evaluation", "median ms", "min ms", "max ms", "steps/s",
         "speed-up vs dask.array"],
        [
            _step_row(
                f"DaskEngine.sums, {config.n_workers} workers (hold={hold!r})",
                timings["engine"],
                timings["dask_array"],
            ),
            _step_row(
                f"dask.array select + map_blocks + sum + compute, {config.n_workers} workers",
                timings["dask_array"],
                timings["dask_array"],
            ),
            _step_row(
                "LocalEngine.sums, in process (no cluster)",
                timings["local"],
                timings["dask_array"],
            ),
        ],
    )  # fmt: skip
    body = "\n".join(
        [
            f"{len(dataset.chunk_rows)} chunks of {config.chunk_rows:,} rows; "
            f"{config.n_workers} local worker processes with 1 thread each; the same "
            f"{config.n_steps} seeded minibatches (EpochSampler, seed 0) timed one by one after "
            f"{config.n_warmup} warm-up steps, the three ways taking turns every "
            f"{config.run_length} batches (so that no way pays for the clean-up another left "
            "on the cluster); "
            "steps/s is steps over their total time.",
            "",
            table,
            "",
            f"DaskEngine.n_round_trips: {trips} for {n_evaluations} steps "
            f"({trips / n_evaluations:.2f} per step). Largest absolute difference from "
            "LocalEngine's sums on "
            f"the first batch: DaskEngine {engine_difference:.1e}, dask.array "
            f"{array_difference:.1e}.",
        ]
    )
    return Section(
        name=NAME,
        title=f"3. Minibatch steps: {config.batch_size} rows from {config.n_samples:,} × "
        f"{config.n_features}, {config.n_classes} classes",
        body=body,
        verdicts=[
            Verdict(
                "3 cheap steps",
                f"median synchronous DaskEngine step ({1 / timings['engine'].median:.0f} steps/s)",
                1e3 * timings["engine"].median,
                THRESHOLD_MS,
                unit=" ms",
            )
        ],
    )


if __name__ == "__main__":  # worker processes are spawned and import __main__
    bench_main(__doc__, run, FULL, QUICK)
