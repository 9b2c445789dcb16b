/* Batch-norm hot loops for kernels/norm.pyx: shifted sums (statistics) and the
 * per-channel scale/shift, on float32 and float64.
 *
 * Cython builds without -march (wheels must run on any x86-64), so plain C loops only
 * get SSE2. As kernels/conv_small.h does, this header compiles every loop twice --
 * generic, and with target("avx2,fma") -- and the caller picks one at run time
 * (simd.h). GCC vector extensions keep the code portable: on a non-AVX
 * target a 32-byte vector is split into two 16-byte ones. No fast-math: NaN/Inf
 * propagate. */
#ifndef FASTDL_NORM_SIMD_H
#define FASTDL_NORM_SIMD_H

#include <stddef.h>
#include <string.h>

#include "simd.h"

/* the columns scale/shift walks rows in runs of this many bytes (as numba's RUN_BYTES) */
#define FASTDL_NORM_RUN_BYTES 256

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float fastdl_norm_f32x4 __attribute__((vector_size(16)));

/* four values at p, widened to float64 (memcpy compiles to one unaligned load) */
#define FASTDL_NORM_LOAD4_F32(p)                                                          \
    ({ fastdl_norm_f32x4 v_; memcpy(&v_, (p), sizeof v_);                                 \
       __builtin_convertvector(v_, fastdl_f64x4); })
#define FASTDL_NORM_LOAD4_F64(p) ({ fastdl_f64x4 v_; memcpy(&v_, (p), sizeof v_); v_; })
#define FASTDL_NORM_STORE4(p, v) do { fastdl_f64x4 s_ = (v); memcpy((p), &s_, sizeof s_); } while (0)

#define TARGET
#define REAL float
#define LOAD4 FASTDL_NORM_LOAD4_F32
#define NAME(loop) fastdl_norm_##loop##_f32_generic
#define VEC fastdl_f32x8
#define LANES 8
#include "norm_simd_body.h"
#undef REAL
#undef LOAD4
#undef NAME
#undef VEC
#undef LANES
#define REAL double
#define LOAD4 FASTDL_NORM_LOAD4_F64
#define NAME(loop) fastdl_norm_##loop##_f64_generic
#define VEC fastdl_f64x4
#define LANES 4
#include "norm_simd_body.h"
#undef REAL
#undef LOAD4
#undef NAME
#undef VEC
#undef LANES
#undef TARGET

#ifdef FASTDL_HAVE_AVX2_PATH
#define TARGET FASTDL_AVX2_TARGET
#define REAL float
#define LOAD4 FASTDL_NORM_LOAD4_F32
#define NAME(loop) fastdl_norm_##loop##_f32_avx2
#define VEC fastdl_f32x8
#define LANES 8
#include "norm_simd_body.h"
#undef REAL
#undef LOAD4
#undef NAME
#undef VEC
#undef LANES
#define REAL double
#define LOAD4 FASTDL_NORM_LOAD4_F64
#define NAME(loop) fastdl_norm_##loop##_f64_avx2
#define VEC fastdl_f64x4
#define LANES 4
#include "norm_simd_body.h"
#undef REAL
#undef LOAD4
#undef NAME
#undef VEC
#undef LANES
#undef TARGET
#endif

#pragma GCC diagnostic pop

/* fastdl_norm_<loop>_<dtype>(avx2, ...): the AVX2 build when avx2 is set, else the
 * generic one. */
#ifdef FASTDL_HAVE_AVX2_PATH
#define FASTDL_NORM_PICK(loop, avx2) ((avx2) ? loop##_avx2 : loop##_generic)
#else
#define FASTDL_NORM_PICK(loop, avx2) loop##_generic
#endif

static void fastdl_norm_shifted_sums_f32(int avx2, const float* x, ptrdiff_t n, double shift,
                                         double* sums)
{
    FASTDL_NORM_PICK(fastdl_norm_shifted_sums_f32, avx2)(x, n, shift, sums);
}

static void fastdl_norm_shifted_sums_f64(int avx2, const double* x, ptrdiff_t n, double shift,
                                         double* sums)
{
    FASTDL_NORM_PICK(fastdl_norm_shifted_sums_f64, avx2)(x, n, shift, sums);
}

static void fastdl_norm_column_sums_f32(int avx2, const float* x, ptrdiff_t row_stride,
                                        ptrdiff_t rows, ptrdiff_t width, double* shift,
                                        double* sum1, double* sum2)
{
    FASTDL_NORM_PICK(fastdl_norm_column_sums_f32, avx2)(x, row_stride, rows, width, shift,
                                                        sum1, sum2);
}

static void fastdl_norm_column_sums_f64(int avx2, const double* x, ptrdiff_t row_stride,
                                        ptrdiff_t rows, ptrdiff_t width, double* shift,
                                        double* sum1, double* sum2)
{
    FASTDL_NORM_PICK(fastdl_norm_column_sums_f64, avx2)(x, row_stride, rows, width, shift,
                                                        sum1, sum2);
}

static void fastdl_norm_affine_f32(int avx2, const float* x, float* out, ptrdiff_t n,
                                   float center, float scale, float shift)
{
    FASTDL_NORM_PICK(fastdl_norm_affine_f32, avx2)(x, out, n, center, scale, shift);
}

static void fastdl_norm_affine_f64(int avx2, const double* x, double* out, ptrdiff_t n,
                                   double center, double scale, double shift)
{
    FASTDL_NORM_PICK(fastdl_norm_affine_f64, avx2)(x, out, n, center, scale, shift);
}

static void fastdl_norm_affine_columns_f32(int avx2, const float* x, float* out,
                                           ptrdiff_t rows, ptrdiff_t width, const float* center,
                                           const float* scale, const float* shift)
{
    FASTDL_NORM_PICK(fastdl_norm_affine_columns_f32, avx2)(x, out, rows, width, center, scale,
                                                           shift);
}

static void fastdl_norm_affine_columns_f64(int avx2, const double* x, double* out,
                                           ptrdiff_t rows, ptrdiff_t width,
                                           const double* center, const double* scale,
                                           const double* shift)
{
    FASTDL_NORM_PICK(fastdl_norm_affine_columns_f64, avx2)(x, out, rows, width, center, scale,
                                                           shift);
}

#endif
