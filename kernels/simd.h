/* What the C kernel headers share: 32-byte (and, for AVX-512 builds, 64-byte) GCC vector
 * types with unaligned loads and stores, and the run-time choice between the generic build
 * of a loop and its AVX2+FMA (or AVX-512) build.
 *
 * Cython builds without -march (wheels must run on any x86-64), so plain C loops only get
 * SSE2. Each header therefore compiles its hot loops twice -- generic, and with
 * FASTDL_AVX2_TARGET -- and its Cython module picks one once, with
 * fastdl_cpu_has_avx2_fma(). GCC vector extensions keep the code portable: on a non-AVX
 * target a 32-byte vector is simply split into two 16-byte ones. */
#ifndef FASTDL_SIMD_H
#define FASTDL_SIMD_H

#include <string.h>

typedef float fastdl_f32x4 __attribute__((vector_size(16)));
typedef double fastdl_f64x2 __attribute__((vector_size(16)));
typedef float fastdl_f32x8 __attribute__((vector_size(32)));
typedef double fastdl_f64x4 __attribute__((vector_size(32)));
/* only used inside FASTDL_AVX512_TARGET functions (elsewhere they would live in memory) */
typedef float fastdl_f32x16 __attribute__((vector_size(64)));
typedef double fastdl_f64x8 __attribute__((vector_size(64)));

/* unaligned vector load / store of a VEC at ptr (memcpy compiles to one vmovups) */
#define FASTDL_LOADV(VEC, ptr) ({ VEC v_; memcpy(&v_, (ptr), sizeof v_); v_; })
#define FASTDL_STOREV(VEC, ptr, v) do { VEC s_ = (v); memcpy((ptr), &s_, sizeof s_); } while (0)

/* the compiler can build an AVX2+FMA copy of a function (GCC or Clang on x86) */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTDL_HAVE_AVX2_PATH 1
#define FASTDL_AVX2_TARGET __attribute__((target("avx2,fma")))
#define FASTDL_HAVE_AVX512_PATH 1
/* AVX-512 Foundation is all the kernels use; 32 vector registers and 64-byte vectors */
#define FASTDL_AVX512_TARGET __attribute__((target("avx512f,avx2,fma")))
#endif

/* 1 when the AVX2+FMA builds can run on this CPU */
static int fastdl_cpu_has_avx2_fma(void)
{
#ifdef FASTDL_HAVE_AVX2_PATH
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* 1 when the AVX-512 builds can run on this CPU (__builtin_cpu_supports also checks that
 * the OS saves the zmm registers) */
static inline int fastdl_cpu_has_avx512(void)
{
#ifdef FASTDL_HAVE_AVX512_PATH
    return fastdl_cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

#endif
