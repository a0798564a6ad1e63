"""Target 7, scaling: a pass and a step on 1 to 4 workers, and a cost model checked against them.

For each number of workers (1 thread each, a fresh local cluster each time), on the reference
data held in worker memory, timed after a warm-up:

* a full-batch pass (``DaskEngine.sums(params)``);
* a minibatch step of 8,192 rows and one of 64 rows (``DaskEngine.sums(params, batch)``, the
  same seeded batches for every cluster).

Efficiency is ``T(1) / (P · T(P))``. On a machine with fewer cores than workers the workers
share cores (the report says how many there are), so efficiency above ``cores / P`` is out of
reach there.

The cost model of docs/scaling.md (:class:`CostModel`) is fitted on the 1- and 2-worker
measurements (latency of a round trip, cost per worker contacted, compute per row) and predicts
the rest; the target is that it predicts every measured pass and 8,192-row step within ±50 %.
The section also extrapolates it to 100 and 1,000 workers under stated network assumptions.

Run ``python -m benchmarks.bench_scaling [--quick]`` from the repository root.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dsoftmax.sampling import EpochSampler

from .bench_pass import random_params
from .common import (
    Section,
    Timing,
    Verdict,
    bench_main,
    connect,
    markdown_table,
    measure,
    start_cluster,
    teacher_dataset,
    usable_cpus,
)

__all__ = [
    "DATACENTER",
    "FULL",
    "NAME",
    "QUICK",
    "THRESHOLD_MODEL_ERROR",
    "CostModel",
    "Measurement",
    "ScalingConfig",
    "efficiency",
    "fit_cost_model",
    "reduce_depth",
    "run",
]

NAME = "scaling"
#: Target 7: the cost model's largest relative error on the measured passes and steps, at most.
THRESHOLD_MODEL_ERROR = 0.5
#: Partial results added per reduce level (dsoftmax.engine.REDUCE_FAN_IN).
FAN_IN = 4


def reduce_depth(n_parts: int, fan_in: int = FAN_IN) -> int:
    """Levels of a reduce tree of fan-in ``fan_in`` over ``n_parts`` partial results.

    Examples
    --------
    >>> [reduce_depth(n) for n in (1, 4, 5, 16, 17, 1000)]
    [0, 1, 2, 2, 3, 5]
    """
    depth, remaining = 0, n_parts
    while remaining > 1:
        remaining = -(-remaining // fan_in)
        depth += 1
    return depth


class Measurement(NamedTuple):
    """Median seconds of one kind of evaluation over ``n_rows`` rows on ``n_workers`` workers
    (a minibatch selects its rows out of the blocks; a pass takes the blocks whole)."""

    n_workers: int
    n_rows: int
    minibatch: bool
    seconds: float


@dataclass(frozen=True)
class CostModel:
    r"""Seconds of one synchronous evaluation (a pass or a step) on ``P`` workers.

    .. math::

        T = a + m(P) \left(b + \frac{S}{B}\right)
            + \frac{n_{rows}\,(c + s\,[\text{minibatch}])}{\min(P, \text{cores})}
            + \lceil\log_4 n_{blocks}\rceil \left(h + \frac{S}{B}\right)

    ``S`` bytes (the parameters, ``K·(d+1)·8``) go to each worker, and one sum of ``S`` bytes
    goes up each level of a reduce tree of fan-in 4 over the blocks. ``m(P)`` is the number of
    messages the client sends: ``P`` when it contacts every worker itself (``fan_out`` None),
    ``f·⌈log_f P⌉`` when the parameters travel down a tree of fan-out ``f``.

    Attributes
    ----------
    latency : float
        ``a``, seconds of one round trip client → workers → client, whatever ``P``.
    per_worker : float
        ``b``, seconds the client spends per worker it contacts.
    row_seconds : float
        ``c``, compute seconds per row on one core, for the model's ``K`` and ``d``.
    select_seconds : float
        ``s``, extra seconds per row of a minibatch on one core: picking the rows out of their
        blocks (a copy), and the fixed cost of each block touched, spread over its rows.
    bandwidth : float
        ``B``, bytes/s of one network link (``inf``: local, copies in memory).
    hop_latency : float
        ``h``, seconds per level of the reduce tree (a network hop).
    cores : int or None
        Cores the workers share; None: each worker has its own.
    fan_out : int or None
        See ``m(P)`` above.
    """

    latency: float
    per_worker: float
    row_seconds: float
    select_seconds: float = 0.0
    bandwidth: float = math.inf
    hop_latency: float = 0.0
    cores: int | None = None
    fan_out: int | None = None

    def messages(self, n_workers: int) -> int:
        """``m(P)``: messages the client sends per evaluation."""
        if self.fan_out is None or n_workers <= 1:
            return n_workers
        return min(n_workers, self.fan_out) * reduce_depth(n_workers, self.fan_out)

    def seconds(
        self,
        n_workers: int,
        n_rows: int,
        n_blocks: int,
        param_bytes: int,
        minibatch: bool = False,
    ) -> float:
        """Predicted seconds of one evaluation over ``n_rows`` rows held in ``n_blocks``
        blocks, with parameters of ``param_bytes`` bytes."""
        parallel = n_workers if self.cores is None else min(n_workers, self.cores)
        per_row = self.row_seconds + (self.select_seconds if minibatch else 0.0)
        transfer = param_bytes / self.bandwidth
        return (
            self.latency
            + self.messages(n_workers) * (self.per_worker + transfer)
            + n_rows * per_row / parallel
            + reduce_depth(n_blocks) * (self.hop_latency + transfer)
        )


def fit_cost_model(measurements: Sequence[Measurement], cores: int) -> CostModel:
    """Fit ``a``, ``b``, ``c`` and ``s`` of :class:`CostModel` to local measurements.

    Non-negative least squares on relative errors (each measurement weighs ``1 / seconds``), so
    that 10 ms steps count as much as 1 s passes. Local transfers and reduce levels cost a
    memory copy: they are left in ``a``.

    Parameters
    ----------
    measurements : sequence of Measurement
        At least four: passes and minibatches, over at least two numbers of workers and two
        numbers of rows.
    cores : int
        Cores the workers share.

    Returns
    -------
    CostModel

    Examples
    --------
    >>> truth = CostModel(0.003, per_worker=0.001, row_seconds=1e-6, select_seconds=2e-6, cores=2)
    >>> points = [Measurement(p, n, mb, truth.seconds(p, n, 1, 0, mb)) for p in (1, 2, 4)
    ...           for n, mb in ((10, True), (10_000, True), (100_000, False))]
    >>> fitted = fit_cost_model(points, cores=2)
    >>> fitted.latency, fitted.per_worker, fitted.row_seconds, fitted.select_seconds
    (0.003, 0.001, 1e-06, 2e-06)
    """
    import scipy.optimize

    design = np.array(
        [
            [1.0, m.n_workers, rows, rows if m.minibatch else 0.0]
            for m in measurements
            for rows in [m.n_rows / min(m.n_workers, cores)]
        ]
    )
    seconds = np.array([m.seconds for m in measurements])
    weighted = design / seconds[:, None]
    coefficients, _ = scipy.optimize.nnls(weighted, np.ones(len(measurements)))
    # Rounded to a picosecond: the fit's float noise would otherwise show in every digit.
    latency, per_worker, row_seconds, select_seconds = (
        round(float(value), 12) for value in coefficients
    )
    return CostModel(latency, per_worker, row_seconds, select_seconds, cores=cores)


def efficiency(times: dict[int, float]) -> dict[int, float]:
    """``T(1) / (P · T(P))`` for every ``P`` of ``times`` (seconds by number of workers).

    Examples
    --------
    >>> efficiency({1: 1.0, 2: 0.5, 4: 0.5})
    {1: 1.0, 2: 1.0, 4: 0.5}
    """
    return {workers: times[1] / (workers * seconds) for workers, seconds in times.items()}


@dataclass(frozen=True)
class ScalingConfig:
    """Sizes of the scaling benchmark."""

    worker_counts: tuple[int, ...] = (1, 2, 3, 4)
    n_samples: int = 1_000_000
    n_features: int = 128
    n_classes: int = 10
    chunk_rows: int = 62_500
    pass_repeat: int = 3
    batch_size: int = 8192
    tiny_batch_size: int = 64
    n_steps: int = 20


FULL = ScalingConfig()
QUICK = ScalingConfig(
    worker_counts=(1, 2), n_samples=50_000, n_features=32, chunk_rows=6_250, pass_repeat=2,
    batch_size=2048, n_steps=5,
)  # fmt: skip

#: Assumptions of the extrapolation: a datacenter network.
DATACENTER = {
    "network round trip (added to a, and per reduce level)": "0.2 ms",
    "link bandwidth": "10 Gb/s (1.25 GB/s)",
    "cores": "one per worker",
    "wide-model compute": "4·K·d flops per row at 40 GFLOP/s per core (float32 GEMM; ~45 "
    "measured on one core of this machine for 4,096-row blocks)",
}
#: Flops per second of one core in the wide model's GEMMs (the assumption above).
WIDE_FLOPS_PER_SECOND = 40e9


def _batches(config: ScalingConfig, batch_size: int, chunk_rows: tuple[int, ...]) -> list:
    sampler = EpochSampler(config.n_samples, batch_size, seed=0)
    return list(sampler.batches(0, chunk_rows))[: config.n_steps + 1]


def _measure_cluster(n_workers: int, config: ScalingConfig, workdir: Path) -> dict[str, Timing]:

    from dsoftmax.engine import DaskEngine

    params = random_params(config.n_classes, config.n_features)
    with start_cluster(n_workers) as cluster, connect(cluster) as client:
        dataset, _ = teacher_dataset(
            workdir, config.n_samples, config.n_features, config.n_classes, config.chunk_rows,
            client,
        )  # fmt: skip
        steps = _batches(config, config.batch_size, dataset.chunk_rows)
        tiny = _batches(config, config.tiny_batch_size, dataset.chunk_rows)
        with DaskEngine(client, dataset.X, dataset.y) as engine:
            engine.sums(params)  # waits for the blocks; warms up
            engine.sums(params, steps[-1])
            engine.sums(params, tiny[-1])
            timings = {"pass": measure(lambda: engine.sums(params), config.pass_repeat)}
            for name, batches in (("step", steps), ("tiny", tiny)):
                samples = []
                for batch in batches[: config.n_steps]:
                    started = time.perf_counter()
                    engine.sums(params, batch)
                    samples.append(time.perf_counter() - started)
                timings[name] = Timing(tuple(samples))
    return timings


def run(config: ScalingConfig, workdir: Path) -> Section:
    """Run the benchmark.

    Parameters
    ----------
    config : ScalingConfig
    workdir : Path
        A directory for the dataset (shared with the other benchmarks of a run).
    """
    measured = {
        workers: _measure_cluster(workers, config, workdir) for workers in config.worker_counts
    }
    return _section(config, measured)


#: The three kinds of evaluation timed on each cluster: (key, label of the rows, minibatch).
KINDS = (("pass", "pass", False), ("step", "step", True), ("tiny", "tiny step", True))


def _rows_of(config: ScalingConfig, kind: str) -> int:
    rows = {"pass": config.n_samples, "step": config.batch_size, "tiny": config.tiny_batch_size}
    return rows[kind]


def _section(config: ScalingConfig, measured: dict[int, dict[str, Timing]]) -> Section:
    cores = usable_cpus()
    n_blocks = -(-config.n_samples // config.chunk_rows)
    param_bytes = config.n_classes * (config.n_features + 1) * 8
    points = [
        Measurement(p, _rows_of(config, kind), minibatch, timings[kind].median)
        for p, timings in measured.items()
        for kind, _, minibatch in KINDS
    ]
    model = fit_cost_model(points, cores)
    predicted = {
        (m.n_workers, m.n_rows, m.minibatch): model.seconds(
            m.n_workers, m.n_rows, n_blocks, param_bytes, m.minibatch
        )
        for m in points
    }
    errors = [abs(predicted[m.n_workers, m.n_rows, m.minibatch] / m.seconds - 1) for m in points]
    worst_error = max(errors)
    efficiencies = {
        kind: efficiency({p: timings[kind].median for p, timings in measured.items()})
        for kind, _, _ in KINDS
    }
    rows = []
    for p, timings in measured.items():
        row: list[object] = [p]
        for kind, _, minibatch in KINDS:
            model_seconds = predicted[(p, _rows_of(config, kind), minibatch)]
            row += [*timings[kind].cells(1e3, 1), f"{efficiencies[kind][p]:.2f}",
                    f"{1e3 * model_seconds:.1f}"]  # fmt: skip
        rows.append(row)
    header: list[str] = ["workers"]
    for kind, label, _ in KINDS:
        header += [f"{label} {_rows_of(config, kind):,} rows, ms", "min", "max", "eff.", "model"]
    oversubscribed = [p for p in measured if p > cores]
    body = "\n".join(
        [
            f"{config.n_samples:,} × {config.n_features} float32, {config.n_classes} classes, "
            f"{n_blocks} blocks of {config.chunk_rows:,} rows held in worker memory; one fresh "
            f"local cluster per row (1 thread per worker). Medians of {config.pass_repeat} "
            f"passes and {config.n_steps} steps of each size (seeded batches, the same for "
            f"every cluster). This machine has {cores} usable cores"
            + (f": with {', '.join(map(str, oversubscribed))} workers they share cores "
               f"(oversubscribed), so efficiency cannot exceed {cores}/P there."
               if oversubscribed else ".")
            + " Efficiency (eff.) is T(1) / (P·T(P)); model is the fitted cost model below.",
            "",
            markdown_table(header, rows),
            "",
            f"Cost model (docs/scaling.md), fitted to these {len(points)} medians: "
            f"a = {1e3 * model.latency:.2f} ms per round trip, "
            f"b = {1e3 * model.per_worker:.2f} ms per worker contacted, "
            f"c = {1e9 * model.row_seconds:.0f} ns per row and s = "
            f"{1e9 * model.select_seconds:.0f} ns more per minibatch row ({config.n_classes} "
            f"classes × {config.n_features} features, one core), min(P, {cores}) cores. Largest "
            f"relative error: {100 * worst_error:.0f} %.",
            "",
            _extrapolation(config, model, n_blocks),
        ]
    )  # fmt: skip
    return Section(
        name=NAME,
        title="7. Scaling: 1 to 4 workers, and a cost model",
        body=body,
        verdicts=[
            Verdict("7 scaling model", "largest |model ÷ measured − 1| over passes and steps",
                    worst_error, THRESHOLD_MODEL_ERROR, unit="")
        ],
        series={
            "pass efficiency": sorted(efficiencies["pass"].items()),
            f"{config.batch_size}-row step efficiency": sorted(efficiencies["step"].items()),
        },
    )  # fmt: skip


def _extrapolation(config: ScalingConfig, local: CostModel, n_blocks: int) -> str:
    """Markdown: the model on a datacenter network, for 1 to 1,000 workers."""
    network = replace(
        local, latency=local.latency + 2e-4, hop_latency=2e-4, bandwidth=1.25e9, cores=None
    )
    reference_bytes = config.n_classes * (config.n_features + 1) * 8
    wide_bytes = 1000 * 1025 * 8
    # With K·d this large the two GEMMs (logits, gradient) are the whole cost of a row.
    wide = replace(network, row_seconds=4 * 1000 * 1024 / WIDE_FLOPS_PER_SECOND, select_seconds=0)
    scenarios = [
        (f"pass, {config.n_samples:,} rows", network, config.n_samples, n_blocks,
         reference_bytes, False),
        ("pass, 1,000,000,000 rows", network, 1_000_000_000, 16_000, reference_bytes, False),
        (f"step, {config.batch_size:,} rows", network, config.batch_size, n_blocks,
         reference_bytes, True),
        ("wide step (1,000 × 1,024), 256 rows", wide, 256, 64, wide_bytes, True),
        ("wide pass (1,000 × 1,024), 10,000,000 rows", wide, 10_000_000, 2_000, wide_bytes,
         False),
    ]  # fmt: skip
    counts = (1, 2, 4, 100, 1000)
    rows = []
    for name, model, n_rows, blocks, param_bytes, minibatch in scenarios:
        for how, variant in (("", model), (", tree fan-out 4", replace(model, fan_out=FAN_IN))):
            times = {
                p: variant.seconds(p, n_rows, max(blocks, p), param_bytes, minibatch)
                for p in counts
            }
            rows.append(
                [name + how]
                + [f"{_seconds_text(times[p])} ({times[1] / (p * times[p]):.2f})" for p in counts]
            )
    assumptions = "; ".join(f"{name}: {value}" for name, value in DATACENTER.items())
    table = markdown_table(["model: seconds (efficiency)", *(f"P = {p:,}" for p in counts)], rows)
    return "\n".join(
        [
            f"Extrapolation of the fitted a, b, c, s to a datacenter network ({assumptions}). "
            "Each scenario twice: the client contacting every worker (as now), and the "
            "parameters sent down (and sums brought up) a tree of fan-out 4 between workers. "
            "Blocks: 62,500 rows for the 1B-row pass, 5,000 for the 10M-row wide pass.",
            "",
            table,
        ]
    )


def _seconds_text(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{1e3 * seconds:.1f} ms"


if __name__ == "__main__":  # worker processes are spawned and import __main__
    bench_main(__doc__, run, FULL, QUICK)
