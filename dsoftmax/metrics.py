"""Evaluation metrics of one block of rows, and how they add up: the weighted cross-entropy,
the weighted count of correct predictions and, for reports, the weighted confusion matrix.

Pure NumPy, the reference the kernels' metrics are tested against. A prediction is the argmax
of the logits as :func:`dsoftmax.objective.decision_function` computes them, so an evaluation
counts exactly the predictions ``predict`` makes.
"""

from __future__ import annotations

import numpy as np

from .objective import (
    BlockMetrics,
    BlockReport,
    Params,
    PreparedParams,
    class_major_logits,
    labels_kind,
    log_softmax,
    prepare_params,
)

__all__ = [
    "add_metrics",
    "add_reports",
    "block_metrics",
    "block_report",
    "report_of_logits",
    "sum_metrics",
]


def _predictions(
    params: Params | PreparedParams,
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the predicted class, the true class, the cross-entropy and the weight (float64).

    A row's prediction is the argmax of its logits as :func:`decision_function` computes them,
    so an evaluation counts exactly the predictions that ``predict`` makes. For probability
    rows, the true class of a row is its argmax.
    """
    prepared = prepare_params(params, X.dtype)
    return _predictions_of_logits(class_major_logits(prepared, X), labels, sample_weight)


def _predictions_of_logits(
    logits: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_predictions` from class-major logits (n_classes, n_rows)."""
    n_classes, n_rows = logits.shape
    kind = labels_kind(labels, n_classes, n_rows)
    weights = np.ones(n_rows) if sample_weight is None else sample_weight.astype(np.float64)
    predicted = np.argmax(logits, axis=0)
    log_probs = log_softmax(logits, axis=0)
    if kind == "ids":
        targets = labels.astype(np.intp)
        row_loss = -log_probs[targets, np.arange(n_rows)]
    else:
        targets = np.argmax(labels, axis=1)
        row_loss = -np.einsum("ik,ki->i", labels.astype(logits.dtype, copy=False), log_probs)
    return predicted, targets, row_loss.astype(np.float64), weights


def block_metrics(
    params: Params | PreparedParams,
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
) -> BlockMetrics:
    """Weighted cross-entropy sum, weighted count of correct predictions and weight sum.

    Predictions are the argmax of the logits, as ``predict`` makes them; for probability rows a
    prediction counts as correct when it matches the row's argmax.
    """
    predicted, targets, row_loss, weights = _predictions(params, X, labels, sample_weight)
    return BlockMetrics(
        loss_sum=float(np.dot(row_loss, weights)),
        correct_sum=float(np.dot((predicted == targets).astype(np.float64), weights)),
        weight_sum=float(weights.sum()),
    )


def block_report(
    params: Params | PreparedParams,
    X: np.ndarray,
    labels: np.ndarray,
    sample_weight: np.ndarray | None = None,
) -> BlockReport:
    """Weighted cross-entropy sum, weight sum and weighted confusion matrix of one block."""
    prepared = prepare_params(params, X.dtype)
    return report_of_logits(class_major_logits(prepared, X), labels, sample_weight)


def report_of_logits(
    logits: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None
) -> BlockReport:
    """:func:`block_report` of rows whose class-major logits (n_classes, n_rows) are given
    (computed by another kernel, e.g. of sparse rows)."""
    predicted, targets, row_loss, weights = _predictions_of_logits(logits, labels, sample_weight)
    n_classes = logits.shape[0]
    confusion = np.bincount(
        targets * n_classes + predicted, weights=weights, minlength=n_classes * n_classes
    ).reshape(n_classes, n_classes)
    return BlockReport(float(np.dot(row_loss, weights)), float(weights.sum()), confusion)


def add_metrics(left: BlockMetrics, right: BlockMetrics) -> BlockMetrics:
    """Add two :class:`BlockMetrics`."""
    return BlockMetrics(*(a + b for a, b in zip(left, right, strict=True)))


def add_reports(left: BlockReport, right: BlockReport) -> BlockReport:
    """Add two :class:`BlockReport`."""
    return BlockReport(
        left.loss_sum + right.loss_sum,
        left.weight_sum + right.weight_sum,
        left.confusion + right.confusion,
    )


def sum_metrics(parts: list[BlockMetrics]) -> BlockMetrics:
    """Add a non-empty list of metrics left to right (a fixed order, as
    :func:`dsoftmax.objective.sum_blocks`)."""
    if not parts:
        raise ValueError("sum_metrics needs at least one BlockMetrics.")
    total = parts[0]
    for part in parts[1:]:
        total = add_metrics(total, part)
    return total
