"""The worker side of a grid of models trained together: the leaves of its two kinds.

A cross-validated grid keeps, with every block, the fold code of each of its rows
(:attr:`dsoftmax.engine.blocks.Block.folds`), and sends with each evaluation a
:class:`dsoftmax.kernels.stacked.Stack`: the stacked weights of the models still running, the
split each belongs to and the table of what each fold code is to each split. Per block:

* ``"grid_sums"``: :class:`~dsoftmax.kernels.stacked.StackSums`, every model's loss and gradient
  sums over its training rows (:func:`~dsoftmax.kernels.stacked.stack_sums`);
* ``"grid_metrics"``: :class:`~dsoftmax.kernels.stacked.StackMetrics`, every model's weighted
  loss, correct predictions and weight over its held-out rows
  (:func:`~dsoftmax.kernels.stacked.stack_metrics`).

Both run through :func:`dsoftmax.engine.blocks.evaluate_share` like every kind (block servers,
tasks over held or streamed blocks, this process), and their values add up with the same fixed
reduce tree. Held-out scores weigh rows by their sample weights only: class weights change what
a model is trained on, not how it is scored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..kernels import is_csr
from ..kernels.stacked import (
    EVERY_ROW,
    StackSums,
    add_stack_metrics,
    add_stack_sums_into,
    own_stack_sums,
    prepare_stack,
    stack_metrics,
    stack_sums,
    sum_stack_metrics,
    sum_stack_sums,
)
from ..kernels.stacked_sparse import (
    prepare_sparse_stack,
    sparse_stack_metrics,
    sparse_stack_sums,
)
from ..objective import work_array

if TYPE_CHECKING:
    from .blocks import Block, Evaluation, Share

__all__ = ["GRID_KINDS"]


def _fold_codes(block: Block, rows: np.ndarray | None, splits: np.ndarray) -> np.ndarray:
    """The fold codes of the evaluated rows; zeros for blocks without codes, which only models
    of every row may read."""
    n_rows = block.X.shape[0] if rows is None else len(rows)
    if block.folds is None:
        if np.any(splits != EVERY_ROW):
            raise ValueError(
                "these blocks carry no fold codes, so only models trained on every row can be "
                "evaluated on them; build the engine with folds= to evaluate a grid's splits."
            )
        return np.zeros(n_rows, dtype=np.uint8)
    return block.folds if rows is None else block.folds[rows]


def _selected(
    block: Block, rows: np.ndarray | None, class_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    from .blocks import _selected as selected_rows  # blocks.py imports this module

    return selected_rows(block, rows, class_weight)


def _sums_out(n_models: int, n_classes: int, n_features: int) -> StackSums:
    """This thread's work arrays for one block's sums (the fold adds each before the next)."""
    return StackSums(
        work_array("grid_loss", (n_models,), np.float64),
        work_array("grid_grad_coef", (n_models, n_classes, n_features), np.float64),
        work_array("grid_grad_intercept", (n_models, n_classes), np.float64),
        work_array("grid_weight", (n_models,), np.float64),
    )


def _stack_kernel(X: Any) -> tuple[Any, Any, Any]:
    """``(prepare, sums, metrics)`` of the stacked kernel that reads blocks like ``X``: the
    sparse one for CSR blocks, the dense one for NumPy blocks (every block of a dataset is of
    one kind)."""
    if is_csr(X):
        return prepare_sparse_stack, sparse_stack_sums, sparse_stack_metrics
    return prepare_stack, stack_sums, stack_metrics


def _grid_sums_leaves(
    evaluation: Evaluation, share: Share, blocks: Iterator[Block]
) -> Iterator[Any]:
    """Per block, every stacked model's sums over its training rows."""
    prepared = out = None
    for block, rows in zip(blocks, share.rows, strict=True):
        prepare, sums, _ = _stack_kernel(block.X)
        if prepared is None:
            prepared = prepare(evaluation.params, block.X.dtype)
            out = _sums_out(prepared.n_models, prepared.n_classes, prepared.n_features)
        labels, weights = _selected(block, rows, evaluation.class_weight)
        codes = _fold_codes(block, rows, prepared.splits)
        # Only sparse blocks have a column form, and only the sparse stack reads one.
        form = {} if block.columns is None else {"columns": block.columns}
        yield sums(prepared, block.X, labels, weights, codes, rows=rows, out=out, **form)


def _grid_metrics_leaves(
    evaluation: Evaluation, share: Share, blocks: Iterator[Block]
) -> Iterator[Any]:
    """Per block, every stacked model's metrics over its held-out rows (sample weights only)."""
    prepared = None
    for block, rows in zip(blocks, share.rows, strict=True):
        prepare, _, metrics = _stack_kernel(block.X)
        if prepared is None:
            prepared = prepare(evaluation.params, block.X.dtype)
        labels, weights = _selected(block, rows, None)
        codes = _fold_codes(block, rows, prepared.splits)
        yield metrics(prepared, block.X, labels, weights, codes, rows=rows)


def _same(value: Any) -> Any:
    return value


#: The grid's kinds, as the parts of :class:`dsoftmax.engine.blocks.Kind`: leaves, own, add,
#: add_group.
GRID_KINDS: dict[str, tuple] = {
    "grid_sums": (_grid_sums_leaves, own_stack_sums, add_stack_sums_into, sum_stack_sums),
    "grid_metrics": (_grid_metrics_leaves, _same, add_stack_metrics, sum_stack_metrics),
}
