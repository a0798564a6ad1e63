"""Target 1, one full-batch loss + gradient evaluation: blocks held by Dask workers vs. NumPy
and vs. the hardware's floor.

What is timed, in one process and one run (so the ratios compare like with like):

* ``DaskEngine.sums(params)``: the blocks of a Zarr dataset held in the memory of local worker
  processes, block sums computed where the blocks live by the compiled kernel, one reduce, one
  round trip;
* the blocked NumPy pass (the baseline of the target; ``benchmarks.kernel_baselines``): weights
  padded and cast once, ~16k-row tiles, class-major logits ``W·Xᵀ``, on 2 threads each taking a
  contiguous half of the blocks with one BLAS thread, as two workers would;
* the floor: one sweep of X on 2 threads plus the two products' flops at the sgemm rate
  measured in the same run on 2 threads;
* for reference, a naive NumPy pass (logits ``X Wᵀ + b``, row max, exp, normalize, one-hot
  subtraction, ``Tᵀ X``) and ``dsoftmax.objective.loss_and_grad`` on the whole X.

Targets: the pass on the workers takes at most 0.5× the blocked NumPy pass and at most 3× the
floor (medians).

Beside them, two one-time costs: reading the store once into this process
(``ds.X.compute()`` with the threaded scheduler) and loading the blocks onto the workers (engine
construction plus its first evaluation, which waits for the load).

Run ``python -m benchmarks.bench_pass [--quick]`` from the repository root.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsoftmax.objective import BlockSums, Params, finalize, loss_and_grad

from .common import (
    Section,
    Timing,
    Verdict,
    bench_main,
    connect,
    markdown_table,
    measure,
    measure_interleaved,
    start_cluster,
    teacher_dataset,
)

__all__ = [
    "FLOOR_THRESHOLD",
    "FULL",
    "NAME",
    "QUICK",
    "THRESHOLD",
    "PassConfig",
    "blocked_pass",
    "largest_difference",
    "measure_floor",
    "naive_loss_and_grad",
    "random_params",
    "run",
]

NAME = "pass"
#: Target 1: the pass on the workers ÷ the blocked NumPy pass on 2 threads, at most.
THRESHOLD = 0.5
#: Target 1: the pass on the workers ÷ the hardware's floor, at most.
FLOOR_THRESHOLD = 3.0
#: λ of the evaluated objective; any value does, it only adds 2λW to the gradient.
L2 = 1e-4


@dataclass(frozen=True)
class PassConfig:
    """Sizes of the full-pass benchmark."""

    n_samples: int = 1_000_000
    n_features: int = 128
    n_classes: int = 10
    chunk_rows: int = 62_500
    n_workers: int = 2
    repeat: int = 10
    read_repeat: int = 3


FULL = PassConfig()
QUICK = PassConfig(n_samples=50_000, n_features=32, chunk_rows=6_250, repeat=3, read_repeat=1)


def random_params(n_classes: int, n_features: int, seed: int = 0) -> Params:
    """Non-zero parameters, so that the softmax is not uniform and every term does work."""
    rng = np.random.default_rng(seed)
    return Params(
        0.1 * rng.standard_normal((n_classes, n_features)), 0.1 * rng.standard_normal(n_classes)
    )


def naive_loss_and_grad(
    params: Params, X: np.ndarray, y: np.ndarray, l2: float
) -> tuple[float, Params]:
    """The textbook NumPy pass, as a user would first write it (the baseline to beat).

    Parameters
    ----------
    params : Params
        ``coef`` (n_classes, n_features) and ``intercept`` (n_classes,) or None.
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Class ids.
    l2 : float

    Returns
    -------
    loss : float
    grad : Params
        float64; ``intercept`` is None when ``params.intercept`` is.
    """
    n_samples = X.shape[0]
    n_classes = params.coef.shape[0]
    logits = X @ params.coef.T.astype(X.dtype)
    if params.intercept is not None:
        logits += params.intercept.astype(X.dtype)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    normalizer = probs.sum(axis=1, keepdims=True)
    probs /= normalizer
    one_hot = np.eye(n_classes, dtype=X.dtype)[y]
    log_likelihood = np.sum(one_hot * logits, axis=1) - np.log(normalizer[:, 0])
    residual = probs - one_hot
    coef = params.coef
    loss = -float(np.mean(log_likelihood, dtype=np.float64)) + l2 * float(np.vdot(coef, coef))
    grad_coef = (residual.T @ X).astype(np.float64) / n_samples + 2 * l2 * coef
    grad_intercept = (
        None if params.intercept is None else residual.sum(axis=0, dtype=np.float64) / n_samples
    )
    return loss, Params(grad_coef, grad_intercept)


def largest_difference(left: tuple[float, Params], right: tuple[float, Params]) -> float:
    """Largest absolute difference over the loss and every gradient entry."""
    (loss_a, grad_a), (loss_b, grad_b) = left, right
    differences = [abs(loss_a - loss_b), float(np.max(np.abs(grad_a.coef - grad_b.coef)))]
    if grad_a.intercept is not None and grad_b.intercept is not None:
        differences.append(float(np.max(np.abs(grad_a.intercept - grad_b.intercept))))
    return max(differences)


def blocked_pass(
    params: Params, blocks: list[np.ndarray], labels: list[np.ndarray], n_threads: int
) -> BlockSums:
    """The blocked NumPy pass over ``blocks``, each thread a contiguous share with one BLAS
    thread (``benchmarks.kernel_baselines``)."""
    from threadpoolctl import threadpool_limits

    from .kernel_baselines import blocked_numpy_sums, on_threads

    with threadpool_limits(limits=1, user_api="blas"):
        return on_threads(
            lambda i: blocked_numpy_sums(params, blocks[i], labels[i]), len(blocks), n_threads
        )


def measure_floor(blocks: list[np.ndarray], n_classes: int, n_threads: int) -> dict[str, float]:
    """The hardware's floor of a pass over ``blocks``: a sweep of X and the products' flops at
    the sgemm rate, both measured now on ``n_threads``."""
    from .kernel_baselines import floor_seconds, gemm_flops, sgemm_rate, sweep_seconds

    n_rows, n_features = sum(len(block) for block in blocks), blocks[0].shape[1]
    sweep = sweep_seconds(blocks, n_threads=n_threads)
    rate = sgemm_rate(n_threads)
    flops = gemm_flops(n_rows, n_features, n_classes)
    return {"sweep": sweep, "rate": rate, "floor": floor_seconds(sweep, flops, rate)}


def _timing_row(name: str, timing: Timing, baselines: tuple[Timing, ...]) -> list[str]:
    ratios = [f"{timing.median / baseline.median:.2f}" for baseline in baselines]
    return [name, *timing.cells(), *ratios]


def run(config: PassConfig, workdir: Path) -> Section:
    """Run the benchmark.

    Parameters
    ----------
    config : PassConfig
    workdir : Path
        A directory for the dataset (shared with the other benchmarks of a run).
    """

    from dsoftmax.engine import DaskEngine

    params = random_params(config.n_classes, config.n_features)
    with start_cluster(config.n_workers) as cluster, connect(cluster) as client:
        dataset, make_seconds = teacher_dataset(
            workdir, config.n_samples, config.n_features, config.n_classes, config.chunk_rows,
            client,
        )  # fmt: skip
        # The threaded scheduler reads into this process, not through the cluster's client.
        read = measure(lambda: dataset.X.compute(scheduler="threads"), config.read_repeat)
        X = dataset.X.compute(scheduler="threads")
        y = dataset.y.compute(scheduler="threads")

        reference = loss_and_grad(params, X, y, L2)
        naive = naive_loss_and_grad(params, X, y, L2)
        starts = np.cumsum([0, *dataset.chunk_rows])
        blocks = [X[lo:hi] for lo, hi in itertools.pairwise(starts)]
        labels = [y[lo:hi] for lo, hi in itertools.pairwise(starts)]
        blocked = finalize(blocked_pass(params, blocks, labels, config.n_workers), params, L2)

        started = time.perf_counter()
        with DaskEngine(client, dataset.X, dataset.y) as engine:
            on_workers = finalize(engine.sums(params), params, L2)  # waits for every block
            load = time.perf_counter() - started
            hold = getattr(engine, "hold", "memory")
            timings = measure_interleaved(
                {
                    "workers": lambda _: engine.sums(params),
                    "blocked": lambda _: blocked_pass(params, blocks, labels, config.n_workers),
                    "floor": lambda _: None,
                    "naive": lambda _: naive_loss_and_grad(params, X, y, L2),
                    "reference": lambda _: loss_and_grad(params, X, y, L2),
                },
                config.repeat,
                warmup=1,
            )
        floors = [measure_floor(blocks, config.n_classes, config.n_workers) for _ in range(3)]

    floor = Timing(tuple(sorted(part["floor"] for part in floors)))
    sweep = float(np.median([part["sweep"] for part in floors]))
    rate = float(np.median([part["rate"] for part in floors]))
    baselines = (timings["blocked"], floor)
    table = markdown_table(
        ["one loss + gradient evaluation", "median s", "min s", "max s", "÷ blocked NumPy",
         "÷ floor"],
        [
            _timing_row(
                f"DaskEngine.sums, {config.n_workers} workers (hold={hold!r})",
                timings["workers"],
                baselines,
            ),
            _timing_row(
                f"NumPy, blocked, {config.n_workers} threads × 1 BLAS thread (baseline)",
                timings["blocked"],
                baselines,
            ),
            _timing_row(
                f"floor: sweep of X + products at the sgemm rate, {config.n_workers} threads",
                floor,
                baselines,
            ),
            _timing_row("NumPy, naive, in process", timings["naive"], baselines),
            _timing_row(
                "NumPy, dsoftmax.objective.loss_and_grad, in process",
                timings["reference"],
                baselines,
            ),
        ],
    )  # fmt: skip
    make_cell = "reused" if np.isnan(make_seconds) else f"{make_seconds:.3f}"
    one_time = markdown_table(
        ["one-time cost", "median s", "min s", "max s", "runs"],
        [
            ["read the store once into this process (ds.X.compute(), threads)", *read.cells(),
             len(read.samples)],
            [f"load the blocks onto {config.n_workers} workers + first evaluation",
             *Timing((load,)).cells(), 1],
            ["write the dataset (make_classification on the cluster)", make_cell, "", "", 1],
        ],
    )  # fmt: skip
    size_mib = X.nbytes / 2**20
    ratio = timings["workers"].median / timings["blocked"].median
    floor_ratio = timings["workers"].median / floor.median
    body = "\n".join(
        [
            f"{len(dataset.chunk_rows)} chunks of {config.chunk_rows:,} rows ({size_mib:.0f} MiB "
            f"of X), zstd; {config.n_workers} local worker processes with 1 thread each. "
            f"{config.repeat} timed rounds after a warm-up round, each round running every "
            "candidate once in turn (the floor's row is measured after them, 3 times). Ratios "
            f"are medians over medians. Floor: a sweep of X takes {sweep:.4f} s, the sgemm rate "
            f"is {rate / 1e9:.1f} GFLOP/s on {config.n_workers} threads.",
            "",
            table,
            "",
            one_time,
            "",
            "Agreement (largest absolute difference over the loss and every gradient entry): "
            f"workers vs loss_and_grad {largest_difference(on_workers, reference):.1e}, "
            f"blocked vs loss_and_grad {largest_difference(blocked, reference):.1e}, "
            f"naive vs loss_and_grad {largest_difference(naive, reference):.1e}.",
        ]
    )
    return Section(
        name=NAME,
        title=f"1. Full-batch pass: {config.n_samples:,} × {config.n_features} {X.dtype}, "
        f"{config.n_classes} classes",
        body=body,
        verdicts=[
            Verdict(
                "1 full pass",
                f"DaskEngine.sums ÷ blocked NumPy pass, {config.n_workers} threads (medians)",
                ratio,
                THRESHOLD,
            ),
            Verdict("1 full pass", "DaskEngine.sums ÷ the floor (medians)", floor_ratio,
                    FLOOR_THRESHOLD),
        ],
    )


if __name__ == "__main__":  # worker processes are spawned and import __main__
    bench_main(__doc__, run, FULL, QUICK)
