"""Real ``dask scheduler`` and ``dask worker`` processes for integration tests.

Usage (pytest puts ``tests/`` on ``sys.path``)::

    from daskprocs import dask_processes

    with dask_processes(n_workers=2) as procs:
        client = distributed.Client(procs.address)   # "tcp://127.0.0.1:PORT"
        ...
        procs.kill_worker(0)            # SIGKILL one worker (nanny and worker process)
        procs.wait_for_workers(1)       # until the scheduler counts exactly one worker
        procs.add_worker()              # start another one
        client.close()                  # close clients before the block ends

Every process listens on 127.0.0.1 only and runs in one process group of its own; leaving the
block kills the whole group and waits until none of its processes is left. The scheduler is
started on port 0 and writes its address to a scheduler file, so two test runs never race for a
port. Worker counts are read from the scheduler's HTTP ``/json/counts.json`` route, which needs
no client (and no TLS credentials for a TLS cluster).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

__all__ = ["DaskProcesses", "dask_processes", "small_local_cluster"]

STARTUP_TIMEOUT = 60.0
LOG_TAIL_CHARS = 3000


def dask_command(*args: str) -> list[str]:
    """The ``dask`` CLI of this interpreter's environment, with ``args``."""
    executable = Path(sys.executable).with_name("dask")
    if executable.exists():
        return [str(executable), *args]
    return [sys.executable, "-m", "dask", *args]


@dataclass
class DaskProcesses:
    """Handle on a running scheduler and its workers.

    Attributes
    ----------
    address : str
        The scheduler's address, e.g. ``"tcp://127.0.0.1:40123"`` (``tls://`` for a TLS cluster).
    scheduler : subprocess.Popen
        The ``dask scheduler`` process; its pid is the process group of every process here.
    workers : list of subprocess.Popen
        The ``dask worker`` processes (each a nanny with one worker child process), in start
        order; killed ones stay in the list with a return code.
    log_dir : Path
        Holds ``scheduler.log`` and ``worker-<i>.log`` (stdout and stderr of each process) and
        the processes' scratch space; removed when the block ends.
    """

    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)
    log_dir: Path = field(default_factory=Path)
    scheduler_file: Path = field(default_factory=Path)
    http_port: int = 0
    memory_limit: str = "1GiB"
    extra_worker_args: Sequence[str] = ()
    env: Mapping[str, str] | None = None

    @property
    def process_group(self) -> int:
        return self.scheduler.pid

    def add_worker(self) -> subprocess.Popen:
        """Start one more ``dask worker`` (does not wait for it to register)."""
        index = len(self.workers)
        command = dask_command(
            "worker",
            # Not the address: a worker started with the file needs not wait for the scheduler.
            "--scheduler-file", str(self.scheduler_file),
            "--nthreads", "1",
            "--memory-limit", str(self.memory_limit),
            "--host", "127.0.0.1",
            "--dashboard-address", "127.0.0.1:0",
            "--name", f"worker-{index}",
            *self.extra_worker_args,
        )  # fmt: skip
        log_path = self.log_dir / f"worker-{index}.log"
        worker = _spawn(command, log_path, self.env, self.process_group)
        self.workers.append(worker)
        return worker

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index``: its nanny and worker process, as when a machine is lost."""
        worker = self.workers[index]
        with contextlib.suppress(psutil.NoSuchProcess):
            tree = psutil.Process(worker.pid)
            for process in [*tree.children(recursive=True), tree]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        worker.wait(timeout=10)

    def worker_count(self) -> int:
        """The number of workers the scheduler counts now."""
        url = f"http://127.0.0.1:{self.http_port}/json/counts.json"
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(json.load(response)["workers"])

    def wait_for_workers(self, n_workers: int, timeout: float = STARTUP_TIMEOUT) -> None:
        """Wait until the scheduler counts exactly ``n_workers`` workers; raise TimeoutError."""
        deadline = time.monotonic() + timeout
        count = -1
        while time.monotonic() < deadline:
            self._check_scheduler_alive()
            self._check_enough_workers_run(n_workers)
            with contextlib.suppress(OSError):
                count = self.worker_count()
                if count == n_workers:
                    return
            time.sleep(0.1)
        raise TimeoutError(
            f"the scheduler at {self.address} counts {count} workers, not {n_workers}, after "
            f"{timeout:g} s.\n{self.logs()}"
        )

    def pids(self) -> set[int]:
        """Pids of the live (non-zombie) processes of this process group."""
        return _live_group_members(self.process_group)

    def logs(self) -> str:
        """The last lines of every process's log, for failure messages."""
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
            parts.append(f"--- {path.name} (last {LOG_TAIL_CHARS} chars) ---\n{text}")
        return "\n".join(parts)

    def _check_enough_workers_run(self, n_workers: int) -> None:
        running = sum(worker.poll() is None for worker in self.workers)
        if running < n_workers:
            raise RuntimeError(
                f"{running} dask worker processes run, fewer than the {n_workers} awaited.\n"
                f"{self.logs()}"
            )

    def _check_scheduler_alive(self) -> None:
        if self.scheduler.poll() is not None:
            raise RuntimeError(
                f"dask scheduler exited with code {self.scheduler.returncode}.\n{self.logs()}"
            )


@contextlib.contextmanager
def dask_processes(
    n_workers: int = 2,
    *,
    memory_limit: str = "1GiB",
    extra_scheduler_args: Sequence[str] = (),
    extra_worker_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Iterator[DaskProcesses]:
    """Run a ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    Parameters
    ----------
    n_workers : int, default 2
        Workers to start (one thread each); the block starts once all have registered.
    memory_limit : str, default "1GiB"
        ``--memory-limit`` of each worker.
    extra_scheduler_args, extra_worker_args : sequence of str
        Appended to the command lines, e.g. ``["--protocol", "tls", "--tls-ca-file", ...]``.
    env : mapping, optional
        Variables added to this process's environment for every process started.
    startup_timeout : float, default 60.0
        Seconds to wait for the scheduler and for the workers to register.

    Yields
    ------
    DaskProcesses
        ``.address`` is the scheduler address; see the class for the rest.
    """
    log_dir = Path(tempfile.mkdtemp(prefix="dsoftmax-dask-"))
    scheduler_file = log_dir / "scheduler.json"
    command = dask_command(
        "scheduler",
        "--host", "127.0.0.1",
        "--port", "0",
        "--dashboard-address", "127.0.0.1:0",
        "--scheduler-file", str(scheduler_file),
        *extra_scheduler_args,
    )  # fmt: skip
    scheduler = _spawn(command, log_dir / "scheduler.log", env, process_group=0)
    procs = DaskProcesses(
        address="",
        scheduler=scheduler,
        log_dir=log_dir,
        scheduler_file=scheduler_file,
        memory_limit=memory_limit,
        extra_worker_args=tuple(extra_worker_args),
        env=env,
    )
    try:
        for _ in range(n_workers):
            procs.add_worker()
        identity = _wait_for_scheduler_file(procs, scheduler_file, startup_timeout)
        procs.address = identity["address"]
        procs.http_port = int(identity["services"]["dashboard"])
        procs.wait_for_workers(n_workers, timeout=startup_timeout)
        yield procs
    finally:
        _kill_group(procs)
        shutil.rmtree(log_dir, ignore_errors=True)


def _spawn(
    command: list[str], log_path: Path, env: Mapping[str, str] | None, process_group: int
) -> subprocess.Popen:
    # Scratch space beside the logs: SIGKILLed processes leave theirs behind, and this one goes.
    scratch = {"DASK_TEMPORARY_DIRECTORY": str(log_path.parent / "scratch")}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **scratch, **(env or {})},
            # 0: a new group led by this process (the scheduler); else join the scheduler's group.
            process_group=process_group,
        )


def _wait_for_scheduler_file(procs: DaskProcesses, path: Path, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs._check_scheduler_alive()
        with contextlib.suppress(OSError, ValueError):  # absent, or half written
            identity = json.loads(path.read_text())
            if identity.get("address"):
                return identity
        time.sleep(0.05)
    raise TimeoutError(f"dask scheduler wrote no {path} within {timeout:g} s.\n{procs.logs()}")


def _kill_group(procs: DaskProcesses, timeout: float = 10.0) -> None:
    group = procs.process_group
    with contextlib.suppress(ProcessLookupError):
        # SIGKILL, not SIGTERM: a graceful shutdown is not under test and takes seconds.
        os.killpg(group, signal.SIGKILL)
    for process in [procs.scheduler, *procs.workers]:
        process.wait(timeout=timeout)  # reap our direct children
    deadline = time.monotonic() + timeout
    while (left := _live_group_members(group)) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left:
        raise RuntimeError(f"processes {sorted(left)} of group {group} survived SIGKILL.")


def _live_group_members(group: int) -> set[int]:
    members = set()
    for process in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(process.pid) == group and process.info["status"] != "zombie":
                members.add(process.pid)
    return members


def small_local_cluster(n_workers: int, memory_limit: str = "1GiB") -> Any:
    """A LocalCluster of worker processes as the tests use them: one thread each, bound to
    127.0.0.1, no dashboard, small memory."""
    import distributed

    return distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit=memory_limit,
    )
