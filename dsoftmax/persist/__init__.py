"""Model files and checkpoints: every file read as hostile, every replacement atomic and locked.

- :mod:`~dsoftmax.persist.files`: regular files only, nothing followed, sizes bounded before
  reading; atomic replacement of a directory under its lock, and recovery from killed writes.
- :mod:`~dsoftmax.persist.manifest`, :mod:`~dsoftmax.persist.npy`: bounded, typed JSON manifests
  and ``.npy`` arrays checked by their header before anything is built.
- :mod:`~dsoftmax.persist.model`: the model files of :class:`dsoftmax.SoftmaxRegression` and the
  layout checkpoints share.
- :mod:`~dsoftmax.persist.checkpoint`: checkpoints of a fit, verified on load, and resume.
"""

from .checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    CheckpointError,
    CheckpointManager,
    check_resumable,
    warn_no_checkpoint,
)
from .files import FAULT_PAUSE_ENV, FAULT_PAUSE_MID_SWAP_ENV, MANIFEST, ModelFileError
from .model import (
    LOADABLE_HYPER_PARAMETERS,
    MODEL_FORMAT,
    MODEL_VERSION,
    UNSAVED_HYPER_PARAMETERS,
    FittedModel,
    load_fitted_model,
    load_model,
    save_fitted_model,
    save_model,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "FAULT_PAUSE_ENV",
    "FAULT_PAUSE_MID_SWAP_ENV",
    "LOADABLE_HYPER_PARAMETERS",
    "MANIFEST",
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "UNSAVED_HYPER_PARAMETERS",
    "Checkpoint",
    "CheckpointError",
    "CheckpointManager",
    "FittedModel",
    "ModelFileError",
    "check_resumable",
    "load_fitted_model",
    "load_model",
    "save_fitted_model",
    "save_model",
    "warn_no_checkpoint",
]
