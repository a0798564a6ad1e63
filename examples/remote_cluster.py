"""Train on a Dask cluster that is already running, given the address of its scheduler.

The cluster's workers write the datasets and read them back during the fit, so ``--workdir``
must be a place that every worker *and* this client reach under the same name: a shared file
system mounted at the same path everywhere, or an object store URL such as ``s3://bucket/prefix``
(credentials from each machine's environment). A directory of this machine alone works only when
the workers run on this machine too.

    dask scheduler --host 10.0.0.5 --port 8786               # on the scheduler machine
    dask worker tcp://10.0.0.5:8786 --nthreads 1             # on each worker machine
    python examples/remote_cluster.py --scheduler tcp://10.0.0.5:8786 --workdir /shared/demo
        [--n-samples 40000] [--n-features 16] [--n-classes 4]

``DSOFTMAX_SCHEDULER=tcp://10.0.0.5:8786`` may replace ``--scheduler``. Plain ``tcp://`` is
neither encrypted nor authenticated: on any network others can reach, use ``tls://`` with Dask's
TLS settings (``DASK_DISTRIBUTED__COMM__TLS__*``, see cluster/README.md).
"""

import argparse
import os

from dsoftmax import SoftmaxRegression, make_classification, open_dataset
from dsoftmax.cluster import describe, get_client
from dsoftmax.evaluation import evaluate_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scheduler",
        default=os.environ.get("DSOFTMAX_SCHEDULER"),
        help="scheduler address, e.g. tcp://10.0.0.5:8786 (default: $DSOFTMAX_SCHEDULER)",
    )
    parser.add_argument(
        "--workdir",
        required=True,
        help="directory or URL that the workers and this client share, for the datasets",
    )
    parser.add_argument("--n-samples", type=int, default=40_000)
    parser.add_argument("--n-features", type=int, default=16)
    parser.add_argument("--n-classes", type=int, default=4)
    args = parser.parse_args()
    if not args.scheduler:
        parser.error("no scheduler: pass --scheduler ADDRESS or set DSOFTMAX_SCHEDULER")
    # Workers resolve a relative path against their own working directory: make it absolute.
    workdir = args.workdir if "://" in args.workdir else os.path.abspath(args.workdir)

    client = get_client(args.scheduler)  # one client per address, reused by the fit below
    print(f"cluster: {describe(client)}")

    # Each chunk is made and written by a worker: nothing large passes through this client.
    for name, n_samples, seed in (("train", args.n_samples, 0), ("test", args.n_samples // 4, 1)):
        make_classification(
            f"{workdir}/{name}.zarr",
            max(1, n_samples),
            args.n_features,
            args.n_classes,
            chunk_rows=max(1, n_samples // 8),
            seed=seed,
            teacher_seed=0,  # one teacher: the test rows are new rows of the same task
            client=client,
            overwrite=True,
        )
    train = open_dataset(f"{workdir}/train.zarr")
    test = open_dataset(f"{workdir}/test.zarr")

    model = SoftmaxRegression(l2=1e-4, solver="lbfgs", client=args.scheduler).fit(train)
    report = evaluate_model(model, test, client=client)
    n_workers = len(client.nthreads())
    print(f"fit: {model.n_iter_} L-BFGS iterations on {n_workers} workers")
    print(
        f"result: test_accuracy={report['accuracy']:.4f} test_loss={report['loss']:.4f} "
        f"n_workers={n_workers}"
    )


if __name__ == "__main__":
    main()
