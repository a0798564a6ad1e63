"""The options a command line gives that the command does not use, each named in a one-line
warning: ``--batch-size`` with ``--solver lbfgs``, ``--scoring`` without a grid, TLS files
without ``--scheduler``. Only options the command line gives are named, never defaults."""

from __future__ import annotations

import argparse

from .output import warn

__all__ = ["ignored_options", "warn_ignored_options"]

#: Options of sgd and adam alone, and what each sets.
_MINIBATCH_OPTIONS = {
    "batch_size": "it sets the minibatch size of sgd and adam",
    "learning_rate": "it sets the step size of sgd and adam",
    "lr_schedule": "it sets the step-size schedule of sgd and adam",
    "shuffle_window": "it sets the rows that sgd and adam shuffle together",
    "early_stopping": "it stops sgd and adam on the loss of held-out rows",
}
#: Options of sgd alone, and what each sets.
_SGD_OPTIONS = {
    "momentum": "it sets the momentum of sgd",
    "nesterov": "it turns on Nesterov momentum in sgd",
}
#: Options of a cross-validated grid.
_GRID_OPTIONS = ("no_refit", "scoring", "grid_memory")
_NO_GRID = "without a grid (--cv, several --l2 or --learning-rate values, or --l2-grid)"
_TLS_OPTIONS = ("tls_ca_file", "tls_cert", "tls_key")
#: Options that name the columns of Parquet data.
_PARQUET_OPTIONS = (
    "label_column", "feature_columns", "embedding_column", "index_column", "value_column",
    "n_features",
)  # fmt: skip
#: The dataset arguments of each command that takes ``_PARQUET_OPTIONS``.
_DATA_ARGUMENTS = {
    "train": ("data", "test"), "evaluate": ("data",), "predict": ("data",), "plot": ("data",)
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _train_reasons(args: argparse.Namespace, grid: bool) -> dict[str, str]:
    """Why ``dsoftmax train`` does not use each of its options that it does not use, by
    destination, given its solver and whether it trains a grid."""
    reasons: dict[str, str] = {}
    solver = f"by --solver {args.solver}"
    if args.solver == "lbfgs":
        reasons |= {dest: f"{solver} ({why})" for dest, why in _MINIBATCH_OPTIONS.items()}
    if args.solver != "sgd":
        reasons |= {dest: f"{solver} ({why})" for dest, why in _SGD_OPTIONS.items()}
    stops_early = args.early_stopping and args.solver != "lbfgs" and not grid
    if not stops_early and not (grid and args.cv == "validation"):
        reasons["validation_fraction"] = (
            "here (it sets the share of rows held out by --early-stopping of sgd and adam, or "
            "by --cv validation)"
        )
    if not grid:
        reasons |= dict.fromkeys(_GRID_OPTIONS, _NO_GRID)
    elif args.solver != "lbfgs":
        reasons["grid_memory"] = f"{solver} (it bounds the memory of a grid's L-BFGS models)"
    if args.checkpoint_dir is None:
        reasons |= dict.fromkeys(("checkpoint_every", "keep_checkpoints"),
                                 "without --checkpoint-dir")  # fmt: skip
    if args.solver == "lbfgs" and not grid:
        reasons["seed"] = (
            "by a single --solver lbfgs fit (it seeds the minibatch order and a grid's splits)"
        )
    return reasons


def ignored_options(args: argparse.Namespace, *, grid: bool = False) -> list[str]:
    """One sentence for each option that the command line gives and the command ignores.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line, with ``given_options``: the destinations of the options the
        command line gives (none when it is absent).
    grid : bool, default False
        Whether ``dsoftmax train`` trains a cross-validated grid.

    Returns
    -------
    list of str
        E.g. ``"--batch-size is ignored by --solver lbfgs (it sets the minibatch size of sgd
        and adam)"``.
    """
    given = getattr(args, "given_options", frozenset())
    reasons = _train_reasons(args, grid) if args.command == "train" else {}
    if getattr(args, "scheduler", None) is None:
        # A tcp:// scheduler with TLS files is refused when the command connects.
        reasons |= dict.fromkeys(
            _TLS_OPTIONS, "without --scheduler (it secures the connection to a tls:// scheduler)"
        )
        reasons["scheduler_timeout"] = "without --scheduler (it bounds the wait for one)"
    elif args.command == "plot" and not args.data:
        reasons |= dict.fromkeys(
            ("scheduler", "scheduler_timeout", *_TLS_OPTIONS),
            "without --data (the curves need no cluster; the confusion matrix of --data does)",
        )
    if args.command in _DATA_ARGUMENTS and given.intersection((*_PARQUET_OPTIONS, "read_retries")):
        reasons |= _data_reasons(args)
    return [f"{_flag(dest)} is ignored {why}" for dest, why in reasons.items() if dest in given]


def _data_reasons(args: argparse.Namespace) -> dict[str, str]:
    """Why the command ignores its Parquet column options (no dataset argument names Parquet
    files) or ``--read-retries`` (every one does, or there is none), by destination."""
    from ..data.convert import names_parquet

    paths = [getattr(args, name, None) for name in _DATA_ARGUMENTS[args.command]]
    parquet = [names_parquet(path) for path in paths if path is not None]
    reasons = {}
    if not any(parquet):
        reasons = dict.fromkeys(
            _PARQUET_OPTIONS, "without Parquet data (it describes the columns of Parquet files)"
        )
    if all(parquet):
        what = "with Parquet data" if parquet else "without --data"
        reasons["read_retries"] = f"{what} (it retries the chunk reads of a Zarr dataset)"
    return reasons


def warn_ignored_options(args: argparse.Namespace, *, grid: bool = False) -> None:
    """Print a warning line on stderr for each option that the command line gives and the
    command ignores (see :func:`ignored_options`)."""
    for sentence in ignored_options(args, grid=grid):
        warn(sentence)
