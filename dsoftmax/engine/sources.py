"""Where each block's rows come from: the delayed chunks of X, labels, weights and fold codes,
each cut to the graph of its own reads, and the bytes a block takes once held.

A block's source is read inside a task on the worker that keeps it (:func:`read_block`), so a
lost worker's blocks are read again from the store, never from the client.
"""

from __future__ import annotations

import logging
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from dask.optimization import cull

from ..data.sparse import block_nbytes, is_sparse_dask
from .blocks import Block, assemble_block
from .plan import block_bytes

logger = logging.getLogger("dsoftmax")

__all__ = [
    "block_parts",
    "block_sizes",
    "block_sources",
    "check_fold_chunks",
    "held_block_sizes",
    "read_block",
]


def read_block(source: tuple[Any, ...]) -> Block:
    """Read one block in this process: ``source`` holds the delayed chunks of X, labels,
    weights and fold codes (None for those absent), each with only the graph of its own chunk
    reads."""
    return assemble_block(*dask.compute(*source, scheduler="sync"))


def block_parts(
    X: da.Array, labels: da.Array, sample_weight: da.Array | None, folds: da.Array | None = None
) -> list[tuple[Any, ...]]:
    """Per block, the delayed chunks of X, labels, weights and fold codes (None for those
    absent)."""
    x_parts = X.to_delayed().ravel()
    label_parts = labels.to_delayed().ravel()
    optional = [
        [None] * len(x_parts) if array is None else array.to_delayed().ravel()
        for array in (sample_weight, folds)
    ]
    return list(zip(x_parts, label_parts, *optional, strict=True))


def check_fold_chunks(X: da.Array, folds: da.Array | None) -> None:
    if folds is not None and (folds.ndim != 1 or folds.chunks[0] != X.chunks[0]):
        raise ValueError(
            f"the fold codes must be one per row with the row chunks of X, got shape "
            f"{folds.shape} and chunks {folds.chunks}; rechunk them like X."
        )


def block_sources(parts: list[tuple[Any, Any, Any]]) -> list[tuple[Any, Any, Any] | None]:
    """Per block, its delayed chunks each with only the graph it needs, to be computed inside a
    task (:func:`read_block`); None for a block whose chunks depend on data already in the
    cluster's memory (a persisted array), which only the scheduler can hand over."""
    graphs: dict[str, dict] = {}
    sources: list[tuple[Any, Any, Any] | None] = []
    for block in parts:
        culled = []
        for part in block:
            if part is None:
                culled.append(None)
                continue
            name = part.key[0] if isinstance(part.key, tuple) else part.key
            graph = graphs.get(name)
            if graph is None:
                graph = graphs[name] = dict(part.__dask_graph__())
            culled.append(_culled(part, graph))
        complete = all(
            chunk is not None for chunk, part in zip(culled, block, strict=True) if part is not None
        )
        sources.append(tuple(culled) if complete else None)
    return sources


def _culled(part: Any, graph: dict) -> Delayed | None:
    """``part`` with only the graph it needs, or None when that graph is not all there."""
    if part.key not in graph:
        return None
    culled, dependencies = cull(graph, [part.key])
    if any(dependency not in culled for keys in dependencies.values() for dependency in keys):
        return None
    return Delayed(part.key, culled)


def block_sizes(
    X: da.Array,
    labels: da.Array,
    sample_weight: da.Array | None,
    folds: da.Array | None = None,
    client: Any = None,
) -> list[int]:
    """In-memory bytes of each block: for CSR blocks those of their arrays, from the layout
    that arrays read from a sparse store (or cut from an in-memory matrix) carry, else counted
    by one pass over the blocks on ``client``."""
    chunk_rows = [int(rows) for rows in X.chunks[0]]
    if not is_sparse_dask(X):
        return block_bytes(chunk_rows, X, labels, sample_weight, folds)
    per_row = int(np.prod(labels.shape[1:], dtype=np.int64)) * labels.dtype.itemsize
    for optional in (sample_weight, folds):
        if optional is not None:
            per_row += optional.dtype.itemsize
    features = block_nbytes(X)
    if features is None:
        logger.debug("dsoftmax: counting the non-zeros of %d sparse blocks", len(chunk_rows))
        counted = X.map_blocks(
            _csr_block_bytes, dtype=np.int64, chunks=((1,) * len(chunk_rows),), drop_axis=1
        )
        sizes = counted.compute() if client is None else client.compute(counted).result()
        features = [int(size) for size in sizes]
    return [rows * per_row + size for rows, size in zip(chunk_rows, features, strict=True)]


def held_block_sizes(X: da.Array, sizes: list[int]) -> list[int]:
    """The bytes of each block once held in memory: a sparse block keeps its column form too
    (:func:`dsoftmax.engine.blocks.assemble_block`), about as many bytes again."""
    return [2 * size for size in sizes] if is_sparse_dask(X) else list(sizes)


def _csr_block_bytes(block: Any) -> np.ndarray:
    """Task: the bytes of one sparse block's arrays, as a one-element array."""
    csr = block.tocsr()
    return np.array([csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes], dtype=np.int64)
