"""The ``dsoftmax`` command: a thin layer over the Python API.

Exit codes: 0 success, 1 runtime or data failure, 2 usage error (bad arguments or
hyper-parameters). Errors and warnings are printed as one line each on stderr
(``dsoftmax: error: ...``), without a traceback. Progress bars (training, evaluation) show
on stderr only when it is a terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["build_parser", "main"]

logger = logging.getLogger("dsoftmax")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PROG = "dsoftmax"
#: The formats of ``dsoftmax convert`` (``dsoftmax.convert.FORMATS``, without importing it).
CONVERT_FORMATS = ("npz", "npy", "parquet", "csv", "svmlight")
#: ``dsoftmax.data.DEFAULT_READ_RETRIES``, without importing it.
DEFAULT_READ_RETRIES = 3


class UsageError(Exception):
    """A bad argument or hyper-parameter: exit code 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, with a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {_one_line(message)} (see '{self.prog} --help')\n")


#: Help texts shared by several options (argparse fills in %(default)s).
_DEFAULT = "default %(default)s"
_CHUNK_ROWS = "rows per Zarr chunk, the unit of work (default %(default)s)"
_CODEC = "compression of the chunks (default %(default)s; none reads fastest, zstd is smallest)"


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


# ------------------------------------------------------------------ argument types
def _number_type(
    parse: Callable[[str], float],
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = True,
) -> Callable[[str], Any]:
    """An argparse type: a finite number in the interval, else a message with the interval."""
    kind = "an integer" if parse is int else "a number"
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse_number(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if too_low or too_high or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {kind} in {interval}, got {text!r}")
        return value

    return parse_number


_positive_int = _number_type(int, low=1)
_non_negative_int = _number_type(int, low=0)
_at_least_two = _number_type(int, low=2)
_non_negative_float = _number_type(float, low=0.0)
_positive_float = _number_type(float, low=0.0, low_open=True)
_momentum = _number_type(float, low=0.0, high=1.0)
_open_fraction = _number_type(float, low=0.0, high=1.0, low_open=True)


def _column_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"must be column names separated by commas, got {text!r}")
    return names


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


# ----------------------------------------------------------------------- parser
def _add_common_options(
    parser: argparse.ArgumentParser, *, computes: bool, reads: bool = False
) -> None:
    # SUPPRESS: without a -v after the subcommand, the count before it stands.
    parser.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS,
        help="log one line per iteration/epoch (-vv: debug)",
    )  # fmt: skip
    group = parser.add_argument_group("storage and cluster" if computes else "storage")
    group.add_argument(
        "--storage-options",
        metavar="JSON",
        type=_json_object,
        help='fsspec options for s3://… paths, e.g. \'{"client_kwargs": {"endpoint_url": "…"}}\'',
    )
    if reads:
        group.add_argument(
            "--read-retries",
            metavar="N",
            type=_non_negative_int,
            default=DEFAULT_READ_RETRIES,
            help="retries of a chunk read that fails with a transient I/O error, with doubling "
            "pauses (default %(default)s)",
        )
    if not computes:
        return
    group.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="Dask scheduler address (tcp://host:8786 or tls://host:8786); "
        "default: a local cluster on 127.0.0.1, closed when the command ends",
    )
    group.add_argument("--tls-ca-file", metavar="PEM", help="CA certificate for tls:// schedulers")
    group.add_argument("--tls-cert", metavar="PEM", help="client certificate for tls://")
    group.add_argument("--tls-key", metavar="PEM", help="client private key for tls://")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog=PROG,
        description="Data-parallel softmax regression with L2 regularization on Dask and Zarr.",
        epilog="Exit codes: 0 success, 1 data or runtime failure, 2 usage error.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log one line per iteration/epoch (-vv: debug)",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    make = commands.add_parser("make-data", help="write a synthetic teacher dataset to Zarr")
    make.add_argument("out", help="output Zarr path or URL")
    make.add_argument("--n-samples", type=_positive_int, default=100_000, help=_DEFAULT)
    make.add_argument("--n-features", type=_positive_int, default=32, help=_DEFAULT)
    make.add_argument("--n-classes", type=_at_least_two, default=10, help=_DEFAULT)
    make.add_argument("--chunk-rows", type=_positive_int, default=65536, help=_CHUNK_ROWS)
    make.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of the data (default 0)"
    )
    make.add_argument(
        "--teacher-seed",
        type=_non_negative_int,
        metavar="SEED",
        help="seed of the labelling teacher alone (default: --seed); a test set for data made "
        "with --seed S: another --seed and --teacher-seed S",
    )
    make.add_argument("--dtype", choices=("float32", "float64"), default="float32", help=_DEFAULT)
    make.add_argument("--codec", choices=("zstd", "lz4", "none"), default="zstd", help=_CODEC)
    make.add_argument("--overwrite", action="store_true", help="replace an existing store")
    _add_common_options(make, computes=True)

    convert = commands.add_parser(
        "convert",
        help="convert .npz/.npy, Parquet, CSV or svmlight files to a Zarr dataset",
        description="Convert files into a Zarr dataset. The format comes from the names: "
        "DATA.npz (arrays --feature-key and --label-key); X.npy y.npy; .parquet files or a "
        "directory of them; .csv files (also .csv.gz, .bz2, .xz, .zst); svmlight/libsvm files "
        "(.svm, .svmlight, .libsvm, .txt, also .gz, .bz2). Glob patterns work for Parquet, CSV "
        "and svmlight; --format names the format instead. Labels may be of any kind (ints, "
        "strings). Parquet and CSV stream in blocks (files larger than memory convert); "
        "svmlight is loaded into memory. Nothing is unpickled.",
    )
    convert.add_argument(
        "source",
        nargs="+",
        metavar="SOURCE",
        help="DATA.npz, X.npy y.npy, or Parquet/CSV/svmlight files, globs or a Parquet directory",
    )
    convert.add_argument("--out", required=True, help="output Zarr path or URL")
    convert.add_argument(
        "--format", choices=CONVERT_FORMATS, help="the sources' format (default: from the names)"
    )
    table = convert.add_argument_group("Parquet and CSV")
    table.add_argument("--label-column", metavar="NAME", help="column of the labels (required)")
    table.add_argument(
        "--feature-columns",
        metavar="A,B,C",
        type=_column_names,
        help="feature columns, in order (default: every numeric column but the label)",
    )
    table.add_argument(
        "--embedding-column",
        metavar="NAME",
        help="Parquet only: a list column whose rows are the feature vectors",
    )
    table.add_argument(
        "--source-storage-options",
        metavar="JSON",
        type=_json_object,
        help="fsspec options to read s3://… sources",
    )
    arrays = convert.add_argument_group(".npz")
    arrays.add_argument("--feature-key", metavar="NAME", help="array of the features (default X)")
    arrays.add_argument("--label-key", metavar="NAME", help="array of the labels (default y)")
    svmlight = convert.add_argument_group("svmlight")
    svmlight.add_argument(
        "--n-features", type=_positive_int, help="feature count (default: the highest index)"
    )
    svmlight.add_argument(
        "--zero-based",
        choices=("auto", "yes", "no"),
        help="whether feature indices start at 0 (default auto: guessed from the files)",
    )
    svmlight.add_argument(
        "--max-dense-bytes",
        type=_positive_int,
        metavar="BYTES",
        help="refuse files whose dense matrix is larger (default 4 GiB)",
    )
    convert.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        help="feature dtype of Parquet, CSV and svmlight sources (default: float32 for svmlight "
        "and all-float32 Parquet features, else float64)",
    )
    convert.add_argument("--chunk-rows", type=_positive_int, default=65536, help=_CHUNK_ROWS)
    convert.add_argument("--codec", choices=("zstd", "lz4", "none"), default="zstd", help=_CODEC)
    convert.add_argument("--overwrite", action="store_true", help="replace an existing store")
    _add_common_options(convert, computes=False)

    train = commands.add_parser("train", help="fit a model on a Zarr dataset")
    train.add_argument("data", help="Zarr dataset path or URL")
    train.add_argument(
        "--model", required=True, help="where to save the fitted model (replaces a model there)"
    )
    train.add_argument(
        "--solver",
        choices=("lbfgs", "sgd", "adam"),
        default="lbfgs",
        help="lbfgs: full-batch, to the optimum; sgd/adam: minibatch epochs (default lbfgs)",
    )
    train.add_argument(
        "--l2", type=_non_negative_float, default=1e-4, help="λ in λ‖W‖² (default 1e-4)"
    )
    train.add_argument("--no-intercept", action="store_true", help="fit no intercept")
    train.add_argument(
        "--batch-size", type=_positive_int, default=8192, help="rows per minibatch (sgd, adam)"
    )
    train.add_argument(
        "--learning-rate", type=_positive_float, default=0.01, help="sgd/adam; " + _DEFAULT
    )
    train.add_argument(
        "--lr-schedule",
        default="constant",
        choices=("constant", "inverse_scaling", "step_decay", "cosine"),
        help="sgd/adam; " + _DEFAULT,
    )
    train.add_argument("--momentum", type=_momentum, default=0.9, help="in [0, 1) (sgd)")
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    train.add_argument(
        "--max-iter", type=_positive_int, default=100, help="L-BFGS iterations or sgd/adam epochs"
    )
    train.add_argument(
        "--tol",
        type=_non_negative_float,
        default=1e-4,
        help="L-BFGS: gradient tolerance; sgd/adam: stop when the loss has not fallen by this"
        " much (absolute) for 5 epochs (default 1e-4)",
    )
    train.add_argument(
        "--early-stopping",
        action="store_true",
        help="hold out --validation-fraction of the rows and stop on their loss",
    )
    train.add_argument(
        "--validation-fraction",
        type=_open_fraction,
        default=0.1,
        help="share of rows held out by --early-stopping (default 0.1)",
    )
    train.add_argument(
        "--class-weight",
        choices=("balanced",),
        default=None,
        help="balanced: weigh classes inversely to their frequency (default: equal)",
    )
    train.add_argument(
        "--hold-data",
        choices=("auto", "memory", "stream"),
        default="auto",
        help="keep the rows in worker memory, or stream them from the store on every pass "
        "(bounded memory); auto: memory when the data takes at most half of the workers' "
        "memory limits (default)",
    )
    train.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of the minibatch order"
    )
    train.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="write checkpoints here (a path or URL); with --resume, continue from the newest",
    )
    train.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="N",
        help="steps (sgd/adam) or iterations (lbfgs) between checkpoints "
        "(default: every epoch, or every 10 iterations)",
    )
    train.add_argument(
        "--keep-checkpoints",
        type=_positive_int,
        default=3,
        metavar="K",
        help="newest checkpoints kept (default 3)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --checkpoint-dir",
    )
    _add_common_options(train, computes=True, reads=True)

    evaluate = commands.add_parser("evaluate", help="loss, accuracy and per-class report")
    evaluate.add_argument("model", help="model path or URL")
    evaluate.add_argument("data", help="Zarr dataset path or URL")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_common_options(evaluate, computes=True, reads=True)

    predict = commands.add_parser("predict", help="write predicted labels to a Zarr array")
    predict.add_argument("model", help="model path or URL")
    predict.add_argument("data", help="Zarr dataset path or URL")
    predict.add_argument(
        "--out", required=True, help="output Zarr group; the labels go to its array 'predictions'"
    )
    predict.add_argument(
        "--proba",
        action="store_true",
        help="also write class probabilities (array 'probabilities')",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace existing predictions")
    _add_common_options(predict, computes=True, reads=True)

    demo = commands.add_parser(
        "demo", help="make a dataset, start a local cluster, train and report"
    )
    demo.add_argument("--n-samples", type=_positive_int, default=200_000, help=_DEFAULT)
    demo.add_argument("--n-features", type=_positive_int, default=32, help=_DEFAULT)
    demo.add_argument("--n-classes", type=_at_least_two, default=10, help=_DEFAULT)
    demo.add_argument(
        "--workdir", help="where to write the dataset and model (default: a temp dir)"
    )
    _add_common_options(demo, computes=True)
    plot = commands.add_parser(
        "plot",
        help="draw a model's training curves (and a confusion matrix) to a PNG",
        description="Draw the training loss per iteration or epoch, the validation loss and "
        "accuracy when early stopping recorded them, and with --data the confusion matrix of "
        "the model on that dataset. Needs matplotlib: pip install 'dsoftmax[plot]'.",
    )
    plot.add_argument("model", help="model path or URL")
    plot.add_argument("--out", required=True, help="PNG file to write (its folder must exist)")
    plot.add_argument(
        "--data", metavar="DATASET", help="evaluate the model on this dataset for the matrix"
    )
    _add_common_options(plot, computes=True, reads=True)
    return parser


# ---------------------------------------------------------------------- cluster
class _Cluster:
    """The Dask client of one command: made on first use, closed when the command ends."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            from .cluster import describe, get_client, make_security

            given = [self.args.tls_ca_file, self.args.tls_cert, self.args.tls_key]
            if any(given) and not all(given):
                raise UsageError("--tls-ca-file, --tls-cert and --tls-key go together")
            security = make_security(*given)
            _quiet_dask_logging(self.args.verbose)
            self._client = get_client(self.args.scheduler, security=security)
            logger.info("dsoftmax: cluster %s", describe(self._client))
        return self._client

    def close(self) -> None:
        """Close what this command opened; a local cluster goes before the interpreter exits,
        where its shutdown would race the interpreter's own and print errors."""
        if self._client is None:
            return
        from .cluster import close_local_cluster

        if self.args.scheduler is None:
            close_local_cluster()
        else:
            self._client.close()
        self._client = None


# --------------------------------------------------------------------- commands
def _open(url: str, args: argparse.Namespace) -> Any:
    from .data import open_dataset

    return open_dataset(
        url, storage_options=args.storage_options, read_retries=args.read_retries
    )


def _load_model(url: str, args: argparse.Namespace) -> Any:
    from .estimator import SoftmaxRegression

    return SoftmaxRegression.load(url, storage_options=args.storage_options)


def cmd_make_data(args: argparse.Namespace, cluster: _Cluster) -> int:
    from .data import make_classification

    started = time.perf_counter()
    dataset = make_classification(
        args.out,
        args.n_samples,
        args.n_features,
        args.n_classes,
        chunk_rows=args.chunk_rows,
        seed=args.seed,
        teacher_seed=args.teacher_seed,
        dtype=args.dtype,
        client=cluster.client(),
        codec=args.codec,
        storage_options=args.storage_options,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {dataset.n_samples} x {dataset.n_features} {dataset.dtype} with "
        f"{dataset.n_classes} classes to {args.out} in {time.perf_counter() - started:.1f} s"
    )
    return EXIT_OK


#: Options of ``convert`` that only some formats take, with those formats.
_CONVERT_OPTION_FORMATS = {
    "label_column": ("parquet", "csv"),
    "feature_columns": ("parquet", "csv"),
    "embedding_column": ("parquet",),
    "source_storage_options": ("parquet", "csv"),
    "feature_key": ("npz",),
    "label_key": ("npz",),
    "n_features": ("svmlight",),
    "zero_based": ("svmlight",),
    "max_dense_bytes": ("svmlight",),
    "dtype": ("parquet", "csv", "svmlight"),
}


def _convert_format(args: argparse.Namespace) -> str:
    """The sources' format, after refusing options that it does not take."""
    from .convert import detect_format

    if args.format is None:
        try:
            kind = detect_format(args.source)
        except ValueError as error:
            raise UsageError(str(error)) from None
    else:
        kind = args.format
        expected = {"npz": 1, "npy": 2}.get(kind)
        if expected is not None and len(args.source) != expected:
            raise UsageError(
                f"--format {kind} takes {'DATA.npz' if kind == 'npz' else 'X.npy y.npy'}, got "
                f"{len(args.source)} path(s)"
            )
    for option, formats in _CONVERT_OPTION_FORMATS.items():
        if getattr(args, option) is not None and kind not in formats:
            flag = "--" + option.replace("_", "-")
            only = ", ".join(formats)
            raise UsageError(f"{flag} does not apply to {kind} sources (only to {only})")
    if kind in ("parquet", "csv") and args.label_column is None:
        raise UsageError(f"{kind} sources need --label-column NAME, the column of the labels")
    return kind


def _convert_source(args: argparse.Namespace, kind: str) -> Any:
    from . import convert, data

    output = {
        "chunk_rows": args.chunk_rows,
        "codec": args.codec,
        "storage_options": args.storage_options,
        "overwrite": args.overwrite,
    }
    if kind in ("npz", "npy"):
        return data.convert_numpy(
            args.source[0] if kind == "npz" else tuple(args.source),
            args.out,
            label_key=args.label_key or "y",
            feature_key=args.feature_key or "X",
            **output,
        )
    if kind == "svmlight":
        return convert.convert_svmlight(
            args.source,
            args.out,
            n_features=args.n_features,
            zero_based={None: "auto", "auto": "auto", "yes": True, "no": False}[args.zero_based],
            max_dense_bytes=args.max_dense_bytes or convert.DEFAULT_MAX_DENSE_BYTES,
            dtype=args.dtype or "float32",
            **output,
        )
    columns = {
        "label_column": args.label_column,
        "feature_columns": args.feature_columns,
        "source_storage_options": args.source_storage_options,
    }
    if kind == "csv":
        return convert.convert_csv(
            args.source, args.out, dtype=args.dtype or "float64", **columns, **output
        )
    return convert.convert_parquet(
        args.source,
        args.out,
        embedding_column=args.embedding_column,
        dtype=args.dtype,
        **columns,
        **output,
    )


def cmd_convert(args: argparse.Namespace, cluster: _Cluster) -> int:
    dataset = _convert_source(args, _convert_format(args))
    print(
        f"wrote {dataset.n_samples} x {dataset.n_features} with {dataset.n_classes} classes "
        f"to {args.out}"
    )
    return EXIT_OK


def _estimator_from(args: argparse.Namespace) -> Any:
    from .estimator import SoftmaxRegression, _check_hyper_parameters

    if args.nesterov and args.momentum == 0:
        raise UsageError("--nesterov needs --momentum > 0")
    if args.resume and not args.checkpoint_dir:
        raise UsageError("--resume needs --checkpoint-dir")
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
        hold_data=args.hold_data,
        random_state=args.seed,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        storage_options=args.storage_options,
        # >= 1: a progress bar, which tqdm itself hides when stderr is not a terminal.
        verbose=1 + args.verbose,
    )
    try:
        _check_hyper_parameters(model)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    return model


def _check_model_target(url: str, storage_options: dict | None) -> None:
    """Refuse, before any work, to save a model over something that is not a model."""
    import fsspec

    from .modelfile import MANIFEST

    fs, root = fsspec.url_to_fs(url, **(storage_options or {}))
    if fs.exists(root) and not fs.exists(f"{root.rstrip('/')}/{MANIFEST}"):
        raise ValueError(
            f"--model {url!r} exists and is not a dsoftmax model (no {MANIFEST}); refusing to "
            "replace it. Pass a new path, or an existing model's path to replace that model."
        )


def _fit(model: Any, data: Any, resume: bool = False) -> str | None:
    """Fit; return the ConvergenceWarning's message instead of letting it print, or None."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            model.fit(data, resume=resume)
        except (ValueError, TypeError, FloatingPointError):
            raise  # bad data or settings, divergence: their messages say what to do
        except Exception as error:
            # The scheduler, a worker or the connection went away mid-fit.
            cause = _one_line(str(error)).split(";")[0].rstrip(". ") or type(error).__name__
            advice = (
                "Restart the cluster and rerun the same command with --resume to continue from "
                f"the last checkpoint in {model.checkpoint_dir}."
                if model.checkpoint_dir
                else "Rerun the command; with --checkpoint-dir an interrupted fit can be resumed."
            )
            raise RuntimeError(f"training stopped: {cause}. {advice}") from error
    message = None
    for warning in caught:
        if issubclass(warning.category, ConvergenceWarning):
            message = str(warning.message)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return message


def _iterations(solver: str, n_iter: int) -> str:
    unit = "iteration" if solver == "lbfgs" else "epoch"
    return f"{n_iter} {unit}{'' if n_iter == 1 else 's'}"


def cmd_train(args: argparse.Namespace, cluster: _Cluster) -> int:
    model = _estimator_from(args)
    dataset = _open(args.data, args)
    _check_model_target(args.model, args.storage_options)
    model.client = cluster.client()
    started = time.perf_counter()
    not_converged = _fit(model, dataset, resume=args.resume)
    elapsed = time.perf_counter() - started
    if not_converged:
        print(f"{PROG}: warning: {_one_line(not_converged)}", file=sys.stderr)
    # Saved only after a successful fit: a failure leaves an existing model as it was.
    model.save(args.model, storage_options=args.storage_options)
    stopped = ", stopped at max_iter" if not_converged else ""
    print(
        f"trained {args.solver} on {dataset.n_samples} rows in {elapsed:.2f} s: "
        f"{_iterations(args.solver, model.n_iter_)}{stopped}, final loss "
        f"{model.loss_curve_[-1]:.6f}; model saved to {args.model}"
    )
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace, cluster: _Cluster) -> int:
    from .evaluation import evaluate_model, format_report

    model = _load_model(args.model, args)
    dataset = _open(args.data, args)
    report = evaluate_model(model, dataset, client=cluster.client(), progress=True)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return EXIT_OK


def _storable_labels(labels: Any) -> Any:
    """String labels as variable-length UTF-8 strings, a data type the Zarr v3 specification
    defines (fixed-width NumPy strings map to one that Zarr warns is unstable)."""
    import numpy as np

    string_dtype = getattr(np.dtypes, "StringDType", None)  # NumPy >= 2
    if labels.dtype.kind not in "OUS" or string_dtype is None:
        return labels
    return labels.map_blocks(_variable_length_strings, dtype=string_dtype())


def _variable_length_strings(labels: Any) -> Any:
    import numpy as np

    return labels.astype(str).astype(np.dtypes.StringDType())


def cmd_predict(args: argparse.Namespace, cluster: _Cluster) -> int:
    from .data import check_values, write_array

    model = _load_model(args.model, args)
    dataset = _open(args.data, args)
    client = cluster.client()
    if model.n_features_in_ != dataset.n_features:
        raise ValueError(
            f"the model expects {model.n_features_in_} features; {args.data!r} has "
            f"{dataset.n_features}. Predict on data with the features the model was trained on."
        )
    # Non-finite features would give silently meaningless labels: check first (one more read).
    check_values(dataset, client=client)
    write_array(
        args.out,
        _storable_labels(model.predict(dataset)),
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
            # The predictions beside it were just written: older probabilities are stale.
            overwrite=True,
        )
    written = "predictions and probabilities" if args.proba else "predictions"
    print(f"wrote {written} for {dataset.n_samples} rows to {args.out}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, cluster: _Cluster) -> int:
    from .cluster import describe
    from .data import make_classification
    from .estimator import SoftmaxRegression
    from .evaluation import evaluate_model

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dsoftmax-demo-"))
    client = cluster.client()
    print(f"cluster: {describe(client)}")
    started = time.perf_counter()
    common = {"client": client, "overwrite": True}
    train = make_classification(
        str(workdir / "train.zarr"),
        args.n_samples,
        args.n_features,
        args.n_classes,
        chunk_rows=max(1, args.n_samples // 8),
        seed=0,
        **common,
    )
    test = make_classification(
        str(workdir / "test.zarr"),
        max(1000, args.n_samples // 10),
        args.n_features,
        args.n_classes,
        chunk_rows=max(1000, args.n_samples // 40),
        seed=1,
        teacher_seed=0,
        **common,
    )
    print(
        f"data: {train.n_samples} x {train.n_features}, {train.n_classes} classes "
        f"({time.perf_counter() - started:.1f} s)"
    )
    # L-BFGS reaches the optimum; five epochs of momentum SGD, the step annealed to 0 over the
    # run, come within ~0.2% of its loss (measured on this demo's data).
    sgd = {"learning_rate": 0.3, "lr_schedule": "cosine", "batch_size": 8192, "max_iter": 5}
    solvers: dict[str, dict[str, Any]] = {"lbfgs": {}, "sgd": {"momentum": 0.9, **sgd}}
    for solver, options in solvers.items():
        model = SoftmaxRegression(solver=solver, l2=1e-4, random_state=0, client=client, **options)
        started = time.perf_counter()
        not_converged = _fit(model, train)
        elapsed = time.perf_counter() - started
        report = evaluate_model(model, test, client=client)
        stopped = f" (stopped after max_iter={model.max_iter})" if not_converged else ""
        print(
            f"{solver:>5}: {_iterations(solver, model.n_iter_)}{stopped} in {elapsed:.2f} s, "
            f"train loss {model.loss_curve_[-1]:.4f}, test accuracy {report['accuracy']:.4f}"
        )
    model.save(str(workdir / "model"))
    print(f"model saved to {workdir / 'model'}")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace, cluster: _Cluster) -> int:
    from .plotting import _check_out, plot_training

    _check_out(args.out)  # before an evaluation that may take long
    model = _load_model(args.model, args)
    report = None
    if args.data:
        from .evaluation import evaluate_model

        dataset = _open(args.data, args)
        report = evaluate_model(model, dataset, client=cluster.client(), progress=True)
    plot_training(model, confusion=report, out=args.out)
    matrix = f", confusion matrix on {args.data}" if args.data else ""
    print(f"wrote training curves{matrix} to {args.out}")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace, _Cluster], int]] = {
    "make-data": cmd_make_data,
    "convert": cmd_convert,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "demo": cmd_demo,
    "plot": cmd_plot,
}


# ------------------------------------------------------------------------- main
def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def _quiet_dask_logging(verbose: int) -> None:
    """Dask's client logs multi-line tracebacks while it retries a lost scheduler; the CLI reports
    the outcome as one line instead (-vv shows them). Called after distributed is imported, as
    its import sets the levels of its loggers."""
    import distributed  # noqa: F401 - its import configures the loggers we then quiet

    level = logging.DEBUG if verbose >= 2 else logging.CRITICAL
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(level)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Warnings as one line, without the source line Python shows by default."""
    print(f"{PROG}: warning: {category.__name__}: {_one_line(str(message))}", file=sys.stderr)


@contextlib.contextmanager
def _command_output(verbose: int) -> Iterator[None]:
    """One-line warnings, and log lines that do not break a progress bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with warnings.catch_warnings(), logging_redirect_tqdm(loggers=[logger]):
        warnings.showwarning = _show_warning
        yield


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argument errors exit with 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    cluster = _Cluster(args)
    try:
        with _command_output(args.verbose):
            return COMMANDS[args.command](args, cluster)
    except UsageError as error:
        print(
            f"{PROG}: error: {_one_line(str(error))} (see '{PROG} {args.command} --help')",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError) as error:
        # Data, I/O, cluster and divergence failures: one clear line.
        print(f"{PROG}: error: {_one_line(str(error)) or type(error).__name__}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:
        print(f"{PROG}: error: {type(error).__name__}: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        try:
            cluster.close()
        except Exception as error:  # the work is done; a failed shutdown must not hide that
            print(f"{PROG}: warning: closing the Dask client failed: {error!r}", file=sys.stderr)
