"""Tests of how dataset chunks are stored: ``codec="auto"`` (the default) keeps continuous
features uncompressed and compresses structured ones, from a sample of the first rows, the same
way in every writer (``write_dataset``, ``make_classification``, the Parquet and CSV converters,
on threads and on a cluster), with the values and the fingerprint independent of the codec; and
the fast finite-value check behind every block's value checks."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from dsoftmax.data import make_classification, open_dataset, write_dataset
from dsoftmax.data.convert import convert_csv, convert_parquet
from dsoftmax.data.convert.pipeline import ConversionPlan, Piece, PieceRows, run_conversion
from dsoftmax.data.values import all_finite
from dsoftmax.data.write import feature_codec
from tests.daskprocs import small_local_cluster


def stored_codecs(path: Path) -> dict[str, str]:
    """Each array's compressor, as its Zarr metadata names it ("none" for no compressor)."""
    group = zarr.open_group(str(path), mode="r")
    found = {}
    for name in ("X", "y"):
        compressors = group[name].compressors
        found[name] = type(compressors[0]).__name__ if compressors else "none"
    return found


def continuous(n_rows: int, n_features: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_rows, n_features)).astype(np.float32)


def quantized(n_rows: int, n_features: int = 16, seed: int = 0) -> np.ndarray:
    """Values with two decimals, as tabular features often are."""
    return np.round(continuous(n_rows, n_features, seed), 2)


def write_embeddings(path: Path, X: np.ndarray, labels: np.ndarray, row_group_rows: int) -> None:
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])
    pq.write_table(
        pa.table({"embedding": embedding, "label": labels}), path, row_group_size=row_group_rows
    )


def test_feature_codec_compresses_only_what_shrinks_by_a_fifth(caplog):
    assert feature_codec("auto", continuous(2000)) == "none"
    assert feature_codec("auto", quantized(2000)) == "zstd"
    assert feature_codec("auto", np.zeros((100, 8))) == "zstd"
    assert feature_codec("auto", np.zeros((0, 8), dtype=np.float32)) == "zstd"
    for given in ("zstd", "lz4", "none"):
        assert feature_codec(given, continuous(100)) == given
    with caplog.at_level(logging.INFO, logger="dsoftmax"):
        feature_codec("auto", continuous(500))
    assert "X is stored uncompressed" in caplog.text


@pytest.mark.parametrize("as_dask", [False, True])
def test_write_dataset_chooses_per_features_and_keeps_values_and_fingerprint(tmp_path, as_dask):
    labels = np.arange(3000) % 3
    for name, X in (("continuous", continuous(3000)), ("quantized", quantized(3000))):
        given = dask.array.from_array(X, chunks=1000) if as_dask else X
        auto = write_dataset(tmp_path / f"{name}.zarr", given, labels, chunk_rows=1000)
        zstd = write_dataset(
            tmp_path / f"{name}-zstd.zarr", X, labels, chunk_rows=1000, codec="zstd"
        )
        expected = "none" if name == "continuous" else "ZstdCodec"
        assert stored_codecs(tmp_path / f"{name}.zarr") == {"X": expected, "y": "ZstdCodec"}
        assert auto.fingerprint == zstd.fingerprint
        np.testing.assert_array_equal(auto.X.compute(), X)


def test_make_classification_stores_its_gaussian_features_uncompressed(tmp_path):
    auto = make_classification(tmp_path / "auto.zarr", 3000, 8, 3, chunk_rows=1000)
    zstd = make_classification(tmp_path / "zstd.zarr", 3000, 8, 3, chunk_rows=1000, codec="zstd")
    assert stored_codecs(tmp_path / "auto.zarr") == {"X": "none", "y": "ZstdCodec"}
    assert stored_codecs(tmp_path / "zstd.zarr")["X"] == "ZstdCodec"
    assert auto.fingerprint == zstd.fingerprint


def test_parquet_auto_codec_decides_from_the_first_rows_even_after_empty_row_groups(tmp_path):
    X = quantized(4000)
    labels = np.arange(4000) % 5
    write_embeddings(tmp_path / "a.parquet", X[:0], labels[:0], 10)  # no rows at all
    write_embeddings(tmp_path / "b.parquet", X, labels, 700)
    sources = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    options = {"label_column": "label", "embedding_column": "embedding", "chunk_rows": 1000}
    auto = convert_parquet(sources, tmp_path / "auto.zarr", **options)
    plain = convert_parquet(sources, tmp_path / "none.zarr", codec="none", **options)
    assert stored_codecs(tmp_path / "auto.zarr") == {"X": "ZstdCodec", "y": "ZstdCodec"}
    assert stored_codecs(tmp_path / "none.zarr") == {"X": "none", "y": "none"}
    assert auto.fingerprint == plain.fingerprint
    np.testing.assert_array_equal(auto.X.compute(), X)
    np.testing.assert_array_equal(auto.classes[auto.y.compute()], labels)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("known", [True, False])
def test_auto_codec_waits_for_the_first_rows_past_more_empty_pieces_than_the_window(
    tmp_path, known
):
    X = quantized(300, 4)
    empty = PieceRows(X[:0], np.zeros(0, np.int64))

    pieces = [Piece("p", 0 if known else None, 1, index) for index in range(6)]
    pieces.append(Piece("p", 300 if known else None, 1, 6))
    plan = ConversionPlan("label", 4, np.dtype(np.float32), list("abcd"), "pieces", 100, "auto")
    dataset = run_conversion(
        functools.partial(_rows_of, empty, PieceRows(X, np.arange(300) % 3)), pieces, plan,
        str(tmp_path / "out.zarr"), storage_options=None, overwrite=False,
    )  # fmt: skip
    assert stored_codecs(tmp_path / "out.zarr") == {"X": "ZstdCodec", "y": "ZstdCodec"}
    np.testing.assert_array_equal(dataset.X.compute(), X)


def _rows_of(empty: PieceRows, rows: PieceRows, piece: Piece) -> PieceRows:
    return empty if piece.spec < 6 else rows


def test_csv_auto_codec_on_a_source_of_unknown_length(tmp_path):
    X = np.random.default_rng(4).standard_normal((3000, 4))  # float64: every bit is noise
    frame = pd.DataFrame(X, columns=list("abcd")).assign(label=np.arange(3000) % 4)
    frame.to_csv(tmp_path / "data.csv", index=False, float_format="%.17g")
    dataset = convert_csv(
        tmp_path / "data.csv", tmp_path / "out.zarr", label_column="label", blocksize=20_000,
        chunk_rows=512,
    )  # fmt: skip
    assert stored_codecs(tmp_path / "out.zarr") == {"X": "none", "y": "ZstdCodec"}
    np.testing.assert_array_equal(dataset.X.compute(), X)


@pytest.mark.cluster
def test_parquet_auto_codec_on_a_cluster_matches_threads(tmp_path):
    X = continuous(6000, 32)
    labels = np.arange(6000) % 3
    source = tmp_path / "source"
    source.mkdir()
    for index in range(3):
        rows = slice(2000 * index, 2000 * (index + 1))
        write_embeddings(source / f"part-{index}.parquet", X[rows], labels[rows], 1000)
    options = {"label_column": "label", "embedding_column": "embedding", "chunk_rows": 1000}
    threads = convert_parquet(source, tmp_path / "threads.zarr", **options)
    with small_local_cluster(2) as cluster, cluster.get_client() as client:
        on_cluster = convert_parquet(source, tmp_path / "cluster.zarr", client=client, **options)
    for path in ("threads.zarr", "cluster.zarr"):
        assert stored_codecs(tmp_path / path) == {"X": "none", "y": "ZstdCodec"}
    assert on_cluster.fingerprint == threads.fingerprint
    np.testing.assert_array_equal(open_dataset(tmp_path / "cluster.zarr").X.compute(), X)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_all_finite_finds_each_non_finite_value_and_not_overflowing_sums(dtype):
    big = np.finfo(dtype).max
    X = np.full((6, 5), big / 2, dtype=dtype)  # every row's sum overflows, every value finite
    assert all_finite(X)
    assert all_finite(np.zeros((0, 3), dtype=dtype))
    for value in (np.nan, np.inf, -np.inf):
        for row, column in ((0, 0), (3, 2), (5, 4)):
            bad = X.copy()
            bad[row, column] = value
            assert not all_finite(bad)
            assert not all_finite(np.asfortranarray(bad[:, ::-1]))
    mixed = np.ones((4, 3), dtype=dtype)
    mixed[1, 0], mixed[1, 2] = np.inf, -np.inf  # a row whose infinities cancel to NaN
    assert not all_finite(mixed)
