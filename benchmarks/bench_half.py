"""Target 4, half-precision storage: a float16 store against the float32 store of the same rows.

The same teacher rows are written twice, as float32 and as float16 (``write_dataset(...,
dtype="float16")``). On one local cluster, fits of ``SoftmaxRegression(solver="lbfgs")`` from
``open_dataset`` (the load onto the workers included) alternate between the two stores; a thread
samples the workers' resident memory during each fit.

Targets: load + fit on the float16 store takes at most 0.6× the float32 store's, and the
workers' memory growth during the fit (over their resident memory before it) at most 0.55×
(medians). The float16 fit's objective on the rounded rows is reported beside the float32 fit's.

Run ``python -m benchmarks.bench_half [--quick]`` from the repository root.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    MIB,
    MemorySampler,
    Section,
    Timing,
    Verdict,
    bench_main,
    connect,
    markdown_table,
    start_cluster,
    stored_codec,
    teacher_dataset,
    worker_processes,
)

__all__ = ["FULL", "NAME", "QUICK", "THRESHOLD_MEMORY", "THRESHOLD_TIME", "HalfConfig", "run"]

NAME = "half"
#: Target 4: load + fit on the float16 store ÷ on the float32 store, at most.
THRESHOLD_TIME = 0.6
#: Target 4: the workers' memory growth on the float16 store ÷ on the float32 store, at most.
THRESHOLD_MEMORY = 0.55


@dataclass(frozen=True)
class HalfConfig:
    """Sizes of the half-precision benchmark."""

    n_samples: int = 1_000_000
    n_features: int = 128
    n_classes: int = 10
    chunk_rows: int = 62_500
    l2: float = 1e-4
    max_iter: int = 100
    n_workers: int = 2
    repeat: int = 3


FULL = HalfConfig()
QUICK = HalfConfig(n_samples=40_000, n_features=32, chunk_rows=5_000, max_iter=20, repeat=1)


def _half_store(workdir: Path, dataset: Any) -> Any:
    from dsoftmax import open_dataset, write_dataset

    path = workdir / f"half-{dataset.n_samples}x{dataset.n_features}-{dataset.chunk_rows[0]}r.zarr"
    if (path / "zarr.json").exists():
        return open_dataset(path)
    return write_dataset(
        path, dataset.X, dataset.y, chunk_rows=dataset.chunk_rows[0], dtype="float16"
    )


def _fit(client: Any, url: str, config: HalfConfig) -> dict[str, Any]:
    """One fit from the store, the load included; its seconds, the workers' largest memory
    growth, its iterations and final objective."""
    from sklearn.exceptions import ConvergenceWarning

    from dsoftmax import SoftmaxRegression, open_dataset

    model = SoftmaxRegression(
        l2=config.l2, fit_intercept=False, max_iter=config.max_iter, client=client
    )
    with MemorySampler(worker_processes(client)) as memory, warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        started = time.perf_counter()
        model.fit(open_dataset(url))
        seconds = time.perf_counter() - started
    growth = max(memory.peak_delta(name) for name in memory.peak)
    return {"seconds": seconds, "growth": growth, "n_iter": model.n_iter_,
            "loss": model.loss_curve_[-1]}  # fmt: skip


def run(config: HalfConfig, workdir: Path) -> Section:
    """Run the benchmark.

    Parameters
    ----------
    config : HalfConfig
    workdir : Path
        A directory for the datasets (shared with the other benchmarks of a run).
    """

    with start_cluster(config.n_workers) as cluster, connect(cluster) as client:
        single, _ = teacher_dataset(
            workdir, config.n_samples, config.n_features, config.n_classes, config.chunk_rows,
            client,
        )  # fmt: skip
        half = _half_store(workdir, single)
        stores = {"float32": str(single.url), "float16": str(half.url)}
        for url in stores.values():  # warms the workers: each dtype's kernel compiled, loaded
            _fit(client, url, config)
        fits: dict[str, list[dict[str, Any]]] = {name: [] for name in stores}
        for _ in range(config.repeat):
            for name, url in stores.items():
                fits[name].append(_fit(client, url, config))
        sizes = {name: _store_bytes(Path(url)) for name, url in stores.items()}
        codecs = {"float32": stored_codec(single), "float16": stored_codec(half)}
    return _section(config, fits, sizes, codecs)


def _store_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def _section(
    config: HalfConfig,
    fits: dict[str, list[dict[str, Any]]],
    sizes: dict[str, int],
    codecs: dict[str, str],
) -> Section:
    seconds = {name: Timing(tuple(f["seconds"] for f in runs)) for name, runs in fits.items()}
    growth = {
        name: float(np.median([f["growth"] for f in runs])) for name, runs in fits.items()
    }
    rows = [
        [f"{name} store ({sizes[name] / MIB:.0f} MiB on disk, {codecs[name]})",
         *seconds[name].cells(),
         f"{growth[name] / MIB:.0f}", "/".join(str(f["n_iter"]) for f in fits[name]),
         f"{fits[name][-1]['loss']:.9f}",
         f"{seconds[name].median / seconds['float32'].median:.2f}",
         f"{growth[name] / max(growth['float32'], 1.0):.2f}"]
        for name in fits
    ]  # fmt: skip
    table = markdown_table(
        ["load + fit (L-BFGS) from the store", "median s", "min s", "max s",
         "worker memory growth MiB", "iterations", "final objective", "÷ float32 time",
         "÷ float32 memory"],
        rows,
    )  # fmt: skip
    body = "\n".join(
        [
            f"{config.n_samples:,} × {config.n_features}, {config.n_classes} classes, chunks of "
            f"{config.chunk_rows:,} rows (the default codec), λ = {config.l2:g}, no intercept, "
            "at most "
            f"{config.max_iter} iterations; {config.n_workers} local workers. Each fit opens "
            "the store and fits from it, the load included; the two stores take turns, "
            f"{config.repeat} fits each after a warm-up fit of each. Memory: the largest growth "
            "of a worker's resident set over its value before the fit (sampled every 20 ms).",
            "",
            table,
        ]
    )
    time_ratio = seconds["float16"].median / seconds["float32"].median
    memory_ratio = growth["float16"] / max(growth["float32"], 1.0)
    return Section(
        name=NAME,
        title="8. Half-precision storage: float16 against float32",
        body=body,
        verdicts=[
            Verdict("8 half precision", "load + fit, float16 ÷ float32 store (medians)",
                    time_ratio, THRESHOLD_TIME),
            Verdict("8 half precision", "worker memory growth, float16 ÷ float32 store",
                    memory_ratio, THRESHOLD_MEMORY),
        ],
    )  # fmt: skip


if __name__ == "__main__":  # worker processes are spawned and import __main__
    bench_main(__doc__, run, FULL, QUICK)
