"""Checkpoints: self-describing, atomic, pickle-free snapshots of a fit, and exact resume.

A checkpoint is a directory ``<checkpoint_dir>/step-<n>/`` in the model-file layout
(:mod:`dsoftmax.modelfile`): ``.npy`` arrays and a ``manifest.json`` holding the sha256 of each.
It holds the weights, the optimizer state (momentum or Adam moments), the position in the
training (optimizer steps, epoch, batches done in that epoch), the loss curves, the early-stopping
state, the configuration, a description of the data (fingerprint, shapes, classes, dtype) and the
format version. The minibatch order is a function of the seed and the epoch, so the position is
all the sampler needs.

Writes are atomic: on a local disk into a temporary directory in the same folder, fsync'd, then
renamed; on object stores the manifest is written last and marks the checkpoint complete. Only the
client writes checkpoints. After each write, all but the newest ``keep`` are removed.

Resuming a minibatch fit (sgd, adam) from a checkpoint replays the exact same computations, so the
final weights are bit-identical to an uninterrupted run. L-BFGS resumes from the checkpointed
weights with an empty curvature memory (scipy's L-BFGS-B cannot be seeded with one): it reaches
the same optimum, within the fit's tolerance, in a few more iterations.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from .modelfile import ModelFileError, load_model, save_model
from .objective import Params
from .optim import AdamState, SGDState
from .training import TrainingState

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "CheckpointManager",
    "check_resumable",
]

CHECKPOINT_FORMAT = "dsoftmax-checkpoint"
_STEP_DIR = re.compile(r"^step-(\d{10})$")
#: NamedTuple types a checkpoint may rebuild; nothing else is ever constructed from a file.
_STATE_TYPES = {cls.__name__: cls for cls in (Params, SGDState, AdamState)}


class CheckpointError(ValueError):
    """A checkpoint is corrupt, tampered with, or belongs to another fit."""


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


def _unflatten(doc: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    if doc is None or isinstance(doc, bool | int | float | str):
        return doc
    if isinstance(doc, dict) and set(doc) == {"json"}:
        return doc["json"]
    if isinstance(doc, dict) and set(doc) == {"array"}:
        if doc["array"] not in arrays:
            raise CheckpointError(f"{where}: the manifest names a missing array {doc['array']!r}.")
        return arrays[doc["array"]]
    if isinstance(doc, dict) and set(doc) == {"type", "fields"} and doc["type"] in _STATE_TYPES:
        cls = _STATE_TYPES[doc["type"]]
        fields = doc["fields"]
        if not isinstance(fields, dict) or set(fields) != set(cls._fields):
            raise CheckpointError(f"{where}: {doc['type']} has the wrong fields {sorted(fields)}.")
        return cls(**{name: _unflatten(fields[name], arrays, where) for name in cls._fields})
    raise CheckpointError(f"{where}: unexpected entry in the manifest: {str(doc)[:80]!r}.")


class CheckpointManager:
    """Write, list, verify and prune the checkpoints of one fit in ``directory``.

    Parameters
    ----------
    directory : str
        Local path or fsspec URL; created on first write.
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
        self._fs, self._root = fsspec.url_to_fs(self.directory, **(storage_options or {}))

    def _path(self, step: int) -> str:
        return f"{self.directory}/step-{step:010d}"

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints (those with a manifest), oldest first."""
        if not self._fs.exists(self._root):
            return []
        self._fs.invalidate_cache(self._root)
        found = []
        for entry in self._fs.ls(self._root, detail=False):
            match = _STEP_DIR.match(entry.rstrip("/").rsplit("/", 1)[-1])
            if match and self._fs.exists(f"{entry.rstrip('/')}/manifest.json"):
                found.append(int(match.group(1)))
        return sorted(found)

    def save(self, checkpoint: Checkpoint) -> str:
        """Write ``checkpoint`` atomically, then prune old ones; returns its path."""
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
        path = self._path(state.step)
        save_model(
            path,
            arrays,
            {"checkpoint": record},
            storage_options=self.storage_options,
            format_name=CHECKPOINT_FORMAT,
        )
        self._prune()
        return path

    def _prune(self) -> None:
        if isinstance(self._fs, LocalFileSystem):
            # Staging directories left by a write that was killed: only this fit writes here.
            for leftover in self._fs.glob(f"{self._root}/.tmp-model-*") + self._fs.glob(
                f"{self._root}/.old-model-*"
            ):
                self._fs.rm(leftover, recursive=True)
        for step in self.steps()[: -self.keep]:
            path = self._path(step)
            _, root = fsspec.url_to_fs(path, **(self.storage_options or {}))
            if isinstance(self._fs, LocalFileSystem):
                self._fs.rm(root, recursive=True)
            else:
                # The manifest first: a half-removed checkpoint is then an incomplete one.
                self._fs.rm(f"{root}/manifest.json")
                self._fs.rm(root, recursive=True)

    def load(self, step: int) -> Checkpoint:
        """Read and verify the checkpoint of ``step``."""
        path = self._path(step)
        try:
            arrays, manifest = load_model(
                path, storage_options=self.storage_options, format_name=CHECKPOINT_FORMAT
            )
        except ModelFileError as error:
            raise CheckpointError(f"checkpoint {path!r} is unusable: {error}") from None
        record = manifest.get("checkpoint")
        if not isinstance(record, dict) or not isinstance(record.get("state"), dict):
            raise CheckpointError(f"checkpoint {path!r}: the manifest has no checkpoint record.")
        fields = {f.name for f in dataclasses.fields(TrainingState)}
        stored = record["state"]
        if "params" not in stored or not set(stored) <= fields:
            raise CheckpointError(
                f"checkpoint {path!r}: unexpected state fields {sorted(set(stored) - fields)}."
            )
        state = TrainingState(
            **{name: _unflatten(value, arrays, path) for name, value in stored.items()}
        )
        checkpoint = Checkpoint(state, dict(record.get("config", {})), dict(record.get("data", {})))
        _check_params_match_data(checkpoint, path)
        return checkpoint

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint, verified; None when there is none.

        A checkpoint that fails verification is refused with :class:`CheckpointError` rather
        than skipped: silently resuming from an older one would hide tampering or corruption.
        """
        steps = self.steps()
        return self.load(steps[-1]) if steps else None


def _check_params_match_data(checkpoint: Checkpoint, path: str) -> None:
    data = checkpoint.data
    expected = (int(data.get("n_classes", -1)), int(data.get("n_features", -1)))
    coef = checkpoint.state.params.coef
    if not isinstance(coef, np.ndarray) or coef.shape != expected:
        raise CheckpointError(
            f"checkpoint {path!r}: coef has shape {getattr(coef, 'shape', None)}, but its manifest "
            f"says {expected[0]} classes and {expected[1]} features."
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
                f"{_short(checkpoint.data.get(key))}, this fit's is {_short(data.get(key))}. "
                "Use another checkpoint_dir, or resume=False to start afresh."
            )
    free = {"max_iter", "tol", "verbose"}
    for key, value in config.items():
        if key not in free and checkpoint.config.get(key) != value:
            raise CheckpointError(
                f"checkpoint {where!r} was made with {key}={checkpoint.config.get(key)!r}, this "
                f"fit has {key}={value!r}; resume with the same settings or resume=False."
            )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
