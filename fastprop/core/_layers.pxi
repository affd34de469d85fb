# Layers: the scalar helpers, the GEMM wrapper, the network's layout in the flat
# parameter vector and the workspaces, bias + activation, CSR products, and the
# forward and backward passes of a block of rows.

# Elementwise passes smaller than this many entries stay on one thread. OpenBLAS's
# worker threads keep spinning for a while after each GEMM, so an OpenMP team woken
# between two GEMMs competes with them for the cores (measured by bench_core.py: see
# benchmarks/README.md). Only passes far larger than a training block go parallel.
cdef Py_ssize_t PARALLEL_MIN_ENTRIES = 1 << 24


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return fp_exp_f(x)
    else:
        return fp_exp_d(x)


cdef inline floating _sigmoid(floating x) noexcept nogil:
    if floating is float:
        return fp_sigmoid_f(x)
    else:
        return fp_sigmoid_d(x)


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return fp_sqrt_f(x)
    else:
        return fp_sqrt_d(x)


cdef inline double _log1pexp(floating x) noexcept nogil:
    if floating is float:
        return fp_log1pexp_f(x)
    else:
        return fp_log1pexp_d(x)


# Which ?gemm_ the products call (fastprop/core/_blas.py chooses, once, at import):
# scipy's cython_blas, or the ?gemm_ of another OpenBLAS the process has loaded (NumPy's),
# with 32- or 64-bit integers. The same Fortran interface either way.
ctypedef void (*_gemm32_fn)(const char*, const char*, const int*, const int*, const int*,
                            const void*, const void*, const int*, const void*, const int*,
                            const void*, void*, const int*) noexcept nogil
ctypedef void (*_gemm64_fn)(const char*, const char*, const int64_t*, const int64_t*,
                            const int64_t*, const void*, const void*, const int64_t*,
                            const void*, const int64_t*, const void*, void*,
                            const int64_t*) noexcept nogil
cdef void* _gemm_route[2]  # float, double: another library's ?gemm_, NULL for scipy's
_gemm_route[0] = NULL
_gemm_route[1] = NULL
cdef bint _gemm_route_ilp64 = False


cdef inline void _blas_gemm(
    bint trans_a, bint trans_b, int m, int n, int k,
    floating alpha, const floating* a, int lda, const floating* b, int ldb,
    floating beta, floating* c, int ldc,
) noexcept nogil:
    """Row-major C (m, n) = alpha * op(A) @ op(B) + beta * C, via column-major BLAS."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef void* route = _gemm_route[1 if floating is double else 0]
    cdef int64_t m64, n64, k64, lda64, ldb64, ldc64
    if route != NULL:
        if _gemm_route_ilp64:
            m64, n64, k64, lda64, ldb64, ldc64 = m, n, k, lda, ldb, ldc
            (<_gemm64_fn> route)(&tb, &ta, &n64, &m64, &k64, &alpha, b, &ldb64, a, &lda64,
                                 &beta, c, &ldc64)
        else:
            (<_gemm32_fn> route)(&tb, &ta, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c,
                                 &ldc)
    elif floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
              &beta, c, &ldc)


def _route_gemm(uintptr_t sgemm_address, uintptr_t dgemm_address, bint ilp64):
    """Send every product to the Fortran ``sgemm_`` and ``dgemm_`` at these addresses,
    with 64-bit integers if ``ilp64``; (0, 0) goes back to scipy's cython_blas. For
    fastprop/core/_blas.py, at import, before any product: a product running while the
    route changes could read half of it."""
    global _gemm_route_ilp64
    if (sgemm_address == 0) != (dgemm_address == 0):
        raise ValueError("sgemm and dgemm are routed together")
    _gemm_route_ilp64 = ilp64
    _gemm_route[0] = <void*> sgemm_address
    _gemm_route[1] = <void*> dgemm_address


# A thread's first product in each precision is preceded by one product, on zeros, that
# warms the thread's BLAS workspace. OpenBLAS packs op(B) of its column-major product
# (fastprop's A: _blas_gemm swaps the operands) into a workspace of its own per thread,
# and its x86 kernels prefetch the packed panel after the one they multiply. When the
# product's rows (fastprop's columns: a layer's units) fit one block, every panel is
# packed into the same slot, so the prefetch lands one panel further, in workspace
# pages that no product ever wrote. Under nested paging (virtual machines) each
# prefetch of a page that is not present walks both page tables and caches nothing,
# every time: on a 2-core AMD EPYC VM, a W3 minibatch's 512 x 784 times 784 x 256
# float32 product ran at 12 GFLOP/s so, and at 36 GFLOP/s once the pages were present
# (benchmarks/README.md, "The BLAS workspace"). A product with rows enough for several
# blocks packs op(B) across the workspace and makes those pages present for the
# thread's life: BLAS_WARM_COLS columns of fastprop's C do, in float32 and float64,
# with OpenBLAS's blockings for x86, in about 10 ms.
cdef int BLAS_WARM_ROWS = 256
cdef int BLAS_WARM_DEPTH = 256
cdef int BLAS_WARM_COLS = 1024


cdef void _warm_blas(floating alpha) noexcept nogil:
    """One BLAS_WARM_ROWS x BLAS_WARM_DEPTH times BLAS_WARM_DEPTH x BLAS_WARM_COLS
    product on zeros, in alpha's precision (see BLAS_WARM_COLS). Skipped when the
    scratch cannot be allocated: it changes only the speed of later products."""
    cdef int m = BLAS_WARM_ROWS, k = BLAS_WARM_DEPTH, n = BLAS_WARM_COLS
    cdef floating* a = <floating*> calloc(<size_t> m * k + <size_t> k * n
                                          + <size_t> m * n, sizeof(floating))
    if a == NULL:
        return
    _blas_gemm(False, False, m, n, k, alpha, a, k, a + <size_t> m * k, n,
               <floating> 0.0, a + <size_t> m * k + <size_t> k * n, n)
    free(a)


def blas_warmed():
    """(float32, float64): whether the calling thread has warmed its BLAS workspace in
    each precision, as its first product through fastprop does (see BLAS_WARM_COLS)."""
    return bool(fp_blas_is_warm(0)), bool(fp_blas_is_warm(1))


cdef inline void _gemm(
    bint trans_a, bint trans_b, int m, int n, int k,
    floating alpha, const floating* a, int lda, const floating* b, int ldb,
    floating beta, floating* c, int ldc,
) noexcept nogil:
    """Row-major C (m, n) = alpha * op(A) @ op(B) + beta * C, via column-major BLAS; the
    calling thread's first product in this precision warms its workspace first."""
    if fp_blas_warm_first(floating is double):
        _warm_blas(<floating> 1.0)
    _blas_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


cdef inline bint _keeps_z(int activation) noexcept nogil:
    """Whether the activation's derivative reads the pre-activation Z (gelu, silu: not a
    function of A = f(Z)), which the forward pass then keeps."""
    return _act_keeps_z(activation)


cdef void _net_set_rows(Net* net, Py_ssize_t rows) noexcept nogil:
    """Lay the workspaces out for ``rows`` rows (within the overflow bound that _net_new
    checked): A_1..A_L one after another, then, for gelu and silu, Z_1..Z_{L-1} of the
    hidden layers at the same offsets from ``z_shift``."""
    cdef Py_ssize_t l, off = 0
    for l in range(net.n_layers):
        net.a_off[l] = off
        off += rows * net.sizes[l + 1]
    net.work_size = off
    net.z_shift = 0
    if _keeps_z(net.activation) and net.n_layers > 1:
        net.z_shift = off
        net.work_size = off + net.a_off[net.n_layers - 1]


cdef Net _net_new(const Py_ssize_t[::1] sizes, int activation, int loss,
                  Py_ssize_t rows, double huber_delta=1.0) except *:
    """Fill a Net; the caller frees net.sizes (one block holds all four arrays).
    ``huber_delta`` (> 0) is read by loss LOSS_HUBER only."""
    cdef Net net
    cdef Py_ssize_t L = sizes.shape[0] - 1, l, off = 0
    if L < 1:
        raise ValueError("sizes must hold at least two entries (inputs and outputs).")
    if activation < ACT_IDENTITY or activation > ACT_LAST:
        raise ValueError(f"unknown activation code {activation}")
    if loss < LOSS_SQUARED or loss > LOSS_ABSOLUTE:
        raise ValueError(f"unknown loss code {loss}")
    if not huber_delta > 0:
        raise ValueError(f"huber_delta must be > 0, got {huber_delta}")
    for l in range(L + 1):
        if sizes[l] < 1 or sizes[l] > 2**31 - 1:
            raise ValueError(f"layer size {sizes[l]} out of range")
    if rows < 1:
        raise ValueError("rows must be >= 1")
    # Every count below must fit, in bytes, in a Py_ssize_t: check before computing.
    cdef Py_ssize_t limit = PY_SSIZE_T_MAX // 8, total = 0, width = 0
    for l in range(L):
        if sizes[l] > limit // sizes[l + 1]:
            raise OverflowError("the network has too many parameters")
        total += sizes[l] * sizes[l + 1] + sizes[l + 1]
        width += sizes[l + 1]
        if total > limit:
            raise OverflowError("the network has too many parameters")
    if rows > limit // (2 * width if _keeps_z(activation) else width):
        raise OverflowError(f"a workspace of {rows} rows x {width} units is too large")
    net.n_layers = <int> L
    net.sizes = <Py_ssize_t*> malloc((4 * L + 1) * sizeof(Py_ssize_t))
    if net.sizes == NULL:
        raise MemoryError()
    net.w_off = net.sizes + L + 1
    net.b_off = net.w_off + L
    net.a_off = net.b_off + L
    for l in range(L + 1):
        net.sizes[l] = sizes[l]
    for l in range(L):
        net.w_off[l] = off
        off += sizes[l] * sizes[l + 1]
    net.n_coef = off
    for l in range(L):
        net.b_off[l] = off
        off += sizes[l + 1]
    net.n_params = off
    net.activation = activation
    _net_set_rows(&net, rows)
    net.loss = loss
    net.huber_delta = huber_delta
    net.n_threads = fp_omp_max_threads()
    net.dropout = NULL
    net.dropout_seed = 0
    return net


cdef inline Py_ssize_t _rows_for(Net* net) noexcept nogil:
    """Rows a workspace was sized for, recovered from the layout."""
    cdef Py_ssize_t total = 0, l
    for l in range(net.n_layers):
        total += net.sizes[l + 1]
    return (net.z_shift if net.z_shift > 0 else net.work_size) // total


cdef void _bias_activation(
    floating* Z,              # INOUT (n, c): Z + b, then the activation, in place
    const floating* b,        # IN    (c,)
    Py_ssize_t n, Py_ssize_t c, int activation, int n_threads,
    Py_ssize_t zs,            # gelu, silu: Z + b is also kept at Z + zs (Net.z_shift)
) noexcept nogil:
    """One pass over a GEMM output: add the intercepts and apply the activation."""
    cdef Py_ssize_t i
    cdef int team
    if n_threads > 1 and n * c >= PARALLEL_MIN_ENTRIES:
        # Purely elementwise: the result does not depend on the thread count.
        team = fp_team_threads(n_threads)
        for i in prange(n, schedule="static", num_threads=team):
            _bias_activation_cols(Z + i * c, c, b, 1, c, activation, zs)
    else:
        _bias_activation_cols(Z, c, b, n, c, activation, zs)


cdef inline void _bias_activation_cols(
    floating* Z,              # INOUT (n, c), rows ld apart
    Py_ssize_t ld, const floating* b, Py_ssize_t n, Py_ssize_t c, int activation,
    Py_ssize_t zs,            # gelu, silu: Z + b is also kept at Z + zs, rows ld apart
) noexcept nogil:
    """``_bias_activation`` on a block of columns of a wider output (csrc/fp_layer.h).
    The activations after ReLU have loops of their own, chosen once per call."""
    if activation <= ACT_RELU:
        if floating is float:
            fp_bias_act_f(Z, ld, b, n, c, activation)
        else:
            fp_bias_act_d(Z, ld, b, n, c, activation)
    elif floating is float:
        fp_bias_act_ext_f(Z, ld, Z + zs, b, n, c, activation)
    else:
        fp_bias_act_ext_d(Z, ld, Z + zs, b, n, c, activation)


cdef inline Py_ssize_t _csr_row(const CSR* csr, Py_ssize_t i) noexcept nogil:
    return csr.rows[i] if csr.rows != NULL else csr.row0 + i


cdef void _csr_matmul(
    const CSR* csr, Py_ssize_t n,
    const floating* W,        # IN  (n_features, c)
    Py_ssize_t c,
    floating* Z,              # OUT (n, c) = X_block @ W
) noexcept nogil:
    """Sparse x dense product, row by row: Z[i] = sum_k x_ik W[k] over stored x_ik."""
    cdef Py_ssize_t i, k, j, r
    cdef const floating* data = <const floating*> csr.data
    cdef const floating* w
    cdef floating* z
    cdef floating v
    for i in range(n):
        r = _csr_row(csr, i)
        z = Z + i * c
        memset(z, 0, c * sizeof(floating))
        for k in range(csr.indptr[r], csr.indptr[r + 1]):
            v = data[k]
            w = W + csr.indices[k] * c
            for j in range(c):
                z[j] = z[j] + v * w[j]


cdef void _csr_t_matmul(
    const CSR* csr, Py_ssize_t n,
    const floating* D,        # IN  (n, c)
    Py_ssize_t c,
    floating* G,              # INOUT (n_features, c): G = beta * G + X_block^T @ D
    Py_ssize_t n_features,
    floating beta,
) noexcept nogil:
    """X^T D for a sparse block: each stored x_ik adds x_ik * D[i] to row k of G."""
    cdef Py_ssize_t i, k, j, r
    cdef const floating* data = <const floating*> csr.data
    cdef const floating* d
    cdef floating* g
    cdef floating v
    if beta == 0:
        memset(G, 0, n_features * c * sizeof(floating))
    for i in range(n):
        r = _csr_row(csr, i)
        d = D + i * c
        for k in range(csr.indptr[r], csr.indptr[r + 1]):
            v = data[k]
            g = G + csr.indices[k] * c
            for j in range(c):
                g[j] = g[j] + v * d[j]


cdef inline void _dropout_cols(
    Net* net, int l,          # hidden layer l (from 0): net.dropout[l] > 0
    floating* A,              # INOUT (n, c), rows ld apart: A * mask
    Py_ssize_t ld, Py_ssize_t n, Py_ssize_t c,
    Py_ssize_t b, Py_ssize_t r0, Py_ssize_t j0,   # minibatch, its first row, first unit
) noexcept nogil:
    """Inverted dropout on a block of a hidden layer's outputs (csrc/fp_dropout.h)."""
    cdef double p = net.dropout[l]
    cdef unsigned long long key = fp_dropout_key(net.dropout_seed, b, l)
    if floating is float:
        fp_dropout_apply_f(A, ld, n, c, key, r0, j0, fp_dropout_threshold(p),
                           <float> (1.0 / (1.0 - p)))
    else:
        fp_dropout_apply_d(A, ld, n, c, key, r0, j0, fp_dropout_threshold(p),
                           1.0 / (1.0 - p))


cdef inline void _dropout_derivative_colsum(
    Net* net, int l,          # hidden layer l (from 0): net.dropout[l] > 0
    floating* D,              # INOUT (n, c), rows ld apart: D * mask * f'(Z)
    const floating* A,        # IN    (n, c), rows ld apart: the dropped outputs
    Py_ssize_t n, Py_ssize_t c, Py_ssize_t ld,
    floating* gb,             # INOUT (c,): += column sums of the new D
    Py_ssize_t b, Py_ssize_t r0, Py_ssize_t j0,
) noexcept nogil:
    """``_derivative_colsum`` of a dropped layer (csrc/fp_dropout.h). The activations
    after ReLU take the mask into D and A back to f(Z) first, then their usual
    derivative pass (through A, or the kept Z)."""
    cdef double p = net.dropout[l]
    cdef unsigned long long key = fp_dropout_key(net.dropout_seed, b, l)
    if net.activation > ACT_RELU:
        if floating is float:
            fp_dropout_unscale_f(D, <float*> A, n, c, ld, key, r0, j0,
                                 fp_dropout_threshold(p), 1.0 / (1.0 - p))
        else:
            fp_dropout_unscale_d(D, <double*> A, n, c, ld, key, r0, j0,
                                 fp_dropout_threshold(p), 1.0 / (1.0 - p))
        _derivative_colsum(D, A, n, c, ld, net.activation, gb, net.z_shift)
        return
    if floating is float:
        fp_dropout_deriv_colsum_f(D, A, n, c, ld, net.activation, gb, key, r0, j0,
                                  fp_dropout_threshold(p), 1.0 / (1.0 - p))
    else:
        fp_dropout_deriv_colsum_d(D, A, n, c, ld, net.activation, gb, key, r0, j0,
                                  fp_dropout_threshold(p), 1.0 / (1.0 - p))


cdef inline bint _drops(Net* net, int l) noexcept nogil:
    """Whether hidden layer l (from 0) drops units in this pass."""
    return net.dropout != NULL and l < net.n_layers - 1 and net.dropout[l] > 0


cdef void _forward(
    Net* net,
    const floating* params,   # IN  (n_params,)
    const floating* X,        # IN  (n, sizes[0]) dense input, or NULL when csr is given
    const CSR* csr,           # IN  sparse input block, or NULL
    Py_ssize_t n,
    floating* acts,           # OUT workspace: A_1..A_{L-1}, and Z_L (output logits)
    Py_ssize_t b, Py_ssize_t r0,  # with dropout: the minibatch, its block's first row
) noexcept nogil:
    """Hidden layers through their activation (and their dropout in training); the
    output layer stops at the logits Z_L, which the loss (or ``_output_activation``)
    consumes."""
    cdef int l, L = net.n_layers
    cdef const floating* A = X
    cdef floating* Z
    cdef Py_ssize_t n_in, n_out
    for l in range(L):
        n_in = net.sizes[l]
        n_out = net.sizes[l + 1]
        Z = acts + net.a_off[l]
        if l == 0 and csr != NULL:
            _csr_matmul(csr, n, params + net.w_off[0], n_out, Z)
        else:
            _gemm(False, False, <int> n, <int> n_out, <int> n_in,
                  <floating> 1.0, A, <int> n_in, params + net.w_off[l], <int> n_out,
                  <floating> 0.0, Z, <int> n_out)
        _bias_activation(Z, params + net.b_off[l], n, n_out,
                         net.activation if l < L - 1 else ACT_IDENTITY, net.n_threads,
                         net.z_shift)
        if _drops(net, l):
            _dropout_cols(net, l, Z, n_out, n, n_out, b, r0, 0)
        A = Z


cdef inline void _derivative_colsum(
    floating* D,              # INOUT (n, c), rows ld apart: D * f'(Z), with f' written
                              #       through A = f(Z), or through Z for gelu and silu
    const floating* A,        # IN    (n, c), rows ld apart: the layer's activations
    Py_ssize_t n, Py_ssize_t c, Py_ssize_t ld, int activation,
    floating* gb,             # INOUT (c,): += column sums of the new D
    Py_ssize_t zs,            # gelu, silu: the layer's Z sits at A + zs (Net.z_shift)
) noexcept nogil:
    """delta_{l-1} = D * f'(Z) and its column sums (dL/db_{l-1}), in one pass over D
    (csrc/fp_layer.h). The activations after ReLU have loops of their own, chosen once
    per call."""
    if activation <= ACT_RELU:
        if floating is float:
            fp_deriv_colsum_f(D, A, n, c, ld, activation, gb)
        else:
            fp_deriv_colsum_d(D, A, n, c, ld, activation, gb)
    elif floating is float:
        fp_deriv_ext_f(D, A, A + zs, n, c, ld, activation, gb)
    else:
        fp_deriv_ext_d(D, A, A + zs, n, c, ld, activation, gb)


cdef inline void _backward_layer(
    Net* net, int l,
    const floating* params,   # IN  (n_params,)
    const floating* X,        # IN  (n, sizes[0]) dense input, or NULL when csr is given
    const CSR* csr,           # IN  sparse input block, or NULL
    Py_ssize_t n,
    const floating* acts,     # IN  workspace from _forward
    floating* deltas,         # INOUT workspace: reads delta_l, writes delta_{l-1}
    floating* grads,          # INOUT (n_params,) raw sums: W_l overwritten (beta=0) or
                              #       accumulated (beta=1); b_{l-1} accumulated
    floating beta,
    Py_ssize_t b, Py_ssize_t r0,  # with dropout: the minibatch, its block's first row
) noexcept nogil:
    """Layer l of the backward pass:
    dL/dW_l = A_{l-1}^T delta_l;  delta_{l-1} = (delta_l W_l^T) * f'(A_{l-1}),
    with the column sums of delta_{l-1} (dL/db_{l-1}) taken in the same pass."""
    cdef Py_ssize_t n_in = net.sizes[l], n_out = net.sizes[l + 1]
    cdef const floating* A_prev = X if l == 0 else acts + net.a_off[l - 1]
    cdef floating* D = deltas + net.a_off[l]
    cdef floating* D_prev
    if l == 0 and csr != NULL:
        _csr_t_matmul(csr, n, D, n_out, grads, n_in, beta)
    else:
        _gemm(True, False, <int> n_in, <int> n_out, <int> n,
              <floating> 1.0, A_prev, <int> n_in, D, <int> n_out,
              beta, grads + net.w_off[l], <int> n_out)
    if l > 0:
        D_prev = deltas + net.a_off[l - 1]
        _gemm(False, True, <int> n, <int> n_in, <int> n_out,
              <floating> 1.0, D, <int> n_out, params + net.w_off[l], <int> n_out,
              <floating> 0.0, D_prev, <int> n_in)
        if _drops(net, l - 1):
            _dropout_derivative_colsum(net, l - 1, D_prev, A_prev, n, n_in, n_in,
                                       grads + net.b_off[l - 1], b, r0, 0)
        else:
            _derivative_colsum(D_prev, A_prev, n, n_in, n_in, net.activation,
                               grads + net.b_off[l - 1], net.z_shift)


cdef void _backward(
    Net* net, const floating* params, const floating* X, const CSR* csr, Py_ssize_t n,
    const floating* acts, floating* deltas, floating* grads, floating beta,
    Py_ssize_t b, Py_ssize_t r0,
) noexcept nogil:
    """The backward pass, output layer first (delta_L already set by _loss_delta)."""
    cdef int l
    for l in range(net.n_layers - 1, -1, -1):
        _backward_layer(net, l, params, X, csr, n, acts, deltas, grads, beta, b, r0)


cdef inline double _sum_squares(const floating* a, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return fp_sumsq_f(a, n)
    else:
        return fp_sumsq_d(a, n)


def dropout_mask(unsigned long long seed, Py_ssize_t batch, Py_ssize_t layer,
                 Py_ssize_t n_rows, Py_ssize_t n_units, double p, *, Py_ssize_t row0=0,
                 Py_ssize_t unit0=0):
    """The training epoch's dropout mask, as its kernels draw it (csrc/fp_dropout.h):
    a bool array (n_rows, n_units), True where unit ``unit0 + j`` of hidden layer
    ``layer`` is kept in row ``row0 + i`` of minibatch ``batch``."""
    if not (0.0 <= p < 1.0):
        raise ValueError(f"p must be in [0, 1), got {p}.")
    if n_rows < 0 or n_units < 0 or batch < 0 or layer < 0 or row0 < 0 or unit0 < 0:
        raise ValueError("sizes and indices must be >= 0.")
    out = np.ones((n_rows, n_units), dtype=np.float64)
    cdef double[:, ::1] a = out
    if n_rows > 0 and n_units > 0:
        with nogil:
            fp_dropout_apply_d(&a[0, 0], n_units, n_rows, n_units,
                               fp_dropout_key(seed, batch, layer), row0, unit0,
                               fp_dropout_threshold(p), 1.0)
    return out != 0
