r"""L-BFGS one evaluation at a time: an explicit state, and a step that takes the next (loss, grad).

For small models :func:`dsoftmax.optim.minimize_lbfgs` calls the objective from inside scipy's
loop. A grid of models trained together needs the opposite: each model's optimizer *asks* for the
objective at a point and is *told* the answer later, when one pass over the data has computed
every model's (reverse communication); and a model of millions of weights needs an L-BFGS that
does not copy them, which ``minimize_lbfgs`` then drives through this module. Here the whole
optimizer is a :class:`LbfgsState` (arrays and numbers, nothing hidden), :func:`lbfgs_start`
makes the first one and :func:`lbfgs_step` turns a state and the objective at ``state.trial``
into the next state. A state can be checkpointed and a run resumed from it with the same bits
as an uninterrupted one.

The algorithm is scipy's L-BFGS-B without bounds, step for step:

* the direction is ``d = −H g``, ``H`` the limited-memory inverse Hessian of the last ``memory``
  pairs ``(s, y)`` with ``H₀ = (sᵀy / yᵀy) I`` from the newest pair, in its compact form (Byrd,
  Nocedal and Schnabel, 1994, as L-BFGS-B itself represents it): the products ``sᵢᵀyⱼ`` and
  ``yᵢᵀyⱼ`` are kept from step to step, so that a direction reads the pairs twice (``Sg``, ``Yg``
  and then ``Sᵀp + Yᵀq``) and a new pair once, whatever the memory; without pairs ``d = −g``;
* the step comes from the Moré–Thuente line search (MINPACK-2's ``dcsrch``, with scipy's
  ``ftol = 1e-3``, ``gtol = 0.9``, ``xtol = 0.1``), first tried at ``1/‖d‖`` on the first
  iteration and at 1 afterwards, at most :data:`dsoftmax.optim.lbfgs.MAX_LINE_SEARCH_EVALS`
  evaluations per search; a pair is skipped unless ``sᵀy > ε · (−gᵀs)``;
* a failed line search clears the memory and restarts from ``−g``; without memory to clear the
  run stops abnormally.

The stopping rules are those of :func:`dsoftmax.optim.minimize_lbfgs` (see
:mod:`dsoftmax.optim.lbfgs`): converged when ``max |g| ≤ tol`` or the relative decrease is at most
:data:`~dsoftmax.optim.lbfgs.FTOL`, or, with ``rel_noise > 0``, after
:data:`~dsoftmax.optim.lbfgs.NOISE_PATIENCE` iterations in a row that decrease the loss by no
more than its noise, or when the line search finds no lower loss within
:data:`~dsoftmax.optim.lbfgs.MAX_LINE_SEARCH_EVALS` evaluations; stopped (not converged) after
``max_iter`` iterations. The result is always the last accepted iterate ``state.x``.

A step writes a new pair into the memory arrays of the state it is given and the next direction
into that state's direction array (a model's memory is ``2 · memory`` copies of its weights, too
large to copy at every step): use only the state a step returns. Its trial points are new
arrays, never written afterwards, so the objective may keep them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.linalg
from scipy.linalg import blas

from ..validation import finite_float, whole_number
from .lbfgs import FTOL, MAX_LINE_SEARCH_EVALS, NOISE_PATIENCE

__all__ = [
    "CONVERGED",
    "FAILED",
    "LBFGS_MEMORY",
    "RUNNING",
    "STOPPED",
    "LbfgsOptions",
    "LbfgsState",
    "LineSearch",
    "lbfgs_compact",
    "lbfgs_start",
    "lbfgs_step",
    "pair_products",
    "positive_curvatures",
]

#: Pairs ``(s, y)`` kept (scipy's ``maxcor`` default).
LBFGS_MEMORY = 10

#: What a state is doing: waiting for the objective at ``trial``, converged, stopped at
#: ``max_iter``, or stopped abnormally (a line search that failed without memory to clear).
RUNNING, CONVERGED, STOPPED, FAILED = 0, 1, 2, 3

#: The Moré–Thuente line search's constants, as scipy's L-BFGS-B sets them.
_SEARCH_FTOL, _SEARCH_GTOL, _SEARCH_XTOL = 1e-3, 0.9, 0.1
_STEP_MAX = 1e10
_EPS = float(np.finfo(np.float64).eps)

#: The line search's answers: evaluate at the new step, the step satisfies both conditions,
#: the best step it can find, bad input.
_FG, _CONV, _WARN, _ERROR = "FG", "CONV", "WARN", "ERROR"


class LbfgsOptions(NamedTuple):
    """The settings of a run: those of :func:`dsoftmax.optim.minimize_lbfgs`.

    Attributes
    ----------
    max_iter : int
    tol : float
        Converged when ``max |g| ≤ tol``.
    rel_noise : float
        Relative rounding noise of the loss: 0 for float64 data, about 1e-7 for float32 data.
    memory : int
        Pairs ``(s, y)`` kept.
    """

    max_iter: int = 100
    tol: float = 1e-4
    rel_noise: float = 0.0
    memory: int = LBFGS_MEMORY


class LineSearch(NamedTuple):
    """The state of one Moré–Thuente search along ``direction`` (MINPACK-2's ``dcsrch``).

    ``stx, fx, gx`` is the best step so far with its loss and directional derivative, ``sty,
    fy, gy`` the other end of the interval; ``stmin, stmax`` bound the next step; ``finit,
    ginit`` are the loss and directional derivative at step 0, ``gtest = ftol · ginit``;
    ``width, width1`` the interval's last widths; ``stage`` 1 or 2; ``bracketed`` 0 or 1;
    ``step`` the step being evaluated.
    """

    step: float = 0.0
    stage: int = 1
    bracketed: int = 0
    stx: float = 0.0
    fx: float = 0.0
    gx: float = 0.0
    sty: float = 0.0
    fy: float = 0.0
    gy: float = 0.0
    stmin: float = 0.0
    stmax: float = 0.0
    finit: float = 0.0
    ginit: float = 0.0
    gtest: float = 0.0
    width: float = 0.0
    width1: float = 0.0


class LbfgsState(NamedTuple):
    """Everything an L-BFGS run is: its iterate, its memory, its line search and its counters.

    Attributes
    ----------
    x : ndarray of shape (n_params,)
        The last accepted iterate (``x0`` until the first evaluation).
    loss : float
        The objective at ``x``.
    grad : ndarray of shape (n_params,)
        Its gradient at ``x``.
    trial : ndarray of shape (n_params,)
        The point whose objective the next :func:`lbfgs_step` takes, while ``status`` is
        :data:`RUNNING`.
    direction : ndarray of shape (n_params,)
        The search direction from ``x``.
    s, y : ndarray of shape (memory, n_params)
        The pairs ``x_{k+1} − x_k`` and ``g_{k+1} − g_k``, a ring whose newest entry is at
        ``newest``; ``n_pairs`` of them are valid.
    sy, yy : ndarray of shape (memory, memory)
        Their products by ring position: ``sy[i, j] = sᵢᵀyⱼ`` wherever pair ``i`` is not newer
        than pair ``j``, and ``yy[i, j] = yᵢᵀyⱼ`` (:func:`pair_products` computes them anew).
    n_pairs, newest : int
    search : LineSearch
    iteration : int
        Accepted iterations.
    n_evals : int
        Evaluations taken.
    evals_since_accepted : int
        Evaluations since the last accepted iterate (a restarted search continues the count).
    search_evals : int
        Evaluations of the current line search.
    noisy_iterations : int
        Iterations in a row whose decrease was within the loss's noise.
    status : int
        :data:`RUNNING`, :data:`CONVERGED`, :data:`STOPPED` or :data:`FAILED`.
    message : str
        Why the run stopped ("" while it runs).
    """

    x: np.ndarray
    loss: float
    grad: np.ndarray
    trial: np.ndarray
    direction: np.ndarray
    s: np.ndarray
    y: np.ndarray
    sy: np.ndarray
    yy: np.ndarray
    n_pairs: int
    newest: int
    search: LineSearch
    iteration: int
    n_evals: int
    evals_since_accepted: int
    search_evals: int
    noisy_iterations: int
    status: int
    message: str

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def converged(self) -> bool:
        return self.status == CONVERGED


def check_options(options: LbfgsOptions) -> LbfgsOptions:
    """``options`` with each value checked as :func:`dsoftmax.optim.minimize_lbfgs` checks it."""
    iterations = whole_number("max_iter", options.max_iter)
    if iterations < 1:
        raise ValueError(f"max_iter must be >= 1, got {iterations}.")
    tolerance = finite_float("tol", options.tol)
    if not tolerance > 0:
        raise ValueError(f"tol must be > 0 (max-abs gradient), got {tolerance!r}; try 1e-4.")
    noise = finite_float("rel_noise", options.rel_noise)
    if not 0 <= noise < 1:
        raise ValueError(
            f"rel_noise must be in [0, 1), got {noise!r}; use 0 for float64 data, 1e-7 to 1e-6 "
            "for float32 data."
        )
    memory = whole_number("memory", options.memory)
    if memory < 1:
        raise ValueError(f"memory must be >= 1, got {memory}.")
    return LbfgsOptions(iterations, tolerance, noise, memory)


def lbfgs_start(x0: np.ndarray, options: LbfgsOptions) -> LbfgsState:
    """The state of a run from ``x0``: it asks for the objective at ``x0`` first.

    Parameters
    ----------
    x0 : ndarray of shape (n_params,)
        Finite numbers (copied to float64).
    options : LbfgsOptions

    Returns
    -------
    LbfgsState
    """
    check_options(options)
    start = np.asarray(x0)
    if start.ndim != 1 or start.size == 0:
        raise ValueError(
            f"x0 must be a non-empty 1-D array (flatten the parameters), got shape {start.shape}."
        )
    if not np.issubdtype(start.dtype, np.number) or not np.all(np.isfinite(start)):
        raise ValueError("x0 must hold finite numbers; found NaN, infinity or a non-number.")
    x = start.astype(np.float64)
    n = x.size
    memory = int(options.memory)
    return LbfgsState(
        x=x, loss=math.nan, grad=np.zeros(n), trial=x.copy(), direction=np.zeros(n),
        s=np.zeros((memory, n)), y=np.zeros((memory, n)), sy=np.zeros((memory, memory)),
        yy=np.zeros((memory, memory)), n_pairs=0, newest=memory - 1,
        search=LineSearch(), iteration=0, n_evals=0, evals_since_accepted=0, search_evals=0,
        noisy_iterations=0, status=RUNNING, message="",
    )  # fmt: skip


def lbfgs_step(
    state: LbfgsState, loss: float, grad: np.ndarray, options: LbfgsOptions
) -> LbfgsState:
    """The next state, given the objective and its gradient at ``state.trial``.

    Parameters
    ----------
    state : LbfgsState
        A running state (``state.running``).
    loss : float
    grad : ndarray of shape (n_params,)
    options : LbfgsOptions
        The run's options (the same at every step).

    Returns
    -------
    LbfgsState
        Running with a new ``trial``, or stopped with its ``message``.

    Raises
    ------
    FloatingPointError
        When the loss or gradient is not finite.
    """
    if not state.running:
        raise ValueError(f"this L-BFGS run has stopped ({state.message}); start a new one.")
    loss = float(loss)
    grad = np.asarray(grad, dtype=np.float64).reshape(-1)
    if grad.shape != state.x.shape:
        raise ValueError(
            f"the gradient must have shape {state.x.shape} like x, got {grad.shape}."
        )
    evaluation = state.n_evals + 1
    if not (math.isfinite(loss) and np.all(np.isfinite(grad))):
        raise FloatingPointError(
            f"the loss or gradient is not finite at evaluation {evaluation} (loss={loss}); "
            "scale the features or increase the L2 penalty."
        )
    state = state._replace(
        n_evals=evaluation,
        evals_since_accepted=state.evals_since_accepted + 1,
        search_evals=state.search_evals + 1,
    )
    if evaluation == 1:
        return _started(state, loss, grad, options)
    return _searched(state, loss, grad, options)


def lbfgs_compact(state: LbfgsState) -> LbfgsState:
    """A stopped state without what only a running one uses: its result (``x``, ``loss``, the
    counters, ``status`` and ``message``) with empty gradient, trial point, direction and memory.

    A grid of many large models keeps one state per model; a stopped model's memory alone is
    ``2 · memory`` copies of its weights, which this lets go.

    Parameters
    ----------
    state : LbfgsState
        A stopped state (not ``state.running``).

    Returns
    -------
    LbfgsState
        ``trial`` is ``x``; ``grad`` and ``direction`` have shape (0,), ``s`` and ``y`` shape
        (0, n_params), ``n_pairs`` is 0.
    """
    if state.running:
        raise ValueError("only a stopped L-BFGS run can be compacted; this one still runs.")
    empty = np.zeros(0)
    no_pairs, no_products = np.zeros((0, state.x.size)), np.zeros((0, 0))
    return state._replace(
        grad=empty, trial=state.x, direction=empty, s=no_pairs, y=no_pairs, sy=no_products,
        yy=no_products, n_pairs=0, newest=0,
    )  # fmt: skip


def _started(
    state: LbfgsState, loss: float, grad: np.ndarray, options: LbfgsOptions
) -> LbfgsState:
    """The objective at ``x0`` is known: converged already, or the first line search."""
    state = state._replace(loss=loss, grad=grad, evals_since_accepted=0)
    if _grad_max(grad) <= options.tol:
        return _stopped(state, CONVERGED, "converged: max |gradient| <= tol at the start")
    return _begin_search(state, -grad, options, first=True)


def _searched(
    state: LbfgsState, loss: float, grad: np.ndarray, options: LbfgsOptions
) -> LbfgsState:
    """One answer of the line search: a new step to try, an accepted iterate, or a failure."""
    slope = float(grad @ state.direction)
    search, step, task = _dcsrch(state.search, state.search.step, loss, slope)
    if task == _FG and state.search_evals < MAX_LINE_SEARCH_EVALS and math.isfinite(step):
        return state._replace(search=search, trial=_point(state.x, step, state.direction))
    if task in (_CONV, _WARN):
        return _accepted(state, loss, grad, slope, options)
    return _search_failed(state, options)


def _accepted(
    state: LbfgsState, loss: float, grad: np.ndarray, slope: float, options: LbfgsOptions
) -> LbfgsState:
    """``trial`` becomes the iterate (``slope`` its gradient along the direction): the stopping
    rules, then the memory and a new search."""
    previous_loss, previous_grad = state.loss, state.grad
    step = state.search.step
    decrease = previous_loss - loss
    noise = options.rel_noise * max(abs(previous_loss), abs(loss))
    noisy = state.noisy_iterations + 1 if decrease <= noise else 0
    state = state._replace(
        x=state.trial, loss=loss, grad=grad, iteration=state.iteration + 1,
        evals_since_accepted=0, noisy_iterations=noisy,
    )  # fmt: skip
    if options.rel_noise > 0 and noisy >= NOISE_PATIENCE:
        return _stopped(
            state,
            CONVERGED,
            f"converged: the loss decreased by less than its rounding noise "
            f"(rel_noise={options.rel_noise:g}) in {NOISE_PATIENCE} iterations in a row",
        )
    if state.iteration >= options.max_iter:
        return _stopped(state, STOPPED, f"stopped: max_iter={options.max_iter} iterations done")
    if _grad_max(grad) <= options.tol:
        return _stopped(state, CONVERGED, "converged: max |gradient| <= tol")
    if decrease <= FTOL * max(abs(previous_loss), abs(loss), 1.0):
        return _stopped(
            state, CONVERGED, "converged: relative reduction of the loss <= FTOL"
        )
    state = _remember(state, step, previous_grad, slope)
    return _begin_search(state, _direction(state), options, first=False)


def _search_failed(state: LbfgsState, options: LbfgsOptions) -> LbfgsState:
    """The line search found no acceptable step: stop under noise, restart from ``−g`` with an
    empty memory, or, with no memory to clear, stop abnormally."""
    if options.rel_noise > 0 and state.evals_since_accepted >= MAX_LINE_SEARCH_EVALS:
        return _stopped(
            state,
            CONVERGED,
            f"converged: no lower loss found within {MAX_LINE_SEARCH_EVALS} line-search "
            f"evaluations; the decrease is lost in the loss's rounding noise "
            f"(rel_noise={options.rel_noise:g})",
        )
    if state.n_pairs == 0:
        if options.rel_noise > 0:
            return _stopped(
                state, CONVERGED, "converged: the line search stopped on rounding noise"
            )
        return _stopped(state, FAILED, "stopped abnormally: the line search failed")
    state = state._replace(n_pairs=0, newest=state.s.shape[0] - 1)
    return _begin_search(state, -state.grad, options, first=False)


def _begin_search(
    state: LbfgsState, direction: np.ndarray, options: LbfgsOptions, *, first: bool
) -> LbfgsState:
    """Start a line search from ``x`` along ``direction``: scipy's first trial step is
    ``1/‖d‖`` on the first iteration, 1 afterwards."""
    slope = float(state.grad @ direction)
    if not slope < 0:
        # Not a descent direction (rounding in the memory): what scipy does, restart or stop.
        return _search_failed(state._replace(direction=direction), options)
    step = min(1.0 / float(np.linalg.norm(direction)), _STEP_MAX) if first else 1.0
    search, step, _ = _dcsrch_start(step, state.loss, slope)
    return state._replace(
        direction=direction, search=search, search_evals=0, trial=_point(state.x, step, direction)
    )


def _remember(
    state: LbfgsState, step: float, previous_grad: np.ndarray, slope: float
) -> LbfgsState:
    """Add the pair ``s = step · direction``, ``y = grad − previous_grad`` to the memory, in place
    of its oldest pair once it is full, unless its curvature is not positive enough: L-BFGS-B's
    test ``sᵀy > ε · (−g_kᵀs)`` from the directional derivatives at both ends of the step
    (``slope`` at the new iterate, the search's ``ginit`` at the old one). The pair's products
    with the pairs kept go into ``sy`` and ``yy``."""
    start_slope = state.search.ginit
    if step * (slope - start_slope) <= _EPS * (-step * start_slope):
        return state
    memory = state.s.shape[0]
    newest = (state.newest + 1) % memory
    np.multiply(state.direction, step, out=state.s[newest])
    np.subtract(state.grad, previous_grad, out=state.y[newest])
    _store_products(state.s, state.y, state.sy, state.yy, newest)
    return state._replace(newest=newest, n_pairs=min(state.n_pairs + 1, memory))


def _store_products(
    s: np.ndarray, y: np.ndarray, sy: np.ndarray, yy: np.ndarray, j: int
) -> None:
    """The products of pair ``j`` with every pair: column ``j`` of ``sy`` (``sᵢᵀyⱼ``: every pair
    kept is older than the one just added) and row and column ``j`` of ``yy``."""
    sy[:, j] = s @ y[j]
    products = y @ y[j]
    yy[:, j] = products
    yy[j, :] = products


def pair_products(
    s: np.ndarray, y: np.ndarray, n_pairs: int, newest: int
) -> tuple[np.ndarray, np.ndarray]:
    """``sy`` and ``yy`` of :class:`LbfgsState` computed from the pairs themselves, for a state
    whose stored products are missing.

    Parameters
    ----------
    s, y : ndarray of shape (memory, n_params)
    n_pairs, newest : int
        The valid pairs: ``newest`` and the ``n_pairs − 1`` ring positions before it.

    Returns
    -------
    sy, yy : ndarray of shape (memory, memory)
    """
    memory = s.shape[0]
    sy, yy = np.zeros((memory, memory)), np.zeros((memory, memory))
    for j in _chronological(n_pairs, newest, memory):
        _store_products(s, y, sy, yy, j)
    return sy, yy


def positive_curvatures(state: LbfgsState) -> bool:
    """Whether every valid pair of ``state`` has ``sᵀy > 0`` and ``yᵀy > 0``: a run keeps no
    other (its direction divides by them), so a state read from a file must have them too."""
    valid = _chronological(state.n_pairs, state.newest, state.s.shape[0])
    return bool(np.all(state.sy[valid, valid] > 0) and np.all(state.yy[valid, valid] > 0))


def _chronological(n_pairs: int, newest: int, memory: int) -> list[int]:
    """The ring positions of the valid pairs, oldest first."""
    return [(newest - k) % memory for k in reversed(range(n_pairs))]


def _direction(state: LbfgsState) -> np.ndarray:
    """``−H g`` by the compact form ``H g = γg + S·p − γY·a``, with ``a = R⁻¹ Sᵀg`` and
    ``p = R⁻ᵀ((D + γ YᵀY) a − γ Yᵀg)`` (``R`` the upper triangle of ``SᵀY`` over the pairs
    oldest first, ``D`` its diagonal, ``γ = sᵀy / yᵀy`` of the newest pair); ``−g`` without
    pairs."""
    grad = state.grad
    if state.n_pairs == 0:
        return -grad
    memory = state.s.shape[0]
    order = _chronological(state.n_pairs, state.newest, memory)
    pairs = np.ix_(order, order)
    upper = np.triu(state.sy[pairs])
    yy = state.yy[pairs]
    newest = state.newest
    gamma = float(state.sy[newest, newest]) / float(state.yy[newest, newest])
    s_grad, y_grad = (state.s @ grad)[order], (state.y @ grad)[order]
    a = scipy.linalg.solve_triangular(upper, s_grad)
    middle = np.diag(np.diag(upper)) + gamma * yy
    p = scipy.linalg.solve_triangular(upper, middle @ a - gamma * y_grad, trans="T")
    s_coefficients, y_coefficients = np.zeros(memory), np.zeros(memory)
    s_coefficients[order], y_coefficients[order] = p, -gamma * a
    # Into the last direction's array, which the new pair has been copied from: no model-sized
    # temporary. The ring's unused positions hold finite numbers (zeros, or pairs a cleared
    # memory left) and get coefficient 0.
    direction = blas.dgemv(1.0, state.s.T, s_coefficients, 0.0, state.direction, overwrite_y=1)
    direction = blas.dgemv(1.0, state.y.T, y_coefficients, 1.0, direction, overwrite_y=1)
    direction = blas.daxpy(grad, direction, a=gamma)
    return np.negative(direction, out=direction)


def _stopped(state: LbfgsState, status: int, message: str) -> LbfgsState:
    return state._replace(status=status, message=message, trial=state.x)


def _grad_max(grad: np.ndarray) -> float:
    # Two reductions, no model-sized temporary.
    return max(float(np.max(grad)), -float(np.min(grad)))


def _point(x: np.ndarray, step: float, direction: np.ndarray) -> np.ndarray:
    """``x + step · direction`` as a new array, with one model-sized allocation."""
    point = np.multiply(direction, step)
    point += x
    return point


# -- the Moré–Thuente line search (MINPACK-2's dcsrch and dcstep) ------------------------------


def _dcsrch_start(step: float, finit: float, ginit: float) -> tuple[LineSearch, float, str]:
    """A search from a point of loss ``finit`` and directional derivative ``ginit < 0``."""
    search = LineSearch(
        step=step, stage=1, bracketed=0, stx=0.0, fx=finit, gx=ginit, sty=0.0, fy=finit,
        gy=ginit, stmin=0.0, stmax=step + 4.0 * step, finit=finit, ginit=ginit,
        gtest=_SEARCH_FTOL * ginit, width=_STEP_MAX, width1=_STEP_MAX / 0.5,
    )  # fmt: skip
    return search, step, _FG


def _dcsrch(search: LineSearch, step: float, f: float, g: float) -> tuple[LineSearch, float, str]:
    """One iteration of ``dcsrch``: the loss ``f`` and directional derivative ``g`` at ``step``
    in, the next step to evaluate (or the verdict) out."""
    ftest = search.finit + step * search.gtest
    stage = search.stage
    if stage == 1 and f <= ftest and g >= 0:
        stage = 2
    bracketed = bool(search.bracketed)
    task = _FG
    if bracketed and (step <= search.stmin or step >= search.stmax):
        task = _WARN  # rounding errors prevent progress
    if bracketed and search.stmax - search.stmin <= _SEARCH_XTOL * search.stmax:
        task = _WARN  # the interval is as small as xtol allows
    if step == _STEP_MAX and f <= ftest and g <= search.gtest:
        task = _WARN
    if step == 0.0 and (f > ftest or g >= search.gtest):
        task = _WARN
    if f <= ftest and abs(g) <= _SEARCH_GTOL * -search.ginit:
        task = _CONV
    if task != _FG:
        return search._replace(stage=stage), step, task
    stx, fx, gx, sty, fy, gy = search.stx, search.fx, search.gx, search.sty, search.fy, search.gy
    if stage == 1 and f <= fx and f > ftest:
        # A lower loss but not a sufficient decrease: step on the modified function
        # ψ(t) = f(t) − f(0) − ftol·t·f'(0).
        gtest = search.gtest
        stx, fxm, gxm, sty, fym, gym, step, bracketed = _dcstep(
            stx, fx - stx * gtest, gx - gtest, sty, fy - sty * gtest, gy - gtest,
            step, f - step * gtest, g - gtest, bracketed, search.stmin, search.stmax,
        )  # fmt: skip
        fx, fy = fxm + stx * gtest, fym + sty * gtest
        gx, gy = gxm + gtest, gym + gtest
    else:
        stx, fx, gx, sty, fy, gy, step, bracketed = _dcstep(
            stx, fx, gx, sty, fy, gy, step, f, g, bracketed, search.stmin, search.stmax
        )
    width, width1 = search.width, search.width1
    if bracketed:
        if abs(sty - stx) >= 0.66 * width1:
            step = stx + 0.5 * (sty - stx)
        width1 = width
        width = abs(sty - stx)
        stmin, stmax = min(stx, sty), max(stx, sty)
    else:
        stmin = step + 1.1 * (step - stx)
        stmax = step + 4.0 * (step - stx)
    step = min(max(step, 0.0), _STEP_MAX)
    if bracketed and (step <= stmin or step >= stmax or stmax - stmin <= _SEARCH_XTOL * stmax):
        step = stx
    search = LineSearch(
        step=step, stage=stage, bracketed=int(bracketed), stx=stx, fx=fx, gx=gx, sty=sty,
        fy=fy, gy=gy, stmin=stmin, stmax=stmax, finit=search.finit, ginit=search.ginit,
        gtest=search.gtest, width=width, width1=width1,
    )  # fmt: skip
    return search, step, _FG


def _sign(value: float) -> float:
    return (value > 0) - (value < 0)


def _dcstep(
    stx: float, fx: float, dx: float, sty: float, fy: float, dy: float,
    stp: float, fp: float, dp: float, bracketed: bool, stpmin: float, stpmax: float,
) -> tuple[float, float, float, float, float, float, float, bool]:  # fmt: skip
    """MINPACK-2's ``dcstep``: a safeguarded cubic or quadratic step, and the updated interval
    ``[stx, sty]`` that holds a step satisfying both line-search conditions."""
    sgnd = _sign(dp) * _sign(dx)
    if fp > fx:
        # A higher loss: the minimum is bracketed; cubic step, or between cubic and quadratic.
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * math.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
        if stp < stx:
            gamma = -gamma
        p = (gamma - dx) + theta
        q = ((gamma - dx) + gamma) + dp
        stpc = stx + (p / q) * (stp - stx)
        stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx)
        stpf = stpc if abs(stpc - stx) <= abs(stpq - stx) else stpc + (stpq - stpc) / 2.0
        bracketed = True
    elif sgnd < 0.0:
        # Derivatives of opposite signs: bracketed; cubic or secant step.
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * math.sqrt((theta / s) ** 2 - (dx / s) * (dp / s))
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = ((gamma - dp) + gamma) + dx
        stpc = stp + (p / q) * (stx - stp)
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
        bracketed = True
    elif abs(dp) < abs(dx):
        # Same signs, the derivative's magnitude decreases: cubic step toward the minimum if it
        # lies beyond stp, else the secant step, safeguarded.
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        gamma = s * math.sqrt(max(0.0, (theta / s) ** 2 - (dx / s) * (dp / s)))
        if stp > stx:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = (gamma + (dx - dp)) + gamma
        r = p / q
        if r < 0 and gamma != 0:
            stpc = stp + r * (stx - stp)
        elif stp > stx:
            stpc = stpmax
        else:
            stpc = stpmin
        stpq = stp + (dp / (dp - dx)) * (stx - stp)
        if bracketed:
            stpf = stpc if abs(stpc - stp) < abs(stpq - stp) else stpq
            if stp > stx:
                stpf = min(stp + 0.66 * (sty - stp), stpf)
            else:
                stpf = max(stp + 0.66 * (sty - stp), stpf)
        else:
            stpf = stpc if abs(stpc - stp) > abs(stpq - stp) else stpq
            stpf = min(max(stpf, stpmin), stpmax)
    elif bracketed:
        # Same signs, the derivative's magnitude does not decrease: cubic step on [stp, sty].
        theta = 3.0 * (fp - fy) / (sty - stp) + dy + dp
        s = max(abs(theta), abs(dy), abs(dp))
        gamma = s * math.sqrt((theta / s) ** 2 - (dy / s) * (dp / s))
        if stp > sty:
            gamma = -gamma
        p = (gamma - dp) + theta
        q = ((gamma - dp) + gamma) + dy
        stpf = stp + (p / q) * (sty - stp)
    else:
        stpf = stpmax if stp > stx else stpmin
    if fp > fx:
        sty, fy, dy = stp, fp, dp
    else:
        if sgnd < 0:
            sty, fy, dy = stx, fx, dx
        stx, fx, dx = stp, fp, dp
    return stx, fx, dx, sty, fy, dy, stpf, bracketed
