"""The Dask engine: blocks of rows on Dask workers, evaluated where they live.

Shape of one evaluation::

    client ──(evaluation, share)──▶ each worker: engine/blocks.py over its blocks
           ◀── the sums of the subtrees of the reduce it holds whole ── a few per worker
    client: the rest of the fixed tree over the block order (engine/reduce.py)

* Blocks are loaded through the task graph (the data layer's chunk reads, a graph-embedded NumPy
  chunk, or the chunks of an array persisted in the cluster's memory), never with
  ``client.scatter``: when a worker dies, Dask recomputes its blocks from the store.
* ``hold="memory"``: each block is read once and kept in worker memory, contiguous runs of
  blocks per worker. An evaluation is one call to each worker's block server
  (:mod:`dsoftmax.engine.actor`); when a worker cannot answer (it died, or its blocks moved), the
  evaluation runs as one task per worker instead, through which Dask moves or recomputes what is
  missing, and servers are started anew where needed.
* ``hold="stream"``, for data larger than the workers' memory: a full pass is one task per worker
  over a contiguous share of the blocks, which reads each block from its source (the next one in
  a thread while the current one is evaluated) and lets it go, so at most two blocks per worker
  are in memory. Minibatches hold the blocks they touch, up to a window of blocks.
* The client waits once per evaluation, plus one look-up of the blocks' placement every
  :data:`PLACEMENT_REFRESH` evaluations or after the held blocks changed:
  :attr:`DaskEngine.n_round_trips` counts both.

The engine does no math of its own: dividing by the weight sum and adding the penalty is the
caller's job (:func:`dsoftmax.objective.finalize`, through :class:`dsoftmax.engine.Problem`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import CancelledError
from typing import Any

import dask
import dask.array as da
import distributed

from ..data import check_row_chunks
from ..defaults import HOLD_CHOICES
from ..kernels.dense import compute_dtype, is_storage_dtype
from ..objective import Params
from ..sampling import RowBatch, block_starts, full_batch
from .actor import SERVED_KINDS, BlockServer, decode_reply, encode_request
from .base import Evaluations, LoadProgress
from .blocks import (
    KINDS,
    Evaluation,
    Share,
    assemble_block,
    in_kernel_dtype,
)
from .plan import (
    Work,
    WorkerMemory,
    contiguous_plan,
    held_memory_fraction,
    hold_choice,
    kernel_work_bytes,
    paused_memory_fraction,
    pick_holder,
    plan_shares,
    resolve_hold,
    total_memory_limit,
    window_blocks,
)
from .reduce import Node, node_value, tree_root
from .sources import (
    block_parts,
    block_sizes,
    block_sources,
    check_fold_chunks,
    held_block_sizes,
)
from .tasks import evaluate_held_share, evaluate_streamed_share, hold_params

logger = logging.getLogger("dsoftmax")

__all__ = ["DaskEngine"]

#: Evaluations between two look-ups of which worker holds which block.
PLACEMENT_REFRESH = 50

#: Above this size the parameters are shipped once per evaluation as a task of their own,
#: instead of inline in every worker's task.
INLINE_PARAMS_BYTES = 256 * 1024

#: Seconds to wait for a worker to start its block server before using tasks.
SERVER_START_TIMEOUT = 30

#: Seconds between two checks that a block server still exists while waiting for its reply.
SERVER_PROBE_SECONDS = 2.0

#: Multiply-adds (rows × classes × features) up to which a block server evaluates on the
#: worker's event loop instead of in a thread: about 10 ms of arithmetic at most.
SMALL_EVALUATION_WORK = 50_000_000

#: Failed calls to live workers' block servers after which an engine stops using them (the
#: client cannot reach the workers directly, e.g. behind a NAT) and runs tasks only.
SERVER_FAILURES_TOLERATED = 2


class DaskEngine(Evaluations):
    """Blocks of rows on Dask workers; sums computed where the rows are.

    Parameters
    ----------
    client : distributed.Client
        The cluster to run on.
    X : dask.array.Array of shape (n_samples, n_features)
        Chunked by rows only.
    labels : dask.array.Array of shape (n_samples,) or (n_samples, n_classes)
        Class ids or probability rows, with the row chunks of ``X``.
    sample_weight : dask.array.Array of shape (n_samples,), optional
        With the row chunks of ``X``.
    hold : {"auto", "memory", "stream"}, default "auto"
        ``"memory"``: every block is read once and kept in worker memory; an evaluation reads
        nothing. ``"stream"``: a full pass reads each chunk from the store, evaluates it and drops
        it, so worker memory stays bounded whatever the size of the data; minibatches hold the
        blocks they touch, up to a window of blocks. ``"auto"``: memory when the data takes at
        most half of the workers' memory limits and every worker's share of the blocks fits its
        budget with what it holds already, the kernel and its work arrays
        (:func:`dsoftmax.engine.plan.hold_choice`, logged at INFO), else stream; arrays
        persisted in the cluster's memory are held there (``"stream"`` is refused for them).
        The choice made is :attr:`hold`.
    name : str, default "softmax-block"
        Prefix of the keys of the engine's blocks, as they show on the Dask dashboard.
    n_classes : int, optional
        The model's classes, for the size of the kernel's work arrays that ``hold="auto"``
        counts (default: two).
    folds : dask.array.Array of shape (n_samples,), optional
        Integer fold codes of a cross-validated grid (:mod:`dsoftmax.engine.grid`), with the
        row chunks of ``X``; held with the blocks.

    Notes
    -----
    Construction submits the load tasks and returns at once; the first evaluation waits for them.
    Call :meth:`close` (or use the engine as a context manager) to release the blocks.
    """

    def __init__(
        self,
        client: Any,
        X: da.Array,
        labels: da.Array,
        sample_weight: da.Array | None = None,
        *,
        hold: str = "auto",
        name: str = "softmax-block",
        n_classes: int | None = None,
        folds: da.Array | None = None,
    ) -> None:
        check_row_chunks(X, labels, sample_weight)
        check_fold_chunks(X, folds)
        if hold not in HOLD_CHOICES:
            raise ValueError(
                f"hold must be one of {HOLD_CHOICES} (keep blocks in worker memory, or stream "
                f"them from the store), got {hold!r}."
            )
        self.client = client
        self.n_samples = int(X.shape[0])
        self.chunk_rows = tuple(int(c) for c in X.chunks[0])
        self.has_sample_weight = sample_weight is not None
        self.n_round_trips = 0
        self._starts = block_starts(self.chunk_rows)
        self._evaluations = 0
        self._placement: dict[int, str] | None = None
        self._placement_stale = False
        self._parts = block_parts(X, labels, sample_weight, folds)
        self._sources = block_sources(self._parts)
        read_bytes = block_sizes(X, labels, sample_weight, folds, client)
        held_bytes = held_block_sizes(X, read_bytes)
        self._kernel_dtype = compute_dtype(X.dtype) if is_storage_dtype(X.dtype) else None
        workers = _worker_memory(client)
        memory_limit = total_memory_limit(workers)
        persisted = any(source is None for source in self._sources)
        if hold == "auto" and not persisted and workers:
            self.hold, reason = hold_choice(
                held_bytes,
                workers,
                work_bytes=kernel_work_bytes(self.chunk_rows, X.shape[1], n_classes),
                budget_fraction=held_memory_fraction(),
            )
            logger.info("dsoftmax: %s", reason)
        else:
            self.hold = resolve_hold(hold, sum(held_bytes), memory_limit, persisted)
        self._block_bytes = held_bytes if self.hold == "memory" else read_bytes
        self.window = window_blocks(
            self._block_bytes,
            workers,
            work_bytes=kernel_work_bytes(self.chunk_rows, X.shape[1], n_classes),
            budget_fraction=paused_memory_fraction(),
        )
        self._key_prefix = f"{name}-{uuid.uuid4().hex[:12]}"
        self._token = uuid.uuid4().hex[:12]
        self._held: OrderedDict[int, Any] = OrderedDict()
        self._servers: dict[str, Any] = {}  # worker address → future of its BlockServer
        self._proxies: dict[str, Any] = {}  # worker address → its BlockServer's actor proxy
        self._use_servers = True
        self._server_failures = 0
        if self.hold == "memory":
            self._hold_blocks(range(len(self.chunk_rows)))
            # Started while the blocks load, so the first evaluation does not wait for them.
            self._submit_servers(self._worker_addresses())
        self._window_logged = False
        logger.info(
            "dsoftmax: %s of rows in %d blocks, %s",
            dask.utils.format_bytes(sum(self._block_bytes)),
            len(self.chunk_rows),
            "held in worker memory" if self.hold == "memory" else "streamed from the store",
        )

    def show_load(self, progress: bool) -> None:
        """With ``progress``, wait for the blocks held in worker memory to load, showing a
        progress bar (bytes, blocks) when stderr is a terminal; else return at once (the first
        evaluation waits). A failed load is reported by that evaluation."""
        if not progress or not self._held:
            return
        sizes = {future.key: self._block_bytes[index] for index, future in self._held.items()}
        with LoadProgress(list(sizes.values()), True, "worker memory") as bar:
            for future in distributed.as_completed(list(self._held.values())):
                bar.block_done(sizes[future.key])

    @property
    def blocks(self) -> list:
        """Futures of the blocks held in worker memory now, in block order."""
        return [self._held[index] for index in sorted(self._held)]

    @property
    def block_bytes(self) -> tuple[int, ...]:
        """In-memory bytes of each block."""
        return tuple(self._block_bytes)

    def _evaluate(self, evaluation: Evaluation, batch: RowBatch | None) -> Any:
        if self.hold == "stream" and batch is not None:
            self._log_window()
        batch = batch or full_batch(self.chunk_rows)
        started = time.perf_counter()
        # Fewer bytes to send, the same sums (the kernel casts them so on the workers).
        evaluation = in_kernel_dtype(evaluation, self._kernel_dtype)
        if self.hold == "stream" and len(batch.blocks) > self.window:
            known = self._evaluate_streaming(evaluation, batch)
        else:
            if self.hold == "stream":
                self._hold_blocks([index for index, _ in batch.blocks])
            known = self._evaluate_held(evaluation, batch)
        # A synchronous wait leaves its reply in a reference cycle: free it now (a fraction of
        # a millisecond), not at the next full pass, by which wide models' replies pile up.
        gc.collect(1)
        self._evaluations += 1
        logger.debug(
            "%s over %d blocks, %d subtrees received: %.1f ms",
            evaluation.kind,
            len(batch.blocks),
            len(known),
            1e3 * (time.perf_counter() - started),
        )
        # The tree over the blocks, not the workers: the same additions whatever the
        # placement; workers added up the subtrees they held whole.
        n_parts = len(self.chunk_rows)
        present = [index for index, _ in batch.blocks]
        add_group = KINDS[evaluation.kind].add_group
        return node_value(tree_root(n_parts), known, n_parts, add_group, present)

    def _log_window(self) -> None:
        """Log, once, how many blocks minibatches over streamed data may hold: at the first
        evaluation over some of the rows, so that full passes alone (L-BFGS) never log it."""
        if self._window_logged:
            return
        self._window_logged = True
        logger.info(
            "dsoftmax: minibatches hold up to %d of the %d blocks in worker memory",
            self.window,
            len(self.chunk_rows),
        )

    # -- blocks held in worker memory ------------------------------------------------------

    def _hold_blocks(self, indices: Sequence[int]) -> None:
        """Load the blocks ``indices`` that are not held yet; in stream mode, drop the least
        recently used others beyond the window."""
        wanted = list(indices)
        missing = [index for index in wanted if index not in self._held]
        for index in wanted:
            if index in self._held:
                self._held.move_to_end(index)
        if missing:
            self._load(missing)
        keep = set(wanted)
        while len(self._held) > max(self.window, len(keep)):
            index = next(index for index in self._held if index not in keep)
            self._held.pop(index).release()

    def _load(self, indices: list[int]) -> None:
        """Submit the load tasks of ``indices``, in contiguous runs per worker.

        Contiguous runs let the workers hold whole subtrees of the reduce and send a few sums
        each instead of one per block. Only a block's load task is pinned, loosely; its chunk
        reads are left to Dask's scheduling, so that a worker's death is charged to the reads
        it ran, which keeps the attribution of a block that kills its readers exact.
        """
        assemble = dask.delayed(assemble_block, pure=True)
        plan = contiguous_plan(
            [(index, None) for index in indices], self.chunk_rows, self._worker_addresses()
        )
        loads = {}
        for worker, work in plan.items():
            with dask.annotate(**_placed_on(worker)):
                for index, _ in work:
                    # Keys unique to this engine: another client releasing the same data's keys
                    # at the same moment must not cancel ours ("lost dependencies").
                    loads[index] = assemble(
                        *self._parts[index],
                        column_order=self.hold == "memory",
                        dask_key_name=f"{self._key_prefix}-{index}",
                    )
        futures = self.client.compute(list(loads.values()))
        for index, future in zip(loads, futures, strict=True):
            self._held[index] = future
        self._placement_stale = True

    def _block_workers(self) -> dict[int, str]:
        """Which worker holds each held block; refreshed every :data:`PLACEMENT_REFRESH`
        evaluations and after work ran elsewhere than planned (a stale entry costs a transfer or
        a fallback to tasks, never a wrong result)."""
        if (
            self._placement is not None
            and not self._placement_stale
            and self._evaluations % PLACEMENT_REFRESH != 0
        ):
            return self._placement
        previous = set((self._placement or {}).values())
        futures = list(self._held.values())
        with self.client.as_current():  # wait() asks for the current client
            distributed.wait(futures)
        who_has = self.client.who_has(futures)
        self.n_round_trips += 1
        # A block held twice (copied by a task that ran elsewhere) stays where it was, so that
        # the work stays spread over the workers.
        planned = self._placement or {}
        self._placement = {
            index: pick_holder(who_has.get(future.key, ()), planned.get(index))
            for index, future in self._held.items()
        }
        self._placement_stale = False
        for worker in sorted(previous - set(self._placement.values()) - {""}):
            if self.hold == "memory":
                logger.warning(
                    "dsoftmax: worker %s is gone; its blocks were re-read from the store by the "
                    "other workers and the fit goes on",
                    worker,
                )
            self._drop_server(worker)
        return self._placement

    def _evaluate_held(self, evaluation: Evaluation, batch: RowBatch) -> dict[Node, Any]:
        placement = self._block_workers()
        plan: dict[str, list[Work]] = {}
        for index, rows in batch.blocks:
            plan.setdefault(placement[index], []).append((index, rows))
        known = None
        if evaluation.kind in SERVED_KINDS:
            known = self._evaluate_on_servers(evaluation, plan)
        if known is None:
            known = self._evaluate_with_tasks(evaluation, plan)
        return known

    def _evaluate_on_servers(
        self, evaluation: Evaluation, plan: dict[str, list[Work]]
    ) -> dict[Node, Any] | None:
        """One block-server call per worker; None when any worker did not answer (the caller
        then runs tasks, through which Dask moves or recomputes what is missing)."""
        if "" in plan or not self._start_servers(list(plan)):
            return None
        shares = plan_shares(plan, self._starts)
        calls = {
            worker: self._call_server(worker, evaluation, share) for worker, share in shares.items()
        }
        replies = {worker: self._reply(*call) for worker, call in calls.items()}
        self.n_round_trips += 1
        # A reply holds a model-sized sum per subtree: keep its bytes only until it is decoded
        # (the calls and the waits' reference cycles hold them until both go).
        del calls
        gc.collect(1)
        known: dict[Node, Any] = {}
        for worker in list(replies):
            reply = replies.pop(worker)
            if isinstance(reply, BaseException) or reply is None:
                self._server_did_not_answer(worker, reply)
                return None
            known.update(decode_reply(reply, evaluation.kind))
            del reply
        self._server_failures = 0
        return known

    def _call_server(self, worker: str, evaluation: Evaluation, share: Share) -> tuple[Any, Any]:
        """Start one block-server call: ``(server, call)``, or ``(None, error)`` when the
        server is gone already."""
        keys = [self._held[index].key for index in share.indices]
        request = encode_request(evaluation, keys, share)
        small = _work(share, self.chunk_rows, evaluation.params) <= SMALL_EVALUATION_WORK
        try:
            server = self._proxy(worker)
            method = server.evaluate_on_loop if small else server.evaluate
            return server, method(*request)
        except Exception as error:  # its worker died since the servers were checked
            return None, error

    def _proxy(self, worker: str) -> Any:
        """The actor proxy of ``worker``'s block server, fetched once."""
        proxy = self._proxies.get(worker)
        if proxy is None:
            proxy = self._servers[worker].result(timeout=SERVER_START_TIMEOUT)
            self._proxies[worker] = proxy
        return proxy

    def _reply(self, server: Any, call: Any) -> Any:
        """The reply of one block-server call, or the exception in its place. A server that
        vanished behind the engine's back (a worker restarted at the same address) never
        answers: it is probed while the reply is awaited."""
        if server is None:
            return call
        timed_out = False
        try:
            while True:
                try:
                    return call.result(timeout=SERVER_PROBE_SECONDS)
                except TimeoutError:
                    timed_out = True
                    try:
                        server.alive  # noqa: B018 - an attribute read is a round trip to the actor
                    except Exception as error:
                        return error
                except Exception as error:
                    return error
        finally:
            if timed_out:
                # A timed wait leaves reference cycles behind (exceptions whose tracebacks hold
                # frames of the event loop and of this call stack, with replies and sums as
                # large as the model in their locals): free them now rather than at the
                # collector's next full pass. It costs milliseconds after a wait of seconds.
                gc.collect()

    def _server_did_not_answer(self, worker: str, reply: Any) -> None:
        logger.debug("block server on %s did not answer: %r", worker, reply)
        self._placement_stale = True
        if not isinstance(reply, BaseException):
            return  # its blocks moved: a new placement fixes it
        self._drop_server(worker)
        # Any error goes to the task path: a lost server or worker is recovered there, and an
        # error of the evaluation itself is raised there with the engine's usual messages.
        if isinstance(reply, OSError) and worker in self._worker_addresses():
            # A live worker that the client cannot reach directly.
            self._server_failures += 1
            if self._server_failures >= SERVER_FAILURES_TOLERATED:
                self._use_servers = False
                logger.info(
                    "dsoftmax: the client cannot call the workers directly (%s: %s); "
                    "every evaluation now runs as tasks through the scheduler",
                    worker,
                    reply,
                )

    def _start_servers(self, workers: list[str]) -> bool:
        """Have a running block server on each of ``workers``; False if one fails to start."""
        if not self._use_servers:
            return False
        self._submit_servers(workers)
        starting = [worker for worker in workers if self._servers[worker].status != "finished"]
        if not starting:
            return True
        futures = [self._servers[worker] for worker in starting]
        with self.client.as_current(), contextlib.suppress(TimeoutError):
            distributed.wait(futures, timeout=SERVER_START_TIMEOUT)
        self.n_round_trips += 1
        failed = [worker for worker in starting if self._servers[worker].status != "finished"]
        for worker in failed:
            self._drop_server(worker)
        if failed:
            logger.debug("block servers did not start on %s; using tasks", failed)
        return not failed

    def _submit_servers(self, workers: Sequence[str]) -> None:
        """Ask for a block server on each of ``workers`` that has none, without waiting."""
        for worker in workers:
            if worker and worker not in self._servers:
                self._servers[worker] = self.client.submit(
                    BlockServer,
                    workers=[worker],
                    allow_other_workers=False,
                    actor=True,
                    key=f"softmax-server-{self._token}-{uuid.uuid4().hex[:8]}",
                )

    def _drop_server(self, worker: str) -> None:
        self._proxies.pop(worker, None)
        future = self._servers.pop(worker, None)
        if future is not None:
            future.release()

    def _evaluate_with_tasks(
        self, evaluation: Evaluation, plan: dict[str, list[Work]]
    ) -> dict[Node, Any]:
        """One task per worker over its blocks: Dask moves or recomputes what is missing."""
        evaluation = self._ship_params(evaluation)
        shares = plan_shares(plan, self._starts)
        futures = [
            self.client.submit(
                evaluate_held_share,
                evaluation,
                share,
                [self._held[index] for index in share.indices],
                pure=False,
                **_placed_on(worker),
            )
            for worker, share in shares.items()
        ]
        results = self._gather(futures)
        self.n_round_trips += 1
        ran_on = [address for address, _ in results]
        self._placement_stale = any(
            planned and planned != actual for planned, actual in zip(shares, ran_on, strict=True)
        )
        return {node: value for _, pairs in results for node, value in pairs}

    # -- blocks streamed from their source -------------------------------------------------

    def _evaluate_streaming(self, evaluation: Evaluation, batch: RowBatch) -> dict[Node, Any]:
        """One task per worker over a contiguous share of the blocks, read from their source as
        it goes (:func:`dsoftmax.engine.tasks.evaluate_streamed_share`); nothing stays in worker
        memory."""
        evaluation = self._ship_params(evaluation)
        plan = contiguous_plan(batch.blocks, self.chunk_rows, self._worker_addresses())
        shares = plan_shares(plan, self._starts)
        futures = [
            self.client.submit(
                evaluate_streamed_share,
                evaluation,
                share,
                [self._sources[index] for index in share.indices],
                pure=False,
                **_placed_on(worker),
            )
            for worker, share in shares.items()
        ]
        results = self._gather(futures)
        self.n_round_trips += 1
        return {node: value for pairs in results for node, value in pairs}

    def _worker_addresses(self) -> list[str]:
        return sorted(self.client.scheduler_info()["workers"])

    def _ship_params(self, evaluation: Evaluation) -> Evaluation:
        """The evaluation with large parameters replaced by the future of a task holding them,
        so that they travel once to each worker instead of once per task."""
        params = evaluation.params
        if params is None:
            return evaluation
        size = params.coef.nbytes + (0 if params.intercept is None else params.intercept.nbytes)
        if size <= INLINE_PARAMS_BYTES:
            return evaluation
        return evaluation._replace(params=self.client.submit(hold_params, params, pure=False))

    # -- errors and clean-up ---------------------------------------------------------------

    def _gather(self, futures: list) -> list:
        """``client.gather``, with a worker-killing block named in the error and a lost
        scheduler said as such."""
        try:
            return self.client.gather(futures)
        except distributed.KilledWorker as error:
            raise RuntimeError(self._killed_worker_message(error)) from None
        except CancelledError as error:
            if self.client.status in ("running", "connecting"):
                raise
            raise ConnectionError(
                f"the connection to the Dask scheduler {self.client.scheduler.address} was lost "
                "during the evaluation (the scheduler stopped or the network failed); every "
                "result held by the cluster is gone with it. Checkpoints written so far are "
                "intact: restart the scheduler and resume the fit from them."
            ) from error

    def _killed_worker_message(self, error: distributed.KilledWorker) -> str:
        key = getattr(error, "task", None)
        held_keys = {future.key: index for index, future in self._held.items()}
        index = _block_index_of(key, held_keys)
        where = (
            f"block {index} (rows {self._starts[index]}-{self._starts[index + 1] - 1})"
            if index is not None
            else f"task {key!r}"
        )
        return (
            f"{where} killed every worker that ran it ({getattr(error, 'allowed_failures', '?')} "
            "tolerated failures, Dask's distributed.scheduler.allowed-failures): the workers "
            "probably ran out of memory or crashed reading it. Check that block of the store, "
            "or give the workers more memory (or hold_data='stream'); checkpoints written so far "
            "are intact."
        )

    def close(self) -> None:
        """Release the blocks from worker memory and stop the block servers."""
        for future in self._held.values():
            future.release()
        self._held.clear()
        for worker in list(self._servers):
            self._drop_server(worker)

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- helpers ----------------------------------------------------------------------------------


def _placed_on(worker: str) -> dict[str, Any]:
    """Loose placement on ``worker``; none when no worker is known (a cluster still starting,
    or a block that no worker holds): wherever Dask likes."""
    return {"workers": [worker], "allow_other_workers": True} if worker else {}


def _work(share: Share, chunk_rows: Sequence[int], params: Params | None) -> int:
    """Multiply-adds of evaluating ``share``, roughly."""
    rows = sum(
        chunk_rows[index] if selected is None else len(selected)
        for index, selected in zip(share.indices, share.rows, strict=True)
    )
    return rows * (0 if params is None else params.coef.size)


def _worker_memory(client: Any) -> list[WorkerMemory]:
    """Each worker's memory limit and resident memory now, from the scheduler's worker
    information; empty without a live client."""
    try:
        workers = client.scheduler_info(n_workers=-1)["workers"]
    except Exception:  # an engine built without a live client (tests of argument checks)
        return []
    return [
        WorkerMemory(
            address,
            int(info.get("memory_limit") or 0),
            int((info.get("metrics") or {}).get("memory") or 0),
            int(info.get("nthreads") or 1),
        )
        for address, info in workers.items()
    ]


def _block_index_of(key: Any, block_keys: dict) -> int | None:
    """The row block a task key belongs to: our own load keys, or a dask array chunk key
    ``(name, row_block, 0)``."""
    if key in block_keys:
        return block_keys[key]
    if isinstance(key, tuple) and len(key) >= 2 and isinstance(key[1], int):
        return key[1]
    return None
