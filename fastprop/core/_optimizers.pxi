# Optimizers (SGD, Adam, RMSprop, AdamW): one fused loop over the flat parameter vector
# per step (csrc/fp_optim.h), the step's scalars, the backward pass with the step fused
# in, and the def twins of the steps that the tests hold against the reference.

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


cdef inline double _rmsprop_step(
    floating* params, const floating* grads, const floating* grads2, floating* v,
    Py_ssize_t n_coef, Py_ssize_t n_params,
    floating scale, floating alpha, floating lr, floating rho, floating epsilon,
) noexcept nogil:
    """v <- rho v + (1 - rho) g^2; params -= lr g / (sqrt(v) + eps), with g as in
    ``_sgd_step`` (L2 term included). Returns sum ||W||^2 of the updated weights. One
    vectorised loop in csrc/fp_optim.h."""
    if floating is float:
        return fp_rmsprop_f(params, grads, grads2, v, n_coef, n_params, scale, alpha,
                            lr, rho, epsilon)
    else:
        return fp_rmsprop_d(params, grads, grads2, v, n_coef, n_params, scale, alpha,
                            lr, rho, epsilon)


cdef inline double _adamw_step(
    floating* params, const floating* grads, const floating* grads2, floating* m,
    floating* v, Py_ssize_t n_coef, Py_ssize_t n_params,
    floating scale, floating lr, floating decay, floating bias_1, floating bias_2,
    floating beta_1, floating beta_2, floating epsilon,
) noexcept nogil:
    """AdamW: g = scale * grad (no L2 term); m, v as Adam's; the weights shrink by
    decay = 1 - lr lambda, then params -= lr (m / bias_1) / (sqrt(v / bias_2) + eps),
    bias_k = 1 - beta_k^t. Returns sum ||W||^2 of the updated weights. One vectorised
    loop in csrc/fp_optim.h."""
    if floating is float:
        return fp_adamw_f(params, grads, grads2, m, v, n_coef, n_params, scale, lr,
                          decay, bias_1, bias_2, beta_1, beta_2, epsilon)
    else:
        return fp_adamw_d(params, grads, grads2, m, v, n_coef, n_params, scale, lr,
                          decay, bias_1, bias_2, beta_1, beta_2, epsilon)


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
    if st.solver == SOLVER_ADAM:
        return _adam_step(params + off, grads + off,
                          grads2 + off if grads2 != NULL else NULL,
                          state_1 + off, state_2 + off, n_coef, n,
                          <floating> st.scale, <floating> st.alpha, <floating> st.lr,
                          <floating> st.beta_1, <floating> st.beta_2,
                          <floating> st.epsilon)
    if st.solver == SOLVER_RMSPROP:
        return _rmsprop_step(params + off, grads + off,
                             grads2 + off if grads2 != NULL else NULL, state_1 + off,
                             n_coef, n, <floating> st.scale, <floating> st.alpha,
                             <floating> st.lr, <floating> st.rho, <floating> st.epsilon)
    return _adamw_step(params + off, grads + off, grads2 + off if grads2 != NULL else NULL,
                       state_1 + off, state_2 + off, n_coef, n,
                       <floating> st.scale, <floating> st.lr, <floating> st.decay,
                       <floating> st.bias_1, <floating> st.bias_2,
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


cdef inline double _grad_sumsq(
    const floating* grads, const floating* params, Py_ssize_t n_coef, Py_ssize_t n,
    const Step* st,
) noexcept nogil:
    """The squared L2 norm of the gradient the step would take on these n entries (the
    first n_coef weights, with the L2 term), in double (csrc/fp_optim.h)."""
    if n <= 0:
        return 0.0
    if floating is float:
        return fp_grad_sumsq_f(grads, params, n_coef, n, <float> st.alpha,
                               <float> st.scale)
    else:
        return fp_grad_sumsq_d(grads, params, n_coef, n, st.alpha, st.scale)


cdef inline void _clip_norm(Step* st, double sumsq, double max_norm) noexcept nogil:
    """Scale the step's gradient (through st.scale) so that its global L2 norm, whose
    square is sumsq, is at most max_norm."""
    cdef double norm = sumsq ** 0.5
    if norm > max_norm:
        st.scale = st.scale * (max_norm / norm)


cdef double _backward_clipped_update(
    Net* net, floating* params, const floating* X, const CSR* csr, Py_ssize_t n,
    const floating* acts, floating* deltas, floating* grads, floating* state_1,
    floating* state_2, Step* st, double max_norm,
    Py_ssize_t b,             # with dropout: the minibatch
) noexcept nogil:
    """The backward pass, then the step of the whole flat vector with the minibatch's
    gradient clipped to the global L2 norm max_norm (the step cannot be fused layer by
    layer: it needs the norm of every layer's gradient first). Returns sum ||W||^2 of
    the new weights."""
    _backward(net, params, X, csr, n, acts, deltas, grads, <floating> 0.0, b, 0)
    _clip_norm(st, _grad_sumsq(grads, params, net.n_coef, net.n_params, st), max_norm)
    return _update_segment(params, grads, NULL, state_1, state_2, 0, net.n_coef,
                           net.n_params, st)


cdef inline void _adam_lr(Step* st, const double* hyper, Py_ssize_t t) noexcept nogil:
    """Adam's bias-corrected step size for update number t (from 1)."""
    st.lr = hyper[0] * (1 - hyper[4] ** t) ** 0.5 / (1 - hyper[3] ** t)


cdef inline void _adamw_bias(Step* st, Py_ssize_t t) noexcept nogil:
    """AdamW's bias corrections 1 - beta_k^t for update number t (from 1)."""
    st.bias_1 = 1 - st.beta_1 ** t
    st.bias_2 = 1 - st.beta_2 ** t


cdef inline void _step_init(Step* st, int solver, double alpha, const double* hyper) noexcept nogil:
    """The step's scalars from hyper = (learning_rate, momentum, nesterov, beta_1,
    beta_2, epsilon[, rho, weight_decay]): the last two only for rmsprop and adamw,
    whose callers pass all eight (_check_epoch)."""
    st.solver = solver
    st.alpha = alpha
    st.lr = hyper[0]
    st.momentum = hyper[1]
    st.nesterov = hyper[2] != 0
    st.beta_1 = hyper[3]
    st.beta_2 = hyper[4]
    st.epsilon = hyper[5]
    st.rho = 0.0
    st.weight_decay = 0.0
    st.decay = 1.0
    st.bias_1 = 1.0
    st.bias_2 = 1.0
    if solver == SOLVER_RMSPROP or solver == SOLVER_ADAMW:
        st.rho = hyper[6]
        st.weight_decay = hyper[7]
        st.decay = 1 - hyper[0] * hyper[7]


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


def rmsprop_update(
    floating[::1] params not None, const floating[::1] grads not None, floating[::1] v not None,
    *, double learning_rate, double rho, double epsilon,
):
    """One RMSprop step in place over flat vectors (gradients already normalised)."""
    cdef Py_ssize_t n = params.shape[0]
    if grads.shape[0] != n or v.shape[0] != n:
        raise ValueError("params, grads and v must have the same length.")
    if n == 0:
        return
    with nogil:
        _rmsprop_step(&params[0], &grads[0], NULL, &v[0], 0, n, 1, 0,
                      <floating> learning_rate, <floating> rho, <floating> epsilon)


def adamw_update(
    floating[::1] params not None, const floating[::1] grads not None, floating[::1] m not None, floating[::1] v not None,
    *, Py_ssize_t t, double learning_rate, double beta_1, double beta_2, double epsilon,
    double weight_decay, Py_ssize_t n_coef,
):
    """One AdamW step in place over flat vectors (``t`` counts from 1; the first
    ``n_coef`` entries are weights, which decay; the rest are intercepts)."""
    cdef Py_ssize_t n = params.shape[0]
    if grads.shape[0] != n or m.shape[0] != n or v.shape[0] != n:
        raise ValueError("params, grads, m and v must have the same length.")
    if t < 1:
        raise ValueError("t counts updates from 1.")
    if n_coef < 0 or n_coef > n:
        raise ValueError(f"n_coef must be in [0, {n}], got {n_coef}.")
    if n == 0:
        return
    cdef double decay = 1 - learning_rate * weight_decay
    cdef double bias_1 = 1 - beta_1 ** t, bias_2 = 1 - beta_2 ** t
    with nogil:
        _adamw_step(&params[0], &grads[0], NULL, &m[0], &v[0], n_coef, n, 1,
                    <floating> learning_rate, <floating> decay, <floating> bias_1,
                    <floating> bias_2, <floating> beta_1, <floating> beta_2,
                    <floating> epsilon)
