"""Logits, probabilities and labels of fitted parameters, on NumPy, sparse and Dask input.

Predictions on Dask arrays stay lazy: each block's logits are a task (:func:`block_logits`)
that workers run with NumPy and the kernels only, never importing scikit-learn. Logits and
probabilities are in the dtype the products run in: float32 for half-precision and float32
features, float64 for float64 features.

:func:`write_predictions` writes a dataset's predictions to a Zarr group (what ``dsoftmax
predict`` does), after refusing a target it must not write into.
"""

from __future__ import annotations

import os
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
    "check_predictions_target",
    "dataset_labels",
    "is_lazy",
    "labels_of_logits",
    "lazy_features",
    "log_proba",
    "logits",
    "logits_dtype",
    "proba",
    "write_predictions",
]

#: The arrays :func:`write_predictions` writes.
PREDICTIONS, PROBABILITIES = "predictions", "probabilities"


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
        dtype = logits_dtype(X.dtype)
        return X.map_blocks(
            block_logits,
            params,
            dtype=dtype,
            chunks=(X.chunks[0], (params.coef.shape[0],)),
            meta=np.empty((0, 0), dtype=dtype),
        )
    if is_sparse(X):
        return _sparse_logits(params, X)
    return objective.decision_function(params, X)


def logits_dtype(dtype: Any) -> np.dtype:
    """The dtype of the logits of features stored as ``dtype``: half precision computes in
    float32 (:func:`dsoftmax.objective.decision_function`), float32 and float64 stay."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype.itemsize < 4 else dtype


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


def check_predictions_target(
    url: str | os.PathLike,
    dataset_url: str,
    *,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> None:
    """Refuse a target that :func:`write_predictions` must not write into.

    Parameters
    ----------
    url : str or path
        The Zarr group to write to.
    dataset_url : str
        The location of the dataset predicted on.
    overwrite : bool, default False
        Whether existing predictions may be replaced.
    storage_options : dict, optional
        fsspec options for URLs.

    Raises
    ------
    ValueError
        When ``url`` is the dataset's own location or inside it: predictions never change the
        data they are made from.
    FileExistsError
        When ``url`` exists and is neither an empty directory nor a Zarr group (the rule of
        :func:`dsoftmax.data.write_dataset`), or, without ``overwrite``, when its group already
        holds predictions.
    """
    from .data.store import as_url, filesystem, open_group

    url = as_url(url)
    fs, path = filesystem(url, storage_options)
    data_fs, data_path = filesystem(dataset_url, storage_options)
    if _same_store(fs, data_fs) and _inside(_real(fs, path), _real(data_fs, data_path)):
        where = "is" if _real(fs, path) == _real(data_fs, data_path) else "is inside"
        raise ValueError(
            f"the output {url!r} {where} the dataset {dataset_url!r} predicted on; refusing to "
            "write predictions into the input data. Choose another path."
        )
    if not fs.exists(path) or (fs.isdir(path) and not fs.ls(path)):
        return
    if not fs.exists(f"{path}/zarr.json"):
        raise FileExistsError(
            f"the output {url!r} exists and is not a Zarr group; refusing to write into it. "
            "Choose a new path (or an existing Zarr group of predictions)."
        )
    from zarr.errors import ContainsArrayError

    try:
        group = open_group(url, "r", storage_options)
    except ContainsArrayError:
        raise FileExistsError(
            f"the output {url!r} is a Zarr array, not a group; refusing to write into it. "
            "Choose a new path."
        ) from None
    if not overwrite and PREDICTIONS in group:
        raise FileExistsError(
            f"{url!r} already has an array {PREDICTIONS!r}; pass overwrite=True to replace it "
            "or choose another path."
        )


def write_predictions(
    model: Any,
    dataset: Dataset,
    url: str | os.PathLike,
    *,
    probabilities: bool = False,
    overwrite: bool = False,
    storage_options: dict | None = None,
    client: Any = None,
) -> None:
    """Write the labels ``model`` predicts for every row of ``dataset`` to the array
    ``predictions`` of the Zarr group ``url`` (created when missing), and with
    ``probabilities`` the class probabilities to ``probabilities``.

    The target is checked first (:func:`check_predictions_target`), then the features
    (non-finite values would give meaningless labels), before anything is written.

    Parameters
    ----------
    model : SoftmaxRegression or dsoftmax.evaluation.SavedWeights
        A fitted model: ``coef_``, ``intercept_`` and ``classes_``.
    dataset : Dataset
    url : str or path
    probabilities : bool, default False
        Also write the probabilities, shape (n_samples, n_classes), in :func:`logits_dtype`
        of the features (float32 for half-precision features); they replace older ones.
        Without them, older probabilities in the group are removed: they belong to the
        predictions replaced.
    overwrite : bool, default False
        Replace existing predictions.
    storage_options : dict, optional
        fsspec options for URLs.
    client : distributed.Client, optional
        Where the value checks run; the default Dask scheduler otherwise.

    Raises
    ------
    ValueError
        When the feature counts differ, ``url`` is the dataset itself, or the features hold
        non-finite values.
    FileExistsError
        See :func:`check_predictions_target`.
    """
    from .data import check_values, remove_array, write_array

    check_predictions_target(
        url, dataset.url, overwrite=overwrite, storage_options=storage_options
    )
    coef = np.asarray(model.coef_)
    n_features = coef.shape[1]
    if n_features != dataset.n_features:
        raise ValueError(
            f"the model expects {n_features} features; {dataset.url!r} has "
            f"{dataset.n_features}. Predict on data with the features the model was trained on."
        )
    check_values(dataset, client=client)
    scores = logits(Params(coef, model.intercept_), lazy_features(dataset.X, n_features))
    write_array(
        url,
        _storable_labels(labels_of_logits(scores, np.asarray(model.classes_))),
        name=PREDICTIONS,
        storage_options=storage_options,
        overwrite=overwrite,
    )
    if probabilities:
        write_array(
            url,
            proba(scores),
            name=PROBABILITIES,
            storage_options=storage_options,
            # The predictions beside it were just written: older probabilities are stale.
            overwrite=True,
        )
    else:
        remove_array(url, PROBABILITIES, storage_options=storage_options)


def _same_store(fs: Any, other: Any) -> bool:
    return fs.protocol == other.protocol


def _real(fs: Any, path: str) -> str:
    """``path`` with symbolic links resolved on a local filesystem."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return os.path.realpath(path) if "file" in protocols else path


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _storable_labels(labels: da.Array) -> da.Array:
    """String labels as variable-length UTF-8 strings, a data type the Zarr v3 specification
    defines (fixed-width NumPy strings map to one that Zarr warns is unstable)."""
    string_dtype = getattr(np.dtypes, "StringDType", None)  # NumPy >= 2
    if labels.dtype.kind not in "OUS" or string_dtype is None:
        return labels
    return labels.map_blocks(_variable_length_strings, dtype=string_dtype())


def _variable_length_strings(labels: np.ndarray) -> np.ndarray:
    return labels.astype(str).astype(np.dtypes.StringDType())
