"""Opening a dataset: every structural check, without reading data.

A dataset whose ``X`` is a group is sparse, opened by
:func:`dsoftmax.data.sparse_store.open_csr_dataset` with the same checks. :func:`open_dataset`
checks the group attributes, the arrays' shapes, dtypes, chunking and
codecs, that the row arrays share the row chunks of ``X``, and that every chunk is stored
(Zarr reads a missing chunk as zeros without error). The chunks are counted from one listing of
the store's keys, so a store whose metadata declares far more rows than it holds is refused as
fast as a complete one is opened. Values are checked by :func:`~dsoftmax.data.check_values`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr
from zarr.errors import ContainsArrayError, GroupNotFoundError

from ..defaults import DEFAULT_READ_RETRIES, FEATURE_DTYPES
from .decode import chunk_encoding
from .format import (
    CONTENT_DIGEST_ATTR,
    FORMAT_ATTR,
    FORMAT_VERSION,
    ROW_ARRAYS,
    Dataset,
    check_row_chunks,
    fingerprint,
    rows_text,
)
from .store import ChunkSource, as_url, filesystem, lazy_rows, open_group, stored_keys

__all__ = ["check_chunks_present", "check_label_arrays", "label_arrays", "open_dataset"]

#: How many missing chunks an error lists before summarizing the rest.
MISSING_SHOWN = 5


def _open_existing_group(url: str, storage_options: Mapping | None) -> zarr.Group:
    try:
        return open_group(url, "r", storage_options)
    except (FileNotFoundError, GroupNotFoundError) as error:
        raise FileNotFoundError(
            f"no Zarr group at {url!r}; check the path (and storage_options for URLs), or "
            "create it with dsoftmax.data.write_dataset (Parquet files open as they are with "
            "dsoftmax.open_parquet)."
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
    if "X" not in set(group.array_keys()):
        raise ValueError(f"{url!r} has no array 'X'; {_rewrite_fix()}.")
    return {"X": group["X"], **label_arrays(group, url)}


def label_arrays(group: zarr.Group, url: str) -> dict[str, zarr.Array]:
    """The label arrays (exactly one of ``y`` and ``Y``) and ``sample_weight`` of ``group``."""
    present = set(group.array_keys())
    labels = [name for name in ("y", "Y") if name in present]
    if len(labels) != 1:
        found = "both y and Y" if labels else "neither y nor Y"
        raise ValueError(
            f"{url!r} must hold exactly one of 'y' (class ids) and 'Y' (probability rows), found "
            f"{found}; delete one or write the dataset again."
        )
    return {name: group[name] for name in ROW_ARRAYS if name != "X" and name in present}


def _rewrite_fix() -> str:
    return "write the dataset with dsoftmax.data.write_dataset"


def _check_feature_array(X: zarr.Array, url: str) -> None:
    if X.ndim != 2:
        raise ValueError(
            f"X in {url!r} must be 2-D (n_samples, n_features), got shape {X.shape}; "
            f"{_rewrite_fix()}."
        )
    if str(X.dtype) not in FEATURE_DTYPES:
        raise TypeError(
            f"X in {url!r} has dtype {X.dtype}; it must be float32 or float64 (or float16). "
            "Rewrite it with X.astype(np.float32)."
        )
    if X.chunks[1] != X.shape[1]:
        raise ValueError(
            f"X in {url!r} is chunked along features: chunks {X.chunks} for shape {X.shape}. "
            f"Rewrite X with chunks=({X.chunks[0]}, {X.shape[1]})."
        )


def _check_one_per_row(array: zarr.Array, name: str, n_samples: int, url: str, what: str) -> None:
    if array.ndim != 1 or array.shape[0] != n_samples:
        raise ValueError(
            f"{name} in {url!r} has shape {array.shape}; expected ({n_samples},), one {what} per "
            "row of X."
        )


def check_label_arrays(
    arrays: Mapping[str, zarr.Array], n_classes: int, url: str, n_samples: int
) -> None:
    """Refuse label and weight arrays of the wrong shape, dtype or chunking."""
    if "y" in arrays:
        y = arrays["y"]
        _check_one_per_row(y, "y", n_samples, url, "class id")
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
        _check_one_per_row(weights, "sample_weight", n_samples, url, "weight")
        if weights.dtype.kind not in "iuf":
            raise TypeError(
                f"sample_weight in {url!r} has dtype {weights.dtype}; weights must be numbers."
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
        that still cannot be read raises :class:`~dsoftmax.data.ChunkReadError` when the data
        is computed.

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
        attributes disagree, the chunks use codecs this reader does not decode, a chunk is
        missing from the store, or a local store holds a symbolic link or a special file.
        Values are checked by :func:`~dsoftmax.data.check_values`; a damaged chunk raises
        :class:`~dsoftmax.data.ChunkReadError` (a ValueError) when it is read.
    """
    url = as_url(url)
    read_retries = _check_read_retries(read_retries)
    # Listed first: a local store's links and special files are refused before Zarr reads them.
    keys = stored_keys(url, storage_options)
    group = _open_existing_group(url, storage_options)
    attrs = dict(group.attrs)
    n_classes = _check_attrs(attrs, url)
    if "X" in set(group.group_keys()):
        from .sparse_store import open_csr_dataset

        return open_csr_dataset(url, storage_options, read_retries, keys, group, attrs)
    arrays = _member_arrays(group, url)
    _check_feature_array(arrays["X"], url)
    check_label_arrays(arrays, n_classes, url, arrays["X"].shape[0])
    lazy, digest = lazy_member_arrays(arrays, attrs, keys, url, storage_options, read_retries)
    check_row_chunks(
        lazy["X"], lazy.get("y", lazy.get("Y")), lazy.get("sample_weight"), source=repr(url)
    )
    return Dataset(
        url=url,
        storage_options=None if storage_options is None else dict(storage_options),
        X=lazy["X"],
        y=lazy.get("y"),
        Y=lazy.get("Y"),
        sample_weight=lazy.get("sample_weight"),
        classes=np.asarray(attrs["classes"]),
        fingerprint=digest,
        read_retries=read_retries,
    )


def lazy_member_arrays(
    arrays: dict[str, zarr.Array],
    attrs: Any,
    keys: set[str],
    url: str,
    storage_options: Any,
    read_retries: int,
) -> tuple[dict[str, Any], str]:
    """Each member array as a lazy Dask array of retried, bounded chunk reads, once every
    chunk's encoding is checked and every chunk is found stored; and the dataset's
    fingerprint, which the reads carry."""
    encodings = {
        name: chunk_encoding(array, f"{name} in {url!r}") for name, array in arrays.items()
    }
    for name, array in arrays.items():
        check_chunks_present(array, name, keys, url)
    digest = fingerprint(attrs, arrays)
    fs, root = filesystem(url, storage_options)
    lazy = {
        name: lazy_rows(
            array, ChunkSource(fs, root, url, name, encodings[name], read_retries), digest
        )
        for name, array in arrays.items()
    }
    return lazy, digest


def check_chunks_present(array: zarr.Array, name: str, keys: set[str], url: str) -> None:
    """Refuse ``array`` when a chunk of rows is missing from the store's ``keys``.

    Row arrays have one chunk across their other axes (checked before), so a row index names
    a chunk. The work is bounded by the keys that are stored, not by the chunks the metadata
    declares.
    """
    chunk_rows, n_rows = array.chunks[0], array.shape[0]
    n_chunks = math.ceil(n_rows / chunk_rows)
    present = _stored_chunks(array, name, keys, n_chunks)
    if len(present) == n_chunks:
        return
    missing = []
    index = 0
    while len(missing) < MISSING_SHOWN and index < n_chunks:
        if index not in present:
            start = index * chunk_rows
            missing.append(f"{index} ({rows_text(start, min(chunk_rows, n_rows - start))})")
        index += 1
    more = n_chunks - len(present) - len(missing)
    raise ValueError(
        f"{name} in {url!r} is missing {n_chunks - len(present)} of its {n_chunks} chunks "
        f"(chunk indices {', '.join(missing)}{f' and {more} more' if more > 0 else ''}); Zarr "
        "would read them as zeros. The write was incomplete or the store lost objects: write "
        "the dataset again."
    )


def _stored_chunks(array: zarr.Array, name: str, keys: set[str], n_chunks: int) -> set[int]:
    """Row indices of the chunks of ``array`` found among ``keys``."""
    prefix = f"{name}/"
    other_axes = (0,) * (array.ndim - 1)
    present = set()
    for key in keys:
        if not key.startswith(prefix):
            continue
        # The first number of a chunk key is its row index ("c/3/0", "3.0"); the key that
        # index encodes to must be the stored one.
        first_number = re.search(r"\d+", key[len(prefix) :])
        if first_number is None:
            continue
        index = int(first_number.group())
        chunk_key = array.metadata.encode_chunk_key((index, *other_axes))
        if index < n_chunks and f"{prefix}{chunk_key}" == key:
            present.add(index)
    return present
