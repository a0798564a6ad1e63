"""Pictures of a fitted model: its training curves and a confusion matrix, as a PNG.

Matplotlib is an optional dependency (``pip install 'dsoftmax[plot]'``), imported when a plot is
drawn. Figures are drawn with the Agg canvas directly, never through ``pyplot``: nothing opens a
window, needs a display, or changes the process's matplotlib backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # optional dependency, imported when a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_training"]

#: Largest number of classes whose cells get their counts written in.
MAX_ANNOTATED_CLASSES = 20
#: Largest number of classes whose labels are written along the confusion matrix's axes.
MAX_LABELLED_CLASSES = 40
#: Longest class label shown; longer ones are cut with an ellipsis.
MAX_LABEL_CHARS = 16
PANEL_SIZE = (5.5, 4.5)  # inches
DPI = 100


def _new_figure(n_panels: int) -> Figure:
    """An empty figure of ``n_panels`` side by side, on the Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "plotting needs matplotlib, which is not installed; install it with "
            "pip install 'dsoftmax[plot]'."
        ) from error
    figure = Figure(
        figsize=(PANEL_SIZE[0] * n_panels, PANEL_SIZE[1]), dpi=DPI, layout="constrained"
    )
    FigureCanvasAgg(figure)
    return figure


def _fitted_curves(model: Any) -> tuple[list[float], list[dict[str, float]]]:
    loss_curve = getattr(model, "loss_curve_", None)
    if loss_curve is None or not hasattr(model, "classes_"):
        raise ValueError(
            f"{type(model).__name__} is not fitted: it has no loss_curve_ to plot. Call fit (or "
            "load a saved model) first."
        )
    return [float(value) for value in loss_curve], list(getattr(model, "validation_scores_", []))


def _confusion_matrix(confusion: Any, n_classes: int) -> tuple[np.ndarray, float | None]:
    """The matrix (true classes by rows) and the accuracy, from a report or an array."""
    accuracy = None
    if isinstance(confusion, Mapping):
        if "confusion_matrix" not in confusion:
            raise ValueError(
                f"confusion is a mapping without 'confusion_matrix' (keys: {sorted(confusion)}); "
                "pass the report of dsoftmax.evaluation.evaluate_model or the matrix itself."
            )
        accuracy = confusion.get("accuracy")
        confusion = confusion["confusion_matrix"]
    try:
        matrix = np.asarray(confusion, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"confusion must be an evaluation report or a numeric matrix, got "
            f"{type(confusion).__name__} ({error})."
        ) from error
    if matrix.shape != (n_classes, n_classes):
        raise ValueError(
            f"the confusion matrix has shape {matrix.shape} but the model has {n_classes} "
            f"classes; pass a ({n_classes}, {n_classes}) matrix from an evaluation of this model."
        )
    if not np.all(np.isfinite(matrix) & (matrix >= 0)):
        raise ValueError(
            "the confusion matrix holds negative or non-finite counts; pass the counts of an "
            "evaluation (rows: true classes, columns: predicted ones)."
        )
    return matrix, None if accuracy is None else float(accuracy)


def _short(label: Any) -> str:
    text = str(label.item() if isinstance(label, np.generic) else label)
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def _draw_loss(axes: Axes, loss_curve: list[float], validation: list[dict], unit: str) -> None:
    if loss_curve:
        steps = np.arange(1, len(loss_curve) + 1)
        axes.plot(steps, loss_curve, marker="o", markersize=3, label="training objective")
    else:
        axes.text(0.5, 0.5, "no loss curve recorded", ha="center", va="center",
                  transform=axes.transAxes)  # fmt: skip
    val_loss = [scores["val_loss"] for scores in validation if "val_loss" in scores]
    if val_loss:
        steps = np.arange(1, len(val_loss) + 1)
        axes.plot(steps, val_loss, marker="s", markersize=3, label="validation loss")
    axes.set_title("Loss")
    axes.set_xlabel(unit)
    axes.set_ylabel("cross-entropy (training: + L2 penalty)")
    axes.grid(alpha=0.3)
    if loss_curve or val_loss:
        axes.legend()


def _draw_accuracy(axes: Axes, validation: list[dict], unit: str) -> None:
    accuracy = [scores["val_accuracy"] for scores in validation]
    steps = np.arange(1, len(accuracy) + 1)
    axes.plot(steps, accuracy, marker="o", markersize=3, color="tab:green")
    axes.set_title("Validation accuracy")
    axes.set_xlabel(unit)
    axes.set_ylabel("accuracy")
    axes.grid(alpha=0.3)


def _draw_confusion(
    figure: Figure, axes: Axes, matrix: np.ndarray, classes: np.ndarray, accuracy: float | None
) -> None:
    n_classes = matrix.shape[0]
    totals = matrix.sum(axis=1, keepdims=True)
    # Shares of each true class, so that rare and common classes read on the same scale.
    shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    if n_classes <= MAX_ANNOTATED_CLASSES:
        for true_class in range(n_classes):
            for predicted in range(n_classes):
                count = matrix[true_class, predicted]
                axes.text(
                    predicted, true_class, f"{count:.4g}", ha="center", va="center", fontsize=8,
                    color="white" if shares[true_class, predicted] > 0.5 else "black",
                )  # fmt: skip
    if n_classes <= MAX_LABELLED_CLASSES:
        labels = [_short(label) for label in classes]
        axes.set_xticks(range(n_classes), labels, rotation=90 if n_classes > 8 else 45)
        axes.set_yticks(range(n_classes), labels)
    title = "Confusion matrix"
    if accuracy is not None:
        title += f" (accuracy {accuracy:.2%})"
    axes.set_title(title)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")


def _check_out(out: str | os.PathLike) -> str:
    path = os.fspath(out)
    if not path.lower().endswith(".png"):
        raise ValueError(f"out must name a .png file, got {path!r}; e.g. 'curves.png'.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"cannot write {path!r}: the folder {folder!r} does not exist; create it first."
        )
    return path


def plot_training(
    model: Any, *, confusion: Any = None, out: str | os.PathLike | None = None
) -> Figure:
    """Draw the training curves of ``model`` and, optionally, a confusion matrix.

    Panels, left to right: the training objective per iteration (L-BFGS) or epoch (sgd, adam)
    with the validation loss when ``early_stopping`` recorded one; the validation accuracy when
    recorded; the confusion matrix when ``confusion`` is given, coloured by the share of each
    true class and, up to 20 classes, with the counts written in. Up to 40 classes the axes
    name the classes; beyond, they number them by position in ``model.classes_``.

    Parameters
    ----------
    model : SoftmaxRegression
        A fitted or loaded model: ``loss_curve_``, ``validation_scores_`` and ``classes_`` are
        read.
    confusion : dict or array-like of shape (n_classes, n_classes), optional
        The report of :func:`dsoftmax.evaluation.evaluate_model` (its ``confusion_matrix`` and
        ``accuracy``), or the matrix itself: rows are true classes, columns predicted ones, in
        the order of ``model.classes_``.
    out : str or path, optional
        Where to save the figure as a PNG (the name must end in ``.png``); its folder must
        exist.

    Returns
    -------
    matplotlib.figure.Figure
        Drawn on the Agg canvas, whether or not it was saved.

    Raises
    ------
    ImportError
        When matplotlib is not installed (``pip install 'dsoftmax[plot]'``).
    ValueError
        When the model is not fitted, the confusion matrix does not match its classes, or
        ``out`` is not a ``.png`` path in an existing folder.

    Examples
    --------
    >>> report = evaluate_model(model, open_dataset("test.zarr"))  # doctest: +SKIP
    >>> plot_training(model, confusion=report, out="curves.png")  # doctest: +SKIP
    """
    loss_curve, validation = _fitted_curves(model)
    classes = np.asarray(model.classes_)
    matrix, accuracy = (
        _confusion_matrix(confusion, len(classes)) if confusion is not None else (None, None)
    )
    path = None if out is None else _check_out(out)
    unit = "iteration" if getattr(model, "solver", None) == "lbfgs" else "epoch"
    with_accuracy = any("val_accuracy" in scores for scores in validation)
    n_panels = 1 + with_accuracy + (matrix is not None)
    figure = _new_figure(n_panels)
    panels = figure.subplots(1, n_panels, squeeze=False)[0]
    _draw_loss(panels[0], loss_curve, validation, unit)
    if with_accuracy:
        _draw_accuracy(panels[1], [s for s in validation if "val_accuracy" in s], unit)
    if matrix is not None:
        _draw_confusion(figure, panels[-1], matrix, classes, accuracy)
    if path is not None:
        figure.savefig(path, format="png")
    return figure
