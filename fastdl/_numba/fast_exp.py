"""A float32 exp that numba can vectorise (its pip build has no SVML, so ``math.exp`` in a
loop is a scalar libm call per element).

exp(x) = 2**k * exp(r), k = round(x / ln 2), |r| <= ln(2)/2, evaluated in float64: the one
product k * ln2 is exact enough in double, so no two-constant (Cody-Waite) split is
needed -- fastmath's "reassoc" could fold such a split and lose it. A degree-7 Taylor
polynomial is within ~1e-8 relative of exp(r), and the float64 result is rounded once to
float32, which also handles the subnormal range. Inputs are clamped to [-104, 89] first:
exp(-104) rounds to 0 and exp(89) to inf in float32, so -inf -> 0 and +inf -> inf; NaN
passes the clamps and the polynomial as NaN. Tested against np.exp to <= 2 ulp.
"""

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from . import FASTMATH, njit_serial

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
# 1/n! for the Horner evaluation of exp(r), degree 7
_C2, _C3, _C4, _C5, _C6, _C7 = 1 / 2, 1 / 6, 1 / 24, 1 / 120, 1 / 720, 1 / 5040


@intrinsic
def _bits_as_float64(typingctx, bits):
    """Reinterpret an int64's bits as a float64 (vectorisable, unlike a libm ldexp)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = context.cast(builder, args[0], signature.args[0], types.int64)
        return builder.bitcast(value, ir.DoubleType())

    return types.float64(bits), codegen


@njit_serial
def exp_f32(x):
    """exp of a float32, as float32 (<= 2 ulp from np.exp; +-inf and NaN as np.exp)."""
    y = np.float64(x)
    y = -104.0 if y < -104.0 else y  # these comparisons keep NaN
    y = 89.0 if y > 89.0 else y
    t = y * _LOG2E
    t = t if t == t else 0.0  # NaN: any k will do, the polynomial stays NaN
    # round to nearest through a positive truncation (t >= -150.1 after the clamp); int32,
    # as AVX2 has no vector double -> int64 conversion
    k = np.int32(t + 200.5) - np.int32(200)
    r = y - np.float64(k) * _LN2
    p = 1.0 + r * (1.0 + r * (_C2 + r * (_C3 + r * (_C4 + r * (_C5 + r * (_C6 + r * _C7))))))
    return np.float32(p * _bits_as_float64((np.int64(k) + 1023) << 52))


def exp_like(x):
    """exp in x's own precision inside numba code: exp_f32 for float32, math.exp else."""
    raise NotImplementedError("exp_like is only callable from numba-compiled code")


@overload(exp_like, jit_options={"fastmath": FASTMATH})
def _exp_like(x):
    if x == types.float32:
        return lambda x: exp_f32(x)
    return lambda x: math.exp(x)
