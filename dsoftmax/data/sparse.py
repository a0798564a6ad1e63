"""Sparse features in memory: the one canonical CSR form, its value checks, and lazy arrays of
CSR blocks.

Every sparse ``X`` that dsoftmax holds is a scipy.sparse ``csr_matrix`` in canonical form:
``indptr``, ``indices`` and ``data`` contiguous, the column indices of every row strictly
increasing (sorted, no duplicates), values float32 or float64, indices int32 when they fit and
int64 otherwise. :func:`canonical_csr` turns any scipy.sparse matrix or array (any format) into
that form, once; :func:`csr_problems` is the value check of a block that did not come through it
(a block read from a store), run with the other value checks
(:func:`dsoftmax.data.block_stats`).

A Dask array of CSR blocks made here (:func:`blocked_csr`) or read from a sparse store carries
its :class:`CSRLayout` -- the non-zeros of every block -- in its graph, under a key of its own, so
that the engine knows the blocks' memory without reading them (:func:`block_nbytes`).

Only NumPy and scipy.sparse are imported: workers run the value checks.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import scipy.sparse
from dask.highlevelgraph import HighLevelGraph

from .format import rows_text

__all__ = [
    "CSRLayout",
    "block_nbytes",
    "blocked_csr",
    "canonical_csr",
    "csr_nbytes",
    "csr_problems",
    "empty_csr",
    "index_dtype",
    "is_sparse",
    "is_sparse_dask",
    "layout_of",
]

#: The largest value an int32 index holds.
INT32_MAX = np.iinfo(np.int32).max


@dataclass(frozen=True)
class CSRLayout:
    """What a lazy array of CSR blocks knows of its blocks without reading them (a dataclass,
    not a tuple, so that Dask keeps it in a graph as it is).

    Attributes
    ----------
    n_features : int
    block_nnz : tuple of int
        Stored non-zeros of each block, in block order.
    index_dtype : str
        The dtype of the blocks' indices (``"int32"`` or ``"int64"``).
    """

    n_features: int
    block_nnz: tuple[int, ...]
    index_dtype: str


def is_sparse(X: Any) -> bool:
    """Whether ``X`` is a scipy.sparse matrix or array, of any format."""
    return scipy.sparse.issparse(X)


def is_sparse_dask(X: Any) -> bool:
    """Whether ``X`` is a Dask array whose chunks are scipy.sparse matrices."""
    return isinstance(X, da.Array) and scipy.sparse.issparse(X._meta)


def index_dtype(n_features: int, nnz: int) -> np.dtype:
    """The index dtype of a CSR matrix of ``n_features`` columns and ``nnz`` non-zeros:
    int32 when every index and pointer fits, else int64."""
    return np.dtype(np.int32 if max(n_features, nnz) <= INT32_MAX else np.int64)


def empty_csr(n_features: int, dtype: Any) -> scipy.sparse.csr_matrix:
    """A CSR matrix of no rows: the ``meta`` of lazy arrays of CSR blocks."""
    return scipy.sparse.csr_matrix((0, n_features), dtype=dtype)


def _float_dtype(dtype: np.dtype) -> np.dtype:
    """float32 and float64 stay; every other number becomes float64, as scikit-learn's
    ``check_array(dtype=[float64, float32])`` converts."""
    if dtype in (np.float32, np.float64):
        return np.dtype(dtype)
    if dtype.kind in "biuf":
        return np.dtype(np.float64)
    raise TypeError(
        f"sparse X has dtype {dtype}; its values must be numbers. Convert them with "
        "X.astype(np.float32)."
    )


def canonical_csr(X: Any, dtype: Any = None) -> scipy.sparse.csr_matrix:
    """``X`` as a canonical ``csr_matrix`` (see the module docstring); ``X`` itself is never
    changed.

    Parameters
    ----------
    X : scipy.sparse matrix or array of shape (n_rows, n_features), any format
    dtype : numpy dtype, optional
        The values' dtype; default: float32 and float64 as they are, other numbers as float64.

    Returns
    -------
    scipy.sparse.csr_matrix
        Duplicate entries summed, indices sorted; the same object when ``X`` already is one in
        that form.
    """
    if not is_sparse(X):
        raise TypeError(f"expected a scipy.sparse matrix, got {type(X).__name__}.")
    if X.ndim != 2:
        raise ValueError(f"sparse X must be 2-D (n_samples, n_features), got shape {X.shape}.")
    target = _float_dtype(np.dtype(X.dtype)) if dtype is None else np.dtype(dtype)
    csr = X.tocsr()
    if not isinstance(csr, scipy.sparse.csr_matrix):
        csr = scipy.sparse.csr_matrix(csr)
    if csr.dtype != target:
        csr = csr.astype(target)
    if not csr.has_canonical_format:
        if csr is X or csr.data is getattr(X, "data", None):
            csr = csr.copy()
        csr.sum_duplicates()
    wanted = index_dtype(csr.shape[1], csr.nnz)
    if csr.indices.dtype != wanted or csr.indptr.dtype != wanted:
        csr = scipy.sparse.csr_matrix(
            (csr.data, csr.indices.astype(wanted), csr.indptr.astype(wanted)), shape=csr.shape
        )
    return _contiguous(csr)


def _contiguous(csr: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
    arrays = (csr.data, csr.indices, csr.indptr)
    if all(array.flags.c_contiguous and array.flags.aligned for array in arrays):
        return csr
    data, indices, indptr = (np.require(array, requirements=["C", "A"]) for array in arrays)
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=csr.shape)


def csr_nbytes(X: scipy.sparse.csr_matrix) -> int:
    """Bytes of the three arrays of a CSR matrix."""
    return int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)


def _first_row(indptr: np.ndarray, positions: np.ndarray) -> int:
    """The row that holds the first of the stored-value ``positions``."""
    return int(np.searchsorted(indptr, positions[0], side="right") - 1)


def csr_problems(X: Any, where: str, row_start: int) -> list[tuple[str, str]]:
    """The value problems of one block of CSR rows, as ``(array, detail)`` pairs.

    Checked, in order: the row pointers (``indptr`` from 0 to the stored values,
    non-decreasing); column indices within ``[0, n_features)``; indices strictly increasing
    within each row (sorted, no duplicates: the canonical form every writer of dsoftmax stores);
    finite values. Each detail names the first row concerned and the fix.

    Parameters
    ----------
    X : scipy.sparse CSR matrix
    where : str
        How messages name the block, e.g. ``"block 3 (rows 300 to 399)"``.
    row_start : int
        The dataset row number of the block's first row.
    """
    fix = "write the dataset again (write_dataset stores canonical CSR rows)"
    indptr, indices, values = X.indptr, X.indices, X.data
    n_rows, n_features = X.shape
    well_formed = (
        indptr.shape == (n_rows + 1,)
        and indices.shape == values.shape
        and indptr[0] == 0
        and indptr[-1] == len(indices)
        and not np.any(np.diff(indptr) < 0)
    )
    if not well_formed:
        return [
            (
                "X",
                f"has malformed row pointers in {where}: {len(indptr)} pointers for {n_rows} "
                f"rows and {len(indices)} stored values; the store is damaged: {fix}.",
            )
        ]
    problems = []
    outside = (indices < 0) | (indices >= n_features)
    if outside.any():
        first = np.flatnonzero(outside)
        problems.append(
            (
                "X",
                f"has {len(first)} column index(es) outside [0, {n_features}) in {where}, "
                f"first {int(indices[first[0]])} in row {row_start + _first_row(indptr, first)}; "
                f"{fix}.",
            )
        )
    # Within a row each index must exceed the one before; pairs across a row boundary are free.
    step_ok = np.diff(indices.astype(np.int64)) > 0
    row_boundaries = indptr[1:-1]
    step_ok[row_boundaries[(row_boundaries > 0) & (row_boundaries < len(indices))] - 1] = True
    if not step_ok.all():
        first = np.flatnonzero(~step_ok) + 1
        problems.append(
            (
                "X",
                f"has {len(first)} column index(es) not strictly increasing within their row "
                f"(unsorted or repeated) in {where}, first in row "
                f"{row_start + _first_row(indptr, first)}; {fix}.",
            )
        )
    finite = np.isfinite(values)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        problems.append(
            (
                "X",
                f"has {len(bad)} non-finite value(s) (NaN or inf) in {where}, first in row "
                f"{row_start + _first_row(indptr, bad)}; drop or impute those rows and write "
                "the dataset again.",
            )
        )
    return problems


# ---------------------------------------------------------------------------------------------
# Lazy arrays of CSR blocks
# ---------------------------------------------------------------------------------------------


def layout_key(name: str) -> str:
    """The graph key under which the array ``name`` of CSR blocks keeps its layout."""
    return f"{name}-layout"


def layout_of(X: da.Array) -> CSRLayout | None:
    """The :class:`CSRLayout` a lazy array of CSR blocks carries, or None (any other array,
    or one derived from it by a Dask operation)."""
    key = layout_key(X.name)
    graph = X.__dask_graph__()
    if key not in graph:
        return None
    layout = graph[key]
    return layout if isinstance(layout, CSRLayout) else None


def block_nbytes(X: da.Array) -> list[int] | None:
    """In-memory bytes of each CSR block of ``X`` (values, indices and row pointers), from its
    layout; None when ``X`` carries none."""
    layout = layout_of(X)
    if layout is None:
        return None
    value_bytes = np.dtype(X.dtype).itemsize
    index_bytes = np.dtype(layout.index_dtype).itemsize
    return [
        nnz * (value_bytes + index_bytes) + (rows + 1) * index_bytes
        for nnz, rows in zip(layout.block_nnz, X.chunks[0], strict=True)
    ]


def blocked_csr(X: scipy.sparse.csr_matrix, chunk_rows: int) -> da.Array:
    """A Dask array of the CSR blocks of ``chunk_rows`` rows of a canonical CSR matrix (the
    last block shorter), each block a graph literal, with its :class:`CSRLayout`."""
    n_rows, n_features = X.shape
    bounds = [*range(0, n_rows, chunk_rows), n_rows]
    blocks = [X[start:stop] for start, stop in itertools.pairwise(bounds)]
    digest = hashlib.sha256()
    for part in (X.indptr, X.indices, X.data):
        digest.update(np.ascontiguousarray(part).view(np.uint8).reshape(-1))
    name = f"dsoftmax-csr-{digest.hexdigest()[:16]}-{chunk_rows}"
    layout = CSRLayout(n_features, tuple(int(block.nnz) for block in blocks), str(X.indices.dtype))
    graph: dict[Any, Any] = {layout_key(name): layout}
    for index, block in enumerate(blocks):
        graph[(name, index, 0)] = _contiguous(block)
    return da.Array(
        HighLevelGraph.from_collections(name, graph, dependencies=()),
        name,
        chunks=(tuple(block.shape[0] for block in blocks), (n_features,)),
        meta=empty_csr(n_features, X.dtype),
    )


def where_text(block_index: int, row_start: int, n_rows: int) -> str:
    """``"block 3 (rows 300 to 399)"``: how value problems name a block."""
    return f"block {block_index} ({rows_text(row_start, n_rows)})"
