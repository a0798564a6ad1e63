"""The one worker-side evaluation: a share of blocks in, the sums of the subtrees it owns out.

Every way an evaluation runs — a block server answering the client, a task over blocks held in
worker memory, a task streaming blocks from the store, the in-process :class:`LocalEngine` —
calls :func:`evaluate_share` with an :class:`Evaluation` (what to compute, with which
parameters), a :class:`Share` (which blocks, which of their rows, where they stand in the reduce)
and the blocks themselves, in share order. The blocks' values are folded into the largest
subtrees of the reduce tree whose leaves the share holds
(:func:`dsoftmax.engine.reduce.fold_owned`), so the result has the same bits whichever path ran
it and however the blocks were spread.

Kinds of evaluation (:data:`KINDS`):

* ``"sums"``: :class:`dsoftmax.objective.BlockSums`, the loss and gradient sums, computed by the
  block kernel (:mod:`dsoftmax.kernels`) with the parameters prepared once per share;
* ``"metrics"``: :class:`dsoftmax.objective.BlockMetrics`, weighted loss, correct predictions and
  weight (the block kernel too);
* ``"report"``: :class:`dsoftmax.objective.BlockReport`, weighted loss, weight and confusion matrix;
  its logits are those of ``predict`` (the reference product for dense blocks, the sparse
  kernel's for CSR blocks);
* ``"stats"``: the data layer's value checks of whole blocks (:func:`dsoftmax.data.block_stats`),
  as a list in block order;
* ``"grid_sums"`` and ``"grid_metrics"``: the sums and held-out metrics of a stack of models
  trained together (:mod:`dsoftmax.engine.grid`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse
from dask.sizeof import sizeof

from .. import kernels
from ..kernels import sparse as sparse_kernel
from ..kernels.sparse_columns import ColumnForm, column_form
from ..metrics import add_metrics, add_reports, block_report, report_of_logits, sum_metrics
from ..objective import (
    Params,
    add_sums_into,
    own_sums,
    sum_blocks,
    work_array,
)
from .grid import GRID_KINDS
from .reduce import Node, fold_owned

__all__ = [
    "KINDS",
    "Block",
    "Evaluation",
    "Share",
    "assemble_block",
    "evaluate_share",
    "in_kernel_dtype",
    "row_weights",
    "with_column_form",
]


class _BlockRows(NamedTuple):
    X: Any
    labels: np.ndarray
    sample_weight: np.ndarray | None


class Block(_BlockRows):
    """The rows of one chunk, as held in worker memory: the tuple ``(X, labels,
    sample_weight)`` (``X`` a NumPy array or a scipy.sparse CSR matrix), ``folds``, per row its
    fold code in a cross-validated grid (:mod:`dsoftmax.engine.grid`), None outside one, and
    ``columns``, a sparse ``X``'s column form for the column-ordered kernel
    (:mod:`dsoftmax.kernels.sparse_columns`), None when it has none. The last two are not items
    of the tuple, so that a block unpacks as its three row arrays."""

    folds: np.ndarray | None
    columns: ColumnForm | None

    def __new__(
        cls,
        X: Any,
        labels: np.ndarray,
        sample_weight: np.ndarray | None,
        folds: np.ndarray | None = None,
        columns: ColumnForm | None = None,
    ) -> Block:
        block = super().__new__(cls, X, labels, sample_weight)
        block.folds = folds
        block.columns = columns
        return block


@sizeof.register(Block)
def _block_sizeof(block: Block) -> int:
    """What Dask counts for a held block: its row arrays, fold codes and column form."""
    parts = (*block, block.folds)
    return sum(sizeof(part) for part in parts if part is not None) + (
        0 if block.columns is None else block.columns.nbytes
    )


class Share(NamedTuple):
    """One worker's part of an evaluation, its blocks in increasing order.

    Attributes
    ----------
    indices : list of int
        The blocks' indices in the dataset, increasing: their leaves in the reduce tree.
    rows : list of (ndarray or None)
        Per block, the selected local rows (sorted int64), or None for all of them.
    n_parts : int
        Number of blocks in the dataset (leaves of the reduce tree).
    row_starts : list of int
        Per block, the dataset row number of its first row.
    nodes : list of Node or None
        The subtrees of the reduce this share adds up, given by the client, which knows every
        worker's blocks (None: the largest whole subtrees of ``indices`` when every block of the
        dataset takes part).
    """

    indices: list[int]
    rows: list[np.ndarray | None]
    n_parts: int
    row_starts: list[int]
    nodes: list[Node] | None = None


class Evaluation(NamedTuple):
    """What an evaluation computes over every block of its shares.

    Attributes
    ----------
    kind : {"sums", "metrics", "report", "stats", "grid_sums", "grid_metrics"}
    params : Params, Stack or None
        The model's parameters (None for ``"stats"``; a
        :class:`dsoftmax.kernels.stacked.Stack` for the grid's kinds).
    class_weight : ndarray of shape (n_classes,) or None
        Multiplies each row's weight by the weight of its class.
    n_classes : int
        Number of classes (the value checks need it).
    """

    kind: str
    params: Params | None
    class_weight: np.ndarray | None
    n_classes: int


def assemble_block(
    X: Any,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    folds: np.ndarray | None = None,
    *,
    column_order: bool = False,
) -> Block:
    """One chunk of every row array, as one object kept in worker memory.

    Each array is made C-contiguous and aligned: a chunk that came from another worker can be
    a view at an odd offset into the message it arrived in, and NumPy works on misaligned data
    through temporary copies, many times slower. A sparse chunk becomes a CSR matrix of such
    arrays; its values are left as they are, for the value checks to see. With
    ``column_order``, a sparse chunk also keeps its column form, for blocks held in memory and
    evaluated whole many times (it costs about the CSR arrays' bytes again).
    """
    features = _aligned_csr(X) if scipy.sparse.issparse(X) else _aligned(X)
    block = Block(features, _aligned(labels), _aligned(sample_weight), _aligned(folds))
    return with_column_form(block) if column_order else block


def with_column_form(block: Block) -> Block:
    """``block`` with the column form of its sparse ``X`` (itself when dense, or when it has
    one already)."""
    if block.columns is not None or not scipy.sparse.issparse(block.X):
        return block
    return Block(*block, block.folds, column_form(block.X))


def _aligned(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else np.require(array, requirements=["C", "A"])


def _aligned_csr(X: Any) -> scipy.sparse.csr_matrix:
    csr = X if isinstance(X, scipy.sparse.csr_matrix) else scipy.sparse.csr_matrix(X.tocsr())
    parts = (csr.data, csr.indices, csr.indptr)
    if all(part.flags.c_contiguous and part.flags.aligned for part in parts):
        return csr
    data, indices, indptr = (_aligned(part) for part in parts)
    # Built from its arrays as they are (not sorted): the value checks judge their order.
    return scipy.sparse.csr_matrix((data, indices, indptr), shape=csr.shape)


def row_weights(
    labels: np.ndarray, sample_weight: np.ndarray | None, class_weight: np.ndarray | None
) -> np.ndarray | None:
    """Per-row weights: ``sample_weight × class_weight[label]`` (None when both are None).

    For probability rows the class weight of a row is ``Σ_k class_weight_k · Y_ik``.
    """
    if class_weight is None:
        return sample_weight
    if labels.ndim == 1:
        weights = class_weight[labels]
    else:
        weights = labels @ class_weight
    return weights if sample_weight is None else weights * sample_weight


def evaluate_share(
    evaluation: Evaluation, share: Share, blocks: Iterable[Block]
) -> list[tuple[Node, Any]]:
    """The values of the largest subtrees of the reduce that ``share`` holds whole.

    Parameters
    ----------
    evaluation : Evaluation
    share : Share
    blocks : iterable of Block
        The share's blocks, in its order; consumed one at a time (a streamed share reads each
        block only when it comes).

    Returns
    -------
    list of (node, value)
        ``node`` a node of the reduce tree, ``value`` the kind's value added over its blocks.
    """
    kind = KINDS[evaluation.kind]
    leaves = kind.leaves(evaluation, share, iter(blocks))
    return fold_owned(leaves, share.indices, share.n_parts, kind.own, kind.add, share.nodes)


#: Kinds whose blocks read the parameters only through the block kernel, which casts them to
#: its compute dtype first (:func:`dsoftmax.kernels.prepare_for`).
KERNEL_PARAMS_KINDS = frozenset({"sums", "metrics"})


def in_kernel_dtype(evaluation: Evaluation, compute: np.dtype | None) -> Evaluation:
    """``evaluation`` with its parameters cast to the kernel's ``compute`` dtype, for the kinds
    of :data:`KERNEL_PARAMS_KINDS` (None: as it is): what the kernel casts on the workers, cast
    before sending, so that float32 data's parameters travel in half the bytes with the same
    sums."""
    params = evaluation.params
    if (
        evaluation.kind not in KERNEL_PARAMS_KINDS
        or not isinstance(params, Params)
        or compute is None
        or params.coef.dtype == compute
    ):
        return evaluation
    intercept = None if params.intercept is None else np.asarray(params.intercept, compute)
    return evaluation._replace(params=Params(np.asarray(params.coef, compute), intercept))


# -- the leaves of each kind ----------------------------------------------------------------


def _sums_leaves(evaluation: Evaluation, share: Share, blocks: Iterator[Block]) -> Iterator[Any]:
    """Per block, the kernel's sums of its selected rows, each computed into this thread's work
    arrays (the fold adds each before it asks for the next)."""
    prepared = out = None
    for block, rows in zip(blocks, share.rows, strict=True):
        if prepared is None:
            prepared = kernels.prepare_for(evaluation.params, block.X)
            out = (
                work_array("kernel_grad_coef", prepared.coef.shape, np.float64),
                work_array("kernel_grad_intercept", prepared.coef.shape[:1], np.float64),
            )
        labels, weights = _selected(block, rows, evaluation.class_weight)
        if rows is None:
            yield kernels.block_sums(
                prepared, block.X, labels, weights, out=out, columns=block.columns
            )
        else:
            yield kernels.rows_sums(prepared, block.X, labels, weights, rows, out=out)


def _metrics_leaves(
    evaluation: Evaluation, share: Share, blocks: Iterator[Block]
) -> Iterator[Any]:
    prepared = None
    for block, rows in zip(blocks, share.rows, strict=True):
        if prepared is None:
            prepared = kernels.prepare_for(evaluation.params, block.X)
        labels, weights = _selected(block, rows, evaluation.class_weight)
        yield kernels.block_metrics(prepared, block.X, labels, weights, rows)


def _report_leaves(
    evaluation: Evaluation, share: Share, blocks: Iterator[Block]
) -> Iterator[Any]:
    """Per block, the report of ``predict``'s logits (:func:`dsoftmax.metrics.block_report`):
    the predictions counted are exactly those ``predict`` makes."""
    for block, rows in zip(blocks, share.rows, strict=True):
        X = block.X if rows is None else block.X[rows]
        labels, weights = _selected(block, rows, evaluation.class_weight)
        if scipy.sparse.issparse(X):
            logits = sparse_kernel.decision_function(evaluation.params, X)
            yield report_of_logits(logits.T, labels, weights)
            continue
        if X.dtype.itemsize < 4:  # half-precision storage computes in float32
            X = X.astype(np.float32)
        yield block_report(evaluation.params, X, labels, weights)


def _stats_leaves(evaluation: Evaluation, share: Share, blocks: Iterator[Block]) -> Iterator[Any]:
    from ..data import block_stats

    for block, rows, index, start in zip(
        blocks, share.rows, share.indices, share.row_starts, strict=True
    ):
        if rows is not None:
            raise ValueError("value checks cover whole blocks; got a selection of rows.")
        yield [
            block_stats(
                block.X, block.labels, block.sample_weight, evaluation.n_classes, index, start
            )
        ]


def _selected(
    block: Block, rows: np.ndarray | None, class_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """The labels and row weights of the selected rows of a block (all rows for None)."""
    if rows is None:
        labels, sample_weight = block.labels, block.sample_weight
    else:
        n_rows = block.X.shape[0]
        if len(rows) and (rows.min() < 0 or rows.max() >= n_rows):
            raise IndexError(f"row indices outside a block of {n_rows} rows")
        labels = block.labels[rows]
        sample_weight = None if block.sample_weight is None else block.sample_weight[rows]
    return labels, row_weights(labels, sample_weight, class_weight)


# -- how the values of each kind add up -----------------------------------------------------


class Kind(NamedTuple):
    """How one kind of evaluation computes and adds its values.

    ``leaves(evaluation, share, blocks)`` yields one value per block; ``own`` and ``add`` fold
    them on a worker (:func:`dsoftmax.engine.reduce.fold_owned`); ``add_group`` adds a list of
    subtree values on the client (:func:`dsoftmax.engine.reduce.node_value`).
    """

    leaves: Callable[[Evaluation, Share, Iterator[Block]], Iterator[Any]]
    own: Callable[[Any], Any]
    add: Callable[[Any, Any], Any]
    add_group: Callable[[list], Any]


def _same(value: Any) -> Any:
    return value


def _concatenate(parts: list[list]) -> list:
    return [item for part in parts for item in part]


def _sum_reports(parts: list) -> Any:
    total = parts[0]
    for part in parts[1:]:
        total = add_reports(total, part)
    return total


KINDS: dict[str, Kind] = {
    "sums": Kind(_sums_leaves, own_sums, add_sums_into, sum_blocks),
    "metrics": Kind(_metrics_leaves, _same, add_metrics, sum_metrics),
    "report": Kind(_report_leaves, _same, add_reports, _sum_reports),
    "stats": Kind(_stats_leaves, _same, lambda total, part: total + part, _concatenate),
}
KINDS.update({name: Kind(*parts) for name, parts in GRID_KINDS.items()})
