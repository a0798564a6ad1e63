r"""Full-batch L-BFGS: a driver over ``scipy.optimize.minimize(method="L-BFGS-B")`` that
tolerates a noisy loss.

Each evaluation of ``fun`` is one fused pass over the data (loss and gradient together), so the
driver counts them and keeps the line search short.

Models of at least :data:`COMPACT_MIN_PARAMS` parameters (wide models, sparse text features)
take the same algorithm in :mod:`dsoftmax.optim.lbfgs_steps` instead: scipy's L-BFGS-B spends
several passes over its pairs and copies of the iterate and gradient at each evaluation, which at
millions of parameters cost more than the pass over the data; the compact form there reads the
pairs three times per iteration and nothing per line-search evaluation.

Stopping rules
--------------
With iterates :math:`x_k`, losses :math:`f_k` and gradients :math:`g_k`, the run stops as
*converged* when

1. :math:`\max_i |g_{k,i}| \le` ``tol`` (scipy's ``gtol``), or
2. scipy's own test :math:`(f_{k-1} - f_k) / \max(|f_{k-1}|, |f_k|, 1) \le` ``ftol`` holds,
   with ``ftol`` = :data:`FTOL` = 64 machine epsilons (as scikit-learn): scipy's default of
   2.2e-9 is an absolute threshold for a loss below 1 and stopped fits ~1e-7 (relative) short
   of the optimum, before ``tol`` had a say; or
3. ``rel_noise > 0`` and :data:`NOISE_PATIENCE` iterations in a row decrease the loss by no
   more than its rounding noise, :math:`f_{k-1} - f_k \le \text{rel\_noise}\cdot
   \max(|f_{k-1}|, |f_k|)`, or
4. ``rel_noise > 0`` and the line search finds no acceptable step within
   :data:`MAX_LINE_SEARCH_EVALS` evaluations (or scipy reports an abnormal line-search
   termination): past the optimum the noise in :math:`f` hides the true decrease, and scipy
   would otherwise restart and spend as many evaluations again.

The result is always the last accepted iterate. The run stops as *not converged* when
``max_iter`` iterations are done, or, with ``rel_noise = 0``, when scipy stops abnormally.

Rule 3 replaces a larger ``ftol``: scipy's test has a floor of 1 in its denominator, so for a
loss below 1 it is an absolute threshold, while rounding noise scales with the loss itself
(a nearly separable problem has a small loss and a small noise). The noise of the mean
cross-entropy of float32 data, accumulated in float64, measured about 1e-8 relative (standard
deviation, 2,000 to 100,000 rows); ``rel_noise`` is a threshold above it. A larger
``rel_noise`` stops earlier: at 1e-6, ill-conditioned problems stopped up to about 2e-5
(relative, in the loss) short of the optimum; at 1e-7 (float32's machine epsilon), within 4e-6.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from dsoftmax.validation import finite_float, whole_number

if TYPE_CHECKING:
    import scipy.optimize

__all__ = [
    "COMPACT_MIN_PARAMS",
    "FTOL",
    "MAX_LINE_SEARCH_EVALS",
    "NOISE_PATIENCE",
    "LbfgsResult",
    "minimize_lbfgs",
]

#: Evaluations one line search may spend (scipy's ``maxls``; scipy's default is 20). Every
#: evaluation is a full pass over the data, and a healthy L-BFGS line search needs one or two.
MAX_LINE_SEARCH_EVALS = 10

#: scipy's relative-decrease stopping threshold; tiny, so that ``tol`` and the noise rules decide.
FTOL = 64 * np.finfo(np.float64).eps

#: Consecutive iterations whose decrease is within the noise before rule 3 stops the run: one
#: short step also happens far from the optimum, after a poor curvature estimate.
NOISE_PATIENCE = 2

#: Parameters from which :func:`minimize_lbfgs` runs the compact form of
#: :mod:`dsoftmax.optim.lbfgs_steps` rather than scipy's L-BFGS-B (see the module docstring).
COMPACT_MIN_PARAMS = 1 << 18


class LbfgsResult(NamedTuple):
    """Outcome of :func:`minimize_lbfgs`.

    Attributes
    ----------
    x : ndarray of shape (n_params,), float64
        The last accepted iterate.
    loss : float
        ``fun(x)[0]``.
    grad_max : float
        ``max |fun(x)[1]|``.
    n_iter : int
        Completed L-BFGS iterations.
    n_evals : int
        Calls of ``fun`` (each one pass over the data).
    converged : bool
        False when ``max_iter`` was reached (or scipy stopped abnormally with ``rel_noise=0``).
    message : str
        Why the run stopped.
    """

    x: np.ndarray
    loss: float
    grad_max: float
    n_iter: int
    n_evals: int
    converged: bool
    message: str


class _Evaluation(NamedTuple):
    x: np.ndarray
    loss: float
    grad: np.ndarray


class _LineSearchStalledError(Exception):
    """Raised from inside scipy's loop to end a line search lost in the loss's noise."""


class _Tracker:
    """Counts evaluations and iterations and applies the noise-aware stopping rules."""

    def __init__(
        self,
        fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
        n_params: int,
        rel_noise: float,
        callback: Callable[[int, np.ndarray, float], None] | None,
    ) -> None:
        self.fun = fun
        self.n_params = n_params
        self.rel_noise = rel_noise
        self.callback = callback
        self.n_evals = 0
        self.n_iter = 0
        self.evals_since_accepted = 0
        self.last: _Evaluation | None = None
        self.accepted: _Evaluation | None = None
        self.noisy_iterations = 0
        self.stop_reason = ""

    def evaluate(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        if self.rel_noise > 0 and self.evals_since_accepted >= MAX_LINE_SEARCH_EVALS:
            # scipy would reset its memory and start a second line search; under noise that one
            # fails too, at the price of up to MAX_LINE_SEARCH_EVALS more passes over the data.
            raise _LineSearchStalledError
        # A copy (scipy changes its x in place), read-only: fun may keep it, and the tracker
        # keeps it too, without a second copy of a model-sized vector per evaluation.
        point = np.array(x, dtype=np.float64)
        point.flags.writeable = False
        loss, grad = self.fun(point)
        loss = float(loss)
        grad = np.asarray(grad, dtype=np.float64).reshape(-1)
        self.n_evals += 1
        self.evals_since_accepted += 1
        self._check(loss, grad)
        self.last = _Evaluation(point, loss, grad)
        if self.accepted is None:
            self.accepted = self.last
            self.evals_since_accepted = 0
        return loss, grad

    def _check(self, loss: float, grad: np.ndarray) -> None:
        if grad.shape != (self.n_params,):
            raise ValueError(
                f"fun must return a gradient of shape ({self.n_params},) like x0, "
                f"got {grad.shape}."
            )
        if not (np.isfinite(loss) and np.all(np.isfinite(grad))):
            raise FloatingPointError(
                f"the loss or gradient is not finite at evaluation {self.n_evals} (loss={loss}); "
                "scale the features or increase the L2 penalty."
            )

    def on_iteration(self, intermediate_result: scipy.optimize.OptimizeResult) -> None:
        # scipy's line search ends on an evaluation at the accepted point, so its loss and
        # gradient are already known.
        previous, accepted = self.accepted, self.last
        assert previous is not None and accepted is not None
        if not np.array_equal(intermediate_result.x, accepted.x):
            raise RuntimeError(
                "scipy's L-BFGS-B accepted a point other than the one it evaluated last; "
                "this driver relies on that order (checked with scipy 1.17)."
            )
        self.accepted = accepted
        self.evals_since_accepted = 0
        self.n_iter += 1
        if self.callback is not None:
            self.callback(self.n_iter, accepted.x.copy(), accepted.loss)
        decrease = previous.loss - accepted.loss
        noise = self.rel_noise * max(abs(previous.loss), abs(accepted.loss))
        self.noisy_iterations = self.noisy_iterations + 1 if decrease <= noise else 0
        if self.rel_noise > 0 and self.noisy_iterations >= NOISE_PATIENCE:
            self.stop_reason = (
                f"converged: the loss decreased by less than its rounding noise "
                f"(rel_noise={self.rel_noise:g}) in {NOISE_PATIENCE} iterations in a row"
            )
            raise StopIteration


def _validate(
    x0: np.ndarray, max_iter: int, tol: float, rel_noise: float
) -> tuple[np.ndarray, int, float, float]:
    start = np.asarray(x0)
    if start.ndim != 1 or start.size == 0:
        raise ValueError(
            f"x0 must be a non-empty 1-D array (flatten the parameters), got shape {start.shape}."
        )
    if not np.issubdtype(start.dtype, np.number) or not np.all(np.isfinite(start)):
        raise ValueError("x0 must hold finite numbers; found NaN, infinity or a non-number.")
    iterations = whole_number("max_iter", max_iter)
    if iterations < 1:
        raise ValueError(f"max_iter must be >= 1, got {iterations}.")
    tolerance = finite_float("tol", tol)
    if not tolerance > 0:
        raise ValueError(f"tol must be > 0 (max-abs gradient), got {tolerance!r}; try 1e-4.")
    noise = finite_float("rel_noise", rel_noise)
    if not 0 <= noise < 1:
        raise ValueError(
            f"rel_noise must be in [0, 1), got {noise!r}; use 0 for float64 data, 1e-7 to 1e-6 "
            "for float32 data."
        )
    return start.astype(np.float64), iterations, tolerance, noise


def minimize_lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    rel_noise: float = 0.0,
    callback: Callable[[int, np.ndarray, float], None] | None = None,
) -> LbfgsResult:
    """Minimize ``fun`` with L-BFGS, stopping on the rules of the module docstring.

    Below :data:`COMPACT_MIN_PARAMS` parameters this runs scipy's L-BFGS-B, from there the same
    algorithm in its compact form (:mod:`dsoftmax.optim.lbfgs_steps`), whose step costs a third
    of scipy's at millions of parameters.

    Parameters
    ----------
    fun : callable ``x -> (loss, grad)``
        ``x`` is a read-only float64 ndarray of shape (n_params,) that ``fun`` may keep;
        ``grad`` has the same shape (it is converted to float64).
    x0 : ndarray of shape (n_params,)
        Starting point (copied to float64).
    max_iter : int
        Maximum number of L-BFGS iterations.
    tol : float
        Stop when the largest absolute gradient entry is at most ``tol``.
    rel_noise : float
        Relative rounding noise of the loss: 0 for float64 data, 1e-7 to 1e-6 for float32
        data (larger stops sooner; see the module docstring). 0 turns rules 3 and 4 off.
    callback : callable ``(iteration, x, loss) -> None``, optional
        Called after every iteration (1-based) with a copy of the new iterate and its loss.

    Returns
    -------
    LbfgsResult

    Examples
    --------
    >>> import numpy as np
    >>> result = minimize_lbfgs(lambda x: (float(x @ x), 2 * x), np.array([3.0, -4.0]))
    >>> result.converged, bool(np.allclose(result.x, 0, atol=1e-4))
    (True, True)
    """
    # Imported here: the commands that only load a model (evaluate, predict) never need it.
    import scipy.optimize

    start, iterations, tolerance, noise = _validate(x0, max_iter, tol, rel_noise)
    if start.size >= COMPACT_MIN_PARAMS:
        return _minimize_compact(fun, start, iterations, tolerance, noise, callback)
    tracker = _Tracker(fun, start.size, noise, callback)
    options = {
        "maxiter": iterations, "gtol": tolerance, "ftol": FTOL, "maxls": MAX_LINE_SEARCH_EVALS,
    }
    try:
        result = scipy.optimize.minimize(
            tracker.evaluate,
            start,
            jac=True,
            method="L-BFGS-B",
            callback=tracker.on_iteration,
            options=options,
        )
    except _LineSearchStalledError:
        converged = True
        message = (
            f"converged: no lower loss found within {MAX_LINE_SEARCH_EVALS} line-search "
            f"evaluations; the decrease is lost in the loss's rounding noise "
            f"(rel_noise={noise:g})"
        )
    else:
        if tracker.stop_reason:
            converged, message = True, tracker.stop_reason
        elif noise > 0 and str(result.message).startswith("ABNORMAL"):
            # A line search that ended early on rounding errors: the same noise floor as rule 4.
            converged = True
            message = f"converged: the line search stopped on rounding noise ({result.message})"
        else:
            converged = result.status == 0
            message = str(result.message)
    best = tracker.accepted
    assert best is not None
    return _result(best, tracker.n_iter, tracker.n_evals, converged, message)


def _result(
    accepted: _Evaluation, n_iter: int, n_evals: int, converged: bool, message: str
) -> LbfgsResult:
    """The result of a run whose last accepted iterate, with its loss and gradient, is
    ``accepted``."""
    return LbfgsResult(
        x=accepted.x.copy(),
        loss=accepted.loss,
        grad_max=float(np.max(np.abs(accepted.grad))),
        n_iter=n_iter,
        n_evals=n_evals,
        converged=converged,
        message=message,
    )


def _minimize_compact(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    start: np.ndarray,
    max_iter: int,
    tol: float,
    rel_noise: float,
    callback: Callable[[int, np.ndarray, float], None] | None,
) -> LbfgsResult:
    """:func:`minimize_lbfgs` by :mod:`dsoftmax.optim.lbfgs_steps`: the same rules and results,
    for large models."""
    from .lbfgs_steps import LbfgsOptions, lbfgs_start, lbfgs_step

    options = LbfgsOptions(max_iter, tol, rel_noise)
    state = lbfgs_start(start, options)
    while state.running:
        point = state.trial
        point.flags.writeable = False  # fun may keep it; the stepper never writes a trial point
        loss, grad = fun(point)
        iteration = state.iteration
        state = lbfgs_step(state, loss, grad, options)
        if callback is not None and state.iteration > iteration:
            callback(state.iteration, state.x.copy(), state.loss)
    accepted = _Evaluation(state.x, state.loss, state.grad)
    return _result(accepted, state.iteration, state.n_evals, state.converged, state.message)
