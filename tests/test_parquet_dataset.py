"""Parquet files read as a dataset (:func:`dsoftmax.open_parquet`): the rows and classes a
conversion writes, fits with the bits of the converted store's (in this process and on real
``dask scheduler``/``dask worker`` processes), refusals with their rows, and the command line
(``train DATA.parquet --test TEST.parquet``, ``evaluate``, ``predict``)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import distributed
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse
import zarr
from daskprocs import DaskProcesses, dask_processes
from test_cli import assert_clean_success, assert_one_line_error, describe, run_cli_many

from dsoftmax import SoftmaxRegression, convert_parquet, open_parquet
from dsoftmax.data.convert import names_parquet
from dsoftmax.evaluation import evaluate_model

N_FEATURES = 6
ANIMALS = np.array(["cat", "dog", "eel"])


def _write_embeddings(
    folder: Path, n_rows: int, *, n_files: int = 2, row_group_size: int = 250, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n_files`` Parquet files of an embedding column and string labels that a linear model
    separates in part; returns the rows and labels in file order."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, N_FEATURES)).astype(np.float32)
    labels = ANIMALS[np.argmax(X[:, :3] + 0.5 * rng.standard_normal((n_rows, 3)), axis=1)]
    folder.mkdir(parents=True, exist_ok=True)
    for index, rows in enumerate(np.array_split(np.arange(n_rows), n_files)):
        flat = pa.array(X[rows].ravel())
        table = pa.table({
            "embedding": pa.FixedSizeListArray.from_arrays(flat, N_FEATURES),
            "label": pa.array(labels[rows]),
        })  # fmt: skip
        pq.write_table(table, folder / f"part-{index}.parquet", row_group_size=row_group_size)
    return X, labels


def _open(folder: Path):
    return open_parquet(folder, label_column="label", embedding_column="embedding")


@pytest.fixture(scope="module")
def parquet_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    folder = tmp_path_factory.mktemp("parquet") / "train"
    X, labels = _write_embeddings(folder, 2000)
    return folder, X, labels


def test_open_parquet_reads_the_rows_and_classes_a_conversion_writes(parquet_folder, tmp_path):
    folder, X, labels = parquet_folder
    dataset = _open(folder)
    converted = convert_parquet(
        folder, tmp_path / "c.zarr", label_column="label", embedding_column="embedding"
    )
    assert dataset.chunk_rows == (250,) * 8  # a block per row group
    assert dataset.dtype == np.float32 and dataset.y.dtype == np.int32
    np.testing.assert_array_equal(dataset.X.compute(), X)
    np.testing.assert_array_equal(dataset.classes, converted.classes)
    np.testing.assert_array_equal(dataset.y.compute(), converted.y.compute())
    np.testing.assert_array_equal(dataset.classes[dataset.y.compute()], labels)
    assert dataset.fingerprint == _open(folder).fingerprint


def test_a_fit_on_parquet_has_the_bits_of_the_fit_on_its_converted_store(parquet_folder, tmp_path):
    folder, _, _ = parquet_folder
    converted = convert_parquet(
        folder, tmp_path / "c.zarr", label_column="label", embedding_column="embedding",
        chunk_rows=250,
    )  # fmt: skip
    on_files = SoftmaxRegression(l2=1e-3).fit(_open(folder))
    on_store = SoftmaxRegression(l2=1e-3).fit(converted)
    np.testing.assert_array_equal(on_files.coef_, on_store.coef_)
    np.testing.assert_array_equal(on_files.intercept_, on_store.intercept_)
    np.testing.assert_array_equal(on_files.classes_, ANIMALS)
    report = evaluate_model(on_files, _open(folder))
    assert report["n_samples"] == 2000
    assert report["accuracy"] == pytest.approx(evaluate_model(on_store, converted)["accuracy"])


def _write_sparse(path: Path, n_rows: int, n_features: int) -> None:
    """Rows of a few non-zeros as list columns of indices and values, string labels."""
    rng = np.random.default_rng(3)
    X = scipy.sparse.random(n_rows, n_features, density=0.02, format="csr", random_state=4,
                            dtype=np.float32)  # fmt: skip
    rows = [slice(X.indptr[i], X.indptr[i + 1]) for i in range(n_rows)]
    table = pa.table({
        "idx": pa.array([X.indices[r].astype(np.int64) for r in rows], pa.list_(pa.int64())),
        "val": pa.array([X.data[r] for r in rows], pa.list_(pa.float32())),
        "label": ANIMALS[rng.integers(3, size=n_rows)],
    })  # fmt: skip
    pq.write_table(table, path, row_group_size=500)


def test_sparse_rows_open_as_csr_blocks_with_the_bits_of_their_converted_store(tmp_path):
    from dsoftmax.data.convert import convert_parquet_sparse

    _write_sparse(tmp_path / "bow.parquet", 1500, 400)
    columns = {"label_column": "label", "index_column": "idx", "value_column": "val"}
    dataset = open_parquet(tmp_path / "bow.parquet", n_features=400, **columns)
    converted = convert_parquet_sparse(
        tmp_path / "bow.parquet", tmp_path / "bow.zarr", n_features=400, chunk_rows=500,
        **columns,
    )  # fmt: skip
    assert dataset.layout == "csr" and dataset.chunk_rows == (500, 500, 500)
    assert scipy.sparse.issparse(dataset.X.blocks[0].compute())
    np.testing.assert_array_equal(dataset.y.compute(), converted.y.compute())
    on_files = SoftmaxRegression(l2=1e-3).fit(dataset)
    np.testing.assert_array_equal(on_files.coef_, SoftmaxRegression(l2=1e-3).fit(converted).coef_)
    with pytest.raises(ValueError, match="value_column and n_features describe sparse rows"):
        open_parquet(tmp_path / "bow.parquet", label_column="label", value_column="val")
    with pytest.raises(ValueError, match=r"index_column .* or feature_columns"):
        open_parquet(tmp_path / "bow.parquet", embedding_column="val", **columns)


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskProcesses]:
    with dask_processes(n_workers=2) as procs:
        yield procs


@pytest.mark.parametrize("hold", ["memory", "stream"])
def test_workers_read_the_row_groups_and_fit_the_same_bits(parquet_folder, cluster, hold):
    folder, _, _ = parquet_folder
    here = SoftmaxRegression(l2=1e-3).fit(_open(folder))
    with distributed.Client(cluster.address, set_as_default=False) as client:
        there = SoftmaxRegression(l2=1e-3, client=client, hold_data=hold).fit(_open(folder))
        report = evaluate_model(there, _open(folder), client=client)
    np.testing.assert_array_equal(there.coef_, here.coef_)
    assert report["n_samples"] == 2000


def test_parquet_files_on_an_object_store_fit_as_the_local_ones(parquet_folder, s3_storage_options):
    import fsspec

    folder, _, _ = parquet_folder
    bucket, options = s3_storage_options
    fs = fsspec.filesystem("s3", **options)
    for path in sorted(folder.glob("*.parquet")):
        fs.put_file(str(path), f"{bucket}/train/{path.name}")
    remote = open_parquet(
        f"{bucket}/train/*.parquet", label_column="label", embedding_column="embedding",
        storage_options=options,
    )  # fmt: skip
    local = _open(folder)
    assert remote.chunk_rows == local.chunk_rows and remote.url == f"{bucket}/train/*.parquet"
    np.testing.assert_array_equal(
        SoftmaxRegression(l2=1e-3).fit(remote).coef_, SoftmaxRegression(l2=1e-3).fit(local).coef_
    )
    fs.put_file(str(folder / "part-0.parquet"), f"{bucket}/train/part-1.parquet")
    assert open_parquet(
        f"{bucket}/train/", label_column="label", embedding_column="embedding",
        storage_options=options,
    ).fingerprint != remote.fingerprint  # fmt: skip


def test_a_missing_label_is_refused_at_open_with_its_row(tmp_path):
    table = pa.table({"a": [0.5, 1.5, 2.5, 3.5], "label": ["x", None, "y", None]})
    pq.write_table(table, tmp_path / "part.parquet")
    with pytest.raises(ValueError, match=r"missing in 2 row\(s\), first in row 1;.*open the "):
        open_parquet(tmp_path / "part.parquet", label_column="label")


def test_a_nan_feature_is_refused_by_the_fit_with_its_row(tmp_path):
    values = np.arange(40, dtype=np.float64)
    values[27] = np.nan
    table = pa.table({"a": values, "b": values * 2, "label": np.arange(40) % 2})
    pq.write_table(table, tmp_path / "part.parquet", row_group_size=10)
    dataset = open_parquet(tmp_path / "part.parquet", label_column="label")
    assert dataset.dtype == np.float64 and list(dataset.classes) == [0, 1]
    with pytest.raises(ValueError, match=r"non-finite value\(s\).*first in row 27"):
        SoftmaxRegression().fit(dataset)


def test_files_that_change_after_open_are_refused_by_the_read(tmp_path):
    folder = tmp_path / "data"
    _write_embeddings(folder, 400, n_files=1)
    dataset = _open(folder)
    table = pq.read_table(folder / "part-0.parquet")
    relabelled = table.set_column(1, "label", pa.array(["fox"] * table.num_rows))
    pq.write_table(relabelled, folder / "part-0.parquet", row_group_size=250)
    assert _open(folder).fingerprint != dataset.fingerprint
    with pytest.raises(ValueError, match=r"changed since it was opened.*'fox'"):
        dataset.y.compute()


def test_a_damaged_row_group_is_named_by_the_read(tmp_path):
    folder = tmp_path / "data"
    _write_embeddings(folder, 400, n_files=1, row_group_size=200)
    dataset = _open(folder)
    path = folder / "part-0.parquet"
    data = bytearray(path.read_bytes())
    data[4:-4000] = bytes(len(data) - 4004)  # the pages zeroed, the footer kept
    path.write_bytes(bytes(data))
    with pytest.raises(OSError, match=r"cannot read '\S+part-0\.parquet' \(row group 0\)"):
        dataset.X.blocks[0].compute()


def test_a_parquet_argument_is_told_from_a_zarr_store(parquet_folder, tmp_path):
    folder, _, _ = parquet_folder
    store = convert_parquet(
        folder, tmp_path / "store", label_column="label", embedding_column="embedding"
    )
    assert names_parquet(folder) and names_parquet(str(folder / "*.parquet"))
    assert names_parquet("s3://bucket/test/part-0.pq")
    assert not names_parquet(store.url) and not names_parquet(tmp_path / "missing")
    assert not names_parquet("s3://bucket/train.zarr")


# ------------------------------------------------------------------------------ command line
COLUMNS = ("--label-column", "label", "--embedding-column", "embedding")


def test_train_and_evaluate_read_parquet_files_as_they_are(parquet_folder, tmp_path):
    folder, _, _ = parquet_folder
    test_folder = tmp_path / "test"
    _write_embeddings(test_folder, 600, n_files=1, seed=1)
    model = tmp_path / "model"
    (trained,) = run_cli_many(
        ("train", folder, "--model", model, "--test", test_folder / "*.parquet", *COLUMNS)
    )
    (evaluated,) = run_cli_many(("evaluate", model, test_folder, *COLUMNS))
    assert_clean_success(trained)
    assert_clean_success(evaluated)
    assert re.search(r"trained lbfgs on 2000 rows", trained.stdout), describe(trained)
    assert trained.stdout.split("on the test data:\n", 1)[1] == evaluated.stdout
    assert re.search(r"^samples:\s+600$", evaluated.stdout, flags=re.MULTILINE)
    assert re.search(r"^\s+eel\s", evaluated.stdout, flags=re.MULTILINE), describe(evaluated)
    out = tmp_path / "predictions.zarr"
    (predicted,) = run_cli_many(("predict", model, test_folder, "--out", out, *COLUMNS))
    assert_clean_success(predicted)
    expected = SoftmaxRegression.load(model).predict(_open(test_folder)).compute()
    np.testing.assert_array_equal(zarr.open_group(out, mode="r")["predictions"][:], expected)


def test_train_reads_sparse_parquet_rows_with_index_column(tmp_path):
    _write_sparse(tmp_path / "bow.parquet", 1500, 400)
    sparse = ("--label-column", "label", "--index-column", "idx", "--value-column", "val")
    (trained,) = run_cli_many(("train", tmp_path / "bow.parquet", "--model", tmp_path / "model",
                               "--test", tmp_path / "bow.parquet", *sparse))  # fmt: skip
    assert_clean_success(trained)
    assert re.search(r"trained lbfgs on 1500 rows", trained.stdout), describe(trained)
    assert re.search(r"^samples:\s+1500$", trained.stdout, flags=re.MULTILINE), describe(trained)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ((), r"'\S+train' names Parquet files: give their label column with --label-column"),
        (("--label-column", "label", "--index-column", "i", "--embedding-column", "embedding"),
         r"--index-column reads sparse rows; .* give one kind"),
        (("--label-column", "label", "--value-column", "v"),
         r"--value-column and --n-features go with --index-column"),
    ],
)  # fmt: skip
def test_parquet_columns_that_cannot_go_together_are_a_usage_error(
    parquet_folder, tmp_path, options, message
):
    folder, _, _ = parquet_folder
    (result,) = run_cli_many(("train", folder, "--model", tmp_path / "model", *options))
    assert_one_line_error(result, 2, message)
    assert not os.path.exists(tmp_path / "model")


def test_column_options_without_parquet_data_are_named_ignored(parquet_folder, tmp_path):
    folder, _, _ = parquet_folder
    store = tmp_path / "store.zarr"
    convert_parquet(folder, store, label_column="label", embedding_column="embedding")
    (result,) = run_cli_many(
        ("train", store, "--model", tmp_path / "model", "--label-column", "label")
    )
    assert result.returncode == 0, describe(result)
    assert result.stderr == (
        "dsoftmax: warning: --label-column is ignored without Parquet data (it describes the "
        "columns of Parquet files)\n"
    ), describe(result)


@pytest.mark.parametrize(
    ("argv", "ignored"),
    [
        (("evaluate", "m", "{parquet}", "--label-column", "label", "--read-retries", "5"),
         ["--read-retries is ignored with Parquet data (it retries the chunk reads of a Zarr "
          "dataset)"]),
        (("evaluate", "m", "{store}", "--read-retries", "5"), []),
        (("train", "{store}", "--model", "m", "--test", "{parquet}", "--label-column", "label",
          "--read-retries", "5"), []),
        (("plot", "m", "--out", "x.png", "--embedding-column", "e"),
         ["--embedding-column is ignored without Parquet data (it describes the columns of "
          "Parquet files)"]),
    ],
)  # fmt: skip
def test_options_for_the_other_kind_of_data_are_named_ignored(parquet_folder, tmp_path, argv,
                                                              ignored):  # fmt: skip
    from dsoftmax.cli.ignored import ignored_options
    from dsoftmax.cli.parser import build_parser, given_options

    (tmp_path / "store.zarr").mkdir()
    (tmp_path / "store.zarr" / "zarr.json").write_text("{}")
    paths = {"parquet": parquet_folder[0], "store": tmp_path / "store.zarr"}
    argv = [str(arg).format(**paths) for arg in argv]
    args = build_parser().parse_args(argv)
    args.given_options = given_options(argv)
    assert ignored_options(args) == ignored
