/* fastprop dropout: the masks of inverted dropout on the hidden layers' outputs, and
 * the passes that apply them (forward) and take them into the delta (backward).
 *
 * A mask is a function of its coordinates only, never of how a minibatch is cut or of
 * the thread that computes it, so the model is bitwise the same for any partition and
 * thread count. Unit j of hidden layer l (from 0), row r of minibatch b of the epoch
 * (both from 0) is kept when
 *
 *     k = mix(mix(mix(seed + G (b + 1)) + G (l + 1)) + G (r + 1))
 *     u = (mix(k + G (j + 1)) >> 11) * 2^-53         uniform in [0, 1)
 *     keep = u >= p
 *
 * in 64-bit unsigned arithmetic (wrapping), with G = 0x9E3779B97F4A7C15 and mix the
 * finaliser of splitmix64. u >= p is tested as (h >> 11) >= ceil(p 2^53), the same
 * comparison in integers. fastprop.reference.dropout_mask is the twin of this in NumPy.
 * Kept units are multiplied by 1 / (1 - p), dropped ones set to 0.
 */
#ifndef FASTPROP_FP_DROPOUT_H
#define FASTPROP_FP_DROPOUT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "fp_codes.h"
#include "fp_simd.h"

#define FP_DROP_GOLDEN 0x9E3779B97F4A7C15ULL

static inline uint64_t fp_mix64(uint64_t z) {
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ULL;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z;
}

/* the key of hidden layer l in minibatch b of the epoch drawn with `seed` */
static inline uint64_t fp_dropout_key(uint64_t seed, ptrdiff_t b, ptrdiff_t l) {
    uint64_t k = fp_mix64(seed + FP_DROP_GOLDEN * ((uint64_t)b + 1));
    return fp_mix64(k + FP_DROP_GOLDEN * ((uint64_t)l + 1));
}

/* the integer form of `u >= p`: (h >> 11) >= ceil(p 2^53) (p 2^53 is exact) */
static inline uint64_t fp_dropout_threshold(double p) {
    return (uint64_t)ceil(p * 9007199254740992.0);
}

/* whether unit j of row key k is kept */
#define FP_DROP_KEEP(k, j, thr) \
    ((fp_mix64((k) + FP_DROP_GOLDEN * ((uint64_t)(j) + 1)) >> 11) >= (thr))

#define FP_DEFINE_DROPOUT_LOOPS(T, SUF)                                                 \
                                                                                        \
/* A <- A * mask over n rows of c units, rows ld apart: rows r0.. of the minibatch,     \
   units j0.. of the layer whose key is `key` */                                        \
FP_DISPATCH static void fp_dropout_apply_##SUF(T *A, ptrdiff_t ld, ptrdiff_t n,         \
                                               ptrdiff_t c, uint64_t key, ptrdiff_t r0, \
                                               ptrdiff_t j0, uint64_t thr, T scale) {   \
    for (ptrdiff_t i = 0; i < n; i++) {                                                 \
        T *row = A + i * ld;                                                            \
        uint64_t k = fp_mix64(key + FP_DROP_GOLDEN * ((uint64_t)(r0 + i) + 1));         \
        for (ptrdiff_t j = 0; j < c; j++)                                               \
            row[j] = FP_DROP_KEEP(k, j0 + j, thr) ? row[j] * scale : (T)0;              \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* The mask into the delta of a dropped layer whose activation's derivative is taken by \
   fp_deriv_ext (the activations after ReLU): D <- D * mask, and A (the dropped outputs,  \
   no longer read by the minibatch once layer l + 1's weight gradient is taken) back to  \
   f(Z) on the kept units, A / scale, for the derivative pass that follows. */          \
FP_DISPATCH static void fp_dropout_unscale_##SUF(                                       \
        T *D, T *A, ptrdiff_t n, ptrdiff_t c, ptrdiff_t ld, uint64_t key, ptrdiff_t r0, \
        ptrdiff_t j0, uint64_t thr, double scale) {                                     \
    T s = (T)scale, q = (T)(1.0 / scale);                                               \
    for (ptrdiff_t i = 0; i < n; i++) {                                                 \
        T *d = D + i * ld;                                                              \
        T *a = A + i * ld;                                                              \
        uint64_t k = fp_mix64(key + FP_DROP_GOLDEN * ((uint64_t)(r0 + i) + 1));         \
        for (ptrdiff_t j = 0; j < c; j++) {                                             \
            if (FP_DROP_KEEP(k, j0 + j, thr)) {                                         \
                d[j] = d[j] * s;                                                        \
                a[j] = a[j] * q;                                                        \
            } else {                                                                    \
                d[j] = (T)0;                                                            \
            }                                                                           \
        }                                                                               \
    }                                                                                   \
}                                                                                       \
                                                                                        \
/* fp_deriv_colsum through a dropped layer: D <- D * mask * f'(Z), where A holds the    \
   dropped outputs mask * f(Z) (rows r0.., units j0.., as fp_dropout_apply). ReLU and   \
   the logistic read the mask off A (a dropped unit has A = 0, where their f' through   \
   A / scale is 0 too); tanh and the identity, whose f' is 1 at 0, recompute it. */     \
FP_DISPATCH static void fp_dropout_deriv_colsum_##SUF(                                  \
        T *D, const T *A, ptrdiff_t n, ptrdiff_t c, ptrdiff_t ld, int act, T *gb,      \
        uint64_t key, ptrdiff_t r0, ptrdiff_t j0, uint64_t thr, double scale) {         \
    double q = 1.0 / scale;                                                             \
    T s = (T)scale;                                                                     \
    for (ptrdiff_t i = 0; i < n; i++) {                                                 \
        T *d = D + i * ld;                                                              \
        const T *a = A + i * ld;                                                        \
        uint64_t k = fp_mix64(key + FP_DROP_GOLDEN * ((uint64_t)(r0 + i) + 1));         \
        if (act == FP_ACT_RELU) {                                                       \
            for (ptrdiff_t j = 0; j < c; j++) {                                         \
                T v = a[j] > 0 ? d[j] * s : (T)0;                                       \
                d[j] = v;                                                               \
                gb[j] = gb[j] + v;                                                      \
            }                                                                           \
        } else if (act == FP_ACT_LOGISTIC) {                                            \
            for (ptrdiff_t j = 0; j < c; j++) {                                         \
                double x = a[j] * q;                                                    \
                T v = (T)(d[j] * scale * (x * (1.0 - x)));                              \
                d[j] = v;                                                               \
                gb[j] = gb[j] + v;                                                      \
            }                                                                           \
        } else if (act == FP_ACT_TANH) {                                                \
            for (ptrdiff_t j = 0; j < c; j++) {                                         \
                double x = a[j] * q;                                                    \
                T v = FP_DROP_KEEP(k, j0 + j, thr)                                      \
                    ? (T)(d[j] * scale * (1.0 - x * x)) : (T)0;                         \
                d[j] = v;                                                               \
                gb[j] = gb[j] + v;                                                      \
            }                                                                           \
        } else {                                                                        \
            for (ptrdiff_t j = 0; j < c; j++) {                                         \
                T v = FP_DROP_KEEP(k, j0 + j, thr) ? d[j] * s : (T)0;                   \
                d[j] = v;                                                               \
                gb[j] = gb[j] + v;                                                      \
            }                                                                           \
        }                                                                               \
    }                                                                                   \
}

FP_DEFINE_DROPOUT_LOOPS(float, f)
FP_DEFINE_DROPOUT_LOOPS(double, d)

#endif
