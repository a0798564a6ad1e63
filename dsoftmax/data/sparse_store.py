"""The sparse dataset format: row blocks of CSR in a Zarr group, written, opened and read.

Format (``dsoftmax_format`` = 2)
--------------------------------
A sparse dataset is a dataset (:mod:`dsoftmax.data.format`) whose ``X`` is a Zarr group of three
arrays, chunked so that block ``b`` of rows (rows ``b·R`` to ``(b+1)·R - 1``, ``R`` the row
chunk of ``y``) is one stored chunk of each:

``X/data``    : (n_blocks, chunk_nnz) float32 or float64, chunks (1, chunk_nnz): row ``b``
                holds block ``b``'s stored values, row by row, then zeros up to ``chunk_nnz``.
``X/indices`` : (n_blocks, chunk_nnz) int32 (int64 when ``n_features`` exceeds 2³¹ - 1),
                chunks (1, chunk_nnz): the column index of each value, laid out alike.
``X/row_nnz`` : (n_samples,) int32 (int64 likewise), chunked like ``y``: the stored values of
                each row. Block ``b``'s ``indptr`` is ``[0, cumsum(row_nnz of its rows)]``.

``chunk_nnz`` is the largest block's count of values (at least 1), so only shorter blocks
carry padding, which the codecs compress to almost nothing. The group attribute
``dsoftmax_csr`` holds ``n_features`` and ``block_nnz`` (the values of each block), which the
fingerprint covers. Within a row the column indices are strictly increasing (sorted, no
duplicates): :func:`dsoftmax.data.write_dataset` stores canonical CSR, and the value checks
(:func:`dsoftmax.data.block_stats`) refuse anything else, with the index range and the
finiteness of the values.

Opening checks the structure as for a dense dataset -- attributes, shapes, dtypes, chunking,
codecs, every chunk stored (counted from one listing of the keys) -- without reading data; each
chunk read is bounded by the size its array declares (:mod:`dsoftmax.data.decode`), and a
block's row counts are checked against its capacity and its recorded count when the block is
assembled, before any of its values are used.
"""

from __future__ import annotations

import functools
import hashlib
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.sparse
import zarr
from dask.highlevelgraph import HighLevelGraph

from .format import CSR_ATTR, Dataset, check_row_chunks, rows_text
from .sparse import INT32_MAX, CSRLayout, empty_csr, layout_key
from .store import ChunkReadError, row_chunk_bounds
from .tasks import row_blocks

__all__ = [
    "CSR_ARRAYS",
    "assemble_stored_csr",
    "open_csr_dataset",
    "write_csr_arrays",
    "write_csr_block",
]

#: The arrays of a sparse ``X``, as named in the store and in messages.
CSR_ARRAYS = ("X/data", "X/indices", "X/row_nnz")


def _stored_index_dtype(n_features: int) -> np.dtype:
    """Column indices and row counts: int32 while ``n_features`` fits, else int64."""
    return np.dtype(np.int32 if n_features <= INT32_MAX else np.int64)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_csr_block(
    targets: Mapping[str, zarr.Array],
    X_block: scipy.sparse.csr_matrix,
    block_index: int,
    row_start: int,
) -> dict[str, str]:
    """Worker task: write one canonical CSR block into ``X/data``, ``X/indices`` (padded to the
    chunk) and ``X/row_nnz``; return each chunk's sha256."""
    data_target, index_target = targets["X/data"], targets["X/indices"]
    capacity = data_target.shape[1]
    data = np.zeros((1, capacity), dtype=data_target.dtype)
    indices = np.zeros((1, capacity), dtype=index_target.dtype)
    data[0, : X_block.nnz] = X_block.data
    indices[0, : X_block.nnz] = X_block.indices
    row_nnz = np.diff(X_block.indptr).astype(targets["X/row_nnz"].dtype)
    data_target[block_index : block_index + 1] = data
    index_target[block_index : block_index + 1] = indices
    targets["X/row_nnz"][row_start : row_start + row_nnz.shape[0]] = row_nnz
    return {
        name: _digest(values)
        for name, values in zip(CSR_ARRAYS, (data, indices, row_nnz), strict=True)
    }


def _digest(values: np.ndarray) -> str:
    """sha256 of the little-endian bytes, what the store holds, so digests agree everywhere."""
    stored = np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"), copy=False))
    return hashlib.sha256(stored.view(np.uint8).reshape(-1)).hexdigest()


def _write_block_task(
    targets: Mapping[str, zarr.Array],
    X_block: scipy.sparse.csr_matrix,
    others: Mapping[str, np.ndarray],
    block_index: int,
    row_start: int,
) -> dict[str, str]:
    """Worker task: one block of rows of every array of a sparse dataset."""
    from .write import write_row_block

    digests = write_csr_block(targets, X_block, block_index, row_start)
    digests.update(write_row_block(targets, others, row_start))
    return digests


def write_csr_arrays(
    group: zarr.Group,
    arrays: Mapping[str, da.Array],
    block_nnz: Sequence[int],
    compressors: Any,
    scheduler: str | None,
) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Create and write the arrays of a sparse dataset, one task per block of rows.

    Parameters
    ----------
    group : zarr.Group
        The new dataset's group, empty.
    arrays : mapping of name to dask array
        ``X`` (canonical CSR blocks) and the row arrays, with the same row chunks.
    block_nnz : sequence of int
        Stored values of each block of ``X`` (from the value checks' pass).
    compressors
        The Zarr compressors of every array.
    scheduler : str or None
        Where the write tasks run (None: the default scheduler).

    Returns
    -------
    digests : list of dict
        Per block, the sha256 of each chunk written.
    csr_attrs : dict
        The ``dsoftmax_csr`` group attribute.
    """
    from .tasks import compute
    from .write import create_row_array

    X = arrays["X"]
    n_samples, n_features = (int(size) for size in X.shape)
    chunk_rows = X.chunks[0][0]
    chunk_nnz = max([1, *block_nnz])
    index_dtype = _stored_index_dtype(n_features)
    features = group.create_group("X")
    shape = (len(block_nnz), chunk_nnz)
    targets = {
        "X/data": create_row_array(features, "data", shape, X.dtype, 1, compressors),
        "X/indices": create_row_array(features, "indices", shape, index_dtype, 1, compressors),
        "X/row_nnz": create_row_array(
            features, "row_nnz", (n_samples,), index_dtype, chunk_rows, compressors
        ),
    }
    for name, array in arrays.items():
        if name != "X":
            targets[name] = create_row_array(
                group, name, array.shape, array.dtype, chunk_rows, compressors
            )
    digests = compute(_write_tasks(targets, arrays), scheduler=scheduler)
    return digests, {"n_features": n_features, "block_nnz": [int(n) for n in block_nnz]}


def _write_tasks(targets: Mapping[str, zarr.Array], arrays: Mapping[str, da.Array]) -> list:
    row_chunks = arrays["X"].chunks[0]
    starts = np.concatenate([[0], np.cumsum(row_chunks)]).tolist()
    parts = {name: row_blocks(array, len(row_chunks)) for name, array in arrays.items()}
    shared_targets = dask.delayed(dict(targets), traverse=False)
    token = uuid.uuid4().hex
    return [
        dask.delayed(_write_block_task, pure=False)(
            shared_targets,
            parts["X"][index],
            {name: parts[name][index] for name in arrays if name != "X"},
            index,
            starts[index],
            dask_key_name=f"dsoftmax-write-csr-rows-{token}-{index}",
        )
        for index in range(len(row_chunks))
    ]


# ---------------------------------------------------------------------------------------------
# Opening
# ---------------------------------------------------------------------------------------------


def _rewrite() -> str:
    return "write the dataset again with dsoftmax.data.write_dataset"


def _check_csr_attr(attrs: Mapping[str, Any], url: str) -> tuple[int, list[int]]:
    """``(n_features, block_nnz)`` of the ``dsoftmax_csr`` attribute, after checking it."""
    value = attrs.get(CSR_ATTR)
    if not isinstance(value, dict):
        raise ValueError(
            f"{url!r} holds X as a group (a sparse X) but its group attribute {CSR_ATTR!r} is "
            f"{'missing' if value is None else f'not a mapping: {value!r}'}; {_rewrite()}."
        )
    n_features, block_nnz = value.get("n_features"), value.get("block_nnz")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ValueError(
            f"{url!r} declares n_features={n_features!r} in {CSR_ATTR!r}; expected an int >= 1. "
            f"{_rewrite()[0].upper()}{_rewrite()[1:]}."
        )
    if not isinstance(block_nnz, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in block_nnz
    ):
        raise ValueError(
            f"{url!r} has an invalid block_nnz in {CSR_ATTR!r} (expected a list of ints >= 0, "
            f"one per block of rows); {_rewrite()}."
        )
    return n_features, block_nnz


def _csr_members(group: zarr.Group, url: str) -> dict[str, zarr.Array]:
    features = group["X"]
    present = set(features.array_keys())
    missing = [name for name in ("data", "indices", "row_nnz") if name not in present]
    if missing:
        raise ValueError(
            f"the sparse X of {url!r} lacks the array(s) {['X/' + name for name in missing]}; "
            f"a sparse X holds X/data, X/indices and X/row_nnz: {_rewrite()}."
        )
    return {f"X/{name}": features[name] for name in ("data", "indices", "row_nnz")}


def _check_csr_arrays(
    arrays: Mapping[str, zarr.Array], n_features: int, block_nnz: list[int], url: str
) -> int:
    """Check the shapes, dtypes and chunks of a sparse X; return its ``n_samples``."""
    data, indices, row_nnz = (arrays[name] for name in CSR_ARRAYS)
    if row_nnz.ndim != 1 or not np.issubdtype(row_nnz.dtype, np.integer):
        raise ValueError(
            f"X/row_nnz in {url!r} must be 1-D integers (the values of each row), got shape "
            f"{row_nnz.shape} and dtype {row_nnz.dtype}; {_rewrite()}."
        )
    n_samples, chunk_rows = row_nnz.shape[0], row_nnz.chunks[0]
    n_blocks = math.ceil(n_samples / chunk_rows) if n_samples else 0
    if len(block_nnz) != n_blocks:
        raise ValueError(
            f"{url!r} records the values of {len(block_nnz)} blocks in {CSR_ATTR!r} but its "
            f"{n_samples} rows in chunks of {chunk_rows} make {n_blocks}; {_rewrite()}."
        )
    capacity = max([1, *block_nnz])
    for name, array in (("X/data", data), ("X/indices", indices)):
        if array.shape != (n_blocks, capacity) or array.chunks != (1, capacity):
            raise ValueError(
                f"{name} in {url!r} has shape {array.shape} and chunks {array.chunks}; expected "
                f"({n_blocks}, {capacity}) in chunks of (1, {capacity}), one chunk per block "
                f"holding its largest block's values; {_rewrite()}."
            )
    if data.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"X/data in {url!r} has dtype {data.dtype}; the values must be float32 or float64. "
            f"{_rewrite()[0].upper()}{_rewrite()[1:]}."
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(
            f"X/indices in {url!r} has dtype {indices.dtype}; column indices must be integers. "
            f"{_rewrite()[0].upper()}{_rewrite()[1:]}."
        )
    return n_samples


def open_csr_dataset(
    url: str,
    storage_options: Mapping | None,
    read_retries: int,
    keys: set[str],
    group: zarr.Group,
    attrs: Mapping[str, Any],
) -> Dataset:
    """:func:`dsoftmax.data.open_dataset` of a sparse dataset, its group attributes'
    classes already checked: the structural checks of the module docstring, no data read."""
    from .open import check_label_arrays, label_arrays, lazy_member_arrays

    n_features, block_nnz = _check_csr_attr(attrs, url)
    csr_arrays = _csr_members(group, url)
    n_samples = _check_csr_arrays(csr_arrays, n_features, block_nnz, url)
    arrays = {**csr_arrays, **label_arrays(group, url)}
    check_label_arrays(arrays, int(attrs["n_classes"]), url, n_samples)
    lazy, digest = lazy_member_arrays(arrays, attrs, keys, url, storage_options, read_retries)
    index_dtype = np.dtype(csr_arrays["X/indices"].dtype)
    layout = CSRLayout(n_features, tuple(block_nnz), str(index_dtype))
    X = _lazy_csr(lazy, layout, csr_arrays["X/row_nnz"].chunks[0], url, digest)
    labels = lazy.get("y", lazy.get("Y"))
    check_row_chunks(X, labels, lazy.get("sample_weight"), source=repr(url))
    return Dataset(
        url=url,
        storage_options=None if storage_options is None else dict(storage_options),
        X=X,
        y=lazy.get("y"),
        Y=lazy.get("Y"),
        sample_weight=lazy.get("sample_weight"),
        classes=np.asarray(attrs["classes"]),
        fingerprint=digest,
        read_retries=read_retries,
        layout="csr",
        n_nonzero=int(sum(block_nnz)),
    )


def _lazy_csr(
    lazy: Mapping[str, da.Array], layout: CSRLayout, chunk_rows: int, url: str, digest: str
) -> da.Array:
    """A dask array of CSR blocks, each assembled from its three chunk reads."""
    token = hashlib.sha256(f"{url}\0{digest}".encode()).hexdigest()[:16]
    name = f"dsoftmax-X-csr-{token}"
    data, indices, row_nnz = (lazy[array] for array in CSR_ARRAYS)
    n_samples = row_nnz.shape[0]
    bounds = row_chunk_bounds(n_samples, chunk_rows)
    assemble = functools.partial(assemble_stored_csr, url=url, chunk_rows=chunk_rows)
    graph: dict[Any, Any] = {layout_key(name): layout}
    for index in range(len(bounds)):
        graph[(name, index, 0)] = (
            assemble,
            (data.name, index, 0),
            (indices.name, index, 0),
            (row_nnz.name, index),
            layout_key(name),
            index,
        )
    return da.Array(
        HighLevelGraph.from_collections(name, graph, dependencies=[data, indices, row_nnz]),
        name,
        chunks=(tuple(stop - start for start, stop in bounds), (layout.n_features,)),
        meta=empty_csr(layout.n_features, data.dtype),
    )


def assemble_stored_csr(
    data: np.ndarray,
    indices: np.ndarray,
    row_nnz: np.ndarray,
    layout: CSRLayout,
    block_index: int,
    *,
    url: str,
    chunk_rows: int,
) -> scipy.sparse.csr_matrix:
    """Worker task: the CSR matrix of one stored block, from its chunk of ``X/data`` and of
    ``X/indices`` (1, chunk_nnz) and its rows' counts.

    Raises
    ------
    ChunkReadError
        When the row counts are negative or do not add up to the block's recorded count within
        the chunk's capacity: the store is damaged.
    """
    expected = layout.block_nnz[block_index]
    counts = row_nnz.astype(np.int64, copy=False)
    total = int(counts.sum()) if not (counts < 0).any() else -1
    if total != expected or total > data.shape[1]:
        row_start = block_index * chunk_rows
        raise ChunkReadError(
            f"cannot read chunk {block_index} of X/row_nnz in {url!r} "
            f"({rows_text(row_start, len(counts))}): its row counts "
            f"{'hold negative values' if total < 0 else f'add up to {total}'}, but the block "
            f"records {expected} stored values in chunks of {data.shape[1]}. The store is "
            "damaged: rewrite it, e.g. with dsoftmax.data.write_dataset or `dsoftmax convert`, "
            "from the source data.",
            url=url,
            array="X/row_nnz",
            chunk_index=block_index,
            rows=(row_start, row_start + len(counts)),
        )
    pointer_dtype = np.int64 if total > INT32_MAX or layout.n_features > INT32_MAX else np.int32
    indptr = np.zeros(len(counts) + 1, dtype=pointer_dtype)
    np.cumsum(counts, out=indptr[1:])
    values = np.ascontiguousarray(data[0, :total])
    columns = np.ascontiguousarray(indices[0, :total], dtype=pointer_dtype)
    return scipy.sparse.csr_matrix(
        (values, columns, indptr), shape=(len(counts), layout.n_features)
    )
