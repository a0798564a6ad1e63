"""Convert NumPy, Parquet, CSV and svmlight/libsvm files into dsoftmax Zarr datasets.

Every converter ends in :func:`dsoftmax.data.write_dataset`, so the result is an ordinary
dataset: labels of any kind (ints, floats, bools, strings) become class ids with the original
values stored as ``classes``, non-finite features (including missing values, read as NaN) are
refused with the block and row, and the store is only touched once every check passed.

How a conversion runs
---------------------
Parquet (:func:`convert_parquet`) and CSV (:func:`convert_csv`) sources are converted in one
streaming pass (:mod:`dsoftmax.data.convert.pipeline`): a task per Parquet row group or block
of CSV bytes reads its rows and writes the chunks of the dataset that lie inside them, on the
workers of a Dask cluster (the ``client`` given, or the Dask default scheduler's) or on threads
of this process. A task holds its piece and the chunk it is writing, and a few pieces are in
flight at a time, so memory is bounded by a couple of pieces per worker thread, and sources
larger than memory -- or than a worker's memory limit -- convert.

* **Parquet** is read with ``pyarrow``, one row group per task; row counts come from the
  footers, so every task knows where its rows go before it starts.
* **CSV** is parsed by pandas: uncompressed files in blocks of ``blocksize`` bytes; compressed
  files (``.gz``, ``.bz2``, ``.xz``, ``.zst``) cannot be split and are read one file per task.
  Labels are read as text, and the classes are decided once every block is read: ints when
  every label is a canonical decimal integer, else strings.
* **svmlight** (:func:`convert_svmlight`) parses ranges of lines of about 32 MiB with
  :func:`sklearn.datasets.load_svmlight_file`, one at a time per thread; sparse rows are written
  as a sparse dataset (``layout="sparse"``, or ``"auto"`` for files of few non-zeros), never
  densified. Compressed files are decompressed to a temporary file first. The feature
  indexing used (``zero_based``) is logged and recorded as the group attribute ``svmlight``.
* **Parquet list columns** (:func:`convert_parquet_sparse`): each row's feature indices (and
  values) as lists, one row group per task, written as a sparse dataset.

Every value is checked where it is written; the store is removed when a check fails, and a
store replaced with ``overwrite=True`` is swapped in only after every check passed. The
chunks and their digests are those :func:`~dsoftmax.data.write_dataset` writes for the same
rows, so the dataset's fingerprint does not depend on how it was converted.

Rows are numbered from 0 across the files of a source, in sorted path order (the order of the
dataset's rows), and error messages count them that way.

Parquet is read with ``pyarrow`` rather than :func:`dask.dataframe.read_parquet` because the
latter, with pandas >= 3.1, warns on every partition of files that pandas did not write (Spark,
DuckDB, Polars, pyarrow), and it converts list columns to one Python object per row.
"""

from __future__ import annotations

from ...lazy import lazy_names

# Imported from their module on first use: telling a dataset argument's format
# (:func:`names_parquet`) imports neither the converters nor their dependencies.
_PUBLIC = {
    "DEFAULT_MAX_DENSE_BYTES": "from_svmlight",
    "FORMATS": "formats",
    "LAYOUTS": "from_svmlight",
    "convert_csv": "from_csv",
    "convert_numpy": "from_numpy",
    "convert_parquet": "from_parquet",
    "convert_parquet_sparse": "from_parquet_sparse",
    "convert_svmlight": "from_svmlight",
    "detect_format": "formats",
    "names_parquet": "formats",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_names(__name__, globals(), _PUBLIC)
