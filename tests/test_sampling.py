"""The minibatch sampler: coverage, determinism, independence of the chunking, resumption."""

from __future__ import annotations

import numpy as np
import pytest

from dsoftmax.sampling import (
    EpochSampler,
    RowBatch,
    block_starts,
    full_batch,
    rows_to_blocks,
    sorted_within_batches,
    split_validation,
)

N_SAMPLES = 103
EVEN_CHUNKS = (25, 25, 25, 25, 3)
UNEVEN_CHUNKS = (1, 40, 0, 7, 50, 5)


def _batch_row_sets(sampler: EpochSampler, epoch: int, chunk_rows) -> list[np.ndarray]:
    return [batch.global_rows(chunk_rows) for batch in sampler.batches(epoch, chunk_rows)]


# ------------------------------------------------------------------------ blocks and batches


def test_block_starts_are_cumulative_offsets():
    starts = block_starts(UNEVEN_CHUNKS)
    np.testing.assert_array_equal(starts, [0, 1, 41, 41, 48, 98, 103])
    assert starts.dtype == np.int64


@pytest.mark.parametrize(
    ("chunk_rows", "message"),
    [
        ((), r"chunk_rows must be a non-empty sequence of integers"),
        ((2.5, 3), r"chunk_rows must be a non-empty sequence of integers.*2\.5"),
        ((3, -1), r"chunk_rows must not be negative, got \(3, -1\)"),
    ],
)
def test_block_starts_rejects_bad_chunks(chunk_rows, message):
    with pytest.raises(ValueError, match=message):
        block_starts(chunk_rows)


def test_rows_to_blocks_groups_sorted_local_rows_and_round_trips():
    rows = np.random.default_rng(0).choice(N_SAMPLES, size=37, replace=False)
    batch = rows_to_blocks(rows, UNEVEN_CHUNKS)
    starts = block_starts(UNEVEN_CHUNKS)
    indices = [index for index, _ in batch.blocks]
    assert indices == sorted(set(indices))
    assert batch.blocks[0] == (0, None)  # block 0 has one row, and it was drawn
    for index, local in batch.blocks[1:]:
        assert local.dtype == np.int64 and 0 < local.size < UNEVEN_CHUNKS[index]
        assert np.all(np.diff(local) > 0)
        assert local[0] >= 0 and local[-1] < UNEVEN_CHUNKS[index]
        in_block = (rows >= starts[index]) & (rows < starts[index + 1])
        np.testing.assert_array_equal(starts[index] + local, np.sort(rows[in_block]))
    assert batch.n_rows == 37
    np.testing.assert_array_equal(batch.global_rows(UNEVEN_CHUNKS), np.sort(rows))


def test_rows_to_blocks_marks_whole_blocks_with_none():
    # Rows 1..40 are all of block 1; rows 48 and 97 are part of block 4; block 2 is empty.
    rows = np.concatenate([np.arange(40, 0, -1), [97, 48]])
    batch = rows_to_blocks(rows, UNEVEN_CHUNKS)
    assert batch.blocks[0] == (1, None)
    assert batch.blocks[1][0] == 4
    np.testing.assert_array_equal(batch.blocks[1][1], [0, 49])
    assert len(batch.blocks) == 2 and batch.n_rows == 42


def test_rows_to_blocks_of_no_rows_is_empty():
    assert rows_to_blocks(np.array([], dtype=np.int64), UNEVEN_CHUNKS) == RowBatch((), 0)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (np.array([0, 103]), r"row 103 is outside the dataset's rows \[0, 103\)"),
        (np.array([-1, 5]), r"row -1 is outside the dataset's rows"),
        (np.array([4, 9, 4]), r"rows must be distinct, but row 4 appears more than once"),
        (np.array([[1, 2]]), r"rows must be a 1-D array of integer row numbers.*\(1, 2\)"),
        (np.array([1.0, 2.0]), r"rows must be a 1-D array of integer.*float64"),
    ],
)
def test_rows_to_blocks_rejects_bad_rows(rows, message):
    with pytest.raises(ValueError, match=message):
        rows_to_blocks(rows, UNEVEN_CHUNKS)


def test_full_batch_uses_every_non_empty_block_whole():
    batch = full_batch(UNEVEN_CHUNKS)
    assert batch.blocks == ((0, None), (1, None), (3, None), (4, None), (5, None))
    assert batch.n_rows == N_SAMPLES
    np.testing.assert_array_equal(batch.global_rows(UNEVEN_CHUNKS), np.arange(N_SAMPLES))


# ------------------------------------------------------------------------------ the sampler


@pytest.mark.parametrize("batch_size", [1, 10, 50, 103])
def test_every_row_is_visited_exactly_once_per_epoch(batch_size):
    sampler = EpochSampler(N_SAMPLES, batch_size=batch_size, seed=3)
    for epoch in (0, 1):
        batches = list(sampler.batches(epoch, UNEVEN_CHUNKS))
        assert len(batches) == sampler.n_batches == -(-N_SAMPLES // batch_size)
        sizes = [batch.n_rows for batch in batches]
        assert sizes[:-1] == [batch_size] * (len(sizes) - 1)
        assert sizes[-1] == N_SAMPLES - batch_size * (len(sizes) - 1)
        rows = np.concatenate([batch.global_rows(UNEVEN_CHUNKS) for batch in batches])
        np.testing.assert_array_equal(np.sort(rows), np.arange(N_SAMPLES))


def test_the_order_is_the_documented_seeded_permutation():
    sampler = EpochSampler(N_SAMPLES, batch_size=8, seed=11)
    expected = np.random.default_rng([11, 4]).permutation(N_SAMPLES)
    np.testing.assert_array_equal(sampler.epoch_rows(4), expected)
    first = next(iter(sampler.batches(4, EVEN_CHUNKS)))
    np.testing.assert_array_equal(first.global_rows(EVEN_CHUNKS), np.sort(expected[:8]))


def test_same_seed_same_batches_and_new_epochs_and_seeds_reshuffle():
    one = EpochSampler(N_SAMPLES, batch_size=10, seed=5)
    two = EpochSampler(N_SAMPLES, batch_size=10, seed=5)
    for left, right in zip(
        _batch_row_sets(one, 2, EVEN_CHUNKS), _batch_row_sets(two, 2, EVEN_CHUNKS), strict=True
    ):
        np.testing.assert_array_equal(left, right)
    assert not np.array_equal(one.epoch_rows(0), one.epoch_rows(1))
    other_seed = EpochSampler(N_SAMPLES, batch_size=10, seed=6)
    assert not np.array_equal(one.epoch_rows(0), other_seed.epoch_rows(0))


def test_batches_do_not_depend_on_the_chunking():
    sampler = EpochSampler(N_SAMPLES, batch_size=16, seed=0)
    chunkings = [EVEN_CHUNKS, UNEVEN_CHUNKS, (N_SAMPLES,), (1,) * N_SAMPLES]
    reference = _batch_row_sets(sampler, 1, chunkings[0])
    for chunk_rows in chunkings[1:]:
        for left, right in zip(reference, _batch_row_sets(sampler, 1, chunk_rows), strict=True):
            np.testing.assert_array_equal(left, right)


def test_resuming_with_start_batch_gives_the_tail_of_the_same_sequence():
    sampler = EpochSampler(N_SAMPLES, batch_size=9, seed=2)
    full = _batch_row_sets(sampler, 3, UNEVEN_CHUNKS)
    tail = [batch.global_rows(UNEVEN_CHUNKS) for batch in sampler.batches(3, UNEVEN_CHUNKS, 7)]
    assert len(tail) == len(full) - 7
    for left, right in zip(full[7:], tail, strict=True):
        np.testing.assert_array_equal(left, right)
    assert list(sampler.batches(3, UNEVEN_CHUNKS, start_batch=sampler.n_batches)) == []


def test_training_rows_subset_is_sampled_alone_and_in_any_given_order():
    train_rows, validation_rows = split_validation(N_SAMPLES, 0.2, seed=1)
    sampler = EpochSampler(train_rows, batch_size=7, seed=4)
    shuffled = EpochSampler(train_rows[::-1].copy(), batch_size=7, seed=4)
    assert sampler.n_rows == train_rows.size
    rows = np.concatenate(_batch_row_sets(sampler, 0, UNEVEN_CHUNKS))
    np.testing.assert_array_equal(np.sort(rows), train_rows)
    assert not np.isin(rows, validation_rows).any()
    np.testing.assert_array_equal(sampler.epoch_rows(0), shuffled.epoch_rows(0))


def test_batch_size_above_the_row_count_is_clamped_to_one_full_batch():
    sampler = EpochSampler(N_SAMPLES, batch_size=10_000, seed=0)
    assert (sampler.batch_size, sampler.n_batches) == (N_SAMPLES, 1)
    (batch,) = sampler.batches(0, UNEVEN_CHUNKS)
    assert batch == full_batch(UNEVEN_CHUNKS)  # whole blocks come out as None: no copies


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ((N_SAMPLES, 0, 0), ValueError, r"batch_size must be >= 1 \(rows per batch\), got 0"),
        ((N_SAMPLES, 2.0, 0), TypeError, r"batch_size must be an integer, got 2\.0"),
        ((N_SAMPLES, 8, -1), ValueError, r"seed must be >= 0, got -1"),
        ((N_SAMPLES, 8, None), TypeError, r"seed must be a non-negative integer, got None"),
        ((N_SAMPLES, 8, 1.5), TypeError, r"seed must be a non-negative integer, got 1\.5"),
        ((0, 8, 0), ValueError, r"n_samples must be >= 1, got 0"),
        ((np.array([3, 1, 3]), 8, 0), ValueError, r"hold 1 repeated row numbers"),
        ((np.array([], dtype=np.int64), 8, 0), ValueError, r"the training rows are empty"),
        ((np.array([-2, 1]), 8, 0), ValueError, r"row numbers must be >= 0, got -2"),
    ],
)
def test_sampler_rejects_bad_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        EpochSampler(*arguments)


def test_batches_reject_bad_arguments_at_the_call():
    sampler = EpochSampler(N_SAMPLES, batch_size=10, seed=0)
    with pytest.raises(ValueError, match=r"start_batch must be in \[0, 11\].*got 12"):
        sampler.batches(0, EVEN_CHUNKS, start_batch=12)
    with pytest.raises(ValueError, match=r"rows go up to 102, but chunk_rows describes 100 rows"):
        sampler.batches(0, (50, 50))
    with pytest.raises(ValueError, match=r"epoch must be >= 0, got -1"):
        sampler.batches(-1, EVEN_CHUNKS)


# ------------------------------------------------------------------------- validation split


@pytest.mark.parametrize(("n_samples", "fraction", "n_validation"), [(103, 0.2, 21), (10, 0.01, 1)])
def test_split_validation_is_disjoint_covering_sorted_and_deterministic(
    n_samples, fraction, n_validation
):
    train, validation = split_validation(n_samples, fraction, seed=9)
    assert validation.size == n_validation
    assert np.intersect1d(train, validation).size == 0
    np.testing.assert_array_equal(np.union1d(train, validation), np.arange(n_samples))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(validation) > 0)
    assert train.dtype == validation.dtype == np.int64
    again_train, again_validation = split_validation(n_samples, fraction, seed=9)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(validation, again_validation)


def test_split_validation_depends_on_the_seed():
    _, first = split_validation(1000, 0.1, seed=0)
    _, second = split_validation(1000, 0.1, seed=1)
    assert not np.array_equal(first, second)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ((100, 0.0, 0), ValueError, r"fraction must be in \(0, 1\).*got 0\.0"),
        ((100, 1.0, 0), ValueError, r"fraction must be in \(0, 1\).*got 1\.0"),
        ((100, float("nan"), 0), ValueError, r"fraction must be in \(0, 1\).*got nan"),
        ((100, True, 0), TypeError, r"fraction must be a float in \(0, 1\), got True"),
        ((2, 0.9, 0), ValueError, r"fraction of 0\.9 of 2 rows leaves no training rows"),
        ((100, 0.1, -3), ValueError, r"seed must be >= 0"),
        ((100.0, 0.1, 0), TypeError, r"n_samples must be an integer"),
    ],
)
def test_split_validation_rejects_bad_arguments(arguments, error, message):
    with pytest.raises(error, match=message):
        split_validation(*arguments)


@pytest.mark.parametrize("radix", [True, False])
@pytest.mark.parametrize(
    ("rows", "batch_size", "shuffle_window"),
    [(N_SAMPLES, 8, None), (N_SAMPLES, 103, None), (np.arange(3, 400, 4), 9, None),
     (400, 7, 100), (np.arange(0, 400, 3), 16, 64)],
)  # fmt: skip
def test_each_batch_is_its_slice_of_the_visit_order_sorted(
    monkeypatch, rows, batch_size, shuffle_window, radix
):
    import dsoftmax.sampling

    # The 32-bit sort of many-batch epochs, on a small epoch.
    monkeypatch.setattr(dsoftmax.sampling, "RADIX_SORT_BATCHES", 2**16 if radix else 1)
    sampler = EpochSampler(rows, batch_size, seed=5, shuffle_window=shuffle_window)
    chunks = GROUP_CHUNKS if sampler.rows[-1] >= N_SAMPLES else UNEVEN_CHUNKS
    for epoch in (0, 3):
        order = sampler.epoch_rows(epoch)
        expected = [
            rows_to_blocks(order[start : start + sampler.batch_size], chunks)
            for start in range(0, sampler.n_rows, sampler.batch_size)
        ]
        batches = list(sampler.batches(epoch, chunks))
        assert len(batches) == len(expected) == sampler.n_batches
        for batch, wanted in zip(batches, expected, strict=True):
            np.testing.assert_array_equal(batch.global_rows(chunks), wanted.global_rows(chunks))
            assert [index for index, _ in batch.blocks] == [index for index, _ in wanted.blocks]


def test_sorted_within_batches_sorts_each_slice_in_place():
    order = np.random.default_rng(0).permutation(1000)
    for batch_size in (1, 7, 1000, 2000):
        expected = np.concatenate(
            [np.sort(order[start : start + batch_size]) for start in range(0, 1000, batch_size)]
        )
        np.testing.assert_array_equal(sorted_within_batches(order, batch_size), expected)


# ------------------------------------------------------------- shuffle windows (streaming)
GROUP_CHUNKS = [50, 30, 70, 20, 80, 40, 60, 50]  # 8 blocks, 400 rows


def test_windowed_epochs_visit_every_row_once_a_window_or_two_per_batch():
    sampler = EpochSampler(400, batch_size=25, seed=3, shuffle_window=100)
    batches = list(sampler.batch_rows(0))
    rows = np.concatenate(batches)
    assert np.array_equal(np.sort(rows), np.arange(400))
    # A batch draws from one window of 100 rows, or from two when it straddles a boundary.
    assert max(len(np.unique(batch // 100)) for batch in batches) <= 2
    # The epoch visits each window in one run: 4 windows, 4 runs of window ids.
    window_of = sampler.epoch_rows(0) // 100
    assert np.count_nonzero(np.diff(window_of)) == 3
    assert sorted(dict.fromkeys(window_of.tolist())) == [0, 1, 2, 3]


def test_windowed_order_is_seeded_differs_by_epoch_and_ignores_the_chunking():
    first = EpochSampler(400, 25, seed=3, shuffle_window=100).epoch_rows(0)
    again = EpochSampler(400, 25, seed=3, shuffle_window=100).epoch_rows(0)
    assert np.array_equal(first, again)
    other = EpochSampler(400, 25, seed=3, shuffle_window=100).epoch_rows(1)
    assert not np.array_equal(first, other)
    sampler = EpochSampler(400, 25, seed=3, shuffle_window=100)
    for chunks in (GROUP_CHUNKS, [400], [100] * 4):
        rows = [batch.global_rows(chunks) for batch in sampler.batches(0, chunks)]
        assert all(
            np.array_equal(got, wanted)
            for got, wanted in zip(rows, sampler.batch_rows(0), strict=True)
        )
    # Without a window, the documented permutation of all rows.
    plain = EpochSampler(400, 25, seed=3)
    expected = np.random.default_rng([3, 0]).permutation(400)
    assert np.array_equal(plain.epoch_rows(0), expected)


def test_windowed_sampler_keeps_validation_rows_out():
    train = np.arange(0, 400, 2)
    sampler = EpochSampler(train, batch_size=16, seed=0, shuffle_window=96)
    rows = np.concatenate(list(sampler.batch_rows(2)))
    assert np.array_equal(np.sort(rows), train)


@pytest.mark.parametrize("shuffle_window", [0, -1, 1.5, True])
def test_shuffle_window_must_be_a_positive_integer(shuffle_window):
    error = TypeError if isinstance(shuffle_window, float | bool) else ValueError
    with pytest.raises(error, match="shuffle_window"):
        EpochSampler(10, 2, 0, shuffle_window=shuffle_window)
