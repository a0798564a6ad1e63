"""An engine as a grid's loop sees the data: :class:`dsoftmax.grid.loop.StackProblem`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..kernels.stacked import Stack, StackMetrics
from ..objective import BlockSums, Params, finalize
from ..sampling import rows_to_blocks

__all__ = ["GridProblem"]


class GridProblem:
    """The objectives of a grid's models over the rows of an engine.

    Parameters
    ----------
    engine : LocalEngine or DaskEngine
        Built with the fold codes of ``roles`` (``folds=``), unless every model takes every row.
    n_classes, n_features : int
        The models' shape.
    roles : ndarray of shape (n_codes, n_splits), uint8, optional
        What each fold code is to each split (:attr:`dsoftmax.grid.folds.FoldTable.roles`);
        None when every model takes every row.
    class_weight : ndarray of shape (n_classes,), optional
        Multiplies each training row's weight by the weight of its class.
    """

    def __init__(
        self,
        engine: Any,
        n_classes: int,
        n_features: int,
        roles: np.ndarray | None = None,
        class_weight: np.ndarray | None = None,
    ) -> None:
        self.engine = engine
        self.shape = (int(n_classes), int(n_features))
        self.roles = np.zeros((1, 0), np.uint8) if roles is None else np.asarray(roles, np.uint8)
        self.class_weight = class_weight
        self.n_samples = engine.n_samples

    def stack(self, params: Sequence[Params], models: Sequence[Any]) -> Stack:
        """The models' weights stacked, with their splits and the roles table."""
        intercepts = [p.intercept for p in params]
        return Stack(
            coef=np.stack([np.asarray(p.coef, dtype=np.float64) for p in params]),
            intercept=None if intercepts[0] is None else np.stack(intercepts),
            splits=np.array([model.split for model in models], dtype=np.int64),
            roles=self.roles,
        )

    def value_and_grad(
        self,
        params: Sequence[Params],
        models: Sequence[Any],
        rows: np.ndarray | None = None,
        divisors: Sequence[float] | None = None,
    ) -> list[tuple[float, Params]]:
        """Per model, its objective over its training rows among ``rows`` (every row when None)
        and the gradient, in one pass; ``divisors`` replace the models' weight sums."""
        batch = None if rows is None else rows_to_blocks(rows, self.engine.chunk_rows)
        sums = self.engine.grid_sums(
            self.stack(params, models), batch, class_weight=self.class_weight
        )
        results = []
        for j, (model, point) in enumerate(zip(models, params, strict=True)):
            weight = float(sums.weight_sum[j]) if divisors is None else float(divisors[j])
            own = BlockSums(
                float(sums.loss_sum[j]), sums.grad_coef_sum[j], sums.grad_intercept_sum[j], weight
            )
            results.append(finalize(own, point, model.l2))
        return results

    def training_weights(self, models: Sequence[Any]) -> np.ndarray:
        """Each model's total training weight: its training rows' count, or with sample or class
        weights their weight sum (one pass)."""
        zeros = [Params(np.zeros(self.shape), None) for _ in models]
        return self.engine.grid_sums(
            self.stack(zeros, models), class_weight=self.class_weight
        ).weight_sum

    def held_out(self, params: Sequence[Params], models: Sequence[Any]) -> StackMetrics:
        """Per model, weighted loss, correct predictions and weight over its held-out rows (sample
        weights only), in one pass."""
        return self.engine.grid_metrics(self.stack(params, models))
