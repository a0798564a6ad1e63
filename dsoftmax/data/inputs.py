"""Turn what a user passes to ``fit`` (NumPy, Dask, a Dataset) into one validated form.

Labels of any type are encoded as class ids ``0..n_classes-1`` in the order of ``classes``
(sorted, as in scikit-learn) by the data layer's one encoder (:mod:`dsoftmax.data.labels`);
probability rows of shape (n_samples, n_classes) pass through. Everything that can be checked
without reading lazy data is checked here, before any distributed work, with scikit-learn's
validators and wording where it has them (``check_array``, ``check_consistent_length``,
``check_classification_targets``).

Dask arrays of unknown chunk sizes (``ddf.values``, ``ddf.to_dask_array()``) have their row
counts computed once, in one pass over their blocks, as in dask-ml.

Sparse features -- a scipy.sparse matrix or array of any format, or a Dask array of scipy.sparse
chunks -- become canonical CSR (:func:`dsoftmax.data.sparse.canonical_csr`): once for in-memory
input, block by block as the blocks load for Dask input.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np

from ..defaults import BALANCED_BLOCK_COUNTS, DEFAULT_CHUNK_ROWS, MIN_BALANCED_BLOCK_ROWS
from .format import Dataset
from .labels import check_classes, check_rows, check_sample_weight, encode_labels, unique_labels
from .sparse import blocked_csr, canonical_csr, empty_csr, is_sparse, is_sparse_dask
from .tasks import compute
from .values import check_in_memory_values

__all__ = ["PreparedData", "balanced_block_rows", "prepare_data"]

logger = logging.getLogger(__name__)

#: Feature dtypes a fit takes as they are (float16 computes in float32); others become float64.
_FLOAT_DTYPES = (np.float64, np.float32, np.float16)
_Y_REQUIRED = (
    "SoftmaxRegression requires y to be passed, but the target y is None; pass labels, or a "
    "Dataset, which brings its own."
)
#: How messages name in-memory inputs.
_IN_MEMORY = "the input"


def balanced_block_rows(n_rows: int) -> int:
    """Rows per block that cut ``n_rows`` into equal blocks of at most
    :data:`~dsoftmax.defaults.DEFAULT_CHUNK_ROWS` rows, as many as a multiple of 4 (else 2)
    when every block keeps at least :data:`~dsoftmax.defaults.MIN_BALANCED_BLOCK_ROWS` rows.

    The size depends on the rows alone, not on the cluster, so that a fit gives the same bits on
    any number of workers; blocks in multiples of 4 give 2 or 4 workers equal shares.

    Examples
    --------
    >>> balanced_block_rows(100_000), balanced_block_rows(1_000_000), balanced_block_rows(20_000)
    (25000, 62500, 10000)
    >>> balanced_block_rows(5_000)
    5000
    """
    blocks = max(1, -(-n_rows // DEFAULT_CHUNK_ROWS))
    for multiple in BALANCED_BLOCK_COUNTS:
        rounded = -(-blocks // multiple) * multiple
        if n_rows // rounded >= MIN_BALANCED_BLOCK_ROWS:
            blocks = rounded
            break
    return max(1, -(-n_rows // blocks))


@dataclass
class PreparedData:
    """Features, encoded labels, weights and classes of one fit.

    ``X``/``labels``/``sample_weight`` are all NumPy (in-memory input; ``X`` may be a canonical
    scipy.sparse CSR matrix) or all Dask arrays.
    """

    X: Any
    labels: Any
    sample_weight: Any
    classes: np.ndarray
    name: str
    stats: Any = None
    dataset_fingerprint: str | None = None

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def dtype(self) -> np.dtype:
        return self.X.dtype

    @property
    def is_lazy(self) -> bool:
        return isinstance(self.X, da.Array)

    def block_rows(self, chunk_rows: int | str) -> int:
        """Rows per block of NumPy input: ``chunk_rows`` itself, or for ``"auto"`` the balanced
        size of :func:`balanced_block_rows`."""
        if chunk_rows == "auto":
            return balanced_block_rows(int(self.X.shape[0]))
        return int(chunk_rows)

    def as_dask(self, numpy_block_rows: int) -> tuple[da.Array, da.Array, da.Array | None]:
        """Dask arrays with the row chunks of ``X`` (NumPy input is cut into blocks)."""
        if self.is_lazy:
            X = self.X if len(self.X.chunks[1]) == 1 else self.X.rechunk({1: -1})
            rows = X.chunks[0]
        elif is_sparse(self.X):
            X = blocked_csr(self.X, numpy_block_rows)
            rows = X.chunks[0]
        else:
            X = da.from_array(self.X, chunks=(numpy_block_rows, -1))
            rows = X.chunks[0]
        return X, _rows_like(self.labels, rows), _rows_like(self.sample_weight, rows)

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records of the data, to refuse resuming on other data."""
        return {
            "fingerprint": self.fingerprint(),
            "n_samples": int(self.X.shape[0]),
            "n_features": self.n_features,
            "n_classes": self.n_classes,
            "dtype": str(self.dtype),
            "classes": [str(label) for label in self.classes],
        }

    def fingerprint(self) -> str:
        """The dataset's own fingerprint; for arrays, a digest of their content (NumPy) or of
        their task graph (Dask)."""
        if self.dataset_fingerprint is not None:
            return self.dataset_fingerprint
        digest = hashlib.sha256()
        for array in (self.X, _widened(self.labels), _widened(self.sample_weight)):
            if array is None:
                digest.update(b"none")
            elif isinstance(array, da.Array):
                digest.update(array.name.encode())
            elif is_sparse(array):
                digest.update(f"csr{array.shape}".encode())
                for part in (array.indptr, array.indices):
                    digest.update(part.astype(np.int64).tobytes())
                digest.update(np.ascontiguousarray(array.data).tobytes())
            else:
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def class_totals(self) -> np.ndarray:
        """Sample weight per class (rows per class without weights), for 'balanced'."""
        if self.stats is not None:
            return np.asarray(self.stats.class_weight_sums, dtype=np.float64)
        labels = np.asarray(self.labels)
        weights = None if self.sample_weight is None else np.asarray(self.sample_weight)
        if labels.ndim == 2:
            return labels.T @ (np.ones(labels.shape[0]) if weights is None else weights)
        return np.bincount(labels, weights=weights, minlength=self.n_classes).astype(np.float64)


def _widened(array: Any) -> Any:
    """In-memory class ids as int64 and weights as float64, so that a fingerprint names the
    values whatever dtype holds them; anything else as it is."""
    if array is None or isinstance(array, da.Array):
        return array
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    if array.ndim == 1:
        return array.astype(np.float64, copy=False)
    return array


def _rows_like(array: Any, rows: tuple[int, ...]) -> da.Array | None:
    if array is None:
        return None
    if not isinstance(array, da.Array):
        chunks = (rows,) if array.ndim == 1 else (rows, -1)
        return da.from_array(np.asarray(array), chunks=chunks)
    if array.chunks[0] != rows:
        return array.rechunk({0: rows})
    return array


def prepare_data(X: Any, y: Any, sample_weight: Any, classes: np.ndarray | None) -> PreparedData:
    """Validate and encode one fit's inputs (see the module docstring)."""
    if isinstance(X, Dataset):
        return _from_dataset(X, y, sample_weight, classes)
    if any(isinstance(array, da.Array) for array in (X, y, sample_weight)):
        return _from_dask(X, y, sample_weight, classes)
    return _from_numpy(X, y, sample_weight, classes)


def _from_dataset(dataset: Dataset, y: Any, sample_weight: Any, classes: Any) -> PreparedData:
    if y is not None:
        raise ValueError(
            f"the dataset {dataset.url!r} brings its own labels; call fit(dataset) without y."
        )
    if classes is not None and not np.array_equal(np.asarray(classes), dataset.classes):
        raise ValueError(
            f"classes {list(classes)} differ from the dataset's classes {dataset.classes.tolist()}."
        )
    weights = (
        dataset.sample_weight
        if sample_weight is None
        else check_sample_weight(sample_weight, dataset.X)
    )
    return PreparedData(
        dataset.X,
        dataset.labels,
        weights,
        dataset.classes,
        repr(dataset.url),
        dataset_fingerprint=dataset.fingerprint if sample_weight is None else None,
    )


def _from_dask(X: Any, y: Any, sample_weight: Any, classes: Any) -> PreparedData:
    X = da.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}.")
    if X.dtype not in _FLOAT_DTYPES:
        X = X.astype(np.float64)
    if is_sparse_dask(X):
        X = X.map_blocks(canonical_csr, dtype=X.dtype, meta=empty_csr(X.shape[1], X.dtype))
    if y is None:
        raise ValueError(_Y_REQUIRED)
    y = da.asarray(y)
    if sample_weight is not None and np.ndim(sample_weight) > 0:
        sample_weight = da.asarray(sample_weight)
    X, y, sample_weight = _with_known_rows(X, y, sample_weight)
    check_rows(y, "y", X)
    weights = check_sample_weight(sample_weight, X)
    if y.ndim == 2 and y.dtype.kind == "f":
        known = np.arange(y.shape[1]) if classes is None else np.asarray(classes)
        return PreparedData(X, y, weights, known, "dask array")
    if y.ndim != 1:
        raise ValueError(
            f"y must be 1-D class labels or 2-D probability rows, got shape {y.shape}."
        )
    known = _classes(y, classes)
    ids = encode_labels(y, known, unknown="mark")
    return PreparedData(X, ids, weights, known, "dask array")


def _with_known_rows(*arrays: da.Array | None) -> list[da.Array | None]:
    """``arrays`` with their row chunks known: those of unknown sizes (``nan``) are computed
    in one pass over all of their blocks."""
    unknown = [
        index
        for index, array in enumerate(arrays)
        if array is not None and any(math.isnan(rows) for rows in array.chunks[0])
    ]
    if not unknown:
        return list(arrays)
    logger.debug(
        "dsoftmax: computing the row chunk sizes of %d dask array(s) of unknown chunk sizes",
        len(unknown),
    )
    counts = compute([_block_rows(arrays[index]) for index in unknown])
    known = list(arrays)
    for index, rows in zip(unknown, counts, strict=True):
        array = arrays[index]
        chunks = (tuple(int(n) for n in rows), *array.chunks[1:])
        # The same graph, now with its chunk sizes; meta=array keeps the block type.
        known[index] = da.Array(array.dask, array.name, chunks, meta=array)
    return known


def _block_rows(array: da.Array) -> da.Array:
    """A dask array of the number of rows of each block of ``array``."""
    per_block = array.map_blocks(
        _rows_of_block,
        dtype=np.int64,
        chunks=((1,) * len(array.chunks[0]),),
        drop_axis=list(range(1, array.ndim)),
    )
    return per_block


def _rows_of_block(block: np.ndarray) -> np.ndarray:
    return np.array([block.shape[0]], dtype=np.int64)


def _classes(y: np.ndarray | da.Array, classes: Any) -> np.ndarray:
    """The sorted classes of a fit: ``classes`` when given, else every label of ``y``."""
    if classes is not None:
        return check_classes(np.sort(np.asarray(classes)), "classes")
    return check_classes(unique_labels(y), "y")


def _from_numpy(X: Any, y: Any, sample_weight: Any, classes: Any) -> PreparedData:
    # Imported here: a fit from a dataset (the command line's) does without scikit-learn.
    from sklearn.utils import assert_all_finite, check_array, column_or_1d
    from sklearn.utils.multiclass import check_classification_targets

    if y is None:
        raise ValueError(_Y_REQUIRED)
    X = check_array(
        X, accept_sparse="csr", dtype=_FLOAT_DTYPES, ensure_min_samples=1, input_name="X"
    )
    if is_sparse(X):
        X = canonical_csr(X)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    check_rows(y, "y", X)
    weights = check_sample_weight(sample_weight, X)
    if y.ndim == 2 and y.dtype.kind == "f":
        known = np.arange(y.shape[1]) if classes is None else np.asarray(classes)
        Y = y.astype(X.dtype)
        check_in_memory_values(Y, weights, len(known), _IN_MEMORY)
        return PreparedData(X, Y, weights, known, "y")
    if y.dtype.kind in "fc":
        assert_all_finite(y, input_name="y")
    check_classification_targets(y)
    known = _classes(y, classes)
    ids = encode_labels(y, known, unknown="raise")
    check_in_memory_values(ids, weights, len(known), _IN_MEMORY)
    return PreparedData(X, ids, weights, known, "y")
