"""Optimizers as pure ``init``/``update`` pairs, learning-rate schedules, and full-batch L-BFGS.

Minibatch optimizers (:data:`OPTIMIZERS`) follow one protocol, :class:`GradientTransformation`:

>>> import numpy as np
>>> from dsoftmax.objective import Params
>>> from dsoftmax.optim import OPTIMIZERS, apply_updates
>>> optimizer = OPTIMIZERS["sgd"](learning_rate=0.1, momentum=0.9)
>>> params = Params(np.zeros((2, 3)), np.zeros(2))
>>> state = optimizer.init(params)
>>> grads = Params(np.ones((2, 3)), np.ones(2))
>>> updates, state = optimizer.update(grads, state, params)
>>> params = apply_updates(params, updates)
>>> float(params.coef[0, 0])
-0.1

Full-batch training uses :func:`minimize_lbfgs` over a flat parameter vector.
"""

from collections.abc import Callable

from dsoftmax.optim.adam import AdamState, adam
from dsoftmax.optim.base import (
    GradientTransformation,
    OptState,
    ParamTree,
    Schedule,
    apply_updates,
    tree_map,
    zeros_like_tree,
)
from dsoftmax.optim.lbfgs import (
    MAX_LINE_SEARCH_EVALS,
    NOISE_PATIENCE,
    LbfgsResult,
    minimize_lbfgs,
)
from dsoftmax.optim.schedules import (
    SCHEDULES,
    as_schedule,
    constant,
    cosine,
    inverse_scaling,
    make_schedule,
    step_decay,
)
from dsoftmax.optim.sgd import SGDState, sgd

#: Minibatch optimizers by name: factories returning a :class:`GradientTransformation`.
OPTIMIZERS: dict[str, Callable[..., GradientTransformation]] = {"sgd": sgd, "adam": adam}

__all__ = [
    "MAX_LINE_SEARCH_EVALS",
    "NOISE_PATIENCE",
    "OPTIMIZERS",
    "SCHEDULES",
    "AdamState",
    "GradientTransformation",
    "LbfgsResult",
    "OptState",
    "ParamTree",
    "SGDState",
    "Schedule",
    "adam",
    "apply_updates",
    "as_schedule",
    "constant",
    "cosine",
    "inverse_scaling",
    "make_schedule",
    "minimize_lbfgs",
    "sgd",
    "step_decay",
    "tree_map",
    "zeros_like_tree",
]
