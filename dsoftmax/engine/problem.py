"""An engine seen as the training loop sees data: :class:`dsoftmax.training.Problem`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..objective import BlockMetrics, Params, finalize
from ..sampling import RowBatch, rows_to_blocks

__all__ = ["EngineProblem"]


class EngineProblem:
    """The objective of one fit over the rows of an engine.

    Parameters
    ----------
    engine : LocalEngine or DaskEngine
    l2 : float
        ``λ`` in ``λ ‖W‖²_F``.
    class_weight : ndarray of shape (n_classes,), optional
        Multiplies each row's weight by the weight of its class.
    """

    def __init__(self, engine: Any, l2: float, class_weight: np.ndarray | None = None) -> None:
        self.engine = engine
        self.l2 = l2
        self.class_weight = class_weight
        self.n_samples = engine.n_samples

    @property
    def weighted(self) -> bool:
        """True when rows carry sample or class weights."""
        return self.engine.has_sample_weight or self.class_weight is not None

    def value_and_grad(
        self, params: Params, rows: np.ndarray | None = None, *, weight: float | None = None
    ) -> tuple[float, Params]:
        """The objective over ``rows`` (every row when None) and its gradient; ``weight``
        replaces the rows' own total weight as the divisor."""
        sums = self.engine.sums(params, self._batch(rows), class_weight=self.class_weight)
        if weight is not None:
            sums = sums._replace(weight_sum=weight)
        return finalize(sums, params, self.l2)

    def metrics(self, params: Params, rows: np.ndarray | None = None) -> BlockMetrics:
        """Weighted loss, correct predictions and weight over ``rows`` (every row when None)."""
        return self.engine.metrics(params, self._batch(rows), class_weight=self.class_weight)

    def _batch(self, rows: np.ndarray | None) -> RowBatch | None:
        return None if rows is None else rows_to_blocks(rows, self.engine.chunk_rows)
