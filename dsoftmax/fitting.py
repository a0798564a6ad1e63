"""What both estimators share around a fit: the Dask client, whether Dask input is held in
this process, the check of streamed minibatches, and the hyper-parameters a model file stores."""

from __future__ import annotations

from typing import Any

import dask
import numpy as np
from dask.utils import parse_bytes

from .engine.plan import block_bytes, fits_in_process
from .lazy import distributed_loaded
from .persist import LOADABLE_HYPER_PARAMETERS
from .training import TrainConfig
from .validation import is_integer

__all__ = [
    "check_memory_size",
    "check_streamed_minibatches",
    "fits_this_process",
    "json_params",
    "resolve_client",
]


def fits_this_process(
    X: Any, labels: Any, sample_weight: Any, hold_data: str
) -> tuple[bool, str]:
    """Whether a fit without a cluster holds these Dask arrays in this process (in threads)
    rather than on a local cluster, and why: when they fit this machine's available memory
    (:func:`dsoftmax.engine.plan.fits_in_process`) and streaming was not asked for."""
    if hold_data == "stream":
        return False, "on a local cluster: hold_data='stream' streams the rows from the store"
    import psutil

    data_bytes = sum(block_bytes(X.chunks[0], X, labels, sample_weight))
    return fits_in_process(data_bytes, psutil.virtual_memory().available)


def resolve_client(client: Any, *, needs_cluster: bool) -> Any:
    """The Dask client to use, or None for in-process fitting of in-memory data."""
    if client is None and not needs_cluster and not distributed_loaded():
        return None  # no client can be active before distributed is imported
    from . import cluster

    if client is not None:
        return cluster.get_client(client)
    active = cluster.active_client()
    if active is not None or not needs_cluster:
        return active
    return cluster.get_client(None)


def check_streamed_minibatches(engine: Any, config: TrainConfig) -> None:
    """Refuse, before the first step, minibatches that would read every chunk at every step."""
    if config.solver == "lbfgs" or getattr(engine, "hold", "memory") != "stream":
        return
    data_bytes = dask.utils.format_bytes(sum(engine.block_bytes))
    if config.shuffle_window is None:
        raise ValueError(
            f"the data ({data_bytes}) is streamed from the store at each pass "
            f"(hold_data={engine.hold!r}: it takes more than half of the workers' memory, or "
            "hold_data='stream' was asked for), and minibatches drawn from all rows would read "
            "every chunk at every step. Set shuffle_window (rows per shuffle window, e.g. "
            "262144) so that each chunk is read about once per epoch, or give the workers "
            "more memory."
        )
    widest = max(engine.chunk_rows)
    # A batch straddles at most two windows, each over its own blocks and a partial one.
    touched = min(2 * (-(-config.shuffle_window // widest) + 1), len(engine.chunk_rows))
    fewest = min(4, len(engine.chunk_rows))  # what a window of at most one block's rows needs
    if fewest > engine.window:
        block = dask.utils.format_bytes(max(engine.block_bytes))
        raise ValueError(
            f"minibatches on streamed data hold the blocks a batch touches (up to {fewest} "
            f"blocks of {widest} rows, {block} each, even with the smallest shuffle_window), but "
            f"beside what they hold already the workers have room for {engine.window} below "
            "Dask's pause threshold; holding more would have their nannies restart them. Give "
            "the workers more memory, write the dataset with smaller row chunks (chunk_rows), "
            "or use solver='lbfgs', whose full passes stream with bounded memory."
        )
    if touched > engine.window:
        raise ValueError(
            f"shuffle_window={config.shuffle_window} rows spans up to {touched} blocks of "
            f"{widest} rows per batch, but the workers can hold {engine.window} blocks for "
            f"minibatches; use shuffle_window <= {max(1, (engine.window // 2 - 1) * widest)}."
        )


def json_params(params: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters a model file stores: those a file may set
    (:data:`dsoftmax.persist.LOADABLE_HYPER_PARAMETERS`), as JSON values."""
    out = {name: params[name] for name in LOADABLE_HYPER_PARAMETERS if name in params}
    out = {name: v.item() if isinstance(v, np.generic) else v for name, v in out.items()}
    if not isinstance(out.get("random_state"), (int, type(None))):
        out["random_state"] = None
    if isinstance(out.get("class_weight"), dict):
        out["class_weight"] = None
    return out


def check_memory_size(name: str, value: Any) -> int:
    """``value`` in bytes: a positive whole number, or a size such as ``"2GiB"`` or ``"500 MB"``.

    Raises
    ------
    TypeError, ValueError
    """
    if is_integer(value):
        size = int(value)
    elif isinstance(value, str):
        try:
            size = parse_bytes(value)
        except ValueError:
            raise ValueError(
                f"{name} must be a size such as '2GiB' or '500MB', got {value!r}."
            ) from None
    else:
        raise TypeError(
            f"{name} must be a number of bytes or a size such as '2GiB', got {value!r} of type "
            f"{type(value).__name__}."
        )
    if size < 1:
        raise ValueError(f"{name} must be a positive size, got {value!r}.")
    return size
