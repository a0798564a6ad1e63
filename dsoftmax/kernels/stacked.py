r"""The stacked block kernel: the sums of many models over one block, in one pass over its rows.

A regularization grid trains ``m`` models of the same shape at once, each on its own rows of the
same blocks (the training rows of its cross-validation split, or every row). Their weights are
stacked into one ``(m·K) × d`` matrix; per tile of rows the kernel computes

1. the logits of every stacked model in one product ``Φ = X_tile Wᵀ + b`` (BLAS), of shape
   (tile rows, m·K), each model's K logits contiguous in a row;
2. per model, the stable softmax, its weighted loss and the residual ``T_j = w_j·(s·P_j − Y)``
   (compiled), where ``w_j`` is the row's weight when the row belongs to model ``j``'s rows and
   0 otherwise: rows a model does not train on add nothing to its sums;
3. every model's gradient at once, ``Gᵀ += Tᵀ X_tile`` (BLAS): row block ``j`` of the product is
   model ``j``'s ``T_jᵀ X_tile``.

Models are grouped so that a group's logits have at most :data:`STACK_COLUMNS` columns: a small
model (10 classes) shares its products with a hundred others, a wide one (1,000 classes) has
products of its own, wide enough for BLAS, and the tile of logits stays in cache either way.

Which rows a model takes is given per row by a *fold code* (an index into a table of roles,
``roles[code, split]`` ∈ {:data:`ROLE_UNUSED`, :data:`ROLE_TRAIN`, :data:`ROLE_HELD_OUT`}) and
per model by the split it belongs to (``splits[j]``; -1 for every row). :func:`stack_sums`
sums each model over its training rows, :func:`stack_metrics` scores each over its held-out rows.

Precision and order are those of :mod:`dsoftmax.kernels.wide`: products and the softmax in the
compute dtype (float32 for float32, float16 and bfloat16 storage; float64 for float64), every sum
added up in float64, rows in order on the calling thread, so one call gives the same bits every
time. A model's sums depend on the other models of its group only through the BLAS product,
whose rounding may depend on the product's width: the callers keep the composition of a stack
deterministic (every model still running, in a fixed order), which is what makes the results
reproducible. Pure NumPy and numba: no Dask, no I/O.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..objective import work_array
from .compile import jit
from .dense import _checked_block, _checked_rows, _row_data, _Rows, compute_dtype
from .fused import _exp_tile, _first_argmax, _residual_tile, _shift_tile, _target_terms

__all__ = [
    "EVERY_ROW",
    "ROLE_HELD_OUT",
    "ROLE_TRAIN",
    "ROLE_UNUSED",
    "STACK_COLUMNS",
    "PreparedStack",
    "Stack",
    "StackMetrics",
    "StackSums",
    "add_stack_metrics",
    "add_stack_sums_into",
    "checked_stack",
    "own_stack_sums",
    "prepare_stack",
    "stack_metrics",
    "stack_sums",
    "sum_stack_metrics",
    "sum_stack_sums",
    "zeroed_sums",
]

#: What a row is to a split: not used by it, one of its training rows, one of its held-out rows.
ROLE_UNUSED, ROLE_TRAIN, ROLE_HELD_OUT = 0, 1, 2

#: The split of a model trained (or scored) on every row.
EVERY_ROW = -1

#: Most logit columns (models × classes) of one product.
STACK_COLUMNS = 1024

#: Bytes of one tile of logits (rows × columns × itemsize) at most, and its bounds in rows: the
#: gradient product reduces over the tile's rows, so a tile keeps at least MIN_TILE_ROWS.
TILE_BYTES = 4 * 1024 * 1024
MIN_TILE_ROWS, MAX_TILE_ROWS = 256, 4096


class Stack(NamedTuple):
    """The parameters of ``m`` models of one shape and the rows each takes.

    Attributes
    ----------
    coef : ndarray of shape (n_models, n_classes, n_features)
    intercept : ndarray of shape (n_models, n_classes) or None
    splits : ndarray of shape (n_models,), int64
        The split whose rows each model takes; :data:`EVERY_ROW` for every row.
    roles : ndarray of shape (n_codes, n_splits), uint8
        ``roles[code, split]``: what a row of fold code ``code`` is to ``split``.
    """

    coef: np.ndarray
    intercept: np.ndarray | None
    splits: np.ndarray
    roles: np.ndarray


class StackSums(NamedTuple):
    """Per model, the sums of :class:`dsoftmax.objective.BlockSums` over its rows (float64).

    Attributes
    ----------
    loss_sum : ndarray of shape (n_models,)
    grad_coef_sum : ndarray of shape (n_models, n_classes, n_features)
    grad_intercept_sum : ndarray of shape (n_models, n_classes)
    weight_sum : ndarray of shape (n_models,)
    """

    loss_sum: np.ndarray
    grad_coef_sum: np.ndarray
    grad_intercept_sum: np.ndarray
    weight_sum: np.ndarray


class StackMetrics(NamedTuple):
    """Per model, weighted loss, weighted correct predictions and weight over its held-out rows.

    Attributes
    ----------
    loss_sum, correct_sum, weight_sum : ndarray of shape (n_models,), float64
    """

    loss_sum: np.ndarray
    correct_sum: np.ndarray
    weight_sum: np.ndarray


class PreparedStack(NamedTuple):
    """A :class:`Stack` laid out for the kernel, once per evaluation.

    Attributes
    ----------
    coef : ndarray of shape (n_models · n_classes, n_features)
        The stacked weights in the compute dtype, C-contiguous.
    intercept : ndarray of shape (n_models · n_classes,)
        Zeros without an intercept.
    n_models, n_classes : int
    splits : ndarray of shape (n_models,), int64
    roles : ndarray of shape (n_codes, n_splits), uint8
    storage : numpy dtype
        The dtype of the blocks this preparation reads.
    group_models : int
        Models per product.
    """

    coef: np.ndarray
    intercept: np.ndarray
    n_models: int
    n_classes: int
    splits: np.ndarray
    roles: np.ndarray
    storage: np.dtype
    group_models: int

    @property
    def n_features(self) -> int:
        return self.coef.shape[1]


def checked_stack(
    stack: Stack,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """``(coef, intercept, splits, roles)`` of ``stack`` as arrays, checked against each other.

    Raises
    ------
    ValueError
        When the arrays' shapes disagree, or a split has no column in ``roles``.
    """
    coef = np.asarray(stack.coef)
    if coef.ndim != 3 or min(coef.shape) < 1:
        raise ValueError(
            f"a stack's coef must have shape (n_models, n_classes, n_features), got {coef.shape}."
        )
    n_models, n_classes, _ = coef.shape
    intercept = None if stack.intercept is None else np.asarray(stack.intercept)
    if intercept is not None and intercept.shape != (n_models, n_classes):
        raise ValueError(
            f"a stack's intercept must have shape {(n_models, n_classes)}, got "
            f"{intercept.shape}."
        )
    splits = np.ascontiguousarray(stack.splits, dtype=np.int64)
    roles = np.ascontiguousarray(stack.roles, dtype=np.uint8)
    if splits.shape != (n_models,) or roles.ndim != 2:
        raise ValueError(
            f"a stack needs one split per model ({n_models}) and a 2-D roles table, got "
            f"splits of shape {splits.shape} and roles of shape {roles.shape}."
        )
    if np.any(splits < EVERY_ROW) or np.any(splits >= roles.shape[1]):
        raise ValueError(
            f"splits must lie in [-1, {roles.shape[1]}) (the roles table's columns), got "
            f"{splits.tolist()}."
        )
    return coef, intercept, splits, roles


def prepare_stack(stack: Stack, dtype: np.dtype) -> PreparedStack:
    """Lay out ``stack`` for blocks stored as ``dtype`` (:func:`~dsoftmax.kernels.storage_dtypes`).

    Raises
    ------
    ValueError
        When the arrays' shapes disagree, or a split has no column in ``roles``.
    """
    storage = np.dtype(dtype)
    compute = compute_dtype(storage)
    coef, given_intercept, splits, roles = checked_stack(stack)
    n_models, n_classes, n_features = coef.shape
    intercept = np.zeros((n_models, n_classes), dtype=compute)
    if given_intercept is not None:
        intercept[:] = given_intercept
    return PreparedStack(
        coef=np.ascontiguousarray(coef.reshape(n_models * n_classes, n_features), dtype=compute),
        intercept=intercept.reshape(-1),
        n_models=n_models,
        n_classes=n_classes,
        splits=splits,
        roles=roles,
        storage=storage,
        group_models=max(1, STACK_COLUMNS // n_classes),
    )


def _groups(prepared: PreparedStack) -> list[tuple[int, int, int]]:
    """``(first model, end model, split)`` of each product: consecutive models of one split,
    at most ``group_models`` of them."""
    groups: list[tuple[int, int, int]] = []
    for j, split in enumerate(prepared.splits.tolist()):
        if groups and groups[-1][2] == split and j - groups[-1][0] < prepared.group_models:
            groups[-1] = (groups[-1][0], j + 1, split)
        else:
            groups.append((j, j + 1, split))
    return groups


def _tile_rows(prepared: PreparedStack) -> int:
    columns = min(prepared.n_models, prepared.group_models) * prepared.n_classes
    rows = TILE_BYTES // (columns * prepared.coef.dtype.itemsize)
    return int(min(MAX_TILE_ROWS, max(MIN_TILE_ROWS, rows)))


def _codes(codes: np.ndarray, n_rows: int, n_codes: int) -> np.ndarray:
    codes = np.ascontiguousarray(codes)
    if codes.shape != (n_rows,) or codes.dtype.kind not in "iu":
        raise ValueError(
            f"fold codes must be one integer per row ({n_rows}), got shape {codes.shape} and "
            f"dtype {codes.dtype}."
        )
    if n_rows and (int(codes.min()) < 0 or int(codes.max()) >= n_codes):
        raise ValueError(
            f"fold codes must lie in [0, {n_codes}) (the roles table's rows), got values from "
            f"{codes.min()} to {codes.max()}."
        )
    return codes


def _block_inputs(
    prepared: PreparedStack,
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    codes: np.ndarray,
    rows: np.ndarray | None,
) -> tuple[np.ndarray, _Rows, np.ndarray]:
    """X's evaluated rows (gathered when ``rows`` selects some), their labels and weights as the
    compiled code reads them, and their fold codes."""
    X = _checked_block(prepared, X)
    if rows is not None:
        X = X[_checked_rows(rows, X.shape[0])]
    data = _row_data(prepared, labels, sample_weight, X.shape[0])
    return X, data, _codes(codes, X.shape[0], prepared.roles.shape[0])


def _taken(prepared: PreparedStack, codes: np.ndarray, split: int, role: int) -> np.ndarray | None:
    """The evaluated rows whose role in ``split`` is ``role``; None when that is every row."""
    if split == EVERY_ROW:
        return None
    takes = prepared.roles[:, split] == role
    if takes.all():
        return None
    return np.flatnonzero(takes[codes])


def _group_tiles(prepared: PreparedStack, X: np.ndarray, data: _Rows, taken: np.ndarray | None):
    """Per tile of the rows a group takes (every row when ``taken`` is None): the tile in the
    compute dtype and its rows' labels and weights. The rows of a group are gathered, so that
    its products skip the rows none of its models takes."""
    step = _tile_rows(prepared)
    compute = prepared.coef.dtype
    n_rows = X.shape[0] if taken is None else len(taken)
    for start in range(0, n_rows, step):
        rows = slice(start, start + step) if taken is None else taken[start : start + step]
        tile = X[rows].astype(compute, copy=False)
        yield tile, _Rows(
            data.ids if data.use_targets else data.ids[rows],
            data.targets[rows] if data.use_targets else data.targets,
            data.use_targets,
            data.weights[rows] if data.weighted else data.weights,
            data.weighted,
        )


def _weight_of(data: _Rows, taken: np.ndarray | None, n_rows: int) -> float:
    """The total weight of the rows a group takes."""
    if not data.weighted:
        return float(n_rows if taken is None else len(taken))
    return float(np.sum(data.weights if taken is None else data.weights[taken]))


def _logits(tile: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Class-major logits ``W tileᵀ + b`` (models·classes × tile rows) in this thread's work
    array, valid until the next tile: each class's logits are contiguous over the rows, which
    the softmax reduces across."""
    logits = work_array("stack_logits", (W.shape[0], tile.shape[0]), W.dtype)
    np.matmul(W, tile.T, out=logits)
    logits += b[:, None]
    return logits


def _softmax_work(prepared: PreparedStack, n_rows: int) -> np.ndarray:
    """The softmax's five per-row work vectors, in the compute dtype."""
    return work_array("stack_rows", (5, n_rows), prepared.coef.dtype)


def stack_sums(
    prepared: PreparedStack,
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    codes: np.ndarray,
    *,
    rows: np.ndarray | None = None,
    out: StackSums | None = None,
) -> StackSums:
    """Every stacked model's loss and gradient sums over its training rows of one block.

    Model ``j`` takes the rows whose role in split ``splits[j]`` is :data:`ROLE_TRAIN` (every
    row for :data:`EVERY_ROW`); its sums equal :func:`dsoftmax.objective.block_sums` of those
    rows up to the rounding of the products.

    Parameters
    ----------
    prepared : PreparedStack
        From :func:`prepare_stack` for X's dtype.
    X : ndarray of shape (n_rows, n_features)
        The whole block.
    labels : ndarray of shape (n_selected,) or (n_selected, n_classes)
        Class ids or probability rows of the evaluated rows (every row, or those of ``rows``).
    sample_weight : ndarray of shape (n_selected,) or None
    codes : ndarray of shape (n_selected,), integer
        The evaluated rows' fold codes.
    rows : ndarray of int, optional
        Local rows of the block to evaluate (a minibatch); every row when None.
    out : StackSums, optional
        float64 arrays of the result's shapes to compute into (overwritten): the result is then
        made of them.

    Returns
    -------
    StackSums
    """
    X, data, codes = _block_inputs(prepared, X, labels, sample_weight, codes, rows)
    m, K, d = prepared.n_models, prepared.n_classes, prepared.n_features
    sums = zeroed_sums(out, m, K, d)
    grad_coef = sums.grad_coef_sum.reshape(m * K, d)
    grad_intercept = sums.grad_intercept_sum.reshape(m * K)
    for lo, hi, split in _groups(prepared):
        columns = slice(lo * K, hi * K)
        W, b = prepared.coef[columns], prepared.intercept[columns]
        taken = _taken(prepared, codes, split, ROLE_TRAIN)
        product = work_array("stack_product", ((hi - lo) * K, d), W.dtype)
        for tile, tile_data in _group_tiles(prepared, X, data, taken):
            residual = _logits(tile, W, b)
            _residuals(
                residual, K, *tile_data, _softmax_work(prepared, tile.shape[0]),
                sums.loss_sum[lo:hi],
            )  # fmt: skip
            np.matmul(residual, tile, out=product)
            grad_coef[columns] += product
            grad_intercept[columns] += residual.sum(axis=1, dtype=np.float64)
        sums.weight_sum[lo:hi] = _weight_of(data, taken, X.shape[0])
    return sums


def stack_metrics(
    prepared: PreparedStack,
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    codes: np.ndarray,
    *,
    rows: np.ndarray | None = None,
) -> StackMetrics:
    """Every stacked model's weighted loss, correct predictions and weight over its held-out
    rows of one block (role :data:`ROLE_HELD_OUT` in its split; every row for
    :data:`EVERY_ROW`).

    A prediction is the first largest logit; for probability rows it is correct when it is the
    row's first largest entry (as :func:`dsoftmax.kernels.block_metrics`). Arguments are those
    of :func:`stack_sums`.

    Returns
    -------
    StackMetrics
    """
    X, data, codes = _block_inputs(prepared, X, labels, sample_weight, codes, rows)
    m, K = prepared.n_models, prepared.n_classes
    metrics = StackMetrics(np.zeros(m), np.zeros(m), np.zeros(m))
    for lo, hi, split in _groups(prepared):
        columns = slice(lo * K, hi * K)
        W, b = prepared.coef[columns], prepared.intercept[columns]
        taken = _taken(prepared, codes, split, ROLE_HELD_OUT)
        for tile, tile_data in _group_tiles(prepared, X, data, taken):
            _scores(
                _logits(tile, W, b), K, *tile_data, _softmax_work(prepared, tile.shape[0]),
                metrics.loss_sum[lo:hi], metrics.correct_sum[lo:hi],
            )  # fmt: skip
        metrics.weight_sum[lo:hi] = _weight_of(data, taken, X.shape[0])
    return metrics


@jit
def _residuals(logits, n_classes, ids, targets, use_targets, weights, weighted, work, loss):
    """Each model's class-major logits (rows ``j·K`` to ``(j+1)·K`` of ``logits``) become its
    residual ``w·(s·P − Y)`` in place; its weighted loss is added into ``loss[j]``."""
    n_rows = logits.shape[1]
    for j in range(loss.shape[0]):
        block = logits[j * n_classes : (j + 1) * n_classes]
        loss[j] += _residual_tile(
            block, n_rows, n_classes, 0, ids, targets, use_targets, weights, weighted, work
        )


@jit
def _scores(logits, n_classes, ids, targets, use_targets, weights, weighted, work, loss, correct):
    """Each model's weighted loss and correct predictions over the tile, added into ``loss[j]``
    and ``correct[j]``, from class-major logits (overwritten)."""
    n_rows = logits.shape[1]
    row_max, normalizer, target_logit, target_sum = work[0], work[1], work[2], work[3]
    scratch = work[4].view(np.int32)
    for j in range(loss.shape[0]):
        block = logits[j * n_classes : (j + 1) * n_classes]
        for r in range(n_rows):
            predicted = _first_argmax(block[:, r], n_classes)
            target = _first_argmax(targets[r], n_classes) if use_targets else ids[r]
            if predicted == target:
                correct[j] += weights[r] if weighted else 1.0
        _shift_tile(block, n_rows, n_classes, row_max)
        _target_terms(
            block, n_rows, n_classes, 0, ids, targets, use_targets, target_logit, target_sum
        )
        _exp_tile(block, n_rows, n_classes, normalizer, scratch)
        total = 0.0
        for r in range(n_rows):
            row_loss = float(target_sum[r]) * math.log(float(normalizer[r]))
            row_loss -= float(target_logit[r])
            total += weights[r] * row_loss if weighted else row_loss
        loss[j] += total


# -- how the values add up -------------------------------------------------------------------


def _empty_sums(n_models: int, n_classes: int, n_features: int) -> StackSums:
    return StackSums(
        np.zeros(n_models),
        np.zeros((n_models, n_classes, n_features)),
        np.zeros((n_models, n_classes)),
        np.zeros(n_models),
    )


def zeroed_sums(out: StackSums | None, n_models: int, n_classes: int, n_features: int) -> StackSums:
    """``out`` (checked against the shapes, then zeroed) or new zeroed sums: what a block's
    sums are added into."""
    if out is None:
        return _empty_sums(n_models, n_classes, n_features)
    if out.grad_coef_sum.shape != (n_models, n_classes, n_features):
        raise ValueError(f"out must hold sums of {n_models} models of shape "
                         f"{(n_classes, n_features)}.")  # fmt: skip
    for array in out:
        array.fill(0.0)
    return out


def own_stack_sums(sums: StackSums) -> StackSums:
    """A copy of ``sums`` to add into in place (:func:`add_stack_sums_into`)."""
    return StackSums(*(np.array(field, dtype=np.float64) for field in sums))


def add_stack_sums_into(total: StackSums, part: StackSums) -> StackSums:
    """Add ``part`` into ``total``'s arrays, which the caller owns; returns ``total``."""
    for into, field in zip(total, part, strict=True):
        np.add(into, field, out=into)
    return total


def sum_stack_sums(parts: list[StackSums]) -> StackSums:
    """Add a non-empty list of sums left to right (a fixed order)."""
    total = own_stack_sums(parts[0])
    for part in parts[1:]:
        add_stack_sums_into(total, part)
    return total


def add_stack_metrics(left: StackMetrics, right: StackMetrics) -> StackMetrics:
    """Add two :class:`StackMetrics`."""
    return StackMetrics(*(a + b for a, b in zip(left, right, strict=True)))


def sum_stack_metrics(parts: list[StackMetrics]) -> StackMetrics:
    """Add a non-empty list of metrics left to right (a fixed order)."""
    total = parts[0]
    for part in parts[1:]:
        total = add_stack_metrics(total, part)
    return total
