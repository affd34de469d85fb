# Losses: the output activation, and the loss with its output delta in one pass.

cdef void _output_activation(
    floating* Z, Py_ssize_t n, Py_ssize_t c, int loss
) noexcept nogil:
    """Logits to outputs in place: identity, exp, softmax or logistic."""
    cdef Py_ssize_t i, j
    cdef floating* row
    cdef floating zmax, s
    if loss == LOSS_SQUARED or loss == LOSS_HUBER or loss == LOSS_ABSOLUTE:
        return  # the identity
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
    floating* D,              # OUT (n, c) delta = w_i * d ell / d z (P - Y for the
                              #     canonical links)
    floating* gb,             # INOUT (c,) intercept gradient: += column sums of D
) noexcept nogil:
    """Output activation, loss and delta in one pass over the logits.

    Returns sum_i w_i * ell(y_i, z_i) in double. With the canonical link of each loss,
    d ell / d z = P - Y, so the delta needs no derivative of the output activation.
    huber and absolute_error (identity output) have their own: the residual clipped to
    [-delta, delta], and its sign (0 at 0).
    """
    cdef Py_ssize_t i, j, c = net.sizes[net.n_layers]
    cdef int loss = net.loss
    cdef const floating* z
    cdef const floating* y
    cdef floating* d
    cdef floating w = 1, p, zmax, s, diff, a, dl = <floating> net.huber_delta
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
        elif loss == LOSS_HUBER:
            # ell = r^2 / 2 for |r| <= delta, else delta (|r| - delta / 2);  r = z - y
            for j in range(c):
                diff = z[j] - y[j]
                a = diff if diff >= 0 else -diff
                if a <= dl:
                    row_loss += 0.5 * (<double> diff) * diff
                    d[j] = w * diff
                else:
                    row_loss += (<double> dl) * (a - 0.5 * (<double> dl))
                    # (a NaN residual stays NaN, as in the other losses)
                    d[j] = w * (dl if diff > 0 else (-dl if diff < 0 else diff))
        elif loss == LOSS_ABSOLUTE:
            # ell = |r|;  d ell / d z = sign(r), and 0 at r = 0
            for j in range(c):
                diff = z[j] - y[j]
                if diff > 0:
                    row_loss += diff
                    d[j] = w
                elif diff < 0:
                    row_loss -= diff
                    d[j] = -w
                else:  # r = 0 (or NaN, which stays NaN)
                    row_loss += diff
                    d[j] = w * diff
        else:  # LOSS_POISSON: ell = y log y - y z - y + e^z  (half Poisson deviance)
            for j in range(c):
                p = _exp(z[j])
                row_loss += fp_xlogx_d(y[j]) - (<double> y[j]) * z[j] - y[j] + p
                d[j] = w * (p - y[j])
        total += w * row_loss
        for j in range(c):
            gb[j] = gb[j] + d[j]
    return total
