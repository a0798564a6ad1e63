"""Model files: a directory of ``.npy`` arrays and a JSON manifest — never pickle.

Layout of ``model/`` (a local directory or an fsspec URL such as ``s3://bucket/model``)::

    manifest.json     format name and version, hyper-parameters, classes, curves, and for each
                      array its file, dtype, shape and sha256
    coef.npy          float64 (n_classes, n_features)
    intercept.npy     float64 (n_classes,)

Loading reads the manifest, checks every array's checksum, dtype and shape, and parses arrays
with ``np.load(allow_pickle=False)``: a crafted file (an object array, a pickle renamed ``.npy``,
an edited manifest) is refused and never executed. On a local disk the model is written to a
temporary directory beside the target and moved into place, so an existing model is replaced
whole or not at all; on object stores the manifest is written last and marks the model complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from typing import Any

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

__all__ = ["MODEL_FORMAT", "MODEL_VERSION", "ModelFileError", "load_model", "save_model"]

MODEL_FORMAT = "dsoftmax-model"
MODEL_VERSION = 1
MANIFEST = "manifest.json"
_ALLOWED_KINDS = "fiub"


class ModelFileError(ValueError):
    """A model file is missing, corrupt, tampered with or of an unknown format."""


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def save_model(
    path: str,
    arrays: dict[str, np.ndarray],
    manifest: dict[str, Any],
    *,
    storage_options: dict | None = None,
    format_name: str = MODEL_FORMAT,
) -> None:
    """Write ``arrays`` (numeric only) and ``manifest`` (JSON-serializable) to ``path``.

    ``format_name`` tells models from checkpoints, which share this layout."""
    payloads: dict[str, bytes] = {}
    entries: dict[str, dict] = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(
                f"model array {name!r} has dtype {array.dtype}; only numbers are stored."
            )
        data = _npy_bytes(array)
        payloads[f"{name}.npy"] = data
        entries[name] = {
            "file": f"{name}.npy",
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    document = {"format": format_name, "version": MODEL_VERSION, **manifest, "arrays": entries}
    payloads[MANIFEST] = json.dumps(document, indent=2, sort_keys=True).encode()
    fs, root = fsspec.url_to_fs(path, **(storage_options or {}))
    if isinstance(fs, LocalFileSystem):
        _write_local_atomically(root, payloads)
    else:
        _write_remote_manifest_last(fs, root, payloads)


def _write_local_atomically(root: str, payloads: dict[str, bytes]) -> None:
    target = os.path.abspath(root)
    if os.path.exists(target) and not os.path.isfile(os.path.join(target, MANIFEST)):
        # Only a model (or checkpoint) is ever replaced: never a dataset or someone's folder.
        raise ModelFileError(
            f"refusing to write over {root!r}: it exists and is not a dsoftmax model or "
            "checkpoint. Choose another path or remove it first."
        )
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-model-", dir=parent)
    try:
        for name, data in payloads.items():
            with open(os.path.join(staging, name), "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        _fault_pause(target)
        if os.path.isdir(target):
            retired = tempfile.mkdtemp(prefix=".old-model-", dir=parent)
            os.replace(target, os.path.join(retired, "model"))
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


#: Fault-injection hook for tests of crash safety: ``"<path part>:<seconds>"`` pauses every write
#: whose target path contains ``<path part>`` after its files are staged and before they are moved
#: into place, so a test can kill the process mid-write. Unset in normal use.
FAULT_PAUSE_ENV = "DSOFTMAX_FAULT_PAUSE_BEFORE_COMMIT"


def _fault_pause(target: str) -> None:
    setting = os.environ.get(FAULT_PAUSE_ENV)
    if not setting:
        return
    part, _, seconds = setting.rpartition(":")
    if part and part in target:
        time.sleep(float(seconds))


def _write_remote_manifest_last(fs: Any, root: str, payloads: dict[str, bytes]) -> None:
    fs.invalidate_cache(root)
    if fs.exists(root) and fs.ls(root) and not fs.exists(f"{root}/{MANIFEST}"):
        raise ModelFileError(
            f"refusing to write over {root!r}: it holds objects and is not a dsoftmax model or "
            "checkpoint. Choose another path or remove it first."
        )
    if fs.exists(f"{root}/{MANIFEST}"):
        fs.rm(f"{root}/{MANIFEST}")
    for name, data in payloads.items():
        if name != MANIFEST:
            fs.pipe_file(f"{root}/{name}", data)
    fs.pipe_file(f"{root}/{MANIFEST}", payloads[MANIFEST])


def load_model(
    path: str, *, storage_options: dict | None = None, format_name: str = MODEL_FORMAT
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read and verify a model written by :func:`save_model`; returns ``(arrays, manifest)``."""
    fs, root = fsspec.url_to_fs(path, **(storage_options or {}))
    manifest_path = f"{root}/{MANIFEST}"
    if not fs.exists(manifest_path):
        raise ModelFileError(f"{path!r} is not a {_readable(format_name)}: {MANIFEST} is missing.")
    try:
        manifest = json.loads(fs.cat_file(manifest_path))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"the manifest of {path!r} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        raise ModelFileError(
            f"{path!r} is not a {_readable(format_name)} (its format is not {format_name!r})."
        )
    if manifest.get("version") != MODEL_VERSION:
        raise ModelFileError(
            f"{path!r} has model format version {manifest.get('version')!r}; this dsoftmax reads "
            f"version {MODEL_VERSION}. Upgrade dsoftmax or re-save the model."
        )
    arrays = {
        name: _read_array(fs, root, name, entry, path)
        for name, entry in manifest.get("arrays", {}).items()
    }
    return arrays, manifest


def _readable(format_name: str) -> str:
    return format_name.replace("-", " ")


def _read_array(fs: Any, root: str, name: str, entry: dict, path: str) -> np.ndarray:
    file_name = str(entry.get("file", ""))
    if "/" in file_name or file_name.startswith("."):
        raise ModelFileError(
            f"array {name!r} of {path!r} names a file outside the model: {file_name!r}."
        )
    data = fs.cat_file(f"{root}/{file_name}")
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise ModelFileError(
            f"array {name!r} of {path!r} fails its checksum: {file_name} was modified or truncated."
        )
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as error:
        raise ModelFileError(
            f"array {name!r} of {path!r} is not a plain numeric array: {error}"
        ) from None
    if array.dtype.kind not in _ALLOWED_KINDS or array.dtype.str != entry.get("dtype"):
        raise ModelFileError(f"array {name!r} of {path!r} has unexpected dtype {array.dtype}.")
    if list(array.shape) != list(entry.get("shape", [])):
        raise ModelFileError(
            f"array {name!r} of {path!r} has shape {array.shape}, "
            f"manifest says {entry.get('shape')}."
        )
    return array
