"""Which rows form each minibatch: seeded, shuffled per epoch, independent of the cluster.

The order of rows in an epoch is a permutation drawn from ``np.random.default_rng([seed,
epoch])`` over the training rows, and batch ``b`` of the epoch is the slice
``[b·batch_size, (b+1)·batch_size)`` of it. Nothing here looks at the storage chunking or at
the number of workers, so the same data, seed and batch size give the same minibatches
everywhere. The chunking enters only when a batch of global row numbers is translated into
per-block local indices (:func:`rows_to_blocks`), which the engine uses to pick rows from the
blocks its workers hold.

Row numbers are global: row ``i`` of the dataset lives in block ``j`` with
``starts[j] <= i < starts[j + 1]`` where ``starts = block_starts(chunk_rows)``, at local
index ``i - starts[j]``.

Memory: a sampler holds its training rows and, while an epoch runs, the epoch's rows in batch
order, 8 bytes per row each (160 MB for 10 million rows); drawing an epoch's order takes about
twice that again for a moment.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np

from .validation import check_seed, whole_number

__all__ = [
    "EpochSampler",
    "RowBatch",
    "block_starts",
    "full_batch",
    "rows_to_blocks",
    "sorted_within_batches",
    "split_validation",
]

#: Spawn key of the validation split's random stream (any constant: it only has to differ from
#: the epoch streams, which have none).
_SPLIT_KEY = 0x5F1D


class RowBatch(NamedTuple):
    """A selection of rows, grouped by the block that holds them.

    Attributes
    ----------
    blocks : tuple of (int, ndarray or None)
        ``(block_index, local_rows)`` pairs in ascending ``block_index``, only for blocks with
        selected rows. ``local_rows`` is a sorted int64 ndarray of row indices local to the
        block, or **None when every row of the block is selected**, so the engine can use the
        block as it is instead of copying it through a fancy index.
    n_rows : int
        Number of selected rows.
    """

    blocks: tuple[tuple[int, np.ndarray | None], ...]
    n_rows: int

    def global_rows(self, chunk_rows: Sequence[int]) -> np.ndarray:
        """The selected rows as sorted global row numbers.

        Parameters
        ----------
        chunk_rows : sequence of int
            Rows per block, as given to :func:`rows_to_blocks`.

        Returns
        -------
        ndarray of shape (n_rows,), int64
        """
        starts = block_starts(chunk_rows)
        parts = [
            np.arange(starts[index], starts[index + 1]) if local is None else starts[index] + local
            for index, local in self.blocks
        ]
        if not parts:
            return np.empty(0, dtype=np.int64)
        return np.concatenate(parts).astype(np.int64, copy=False)


def block_starts(chunk_rows: Sequence[int]) -> np.ndarray:
    """Global row number of the first row of every block, and the total row count.

    Parameters
    ----------
    chunk_rows : sequence of int
        Rows per block, in block order (the row chunks of the dataset).

    Returns
    -------
    ndarray of shape (n_blocks + 1,), int64
        ``[0, c_0, c_0 + c_1, ..., n_samples]``.

    Examples
    --------
    >>> block_starts([3, 2, 4])
    array([0, 3, 5, 9])
    """
    sizes = np.asarray(chunk_rows)
    if sizes.ndim != 1 or sizes.size == 0 or not np.issubdtype(sizes.dtype, np.integer):
        raise ValueError(
            "chunk_rows must be a non-empty sequence of integers (rows per block), "
            f"got {chunk_rows!r}."
        )
    if np.any(sizes < 0):
        raise ValueError(f"chunk_rows must not be negative, got {chunk_rows!r}.")
    starts = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    return starts


def full_batch(chunk_rows: Sequence[int]) -> RowBatch:
    """Every row of every non-empty block, each as ``(block_index, None)``.

    Examples
    --------
    >>> full_batch([3, 0, 4])
    RowBatch(blocks=((0, None), (2, None)), n_rows=7)
    """
    starts = block_starts(chunk_rows)
    sizes = np.diff(starts)
    blocks = tuple((int(index), None) for index in np.flatnonzero(sizes))
    return RowBatch(blocks=blocks, n_rows=int(starts[-1]))


def _row_array(name: str, rows: object) -> np.ndarray:
    array = np.asarray(rows)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise ValueError(
            f"{name} must be a 1-D array of integer row numbers, got shape {array.shape} "
            f"and dtype {array.dtype}."
        )
    return array.astype(np.int64, copy=False)


def rows_to_blocks(rows: np.ndarray, chunk_rows: Sequence[int]) -> RowBatch:
    """Group global row numbers by block, as sorted local indices.

    Parameters
    ----------
    rows : ndarray of shape (n_rows,)
        Distinct global row numbers in ``[0, sum(chunk_rows))``, in any order.
    chunk_rows : sequence of int
        Rows per block.

    Returns
    -------
    RowBatch
        Blocks in ascending order; a block whose rows are all selected gets None.

    Examples
    --------
    >>> rows_to_blocks(np.array([4, 0, 3, 8]), [3, 2, 4])
    RowBatch(blocks=((0, array([0])), (1, None), (2, array([3]))), n_rows=4)
    """
    starts = block_starts(chunk_rows)
    ordered = np.sort(_row_array("rows", rows))
    n_samples = int(starts[-1])
    if ordered.size and (ordered[0] < 0 or ordered[-1] >= n_samples):
        bad = ordered[0] if ordered[0] < 0 else ordered[-1]
        raise ValueError(
            f"row {bad} is outside the dataset's rows [0, {n_samples}) given by chunk_rows; "
            "select rows of this dataset only."
        )
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.size:
        raise ValueError(
            f"rows must be distinct, but row {repeated[0]} appears more than once; "
            "deduplicate with np.unique."
        )
    return _group_by_block(ordered, starts)


def _group_by_block(ordered: np.ndarray, starts: np.ndarray) -> RowBatch:
    """``rows_to_blocks`` for sorted, distinct, in-range rows and precomputed block starts."""
    if ordered.size == 0:
        return RowBatch(blocks=(), n_rows=0)
    block_of_row = np.searchsorted(starts, ordered, side="right") - 1
    local_rows = ordered - starts[block_of_row]
    # Runs of equal block index: the work is proportional to the batch, never to all blocks.
    run_starts = np.flatnonzero(np.diff(block_of_row, prepend=-1))
    indices = block_of_row[run_starts]
    whole = np.diff(run_starts, append=ordered.size) == (starts[indices + 1] - starts[indices])
    bounds = [*run_starts.tolist(), ordered.size]
    blocks = tuple(
        (index, None if is_whole else local_rows[begin:end])
        for index, is_whole, begin, end in zip(
            indices.tolist(), whole.tolist(), bounds[:-1], bounds[1:], strict=True
        )
    )
    return RowBatch(blocks=blocks, n_rows=int(ordered.size))


def split_validation(n_samples: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n_samples)`` at random into training and validation rows.

    Parameters
    ----------
    n_samples : int
        Rows in the dataset (at least 2).
    fraction : float
        Share of rows held out, in (0, 1); the validation set has
        ``max(1, round(fraction · n_samples))`` rows and the training set at least one.
    seed : int
        Non-negative; the split depends only on ``n_samples``, ``fraction`` and ``seed`` and
        uses a random stream of its own, distinct from the epochs' streams.

    Returns
    -------
    train_rows : ndarray of shape (n_samples - n_validation,), int64, sorted
    validation_rows : ndarray of shape (n_validation,), int64, sorted

    Examples
    --------
    >>> train, validation = split_validation(10, 0.2, seed=0)
    >>> len(train), len(validation)
    (8, 2)
    """
    total = whole_number("n_samples", n_samples)
    if isinstance(fraction, bool | np.bool_) or not isinstance(
        fraction, int | float | np.integer | np.floating
    ):
        raise TypeError(f"fraction must be a float in (0, 1), got {fraction!r}.")
    if not 0 < fraction < 1:
        raise ValueError(
            f"fraction must be in (0, 1) (the share of rows held out for validation), "
            f"got {fraction!r}; 0.1 is usual."
        )
    n_validation = max(1, round(float(fraction) * total))
    if n_validation >= total:
        raise ValueError(
            f"a validation fraction of {fraction!r} of {total} rows leaves no training rows; "
            "use a smaller fraction or more data."
        )
    # spawn_key gives the split a stream that no default_rng([seed, epoch]) can produce.
    rng = np.random.default_rng(np.random.SeedSequence(check_seed(seed), spawn_key=(_SPLIT_KEY,)))
    held_out = np.zeros(total, dtype=bool)
    held_out[rng.permutation(total)[:n_validation]] = True
    # A mask instead of sorting: linear time, and the rows come out sorted.
    return np.flatnonzero(~held_out), np.flatnonzero(held_out)


class EpochSampler:
    """Seeded minibatches that visit every training row exactly once per epoch.

    Parameters
    ----------
    n_samples_or_rows : int or ndarray of shape (n_train,)
        The number of rows (all rows train), or the global numbers of the training rows, e.g.
        the first output of :func:`split_validation`. They must be distinct; they are sorted
        first, so their order does not matter.
    batch_size : int
        Rows per batch, at least 1; a value above the number of training rows is clamped to
        it (one full batch per epoch). The last batch of an epoch holds the remainder and may
        be smaller.
    seed : int
        Non-negative; epoch ``e`` is shuffled by ``np.random.default_rng([seed, e])``.
    shuffle_window : int, optional
        None (default): the rows of an epoch are one permutation of all training rows, so a
        batch draws from the whole dataset. An int ``W``: the rows are cut into windows of
        ``W`` consecutive row numbers (``[k·W, (k + 1)·W)``), the epoch visits the windows in a
        random order, each window's rows in a random order, and batches are cut from that
        sequence. A batch then covers one window, or two where it straddles a boundary, which
        is what streaming from a store needs: each chunk is read about once per epoch.

    The order depends only on the training rows, the batch size, the seed, the epoch and the
    window: never on how the data is chunked, held or spread over workers.

    Attributes
    ----------
    rows : ndarray of shape (n_rows,), int64
        The training rows, sorted.
    n_rows : int
        Number of training rows.
    batch_size : int
        The batch size in use (after clamping).
    n_batches : int
        Batches per epoch, ``ceil(n_rows / batch_size)``.

    Examples
    --------
    >>> sampler = EpochSampler(10, batch_size=4, seed=0)
    >>> sampler.n_batches
    3
    >>> [batch.n_rows for batch in sampler.batches(epoch=0, chunk_rows=[5, 5])]
    [4, 4, 2]
    """

    def __init__(
        self,
        n_samples_or_rows: int | np.ndarray,
        batch_size: int,
        seed: int,
        *,
        shuffle_window: int | None = None,
    ) -> None:
        self.rows = self._training_rows(n_samples_or_rows)
        if shuffle_window is not None:
            shuffle_window = whole_number("shuffle_window", shuffle_window)
            if shuffle_window < 1:
                raise ValueError(
                    f"shuffle_window must be >= 1 (rows per shuffle window), got {shuffle_window}."
                )
        self.shuffle_window = shuffle_window
        self.n_rows = int(self.rows.size)
        size = whole_number("batch_size", batch_size)
        if size < 1:
            raise ValueError(f"batch_size must be >= 1 (rows per batch), got {size}.")
        self.batch_size = min(size, self.n_rows)
        self.seed = check_seed(seed)
        self.n_batches = -(-self.n_rows // self.batch_size)

    @staticmethod
    def _training_rows(n_samples_or_rows: int | np.ndarray) -> np.ndarray:
        if isinstance(n_samples_or_rows, int | np.integer) and not isinstance(
            n_samples_or_rows, bool | np.bool_
        ):
            if n_samples_or_rows < 1:
                raise ValueError(f"n_samples must be >= 1, got {n_samples_or_rows}.")
            return np.arange(int(n_samples_or_rows), dtype=np.int64)
        rows = _row_array("n_samples_or_rows", n_samples_or_rows)
        if rows.size == 0:
            raise ValueError("the training rows are empty; the sampler needs at least one row.")
        # Sorted input (as split_validation returns) is checked in linear time, without a sort.
        ordered = rows.copy() if np.all(rows[1:] > rows[:-1]) else np.sort(rows)
        n_repeated = int(np.count_nonzero(ordered[1:] == ordered[:-1]))
        if n_repeated:
            raise ValueError(
                f"the training rows hold {n_repeated} repeated row numbers; "
                "pass each row once (e.g. the train rows of split_validation)."
            )
        if ordered[0] < 0:
            raise ValueError(f"row numbers must be >= 0, got {ordered[0]}.")
        return ordered

    def epoch_rows(self, epoch: int) -> np.ndarray:
        """The training rows in the order epoch ``epoch`` (0-based) visits them.

        Returns
        -------
        ndarray of shape (n_rows,), int64
        """
        return self.rows[self._visit_order(_epoch_number(epoch))]

    def _visit_order(self, epoch: int) -> np.ndarray:
        """Positions in :attr:`rows`, in the order epoch ``epoch`` visits them: a permutation
        of all of them, or with ``shuffle_window`` window by window."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.shuffle_window is None:
            return rng.permutation(self.n_rows)
        window_of_row = self.rows // self.shuffle_window
        n_windows = int(window_of_row[-1]) + 1
        window_rank = np.empty(n_windows, dtype=np.int64)
        window_rank[rng.permutation(n_windows)] = np.arange(n_windows)
        # Sort by the windows' visiting rank; ties (rows of one window) by a random permutation.
        return np.lexsort((rng.permutation(self.n_rows), window_rank[window_of_row]))

    def batch_rows(self, epoch: int, start_batch: int = 0) -> Iterator[np.ndarray]:
        """The minibatches of epoch ``epoch`` as sorted global row numbers.

        Parameters
        ----------
        epoch : int
            0-based epoch number.
        start_batch : int
            Skip the first ``start_batch`` batches, to resume an epoch part-way; in
            ``[0, n_batches]``.

        Yields
        ------
        ndarray of shape (n_batch_rows,), int64
            Sorted: the order of rows within a batch does not change its sums.
        """
        first = whole_number("start_batch", start_batch)
        if not 0 <= first <= self.n_batches:
            raise ValueError(
                f"start_batch must be in [0, {self.n_batches}] (batches per epoch), got {first}."
            )
        # Checked here rather than inside a generator, so bad arguments fail at the call.
        order = self._visit_order(_epoch_number(epoch))
        in_batches = self.rows[sorted_within_batches(order, self.batch_size)]
        return self._slices(in_batches, first)

    def _slices(self, rows: np.ndarray, first: int) -> Iterator[np.ndarray]:
        for index in range(first, self.n_batches):
            start = index * self.batch_size
            yield rows[start : start + self.batch_size]

    def batches(
        self, epoch: int, chunk_rows: Sequence[int], start_batch: int = 0
    ) -> Iterator[RowBatch]:
        """The minibatches of epoch ``epoch`` (:meth:`batch_rows`), grouped by the blocks of
        ``chunk_rows``.

        Parameters
        ----------
        epoch : int
            0-based epoch number.
        chunk_rows : sequence of int
            Rows per block of the dataset; changes how rows are grouped, never which.
        start_batch : int
            Skip the first ``start_batch`` batches; in ``[0, n_batches]``.

        Yields
        ------
        RowBatch
        """
        starts = block_starts(chunk_rows)
        if self.rows[-1] >= starts[-1]:
            raise ValueError(
                f"the sampler's rows go up to {self.rows[-1]}, but chunk_rows describes "
                f"{starts[-1]} rows; build the sampler and the batches from the same dataset."
            )
        rows = self.batch_rows(epoch, start_batch)
        return (_group_by_block(batch, starts) for batch in rows)


def _epoch_number(epoch: object) -> int:
    count = whole_number("epoch", epoch)
    if count < 0:
        raise ValueError(f"epoch must be >= 0, got {count}.")
    return count


#: Batches per epoch up to which :func:`sorted_within_batches` sorts 16-bit batch numbers
#: (NumPy sorts those by radix, in linear time); beyond, 32-bit ones.
RADIX_SORT_BATCHES = 2**16


def sorted_within_batches(order: np.ndarray, batch_size: int) -> np.ndarray:
    """``order`` with each slice of ``batch_size`` (each batch) sorted, the slices in place.

    Parameters
    ----------
    order : ndarray of shape (n,), int
        A permutation of ``range(n)``.
    batch_size : int
        Length of the slices; the last one holds the remainder.

    Returns
    -------
    ndarray of shape (n,), int64

    Notes
    -----
    One stable sort of every position by the number of its batch puts the positions of each
    batch together, in increasing order: the same result as sorting each slice, in linear time
    and one NumPy call instead of one sort per batch.

    Examples
    --------
    >>> sorted_within_batches(np.array([3, 0, 4, 1, 2]), 2)
    array([0, 3, 1, 4, 2])
    """
    n_batches = -(-order.size // batch_size)
    key_type = np.uint16 if n_batches <= RADIX_SORT_BATCHES else np.uint32
    batch_of = np.empty(order.size, dtype=key_type)
    batch_of[order] = np.repeat(np.arange(n_batches, dtype=key_type), batch_size)[: order.size]
    return np.argsort(batch_of, kind="stable")
