# Full-data passes: the loss and gradient over all rows in blocks (L-BFGS,
# loss_and_gradients), prediction, and the gradients of the outputs with respect to
# the inputs.

cdef inline double _block_gradient(
    Net* net, const floating* params, const floating* Xb, const CSR* csr,
    Py_ssize_t rows, const floating* Yb, const floating* swb,
    floating* acts, floating* deltas, floating* grads, floating beta,
    Py_ssize_t b, Py_ssize_t r0,  # with dropout: the minibatch, the block's first row
) noexcept nogil:
    """Forward, loss + delta, backward over one block of rows: raw gradient sums into
    ``grads`` (weights overwritten when beta = 0, accumulated when 1; intercepts always
    accumulated); returns the block's summed loss."""
    cdef Py_ssize_t last = net.a_off[net.n_layers - 1]
    cdef double data
    _forward(net, params, Xb, csr, rows, acts, b, r0)
    data = _loss_delta(net, acts + last, Yb, swb, rows, deltas + last,
                       grads + net.b_off[net.n_layers - 1])
    _backward(net, params, Xb, csr, rows, acts, deltas, grads, beta, b, r0)
    return data


cdef double _loss_grad_blocks(
    Net* net, const floating* params, const floating* X, CSR* csr, Py_ssize_t n,
    const floating* Y, const floating* sw, floating* grads, floating* acts,
    floating* deltas, Py_ssize_t rows, int half, bint check_signals, int* stop,
) noexcept nogil:
    """Raw gradient sums into ``grads`` and the summed data loss, over X in blocks of
    ``rows``: whole blocks (half -1), or only the first or second half (0, 1) of each
    block, as ``_split_rows`` cuts it. Weights are overwritten by the first block and
    accumulated after (beta = 1); intercepts accumulate from zero. Between blocks the
    thread that may takes the GIL to check for signals, and every thread stops once
    ``stop`` is set."""
    cdef Py_ssize_t start = 0, nb, r0, cnt, c = net.sizes[net.n_layers]
    cdef const floating* Xb
    cdef double data = 0.0
    cdef floating beta = 0
    cdef int rc
    memset(grads + net.n_coef, 0, (net.n_params - net.n_coef) * sizeof(floating))
    while start < n:
        nb = rows if n - start > rows else n - start
        r0 = 0 if half <= 0 else _split_rows(nb)
        cnt = nb if half < 0 else (_split_rows(nb) if half == 0 else nb - r0)
        if cnt > 0:
            if csr != NULL:
                csr.rows = NULL
                csr.row0 = start + r0
            Xb = X + (start + r0) * net.sizes[0] if X != NULL else NULL
            data += _block_gradient(net, params, Xb, csr, cnt, Y + (start + r0) * c,
                                    sw + start + r0 if sw != NULL else NULL, acts, deltas,
                                    grads, beta, 0, 0)
            beta = 1
        start += nb
        if check_signals and start < n:
            with gil:
                rc = _check_signals()
            if rc != 0:
                fp_flag_set(stop)
        if fp_flag_get(stop):
            break
    if beta == 0:  # this half held no rows
        memset(grads, 0, net.n_coef * sizeof(floating))
    return data


cdef int _loss_grad_impl(
    Net* net, const floating* params, const floating* X, CSR* csr, Py_ssize_t n,
    const floating* Y, const floating* sw, double s, double alpha,
    floating* grads, floating* grads2, int n_threads, floating* acts, floating* deltas,
    Py_ssize_t rows, double* value, Py_ssize_t check_signals,
) except -1 nogil:
    """Full-data loss into ``value``; takes the GIL between blocks only to check for
    signals (a full pass over a large X can take seconds).

    With ``grads2``, every block is cut in two halves as the split epoch cuts a
    minibatch: half h accumulates into its own buffer and workspaces (the second half's
    at ``net.work_size``), on a team of ``n_threads`` (1 or 2), and the normalisation
    adds the two. The halves do not depend on the team, so neither does the result."""
    cdef double data = 0.0, sq = 0.0
    cdef double part[2]
    cdef int stop = 0
    if grads2 == NULL:
        data = _loss_grad_blocks(net, params, X, csr, n, Y, sw, grads, acts, deltas, rows,
                                 -1, check_signals != 0, &stop)
    else:
        part[0] = part[1] = 0.0
        n_threads = fp_team_threads(n_threads)
        with parallel(num_threads=n_threads):
            _loss_grad_halves(net, params, X, csr, n, Y, sw, grads, grads2, acts, deltas,
                              rows, check_signals != 0, &stop, part)
        data = part[0] + part[1]
    if stop:
        return -1   # the signal handler's exception is set
    # normalise: (raw + alpha W) / s on weights, raw / s on intercepts
    if floating is float:
        sq = fp_normalise_f(grads, grads2, params, net.n_coef, net.n_params,
                            <float> alpha, <float> s)
    else:
        sq = fp_normalise_d(grads, grads2, params, net.n_coef, net.n_params, alpha, s)
    value[0] = data / s + 0.5 * alpha * sq / s
    return 0


cdef void _loss_grad_halves(
    Net* net, const floating* params, const floating* X, const CSR* csr, Py_ssize_t n,
    const floating* Y, const floating* sw, floating* grads, floating* grads2,
    floating* acts, floating* deltas, Py_ssize_t rows, bint check_signals, int* stop,
    double* part,
) noexcept nogil:
    """One team member's halves of ``_loss_grad_impl`` (the halves never share a
    buffer, so the only meeting point is the end of the parallel region). Only thread
    0, the caller's thread, checks for signals."""
    cdef int tid = fp_thread_id(), nt = fp_team_size(), h = tid
    cdef unsigned long long fpu = fp_denormals_flush()
    cdef CSR my_csr
    cdef CSR* csr_h = NULL
    if csr != NULL:
        my_csr = csr[0]
        csr_h = &my_csr
    while h < 2:
        part[h] = _loss_grad_blocks(
            net, params, X, csr_h, n, Y, sw, grads if h == 0 else grads2,
            acts + h * net.work_size, deltas + h * net.work_size, rows, h,
            check_signals and tid == 0, stop)
        h += nt
    fp_denormals_restore(fpu)


def loss_grad(
    const Py_ssize_t[::1] sizes not None, int activation, int loss,
    const floating[::1] params not None,          # IN  (n_params,)
    const floating[:, ::1] X not None,            # IN  (n_samples, sizes[0])
    const floating[:, ::1] Y not None,            # IN  (n_samples, sizes[-1])
    const floating[::1] sample_weight not None,   # IN  (n_samples,) or (0,) for none
    double alpha,
    floating[::1] grads not None,                 # OUT (n_params,)
    floating[::1] acts not None,                  # scratch (rows * sum(sizes[1:]),)
    floating[::1] deltas not None,                # scratch, as acts (twice as much when split)
    Py_ssize_t rows,                     # block size the scratch was sized for
    floating[::1] grads2 not None,                # scratch (n_params,) when split_rows(rows) > 0, else unused
    int n_threads,                       # team size for split blocks (1 or 2): BLAS must run
                                         #     on one thread when it is 2
    double huber_delta=1.0,              # loss huber's delta (> 0; other losses ignore it)
):
    """Full-data loss and gradient (normalised, L2 included), in blocks of ``rows``.

    Gradients are sums over samples, so processing X block by block with accumulating
    GEMMs (beta = 1) gives the full gradient with memory bounded by the block. Blocks of
    at least ``SPLIT_MIN_BATCH`` rows are split in halves as ``train_epoch`` splits its
    minibatches (two half-workspaces of ``split_rows(rows)`` rows, ``grads2``, a team of
    ``n_threads``); the result does not depend on ``n_threads``.
    Returns the loss as a Python float.
    """
    cdef Py_ssize_t n = X.shape[0], sig
    cdef double s, value
    if rows < 1:
        raise ValueError("rows must be >= 1")
    cdef Py_ssize_t half = _split_rows(rows) if rows >= SPLIT_MIN_BATCH else 0
    cdef Net net = _net_new(sizes, activation, loss, half if half > 0 else rows,
                            huber_delta)
    try:
        _check_split(&net, PASS_ROWS if half > 0 else PASS_WHOLE, 2, acts.shape[0],
                     deltas.shape[0], grads2.shape[0])
        _check_loss_grad(&net, params.shape[0], grads.shape[0], acts.shape[0],
                         deltas.shape[0], n, Y.shape[0], Y.shape[1])
        _check_rows("X", X.shape[0], n, X.shape[1], n, sizes[0])
        s = _sample_weight_sum(sample_weight, n)
        sig = _signal_interval()
        with nogil:
            _loss_grad_impl(
                &net, &params[0], &X[0, 0], NULL, n, &Y[0, 0],
                &sample_weight[0] if sample_weight.shape[0] > 0 else NULL, s, alpha,
                &grads[0], &grads2[0] if half > 0 else NULL, 2 if n_threads >= 2 else 1,
                &acts[0], &deltas[0], rows, &value, sig)
        return value
    finally:
        free(net.sizes)


def loss_grad_csr(
    const Py_ssize_t[::1] sizes not None, int activation, int loss,
    const floating[::1] params not None,
    const floating[::1] X_data not None,          # IN  CSR X: values (nnz,)
    const Py_ssize_t[::1] X_indices not None,     # IN  (nnz,)
    const Py_ssize_t[::1] X_indptr not None,      # IN  (n_samples + 1,)
    const floating[:, ::1] Y not None,
    const floating[::1] sample_weight not None,
    double alpha,
    floating[::1] grads not None, floating[::1] acts not None, floating[::1] deltas not None, Py_ssize_t rows,
    floating[::1] grads2 not None, int n_threads, double huber_delta=1.0,
):
    """``loss_grad`` for a CSR X: the first layer's products are sparse x dense."""
    cdef Py_ssize_t n, sig
    cdef double s, value
    cdef CSR csr
    if rows < 1:
        raise ValueError("rows must be >= 1")
    cdef Py_ssize_t half = _split_rows(rows) if rows >= SPLIT_MIN_BATCH else 0
    cdef Net net = _net_new(sizes, activation, loss, half if half > 0 else rows,
                            huber_delta)
    try:
        _check_split(&net, PASS_ROWS if half > 0 else PASS_WHOLE, 2, acts.shape[0],
                     deltas.shape[0], grads2.shape[0])
        n = _check_csr(X_data.shape[0], X_indices, X_indptr, sizes[0])
        _check_loss_grad(&net, params.shape[0], grads.shape[0], acts.shape[0],
                         deltas.shape[0], n, Y.shape[0], Y.shape[1])
        s = _sample_weight_sum(sample_weight, n)
        csr.data = &X_data[0] if X_data.shape[0] > 0 else NULL
        csr.indices = &X_indices[0] if X_indices.shape[0] > 0 else NULL
        csr.indptr = &X_indptr[0]
        csr.rows = NULL
        csr.row0 = 0
        sig = _signal_interval()
        with nogil:
            _loss_grad_impl(
                &net, &params[0], NULL, &csr, n, &Y[0, 0],
                &sample_weight[0] if sample_weight.shape[0] > 0 else NULL, s, alpha,
                &grads[0], &grads2[0] if half > 0 else NULL, 2 if n_threads >= 2 else 1,
                &acts[0], &deltas[0], rows, &value, sig)
        return value
    finally:
        free(net.sizes)


cdef void _forward_impl(
    Net* net, const floating* params, const floating* X, CSR* csr, Py_ssize_t n,
    floating* out, floating* acts, Py_ssize_t rows,
) noexcept nogil:
    cdef Py_ssize_t start = 0, nb
    cdef Py_ssize_t c = net.sizes[net.n_layers], last = net.a_off[net.n_layers - 1]
    while start < n:
        nb = rows if n - start > rows else n - start
        if csr != NULL:
            csr.row0 = start
        _forward(net, params, X + start * net.sizes[0] if X != NULL else NULL, csr, nb,
                 acts, 0, 0)
        _output_activation(acts + last, nb, c, net.loss)
        memcpy(out + start * c, acts + last, nb * c * sizeof(floating))
        start += nb


def forward(
    const Py_ssize_t[::1] sizes not None, int activation, int loss,
    const floating[::1] params not None,          # IN  (n_params,)
    const floating[:, ::1] X not None,            # IN  (n_samples, sizes[0])
    floating[:, ::1] out not None,                # OUT (n_samples, sizes[-1]) network output P
    floating[::1] acts not None,                  # scratch (rows * sum(sizes[1:]),)
    Py_ssize_t rows,
):
    """The network output P = g(Z_L) for X, in blocks of ``rows`` samples."""
    cdef Py_ssize_t n = X.shape[0]
    if rows < 1:
        raise ValueError("rows must be >= 1")
    cdef Net net = _net_new(sizes, activation, loss, rows)
    try:
        _check_len("params", params.shape[0], net.n_params)
        _check_len("acts", acts.shape[0], net.work_size)
        _check_rows("X", X.shape[0], n, X.shape[1], n, sizes[0])
        _check_rows("out", out.shape[0], n, out.shape[1], n, sizes[net.n_layers])
        if n == 0:
            return
        with nogil:
            _forward_impl(&net, &params[0], &X[0, 0], NULL, n, &out[0, 0], &acts[0], rows)
    finally:
        free(net.sizes)


def forward_csr(
    const Py_ssize_t[::1] sizes not None, int activation, int loss,
    const floating[::1] params not None,
    const floating[::1] X_data not None, const Py_ssize_t[::1] X_indices not None,
    const Py_ssize_t[::1] X_indptr not None,
    floating[:, ::1] out not None, floating[::1] acts not None, Py_ssize_t rows,
):
    """``forward`` for a CSR X."""
    cdef Py_ssize_t n
    cdef CSR csr
    if rows < 1:
        raise ValueError("rows must be >= 1")
    cdef Net net = _net_new(sizes, activation, loss, rows)
    try:
        n = _check_csr(X_data.shape[0], X_indices, X_indptr, sizes[0])
        _check_len("params", params.shape[0], net.n_params)
        _check_len("acts", acts.shape[0], net.work_size)
        _check_rows("out", out.shape[0], n, out.shape[1], n, sizes[net.n_layers])
        if n == 0:
            return
        csr.data = &X_data[0] if X_data.shape[0] > 0 else NULL
        csr.indices = &X_indices[0] if X_indices.shape[0] > 0 else NULL
        csr.indptr = &X_indptr[0]
        csr.rows = NULL
        csr.row0 = 0
        with nogil:
            _forward_impl(&net, &params[0], NULL, &csr, n, &out[0, 0], &acts[0], rows)
    finally:
        free(net.sizes)


cdef void _output_jacobian(
    const floating* P,        # IN  (n, c) outputs, after the output activation
    Py_ssize_t n, Py_ssize_t c, Py_ssize_t k, int loss,
    floating* D,              # OUT (n, c) d P[:, k] / d Z_L
) noexcept nogil:
    """Seed of output k's backward pass. Every output activation acts per output but
    softmax, whose every output depends on every logit: dP_k/dZ_j = P_k (d_kj - P_j)."""
    cdef Py_ssize_t i, j
    cdef const floating* p
    cdef floating* d
    for i in range(n):
        p = P + i * c
        d = D + i * c
        if loss == LOSS_LOG:
            for j in range(c):
                d[j] = -p[k] * p[j]
            d[k] = d[k] + p[k]
        else:
            memset(d, 0, c * sizeof(floating))
            if loss == LOSS_SQUARED or loss == LOSS_HUBER or loss == LOSS_ABSOLUTE:
                d[k] = 1  # the identity
            elif loss == LOSS_POISSON:
                d[k] = p[k]
            else:  # LOSS_BINARY_LOG: the logistic
                d[k] = p[k] * (1 - p[k])


cdef void _input_grad_impl(
    Net* net, const floating* params, const floating* X, CSR* csr, Py_ssize_t n,
    floating* out, floating* acts, floating* deltas, floating* colsum,
    Py_ssize_t rows,
) noexcept nogil:
    """Per block of rows: one forward pass, then one backward pass per output k, from
    d P_k / d Z_L down to d P_k / d X = delta_1 W_1^T, written to out[rows, k, :]
    (rows c * n_features apart). ``colsum`` (max hidden width) takes the column sums
    that the shared derivative pass computes and this use does not need."""
    cdef int l, L = net.n_layers
    cdef Py_ssize_t start = 0, nb, k
    cdef Py_ssize_t c = net.sizes[L], n_feat = net.sizes[0], last = net.a_off[L - 1]
    cdef Py_ssize_t n_in, n_out
    cdef floating* P
    while start < n:
        nb = rows if n - start > rows else n - start
        if csr != NULL:
            csr.row0 = start
        _forward(net, params, X + start * n_feat if X != NULL else NULL, csr, nb, acts,
                 0, 0)
        P = acts + last
        _output_activation(P, nb, c, net.loss)
        for k in range(c):
            _output_jacobian(P, nb, c, k, net.loss, deltas + last)
            for l in range(L - 1, 0, -1):
                n_in = net.sizes[l]
                n_out = net.sizes[l + 1]
                _gemm(False, True, <int> nb, <int> n_in, <int> n_out,
                      <floating> 1.0, deltas + net.a_off[l], <int> n_out,
                      params + net.w_off[l], <int> n_out,
                      <floating> 0.0, deltas + net.a_off[l - 1], <int> n_in)
                _derivative_colsum(deltas + net.a_off[l - 1], acts + net.a_off[l - 1],
                                   nb, n_in, n_in, net.activation, colsum, net.z_shift)
            _gemm(False, True, <int> nb, <int> n_feat, <int> net.sizes[1],
                  <floating> 1.0, deltas, <int> net.sizes[1],
                  params + net.w_off[0], <int> net.sizes[1],
                  <floating> 0.0, out + (start * c + k) * n_feat, <int> (c * n_feat))
        start += nb


def input_grad(
    const Py_ssize_t[::1] sizes not None, int activation, int loss,
    const floating[::1] params not None,          # IN  (n_params,)
    const floating[:, ::1] X not None,            # IN  (n_samples, sizes[0])
    floating[:, :, ::1] out not None,             # OUT (n_samples, sizes[-1], sizes[0])
    floating[::1] acts not None,                  # scratch (rows * sum(sizes[1:]),)
    floating[::1] deltas not None,                # scratch, as acts
    floating[::1] colsum not None,                # scratch (max(sizes[1:-1]) or 1,)
    Py_ssize_t rows,
):
    """d P[i, k] / d X[i, j] into out[i, k, j], in blocks of ``rows`` samples."""
    cdef Py_ssize_t n = X.shape[0]
    if rows < 1:
        raise ValueError("rows must be >= 1")
    cdef Net net = _net_new(sizes, activation, loss, rows)
    try:
        _check_rows("X", X.shape[0], n, X.shape[1], n, sizes[0])
        _check_input_grad(&net, n, params.shape[0], acts.shape[0], deltas.shape[0],
                          colsum.shape[0], (out.shape[0], out.shape[1], out.shape[2]))
        if n == 0:
            return
        with nogil:
            _input_grad_impl(&net, &params[0], &X[0, 0], NULL, n, &out[0, 0, 0],
                             &acts[0], &deltas[0], &colsum[0], rows)
    finally:
        free(net.sizes)


def input_grad_csr(
    const Py_ssize_t[::1] sizes not None, int activation, int loss,
    const floating[::1] params not None,
    const floating[::1] X_data not None, const Py_ssize_t[::1] X_indices not None,
    const Py_ssize_t[::1] X_indptr not None,
    floating[:, :, ::1] out not None, floating[::1] acts not None,
    floating[::1] deltas not None, floating[::1] colsum not None, Py_ssize_t rows,
):
    """``input_grad`` for a CSR X."""
    cdef Py_ssize_t n
    cdef CSR csr
    if rows < 1:
        raise ValueError("rows must be >= 1")
    cdef Net net = _net_new(sizes, activation, loss, rows)
    try:
        n = _check_csr(X_data.shape[0], X_indices, X_indptr, sizes[0])
        _check_input_grad(&net, n, params.shape[0], acts.shape[0], deltas.shape[0],
                          colsum.shape[0], (out.shape[0], out.shape[1], out.shape[2]))
        if n == 0:
            return
        csr.data = &X_data[0] if X_data.shape[0] > 0 else NULL
        csr.indices = &X_indices[0] if X_indices.shape[0] > 0 else NULL
        csr.indptr = &X_indptr[0]
        csr.rows = NULL
        csr.row0 = 0
        with nogil:
            _input_grad_impl(&net, &params[0], NULL, &csr, n, &out[0, 0, 0], &acts[0],
                             &deltas[0], &colsum[0], rows)
    finally:
        free(net.sizes)
