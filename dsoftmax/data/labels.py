"""Class labels and sample weights: one label encoder and one weight validator, used by writing
datasets and by the inputs of a fit alike.

Labels of any kind (ints, floats, bools, strings) become int32 class ids: id ``k`` stands for
``classes[k]``. The rule for a label that is not among ``classes``:

* labels in memory (NumPy) are checked before any work: :func:`encode_labels` raises a
  ValueError naming a few of the unknown labels;
* labels in a Dask array cannot be checked before their blocks are read. With
  ``unknown="raise"`` the same ValueError is raised when a block is read (writing reads every
  block before it touches the store); with ``unknown="mark"`` (the inputs of a fit) an unknown
  label gets id ``len(classes)``, out of range, and the value checks
  (:func:`~dsoftmax.data.block_stats`) report it with its block and row.

Sample weights are checked for shape and type here (:func:`check_sample_weight`); their values
(finite, >= 0, not all zero) by the value checks, like every other value.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np

from .tasks import compute

__all__ = [
    "UNKNOWN_LABELS",
    "check_classes",
    "check_known_rows",
    "check_rows",
    "check_sample_weight",
    "encode_labels",
    "is_dask",
    "unique_labels",
]

#: What :func:`encode_labels` does with a label outside ``classes``.
UNKNOWN_LABELS = ("raise", "mark")
#: How many unknown labels an error names.
UNKNOWN_SHOWN = 5


def is_dask(array: Any) -> bool:
    return isinstance(array, da.Array)


def check_known_rows(array: Any, name: str) -> None:
    """Refuse a Dask array whose row chunks are unknown (``nan``)."""
    if is_dask(array) and any(math.isnan(rows) for rows in array.chunks[0]):
        raise ValueError(
            f"{name} is a dask array of unknown chunk sizes; call {name}.compute_chunk_sizes() "
            "first."
        )


def check_rows(array: Any, name: str, X: Any, ndim: int | None = None) -> None:
    """Refuse ``array`` unless it has one row per row of ``X`` (and ``ndim`` dimensions).

    The message holds scikit-learn's wording (``check_consistent_length``) too. scikit-learn is
    imported here, on the client only: the workers import this module to write labels, and
    scikit-learn brings SciPy, pandas and pyarrow (~130 MB per process) with it.
    """
    from sklearn.utils import check_consistent_length

    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}.")
    check_known_rows(array, name)
    try:
        check_consistent_length(X, array)
    except ValueError as error:
        raise ValueError(
            f"{name} has {array.shape[0]} rows but X has {X.shape[0]}; they must describe the "
            f"same samples ({error})."
        ) from error


def check_classes(classes: np.ndarray, source: str) -> np.ndarray:
    """``classes``, after refusing what cannot be a classifier's classes.

    Parameters
    ----------
    classes : ndarray of shape (n_classes,)
    source : str
        Where the classes come from in messages (``"y"`` or ``"classes"``).
    """
    if classes.ndim != 1:
        raise ValueError(f"classes must be 1-D, got shape {classes.shape}.")
    if classes.dtype.kind not in "biufUO":
        raise TypeError(f"classes must be numbers or strings, got dtype {classes.dtype}.")
    for value in classes.tolist():
        if not isinstance(value, bool | int | float | str):
            raise TypeError(
                f"class labels must be numbers or strings, got {value!r} of type "
                f"{type(value).__name__}."
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"class labels must be finite, {source} holds {value!r}.")
    try:
        unique = np.unique(classes)
    except TypeError as error:
        raise TypeError(
            f"class labels must be all numbers or all strings, {source} mixes them: {error}"
        ) from error
    if unique.shape[0] != classes.shape[0]:
        raise ValueError(f"classes must be distinct, got {classes.tolist()}.")
    if classes.shape[0] < 2:
        raise ValueError(
            f"a classifier needs at least 2 classes; {source} holds {classes.tolist()} "
            f"({classes.shape[0]} class{'' if classes.shape[0] == 1 else 'es'}). Pass "
            "classes=[...] to declare the others, or add rows of other classes."
        )
    return classes


def unique_labels(y: np.ndarray | da.Array, scheduler: str | None = None) -> np.ndarray:
    """The sorted distinct labels of ``y``; a Dask array is reduced block by block."""
    try:
        if not is_dask(y):
            return np.unique(y)
        parts = compute(
            [dask.delayed(np.unique)(part) for part in y.to_delayed()], scheduler=scheduler
        )
        return np.unique(np.concatenate(parts))
    except TypeError as error:
        raise TypeError(
            f"labels in y must be all numbers or all strings, got a mix: {error}"
        ) from error


def encode_labels(
    labels: np.ndarray | da.Array,
    classes: np.ndarray,
    *,
    unknown: Literal["raise", "mark"] = "raise",
) -> np.ndarray | da.Array:
    """Class ids of ``labels``: id ``k`` for ``classes[k]``.

    Parameters
    ----------
    labels : ndarray or dask array of shape (n_samples,)
    classes : ndarray of shape (n_classes,)
        Distinct labels in id order (any order; :func:`check_classes` them first).
    unknown : {"raise", "mark"}
        A label outside ``classes`` raises a ValueError naming the first few unknown labels
        (for a Dask array: when its block is read), or gets id ``n_classes``, out of range, for
        the value checks to report with its block and row (see the module docstring).

    Returns
    -------
    ndarray or dask array of shape (n_samples,), int32

    Examples
    --------
    >>> encode_labels(np.array(["b", "a", "b"]), np.array(["b", "a"])).tolist()
    [0, 1, 0]
    """
    if unknown not in UNKNOWN_LABELS:
        raise ValueError(f"unknown must be one of {list(UNKNOWN_LABELS)}, got {unknown!r}.")
    order = np.argsort(classes, kind="stable")
    sorted_classes = classes[order]
    if is_dask(labels):
        return labels.map_blocks(_label_ids, sorted_classes, order, unknown, dtype=np.int32)
    return _label_ids(labels, sorted_classes, order, unknown)


def _label_ids(
    labels: np.ndarray, sorted_classes: np.ndarray, order: np.ndarray, unknown: str
) -> np.ndarray:
    """Class ids of ``labels``, where ``classes[order]`` is ``sorted_classes``."""
    if labels.dtype.kind in "UO" or sorted_classes.dtype.kind in "UO":
        # Comparing as objects avoids truncating strings to the width of the class dtype.
        labels = labels.astype(object)
        sorted_classes = sorted_classes.astype(object)
    try:
        positions = np.searchsorted(sorted_classes, labels)
        clipped = np.minimum(positions, sorted_classes.shape[0] - 1)
        known = sorted_classes[clipped] == labels
    except TypeError as error:
        raise TypeError(
            f"labels in y cannot be compared with classes {sorted_classes.tolist()}: {error}"
        ) from error
    ids = order[clipped].astype(np.int32)
    if np.all(known):
        return ids
    if unknown == "raise":
        shown = np.unique(labels[~known])[:UNKNOWN_SHOWN].tolist()
        raise ValueError(
            f"y holds label(s) {shown} that are not in classes {sorted_classes.tolist()}; "
            "add them to classes or drop those rows."
        )
    ids[~known] = sorted_classes.shape[0]
    return ids


def check_sample_weight(sample_weight: Any, X: Any) -> np.ndarray | da.Array | None:
    """Sample weights for the rows of ``X``, checked for shape and type.

    Parameters
    ----------
    sample_weight : None, number, array-like or dask array of shape (n_samples,)
        A number weighs every row alike.
    X : ndarray or dask array of shape (n_samples, n_features)

    Returns
    -------
    ndarray or dask array of shape (n_samples,), or None
        Float weights keep their dtype; integer and boolean weights become float64. Their
        values are checked by the value checks (:func:`~dsoftmax.data.block_stats`).
    """
    if sample_weight is None:
        return None
    weights = sample_weight if is_dask(sample_weight) else np.asarray(sample_weight)
    if weights.ndim == 0 and not is_dask(weights):
        weights = np.full(X.shape[0], weights)
    check_rows(weights, "sample_weight", X, ndim=1)
    if np.issubdtype(weights.dtype, np.floating):
        return weights
    if np.issubdtype(weights.dtype, np.integer) or weights.dtype == bool:
        return weights.astype(np.float64)
    raise TypeError(f"sample_weight must hold numbers, got dtype {weights.dtype}.")
