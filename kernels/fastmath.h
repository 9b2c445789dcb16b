/* Inline, vectorisable exp for the C and Cython kernels (softmax-style loops); the same
 * algorithm as fastdl/_numba/fastmath.py, whose docstring explains it and its accuracy
 * (<= 2 ulp for normal results, exp(0) == 1, exp(-inf) == 0, exp(+inf) == inf,
 * NaN -> NaN, overflow -> inf, gradual underflow to subnormals, then 0).
 *
 * kernels/fastmath.pxd exposes these to Cython as exp32 / exp64; C headers (e.g.
 * attention_rows.h) include this file, so a function built with target("avx2,fma")
 * inlines an AVX2 copy. Branch-free selects only, so loops calling them vectorise.
 *
 * Written to stay correct under setup.py's -fassociative-math (see the numba module's
 * docstring); the 2^k scale goes through integer bit patterns (unions: type punning
 * through a union is defined in GCC and Clang). */
#ifndef FASTDL_FASTMATH_H
#define FASTDL_FASTMATH_H

#include <math.h>
#include <stdint.h>

typedef union { float f; int32_t i; } fastdl_bits32;
typedef union { double f; int64_t i; } fastdl_bits64;

static inline float fastdl_exp32(float x)
{
    /* NaN fails the comparison and becomes the low bound (finite); restored at the end. */
    float xc = x > -104.0f ? x : -104.0f;
    xc = xc < 89.0f ? xc : 89.0f;
    float t = xc * 1.44269504088896341f;
    /* round half away from zero with the sign copied, not selected: GCC turns a select
     * here into two copies of everything below (half the speed) */
    int32_t k = (int32_t)(t + copysignf(0.5f, t));
    /* One double operation: exact enough (|k| <= 150) and nothing to reassociate. */
    float r = (float)((double)xc - (double)k * 0.6931471805599453);
    float p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = (p * r * r + r) + 1.0f;
    int32_t k1 = k >> 1;
    int32_t k2 = k - k1;
    fastdl_bits32 scaled, scale;
    scaled.f = p;
    /* Shifts on unsigned values: left-shifting a negative int is undefined in C. */
    scaled.i = scaled.i + (int32_t)((uint32_t)k1 << 23);
    scale.i = (int32_t)((uint32_t)(k2 + 127) << 23);
    float y = scaled.f * scale.f;
    return x == x ? y : x;
}

/* exp64 from x, its clamped value xc and k = round(xc / ln2) (halves away from zero) */
static inline double fastdl_exp64_reduced(double x, double xc, int32_t k)
{
    /* Cody-Waite; k and 2k keep GCC from factoring k*(LN2_HI + LN2_LO) back together. */
    double r = ((xc - (double)k * 6.93147180369123816490e-01)
                - (double)(k + k) * (1.90821492927058770002e-10 / 2.0));
    double p = 1.0 / 6227020800.0 * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = (p * r * r + r) + 1.0;
    int64_t k1 = k >> 1;
    int64_t k2 = k - k1;
    fastdl_bits64 scaled, scale;
    scaled.f = p;
    scaled.i = scaled.i + (int64_t)((uint64_t)k1 << 52);
    scale.i = (int64_t)((uint64_t)(k2 + 1023) << 52);
    double y = scaled.f * scale.f;
    return x == x ? y : x;
}

static inline double fastdl_exp64(double x)
{
    double xc = x > -746.0 ? x : -746.0;
    xc = xc < 710.0 ? xc : 710.0;
    double t = xc * 1.4426950408889634;
    /* (unlike float, GCC vectorises neither copysign nor round() here without SSE4.1) */
    int32_t k = t > 0.0 ? (int32_t)(t + 0.5) : (int32_t)(t - 0.5);
    return fastdl_exp64_reduced(x, xc, k);
}

/* fastdl_exp64 for functions built with SSE4.1 or later (e.g. target("avx2,fma")): there
 * trunc() is one instruction, and GCC vectorises this without the two copies of the
 * reduction and polynomial that the select in fastdl_exp64 costs (2x faster). The
 * rounding is round()'s: halves away from zero, adding the largest double below 0.5 (so
 * t just below a half does not round up); round() itself would leave a libm call in the
 * scalar remainder loop, which the extensions do not link. Same k as fastdl_exp64
 * except where t + 0.5 rounds up there (t within an ulp below a half): either k is a
 * valid reduction. */
static inline double fastdl_exp64_sse41(double x)
{
    double xc = x > -746.0 ? x : -746.0;
    xc = xc < 710.0 ? xc : 710.0;
    double t = xc * 1.4426950408889634;
    int32_t k = (int32_t)trunc(t + copysign(0.49999999999999994, t));
    return fastdl_exp64_reduced(x, xc, k);
}

#endif
