"""Optimizers against hand-written reference recurrences; L-BFGS against scipy and scikit-learn."""

from __future__ import annotations

import hashlib
import math
from typing import NamedTuple

import numpy as np
import pytest
import scipy.optimize
from sklearn.linear_model import LogisticRegression

from dsoftmax.objective import Params, l2_from_sklearn_C, loss_and_grad
from dsoftmax.optim import (
    MAX_LINE_SEARCH_EVALS,
    OPTIMIZERS,
    SCHEDULES,
    AdamState,
    GradientTransformation,
    SGDState,
    adam,
    apply_updates,
    constant,
    cosine,
    inverse_scaling,
    make_schedule,
    minimize_lbfgs,
    sgd,
    step_decay,
    tree_map,
)

# ---------------------------------------------------------------------------------- schedules


def test_constant_schedule_is_constant():
    schedule = constant(0.25)
    assert [schedule(t) for t in (0, 1, 7, 10_000)] == [0.25] * 4


def test_inverse_scaling_matches_formula():
    schedule = inverse_scaling(0.3, power_t=0.25)
    assert schedule(0) == pytest.approx(0.3)
    assert schedule(15) == pytest.approx(0.3 / 2)  # 16 ** 0.25 = 2
    assert schedule(80) == pytest.approx(0.3 / 3)  # 81 ** 0.25 = 3
    assert inverse_scaling(0.3)(3) == pytest.approx(0.15)  # default power 0.5: 4 ** 0.5 = 2


def test_step_decay_matches_formula():
    schedule = step_decay(0.5, step_size=3, gamma=0.1)
    values = [schedule(t) for t in range(7)]
    assert values == pytest.approx([0.5, 0.5, 0.5, 0.05, 0.05, 0.05, 0.005])


def test_cosine_matches_formula_and_stays_at_final_rate():
    schedule = cosine(1.0, total_steps=10, final_lr=0.1)
    assert schedule(0) == pytest.approx(1.0)
    assert schedule(5) == pytest.approx(0.55)
    assert schedule(3) == pytest.approx(0.1 + 0.45 * (1 + math.cos(0.3 * math.pi)))
    assert schedule(10) == pytest.approx(0.1)
    assert schedule(25) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("name", "options", "step", "expected"),
    [
        ("constant", {}, 9, 0.2),
        ("inverse_scaling", {"power_t": 1.0}, 3, 0.05),
        ("step_decay", {"step_size": 2, "gamma": 0.5}, 5, 0.05),
        ("cosine", {}, 50, 0.1),
        ("cosine", {"final_lr": 0.02}, 100, 0.02),
    ],
)
def test_make_schedule_builds_the_named_schedule(name, options, step, expected):
    schedule = make_schedule(name, 0.2, total_steps=100, **options)
    assert schedule(step) == pytest.approx(expected)


def test_schedule_registry_names():
    assert set(SCHEDULES) == {"constant", "inverse_scaling", "step_decay", "cosine"}


def test_make_schedule_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown learning-rate schedule 'linear'; choose one"):
        make_schedule("linear", 0.1, total_steps=10)
    with pytest.raises(TypeError, match=r"schedule 'constant' got unexpected options \['gama'\]"):
        make_schedule("constant", 0.1, total_steps=10, gama=0.5)
    with pytest.raises(TypeError, match=r"accepts \['step_size', 'gamma'\]"):
        make_schedule("step_decay", 0.1, total_steps=10, gama=0.5)
    with pytest.raises(ValueError, match=r"schedule 'cosine' needs total_steps"):
        make_schedule("cosine", 0.1, total_steps=None)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: constant(0.0), ValueError, r"lr must be > 0, got 0\.0"),
        (lambda: constant(-1), ValueError, r"lr must be > 0, got -1\.0"),
        (lambda: constant(float("nan")), ValueError, r"lr must be finite, got nan"),
        (lambda: constant("0.1"), TypeError, r"lr must be a real number, got '0\.1'"),
        (lambda: constant(True), TypeError, r"lr must be a real number, got True"),
        (lambda: inverse_scaling(0.1, power_t=-0.5), ValueError, r"power_t must be >= 0"),
        (lambda: step_decay(0.1, step_size=0), ValueError, r"step_size must be >= 1.*got 0"),
        (lambda: step_decay(0.1, step_size=2.5), TypeError, r"step_size must be an integer"),
        (lambda: step_decay(0.1, 2, gamma=0.0), ValueError, r"gamma must be in \(0, 1\]"),
        (lambda: step_decay(0.1, 2, gamma=1.5), ValueError, r"gamma must be in \(0, 1\]"),
        (lambda: cosine(0.1, total_steps=0), ValueError, r"total_steps must be >= 1"),
        (lambda: cosine(0.1, 10, final_lr=0.2), ValueError, r"final_lr must be in \[0, lr\]"),
        (lambda: constant(0.1)(-1), ValueError, r"step must be >= 0"),
        (lambda: cosine(0.1, 10)(1.5), TypeError, r"step must be an integer"),
    ],
)
def test_schedule_rejects_bad_values(build, error, message):
    with pytest.raises(error, match=message):
        build()


# ------------------------------------------------------------------------------- tree helpers


class Nested(NamedTuple):
    first: np.ndarray
    rest: tuple


def test_tree_map_keeps_none_and_structure():
    tree = Params(np.array([1.0, 2.0]), None)
    doubled = tree_map(lambda leaf: 2 * leaf, tree)
    assert isinstance(doubled, Params)
    assert doubled.intercept is None
    np.testing.assert_array_equal(doubled.coef, [2.0, 4.0])

    nested = Nested(np.ones(2), (np.zeros(1), None))
    summed = tree_map(np.add, nested, nested)
    assert isinstance(summed, Nested) and isinstance(summed.rest, tuple)
    np.testing.assert_array_equal(summed.first, [2.0, 2.0])
    assert summed.rest[1] is None


def test_tree_map_rejects_mismatched_trees():
    with pytest.raises(ValueError, match=r"field 'intercept' of Params is None in some trees"):
        tree_map(np.add, Params(np.ones(2), None), Params(np.ones(2), np.ones(1)))
    with pytest.raises(ValueError, match=r"Params has 2 fields, the other tree is tuple of len"):
        tree_map(np.add, Params(np.ones(2), None), (np.ones(2), None, None))
    with pytest.raises(TypeError, match=r"tree_map expects \(named\) tuples.*got ndarray"):
        tree_map(np.negative, np.ones(2))


def test_apply_updates_adds_in_float64_without_mutating():
    params = Params(np.ones((2, 2), dtype=np.float32), np.zeros(2))
    updates = Params(np.full((2, 2), 0.5), np.array([1.0, -1.0]))
    new = apply_updates(params, updates)
    assert isinstance(new, Params) and new.coef.dtype == np.float64
    np.testing.assert_array_equal(new.coef, np.full((2, 2), 1.5))
    np.testing.assert_array_equal(new.intercept, [1.0, -1.0])
    np.testing.assert_array_equal(params.coef, np.ones((2, 2)))
    np.testing.assert_array_equal(params.intercept, np.zeros(2))


# ----------------------------------------------------------------------- SGD / momentum / Adam


def _gradient_sequence(n_steps: int, with_intercept: bool = True) -> list[Params]:
    rng = np.random.default_rng(42)
    return [
        Params(rng.normal(size=(2, 3)), rng.normal(size=2) if with_intercept else None)
        for _ in range(n_steps)
    ]


def _run(optimizer: GradientTransformation, params: Params, grads: list[Params]) -> Params:
    state = optimizer.init(params)
    for grad in grads:
        updates, state = optimizer.update(grad, state, params)
        params = apply_updates(params, updates)
    return params


def _reference_sgd(params, grads, rate, momentum=0.0, nesterov=False):
    """Textbook recurrence on flat vectors: v ← μv + g; p ← p − η_t (g + μv or v)."""
    flat = np.concatenate([params.coef.ravel(), params.intercept])
    velocity = np.zeros_like(flat)
    for step, grad in enumerate(grads):
        g = np.concatenate([grad.coef.ravel(), grad.intercept])
        velocity = momentum * velocity + g
        direction = g + momentum * velocity if nesterov else velocity
        flat = flat - rate(step) * direction
    return flat


def _flat(params: Params) -> np.ndarray:
    return np.concatenate([params.coef.ravel(), params.intercept])


@pytest.mark.parametrize(
    ("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.5, True), (0.9, True)]
)
def test_sgd_matches_reference_recurrence(momentum, nesterov):
    params = Params(np.arange(6.0).reshape(2, 3), np.array([0.5, -0.5]))
    grads = _gradient_sequence(5)
    rate = inverse_scaling(0.2, power_t=0.5)  # a changing rate also checks the step counter
    result = _run(sgd(rate, momentum=momentum, nesterov=nesterov), params, grads)
    expected = _reference_sgd(params, grads, rate, momentum, nesterov)
    np.testing.assert_allclose(_flat(result), expected, rtol=1e-14, atol=1e-14)


def test_sgd_single_step_by_hand():
    optimizer = sgd(0.1, momentum=0.9, nesterov=True)
    params = Params(np.zeros((1, 2)), np.zeros(1))
    grads = Params(np.array([[1.0, -2.0]]), np.array([4.0]))
    updates, state = optimizer.update(grads, optimizer.init(params), params)
    # v = g; Nesterov update = −0.1 (g + 0.9 g) = −0.19 g
    np.testing.assert_allclose(updates.coef, [[-0.19, 0.38]])
    np.testing.assert_allclose(updates.intercept, [-0.76])
    assert isinstance(state, SGDState) and state.step == 1 and type(state.step) is int
    np.testing.assert_array_equal(state.velocity.coef, grads.coef)


def test_sgd_without_intercept_and_without_mutating_inputs():
    optimizer = sgd(0.5, momentum=0.5)
    params = Params(np.ones((2, 3)), None)
    grads = Params(np.ones((2, 3)), None)
    state = optimizer.init(params)
    updates, new_state = optimizer.update(grads, state, params)
    assert updates.intercept is None and new_state.velocity.intercept is None
    np.testing.assert_array_equal(updates.coef, np.full((2, 3), -0.5))
    np.testing.assert_array_equal(state.velocity.coef, np.zeros((2, 3)))  # old state untouched
    np.testing.assert_array_equal(grads.coef, np.ones((2, 3)))


def _reference_adam(params, grads, rate, b1, b2, eps):
    flat = _flat(params)
    m = np.zeros_like(flat)
    s = np.zeros_like(flat)
    for step, grad in enumerate(grads, start=1):
        g = _flat(grad)
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        m_hat = m / (1 - b1**step)
        s_hat = s / (1 - b2**step)
        flat = flat - rate(step - 1) * m_hat / (np.sqrt(s_hat) + eps)
    return flat


@pytest.mark.parametrize(
    ("b1", "b2", "eps"), [(0.9, 0.999, 1e-8), (0.5, 0.9, 1e-3), (0.0, 0.0, 1e-8)]
)
def test_adam_matches_reference_recurrence(b1, b2, eps):
    params = Params(np.arange(6.0).reshape(2, 3), np.array([0.5, -0.5]))
    grads = _gradient_sequence(6)
    rate = step_decay(0.05, step_size=2, gamma=0.5)
    result = _run(adam(rate, b1=b1, b2=b2, eps=eps), params, grads)
    expected = _reference_adam(params, grads, rate, b1, b2, eps)
    np.testing.assert_allclose(_flat(result), expected, rtol=1e-13, atol=1e-15)


def test_adam_constant_gradient_steps_by_the_learning_rate_times_its_sign():
    optimizer = adam(0.01, eps=1e-8)
    params = Params(np.zeros((1, 3)), None)
    grad = Params(np.array([[3.0, -0.25, 1e-3]]), None)
    state = optimizer.init(params)
    for step in range(4):
        updates, state = optimizer.update(grad, state, params)
        expected = -0.01 * grad.coef / (np.abs(grad.coef) + 1e-8)
        np.testing.assert_allclose(updates.coef, expected, rtol=1e-12)
        if step == 0:
            np.testing.assert_allclose(updates.coef, -0.01 * np.sign(grad.coef), rtol=1e-5)
    assert isinstance(state, AdamState) and state.step == 4
    assert state.mu.intercept is None and state.nu.intercept is None


def _quadratic_grad(params: Params) -> Params:
    """Gradient of ½ Σ a (p − c)² with curvatures from 0.5 to 4."""
    curvature = np.linspace(0.5, 4.0, 6).reshape(2, 3)
    return Params(curvature * (params.coef - 1.0), 2.0 * (params.intercept + 2.0))


@pytest.mark.parametrize(
    "optimizer",
    [
        sgd(0.2),
        sgd(0.1, momentum=0.9),
        sgd(0.1, momentum=0.9, nesterov=True),
        adam(cosine(0.1, total_steps=2000, final_lr=1e-4)),
    ],
    ids=["sgd", "momentum", "nesterov", "adam"],
)
def test_optimizers_converge_on_a_convex_quadratic(optimizer):
    params = Params(np.zeros((2, 3)), np.zeros(2))
    state = optimizer.init(params)
    for _ in range(2000):
        updates, state = optimizer.update(_quadratic_grad(params), state, params)
        params = apply_updates(params, updates)
    np.testing.assert_allclose(params.coef, np.ones((2, 3)), atol=1e-6)
    np.testing.assert_allclose(params.intercept, [-2.0, -2.0], atol=1e-6)


def test_optimizer_registry():
    assert OPTIMIZERS == {"sgd": sgd, "adam": adam}
    for factory in OPTIMIZERS.values():
        assert isinstance(factory(0.1), GradientTransformation)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: sgd(0.1, momentum=1.0), ValueError, r"momentum must be in \[0, 1\), got 1\.0"),
        (lambda: sgd(0.1, momentum=-0.1), ValueError, r"momentum must be in \[0, 1\)"),
        (lambda: sgd(0.1, nesterov=True), ValueError, r"nesterov=True needs momentum > 0"),
        (lambda: sgd(0.1, momentum=0.9, nesterov=1), TypeError, r"nesterov must be True or False"),
        (lambda: sgd(0.0), ValueError, r"lr must be > 0"),
        (lambda: adam(0.1, b1=1.0), ValueError, r"b1 must be in \[0, 1\), got 1\.0"),
        (lambda: adam(0.1, b2=-0.5), ValueError, r"b2 must be in \[0, 1\)"),
        (lambda: adam(0.1, eps=0.0), ValueError, r"eps must be > 0"),
        (lambda: adam(None), TypeError, r"lr must be a real number, got None"),
    ],
)
def test_optimizers_reject_bad_hyper_parameters(build, error, message):
    with pytest.raises(error, match=message):
        build()


# ---------------------------------------------------------------------------------- L-BFGS


@pytest.fixture(params=["scipy", "compact"])
def lbfgs_path(request, monkeypatch):
    """minimize_lbfgs through scipy's L-BFGS-B, and through the compact form that models of
    COMPACT_MIN_PARAMS parameters or more take."""
    import dsoftmax.optim.lbfgs

    if request.param == "compact":
        monkeypatch.setattr(dsoftmax.optim.lbfgs, "COMPACT_MIN_PARAMS", 1)
    return request.param


def _quadratic_problem(n_params: int = 12):
    rng = np.random.default_rng(7)
    basis, _ = np.linalg.qr(rng.normal(size=(n_params, n_params)))
    hessian = basis @ np.diag(np.logspace(0, 2, n_params)) @ basis.T
    linear = rng.normal(size=n_params)

    def fun(x):
        return 0.5 * x @ hessian @ x - linear @ x, hessian @ x - linear

    return fun, np.linalg.solve(hessian, linear)


def test_lbfgs_solves_a_quadratic_and_reports_its_work(lbfgs_path):
    fun, optimum = _quadratic_problem()
    calls = []
    iterations = []

    def counted(x):
        assert x.dtype == np.float64 and x.shape == (12,)
        calls.append(x.copy())
        return fun(x)

    def callback(iteration, x, loss):
        iterations.append((iteration, loss))
        assert loss == pytest.approx(fun(x)[0], rel=1e-15)
        x[:] = np.nan  # a copy: must not disturb the optimizer

    result = minimize_lbfgs(counted, np.zeros(12), max_iter=200, tol=1e-9, callback=callback)
    assert result.converged
    # scipy's relative-reduction test (ftol) may end the run first: judge by the loss.
    assert result.loss == pytest.approx(fun(optimum)[0], rel=1e-7)
    np.testing.assert_allclose(result.x, optimum, atol=1e-3)
    assert result.n_evals == len(calls)
    assert result.n_iter == len(iterations) >= 1
    assert [i for i, _ in iterations] == list(range(1, result.n_iter + 1))
    assert result.loss == pytest.approx(fun(result.x)[0], rel=1e-15)
    assert result.grad_max == pytest.approx(np.max(np.abs(fun(result.x)[1])))
    assert result.grad_max <= 1e-9 or "relative reduction" in result.message.lower()


def _softmax_problem(n_samples=400, n_features=6, n_classes=3):
    rng = np.random.default_rng(0)
    y = rng.integers(0, n_classes, n_samples)
    X = rng.normal(size=(n_samples, n_features)) + 0.8 * np.eye(n_classes, n_features)[y]
    return X, y


def _flat_objective(X, y, l2, n_classes):
    n_coef = n_classes * X.shape[1]

    def fun(x):
        params = Params(x[:n_coef].reshape(n_classes, -1), x[n_coef:])
        loss, grad = loss_and_grad(params, X, y, l2)
        return loss, np.concatenate([grad.coef.ravel(), grad.intercept])

    return fun


def test_lbfgs_reaches_the_sklearn_and_scipy_optimum_of_the_objective(lbfgs_path):
    X, y = _softmax_problem()
    C = 0.5
    l2 = l2_from_sklearn_C(C, X.shape[0])
    fun = _flat_objective(X, y, l2, n_classes=3)
    x0 = np.zeros(3 * 6 + 3)

    result = minimize_lbfgs(fun, x0, max_iter=500, tol=1e-10)

    direct = scipy.optimize.minimize(
        fun, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15}
    )
    sklearn_model = LogisticRegression(C=C, tol=1e-12, max_iter=10_000).fit(X, y)
    sklearn_loss = fun(np.concatenate([sklearn_model.coef_.ravel(), sklearn_model.intercept_]))[0]
    assert result.converged
    assert result.loss == pytest.approx(direct.fun, rel=1e-8)
    assert result.loss == pytest.approx(sklearn_loss, rel=1e-8)


def test_lbfgs_on_float32_data_stops_on_the_noise_floor_near_the_float64_optimum():
    rng = np.random.default_rng(0)
    X64 = rng.normal(size=(2000, 20))
    y = (X64 @ rng.normal(size=(4, 20)).T + rng.gumbel(size=(2000, 4))).argmax(axis=1)
    l2 = 1e-3
    fun64 = _flat_objective(X64, y, l2, n_classes=4)
    fun32 = _flat_objective(X64.astype(np.float32), y, l2, n_classes=4)
    x0 = np.zeros(4 * 20 + 4)
    optimum = scipy.optimize.minimize(
        fun64, x0, jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15}
    ).fun

    # tol far below float32 resolution: only the noise rules can end this run. (Measured
    # without them: 38 evaluations, then scipy's "ABNORMAL" line-search failure.)
    result = minimize_lbfgs(fun32, x0, max_iter=500, tol=1e-12, rel_noise=1e-6)

    assert result.converged, result.message
    assert "noise" in result.message
    assert result.n_evals <= 30
    assert fun64(result.x)[0] == pytest.approx(optimum, rel=1e-5)


def _noisy_quadratic(amplitude: float):
    """A quadratic whose loss carries deterministic relative noise of ±amplitude/2 (a hash of x),
    with an exact gradient: the line search sees noise the curvature model does not."""
    curvature = np.linspace(1.0, 10.0, 20)
    center = np.linspace(-1.0, 1.0, 20)

    def fun(x):
        digest = hashlib.blake2b(x.tobytes(), digest_size=8).digest()
        noise = int.from_bytes(digest, "little") / 2.0**64 - 0.5
        residual = x - center
        loss = 1.0 + 0.5 * np.sum(curvature * residual * residual)
        return loss * (1.0 + amplitude * noise), curvature * residual

    return fun


def test_lbfgs_noise_rule_stops_where_plain_scipy_keeps_evaluating():
    fun = _noisy_quadratic(1e-7)
    plain = minimize_lbfgs(fun, np.zeros(20), max_iter=500, tol=1e-12)
    aware = minimize_lbfgs(fun, np.zeros(20), max_iter=500, tol=1e-12, rel_noise=1e-6)
    assert not plain.converged
    assert aware.converged and "rounding noise" in aware.message
    assert aware.n_evals < plain.n_evals
    assert aware.loss == pytest.approx(1.0, rel=1e-6)


def test_lbfgs_ends_a_line_search_lost_in_noise_after_max_line_search_evals():
    fun = _noisy_quadratic(1e-6)
    evals_after_last_iteration = []

    def counted(x):
        evals_after_last_iteration.append(x)
        return fun(x)

    def callback(iteration, x, loss):
        evals_after_last_iteration.clear()

    # rel_noise understates the noise, so the decrease rule does not fire first.
    result = minimize_lbfgs(
        counted, np.zeros(20), max_iter=500, tol=1e-12, rel_noise=1e-12, callback=callback
    )
    assert result.converged and "line-search" in result.message
    assert len(evals_after_last_iteration) == MAX_LINE_SEARCH_EVALS
    assert result.loss == pytest.approx(1.0, rel=1e-5)


def test_lbfgs_max_iter_reached_is_not_converged():
    fun, _ = _quadratic_problem()
    result = minimize_lbfgs(fun, np.zeros(12), max_iter=2, tol=1e-12)
    assert not result.converged
    assert result.n_iter == 2
    assert "ITERATIONS REACHED LIMIT" in result.message


def test_lbfgs_gives_fun_float64_and_accepts_a_float32_gradient():
    seen = []

    def fun(x):
        seen.append(x.dtype)
        return np.float32(x @ x), (2 * x).astype(np.float32)

    result = minimize_lbfgs(fun, np.array([1.0, -2.0], dtype=np.float32), tol=1e-6)
    assert set(seen) == {np.dtype(np.float64)}
    assert result.x.dtype == np.float64 and isinstance(result.loss, float)
    np.testing.assert_allclose(result.x, 0.0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"x0": np.zeros((2, 2))}, ValueError, r"x0 must be a non-empty 1-D array.*\(2, 2\)"),
        ({"x0": np.array([np.nan, 0.0])}, ValueError, r"x0 must hold finite numbers"),
        ({"max_iter": 0}, ValueError, r"max_iter must be >= 1, got 0"),
        ({"max_iter": 2.0}, TypeError, r"max_iter must be an integer"),
        ({"tol": 0.0}, ValueError, r"tol must be > 0"),
        ({"rel_noise": 1.0}, ValueError, r"rel_noise must be in \[0, 1\), got 1\.0"),
        ({"rel_noise": -1e-6}, ValueError, r"rel_noise must be in \[0, 1\)"),
    ],
)
def test_lbfgs_rejects_bad_arguments(kwargs, error, message):
    arguments = {"x0": np.zeros(2), **kwargs}
    with pytest.raises(error, match=message):
        minimize_lbfgs(lambda x: (float(x @ x), 2 * x), **arguments)


def test_lbfgs_rejects_a_gradient_of_the_wrong_shape_or_a_non_finite_loss():
    with pytest.raises(ValueError, match=r"gradient of shape \(2,\) like x0, got \(3,\)"):
        minimize_lbfgs(lambda x: (0.0, np.zeros(3)), np.zeros(2))
    with pytest.raises(FloatingPointError, match=r"not finite at evaluation 1 \(loss=inf\)"):
        minimize_lbfgs(lambda x: (np.inf, np.zeros(2)), np.zeros(2))


def test_a_stopped_lbfgs_state_compacts_to_its_result():
    from dsoftmax.optim.lbfgs_steps import LbfgsOptions, lbfgs_compact, lbfgs_start, lbfgs_step

    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 6))
    A = A @ A.T + 6 * np.eye(6)
    b = rng.normal(size=6)
    options = LbfgsOptions(max_iter=50, tol=1e-10)
    state = lbfgs_start(np.zeros(6), options)
    with pytest.raises(ValueError, match="still runs"):
        lbfgs_compact(state)
    while state.running:
        x = state.trial
        state = lbfgs_step(state, 0.5 * x @ A @ x - b @ x, A @ x - b, options)
    compact = lbfgs_compact(state)
    np.testing.assert_allclose(compact.x, np.linalg.solve(A, b), rtol=1e-8)
    assert compact.x is state.x and compact.trial is state.x
    assert compact.loss == state.loss and compact.status == state.status
    assert compact.message == state.message
    assert compact.s.shape == compact.y.shape == (0, 6) and compact.grad.size == 0
    assert state.s.shape == (10, 6)


def test_minimize_lbfgs_hands_fun_read_only_points_it_may_keep(lbfgs_path):
    kept, seen = [], []

    def fun(x):
        kept.append(x)
        seen.append(x.copy())
        with pytest.raises(ValueError, match="read-only"):
            x[0] = 1.0
        return float(x @ x), 2 * x

    result = minimize_lbfgs(fun, np.array([3.0, -4.0]), tol=1e-8)
    assert result.converged and len(kept) == result.n_evals > 2
    # scipy moves its own iterate in place, the stepper writes its memory in place; the points
    # fun kept never change.
    assert all(np.array_equal(point, copy) for point, copy in zip(kept, seen, strict=True))
    assert result.x.flags.writeable


def _two_loop_direction(s, y, grad):
    """``−H g`` by the two-loop recursion over the pairs ``s[i], y[i]``, oldest first."""
    q = -grad
    alphas = []
    for s_k, y_k in zip(reversed(s), reversed(y), strict=True):
        alpha = (s_k @ q) / (y_k @ s_k)
        alphas.append(alpha)
        q = q - alpha * y_k
    q = q * (s[-1] @ y[-1]) / (y[-1] @ y[-1])
    for s_k, y_k, alpha in zip(s, y, reversed(alphas), strict=True):
        q = q + (alpha - (y_k @ q) / (y_k @ s_k)) * s_k
    return q


def test_the_compact_direction_is_the_two_loop_recursion_and_its_products_stay_exact():
    from dsoftmax.optim.lbfgs_steps import LbfgsOptions, lbfgs_start, lbfgs_step, pair_products

    fun, optimum = _quadratic_problem(n_params=40)
    # A memory of 4 wraps its ring several times before the run ends.
    options = LbfgsOptions(max_iter=200, tol=1e-12, memory=4)
    state = lbfgs_start(np.ones(40), options)
    checked = 0
    while state.running:
        before = state.iteration
        state = lbfgs_step(state, *fun(state.trial), options)
        if state.iteration == before or not state.running or state.n_pairs == 0:
            continue
        order = [(state.newest - k) % 4 for k in reversed(range(state.n_pairs))]
        expected = _two_loop_direction(state.s[order], state.y[order], state.grad)
        np.testing.assert_allclose(state.direction, expected, rtol=1e-9, atol=1e-12)
        sy, yy = pair_products(state.s, state.y, state.n_pairs, state.newest)
        upper = np.triu(np.ones((len(order), len(order)), dtype=bool))
        pairs = np.ix_(order, order)
        assert np.array_equal(sy[pairs][upper], state.sy[pairs][upper])
        assert np.array_equal(yy[pairs], state.yy[pairs])
        checked += 1
    assert checked >= 8 and state.converged
    assert state.loss == pytest.approx(fun(optimum)[0], rel=1e-10)
    np.testing.assert_allclose(state.x, optimum, atol=1e-5)
