"""The one label encoder, the one sample-weight validator and the one row-chunk check, as
writing and fit input use them."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from dsoftmax.data import (
    block_stats,
    check_row_chunks,
    check_sample_weight,
    combine_stats,
    encode_labels,
)
from dsoftmax.data.inputs import prepare_data

# ---------------------------------------------------------------------------------------------
# encode_labels
# ---------------------------------------------------------------------------------------------


def test_ids_follow_the_order_of_classes_as_int32():
    classes = np.array(["dog", "cat", "emu"])
    ids = encode_labels(np.array(["cat", "emu", "dog", "cat"]), classes)
    assert ids.dtype == np.int32
    assert ids.tolist() == [1, 2, 0, 1]
    assert classes[ids].tolist() == ["cat", "emu", "dog", "cat"]


def test_unknown_in_memory_labels_raise_naming_a_few():
    labels = np.array([0, 7, 1, 9, 7, 11, 12, 13, 14, 15])
    with pytest.raises(ValueError, match=r"y holds label\(s\) \[7, 9, 11, 12, 13\] that are not "
                                         r"in classes \[0, 1\]; add them to classes"):
        encode_labels(labels, np.array([0, 1]))


def test_strings_longer_than_every_class_are_unknown_not_truncated():
    with pytest.raises(ValueError, match=r"label\(s\) \['abc'\] that are not in classes"):
        encode_labels(np.array(["ab", "abc"]), np.array(["ab", "abcd"]))


def test_marked_unknown_labels_are_out_of_range_and_reported_by_the_value_checks():
    ids = encode_labels(np.array([1, 5, 0]), np.array([0, 1]), unknown="mark")
    assert ids.tolist() == [1, 2, 0]
    stats = block_stats(np.zeros((3, 1)), ids, None, 2, block_index=4, row_start=30)
    with pytest.raises(ValueError, match=r"y in 'the input' has 1 class id\(s\) outside \[0, 2\) "
                                         r"in block 4 \(rows 30 to 32\), first 2 in row 31"):
        combine_stats([stats], "'the input'")


@pytest.mark.parametrize("unknown", ["raise", "mark"])
def test_dask_labels_use_the_same_encoder_block_by_block(unknown):
    labels = da.from_array(np.array([3, 1, 2, 3, 1, 8]), chunks=2)
    ids = encode_labels(labels, np.array([3, 2, 1]), unknown=unknown)
    assert isinstance(ids, da.Array) and ids.dtype == np.int32
    if unknown == "raise":
        with pytest.raises(ValueError, match=r"y holds label\(s\) \[8\]"):
            ids.compute(scheduler="sync")
        # Blocks without an unknown label read fine.
        assert ids[:4].compute(scheduler="sync").tolist() == [0, 2, 1, 0]
    else:
        assert ids.compute(scheduler="sync").tolist() == [0, 2, 1, 0, 2, 3]


def test_a_bad_mode_and_incomparable_labels_are_refused():
    with pytest.raises(ValueError, match=r"unknown must be one of \['raise', 'mark'\]"):
        encode_labels(np.array([0]), np.array([0, 1]), unknown="drop")
    with pytest.raises(TypeError, match=r"cannot be compared with classes"):
        encode_labels(np.array([1, "a"], dtype=object), np.array([0, 1]))


# ---------------------------------------------------------------------------------------------
# check_sample_weight
# ---------------------------------------------------------------------------------------------


def test_weights_keep_float_dtypes_and_widen_the_others():
    X = np.zeros((4, 2))
    assert check_sample_weight(None, X) is None
    assert check_sample_weight(np.ones(4, np.float32), X).dtype == np.float32
    for weights in ([1, 2, 3, 4], np.array([True, False, True, True])):
        checked = check_sample_weight(weights, X)
        assert checked.dtype == np.float64 and checked.shape == (4,)
    np.testing.assert_array_equal(check_sample_weight(2, X), np.full(4, 2.0))
    lazy = check_sample_weight(da.ones(4, chunks=2, dtype=np.int64), X)
    assert isinstance(lazy, da.Array) and lazy.dtype == np.float64


def test_weights_of_another_length_name_both_wordings():
    expected = (
        r"sample_weight has 3 rows but X has 4; they must describe the same samples \(Found "
        r"input variables with inconsistent numbers of samples: \[4, 3\]\)"
    )
    with pytest.raises(ValueError, match=expected):
        check_sample_weight(np.ones(3), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"sample_weight must be 1-D, got shape \(4, 1\)"):
        check_sample_weight(np.ones((4, 1)), np.zeros((4, 2)))
    with pytest.raises(TypeError, match=r"sample_weight must hold numbers, got dtype <U1"):
        check_sample_weight(np.array(list("abcd")), np.zeros((4, 2)))


def test_fit_input_weights_are_checked_before_any_work():
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"sample_weight in the input has 1 negative or "
                                         r"non-finite value\(s\) .* first -1\.0 in row 2"):
        prepare_data(X, y, np.array([1.0, 1.0, -1.0, 1.0]), None)
    with pytest.raises(ValueError, match=r"every sample_weight in the input is zero"):
        prepare_data(X, y, np.zeros(4), None)


# ---------------------------------------------------------------------------------------------
# check_row_chunks
# ---------------------------------------------------------------------------------------------


def test_aligned_row_chunks_pass():
    X = da.zeros((10, 3), chunks=(4, 3))
    check_row_chunks(X, da.zeros(10, chunks=4), da.ones(10, chunks=4))
    check_row_chunks(X, da.zeros((10, 2), chunks=(4, 2)))


@pytest.mark.parametrize(
    ("X", "labels", "weights", "match"),
    [
        (da.zeros((10, 3), chunks=(4, 2)), da.zeros(10, chunks=4), None,
         r"X must be 2-D and chunked by rows only, got shape \(10, 3\) with chunks "
         r"\(\(4, 4, 2\), \(2, 1\)\); rechunk with X\.rechunk\(\{1: -1\}\)"),
        (da.zeros((10, 3), chunks=(4, 3)), da.zeros(10, chunks=5), None,
         r"X and y have different row chunks: X \(4, 4, 2\) vs y \(5, 5\); rechunk y with "
         r"y\.rechunk\(\{0: X\.chunks\[0\]\}\)"),
        (da.zeros((10, 3), chunks=(2, 3)), da.zeros(10, chunks=2), da.ones(10, chunks=5),
         r"X and sample_weight have different row chunks: X \(2, 2, 2, \.\.\.\) vs "
         r"sample_weight \(5, 5\)"),
        (da.zeros((10, 3), chunks=(4, 3)), da.zeros((10, 2), chunks=(4, 1)), None,
         r"Y must be chunked by rows only, got chunks \(\(4, 4, 2\), \(1, 1\)\)"),
    ],
    ids=["X-columns", "y-rows", "weight-rows", "Y-columns"],
)  # fmt: skip
def test_misaligned_row_chunks_are_named(X, labels, weights, match):
    with pytest.raises(ValueError, match=match):
        check_row_chunks(X, labels, weights)


def test_row_chunks_of_a_store_name_the_store_and_the_rewrite():
    X, y = da.zeros((100, 4), chunks=(40, 4)), da.zeros(100, chunks=50)
    expected = (
        r"X and y in 'train\.zarr' have different row chunks: X \(40,\) vs y \(50,\)\. "
        r"Rewrite y with chunks=\(40,\)\."
    )
    with pytest.raises(ValueError, match=expected):
        check_row_chunks(X, y, source="'train.zarr'")


def test_labels_of_a_fit_are_encoded_like_a_write_would():
    y = np.array(["b", "a", "c", "a"])
    prepared = prepare_data(np.zeros((4, 1)), y, None, None)
    lazy = prepare_data(da.zeros((4, 1), chunks=2), da.from_array(y, chunks=2), None, None)
    assert prepared.classes.tolist() == lazy.classes.tolist() == ["a", "b", "c"]
    with dask.config.set(scheduler="sync"):
        assert prepared.labels.tolist() == lazy.labels.compute().tolist() == [1, 0, 2, 0]
    assert prepared.labels.dtype == lazy.labels.dtype == np.int32
