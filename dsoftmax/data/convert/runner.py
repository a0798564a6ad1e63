"""Where the tasks of a conversion run: threads of this process, or a Dask cluster's workers.

:class:`Runner` gives both one interface of handles (futures), so the conversion pass
(:mod:`dsoftmax.data.convert.pipeline`) is written once for either.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ...lazy import distributed_loaded

__all__ = ["Runner", "default_client", "local_threads"]


class Runner:
    """Tasks on threads of this process (``client=None``) or on a Dask cluster.

    Handles are futures; a task's arguments may be handles of finished tasks, whose results
    it then receives (on a cluster, Dask moves them to the task's worker).

    Parameters
    ----------
    client : distributed.Client or None
    n_threads : int, optional
        Threads without a client (default: this machine's usable CPUs).
    """

    def __init__(self, client: Any = None, n_threads: int | None = None) -> None:
        self.client = client
        self._token = uuid.uuid4().hex[:12]
        self._count = 0
        if client is None:
            import dask.system

            self.slots = max(1, n_threads or dask.system.CPU_COUNT)
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.slots, thread_name_prefix="dsoftmax-convert"
            )
        else:
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            self.slots = max(1, sum(worker.get("nthreads", 1) for worker in workers))
            self._pool = None

    @property
    def where(self) -> str:
        """How log lines name where the work runs."""
        if self.client is None:
            return local_threads(self.slots)
        return f"the cluster's {self.slots} worker threads"

    def submit(self, function: Callable, *args: Any) -> Any:
        """Run ``function(*args)``; ``args`` may hold handles of finished tasks."""
        if self._pool is not None:
            values = [arg.result() if isinstance(arg, concurrent.futures.Future) else arg
                      for arg in args]  # fmt: skip
            return self._pool.submit(function, *values)
        self._count += 1
        name = function.__name__.replace("_", "-")
        key = f"dsoftmax-convert-{name}-{self._token}-{self._count}"
        return self.client.submit(function, *args, key=key, pure=False)

    def derive(self, function: Callable, handle: Any, *args: Any) -> Any:
        """A handle on ``function(result, *args)``, computed where ``handle``'s result is."""
        if self._pool is not None:
            done: concurrent.futures.Future = concurrent.futures.Future()
            done.set_result(function(handle.result(), *args))
            return done
        return self.submit(function, handle, *args)

    def fetch(self, function: Callable, handle: Any, *args: Any) -> Any:
        """``function(result, *args)`` of a finished task, brought to this process."""
        if self._pool is not None:
            return function(handle.result(), *args)
        return self.submit(function, handle, *args).result()

    def wait_any(self, handles: Sequence[Any]) -> set:
        """The handles among ``handles`` that are done, once at least one is."""
        if self._pool is not None:
            return concurrent.futures.wait(
                handles, return_when=concurrent.futures.FIRST_COMPLETED
            ).done
        import distributed

        return set(distributed.wait(list(handles), return_when="FIRST_COMPLETED").done)

    def release(self, handles: Sequence[Any]) -> None:
        """Drop this process's hold on results; tasks that use them still get them."""
        if self._pool is None:
            for handle in handles:
                handle.release()

    def cancel(self, handles: Sequence[Any]) -> None:
        """Cancel tasks not started and let every result go."""
        if self._pool is not None:
            for handle in handles:
                handle.cancel()
        elif handles:
            self.client.cancel(list(handles))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def default_client() -> Any:
    """The Dask default scheduler's distributed client, or None when it is not one."""
    if not distributed_loaded():
        return None  # no client can exist before distributed is imported
    import dask.base

    scheduler = dask.base.get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    if owner is not None and type(owner).__name__ == "Client" and owner.status == "running":
        return owner
    return None


def local_threads(n_threads: int) -> str:
    """How log lines name ``n_threads`` threads of this process."""
    return f"{n_threads} thread{'s' if n_threads > 1 else ''} of this process"
