"""The BLAS path of the block kernel, for wide models: both products through BLAS on tiles of
rows, the softmax and residual compiled in between.

For many classes BLAS's own blocking of ``X_tile Wᵀ`` and ``Tᵀ X_tile`` beats a hand-written
loop, and the row-wise softmax reduces over contiguous rows of ``n_classes`` logits. The
weights are prepared once (:func:`dsoftmax.kernels.prepare`), not per tile; a tile of
half-precision storage is widened to float32 on its own. The tile's logits, its widened rows
and its gradient product live in this thread's work arrays
(:func:`dsoftmax.objective.work_array`), not in fresh memory for every block. Single-row
tiles go through the same code as the others.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..objective import work_array
from .compile import jit
from .fused import exp_in_place

if TYPE_CHECKING:
    from .dense import Prepared, _Rows

__all__ = ["TILE_BYTES", "block_metrics", "block_sums"]

#: Logits per tile (rows × classes × itemsize) at most: the tile's logits and rows stay in the
#: last-level cache between the two products.
TILE_BYTES = 4 * 1024 * 1024


def _tile_rows(prepared: Prepared) -> int:
    itemsize = prepared.coef.dtype.itemsize
    return max(1, TILE_BYTES // (itemsize * max(prepared.coef.shape)))


def _tiles(prepared: Prepared, X: np.ndarray):
    """``(start, rows of the tile in the compute dtype)`` over X; half-precision rows are
    widened into a work array."""
    step = _tile_rows(prepared)
    compute = prepared.coef.dtype
    for start in range(0, X.shape[0], step):
        rows = X[start : start + step]
        if rows.dtype != compute:
            widened = work_array("wide_tile", rows.shape, compute)
            np.copyto(widened, rows)
            rows = widened
        yield start, rows


def _exp_scratch(logits: np.ndarray) -> np.ndarray:
    return np.empty(logits.shape[1], dtype=np.int32)


def _logits(prepared: Prepared, tile: np.ndarray) -> np.ndarray:
    """The tile's logits, in a work array (valid until the next tile)."""
    shape = (tile.shape[0], prepared.coef.shape[0])
    logits = np.matmul(tile, prepared.coef.T, out=work_array("wide_logits", shape, tile.dtype))
    logits += prepared.intercept
    return logits


def block_sums(
    prepared: Prepared,
    X: np.ndarray,
    data: _Rows,
    grad_coef: np.ndarray,
    grad_intercept: np.ndarray,
) -> float:
    """The block's loss sum; its gradient sums are added into the float64 arrays given."""
    loss = 0.0
    for start, tile in _tiles(prepared, X):
        residual = _logits(prepared, tile)
        loss += _residual_rows(residual, start, *data, _exp_scratch(residual))
        product = work_array("wide_gradient", grad_coef.shape, tile.dtype)
        grad_coef += np.matmul(residual.T, tile, out=product)
        grad_intercept += residual.sum(axis=0, dtype=np.float64)
    return loss


def block_metrics(prepared: Prepared, X: np.ndarray, data: _Rows) -> tuple[float, float]:
    """``(loss sum, correct sum)`` of the block, weighted."""
    loss = correct = 0.0
    for start, tile in _tiles(prepared, X):
        logits = _logits(prepared, tile)
        tile_loss, tile_correct = _metrics_rows(logits, start, *data, _exp_scratch(logits))
        loss += tile_loss
        correct += tile_correct
    return loss, correct


@jit
def _shifted_row_terms(row, ids, targets, use_targets, i, scratch):
    """Shift ``row`` by its max and exponentiate it in place; return
    ``(first argmax, Σ_k Y_k φ_k of the shifted logits, s = Σ_k Y_k, Z = Σ_k exp φ_k)``."""
    n_classes = row.shape[0]
    best = 0
    for k in range(1, n_classes):
        if row[k] > row[best]:
            best = k
    top = row[best]
    for k in range(n_classes):
        row[k] = row[k] - top
    if use_targets:
        target_logit = 0.0
        target_sum = 0.0
        for k in range(n_classes):
            target_logit += float(targets[i, k] * row[k])
            target_sum += float(targets[i, k])
    else:
        target_logit = float(row[ids[i]])
        target_sum = 1.0
    exp_in_place(row, n_classes, scratch)
    normalizer = row[0] - row[0]
    for k in range(n_classes):
        normalizer += row[k]
    return best, target_logit, target_sum, normalizer


@jit
def _residual_rows(logits, start, ids, targets, use_targets, weights, weighted, scratch):
    """Row-major logits (rows × classes) become the residual ``w·(s·P − Y)`` in place;
    returns the tile's weighted loss sum (float64)."""
    loss = 0.0
    for r in range(logits.shape[0]):
        row = logits[r]
        i = start + r
        _, target_logit, target_sum, normalizer = _shifted_row_terms(
            row, ids, targets, use_targets, i, scratch
        )
        w = weights[i] if weighted else 1.0
        loss += w * (target_sum * math.log(float(normalizer)) - target_logit)
        scale = row.dtype.type(w * target_sum) / normalizer
        for k in range(row.shape[0]):
            row[k] *= scale
        if use_targets:
            for k in range(row.shape[0]):
                row[k] -= targets[i, k] * row.dtype.type(w)
        else:
            row[ids[i]] -= row.dtype.type(w)
    return loss


@jit
def _metrics_rows(logits, start, ids, targets, use_targets, weights, weighted, scratch):
    """``(weighted loss sum, weighted correct sum)`` of row-major logits (overwritten)."""
    loss = 0.0
    correct = 0.0
    for r in range(logits.shape[0]):
        i = start + r
        w = weights[i] if weighted else 1.0
        best, target_logit, target_sum, normalizer = _shifted_row_terms(
            logits[r], ids, targets, use_targets, i, scratch
        )
        loss += w * (target_sum * math.log(float(normalizer)) - target_logit)
        target = ids[i]
        if use_targets:
            target = 0
            for k in range(1, targets.shape[1]):
                if targets[i, k] > targets[i, target]:
                    target = k
        if best == target:
            correct += w
    return loss, correct
