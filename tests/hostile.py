"""Edits of model and checkpoint directories as someone who can write their files makes them:
the manifest changed at will, and an array file replaced with its checksum fixed up to match.

Usage (pytest puts ``tests/`` on ``sys.path``)::

    from hostile import edit_manifest, npy_bytes, replace_array_file
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["edit_manifest", "npy_bytes", "replace_array_file"]


def npy_bytes(array: np.ndarray) -> bytes:
    """The ``.npy`` file of ``array``."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def edit_manifest(directory: Path, change: Callable[[dict], object]) -> None:
    """Apply ``change`` to the parsed ``manifest.json`` of ``directory`` and write it back."""
    manifest = json.loads((directory / "manifest.json").read_text())
    change(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def replace_array_file(directory: Path, name: str, data: bytes, **entry: object) -> None:
    """Write ``data`` as the file of array ``name`` and make its manifest entry agree: the
    sha256 of ``data``, and any other fields given (``shape=[...]``)."""
    (directory / f"{name}.npy").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()

    def agree(manifest: dict) -> None:
        manifest["arrays"][name].update(sha256=digest, **entry)

    edit_manifest(directory, agree)
