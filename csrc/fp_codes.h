/* The codes that fastprop's C, Cython (fastprop/core/_kernels.pxd) and Python
 * (fastprop.core: ACTIVATION_CODES, LOSS_CODES, SOLVER_CODES) use for activations,
 * losses, solvers and partitions. This is their one definition. */
#ifndef FASTPROP_FP_CODES_H
#define FASTPROP_FP_CODES_H

/* hidden-layer activations */
#define FP_ACT_IDENTITY 0
#define FP_ACT_LOGISTIC 1
#define FP_ACT_TANH 2
#define FP_ACT_RELU 3
/* the activations after ReLU run in their own loops (fp_bias_act_ext, fp_deriv_ext) */
#define FP_ACT_LEAKY_RELU 4
#define FP_ACT_ELU 5
#define FP_ACT_SOFTPLUS 6
/* these two keep their pre-activation Z: their derivative is not a function of f(Z) */
#define FP_ACT_GELU 7
#define FP_ACT_SILU 8
#define FP_ACT_LAST 8
/* whether an activation's backward pass reads Z rather than A = f(Z) */
#define FP_ACT_KEEPS_Z(act) ((act) == FP_ACT_GELU || (act) == FP_ACT_SILU)

/* losses, each with its output activation */
#define FP_LOSS_SQUARED 0     /* identity output */
#define FP_LOSS_POISSON 1     /* exp output */
#define FP_LOSS_LOG 2         /* softmax output */
#define FP_LOSS_BINARY_LOG 3  /* logistic output */
#define FP_LOSS_HUBER 4       /* identity output; its delta is Net.huber_delta */
#define FP_LOSS_ABSOLUTE 5    /* identity output */

/* minibatch solvers of the epoch driver */
#define FP_SOLVER_SGD 0
#define FP_SOLVER_ADAM 1
#define FP_SOLVER_RMSPROP 2
#define FP_SOLVER_ADAMW 3

/* how a pass cuts its minibatches or blocks */
#define FP_PASS_WHOLE 0
#define FP_PASS_ROWS 1
#define FP_PASS_UNITS 2

#endif
