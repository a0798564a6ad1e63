"""Timing, verdicts, memory sampling, clusters, datasets and Markdown shared by the benchmarks.

Every benchmark returns a :class:`Section`: its Markdown body and the :class:`Verdict` of each
target it checks (a measured value, usually a ratio of two medians taken in the same run, against
the threshold of the target). :mod:`benchmarks.report` turns them into the summary table, the
plot and the exit status.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from dsoftmax.defaults import DEFAULT_CODEC

__all__ = [
    "MIB",
    "SETTLE_SECONDS",
    "MemorySampler",
    "Section",
    "Timing",
    "Verdict",
    "bench_main",
    "connect",
    "directory_bytes",
    "machine_description",
    "markdown_table",
    "max_rss_bytes",
    "measure",
    "measure_interleaved",
    "plural",
    "start_cluster",
    "teacher_dataset",
    "time_to_target",
    "usable_cpus",
    "worker_max_rss",
    "worker_processes",
]

MIB = 2**20


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of repeated runs of one computation."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def total(self) -> float:
        return sum(self.samples)

    def cells(self, scale: float = 1.0, digits: int = 3) -> list[str]:
        """``[median, min, max]`` times ``scale``, formatted for a table."""
        return [f"{scale * value:.{digits}f}" for value in (self.median, self.min, self.max)]


@dataclass(frozen=True)
class Verdict:
    """One target of the performance issue, checked: ``value <= threshold`` passes.

    Attributes
    ----------
    target : str
        Which target, e.g. ``"1 full pass"``.
    measure : str
        What ``value`` is, e.g. ``"DaskEngine.sums ÷ naive NumPy pass (medians)"``.
    value : float
        The measurement; NaN (not measured) fails.
    threshold : float
        The largest value that passes.
    unit : str
        Printed after the numbers: ``"×"`` for ratios, ``" ms"``, ``" MiB"``, or ``""``.
    """

    target: str
    measure: str
    value: float
    threshold: float
    unit: str = "×"

    @property
    def passed(self) -> bool:
        # NaN compares False: a target that could not be measured does not pass.
        return bool(self.value <= self.threshold)

    def status(self, informational: bool) -> str:
        """``PASS`` or ``FAIL``, with a note when the sizes are too small to judge."""
        word = "PASS" if self.passed else "FAIL"
        return f"{word} (informational)" if informational else word

    def formatted(self, number: float) -> str:
        if math.isnan(number):
            return "not measured"
        if math.isinf(number):
            return "never"
        whole = self.unit == "" and float(number).is_integer()
        digits = 0 if whole or abs(number) >= 100 else 2
        return f"{number:.{digits}f}{self.unit}"

    def line(self, informational: bool) -> str:
        """One Markdown list item: verdict, target, measure, value and threshold."""
        return (
            f"- **{self.status(informational)}** — {self.target}: {self.measure} = "
            f"{self.formatted(self.value)} (target ≤ {self.formatted(self.threshold)})"
        )


@dataclass
class Section:
    """What one benchmark produced.

    Attributes
    ----------
    name : str
        The benchmark's short name (``--only`` uses it).
    title : str
        Its Markdown heading, without the hashes.
    body : str
        Markdown: setup, tables and notes.
    verdicts : list of Verdict
    series : dict
        Curves for the plot: name → list of ``(x, y)`` points.
    """

    name: str
    title: str
    body: str
    verdicts: list[Verdict] = field(default_factory=list)
    series: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def markdown(self, informational: bool) -> str:
        """Heading, body and one verdict line per target."""
        lines = [f"### {self.title}", "", self.body]
        if self.verdicts:
            lines += ["", "Verdicts:", ""]
            lines += [verdict.line(informational) for verdict in self.verdicts]
        return "\n".join(lines)


def plural(count: int, noun: str) -> str:
    """``"1 round"``, ``"3 rounds"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def time_to_target(history: Iterable[tuple[float, float]], target: float) -> float:
    """Seconds at the first ``(seconds, objective)`` entry whose objective is ``<= target``.

    Parameters
    ----------
    history : iterable of (float, float)
        ``(seconds since the start, objective)`` per evaluation, in the order they happened.
    target : float

    Returns
    -------
    float
        ``inf`` when no entry reaches the target.

    Examples
    --------
    >>> time_to_target([(0.1, 3.0), (0.2, 1.5), (0.3, 1.0)], 1.5)
    0.2
    """
    for seconds, objective in history:
        if objective <= target:
            return float(seconds)
    return math.inf


#: Pause before each candidate's run in :func:`measure_interleaved`. After a multi-threaded
#: BLAS call, OpenBLAS's idle threads spin for ~2^28 cycles (~0.1 s here) before they sleep,
#: and on a 2-core machine they take the cores from whatever runs next (a pass on the workers
#: right after an in-process NumPy pass measured 0.12 s instead of 0.09 s).
SETTLE_SECONDS = 0.25


def measure(run: Callable[[], object], repeat: int) -> Timing:
    """Time ``repeat`` calls of ``run`` one by one (the caller warms up first)."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}.")
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return Timing(tuple(samples))


def measure_interleaved(
    candidates: Mapping[str, Callable[[int], object]],
    repeat: int,
    warmup: int = 1,
    run_length: int = 1,
    settle: float = SETTLE_SECONDS,
) -> dict[str, Timing]:
    """Run rounds in which every candidate runs ``run_length`` times in a row, as
    ``candidates[name](call_index)``, each call timed on its own.

    The first ``warmup`` rounds are not timed; the next ``repeat`` are. Interleaving spreads a
    burst of outside load over every candidate instead of over the one that happened to run
    then, so the ratios between candidates stay meaningful on a shared machine. Runs longer than
    one call keep a candidate clear of the work another one leaves behind on the cluster (a
    dask.array step's key releases land on the next step, whoever runs it). Each run starts
    ``settle`` seconds after the one before, untimed, so that no candidate pays for the threads
    another left spinning.
    """
    if repeat < 1 or warmup < 0 or run_length < 1 or settle < 0:
        raise ValueError(
            f"need repeat >= 1, warmup >= 0, run_length >= 1 and settle >= 0, got {repeat}, "
            f"{warmup}, {run_length} and {settle}."
        )
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(warmup + repeat):
        for name, run in candidates.items():
            time.sleep(settle)
            for call in range(round_index * run_length, (round_index + 1) * run_length):
                started = time.perf_counter()
                run(call)
                if round_index >= warmup:
                    samples[name].append(time.perf_counter() - started)
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; the first column is left-aligned, the others right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = [_row(header), _row(align)]
    lines += [_row([str(cell) for cell in row]) for row in rows]
    return "\n".join(lines)


def _row(cells: Sequence[str]) -> str:
    # A bare "|" inside a cell would end it.
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


class MemorySampler:
    """Peak resident memory (RSS) of some processes, sampled by a background thread.

    Parameters
    ----------
    pids : mapping of str to int
        A name per process (a worker address, ``"client"``) and its process id.
    interval : float
        Seconds between samples; a spike shorter than this can go unseen, so the benchmarks
        also report each worker's own peak (VmHWM).

    Attributes
    ----------
    start, peak : dict of str to int
        Bytes at entry and the largest sample, per name.
    gone : set of str
        Processes that ended while sampled (a worker restarted by its nanny, for one).
    """

    def __init__(self, pids: Mapping[str, int], interval: float = 0.02) -> None:
        import psutil

        self.interval = interval
        self.start: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.gone: set[str] = set()
        self._processes = {}
        for name, pid in pids.items():
            try:
                self._processes[name] = psutil.Process(pid)
            except psutil.Error:  # ended before sampling began (a worker restarted earlier)
                self.gone.add(name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    def _sample(self) -> None:
        import psutil

        for name, process in self._processes.items():
            if name in self.gone:
                continue
            try:
                rss = process.memory_info().rss
            except psutil.Error:
                self.gone.add(name)
                continue
            self.peak[name] = max(self.peak.get(name, 0), rss)

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemorySampler:
        self._sample()
        self.start = dict(self.peak)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def peak_delta(self, name: str) -> int:
        """Largest growth of one process's RSS over its value at entry, in bytes."""
        return self.peak.get(name, 0) - self.start.get(name, 0)


def _own_pid() -> int:
    return os.getpid()


def max_rss_bytes() -> int:
    """This process's peak resident memory: Linux's VmHWM. ``getrusage``'s ru_maxrss is wrong
    for a process started by fork then exec (local workers, a benchmark's child process): it
    inherits its parent's peak."""
    status = Path("/proc/self/status")
    if status.exists():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        return int(fields["VmHWM"].split()[0]) * 1024  # in kB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS


def worker_processes(client: Any) -> dict[str, int]:
    """Worker address → process id, for every worker of ``client``'s cluster."""
    return dict(client.run(_own_pid))


def worker_max_rss(client: Any) -> dict[str, int]:
    """Worker address → the largest RSS the worker process ever had (VmHWM), bytes."""
    return dict(client.run(max_rss_bytes))


def start_cluster(n_workers: int, memory_limit: str | int | None = "auto") -> Any:
    """A local cluster of ``n_workers`` processes with 1 thread each, on 127.0.0.1."""
    from dsoftmax.cluster import local_cluster

    return local_cluster(
        n_workers=n_workers, threads_per_worker=1, memory_limit=memory_limit, dashboard=False
    )


def connect(cluster: Any) -> Any:
    """A client of ``cluster`` as dsoftmax makes one for its own local cluster: talking to the
    workers directly, so that block-server calls take no hop through the scheduler."""
    import distributed

    return distributed.Client(cluster, direct_to_workers=True)


def teacher_dataset(
    workdir: Path,
    n_samples: int,
    n_features: int,
    n_classes: int,
    chunk_rows: int,
    client: Any,
    codec: str = DEFAULT_CODEC,
) -> tuple[Any, float]:
    """The seeded ``make_classification`` dataset of these sizes in ``workdir``, written with
    dsoftmax's default codec unless told otherwise, as a user would write it.

    Benchmarks of one run share ``workdir``, so a dataset made by one is reused by the next.

    Returns
    -------
    dataset : dsoftmax.data.Dataset
    seconds : float
        Time to write it, or NaN when it was already there.
    """
    from dsoftmax import make_classification, open_dataset

    path = workdir / f"teacher-{n_samples}x{n_features}-{n_classes}c-{chunk_rows}r-{codec}.zarr"
    if (path / "zarr.json").exists():
        return open_dataset(path), math.nan
    started = time.perf_counter()
    dataset = make_classification(
        path, n_samples, n_features, n_classes, chunk_rows=chunk_rows, seed=0, client=client,
        codec=codec,
    )  # fmt: skip
    return dataset, time.perf_counter() - started


def stored_codec(dataset: Any) -> str:
    """How the chunks of a local dataset's X are compressed: "zstd", "blosc" or "none"."""
    import zarr

    compressors = zarr.open_group(str(dataset.url), mode="r")["X"].compressors
    return type(compressors[0]).__name__.removesuffix("Codec").lower() if compressors else "none"


def directory_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (a local Zarr store's size on disk)."""
    return sum(
        (Path(root) / name).stat().st_size for root, _, names in os.walk(path) for name in names
    )


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cpus() -> int:
    """Cores this process may run on (affinity, not ``os.cpu_count()``: a container may be
    limited to fewer cores than the host has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS
        return os.cpu_count() or 1


def _blas_description() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown"
    pools = [
        f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('num_threads')} threads)"
        for pool in threadpool_info()
        if pool.get("user_api") == "blas"
    ]
    pools = list(dict.fromkeys(pools))  # NumPy and SciPy may each bundle the same library
    return ", ".join(pools) or "unknown"


def machine_description() -> str:
    """A Markdown list: CPU, memory, OS and the versions that the numbers depend on."""
    import psutil

    memory_gib = psutil.virtual_memory().total / 2**30
    versions = ", ".join(
        f"{name} {_package_version(name)}"
        for name in (
            "dsoftmax", "numpy", "scipy", "scikit-learn", "dask", "distributed", "zarr",
            "numcodecs",
        )
    )  # fmt: skip
    return "\n".join(
        [
            f"- CPU: {_cpu_model()}, {usable_cpus()} usable cores "
            f"(os.cpu_count() = {os.cpu_count()})",
            f"- memory: {memory_gib:.1f} GiB",
            f"- OS: {platform.system()} {platform.release()} ({platform.machine()})",
            f"- python {platform.python_version()}, {versions}",
            f"- BLAS in the client process: {_blas_description()}",
        ]
    )


def bench_main(doc: str, run: Callable[[Any, Path], Section], full: Any, quick: Any) -> None:
    """Command line of one benchmark: ``python -m benchmarks.bench_NAME [--quick]``; prints
    its section (verdicts are informational with ``--quick``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dsoftmax-bench-") as workdir:
        section = run(quick if args.quick else full, Path(workdir))
    print(section.markdown(informational=args.quick))
