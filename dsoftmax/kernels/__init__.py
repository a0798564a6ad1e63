"""Block kernels: what a worker runs over each block of rows to produce its sums.

``prepare_for(params, X)`` (or ``prepare(params, dtype)`` for dense blocks) lays the parameters
out once per evaluation; ``block_sums``, ``rows_sums`` and ``block_metrics`` then evaluate one
block (or its selected rows) at a time, with the meaning of :func:`dsoftmax.objective.block_sums`
and :func:`dsoftmax.metrics.block_metrics`. A block's ``X`` is a NumPy array (the dense kernel,
:mod:`.dense`) or a scipy.sparse CSR matrix (the sparse kernel, :mod:`.sparse`; for a block
held with its column form, :mod:`.sparse_columns`): the entry points below pick the kernel by
the type of ``X``. Pure NumPy and numba: no Dask, no I/O.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..objective import BlockMetrics, BlockSums, Params
from . import dense, sparse, sparse_columns
from .dense import FUSED_MAX_WEIGHTS, Prepared, compute_dtype, prepare, storage_dtypes
from .sparse import SparsePrepared, is_csr
from .sparse_columns import ColumnForm, column_form

__all__ = [
    "FUSED_MAX_WEIGHTS",
    "ColumnForm",
    "Prepared",
    "SparsePrepared",
    "block_metrics",
    "block_sums",
    "column_form",
    "compute_dtype",
    "is_csr",
    "prepare",
    "prepare_for",
    "rows_sums",
    "storage_dtypes",
]


def prepare_for(params: Params, X: Any) -> Prepared | SparsePrepared:
    """The preparation of ``params`` that the kernel of blocks like ``X`` reads: the sparse
    layout for scipy.sparse blocks, the dense one (:func:`prepare`) for NumPy blocks."""
    if is_csr(X):
        return sparse.prepare(params, X.dtype)
    return prepare(params, X.dtype)


def block_sums(
    prepared: Prepared | SparsePrepared,
    X: Any,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
    columns: ColumnForm | None = None,
) -> BlockSums:
    """:func:`dense.block_sums` or :func:`sparse.block_sums`, by the type of ``X``; with
    ``columns``, the column form of a sparse ``X``, :func:`sparse_columns.column_sums` (the
    same bits, faster)."""
    if columns is not None:
        return sparse_columns.column_sums(prepared, X, columns, labels, sample_weight, out=out)
    kernel = sparse if is_csr(X) else dense
    return kernel.block_sums(prepared, X, labels, sample_weight, out=out)


def rows_sums(
    prepared: Prepared | SparsePrepared,
    X: Any,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    rows: np.ndarray,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> BlockSums:
    """:func:`dense.rows_sums` or :func:`sparse.rows_sums`, by the type of ``X``."""
    kernel = sparse if is_csr(X) else dense
    return kernel.rows_sums(prepared, X, labels, sample_weight, rows, out=out)


def block_metrics(
    prepared: Prepared | SparsePrepared,
    X: Any,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> BlockMetrics:
    """:func:`dense.block_metrics` or :func:`sparse.block_metrics`, by the type of ``X``."""
    kernel = sparse if is_csr(X) else dense
    return kernel.block_metrics(prepared, X, labels, sample_weight, rows)
