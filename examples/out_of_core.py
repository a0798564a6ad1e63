"""Train on a dataset larger than the workers' memory: the workers stream it from the store.

Starts a local cluster of two single-threaded workers with a small memory limit each, writes a
dataset ``--oversize`` times their total limit (the workers make and write it chunk by chunk),
and fits with ``hold_data="auto"``: the data cannot stay in the workers' memory, so the fit
streams the row chunks from the store on every pass instead. At the end each worker reports its
peak resident memory, which stays below its limit. With bokeh installed, watch the workers'
memory on the dashboard printed at the start.

    python examples/out_of_core.py [--memory-limit 512MiB] [--oversize 2.0] [--n-features 128]
        [--solver {sgd,lbfgs}] [--max-iter N] [--workdir DIR]

On a real cluster the same fit reads its chunks from shared storage
(``SoftmaxRegression(hold_data="stream", client="tls://scheduler:8786")``). Raise
``--oversize`` here to see the run time grow with the data while the memory stays flat.
"""

import argparse
import logging
import math
import os
import resource
import sys
import tempfile
import warnings
from pathlib import Path

from dask.utils import format_bytes, parse_bytes
from distributed import Client

from dsoftmax import make_classification
from dsoftmax.cluster import describe, local_cluster
from dsoftmax.evaluation import evaluate_model

N_WORKERS = 2


def peak_rss() -> int:
    """Peak resident memory of the calling process, in bytes: Linux's VmHWM, as getrusage's
    ru_maxrss of a process started by fork and exec (a worker) carries over its parent's peak."""
    status = Path("/proc/self/status")
    if not status.exists():  # elsewhere (macOS): getrusage's peak, in bytes there
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
    return int(fields["VmHWM"].split()[0]) * 1024  # in kB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-limit", default="512MiB", help="memory limit of each worker")
    parser.add_argument("--oversize", type=float, default=2.0, help="data size / total limit")
    parser.add_argument("--n-features", type=int, default=128)
    parser.add_argument("--solver", choices=["sgd", "lbfgs"], default="sgd")
    parser.add_argument("--max-iter", type=int, help="sgd epochs (1) or lbfgs iterations (5)")
    parser.add_argument("--workdir", type=Path, help="where to write the data (default: temp)")
    args = parser.parse_args()
    # Imported here, not at the top: the workers are spawned processes that import this script's
    # top level, and the estimator's scikit-learn (~110 MiB) would count against their limits.
    from sklearn.exceptions import ConvergenceWarning

    from dsoftmax import SoftmaxRegression

    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="dsoftmax-example-"))).resolve()
    # dsoftmax logs at INFO how the fit holds the data, and one line per epoch or iteration.
    logging.basicConfig(stream=sys.stdout, format="%(message)s")
    logging.getLogger("dsoftmax").setLevel(logging.INFO)
    limit = parse_bytes(args.memory_limit)
    # float32 features alone make the dataset `oversize` times the workers' total memory.
    n_samples = math.ceil(args.oversize * N_WORKERS * limit / (4 * args.n_features))

    with (
        local_cluster(n_workers=N_WORKERS, memory_limit=limit) as cluster,
        Client(cluster) as client,
    ):
        print(f"cluster: {describe(client)}")
        worker_pids = client.run(os.getpid)
        datasets = {}
        for name, rows, seed in (("train", n_samples, 0), ("test", 20_000, 1)):
            datasets[name] = make_classification(
                workdir / f"{name}.zarr",
                rows,
                args.n_features,
                4,  # classes
                chunk_rows=16_384,  # 8 MiB chunks with 128 float32 features
                seed=seed,
                teacher_seed=0,  # one teacher: the test rows are new rows of the same task
                client=client,
                overwrite=True,
            )
        train, test = datasets["train"], datasets["test"]
        dataset_bytes = train.X.nbytes + train.y.nbytes
        print(f"data: {train.n_samples} x {train.n_features}, {format_bytes(dataset_bytes)}")

        model = SoftmaxRegression(
            solver=args.solver,
            max_iter=args.max_iter or (1 if args.solver == "sgd" else 5),
            learning_rate=0.1,
            batch_size=32_768,
            l2=1e-5,
            random_state=0,
            hold_data="auto",  # "stream" here: the data exceeds half the workers' memory
            shuffle_window=49_152,  # 3 chunks: a batch reads from at most 8 (2 windows)
            client=client,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # few passes, on purpose
            model.fit(train)
        report = evaluate_model(model, test, client=client)
        peak = max(client.run(peak_rss).values())
        restarted = client.run(os.getpid) != worker_pids  # a restart would reset the peaks

    print(f"peak worker memory {format_bytes(peak)} of a {format_bytes(limit)} limit each")
    print(
        f"result: dataset_bytes={dataset_bytes} total_worker_memory_limit={N_WORKERS * limit} "
        f"worker_memory_limit={limit} peak_worker_rss={peak} workers_restarted={restarted} "
        f"test_accuracy={report['accuracy']:.4f}"
    )


if __name__ == "__main__":  # worker processes are spawned and import __main__
    main()
