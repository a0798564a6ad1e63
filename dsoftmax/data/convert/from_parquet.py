"""Parquet sources: one row group per task, read with pyarrow and written where it is read
(:mod:`dsoftmax.data.convert.pipeline`), so memory per task is bounded by the largest row
group."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...defaults import DEFAULT_CHUNK_ROWS, DEFAULT_CODEC
from ..format import Dataset
from ..values import RangeOverflow, cast_features, earliest_overflow, range_overflow
from .common import (
    LabelSummary,
    check_feature_columns,
    check_label_column,
    check_label_values,
    describe_sources,
    has_magic,
    source_list,
)
from .parquet_layout import ParquetLayout, parquet_layout
from .pipeline import ConversionPlan, Piece, PieceRows, run_conversion

if TYPE_CHECKING:  # an optional dependency, imported when the converter runs
    import pyarrow as pa

__all__ = [
    "ParquetLayout",
    "ParquetScan",
    "convert_parquet",
    "label_codes",
    "parquet_rows",
    "read_parquet_row_group",
    "row_group_chunk_rows",
    "row_group_labels",
    "scan_parquet",
]

_PARQUET_INSTALL = "pip install 'dsoftmax[parquet]'"
#: Bytes of features per record batch of a row group's read. pyarrow decodes a batch into
#: buffers of its memory pool (the values, and a list column's levels beside them) before it is
#: copied into the features' array: larger batches only hold more of that memory per thread.
PARQUET_BATCH_BYTES = 2 << 20
#: Fewest rows per record batch, for very wide rows.
PARQUET_MIN_BATCH_ROWS = 256

#: Bytes of a row group's column chunks read at a time. pyarrow reads a whole row group's raw
#: bytes ahead of decoding by default (``pre_buffer``): a thread then holds them beside the rows
#: it decodes, which doubles a conversion's memory when the values barely compress (embeddings).
#: Streamed through a buffer, a row group costs one more request per buffer on an object store.
PARQUET_READ_BUFFER_BYTES = 8 << 20


def _import_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # the submodule the reader uses
    except ImportError as error:
        raise ImportError(
            f"reading Parquet needs pyarrow, which is not installed; {_PARQUET_INSTALL}."
        ) from error
    return pyarrow


@dataclass(frozen=True)
class ParquetScan:
    """A Parquet source as its footers describe it, checked before any row is read.

    Attributes
    ----------
    fs : fsspec.AbstractFileSystem
        The filesystem of the files.
    files : list of str
        The files, in sorted path order (the order of the rows).
    layout : ParquetLayout
    pieces : list of Piece
        The row groups that hold rows, in row order.
    sources : list of str
        The files, patterns or directories given.
    source_text : str
        How messages name the source.
    """

    fs: Any
    files: list[str]
    layout: ParquetLayout
    pieces: list[Piece]
    sources: list[str]
    source_text: str


def _expand_paths(fs: Any, path: str) -> list[str]:
    if has_magic(path):
        return sorted(name for name in fs.glob(path) if fs.isfile(name))
    if fs.isdir(path):
        root = path.rstrip("/")
        # Writers leave markers such as _SUCCESS, _metadata and .crc files beside the data.
        return sorted(
            name
            for name in fs.find(root)
            if not any(part.startswith(("_", ".")) for part in name[len(root) :].split("/") if part)
        )
    if fs.isfile(path):
        return [path]
    raise FileNotFoundError(f"no such file or directory: {path!r}.")


def _parquet_files(paths: Sequence[str], storage_options: dict | None) -> tuple[Any, list[str]]:
    import fsspec

    fs = None
    files: list[str] = []
    for path in paths:
        path_fs, local = fsspec.core.url_to_fs(path, **dict(storage_options or {}))
        if fs is None:
            fs = path_fs
        elif type(path_fs) is not type(fs):
            raise ValueError(
                f"the Parquet sources are on different filesystems ({paths[0]!r} and {path!r}); "
                "convert them from one place."
            )
        found = _expand_paths(fs, local)
        if not found:
            raise FileNotFoundError(f"no Parquet file matches {path!r}.")
        files.extend(found)
    return fs, files


def _parquet_footer(fs: Any, path: str) -> tuple[pa.Schema, list[tuple[int, int]]]:
    """The file's schema, and the rows and stored bytes of each of its row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path, filesystem=fs) as file:
            metadata = file.metadata
            schema = file.schema_arrow
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as error:
        raise ValueError(
            f"{path!r} is not a readable Parquet file ({error}); remove it from the source or "
            "rewrite it."
        ) from error
    return schema, [_row_group_size(metadata.row_group(i)) for i in range(metadata.num_row_groups)]


def _row_group_size(row_group: Any) -> tuple[int, int]:
    stored = sum(row_group.column(i).total_compressed_size for i in range(row_group.num_columns))
    return row_group.num_rows, stored


def _check_same_schema(path: str, schema: pa.Schema, first: pa.Schema, columns: list[str]) -> None:
    for name in columns:
        index = schema.get_field_index(name)
        if index < 0:
            raise ValueError(
                f"{path!r} has no column {name!r}, which the first file has; every file of a "
                "source must hold the same columns."
            )
        found, expected = schema.field(index).type, first.field(name).type
        if found != expected:
            raise TypeError(
                f"column {name!r} has type {found} in {path!r} but {expected} in the first file; "
                "rewrite the files with one type per column."
            )


def scan_parquet(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    label_column: str,
    feature_columns: Sequence[str] | None,
    embedding_column: str | None,
    dtype: str | None,
    source_storage_options: dict | None,
) -> ParquetScan:
    """Check the arguments and the files' footers (columns, types, the same schema in every
    file) and list the row groups, reading no rows; the arguments as in
    :func:`convert_parquet`."""
    _import_pyarrow()
    paths = source_list(source, "Parquet")
    label_column = check_label_column(label_column)
    columns = check_feature_columns(feature_columns, label_column)
    if embedding_column is not None:
        if columns is not None:
            raise ValueError(
                "pass feature_columns or embedding_column, not both: the features come from "
                "numeric columns or from one list column."
            )
        if not isinstance(embedding_column, str) or embedding_column == label_column:
            raise ValueError(
                f"embedding_column must name a list column other than the label, got "
                f"{embedding_column!r}."
            )
    fs, files = _parquet_files(paths, source_storage_options)
    footers = [_parquet_footer(fs, path) for path in files]
    first_schema = footers[0][0]
    layout = parquet_layout(
        fs, files[0], first_schema, label_column, columns, embedding_column, dtype
    )
    for path, (schema, _) in zip(files, footers, strict=True):
        _check_same_schema(path, schema, first_schema, layout.columns)
    pieces = [
        Piece(path, n_rows, n_bytes, index)
        for path, (_, sizes) in zip(files, footers, strict=True)
        for index, (n_rows, n_bytes) in enumerate(sizes)
        if n_rows
    ]
    source_text = describe_sources(paths)
    if not pieces:
        raise ValueError(f"{source_text} has no rows.")
    return ParquetScan(fs, files, layout, pieces, paths, source_text)


def read_parquet_row_group(fs: Any, path: str, row_group: int, columns: list[str]) -> pa.Table:
    """Worker task: one row group of a Parquet file, only ``columns``."""
    # One thread: the tasks already run in parallel.
    with _streamed_file(fs, path) as file:
        return file.read_row_group(row_group, columns=columns, use_threads=False)


def row_group_labels(fs: Any, path: str, row_group: int, label_column: str) -> LabelSummary:
    """Worker task: what the label column of one row group holds (its distinct labels, from
    Arrow's dictionary encoding for strings, and its missing ones)."""
    column = read_parquet_row_group(fs, path, row_group, [label_column]).column(0)
    labels, values, n_missing, first_missing = _present_labels(column)
    unique = np.unique(labels) if values is None else values[np.unique(labels)]
    where = f"{path!r} (row group {row_group})"
    return LabelSummary(
        len(column), check_label_values(unique, label_column, where), first_missing, n_missing
    )


def _streamed_file(fs: Any, path: str) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` that reads its column chunks through a buffer of
    :data:`PARQUET_READ_BUFFER_BYTES` (with pyarrow's own file access, which reads faster than a
    Python file object)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(
        path, filesystem=fs, pre_buffer=False, buffer_size=PARQUET_READ_BUFFER_BYTES
    )


def _arrow_values(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of an Arrow array as NumPy's. Numbers without missing values are taken from
    their buffers: pyarrow's ``to_numpy`` imports pandas, a sixth of a small conversion's time."""
    dtype = _numpy_number_type(column.type)
    if dtype is None or column.null_count:
        return column.to_numpy(zero_copy_only=False)
    chunks = column.chunks if hasattr(column, "chunks") else [column]
    parts = [
        np.frombuffer(chunk.buffers()[1], dtype, len(chunk), chunk.offset * dtype.itemsize)
        for chunk in chunks
        if len(chunk)
    ]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def _numpy_number_type(arrow_type: pa.DataType) -> np.dtype | None:
    """The NumPy dtype of an Arrow integer or float type (None for any other)."""
    import pyarrow as pa

    if pa.types.is_floating(arrow_type):
        return np.dtype(f"f{arrow_type.bit_width // 8}")  # Arrow buffers are native-endian
    if pa.types.is_integer(arrow_type):
        kind = "i" if pa.types.is_signed_integer(arrow_type) else "u"
        return np.dtype(f"{kind}{arrow_type.bit_width // 8}")
    return None


def _arrow_labels(column: pa.ChunkedArray) -> np.ndarray:
    """The labels of an Arrow column as NumPy's (strings as an object array of ``str``)."""
    labels, values = label_codes(column)
    return labels if values is None else values[labels]


def label_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray | None]:
    """The labels of an Arrow column: ``(labels, None)``, or for strings without missing
    values ``(ids, values)``, ``values[ids]`` the labels (``values`` an object array of
    distinct ``str``), by Arrow's dictionary encoding: none of pyarrow's conversions of strings
    to NumPy avoids importing pandas, and the conversion then sorts a few distinct labels
    instead of every row's."""
    import pyarrow as pa

    column = _undictionary(column)
    kind = column.type
    if column.null_count or not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return _arrow_values(column), None
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = array.dictionary_encode()
    values = np.empty(len(encoded.dictionary), dtype=object)
    values[:] = encoded.dictionary.to_pylist()
    return _arrow_values(encoded.indices), values


def _present_labels(
    column: pa.ChunkedArray,
) -> tuple[np.ndarray, np.ndarray | None, int, int | None]:
    """:func:`label_codes` of the labels present in ``column``, with the count of missing ones
    and the row of the first (None without any)."""
    n_missing = column.null_count
    first_missing = None
    if n_missing:
        first_missing = int(np.argmax(_arrow_values(column.is_null())))
        column = column.drop_null()
    return (*label_codes(column), n_missing, first_missing)


def _undictionary(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded column as its values (each chunk may have its own dictionary)."""
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _embedding_matrix(
    column: pa.ChunkedArray, n_features: int, dtype: np.dtype, where: str, first_row: int = 0
) -> tuple[np.ndarray, RangeOverflow | None]:
    """The rows of an embedding column as a matrix, and the values ``dtype`` cannot hold;
    messages count rows from ``first_row``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # A row group read is one chunk: taken as it is, since combining copies even one chunk.
    lists = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if lists.null_count:
        first = first_row + int(np.argmax(lists.is_null().to_numpy(zero_copy_only=False)))
        raise ValueError(
            f"embedding column of {where} has {lists.null_count} missing row(s), first at row "
            f"{first} of the row group; drop those rows or fill them in."
        )
    if pa.types.is_fixed_size_list(lists.type):
        wrong = np.zeros(0, dtype=bool)  # every row has the type's length, read from the schema
    else:
        wrong = pc.list_value_length(lists).to_numpy(zero_copy_only=False) != n_features
    if wrong.any():
        position = int(np.argmax(wrong))
        first = first_row + position
        raise ValueError(
            f"embedding column of {where} has rows of {len(lists[position])} values where "
            f"{n_features} are expected (the first row's length), first at row {first} of the "
            "row group; every embedding must have the same length."
        )
    values = _arrow_values(lists.flatten())
    return cast_features(values.reshape(len(lists), n_features), dtype)


def parquet_rows(fs: Any, layout: ParquetLayout, piece: Piece) -> PieceRows:
    """Worker task's reader: features (n_rows, n_features) and labels of one row group.

    The row group is streamed from the file (:func:`_streamed_file`) and read in record batches
    of :data:`PARQUET_BATCH_BYTES` of features (:func:`_batch_rows`), each copied into the
    features' array as it comes: a batch's buffers are small and reused, where a whole row group
    read at once holds its decoded columns beside the features' array (twice the memory, in new
    pages). A file that cannot be read is named, with the row group, in the error (an
    ``OSError`` stays one).
    """
    import pyarrow as pa

    where = f"{piece.path!r} (row group {piece.spec})"
    try:
        X, labels, label_type, overflow = _read_row_group(fs, layout, piece, where)
    except (OSError, pa.ArrowException) as error:
        if isinstance(error, FileNotFoundError):
            raise
        kind = OSError if isinstance(error, OSError) else ValueError
        raise kind(
            f"cannot read {where}: {error}; rewrite the file, or leave it out of the source."
        ) from error
    label_column = pa.chunked_array(labels, type=label_type)
    labels_read, label_values, n_missing, first_missing = _present_labels(label_column)
    return PieceRows(
        X, labels_read, n_missing, first_missing, repr(piece.path), label_values, overflow
    )


def _read_row_group(
    fs: Any, layout: ParquetLayout, piece: Piece, where: str
) -> tuple[np.ndarray, list[pa.Array], pa.DataType, RangeOverflow | None]:
    """The row group's features, its label batches and their type, and the values the features'
    dtype cannot hold."""
    labels = []
    filled = 0
    overflow = None
    # One thread: the tasks already run in parallel.
    with _streamed_file(fs, piece.path) as file:
        n_rows = file.metadata.row_group(piece.spec).num_rows
        label_type = file.schema_arrow.field(layout.label_column).type
        X = np.empty((n_rows, layout.n_features), dtype=layout.dtype)
        batches = file.iter_batches(
            batch_size=_batch_rows(layout), row_groups=[piece.spec], columns=layout.columns,
            use_threads=False,
        )  # fmt: skip
        for batch in batches:
            end = filled + batch.num_rows
            if end > n_rows:
                break
            found = _fill_features(X[filled:end], batch, layout, where, filled)
            overflow = earliest_overflow(overflow, found and found.moved(rows=filled))
            labels.append(batch.column(layout.label_column))
            filled = end
    if filled != n_rows:
        raise ValueError(
            f"{where} holds other rows than its footer declares ({n_rows}); the file changed "
            "while it was read, or is damaged: rewrite it."
        )
    return X, labels, label_type, overflow


def _batch_rows(layout: ParquetLayout) -> int:
    """Rows per record batch: :data:`PARQUET_BATCH_BYTES` of features, at least
    :data:`PARQUET_MIN_BATCH_ROWS` rows (256 float32 features: 2,048 rows)."""
    row_bytes = max(1, layout.n_features * layout.dtype.itemsize)
    return max(PARQUET_MIN_BATCH_ROWS, PARQUET_BATCH_BYTES // row_bytes)


def _fill_features(
    out: np.ndarray, batch: pa.RecordBatch, layout: ParquetLayout, where: str, first_row: int
) -> RangeOverflow | None:
    """Write a record batch's features into ``out`` (its rows of the row group's array); return
    the values that ``out``'s dtype cannot hold, rows counted within the batch."""
    import pyarrow as pa

    if layout.embedding_column is not None:
        column = pa.chunked_array([batch.column(layout.embedding_column)])
        matrix, overflow = _embedding_matrix(
            column, layout.n_features, layout.dtype, where, first_row
        )
        out[...] = matrix
        return overflow
    overflow = None
    for position, name in enumerate(layout.feature_columns):
        # Missing values come out as NaN, which the data layer refuses with their row.
        values = _arrow_values(batch.column(name))
        with np.errstate(over="ignore"):
            out[:, position] = values
        found = range_overflow(values[:, None], out[:, position : position + 1])
        overflow = earliest_overflow(overflow, found and found.moved(columns=position))
    return overflow


def row_group_chunk_rows(group_rows: Sequence[int], largest: int = DEFAULT_CHUNK_ROWS) -> int:
    """Rows per chunk that every row group but the last holds a whole number of: the largest
    divisor of their common divisor between ``largest / 4`` and ``largest``; ``largest`` when
    there is none (or one row group).

    A row group that ends inside a chunk leaves rows that are copied and joined with the next
    group's before that chunk is written; whole chunks are written as soon as their group is
    read, which saves those copies and their memory.

    Examples
    --------
    >>> row_group_chunk_rows([62_500] * 8), row_group_chunk_rows([250_000, 250_000, 10])
    (62500, 62500)
    >>> row_group_chunk_rows([1_048_576, 5]), row_group_chunk_rows([1_000, 1_000, 1_000])
    (65536, 65536)
    """
    common = math.gcd(*group_rows[:-1])
    if common == 0:
        return largest
    for parts in range(-(-common // largest), common // -(-largest // 4) + 1):
        if common % parts == 0:
            return common // parts
    return largest


def convert_parquet(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    url: str | os.PathLike,
    *,
    label_column: str,
    feature_columns: Sequence[str] | None = None,
    embedding_column: str | None = None,
    dtype: str | None = None,
    chunk_rows: int | None = None,
    codec: str = DEFAULT_CODEC,
    source_storage_options: dict | None = None,
    storage_options: dict | None = None,
    overwrite: bool = False,
    client: Any = None,
    progress: bool = False,
) -> Dataset:
    """Convert Parquet files into a dataset, one row group per task, with bounded memory.

    Parameters
    ----------
    source : str, path or list of them
        A ``.parquet`` file, a directory of them (files and directories whose names start with
        ``_`` or ``.`` are skipped, as writers leave markers there), a glob pattern
        (``data/part-*.parquet``), an fsspec URL (``s3://bucket/table/``), or a list of these.
        Files are read in sorted path order; every file must hold the used columns with the
        same types.
    url : str or path
        The dataset to write.
    label_column : str
        Column of the labels: integers, floats, booleans or strings (dictionary-encoded
        columns too). A missing label is refused.
    feature_columns : list of str, optional
        Numeric columns (integer, float, boolean), in the order of the features. Default:
        every numeric column but the label, in the file's order; where there is none, the
        only list column of numbers is the ``embedding_column`` (with several, name one).
    embedding_column : str, optional
        A list or fixed-size list column of numbers whose rows are the feature vectors (an
        embedding per row), instead of ``feature_columns``. Every row must have the length of
        the first one.
    dtype : {"float32", "float64"}, optional
        Feature dtype. Default: float32 when every feature column (or the embedding's values)
        is float32 or float16, else float64, so the values convert exactly.
    chunk_rows : int, optional
        Rows per chunk. Default: :func:`row_group_chunk_rows` of the row groups, so that each
        row group converts into whole chunks when their sizes allow (row groups of 62,500 rows:
        chunks of 62,500), else 65,536.
    codec, storage_options, overwrite
        As in :func:`dsoftmax.data.write_dataset`.
    source_storage_options : dict, optional
        fsspec options (credentials, endpoint) to read ``source``.
    client : distributed.Client, optional
        Convert on this cluster, a task per row group. Default: the Dask default scheduler's
        client when it is one, else threads of this process.
    progress : bool, default False
        Show a progress bar (bytes, files, rows) on stderr when it is a terminal, and a closing
        line with the rows per second.

    Returns
    -------
    Dataset
        ``X`` of shape (n_rows, n_features), labels as class ids, and the group attribute
        ``feature_names``: the feature columns, or ``embedding[i]``.

    Raises
    ------
    ValueError, TypeError
        When a column is missing or of the wrong type, the files disagree on a column's type,
        a label is missing, embeddings differ in length, or a feature is NaN or infinite
        (missing values read as NaN); the message names the column, file, row and fix.
    FileNotFoundError
        When a path does not exist or a pattern matches nothing.

    Examples
    --------
    >>> convert_parquet("embeddings/", "train.zarr", label_column="label",
    ...                 embedding_column="embedding")  # doctest: +SKIP
    """
    scan = scan_parquet(
        source, label_column, feature_columns, embedding_column, dtype, source_storage_options
    )
    layout, pieces = scan.layout, scan.pieces
    feature_names = layout.feature_names
    if chunk_rows is None:
        chunk_rows = row_group_chunk_rows([piece.n_rows for piece in pieces])
    plan = ConversionPlan(
        layout.label_column, layout.n_features, layout.dtype, feature_names, scan.source_text,
        chunk_rows, codec,
    )  # fmt: skip
    return run_conversion(
        functools.partial(parquet_rows, scan.fs, layout),
        pieces,
        plan,
        os.fspath(url),
        storage_options=storage_options,
        overwrite=overwrite,
        client=client,
        progress=progress,
    )
