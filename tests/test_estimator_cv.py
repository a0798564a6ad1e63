"""SoftmaxRegressionCV: every (λ, split) model against scikit-learn's fit of that fold, the
held-out scores and the choice, resume, workers, sgd/adam grids, model files and bad input."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings

import numpy as np
import pytest
from daskprocs import small_local_cluster
from distributed import Client
from sklearn.datasets import load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler
from test_checkpoint import _log_hook

from dsoftmax import SoftmaxRegression, SoftmaxRegressionCV
from dsoftmax.estimator_cv import l2_grid
from dsoftmax.persist import CheckpointError
from dsoftmax.persist.grid_checkpoint import GridCheckpointManager

# Tight enough that both solvers reach the optimum to ~1e-9 of the objective.
TIGHT = {"max_iter": 2000, "tol": 1e-10}


def _standardized(loader):
    X, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _objective(X, y, coef, intercept, l2, classes):
    """J = mean cross-entropy + λ‖W‖² (the objective of both libraries, up to scale)."""
    logits = X @ coef.T + intercept
    logits -= logits.max(axis=1, keepdims=True)
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ids = np.searchsorted(classes, y)
    return -log_p[np.arange(len(y)), ids].mean() + l2 * np.sum(coef**2)


def assert_every_model_is_scikit_learns_fit_of_its_fold(search, X, y, l2s, scoring):
    """Each (λ, fold) model of a 3-fold ``search`` (seed 0) reaches scikit-learn's objective on
    its fold (1e-7 relative), its held-out scores are scikit-learn's (1e-4) and it chose the λ
    scikit-learn's scores choose. ``X`` may be dense or scipy.sparse."""
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    expected = np.empty((3, len(l2s)))
    for f, (train, test) in enumerate(folds):
        for i, l2 in enumerate(l2s):
            reference = LogisticRegression(C=1 / (2 * l2 * len(train)), tol=1e-12,
                                           max_iter=20_000).fit(X[train], y[train])  # fmt: skip
            ours = _objective(X[train], y[train], search.coefs_paths_[f, i],
                              search.intercepts_paths_[f, i], l2, search.classes_)  # fmt: skip
            theirs = _objective(X[train], y[train], reference.coef_, reference.intercept_, l2,
                                reference.classes_)  # fmt: skip
            assert abs(ours - theirs) <= 1e-7 * abs(theirs), (f, l2, ours, theirs)
            if scoring == "neg_log_loss":
                expected[f, i] = -log_loss(y[test], reference.predict_proba(X[test]))
            else:
                expected[f, i] = accuracy_score(y[test], reference.predict(X[test]))
    np.testing.assert_allclose(search.scores_, expected, rtol=0, atol=1e-4)
    assert search.l2_ == l2s[int(np.argmax(expected.sum(axis=0)))]


def _quiet_fit(model, X, y, **fit_params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, y, **fit_params)


@pytest.mark.parametrize(
    ("loader", "l2s"),
    [
        (load_iris, [1e-4, 1e-3, 1e-2, 1e-1]),
        (load_wine, [1e-3, 1e-2, 1e-1, 1.0]),
        (load_digits, [1e-3, 1e-2, 1e-1]),
    ],
    ids=["iris", "wine", "digits"],
)
@pytest.mark.parametrize("scoring", ["neg_log_loss", "accuracy"])
def test_every_grid_model_is_scikit_learns_fit_of_its_fold(loader, l2s, scoring):
    X, y = _standardized(loader)
    search = SoftmaxRegressionCV(l2s=l2s, cv=3, scoring=scoring, random_state=0, **TIGHT)
    search.fit(X, y)
    assert_every_model_is_scikit_learns_fit_of_its_fold(search, X, y, l2s, scoring)
    np.testing.assert_array_equal(search.l2s_, l2s)
    assert search.scores_.shape == search.n_iter_.shape == (3, len(l2s))
    # The refit is scikit-learn's fit on every row at the chosen λ.
    refit = LogisticRegression(C=1 / (2 * search.l2_ * len(y)), tol=1e-12, max_iter=20_000)
    refit.fit(X, y)
    ours = _objective(X, y, search.coef_, search.intercept_, search.l2_, search.classes_)
    theirs = _objective(X, y, refit.coef_, refit.intercept_, search.l2_, refit.classes_)
    assert abs(ours - theirs) <= 1e-7 * abs(theirs)


def test_an_int_grid_is_scikit_learns_cs_and_the_splits_may_be_given():
    X, y = _standardized(load_iris)
    np.testing.assert_allclose(l2_grid(5, len(y)), 1 / (2 * np.logspace(-4, 4, 5) * len(y)))
    splits = list(KFold(3, shuffle=True, random_state=1).split(X))
    given = _quiet_fit(SoftmaxRegressionCV(l2s=3, cv=splits, max_iter=300), X, y)
    splitter = _quiet_fit(
        SoftmaxRegressionCV(l2s=3, cv=KFold(3, shuffle=True, random_state=1), max_iter=300), X, y
    )
    assert given.scores_.shape == (3, 3)
    np.testing.assert_array_equal(given.scores_, splitter.scores_)
    one = SoftmaxRegressionCV(l2s=[1e-3, 1e-2], cv="validation", validation_fraction=0.2)
    _quiet_fit(one, X, y)
    assert one.scores_.shape == (1, 2)


def test_sample_and_class_weights_weigh_training_and_scores():
    X, y = _standardized(load_wine)
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    search = SoftmaxRegressionCV(l2s=[1e-2], cv=3, random_state=0, **TIGHT)
    search.fit(X, y, sample_weight=weights)
    (train, test), *_ = StratifiedKFold(3, shuffle=True, random_state=0).split(X, y)
    reference = LogisticRegression(C=1 / (2 * 1e-2 * weights[train].sum()), tol=1e-12,
                                   max_iter=20_000)  # fmt: skip
    reference.fit(X[train], y[train], sample_weight=weights[train])
    np.testing.assert_allclose(search.coefs_paths_[0, 0], reference.coef_, atol=1e-5)
    held_out = -log_loss(y[test], reference.predict_proba(X[test]), sample_weight=weights[test])
    assert abs(search.scores_[0, 0] - held_out) < 1e-4
    balanced = SoftmaxRegressionCV(l2s=[1e-2], cv=3, random_state=0, class_weight="balanced")
    assert not np.allclose(balanced.fit(X, y).scores_, search.scores_)


@pytest.mark.cluster
def test_the_grid_is_bit_identical_on_one_two_and_three_workers():
    X, y = _standardized(load_wine)
    # 2 models train at once (27 copies of 3 × 14 weights each): the rolling grid's bits too.
    params = {"l2s": [1e-3, 1e-1], "cv": 3, "random_state": 0, "chunk_rows": 20,
              "grid_memory": 2 * 27 * 42 * 8}  # fmt: skip
    local = SoftmaxRegressionCV(**params).fit(X, y)
    for n_workers in (1, 2, 3):
        with small_local_cluster(n_workers) as cluster, Client(cluster) as client:
            remote = SoftmaxRegressionCV(client=client, **params).fit(X, y)
        np.testing.assert_array_equal(remote.coefs_paths_, local.coefs_paths_)
        np.testing.assert_array_equal(remote.scores_, local.scores_)
        np.testing.assert_array_equal(remote.coef_, local.coef_)
        assert remote.loss_curve_ == local.loss_curve_


@pytest.mark.parametrize(
    ("solver", "grid_memory"), [("lbfgs", "2GiB"), ("sgd", "2GiB"), ("lbfgs", 3000)],
    ids=["lbfgs", "sgd", "lbfgs-one-model-at-a-time"],
)  # fmt: skip
def test_resume_of_an_interrupted_grid_is_bit_identical(tmp_path, caplog, solver, grid_memory):
    X, y = _standardized(load_wine)
    params = {"l2s": [1e-3, 1e-2, 1e-1], "cv": 3, "random_state": 0, "solver": solver,
              "checkpoint_every": 3, "grid_memory": grid_memory}  # fmt: skip
    if solver == "sgd":
        params.update(learning_rates=[0.05, 0.2], batch_size=16, max_iter=6)
    reference = _quiet_fit(SoftmaxRegressionCV(**params), X, y)

    class StopError(Exception):
        pass

    def stop():
        raise StopError

    checkpoints = str(tmp_path / "ckpt")
    first = SoftmaxRegressionCV(checkpoint_dir=checkpoints, **params)
    with _log_hook("dsoftmax: checkpoint at step 6", stop) as fired, pytest.raises(StopError):
        _quiet_fit(first, X, y)
    assert fired
    assert GridCheckpointManager(checkpoints).latest().grid is not None  # mid-grid
    # A resumed grid keeps the models it trains at once, whatever grid_memory now allows.
    again = {**params, "grid_memory": "2GiB"}
    with caplog.at_level(logging.INFO, logger="dsoftmax"):
        resumed = _quiet_fit(SoftmaxRegressionCV(checkpoint_dir=checkpoints, **again), X, y,
                             resume=True)  # fmt: skip
    kept = "models it trains at once as it started: 1 (all now)"
    assert (kept in caplog.text) == (grid_memory == 3000)
    np.testing.assert_array_equal(resumed.coefs_paths_, reference.coefs_paths_)
    np.testing.assert_array_equal(resumed.scores_, reference.scores_)
    np.testing.assert_array_equal(resumed.coef_, reference.coef_)
    np.testing.assert_array_equal(resumed.n_iter_, reference.n_iter_)
    assert resumed.loss_curve_ == reference.loss_curve_
    with pytest.raises(ValueError, match="already holds checkpoints"):
        SoftmaxRegressionCV(checkpoint_dir=checkpoints, **params).fit(X, y)


@pytest.mark.parametrize(("every", "refit"), [(None, ""), (1, r" \(and its refit\)")])
def test_resuming_a_finished_grid_with_a_larger_max_iter_says_its_models_stay_as_they_are(
    tmp_path, every, refit
):
    X, y = _standardized(load_wine)
    params = {"l2s": [1e-3, 1e-2], "cv": 2, "random_state": 0, "checkpoint_every": every,
              "checkpoint_dir": str(tmp_path / "ckpt")}  # fmt: skip
    short = _quiet_fit(SoftmaxRegressionCV(max_iter=3, **params), X, y)
    assert not short.n_iter_.max() > 3
    with pytest.warns(UserWarning, match=rf"4 of its 4 models{refit} stopped at max_iter=3; .* "
                      r"does not train them further\. Fit afresh"):  # fmt: skip
        resumed = _quiet_fit(SoftmaxRegressionCV(max_iter=100, **params), X, y, resume=True)
    np.testing.assert_array_equal(resumed.scores_, short.scores_)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the same max_iter: nothing to say
        _quiet_fit(SoftmaxRegressionCV(max_iter=3, **params), X, y, resume=True)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_an_sgd_or_adam_grid_spans_learning_rates(solver):
    X, y = _standardized(load_iris)
    rates = [0.01, 0.1]
    search = _quiet_fit(SoftmaxRegressionCV(l2s=[1e-4, 1e-2], learning_rates=rates, cv=3,
                                            solver=solver, batch_size=16, max_iter=10,
                                            random_state=0), X, y)  # fmt: skip
    assert search.scores_.shape == (3, 2, 2)
    assert search.coefs_paths_.shape == (3, 2, 2, 3, 4)
    assert np.all(np.isfinite(search.scores_))
    assert not np.array_equal(search.coefs_paths_[:, :, 0], search.coefs_paths_[:, :, 1])
    best = np.unravel_index(np.argmax(search.scores_.sum(axis=0)), (2, 2))
    assert (search.l2_, search.learning_rate_) == (search.l2s_[best[0]], rates[best[1]])
    np.testing.assert_array_equal(search.learning_rates_, rates)


def test_saved_grid_loads_as_either_class_and_predicts_the_same(tmp_path):
    X, y = _standardized(load_iris)
    search = SoftmaxRegressionCV(l2s=[1e-3, 1e-1], cv=3, random_state=0).fit(X, y)
    path = str(tmp_path / "model")
    search.save(path)
    again = SoftmaxRegressionCV.load(path)
    np.testing.assert_array_equal(again.scores_, search.scores_)
    np.testing.assert_array_equal(again.l2s_, search.l2s_)
    assert again.l2_ == search.l2_
    single = SoftmaxRegression.load(path)
    assert single.l2 == search.l2_
    np.testing.assert_array_equal(single.predict_proba(X), search.predict_proba(X))
    np.testing.assert_array_equal(again.predict(X), search.predict(X))
    exported = search.export_sklearn()
    np.testing.assert_allclose(exported.predict_proba(X), search.predict_proba(X), atol=1e-12)


def test_no_refit_keeps_the_mean_of_the_splits_models():
    X, y = _standardized(load_iris)
    search = SoftmaxRegressionCV(l2s=[1e-3, 1e-1], cv=3, refit=False, random_state=0).fit(X, y)
    chosen = list(search.l2s_).index(search.l2_)
    np.testing.assert_allclose(search.coef_, search.coefs_paths_[:, chosen].mean(axis=0))
    assert search.loss_curve_ == []


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"l2s": []}, ValueError, "l2s is empty"),
        ({"l2s": [1e-3, -1.0]}, ValueError, "each value of l2s"),
        ({"l2s": [1e-3, 1e-3]}, ValueError, "l2s holds a value twice"),
        ({"l2s": "1e-3"}, TypeError, "l2s must be a positive int or a list"),
        ({"cv": 1}, ValueError, "cv must be an int >= 2"),
        ({"cv": "folds"}, ValueError, "cv must be an int >= 2"),
        ({"scoring": "roc_auc"}, ValueError, "scoring"),
        ({"learning_rates": [0.1]}, ValueError, "learning_rates is a grid of sgd/adam"),
        ({"grid_memory": "lots"}, ValueError, "grid_memory must be a size such as"),
        ({"grid_memory": 0}, ValueError, "grid_memory must be a positive size"),
        ({"grid_memory": 1.5e9}, TypeError, "grid_memory must be a number of bytes"),
    ],
)
def test_bad_grid_settings_are_named_before_any_work(params, error, message):
    X, y = load_iris(return_X_y=True)
    with pytest.raises(error, match=message):
        SoftmaxRegressionCV(**params).fit(X, y)


def test_partial_fit_is_not_offered():
    assert not hasattr(SoftmaxRegressionCV(), "partial_fit")


def test_the_plot_of_a_grid_draws_its_validation_curve(tmp_path):
    from dsoftmax.plotting import plot_training

    X, y = _standardized(load_iris)
    l2s = [1e-1, 1e-4, 1e-2]
    search = SoftmaxRegressionCV(l2s=l2s, cv=3, random_state=0).fit(X, y)
    figure = plot_training(search, out=tmp_path / "grid.png")
    curve, loss = figure.axes[:2]
    assert curve.get_xscale() == "log"
    assert curve.get_title() == "Validation curve, 3 splits"
    mean, *_ = curve.get_lines()
    np.testing.assert_array_equal(mean.get_xdata(), sorted(l2s))
    np.testing.assert_allclose(mean.get_ydata(), search.scores_.mean(axis=0)[np.argsort(l2s)])
    star = curve.get_lines()[-1]
    assert star.get_xdata()[0] == search.l2_
    assert loss.get_yscale() == "log"
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_a_half_precision_store_scores_as_its_rounded_rows_in_float32(tmp_path):
    from dsoftmax import open_dataset, write_dataset

    X, y = _standardized(load_wine)
    write_dataset(tmp_path / "half.zarr", X, y, chunk_rows=50, dtype="float16")
    params = {"l2s": [1e-3, 1e-1], "cv": 3, "random_state": 0}
    half = SoftmaxRegressionCV(**params).fit(open_dataset(tmp_path / "half.zarr"))
    rounded = SoftmaxRegressionCV(**params).fit(X.astype(np.float16).astype(np.float32), y)
    np.testing.assert_allclose(half.scores_, rounded.scores_, rtol=0, atol=1e-6)
    assert half.l2_ == rounded.l2_


def _grid_passes(records) -> list[int]:
    """The models evaluated by each grid pass, from the INFO log."""
    return [
        record.args[1]
        for record in records
        if record.getMessage().startswith("dsoftmax: grid pass")
    ]


def test_a_grid_within_grid_memory_trains_a_few_models_at_once_with_the_same_results(caplog):
    X, y = _standardized(load_wine)
    params = {"l2s": [1e-3, 1e-2, 1e-1], "cv": 3, "random_state": 0}
    with caplog.at_level(logging.INFO, logger="dsoftmax"):
        whole = SoftmaxRegressionCV(**params).fit(X, y)
    passes_whole = _grid_passes(caplog.records)
    caplog.clear()
    per_model = (2 * 10 + 7) * 3 * (13 + 1) * 8  # lbfgs_models_within's count for 3 × 13 + 3
    with caplog.at_level(logging.INFO, logger="dsoftmax"):
        capped = SoftmaxRegressionCV(grid_memory=2 * per_model + 1, **params).fit(X, y)
    passes_capped = _grid_passes(caplog.records)
    assert max(passes_whole) == 9 and max(passes_capped) == 2
    assert len(passes_capped) > len(passes_whole)
    assert "2 train at once within grid_memory" in caplog.text
    # The same models up to the rounding of the stacked products, whose bits may depend on a
    # product's height (OpenBLAS's AVX2 kernels round a lone last row differently).
    np.testing.assert_allclose(capped.coefs_paths_, whole.coefs_paths_, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(capped.n_iter_, whole.n_iter_)
    np.testing.assert_allclose(capped.scores_, whole.scores_, rtol=1e-12)
    np.testing.assert_allclose(capped.coef_, whole.coef_, rtol=1e-9, atol=1e-12)


def test_grid_checkpoints_hold_running_models_whole_and_refuse_bad_fields(tmp_path):
    X, y = _standardized(load_wine)
    checkpoints = tmp_path / "ckpt"
    params = {"l2s": [1e-3, 1e-1], "cv": 3, "random_state": 0, "grid_memory": 3000,
              "checkpoint_every": 2, "checkpoint_dir": str(checkpoints),
              "keep_checkpoints": 10}  # fmt: skip
    SoftmaxRegressionCV(**params).fit(X, y)
    manager = GridCheckpointManager(str(checkpoints))
    mid_grid = [step for step in manager.steps() if manager.load(step).grid is not None]
    assert len(mid_grid) >= 2
    run = manager.load(mid_grid[0]).grid
    assert run.max_running == 1 and sum(state.running for state in run.lbfgs) <= 1
    assert all(state.s.shape[0] == 0 for state in run.lbfgs if not state.running)
    (manifest_path,) = checkpoints.glob(f"step-*{mid_grid[0]}/manifest.json")
    not_a_count = "'max_running' in the grid run .* must be an integer or null"
    for field, value, message in [("max_running", 0, "max_running must be >= 1"),
                                  ("max_running", "2", not_a_count),
                                  ("messages", [], "messages")]:  # fmt: skip
        manifest = json.loads(manifest_path.read_text())
        original = manifest["grid_checkpoint"]["grid"][field]
        manifest["grid_checkpoint"]["grid"][field] = value
        manifest_path.write_text(json.dumps(manifest))
        with pytest.raises(CheckpointError, match=message):
            manager.load(mid_grid[0])
        manifest["grid_checkpoint"]["grid"][field] = original
        manifest_path.write_text(json.dumps(manifest))
    assert manager.load(mid_grid[0]).grid.max_running == 1


def _used_products(state):
    """The products an L-BFGS direction reads: ``sᵢᵀyⱼ`` for pair i not newer than pair j, and
    every ``yᵢᵀyⱼ``, over the valid pairs."""
    memory = state.s.shape[0]
    order = [(state.newest - k) % memory for k in reversed(range(state.n_pairs))]
    pairs = np.ix_(order, order)
    return state.sy[pairs][np.triu_indices(len(order))], state.yy[pairs]


def test_a_grid_checkpoint_without_the_pairs_products_resumes_with_the_same_products(tmp_path):
    from dsoftmax.optim.lbfgs_steps import pair_products

    X, y = _standardized(load_wine)
    checkpoints = tmp_path / "ckpt"
    SoftmaxRegressionCV(
        l2s=[1e-3, 1e-1], cv=3, random_state=0, checkpoint_every=3,
        checkpoint_dir=str(checkpoints), keep_checkpoints=10,
    ).fit(X, y)  # fmt: skip
    manager = GridCheckpointManager(str(checkpoints))
    step = next(s for s in manager.steps() if manager.load(s).grid is not None)
    stored = [state for state in manager.load(step).grid.lbfgs if state.running]
    assert stored and all(state.n_pairs >= 2 for state in stored)
    for state in stored:  # the products kept are the pairs' own, to the bit
        sy, yy = pair_products(state.s, state.y, state.n_pairs, state.newest)
        again = _used_products(state._replace(sy=sy, yy=yy))
        assert all(np.array_equal(a, b) for a, b in zip(again, _used_products(state), strict=True))
    # A checkpoint without them (written before they were kept) has them computed anew.
    (directory,) = [d for d in checkpoints.glob("step-*") if int(d.name.split("-")[-1]) == step]
    manifest = json.loads((directory / "manifest.json").read_text())
    for name in ("grid.sy", "grid.yy"):
        del manifest["arrays"][name]
        (directory / f"{name}.npy").unlink()
    (directory / "manifest.json").write_text(json.dumps(manifest))
    loaded = [state for state in manager.load(step).grid.lbfgs if state.running]
    for before, after in zip(stored, loaded, strict=True):
        for a, b in zip(_used_products(after), _used_products(before), strict=True):
            np.testing.assert_array_equal(a, b)
    # Pairs without positive curvature (a crafted file) are refused before a direction divides
    # by their products.
    s_path = directory / "grid.s.npy"
    pairs = np.load(s_path)
    pairs[0, stored[0].newest] = 0.0
    np.save(s_path, pairs)
    manifest["arrays"]["grid.s"]["sha256"] = hashlib.sha256(s_path.read_bytes()).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="not positive"):
        manager.load(step)
