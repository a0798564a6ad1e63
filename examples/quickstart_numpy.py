"""Fit dsoftmax in memory on scikit-learn's digits and compare with LogisticRegression.

Both minimize the same function once scikit-learn's ``C`` is converted to dsoftmax's ``l2``
(``λ = 1 / (2·C·n_samples)``), so they should reach the same objective and accuracy. NumPy input
with no Dask client around is fitted in this process: no cluster starts.

    python examples/quickstart_numpy.py [--C 1.0] [--seed 0]
"""

import argparse

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from dsoftmax import SoftmaxRegression, l2_from_sklearn_C
from dsoftmax.objective import Params, loss_and_grad

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--C", type=float, default=1.0, help="scikit-learn's inverse penalty")
parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split")
args = parser.parse_args()

X, y = load_digits(return_X_y=True)
X = X / 16.0  # pixel values 0..16 to [0, 1]
X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=0.25, random_state=args.seed, stratify=y
)
l2 = l2_from_sklearn_C(args.C, n_samples=len(X_train))
print(f"digits: {len(X_train)} training and {len(X_test)} test rows, C={args.C} -> l2={l2:.3g}")

ours = SoftmaxRegression(l2=l2, tol=1e-6, max_iter=500).fit(X_train, y_train)
theirs = LogisticRegression(C=args.C, tol=1e-8, max_iter=5000).fit(X_train, y_train)


def objective(model) -> float:
    """dsoftmax's objective at a model's weights (labels 0..9 are their own class ids)."""
    loss, _ = loss_and_grad(Params(model.coef_, model.intercept_), X_train, y_train, l2)
    return loss


for name, model in (("dsoftmax", ours), ("scikit-learn", theirs)):
    print(
        f"{name:>12}: objective {objective(model):.8f}, "
        f"test accuracy {model.score(X_test, y_test):.4f}"
    )
gap = abs(objective(ours) - objective(theirs)) / objective(theirs)
agreement = np.mean(ours.predict(X_test) == theirs.predict(X_test))
print(
    f"result: accuracy={ours.score(X_test, y_test):.4f} "
    f"sklearn_accuracy={theirs.score(X_test, y_test):.4f} "
    f"objective_relative_gap={gap:.2e} prediction_agreement={agreement:.4f}"
)
