"""Timing, machine description and Markdown tables shared by the benchmarks."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

__all__ = ["Timing", "machine_description", "markdown_table", "measure", "measure_interleaved"]


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
    candidates: Mapping[str, Callable[[int], object]], repeat: int, warmup: int = 1
) -> dict[str, Timing]:
    """Run rounds in which every candidate runs once, as ``candidates[name](round_index)``.

    The first ``warmup`` rounds are not timed; the next ``repeat`` are. Interleaving spreads a
    burst of outside load over every candidate instead of over the one that happened to run
    then, so the ratios between candidates stay meaningful on a shared machine.
    """
    if repeat < 1 or warmup < 0:
        raise ValueError(f"need repeat >= 1 and warmup >= 0, got {repeat} and {warmup}.")
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(warmup + repeat):
        for name, run in candidates.items():
            started = time.perf_counter()
            run(round_index)
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
    return "| " + " | ".join(cells) + " |"


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


def _usable_cpus() -> int:
    # Affinity, not os.cpu_count(): a container may be limited to fewer cores than the host has.
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
        for name in ("dsoftmax", "numpy", "dask", "distributed", "zarr")
    )
    return "\n".join(
        [
            f"- CPU: {_cpu_model()}, {_usable_cpus()} usable cores "
            f"(os.cpu_count() = {os.cpu_count()})",
            f"- memory: {memory_gib:.1f} GiB",
            f"- OS: {platform.system()} {platform.release()} ({platform.machine()})",
            f"- python {platform.python_version()}, {versions}",
            f"- BLAS in the client process: {_blas_description()}",
        ]
    )
