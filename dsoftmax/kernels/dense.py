"""The dense block kernel: loss/gradient sums and metrics of a block of rows, on one thread.

One call evaluates one block (or the selected rows of one block) with the weights prepared
once per evaluation (:func:`prepare`). Two paths compute the same sums (the math and the label
rules are those of :mod:`dsoftmax.objective`):

* ``"fused"`` (:mod:`.fused`): one compiled pass over the block, tile by tile, for models
  whose weights fit the cores' caches (``n_classes × n_features`` up to
  :data:`FUSED_MAX_WEIGHTS`);
* ``"blas"`` (:mod:`.wide`): the two products through BLAS on tiles of rows, the softmax
  compiled in between, for wide models where BLAS's blocking wins.

Storage dtypes: float64 (computes in float64), float32, float16 and bfloat16 (``ml_dtypes``;
these three compute in float32). Half-precision blocks are widened tile by tile as they are
read, never as a whole. The sums are float64. Every call gives the same bits for the same
prepared weights and rows: rows are processed in order, on the calling thread. X is read
C-contiguous (a strided X is copied first; the engine's blocks are contiguous already).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..objective import BlockMetrics, BlockSums, Params, labels_kind
from . import fused, wide

#: Largest ``n_classes × n_features`` the fused path takes; wider models use BLAS products.
FUSED_MAX_WEIGHTS = 64 * 1024


#: The storage dtypes NumPy has itself; bfloat16 comes from ``ml_dtypes`` when it is installed.
NATIVE_STORAGE_DTYPES = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16))


def storage_dtypes() -> tuple[np.dtype, ...]:
    """The dtypes X may have: float64, float32, float16, and bfloat16 when ``ml_dtypes`` is
    installed."""
    bfloat16 = _bfloat16()
    return NATIVE_STORAGE_DTYPES if bfloat16 is None else (*NATIVE_STORAGE_DTYPES, bfloat16)


def _bfloat16() -> np.dtype | None:
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def is_storage_dtype(dtype: np.dtype) -> bool:
    """Whether the kernel reads X stored as ``dtype``. Only a dtype named bfloat16 imports
    ``ml_dtypes`` (an import of most of a second), so float32 data never pays for it."""
    dtype = np.dtype(dtype)
    if dtype in NATIVE_STORAGE_DTYPES:
        return True
    return dtype.name == "bfloat16" and dtype == _bfloat16()


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype the products run in for X stored as ``dtype``: float64 stays float64, every
    narrower float computes in float32."""
    dtype = np.dtype(dtype)
    if not is_storage_dtype(dtype):
        names = ", ".join(str(d) for d in storage_dtypes())
        raise TypeError(
            f"X has dtype {dtype}; the block kernel reads {names}. Cast the data to float32."
        )
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


class Prepared(NamedTuple):
    """Parameters laid out for the kernel: built once per evaluation, reused for every block.

    Attributes
    ----------
    coef : ndarray of shape (n_padded, n_features)
        ``W`` in the compute dtype, C-contiguous; the fused path pads it with zero rows to a
        multiple of :data:`fused.CLASS_BLOCK` classes.
    intercept : ndarray of shape (n_padded,)
        ``b`` in the compute dtype (zeros without an intercept).
    n_classes : int
    storage : numpy dtype
        The dtype of the blocks this preparation reads.
    path : str
        ``"fused"`` or ``"blas"``.
    """

    coef: np.ndarray
    intercept: np.ndarray
    n_classes: int
    storage: np.dtype
    path: str

    @property
    def n_features(self) -> int:
        return self.coef.shape[1]


def prepare(params: Params, dtype: np.dtype, *, path: str | None = None) -> Prepared:
    """Lay out ``params`` for blocks stored as ``dtype``.

    Parameters
    ----------
    params : Params
        ``coef`` (n_classes, n_features), ``intercept`` (n_classes,) or None.
    dtype : numpy dtype
        The dtype of the blocks' X (see :func:`storage_dtypes`).
    path : {"fused", "blas"}, optional
        Force a path; by default ``"fused"`` when ``n_classes × n_features`` is at most
        :data:`FUSED_MAX_WEIGHTS`.

    Returns
    -------
    Prepared
    """
    storage = np.dtype(dtype)
    compute = compute_dtype(storage)
    coef = np.asarray(params.coef)
    if coef.ndim != 2 or coef.shape[0] < 1 or coef.shape[1] < 1:
        raise ValueError(f"coef must have shape (n_classes, n_features), got {coef.shape}.")
    n_classes, n_features = coef.shape
    if path is None:
        path = "fused" if n_classes * n_features <= FUSED_MAX_WEIGHTS else "blas"
    if path not in ("fused", "blas"):
        raise ValueError(f"path must be 'fused' or 'blas', got {path!r}.")
    n_padded = n_classes
    if path == "fused":
        n_padded = -(-n_classes // fused.CLASS_BLOCK) * fused.CLASS_BLOCK
    padded_coef = np.zeros((n_padded, n_features), dtype=compute)
    padded_coef[:n_classes] = coef
    padded_intercept = np.zeros(n_padded, dtype=compute)
    if params.intercept is not None:
        padded_intercept[:n_classes] = params.intercept
    return Prepared(padded_coef, padded_intercept, n_classes, storage, path)


class _Rows(NamedTuple):
    """The evaluated rows' labels and weights, in the layout and the order of arguments the
    compiled code reads."""

    ids: np.ndarray
    targets: np.ndarray
    use_targets: bool
    weights: np.ndarray
    weighted: bool


def _checked_block(prepared: Prepared, X: np.ndarray) -> np.ndarray:
    if not isinstance(X, np.ndarray) or X.ndim != 2:
        raise ValueError(f"X must be a 2-D NumPy array, got {type(X).__name__} {np.shape(X)}.")
    if X.dtype != prepared.storage:
        raise TypeError(
            f"X has dtype {X.dtype} but the kernel was prepared for {prepared.storage}; "
            "call prepare(params, X.dtype)."
        )
    if X.shape[1] != prepared.n_features:
        raise ValueError(f"X has {X.shape[1]} features but the model has {prepared.n_features}.")
    return np.ascontiguousarray(X)


def _row_data(
    prepared: Prepared, labels: np.ndarray, sample_weight: np.ndarray | None, n_rows: int
) -> _Rows:
    labels = np.asarray(labels)
    kind = labels_kind(labels, prepared.n_classes, n_rows)
    compute = prepared.coef.dtype
    if kind == "ids":
        ids = np.ascontiguousarray(labels, dtype=np.intp)
        if n_rows and (ids.min() < 0 or ids.max() >= prepared.n_classes):
            raise ValueError(
                f"class ids must lie in [0, {prepared.n_classes}), got values from "
                f"{ids.min()} to {ids.max()}."
            )
        targets = np.zeros((0, prepared.n_classes), dtype=compute)
    else:
        ids = np.zeros(0, dtype=np.intp)
        targets = np.ascontiguousarray(labels, dtype=compute)
    if sample_weight is None:
        weights = np.zeros(0)
    else:
        weights = np.ascontiguousarray(sample_weight, dtype=np.float64)
        if weights.shape != (n_rows,):
            raise ValueError(f"sample_weight must have shape ({n_rows},), got {weights.shape}.")
    return _Rows(ids, targets, kind == "rows", weights, sample_weight is not None)


def _checked_rows(rows: np.ndarray, n_rows: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
        raise ValueError(
            f"rows must be a 1-D array of integer row indices, got {rows.shape} {rows.dtype}."
        )
    if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
        raise ValueError(
            f"rows must lie in [0, {n_rows}) (the block's rows), got values from {rows.min()} "
            f"to {rows.max()}."
        )
    return np.ascontiguousarray(rows, dtype=np.int64)


def _fused_inputs(prepared: Prepared, X: np.ndarray, rows: np.ndarray | None) -> tuple:
    """The fused kernels' leading arguments: what X holds (floats as they are, 16-bit floats
    as their bit patterns), the rows to gather (if any), and the prepared weights."""
    if X.dtype == np.float16:
        bits, source = fused.FLOAT16_BITS, X.view(np.uint16)
    elif X.dtype.itemsize == 2:  # bfloat16
        bits, source = fused.BFLOAT16_BITS, X.view(np.uint16)
    else:
        bits, source = fused.NATIVE, X
    gather = rows is not None
    rows = rows if gather else np.zeros(0, np.int64)
    return source, rows, gather, bits, prepared.coef, prepared.intercept, prepared.n_classes


def block_sums(
    prepared: Prepared,
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> BlockSums:
    """Loss and gradient sums over a whole block, as :func:`dsoftmax.objective.block_sums`.

    Parameters
    ----------
    prepared : Prepared
        From :func:`prepare` for X's dtype.
    X : ndarray of shape (n_rows, n_features)
    labels : ndarray of shape (n_rows,) or (n_rows, n_classes)
        Integer class ids, or one-hot / probability rows (a row summing to ``s`` weighs its
        log-normalizer by ``s``; see :mod:`dsoftmax.objective`).
    sample_weight : ndarray of shape (n_rows,), optional
    out : tuple of two ndarrays, optional
        float64 arrays of shapes ``(n_padded, n_features)`` and ``(n_padded,)``
        (``prepared.coef.shape`` and its first axis) to compute the gradient sums into: the
        returned sums are then views of them, valid until they are used again (a caller that
        adds many blocks' sums one at a time spares an allocation per block).

    Returns
    -------
    BlockSums
        float64 sums.
    """
    X = _checked_block(prepared, X)
    data = _row_data(prepared, labels, sample_weight, X.shape[0])
    return _sums(prepared, X, None, data, out)


def rows_sums(
    prepared: Prepared,
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    rows: np.ndarray,
    *,
    out: tuple[np.ndarray, np.ndarray] | None = None,
) -> BlockSums:
    """The sums of the selected rows of a block: bit for bit
    ``block_sums(prepared, X[rows], labels, sample_weight)``, without gathering X's rows.

    Parameters
    ----------
    prepared : Prepared
    X : ndarray of shape (n_rows, n_features)
        The whole block.
    labels : ndarray of shape (n_selected,) or (n_selected, n_classes)
        The labels of the selected rows, in the order of ``rows``.
    sample_weight : ndarray of shape (n_selected,) or None
        The weights of the selected rows.
    rows : ndarray of int, shape (n_selected,)
        Local row indices (sorted, as a minibatch's rows within a block are).
    out : tuple of two ndarrays, optional
        float64 arrays of shapes ``(n_padded, n_features)`` and ``(n_padded,)``
        (``prepared.coef.shape`` and its first axis) to compute the gradient sums into: the
        returned sums are then views of them, valid until they are used again (a caller that
        adds many blocks' sums one at a time spares an allocation per block).

    Returns
    -------
    BlockSums
    """
    X = _checked_block(prepared, X)
    rows = _checked_rows(rows, X.shape[0])
    data = _row_data(prepared, np.asarray(labels), sample_weight, len(rows))
    if prepared.path == "blas":
        return _sums(prepared, X[rows], None, data, out)
    return _sums(prepared, X, rows, data, out)


def _sums(
    prepared: Prepared,
    X: np.ndarray,
    rows: np.ndarray | None,
    data: _Rows,
    out: tuple[np.ndarray, np.ndarray] | None,
) -> BlockSums:
    n_rows = X.shape[0] if rows is None else len(rows)
    n_classes = prepared.n_classes
    if out is None:
        grad_coef = np.zeros(prepared.coef.shape)
        grad_intercept = np.zeros(prepared.coef.shape[0])
    else:
        grad_coef, grad_intercept = out
        if grad_coef.shape != prepared.coef.shape or grad_intercept.shape != grad_coef.shape[:1]:
            raise ValueError(
                f"out must hold arrays of shapes {prepared.coef.shape} and "
                f"{prepared.coef.shape[:1]}, got {grad_coef.shape} and {grad_intercept.shape}."
            )
        grad_coef.fill(0.0)
        grad_intercept.fill(0.0)
    if prepared.path == "blas":
        loss = wide.block_sums(prepared, X, data, grad_coef, grad_intercept)
    else:
        loss = fused.block_sums_kernel(
            *_fused_inputs(prepared, X, rows),
            tuple(data),
            grad_coef,
            grad_intercept,
            (0,) * fused.CLASS_BLOCK,
        )
    weight_sum = float(np.sum(data.weights)) if data.weighted else float(n_rows)
    return BlockSums(float(loss), grad_coef[:n_classes], grad_intercept[:n_classes], weight_sum)


def block_metrics(
    prepared: Prepared,
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
    rows: np.ndarray | None = None,
) -> BlockMetrics:
    """Weighted loss sum, weighted count of correct predictions and weight sum of a block
    (its selected ``rows`` when given, ``labels`` and ``sample_weight`` then being those of the
    selected rows), as :func:`dsoftmax.metrics.block_metrics`.

    A prediction is the first largest logit, as ``predict`` takes it; for probability rows it
    is correct when it is the row's first largest entry.
    """
    X = _checked_block(prepared, X)
    if rows is not None:
        rows = _checked_rows(rows, X.shape[0])
        if prepared.path == "blas":
            X, rows = X[rows], None
    n_rows = X.shape[0] if rows is None else len(rows)
    data = _row_data(prepared, labels, sample_weight, n_rows)
    if prepared.path == "blas":
        loss, correct = wide.block_metrics(prepared, X, data)
    else:
        loss, correct = fused.block_metrics_kernel(*_fused_inputs(prepared, X, rows), tuple(data))
    weight_sum = float(np.sum(data.weights)) if data.weighted else float(n_rows)
    return BlockMetrics(float(loss), float(correct), weight_sum)
