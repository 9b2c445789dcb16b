/* One output row of max / average pooling, used by kernels/pool.pyx (the numba kernel in
 * fastdl/_numba/pool.py is the same algorithm).
 *
 * Channels-last data is reduced straight into the output row, input row by input row,
 * along the contiguous channels. With one channel (NCHW planes) the inner loops run
 * along the row instead: the common 2-wide, stride-2 window reduces each input row's
 * column pairs straight into the output row (two interleaved loads that GCC vectorises;
 * a loop with a run-time stride does not); any other window first reduces its input
 * rows into a scratch line (unit stride, so it vectorises), then each output column
 * reduces its window's cells of that line.
 *
 * Cython builds without -march (wheels must run on any x86-64), so plain C loops only
 * get SSE2; as in conv_small.h, the row function is compiled twice -- generic and with
 * target("avx2,fma") -- and chosen at run time with __builtin_cpu_supports. No
 * fast-math: NaN/Inf propagate (a window holding a NaN gives NaN, as in PyTorch). */
#ifndef FASTDL_POOL_ROWS_H
#define FASTDL_POOL_ROWS_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "simd.h"

/* NaN wins, whichever side it is on; written as a select so the loops vectorise */
#define FASTDL_MAX_NAN(m, v) (((v) > (m)) | ((v) != (v)) ? (v) : (m)) /* simple v only */
#define FASTDL_ADD(m, v) ((m) + (v))

#define INSTANTIATE(REAL, TARGET, SUFFIX)                                                  \
    POOL_ROW(REAL, TARGET, fastdl_max_pool_row_##SUFFIX, FASTDL_MAX_NAN, 0)               \
    POOL_ROW(REAL, TARGET, fastdl_avg_pool_row_##SUFFIX, FASTDL_ADD, 1)

/* dst[ow * channels + c] = the window's reduction for output column ow; the window's
 * input rows are image rows [h_lo, h_hi) (at least one, as the wrapper's padding rule
 * guarantees), its columns ow * sw - pad_left + [0, kw) clipped to the input. line: a
 * scratch of in_w values (used with one channel). Averages are multiplied by scale at the
 * end. */
#define POOL_ROW(REAL, TARGET, NAME, COMBINE, AVERAGE)                                     \
    TARGET static void NAME(const REAL* image, REAL* dst, REAL* line, ptrdiff_t h_lo,     \
                            ptrdiff_t h_hi, ptrdiff_t in_w, ptrdiff_t channels,             \
                            ptrdiff_t out_w, ptrdiff_t kw, ptrdiff_t sw, ptrdiff_t pad_left, \
                            REAL scale)                                                     \
    {                                                                                       \
        if (channels > 1) {                                                                 \
            /* channels-last: straight into dst, along the contiguous channels */           \
            for (ptrdiff_t ih = h_lo; ih < h_hi; ih++) {                                    \
                const REAL* src = image + ih * in_w * channels;                             \
                for (ptrdiff_t ow = 0; ow < out_w; ow++) {                                  \
                    ptrdiff_t w0 = ow * sw - pad_left;                                      \
                    ptrdiff_t lo = w0 > 0 ? w0 : 0, hi = w0 + kw < in_w ? w0 + kw : in_w;   \
                    REAL* cell = dst + ow * channels;                                       \
                    if (ih == h_lo) {                                                       \
                        memcpy(cell, src + lo * channels, (size_t)channels * sizeof(REAL)); \
                        lo++;                                                               \
                    }                                                                       \
                    for (ptrdiff_t iw = lo; iw < hi; iw++) {                                \
                        const REAL* pixel = src + iw * channels;                            \
                        for (ptrdiff_t c = 0; c < channels; c++) cell[c] = COMBINE(cell[c], pixel[c]);\
                    }                                                                       \
                }                                                                           \
            }                                                                               \
            if (AVERAGE)                                                                    \
                for (ptrdiff_t i = 0; i < out_w * channels; i++) dst[i] *= scale;           \
            return;                                                                         \
        }                                                                                   \
        /* one channel (NCHW planes). Every pass streams a single input row: reading two rows\
         * in one loop runs at a third of the speed once the input is out of cache. */      \
        if (kw == 2 && sw == 2 && pad_left == 0) {                                          \
            /* the common window: column pairs of each input row, straight into dst */      \
            const REAL* src = image + h_lo * in_w;                                          \
            for (ptrdiff_t ow = 0; ow < out_w; ow++) dst[ow] = COMBINE(src[2 * ow], src[2 * ow + 1]);\
            for (ptrdiff_t ih = h_lo + 1; ih < h_hi; ih++) {                                \
                src = image + ih * in_w;                                                    \
                        for (ptrdiff_t ow = 0; ow < out_w; ow++) {                                  \
                    const REAL pair = COMBINE(src[2 * ow], src[2 * ow + 1]);                \
                    dst[ow] = COMBINE(dst[ow], pair);                                       \
                }                                                                           \
            }                                                                               \
            if (AVERAGE)                                                                    \
                for (ptrdiff_t ow = 0; ow < out_w; ow++) dst[ow] *= scale;                  \
            return;                                                                         \
        }                                                                                   \
        /* any other window: its rows reduced into line, then each output column along it */\
        const REAL* first = image + h_lo * in_w;                                            \
        for (ptrdiff_t i = 0; i < in_w; i++) line[i] = first[i];                            \
        for (ptrdiff_t ih = h_lo + 1; ih < h_hi; ih++) {                                    \
            const REAL* src = image + ih * in_w;                                            \
            for (ptrdiff_t i = 0; i < in_w; i++) line[i] = COMBINE(line[i], src[i]);        \
        }                                                                                   \
        for (ptrdiff_t ow = 0; ow < out_w; ow++) {                                          \
            ptrdiff_t w0 = ow * sw - pad_left;                                              \
            ptrdiff_t lo = w0 > 0 ? w0 : 0, hi = w0 + kw < in_w ? w0 + kw : in_w;           \
            REAL r = line[lo];                                                              \
            for (ptrdiff_t iw = lo + 1; iw < hi; iw++) r = COMBINE(r, line[iw]);            \
            dst[ow] = AVERAGE ? r * scale : r;                                              \
        }                                                                                   \
    }

INSTANTIATE(float, , f32_generic)
INSTANTIATE(double, , f64_generic)
#ifdef FASTDL_HAVE_AVX2_PATH
INSTANTIATE(float, FASTDL_AVX2_TARGET, f32_avx2)
INSTANTIATE(double, FASTDL_AVX2_TARGET, f64_avx2)
#endif

#undef INSTANTIATE
#undef POOL_ROW

/* the row function for (average?, double?, avx2?) */
#define DISPATCH(REAL, SUFFIX)                                                             \
    static void fastdl_pool_row_##SUFFIX(int avx2, int average, const REAL* image, REAL* dst, \
                                         REAL* line, ptrdiff_t h_lo, ptrdiff_t h_hi,        \
                                         ptrdiff_t in_w, ptrdiff_t channels, ptrdiff_t out_w, \
                                         ptrdiff_t kw, ptrdiff_t sw, ptrdiff_t pad_left,     \
                                         REAL scale)                                        \
    {                                                                                       \
        AVX2_BRANCH(SUFFIX)                                                                 \
        if (average)                                                                        \
            fastdl_avg_pool_row_##SUFFIX##_generic(image, dst, line, h_lo, h_hi, in_w,      \
                                                   channels, out_w, kw, sw, pad_left, scale); \
        else                                                                                \
            fastdl_max_pool_row_##SUFFIX##_generic(image, dst, line, h_lo, h_hi, in_w,      \
                                                   channels, out_w, kw, sw, pad_left, scale); \
    }
#ifdef FASTDL_HAVE_AVX2_PATH
#define AVX2_BRANCH(SUFFIX)                                                                \
    if (avx2) {                                                                             \
        if (average)                                                                        \
            fastdl_avg_pool_row_##SUFFIX##_avx2(image, dst, line, h_lo, h_hi, in_w,         \
                                                channels, out_w, kw, sw, pad_left, scale);  \
        else                                                                                \
            fastdl_max_pool_row_##SUFFIX##_avx2(image, dst, line, h_lo, h_hi, in_w,         \
                                                channels, out_w, kw, sw, pad_left, scale);  \
        return;                                                                             \
    }
#else
#define AVX2_BRANCH(SUFFIX)
#endif
DISPATCH(float, f32)
DISPATCH(double, f64)
#undef DISPATCH
#undef AVX2_BRANCH

#endif
