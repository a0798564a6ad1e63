"""SoftmaxRegression against scikit-learn's optimum, on NumPy and on real worker processes."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight

from dsoftmax import (
    SoftmaxRegression,
    l2_from_sklearn_C,
    make_classification,
    open_dataset,
    write_dataset,
)
from dsoftmax.objective import Params, loss_and_grad, softmax
from dsoftmax.persist import ModelFileError


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def cluster_client():
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="1GiB",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


def _objective(model_or_params, X, y, l2):
    if isinstance(model_or_params, Params):
        params = model_or_params
    else:
        params = Params(model_or_params.coef_, model_or_params.intercept_)
    return loss_and_grad(params, X, np.searchsorted(np.unique(y), y), l2)[0]


@pytest.fixture(scope="module")
def sklearn_digits(digits):
    X, y = digits
    C = 0.5
    reference = LogisticRegression(C=C, tol=1e-12, max_iter=20_000).fit(X, y)
    return reference, l2_from_sklearn_C(C, X.shape[0])


def _centered(intercept):
    return intercept - intercept.mean()


@pytest.mark.cluster
@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_lbfgs_reaches_sklearn_optimum_on_digits(digits, sklearn_digits, cluster_client, where):
    X, y = digits
    reference, l2 = sklearn_digits
    client = cluster_client if where == "cluster" else None
    X_in = da.from_array(X, chunks=(300, -1)) if client else X
    model = SoftmaxRegression(l2=l2, tol=1e-10, max_iter=1000, client=client).fit(X_in, y)
    expected = _objective(reference, X, y, l2)
    assert abs(_objective(model, X, y, l2) - expected) / expected < 1e-7
    assert np.max(np.abs(model.coef_ - reference.coef_)) < 1e-4
    assert np.max(np.abs(model.intercept_ - _centered(reference.intercept_))) < 1e-4
    np.testing.assert_array_equal(
        model.predict(X_in if client is None else X), reference.predict(X)
    )
    # Stationarity in the intercept: predicted and observed class totals agree.
    probs = softmax(X @ model.coef_.T + model.intercept_)
    np.testing.assert_allclose(probs.sum(axis=0), np.bincount(y), atol=1e-4)


def test_sample_and_class_weights_match_sklearn(digits):
    X, y = digits
    X, y = X[:600], y[:600]
    weights = np.random.default_rng(0).uniform(0.2, 3.0, y.size)
    C = 0.3
    reference = LogisticRegression(C=C, tol=1e-12, max_iter=20_000, class_weight="balanced")
    reference.fit(X, y, sample_weight=weights)
    # scikit-learn normalizes by the sum of the sample weights (class weights included).
    balanced = compute_class_weight("balanced", classes=np.unique(y), y=y, sample_weight=weights)
    l2 = l2_from_sklearn_C(C, float(np.sum(weights * balanced[y])))
    model = SoftmaxRegression(l2=l2, tol=1e-10, max_iter=2000, class_weight="balanced")
    model.fit(X, y, sample_weight=weights)
    assert np.max(np.abs(model.coef_ - reference.coef_)) < 1e-4


def test_string_labels_round_trip_through_save_and_load(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    y = np.array(["cat", "dog", "emu"])[np.argmax(X @ rng.normal(size=(3, 3)), axis=1)]
    model = SoftmaxRegression(l2=1e-3).fit(X, y)
    assert list(model.classes_) == ["cat", "dog", "emu"]
    model.save(str(tmp_path / "model"))
    loaded = SoftmaxRegression.load(str(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    np.testing.assert_array_equal(loaded.coef_, model.coef_)
    assert loaded.get_params()["l2"] == 1e-3
    assert loaded.loss_curve_ == model.loss_curve_


def test_model_file_tampering_and_pickles_are_refused(tmp_path):
    X = np.random.default_rng(2).normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(int)
    path = tmp_path / "model"
    SoftmaxRegression().fit(X, y).save(str(path))
    coef_file = path / "coef.npy"
    data = bytearray(coef_file.read_bytes())
    data[-1] ^= 0xFF
    coef_file.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        SoftmaxRegression.load(str(path))
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        SoftmaxRegression.load(str(path))


def test_save_never_replaces_something_that_is_not_a_model(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    model = SoftmaxRegression().fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(ModelFileError, match="refusing to write over"):
        model.save(str(precious))
    assert (precious / "notes.txt").read_text() == "keep me"
    model.save(str(tmp_path / "model"))
    model.save(str(tmp_path / "model"))  # a model is replaced whole
    assert SoftmaxRegression.load(str(tmp_path / "model")).n_features_in_ == 4


@pytest.mark.cluster
@pytest.mark.slow
def test_minibatch_solvers_reach_lbfgs_accuracy_and_are_worker_count_independent(tmp_path):
    dataset_path = str(tmp_path / "teacher.zarr")
    make_classification(dataset_path, 20_000, 16, 5, chunk_rows=3000, seed=3, dtype="float64")
    dataset = open_dataset(dataset_path)
    X = dataset.X.compute()
    y = dataset.y.compute()
    exact = SoftmaxRegression(l2=1e-4).fit(X, y)
    exact_accuracy = exact.score(X, y)
    weights = {}
    for n_workers in (1, 2):
        with (
            LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                host="127.0.0.1",
                dashboard_address=None,
                memory_limit="1GiB",
            ) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            for solver, rate in (("sgd", 0.1), ("adam", 0.05)):
                model = SoftmaxRegression(
                    solver=solver,
                    learning_rate=rate,
                    momentum=0.9,
                    batch_size=256,
                    max_iter=3,
                    lr_schedule="cosine",
                    l2=1e-4,
                    random_state=0,
                    client=client,
                )
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(dataset)
                assert model.score(X, y) > exact_accuracy - 0.01, solver
                weights.setdefault(solver, []).append(model.coef_.copy())
    for solver, (one_worker, two_workers) in weights.items():
        np.testing.assert_array_equal(one_worker, two_workers, err_msg=solver)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"l2": -1.0}, r"l2 must be in \[0"),
        ({"batch_size": 0}, r"batch_size must be in \[1"),
        ({"solver": "newton"}, r"solver must be one of \['lbfgs', 'sgd', 'adam'\]"),
        ({"learning_rate": 0.0}, r"learning_rate must be in \(0"),
        ({"momentum": 1.0}, r"momentum must be in \[0.0, 1.0\)"),
        ({"max_iter": 0}, r"max_iter must be in \[1"),
        ({"validation_fraction": 1.0}, r"validation_fraction must be in \(0.0, 1.0\)"),
        ({"lr_schedule": "warp"}, r"lr_schedule must be one of"),
        ({"class_weight": "even"}, r"class_weight must be None, 'balanced' or a dict"),
        ({"nesterov": True, "momentum": 0.0}, r"nesterov=True needs momentum > 0"),
    ],
)
def test_bad_hyper_parameters_name_the_parameter_and_range(params, message):
    X = np.random.default_rng(0).normal(size=(10, 2))
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match=message):
        SoftmaxRegression(**params).fit(X, y)


def test_batch_size_of_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        SoftmaxRegression(batch_size=1.5).fit(np.zeros((4, 1)), [0, 1, 0, 1])


def test_bad_data_is_refused_before_fitting():
    X = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match="at least 2 classes"):
        SoftmaxRegression().fit(X, np.zeros(10))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        SoftmaxRegression().fit(X, np.arange(10) % 2)


def test_partial_fit_and_warm_start(digits):
    X, y = digits
    model = SoftmaxRegression(solver="sgd", learning_rate=0.05, batch_size=256, random_state=0)
    model.partial_fit(X, y, classes=np.unique(y))
    first = model.coef_.copy()
    model.partial_fit(X, y)
    assert model.n_iter_ == 2 and len(model.loss_curve_) == 2
    assert model.loss_curve_[1] < model.loss_curve_[0]
    assert not np.array_equal(first, model.coef_)
    with pytest.raises(ValueError, match="classes must be passed"):
        SoftmaxRegression(solver="sgd").partial_fit(X, y)

    cold = SoftmaxRegression(l2=1e-3, max_iter=5)
    with pytest.warns(ConvergenceWarning):
        cold.fit(X, y)
    warm = SoftmaxRegression(l2=1e-3, max_iter=5, warm_start=True)
    with pytest.warns(ConvergenceWarning):
        warm.fit(X, y)
    with pytest.warns(ConvergenceWarning):
        warm.fit(X, y)  # 5 more iterations from where the first fit stopped
    assert _objective(warm, X, y, 1e-3) < _objective(cold, X, y, 1e-3)


def test_hyper_parameters_are_checked_as_the_validation_module_checks_them():
    X, y = np.zeros((4, 1)), [0, 1, 0, 1]
    with pytest.raises(TypeError, match=r"fit_intercept must be True or False, got 'no'"):
        SoftmaxRegression(fit_intercept="no").fit(X, y)
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \['constant', 'inverse_s"):
        SoftmaxRegression(lr_schedule="linear").fit(X, y)
    with pytest.raises(TypeError, match=r"max_iter must be an integer, got True of type bool"):
        SoftmaxRegression(max_iter=True).fit(X, y)
    with pytest.raises(ValueError, match=r"'seed' cannot be used to seed"):
        SoftmaxRegression(random_state="seed").fit(X, y)


def test_not_converging_warns_in_scikit_learns_words_with_the_fix(digits):
    X, y = digits
    with pytest.warns(ConvergenceWarning, match=r"^lbfgs failed to converge in max_iter=2 "
                      r"iterations.*; increase max_iter or tol, or standardize the features\.$"):
        SoftmaxRegression(max_iter=2).fit(X, y)
    with pytest.warns(ConvergenceWarning, match=r"^sgd failed to converge in max_iter=1 epochs; "
                      r"increase max_iter or tol\.$"):
        SoftmaxRegression(solver="sgd", max_iter=1, random_state=0).fit(X, y)


def _float32_inputs(X, y, tmp_path):
    dataset = write_dataset(tmp_path / "f32.zarr", X, y, chunk_rows=500)
    return {
        "numpy": (X, y),
        "dask": (da.from_array(X, chunks=(500, -1)), da.from_array(y, chunks=500)),
        "dataset": (dataset, None),
    }


@pytest.mark.cluster
def test_coef_and_intercept_take_the_dtype_of_the_training_features(
    digits, tmp_path, cluster_client
):
    X, y = digits
    X32 = X.astype(np.float32)
    model64 = SoftmaxRegression(l2=1e-3).fit(X, y)
    assert model64.coef_.dtype == model64.intercept_.dtype == np.float64
    for kind, (features, labels) in _float32_inputs(X32, y, tmp_path).items():
        client = None if kind == "numpy" else cluster_client
        model = SoftmaxRegression(l2=1e-3, client=client).fit(features, labels)
        assert model.coef_.dtype == model.intercept_.dtype == np.float32, kind
        assert model.predict_proba(X32).dtype == np.float32
        np.testing.assert_allclose(model.coef_, model64.coef_, atol=1e-3, err_msg=kind)
        model.save(str(tmp_path / kind))
        loaded = SoftmaxRegression.load(str(tmp_path / kind))
        np.testing.assert_array_equal(loaded.coef_, model.coef_)
        assert loaded.intercept_.dtype == np.float32


def test_a_warm_start_on_float32_data_continues_from_the_unrounded_weights(digits, tmp_path):
    X, y = digits
    X32 = X.astype(np.float32)
    in_memory = SoftmaxRegression(l2=1e-3, max_iter=3, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        in_memory.fit(X32, y)
        in_memory.save(str(tmp_path / "model"))
        from_file = SoftmaxRegression.load(str(tmp_path / "model"))  # float32 weights only
        in_memory.fit(X32, y)
        from_file.fit(X32, y)
    assert in_memory.coef_.dtype == from_file.coef_.dtype == np.float32
    # The same three iterations from float64 weights or from their float32 rounding.
    np.testing.assert_allclose(in_memory.coef_, from_file.coef_, rtol=1e-3, atol=1e-4)
    assert not np.array_equal(in_memory.coef_, from_file.coef_)


@pytest.mark.cluster
def test_predictions_on_dask_input_stay_lazy(digits, cluster_client):
    X, y = digits
    model = SoftmaxRegression(l2=1e-3).fit(X, y)
    X_lazy = da.from_array(X, chunks=(500, -1))
    lazy_labels = model.predict(X_lazy)
    lazy_probs = model.predict_proba(X_lazy)
    assert isinstance(lazy_labels, da.Array) and isinstance(lazy_probs, da.Array)
    labels, probs = cluster_client.compute([lazy_labels, lazy_probs], sync=True)
    np.testing.assert_array_equal(labels, model.predict(X))
    np.testing.assert_allclose(probs, model.predict_proba(X), rtol=1e-12)
    np.testing.assert_allclose(
        model.predict_log_proba(X), np.log(model.predict_proba(X)), atol=1e-12
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_predictions_on_lazy_input_name_the_first_non_finite_row(digits, bad):
    X, y = digits
    model = SoftmaxRegression(l2=1e-3).fit(X, y)
    X_bad = X.copy()
    X_bad[[1234, 1300], 5] = bad
    lazy = da.from_array(X_bad, chunks=(500, -1))
    named = r"2 non-finite value\(s\) \(NaN or inf\) in rows 1000 to 1499, first in row 1234;"
    for predicted in (model.predict(lazy), model.predict_proba(lazy)):
        with pytest.raises(ValueError, match=named):
            predicted.compute(scheduler="sync")
    # The blocks without a bad value are unaffected.
    clean = model.predict(lazy[:1000]).compute(scheduler="sync")
    np.testing.assert_array_equal(clean, model.predict(X[:1000]))


@pytest.mark.s3
def test_model_and_checkpoints_on_an_object_store(s3_storage_options, digits):
    base, storage_options = s3_storage_options
    X, y = digits
    model = SoftmaxRegression(
        solver="sgd", learning_rate=0.05, batch_size=256, max_iter=2, random_state=0,
        checkpoint_dir=f"{base}/checkpoints", keep_checkpoints=1,
        storage_options=storage_options,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    model.save(f"{base}/model", storage_options=storage_options)
    loaded = SoftmaxRegression.load(f"{base}/model", storage_options=storage_options)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    from dsoftmax.persist import CheckpointManager

    manager = CheckpointManager(f"{base}/checkpoints", storage_options=storage_options)
    assert len(manager.steps()) == 1  # older ones pruned
    np.testing.assert_array_equal(manager.latest().state.params.coef, model.coef_)


class _WritesAMarker:
    """An object whose unpickling writes a file: the payload of a malicious model file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("disguise", ["object-array", "raw-pickle"])
def test_a_malicious_model_file_is_refused_and_its_payload_never_runs(tmp_path, disguise):
    import hashlib
    import json
    import pickle

    path = tmp_path / "model"
    SoftmaxRegression().fit(np.eye(4), [0, 1, 0, 1]).save(str(path))
    marker = tmp_path / "payload-ran"
    payload = np.array([_WritesAMarker(str(marker))], dtype=object)
    with open(path / "coef.npy", "wb") as handle:
        if disguise == "object-array":
            np.save(handle, payload, allow_pickle=True)
        else:
            pickle.dump(payload, handle)
    # The attacker also fixes up the checksum, so only the format check stands in the way.
    manifest = json.loads((path / "manifest.json").read_text())
    digest = hashlib.sha256((path / "coef.npy").read_bytes()).hexdigest()
    manifest["arrays"]["coef"]["sha256"] = digest
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="not a plain numeric array"):
        SoftmaxRegression.load(str(path))
    assert not marker.exists()
