"""The tasks a :class:`dsoftmax.engine.dask.DaskEngine` runs on the workers (their names show
on the Dask dashboard): an evaluation over held blocks, one over blocks streamed from the store,
and the task that holds an evaluation's parameters on a worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import distributed

from ..objective import Params
from .blocks import Block, Evaluation, Share, evaluate_share
from .reduce import Node
from .sources import read_block

__all__ = ["evaluate_held_share", "evaluate_streamed_share", "hold_params"]


def evaluate_held_share(
    evaluation: Evaluation, share: Share, blocks: list[Block]
) -> tuple[str, list[tuple[Node, Any]]]:
    """Worker task: :func:`dsoftmax.engine.blocks.evaluate_share` over blocks held in worker
    memory, with the worker's address (so the client notices when work moved after a worker
    loss)."""
    return distributed.get_worker().address, evaluate_share(evaluation, share, blocks)


def evaluate_streamed_share(
    evaluation: Evaluation, share: Share, sources: list[tuple[Any, Any, Any]]
) -> list[tuple[Node, Any]]:
    """Worker task: :func:`dsoftmax.engine.blocks.evaluate_share` over blocks read from their
    source one after the other, the next one in a thread while the current one is evaluated: at
    most two blocks are in memory at a time, and the store's latency hides behind the
    arithmetic."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsoftmax-prefetch") as pool:

        def blocks() -> Iterator[Block]:
            upcoming = pool.submit(read_block, sources[0])
            for step in range(len(sources)):
                block = upcoming.result()
                if step + 1 < len(sources):
                    upcoming = pool.submit(read_block, sources[step + 1])
                yield block
                del block

        return evaluate_share(evaluation, share, blocks())


def hold_params(params: Params) -> Params:
    """Task that holds the parameters of one evaluation on a worker."""
    return params
