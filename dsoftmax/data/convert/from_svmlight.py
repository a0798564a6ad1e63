"""svmlight / libsvm sources, streamed in ranges of lines and never densified whole.

The files are cut into ranges of whole lines of about :data:`RANGE_BYTES` each; each range is
parsed on its own by :func:`sklearn.datasets.load_svmlight_file` (from the range's bytes), so
memory is bounded by a few ranges whatever the size of the files. A first pass over the ranges
finds the rows, the feature indices' range and the labels; the write then parses each range
again (twice: the value checks, then the write itself, as for every converted source). Files
compressed with gzip or bzip2 are first decompressed, streaming, into a temporary file, since a
compressed stream cannot be cut into ranges.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import itertools
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.system import CPU_COUNT

from ...defaults import DEFAULT_CHUNK_ROWS, DEFAULT_CODEC
from ..format import Dataset
from ..sparse import empty_csr, index_dtype
from ..store import open_group
from ..tasks import compute
from ..values import RangeOverflow, cast_features, overflow_problem
from .common import (
    check_sparse_dtype,
    choose_feature_dtype,
    describe_sources,
    has_magic,
    is_half_precision,
    source_list,
    write_converted,
)
from .pipeline import converted_line
from .runner import local_threads

__all__ = ["DEFAULT_MAX_DENSE_BYTES", "LAYOUTS", "RANGE_BYTES", "convert_svmlight"]

#: Largest dense feature matrix :func:`convert_svmlight` writes by default: 4 GiB.
DEFAULT_MAX_DENSE_BYTES = 4 * 2**30

#: How a converted ``X`` is stored.
LAYOUTS = ("auto", "dense", "sparse")

#: Bytes of text per range of lines, the unit of parsing.
RANGE_BYTES = 32 * 2**20

#: ``layout="auto"`` stores sparse rows when their CSR arrays take at most this share of the
#: dense matrix's bytes.
AUTO_SPARSE_SHARE = 0.5

#: Bytes read at a time while looking for the end of a line.
_SCAN_BYTES = 64 * 1024

_DECOMPRESSORS = {".gz": gzip.open, ".bz2": bz2.open}

#: The group attribute that records how the files were read.
SVMLIGHT_ATTR = "svmlight"

logger = logging.getLogger("dsoftmax")


@dataclass(frozen=True)
class LineRange:
    """Whole lines ``[start, stop)`` (byte offsets) of one file.

    Attributes
    ----------
    path : str
        The (decompressed) file to read.
    source : str
        The file as the user named it, for messages.
    start, stop : int
    """

    path: str
    source: str
    start: int
    stop: int

    def parse(self, dtype: np.dtype) -> tuple[Any, np.ndarray]:
        """The range's rows as scikit-learn reads them (zero-based indices, as written) and
        their labels."""
        from sklearn.datasets import load_svmlight_file

        with open(self.path, "rb") as file:
            file.seek(self.start)
            text = file.read(self.stop - self.start)
        try:
            return load_svmlight_file(io.BytesIO(text), dtype=dtype, zero_based=True)
        except ValueError as error:
            raise ValueError(
                f"cannot read {self.source!r} as svmlight (bytes {self.start} to "
                f"{self.stop - 1}): {error}"
            ) from error


@dataclass(frozen=True)
class RangeSummary:
    """What the first pass finds in one range."""

    n_rows: int
    nnz: int
    min_index: int | None
    max_index: int | None
    labels: np.ndarray
    integral_labels: bool


@dataclass(frozen=True)
class _Layout:
    """How every range becomes rows of the dataset: parsed as ``parse_dtype``, stored as
    ``dtype`` (float16 values are parsed as float64, which scipy.sparse holds, and rounded
    once)."""

    n_features: int
    shift: int
    dtype: np.dtype
    parse_dtype: np.dtype
    dense: bool
    integral_labels: bool


def _svmlight_paths(source: Any) -> list[str]:
    paths = []
    for path in source_list(source, "svmlight"):
        if has_magic(path):
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


def _integral(labels: np.ndarray) -> bool:
    """svmlight labels are parsed as floats; ``1`` and ``-1`` are meant as ints."""
    return bool(np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)))


def _plain_file(path: str, scratch: str) -> str:
    """``path`` itself, or an uncompressed copy of a ``.gz``/``.bz2`` file in ``scratch``."""
    opener = _DECOMPRESSORS.get(Path(path).suffix.lower())
    if opener is None:
        return os.path.abspath(path)
    copy = os.path.join(scratch, f"{uuid.uuid4().hex}.svm")
    with opener(path, "rb") as compressed, open(copy, "wb") as plain:
        shutil.copyfileobj(compressed, plain, length=_SCAN_BYTES * 16)
    return copy


def _line_end(file: Any, position: int) -> int | None:
    """The offset just past the first newline at or after ``position``; None at the end."""
    file.seek(position)
    while True:
        piece = file.read(_SCAN_BYTES)
        if not piece:
            return None
        found = piece.find(b"\n")
        if found >= 0:
            return position + found + 1
        position += len(piece)


def line_ranges(path: str, source: str, range_bytes: int = RANGE_BYTES) -> list[LineRange]:
    """``path`` cut into ranges of whole lines of about ``range_bytes`` bytes each."""
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as file:
        while cuts[-1] + range_bytes < size:
            end = _line_end(file, cuts[-1] + range_bytes - 1)
            if end is None or end >= size:
                break
            cuts.append(end)
    cuts.append(size)
    return [
        LineRange(path, source, start, stop)
        for start, stop in itertools.pairwise(cuts)
        if stop > start
    ]


def summarize_range(line_range: LineRange, dtype: np.dtype) -> RangeSummary:
    """Worker task: the rows, values, index range and labels of one range."""
    X, labels = line_range.parse(dtype)
    indices = X.indices
    return RangeSummary(
        n_rows=int(X.shape[0]),
        nnz=int(X.nnz),
        min_index=int(indices.min()) if indices.size else None,
        max_index=int(indices.max()) if indices.size else None,
        labels=np.unique(labels),
        integral_labels=_integral(labels),
    )


def read_range(
    line_range: LineRange, layout: _Layout, first_row: int = 0
) -> tuple[Any, np.ndarray]:
    """Worker task: the features (CSR, or dense for a dense layout) and labels of one range,
    whose first row is row ``first_row`` of the dataset (for messages)."""
    import scipy.sparse

    X, labels = line_range.parse(layout.parse_dtype)
    indices = X.indices - layout.shift
    outside = (indices < 0) | (indices >= layout.n_features)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        index = int(indices[first]) + layout.shift
        raise ValueError(
            f"{line_range.source!r} (bytes {line_range.start} to {line_range.stop - 1}) holds "
            f"feature index {index}, outside the {layout.n_features} features "
            f"({'zero' if layout.shift == 0 else 'one'}-based); pass n_features (and "
            "zero_based) to match the file."
        )
    wanted = index_dtype(layout.n_features, X.nnz)
    csr = scipy.sparse.csr_matrix(
        (X.data, indices.astype(wanted), X.indptr.astype(wanted)),
        shape=(X.shape[0], layout.n_features),
    )
    values = labels.astype(np.int64) if layout.integral_labels else labels
    return (_dense_rows(csr, layout.dtype, first_row) if layout.dense else csr), values


def _parse_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a range is parsed as: scipy.sparse holds no float16."""
    return np.dtype(np.float64) if dtype == np.float16 else dtype


def _dense_rows(csr: Any, dtype: np.dtype, first_row: int) -> np.ndarray:
    """``csr`` as a dense array of ``dtype``, without a dense copy in another dtype; values
    beyond the range of ``dtype`` are refused with their row (``first_row`` for the first)."""
    if csr.dtype == dtype:
        return csr.toarray()
    values, overflow = cast_features(csr.data[None, :], dtype)
    if overflow is not None:
        position = overflow.column
        row = int(np.searchsorted(csr.indptr, position, side="right")) - 1
        found = RangeOverflow(first_row + row, int(csr.indices[position]), overflow.value)
        raise ValueError(f"X in the input {overflow_problem(found, dtype)}")
    dense = np.zeros(csr.shape, dtype)
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    dense[rows, csr.indices] = values[0]
    return dense


def _is_zero_based(
    summaries: Sequence[RangeSummary], zero_based: bool | str, source_text: str
) -> bool:
    """scikit-learn's rule for ``"auto"``: one-based unless some index is 0; the choice is
    logged, since a file whose column 0 happens to be empty reads shifted by one."""
    if zero_based != "auto":
        logger.info(
            "dsoftmax: %s: feature indices read as %s-based (zero_based=%s)",
            source_text, "zero" if zero_based else "one", bool(zero_based),
        )  # fmt: skip
        return bool(zero_based)
    lowest = [part.min_index for part in summaries if part.min_index is not None]
    if lowest and min(lowest) > 0:
        logger.info(
            "dsoftmax: %s: feature indices read as one-based (zero_based='auto': no feature "
            "index 0 appears, the lowest is %d); if the files are zero-based, --zero-based yes "
            "(zero_based=True) forces zero-based indexing",
            source_text, min(lowest),
        )  # fmt: skip
        return False
    logger.info(
        "dsoftmax: %s: feature indices read as zero-based (zero_based='auto': %s)",
        source_text, "feature index 0 appears" if lowest else "no feature index appears",
    )  # fmt: skip
    return True


def _choose_layout(layout: str, n_rows: int, width: int, nnz: int, dtype: np.dtype) -> bool:
    """Whether ``X`` is stored dense."""
    if layout != "auto":
        return layout == "dense"
    dense_bytes = n_rows * width * dtype.itemsize
    sparse_bytes = nnz * (dtype.itemsize + index_dtype(width, nnz).itemsize) + 8 * (n_rows + 1)
    return sparse_bytes > AUTO_SPARSE_SHARE * dense_bytes


def convert_svmlight(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    url: str | os.PathLike,
    *,
    n_features: int | None = None,
    zero_based: bool | str = "auto",
    dtype: str = "float32",
    layout: str = "auto",
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    codec: str = DEFAULT_CODEC,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Convert svmlight / libsvm text files into a dataset, streaming.

    The files are parsed in ranges of lines by :func:`sklearn.datasets.load_svmlight_file`
    (with its rules: indices sorted and unique within a row, ``qid`` fields ignored), on local
    threads, with memory bounded by a few ranges; a sparse result is never densified.

    Parameters
    ----------
    source : str, path or list of them
        Local files (``.gz`` and ``.bz2`` are decompressed to a temporary file first) or glob
        patterns; several files are stacked in order and share the feature count.
    url : str or path
        The dataset to write.
    n_features : int, optional
        Number of features; default: the highest feature index found (plus one when
        zero-based). Pass it when a file may lack the last features.
    zero_based : bool or "auto"
        Whether feature indices start at 0; ``"auto"`` guesses from the files as scikit-learn
        does (one-based unless some index is 0).
    dtype : {"float32", "float64", "float16"}
        Feature dtype; float16 (or bfloat16) makes ``layout="auto"`` dense and is refused with
        ``layout="sparse"``, as sparse datasets hold float32 or float64 values.
    layout : {"auto", "dense", "sparse"}, default "auto"
        ``"sparse"``: a sparse dataset (row blocks of CSR, :mod:`dsoftmax.data.sparse_store`).
        ``"dense"``: dense rows, each range densified on its own. ``"auto"``: sparse when the
        CSR arrays take at most half of the dense matrix's bytes (about a quarter of the
        entries non-zero or fewer, in float32), else dense.
    max_dense_bytes : int, default 4 GiB
        Largest dense feature matrix to write; bigger dense sources are refused before
        anything is written. Sparse datasets have no such bound.
    chunk_rows, codec, storage_options, overwrite
        As in :func:`dsoftmax.data.write_dataset`.

    Returns
    -------
    Dataset
        Labels that are all whole numbers (``+1``, ``-1``, ``3``) become int classes; other
        labels stay floats. The group attribute ``svmlight`` records the indexing used:
        ``{"zero_based": bool, "zero_based_option": zero_based}``; the choice is logged at
        INFO (``-v``).

    Raises
    ------
    ValueError
        When ``dtype`` is float16 (or bfloat16) and ``layout`` is ``"sparse"`` (before any
        file is read), a file does not parse (naming the file and the bytes), an index lies
        outside ``n_features``, or a dense matrix would exceed ``max_dense_bytes``.
    FileNotFoundError
        When a file does not exist or a pattern matches nothing.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}.")
    if zero_based not in ("auto", True, False):
        raise ValueError(f"zero_based must be True, False or 'auto', got {zero_based!r}.")
    if layout == "auto" and is_half_precision(dtype):
        layout = "dense"  # the only layout that stores half precision
    if layout == "sparse":
        check_sparse_dtype(dtype, _HALF_REMEDY)
    paths = _svmlight_paths(source)
    feature_dtype = choose_feature_dtype(dtype, np.dtype(np.float32))
    if n_features is not None and not (_is_int(n_features) and n_features >= 1):
        raise ValueError(f"n_features must be an int >= 1 or None, got {n_features!r}.")
    if not (_is_int(max_dense_bytes) and max_dense_bytes >= 1):
        raise ValueError(f"max_dense_bytes must be an int >= 1, got {max_dense_bytes!r}.")
    source_text = describe_sources(paths)
    started = time.perf_counter()
    # The sources are local files: parsed by threads of this process, even with a client about.
    with tempfile.TemporaryDirectory(prefix="dsoftmax-svmlight-") as scratch, dask.config.set(
        scheduler="threads"
    ):
        ranges = [
            piece
            for path in paths
            for piece in line_ranges(_plain_file(path, scratch), os.fspath(path), RANGE_BYTES)
        ]
        where = local_threads(CPU_COUNT)
        logger.info(
            "dsoftmax: converting %s (%d ranges of lines) on %s", source_text, len(ranges), where
        )
        parse_dtype = _parse_dtype(feature_dtype)
        summaries = compute(
            [dask.delayed(summarize_range, pure=False)(piece, parse_dtype) for piece in ranges]
        )
        layout_found = _ranges_layout(
            summaries, n_features, zero_based, feature_dtype, layout, max_dense_bytes, source_text
        )
        X, y = _lazy_rows(ranges, summaries, layout_found)
        classes = np.unique(np.concatenate([part.labels for part in summaries]))
        if layout_found.integral_labels:
            classes = classes.astype(np.int64)
        dataset = write_converted(
            url,
            X,
            y,
            source_text,
            classes=classes,
            chunk_rows=chunk_rows,
            codec=codec,
            storage_options=storage_options,
            overwrite=overwrite,
        )
    # Outside the fingerprint, like feature_names: how the text was read, not the data.
    open_group(os.fspath(url), "r+", storage_options).attrs[SVMLIGHT_ATTR] = {
        "zero_based": layout_found.shift == 0,
        "zero_based_option": "auto" if zero_based == "auto" else bool(zero_based),
    }
    n_bytes = sum(os.path.getsize(path) for path in paths)
    line = converted_line(dataset.n_samples, n_bytes, len(paths), f"on {where}", started)
    logger.info("%s", line)
    return dataset


#: What to pass instead of a half-precision dtype for a sparse layout.
_HALF_REMEDY = (
    "Pass layout='dense' for dense float16 features, or dtype='float32' to keep "
    "the rows sparse."
)


def _ranges_layout(
    summaries: Sequence[RangeSummary],
    n_features: int | None,
    zero_based: bool | str,
    dtype: np.dtype,
    layout: str,
    max_dense_bytes: int,
    source_text: str,
) -> _Layout:
    n_rows = sum(part.n_rows for part in summaries)
    if n_rows == 0:
        raise ValueError(f"{source_text} has no rows; there is nothing to convert.")
    shift = 0 if _is_zero_based(summaries, zero_based, source_text) else 1
    highest = max((part.max_index for part in summaries if part.max_index is not None), default=0)
    found_width = max(highest - shift + 1, 1)
    if n_features is not None and n_features < found_width:
        raise ValueError(
            f"n_features={n_features}, but {source_text} holds feature index {highest} "
            f"({'zero' if shift == 0 else 'one'}-based): {found_width} features at least. "
            "Pass a larger n_features, or None to take the highest index."
        )
    width = found_width if n_features is None else n_features
    nnz = sum(part.nnz for part in summaries)
    dense = _choose_layout(layout, n_rows, width, nnz, dtype)
    dense_bytes = n_rows * width * dtype.itemsize
    if dense and dense_bytes > max_dense_bytes:
        raise ValueError(
            f"{source_text} holds {n_rows} rows x {width} features: {dense_bytes / 2**30:.2f} "
            f"GiB as dense {dtype}, more than max_dense_bytes={max_dense_bytes} "
            f"({max_dense_bytes / 2**30:.2f} GiB). Split the file and convert the parts, "
            "convert it with layout='sparse' (it has "
            f"{nnz} non-zeros), or raise max_dense_bytes if this machine has the memory."
        )
    integral = all(part.integral_labels for part in summaries)
    return _Layout(width, shift, dtype, _parse_dtype(dtype), dense, integral)


def _lazy_rows(
    ranges: Sequence[LineRange], summaries: Sequence[RangeSummary], layout: _Layout
) -> tuple[da.Array, da.Array]:
    """Dask arrays of the features and labels of every range, one parse per range."""
    token = uuid.uuid4().hex
    label_dtype = np.dtype(np.int64 if layout.integral_labels else np.float64)
    meta = (
        np.empty((0, layout.n_features), layout.dtype)
        if layout.dense
        else empty_csr(layout.n_features, layout.dtype)
    )
    X_parts, y_parts = [], []
    first_row = 0
    for index, (piece, summary) in enumerate(zip(ranges, summaries, strict=True)):
        if summary.n_rows == 0:
            continue
        parsed = dask.delayed(read_range, pure=False, nout=2)(
            piece, layout, first_row, dask_key_name=f"dsoftmax-convert-svmlight-{token}-{index}"
        )
        first_row += summary.n_rows
        shape = (summary.n_rows, layout.n_features)
        X_parts.append(da.from_delayed(parsed[0], shape=shape, dtype=layout.dtype, meta=meta))
        y_parts.append(da.from_delayed(parsed[1], shape=shape[:1], dtype=label_dtype))
    return da.concatenate(X_parts), da.concatenate(y_parts)
