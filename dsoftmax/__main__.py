"""``python -m dsoftmax``: the command line."""

from .cli import run

run()
