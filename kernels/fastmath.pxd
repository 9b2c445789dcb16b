# Inline, vectorisable exp for Cython kernels (softmax-style loops); the same algorithm
# as fastdl/_numba/fastmath.py, whose docstring explains it and its accuracy (<= 2 ulp
# for normal results, exp(0) == 1, exp(-inf) == 0, exp(+inf) == inf, NaN -> NaN,
# overflow -> inf, gradual underflow to subnormals, then 0).
#
# Use from any kernels/*.pyx (Cython finds .pxd files in the .pyx's own directory):
#     from fastmath cimport exp32, exp64
# Header-only: cimporting these inline functions adds no runtime import. A .pyx outside
# kernels/ needs cythonize(..., include_path=["kernels"]); setup.py's include_dirs is
# only the C include path. No kernels/fastmath.pyx may exist: it would become the
# module this .pxd declares (see kernels/fastmath_check.pyx).
# Speed: setup.py builds for baseline x86-64 (SSE2, no -march), so GCC vectorises a loop
# calling exp32 only 4 floats wide, with the float64 reduction 2 wide.
#
# Written to stay correct under setup.py's -fassociative-math (see the numba module's
# docstring); the 2^k scale goes through integer bit patterns (unions: type punning
# through a union is defined in GCC and Clang).
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

cdef union _bits32:
    float f
    int32_t i

cdef union _bits64:
    double f
    int64_t i


cdef inline float exp32(float x) noexcept nogil:
    # NaN fails the comparison and becomes the low bound (finite); restored at the end.
    cdef float xc = x if x > <float>-104.0 else <float>-104.0
    xc = xc if xc < <float>89.0 else <float>89.0
    cdef float t = xc * <float>1.44269504088896341
    cdef int32_t k = <int32_t>(t + <float>0.5) if t > <float>0.0 else <int32_t>(t - <float>0.5)
    # One double operation: exact enough (|k| <= 150) and nothing to reassociate.
    cdef float r = <float>(<double>xc - <double>k * 0.6931471805599453)
    cdef float p = <float>1.9875691500e-4 * r + <float>1.3981999507e-3
    p = p * r + <float>8.3334519073e-3
    p = p * r + <float>4.1665795894e-2
    p = p * r + <float>1.6666665459e-1
    p = p * r + <float>5.0000001201e-1
    p = (p * r * r + r) + <float>1.0
    cdef int32_t k1 = k >> 1
    cdef int32_t k2 = k - k1
    cdef _bits32 scaled, scale
    scaled.f = p
    # Shifts on unsigned values: left-shifting a negative int is undefined in C.
    scaled.i = scaled.i + <int32_t>(<uint32_t>k1 << 23)
    scale.i = <int32_t>(<uint32_t>(k2 + 127) << 23)
    cdef float y = scaled.f * scale.f
    return y if x == x else x


cdef inline double exp64(double x) noexcept nogil:
    cdef double xc = x if x > -746.0 else -746.0
    xc = xc if xc < 710.0 else 710.0
    cdef double t = xc * 1.4426950408889634
    cdef int32_t k = <int32_t>(t + 0.5) if t > 0.0 else <int32_t>(t - 0.5)
    # Cody-Waite; k and 2k keep GCC from factoring k*(LN2_HI + LN2_LO) back together.
    cdef double r = ((xc - <double>k * 6.93147180369123816490e-01)
                     - <double>(k + k) * (1.90821492927058770002e-10 / 2.0))
    cdef double p = 1.0 / 6227020800.0 * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = (p * r * r + r) + 1.0
    cdef int64_t k1 = k >> 1
    cdef int64_t k2 = k - k1
    cdef _bits64 scaled, scale
    scaled.f = p
    scaled.i = scaled.i + <int64_t>(<uint64_t>k1 << 52)
    scale.i = <int64_t>(<uint64_t>(k2 + 1023) << 52)
    cdef double y = scaled.f * scale.f
    return y if x == x else x
