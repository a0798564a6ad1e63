"""Datasets read straight from Parquet files: one block per row group, no store written.

A held-out set is read once or twice, where converting it (:func:`~dsoftmax.data.convert_parquet`)
costs a read and a write; training data, read on every pass unless held, is better converted.
:func:`open_parquet` checks what the footers say (columns, types, the same schema in every
file), reads the label column of every row group to learn the classes, and returns a
:class:`~dsoftmax.data.Dataset` whose blocks are the row groups, read when a computation needs
them, by the same reader the conversion uses. A fit or an evaluation checks the values as they
are read (non-finite features, with their rows), as it does for a store. Sparse rows (list
columns of feature indices and values) are read into CSR blocks by the sparse converter's
reader, never densified.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..defaults import DEFAULT_READ_RETRIES
from .convert.common import LabelSummary, classes_from
from .convert.from_parquet import (
    ParquetLayout,
    ParquetScan,
    parquet_rows,
    row_group_labels,
    scan_parquet,
)
from .convert.from_parquet_sparse import SparseScan, scan_parquet_sparse, sparse_rows
from .convert.pipeline import Piece
from .format import Dataset
from .labels import encode_labels
from .tasks import compute
from .values import overflow_problem

__all__ = ["open_parquet", "parquet_block"]


def open_parquet(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    label_column: str,
    feature_columns: Sequence[str] | None = None,
    embedding_column: str | None = None,
    index_column: str | None = None,
    value_column: str | None = None,
    n_features: int | None = None,
    dtype: str | None = None,
    storage_options: dict | None = None,
) -> Dataset:
    """A dataset over Parquet files as they are: a block per row group, read when needed.

    Parameters
    ----------
    source : str, path or list of them
        As in :func:`~dsoftmax.data.convert_parquet`: a file, a directory of them, a glob
        pattern, an fsspec URL, or a list of these; rows in sorted path order.
    label_column : str
        Column of the labels (integers, floats, booleans or strings); a missing label is
        refused here.
    feature_columns, embedding_column, dtype
        As in :func:`~dsoftmax.data.convert_parquet`: dense rows.
    index_column, value_column, n_features
        As in :func:`~dsoftmax.data.convert.convert_parquet_sparse`: sparse rows, list columns
        of each row's feature indices (and values), read into CSR blocks (``layout == "csr"``;
        ``n_nonzero`` is None, as the values are not read at open). Without ``n_features``,
        the index column is read at open too.
    storage_options : dict, optional
        fsspec options (credentials, endpoint) to read ``source``.

    Returns
    -------
    Dataset
        ``X`` with one chunk per row group, ``y`` as int32 class ids into ``classes`` (the
        sorted distinct labels, as a conversion gives them). ``url`` names the source;
        ``fingerprint`` is a digest of the columns read, the classes and each file's path,
        size and modification time (ETag on object stores), so that a checkpoint refuses to
        resume on files that changed.

    Raises
    ------
    ValueError, TypeError
        As :func:`~dsoftmax.data.convert_parquet` for the columns, types and labels; values
        (non-finite features, embeddings of another length) are refused by the computation
        that reads them, with their file, row group and row.
    FileNotFoundError
        When a path does not exist or a pattern matches nothing.

    Examples
    --------
    >>> test = open_parquet("embeddings/test/", label_column="label",
    ...                     embedding_column="embedding")  # doctest: +SKIP
    >>> model.score(test)  # doctest: +SKIP
    """
    if index_column is not None:
        if feature_columns is not None or embedding_column is not None:
            raise ValueError(
                "pass index_column (sparse rows) or feature_columns / embedding_column (dense "
                "rows), not both."
            )
        return _open_sparse(
            source, label_column, index_column, value_column, n_features, dtype, storage_options
        )
    if value_column is not None or n_features is not None:
        raise ValueError(
            "value_column and n_features describe sparse rows: pass them with index_column."
        )
    scan = scan_parquet(
        source, label_column, feature_columns, embedding_column, dtype, storage_options
    )
    summaries = _label_summaries(scan)
    classes = classes_from(
        summaries, scan.layout.label_column, scan.source_text, then="open the files again"
    )
    layout = scan.layout
    fingerprint = _fingerprint(scan.fs, scan.files, {
        "columns": layout.columns,
        "embedding_column": layout.embedding_column,
        "dtype": layout.dtype.name,
        "classes": classes.tolist(),
        "row_groups": [[piece.path, piece.spec, piece.n_rows] for piece in scan.pieces],
    })  # fmt: skip
    X, y = _lazy_blocks(scan, classes, fingerprint)
    return _dataset(scan.sources, scan.source_text, storage_options, X, y, classes, fingerprint)


def _label_summaries(scan: ParquetScan) -> list[LabelSummary]:
    """What the label column of each row group holds, read on the Dask default scheduler (as
    the sparse rows' scan reads it)."""
    shared_fs = dask.delayed(scan.fs, traverse=False)
    label_column = scan.layout.label_column
    tasks = [
        dask.delayed(row_group_labels, pure=False)(shared_fs, piece.path, piece.spec, label_column)
        for piece in scan.pieces
    ]
    return compute(tasks)


def _open_sparse(
    source: Any,
    label_column: str,
    index_column: str,
    value_column: str | None,
    n_features: int | None,
    dtype: str | None,
    storage_options: dict | None,
) -> Dataset:
    """Parquet files of sparse rows as a dataset of CSR blocks, a block per row group."""
    scan: SparseScan = scan_parquet_sparse(
        source, label_column, index_column, value_column, n_features, dtype, storage_options,
        then="open the files again",
    )  # fmt: skip
    columns = scan.columns
    fingerprint = _fingerprint(scan.fs, scan.files, {
        "columns": columns.columns,
        "n_features": columns.n_features,
        "dtype": columns.dtype.name,
        "classes": scan.classes.tolist(),
        "row_groups": [[group.path, group.index, group.n_rows] for group in scan.row_groups],
    })  # fmt: skip
    X, labels = sparse_rows(scan)
    changed = f"{scan.source_text} changed since it was opened; open the dataset again"
    y = labels.map_blocks(_class_ids, scan.classes, changed, dtype=np.int32)
    return _dataset(
        scan.sources, scan.source_text, storage_options, X, y, scan.classes, fingerprint, "csr"
    )


def _dataset(
    sources: Sequence[str],
    source_text: str,
    storage_options: dict | None,
    X: da.Array,
    y: da.Array,
    classes: np.ndarray,
    fingerprint: str,
    layout: str = "dense",
) -> Dataset:
    """The Dataset of Parquet files: named by the one source given, else by the sources'
    description."""
    return Dataset(
        url=sources[0] if len(sources) == 1 else source_text,
        storage_options=storage_options,
        X=X,
        y=y,
        Y=None,
        sample_weight=None,
        classes=classes,
        fingerprint=fingerprint,
        read_retries=DEFAULT_READ_RETRIES,
        layout=layout,
    )


def _fingerprint(fs: Any, files: Sequence[str], what: dict[str, Any]) -> str:
    """A digest of what a dataset reads: ``what`` (its columns, classes, row groups), and each
    file's path, size and modification time (or ETag)."""
    stamps = []
    for path in files:
        info = fs.info(path)
        stamp = {
            key: str(info[key])
            for key in ("size", "mtime", "LastModified", "ETag", "etag")
            if key in info
        }
        stamps.append([path, stamp])
    description = {"parquet": stamps, **what}
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def _lazy_blocks(
    scan: ParquetScan, classes: np.ndarray, fingerprint: str
) -> tuple[da.Array, da.Array]:
    """``X`` and ``y`` with a chunk per row group, each pair read by one task."""
    layout = scan.layout
    shared_fs = dask.delayed(scan.fs, traverse=False)
    shared_classes = dask.delayed(classes, traverse=False)
    token = fingerprint[:32]
    starts = np.cumsum([0] + [piece.n_rows for piece in scan.pieces])
    X_parts, y_parts = [], []
    for index, piece in enumerate(scan.pieces):
        block = dask.delayed(parquet_block, pure=True, nout=2)(
            shared_fs, layout, piece, int(starts[index]), shared_classes,
            dask_key_name=f"dsoftmax-parquet-{token}-{index}",
        )  # fmt: skip
        shape = (piece.n_rows, layout.n_features)
        X_parts.append(da.from_delayed(block[0], shape=shape, dtype=layout.dtype))
        y_parts.append(da.from_delayed(block[1], shape=shape[:1], dtype=np.int32))
    return da.concatenate(X_parts), da.concatenate(y_parts)


def parquet_block(
    fs: Any, layout: ParquetLayout, piece: Piece, row_start: int, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Worker task: one row group's features and class ids (int32 into ``classes``).

    Raises
    ------
    ValueError
        When a feature value is beyond the dtype's range, or a label is missing or not one of
        ``classes`` (the file changed since the dataset was opened).
    """
    rows = parquet_rows(fs, layout, piece)
    where = f"{piece.path!r} (row group {piece.spec})"
    if rows.overflow is not None:
        moved = rows.overflow.moved(rows=row_start)
        problem = overflow_problem(moved, layout.dtype, layout.feature_names)
        raise ValueError(f"X in {where} {problem}")
    changed = f"{where} changed since it was opened; open the dataset again"
    if rows.n_missing:
        raise ValueError(f"{changed}: its label column now has missing labels.")
    values = rows.labels if rows.label_values is None else rows.label_values
    ids = _class_ids(values, classes, changed)
    if rows.label_values is not None:
        ids = ids[rows.labels]
    return rows.X, ids


def _class_ids(values: np.ndarray, classes: np.ndarray, changed: str) -> np.ndarray:
    """:func:`~dsoftmax.data.encode_labels` of ``values``; a label the open did not see means
    the files changed since (``changed`` says so)."""
    try:
        return encode_labels(values, classes)
    except ValueError as error:
        raise ValueError(f"{changed}: {error}") from None
