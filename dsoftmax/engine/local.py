"""The engine in this process: the workers' own evaluation (engine/blocks.py), run here.

For NumPy input with no cluster around, for datasets that fit this machine's memory when no
cluster is named (no start-up cost), for Dask arrays evaluated without a distributed client, and
as the reference of every path in tests: its blocks and its reduce are those of
:class:`dsoftmax.engine.DaskEngine` for the same chunking, so its results have the same bits.

With several threads, an evaluation splits its blocks into contiguous shares, one per thread,
as the Dask engine splits them between workers (the block kernel releases the GIL); each share
folds the subtrees of the reduce it holds whole, and the fixed tree adds them: the same
additions, so the same bits, as one share.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import dask
import dask.array as da
import dask.local
import dask.system
import numpy as np

from ..defaults import DEFAULT_CHUNK_ROWS
from ..sampling import RowBatch, block_starts, full_batch
from .base import Evaluations, LoadProgress
from .blocks import (
    KINDS,
    Block,
    Evaluation,
    Share,
    assemble_block,
    evaluate_share,
    with_column_form,
)
from .plan import block_bytes, contiguous_plan, plan_shares
from .reduce import node_value, tree_root

__all__ = ["LocalEngine"]

logger = logging.getLogger("dsoftmax")


class LocalEngine(Evaluations):
    """Blocks of rows in this process, evaluated with the workers' code.

    Parameters
    ----------
    X : ndarray or dask.array.Array of shape (n_samples, n_features)
        NumPy input is cut into blocks of ``chunk_rows`` rows; a Dask array keeps its row chunks.
    labels : ndarray or dask.array.Array of shape (n_samples,) or (n_samples, n_classes)
    sample_weight : ndarray or dask.array.Array of shape (n_samples,), optional
    chunk_rows : int, default :data:`dsoftmax.defaults.DEFAULT_CHUNK_ROWS`
        Rows per block of NumPy input.
    hold : {"memory", "stream"}, default "memory"
        For Dask input: compute every block once and keep it (``"memory"``), or compute each
        block when an evaluation needs it and let it go (``"stream"``, bounded memory).
    n_threads : int, optional
        Threads that evaluate shares of the blocks (and read Dask input) at once; default:
        this machine's usable CPUs.
    progress : bool, default False
        Show a progress bar over the load of Dask input (blocks, bytes) when stderr is a
        terminal.
    folds : ndarray or dask.array.Array of shape (n_samples,), optional
        Integer fold codes of a cross-validated grid (:mod:`dsoftmax.engine.grid`), held with
        the blocks.
    """

    def __init__(
        self,
        X: Any,
        labels: Any,
        sample_weight: Any = None,
        *,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        hold: str = "memory",
        n_threads: int | None = None,
        progress: bool = False,
        folds: Any = None,
    ) -> None:
        if hold not in ("memory", "stream"):
            raise ValueError(f"hold must be 'memory' or 'stream', got {hold!r}.")
        self.n_samples = int(X.shape[0])
        self.has_sample_weight = sample_weight is not None
        self.hold = hold
        self.n_round_trips = 0
        lazy = isinstance(X, da.Array)
        if lazy:
            self.chunk_rows = tuple(int(rows) for rows in X.chunks[0])
            if folds is not None and not isinstance(folds, da.Array):
                folds = da.from_array(np.asarray(folds), chunks=(X.chunks[0],))
            self._sources = _dask_sources(X, labels, sample_weight, folds)
        else:
            self.chunk_rows = tuple(_even_chunks(self.n_samples, chunk_rows))
            self._sources = _numpy_blocks(X, labels, sample_weight, self.chunk_rows, folds)
        self._starts = block_starts(self.chunk_rows)
        threads = dask.system.CPU_COUNT if n_threads is None else int(n_threads)
        self.n_threads = max(1, min(threads, len(self.chunk_rows)))
        self._pool = None
        if self.n_threads > 1:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.n_threads, thread_name_prefix="dsoftmax-local"
            )
        self.blocks: list[Block] = []
        if hold == "memory":
            sizes = block_bytes(self.chunk_rows, X, labels, sample_weight)
            self.blocks = self._load(lazy and progress, sizes)

    def _load(self, progress: bool, block_bytes: Sequence[int]) -> list[Block]:
        """Every block, read (Dask input) on the engine's threads."""
        indices = range(len(self._sources))
        if self._pool is None:
            reads: Any = map(self._held_block, indices)
        else:
            reads = self._pool.map(self._held_block, indices)
        blocks = []
        with LoadProgress(block_bytes, progress, "this process") as bar:
            for block, size in zip(reads, block_bytes, strict=True):
                blocks.append(block)
                bar.block_done(size)
        return blocks

    def _evaluate(self, evaluation: Evaluation, batch: RowBatch | None) -> Any:
        batch = batch or full_batch(self.chunk_rows)
        n_parts = len(self.chunk_rows)
        shares = self._shares(batch)
        if self._pool is None or len(shares) == 1:
            pairs = [self._evaluate_share(evaluation, share) for share in shares]
        else:
            pairs = list(self._pool.map(self._evaluate_share, [evaluation] * len(shares), shares))
        known = {node: value for share_pairs in pairs for node, value in share_pairs}
        present = [index for index, _ in batch.blocks]
        add_group = KINDS[evaluation.kind].add_group
        return node_value(tree_root(n_parts), known, n_parts, add_group, present)

    def _shares(self, batch: RowBatch) -> list[Share]:
        """Contiguous shares of the batch's blocks, one per thread, of about equal rows."""
        n_blocks = len(batch.blocks)
        threads = [str(thread) for thread in range(min(self.n_threads, max(1, n_blocks)))]
        plan = contiguous_plan(batch.blocks, self.chunk_rows, threads)
        return list(plan_shares(plan, self._starts).values())

    def _evaluate_share(self, evaluation: Evaluation, share: Share) -> list:
        return evaluate_share(evaluation, share, self._blocks(share.indices))

    def _blocks(self, indices: list[int]) -> Iterator[Block]:
        if self.blocks:
            return (self.blocks[index] for index in indices)
        return (self._read_block(index) for index in indices)

    def _held_block(self, index: int) -> Block:
        """Block ``index`` as held: a sparse one with its column form (the faster kernel)."""
        return with_column_form(self._read_block(index))

    def _read_block(self, index: int) -> Block:
        """Block ``index``, read from its source; a failed read is logged at INFO with its
        traceback, as a Dask worker logs a failed task, before it is raised."""
        try:
            return _materialize(self._sources[index])
        except Exception:
            start, end = int(self._starts[index]), int(self._starts[index + 1]) - 1
            logger.info(
                "dsoftmax: Compute Failed: reading block %d (rows %d to %d) in this process",
                index, start, end, exc_info=True,
            )  # fmt: skip
            raise

    def close(self) -> None:
        """Let the blocks go and stop the threads."""
        self.blocks = []
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _even_chunks(n_rows: int, chunk_rows: int) -> list[int]:
    chunk_rows = max(1, min(chunk_rows, n_rows))
    sizes = [chunk_rows] * (n_rows // chunk_rows)
    if n_rows % chunk_rows:
        sizes.append(n_rows % chunk_rows)
    return sizes


def _numpy_blocks(
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
    chunk_rows: tuple,
    folds: np.ndarray | None = None,
) -> list[Block]:
    def rows(array: np.ndarray | None, lo: int, hi: int) -> np.ndarray | None:
        return None if array is None else array[lo:hi]

    return [
        assemble_block(X[lo:hi], labels[lo:hi], rows(sample_weight, lo, hi), rows(folds, lo, hi))
        for lo, hi in itertools.pairwise(block_starts(chunk_rows))
    ]


def _dask_sources(
    X: da.Array, labels: da.Array, sample_weight: da.Array | None, folds: da.Array | None = None
) -> list[tuple]:
    """Per block, the delayed chunks of X, labels, weights and fold codes (None for those
    absent)."""
    parts = [X.to_delayed().ravel(), labels.to_delayed().ravel()]
    n_blocks = len(parts[0])
    optional = [
        [None] * n_blocks if array is None else array.to_delayed().ravel()
        for array in (sample_weight, folds)
    ]
    return list(zip(*parts, *optional, strict=True))


def _materialize(source: Block | tuple) -> Block:
    if isinstance(source, Block):
        return source
    # Synchronous: blocks are read in parallel by the engine's threads, one block each. The
    # scheduler is given as a function: a name makes Dask look for (and import) distributed.
    return assemble_block(*dask.compute(*source, scheduler=dask.local.get_sync))
