"""Tests of the Zarr dataset layer: round trips, every validation error on real bad stores,
value checks, the synthetic generator on real worker processes, converters, and S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dask
import dask.array as da
import distributed
import numpy as np
import pytest
import zarr
from sklearn.datasets import load_digits as sklearn_digits
from sklearn.linear_model import LogisticRegression

from dsoftmax.data import (
    FORMAT_VERSION,
    BlockStats,
    Dataset,
    block_stats,
    check_values,
    combine_stats,
    convert_numpy,
    load_digits,
    make_classification,
    open_dataset,
    write_array,
    write_dataset,
)

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def features(n_samples: int = 500, n_features: int = 4, dtype=np.float32, seed: int = 0):
    return np.random.default_rng(seed).standard_normal((n_samples, n_features)).astype(dtype)


def probability_rows(n_samples: int, n_classes: int, seed: int = 0) -> np.ndarray:
    raw = np.random.default_rng(seed).random((n_samples, n_classes))
    return raw / raw.sum(axis=1, keepdims=True)


def write_raw_store(path: Path, arrays: dict, attrs: dict | None = None) -> Path:
    """A store built with zarr alone: ``arrays`` maps name -> (values, chunks)."""
    group = zarr.open_group(str(path), mode="w")
    for name, (values, chunks) in arrays.items():
        target = group.create_array(
            name,
            shape=values.shape,
            dtype=values.dtype,
            chunks=chunks,
            config={"write_empty_chunks": True},
        )
        target[...] = values
    group.attrs.update(
        attrs
        if attrs is not None
        else {
            "dsoftmax_format": FORMAT_VERSION,
            "classes": [0, 1, 2],
            "n_classes": 3,
            "dsoftmax_content_sha256": "0" * 64,
        }
    )
    return path


def good_arrays(n_samples: int = 100, chunk_rows: int = 40) -> dict:
    return {
        "X": (features(n_samples), (chunk_rows, 4)),
        "y": (np.arange(n_samples, dtype=np.int32) % 3, (chunk_rows,)),
    }


def assert_dataset_equal(dataset: Dataset, X, y=None, Y=None, sample_weight=None) -> None:
    np.testing.assert_array_equal(dataset.X.compute(), X)
    assert dataset.X.dtype == X.dtype
    if y is not None:
        np.testing.assert_array_equal(dataset.classes[dataset.y.compute()], y)
        assert dataset.Y is None
    if Y is not None:
        np.testing.assert_array_equal(dataset.Y.compute(), Y)
        assert dataset.y is None
    if sample_weight is None:
        assert dataset.sample_weight is None
    else:
        np.testing.assert_array_equal(dataset.sample_weight.compute(), sample_weight)


def stored_files(path: Path) -> dict[str, bytes]:
    """Every file of a local store (chunks and metadata), by relative path."""
    return {
        str(file.relative_to(path)): file.read_bytes()
        for file in sorted(path.rglob("*"))
        if file.is_file()
    }


# ---------------------------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------------------------


def test_numpy_round_trip_with_string_labels(tmp_path):
    X = features(1000)
    y = np.random.default_rng(1).choice(np.array(["cat", "dog", "emu"]), 1000)
    dataset = write_dataset(tmp_path / "train.zarr", X, y, chunk_rows=300)

    assert dataset.chunk_rows == (300, 300, 300, 100)
    assert (dataset.n_samples, dataset.n_features, dataset.n_classes) == (1000, 4, 3)
    assert dataset.classes.tolist() == ["cat", "dog", "emu"]
    assert dataset.dtype == np.float32 and dataset.labels is dataset.y
    assert_dataset_equal(dataset, X, y=y)
    reopened = open_dataset(tmp_path / "train.zarr")
    assert reopened.fingerprint == dataset.fingerprint
    assert_dataset_equal(reopened, X, y=y)


def test_dask_round_trip_float64_rechunks_and_keeps_weights(tmp_path):
    X = features(700, dtype=np.float64)
    y = np.random.default_rng(2).integers(0, 4, 700) * 10  # labels 0, 10, 20, 30
    weights = np.random.default_rng(3).random(700)
    dataset = write_dataset(
        tmp_path / "train.zarr",
        da.from_array(X, chunks=(130, 2)),  # irregular and chunked along features
        da.from_array(y, chunks=170),
        sample_weight=da.from_array(weights, chunks=99),
        chunk_rows=256,
    )
    assert dataset.chunk_rows == (256, 256, 188)
    assert dataset.y.chunks == dataset.sample_weight.chunks == (dataset.chunk_rows,)
    assert dataset.classes.tolist() == [0, 10, 20, 30]
    assert_dataset_equal(dataset, X, y=y, sample_weight=weights)


def test_numpy_and_dask_inputs_give_the_same_fingerprint(tmp_path):
    X, y = features(300), np.array(["low", "mid", "high"])[np.arange(300) % 3]
    from_numpy = write_dataset(tmp_path / "a.zarr", X, y, chunk_rows=128)
    from_dask = write_dataset(
        tmp_path / "b.zarr", da.from_array(X, chunks=50), da.from_array(y, chunks=77),
        chunk_rows=128,
    )
    assert from_numpy.fingerprint == from_dask.fingerprint


def test_soft_label_round_trip(tmp_path):
    X, Y = features(200), probability_rows(200, 3)
    dataset = write_dataset(tmp_path / "soft.zarr", X, Y=Y, classes=["a", "b", "c"], chunk_rows=64)
    assert_dataset_equal(dataset, X, Y=Y)
    assert dataset.labels is dataset.Y and dataset.Y.chunks[0] == dataset.chunk_rows
    assert dataset.classes.tolist() == ["a", "b", "c"]
    stats = check_values(dataset)
    np.testing.assert_allclose(stats.class_weight_sums, Y.sum(axis=0))
    assert stats.class_counts.sum() == 200


def test_integer_one_hot_is_stored_as_float(tmp_path):
    X = features(30)
    one_hot = np.eye(3, dtype=np.int64)[np.arange(30) % 3]
    dataset = write_dataset(tmp_path / "onehot.zarr", X, Y=one_hot, chunk_rows=8)
    assert dataset.Y.dtype == np.float32
    np.testing.assert_array_equal(dataset.Y.compute(), one_hot)
    assert dataset.classes.tolist() == [0, 1, 2]


def test_given_classes_fix_the_ids_and_may_hold_unseen_labels(tmp_path):
    y = np.array(["b", "a", "b", "a"])
    dataset = write_dataset(tmp_path / "c.zarr", features(4), y, classes=["b", "a", "never"])
    assert dataset.y.compute().tolist() == [0, 1, 0, 1]
    assert check_values(dataset).class_counts.tolist() == [2, 2, 0]


def test_fingerprint_is_stable_and_follows_the_data(tmp_path):
    X, y = features(200), np.arange(200) % 3
    path = tmp_path / "train.zarr"
    first = write_dataset(path, X, y, chunk_rows=64).fingerprint
    assert open_dataset(path).fingerprint == first
    assert write_dataset(path, X, y, chunk_rows=64, overwrite=True).fingerprint == first

    changed = X.copy()
    changed[150, 2] += 1.0
    assert write_dataset(path, changed, y, chunk_rows=64, overwrite=True).fingerprint != first
    relabelled = y.copy()
    relabelled[3] = (relabelled[3] + 1) % 3
    assert write_dataset(path, X, relabelled, chunk_rows=64, overwrite=True).fingerprint != first
    assert write_dataset(path, X, y, chunk_rows=50, overwrite=True).fingerprint != first
    weighted = write_dataset(path, X, y, sample_weight=np.ones(200), chunk_rows=64, overwrite=True)
    assert weighted.fingerprint != first


def test_relative_paths_keep_working_after_a_change_of_directory(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    X, y = features(20), np.arange(20) % 2
    dataset = write_dataset("rel.zarr", X, y, chunk_rows=8)
    assert dataset.url == "rel.zarr"
    monkeypatch.chdir(tmp_path / "elsewhere")  # as a worker started elsewhere would be
    assert_dataset_equal(dataset, X, y=y)


def test_codecs_round_trip(tmp_path):
    X, y = features(100), np.arange(100) % 2
    for codec in ("zstd", "lz4", "none"):
        dataset = write_dataset(tmp_path / f"{codec}.zarr", X, y, chunk_rows=30, codec=codec)
        assert_dataset_equal(dataset, X, y=y)
    with pytest.raises(ValueError, match=r"codec must be one of \[.*'none'\], got 'gzip'"):
        write_dataset(tmp_path / "gzip.zarr", X, y, codec="gzip")


def test_all_zero_chunks_are_stored(tmp_path):
    # Zarr skips chunks equal to the fill value by default; the completeness check needs them.
    X = np.zeros((40, 3), dtype=np.float32)
    y = np.r_[np.zeros(20, dtype=int), np.ones(20, dtype=int)]
    dataset = write_dataset(tmp_path / "zeros.zarr", X, y, chunk_rows=10)
    assert_dataset_equal(open_dataset(tmp_path / "zeros.zarr"), X, y=y)
    assert dataset.n_samples == 40


# ---------------------------------------------------------------------------------------------
# write_dataset: input validation, and the existing store left alone
# ---------------------------------------------------------------------------------------------


def test_write_refuses_non_float_features_with_the_fix(tmp_path):
    expected = r"X must be float32 or float64, got dtype int64.*X\.astype\(np\.float32\)"
    with pytest.raises(TypeError, match=expected):
        write_dataset(tmp_path / "d.zarr", np.ones((4, 2), dtype=np.int64), np.arange(4) % 2)
    assert not (tmp_path / "d.zarr").exists()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"X": np.ones(4, np.float32), "y": np.arange(4) % 2}, ValueError,
         r"X must be 2-D .* got shape \(4,\)"),
        ({"y": np.arange(5) % 2}, ValueError, r"y has 5 rows but X has 4"),
        ({"y": np.arange(4) % 2, "Y": np.eye(2)[[0, 1, 0, 1]]}, ValueError,
         r"exactly one of y .* got both"),
        ({}, ValueError, r"exactly one of y .* got neither"),
        ({"y": np.zeros(4)}, ValueError, r"at least 2 classes; y holds \[0\.0\]"),
        ({"y": np.array([0, 1, 2, 1]), "classes": [0, 1]}, ValueError,
         r"y holds label\(s\) \[2\] that are not in classes \[0, 1\]"),
        ({"y": np.array(["ab", "abc", "ab", "ab"]), "classes": ["ab", "abcd"]}, ValueError,
         r"label\(s\) \['abc'\] that are not in classes"),
        ({"y": np.array([0, 1, 0, 1]), "classes": [0, 1, 1]}, ValueError,
         r"classes must be distinct"),
        ({"y": np.array([0.0, 1.0, np.nan, 1.0])}, ValueError, r"class labels must be finite"),
        ({"y": np.arange(4) % 2, "sample_weight": np.ones(3)}, ValueError,
         r"sample_weight has 3 rows but X has 4"),
        ({"Y": np.eye(3)[[0, 1, 2, 0]], "classes": [0, 1]}, ValueError,
         r"Y has 3 columns but classes has 2"),
    ],
)
def test_write_refuses_bad_inputs(tmp_path, kwargs, error, match):
    kwargs = {"X": np.ones((4, 2), np.float32), **kwargs}
    with pytest.raises(error, match=match):
        write_dataset(tmp_path / "d.zarr", **kwargs)
    assert not (tmp_path / "d.zarr").exists()


@pytest.mark.parametrize("as_dask", [False, True])
def test_write_refuses_bad_values_before_touching_the_store(tmp_path, as_dask):
    path = tmp_path / "train.zarr"
    original = write_dataset(path, features(100), np.arange(100) % 3, chunk_rows=30)
    X = features(100)
    X[65, 1] = np.inf
    weights = np.ones(100)
    weights[7] = -1.0
    if as_dask:
        X, weights = da.from_array(X, chunks=30), da.from_array(weights, chunks=30)
    expected = (
        r"X in the input has 1 non-finite value\(s\) .* in block 2 \(rows 60 to 89\), "
        r"first in row 65"
    )
    with pytest.raises(ValueError, match=expected) as info:
        write_dataset(path, X, np.arange(100) % 3, sample_weight=weights, chunk_rows=30,
                      overwrite=True)
    assert "sample_weight in the input has 1 negative or non-finite value(s)" in str(info.value)
    assert open_dataset(path).fingerprint == original.fingerprint


def test_write_refuses_dask_arrays_of_unknown_length(tmp_path):
    X = da.from_array(features(20), chunks=5)
    X = X[X[:, 0] > -10]  # boolean indexing leaves the row chunks unknown
    with pytest.raises(ValueError, match=r"X is a dask array of unknown chunk sizes; call "
                                         r"X\.compute_chunk_sizes\(\) first"):
        write_dataset(tmp_path / "d.zarr", X, np.arange(20) % 2)


def test_write_refuses_unknown_dask_labels_before_touching_the_store(tmp_path):
    y = da.from_array(np.array([0, 1, 2, 5] * 5), chunks=7)
    with pytest.raises(ValueError, match=r"y holds label\(s\) \[5\] that are not in classes"):
        write_dataset(tmp_path / "d.zarr", features(20), y, classes=[0, 1, 2])
    assert not (tmp_path / "d.zarr").exists()


def test_write_refuses_to_replace_without_overwrite(tmp_path):
    path = tmp_path / "train.zarr"
    write_dataset(path, features(10), np.arange(10) % 2)
    with pytest.raises(FileExistsError, match=r"already exists; pass overwrite=True"):
        write_dataset(path, features(10), np.arange(10) % 2)
    stranger = tmp_path / "notes"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"is not a Zarr group; refusing to delete it"):
        write_dataset(stranger, features(10), np.arange(10) % 2, overwrite=True)
    assert (stranger / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_every_array(tmp_path):
    path = tmp_path / "train.zarr"
    write_dataset(path, features(10), np.arange(10) % 2, sample_weight=np.ones(10))
    replaced = write_dataset(path, features(10), Y=probability_rows(10, 2), overwrite=True)
    assert replaced.y is None and replaced.sample_weight is None
    assert open_dataset(path).fingerprint == replaced.fingerprint


# ---------------------------------------------------------------------------------------------
# open_dataset: structural validation on real bad stores
# ---------------------------------------------------------------------------------------------


def test_open_refuses_a_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no Zarr group at '.*nowhere\.zarr'"):
        open_dataset(tmp_path / "nowhere.zarr")


def test_open_refuses_a_single_zarr_array(tmp_path):
    zarr.create_array(str(tmp_path / "array.zarr"), shape=(4, 2), dtype="float32")
    with pytest.raises(ValueError, match=r"is a single Zarr array, not a dsoftmax dataset"):
        open_dataset(tmp_path / "array.zarr")


def test_open_refuses_a_plain_zarr_group(tmp_path):
    path = write_raw_store(tmp_path / "plain.zarr", good_arrays(), attrs={})
    expected = r"is not a dsoftmax dataset: the group attribute 'dsoftmax_format' is missing"
    with pytest.raises(ValueError, match=expected):
        open_dataset(path)


def test_open_refuses_a_newer_format(tmp_path):
    attrs = {"dsoftmax_format": FORMAT_VERSION + 1, "classes": [0, 1, 2], "n_classes": 3,
             "dsoftmax_content_sha256": "0" * 64}
    path = write_raw_store(tmp_path / "new.zarr", good_arrays(), attrs=attrs)
    expected = rf"uses dataset format {FORMAT_VERSION + 1}, newer .*upgrade dsoftmax"
    with pytest.raises(ValueError, match=expected):
        open_dataset(path)


def test_open_refuses_an_interrupted_write(tmp_path):
    attrs = {"dsoftmax_format": FORMAT_VERSION, "classes": [0, 1, 2], "n_classes": 3}
    path = write_raw_store(tmp_path / "half.zarr", good_arrays(), attrs=attrs)
    with pytest.raises(ValueError, match=r"attribute 'dsoftmax_content_sha256' is missing"):
        open_dataset(path)


def test_open_refuses_a_store_whose_attributes_were_removed(tmp_path):
    path = tmp_path / "train.zarr"
    write_dataset(path, features(10), np.arange(10) % 2)
    group = zarr.open_group(str(path), mode="r+")
    del group.attrs["dsoftmax_format"]
    with pytest.raises(ValueError, match="is not a dsoftmax dataset"):
        open_dataset(path)


def test_open_accepts_a_valid_raw_store(tmp_path):
    dataset = open_dataset(write_raw_store(tmp_path / "ok.zarr", good_arrays()))
    assert dataset.chunk_rows == (40, 40, 20) and dataset.n_classes == 3


def _replace(arrays: dict, **changes) -> dict:
    return {**arrays, **changes}


@pytest.mark.parametrize(
    ("arrays", "error", "match"),
    [
        ({"y": good_arrays()["y"]}, ValueError, r"has no array 'X'"),
        (_replace(good_arrays(), X=(np.zeros((100, 4, 1), np.float32), (40, 4, 1))), ValueError,
         r"X in '.*' must be 2-D \(n_samples, n_features\), got shape \(100, 4, 1\)"),
        (_replace(good_arrays(), X=(features(100), (40, 2))), ValueError,
         r"X in '.*' is chunked along features: chunks \(40, 2\) for shape \(100, 4\)\. "
         r"Rewrite X with chunks=\(40, 4\)"),
        (_replace(good_arrays(), X=(np.ones((100, 4), np.int32), (40, 4))), TypeError,
         r"X in '.*' has dtype int32; it must be float32 or float64.*astype\(np\.float32\)"),
        (_replace(good_arrays(), Y=(probability_rows(100, 3), (40, 3))), ValueError,
         r"exactly one of 'y' .* and 'Y' .*found both"),
        ({"X": good_arrays()["X"]}, ValueError, r"exactly one of 'y' .* found neither"),
        (_replace(good_arrays(), y=(np.zeros((100, 1), np.int32), (40, 1))), ValueError,
         r"y in '.*' has shape \(100, 1\); expected \(100,\)"),
        (_replace(good_arrays(), y=(np.zeros(90, np.int32), (40,))), ValueError,
         r"y in '.*' has shape \(90,\); expected \(100,\)"),
        (_replace(good_arrays(), y=(np.zeros(100, np.float32), (40,))), TypeError,
         r"y in '.*' has dtype float32; class ids must be integers"),
        (_replace(good_arrays(), y=(np.zeros(100, np.int32), (50,))), ValueError,
         r"X and y in '.*ok\.zarr' have different row chunks: X \(40,\) vs y \(50,\)\. "
         r"Rewrite y with chunks=\(40,\)\."),
        (_replace(good_arrays(), sample_weight=(np.ones(99), (40,))), ValueError,
         r"sample_weight in '.*' has shape \(99,\); expected \(100,\)"),
        (_replace(good_arrays(), sample_weight=(np.ones(100), (25,))), ValueError,
         r"X and sample_weight in '.*' have different row chunks: "
         r"X \(40,\) vs sample_weight \(25,\)"),
    ],
    ids=["no-X", "X-3d", "X-feature-chunks", "X-int", "y-and-Y", "no-labels", "y-2d",
         "y-length", "y-float", "y-row-chunks", "weight-length", "weight-row-chunks"],
)
def test_open_refuses_bad_arrays(tmp_path, arrays, error, match):
    path = write_raw_store(tmp_path / "ok.zarr", arrays)
    with pytest.raises(error, match=match):
        open_dataset(path)


def test_open_refuses_bad_soft_labels(tmp_path):
    arrays = {"X": good_arrays()["X"], "Y": (probability_rows(100, 2), (40, 2))}
    with pytest.raises(ValueError, match=r"Y in '.*' has shape \(100, 2\); expected \(100, 3\)"):
        open_dataset(write_raw_store(tmp_path / "a.zarr", arrays))
    arrays["Y"] = (probability_rows(100, 3), (40, 1))
    with pytest.raises(ValueError, match=r"Y in '.*' is chunked along classes.*chunks=\(40, 3\)"):
        open_dataset(write_raw_store(tmp_path / "b.zarr", arrays))


@pytest.mark.parametrize(
    ("attrs", "match"),
    [
        ({"classes": [0], "n_classes": 1}, r"declares n_classes=1; a classifier needs an int >= 2"),
        ({"classes": [0, 1], "n_classes": 3},
         r"classes attribute of '.*' has 2 entries but n_classes is 3"),
        ({"classes": ["a", "b", "a"], "n_classes": 3},
         r"classes attribute of '.*' repeats labels: \['a', 'b', 'a'\]"),
    ],
)
def test_open_refuses_bad_class_attributes(tmp_path, attrs, match):
    attrs = {"dsoftmax_format": FORMAT_VERSION, "dsoftmax_content_sha256": "0" * 64, **attrs}
    with pytest.raises(ValueError, match=match):
        open_dataset(write_raw_store(tmp_path / "c.zarr", good_arrays(), attrs=attrs))


@pytest.mark.parametrize("array", ["X", "y"])
def test_open_names_a_deleted_chunk_file(tmp_path, array):
    path = tmp_path / "train.zarr"
    write_dataset(path, features(100), np.arange(100) % 3, chunk_rows=30)
    key = "c/2/0" if array == "X" else "c/2"
    (path / array / key).unlink()
    expected = (
        rf"{array} in '.*train\.zarr' is missing 1 of its 4 chunks "
        r"\(chunk indices 2 \(rows 60 to 89\)\)"
    )
    with pytest.raises(ValueError, match=expected):
        open_dataset(path)


def test_open_lists_several_missing_chunks(tmp_path):
    path = tmp_path / "train.zarr"
    y, weights = np.arange(100) % 3, np.ones(100)
    write_dataset(path, features(100), y, sample_weight=weights, chunk_rows=10)
    for index in (0, 4, 9):
        (path / "sample_weight" / "c" / str(index)).unlink()
    expected = (
        r"sample_weight in .* missing 3 of its 10 chunks "
        r"\(chunk indices 0 \(rows 0 to 9\), 4 \(rows 40 to 49\), 9 \(rows 90 to 99\)\)"
    )
    with pytest.raises(ValueError, match=expected):
        open_dataset(path)


# ---------------------------------------------------------------------------------------------
# value checks
# ---------------------------------------------------------------------------------------------


def test_block_stats_counts_classes_and_weights():
    stats = block_stats(np.zeros((5, 2)), np.array([0, 2, 2, 1, 2]), np.array([1.0, 2, 3, 4, 5]),
                        3, block_index=4, row_start=100)
    assert stats.problems == ()
    assert stats.class_counts.dtype == np.int64
    assert stats.class_counts.tolist() == [1, 1, 3]
    assert stats.class_weight_sums.tolist() == [1.0, 4.0, 10.0]
    assert (stats.weight_sum, stats.n_rows, stats.row_start) == (15.0, 5, 100)


def test_block_stats_reports_every_kind_of_problem():
    X = np.ones((4, 2))
    X[2, 1] = np.nan
    stats = block_stats(X, np.array([0, 3, 1, -1]), np.array([1.0, np.inf, 1, 1]), 3, 7, 40)
    details = " | ".join(f"{p.array}: {p.detail}" for p in stats.problems)
    where = "in block 7 (rows 40 to 43)"
    assert f"X: has 1 non-finite value(s) (NaN or inf) {where}, first in row 42" in details
    assert f"y: has 2 class id(s) outside [0, 3) {where}, first 3 in row 41" in details
    assert f"sample_weight: has 1 negative or non-finite value(s) {where}, first inf in row 41" in (
        details
    )
    assert stats.class_counts.tolist() == [1, 1, 0]


def test_block_stats_checks_probability_rows():
    Y = np.array([[0.5, 0.5], [0.7, 0.4], [-0.1, 1.1], [1.0, 0.0]])
    stats = block_stats(np.ones((4, 1)), Y, None, 2, 0, 0)
    details = [p.detail for p in stats.problems]
    assert any("1 row(s) with negative or non-finite entries" in d and "first row 2" in d
               for d in details)
    assert any("1 row(s) that do not sum to 1" in d and "first row 1 sums to 1.1" in d
               for d in details)
    soft = np.array([[0.25, 0.75], [1.0, 0.0]])
    ok = block_stats(np.ones((2, 1)), soft, np.array([2.0, 1.0]), 2, 0, 0)
    assert ok.problems == ()
    np.testing.assert_allclose(ok.class_weight_sums, [1.5, 1.5])
    assert ok.class_counts.tolist() == [1, 1]


def test_combine_stats_adds_blocks_in_order_and_raises_on_problems():
    parts = [
        block_stats(np.ones((2, 1)), np.array([1, 1]), None, 2, 1, 2),
        block_stats(np.ones((2, 1)), np.array([0, 1]), None, 2, 0, 0),
    ]
    total = combine_stats(parts, "'train.zarr'")
    assert total.class_counts.tolist() == [1, 3]
    assert (total.n_samples, total.weight_sum) == (4, 4.0)
    bad = block_stats(np.ones((2, 1)), np.array([0, 9]), None, 2, 2, 4)
    expected = (
        r"y in 'train\.zarr' has 1 class id\(s\) outside \[0, 2\) in block 2 \(rows 4 to 5\), "
        r"first 9 in row 5"
    )
    with pytest.raises(ValueError, match=expected):
        combine_stats([*parts, bad], "'train.zarr'")
    zero = block_stats(np.ones((2, 1)), np.array([0, 1]), np.zeros(2), 2, 0, 0)
    with pytest.raises(ValueError, match=r"every sample_weight in 'w' is zero"):
        combine_stats([zero], "'w'")
    with pytest.raises(ValueError, match="no blocks to check"):
        combine_stats([], "'empty'")
    assert isinstance(parts[0], BlockStats)


def test_check_values_counts_a_valid_dataset(tmp_path):
    y = np.arange(100) % 3
    weights = np.where(y == 2, 2.0, 1.0)
    dataset = write_dataset(
        tmp_path / "ok.zarr", features(100), y, sample_weight=weights, chunk_rows=30
    )
    stats = check_values(dataset)
    assert stats.class_counts.tolist() == [34, 33, 33]
    assert stats.class_weight_sums.tolist() == [34.0, 33.0, 66.0]
    assert (stats.n_samples, stats.weight_sum) == (100, 133.0)


def test_check_values_finds_nan_and_inf_with_block_and_rows(tmp_path):
    X = features(100)
    X[67, 0], X[71, 3] = np.nan, -np.inf
    path = write_raw_store(tmp_path / "nan.zarr", _replace(good_arrays(), X=(X, (40, 4))))
    expected = (
        r"X in '.*nan\.zarr' has 2 non-finite value\(s\) \(NaN or inf\) in block 1 "
        r"\(rows 40 to 79\), first in row 67"
    )
    with pytest.raises(ValueError, match=expected):
        check_values(open_dataset(path))


def test_check_values_finds_out_of_range_labels(tmp_path):
    y = np.arange(100, dtype=np.int32) % 3
    y[85] = 3
    path = write_raw_store(tmp_path / "label.zarr", _replace(good_arrays(), y=(y, (40,))))
    expected = (
        r"y in '.*label\.zarr' has 1 class id\(s\) outside \[0, 3\) in block 2 "
        r"\(rows 80 to 99\), first 3 in row 85"
    )
    with pytest.raises(ValueError, match=expected):
        check_values(open_dataset(path))


def test_check_values_finds_bad_weights_and_bad_probability_rows(tmp_path):
    weights = np.ones(100)
    weights[12] = -0.5
    Y = probability_rows(100, 3)
    Y[50] *= 2
    arrays = {"X": good_arrays()["X"], "Y": (Y, (40, 3)), "sample_weight": (weights, (40,))}
    expected = (
        r"sample_weight in .* in block 0 \(rows 0 to 39\), first -0\.5 in row 12; weights must be "
        r"finite and >= 0\.\nY in .* block 1 \(rows 40 to 79\), first row 50 sums to 2"
    )
    with pytest.raises(ValueError, match=expected):
        check_values(open_dataset(write_raw_store(tmp_path / "w.zarr", arrays)))


# ---------------------------------------------------------------------------------------------
# synthetic data on 0, 1 and 2 worker processes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_teacher(tmp_path_factory) -> tuple[Path, Dataset]:
    path = tmp_path_factory.mktemp("teacher") / "ref.zarr"
    return path, make_classification(path, 5000, 6, 4, chunk_rows=700, seed=11)


def local_cluster(n_workers: int) -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit="1GiB",
    )


@pytest.mark.cluster
def test_make_classification_bytes_do_not_depend_on_workers(tmp_path, reference_teacher):
    reference_path, reference = reference_teacher
    with local_cluster(1) as cluster, distributed.Client(cluster) as client:
        for n_workers in (1, 2):
            cluster.scale(n_workers)
            client.wait_for_workers(n_workers)
            path = tmp_path / f"teacher-on-{n_workers}.zarr"
            with distributed.get_task_stream(client) as stream:
                dataset = make_classification(
                    path, 5000, 6, 4, chunk_rows=700, seed=11, client=client
                )
            assert len({task["worker"] for task in stream.data}) == n_workers
            # The graph of an opened dataset travels to worker processes that read the store.
            assert check_values(dataset, client=client).n_samples == 5000
            assert dataset.fingerprint == reference.fingerprint
            assert stored_files(path) == stored_files(reference_path)
    np.testing.assert_array_equal(dataset.X.compute(), reference.X.compute())


def test_make_classification_is_seeded_and_learnable(tmp_path, reference_teacher):
    _, reference = reference_teacher
    assert reference.chunk_rows == (700,) * 7 + (100,)
    assert reference.classes.tolist() == [0, 1, 2, 3] and reference.dtype == np.float32
    other = make_classification(tmp_path / "other.zarr", 5000, 6, 4, chunk_rows=700, seed=12)
    assert other.fingerprint != reference.fingerprint
    X, y = reference.X.compute(), reference.y.compute()
    assert np.bincount(y, minlength=4).min() > 500
    model = LogisticRegression(max_iter=1000).fit(X[:4000], y[:4000])
    assert model.score(X[4000:], y[4000:]) > 0.85  # the noise caps it near 0.925
    check_values(reference)


def test_make_classification_chunks_do_not_depend_on_chunk_count(tmp_path):
    small = make_classification(tmp_path / "a.zarr", 300, 3, 2, chunk_rows=100, dtype="float64")
    more = make_classification(tmp_path / "b.zarr", 500, 3, 2, chunk_rows=100, dtype="float64")
    np.testing.assert_array_equal(small.X.compute(), more.X[:300].compute())
    assert small.dtype == np.float64


def test_make_classification_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"n_classes must be an int >= 2, got 1"):
        make_classification(tmp_path / "a.zarr", 10, 2, 1)
    with pytest.raises(ValueError, match=r"noise must be in \[0, 1\], got 1\.5"):
        make_classification(tmp_path / "a.zarr", 10, 2, 2, noise=1.5)
    with pytest.raises(TypeError, match=r"dtype must be 'float32' or 'float64', got 'int32'"):
        make_classification(tmp_path / "a.zarr", 10, 2, 2, dtype="int32")
    assert not (tmp_path / "a.zarr").exists()


# ---------------------------------------------------------------------------------------------
# converters and write_array
# ---------------------------------------------------------------------------------------------


def test_load_digits_round_trip(tmp_path):
    dataset = load_digits(tmp_path / "digits.zarr")
    digits = sklearn_digits()
    assert dataset.dtype == np.float64 and dataset.chunk_rows == (512, 512, 512, 261)
    assert dataset.classes.tolist() == list(range(10))
    assert_dataset_equal(dataset, digits.data, y=digits.target)


def test_convert_npz(tmp_path):
    X, y = features(50), np.array(["x", "y"])[np.arange(50) % 2]
    np.savez(tmp_path / "data.npz", features=X, target=y)
    dataset = convert_numpy(tmp_path / "data.npz", tmp_path / "d.zarr", feature_key="features",
                            label_key="target", chunk_rows=16)
    assert_dataset_equal(dataset, X, y=y)
    with pytest.raises(ValueError, match=r"has no array 'X'; it holds \['features', 'target'\]"):
        convert_numpy(tmp_path / "data.npz", tmp_path / "e.zarr")


def test_convert_npy_pair_and_refuse_object_arrays(tmp_path):
    X, y = features(64, dtype=np.float64), np.arange(64) % 4
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    dataset = convert_numpy((tmp_path / "X.npy", tmp_path / "y.npy"), tmp_path / "d.zarr",
                            chunk_rows=20)
    assert_dataset_equal(dataset, X, y=y)
    np.save(tmp_path / "labels.npy", np.array(["a", 1] * 32, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"cannot read y from '.*labels\.npy' without pickle"):
        convert_numpy((tmp_path / "X.npy", tmp_path / "labels.npy"), tmp_path / "o.zarr")
    with pytest.raises(ValueError, match=r"a \.npz file or a pair"):
        convert_numpy(tmp_path / "X.npy", tmp_path / "o.zarr")


def test_write_array_numpy_and_dask(tmp_path):
    path = tmp_path / "predictions.zarr"
    write_array(path, np.arange(10), chunk_rows=4)
    stored = zarr.open_group(str(path), mode="r")["predictions"]
    assert stored.chunks == (4,)
    np.testing.assert_array_equal(stored[:], np.arange(10))

    probabilities = da.from_array(probability_rows(25, 3), chunks=(10, 3))
    write_array(path, probabilities, name="proba")
    stored = zarr.open_group(str(path), mode="r")["proba"]
    assert stored.chunks == (10, 3) and stored.nchunks_initialized == 3
    np.testing.assert_array_equal(stored[:], probabilities.compute())

    with pytest.raises(FileExistsError, match=r"already has an array 'proba'; pass overwrite=True"):
        write_array(path, np.zeros(3), name="proba")
    write_array(path, np.zeros(3), name="proba", overwrite=True)
    np.testing.assert_array_equal(zarr.open_group(str(path), mode="r")["proba"][:], np.zeros(3))


def test_write_array_next_to_a_dataset_keeps_its_fingerprint(tmp_path):
    path = tmp_path / "train.zarr"
    dataset = write_dataset(path, features(20), np.arange(20) % 2, chunk_rows=8)
    write_array(path, np.arange(20) % 2)
    assert open_dataset(path).fingerprint == dataset.fingerprint
    with pytest.raises(ValueError, match=r"name 'X' is reserved"):
        write_array(path, np.zeros(20), name="X", overwrite=True)


# ---------------------------------------------------------------------------------------------
# S3 (moto server)
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def s3_dataset(s3_storage_options) -> Iterator[tuple[str, dict, np.ndarray, np.ndarray]]:
    base, options = s3_storage_options
    X, y = features(300), np.array(["no", "yes"])[np.arange(300) % 2]
    yield f"{base}/train.zarr", options, X, y


@pytest.mark.s3
def test_s3_round_trip_numpy_and_dask(s3_dataset, tmp_path):
    url, options, X, y = s3_dataset
    written = write_dataset(url, X, y, sample_weight=np.ones(300), chunk_rows=128,
                            storage_options=options)
    opened = open_dataset(url, storage_options=options)
    assert opened.fingerprint == written.fingerprint
    assert opened.url == url and opened.storage_options == options
    assert "testing" not in repr(opened)  # credentials stay out of logs
    assert_dataset_equal(opened, X, y=y, sample_weight=np.ones(300))
    local = write_dataset(tmp_path / "train.zarr", X, y, sample_weight=np.ones(300), chunk_rows=128)
    assert local.fingerprint == opened.fingerprint
    assert check_values(opened).class_counts.tolist() == [150, 150]

    soft = write_dataset(url.replace("train", "soft"), da.from_array(X, chunks=70),
                         Y=da.from_array(probability_rows(300, 2), chunks=(70, 2)),
                         chunk_rows=128, storage_options=options)
    assert_dataset_equal(open_dataset(soft.url, storage_options=options), X,
                         Y=probability_rows(300, 2))
    with pytest.raises(FileExistsError, match="already exists"):
        write_dataset(url, X, y, storage_options=options)


@pytest.mark.s3
def test_s3_deleted_chunk_object_is_named(s3_dataset):
    import s3fs

    url, options, X, y = s3_dataset
    write_dataset(url, X, y, chunk_rows=100, storage_options=options)
    s3fs.S3FileSystem(**options, skip_instance_cache=True).rm(f"{url}/y/c/1")
    expected = (
        r"y in 's3://.*/train\.zarr' is missing 1 of its 3 chunks "
        r"\(chunk indices 1 \(rows 100 to 199\)\)"
    )
    with pytest.raises(ValueError, match=expected):
        open_dataset(url, storage_options=options)


@pytest.mark.s3
def test_s3_make_classification_matches_local(s3_storage_options, tmp_path):
    base, options = s3_storage_options
    remote = make_classification(f"{base}/t.zarr", 900, 3, 3, chunk_rows=256, seed=5,
                                 storage_options=options)
    local = make_classification(tmp_path / "t.zarr", 900, 3, 3, chunk_rows=256, seed=5)
    assert remote.fingerprint == local.fingerprint
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(remote.y.compute(), local.y.compute())
