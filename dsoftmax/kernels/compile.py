"""How the kernels are compiled: numba, nopython, releasing the GIL, cached on disk.

numba caches compiled code beside the source (``__pycache__``) or, where the package directory
is not writable, in the user's cache directory (``NUMBA_CACHE_DIR`` overrides both). Where no
such directory is writable the kernels still work, compiled afresh by every process.
"""

from __future__ import annotations

from collections.abc import Callable

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "FASTMATH",
    "ORDERED",
    "VECTOR_BITS",
    "jit",
    "prefetch_read",
    "prefetch_write",
    "wide_vectors",
]

#: The widest vectors the kernels' loops are compiled to, in bits: LLVM's default on AVX-512
#: processors is 256 (``prefer-256-bit``), which halves the products' arithmetic per instruction.
VECTOR_BITS = 512

#: Reassociation (vectorized sums), contraction to FMA, no signed zeros, reciprocals; NaN and
#: infinity keep their IEEE meaning.
FASTMATH = frozenset({"reassoc", "contract", "nsz", "arcp"})

#: Contraction to FMA only: every sum keeps the order the code gives it, so two loops that add
#: the same terms in the same order give the same bits whatever LLVM makes of each (the sparse
#: kernels' row and column orders, int32 and int64 indices).
ORDERED = frozenset({"contract"})


def jit(function: Callable | None = None, *, fastmath: bool | frozenset = True) -> Callable:
    """``numba.njit`` with the kernels' options; usable as ``@jit``, ``@jit(fastmath=False)``
    or with a set of LLVM's fast-math flags (``@jit(fastmath=frozenset({"contract"}))``)."""

    def compile_function(python_function: Callable) -> Callable:
        flags = FASTMATH if fastmath is True else fastmath
        options = {"nogil": True, "fastmath": set(flags) if flags else False}
        try:
            return njit(cache=True, **options)(python_function)
        except RuntimeError:  # numba found no writable cache directory
            return njit(cache=False, **options)(python_function)

    return compile_function if function is None else compile_function(function)


@intrinsic
def wide_vectors(typingctx):
    """Compile the calling kernel's loops with vectors of :data:`VECTOR_BITS` bits where the
    processor has them (LLVM's per-function ``prefer-vector-width``); a no-op elsewhere.

    Called first in a kernel whose loops are products: the width is a property of that code,
    the same in every process, so the sums keep their bits on every worker.
    """

    def codegen(context, builder, signature, args):
        # llvmlite's attribute set names only LLVM's keyword attributes; a string attribute
        # is written as it appears in the IR. An llvmlite whose attributes are no set leaves
        # LLVM's default width: slower products, the same kernel.
        attributes = builder.function.attributes
        if isinstance(attributes, set):
            set.add(attributes, f'"prefer-vector-width"="{VECTOR_BITS}"')
        return context.get_dummy_value()

    return types.none(), codegen


def _prefetch_intrinsic(write: int) -> Callable:
    """An intrinsic ``prefetch(array, i, k)``: a hint that ``array[i, k]`` is read soon (or
    written, for ``write=1``); it never faults, whatever the address."""

    @intrinsic
    def prefetch(typingctx, array, i, k):
        if not isinstance(array, types.Array) or array.ndim != 2:
            return None

        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            view = context.make_array(array_type)(context, builder, args[0])
            pointer = cgutils.get_item_pointer(
                context, builder, array_type, view, [args[1], args[2]], wraparound=False
            )
            byte_pointer = ir.IntType(8).as_pointer()
            int32 = ir.IntType(32)
            hint = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32]),
                "llvm.prefetch.p0i8",
            )
            # Arguments: address, read (0) or write (1), locality 3 (keep in every cache level),
            # data cache (1).
            builder.call(
                hint,
                [
                    builder.bitcast(pointer, byte_pointer),
                    ir.Constant(int32, write),
                    ir.Constant(int32, 3),
                    ir.Constant(int32, 1),
                ],
            )
            return context.get_dummy_value()

        return types.void(array, types.intp, types.intp), codegen

    return prefetch


#: ``prefetch_read(array, i, k)``: ``array[i, k]`` is read soon.
prefetch_read = _prefetch_intrinsic(0)
#: ``prefetch_write(array, i, k)``: ``array[i, k]`` is written soon.
prefetch_write = _prefetch_intrinsic(1)
