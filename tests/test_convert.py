"""Tests of the converters from Parquet, CSV and svmlight files: exact round trips against the
source files, every refusal with its message, the ``dsoftmax convert`` command, and a Parquet
source larger than a worker's memory limit converted on real worker processes."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import dask
import distributed
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from dsoftmax import cli, open_parquet
from dsoftmax.data import Dataset, open_dataset
from dsoftmax.data.convert import (
    FORMATS,
    convert_csv,
    convert_parquet,
    convert_svmlight,
    detect_format,
)

CLI = (sys.executable, "-m", "dsoftmax")
COMMAND_TIMEOUT = 120.0


@pytest.fixture(autouse=True)
def _local_threads():
    # The converters use the default scheduler; the cluster test makes its own client.
    with dask.config.set(scheduler="threads"):
        yield


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def stored(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Features and original labels as the store holds them."""
    X = dataset.X.compute(scheduler="sync")
    return X, dataset.classes[dataset.y.compute(scheduler="sync")]


def feature_names(path: Path) -> list[str]:
    return zarr.open_group(str(path), mode="r").attrs["feature_names"]


def animals(n_rows: int, seed: int = 0) -> np.ndarray:
    names = np.array(["cat", "dog", "a rather long label for a bird", "émeu"])
    return np.random.default_rng(seed).choice(names, n_rows)


def tabular(n_rows: int = 700, seed: int = 0) -> pd.DataFrame:
    """Numeric columns of several types, a text column and string labels."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "height": rng.standard_normal(n_rows),
            "count": rng.integers(-1000, 1000, n_rows),
            "note": rng.choice(["x", "y"], n_rows),
            "weight": rng.standard_normal(n_rows).astype(np.float32),
            "animal": animals(n_rows, seed),
            "flag": rng.random(n_rows) < 0.5,
        }
    )


def write_parquet_parts(
    frame: pd.DataFrame, folder: Path, n_files: int, row_group_size: int
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, part in enumerate(np.array_split(np.arange(len(frame)), n_files)):
        path = folder / f"part-{index:03d}.parquet"
        table = pa.Table.from_pandas(frame.iloc[part], preserve_index=False)
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------


def test_parquet_directory_round_trips_numeric_columns_and_string_labels(tmp_path):
    frame = tabular(700)
    folder = tmp_path / "table"
    write_parquet_parts(frame, folder, n_files=3, row_group_size=100)
    # Writers leave markers beside the data; they are not part of the table.
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-000.parquet.crc").write_bytes(b"\0\1")

    dataset = convert_parquet(folder, tmp_path / "out.zarr", label_column="animal", chunk_rows=256)

    X, labels = stored(dataset)
    # Every numeric column but the label, in the file's order; int and bool need float64.
    columns = ["height", "count", "weight", "flag"]
    assert dataset.dtype == np.float64
    np.testing.assert_array_equal(X, frame[columns].to_numpy(np.float64))
    np.testing.assert_array_equal(labels, frame["animal"].to_numpy(str))
    assert dataset.classes.tolist() == sorted(set(frame["animal"]))
    assert dataset.chunk_rows == (256, 256, 188)
    assert feature_names(tmp_path / "out.zarr") == columns


@pytest.mark.parametrize(
    ("group_rows", "chunk_rows"),
    [([62_500] * 8, 62_500), ([250_000, 250_000, 17], 62_500), ([1_048_576, 5], 65_536),
     ([20_000, 30_000, 7], 65_536), ([100, 100, 100], 65_536), ([70_000], 65_536)],
)  # fmt: skip
def test_row_groups_pick_the_largest_chunk_that_each_holds_whole(group_rows, chunk_rows):
    from dsoftmax.data.convert.from_parquet import row_group_chunk_rows

    assert row_group_chunk_rows(group_rows) == chunk_rows


def test_parquet_chunks_follow_even_row_groups_unless_given(tmp_path):
    frame = tabular(60_000)
    folder = tmp_path / "table"
    write_parquet_parts(frame, folder, n_files=3, row_group_size=20_000)
    aligned = convert_parquet(folder, tmp_path / "aligned.zarr", label_column="animal")
    assert aligned.chunk_rows == (20_000, 20_000, 20_000)
    given = convert_parquet(
        folder, tmp_path / "given.zarr", label_column="animal", chunk_rows=65_536
    )
    assert given.chunk_rows == (60_000,)
    for got, expected in zip(stored(aligned), stored(given), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_parquet_float32_columns_stay_float32_in_the_order_given(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 3)).astype(np.float32)
    labels = rng.integers(0, 4, 300) * 7
    table = pa.table({"c": X[:, 2], "a": X[:, 0], "label": labels, "b": X[:, 1]})
    pq.write_table(table, tmp_path / "data.parquet", row_group_size=64)

    dataset = convert_parquet(
        tmp_path / "data.parquet",
        tmp_path / "out.zarr",
        label_column="label",
        feature_columns=["a", "b", "c"],
        chunk_rows=100,
    )

    got_X, got_labels = stored(dataset)
    assert dataset.dtype == np.float32
    np.testing.assert_array_equal(got_X, X)
    np.testing.assert_array_equal(got_labels, labels)
    assert dataset.classes.tolist() == [0, 7, 14, 21]
    as_float64 = convert_parquet(
        tmp_path / "data.parquet", tmp_path / "f64.zarr", label_column="label", dtype="float64"
    )
    assert as_float64.dtype == np.float64
    np.testing.assert_array_equal(stored(as_float64)[0], X[:, [2, 0, 1]])


@pytest.mark.parametrize(
    "list_type", [pa.list_(pa.float32()), pa.large_list(pa.float32()), pa.list_(pa.float32(), 5)]
)
def test_parquet_embedding_column_becomes_the_feature_matrix(tmp_path, list_type):
    rng = np.random.default_rng(2)
    embeddings = rng.standard_normal((450, 5)).astype(np.float32)
    labels = animals(450, seed=2)
    half = 200
    for name, rows in (("a", slice(0, half)), ("b", slice(half, None))):
        values = pa.array(list(embeddings[rows]), type=list_type)
        table = pa.table({"label": labels[rows], "embedding": values, "id": np.arange(450)[rows]})
        pq.write_table(table, tmp_path / f"{name}.parquet", row_group_size=90)

    dataset = convert_parquet(
        [tmp_path / "a.parquet", tmp_path / "b.parquet"],
        tmp_path / "out.zarr",
        label_column="label",
        embedding_column="embedding",
        chunk_rows=128,
    )

    X, got_labels = stored(dataset)
    assert dataset.dtype == np.float32
    np.testing.assert_array_equal(X, embeddings)
    np.testing.assert_array_equal(got_labels, labels)
    assert feature_names(tmp_path / "out.zarr") == [f"embedding[{i}]" for i in range(5)]


def test_parquet_sole_list_column_of_numbers_is_the_embedding_unless_named(tmp_path, caplog):
    rng = np.random.default_rng(4)
    embeddings = rng.standard_normal((120, 3)).astype(np.float32)
    names = pa.array([f"doc{i}" for i in range(120)])
    vectors = pa.array(list(embeddings), type=pa.list_(pa.float32(), 3))
    labels = animals(120, seed=4)
    pq.write_table(pa.table({"name": names, "vec": vectors, "label": labels}), tmp_path / "e.pq")
    with caplog.at_level("INFO", logger="dsoftmax"):
        found = convert_parquet(tmp_path / "e.pq", tmp_path / "e.zarr", label_column="label")
    np.testing.assert_array_equal(stored(found)[0], embeddings)
    assert "the features are the embedding column 'vec'" in caplog.text
    assert open_parquet(tmp_path / "e.pq", label_column="label").n_features == 3

    tags = pa.array([[1.0, 2.0]] * 120, type=pa.list_(pa.float64()))
    pq.write_table(pa.table({"vec": vectors, "tags": tags, "label": labels}), tmp_path / "two.pq")
    with pytest.raises(ValueError, match=r"several list columns of numbers: \['vec', 'tags'\]"):
        convert_parquet(tmp_path / "two.pq", tmp_path / "two.zarr", label_column="label")
    assert not (tmp_path / "two.zarr").exists()
    # Numeric columns besides the label are the features, whatever list columns there are.
    pq.write_table(
        pa.table({"vec": vectors, "size": np.arange(120.0), "label": labels}), tmp_path / "n.pq"
    )
    numeric = convert_parquet(tmp_path / "n.pq", tmp_path / "n.zarr", label_column="label")
    np.testing.assert_array_equal(stored(numeric)[0][:, 0], np.arange(120.0))


def test_parquet_glob_and_dictionary_encoded_labels(tmp_path):
    frame = tabular(300, seed=3)
    frame["animal"] = frame["animal"].astype("category")
    write_parquet_parts(frame, tmp_path, n_files=2, row_group_size=1000)
    assert pa.types.is_dictionary(pq.read_schema(tmp_path / "part-000.parquet").field(4).type)

    dataset = convert_parquet(
        str(tmp_path / "part-*.parquet"),
        tmp_path / "out.zarr",
        label_column="animal",
        feature_columns=["weight"],
    )

    X, labels = stored(dataset)
    np.testing.assert_array_equal(X[:, 0], frame["weight"].to_numpy())
    np.testing.assert_array_equal(labels, frame["animal"].to_numpy(str))


def test_parquet_refuses_non_finite_features_with_the_row_across_files(tmp_path):
    frame = tabular(400, seed=4)
    frame.loc[333, "height"] = np.nan
    write_parquet_parts(frame, tmp_path / "table", n_files=2, row_group_size=50)
    with pytest.raises(ValueError, match=r"cannot convert .*table.*non-finite.*first in row 333"):
        convert_parquet(tmp_path / "table", tmp_path / "out.zarr", label_column="animal")
    assert not (tmp_path / "out.zarr").exists()


def test_parquet_refuses_missing_labels_and_features_with_their_row(tmp_path):
    labels = pa.array(["a", "b", None, "a", None, "b"])
    pq.write_table(pa.table({"x": np.arange(6.0), "label": labels}), tmp_path / "nolabel.parquet")
    with pytest.raises(
        ValueError, match=r"label column 'label' .* missing in 2 row\(s\), first in row 2"
    ):
        convert_parquet(tmp_path / "nolabel.parquet", tmp_path / "a.zarr", label_column="label")

    features = pa.array([1, None, 3, 4], type=pa.int64())
    pq.write_table(pa.table({"x": features, "label": [0, 1, 0, 1]}), tmp_path / "nofeature.parquet")
    with pytest.raises(ValueError, match=r"non-finite value\(s\) .* first in row 1"):
        convert_parquet(tmp_path / "nofeature.parquet", tmp_path / "b.zarr", label_column="label")
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_parquet_refuses_ragged_embeddings(tmp_path):
    embeddings = pa.array([[1.0, 2.0], [3.0, 4.0], [5.0]], type=pa.list_(pa.float32()))
    pq.write_table(pa.table({"e": embeddings, "y": [0, 1, 0]}), tmp_path / "e.parquet")
    with pytest.raises(ValueError, match=r"rows of 1 values where 2 are expected .* at row 2"):
        convert_parquet(
            tmp_path / "e.parquet", tmp_path / "out.zarr", label_column="y", embedding_column="e"
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"label_column": "species"}, ValueError, r"has no column\(s\) \['species'\]; its "
         r"columns are \['height', 'count', 'note', 'weight', 'animal', 'flag'\]"),
        ({"label_column": "animal", "feature_columns": ["height", "note"]}, TypeError,
         r"feature column 'note' has type (large_)?string; features must be numbers"),
        ({"label_column": "animal", "feature_columns": ["height", "animal"]}, ValueError,
         r"feature_columns holds the label column 'animal'"),
        ({"label_column": "animal", "feature_columns": ["height", "height"]}, ValueError,
         r"feature_columns repeats \['height'\]"),
        ({"label_column": "animal", "feature_columns": "height"}, TypeError,
         r"feature_columns must be a list of column names"),
        ({"label_column": "animal", "feature_columns": []}, ValueError, "feature_columns is empty"),
        ({"label_column": "animal", "embedding_column": "height"}, TypeError,
         r"embedding_column 'height' has type double; it must be a list"),
        ({"label_column": "animal", "feature_columns": ["height"], "embedding_column": "x"},
         ValueError, "pass feature_columns or embedding_column, not both"),
        ({"label_column": "animal", "dtype": "int32"}, TypeError,
         r"dtype must be 'float32', 'float64' or None"),
        ({"label_column": "note", "feature_columns": ["animal"]}, TypeError,
         r"feature column 'animal' has type"),
    ],
)  # fmt: skip
def test_parquet_refuses_bad_columns_before_writing(tmp_path, kwargs, error, match):
    pq.write_table(pa.Table.from_pandas(tabular(20), preserve_index=False), tmp_path / "t.parquet")
    with pytest.raises(error, match=match):
        convert_parquet(tmp_path / "t.parquet", tmp_path / "out.zarr", **kwargs)
    assert not (tmp_path / "out.zarr").exists()


def test_parquet_refuses_files_that_disagree_and_paths_that_do_not_exist(tmp_path):
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [0, 1]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"x": ["1", "2"], "y": [0, 1]}), tmp_path / "b.parquet")
    pq.write_table(pa.table({"z": [1.0, 2.0], "y": [0, 1]}), tmp_path / "c.parquet")
    with pytest.raises(TypeError, match=r"column 'x' has type string in .*b.parquet.* but double"):
        convert_parquet(
            [tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "o.zarr", label_column="y"
        )
    with pytest.raises(ValueError, match=r"c.parquet' has no column 'x', which the first file"):
        convert_parquet(
            [tmp_path / "a.parquet", tmp_path / "c.parquet"], tmp_path / "o.zarr", label_column="y"
        )
    with pytest.raises(FileNotFoundError, match=r"no such file or directory: .*missing.parquet"):
        convert_parquet(tmp_path / "missing.parquet", tmp_path / "o.zarr", label_column="y")
    with pytest.raises(FileNotFoundError, match=r"no Parquet file matches .*nothing-\*"):
        convert_parquet(str(tmp_path / "nothing-*.parquet"), tmp_path / "o.zarr", label_column="y")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match=r"text.parquet' is not a readable Parquet file"):
        convert_parquet(tmp_path / "text.parquet", tmp_path / "o.zarr", label_column="y")
    assert not (tmp_path / "o.zarr").exists()


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def test_csv_glob_of_plain_and_compressed_files_round_trips(tmp_path):
    frame = tabular(900, seed=5).drop(columns=["note", "flag"])
    frame.iloc[:500].to_csv(tmp_path / "a.csv", index=False)
    with gzip.open(tmp_path / "b.csv.gz", "wt") as file:
        frame.iloc[500:].to_csv(file, index=False)

    dataset = convert_csv(
        [tmp_path / "a.csv", tmp_path / "b.csv.gz"],
        tmp_path / "out.zarr",
        label_column="animal",
        blocksize=4000,  # several blocks per uncompressed file
        chunk_rows=128,
    )

    X, labels = stored(dataset)
    assert dataset.dtype == np.float64
    source = pd.concat([pd.read_csv(tmp_path / "a.csv"), pd.read_csv(tmp_path / "b.csv.gz")])
    np.testing.assert_array_equal(X, source[["height", "count", "weight"]].to_numpy(np.float64))
    # pandas prints a float64 with every digit it needs, so the text reads back exactly.
    np.testing.assert_array_equal(X[:, :2], frame[["height", "count"]].to_numpy(np.float64))
    np.testing.assert_array_equal(labels, frame["animal"].to_numpy(str))
    assert feature_names(tmp_path / "out.zarr") == ["height", "count", "weight"]


def test_csv_integer_labels_float32_features_and_a_glob(tmp_path):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((400, 2)).astype(np.float32)
    labels = rng.integers(-1, 2, 400)
    for index, rows in enumerate((slice(0, 150), slice(150, None))):
        pd.DataFrame({"u": X[rows, 0], "v": X[rows, 1], "label": labels[rows]}).to_csv(
            tmp_path / f"part-{index}.csv", index=False
        )
    dataset = convert_csv(
        str(tmp_path / "part-*.csv"),
        tmp_path / "out.zarr",
        label_column="label",
        feature_columns=["v", "u"],
        dtype="float32",
    )
    got_X, got_labels = stored(dataset)
    assert dataset.dtype == np.float32
    np.testing.assert_array_equal(got_X, X[:, ::-1])
    np.testing.assert_array_equal(got_labels, labels)
    assert dataset.classes.tolist() == [-1, 0, 1]


def test_csv_refuses_missing_values_and_labels_with_their_rows(tmp_path):
    (tmp_path / "gap.csv").write_text("a,b,label\n1,2,x\n3,,y\n5,6,x\n")
    with pytest.raises(ValueError, match=r"non-finite value\(s\) .* first in row 1"):
        convert_csv(tmp_path / "gap.csv", tmp_path / "a.zarr", label_column="label")
    (tmp_path / "nolabel.csv").write_text("a,label\n1,x\n2,y\n3,\n4,x\n")
    with pytest.raises(ValueError, match=r"missing in 1 row\(s\), first in row 2"):
        convert_csv(tmp_path / "nolabel.csv", tmp_path / "b.zarr", label_column="label")
    with pytest.raises(ValueError, match=r"has no column\(s\) \['target'\]"):
        convert_csv(tmp_path / "nolabel.csv", tmp_path / "c.zarr", label_column="target")
    (tmp_path / "text.csv").write_text("name,label\nx,0\ny,1\n")
    with pytest.raises(ValueError, match=r"has no numeric column besides the label 'label'"):
        convert_csv(tmp_path / "text.csv", tmp_path / "d.zarr", label_column="label")
    assert not any(tmp_path.glob("*.zarr"))


# ---------------------------------------------------------------------------------------------
# svmlight
# ---------------------------------------------------------------------------------------------


def sparse_rows(n_rows: int, n_features: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features)).astype(np.float32)
    X[rng.random(X.shape) < 0.6] = 0.0
    return X


def test_svmlight_files_round_trip_against_the_source(tmp_path):
    X = sparse_rows(300, 12, seed=7)
    X[:, -2:] = 0.0  # the last features are never written: n_features must say they exist
    y = np.random.default_rng(7).choice([-1, 1, 3], 300)
    dump_svmlight_file(X[:200], y[:200], str(tmp_path / "a.svm"), zero_based=False)
    with gzip.open(tmp_path / "b.svm.gz", "wb") as file:
        dump_svmlight_file(X[200:], y[200:], file, zero_based=False)

    dataset = convert_svmlight(
        [tmp_path / "a.svm", tmp_path / "b.svm.gz"],
        tmp_path / "out.zarr",
        n_features=12,
        zero_based=False,
        chunk_rows=64,
    )

    got_X, got_labels = stored(dataset)
    assert dataset.dtype == np.float32
    np.testing.assert_array_equal(got_X, X)
    np.testing.assert_array_equal(got_labels, y)
    assert dataset.classes.dtype.kind == "i"  # "+1" and "-1" are ints, not floats
    # The same values that scikit-learn reads from the file.
    source_X, source_y = load_svmlight_file(
        str(tmp_path / "a.svm"), n_features=12, dtype=np.float32
    )
    np.testing.assert_array_equal(got_X[:200], source_X.toarray())
    np.testing.assert_array_equal(got_labels[:200], source_y)


def test_svmlight_keeps_fractional_labels_and_float64(tmp_path):
    # Six decimals: the 16 digits that scikit-learn writes then read back exactly.
    X = np.round(sparse_rows(50, 4, seed=8).astype(np.float64), 6)
    y = np.where(np.arange(50) % 2 == 0, 0.5, 2.25)
    dump_svmlight_file(X, y, str(tmp_path / "data.libsvm"))
    dataset = convert_svmlight(tmp_path / "data.libsvm", tmp_path / "out.zarr", dtype="float64")
    got_X, got_labels = stored(dataset)
    np.testing.assert_array_equal(got_X, X)
    np.testing.assert_array_equal(got_labels, y)


def test_svmlight_refuses_files_too_big_to_densify_and_bad_files(tmp_path):
    X = sparse_rows(100, 10, seed=9)
    dump_svmlight_file(X, np.arange(100) % 2, str(tmp_path / "data.svm"))
    with pytest.raises(
        ValueError,
        match=r"holds 100 rows x 10 features: .* as dense float32, more than "
        r"max_dense_bytes=3999 .* Split the file",
    ):
        convert_svmlight(tmp_path / "data.svm", tmp_path / "a.zarr", max_dense_bytes=3999)
    assert convert_svmlight(tmp_path / "data.svm", tmp_path / "b.zarr", max_dense_bytes=4000)
    (tmp_path / "bad.svm").write_text("1 3:x\n")
    with pytest.raises(ValueError, match=r"cannot read .*bad.svm' as svmlight"):
        convert_svmlight(tmp_path / "bad.svm", tmp_path / "c.zarr")
    with pytest.raises(FileNotFoundError, match=r"no such svmlight file: .*none.svm"):
        convert_svmlight(tmp_path / "none.svm", tmp_path / "c.zarr")
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "c.zarr").exists()


# ---------------------------------------------------------------------------------------------
# Format detection and the command line
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sources", "kind"),
    [
        (["d.npz"], "npz"),
        (["X.npy", "y.npy"], "npy"),
        (["a.parquet", "b.PARQUET"], "parquet"),
        (["part-*.parquet"], "parquet"),
        (["data.csv"], "csv"),
        (["data/*.csv.gz"], "csv"),
        (["train.svm"], "svmlight"),
        (["train.libsvm.bz2", "test.txt"], "svmlight"),
    ],
)
def test_detect_format_from_names(sources, kind):
    assert detect_format(sources) == kind


def test_detect_format_takes_a_directory_as_parquet_and_refuses_the_unknown(tmp_path):
    assert detect_format([tmp_path]) == "parquet"
    with pytest.raises(ValueError, match=r"cannot tell the format of 'data.json'.*--format"):
        detect_format(["data.json"])
    with pytest.raises(ValueError, match=r"the sources mix formats: 'a.csv' \(csv\), 'b.svm'"):
        detect_format(["a.csv", "b.svm"])
    with pytest.raises(ValueError, match=r"a .npy source is a pair of files"):
        detect_format(["X.npy"])
    assert cli.CONVERT_FORMATS == tuple(FORMATS)


def run_cli_many(*argvs: tuple) -> list[subprocess.CompletedProcess]:
    """Run several independent ``dsoftmax`` commands at once; results in order."""
    processes = [
        subprocess.Popen(
            [*CLI, *map(str, argv)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    results = []
    for argv, process in zip(argvs, processes, strict=True):
        stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT)
        results.append(subprocess.CompletedProcess(argv, process.returncode, stdout, stderr))
    return results


def test_cli_converts_each_format(tmp_path):
    frame = tabular(240, seed=10)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "t.parquet")
    X = sparse_rows(80, 6, seed=10)
    X[:, 0] = 0.0  # no index 0 in the file: "auto" would take it as one-based
    dump_svmlight_file(X, np.arange(80) % 3, str(tmp_path / "t.svm"))
    frame.loc[17, "weight"] = np.inf
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / "inf.parquet")
    out = tmp_path / "out"
    out.mkdir()

    parquet, svmlight, infinite = run_cli_many(
        ("convert", tmp_path / "t.parquet", "--out", out / "p.zarr", "--label-column", "animal",
         "--feature-columns", "weight, height", "--chunk-rows", 100),
        ("convert", tmp_path / "t.svm", "--out", out / "s.zarr", "--n-features", 8,
         "--zero-based", "yes"),
        ("convert", tmp_path / "inf.parquet", "--out", out / "x.zarr", "--label-column", "animal"),
    )  # fmt: skip

    for result in (parquet, svmlight):
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert parquet.stdout == f"wrote 240 x 2 with 4 classes to {out / 'p.zarr'}\n"
    assert svmlight.stdout == f"wrote 80 x 8 with 3 classes to {out / 's.zarr'}\n"
    p_X, p_labels = stored(open_dataset(out / "p.zarr"))
    np.testing.assert_array_equal(p_X[:, 0], pq.read_table(tmp_path / "t.parquet")["weight"])
    np.testing.assert_array_equal(p_X[:, 1], frame["height"].to_numpy())
    np.testing.assert_array_equal(p_labels, frame["animal"].to_numpy(str))
    s_X, s_labels = stored(open_dataset(out / "s.zarr"))
    np.testing.assert_array_equal(s_X[:, :6], X)
    np.testing.assert_array_equal(s_X[:, 6:], 0.0)
    np.testing.assert_array_equal(s_labels, np.arange(80) % 3)
    assert (infinite.returncode, infinite.stdout) == (1, "")
    assert infinite.stderr.count("\n") == 1 and re.fullmatch(
        r"dsoftmax: error: cannot convert '.*inf.parquet': X in the input has 1 non-finite "
        r"value\(s\) .* first in row 17; drop or impute those rows .*\n",
        infinite.stderr,
    ), infinite.stderr
    assert sorted(path.name for path in out.iterdir()) == ["p.zarr", "s.zarr"]


def test_cli_csv_and_every_error_in_one_line(tmp_path, run_cli_here):
    frame = tabular(240, seed=11).drop(columns=["note"])
    frame.to_csv(tmp_path / "t.csv", index=False)
    dump_svmlight_file(sparse_rows(10, 3, seed=11), np.arange(10) % 2, str(tmp_path / "t.svm"))
    out = tmp_path / "out"
    out.mkdir()

    code, stdout, stderr = run_cli_here(
        "convert", tmp_path / "t.csv", "--out", out / "c.zarr", "--label-column", "animal",
        "--dtype", "float32", "--format", "csv",
    )  # fmt: skip
    assert (code, stdout, stderr) == (0, f"wrote 240 x 4 with 4 classes to {out / 'c.zarr'}\n", "")
    c_X, c_labels = stored(open_dataset(out / "c.zarr"))
    assert c_X.dtype == np.float32
    source = pd.read_csv(tmp_path / "t.csv")
    expected_X = source[["height", "count", "weight", "flag"]].to_numpy(np.float64)
    np.testing.assert_array_equal(c_X, expected_X.astype(np.float32))
    np.testing.assert_array_equal(c_labels, source["animal"].to_numpy(str))

    errors = {
        (2, r"csv sources need --label-column NAME, the column of the labels"): (
            tmp_path / "t.csv",
        ),
        (2, r"cannot tell the format of '.*t.json' from its name.*--format"): (
            tmp_path / "t.json",
        ),
        (2, r"--label-column does not apply to svmlight sources \(only to parquet, csv\)"): (
            tmp_path / "t.svm", "--label-column", "y",
        ),
        (2, r"--embedding-column does not apply to csv sources \(only to parquet\)"): (
            tmp_path / "t.csv", "--label-column", "animal", "--embedding-column", "e",
        ),
        (2, r"--feature-key does not apply to csv sources \(only to npz\)"): (
            tmp_path / "t.csv", "--label-column", "animal", "--feature-key", "X",
        ),
        (2, r"--format npy takes X.npy y.npy, got 1 path"): (
            tmp_path / "t.csv", "--format", "npy",
        ),
        (1, r"has no column\(s\) \['nothing'\]; its columns are \['height'"): (
            tmp_path / "t.csv", "--label-column", "nothing",
        ),
        (1, r"no such svmlight file: '.*missing.svm'"): (tmp_path / "missing.svm",),
        (2, r"argument --feature-columns: must be column names separated by commas"): (
            tmp_path / "t.csv", "--label-column", "animal", "--feature-columns", "a,,b",
        ),
    }  # fmt: skip
    for (expected_code, pattern), argv in errors.items():
        code, stdout, stderr = run_cli_here("convert", *argv, "--out", out / "x.zarr")
        assert (code, stdout) == (expected_code, ""), (argv, stderr)
        assert stderr.startswith("dsoftmax: error: ") and stderr.count("\n") == 1, stderr
        assert re.search(pattern, stderr), stderr
    assert sorted(path.name for path in out.iterdir()) == ["c.zarr"]


# ---------------------------------------------------------------------------------------------
# A source larger than a worker's memory limit, on real worker processes
# ---------------------------------------------------------------------------------------------

#: A worker process holds about 190 MiB before it reads a byte (Python, NumPy, Dask, Zarr,
#: pyarrow and the pandas that pyarrow imports) and peaked at about 320 MiB in this conversion
#: (measured): the limit leaves that below the 80% at which Dask pauses a worker.
WORKER_MEMORY_LIMIT = 512 * 2**20
EMBEDDING_WIDTH, ROW_GROUP_ROWS, N_FILES = 128, 8192, 6


def write_embedding_files(folder: Path, total_bytes: int) -> tuple[np.ndarray, int]:
    """Parquet files of float32 embeddings (the same block repeated) and int labels."""
    folder.mkdir()
    row_groups_per_file = -(-total_bytes // (EMBEDDING_WIDTH * 4 * N_FILES * ROW_GROUP_ROWS))
    rows_per_file = row_groups_per_file * ROW_GROUP_ROWS
    block = np.random.default_rng(11).standard_normal(
        (rows_per_file, EMBEDDING_WIDTH), dtype=np.float32
    )
    # Declared without nulls, as writers of embeddings often do: it halves the decoding work.
    list_type = pa.list_(pa.field("item", pa.float32(), nullable=False), EMBEDDING_WIDTH)
    embeddings = pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), type=list_type)
    schema = pa.schema(
        [pa.field("embedding", list_type, nullable=False), pa.field("label", pa.int32())]
    )
    for index in range(N_FILES):
        labels = pa.array((np.arange(rows_per_file, dtype=np.int32) + index) % 5)
        pq.write_table(
            pa.Table.from_arrays([embeddings, labels], schema=schema),
            folder / f"part-{index}.parquet",
            row_group_size=ROW_GROUP_ROWS,
            compression="none",
            use_dictionary=False,
        )
    return block, rows_per_file


@pytest.mark.cluster
@pytest.mark.timeout(240)
@pytest.mark.slow
def test_parquet_larger_than_a_worker_memory_limit_converts_without_a_restart(tmp_path):
    block, rows_per_file = write_embedding_files(
        tmp_path / "source", int(1.02 * WORKER_MEMORY_LIMIT)
    )
    source_bytes = sum(path.stat().st_size for path in (tmp_path / "source").iterdir())
    assert source_bytes > WORKER_MEMORY_LIMIT
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit=WORKER_MEMORY_LIMIT,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        before = {
            address: worker["id"] for address, worker in client.scheduler_info()["workers"].items()
        }
        dataset = convert_parquet(
            tmp_path / "source",
            tmp_path / "out.zarr",
            label_column="label",
            embedding_column="embedding",
            chunk_rows=2 * ROW_GROUP_ROWS,  # each chunk joins two row groups
            codec="none",
        )
        after = {
            address: worker["id"] for address, worker in client.scheduler_info()["workers"].items()
        }
        # A worker the nanny restarted for memory comes back with a new address and id.
        assert after == before, f"workers changed during the conversion: {before} -> {after}"
        statuses = client.run(lambda dask_worker: dask_worker.status.name)
        assert set(statuses.values()) == {"running"}

    assert dataset.n_samples == N_FILES * rows_per_file
    assert dataset.n_features == EMBEDDING_WIDTH
    # Spot checks against the source: the first rows of the third file, and labels throughout.
    store = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    start = 2 * rows_per_file
    np.testing.assert_array_equal(store["X"][start : start + 1000], block[:1000])
    labels = dataset.classes[store["y"][::997]]
    rows = np.arange(dataset.n_samples)[::997]
    np.testing.assert_array_equal(labels, (rows % rows_per_file + rows // rows_per_file) % 5)
