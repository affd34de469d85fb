# Optimizers: one fused loop over the flat parameter vector per step (csrc/fp_optim.h),
# the step's scalars, the backward pass with the step fused in, and the def twins of
# the steps that the tests hold against the reference.

# True where the flat-vector loops (csrc/fp_optim.h) are compiled per ISA level and
# chosen at load time (GCC target_clones on x86-64 Linux).
SIMD_DISPATCH = bool(fp_dispatch_enabled())


cdef inline double _sgd_step(
    floating* params, const floating* grads, const floating* grads2, floating* velocity,
    Py_ssize_t n_coef, Py_ssize_t n_params,
    floating scale, floating alpha, floating lr, floating momentum, bint nesterov,
) noexcept nogil:
    """g = scale * (grad + alpha W) on weights, scale * grad on intercepts, where grad is
    grads (+ grads2 when not NULL: the two halves of a minibatch);
    v <- momentum v - lr g; params += (momentum v - lr g) if nesterov else v.
    Returns sum ||W||^2 of the updated weights (the next step's L2 term).
    One vectorised loop in csrc/fp_optim.h."""
    if floating is float:
        return fp_sgd_f(params, grads, grads2, velocity, n_coef, n_params, scale, alpha,
                        lr, momentum, nesterov)
    else:
        return fp_sgd_d(params, grads, grads2, velocity, n_coef, n_params, scale, alpha,
                        lr, momentum, nesterov)


cdef inline double _adam_step(
    floating* params, const floating* grads, const floating* grads2, floating* m,
    floating* v, Py_ssize_t n_coef, Py_ssize_t n_params,
    floating scale, floating alpha, floating step, floating beta_1, floating beta_2,
    floating epsilon,
) noexcept nogil:
    """m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2;
    params -= step * m / (sqrt(v) + eps), step = lr sqrt(1 - b2^t) / (1 - b1^t), with g
    as in ``_sgd_step``. Returns sum ||W||^2 of the updated weights. One vectorised loop
    in csrc/fp_optim.h."""
    if floating is float:
        return fp_adam_f(params, grads, grads2, m, v, n_coef, n_params, scale, alpha,
                         step, beta_1, beta_2, epsilon)
    else:
        return fp_adam_d(params, grads, grads2, m, v, n_coef, n_params, scale, alpha,
                         step, beta_1, beta_2, epsilon)


cdef inline double _update_segment(
    floating* params, const floating* grads, const floating* grads2, floating* state_1,
    floating* state_2, Py_ssize_t off, Py_ssize_t n_coef, Py_ssize_t n, const Step* st,
) noexcept nogil:
    """The optimizer step on params[off:off + n], whose first n_coef entries are weights
    (they get the L2 term and count in the returned sum of squares). The gradient is
    grads, plus grads2 when it is not NULL."""
    if n <= 0:
        return 0.0
    if st.solver == SOLVER_SGD:
        return _sgd_step(params + off, grads + off,
                         grads2 + off if grads2 != NULL else NULL, state_1 + off,
                         n_coef, n, <floating> st.scale, <floating> st.alpha,
                         <floating> st.lr, <floating> st.momentum, st.nesterov)
    return _adam_step(params + off, grads + off, grads2 + off if grads2 != NULL else NULL,
                      state_1 + off, state_2 + off, n_coef, n,
                      <floating> st.scale, <floating> st.alpha, <floating> st.lr,
                      <floating> st.beta_1, <floating> st.beta_2, <floating> st.epsilon)


cdef double _backward_update(
    Net* net,
    floating* params,         # INOUT (n_params,): each layer updated once its last use is done
    const floating* X, const CSR* csr, Py_ssize_t n,
    const floating* acts,     # IN  workspace from _forward
    floating* deltas,         # INOUT workspace; delta_L already set by _loss_delta
    floating* grads,          # scratch (n_params,): intercept part holds the column sums
    floating* state_1, floating* state_2, const Step* st,
    Py_ssize_t b,             # with dropout: the minibatch
) noexcept nogil:
    """``_backward`` with the optimizer step fused in, layer by layer from the output.

    Layer l's step runs as soon as W_l has been used for delta_{l-1}: its gradient
    (just written by the GEMM) and W_l (just read by it) are still in cache, instead of
    a separate pass over the whole flat vector after the backward pass. The arithmetic
    per parameter is that of the unfused step. Returns sum ||W||^2 of the new weights.
    """
    cdef int l
    cdef double sq = 0.0
    for l in range(net.n_layers - 1, -1, -1):
        _backward_layer(net, l, params, X, csr, n, acts, deltas, grads, <floating> 0.0,
                        b, 0)
        # W_l and b_l are no longer needed by this batch: step them now
        sq += _update_segment(params, grads, NULL, state_1, state_2, net.w_off[l],
                              net.sizes[l] * net.sizes[l + 1],
                              net.sizes[l] * net.sizes[l + 1], st)
        _update_segment(params, grads, NULL, state_1, state_2, net.b_off[l], 0,
                        net.sizes[l + 1], st)
    return sq


cdef inline void _adam_lr(Step* st, const double* hyper, Py_ssize_t t) noexcept nogil:
    """Adam's bias-corrected step size for update number t (from 1)."""
    st.lr = hyper[0] * (1 - hyper[4] ** t) ** 0.5 / (1 - hyper[3] ** t)


cdef inline void _step_init(Step* st, int solver, double alpha, const double* hyper) noexcept nogil:
    st.solver = solver
    st.alpha = alpha
    st.lr = hyper[0]
    st.momentum = hyper[1]
    st.nesterov = hyper[2] != 0
    st.beta_1 = hyper[3]
    st.beta_2 = hyper[4]
    st.epsilon = hyper[5]


cdef inline void _add_into(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] += src[i]


def sgd_update(
    floating[::1] params not None, const floating[::1] grads not None, floating[::1] velocity not None,
    *, double learning_rate, double momentum, bint nesterov,
):
    """One SGD step in place over flat vectors (gradients already normalised)."""
    cdef Py_ssize_t n = params.shape[0]
    if grads.shape[0] != n or velocity.shape[0] != n:
        raise ValueError("params, grads and velocity must have the same length.")
    if n == 0:
        return
    with nogil:
        _sgd_step(&params[0], &grads[0], NULL, &velocity[0], 0, n, 1, 0,
                  <floating> learning_rate, <floating> momentum, nesterov)


def adam_update(
    floating[::1] params not None, const floating[::1] grads not None, floating[::1] m not None, floating[::1] v not None,
    *, Py_ssize_t t, double learning_rate, double beta_1, double beta_2, double epsilon,
):
    """One Adam step in place over flat vectors (``t`` counts from 1)."""
    cdef Py_ssize_t n = params.shape[0]
    if grads.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("params, grads, m and v must have the same length.")
    if t < 1:
        raise ValueError("t counts updates from 1.")
    if n == 0:
        return
    cdef double step = learning_rate * (1 - beta_2 ** t) ** 0.5 / (1 - beta_1 ** t)
    with nogil:
        _adam_step(&params[0], &grads[0], NULL, &m[0], &v[0], 0, n, 1, 0,
                   <floating> step, <floating> beta_1, <floating> beta_2,
                   <floating> epsilon)
