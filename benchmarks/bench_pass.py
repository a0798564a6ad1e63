"""One full-batch loss + gradient evaluation: blocks held by Dask workers vs. NumPy in memory.

What is timed, in one process and one run (so the ratios compare like with like):

* ``DaskEngine.sums(params)``: the blocks of a Zarr dataset held in the memory of local worker
  processes, block sums computed where the blocks live, one tree reduce, one round trip;
* ``dsoftmax.objective.loss_and_grad`` on the whole ``X`` in this process's memory (the same
  blocked, class-major math the workers run);
* a naive NumPy pass: logits ``X Wᵀ + b``, row max, exp, normalize, one-hot subtraction,
  ``Tᵀ X``.

Beside them, two one-time costs: reading the store once into this process
(``ds.X.compute()`` with the threaded scheduler) and loading the blocks onto the workers (engine
construction plus its first evaluation, which waits for the load).

Run ``python -m benchmarks.bench_pass [--quick]`` from the repository root.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsoftmax.objective import Params, finalize, loss_and_grad

from .common import Timing, markdown_table, measure, measure_interleaved

__all__ = ["FULL", "QUICK", "PassConfig", "naive_loss_and_grad", "random_params", "run"]

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
        ``coef`` (n_classes, n_features) and ``intercept`` (n_classes,).
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
        Class ids.
    l2 : float

    Returns
    -------
    loss : float
    grad : Params
    """
    n_samples = X.shape[0]
    n_classes = params.coef.shape[0]
    logits = X @ params.coef.T.astype(X.dtype) + params.intercept.astype(X.dtype)
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
    grad_intercept = residual.sum(axis=0, dtype=np.float64) / n_samples
    return loss, Params(grad_coef, grad_intercept)


def _largest_difference(left: tuple[float, Params], right: tuple[float, Params]) -> float:
    """Largest absolute difference over the loss and every gradient entry."""
    (loss_a, grad_a), (loss_b, grad_b) = left, right
    return max(
        abs(loss_a - loss_b),
        float(np.max(np.abs(grad_a.coef - grad_b.coef))),
        float(np.max(np.abs(grad_a.intercept - grad_b.intercept))),
    )


def _with_one_blas_thread(
    compute: Callable[..., tuple[float, Params]], params: Params, X: np.ndarray, y: np.ndarray
) -> tuple[float, Params]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return compute(params, X, y, L2)


def _timing_row(name: str, timing: Timing, baselines: tuple[Timing, ...]) -> list[str]:
    ratios = [f"{timing.median / baseline.median:.2f}" for baseline in baselines]
    return [
        name,
        f"{timing.median:.3f}",
        f"{timing.min:.3f}",
        f"{timing.max:.3f}",
        *ratios,
    ]


def run(config: PassConfig, workdir: Path) -> str:
    """Run the benchmark; return its Markdown section (tables and notes).

    Parameters
    ----------
    config : PassConfig
    workdir : Path
        An empty directory for the dataset.
    """
    import distributed

    from dsoftmax import make_classification
    from dsoftmax.cluster import local_cluster
    from dsoftmax.engine import DaskEngine

    params = random_params(config.n_classes, config.n_features)
    cluster = local_cluster(n_workers=config.n_workers, threads_per_worker=1, dashboard=False)
    with cluster, distributed.Client(cluster) as client:
        started = time.perf_counter()
        dataset = make_classification(
            workdir / "pass.zarr",
            config.n_samples,
            config.n_features,
            config.n_classes,
            chunk_rows=config.chunk_rows,
            seed=0,
            client=client,
        )
        make_seconds = time.perf_counter() - started

        # The threaded scheduler reads into this process, not through the cluster's client.
        read = measure(lambda: dataset.X.compute(scheduler="threads"), config.read_repeat)
        X = dataset.X.compute(scheduler="threads")
        y = dataset.y.compute(scheduler="threads")

        reference = loss_and_grad(params, X, y, L2)
        naive = naive_loss_and_grad(params, X, y, L2)

        started = time.perf_counter()
        with DaskEngine(client, dataset.X, dataset.y) as engine:
            on_workers = finalize(engine.sums(params), params, L2)  # waits for every block
            load = Timing((time.perf_counter() - started,))
            timings = measure_interleaved(
                {
                    "workers": lambda _: engine.sums(params),
                    "blocked": lambda _: loss_and_grad(params, X, y, L2),
                    "one_thread": lambda _: _with_one_blas_thread(loss_and_grad, params, X, y),
                    "naive": lambda _: naive_loss_and_grad(params, X, y, L2),
                },
                config.repeat,
                warmup=1,
            )

    baselines = (timings["blocked"], timings["naive"])
    table = markdown_table(
        ["one loss + gradient evaluation", "median s", "min s", "max s",
         "÷ loss_and_grad", "÷ naive NumPy"],
        [
            _timing_row(
                f"DaskEngine.sums, {config.n_workers} workers (blocks in worker memory)",
                timings["workers"],
                baselines,
            ),
            _timing_row(
                "NumPy, dsoftmax.objective.loss_and_grad, in process",
                timings["blocked"],
                baselines,
            ),
            _timing_row(
                "NumPy, loss_and_grad with 1 BLAS thread, in process",
                timings["one_thread"],
                baselines,
            ),
            _timing_row("NumPy, naive, in process", timings["naive"], baselines),
        ],
    )  # fmt: skip
    one_time = markdown_table(
        ["one-time cost", "median s", "min s", "max s", "runs"],
        [
            ["read the store once into this process (ds.X.compute(), threads)",
             f"{read.median:.3f}", f"{read.min:.3f}", f"{read.max:.3f}", len(read.samples)],
            [f"load the blocks onto {config.n_workers} workers + first evaluation",
             f"{load.median:.3f}", f"{load.min:.3f}", f"{load.max:.3f}", len(load.samples)],
            ["write the dataset (make_classification on the cluster)",
             f"{make_seconds:.3f}", f"{make_seconds:.3f}", f"{make_seconds:.3f}", 1],
        ],
    )  # fmt: skip
    size_mib = X.nbytes / 2**20
    return "\n".join(
        [
            f"### Full-batch pass: {config.n_samples:,} × {config.n_features} {X.dtype}, "
            f"{config.n_classes} classes",
            "",
            f"{len(dataset.chunk_rows)} chunks of {config.chunk_rows:,} rows ({size_mib:.0f} MiB "
            f"of X), zstd; {config.n_workers} local worker processes with 1 thread each; "
            f"{config.repeat} timed rounds after a warm-up round, each round running every row "
            "once in turn. Ratios are medians over medians.",
            "",
            table,
            "",
            one_time,
            "",
            "Agreement (largest absolute difference over the loss and every gradient entry): "
            f"workers vs loss_and_grad {_largest_difference(on_workers, reference):.1e}, "
            f"naive vs loss_and_grad {_largest_difference(naive, reference):.1e}.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsoftmax-bench-") as workdir:
        print(run(QUICK if args.quick else FULL, Path(workdir)))


if __name__ == "__main__":  # worker processes are spawned and import __main__
    main()
