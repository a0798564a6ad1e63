"""The training loop: full-batch L-BFGS, or minibatch SGD/Adam over seeded epochs.

Both run against the :class:`dsoftmax.engine.Engine` protocol, so the same loop drives the Dask
engine in production and the in-process engine in tests. Each step logs one greppable line at
INFO (``dsoftmax: epoch 3/20 loss=...``) and advances a tqdm bar when ``verbose`` asks for one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .engine import Engine
from .objective import BlockMetrics, Params, finalize
from .optim import OPTIMIZERS, apply_updates, make_schedule, minimize_lbfgs
from .sampling import EpochSampler, RowBatch, rows_to_blocks

logger = logging.getLogger("dsoftmax")

__all__ = ["DivergenceError", "TrainConfig", "TrainResult", "train"]

SOLVERS = ("lbfgs", "sgd", "adam")


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


def train(
    engine: Engine,
    params: Params,
    config: TrainConfig,
    *,
    float32_data: bool = False,
    optimizer_state: Any = None,
    start_epoch: int = 0,
) -> TrainResult:
    """Fit ``params`` on the rows held by ``engine``; the solver comes from ``config``.

    ``optimizer_state`` and ``start_epoch`` continue an earlier minibatch run (``partial_fit``):
    epoch ``e`` always uses the same shuffled order for the same seed.
    """
    if config.solver == "lbfgs":
        return _train_lbfgs(engine, params, config, float32_data)
    return _train_minibatch(engine, params, config, optimizer_state, start_epoch)


def _finite_or_raise(loss: float, grad: Params, where: str, hint: str) -> None:
    if (
        math.isfinite(loss)
        and np.isfinite(grad.coef).all()
        and (grad.intercept is None or np.isfinite(grad.intercept).all())
    ):
        return
    raise DivergenceError(f"the loss or gradient is not finite ({loss!r}) at {where}; {hint}")


def _progress(config: TrainConfig, total: int, unit: str) -> tqdm:
    # disable=None turns the bar off when stderr is not a terminal.
    return tqdm(total=total, unit=unit, disable=None if config.verbose else True, leave=False)


def _train_lbfgs(
    engine: Engine, params: Params, config: TrainConfig, float32_data: bool
) -> TrainResult:
    layout = _FlatLayout(params)
    loss_curve: list[float] = []

    def loss_and_flat_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        current = layout.unflatten(x)
        loss, grad = finalize(engine.sums(current), current, config.l2)
        _finite_or_raise(
            loss,
            grad,
            f"L-BFGS evaluation {len(loss_curve) + 1}",
            "check the data for extreme values or use a larger l2.",
        )
        return loss, layout.flatten(grad)

    with _progress(config, config.max_iter, "iter") as bar:

        def on_iteration(iteration: int, x: np.ndarray, loss: float) -> None:
            loss_curve.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.6g}")
            logger.info("dsoftmax: iteration %d/%d loss=%.9g", iteration, config.max_iter, loss)

        # float32 products carry ~1e-7 relative rounding noise into the loss; the driver must not
        # chase improvements below it (see dsoftmax.optim.lbfgs).
        result = minimize_lbfgs(
            loss_and_flat_grad,
            layout.flatten(params),
            max_iter=config.max_iter,
            tol=config.tol,
            rel_noise=1e-6 if float32_data else 0.0,
            callback=on_iteration,
        )
    return TrainResult(
        params=layout.unflatten(result.x),
        n_iter=result.n_iter,
        converged=result.converged,
        loss_curve=loss_curve or [result.loss],
        n_evaluations=result.n_evals,
        message=result.message,
    )


def _train_minibatch(
    engine: Engine, params: Params, config: TrainConfig, optimizer_state: Any, start_epoch: int
) -> TrainResult:
    train_rows, validation = _validation_split(engine, config)
    sampler = EpochSampler(train_rows, config.batch_size, config.random_state)
    schedule = _make_schedule(config, total_steps=config.max_iter * sampler.n_batches)
    optimizer = _make_optimizer(config, schedule)
    state = optimizer_state if optimizer_state is not None else optimizer.init(params)
    stopper = _EarlyStopping(config)
    result = TrainResult(params=params, n_iter=0, converged=False)
    mean_weight = _mean_row_weight(engine, params, sampler)

    with _progress(config, config.max_iter, "epoch") as bar:
        for epoch in range(start_epoch, start_epoch + config.max_iter):
            epoch_loss = 0.0
            for step, batch in enumerate(sampler.batches(epoch, engine.chunk_rows)):
                sums = engine.sums(params, batch)
                # Divide by the batch's *expected* weight, not its actual weight: a batch that
                # happens to hold only light rows must not count as much as one of heavy rows.
                expected = sums._replace(weight_sum=batch.n_rows * mean_weight)
                loss, grads = finalize(expected, params, config.l2)
                _finite_or_raise(
                    loss,
                    grads,
                    f"epoch {epoch + 1}, step {step + 1}",
                    f"lower the learning rate (now {config.learning_rate}).",
                )
                updates, state = optimizer.update(grads, state, params)
                params = apply_updates(params, updates)
                epoch_loss += loss * batch.n_rows
            result.loss_curve.append(epoch_loss / sampler.n_rows)
            scores = _validation_scores(engine, params, validation)
            if scores:
                result.validation_curve.append(scores)
            result.n_iter += 1
            _report_epoch(bar, config, epoch, result.loss_curve[-1], scores)
            if stopper.should_stop(result.loss_curve[-1], scores):
                result.converged = True
                break
    result.params, result.optimizer_state = params, state
    return result


def _mean_row_weight(engine: Engine, params: Params, sampler: EpochSampler) -> float:
    """Mean weight of a training row (1 without sample or class weights).

    With weights, ``(n_rows / n_batch) · Σ_batch w_i ∇ℓ_i / S`` is an unbiased estimate of the
    full gradient ``Σ_i w_i ∇ℓ_i / S``; normalizing each batch by its own weight is not.
    """
    if not engine.weighted:
        return 1.0
    totals = engine.metrics(params, rows_to_blocks(sampler.rows, engine.chunk_rows))
    return totals.weight_sum / sampler.n_rows


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


def _validation_split(engine: Engine, config: TrainConfig) -> tuple[Any, RowBatch | None]:
    if not config.early_stopping:
        return engine.n_samples, None
    from .sampling import split_validation

    train_rows, validation_rows = split_validation(
        engine.n_samples, config.validation_fraction, config.random_state
    )
    return train_rows, rows_to_blocks(validation_rows, engine.chunk_rows)


def _validation_scores(engine: Engine, params: Params, validation: RowBatch | None) -> dict:
    if validation is None:
        return {}
    metrics: BlockMetrics = engine.metrics(params, validation)
    return {
        "val_loss": metrics.loss_sum / metrics.weight_sum,
        "val_accuracy": metrics.correct_sum / metrics.weight_sum,
    }


def _report_epoch(bar: tqdm, config: TrainConfig, epoch: int, loss: float, scores: dict) -> None:
    bar.update(1)
    bar.set_postfix(loss=f"{loss:.5g}", **{k: f"{v:.4g}" for k, v in scores.items()})
    extra = "".join(f" {name}={value:.6g}" for name, value in scores.items())
    logger.info("dsoftmax: epoch %d/%d loss=%.9g%s", epoch + 1, config.max_iter, loss, extra)


class _EarlyStopping:
    """Stop when the monitored loss has not fallen below ``best - tol`` for ``n_iter_no_change``
    epochs (an absolute ``tol``, as scikit-learn's SGD and MLP estimators): the validation loss
    with early stopping, else the mean training loss of the epoch."""

    def __init__(self, config: TrainConfig) -> None:
        self.tol = config.tol
        self.patience = config.n_iter_no_change
        self.best = math.inf
        self.stale_epochs = 0

    def should_stop(self, train_loss: float, scores: dict) -> bool:
        value = scores.get("val_loss", train_loss)
        self.stale_epochs = 0 if value < self.best - self.tol else self.stale_epochs + 1
        self.best = min(self.best, value)
        return self.stale_epochs >= self.patience


class _FlatLayout:
    """Params ⇄ one float64 vector, as scipy's L-BFGS wants it."""

    def __init__(self, params: Params) -> None:
        self.coef_shape = params.coef.shape
        self.has_intercept = params.intercept is not None

    def flatten(self, params: Params) -> np.ndarray:
        parts = [np.ravel(params.coef)]
        if self.has_intercept:
            parts.append(np.ravel(params.intercept))
        return np.concatenate(parts).astype(np.float64)

    def unflatten(self, x: np.ndarray) -> Params:
        n_coef = int(np.prod(self.coef_shape))
        coef = x[:n_coef].reshape(self.coef_shape)
        return Params(coef, x[n_coef:].copy() if self.has_intercept else None)
