"""Checkpoints of a cross-validated grid: every model's optimizer state, then the refit's.

A fit of :class:`dsoftmax.SoftmaxRegressionCV` goes through three phases: the grid (every
(λ, split) model), its held-out scores, and the refit. Its checkpoints are directories
``<checkpoint_dir>/step-<n>/`` in the layout of :mod:`dsoftmax.persist.checkpoint` (atomic,
locked, pruned to the newest ``keep``), numbered by passes over the data, under their own format
name. A checkpoint holds

* while the grid trains: the :class:`dsoftmax.grid.loop.GridRun` — for L-BFGS the state of
  every model started so far (:class:`~dsoftmax.optim.lbfgs_steps.LbfgsState`: iterate, line
  search and counters, and for a model still running its gradient, trial point, direction and
  ``(s, y)`` memory) and the most models that run at once; for sgd/adam every model's weights,
  optimizer state, early-stopping state and the position in the minibatch order;
* once the grid is done: every model's result and the held-out scores, and then the refit's
  run.

The arrays of all models are stacked (one ``(n_models, …)`` array per field), so a checkpoint
holds a handful of files however large the grid. A resumed fit continues every model from its
exact state: the weights are the bits of an uninterrupted fit. Loading treats the files as
hostile (:mod:`dsoftmax.persist.files`) and checks every array's shape and every counter against
the fit it claims to belong to: the data, the configuration, the grid's models and the folds
(by their digest).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..grid.loop import GridCheckpointHook, GridRun
from ..objective import Params
from ..optim import AdamState, SGDState
from ..optim.lbfgs_steps import (
    FAILED,
    RUNNING,
    STOPPED,
    LbfgsState,
    LineSearch,
    lbfgs_compact,
    pair_products,
    positive_curvatures,
)
from ..training import TrainConfig, TrainResult
from ..validation import is_integer
from .checkpoint import (
    CheckpointError,
    CheckpointManager,
    check_resumable,
    warn_no_checkpoint,
)
from .files import ModelFileError
from .manifest import NUMBER, count, field, typed
from .model import read_model_files, write_model_files

__all__ = [
    "GRID_CHECKPOINT_FORMAT",
    "GridCheckpoint",
    "GridCheckpointManager",
    "GridCheckpointing",
]

logger = logging.getLogger("dsoftmax")

GRID_CHECKPOINT_FORMAT = "dsoftmax-grid-checkpoint"
#: What only a running model's state holds; a stopped one is compacted to its result.
_RUNNING_ARRAYS = ("grad", "trial", "direction", "s", "y")
#: The running models' products of their pairs (``sy``, ``yy``), kept so that a resumed run goes
#: on with the same bits; a checkpoint without them has them computed anew.
_PRODUCT_ARRAYS = ("sy", "yy")
_LBFGS_COUNTERS = (
    "n_pairs", "newest", "iteration", "n_evals", "evals_since_accepted", "search_evals",
    "noisy_iterations", "status",
)  # fmt: skip
#: The optimizer states of sgd/adam models, by name, with the Params fields each holds.
_OPTIMIZER_TREES = {"SGDState": (SGDState, ("velocity",)), "AdamState": (AdamState, ("mu", "nu"))}
_MAX_MESSAGE = 500


@dataclass
class GridCheckpoint:
    """Where a cross-validated fit stands.

    Attributes
    ----------
    step : int
        Passes over the data so far (the grid's, then the refit's).
    grid : GridRun or None
        The grid's run while it trains.
    results : list of TrainResult or None
        The grid's models once trained, with ``scores`` their held-out scores.
    scores : ndarray or None
    refit : GridRun or None
        The refit's run, once it started.
    config : dict
        The :class:`dsoftmax.training.TrainConfig`, as a dict.
    data : dict
        The data's description (fingerprint, shapes, classes, dtype).
    search : dict
        The grid: its models ``[split, l2, learning_rate]``, the folds' digest, ``scoring``,
        ``refit``, ``fit_intercept`` and the class weights.
    """

    step: int
    grid: GridRun | None
    results: list[TrainResult] | None
    scores: np.ndarray | None
    refit: GridRun | None
    config: dict
    data: dict
    search: dict


# -- writing ---------------------------------------------------------------------------------


def _run_record(run: GridRun, prefix: str, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """The JSON record of ``run``; its arrays go to ``arrays`` under ``prefix.``."""
    record: dict[str, Any] = {
        "passes": run.passes, "epoch": run.epoch, "batches_done": run.batches_done,
        "step": run.step, "loss_curves": run.loss_curves,
    }  # fmt: skip
    if run.lbfgs:
        record["kind"] = "lbfgs"
        record["max_running"] = run.max_running
        running = [state for state in run.lbfgs if state.running]
        arrays[f"{prefix}.x"] = np.stack([state.x for state in run.lbfgs])
        for name in _RUNNING_ARRAYS + _PRODUCT_ARRAYS:
            arrays[f"{prefix}.{name}"] = _stack_running(running, name, run.lbfgs[0].x.size)
        arrays[f"{prefix}.loss"] = np.array([state.loss for state in run.lbfgs])
        arrays[f"{prefix}.counters"] = np.array(
            [[getattr(state, name) for name in _LBFGS_COUNTERS] for state in run.lbfgs],
            dtype=np.int64,
        )
        arrays[f"{prefix}.search"] = np.array(
            [[float(value) for value in state.search] for state in run.lbfgs]
        )
        record["messages"] = [state.message for state in run.lbfgs]
        return record
    record["kind"] = "minibatch"
    _stack_params(run.params, f"{prefix}.params", arrays)
    states = run.optimizer_states
    name = type(states[0]).__name__
    record["optimizer"] = name
    arrays[f"{prefix}.optimizer_steps"] = np.array([s.step for s in states], dtype=np.int64)
    for tree in _OPTIMIZER_TREES[name][1]:
        _stack_params([getattr(s, tree) for s in states], f"{prefix}.{tree}", arrays)
    arrays[f"{prefix}.epoch_loss_sums"] = np.array(run.epoch_loss_sums, dtype=np.float64)
    record.update(stoppers=run.stoppers, running=run.running, epochs=run.epochs)
    return record


def _stack_running(running: list[LbfgsState], name: str, n_params: int) -> np.ndarray:
    """The running models' ``name`` arrays stacked (an empty stack when none runs)."""
    if running:
        return np.stack([getattr(state, name) for state in running])
    if name in _PRODUCT_ARRAYS:
        return np.zeros((0, 1, 1))
    return np.zeros((0, 1, n_params) if name in ("s", "y") else (0, n_params))


def _stack_params(params: list[Params], name: str, arrays: dict[str, np.ndarray]) -> None:
    arrays[f"{name}.coef"] = np.stack([np.asarray(p.coef, dtype=np.float64) for p in params])
    if params[0].intercept is not None:
        arrays[f"{name}.intercept"] = np.stack([np.asarray(p.intercept) for p in params])


def _results_record(results: list[TrainResult], arrays: dict[str, np.ndarray]) -> dict:
    _stack_params([result.params for result in results], "results.params", arrays)
    return {
        "n_iter": [result.n_iter for result in results],
        "converged": [bool(result.converged) for result in results],
        "loss_curves": [[float(v) for v in result.loss_curve] for result in results],
        "n_evaluations": [result.n_evaluations for result in results],
        "messages": [result.message for result in results],
    }


class GridCheckpointManager(CheckpointManager):
    """Write, list, verify and prune the checkpoints of one cross-validated fit in
    ``directory`` (see :class:`dsoftmax.persist.CheckpointManager`)."""

    def save(self, checkpoint: GridCheckpoint) -> str:  # type: ignore[override]
        """Write ``checkpoint`` atomically, then prune; returns its path."""
        arrays: dict[str, np.ndarray] = {}
        record: dict[str, Any] = {
            "step": checkpoint.step, "config": checkpoint.config, "data": checkpoint.data,
            "search": checkpoint.search,
        }  # fmt: skip
        for name in ("grid", "refit"):
            run = getattr(checkpoint, name)
            record[name] = None if run is None else _run_record(run, name, arrays)
        record["results"] = (
            None if checkpoint.results is None else _results_record(checkpoint.results, arrays)
        )
        if checkpoint.scores is not None:
            arrays["scores"] = np.asarray(checkpoint.scores, dtype=np.float64)
        for name, array in arrays.items():
            # A model not evaluated yet has no loss, and a split may score NaN.
            unchecked = name.endswith(".loss") or name == "scores"
            if array.dtype.kind == "f" and not unchecked and not np.isfinite(array).all():
                raise CheckpointError(
                    f"refusing to checkpoint non-finite {name} at step {checkpoint.step}."
                )
        write_model_files(
            self._step_location(checkpoint.step),
            arrays,
            {"grid_checkpoint": record},
            format_name=GRID_CHECKPOINT_FORMAT,
            force=True,
        )
        self._prune(checkpoint.step)
        return self._path(checkpoint.step)

    def _verified(self, step: int) -> GridCheckpoint:  # type: ignore[override]
        path = self._path(step)
        try:
            arrays, manifest = read_model_files(
                self._step_location(step), format_name=GRID_CHECKPOINT_FORMAT, where=path
            )
            return _checkpoint_of(manifest, arrays, path)
        except ModelFileError as error:
            raise CheckpointError(f"checkpoint {path!r} is damaged: {error}") from None


# -- reading ---------------------------------------------------------------------------------


class _Shapes:
    """What every array of a checkpoint must look like, from its own description."""

    def __init__(self, record: dict, path: str) -> None:
        context = f"the manifest of {path!r}"
        data = field(record, "data", (dict,), context)
        search = field(record, "search", (dict,), context)
        self.path = path
        self.n_classes = count(field(data, "n_classes", (int,), context), f"n_classes in {path}")
        self.n_features = count(field(data, "n_features", (int,), context), context)
        self.intercept = typed(field(search, "fit_intercept", (bool,), context), (bool,), context)
        self.n_models = len(typed(field(search, "models", (list,), context), (list,), context))
        self.n_params = self.n_classes * self.n_features + (self.n_classes if self.intercept else 0)

    def array(self, arrays: dict, name: str, shape: tuple, kind: str = "f") -> np.ndarray:
        if name not in arrays:
            raise ModelFileError(f"checkpoint {self.path!r} misses the array {name!r}.")
        array = arrays[name]
        if array.shape != shape or array.dtype.kind != kind or array.dtype.itemsize != 8:
            raise ModelFileError(
                f"checkpoint {self.path!r}: {name} has shape {array.shape} and dtype "
                f"{array.dtype}, but the fit needs shape {shape} of 64-bit "
                f"{'floats' if kind == 'f' else 'integers'}."
            )
        if kind == "f" and not name.endswith((".loss", "scores")) and not np.isfinite(array).all():
            raise ModelFileError(f"checkpoint {self.path!r}: {name} holds non-finite values.")
        return array

    def params(self, arrays: dict, name: str, n_models: int) -> list[Params]:
        K, d = self.n_classes, self.n_features
        coef = self.array(arrays, f"{name}.coef", (n_models, K, d))
        intercept = (
            self.array(arrays, f"{name}.intercept", (n_models, K)) if self.intercept else None
        )
        return [
            Params(coef[j].copy(), None if intercept is None else intercept[j].copy())
            for j in range(n_models)
        ]


def _checkpoint_of(manifest: dict, arrays: dict, path: str) -> GridCheckpoint:
    context = f"the manifest of {path!r}"
    record = field(manifest, "grid_checkpoint", (dict,), context)
    shapes = _Shapes(record, path)
    expected = {"step", "config", "data", "search", "grid", "refit", "results"}
    if set(record) != expected:
        raise ModelFileError(f"{context}: unexpected fields {sorted(set(record) ^ expected)[:8]}.")
    config = field(record, "config", (dict,), context)
    for name, value in config.items():
        typed(value, (type(None), bool, int, float, str), f"{name!r} in the config of {path!r}")
    grid = record["grid"]
    refit = record["refit"]
    results = record["results"]
    scores = arrays.get("scores")
    if (grid is None) == (results is None):
        raise ModelFileError(f"{context}: it must hold either a running grid or its results.")
    if (results is None) != (scores is None) or (results is None and refit is not None):
        raise ModelFileError(f"{context}: the grid's results, scores and refit do not go together.")
    if scores is not None and (scores.dtype != np.float64 or scores.size != shapes.n_models):
        raise ModelFileError(f"checkpoint {path!r}: scores do not match the grid's models.")
    return GridCheckpoint(
        step=count(record["step"], f"the step of {path!r}"),
        grid=None if grid is None else _run_of(grid, arrays, "grid", shapes, shapes.n_models),
        results=None if results is None else _results_of(results, arrays, shapes),
        scores=scores,
        refit=None if refit is None else _run_of(refit, arrays, "refit", shapes, 1),
        config=dict(config),
        data=dict(record["data"]),
        search=dict(record["search"]),
    )


def _run_of(record: Any, arrays: dict, prefix: str, shapes: _Shapes, n_models: int) -> GridRun:
    where = f"the {prefix} run of {shapes.path!r}"
    record = typed(record, (dict,), where)
    kind = field(record, "kind", (str,), where)
    curves = _curves(field(record, "loss_curves", (list,), where), n_models, where)
    run = GridRun(
        passes=count(field(record, "passes", (int,), where), where),
        epoch=count(field(record, "epoch", (int,), where), where),
        batches_done=count(field(record, "batches_done", (int,), where), where),
        step=count(field(record, "step", (int,), where), where),
        loss_curves=curves,
    )
    if kind == "lbfgs":
        run.lbfgs = _lbfgs_states(record, arrays, prefix, shapes, n_models, where)
        run.max_running = _max_running(record, where)
        return run
    if kind != "minibatch":
        raise ModelFileError(f"{where}: unknown kind {kind!r}.")
    run.params = shapes.params(arrays, f"{prefix}.params", n_models)
    name = field(record, "optimizer", (str,), where)
    if name not in _OPTIMIZER_TREES:
        raise ModelFileError(f"{where}: unknown optimizer state {name!r}.")
    state_type, trees = _OPTIMIZER_TREES[name]
    steps = shapes.array(arrays, f"{prefix}.optimizer_steps", (n_models,), "i")
    if np.any(steps < 0):
        raise ModelFileError(f"{where}: negative optimizer steps.")
    parts = {tree: shapes.params(arrays, f"{prefix}.{tree}", n_models) for tree in trees}
    run.optimizer_states = [
        state_type(int(steps[j]), *(parts[tree][j] for tree in trees)) for j in range(n_models)
    ]
    run.epoch_loss_sums = [
        float(v) for v in shapes.array(arrays, f"{prefix}.epoch_loss_sums", (n_models,))
    ]
    run.stoppers = [_stopper(s, where) for s in _per_model(record, "stoppers", n_models, where)]
    run.running = [typed(v, (bool,), where) for v in _per_model(record, "running", n_models, where)]
    run.epochs = [count(v, where) for v in _per_model(record, "epochs", n_models, where)]
    return run


def _lbfgs_states(
    record: dict, arrays: dict, prefix: str, shapes: _Shapes, n_models: int, where: str
) -> list[LbfgsState]:
    """The states of the models started so far: stopped ones compacted to their result, running
    ones whole."""
    n = shapes.n_params
    stored = arrays.get(f"{prefix}.counters")
    n_started = stored.shape[0] if stored is not None and stored.ndim == 2 else 0
    if not 1 <= n_started <= n_models:
        raise ModelFileError(f"{where}: {n_started} models started, the grid has {n_models}.")
    counters = shapes.array(arrays, f"{prefix}.counters", (n_started, len(_LBFGS_COUNTERS)), "i")
    running = [j for j in range(n_started) if int(counters[j, -1]) == RUNNING]
    cap = _max_running(record, where)
    if cap is not None and len(running) > cap:
        raise ModelFileError(f"{where}: {len(running)} models run, at most {cap} may.")
    x = shapes.array(arrays, f"{prefix}.x", (n_started, n))
    stored = arrays.get(f"{prefix}.s")
    memory = stored.shape[1] if stored is not None and stored.ndim == 3 else 1
    pair_shape, vector_shape = (len(running), memory, n), (len(running), n)
    parts = {
        name: shapes.array(
            arrays, f"{prefix}.{name}", pair_shape if name in ("s", "y") else vector_shape
        )
        for name in _RUNNING_ARRAYS
    }
    product_shape = (len(running), memory, memory)
    for name in _PRODUCT_ARRAYS:
        if f"{prefix}.{name}" in arrays:
            parts[name] = shapes.array(arrays, f"{prefix}.{name}", product_shape)
    loss = shapes.array(arrays, f"{prefix}.loss", (n_started,))
    search = shapes.array(arrays, f"{prefix}.search", (n_started, len(LineSearch._fields)))
    messages = _per_model(record, "messages", n_started, where)
    running_rows = {j: row for row, j in enumerate(running)}
    states = []
    for j in range(n_started):
        values = dict(zip(_LBFGS_COUNTERS, (int(v) for v in counters[j]), strict=True))
        if min(values.values()) < 0 or values["status"] > FAILED or values["n_pairs"] > memory:
            raise ModelFileError(f"{where}: model {j} has counters out of range {values}.")
        if values["newest"] >= memory:
            raise ModelFileError(f"{where}: model {j}'s memory position is out of range.")
        fields = dict(zip(LineSearch._fields, (float(v) for v in search[j]), strict=True))
        fields["stage"], fields["bracketed"] = int(fields["stage"]), int(fields["bracketed"])
        state = LbfgsState(
            x=x[j].copy(),
            **_running_part(
                parts, running_rows, j, x[j], n, values["n_pairs"], values["newest"]
            ),
            loss=float(loss[j]),
            search=LineSearch(**fields),
            message=typed(messages[j], (str,), where)[:_MAX_MESSAGE],
            **values,
        )
        if state.running and not positive_curvatures(state):
            raise ModelFileError(
                f"{where}: model {j}'s memory holds a pair whose sᵀy or yᵀy is not positive; "
                "a run only keeps pairs of positive curvature."
            )
        states.append(state if state.running else lbfgs_compact(state))
    return states


def _max_running(record: dict, where: str) -> int | None:
    cap = field(record, "max_running", (int, type(None)), where)
    if cap is not None and cap < 1:
        raise ModelFileError(f"{where}: max_running must be >= 1 or null, got {cap!r}.")
    return cap


def _running_part(
    parts: dict, rows: dict[int, int], j: int, x: np.ndarray, n: int, n_pairs: int, newest: int
) -> dict:
    """Model ``j``'s arrays that only a running state holds, at row ``rows[j]`` of ``parts``
    (empty for a stopped one); the products of its pairs computed anew where the checkpoint has
    none."""
    if j in rows:
        part = {name: parts[name][rows[j]].copy() for name in _RUNNING_ARRAYS + _PRODUCT_ARRAYS
                if name in parts}  # fmt: skip
        if len(part) < len(_RUNNING_ARRAYS) + len(_PRODUCT_ARRAYS):
            part["sy"], part["yy"] = pair_products(part["s"], part["y"], n_pairs, newest)
        return part
    empty, no_pairs, no_products = np.zeros(0), np.zeros((0, n)), np.zeros((0, 0))
    return {
        "grad": empty, "trial": x, "direction": empty, "s": no_pairs, "y": no_pairs,
        "sy": no_products, "yy": no_products,
    }  # fmt: skip


def _results_of(record: Any, arrays: dict, shapes: _Shapes) -> list[TrainResult]:
    where = f"the grid's results in {shapes.path!r}"
    record = typed(record, (dict,), where)
    M = shapes.n_models
    params = shapes.params(arrays, "results.params", M)
    curves = _curves(field(record, "loss_curves", (list,), where), M, where)
    fields = {name: _per_model(record, name, M, where)
              for name in ("n_iter", "converged", "n_evaluations", "messages")}  # fmt: skip
    return [
        TrainResult(
            params=params[j],
            n_iter=count(fields["n_iter"][j], where),
            converged=typed(fields["converged"][j], (bool,), where),
            loss_curve=curves[j],
            n_evaluations=count(fields["n_evaluations"][j], where),
            message=typed(fields["messages"][j], (str,), where)[:_MAX_MESSAGE],
        )
        for j in range(M)
    ]


def _per_model(record: dict, name: str, n_models: int, where: str) -> list:
    values = field(record, name, (list,), where)
    if len(values) != n_models:
        raise ModelFileError(f"{where}: {name} has {len(values)} entries for {n_models} models.")
    return values


def _curves(values: list, n_models: int, where: str) -> list[list[float]]:
    if len(values) != n_models:
        raise ModelFileError(f"{where}: {len(values)} loss curves for {n_models} models.")
    return [
        [float(typed(v, NUMBER, f"a loss in {where}")) for v in typed(curve, (list,), where)]
        for curve in values
    ]


def _stopper(value: Any, where: str) -> dict[str, float]:
    stopper = typed(value, (dict,), f"an early-stopping state in {where}")
    if not set(stopper) <= {"best", "stale_epochs"}:
        raise ModelFileError(f"{where}: unexpected early-stopping state {sorted(stopper)[:4]}.")
    typed(stopper.get("best", 0.0), NUMBER, where)
    count(stopper.get("stale_epochs", 0), where)
    return dict(stopper)


# -- the checkpoints of one fit --------------------------------------------------------------


class GridCheckpointing:
    """The checkpoints of one :class:`dsoftmax.SoftmaxRegressionCV` fit: where to resume from,
    and the hooks that write them.

    Build it with :meth:`open` before the folds are drawn (a resumed fit without a
    ``random_state`` takes the seed of the interrupted one), then :meth:`check` the grid.
    """

    def __init__(
        self, manager: GridCheckpointManager, found: GridCheckpoint | None, config: TrainConfig,
        description: dict, every: int | None,
    ) -> None:  # fmt: skip
        self.manager = manager
        self.found = found
        self.config = config
        self.description = description
        self.every = every
        self.search: dict[str, Any] = {}
        self._results: list[TrainResult] | None = None
        self._scores: np.ndarray | None = None
        self._grid_passes = 0
        self._grid_run: GridRun | None = None if found is None else found.grid

    @classmethod
    def open(
        cls, model: Any, data: Any, config: TrainConfig, resume: bool | int
    ) -> GridCheckpointing | None:
        """The checkpointing of a fit of ``model`` (None without ``checkpoint_dir``)."""
        if resume is not True and resume is not False and (not is_integer(resume) or resume < 0):
            raise TypeError(
                f"resume must be True, False or the step number of a checkpoint, got {resume!r}."
            )
        if model.checkpoint_dir is None:
            if resume is not False:
                raise ValueError(
                    f"resume={resume!r} needs checkpoint_dir: where the checkpoints are."
                )
            return None
        manager = GridCheckpointManager(
            model.checkpoint_dir, keep=int(model.keep_checkpoints),
            storage_options=model.storage_options,
        )  # fmt: skip
        if resume is False and manager.steps():
            raise ValueError(
                f"checkpoint_dir {model.checkpoint_dir!r} already holds checkpoints (newest: "
                f"step {manager.steps()[-1]}); pass resume=True to continue that fit, or use an "
                "empty directory. Nothing was changed."
            )
        found = None
        if resume is not False:
            found = manager.latest() if resume is True else manager.load(int(resume))
            if found is None:
                warn_no_checkpoint(manager.directory)
        if found is not None and model.random_state is None:
            seed = found.config.get("random_state")
            if is_integer(seed):
                config = dataclasses.replace(config, random_state=int(seed))
        every = None if model.checkpoint_every is None else int(model.checkpoint_every)
        return cls(manager, found, config, data.describe(), every)

    def check(
        self, models: list, folds: Any, fit_intercept: bool, class_weight: np.ndarray | None,
        scoring: str, refit: bool,
    ) -> None:  # fmt: skip
        """Record the grid; refuse a checkpoint of another fit."""
        self.search = {
            "models": [[int(m.split), float(m.l2), float(m.learning_rate)] for m in models],
            "folds": folds.digest(),
            "fit_intercept": bool(fit_intercept),
            "class_weight": None if class_weight is None else [float(w) for w in class_weight],
            "scoring": scoring,
            "refit": bool(refit),
        }
        found = self.found
        if found is None:
            return
        where = self.manager.directory
        check_resumable(found, self.description, asdict(self.config), where)
        for key, value in self.search.items():
            if found.search.get(key) != value:
                what = "splits" if key == "folds" else key
                raise CheckpointError(
                    f"checkpoint {where!r} was made for another grid: its {what} differ from "
                    "this fit's. Resume with the same settings and data, or start afresh in "
                    "another (or an emptied) checkpoint_dir."
                )
        logger.info("dsoftmax: resuming the grid from step %d in %s", found.step, where)
        self._warn_of_models_stopped_early(found, where)

    def _warn_of_models_stopped_early(self, found: GridCheckpoint, where: str) -> None:
        """Warn when ``max_iter`` grew but the checkpoint's grid is finished with models (or a
        refit) that stopped at the old one: they are kept as they are."""
        previous = found.config.get("max_iter")
        if not is_integer(previous) or self.config.max_iter <= previous or found.results is None:
            return
        stopped = sum(not result.converged for result in found.results)
        refit = found.refit is not None and any(
            state.status == STOPPED for state in found.refit.lbfgs
        )
        if stopped or refit:
            what = f"{stopped} of its {len(found.results)} models" if stopped else "its refit"
            also = " (and its refit)" if stopped and refit else ""
            warnings.warn(
                f"the grid in checkpoint {where!r} (step {found.step}) is finished, {what}{also} "
                f"stopped at max_iter={previous}; a resumed fit keeps what a finished grid "
                f"trained as it is, so max_iter={self.config.max_iter} does not train them "
                "further. Fit afresh (without resume, in another checkpoint_dir) to train them "
                "longer.",
                UserWarning,
                stacklevel=4,
            )

    def hook(self, phase: str) -> GridCheckpointHook:
        """The hook of the grid's run (``phase="grid"``) or of the refit's."""

        def save(run: GridRun) -> None:
            if phase == "grid":
                self._grid_run = run
                checkpoint = self._checkpoint(run.passes, grid=run)
            else:
                checkpoint = self._checkpoint(self._grid_passes + run.passes, refit=run)
            path = self.manager.save(checkpoint)
            logger.info("dsoftmax: checkpoint at step %d: %s", checkpoint.step, path)

        return GridCheckpointHook(save, self.every)

    def grid_done(self, results: list[TrainResult], scores: np.ndarray) -> None:
        """Write the checkpoint of the trained grid and its scores."""
        self._results, self._scores = results, np.asarray(scores, dtype=np.float64)
        # The grid's passes: its run's count once a checkpoint saw the run (models trained a
        # few at a time take more passes than any one model's evaluations), else the longest
        # model's evaluations.
        longest = max(result.n_evaluations for result in results)
        self._grid_passes = longest if self._grid_run is None else self._grid_run.passes
        self.manager.save(self._checkpoint(self._grid_passes))

    def finished_grid(self) -> tuple[list[TrainResult], np.ndarray]:
        """The grid's results and scores of the checkpoint resumed from."""
        assert self.found is not None and self.found.results is not None
        self._results, self._scores = self.found.results, self.found.scores
        refit_passes = 0 if self.found.refit is None else self.found.refit.passes
        self._grid_passes = self.found.step - refit_passes
        return self._results, self._scores

    def _checkpoint(
        self, step: int, grid: GridRun | None = None, refit: GridRun | None = None
    ) -> GridCheckpoint:
        return GridCheckpoint(
            step=step, grid=grid, results=None if grid is not None else self._results,
            scores=None if grid is not None else self._scores, refit=refit,
            config=asdict(self.config), data=self.description, search=self.search,
        )  # fmt: skip
