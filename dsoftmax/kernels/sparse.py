"""The sparse block kernel: loss/gradient sums and metrics of a block of CSR rows, on one thread.

A block's ``X`` is a scipy.sparse CSR matrix; the kernel reads its three arrays (``indptr``,
``indices``, ``data``) and never densifies. Per row ``i`` with non-zeros ``(j, x_ij)``:

1. logits ``φ_k = b_k + Σ_j x_ij W_kj`` for every class, reading ``Wᵀ[j]`` -- the weights laid
   out features × classes (:func:`prepare`), so that one non-zero reads its classes' weights
   from one contiguous row;
2. the stable softmax, the row's loss and its residual ``t = w·(s·P − Y)`` (the rules of
   :mod:`dsoftmax.objective`);
3. the gradient ``Gᵀ[j] += x_ij · t`` for each of the row's non-zeros, in float64, and
   ``Σ t`` into the intercept's.

The cost of a block therefore grows with its non-zeros times the classes, never with
``n_features``. Products and the softmax run in the compute dtype (float32 for float32 data,
float64 for float64); the loss and the gradient sums are float64. Rows are processed in order,
on the calling thread, so a call gives the same bits every time, and the selected rows of a
minibatch (:func:`rows_sums`) go through exactly the code a block of those rows would.

The gradient is accumulated as ``Gᵀ`` (n_features, n_classes) and returned as its transpose
``G`` (a Fortran-ordered view of shape (n_classes, n_features)): adding such sums elementwise
gives the same bits whatever their memory order.

A block held in memory with its column form is evaluated whole by :mod:`.sparse_columns`
instead, with the same bits: the loops here and there are compiled without reassociation
(:data:`dsoftmax.kernels.compile.ORDERED`), so each sum keeps the order its code gives it.

Indices are read as they are stored (int32 or int64, so blocks of more than 2³¹ non-zeros work).
The kernel checks every row's pointers and every column index against the block's bounds as it
reads them: a malformed matrix raises a ValueError instead of reading outside its arrays.
Duplicate or unsorted indices within a row are summed, as scipy.sparse reads them.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse

from ..objective import BlockMetrics, BlockSums, Params
from .compile import ORDERED, jit, prefetch_read, prefetch_write
from .dense import Prepared as DensePrepared
from .dense import _checked_rows, _row_data, _Rows
from .wide import _shifted_row_terms

__all__ = [
    "SparsePrepared",
    "block_metrics",
    "block_sums",
    "decision_function",
    "is_csr",
    "prepare",
    "rows_sums",
]

#: The dtypes the values of a sparse block may have.
SPARSE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Status codes of the compiled loops, and what they mean.
_OK, _BAD_POINTERS, _BAD_INDEX = 0, 1, 2

#: Non-zeros ahead of the current one whose rows of ``Wᵀ`` and ``Gᵀ`` are prefetched: a block's
#: reads of those rows jump across megabytes, and without prefetching each waits for memory.
PREFETCH_AHEAD = 16


class SparsePrepared(NamedTuple):
    """Parameters laid out for the sparse kernel: built once per evaluation.

    Attributes
    ----------
    coef_t : ndarray of shape (n_features, n_classes)
        ``Wᵀ`` in the compute dtype, C-contiguous: one non-zero reads one row of it.
    intercept : ndarray of shape (n_classes,)
        ``b`` in the compute dtype (zeros without an intercept).
    n_classes : int
    storage : numpy dtype
        The dtype of the blocks' values this preparation reads.
    path : str
        ``"sparse"``.
    """

    coef_t: np.ndarray
    intercept: np.ndarray
    n_classes: int
    storage: np.dtype
    path: str = "sparse"

    @property
    def coef(self) -> np.ndarray:
        """``W`` of shape (n_classes, n_features), a view of :attr:`coef_t`."""
        return self.coef_t.T

    @property
    def n_features(self) -> int:
        return self.coef_t.shape[0]


def is_csr(X: Any) -> bool:
    """Whether ``X`` is a scipy.sparse matrix or array (of any format)."""
    return scipy.sparse.issparse(X)


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in SPARSE_DTYPES:
        raise TypeError(
            f"sparse X has dtype {dtype}; the sparse kernel reads float32 or float64 values. "
            "Cast them with X.astype(np.float32)."
        )
    return dtype


def prepare(params: Params, dtype: np.dtype) -> SparsePrepared:
    """Lay out ``params`` for CSR blocks whose values are ``dtype`` (float32 or float64).

    Parameters
    ----------
    params : Params
        ``coef`` (n_classes, n_features), ``intercept`` (n_classes,) or None.
    dtype : numpy dtype

    Returns
    -------
    SparsePrepared
    """
    compute = _compute_dtype(dtype)
    coef = np.asarray(params.coef)
    if coef.ndim != 2 or coef.shape[0] < 1 or coef.shape[1] < 1:
        raise ValueError(f"coef must have shape (n_classes, n_features), got {coef.shape}.")
    n_classes = coef.shape[0]
    intercept = np.zeros(n_classes, dtype=compute)
    if params.intercept is not None:
        intercept[:] = params.intercept
    coef_t = np.ascontiguousarray(coef.T, dtype=compute)
    return SparsePrepared(coef_t, intercept, n_classes, compute)


def _as_sparse_prepared(prepared: SparsePrepared | DensePrepared) -> SparsePrepared:
    """A dense kernel's preparation relaid out for sparse blocks (one transposed copy)."""
    if isinstance(prepared, SparsePrepared):
        return prepared
    n_classes = prepared.n_classes
    coef = prepared.coef[:n_classes]
    return prepare(Params(coef, prepared.intercept[:n_classes]), coef.dtype)


def _checked_csr(prepared: SparsePrepared, X: Any) -> scipy.sparse.csr_matrix:
    if not is_csr(X) or X.ndim != 2:
        raise ValueError(f"X must be a 2-D scipy.sparse matrix, got {type(X).__name__}.")
    if X.format != "csr":
        raise TypeError(
            f"sparse X is in {X.format!r} format; the kernel reads CSR blocks: convert with "
            "X.tocsr()."
        )
    if X.dtype != prepared.storage:
        raise TypeError(
            f"X has dtype {X.dtype} but the kernel was prepared for {prepared.storage}; "
            "call prepare(params, X.dtype)."
        )
    if X.shape[1] != prepared.n_features:
        raise ValueError(f"X has {X.shape[1]} features but the model has {prepared.n_features}.")
    return X


def _arrays(X: scipy.sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``indptr``, ``indices`` and ``data``, contiguous (the engine's blocks are already)."""
    return (
        np.ascontiguousarray(X.indptr),
        np.ascontiguousarray(X.indices),
        np.ascontiguousarray(X.data),
    )


def _raise_on(status: int, where: int, X: Any, prepared: SparsePrepared) -> None:
    if status == _BAD_POINTERS:
        raise ValueError(
            f"the CSR matrix is malformed: the pointers of row {where} (indptr) do not lie "
            f"within its {X.indices.shape[0]} stored values; rebuild it with "
            "scipy.sparse.csr_matrix((data, indices, indptr))."
        )
    if status == _BAD_INDEX:
        raise ValueError(
            f"row {where} of the CSR matrix has a column index outside [0, "
            f"{prepared.n_features}) (the model's features); check the indices."
        )


def block_sums(
    prepared: SparsePrepared | DensePrepared,
    X: Any,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> BlockSums:
    """Loss and gradient sums over a whole CSR block, as :func:`dsoftmax.objective.block_sums`.

    Parameters
    ----------
    prepared : SparsePrepared
        From :func:`prepare` (a dense preparation is relaid out first, at the cost of a copy).
    X : scipy.sparse CSR matrix of shape (n_rows, n_features)
    labels : ndarray of shape (n_rows,) or (n_rows, n_classes)
    sample_weight : ndarray of shape (n_rows,), optional
    out : tuple of two contiguous float64 ndarrays, optional
        Of at least ``n_classes × n_features`` and ``n_classes`` elements (e.g. of shapes
        ``prepared.coef.shape`` and its first axis): the gradient sums are computed into their
        memory and the returned sums are views of it, valid until it is used again.

    Returns
    -------
    BlockSums
        float64 sums; ``grad_coef_sum`` is Fortran-ordered.
    """
    prepared = _as_sparse_prepared(prepared)
    X = _checked_csr(prepared, X)
    data = _row_data(prepared, labels, sample_weight, X.shape[0])
    return _sums(prepared, X, None, data, out)


def rows_sums(
    prepared: SparsePrepared | DensePrepared,
    X: Any,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    rows: np.ndarray,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> BlockSums:
    """The sums of the selected rows of a CSR block: bit for bit
    ``block_sums(prepared, X[rows], labels, sample_weight)``, without gathering X's rows.

    ``labels`` and ``sample_weight`` are those of the selected rows, in the order of ``rows``
    (local row indices); the other arguments are those of :func:`block_sums`.
    """
    prepared = _as_sparse_prepared(prepared)
    X = _checked_csr(prepared, X)
    rows = _checked_rows(rows, X.shape[0])
    data = _row_data(prepared, np.asarray(labels), sample_weight, len(rows))
    return _sums(prepared, X, rows, data, out)


def _gradient_arrays(
    prepared: SparsePrepared, out: tuple[np.ndarray, np.ndarray] | None, *, zeroed: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``Gᵀ`` (n_features, n_classes) and the intercept's sums, in ``out`` if given; zeroed
    unless ``zeroed`` is False (for a kernel that writes every entry)."""
    n_features, n_classes = prepared.coef_t.shape
    if out is None:
        make = np.zeros if zeroed else np.empty
        return make((n_features, n_classes)), make(n_classes)
    coef_buffer, intercept_buffer = out
    if (
        coef_buffer.dtype != np.float64
        or intercept_buffer.dtype != np.float64
        or not coef_buffer.flags.c_contiguous
        or coef_buffer.size < n_features * n_classes
        or intercept_buffer.size < n_classes
    ):
        raise ValueError(
            f"out must hold contiguous float64 arrays of at least {n_features * n_classes} and "
            f"{n_classes} elements, got {coef_buffer.dtype} {coef_buffer.shape} and "
            f"{intercept_buffer.dtype} {intercept_buffer.shape}."
        )
    grad_t = coef_buffer.reshape(-1)[: n_features * n_classes].reshape(n_features, n_classes)
    grad_intercept = intercept_buffer.reshape(-1)[:n_classes]
    if zeroed:
        grad_t.fill(0.0)
        grad_intercept.fill(0.0)
    return grad_t, grad_intercept


def _sums(
    prepared: SparsePrepared,
    X: Any,
    rows: np.ndarray | None,
    data: _Rows,
    out: tuple[np.ndarray, np.ndarray] | None,
) -> BlockSums:
    grad_t, grad_intercept = _gradient_arrays(prepared, out)
    gather = rows is not None
    selected = rows if gather else np.zeros(0, np.int64)
    loss, status, where = _sums_kernel(
        *_arrays(X),
        selected,
        gather,
        prepared.coef_t,
        prepared.intercept,
        tuple(data),
        grad_t,
        grad_intercept,
    )
    _raise_on(status, where, X, prepared)
    n_rows = X.shape[0] if rows is None else len(rows)
    weight_sum = float(np.sum(data.weights)) if data.weighted else float(n_rows)
    return BlockSums(float(loss), grad_t.T, grad_intercept, weight_sum)


def block_metrics(
    prepared: SparsePrepared | DensePrepared,
    X: Any,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> BlockMetrics:
    """Weighted loss sum, weighted count of correct predictions and weight sum of a CSR block
    (its selected ``rows`` when given, ``labels`` and ``sample_weight`` then being those of the
    selected rows), as :func:`dsoftmax.metrics.block_metrics`.

    A prediction is the first largest logit, the logits being those of
    :func:`decision_function`, so the accuracy counts exactly ``predict``'s predictions.
    """
    prepared = _as_sparse_prepared(prepared)
    X = _checked_csr(prepared, X)
    gather = rows is not None
    rows = _checked_rows(rows, X.shape[0]) if gather else np.zeros(0, np.int64)
    n_rows = len(rows) if gather else X.shape[0]
    data = _row_data(prepared, labels, sample_weight, n_rows)
    loss, correct, status, where = _metrics_kernel(
        *_arrays(X), rows, gather, prepared.coef_t, prepared.intercept, tuple(data)
    )
    _raise_on(status, where, X, prepared)
    weight_sum = float(np.sum(data.weights)) if data.weighted else float(n_rows)
    return BlockMetrics(float(loss), float(correct), weight_sum)


def decision_function(prepared: SparsePrepared | Params, X: Any) -> np.ndarray:
    """Logits ``X Wᵀ + b`` of a CSR matrix, shape (n_rows, n_classes), in the compute dtype.

    The logits are computed as the sums and metrics compute them, so predictions and the
    evaluations' accuracy agree on every row, ties included.
    """
    if isinstance(prepared, Params):
        prepared = prepare(prepared, X.dtype)
    X = _checked_csr(prepared, X)
    logits = np.empty((X.shape[0], prepared.n_classes), dtype=prepared.coef_t.dtype)
    status, where = _logits_kernel(*_arrays(X), prepared.coef_t, prepared.intercept, logits)
    _raise_on(status, where, X, prepared)
    return logits


# -- the compiled loops ---------------------------------------------------------------------


@jit(fastmath=ORDERED)
def _prefetch_row(array, j, write):
    """Prefetch row ``j`` of ``array``: its first and last elements (and its middle one, for a
    row about to be written), which covers a row of a few cache lines; the hardware streams the
    rest of a wider row once its first lines are read. A fixed count of hints, not a loop over
    the row's lines: a loop costs more than it saves at a few classes."""
    last = array.shape[1] - 1
    if write:
        prefetch_write(array, j, 0)
        prefetch_write(array, j, last // 2)
        prefetch_write(array, j, last)
    else:
        prefetch_read(array, j, 0)
        prefetch_read(array, j, last)


@jit(fastmath=ORDERED)
def _prefetch_ahead(indices, p, array, write):
    """Prefetch the row of ``array`` that the non-zero :data:`PREFETCH_AHEAD` after ``p``
    reads, when that non-zero exists and its index is in range."""
    q = p + PREFETCH_AHEAD
    if q < indices.shape[0]:
        j = indices[q]
        if 0 <= j < array.shape[0]:
            _prefetch_row(array, j, write)


@jit(fastmath=ORDERED)
def _row_logits(indptr, indices, values, i, coef_t, intercept, phi):
    """``phi = b + Σ_p values[p] · Wᵀ[indices[p]]`` over the non-zeros of row ``i``; returns a
    status (:data:`_OK`, :data:`_BAD_POINTERS` or :data:`_BAD_INDEX`)."""
    n_features, n_classes = coef_t.shape
    start = indptr[i]
    stop = indptr[i + 1]
    if start < 0 or stop < start or stop > indices.shape[0]:
        return _BAD_POINTERS
    for k in range(n_classes):
        phi[k] = intercept[k]
    for p in range(start, stop):
        _prefetch_ahead(indices, p, coef_t, False)
        j = indices[p]
        if j < 0 or j >= n_features:
            return _BAD_INDEX
        x = values[p]
        for k in range(n_classes):
            phi[k] += x * coef_t[j, k]
    return _OK


@jit(fastmath=ORDERED)
def _row_residual(phi, r, labels, scratch, residual, grad_intercept):
    """Row ``r``'s logits ``phi`` (overwritten) give its residual ``w·(s·P − Y)`` in
    ``residual`` (float64), added into ``grad_intercept``; returns its weighted loss. Shared by
    the row and the column kernels, so that both give the same bits."""
    ids, targets, use_targets, weights, weighted = labels
    n_classes = phi.shape[0]
    _, target_logit, target_sum, normalizer = _shifted_row_terms(
        phi, ids, targets, use_targets, r, scratch
    )
    w = weights[r] if weighted else 1.0
    scale = w * target_sum / float(normalizer)
    for k in range(n_classes):
        residual[k] = scale * float(phi[k])
    if use_targets:
        for k in range(n_classes):
            residual[k] -= w * float(targets[r, k])
    else:
        residual[ids[r]] -= w
    for k in range(n_classes):
        grad_intercept[k] += residual[k]
    return w * (target_sum * math.log(float(normalizer)) - target_logit)


@jit(fastmath=ORDERED)
def _sums_kernel(
    indptr, indices, values, rows, gather, coef_t, intercept, labels, grad_t, grad_intercept
):
    """The block's weighted loss sum, with its gradient sums added into ``grad_t`` (Gᵀ) and
    ``grad_intercept``; returns ``(loss, status, row)``."""
    n_classes = coef_t.shape[1]
    n_rows = rows.shape[0] if gather else indptr.shape[0] - 1
    phi = np.empty(n_classes, dtype=coef_t.dtype)
    residual = np.empty(n_classes, dtype=np.float64)
    scratch = np.empty(n_classes, dtype=np.int32)
    loss = 0.0
    for r in range(n_rows):
        i = rows[r] if gather else r
        status = _row_logits(indptr, indices, values, i, coef_t, intercept, phi)
        if status != _OK:
            return loss, status, i
        loss += _row_residual(phi, r, labels, scratch, residual, grad_intercept)
        for p in range(indptr[i], indptr[i + 1]):
            _prefetch_ahead(indices, p, grad_t, True)
            j = indices[p]
            x = float(values[p])
            for k in range(n_classes):
                grad_t[j, k] += x * residual[k]
    return loss, _OK, 0


@jit(fastmath=ORDERED)
def _metrics_kernel(indptr, indices, values, rows, gather, coef_t, intercept, labels):
    """``(weighted loss sum, weighted correct sum, status, row)`` of the block's rows."""
    ids, targets, use_targets, weights, weighted = labels
    n_classes = coef_t.shape[1]
    n_rows = rows.shape[0] if gather else indptr.shape[0] - 1
    phi = np.empty(n_classes, dtype=coef_t.dtype)
    scratch = np.empty(n_classes, dtype=np.int32)
    loss = 0.0
    correct = 0.0
    for r in range(n_rows):
        i = rows[r] if gather else r
        status = _row_logits(indptr, indices, values, i, coef_t, intercept, phi)
        if status != _OK:
            return loss, correct, status, i
        best, target_logit, target_sum, normalizer = _shifted_row_terms(
            phi, ids, targets, use_targets, r, scratch
        )
        w = weights[r] if weighted else 1.0
        loss += w * (target_sum * math.log(float(normalizer)) - target_logit)
        target = ids[r] if not use_targets else 0
        if use_targets:
            for k in range(1, n_classes):
                if targets[r, k] > targets[r, target]:
                    target = k
        if best == target:
            correct += w
    return loss, correct, _OK, 0


@jit(fastmath=ORDERED)
def _logits_kernel(indptr, indices, values, coef_t, intercept, logits):
    """Every row's logits into ``logits`` (n_rows, n_classes); returns ``(status, row)``."""
    for i in range(indptr.shape[0] - 1):
        status = _row_logits(indptr, indices, values, i, coef_t, intercept, logits[i])
        if status != _OK:
            return status, i
    return _OK, 0
