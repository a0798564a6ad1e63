"""Target 6, wide models: 1,000 classes × 1,024 features, client memory and cost of a step.

With ``W`` of 1,000 × 1,024 (4 MB in float32, 8 MB as the float64 the client keeps), every
block's gradient sum is as large as ``W``: a reduce that brought one per block to the client would
need memory in proportion to the number of blocks. Timed on a dataset of many small blocks:

* a full-batch pass (``DaskEngine.sums`` over every row, then ``finalize``);
* minibatch steps (``DaskEngine.sums`` over one seeded batch, ``finalize``, an SGD update);

while a thread samples this process's resident memory, and every warning is recorded.

Targets: the client's peak memory growth during the evaluations stays within a fixed number of
copies of ``W`` (12, plus 32 MiB for the interpreter) whatever the number of blocks, and no
"Sending large graph" (or "Large object") warning is raised; the full pass on the workers takes
at most 1.2× the blocked NumPy pass over the same rows in this process (2 threads, each half of
the rows with one BLAS thread; ``benchmarks.bench_pass.blocked_pass``), the two timed in rounds
that take turns, after the memory is measured. The cost of a step is reported.

Run ``python -m benchmarks.bench_wide [--quick]`` from the repository root.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsoftmax.objective import Params, finalize
from dsoftmax.sampling import EpochSampler

from .bench_pass import blocked_pass, random_params
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
    teacher_dataset,
)

__all__ = [
    "FULL",
    "INTERPRETER_SLACK",
    "LARGE_GRAPH",
    "NAME",
    "PASS_THRESHOLD",
    "QUICK",
    "WideConfig",
    "large_graph_warnings",
    "run",
]

NAME = "wide"
#: Target 1 (wide model): the pass on the workers ÷ the blocked NumPy pass, at most.
PASS_THRESHOLD = 1.2
#: Warnings that say a task graph carries data it should not (distributed's wording).
LARGE_GRAPH = re.compile(r"large graph|large object", re.IGNORECASE)
#: Growth of the client's memory not due to the model (buffers, caches, allocator), in bytes.
INTERPRETER_SLACK = 32 * MIB


@dataclass(frozen=True)
class WideConfig:
    """Sizes of the wide-model benchmark."""

    n_samples: int = 16_384
    n_features: int = 1024
    n_classes: int = 1000
    chunk_rows: int = 256
    batch_size: int = 256
    learning_rate: float = 0.1
    l2: float = 1e-4
    n_workers: int = 2
    pass_repeat: int = 5
    n_steps: int = 10
    #: Target: the client's peak RSS growth, at most this many copies of the float64 ``W``
    #: plus :data:`INTERPRETER_SLACK` (what the client process grows by whatever the model).
    max_copies_of_w: float = 12.0


FULL = WideConfig()
QUICK = WideConfig(
    n_samples=4096, n_features=256, n_classes=200, chunk_rows=128, batch_size=128,
    pass_repeat=1, n_steps=5,
)  # fmt: skip


def large_graph_warnings(records: list[warnings.WarningMessage]) -> list[str]:
    """The messages, first line only, of recorded warnings about large graphs or objects."""
    return [
        str(record.message).splitlines()[0]
        for record in records
        if LARGE_GRAPH.search(str(record.message))
    ]


def _sgd_step(engine: Any, params: Params, batch: Any, config: WideConfig) -> Params:
    loss, grad = finalize(engine.sums(params, batch), params, config.l2)
    del loss
    return Params(
        params.coef - config.learning_rate * grad.coef,
        params.intercept - config.learning_rate * grad.intercept,
    )


def run(config: WideConfig, workdir: Path) -> Section:
    """Run the benchmark.

    Parameters
    ----------
    config : WideConfig
    workdir : Path
        A directory for the dataset (shared with the other benchmarks of a run).
    """
    import psutil

    from dsoftmax.engine import DaskEngine

    params = random_params(config.n_classes, config.n_features)
    sampler = EpochSampler(config.n_samples, config.batch_size, seed=0)
    client_pid = {"client": os.getpid()}
    with start_cluster(config.n_workers) as cluster, connect(cluster) as client:
        dataset, _ = teacher_dataset(
            workdir, config.n_samples, config.n_features, config.n_classes, config.chunk_rows,
            client,
        )  # fmt: skip
        batches = list(sampler.batches(0, dataset.chunk_rows))
        n_steps = min(config.n_steps, len(batches))
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            # Growth is measured from before the engine exists: the first pass is the one that
            # would need memory for every block's sums; later ones reuse what it freed.
            before = psutil.Process().memory_info().rss
            started = time.perf_counter()
            engine = DaskEngine(client, dataset.X, dataset.y)
            try:
                with MemorySampler(client_pid) as pass_memory:
                    finalize(engine.sums(params), params, config.l2)  # waits for the load
                    first = time.perf_counter() - started
                    for _ in range(config.pass_repeat):
                        finalize(engine.sums(params), params, config.l2)
                hold = getattr(engine, "hold", "memory")
                steps = []
                current = params
                with MemorySampler(client_pid) as step_memory:
                    for batch in batches[:n_steps]:
                        started = time.perf_counter()
                        current = _sgd_step(engine, current, batch, config)
                        steps.append(time.perf_counter() - started)
                halves = np.array_split(dataset.X.compute(), config.n_workers)
                half_labels = np.array_split(dataset.y.compute(), config.n_workers)
                timings = measure_interleaved(
                    {
                        "workers": lambda _: finalize(engine.sums(params), params, config.l2),
                        "blocked": lambda _: blocked_pass(
                            params, halves, half_labels, config.n_workers
                        ),
                    },
                    config.pass_repeat,
                )
            finally:
                engine.close()
    flagged = large_graph_warnings(records)
    return _section(
        config, dataset, first, hold, timings["workers"], timings["blocked"],
        Timing(tuple(steps)),
        {"full-batch passes": pass_memory.peak["client"] - before,
         "minibatch steps": step_memory.peak["client"] - before},
        flagged, len(records),
    )  # fmt: skip


def _section(
    config: WideConfig,
    dataset: Any,
    first: float,
    hold: str,
    passes: Timing,
    blocked: Timing,
    steps: Timing,
    growth: dict[str, int],
    flagged: list[str],
    n_warnings: int,
) -> Section:
    w_bytes = config.n_classes * config.n_features * 8
    n_blocks = len(dataset.chunk_rows)
    rows_per_second = config.n_samples / passes.median
    table = markdown_table(
        ["evaluation", "median ms", "min ms", "max ms", "runs", "client peak RSS growth MiB",
         "÷ W (float64)"],
        [
            [f"full-batch pass over {config.n_samples:,} rows + finalize (rounds taking turns)",
             *passes.cells(1e3, 1),
             len(passes.samples), f"{growth['full-batch passes'] / MIB:.1f}",
             f"{growth['full-batch passes'] / w_bytes:.1f}"],
            [f"blocked NumPy pass over the same rows, {config.n_workers} threads, in process",
             *blocked.cells(1e3, 1), len(blocked.samples), "", ""],
            [f"minibatch step: {config.batch_size} rows, finalize, SGD update",
             *steps.cells(1e3, 1), len(steps.samples), f"{growth['minibatch steps'] / MIB:.1f}",
             f"{growth['minibatch steps'] / w_bytes:.1f}"],
        ],
    )  # fmt: skip
    worst = max(growth.values())
    body = "\n".join(
        [
            f"{config.n_samples:,} × {config.n_features:,} float32, {config.n_classes:,} "
            f"classes, {n_blocks} blocks of {config.chunk_rows:,} rows, {config.n_workers} "
            f"workers (hold={hold!r}, load + first pass {first:.2f} s). W is "
            f"{config.n_classes * config.n_features * 4 / MIB:.1f} MiB in float32, "
            f"{w_bytes / MIB:.1f} MiB in float64; one gradient sum per block brought to the "
            f"client would take {n_blocks * w_bytes / MIB:.0f} MiB. Client memory: resident "
            "set sampled every 20 ms; growth over its value before the engine was made, peak "
            "during the load and passes (the first pass included), then during the steps.",
            "",
            table,
            "",
            f"Full pass throughput: {rows_per_second:,.0f} rows/s. Warnings recorded: "
            f"{n_warnings}, about large graphs or objects: {len(flagged)}"
            + (f" ({'; '.join(sorted(set(flagged)))})" if flagged else "")
            + ".",
        ]
    )
    return Section(
        name=NAME,
        title=f"6. Wide model: {config.n_classes:,} classes × {config.n_features:,} features",
        body=body,
        verdicts=[
            Verdict("6 wide model memory",
                    f"client peak RSS growth during evaluations, {n_blocks} blocks (MiB)",
                    worst / MIB, (config.max_copies_of_w * w_bytes + INTERPRETER_SLACK) / MIB,
                    unit=" MiB"),
            Verdict("6 wide model graphs", "large-graph / large-object warnings",
                    float(len(flagged)), 0.0, unit=""),
            Verdict("1 wide pass", "DaskEngine.sums ÷ blocked NumPy pass (medians)",
                    passes.median / blocked.median, PASS_THRESHOLD),
        ],
    )  # fmt: skip


if __name__ == "__main__":  # worker processes are spawned and import __main__
    bench_main(__doc__, run, FULL, QUICK)
