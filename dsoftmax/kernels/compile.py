"""How the kernels are compiled: numba, nopython, releasing the GIL, cached on disk.

numba caches compiled code beside the source (``__pycache__``) or, where the package directory
is not writable, in the user's cache directory (``NUMBA_CACHE_DIR`` overrides both). Where no
such directory is writable the kernels still work, compiled afresh by every process.
"""

from __future__ import annotations

from collections.abc import Callable

from numba import njit

__all__ = ["FASTMATH", "jit"]

#: Reassociation (vectorized sums), contraction to FMA, no signed zeros, reciprocals; NaN and
#: infinity keep their IEEE meaning.
FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})


def jit(function: Callable | None = None, *, fastmath: bool = True) -> Callable:
    """``numba.njit`` with the kernels' options; usable as ``@jit`` or ``@jit(fastmath=False)``."""

    def compile_function(python_function: Callable) -> Callable:
        options = {"nogil": True, "fastmath": set(FASTMATH) if fastmath else False}
        try:
            return njit(cache=True, **options)(python_function)
        except RuntimeError:  # numba found no writable cache directory
            return njit(cache=False, **options)(python_function)

    return compile_function if function is None else compile_function(function)
