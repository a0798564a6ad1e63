"""Train dsoftmax on a SLURM cluster: dask-jobqueue submits the Dask workers as SLURM jobs.

Run it on a login node (or inside a small job of its own): this process holds the Dask scheduler
and the model, the SLURM jobs hold the workers. Everything must sit on a file system that the
compute nodes share: this Python environment (the jobs start ``sys.executable``), the data (or
use ``s3://``) and the model's directory.

    python -m pip install 'dsoftmax[s3]' dask-jobqueue
    cluster/tls/make-certs.sh ~/.dsoftmax/certs "$(hostname -f)"       # optional, see --tls-dir
    python cluster/slurm/slurm_cluster.py /shared/data/train.zarr --model /shared/models/m1 \\
        --jobs 4 --cores 16 --memory 64GiB --walltime 02:00:00 --queue compute --account myproj

Every connection is mutual TLS: with ``--tls-dir`` the certificates of ``make-certs.sh``; without
it, credentials made for this run alone, written for the jobs to ``~/.dsoftmax/jobqueue-tls``
(a directory only you can read). Each job runs one single-threaded worker process per core.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from distributed import Client
from distributed.security import Security

from dsoftmax import SoftmaxRegression, open_dataset

#: Where the per-run TLS credentials go when no --tls-dir is given: the jobs read them there.
RUN_CREDENTIALS_DIR = Path("~/.dsoftmax/jobqueue-tls").expanduser()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of this example."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="Zarr dataset path (on a shared file system) or s3:// URL")
    parser.add_argument("--model", required=True, help="where to save the model")
    parser.add_argument("--jobs", type=int, default=2, help="SLURM jobs to start (default 2)")
    parser.add_argument("--cores", type=int, default=8, help="cores per job = worker processes")
    parser.add_argument("--memory", default="32GiB", help="memory per job (default 32GiB)")
    parser.add_argument("--walltime", default="01:00:00", help="time limit of each job")
    parser.add_argument("--queue", help="SLURM partition (#SBATCH -p)")
    parser.add_argument("--account", help="SLURM account (#SBATCH -A)")
    parser.add_argument("--interface", help="network interface of the nodes, e.g. ib0")
    parser.add_argument("--tls-dir", type=Path, help="directory made by cluster/tls/make-certs.sh")
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--solver", choices=("lbfgs", "sgd", "adam"), default="lbfgs")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument(
        "--wait", type=float, default=600.0, help="seconds to wait for the workers to start"
    )
    return parser.parse_args(argv)


def security_from(tls_dir: Path | None) -> Security | bool:
    """Mutual TLS for every role from make-certs.sh's files, or True for per-run credentials.

    This process is the scheduler and the client; the jobs are the workers.
    """
    if tls_dir is None:
        return True
    files = {
        "tls_ca_file": "ca.pem",
        "tls_scheduler_cert": "scheduler.pem",
        "tls_scheduler_key": "scheduler.key",
        "tls_worker_cert": "worker.pem",
        "tls_worker_key": "worker.key",
        "tls_client_cert": "client.pem",
        "tls_client_key": "client.key",
    }
    paths = {role: tls_dir / name for role, name in files.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise SystemExit(
            f"--tls-dir {tls_dir}: missing {', '.join(missing)}; make them with "
            "cluster/tls/make-certs.sh"
        )
    return Security(require_encryption=True, **{role: str(path) for role, path in paths.items()})


def cluster_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``dask_jobqueue.SLURMCluster`` for these arguments."""
    options: dict[str, Any] = {
        "cores": args.cores,
        # One single-threaded worker process per core: NumPy then uses one core each.
        "processes": args.cores,
        "memory": args.memory,
        "walltime": args.walltime,
        "queue": args.queue,
        "account": args.account,
        "interface": args.interface,
        # Spilled blocks go to the node's local disk, not to the shared file system.
        "local_directory": "${TMPDIR:-/tmp}",
        # Workers keep their blocks for the whole fit: without NumPy's transparent huge pages
        # the kernel does not compact memory on every large allocation (docs/scaling.md).
        "job_script_prologue": ["export NUMPY_MADVISE_HUGEPAGE=0"],
        "security": security_from(args.tls_dir),
        # The dashboard is plain HTTP without login: this host only (ssh -L 8787:127.0.0.1:8787).
        "scheduler_options": {"dashboard_address": "127.0.0.1:8787"},
    }
    if options["security"] is True:
        RUN_CREDENTIALS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        options["shared_temp_directory"] = str(RUN_CREDENTIALS_DIR)
    return {name: value for name, value in options.items() if value is not None}


def wait_for_workers(client: Client, n_workers: int, timeout: float) -> int:
    """Wait until all ``n_workers`` run, or ``timeout`` seconds; return how many run.

    Blocks of rows go to the workers present when the fit starts, so start it with all of them
    when the queue allows; after the timeout, train on those that started.
    """
    try:
        client.wait_for_workers(n_workers, timeout=timeout)
    except TimeoutError:
        pass
    running = len(client.scheduler_info(n_workers=-1)["workers"])
    if running == 0:
        raise SystemExit(f"no worker started within {timeout:g} s: check the jobs with squeue")
    return running


def main(argv: list[str] | None = None) -> int:
    """Start the jobs, train, save the model, and cancel the jobs."""
    args = parse_args(argv)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        print("this example needs dask-jobqueue: pip install dask-jobqueue", file=sys.stderr)
        return 1
    with SLURMCluster(**cluster_options(args)) as cluster:
        print(f"job script of each of the {args.jobs} jobs:\n{cluster.job_script()}")
        cluster.scale(jobs=args.jobs)
        with Client(cluster) as client:
            print(f"scheduler {cluster.scheduler_address}: waiting for the workers", flush=True)
            n_workers = wait_for_workers(client, args.jobs * args.cores, args.wait)
            model = SoftmaxRegression(
                l2=args.l2, solver=args.solver, max_iter=args.max_iter, client=client
            )
            started = time.perf_counter()
            model.fit(open_dataset(args.data))
            print(
                f"trained {args.solver} in {time.perf_counter() - started:.1f} s on {n_workers} "
                f"workers: {model.n_iter_} iterations, final loss {model.loss_curve_[-1]:.6f}"
            )
            model.save(args.model)
            print(f"model saved to {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
