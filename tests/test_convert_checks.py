"""Tests of what ``dsoftmax convert`` decides from the whole source: the kind of CSV labels
(whatever the files and blocks), half-precision features of svmlight files (dense only), and
the feature indexing of svmlight files, logged and recorded in the dataset."""

from __future__ import annotations

import re

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse
import zarr
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from dsoftmax.data.convert import (
    convert_csv,
    convert_parquet,
    convert_parquet_sparse,
    convert_svmlight,
)
from dsoftmax.data.convert.common import classes_from_text


@pytest.fixture(autouse=True)
def _local_threads():
    with dask.config.set(scheduler="threads"):
        yield


def stored_labels(dataset) -> np.ndarray:
    return dataset.classes[dataset.y.compute(scheduler="sync")]


def svmlight_attrs(path) -> dict:
    return zarr.open_group(str(path), mode="r").attrs["svmlight"]


# ---------------------------------------------------------------------------------------------
# CSV labels: decided over the whole source
# ---------------------------------------------------------------------------------------------


def labelled_frame(labels: list[str], n_rows: int) -> pd.DataFrame:
    """A feature column and ``labels`` in turn, as text."""
    rows = np.arange(n_rows)
    return pd.DataFrame(
        {"a": rows.astype(np.float64), "label": np.array(labels, dtype=object)[rows % len(labels)]}
    )


@pytest.mark.parametrize("blocksize", [None, 300])
def test_csv_labels_that_differ_as_text_stay_distinct_classes_as_in_parquet(tmp_path, blocksize):
    frame = labelled_frame(["007", "7", "8"], 120)
    frame.to_csv(tmp_path / "data.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "data.parquet")

    from_csv = convert_csv(
        tmp_path / "data.csv", tmp_path / "csv.zarr", label_column="label", blocksize=blocksize
    )
    from_parquet = convert_parquet(
        tmp_path / "data.parquet", tmp_path / "parquet.zarr", label_column="label"
    )

    assert from_csv.classes.tolist() == ["007", "7", "8"]
    assert from_csv.classes.tolist() == from_parquet.classes.tolist()
    np.testing.assert_array_equal(stored_labels(from_csv), frame["label"].to_numpy(str))


def test_csv_shards_of_text_labels_convert_whatever_each_file_holds(tmp_path):
    (tmp_path / "parts").mkdir()
    pd.DataFrame({"a": [1.0, 2.0], "label": ["1", "2"]}).to_csv(
        tmp_path / "parts" / "p0.csv", index=False
    )
    pd.DataFrame({"a": [3.0, 4.0], "label": ["2", "cat"]}).to_csv(
        tmp_path / "parts" / "p1.csv", index=False
    )

    dataset = convert_csv(str(tmp_path / "parts" / "*.csv"), tmp_path / "out.zarr",
                          label_column="label")  # fmt: skip

    assert dataset.classes.tolist() == ["1", "2", "cat"]
    assert stored_labels(dataset).tolist() == ["1", "2", "2", "cat"]


def test_csv_labels_are_ints_only_when_every_label_of_every_block_is_one(tmp_path):
    ints = labelled_frame(["-3", "0", "12"], 300)
    ints.to_csv(tmp_path / "ints.csv", index=False)
    # One label spelled "+12" in the last block: every label stays text.
    signed = ints.assign(label=[*ints["label"][:-1], "+12"])
    signed.to_csv(tmp_path / "signed.csv", index=False)

    as_ints = convert_csv(tmp_path / "ints.csv", tmp_path / "a.zarr", label_column="label",
                          blocksize=500)  # fmt: skip
    as_text = convert_csv(tmp_path / "signed.csv", tmp_path / "b.zarr", label_column="label",
                          blocksize=500)  # fmt: skip

    assert as_ints.classes.tolist() == [-3, 0, 12]
    assert stored_labels(as_ints).tolist() == ints["label"].astype(int).tolist()
    assert as_text.classes.tolist() == ["+12", "-3", "0", "12"]
    assert stored_labels(as_text).tolist() == signed["label"].tolist()


@pytest.mark.parametrize(
    "texts",
    [
        ["1", "01"], ["0", "-0"], ["1", " 2"], ["1", "2.0"], ["1", "1e3"], ["1", "9" * 20],
        ["\u0661", "2"],  # ARABIC-INDIC DIGIT ONE: int() reads it, but it is not ASCII
    ],
)
def test_only_canonical_decimal_integers_become_ints(texts):
    classes = np.array(sorted(texts))
    assert classes_from_text(classes).tolist() == classes.tolist()


def test_canonical_decimal_integers_become_sorted_ints():
    got = classes_from_text(np.array(["-10", "-2", "0", "3", str(2**63 - 1)]))
    assert got.dtype == np.int64
    assert got.tolist() == [-10, -2, 0, 3, 2**63 - 1]


# ---------------------------------------------------------------------------------------------
# svmlight: half-precision features
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sparse_file(tmp_path):
    X = scipy.sparse.random(5000, 2000, density=0.005, format="csr", random_state=0)
    y = np.arange(5000) % 3
    path = tmp_path / "s.svm"
    dump_svmlight_file(X, y, str(path), zero_based=True)
    return path


def test_svmlight_dense_float16_holds_the_rounded_values(tmp_path, sparse_file):
    dataset = convert_svmlight(sparse_file, tmp_path / "x.zarr", dtype="float16", layout="dense")

    source_X, source_y = load_svmlight_file(str(sparse_file), zero_based=True, dtype=np.float64)
    assert dataset.dtype == np.float16
    np.testing.assert_array_equal(dataset.X.compute(), source_X.toarray().astype(np.float16))
    np.testing.assert_array_equal(stored_labels(dataset), source_y.astype(np.int64))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", np.float16])
def test_svmlight_refuses_half_precision_sparse_before_reading_a_file(tmp_path, dtype):
    name = np.dtype(dtype).name if dtype is np.float16 else dtype
    # The file does not exist: the dtype is refused first.
    with pytest.raises(ValueError, match=rf"dtype='{name}' cannot be stored sparse: sparse "
                       r"datasets hold float32 or float64 values\. .*layout='dense'"):  # fmt: skip
        convert_svmlight(tmp_path / "absent.svm", tmp_path / "x.zarr", dtype=dtype, layout="sparse")
    assert not (tmp_path / "x.zarr").exists()


def test_svmlight_auto_layout_with_float16_stores_dense_rows(tmp_path, sparse_file):
    dataset = convert_svmlight(sparse_file, tmp_path / "x.zarr", dtype="float16")
    assert dataset.layout == "dense" and dataset.dtype == np.float16
    source_X, _ = load_svmlight_file(str(sparse_file), zero_based=True, dtype=np.float64)
    np.testing.assert_array_equal(dataset.X.compute(), source_X.toarray().astype(np.float16))


def test_parquet_list_columns_refuse_float16_values(tmp_path):
    table = pa.table({"y": [0, 1, 0], "i": [[0, 2], [1], [3]]})
    pq.write_table(table, tmp_path / "bow.parquet")
    with pytest.raises(ValueError, match=r"dtype='float16' cannot be stored sparse.*float32"):
        convert_parquet_sparse(tmp_path / "bow.parquet", tmp_path / "x.zarr", label_column="y",
                               index_column="i", dtype="float16")  # fmt: skip
    assert not (tmp_path / "x.zarr").exists()


def test_cli_svmlight_float16(tmp_path, sparse_file, run_cli_here):
    code, stdout, stderr = run_cli_here(
        "convert", sparse_file, "--out", tmp_path / "x.zarr", "--dtype", "float16", "--layout",
        "sparse",
    )  # fmt: skip
    assert code != 0 and stdout == ""
    assert "cannot be stored sparse" in stderr and "--layout dense" in stderr
    assert not (tmp_path / "x.zarr").exists()

    code, stdout, _ = run_cli_here(
        "convert", sparse_file, "--out", tmp_path / "x.zarr", "--dtype", "float16"
    )  # --layout auto: dense, the only layout that holds float16
    assert (code, stdout) == (0, f"wrote 5000 x 2000 with 3 classes to {tmp_path / 'x.zarr'}\n")
    assert zarr.open_group(str(tmp_path / "x.zarr"), mode="r")["X"].dtype == np.float16


# ---------------------------------------------------------------------------------------------
# svmlight: feature indexing, logged and recorded
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def file_without_column_0(tmp_path):
    """A zero-based file whose column 0 happens to be empty."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 6)) * (rng.random((50, 6)) < 0.5)
    X[:, 0] = 0.0
    X[0, 5] = 1.0  # the last column appears, so the width is known
    path = tmp_path / "test.svm"
    dump_svmlight_file(X, np.arange(50) % 2, str(path), zero_based=True)
    return path, X


def test_svmlight_records_the_indexing_it_used(tmp_path, file_without_column_0):
    path, X = file_without_column_0
    guessed = convert_svmlight(path, tmp_path / "auto.zarr", layout="dense")
    forced = convert_svmlight(path, tmp_path / "zero.zarr", layout="dense", zero_based=True)

    assert svmlight_attrs(tmp_path / "auto.zarr") == {
        "zero_based": False, "zero_based_option": "auto",
    }  # fmt: skip
    assert guessed.n_features == 5  # shifted by one: the guess the attribute makes visible
    assert svmlight_attrs(tmp_path / "zero.zarr") == {
        "zero_based": True, "zero_based_option": True,
    }  # fmt: skip
    np.testing.assert_array_equal(forced.X.compute(), X.astype(np.float32))


def test_cli_svmlight_logs_the_guess_and_the_rows_like_csv(
    tmp_path, file_without_column_0, run_cli_here
):
    path, _ = file_without_column_0
    pd.DataFrame({"a": np.arange(50.0), "label": np.arange(50) % 2}).to_csv(
        tmp_path / "t.csv", index=False
    )

    code, _, svm_log = run_cli_here("convert", path, "--out", tmp_path / "s.zarr", "-v")
    assert code == 0
    assert re.search(
        r"feature indices read as one-based \(zero_based='auto': no feature index 0 appears, "
        r"the lowest is 1\).*--zero-based yes \(zero_based=True\) forces zero-based indexing",
        svm_log,
    ), svm_log
    code, _, csv_log = run_cli_here(
        "convert", tmp_path / "t.csv", "--out", tmp_path / "c.zarr", "--label-column", "label",
        "-v",
    )  # fmt: skip
    assert code == 0
    for log in (svm_log, csv_log):
        assert re.search(r"dsoftmax: converted 50 rows \(.* in 1 file\) on .* rows/s", log), log


def test_csv_labels_na_and_none_are_classes_and_spaces_around_a_label_do_not_count(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                          "label": ["NA", "None", " 7", "7", "cat", "NA"]})  # fmt: skip
    frame.to_csv(tmp_path / "x.csv", index=False)
    dataset = convert_csv(tmp_path / "x.csv", tmp_path / "x.zarr", label_column="label")
    assert dataset.classes.tolist() == ["7", "NA", "None", "cat"]
    assert stored_labels(dataset).tolist() == ["NA", "None", "7", "7", "cat", "NA"]
    # A feature spelled "NA" is missing (NaN): refused with its row, as before.
    frame["a"] = ["1", "NA", "3", "4", "5", "6"]
    frame.to_csv(tmp_path / "y.csv", index=False)
    with pytest.raises(ValueError, match=r"non-finite value.* first in row 1"):
        convert_csv(tmp_path / "y.csv", tmp_path / "y.zarr", label_column="label")
