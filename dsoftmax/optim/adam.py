r"""Adam (Kingma & Ba, 2015) with bias correction.

With gradient :math:`g_t`, learning rate :math:`\eta_t` (a schedule of the 0-based step
:math:`t`), element-wise operations and :math:`m_0 = s_0 = 0`:

.. math::

    m_{t+1} = \beta_1 m_t + (1 - \beta_1)\, g_t,\qquad
    s_{t+1} = \beta_2 s_t + (1 - \beta_2)\, g_t^2,

    \hat m = \frac{m_{t+1}}{1 - \beta_1^{t+1}},\qquad
    \hat s = \frac{s_{t+1}}{1 - \beta_2^{t+1}},\qquad
    \Delta_t = -\eta_t\, \frac{\hat m}{\sqrt{\hat s} + \epsilon}.

For a constant gradient, :math:`\hat m = g` and :math:`\hat s = g^2` at every step, so each
update is :math:`-\eta_t\, g / (|g| + \epsilon) \approx -\eta_t \operatorname{sign}(g)`.
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
from dsoftmax.validation import finite_float

__all__ = ["AdamState", "adam"]


class AdamState(NamedTuple):
    """State of :func:`adam`.

    Attributes
    ----------
    step : int
        Number of updates done so far (``t``).
    mu : tree of float64 ndarrays
        First-moment estimate ``m_t``, the structure of the parameters.
    nu : tree of float64 ndarrays
        Second-moment estimate ``s_t``.
    """

    step: int
    mu: ParamTree
    nu: ParamTree


def _decay_rate(name: str, value: object) -> float:
    rate = finite_float(name, value)
    if not 0 <= rate < 1:
        raise ValueError(f"{name} must be in [0, 1), got {rate!r}.")
    return rate


def adam(
    learning_rate: float | Schedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> GradientTransformation:
    """Adam with bias correction (see the module docstring for the math).

    Parameters
    ----------
    learning_rate : float or Schedule
        ``η``, a positive constant or a function of the 0-based step.
    b1 : float
        ``β₁`` in [0, 1), decay of the first moment.
    b2 : float
        ``β₂`` in [0, 1), decay of the second moment.
    eps : float
        ``ε > 0`` added to ``√ŝ``.

    Returns
    -------
    GradientTransformation
        ``init(params) -> AdamState`` and ``update(grads, state, params=None) -> (updates, state)``.

    Examples
    --------
    >>> import numpy as np
    >>> from dsoftmax.objective import Params
    >>> opt = adam(0.1)
    >>> params = Params(np.zeros(2), None)
    >>> updates, state = opt.update(Params(np.array([3.0, -0.5]), None), opt.init(params))
    >>> np.round(updates.coef, 6)
    array([-0.1,  0.1])
    """
    schedule = as_schedule(learning_rate)
    beta1 = _decay_rate("b1", b1)
    beta2 = _decay_rate("b2", b2)
    epsilon = finite_float("eps", eps)
    if not epsilon > 0:
        raise ValueError(f"eps must be > 0, got {epsilon!r}; 1e-8 is the usual choice.")

    def init(params: ParamTree) -> AdamState:
        return AdamState(step=0, mu=zeros_like_tree(params), nu=zeros_like_tree(params))

    def update(
        grads: ParamTree, state: AdamState, params: ParamTree | None = None
    ) -> tuple[ParamTree, AdamState]:
        eta = schedule(state.step)
        count = int(state.step) + 1
        mu = tree_map(
            lambda m, g: beta1 * m + (1 - beta1) * np.asarray(g, dtype=np.float64), state.mu, grads
        )
        nu = tree_map(
            lambda s, g: beta2 * s + (1 - beta2) * np.square(np.asarray(g, dtype=np.float64)),
            state.nu,
            grads,
        )
        mu_correction = 1 - beta1**count
        nu_correction = 1 - beta2**count
        updates = tree_map(
            lambda m, s: -eta * (m / mu_correction) / (np.sqrt(s / nu_correction) + epsilon),
            mu,
            nu,
        )
        return updates, AdamState(step=count, mu=mu, nu=nu)

    return GradientTransformation(init, update)
