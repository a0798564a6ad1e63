"""What the converters share: argument checks, label summaries, and the final write."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..format import Dataset
from ..write import write_dataset

#: A label read as text that stands for an int: no sign but '-', no leading zeros, no spaces,
#: no '-0' (each int has one spelling, so reading the labels as ints merges no two of them).
_CANONICAL_INT = re.compile(r"-?[1-9][0-9]*|0")
_INT64 = np.iinfo(np.int64)

__all__ = [
    "LabelSummary",
    "check_feature_columns",
    "check_label_column",
    "check_label_values",
    "check_sparse_dtype",
    "choose_feature_dtype",
    "classes_from",
    "classes_from_text",
    "describe_sources",
    "has_magic",
    "missing_columns",
    "source_list",
    "write_converted",
]


def has_magic(path: str) -> bool:
    """Whether ``path`` is a glob pattern."""
    return any(character in path for character in "*?[")


def source_list(source: Any, what: str) -> list[str]:
    """``source`` (one path or a list of them) as a list of path strings."""
    if isinstance(source, str | os.PathLike):
        return [os.fspath(source)]
    if (
        isinstance(source, Sequence)
        and source
        and all(isinstance(item, str | os.PathLike) for item in source)
    ):
        return [os.fspath(item) for item in source]
    raise TypeError(
        f"source must be a {what} path, URL or glob pattern, or a non-empty list of them, got "
        f"{source!r}."
    )


def describe_sources(paths: Sequence[str]) -> str:
    """How messages name the sources."""
    return repr(paths[0]) if len(paths) == 1 else f"{paths[0]!r} and {len(paths) - 1} more"


def choose_feature_dtype(dtype: Any, automatic: np.dtype) -> np.dtype:
    """The feature dtype asked for (float32, float64 or float16), or ``automatic`` for None."""
    if dtype is None:
        return automatic
    try:
        chosen = np.dtype(dtype)
    except TypeError:
        chosen = None
    if chosen not in (np.float32, np.float64, np.float16):
        raise TypeError(
            "dtype must be 'float32', 'float64' or None (chosen from the source), or 'float16', "
            f"got {dtype!r}."
        )
    return chosen


def _dtype_name(dtype: Any) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


def is_half_precision(dtype: Any) -> bool:
    """Whether ``dtype`` names float16 or bfloat16, which only dense datasets store."""
    return _dtype_name(dtype) in ("float16", "bfloat16")


def check_sparse_dtype(dtype: Any, remedy: str) -> None:
    """Refuse half-precision values (float16, bfloat16) for a sparse dataset, whose values are
    float32 or float64; ``remedy`` says what to pass instead."""
    name = _dtype_name(dtype)
    if is_half_precision(dtype):
        raise ValueError(
            f"dtype={name!r} cannot be stored sparse: sparse datasets hold float32 or float64 "
            f"values. {remedy}"
        )


def check_label_column(label_column: Any) -> str:
    """``label_column``, after refusing what cannot name a column."""
    if not isinstance(label_column, str) or not label_column:
        raise TypeError(
            f"label_column must name the column that holds the labels, got {label_column!r}."
        )
    return label_column


def check_feature_columns(feature_columns: Any, label_column: str) -> list[str] | None:
    """``feature_columns`` as a list, after refusing repeats and the label column."""
    if feature_columns is None:
        return None
    if isinstance(feature_columns, str) or not all(
        isinstance(name, str) for name in feature_columns
    ):
        raise TypeError(
            f"feature_columns must be a list of column names, got {feature_columns!r}; for one "
            "column pass [name]."
        )
    columns = list(feature_columns)
    if not columns:
        raise ValueError(
            "feature_columns is empty; name at least one column, or pass None for every numeric "
            "column but the label."
        )
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise ValueError(f"feature_columns repeats {repeated}; name each column once.")
    if label_column in columns:
        raise ValueError(
            f"feature_columns holds the label column {label_column!r}; a model must not see its "
            "labels as a feature. Remove it from feature_columns."
        )
    return columns


def missing_columns(wanted: Sequence[str], available: Sequence[str], where: str) -> None:
    """Refuse ``wanted`` columns that ``where`` does not have."""
    missing = [name for name in wanted if name not in available]
    if missing:
        shown = list(available)[:20]
        more = f" (and {len(available) - 20} more)" if len(available) > 20 else ""
        raise ValueError(
            f"{where} has no column(s) {missing}; its columns are {shown}{more}. Check "
            "label_column / feature_columns / embedding_column."
        )


@dataclass(frozen=True)
class LabelSummary:
    """What one block of a source says about its labels.

    Attributes
    ----------
    n_rows : int
        Rows of the block.
    unique : ndarray of shape (n_unique,)
        Distinct labels of the block.
    first_missing : int or None
        Row (within the block) of the first missing label, or None.
    n_missing : int
        Rows whose label is missing.
    """

    n_rows: int
    unique: np.ndarray
    first_missing: int | None
    n_missing: int


def check_label_values(values: np.ndarray, label_column: str, where: str) -> np.ndarray:
    """``values``, after refusing labels that are not numbers, booleans or strings."""
    if values.dtype.kind not in "biufUO":
        raise TypeError(
            f"label column {label_column!r} in {where} holds {values.dtype} values; labels must "
            "be numbers, booleans or strings. Convert the column, e.g. to strings."
        )
    return values


def classes_from(
    summaries: Sequence[LabelSummary], label_column: str, source: str, then: str = "convert again"
) -> np.ndarray:
    """Every label of the source, sorted, after refusing missing labels (the message ends with
    ``then``: what to do once they are fixed)."""
    starts = np.concatenate([[0], np.cumsum([part.n_rows for part in summaries])])
    missing = [
        (int(starts[index]) + part.first_missing, part.n_missing)
        for index, part in enumerate(summaries)
        if part.n_missing
    ]
    if missing:
        total = sum(count for _, count in missing)
        raise ValueError(
            f"label column {label_column!r} of {source} is missing in {total} row(s), first in "
            f"row {missing[0][0]}; drop those rows or fill in their labels, then {then}."
        )
    if starts[-1] == 0:
        raise ValueError(f"{source} has no rows; there is nothing to convert.")
    try:
        classes = np.unique(np.concatenate([part.unique for part in summaries]))
    except TypeError as error:
        raise TypeError(
            f"label column {label_column!r} of {source} mixes numbers and strings ({error}); "
            "convert it to one kind."
        ) from error
    # Plain strings: class attributes are JSON, and object arrays of str round trip as '<U'.
    return np.asarray(classes.tolist()) if classes.dtype == object else classes


def classes_from_text(classes: np.ndarray) -> np.ndarray:
    """The classes of labels read as text: ints when every one is a canonical decimal integer
    that fits in int64 (``-3``, ``0``, ``12``), else the strings, unchanged.

    The rule looks at every label of the source at once, so the classes do not depend on how
    the rows fall into files or blocks; and since a canonical integer has one spelling,
    labels that differ as text (``007`` and ``7``) never become one class.

    Parameters
    ----------
    classes : ndarray of shape (n_classes,)
        The distinct labels as strings.

    Returns
    -------
    ndarray of shape (n_classes,)
        Sorted int64 values, or ``classes`` itself.

    Examples
    --------
    >>> classes_from_text(np.array(["-1", "10", "2"])).tolist()
    [-1, 2, 10]
    >>> classes_from_text(np.array(["007", "7", "8"])).tolist()
    ['007', '7', '8']
    """
    texts = classes.tolist()
    if not all(isinstance(text, str) and _CANONICAL_INT.fullmatch(text) for text in texts):
        return classes
    values = [int(text) for text in texts]
    if not all(_INT64.min <= value <= _INT64.max for value in values):
        return classes
    return np.sort(np.asarray(values, dtype=np.int64))


def write_converted(
    url: str | os.PathLike,
    X: Any,
    y: Any,
    source: str,
    *,
    classes: np.ndarray | None = None,
    chunk_rows: int,
    codec: str,
    storage_options: dict | None,
    overwrite: bool,
) -> Dataset:
    """:func:`~dsoftmax.data.write_dataset` of ``X`` and ``y``, with its refusals saying which
    source did not convert."""
    try:
        return write_dataset(
            url,
            X,
            y,
            classes=classes,
            chunk_rows=chunk_rows,
            codec=codec,
            storage_options=storage_options,
            overwrite=overwrite,
        )
    except ValueError as error:
        raise ValueError(f"cannot convert {source}: {error}") from error
