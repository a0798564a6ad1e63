"""What the ``dsoftmax`` command writes besides its results: exit codes, one-line errors and
warnings on stderr, and its log lines."""

from __future__ import annotations

import contextlib
import logging
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
    "command_output",
    "configure_logging",
    "one_line",
    "quiet_dask_logging",
    "resume_command",
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
    print(f"{PROG}: warning: {category.__name__}: {one_line(str(message))}", file=sys.stderr)


@contextlib.contextmanager
def command_output() -> Iterator[None]:
    """One-line warnings, and log lines that do not break a progress bar."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    with warnings.catch_warnings(), logging_redirect_tqdm(loggers=[logger]):
        warnings.showwarning = _show_warning
        yield
