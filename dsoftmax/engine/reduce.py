"""The fixed-order reduce tree over the blocks of an evaluation (pure Python, no Dask).

The leaves of the tree are the dataset's blocks, in block order; an evaluation's parts are the
blocks it selects (all of them for a pass, those holding a minibatch's rows for a step). The
parts are added by a tree of fan-in :data:`REDUCE_FAN_IN`: node ``(level, index)`` covers the
leaves ``[index·F^level, (index + 1)·F^level)`` and adds the values of its children that hold
a part, left to right; a subtree without parts is skipped. The order of the floating-point
additions therefore depends only on which blocks are selected, never on which worker holds
which block: a worker adds up the largest subtrees whose parts it holds (:func:`owned_nodes`,
:func:`fold_owned`), the client adds the rest (:func:`node_value`), and the bits are those of
:func:`tree_reduce` on one machine. Because the tree is over the blocks, not over the selected
ones, a minibatch splits between the workers where a pass does, and the client receives as few
subtrees for a step as for a pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np

__all__ = [
    "REDUCE_FAN_IN",
    "Node",
    "fold_owned",
    "node_value",
    "owned_nodes",
    "reduce_owned",
    "tree_reduce",
    "tree_root",
]

#: Partial results added by one node of the tree.
REDUCE_FAN_IN = 4

T = TypeVar("T")

#: A node of the reduce tree: ``(level, index)``; level 0 is one leaf.
Node = tuple[int, int]


def tree_reduce(parts: Sequence[T], add_group: Callable[[list[T]], T]) -> T:
    """Reduce ``parts`` with the fixed tree over as many leaves: groups of
    :data:`REDUCE_FAN_IN` consecutive parts, level by level."""
    if not parts:
        raise ValueError("nothing to reduce: the row selection is empty.")
    leaves = {(0, position): part for position, part in enumerate(parts)}
    return node_value(tree_root(len(parts)), leaves, len(parts), add_group)


def tree_root(n_parts: int) -> Node:
    """The root of the reduce tree over ``n_parts`` leaves."""
    level, width = 0, n_parts
    while width > 1:
        width = -(-width // REDUCE_FAN_IN)
        level += 1
    return level, 0


def _children(node: Node, n_parts: int) -> range:
    level, index = node
    width_below = -(-n_parts // REDUCE_FAN_IN ** (level - 1))
    return range(index * REDUCE_FAN_IN, min((index + 1) * REDUCE_FAN_IN, width_below))


def _leaf_span(node: Node, n_parts: int) -> tuple[int, int]:
    """The leaves ``[low, high)`` under ``node``."""
    level, index = node
    return index * REDUCE_FAN_IN**level, min((index + 1) * REDUCE_FAN_IN**level, n_parts)


def _sorted_leaves(positions: Sequence[int] | None) -> np.ndarray | None:
    """``positions`` as a sorted array for :func:`_count` (None: every leaf)."""
    return None if positions is None else np.sort(np.asarray(positions, dtype=np.int64))


def _count(leaves: np.ndarray | None, node: Node, n_parts: int) -> int:
    """How many of the sorted ``leaves`` (None: every leaf) lie under ``node``: two binary
    searches, so that a few nodes of a tree over many blocks cost no pass over all of them."""
    low, high = _leaf_span(node, n_parts)
    if leaves is None:
        return high - low
    return int(np.searchsorted(leaves, high) - np.searchsorted(leaves, low))


def node_value(
    node: Node,
    known: dict[Node, T],
    n_parts: int,
    add_group: Callable[[list[T]], T],
    present: Sequence[int] | None = None,
) -> T:
    """The sum at ``node``, from the values ``known`` for some nodes below or at it.

    ``present`` lists the leaves that hold a part (None: all of them); subtrees without one are
    skipped. Every node adds its children left to right, so a subtree summed on a worker has
    the same bits as the same subtree summed on the client.
    """
    present_leaves = _sorted_leaves(present)
    if not _count(present_leaves, node, n_parts):
        raise ValueError("nothing to reduce: the row selection is empty.")
    return _value(node, known, n_parts, add_group, present_leaves)


def _present_children(
    node: Node, n_parts: int, present_leaves: np.ndarray | None
) -> list[Node]:
    """The children of ``node`` with at least one of the sorted ``present_leaves`` under them."""
    level = node[0]
    children = ((level - 1, child) for child in _children(node, n_parts))
    return [child for child in children if _count(present_leaves, child, n_parts)]


def _value(
    node: Node,
    known: dict[Node, T],
    n_parts: int,
    add_group: Callable[[list[T]], T],
    present_leaves: np.ndarray | None,
) -> T:
    # Module-level recursion: a recursive closure is a reference cycle, which would keep every
    # value it saw until the collector's next full pass.
    if node in known:
        return known[node]
    if node[0] == 0:
        raise KeyError(f"part {node[1]} of the reduce is missing")
    return add_group(
        [
            _value(child, known, n_parts, add_group, present_leaves)
            for child in _present_children(node, n_parts, present_leaves)
        ]
    )


def owned_nodes(
    positions: Sequence[int], n_parts: int, present: Sequence[int] | None = None
) -> list[Node]:
    """The largest nodes of the reduce tree whose parts are all among ``positions``, in order:
    what a worker holding those parts can add up itself before sending. ``present`` lists
    every leaf that holds a part, the worker's and the others' (None: all leaves)."""
    mine = _sorted_leaves(positions)
    everyone = _sorted_leaves(present)
    found: list[Node] = []
    pending = [tree_root(n_parts)]
    while pending:
        node = pending.pop()
        count = _count(mine, node, n_parts)
        if count and count == _count(everyone, node, n_parts):
            found.append(node)
        elif count:
            pending.extend(reversed(_present_children(node, n_parts, mine)))
    return found


def reduce_owned(
    parts: dict[int, T],
    n_parts: int,
    add_group: Callable[[list[T]], T],
    present: Sequence[int] | None = None,
) -> list[tuple[Node, T]]:
    """The sums of the largest subtrees made of ``parts`` (position → part), all parts at
    hand: the reference of :func:`fold_owned`."""
    leaves = {(0, position): part for position, part in parts.items()}
    return [
        (node, node_value(node, leaves, n_parts, add_group, sorted(parts)))
        for node in owned_nodes(sorted(parts), n_parts, present)
    ]


def fold_owned(
    leaves: Iterator[T],
    positions: Sequence[int],
    n_parts: int,
    own: Callable[[T], T],
    add: Callable[[T, T], T],
    nodes: Sequence[Node] | None = None,
) -> list[tuple[Node, T]]:
    """:func:`reduce_owned` for parts that come one at a time, in increasing position.

    ``nodes`` are the subtrees to add up, each holding only parts among ``positions`` (None:
    ``owned_nodes(positions, n_parts)``, every leaf holding a part). Each node adds its children
    left to right, as :func:`node_value` does, but into the total of its first child: ``own``
    turns a part into a total of its own (a copy where it must be changed in place),
    ``add(total, part)`` adds a part or a subtree's total to it and returns the total. Only one
    part and one total per tree level are alive at a time, however many parts there are.
    """
    if any(later <= earlier for earlier, later in itertools.pairwise(positions)):
        raise ValueError(f"positions must increase, got {list(positions)}")
    if nodes is None:
        nodes = owned_nodes(positions, n_parts)
    present_leaves = _sorted_leaves(positions)
    return [(node, _fold(node, True, leaves, n_parts, present_leaves, own, add)) for node in nodes]


def _fold(
    node: Node,
    first: bool,
    leaves: Iterator[T],
    n_parts: int,
    present_leaves: np.ndarray | None,
    own: Callable[[T], T],
    add: Callable[[T, T], T],
) -> T:
    """The total of ``node`` for :func:`fold_owned`, its parts taken from ``leaves``."""
    if node[0] == 0:
        part = next(leaves)
        return own(part) if first else part
    first_child, *others = _present_children(node, n_parts, present_leaves)
    total = _fold(first_child, True, leaves, n_parts, present_leaves, own, add)
    for child in others:
        total = add(total, _fold(child, False, leaves, n_parts, present_leaves, own, add))
    return total
