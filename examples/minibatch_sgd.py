"""Minibatch SGD with momentum, a cosine learning-rate schedule and early stopping, on Zarr.

Holds out a validation fraction of the training rows, prints the training loss and the
validation scores of every epoch, then the accuracy on a test set of new rows from the same
teacher. The same seed gives the same weights on any number of workers.

    python examples/minibatch_sgd.py [--n-samples 20000] [--n-features 16] [--n-classes 4]
        [--batch-size 2048] [--epochs 8] [--learning-rate 0.1] [--workdir DIR]
"""

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from sklearn.exceptions import ConvergenceWarning

from dsoftmax import SoftmaxRegression, make_classification, open_dataset
from dsoftmax.cluster import describe, get_client
from dsoftmax.evaluation import evaluate_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--n-features", type=int, default=16)
    parser.add_argument("--n-classes", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--workdir", type=Path, help="where to write the data (default: temp)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dsoftmax-example-"))

    client = get_client()  # a local cluster on 127.0.0.1, closed at exit
    print(f"cluster: {describe(client)}")
    for name, n_samples, seed in (("train", args.n_samples, 0), ("test", args.n_samples // 4, 1)):
        make_classification(
            workdir / f"{name}.zarr",
            max(1, n_samples),
            args.n_features,
            args.n_classes,
            chunk_rows=max(1, n_samples // 4),
            seed=seed,
            teacher_seed=0,  # one teacher: the test rows are new rows of the same task
            overwrite=True,
        )
    train = open_dataset(workdir / "train.zarr")
    test = open_dataset(workdir / "test.zarr")

    model = SoftmaxRegression(
        solver="sgd",
        learning_rate=args.learning_rate,
        momentum=0.9,
        lr_schedule="cosine",
        batch_size=args.batch_size,
        max_iter=args.epochs,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=3,
        l2=1e-4,
        random_state=0,
    )
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        # The cosine schedule is planned for all epochs: running them all is no failure.
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(train)
    elapsed = time.perf_counter() - started
    ran_all = any(issubclass(w.category, ConvergenceWarning) for w in caught)

    print("epoch  train loss  val loss  val accuracy")
    for epoch, (loss, scores) in enumerate(
        zip(model.loss_curve_, model.validation_scores_, strict=True), start=1
    ):
        print(
            f"{epoch:5d}  {loss:10.5f}  {scores['val_loss']:8.5f}  {scores['val_accuracy']:12.4f}"
        )
    how = "ran all epochs" if ran_all else "stopped early: validation loss stopped improving"
    print(f"{model.n_iter_} epochs in {elapsed:.2f} s ({how})")

    report = evaluate_model(model, test)
    print(
        f"result: epochs={model.n_iter_} "
        f"val_accuracy={model.validation_scores_[-1]['val_accuracy']:.4f} "
        f"test_accuracy={report['accuracy']:.4f} test_loss={report['loss']:.4f}"
    )


if __name__ == "__main__":  # worker processes are spawned and import __main__
    main()
