"""The training loop: full-batch L-BFGS, or minibatch SGD/Adam over seeded epochs.

The loop sees the data through a :class:`Problem` only: a ``value_and_grad`` and a ``metrics``
callable over rows given by their global numbers, and the number of rows. Any engine adapts to
it (:class:`dsoftmax.engine.EngineProblem`), and so can a plain NumPy function in a test. Which
rows form each minibatch is the sampler's business (:class:`dsoftmax.sampling.EpochSampler`),
decided from the seed, the rows and the batch size alone. Each step logs one greppable line at
INFO (``dsoftmax: epoch 3/20 loss=...``) and, when ``verbose`` asks for it and stderr is a
terminal, shows a progress bar: L-BFGS iterations with the loss and the largest gradient entry
against ``tol`` (the stopping measure) and the time per iteration; minibatch epochs, with a bar of
the epoch's batches and its ETA.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .objective import BlockMetrics, Params
from .optim import OPTIMIZERS, apply_updates, make_schedule, minimize_lbfgs
from .sampling import EpochSampler, split_validation

logger = logging.getLogger("dsoftmax")

__all__ = [
    "CheckpointHook",
    "DivergenceError",
    "Problem",
    "TrainConfig",
    "TrainResult",
    "TrainingState",
    "one_blas_thread",
    "train",
]


class Problem(Protocol):
    """What the loop needs of the data: two callables over rows, and the number of rows.

    ``rows`` is None for every row, or a sorted int64 array of global row numbers.
    ``value_and_grad`` returns the objective (mean loss over the rows plus the penalty) and its
    gradient; ``weight``, when given, is the total row weight to divide by instead of the rows'
    own (a minibatch divides by its expected weight). ``metrics`` returns the unpenalized
    weighted sums of :class:`dsoftmax.objective.BlockMetrics`. ``weighted`` is True when rows
    carry sample or class weights.
    """

    n_samples: int
    weighted: bool

    def value_and_grad(
        self, params: Params, rows: np.ndarray | None = None, *, weight: float | None = None
    ) -> tuple[float, Params]: ...

    def metrics(self, params: Params, rows: np.ndarray | None = None) -> BlockMetrics: ...


class DivergenceError(FloatingPointError):
    """The loss or gradient stopped being finite."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fit; validated by the estimator."""

    solver: str = "lbfgs"
    l2: float = 1e-4
    max_iter: int = 100
    tol: float = 1e-4
    batch_size: int = 8192
    learning_rate: float = 0.01
    lr_schedule: str = "constant"
    momentum: float = 0.9
    nesterov: bool = False
    early_stopping: bool = False
    validation_fraction: float = 0.1
    n_iter_no_change: int = 5
    random_state: int = 0
    shuffle_window: int | None = None
    verbose: int = 0


@dataclass
class TrainResult:
    """What a fit produced."""

    params: Params
    n_iter: int
    converged: bool
    loss_curve: list[float] = field(default_factory=list)
    validation_curve: list[dict[str, float]] = field(default_factory=list)
    n_evaluations: int = 0
    optimizer_state: Any = None
    message: str = ""


@dataclass
class TrainingState:
    """Where a fit stands: what a checkpoint stores and a resumed fit starts from.

    ``step`` counts optimizer steps (minibatch) or iterations (L-BFGS); ``epoch`` and
    ``batches_done`` are the minibatch sampler's position (the batches themselves follow from
    the configuration); the sums and curves let a resumed run report the same curves as an
    uninterrupted one.
    """

    params: Params
    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    optimizer_state: Any = None
    epoch_loss_sum: float = 0.0
    loss_curve: list[float] = field(default_factory=list)
    validation_curve: list[dict[str, float]] = field(default_factory=list)
    stopper: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointHook:
    """Called with the :class:`TrainingState` every ``every`` steps or iterations; ``every=None``
    means at the end of each epoch (sgd, adam) or every :data:`LBFGS_CHECKPOINT_EVERY`
    iterations (L-BFGS)."""

    save: Callable[[TrainingState], None]
    every: int | None = None


#: L-BFGS iterations between two checkpoints when the hook does not say.
LBFGS_CHECKPOINT_EVERY = 10


def train(
    problem: Problem,
    params: Params,
    config: TrainConfig,
    *,
    float32_data: bool = False,
    optimizer_state: Any = None,
    start_epoch: int = 0,
    resume: TrainingState | None = None,
    checkpoint: CheckpointHook | None = None,
) -> TrainResult:
    """Fit ``params`` to ``problem``; the solver comes from ``config``.

    ``optimizer_state`` and ``start_epoch`` continue an earlier minibatch run (``partial_fit``):
    epoch ``e`` always uses the same shuffled order for the same seed. ``resume`` continues from a
    checkpointed state (then ``params`` and ``optimizer_state`` are ignored); ``checkpoint``
    receives the state as the fit goes.
    """
    with one_blas_thread():
        if config.solver == "lbfgs":
            return _train_lbfgs(problem, params, config, float32_data, resume, checkpoint)
        state = resume or TrainingState(
            params=params, epoch=start_epoch, optimizer_state=optimizer_state
        )
        return _train_minibatch(problem, config, state, start_epoch, checkpoint)


def one_blas_thread() -> threadpool_limits:
    """A context in which this process's BLAS libraries run every call on one thread.

    A fit holds it: the client's own BLAS work is small (the optimizer's vector operations on
    the weights), while a multi-threaded BLAS keeps its idle threads spinning for a while after
    each call, on the cores that the engine's threads (or a local cluster's workers) evaluate
    the blocks on; an in-process engine's BLAS products run one per engine thread as well.
    """
    return threadpool_limits(limits=1, user_api="blas")


def _finite_or_raise(loss: float | None, grad: Params, where: str, hint: str) -> None:
    """Raise :class:`DivergenceError` unless ``loss`` and ``grad`` are finite; ``loss=None``
    checks ``grad`` alone (the updated weights)."""
    if (
        (loss is None or math.isfinite(loss))
        and np.isfinite(grad.coef).all()
        and (grad.intercept is None or np.isfinite(grad.intercept).all())
    ):
        return
    what = "the weights are not finite" if loss is None else (
        f"the loss or gradient is not finite ({loss!r})"
    )
    raise DivergenceError(f"{what} at {where}; {hint}")


def _progress(config: TrainConfig, total: int, unit: str, done: int = 0, **options: Any) -> tqdm:
    # disable=None turns the bar off when stderr is not a terminal.
    return tqdm(
        total=total,
        initial=done,
        unit=unit,
        disable=None if config.verbose else True,
        leave=False,
        file=sys.stderr,
        **options,
    )


#: The L-BFGS bar: iterations, the loss and the stopping measure against ``tol``, and the time
#: per iteration. No ETA: L-BFGS stops on ``tol`` long before ``max_iter`` as a rule.
LBFGS_BAR_FORMAT = "lbfgs: iteration {n_fmt}{postfix} [{elapsed}, {rate_inv_fmt}]"


def _lbfgs_postfix(loss: float, grad_max: float, tol: float) -> str:
    return f"loss {loss:.6g}, max|grad| {grad_max:.2e} (stops at tol {tol:g})"


def _train_lbfgs(
    problem: Problem,
    params: Params,
    config: TrainConfig,
    float32_data: bool,
    resume: TrainingState | None,
    checkpoint: CheckpointHook | None,
) -> TrainResult:
    state = resume or TrainingState(params=params)
    layout = _FlatLayout(state.params)
    every = (checkpoint.every or LBFGS_CHECKPOINT_EVERY) if checkpoint else 0
    first_iteration = state.step

    last_grad: list[np.ndarray] = []

    def loss_and_flat_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        # minimize_lbfgs refuses a non-finite loss or gradient, with its evaluation number.
        loss, grad = problem.value_and_grad(layout.unflatten(x))
        last_grad[:] = [layout.flatten(grad)]
        return loss, last_grad[0]

    bar_format = LBFGS_BAR_FORMAT
    with _progress(config, None, "iter", done=first_iteration, bar_format=bar_format) as bar:
        bar.set_postfix_str("first pass over the data")

        def on_iteration(iteration: int, x: np.ndarray, loss: float) -> None:
            state.step = first_iteration + iteration
            state.params = layout.unflatten(x)
            state.loss_curve.append(loss)
            # The accepted point is the one evaluated last (see dsoftmax.optim.lbfgs).
            grad_max = float(np.max(np.abs(last_grad[0]))) if last_grad else math.nan
            bar.set_postfix_str(_lbfgs_postfix(loss, grad_max, config.tol), refresh=False)
            bar.update(1)
            logger.info(
                "dsoftmax: iteration %d/%d loss=%.9g max|grad|=%.3g",
                state.step,
                config.max_iter,
                loss,
                grad_max,
            )
            if every and state.step % every == 0:
                checkpoint.save(state)

        # float32 products put rounding noise (~1e-8 relative, measured) into the loss; the driver
        # must not chase improvements below float32's epsilon (see dsoftmax.optim.lbfgs).
        result = minimize_lbfgs(
            loss_and_flat_grad,
            layout.flatten(state.params),
            max_iter=max(1, config.max_iter - first_iteration),
            tol=config.tol,
            rel_noise=1e-7 if float32_data else 0.0,
            callback=on_iteration,
        )
    return TrainResult(
        params=layout.unflatten(result.x),
        n_iter=first_iteration + result.n_iter,
        converged=result.converged,
        loss_curve=state.loss_curve or [result.loss],
        n_evaluations=result.n_evals,
        message=result.message,
    )


def _train_minibatch(
    problem: Problem,
    config: TrainConfig,
    state: TrainingState,
    start_epoch: int,
    checkpoint: CheckpointHook | None,
) -> TrainResult:
    train_rows, validation_rows = _validation_split(problem.n_samples, config)
    sampler = EpochSampler(
        train_rows, config.batch_size, config.random_state, shuffle_window=config.shuffle_window
    )
    schedule = _make_schedule(config, total_steps=config.max_iter * sampler.n_batches)
    optimizer = _make_optimizer(config, schedule)
    if state.optimizer_state is None:
        state.optimizer_state = optimizer.init(state.params)
    stopper = _EarlyStopping(config, **state.stopper)
    mean_weight = _mean_row_weight(problem, state.params, sampler)
    end_epoch = start_epoch + config.max_iter
    converged = False

    with _progress(config, config.max_iter, "epoch", done=state.epoch - start_epoch) as bar:
        while state.epoch < end_epoch and not converged:
            batches = _progress(
                config, sampler.n_batches, "batch", done=state.batches_done,
                desc=f"epoch {state.epoch + 1}/{end_epoch}",
            )  # fmt: skip
            with batches:
                for rows in sampler.batch_rows(state.epoch, state.batches_done):
                    _minibatch_step(problem, config, optimizer, state, rows, mean_weight)
                    batches.update(1)
                    if checkpoint and checkpoint.every and state.step % checkpoint.every == 0:
                        checkpoint.save(state)
            state.loss_curve.append(state.epoch_loss_sum / sampler.n_rows)
            scores = _validation_scores(problem, state.params, validation_rows)
            if scores:
                state.validation_curve.append(scores)
            _report_epoch(bar, config, state.epoch, end_epoch, state.loss_curve[-1], scores)
            converged = stopper.should_stop(state.loss_curve[-1], scores)
            state.epoch, state.batches_done, state.epoch_loss_sum = state.epoch + 1, 0, 0.0
            state.stopper = stopper.as_dict()
            if checkpoint and not checkpoint.every:
                checkpoint.save(state)
    return TrainResult(
        params=state.params,
        n_iter=state.epoch - start_epoch,
        converged=converged,
        loss_curve=state.loss_curve,
        validation_curve=state.validation_curve,
        optimizer_state=state.optimizer_state,
    )


def _minibatch_step(
    problem: Problem,
    config: TrainConfig,
    optimizer: Any,
    state: TrainingState,
    rows: np.ndarray,
    mean_weight: float,
) -> None:
    # Divide by the batch's *expected* weight, not its actual weight: a batch that happens to
    # hold only light rows must not count as much as one of heavy rows.
    loss, grads = problem.value_and_grad(state.params, rows, weight=len(rows) * mean_weight)
    _finite_or_raise(
        loss,
        grads,
        f"epoch {state.epoch + 1}, step {state.step + 1}",
        f"lower the learning rate (now {config.learning_rate}).",
    )
    # An overflow here is reported below, as a DivergenceError naming the step.
    with np.errstate(over="ignore", invalid="ignore"):
        updates, new_state = optimizer.update(grads, state.optimizer_state, state.params)
        new_params = apply_updates(state.params, updates)
    # A step can overflow the weights even from a finite gradient; keep the last good state.
    _finite_or_raise(
        None,
        new_params,
        f"epoch {state.epoch + 1}, step {state.step + 1}, after the update",
        f"lower the learning rate (now {config.learning_rate}).",
    )
    state.params, state.optimizer_state = new_params, new_state
    state.step += 1
    state.batches_done += 1
    state.epoch_loss_sum += loss * len(rows)


def _mean_row_weight(problem: Problem, params: Params, sampler: EpochSampler) -> float:
    """Mean weight of a training row (1 without sample or class weights).

    With weights, ``(n_rows / n_batch) · Σ_batch w_i ∇ℓ_i / S`` is an unbiased estimate of the
    full gradient ``Σ_i w_i ∇ℓ_i / S``; normalizing each batch by its own weight is not.
    """
    if not problem.weighted:
        return 1.0
    return problem.metrics(params, sampler.rows).weight_sum / sampler.n_rows


def _make_schedule(config: TrainConfig, total_steps: int) -> Any:
    # step_decay divides the rate by 10 twice over the run: at one third and two thirds.
    options = {"step_size": max(1, total_steps // 3)} if config.lr_schedule == "step_decay" else {}
    return make_schedule(
        config.lr_schedule, config.learning_rate, total_steps=total_steps, **options
    )


def _make_optimizer(config: TrainConfig, schedule: Any) -> Any:
    if config.solver == "sgd":
        return OPTIMIZERS["sgd"](schedule, momentum=config.momentum, nesterov=config.nesterov)
    return OPTIMIZERS[config.solver](schedule)


def _validation_split(
    n_samples: int, config: TrainConfig
) -> tuple[int | np.ndarray, np.ndarray | None]:
    if not config.early_stopping:
        return n_samples, None
    return split_validation(n_samples, config.validation_fraction, config.random_state)


def _validation_scores(
    problem: Problem, params: Params, validation_rows: np.ndarray | None
) -> dict[str, float]:
    if validation_rows is None:
        return {}
    metrics = problem.metrics(params, validation_rows)
    return {
        "val_loss": metrics.loss_sum / metrics.weight_sum,
        "val_accuracy": metrics.correct_sum / metrics.weight_sum,
    }


def _report_epoch(
    bar: tqdm, config: TrainConfig, epoch: int, end_epoch: int, loss: float, scores: dict
) -> None:
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.5g}", **{k: f"{v:.4g}" for k, v in scores.items()})
    extra = "".join(f" {name}={value:.6g}" for name, value in scores.items())
    logger.info("dsoftmax: epoch %d/%d loss=%.9g%s", epoch + 1, end_epoch, loss, extra)


class _EarlyStopping:
    """Stop when the monitored loss has not fallen below ``best - tol`` for ``n_iter_no_change``
    epochs (an absolute ``tol``, as scikit-learn's SGD and MLP estimators): the validation loss
    with early stopping, else the mean training loss of the epoch."""

    def __init__(self, config: TrainConfig, best: float = math.inf, stale_epochs: int = 0) -> None:
        self.tol = config.tol
        self.patience = config.n_iter_no_change
        self.best = best
        self.stale_epochs = stale_epochs

    def should_stop(self, train_loss: float, scores: dict) -> bool:
        value = scores.get("val_loss", train_loss)
        self.stale_epochs = 0 if value < self.best - self.tol else self.stale_epochs + 1
        self.best = min(self.best, value)
        return self.stale_epochs >= self.patience

    def as_dict(self) -> dict[str, float]:
        return {"best": self.best, "stale_epochs": self.stale_epochs}


class _FlatLayout:
    """Params ⇄ one float64 vector, as scipy's L-BFGS wants it."""

    def __init__(self, params: Params) -> None:
        self.coef_shape = params.coef.shape
        self.has_intercept = params.intercept is not None

    def flatten(self, params: Params) -> np.ndarray:
        """One new float64 vector, written once (a Fortran-ordered gradient included)."""
        n_coef = int(np.prod(self.coef_shape))
        flat = np.empty(n_coef + (self.coef_shape[0] if self.has_intercept else 0))
        flat[:n_coef].reshape(self.coef_shape)[...] = params.coef
        if self.has_intercept:
            flat[n_coef:] = params.intercept
        return flat

    def unflatten(self, x: np.ndarray) -> Params:
        n_coef = int(np.prod(self.coef_shape))
        coef = x[:n_coef].reshape(self.coef_shape)
        return Params(coef, x[n_coef:].copy() if self.has_intercept else None)
