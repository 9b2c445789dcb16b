/* Register-blocked direct conv for a short reduction (C_in/groups * taps small, groups 1)
 * any number of output channels, used by kernels/conv.pyx's SMALL path.
 *
 * Cython builds without -march (wheels must run on any x86-64), so plain C loops only
 * get SSE2. This header compiles the same kernel twice -- generic, and with
 * target("avx2,fma") -- and picks one at run time with __builtin_cpu_supports. GCC
 * vector extensions keep the code portable: on a non-AVX target a 32-byte vector is
 * simply split into two 16-byte ones. No fast-math: NaN/Inf propagate. */
#ifndef FASTDL_CONV_SMALL_H
#define FASTDL_CONV_SMALL_H

#include <stddef.h>
#include <string.h>

#include "simd.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

#define TARGET
#define REAL float
#define VEC fastdl_f32x8
#define LANES 8
#define ROW_FN fastdl_conv_small_row_f32_generic
#include "conv_small_body.h"
#undef REAL
#undef VEC
#undef LANES
#undef ROW_FN
#define REAL double
#define VEC fastdl_f64x4
#define LANES 4
#define ROW_FN fastdl_conv_small_row_f64_generic
#include "conv_small_body.h"
#undef REAL
#undef VEC
#undef LANES
#undef ROW_FN
#undef TARGET

#ifdef FASTDL_HAVE_AVX2_PATH
#define TARGET FASTDL_AVX2_TARGET
#define REAL float
#define VEC fastdl_f32x8
#define LANES 8
#define ROW_FN fastdl_conv_small_row_f32_avx2
#include "conv_small_body.h"
#undef REAL
#undef VEC
#undef LANES
#undef ROW_FN
#define REAL double
#define VEC fastdl_f64x4
#define LANES 4
#define ROW_FN fastdl_conv_small_row_f64_avx2
#include "conv_small_body.h"
#undef REAL
#undef VEC
#undef LANES
#undef ROW_FN
#undef TARGET
#endif

#pragma GCC diagnostic pop


/* One output row (out_w pixels x out_c channels). x_row: the
 * row's first input pixel; pixel_step: elements between consecutive output pixels'
 * inputs; koff[k]: offset of reduction element k (tap, channel) from a pixel's input. */
static void fastdl_conv_small_row_f32(int avx2, const float* x_row, const float* w,
                                      const float* bias, float* out_row, ptrdiff_t out_w,
                                      ptrdiff_t out_c, ptrdiff_t pixel_step, const ptrdiff_t* koff,
                                      ptrdiff_t k_total)
{
#ifdef FASTDL_HAVE_AVX2_PATH
    if (avx2) {
        fastdl_conv_small_row_f32_avx2(x_row, w, bias, out_row, out_w, out_c, pixel_step,
                                       koff, k_total);
        return;
    }
#endif
    fastdl_conv_small_row_f32_generic(x_row, w, bias, out_row, out_w, out_c, pixel_step,
                                      koff, k_total);
}

static void fastdl_conv_small_row_f64(int avx2, const double* x_row, const double* w,
                                      const double* bias, double* out_row, ptrdiff_t out_w,
                                      ptrdiff_t out_c, ptrdiff_t pixel_step, const ptrdiff_t* koff,
                                      ptrdiff_t k_total)
{
#ifdef FASTDL_HAVE_AVX2_PATH
    if (avx2) {
        fastdl_conv_small_row_f64_avx2(x_row, w, bias, out_row, out_w, out_c, pixel_step,
                                       koff, k_total);
        return;
    }
#endif
    fastdl_conv_small_row_f64_generic(x_row, w, bias, out_row, out_w, out_c, pixel_step,
                                      koff, k_total);
}

#endif
