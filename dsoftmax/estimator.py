"""``SoftmaxRegression``: the scikit-learn face of the trainer.

It validates its inputs and hyper-parameters, picks the data plane (in-process for NumPy input
with no Dask client around, the Dask engine otherwise), runs :func:`dsoftmax.training.train` and
stores the fitted attributes. Predictions on Dask arrays or datasets stay lazy.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, replace
from typing import Any

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from . import prediction
from .data import Dataset
from .data.inputs import PreparedData, prepare_data
from .engine import DaskEngine, EngineProblem, LocalEngine
from .fitting import (
    check_streamed_minibatches,
    fits_this_process,
    json_params,
    resolve_client,
)
from .objective import Params
from .persist import (
    Checkpoint,
    CheckpointManager,
    FittedModel,
    ModelFileError,
    check_resumable,
    load_fitted_model,
    save_fitted_model,
)
from .training import CheckpointHook, TrainConfig, TrainingState, train
from .validation import check_hyper_parameters, is_integer, seed_of

logger = logging.getLogger("dsoftmax")

__all__ = ["SoftmaxRegression"]


def _uses_minibatches(model: SoftmaxRegression) -> bool:
    if model.solver not in ("sgd", "adam"):
        raise AttributeError(
            f"partial_fit needs solver='sgd' or solver='adam', not {model.solver!r}."
        )
    return True


class SoftmaxRegression(ClassifierMixin, BaseEstimator):
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

    def __init__(
        self,
        *,
        l2: float = 1e-4,
        fit_intercept: bool = True,
        solver: str = "lbfgs",
        batch_size: int = 8192,
        learning_rate: float = 0.01,
        lr_schedule: str = "constant",
        momentum: float = 0.9,
        nesterov: bool = False,
        max_iter: int = 100,
        tol: float = 1e-4,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        class_weight: Any = None,
        random_state: Any = None,
        shuffle_window: int | None = None,
        warm_start: bool = False,
        client: Any = None,
        chunk_rows: int | str = "auto",
        hold_data: str = "auto",
        checkpoint_dir: str | None = None,
        checkpoint_every: int | None = None,
        keep_checkpoints: int = 3,
        storage_options: dict | None = None,
        verbose: int = 0,
    ) -> None:
        self.l2 = l2
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.momentum = momentum
        self.nesterov = nesterov
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.random_state = random_state
        self.shuffle_window = shuffle_window
        self.warm_start = warm_start
        self.client = client
        self.chunk_rows = chunk_rows
        self.hold_data = hold_data
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.storage_options = storage_options
        self.verbose = verbose

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # ------------------------------------------------------------------ fitting
    def fit(
        self, X: Any, y: Any = None, sample_weight: Any = None, *, resume: bool | int = False
    ) -> SoftmaxRegression:
        """Fit the model.

        Parameters
        ----------
        X : ndarray, dask array of shape (n_samples, n_features), or Dataset
            A :class:`dsoftmax.data.Dataset` brings its own labels (and sample weights).
        y : array-like of shape (n_samples,), optional
            Class labels of any type; or probability rows of shape (n_samples, n_classes).
        sample_weight : array-like of shape (n_samples,), optional
        resume : bool or int, default=False
            True: continue from the newest valid checkpoint in ``checkpoint_dir`` (damaged ones
            are skipped with a warning naming each; start afresh when there is none). A step
            number: continue from the checkpoint of that step. sgd/adam then end with the same
            weights, bit for bit, as an uninterrupted fit; L-BFGS restarts its curvature memory
            from the checkpointed weights.

        Returns
        -------
        self
        """
        config = self._train_config()
        data = prepare_data(X, y, sample_weight, classes=None)
        config, resume_state, hook = self._checkpointing(data, config, resume)
        warm = self.warm_start and hasattr(self, "coef_")
        self._fit_prepared(
            data,
            config,
            warm=warm,
            optimizer_state=None,
            partial=False,
            resume=resume_state,
            checkpoint=hook,
        )
        return self

    def _checkpointing(
        self, data: PreparedData, config: TrainConfig, resume: bool | int
    ) -> tuple[TrainConfig, TrainingState | None, CheckpointHook | None]:
        """The config, the state to resume from and the checkpoint hook of a fit."""
        if (
            resume is not True
            and resume is not False
            and (not is_integer(resume) or resume < 0)
        ):
            raise TypeError(
                f"resume must be True, False or the step number of a checkpoint, got {resume!r}."
            )
        if self.checkpoint_dir is None:
            if resume is not False:
                raise ValueError(
                    f"resume={resume!r} needs checkpoint_dir: where the checkpoints are."
                )
            return config, None, None
        manager = CheckpointManager(
            self.checkpoint_dir,
            keep=int(self.keep_checkpoints),
            storage_options=self.storage_options,
        )
        description = data.describe()
        if resume is False and manager.steps():
            raise ValueError(
                f"checkpoint_dir {self.checkpoint_dir!r} already holds checkpoints (newest: step "
                f"{manager.steps()[-1]}); pass resume=True to continue that fit, or use an empty "
                "directory. Nothing was changed."
            )
        if resume is False:
            found = None
        else:  # the newest valid checkpoint, or the one of the step asked for
            found = manager.latest() if resume is True else manager.load(int(resume))
        if found is not None:
            if self.random_state is None and "random_state" in found.config:
                # The seed of the interrupted fit, drawn at random then, decides the batches.
                config = replace(config, random_state=found.config["random_state"])
            check_resumable(found, description, asdict(config), manager.directory)
            logger.info(
                "dsoftmax: resuming from step %d in %s", found.state.step, manager.directory
            )
        config_record = asdict(config)

        def save(state: TrainingState) -> None:
            path = manager.save(Checkpoint(state, config_record, description))
            logger.info("dsoftmax: checkpoint at step %d: %s", state.step, path)

        every = None if self.checkpoint_every is None else int(self.checkpoint_every)
        return config, None if found is None else found.state, CheckpointHook(save, every)

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

    def _fit_prepared(
        self,
        data: PreparedData,
        config: TrainConfig,
        *,
        warm: bool,
        optimizer_state: Any,
        partial: bool,
        epoch: int = 0,
        resume: TrainingState | None = None,
        checkpoint: CheckpointHook | None = None,
    ) -> None:
        if warm and self.n_features_in_ != data.n_features:
            raise ValueError(
                f"X has {data.n_features} features, but SoftmaxRegression is expecting "
                f"{self.n_features_in_} features as input (from the previous fit); refit with "
                "warm_start=False for new data."
            )
        engine = self._make_engine(data)
        try:
            check_streamed_minibatches(engine, config)
            problem = EngineProblem(engine, config.l2, self._class_weight_vector(data))
            params = self._initial_params(data, warm)
            result = train(
                problem,
                params,
                config,
                float32_data=data.dtype.itemsize <= 4,
                optimizer_state=optimizer_state,
                start_epoch=epoch,
                resume=resume,
                checkpoint=checkpoint,
            )
        finally:
            engine.close()
        self._store_result(data, result, partial=partial, first_epoch=epoch == 0)

    def _store_result(
        self, data: PreparedData, result: Any, *, partial: bool, first_epoch: bool
    ) -> None:
        """Set the fitted attributes; ``partial_fit`` extends the curves instead of resetting.

        ``coef_`` and ``intercept_`` take the dtype of the training features (float32 or
        float64), as scikit-learn's estimators do; the fit's float64 result is kept privately,
        so that a warm start or the next ``partial_fit`` continues from it unrounded.
        """
        accumulate = partial and not first_epoch
        params = result.params
        intercept = params.intercept
        if intercept is not None:
            # Softmax is unchanged by a constant added to every class's intercept: center it.
            intercept = intercept - intercept.mean()
        coef = np.asarray(params.coef, dtype=np.float64)
        intercept = (
            np.zeros(data.n_classes) if intercept is None else np.asarray(intercept, np.float64)
        )
        self._fitted_float64 = Params(coef, intercept)
        dtype = np.float32 if data.dtype.itemsize <= 4 else np.float64
        self.coef_ = coef.astype(dtype, copy=False)
        self.intercept_ = intercept.astype(dtype, copy=False)
        self.classes_ = data.classes
        self.n_features_in_ = data.n_features
        previous = getattr(self, "loss_curve_", []) if accumulate else []
        self.loss_curve_ = list(previous) + list(result.loss_curve)
        previous_scores = getattr(self, "validation_scores_", []) if accumulate else []
        self.validation_scores_ = list(previous_scores) + list(result.validation_curve)
        self.n_iter_ = (getattr(self, "n_iter_", 0) if accumulate else 0) + result.n_iter
        self._optimizer_state = result.optimizer_state
        # partial_fit runs one epoch by design: not converging there is no news.
        if not result.converged and not partial:
            warnings.warn(
                f"{self.solver} failed to converge in max_iter={self.max_iter} "
                f"{'iterations' if self.solver == 'lbfgs' else 'epochs'}"
                f"{': ' + result.message if result.message else ''}; increase max_iter or tol"
                f"{', or standardize the features' if self.solver == 'lbfgs' else ''}.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _make_engine(self, data: PreparedData, folds: np.ndarray | None = None) -> Any:
        """The engine of a fit: in this process for NumPy input, and for Dask input that fits
        this machine's memory, when no Dask client is given or active; else on the cluster.
        The load pass of Dask input also checks the values (``data.stats``). ``folds``: the
        rows' fold codes of a cross-validated grid, held with the blocks."""
        client = resolve_client(self.client, needs_cluster=False)
        if client is None and data.is_lazy:
            arrays = (data.X, data.labels, data.sample_weight)
            fits, reason = fits_this_process(*arrays, self.hold_data)
            logger.info("dsoftmax: %s", reason)
            if not fits:
                client = resolve_client(None, needs_cluster=True)
        if client is None and not data.is_lazy:
            return LocalEngine(
                data.X, data.labels, data.sample_weight,
                chunk_rows=data.block_rows(self.chunk_rows), folds=folds,
            )  # fmt: skip
        X, labels, weights = data.as_dask(data.block_rows(self.chunk_rows))
        if folds is not None:
            folds = da.from_array(folds, chunks=(X.chunks[0],))
        if client is None:
            engine = LocalEngine(X, labels, weights, progress=self.verbose > 0, folds=folds)
        else:
            engine = DaskEngine(
                client, X, labels, weights, hold=self.hold_data, n_classes=data.n_classes,
                folds=folds,
            )  # fmt: skip
            engine.show_load(self.verbose > 0)
        try:
            stats = engine.block_stats(data.n_classes)
            from .data import combine_stats

            data.stats = combine_stats(stats, data.name)
        except BaseException:
            engine.close()
            raise
        return engine

    def _class_weight_vector(self, data: PreparedData) -> np.ndarray | None:
        if self.class_weight is None:
            return None
        if isinstance(self.class_weight, str):
            totals = data.class_totals()
            if np.any(totals <= 0):
                missing = data.classes[totals <= 0].tolist()
                raise ValueError(
                    f"class_weight='balanced' needs every class present; missing {missing}."
                )
            return totals.sum() / (data.n_classes * totals)
        weights = np.ones(data.n_classes)
        for label, weight in self.class_weight.items():
            position = np.flatnonzero(data.classes == label)
            if position.size == 0:
                raise ValueError(
                    f"class_weight names label {label!r}, which is not among the classes "
                    f"{data.classes.tolist()}."
                )
            weights[position[0]] = float(weight)
        return weights

    def _initial_params(self, data: PreparedData, warm: bool) -> Params:
        if warm:
            # A loaded model has only its public weights to start from.
            coef, intercept = getattr(self, "_fitted_float64", (self.coef_, self.intercept_))
            return Params(
                np.array(coef, dtype=np.float64),
                np.array(intercept, dtype=np.float64) if self.fit_intercept else None,
            )
        coef = np.zeros((data.n_classes, data.n_features))
        return Params(coef, np.zeros(data.n_classes) if self.fit_intercept else None)

    def _train_config(self) -> TrainConfig:
        check_hyper_parameters(self.get_params(deep=False))
        return TrainConfig(
            solver=self.solver,
            l2=float(self.l2),
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            batch_size=int(self.batch_size),
            learning_rate=float(self.learning_rate),
            lr_schedule=self.lr_schedule,
            momentum=float(self.momentum),
            nesterov=bool(self.nesterov),
            early_stopping=bool(self.early_stopping),
            validation_fraction=float(self.validation_fraction),
            n_iter_no_change=int(self.n_iter_no_change),
            random_state=seed_of(self.random_state),
            shuffle_window=None if self.shuffle_window is None else int(self.shuffle_window),
            verbose=int(self.verbose),
        )

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
        fitted = FittedModel(
            params=json_params(self.get_params()),
            classes=self.classes_,
            coef=self.coef_,
            intercept=self.intercept_,
            n_iter=int(self.n_iter_),
            loss_curve=[float(v) for v in self.loss_curve_],
            validation_scores=self.validation_scores_,
        )
        save_fitted_model(path, fitted, storage_options=storage_options)

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
