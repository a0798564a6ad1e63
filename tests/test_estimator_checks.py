"""What the estimators refuse before a fit starts: a warm start or a ``partial_fit`` on data
whose classes or features are not those of the fitted weights, and class weights that are
negative, NaN, infinite, all zero or for labels that are not classes.

The fits are real and in this process. "Before any work" is shown with Dask features whose
blocks raise when computed: a refusal that comes after the load pass would surface as that
error instead.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from dsoftmax import SoftmaxRegression, SoftmaxRegressionCV
from dsoftmax.trainer import SoftmaxTrainer

N_ROWS, N_FEATURES = 300, 4


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray]:
    """300 rows of 4 features with 3 separable-ish classes."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, N_ROWS)
    X = rng.normal(size=(N_ROWS, N_FEATURES)) + np.eye(3, N_FEATURES)[y]
    return X, y


def _unreadable(n_rows: int, n_features: int) -> da.Array:
    """Dask features whose every block raises when computed."""

    def unreadable_block(block: np.ndarray) -> np.ndarray:
        raise RuntimeError("the data was read")

    zeros = da.zeros((n_rows, n_features), chunks=(100, n_features))
    return zeros.map_blocks(unreadable_block, dtype=np.float64)


def _fitted_state(model: SoftmaxRegression) -> dict:
    return {
        "coef_": model.coef_.copy(),
        "intercept_": model.intercept_.copy(),
        "classes_": model.classes_.copy(),
        "n_features_in_": model.n_features_in_,
        "n_iter_": model.n_iter_,
        "loss_curve_": list(model.loss_curve_),
    }


def _assert_unchanged(model: SoftmaxRegression, before: dict) -> None:
    after = _fitted_state(model)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


# ------------------------------------------------------------------------------ warm start
@pytest.mark.parametrize(
    ("first", "second", "pattern"),
    [
        (lambda y: y, lambda y: y % 2, r"classes \[0, 1\], but .* classes \[0, 1, 2\]"),
        (lambda y: y % 2, lambda y: y, r"classes \[0, 1, 2\], but .* classes \[0, 1\]"),
        (lambda y: y, lambda y: y + 1, r"classes \[1, 2, 3\], but .* classes \[0, 1, 2\]"),
    ],
    ids=["3-to-2", "2-to-3", "same-count-other-labels"],
)
def test_a_warm_start_on_other_classes_is_refused_and_changes_nothing(
    problem, tmp_path, first, second, pattern
):
    X, y = problem
    model = SoftmaxRegression(warm_start=True).fit(X, first(y))
    before = _fitted_state(model)
    with pytest.raises(ValueError, match=pattern) as refused:
        model.fit(X, second(y))
    assert "warm_start=False (or a new estimator)" in str(refused.value)
    _assert_unchanged(model, before)
    assert model.predict_proba(X).shape == (N_ROWS, len(before["classes_"]))
    model.save(str(tmp_path / "model"))
    loaded = SoftmaxRegression.load(str(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.classes_, before["classes_"])


def test_a_warm_start_on_other_classes_is_refused_before_the_data_is_read(problem):
    X, y = problem
    model = SoftmaxRegression(warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match=r"classes \[0, 1\], but .* \[0, 1, 2\]"):
        model.fit(_unreadable(N_ROWS, N_FEATURES), y % 2)


def test_a_warm_start_on_other_features_is_refused_and_changes_nothing(problem):
    X, y = problem
    model = SoftmaxRegression(warm_start=True).fit(X, y)
    before = _fitted_state(model)
    with pytest.raises(ValueError, match="X has 3 features, but SoftmaxRegression is expecting 4"):
        model.fit(_unreadable(N_ROWS, 3), y)
    _assert_unchanged(model, before)


def test_a_warm_start_of_a_loaded_model_on_other_classes_is_refused(problem, tmp_path):
    X, y = problem
    SoftmaxRegression(warm_start=True).fit(X, y).save(str(tmp_path / "model"))
    loaded = SoftmaxRegression.load(str(tmp_path / "model"))
    with pytest.raises(ValueError, match=r"classes \[0, 1\], but .* \[0, 1, 2\]"):
        loaded.fit(X, y % 2)


def test_a_warm_start_on_the_same_classes_continues(problem):
    X, y = problem
    labels = np.array(["cat", "dog", "eel"])[y]
    model = SoftmaxRegression(warm_start=True).fit(X, labels)
    model.fit(X[::-1], labels[::-1])  # the same classes, met in another order
    assert model.coef_.shape == (3, N_FEATURES)
    np.testing.assert_array_equal(model.classes_, ["cat", "dog", "eel"])


def test_the_trainer_refuses_a_warm_start_on_other_classes(problem):
    X, y = problem
    trainer = SoftmaxTrainer(warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match=r"classes \[0, 1\], but SoftmaxTrainer .* \[0, 1, 2\]"):
        trainer.fit(X, y % 2)
    assert trainer.coef_.shape == (3, N_FEATURES)


# ----------------------------------------------------------------------------- partial_fit
def test_partial_fit_refuses_labels_and_features_the_model_does_not_know(problem):
    X, y = problem
    model = SoftmaxRegression(solver="sgd", batch_size=100, random_state=0)
    model.partial_fit(X, y, classes=[0, 1, 2])
    before = _fitted_state(model)
    with pytest.raises(ValueError, match=r"label\(s\) \[3\] that are not in classes"):
        model.partial_fit(X, y + 1)
    with pytest.raises(ValueError, match=r"classes \[0, 1\] differ from those"):
        model.partial_fit(X, y % 2, classes=[0, 1])
    with pytest.raises(ValueError, match=r"X has 3 features, but .* expecting 4"):
        model.partial_fit(X[:, :3], y)
    _assert_unchanged(model, before)
    model.partial_fit(X, y % 2)  # a batch may hold some of the classes only
    assert model.coef_.shape == (3, N_FEATURES)


# ---------------------------------------------------------------------------- class_weight
BAD_WEIGHTS = [
    ({0: -1.0}, r"class_weight\[0\] must be in \[0, inf\), got -1\.0"),
    ({1: float("nan")}, r"class_weight\[1\] must be finite, got nan"),
    ({2: float("inf")}, r"class_weight\[2\] must be finite, got inf"),
    ({0: 1.0, 1: -np.inf}, r"class_weight\[1\] must be finite, got -inf"),
]


@pytest.mark.parametrize(("class_weight", "pattern"), BAD_WEIGHTS)
@pytest.mark.parametrize("estimator", [SoftmaxRegression, SoftmaxTrainer])
def test_negative_or_non_finite_class_weights_are_refused(
    problem, estimator, class_weight, pattern
):
    X, y = problem
    with pytest.raises(ValueError, match=pattern):
        estimator(class_weight=class_weight).fit(X, y)
    with pytest.raises(ValueError, match=pattern):
        estimator(class_weight=class_weight).fit(_unreadable(N_ROWS, N_FEATURES), y)


@pytest.mark.parametrize(("class_weight", "pattern"), BAD_WEIGHTS[:2])
def test_the_grid_refuses_negative_or_non_finite_class_weights(problem, class_weight, pattern):
    X, y = problem
    search = SoftmaxRegressionCV(l2s=2, cv=2, class_weight=class_weight)
    with pytest.raises(ValueError, match=pattern):
        search.fit(X, y)


def test_a_class_weight_that_is_not_a_number_is_refused(problem):
    X, y = problem
    with pytest.raises(TypeError, match=r"class_weight\[0\] must be a real number, got 'x'"):
        SoftmaxRegression(class_weight={0: "x"}).fit(X, y)


@pytest.mark.parametrize("estimator", [SoftmaxRegression, SoftmaxTrainer])
def test_class_weights_for_labels_that_are_not_classes_are_refused_before_the_data_is_read(
    problem, estimator
):
    _, y = problem
    with pytest.raises(ValueError, match=r"label 7, which is not among the classes \[0, 1, 2\]"):
        estimator(class_weight={7: 2.0}).fit(_unreadable(N_ROWS, N_FEATURES), y)


def test_the_grid_refuses_class_weights_for_labels_that_are_not_classes(problem):
    X, y = problem
    with pytest.raises(ValueError, match=r"label 7, which is not among the classes"):
        SoftmaxRegressionCV(l2s=2, cv=2, class_weight={7: 2.0}).fit(X, y)


@pytest.mark.parametrize("estimator", [SoftmaxRegression, SoftmaxTrainer])
def test_all_zero_class_weights_are_refused_before_the_data_is_read(problem, estimator):
    X, y = problem
    zero = {0: 0.0, 1: 0, 2: 0.0}
    with pytest.raises(ValueError, match=r"every class of \[0, 1, 2\] a weight of zero"):
        estimator(class_weight=zero).fit(_unreadable(N_ROWS, N_FEATURES), y)
    with pytest.raises(ValueError, match=r"at least one class needs a positive weight"):
        SoftmaxRegressionCV(l2s=2, cv=2, class_weight=zero).fit(X, y)


def test_a_zero_class_weight_drops_the_rows_of_the_class(problem):
    X, y = problem
    dropped = SoftmaxRegression(class_weight={0: 0.0}, tol=1e-8, max_iter=500).fit(X, y)
    weighted = SoftmaxRegression(tol=1e-8, max_iter=500).fit(X, y, sample_weight=y != 0)
    np.testing.assert_allclose(dropped.coef_, weighted.coef_, rtol=1e-6, atol=1e-8)
    assert np.isfinite(dropped.loss_curve_).all() and dropped.loss_curve_[-1] > 0
