"""NumPy sources: a ``.npz`` file, or a pair of ``.npy`` files, read without pickle."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...defaults import DEFAULT_CHUNK_ROWS, DEFAULT_CODEC
from ..format import Dataset
from ..write import write_dataset

__all__ = ["convert_numpy"]


def _load_npy(path: str | os.PathLike, what: str) -> np.ndarray:
    try:
        # mmap: a big file is paged in chunk by chunk as it is written, never loaded whole.
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise ValueError(
            f"cannot read {what} from {os.fspath(path)!r} without pickle ({error}); save it as "
            "a numeric or string array (not dtype=object)."
        ) from error


def _load_npz(path: str | os.PathLike, feature_key: str, label_key: str) -> tuple[Any, Any]:
    with np.load(path, allow_pickle=False) as archive:
        for key in (feature_key, label_key):
            if key not in archive.files:
                raise ValueError(
                    f"{os.fspath(path)!r} has no array {key!r}; it holds {archive.files}. Pass "
                    "feature_key= and label_key= to name the arrays."
                )
        try:
            return archive[feature_key], archive[label_key]
        except ValueError as error:
            raise ValueError(
                f"cannot read {os.fspath(path)!r} without pickle ({error}); save numeric or "
                "string arrays (not dtype=object)."
            ) from error


def convert_numpy(
    source: str | os.PathLike | tuple[str | os.PathLike, str | os.PathLike],
    url: str | os.PathLike,
    *,
    label_key: str = "y",
    feature_key: str = "X",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    codec: str = DEFAULT_CODEC,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Convert a ``.npz`` file, or a pair of ``.npy`` files, into a dataset.

    Parameters
    ----------
    source : path or (X_path, y_path)
        A ``.npz`` with arrays ``feature_key`` and ``label_key``, or two ``.npy`` files (memory-
        mapped, so files larger than memory convert). Object arrays are refused: nothing is
        unpickled.
    url : str or path
    label_key, feature_key : str
    chunk_rows, codec, storage_options, overwrite
        As in :func:`write_dataset`.

    Returns
    -------
    Dataset
    """
    if isinstance(source, tuple | list):
        if len(source) != 2:
            raise ValueError(
                f"source must be a .npz path or a pair (X_path, y_path) of .npy files, got "
                f"{len(source)} paths."
            )
        X, y = _load_npy(source[0], "X"), _load_npy(source[1], "y")
    elif Path(source).suffix == ".npz":
        X, y = _load_npz(source, feature_key, label_key)
    else:
        raise ValueError(
            f"source must be a .npz file or a pair (X_path, y_path) of .npy files, got {source!r}."
        )
    return write_dataset(
        url,
        X,
        y,
        chunk_rows=chunk_rows,
        codec=codec,
        storage_options=storage_options,
        overwrite=overwrite,
    )
