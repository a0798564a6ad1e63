"""The training loop of a grid: every model of a regularization grid trained together.

Each model is one fit of :func:`dsoftmax.training.train` — an L2 penalty, a split whose training
rows it takes (or every row), for sgd/adam a learning rate — and follows that fit's algorithm
with a state of its own. What the models share is the data: every evaluation is one pass over
the blocks that computes the sums of every model still running (:class:`StackProblem`), so the
grid costs a pass per step of its slowest model, not one per model.

* L-BFGS: each model is an :class:`~dsoftmax.optim.lbfgs_steps.LbfgsState` (scipy's L-BFGS-B
  step for step, told one evaluation at a time). A pass evaluates every running model at the
  point it asks for; a model that has stopped (converged, or at ``max_iter``) leaves the stack,
  keeps only its result (:func:`~dsoftmax.optim.lbfgs_steps.lbfgs_compact`), and passes are made
  only while one runs. With ``max_running``, at most that many models run at once: the next
  model in order starts when one stops, so the client holds the memory of ``max_running``
  optimizers (:func:`lbfgs_models_within`), however large the grid.
* sgd/adam: the models step in lockstep over one seeded minibatch order of all rows (the order
  a fit of every row draws); a model takes the rows of each batch that are among its training
  rows and divides their sums by the batch's expected training weight,
  ``len(batch) · W_train / n_samples``, an unbiased estimate of its full gradient. Each model
  stops on its own loss (``tol``, ``n_iter_no_change``), and leaves the stack then.

The composition of every pass is the set of models still running, in model order: it follows
from the models' results alone, which makes the whole run deterministic — the same bits on any
number of workers, and after a resume from a :class:`GridRun` checkpoint. No engine is imported:
the loop sees the data through a :class:`StackProblem`, as :mod:`dsoftmax.training` sees a
``Problem``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..objective import Params
from ..optim import apply_updates
from ..optim.lbfgs_steps import (
    LBFGS_MEMORY,
    LbfgsOptions,
    LbfgsState,
    lbfgs_compact,
    lbfgs_start,
    lbfgs_step,
)
from ..sampling import EpochSampler
from ..training import (
    LBFGS_CHECKPOINT_EVERY,
    TrainConfig,
    TrainResult,
    _EarlyStopping,
    _finite_or_raise,
    _FlatLayout,
    _make_optimizer,
    _make_schedule,
    _progress,
    one_blas_thread,
)

logger = logging.getLogger("dsoftmax")

__all__ = [
    "GridCheckpointHook",
    "GridModel",
    "GridRun",
    "StackProblem",
    "lbfgs_models_within",
    "train_grid",
]


class GridModel(NamedTuple):
    """One model of a grid.

    Attributes
    ----------
    split : int
        The split whose training rows it takes; :data:`dsoftmax.kernels.stacked.EVERY_ROW` for
        every row.
    l2 : float
        Its penalty ``λ``.
    learning_rate : float
        Its initial step size (sgd, adam).
    """

    split: int
    l2: float
    learning_rate: float = 0.01


class StackProblem(Protocol):
    """What the grid's loop needs of the data: one pass for many models.

    ``value_and_grad(params, models, rows, divisors)`` returns, per model, its objective over
    its training rows among ``rows`` (every row when None) plus its penalty, and the gradient;
    ``divisors``, when given, replace the models' own weight sums (a minibatch divides by its
    expected weight). ``training_weights(models)`` is each model's total training weight.
    """

    n_samples: int

    def value_and_grad(
        self,
        params: Sequence[Params],
        models: Sequence[GridModel],
        rows: np.ndarray | None = None,
        divisors: Sequence[float] | None = None,
    ) -> list[tuple[float, Params]]: ...

    def training_weights(self, models: Sequence[GridModel]) -> np.ndarray: ...


@dataclass
class GridRun:
    """Where a grid's training stands: what a checkpoint stores and a resumed run starts from.

    ``passes`` counts evaluations (one pass over the data each). L-BFGS keeps one
    :class:`~dsoftmax.optim.lbfgs_steps.LbfgsState` per model started so far in ``lbfgs`` (the
    first ``len(lbfgs)`` models, stopped ones compacted) and ``max_running``, the most models
    that run at once (None: every model); sgd/adam keep per
    model its weights, optimizer state, early-stopping state, running flag, epochs done and the
    loss sum of the epoch under way, with the shared position ``epoch``, ``batches_done``,
    ``step`` in the minibatch order. ``loss_curves`` hold each model's loss per iteration
    (L-BFGS) or epoch (sgd, adam).
    """

    passes: int = 0
    lbfgs: list[LbfgsState] = field(default_factory=list)
    max_running: int | None = None
    params: list[Params] = field(default_factory=list)
    optimizer_states: list[Any] = field(default_factory=list)
    stoppers: list[dict[str, float]] = field(default_factory=list)
    running: list[bool] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    epoch_loss_sums: list[float] = field(default_factory=list)
    loss_curves: list[list[float]] = field(default_factory=list)
    epoch: int = 0
    batches_done: int = 0
    step: int = 0


@dataclass(frozen=True)
class GridCheckpointHook:
    """Called with the :class:`GridRun` every ``every`` passes (L-BFGS) or minibatch steps;
    ``every=None``: every :data:`dsoftmax.training.LBFGS_CHECKPOINT_EVERY` passes, or at the end
    of each epoch."""

    save: Callable[[GridRun], None]
    every: int | None = None


def train_grid(
    problem: StackProblem,
    models: Sequence[GridModel],
    starts: Sequence[Params],
    config: TrainConfig,
    *,
    float32_data: bool = False,
    resume: GridRun | None = None,
    checkpoint: GridCheckpointHook | None = None,
    max_running: int | None = None,
) -> list[TrainResult]:
    """Fit every model of ``models`` from its start in ``starts``; the solver and every setting
    but ``l2`` (and ``learning_rate``) come from ``config``.

    ``max_running`` (L-BFGS) caps the models that train at once, which bounds the optimizers'
    memory (:func:`lbfgs_models_within`); a resumed run keeps the cap it started with, so that
    its results are the bits of an uninterrupted one.

    Returns
    -------
    list of TrainResult
        One per model, in the order of ``models``.
    """
    if len(models) != len(starts) or not models:
        raise ValueError(f"give one start per model: {len(models)} models, {len(starts)} starts.")
    if max_running is not None and (not isinstance(max_running, int) or max_running < 1):
        raise ValueError(f"max_running must be a whole number >= 1 or None, got {max_running!r}.")
    if resume is not None and resume.lbfgs and resume.max_running != max_running:
        logger.info(
            "dsoftmax: the resumed grid keeps the number of models it trains at once as it "
            "started: %s (%s now), so that its results are an uninterrupted run's",
            resume.max_running or "all", max_running or "all",
        )  # fmt: skip
    with one_blas_thread():
        if config.solver == "lbfgs":
            run = resume or GridRun(loss_curves=[[] for _ in models], max_running=max_running)
            return _train_lbfgs(problem, models, starts, config, float32_data, run, checkpoint)
        return _train_minibatch(problem, models, starts, config, resume, checkpoint)


# -- L-BFGS ----------------------------------------------------------------------------------


def _train_lbfgs(
    problem: StackProblem,
    models: Sequence[GridModel],
    starts: Sequence[Params],
    config: TrainConfig,
    float32_data: bool,
    run: GridRun,
    checkpoint: GridCheckpointHook | None,
) -> list[TrainResult]:
    layout = _FlatLayout(starts[0])
    # float32 products put rounding noise into the loss, as in a single fit (training.py).
    options = LbfgsOptions(config.max_iter, config.tol, 1e-7 if float32_data else 0.0)
    every = (checkpoint.every or LBFGS_CHECKPOINT_EVERY) if checkpoint else 0
    # A few models at a time: the bar counts the models done, since iterations restart with each.
    by_model = run.max_running is not None and run.max_running < len(models)
    total, unit = (len(models), "model") if by_model else (config.max_iter, "iter")
    with _progress(config, total, unit) as bar:
        while True:
            _start_models(run, starts, layout, options)
            active = [j for j, state in enumerate(run.lbfgs) if state.running]
            if not active:
                break
            results = problem.value_and_grad(
                [layout.unflatten(run.lbfgs[j].trial) for j in active], [models[j] for j in active]
            )
            for j, (loss, grad) in zip(active, results, strict=True):
                before = run.lbfgs[j].iteration
                state = lbfgs_step(run.lbfgs[j], loss, layout.flatten(grad), options)
                if state.iteration > before:
                    run.loss_curves[j].append(state.loss)
                run.lbfgs[j] = state if state.running else lbfgs_compact(state)
            run.passes += 1
            _report_pass(bar, run, active, len(models), by_model)
            if every and run.passes % every == 0:
                checkpoint.save(run)
    return [
        TrainResult(
            params=layout.unflatten(state.x),
            n_iter=state.iteration,
            converged=state.converged,
            loss_curve=curve or [state.loss],
            n_evaluations=state.n_evals,
            message=state.message,
        )
        for state, curve in zip(run.lbfgs, run.loss_curves, strict=True)
    ]


def _start_models(
    run: GridRun, starts: Sequence[Params], layout: _FlatLayout, options: LbfgsOptions
) -> None:
    """Start the next models in order while fewer than ``run.max_running`` run."""
    cap = len(starts) if run.max_running is None else run.max_running
    running = sum(state.running for state in run.lbfgs)
    while running < cap and len(run.lbfgs) < len(starts):
        run.lbfgs.append(lbfgs_start(layout.flatten(starts[len(run.lbfgs)]), options))
        running += 1


def lbfgs_models_within(budget_bytes: int, n_params: int, memory: int = LBFGS_MEMORY) -> int:
    """How many L-BFGS models of ``n_params`` weights train at once within ``budget_bytes`` of
    the client's memory (at least one).

    A running model holds its ``2 · memory`` pairs and four vectors (iterate, gradient, trial
    point, direction) in float64, and a pass adds its weights to the stack sent to the workers,
    its gradient sums received back and its finished gradient: ``2 · memory + 7`` copies.
    """
    per_model = (2 * memory + 7) * n_params * 8
    return max(1, int(budget_bytes) // per_model)


def _report_pass(
    bar: Any, run: GridRun, active: list[int], n_models: int, by_model: bool
) -> None:
    iterations = max(run.lbfgs[j].iteration for j in active)
    still = sum(state.running for state in run.lbfgs) + n_models - len(run.lbfgs)
    best = min(run.lbfgs[j].loss for j in active)
    bar.update((n_models - still if by_model else iterations) - bar.n)
    bar.set_postfix(models=f"{still}/{n_models}")
    logger.info(
        "dsoftmax: grid pass %d: %d of %d models evaluated, %d still running, lowest loss=%.9g",
        run.passes, len(active), n_models, still, best,
    )  # fmt: skip


# -- sgd, adam -------------------------------------------------------------------------------


def _train_minibatch(
    problem: StackProblem,
    models: Sequence[GridModel],
    starts: Sequence[Params],
    config: TrainConfig,
    resume: GridRun | None,
    checkpoint: GridCheckpointHook | None,
) -> list[TrainResult]:
    sampler = EpochSampler(
        problem.n_samples, config.batch_size, config.random_state,
        shuffle_window=config.shuffle_window,
    )  # fmt: skip
    total_steps = config.max_iter * sampler.n_batches
    optimizers = [
        _make_optimizer(
            dataclasses.replace(config, learning_rate=model.learning_rate),
            _make_schedule(
                dataclasses.replace(config, learning_rate=model.learning_rate), total_steps
            ),
        )
        for model in models
    ]
    run = resume or _fresh_minibatch_run(starts, optimizers)
    stoppers = [_EarlyStopping(config, **stopper) for stopper in run.stoppers]
    # Each model's expected training weight per row of a batch drawn from every row.
    per_row = problem.training_weights(models) / problem.n_samples
    with _progress(config, config.max_iter, "epoch", done=run.epoch) as bar:
        while run.epoch < config.max_iter and any(run.running):
            for rows in sampler.batch_rows(run.epoch, run.batches_done):
                _minibatch_step(problem, models, config, optimizers, run, rows, per_row)
                if checkpoint and checkpoint.every and run.step % checkpoint.every == 0:
                    checkpoint.save(run)
            _end_epoch(run, stoppers, sampler.n_rows)
            bar.update(1)
            logger.info(
                "dsoftmax: grid epoch %d/%d: %d of %d models still running",
                run.epoch, config.max_iter, sum(run.running), len(models),
            )  # fmt: skip
            if checkpoint and not checkpoint.every:
                checkpoint.save(run)
    return [
        TrainResult(
            params=run.params[j],
            n_iter=run.epochs[j],
            converged=not run.running[j],
            loss_curve=run.loss_curves[j],
            n_evaluations=run.epochs[j] * sampler.n_batches,
            optimizer_state=run.optimizer_states[j],
        )
        for j in range(len(models))
    ]


def _fresh_minibatch_run(starts: Sequence[Params], optimizers: list) -> GridRun:
    n_models = len(starts)
    return GridRun(
        params=list(starts),
        optimizer_states=[
            optimizer.init(start) for optimizer, start in zip(optimizers, starts, strict=True)
        ],
        stoppers=[{} for _ in starts],
        running=[True] * n_models,
        epochs=[0] * n_models,
        epoch_loss_sums=[0.0] * n_models,
        loss_curves=[[] for _ in starts],
    )


def _minibatch_step(
    problem: StackProblem,
    models: Sequence[GridModel],
    config: TrainConfig,
    optimizers: list,
    run: GridRun,
    rows: np.ndarray,
    per_row: np.ndarray,
) -> None:
    """One optimizer step of every running model on the batch ``rows``."""
    active = [j for j, running in enumerate(run.running) if running]
    results = problem.value_and_grad(
        [run.params[j] for j in active],
        [models[j] for j in active],
        rows,
        [len(rows) * float(per_row[j]) for j in active],
    )
    where = f"epoch {run.epoch + 1}, step {run.step + 1}"
    for j, (loss, grads) in zip(active, results, strict=True):
        hint = f"lower the learning rate (now {models[j].learning_rate})."
        _finite_or_raise(loss, grads, f"{where} of grid model {j}", hint)
        with np.errstate(over="ignore", invalid="ignore"):
            updates, state = optimizers[j].update(grads, run.optimizer_states[j], run.params[j])
            new_params = apply_updates(run.params[j], updates)
        _finite_or_raise(None, new_params, f"{where} of grid model {j}, after the update", hint)
        run.params[j], run.optimizer_states[j] = new_params, state
        run.epoch_loss_sums[j] += loss * len(rows)
    run.step += 1
    run.batches_done += 1
    run.passes += 1


def _end_epoch(run: GridRun, stoppers: list[_EarlyStopping], n_rows: int) -> None:
    for j, running in enumerate(run.running):
        if not running:
            continue
        run.loss_curves[j].append(run.epoch_loss_sums[j] / n_rows)
        run.epochs[j] += 1
        run.running[j] = not stoppers[j].should_stop(run.loss_curves[j][-1], {})
        run.stoppers[j] = stoppers[j].as_dict()
    run.epoch, run.batches_done = run.epoch + 1, 0
    run.epoch_loss_sums = [0.0] * len(run.running)
