# Losses: the output activation, and the loss with its output delta in one pass.

cdef void _output_activation(
    floating* Z, Py_ssize_t n, Py_ssize_t c, int loss
) noexcept nogil:
    """Logits to outputs in place: identity, exp, softmax or logistic."""
    cdef Py_ssize_t i, j
    cdef floating* row
    cdef floating zmax, s
    for i in range(n):
        row = Z + i * c
        if loss == LOSS_POISSON:
            for j in range(c):
                row[j] = _exp(row[j])
        elif loss == LOSS_BINARY_LOG:
            for j in range(c):
                row[j] = _sigmoid(row[j])
        elif loss == LOSS_LOG:
            zmax = row[0]
            for j in range(1, c):
                if row[j] > zmax:
                    zmax = row[j]
            s = 0
            for j in range(c):
                row[j] = _exp(row[j] - zmax)
                s = s + row[j]
            for j in range(c):
                row[j] = row[j] / s


cdef double _loss_delta(
    Net* net,
    const floating* Z,        # IN  (n, c) output logits
    const floating* Y,        # IN  (n, c) targets
    const floating* sw,       # IN  (n,) sample weights, or NULL for all ones
    Py_ssize_t n,
    floating* D,              # OUT (n, c) delta = w_i * (P - Y)
    floating* gb,             # INOUT (c,) intercept gradient: += column sums of D
) noexcept nogil:
    """Output activation, loss and delta in one pass over the logits.

    Returns sum_i w_i * ell(y_i, z_i) in double. With the canonical link of each loss,
    d ell / d z = P - Y, so the delta needs no derivative of the output activation.
    """
    cdef Py_ssize_t i, j, c = net.sizes[net.n_layers]
    cdef int loss = net.loss
    cdef const floating* z
    cdef const floating* y
    cdef floating* d
    cdef floating w = 1, p, zmax, s, diff
    cdef double total = 0.0, row_loss, lse, ysum
    for i in range(n):
        z = Z + i * c
        y = Y + i * c
        d = D + i * c
        if sw != NULL:
            w = sw[i]
        row_loss = 0.0
        if loss == LOSS_SQUARED:
            for j in range(c):
                diff = z[j] - y[j]
                row_loss += 0.5 * (<double> diff) * diff
                d[j] = w * diff
        elif loss == LOSS_BINARY_LOG:
            # ell = log(1 + e^z) - y z   (= -y log s(z) - (1 - y) log(1 - s(z)))
            for j in range(c):
                row_loss += _log1pexp(z[j]) - (<double> y[j]) * z[j]
                d[j] = w * (_sigmoid(z[j]) - y[j])
        elif loss == LOSS_LOG:
            # ell = sum_k y_k (logsumexp(z) - z_k), from max-shifted logits
            zmax = z[0]
            for j in range(1, c):
                if z[j] > zmax:
                    zmax = z[j]
            s = 0
            for j in range(c):
                p = _exp(z[j] - zmax)
                d[j] = p
                s = s + p
            lse = zmax + _log_double(s)
            ysum = 0.0
            for j in range(c):
                row_loss -= (<double> y[j]) * z[j]
                ysum += y[j]
            # d ell / d z_k = p_k * sum(y) - y_k  (= p_k - y_k for one-hot rows)
            for j in range(c):
                d[j] = w * ((d[j] / s) * <floating> ysum - y[j])
            row_loss += ysum * lse
        else:  # LOSS_POISSON: ell = y log y - y z - y + e^z  (half Poisson deviance)
            for j in range(c):
                p = _exp(z[j])
                row_loss += fp_xlogx_d(y[j]) - (<double> y[j]) * z[j] - y[j] + p
                d[j] = w * (p - y[j])
        total += w * row_loss
        for j in range(c):
            gb[j] = gb[j] + d[j]
    return total
