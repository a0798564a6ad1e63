"""``SoftmaxRegression``: the scikit-learn face of the trainer.

It validates its inputs and hyper-parameters, picks the data plane (in-process for NumPy input
with no Dask client around, the Dask engine otherwise), runs :func:`dsoftmax.training.train` and
stores the fitted attributes. Predictions on Dask arrays or datasets stay lazy.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from dataclasses import asdict, replace
from typing import Any

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from . import objective
from .checkpoint import Checkpoint, CheckpointManager, check_resumable
from .data import Dataset
from .engine import HOLD_CHOICES, DaskEngine, LocalEngine
from .inputs import PreparedData, prepare_data
from .modelfile import load_model, save_model
from .objective import Params
from .training import SOLVERS, CheckpointHook, TrainConfig, TrainingState, train

logger = logging.getLogger("dsoftmax")

__all__ = ["SoftmaxRegression"]

_SCHEDULES = ("constant", "inverse_scaling", "step_decay", "cosine")
#: Rows per block when a NumPy array is spread over a cluster (keeps each task under ~8 MB).
_NUMPY_BLOCK_BYTES = 8 * 1024 * 1024


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
        weights on any number of workers.
    warm_start : bool, default=False
        Start ``fit`` from the previous solution.
    client : distributed.Client, str or None, default=None
        Where to compute: a ``Client``, a scheduler address (``tcp://…`` or ``tls://…``), or None:
        the active Dask client if there is one; otherwise NumPy input is fitted in this process and
        Dask or Zarr input on a local cluster started once per process.
    chunk_rows : int, default=65536
        Rows per block for NumPy input.
    hold_data : {"auto", "memory", "stream"}, default="auto"
        Where the rows live during a fit on a cluster. ``"memory"``: read once and kept in the
        workers' memory (fastest; the data must fit). ``"stream"``: every full pass reads the
        chunks from the store and drops them, so any size trains within bounded worker memory;
        sgd/adam then draw minibatches group of chunks by group of chunks (shuffled chunk order,
        rows shuffled within a group) so that each chunk is read about once per epoch.
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
    intercept_ : ndarray of shape (n_classes,)
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
        warm_start: bool = False,
        client: Any = None,
        chunk_rows: int = 65536,
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
        self.warm_start = warm_start
        self.client = client
        self.chunk_rows = chunk_rows
        self.hold_data = hold_data
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.storage_options = storage_options
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def fit(
        self, X: Any, y: Any = None, sample_weight: Any = None, *, resume: bool = False
    ) -> SoftmaxRegression:
        """Fit the model.

        Parameters
        ----------
        X : ndarray, dask array of shape (n_samples, n_features), or Dataset
            A :class:`dsoftmax.data.Dataset` brings its own labels (and sample weights).
        y : array-like of shape (n_samples,), optional
            Class labels of any type; or probability rows of shape (n_samples, n_classes).
        sample_weight : array-like of shape (n_samples,), optional
        resume : bool, default=False
            Continue from the newest checkpoint in ``checkpoint_dir`` (start afresh when there is
            none). sgd/adam then end with the same weights, bit for bit, as an uninterrupted fit;
            L-BFGS restarts its curvature memory from the checkpointed weights.

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
        self, data: PreparedData, config: TrainConfig, resume: bool
    ) -> tuple[TrainConfig, TrainingState | None, CheckpointHook | None]:
        """The config, the state to resume from and the checkpoint hook of a fit."""
        if self.checkpoint_dir is None:
            if resume:
                raise ValueError("resume=True needs checkpoint_dir: where the checkpoints are.")
            return config, None, None
        manager = CheckpointManager(
            self.checkpoint_dir,
            keep=int(self.keep_checkpoints),
            storage_options=self.storage_options,
        )
        description = data.describe()
        found = manager.latest() if resume else None
        if not resume and manager.steps():
            raise ValueError(
                f"checkpoint_dir {self.checkpoint_dir!r} already holds checkpoints (newest: step "
                f"{manager.steps()[-1]}); pass resume=True to continue that fit, or use an empty "
                "directory. Nothing was changed."
            )
        if found is not None:
            if self.random_state is None:
                # The seed of the interrupted fit, drawn at random then, decides the batches.
                config = replace(config, random_state=int(found.config["random_state"]))
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
            class_weight = self._class_weight_vector(data, engine)
            engine.class_weight = class_weight
            params = self._initial_params(data, warm)
            result = train(
                engine,
                params,
                config,
                float32_data=data.dtype == np.float32,
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
        """Set the fitted attributes; ``partial_fit`` extends the curves instead of resetting."""
        accumulate = partial and not first_epoch
        params = result.params
        intercept = params.intercept
        if intercept is not None:
            # Softmax is unchanged by a constant added to every class's intercept: center it.
            intercept = intercept - intercept.mean()
        self.coef_ = np.asarray(params.coef, dtype=np.float64)
        self.intercept_ = (
            np.zeros(data.n_classes) if intercept is None else np.asarray(intercept, np.float64)
        )
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
                f"{self.solver} did not converge in max_iter={self.max_iter} "
                f"{'iterations' if self.solver == 'lbfgs' else 'epochs'}"
                f"{': ' + result.message if result.message else ''}; increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _make_engine(self, data: PreparedData) -> Any:
        client = _resolve_client(self.client, needs_cluster=data.is_lazy)
        if client is None:
            return LocalEngine(
                data.X, data.labels, data.sample_weight, chunk_rows=int(self.chunk_rows)
            )
        X, labels, weights = data.as_dask(_numpy_block_rows(data))
        engine = DaskEngine(client, X, labels, weights, hold=self.hold_data)
        stats = engine.block_stats(data.n_classes)
        from .data import combine_stats

        data.stats = combine_stats(stats, data.name)
        return engine

    def _class_weight_vector(self, data: PreparedData, engine: Any) -> np.ndarray | None:
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
            return Params(self.coef_.copy(), self.intercept_.copy() if self.fit_intercept else None)
        coef = np.zeros((data.n_classes, data.n_features))
        return Params(coef, np.zeros(data.n_classes) if self.fit_intercept else None)

    def _train_config(self) -> TrainConfig:
        _check_hyper_parameters(self)
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
            random_state=_seed_of(self.random_state),
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
        X = self._features(X)
        params = Params(self.coef_, self.intercept_)
        if isinstance(X, da.Array):
            return X.map_blocks(
                _block_logits, params, dtype=X.dtype, chunks=(X.chunks[0], (len(self.classes_),))
            )
        return objective.decision_function(params, X)

    def predict_log_proba(self, X: Any) -> Any:
        """Log-probabilities, shape (n_samples, n_classes)."""
        logits = self._logits(X)
        if isinstance(logits, da.Array):
            return logits.map_blocks(objective.log_softmax, dtype=logits.dtype)
        return objective.log_softmax(logits)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities, shape (n_samples, n_classes); rows sum to 1."""
        logits = self._logits(X)
        if isinstance(logits, da.Array):
            return logits.map_blocks(objective.softmax, dtype=logits.dtype)
        return objective.softmax(logits)

    def predict(self, X: Any) -> Any:
        """Most probable class label per row (original label values)."""
        logits = self._logits(X)
        if isinstance(logits, da.Array):
            return logits.map_blocks(
                _block_predict, self.classes_, dtype=self.classes_.dtype, drop_axis=1
            )
        return self.classes_[np.argmax(logits, axis=1)]

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Mean (weighted) accuracy; a Dataset brings its own labels."""
        if isinstance(X, Dataset):
            if y is not None:
                raise ValueError("pass either a Dataset or (X, y), not both.")
            y = _dataset_labels(X)
            sample_weight = X.sample_weight if sample_weight is None else sample_weight
        predicted = self.predict(X)
        correct = predicted == y
        if sample_weight is None:
            value = correct.mean()
        else:
            value = (correct * sample_weight).sum() / sample_weight.sum()
        return float(value.compute() if hasattr(value, "compute") else value)

    def _features(self, X: Any) -> Any:
        if isinstance(X, Dataset):
            X = X.X
        if isinstance(X, da.Array):
            if X.ndim != 2 or X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has shape {X.shape}; this model expects {self.n_features_in_} features."
                )
            return X.rechunk({1: -1}) if len(X.chunks[1]) > 1 else X
        from sklearn.utils.validation import validate_data

        return validate_data(self, X, reset=False, dtype=[np.float64, np.float32])

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
        """Save the fitted model to ``path`` (directory or fsspec URL) without pickle."""
        check_is_fitted(self)
        classes = self.classes_
        manifest = {
            "params": _json_params(self.get_params()),
            "classes": classes.tolist(),
            "classes_dtype": classes.dtype.str if classes.dtype.kind != "O" else "object",
            "n_features_in": int(self.n_features_in_),
            "n_iter": int(self.n_iter_),
            "loss_curve": [float(v) for v in self.loss_curve_],
            "validation_scores": self.validation_scores_,
        }
        save_model(
            path,
            {"coef": self.coef_, "intercept": self.intercept_},
            manifest,
            storage_options=storage_options,
        )

    @classmethod
    def load(cls, path: str, *, storage_options: dict | None = None) -> SoftmaxRegression:
        """Load a model saved by :meth:`save`; nothing in the file is executed."""
        arrays, manifest = load_model(path, storage_options=storage_options)
        model = cls(**manifest.get("params", {}))
        classes_dtype = manifest["classes_dtype"]
        model.classes_ = np.asarray(
            manifest["classes"], dtype=object if classes_dtype == "object" else classes_dtype
        )
        model.coef_ = arrays["coef"]
        model.intercept_ = arrays["intercept"]
        expected = (len(model.classes_), int(manifest["n_features_in"]))
        if model.coef_.shape != expected or model.intercept_.shape != expected[:1]:
            from .modelfile import ModelFileError

            raise ModelFileError(
                f"{path!r}: coef has shape {model.coef_.shape} and intercept "
                f"{model.intercept_.shape}, but the manifest says {expected[0]} classes and "
                f"{expected[1]} features."
            )
        model.n_features_in_ = expected[1]
        model.n_iter_ = int(manifest.get("n_iter", 0))
        model.loss_curve_ = list(manifest.get("loss_curve", []))
        model.validation_scores_ = list(manifest.get("validation_scores", []))
        return model


# ---------------------------------------------------------------------- helpers
def _resolve_client(client: Any, *, needs_cluster: bool) -> Any:
    """The Dask client to use, or None for in-process fitting of in-memory data."""
    from . import cluster

    if client is not None:
        return cluster.get_client(client)
    active = cluster.active_client()
    if active is not None or not needs_cluster:
        return active
    return cluster.get_client(None)


def _numpy_block_rows(data: PreparedData) -> int:
    row_bytes = max(1, data.n_features * data.dtype.itemsize)
    return max(1024, _NUMPY_BLOCK_BYTES // row_bytes)


def _dataset_labels(dataset: Dataset) -> da.Array:
    ids = dataset.y if dataset.y is not None else dataset.Y.argmax(axis=1)
    return ids.map_blocks(_labels_of_ids, dataset.classes, dtype=dataset.classes.dtype)


def _labels_of_ids(ids: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return classes[ids]


def _block_logits(X: np.ndarray, params: Params, block_info: dict | None = None) -> np.ndarray:
    """Logits of one block of lazy input; a non-finite feature raises, naming its row (NumPy
    input is checked by scikit-learn's validation instead)."""
    finite = np.isfinite(X)
    if not finite.all():
        row_start = block_info[0]["array-location"][0][0] if block_info else 0
        first_row = row_start + int(np.argmin(finite.all(axis=1)))
        raise ValueError(
            f"X has {X.size - np.count_nonzero(finite)} non-finite value(s) (NaN or inf) in "
            f"rows {row_start} to {row_start + X.shape[0] - 1}, first in row {first_row}; "
            "predictions need finite features: drop or impute those rows."
        )
    return objective.decision_function(params, X)


def _block_predict(logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return classes[np.argmax(logits, axis=1)]


def _seed_of(random_state: Any) -> int:
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters that survive a JSON round trip (the client does not travel)."""
    # The client does not travel, storage options may hold credentials, and a loaded model must
    # not inherit the checkpoint directory of the fit that made it (a refit would refuse it).
    dropped = ("client", "storage_options", "checkpoint_dir")
    out = {name: value for name, value in params.items() if name not in dropped}
    if not isinstance(out.get("random_state"), (int, type(None))):
        out["random_state"] = None
    if isinstance(out.get("class_weight"), dict):
        out["class_weight"] = None
    return out


def _check_number(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = np.inf,
    low_open: bool = False,
    high_open: bool = True,
    integer: bool = False,
) -> None:
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {expected}, got {value!r} ({type(value).__name__}).")
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high or not np.isfinite(value):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value!r}.")


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


def _check_hyper_parameters(model: SoftmaxRegression) -> None:
    """Refuse bad hyper-parameters with the parameter's name and its allowed range."""
    _check_number("l2", model.l2, low=0.0)
    _check_choice("solver", model.solver, SOLVERS)
    _check_choice("lr_schedule", model.lr_schedule, _SCHEDULES)
    _check_choice("hold_data", model.hold_data, HOLD_CHOICES)
    _check_number("batch_size", model.batch_size, low=1, integer=True)
    _check_number("learning_rate", model.learning_rate, low=0.0, low_open=True)
    _check_number("momentum", model.momentum, low=0.0, high=1.0)
    _check_number("max_iter", model.max_iter, low=1, integer=True)
    _check_number("tol", model.tol, low=0.0)
    _check_number(
        "validation_fraction", model.validation_fraction, low=0.0, high=1.0, low_open=True
    )
    _check_number("n_iter_no_change", model.n_iter_no_change, low=1, integer=True)
    _check_number("chunk_rows", model.chunk_rows, low=1, integer=True)
    _check_number("verbose", model.verbose, low=0, integer=True)
    _check_number("keep_checkpoints", model.keep_checkpoints, low=1, integer=True)
    if model.checkpoint_every is not None:
        _check_number("checkpoint_every", model.checkpoint_every, low=1, integer=True)
    if model.nesterov and model.momentum == 0:
        raise ValueError("nesterov=True needs momentum > 0 (got momentum=0).")
    if (
        model.class_weight is not None
        and model.class_weight != "balanced"
        and not isinstance(model.class_weight, dict)
    ):
        raise ValueError(
            "class_weight must be None, 'balanced' or a dict {label: weight}, got "
            f"{model.class_weight!r}."
        )
