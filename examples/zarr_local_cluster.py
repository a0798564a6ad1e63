"""Train on a Zarr dataset with a local Dask cluster, evaluate on held-out rows, save and reload.

Makes a synthetic dataset labelled by a seeded linear "teacher" and a test set with new rows
from the same teacher, fits full-batch L-BFGS with the blocks held by local worker processes,
prints the evaluation report, and checks that the saved model predicts as the fitted one.

    python examples/zarr_local_cluster.py [--n-samples 40000] [--n-features 16]
        [--n-classes 4] [--workdir DIR]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from dsoftmax import SoftmaxRegression, make_classification, open_dataset
from dsoftmax.cluster import describe, get_client
from dsoftmax.evaluation import evaluate_model, format_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=40_000)
    parser.add_argument("--n-features", type=int, default=16)
    parser.add_argument("--n-classes", type=int, default=4)
    parser.add_argument(
        "--workdir", type=Path, help="where to write data and model (default: temp)"
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dsoftmax-example-"))

    # No address: a local cluster on 127.0.0.1, started once and closed at exit. Pass
    # "tls://scheduler:8786" (and TLS files, see cluster/README.md) to use a real cluster.
    client = get_client()
    print(f"cluster: {describe(client)}")

    make_classification(
        workdir / "train.zarr",
        args.n_samples,
        args.n_features,
        args.n_classes,
        chunk_rows=max(1, args.n_samples // 4),
        seed=0,
        overwrite=True,
    )
    # New rows (seed=1) labelled by the training set's teacher (teacher_seed=0).
    make_classification(
        workdir / "test.zarr",
        max(1, args.n_samples // 4),
        args.n_features,
        args.n_classes,
        chunk_rows=max(1, args.n_samples // 8),
        seed=1,
        teacher_seed=0,
        overwrite=True,
    )
    train = open_dataset(workdir / "train.zarr")
    test = open_dataset(workdir / "test.zarr")
    print(f"data: {train.n_samples} x {train.n_features} in {len(train.chunk_rows)} chunks")

    started = time.perf_counter()
    model = SoftmaxRegression(l2=1e-4, solver="lbfgs").fit(train)
    print(
        f"fit: {model.n_iter_} L-BFGS iterations in {time.perf_counter() - started:.2f} s, "
        f"final objective {model.loss_curve_[-1]:.6f}"
    )

    report = evaluate_model(model, test)
    print(format_report(report))

    model.save(workdir / "model")
    reloaded = SoftmaxRegression.load(workdir / "model")
    same = bool(np.array_equal(reloaded.predict(test).compute(), model.predict(test).compute()))
    print(f"model saved to {workdir / 'model'}; reloaded model predicts the same: {same}")
    print(
        f"result: test_accuracy={report['accuracy']:.4f} test_loss={report['loss']:.4f} "
        f"reloaded_same={same}"
    )


if __name__ == "__main__":  # worker processes are spawned and import __main__
    main()
