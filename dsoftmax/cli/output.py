"""What the ``dsoftmax`` command writes besides its results: exit codes, one-line errors and
warnings on stderr, and its log lines."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "UsageError",
    "command_line_wording",
    "command_output",
    "configure_logging",
    "one_line",
    "quiet_dask_logging",
    "resume_command",
    "warn",
    "worker_log_level",
]

logger = logging.getLogger("dsoftmax")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
#: The exit code of a command stopped by Ctrl-C: 128 + SIGINT, as shells report it.
EXIT_INTERRUPTED = 130
PROG = "dsoftmax"


class UsageError(Exception):
    """A bad argument or hyper-parameter: exit code 2."""


def one_line(text: str) -> str:
    """``text`` on one line: its non-blank lines joined by semicolons."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def warn(text: str) -> None:
    """Print ``dsoftmax: warning: text`` on stderr, on one line."""
    print(f"{PROG}: warning: {one_line(text)}", file=sys.stderr)


#: The library's advice in Python terms, and what the command line says instead (applied
#: before the parameter names below).
_COMMAND_LINE_ADVICE = (
    (
        "create it with dsoftmax.data.write_dataset (Parquet files open as they are with "
        "dsoftmax.open_parquet).",
        "create it with `dsoftmax convert` (from .npz/.npy, Parquet, CSV or svmlight files) "
        "or `dsoftmax make-data` (a synthetic dataset); Parquet files are read as they are when "
        "named by a .parquet name or pattern (or a local directory), with --label-column.",
    ),
    (
        "write it with dsoftmax.data.write_dataset (or convert_numpy)",
        "write it with `dsoftmax convert` or `dsoftmax make-data`",
    ),
    (
        "write the dataset with dsoftmax.data.write_dataset",
        "write it again with `dsoftmax convert`",
    ),
    ("let write_dataset map the labels", "let `dsoftmax convert` map the labels"),
    # The command line has no option that declares classes.
    (" Pass classes=[...] to declare the others, or add rows of other classes.",
     " Add rows of the other classes."),
    # --dtype takes Parquet, CSV and svmlight sources, not .npz/.npy arrays.
    (
        "convert it with X.astype(np.float32) (or np.float64 to keep full precision), or pass "
        "dtype=.",
        "save the array as float32 or float64 (e.g. X.astype(np.float32)) before converting it.",
    ),
    (
        "Pass security=make_security(ca_file, cert, key) (CLI: --tls-ca-file, --tls-cert, "
        "--tls-key)",
        "Pass --tls-ca-file, --tls-cert and --tls-key",
    ),
    (
        "Pass all three PEM files (CLI: --tls-ca-file, --tls-cert, --tls-key)",
        "Pass all three PEM files",
    ),
)  # fmt: skip

#: The Python parameters that the library's messages name, and the command's options for them.
_OPTION_OF = {
    name: "--" + name.replace("_", "-")
    for name in (
        "batch_size", "checkpoint_dir", "checkpoint_every", "class_weight", "cv", "dtype",
        "early_stopping", "embedding_column", "feature_columns", "feature_key", "grid_memory",
        "hold_data", "index_column", "keep_checkpoints", "l2", "label_column", "label_key",
        "learning_rate", "layout", "lr_schedule", "max_iter", "momentum", "n_features", "nesterov",
        "overwrite", "read_retries", "resume", "scoring", "shuffle_window", "solver",
        "storage_options", "tls_ca_file", "tls_cert", "tls_key", "tol", "validation_fraction",
        "value_column",
    )
} | {"random_state": "--seed"}  # fmt: skip

#: ``name=value`` of a parameter, or the bare name; not inside a word, path or quoted string, nor
#: as the first argument of a call's repr (``Estimator(max_iter=5)``).
_PARAMETER = re.compile(
    r"(?<![\w.'\"/-])(?<!\w\()(?P<name>"
    + "|".join(sorted(_OPTION_OF, key=len, reverse=True))
    + r")"
    r"(?:=(?P<value>'[^']*'|\"[^\"]*\"|[\w.+-]*\w))?(?![\w'\"/(\[=-])"
)


def _option_wording(match: re.Match[str]) -> str:
    name, value = match["name"], match["value"]
    option = _OPTION_OF[name]
    if value is None:
        # A bare name without "_" (cv, resume, solver) is also an ordinary word.
        return option if "_" in name else match[0]
    if value == "True":
        return option
    if value == "None" and name == "random_state":
        return match[0]  # --seed always has a value: the Python advice stays as it is
    if value in ("False", "None"):
        return f"no {option}"
    unquoted = value.strip("'\"")
    return f"{option} {unquoted}"


def command_line_wording(message: str) -> str:
    """``message``, from the library, in the command line's terms: its advice about Python
    calls rephrased, and ``checkpoint_dir``, ``resume=True``, ``cv=5`` written as the options
    ``--checkpoint-dir``, ``--resume``, ``--cv 5``.

    Parameters
    ----------
    message : str
        An error's or a warning's text.

    Returns
    -------
    str

    Examples
    --------
    >>> command_line_wording("pass resume=True to continue that fit")
    'pass --resume to continue that fit'
    """
    for library, command_line in _COMMAND_LINE_ADVICE:
        message = message.replace(library, command_line)
    return _PARAMETER.sub(_option_wording, message)


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted ``train`` from its checkpoints:
    ``argv`` with ``--resume`` (in place of a ``--resume-from STEP``)."""
    import shlex

    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--resume-from":
            skip = True
        elif not word.startswith("--resume-from=") and word != "--resume":
            words.append(word)
    return shlex.join([PROG, *words, "--resume"])


def configure_logging(verbose: int) -> None:
    """The package's log lines on stderr: warnings only, ``-v`` info, ``-vv`` debug."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


def quiet_dask_logging(verbose: int) -> None:
    """Dask's client logs multi-line tracebacks while it retries a lost scheduler; the command
    reports the outcome as one line instead (-vv shows them). Called after distributed is
    imported, as its import sets the levels of its loggers."""
    import distributed  # noqa: F401 - its import configures the loggers quieted here

    level = logging.DEBUG if verbose >= 2 else logging.CRITICAL
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(level)


def worker_log_level(verbose: int) -> int:
    """The level from which the workers of a local cluster print their logs: none without
    ``-v`` (a failed task shows as the command's one-line error), Dask's default with ``-v``,
    their info lines with ``-vv``."""
    return logging.CRITICAL if verbose == 0 else logging.WARNING if verbose == 1 else logging.INFO


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Warnings as one line, without the source line Python shows by default."""
    warn(f"{category.__name__}: {command_line_wording(str(message))}")


@contextlib.contextmanager
def command_output() -> Iterator[None]:
    """One-line warnings, and log lines that do not break a progress bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with warnings.catch_warnings(), logging_redirect_tqdm(loggers=[logger]):
        warnings.showwarning = _show_warning
        yield
