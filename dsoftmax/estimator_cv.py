"""``SoftmaxRegressionCV``: a whole regularization grid and its cross-validation folds in one fit.

The fit trains every (λ, split) model at once (:func:`dsoftmax.grid.loop.train_grid`): each
split's training rows and held-out rows are masks over the same blocks, held once in memory (or
streamed), and each pass over them computes every running model's sums with one stacked product
per block (:mod:`dsoftmax.kernels.stacked`). After the grid, one more pass scores every model on
its held-out rows; the λ (and learning rate) with the best summed score wins, and the model is
refit on every row at that setting, starting from the mean of the splits' solutions.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from .data.inputs import PreparedData, prepare_data
from .defaults import DEFAULT_GRID_MEMORY, L2_GRID_RANGE
from .engine.grid_problem import GridProblem
from .estimator import SoftmaxRegression
from .fitting import check_memory_size, check_streamed_minibatches, json_params, resolve_client
from .grid.folds import FoldTable, describe_cv, fold_table
from .grid.loop import GridModel, lbfgs_models_within, train_grid
from .kernels.stacked import EVERY_ROW, StackMetrics
from .objective import Params
from .persist import FittedModel, ModelFileError, save_fitted_model
from .training import TrainConfig, TrainResult
from .validation import check_search_hyper_parameters, is_integer, seed_of

logger = logging.getLogger("dsoftmax")

__all__ = ["SoftmaxRegressionCV", "choose_best", "held_out_scores", "l2_grid"]


def _never(model: SoftmaxRegressionCV) -> bool:
    raise AttributeError(
        "SoftmaxRegressionCV has no partial_fit: a grid is fitted whole. Use SoftmaxRegression "
        "with the chosen l2_ for incremental training."
    )


def l2_grid(l2s: Any, n_samples: int) -> np.ndarray:
    """The penalties of a grid: ``l2s`` itself, or for an int ``n`` the image of scikit-learn's
    ``Cs=n`` grid, ``λ = 1 / (2 · C · n_samples)`` for ``C`` in ``np.logspace(-4, 4, n)`` (in
    that order: strongest penalty first).

    Examples
    --------
    >>> l2_grid(3, 50).tolist()
    [100.0, 0.01, 1e-06]
    """
    if is_integer(l2s):
        Cs = np.logspace(*L2_GRID_RANGE, int(l2s))
        return 1.0 / (2.0 * Cs * n_samples)
    return np.asarray([float(value) for value in l2s], dtype=np.float64)


def held_out_scores(metrics: StackMetrics, scoring: str) -> np.ndarray:
    """Per model, its held-out score (higher is better): ``neg_log_loss``, minus the weighted
    mean cross-entropy, or ``accuracy``, the weighted share of correct predictions. NaN where a
    model's held-out rows weigh nothing."""
    total = metrics.loss_sum if scoring == "neg_log_loss" else metrics.correct_sum
    sign = -1.0 if scoring == "neg_log_loss" else 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(metrics.weight_sum > 0, sign * total / metrics.weight_sum, np.nan)


def choose_best(scores: np.ndarray) -> tuple[int, ...]:
    """The grid cell (λ index, [learning-rate index]) of the best score summed over the splits
    (axis 0), the first among ties as in scikit-learn's ``LogisticRegressionCV``."""
    summed = scores.sum(axis=0)
    if np.all(np.isnan(summed)):
        raise ValueError(
            "every held-out score is NaN: the held-out rows of some split weigh nothing. Give "
            "the held-out rows positive sample weights, or use other splits."
        )
    return tuple(int(i) for i in np.unravel_index(np.nanargmax(summed), summed.shape))


class SoftmaxRegressionCV(SoftmaxRegression):
    """Softmax regression with the L2 penalty chosen by cross-validation, every λ × split model
    trained in one pass over the data per step.

    Each (λ, split) model minimizes the objective of :class:`SoftmaxRegression` over its
    split's training rows — scikit-learn's ``LogisticRegression(C=1 / (2·λ·n_train))`` fit on
    them — and is scored on the split's held-out rows. The best λ (summed score over the splits)
    is ``l2_``; with ``refit=True`` the model is then fit on every row at ``l2_``, starting from
    the mean of the splits' solutions. With solver sgd or adam the grid may also span learning
    rates (``learning_rates``).

    Parameters
    ----------
    l2s : int or list of float, default=10
        The penalties ``λ`` to try, or their number: ``n`` values log-spaced as scikit-learn's
        ``Cs=n`` (``λ = 1 / (2 · C · n_samples)``, ``C`` from 1e-4 to 1e4; :func:`l2_grid`).
    cv : int, "validation", splitter or iterable, default=5
        An int: that many stratified folds (scikit-learn's ``StratifiedKFold`` over the labels,
        shuffled with ``random_state``). ``"validation"``: one split holding out
        ``validation_fraction`` of the rows. A scikit-learn splitter (its ``split(X, y)`` is
        called with the labels), or an iterable of ``(train, test)`` arrays of row indices.
    scoring : {"neg_log_loss", "accuracy"}, default="neg_log_loss"
        The held-out score (higher is better), weighted by the sample weights.
    refit : bool, default=True
        Refit on every row at the chosen setting. False: ``coef_`` and ``intercept_`` are the
        mean of the splits' models there, as in scikit-learn.
    learning_rates : list of float or None, default=None
        sgd/adam: the initial step sizes to try beside each λ (None: ``learning_rate`` only).
    fit_intercept, solver, batch_size, learning_rate, lr_schedule, momentum, nesterov, \
max_iter, tol, n_iter_no_change, class_weight, random_state, shuffle_window, client, \
chunk_rows, hold_data, storage_options, verbose
        As in :class:`SoftmaxRegression`; every model of the grid and the refit use them.
        ``random_state`` also seeds the folds and the validation split.
    validation_fraction : float, default=0.1
        Share of rows held out with ``cv="validation"``.
    checkpoint_dir : str or None, default=None
        Where ``fit`` writes checkpoints of the whole grid (every model's optimizer state), then
        of the refit; ``fit(..., resume=True)`` continues every model with the bits of an
        uninterrupted fit.
    checkpoint_every : int or None, default=None
        Passes over the data (L-BFGS) or minibatch steps between checkpoints; None: every 10
        passes, or at the end of every epoch.
    keep_checkpoints : int, default=3
    grid_memory : int or str, default="2GiB"
        L-BFGS: the client's memory for the optimizers of the models that train at once, in
        bytes or as a size such as ``"8GB"``. Each model's optimizer holds ``2 · 10 + 7``
        float64 copies of its weights (its ``(s, y)`` memory, iterate, gradient, trial point,
        direction, stacked weights and sums), so a grid of large models trains as many at once
        as this allows and starts the next one whenever one stops: passes grow, memory does not.
        The models and their results are the same up to the rounding of the stacked products;
        a resumed fit keeps the number it started with, and so the bits of an uninterrupted
        one.

    Attributes
    ----------
    l2s_ : ndarray of shape (n_l2s,)
        The penalties tried, in the order of ``scores_``.
    learning_rates_ : ndarray of shape (n_learning_rates,)
        The step sizes tried (only with ``learning_rates``).
    scores_ : ndarray of shape (n_splits, n_l2s) or (n_splits, n_l2s, n_learning_rates)
        Held-out score of every model.
    l2_ : float
        The chosen penalty.
    learning_rate_ : float
        The chosen step size (sgd, adam).
    coefs_paths_ : ndarray of shape (n_splits, n_l2s[, n_learning_rates], n_classes, n_features)
        Every split's model (float64); not saved with the model.
    intercepts_paths_ : ndarray of shape (n_splits, n_l2s[, n_learning_rates], n_classes)
    n_iter_ : ndarray of shape (n_splits, n_l2s[, n_learning_rates])
        Iterations (L-BFGS) or epochs of every split's model.
    coef_, intercept_, classes_, n_features_in_
        Of the refit model (or the mean of the splits' models, ``refit=False``), as in
        :class:`SoftmaxRegression`.
    loss_curve_ : list of float
        The refit's objective per iteration (or epoch); empty with ``refit=False``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from dsoftmax import SoftmaxRegressionCV
    >>> X, y = load_iris(return_X_y=True)
    >>> search = SoftmaxRegressionCV(l2s=[1e-4, 1e-2, 1.0], cv=3, random_state=0).fit(X, y)
    >>> search.scores_.shape, search.l2_ in search.l2s_
    ((3, 3), True)
    """

    def __init__(
        self,
        *,
        l2s: Any = 10,
        cv: Any = 5,
        scoring: str = "neg_log_loss",
        refit: bool = True,
        learning_rates: Any = None,
        fit_intercept: bool = True,
        solver: str = "lbfgs",
        batch_size: int = 8192,
        learning_rate: float = 0.01,
        lr_schedule: str = "constant",
        momentum: float = 0.9,
        nesterov: bool = False,
        max_iter: int = 100,
        tol: float = 1e-4,
        n_iter_no_change: int = 5,
        validation_fraction: float = 0.1,
        class_weight: Any = None,
        random_state: Any = None,
        shuffle_window: int | None = None,
        client: Any = None,
        chunk_rows: int | str = "auto",
        hold_data: str = "auto",
        checkpoint_dir: str | None = None,
        checkpoint_every: int | None = None,
        keep_checkpoints: int = 3,
        grid_memory: int | str = DEFAULT_GRID_MEMORY,
        storage_options: dict | None = None,
        verbose: int = 0,
    ) -> None:
        self.l2s = l2s
        self.cv = cv
        self.scoring = scoring
        self.refit = refit
        self.learning_rates = learning_rates
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.momentum = momentum
        self.nesterov = nesterov
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.random_state = random_state
        self.shuffle_window = shuffle_window
        self.client = client
        self.chunk_rows = chunk_rows
        self.hold_data = hold_data
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.keep_checkpoints = keep_checkpoints
        self.grid_memory = grid_memory
        self.storage_options = storage_options
        self.verbose = verbose

    @available_if(_never)
    def partial_fit(self, *args: Any, **kwargs: Any) -> SoftmaxRegressionCV:
        """Not available: a grid is fitted whole."""
        raise AttributeError("SoftmaxRegressionCV has no partial_fit.")

    # ------------------------------------------------------------------ fitting
    def fit(
        self, X: Any, y: Any = None, sample_weight: Any = None, *, resume: bool | int = False
    ) -> SoftmaxRegressionCV:
        """Train every (λ, split) model, score them on their held-out rows, choose, refit.

        Parameters
        ----------
        X : ndarray, dask array of shape (n_samples, n_features), or Dataset
            A :class:`dsoftmax.data.Dataset` brings its own labels (and sample weights).
        y : array-like of shape (n_samples,), optional
            Class labels of any type; or probability rows of shape (n_samples, n_classes).
        sample_weight : array-like of shape (n_samples,), optional
            Weigh the rows in training and in the held-out scores.
        resume : bool or int, default=False
            True: continue from the newest valid checkpoint in ``checkpoint_dir``; a step number:
            from that checkpoint. Every model continues with the bits of an uninterrupted fit.

        Returns
        -------
        self
        """
        check_search_hyper_parameters(self.get_params(deep=False))
        grid_memory = check_memory_size("grid_memory", self.grid_memory)
        from .persist.grid_checkpoint import GridCheckpointing

        config = self._grid_config()
        data = prepare_data(X, y, sample_weight, classes=None)
        class_weight = self._class_weight_vector(data)
        checkpoints = GridCheckpointing.open(self, data, config, resume)
        if checkpoints is not None:
            config = checkpoints.config  # a resumed fit keeps the seed of the interrupted one
        folds = fold_table(
            self.cv, self._stratification_labels(data), config.random_state,
            float(self.validation_fraction),
        )  # fmt: skip
        l2s, rates = l2_grid(self.l2s, int(data.X.shape[0])), self._rates()
        models = [
            GridModel(split, float(l2), float(rate))
            for split in range(folds.n_splits)
            for l2 in l2s
            for rate in rates
        ]
        if checkpoints is not None:
            checkpoints.check(
                models, folds, self.fit_intercept, class_weight, self.scoring, self.refit
            )
        engine = self._make_engine(data, folds.codes)
        try:
            check_streamed_minibatches(engine, config)
            problem = GridProblem(
                engine, data.n_classes, data.n_features, folds.roles, class_weight
            )
            max_running = self._max_running(data, config, len(models), grid_memory)
            outcome = self._search(problem, data, config, models, checkpoints, max_running)
        finally:
            engine.close()
        self._store_search(data, folds, l2s, models, *outcome)
        return self

    def _grid_config(self) -> TrainConfig:
        return TrainConfig(
            solver=self.solver,
            l2=0.0,
            max_iter=int(self.max_iter),
            tol=float(self.tol),
            batch_size=int(self.batch_size),
            learning_rate=float(self.learning_rate),
            lr_schedule=self.lr_schedule,
            momentum=float(self.momentum),
            nesterov=bool(self.nesterov),
            early_stopping=False,
            validation_fraction=float(self.validation_fraction),
            n_iter_no_change=int(self.n_iter_no_change),
            random_state=seed_of(self.random_state),
            shuffle_window=None if self.shuffle_window is None else int(self.shuffle_window),
            verbose=int(self.verbose),
        )

    def _rates(self) -> list[float]:
        if self.learning_rates is None:
            return [float(self.learning_rate)]
        return [float(rate) for rate in self.learning_rates]

    def _stratification_labels(self, data: PreparedData) -> np.ndarray:
        """Each row's class id (the largest entry of a probability row): what stratified folds
        and splitters split; one pass over the labels of lazy data."""
        labels = data.labels
        if data.is_lazy:
            client = resolve_client(self.client, needs_cluster=True)
            labels = client.compute(labels.argmax(axis=1) if labels.ndim == 2 else labels)
            labels = labels.result()
        labels = np.asarray(labels)
        return labels.argmax(axis=1) if labels.ndim == 2 else labels

    def _search(
        self,
        problem: GridProblem,
        data: PreparedData,
        config: TrainConfig,
        models: list[GridModel],
        checkpoints: Any,
        max_running: int | None,
    ) -> tuple[list[TrainResult], np.ndarray, TrainResult | None, tuple[int, ...]]:
        """The grid (at most ``max_running`` L-BFGS models at once; None: all), its held-out
        scores, the choice and the refit (resumed where a checkpoint left them)."""
        float32 = data.dtype == np.float32
        found = None if checkpoints is None else checkpoints.found
        if found is None or found.scores is None:
            hook = None if checkpoints is None else checkpoints.hook("grid")
            starts = [self._zeros(data) for _ in models]
            results = train_grid(
                problem, models, starts, config, float32_data=float32,
                resume=None if found is None else found.grid, checkpoint=hook,
                max_running=max_running,
            )  # fmt: skip
            # Scored as many at a time as trained (a resumed grid keeps its first cap): the
            # stack's height can change the rounding of its products.
            trained_at_once = _cap_kept(found, max_running)
            metrics = _held_out(problem, results, models, trained_at_once or len(models))
            scores = held_out_scores(metrics, self.scoring).reshape(self._grid_shape(models))
            if checkpoints is not None:
                checkpoints.grid_done(results, scores)
        else:
            results, scores = checkpoints.finished_grid()
        best = choose_best(scores)
        refit = None
        if self.refit:
            chosen = self._chosen_models(models, best, scores.shape)
            start = _mean_params([results[j].params for j in chosen])
            model = GridModel(EVERY_ROW, models[chosen[0]].l2, models[chosen[0]].learning_rate)
            hook = None if checkpoints is None else checkpoints.hook("refit")
            resumed = None if found is None else found.refit
            (refit,) = train_grid(
                problem, [model], [start], config, float32_data=float32, resume=resumed,
                checkpoint=hook,
            )  # fmt: skip
        return results, scores, refit, best

    def _max_running(
        self, data: PreparedData, config: TrainConfig, n_models: int, budget: int
    ) -> int | None:
        """The most L-BFGS models that train at once within ``budget`` bytes (``grid_memory``;
        None: every one)."""
        if config.solver != "lbfgs":
            return None
        from dask.utils import format_bytes

        n_params = data.n_classes * (data.n_features + int(self.fit_intercept))
        cap = lbfgs_models_within(budget, n_params)
        if cap >= n_models:
            return None
        logger.info(
            "dsoftmax: %d models of %d weights each; %d train at once within grid_memory=%s, the "
            "next one starting whenever one stops",
            n_models, n_params, cap, format_bytes(budget),
        )  # fmt: skip
        return cap

    def _zeros(self, data: PreparedData) -> Params:
        return self._initial_params(data, warm=False)

    def _grid_shape(self, models: list[GridModel]) -> tuple[int, ...]:
        n_splits = 1 + max(model.split for model in models)
        n_rates = len(self._rates())
        shape = (n_splits, len(models) // (n_splits * n_rates), n_rates)
        return shape if self.learning_rates is not None else shape[:2]

    def _chosen_models(
        self, models: list[GridModel], best: tuple[int, ...], shape: tuple[int, ...]
    ) -> list[int]:
        """The indices of the splits' models at the chosen grid cell."""
        cells = np.arange(len(models)).reshape(shape)
        return [int(index) for index in cells[(slice(None), *best)]]

    # ------------------------------------------------------------ fitted attributes
    def _store_search(
        self,
        data: PreparedData,
        folds: FoldTable,
        l2s: np.ndarray,
        models: list[GridModel],
        results: list[TrainResult],
        scores: np.ndarray,
        refit: TrainResult | None,
        best: tuple[int, ...],
    ) -> None:
        shape = scores.shape
        chosen = self._chosen_models(models, best, shape)
        self.l2s_ = np.array(l2s, dtype=np.float64)
        if self.learning_rates is not None:
            self.learning_rates_ = np.array(self._rates(), dtype=np.float64)
        self.scores_ = scores
        self.l2_ = float(models[chosen[0]].l2)
        if self.solver != "lbfgs":
            self.learning_rate_ = float(models[chosen[0]].learning_rate)
        self.coefs_paths_ = np.stack([r.params.coef for r in results]).reshape(
            (*shape, data.n_classes, data.n_features)
        )
        self.intercepts_paths_ = np.stack(
            [_intercept_of(r.params, data.n_classes) for r in results]
        ).reshape((*shape, data.n_classes))
        self.n_iter_ = np.array([r.n_iter for r in results], dtype=np.int64).reshape(shape)
        self._cv_description = folds.description
        self._warn_not_converged(models, results, refit)
        if refit is None:
            final = TrainResult(
                params=_mean_params([results[j].params for j in chosen]),
                n_iter=0, converged=True, loss_curve=[],
            )  # fmt: skip
        else:
            final = refit
        with warnings.catch_warnings():
            # The refit's own convergence was reported above, with the grid's.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self._store_result(data, final, partial=False, first_epoch=True)
        self.n_iter_ = np.array([r.n_iter for r in results], dtype=np.int64).reshape(shape)
        logger.info(
            "dsoftmax: %s chose l2=%.6g (%s %.6g, mean over %d splits)",
            describe_cv(self.cv), self.l2_, self.scoring,
            float(np.nanmean(scores[(slice(None), *best)])), shape[0],
        )  # fmt: skip

    def _warn_not_converged(
        self, models: list[GridModel], results: list[TrainResult], refit: TrainResult | None
    ) -> None:
        units = "iterations" if self.solver == "lbfgs" else "epochs"
        missed = [j for j, result in enumerate(results) if not result.converged]
        if missed:
            first = models[missed[0]]
            warnings.warn(
                f"{len(missed)} of the {len(models)} grid models did not converge in "
                f"max_iter={self.max_iter} {units} (the first: l2={first.l2:g} on split "
                f"{first.split}: {results[missed[0]].message or 'stopped'}); their held-out "
                "scores are those of unconverged models. Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )
        if refit is not None and not refit.converged:
            warnings.warn(
                f"the refit at l2={self.l2_:g} did not converge in max_iter={self.max_iter} "
                f"{units}{': ' + refit.message if refit.message else ''}; increase max_iter or "
                "tol.",
                ConvergenceWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------- persistence
    def save(self, path: str, *, storage_options: dict | None = None) -> None:
        """Save the fitted model and its grid's results (``l2s_``, ``scores_``, ``n_iter_``,
        the chosen setting) to ``path``, without pickle.

        The file is also a model file of :class:`SoftmaxRegression` at ``l2=l2_``: either
        class loads it. ``coefs_paths_`` is not saved; a splitter or given splits are saved as
        their number of splits.
        """
        from .persist.search import search_record

        check_is_fitted(self)
        search, arrays = search_record(
            self._json_search_params(), self.l2_, getattr(self, "learning_rate_", None),
            getattr(self, "_cv_description", ""), self.scores_, self.n_iter_,
        )  # fmt: skip
        fitted = FittedModel(
            params=json_params(self._sklearn_params()),
            classes=self.classes_,
            coef=self.coef_,
            intercept=self.intercept_,
            n_iter=len(self.loss_curve_),
            loss_curve=[float(v) for v in self.loss_curve_],
            search=search,
            search_arrays=arrays,
        )
        save_fitted_model(path, fitted, storage_options=storage_options)

    @classmethod
    def load(cls, path: str, *, storage_options: dict | None = None) -> SoftmaxRegressionCV:
        """Load a model saved by :meth:`save`; nothing in the file is executed. Every value is
        checked, and the hyper-parameters as the constructor's are; anything else raises
        :class:`dsoftmax.persist.ModelFileError`."""
        from .persist.search import load_search

        fitted, search = load_search(path, storage_options=storage_options)
        accepted = set(cls().get_params(deep=False))
        params = {name: value for name, value in fitted.params.items() if name in accepted}
        model = cls(**{**params, **search["params"]})
        try:
            check_search_hyper_parameters(model.get_params(deep=False))
        except (TypeError, ValueError) as error:
            raise ModelFileError(
                f"the model file {path!r} holds a refused setting: {error}"
            ) from None
        model.classes_ = fitted.classes
        model.coef_ = fitted.coef
        model.intercept_ = fitted.intercept
        model.n_features_in_ = fitted.coef.shape[1]
        model.loss_curve_ = fitted.loss_curve
        model.validation_scores_ = []
        model.l2s_ = np.asarray(search["params"]["l2s"], dtype=np.float64)
        if search["params"]["learning_rates"] is not None:
            model.learning_rates_ = np.asarray(search["params"]["learning_rates"])
        if search["learning_rate"] is not None:
            model.learning_rate_ = search["learning_rate"]
        model.scores_ = search["scores"]
        model.n_iter_ = search["n_iter"]
        model.l2_ = search["l2"]
        model._cv_description = search["cv_description"]
        return model

    def _json_search_params(self) -> dict[str, Any]:
        """The grid's own hyper-parameters as a model file stores them."""
        cv = int(self.cv) if is_integer(self.cv) else self.cv if self.cv == "validation" else None
        return {
            "l2s": [float(value) for value in self.l2s_],
            "cv": cv if cv is not None else int(self.scores_.shape[0]),
            "scoring": self.scoring,
            "refit": bool(self.refit),
            "learning_rates": (
                None if self.learning_rates is None else [float(v) for v in self.learning_rates_]
            ),
            "validation_fraction": float(self.validation_fraction),
        }

    def _sklearn_params(self) -> dict[str, Any]:
        """The hyper-parameters of the :class:`SoftmaxRegression` this model's refit is."""
        names = SoftmaxRegression().get_params(deep=False)
        params = {name: value for name, value in self.get_params(deep=False).items()
                  if name in names}  # fmt: skip
        params["l2"] = self.l2_
        if self.solver != "lbfgs":
            params["learning_rate"] = self.learning_rate_
        return params



def _cap_kept(found: Any, max_running: int | None) -> int | None:
    """The most models trained at once: a resumed L-BFGS grid's own cap, else ``max_running``
    (as :func:`dsoftmax.grid.loop.train_grid` decides)."""
    run = None if found is None else found.grid
    return run.max_running if run is not None and run.lbfgs else max_running


def _held_out(
    problem: GridProblem, results: list[TrainResult], models: list[GridModel], group: int
) -> StackMetrics:
    """Every model's held-out metrics, ``group`` models per pass (the stack a pass sends the
    workers stays as large as the training's)."""
    parts = [
        problem.held_out(
            [result.params for result in results[start : start + group]],
            models[start : start + group],
        )
        for start in range(0, len(models), group)
    ]
    return StackMetrics(*(np.concatenate(values) for values in zip(*parts, strict=True)))


def _intercept_of(params: Params, n_classes: int) -> np.ndarray:
    return np.zeros(n_classes) if params.intercept is None else np.asarray(params.intercept)


def _mean_params(params: list[Params]) -> Params:
    coef = np.mean([np.asarray(p.coef, dtype=np.float64) for p in params], axis=0)
    if params[0].intercept is None:
        return Params(coef, None)
    return Params(coef, np.mean([np.asarray(p.intercept) for p in params], axis=0))

