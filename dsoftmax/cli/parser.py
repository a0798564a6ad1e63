"""The argument parser of the ``dsoftmax`` command and its argument types.

The types check each number against the range the library gives it (:mod:`dsoftmax.validation`),
and the choices and defaults come from :mod:`dsoftmax.defaults`: nothing here imports NumPy or
Dask, so ``dsoftmax --help`` starts at once.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import Any, NoReturn

from .. import __version__
from ..defaults import (
    CODECS,
    CONVERT_FORMATS,
    DEFAULT_CHUNK_ROWS,
    DEFAULT_CODEC,
    DEFAULT_GRID_MEMORY,
    DEFAULT_READ_RETRIES,
    DEFAULT_SCHEDULER_TIMEOUT,
    FEATURE_DTYPES,
    HOLD_CHOICES,
    SCHEDULES,
    SCORINGS,
    SOLVERS,
)
from ..validation import NUMBERS, ONE_OR_MORE, POSITIVE, ZERO_OR_MORE, Range
from .output import EXIT_USAGE, PROG, one_line

__all__ = ["build_parser", "given_options"]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, with a pointer to ``--help``; arguments
    that no option takes are refused by the subcommand's parser, with the options whose names
    are closest."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The parser of each subcommand, by name (set on the top-level parser).
        self.subcommands: dict[str, argparse.ArgumentParser] = {}

    def error(self, message: str) -> NoReturn:
        message = one_line(message) + _choice_suggestion(message)
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self.subcommands.get(getattr(parsed, "command", None) or "", self)
            hint = _suggestion(command, extras)
            command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed


def _suggestion(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """``" (did you mean --max-iter?)"`` for the first unknown option close to one of
    ``parser``'s options, or ""."""
    import difflib
    import re

    options = sorted(set(re.findall(r"(?<![\w-])--[a-z][\w-]*", parser.format_help())))
    for extra in extras:
        if extra.startswith("--"):
            close = difflib.get_close_matches(extra.split("=")[0], options, n=1, cutoff=0.7)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


def _choice_suggestion(message: str) -> str:
    """``" (did you mean 'train'?)"`` for argparse's "invalid choice" message whose value is
    close to one of the choices it lists (a command or an option's value), or ""."""
    import difflib
    import re

    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found is None:
        return ""
    choices = re.findall(r"'([^']*)'", found[2])
    close = difflib.get_close_matches(found[1], choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


#: Help texts shared by several options (argparse fills in %(default)s).
_DEFAULT = "default %(default)s"
_CHUNK_ROWS = "rows per Zarr chunk, the unit of work (default %(default)s)"
_CODEC = (
    "compression of the chunks (default %(default)s: X uncompressed unless zstd saves a fifth of "
    "its first rows' bytes; none reads fastest, zstd is smallest)"
)


# ------------------------------------------------------------------ argument types
def _number_type(valid: Range, *, integer: bool = False) -> Callable[[str], Any]:
    """An argparse type: an integer (or a finite number) in ``valid``, else a message that
    names the range."""
    kind = "an integer" if integer else "a number"
    parse = int if integer else float

    def parse_number(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {kind}, got {text!r}") from None
        if value not in valid:
            raise argparse.ArgumentTypeError(f"must be {kind} {valid}, got {text!r}")
        return value

    return parse_number


def _add_hyper_parameter(
    parser: argparse.ArgumentParser, name: str, default: Any, help: str, **options: Any
) -> None:
    """The option ``--name`` of the estimator's numeric hyper-parameter ``name``, its values
    checked against the range the estimator gives it."""
    number = NUMBERS[name]
    parser.add_argument(
        "--" + name.replace("_", "-"),
        type=_number_type(number.valid, integer=number.integer),
        default=default,
        help=help,
        **options,
    )


class _GridValues(argparse.Action):
    """Store the option's value and record, as ``<dest>_given``, that the command line gave it
    (a grid tells a given ``--l2`` from the default)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, self.dest + "_given", True)


def _add_grid_parameter(
    parser: argparse.ArgumentParser, name: str, default: float, help: str
) -> None:
    """The option ``--name`` of a numeric hyper-parameter that a cross-validated grid may span:
    one value, or several separated by commas (a list), each in the estimator's range."""
    parse_number = _number_type(NUMBERS[name].valid)

    def parse_values(text: str) -> float | list[float]:
        values = [parse_number(part.strip()) for part in text.split(",")]
        return values[0] if len(values) == 1 else values

    parser.add_argument(
        "--" + name.replace("_", "-"), type=parse_values, default=default, action=_GridValues,
        metavar="X[,X...]", help=help,
    )  # fmt: skip
    parser.set_defaults(**{name + "_given": False})


def _cv_choice(text: str) -> int | str:
    """``--cv``: a number of stratified folds (at least 2) or ``validation``."""
    if text == "validation":
        return text
    try:
        folds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number of folds (at least 2) or 'validation', got {text!r}"
        ) from None
    if folds < 2:
        raise argparse.ArgumentTypeError(f"must be at least 2 folds, got {text!r}")
    return folds


def _add_search_options(train: argparse.ArgumentParser) -> None:
    """The options of a cross-validated grid (``dsoftmax train --cv``)."""
    search = train.add_argument_group(
        "cross-validated grid",
        "Train every value of --l2 (and of --learning-rate) on every split at once, choose the "
        "best held-out score, refit on every row and print the table of scores.",
    )
    search.add_argument(
        "--cv",
        type=_cv_choice,
        metavar="K|validation",
        help="K stratified folds (seeded by --seed), or one split holding out "
        "--validation-fraction of the rows; default 5 when a grid is given",
    )
    search.add_argument(
        "--l2-grid",
        type=_positive_int,
        metavar="N",
        help="N values of λ log-spaced as scikit-learn's Cs=N (λ = 1/(2·C·n_samples), C from "
        "1e-4 to 1e4), instead of --l2",
    )
    search.add_argument(
        "--scoring",
        choices=SCORINGS,
        default="neg_log_loss",
        help="held-out score, higher is better (default %(default)s)",
    )
    search.add_argument(
        "--grid-memory",
        default=DEFAULT_GRID_MEMORY,
        metavar="SIZE",
        help="L-BFGS: this process's memory for the optimizers of the models training at once; "
        "a grid of large models trains as many as fit, the next starting when one stops "
        "(default %(default)s)",
    )
    search.add_argument(
        "--no-refit",
        action="store_true",
        help="save the mean of the splits' models at the chosen λ instead of refitting",
    )


_positive_int = _number_type(ONE_OR_MORE, integer=True)
_non_negative_int = _number_type(ZERO_OR_MORE, integer=True)
_at_least_two = _number_type(Range(2, math.inf), integer=True)
_DTYPES = FEATURE_DTYPES


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
        "default: this process when the data fits its memory, else a local cluster on "
        "127.0.0.1, closed when the command ends",
    )
    group.add_argument(
        "--scheduler-timeout",
        metavar="SECONDS",
        type=_number_type(POSITIVE),
        default=DEFAULT_SCHEDULER_TIMEOUT,
        help="seconds to wait for the --scheduler to answer; after 2 s a warning says what the "
        "address answers (default %(default)g)",
    )
    group.add_argument("--tls-ca-file", metavar="PEM", help="CA certificate for tls:// schedulers")
    group.add_argument("--tls-cert", metavar="PEM", help="client certificate for tls://")
    group.add_argument("--tls-key", metavar="PEM", help="client private key for tls://")


def _add_parquet_data_options(parser: argparse.ArgumentParser, what: str) -> None:
    """The columns of Parquet files read as a dataset, without a conversion."""
    group = parser.add_argument_group(
        "Parquet data",
        f"{what} may name Parquet files (a .parquet file, a glob pattern, or a local directory "
        "of them) instead of a Zarr dataset: they are read as they are, a block per row group",
    )
    group.add_argument(
        "--label-column", metavar="NAME", help="column of the labels (required for Parquet)"
    )
    group.add_argument(
        "--feature-columns",
        metavar="A,B,C",
        type=_column_names,
        help=(
            "feature columns, in order (default: every numeric column but the label; "
            "without one, the only list column of numbers)"
        ),
    )
    group.add_argument(
        "--embedding-column",
        metavar="NAME",
        help="a list column whose rows are the feature vectors",
    )
    group.add_argument(
        "--index-column",
        metavar="NAME",
        help="a list column of each row's zero-based feature indices (sparse rows)",
    )
    group.add_argument(
        "--value-column",
        metavar="NAME",
        help="a list column of the values of --index-column (default: all 1)",
    )
    group.add_argument(
        "--n-features",
        metavar="N",
        type=_positive_int,
        help="feature count of --index-column rows (default: the highest index + 1)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(
        prog=PROG,
        description="Data-parallel softmax regression with L2 regularization on Dask and Zarr.",
        epilog=(
            "Exit codes: 0 success, 1 data or runtime failure, 2 usage error. Ctrl-C exits with "
            "130."
        ),
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0,
        help="log one line per iteration/epoch (-vv: debug)",
    )  # fmt: skip
    parser.add_argument(
        "-V", "--version", action="version", version=f"{PROG} {__version__}",
        help="print the installed version and exit",
    )  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.subcommands = commands.choices

    make = commands.add_parser("make-data", help="write a synthetic teacher dataset to Zarr")
    make.add_argument("out", help="output Zarr path or URL")
    make.add_argument("--n-samples", type=_positive_int, default=100_000, help=_DEFAULT)
    make.add_argument("--n-features", type=_positive_int, default=32, help=_DEFAULT)
    make.add_argument("--n-classes", type=_at_least_two, default=10, help=_DEFAULT)
    make.add_argument(
        "--chunk-rows", type=_positive_int, default=DEFAULT_CHUNK_ROWS, help=_CHUNK_ROWS
    )
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
    make.add_argument("--dtype", choices=_DTYPES, default="float32", help=_DEFAULT)
    make.add_argument("--codec", choices=CODECS, default=DEFAULT_CODEC, help=_CODEC)
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
        "strings). Every format but .npz/.npy streams in blocks (files larger than memory "
        "convert). Sparse rows stay sparse: svmlight files with --layout sparse (or auto, the "
        "default, for files of few non-zeros), and Parquet list columns of feature indices "
        "(--index-column, --value-column). Nothing is unpickled.",
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
        help=(
            "feature columns, in order (default: every numeric column but the label; "
            "without one, the only list column of numbers)"
        ),
    )
    table.add_argument(
        "--embedding-column",
        metavar="NAME",
        help="Parquet only: a list column whose rows are the feature vectors",
    )
    table.add_argument(
        "--index-column",
        metavar="NAME",
        help="Parquet only: a list column of each row's zero-based feature indices (sparse rows)",
    )
    table.add_argument(
        "--value-column",
        metavar="NAME",
        help="Parquet only: a list column of the values of --index-column (default: all 1)",
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
        "--n-features",
        type=_positive_int,
        help="feature count of svmlight or --index-column sources (default: the highest index)",
    )
    svmlight.add_argument(
        "--zero-based",
        choices=("auto", "yes", "no"),
        help="whether feature indices start at 0 (default auto: guessed from the files)",
    )
    svmlight.add_argument(
        "--layout",
        choices=("auto", "dense", "sparse"),
        help="store X dense or as row blocks of CSR (default auto: sparse when its arrays take "
        "at most half the dense bytes)",
    )
    svmlight.add_argument(
        "--max-dense-bytes",
        type=_positive_int,
        metavar="BYTES",
        help="refuse files whose dense matrix is larger (default 4 GiB)",
    )
    convert.add_argument(
        "--dtype",
        choices=_DTYPES,
        help="feature dtype of Parquet, CSV and svmlight sources (default: float32 for svmlight "
        "and all-float32 Parquet features, else float64); float16 stores svmlight rows dense "
        "(sparse datasets hold float32 or float64)",
    )
    convert.add_argument(
        "--chunk-rows",
        type=_positive_int,
        help=f"rows per Zarr chunk, the unit of work (default {DEFAULT_CHUNK_ROWS}; for Parquet "
        "sources, the largest size from a quarter of that up to it that holds every row group "
        "but the last whole, when there is one)",
    )
    convert.add_argument("--codec", choices=CODECS, default=DEFAULT_CODEC, help=_CODEC)
    convert.add_argument("--overwrite", action="store_true", help="replace an existing store")
    _add_common_options(convert, computes=False)

    train = commands.add_parser("train", help="fit a model on a Zarr dataset (or Parquet files)")
    train.add_argument("data", help="Zarr dataset path or URL, or Parquet files")
    train.add_argument(
        "--model", required=True, help="where to save the fitted model (replaces a model there)"
    )
    train.add_argument(
        "--solver",
        choices=SOLVERS,
        default="lbfgs",
        help="lbfgs: full-batch, to the optimum; sgd/adam: minibatch epochs (default lbfgs)",
    )
    _add_grid_parameter(
        train, "l2", 1e-4, "λ in λ‖W‖² (default 1e-4); several, comma-separated, are a grid "
        "chosen by cross-validation (--cv)",
    )  # fmt: skip
    train.add_argument("--no-intercept", action="store_true", help="fit no intercept")
    train.add_argument(
        "--test",
        metavar="DATA",
        help="after saving the model, print its report on this held-out dataset (path or URL, or "
        "Parquet files: no need to convert data read once), as 'dsoftmax evaluate' does, on "
        "the cluster of the fit",
    )
    _add_hyper_parameter(train, "batch_size", 8192, "rows per minibatch (sgd, adam)")
    _add_grid_parameter(
        train, "learning_rate", 0.01, "sgd/adam (default 0.01); several, comma-separated, join the "
        "cross-validated grid",
    )  # fmt: skip
    train.add_argument(
        "--lr-schedule",
        default="constant",
        choices=SCHEDULES,
        help="sgd/adam; " + _DEFAULT,
    )
    _add_hyper_parameter(train, "momentum", 0.9, f"{NUMBERS['momentum'].valid} (sgd)")
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum (sgd)")
    _add_hyper_parameter(train, "max_iter", 100, "L-BFGS iterations or sgd/adam epochs")
    _add_hyper_parameter(
        train,
        "tol",
        1e-4,
        "L-BFGS: gradient tolerance; sgd/adam: stop when the loss has not fallen by this much "
        "(absolute) for 5 epochs (default 1e-4)",
    )
    train.add_argument(
        "--early-stopping",
        action="store_true",
        help="hold out --validation-fraction of the rows and stop on their loss",
    )
    _add_hyper_parameter(
        train,
        "validation_fraction",
        0.1,
        "share of rows held out by --early-stopping (default 0.1)",
    )
    train.add_argument(
        "--class-weight",
        choices=("balanced",),
        default=None,
        help="balanced: weigh classes inversely to their frequency (default: equal)",
    )
    train.add_argument(
        "--hold-data",
        choices=HOLD_CHOICES,
        default="auto",
        help="keep the rows in worker memory, or stream them from the store on every pass "
        "(bounded memory); auto: memory when the data takes at most half of the workers' "
        "memory limits (default)",
    )
    train.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seed of the minibatch order"
    )
    _add_hyper_parameter(
        train,
        "shuffle_window",
        None,
        "sgd/adam: shuffle the rows window by window of W consecutive rows, so that a batch "
        "reads a few chunks (streamed data needs it; e.g. 262144); default: all rows together",
        metavar="W",
    )
    train.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="write checkpoints here (a path or URL); with --resume, continue from the newest",
    )
    _add_hyper_parameter(
        train,
        "checkpoint_every",
        None,
        "steps (sgd/adam) or iterations (lbfgs) between checkpoints "
        "(default: every epoch, or every 10 iterations)",
        metavar="N",
    )
    _add_hyper_parameter(
        train, "keep_checkpoints", 3, "newest checkpoints kept (default 3)", metavar="K"
    )
    resume = train.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest valid checkpoint in --checkpoint-dir (damaged ones are "
        "skipped with a warning)",
    )
    resume.add_argument(
        "--resume-from",
        type=_non_negative_int,
        metavar="STEP",
        help="continue from the checkpoint of step STEP in --checkpoint-dir",
    )
    _add_search_options(train)
    _add_parquet_data_options(train, "DATA and --test")
    _add_common_options(train, computes=True, reads=True)

    evaluate = commands.add_parser("evaluate", help="loss, accuracy and per-class report")
    evaluate.add_argument("model", help="model path or URL")
    evaluate.add_argument("data", help="Zarr dataset path or URL, or Parquet files")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_parquet_data_options(evaluate, "DATA")
    _add_common_options(evaluate, computes=True, reads=True)

    predict = commands.add_parser("predict", help="write predicted labels to a Zarr array")
    predict.add_argument("model", help="model path or URL")
    predict.add_argument("data", help="Zarr dataset path or URL, or Parquet files")
    predict.add_argument(
        "--out", required=True, help="output Zarr group; the labels go to its array 'predictions'"
    )
    predict.add_argument(
        "--proba",
        action="store_true",
        help="also write class probabilities (array 'probabilities')",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace existing predictions")
    _add_parquet_data_options(predict, "DATA")
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
    _add_parquet_data_options(plot, "--data")
    _add_common_options(plot, computes=True, reads=True)
    return parser


def given_options(argv: list[str]) -> frozenset[str]:
    """The destinations (``batch_size``, ``no_refit``, …) of the options that ``argv`` gives,
    abbreviated or not; an option left at its default is not among them.

    ``argv`` is parsed again by a parser whose defaults are all suppressed, so that only what the
    command line sets reaches the namespace. ``argv`` must be valid: parse it first.
    """
    parser = build_parser()
    for each in (parser, *parser.subcommands.values()):
        # argparse has no public accessor for the actions and the parser-level defaults.
        for action in each._actions:
            action.default = argparse.SUPPRESS
        each._defaults.clear()
    return frozenset(vars(parser.parse_args(argv)))
