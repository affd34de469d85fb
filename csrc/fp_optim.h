/* fastprop flat-vector loops: the optimizer steps and the gradient normalisation.
 *
 * They run over the whole flat parameter vector (W_1..W_L, then b_1..b_L), so they are
 * written in C where `#pragma omp simd` can vectorise them, reductions included: the
 * sum of squares of the weights (the next step's L2 term) is a double-precision
 * reduction that a compiler may only vectorise when told it may reassociate it. The
 * lane order is fixed by the compiled code, so the result is the same on every run
 * and for every thread count (these loops use no threads).
 *
 * Weights [0, n_coef) receive the L2 term alpha * W; intercepts [n_coef, n) do not.
 * AdamW has no L2 term: its weights [0, n_coef) decay by a factor instead.
 * `scale` is 1 / (the batch's sample-weight sum).
 */
#ifndef FASTPROP_FP_OPTIM_H
#define FASTPROP_FP_OPTIM_H

#include <math.h>
#include <stddef.h>

#include "fp_simd.h"

/* The loop pairs of the optimizer steps, written once: GRAD is the raw gradient of
   entry i (one buffer, or the sum of a minibatch's two halves), STEP the amount added
   to p[i] given vi (the new velocity) and gi (the scaled gradient). The weights
   [0, n_coef) get the L2 term and count in the sum of squares s; the intercepts do
   not. */
#define FP_NORMALISE_LOOPS(ACC, GRAD)                                                   \
    {                                                                                   \
        FP_SIMD_SUM                                                                     \
        for (ptrdiff_t i = 0; i < n_coef; i++) {                                        \
            g[i] = ((GRAD) + alpha * p[i]) / s_;                                        \
            s += (ACC)p[i] * (ACC)p[i];                                                 \
        }                                                                               \
        FP_SIMD                                                                         \
        for (ptrdiff_t i = n_coef; i < n; i++) g[i] = (GRAD) / s_;                      \
    }

#define FP_SGD_LOOPS(ACC, T, GRAD, STEP)                                                \
    {                                                                                   \
        FP_SIMD_SUM                                                                     \
        for (ptrdiff_t i = 0; i < n_coef; i++) {                                        \
            T gi = ((GRAD) + alpha * p[i]) * scale;                                     \
            T vi = momentum * v[i] - lr * gi;                                           \
            v[i] = vi;                                                                  \
            T pi = p[i] + (STEP);                                                       \
            p[i] = pi;                                                                  \
            s += (ACC)pi * (ACC)pi;                                                     \
        }                                                                               \
        FP_SIMD                                                                         \
        for (ptrdiff_t i = n_coef; i < n; i++) {                                        \
            T gi = (GRAD) * scale;                                                      \
            T vi = momentum * v[i] - lr * gi;                                           \
            v[i] = vi;                                                                  \
            p[i] = p[i] + (STEP);                                                       \
        }                                                                               \
    }

#define FP_ADAM_LOOPS(ACC, T, SQRT, GRAD)                                               \
    {                                                                                   \
        FP_SIMD_SUM                                                                     \
        for (ptrdiff_t i = 0; i < n_coef; i++) {                                        \
            T gi = ((GRAD) + alpha * p[i]) * scale;                                     \
            T mi = b1 * m[i] + ob1 * gi;                                                \
            T vi = b2 * v[i] + ob2 * (gi * gi);                                         \
            m[i] = mi;                                                                  \
            v[i] = vi;                                                                  \
            T pi = p[i] - step * mi / (SQRT(vi) + eps);                                 \
            p[i] = pi;                                                                  \
            s += (ACC)pi * (ACC)pi;                                                     \
        }                                                                               \
        FP_SIMD                                                                         \
        for (ptrdiff_t i = n_coef; i < n; i++) {                                        \
            T gi = (GRAD) * scale;                                                      \
            T mi = b1 * m[i] + ob1 * gi;                                                \
            T vi = b2 * v[i] + ob2 * (gi * gi);                                         \
            m[i] = mi;                                                                  \
            v[i] = vi;                                                                  \
            p[i] = p[i] - step * mi / (SQRT(vi) + eps);                                 \
        }                                                                               \
    }

/* RMSprop (PyTorch's, epsilon outside the root): g as for Adam (L2 term on the
   weights); v <- rho v + (1 - rho) g^2;  p -= lr g / (sqrt(v) + eps). */
#define FP_RMSPROP_LOOPS(ACC, T, SQRT, GRAD)                                            \
    {                                                                                   \
        FP_SIMD_SUM                                                                     \
        for (ptrdiff_t i = 0; i < n_coef; i++) {                                        \
            T gi = ((GRAD) + alpha * p[i]) * scale;                                     \
            T vi = rho * v[i] + orho * (gi * gi);                                       \
            v[i] = vi;                                                                  \
            T pi = p[i] - lr * gi / (SQRT(vi) + eps);                                   \
            p[i] = pi;                                                                  \
            s += (ACC)pi * (ACC)pi;                                                     \
        }                                                                               \
        FP_SIMD                                                                         \
        for (ptrdiff_t i = n_coef; i < n; i++) {                                        \
            T gi = (GRAD) * scale;                                                      \
            T vi = rho * v[i] + orho * (gi * gi);                                       \
            v[i] = vi;                                                                  \
            p[i] = p[i] - lr * gi / (SQRT(vi) + eps);                                   \
        }                                                                               \
    }

/* AdamW (PyTorch's): no L2 term in g; the weights shrink by decay = 1 - lr lambda
   first, the intercepts do not; then p -= lr m_hat / (sqrt(v_hat) + eps) with
   m_hat = m / bc1, v_hat = v / bc2, bc = 1 - beta^t. */
#define FP_ADAMW_LOOPS(ACC, T, SQRT, GRAD)                                              \
    {                                                                                   \
        FP_SIMD_SUM                                                                     \
        for (ptrdiff_t i = 0; i < n_coef; i++) {                                        \
            T gi = (GRAD) * scale;                                                      \
            T mi = b1 * m[i] + ob1 * gi;                                                \
            T vi = b2 * v[i] + ob2 * (gi * gi);                                         \
            m[i] = mi;                                                                  \
            v[i] = vi;                                                                  \
            T pi = p[i] * decay;                                                        \
            pi = pi - lr * (mi / bc1) / (SQRT(vi / bc2) + eps);                         \
            p[i] = pi;                                                                  \
            s += (ACC)pi * (ACC)pi;                                                     \
        }                                                                               \
        FP_SIMD                                                                         \
        for (ptrdiff_t i = n_coef; i < n; i++) {                                        \
            T gi = (GRAD) * scale;                                                      \
            T mi = b1 * m[i] + ob1 * gi;                                                \
            T vi = b2 * v[i] + ob2 * (gi * gi);                                         \
            m[i] = mi;                                                                  \
            v[i] = vi;                                                                  \
            p[i] = p[i] - lr * (mi / bc1) / (SQRT(vi / bc2) + eps);                     \
        }                                                                               \
    }

/* ACC: the accumulator of the sum of squares. float32 sums in float32 lanes, as
   scikit-learn's own float32 penalty (np.dot of float32 arrays) does: widening every
   element to double cost a fifth of a batch-32 epoch (perf). */
#define FP_DEFINE_FLAT_LOOPS(T, SUF, SQRT, ACC)                                         \
                                                                                        \
/* sum of a[i]^2 in double */                                                           \
FP_DISPATCH static double fp_sumsq_##SUF(const T *a, ptrdiff_t n) {                    \
    ACC s = 0;                                                                     \
    FP_SIMD_SUM                                                                         \
    for (ptrdiff_t i = 0; i < n; i++) s += (ACC)a[i] * (ACC)a[i];                       \
    return s;                                                                           \
}                                                                                       \
                                                                                        \
/* sum of squares, in double, of the minibatch gradient the optimizer steps with:    \
   ((g + alpha W) scale)^2 on weights [0, n_coef), (g scale)^2 on intercepts: the      \
   square of its global L2 norm, for clipping (max_grad_norm) */                        \
FP_DISPATCH static double fp_grad_sumsq_##SUF(const T *g, const T *p, ptrdiff_t n_coef, \
                                              ptrdiff_t n, T alpha, T scale) {          \
    double s = 0;                                                                       \
    FP_SIMD_SUM                                                                         \
    for (ptrdiff_t i = 0; i < n_coef; i++) {                                            \
        T gi = (g[i] + alpha * p[i]) * scale;                                           \
        s += (double)gi * (double)gi;                                                   \
    }                                                                                   \
    FP_SIMD_SUM                                                                         \
    for (ptrdiff_t i = n_coef; i < n; i++) {                                            \
        T gi = g[i] * scale;                                                            \
        s += (double)gi * (double)gi;                                                   \
    }                                                                                   \
    return s;                                                                           \
}                                                                                       \
                                                                                        \
/* full-data gradient: g = (g + alpha W) / s on weights, g / s on intercepts, where g  \
   is g, plus g2 when given (the sums of the two halves of every block);               \
   returns sum W^2 */                                                                   \
FP_DISPATCH static double fp_normalise_##SUF(T *g, const T *g2, const T *p,            \
                                             ptrdiff_t n_coef, ptrdiff_t n, T alpha,    \
                                             T s_) {                                    \
    ACC s = 0;                                                                          \
    if (g2) FP_NORMALISE_LOOPS(ACC, g[i] + g2[i])                                       \
    else FP_NORMALISE_LOOPS(ACC, g[i])                                                  \
    return s;                                                                           \
}                                                                                       \
                                                                                        \
/* SGD: v <- momentum v - lr g;  p += (momentum v - lr g) if nesterov else v.           \
   g is g1 + g2 when g2 is given (the two halves of a minibatch, summed here rather     \
   than in a separate pass). Returns sum W^2 of the updated weights. */                 \
FP_DISPATCH static double fp_sgd_##SUF(T *p, const T *g1, const T *g2, T *v,           \
                                       ptrdiff_t n_coef, ptrdiff_t n, T scale, T alpha, \
                                       T lr, T momentum, int nesterov) {                \
    ACC s = 0;                                                                          \
    if (g2) {                                                                           \
        if (nesterov) FP_SGD_LOOPS(ACC, T, g1[i] + g2[i], momentum * vi - lr * gi)      \
        else FP_SGD_LOOPS(ACC, T, g1[i] + g2[i], vi)                                    \
    } else {                                                                            \
        if (nesterov) FP_SGD_LOOPS(ACC, T, g1[i], momentum * vi - lr * gi)              \
        else FP_SGD_LOOPS(ACC, T, g1[i], vi)                                            \
    }                                                                                   \
    return s;                                                                           \
}                                                                                       \
                                                                                        \
/* Adam: m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;                             \
   p -= step m / (sqrt(v) + eps), step = lr sqrt(1 - b2^t) / (1 - b1^t) (epsilon        \
   outside the bias correction, as scikit-learn). g is g1 + g2 when g2 is given.        \
   Returns sum W^2 of the new weights. */                                               \
FP_DISPATCH static double fp_adam_##SUF(T *p, const T *g1, const T *g2, T *m, T *v,     \
                                        ptrdiff_t n_coef, ptrdiff_t n, T scale, T alpha, \
                                        T step, T b1, T b2, T eps) {                     \
    ACC s = 0;                                                                          \
    const T ob1 = (T)1 - b1, ob2 = (T)1 - b2;                                           \
    if (g2) FP_ADAM_LOOPS(ACC, T, SQRT, g1[i] + g2[i])                                  \
    else FP_ADAM_LOOPS(ACC, T, SQRT, g1[i])                                             \
    return s;                                                                           \
}                                                                                       \
                                                                                        \
/* RMSprop: v <- rho v + (1 - rho) g^2;  p -= lr g / (sqrt(v) + eps), g with the L2     \
   term on the weights. g is g1 + g2 when g2 is given. Returns sum W^2 of the new       \
   weights. */                                                                          \
FP_DISPATCH static double fp_rmsprop_##SUF(T *p, const T *g1, const T *g2, T *v,       \
                                           ptrdiff_t n_coef, ptrdiff_t n, T scale,      \
                                           T alpha, T lr, T rho, T eps) {               \
    ACC s = 0;                                                                          \
    const T orho = (T)1 - rho;                                                          \
    if (g2) FP_RMSPROP_LOOPS(ACC, T, SQRT, g1[i] + g2[i])                               \
    else FP_RMSPROP_LOOPS(ACC, T, SQRT, g1[i])                                          \
    return s;                                                                           \
}                                                                                       \
                                                                                        \
/* AdamW: m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2 (g without any L2 term);    \
   weights: p <- p decay, decay = 1 - lr lambda; then                                   \
   p -= lr (m / bc1) / (sqrt(v / bc2) + eps), bc1 = 1 - b1^t, bc2 = 1 - b2^t.           \
   g is g1 + g2 when g2 is given. Returns sum W^2 of the new weights. */                \
FP_DISPATCH static double fp_adamw_##SUF(T *p, const T *g1, const T *g2, T *m, T *v,    \
                                         ptrdiff_t n_coef, ptrdiff_t n, T scale, T lr,  \
                                         T decay, T bc1, T bc2, T b1, T b2, T eps) {    \
    ACC s = 0;                                                                          \
    const T ob1 = (T)1 - b1, ob2 = (T)1 - b2;                                           \
    if (g2) FP_ADAMW_LOOPS(ACC, T, SQRT, g1[i] + g2[i])                                 \
    else FP_ADAMW_LOOPS(ACC, T, SQRT, g1[i])                                            \
    return s;                                                                           \
}

FP_DEFINE_FLAT_LOOPS(float, f, sqrtf, float)
FP_DEFINE_FLAT_LOOPS(double, d, sqrt, double)

static inline int fp_dispatch_enabled(void) { return FP_DISPATCH_ON; }

#endif
