"""The fixed-order reduce tree over the blocks of an evaluation (pure Python, no Dask).

The parts of an evaluation (one per block, in block order) are added by a tree of fan-in
:data:`REDUCE_FAN_IN`: node ``(level, index)`` adds the parts at positions
``[index·F^level, (index + 1)·F^level)``, each node adding its children left to right. The order
of the floating-point additions therefore depends only on the number of parts, never on which
worker holds which block: a worker adds up the largest subtrees whose parts it holds
(:func:`owned_nodes`, :func:`fold_owned`), the client adds the rest (:func:`node_value`), and the
bits are those of :func:`tree_reduce` on one machine.
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

#: A node of the reduce tree: ``(level, index)``; level 0 is one part.
Node = tuple[int, int]


def tree_reduce(parts: Sequence[T], add_group: Callable[[list[T]], T]) -> T:
    """Reduce ``parts`` with the fixed tree: groups of :data:`REDUCE_FAN_IN` consecutive parts,
    level by level. The order of additions depends only on ``len(parts)``."""
    if not parts:
        raise ValueError("nothing to reduce: the row selection is empty.")
    leaves = {(0, position): part for position, part in enumerate(parts)}
    return node_value(tree_root(len(parts)), leaves, len(parts), add_group)


def tree_root(n_parts: int) -> Node:
    """The root of the reduce tree over ``n_parts`` parts."""
    level, width = 0, n_parts
    while width > 1:
        width = -(-width // REDUCE_FAN_IN)
        level += 1
    return level, 0


def _children(node: Node, n_parts: int) -> range:
    level, index = node
    width_below = -(-n_parts // REDUCE_FAN_IN ** (level - 1))
    return range(index * REDUCE_FAN_IN, min((index + 1) * REDUCE_FAN_IN, width_below))


def node_value(
    node: Node, known: dict[Node, T], n_parts: int, add_group: Callable[[list[T]], T]
) -> T:
    """The sum at ``node``, from the values ``known`` for some nodes below or at it. Every
    node adds its children left to right, so a subtree summed on a worker has the same bits as
    the same subtree summed on the client."""
    if node in known:
        return known[node]
    level = node[0]
    if level == 0:
        raise KeyError(f"part {node[1]} of the reduce is missing")
    return add_group(
        [
            node_value((level - 1, child), known, n_parts, add_group)
            for child in _children(node, n_parts)
        ]
    )


def owned_nodes(positions: Sequence[int], n_parts: int) -> list[Node]:
    """The largest nodes of the reduce tree whose parts are all among ``positions``, in order:
    what a worker holding those parts can add up itself before sending."""
    held = np.zeros(n_parts + 1, dtype=np.int64)
    held[1:][np.asarray(positions, dtype=np.int64)] = 1
    counts = np.cumsum(held)
    found: list[Node] = []

    def visit(node: Node) -> None:
        level, index = node
        low = index * REDUCE_FAN_IN**level
        high = min((index + 1) * REDUCE_FAN_IN**level, n_parts)
        count = counts[high] - counts[low]
        if count == high - low:
            found.append(node)
        elif count:
            for child in _children(node, n_parts):
                visit((level - 1, child))

    visit(tree_root(n_parts))
    return found


def reduce_owned(
    parts: dict[int, T], n_parts: int, add_group: Callable[[list[T]], T]
) -> list[tuple[Node, T]]:
    """The sums of the largest subtrees made of ``parts`` (position → part), all parts at
    hand: the reference of :func:`fold_owned`."""
    leaves = {(0, position): part for position, part in parts.items()}
    return [
        (node, node_value(node, leaves, n_parts, add_group))
        for node in owned_nodes(sorted(parts), n_parts)
    ]


def fold_owned(
    leaves: Iterator[T],
    positions: Sequence[int],
    n_parts: int,
    own: Callable[[T], T],
    add: Callable[[T, T], T],
) -> list[tuple[Node, T]]:
    """:func:`reduce_owned` for parts that come one at a time, in increasing position.

    Each node adds its children left to right, as :func:`node_value` does, but into the total
    of its first child: ``own`` turns a part into a total of its own (a copy where it must be
    changed in place), ``add(total, part)`` adds a part or a subtree's total to it and returns
    the total. Only one part and one total per tree level are alive at a time, however many
    parts there are.
    """
    if any(later <= earlier for earlier, later in itertools.pairwise(positions)):
        raise ValueError(f"positions must increase, got {list(positions)}")

    def fold(node: Node, first: bool) -> T:
        level = node[0]
        if level == 0:
            part = next(leaves)
            return own(part) if first else part
        children = iter(_children(node, n_parts))
        total = fold((level - 1, next(children)), first=True)
        for child in children:
            total = add(total, fold((level - 1, child), first=False))
        return total

    return [(node, fold(node, first=True)) for node in owned_nodes(positions, n_parts)]
