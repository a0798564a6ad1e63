"""End to end: Parquet files → trained model → test accuracy, with the ``dsoftmax`` command
against the scikit-learn script a user would otherwise write, in the same run.

For each size (rows × features × classes of the training files; test files a tenth of it),
Parquet files of float32 embeddings (a fixed-size list column) and int labels drawn by a linear
teacher are written once, then timed, each as fresh processes started from this one:

* **script**: one Python process that reads the training and test files with pyarrow, fits
  ``sklearn.linear_model.LogisticRegression()`` (its defaults: lbfgs, ``C=1``, ``tol=1e-4``,
  ``max_iter=100``) and scores the test rows;
* **first run**: ``dsoftmax convert`` of the training files, then ``dsoftmax train`` with the
  same objective (``--l2`` = 1/(2·C·n), ``--tol 1e-4``, ``--max-iter 100``) and ``--test`` on
  the test files as they are (the report ``dsoftmax evaluate`` prints, after the fit: a
  held-out set read once needs no conversion), one after the other, no scheduler named;
* **retrain**: ``dsoftmax train --test`` again, on the converted training store;
* **straight from Parquet** (informational): ``dsoftmax train`` of the training files as they
  are, no conversion (the four runs take turns, round after round; the table gives each one's
  medians);
* **conversion against a pyarrow read**, in this process, rounds taking turns:
  :func:`dsoftmax.data.convert.convert_parquet` of the training files against
  ``pyarrow.parquet.read_table`` of the same files; and the conversion's peak resident memory
  above its start (a fresh process) against its row groups' size;
* **fixed costs**: each command (``train`` with and without ``--test``, ``evaluate`` of a store
  and of Parquet files) on a tiny dataset, where its time is start-up alone.

Targets at every size: the first run ≤ 0.7× the script, the retrain ≤ 0.4× the script, the
conversion ≤ 1.2× the pyarrow read.

Run ``python -m benchmarks.bench_end_to_end [--quick] [--sizes 500000x256x20]`` from the
repository root; a run that is not ``--quick`` writes ``benchmarks/results/end_to_end.md``
(``--out`` overrides), with the command that made it.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .common import (
    Section,
    Timing,
    Verdict,
    machine_description,
    markdown_table,
    measure_interleaved,
    plural,
)

__all__ = ["FULL", "NAME", "QUICK", "EndToEndConfig", "run", "write_parquet_files"]

NAME = "end_to_end"
#: The first run (conversion included) ÷ the scikit-learn script, at most.
FIRST_RUN_THRESHOLD = 0.7
#: A retrain on the converted store ÷ the scikit-learn script, at most.
RETRAIN_THRESHOLD = 0.4
#: The conversion ÷ a pyarrow read of the same files, at most.
CONVERT_THRESHOLD = 1.2

RESULTS = Path(__file__).resolve().parent / "results" / "end_to_end.md"
CLI = (sys.executable, "-m", "dsoftmax")


@dataclass(frozen=True)
class EndToEndConfig:
    """Sizes and repetitions.

    Attributes
    ----------
    sizes : tuple of (n_samples, n_features, n_classes)
        Training rows, features and classes of each size; the test files hold a tenth as many
        rows.
    n_files : int
        Parquet files per set (one row group each, as pyarrow writes files of that size).
    rounds : int
        Rounds of the runs (the script, the first run, the retrain, straight from Parquet),
        taking turns; the table gives medians.
    convert_rounds : int
        Timed rounds of the conversion against the pyarrow read.
    max_iter : int
        L-BFGS iterations at most, for both.
    tiny : tuple of (n_samples, n_features, n_classes)
        The dataset of the fixed costs.
    """

    sizes: tuple[tuple[int, int, int], ...]
    n_files: int = 8
    rounds: int = 3
    convert_rounds: int = 3
    max_iter: int = 100
    tiny: tuple[int, int, int] = (2_000, 16, 4)


FULL = EndToEndConfig(sizes=((2_000_000, 256, 20), (500_000, 256, 20)))
QUICK = EndToEndConfig(
    sizes=((20_000, 16, 4),), n_files=2, rounds=1, convert_rounds=1, max_iter=30
)

#: The scikit-learn script: what a user writes without dsoftmax.
SKLEARN_SCRIPT = textwrap.dedent(
    """
    import glob, json, sys, time
    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.linear_model import LogisticRegression

    def load(pattern):
        table = pq.read_table(sorted(glob.glob(pattern)))
        X = table.column("embedding").combine_chunks().flatten().to_numpy()
        return X.reshape(table.num_rows, -1), table.column("label").to_numpy()

    started = time.perf_counter()
    X, y = load(sys.argv[1])
    X_test, y_test = load(sys.argv[2])
    loaded = time.perf_counter()
    model = LogisticRegression(max_iter=int(sys.argv[3])).fit(X, y)
    fitted = time.perf_counter()
    accuracy = model.score(X_test, y_test)
    print(json.dumps({"load": loaded - started, "fit": fitted - loaded,
                      "score": time.perf_counter() - fitted, "accuracy": accuracy,
                      "n_iter": int(model.n_iter_[0])}))
    """
)

#: Peak resident memory of one conversion, in a fresh process: ``{"start", "peak"}`` bytes (the
#: peak is VmHWM: ru_maxrss would carry over the benchmark process's own peak through fork and
#: exec).
CONVERT_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import psutil
    from benchmarks.common import max_rss_bytes
    from dsoftmax.data.convert import convert_parquet
    start = psutil.Process().memory_info().rss
    convert_parquet(sys.argv[1], sys.argv[2], label_column="label",
                    embedding_column="embedding", overwrite=True)
    print(json.dumps({"start": start, "peak": max_rss_bytes()}))
    """
)


def write_parquet_files(
    folder: Path, n_rows: int, n_features: int, n_classes: int, n_files: int, seed: int
) -> int:
    """Parquet files of float32 embeddings and int64 labels of a linear teacher (seed 0);
    returns the bytes written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    teacher = np.random.default_rng(0).standard_normal((n_classes, n_features)) / np.sqrt(
        n_features
    )
    rng = np.random.default_rng(seed)
    for index, rows in enumerate(np.array_split(np.arange(n_rows), n_files)):
        X = rng.standard_normal((len(rows), n_features), dtype=np.float32)
        noise = rng.gumbel(size=(len(rows), n_classes)) * 0.5
        y = np.argmax(X @ teacher.T + noise, axis=1).astype(np.int64)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), n_features)
        table = pa.table({"embedding": embedding, "label": y})
        pq.write_table(table, folder / f"part-{index:03d}.parquet", row_group_size=len(rows))
    return sum(path.stat().st_size for path in folder.iterdir())


def _timed(argv: list[str], **options: Any) -> tuple[float, str]:
    """Run a process to its end: (wall seconds, stdout); raise with its output on failure."""
    started = time.perf_counter()
    completed = subprocess.run(argv, capture_output=True, text=True, check=False, **options)
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:6])} ... exited {completed.returncode}:\n{completed.stderr[-3000:]}"
        )
    return elapsed, completed.stdout


def _dsoftmax(*args: object) -> tuple[float, str]:
    return _timed([*CLI, *map(str, args)])


@dataclass(frozen=True)
class _Files:
    train: str
    test: str
    n_train: int
    source_bytes: int


def _make_files(workdir: Path, size: tuple[int, int, int], config: EndToEndConfig) -> _Files:
    n_train, n_features, n_classes = size
    root = workdir / f"parquet-{n_train}x{n_features}x{n_classes}"
    shutil.rmtree(root, ignore_errors=True)
    source_bytes = write_parquet_files(
        root / "train", n_train, n_features, n_classes, config.n_files, seed=1
    )
    n_test = max(n_train // 10, 100)
    write_parquet_files(
        root / "test", n_test, n_features, n_classes, max(1, config.n_files // 4), seed=2
    )
    return _Files(str(root / "train" / "*.parquet"), str(root / "test" / "*.parquet"), n_train,
                  source_bytes)  # fmt: skip


#: The columns of the Parquet files, as the commands name them.
COLUMNS = ("--label-column", "label", "--embedding-column", "embedding")
#: The runs of dsoftmax: whether each converts the training files, and what it trains on.
RUNS = {"first": (True, "store"), "retrain": (False, "store"), "parquet": (False, "parquet")}
#: How the report names each run.
RUN_NAMES = {"first": "first run", "retrain": "retrain", "parquet": "straight from Parquet"}


def _convert_args(pattern: str, out: Path) -> list[object]:
    return ["convert", pattern, "--out", out, *COLUMNS, "--overwrite"]


def _dsoftmax_run(files: _Files, workdir: Path, config: EndToEndConfig, run: str) -> dict[str, Any]:
    """The commands of a first run, a retrain or a fit straight from Parquet (:data:`RUNS`),
    the test files read as they are: seconds per command."""
    from dsoftmax.objective import l2_from_sklearn_C

    convert, source = RUNS[run]
    train_store = workdir / "train.zarr"
    seconds: dict[str, float] = {}
    if convert:
        seconds["convert train"], _ = _dsoftmax(*_convert_args(files.train, train_store))
    l2 = l2_from_sklearn_C(1.0, files.n_train)
    seconds["train --test"], output = _dsoftmax(
        "train", train_store if source == "store" else files.train, "--model",
        workdir / "model", "--l2", repr(l2), "--tol", "1e-4", "--max-iter", config.max_iter,
        "--test", files.test, *COLUMNS,
    )  # fmt: skip
    accuracy = re.search(r"^accuracy: +([\d.]+)$", output, flags=re.MULTILINE)
    if accuracy is None:
        raise RuntimeError(f"dsoftmax train --test printed no accuracy:\n{output}")
    return {
        "seconds": seconds,
        "total": sum(seconds.values()),
        "accuracy": float(accuracy.group(1)),
        "trained": output.splitlines()[0].strip(),
    }


def _script_run(files: _Files, config: EndToEndConfig) -> dict[str, Any]:
    total, output = _timed(
        [sys.executable, "-c", SKLEARN_SCRIPT, files.train, files.test, str(config.max_iter)]
    )
    return {"total": total, **json.loads(output.strip().splitlines()[-1])}


def _convert_against_read(files: _Files, workdir: Path, rounds: int) -> dict[str, Timing]:
    import pyarrow.parquet as pq

    from dsoftmax.data.convert import convert_parquet

    paths = sorted(glob.glob(files.train))
    out = workdir / "converted.zarr"

    def read(_: int) -> None:
        pq.read_table(paths)

    def convert(_: int) -> None:
        convert_parquet(paths, out, label_column="label", embedding_column="embedding",
                        overwrite=True)  # fmt: skip

    timings = measure_interleaved({"pyarrow read": read, "convert": convert}, repeat=rounds)
    shutil.rmtree(out, ignore_errors=True)
    return timings


#: Rows of the file whose conversion measures what the libraries alone take (imports, pools).
MEMORY_BASELINE_ROWS = 1_000


def _convert_memory(files: _Files, workdir: Path, size: tuple[int, int, int]) -> dict[str, int]:
    """The conversion's peak growth in a fresh process, and that of a conversion of
    :data:`MEMORY_BASELINE_ROWS` rows of the same columns: what the libraries take."""
    _, n_features, n_classes = size
    small = workdir / "memory-baseline"
    write_parquet_files(small, MEMORY_BASELINE_ROWS, n_features, n_classes, 1, seed=3)
    growth = {}
    for name, pattern in (("all", files.train), ("baseline", str(small / "*.parquet"))):
        _, output = _timed(
            [sys.executable, "-c", CONVERT_MEMORY_SCRIPT, pattern, str(workdir / "mem.zarr")]
        )
        shutil.rmtree(workdir / "mem.zarr", ignore_errors=True)
        measured = json.loads(output.strip().splitlines()[-1])
        growth[name] = measured["peak"] - measured["start"]
    shutil.rmtree(small, ignore_errors=True)
    return growth


def _fixed_costs(workdir: Path, config: EndToEndConfig) -> dict[str, float]:
    """Each command on a tiny dataset: its start-up, imports and fixed work."""
    files = _make_files(workdir / "tiny", config.tiny, EndToEndConfig(sizes=(), n_files=1))
    tiny = workdir / "tiny"
    run = _dsoftmax_run(files, tiny, config, "first")
    seconds = {name: run["seconds"][name] for name in ("convert train", "train --test")}
    seconds["train"], _ = _dsoftmax("train", tiny / "train.zarr", "--model", tiny / "model")
    seconds["convert test"], _ = _dsoftmax(*_convert_args(files.test, tiny / "test.zarr"))
    seconds["evaluate (store)"], _ = _dsoftmax("evaluate", tiny / "model", tiny / "test.zarr")
    seconds["evaluate (Parquet)"], _ = _dsoftmax(
        "evaluate", tiny / "model", files.test, *COLUMNS
    )
    seconds["dsoftmax --help"], _ = _dsoftmax("--help")
    return seconds


def _measure_size(
    size: tuple[int, int, int], workdir: Path, config: EndToEndConfig
) -> dict[str, Any]:
    files = _make_files(workdir, size, config)
    # Interleaved: the script, then the first run, then the retrain, so that a burst of outside
    # load falls on each.
    runs: dict[str, list[dict[str, Any]]] = {"script": [], **{run: [] for run in RUNS}}
    for _ in range(config.rounds):
        runs["script"].append(_script_run(files, config))
        for run in RUNS:
            runs[run].append(_dsoftmax_run(files, workdir, config, run))
    medians = {name: median_run(rounds) for name, rounds in runs.items()}
    conversion = _convert_against_read(files, workdir, config.convert_rounds)
    memory = _convert_memory(files, workdir, size)
    return {"size": size, "files": files, **medians, "conversion": conversion,
            "memory": memory}  # fmt: skip


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One run's record for several rounds of it: the median total and the median of each
    part (``seconds`` of a dsoftmax run, ``load``/``fit``/``score`` of the script), the
    totals' range as ``spread``; the rest (accuracy, iterations, output) of the last round."""
    median = dict(runs[-1])
    totals = [run["total"] for run in runs]
    median["total"] = float(np.median(totals))
    median["spread"] = (min(totals), max(totals))
    if "seconds" in median:
        median["seconds"] = {
            name: float(np.median([run["seconds"][name] for run in runs]))
            for name in median["seconds"]
        }
    for part in ("load", "fit", "score"):
        if part in median:
            median[part] = float(np.median([run[part] for run in runs]))
    return median


def _size_text(size: tuple[int, int, int]) -> str:
    n, d, k = size
    return f"{n:,} × {d} × {k}"


def _spread(run: dict[str, Any]) -> str:
    return "{:.1f}–{:.1f}".format(*run["spread"])


def _run_row(name: str, run: dict[str, Any], script_total: float) -> list[str]:
    """A dsoftmax run's row of the table: its commands' seconds and its ratio to the script."""
    parts = ", ".join(f"{part} {seconds:.1f} s" for part, seconds in run["seconds"].items())
    return [f"dsoftmax {name}", f"{run['total']:.1f}", _spread(run), parts,
            f"{run['accuracy']:.4f}", f"{run['total'] / script_total:.2f}"]  # fmt: skip


def _size_section(result: dict[str, Any], config: EndToEndConfig) -> tuple[str, list[Verdict]]:
    size, script, first, retrain = (result[k] for k in ("size", "script", "first", "retrain"))
    conversion, memory, files = result["conversion"], result["memory"], result["files"]
    rows = [
        ["scikit-learn script", f"{script['total']:.1f}", _spread(script), f"load "
         f"{script['load']:.1f} s, fit {script['fit']:.1f} s ({script['n_iter']} iterations), "
         f"score {script['score']:.1f} s", f"{script['accuracy']:.4f}", "1.00"],
        *(_run_row(RUN_NAMES[name], result[name], script["total"]) for name in RUNS),
    ]  # fmt: skip
    read, convert = conversion["pyarrow read"], conversion["convert"]
    threads = os.cpu_count() or 1
    row_group = files.source_bytes / config.n_files
    growth, baseline = memory["all"], memory["baseline"]
    text = "\n".join(
        [
            f"#### {_size_text(size)} ({files.source_bytes / 2**30:.2f} GiB of Parquet in "
            f"{plural(config.n_files, 'file')})",
            "",
            f"Medians of {plural(config.rounds, 'round')}, the runs taking turns in each (each "
            "part's own median; min–max of the totals). The test files are read as they are.",
            "",
            markdown_table(
                ["run", "median s", "min–max s", "parts", "test accuracy", "÷ script"], rows
            ),
            "",
            f"`dsoftmax train` said: {first['trained']}",
            "",
            markdown_table(
                ["in this process", "median s", "min s", "max s"],
                [
                    ["pyarrow.parquet.read_table", *read.cells()],
                    ["convert_parquet", *convert.cells()],
                ],
            ),
            "",
            f"Conversion in a fresh process: resident memory grew by {growth / 2**20:.0f} MiB "
            f"at its peak, for row groups of {row_group / 2**20:.0f} MiB on {threads} threads "
            f"({growth / (row_group * threads):.2f} row groups per thread); a conversion of "
            f"{MEMORY_BASELINE_ROWS:,} such rows grew by {baseline / 2**20:.0f} MiB (the "
            f"libraries), so {(growth - baseline) / (row_group * threads):.2f} row groups per "
            "thread beyond them.",
        ]
    )
    label = _size_text(size)
    verdicts = [
        Verdict(f"11 first run at {label}",
                "convert train + train --test ÷ the scikit-learn script (medians)",
                first["total"] / script["total"], FIRST_RUN_THRESHOLD),
        Verdict(f"11 retrain at {label}", "train --test ÷ the scikit-learn script (medians)",
                retrain["total"] / script["total"], RETRAIN_THRESHOLD),
        Verdict(f"11 conversion at {label}", "convert_parquet ÷ pyarrow read_table (medians)",
                convert.median / read.median, CONVERT_THRESHOLD),
    ]  # fmt: skip
    return text, verdicts


def run(config: EndToEndConfig, workdir: Path) -> Section:
    """Every size, then the fixed costs; the section of the report."""
    load_before = os.getloadavg()[0]
    parts, verdicts = [], []
    for size in config.sizes:
        text, size_verdicts = _size_section(_measure_size(size, workdir, config), config)
        parts.append(text)
        verdicts += size_verdicts
    fixed = _fixed_costs(workdir, config)
    load_after = os.getloadavg()[0]
    fixed_rows = [[name, f"{seconds:.2f}"] for name, seconds in fixed.items()]
    body = "\n\n".join(
        [
            f"Load average (1 min) before {load_before:.2f}, after {load_after:.2f}, on "
            f"{os.cpu_count()} cores. Every command and the script run as fresh processes; no "
            "scheduler is named, so the commands run in their own process.",
            *parts,
            f"#### Fixed costs: each command on {_size_text(config.tiny)}",
            markdown_table(["command", "seconds"], fixed_rows),
        ]
    )
    return Section(NAME, "11. End to end: Parquet → model → test accuracy", body, verdicts)


def _sizes(text: str) -> tuple[tuple[int, int, int], ...]:
    """``"500000x256x20,2000000x256x20"`` → ``((500000, 256, 20), (2000000, 256, 20))``."""
    sizes = []
    for size in text.split(","):
        parts = size.strip().lower().split("x")
        if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
            raise ValueError(f"a size is ROWSxFEATURESxCLASSES of positive integers, got {size!r}")
        sizes.append((int(parts[0]), int(parts[1]), int(parts[2])))
    return tuple(sizes)


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.bench_end_to_end [--quick] [--sizes SIZES] [--out PATH]``."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny size, for a smoke run")
    parser.add_argument("--out", type=Path, help="report path (a full run: results/end_to_end.md)")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        help="ROWSxFEATURESxCLASSES[,...] instead of the full run's sizes, e.g. 500000x256x20",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.sizes:
        config = dataclasses.replace(config, sizes=args.sizes)
    with tempfile.TemporaryDirectory(prefix="dsoftmax-bench-") as workdir:
        section = run(config, Path(workdir))
    text = "\n\n".join(
        ["# dsoftmax end-to-end benchmark",
         f"Command: `python -m benchmarks.bench_end_to_end {' '.join(argv or sys.argv[1:])}`",
         machine_description(), section.markdown(informational=args.quick)]
    ) + "\n"  # fmt: skip
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
