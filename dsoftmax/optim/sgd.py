r"""Stochastic gradient descent with optional (Nesterov) momentum, PyTorch's convention.

With gradient :math:`g_t`, learning rate :math:`\eta_t` (a schedule of the 0-based step
:math:`t`) and momentum :math:`\mu \in [0, 1)`:

.. math::

    v_{t+1} = \mu\, v_t + g_t,\qquad v_0 = 0,

    \Delta_t = -\eta_t\, v_{t+1}                    \quad\text{(heavy ball)},\qquad
    \Delta_t = -\eta_t\, (g_t + \mu\, v_{t+1})      \quad\text{(Nesterov)}.

With :math:`\mu = 0` both are plain SGD, :math:`\Delta_t = -\eta_t g_t`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from dsoftmax.optim.base import (
    GradientTransformation,
    ParamTree,
    Schedule,
    tree_map,
    zeros_like_tree,
)
from dsoftmax.optim.schedules import as_schedule
from dsoftmax.validation import UNIT_INTERVAL, check_nesterov, check_number

__all__ = ["SGDState", "sgd"]


class SGDState(NamedTuple):
    """State of :func:`sgd`.

    Attributes
    ----------
    step : int
        Number of updates done so far (the schedule's ``t``).
    velocity : tree of float64 ndarrays
        ``v_t``, the structure of the parameters (all zeros, unused beyond ``v = g``, when
        momentum is 0).
    """

    step: int
    velocity: ParamTree


def sgd(
    learning_rate: float | Schedule, momentum: float = 0.0, nesterov: bool = False
) -> GradientTransformation:
    """SGD, heavy-ball momentum, or Nesterov momentum (see the module docstring for the math).

    Parameters
    ----------
    learning_rate : float or Schedule
        ``η``, a positive constant or a function of the 0-based step.
    momentum : float
        ``μ`` in [0, 1).
    nesterov : bool
        Use Nesterov's look-ahead; needs ``momentum > 0``.

    Returns
    -------
    GradientTransformation
        ``init(params) -> SGDState`` and ``update(grads, state, params=None) -> (updates, state)``.

    Examples
    --------
    >>> import numpy as np
    >>> from dsoftmax.objective import Params
    >>> opt = sgd(0.5)
    >>> params = Params(np.ones((1, 2)), None)
    >>> updates, state = opt.update(Params(np.ones((1, 2)), None), opt.init(params))
    >>> updates.coef
    array([[-0.5, -0.5]])
    """
    schedule = as_schedule(learning_rate)
    mu = check_number("momentum", momentum, UNIT_INTERVAL, fix="0.9 is the usual choice")
    nesterov = check_nesterov(nesterov, mu)

    def init(params: ParamTree) -> SGDState:
        return SGDState(step=0, velocity=zeros_like_tree(params))

    def update(
        grads: ParamTree, state: SGDState, params: ParamTree | None = None
    ) -> tuple[ParamTree, SGDState]:
        eta = schedule(state.step)
        velocity = tree_map(
            lambda v, g: mu * v + np.asarray(g, dtype=np.float64), state.velocity, grads
        )
        if nesterov:
            updates = tree_map(
                lambda g, v: -eta * (np.asarray(g, dtype=np.float64) + mu * v), grads, velocity
            )
        else:
            updates = tree_map(lambda v: -eta * v, velocity)
        return updates, SGDState(step=int(state.step) + 1, velocity=velocity)

    return GradientTransformation(init, update)
