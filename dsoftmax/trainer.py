"""``SoftmaxTrainer``: the fit of a softmax model, without scikit-learn.

It holds the hyper-parameters, checks them, picks the data plane (in-process for NumPy input
with no Dask client around, the Dask engine otherwise), runs :func:`dsoftmax.training.train`,
sets the fitted attributes and saves them. :class:`dsoftmax.SoftmaxRegression` is this trainer
with scikit-learn's estimator API on top (predictions, scores, parameters, tags); ``dsoftmax
train`` fits with the trainer alone, so the command starts without importing scikit-learn.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from dataclasses import asdict, replace
from typing import Any, Self

import dask.array as da
import numpy as np

from .data.inputs import PreparedData, prepare_data
from .engine import EngineProblem, LocalEngine
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
    check_resumable,
    save_fitted_model,
    warn_no_checkpoint,
)
from .training import CheckpointHook, TrainConfig, TrainingState, train
from .validation import check_hyper_parameters, is_integer, seed_of

logger = logging.getLogger("dsoftmax")

__all__ = ["SoftmaxTrainer"]


class SoftmaxTrainer:
    """The fit of a softmax model with L2 penalty: hyper-parameters in, fitted weights out.

    Its parameters, the fitted attributes (``coef_``, ``intercept_``, ``classes_``,
    ``n_features_in_``, ``n_iter_``, ``loss_curve_``, ``validation_scores_``) and :meth:`fit`
    are those of :class:`dsoftmax.SoftmaxRegression`, which documents them.

    Attributes
    ----------
    convergence_warning : type of Warning
        What a fit that stops at ``max_iter`` warns with: ``UserWarning`` here,
        scikit-learn's ``ConvergenceWarning`` in :class:`dsoftmax.SoftmaxRegression`.
    """

    convergence_warning: type[Warning] = UserWarning

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

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters by name, with their values (``deep`` has no effect:
        no parameter is an estimator)."""
        signature = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name in signature.parameters if name != "self"}

    def fit(
        self, X: Any, y: Any = None, sample_weight: Any = None, *, resume: bool | int = False
    ) -> Self:
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
        warm = self.warm_start and hasattr(self, "coef_")
        if warm:
            self._check_continuation(data, "warm_start=True")
        config, resume_state, hook = self._checkpointing(data, config, resume)
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
        elif resume is True:
            warn_no_checkpoint(manager.directory)
        config_record = asdict(config)

        def save(state: TrainingState) -> None:
            path = manager.save(Checkpoint(state, config_record, description))
            logger.info("dsoftmax: checkpoint at step %d: %s", state.step, path)

        every = None if self.checkpoint_every is None else int(self.checkpoint_every)
        return config, None if found is None else found.state, CheckpointHook(save, every)

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
        # 'balanced' needs each class's total weight, which the engine's load pass of Dask
        # input counts; other class weights are refused before that pass.
        balanced = isinstance(self.class_weight, str)
        class_weight = None if balanced else self._class_weight_vector(data)
        engine = self._make_engine(data)
        try:
            if balanced:
                class_weight = self._class_weight_vector(data)
            check_streamed_minibatches(engine, config)
            problem = EngineProblem(engine, config.l2, class_weight)
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
                self.convergence_warning,
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
            from .engine import DaskEngine

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

    def _check_continuation(self, data: PreparedData, how: str) -> None:
        """Refuse to continue from the fitted weights (``how``: ``warm_start=True`` or
        ``partial_fit``) on data whose features or classes are not the ones they are for."""
        name = type(self).__name__
        fresh = (
            "call fit (or use a new estimator)"
            if how == "partial_fit"
            else "fit with warm_start=False (or a new estimator)"
        )
        if self.n_features_in_ != data.n_features:
            raise ValueError(
                f"X has {data.n_features} features, but {name} is expecting "
                f"{self.n_features_in_} features as input (from the previous fit): {how} "
                f"continues from weights for {self.n_features_in_} features; {fresh} for "
                "new data. The fitted model is unchanged."
            )
        previous, new = np.asarray(self.classes_).tolist(), data.classes.tolist()
        if previous != new:
            raise ValueError(
                f"y has the classes {new}, but {name} was fitted on the classes {previous}: "
                f"{how} continues from weights for those classes; {fresh} for new classes. The "
                "fitted model is unchanged."
            )

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
        if not weights.any():
            raise ValueError(
                f"class_weight {self.class_weight!r} gives every class of "
                f"{data.classes.tolist()} a weight of zero; at least one class needs a positive "
                "weight."
            )
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

    def save(self, path: str, *, storage_options: dict | None = None) -> None:
        """Save the fitted model to ``path`` (directory or fsspec URL) without pickle.

        An existing model there is replaced whole or not at all; concurrent saves to one local
        path take turns. ``client``, ``storage_options`` and ``checkpoint_dir`` are not saved.
        """
        if not hasattr(self, "coef_"):
            raise ValueError("the model is not fitted yet: call fit before save.")
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
