"""SoftmaxRegression keeps scikit-learn's estimator contract."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from dsoftmax import SoftmaxRegression


def _expected_failures(estimator: SoftmaxRegression) -> dict[str, str]:
    if estimator.solver == "lbfgs":
        return {}
    return {
        # A weight of 2 is one row seen once with twice the gradient; a repeated row is two rows
        # that land in different minibatches. Both minimize the same objective, but minibatch
        # SGD's iterates differ (scikit-learn's own SGD estimators fail this check too).
        "check_sample_weight_equivalence_on_dense_data": "minibatch iterates depend on rows",
        "check_sample_weight_equivalence_on_sparse_data": "minibatch iterates depend on rows",
    }


@parametrize_with_checks(
    [
        SoftmaxRegression(),
        SoftmaxRegression(solver="adam", batch_size=16, learning_rate=0.05, max_iter=500),
    ],
    expected_failed_checks=_expected_failures,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_pipeline_grid_search_and_cross_validation():
    X, y = load_iris(return_X_y=True)
    pipeline = make_pipeline(StandardScaler(), SoftmaxRegression())
    search = GridSearchCV(pipeline, {"softmaxregression__l2": [1e-4, 1e-1]}, cv=3)
    search.fit(X, y)
    assert search.best_params_["softmaxregression__l2"] == 1e-4
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,) and np.all(scores > 0.85)


def test_binary_decision_function_follows_scikit_learn():
    X, y = load_iris(return_X_y=True)
    mask = y < 2
    model = SoftmaxRegression().fit(X[mask], y[mask])
    scores = model.decision_function(X[mask])
    assert scores.shape == (mask.sum(),)
    np.testing.assert_array_equal(model.predict(X[mask]), model.classes_[(scores > 0).astype(int)])
    assert not hasattr(SoftmaxRegression(), "partial_fit")
    assert hasattr(SoftmaxRegression(solver="adam"), "partial_fit")


def test_export_sklearn_predicts_the_same():
    X, y = load_iris(return_X_y=True)
    for labels in (y, np.where(y == 0, "setosa", "other")):
        model = SoftmaxRegression(l2=1e-2, max_iter=1000).fit(X, labels)
        exported = model.export_sklearn()
        np.testing.assert_array_equal(exported.predict(X), model.predict(X))
        np.testing.assert_allclose(exported.predict_proba(X), model.predict_proba(X), atol=1e-12)
