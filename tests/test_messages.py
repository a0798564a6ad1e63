"""Messages that name the problem in dsoftmax's own words, not a library's, on real files."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from dsoftmax import SoftmaxRegression
from dsoftmax.data import (
    convert_csv,
    convert_parquet,
    convert_parquet_sparse,
    convert_svmlight,
    open_dataset,
    write_dataset,
)
from dsoftmax.persist import CheckpointError, ModelFileError


def _dataset(path: Path) -> str:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    write_dataset(path, X, rng.integers(0, 3, 200), chunk_rows=50)
    return str(path)


def _model(path: Path) -> str:
    rng = np.random.default_rng(0)
    model = SoftmaxRegression(max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning after 5 iterations
        model.fit(rng.normal(size=(60, 3)), rng.integers(0, 2, 60))
    model.save(str(path))
    return str(path)


# -- 1a: a missing CSV source ---------------------------------------------------------------


def test_a_missing_csv_source_is_named_before_anything_is_read(tmp_path, run_cli_here):
    missing = tmp_path / "missing.csv"
    with pytest.raises(FileNotFoundError, match=r"no such CSV file: '.*missing\.csv'"):
        convert_csv(missing, tmp_path / "a.zarr", label_column="label")
    with pytest.raises(FileNotFoundError, match=r"no CSV file matches '.*part-\*\.csv'"):
        convert_csv(str(tmp_path / "part-*.csv"), tmp_path / "a.zarr", label_column="label")
    code, _, err = run_cli_here(
        "convert", missing, "--out", tmp_path / "a.zarr", "--label-column", "label"
    )
    assert code == 1
    assert "no such CSV file" in err and "read_csv" not in err
    assert not (tmp_path / "a.zarr").exists()


# -- 1b: storage options beside a local path ------------------------------------------------


def test_storage_options_beside_local_paths_are_ignored_with_a_warning(tmp_path):
    url = _dataset(tmp_path / "d.zarr")
    with pytest.warns(UserWarning, match=r"storage_options are ignored for the local path"):
        data = open_dataset(url, storage_options={"anon": True})
    assert data.n_samples == 200
    model_path = _model(tmp_path / "m")
    with pytest.warns(UserWarning, match=r"ignored for the local path '.*m'"):
        SoftmaxRegression.load(model_path, storage_options={"anon": True})


# -- 1d: a file of a model passed as the model ------------------------------------------------


def test_a_file_inside_a_model_is_named_a_file_and_its_model_directory(tmp_path):
    model = _model(tmp_path / "m")
    with pytest.raises(ModelFileError) as caught:
        SoftmaxRegression.load(f"{model}/coef.npy")
    message = str(caught.value)
    assert re.search(r"'.*coef\.npy' is a file; a model or checkpoint is a directory", message)
    assert "manifest.json" in message and f"{str(tmp_path / 'm')!r}: pass that" in message
    assert "not a regular file" not in message


# -- 1e: values beyond float16's range ------------------------------------------------------

OVERFLOW = r"beyond float16's range \(±65504\), such as 1e\+06 in row {row}, column {column}"


def _csv_source(tmp_path: Path) -> tuple[str, dict]:
    path = tmp_path / "big.csv"
    path.write_text("a,b,label\n1.0,2.0,x\n3.0,1e6,y\n2.0,4.0,x\n")
    return str(path), {"label_column": "label"}


def _parquet_source(tmp_path: Path) -> tuple[str, dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "big.parquet"
    table = pa.table({"a": [1.0, 3.0, 2.0], "b": [2.0, 1e6, 4.0], "label": [0, 1, 0]})
    pq.write_table(table, path, row_group_size=1)
    return str(path), {"label_column": "label"}


def _svmlight_source(tmp_path: Path) -> tuple[str, dict]:
    path = tmp_path / "big.svm"
    path.write_text("0 1:1.0 2:2.0\n1 1:3.0 2:1e6\n0 1:2.0 2:4.0\n")
    return str(path), {"zero_based": False}


@pytest.mark.parametrize(
    "source, convert, column",
    [
        (_csv_source, convert_csv, "'b'"),
        (_parquet_source, convert_parquet, "'b'"),
        (_svmlight_source, convert_svmlight, "1"),
    ],
    ids=["csv", "parquet", "svmlight"],
)
def test_values_beyond_float16_are_named_not_called_non_finite(tmp_path, source, convert, column):
    path, options = source(tmp_path)
    # pytest turns warnings into errors: an "overflow encountered in cast" fails the test.
    with pytest.raises(ValueError, match=OVERFLOW.format(row=1, column=column)) as caught:
        convert(path, tmp_path / "out.zarr", dtype="float16", **options)
    assert "dtype='float32'" in str(caught.value)
    assert "non-finite" not in str(caught.value)
    assert not (tmp_path / "out.zarr").exists()


# -- 2: resuming a checkpoint made on other data --------------------------------------------


def test_the_other_data_message_quotes_each_value_whole(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(100, 4)), rng.integers(0, 3, 100)
    model = SoftmaxRegression(max_iter=2, checkpoint_dir=str(tmp_path / "ck"), checkpoint_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning after 2 iterations
        model.fit(X, y)
    with pytest.raises(CheckpointError, match="made on other data: its fingerprint") as caught:
        model.fit(X + 1.0, y, resume=True)
    message = str(caught.value)
    shown = re.findall(r"'([0-9a-f]+)'\.\.\. \(64 characters\)", message)
    assert len(shown) == 2 and shown[0] != shown[1]
    assert message.count("'") % 2 == 0, message


# -- 3: the window of blocks stream mode holds ----------------------------------------------


def test_the_stream_window_never_exceeds_the_blocks():
    from dsoftmax.engine.plan import WorkerMemory, window_blocks

    roomy = [WorkerMemory(address="w", limit=8 * 2**30, rss=0, threads=1)]
    assert window_blocks([10_000] * 4, roomy, work_bytes=0, budget_fraction=0.8) == 4
    unlimited = [WorkerMemory(address="w", limit=0, rss=0, threads=1)]
    assert window_blocks([10_000] * 2, unlimited, work_bytes=0, budget_fraction=0.8) == 2


def test_lbfgs_on_streamed_data_logs_no_minibatch_window(tmp_path, run_cli_here):
    url = _dataset(tmp_path / "d.zarr")
    code, _, err = run_cli_here(
        "train", url, "--model", tmp_path / "m", "--hold-data", "stream", "-v"
    )
    assert code == 0, err
    assert re.search(r"of rows in 4 blocks, streamed from the store$", err, re.M), err
    assert "minibatch" not in err


# -- 4: repeated feature indices of Parquet sparse rows -------------------------------------


def test_a_repeated_index_in_a_parquet_sparse_row_is_refused_as_svmlight_refuses_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "rows.parquet"
    table = pa.table(
        {
            "idx": [[0, 2], [3, 1, 3], [1]],
            "val": [[1.0, 2.0], [1.0, 2.0, 3.0], [5.0]],
            "label": [0, 1, 0],
        }
    )
    pq.write_table(table, path)
    with pytest.raises(
        ValueError, match=r"row 1 of '.*rows\.parquet' \(row group 0\) repeats feature index 3 "
        r"in 'idx' \(2 times\)",
    ):
        convert_parquet_sparse(
            path, tmp_path / "p.zarr", label_column="label", index_column="idx",
            value_column="val",
        )  # fmt: skip
    assert not (tmp_path / "p.zarr").exists()
    svmlight = tmp_path / "rows.svm"
    svmlight.write_text("0 1:1.0 3:2.0\n1 4:1.0 2:2.0 4:3.0\n0 2:5.0\n")
    with pytest.raises(ValueError, match="sorted and unique"):
        convert_svmlight(svmlight, tmp_path / "s.zarr", layout="sparse")
    # Indices in any order, each once, convert (sorted).
    pq.write_table(
        pa.table({"idx": [[2, 0], [3, 1]], "val": [[1.0, 2.0], [3.0, 4.0]], "label": [0, 1]}),
        tmp_path / "unsorted.parquet",
    )
    data = convert_parquet_sparse(
        tmp_path / "unsorted.parquet", tmp_path / "u.zarr", label_column="label",
        index_column="idx", value_column="val",
    )  # fmt: skip
    assert data.n_samples == 2
