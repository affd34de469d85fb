/* fastprop SIMD plumbing shared by the C loops (fp_optim.h, fp_layer.h): the
 * `#pragma omp simd` spellings and the run-time ISA dispatch. */
#ifndef FASTPROP_FP_SIMD_H
#define FASTPROP_FP_SIMD_H

#if (defined(__GNUC__) || defined(__clang__)) && defined(FP_OMP_SIMD)
#define FP_SIMD _Pragma("omp simd")
#define FP_SIMD_SUM _Pragma("omp simd reduction(+:s)")
#else
#define FP_SIMD
#define FP_SIMD_SUM
#endif

/* Run-time dispatch: the wheel's baseline is SSE2 (x86-64), so GCC compiles these
 * loops once per ISA level and glibc's ifunc resolver picks the widest the CPU has at
 * load time. Elsewhere the baseline version is the only one. */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && \
    !defined(__clang__) && __GNUC__ >= 8 && !defined(FP_NO_DISPATCH)
#define FP_DISPATCH __attribute__((target_clones("avx512f", "avx2", "default")))
#define FP_DISPATCH_ON 1
#else
#define FP_DISPATCH
#define FP_DISPATCH_ON 0
#endif

#endif
