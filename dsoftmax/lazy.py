"""Imports on first use: names of a package imported from their module (PEP 562), and whether
distributed is loaded yet."""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib import import_module
from typing import Any

__all__ = ["distributed_loaded", "lazy_names"]


def distributed_loaded() -> bool:
    """Whether distributed has been imported. Before it is, no distributed client can be active,
    so code that only looks for one need not import it (a third of a small command's start)."""
    return "distributed" in sys.modules


def lazy_names(
    package: str, namespace: dict[str, Any], table: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose name ``n`` lives in its
    submodule ``table[n]``: importing the package imports none of them."""

    def getattr_(name: str) -> Any:
        if name in table:
            value = getattr(import_module(f".{table[name]}", package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(table))

    return getattr_, dir_
