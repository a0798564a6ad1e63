r"""The objective of L2-regularized multinomial logistic (softmax) regression, in pure NumPy.

Notation (the derivation is in ``docs/derivation.md``)
------------------------------------------------------
``X``  : ndarray of shape (n_samples, n_features), float32 or float64.
``y``  : ndarray of shape (n_samples,), integer class ids in ``[0, n_classes)``, **or**
``Y``  : ndarray of shape (n_samples, n_classes), one-hot or probability rows.
``w``  : ndarray of shape (n_samples,), optional non-negative sample weights (default 1).
``W``  : ndarray of shape (n_classes, n_features), one row ``w_k`` per class ("coef").
``b``  : ndarray of shape (n_classes,), the intercept, **not** penalized.

.. math::

    \Phi = X W^\top + b,\qquad P = \operatorname{softmax}(\Phi)\ \text{row-wise},

    J(W, b) = -\frac{1}{S}\sum_i w_i \sum_k Y_{ik}\log P_{ik} + \lambda \lVert W\rVert_F^2,
    \qquad S = \sum_i w_i\ (= N \text{ without weights}),

    \nabla_W J = \frac{1}{S} T^\top X + 2\lambda W,\qquad
    \nabla_b J = \frac{1}{S}\sum_i T_i,\qquad T_{ik} = w_i\,(P_{ik} - Y_{ik}).

The penalty covers every row of ``W``; the intercept is unpenalized. scikit-learn's
``LogisticRegression(C=C)`` minimizes the same function with ``λ = 1 / (2·C·S)``; Spark MLlib's
``regParam`` (with ``elasticNetParam=0``) is ``λ = regParam / 2``.

Data-parallel shape
-------------------
:func:`block_sums` returns *sums*, never means, for one block of rows: the weighted loss sum,
``Tᵀ X_b``, ``Σ T_b`` and ``S_b``. Sums of any split of the rows add up to the sums of the
whole (:func:`add_sums`), so uneven blocks weigh correctly; :func:`finalize` divides by the
global ``S`` and adds ``2λW`` exactly once, after the reduce.

Precision: the matrix products run in the dtype of ``X`` (float32 data stays float32, for
speed); every accumulator returned (:class:`BlockSums`) is float64.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

__all__ = [
    "BlockMetrics",
    "BlockReport",
    "BlockSums",
    "Params",
    "PreparedParams",
    "add_sums",
    "block_sums",
    "decision_function",
    "finalize",
    "iter_segment_sums",
    "l2_from_sklearn_C",
    "l2_from_spark_reg_param",
    "labels_kind",
    "log_softmax",
    "loss_and_grad",
    "prepare_params",
    "segment_sums",
    "softmax",
    "sum_blocks",
    "work_array",
]

#: Rows per inner sub-block: big enough that BLAS dominates, small enough that the
#: (n_classes × rows) temporaries stay in cache.
SUB_BLOCK_ROWS = 16384


class Params(NamedTuple):
    """Model parameters.

    Attributes
    ----------
    coef : ndarray of shape (n_classes, n_features)
        ``W``, one row per class.
    intercept : ndarray of shape (n_classes,) or None
        ``b``; None when the model has no intercept.
    """

    coef: np.ndarray
    intercept: np.ndarray | None


class BlockSums(NamedTuple):
    """Partial sums of one block of rows; add them with :func:`add_sums`.

    Attributes
    ----------
    loss_sum : float
        ``-Σ_i w_i Σ_k Y_ik log P_ik`` over the block.
    grad_coef_sum : ndarray of shape (n_classes, n_features), float64
        ``T_bᵀ X_b``.
    grad_intercept_sum : ndarray of shape (n_classes,), float64
        ``Σ_i T_i`` over the block.
    weight_sum : float
        ``Σ_i w_i`` (the row count without weights).
    """

    loss_sum: float
    grad_coef_sum: np.ndarray
    grad_intercept_sum: np.ndarray
    weight_sum: float


class BlockMetrics(NamedTuple):
    """Evaluation sums of one block of rows; add them with :func:`dsoftmax.metrics.add_metrics`.

    Attributes
    ----------
    loss_sum : float
        ``Σ_i w_i · cross-entropy_i`` (no penalty).
    correct_sum : float
        ``Σ_i w_i`` over the rows whose most probable class is their label (for probability
        rows: their argmax).
    weight_sum : float
        ``Σ_i w_i``.
    """

    loss_sum: float
    correct_sum: float
    weight_sum: float


class BlockReport(NamedTuple):
    """What one block of rows contributes to an evaluation report; add with
    :func:`dsoftmax.metrics.add_reports`.

    Attributes
    ----------
    loss_sum : float
        ``Σ_i w_i · cross-entropy_i`` (no penalty).
    weight_sum : float
        ``Σ_i w_i``.
    confusion : ndarray of shape (n_classes, n_classes), float64
        Weighted counts, true classes by rows and predicted classes by columns.
    """

    loss_sum: float
    weight_sum: float
    confusion: np.ndarray


def l2_from_sklearn_C(C: float, n_samples: float) -> float:  # noqa: N802 - scikit-learn's name
    """Convert scikit-learn's ``C`` to this package's ``λ``: ``λ = 1 / (2·C·n_samples)``.

    ``n_samples`` is the sum of the sample weights when weights are used.
    """
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C!r}.")
    if not n_samples > 0:
        raise ValueError(f"n_samples must be > 0, got {n_samples!r}.")
    return 1.0 / (2.0 * C * n_samples)


def l2_from_spark_reg_param(reg_param: float) -> float:
    """Convert Spark MLlib's ``regParam`` (``elasticNetParam=0``) to ``λ = regParam / 2``."""
    if not reg_param >= 0:
        raise ValueError(f"regParam must be >= 0, got {reg_param!r}.")
    return reg_param / 2.0


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stable ``log softmax`` along ``axis``: ``φ - max φ - log Σ exp(φ - max φ)``."""
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stable softmax along ``axis`` (max-shifted, so logits of ±1e4 stay finite)."""
    shifted = np.exp(logits - np.max(logits, axis=axis, keepdims=True))
    shifted /= np.sum(shifted, axis=axis, keepdims=True)
    return shifted


def decision_function(params: Params | PreparedParams, X: np.ndarray) -> np.ndarray:
    """Logits ``Φ = X Wᵀ + b`` of shape (n_samples, n_classes), in the dtype of ``X``.

    The product is the one the block sums and metrics use (:func:`class_major_logits`), so a
    prediction and the accuracy of an evaluation agree on every row, ties included.
    Half-precision features compute in float32.
    """
    if X.dtype.itemsize < 4:
        X = X.astype(np.float32)
    return np.ascontiguousarray(class_major_logits(params, X).T)


#: The classes are padded with zero rows of W to a multiple of this for the logits' product:
#: OpenBLAS multiplies (rows × d)·(d × 16) several times faster than (rows × d)·(d × 10) or
#: (10 × d)·(d × rows).
LOGIT_CLASS_MULTIPLE = 16


class PreparedParams(NamedTuple):
    """Parameters laid out for the logits' product, in the dtype of the data: built once per
    evaluation (:func:`prepare_params`) and used for every block of it.

    Attributes
    ----------
    padded_coef : ndarray of shape (n_padded, n_features)
        ``W`` with zero rows appended up to a multiple of :data:`LOGIT_CLASS_MULTIPLE`.
    intercept : ndarray of shape (n_classes, 1) or None
        ``b`` as a column, for class-major logits.
    n_classes : int
    """

    padded_coef: np.ndarray
    intercept: np.ndarray | None
    n_classes: int


def prepare_params(params: Params | PreparedParams, dtype: np.dtype) -> PreparedParams:
    """``params`` laid out and cast for data of ``dtype`` (prepared ones pass through when
    their dtype matches)."""
    dtype = np.dtype(dtype)
    if isinstance(params, PreparedParams):
        if params.padded_coef.dtype == dtype:
            return params
        return PreparedParams(
            params.padded_coef.astype(dtype),
            None if params.intercept is None else params.intercept.astype(dtype),
            params.n_classes,
        )
    n_classes, n_features = params.coef.shape
    n_padded = -(-n_classes // LOGIT_CLASS_MULTIPLE) * LOGIT_CLASS_MULTIPLE
    padded = np.zeros((n_padded, n_features), dtype=dtype)
    padded[:n_classes] = params.coef
    intercept = (
        None if params.intercept is None else np.asarray(params.intercept, dtype=dtype)[:, None]
    )
    return PreparedParams(padded, intercept, n_classes)


def class_major_logits(
    params: Params | PreparedParams,
    X: np.ndarray,
    *,
    scratch: bool = False,
    bounds: np.ndarray | None = None,
) -> np.ndarray:
    """Logits laid out as ``W Xᵀ + b`` (n_classes, rows): the softmax then reduces over
    contiguous rows of length ``rows`` instead of over tiny rows of length n_classes.

    With ``scratch=True`` the result lives in this thread's work arrays (see
    :func:`work_array`): valid until the next call, for callers that consume it at once.
    With ``bounds``, the product runs segment by segment (``X[bounds[j]:bounds[j + 1]]``),
    so that each segment's logits are those of the segment on its own, bit for bit.
    """
    prepared = prepare_params(params, X.dtype)
    n_classes, n_rows = prepared.n_classes, X.shape[0]
    padded = prepared.padded_coef
    shape = (n_rows, padded.shape[0])
    if scratch and n_rows * padded.shape[0] * X.dtype.itemsize <= SCRATCH_BYTES:
        row_major = work_array("row_major_logits", shape, X.dtype)
        logits = work_array("logits", (n_classes, n_rows), X.dtype)
    else:
        row_major = np.empty(shape, dtype=X.dtype)
        logits = np.empty((n_classes, n_rows), dtype=X.dtype)
    if bounds is None:
        np.matmul(X, padded.T, out=row_major)
    else:
        for start, stop in itertools.pairwise(bounds):
            np.matmul(X[start:stop], padded.T, out=row_major[start:stop])
    np.copyto(logits, row_major[:, :n_classes].T)
    if prepared.intercept is not None:
        logits += prepared.intercept
    return logits


_scratch = threading.local()

#: Largest work array kept per thread; wider logits (many classes) are allocated afresh, where
#: the products cost far more than the page faults.
SCRATCH_BYTES = 4 * 1024 * 1024


def work_array(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A work array of this thread, reused from call to call: valid until the next call with
    the same ``name`` in the same thread.

    Dask starts its workers with ``MALLOC_TRIM_THRESHOLD_`` set, which turns every temporary
    over 128 KiB into a fresh ``mmap`` and its first touch into page faults, a large part of a
    step's cost when it happens for every block. Reusing the largest work arrays avoids it.

    Parameters
    ----------
    name : str
        Which work array; one per name and dtype per thread.
    shape : tuple of int
    dtype : numpy dtype

    Returns
    -------
    ndarray
        Uninitialized, of ``shape`` and ``dtype``; it grows when a larger one is asked for.
    """
    arrays = getattr(_scratch, "arrays", None)
    if arrays is None:
        arrays = _scratch.arrays = {}
    size = int(np.prod(shape))
    key = (name, np.dtype(dtype))
    buffer = arrays.get(key)
    if buffer is None or buffer.size < size:
        buffer = arrays[key] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)


def labels_kind(labels: np.ndarray, n_classes: int, n_rows: int) -> str:
    """``"ids"`` for class ids of shape (n_rows,), ``"rows"`` for probability rows of shape
    (n_rows, n_classes); anything else is refused, saying which shapes are allowed."""
    if labels.ndim == 1 and labels.shape[0] == n_rows:
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(
                f"class-id labels must be integers, got dtype {labels.dtype}; "
                "pass one-hot or probability rows as a 2-D float array."
            )
        return "ids"
    if labels.ndim == 2 and labels.shape == (n_rows, n_classes):
        return "rows"
    raise ValueError(
        f"labels must have shape ({n_rows},) (class ids) or ({n_rows}, {n_classes}) "
        f"(one-hot/probability rows), got {labels.shape}."
    )


def _iter_segment_sums(
    params: PreparedParams,
    X: np.ndarray,
    labels: np.ndarray,
    kind: str,
    sample_weight: np.ndarray | None,
    bounds: np.ndarray,
    product: np.ndarray | None,
) -> Iterator[BlockSums]:
    """The sums of each segment ``[bounds[j], bounds[j + 1])`` of one sub-block's rows, one
    after the other; with ``product`` (n_classes, n_features) in X's dtype, every segment's
    gradient sum is computed into it, in X's dtype (else a new float64 array each).

    Everything (n_classes, rows) is class-major. The row-wise work runs once over all the
    segments (few NumPy calls for many small segments); the products and sums that reduce over
    rows run per segment, so each segment's sums are those of the segment alone, bit for bit.
    """
    n_rows = X.shape[0]
    if n_rows == 1:
        # NumPy adds the classes of a lone row pairwise, but those of a row among others in
        # order: a zero row beside it gives every row the same rounding, wherever it lies.
        weights = None if sample_weight is None else np.append(sample_weight, 0)
        padded = _iter_segment_sums(
            params,
            np.concatenate([X, np.zeros_like(X)]),
            np.concatenate([labels, np.zeros_like(labels)]),
            kind,
            weights,
            np.append(bounds, 2),
            product,
        )
        yield from itertools.islice(padded, len(bounds) - 1)
        return
    shifted = class_major_logits(params, X, scratch=True, bounds=bounds)
    shifted -= shifted.max(axis=0)
    if kind == "ids":
        # Flat indexing picks Φ_{y_i, i} without building a one-hot matrix.
        flat_target = labels.astype(np.intp) * n_rows + np.arange(n_rows)
        target_logit = shifted.ravel()[flat_target]
    else:
        target_rows = labels.T.astype(X.dtype, copy=False)
        target_logit = np.einsum("ki,ki->i", target_rows, shifted)
    probs = np.exp(shifted, out=shifted)
    normalizer = probs.sum(axis=0)
    probs /= normalizer
    log_normalizer = np.log(normalizer)
    if kind == "ids":
        row_loss = log_normalizer - target_logit
        probs.ravel()[flat_target] -= 1
    else:
        # A row summing to s_i != 1 weighs its log-normalizer by s_i, so its residual is
        # s_i P_i - Y_i (docs/derivation.md); one-hot and probability rows have s_i = 1.
        target_sum = target_rows.sum(axis=0)
        row_loss = target_sum * log_normalizer - target_logit
        probs *= target_sum
        probs -= target_rows
    residual = probs  # T_b transposed: (n_classes, rows)
    if sample_weight is not None:
        residual *= sample_weight.astype(X.dtype, copy=False)
    # A whole-width slice of the contiguous residual is itself: no copy for a single segment.
    for start, stop in itertools.pairwise(bounds):
        yield _reduce_rows(
            np.ascontiguousarray(residual[:, start:stop]),
            row_loss[start:stop],
            X[start:stop],
            None if sample_weight is None else sample_weight[start:stop],
            product,
        )


def _reduce_rows(
    residual: np.ndarray,
    row_loss: np.ndarray,
    X: np.ndarray,
    sample_weight: np.ndarray | None,
    product: np.ndarray | None,
) -> BlockSums:
    """A segment's sums from its class-major residual and per-row losses; the gradient sum
    into ``product`` (X's dtype) when given, else a new float64 array."""
    if sample_weight is None:
        weight_sum = float(X.shape[0])
        loss_sum = float(np.sum(row_loss, dtype=np.float64))
    else:
        weight_sum = float(np.sum(sample_weight, dtype=np.float64))
        loss_sum = float(np.dot(row_loss.astype(np.float64), sample_weight.astype(np.float64)))
    return BlockSums(
        loss_sum=loss_sum,
        grad_coef_sum=(
            (residual @ X).astype(np.float64)
            if product is None
            else np.matmul(residual, X, out=product)
        ),
        grad_intercept_sum=residual.sum(axis=1, dtype=np.float64),
        weight_sum=weight_sum,
    )


def block_sums(
    params: Params | PreparedParams,
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
    *,
    sub_block_rows: int = SUB_BLOCK_ROWS,
) -> BlockSums:
    """Loss and gradient *sums* over one block of rows.

    Parameters
    ----------
    params : Params or PreparedParams
        ``coef`` of shape (n_classes, n_features) and optional ``intercept`` (n_classes,), or
        the same prepared once for a whole evaluation (:func:`prepare_params`).
    X : ndarray of shape (n_rows, n_features)
        float32 or float64; the matrix products run in this dtype.
    labels : ndarray of shape (n_rows,) or (n_rows, n_classes)
        Integer class ids, or one-hot / probability rows.
    sample_weight : ndarray of shape (n_rows,), optional
        Non-negative row weights; None means all ones.
    sub_block_rows : int
        Rows per inner pass; results do not depend on it beyond float rounding.

    Returns
    -------
    BlockSums
        float64 sums; divide and regularize once, after adding blocks, with :func:`finalize`.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.eye(3)
    >>> params = Params(np.zeros((2, 3)), np.zeros(2))
    >>> s = block_sums(params, X, np.array([0, 1, 1]))
    >>> round(s.loss_sum / s.weight_sum, 6)  # log(2): uniform over two classes
    0.693147
    """
    prepared = prepare_params(params, X.dtype)
    n_classes = prepared.n_classes
    kind = labels_kind(labels, n_classes, X.shape[0])
    total = empty_sums(n_classes, X.shape[1])
    for start in range(0, X.shape[0], sub_block_rows):
        rows = slice(start, start + sub_block_rows)
        weights = None if sample_weight is None else sample_weight[rows]
        sub_block = X[rows]
        whole = np.array([0, sub_block.shape[0]])
        (sums,) = _iter_segment_sums(
            prepared, sub_block, labels[rows], kind, weights, whole, None
        )
        total = add_sums(total, sums)
    return total


def segment_sums(
    params: Params | PreparedParams,
    X: np.ndarray,
    labels: np.ndarray,
    bounds: np.ndarray,
    sample_weight: np.ndarray | None = None,
) -> list[BlockSums]:
    """Loss and gradient sums of each segment of rows, in one pass over all of them.

    For many small blocks at once (a minibatch gathered from several blocks): the row-wise work
    runs once, with far fewer NumPy calls than one :func:`block_sums` per segment.

    Parameters
    ----------
    params : Params
    X : ndarray of shape (n_rows, n_features)
    labels : ndarray of shape (n_rows,) or (n_rows, n_classes)
    bounds : ndarray of int, shape (n_segments + 1,)
        Non-decreasing, from 0 to ``n_rows``: segment ``j`` is rows
        ``bounds[j]:bounds[j + 1]``.
    sample_weight : ndarray of shape (n_rows,), optional

    Returns
    -------
    list of BlockSums
        One per segment; each equals ``block_sums`` of that segment alone bit for bit when
        the segment has at most :data:`SUB_BLOCK_ROWS` rows (a longer one would be split
        there).
    """
    prepared = prepare_params(params, X.dtype)
    kind, bounds = _checked_segments(prepared, X, labels, bounds)
    return list(_iter_segment_sums(prepared, X, labels, kind, sample_weight, bounds, None))


def iter_segment_sums(
    params: Params | PreparedParams,
    X: np.ndarray,
    labels: np.ndarray,
    bounds: np.ndarray,
    sample_weight: np.ndarray | None = None,
) -> Iterator[BlockSums]:
    """:func:`segment_sums` one segment at a time, each gradient sum in a work array.

    Each item's ``grad_coef_sum`` is in X's dtype, in this thread's work array (see
    :func:`work_array`), overwritten by the next item: add it into a float64 total before
    taking the next (float32 → float64 is exact, so the total has the bits of adding
    :func:`segment_sums`' items). A wide model's gradient sums are megabytes each; computing
    them into one array spares a fresh allocation (page faults under Dask) per segment.

    Parameters and the sums are those of :func:`segment_sums`.
    """
    prepared = prepare_params(params, X.dtype)
    kind, bounds = _checked_segments(prepared, X, labels, bounds)
    product = work_array("segment_product", (prepared.n_classes, X.shape[1]), X.dtype)
    return _iter_segment_sums(prepared, X, labels, kind, sample_weight, bounds, product)


def _checked_segments(
    params: PreparedParams, X: np.ndarray, labels: np.ndarray, bounds: np.ndarray
) -> tuple[str, np.ndarray]:
    """The labels' kind and the bounds as an array, after checking them."""
    bounds = np.asarray(bounds, dtype=np.intp)
    if bounds.ndim != 1 or len(bounds) < 2 or bounds[0] != 0 or bounds[-1] != X.shape[0]:
        raise ValueError(
            f"bounds must run from 0 to the {X.shape[0]} rows of X, got {bounds.tolist()}."
        )
    if np.any(np.diff(bounds) < 0):
        raise ValueError(f"bounds must be non-decreasing, got {bounds.tolist()}.")
    return labels_kind(labels, params.n_classes, X.shape[0]), bounds


def empty_sums(n_classes: int, n_features: int) -> BlockSums:
    """The zero of :func:`add_sums`."""
    return BlockSums(0.0, np.zeros((n_classes, n_features)), np.zeros(n_classes), 0.0)


def add_sums(left: BlockSums, right: BlockSums) -> BlockSums:
    """Add two :class:`BlockSums` (float64)."""
    return BlockSums(
        left.loss_sum + right.loss_sum,
        left.grad_coef_sum + right.grad_coef_sum,
        left.grad_intercept_sum + right.grad_intercept_sum,
        left.weight_sum + right.weight_sum,
    )


def own_sums(sums: BlockSums) -> BlockSums:
    """A float64 copy of ``sums``, to add into in place (:func:`add_sums_into`)."""
    return BlockSums(
        sums.loss_sum,
        np.array(sums.grad_coef_sum, dtype=np.float64),
        np.array(sums.grad_intercept_sum, dtype=np.float64),
        sums.weight_sum,
    )


def add_sums_into(total: BlockSums, part: BlockSums) -> BlockSums:
    """``add_sums(total, part)`` into ``total``'s arrays (which the caller owns, e.g. from
    :func:`own_sums`): the same bits, no new array. ``part`` may hold float32 gradients."""
    np.add(total.grad_coef_sum, part.grad_coef_sum, out=total.grad_coef_sum)
    np.add(total.grad_intercept_sum, part.grad_intercept_sum, out=total.grad_intercept_sum)
    return total._replace(
        loss_sum=total.loss_sum + part.loss_sum, weight_sum=total.weight_sum + part.weight_sum
    )


def sum_blocks(parts: list[BlockSums]) -> BlockSums:
    """Add a non-empty list of sums left to right (a fixed order, so results are reproducible).

    The first addition makes the total; float64 totals take the next parts in place
    (:func:`add_sums_into`): the same bits as :func:`add_sums`, with one new model-sized array
    in all; the parts may be read-only (views of a received message).
    """
    if not parts:
        raise ValueError("sum_blocks needs at least one BlockSums.")
    if len(parts) == 1:
        return parts[0]
    total = add_sums(parts[0], parts[1])
    for part in parts[2:]:
        in_place = total.grad_coef_sum.dtype == np.float64  # float32 + float32 stays float32
        total = add_sums_into(total, part) if in_place else add_sums(total, part)
    return total


#: Bytes of weights per slice of :func:`finalize`'s gradient: a slice's temporaries stay in cache.
FINALIZE_SLICE_BYTES = 1 << 18


def _scaled_plus_penalty(
    grad_sum: np.ndarray, scale: float, coef: np.ndarray, penalty: float
) -> np.ndarray:
    """``grad_sum · scale + penalty · coef`` (each product rounded, then their sum), in ``coef``'s
    layout whatever ``grad_sum``'s (a sparse kernel's sums are Fortran-ordered), a slice of
    features at a time: one pass over the three arrays and no model-sized temporary, which for a
    model of millions of weights is most of the cost."""
    out = np.empty_like(coef)
    step = max(1, FINALIZE_SLICE_BYTES // (out.itemsize * max(1, out.shape[0])))
    for lo in range(0, out.shape[1], step):
        part = out[:, lo : lo + step]
        np.multiply(grad_sum[:, lo : lo + step], scale, out=part)
        part += penalty * coef[:, lo : lo + step]
    return out


def finalize(sums: BlockSums, params: Params, l2: float) -> tuple[float, Params]:
    """Turn reduced sums into the objective and its gradient.

    Parameters
    ----------
    sums : BlockSums
        Sums over every row that takes part (all rows, or one minibatch).
    params : Params
        The parameters the sums were computed at.
    l2 : float
        ``λ`` in ``λ ‖W‖²_F``.

    Returns
    -------
    loss : float
        ``loss_sum / S + λ ‖W‖²_F``.
    grad : Params
        ``(grad_coef_sum / S + 2λW, grad_intercept_sum / S)`` in float64; the intercept
        gradient is None when ``params.intercept`` is None.
    """
    if not sums.weight_sum > 0:
        raise ValueError(
            f"the total sample weight is {sums.weight_sum}; at least one row needs a "
            "positive weight."
        )
    coef = np.asarray(params.coef, dtype=np.float64)
    scale = 1.0 / sums.weight_sum
    loss = sums.loss_sum * scale + l2 * float(np.vdot(coef, coef))
    grad_coef = _scaled_plus_penalty(sums.grad_coef_sum, scale, coef, 2.0 * l2)
    grad_intercept = None if params.intercept is None else sums.grad_intercept_sum * scale
    return loss, Params(grad_coef, grad_intercept)


def loss_and_grad(
    params: Params,
    X: np.ndarray,
    labels: np.ndarray,
    l2: float,
    sample_weight: np.ndarray | None = None,
) -> tuple[float, Params]:
    """Single-machine reference: the objective and its gradient over all of ``X``.

    Equivalent to ``finalize(block_sums(params, X, labels, sample_weight), params, l2)``.
    """
    return finalize(block_sums(params, X, labels, sample_weight), params, l2)
