"""The block kernel (``dsoftmax.kernels``) in one process, against the blocked NumPy pass and the
hardware's floor measured in the same run.

What is timed, each a median over interleaved rounds (every candidate once per round):

* per block, one thread (as a worker runs a block): ``kernels.block_sums`` over every block in
  turn vs :func:`benchmarks.kernel_baselines.blocked_numpy_sums` with one BLAS thread, and the
  floor (a one-thread sweep of X plus the products' flops at the one-thread sgemm rate); for
  K = 10, 2 and 100 on float32, float16 and bfloat16 storage (their baseline runs on the
  float32 copy), and the wide model (1,000 × 1,024) on fewer rows;
* the pass as 2 workers run it: the blocks split between 2 threads, each running the kernel
  over its share, vs the blocked NumPy pass with 2 BLAS threads, and the 2-thread floor;
* minibatch sums: ``kernels.rows_sums`` of 8,192 and of 64 rows spread over 16 blocks vs the
  gather and :func:`dsoftmax.objective.segment_sums` the engine runs today;
* one-time costs in fresh processes: the first call's compile with an empty numba cache, and
  loading the cached kernel.

Targets: the 2-thread pass ≤ 0.5× the blocked NumPy pass and ≤ 3× the floor; the wide pass
≤ 1.2× the blocked NumPy pass.

Run ``python -m benchmarks.bench_kernel [--quick]`` from the repository root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsoftmax import kernels
from dsoftmax.objective import BlockSums, Params, add_sums, segment_sums

from .common import Section, Timing, Verdict, bench_main, markdown_table, measure_interleaved
from .kernel_baselines import (
    blocked_numpy_stages,
    blocked_numpy_sums,
    floor_seconds,
    gemm_flops,
    on_threads,
    sgemm_rate,
    sweep_seconds,
)

__all__ = ["FULL", "NAME", "QUICK", "KernelConfig", "first_call_seconds", "run"]

NAME = "kernel"
#: The 2-thread pass ÷ the blocked NumPy pass, at most.
PASS_THRESHOLD = 0.5
#: The 2-thread pass ÷ the floor, at most.
FLOOR_THRESHOLD = 3.0
#: The wide model's pass ÷ the blocked NumPy pass, at most.
WIDE_THRESHOLD = 1.2


@dataclass(frozen=True)
class KernelConfig:
    """Sizes of the kernel benchmark."""

    n_blocks: int = 16
    block_rows: int = 62_500
    n_features: int = 128
    class_counts: tuple[int, ...] = (10, 2, 100)
    wide_classes: int = 1_000
    wide_features: int = 1_024
    wide_blocks: int = 2
    wide_block_rows: int = 4_096
    batch_sizes: tuple[int, ...] = (8_192, 64)
    repeat: int = 7


FULL = KernelConfig()
QUICK = KernelConfig(
    n_blocks=4, block_rows=6_250, wide_classes=200, wide_features=512, wide_block_rows=512,
    repeat=3,
)  # fmt: skip


def _params(n_classes: int, n_features: int, seed: int = 0) -> Params:
    rng = np.random.default_rng(seed)
    return Params(
        0.1 * rng.standard_normal((n_classes, n_features)), 0.1 * rng.standard_normal(n_classes)
    )


def _blocks(n_blocks: int, block_rows: int, n_features: int, n_classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = [rng.standard_normal((block_rows, n_features), dtype=np.float32) for _ in range(n_blocks)]
    y = [rng.integers(0, n_classes, block_rows) for _ in range(n_blocks)]
    return X, y


def _one_blas_thread(run: Callable[[], object]) -> Callable[[int], object]:
    return _blas_threads(run, 1)


def _interleaved_on_one_thread(
    candidates: dict[str, Callable[[], object]], repeat: int, warmup: int = 1
) -> dict[str, Timing]:
    """measure_interleaved with one BLAS thread throughout (setting the limit costs ~0.5 ms,
    too much to pay per call of a minibatch)."""
    from threadpoolctl import threadpool_limits

    calls = {name: (lambda _, run=run: run()) for name, run in candidates.items()}
    with threadpool_limits(limits=1, user_api="blas"):
        return measure_interleaved(calls, repeat, warmup=warmup)


def _blas_threads(run: Callable[[], object], n_threads: int) -> Callable[[int], object]:
    from threadpoolctl import threadpool_limits

    def call(_: int) -> object:
        with threadpool_limits(limits=n_threads, user_api="blas"):
            return run()

    return call


def _sequential(evaluate: Callable[[int], BlockSums], n_blocks: int) -> BlockSums:
    total = evaluate(0)
    for index in range(1, n_blocks):
        total = add_sums(total, evaluate(index))
    return total


def _agreement(left: BlockSums, right: BlockSums) -> float:
    scale = float(np.max(np.abs(right.grad_coef_sum)))
    return max(
        abs(left.loss_sum - right.loss_sum) / abs(right.loss_sum),
        float(np.max(np.abs(left.grad_coef_sum - right.grad_coef_sum))) / scale,
    )


@dataclass(frozen=True)
class _Case:
    name: str
    kernel: Timing
    numpy: Timing
    floor: float
    n_blocks: int
    difference: float


def _per_block_case(name, X, y, params, storage, repeat, sweep, rate_one) -> _Case:
    """Kernel vs blocked NumPy over every block in turn, one thread."""
    stored = X if storage == np.float32 else [block.astype(storage) for block in X]
    prepared = kernels.prepare(params, storage)
    n_blocks = len(X)

    def kernel() -> BlockSums:
        return _sequential(lambda i: kernels.block_sums(prepared, stored[i], y[i]), n_blocks)

    def numpy() -> BlockSums:
        return _sequential(lambda i: blocked_numpy_sums(params, X[i], y[i]), n_blocks)

    timings = _interleaved_on_one_thread({"kernel": kernel, "numpy": numpy}, repeat)
    n_rows = sum(len(block) for block in X)
    floor = floor_seconds(sweep, gemm_flops(n_rows, X[0].shape[1], params.coef.shape[0]), rate_one)
    return _Case(
        name, timings["kernel"], timings["numpy"], floor, n_blocks, _agreement(kernel(), numpy())
    )


def _pass_timings(X, y, params, repeat) -> dict[str, Timing]:
    prepared = kernels.prepare(params, np.float32)
    n_blocks = len(X)
    return measure_interleaved(
        {
            "kernel": _one_blas_thread(
                lambda: on_threads(lambda i: kernels.block_sums(prepared, X[i], y[i]), n_blocks, 2)
            ),
            "numpy": _blas_threads(
                lambda: _sequential(lambda i: blocked_numpy_sums(params, X[i], y[i]), n_blocks),
                2,
            ),
        },
        repeat,
    )


def _minibatch_timings(X, y, params, batch_size, repeat, seed=0) -> dict[str, Timing]:
    """rows_sums per block vs gathering the rows and segment_sums over them."""
    rng = np.random.default_rng(seed)
    n_blocks, block_rows = len(X), len(X[0])
    per_block = max(1, batch_size // n_blocks)
    selections = [
        np.sort(rng.choice(block_rows, per_block, replace=False)) for _ in range(n_blocks)
    ]
    prepared = kernels.prepare(params, np.float32)

    def kernel() -> BlockSums:
        return _sequential(
            lambda i: kernels.rows_sums(prepared, X[i], y[i][selections[i]], None, selections[i]),
            n_blocks,
        )

    def numpy() -> BlockSums:
        gathered = np.concatenate([X[i][rows] for i, rows in enumerate(selections)])
        labels = np.concatenate([y[i][rows] for i, rows in enumerate(selections)])
        bounds = np.arange(n_blocks + 1) * per_block
        parts = segment_sums(params, gathered, labels, bounds)
        total = parts[0]
        for part in parts[1:]:
            total = add_sums(total, part)
        return total

    return _interleaved_on_one_thread({"kernel": kernel, "numpy": numpy}, repeat * 5, warmup=3)


def _numpy_stages(X, y, params, repeat) -> dict[str, float]:
    """Median seconds per stage of the blocked NumPy pass over one block, one BLAS thread."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        runs = [blocked_numpy_stages(params, X, y) for _ in range(repeat)]
    return {stage: float(np.median([run[stage] for run in runs])) for stage in runs[0]}


_FIRST_CALL = """
import json, time
started = time.perf_counter()
import numpy as np
from dsoftmax import kernels
from dsoftmax.objective import Params
imported = time.perf_counter()
params = Params(np.ones((10, 128)), np.zeros(10))
X = np.ones((1000, 128), dtype=np.float32)
kernels.block_sums(kernels.prepare(params, X.dtype), X, np.zeros(1000, dtype=int))
print(json.dumps({"import": imported - started, "first_call": time.perf_counter() - imported}))
"""


def first_call_seconds(cache_dir: Path) -> dict[str, float]:
    """Import and first float32 ``block_sums`` call, in a fresh process using ``cache_dir`` as
    numba's cache: with an empty directory the call compiles, after one run it loads."""
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    result = subprocess.run(
        [sys.executable, "-c", _FIRST_CALL], env=environment, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def _case_row(case: _Case) -> list[str]:
    per_block = 1e3 / case.n_blocks
    return [
        case.name,
        f"{case.kernel.median * per_block:.2f}",
        f"{case.kernel.min * per_block:.2f}",
        f"{case.numpy.median * per_block:.2f}",
        f"{case.floor * per_block:.2f}",
        f"{case.kernel.median / case.numpy.median:.2f}",
        f"{case.kernel.min / case.numpy.min:.2f}",
        f"{case.kernel.median / case.floor:.2f}",
        f"{case.difference:.0e}",
    ]


def run(config: KernelConfig, workdir: Path) -> Section:
    """Run the benchmark (``workdir`` holds the numba caches of the first-call measurement)."""
    import ml_dtypes

    first_class = config.class_counts[0]
    X, y = _blocks(config.n_blocks, config.block_rows, config.n_features, first_class)
    rate_one, rate_two = sgemm_rate(1), sgemm_rate(2)
    sweep_one, sweep_two = sweep_seconds(X, 1), sweep_seconds(X, 2)

    cases = []
    for n_classes in config.class_counts:
        labels = [np.minimum(block, n_classes - 1) for block in y]
        params = _params(n_classes, config.n_features)
        cases.append(
            _per_block_case(f"K = {n_classes}, float32", X, labels, params, np.float32,
                            config.repeat, sweep_one, rate_one)
        )  # fmt: skip
    params = _params(first_class, config.n_features)
    for storage in (np.float16, ml_dtypes.bfloat16):
        cases.append(
            _per_block_case(f"K = {first_class}, {np.dtype(storage)} storage", X, y, params,
                            storage, config.repeat, sweep_one / 2, rate_one)
        )  # fmt: skip
    wide_X, wide_y = _blocks(
        config.wide_blocks, config.wide_block_rows, config.wide_features, config.wide_classes
    )
    wide_params = _params(config.wide_classes, config.wide_features)
    wide_case = _per_block_case(
        f"wide {config.wide_classes:,} × {config.wide_features:,}, float32", wide_X, wide_y,
        wide_params, np.float32, config.repeat, sweep_seconds(wide_X, 1), rate_one,
    )  # fmt: skip
    cases.append(wide_case)

    passes = _pass_timings(X, y, params, config.repeat)
    wide_passes = _pass_timings(wide_X, wide_y, wide_params, config.repeat)
    n_rows = config.n_blocks * config.block_rows
    floor_two = floor_seconds(
        sweep_two, gemm_flops(n_rows, config.n_features, first_class), rate_two
    )
    batches = {
        size: _minibatch_timings(X, y, params, size, config.repeat) for size in config.batch_sizes
    }
    stages = _numpy_stages(X[0], y[0], params, config.repeat)
    with tempfile.TemporaryDirectory(dir=workdir) as cache:
        compiled = first_call_seconds(Path(cache))
        loaded = first_call_seconds(Path(cache))

    per_block_table = markdown_table(
        ["one thread, per block", "kernel ms", "kernel min ms", "NumPy ms", "floor ms",
         "÷ NumPy", "÷ NumPy (mins)", "÷ floor", "rel. difference"],
        [_case_row(case) for case in cases],
    )  # fmt: skip
    pass_ratio = passes["kernel"].median / passes["numpy"].median
    floor_ratio = passes["kernel"].median / floor_two
    wide_ratio = wide_passes["kernel"].median / wide_passes["numpy"].median
    pass_table = markdown_table(
        ["pass, 2 threads", "kernel s", "kernel min s", "NumPy s", "NumPy min s", "floor s",
         "÷ NumPy", "÷ floor"],
        [
            [f"{n_rows:,} × {config.n_features}, K = {first_class}", *passes["kernel"].cells()[:2],
             *passes["numpy"].cells()[:2], f"{floor_two:.3f}", f"{pass_ratio:.2f}",
             f"{floor_ratio:.2f}"],
            [f"wide, {config.wide_blocks * config.wide_block_rows:,} rows",
             *wide_passes["kernel"].cells()[:2], *wide_passes["numpy"].cells()[:2], "",
             f"{wide_ratio:.2f}", ""],
        ],
    )  # fmt: skip
    batch_table = markdown_table(
        ["minibatch sums, one thread", "rows_sums ms", "min ms", "gather + segment_sums ms",
         "min ms", "ratio"],
        [
            [f"{size:,} rows over {config.n_blocks} blocks", *timing["kernel"].cells(1e3, 2)[:2],
             *timing["numpy"].cells(1e3, 2)[:2],
             f"{timing['kernel'].median / timing['numpy'].median:.2f}"]
            for size, timing in batches.items()
        ],
    )  # fmt: skip
    total = sum(stages.values())
    stage_table = markdown_table(
        ["blocked NumPy pass, one block, one thread", "ms (median)", "share"],
        [[stage, f"{value * 1e3:.2f}", f"{value / total:.0%}"] for stage, value in stages.items()],
    )
    one_time = markdown_table(
        ["fresh process", "import dsoftmax.kernels s", "first float32 block_sums s"],
        [
            ["empty numba cache (compiles)", f"{compiled['import']:.2f}",
             f"{compiled['first_call']:.2f}"],
            ["cache filled by the run above", f"{loaded['import']:.2f}",
             f"{loaded['first_call']:.2f}"],
        ],
    )  # fmt: skip
    body = "\n".join(
        [
            f"{config.n_blocks} blocks of {config.block_rows:,} × {config.n_features} in this "
            f"process; {config.repeat} interleaved rounds (medians; min as a check). sgemm: "
            f"{rate_one / 1e9:.0f} GFLOP/s on 1 thread, {rate_two / 1e9:.0f} on 2; a sweep of "
            f"X: {sweep_one * 1e3:.1f} ms on 1 thread, {sweep_two * 1e3:.1f} ms on 2. Floor = "
            "sweep + 4·n·d·K flops at the sgemm rate (half storage: half the sweep).",
            "",
            per_block_table,
            "",
            pass_table,
            "",
            batch_table,
            "",
            stage_table,
            "",
            one_time,
        ]
    )
    return Section(
        name=NAME,
        title="Block kernel: dsoftmax.kernels vs blocked NumPy and the floor",
        body=body,
        verdicts=[
            Verdict("kernel pass", "2-thread kernel pass ÷ blocked NumPy pass (medians)",
                    pass_ratio, PASS_THRESHOLD),
            Verdict("kernel pass", "2-thread kernel pass ÷ floor", floor_ratio, FLOOR_THRESHOLD),
            Verdict("kernel wide pass", "wide model pass ÷ blocked NumPy pass (medians)",
                    wide_ratio, WIDE_THRESHOLD),
        ],
    )  # fmt: skip


if __name__ == "__main__":
    bench_main(__doc__, run, FULL, QUICK)
