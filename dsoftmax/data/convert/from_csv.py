"""CSV sources: blocks of about ``blocksize`` bytes of each file (compressed files whole), each
parsed by pandas and written where it is parsed (:mod:`dsoftmax.data.convert.pipeline`)."""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...defaults import DEFAULT_CHUNK_ROWS, DEFAULT_CODEC
from ..format import Dataset
from ..values import all_finite, range_overflow
from .common import (
    check_feature_columns,
    check_label_column,
    choose_feature_dtype,
    describe_sources,
    has_magic,
    missing_columns,
    source_list,
)
from .pipeline import ConversionPlan, Piece, PieceRows, run_conversion

if TYPE_CHECKING:  # an optional dependency, imported when the converter runs
    import pandas as pd

__all__ = ["convert_csv", "csv_rows"]

_CSV_INSTALL = "pip install 'dsoftmax[csv]'"


def _import_dask_dataframe() -> Any:
    try:
        import dask.dataframe
    except ImportError as error:
        raise ImportError(
            f"reading CSV needs dask.dataframe (and pandas), not installed; {_CSV_INSTALL}."
        ) from error
    return dask.dataframe


def _is_numeric_series_dtype(dtype: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(dtype))


@dataclass(frozen=True)
class CsvLayout:
    """How the blocks of a CSV source are parsed.

    Attributes
    ----------
    header : bytes
        The first line of the first file, put before every block but a file's first.
    feature_columns : tuple of str
    label_column : str
    dtype : numpy.dtype
    """

    header: bytes
    feature_columns: tuple[str, ...]
    label_column: str
    dtype: np.dtype


@dataclass(frozen=True)
class _CsvBlock:
    """Where a block of a CSV file lies: ``length`` None for a whole (compressed) file."""

    offset: int
    length: int | None
    compression: str | None


def _label_ids(labels: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Ids of the (text) labels into their distinct values, as an array of str: a hash table
    finds them about 20 times faster than :func:`numpy.unique` sorts strings."""
    import pandas as pd

    ids, values = pd.factorize(labels)
    return ids, np.asarray(values.to_numpy(dtype=object), dtype=object)


def _block_bytes(fs: Any, path: str, block: _CsvBlock) -> bytes:
    from fsspec.utils import read_block

    with fs.open(path, "rb", compression=block.compression) as file:
        if block.length is None:
            return file.read()
        # From the line after the one that ``offset`` falls in, to the end of the line that
        # ``offset + length`` falls in: every line belongs to exactly one block.
        return read_block(file, block.offset, block.length, delimiter=b"\n")


#: Feature fields read as missing (NaN, refused with their row by the value checks): pandas'
#: usual spellings of a missing value. Label fields are missing only when empty.
FEATURE_NA = ["", "NA", "N/A", "n/a", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None",
              "#N/A", "<NA>"]  # fmt: skip


def csv_rows(fs: Any, layout: CsvLayout, piece: Piece) -> PieceRows:
    """Worker task's reader: features (n_rows, n_features) and labels of one block of rows."""
    import pandas as pd

    data = _block_bytes(fs, piece.path, piece.spec)
    if piece.spec.offset and not data.startswith(layout.header.rstrip()):
        data = layout.header + data
    frame = pd.read_csv(
        io.BytesIO(data),
        usecols=[*layout.feature_columns, layout.label_column],
        # Every feature as float64: a column of ints in the first rows may hold decimals or
        # missing values further down. Labels as text, whose kind is decided over the whole
        # source once every block is read (classes_from_text), not block by block.
        dtype={**{name: "float64" for name in layout.feature_columns}, layout.label_column: str},
        # A label is missing only when its field is empty: "NA" or "None" may name a class.
        keep_default_na=False,
        na_values={**dict.fromkeys(layout.feature_columns, FEATURE_NA), layout.label_column: [""]},
    )
    # Missing values come out as NaN, which the data layer refuses with their row.
    features = frame[list(layout.feature_columns)]
    with np.errstate(over="ignore"):
        X = features.to_numpy(dtype=layout.dtype, na_value=np.nan)
    # Finite values beyond a narrower dtype's range became inf: found in the float64 columns.
    overflow = None
    if layout.dtype != np.float64 and not all_finite(X):
        overflow = range_overflow(features.to_numpy(dtype=np.float64, na_value=np.nan), X)
    # Spaces around a field are not part of the label (" 7" and "7" are one class).
    labels = frame[layout.label_column].str.strip().replace("", np.nan)
    missing = labels.isna().to_numpy()
    n_missing = int(missing.sum())
    first_missing = int(np.argmax(missing)) if n_missing else None
    ids, values = _label_ids(labels[~missing] if n_missing else labels)
    return PieceRows(X, ids, n_missing, first_missing, "the CSV source", values, overflow)


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
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    codec: str = DEFAULT_CODEC,
    source_storage_options: dict | None = None,
    storage_options: dict | None = None,
    overwrite: bool = False,
    client: Any = None,
    progress: bool = False,
) -> Dataset:
    """Convert CSV files (with a header row) into a dataset, block by block, in one pass.

    Parameters
    ----------
    source : str, path or list of them
        A ``.csv`` file, optionally compressed (``.csv.gz``, ``.bz2``, ``.xz``, ``.zst``), a
        glob pattern (``data/*.csv``), an fsspec URL, or a list of these. Every file has the
        same header.
    url : str or path
        The dataset to write.
    label_column : str
        Column of the labels, read as text; a missing label is refused. The classes are ints
        when every label of the source is a canonical decimal integer (``-3``, ``0``, ``12``:
        no leading zeros, no ``+``, no spaces), else the labels as strings (``007`` and ``7``
        are two classes).
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
    client : distributed.Client, optional
        Convert on this cluster, a task per block. Default: the Dask default scheduler's
        client when it is one, else threads of this process.
    progress : bool, default False
        Show a progress bar (bytes, files, rows) on stderr when it is a terminal, and a closing
        line with the rows per second.

    Returns
    -------
    Dataset
        With the group attribute ``feature_names``.

    Raises
    ------
    ValueError, TypeError
        When a column is missing or not numeric, a label is missing, or a feature is NaN,
        infinite or empty (missing values read as NaN).
    FileNotFoundError, IsADirectoryError
        When a path does not exist, a pattern matches nothing or a path is a directory (before
        anything is read).
    """
    dd = _import_dask_dataframe()
    paths = source_list(source, "CSV")
    label_column = check_label_column(label_column)
    columns = check_feature_columns(feature_columns, label_column)
    dtype = choose_feature_dtype(dtype, np.dtype(np.float64))
    fs, files = _csv_files(paths, source_storage_options)
    options = {"blocksize": blocksize, "storage_options": source_storage_options}
    frame = _read_csv(dd, paths, options)
    names = list(frame.columns)
    source_text = describe_sources(paths)
    missing_columns([label_column], names, source_text)
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
    missing_columns(columns, names, source_text)
    for name in columns:
        if not _is_numeric_series_dtype(frame.dtypes[name]):
            raise TypeError(
                f"feature column {name!r} of {source_text} reads as {frame.dtypes[name]}, not "
                "numbers; leave it out of feature_columns or fix its values."
            )
    layout = CsvLayout(_header(fs, files[0]), tuple(columns), label_column, dtype)
    plan = ConversionPlan(
        label_column, len(columns), dtype, list(columns), source_text, chunk_rows, codec,
        text_labels=True,
    )
    return run_conversion(
        functools.partial(csv_rows, fs, layout),
        _csv_pieces(fs, files, _block_size(blocksize)),
        plan,
        os.fspath(url),
        storage_options=storage_options,
        overwrite=overwrite,
        client=client,
        progress=progress,
    )


def _csv_files(paths: list[str], storage_options: dict | None) -> tuple[Any, list[str]]:
    """The filesystem of the sources and their files, globs expanded, as Dask expands them.

    Raises
    ------
    FileNotFoundError
        When a path does not exist or a pattern matches no file.
    IsADirectoryError
        When a path is a directory.
    """
    from fsspec.core import get_fs_token_paths

    options = storage_options or {}
    files: list[str] = []
    for path in paths:
        # One path at a time, so that a pattern that matches nothing is named.
        fs, _, found = get_fs_token_paths([path], mode="rb", storage_options=options)
        if has_magic(path):
            if not found:
                raise FileNotFoundError(f"no CSV file matches {path!r}.")
        elif fs.isdir(found[0]):
            raise IsADirectoryError(
                f"{path!r} is a directory; name its CSV files, e.g. with a pattern such as "
                f"'{path.rstrip('/')}/*.csv'."
            )
        elif not fs.isfile(found[0]):
            raise FileNotFoundError(f"no such CSV file: {path!r}.")
        files.extend(found)
    return fs, files


def _header(fs: Any, path: str) -> bytes:
    from fsspec.utils import infer_compression

    with fs.open(path, "rb", compression=infer_compression(path)) as file:
        return file.readline().rstrip(b"\r\n") + b"\n"


def _block_size(blocksize: int | str | None) -> int | None:
    from dask.utils import parse_bytes

    if blocksize == "default":
        from dask.dataframe.io.csv import AUTO_BLOCKSIZE

        return int(AUTO_BLOCKSIZE)
    return parse_bytes(blocksize) if isinstance(blocksize, str) else blocksize


def _csv_pieces(fs: Any, files: list[str], blocksize: int | None) -> list[Piece]:
    """Blocks of about ``blocksize`` bytes of each uncompressed file; compressed files whole,
    as they cannot be split."""
    from fsspec.utils import infer_compression

    pieces = []
    for path in files:
        size = int(fs.size(path))
        compression = infer_compression(path)
        if compression or not blocksize or size <= blocksize:
            pieces.append(Piece(path, None, size, _CsvBlock(0, None, compression)))
            continue
        for offset in range(0, size, blocksize):
            length = min(blocksize, size - offset)
            pieces.append(Piece(path, None, length, _CsvBlock(offset, length, None)))
    return pieces
