"""Synthetic datasets: a seeded linear "teacher", and scikit-learn's digits."""

from __future__ import annotations

import functools
import math
import os
import uuid
from collections.abc import Mapping
from typing import Any

import dask
import numpy as np
import zarr

from ..defaults import DEFAULT_CHUNK_ROWS, DEFAULT_CODEC, FEATURE_DTYPES
from .format import Dataset, content_digest, dataset_attrs
from .open import open_dataset
from .store import as_url, open_group
from .tasks import compute
from .write import (
    check_chunk_rows,
    codec_for_features,
    compressors,
    create_row_array,
    prepare_target,
    write_dataset,
    write_row_block,
)

__all__ = ["load_digits", "make_classification"]


@functools.lru_cache(maxsize=4)
def _teacher(seed: int, n_classes: int, n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded teacher ``(W*, b*)``; cached, as every chunk of a worker needs it."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    coef = rng.standard_normal((n_classes, n_features)) / math.sqrt(n_features)
    intercept = 0.2 * rng.standard_normal(n_classes)
    return coef, intercept


def _teacher_chunk(
    seed: int,
    teacher_seed: int,
    chunk_index: int,
    n_rows: int,
    n_features: int,
    n_classes: int,
    dtype: str,
    noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of chunk ``chunk_index``: a function of the seed and the index only."""
    coef, intercept = _teacher(teacher_seed, n_classes, n_features)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, chunk_index)))
    X = rng.standard_normal((n_rows, n_features), dtype=np.float32 if dtype == "float16" else dtype)
    X = X.astype(dtype, copy=False)  # the labels follow the stored (rounded) values
    y = np.argmax(X.astype(np.float64) @ coef.T + intercept, axis=1)
    flipped = rng.random(n_rows) < noise
    y[flipped] = rng.integers(0, n_classes, size=int(flipped.sum()))
    return X, y.astype(np.int32)


def _generate_and_write_chunk(
    targets: Mapping[str, zarr.Array],
    seed: int,
    teacher_seed: int,
    chunk_index: int,
    row_start: int,
    n_rows: int,
    n_classes: int,
    noise: float,
) -> dict[str, str]:
    """Worker task: make one chunk of teacher data and write it to the store."""
    X_target = targets["X"]
    X, y = _teacher_chunk(
        seed,
        teacher_seed,
        chunk_index,
        n_rows,
        X_target.shape[1],
        n_classes,
        str(X_target.dtype),
        noise,
    )
    return write_row_block(targets, {"X": X, "y": y}, row_start)


def _check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def make_classification(
    url: str | os.PathLike,
    n_samples: int,
    n_features: int,
    n_classes: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    seed: int = 0,
    dtype: str = "float32",
    noise: float = 0.1,
    teacher_seed: int | None = None,
    client: Any = None,
    codec: str = DEFAULT_CODEC,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Write synthetic data labelled by a seeded linear "teacher", chunk by chunk, in parallel.

    Rows ``X_i ~ N(0, I)``; the teacher draws ``W*`` (n_classes, n_features) with entries
    ``N(0, 1/n_features)`` and an intercept ``b* ~ N(0, 0.04)``. Each label is
    ``argmax_k (X_i W*ᵀ + b*)_k``, replaced by a uniformly drawn class with probability
    ``noise``. A linear model can thus reach about ``1 - noise·(n_classes-1)/n_classes``
    accuracy (91% for 10 classes and the default noise).

    Chunk ``i`` comes from ``np.random.default_rng(SeedSequence(seed, spawn_key=(1, i)))``
    alone, so it has the same bytes whichever worker makes it, on any number of workers. Each
    chunk is one dask task that makes and writes it: no process ever holds the whole array,
    so datasets larger than memory can be made.

    Parameters
    ----------
    url : str or path
    n_samples, n_features, n_classes : int
        ``n_classes >= 2``.
    chunk_rows : int
    seed : int
    dtype : {"float32", "float64", "float16"}
    noise : float in [0, 1]
        Fraction of labels replaced by a uniform draw.
    teacher_seed : int, optional
        Seed of the teacher alone (default: ``seed``). A test set for a training set made with
        ``seed=s`` uses another ``seed`` and ``teacher_seed=s``: new rows, same teacher.
    client : distributed.Client, optional
        Runs the chunk tasks on this cluster; the default dask scheduler otherwise.
    codec, storage_options, overwrite
        As in :func:`write_dataset`.

    Returns
    -------
    Dataset
        Classes ``0..n_classes-1``.
    """
    url = as_url(url)
    n_samples = _check_positive_int(n_samples, "n_samples")
    n_features = _check_positive_int(n_features, "n_features")
    n_classes = _check_positive_int(n_classes, "n_classes", minimum=2)
    chunk_rows = min(check_chunk_rows(chunk_rows), n_samples)
    seed = _check_positive_int(seed, "seed", minimum=0)
    teacher_seed = (
        seed
        if teacher_seed is None
        else _check_positive_int(teacher_seed, "teacher_seed", minimum=0)
    )
    if str(np.dtype(dtype)) not in FEATURE_DTYPES:
        raise TypeError(
            f"dtype must be 'float32' or 'float64', got {dtype!r}; 'float16' is taken too."
        )
    dtype = str(np.dtype(dtype))
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be in [0, 1], got {noise!r}.")
    compressors(codec)
    # The first rows of chunk 0 are drawn first, so a shorter draw gives exactly them.
    X_codec = codec_for_features(
        codec, (n_samples, n_features), np.dtype(dtype).itemsize,
        lambda n_rows: _teacher_chunk(
            seed, teacher_seed, 0, n_rows, n_features, n_classes, dtype, noise
        )[0],
    )  # fmt: skip
    mode = prepare_target(url, storage_options, overwrite)
    group = open_group(url, mode, storage_options)
    targets = {
        "X": create_row_array(
            group, "X", (n_samples, n_features), np.dtype(dtype), chunk_rows,
            compressors(X_codec),
        ),
        "y": create_row_array(
            group, "y", (n_samples,), np.dtype(np.int32), chunk_rows, compressors(codec)
        ),
    }  # fmt: skip
    digests = compute(
        _generation_tasks(
            targets, n_samples, n_classes, chunk_rows, (seed, teacher_seed), float(noise)
        ),
        client=client,
    )
    classes = np.arange(n_classes)
    attrs = dataset_attrs(classes, content_digest(digests))
    attrs["generator"] = {
        "name": "make_classification",
        "seed": seed,
        "teacher_seed": teacher_seed,
        "noise": float(noise),
    }
    group.attrs.update(attrs)
    return open_dataset(url, storage_options=storage_options)


def _generation_tasks(
    targets: Mapping[str, zarr.Array],
    n_samples: int,
    n_classes: int,
    chunk_rows: int,
    seeds: tuple[int, int],
    noise: float,
) -> list[Any]:
    token = uuid.uuid4().hex
    shared_targets = dask.delayed(dict(targets), traverse=False)
    return [
        dask.delayed(_generate_and_write_chunk, pure=False)(
            shared_targets,
            *seeds,
            index,
            start,
            min(chunk_rows, n_samples - start),
            n_classes,
            noise,
            dask_key_name=f"dsoftmax-make-classification-{token}-{index}",
        )
        for index, start in enumerate(range(0, n_samples, chunk_rows))
    ]


def load_digits(
    url: str | os.PathLike,
    *,
    chunk_rows: int = 512,
    codec: str = DEFAULT_CODEC,
    storage_options: dict | None = None,
    overwrite: bool = False,
) -> Dataset:
    """Write scikit-learn's bundled digits (1797 x 64, float64, labels 0..9) as a dataset.

    Returns
    -------
    Dataset
    """
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return write_dataset(
        url,
        digits.data.astype(np.float64),
        digits.target,
        classes=np.arange(10),
        chunk_rows=chunk_rows,
        codec=codec,
        storage_options=storage_options,
        overwrite=overwrite,
    )
