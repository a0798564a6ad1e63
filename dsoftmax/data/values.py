"""Value checks: one pass over the values of a dataset or of inputs to write.

:func:`block_stats` is the per-block part of that pass, a pure NumPy function that the training
engine also runs on blocks already held in worker memory; :func:`combine_stats` adds the blocks'
counts in block order or raises with the first problems found (array, block, rows, value, fix).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import dask
import dask.array as da
import numpy as np

from .format import Dataset, rows_text
from .sparse import csr_problems, is_sparse
from .tasks import compute, row_blocks

__all__ = [
    "BlockProblem",
    "BlockStats",
    "DatasetStats",
    "RangeOverflow",
    "block_stats",
    "block_stats_tasks",
    "cast_features",
    "check_in_memory_values",
    "check_values",
    "combine_stats",
    "earliest_overflow",
    "overflow_problem",
    "range_overflow",
]

#: Tolerance on ``|sum(Y_i) - 1|``; widened to ``n_classes·eps`` for low-precision rows.
ROW_SUM_TOLERANCE = 1e-6
#: How many problems a value-check error lists before summarizing the rest.
MAX_PROBLEMS_SHOWN = 5


@dataclass(frozen=True)
class BlockProblem:
    """One value problem found in one block: which array, and a sentence saying what and how to
    fix it (without the dataset's name, which :func:`combine_stats` adds)."""

    array: str
    detail: str


@dataclass(frozen=True, eq=False)
class BlockStats:
    """Counts and problems of one block of rows; combine blocks with :func:`combine_stats`.

    Attributes
    ----------
    block_index, row_start, n_rows : int
        Which block, its first row in the dataset and its number of rows.
    class_counts : ndarray of shape (n_classes,), int64
        Rows per class id (for probability rows: per argmax).
    class_weight_sums : ndarray of shape (n_classes,), float64
        ``Σ_i w_i`` per class id (for probability rows: ``Σ_i w_i Y_ik``).
    weight_sum : float
        ``Σ_i w_i`` (``n_rows`` without weights).
    problems : tuple of BlockProblem
        Empty when the block is valid.
    n_nonzero : int or None
        Stored values of the block's sparse ``X``; None for dense ``X``.
    """

    block_index: int
    row_start: int
    n_rows: int
    class_counts: np.ndarray
    class_weight_sums: np.ndarray
    weight_sum: float
    problems: tuple[BlockProblem, ...] = ()
    n_nonzero: int | None = None


@dataclass(frozen=True, eq=False)
class DatasetStats:
    """What one pass over the values found (only returned when the values are valid).

    Attributes
    ----------
    class_counts : ndarray of shape (n_classes,), int64
        Rows per class (probability rows count for their argmax).
    class_weight_sums : ndarray of shape (n_classes,), float64
        Sample weight per class (probability rows spread their weight over the classes).
    n_samples : int
    weight_sum : float
        ``Σ_i w_i`` (``n_samples`` without weights).
    """

    class_counts: np.ndarray
    class_weight_sums: np.ndarray
    n_samples: int
    weight_sum: float


# ---------------------------------------------------------------------------------------------
# Per-block value checks (pure NumPy)
# ---------------------------------------------------------------------------------------------


def all_finite(X: np.ndarray) -> bool:
    """Whether every value of ``X`` is finite.

    The values of a float32/float64 array are first summed: a NaN or an infinity makes the
    sum non-finite, and the sum reads ``X`` once without the boolean array of
    :func:`numpy.isfinite`. Only when the sum is not finite (large finite values may overflow)
    is every value tested.
    """
    if X.size and X.dtype in (np.float32, np.float64):
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.sum(X)):
                return True
    return bool(np.isfinite(X).all())


@dataclass(frozen=True)
class RangeOverflow:
    """Finite features that the feature dtype cannot hold: cast, they become infinite.

    Attributes
    ----------
    row, column : int
        Where the first one (in row order) lies, counted from the first row and column of the
        values checked.
    value : float
        That value.
    """

    row: int
    column: int
    value: float

    def moved(self, rows: int = 0, columns: int = 0) -> RangeOverflow:
        """The same values, counted from ``rows`` rows and ``columns`` columns earlier."""
        return replace(self, row=self.row + rows, column=self.column + columns)


def range_overflow(values: np.ndarray, cast: np.ndarray) -> RangeOverflow | None:
    """The finite ``values`` that became infinite in ``cast`` (``values`` in a narrower dtype,
    both of shape (n_rows, n_columns)); None when there are none."""
    if cast.dtype == values.dtype or cast.dtype == np.float64 or all_finite(cast):
        return None
    over = np.isinf(cast) & np.isfinite(values)
    if not over.any():
        return None
    row, column = (int(i) for i in np.unravel_index(int(np.argmax(over)), over.shape))
    return RangeOverflow(row, column, float(values[row, column]))


def cast_features(values: np.ndarray, dtype: Any) -> tuple[np.ndarray, RangeOverflow | None]:
    """``values`` of shape (n_rows, n_columns) in ``dtype``, and those it cannot hold.

    Values beyond the range of ``dtype`` round to ±inf without a :class:`RuntimeWarning`; the
    caller refuses them with :func:`overflow_problem`, which names the first one.
    """
    with np.errstate(over="ignore"):
        cast = values.astype(dtype, copy=False)
    return cast, range_overflow(values, cast)


def earliest_overflow(
    first: RangeOverflow | None, second: RangeOverflow | None
) -> RangeOverflow | None:
    """The earlier of the overflows of two parts of the same rows."""
    if first is None or second is None:
        return first or second
    return min(first, second, key=lambda found: (found.row, found.column))


#: The next wider feature dtype, which holds what a narrower one overflows on.
_WIDER = {"float16": "float32", "bfloat16": "float64", "float32": "float64"}


def overflow_problem(
    overflow: RangeOverflow, dtype: Any, feature_names: Sequence[str] | None = None
) -> str:
    """What to say of ``overflow`` (rows counted from the dataset's first), after "X in ...".

    Parts of a source are converted in parallel and the first part to show values out of range
    stops the conversion, so the value named is one of them, not always the first.
    """
    dtype = np.dtype(dtype)
    wider = _WIDER.get(dtype.name, "float64")
    column = overflow.column
    name = f"column {feature_names[column]!r}" if feature_names else f"column {column}"
    return (
        f"has values beyond {dtype.name}'s range (±{float(np.finfo(dtype).max):g}), such as "
        f"{overflow.value:g} in row {overflow.row}, {name}; use dtype={wider!r}, or scale those "
        "features."
    )


def _check_feature_block(X_block: Any, where: str, row_start: int) -> list[BlockProblem]:
    if is_sparse(X_block):
        return [BlockProblem(*problem) for problem in csr_problems(X_block, where, row_start)]
    if all_finite(X_block):
        return []
    finite = np.isfinite(X_block)
    first_row = row_start + int(np.argmin(finite.all(axis=1)))
    n_bad = int(finite.size - np.count_nonzero(finite))
    return [
        BlockProblem(
            "X",
            f"has {n_bad} non-finite value(s) (NaN or inf) in {where}, first in row {first_row}; "
            "drop or impute those rows and write the dataset again.",
        )
    ]


def _weight_problems(weights: np.ndarray, where: str, row_start: int) -> list[BlockProblem]:
    """The problem of sample weights that are negative or non-finite, if any."""
    bad = ~(np.isfinite(weights) & (weights >= 0))
    if not bad.any():
        return []
    first = int(np.argmax(bad))
    return [
        BlockProblem(
            "sample_weight",
            f"has {int(bad.sum())} negative or non-finite value(s) in {where}, first "
            f"{float(weights[first])!r} in row {row_start + first}; weights must be finite and "
            ">= 0.",
        )
    ]


def _class_id_counts(
    ids: np.ndarray, weights: np.ndarray | None, n_classes: int, where: str, row_start: int
) -> tuple[np.ndarray, np.ndarray, list[BlockProblem]]:
    if not np.issubdtype(ids.dtype, np.integer):
        problem = BlockProblem(
            "y",
            f"has dtype {ids.dtype} in {where}; class ids must be integers in [0, {n_classes}) "
            "(write_dataset maps raw labels to ids for you).",
        )
        return np.zeros(n_classes, np.int64), np.zeros(n_classes), [problem]
    out_of_range = (ids < 0) | (ids >= n_classes)
    problems = []
    if out_of_range.any():
        first = int(np.argmax(out_of_range))
        problems.append(
            BlockProblem(
                "y",
                f"has {int(out_of_range.sum())} class id(s) outside [0, {n_classes}) in {where}, "
                f"first {int(ids[first])} in row {row_start + first}; class ids index `classes`: "
                "rewrite y with ids in range (write_dataset maps raw labels for you).",
            )
        )
        keep = ~out_of_range
        ids = ids[keep]
        weights = None if weights is None else weights[keep]
    ids = ids.astype(np.intp, copy=False)
    counts = np.bincount(ids, minlength=n_classes).astype(np.int64)
    if weights is None:
        weight_sums = counts.astype(np.float64)
    else:
        weight_sums = np.bincount(ids, weights=weights.astype(np.float64), minlength=n_classes)
    return counts, weight_sums, problems


def _probability_row_counts(
    Y_block: np.ndarray, weights: np.ndarray | None, n_classes: int, where: str, row_start: int
) -> tuple[np.ndarray, np.ndarray, list[BlockProblem]]:
    if Y_block.ndim != 2 or Y_block.shape[1] != n_classes:
        raise ValueError(
            f"probability rows must have shape (n_rows, {n_classes}), got {Y_block.shape} in "
            f"{where}."
        )
    problems = []
    bad_entries = ~(np.isfinite(Y_block) & (Y_block >= 0))
    bad_rows = bad_entries.any(axis=1)
    if bad_rows.any():
        first = int(np.argmax(bad_rows))
        problems.append(
            BlockProblem(
                "Y",
                f"has {int(bad_rows.sum())} row(s) with negative or non-finite entries in {where}, "
                f"first row {row_start + first}; each row must be a probability vector.",
            )
        )
    row_sums = Y_block.sum(axis=1, dtype=np.float64)
    eps = np.finfo(Y_block.dtype).eps if np.issubdtype(Y_block.dtype, np.floating) else 0.0
    tolerance = max(ROW_SUM_TOLERANCE, n_classes * float(eps))
    off = ~bad_rows & ~(np.abs(row_sums - 1.0) <= tolerance)
    if off.any():
        first = int(np.argmax(off))
        problems.append(
            BlockProblem(
                "Y",
                f"has {int(off.sum())} row(s) that do not sum to 1 (tolerance {tolerance:.1e}) in "
                f"{where}, first row {row_start + first} sums to {row_sums[first]:.9g}; normalize "
                "with Y / Y.sum(axis=1, keepdims=True).",
            )
        )
    counts = np.bincount(np.argmax(Y_block, axis=1), minlength=n_classes).astype(np.int64)
    clean = np.where(bad_entries, 0.0, Y_block.astype(np.float64))
    weight_sums = clean.sum(axis=0) if weights is None else weights.astype(np.float64) @ clean
    return counts, weight_sums, problems


def block_stats(
    X_block: Any,
    labels_block: np.ndarray,
    weight_block: np.ndarray | None,
    n_classes: int,
    block_index: int,
    row_start: int,
) -> BlockStats:
    """Class counts and value problems of one block of rows (pure NumPy, no I/O).

    Parameters
    ----------
    X_block : ndarray or scipy.sparse CSR matrix of shape (n_rows, n_features)
    labels_block : ndarray of shape (n_rows,) or (n_rows, n_classes)
        Integer class ids, or one-hot / probability rows.
    weight_block : ndarray of shape (n_rows,) or None
    n_classes : int
    block_index : int
        Position of the block, used in messages and to order blocks in :func:`combine_stats`.
    row_start : int
        Index of the block's first row in the whole dataset, used in messages.

    Returns
    -------
    BlockStats
        Its ``problems`` name non-finite ``X``, class ids outside ``[0, n_classes)``, negative or
        non-finite weights, and probability rows that are negative or do not sum to 1; for a
        sparse ``X`` also malformed row pointers, column indices out of range and rows whose
        indices are not strictly increasing (:func:`dsoftmax.data.sparse.csr_problems`).

    Examples
    --------
    >>> import numpy as np
    >>> stats = block_stats(np.zeros((3, 2)), np.array([0, 1, 1]), None, 2, 0, 0)
    >>> stats.class_counts.tolist(), stats.problems
    ([1, 2], ())
    """
    n_rows = X_block.shape[0]
    if labels_block.shape[0] != n_rows or (
        weight_block is not None and weight_block.shape[0] != n_rows
    ):
        raise ValueError(
            f"block {block_index} has {n_rows} rows of X but labels of shape "
            f"{labels_block.shape} and weights of shape "
            f"{None if weight_block is None else weight_block.shape}; blocks must cover the same "
            "rows."
        )
    where = f"block {block_index} ({rows_text(row_start, n_rows)})"
    problems = _check_feature_block(X_block, where, row_start)
    weights = None
    if weight_block is not None:
        problems += _weight_problems(weight_block, where, row_start)
        weights = np.where(np.isfinite(weight_block), weight_block, 0.0)
    if labels_block.ndim == 1:
        counts, weight_sums, label_problems = _class_id_counts(
            labels_block, weights, n_classes, where, row_start
        )
    else:
        counts, weight_sums, label_problems = _probability_row_counts(
            labels_block, weights, n_classes, where, row_start
        )
    weight_sum = float(n_rows) if weights is None else float(np.sum(weights, dtype=np.float64))
    return BlockStats(
        block_index=block_index,
        row_start=row_start,
        n_rows=n_rows,
        class_counts=counts,
        class_weight_sums=weight_sums,
        weight_sum=weight_sum,
        problems=tuple(problems + label_problems),
        n_nonzero=int(X_block.nnz) if is_sparse(X_block) else None,
    )


def combine_stats(stats: Sequence[BlockStats], dataset_name: str) -> DatasetStats:
    """Add the statistics of every block, or raise on the first problems found.

    Parameters
    ----------
    stats : sequence of BlockStats
        One per block, in any order (they are added in block order).
    dataset_name : str
        How messages name the data, e.g. ``repr(url)``.

    Returns
    -------
    DatasetStats

    Raises
    ------
    ValueError
        Listing up to five problems (block, rows, value, fix) when any block has one, or when
        every sample weight is zero.
    """
    if not stats:
        raise ValueError(f"no blocks to check in {dataset_name}; the dataset has no rows.")
    ordered = sorted(stats, key=lambda block: block.block_index)
    problems = [problem for block in ordered for problem in block.problems]
    if problems:
        lines = [f"{p.array} in {dataset_name} {p.detail}" for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"(and {len(problems) - MAX_PROBLEMS_SHOWN} more problems)")
        raise ValueError("\n".join(lines))
    weight_sum = float(sum(block.weight_sum for block in ordered))
    if not weight_sum > 0:
        raise ValueError(
            f"every sample_weight in {dataset_name} is zero; at least one row needs a positive "
            "weight."
        )
    return DatasetStats(
        class_counts=np.sum([block.class_counts for block in ordered], axis=0, dtype=np.int64),
        class_weight_sums=np.sum([block.class_weight_sums for block in ordered], axis=0),
        n_samples=int(sum(block.n_rows for block in ordered)),
        weight_sum=weight_sum,
    )


def check_in_memory_values(
    labels: np.ndarray, weights: np.ndarray | None, n_classes: int, dataset_name: str
) -> None:
    """Raise on the value problems of in-memory labels and weights, all rows taken as one
    block, with the messages of :func:`combine_stats` (features are checked on their own,
    e.g. by scikit-learn's ``check_array``)."""
    no_features = np.empty((labels.shape[0], 0))
    combine_stats([block_stats(no_features, labels, weights, n_classes, 0, 0)], dataset_name)


def check_values(dataset: Dataset, *, client: Any = None) -> DatasetStats:
    """One pass over every value of ``dataset``: class counts and value problems.

    Parameters
    ----------
    dataset : Dataset
    client : distributed.Client, optional
        Runs the pass on this cluster; the default dask scheduler otherwise.

    Returns
    -------
    DatasetStats

    Raises
    ------
    ValueError
        Naming the array, block, rows and value of the first problems (see :func:`block_stats`).
    """
    tasks = block_stats_tasks(dataset.X, dataset.labels, dataset.sample_weight, dataset.n_classes)
    return combine_stats(compute(tasks, client=client), repr(dataset.url))


def block_stats_tasks(
    X: da.Array, labels: da.Array, weights: da.Array | None, n_classes: int
) -> list[Any]:
    """One delayed :func:`block_stats` per block of rows of arrays with aligned row chunks."""
    token = uuid.uuid4().hex
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])]).tolist()
    n_blocks = len(X.chunks[0])
    return [
        dask.delayed(block_stats, pure=True)(
            X_part,
            label_part,
            weight_part,
            n_classes,
            index,
            starts[index],
            dask_key_name=f"dsoftmax-block-stats-{token}-{index}",
        )
        for index, (X_part, label_part, weight_part) in enumerate(
            zip(
                row_blocks(X, n_blocks),
                row_blocks(labels, n_blocks),
                row_blocks(weights, n_blocks),
                strict=True,
            )
        )
    ]
