"""The data-parallel plane: blocks of rows held by Dask workers, sums computed where they live.

Shape of one evaluation (a loss + gradient, or a metrics pass)::

    client ──params, row selection──▶ one task per worker, over the blocks that worker holds
                                        softmax_worker_sums(blocks, params, rows) → [BlockSums]
           ◀── one BlockSums per block ─ (K×d each), added on the client by a fixed tree

* Blocks are loaded through the task graph (the data layer's chunk reads, or a graph-embedded
  NumPy chunk), never with ``client.scatter``: when a worker dies, Dask recomputes its blocks
  from the store.
* One task per worker, not per block, keeps the scheduler's share of a step small (measured: a
  task per block and a tree of add tasks cost ~60 ms per minibatch step on 2 workers).
* The reduce is a tree over the *block index*, with a fixed fan-in, so the floating-point order of
  the additions, and therefore the result, does not depend on the number of workers or on which
  worker ran what. :class:`LocalEngine` runs the same functions in the same order in-process.
* The client waits once per evaluation, plus one look-up of the blocks' placement every
  :data:`PLACEMENT_REFRESH` evaluations: :attr:`DaskEngine.n_round_trips` counts both.

The engine does no math of its own: it ships :mod:`dsoftmax.objective` functions to the data and
adds their results. Dividing by the weight sum and adding the penalty is the caller's job
(:func:`dsoftmax.objective.finalize`).
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

import dask
import dask.array as da
import distributed
import numpy as np

from .objective import (
    BlockMetrics,
    BlockSums,
    Params,
    block_metrics,
    block_sums,
    sum_blocks,
    sum_metrics,
)
from .sampling import RowBatch, block_starts, full_batch

logger = logging.getLogger("dsoftmax")

__all__ = ["DaskEngine", "Engine", "LocalEngine", "tree_reduce"]

#: Partial results added by one reduce task.
REDUCE_FAN_IN = 4

T = TypeVar("T")


class Block(NamedTuple):
    """The rows of one chunk, as held in worker memory."""

    X: np.ndarray
    labels: np.ndarray
    sample_weight: np.ndarray | None


class Engine(Protocol):
    """What the training loop needs from a data plane."""

    n_samples: int
    chunk_rows: tuple[int, ...]
    #: True when rows carry sample or class weights.
    weighted: bool

    def sums(self, params: Params, batch: RowBatch | None = None) -> BlockSums: ...

    def metrics(self, params: Params, batch: RowBatch | None = None) -> BlockMetrics: ...


def tree_reduce(parts: Sequence[T], add_group: Callable[[list[T]], T]) -> T:
    """Reduce ``parts`` with a fixed tree: groups of :data:`REDUCE_FAN_IN` consecutive parts,
    level by level. The order of additions depends only on ``len(parts)``."""
    level = list(parts)
    if not level:
        raise ValueError("nothing to reduce: the row selection is empty.")
    while len(level) > 1:
        level = [
            add_group(level[start : start + REDUCE_FAN_IN])
            for start in range(0, len(level), REDUCE_FAN_IN)
        ]
    return level[0]


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


def _select_rows(block: Block, rows: np.ndarray | None) -> Block:
    if rows is None:
        return block
    weights = None if block.sample_weight is None else block.sample_weight[rows]
    return Block(block.X[rows], block.labels[rows], weights)


def softmax_block_sums(
    block: Block, params: Params, rows: np.ndarray | None, class_weight: np.ndarray | None
) -> BlockSums:
    """Worker task: loss/gradient sums over the selected rows of one block."""
    selected = _select_rows(block, rows)
    weights = row_weights(selected.labels, selected.sample_weight, class_weight)
    return block_sums(params, selected.X, selected.labels, weights)


def softmax_block_metrics(
    block: Block, params: Params, rows: np.ndarray | None, class_weight: np.ndarray | None
) -> BlockMetrics:
    """Worker task: evaluation sums over the selected rows of one block."""
    selected = _select_rows(block, rows)
    weights = row_weights(selected.labels, selected.sample_weight, class_weight)
    return block_metrics(params, selected.X, selected.labels, weights)


def softmax_worker_sums(
    blocks: list[Block],
    params: Params,
    rows: list[np.ndarray | None],
    class_weight: np.ndarray | None,
) -> tuple[str, list[BlockSums]]:
    """Worker task: :func:`softmax_block_sums` of each block this worker holds, one per block,
    with the worker's address (so the client notices when work moved after a worker loss)."""
    return distributed.get_worker().address, [
        softmax_block_sums(block, params, selected, class_weight)
        for block, selected in zip(blocks, rows, strict=True)
    ]


def softmax_worker_metrics(
    blocks: list[Block],
    params: Params,
    rows: list[np.ndarray | None],
    class_weight: np.ndarray | None,
) -> tuple[str, list[BlockMetrics]]:
    """Worker task: :func:`softmax_block_metrics` of each block this worker holds."""
    return distributed.get_worker().address, [
        softmax_block_metrics(block, params, selected, class_weight)
        for block, selected in zip(blocks, rows, strict=True)
    ]


def assemble_block(X: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None) -> Block:
    """Load task: one chunk of every row array, as one object kept in worker memory."""
    return Block(np.ascontiguousarray(X), np.asarray(labels), sample_weight)


def compute_block_stats(block: Block, n_classes: int, block_index: int, row_start: int) -> Any:
    """Worker task: the data layer's value checks on a block already in memory."""
    from .data import block_stats

    return block_stats(
        block.X, block.labels, block.sample_weight, n_classes, block_index, row_start
    )


class LocalEngine:
    """The engine protocol on in-memory NumPy arrays, in this process, with no cluster.

    Used for small NumPy fits (no cluster start-up cost) and as the reference in tests. Blocks and
    reduce order are those of :class:`DaskEngine` for the same ``chunk_rows``.
    """

    def __init__(
        self,
        X: np.ndarray,
        labels: np.ndarray,
        sample_weight: np.ndarray | None = None,
        *,
        chunk_rows: int = 65536,
        class_weight: np.ndarray | None = None,
    ) -> None:
        self.n_samples = X.shape[0]
        self.chunk_rows = tuple(_even_chunks(self.n_samples, chunk_rows))
        starts = block_starts(self.chunk_rows)
        self.blocks = [
            assemble_block(
                X[lo:hi], labels[lo:hi], None if sample_weight is None else sample_weight[lo:hi]
            )
            for lo, hi in itertools.pairwise(starts)
        ]
        self.class_weight = class_weight
        self._has_sample_weight = sample_weight is not None
        self.n_round_trips = 0

    @property
    def weighted(self) -> bool:
        """True when rows carry sample or class weights."""
        return self._has_sample_weight or self.class_weight is not None

    def sums(self, params: Params, batch: RowBatch | None = None) -> BlockSums:
        batch = batch or full_batch(self.chunk_rows)
        parts = [
            softmax_block_sums(self.blocks[index], params, rows, self.class_weight)
            for index, rows in batch.blocks
        ]
        return tree_reduce(parts, sum_blocks)

    def metrics(self, params: Params, batch: RowBatch | None = None) -> BlockMetrics:
        batch = batch or full_batch(self.chunk_rows)
        parts = [
            softmax_block_metrics(self.blocks[index], params, rows, self.class_weight)
            for index, rows in batch.blocks
        ]
        return tree_reduce(parts, sum_metrics)

    def block_stats(self, n_classes: int) -> list[Any]:
        """The data layer's per-block value checks, in block order."""
        starts = block_starts(self.chunk_rows)
        return [
            compute_block_stats(block, n_classes, index, int(starts[index]))
            for index, block in enumerate(self.blocks)
        ]

    def close(self) -> None:
        self.blocks = []


def _even_chunks(n_rows: int, chunk_rows: int) -> list[int]:
    chunk_rows = max(1, min(chunk_rows, n_rows))
    sizes = [chunk_rows] * (n_rows // chunk_rows)
    if n_rows % chunk_rows:
        sizes.append(n_rows % chunk_rows)
    return sizes


#: Evaluations between two look-ups of which worker holds which block.
PLACEMENT_REFRESH = 50

#: Above this size the parameters are shipped once per evaluation as a task of their own,
#: instead of inline in every block task.
INLINE_PARAMS_BYTES = 256 * 1024


def hold_params(params: Params) -> Params:
    """Task that holds the parameters of one evaluation on a worker."""
    return params


class DaskEngine:
    """Blocks of rows held in the memory of Dask workers; sums computed where they live.

    Parameters
    ----------
    client : distributed.Client
        The cluster to run on.
    X : dask.array.Array of shape (n_samples, n_features)
        Chunked by rows only.
    labels : dask.array.Array of shape (n_samples,) or (n_samples, n_classes)
        Class ids or probability rows, with the row chunks of ``X``.
    sample_weight : dask.array.Array of shape (n_samples,), optional
        With the row chunks of ``X``.
    class_weight : ndarray of shape (n_classes,), optional
        Multiplies each row's weight by the weight of its class.

    Notes
    -----
    Construction submits the load tasks and returns at once; the first evaluation waits for them.
    Call :meth:`close` (or use the engine as a context manager) to release the blocks.
    """

    def __init__(
        self,
        client: Any,
        X: da.Array,
        labels: da.Array,
        sample_weight: da.Array | None = None,
        *,
        class_weight: np.ndarray | None = None,
    ) -> None:
        _check_row_chunks(X, labels, sample_weight)
        self.client = client
        self.n_samples = int(X.shape[0])
        self.chunk_rows = tuple(int(c) for c in X.chunks[0])
        self.class_weight = class_weight
        self._has_sample_weight = sample_weight is not None
        self.n_round_trips = 0
        self._evaluations = 0
        self._placement: dict[int, str] | None = None
        self._placement_stale = False
        self.blocks = self._load_blocks(X, labels, sample_weight)

    def _load_blocks(self, X: da.Array, labels: da.Array, sample_weight: da.Array | None) -> list:
        x_parts = X.to_delayed().ravel()
        label_parts = labels.to_delayed().ravel()
        weight_parts = (
            [None] * len(x_parts) if sample_weight is None else sample_weight.to_delayed().ravel()
        )
        assemble = dask.delayed(assemble_block, pure=True)
        # Keys unique to this engine: another client releasing the same data's keys at the same
        # moment must not cancel ours ("lost dependencies").
        token = uuid.uuid4().hex[:12]
        blocks = [
            assemble(x, lab, w, dask_key_name=f"softmax-block-{token}-{index}")
            for index, (x, lab, w) in enumerate(
                zip(x_parts, label_parts, weight_parts, strict=True)
            )
        ]
        return self.client.compute(blocks)

    def _ship_params(self, params: Params) -> Any:
        size = params.coef.nbytes + (0 if params.intercept is None else params.intercept.nbytes)
        if size <= INLINE_PARAMS_BYTES:
            return params
        return self.client.submit(hold_params, params, pure=False)

    def _block_workers(self) -> dict[int, str]:
        """Which worker holds each block; refreshed every :data:`PLACEMENT_REFRESH` evaluations
        and after work ran elsewhere than planned (a stale entry costs a transfer, never a wrong
        result)."""
        if (
            self._placement is None
            or self._placement_stale
            or self._evaluations % PLACEMENT_REFRESH == 0
        ):
            previous = set((self._placement or {}).values())
            with self.client.as_current():  # wait() asks for the current client
                distributed.wait(self.blocks)
            who_has = self.client.who_has(self.blocks)
            self.n_round_trips += 1
            self._placement = {
                index: sorted(who_has.get(future.key, ()) or ("",))[0]
                for index, future in enumerate(self.blocks)
            }
            self._placement_stale = False
            for worker in sorted(previous - set(self._placement.values()) - {""}):
                logger.warning(
                    "dsoftmax: worker %s is gone; its blocks were re-read from the store by the "
                    "other workers and the fit goes on",
                    worker,
                )
        return self._placement

    def _evaluate(self, worker_task: Callable, add_group: Callable, params: Params, batch) -> Any:
        batch = batch or full_batch(self.chunk_rows)
        placement = self._block_workers()
        shipped = self._ship_params(params)
        by_worker: dict[str, list[tuple[int, np.ndarray | None]]] = {}
        for index, rows in batch.blocks:
            by_worker.setdefault(placement[index], []).append((index, rows))
        futures = [
            self.client.submit(
                worker_task,
                [self.blocks[index] for index, _ in selection],
                shipped,
                [rows for _, rows in selection],
                self.class_weight,
                workers=[worker] if worker else None,
                allow_other_workers=True,
                pure=False,
            )
            for worker, selection in by_worker.items()
        ]
        started = time.perf_counter()
        results = self._gather(futures)
        self.n_round_trips += 1
        self._evaluations += 1
        ran_on = [address for address, _ in results]
        self._placement_stale = any(
            planned and planned != actual for planned, actual in zip(by_worker, ran_on, strict=True)
        )
        per_block = {
            index: part
            for selection, (_, parts) in zip(by_worker.values(), results, strict=True)
            for (index, _), part in zip(selection, parts, strict=True)
        }
        logger.debug(
            "evaluation over %d blocks on %d workers: %.1f ms",
            len(per_block),
            len(futures),
            1e3 * (time.perf_counter() - started),
        )
        # Block order, not worker order: the same additions whatever the placement.
        return tree_reduce([per_block[index] for index, _ in batch.blocks], add_group)

    @property
    def weighted(self) -> bool:
        """True when rows carry sample or class weights."""
        return self._has_sample_weight or self.class_weight is not None

    def sums(self, params: Params, batch: RowBatch | None = None) -> BlockSums:
        """Loss and gradient sums over the rows of ``batch`` (every row when None)."""
        return self._evaluate(softmax_worker_sums, sum_blocks, params, batch)

    def metrics(self, params: Params, batch: RowBatch | None = None) -> BlockMetrics:
        """Weighted loss, correct predictions and weight over the rows of ``batch``."""
        return self._evaluate(softmax_worker_metrics, sum_metrics, params, batch)

    def block_stats(self, n_classes: int) -> list[Any]:
        """The data layer's per-block value checks, run where the blocks are, in block order."""
        starts = block_starts(self.chunk_rows)
        futures = [
            self.client.submit(
                compute_block_stats, block, n_classes, index, int(starts[index]), pure=False
            )
            for index, block in enumerate(self.blocks)
        ]
        stats = self._gather(futures)
        self.n_round_trips += 1
        return stats

    def _gather(self, futures: list) -> list:
        """``client.gather``, with a worker-killing block named in the error."""
        try:
            return self.client.gather(futures)
        except distributed.KilledWorker as error:
            raise RuntimeError(self._killed_worker_message(error)) from None

    def _killed_worker_message(self, error: distributed.KilledWorker) -> str:
        key = getattr(error, "task", None)
        index = _block_index_of(key, {future.key: i for i, future in enumerate(self.blocks)})
        starts = block_starts(self.chunk_rows)
        where = (
            f"block {index} (rows {starts[index]}-{starts[index + 1] - 1})"
            if index is not None
            else f"task {key!r}"
        )
        return (
            f"{where} killed every worker that ran it ({getattr(error, 'allowed_failures', '?')} "
            "tolerated failures, Dask's distributed.scheduler.allowed-failures): the workers "
            "probably ran out of memory or crashed reading it. Check that block of the store, "
            "or give the workers more memory; checkpoints written so far are intact."
        )

    def close(self) -> None:
        """Release the blocks from worker memory."""
        for future in self.blocks:
            future.release()
        self.blocks = []

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _block_index_of(key: Any, block_keys: dict) -> int | None:
    """The row block a task key belongs to: our own load keys, or a dask array chunk key
    ``(name, row_block, 0)``."""
    if key in block_keys:
        return block_keys[key]
    if isinstance(key, tuple) and len(key) >= 2 and isinstance(key[1], int):
        return key[1]
    return None


def _check_row_chunks(X: da.Array, labels: da.Array, sample_weight: da.Array | None) -> None:
    if X.ndim != 2 or len(X.chunks[1]) != 1:
        raise ValueError(
            f"X must be 2-D and chunked by rows only, got shape {X.shape} with chunks {X.chunks}; "
            "rechunk with X.rechunk({1: -1})."
        )
    arrays = {"labels": labels, "sample_weight": sample_weight}
    for name, array in arrays.items():
        if array is None:
            continue
        if array.chunks[0] != X.chunks[0]:
            raise ValueError(
                f"X and {name} have different row chunks: X {X.chunks[0][:3]}... vs {name} "
                f"{array.chunks[0][:3]}...; rechunk {name} with chunks={{0: X.chunks[0]}}."
            )
        if array.ndim == 2 and len(array.chunks[1]) != 1:
            raise ValueError(f"{name} must be chunked by rows only, got chunks {array.chunks}.")
