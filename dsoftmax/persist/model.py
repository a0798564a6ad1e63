"""Model files: a directory of ``.npy`` arrays and a JSON manifest — never pickle.

Layout of ``model/`` (a local directory or an fsspec URL such as ``s3://bucket/model``)::

    manifest.json     format name and version, hyper-parameters, classes, curves, and for each
                      array its file, dtype, shape and sha256
    coef.npy          float64 (n_classes, n_features)
    intercept.npy     float64 (n_classes,)

Checkpoints use the same layout under another format name (:mod:`dsoftmax.persist.checkpoint`).

Loading treats every file as hostile. Files are read as :mod:`dsoftmax.persist.files` reads them
(regular files only, nothing followed, sizes bounded before reading); the manifest is bounded in
size and depth and every value in it is typed (:mod:`dsoftmax.persist.manifest`); each array must
have the checksum, dtype and shape its manifest entry declares, its ``.npy`` header must agree,
and it is parsed without pickle (:mod:`dsoftmax.persist.npy`). Of the estimator's hyper-parameters
a file may set only those of :data:`LOADABLE_HYPER_PARAMETERS`, with the types listed there, and
each value must be one the constructor accepts (:mod:`dsoftmax.validation`); the classes must be
distinct. Every way of loading a model (the estimators' ``load``, and the commands that read the
weights only) reads it through :func:`load_fitted_model`, so each refuses the same files.

Saving replaces a model whole or not at all, under the lock of its directory
(:func:`dsoftmax.persist.files.replace_directory`).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..validation import (
    CHOICES,
    NUMBERS,
    check_choice,
    check_chunk_rows,
    check_class_weight,
    check_nesterov,
)
from . import npy
from .files import (
    MANIFEST,
    Location,
    MissingFileError,
    ModelFileError,
    locate,
    read_directory,
    replace_directory,
)
from .manifest import MAX_MANIFEST_BYTES, NUMBER, count, decode, encode, typed
from .manifest import field as manifest_field

__all__ = [
    "LOADABLE_HYPER_PARAMETERS",
    "MODEL_FORMAT",
    "MODEL_VERSION",
    "SEARCH_ARRAYS",
    "UNSAVED_HYPER_PARAMETERS",
    "FittedModel",
    "load_fitted_model",
    "load_model",
    "read_model_files",
    "save_fitted_model",
    "save_model",
    "write_model_files",
]

MODEL_FORMAT = "dsoftmax-model"
MODEL_VERSION = 1
#: Most arrays one model or checkpoint directory may declare (a checkpoint holds at most 6).
MAX_ARRAYS = 64
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CLASSES_DTYPE = re.compile(r"^[<>|=]?(U[1-9][0-9]{0,5}|[iub][1-8]|f[1-9][0-9]?)$")

_OPTIONAL_INT = (type(None), int)
#: The hyper-parameters a model file may set, with the JSON types each may have; their values
#: are then checked as the constructor's are. Nothing else is taken from a file.
LOADABLE_HYPER_PARAMETERS: dict[str, tuple[type, ...]] = {
    "l2": NUMBER,
    "fit_intercept": (bool,),
    "solver": (str,),
    "batch_size": (int,),
    "learning_rate": NUMBER,
    "lr_schedule": (str,),
    "momentum": NUMBER,
    "nesterov": (bool,),
    "max_iter": (int,),
    "tol": NUMBER,
    "early_stopping": (bool,),
    "validation_fraction": NUMBER,
    "n_iter_no_change": (int,),
    "class_weight": (type(None), str),
    "random_state": _OPTIONAL_INT,
    "shuffle_window": _OPTIONAL_INT,
    "warm_start": (bool,),
    "chunk_rows": (int, str),
    "hold_data": (str,),
    "checkpoint_every": _OPTIONAL_INT,
    "keep_checkpoints": (int,),
    "verbose": (int,),
}
#: The arrays a model file of a cross-validated grid holds beside the weights.
SEARCH_ARRAYS = ("scores", "grid_n_iter")
#: Constructor parameters that a model file never stores and never sets: ``client`` would
#: choose where a later fit connects (and a Dask client unpickles what its scheduler sends),
#: ``storage_options`` may hold credentials and choose endpoints, and a loaded model must not
#: write into the checkpoint directory of the fit that made it.
UNSAVED_HYPER_PARAMETERS = ("client", "storage_options", "checkpoint_dir")


# ------------------------------------------------------------------ the layout, any format
def save_model(
    path: str,
    arrays: dict[str, np.ndarray],
    manifest: dict[str, Any],
    *,
    storage_options: dict | None = None,
    format_name: str = MODEL_FORMAT,
) -> None:
    """Write ``arrays`` (numeric only) and ``manifest`` (JSON-serializable) to ``path``."""
    write_model_files(locate(path, storage_options), arrays, manifest, format_name=format_name)


def load_model(
    path: str, *, storage_options: dict | None = None, format_name: str = MODEL_FORMAT
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a directory written by :func:`save_model`; returns ``(arrays, manifest)``."""
    return read_model_files(locate(path, storage_options), format_name=format_name, where=path)


def write_model_files(
    location: Location,
    arrays: dict[str, np.ndarray],
    manifest: dict[str, Any],
    *,
    format_name: str,
    force: bool = False,
) -> None:
    """:func:`save_model` at an already located directory. ``format_name`` tells models from
    checkpoints, which share this layout; ``force`` replaces whatever is at ``location`` (see
    :func:`~dsoftmax.persist.files.replace_directory`)."""
    if len(arrays) > MAX_ARRAYS:
        raise ValueError(f"a model file holds at most {MAX_ARRAYS} arrays, not {len(arrays)}.")
    payloads: dict[str, bytes] = {}
    entries: dict[str, dict] = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        if not _ARRAY_NAME.match(name):
            raise ValueError(f"model array name {name!r} is not a plain file name.")
        if array.dtype.kind not in npy.ALLOWED_KINDS:
            raise TypeError(
                f"model array {name!r} has dtype {array.dtype}; only numbers are stored."
            )
        data = npy.encode(array)
        payloads[f"{name}.npy"] = data
        entries[name] = {
            "file": f"{name}.npy",
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    document = {"format": format_name, "version": MODEL_VERSION, **manifest, "arrays": entries}
    payloads[MANIFEST] = encode(document)
    replace_directory(location, payloads, force=force)


def read_model_files(
    location: Location, *, format_name: str, where: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """:func:`load_model` at an already located directory; ``where`` names it in messages."""

    def read(directory: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        data = directory.read(MANIFEST, MAX_MANIFEST_BYTES, "a manifest may hold")
        manifest = decode(data, where)
        _check_format(manifest, format_name, where)
        entries = manifest_field(manifest, "arrays", (dict,), f"the manifest of {where!r}")
        if len(entries) > MAX_ARRAYS:
            raise ModelFileError(
                f"the manifest of {where!r} declares {len(entries)} arrays; a model file holds "
                f"at most {MAX_ARRAYS}."
            )
        arrays = {
            name: _read_array(directory, name, entry, where) for name, entry in entries.items()
        }
        return arrays, manifest

    try:
        return read_directory(location, read)
    except MissingFileError:
        # The directory or its manifest; a missing array file is named as such by _read_array.
        raise ModelFileError(
            f"{where!r} is not a {_readable(format_name)}: {MANIFEST} is missing."
        ) from None


def _readable(format_name: str) -> str:
    return format_name.replace("-", " ")


def _check_format(manifest: dict[str, Any], format_name: str, where: str) -> None:
    if manifest.get("format") != format_name:
        raise ModelFileError(
            f"{where!r} is not a {_readable(format_name)} (its format is not {format_name!r})."
        )
    version = manifest.get("version")
    if isinstance(version, bool) or version != MODEL_VERSION:
        raise ModelFileError(
            f"{where!r} has model format version {version!r}; this dsoftmax reads "
            f"version {MODEL_VERSION}. Upgrade dsoftmax or re-save the model."
        )


def _read_array(directory: Any, name: str, entry: Any, where: str) -> np.ndarray:
    what = f"array {name!r} of {where!r}"
    if not _ARRAY_NAME.match(name):
        raise ModelFileError(f"the manifest of {where!r} declares an array named {name!r}.")
    context = f"the entry of {what}"
    entry = typed(entry, (dict,), context)
    file_name = manifest_field(entry, "file", (str,), context)
    if file_name != f"{name}.npy":
        outside = "/" in file_name or "\\" in file_name or file_name.startswith(".")
        problem = "a file outside the model" if outside else "another file than its own"
        raise ModelFileError(
            f"{what} names {problem}: {file_name!r} (the file of array {name!r} is {name}.npy)."
        )
    dtype = npy.check_dtype(manifest_field(entry, "dtype", (str,), context), what)
    shape = tuple(_shape(manifest_field(entry, "shape", (list,), context), what))
    digest = manifest_field(entry, "sha256", (str,), context)
    if not _SHA256.match(digest):
        raise ModelFileError(f"{what} has no valid sha256 in its manifest: {digest[:80]!r}.")
    allowed = npy.n_bytes(dtype, shape) + npy.HEADER_LIMIT
    bound = f"its manifest entry (dtype {dtype.str}, shape {list(shape)}) allows"
    try:
        data = directory.read(file_name, allowed, bound)
    except MissingFileError:
        raise ModelFileError(f"{what}: {file_name} is missing.") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise ModelFileError(f"{what} fails its checksum: {file_name} was modified or truncated.")
    return npy.decode(data, dtype, shape, what)


def _shape(values: list, what: str) -> list[int]:
    if len(values) > 32:
        raise ModelFileError(f"{what} declares {len(values)} dimensions.")
    return [count(value, f"each dimension of the shape of {what}") for value in values]


# --------------------------------------------------------------- the estimator's model file
@dataclass
class FittedModel:
    """What a model file of :class:`dsoftmax.SoftmaxRegression` holds.

    Attributes
    ----------
    params : dict
        Hyper-parameters, only those of :data:`LOADABLE_HYPER_PARAMETERS`.
    classes : ndarray of shape (n_classes,)
    coef : ndarray of shape (n_classes, n_features)
    intercept : ndarray of shape (n_classes,)
    n_iter : int
    loss_curve : list of float
    validation_scores : list of dict
    search : dict or None
        A cross-validated grid's results (:mod:`dsoftmax.persist.search` checks them), with
        its arrays ``search_arrays`` (named in :data:`SEARCH_ARRAYS`); None for a single fit.
    search_arrays : dict of ndarray
    """

    params: dict[str, Any]
    classes: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int = 0
    loss_curve: list[float] = field(default_factory=list)
    validation_scores: list[dict[str, float]] = field(default_factory=list)
    search: dict[str, Any] | None = None
    search_arrays: dict[str, np.ndarray] = field(default_factory=dict)


def save_fitted_model(
    path: str, model: FittedModel, *, storage_options: dict | None = None
) -> None:
    """Write ``model`` to ``path`` (directory or fsspec URL) without pickle."""
    unknown = sorted(set(model.params) - set(LOADABLE_HYPER_PARAMETERS))
    if unknown:
        raise ValueError(f"a model file cannot store the hyper-parameters {unknown}.")
    classes = model.classes
    manifest = {
        "params": model.params,
        "classes": classes.tolist(),
        "classes_dtype": classes.dtype.str if classes.dtype.kind != "O" else "object",
        "n_features_in": int(model.coef.shape[1]),
        "n_iter": int(model.n_iter),
        "loss_curve": [float(value) for value in model.loss_curve],
        "validation_scores": model.validation_scores,
    }
    arrays = {"coef": model.coef, "intercept": model.intercept}
    if model.search is not None:
        manifest["search"] = model.search
        arrays.update(model.search_arrays)
    save_model(path, arrays, manifest, storage_options=storage_options)


def load_fitted_model(path: str, *, storage_options: dict | None = None) -> FittedModel:
    """Read and verify a model written by :func:`save_fitted_model`.

    The hyper-parameters are typed and their values checked as the constructor checks them,
    and the classes must be distinct, so that a reader of the weights alone (``dsoftmax
    evaluate``, ``predict``) refuses what the estimators' ``load`` refuses.

    Raises
    ------
    ModelFileError
        Naming the file and the field at fault.
    """
    arrays, manifest = load_model(path, storage_options=storage_options)
    context = f"the manifest of {path!r}"
    search = manifest_field(manifest, "search", (dict, type(None)), context, None)
    extra = set(arrays) - {"coef", "intercept"}
    if not {"coef", "intercept"} <= set(arrays) or not extra <= (
        set(SEARCH_ARRAYS) if search is not None else set()
    ):
        raise ModelFileError(
            f"{context} declares the arrays {sorted(arrays)}; a model holds 'coef' and "
            f"'intercept' (and {', '.join(map(repr, SEARCH_ARRAYS))} with a grid's results)."
        )
    coef, intercept = arrays["coef"], arrays["intercept"]
    classes = _classes(manifest, context)
    n_features = manifest_field(manifest, "n_features_in", (int,), context)
    expected = (len(classes), n_features)
    if coef.shape != expected or intercept.shape != expected[:1]:
        raise ModelFileError(
            f"{path!r}: coef has shape {coef.shape} and intercept {intercept.shape}, but the "
            f"manifest says {expected[0]} classes and {expected[1]} features."
        )
    if coef.dtype.kind != "f" or intercept.dtype.kind != "f":
        raise ModelFileError(
            f"{path!r}: coef and intercept must be floats, not {coef.dtype} and {intercept.dtype}."
        )
    return FittedModel(
        params=_hyper_parameters(manifest, path),
        classes=classes,
        coef=coef,
        intercept=intercept,
        n_iter=count(manifest.get("n_iter", 0), f"'n_iter' in {context}"),
        loss_curve=_numbers(manifest_field(manifest, "loss_curve", (list,), context, []), context),
        validation_scores=_scores(
            manifest_field(manifest, "validation_scores", (list,), context, []), context
        ),
        search=search,
        search_arrays={name: arrays[name] for name in extra},
    )


def _hyper_parameters(manifest: dict[str, Any], path: str) -> dict[str, Any]:
    params = manifest_field(manifest, "params", (dict,), f"the manifest of {path!r}", {})
    for name, value in params.items():
        if name in UNSAVED_HYPER_PARAMETERS:
            raise ModelFileError(
                f"the model file {path!r} sets {name!r}, which a model file may never set: it "
                "would choose where later fits connect or what they read and write. Pass it to "
                "the loaded estimator yourself (set_params), and save the model again."
            )
        if name not in LOADABLE_HYPER_PARAMETERS:
            raise ModelFileError(
                f"the model file {path!r} sets {name!r}, which is not a hyper-parameter a "
                f"model file may set ({', '.join(LOADABLE_HYPER_PARAMETERS)})."
            )
        typed(value, LOADABLE_HYPER_PARAMETERS[name], f"hyper-parameter {name!r} of {path!r}")
        _check_setting(params, name, path)
    return dict(params)


def _check_setting(params: dict[str, Any], name: str, path: str) -> None:
    """Refuse ``params[name]`` unless the constructor accepts it (its type is checked)."""
    value = params[name]
    try:
        if name in NUMBERS:
            NUMBERS[name].check(name, value)
        elif name in CHOICES:
            check_choice(name, value, CHOICES[name])
        elif name == "class_weight":
            check_class_weight(value)
        elif name == "chunk_rows":
            check_chunk_rows(value)
        elif name == "nesterov" and "momentum" in params:
            # Either one alone is accepted with the other's default (momentum=0.9,
            # nesterov=False); together they must agree.
            check_nesterov(value, params["momentum"])
    except (TypeError, ValueError) as error:
        raise ModelFileError(
            f"the model file {path!r} holds a refused setting: {error} (field 'params.{name}' "
            f"of its {MANIFEST})"
        ) from None


def _classes(manifest: dict[str, Any], context: str) -> np.ndarray:
    values = manifest_field(manifest, "classes", (list,), context)
    dtype = manifest_field(manifest, "classes_dtype", (str,), context)
    if dtype != "object" and not _CLASSES_DTYPE.match(dtype):
        raise ModelFileError(f"'classes_dtype' in {context} is not a label dtype: {dtype!r}.")
    labels = [typed(value, (str, int, float, bool), f"a class in {context}") for value in values]
    if not labels:
        raise ModelFileError(f"{context} lists no classes.")
    try:
        classes = np.asarray(labels, dtype=object if dtype == "object" else dtype)
    except (TypeError, ValueError, OverflowError) as error:
        raise ModelFileError(f"the classes in {context} are not of {dtype!r}: {error}") from None
    _check_distinct(classes, labels, context)
    return classes


def _check_distinct(classes: np.ndarray, labels: list, context: str) -> None:
    """Refuse classes that repeat a label (a class id would then stand for two rows of coef),
    are not finite, or mix numbers and strings."""
    where = f"'classes' in {context} ({MANIFEST})"
    if any(isinstance(label, float) and not math.isfinite(label) for label in labels):
        raise ModelFileError(f"{where} holds a non-finite class: {labels[:8]}.")
    try:
        unique, counts = np.unique(classes, return_counts=True)
    except TypeError:
        raise ModelFileError(f"{where} mixes numbers and strings: {labels[:8]}.") from None
    if unique.shape[0] != classes.shape[0]:
        repeated = unique[counts > 1][0]
        repeated = repeated.item() if isinstance(repeated, np.generic) else repeated
        raise ModelFileError(
            f"{where} lists the class {repeated!r} more than once: {labels[:8]}; a model's "
            "classes are distinct (the file was modified, or not written by dsoftmax)."
        )


def _numbers(values: list, context: str) -> list[float]:
    return [float(typed(value, NUMBER, f"a loss in {context}")) for value in values]


def _scores(values: list, context: str) -> list[dict[str, float]]:
    scores = []
    for value in values:
        score = typed(value, (dict,), f"a validation score in {context}")
        for number in score.values():
            typed(number, NUMBER, f"a validation score in {context}")
        scores.append(score)
    return scores
