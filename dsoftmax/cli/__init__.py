"""The ``dsoftmax`` command: a thin layer over the Python API.

Exit codes: 0 success, 1 runtime or data failure, 2 usage error (bad arguments or
hyper-parameters), 130 interrupted (Ctrl-C). Errors and warnings are printed as one line each
on stderr (``dsoftmax: error: ...``), without a traceback. Progress bars (conversion, load,
training, evaluation) show on stderr only when it is a terminal.

The parser and its argument types are in :mod:`dsoftmax.cli.parser`, the commands in
:mod:`dsoftmax.cli.data_commands` and :mod:`dsoftmax.cli.model_commands`, the command's cluster
in :mod:`dsoftmax.cli.session` and what it prints besides results in :mod:`dsoftmax.cli.output`.
Only the standard library and the light modules :mod:`dsoftmax.defaults` and
:mod:`dsoftmax.validation` are imported before a command runs, so ``dsoftmax --help`` is quick.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

# The shared defaults the command uses, reachable as dsoftmax.cli.* as they were before the
# command became a package.
from ..defaults import CONVERT_FORMATS, DEFAULT_READ_RETRIES, PROCESS_ENVIRONMENT
from .data_commands import cmd_convert, cmd_make_data
from .ignored import warn_ignored_options
from .model_commands import _open as _open  # how every command opens a dataset
from .model_commands import cmd_demo, cmd_evaluate, cmd_plot, cmd_predict, cmd_train
from .output import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    UsageError,
    command_line_wording,
    command_output,
    configure_logging,
    one_line,
    resume_command,
)
from .parser import build_parser, given_options
from .session import CommandCluster

__all__ = ["COMMANDS", "CONVERT_FORMATS", "DEFAULT_READ_RETRIES", "build_parser", "main", "run"]

#: Allocations between two collections of the youngest generation in a command's process (Python's
#: default is 700): a command imports a large library stack whose objects live until it ends.
COMMAND_GC_THRESHOLD = 10_000

#: The function of every subcommand: ``(args, cluster) -> exit code``.
COMMANDS: dict[str, Callable[[argparse.Namespace, CommandCluster], int]] = {
    "make-data": cmd_make_data,
    "convert": cmd_convert,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "demo": cmd_demo,
    "plot": cmd_plot,
}


def run() -> NoReturn:
    """The ``dsoftmax`` program: :func:`main` on ``sys.argv`` in a process that ends with it.

    Python's cyclic garbage collector walks every object it tracks at each full collection, and
    again while the interpreter shuts down; a command's process holds the objects of the
    libraries it imports (NumPy, SciPy, Dask, Zarr, numba, pyarrow) until it exits. So the
    program collects its youngest generation less often (:data:`COMMAND_GC_THRESHOLD`), and
    once the command is over freezes what is left (``gc.freeze``): the shutdown frees it by
    reference counting without walking it again.
    """
    gc.set_threshold(COMMAND_GC_THRESHOLD, *gc.get_threshold()[1:])
    try:
        code = main()
    finally:  # also when argparse exits (--help, --version, usage errors)
        gc.freeze()
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (argument errors exit with 2)."""
    set_process_environment()
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = argv
    args.given_options = given_options(argv)
    configure_logging(args.verbose)
    cluster = CommandCluster(args)
    try:
        with command_output():
            if args.command != "train":  # train warns once its options pass their checks
                warn_ignored_options(args)
            return COMMANDS[args.command](args, cluster)
    except UsageError as error:
        print(
            f"{PROG}: error: {_message(error)} (see '{PROG} {args.command} --help')",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted{_after_interrupt(args, argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, TypeError, OSError, FloatingPointError, RuntimeError) as error:
        # Data, I/O, cluster and divergence failures: one clear line.
        print(f"{PROG}: error: {_message(error) or type(error).__name__}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:
        print(f"{PROG}: error: {type(error).__name__}: {_message(error)}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        try:
            cluster.close()
        except KeyboardInterrupt:  # a second Ctrl-C while the cluster stops
            pass
        except Exception as error:  # the work is done; a failed shutdown must not hide that
            print(f"{PROG}: warning: closing the Dask client failed: {error!r}", file=sys.stderr)


def _message(error: BaseException) -> str:
    """The message of ``error`` on one line, in the command line's terms: the library's
    messages name its Python parameters (``resume=True``), the command its options."""
    return one_line(command_line_wording(str(error)))


def set_process_environment() -> None:
    """Give this process (and the processes it starts) :data:`dsoftmax.defaults.PROCESS_ENVIRONMENT`
    where the user's environment does not say otherwise, while NumPy, which reads it when it is
    imported, is not loaded yet: a command receives and allocates model- and block-sized arrays
    all along."""
    if "numpy" in sys.modules:
        return
    for name, value in PROCESS_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def _after_interrupt(args: argparse.Namespace, argv: list[str]) -> str:
    """What an interrupted command says after "interrupted": for ``train``, how to continue."""
    if args.command != "train":
        return ""
    if args.checkpoint_dir:
        return (
            f"; the checkpoints in {args.checkpoint_dir} are intact, continue with: "
            f"{resume_command(argv)}"
        )
    return (
        "; nothing was saved. With --checkpoint-dir DIR a fit writes checkpoints, and an "
        "interrupted one continues with --resume"
    )
