"""Running the data layer's per-block tasks: one dask task per block of rows, results in order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import dask.array as da

from ..lazy import distributed_loaded

__all__ = ["compute", "row_blocks", "scheduler_without_client"]


def compute(tasks: Sequence[Any], *, client: Any = None, scheduler: str | None = None) -> list:
    """Results of ``tasks`` in order: on ``client``, the named scheduler, or the default one."""
    if client is not None:
        return list(client.gather(client.compute(list(tasks))))
    return list(dask.compute(*tasks, scheduler=scheduler or scheduler_without_client()))


def scheduler_without_client() -> Any:
    """Dask's default scheduler (None) once distributed is imported; before, the threaded
    scheduler, named as a function: None or a name would make Dask import distributed to look
    for a client that cannot exist yet."""
    if distributed_loaded():
        return None
    import dask.threaded

    return dask.threaded.get


def row_blocks(array: da.Array | None, n_blocks: int) -> list[Any]:
    """The delayed blocks of rows of ``array``, or ``n_blocks`` Nones without an array."""
    if array is None:
        return [None] * n_blocks
    return list(array.to_delayed().ravel())
