# Inline, vectorisable exp for Cython kernels (softmax-style loops): exp32 / exp64 are the
# C functions of kernels/fastmath.h (one implementation for Cython and for C headers such
# as attention_rows.h); the same algorithm as fastdl/_numba/fastmath.py, whose docstring
# explains it and its accuracy (<= 2 ulp for normal results, exp(0) == 1, exp(-inf) == 0,
# exp(+inf) == inf, NaN -> NaN, overflow -> inf, gradual underflow to subnormals, then 0).
#
# Use from any kernels/*.pyx (Cython finds .pxd files in the .pyx's own directory):
#     from fastmath cimport exp32, exp64
# Header-only: cimporting these inline functions adds no runtime import. A .pyx outside
# kernels/ needs cythonize(..., include_path=["kernels"]) and "kernels" on the C include
# path (setup.py's include_dirs has it). No kernels/fastmath.pyx may exist: it would
# become the module this .pxd declares (see kernels/fastmath_check.pyx).
# Speed: setup.py builds for baseline x86-64 (SSE2, no -march), so GCC vectorises a loop
# calling exp32 from Cython code only 4 floats wide, with the float64 reduction 2 wide;
# a C header function built with target("avx2,fma") gets 8 (see attention_rows.h).

cdef extern from "fastmath.h" nogil:
    float exp32 "fastdl_exp32"(float x) noexcept
    double exp64 "fastdl_exp64"(double x) noexcept
