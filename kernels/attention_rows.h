/* One output row of sliding-window attention, used by kernels/attention.pyx; the numba
 * kernel (fastdl/_numba/attention.py) is the same algorithm, described in its docstring:
 * the scores of every window offset are computed along the row (vectorised over output
 * columns), then the masked softmax and the value sum, fused; nothing window-sized is
 * materialised, and window offsets in the padding are never visited.
 *
 * The input is read in either layout: channels-first rows are used in place; a
 * channels-last row is transposed into the thread's scratch, channel-major (into a ring
 * of KH rows, so each input row is transposed once per run of consecutive output rows),
 * so the score loops always run along unit-stride rows.
 *
 * Cython builds without -march (wheels must run on any x86-64), so plain C loops only
 * get SSE2; as in conv_small.h, the row function is compiled twice -- generic and with
 * target("avx2,fma") -- and chosen at run time with __builtin_cpu_supports. The exp is
 * kernels/fastmath.h's, inlined into each build. No fast-math: NaN/Inf propagate. */
#ifndef FASTDL_ATTENTION_ROWS_H
#define FASTDL_ATTENTION_ROWS_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "fastmath.h"
#include "simd.h"

/* What is fixed for one call: sizes, the input's strides (elements between rows, columns
 * and channels of one image) and the output's (between columns and channels of one
 * row), and col_ranges[2b], col_ranges[2b+1]: the output columns [first, stop) whose
 * window column offset b lands inside the input. */
typedef struct {
    ptrdiff_t in_h, in_w, in_c, out_w, out_c, k_h, k_w, sw, pad_left;
    ptrdiff_t x_row_step, x_col_step, x_chan_step, out_col_step, out_chan_step;
    const ptrdiff_t* col_ranges;
} fastdl_attention_geometry;

/* The scratch one row needs: transposed input rows, the scores, then peak, total and
 * weighted sums (out_c * out_w each). */
static ptrdiff_t fastdl_attention_scratch_len(const fastdl_attention_geometry* g)
{
    return g->k_h * g->in_c * g->in_w + g->k_h * g->k_w * g->out_c * g->out_w
           + 3 * g->out_c * g->out_w;
}

/* image: the row's image (image_index in the batch); keys: its (KH, KW, C_in, C_out)
 * keys; value: (KH, KW, C_out); out_row: output column 0, channel 0 of the row; top: the
 * input row of window offset 0 (negative: masked padding); slot_holds: the thread's KH
 * ring tags (n * in_h + h of the row in each scratch slot; -1 before the first call). */
#define ATTENTION_ROW(REAL, TARGET, NAME, EXP)                                              \
    TARGET static void NAME(const fastdl_attention_geometry* g, const REAL* image,         \
                            const REAL* keys, const REAL* value, REAL* out_row,             \
                            REAL* scratch, ptrdiff_t* slot_holds, ptrdiff_t image_index,    \
                            ptrdiff_t top)                                                  \
    {                                                                                       \
        const ptrdiff_t in_w = g->in_w, in_c = g->in_c, out_w = g->out_w;                   \
        const ptrdiff_t out_c = g->out_c, k_w = g->k_w, sw = g->sw;                         \
        const ptrdiff_t a_lo = top < 0 ? -top : 0;                                          \
        const ptrdiff_t a_hi = g->in_h - top < g->k_h ? g->in_h - top : g->k_h;            \
        REAL* rows_t = scratch;                                                             \
        REAL* scores = rows_t + g->k_h * in_c * in_w;                                       \
        REAL* peak = scores + g->k_h * k_w * out_c * out_w;                                 \
        REAL* total = peak + out_c * out_w;                                                 \
        REAL* weighted = total + out_c * out_w;                                             \
        /* rows[a] + c * chan_step: input row top + a, channel c, unit stride */            \
        const REAL* rows[g->k_h];                                                           \
        ptrdiff_t chan_step;                                                                \
        if (g->x_col_step == 1) {                                                           \
            chan_step = g->x_chan_step;                                                     \
            for (ptrdiff_t a = a_lo; a < a_hi; a++) rows[a] = image + (top + a) * g->x_row_step; \
        } else {                                                                            \
            /* channels-last (unit channel step): transposed into a ring, input row h in   \
             * slot h % KH, so the next output row copies only its new input rows */        \
            chan_step = in_w;                                                               \
            for (ptrdiff_t a = a_lo; a < a_hi; a++) {                                       \
                const ptrdiff_t h = top + a, slot = h % g->k_h;                             \
                REAL* dst = rows_t + slot * in_c * in_w;                                    \
                rows[a] = dst;                                                              \
                if (slot_holds[slot] == image_index * g->in_h + h) continue;                \
                slot_holds[slot] = image_index * g->in_h + h;                               \
                const REAL* src = image + h * g->x_row_step;                                \
                for (ptrdiff_t w = 0; w < in_w; w++)                                        \
                    for (ptrdiff_t c = 0; c < in_c; c++)                                    \
                        dst[c * in_w + w] = src[w * g->x_col_step + c];                     \
            }                                                                               \
        }                                                                                   \
        for (ptrdiff_t j = 0; j < out_c * out_w; j++) peak[j] = -(REAL)INFINITY;            \
        for (ptrdiff_t a = a_lo; a < a_hi; a++) {                                           \
            for (ptrdiff_t b = 0; b < k_w; b++) {                                           \
                const ptrdiff_t j_lo = g->col_ranges[2 * b];                                \
                const ptrdiff_t count = g->col_ranges[2 * b + 1] - j_lo;                    \
                const ptrdiff_t tap = a * k_w + b;                                          \
                const REAL* row0 = rows[a] + j_lo * sw + b - g->pad_left;                   \
                for (ptrdiff_t o = 0; o < out_c; o++) {                                     \
                    REAL* restrict s = scores + (tap * out_c + o) * out_w + j_lo;           \
                    const REAL* kc = keys + tap * in_c * out_c + o;                         \
                    for (ptrdiff_t j = 0; j < count; j++) s[j] = 0;                         \
                    ptrdiff_t c = 0;                                                        \
                    if (sw == 1) {                                                          \
                        /* four channels per pass over the row: 5 loads and 1 store per  \
                         * 4 multiply-adds instead of 12 memory operations */              \
                        for (; c + 4 <= in_c; c += 4) {                                     \
                            const REAL k0 = kc[c * out_c], k1 = kc[(c + 1) * out_c];        \
                            const REAL k2 = kc[(c + 2) * out_c], k3 = kc[(c + 3) * out_c];  \
                            const REAL* restrict l0 = row0 + c * chan_step;                 \
                            const REAL* restrict l1 = l0 + chan_step;                       \
                            const REAL* restrict l2 = l1 + chan_step;                       \
                            const REAL* restrict l3 = l2 + chan_step;                       \
                            for (ptrdiff_t j = 0; j < count; j++)                           \
                                s[j] += l0[j] * k0 + l1[j] * k1 + l2[j] * k2 + l3[j] * k3;  \
                        }                                                                   \
                        if (in_c - c == 3) { /* e.g. RGB input: one pass, not three */      \
                            const REAL k0 = kc[c * out_c], k1 = kc[(c + 1) * out_c];        \
                            const REAL k2 = kc[(c + 2) * out_c];                            \
                            const REAL* restrict l0 = row0 + c * chan_step;                 \
                            const REAL* restrict l1 = l0 + chan_step;                       \
                            const REAL* restrict l2 = l1 + chan_step;                       \
                            for (ptrdiff_t j = 0; j < count; j++)                           \
                                s[j] += l0[j] * k0 + l1[j] * k1 + l2[j] * k2;               \
                            c += 3;                                                         \
                        }                                                                   \
                        for (; c < in_c; c++) {                                             \
                            const REAL k = kc[c * out_c];                                   \
                            const REAL* restrict line = row0 + c * chan_step;               \
                            for (ptrdiff_t j = 0; j < count; j++) s[j] += line[j] * k;      \
                        }                                                                   \
                    } else {                                                                \
                        for (; c < in_c; c++) {                                             \
                            const REAL k = kc[c * out_c];                                   \
                            const REAL* restrict line = row0 + c * chan_step;               \
                            for (ptrdiff_t j = 0; j < count; j++) s[j] += line[j * sw] * k; \
                        }                                                                   \
                    }                                                                       \
                    REAL* restrict pk = peak + o * out_w + j_lo;                            \
                    /* NaN needs no care: exp(NaN - peak) makes the output NaN */           \
                    for (ptrdiff_t j = 0; j < count; j++) pk[j] = s[j] > pk[j] ? s[j] : pk[j]; \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
        /* softmax-weighted values: sum(e * v) / sum(e), e = exp(s - peak) <= 1 */          \
        for (ptrdiff_t j = 0; j < out_c * out_w; j++) total[j] = weighted[j] = 0;           \
        for (ptrdiff_t a = a_lo; a < a_hi; a++) {                                           \
            for (ptrdiff_t b = 0; b < k_w; b++) {                                           \
                const ptrdiff_t j_lo = g->col_ranges[2 * b];                                \
                const ptrdiff_t count = g->col_ranges[2 * b + 1] - j_lo;                    \
                const ptrdiff_t tap = a * k_w + b;                                          \
                for (ptrdiff_t o = 0; o < out_c; o++) {                                     \
                    const REAL v = value[tap * out_c + o];                                  \
                    const REAL* restrict s = scores + (tap * out_c + o) * out_w + j_lo;     \
                    const REAL* restrict pk = peak + o * out_w + j_lo;                      \
                    REAL* restrict tot = total + o * out_w + j_lo;                          \
                    REAL* restrict wsum = weighted + o * out_w + j_lo;                      \
                    for (ptrdiff_t j = 0; j < count; j++) {                                 \
                        const REAL e = EXP(s[j] - pk[j]);                                   \
                        tot[j] += e;                                                        \
                        wsum[j] += e * v;                                                   \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
        for (ptrdiff_t o = 0; o < out_c; o++) {                                             \
            REAL* dst = out_row + o * g->out_chan_step;                                     \
            const REAL* tot = total + o * out_w;                                            \
            const REAL* wsum = weighted + o * out_w;                                        \
            for (ptrdiff_t j = 0; j < out_w; j++) dst[j * g->out_col_step] = wsum[j] / tot[j]; \
        }                                                                                   \
    }

ATTENTION_ROW(float, , fastdl_attention_row_f32_generic, fastdl_exp32)
ATTENTION_ROW(double, , fastdl_attention_row_f64_generic, fastdl_exp64)
#ifdef FASTDL_HAVE_AVX2_PATH
ATTENTION_ROW(float, FASTDL_AVX2_TARGET, fastdl_attention_row_f32_avx2, fastdl_exp32)
ATTENTION_ROW(double, FASTDL_AVX2_TARGET, fastdl_attention_row_f64_avx2,
              fastdl_exp64_sse41)
#endif
#undef ATTENTION_ROW

#ifdef FASTDL_HAVE_AVX2_PATH
#define FASTDL_ATTENTION_DISPATCH(SUFFIX)                                                   \
    if (avx2) {                                                                             \
        fastdl_attention_row_##SUFFIX##_avx2(g, image, keys, value, out_row, scratch,      \
                                             slot_holds, image_index, top);                \
        return;                                                                             \
    }
#else
#define FASTDL_ATTENTION_DISPATCH(SUFFIX)
#endif

static void fastdl_attention_row_f32(int avx2, const fastdl_attention_geometry* g,
                                     const float* image, const float* keys, const float* value,
                                     float* out_row, float* scratch, ptrdiff_t* slot_holds,
                                     ptrdiff_t image_index, ptrdiff_t top)
{
    FASTDL_ATTENTION_DISPATCH(f32)
    fastdl_attention_row_f32_generic(g, image, keys, value, out_row, scratch, slot_holds,
                                     image_index, top);
}

static void fastdl_attention_row_f64(int avx2, const fastdl_attention_geometry* g,
                                     const double* image, const double* keys,
                                     const double* value, double* out_row, double* scratch,
                                     ptrdiff_t* slot_holds, ptrdiff_t image_index,
                                     ptrdiff_t top)
{
    FASTDL_ATTENTION_DISPATCH(f64)
    fastdl_attention_row_f64_generic(g, image, keys, value, out_row, scratch, slot_holds,
                                     image_index, top);
}
#undef FASTDL_ATTENTION_DISPATCH

#endif
