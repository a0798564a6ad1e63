"""Checkpoints: self-describing, atomic, pickle-free snapshots of a fit, and exact resume.

A checkpoint is a directory ``<checkpoint_dir>/step-<n>/`` in the model-file layout
(:mod:`dsoftmax.persist.model`): ``.npy`` arrays and a ``manifest.json`` holding the sha256 of
each. It holds the weights, the optimizer state (momentum or Adam moments), the position in the
training (optimizer steps, epoch, batches done in that epoch), the loss curves, the early-stopping
state, the configuration, a description of the data (fingerprint, shapes, classes, dtype) and the
format version. The minibatch order is a function of the seed and the epoch, so the position is
all the sampler needs.

Writes are atomic and locked (:func:`dsoftmax.persist.files.replace_directory`); on object stores
the manifest is written last and marks the checkpoint complete. Only the client writes
checkpoints. After each write, the checkpoints of later steps (left by the run a resumed fit
replaces) and all but the newest ``keep`` are removed.

Loading treats a checkpoint as hostile, as model files are, and checks every state array against
the weights: shape and dtype of the weights against the data description, and of every optimizer
array against the weights. A damaged checkpoint is named with the file at fault;
:meth:`CheckpointManager.latest` skips damaged ones (with a warning naming each) and returns the
newest valid one.

Resuming a minibatch fit (sgd, adam) from a checkpoint replays the exact same computations, so the
final weights are bit-identical to an uninterrupted run. L-BFGS resumes from the checkpointed
weights with an empty curvature memory (scipy's L-BFGS-B cannot be seeded with one): it reaches
the same optimum, within the fit's tolerance, in a few more iterations.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..objective import Params
from ..optim import AdamState, SGDState
from ..training import TrainingState
from .files import MANIFEST, ModelFileError, locate, remove_directory
from .manifest import NUMBER, count, field, typed
from .model import read_model_files, write_model_files

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "CheckpointManager",
    "check_resumable",
    "warn_no_checkpoint",
]

logger = logging.getLogger("dsoftmax")

CHECKPOINT_FORMAT = "dsoftmax-checkpoint"
_STEP_DIR = re.compile(r"^step-(\d{10})$")
#: NamedTuple types a checkpoint may rebuild; nothing else is ever constructed from a file.
_STATE_TYPES = {cls.__name__: cls for cls in (Params, SGDState, AdamState)}
#: The optimizer state each solver's checkpoints hold.
_OPTIMIZER_STATES = {"sgd": SGDState, "adam": AdamState, "lbfgs": type(None)}


class CheckpointError(ValueError):
    """A checkpoint is damaged, tampered with, missing, or belongs to another fit."""


@dataclass
class Checkpoint:
    """A :class:`dsoftmax.training.TrainingState` with the fit it belongs to.

    Attributes
    ----------
    state : TrainingState
        Weights, optimizer state, position, curves and early-stopping state.
    config : dict
        The :class:`dsoftmax.training.TrainConfig` of the fit, as a dict.
    data : dict
        ``fingerprint``, ``n_samples``, ``n_features``, ``n_classes``, ``dtype``, ``classes``.
    """

    state: TrainingState
    config: dict
    data: dict


def _flatten(value: Any, name: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON description of ``value``; its arrays go to ``arrays`` under dotted names."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        arrays[name] = value
        return {"array": name}
    if isinstance(value, tuple) and type(value).__name__ in _STATE_TYPES:
        return {
            "type": type(value).__name__,
            "fields": {
                f: _flatten(getattr(value, f), f"{name}.{f}", arrays) for f in value._fields
            },
        }
    if isinstance(value, list | dict):
        # Curves and counters: plain JSON, tagged so they never read as arrays or types.
        return {"json": value}
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint ({name}).")


def _unflatten(doc: Any, arrays: dict[str, np.ndarray]) -> Any:
    if doc is None or isinstance(doc, bool | int | float | str):
        return doc
    if isinstance(doc, dict) and set(doc) == {"json"}:
        return doc["json"]
    if isinstance(doc, dict) and set(doc) == {"array"}:
        name = doc["array"]
        if not isinstance(name, str) or name not in arrays:
            raise ModelFileError(f"the manifest names a missing array {str(name)[:80]!r}.")
        return arrays[name]
    if (
        isinstance(doc, dict)
        and set(doc) == {"type", "fields"}
        and isinstance(doc["type"], str)
        and doc["type"] in _STATE_TYPES
    ):
        cls = _STATE_TYPES[doc["type"]]
        fields = typed(doc["fields"], (dict,), f"the fields of {doc['type']}")
        if set(fields) != set(cls._fields):
            raise ModelFileError(f"{doc['type']} has the wrong fields {sorted(fields)[:8]}.")
        return cls(**{name: _unflatten(fields[name], arrays) for name in cls._fields})
    raise ModelFileError(f"unexpected entry in the manifest: {str(doc)[:80]!r}.")


class CheckpointManager:
    """Write, list, verify and prune the checkpoints of one fit in ``directory``.

    Parameters
    ----------
    directory : str
        Local path or fsspec URL; created on first write. A local path is resolved once (a
        symbolic link to the directory is followed); inside it nothing is followed.
    keep : int, default=3
        Newest checkpoints kept after each write.
    storage_options : dict, optional
        fsspec options for URLs.
    """

    def __init__(
        self, directory: str, *, keep: int = 3, storage_options: dict | None = None
    ) -> None:
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be an integer >= 1, got {keep!r}.")
        self.directory = str(directory).rstrip("/")
        self.keep = keep
        self.storage_options = storage_options
        self._location = locate(self.directory, storage_options)

    def _path(self, step: int) -> str:
        return f"{self.directory}/step-{step:010d}"

    def _step_location(self, step: int) -> Any:
        return self._location.child(f"step-{step:010d}")

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints (those with a manifest), oldest first. A step
        directory that is a symbolic link is listed too, and refused when loaded."""
        names = _local_entries(self._location.root) if self._location.local else self._listing()
        found = []
        for name, complete in names:
            match = _STEP_DIR.match(name)
            if match and complete:
                found.append(int(match.group(1)))
        return sorted(found)

    def _listing(self) -> list[tuple[str, bool]]:
        fs, root = self._location.fs, self._location.root
        if not fs.exists(root):
            return []
        fs.invalidate_cache(root)
        entries = []
        for entry in fs.ls(root, detail=False):
            entry = entry.rstrip("/")
            entries.append((entry.rsplit("/", 1)[-1], fs.exists(f"{entry}/{MANIFEST}")))
        return entries

    def save(self, checkpoint: Checkpoint) -> str:
        """Write ``checkpoint`` atomically, then prune; returns its path."""
        state = checkpoint.state
        for name, array in (("coef", state.params.coef), ("intercept", state.params.intercept)):
            if array is not None and not np.isfinite(array).all():
                raise CheckpointError(
                    f"refusing to checkpoint non-finite {name} at step {state.step}."
                )
        arrays: dict[str, np.ndarray] = {}
        record = {
            "state": {
                f.name: _flatten(getattr(state, f.name), f.name, arrays)
                for f in dataclasses.fields(state)
            },
            "config": checkpoint.config,
            "data": checkpoint.data,
        }
        # A step directory is this manager's own: a damaged one there is replaced, not refused.
        write_model_files(
            self._step_location(state.step),
            arrays,
            {"checkpoint": record},
            format_name=CHECKPOINT_FORMAT,
            force=True,
        )
        self._prune(state.step)
        return self._path(state.step)

    def _prune(self, newest: int) -> None:
        """Remove the checkpoints after ``newest`` (a resumed fit goes on from an earlier step)
        and all but the ``keep`` newest up to it."""
        steps = self.steps()
        later = [step for step in steps if step > newest]
        kept = [step for step in steps if step <= newest][-self.keep :]
        for step in steps:
            if step in later or step not in kept:
                remove_directory(self._step_location(step))
        for step in later:
            logger.warning(
                "dsoftmax: removed the checkpoint of step %d in %s: the fit resumed from an "
                "earlier step and has now written step %d",
                step,
                self.directory,
                newest,
            )

    def load(self, step: int) -> Checkpoint:
        """Read and verify the checkpoint of ``step``.

        Raises
        ------
        CheckpointError
            When there is no checkpoint of ``step``, or it is damaged (the message names the
            file at fault).
        """
        steps = self.steps()
        if step not in steps:
            held = (
                f"its checkpoints: steps {', '.join(map(str, steps))}" if steps else "it holds none"
            )
            raise CheckpointError(
                f"there is no checkpoint of step {step} in {self.directory!r} ({held})."
            )
        try:
            return self._verified(step)
        except CheckpointError as error:
            others = ", ".join(str(other) for other in steps if other != step)
            offer = (
                f"Resume from another step ({others}), or with resume=True from the newest valid "
                "checkpoint."
                if others
                else "There is no other checkpoint to resume from."
            )
            raise CheckpointError(f"{error} {offer}") from None

    def _verified(self, step: int) -> Checkpoint:
        path = self._path(step)
        try:
            arrays, manifest = read_model_files(
                self._step_location(step), format_name=CHECKPOINT_FORMAT, where=path
            )
            return _checkpoint_of(manifest, arrays, path)
        except ModelFileError as error:
            raise CheckpointError(f"checkpoint {path!r} is damaged: {error}") from None

    def latest(self) -> Checkpoint | None:
        """The newest valid checkpoint; None when there is none.

        Damaged checkpoints are skipped, each with a warning naming it and the file at fault.

        Raises
        ------
        CheckpointError
            When there are checkpoints but every one is damaged.
        """
        problems = []
        for step in reversed(self.steps()):
            try:
                return self._verified(step)
            except CheckpointError as error:
                logger.warning("dsoftmax: skipping a damaged checkpoint: %s", error)
                problems.append(str(error))
        if problems:
            raise CheckpointError(
                f"every checkpoint in {self.directory!r} is damaged; the newest: {problems[0]} "
                "To start afresh, remove them or choose another checkpoint_dir."
            )
        return None


def _local_entries(root: str) -> list[tuple[str, bool]]:
    """``(name, complete)`` of each entry in ``root``: a directory with a manifest is complete,
    and so is a symbolic link (listed so that loading names it)."""
    try:
        with os.scandir(root) as entries:
            listed = [
                (entry.name, entry.is_symlink(), entry.is_dir(follow_symlinks=False))
                for entry in entries
            ]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        (name, is_link or (is_dir and _has_manifest(os.path.join(root, name))))
        for name, is_link, is_dir in listed
    ]


def _has_manifest(directory: str) -> bool:
    try:
        os.lstat(os.path.join(directory, MANIFEST))
    except FileNotFoundError:
        return False
    return True


def _checkpoint_of(
    manifest: dict[str, Any], arrays: dict[str, np.ndarray], path: str
) -> Checkpoint:
    """The checkpoint a verified manifest describes, with every value checked."""
    context = f"the manifest of {path!r}"
    record = field(manifest, "checkpoint", (dict,), context)
    stored = dict(field(record, "state", (dict,), f"the checkpoint record of {path!r}"))
    _drop_block_grouping(stored, path)
    names = {f.name for f in dataclasses.fields(TrainingState)}
    if "params" not in stored or not set(stored) <= names:
        raise ModelFileError(
            f"checkpoint {path!r}: unexpected state fields {sorted(set(stored) - names)[:8]}."
        )
    config = _scalars(field(record, "config", (dict,), context, {}), f"the config in {context}")
    field(config, "random_state", (int,), f"the config in {context}", None)
    data = field(record, "data", (dict,), context, {})
    state = TrainingState(**{name: _unflatten(value, arrays) for name, value in stored.items()})
    _check_state(state, data, config, path)
    return Checkpoint(state, dict(config), dict(data))


def _drop_block_grouping(stored: dict[str, Any], path: str) -> None:
    """Checkpoints of format version 1 record how minibatches were grouped by blocks
    (``sampling_group``): 0 or None is the order of all rows, the one a fit without
    ``shuffle_window`` draws; an order grouped by blocks depended on the storage and has no
    equivalent."""
    grouping = stored.pop("sampling_group", None)
    if grouping not in (None, 0):
        raise CheckpointError(
            f"checkpoint {path!r} drew its minibatches from groups of {grouping!r} blocks of the "
            "store, an order that depended on how the data was chunked and held and that this "
            "version does not reproduce. Start the fit afresh in another checkpoint_dir, with "
            "shuffle_window for streamed data."
        )


def _scalars(values: dict[str, Any], what: str) -> dict[str, Any]:
    for name, value in values.items():
        typed(value, (type(None), bool, int, float, str), f"{name!r} in {what}")
    return values


def _check_state(state: TrainingState, data: dict, config: dict, path: str) -> None:
    """Refuse a state whose arrays or counters do not fit the fit it claims to be of."""
    context = f"the data description in the manifest of {path!r}"
    n_classes = field(data, "n_classes", (int,), context)
    n_features = field(data, "n_features", (int,), context)
    params = state.params
    if not isinstance(params, Params):
        raise ModelFileError(f"checkpoint {path!r}: its weights are not a Params record.")
    coef = params.coef
    if not isinstance(coef, np.ndarray) or coef.shape != (n_classes, n_features):
        raise ModelFileError(
            f"checkpoint {path!r}: coef has shape {getattr(coef, 'shape', None)}, but its manifest "
            f"says {n_classes} classes and {n_features} features."
        )
    if coef.dtype.kind != "f":
        raise ModelFileError(f"checkpoint {path!r}: coef has dtype {coef.dtype}, not a float.")
    intercept = params.intercept
    if intercept is not None and (
        not isinstance(intercept, np.ndarray)
        or intercept.shape != (n_classes,)
        or intercept.dtype != coef.dtype
    ):
        raise ModelFileError(
            f"checkpoint {path!r}: intercept {_describe(intercept)} does not match coef "
            f"{_describe(coef)}: it must have shape ({n_classes},)."
        )
    _check_optimizer_state(state.optimizer_state, params, config.get("solver"), path)
    _check_counters(state, path)


def _check_optimizer_state(opt_state: Any, params: Params, solver: Any, path: str) -> None:
    expected = _OPTIMIZER_STATES.get(solver)
    if expected is not None and not isinstance(opt_state, expected):
        raise ModelFileError(
            f"checkpoint {path!r}: a {solver} fit has optimizer state "
            f"{type(opt_state).__name__}, not {expected.__name__}."
        )
    if opt_state is None:
        return
    if not isinstance(opt_state, SGDState | AdamState):
        raise ModelFileError(
            f"checkpoint {path!r}: unexpected optimizer state {type(opt_state).__name__}."
        )
    count(opt_state.step, f"the optimizer's step in checkpoint {path!r}")
    for name in opt_state._fields[1:]:
        _check_like_params(getattr(opt_state, name), params, f"optimizer_state.{name}", path)


def _check_like_params(tree: Any, params: Params, name: str, path: str) -> None:
    """``tree`` (momentum, Adam moments) must have the weights' structure, shapes and dtypes."""
    if not isinstance(tree, Params):
        raise ModelFileError(f"checkpoint {path!r}: {name} is not a Params record.")
    for part in Params._fields:
        value, weights = getattr(tree, part), getattr(params, part)
        same = (
            value is None
            if weights is None
            else isinstance(value, np.ndarray)
            and value.shape == weights.shape
            and value.dtype == weights.dtype
        )
        if not same:
            raise ModelFileError(
                f"checkpoint {path!r}: {name}.{part} is {_describe(value)}, but the weights' "
                f"{part} is {_describe(weights)}; both must agree."
            )


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return "absent" if value is None else f"a {type(value).__name__}"


def _check_counters(state: TrainingState, path: str) -> None:
    what = f"in checkpoint {path!r}"
    for name in ("step", "epoch", "batches_done"):
        count(getattr(state, name), f"{name} {what}")
    typed(state.epoch_loss_sum, NUMBER, f"epoch_loss_sum {what}")
    for loss in typed(state.loss_curve, (list,), f"loss_curve {what}"):
        typed(loss, NUMBER, f"a loss {what}")
    for scores in typed(state.validation_curve, (list,), f"validation_curve {what}"):
        for score in typed(scores, (dict,), f"a validation score {what}").values():
            typed(score, NUMBER, f"a validation score {what}")
    stopper = typed(state.stopper, (dict,), f"the early-stopping state {what}")
    if not set(stopper) <= {"best", "stale_epochs"}:
        raise ModelFileError(f"checkpoint {path!r}: unexpected early-stopping state {stopper}.")
    typed(stopper.get("best", 0.0), NUMBER, f"the best loss {what}")
    count(stopper.get("stale_epochs", 0), f"stale_epochs {what}")


def warn_no_checkpoint(directory: str) -> None:
    """Warn that a resume found no checkpoint in ``directory`` and the fit starts afresh: a
    restarted job runs the same command, so that is no error, but a mistyped directory shows.

    Parameters
    ----------
    directory : str
        The checkpoint directory, as the warning names it (a :class:`RuntimeWarning`).
    """
    warnings.warn(
        f"resume found no checkpoint in {directory}; starting a fresh fit",
        RuntimeWarning,
        stacklevel=4,
    )


def check_resumable(checkpoint: Checkpoint, data: dict, config: dict, where: str) -> None:
    """Refuse a checkpoint made on other data or with other hyper-parameters.

    ``max_iter``, ``tol`` and ``verbose`` may change between runs: they do not change the path the
    optimizer takes, only where it stops.
    """
    for key in ("fingerprint", "n_samples", "n_features", "n_classes", "dtype", "classes"):
        if checkpoint.data.get(key) != data.get(key):
            raise CheckpointError(
                f"checkpoint {where!r} was made on other data: its {key} is "
                f"{_short(checkpoint.data.get(key))}, the {key} of this fit is "
                f"{_short(data.get(key))}. "
                "To start afresh, use another (or an emptied) checkpoint_dir."
            )
    free = {"max_iter", "tol", "verbose"}
    for key, value in config.items():
        if key not in free and checkpoint.config.get(key) != value:
            raise CheckpointError(
                f"checkpoint {where!r} was made with {key}={checkpoint.config.get(key)!r}, this "
                f"fit has {key}={value!r}; resume with the same settings, or start afresh in "
                "another (or an emptied) checkpoint_dir."
            )


def _short(value: Any, width: int = 60) -> str:
    """``repr(value)`` in about ``width`` characters: a long string or list is cut inside its
    quotes or brackets, so what is shown stays balanced."""
    text = repr(value)
    if len(text) <= width:
        return text
    if isinstance(value, str):
        return f"{value[: width - 12]!r}... ({len(value)} characters)"
    if isinstance(value, list | tuple):
        shown: list[str] = []
        for item in value:
            if sum(len(part) + 2 for part in shown) + len(repr(item)) > width - 20:
                break
            shown.append(repr(item))
        return f"[{', '.join([*shown, '...'])}] ({len(value)} item(s))"
    return f"{text[: width - 3]}..."
