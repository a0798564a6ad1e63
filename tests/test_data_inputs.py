"""The inputs of a fit: scikit-learn's wording for in-memory input, and Dask arrays from dask
dataframes, whose chunk sizes are unknown until computed, fit like any other."""

from __future__ import annotations

import logging

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from daskprocs import dask_processes
from distributed import Client

from dsoftmax import SoftmaxRegression
from dsoftmax.data.inputs import prepare_data

N_SAMPLES = 600
FEATURES = ["f0", "f1", "f2", "f3"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    X = rng.standard_normal((N_SAMPLES, len(FEATURES)))
    y = np.argmax(X @ rng.standard_normal((len(FEATURES), 3)), axis=1)
    data = pd.DataFrame(X, columns=FEATURES)
    # Integer labels: dask converts string columns to object arrays with a warning of its own.
    data["label"] = np.array([30, 10, 20])[y]
    return data


@pytest.fixture(scope="module")
def client():
    with (
        dask_processes(n_workers=2) as procs,
        Client(procs.address, set_as_default=False) as client,
    ):
        yield client


def unknown_sizes(frame: pd.DataFrame, how: str) -> tuple[da.Array, da.Array]:
    ddf = dd.from_pandas(frame, npartitions=4)
    if how == "values":
        return ddf[FEATURES].values, ddf["label"].values
    return ddf[FEATURES].to_dask_array(), ddf["label"].to_dask_array()


@pytest.mark.parametrize("how", ["values", "to_dask_array"])
def test_unknown_chunk_sizes_are_computed_once_with_a_debug_line(frame, how, caplog):
    X, y = unknown_sizes(frame, how)
    assert np.isnan(X.shape[0]) and np.isnan(y.shape[0])
    with caplog.at_level(logging.DEBUG, logger="dsoftmax"), dask.config.set(scheduler="sync"):
        prepared = prepare_data(X, y, None, None)
        assert prepared.X.chunks[0] == prepared.labels.chunks[0] == (150, 150, 150, 150)
        assert prepared.X.shape == (N_SAMPLES, len(FEATURES))
        np.testing.assert_array_equal(prepared.X.compute(), frame[FEATURES].to_numpy())
        assert prepared.classes.tolist() == [10, 20, 30]
    assert any("computing the row chunk sizes of 2" in record.message for record in caplog.records)


@pytest.mark.cluster
@pytest.mark.parametrize("how", ["values", "to_dask_array"])
def test_a_dask_dataframe_fits_like_its_numpy_arrays(frame, how, client):
    X, y = unknown_sizes(frame, how)
    lazy = SoftmaxRegression(l2=1e-3, client=client).fit(X, y)
    eager = SoftmaxRegression(l2=1e-3).fit(frame[FEATURES].to_numpy(), frame["label"].to_numpy())
    assert lazy.classes_.tolist() == eager.classes_.tolist() == [10, 20, 30]
    np.testing.assert_allclose(lazy.coef_, eager.coef_, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(
        lazy.predict(frame[FEATURES].to_numpy()), eager.predict(frame[FEATURES].to_numpy())
    )


def test_dask_weights_of_unknown_sizes_are_computed_too(frame):
    ddf = dd.from_pandas(frame.assign(w=1.0), npartitions=3)
    with dask.config.set(scheduler="sync"):
        prepared = prepare_data(
            ddf[FEATURES].values, ddf["label"].values, ddf["w"].values, None
        )
        assert prepared.sample_weight.chunks[0] == prepared.X.chunks[0]
        assert prepared.sample_weight.compute().sum() == N_SAMPLES


@pytest.mark.parametrize(
    ("X", "y", "match"),
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), [0, 1], r"Input X contains NaN"),
        (np.zeros((5, 2)), [0, 1, 0, 1],
         r"y has 4 rows but X has 5; .*Found input variables with inconsistent numbers of "
         r"samples: \[5, 4\]"),
        (np.zeros((3, 2)), [0.0, np.nan, 1.0], r"Input y contains NaN"),
        (np.zeros((3, 2)), [0.5, 1.5, 2.5], r"Unknown label type"),
    ],
    ids=["X-nan", "lengths", "y-nan", "continuous"],
)  # fmt: skip
def test_in_memory_input_errors_use_scikit_learns_wording(X, y, match):
    with pytest.raises(ValueError, match=match):
        prepare_data(X, np.asarray(y), None, None)


def test_lazy_lengths_use_the_same_wording():
    with pytest.raises(ValueError, match=r"y has 4 rows but X has 6; .*inconsistent numbers"):
        prepare_data(da.zeros((6, 2), chunks=3), da.zeros(4, chunks=2), None, None)


def test_the_fingerprint_of_in_memory_input_names_values_not_dtypes():
    X, y = np.arange(8.0).reshape(4, 2), np.array([0, 1, 1, 0])
    narrow = prepare_data(X, y, np.ones(4, np.float32), None)
    wide = prepare_data(X, y, np.ones(4), None)
    assert narrow.fingerprint() == wide.fingerprint()
    assert prepare_data(X, y[::-1].copy(), None, None).fingerprint() != wide.fingerprint()


@pytest.mark.parametrize(
    ("n_rows", "block_rows"),
    [(1, 1), (5_000, 5_000), (16_383, 16_383), (16_384, 8_192), (20_000, 10_000),
     (100_000, 25_000), (200_000, 50_000), (1_000_000, 62_500), (4_250_000, 62_500)],
)  # fmt: skip
def test_auto_blocks_are_equal_at_most_the_default_and_in_fours_or_twos(n_rows, block_rows):
    from dsoftmax.data.inputs import balanced_block_rows
    from dsoftmax.defaults import DEFAULT_CHUNK_ROWS, MIN_BALANCED_BLOCK_ROWS

    assert balanced_block_rows(n_rows) == block_rows
    n_blocks = -(-n_rows // block_rows)
    assert block_rows <= DEFAULT_CHUNK_ROWS
    assert n_blocks in (1, 2) or n_blocks % 4 == 0
    assert n_blocks == 1 or block_rows >= MIN_BALANCED_BLOCK_ROWS


def test_an_auto_chunked_fit_is_the_fit_of_its_balanced_blocks():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20_000, 8))
    y = (X[:, 0] + 0.3 * rng.standard_normal(20_000) > 0).astype(int)
    auto = SoftmaxRegression().fit(X, y)
    assert auto.get_params()["chunk_rows"] == "auto"
    halves = SoftmaxRegression(chunk_rows=10_000).fit(X, y)
    np.testing.assert_array_equal(auto.coef_, halves.coef_)
    np.testing.assert_array_equal(auto.intercept_, halves.intercept_)
