"""What a dataset is: its arrays, its group attributes, its fingerprint.

Format (``dsoftmax_format`` = 1, dense; 2, sparse)
--------------------------------------------------
A dataset is a Zarr v3 group, on a local disk or behind an fsspec URL (``s3://bucket/train.zarr``):

``X``  : (n_samples, n_features) float32 or float64, chunked by rows only
         (chunks = (chunk_rows, n_features)); **or**, in a sparse dataset (format 2), a group of
         row blocks of CSR (``X/data``, ``X/indices``, ``X/row_nnz``), one stored chunk of each
         per block of rows (:mod:`dsoftmax.data.sparse_store`).
``y``  : (n_samples,) int32/int64 class ids in ``[0, n_classes)`` **or**
``Y``  : (n_samples, n_classes) float one-hot or probability rows -- exactly one of the two.
``sample_weight`` : optional (n_samples,) float.

Group attributes: ``dsoftmax_format``, ``classes`` (the original label values, JSON ints, floats
or strings; class id ``k`` stands for ``classes[k]``), ``n_classes`` and
``dsoftmax_content_sha256``, a digest of every chunk's bytes computed by whoever wrote the chunk.
The attributes are written last, so an interrupted write leaves a store that
:func:`~dsoftmax.data.open_dataset` refuses. Every row array shares the row chunking of ``X``
(:func:`check_row_chunks`), so block ``i`` of every array covers the same rows and a worker can
load a block of rows from the store alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from ..defaults import DEFAULT_READ_RETRIES

__all__ = [
    "CONTENT_DIGEST_ATTR",
    "CSR_ATTR",
    "FORMAT_ATTR",
    "FORMAT_VERSION",
    "ROW_ARRAYS",
    "Dataset",
    "check_row_chunks",
    "content_digest",
    "dataset_attrs",
    "fingerprint",
    "rows_text",
]

#: The newest format this version reads and writes: 2, sparse datasets. Dense datasets are
#: written as format 1, which every version reads.
FORMAT_VERSION = 2
DENSE_FORMAT_VERSION = 1

FORMAT_ATTR = "dsoftmax_format"
CONTENT_DIGEST_ATTR = "dsoftmax_content_sha256"
#: The group attribute of a sparse dataset: ``n_features`` and ``block_nnz``.
CSR_ATTR = "dsoftmax_csr"
#: Row arrays of a dataset, as named in the store.
ROW_ARRAYS = ("X", "y", "Y", "sample_weight")
#: The arrays whose chunk digests make the content digest, in the order they are combined.
DIGEST_ARRAYS = ("X", "X/data", "X/indices", "X/row_nnz", "y", "Y", "sample_weight")
#: How many row chunks a message about mismatched chunks shows before "...".
CHUNKS_SHOWN = 3


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
        float32 or float64, one dask chunk per Zarr chunk of rows: NumPy chunks, or
        scipy.sparse CSR chunks for a sparse dataset.
    y : dask array of shape (n_samples,) or None
        Integer class ids in ``[0, n_classes)``; None when ``Y`` holds the labels.
    Y : dask array of shape (n_samples, n_classes) or None
        One-hot or probability rows; None when ``y`` holds the labels.
    sample_weight : dask array of shape (n_samples,) or None
    classes : ndarray of shape (n_classes,)
        Original label values; class id ``k`` stands for ``classes[k]``.
    fingerprint : str
        Hex sha256 of the metadata and of the content digest recorded at write time; the same
        for every open of the same store, different after any write through this package.
    read_retries : int
        How many times a chunk read that failed with a transient I/O error is retried before
        :class:`~dsoftmax.data.ChunkReadError` is raised (default
        :data:`~dsoftmax.defaults.DEFAULT_READ_RETRIES`).
    layout : {"dense", "csr"}
        How ``X`` is stored: dense rows, or row blocks of CSR.
    n_nonzero : int or None
        Stored values of a sparse ``X``; None for a dense one.
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
    layout: str = "dense"
    n_nonzero: int | None = None

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


def rows_text(row_start: int, n_rows: int) -> str:
    """``"rows 40 to 79"``: how messages name a block of rows."""
    return f"rows {row_start} to {row_start + n_rows - 1}"


def check_row_chunks(
    X: da.Array,
    labels: da.Array,
    sample_weight: da.Array | None = None,
    *,
    source: str | None = None,
) -> None:
    """Refuse Dask arrays whose blocks do not cover the same rows.

    Block ``i`` of every array must hold the rows of block ``i`` of ``X``, so that one task can
    evaluate a block of rows from its own chunks; ``X`` and 2-D labels are chunked by rows only.

    Parameters
    ----------
    X : dask array of shape (n_samples, n_features)
    labels : dask array of shape (n_samples,) or (n_samples, n_classes)
        Class ids (named ``y`` in messages) or probability rows (``Y``).
    sample_weight : dask array of shape (n_samples,), optional
    source : str, optional
        How messages name the store the arrays were read from (e.g. ``repr(url)``): the fix is
        then to rewrite the store, not to rechunk.

    Raises
    ------
    ValueError
        Naming the arrays, their row chunks and the fix.
    """
    if X.ndim != 2 or len(X.chunks[1]) != 1:
        raise ValueError(
            f"X must be 2-D and chunked by rows only, got shape {X.shape} with chunks {X.chunks}; "
            "rechunk with X.rechunk({1: -1})."
        )
    label_name = "y" if labels.ndim == 1 else "Y"
    for name, array in ((label_name, labels), ("sample_weight", sample_weight)):
        if array is None:
            continue
        if array.chunks[0] != X.chunks[0]:
            raise ValueError(_different_rows_message(X, array, name, source))
        if array.ndim == 2 and len(array.chunks[1]) != 1:
            raise ValueError(
                f"{name} must be chunked by rows only, got chunks {array.chunks}; rechunk with "
                f"{name}.rechunk({{1: -1}})."
            )


def _different_rows_message(X: da.Array, array: da.Array, name: str, source: str | None) -> str:
    if source is not None:
        # A Zarr array's row chunks are one size (the last one shorter): the store's chunk shape.
        wanted = (X.chunks[0][0], *array.shape[1:])
        return (
            f"X and {name} in {source} have different row chunks: X ({X.chunks[0][0]},) vs "
            f"{name} ({array.chunks[0][0]},). Rewrite {name} with chunks={wanted}."
        )
    return (
        f"X and {name} have different row chunks: X {_chunks_text(X.chunks[0])} vs {name} "
        f"{_chunks_text(array.chunks[0])}; rechunk {name} with "
        f"{name}.rechunk({{0: X.chunks[0]}})."
    )


def _chunks_text(rows: tuple[int, ...]) -> str:
    shown = ", ".join(str(size) for size in rows[:CHUNKS_SHOWN])
    return f"({shown}{', ...' if len(rows) > CHUNKS_SHOWN else ''})"


def content_digest(block_digests: Sequence[Mapping[str, str]]) -> str:
    """Combine per-chunk digests in a fixed order: array by array, chunk by chunk."""
    combined = hashlib.sha256()
    for name in DIGEST_ARRAYS:
        for index, digests in enumerate(block_digests):
            if name in digests:
                combined.update(f"{name}/{index}:{digests[name]};".encode())
    return combined.hexdigest()


def dataset_attrs(
    classes: np.ndarray, digest: str, csr: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The group attributes of a dataset with ``classes`` and the content digest ``digest``;
    with ``csr`` (``n_features`` and ``block_nnz``), those of a sparse dataset."""
    attrs = {
        FORMAT_ATTR: DENSE_FORMAT_VERSION if csr is None else FORMAT_VERSION,
        "classes": classes.tolist(),
        "n_classes": int(classes.shape[0]),
        CONTENT_DIGEST_ATTR: digest,
    }
    if csr is not None:
        attrs[CSR_ATTR] = dict(csr)
    return attrs


def fingerprint(attrs: Mapping[str, Any], arrays: Mapping[str, Any]) -> str:
    """Hex sha256 of the dataset's metadata and recorded content digest.

    ``arrays`` maps names to Zarr arrays (anything with ``shape``, ``dtype`` and ``chunks``).
    """
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
    if CSR_ATTR in attrs:
        metadata["csr"] = attrs[CSR_ATTR]
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
