"""Model files of :class:`dsoftmax.SoftmaxRegressionCV`: a model file with the grid's results.

The file is the model file of :mod:`dsoftmax.persist.model` for the refit model, whose
hyper-parameters are those of :class:`dsoftmax.SoftmaxRegression` at the chosen ``l2`` (so
``SoftmaxRegression.load`` reads it as that model), plus a ``search`` record in the manifest and
two arrays:

* ``search``: the grid's own hyper-parameters (``l2s``, ``cv``, ``scoring``, ``refit``,
  ``learning_rates``, ``validation_fraction``), the chosen ``l2`` and ``learning_rate``, and how
  the splits were made (``cv_description``);
* ``scores.npy``: float64 (n_splits, n_l2s[, n_learning_rates]), the held-out scores;
* ``grid_n_iter.npy``: int64 of the same shape, the iterations of every split's model.

Loading checks every value of the record against the arrays (shapes, the chosen values among
those tried) and the hyper-parameters as the constructor does; anything else is a
:class:`~dsoftmax.persist.files.ModelFileError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .files import ModelFileError
from .manifest import NUMBER, typed
from .manifest import field as manifest_field
from .model import FittedModel, load_fitted_model

__all__ = ["load_search", "search_record"]

#: Longest description of the splits kept in a file.
MAX_DESCRIPTION_CHARS = 500


def search_record(
    params: dict[str, Any],
    l2: float,
    learning_rate: float | None,
    description: str,
    scores: np.ndarray,
    n_iter: np.ndarray,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``search`` record and arrays of :class:`~dsoftmax.persist.FittedModel` for a grid
    whose own hyper-parameters are ``params`` (see the module docstring)."""
    record = {
        "params": params,
        "l2": float(l2),
        "learning_rate": None if learning_rate is None else float(learning_rate),
        "cv_description": str(description)[:MAX_DESCRIPTION_CHARS],
    }
    arrays = {
        "scores": np.asarray(scores, dtype=np.float64),
        "grid_n_iter": np.asarray(n_iter, dtype=np.int64),
    }
    return record, arrays


def load_search(path: str, *, storage_options: dict | None = None) -> tuple[FittedModel, dict]:
    """Read and verify a model file with a grid's results: the model, and the record with its
    values typed and checked against its arrays (``params``, ``scores``, ``n_iter``, ``l2``,
    ``learning_rate``, ``cv_description``)."""
    fitted = load_fitted_model(path, storage_options=storage_options)
    if fitted.search is None:
        raise ModelFileError(
            f"{path!r} is the model of one fit, without a grid's results; load it with "
            "SoftmaxRegression.load."
        )
    return fitted, _checked_search(fitted.search, fitted.search_arrays, path)


def _checked_search(record: dict, arrays: dict[str, np.ndarray], path: str) -> dict[str, Any]:
    """The search record with every value typed and consistent with its arrays."""
    context = f"the grid record of {path!r}"
    params = manifest_field(record, "params", (dict,), context)
    allowed = {"l2s", "cv", "scoring", "refit", "learning_rates", "validation_fraction"}
    if set(params) != allowed:
        raise ModelFileError(
            f"{context} has the settings {sorted(params)[:8]}, not {sorted(allowed)}."
        )
    l2s = [float(typed(v, NUMBER, f"an l2 in {context}")) for v in typed(
        params["l2s"], (list,), f"'l2s' in {context}")]  # fmt: skip
    rates = typed(params["learning_rates"], (list, type(None)), f"'learning_rates' in {context}")
    if rates is not None:
        rates = [float(typed(v, NUMBER, f"a learning rate in {context}")) for v in rates]
    typed(params["cv"], (int, str), f"'cv' in {context}")
    typed(params["scoring"], (str,), f"'scoring' in {context}")
    typed(params["refit"], (bool,), f"'refit' in {context}")
    typed(params["validation_fraction"], NUMBER, f"'validation_fraction' in {context}")
    if "scores" not in arrays or "grid_n_iter" not in arrays:
        raise ModelFileError(f"{context} comes without its arrays 'scores' and 'grid_n_iter'.")
    scores, n_iter = arrays["scores"], arrays["grid_n_iter"]
    shape = (scores.shape[0], len(l2s)) + (() if rates is None else (len(rates),))
    if scores.dtype != np.float64 or scores.shape != shape or scores.shape[0] < 1:
        raise ModelFileError(
            f"{path!r}: scores has shape {scores.shape} and dtype {scores.dtype}; the record's "
            f"grid needs float64 of shape (n_splits, {', '.join(map(str, shape[1:]))})."
        )
    if n_iter.dtype != np.int64 or n_iter.shape != shape or np.any(n_iter < 0):
        raise ModelFileError(
            f"{path!r}: grid_n_iter must be non-negative int64 of shape {shape}, got "
            f"{n_iter.dtype} of shape {n_iter.shape}."
        )
    chosen = float(manifest_field(record, "l2", NUMBER, context))
    if chosen not in l2s:
        raise ModelFileError(f"{context}: the chosen l2 {chosen!r} is not among l2s {l2s[:8]}.")
    rate = manifest_field(record, "learning_rate", (int, float, type(None)), context, None)
    description = manifest_field(record, "cv_description", (str,), context, "")
    return {
        "params": {**params, "l2s": l2s, "learning_rates": rates},
        "scores": scores,
        "n_iter": n_iter,
        "l2": chosen,
        "learning_rate": None if rate is None else float(rate),
        "cv_description": description[:MAX_DESCRIPTION_CHARS],
    }
