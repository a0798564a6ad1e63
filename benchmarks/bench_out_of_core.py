"""Target 5, out-of-core: a dataset twice the workers' memory, streamed; and a codec table.

Part 1, on a local cluster whose workers have a small memory limit (2 × 512 MiB by default) and
a store whose uncompressed size is at least twice the cluster's total limit:

* a full pass with ``DaskEngine(..., hold="stream")`` (chunks re-read from the store on every
  pass), and one pass of a grid's 10 models (10 λ on a validation split, the training sums of
  ``SoftmaxRegressionCV``'s pass), against one read of the store with Dask on the same cluster
  (``X.sum()`` and ``y.sum()``), rounds taking turns;
* what ``hold="auto"`` resolves to;
* ``SoftmaxRegression(solver="sgd", max_iter=1, hold_data="stream")`` (one epoch, or its
  refusal before the fit when the workers have no room for a batch's blocks) and
  ``SoftmaxRegression(solver="lbfgs", max_iter=3, hold_data="auto")``, fitted on the dataset;
* each worker's peak resident memory (sampled every 20 ms from this process, and the worker's
  own peak, VmHWM), and whether any worker was restarted (address and process id unchanged).

Targets: the streamed pass takes at most 1.1× one read, the grid's pass at most 1.5×; no worker
goes above its memory limit; no worker restarts.

Part 2, a codec table on a smaller store: for zstd level 1 (dsoftmax's ``codec="zstd"``), zstd
level 3, LZ4, Blosc-LZ4 with byte shuffle (dsoftmax's ``codec="lz4"``) and no compression, the
store's size, one read with Dask and one streamed full pass; and which codec is cheapest to read
at a few storage bandwidths (decode time + bytes / bandwidth).

Run ``python -m benchmarks.bench_out_of_core [--quick]`` from the repository root.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .bench_pass import random_params
from .common import (
    MIB,
    MemorySampler,
    Section,
    Timing,
    Verdict,
    bench_main,
    connect,
    directory_bytes,
    markdown_table,
    measure_interleaved,
    plural,
    start_cluster,
    stored_codec,
    teacher_dataset,
    worker_max_rss,
    worker_processes,
)

__all__ = [
    "CODECS",
    "FULL",
    "NAME",
    "QUICK",
    "THRESHOLD_GRID_PASS",
    "THRESHOLD_PASS",
    "CodecCost",
    "OutOfCoreConfig",
    "best_codec",
    "by_name",
    "default_codec_verdict",
    "read_cost",
    "restarted_workers",
    "run",
]

NAME = "out_of_core"
#: Target 5: a streamed full pass ÷ one read of the store with Dask, at most.
THRESHOLD_PASS = 1.1
#: Target 9: a streamed pass of a grid's models ÷ one read of the store with Dask, at most.
THRESHOLD_GRID_PASS = 1.5
#: The grid of that pass: this many λ on one validation split.
GRID_L2S = 10
#: Codecs of the table, in order.
CODECS = ("zstd-1", "zstd-3", "lz4", "blosc-lz4", "none")
#: Storage bandwidths (bytes/s per worker) at which the codec table names the cheapest codec.
BANDWIDTHS = {"in the page cache": float("inf"), "at 1 GB/s": 1e9, "at 100 MB/s": 1e8}
#: Where cluster datasets usually live: object storage, about 100 MB/s per worker.
OBJECT_STORE = "at 100 MB/s"
#: What dsoftmax's default (``codec="auto"`` of :func:`dsoftmax.data.write_dataset`) stores the
#: table's continuous features with: no compression (zstd saves less than a fifth of them).
DEFAULT_CODEC = "none"
#: How much slower than the best a default may read before the table argues for another one.
DEFAULT_SLACK = 0.10


@dataclass(frozen=True)
class OutOfCoreConfig:
    """Sizes of the out-of-core benchmark."""

    n_samples: int = 4_250_000
    n_features: int = 128
    n_classes: int = 10
    chunk_rows: int = 62_500
    n_workers: int = 2
    memory_limit: str = "512MiB"
    repeat: int = 2
    sgd_batch_size: int = 8192
    lbfgs_max_iter: int = 3
    codec_samples: int = 500_000
    codec_repeat: int = 2


FULL = OutOfCoreConfig()
QUICK = OutOfCoreConfig(
    n_samples=200_000,
    n_features=32,
    chunk_rows=12_500,
    repeat=1,
    sgd_batch_size=4096,
    lbfgs_max_iter=2,
    codec_samples=50_000,
    codec_repeat=1,
)


class CodecCost(NamedTuple):
    """One row of the codec table."""

    codec: str
    store_bytes: int
    read_seconds: float
    pass_seconds: float
    write_seconds: float = float("nan")


def read_cost(cost: CodecCost, bandwidth: float, n_workers: int) -> float:
    """Seconds to read a store: ``read_seconds + store_bytes / (n_workers · bandwidth)``.

    The measured read (decoding, from the page cache) plus moving the stored bytes at
    ``bandwidth`` bytes/s per worker, the workers reading in parallel; ``bandwidth=inf`` is the
    measured read alone.

    Examples
    --------
    >>> read_cost(CodecCost("zstd-1", 200, 1.5, 2.0), bandwidth=100.0, n_workers=2)
    2.5
    """
    return cost.read_seconds + cost.store_bytes / (n_workers * bandwidth)


def best_codec(costs: Sequence[CodecCost], bandwidth: float, n_workers: int) -> str:
    """The codec of least :func:`read_cost` at ``bandwidth``.

    Examples
    --------
    >>> rows = [CodecCost("small", 50, 2.0, 3.0), CodecCost("fast", 100, 1.0, 2.0)]
    >>> best_codec(rows, float("inf"), 1), best_codec(rows, 10.0, 1)
    ('fast', 'small')
    """
    return min(costs, key=lambda cost: read_cost(cost, bandwidth, n_workers)).codec


def default_codec_verdict(costs: Sequence[CodecCost], n_workers: int) -> str:
    """One sentence on what dsoftmax's default codec stores these features with against the
    measured best.

    The default should be within :data:`DEFAULT_SLACK` of the cheapest read where datasets
    usually live for a cluster: object storage, at :data:`OBJECT_STORE_BANDWIDTH` per worker.

    Examples
    --------
    >>> rows = [CodecCost("zstd-1", 90, 1.05, 0), CodecCost("none", 100, 0.1, 0)]
    >>> default_codec_verdict(rows, n_workers=1).endswith("it stays the default.")
    True
    >>> rows = [CodecCost("zstd-1", 90, 0.1, 0), CodecCost("none", 100, 3.0, 0)]
    >>> default_codec_verdict(rows, n_workers=1).endswith("favour zstd-1 as the default.")
    True
    """
    ratios = {
        where: read_cost(by_name(costs, DEFAULT_CODEC), bandwidth, n_workers)
        / read_cost(by_name(costs, best_codec(costs, bandwidth, n_workers)), bandwidth, n_workers)
        for where, bandwidth in BANDWIDTHS.items()
    }
    remote = ratios[OBJECT_STORE]
    spread = ", ".join(f"{ratio:.2f}× {where}" for where, ratio in ratios.items())
    if remote <= 1 + DEFAULT_SLACK:
        conclusion = (
            f"within {DEFAULT_SLACK:.0%} of the best {OBJECT_STORE}, where cluster datasets "
            "usually live (object storage): it stays the default"
        )
    else:
        better = best_codec(costs, BANDWIDTHS[OBJECT_STORE], n_workers)
        conclusion = (
            f"more than {DEFAULT_SLACK:.0%} slower than {better} {OBJECT_STORE}, where cluster "
            f"datasets usually live (object storage): these measurements favour {better} as the "
            "default"
        )
    return (
        f"Read cost of the default, {DEFAULT_CODEC}, over the cheapest codec's: {spread}; it is "
        f"{conclusion}."
    )


def by_name(costs: Sequence[CodecCost], codec: str) -> CodecCost:
    """The row of ``codec``."""
    return next(cost for cost in costs if cost.codec == codec)


def restarted_workers(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """Workers that died or were restarted between two ``{address: pid}`` snapshots.

    A worker restarted by its nanny comes back with a new process id, and usually a new
    address; either change, a missing worker or a new one counts.

    Examples
    --------
    >>> restarted_workers({"a": 1, "b": 2}, {"a": 1, "c": 3})
    ['b', 'c']
    """
    changed = {address for address, pid in before.items() if after.get(address) != pid}
    changed |= set(after) - set(before)
    return sorted(changed)


def _read_store(dataset: Any) -> None:
    import dask

    dask.compute(dataset.X.sum(), dataset.y.sum())


def _read_and_pass(
    dataset: Any, engine: Any, grid_pass: Any, params: Any, repeat: int
) -> dict[str, Timing]:
    """One read of the store, one full pass and one grid pass, taking turns, after a warm-up
    round."""
    return measure_interleaved(
        {
            "read": lambda _: _read_store(dataset),
            "pass": lambda _: engine.sums(params),
            "grid pass": lambda _: grid_pass(),
        },
        repeat,
        warmup=1,
    )


def _streamed_grid(client: Any, dataset: Any, config: OutOfCoreConfig) -> tuple[Any, Any]:
    """The engine of ``GRID_L2S`` models on one validation split, streamed, and one of their
    passes (training sums of every model, through the grid's own problem)."""
    import dask.array as da

    from dsoftmax.engine import DaskEngine
    from dsoftmax.engine.grid_problem import GridProblem
    from dsoftmax.grid.folds import fold_table
    from dsoftmax.grid.loop import GridModel

    folds = fold_table("validation", np.asarray(dataset.y), 0, 0.1)
    codes = da.from_array(folds.codes, chunks=(dataset.X.chunks[0],))
    engine = DaskEngine(client, dataset.X, dataset.y, hold="stream", folds=codes)
    problem = GridProblem(engine, config.n_classes, config.n_features, folds.roles)
    models = [GridModel(0, float(l2)) for l2 in np.logspace(-6, -2, GRID_L2S)]
    points = [random_params(config.n_classes, config.n_features, seed) for seed in range(GRID_L2S)]
    return engine, lambda: problem.value_and_grad(points, models)


def _compressors(codec: str) -> Any:
    import zarr.codecs

    if codec == "none":
        return None
    if codec.startswith("zstd-"):
        return (zarr.codecs.ZstdCodec(level=int(codec.removeprefix("zstd-"))),)
    if codec == "blosc-lz4":
        return (zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)
    if codec == "lz4":
        from zarr.codecs.numcodecs import LZ4

        return (LZ4(),)
    raise ValueError(f"unknown codec {codec!r}; expected one of {list(CODECS)}.")


def _copy_with_codec(source: Path, target: Path, codec: str) -> float:
    """Write the dataset at ``source`` again with ``codec``; return the seconds it took."""
    import zarr

    started = time.perf_counter()
    with warnings.catch_warnings():
        # numcodecs' LZ4 is outside the Zarr v3 spec; zarr says so at every use.
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
        compressors = _compressors(codec)
        original = zarr.open_group(source, mode="r")
        copy = zarr.open_group(target, mode="w")
        for name in original.array_keys():
            array = original[name]
            rewritten = copy.create_array(
                name,
                shape=array.shape,
                dtype=array.dtype,
                chunks=array.chunks,
                compressors=compressors,
                config={"write_empty_chunks": True},
            )
            rewritten[...] = array[...]
        copy.attrs.update(dict(original.attrs))
    return time.perf_counter() - started


def _codec_costs(
    config: OutOfCoreConfig, workdir: Path, client: Any, base: Path, params: Any
) -> list[CodecCost]:
    """Write the dataset at ``base`` once per codec, then time reads and streamed passes of all
    of them in rounds, every codec once per round (a burst of outside load then hits them
    all, not the one that happened to run)."""
    from dsoftmax import open_dataset
    from dsoftmax.engine import DaskEngine

    paths = {codec: workdir / f"codec-{codec}-{config.codec_samples}.zarr" for codec in CODECS}
    writes = {codec: _copy_with_codec(base, path, codec) for codec, path in paths.items()}
    datasets = {codec: open_dataset(path) for codec, path in paths.items()}
    engines = {
        codec: DaskEngine(client, dataset.X, dataset.y, hold="stream")
        for codec, dataset in datasets.items()
    }
    candidates = {}
    for codec in CODECS:
        candidates[f"{codec} read"] = lambda _, dataset=datasets[codec]: _read_store(dataset)
        candidates[f"{codec} pass"] = lambda _, engine=engines[codec]: engine.sums(params)
    try:
        timings = measure_interleaved(candidates, config.codec_repeat, warmup=1)
    finally:
        for engine in engines.values():
            engine.close()
    return [
        CodecCost(
            codec,
            directory_bytes(paths[codec]),
            timings[f"{codec} read"].median,
            timings[f"{codec} pass"].median,
            writes[codec],
        )
        for codec in CODECS
    ]


def _codec_table(config: OutOfCoreConfig, workdir: Path, client: Any) -> str:
    """Markdown of the codec comparison, with the cheapest codec at each bandwidth."""
    base, _ = teacher_dataset(
        workdir, config.codec_samples, config.n_features, config.n_classes, config.chunk_rows,
        client, codec="none",
    )  # fmt: skip
    params = random_params(config.n_classes, config.n_features)
    uncompressed = config.codec_samples * (config.n_features * 4 + 4)
    with warnings.catch_warnings():
        # Opening the numcodecs LZ4 store repeats zarr's warning that it is outside the spec.
        warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
        costs = _codec_costs(config, workdir, client, Path(base.url), params)
    writes = {cost.codec: cost.write_seconds for cost in costs}
    rows = [
        [
            cost.codec,
            f"{cost.store_bytes / MIB:.1f}",
            f"{cost.store_bytes / uncompressed:.2f}",
            f"{writes[cost.codec]:.2f}",
            f"{cost.read_seconds:.3f}",
            f"{cost.pass_seconds:.3f}",
        ]
        for cost in costs
    ]
    table = markdown_table(
        ["codec", "store MiB", "÷ raw", "write s (client)", "read s (Dask, median)",
         "streamed pass s (median)"],
        rows,
    )  # fmt: skip
    winners = {
        where: best_codec(costs, bandwidth, config.n_workers)
        for where, bandwidth in BANDWIDTHS.items()
    }
    smallest = min(costs, key=lambda cost: cost.store_bytes)
    fastest = min(costs, key=lambda cost: cost.read_seconds)
    choice = ", ".join(f"{where}: **{codec}**" for where, codec in winners.items())
    text = "\n".join(
        [
            f"Codecs on {config.codec_samples:,} × {config.n_features} float32 teacher data "
            f"({uncompressed / MIB:.0f} MiB raw), chunks of {config.chunk_rows:,} rows, the same "
            f"{config.n_workers} workers; {plural(config.codec_repeat, 'timed round')} after a "
            "warm-up, every codec read and passed over once per round "
            "(the store is in the page cache: the read is decoding, not disk).",
            "",
            table,
            "",
            f"Smallest store: {smallest.codec}; fastest read: {fastest.codec}. Cheapest to read "
            f"(measured read + store bytes / ({config.n_workers} workers × bandwidth)): {choice}. "
            f"{default_codec_verdict(costs, config.n_workers)} Gaussian features are close to "
            "incompressible, so the codecs mostly trade decode time for little size here; "
            "features with repeated or rounded values compress further and shift the balance "
            "towards zstd on slow storage.",
        ]
    )
    return text


def run(config: OutOfCoreConfig, workdir: Path) -> Section:
    """Run the benchmark.

    Parameters
    ----------
    config : OutOfCoreConfig
    workdir : Path
        A directory for the datasets (shared with the other benchmarks of a run).
    """
    import dask
    from sklearn.exceptions import ConvergenceWarning

    from dsoftmax import SoftmaxRegression
    from dsoftmax.engine import DaskEngine

    params = random_params(config.n_classes, config.n_features)
    limit = dask.utils.parse_bytes(config.memory_limit)
    cluster = start_cluster(config.n_workers, memory_limit=config.memory_limit)
    with cluster, connect(cluster) as client:
        workers_before = worker_processes(client)
        dataset, make_seconds = teacher_dataset(
            workdir, config.n_samples, config.n_features, config.n_classes, config.chunk_rows,
            client,
        )  # fmt: skip
        peaks: dict[str, dict[str, int]] = {}
        grid_engine, grid_pass = _streamed_grid(client, dataset, config)
        with MemorySampler(workers_before) as sampler:
            with (
                DaskEngine(client, dataset.X, dataset.y, hold="stream") as engine,
                grid_engine,
            ):
                timings = _read_and_pass(dataset, engine, grid_pass, params, config.repeat)
            with DaskEngine(client, dataset.X, dataset.y, hold="auto") as engine:
                auto_hold = engine.hold
        peaks["read and streamed passes"] = sampler.peak
        fits: dict[str, tuple[float, float] | str] = {}
        # A batch straddles two windows of 3 chunks and a partial one each: 8 blocks. Workers
        # with no room for them refuse the fit before it starts (its message is reported).
        estimators = {
            "sgd": SoftmaxRegression(
                solver="sgd", max_iter=1, batch_size=config.sgd_batch_size, learning_rate=0.1,
                hold_data="stream", shuffle_window=3 * config.chunk_rows, client=client,
                random_state=0,
            ),
            "lbfgs": SoftmaxRegression(
                solver="lbfgs", max_iter=config.lbfgs_max_iter, hold_data="auto", client=client,
            ),
        }  # fmt: skip
        for name, estimator in estimators.items():
            with MemorySampler(workers_before) as sampler, warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is small on purpose
                started = time.perf_counter()
                try:
                    estimator.fit(dataset)
                except ValueError as refused:
                    fits[name] = str(refused)
                else:
                    fits[name] = (time.perf_counter() - started, estimator.loss_curve_[-1])
            peaks[f"{name} fit"] = sampler.peak
        codec_text = _codec_table(config, workdir, client)
        workers_after = worker_processes(client)
        lifetime_peaks = (
            worker_max_rss(client) if not restarted_workers(workers_before, workers_after) else {}
        )

    return _section(
        config, dataset, limit, make_seconds, timings, auto_hold, fits, peaks, lifetime_peaks,
        restarted_workers(workers_before, workers_after), codec_text,
    )  # fmt: skip


def _fit_row(
    config: OutOfCoreConfig, name: str, fit: tuple[float, float] | str, read_seconds: float
) -> list[str]:
    """The pass table's row of one fit, or of its refusal before any work."""
    what = f"SoftmaxRegression({name}) fit: " + (
        "1 epoch, hold_data='stream'" if name == "sgd"
        else f"{config.lbfgs_max_iter} iterations, hold_data='auto'"
    )  # fmt: skip
    if isinstance(fit, str):
        return [f"{what}: refused before the fit ({fit.split(';')[0]})", "", "", "", ""]
    seconds, loss = fit
    ratio = f"{seconds / read_seconds:.1f}"
    return [f"{what}, final loss {loss:.4f}", f"{seconds:.3f}", "", "", ratio]


def _section(
    config: OutOfCoreConfig,
    dataset: Any,
    limit: int,
    make_seconds: float,
    timings: dict[str, Timing],
    auto_hold: str,
    fits: dict[str, tuple[float, float] | str],
    peaks: dict[str, dict[str, int]],
    lifetime_peaks: dict[str, int],
    restarted: list[str],
    codec_text: str,
) -> Section:
    raw = config.n_samples * (config.n_features * 4 + 4)
    stored = directory_bytes(Path(dataset.url))
    total_limit = config.n_workers * limit
    read, streamed, grid = timings["read"], timings["pass"], timings["grid pass"]
    ratio = streamed.median / read.median
    grid_ratio = grid.median / read.median
    pass_table = markdown_table(
        ["", "median s", "min s", "max s", "÷ read"],
        [
            ["read the store once with Dask (X.sum(), y.sum())", *read.cells(), "1.00"],
            ['full pass, DaskEngine(hold="stream")', *streamed.cells(), f"{ratio:.2f}"],
            [f"grid pass: {GRID_L2S} λ on a validation split (10 %), streamed", *grid.cells(),
             f"{grid_ratio:.2f}"],
        ]
        + [_fit_row(config, name, fit, read.median) for name, fit in fits.items()],
    )  # fmt: skip
    workers = sorted({address for phase in peaks.values() for address in phase})
    peak_rows = [
        [phase, *(f"{phase_peaks.get(w, 0) / MIB:.0f}" for w in workers)]
        for phase, phase_peaks in peaks.items()
    ]
    peak_rows.append(
        ["whole life of the worker (VmHWM: dataset writing and codec table included)",
         *(f"{lifetime_peaks[w] / MIB:.0f}" if w in lifetime_peaks else "n/a" for w in workers)]
    )  # fmt: skip
    peak_table = markdown_table(
        ["peak RSS, MiB", *(f"worker {i}" for i in range(len(workers)))], peak_rows
    )
    highest = max(
        [value for phase in peaks.values() for value in phase.values()]
        + list(lifetime_peaks.values())
    )
    make_text = "reused" if np.isnan(make_seconds) else f"written in {make_seconds:.1f} s"
    if raw >= 2 * total_limit:
        scale_note = (
            "at least the 2× the target asks for; scaled down from the issue's 2 × 1 GiB with a "
            "4+ GB store to keep the run short"
        )
    else:
        scale_note = "less than the 2× the target asks for: quick sizes only exercise the code"
    body = "\n".join(
        [
            f"{config.n_samples:,} × {config.n_features} float32, {config.n_classes} classes, "
            f"{len(dataset.chunk_rows)} chunks of {config.chunk_rows:,} rows: {raw / 2**30:.2f} "
            f"GiB raw, {stored / 2**30:.2f} GiB stored ({stored_codec(dataset)}), {make_text}. "
            "Cluster: "
            f"{config.n_workers} workers × {config.memory_limit} (1 thread each), "
            f"{total_limit / 2**30:.2f} GiB in all: the data is {raw / total_limit:.2f}× the "
            f"workers' memory ({scale_note}). "
            f'`hold="auto"` resolved to `{auto_hold!r}`. {plural(config.repeat, "timed round")} '
            "after a warm-up, read and pass taking turns.",
            "",
            pass_table,
            "",
            f"Worker memory (limit {limit / MIB:.0f} MiB each; sampled every 20 ms from the "
            "benchmark process):",
            "",
            peak_table,
            "",
            "Workers restarted or lost during the section (codec table included): "
            + (", ".join(restarted) if restarted else "none (same addresses and process ids)")
            + ".",
            "",
            codec_text,
        ]
    )  # fmt: skip
    return Section(
        name=NAME,
        title="5. Out-of-core: data twice the workers' memory, streamed",
        body=body,
        verdicts=[
            Verdict("5 out-of-core pass", 'DaskEngine(hold="stream") pass ÷ one Dask read '
                    "(medians)", ratio, THRESHOLD_PASS),
            Verdict("9 grid, streamed", f"pass of {GRID_L2S} λ on a validation split ÷ one "
                    "Dask read (medians)", grid_ratio, THRESHOLD_GRID_PASS),
            Verdict("5 out-of-core memory", "highest worker peak RSS ÷ its memory limit",
                    highest / limit, 1.0),
            Verdict("5 out-of-core restarts", "workers restarted or lost", float(len(restarted)),
                    0.0, unit=""),
        ],
    )  # fmt: skip


if __name__ == "__main__":  # worker processes are spawned and import __main__
    bench_main(__doc__, run, FULL, QUICK)
