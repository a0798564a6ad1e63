"""Tests of the training plots: what each panel draws, the PNG written (opened and measured),
refusals, the missing-matplotlib message, and ``dsoftmax plot`` with and without ``--data``."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import confusion_matrix

from dsoftmax import SoftmaxRegression, write_dataset
from dsoftmax.evaluation import evaluate_model
from dsoftmax.plotting import (
    DPI,
    MAX_CONFUSED_PAIRS,
    MAX_LABEL_CHARS,
    MAX_MATRIX_CLASSES,
    PANEL_SIZE,
    plot_training,
)

CLI = (sys.executable, "-m", "dsoftmax")
COMMAND_TIMEOUT = 180.0
DIGIT_NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                        "nine"])  # fmt: skip
PANEL_PIXELS = (int(PANEL_SIZE[1] * DPI), int(PANEL_SIZE[0] * DPI))  # (height, width)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return (X / 16).astype(np.float32), DIGIT_NAMES[y]


@pytest.fixture(scope="module")
def sgd_model(digits) -> SoftmaxRegression:
    """Fifteen epochs of SGD with early stopping on: a loss and a validation curve."""
    X, labels = digits
    model = SoftmaxRegression(
        solver="sgd", l2=1e-4, learning_rate=0.1, batch_size=128, max_iter=15, tol=0.0,
        early_stopping=True, n_iter_no_change=50, random_state=0,
    )  # fmt: skip
    with pytest.warns(ConvergenceWarning):  # it runs every epoch, as wanted here
        return model.fit(X[:1500], labels[:1500])


@pytest.fixture(scope="module")
def holdout_dataset(digits, tmp_path_factory):
    X, labels = digits
    path = tmp_path_factory.mktemp("data") / "test.zarr"
    return write_dataset(path, X[1500:], labels[1500:], chunk_rows=100)


def opened(path: Path) -> np.ndarray:
    """The PNG as an (height, width, channels) array of floats in [0, 1]."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def assert_drawn(image: np.ndarray) -> None:
    """Not blank: a white background with dark lines and coloured areas on it."""
    rgb = image[..., :3]
    assert rgb.var() > 0.005
    assert (rgb.min(axis=-1) < 0.3).mean() > 0.002  # text, axes and lines
    assert (rgb.min(axis=-1) > 0.95).mean() > 0.3  # a background, not noise


def test_plot_draws_loss_accuracy_and_confusion_panels(sgd_model, holdout_dataset, tmp_path):
    report = evaluate_model(sgd_model, holdout_dataset)

    figure = plot_training(sgd_model, confusion=report, out=tmp_path / "curves.png")

    loss, accuracy, confusion, _colorbar = figure.axes
    np.testing.assert_allclose(loss.lines[0].get_ydata(), sgd_model.loss_curve_)
    val_loss = [scores["val_loss"] for scores in sgd_model.validation_scores_]
    np.testing.assert_allclose(loss.lines[1].get_ydata(), val_loss)
    val_accuracy = [scores["val_accuracy"] for scores in sgd_model.validation_scores_]
    np.testing.assert_allclose(accuracy.lines[0].get_ydata(), val_accuracy)
    assert loss.get_xlabel() == accuracy.get_xlabel() == "epoch"
    # Cells coloured by the share of the true class, counts written in, labels on the axes.
    matrix = np.asarray(report["confusion_matrix"])
    shares = confusion.images[0].get_array()
    np.testing.assert_allclose(shares, matrix / matrix.sum(axis=1, keepdims=True))
    assert [text.get_text() for text in confusion.texts][:3] == [
        f"{count:.4g}" for count in matrix[0, :3]
    ]
    assert [label.get_text() for label in confusion.get_yticklabels()] == list(sgd_model.classes_)
    assert f"accuracy {report['accuracy']:.2%}" in confusion.get_title()

    image = opened(tmp_path / "curves.png")
    assert image.shape[:2] == (PANEL_PIXELS[0], 3 * PANEL_PIXELS[1])
    assert_drawn(image)


def test_plot_of_an_lbfgs_model_has_one_panel_per_iteration(digits, tmp_path):
    X, labels = digits
    model = SoftmaxRegression(solver="lbfgs", l2=1e-2).fit(X[:600], labels[:600])

    figure = plot_training(model, out=str(tmp_path / "lbfgs.png"))

    (axes,) = figure.axes
    assert axes.get_xlabel() == "iteration"
    np.testing.assert_allclose(axes.lines[0].get_xdata(), np.arange(1, model.n_iter_ + 1))
    image = opened(tmp_path / "lbfgs.png")
    assert image.shape[:2] == PANEL_PIXELS
    assert_drawn(image)


def test_plot_takes_a_bare_matrix_and_writes_no_counts_for_many_classes(tmp_path):
    rng = np.random.default_rng(0)
    n_classes = MAX_MATRIX_CLASSES - 2  # still a matrix, with cells too small for numbers
    X = rng.standard_normal((600, 4)).astype(np.float32)
    labels = np.arange(600) % n_classes
    model = SoftmaxRegression(solver="lbfgs", l2=1e-2, max_iter=200).fit(X, labels)
    matrix = rng.integers(0, 5, (n_classes, n_classes))
    matrix[3] = 0  # a class absent from the evaluation: its row stays at zero

    figure = plot_training(model, confusion=matrix)

    confusion = figure.axes[1]
    assert len(confusion.texts) == 0  # 2304 numbers would be unreadable
    assert confusion.get_xticklabels() == [] or len(confusion.get_xticks()) < n_classes
    assert np.all(confusion.images[0].get_array()[3] == 0)
    assert "accuracy" not in confusion.get_title()


def fitted_on(names: list[str]) -> SoftmaxRegression:
    """A model whose ``classes_`` are ``names`` (in sorted order), fitted on noise."""
    rng = np.random.default_rng(1)
    n_samples = 3 * len(names)
    X = rng.standard_normal((n_samples, 4)).astype(np.float32)
    labels = np.asarray(names)[np.arange(n_samples) % len(names)]
    return SoftmaxRegression(solver="lbfgs", l2=1.0).fit(X, labels)


def long_names(n_classes: int) -> list[str]:
    return [f"{i:03d}_a_class_with_a_long_name" for i in range(n_classes)]


def cut(name: str) -> str:
    return name[: MAX_LABEL_CHARS - 1] + "…"


def test_lbfgs_loss_is_its_height_above_the_lowest_on_a_log_axis(digits):
    X, labels = digits
    model = SoftmaxRegression(solver="lbfgs", l2=1e-2).fit(X[:600], labels[:600])

    (axes,) = plot_training(model).axes

    assert axes.get_yscale() == "log"
    gaps = np.asarray(model.loss_curve_) - min(model.loss_curve_)
    floor = 0.1 * gaps[gaps > 0].min()
    curve, star = axes.lines
    np.testing.assert_allclose(curve.get_ydata(), np.maximum(gaps, floor))
    # A linear axis would squash all this into a flat line: the run spans decades.
    assert curve.get_ydata().max() / curve.get_ydata().min() > 1e3
    best = int(np.argmin(model.loss_curve_))
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([best + 1], [floor])
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend[1].startswith(f"J_best = {model.loss_curve_[best]:.6g} (iteration {best + 1})")
    assert axes.get_ylabel().startswith("J − J_best")


def test_sgd_loss_marks_the_epoch_of_the_lowest_validation_loss(sgd_model):
    loss, accuracy = plot_training(sgd_model).axes

    assert loss.get_yscale() == "log"
    training, validation, best_line = loss.lines
    assert training.get_linestyle() != validation.get_linestyle()
    val_loss = [scores["val_loss"] for scores in sgd_model.validation_scores_]
    best = int(np.argmin(val_loss)) + 1
    assert list(best_line.get_xdata()) == [best, best]
    assert [line.get_xdata()[0] for line in accuracy.lines[1:]] == [best]
    assert [text.get_text() for text in loss.get_legend().get_texts()] == [
        "training objective",
        "validation loss",
        f"lowest validation loss: {min(val_loss):.4g} (epoch {best})",
    ]
    # The second half of the validation curve, magnified on a linear scale.
    (inset,) = loss.child_axes
    first = len(val_loss) // 2 + 1
    np.testing.assert_allclose(inset.lines[0].get_xdata(), np.arange(first, len(val_loss) + 1))
    np.testing.assert_allclose(inset.lines[0].get_ydata(), val_loss[first - 1 :])
    assert inset.get_yscale() == "linear"


def assert_inside_their_cells(axes, n_classes: int) -> None:
    for index, text in enumerate(axes.texts):
        row, column = divmod(index, n_classes)
        cell = axes.transData.transform([(column - 0.5, row - 0.5), (column + 0.5, row + 0.5)])
        box = text.get_window_extent()
        assert cell[:, 0].min() < box.x0 < box.x1 < cell[:, 0].max(), text.get_text()
        assert cell[:, 1].min() < box.y0 < box.y1 < cell[:, 1].max(), text.get_text()


def test_counts_are_written_inside_their_cells_at_10_classes(sgd_model, digits):
    X, labels = digits
    matrix = confusion_matrix(labels[1500:], sgd_model.predict(X[1500:]),
                              labels=sgd_model.classes_)  # fmt: skip

    figure = plot_training(sgd_model, confusion=matrix)
    figure.draw_without_rendering()

    axes = figure.axes[2]
    assert [text.get_text() for text in axes.texts] == [f"{count:.4g}" for count in matrix.ravel()]
    assert_inside_their_cells(axes, 10)


@pytest.mark.parametrize(
    ("n_classes", "largest", "written"), [(20, 999, True), (20, 99999, False), (30, 9, False)]
)
def test_counts_are_written_only_where_they_fit(n_classes, largest, written):
    model = fitted_on([f"c{i:02d}" for i in range(n_classes)])
    matrix = np.random.default_rng(3).integers(0, largest, (n_classes, n_classes))
    matrix[0, 0] = largest

    figure = plot_training(model, confusion=matrix)
    figure.draw_without_rendering()

    axes = figure.axes[1]
    assert len(axes.texts) == (n_classes**2 if written else 0)  # all or none
    assert_inside_their_cells(axes, n_classes)
    assert all(text.get_fontsize() >= 6 for text in axes.texts)


@pytest.mark.parametrize("n_classes", [10, 20, 45])
def test_class_labels_are_cut_and_never_overlap(n_classes):
    model = fitted_on(long_names(n_classes))
    matrix = np.random.default_rng(2).integers(0, 50, (n_classes, n_classes))

    figure = plot_training(model, confusion=matrix)
    figure.draw_without_rendering()

    axes = figure.axes[1]
    for ticks, labels in [(axes.get_xticks(), axes.get_xticklabels()),
                          (axes.get_yticks(), axes.get_yticklabels())]:  # fmt: skip
        # Each label names the class at its position, cut to MAX_LABEL_CHARS with an ellipsis.
        assert [label.get_text() for label in labels] == [
            cut(model.classes_[int(tick)]) for tick in ticks
        ]
    y_boxes = [label.get_window_extent() for label in axes.get_yticklabels()]
    assert not any(a.overlaps(b) for a, b in itertools.pairwise(y_boxes))
    # Slanted labels have overlapping bounding boxes; their lines must stand a line apart.
    x_labels = axes.get_xticklabels()
    rotation = np.deg2rad(x_labels[0].get_rotation())
    step = abs(np.diff(axes.transData.transform([(t, 0) for t in axes.get_xticks()])[:, 0]))
    line_height = x_labels[0].get_fontsize() * figure.dpi / 72
    assert np.all(step * np.sin(rotation) >= line_height)
    if n_classes > 20:  # too many to name all: every n-th
        assert len(axes.get_yticks()) < n_classes


def test_many_classes_list_the_most_confused_pairs_instead_of_a_matrix():
    names = long_names(200)
    model = fitted_on(names)
    matrix = np.diag(np.full(200, 20))
    matrix[5, 17] = 9  # the most rows: first
    matrix[2, 2], matrix[2, 150] = 40, 7  # 7 of 47 rows
    matrix[100, 3] = 7  # 7 of 27 rows: a larger share, before (2, 150)
    matrix[7, 7], matrix[7, 8] = 0, 1  # the whole class, but one row: after them
    matrix[np.arange(30, 60), np.arange(31, 61)] = 1  # more pairs than are listed

    figure = plot_training(model, confusion={"confusion_matrix": matrix, "accuracy": 0.9})

    axes = figure.axes[1]
    assert len(figure.axes) == 2 and not axes.images  # no matrix, no colour bar
    assert axes.get_title() == "Top confusions, 200 classes (accuracy 90.00%)"
    pairs = [label.get_text() for label in axes.get_yticklabels()]
    assert len(pairs) == MAX_CONFUSED_PAIRS
    assert pairs[:4] == [
        f"{cut(names[5])} → {cut(names[17])}",
        f"{cut(names[100])} → {cut(names[3])}",
        f"{cut(names[2])} → {cut(names[150])}",
        f"{cut(names[7])} → {cut(names[8])}",
    ]
    assert [bar.get_width() for bar in axes.patches][:4] == [9, 7, 7, 1]
    assert [text.get_text() for text in axes.texts][:4] == [
        "9 (31.0%)", "7 (25.9%)", "7 (14.9%)", "1 (100.0%)"
    ]  # fmt: skip
    assert len(axes.texts) == MAX_CONFUSED_PAIRS  # those labels only, no cell is written


@pytest.mark.parametrize(
    ("n_classes", "draws_matrix"), [(MAX_MATRIX_CLASSES, True), (MAX_MATRIX_CLASSES + 1, False)]
)
def test_the_matrix_gives_way_to_the_pairs_above_the_limit(n_classes, draws_matrix):
    model = fitted_on([f"c{i:02d}" for i in range(n_classes)])
    matrix = np.ones((n_classes, n_classes))

    confusion = plot_training(model, confusion=matrix).axes[1]

    assert bool(confusion.images) == draws_matrix
    title = "Confusion matrix" if draws_matrix else "Top confusions"
    assert confusion.get_title().startswith(title)


def test_an_evaluation_without_errors_says_so_in_the_pairs_panel():
    model = fitted_on(long_names(MAX_MATRIX_CLASSES + 1))

    axes = plot_training(model, confusion=np.eye(MAX_MATRIX_CLASSES + 1)).axes[1]

    assert not axes.patches
    assert [text.get_text() for text in axes.texts] == [
        "no confusion: every row is on the diagonal"
    ]


@pytest.mark.parametrize(
    ("confusion", "error", "match"),
    [
        (np.ones((3, 3)), ValueError, r"has shape \(3, 3\) but the model has 10 classes"),
        (-np.ones((10, 10)), ValueError, "negative or non-finite counts"),
        ({"accuracy": 0.5}, ValueError, r"mapping without 'confusion_matrix' \(keys: "),
        ("matrix", TypeError, r"must be an evaluation report or a numeric matrix, got str"),
        ([[object()]], TypeError, "confusion must be an evaluation report or a numeric matrix"),
    ],
)
def test_plot_refuses_a_confusion_matrix_that_does_not_fit(sgd_model, confusion, error, match):
    with pytest.raises(error, match=match):
        plot_training(sgd_model, confusion=confusion)


def test_plot_refuses_unfitted_models_and_bad_paths(sgd_model, tmp_path):
    with pytest.raises(ValueError, match=r"SoftmaxRegression is not fitted: .* Call fit"):
        plot_training(SoftmaxRegression())
    with pytest.raises(ValueError, match=r"out must name a .png file, got '.*curves.jpg'"):
        plot_training(sgd_model, out=tmp_path / "curves.jpg")
    with pytest.raises(FileNotFoundError, match=r"the folder '.*missing' does not exist"):
        plot_training(sgd_model, out=tmp_path / "missing" / "curves.png")
    assert list(tmp_path.iterdir()) == []


def test_plot_without_matplotlib_says_how_to_install_it(sgd_model, monkeypatch):
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"needs matplotlib.*pip install 'dsoftmax\[plot\]'"):
        plot_training(sgd_model)


def test_cli_plot_writes_the_png_with_and_without_data(
    sgd_model, holdout_dataset, tmp_path, run_cli_here
):
    sgd_model.save(str(tmp_path / "model"))
    model = tmp_path / "model"
    # With --data the command starts a local cluster: a process of its own, as users run it.
    with_data = subprocess.Popen(
        [*CLI, "plot", str(model), "--out", str(tmp_path / "confusion.png"), "--data",
         holdout_dataset.url],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        code, stdout, stderr = run_cli_here("plot", model, "--out", tmp_path / "curves.png")
    finally:
        data_stdout, data_stderr = with_data.communicate(timeout=COMMAND_TIMEOUT)

    assert (code, stdout, stderr) == (
        0,
        f"wrote training curves to {tmp_path / 'curves.png'}\n",
        "",
    )
    assert (with_data.returncode, data_stderr) == (0, ""), data_stderr
    assert data_stdout == (
        f"wrote training curves, confusion matrix on {holdout_dataset.url} to "
        f"{tmp_path / 'confusion.png'}\n"
    )
    curves, confusion = opened(tmp_path / "curves.png"), opened(tmp_path / "confusion.png")
    assert curves.shape[:2] == (PANEL_PIXELS[0], 2 * PANEL_PIXELS[1])
    assert confusion.shape[:2] == (PANEL_PIXELS[0], 3 * PANEL_PIXELS[1])
    assert_drawn(curves)
    assert_drawn(confusion)


def test_cli_plot_errors_are_one_line(sgd_model, tmp_path, run_cli_here):
    sgd_model.save(str(tmp_path / "model"))
    bad_out = run_cli_here("plot", tmp_path / "model", "--out", tmp_path / "a.jpg")
    no_model = run_cli_here("plot", tmp_path / "none", "--out", tmp_path / "a.png")
    assert bad_out == (
        1,
        "",
        f"dsoftmax: error: out must name a .png file, got '{tmp_path / 'a.jpg'}'; e.g. "
        "'curves.png'.\n",
    )
    code, stdout, stderr = no_model
    assert (code, stdout) == (1, "")
    assert stderr.startswith("dsoftmax: error: ") and stderr.count("\n") == 1
    assert not (tmp_path / "a.png").exists()


def test_a_narrow_loss_axis_labels_every_tick_differently(digits):
    X, labels = digits
    model = SoftmaxRegression(solver="sgd", l2=1e-4, learning_rate=1e-5, batch_size=256,
                              max_iter=6, tol=0.0, random_state=0)  # fmt: skip
    with pytest.warns(ConvergenceWarning):  # a tiny step: the loss barely moves, as wanted
        model.fit(X[:600], labels[:600])
    assert max(model.loss_curve_) < 1.01 * min(model.loss_curve_)
    figure = plot_training(model)
    figure.canvas.draw()
    (axes,) = figure.axes
    shown = [label.get_text() for label in axes.get_yticklabels() if label.get_text()]
    assert len(shown) >= 2
    assert len(set(shown)) == len(shown), shown


def test_a_one_iteration_refit_is_written_out_and_a_grid_without_refit_has_no_loss_panel(digits):
    from dsoftmax import SoftmaxRegressionCV

    X, labels = digits
    one = SoftmaxRegression(solver="lbfgs", max_iter=1)
    with pytest.warns(UserWarning):  # stopped at max_iter
        one.fit(X[:300], labels[:300])
    (axes,) = plot_training(one).axes
    texts = [text.get_text() for text in axes.texts]
    assert texts == [f"one iteration: training objective {one.loss_curve_[0]:.6g}"]
    assert axes.get_ylim()[0] == 0.0

    grid = SoftmaxRegressionCV(l2s=[1e-3, 1e-2], cv=2, refit=False, random_state=0)
    grid.fit(X[:300], labels[:300])
    panels = plot_training(grid).axes
    assert [panel.get_xscale() for panel in panels] == ["log"]  # the validation curve alone
    assert not any("no loss curve" in text.get_text() for p in panels for text in p.texts)
