/* fastprop scalar math: the numerically stable forms, written once.
 *
 * float maths for float data (expf, log1pf, tanhf) and double for double, selected by
 * the _f / _d suffix. The Cython kernels call these from fused-type loops, choosing the
 * suffix at compile time, so every function here is static inline and vectorisable.
 */
#ifndef FASTPROP_FP_MATH_H
#define FASTPROP_FP_MATH_H

#include <math.h>

/* logistic sigmoid 1 / (1 + e^-x), two branches so exp never overflows */
static inline float fp_sigmoid_f(float x) {
    if (x >= 0.0f) {
        return 1.0f / (1.0f + expf(-x));
    } else {
        float e = expf(x);
        return e / (1.0f + e);
    }
}
static inline double fp_sigmoid_d(double x) {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    } else {
        double e = exp(x);
        return e / (1.0 + e);
    }
}

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|): finite for every finite x */
static inline double fp_log1pexp_f(float x) {
    float ax = fabsf(x);
    return (double)(x > 0.0f ? x : 0.0f) + (double)log1pf(expf(-ax));
}
static inline double fp_log1pexp_d(double x) {
    double ax = fabs(x);
    return (x > 0.0 ? x : 0.0) + log1p(exp(-ax));
}

static inline float fp_tanh_f(float x) { return tanhf(x); }
static inline double fp_tanh_d(double x) { return tanh(x); }
static inline float fp_exp_f(float x) { return expf(x); }
static inline double fp_exp_d(double x) { return exp(x); }
static inline float fp_sqrt_f(float x) { return sqrtf(x); }
static inline double fp_sqrt_d(double x) { return sqrt(x); }

/* x log x with the convention 0 log 0 = 0 (scipy's xlogy(x, x)) */
static inline double fp_xlogx_d(double x) { return x > 0.0 ? x * log(x) : 0.0; }

/* Flush subnormal floats to zero (FTZ) and read subnormal inputs as zero (DAZ) on the
 * calling thread, returning the previous floating-point control state for
 * fp_denormals_restore. Weights that only weight decay acts on (constant-zero features,
 * dead units) shrink geometrically into the subnormal range, where x86 arithmetic is
 * about 100 times slower (benchmarks/README.md has the measurement).
 * XLA runs its CPU kernels this way too. No-op on other architectures. */
#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <xmmintrin.h>
static inline unsigned long long fp_denormals_flush(void) {
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040u);  /* FTZ (bit 15) | DAZ (bit 6) */
    return old;
}
static inline void fp_denormals_restore(unsigned long long old) {
    _mm_setcsr((unsigned int)old);
}
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
static inline unsigned long long fp_denormals_flush(void) {
    unsigned long long old;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(old));
    __asm__ __volatile__("msr fpcr, %0" : : "r"(old | (1ULL << 24)));  /* FZ */
    return old;
}
static inline void fp_denormals_restore(unsigned long long old) {
    __asm__ __volatile__("msr fpcr, %0" : : "r"(old));
}
#else
static inline unsigned long long fp_denormals_flush(void) { return 0; }
static inline void fp_denormals_restore(unsigned long long old) { (void)old; }
#endif

#endif
