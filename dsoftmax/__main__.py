"""``python -m dsoftmax``: the command line."""

from .cli import main

raise SystemExit(main())
