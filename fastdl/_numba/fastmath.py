"""Inline, vectorisable exp for numba kernels (softmax-style loops).

Numba's pip build has no SVML, so ``np.exp``/``math.exp`` in a loop is a scalar libm
call per element and blocks vectorisation. ``exp32``/``exp64`` are branch-free scalar
functions that numba inlines into the caller, so LLVM vectorises the loop around them::

    from fastdl._numba.fastmath import exp32, exp64, fast_exp
    for i in prange(n):
        out[i] = fast_exp(x[i] - row_max)   # exp32 for float32, exp64 for float64

Accuracy (tests/test_fastmath.py): <= 2 ulp vs a correctly rounded exp wherever the
result is a normal number; exp(0) == 1 exactly, exp(-inf) == 0, exp(+inf) == +inf,
NaN -> NaN, overflow -> +inf. Results in the subnormal range (x below about -87.34 for
float32, -708.40 for float64) are not flushed: they come from one correctly rounded
multiplication of an accurate value, so they are within about 1 ulp of the smallest
subnormal; below about -103.97 (float32) / -745.13 (float64) the result is 0.

Algorithm: x = k*ln2 + r with |r| <= ln2/2, a polynomial for exp(r) (Cephes' minimax for
float32, Taylor to degree 13 for float64), then a scale by 2^k in two exact halves built
from integer bit patterns. The code must stay correct under the project's fastmath flags,
which include "reassoc" and reach this code through inlining whatever the caller's own
flags are (tests/test_fastmath.py fails if any of these points is undone):
- float32: the reduction r = x - k*ln2 is one float64 operation (exact enough for
  |k| <= 150), so there is no chain of float32 operations to reassociate;
- float64: Cody-Waite with a two-part ln2; k*LN2_HI and 2k*(LN2_LO/2) use different
  float values of k, because LLVM (and GCC) otherwise factor them back into
  k*(LN2_HI + LN2_LO) and the extra precision is lost (errors of ~100 ulp);
- the 2^k scale goes through integer bit operations, so it cannot be reassociated into
  a single 2^k that would overflow or underflow early;
- no float rounding tricks (x + 1.5*2^23 - 1.5*2^23 folds to x under reassoc): k comes
  from a truncating conversion of a clamped, finite value, which is defined and
  vectorises (a NaN would be undefined in the conversion, so it is clamped away and the
  NaN is put back at the end). Integers are kept int32 so the loop vectorises fully.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from . import FASTMATH, njit_serial


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret an int32 bit pattern as float32 (no conversion)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def _float32_bits(typingctx, value):
    """The int32 bit pattern of a float32."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _float64_from_bits(typingctx, bits):
    """Reinterpret an int64 bit pattern as float64 (no conversion)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _float64_bits(typingctx, value):
    """The int64 bit pattern of a float64."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


# float32 constants (np.float32 globals stay float32 constants inside numba code).
_F32_LOG2E = np.float32(1.44269504088896341)
# The float32 reduction runs in float64 (ln2 to 53 bits), so it needs no split ln2.
_F32_LN2 = 0.6931471805599453
# Clamp bounds: exp(-104) and anything below rounds to 0, exp(89) overflows to inf.
_F32_LO = np.float32(-104.0)
_F32_HI = np.float32(89.0)
_F32_HALF = np.float32(0.5)
_F32_ONE = np.float32(1.0)
# Cephes expf minimax polynomial: exp(r) ~= 1 + r + r^2 * P(r) on |r| <= ln2/2.
_F32_P0 = np.float32(1.9875691500e-4)
_F32_P1 = np.float32(1.3981999507e-3)
_F32_P2 = np.float32(8.3334519073e-3)
_F32_P3 = np.float32(4.1665795894e-2)
_F32_P4 = np.float32(1.6666665459e-1)
_F32_P5 = np.float32(5.0000001201e-1)


@njit_serial(inline="always")
def exp32(x):
    """exp of a float32, as float32; <= 2 ulp for normal results (module docstring)."""
    x = np.float32(x)
    # Clamp with comparisons that send NaN to the low bound, so everything below is
    # finite; NaN is restored at the end.
    xc = x if x > _F32_LO else _F32_LO
    xc = xc if xc < _F32_HI else _F32_HI
    t = xc * _F32_LOG2E
    k = np.int32(t + _F32_HALF) if t > 0 else np.int32(t - _F32_HALF)  # round to nearest
    # One float64 operation: exact enough (|k| <= 150) and nothing to reassociate.
    r = np.float32(np.float64(xc) - np.float64(k) * _F32_LN2)
    p = ((((_F32_P0 * r + _F32_P1) * r + _F32_P2) * r + _F32_P3) * r + _F32_P4) * r + _F32_P5
    p = (p * r * r + r) + _F32_ONE
    # 2^k = 2^k1 * 2^k2 with both halves normal for |k| <= 150. The first is added into
    # p's exponent (exact: the result stays normal); the second is one rounded multiply,
    # which is where overflow to inf and gradual underflow happen correctly.
    k1 = np.int32(k >> 1)
    k2 = np.int32(k - k1)
    scaled = _float32_from_bits(np.int32(_float32_bits(p) + np.int32(k1 << 23)))
    y = scaled * _float32_from_bits(np.int32(np.int32(k2 + 127) << 23))
    return y if x == x else x


_F64_LOG2E = 1.4426950408889634
# fdlibm's split: LN2_HI has 32 significant bits, so k*LN2_HI is exact for |k| < 2^21.
_F64_LN2_HI = 6.93147180369123816490e-01
_F64_LN2_LO_HALF = 1.90821492927058770002e-10 / 2
_F64_LO = -746.0  # exp(-746) rounds to 0
_F64_HI = 710.0  # exp(710) overflows
# Taylor coefficients 1/n!, n = 2..13: the truncation error on |r| <= ln2/2 is below
# 2^-57 relative.
_F64_C2 = 1.0 / 2
_F64_C3 = 1.0 / 6
_F64_C4 = 1.0 / 24
_F64_C5 = 1.0 / 120
_F64_C6 = 1.0 / 720
_F64_C7 = 1.0 / 5040
_F64_C8 = 1.0 / 40320
_F64_C9 = 1.0 / 362880
_F64_C10 = 1.0 / 3628800
_F64_C11 = 1.0 / 39916800
_F64_C12 = 1.0 / 479001600
_F64_C13 = 1.0 / 6227020800


@njit_serial(inline="always")
def exp64(x):
    """exp of a float64; <= 2 ulp for normal results (module docstring)."""
    x = np.float64(x)
    xc = x if x > _F64_LO else _F64_LO
    xc = xc if xc < _F64_HI else _F64_HI
    t = xc * _F64_LOG2E
    k = np.int32(t + 0.5) if t > 0 else np.int32(t - 0.5)
    r = (xc - np.float64(k) * _F64_LN2_HI) - np.float64(np.int32(k + k)) * _F64_LN2_LO_HALF
    p = _F64_C13 * r + _F64_C12
    p = p * r + _F64_C11
    p = p * r + _F64_C10
    p = p * r + _F64_C9
    p = p * r + _F64_C8
    p = p * r + _F64_C7
    p = p * r + _F64_C6
    p = p * r + _F64_C5
    p = p * r + _F64_C4
    p = p * r + _F64_C3
    p = p * r + _F64_C2
    p = (p * r * r + r) + 1.0
    k1 = np.int64(k >> 1)
    k2 = np.int64(k) - k1
    scaled = _float64_from_bits(_float64_bits(p) + (k1 << 52))
    y = scaled * _float64_from_bits((k2 + 1023) << 52)
    return y if x == x else x


def fast_exp(x):
    """exp32 for float32, exp64 for float64 (for dtype-generic numba kernels)."""
    return np.exp(x)  # the Python fallback; numba uses the overload below


@overload(fast_exp, inline="always", fastmath=FASTMATH)
def _fast_exp_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        return lambda x: exp32(x)
    if isinstance(x, types.Float):
        return lambda x: exp64(x)
    return None
