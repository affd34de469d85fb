# Argument and buffer checks: every def entry point checks shapes, indices and buffer
# lengths here, before it releases the GIL.

cdef _check_len(str name, Py_ssize_t got, Py_ssize_t need):
    if got < need:
        raise ValueError(f"{name} has {got} entries, needs at least {need}.")


cdef Py_ssize_t _check_csr(
    Py_ssize_t nnz_data, const Py_ssize_t[::1] indices, const Py_ssize_t[::1] indptr,
    Py_ssize_t n_features,
) except -1:
    """Check a CSR structure completely (O(nnz)); return its number of rows."""
    cdef Py_ssize_t n = indptr.shape[0] - 1, i, k, nnz
    if n < 0:
        raise ValueError("indptr must have n_samples + 1 entries.")
    if indptr[0] != 0:
        raise ValueError("indptr[0] must be 0.")
    for i in range(n):
        if indptr[i + 1] < indptr[i]:
            raise ValueError("indptr must be non-decreasing.")
    nnz = indptr[n]
    if nnz > nnz_data or nnz > indices.shape[0]:
        raise ValueError("indptr points past the end of data / indices.")
    for k in range(nnz):
        if indices[k] < 0 or indices[k] >= n_features:
            raise ValueError(f"column index {indices[k]} out of range for "
                             f"{n_features} features.")
    return n


cdef int _check_rows(str name, Py_ssize_t rows, Py_ssize_t n, Py_ssize_t width,
                     Py_ssize_t want_rows, Py_ssize_t want_width) except -1:
    if rows != want_rows or width != want_width:
        raise ValueError(f"{name} has shape ({rows}, {width}), expected "
                         f"({want_rows}, {want_width}).")
    return 0


cdef double _sample_weight_sum(const floating[::1] sample_weight, Py_ssize_t n) except? -1:
    cdef Py_ssize_t i
    cdef double s = 0.0
    if sample_weight.shape[0] == 0:
        return <double> n
    if sample_weight.shape[0] != n:
        raise ValueError("sample_weight must have n_samples entries (or none).")
    for i in range(n):
        s += sample_weight[i]
    if not s > 0:
        raise ValueError("sample weights must have a positive sum.")
    return s


cdef int _check_loss_grad(Net* net, Py_ssize_t n_params, Py_ssize_t n_grads,
                          Py_ssize_t n_acts, Py_ssize_t n_deltas, Py_ssize_t n,
                          Py_ssize_t y_rows, Py_ssize_t y_cols) except -1:
    _check_len("params", n_params, net.n_params)
    _check_len("grads", n_grads, net.n_params)
    _check_len("acts", n_acts, net.work_size)
    _check_len("deltas", n_deltas, net.work_size)
    if n < 1:
        raise ValueError("X has 0 samples; at least one is required.")
    _check_rows("Y", y_rows, n, y_cols, n, net.sizes[net.n_layers])
    return 0


cdef int _check_input_grad(Net* net, Py_ssize_t n, Py_ssize_t n_params,
                           Py_ssize_t n_acts, Py_ssize_t n_deltas, Py_ssize_t n_colsum,
                           tuple out_shape) except -1:
    cdef int l
    cdef Py_ssize_t widest = 1
    for l in range(1, net.n_layers):
        if net.sizes[l] > widest:
            widest = net.sizes[l]
    _check_len("params", n_params, net.n_params)
    _check_len("acts", n_acts, net.work_size)
    _check_len("deltas", n_deltas, net.work_size)
    _check_len("colsum", n_colsum, widest)
    if out_shape != (n, net.sizes[net.n_layers], net.sizes[0]):
        raise ValueError(
            f"out must have shape {(n, net.sizes[net.n_layers], net.sizes[0])}, got "
            f"{out_shape}.")
    if net.sizes[net.n_layers] * net.sizes[0] > 2**31 - 1:
        raise OverflowError("n_outputs x n_features is too large for a BLAS stride")
    return 0


cdef int _check_split(Net* net, int kind, int parts, Py_ssize_t n_acts, Py_ssize_t n_deltas,
                      Py_ssize_t n_grads2) except -1:
    """A row split needs a workspace per part and a gradient buffer for every part
    after the first."""
    if kind == PASS_ROWS:
        _check_len("acts", n_acts, parts * net.work_size)
        _check_len("deltas", n_deltas, parts * net.work_size)
        _check_len("grads2", n_grads2, (parts - 1) * net.n_params)
    return 0


cdef int _check_epoch(
    Net* net, Py_ssize_t n, Py_ssize_t n_params, Py_ssize_t n_grads,
    Py_ssize_t y_rows, Py_ssize_t y_cols, Py_ssize_t n_sw, Py_ssize_t n_order,
    const Py_ssize_t[::1] order, Py_ssize_t batch_size,
    Py_ssize_t n_acts, Py_ssize_t n_deltas, bint dense, Py_ssize_t xb_rows,
    Py_ssize_t xb_cols, Py_ssize_t yb_rows, Py_ssize_t yb_cols, Py_ssize_t n_swb,
    int solver, Py_ssize_t n_state_1, Py_ssize_t n_state_2, Py_ssize_t n_hyper,
    Py_ssize_t n_counter,
) except -1:
    cdef Py_ssize_t i
    _check_len("params", n_params, net.n_params)
    _check_len("grads", n_grads, net.n_params)
    _check_len("acts", n_acts, net.work_size)
    _check_len("deltas", n_deltas, net.work_size)
    _check_len("state_1", n_state_1, net.n_params)
    if solver == SOLVER_ADAM or solver == SOLVER_ADAMW:
        _check_len("state_2", n_state_2, net.n_params)
    elif solver != SOLVER_SGD and solver != SOLVER_RMSPROP:
        raise ValueError(f"unknown solver code {solver}")
    # (lr, momentum, nesterov, beta_1, beta_2, epsilon), then rmsprop's and adamw's
    # (rho, weight_decay)
    _check_len("hyper", n_hyper,
               8 if solver == SOLVER_RMSPROP or solver == SOLVER_ADAMW else 6)
    _check_len("counter", n_counter, 1)
    if n < 1:
        raise ValueError("X has 0 samples; at least one is required.")
    _check_rows("Y", y_rows, n, y_cols, n, net.sizes[net.n_layers])
    if n_sw != 0 and n_sw != n:
        raise ValueError("sample_weight must have n_samples entries (or none).")
    if n_order != 0:
        for i in range(n_order):
            if order[i] < 0 or order[i] >= n:
                raise ValueError(f"order[{i}] = {order[i]} is out of range.")
        if dense and (xb_rows < batch_size or xb_cols != net.sizes[0]):
            raise ValueError("x_buf must have shape (batch_size, n_features).")
        if yb_rows < batch_size or yb_cols != net.sizes[net.n_layers]:
            raise ValueError("y_buf must have shape (batch_size, n_outputs).")
        if n_sw != 0:
            _check_len("sw_buf", n_swb, batch_size)
    return 0


cdef inline void _check_max_norm(double max_norm) except *:
    if not (max_norm >= 0):
        raise ValueError(f"max_grad_norm must be >= 0 (0 for no clipping), got {max_norm}.")
