"""The data-parallel plane: blocks of rows where they live, sums computed there.

* :mod:`~dsoftmax.engine.reduce`: the fixed-order reduce tree (pure).
* :mod:`~dsoftmax.engine.blocks`: the one worker-side evaluation of a share of blocks.
* :mod:`~dsoftmax.engine.local`: :class:`LocalEngine`, that evaluation in this process.
* :mod:`~dsoftmax.engine.dask`: :class:`DaskEngine`, loading, holding, planning, streaming.
* :mod:`~dsoftmax.engine.actor`: the block servers on distributed's public Actor API.
* :mod:`~dsoftmax.engine.plan`: placement plans and the memory policy (pure).
* :mod:`~dsoftmax.engine.base`: the evaluations every engine offers.
* :mod:`~dsoftmax.engine.problem`: :class:`EngineProblem`, an engine as the training loop sees it.

Both engines offer ``sums``, ``metrics``, ``report`` and ``block_stats`` over a
:class:`dsoftmax.sampling.RowBatch`, and the same bits for the same chunking.
"""

from ..lazy import lazy_names
from .local import LocalEngine
from .problem import EngineProblem
from .reduce import REDUCE_FAN_IN, tree_reduce

__all__ = ["REDUCE_FAN_IN", "DaskEngine", "EngineProblem", "LocalEngine", "tree_reduce"]

# DaskEngine imports distributed, which a fit in this process does without.
__getattr__, __dir__ = lazy_names(__name__, globals(), {"DaskEngine": "dask"})
