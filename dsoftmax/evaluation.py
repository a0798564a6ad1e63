"""Evaluate a fitted model on a dataset: loss, accuracy, per-class report, confusion matrix.

The work runs block by block on the cluster (one task per chunk, sums added on the client), so
datasets larger than memory are evaluated without collecting predictions.
"""

from __future__ import annotations

from typing import Any

import dask
import numpy as np

from .objective import Params, log_softmax

__all__ = ["evaluate_model", "format_report"]


def evaluation_block_sums(
    X: np.ndarray, labels: np.ndarray, weights: np.ndarray | None, params: Params
) -> tuple[float, np.ndarray]:
    """Worker task: weighted cross-entropy sum and weighted confusion matrix of one block."""
    log_probs = log_softmax(X @ params.coef.T.astype(X.dtype) + params.intercept.astype(X.dtype))
    n_classes = params.coef.shape[0]
    weights = np.ones(X.shape[0]) if weights is None else weights.astype(np.float64)
    if labels.ndim == 1:
        truth = labels.astype(np.intp)
        row_loss = -log_probs[np.arange(X.shape[0]), truth]
    else:
        truth = np.argmax(labels, axis=1)
        row_loss = -np.einsum("ik,ik->i", labels, log_probs)
    predicted = np.argmax(log_probs, axis=1)
    confusion = np.bincount(
        truth * n_classes + predicted, weights=weights, minlength=n_classes * n_classes
    ).reshape(n_classes, n_classes)
    return float(np.dot(row_loss.astype(np.float64), weights)), confusion


def evaluate_model(model: Any, dataset: Any) -> dict[str, Any]:
    """Loss, accuracy and per-class precision/recall/F1 of ``model`` on ``dataset``.

    Parameters
    ----------
    model : SoftmaxRegression
        A fitted model whose ``classes_`` match the dataset's classes.
    dataset : dsoftmax.data.Dataset

    Returns
    -------
    dict
        ``n_samples``, ``loss`` (mean cross-entropy, no penalty), ``accuracy``, ``per_class``
        (label, precision, recall, f1, support) and ``confusion_matrix`` (rows: true class).
    """
    if model.n_features_in_ != dataset.n_features:
        raise ValueError(
            f"the model expects {model.n_features_in_} features; {dataset.url!r} has "
            f"{dataset.n_features}."
        )
    if not np.array_equal(np.asarray(model.classes_).astype(str), dataset.classes.astype(str)):
        raise ValueError(
            f"the model's classes {list(model.classes_)} differ from those of {dataset.url!r} "
            f"{dataset.classes.tolist()}."
        )
    params = Params(model.coef_, model.intercept_)
    x_parts = dataset.X.to_delayed().ravel()
    label_parts = dataset.labels.to_delayed().ravel()
    weight_parts = (
        [None] * len(x_parts)
        if dataset.sample_weight is None
        else dataset.sample_weight.to_delayed().ravel()
    )
    task = dask.delayed(evaluation_block_sums, pure=True)
    parts = dask.compute(
        *[
            task(x, labels, weights, params)
            for x, labels, weights in zip(x_parts, label_parts, weight_parts, strict=True)
        ]
    )
    loss_sum = sum(part[0] for part in parts)
    confusion = np.sum([part[1] for part in parts], axis=0)
    return _report(loss_sum, confusion, dataset.classes)


def _report(loss_sum: float, confusion: np.ndarray, classes: np.ndarray) -> dict[str, Any]:
    total = confusion.sum()
    true_counts = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    hits = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted_counts > 0, hits / predicted_counts, 0.0)
        recall = np.where(true_counts > 0, hits / true_counts, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "n_samples": float(total),
        "loss": float(loss_sum / total),
        "accuracy": float(hits.sum() / total),
        "per_class": [
            {
                "label": label.item() if hasattr(label, "item") else label,
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
        f"samples: {report['n_samples']:.0f}",
        f"loss:     {report['loss']:.6f}",
        f"accuracy: {report['accuracy']:.4f}",
        "",
        f"{'class':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>9}",
    ]
    for row in report["per_class"]:
        lines.append(
            f"{row['label']!s:>12} {row['precision']:9.4f} {row['recall']:9.4f} "
            f"{row['f1']:9.4f} {row['support']:9.0f}"
        )
    return "\n".join(lines)
