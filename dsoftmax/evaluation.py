"""Evaluate a fitted model on data: loss, accuracy, per-class report, confusion matrix.

Evaluations run through an engine (:mod:`dsoftmax.engine`), with the same block evaluation as
training: on the cluster when there is one, else in this process (held there when the data
fits this machine's memory, else block by block, so datasets larger than memory are evaluated
without collecting predictions). The values are checked first
(:func:`dsoftmax.data.block_stats`, where the rows are): non-finite features, labels out of
range and bad weights are reported by block and row instead of turning into a NaN loss.

The dataset may hold a subset of the model's classes (a small test set that lacks a rare
class): its labels are matched to the model's classes by value, and the report covers every
class of the model.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import dask.array as da
import numpy as np
from tqdm.auto import tqdm

from .data import combine_stats
from .data.labels import encode_labels
from .data.tasks import compute
from .engine import LocalEngine
from .fitting import fits_this_process, resolve_client
from .objective import Params
from .sampling import rows_to_blocks

__all__ = [
    "SavedWeights",
    "accuracy",
    "class_positions",
    "evaluate_model",
    "format_report",
]


class SavedWeights(NamedTuple):
    """A saved model's weights under the fitted estimator's names: what :func:`evaluate_model`
    reads of a model, without building the estimator (``dsoftmax evaluate`` then starts without
    importing scikit-learn)."""

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray

    @property
    def n_features_in_(self) -> int:
        return int(self.coef_.shape[1])


def evaluate_model(
    model: Any, dataset: Any, *, client: Any = None, progress: bool = False
) -> dict[str, Any]:
    """Loss, accuracy and per-class precision/recall/F1 of ``model`` on ``dataset``.

    Parameters
    ----------
    model : SoftmaxRegression or SavedWeights
        A fitted model; every class of the dataset must be one of ``model.classes_``. When the
        dataset lists its classes in another order, a row whose largest logits are exactly
        equal counts as the first of them in the dataset's order (``predict`` takes the
        model's).
    dataset : dsoftmax.data.Dataset
    client : distributed.Client, optional
        The cluster to evaluate on; the active Dask client when None, else this process.
    progress : bool, default False
        Show a progress bar over the evaluation's steps when stderr is a terminal.

    Returns
    -------
    dict
        ``n_samples`` (rows), ``weight_sum``, ``loss`` (weighted mean cross-entropy, no
        penalty), ``accuracy`` (weighted), ``per_class`` (label, precision, recall, f1, support:
        the true class's weight, its row count without sample weights) and
        ``confusion_matrix`` (n_classes × n_classes, rows: true class, model class order).

    Raises
    ------
    ValueError
        When the feature counts differ, the dataset has a class the model does not know, or a
        block holds non-finite features, labels out of range or bad weights.
    """
    if model.n_features_in_ != dataset.n_features:
        raise ValueError(
            f"the model expects {model.n_features_in_} features; {dataset.url!r} has "
            f"{dataset.n_features}. Evaluate on data with the features the model was trained on."
        )
    positions = class_positions(model.classes_, dataset.classes, dataset.url)
    n_classes = len(model.classes_)
    if dataset.labels.ndim == 1:
        # Class ids stay the dataset's, checked against its own classes as a fit checks them
        # (a bad id is reported as stored); the model's classes are put in their order instead.
        labels, n_label_classes = dataset.labels, dataset.n_classes
        order = _dataset_order(positions, n_classes)
    else:
        labels = _rows_in_model_classes(dataset.labels, positions, n_classes)
        n_label_classes, order = n_classes, np.arange(n_classes)
    params = Params(model.coef_, model.intercept_)
    steps = tqdm(total=2, unit="pass", leave=False, disable=None if progress else True)
    with steps, _engine(client, dataset.X, labels, dataset.sample_weight) as engine:
        steps.set_description("checking values")
        stats = combine_stats(engine.block_stats(n_label_classes), repr(dataset.url))
        steps.update(1)
        steps.set_description("evaluating")
        totals = engine.report(_reordered(params, order))
        steps.update(1)
    confusion = np.empty_like(totals.confusion)
    confusion[np.ix_(order, order)] = totals.confusion
    report = _report(
        totals.loss_sum,
        confusion,
        np.asarray(model.classes_),
        stats.n_samples,
        totals.weight_sum,
    )
    if dataset.sample_weight is None:
        for row in report["per_class"]:
            row["support"] = round(row["support"])
    return report


def accuracy(
    model: Any, X: Any, labels: Any, sample_weight: Any = None, *, client: Any = None
) -> float:
    """The (weighted) share of rows whose label ``predict`` gives; labels the model does not
    know count as wrong predictions, as in scikit-learn's ``score``.

    Parameters
    ----------
    model : SoftmaxRegression
        A fitted model.
    X : ndarray or dask.array.Array of shape (n_samples, n_features)
        Validated features.
    labels : ndarray or dask.array.Array of shape (n_samples,)
        Original label values.
    sample_weight : ndarray or dask.array.Array of shape (n_samples,), optional
    client : distributed.Client, optional
        Where to evaluate Dask input; this process when None.

    Returns
    -------
    float
    """
    classes = np.asarray(model.classes_)
    ids = encode_labels(labels, classes, unknown="mark")
    known = ids < len(classes)
    if isinstance(known, da.Array):
        known_rows, total = _known_rows_and_weight(known, sample_weight, X.chunks[0])
        ids = da.where(known, ids, 0)
    else:
        known_rows = np.flatnonzero(known)
        total = float(len(ids) if sample_weight is None else np.sum(sample_weight))
        ids = np.where(known, ids, 0)
    if known_rows.size == 0:
        return 0.0
    with _engine(client, X, ids, sample_weight) as engine:
        batch = rows_to_blocks(known_rows, engine.chunk_rows)
        totals = engine.metrics(Params(model.coef_, model.intercept_), batch)
    return totals.correct_sum / total


def class_positions(model_classes: Any, dataset_classes: Any, url: str) -> np.ndarray:
    """Index in ``model_classes`` of each of ``dataset_classes``, matched by value.

    Parameters
    ----------
    model_classes : array-like of shape (n_classes,)
    dataset_classes : array-like of shape (n_dataset_classes,)
    url : str
        The dataset's location, for the message.

    Returns
    -------
    ndarray of shape (n_dataset_classes,), intp

    Raises
    ------
    ValueError
        When a dataset class is not among the model's classes.
    """
    # Python values, so that the int 1 of a model matches the 1 of a dataset's JSON attributes.
    index = {_plain(label): position for position, label in enumerate(np.asarray(model_classes))}
    dataset_labels = [_plain(label) for label in np.asarray(dataset_classes)]
    unknown = [label for label in dataset_labels if label not in index]
    if unknown:
        raise ValueError(
            f"{url!r} has classes {unknown} that the model does not know; the model's classes "
            f"are {list(index)}. Evaluate on data labelled with the model's classes."
        )
    return np.array([index[label] for label in dataset_labels], dtype=np.intp)


def _plain(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def _engine(client: Any, X: Any, labels: Any, sample_weight: Any) -> Any:
    """The engine of one evaluation: on ``client`` or the active client's cluster for Dask
    input, else in this process: Dask input held there for the evaluation's two passes (the
    value check and the report) when it fits this machine's memory, else read block by block
    at each."""
    if not isinstance(X, da.Array):
        return LocalEngine(X, labels, sample_weight)
    if client is None:
        client = resolve_client(None, needs_cluster=False)
    if client is None:
        fits, _ = fits_this_process(X, labels, sample_weight, "auto")
        return LocalEngine(X, labels, sample_weight, hold="memory" if fits else "stream")
    from .engine import DaskEngine

    return DaskEngine(client, X, labels, sample_weight, name="dsoftmax-evaluate")


def _dataset_order(positions: np.ndarray, n_classes: int) -> np.ndarray:
    """The model's class indices with those of the dataset's classes first, in the dataset's
    order (its class id ``k`` is then the ``k``-th class), then the model's other classes."""
    others = np.setdiff1d(np.arange(n_classes), positions)
    return np.concatenate([positions, others]).astype(np.intp)


def _reordered(params: Params, order: np.ndarray) -> Params:
    """``params`` with their classes in ``order``."""
    intercept = None if params.intercept is None else np.asarray(params.intercept)[order]
    return Params(np.asarray(params.coef)[order], intercept)


def _rows_in_model_classes(rows: da.Array, positions: np.ndarray, n_classes: int) -> da.Array:
    """A dataset's probability rows spread into the model's columns."""
    return rows.map_blocks(
        _spread_rows,
        positions,
        n_classes,
        dtype=rows.dtype,
        chunks=(rows.chunks[0], (n_classes,)),
    )


def _spread_rows(rows: np.ndarray, positions: np.ndarray, n_classes: int) -> np.ndarray:
    spread = np.zeros((rows.shape[0], n_classes), dtype=rows.dtype)
    spread[:, positions] = rows
    return spread


def _known_rows_and_weight(
    known: da.Array, sample_weight: Any, chunks: tuple[int, ...]
) -> tuple[np.ndarray, float]:
    weights = (
        known.shape[0]
        if sample_weight is None
        else da.asarray(sample_weight).rechunk({0: chunks}).sum()
    )
    rows, total = compute([da.flatnonzero(known), weights])
    return np.asarray(rows, dtype=np.int64), float(total)


def _report(
    loss_sum: float, confusion: np.ndarray, classes: np.ndarray, n_samples: int, weight_sum: float
) -> dict[str, Any]:
    true_counts = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    hits = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted_counts > 0, hits / predicted_counts, 0.0)
        recall = np.where(true_counts > 0, hits / true_counts, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "n_samples": int(n_samples),
        "weight_sum": float(weight_sum),
        "loss": float(loss_sum / weight_sum),
        "accuracy": float(hits.sum() / weight_sum),
        "per_class": [
            {
                "label": _plain(label),
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": float(s),
            }
            for label, p, r, f, s in zip(classes, precision, recall, f1, true_counts, strict=True)
        ],
        "confusion_matrix": confusion.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_model`'s report."""
    lines = [
        f"samples:  {report['n_samples']}",
        f"loss:     {report['loss']:.6f}",
        f"accuracy: {report['accuracy']:.4f}",
        "",
        f"{'class':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}",
    ]
    for row in report["per_class"]:
        lines.append(
            f"{row['label']!s:>12} {row['precision']:9.4f} {row['recall']:9.4f} "
            f"{row['f1']:9.4f} {row['support']:9.6g}"
        )
    return "\n".join(lines)
