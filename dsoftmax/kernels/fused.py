"""The fused block kernel, compiled with numba: one pass over a block's rows, tile by tile.

Each tile of :data:`TILE_ROWS` rows goes through three steps while its rows are in cache:

1. logits ``Φ = W xᵢ + b`` into a class-major work array (n_classes, tile rows), four rows and
   :data:`CLASS_BLOCK` classes per step, so that every weight load feeds several FMAs;
2. the stable softmax, the per-row loss and the residual ``T = w·(P − Y)`` over that array,
   vectorized over rows (the exponential is a polynomial the compiler vectorizes);
3. the gradient ``Gᵀ += Tᵀ X_tile``: :data:`CLASS_BLOCK` classes × :data:`FEATURE_BLOCK`
   features of it held in registers (a stack array the compiler keeps there) while the tile's
   rows stream past, added into the float64 total once per tile.

Products and the softmax run in the compute dtype (float32 for float32, float16 and bfloat16
storage; float64 for float64); the loss, ``Σ T`` and ``Tᵀ X`` are added up in float64 once per
tile. Rows are processed in their order, one thread, so the sums are the same bits on every call.

Half-precision storage arrives as its raw 16-bit patterns (``uint16``); each tile is widened
into a float32 work tile as it is read. The selected rows of a minibatch are gathered into the
same work tile, so that they go through exactly the code a block of those rows would.
"""

from __future__ import annotations

import math
import platform

import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import carray, types
from numba.extending import intrinsic, overload

from .compile import FASTMATH, jit, prefetch_read, wide_vectors

__all__ = [
    "CLASS_BLOCK",
    "FEATURE_BLOCK",
    "TILE_ROWS",
    "block_metrics_kernel",
    "block_sums_kernel",
    "exp_in_place",
]

#: Rows per tile: the tile's rows (and its widened copy for half storage) stay in L1/L2 cache
#: between the logits and the gradient.
TILE_ROWS = 128
#: Classes per step of the products; the weights are padded with zero rows to a multiple of it.
CLASS_BLOCK = 5
#: Features per register block of the gradient: CLASS_BLOCK × FEATURE_BLOCK accumulators are
#: 20 AVX-512 registers (or 40 AVX2 ones, of which the compiler spills a few).
FEATURE_BLOCK = 64

#: Bytes of a cache line: the stride of the hints that prefetch a tile's rows.
CACHE_LINE_BYTES = 64

#: The raw 16-bit patterns X may hold instead of floats.
NATIVE, FLOAT16_BITS, BFLOAT16_BITS = 0, 1, 2


@intrinsic
def _stack_block(typingctx, marker, like):
    """A pointer to ``len(marker) * FEATURE_BLOCK`` uninitialized scalars of ``like``'s type on
    the caller's stack; the compiler keeps such a block in registers."""
    if not isinstance(marker, types.UniTuple) or not isinstance(like, types.Float):
        return None
    count = marker.count * FEATURE_BLOCK

    def codegen(context, builder, signature, args):
        element = context.get_value_type(like)
        with builder.goto_entry_block():
            block = builder.alloca(ir.ArrayType(element, count))
        return builder.bitcast(block, element.as_pointer())

    return types.CPointer(like)(marker, like), codegen


def exp_in_place(values, count, scratch):
    """``values[:count] = exp(values[:count])`` for values ≤ 0 (max-shifted logits)."""


@overload(exp_in_place, fastmath=set(FASTMATH))
def _exp_in_place(values, count, scratch):
    if values.dtype == types.float32:
        return _exp_float32
    return _exp_libm


def _exp_libm(values, count, scratch):
    for i in range(count):
        values[i] = math.exp(values[i])


def _exp_float32(values, count, scratch):
    # Cephes' expf: x = n·ln2 + r with |r| ≤ ln2/2, a degree-6 polynomial in r, and 2^n built
    # in the exponent bits (``scratch`` is int32 storage seen as float32). Relative error
    # ≲ 2e-7; arguments below -87 give exp(-87) instead of underflowing.
    powers = scratch.view(np.float32)
    for i in range(count):
        x = max(values[i], np.float32(-87.0))
        n = np.float32(math.floor(x * np.float32(1.4426950408889634) + np.float32(0.5)))
        r = x - n * np.float32(0.693359375) - n * np.float32(-2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        p = p * r * r + r + np.float32(1.0)
        scratch[i] = (np.int32(n) + np.int32(127)) << 23
        values[i] = p * powers[i]


@jit
def _store_logits(logits, b, k, row, p0, p1, p2, p3, p4):
    """``logits[k:k + 5, row]`` = the five dot products plus their intercepts."""
    logits[k, row] = p0 + b[k]
    logits[k + 1, row] = p1 + b[k + 1]
    logits[k + 2, row] = p2 + b[k + 2]
    logits[k + 3, row] = p3 + b[k + 3]
    logits[k + 4, row] = p4 + b[k + 4]


@jit
def _logits_tile(tile, W, b, logits):
    """``logits[k, r] = W[k] · tile[r] + b[k]`` for every padded class k and tile row r."""
    wide_vectors()
    n_rows, n_features = tile.shape
    n_padded = W.shape[0]
    zero = b[0] - b[0]
    for r in range(0, n_rows, 4):
        # The last rows of a tile whose length is not a multiple of 4 are repeated: every row
        # goes through the same code, so its logits have the same bits wherever it sits.
        r1, r2, r3 = min(r + 1, n_rows - 1), min(r + 2, n_rows - 1), min(r + 3, n_rows - 1)
        x0, x1, x2, x3 = tile[r], tile[r1], tile[r2], tile[r3]
        for k in range(0, n_padded, 5):
            w0, w1, w2, w3, w4 = W[k], W[k + 1], W[k + 2], W[k + 3], W[k + 4]
            a0 = a1 = a2 = a3 = a4 = zero
            c0 = c1 = c2 = c3 = c4 = zero
            d0 = d1 = d2 = d3 = d4 = zero
            e0 = e1 = e2 = e3 = e4 = zero
            for j in range(n_features):
                u, v, s, t = x0[j], x1[j], x2[j], x3[j]
                a0 += u * w0[j]
                a1 += u * w1[j]
                a2 += u * w2[j]
                a3 += u * w3[j]
                a4 += u * w4[j]
                c0 += v * w0[j]
                c1 += v * w1[j]
                c2 += v * w2[j]
                c3 += v * w3[j]
                c4 += v * w4[j]
                d0 += s * w0[j]
                d1 += s * w1[j]
                d2 += s * w2[j]
                d3 += s * w3[j]
                d4 += s * w4[j]
                e0 += t * w0[j]
                e1 += t * w1[j]
                e2 += t * w2[j]
                e3 += t * w3[j]
                e4 += t * w4[j]
            _store_logits(logits, b, k, r3, e0, e1, e2, e3, e4)
            _store_logits(logits, b, k, r2, d0, d1, d2, d3, d4)
            _store_logits(logits, b, k, r1, c0, c1, c2, c3, c4)
            _store_logits(logits, b, k, r, a0, a1, a2, a3, a4)


@jit
def _add_gradient_tile(tile, residual, grad_coef, marker):
    """``grad_coef += residual[:, :rows] @ tile`` (float64 total), one register block of
    ``len(marker)`` classes × FEATURE_BLOCK features at a time."""
    wide_vectors()
    n_rows, n_features = tile.shape
    n_padded = residual.shape[0]
    width = len(marker)
    zero = residual[0, 0] - residual[0, 0]
    acc = carray(_stack_block(marker, zero), (width, FEATURE_BLOCK))
    n_blocks = n_features // FEATURE_BLOCK
    for k0 in range(0, n_padded, width):
        for c in range(n_blocks):
            for a in range(width):
                for f in range(FEATURE_BLOCK):
                    acc[a, f] = zero
            for r in range(n_rows):
                x = tile[r, c * FEATURE_BLOCK : (c + 1) * FEATURE_BLOCK]
                for a in range(width):
                    t = residual[k0 + a, r]
                    for f in range(FEATURE_BLOCK):
                        acc[a, f] += t * x[f]
            for a in range(width):
                total = grad_coef[k0 + a, c * FEATURE_BLOCK : (c + 1) * FEATURE_BLOCK]
                for f in range(FEATURE_BLOCK):
                    total[f] += acc[a, f]
        for a in range(width):
            for j in range(n_blocks * FEATURE_BLOCK, n_features):
                s = zero
                for r in range(n_rows):
                    s += residual[k0 + a, r] * tile[r, j]
                grad_coef[k0 + a, j] += s


@jit
def _shift_tile(logits, n_rows, n_classes, row_max):
    """Subtract each row's largest logit (kept in ``row_max``) from ``logits[:n_classes, r]``."""
    for r in range(n_rows):
        row_max[r] = logits[0, r]
    for k in range(1, n_classes):
        for r in range(n_rows):
            row_max[r] = max(row_max[r], logits[k, r])
    for k in range(n_classes):
        column = logits[k]
        for r in range(n_rows):
            column[r] = column[r] - row_max[r]


@jit
def _exp_tile(logits, n_rows, n_classes, normalizer, scratch):
    """Exponentiate the shifted logits in place; ``normalizer[r]`` = their sum over classes."""
    for r in range(n_rows):
        normalizer[r] = 0
    for k in range(n_classes):
        exp_in_place(logits[k], n_rows, scratch)
        column = logits[k]
        for r in range(n_rows):
            normalizer[r] += column[r]


@jit
def _target_terms(
    logits, n_rows, n_classes, start, ids, targets, use_targets, target_logit, target_sum
):
    """Per row, ``Σ_k Y_ik φ_ik`` of the shifted logits and the row's target sum ``s_i``."""
    if use_targets:
        for r in range(n_rows):
            target_logit[r] = 0
            target_sum[r] = 0
        for k in range(n_classes):
            for r in range(n_rows):
                y = targets[start + r, k]
                target_logit[r] += y * logits[k, r]
                target_sum[r] += y
    else:
        for r in range(n_rows):
            target_logit[r] = logits[ids[start + r], r]
            target_sum[r] = 1


@jit
def _residual_tile(
    logits, n_rows, n_classes, start, ids, targets, use_targets, weights, weighted, work
):
    """Softmax, loss and residual of one tile: ``logits[:n_classes, :n_rows]`` becomes
    ``T = w·(s·P − Y)`` (``s`` the row's target sum: 1 for class ids and probability rows).
    Returns the tile's weighted loss sum ``Σ_i w_i (s_i log Z_i − Σ_k Y_ik φ_ik)`` (float64)."""
    row_max, normalizer, target_logit, target_sum = work[0], work[1], work[2], work[3]
    scratch = work[4].view(np.int32)
    _shift_tile(logits, n_rows, n_classes, row_max)
    _target_terms(
        logits, n_rows, n_classes, start, ids, targets, use_targets, target_logit, target_sum
    )
    _exp_tile(logits, n_rows, n_classes, normalizer, scratch)
    loss = 0.0
    for r in range(n_rows):
        row_loss = float(target_sum[r]) * math.log(float(normalizer[r])) - float(target_logit[r])
        loss += weights[start + r] * row_loss if weighted else row_loss
        # scale_i = w_i s_i / Z_i: one multiply per entry turns exp(φ) into w·s·P.
        scale = target_sum[r] / normalizer[r]
        normalizer[r] = scale * weights[start + r] if weighted else scale
    for k in range(n_classes):
        column = logits[k]
        for r in range(n_rows):
            column[r] *= normalizer[r]
    if use_targets:
        for k in range(n_classes):
            column = logits[k]
            for r in range(n_rows):
                y = targets[start + r, k]
                column[r] -= y * weights[start + r] if weighted else y
    else:
        for r in range(n_rows):
            logits[ids[start + r], r] -= weights[start + r] if weighted else 1
    return loss


@jit
def _tile_sums(
    tile, start, W, b, n_classes, labels, grad_coef, grad_intercept, logits, work, marker
):
    """Add one tile's gradient sums into ``grad_coef`` and ``grad_intercept``; return its loss."""
    n_rows = tile.shape[0]
    _logits_tile(tile, W, b, logits)
    ids, targets, use_targets, weights, weighted = labels
    loss = _residual_tile(
        logits, n_rows, n_classes, start, ids, targets, use_targets, weights, weighted, work
    )
    for k in range(n_classes):
        column = logits[k]
        s = 0.0
        for r in range(n_rows):
            s += float(column[r])
        grad_intercept[k] += s
    _add_gradient_tile(tile, logits[:, :n_rows], grad_coef, marker)
    return loss


@jit(fastmath=False)
def _tile_buffers(W, n_features):
    """The work arrays of one call: logits (padded classes × tile rows; the padding rows stay
    zero), five per-row vectors, and a tile of rows in the compute dtype."""
    logits = np.zeros((W.shape[0], TILE_ROWS), dtype=W.dtype)
    work = np.zeros((5, TILE_ROWS), dtype=W.dtype)
    tile = np.empty((TILE_ROWS, n_features), dtype=W.dtype)
    return logits, work, tile


@jit(fastmath=False)
def _widen_tile(X, start, n_rows, rows, gather, bits, tile):
    """Copy tile rows into ``tile`` (the compute dtype): rows ``start + r`` of X, or
    ``rows[start + r]`` when ``gather``; 16-bit patterns are widened to float32 on the way."""
    n_features = X.shape[1]
    for r in range(n_rows):
        source = X[rows[start + r]] if gather else X[start + r]
        target = tile[r]
        if bits == NATIVE:
            for j in range(n_features):
                target[j] = source[j]
        elif bits == BFLOAT16_BITS:
            words = target.view(np.uint32)
            for j in range(n_features):
                words[j] = np.uint32(source[j]) << np.uint32(16)
        else:
            _widen_float16(source, target)


@intrinsic
def _half_to_float(typingctx, bits):
    """The float32 value of IEEE binary16 bit pattern ``bits`` (uint16): LLVM's ``fpext`` from
    ``half``, exact for every value, which compiles to the processor's conversion instruction
    (F16C's ``vcvtph2ps``, 16 values at a time) where it has one."""
    if bits != types.uint16 and not isinstance(bits, types.Float):
        return None

    def codegen(context, builder, signature, args):
        if isinstance(bits, types.Float):  # a caller's branch for float storage, never taken
            return context.cast(builder, args[0], bits, types.float32)
        half = builder.bitcast(args[0], ir.HalfType())
        return builder.fpext(half, ir.FloatType())

    return types.float32(bits), codegen


@jit(fastmath=False)
def _widen_float16_in_hardware(source, target):
    """IEEE binary16 bit patterns to float32 by the processor's conversion instruction: every
    value exactly (normal, zero, subnormal, infinite); a NaN stays a NaN."""
    wide_vectors()
    for j in range(source.shape[0]):
        target[j] = _half_to_float(source[j])


@jit(fastmath=False)
def _widen_float16_bits(source, target):
    """IEEE binary16 bit patterns to float32 by integer arithmetic, exactly (normal, zero,
    subnormal, inf, NaN): for targets without a conversion instruction."""
    words = target.view(np.uint32)
    n = source.shape[0]
    subnormals = np.uint32(0)
    for j in range(n):
        h = np.uint32(source[j])
        sign = (h & np.uint32(0x8000)) << np.uint32(16)
        exponent = (h >> np.uint32(10)) & np.uint32(0x1F)
        mantissa = h & np.uint32(0x3FF)
        # Rebias the exponent (15 → 127); all ones (inf, NaN) stays all ones, zero stays zero.
        biased = exponent + np.uint32(112)
        biased = np.uint32(0xFF) if exponent == np.uint32(0x1F) else biased
        biased = np.uint32(0) if exponent == np.uint32(0) else biased
        words[j] = sign | (biased << np.uint32(23)) | (mantissa << np.uint32(13))
        subnormals |= np.uint32(exponent == np.uint32(0)) & np.uint32(mantissa != np.uint32(0))
    if subnormals:
        for j in range(n):
            h = np.uint32(source[j])
            if (h & np.uint32(0x7C00)) == np.uint32(0):  # subnormal: m · 2^-24
                magnitude = np.float32(h & np.uint32(0x3FF)) * np.float32(5.960464477539063e-08)
                target[j] = -magnitude if h & np.uint32(0x8000) else magnitude


def half_conversion_in_hardware() -> bool:
    """Whether the code numba generates here converts binary16 to float32 with an instruction:
    64-bit ARM, and x86 with F16C (every x86 processor since 2012) in the features numba
    compiles for (``NUMBA_CPU_FEATURES`` when set, the host's otherwise). Elsewhere LLVM would
    call a runtime function that numba's JIT does not provide."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return True
    if machine not in ("x86_64", "amd64"):
        return False
    features = numba.config.CPU_FEATURES
    if features is None:
        try:
            return bool(llvm.get_host_cpu_features().get("f16c", False))
        except RuntimeError:  # LLVM cannot read this host's features: the integer widening
            return False
    return "+f16c" in features.replace(" ", "").split(",")


#: How float16 tiles are widened in this process (decided once, when the module is imported).
_widen_float16 = (
    _widen_float16_in_hardware if half_conversion_in_hardware() else _widen_float16_bits
)


@jit
def _prefetch_tile(X, lo, hi, rows, gather):
    """Hint that the rows of the tile ``lo:hi`` (rows ``lo:hi`` of X, or ``X[rows[lo:hi]]``
    when ``gather``) are read soon, one hint per cache line, so that they arrive from memory
    while the current tile is computed. The processor's own prefetchers stop at every page
    boundary, 4 KiB where blocks are not held in huge pages, and never guess a gather."""
    n_features = X.shape[1]
    if n_features == 0:
        return
    step = max(CACHE_LINE_BYTES // X.itemsize, 1)
    for i in range(lo, hi):
        r = rows[i] if gather else i
        for j in range(0, n_features, step):
            prefetch_read(X, r, j)
        prefetch_read(X, r, n_features - 1)


def _tile_rows(X, start, n_rows, rows, gather, bits, tile):
    """The tile's rows as a 2-D C-contiguous array of the compute dtype."""


@overload(_tile_rows)
def _tile_rows_overload(X, start, n_rows, rows, gather, bits, tile):
    if X.dtype == tile.dtype:

        def view_or_gather(X, start, n_rows, rows, gather, bits, tile):
            if gather:
                _widen_tile(X, start, n_rows, rows, gather, bits, tile)
                return tile[:n_rows]
            return X[start : start + n_rows]

        return view_or_gather

    def widen(X, start, n_rows, rows, gather, bits, tile):
        _widen_tile(X, start, n_rows, rows, gather, bits, tile)
        return tile[:n_rows]

    return widen


@jit(fastmath=False)
def block_sums_kernel(
    X, rows, gather, bits, W, b, n_classes, labels, grad_coef, grad_intercept, marker
):
    """Loss sum of a block's rows (all of X, or ``X[rows]`` when ``gather``), adding their
    gradient sums into ``grad_coef`` (padded classes × features) and ``grad_intercept``.

    ``labels`` is ``(ids, targets, use_targets, weights, weighted)``, indexed by position
    among the evaluated rows;
    ``bits`` says whether X holds floats of the compute dtype or 16-bit patterns.
    """
    n_total = rows.shape[0] if gather else X.shape[0]
    logits, work, tile = _tile_buffers(W, X.shape[1])
    loss = 0.0
    for start in range(0, n_total, TILE_ROWS):
        n_rows = min(TILE_ROWS, n_total - start)
        _prefetch_tile(X, start + TILE_ROWS, min(start + 2 * TILE_ROWS, n_total), rows, gather)
        rows_of_tile = _tile_rows(X, start, n_rows, rows, gather, bits, tile)
        loss += _tile_sums(
            rows_of_tile,
            start,
            W,
            b,
            n_classes,
            labels,
            grad_coef,
            grad_intercept,
            logits,
            work,
            marker,
        )
    return loss


@jit
def _first_argmax(values, n):
    best = 0
    for k in range(1, n):
        if values[k] > values[best]:
            best = k
    return best


@jit
def block_metrics_kernel(X, rows, gather, bits, W, b, n_classes, labels):
    """``(loss sum, correct sum)`` of a block's rows, weighted: a row is correct when the first
    largest of its logits is its class (its target row's first largest entry)."""
    n_total = rows.shape[0] if gather else X.shape[0]
    logits, work, tile = _tile_buffers(W, X.shape[1])
    row_max, normalizer, target_logit, target_sum = work[0], work[1], work[2], work[3]
    scratch = work[4].view(np.int32)
    ids, targets, use_targets, weights, weighted = labels
    loss = 0.0
    correct = 0.0
    for start in range(0, n_total, TILE_ROWS):
        n_rows = min(TILE_ROWS, n_total - start)
        _prefetch_tile(X, start + TILE_ROWS, min(start + 2 * TILE_ROWS, n_total), rows, gather)
        rows_of_tile = _tile_rows(X, start, n_rows, rows, gather, bits, tile)
        _logits_tile(rows_of_tile, W, b, logits)
        for r in range(n_rows):
            predicted = _first_argmax(logits[:, r], n_classes)
            target = _first_argmax(targets[start + r], n_classes) if use_targets else ids[start + r]
            if predicted == target:
                correct += weights[start + r] if weighted else 1.0
        _shift_tile(logits, n_rows, n_classes, row_max)
        _target_terms(
            logits, n_rows, n_classes, start, ids, targets, use_targets, target_logit, target_sum
        )
        _exp_tile(logits, n_rows, n_classes, normalizer, scratch)
        for r in range(n_rows):
            row_loss = float(target_sum[r]) * math.log(float(normalizer[r])) - float(
                target_logit[r]
            )
            loss += weights[start + r] * row_loss if weighted else row_loss
    return loss, correct
