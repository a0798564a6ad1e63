"""Sparse features end to end: fits on scipy.sparse input, converted svmlight files and sparse
Zarr stores reach scikit-learn's optimum; the dense and the sparse paths give the same model;
minibatch solvers on sparse blocks resume exactly and do not depend on the worker count; the
sparse store is checked on open and on read."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.sparse
import zarr
from distributed import Client, LocalCluster
from sklearn.datasets import dump_svmlight_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from dsoftmax import SoftmaxRegression, l2_from_sklearn_C, open_dataset, write_dataset
from dsoftmax.data import make_bag_of_words
from dsoftmax.data.convert import convert_svmlight
from dsoftmax.objective import Params, loss_and_grad

C = 10.0


def _cluster(n_workers: int) -> LocalCluster:
    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit="1GiB",
    )


@pytest.fixture(scope="module")
def bag():
    """Hashed-text rows: 1,500 documents, 2,048 columns, 4 classes, ~25 words each."""
    return make_bag_of_words(1500, 2**11, 4, nnz_per_row=25, seed=1, dtype="float64")


@pytest.fixture(scope="module")
def reference(bag):
    X, y = bag
    model = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X, y)
    l2 = l2_from_sklearn_C(C, X.shape[0])
    return _objective(model, X, y, l2), l2


def _objective(model, X, y, l2):
    params = Params(model.coef_, model.intercept_)
    return loss_and_grad(params, X.toarray(), y, l2)[0]


def _fit(X, y=None, l2=1e-4, **params):
    return SoftmaxRegression(l2=l2, tol=1e-10, max_iter=2000, **params).fit(X, y)


def _quiet(model, X, y=None, **fit_params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, **fit_params)


# ------------------------------------------------------------------------ the optimum
def test_in_memory_csr_reaches_sklearns_optimum_and_every_format_gives_the_same_bits(
    bag, reference
):
    X, y = bag
    expected, l2 = reference
    model = _fit(X, y, l2)
    assert abs(_objective(model, X, y, l2) - expected) / expected < 1e-7
    few_steps = _quiet(SoftmaxRegression(l2=l2, max_iter=3), X, y)
    for other in (X.tocsc(), X.tocoo(), scipy.sparse.csr_array(X)):
        again = _quiet(SoftmaxRegression(l2=l2, max_iter=3), other, y)
        np.testing.assert_array_equal(again.coef_, few_steps.coef_)
    predicted = model.predict_proba(X.tocsc())
    np.testing.assert_allclose(predicted, model.predict_proba(X.toarray()), rtol=1e-12)
    assert model.decision_function(X[:5]).shape == (5, 4)


def test_the_dense_and_the_sparse_paths_give_the_same_model(bag, reference):
    X, y = bag
    _, l2 = reference
    sparse, dense = _fit(X, y, l2), _fit(X.toarray(), y, l2)
    # Both stop at the same optimum; rarely seen hashed columns leave it flat to within 1e-5.
    assert _objective(sparse, X, y, l2) == pytest.approx(_objective(dense, X, y, l2), rel=1e-12)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, rtol=0, atol=1e-4)
    np.testing.assert_allclose(sparse.intercept_, dense.intercept_, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(sparse.predict(X), dense.predict(X.toarray()))


def test_a_converted_svmlight_file_reaches_sklearns_optimum(bag, reference, tmp_path):
    X, y = bag
    expected, l2 = reference
    source = tmp_path / "bag.svm"
    dump_svmlight_file(X, y, str(source), zero_based=True)
    dataset = convert_svmlight(
        str(source), tmp_path / "bag.zarr", n_features=X.shape[1], zero_based=True,
        dtype="float64", chunk_rows=400,
    )  # fmt: skip
    assert dataset.layout == "csr"
    model = _fit(dataset, l2=l2)
    assert abs(_objective(model, X, y, l2) - expected) / expected < 1e-7


@pytest.mark.cluster
@pytest.mark.slow
def test_a_sparse_store_on_two_workers_reaches_sklearns_optimum(bag, reference, tmp_path):
    X, y = bag
    expected, l2 = reference
    dataset = write_dataset(tmp_path / "bag.zarr", X, y, chunk_rows=400)
    with _cluster(2) as cluster, Client(cluster, set_as_default=False) as client:
        model = _fit(dataset, l2=l2, client=client)
        predicted = model.predict(dataset)
    assert abs(_objective(model, X, y, l2) - expected) / expected < 1e-7
    np.testing.assert_array_equal(np.asarray(predicted), _fit(X, y, l2).predict(X))


def test_dask_arrays_of_sparse_chunks_store_what_scipy_input_stores(bag, tmp_path):
    X, y = bag
    chunked = da.from_array(X, chunks=(250, -1), asarray=False)
    from_dask = write_dataset(tmp_path / "dask.zarr", chunked, y, chunk_rows=400)
    from_scipy = write_dataset(tmp_path / "scipy.zarr", X, y, chunk_rows=400)
    assert from_dask.fingerprint == from_scipy.fingerprint
    stored = from_dask.X.compute()
    assert scipy.sparse.issparse(stored) and (stored != X).nnz == 0
    one, other = (_quiet(SoftmaxRegression(max_iter=3), data) for data in (from_dask, from_scipy))
    np.testing.assert_array_equal(one.coef_, other.coef_)


# ------------------------------------------------------------------- minibatch solvers
SGD = {"solver": "sgd", "learning_rate": 0.5, "momentum": 0.9, "batch_size": 128, "l2": 1e-4}
ADAM = {"solver": "adam", "learning_rate": 0.02, "batch_size": 128, "l2": 1e-4}


@pytest.mark.cluster
@pytest.mark.parametrize("solver", [SGD, ADAM], ids=["sgd", "adam"])
@pytest.mark.slow
def test_minibatches_on_sparse_blocks_are_bit_identical_on_1_2_and_3_workers(bag, tmp_path, solver):
    X, y = bag
    dataset = write_dataset(tmp_path / "bag.zarr", X, y, chunk_rows=300)
    in_process = _quiet(SoftmaxRegression(random_state=0, max_iter=3, **solver), dataset)
    assert in_process.score(X, y) > 0.4  # four classes: chance is 1/4
    for n_workers in (1, 2, 3):
        with _cluster(n_workers) as cluster, Client(cluster, set_as_default=False) as client:
            model = SoftmaxRegression(random_state=0, max_iter=3, client=client, **solver)
            _quiet(model, dataset)
        np.testing.assert_array_equal(model.coef_, in_process.coef_, err_msg=f"{n_workers}")
        assert model.loss_curve_ == in_process.loss_curve_


@pytest.mark.parametrize("solver", [SGD, ADAM], ids=["sgd", "adam"])
def test_a_resumed_sparse_fit_is_bit_identical(bag, tmp_path, solver):
    X, y = bag
    reference = _quiet(SoftmaxRegression(random_state=0, max_iter=4, **solver), X, y)
    checkpoints = str(tmp_path / "ckpt")
    first = SoftmaxRegression(
        random_state=0, max_iter=2, checkpoint_dir=checkpoints, checkpoint_every=5, **solver
    )
    _quiet(first, X, y)
    resumed = SoftmaxRegression(
        random_state=0, max_iter=4, checkpoint_dir=checkpoints, checkpoint_every=5, **solver
    )
    _quiet(resumed, X, y, resume=True)
    np.testing.assert_array_equal(resumed.coef_, reference.coef_)
    assert resumed.loss_curve_ == reference.loss_curve_


# -------------------------------------------------------------------- the stored form
def test_the_store_holds_row_blocks_of_csr_close_to_the_csr_bytes(bag, tmp_path):
    X, y = bag
    dataset = write_dataset(tmp_path / "bag.zarr", X.astype(np.float32), y, chunk_rows=400,
                            codec="none")  # fmt: skip
    group = zarr.open_group(str(tmp_path / "bag.zarr"), mode="r")
    data, indices = group["X/data"], group["X/indices"]
    assert data.shape[0] == indices.shape[0] == 4 and data.chunks == (1, data.shape[1])
    assert indices.dtype == np.int32 and data.dtype == np.float32
    csr_bytes = X.nnz * (4 + 4) + (X.shape[0] + 1) * 4
    stored = sum(group[name].nbytes for name in ("X/data", "X/indices", "X/row_nnz"))
    assert stored <= 1.5 * csr_bytes
    assert dataset.layout == "csr" and dataset.X.shape == X.shape


def test_more_than_2_31_features_store_int64_indices(tmp_path):
    n_features = 2**31 + 7
    X = scipy.sparse.csr_matrix(
        (np.ones(3), np.array([0, 2**31 + 1, n_features - 1], dtype=np.int64),
         np.array([0, 1, 3], dtype=np.int64)), shape=(2, n_features),
    )  # fmt: skip
    dataset = write_dataset(tmp_path / "wide.zarr", X, np.array([0, 1]))
    group = zarr.open_group(str(tmp_path / "wide.zarr"), mode="r")
    assert group["X/indices"].dtype == np.int64
    stored = dataset.X.compute()
    np.testing.assert_array_equal(stored.indices, X.indices)
    assert stored.shape == (2, n_features)


def _tamper(path, name, position, value):
    array = zarr.open_array(str(path / name), mode="r+")
    chunk = array[:]
    chunk[position] = value
    array[:] = chunk


@pytest.mark.parametrize(
    ("name", "position", "value", "message"),
    [
        ("X/indices", (0, 1), 10_000, r"column index"),
        ("X/indices", (0, 1), 0, r"sorted|increasing"),
        ("X/data", (0, 2), np.nan, r"non-finite|NaN"),
        ("X/row_nnz", (0,), 10_000, r"row_nnz|values"),
    ],
    ids=["index out of range", "unsorted", "nan", "row counts"],
)
def test_a_damaged_sparse_store_is_refused_naming_the_block(tmp_path, name, position, value,
                                                            message):  # fmt: skip
    X, y = make_bag_of_words(200, 64, 2, nnz_per_row=8, dtype="float64")
    write_dataset(tmp_path / "s.zarr", X, y, chunk_rows=100)
    _tamper(tmp_path / "s.zarr", name, position, value)
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression().fit(open_dataset(tmp_path / "s.zarr"))


def test_a_missing_chunk_is_named_on_open(tmp_path):
    X, y = make_bag_of_words(200, 64, 2, nnz_per_row=8)
    write_dataset(tmp_path / "s.zarr", X, y, chunk_rows=100)
    chunk = next((tmp_path / "s.zarr" / "X" / "indices" / "c").rglob("*"))
    while chunk.is_dir():
        chunk = next(chunk.iterdir())
    chunk.unlink()
    with pytest.raises(ValueError, match=r"X/indices.*missing|missing.*X/indices"):
        open_dataset(tmp_path / "s.zarr")


def test_float16_storage_of_sparse_features_is_refused_with_the_fix(bag, tmp_path):
    X, y = bag
    with pytest.raises(TypeError, match=r"sparse X is stored in float32 or float64.*'float32'"):
        write_dataset(tmp_path / "h.zarr", X, y, dtype="float16")
    assert not (tmp_path / "h.zarr").exists()


def test_make_bag_of_words_is_seeded_canonical_and_learnable():
    X, y = make_bag_of_words(2000, 2**12, 3, nnz_per_row=40, seed=5)
    again, _ = make_bag_of_words(2000, 2**12, 3, nnz_per_row=40, seed=5)
    assert (X != again).nnz == 0 and X.has_canonical_format and X.dtype == np.float32
    assert 30 < X.nnz / X.shape[0] < 50
    np.testing.assert_allclose(scipy.sparse.linalg.norm(X, axis=1), 1.0, rtol=1e-6)
    model = SoftmaxRegression(l2=1e-5).fit(X[:1500], y[:1500])
    assert model.score(X[1500:], y[1500:]) > 0.5  # three classes: chance is 1/3
    with pytest.raises(ValueError, match=r"nnz_per_row must be an int >= 1, got 0"):
        make_bag_of_words(10, 10, 2, nnz_per_row=0)


# ------------------------------------------------------------------------ converters
def test_parquet_list_columns_convert_to_the_rows_they_list(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dsoftmax.data.convert import convert_parquet_sparse

    X, y = make_bag_of_words(300, 128, 3, nnz_per_row=10, dtype="float64")
    rows = [slice(X.indptr[i], X.indptr[i + 1]) for i in range(X.shape[0])]
    # Indices listed in reverse: the converter sorts each row.
    table = pa.table({
        "label": [f"topic-{k}" for k in y],
        "words": [X.indices[r][::-1].tolist() for r in rows],
        "weights": [X.data[r][::-1].tolist() for r in rows],
    })  # fmt: skip
    pq.write_table(table, tmp_path / "bow.parquet", row_group_size=100)
    dataset = convert_parquet_sparse(
        tmp_path / "bow.parquet", tmp_path / "bow.zarr", label_column="label",
        index_column="words", value_column="weights", n_features=128, dtype="float64",
        chunk_rows=100,
    )  # fmt: skip
    assert dataset.layout == "csr" and dataset.chunk_rows == (100, 100, 100)
    stored = dataset.X.compute()
    assert abs(stored - X).max() == 0 and stored.has_sorted_indices
    assert dataset.classes.tolist() == ["topic-0", "topic-1", "topic-2"]
    np.testing.assert_array_equal(dataset.y.compute(), y)


def test_dsoftmax_convert_stores_an_svmlight_file_sparse_and_fit_reads_it(tmp_path):
    from dsoftmax import cli

    X, y = make_bag_of_words(400, 2**12, 3, nnz_per_row=12, dtype="float64")
    dump_svmlight_file(X, y, str(tmp_path / "bow.svm"), zero_based=False)
    out = tmp_path / "bow.zarr"
    code = cli.main(["convert", str(tmp_path / "bow.svm"), "--out", str(out), "--layout",
                     "sparse", "--n-features", str(2**12), "--chunk-rows", "100"])  # fmt: skip
    assert code == 0
    dataset = open_dataset(out)
    assert dataset.layout == "csr" and dataset.n_nonzero == X.nnz
    assert abs(dataset.X.compute() - X.astype(np.float32)).max() < 1e-6


def test_a_model_of_compact_size_reaches_sklearns_optimum_by_the_compact_lbfgs(monkeypatch):
    import dsoftmax.optim.lbfgs as lbfgs

    X, y = make_bag_of_words(600, 2**16, 5, nnz_per_row=30, seed=2, dtype="float64")
    assert 5 * 2**16 >= lbfgs.COMPACT_MIN_PARAMS
    # scikit-learn fits these 327,680 weights with scipy's L-BFGS-B, dsoftmax in the compact form.
    sklearn_model = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(X, y)
    l2 = l2_from_sklearn_C(1.0, X.shape[0])
    expected = _objective(sklearn_model, X, y, l2)
    runs = []
    compact = lbfgs._minimize_compact

    def recorded(*args, **kwargs):
        result = compact(*args, **kwargs)
        runs.append(result)
        return result

    monkeypatch.setattr(lbfgs, "_minimize_compact", recorded)
    model = _fit(X, y, l2)
    assert len(runs) == 1 and runs[0].converged and runs[0].n_iter == model.n_iter_
    assert abs(_objective(model, X, y, l2) - expected) / expected < 1e-7
