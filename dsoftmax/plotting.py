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

__all__ = ["check_output_path", "plot_training"]

#: Beyond this many classes the confusion panel lists the most confused pairs instead of
#: drawing the matrix, whose cells and labels would be too small to read.
MAX_MATRIX_CLASSES = 50
#: Pairs (true class → predicted class) listed when the matrix is not drawn.
MAX_CONFUSED_PAIRS = 20
#: Longest class label shown; longer ones are cut with an ellipsis.
MAX_LABEL_CHARS = 16
#: Font sizes in points: class labels, and the range of the counts written in the cells. Counts
#: are written only where they fit in every cell at no less than the smallest size.
LABEL_FONT_SIZE = 7.0
CELL_FONT_SIZES = (6.0, 9.0)
PANEL_SIZE = (5.5, 4.5)  # inches
DPI = 100
POINTS_PER_INCH = 72.0
#: Tick labels placed at most this many label heights apart, measured along the axis.
LABEL_SPACING = 1.3
#: Width of a digit relative to the font size (DejaVu Sans, the default font).
DIGIT_WIDTH = 0.64
#: Shortest sgd/adam run whose second half is magnified in an inset of the loss panel.
MIN_INSET_EPOCHS = 6
#: The vertical line at the epoch of the lowest validation loss, in every panel.
BEST_EPOCH_LINE = {"color": "tab:red", "linestyle": ":", "linewidth": 1.2}


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


def _row_shares(matrix: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix divided by its total: the share of each true class given
    to each predicted class (the diagonal is the recall). Rows of classes absent from the
    evaluation stay at zero.

    Parameters
    ----------
    matrix : ndarray of shape (n_classes, n_classes)
        Counts; rows are true classes, columns predicted ones.

    Returns
    -------
    ndarray of shape (n_classes, n_classes)
    """
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=np.float64), where=totals > 0)


def _most_confused_pairs(matrix: np.ndarray, n_pairs: int) -> list[tuple[int, int]]:
    """The off-diagonal cells with the most rows, most first.

    Counts rank the pairs, not row shares: one row of a class seen twice would otherwise
    outrank a confusion seen a hundred times. Ties are broken by the larger share, then by
    position (row-major), so the order is deterministic. Empty cells are never listed.

    Parameters
    ----------
    matrix : ndarray of shape (n_classes, n_classes)
        Counts; rows are true classes, columns predicted ones.
    n_pairs : int
        Most pairs returned.

    Returns
    -------
    list of (int, int)
        ``(true class, predicted class)`` positions, at most ``n_pairs`` of them.
    """
    shares = _row_shares(matrix)
    counts = matrix.copy()
    np.fill_diagonal(counts, 0.0)
    # lexsort sorts by its last key first: count, then share, both descending; then position.
    order = np.lexsort((np.arange(counts.size), -shares.ravel(), -counts.ravel()))
    chosen = [index for index in order[:n_pairs] if counts.flat[index] > 0]
    return [divmod(int(index), matrix.shape[1]) for index in chosen]


def _short(label: Any) -> str:
    text = str(label.item() if isinstance(label, np.generic) else label)
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def _draw_loss(axes: Axes, loss_curve: list[float], validation: list[dict], unit: str) -> None:
    """The training objective (and validation loss) on a log scale, so that the slow end of a
    run stays as visible as its fast start."""
    val_loss = [scores["val_loss"] for scores in validation if "val_loss" in scores]
    gaps = np.asarray(loss_curve) - min(loss_curve, default=0.0)
    _label_steps(axes, unit)
    if unit == "iteration" and not val_loss and np.any(gaps > 0):
        _draw_objective_gap(axes, np.asarray(loss_curve), gaps)
    elif len(loss_curve) == 1 and not val_loss:
        _draw_single_value(axes, loss_curve[0], unit)
    elif loss_curve or val_loss:
        _draw_loss_curves(axes, loss_curve, val_loss)
    else:
        axes.text(0.5, 0.5, "no loss curve recorded", ha="center", va="center",
                  transform=axes.transAxes)  # fmt: skip


def _draw_single_value(axes: Axes, value: float, unit: str) -> None:
    """A run of one iteration or epoch: its objective written out, not a lone dot on an axis
    scaled around it."""
    axes.plot([1], [value], marker="o", markersize=5)
    axes.set_xlim(0.5, 1.5)
    axes.set_xticks([1])
    axes.set_ylim(0.0, 1.25 * value if value > 0 else 1.0)
    axes.text(0.5, 0.6, f"one {unit}: training objective {value:.6g}", ha="center",
              va="center", transform=axes.transAxes)  # fmt: skip
    axes.set_title("Loss")
    axes.set_ylabel("cross-entropy + L2 penalty")


def _label_steps(axes: Axes, unit: str) -> None:
    """Whole iterations or epochs along the x axis, and a light grid."""
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(unit)
    axes.grid(alpha=0.3)


def _draw_objective_gap(axes: Axes, loss_curve: np.ndarray, gaps: np.ndarray) -> None:
    """A monotone run (L-BFGS) as its height above its lowest value, J − J_best, on a log scale:
    the straight line of linear convergence, and where it levels off. The lowest point sits at a
    floor a tenth of the smallest nonzero gap."""
    floor = 0.1 * gaps[gaps > 0].min()
    best = int(np.argmin(loss_curve))
    steps = np.arange(1, len(loss_curve) + 1)
    axes.plot(steps, np.maximum(gaps, floor), marker="o", markersize=3,
              label="training objective − lowest")  # fmt: skip
    label = f"J_best = {loss_curve[best]:.6g} (iteration {best + 1}), at the floor"
    axes.plot(steps[best], floor, linestyle="none", marker="*", markersize=11, color="tab:red",
              label=label)  # fmt: skip
    axes.set_yscale("log")
    axes.legend(fontsize=8)
    axes.set_title("Training objective above its lowest value")
    axes.set_ylabel("J − J_best (cross-entropy + L2 penalty)")


def _draw_loss_curves(axes: Axes, loss_curve: list[float], val_loss: list[float]) -> None:
    """Training and validation losses as they are, on a log scale, with the epoch of the lowest
    validation loss marked (the one early stopping measures its patience from) and the second
    half of the run magnified in an inset, where the two curves level off."""
    curves = [(loss_curve, {"marker": "o", "label": "training objective"})]
    curves.append((val_loss, {"marker": "s", "linestyle": "--", "color": "tab:orange",
                              "label": "validation loss"}))  # fmt: skip
    curves = [(values, style) for values, style in curves if values]
    for values, style in curves:
        axes.plot(np.arange(1, len(values) + 1), values, markersize=3, **style)
    if val_loss:
        best = int(np.argmin(val_loss))
        label = f"lowest validation loss: {val_loss[best]:.4g} (epoch {best + 1})"
        axes.axvline(best + 1, **BEST_EPOCH_LINE, label=label)
    axes.set_yscale("log")
    _plain_log_labels(axes)
    axes.legend(fontsize=8, loc="upper right")
    axes.set_title("Loss")
    axes.set_ylabel("cross-entropy (training: + L2 penalty)")
    # The validation loss, when there is one, is the curve early stopping watches.
    values, style = curves[-1]
    if len(values) >= MIN_INSET_EPOCHS:
        _draw_tail_inset(axes, values, style, int(np.argmin(val_loss)) if val_loss else None)


def _plain_log_labels(axes: Axes) -> None:
    """On a log axis spanning less than a decade, five evenly spaced plain numbers ("1.2", not
    "1.2×10⁰"): the default puts no major tick there, or a label on every minor one."""
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter, StrMethodFormatter

    low, high = axes.get_ylim()
    if high < 10 * low:
        ticks = MaxNLocator(5).tick_values(low, high)
        ticks = ticks[(ticks >= low) & (ticks <= high)]
        axes.yaxis.set_major_locator(FixedLocator(ticks))
        axes.yaxis.set_major_formatter(StrMethodFormatter(_distinct_format(ticks)))
        axes.yaxis.set_minor_formatter(NullFormatter())


def _distinct_format(ticks: np.ndarray) -> str:
    """The shortest ``{x:.Ng}`` format (3 digits at least) that writes every tick differently:
    a narrow range needs more digits than 3 to tell 0.6845 from 0.6850."""
    for digits in range(3, 10):
        if len({f"{tick:.{digits}g}" for tick in ticks}) == len(ticks):
            return f"{{x:.{digits}g}}"
    return "{x:.10g}"


def _draw_tail_inset(axes: Axes, values: list[float], style: dict, best: int | None) -> None:
    """The second half of one curve on a linear scale, in the upper right corner that a fast
    fall leaves empty, with the epoch ``best`` (0-based) marked."""
    from matplotlib.ticker import MaxNLocator

    first = len(values) // 2 + 1
    inset = axes.inset_axes((0.42, 0.38, 0.55, 0.34))
    inset.plot(np.arange(first, len(values) + 1), values[first - 1 :], markersize=2, **style)
    if best is not None and best + 1 >= first:
        inset.axvline(best + 1, **BEST_EPOCH_LINE)
    inset.set_title(f"{style['label']}, epochs {first}–{len(values)}, linear scale", fontsize=7)
    inset.xaxis.set_major_locator(MaxNLocator(integer=True))
    inset.ticklabel_format(axis="y", useOffset=False)  # values, not "+2.302" and differences
    inset.tick_params(labelsize=6)
    inset.grid(alpha=0.3)


def _draw_accuracy(axes: Axes, validation: list[dict], unit: str) -> None:
    accuracy = [scores["val_accuracy"] for scores in validation]
    steps = np.arange(1, len(accuracy) + 1)
    axes.plot(steps, accuracy, marker="o", markersize=3, color="tab:green")
    val_loss = [scores["val_loss"] for scores in validation if "val_loss" in scores]
    if len(val_loss) == len(accuracy):
        axes.axvline(int(np.argmin(val_loss)) + 1, **BEST_EPOCH_LINE)
    axes.set_title("Validation accuracy")
    axes.set_ylabel("accuracy")
    _label_steps(axes, unit)


def _draw_validation_curve(axes: Axes, model: Any) -> None:
    """A grid's held-out score against λ (log scale): each split's thin, their mean with a band
    of one standard deviation, one curve per learning rate, the chosen λ starred."""
    scores = np.asarray(model.scores_, dtype=np.float64)
    l2s = np.asarray(model.l2s_, dtype=np.float64)
    order = np.argsort(l2s)
    cells = scores.reshape(scores.shape[0], len(l2s), -1)
    rates = getattr(model, "learning_rates_", None)
    for k in range(cells.shape[2]):
        values = cells[:, order, k]
        mean, std = values.mean(axis=0), values.std(axis=0)
        label = "mean over splits" if rates is None else f"learning rate {rates[k]:.3g}"
        (line,) = axes.plot(l2s[order], mean, marker="o", markersize=4, label=label)
        axes.fill_between(l2s[order], mean - std, mean + std, alpha=0.15, color=line.get_color())
        for split in values:
            axes.plot(l2s[order], split, linewidth=0.6, alpha=0.35, color=line.get_color())
    summed = cells.sum(axis=0)
    best_l2, best_rate = np.unravel_index(np.nanargmax(summed), summed.shape)
    chosen = float(l2s[best_l2])
    axes.plot(chosen, cells[:, best_l2, best_rate].mean(), linestyle="none", marker="*",
              markersize=13, color="tab:red", label=f"chosen: λ = {chosen:.3g}")  # fmt: skip
    axes.set_xscale("log")
    axes.set_xlabel("λ (l2)")
    axes.set_ylabel(f"held-out {model.scoring} (higher is better)")
    axes.set_title(f"Validation curve, {scores.shape[0]} split{'s' * (scores.shape[0] > 1)}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)


def _title(name: str, accuracy: float | None) -> str:
    return name if accuracy is None else f"{name} (accuracy {accuracy:.2%})"


def _axes_points(figure: Figure, axes: Axes) -> tuple[float, float]:
    """Width and height of ``axes`` in points, once the figure's layout has run."""
    figure.draw_without_rendering()
    box = axes.get_window_extent()
    scale = POINTS_PER_INCH / figure.dpi
    return box.width * scale, box.height * scale


def _draw_confusion(
    figure: Figure, axes: Axes, matrix: np.ndarray, classes: np.ndarray, accuracy: float | None
) -> None:
    """The matrix coloured by row shares (recall per true class), on a square-root colour scale
    so that the few-percent confusions show next to a dark diagonal."""
    from matplotlib.colors import PowerNorm

    n_classes = matrix.shape[0]
    shares = _row_shares(matrix)
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    image = axes.imshow(shares, cmap="Blues", norm=norm, interpolation="nearest")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    colorbar.set_label("share of the true class", fontsize=8)
    colorbar.set_ticks([0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0])
    colorbar.ax.tick_params(labelsize=7)
    labels = [_short(label) for label in classes]
    axes.set_xticks(range(n_classes), labels, rotation=45, ha="right", rotation_mode="anchor",
                    fontsize=LABEL_FONT_SIZE)  # fmt: skip
    axes.set_yticks(range(n_classes), labels, fontsize=LABEL_FONT_SIZE)
    axes.set_title(_title("Confusion matrix", accuracy))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    spacing = LABEL_SPACING * LABEL_FONT_SIZE
    cell = min(_axes_points(figure, axes)) / n_classes
    if cell * np.sin(np.pi / 4) < spacing:  # slanted labels would touch: stand them upright
        axes.tick_params(axis="x", labelrotation=90)
        cell = min(_axes_points(figure, axes)) / n_classes
    step = int(np.ceil(spacing / cell))
    if step > 1:  # every step-th class named, so that no two labels overlap
        shown = range(0, n_classes, step)
        axes.set_xticks(shown, [labels[i] for i in shown])
        axes.set_yticks(shown, [labels[i] for i in shown])
    _write_counts(axes, matrix, norm(shares), cell)


def _write_counts(axes: Axes, matrix: np.ndarray, shading: np.ndarray, cell: float) -> None:
    """Each cell's count, in a font that fits the cell, or none at all when the smallest
    legible size does not fit (a partly written matrix would read as zeros)."""
    texts = [f"{count:.4g}" for count in matrix.ravel()]
    widest = max(len(text) for text in texts)
    size = min(CELL_FONT_SIZES[1], 0.9 * cell / (widest * DIGIT_WIDTH), 0.6 * cell)
    if size < CELL_FONT_SIZES[0]:
        return
    n_classes = matrix.shape[0]
    for index, text in enumerate(texts):
        true_class, predicted = divmod(index, n_classes)
        dark = shading[true_class, predicted] > 0.6
        axes.text(predicted, true_class, text, ha="center", va="center", fontsize=size,
                  color="white" if dark else "black", in_layout=False)  # fmt: skip


def _draw_confused_pairs(
    axes: Axes, matrix: np.ndarray, classes: np.ndarray, accuracy: float | None
) -> None:
    """The most confused pairs as bars of their counts, each with its share of the true class,
    for more classes than a matrix can show."""
    pairs = _most_confused_pairs(matrix, MAX_CONFUSED_PAIRS)
    shares = _row_shares(matrix)
    names = [f"{_short(classes[true])} → {_short(classes[predicted])}" for true, predicted in pairs]
    counts = [matrix[pair] for pair in pairs]
    positions = np.arange(len(pairs))
    bars = axes.barh(positions, counts, color="tab:blue", height=0.7)
    rates = [f"{matrix[pair]:.4g} ({shares[pair]:.1%})" for pair in pairs]
    axes.bar_label(bars, rates, padding=2, fontsize=LABEL_FONT_SIZE)
    axes.set_yticks(positions, names, fontsize=LABEL_FONT_SIZE)
    axes.invert_yaxis()  # the most confused pair on top
    axes.set_xlim(0.0, 1.6 * max(counts, default=1.0))
    axes.set_title(_title(f"Top confusions, {matrix.shape[0]} classes", accuracy))
    axes.set_xlabel("misclassified rows (share of the true class)")
    axes.set_ylabel("true class → predicted class")
    axes.grid(alpha=0.3, axis="x")
    if not pairs:
        axes.text(0.5, 0.5, "no confusion: every row is on the diagonal", ha="center",
                  va="center", transform=axes.transAxes)  # fmt: skip


def check_output_path(out: str | os.PathLike) -> str:
    """``out`` as a path string, after checking that it names a ``.png`` file in an existing
    folder: callers check before a long evaluation whose picture could not be written."""
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

    Panels, left to right:

    - for a cross-validated grid (:class:`dsoftmax.SoftmaxRegressionCV`): the validation curve,
      the held-out score against λ on a log scale, each split's and their mean with a band of
      one standard deviation (a curve per learning rate), the chosen λ starred;
    - the loss (of the refit, for a grid; no panel for a grid without one), on a log scale, or
      the objective written out for a run of one iteration. An L-BFGS run shows the objective's
      height above its lowest value, ``J - J_best``, per iteration, with the lowest point
      starred; an sgd or adam run shows the mean training objective per epoch and, when
      ``early_stopping`` recorded it, the validation loss (dashed) with the epoch of its lowest
      value marked;
    - the validation accuracy per epoch, when recorded;
    - when ``confusion`` is given: up to 50 classes, the matrix coloured by the share of each
      true class (rows sum to 1, on a square-root colour scale), class names on the axes
      (every n-th when they would overlap, cut to 16 characters) and the counts written in
      when they fit the cells; beyond 50 classes, the 20 most confused pairs
      (true → predicted) ranked by that share.

    Parameters
    ----------
    model : SoftmaxRegression
        A fitted or loaded model: ``loss_curve_``, ``validation_scores_``, ``classes_`` and
        ``solver`` are read.
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
    path = None if out is None else check_output_path(out)
    unit = "iteration" if getattr(model, "solver", None) == "lbfgs" else "epoch"
    with_accuracy = any("val_accuracy" in scores for scores in validation)
    grid = int(hasattr(model, "scores_") and hasattr(model, "l2s_"))
    # A grid without a refit has no loss curve: its validation curve is the whole story.
    with_loss = int(bool(loss_curve or validation) or not grid)
    n_panels = grid + with_loss + with_accuracy + (matrix is not None)
    figure = _new_figure(n_panels)
    panels = figure.subplots(1, n_panels, squeeze=False)[0]
    if grid:
        _draw_validation_curve(panels[0], model)
    if with_loss:
        _draw_loss(panels[grid], loss_curve, validation, unit)
    if with_accuracy:
        accuracy_panel = panels[grid + with_loss]
        _draw_accuracy(accuracy_panel, [s for s in validation if "val_accuracy" in s], unit)
    # Last: the matrix sizes its labels and counts by the laid-out figure.
    if matrix is not None and len(classes) > MAX_MATRIX_CLASSES:
        _draw_confused_pairs(panels[-1], matrix, classes, accuracy)
    elif matrix is not None:
        _draw_confusion(figure, panels[-1], matrix, classes, accuracy)
    if path is not None:
        figure.savefig(path, format="png")
    return figure
