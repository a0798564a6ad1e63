"""``SoftmaxRegression``: the scikit-learn face of the trainer.

The fit is :class:`dsoftmax.trainer.SoftmaxTrainer`'s (hyper-parameters and inputs checked, the
data plane picked, :func:`dsoftmax.training.train` run, the fitted attributes set); this class
adds scikit-learn's contract: ``get_params``/``set_params``, tags, ``partial_fit``, predictions
and scores (lazy on Dask arrays and datasets), the export to ``LogisticRegression``, loading.
"""

from __future__ import annotations

import logging
from typing import Any

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from . import prediction
from .data import Dataset
from .data.inputs import prepare_data
from .fitting import resolve_client
from .objective import Params
from .persist import ModelFileError, load_fitted_model
from .trainer import SoftmaxTrainer
from .training import TrainConfig
from .validation import check_hyper_parameters

logger = logging.getLogger("dsoftmax")

__all__ = ["SoftmaxRegression"]


def _uses_minibatches(model: SoftmaxRegression) -> bool:
    if model.solver not in ("sgd", "adam"):
        raise AttributeError(
            f"partial_fit needs solver='sgd' or solver='adam', not {model.solver!r}."
        )
    return True


class SoftmaxRegression(ClassifierMixin, BaseEstimator, SoftmaxTrainer):
    """Multinomial logistic (softmax) regression with L2 penalty, trained data-parallel on Dask.

    Minimizes ``J(W, b) = mean_i(-log softmax(W x_i + b)[y_i]) + l2 · ‖W‖²_F`` (weighted mean with
    sample or class weights); the intercept ``b`` is not penalized. scikit-learn's
    ``LogisticRegression(C=C)`` is the same model with ``l2 = 1 / (2 · C · n_samples)``
    (:func:`dsoftmax.objective.l2_from_sklearn_C`).

    Parameters
    ----------
    l2 : float, default=1e-4
        Penalty strength ``λ`` (≥ 0) on every row of ``coef_``.
    fit_intercept : bool, default=True
        Fit an unpenalized intercept per class (centered: its mean over classes is 0).
    solver : {'lbfgs', 'sgd', 'adam'}, default='lbfgs'
        Full-batch L-BFGS (exact optimum), or minibatch SGD / Adam over seeded epochs.
    batch_size : int, default=8192
        Rows per minibatch (sgd, adam); clipped to the number of training rows.
    learning_rate : float, default=0.01
        Initial step size (sgd, adam).
    lr_schedule : {'constant', 'inverse_scaling', 'step_decay', 'cosine'}, default='constant'
        How the step size changes with the step count t (sgd, adam): ``inverse_scaling`` is
        ``lr / (t + 1)^0.5``, ``step_decay`` divides by 10 at one and two thirds of the run,
        ``cosine`` anneals to 0 over the run.
    momentum : float, default=0.9
        Momentum in ``[0, 1)`` (sgd).
    nesterov : bool, default=False
        Nesterov momentum (sgd, needs ``momentum > 0``).
    max_iter : int, default=100
        Iterations for L-BFGS, epochs for sgd/adam.
    tol : float, default=1e-4
        L-BFGS: stop when the largest gradient component is below ``tol``. sgd/adam: stop when
        the monitored loss has not improved by at least ``tol`` for ``n_iter_no_change`` epochs.
    early_stopping : bool, default=False
        sgd/adam: hold out ``validation_fraction`` of the rows and monitor their loss.
    validation_fraction : float, default=0.1
        Fraction of rows held out when ``early_stopping`` is on, in ``(0, 1)``.
    n_iter_no_change : int, default=5
        Epochs without improvement before sgd/adam stop.
    class_weight : None, 'balanced' or dict, default=None
        Weights per class, multiplied into the sample weights. ``'balanced'`` uses
        ``total weight / (n_classes · weight of the class)`` (row counts without sample
        weights), as scikit-learn does.
    random_state : int, RandomState or None, default=None
        Seed of the minibatch order and of the validation split. The same seed gives the same
        weights on any number of workers, whether the rows are held or streamed.
    shuffle_window : int or None, default=None
        sgd/adam: None shuffles all rows of an epoch together. An int ``W`` cuts the rows into
        windows of ``W`` consecutive rows, visited in a random order, each shuffled within: a
        batch then reads one or two windows, which data streamed from the store needs
        (``hold_data="stream"``, or ``"auto"`` on data larger than half the workers' memory);
        a few chunks' worth, e.g. 262144 rows, is usual. The weights depend on it, never on
        how the rows are held.
    warm_start : bool, default=False
        Start ``fit`` from the previous solution.
    client : distributed.Client, str or None, default=None
        Where to compute: a ``Client``, a scheduler address (``tcp://…`` or ``tls://…``), or None:
        the active Dask client if there is one; otherwise NumPy input is fitted in this process and
        Dask or Zarr input on a local cluster started once per process.
    chunk_rows : int or "auto", default="auto"
        Rows per block for NumPy input, in this process and on a cluster alike. ``"auto"``:
        equal blocks of at most 65,536 rows, as many as a multiple of 4 (else 2) when each
        keeps at least 8,192 rows, so that 2 or 4 workers get equal shares of every pass; the
        size depends on the number of rows only, so results are the same on any cluster.
    hold_data : {"auto", "memory", "stream"}, default="auto"
        Where the rows live during a fit on a cluster. ``"memory"``: read once and kept in the
        workers' memory (fastest; the data must fit). ``"stream"``: every full pass reads the
        chunks from the store and drops them, so any size trains within bounded worker memory;
        sgd/adam then need ``shuffle_window``, so that each chunk is read about once per epoch.
        ``"auto"``: memory when the data takes at most half of the workers' memory limits,
        else stream. Dask arrays already persisted in the cluster's memory are held where they
        are (``"stream"`` is refused for them). Ignored for fits in this process (NumPy input
        without a cluster).
    checkpoint_dir : str or None, default=None
        Directory (or fsspec URL) where ``fit`` writes checkpoints; ``fit(..., resume=True)``
        continues from the newest. A fresh fit refuses a directory that already holds some.
    checkpoint_every : int or None, default=None
        Optimizer steps (sgd, adam) or iterations (L-BFGS) between checkpoints; None: at the
        end of every epoch, or every 10 L-BFGS iterations.
    keep_checkpoints : int, default=3
        Newest checkpoints kept.
    storage_options : dict or None, default=None
        fsspec options for an object-store ``checkpoint_dir``.
    verbose : int, default=0
        ``> 0`` shows a progress bar (on a terminal) and logs one line per iteration/epoch.

    Attributes
    ----------
    coef_ : ndarray of shape (n_classes, n_features)
        float32 when the training features are float32, else float64 (as in scikit-learn).
    intercept_ : ndarray of shape (n_classes,)
        The dtype of ``coef_``.
    classes_ : ndarray of shape (n_classes,)
        Original label values (strings allowed).
    n_features_in_ : int
    n_iter_ : int
        L-BFGS iterations or epochs run (cumulative over ``partial_fit`` calls).
    loss_curve_ : list of float
        Objective after each iteration (L-BFGS) or mean minibatch loss per epoch (sgd/adam).
    validation_scores_ : list of dict
        ``val_loss`` and ``val_accuracy`` per epoch when ``early_stopping`` is on.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from dsoftmax import SoftmaxRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> model = SoftmaxRegression(l2=1e-3).fit(X, y)
    >>> model.score(X, y) > 0.9
    True
    """

    convergence_warning = ConvergenceWarning

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ fitting
    @available_if(_uses_minibatches)
    def partial_fit(
        self, X: Any, y: Any = None, classes: Any = None, sample_weight: Any = None
    ) -> SoftmaxRegression:
        """Run one epoch of ``solver`` ('sgd' or 'adam') over ``X``, continuing the last state.

        ``classes`` (all labels that will ever appear) is required on the first call, as in
        scikit-learn.
        """
        config = self._train_config()
        first_call = not hasattr(self, "coef_")
        if first_call and classes is None and not isinstance(X, Dataset):
            raise ValueError("classes must be passed on the first call to partial_fit.")
        known = None if first_call else self.classes_
        if classes is not None:
            classes = np.asarray(classes)
            if known is not None and not np.array_equal(np.sort(classes), known):
                raise ValueError(
                    f"classes {classes.tolist()} differ from those of the first partial_fit call "
                    f"{known.tolist()}."
                )
            known = classes
        data = prepare_data(X, y, sample_weight, classes=known)
        if not first_call:
            self._check_continuation(data, "partial_fit")
        state = getattr(self, "_optimizer_state", None)
        one_epoch = TrainConfig(**{**config.__dict__, "max_iter": 1})
        self._fit_prepared(
            data,
            one_epoch,
            warm=not first_call,
            optimizer_state=state,
            partial=True,
            epoch=0 if first_call else self.n_iter_,
        )
        return self

    # -------------------------------------------------------------- predicting
    def decision_function(self, X: Any) -> Any:
        """Logits ``X coef_ᵀ + intercept_``; lazy for Dask input.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) with two classes
            With two classes, scikit-learn's convention: the score of ``classes_[1]`` minus
            that of ``classes_[0]`` (positive means ``classes_[1]``).
        """
        logits = self._logits(X)
        if len(self.classes_) != 2:
            return logits
        return logits[:, 1] - logits[:, 0]

    def _logits(self, X: Any) -> Any:
        """Logits of every class, shape (n_samples, n_classes)."""
        check_is_fitted(self)
        return prediction.logits(Params(self.coef_, self.intercept_), self._features(X))

    def predict_log_proba(self, X: Any) -> Any:
        """Log-probabilities, shape (n_samples, n_classes)."""
        return prediction.log_proba(self._logits(X))

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape (n_samples, n_classes); rows sum to 1."""
        return prediction.proba(self._logits(X))

    def predict(self, X: Any) -> Any:
        """Most probable class label per row (original label values)."""
        return prediction.labels_of_logits(self._logits(X), self.classes_)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Mean (weighted) accuracy; a Dataset brings its own labels. Labels the model does
        not know count as wrong predictions."""
        check_is_fitted(self)
        if isinstance(X, Dataset):
            if y is not None:
                raise ValueError("pass either a Dataset or (X, y), not both.")
            y = prediction.dataset_labels(X)
            sample_weight = X.sample_weight if sample_weight is None else sample_weight
        X = self._features(X)
        X, y, sample_weight = prediction.aligned_labels(X, y, sample_weight)
        lazy = prediction.is_lazy(X)
        client = resolve_client(self.client, needs_cluster=False) if lazy else None
        from .evaluation import accuracy

        return accuracy(self, X, y, sample_weight, client=client)

    def _features(self, X: Any) -> Any:
        if isinstance(X, Dataset):
            X = X.X
        if isinstance(X, da.Array):
            return prediction.lazy_features(X, self.n_features_in_)
        from sklearn.utils.validation import validate_data

        return validate_data(
            self, X, reset=False, accept_sparse="csr", dtype=[np.float64, np.float32, np.float16]
        )

    def export_sklearn(self) -> Any:
        """A fitted ``sklearn.linear_model.LogisticRegression`` with the same predictions.

        With more than two classes the coefficients are copied as they are (scikit-learn's
        multinomial model is this one). With two, scikit-learn's binary model scores
        ``classes_[1]`` against ``classes_[0]``: its coefficients are the differences of the two
        rows, which gives the same probabilities. ``C`` keeps scikit-learn's default; refitting
        the exported estimator does not reproduce ``l2`` (use
        :func:`dsoftmax.objective.l2_from_sklearn_C` to convert).
        """
        from sklearn.linear_model import LogisticRegression

        check_is_fitted(self)
        exported = LogisticRegression(fit_intercept=self.fit_intercept)
        exported.classes_ = self.classes_.copy()
        if len(self.classes_) == 2:
            exported.coef_ = (self.coef_[1] - self.coef_[0])[None, :]
            exported.intercept_ = np.array([self.intercept_[1] - self.intercept_[0]])
        else:
            exported.coef_ = self.coef_.copy()
            exported.intercept_ = self.intercept_.copy()
        exported.n_features_in_ = self.n_features_in_
        exported.n_iter_ = np.array([self.n_iter_])
        return exported

    # ------------------------------------------------------------- persistence
    def save(self, path: str, *, storage_options: dict | None = None) -> None:
        """Save the fitted model to ``path`` (directory or fsspec URL) without pickle.

        An existing model there is replaced whole or not at all; concurrent saves to one local
        path take turns. ``client``, ``storage_options`` and ``checkpoint_dir`` are not saved.
        """
        check_is_fitted(self)
        super().save(path, storage_options=storage_options)

    @classmethod
    def load(cls, path: str, *, storage_options: dict | None = None) -> SoftmaxRegression:
        """Load a model saved by :meth:`save`; nothing in the file is executed.

        Only the hyper-parameters of :data:`dsoftmax.persist.LOADABLE_HYPER_PARAMETERS` are
        taken from the file, checked as the constructor's are; anything else in it, or any
        damage, raises :class:`dsoftmax.persist.ModelFileError`.
        """
        fitted = load_fitted_model(path, storage_options=storage_options)
        model = cls(**fitted.params)
        try:
            check_hyper_parameters(model.get_params(deep=False))
        except (TypeError, ValueError) as error:
            raise ModelFileError(
                f"the model file {path!r} holds a refused setting: {error}"
            ) from None
        model.classes_ = fitted.classes
        model.coef_ = fitted.coef
        model.intercept_ = fitted.intercept
        model.n_features_in_ = fitted.coef.shape[1]
        model.n_iter_ = fitted.n_iter
        model.loss_curve_ = fitted.loss_curve
        model.validation_scores_ = fitted.validation_scores
        return model
