"""The types every optimizer shares and the helpers that map over parameter trees.

An optimizer is a :class:`GradientTransformation`: a pair of pure functions

.. code-block:: python

    state = optimizer.init(params)
    updates, state = optimizer.update(grads, state, params)
    params = apply_updates(params, updates)

with its hyper-parameters closed over by a factory (:func:`dsoftmax.optim.sgd`,
:func:`dsoftmax.optim.adam`). Nothing is mutated: ``update`` returns new arrays and a new state.

A *parameter tree* is a (named) tuple whose leaves are ndarrays or None, such as
:class:`dsoftmax.objective.Params` ``(coef, intercept)`` with ``intercept=None`` for a model
without an intercept; tuples may nest. An optimizer state is a NamedTuple whose fields are Python
ints/floats or parameter trees of float64 arrays, so it can be saved as plain arrays plus JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import numpy as np

__all__ = [
    "GradientTransformation",
    "OptState",
    "ParamTree",
    "Schedule",
    "apply_updates",
    "tree_map",
    "zeros_like_tree",
]

#: A (named) tuple whose leaves are ndarrays or None, e.g. :class:`dsoftmax.objective.Params`.
ParamTree: TypeAlias = tuple
#: An optimizer's state: a NamedTuple of ints/floats and float64 parameter trees.
OptState: TypeAlias = Any
#: Learning rate as a function of the 0-based step count.
Schedule: TypeAlias = Callable[[int], float]


class GradientTransformation(NamedTuple):
    """An optimizer as a pair of pure functions.

    Attributes
    ----------
    init : callable ``(params) -> state``
        The state before the first step.
    update : callable ``(grads, state, params) -> (updates, new_state)``
        ``updates`` has the structure of ``grads``; add it with :func:`apply_updates`.
    """

    init: Callable[[ParamTree], OptState]
    update: Callable[[ParamTree, OptState, ParamTree | None], tuple[ParamTree, OptState]]


def _is_tree(node: object) -> bool:
    return isinstance(node, tuple)


def _tree_name(tree: tuple) -> str:
    return type(tree).__name__


def _leaf_name(tree: tuple, index: int) -> str:
    fields = getattr(type(tree), "_fields", None)
    return fields[index] if fields else str(index)


def _rebuild(like: tuple, values: list) -> tuple:
    if hasattr(type(like), "_fields"):
        return type(like)(*values)
    return type(like)(values)


def tree_map(fn: Callable[..., Any], *trees: ParamTree) -> ParamTree:
    """Apply ``fn`` leaf by leaf over trees of the same structure; None leaves stay None.

    Parameters
    ----------
    fn : callable
        Called as ``fn(leaf_0, leaf_1, ...)`` with the matching leaf of every tree.
    *trees : (named) tuples
        The first tree gives the structure (and the type of the result); the others must have
        the same number of fields and None at the same places.

    Returns
    -------
    tree
        Same type and structure as ``trees[0]``.

    Examples
    --------
    >>> import numpy as np
    >>> from dsoftmax.objective import Params
    >>> tree_map(lambda a, b: a + b, Params(np.ones(2), None), Params(np.ones(2), None))
    Params(coef=array([2., 2.]), intercept=None)
    """
    if not trees:
        raise TypeError("tree_map needs at least one tree.")
    first = trees[0]
    if not _is_tree(first):
        raise TypeError(
            f"tree_map expects (named) tuples of arrays such as Params, got {type(first).__name__}."
        )
    for other in trees[1:]:
        if not _is_tree(other) or len(other) != len(first):
            found = type(other).__name__
            if _is_tree(other):
                found += f" of length {len(other)}"
            raise ValueError(
                f"tree_map needs trees of the same structure: {_tree_name(first)} has "
                f"{len(first)} fields, the other tree is {found}."
            )
    values = []
    for index, leaves in enumerate(zip(*trees, strict=True)):
        is_none = [leaf is None for leaf in leaves]
        if all(is_none):
            values.append(None)
        elif any(is_none):
            raise ValueError(
                f"field {_leaf_name(first, index)!r} of {_tree_name(first)} is None in some trees "
                "and an array in others; pass None (or an array) in all of them, e.g. a "
                "gradient without an intercept for a model without one."
            )
        elif _is_tree(leaves[0]):
            values.append(tree_map(fn, *leaves))
        else:
            values.append(fn(*leaves))
    return _rebuild(first, values)


def zeros_like_tree(tree: ParamTree) -> ParamTree:
    """float64 zeros with the shapes of ``tree``'s leaves (None stays None)."""
    return tree_map(lambda leaf: np.zeros(np.shape(leaf), dtype=np.float64), tree)


def apply_updates(params: ParamTree, updates: ParamTree) -> ParamTree:
    """Return ``params + updates`` leaf by leaf, in float64; the inputs are not modified.

    Parameters
    ----------
    params : tree
        e.g. :class:`~dsoftmax.objective.Params` with ``coef`` of shape (n_classes, n_features).
    updates : tree
        Same structure, as returned by an optimizer's ``update``.

    Returns
    -------
    tree
        Same type as ``params``.
    """
    return tree_map(
        lambda param, update: np.asarray(param, dtype=np.float64) + update, params, updates
    )
