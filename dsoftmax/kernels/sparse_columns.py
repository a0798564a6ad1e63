r"""The column-ordered sparse kernel: the sums of a held CSR block, read column by column.

The row kernel (:mod:`.sparse`) reads, for each non-zero ``(i, j)``, row ``j`` of ``Wᵀ`` and
adds into row ``j`` of ``Gᵀ``: two accesses at a random place of a model-sized array (21 MB and
42 MB at 20 classes × 2^18 columns), each waiting for memory. Ordered by column, the same
non-zeros read each row of ``Wᵀ`` once and write each row of ``Gᵀ`` once, in increasing order,
and the random accesses go to the block's own logits and residuals (rows × classes, a few MiB
that stay in cache):

1. the logits of every row, ``Φ[i] = b + Σ_j x_ij Wᵀ[j]``, column after column;
2. per row, in order, the stable softmax, the loss and the residual ``T[i] = w·(s·P − Y)``
   (the row kernel's own code, :func:`dsoftmax.kernels.sparse._row_residual`);
3. per column, ``Gᵀ[j] = Σ_i x_ij T[i]`` over its rows in increasing order, written once.

Every sum adds the same terms in the same order as the row kernel: a row's logits add its
non-zeros in increasing column order, which is the row kernel's order when the row's column
indices are sorted, and a gradient entry adds its rows' terms in increasing row order, as the
row kernel does. The two kernels therefore give the same bits (both are compiled without
reassociation, :data:`~dsoftmax.kernels.compile.ORDERED`), and :func:`column_form` builds
the column order only for blocks whose rows have sorted indices (duplicates are kept, in their
order); for any other block it returns None and the row kernel runs.

The column form costs one sort per block (a counting sort, or a sort of the non-zeros where
the features far outnumber them: about one evaluation of the block) and as many bytes as the
CSR arrays again, so it pays for blocks held in memory and evaluated many times, not for
streamed ones. Pure NumPy and numba: no Dask, no I/O.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..objective import BlockSums, work_array
from .compile import ORDERED, jit
from .dense import Prepared as DensePrepared
from .dense import _row_data
from .sparse import (
    SparsePrepared,
    _arrays,
    _as_sparse_prepared,
    _checked_csr,
    _gradient_arrays,
    _row_residual,
)

__all__ = ["COUNTING_SORT_BYTES", "ColumnForm", "column_form", "column_sums"]

#: A column form is built by a counting sort (8 bytes per feature, for a moment) when those
#: bytes are at most this or the block's own, else by sorting its non-zeros.
COUNTING_SORT_BYTES = 16 * 1024 * 1024


class ColumnForm(NamedTuple):
    """A CSR block's non-zeros in column order, over its non-empty columns only (a block of
    25,000 rows touches a fraction of 10^7 hashed columns).

    Attributes
    ----------
    columns : ndarray of shape (n_columns,), int64
        The block's non-empty columns, increasing.
    starts : ndarray of shape (n_columns + 1,), int64
        Column ``columns[c]``'s non-zeros are ``starts[c]`` to ``starts[c + 1]``.
    rows : ndarray of shape (nnz,), int32
        The row of each non-zero, increasing within a column.
    values : ndarray of shape (nnz,)
        The values, in the block's dtype.
    shape : tuple of int
        The block's ``(n_rows, n_features)``.
    """

    columns: np.ndarray
    starts: np.ndarray
    rows: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]

    @property
    def nbytes(self) -> int:
        """Bytes of the four arrays."""
        return sum(int(array.nbytes) for array in self[:4])


def column_form(X: Any) -> ColumnForm | None:
    """The column order of the CSR block ``X``; None when a row's column indices are not sorted
    (the column kernel would add that row's logits in another order than the row kernel), when
    the matrix is malformed (the row kernel then says how), or when it has 2^31 rows or more.

    Parameters
    ----------
    X : scipy.sparse CSR matrix of shape (n_rows, n_features)

    Returns
    -------
    ColumnForm or None
    """
    n_rows, n_features = X.shape
    if n_rows >= 2**31:
        return None
    indptr, indices, values = _arrays(X)
    if not _sorted_in_range(indptr, indices, n_features):
        return None
    own_bytes = indptr.nbytes + indices.nbytes + values.nbytes
    if 8 * n_features <= max(COUNTING_SORT_BYTES, own_bytes):
        columns, starts, rows, ordered = _by_counting(indptr, indices, values, n_features)
    else:
        columns, starts, rows, ordered = _by_sorting(indptr, indices, values)
    return ColumnForm(columns, starts, rows, ordered, (int(n_rows), int(n_features)))


def _by_counting(
    indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, n_features: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The column form's arrays by a counting sort: one count per feature (8 bytes each)."""
    counts = np.zeros(n_features, dtype=np.int64)
    _count_columns(indptr, indices, counts)
    columns = np.flatnonzero(counts)
    starts = np.zeros(len(columns) + 1, dtype=np.int64)
    np.cumsum(counts[columns], out=starts[1:])
    slots = counts  # reused: column j's next free position
    slots[columns] = starts[:-1]
    rows = np.empty(starts[-1], dtype=np.int32)
    ordered = np.empty(starts[-1], dtype=values.dtype)
    _fill_columns(indptr, indices, values, slots, rows, ordered)
    return columns, starts, rows, ordered


def _by_sorting(
    indptr: np.ndarray, indices: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The column form's arrays by a stable sort of the non-zeros' columns: memory in the
    non-zeros only, for blocks whose features far outnumber them (hashed spaces of 10^7+)."""
    first, last = int(indptr[0]), int(indptr[-1])
    stored = indices[first:last]
    order = np.argsort(stored, kind="stable")  # positions, hence rows, increase per column
    by_column = stored[order]
    breaks = np.flatnonzero(np.diff(by_column)) + 1
    heads = np.concatenate(([0], breaks)) if len(by_column) else breaks
    columns = by_column[heads].astype(np.int64)
    starts = np.concatenate((heads, [len(by_column)])).astype(np.int64)
    row_of = np.repeat(np.arange(len(indptr) - 1, dtype=np.int32), np.diff(indptr))
    return columns, starts, row_of[order], values[first:last][order]


def column_sums(
    prepared: SparsePrepared | DensePrepared,
    X: Any,
    columns: ColumnForm,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
    *,
    rows: np.ndarray | None = None,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> BlockSums:
    """The sums of :func:`dsoftmax.kernels.sparse.block_sums` over the block ``X`` (or of
    :func:`~dsoftmax.kernels.sparse.rows_sums` over its increasing ``rows``), read through its
    column form: the same bits.

    Parameters
    ----------
    prepared : SparsePrepared
    X : scipy.sparse CSR matrix of shape (n_rows, n_features)
        The block (its shape and dtype are checked; its arrays are not read).
    columns : ColumnForm
        ``column_form(X)``.
    labels, sample_weight, out
        As :func:`dsoftmax.kernels.sparse.block_sums` (of the selected rows, with ``rows``).
    rows : ndarray of int, optional
        Strictly increasing local rows to sum over (a grid model's training rows); every row
        when None. Every row's logits are computed either way: a selection costs what the block
        costs.

    Returns
    -------
    BlockSums
        float64 sums; ``grad_coef_sum`` is Fortran-ordered.
    """
    prepared = _as_sparse_prepared(prepared)
    X = _checked_csr(prepared, X)
    _check_columns(columns, X)
    n_rows = X.shape[0]
    selected, taken = _selection(rows, n_rows)
    data = _row_data(prepared, labels, sample_weight, len(selected))
    n_classes = prepared.n_classes
    grad_t, grad_intercept = _gradient_arrays(prepared, out, zeroed=False)
    grad_intercept.fill(0.0)
    logits = work_array("column_logits", (n_rows, n_classes), prepared.coef_t.dtype)
    residuals = work_array("column_residuals", (n_rows, n_classes), np.float64)
    loss = _column_sums_kernel(
        columns.columns, columns.starts, columns.rows, columns.values,
        prepared.coef_t, prepared.intercept, tuple(data), selected, taken, rows is not None,
        logits, residuals, grad_t, grad_intercept,
    )  # fmt: skip
    weight_sum = float(np.sum(data.weights)) if data.weighted else float(len(selected))
    return BlockSums(float(loss), grad_t.T, grad_intercept, weight_sum)


def _selection(rows: np.ndarray | None, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The selected rows (every row for None) and a per-row mark of them (empty for None)."""
    if rows is None:
        return np.arange(n_rows, dtype=np.int64), np.zeros(0, dtype=np.bool_)
    selected = np.ascontiguousarray(rows, dtype=np.int64)
    if selected.ndim != 1 or (
        len(selected)
        and (selected[0] < 0 or selected[-1] >= n_rows or np.any(np.diff(selected) <= 0))
    ):
        raise ValueError(
            f"rows must be strictly increasing local rows of a block of {n_rows} rows."
        )
    taken = np.zeros(n_rows, dtype=np.bool_)
    taken[selected] = True
    return selected, taken


def _check_columns(columns: ColumnForm, X: Any) -> None:
    """The column form belongs to a block of X's shape and dtype, and its pointers and indices
    lie within its arrays (the compiled loops do not check them)."""
    if not isinstance(columns, ColumnForm):
        raise TypeError(f"columns must be a ColumnForm, got {type(columns).__name__}.")
    n_rows, n_features = X.shape
    nnz = columns.rows.shape[0]
    if (
        tuple(columns.shape) != (n_rows, n_features)
        or columns.values.dtype != X.dtype
        or columns.values.shape != (nnz,)
        or columns.starts.shape != (columns.columns.shape[0] + 1,)
    ):
        raise ValueError(
            f"the column form (shape {columns.shape}, {columns.values.dtype}) is not that of a "
            f"block of shape {X.shape} and dtype {X.dtype}."
        )
    starts, cols = columns.starts, columns.columns
    if (
        starts[0] != 0
        or starts[-1] != nnz
        or np.any(np.diff(starts) < 0)
        or (len(cols) and (cols[0] < 0 or cols[-1] >= n_features or np.any(np.diff(cols) <= 0)))
        or (nnz and (columns.rows.min() < 0 or columns.rows.max() >= n_rows))
    ):
        raise ValueError("the column form's pointers or indices lie outside its block.")


# -- the compiled loops ---------------------------------------------------------------------


@jit(fastmath=ORDERED)
def _sorted_in_range(indptr, indices, n_features):
    """Whether every row's pointers lie within the stored values, in order, and its indices
    within ``[0, n_features)`` and never decreasing."""
    if indptr[0] < 0:
        return False
    for i in range(indptr.shape[0] - 1):
        start = indptr[i]
        stop = indptr[i + 1]
        if stop < start or stop > indices.shape[0]:
            return False
        previous = 0
        for p in range(start, stop):
            j = indices[p]
            if j < previous or j >= n_features:
                return False
            previous = j
    return True


@jit(fastmath=ORDERED)
def _count_columns(indptr, indices, counts):
    """Count each column's non-zeros into ``counts`` (the matrix already checked)."""
    for p in range(indptr[0], indptr[indptr.shape[0] - 1]):
        counts[indices[p]] += 1


@jit(fastmath=ORDERED)
def _fill_columns(indptr, indices, values, slots, rows, ordered):
    """Place each non-zero at its column's next slot, rows in increasing order (a stable
    counting sort)."""
    for i in range(indptr.shape[0] - 1):
        for p in range(indptr[i], indptr[i + 1]):
            q = slots[indices[p]]
            rows[q] = i
            ordered[q] = values[p]
            slots[indices[p]] = q + 1


@jit(fastmath=ORDERED)
def _column_sums_kernel(
    columns, starts, rows, values, coef_t, intercept, labels, selected, taken, partial, logits,
    residuals, grad_t, grad_intercept,
):  # fmt: skip
    """The selected rows' weighted loss sum; ``Gᵀ`` written into ``grad_t`` (every row of it:
    zeros for the columns the block does not touch) and the intercept's sums added into
    ``grad_intercept``. With ``partial``, only rows marked in ``taken`` add to the gradient."""
    n_rows, n_classes = logits.shape
    for i in range(n_rows):
        for k in range(n_classes):
            logits[i, k] = intercept[k]
    for c in range(columns.shape[0]):
        j = columns[c]
        for q in range(starts[c], starts[c + 1]):
            i = rows[q]
            x = values[q]
            for k in range(n_classes):
                logits[i, k] += x * coef_t[j, k]
    scratch = np.empty(n_classes, dtype=np.int32)
    loss = 0.0
    for r in range(selected.shape[0]):
        i = selected[r]
        loss += _row_residual(logits[i], r, labels, scratch, residuals[i], grad_intercept)
    accumulated = np.empty(n_classes, dtype=np.float64)
    written = 0
    for c in range(columns.shape[0]):
        j = columns[c]
        for untouched in range(written, j):
            for k in range(n_classes):
                grad_t[untouched, k] = 0.0
        for k in range(n_classes):
            accumulated[k] = 0.0
        for q in range(starts[c], starts[c + 1]):
            i = rows[q]
            if partial and not taken[i]:
                continue
            x = float(values[q])
            for k in range(n_classes):
                accumulated[k] += x * residuals[i, k]
        for k in range(n_classes):
            grad_t[j, k] = accumulated[k]
        written = j + 1
    for untouched in range(written, grad_t.shape[0]):
        for k in range(n_classes):
            grad_t[untouched, k] = 0.0
    return loss
