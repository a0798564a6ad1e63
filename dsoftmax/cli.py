"""The ``dsoftmax`` command: a thin layer over the Python API.

Exit codes: 0 success, 1 runtime or data failure, 2 usage error (bad arguments or
hyper-parameters). Errors are printed as one line, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]

logger = logging.getLogger("dsoftmax")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A bad argument or hyper-parameter: exit code 2."""


# ----------------------------------------------------------------------- parser
def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster")
    group.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="Dask scheduler address (tcp://host:8786 or tls://host:8786); "
        "default: a local cluster on 127.0.0.1",
    )
    group.add_argument("--tls-ca-file", metavar="PEM", help="CA certificate for tls:// schedulers")
    group.add_argument("--tls-cert", metavar="PEM", help="client certificate for tls://")
    group.add_argument("--tls-key", metavar="PEM", help="client private key for tls://")
    group.add_argument(
        "--storage-options",
        metavar="JSON",
        type=_json_object,
        help='fsspec options for s3://… paths, e.g. \'{"client_kwargs": {"endpoint_url": "…"}}\'',
    )


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="dsoftmax",
        description="Data-parallel softmax regression with L2 regularization on Dask and Zarr.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log one line per iteration/epoch (-vv: debug)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    make = commands.add_parser("make-data", help="write a synthetic teacher dataset to Zarr")
    make.add_argument("out", help="output Zarr path or URL")
    make.add_argument("--n-samples", type=_positive_int, default=100_000)
    make.add_argument("--n-features", type=_positive_int, default=32)
    make.add_argument("--n-classes", type=_positive_int, default=10)
    make.add_argument("--chunk-rows", type=_positive_int, default=65536)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    make.add_argument("--codec", choices=("zstd", "lz4", "none"), default="zstd")
    make.add_argument("--overwrite", action="store_true", help="replace an existing store")
    _add_cluster_options(make)

    convert = commands.add_parser("convert", help="convert .npz or .npy files to a Zarr dataset")
    convert.add_argument("source", nargs="+", help="DATA.npz, or X.npy y.npy")
    convert.add_argument("--out", required=True, help="output Zarr path or URL")
    convert.add_argument("--feature-key", default="X", help="array name of the features in .npz")
    convert.add_argument("--label-key", default="y", help="array name of the labels in .npz")
    convert.add_argument("--chunk-rows", type=_positive_int, default=65536)
    convert.add_argument("--codec", choices=("zstd", "lz4", "none"), default="zstd")
    convert.add_argument("--overwrite", action="store_true")
    _add_cluster_options(convert)

    train = commands.add_parser("train", help="fit a model on a Zarr dataset")
    train.add_argument("data", help="Zarr dataset path or URL")
    train.add_argument("--model", required=True, help="where to save the fitted model")
    train.add_argument("--solver", choices=("lbfgs", "sgd", "adam"), default="lbfgs")
    train.add_argument("--l2", type=float, default=1e-4, help="λ in λ‖W‖² (default 1e-4)")
    train.add_argument("--no-intercept", action="store_true", help="fit no intercept")
    train.add_argument("--batch-size", type=int, default=8192, help="rows per minibatch")
    train.add_argument("--learning-rate", type=float, default=0.01)
    train.add_argument(
        "--lr-schedule",
        default="constant",
        choices=("constant", "inverse_scaling", "step_decay", "cosine"),
    )
    train.add_argument("--momentum", type=float, default=0.9)
    train.add_argument("--nesterov", action="store_true")
    train.add_argument(
        "--max-iter", type=int, default=100, help="L-BFGS iterations or sgd/adam epochs"
    )
    train.add_argument("--tol", type=float, default=1e-4)
    train.add_argument(
        "--early-stopping",
        action="store_true",
        help="hold out --validation-fraction of the rows and stop on their loss",
    )
    train.add_argument("--validation-fraction", type=float, default=0.1)
    train.add_argument("--class-weight", choices=("balanced",), default=None)
    train.add_argument("--seed", type=int, default=0)
    _add_cluster_options(train)

    evaluate = commands.add_parser("evaluate", help="loss, accuracy and per-class report")
    evaluate.add_argument("model", help="model path or URL")
    evaluate.add_argument("data", help="Zarr dataset path or URL")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_cluster_options(evaluate)

    predict = commands.add_parser("predict", help="write predicted labels to a Zarr array")
    predict.add_argument("model", help="model path or URL")
    predict.add_argument("data", help="Zarr dataset path or URL")
    predict.add_argument("--out", required=True, help="output Zarr path or URL")
    predict.add_argument(
        "--proba",
        action="store_true",
        help="also write class probabilities (array 'probabilities')",
    )
    predict.add_argument("--overwrite", action="store_true")
    _add_cluster_options(predict)

    demo = commands.add_parser(
        "demo", help="make a dataset, start a local cluster, train and report"
    )
    demo.add_argument("--n-samples", type=_positive_int, default=200_000)
    demo.add_argument("--n-features", type=_positive_int, default=32)
    demo.add_argument("--n-classes", type=_positive_int, default=10)
    demo.add_argument(
        "--workdir", help="where to write the dataset and model (default: a temp dir)"
    )
    _add_cluster_options(demo)
    return parser


# --------------------------------------------------------------------- commands
def _client(args: argparse.Namespace) -> Any:
    from .cluster import describe, get_client, make_security

    security = make_security(args.tls_ca_file, args.tls_cert, args.tls_key)
    client = get_client(args.scheduler, security=security)
    logger.info("dsoftmax: cluster %s", describe(client))
    return client


def _open(url: str, args: argparse.Namespace) -> Any:
    from .data import open_dataset

    return open_dataset(url, storage_options=args.storage_options)


def cmd_make_data(args: argparse.Namespace) -> int:
    from .data import make_classification

    client = _client(args)
    started = time.perf_counter()
    dataset = make_classification(
        args.out,
        args.n_samples,
        args.n_features,
        args.n_classes,
        chunk_rows=args.chunk_rows,
        seed=args.seed,
        dtype=args.dtype,
        client=client,
        codec=args.codec,
        storage_options=args.storage_options,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {dataset.n_samples} x {dataset.n_features} {dataset.dtype} with "
        f"{dataset.n_classes} classes to {args.out} in {time.perf_counter() - started:.1f} s"
    )
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from .data import convert_numpy

    if len(args.source) > 2:
        raise UsageError("convert takes DATA.npz or X.npy y.npy")
    source = args.source[0] if len(args.source) == 1 else tuple(args.source)
    dataset = convert_numpy(
        source,
        args.out,
        label_key=args.label_key,
        feature_key=args.feature_key,
        chunk_rows=args.chunk_rows,
        codec=args.codec,
        storage_options=args.storage_options,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {dataset.n_samples} x {dataset.n_features} with {dataset.n_classes} classes "
        f"to {args.out}"
    )
    return EXIT_OK


def _estimator_from(args: argparse.Namespace, client: Any) -> Any:
    from .estimator import SoftmaxRegression, _check_hyper_parameters

    model = SoftmaxRegression(
        l2=args.l2,
        fit_intercept=not args.no_intercept,
        solver=args.solver,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lr_schedule=args.lr_schedule,
        momentum=args.momentum,
        nesterov=args.nesterov,
        max_iter=args.max_iter,
        tol=args.tol,
        early_stopping=args.early_stopping,
        validation_fraction=args.validation_fraction,
        class_weight=args.class_weight,
        random_state=args.seed,
        client=client,
        verbose=1 + args.verbose,
    )
    try:
        _check_hyper_parameters(model)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    return model


def cmd_train(args: argparse.Namespace) -> int:
    model = _estimator_from(args, client=None)
    dataset = _open(args.data, args)
    model.client = _client(args)
    started = time.perf_counter()
    model.fit(dataset)
    elapsed = time.perf_counter() - started
    model.save(args.model, storage_options=args.storage_options)
    print(
        f"trained {args.solver} on {dataset.n_samples} rows in {elapsed:.2f} s: "
        f"{model.n_iter_} {'iterations' if args.solver == 'lbfgs' else 'epochs'}, "
        f"final loss {model.loss_curve_[-1]:.6f}; model saved to {args.model}"
    )
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .estimator import SoftmaxRegression
    from .evaluation import evaluate_model, format_report

    model = SoftmaxRegression.load(args.model, storage_options=args.storage_options)
    dataset = _open(args.data, args)
    _client(args)
    report = evaluate_model(model, dataset)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from .data import write_array
    from .estimator import SoftmaxRegression

    model = SoftmaxRegression.load(args.model, storage_options=args.storage_options)
    dataset = _open(args.data, args)
    _client(args)
    labels = model.predict(dataset)
    if labels.dtype.kind == "O":
        # Zarr stores fixed-width strings, not Python objects.
        labels = labels.astype(str)
    write_array(
        args.out,
        labels,
        name="predictions",
        storage_options=args.storage_options,
        overwrite=args.overwrite,
    )
    if args.proba:
        write_array(
            args.out,
            model.predict_proba(dataset),
            name="probabilities",
            storage_options=args.storage_options,
            overwrite=True,
        )
    print(f"wrote predictions for {dataset.n_samples} rows to {args.out}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .data import make_classification
    from .estimator import SoftmaxRegression
    from .evaluation import evaluate_model

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dsoftmax-demo-"))
    client = _client(args)
    from .cluster import describe

    print(f"cluster: {describe(client)}")
    started = time.perf_counter()
    train = make_classification(
        str(workdir / "train.zarr"),
        args.n_samples,
        args.n_features,
        args.n_classes,
        chunk_rows=max(1, args.n_samples // 8),
        seed=0,
        client=client,
        overwrite=True,
    )
    test = make_classification(
        str(workdir / "test.zarr"),
        max(1000, args.n_samples // 10),
        args.n_features,
        args.n_classes,
        chunk_rows=max(1000, args.n_samples // 40),
        seed=1,
        client=client,
        overwrite=True,
        teacher_seed=0,
    )
    print(
        f"data: {train.n_samples} x {train.n_features}, {train.n_classes} classes "
        f"({time.perf_counter() - started:.1f} s)"
    )
    for solver, options in (("lbfgs", {}), ("sgd", {"learning_rate": 0.1, "max_iter": 5})):
        model = SoftmaxRegression(
            solver=solver, l2=1e-4, random_state=0, client=client, batch_size=4096, **options
        )
        started = time.perf_counter()
        model.fit(train)
        elapsed = time.perf_counter() - started
        report = evaluate_model(model, test)
        print(
            f"{solver:>5}: {model.n_iter_} {'iterations' if solver == 'lbfgs' else 'epochs'} "
            f"in {elapsed:.2f} s, train loss {model.loss_curve_[-1]:.4f}, "
            f"test accuracy {report['accuracy']:.4f}"
        )
    model.save(str(workdir / "model"))
    print(f"model saved to {workdir / 'model'}")
    return EXIT_OK


COMMANDS = {
    "make-data": cmd_make_data,
    "convert": cmd_convert,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "demo": cmd_demo,
}


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except UsageError as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        print("dsoftmax: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError) as error:
        # Data, I/O, cluster and divergence failures: one clear line.
        print(f"dsoftmax: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:
        print(f"dsoftmax: error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
