"""Tests of the training plots: what each panel draws, the PNG written (opened and measured),
refusals, the missing-matplotlib message, and ``dsoftmax plot`` with and without ``--data``."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning

from dsoftmax import SoftmaxRegression, cli, write_dataset
from dsoftmax.evaluation import evaluate_model
from dsoftmax.plotting import DPI, PANEL_SIZE, plot_training

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
    n_classes = 60
    X = rng.standard_normal((600, 4)).astype(np.float32)
    labels = np.arange(600) % n_classes
    model = SoftmaxRegression(solver="lbfgs", l2=1e-2, max_iter=200).fit(X, labels)
    matrix = rng.integers(0, 5, (n_classes, n_classes))
    matrix[3] = 0  # a class absent from the evaluation: its row stays at zero

    figure = plot_training(model, confusion=matrix)

    confusion = figure.axes[1]
    assert len(confusion.texts) == 0  # 3600 numbers would be unreadable
    assert confusion.get_xticklabels() == [] or len(confusion.get_xticks()) < n_classes
    assert np.all(confusion.images[0].get_array()[3] == 0)
    assert "accuracy" not in confusion.get_title()


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


@pytest.fixture
def run_cli_here(capsys):
    """Run ``dsoftmax`` in this process; returns (code, stdout, stderr). The command
    configures the package's logger: it is put back afterwards."""
    logger = logging.getLogger("dsoftmax")
    saved = (logger.handlers[:], logger.level, logger.propagate)

    def run(*argv: object) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = cli.main([str(arg) for arg in argv])
        finally:
            logger.handlers[:], logger.level, logger.propagate = saved
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


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
