"""Zarr datasets: write, open, validate, generate and convert.

Format (``dsoftmax_format`` = 1)
--------------------------------
A dataset is a Zarr v3 group, on a local disk or behind an fsspec URL (``s3://bucket/train.zarr``):

``X``  : (n_samples, n_features) float32 or float64, chunked by rows only
         (chunks = (chunk_rows, n_features)).
``y``  : (n_samples,) int32/int64 class ids in ``[0, n_classes)`` **or**
``Y``  : (n_samples, n_classes) float one-hot or probability rows -- exactly one of the two.
``sample_weight`` : optional (n_samples,) float.

Group attributes: ``dsoftmax_format``, ``classes`` (the original label values, JSON ints, floats
or strings; class id ``k`` stands for ``classes[k]``), ``n_classes`` and
``dsoftmax_content_sha256``, a digest of every chunk's bytes computed by whoever wrote the chunk.
The attributes are written last, so an interrupted write leaves a store that
:func:`open_dataset` refuses. Every row array shares the row chunking of ``X``, so block ``i`` of
every array covers the same rows and a worker can load a block of rows from the store alone.

Reading is lazy: :func:`open_dataset` checks the structure (shapes, dtypes, chunking, attributes,
that every chunk exists) without reading data, and :func:`check_values` makes one pass over the
values. :func:`block_stats` is the per-block part of that pass, a pure NumPy function the training
engine also runs on blocks already held in worker memory.

Every chunk of the lazy arrays is read by one task of ours: transient I/O errors (connection
resets, timeouts) are retried ``read_retries`` times with a doubling pause, and a chunk that
cannot be read or decoded raises :class:`ChunkReadError` naming the store, the array, the chunk,
its rows and its store key.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import fsspec
import numpy as np
import zarr
import zarr.codecs
from dask.highlevelgraph import HighLevelGraph
from zarr.core.sync import sync
from zarr.errors import ContainsArrayError, GroupNotFoundError

__all__ = [
    "DEFAULT_READ_RETRIES",
    "FORMAT_VERSION",
    "BlockStats",
    "ChunkReadError",
    "Dataset",
    "DatasetStats",
    "block_stats",
    "check_values",
    "combine_stats",
    "convert_numpy",
    "load_digits",
    "make_classification",
    "open_dataset",
    "write_array",
    "write_dataset",
]

FORMAT_VERSION = 1

FORMAT_ATTR = "dsoftmax_format"
CONTENT_DIGEST_ATTR = "dsoftmax_content_sha256"
#: Row arrays in the order their digests are combined.
ROW_ARRAYS = ("X", "y", "Y", "sample_weight")
CODECS = ("zstd", "lz4", "none")
#: Tolerance on ``|sum(Y_i) - 1|``; widened to ``n_classes·eps`` for low-precision rows.
ROW_SUM_TOLERANCE = 1e-6
#: How many problems a value-check error lists before summarizing the rest.
MAX_PROBLEMS_SHOWN = 5
#: Rows per chunk of :func:`write_array` when neither ``chunk_rows`` nor dask chunks decide.
DEFAULT_CHUNK_ROWS = 65536
#: Retries of a chunk read that failed with a transient I/O error, by default.
DEFAULT_READ_RETRIES = 3
#: Pause before the first retry of a chunk read, in seconds; it doubles at every retry.
READ_RETRY_BACKOFF = 0.1
#: Longest pause between two tries of a chunk read, in seconds.
READ_RETRY_MAX_PAUSE = 5.0

# ---------------------------------------------------------------------------------------------
# Dataset and statistics
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """An opened dataset: lazy dask arrays over a validated Zarr store.

    Attributes
    ----------
    url : str
        Local path or fsspec URL of the group.
    storage_options : dict or None
        fsspec options the store was opened with (credentials, endpoint).
    X : dask array of shape (n_samples, n_features)
        float32 or float64, one dask chunk per Zarr chunk of rows.
    y : dask array of shape (n_samples,) or None
        Integer class ids in ``[0, n_classes)``; None when ``Y`` holds the labels.
    Y : dask array of shape (n_samples, n_classes) or None
        One-hot or probability rows; None when ``y`` holds the labels.
    sample_weight : dask array of shape (n_samples,) or None
    classes : ndarray of shape (n_classes,)
        Original label values; class id ``k`` stands for ``classes[k]``.
    fingerprint : str
        Hex sha256 of the metadata and of the content digest recorded at write time; the same
        for every open of the same store, different after any write through this module.
    read_retries : int
        How many times a chunk read that failed with a transient I/O error is retried before
        :class:`ChunkReadError` is raised (default :data:`DEFAULT_READ_RETRIES`).
    """

    url: str
    # Kept out of repr: the options usually hold credentials, and datasets get logged.
    storage_options: dict | None = field(repr=False)
    X: da.Array
    y: da.Array | None
    Y: da.Array | None
    sample_weight: da.Array | None
    classes: np.ndarray
    fingerprint: str
    read_retries: int = DEFAULT_READ_RETRIES

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.classes.shape[0])

    @property
    def chunk_rows(self) -> tuple[int, ...]:
        """Rows of each block, in order."""
        return tuple(int(rows) for rows in self.X.chunks[0])

    @property
    def dtype(self) -> np.dtype:
        return self.X.dtype

    @property
    def labels(self) -> da.Array:
        """``y`` when the dataset has class ids, else ``Y``."""
        return self.y if self.y is not None else self.Y


class ChunkReadError(ValueError):
    """A chunk of a dataset could not be read or decoded.

    The message names the store, the array, the chunk index, its rows, its store key, the
    underlying error and the fix. The attributes repeat those facts for programs; they are None
    on an error rebuilt from its message alone.

    Attributes
    ----------
    url : str
        The dataset's path or URL.
    array : str
        ``"X"``, ``"y"``, ``"Y"`` or ``"sample_weight"``.
    chunk_index : int
        Position of the chunk along the rows.
    rows : tuple of (int, int)
        First row and one past the last row of the chunk.
    key : str
        The chunk's key in the store, e.g. ``"X/c/3/0"``.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        array: str | None = None,
        chunk_index: int | None = None,
        rows: tuple[int, int] | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.array = array
        self.chunk_index = chunk_index
        self.rows = rows
        self.key = key


@dataclass(frozen=True)
class BlockProblem:
    """One value problem found in one block: which array, and a sentence saying what and how to
    fix it (without the dataset's name, which :func:`combine_stats` adds)."""

    array: str
    detail: str


@dataclass(frozen=True, eq=False)
class BlockStats:
    """Counts and problems of one block of rows; combine blocks with :func:`combine_stats`.

    Attributes
    ----------
    block_index, row_start, n_rows : int
        Which block, its first row in the dataset and its number of rows.
    class_counts : ndarray of shape (n_classes,), int64
        Rows per class id (for probability rows: per argmax).
    class_weight_sums : ndarray of shape (n_classes,), float64
        ``Σ_i w_i`` per class id (for probability rows: ``Σ_i w_i Y_ik``).
    weight_sum : float
        ``Σ_i w_i`` (``n_rows`` without weights).
    problems : tuple of BlockProblem
        Empty when the block is valid.
    """

    block_index: int
    row_start: int
    n_rows: int
    class_counts: np.ndarray
    class_weight_sums: np.ndarray
    weight_sum: float
    problems: tuple[BlockProblem, ...] = ()


@dataclass(frozen=True, eq=False)
class DatasetStats:
    """What one pass over the values found (only returned when the values are valid).

    Attributes
    ----------
    class_counts : ndarray of shape (n_classes,), int64
        Rows per class (probability rows count for their argmax).
    class_weight_sums : ndarray of shape (n_classes,), float64
        Sample weight per class (probability rows spread their weight over the classes).
    n_samples : int
    weight_sum : float
        ``Σ_i w_i`` (``n_samples`` without weights).
    """

    class_counts: np.ndarray
    class_weight_sums: np.ndarray
    n_samples: int
    weight_sum: float


# ---------------------------------------------------------------------------------------------
# Per-block value checks (pure NumPy)
# ---------------------------------------------------------------------------------------------


def _rows_text(row_start: int, n_rows: int) -> str:
    return f"rows {row_start} to {row_start + n_rows - 1}"


def _check_feature_block(X_block: np.ndarray, where: str, row_start: int) -> list[BlockProblem]:
    finite = np.isfinite(X_block)
    if finite.all():
        return []
    first_row = row_start + int(np.argmin(finite.all(axis=1)))
    n_bad = int(finite.size - np.count_nonzero(finite))
    return [
        BlockProblem(
            "X",
            f"has {n_bad} non-finite value(s) (NaN or inf) in {where}, first in row {first_row}; "
            "drop or impute those rows and write the dataset again.",
        )
    ]


def _check_weight_block(weights: np.ndarray, where: str, row_start: int) -> list[BlockProblem]:
    bad = ~(np.isfinite(weights) & (weights >= 0))
    if not bad.any():
        return []
    first = int(np.argmax(bad))
    return [
        BlockProblem(
            "sample_weight",
            f"has {int(bad.sum())} negative or non-finite value(s) in {where}, first "
            f"{float(weights[first])!r} in row {row_start + first}; weights must be finite and "
            ">= 0.",
        )
    ]


def _class_id_counts(
    ids: np.ndarray, weights: np.ndarray | None, n_classes: int, where: str, row_start: int
) -> tuple[np.ndarray, np.ndarray, list[BlockProblem]]:
    if not np.issubdtype(ids.dtype, np.integer):
        problem = BlockProblem(
            "y",
            f"has dtype {ids.dtype} in {where}; class ids must be integers in [0, {n_classes}) "
            "(write_dataset maps raw labels to ids for you).",
        )
        return np.zeros(n_classes, np.int64), np.zeros(n_classes), [problem]
    out_of_range = (ids < 0) | (ids >= n_classes)
    problems = []
    if out_of_range.any():
        first = int(np.argmax(out_of_range))
        problems.append(
            BlockProblem(
                "y",
                f"has {int(out_of_range.sum())} class id(s) outside [0, {n_classes}) in {where}, "
                f"first {int(ids[first])} in row {row_start + first}; class ids index `classes`: "
                "rewrite y with ids in range (write_dataset maps raw labels for you).",
            )
        )
        keep = ~out_of_range
        ids = ids[keep]
        weights = None if weights is None else weights[keep]
    ids = ids.astype(np.intp, copy=False)
    counts = np.bincount(ids, minlength=n_classes).astype(np.int64)
    if weights is None:
        weight_sums = counts.astype(np.float64)
    else:
        weight_sums = np.bincount(ids, weights=weights.astype(np.float64), minlength=n_classes)
    return counts, weight_sums, problems


def _probability_row_counts(
    Y_block: np.ndarray, weights: np.ndarray | None, n_classes: int, where: str, row_start: int
) -> tuple[np.ndarray, np.ndarray, list[BlockProblem]]:
    if Y_block.ndim != 2 or Y_block.shape[1] != n_classes:
        raise ValueError(
            f"probability rows must have shape (n_rows, {n_classes}), got {Y_block.shape} in "
            f"{where}."
        )
    problems = []
    bad_entries = ~(np.isfinite(Y_block) & (Y_block >= 0))
    bad_rows = bad_entries.any(axis=1)
    if bad_rows.any():
        first = int(np.argmax(bad_rows))
        problems.append(
            BlockProblem(
                "Y",
                f"has {int(bad_rows.sum())} row(s) with negative or non-finite entries in {where}, "
                f"first row {row_start + first}; each row must be a probability vector.",
            )
        )
    row_sums = Y_block.sum(axis=1, dtype=np.float64)
    eps = np.finfo(Y_block.dtype).eps if np.issubdtype(Y_block.dtype, np.floating) else 0.0
    tolerance = max(ROW_SUM_TOLERANCE, n_classes * float(eps))
    off = ~bad_rows & ~(np.abs(row_sums - 1.0) <= tolerance)
    if off.any():
        first = int(np.argmax(off))
        problems.append(
            BlockProblem(
                "Y",
                f"has {int(off.sum())} row(s) that do not sum to 1 (tolerance {tolerance:.1e}) in "
                f"{where}, first row {row_start + first} sums to {row_sums[first]:.9g}; normalize "
                "with Y / Y.sum(axis=1, keepdims=True).",
            )
        )
    counts = np.bincount(np.argmax(Y_block, axis=1), minlength=n_classes).astype(np.int64)
    clean = np.where(bad_entries, 0.0, Y_block.astype(np.float64))
    weight_sums = clean.sum(axis=0) if weights is None else weights.astype(np.float64) @ clean
    return counts, weight_sums, problems


def block_stats(
    X_block: np.ndarray,
    labels_block: np.ndarray,
    weight_block: np.ndarray | None,
    n_classes: int,
    block_index: int,
    row_start: int,
) -> BlockStats:
    """Class counts and value problems of one block of rows (pure NumPy, no I/O).

    Parameters
    ----------
    X_block : ndarray of shape (n_rows, n_features)
    labels_block : ndarray of shape (n_rows,) or (n_rows, n_classes)
        Integer class ids, or one-hot / probability rows.
    weight_block : ndarray of shape (n_rows,) or None
    n_classes : int
    block_index : int
        Position of the block, used in messages and to order blocks in :func:`combine_stats`.
    row_start : int
        Index of the block's first row in the whole dataset, used in messages.

    Returns
    -------
    BlockStats
        Its ``problems`` name non-finite ``X``, class ids outside ``[0, n_classes)``, negative or
        non-finite weights, and probability rows that are negative or do not sum to 1.

    Examples
    --------
    >>> import numpy as np
    >>> stats = block_stats(np.zeros((3, 2)), np.array([0, 1, 1]), None, 2, 0, 0)
    >>> stats.class_counts.tolist(), stats.problems
    ([1, 2], ())
    """
    n_rows = X_block.shape[0]
    if labels_block.shape[0] != n_rows or (
        weight_block is not None and weight_block.shape[0] != n_rows
    ):
        raise ValueError(
            f"block {block_index} has {n_rows} rows of X but labels of shape "
            f"{labels_block.shape} and weights of shape "
            f"{None if weight_block is None else weight_block.shape}; blocks must cover the same "
            "rows."
        )
    where = f"block {block_index} ({_rows_text(row_start, n_rows)})"
    problems = _check_feature_block(X_block, where, row_start)
    weights = None
    if weight_block is not None:
        problems += _check_weight_block(weight_block, where, row_start)
        weights = np.where(np.isfinite(weight_block), weight_block, 0.0)
    if labels_block.ndim == 1:
        counts, weight_sums, label_problems = _class_id_counts(
            labels_block, weights, n_classes, where, row_start
        )
    else:
        counts, weight_sums, label_problems = _probability_row_counts(
            labels_block, weights, n_classes, where, row_start
        )
    weight_sum = float(n_rows) if weights is None else float(np.sum(weights, dtype=np.float64))
    return BlockStats(
        block_index=block_index,
        row_start=row_start,
        n_rows=n_rows,
        class_counts=counts,
        class_weight_sums=weight_sums,
        weight_sum=weight_sum,
        problems=tuple(problems + label_problems),
    )


def combine_stats(stats: Sequence[BlockStats], dataset_name: str) -> DatasetStats:
    """Add the statistics of every block, or raise on the first problems found.

    Parameters
    ----------
    stats : sequence of BlockStats
        One per block, in any order (they are added in block order).
    dataset_name : str
        How messages name the data, e.g. ``repr(url)``.

    Returns
    -------
    DatasetStats

    Raises
    ------
    ValueError
        Listing up to five problems (block, rows, value, fix) when any block has one, or when
        every sample weight is zero.
    """
    if not stats:
        raise ValueError(f"no blocks to check in {dataset_name}; the dataset has no rows.")
    ordered = sorted(stats, key=lambda block: block.block_index)
    problems = [problem for block in ordered for problem in block.problems]
    if problems:
        lines = [f"{p.array} in {dataset_name} {p.detail}" for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"(and {len(problems) - MAX_PROBLEMS_SHOWN} more problems)")
        raise ValueError("\n".join(lines))
    weight_sum = float(sum(block.weight_sum for block in ordered))
    if not weight_sum > 0:
        raise ValueError(
            f"every sample_weight in {dataset_name} is zero; at least one row needs a positive "
            "weight."
        )
    return DatasetStats(
        class_counts=np.sum([block.class_counts for block in ordered], axis=0, dtype=np.int64),
        class_weight_sums=np.sum([block.class_weight_sums for block in ordered], axis=0),
        n_samples=int(sum(block.n_rows for block in ordered)),
        weight_sum=weight_sum,
    )


def check_values(dataset: Dataset, *, client: Any = None) -> DatasetStats:
    """One pass over every value of ``dataset``: class counts and value problems.

    Parameters
    ----------
    dataset : Dataset
    client : distributed.Client, optional
        Runs the pass on this cluster; the default dask scheduler otherwise.

    Returns
    -------
    DatasetStats

    Raises
    ------
    ValueError
        Naming the array, block, rows and value of the first problems (see :func:`block_stats`).
    """
    tasks = _block_stats_tasks(dataset.X, dataset.labels, dataset.sample_weight, dataset.n_classes)
    return combine_stats(_compute(tasks, client=client), repr(dataset.url))


def _row_blocks(array: da.Array | None, n_blocks: int) -> list[Any]:
    if array is None:
        return [None] * n_blocks
    return list(array.to_delayed().ravel())


def _block_stats_tasks(
    X: da.Array, labels: da.Array, weights: da.Array | None, n_classes: int
) -> list[Any]:
    token = uuid.uuid4().hex
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])]).tolist()
    n_blocks = len(X.chunks[0])
    return [
        dask.delayed(block_stats, pure=True)(
            X_part,
            label_part,
            weight_part,
            n_classes,
            index,
            starts[index],
            dask_key_name=f"dsoftmax-block-stats-{token}-{index}",
        )
        for index, (X_part, label_part, weight_part) in enumerate(
            zip(
                _row_blocks(X, n_blocks),
                _row_blocks(labels, n_blocks),
                _row_blocks(weights, n_blocks),
                strict=True,
            )
        )
    ]


def _compute(tasks: Sequence[Any], *, client: Any = None, scheduler: str | None = None) -> list:
    """Results of ``tasks`` in order: on ``client``, the named scheduler, or the default one."""
    if client is not None:
        return list(client.gather(client.compute(list(tasks))))
    return list(dask.compute(*tasks, scheduler=scheduler))


# ---------------------------------------------------------------------------------------------
# Store access
# ---------------------------------------------------------------------------------------------


def _as_url(url: str | os.PathLike) -> str:
    if not isinstance(url, str | os.PathLike):
        raise TypeError(f"url must be a path or an fsspec URL string, got {type(url).__name__}.")
    return os.fspath(url)


def _store_location(url: str) -> str:
    """``url`` itself for fsspec URLs; an absolute path for local paths, because the zarr
    arrays travel to worker processes whose working directory may differ."""
    return url if "://" in url else os.path.abspath(url)


def _open_group(url: str, mode: str, storage_options: Mapping | None) -> zarr.Group:
    # zarr refuses storage_options for local paths, so only pass them when there are some.
    options = {"storage_options": dict(storage_options)} if storage_options else {}
    return zarr.open_group(_store_location(url), mode=mode, **options)


def _filesystem(url: str, storage_options: Mapping | None) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(_store_location(url), **dict(storage_options or {}))
    # Listings of object stores are cached per filesystem instance, and instances are shared.
    fs.invalidate_cache()
    return fs, path


def _prepare_target(url: str, storage_options: Mapping | None, overwrite: bool) -> str:
    """The zarr mode to create the group with, after refusing what must not be replaced."""
    fs, path = _filesystem(url, storage_options)
    if not fs.exists(path):
        return "w-"
    if fs.isdir(path) and not fs.ls(path):
        return "w"
    if not overwrite:
        raise FileExistsError(
            f"{url!r} already exists; pass overwrite=True to replace it or choose another path."
        )
    if not fs.exists(f"{path.rstrip('/')}/zarr.json"):
        raise FileExistsError(
            f"{url!r} exists and is not a Zarr group; refusing to delete it even with "
            "overwrite=True. Remove it yourself or choose another path."
        )
    return "w"


def _compressors(codec: str) -> Any:
    if codec == "zstd":
        return (zarr.codecs.ZstdCodec(level=1),)
    if codec == "lz4":
        return (zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)
    if codec == "none":
        return None
    raise ValueError(f"codec must be one of {list(CODECS)}, got {codec!r}.")


def _create_row_array(
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunk_rows: int,
    compressors: Any,
) -> zarr.Array:
    # Zarr skips chunks equal to the fill value unless told otherwise; the completeness check of
    # open_dataset needs every chunk stored.
    return group.create_array(
        name,
        shape=shape,
        dtype=dtype,
        chunks=(chunk_rows, *shape[1:]),
        compressors=compressors,
        config={"write_empty_chunks": True},
    )


def _write_row_block(
    targets: Mapping[str, zarr.Array], blocks: Mapping[str, np.ndarray], row_start: int
) -> dict[str, str]:
    """Worker task: write one block of rows of every array; return each chunk's sha256."""
    digests = {}
    for name, block in blocks.items():
        target = targets[name]
        data = np.ascontiguousarray(block, dtype=target.dtype)
        target[row_start : row_start + data.shape[0]] = data
        # Hash the little-endian bytes (what the store holds) so digests agree across machines.
        stored_bytes = data.astype(data.dtype.newbyteorder("<"), copy=False)
        digests[name] = hashlib.sha256(stored_bytes.view(np.uint8).reshape(-1)).hexdigest()
    return digests


def _content_digest(block_digests: Sequence[Mapping[str, str]]) -> str:
    """Combine per-chunk digests in a fixed order: array by array, chunk by chunk."""
    combined = hashlib.sha256()
    for name in ROW_ARRAYS:
        for index, digests in enumerate(block_digests):
            if name in digests:
                combined.update(f"{name}/{index}:{digests[name]};".encode())
    return combined.hexdigest()


def _dataset_attrs(classes: np.ndarray, content_digest: str) -> dict[str, Any]:
    return {
        FORMAT_ATTR: FORMAT_VERSION,
        "classes": classes.tolist(),
        "n_classes": int(classes.shape[0]),
        CONTENT_DIGEST_ATTR: content_digest,
    }


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RowInputs:
    """Validated inputs, as dask arrays chunked like the store will be."""

    arrays: dict[str, da.Array]
    classes: np.ndarray
    scheduler: str | None

    @property
    def n_classes(self) -> int:
        return int(self.classes.shape[0])


def _is_dask(array: Any) -> bool:
    return isinstance(array, da.Array)


def _as_input_array(array: Any, name: str) -> np.ndarray | da.Array:
    if _is_dask(array):
        return array
    result = np.asarray(array)
    if result.dtype == object and name == "X":
        raise TypeError(f"{name} has dtype object; pass a numeric float32 or float64 array.")
    return result


def _check_feature_input(X: Any) -> None:
    if X.ndim != 2:
        raise ValueError(
            f"X must be 2-D (n_samples, n_features), got shape {X.shape}; reshape it, e.g. "
            "X.reshape(-1, 1) for a single feature."
        )
    _check_known_rows(X, "X")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X needs at least one row and one column, got shape {X.shape}.")
    if X.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"X must be float32 or float64, got dtype {X.dtype}; convert it with "
            "X.astype(np.float32) (or np.float64 to keep full precision)."
        )


def _check_known_rows(array: Any, name: str) -> None:
    if _is_dask(array) and any(math.isnan(rows) for rows in array.chunks[0]):
        raise ValueError(
            f"{name} is a dask array of unknown chunk sizes; call {name}.compute_chunk_sizes() "
            "first."
        )


def _check_length(array: Any, name: str, n_samples: int, ndim: int) -> None:
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}.")
    _check_known_rows(array, name)
    if array.shape[0] != n_samples:
        raise ValueError(
            f"{name} has {array.shape[0]} rows but X has {n_samples}; they must describe the "
            "same samples."
        )


def _check_classes(classes: np.ndarray, source: str) -> np.ndarray:
    if classes.ndim != 1:
        raise ValueError(f"classes must be 1-D, got shape {classes.shape}.")
    if classes.dtype.kind not in "biufUO":
        raise TypeError(f"classes must be numbers or strings, got dtype {classes.dtype}.")
    for value in classes.tolist():
        if not isinstance(value, bool | int | float | str):
            raise TypeError(
                f"class labels must be numbers or strings, got {value!r} of type "
                f"{type(value).__name__}."
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"class labels must be finite, {source} holds {value!r}.")
    try:
        unique = np.unique(classes)
    except TypeError as error:
        raise TypeError(
            f"class labels must be all numbers or all strings, {source} mixes them: {error}"
        ) from error
    if unique.shape[0] != classes.shape[0]:
        raise ValueError(f"classes must be distinct, got {classes.tolist()}.")
    if classes.shape[0] < 2:
        raise ValueError(
            f"a classifier needs at least 2 classes; {source} holds {classes.tolist()}. Pass "
            "classes=[...] to declare the others, or add rows of other classes."
        )
    if classes.dtype == object:
        # JSON round trip of the attribute turns an all-string object array into '<U'.
        classes = np.asarray(classes.tolist())
    return classes


def _unique_labels(y: np.ndarray | da.Array, scheduler: str | None) -> np.ndarray:
    try:
        if not _is_dask(y):
            return np.unique(y)
        parts = _compute(
            [dask.delayed(np.unique)(part) for part in y.to_delayed()], scheduler=scheduler
        )
        return np.unique(np.concatenate(parts))
    except TypeError as error:
        raise TypeError(
            f"labels in y must be all numbers or all strings, got a mix: {error}"
        ) from error


def _labels_to_ids(labels: np.ndarray, sorted_classes: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Class ids of ``labels`` (``classes[order]`` is ``sorted_classes``); unknown labels raise."""
    if labels.dtype.kind in "UO" or sorted_classes.dtype.kind in "UO":
        # Comparing as objects avoids truncating strings to the width of the class dtype.
        labels = labels.astype(object)
        sorted_classes = sorted_classes.astype(object)
    try:
        positions = np.searchsorted(sorted_classes, labels)
        clipped = np.minimum(positions, sorted_classes.shape[0] - 1)
        known = sorted_classes[clipped] == labels
    except TypeError as error:
        raise TypeError(
            f"labels in y cannot be compared with classes {sorted_classes.tolist()}: {error}"
        ) from error
    if not np.all(known):
        unknown = np.unique(labels[~known])[:5].tolist()
        raise ValueError(
            f"y holds label(s) {unknown} that are not in classes {sorted_classes.tolist()}; "
            "add them to classes or drop those rows."
        )
    return order[clipped].astype(np.int32)


def _label_ids(
    y: np.ndarray | da.Array, classes: Any, scheduler: str | None
) -> tuple[np.ndarray | da.Array, np.ndarray]:
    if classes is None:
        classes = _check_classes(_unique_labels(y, scheduler), "y")
    else:
        classes = _check_classes(np.asarray(classes), "classes")
    order = np.argsort(classes, kind="stable")
    sorted_classes = classes[order]
    if _is_dask(y):
        ids = y.map_blocks(_labels_to_ids, sorted_classes, order, dtype=np.int32)
    else:
        ids = _labels_to_ids(y, sorted_classes, order)
    return ids, classes


def _soft_labels(Y: Any, n_samples: int, classes: Any, dtype: np.dtype) -> tuple[Any, np.ndarray]:
    _check_length(Y, "Y", n_samples, 2)
    n_classes = Y.shape[1]
    if not np.issubdtype(Y.dtype, np.floating):
        if not (np.issubdtype(Y.dtype, np.integer) or Y.dtype == bool):
            raise TypeError(f"Y must hold numbers (one-hot or probability rows), got {Y.dtype}.")
        Y = Y.astype(dtype)
    classes = np.arange(n_classes) if classes is None else np.asarray(classes)
    classes = _check_classes(classes, "classes")
    if classes.shape[0] != n_classes:
        raise ValueError(
            f"Y has {n_classes} columns but classes has {classes.shape[0]} entries; pass one "
            "class label per column of Y."
        )
    return Y, classes


def _weights_input(sample_weight: Any, n_samples: int) -> Any:
    _check_length(sample_weight, "sample_weight", n_samples, 1)
    if np.issubdtype(sample_weight.dtype, np.floating):
        return sample_weight
    if np.issubdtype(sample_weight.dtype, np.integer) or sample_weight.dtype == bool:
        return sample_weight.astype(np.float64)
    raise TypeError(f"sample_weight must hold numbers, got dtype {sample_weight.dtype}.")


def _to_row_chunks(array: Any, chunk_rows: int) -> da.Array:
    chunks = (chunk_rows, *array.shape[1:])
    if _is_dask(array):
        return array.rechunk(chunks)
    # name=False: do not hash the whole input just to name the graph.
    return da.from_array(array, chunks=chunks, name=False)


def _prepare_inputs(
    X: Any, y: Any, Y: Any, sample_weight: Any, classes: Any, chunk_rows: int
) -> _RowInputs:
    X = _as_input_array(X, "X")
    _check_feature_input(X)
    n_samples = X.shape[0]
    if (y is None) == (Y is None):
        raise ValueError(
            "pass exactly one of y (class labels, one per row) and Y (one-hot or probability "
            f"rows); got {'both' if y is not None else 'neither'}."
        )
    inputs = [X, y, Y, sample_weight]
    scheduler = None if any(_is_dask(a) for a in inputs) else "threads"
    arrays = {"X": X}
    if y is not None:
        y = _as_input_array(y, "y")
        _check_length(y, "y", n_samples, 1)
        arrays["y"], classes = _label_ids(y, classes, scheduler)
    else:
        arrays["Y"], classes = _soft_labels(_as_input_array(Y, "Y"), n_samples, classes, X.dtype)
    if sample_weight is not None:
        arrays["sample_weight"] = _weights_input(
            _as_input_array(sample_weight, "sample_weight"), n_samples
        )
    rows = min(chunk_rows, n_samples)
    chunked = {name: _to_row_chunks(array, rows) for name, array in arrays.items()}
    return _RowInputs(chunked, classes, scheduler)


def _check_chunk_rows(chunk_rows: Any) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer):
        raise TypeError(f"chunk_rows must be an int, got {type(chunk_rows).__name__}.")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}.")
    return int(chunk_rows)


def _write_tasks(targets: Mapping[str, zarr.Array], arrays: Mapping[str, da.Array]) -> list[Any]:
    token = uuid.uuid4().hex
    row_chunks = arrays["X"].chunks[0]
    starts = np.concatenate([[0], np.cumsum(row_chunks)]).tolist()
    parts = {name: _row_blocks(array, len(row_chunks)) for name, array in arrays.items()}
    shared_targets = dask.delayed(dict(targets), traverse=False)
    return [
        dask.delayed(_write_row_block, pure=False)(
            shared_targets,
            {name: parts[name][index] for name in arrays},
            starts[index],
            dask_key_name=f"dsoftmax-write-rows-{token}-{index}",
        )
        for index in range(len(row_chunks))
    ]


def write_dataset(
    url: str | os.PathLike,
    X: Any,
    y: Any = None,
    *,
    Y: Any = None,
    sample_weight: Any = None,
    classes: Any = None,
    chunk_rows: int = 65536,
    codec: str = "zstd",
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Validate arrays and write them as a dataset.

    Parameters
    ----------
    url : str or path
        Local path or fsspec URL of the new group.
    X : ndarray or dask array of shape (n_samples, n_features)
        float32 or float64 (anything else raises TypeError: convert with ``X.astype``).
    y : array-like or dask array of shape (n_samples,), optional
        Labels of any kind (ints, floats, strings); stored as class ids into ``classes``.
    Y : ndarray or dask array of shape (n_samples, n_classes), optional
        One-hot or probability rows, instead of ``y``; integer one-hot is stored in X's dtype.
    sample_weight : ndarray or dask array of shape (n_samples,), optional
        Finite, non-negative; stored as float.
    classes : array-like of shape (n_classes,), optional
        Every label value, in id order. Default: ``np.unique(y)``, or ``0..n_classes-1`` with
        ``Y``. Every label of ``y`` must be in it.
    chunk_rows : int
        Rows per chunk (the last may be shorter); dask inputs are rechunked to it.
    codec : {"zstd", "lz4", "none"}
        Compression: zstd level 1, Blosc-lz4 with byte shuffle, or none. Measured on
        200k x 128 float32, 65536-row chunks, a shared 2-core machine (median of 9 reads):

        ==========  ======================  =====================  ==========
        codec       Gaussian X: size, read  rounded to 2 decimals  write
        ==========  ======================  =====================  ==========
        zstd (1)    0.92x, 0.35-0.42 s      0.66x, 0.36-0.51 s     0.7-1.9 s
        lz4         0.94x, 0.24 s           0.94x, 0.25 s          0.8-1.2 s
        none        1.00x, 0.21 s           1.00x, 0.22 s          1.0-1.3 s
        ==========  ======================  =====================  ==========

        (zstd level 3 shrinks the rounded data to 0.45x but reads 1.5x and writes 1.8x
        slower; "none" also stores the last chunk padded to full size.) zstd is the default
        because real features compress while noise does not, a fit reads the data once and
        then keeps blocks in memory, and on object stores the bytes moved dominate; pick
        "lz4" or "none" for data on a fast local disk.
    storage_options : dict, optional
        fsspec options (credentials, endpoint) for URLs.
    overwrite : bool
        Replace an existing dataset at ``url``. Nothing existing is touched before every check
        passed.

    Returns
    -------
    Dataset
        The written dataset, opened.

    Notes
    -----
    Every check runs before the store is touched: shapes, dtypes, lengths, labels in
    ``classes``, and the values (:func:`block_stats`: finite ``X``, weights, probability rows).
    Dask inputs are therefore read twice (check, then write) -- thrice with ``y`` of unknown
    classes, whose unique values come first; persist them first if that is costly. The write
    itself runs one dask task per chunk of rows, on the default scheduler for dask inputs
    (a distributed client when one is active) and on local threads for NumPy inputs.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.zarr")
    >>> data = write_dataset(path, np.eye(3, dtype=np.float32), np.array(["a", "b", "b"]))
    >>> data.classes.tolist(), data.y.compute().tolist()
    (['a', 'b'], [0, 1, 1])
    """
    url = _as_url(url)
    compressors = _compressors(codec)
    chunk_rows = _check_chunk_rows(chunk_rows)
    inputs = _prepare_inputs(X, y, Y, sample_weight, classes, chunk_rows)
    tasks = _block_stats_tasks(
        inputs.arrays["X"],
        inputs.arrays.get("y", inputs.arrays.get("Y")),
        inputs.arrays.get("sample_weight"),
        inputs.n_classes,
    )
    combine_stats(_compute(tasks, scheduler=inputs.scheduler), "the input")
    mode = _prepare_target(url, storage_options, overwrite)
    group = _open_group(url, mode, storage_options)
    targets = {
        name: _create_row_array(
            group, name, array.shape, array.dtype, array.chunks[0][0], compressors
        )
        for name, array in inputs.arrays.items()
    }
    digests = _compute(_write_tasks(targets, inputs.arrays), scheduler=inputs.scheduler)
    group.attrs.update(_dataset_attrs(inputs.classes, _content_digest(digests)))
    return open_dataset(url, storage_options=storage_options)


# ---------------------------------------------------------------------------------------------
# Opening and structural validation
# ---------------------------------------------------------------------------------------------


def _open_existing_group(url: str, storage_options: Mapping | None) -> zarr.Group:
    try:
        return _open_group(url, "r", storage_options)
    except (FileNotFoundError, GroupNotFoundError) as error:
        raise FileNotFoundError(
            f"no Zarr group at {url!r}; check the path (and storage_options for URLs), or "
            "create it with dsoftmax.data.write_dataset."
        ) from error
    except ContainsArrayError as error:
        raise ValueError(
            f"{url!r} is a single Zarr array, not a dsoftmax dataset (a group holding X and y); "
            f"{_rewrite_fix()}."
        ) from error


def _check_attrs(attrs: Mapping[str, Any], url: str) -> int:
    """Validate the group attributes; return ``n_classes``."""
    fix = "write it with dsoftmax.data.write_dataset (or convert_numpy)"
    if FORMAT_ATTR not in attrs:
        raise ValueError(
            f"{url!r} is not a dsoftmax dataset: the group attribute {FORMAT_ATTR!r} is missing "
            f"(or the write was interrupted); {fix}."
        )
    version = attrs[FORMAT_ATTR]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"{url!r} has an invalid {FORMAT_ATTR} {version!r}; expected an int >= 1. {fix}."
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{url!r} uses dataset format {version}, newer than this dsoftmax reads "
            f"(<= {FORMAT_VERSION}); upgrade dsoftmax."
        )
    for name in ("classes", "n_classes", CONTENT_DIGEST_ATTR):
        if name not in attrs:
            raise ValueError(
                f"{url!r} is not a complete dsoftmax dataset: the group attribute {name!r} is "
                f"missing; {fix}."
            )
    n_classes = attrs["n_classes"]
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(
            f"{url!r} declares n_classes={n_classes!r}; a classifier needs an int >= 2 classes. "
            f"{fix} with at least two classes."
        )
    classes = attrs["classes"]
    if not isinstance(classes, list) or len(classes) != n_classes:
        found = len(classes) if isinstance(classes, list) else type(classes).__name__
        raise ValueError(
            f"the classes attribute of {url!r} has {found} entries but n_classes is {n_classes}; "
            f"{fix}."
        )
    if len({json.dumps(label) for label in classes}) != n_classes:
        raise ValueError(f"the classes attribute of {url!r} repeats labels: {classes}; {fix}.")
    return n_classes


def _member_arrays(group: zarr.Group, url: str) -> dict[str, zarr.Array]:
    present = set(group.array_keys())
    if "X" not in present:
        raise ValueError(f"{url!r} has no array 'X'; {_rewrite_fix()}.")
    labels = [name for name in ("y", "Y") if name in present]
    if len(labels) != 1:
        found = "both y and Y" if labels else "neither y nor Y"
        raise ValueError(
            f"{url!r} must hold exactly one of 'y' (class ids) and 'Y' (probability rows), found "
            f"{found}; delete one or write the dataset again."
        )
    return {name: group[name] for name in ROW_ARRAYS if name in present}


def _rewrite_fix() -> str:
    return "write the dataset with dsoftmax.data.write_dataset"


def _check_feature_array(X: zarr.Array, url: str) -> None:
    if X.ndim != 2:
        raise ValueError(
            f"X in {url!r} must be 2-D (n_samples, n_features), got shape {X.shape}; "
            f"{_rewrite_fix()}."
        )
    if X.dtype not in (np.float32, np.float64):
        raise TypeError(
            f"X in {url!r} has dtype {X.dtype}; it must be float32 or float64. Rewrite it with "
            "X.astype(np.float32)."
        )
    if X.chunks[1] != X.shape[1]:
        raise ValueError(
            f"X in {url!r} is chunked along features: chunks {X.chunks} for shape {X.shape}. "
            f"Rewrite X with chunks=({X.chunks[0]}, {X.shape[1]})."
        )


def _check_label_arrays(arrays: Mapping[str, zarr.Array], n_classes: int, url: str) -> None:
    n_samples = arrays["X"].shape[0]
    if "y" in arrays:
        y = arrays["y"]
        if y.ndim != 1 or y.shape[0] != n_samples:
            raise ValueError(
                f"y in {url!r} has shape {y.shape}; expected ({n_samples},), one class id per "
                "row of X."
            )
        if not np.issubdtype(y.dtype, np.integer):
            raise TypeError(
                f"y in {url!r} has dtype {y.dtype}; class ids must be integers. Rewrite y with "
                "y.astype(np.int32), or let write_dataset map the labels."
            )
    if "Y" in arrays:
        Y = arrays["Y"]
        if Y.shape != (n_samples, n_classes):
            raise ValueError(
                f"Y in {url!r} has shape {Y.shape}; expected ({n_samples}, {n_classes}) "
                "(one row per sample, one column per class)."
            )
        if not np.issubdtype(Y.dtype, np.floating):
            raise TypeError(f"Y in {url!r} has dtype {Y.dtype}; probability rows must be float.")
        if Y.chunks[1] != n_classes:
            raise ValueError(
                f"Y in {url!r} is chunked along classes: chunks {Y.chunks}. Rewrite Y with "
                f"chunks=({Y.chunks[0]}, {n_classes})."
            )
    if "sample_weight" in arrays:
        weights = arrays["sample_weight"]
        if weights.ndim != 1 or weights.shape[0] != n_samples:
            raise ValueError(
                f"sample_weight in {url!r} has shape {weights.shape}; expected ({n_samples},), "
                "one weight per row of X."
            )
        if weights.dtype.kind not in "iuf":
            raise TypeError(
                f"sample_weight in {url!r} has dtype {weights.dtype}; weights must be numbers."
            )


def _check_row_chunks(arrays: Mapping[str, zarr.Array], url: str) -> None:
    X_rows = arrays["X"].chunks[0]
    for name, array in arrays.items():
        rows = array.chunks[0]
        if rows != X_rows:
            wanted = (X_rows, *array.shape[1:])
            raise ValueError(
                f"X and {name} in {url!r} have different row chunks: X ({X_rows},) vs {name} "
                f"({rows},). Rewrite {name} with chunks={wanted}."
            )


async def _collect(keys: Any) -> list[str]:
    return [key async for key in keys]


def _stored_keys(array: zarr.Array) -> set[str]:
    """Keys stored under ``array``, relative to it (one listing, no data read)."""
    store = array.store_path.store
    if hasattr(store, "fs"):
        # fsspec caches directory listings per (shared) filesystem instance.
        store.fs.invalidate_cache()
    prefix = f"{array.store_path.path}/" if array.store_path.path else ""
    keys = sync(_collect(store.list_prefix(prefix)))
    return {key.removeprefix(prefix) for key in keys}


def _check_chunks_present(arrays: Mapping[str, zarr.Array], url: str) -> None:
    for name, array in arrays.items():
        # Zarr reads a missing chunk as fill values without any error.
        step = array.shards or array.chunks
        grid = [
            range(math.ceil(size / size_step))
            for size, size_step in zip(array.shape, step, strict=True)
        ]
        stored = _stored_keys(array)
        missing = [
            coords
            for coords in _grid_coords(grid)
            if array.metadata.encode_chunk_key(coords) not in stored
        ]
        if missing:
            # Row arrays have one chunk across the other axes, so a row index names a chunk.
            shown = ", ".join(
                f"{coords[0]} ({_chunk_rows_text(coords[0], step[0], array.shape[0])})"
                for coords in missing[:MAX_PROBLEMS_SHOWN]
            )
            more = len(missing) - MAX_PROBLEMS_SHOWN
            n_expected = math.prod(len(axis) for axis in grid)
            raise ValueError(
                f"{name} in {url!r} is missing {len(missing)} of its {n_expected} chunks "
                f"(chunk indices {shown}{f' and {more} more' if more > 0 else ''}); Zarr would "
                "read them as zeros. The write was incomplete or the store lost objects: write "
                "the dataset again."
            )


def _chunk_rows_text(index: int, chunk_rows: int, n_rows: int) -> str:
    start = index * chunk_rows
    return _rows_text(start, min(chunk_rows, n_rows - start))


def _grid_coords(grid: Sequence[range]) -> Iterable[tuple[int, ...]]:
    if not grid:
        yield ()
        return
    for first in grid[0]:
        for rest in _grid_coords(grid[1:]):
            yield (first, *rest)


def _fingerprint(attrs: Mapping[str, Any], arrays: Mapping[str, zarr.Array]) -> str:
    metadata = {
        "format": attrs[FORMAT_ATTR],
        "classes": attrs["classes"],
        "n_classes": attrs["n_classes"],
        "arrays": {
            name: {
                "shape": list(array.shape),
                "dtype": str(array.dtype),
                "chunks": list(array.chunks),
            }
            for name, array in arrays.items()
        },
        "content": attrs[CONTENT_DIGEST_ATTR],
    }
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading chunks
# ---------------------------------------------------------------------------------------------

#: Errors of the class names below (from optional libraries, so matched by name) are transient.
_TRANSIENT_ERROR_CLASSES = frozenset(
    {
        # botocore: endpoint, proxy and connect-timeout errors; read timeouts, closed
        # connections and broken streams; a body shorter than announced.
        ("botocore.exceptions", "ConnectionError"),
        ("botocore.exceptions", "HTTPClientError"),
        ("botocore.exceptions", "IncompleteReadError"),
        # aiohttp: connection errors, and a response body cut short.
        ("aiohttp.client_exceptions", "ClientConnectionError"),
        ("aiohttp.client_exceptions", "ClientPayloadError"),
    }
)
#: OSErrors that retrying does not cure: a decoder's complaint, or a lasting refusal.
_LASTING_OS_ERRORS = (
    gzip.BadGzipFile,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


#: Refusals of the reader's credentials (besides ``PermissionError``, which s3fs and local
#: files raise): the store may be intact.
_REFUSAL_ERROR_CLASSES = frozenset(
    {
        ("botocore.exceptions", "NoCredentialsError"),
        ("botocore.exceptions", "PartialCredentialsError"),
        ("botocore.exceptions", "CredentialRetrievalError"),
    }
)


def _error_in(error: BaseException, classes: frozenset[tuple[str, str]]) -> bool:
    return any((cls.__module__, cls.__qualname__) in classes for cls in type(error).__mro__)


def _is_refusal(error: BaseException) -> bool:
    """Whether ``error`` refused the reader access (missing or rejected credentials)."""
    return isinstance(error, PermissionError) or _error_in(error, _REFUSAL_ERROR_CLASSES)


def _is_transient(error: BaseException) -> bool:
    """Whether ``error`` may go away if the read is tried again (network and I/O trouble);
    decode errors and refusals are never transient."""
    if isinstance(error, _LASTING_OS_ERRORS):
        return False
    if isinstance(error, OSError):  # also TimeoutError and ConnectionError
        return True
    return _error_in(error, _TRANSIENT_ERROR_CLASSES)


def _retry_pause(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
    return min(READ_RETRY_BACKOFF * 2.0**attempt, READ_RETRY_MAX_PAUSE)


@dataclass(frozen=True, eq=False)
class _ChunkSource:
    """What a chunk-read task needs: one array of a store, and how messages name it.

    The zarr array pickles as its store's location and options (no open connection), so a
    remote worker reopens the store itself; it sits in the graph once, under its own key.
    """

    array: zarr.Array
    url: str
    name: str
    read_retries: int

    def chunk_key(self, row_start: int) -> str:
        # A sharded array stores whole shards: the key of the shard holding the chunk.
        step = (self.array.shards or self.array.chunks)[0]
        coords = (row_start // step,) + (0,) * (self.array.ndim - 1)
        return f"{self.array.path}/{self.array.metadata.encode_chunk_key(coords)}"


def _chunk_read_error(
    source: _ChunkSource, chunk_index: int, rows: tuple[int, int], error: Exception, tries: int
) -> ChunkReadError:
    """The error for a chunk whose last try (of ``tries``) failed with ``error``."""
    key = source.chunk_key(rows[0])
    where = (
        f"chunk {chunk_index} of {source.name} in {source.url!r} "
        f"({_rows_text(rows[0], rows[1] - rows[0])}, store key {key!r})"
    )
    cause = f"{type(error).__name__}: {error}"
    rewrite = (
        "the store is damaged: rewrite it, e.g. with dsoftmax.data.write_dataset, "
        "convert_numpy or `dsoftmax convert`, from the source data"
    )
    if _is_refusal(error):
        message = (
            f"cannot read {where}: access refused ({cause}). The workers read the chunks "
            "themselves, with the storage_options the dataset was opened with (without them, "
            "with their own environment's credentials): check that credentials reach the "
            "workers and may read this store. The store itself is probably intact."
        )
    elif _is_transient(error):
        message = (
            f"cannot read {where} after {tries} {'try' if tries == 1 else 'tries'} "
            f"(read_retries={source.read_retries}): {cause}. Check that the store is reachable "
            "(network, endpoint, credentials in storage_options) and try again, or open the "
            f"dataset with a larger read_retries; if the error persists, {rewrite}."
        )
    else:
        message = f"cannot read {where}: {cause}. {rewrite[0].upper()}{rewrite[1:]}."
    return ChunkReadError(
        message,
        url=source.url,
        array=source.name,
        chunk_index=chunk_index,
        rows=rows,
        key=key,
    )


def _read_row_chunk(source: _ChunkSource, chunk_index: int, start: int, stop: int) -> np.ndarray:
    """Worker task: rows ``start:stop`` (one chunk) of one array, read from the store.

    Transient I/O errors are retried ``source.read_retries`` times with a doubling pause; any
    other failure, or a transient one that outlasts the retries, raises :class:`ChunkReadError`.
    """
    retries = 0
    while True:
        try:
            return source.array[start:stop]
        except MemoryError:
            raise
        except Exception as error:
            if retries == source.read_retries or not _is_transient(error):
                raise _chunk_read_error(
                    source, chunk_index, (start, stop), error, retries + 1
                ) from error
        # Outside the except block, so a later error does not chain every earlier one.
        time.sleep(_retry_pause(retries))
        retries += 1


def _row_chunk_bounds(array: zarr.Array) -> list[tuple[int, int]]:
    """``(start, stop)`` of every chunk of rows: the Zarr chunks, the last one shorter."""
    n_rows, chunk_rows = array.shape[0], array.chunks[0]
    return [(start, min(start + chunk_rows, n_rows)) for start in range(0, n_rows, chunk_rows)]


def _lazy(array: zarr.Array, name: str, fingerprint: str, url: str, read_retries: int) -> da.Array:
    """A dask array with one task per Zarr chunk of rows, each a :func:`_read_row_chunk` call."""
    # Deterministic: two opens of one store share dask keys (and blocks already in memory).
    token = hashlib.sha256(f"{url}\0{fingerprint}".encode()).hexdigest()[:16]
    dask_name = f"dsoftmax-{name}-{token}"
    source_key = f"{dask_name}-source"
    other_axes = (0,) * (array.ndim - 1)
    bounds = _row_chunk_bounds(array)
    graph: dict[Any, Any] = {source_key: _ChunkSource(array, url, name, read_retries)}
    for index, (start, stop) in enumerate(bounds):
        graph[(dask_name, index, *other_axes)] = (_read_row_chunk, source_key, index, start, stop)
    chunks = (tuple(stop - start for start, stop in bounds), *((size,) for size in array.shape[1:]))
    return da.Array(
        HighLevelGraph.from_collections(dask_name, graph, dependencies=()),
        dask_name,
        chunks=chunks,
        dtype=array.dtype,
        meta=np.empty((0,) * array.ndim, dtype=array.dtype),
    )


def _check_read_retries(read_retries: Any) -> int:
    if (
        isinstance(read_retries, bool)
        or not isinstance(read_retries, int | np.integer)
        or read_retries < 0
    ):
        raise ValueError(
            f"read_retries must be an int >= 0 (retries of a chunk read after a transient I/O "
            f"error), got {read_retries!r}; the default is {DEFAULT_READ_RETRIES}."
        )
    return int(read_retries)


def open_dataset(
    url: str | os.PathLike,
    *,
    storage_options: dict | None = None,
    read_retries: int = DEFAULT_READ_RETRIES,
) -> Dataset:
    """Open and structurally validate a dataset, without reading its data.

    Parameters
    ----------
    url : str or path
        Local path or fsspec URL (``s3://bucket/train.zarr``).
    storage_options : dict, optional
        fsspec options (credentials, endpoint).
    read_retries : int, default=3
        Retries of a chunk read that failed with a transient I/O error (``OSError`` such as a
        connection reset or a timeout, or a botocore/aiohttp connection error), after pauses
        of 0.1 s, 0.2 s, 0.4 s, ... (at most 5 s). Decode errors are never retried. A chunk
        that still cannot be read raises :class:`ChunkReadError` when the data is computed.

    Returns
    -------
    Dataset

    Raises
    ------
    FileNotFoundError
        When there is no Zarr group at ``url``.
    ValueError, TypeError
        When the group is not a dsoftmax dataset of a supported format, or an array has the
        wrong shape, dtype or chunking, row chunks disagree between arrays, the class
        attributes disagree, or a chunk is missing from the store. Values are checked by
        :func:`check_values`; a damaged chunk raises :class:`ChunkReadError` (a ValueError)
        when it is read.
    """
    url = _as_url(url)
    read_retries = _check_read_retries(read_retries)
    group = _open_existing_group(url, storage_options)
    attrs = dict(group.attrs)
    n_classes = _check_attrs(attrs, url)
    arrays = _member_arrays(group, url)
    _check_feature_array(arrays["X"], url)
    _check_label_arrays(arrays, n_classes, url)
    _check_row_chunks(arrays, url)
    _check_chunks_present(arrays, url)
    fingerprint = _fingerprint(attrs, arrays)
    lazy = {
        name: _lazy(array, name, fingerprint, url, read_retries) for name, array in arrays.items()
    }
    return Dataset(
        url=url,
        storage_options=None if storage_options is None else dict(storage_options),
        X=lazy["X"],
        y=lazy.get("y"),
        Y=lazy.get("Y"),
        sample_weight=lazy.get("sample_weight"),
        classes=np.asarray(attrs["classes"]),
        fingerprint=fingerprint,
        read_retries=read_retries,
    )


# ---------------------------------------------------------------------------------------------
# Synthetic data
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _teacher(seed: int, n_classes: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded teacher ``(W*, b*)``; cached, as every chunk of a worker needs it."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    coef = rng.standard_normal((n_classes, n_features)) / math.sqrt(n_features)
    intercept = 0.2 * rng.standard_normal(n_classes)
    return coef, intercept


def _teacher_chunk(
    seed: int,
    teacher_seed: int,
    chunk_index: int,
    n_rows: int,
    n_features: int,
    n_classes: int,
    dtype: str,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of chunk ``chunk_index``: a function of the seed and the index only."""
    coef, intercept = _teacher(teacher_seed, n_classes, n_features)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, chunk_index)))
    X = rng.standard_normal((n_rows, n_features), dtype=np.dtype(dtype).type)
    y = np.argmax(X.astype(np.float64) @ coef.T + intercept, axis=1)
    flipped = rng.random(n_rows) < noise
    y[flipped] = rng.integers(0, n_classes, size=int(flipped.sum()))
    return X, y.astype(np.int32)


def _generate_and_write_chunk(
    targets: Mapping[str, zarr.Array],
    seed: int,
    teacher_seed: int,
    chunk_index: int,
    row_start: int,
    n_rows: int,
    n_classes: int,
    noise: float,
) -> dict[str, str]:
    """Worker task: make one chunk of teacher data and write it to the store."""
    X_target = targets["X"]
    X, y = _teacher_chunk(
        seed,
        teacher_seed,
        chunk_index,
        n_rows,
        X_target.shape[1],
        n_classes,
        str(X_target.dtype),
        noise,
    )
    return _write_row_block(targets, {"X": X, "y": y}, row_start)


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def make_classification(
    url: str | os.PathLike,
    n_samples: int,
    n_features: int,
    n_classes: int,
    *,
    chunk_rows: int = 65536,
    seed: int = 0,
    dtype: str = "float32",
    noise: float = 0.1,
    teacher_seed: int | None = None,
    client: Any = None,
    codec: str = "zstd",
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Write synthetic data labelled by a seeded linear "teacher", chunk by chunk, in parallel.

    Rows ``X_i ~ N(0, I)``; the teacher draws ``W*`` (n_classes, n_features) with entries
    ``N(0, 1/n_features)`` and an intercept ``b* ~ N(0, 0.04)``. Each label is
    ``argmax_k (X_i W*ᵀ + b*)_k``, replaced by a uniformly drawn class with probability
    ``noise``. A linear model can thus reach about ``1 - noise·(n_classes-1)/n_classes``
    accuracy (91% for 10 classes and the default noise).

    Chunk ``i`` comes from ``np.random.default_rng(SeedSequence(seed, spawn_key=(1, i)))``
    alone, so it has the same bytes whichever worker makes it, on any number of workers. Each
    chunk is one dask task that makes and writes it: no process ever holds the whole array,
    so datasets larger than memory can be made.

    Parameters
    ----------
    url : str or path
    n_samples, n_features, n_classes : int
        ``n_classes >= 2``.
    chunk_rows : int
    seed : int
    dtype : {"float32", "float64"}
    noise : float in [0, 1]
        Fraction of labels replaced by a uniform draw.
    teacher_seed : int, optional
        Seed of the teacher alone (default: ``seed``). A test set for a training set made with
        ``seed=s`` uses another ``seed`` and ``teacher_seed=s``: new rows, same teacher.
    client : distributed.Client, optional
        Runs the chunk tasks on this cluster; the default dask scheduler otherwise.
    codec, storage_options, overwrite
        As in :func:`write_dataset`.

    Returns
    -------
    Dataset
        Classes ``0..n_classes-1``.
    """
    url = _as_url(url)
    n_samples = _check_positive_int(n_samples, "n_samples")
    n_features = _check_positive_int(n_features, "n_features")
    n_classes = _check_positive_int(n_classes, "n_classes", minimum=2)
    chunk_rows = min(_check_chunk_rows(chunk_rows), n_samples)
    seed = _check_positive_int(seed, "seed", minimum=0)
    teacher_seed = (
        seed
        if teacher_seed is None
        else _check_positive_int(teacher_seed, "teacher_seed", minimum=0)
    )
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}.")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise!r}.")
    compressors = _compressors(codec)
    mode = _prepare_target(url, storage_options, overwrite)
    group = _open_group(url, mode, storage_options)
    targets = {
        "X": _create_row_array(
            group, "X", (n_samples, n_features), np.dtype(dtype), chunk_rows, compressors
        ),
        "y": _create_row_array(
            group, "y", (n_samples,), np.dtype(np.int32), chunk_rows, compressors
        ),
    }
    digests = _compute(
        _generation_tasks(
            targets, n_samples, n_classes, chunk_rows, (seed, teacher_seed), float(noise)
        ),
        client=client,
    )
    classes = np.arange(n_classes)
    attrs = _dataset_attrs(classes, _content_digest(digests))
    attrs["generator"] = {
        "name": "make_classification",
        "seed": seed,
        "teacher_seed": teacher_seed,
        "noise": float(noise),
    }
    group.attrs.update(attrs)
    return open_dataset(url, storage_options=storage_options)


def _generation_tasks(
    targets: Mapping[str, zarr.Array],
    n_samples: int,
    n_classes: int,
    chunk_rows: int,
    seeds: tuple[int, int],
    noise: float,
) -> list[Any]:
    token = uuid.uuid4().hex
    shared_targets = dask.delayed(dict(targets), traverse=False)
    return [
        dask.delayed(_generate_and_write_chunk, pure=False)(
            shared_targets,
            *seeds,
            index,
            start,
            min(chunk_rows, n_samples - start),
            n_classes,
            noise,
            dask_key_name=f"dsoftmax-make-classification-{token}-{index}",
        )
        for index, start in enumerate(range(0, n_samples, chunk_rows))
    ]


def load_digits(
    url: str | os.PathLike,
    *,
    chunk_rows: int = 512,
    codec: str = "zstd",
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Write scikit-learn's bundled digits (1797 x 64, float64, labels 0..9) as a dataset.

    Returns
    -------
    Dataset
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return write_dataset(
        url,
        digits.data.astype(np.float64),
        digits.target,
        classes=np.arange(10),
        chunk_rows=chunk_rows,
        codec=codec,
        storage_options=storage_options,
        overwrite=overwrite,
    )


def _load_npy(path: str | os.PathLike, what: str) -> np.ndarray:
    try:
        # mmap: a big file is paged in chunk by chunk as it is written, never loaded whole.
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise ValueError(
            f"cannot read {what} from {os.fspath(path)!r} without pickle ({error}); save it as "
            "a numeric or string array (not dtype=object)."
        ) from error


def _load_npz(path: str | os.PathLike, feature_key: str, label_key: str) -> tuple[Any, Any]:
    with np.load(path, allow_pickle=False) as archive:
        for key in (feature_key, label_key):
            if key not in archive.files:
                raise ValueError(
                    f"{os.fspath(path)!r} has no array {key!r}; it holds {archive.files}. Pass "
                    "feature_key= and label_key= to name the arrays."
                )
        try:
            return archive[feature_key], archive[label_key]
        except ValueError as error:
            raise ValueError(
                f"cannot read {os.fspath(path)!r} without pickle ({error}); save numeric or "
                "string arrays (not dtype=object)."
            ) from error


def convert_numpy(
    source: str | os.PathLike | tuple[str | os.PathLike, str | os.PathLike],
    url: str | os.PathLike,
    *,
    label_key: str = "y",
    feature_key: str = "X",
    chunk_rows: int = 65536,
    codec: str = "zstd",
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Convert a ``.npz`` file, or a pair of ``.npy`` files, into a dataset.

    Parameters
    ----------
    source : path or (X_path, y_path)
        A ``.npz`` with arrays ``feature_key`` and ``label_key``, or two ``.npy`` files (memory-
        mapped, so files larger than memory convert). Object arrays are refused: nothing is
        unpickled.
    url : str or path
    label_key, feature_key : str
    chunk_rows, codec, storage_options, overwrite
        As in :func:`write_dataset`.

    Returns
    -------
    Dataset
    """
    if isinstance(source, tuple | list):
        if len(source) != 2:
            raise ValueError(
                f"source must be a .npz path or a pair (X_path, y_path) of .npy files, got "
                f"{len(source)} paths."
            )
        X, y = _load_npy(source[0], "X"), _load_npy(source[1], "y")
    elif Path(source).suffix == ".npz":
        X, y = _load_npz(source, feature_key, label_key)
    else:
        raise ValueError(
            f"source must be a .npz file or a pair (X_path, y_path) of .npy files, got {source!r}."
        )
    return write_dataset(
        url,
        X,
        y,
        chunk_rows=chunk_rows,
        codec=codec,
        storage_options=storage_options,
        overwrite=overwrite,
    )


def write_array(
    url: str | os.PathLike,
    array: Any,
    *,
    name: str = "predictions",
    chunk_rows: int | None = None,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> None:
    """Write an array (predictions, probabilities) as array ``name`` of the Zarr group ``url``.

    Parameters
    ----------
    url : str or path
        The group; created when missing. A dataset's group works too (its fingerprint ignores
        arrays other than its own).
    array : ndarray or dask array of shape (n_rows, ...)
    name : str
    chunk_rows : int, optional
        Rows per chunk. Default: the first row chunk of a dask array, else up to 65536.
    storage_options : dict, optional
    overwrite : bool
        Replace an existing array ``name``.
    """
    url = _as_url(url)
    if name in ROW_ARRAYS:
        raise ValueError(
            f"name {name!r} is reserved for dataset arrays; choose another, e.g. 'predictions'."
        )
    data = array if _is_dask(array) else np.asarray(array)
    if data.ndim < 1 or data.dtype == object:
        raise TypeError(
            f"array must be a numeric or string array with at least one dimension, got shape "
            f"{data.shape} and dtype {data.dtype}."
        )
    if chunk_rows is None:
        chunk_rows = data.chunks[0][0] if _is_dask(data) else DEFAULT_CHUNK_ROWS
    chunk_rows = min(_check_chunk_rows(chunk_rows), max(data.shape[0], 1))
    group = _open_group(url, "a", storage_options)
    if name in group and not overwrite:
        raise FileExistsError(
            f"{url!r} already has an array {name!r}; pass overwrite=True to replace it or "
            "choose another name."
        )
    target = group.create_array(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=(chunk_rows, *data.shape[1:]),
        compressors=_compressors("zstd"),
        config={"write_empty_chunks": True},
        overwrite=overwrite,
    )
    if _is_dask(data):
        da.store(data.rechunk((chunk_rows, *data.shape[1:])), target, lock=False)
    else:
        target[...] = data
