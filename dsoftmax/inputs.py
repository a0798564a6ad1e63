"""Turn what a user passes to ``fit`` (NumPy, Dask, a Dataset) into one validated form.

Labels of any type are encoded as class ids ``0..n_classes-1`` in the order of ``classes``
(sorted, as in scikit-learn); probability rows of shape (n_samples, n_classes) pass through.
Everything that can be checked without reading the data is checked here, before any
distributed work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from sklearn.utils import check_array, column_or_1d
from sklearn.utils.multiclass import check_classification_targets

from .data import Dataset

__all__ = ["PreparedData", "prepare_data"]

_FLOAT_DTYPES = (np.float64, np.float32)
_Y_REQUIRED = (
    "SoftmaxRegression requires y to be passed, but the target y is None; pass labels, or a "
    "Dataset, which brings its own."
)


@dataclass
class PreparedData:
    """Features, encoded labels, weights and classes of one fit.

    ``X``/``labels``/``sample_weight`` are all NumPy (in-memory input) or all Dask arrays.
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

    def as_dask(self, numpy_block_rows: int) -> tuple[da.Array, da.Array, da.Array | None]:
        """Dask arrays with the row chunks of ``X`` (NumPy input is cut into blocks)."""
        if self.is_lazy:
            X = self.X if len(self.X.chunks[1]) == 1 else self.X.rechunk({1: -1})
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
        for array in (self.X, self.labels, self.sample_weight):
            if array is None:
                digest.update(b"none")
            elif isinstance(array, da.Array):
                digest.update(array.name.encode())
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
    if isinstance(X, da.Array) or isinstance(y, da.Array):
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
        else _as_weights(sample_weight, dataset.n_samples)
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
    if y is None:
        raise ValueError(_Y_REQUIRED)
    y = da.asarray(y)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}.")
    if y.ndim == 2 and y.dtype.kind == "f":
        known = np.arange(y.shape[1]) if classes is None else np.asarray(classes)
        return PreparedData(X, y, _as_weights(sample_weight, X.shape[0]), known, "dask array")
    if y.ndim != 1:
        raise ValueError(
            f"y must be 1-D class labels or 2-D probability rows, got shape {y.shape}."
        )
    known = (
        np.asarray(classes)
        if classes is not None
        else np.unique(y.compute() if y.size < 10**7 else da.unique(y).compute())
    )
    known = np.sort(known)
    _require_two_classes(known, classes is None)
    ids = y.map_blocks(_encode_block, known, dtype=np.int64)
    return PreparedData(X, ids, _as_weights(sample_weight, X.shape[0]), known, "dask array")


def _from_numpy(X: Any, y: Any, sample_weight: Any, classes: Any) -> PreparedData:
    if y is None:
        raise ValueError(_Y_REQUIRED)
    X = check_array(X, dtype=_FLOAT_DTYPES, ensure_min_samples=1)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}.")
    if y.ndim == 2 and y.dtype.kind == "f":
        _check_probability_rows(y)
        known = np.arange(y.shape[1]) if classes is None else np.asarray(classes)
        return PreparedData(
            X, y.astype(X.dtype), _as_weights(sample_weight, X.shape[0]), known, "y"
        )
    if y.dtype.kind in "fc" and not np.isfinite(y).all():
        raise ValueError("y contains NaN or infinity; labels must be finite.")
    check_classification_targets(y)
    known = np.unique(y) if classes is None else np.sort(np.asarray(classes))
    _require_two_classes(known, classes is None)
    ids = _encode_block(y, known)
    unknown = ids == len(known)
    if unknown.any():
        raise ValueError(
            f"y holds labels not among classes {known.tolist()}: e.g. {y[unknown][:3].tolist()}."
        )
    return PreparedData(X, ids, _as_weights(sample_weight, X.shape[0]), known, "y")


def _encode_block(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Class ids of ``labels``; a label not in ``classes`` gets ``len(classes)`` (out of range,
    so the value checks report it)."""
    positions = np.searchsorted(classes, labels)
    positions = np.minimum(positions, len(classes) - 1)
    found = classes[positions] == labels
    return np.where(found, positions, len(classes)).astype(np.int64)


def _require_two_classes(classes: np.ndarray, from_data: bool) -> None:
    if len(classes) < 2:
        where = "y holds" if from_data else "classes has"
        raise ValueError(
            f"softmax regression needs at least 2 classes; {where} {len(classes)} "
            f"class{'' if len(classes) == 1 else 'es'}: {classes.tolist()}."
        )


def _check_probability_rows(Y: np.ndarray) -> None:
    if not np.isfinite(Y).all() or (Y < 0).any():
        raise ValueError("probability rows in y must be finite and non-negative.")
    if not np.allclose(Y.sum(axis=1), 1.0, rtol=1e-6, atol=1e-6):
        raise ValueError("probability rows in y must each sum to 1.")


def _as_weights(sample_weight: Any, n_samples: int) -> Any:
    if sample_weight is None:
        return None
    if isinstance(sample_weight, da.Array):
        if sample_weight.shape != (n_samples,):
            raise ValueError(
                f"sample_weight must have shape ({n_samples},), got {sample_weight.shape}."
            )
        return sample_weight.astype(np.float64)
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.ndim == 0:
        weights = np.full(n_samples, float(weights))
    if weights.shape != (n_samples,):
        raise ValueError(f"sample_weight must have shape ({n_samples},), got {weights.shape}.")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("sample_weight must be finite and non-negative.")
    if not weights.sum() > 0:
        raise ValueError(
            "the sample weights sum to zero: at least one row needs a positive weight."
        )
    return weights
