/* What the C kernel headers share: 32-byte GCC vector types with unaligned loads and
 * stores, and the run-time choice between the generic build of a loop and its AVX2+FMA
 * build.
 *
 * Cython builds without -march (wheels must run on any x86-64), so plain C loops only get
 * SSE2. Each header therefore compiles its hot loops twice -- generic, and with
 * FASTDL_AVX2_TARGET -- and its Cython module picks one once, with
 * fastdl_cpu_has_avx2_fma(). GCC vector extensions keep the code portable: on a non-AVX
 * target a 32-byte vector is simply split into two 16-byte ones. */
#ifndef FASTDL_SIMD_H
#define FASTDL_SIMD_H

#include <string.h>

typedef float fastdl_f32x8 __attribute__((vector_size(32)));
typedef double fastdl_f64x4 __attribute__((vector_size(32)));

/* unaligned vector load / store of a VEC at ptr (memcpy compiles to one vmovups) */
#define FASTDL_LOADV(VEC, ptr) ({ VEC v_; memcpy(&v_, (ptr), sizeof v_); v_; })
#define FASTDL_STOREV(VEC, ptr, v) do { VEC s_ = (v); memcpy((ptr), &s_, sizeof s_); } while (0)

/* the compiler can build an AVX2+FMA copy of a function (GCC or Clang on x86) */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTDL_HAVE_AVX2_PATH 1
#define FASTDL_AVX2_TARGET __attribute__((target("avx2,fma")))
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

#endif
