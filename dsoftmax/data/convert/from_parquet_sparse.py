"""Parquet sources of sparse rows: a list column of feature indices (and one of their values),
one row group per Dask task, written as a sparse dataset and never densified.

This is how sparse vectors usually reach Parquet -- Spark's ``SparseVector`` as ``indices`` and
``values`` arrays, a tokenizer's ids per document, a feature hasher's buckets -- and each row
group converts straight from Arrow's list offsets to CSR, without a Python object per row.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np

from ...defaults import DEFAULT_CHUNK_ROWS, DEFAULT_CODEC
from ..format import Dataset
from ..sparse import canonical_csr, empty_csr, index_dtype
from ..tasks import compute
from .common import (
    LabelSummary,
    check_label_column,
    check_sparse_dtype,
    choose_feature_dtype,
    classes_from,
    describe_sources,
    missing_columns,
    source_list,
    write_converted,
)
from .from_parquet import (
    _arrow_labels,
    _check_same_schema,
    _import_pyarrow,
    _parquet_files,
    _parquet_footer,
    read_parquet_row_group,
    row_group_labels,
)
from .parquet_layout import is_list, is_numeric

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "SparseScan",
    "convert_parquet_sparse",
    "parquet_sparse_block",
    "parquet_sparse_indices",
    "scan_parquet_sparse",
    "sparse_rows",
]


@dataclass(frozen=True)
class _RowGroup:
    path: str
    index: int
    n_rows: int


def _label_dtype(arrow_type: pa.DataType) -> np.dtype:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if is_numeric(arrow_type):
        return np.dtype(arrow_type.to_pandas_dtype())
    return np.dtype(object)


@dataclass(frozen=True)
class SparseColumns:
    """Which columns of a Parquet source hold the sparse rows.

    Attributes
    ----------
    label_column, index_column : str
    value_column : str or None
        None: every listed index has the value 1 (a set of features per row).
    n_features : int
    dtype : numpy.dtype
    """

    label_column: str
    index_column: str
    value_column: str | None
    n_features: int
    dtype: np.dtype

    @property
    def columns(self) -> list[str]:
        lists = [self.index_column] + ([self.value_column] if self.value_column else [])
        return [*lists, self.label_column]


def _check_list_column(schema: pa.Schema, name: str, kind: str, where: str) -> pa.DataType:
    import pyarrow as pa

    arrow_type = schema.field(name).type
    element = arrow_type.value_type if is_list(arrow_type) else None
    wanted = pa.types.is_integer if kind == "index" else _is_number
    if element is None or not wanted(element):
        what = "integers (feature indices)" if kind == "index" else "numbers"
        raise TypeError(
            f"{kind} column {name!r} of {where} has type {arrow_type}; it must be a list of "
            f"{what}, one list per row."
        )
    return element


def _is_number(arrow_type: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
    )


def _flat_lists(column: pa.ChunkedArray, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(values, lengths)`` of a list column: its elements in row order and each row's count;
    a missing list or element is refused with its row."""
    import pyarrow.compute as pc

    lists = column.combine_chunks()
    if lists.null_count:
        first = int(np.argmax(lists.is_null().to_numpy(zero_copy_only=False)))
        raise ValueError(
            f"column {name!r} of {where} has {lists.null_count} missing row(s), first at row "
            f"{first} of the row group; write an empty list for a row without features."
        )
    flat = lists.flatten()
    if flat.null_count:
        lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
        position = int(np.argmax(flat.is_null().to_numpy(zero_copy_only=False)))
        row = int(np.searchsorted(np.cumsum(lengths), position, side="right"))
        raise ValueError(
            f"column {name!r} of {where} has {flat.null_count} missing element(s), first in "
            f"row {row} of the row group; every listed feature needs its index and value."
        )
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    return flat.to_numpy(zero_copy_only=False), lengths


def parquet_sparse_indices(
    fs: Any, group: _RowGroup, index_column: str
) -> tuple[int, int] | None:
    """Worker task: the lowest and highest feature index of one row group (None if none)."""
    table = read_parquet_row_group(fs, group.path, group.index, [index_column])
    where = f"{group.path!r} (row group {group.index})"
    indices, _ = _flat_lists(table.column(0), index_column, where)
    if not indices.size:
        return None
    return int(indices.min()), int(indices.max())


def parquet_sparse_block(fs: Any, group: _RowGroup, columns: SparseColumns) -> tuple[Any, Any]:
    """Worker task: the canonical CSR rows (n_rows, n_features) and labels of one row group;
    a row's indices are sorted, and an index repeated within a row is refused with its row."""
    import scipy.sparse

    table = read_parquet_row_group(fs, group.path, group.index, columns.columns)
    where = f"{group.path!r} (row group {group.index})"
    indices, lengths = _flat_lists(table.column(columns.index_column), columns.index_column, where)
    if columns.value_column is None:
        values = np.ones(indices.shape[0], dtype=columns.dtype)
    else:
        values, value_lengths = _flat_lists(
            table.column(columns.value_column), columns.value_column, where
        )
        different = value_lengths != lengths
        if different.any():
            row = int(np.argmax(different))
            raise ValueError(
                f"row {row} of {where} lists {int(lengths[row])} indices in "
                f"{columns.index_column!r} but {int(value_lengths[row])} values in "
                f"{columns.value_column!r}; every index needs exactly one value."
            )
    outside = (indices < 0) | (indices >= columns.n_features)
    if outside.any():
        position = int(np.argmax(outside))
        row = int(np.searchsorted(np.cumsum(lengths), position, side="right"))
        raise ValueError(
            f"row {row} of {where} has feature index {int(indices[position])}, outside "
            f"[0, {columns.n_features}); pass n_features larger than every index (indices are "
            "zero-based)."
        )
    wanted = index_dtype(columns.n_features, int(indices.shape[0]))
    indptr = np.zeros(len(lengths) + 1, dtype=wanted)
    np.cumsum(lengths, out=indptr[1:])
    csr = scipy.sparse.csr_matrix(
        (values.astype(columns.dtype, copy=False), indices.astype(wanted), indptr),
        shape=(len(lengths), columns.n_features),
    )
    if not csr.has_canonical_format:
        _refuse_repeated_indices(csr, columns.index_column, where)
    return canonical_csr(csr), _arrow_labels(table.column(columns.label_column))


def _refuse_repeated_indices(csr: Any, index_column: str, where: str) -> None:
    """Refuse a row that lists a feature index more than once: summing the repeats (as
    scipy.sparse would) or keeping one would each guess what the file meant, and svmlight
    files, read as scikit-learn reads them, refuse repeats too."""
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    order = np.lexsort((csr.indices, rows))
    indices, rows = csr.indices[order], rows[order]
    repeated = (indices[1:] == indices[:-1]) & (rows[1:] == rows[:-1])
    if not repeated.any():
        return
    position = int(np.argmax(repeated))
    row, index = int(rows[position]), int(indices[position])
    count = int(np.count_nonzero(csr.indices[csr.indptr[row] : csr.indptr[row + 1]] == index))
    raise ValueError(
        f"row {row} of {where} repeats feature index {index} in {index_column!r} ({count} "
        "times); a row lists each feature once. Sum (or drop) the repeated entries when "
        "writing the file, then convert again."
    )


@dataclass(frozen=True)
class SparseScan:
    """A Parquet source of sparse rows, checked, with its classes and feature count.

    Attributes
    ----------
    fs : fsspec.AbstractFileSystem
    files : list of str
        The files, in sorted path order.
    row_groups : list
        The row groups that hold rows, in row order.
    columns : SparseColumns
    schema : pyarrow.Schema
        The first file's.
    classes : ndarray
        The sorted distinct labels.
    sources : list of str
        The files, patterns or directories given.
    source_text : str
        How messages name the source.
    """

    fs: Any
    files: list[str]
    row_groups: list[_RowGroup]
    columns: SparseColumns
    schema: Any
    classes: np.ndarray
    sources: list[str]
    source_text: str


def scan_parquet_sparse(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    label_column: str,
    index_column: str,
    value_column: str | None,
    n_features: int | None,
    dtype: str | None,
    source_storage_options: dict | None,
    then: str = "convert again",
) -> SparseScan:
    """Check the arguments and the files' footers, read the label column (and, without
    ``n_features``, the index column) of every row group on the Dask default scheduler; the
    arguments as in :func:`convert_parquet_sparse`, ``then`` as in
    :func:`~dsoftmax.data.convert.common.classes_from`."""
    import pyarrow as pa

    _import_pyarrow()
    paths = source_list(source, "Parquet")
    label_column = check_label_column(label_column)
    names = [label_column, index_column] + ([value_column] if value_column is not None else [])
    if len(set(names)) != len(names) or not all(isinstance(name, str) for name in names):
        raise ValueError(
            f"label_column, index_column and value_column must name different columns, got "
            f"{label_column!r}, {index_column!r} and {value_column!r}."
        )
    if n_features is not None and (
        isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1
    ):
        raise ValueError(f"n_features must be an int >= 1 or None, got {n_features!r}.")
    check_sparse_dtype(dtype, "Pass dtype='float32'.")
    fs, files = _parquet_files(paths, source_storage_options)
    footers = [_parquet_footer(fs, path) for path in files]
    first_schema = footers[0][0]
    missing_columns(names, first_schema.names, repr(files[0]))
    _check_list_column(first_schema, index_column, "index", repr(files[0]))
    single = True
    if value_column is not None:
        element = _check_list_column(first_schema, value_column, "value", repr(files[0]))
        single = bool(pa.types.is_float32(element) or pa.types.is_float16(element))
    feature_dtype = choose_feature_dtype(dtype, np.dtype(np.float32 if single else np.float64))
    for path, (schema, _) in zip(files, footers, strict=True):
        _check_same_schema(path, schema, first_schema, names)
    row_groups = [
        _RowGroup(path, index, n_rows)
        for path, (_, sizes) in zip(files, footers, strict=True)
        for index, (n_rows, _stored_bytes) in enumerate(sizes)
        if n_rows
    ]
    source_text = describe_sources(paths)
    if not row_groups:
        raise ValueError(f"{source_text} has no rows.")
    token = uuid.uuid4().hex
    shared_fs = dask.delayed(fs, traverse=False)
    labels = [
        dask.delayed(row_group_labels, pure=False)(
            shared_fs, group.path, group.index, label_column,
            dask_key_name=f"dsoftmax-convert-parquet-labels-{token}-{i}",
        )
        for i, group in enumerate(row_groups)
    ]  # fmt: skip
    index_ranges = [] if n_features is not None else [
        dask.delayed(parquet_sparse_indices, pure=False)(
            shared_fs, group, index_column,
            dask_key_name=f"dsoftmax-convert-parquet-indices-{token}-{i}",
        )
        for i, group in enumerate(row_groups)
    ]  # fmt: skip
    found = compute([*labels, *index_ranges])
    summaries: list[LabelSummary] = list(found[: len(labels)])
    classes = classes_from(summaries, label_column, source_text, then)
    if n_features is None:
        n_features = _width(found[len(labels) :], index_column, source_text)
    columns = SparseColumns(label_column, index_column, value_column, n_features, feature_dtype)
    return SparseScan(fs, files, row_groups, columns, first_schema, classes, paths, source_text)


def sparse_rows(scan: SparseScan) -> tuple[da.Array, da.Array]:
    """``X`` (CSR chunks) and the raw labels of a scanned source, a chunk per row group."""
    token = uuid.uuid4().hex
    shared_fs = dask.delayed(scan.fs, traverse=False)
    return _lazy_rows(shared_fs, scan.row_groups, scan.columns, scan.schema, token)


def convert_parquet_sparse(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    url: str | os.PathLike,
    *,
    label_column: str,
    index_column: str,
    value_column: str | None = None,
    n_features: int | None = None,
    dtype: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    codec: str = DEFAULT_CODEC,
    source_storage_options: dict | None = None,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Convert Parquet files of sparse rows into a sparse dataset, one row group per task.

    Parameters
    ----------
    source : str, path or list of them
        As in :func:`dsoftmax.data.convert_parquet`: files, directories, glob patterns or
        fsspec URLs, read in sorted path order.
    url : str or path
        The dataset to write.
    label_column : str
        Column of the labels (integers, floats, booleans or strings).
    index_column : str
        A list column of integers: each row's zero-based feature indices, in any order, each
        once (a repeated index is refused, as svmlight files refuse it).
    value_column : str, optional
        A list column of numbers, each row's values in the order of its indices (the same
        length as its list of indices). Default: every listed feature has the value 1.
    n_features : int, optional
        Number of features; default: the highest index plus one (one more pass over the index
        column). Pass it when the last features may be missing from the data.
    dtype : {"float32", "float64"}, optional
        Values' dtype; default float32 when the values are float32 or float16 (or there is no
        value column), else float64.
    chunk_rows, codec, storage_options, overwrite
        As in :func:`dsoftmax.data.write_dataset`.
    source_storage_options : dict, optional
        fsspec options (credentials, endpoint) to read ``source``.

    Returns
    -------
    Dataset
        A sparse dataset (``layout == "csr"``).

    Raises
    ------
    ValueError, TypeError
        When a column is missing or not a list of the right type, a list or element is
        missing, a row's indices and values differ in number, an index is negative or not
        below ``n_features`` or repeated within a row, a label is missing, or a value is not
        finite; the message names the column, file, row group and row.
    FileNotFoundError
        When a path does not exist or a pattern matches nothing.
    """
    scan = scan_parquet_sparse(
        source, label_column, index_column, value_column, n_features, dtype,
        source_storage_options,
    )  # fmt: skip
    X, y = sparse_rows(scan)
    return write_converted(
        url,
        X,
        y,
        scan.source_text,
        classes=scan.classes,
        chunk_rows=chunk_rows,
        codec=codec,
        storage_options=storage_options,
        overwrite=overwrite,
    )


def _width(
    index_ranges: Sequence[tuple[int, int] | None], index_column: str, source: str
) -> int:
    """The feature count of indices whose range per row group is given: highest plus one."""
    found = [bounds for bounds in index_ranges if bounds is not None]
    lowest = min((low for low, _ in found), default=0)
    if lowest < 0:
        raise ValueError(
            f"index column {index_column!r} of {source} holds the negative index {lowest}; "
            "feature indices are zero-based, >= 0."
        )
    return max(1, max((high for _, high in found), default=0) + 1)


def _lazy_rows(
    shared_fs: Any,
    row_groups: Sequence[_RowGroup],
    columns: SparseColumns,
    schema: pa.Schema,
    token: str,
) -> tuple[da.Array, da.Array]:
    meta = empty_csr(columns.n_features, columns.dtype)
    label_dtype = _label_dtype(schema.field(columns.label_column).type)
    X_parts, y_parts = [], []
    for i, group in enumerate(row_groups):
        block = dask.delayed(parquet_sparse_block, pure=False, nout=2)(
            shared_fs, group, columns, dask_key_name=f"dsoftmax-convert-parquet-{token}-{i}"
        )
        shape = (group.n_rows, columns.n_features)
        X_parts.append(da.from_delayed(block[0], shape=shape, dtype=columns.dtype, meta=meta))
        y_parts.append(da.from_delayed(block[1], shape=shape[:1], dtype=label_dtype))
    return da.concatenate(X_parts), da.concatenate(y_parts)
