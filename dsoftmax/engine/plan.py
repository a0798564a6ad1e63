"""Where blocks live and which worker evaluates what: placement plans and the memory policy.

Pure functions of block sizes, worker addresses and memory limits; no Dask calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np

from .blocks import Share
from .reduce import owned_nodes

__all__ = [
    "AUTO_MEMORY_SHARE",
    "STREAM_WINDOW_SHARE",
    "Work",
    "WorkerMemory",
    "block_bytes",
    "contiguous_plan",
    "fits_in_process",
    "held_memory_fraction",
    "hold_choice",
    "kernel_work_bytes",
    "paused_memory_fraction",
    "pick_holder",
    "plan_shares",
    "resolve_hold",
    "total_memory_limit",
    "window_blocks",
]

#: ``hold="auto"`` keeps the blocks in worker memory when they take at most this share of the
#: workers' memory limits (Dask starts spilling at 60 % and pauses a worker at 80 %; the rest
#: is the working memory of an evaluation and of the worker itself).
AUTO_MEMORY_SHARE = 0.5

#: In stream mode, the blocks held for minibatches take at most this share of the workers'
#: memory limits, and at most what each worker has free.
STREAM_WINDOW_SHARE = 0.25

#: Fewest blocks stream mode holds for minibatches on workers without memory limits.
MIN_WINDOW_BLOCKS = 8

#: ``hold="auto"`` keeps this share of a worker's memory budget free for what its estimate does
#: not count (allocator fragmentation, Dask's own buffers, a task's temporaries).
AUTO_MARGIN = 0.15

#: Blocks a worker reads at once while it loads (each once compressed, once decoded).
LOAD_BLOCKS_IN_FLIGHT = 2

#: Memory a worker takes once it runs the compiled block kernel (numba and the compiled code),
#: counted whether or not it has loaded it yet.
KERNEL_RUNTIME_BYTES = 100 * 2**20

#: Without a cluster named, Dask input is held and evaluated in this process when it takes at
#: most this share of the memory this machine has available; beyond, a local cluster streams it.
IN_PROCESS_MEMORY_SHARE = 0.5

#: One block's part of an evaluation: ``(block index, selected rows or None)``.
Work = tuple[int, np.ndarray | None]


def block_bytes(
    chunk_rows: Sequence[int], X: Any, labels: Any, sample_weight: Any = None, folds: Any = None
) -> list[int]:
    """In-memory bytes of each block of rows of ``X``, ``labels``, ``sample_weight`` and a
    grid's fold codes (arrays or Dask arrays: only their shapes and dtypes are read)."""
    per_row = X.shape[1] * X.dtype.itemsize
    per_row += int(np.prod(labels.shape[1:], dtype=np.int64)) * labels.dtype.itemsize
    for optional in (sample_weight, folds):
        if optional is not None:
            per_row += optional.dtype.itemsize
    return [int(rows) * per_row for rows in chunk_rows]


def contiguous_plan(
    blocks: Sequence[tuple[int, np.ndarray | None]],
    chunk_rows: Sequence[int],
    workers: Sequence[str],
) -> dict[str, list[Work]]:
    """Split the selected blocks, in order, into one run per worker of about equal rows, as
    ``worker → [(block index, rows)]``; contiguous runs make whole subtrees of the reduce,
    which the workers add up themselves. With no worker known, everything goes to ``""``
    (wherever Dask likes)."""
    if not workers:
        return {"": list(blocks)}
    sizes = np.array([chunk_rows[index] for index, _ in blocks], dtype=np.float64)
    ends = np.cumsum(sizes)
    owner = np.minimum(
        (len(workers) * (ends - sizes / 2) / max(ends[-1], 1)).astype(int), len(workers) - 1
    )
    plan: dict[str, list[Work]] = {}
    for (index, rows), worker in zip(blocks, owner, strict=True):
        plan.setdefault(workers[worker], []).append((index, rows))
    return plan


def pick_holder(holders: Sequence[str], planned: str | None) -> str:
    """The worker to send a block's work to: the planned one while it holds the block, else the
    first holder by address, or "" when none holds it (yet)."""
    if planned in holders:
        return planned
    return sorted(holders)[0] if holders else ""


def plan_shares(plan: dict[str, list[Work]], starts: np.ndarray) -> dict[str, Share]:
    """The :class:`Share` of each worker's work in ``plan``, its blocks in increasing order,
    with the subtrees of the reduce (over the dataset's ``len(starts) - 1`` blocks) whose blocks
    in the plan are all its own: what the worker adds up and sends."""
    n_parts = len(starts) - 1
    present = sorted(index for work in plan.values() for index, _ in work)
    shares = {}
    for worker, work in plan.items():
        ordered = sorted(work, key=lambda item: item[0])
        indices = [index for index, _ in ordered]
        shares[worker] = Share(
            indices=indices,
            rows=[rows for _, rows in ordered],
            n_parts=n_parts,
            row_starts=[int(starts[index]) for index in indices],
            nodes=owned_nodes(indices, n_parts, present),
        )
    return shares


def resolve_hold(hold: str, data_bytes: int, memory_limit: int | None, persisted: bool) -> str:
    """``"memory"`` or ``"stream"``: what ``hold`` means for data of ``data_bytes`` on workers
    whose memory limits add up to ``memory_limit`` (None: unknown or unlimited)."""
    if persisted:
        if hold == "stream":
            raise ValueError(
                "hold='stream' reads every block from its source at each pass, but these "
                "arrays are persisted in the cluster's memory (their chunks are Dask futures), "
                "so there is no source to read; use hold='memory' or 'auto'."
            )
        return "memory"
    if hold != "auto":
        return hold
    if memory_limit is None or data_bytes <= AUTO_MEMORY_SHARE * memory_limit:
        return "memory"
    return "stream"


def fits_in_process(data_bytes: int, available_bytes: int) -> tuple[bool, str]:
    """Whether data of ``data_bytes`` is held in this process, on a machine with
    ``available_bytes`` of memory available, and why (a sentence for the log)."""
    from dask.utils import format_bytes

    budget = int(IN_PROCESS_MEMORY_SHARE * available_bytes)
    sizes = f"{format_bytes(data_bytes)} of rows, {format_bytes(available_bytes)} available"
    if data_bytes <= budget:
        return True, (
            f"held in this process, evaluated on its threads: {sizes} (at most "
            f"{IN_PROCESS_MEMORY_SHARE:.0%} of it used for data); no cluster is started"
        )
    return False, (
        f"on a local cluster: {sizes}, more than {IN_PROCESS_MEMORY_SHARE:.0%} of it for "
        "this process"
    )


@dataclass(frozen=True)
class WorkerMemory:
    """What a worker has of memory before an engine loads its blocks.

    Attributes
    ----------
    address : str
    limit : int
        Its memory limit in bytes (0: none).
    rss : int
        Its resident memory now, in bytes (the process, its libraries, what it holds already).
    threads : int
    """

    address: str
    limit: int
    rss: int
    threads: int = 1


def hold_choice(
    block_sizes: Sequence[int],
    workers: Sequence[WorkerMemory],
    *,
    work_bytes: int,
    budget_fraction: float,
) -> tuple[str, str]:
    """``hold="auto"``: ``"memory"`` when the blocks take at most :data:`AUTO_MEMORY_SHARE` of
    the workers' limits and every worker's share of them fits its budget, else ``"stream"``;
    and why, as a sentence for the log.

    A worker holding the contiguous share :func:`contiguous_plan` gives it needs its resident
    memory before the load, plus :data:`KERNEL_RUNTIME_BYTES`, plus the bytes of its blocks,
    plus :data:`LOAD_BLOCKS_IN_FLIGHT` blocks being read and ``work_bytes`` of kernel work arrays
    per thread. Its budget is ``budget_fraction`` of its limit (Dask's spill threshold, beyond
    which held blocks go to disk) less :data:`AUTO_MARGIN`.

    Parameters
    ----------
    block_sizes : sequence of int
        In-memory bytes of each block.
    workers : sequence of WorkerMemory
    work_bytes : int
        The kernel's work arrays for one thread evaluating one block.
    budget_fraction : float
        Share of a worker's limit that held data may reach.
    """
    from dask.utils import format_bytes

    total = format_bytes(int(sum(block_sizes)))
    if not workers or any(worker.limit <= 0 for worker in workers):
        return "memory", f"{total} held in worker memory: the workers' memory is not limited"
    limits = sum(worker.limit for worker in workers)
    if resolve_hold("auto", int(sum(block_sizes)), limits, persisted=False) == "stream":
        return "stream", (
            f"{total} streamed from the store (hold_data='auto'): more than "
            f"{AUTO_MEMORY_SHARE:.0%} of the workers' {format_bytes(limits)} of memory limits"
        )
    addresses = sorted(worker.address for worker in workers)
    by_address = {worker.address: worker for worker in workers}
    plan = contiguous_plan(
        [(index, None) for index in range(len(block_sizes))], block_sizes, addresses
    )
    largest = max(block_sizes, default=0)
    worst = None
    for address in addresses:
        worker = by_address[address]
        held = sum(block_sizes[index] for index, _ in plan.get(address, []))
        transient = LOAD_BLOCKS_IN_FLIGHT * largest + worker.threads * work_bytes
        need = worker.rss + KERNEL_RUNTIME_BYTES + held + transient
        budget = int(budget_fraction * (1 - AUTO_MARGIN) * worker.limit)
        if worst is None or need - budget > worst[0] - worst[1]:
            worst = (need, budget, held, worker)
    need, budget, held, worker = worst
    detail = (
        f"worker {worker.address} needs {format_bytes(need)} for its {format_bytes(held)} of "
        f"blocks, the {format_bytes(worker.rss)} it holds before the load, the kernel's "
        f"runtime and work arrays and the blocks being read; its budget is "
        f"{format_bytes(budget)} ({budget_fraction:.0%} of its {format_bytes(worker.limit)} "
        f"limit, less a {AUTO_MARGIN:.0%} margin)"
    )
    if need <= budget:
        return "memory", f"{total} held in worker memory (hold_data='auto'): {detail}"
    return "stream", f"{total} streamed from the store (hold_data='auto'): {detail}"


def window_blocks(
    block_sizes: Sequence[int],
    workers: Sequence[WorkerMemory],
    *,
    work_bytes: int,
    budget_fraction: float,
) -> int:
    """How many blocks stream mode may hold for minibatches, over all workers.

    Each worker holds its share of the window beside what it already holds: its resident memory
    now, :data:`KERNEL_RUNTIME_BYTES`, :data:`LOAD_BLOCKS_IN_FLIGHT` blocks being read and
    ``work_bytes`` of kernel work arrays per thread. What is left of its budget
    (``budget_fraction`` of its limit: Dask's pause threshold, with no further margin since the
    nanny restarts a worker only at a higher share) is its share, in blocks of the largest
    size; the window is the sum of the shares, at most :data:`STREAM_WINDOW_SHARE` of the
    workers' limits. It may be smaller than a batch needs, even 0: holding more would push the
    workers past Dask's pause threshold and have their nannies restart them, so minibatches are
    refused before the fit instead (:func:`dsoftmax.fitting.check_streamed_minibatches`).
    Without limits (or without workers known) every block may be held. The window never
    exceeds the number of blocks: there are no more to hold.

    Parameters
    ----------
    block_sizes : sequence of int
        In-memory bytes of each block.
    workers : sequence of WorkerMemory
    work_bytes : int
        The kernel's work arrays for one thread evaluating one block.
    budget_fraction : float
        Share of a worker's limit that its memory may reach while it works (Dask pauses a
        worker beyond it).
    """
    if not block_sizes:
        return MIN_WINDOW_BLOCKS
    if not workers or any(worker.limit <= 0 for worker in workers):
        return len(block_sizes)
    largest = max(1, max(block_sizes))
    held = 0
    for worker in workers:
        budget = int(budget_fraction * worker.limit)
        taken = (
            worker.rss
            + KERNEL_RUNTIME_BYTES
            + LOAD_BLOCKS_IN_FLIGHT * largest
            + worker.threads * work_bytes
        )
        held += max(0, budget - taken) // largest
    ceiling = int(STREAM_WINDOW_SHARE * sum(worker.limit for worker in workers)) // largest
    return min(held, ceiling, len(block_sizes))


def total_memory_limit(workers: Sequence[WorkerMemory]) -> int | None:
    """Sum of the workers' memory limits; None when a worker has none or none is known."""
    limits = [worker.limit for worker in workers]
    if not limits or 0 in limits:
        return None
    return sum(limits)


def kernel_work_bytes(chunk_rows: Sequence[int], n_features: int, n_classes: int | None) -> int:
    """The block kernel's work arrays for one block: logits and probabilities of its rows and
    the gradient sums, in float64 (the widest compute type), and the BLAS path's gradient
    product in the compute type."""
    classes = max(2, n_classes or 2)
    widest = max(chunk_rows, default=0)
    return 8 * (2 * classes * widest + 2 * classes * (n_features + 1) + classes * n_features)


def held_memory_fraction() -> float:
    """Share of a worker's limit its held blocks may reach: Dask's spill threshold (``target``,
    else ``spill``, else ``pause``), 1 when all are off."""
    for name in ("target", "spill", "pause"):
        fraction = dask.config.get(f"distributed.worker.memory.{name}", False)
        if fraction:
            return float(fraction)
    return 1.0


def paused_memory_fraction() -> float:
    """Share of a worker's limit beyond which Dask pauses it (``pause``, else ``terminate``), 1
    when both are off: a window of blocks held beyond it would stall the fit."""
    for name in ("pause", "terminate"):
        fraction = dask.config.get(f"distributed.worker.memory.{name}", False)
        if fraction:
            return float(fraction)
    return 1.0
