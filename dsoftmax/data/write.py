"""Writing datasets and arrays to a Zarr store.

Every check runs before the store is touched: shapes, dtypes, lengths, labels in ``classes``
(:mod:`dsoftmax.data.labels`) and the values (:mod:`dsoftmax.data.values`). The write itself
runs one dask task per chunk of rows, which writes that chunk of every array and returns the
sha256 of its bytes; the group attributes, with the combined digest, are written last.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numcodecs.zstd
import numpy as np
import zarr
import zarr.codecs

from ..defaults import (
    AUTO_CODEC_MIN_SAVING,
    AUTO_CODEC_SAMPLE_BYTES,
    CODECS,
    DEFAULT_CHUNK_ROWS,
    DEFAULT_CODEC,
    FEATURE_DTYPES,
)
from .format import ROW_ARRAYS, Dataset, content_digest, dataset_attrs
from .labels import (
    check_classes,
    check_known_rows,
    check_rows,
    check_sample_weight,
    encode_labels,
    is_dask,
    unique_labels,
)
from .open import open_dataset
from .sparse import blocked_csr, canonical_csr, empty_csr, is_sparse, is_sparse_dask
from .store import as_url, filesystem, open_group
from .tasks import compute, row_blocks, scheduler_without_client
from .values import block_stats_tasks, cast_features, combine_stats, overflow_problem

__all__ = [
    "check_chunk_rows",
    "codec_for_features",
    "compressors",
    "create_row_array",
    "feature_codec",
    "prepare_target",
    "remove_array",
    "write_array",
    "write_dataset",
    "write_row_block",
]

logger = logging.getLogger("dsoftmax")

#: The numpy types of the feature dtypes a dataset may hold.
FEATURE_TYPES = tuple(np.dtype(name) for name in FEATURE_DTYPES)


def prepare_target(url: str, storage_options: Mapping | None, overwrite: bool) -> str:
    """The zarr mode to create the group with, after refusing what must not be replaced."""
    fs, path = filesystem(url, storage_options)
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


def compressors(codec: str) -> Any:
    """The Zarr compressors of ``codec``, one of :data:`~dsoftmax.defaults.CODECS`.

    ``"auto"`` is zstd here: labels, weights and sparse arrays compress well. Dense features
    are decided from a sample by :func:`feature_codec` first.
    """
    if codec in ("zstd", "auto"):
        return (zarr.codecs.ZstdCodec(level=1),)
    if codec == "lz4":
        return (zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)
    if codec == "none":
        return None
    raise ValueError(f"codec must be one of {list(CODECS)}, got {codec!r}.")


def codec_for_features(
    codec: str, shape: tuple[int, int], itemsize: int, first_rows: Callable[[int], np.ndarray]
) -> str:
    """The codec dense features of ``shape`` are stored with: ``codec`` itself, or for
    ``"auto"`` :func:`feature_codec` of about :data:`~dsoftmax.defaults.AUTO_CODEC_SAMPLE_BYTES`
    of their first rows, which ``first_rows(n)`` gives (asked for only then)."""
    if codec != "auto":
        return codec
    n_rows, n_features = shape
    sample_rows = AUTO_CODEC_SAMPLE_BYTES // max(1, n_features * itemsize)
    return feature_codec(codec, first_rows(max(1, min(n_rows, sample_rows))))


def feature_codec(codec: str, sample: np.ndarray) -> str:
    """The codec that dense features whose first rows are ``sample`` are stored with.

    ``"auto"`` is ``"zstd"`` when zstd level 1 saves at least
    :data:`~dsoftmax.defaults.AUTO_CODEC_MIN_SAVING` of the sample's bytes (quantized,
    repeated or mostly-zero features), else ``"none"``: the mantissas of continuous features
    such as embeddings are noise that zstd saves a few percent of, at the cost of compressing
    every chunk once and decompressing it on every read. Any other codec is itself.
    """
    if codec != "auto":
        return codec
    raw = np.ascontiguousarray(sample)
    if raw.nbytes == 0:
        return "zstd"
    saving = 1.0 - len(numcodecs.zstd.compress(raw, 1)) / raw.nbytes
    chosen = "zstd" if saving >= AUTO_CODEC_MIN_SAVING else "none"
    logger.info(
        "dsoftmax: codec auto: zstd saves %.0f %% of the first %d rows' bytes, so X is stored %s",
        100 * saving,
        raw.shape[0] if raw.ndim else 1,
        "with zstd" if chosen == "zstd" else "uncompressed",
    )
    return chosen


def create_row_array(
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    chunk_rows: int,
    compressors: Any,
) -> zarr.Array:
    """A new row array of ``group``, chunked by ``chunk_rows`` rows only."""
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


def write_row_block(
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


@dataclass(frozen=True)
class _RowInputs:
    """Validated inputs, as dask arrays chunked like the store will be."""

    arrays: dict[str, da.Array]
    classes: np.ndarray
    scheduler: str | None

    @property
    def n_classes(self) -> int:
        return int(self.classes.shape[0])


def _as_input_array(array: Any, name: str) -> np.ndarray | da.Array:
    if is_dask(array) or (name == "X" and is_sparse(array)):
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
    check_known_rows(X, "X")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X needs at least one row and one column, got shape {X.shape}.")
    if X.dtype not in FEATURE_TYPES:
        raise TypeError(
            f"X must be float32 or float64, got dtype {X.dtype} (float16 is taken too); convert "
            "it with X.astype(np.float32) (or np.float64 to keep full precision), or pass dtype=."
        )


def _label_ids(
    y: np.ndarray | da.Array, classes: Any, scheduler: str | None
) -> tuple[np.ndarray | da.Array, np.ndarray]:
    """Class ids of ``y`` in the order of ``classes`` (default: its sorted labels)."""
    if classes is None:
        classes = check_classes(unique_labels(y, scheduler), "y")
    else:
        classes = check_classes(np.asarray(classes), "classes")
    return encode_labels(y, classes, unknown="raise"), classes


def _soft_labels(Y: Any, X: Any, classes: Any) -> tuple[Any, np.ndarray]:
    check_rows(Y, "Y", X, ndim=2)
    n_classes = Y.shape[1]
    if not np.issubdtype(Y.dtype, np.floating):
        if not (np.issubdtype(Y.dtype, np.integer) or Y.dtype == bool):
            raise TypeError(f"Y must hold numbers (one-hot or probability rows), got {Y.dtype}.")
        Y = Y.astype(X.dtype)
    classes = np.arange(n_classes) if classes is None else np.asarray(classes)
    classes = check_classes(classes, "classes")
    if classes.shape[0] != n_classes:
        raise ValueError(
            f"Y has {n_classes} columns but classes has {classes.shape[0]} entries; pass one "
            "class label per column of Y."
        )
    return Y, classes


def _to_row_chunks(array: Any, chunk_rows: int) -> da.Array:
    chunks = (chunk_rows, *array.shape[1:])
    if is_sparse(array):
        return blocked_csr(canonical_csr(array), chunk_rows)
    if is_sparse_dask(array):
        canonical = array.map_blocks(
            canonical_csr, dtype=array.dtype, meta=empty_csr(array.shape[1], array.dtype)
        )
        return canonical.rechunk(chunks)
    if is_dask(array):
        return array.rechunk(chunks)
    # name=False: do not hash the whole input just to name the graph.
    return da.from_array(array, chunks=chunks, name=False)


def _prepare_inputs(
    X: Any, y: Any, Y: Any, sample_weight: Any, classes: Any, chunk_rows: int
) -> _RowInputs:
    X = _as_input_array(X, "X")
    _check_feature_input(X)
    if (y is None) == (Y is None):
        raise ValueError(
            "pass exactly one of y (class labels, one per row) and Y (one-hot or probability "
            f"rows); got {'both' if y is not None else 'neither'}."
        )
    inputs = [X, y, Y, sample_weight]
    scheduler = None if any(is_dask(a) for a in inputs) else "threads"
    arrays = {"X": X}
    if y is not None:
        y = _as_input_array(y, "y")
        check_rows(y, "y", X, ndim=1)
        arrays["y"], classes = _label_ids(y, classes, scheduler)
    else:
        arrays["Y"], classes = _soft_labels(_as_input_array(Y, "Y"), X, classes)
    if sample_weight is not None:
        # Their values are checked with every other value, before the store is touched.
        arrays["sample_weight"] = check_sample_weight(sample_weight, X)
    rows = min(chunk_rows, X.shape[0])
    chunked = {name: _to_row_chunks(array, rows) for name, array in arrays.items()}
    return _RowInputs(chunked, classes, scheduler)


def check_chunk_rows(chunk_rows: Any) -> int:
    """``chunk_rows`` as an int, after refusing what is not a positive int."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer):
        raise TypeError(f"chunk_rows must be an int, got {type(chunk_rows).__name__}.")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}.")
    return int(chunk_rows)


def _write_tasks(targets: Mapping[str, zarr.Array], arrays: Mapping[str, da.Array]) -> list[Any]:
    token = uuid.uuid4().hex
    row_chunks = arrays["X"].chunks[0]
    starts = np.concatenate([[0], np.cumsum(row_chunks)]).tolist()
    parts = {name: row_blocks(array, len(row_chunks)) for name, array in arrays.items()}
    shared_targets = dask.delayed(dict(targets), traverse=False)
    return [
        dask.delayed(write_row_block, pure=False)(
            shared_targets,
            {name: parts[name][index] for name in arrays},
            starts[index],
            dask_key_name=f"dsoftmax-write-rows-{token}-{index}",
        )
        for index in range(len(row_chunks))
    ]


def _stored_features(X: Any, dtype: Any) -> Any:
    """``X`` cast to the storage ``dtype`` (lazily for Dask input), or as it is for None."""
    if dtype is None:
        return X
    if str(np.dtype(dtype)) not in FEATURE_DTYPES:
        raise TypeError(f"dtype must be one of {list(FEATURE_DTYPES)} or None, got {dtype!r}.")
    if (is_sparse(X) or is_sparse_dask(X)) and np.dtype(dtype) not in (np.float32, np.float64):
        raise TypeError(
            f"sparse X is stored in float32 or float64, got dtype={dtype!r}; pass "
            "dtype='float32' to halve its values' bytes."
        )
    if is_sparse(X):
        return X.astype(dtype)
    if isinstance(X, da.Array):
        return X.map_blocks(_cast, np.dtype(dtype), dtype=dtype)
    values = np.asarray(X)
    cast, overflow = cast_features(values, np.dtype(dtype)) if values.ndim == 2 else (
        _cast(values, np.dtype(dtype)), None)  # fmt: skip
    if overflow is not None:
        raise ValueError(f"X {overflow_problem(overflow, dtype)}")
    return cast


def _cast(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # Values beyond the dtype's range become infinite here; the value checks refuse them.
    with np.errstate(over="ignore"):
        return block.astype(dtype, copy=False)


def write_dataset(
    url: str | os.PathLike,
    X: Any,
    y: Any = None,
    *,
    Y: Any = None,
    sample_weight: Any = None,
    classes: Any = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    codec: str = DEFAULT_CODEC,
    storage_options: dict | None = None,
    overwrite: bool = False,
    dtype: str | np.dtype | None = None,
) -> Dataset:
    """Validate arrays and write them as a dataset.

    Parameters
    ----------
    url : str or path
        Local path or fsspec URL of the new group.
    X : ndarray, dask array or scipy.sparse matrix of shape (n_samples, n_features)
        float32, float64 or float16 (anything else raises TypeError: convert with ``X.astype``,
        or pass ``dtype``). A scipy.sparse matrix or array (any format), or a Dask array of
        scipy.sparse chunks, is written as a sparse dataset (format 2: row blocks of canonical
        CSR, :mod:`dsoftmax.data.sparse_store`), never densified; its values are float32 or
        float64.
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
    codec : {"auto", "zstd", "lz4", "none"}
        Compression: zstd level 1, Blosc-lz4 with byte shuffle, or none ("none" stores the
        last chunk padded to full size). ``"auto"`` (default) compresses the first rows of X
        with zstd (about 1 MiB) and stores X with zstd when that saves at least 20 % of their
        bytes, uncompressed otherwise (:func:`feature_codec`): continuous features such as
        embeddings save a few percent at the cost of compressing every chunk once and
        decompressing it on every read, while quantized or repeated values shrink. Labels,
        weights and sparse arrays are stored with zstd. "lz4" and "none" decode fastest, for data on
        a fast local disk; "zstd" moves the fewest bytes (object stores, network file systems).
    storage_options : dict, optional
        fsspec options (credentials, endpoint) for URLs.
    overwrite : bool
        Replace an existing dataset at ``url``. Nothing existing is touched before every check
        passed.
    dtype : {"float32", "float64", "float16"}, optional
        The dtype X is stored in (default: X's own). ``"float16"`` halves the bytes stored, read
        and held in worker memory; a fit computes in float32 from it and reaches the optimum of
        the rounded values. Values beyond float16's range (±65504) are refused, naming one.

    Returns
    -------
    Dataset
        The written dataset, opened.

    Notes
    -----
    Every check runs before the store is touched: shapes, dtypes, lengths, labels in
    ``classes``, and the values (:func:`~dsoftmax.data.block_stats`: finite ``X``, weights,
    probability rows).
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
    url = as_url(url)
    compressors(codec)
    chunk_rows = check_chunk_rows(chunk_rows)
    X = _stored_features(X, dtype)
    inputs = _prepare_inputs(X, y, Y, sample_weight, classes, chunk_rows)
    tasks = block_stats_tasks(
        inputs.arrays["X"],
        inputs.arrays.get("y", inputs.arrays.get("Y")),
        inputs.arrays.get("sample_weight"),
        inputs.n_classes,
    )
    stats = compute(tasks, scheduler=inputs.scheduler)
    combine_stats(stats, "the input")
    mode = prepare_target(url, storage_options, overwrite)
    group = open_group(url, mode, storage_options)
    csr = None
    if is_sparse_dask(inputs.arrays["X"]):
        from .sparse_store import write_csr_arrays

        block_nnz = [block.n_nonzero for block in sorted(stats, key=lambda b: b.block_index)]
        digests, csr = write_csr_arrays(
            group, inputs.arrays, block_nnz, compressors(codec), inputs.scheduler
        )
    else:
        X = inputs.arrays["X"]
        codecs = {name: compressors(codec) for name in inputs.arrays}
        codecs["X"] = compressors(
            codec_for_features(
                codec, X.shape, X.dtype.itemsize,
                lambda n_rows: np.asarray(compute([X[:n_rows]], scheduler=inputs.scheduler)[0]),
            )
        )  # fmt: skip
        targets = {
            name: create_row_array(
                group, name, array.shape, array.dtype, array.chunks[0][0], codecs[name]
            )
            for name, array in inputs.arrays.items()
        }
        digests = compute(_write_tasks(targets, inputs.arrays), scheduler=inputs.scheduler)
    group.attrs.update(dataset_attrs(inputs.classes, content_digest(digests), csr))
    return open_dataset(url, storage_options=storage_options)


def remove_array(
    url: str | os.PathLike, name: str, *, storage_options: dict | None = None
) -> None:
    """Remove the array ``name`` of the Zarr group ``url`` where there is one (predictions'
    stale probabilities); a dataset's own arrays are never removed.

    Parameters
    ----------
    url : str or path
        An existing Zarr group.
    name : str
    storage_options : dict, optional
    """
    if name in ROW_ARRAYS:
        raise ValueError(f"name {name!r} is a dataset array; it is never removed.")
    group = open_group(as_url(url), "r+", storage_options)
    if name in group:
        del group[name]


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
        Rows per chunk. Default: the first row chunk of a dask array, else up to
        :data:`~dsoftmax.defaults.DEFAULT_CHUNK_ROWS`.
    storage_options : dict, optional
    overwrite : bool
        Replace an existing array ``name``.
    """
    url = as_url(url)
    if name in ROW_ARRAYS:
        raise ValueError(
            f"name {name!r} is reserved for dataset arrays; choose another, e.g. 'predictions'."
        )
    data = array if is_dask(array) else np.asarray(array)
    if data.ndim < 1 or data.dtype == object:
        raise TypeError(
            f"array must be a numeric or string array with at least one dimension, got shape "
            f"{data.shape} and dtype {data.dtype}."
        )
    if chunk_rows is None:
        chunk_rows = data.chunks[0][0] if is_dask(data) else DEFAULT_CHUNK_ROWS
    chunk_rows = min(check_chunk_rows(chunk_rows), max(data.shape[0], 1))
    group = open_group(url, "a", storage_options)
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
        compressors=compressors("zstd"),
        config={"write_empty_chunks": True},
        overwrite=overwrite,
    )
    if is_dask(data):
        rechunked = data.rechunk((chunk_rows, *data.shape[1:]))
        da.store(rechunked, target, lock=False, scheduler=scheduler_without_client())
    else:
        target[...] = data
