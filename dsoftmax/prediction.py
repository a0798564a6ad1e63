"""Logits, probabilities and labels of fitted parameters, on NumPy, sparse and Dask input.

Predictions on Dask arrays stay lazy: each block's logits are a task (:func:`block_logits`)
that workers run with NumPy and the kernels only, never importing scikit-learn.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from . import objective
from .data import Dataset
from .data.sparse import is_sparse
from .objective import Params

__all__ = [
    "aligned_labels",
    "block_logits",
    "dataset_labels",
    "is_lazy",
    "labels_of_logits",
    "lazy_features",
    "log_proba",
    "logits",
    "proba",
]


def is_lazy(array: Any) -> bool:
    """Whether ``array`` is a Dask array (its work runs on the cluster, when computed)."""
    return isinstance(array, da.Array)


def lazy_features(X: da.Array, n_features: int) -> da.Array:
    """Dask ``X`` checked against a model of ``n_features`` features, in one chunk of columns
    (what :func:`logits` takes)."""
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"X has shape {X.shape}; this model expects {n_features} features.")
    return X.rechunk({1: -1}) if len(X.chunks[1]) > 1 else X


def logits(params: Params, X: Any) -> Any:
    """Logits ``X Wᵀ + b`` of every class, shape (n_samples, n_classes); lazy for Dask ``X``.

    Parameters
    ----------
    params : Params
        ``coef`` (n_classes, n_features) and ``intercept`` (n_classes,) or None.
    X : ndarray, scipy.sparse matrix or dask array of shape (n_samples, n_features)
        Already checked against the model (its number of features, one chunk of columns).
    """
    if is_lazy(X):
        return X.map_blocks(
            block_logits,
            params,
            dtype=X.dtype,
            chunks=(X.chunks[0], (params.coef.shape[0],)),
            meta=np.empty((0, 0), dtype=X.dtype),
        )
    if is_sparse(X):
        return _sparse_logits(params, X)
    return objective.decision_function(params, X)


def log_proba(scores: Any) -> Any:
    """Log-probabilities of the rows of ``scores`` (logits); lazy for a Dask array."""
    if is_lazy(scores):
        return scores.map_blocks(objective.log_softmax, dtype=scores.dtype)
    return objective.log_softmax(scores)


def proba(scores: Any) -> Any:
    """Class probabilities of the rows of ``scores`` (logits); rows sum to 1."""
    if is_lazy(scores):
        return scores.map_blocks(objective.softmax, dtype=scores.dtype)
    return objective.softmax(scores)


def labels_of_logits(scores: Any, classes: np.ndarray) -> Any:
    """The label of the largest logit of each row (the first on ties)."""
    if is_lazy(scores):
        return scores.map_blocks(_block_labels, classes, dtype=classes.dtype, drop_axis=1)
    return _block_labels(scores, classes)


def dataset_labels(dataset: Dataset) -> da.Array:
    """The original labels of a dataset's rows (the most probable one of a probability row)."""
    ids = dataset.y if dataset.y is not None else dataset.Y.argmax(axis=1)
    return ids.map_blocks(_labels_of_ids, dataset.classes, dtype=dataset.classes.dtype)


def aligned_labels(X: Any, y: Any, sample_weight: Any) -> tuple[Any, Any, Any]:
    """``X`` with its labels and weights as Dask arrays in the row chunks of a Dask ``X``, or as
    NumPy arrays of matching length for NumPy ``X``."""
    from sklearn.utils import check_consistent_length

    if not is_lazy(X):
        y = np.asarray(y.compute() if is_lazy(y) else y)
        if sample_weight is not None:
            sample_weight = np.asarray(
                sample_weight.compute() if is_lazy(sample_weight) else sample_weight,
                dtype=np.float64,
            )
        check_consistent_length(X, y, sample_weight)
        return X, y, sample_weight
    rows = X.chunks[0]
    y = da.asarray(y).rechunk({0: rows}) if is_lazy(y) else da.from_array(np.asarray(y), (rows,))
    if sample_weight is not None:
        weights = sample_weight if is_lazy(sample_weight) else np.asarray(sample_weight)
        sample_weight = da.asarray(weights).astype(np.float64).rechunk({0: rows})
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]}.")
    return X, y, sample_weight


def block_logits(X: Any, params: Params, block_info: dict | None = None) -> np.ndarray:
    """Task: the logits of one block of lazy input. A non-finite feature raises, naming its
    row (NumPy input is checked by scikit-learn's validation instead)."""
    csr = X.tocsr() if is_sparse(X) else None
    finite = np.isfinite(X if csr is None else csr.data)
    if not finite.all():
        row_start = block_info[0]["array-location"][0][0] if block_info else 0
        if csr is None:
            first_row = int(np.argmin(finite.all(axis=1)))
        else:
            first_row = int(np.searchsorted(csr.indptr, np.argmin(finite), side="right") - 1)
        raise ValueError(
            f"X has {finite.size - np.count_nonzero(finite)} non-finite value(s) (NaN or inf) in "
            f"rows {row_start} to {row_start + X.shape[0] - 1}, first in row "
            f"{row_start + first_row}; predictions need finite features: drop or impute those "
            "rows."
        )
    if csr is not None:
        return _sparse_logits(params, csr)
    return objective.decision_function(params, X)


def _sparse_logits(params: Params, X: Any) -> np.ndarray:
    """Logits of sparse rows, by the sparse kernel: the logits its evaluations count."""
    from .kernels import sparse

    return sparse.decision_function(params, X.tocsr())


def _block_labels(scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return classes[np.argmax(scores, axis=1)]


def _labels_of_ids(ids: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return classes[ids]
