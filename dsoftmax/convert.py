"""Convert Parquet, CSV and svmlight/libsvm files into dsoftmax Zarr datasets.

Every converter ends in :func:`dsoftmax.data.write_dataset`, so the result is an ordinary
dataset: labels of any kind (ints, floats, bools, strings) become class ids with the original
values stored as ``classes``, non-finite features (including missing values, read as NaN) are
refused with the block and row, and the store is only touched once every check passed.

How much memory a conversion needs
----------------------------------
* **Parquet** (:func:`convert_parquet`) reads one row group per Dask task, with ``pyarrow``:
  memory per task is bounded by the largest row group, not by the size of the source, so sources
  larger than memory -- or than a worker's memory limit -- convert. Row counts come from the
  Parquet footers, so no pass over the data is needed to lay out the chunks.
* **CSV** (:func:`convert_csv`) reads through :func:`dask.dataframe.read_csv`: uncompressed
  files are split into blocks of ``blocksize`` bytes; compressed files (``.gz``, ``.bz2``,
  ``.xz``, ``.zst``) cannot be split and are read one file per task.
* **svmlight** (:func:`convert_svmlight`) loads the whole file into memory with
  :func:`sklearn.datasets.load_svmlight_file`, then densifies it; ``max_dense_bytes`` refuses
  files whose dense matrix would not fit.

Parquet and CSV sources are read in three streaming passes: the label column alone (class
values, missing labels, and the row counts of CSV blocks), then everything twice by
:func:`~dsoftmax.data.write_dataset`, which checks every value before it writes and reads again
to write. The work runs on the default Dask scheduler: the active ``distributed`` client when
there is one, else local threads.

Rows are numbered from 0 across the files of a source, in sorted path order (the order of the
dataset's rows), and error messages count them that way.

Parquet is read with ``pyarrow`` rather than :func:`dask.dataframe.read_parquet` because the
latter, with pandas >= 3.1, warns on every partition of files that pandas did not write (Spark,
DuckDB, Polars, pyarrow), and it converts list columns to one Python object per row.
"""

from __future__ import annotations

import glob
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np

from .data import Dataset, _open_group, open_dataset, write_dataset

if TYPE_CHECKING:  # optional dependencies, imported when a converter runs
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "DEFAULT_MAX_DENSE_BYTES",
    "FORMATS",
    "convert_csv",
    "convert_parquet",
    "convert_svmlight",
    "detect_format",
]

#: Largest dense feature matrix :func:`convert_svmlight` builds by default: 4 GiB.
DEFAULT_MAX_DENSE_BYTES = 4 * 2**30
#: Source formats, with the file name endings :func:`detect_format` recognizes.
FORMATS: dict[str, tuple[str, ...]] = {
    "npz": (".npz",),
    "npy": (".npy",),
    "parquet": (".parquet", ".pq"),
    "csv": (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zst"),
    "svmlight": (
        ".svm", ".svmlight", ".libsvm", ".txt",
        ".svm.gz", ".svmlight.gz", ".libsvm.gz", ".txt.gz",
        ".svm.bz2", ".svmlight.bz2", ".libsvm.bz2", ".txt.bz2",
    ),
}  # fmt: skip
_PARQUET_INSTALL = "pip install 'dsoftmax[parquet]'"
_CSV_INSTALL = "pip install 'dsoftmax[csv]'"

# ---------------------------------------------------------------------------------------------
# Format detection
# ---------------------------------------------------------------------------------------------


def _format_of(path: str) -> str | None:
    name = path.rstrip("/").lower()
    # Longest ending first, so that "x.svm.gz" is svmlight and not a bare ".gz".
    endings = sorted(
        ((ending, kind) for kind, names in FORMATS.items() for ending in names),
        key=lambda pair: -len(pair[0]),
    )
    return next((kind for ending, kind in endings if name.endswith(ending)), None)


def detect_format(sources: Sequence[str | os.PathLike]) -> str:
    """The format of ``sources``, from their file name endings.

    Parameters
    ----------
    sources : sequence of str or path
        Files, glob patterns (``data/part-*.csv.gz``) or a directory (of Parquet files).

    Returns
    -------
    str
        One of :data:`FORMATS`: ``"npz"`` (one file), ``"npy"`` (two files: X then y),
        ``"parquet"`` (``.parquet``/``.pq`` files, or a local directory), ``"csv"`` (``.csv``,
        optionally compressed) or ``"svmlight"`` (``.svm``, ``.svmlight``, ``.libsvm``,
        ``.txt``, optionally ``.gz``/``.bz2``).

    Raises
    ------
    ValueError
        When an ending is unknown, the sources mix formats, or the count of files does not suit
        the format.
    """
    paths = [os.fspath(source) for source in sources]
    if not paths:
        raise ValueError("no source given; pass at least one file, glob pattern or directory.")
    kinds = []
    for path in paths:
        kind = "parquet" if os.path.isdir(path) else _format_of(path)
        if kind is None:
            endings = ", ".join(ending for names in FORMATS.values() for ending in names)
            raise ValueError(
                f"cannot tell the format of {path!r} from its name; expected one of {endings}, "
                f"or a directory of Parquet files. Name the format with --format "
                f"({', '.join(FORMATS)})."
            )
        kinds.append(kind)
    if len(set(kinds)) > 1:
        found = ", ".join(f"{path!r} ({kind})" for path, kind in zip(paths, kinds, strict=True))
        raise ValueError(f"the sources mix formats: {found}; convert one format at a time.")
    kind = kinds[0]
    _check_source_count(kind, len(paths))
    return kind


def _check_source_count(kind: str, count: int) -> None:
    if kind == "npz" and count != 1:
        raise ValueError(f"a .npz source is one file, got {count}; convert them one at a time.")
    if kind == "npy" and count != 2:
        raise ValueError(
            f"a .npy source is a pair of files, X.npy then y.npy, got {count} file(s)."
        )


# ---------------------------------------------------------------------------------------------
# Shared checks and helpers
# ---------------------------------------------------------------------------------------------


def _import_pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet  # the submodule the reader uses
    except ImportError as error:
        raise ImportError(
            f"reading Parquet needs pyarrow, which is not installed; {_PARQUET_INSTALL}."
        ) from error
    return pyarrow


def _import_dask_dataframe() -> Any:
    try:
        import dask.dataframe
    except ImportError as error:
        raise ImportError(
            f"reading CSV needs dask.dataframe (and pandas), not installed; {_CSV_INSTALL}."
        ) from error
    return dask.dataframe


def _source_list(source: Any, what: str) -> list[str]:
    if isinstance(source, str | os.PathLike):
        return [os.fspath(source)]
    if (
        isinstance(source, Sequence)
        and source
        and all(isinstance(item, str | os.PathLike) for item in source)
    ):
        return [os.fspath(item) for item in source]
    raise TypeError(
        f"source must be a {what} path, URL or glob pattern, or a non-empty list of them, got "
        f"{source!r}."
    )


def _source_text(paths: Sequence[str]) -> str:
    return repr(paths[0]) if len(paths) == 1 else f"{paths[0]!r} and {len(paths) - 1} more"


def _feature_dtype(dtype: Any, automatic: np.dtype) -> np.dtype:
    if dtype is None:
        return automatic
    try:
        chosen = np.dtype(dtype)
    except TypeError:
        chosen = None
    if chosen not in (np.float32, np.float64):
        raise TypeError(
            f"dtype must be 'float32', 'float64' or None (chosen from the source), got {dtype!r}."
        )
    return chosen


def _check_label_column(label_column: Any) -> str:
    if not isinstance(label_column, str) or not label_column:
        raise TypeError(
            f"label_column must name the column that holds the labels, got {label_column!r}."
        )
    return label_column


def _check_feature_columns(feature_columns: Any, label_column: str) -> list[str] | None:
    if feature_columns is None:
        return None
    if isinstance(feature_columns, str) or not all(
        isinstance(name, str) for name in feature_columns
    ):
        raise TypeError(
            f"feature_columns must be a list of column names, got {feature_columns!r}; for one "
            "column pass [name]."
        )
    columns = list(feature_columns)
    if not columns:
        raise ValueError(
            "feature_columns is empty; name at least one column, or pass None for every numeric "
            "column but the label."
        )
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise ValueError(f"feature_columns repeats {repeated}; name each column once.")
    if label_column in columns:
        raise ValueError(
            f"feature_columns holds the label column {label_column!r}; a model must not see its "
            "labels as a feature. Remove it from feature_columns."
        )
    return columns


def _missing_columns(wanted: Sequence[str], available: Sequence[str], where: str) -> None:
    missing = [name for name in wanted if name not in available]
    if missing:
        shown = list(available)[:20]
        more = f" (and {len(available) - 20} more)" if len(available) > 20 else ""
        raise ValueError(
            f"{where} has no column(s) {missing}; its columns are {shown}{more}. Check "
            "label_column / feature_columns / embedding_column."
        )


@dataclass(frozen=True)
class LabelSummary:
    """What one block of a source says about its labels.

    Attributes
    ----------
    n_rows : int
        Rows of the block.
    unique : ndarray of shape (n_unique,)
        Distinct labels of the block.
    first_missing : int or None
        Row (within the block) of the first missing label, or None.
    n_missing : int
        Rows whose label is missing.
    """

    n_rows: int
    unique: np.ndarray
    first_missing: int | None
    n_missing: int


def _check_label_values(values: np.ndarray, label_column: str, where: str) -> np.ndarray:
    if values.dtype.kind not in "biufUO":
        raise TypeError(
            f"label column {label_column!r} in {where} holds {values.dtype} values; labels must "
            "be numbers, booleans or strings. Convert the column, e.g. to strings."
        )
    return values


def _classes_from(summaries: Sequence[LabelSummary], label_column: str, source: str) -> np.ndarray:
    """Every label of the source, sorted, after refusing missing labels."""
    starts = np.concatenate([[0], np.cumsum([part.n_rows for part in summaries])])
    missing = [
        (int(starts[index]) + part.first_missing, part.n_missing)
        for index, part in enumerate(summaries)
        if part.n_missing
    ]
    if missing:
        total = sum(count for _, count in missing)
        raise ValueError(
            f"label column {label_column!r} of {source} is missing in {total} row(s), first in "
            f"row {missing[0][0]}; drop those rows or fill in their labels, then convert again."
        )
    if starts[-1] == 0:
        raise ValueError(f"{source} has no rows; there is nothing to convert.")
    try:
        classes = np.unique(np.concatenate([part.unique for part in summaries]))
    except TypeError as error:
        raise TypeError(
            f"label column {label_column!r} of {source} mixes numbers and strings ({error}); "
            "convert it to one kind."
        ) from error
    # Plain strings: class attributes are JSON, and object arrays of str round trip as '<U'.
    return np.asarray(classes.tolist()) if classes.dtype == object else classes


def _write(
    url: str | os.PathLike,
    blocks: Sequence[tuple[Any, int]],
    n_features: int,
    dtype: np.dtype,
    label_dtype: np.dtype,
    classes: np.ndarray,
    feature_names: list[str],
    source: str,
    *,
    chunk_rows: int,
    codec: str,
    storage_options: dict | None,
    overwrite: bool,
) -> Dataset:
    """Write delayed ``(X_block, labels_block)`` pairs of known rows as a dataset."""
    X_parts, y_parts = [], []
    for block, n_rows in blocks:
        if n_rows == 0:
            continue
        X_block, label_block = block
        X_parts.append(da.from_delayed(X_block, shape=(n_rows, n_features), dtype=dtype))
        y_parts.append(da.from_delayed(label_block, shape=(n_rows,), dtype=label_dtype))
    try:
        write_dataset(
            url,
            da.concatenate(X_parts),
            da.concatenate(y_parts),
            classes=classes,
            chunk_rows=chunk_rows,
            codec=codec,
            storage_options=storage_options,
            overwrite=overwrite,
        )
    except ValueError as error:
        raise ValueError(f"cannot convert {source}: {error}") from error
    # Outside the fingerprint: naming the columns does not change the data.
    group = _open_group(os.fspath(url), "r+", storage_options)
    group.attrs["feature_names"] = feature_names
    return open_dataset(url, storage_options=storage_options)


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParquetLayout:
    """Which columns of a Parquet source become what.

    Attributes
    ----------
    label_column : str
    feature_columns : tuple of str
        Numeric columns, one feature each; empty when ``embedding_column`` is used.
    embedding_column : str or None
        A list column whose rows are the feature vectors.
    n_features : int
    dtype : numpy.dtype
        float32 or float64.
    """

    label_column: str
    feature_columns: tuple[str, ...]
    embedding_column: str | None
    n_features: int
    dtype: np.dtype

    @property
    def columns(self) -> list[str]:
        features = [self.embedding_column] if self.embedding_column else self.feature_columns
        return [*features, self.label_column]


@dataclass(frozen=True)
class _RowGroup:
    path: str
    index: int
    n_rows: int


def _has_magic(path: str) -> bool:
    return any(character in path for character in "*?[")


def _expand_paths(fs: Any, path: str) -> list[str]:
    if _has_magic(path):
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


def _parquet_footer(fs: Any, path: str) -> tuple[pa.Schema, list[int]]:
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
    return schema, [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def _is_numeric(arrow_type: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
    )


def _is_single_precision(arrow_type: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_float32(arrow_type) or pa.types.is_float16(arrow_type))


def _is_list(arrow_type: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(
        pa.types.is_list(arrow_type)
        or pa.types.is_large_list(arrow_type)
        or pa.types.is_fixed_size_list(arrow_type)
    )


def _parquet_layout(
    fs: Any,
    first_file: str,
    schema: pa.Schema,
    label_column: str,
    feature_columns: list[str] | None,
    embedding_column: str | None,
    dtype: Any,
) -> ParquetLayout:
    names = schema.names
    _missing_columns([label_column], names, repr(first_file))
    if embedding_column is not None:
        _missing_columns([embedding_column], names, repr(first_file))
        embedding_type = schema.field(embedding_column).type
        if not _is_list(embedding_type) or not _is_numeric(embedding_type.value_type):
            raise TypeError(
                f"embedding_column {embedding_column!r} has type {embedding_type}; it must be a "
                "list (or fixed-size list) of numbers. Name its numeric columns with "
                "feature_columns instead."
            )
        n_features = _embedding_length(fs, first_file, embedding_column, embedding_type)
        automatic = _is_single_precision(embedding_type.value_type)
        return ParquetLayout(
            label_column,
            (),
            embedding_column,
            n_features,
            _feature_dtype(dtype, np.dtype(np.float32 if automatic else np.float64)),
        )
    if feature_columns is None:
        feature_columns = [
            field.name for field in schema if field.name != label_column and _is_numeric(field.type)
        ]
        if not feature_columns:
            raise ValueError(
                f"{first_file!r} has no numeric column besides the label {label_column!r}; its "
                f"columns are {names}. Name the features with feature_columns or an "
                "embedding_column."
            )
    _missing_columns(feature_columns, names, repr(first_file))
    for name in feature_columns:
        if not _is_numeric(schema.field(name).type):
            raise TypeError(
                f"feature column {name!r} has type {schema.field(name).type}; features must be "
                "numbers. Leave it out of feature_columns, or encode it as numbers first."
            )
    automatic = all(_is_single_precision(schema.field(name).type) for name in feature_columns)
    return ParquetLayout(
        label_column,
        tuple(feature_columns),
        None,
        len(feature_columns),
        _feature_dtype(dtype, np.dtype(np.float32 if automatic else np.float64)),
    )


def _embedding_length(fs: Any, path: str, column: str, arrow_type: pa.DataType) -> int:
    import pyarrow.parquet as pq

    if hasattr(arrow_type, "list_size"):
        return int(arrow_type.list_size)
    with fs.open(path, "rb") as file:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=1, columns=[column]):
            if batch.num_rows and batch.column(0)[0].is_valid:
                return len(batch.column(0)[0])
    raise ValueError(
        f"cannot tell the length of embedding column {column!r}: the first row of {path!r} has "
        "none; put a complete row first, or fix the missing embeddings."
    )


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


def read_parquet_row_group(fs: Any, path: str, row_group: int, columns: list[str]) -> pa.Table:
    """Worker task: one row group of a Parquet file, only ``columns``."""
    import pyarrow.parquet as pq

    # pyarrow's own file access: reading through a Python file object is several times slower.
    # One thread: the tasks already run in parallel.
    with pq.ParquetFile(path, filesystem=fs) as file:
        return file.read_row_group(row_group, columns=columns, use_threads=False)


def _arrow_values(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy(zero_copy_only=False)


def _arrow_labels(column: pa.ChunkedArray) -> np.ndarray:
    import pyarrow as pa

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return _arrow_values(column)


def parquet_row_group_labels(fs: Any, path: str, row_group: int, label_column: str) -> LabelSummary:
    """Worker task: the label summary of one row group."""
    column = read_parquet_row_group(fs, path, row_group, [label_column]).column(0)
    n_missing = column.null_count
    first_missing = None
    if n_missing:
        first_missing = int(np.argmax(_arrow_values(column.is_null())))
        column = column.drop_null()
    values = _check_label_values(_arrow_labels(column), label_column, repr(path))
    return LabelSummary(len(values) + n_missing, np.unique(values), first_missing, n_missing)


def _embedding_matrix(
    column: pa.ChunkedArray, n_features: int, dtype: np.dtype, where: str
) -> np.ndarray:
    import pyarrow.compute as pc

    lists = column.combine_chunks()
    if lists.null_count:
        first = int(np.argmax(lists.is_null().to_numpy(zero_copy_only=False)))
        raise ValueError(
            f"embedding column of {where} has {lists.null_count} missing row(s), first at row "
            f"{first} of the row group; drop those rows or fill them in."
        )
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    wrong = lengths != n_features
    if wrong.any():
        first = int(np.argmax(wrong))
        raise ValueError(
            f"embedding column of {where} has rows of {int(lengths[first])} values where "
            f"{n_features} are expected (the first row's length), first at row {first} of the "
            "row group; every embedding must have the same length."
        )
    values = lists.flatten().to_numpy(zero_copy_only=False)
    return values.astype(dtype, copy=False).reshape(len(lists), n_features)


def parquet_block(
    fs: Any, row_group: _RowGroup, layout: ParquetLayout
) -> tuple[np.ndarray, np.ndarray]:
    """Worker task: features (n_rows, n_features) and labels (n_rows,) of one row group."""
    table = read_parquet_row_group(fs, row_group.path, row_group.index, layout.columns)
    where = f"{row_group.path!r} (row group {row_group.index})"
    if layout.embedding_column is not None:
        X = _embedding_matrix(
            table.column(layout.embedding_column), layout.n_features, layout.dtype, where
        )
    else:
        X = np.empty((table.num_rows, layout.n_features), dtype=layout.dtype)
        for position, name in enumerate(layout.feature_columns):
            # Missing values come out as NaN, which the data layer refuses with their row.
            X[:, position] = _arrow_values(table.column(name))
    return X, _arrow_labels(table.column(layout.label_column))


def _label_dtype(arrow_type: pa.DataType) -> np.dtype:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if _is_numeric(arrow_type):
        return np.dtype(arrow_type.to_pandas_dtype())
    return np.dtype(object)


def convert_parquet(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    url: str | os.PathLike,
    *,
    label_column: str,
    feature_columns: Sequence[str] | None = None,
    embedding_column: str | None = None,
    dtype: str | None = None,
    chunk_rows: int = 65536,
    codec: str = "zstd",
    source_storage_options: dict | None = None,
    storage_options: dict | None = None,
    overwrite: bool = False,
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
        every numeric column but the label, in the file's order.
    embedding_column : str, optional
        A list or fixed-size list column of numbers whose rows are the feature vectors (an
        embedding per row), instead of ``feature_columns``. Every row must have the length of
        the first one.
    dtype : {"float32", "float64"}, optional
        Feature dtype. Default: float32 when every feature column (or the embedding's values)
        is float32 or float16, else float64, so the values convert exactly.
    chunk_rows, codec, storage_options, overwrite
        As in :func:`dsoftmax.data.write_dataset`.
    source_storage_options : dict, optional
        fsspec options (credentials, endpoint) to read ``source``.

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
    _import_pyarrow()
    paths = _source_list(source, "Parquet")
    label_column = _check_label_column(label_column)
    columns = _check_feature_columns(feature_columns, label_column)
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
    layout = _parquet_layout(
        fs, files[0], first_schema, label_column, columns, embedding_column, dtype
    )
    for path, (schema, _) in zip(files, footers, strict=True):
        _check_same_schema(path, schema, first_schema, layout.columns)
    row_groups = [
        _RowGroup(path, index, n_rows)
        for path, (_, sizes) in zip(files, footers, strict=True)
        for index, n_rows in enumerate(sizes)
        if n_rows
    ]
    source_text = _source_text(paths)
    if not row_groups:
        raise ValueError(f"{source_text} has no rows; there is nothing to convert.")
    token = uuid.uuid4().hex
    shared_fs = dask.delayed(fs, traverse=False)
    summaries = dask.compute(
        *[
            dask.delayed(parquet_row_group_labels, pure=False)(
                shared_fs,
                group.path,
                group.index,
                label_column,
                dask_key_name=f"dsoftmax-convert-parquet-labels-{token}-{i}",
            )
            for i, group in enumerate(row_groups)
        ]
    )
    classes = _classes_from(summaries, label_column, source_text)
    blocks = [
        (
            dask.delayed(parquet_block, pure=False, nout=2)(
                shared_fs, group, layout, dask_key_name=f"dsoftmax-convert-parquet-{token}-{i}"
            ),
            group.n_rows,
        )
        for i, group in enumerate(row_groups)
    ]
    feature_names = (
        [f"{embedding_column}[{i}]" for i in range(layout.n_features)]
        if embedding_column
        else list(layout.feature_columns)
    )
    return _write(
        url,
        blocks,
        layout.n_features,
        layout.dtype,
        _label_dtype(first_schema.field(label_column).type),
        classes,
        feature_names,
        source_text,
        chunk_rows=chunk_rows,
        codec=codec,
        storage_options=storage_options,
        overwrite=overwrite,
    )


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def _is_numeric_series_dtype(dtype: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(dtype))


def _frame_labels(frame: pd.DataFrame, label_column: str) -> np.ndarray:
    # pandas string columns come out as object arrays of str, which the data layer maps.
    return frame[label_column].to_numpy()


def csv_block_labels(frame: pd.DataFrame, label_column: str) -> LabelSummary:
    """Worker task: the label summary of one block of CSV rows."""
    missing = frame[label_column].isna().to_numpy()
    n_missing = int(missing.sum())
    first_missing = int(np.argmax(missing)) if n_missing else None
    values = _frame_labels(frame[~missing] if n_missing else frame, label_column)
    values = _check_label_values(values, label_column, "the CSV source")
    return LabelSummary(len(frame), np.unique(values), first_missing, n_missing)


def csv_block(
    frame: pd.DataFrame, feature_columns: tuple[str, ...], label_column: str, dtype: np.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """Worker task: features (n_rows, n_features) and labels (n_rows,) of one block of rows."""
    # Missing values come out as NaN, which the data layer refuses with their row.
    X = frame[list(feature_columns)].to_numpy(dtype=dtype, na_value=np.nan)
    return X, _frame_labels(frame, label_column)


def _read_csv(dd: Any, paths: list[str], options: dict[str, Any]) -> Any:
    """One dask dataframe over ``paths``, in order.

    Dask infers the compression of a list of files from the first one alone, so each run of
    files with the same compression is read on its own; a compressed file cannot be split into
    blocks, so it is read whole.
    """
    import itertools

    from fsspec.utils import infer_compression

    frames = []
    for compression, run in itertools.groupby(paths, key=infer_compression):
        blocksize = None if compression else options["blocksize"]
        frames.append(
            dd.read_csv(
                list(run), **{**options, "blocksize": blocksize, "compression": compression}
            )
        )
    return frames[0] if len(frames) == 1 else dd.concat(frames)


def convert_csv(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    url: str | os.PathLike,
    *,
    label_column: str,
    feature_columns: Sequence[str] | None = None,
    dtype: str = "float64",
    blocksize: int | str | None = "default",
    chunk_rows: int = 65536,
    codec: str = "zstd",
    source_storage_options: dict | None = None,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Convert CSV files (with a header row) into a dataset, block by block.

    Parameters
    ----------
    source : str, path or list of them
        A ``.csv`` file, optionally compressed (``.csv.gz``, ``.bz2``, ``.xz``, ``.zst``), a
        glob pattern (``data/*.csv``), an fsspec URL, or a list of these. Every file has the
        same header.
    url : str or path
        The dataset to write.
    label_column : str
        Column of the labels (numbers or strings); a missing label is refused.
    feature_columns : list of str, optional
        Numeric columns, in the order of the features. Default: every column but the label that
        :func:`dask.dataframe.read_csv` reads as numbers from the start of the first file.
    dtype : {"float64", "float32"}
        Feature dtype; float64 keeps every decimal that a float64 printed exactly.
    blocksize : int, str or None
        Bytes per block of an uncompressed file (``"default"``: Dask's choice, at most 64 MB).
        Compressed files are read whole, one per task.
    chunk_rows, codec, storage_options, overwrite
        As in :func:`dsoftmax.data.write_dataset`.
    source_storage_options : dict, optional
        fsspec options to read ``source``.

    Returns
    -------
    Dataset
        With the group attribute ``feature_names``.

    Raises
    ------
    ValueError, TypeError
        When a column is missing or not numeric, a label is missing, or a feature is NaN,
        infinite or empty (missing values read as NaN).
    FileNotFoundError
        When a path does not exist or a pattern matches nothing.
    """
    dd = _import_dask_dataframe()
    paths = _source_list(source, "CSV")
    label_column = _check_label_column(label_column)
    columns = _check_feature_columns(feature_columns, label_column)
    dtype = _feature_dtype(dtype, np.dtype(np.float64))
    options = {"blocksize": blocksize, "storage_options": source_storage_options}
    frame = _read_csv(dd, paths, options)
    names = list(frame.columns)
    source_text = _source_text(paths)
    _missing_columns([label_column], names, source_text)
    if columns is None:
        columns = [
            name
            for name in names
            if name != label_column and _is_numeric_series_dtype(frame.dtypes[name])
        ]
        if not columns:
            raise ValueError(
                f"{source_text} has no numeric column besides the label {label_column!r}; its "
                f"columns are {names}. Name the features with feature_columns."
            )
    _missing_columns(columns, names, source_text)
    for name in columns:
        if not _is_numeric_series_dtype(frame.dtypes[name]):
            raise TypeError(
                f"feature column {name!r} of {source_text} reads as {frame.dtypes[name]}, not "
                "numbers; leave it out of feature_columns or fix its values."
            )
    # Read every feature as float64: a column of ints in the first rows may hold decimals or
    # missing values further down, which would break Dask's dtype guess.
    options.update(dtype={name: "float64" for name in columns}, usecols=[*columns, label_column])
    frame = _read_csv(dd, paths, options)
    summaries = dask.compute(
        *[
            dask.delayed(csv_block_labels, pure=False)(part, label_column)
            for part in frame[[label_column]].to_delayed()
        ]
    )
    classes = _classes_from(summaries, label_column, source_text)
    label_meta = frame.dtypes[label_column]
    label_dtype = label_meta if isinstance(label_meta, np.dtype) else np.dtype(object)
    blocks = [
        (dask.delayed(csv_block, pure=False, nout=2)(part, tuple(columns), label_column, dtype), n)
        for part, n in zip(
            frame.to_delayed(), [summary.n_rows for summary in summaries], strict=True
        )
    ]
    return _write(
        url,
        blocks,
        len(columns),
        dtype,
        label_dtype,
        classes,
        list(columns),
        source_text,
        chunk_rows=chunk_rows,
        codec=codec,
        storage_options=storage_options,
        overwrite=overwrite,
    )


# ---------------------------------------------------------------------------------------------
# svmlight / libsvm
# ---------------------------------------------------------------------------------------------


def _svmlight_paths(source: Any) -> list[str]:
    paths = []
    for path in _source_list(source, "svmlight"):
        if _has_magic(path):
            found = sorted(glob.glob(path))
            if not found:
                raise FileNotFoundError(f"no svmlight file matches {path!r}.")
            paths.extend(found)
        elif not Path(path).is_file():
            raise FileNotFoundError(f"no such svmlight file: {path!r}.")
        else:
            paths.append(path)
    return paths


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _integral_labels(labels: np.ndarray) -> np.ndarray:
    """svmlight labels are parsed as floats; ``1`` and ``-1`` are meant as ints."""
    if np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    return labels


def convert_svmlight(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    url: str | os.PathLike,
    *,
    n_features: int | None = None,
    zero_based: bool | str = "auto",
    dtype: str = "float32",
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
    chunk_rows: int = 65536,
    codec: str = "zstd",
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Convert svmlight / libsvm text files into a dense dataset.

    The files are loaded into memory with :func:`sklearn.datasets.load_svmlight_files` (sparse),
    then densified: this converter is for files whose dense matrix fits in memory, which
    ``max_dense_bytes`` checks before densifying. Split bigger files and convert the parts.

    Parameters
    ----------
    source : str, path or list of them
        Local files (``.gz`` and ``.bz2`` are decompressed) or glob patterns; several files are
        stacked in order and share the feature count.
    url : str or path
        The dataset to write.
    n_features : int, optional
        Number of features; default: the highest feature index found (plus one when
        zero-based). Pass it when a file may lack the last features.
    zero_based : bool or "auto"
        Whether feature indices start at 0; ``"auto"`` guesses from the files, as scikit-learn.
    dtype : {"float32", "float64"}
        Feature dtype.
    max_dense_bytes : int, default 4 GiB
        Largest dense feature matrix to build; bigger sources are refused before densifying.
    chunk_rows, codec, storage_options, overwrite
        As in :func:`dsoftmax.data.write_dataset`.

    Returns
    -------
    Dataset
        Labels that are all whole numbers (``+1``, ``-1``, ``3``) become int classes; other
        labels stay floats. ``qid`` fields are ignored.

    Raises
    ------
    ValueError
        When a file does not parse, or the dense matrix would exceed ``max_dense_bytes``.
    FileNotFoundError
        When a file does not exist or a pattern matches nothing.
    """
    from scipy import sparse
    from sklearn.datasets import load_svmlight_files

    paths = _svmlight_paths(source)
    feature_dtype = _feature_dtype(dtype, np.dtype(np.float32))
    if n_features is not None and not (_is_int(n_features) and n_features >= 1):
        raise ValueError(f"n_features must be an int >= 1 or None, got {n_features!r}.")
    if not (_is_int(max_dense_bytes) and max_dense_bytes >= 1):
        raise ValueError(f"max_dense_bytes must be an int >= 1, got {max_dense_bytes!r}.")
    source_text = _source_text(paths)
    try:
        loaded = load_svmlight_files(
            paths, n_features=n_features, dtype=feature_dtype, zero_based=zero_based
        )
    except ValueError as error:
        raise ValueError(f"cannot read {source_text} as svmlight: {error}") from error
    matrices, labels = loaded[0::2], loaded[1::2]
    n_rows, width = sum(m.shape[0] for m in matrices), matrices[0].shape[1]
    dense_bytes = n_rows * width * feature_dtype.itemsize
    if dense_bytes > max_dense_bytes:
        raise ValueError(
            f"{source_text} holds {n_rows} rows x {width} features: {dense_bytes / 2**30:.2f} "
            f"GiB as dense {feature_dtype}, more than max_dense_bytes={max_dense_bytes} "
            f"({max_dense_bytes / 2**30:.2f} GiB). Split the file and convert the parts, or "
            "raise max_dense_bytes if this machine has the memory."
        )
    X = sparse.vstack(matrices, format="csr").toarray()
    y = _integral_labels(np.concatenate(labels))
    try:
        return write_dataset(
            url,
            X,
            y,
            chunk_rows=chunk_rows,
            codec=codec,
            storage_options=storage_options,
            overwrite=overwrite,
        )
    except ValueError as error:
        raise ValueError(f"cannot convert {source_text}: {error}") from error
