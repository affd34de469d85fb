/* fastprop per-layer elementwise passes: the work around each GEMM of the forward and
 * backward passes, over a block of rows (rows `ld` entries apart, so a block of columns
 * of a wider matrix works too).
 *
 * They are C rather than Cython so that the run-time dispatch of fp_simd.h applies:
 * compiled for the SSE2 baseline only, the ReLU passes ran mostly scalar. Vectorisation
 * runs across the columns of a row, so every column sum adds its rows in row order,
 * as the scalar loop did: the results do not depend on the vector width. tanh and the
 * logistic call the scalar functions of fp_math.h, and their derivatives take the
 * factor (1 - a^2) or a (1 - a) in double, as the loops that came before did.
 */
#ifndef FASTPROP_FP_LAYER_H
#define FASTPROP_FP_LAYER_H

#include <stddef.h>

#include "fp_codes.h"
#include "fp_math.h"
#include "fp_simd.h"


/* one row of fp_deriv_colsum: d[j] <- DERIV (an expression of d[j] and a[j]), and its
   column sums */
#define FP_DERIV_COLSUM_ROW(T, DERIV)                                                   \
    {                                                                                   \
        FP_SIMD                                                                         \
        for (ptrdiff_t j = 0; j < c; j++) {                                             \
            T v = (DERIV);                                                              \
            d[j] = v;                                                                   \
            gb[j] = gb[j] + v;                                                          \
        }                                                                               \
    }

#define FP_DEFINE_LAYER_LOOPS(T, SUF)                                                   \
                                                                                        \
/* Z <- f(Z + b) in place over n rows of c entries, rows ld apart */                    \
FP_DISPATCH static void fp_bias_act_##SUF(T *Z, ptrdiff_t ld, const T *b, ptrdiff_t n,  \
                                          ptrdiff_t c, int act) {                       \
    for (ptrdiff_t i = 0; i < n; i++) {                                                 \
        T *row = Z + i * ld;                                                            \
        if (act == FP_ACT_RELU) {                                                       \
            FP_SIMD                                                                     \
            for (ptrdiff_t j = 0; j < c; j++) {                                         \
                T z = row[j] + b[j];                                                    \
                row[j] = z > 0 ? z : (T)0;                                              \
            }                                                                           \
        } else if (act == FP_ACT_TANH) {                                                \
            for (ptrdiff_t j = 0; j < c; j++) row[j] = fp_tanh_##SUF(row[j] + b[j]);    \
        } else if (act == FP_ACT_LOGISTIC) {                                            \
            for (ptrdiff_t j = 0; j < c; j++) row[j] = fp_sigmoid_##SUF(row[j] + b[j]); \
        } else {                                                                        \
            FP_SIMD                                                                     \
            for (ptrdiff_t j = 0; j < c; j++) row[j] = row[j] + b[j];                   \
        }                                                                               \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* D <- D * f'(Z), with f' written through A = f(Z), over n rows of c entries, rows ld  \
   apart; gb (c,) += the column sums of the new D, row by row */                        \
FP_DISPATCH static void fp_deriv_colsum_##SUF(T *D, const T *A, ptrdiff_t n,            \
                                              ptrdiff_t c, ptrdiff_t ld, int act,       \
                                              T *gb) {                                  \
    for (ptrdiff_t i = 0; i < n; i++) {                                                 \
        T *d = D + i * ld;                                                              \
        const T *a = A + i * ld;                                                        \
        if (act == FP_ACT_RELU) FP_DERIV_COLSUM_ROW(T, a[j] > 0 ? d[j] : (T)0)          \
        else if (act == FP_ACT_TANH)                                                    \
            FP_DERIV_COLSUM_ROW(T, (T)(d[j] * (1.0 - a[j] * a[j])))                     \
        else if (act == FP_ACT_LOGISTIC)                                                \
            FP_DERIV_COLSUM_ROW(T, (T)(d[j] * (a[j] * (1.0 - a[j]))))                   \
        else FP_DERIV_COLSUM_ROW(T, d[j])                                               \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* dst[0:n] <- src[0:n] (a gathered row); returns 1 when some src[i] is NaN or +-inf.   \
   x * 0 is +-0 for every finite x and NaN otherwise, so the sum of those is 0 exactly  \
   when all are finite, whatever the order the vector lanes add them in. */              \
FP_DISPATCH static int fp_copy_check_##SUF(T *dst, const T *src, ptrdiff_t n) {         \
    T s = 0;                                                                            \
    FP_SIMD_SUM                                                                         \
    for (ptrdiff_t i = 0; i < n; i++) {                                                 \
        T x = src[i];                                                                   \
        dst[i] = x;                                                                     \
        s += x * (T)0;                                                                  \
    }                                                                                   \
    return s != s;                                                                      \
}

FP_DEFINE_LAYER_LOOPS(float, f)
FP_DEFINE_LAYER_LOOPS(double, d)

/* one row of fp_deriv_ext for the derivatives that call a maths function: the same
   column sums, without `omp simd` (as tanh and the logistic, whose loops stay scalar), so
   that the results do not depend on the vector width */
#define FP_DERIV_COLSUM_ROW_SCALAR(T, DERIV)                                            \
    {                                                                                   \
        for (ptrdiff_t j = 0; j < c; j++) {                                             \
            T v = (DERIV);                                                              \
            d[j] = v;                                                                   \
            gb[j] = gb[j] + v;                                                          \
        }                                                                               \
    }

/* The activations after ReLU (FP_ACT_LEAKY_RELU .. FP_ACT_SILU), in loops of their own
 * so that the loops of the first four stay as they were. gelu and silu keep their
 * pre-activation: K (rows ld apart, as Z) receives Z + b, and their derivative reads it
 * back; the others write K nowhere and their derivative reads A = f(Z), as above. */
#define FP_DEFINE_LAYER_EXT_LOOPS(T, SUF)                                               \
                                                                                        \
/* Z <- f(Z + b) in place over n rows of c entries, rows ld apart; K <- Z + b too for   \
   the activations that keep it (FP_ACT_KEEPS_Z) */                                     \
FP_DISPATCH static void fp_bias_act_ext_##SUF(T *Z, ptrdiff_t ld, T *K, const T *b,     \
                                              ptrdiff_t n, ptrdiff_t c, int act) {      \
    for (ptrdiff_t i = 0; i < n; i++) {                                                 \
        T *row = Z + i * ld;                                                            \
        T *kept = K + i * ld;                                                           \
        if (act == FP_ACT_LEAKY_RELU) {                                                 \
            FP_SIMD                                                                     \
            for (ptrdiff_t j = 0; j < c; j++) {                                         \
                T z = row[j] + b[j];                                                    \
                row[j] = z > 0 ? z : (T)0.01 * z;                                       \
            }                                                                           \
        } else if (act == FP_ACT_ELU) {                                                 \
            for (ptrdiff_t j = 0; j < c; j++) {                                         \
                T z = row[j] + b[j];                                                    \
                row[j] = z > 0 ? z : fp_expm1_##SUF(z);                                 \
            }                                                                           \
        } else if (act == FP_ACT_SOFTPLUS) {                                            \
            for (ptrdiff_t j = 0; j < c; j++) row[j] = fp_softplus_##SUF(row[j] + b[j]);\
        } else if (act == FP_ACT_GELU) {                                                \
            for (ptrdiff_t j = 0; j < c; j++) {                                         \
                T z = row[j] + b[j];                                                    \
                kept[j] = z;                                                            \
                row[j] = fp_gelu_##SUF(z);                                              \
            }                                                                           \
        } else { /* FP_ACT_SILU */                                                      \
            for (ptrdiff_t j = 0; j < c; j++) {                                         \
                T z = row[j] + b[j];                                                    \
                kept[j] = z;                                                            \
                row[j] = fp_silu_##SUF(z);                                              \
            }                                                                           \
        }                                                                               \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* D <- D * f'(Z) over n rows of c entries, rows ld apart, f' written through A = f(Z)  \
   (leaky_relu, elu, softplus) or through the kept Z in K (gelu, silu); gb (c,) += the  \
   column sums of the new D, row by row */                                              \
FP_DISPATCH static void fp_deriv_ext_##SUF(T *D, const T *A, const T *K, ptrdiff_t n,   \
                                           ptrdiff_t c, ptrdiff_t ld, int act, T *gb) { \
    for (ptrdiff_t i = 0; i < n; i++) {                                                 \
        T *d = D + i * ld;                                                              \
        const T *a = A + i * ld;                                                        \
        const T *z = K + i * ld;                                                        \
        if (act == FP_ACT_LEAKY_RELU)                                                   \
            FP_DERIV_COLSUM_ROW(T, a[j] > 0 ? d[j] : (T)0.01 * d[j])                    \
        else if (act == FP_ACT_ELU) /* f' = f + 1 on the negative side */               \
            FP_DERIV_COLSUM_ROW(T, a[j] > 0 ? d[j] : d[j] * (a[j] + (T)1))              \
        else if (act == FP_ACT_SOFTPLUS) /* f' = s(z) = 1 - e^-f */                     \
            FP_DERIV_COLSUM_ROW_SCALAR(T, d[j] * -fp_expm1_##SUF(-a[j]))                \
        else if (act == FP_ACT_GELU)                                                    \
            FP_DERIV_COLSUM_ROW_SCALAR(T, d[j] * fp_gelu_deriv_##SUF(z[j]))             \
        else /* FP_ACT_SILU */                                                          \
            FP_DERIV_COLSUM_ROW_SCALAR(T, d[j] * fp_silu_deriv_##SUF(z[j]))             \
    }                                                                                   \
}

FP_DEFINE_LAYER_EXT_LOOPS(float, f)
FP_DEFINE_LAYER_EXT_LOOPS(double, d)


/* Whether the calling thread has yet to warm its BLAS workspace in one precision (0:
   float, 1: double): true on the first call per thread and precision, false after
   (fastprop/core/_layers.pxi, _warm_blas, says why a thread warms it). */
static __thread int fp_blas_warmed[2];

static inline int fp_blas_warm_first(int dbl) {
    if (fp_blas_warmed[dbl])
        return 0;
    fp_blas_warmed[dbl] = 1;
    return 1;
}

static inline int fp_blas_is_warm(int dbl) { return fp_blas_warmed[dbl]; }

#endif
