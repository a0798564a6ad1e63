"""A Parquet row group is read in record batches (``PARQUET_BATCH_BYTES`` of features): the
converted values and every message's row number are those of the row group read whole."""

from __future__ import annotations

import subprocess
import sys

import dask
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dsoftmax.data.convert import convert_parquet, from_parquet

N_ROWS = 300


@pytest.fixture(autouse=True)
def _small_batches(monkeypatch):
    # 64 rows of 4 float32 features a batch: 5 batches per row group.
    monkeypatch.setattr(from_parquet, "PARQUET_BATCH_BYTES", 64 * 4 * 4)
    monkeypatch.setattr(from_parquet, "PARQUET_MIN_BATCH_ROWS", 1)
    with dask.config.set(scheduler="threads"):
        yield


def write(path, embeddings, labels, list_type=None):
    values = pa.array(list(embeddings), type=list_type or pa.list_(pa.float32(), 4))
    pq.write_table(pa.table({"e": values, "y": labels}), path, row_group_size=N_ROWS)


def run_in_fresh_process(script, *paths):
    """What ``script`` prints, run by a fresh Python process with ``paths`` as its arguments."""
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_batches_fill_the_row_groups_features_and_labels_in_order(tmp_path):
    X = np.random.default_rng(0).standard_normal((2 * N_ROWS, 4)).astype(np.float32)
    labels = np.array(["b", "a", "c"])[np.arange(2 * N_ROWS) % 3]
    write(tmp_path / "data.parquet", X, labels)
    dataset = convert_parquet(
        tmp_path / "data.parquet", tmp_path / "out.zarr", label_column="y", embedding_column="e",
        chunk_rows=128,
    )  # fmt: skip
    np.testing.assert_array_equal(dataset.X.compute(), X)
    np.testing.assert_array_equal(dataset.classes[dataset.y.compute()], labels)


def test_messages_name_the_row_of_the_row_group_in_a_later_batch(tmp_path):
    embeddings = [[1.0, 2.0]] * N_ROWS
    embeddings[200] = [1.0]
    write(tmp_path / "ragged.parquet", embeddings, [0] * N_ROWS, pa.list_(pa.float32()))
    ragged = r"rows of 1 values where 2 are expected \(the first row's length\), first at row 200 "
    with pytest.raises(ValueError, match=ragged):
        convert_parquet(tmp_path / "ragged.parquet", tmp_path / "a.zarr", label_column="y",
                        embedding_column="e")  # fmt: skip

    missing = [[0.5] * 4] * N_ROWS
    missing[150] = None
    write(tmp_path / "missing.parquet", missing, [0] * N_ROWS)
    with pytest.raises(ValueError, match=r"1 missing row\(s\), first at row 150 of the row group"):
        convert_parquet(tmp_path / "missing.parquet", tmp_path / "b.zarr", label_column="y",
                        embedding_column="e")  # fmt: skip

    labels = pa.array([0] * 170 + [None] + [1] * (N_ROWS - 171), type=pa.int64())
    write(tmp_path / "nolabel.parquet", [[0.5] * 4] * N_ROWS, labels)
    with pytest.raises(ValueError, match=r"missing in 1 row\(s\), first in row 170"):
        convert_parquet(tmp_path / "nolabel.parquet", tmp_path / "c.zarr", label_column="y",
                        embedding_column="e")  # fmt: skip


def test_a_row_groups_raw_bytes_are_streamed_not_held_whole(tmp_path):
    """pyarrow would read a row group's column chunks whole before decoding them; the converter
    streams them, so its Arrow memory stays far below one row group (here 64 MiB of float32
    values that do not compress), in a fresh process whose Arrow pool saw nothing else."""
    n_rows, n_features = 262_144, 64
    X = np.random.default_rng(0).standard_normal((n_rows, n_features)).astype(np.float32)
    values = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), n_features)
    table = pa.table({"e": values, "y": np.arange(n_rows) % 3})
    pq.write_table(table, tmp_path / "big.parquet", row_group_size=n_rows, compression="none")
    script = (
        "import sys, pyarrow as pa, dask\n"
        "from dsoftmax.data.convert import convert_parquet\n"
        "with dask.config.set(scheduler='threads'):\n"
        "    convert_parquet(sys.argv[1], sys.argv[2], label_column='y', embedding_column='e')\n"
        "print(pa.default_memory_pool().max_memory())"
    )
    printed = run_in_fresh_process(script, tmp_path / "big.parquet", tmp_path / "o.zarr")
    row_group_bytes = X.nbytes
    assert int(printed.split()[-1]) < row_group_bytes / 2  # 83 MB when read whole


@pytest.mark.parametrize(
    "label_type",
    [pa.string(), pa.large_string(), pa.dictionary(pa.int8(), pa.string())],
    ids=["string", "large_string", "dictionary"],
)
def test_string_labels_over_batches_and_row_groups_keep_their_rows(tmp_path, label_type):
    """String labels are taken by Arrow's dictionary encoding; each batch of a dictionary
    column has a dictionary of its own, in its own order."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((2 * N_ROWS, 4)).astype(np.float32)
    names = np.array(["koala", "emu", "quokka", "wombat", ""])
    labels = names[rng.integers(0, len(names), 2 * N_ROWS)]
    labels[:64] = "wombat"  # a first batch that sees one label only
    values = pa.array(list(X), type=pa.list_(pa.float32(), 4))
    arrow_labels = pa.array(
        labels, type=label_type.value_type if pa.types.is_dictionary(label_type) else label_type
    )
    if pa.types.is_dictionary(label_type):
        arrow_labels = arrow_labels.dictionary_encode()
    pq.write_table(pa.table({"e": values, "y": arrow_labels}), tmp_path / "data.parquet",
                   row_group_size=N_ROWS)  # fmt: skip
    dataset = convert_parquet(
        tmp_path / "data.parquet", tmp_path / "out.zarr", label_column="y", embedding_column="e",
        chunk_rows=128,
    )  # fmt: skip
    assert dataset.classes.tolist() == sorted(names.tolist())
    np.testing.assert_array_equal(dataset.classes[dataset.y.compute()], labels)
    np.testing.assert_array_equal(dataset.X.compute(), X)


def test_converting_string_labels_does_not_import_pandas(tmp_path):
    """pyarrow converts strings to NumPy through pandas, a fifth of a small conversion's
    time; the converter takes them from Arrow's dictionary encoding instead."""
    X = np.zeros((N_ROWS, 4), np.float32)
    write(tmp_path / "data.parquet", X, np.array(["yes", "no", "maybe"])[np.arange(N_ROWS) % 3])
    script = (
        "import sys, dask\n"
        "from dsoftmax.data.convert import convert_parquet\n"
        "columns = dict(label_column='y', embedding_column='e')\n"
        "with dask.config.set(scheduler='threads'):\n"
        "    d = convert_parquet(sys.argv[1], sys.argv[2], **columns)\n"
        "print(d.classes.tolist(), 'pandas' in sys.modules)"
    )
    printed = run_in_fresh_process(script, tmp_path / "data.parquet", tmp_path / "o.zarr")
    assert printed.split("]")[-1].strip() == "False"
    assert printed.startswith("['maybe', 'no', 'yes']")
