"""What every engine offers: the kinds of evaluation, over the rows of a batch."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..kernels.stacked import Stack, StackMetrics, StackSums
from ..objective import BlockMetrics, BlockReport, BlockSums, Params
from ..sampling import RowBatch
from .blocks import Evaluation

__all__ = ["Evaluations", "LoadProgress"]


class Evaluations:
    """The public evaluations of an engine, each one call of its ``_evaluate``.

    A subclass provides ``_evaluate(evaluation, batch)``, which runs
    :func:`dsoftmax.engine.blocks.evaluate_share` over the blocks of ``batch`` (every row when
    None) and adds the subtrees' values with the fixed reduce tree.
    """

    def _evaluate(self, evaluation: Evaluation, batch: RowBatch | None) -> Any:
        raise NotImplementedError

    def sums(
        self,
        params: Params,
        batch: RowBatch | None = None,
        *,
        class_weight: np.ndarray | None = None,
    ) -> BlockSums:
        """Loss and gradient sums over the rows of ``batch`` (every row when None)."""
        return self._evaluate(Evaluation("sums", params, class_weight, 0), batch)

    def metrics(
        self,
        params: Params,
        batch: RowBatch | None = None,
        *,
        class_weight: np.ndarray | None = None,
    ) -> BlockMetrics:
        """Weighted loss, correct predictions and weight over the rows of ``batch``."""
        return self._evaluate(Evaluation("metrics", params, class_weight, 0), batch)

    def report(
        self,
        params: Params,
        batch: RowBatch | None = None,
        *,
        class_weight: np.ndarray | None = None,
    ) -> BlockReport:
        """Weighted loss, weight and confusion matrix over the rows of ``batch``."""
        return self._evaluate(Evaluation("report", params, class_weight, 0), batch)

    def grid_sums(
        self,
        stack: Stack,
        batch: RowBatch | None = None,
        *,
        class_weight: np.ndarray | None = None,
    ) -> StackSums:
        """Every stacked model's loss and gradient sums over its training rows among those of
        ``batch`` (:mod:`dsoftmax.engine.grid`)."""
        return self._evaluate(Evaluation("grid_sums", stack, class_weight, 0), batch)

    def grid_metrics(self, stack: Stack, batch: RowBatch | None = None) -> StackMetrics:
        """Every stacked model's weighted loss, correct predictions and weight over its held-out
        rows among those of ``batch`` (sample weights only)."""
        return self._evaluate(Evaluation("grid_metrics", stack, None, 0), batch)

    def block_stats(self, n_classes: int) -> list[Any]:
        """The data layer's value checks of every block (:func:`dsoftmax.data.block_stats`),
        run where the rows are, in block order."""
        return self._evaluate(Evaluation("stats", None, None, n_classes), None)


class LoadProgress:
    """The progress bar of an engine's load: bytes read into memory, with the blocks done.

    Shown on stderr when ``show`` and stderr is a terminal; the load's duration and rate is
    logged at INFO when it ends.

    Parameters
    ----------
    block_bytes : sequence of int
        In-memory bytes of each block to load.
    show : bool
    where : str
        Where the blocks go, for the bar and the log line ("worker memory", "this process").
    """

    def __init__(self, block_bytes: Sequence[int], show: bool, where: str) -> None:
        from tqdm.auto import tqdm

        self.n_blocks = len(block_bytes)
        self.n_bytes = int(sum(block_bytes))
        self.where = where
        self.done = 0
        self.started = time.perf_counter()
        self.bar = tqdm(
            total=self.n_bytes,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=f"loading into {where}",
            leave=False,
            disable=None if show else True,
            file=sys.stderr,
        )

    def block_done(self, n_bytes: int) -> None:
        self.done += 1
        self.bar.set_postfix_str(f"{self.done}/{self.n_blocks} blocks", refresh=False)
        self.bar.update(n_bytes)

    def __enter__(self) -> LoadProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.bar.close()
        if exc_info[0] is None:
            import logging

            from dask.utils import format_bytes

            elapsed = time.perf_counter() - self.started
            logging.getLogger("dsoftmax").info(
                "dsoftmax: loaded %s in %d blocks into %s in %.1f s",
                format_bytes(self.n_bytes),
                self.n_blocks,
                self.where,
                elapsed,
            )
