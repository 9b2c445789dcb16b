/* Register-blocked direct conv for a short reduction (C_in/groups * taps small) and
 * any number of output channels, used by kernels/conv.pyx's SMALL path (a grouped conv:
 * one row call per group, on the group's input channels, weight columns and output
 * channels; the weight rows stay C_out apart, see w_stride). The output is
 * written channels-last or channels-first (any pixel and channel strides), straight from
 * the register block.
 *
 * Cython builds without -march (wheels must run on any x86-64), so plain C loops only
 * get SSE2. This header compiles the same kernel three times -- generic, with
 * target("avx2,fma") and with AVX-512 -- and conv.pyx picks one at run time with
 * __builtin_cpu_supports. GCC vector extensions keep the code portable. The generic build
 * uses 16-byte (SSE2) vectors: with 32-byte ones, which GCC splits in two, its register
 * block spilled (64->64 3x3, one thread: 0.7 GFLOP/s, against 34 now). No fast-math:
 * NaN/Inf propagate.
 *
 * Block shapes (pixels x vectors of channels), measured on Zen4 (1 thread, fp32; AVX-512
 * FMAs there are double-pumped, so the gain is from 32 registers, not width): AVX2 has
 * 16 vector registers: 6 x 2 (12 accumulators, 2 weights, 1 broadcast). AVX-512 has 32:
 * 4 x 4, 8 x 2, 8 x 1 -- beat 6 x 4 / 12 x 2 / 12 x 1 by 5-15% (64->64 3x3: 2.00 vs 2.13
 * ms, 3->16 5x5 N4: 1.36 vs 1.60 ms) and 3 x 4 / 6 x 2 by more. Channels-first output
 * uses LANES-pixel blocks (the transpose is square): 16 x 1 fp32, 8 x 1 fp64 (8 x 2 and
 * 8 x 3 spill: 1.5-2x slower); they win on short reductions only, so from
 * _conv_plan.FIRST_TILE_MIN_REDUCTION on conv.pyx computes a row tile channels-last into
 * a buffer and moves it out with fastdl_transpose_* (the in-register transpose on its own,
 * also behind the layout changes). */
#ifndef FASTDL_CONV_SMALL_H
#define FASTDL_CONV_SMALL_H

#include <stddef.h>
#include <string.h>

#include "simd.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

/* generic (SSE2, 16-byte vectors) and AVX2 (32-byte): 16 vector registers */
#define P_WIDE 0
#define P_PAIR 6
#define P_ONE 6
#define TARGET
#define REAL float
#define REAL_INDEX int
#define VEC fastdl_f32x4
#define LANES 4
#define NB_FIRST 3
#define ROW_FN fastdl_conv_small_row_f32_generic
#define TRANSPOSE_FN fastdl_transpose_f32_generic
#define DEPTHWISE_FN fastdl_conv_depthwise_row_f32_generic
#include "conv_small_body.h"
#undef REAL
#undef REAL_INDEX
#undef VEC
#undef LANES
#undef NB_FIRST
#undef QUARTER_VEC
#undef QUARTER_LANES
#undef ROW_FN
#undef TRANSPOSE_FN
#undef DEPTHWISE_FN
#define REAL double
#define REAL_INDEX long long
#define VEC fastdl_f64x2
#define LANES 2
#define NB_FIRST 6
#define ROW_FN fastdl_conv_small_row_f64_generic
#define TRANSPOSE_FN fastdl_transpose_f64_generic
#define DEPTHWISE_FN fastdl_conv_depthwise_row_f64_generic
#include "conv_small_body.h"
#undef REAL
#undef REAL_INDEX
#undef VEC
#undef LANES
#undef NB_FIRST
#undef QUARTER_VEC
#undef QUARTER_LANES
#undef ROW_FN
#undef TRANSPOSE_FN
#undef DEPTHWISE_FN
#undef TARGET

#ifdef FASTDL_HAVE_AVX2_PATH
#define TARGET FASTDL_AVX2_TARGET
#define REAL float
#define REAL_INDEX int
#define VEC fastdl_f32x8
#define LANES 8
#define NB_FIRST 1
#define QUARTER_VEC fastdl_f32x4 /* (a half vector: only as the leftover block) */
#define QUARTER_LANES 4
#define ROW_FN fastdl_conv_small_row_f32_avx2
#define TRANSPOSE_FN fastdl_transpose_f32_avx2
#define DEPTHWISE_FN fastdl_conv_depthwise_row_f32_avx2
#include "conv_small_body.h"
#undef REAL
#undef REAL_INDEX
#undef VEC
#undef LANES
#undef NB_FIRST
#undef QUARTER_VEC
#undef QUARTER_LANES
#undef ROW_FN
#undef TRANSPOSE_FN
#undef DEPTHWISE_FN
#define REAL double
#define REAL_INDEX long long
#define VEC fastdl_f64x4
#define LANES 4
#define NB_FIRST 3
#define QUARTER_VEC fastdl_f64x2
#define QUARTER_LANES 2
#define ROW_FN fastdl_conv_small_row_f64_avx2
#define TRANSPOSE_FN fastdl_transpose_f64_avx2
#define DEPTHWISE_FN fastdl_conv_depthwise_row_f64_avx2
#include "conv_small_body.h"
#undef REAL
#undef REAL_INDEX
#undef VEC
#undef LANES
#undef NB_FIRST
#undef QUARTER_VEC
#undef QUARTER_LANES
#undef ROW_FN
#undef TRANSPOSE_FN
#undef DEPTHWISE_FN
#undef TARGET
#endif
#undef P_WIDE
#undef P_PAIR
#undef P_ONE

/* AVX-512: 32 vector registers */
#ifdef FASTDL_HAVE_AVX512_PATH
#define TARGET FASTDL_AVX512_TARGET
#define P_WIDE 4
#define P_PAIR 8
#define P_ONE 8
#define REAL float
#define REAL_INDEX int
#define VEC fastdl_f32x16
#define LANES 16
#define NB_FIRST 1
#define HALF_VEC fastdl_f32x8
#define HALF_LANES 8
#define QUARTER_VEC fastdl_f32x4
#define QUARTER_LANES 4
#define ROW_FN fastdl_conv_small_row_f32_avx512
#define TRANSPOSE_FN fastdl_transpose_f32_avx512
#define DEPTHWISE_FN fastdl_conv_depthwise_row_f32_avx512
#include "conv_small_body.h"
#undef REAL
#undef REAL_INDEX
#undef VEC
#undef LANES
#undef NB_FIRST
#undef QUARTER_VEC
#undef QUARTER_LANES
#undef HALF_VEC
#undef HALF_LANES
#undef ROW_FN
#undef TRANSPOSE_FN
#undef DEPTHWISE_FN
#define REAL double
#define REAL_INDEX long long
#define VEC fastdl_f64x8
#define LANES 8
#define NB_FIRST 1
#define HALF_VEC fastdl_f64x4
#define HALF_LANES 4
#define QUARTER_VEC fastdl_f64x2
#define QUARTER_LANES 2
#define ROW_FN fastdl_conv_small_row_f64_avx512
#define TRANSPOSE_FN fastdl_transpose_f64_avx512
#define DEPTHWISE_FN fastdl_conv_depthwise_row_f64_avx512
#include "conv_small_body.h"
#undef REAL
#undef REAL_INDEX
#undef VEC
#undef LANES
#undef NB_FIRST
#undef QUARTER_VEC
#undef QUARTER_LANES
#undef HALF_VEC
#undef HALF_LANES
#undef ROW_FN
#undef TRANSPOSE_FN
#undef DEPTHWISE_FN
#undef TARGET
#undef P_WIDE
#undef P_PAIR
#undef P_ONE
#endif

#pragma GCC diagnostic pop

/* Which build runs: the value of fastdl_conv_small_best_isa() or a lower one. */
enum { FASTDL_ISA_GENERIC = 0, FASTDL_ISA_AVX2 = 1, FASTDL_ISA_AVX512 = 2 };

static int fastdl_conv_small_best_isa(void)
{
    if (fastdl_cpu_has_avx512()) return FASTDL_ISA_AVX512;
    if (fastdl_cpu_has_avx2_fma()) return FASTDL_ISA_AVX2;
    return FASTDL_ISA_GENERIC;
}

/* `call; return;` when the build isa is selected and compiled in */
#ifdef FASTDL_HAVE_AVX512_PATH
#define FASTDL_IF_AVX512(call) if (isa == FASTDL_ISA_AVX512) { call; return; }
#else
#define FASTDL_IF_AVX512(call)
#endif
#ifdef FASTDL_HAVE_AVX2_PATH
#define FASTDL_IF_AVX2(call) if (isa == FASTDL_ISA_AVX2) { call; return; }
#else
#define FASTDL_IF_AVX2(call)
#endif
/* the body of a dispatcher: fn's build for isa (fn_avx512, fn_avx2, else fn_generic) */
#define FASTDL_CALL_BUILD(fn, args)                                                           \
    FASTDL_IF_AVX512(fn##_avx512 args)                                                        \
    FASTDL_IF_AVX2(fn##_avx2 args)                                                            \
    fn##_generic args;

/* One output row (out_w pixels x out_c channels). x_row: the row's first input pixel;
 * pixel_step: elements between consecutive output pixels' inputs; koff[k]: offset of
 * reduction element k (tap, channel) from a pixel's input; w: (k_total, out_c) weights
 * with rows w_stride apart (a grouped conv passes one group's columns of the (k_total,
 * C_out) weights). Output (pixel p, channel c) is
 * out_row[p * pix_stride + c * chan_stride]. */
#define FASTDL_CONV_SMALL_DISPATCH(REAL, SUFFIX)                                              \
    static void fastdl_conv_small_row_##SUFFIX(                                               \
        int isa, const REAL* x_row, const REAL* w, const REAL* bias, REAL* out_row,           \
        ptrdiff_t out_w, ptrdiff_t out_c, ptrdiff_t pixel_step, const ptrdiff_t* koff,        \
        ptrdiff_t k_total, ptrdiff_t w_stride, ptrdiff_t pix_stride, ptrdiff_t chan_stride)   \
    {                                                                                         \
        FASTDL_CALL_BUILD(fastdl_conv_small_row_##SUFFIX,                                     \
                          (x_row, w, bias, out_row, out_w, out_c, pixel_step, koff, k_total,  \
                           w_stride, pix_stride, chan_stride))                                \
    }
FASTDL_CONV_SMALL_DISPATCH(float, f32)
FASTDL_CONV_SMALL_DISPATCH(double, f64)

/* dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows, j < cols (see
 * TRANSPOSE_FN in conv_small_body.h), in the build isa. */
#define FASTDL_TRANSPOSE_DISPATCH(REAL, SUFFIX)                                               \
    static void fastdl_transpose_##SUFFIX(int isa, const REAL* src, ptrdiff_t src_stride,     \
                                          REAL* dst, ptrdiff_t dst_stride, ptrdiff_t rows,    \
                                          ptrdiff_t cols)                                     \
    {                                                                                         \
        FASTDL_CALL_BUILD(fastdl_transpose_##SUFFIX,                                          \
                          (src, src_stride, dst, dst_stride, rows, cols))                     \
    }
FASTDL_TRANSPOSE_DISPATCH(float, f32)
FASTDL_TRANSPOSE_DISPATCH(double, f64)

/* One output row of a depthwise conv (DEPTHWISE_FN in conv_small_body.h), in the build isa. */
#define FASTDL_DEPTHWISE_DISPATCH(REAL, SUFFIX)                                               \
    static void fastdl_conv_depthwise_row_##SUFFIX(                                           \
        int isa, const REAL* x_row, const REAL* w, const REAL* bias, REAL* out_row,           \
        ptrdiff_t out_w, ptrdiff_t channels, ptrdiff_t pixel_step, const ptrdiff_t* toff,     \
        const ptrdiff_t* wtap, ptrdiff_t taps)                                                \
    {                                                                                         \
        FASTDL_CALL_BUILD(fastdl_conv_depthwise_row_##SUFFIX,                                 \
                          (x_row, w, bias, out_row, out_w, channels, pixel_step, toff, wtap,  \
                           taps))                                                             \
    }
FASTDL_DEPTHWISE_DISPATCH(float, f32)
FASTDL_DEPTHWISE_DISPATCH(double, f64)

#endif
