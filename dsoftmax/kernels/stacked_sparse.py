"""The stacked kernel for CSR blocks: every model of a grid over its own rows of one block.

A grid's models share the block but not its products: the sparse kernel's cost grows with the
non-zeros times the classes, so one product of the stacked ``(m·K) × d`` weights would cost what
``m`` products cost, and its gradient would be as wide as the features for every model at once.
Each model therefore runs :func:`dsoftmax.kernels.sparse.rows_sums` (or ``block_sums`` when it
takes every row) over its training rows, and :func:`~dsoftmax.kernels.sparse.block_metrics` over
its held-out rows, one model after another, its gradient scattered into one work array that the
next model reuses; a block held with its column form runs each model's sums through it
(:mod:`dsoftmax.kernels.sparse_columns`), the same bits. A model's sums are then exactly those
of a fit of that model alone on those rows, and the results have the shapes and meaning of
:mod:`dsoftmax.kernels.stacked`'s, so they add up with the same reduce. Pure NumPy and numba:
no Dask, no I/O.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..objective import BlockSums, Params, work_array
from . import sparse
from .dense import _checked_rows
from .sparse_columns import ColumnForm, column_sums
from .stacked import (
    ROLE_HELD_OUT,
    ROLE_TRAIN,
    Stack,
    StackMetrics,
    StackSums,
    _codes,
    _taken,
    checked_stack,
    zeroed_sums,
)

__all__ = [
    "PreparedSparseStack",
    "prepare_sparse_stack",
    "sparse_stack_metrics",
    "sparse_stack_sums",
]


class PreparedSparseStack(NamedTuple):
    """A :class:`~dsoftmax.kernels.stacked.Stack` laid out for CSR blocks, once per evaluation.

    Attributes
    ----------
    models : tuple of SparsePrepared
        Each model's weights as the sparse kernel reads them.
    splits : ndarray of shape (n_models,), int64
    roles : ndarray of shape (n_codes, n_splits), uint8
    """

    models: tuple[sparse.SparsePrepared, ...]
    splits: np.ndarray
    roles: np.ndarray

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def n_classes(self) -> int:
        return self.models[0].n_classes

    @property
    def n_features(self) -> int:
        return self.models[0].n_features


def prepare_sparse_stack(stack: Stack, dtype: np.dtype) -> PreparedSparseStack:
    """Lay out ``stack`` for CSR blocks whose values are ``dtype`` (float32 or float64).

    Raises
    ------
    ValueError
        As :func:`~dsoftmax.kernels.stacked.prepare_stack`.
    """
    coef, intercept, splits, roles = checked_stack(stack)
    models = tuple(
        sparse.prepare(Params(coef[j], None if intercept is None else intercept[j]), dtype)
        for j in range(coef.shape[0])
    )
    return PreparedSparseStack(models, splits, roles)


def _model_rows(
    prepared: PreparedSparseStack,
    codes: np.ndarray,
    rows: np.ndarray | None,
    j: int,
    role: int,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Model ``j``'s rows of the given role: their positions among the evaluated rows and their
    local rows in the block; ``(None, rows)`` when the model takes every evaluated row."""
    positions = _taken(prepared, codes, int(prepared.splits[j]), role)
    if positions is None:
        return None, rows
    return positions, positions if rows is None else rows[positions]


def _of(values: np.ndarray | None, positions: np.ndarray | None) -> np.ndarray | None:
    return values if values is None or positions is None else values[positions]


def _inputs(
    prepared: PreparedSparseStack,
    X: Any,
    codes: np.ndarray,
    rows: np.ndarray | None,
) -> tuple[Any, np.ndarray, np.ndarray | None]:
    """The checked CSR block, the evaluated rows' fold codes and the checked local rows."""
    X = sparse._checked_csr(prepared.models[0], X)
    if rows is not None:
        rows = _checked_rows(rows, X.shape[0])
    n_rows = X.shape[0] if rows is None else len(rows)
    return X, _codes(codes, n_rows, prepared.roles.shape[0]), rows


def _model_sums(
    model: sparse.SparsePrepared,
    X: Any,
    labels: np.ndarray,
    weights: np.ndarray | None,
    local: np.ndarray | None,
    work: tuple[np.ndarray, np.ndarray],
    columns: ColumnForm | None,
) -> BlockSums:
    if columns is not None:
        return column_sums(model, X, columns, labels, weights, rows=local, out=work)
    if local is None:
        return sparse.block_sums(model, X, labels, weights, out=work)
    return sparse.rows_sums(model, X, labels, weights, local, out=work)


def sparse_stack_sums(
    prepared: PreparedSparseStack,
    X: Any,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    codes: np.ndarray,
    *,
    rows: np.ndarray | None = None,
    out: StackSums | None = None,
    columns: ColumnForm | None = None,
) -> StackSums:
    """Every model's loss and gradient sums over its training rows of one CSR block: model
    ``j``'s are those of :func:`dsoftmax.kernels.sparse.rows_sums` over them, bit for bit.

    Arguments and result are those of :func:`dsoftmax.kernels.stacked.stack_sums`, ``X`` being a
    scipy.sparse CSR matrix; ``columns``, X's column form, evaluates a whole block's models
    through it (:func:`dsoftmax.kernels.sparse_columns.column_sums`, the same bits; ignored
    for a selection of ``rows``).
    """
    X, codes, rows = _inputs(prepared, X, codes, rows)
    columns = columns if rows is None else None
    m, K, d = prepared.n_models, prepared.n_classes, prepared.n_features
    sums = zeroed_sums(out, m, K, d)
    labels = np.asarray(labels)
    work = (work_array("sparse_stack_grad", (d, K), np.float64),
            work_array("sparse_stack_intercept", (K,), np.float64))  # fmt: skip
    for j, model in enumerate(prepared.models):
        positions, local = _model_rows(prepared, codes, rows, j, ROLE_TRAIN)
        part = _model_sums(model, X, _of(labels, positions), _of(sample_weight, positions),
                           local, work, columns)  # fmt: skip
        sums.loss_sum[j] = part.loss_sum
        sums.grad_coef_sum[j] = part.grad_coef_sum
        sums.grad_intercept_sum[j] = part.grad_intercept_sum
        sums.weight_sum[j] = part.weight_sum
    return sums


def sparse_stack_metrics(
    prepared: PreparedSparseStack,
    X: Any,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    codes: np.ndarray,
    *,
    rows: np.ndarray | None = None,
) -> StackMetrics:
    """Every model's weighted loss, correct predictions and weight over its held-out rows of one
    CSR block, as :func:`dsoftmax.kernels.sparse.block_metrics` computes them.

    Arguments and result are those of :func:`dsoftmax.kernels.stacked.stack_metrics`, ``X``
    being a scipy.sparse CSR matrix.
    """
    X, codes, rows = _inputs(prepared, X, codes, rows)
    m = prepared.n_models
    metrics = StackMetrics(np.zeros(m), np.zeros(m), np.zeros(m))
    labels = np.asarray(labels)
    for j, model in enumerate(prepared.models):
        positions, local = _model_rows(prepared, codes, rows, j, ROLE_HELD_OUT)
        part = sparse.block_metrics(model, X, _of(labels, positions),
                                    _of(sample_weight, positions), local)  # fmt: skip
        metrics.loss_sum[j] = part.loss_sum
        metrics.correct_sum[j] = part.correct_sum
        metrics.weight_sum[j] = part.weight_sum
    return metrics
