"""Evaluate a fitted model on a dataset: loss, accuracy, per-class report, confusion matrix.

The work runs block by block on the cluster (one task per chunk of rows, small sums added on
the client), so datasets larger than memory are evaluated without collecting predictions. The
same pass checks the values (:func:`dsoftmax.data.block_stats`): non-finite features, labels out
of range and bad weights are reported by block and row instead of turning into a NaN loss.

The dataset may hold a subset of the model's classes (a small test set that lacks a rare
class): its labels are matched to the model's classes by value, and the report covers every
class of the model.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
from tqdm.auto import tqdm

from .data import BlockStats, block_stats, combine_stats
from .objective import Params, decision_function, log_softmax

__all__ = [
    "BlockEvaluation",
    "class_positions",
    "evaluate_model",
    "evaluation_block_sums",
    "format_report",
]


@dataclass(frozen=True, eq=False)
class BlockEvaluation:
    """What one block of rows contributes to a report.

    Attributes
    ----------
    stats : dsoftmax.data.BlockStats
        Row counts and value problems of the block; the sums below are zero when it has problems.
    loss_sum : float
        ``Σ_i w_i · cross-entropy_i`` (float64).
    confusion : ndarray of shape (n_classes, n_classes)
        Weighted counts; rows are true classes, columns predicted ones (model class order).
    """

    stats: BlockStats
    loss_sum: float
    confusion: np.ndarray


def evaluation_block_sums(
    X: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None,
    params: Params,
    class_positions: np.ndarray,
    block_index: int,
    row_start: int,
) -> BlockEvaluation:
    """Worker task: check one block's values, then its weighted loss sum and confusion matrix.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
    labels : ndarray of shape (n_rows,) or (n_rows, n_dataset_classes)
        Dataset class ids, or probability rows over the dataset's classes.
    weights : ndarray of shape (n_rows,) or None
    params : Params
        ``coef`` (n_classes, n_features) and ``intercept`` (n_classes,) of the model.
    class_positions : ndarray of shape (n_dataset_classes,)
        Index in the model's classes of each dataset class.
    block_index, row_start : int
        Where the block lies, for messages.

    Returns
    -------
    BlockEvaluation
    """
    n_classes = params.coef.shape[0]
    stats = block_stats(X, labels, weights, len(class_positions), block_index, row_start)
    if stats.problems:
        # The client raises on the problems; NaN sums or an IndexError here would only hide them.
        return BlockEvaluation(stats, 0.0, np.zeros((n_classes, n_classes)))
    logits = decision_function(params, X)
    log_probs = log_softmax(logits)
    row_weights = np.ones(X.shape[0]) if weights is None else weights.astype(np.float64)
    if labels.ndim == 1:
        truth = class_positions[labels]
        row_loss = -log_probs[np.arange(X.shape[0]), truth]
    else:
        truth = class_positions[np.argmax(labels, axis=1)]
        row_loss = -np.einsum("ik,ik->i", labels, log_probs[:, class_positions])
    # From the logits, as predict does: subtracting the log-sum-exp could round two close
    # logits to a tie and flip the argmax.
    predicted = np.argmax(logits, axis=1)
    confusion = np.bincount(
        truth * n_classes + predicted, weights=row_weights, minlength=n_classes * n_classes
    ).reshape(n_classes, n_classes)
    loss_sum = float(np.dot(row_loss.astype(np.float64), row_weights))
    return BlockEvaluation(stats, loss_sum, confusion)


def evaluate_model(
    model: Any, dataset: Any, *, client: Any = None, progress: bool = False
) -> dict[str, Any]:
    """Loss, accuracy and per-class precision/recall/F1 of ``model`` on ``dataset``.

    Parameters
    ----------
    model : SoftmaxRegression
        A fitted model; every class of the dataset must be one of ``model.classes_``.
    dataset : dsoftmax.data.Dataset
    client : distributed.Client, optional
        Runs the block tasks on this cluster; the default Dask scheduler otherwise.
    progress : bool, default False
        Show a progress bar over blocks, with the running loss, when stderr is a terminal.

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
    parts = _compute_with_progress(
        _evaluation_tasks(Params(model.coef_, model.intercept_), positions, dataset),
        client=client,
        progress=progress,
    )
    stats = combine_stats([part.stats for part in parts], repr(dataset.url))
    loss_sum = float(sum(part.loss_sum for part in parts))
    confusion = np.sum([part.confusion for part in parts], axis=0)
    report = _report(
        loss_sum, confusion, np.asarray(model.classes_), stats.n_samples, stats.weight_sum
    )
    if dataset.sample_weight is None:
        for row in report["per_class"]:
            row["support"] = round(row["support"])
    return report


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


def _evaluation_tasks(params: Params, positions: np.ndarray, dataset: Any) -> list[Any]:
    token = uuid.uuid4().hex
    x_parts = dataset.X.to_delayed().ravel()
    label_parts = dataset.labels.to_delayed().ravel()
    weight_parts = (
        [None] * len(x_parts)
        if dataset.sample_weight is None
        else dataset.sample_weight.to_delayed().ravel()
    )
    starts = np.concatenate([[0], np.cumsum(dataset.X.chunks[0])]).tolist()
    task = dask.delayed(evaluation_block_sums, pure=True)
    return [
        task(
            x,
            labels,
            weights,
            params,
            positions,
            index,
            starts[index],
            dask_key_name=f"dsoftmax-evaluate-{token}-{index}",
        )
        for index, (x, labels, weights) in enumerate(
            zip(x_parts, label_parts, weight_parts, strict=True)
        )
    ]


def _compute_with_progress(
    tasks: list[Any], *, client: Any, progress: bool
) -> list[BlockEvaluation]:
    if client is None:
        return list(dask.compute(*tasks))
    from distributed import as_completed

    futures = client.compute(tasks)
    parts: dict[str, BlockEvaluation] = {}
    loss_sum = weight_sum = 0.0
    # disable=None: no bar when stderr is not a terminal.
    bar = tqdm(total=len(futures), unit="block", leave=False, disable=None if progress else True)
    with bar:
        for future, part in as_completed(futures, with_results=True):
            parts[future.key] = part
            loss_sum += part.loss_sum
            weight_sum += part.stats.weight_sum
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / max(weight_sum, 1e-300):.5g}")
    return [parts[future.key] for future in futures]


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
