"""The baselines a block kernel is measured against, in one process: a carefully blocked NumPy
pass, and the hardware's floor (one sweep of X plus the products' flops at the measured sgemm
rate).

The blocked pass is the strong NumPy formulation: weights cast and padded once per pass,
~16k-row tiles, logits laid out class-major (``W·Xᵀ``, so that the softmax reduces along
contiguous memory), the one-hot subtraction by flat indexing, ``T Xᵀ`` through BLAS, float64
accumulators.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from dsoftmax.objective import BlockSums, Params, add_sums

__all__ = [
    "TILE_ROWS",
    "blocked_numpy_stages",
    "blocked_numpy_sums",
    "floor_seconds",
    "gemm_flops",
    "on_threads",
    "sgemm_rate",
    "sweep_seconds",
]

#: Rows per tile of the blocked NumPy pass.
TILE_ROWS = 16384
#: Classes are padded to a multiple of this for the logits' product (OpenBLAS runs
#: (rows × d)·(d × 16) faster than (rows × d)·(d × 10)).
CLASS_MULTIPLE = 16


def _padded_weights(params: Params, dtype: np.dtype) -> np.ndarray:
    n_classes, n_features = params.coef.shape
    padded = np.zeros((-(-n_classes // CLASS_MULTIPLE) * CLASS_MULTIPLE, n_features), dtype)
    padded[:n_classes] = params.coef
    return padded


def _class_major_logits(tile: np.ndarray, padded: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    n_classes = intercept.shape[0]
    logits = np.ascontiguousarray((tile @ padded.T)[:, :n_classes].T)
    logits += intercept
    return logits


def _residual(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss sum, residual (in place of the logits) and its row sums of one tile."""
    n_rows = logits.shape[1]
    logits -= logits.max(axis=0)
    flat_target = labels.astype(np.intp) * n_rows + np.arange(n_rows)
    target_logit = logits.ravel()[flat_target]
    probs = np.exp(logits, out=logits)
    normalizer = probs.sum(axis=0)
    probs /= normalizer
    probs.ravel()[flat_target] -= 1
    loss = float(np.sum(np.log(normalizer) - target_logit, dtype=np.float64))
    return loss, probs, probs.sum(axis=1, dtype=np.float64)


def _prepared(params: Params, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The padded weights and the intercept column, cast once per pass."""
    n_classes = params.coef.shape[0]
    intercept = (
        np.zeros((n_classes, 1), dtype)
        if params.intercept is None
        else np.asarray(params.intercept, dtype)[:, None]
    )
    return _padded_weights(params, dtype), intercept


def blocked_numpy_sums(
    params: Params, X: np.ndarray, y: np.ndarray, tile_rows: int = TILE_ROWS
) -> BlockSums:
    """The sums of one block with class-id labels, tile by tile, in NumPy.

    Parameters
    ----------
    params : Params
    X : ndarray of shape (n_rows, n_features), float32 or float64
    y : ndarray of shape (n_rows,), int class ids
    tile_rows : int

    Returns
    -------
    BlockSums
        float64 sums, as :func:`dsoftmax.objective.block_sums`.
    """
    n_classes, n_features = params.coef.shape
    padded, intercept = _prepared(params, X.dtype)
    total = BlockSums(0.0, np.zeros((n_classes, n_features)), np.zeros(n_classes), 0.0)
    for start in range(0, X.shape[0], tile_rows):
        tile = X[start : start + tile_rows]
        loss, residual, residual_sum = _residual(
            _class_major_logits(tile, padded, intercept), y[start : start + tile_rows]
        )
        part = BlockSums(loss, (residual @ tile).astype(np.float64), residual_sum, len(tile))
        total = add_sums(total, part)
    return total


def blocked_numpy_stages(
    params: Params, X: np.ndarray, y: np.ndarray, tile_rows: int = TILE_ROWS
) -> dict[str, float]:
    """Seconds :func:`blocked_numpy_sums` spends in each of its stages over one block: the
    logits' product, the softmax and residual (elementwise NumPy), and the gradient's product."""
    padded, intercept = _prepared(params, X.dtype)
    seconds = dict.fromkeys(("logits product", "softmax and residual", "gradient product"), 0.0)
    for start in range(0, X.shape[0], tile_rows):
        tile = X[start : start + tile_rows]
        started = time.perf_counter()
        logits = _class_major_logits(tile, padded, intercept)
        product_done = time.perf_counter()
        _, residual, _ = _residual(logits, y[start : start + tile_rows])
        softmax_done = time.perf_counter()
        (residual @ tile).astype(np.float64)
        seconds["logits product"] += product_done - started
        seconds["softmax and residual"] += softmax_done - product_done
        seconds["gradient product"] += time.perf_counter() - softmax_done
    return seconds


def on_threads(evaluate: Callable[[int], BlockSums], n_blocks: int, n_threads: int) -> BlockSums:
    """Evaluate blocks ``0 … n_blocks-1`` on ``n_threads`` threads, each taking a contiguous
    share as a worker holds its blocks, and add the results in block order."""
    shares = np.array_split(np.arange(n_blocks), n_threads)

    def run_share(share: Sequence[int]) -> list[BlockSums]:
        return [evaluate(int(index)) for index in share]

    with ThreadPoolExecutor(n_threads) as pool:
        parts = [part for share in pool.map(run_share, shares) for part in share]
    total = parts[0]
    for part in parts[1:]:
        total = add_sums(total, part)
    return total


def sweep_seconds(blocks: Sequence[np.ndarray], n_threads: int = 1, repeat: int = 5) -> float:
    """Median seconds to read every block once (a sum over it), on ``n_threads`` threads."""

    def sweep() -> None:
        with ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(lambda block: block.sum(), blocks))

    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        sweep()
        samples.append(time.perf_counter() - started)
    return float(np.median(samples))


def gemm_flops(n_rows: int, n_features: int, n_classes: int) -> float:
    """Flops of the two products of a pass: ``X Wᵀ`` and ``Tᵀ X``, 2·n·d·K each."""
    return 4.0 * n_rows * n_features * n_classes


def sgemm_rate(n_threads: int, size: int = 1536, repeat: int = 5) -> float:
    """Measured flops per second of a square float32 matrix product on ``n_threads`` BLAS
    threads (the best of ``repeat``)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    A = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(A)
    best = np.inf
    with threadpool_limits(limits=n_threads, user_api="blas"):
        np.matmul(A, A, out=out)
        for _ in range(repeat):
            started = time.perf_counter()
            np.matmul(A, A, out=out)
            best = min(best, time.perf_counter() - started)
    return 2.0 * size**3 / best


def floor_seconds(sweep: float, flops: float, rate: float) -> float:
    """The hardware's floor of a pass: one sweep of X plus its products at the sgemm rate."""
    return sweep + flops / rate
