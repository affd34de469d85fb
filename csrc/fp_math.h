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

/* The activations after ReLU and their derivatives (fp_layer.h). float maths for float
 * data, double for double. */

/* ELU's negative side e^x - 1, without the cancellation near 0 */
static inline float fp_expm1_f(float x) { return expm1f(x); }
static inline double fp_expm1_d(double x) { return expm1(x); }

/* softplus log(1 + e^x) = max(x, 0) + log1p(e^-|x|), finite for every finite x */
static inline float fp_softplus_f(float x) {
    return (x > 0.0f ? x : 0.0f) + log1pf(expf(-fabsf(x)));
}
static inline double fp_softplus_d(double x) {
    return (x > 0.0 ? x : 0.0) + log1p(exp(-fabs(x)));
}

/* GELU, the exact form 0.5 x (1 + erf(x / sqrt 2)), written 0.5 x erfc(-x / sqrt 2):
 * the same function, without 1 + erf cancelling for negative x */
#define FP_SQRT1_2 0.70710678118654752440      /* 1 / sqrt(2) */
#define FP_INV_SQRT_2PI 0.39894228040143267794 /* 1 / sqrt(2 pi) */
static inline float fp_gelu_f(float x) {
    return 0.5f * x * erfcf(-x * (float)FP_SQRT1_2);
}
static inline double fp_gelu_d(double x) { return 0.5 * x * erfc(-x * FP_SQRT1_2); }
/* its derivative Phi(x) + x phi(x), Phi and phi the standard normal cdf and density */
static inline float fp_gelu_deriv_f(float x) {
    return 0.5f * erfcf(-x * (float)FP_SQRT1_2)
           + x * expf(-0.5f * x * x) * (float)FP_INV_SQRT_2PI;
}
static inline double fp_gelu_deriv_d(double x) {
    return 0.5 * erfc(-x * FP_SQRT1_2) + x * exp(-0.5 * x * x) * FP_INV_SQRT_2PI;
}

/* SiLU x / (1 + e^-x) = x s(x), s the stable sigmoid, and its derivative
 * s(x) (1 + x (1 - s(x))) */
static inline float fp_silu_f(float x) { return x * fp_sigmoid_f(x); }
static inline double fp_silu_d(double x) { return x * fp_sigmoid_d(x); }
static inline float fp_silu_deriv_f(float x) {
    float s = fp_sigmoid_f(x);
    return s * (1.0f + x * (1.0f - s));
}
static inline double fp_silu_deriv_d(double x) {
    double s = fp_sigmoid_d(x);
    return s * (1.0 + x * (1.0 - s));
}

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
