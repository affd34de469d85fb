"""fastprop's compiled backpropagation kernels.

Three layers, as in scikit-learn's ``_loss`` module:

1. C point functions (``csrc/fp_math.h``): the stable sigmoid, log(1 + e^x), float maths
   for float data.
2. ``cdef ... nogil`` loops over contiguous buffers, fused over float / double: dense
   forward (GEMM, then bias + activation in one pass), output activation + loss + delta
   in one pass, backward (GEMMs, activation derivative fused into the delta together
   with the intercept gradient), and the optimizer updates over ONE flat parameter
   buffer.
3. ``def`` entry points that check every shape, dtype and index before the GIL is
   released. The Python layer (``fastprop.core``) validates user input and allocates;
   the checks here are the last line of defence that keeps a wrong call from reading
   or writing out of bounds.

Memory layout of a network with L layers and ``sizes = [n_features, h_1, ..., n_outputs]``
(scikit-learn's ``_pack`` order): the flat parameter vector holds W_1..W_L (each
row-major, (sizes[l], sizes[l+1])) followed by b_1..b_L. Gradients use the same layout.
The activation and delta workspaces hold, for a block of up to ``rows`` samples, the
layer outputs A_1..A_L (each (rows, sizes[l+1]), row-major) one after another.

Matrix products go to scipy's BLAS. BLAS is column-major; a row-major C = A @ B is the
column-major C^T = B^T @ A^T, so operands are swapped (as sklearn/utils/_cython_blas.pyx).
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from cpython.pyport cimport PY_SSIZE_T_MAX
from scipy.linalg.cython_blas cimport sgemm, dgemm

import numpy as np

cdef extern from "fp_math.h" nogil:
    float fp_sigmoid_f(float x)
    double fp_sigmoid_d(double x)
    double fp_log1pexp_f(float x)
    double fp_log1pexp_d(double x)
    float fp_exp_f(float x)
    double fp_exp_d(double x)
    float fp_sqrt_f(float x)
    double fp_sqrt_d(double x)
    double fp_xlogx_d(double x)
    unsigned long long fp_denormals_flush()
    void fp_denormals_restore(unsigned long long old)

cdef extern from "fp_layer.h" nogil:
    int FP_ACT_IDENTITY, FP_ACT_LOGISTIC, FP_ACT_TANH, FP_ACT_RELU
    void fp_bias_act_f(float* Z, Py_ssize_t ld, const float* b, Py_ssize_t n,
                       Py_ssize_t c, int act)
    void fp_bias_act_d(double* Z, Py_ssize_t ld, const double* b, Py_ssize_t n,
                       Py_ssize_t c, int act)
    void fp_deriv_colsum_f(float* D, const float* A, Py_ssize_t n, Py_ssize_t c,
                           Py_ssize_t ld, int act, float* gb)
    void fp_deriv_colsum_d(double* D, const double* A, Py_ssize_t n, Py_ssize_t c,
                           Py_ssize_t ld, int act, double* gb)
    int fp_copy_check_f(float* dst, const float* src, Py_ssize_t n)
    int fp_copy_check_d(double* dst, const double* src, Py_ssize_t n)

cdef extern from "fp_optim.h" nogil:
    int fp_dispatch_enabled()
    double fp_sumsq_f(const float* a, Py_ssize_t n)
    double fp_sumsq_d(const double* a, Py_ssize_t n)
    double fp_normalise_f(float* g, const float* g2, const float* p, Py_ssize_t n_coef,
                          Py_ssize_t n,
                          float alpha, float s)
    double fp_normalise_d(double* g, const double* g2, const double* p, Py_ssize_t n_coef,
                          Py_ssize_t n,
                          double alpha, double s)
    double fp_sgd_f(float* p, const float* g1, const float* g2, float* v,
                    Py_ssize_t n_coef, Py_ssize_t n, float scale, float alpha, float lr,
                    float momentum, int nesterov)
    double fp_sgd_d(double* p, const double* g1, const double* g2, double* v,
                    Py_ssize_t n_coef, Py_ssize_t n, double scale, double alpha,
                    double lr, double momentum, int nesterov)
    double fp_adam_f(float* p, const float* g1, const float* g2, float* m, float* v,
                     Py_ssize_t n_coef, Py_ssize_t n, float scale, float alpha,
                     float step, float b1, float b2, float eps)
    double fp_adam_d(double* p, const double* g1, const double* g2, double* m,
                     double* v, Py_ssize_t n_coef, Py_ssize_t n, double scale,
                     double alpha, double step, double b1, double b2, double eps)

cdef extern from "fp_team.h" nogil:
    int fp_team_init()
    int fp_team_usable()
    int fp_team_threads(int n)
    int fp_omp_max_threads()
    int fp_has_openmp()
    int FP_OWN_BARRIER
    int FP_GOV
    int FP_MODE_TEAM, FP_MODE_SOLO, FP_MODE_DONE
    enum: FP_TEAM_MAX     # the most threads in a team, and parts in a partition
    ctypedef struct fp_team:
        int n
        int solo_periods
    int fp_team_begin(fp_team* tm, int n)
    void fp_team_barrier(fp_team* tm, int tid, int nt)
    int fp_team_govern(fp_team* tm, int nt)
    void fp_team_rejoin(fp_team* tm)
    int fp_team_rest(fp_team* tm, int* seen)
    void fp_team_end(fp_team* tm, int nt)
    int fp_team_gen(fp_team* tm)
    int fp_team_quit(fp_team* tm)
    ctypedef void (*fp_task_fn)(void* arg, int tid, int nt) noexcept nogil
    int fp_pool_run(fp_task_fn fn, void* arg, int n)
    int fp_pool_init()
    int fp_pool_threads()
    int FP_POOL
    int fp_gov_enabled
    long long fp_gov_solo_total, fp_gov_solo_starts
    long long fp_gov_window_ns, fp_gov_probe_ns, fp_gov_solo_ns, fp_gov_solo_max_ns
    double fp_gov_idle
    void fp_gov_forget()
    void fp_budget_set(int passes, int threads, int cores)
    int fp_team_working_now()
    void fp_team_open(fp_team* tm, int nt)
    long long fp_gov_budget_total
    int fp_team_size()
    int fp_thread_id()
    int fp_flag_get(int* p)
    void fp_flag_set(int* p)

cdef extern from "Python.h":
    # declared noexcept: the epoch driver restores the FPU state before propagating
    int _check_signals "PyErr_CheckSignals"() noexcept

# Codes shared with fastprop/core/__init__.py (ACTIVATION_CODES, LOSS_CODES).
cdef enum:
    ACT_IDENTITY = 0
    ACT_LOGISTIC = 1
    ACT_TANH = 2
    ACT_RELU = 3

# csrc/fp_layer.h numbers them too
if (FP_ACT_IDENTITY, FP_ACT_LOGISTIC, FP_ACT_TANH, FP_ACT_RELU) != (
        ACT_IDENTITY, ACT_LOGISTIC, ACT_TANH, ACT_RELU):
    raise ImportError("fastprop: csrc/fp_layer.h and _kernels.pyx disagree on the "
                      "activation codes")

cdef enum:
    LOSS_SQUARED = 0      # identity output
    LOSS_POISSON = 1      # exp output
    LOSS_LOG = 2          # softmax output
    LOSS_BINARY_LOG = 3   # logistic output

cdef enum:
    SOLVER_SGD = 0
    SOLVER_ADAM = 1

cdef enum:
    # how a pass cuts its minibatches or blocks (epoch_partition)
    PASS_WHOLE = 0
    PASS_ROWS = 1
    PASS_UNITS = 2




# Elementwise passes smaller than this many entries stay on one thread. OpenBLAS's
# worker threads keep spinning for a while after each GEMM, so an OpenMP team woken
# between two GEMMs competes with them for the cores (measured by bench_core.py: see
# benchmarks/README.md). Only passes far larger than a training block go parallel.
cdef Py_ssize_t PARALLEL_MIN_ENTRIES = 1 << 24
# Check for Ctrl-C (and other signals) every this many minibatches. Only a call from
# the main thread checks: Python runs signal handlers there alone, and taking the GIL
# back from a worker thread would make a background fit wait on whatever Python code
# the other threads run (tests/test_scaleout.py checks that it does not).
cdef Py_ssize_t SIGNAL_CHECK_EVERY = 8

import threading as _threading


cdef Py_ssize_t _signal_interval():
    return SIGNAL_CHECK_EVERY if _threading.current_thread() is _threading.main_thread() else 0

HAS_OPENMP = bool(fp_has_openmp())
# True where the flat-vector loops (csrc/fp_optim.h) are compiled per ISA level and
# chosen at load time (GCC target_clones on x86-64 Linux).
SIMD_DISPATCH = bool(fp_dispatch_enabled())
# True where the team's barriers are fastprop's own (brief spin, then a futex sleep),
# False where they are OpenMP's (csrc/fp_team.h).
OWN_BARRIER = bool(FP_OWN_BARRIER)
# True where a team whose members wait too long at its barriers (another process busy
# on a core) goes on with thread 0 alone (csrc/fp_team.h, "foreign load").
TEAM_GOVERNOR = bool(FP_GOV)


def _set_team_governor(on=None, idle=None, window=None, probe=None, solo=None,
                       solo_max=None):
    """Turn the team's governor on or off and set its thresholds (for benchmarks and
    tests; times in seconds; None keeps a setting), forgetting a solo period carried
    from an earlier pass. Returns the old settings, to pass back. Call it between
    passes."""
    global fp_gov_enabled, fp_gov_idle, fp_gov_window_ns, fp_gov_probe_ns
    global fp_gov_solo_ns, fp_gov_solo_max_ns
    old = dict(on=fp_gov_enabled != 0, idle=fp_gov_idle, window=fp_gov_window_ns / 1e9,
               probe=fp_gov_probe_ns / 1e9, solo=fp_gov_solo_ns / 1e9,
               solo_max=fp_gov_solo_max_ns / 1e9)
    if FP_GOV:
        if on is not None:
            fp_gov_enabled = 1 if on else 0
        if idle is not None:
            fp_gov_idle = idle
        if window is not None:
            fp_gov_window_ns = <long long> (window * 1e9)
        if probe is not None:
            fp_gov_probe_ns = <long long> (probe * 1e9)
        if solo is not None:
            fp_gov_solo_ns = <long long> (solo * 1e9)
        if solo_max is not None:
            fp_gov_solo_max_ns = <long long> (solo_max * 1e9)
    fp_gov_forget()
    return old


def _team_governor_stats():
    """(solo periods entered for waiting, passes started alone, solo periods entered to
    leave the cores to other passes) since the module loaded."""
    return int(fp_gov_solo_total), int(fp_gov_solo_starts), int(fp_gov_budget_total)


def _team_working():
    """Pool threads working now (in a team pass, not resting while thread 0 is alone)."""
    return fp_team_working_now()


def _set_budget(int passes, int threads, int cores):
    """The training passes running in the process, the threads they may use between
    them and the cores (kept by fastprop/core/_team.py; a team pass re-checks its share
    every minibatch)."""
    fp_budget_set(passes, threads, cores)


# True where a team's threads are fastprop's own pool (csrc/fp_team.h, "pool"), which
# sleep between passes; False where they are OpenMP's.
OWN_POOL = bool(FP_POOL)


def _pool_threads():
    """Threads the pool has started (a team of n uses n - 1 of them and its caller)."""
    return int(fp_pool_threads())


def openmp_max_threads():
    """Threads an OpenMP parallel region started now from this thread would use (1
    without OpenMP, and 1 in a forked child's copy of a thread that ran a team)."""
    return fp_omp_max_threads()


def team_usable():
    """False in a forked child's copy of a thread that had started an OpenMP team
    before the fork: its passes then run on that thread alone (csrc/fp_team.h)."""
    return bool(fp_team_usable())


if fp_team_init() != 0 or fp_pool_init() != 0:
    raise ImportError("fastprop: pthread_atfork failed to register the fork guard")


# ---------------------------------------------------------------------------------------
# Scalar helpers: pick the float or double C function at compile time.
# ---------------------------------------------------------------------------------------

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


cdef inline void _gemm(
    bint trans_a, bint trans_b, int m, int n, int k,
    floating alpha, const floating* a, int lda, const floating* b, int ldb,
    floating beta, floating* c, int ldc,
) noexcept nogil:
    """Row-major C (m, n) = alpha * op(A) @ op(B) + beta * C, via column-major BLAS."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*> b, &ldb, <float*> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*> b, &ldb, <double*> a, &lda,
              &beta, c, &ldc)


# ---------------------------------------------------------------------------------------
# Network layout
# ---------------------------------------------------------------------------------------

cdef struct Net:
    int n_layers            # L, the number of weight layers
    Py_ssize_t* sizes       # L + 1 unit counts
    Py_ssize_t* w_off       # L offsets of W_l in the flat parameter vector
    Py_ssize_t* b_off       # L offsets of b_l
    Py_ssize_t* a_off       # L offsets of A_l / delta_l in the workspaces
    Py_ssize_t n_coef       # number of weights (the L2-penalised prefix)
    Py_ssize_t n_params
    Py_ssize_t work_size    # rows * sum(sizes[1:]): length the workspaces need
    int activation
    int loss
    int n_threads


cdef void _net_set_rows(Net* net, Py_ssize_t rows) noexcept nogil:
    """Lay the workspaces out for ``rows`` rows (within the overflow bound that _net_new checked)."""
    cdef Py_ssize_t l, off = 0
    for l in range(net.n_layers):
        net.a_off[l] = off
        off += rows * net.sizes[l + 1]
    net.work_size = off


cdef Net _net_new(const Py_ssize_t[::1] sizes, int activation, int loss,
                  Py_ssize_t rows) except *:
    """Fill a Net; the caller frees net.sizes (one block holds all four arrays)."""
    cdef Net net
    cdef Py_ssize_t L = sizes.shape[0] - 1, l, off = 0
    if L < 1:
        raise ValueError("sizes must hold at least two entries (inputs and outputs).")
    if activation < ACT_IDENTITY or activation > ACT_RELU:
        raise ValueError(f"unknown activation code {activation}")
    if loss < LOSS_SQUARED or loss > LOSS_BINARY_LOG:
        raise ValueError(f"unknown loss code {loss}")
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
    if rows > limit // width:
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
    _net_set_rows(&net, rows)
    net.activation = activation
    net.loss = loss
    net.n_threads = fp_omp_max_threads()
    return net


cdef inline Py_ssize_t _rows_for(Net* net) noexcept nogil:
    """Rows a workspace was sized for, recovered from the layout."""
    cdef Py_ssize_t total = 0, l
    for l in range(net.n_layers):
        total += net.sizes[l + 1]
    return net.work_size // total


# ---------------------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------------------

cdef void _bias_activation(
    floating* Z,              # INOUT (n, c): Z + b, then the activation, in place
    const floating* b,        # IN    (c,)
    Py_ssize_t n, Py_ssize_t c, int activation, int n_threads,
) noexcept nogil:
    """One pass over a GEMM output: add the intercepts and apply the activation."""
    cdef Py_ssize_t i
    cdef int team
    if n_threads > 1 and n * c >= PARALLEL_MIN_ENTRIES:
        # Purely elementwise: the result does not depend on the thread count.
        team = fp_team_threads(n_threads)
        for i in prange(n, schedule="static", num_threads=team):
            _bias_activation_cols(Z + i * c, c, b, 1, c, activation)
    else:
        _bias_activation_cols(Z, c, b, n, c, activation)


cdef inline void _bias_activation_cols(
    floating* Z,              # INOUT (n, c), rows ld apart
    Py_ssize_t ld, const floating* b, Py_ssize_t n, Py_ssize_t c, int activation,
) noexcept nogil:
    """``_bias_activation`` on a block of columns of a wider output (csrc/fp_layer.h)."""
    if floating is float:
        fp_bias_act_f(Z, ld, b, n, c, activation)
    else:
        fp_bias_act_d(Z, ld, b, n, c, activation)


cdef struct CSR:
    # A block of rows of a CSR matrix: the first layer's input when X is sparse.
    const void* data          # floating values (nnz,)
    const Py_ssize_t* indices # column of each value (nnz,), checked < n_features
    const Py_ssize_t* indptr  # (n_samples + 1,), checked monotone
    const Py_ssize_t* rows    # the block's row ids, or NULL for row0, row0 + 1, ...
    Py_ssize_t row0


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


cdef void _forward(
    Net* net,
    const floating* params,   # IN  (n_params,)
    const floating* X,        # IN  (n, sizes[0]) dense input, or NULL when csr is given
    const CSR* csr,           # IN  sparse input block, or NULL
    Py_ssize_t n,
    floating* acts,           # OUT workspace: A_1..A_{L-1}, and Z_L (output logits)
) noexcept nogil:
    """Hidden layers through their activation; the output layer stops at the logits
    Z_L, which the loss (or ``_output_activation``) consumes."""
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
                         net.activation if l < L - 1 else ACT_IDENTITY, net.n_threads)
        A = Z


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


# ---------------------------------------------------------------------------------------
# Loss and output delta
# ---------------------------------------------------------------------------------------

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


cdef extern from "<math.h>" nogil:
    double _log_double "log"(double x)


# ---------------------------------------------------------------------------------------
# Backward pass
# ---------------------------------------------------------------------------------------

cdef inline void _derivative_colsum(
    floating* D,              # INOUT (n, c), rows ld apart: D * f'(Z), with f' written
                              #       through A = f(Z)
    const floating* A,        # IN    (n, c), rows ld apart: the layer's activations
    Py_ssize_t n, Py_ssize_t c, Py_ssize_t ld, int activation,
    floating* gb,             # INOUT (c,): += column sums of the new D
) noexcept nogil:
    """delta_{l-1} = D * f'(Z) and its column sums (dL/db_{l-1}), in one pass over D
    (csrc/fp_layer.h)."""
    if floating is float:
        fp_deriv_colsum_f(D, A, n, c, ld, activation, gb)
    else:
        fp_deriv_colsum_d(D, A, n, c, ld, activation, gb)


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
        _derivative_colsum(D_prev, A_prev, n, n_in, n_in, net.activation,
                           grads + net.b_off[l - 1])


cdef void _backward(
    Net* net, const floating* params, const floating* X, const CSR* csr, Py_ssize_t n,
    const floating* acts, floating* deltas, floating* grads, floating beta,
) noexcept nogil:
    """The backward pass, output layer first (delta_L already set by _loss_delta)."""
    cdef int l
    for l in range(net.n_layers - 1, -1, -1):
        _backward_layer(net, l, params, X, csr, n, acts, deltas, grads, beta)


cdef inline double _sum_squares(const floating* a, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return fp_sumsq_f(a, n)
    else:
        return fp_sumsq_d(a, n)


# ---------------------------------------------------------------------------------------
# Optimizer updates: one fused loop over the flat parameter vector
# ---------------------------------------------------------------------------------------

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


cdef struct Step:
    # One optimizer step's scalars (the solver state arrays are passed alongside).
    int solver
    double scale          # 1 / (the batch's sample-weight sum)
    double alpha
    double lr             # sgd: learning rate; adam: lr sqrt(1 - b2^t) / (1 - b1^t)
    double momentum
    int nesterov
    double beta_1
    double beta_2
    double epsilon


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
        _backward_layer(net, l, params, X, csr, n, acts, deltas, grads, <floating> 0.0)
        # W_l and b_l are no longer needed by this batch: step them now
        sq += _update_segment(params, grads, NULL, state_1, state_2, net.w_off[l],
                              net.sizes[l] * net.sizes[l + 1],
                              net.sizes[l] * net.sizes[l + 1], st)
        _update_segment(params, grads, NULL, state_1, state_2, net.b_off[l], 0,
                        net.sizes[l + 1], st)
    return sq


# ---------------------------------------------------------------------------------------
# def entry points: every check happens here, before the GIL is released
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Full-data loss and gradient (L-BFGS, loss_and_gradients)
# ---------------------------------------------------------------------------------------

cdef inline double _block_gradient(
    Net* net, const floating* params, const floating* Xb, const CSR* csr,
    Py_ssize_t rows, const floating* Yb, const floating* swb,
    floating* acts, floating* deltas, floating* grads, floating beta,
) noexcept nogil:
    """Forward, loss + delta, backward over one block of rows: raw gradient sums into
    ``grads`` (weights overwritten when beta = 0, accumulated when 1; intercepts always
    accumulated); returns the block's summed loss."""
    cdef Py_ssize_t last = net.a_off[net.n_layers - 1]
    cdef double data
    _forward(net, params, Xb, csr, rows, acts)
    data = _loss_delta(net, acts + last, Yb, swb, rows, deltas + last,
                       grads + net.b_off[net.n_layers - 1])
    _backward(net, params, Xb, csr, rows, acts, deltas, grads, beta)
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
                                    grads, beta)
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
    cdef Net net = _net_new(sizes, activation, loss, half if half > 0 else rows)
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
    floating[::1] grads2 not None, int n_threads,
):
    """``loss_grad`` for a CSR X: the first layer's products are sparse x dense."""
    cdef Py_ssize_t n, sig
    cdef double s, value
    cdef CSR csr
    if rows < 1:
        raise ValueError("rows must be >= 1")
    cdef Py_ssize_t half = _split_rows(rows) if rows >= SPLIT_MIN_BATCH else 0
    cdef Net net = _net_new(sizes, activation, loss, half if half > 0 else rows)
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


# ---------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------

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
                 acts)
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


# ---------------------------------------------------------------------------------------
# Gradients of the outputs with respect to the inputs
# ---------------------------------------------------------------------------------------

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
            if loss == LOSS_SQUARED:
                d[k] = 1
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
        _forward(net, params, X + start * n_feat if X != NULL else NULL, csr, nb, acts)
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
                                   nb, n_in, n_in, net.activation, colsum)
            _gemm(False, True, <int> nb, <int> n_feat, <int> net.sizes[1],
                  <floating> 1.0, deltas, <int> net.sizes[1],
                  params + net.w_off[0], <int> net.sizes[1],
                  <floating> 0.0, out + (start * c + k) * n_feat, <int> (c * n_feat))
        start += nb


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


# ---------------------------------------------------------------------------------------
# Optimizer updates on flat vectors (the oracles' twins)
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# The epoch driver
# ---------------------------------------------------------------------------------------

cdef struct SplitShared:
    # What the team shares; everything else is per thread.
    double data[FP_TEAM_MAX]   # per part: its summed loss (row split)
    double sq[FP_TEAM_MAX]     # per part: its sum of squared weights
    int stop                   # set by thread 0 when a signal handler raised
    int nonfinite[FP_TEAM_MAX] # per thread: a gathered X row had a NaN or an infinity
    fp_team team               # the barrier, and who works (csrc/fp_team.h)
    # thread 0's loop state, left for members it wakes after running alone
    Py_ssize_t start, b, t
    double sq_now


cdef struct Epoch:
    # One pass over an epoch: what its threads read (data, buffers, optimizer state,
    # step parameters) and share. The arrays are float or double, as the pass.
    Net* net
    int parts             # the fixed parts of every minibatch (rows) or layer (units)
    void* params
    void* grads
    void* grads2          # parts 1.. of a row split: their gradient sums, one after another
    const void* X
    CSR* csr              # X's rows when X is sparse
    Py_ssize_t n
    const void* Y
    const void* sample_weight
    const Py_ssize_t* order
    Py_ssize_t batch_size
    double alpha
    void* acts
    void* deltas
    void* x_buf
    void* y_buf
    void* sw_buf
    int solver
    void* state_1
    void* state_2
    const double* hyper
    Py_ssize_t* counter
    double* acc_out
    Py_ssize_t signal_every
    SplitShared* sh       # a team's shared state (split passes)
    bint check_finite


cdef inline void _add_into(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] += src[i]


cdef inline bint _copy_check(floating* dst, const floating* src, Py_ssize_t n) noexcept nogil:
    """dst[:n] = src[:n]; whether src[:n] holds a NaN or an infinity (csrc/fp_layer.h)."""
    if floating is float:
        return fp_copy_check_f(dst, src, n)
    else:
        return fp_copy_check_d(dst, src, n)


cdef inline void _take_rows(
    Py_ssize_t start, Py_ssize_t nb,   # rows order[start:start + nb], or start.. in place
    Py_ssize_t r0,                     # where they go in the gathering buffers
    const floating* X, CSR* csr, const floating* Y, const floating* sample_weight,
    const Py_ssize_t* order, Py_ssize_t n_feat, Py_ssize_t n_out,
    floating* x_buf, floating* y_buf, floating* sw_buf,
    const floating** Xb, const floating** Yb, const floating** swb,
    int* nonfinite,                    # when not NULL: set to 1 if a gathered X row has a
                                       #   NaN or an infinity (left as is otherwise)
) noexcept nogil:
    """Point (Xb, Yb, swb) at a block of rows: gathered by index into the reused
    buffers when ``order`` is given, slices of X, Y, weights otherwise. A sparse X is
    never gathered: ``csr`` is pointed at the block's row ids instead."""
    cdef Py_ssize_t r, src
    Xb[0] = NULL
    if order != NULL:
        for r in range(nb):
            src = order[start + r]
            if csr == NULL:
                if nonfinite == NULL:
                    memcpy(x_buf + (r0 + r) * n_feat, X + src * n_feat,
                           n_feat * sizeof(floating))
                elif _copy_check(x_buf + (r0 + r) * n_feat, X + src * n_feat, n_feat):
                    nonfinite[0] = 1
            memcpy(y_buf + (r0 + r) * n_out, Y + src * n_out, n_out * sizeof(floating))
            if sample_weight != NULL:
                sw_buf[r0 + r] = sample_weight[src]
        if csr == NULL:
            Xb[0] = x_buf + r0 * n_feat
        else:
            csr.rows = order + start
        Yb[0] = y_buf + r0 * n_out
        swb[0] = sw_buf + r0 if sample_weight != NULL else NULL
    else:
        if csr == NULL:
            Xb[0] = X + start * n_feat
        else:
            csr.rows = NULL
            csr.row0 = start
        Yb[0] = Y + start * n_out
        swb[0] = sample_weight + start if sample_weight != NULL else NULL


cdef inline double _weight_sum(
    const floating* sample_weight, const Py_ssize_t* order, Py_ssize_t start,
    Py_ssize_t nb,
) noexcept nogil:
    """The minibatch's sample-weight sum (its length when unweighted), in double."""
    cdef Py_ssize_t r
    cdef double s = 0.0
    if sample_weight == NULL:
        return <double> nb
    for r in range(nb):
        s += sample_weight[order[start + r] if order != NULL else start + r]
    return s


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


cdef int _train_epoch_impl(Epoch* e, floating* params, int* nonfinite) except -1 nogil:
    """Minibatch loop over whole minibatches; takes the GIL only to check for signals.
    Subnormals are flushed to zero on this thread for the epoch (see
    fp_denormals_flush)."""
    cdef unsigned long long fpu = fp_denormals_flush()
    cdef int rc = 0
    cdef Step st
    cdef Net* net = e.net
    _step_init(&st, e.solver, e.alpha, e.hyper)
    cdef floating* grads = <floating*> e.grads
    cdef floating* acts = <floating*> e.acts
    cdef floating* deltas = <floating*> e.deltas
    cdef const floating* sample_weight = <const floating*> e.sample_weight
    cdef const Py_ssize_t* order = e.order
    cdef Py_ssize_t n_feat = net.sizes[0], n_out = net.sizes[net.n_layers]
    cdef Py_ssize_t last = net.a_off[net.n_layers - 1]
    cdef Py_ssize_t start = 0, nb, b = 0, n = e.n, batch_size = e.batch_size
    cdef const floating* Xb
    cdef const floating* Yb
    cdef const floating* swb
    cdef double s, data, sq = _sum_squares(params, net.n_coef)
    while start < n:    # n: the number of rows visited (len(order) when order is given)
        nb = batch_size if n - start > batch_size else n - start
        _take_rows(start, nb, 0, <const floating*> e.X, e.csr, <const floating*> e.Y,
                   sample_weight, order, n_feat, n_out, <floating*> e.x_buf,
                   <floating*> e.y_buf, <floating*> e.sw_buf, &Xb, &Yb, &swb, nonfinite)
        s = _weight_sum(sample_weight, order, start, nb)
        if s > 0:
            # -- forward, loss + delta, backward --------------------------------------
            memset(grads + net.n_coef, 0, (net.n_params - net.n_coef) * sizeof(floating))
            _forward(net, params, Xb, e.csr, nb, acts)
            data = _loss_delta(net, acts + last, Yb, swb, nb, deltas + last,
                               grads + net.b_off[net.n_layers - 1])
            # scikit-learn's batch loss (L2 term from the weights this batch used),
            # weighted by the batch length
            e.acc_out[0] += (data / s + 0.5 * e.alpha * sq / s) * nb
            # -- backward with the optimizer step fused in; it returns the next ||W||^2
            st.scale = 1.0 / s
            if e.solver == SOLVER_ADAM:
                e.counter[0] += 1
                _adam_lr(&st, e.hyper, e.counter[0])
            sq = _backward_update(net, params, Xb, e.csr, nb, acts, deltas, grads,
                                  <floating*> e.state_1, <floating*> e.state_2, &st)
        start += nb
        b += 1
        if e.signal_every > 0 and b % e.signal_every == 0:
            with gil:
                rc = _check_signals()
            if rc != 0:
                # a signal handler raised (KeyboardInterrupt): stop between minibatches
                break
    fp_denormals_restore(fpu)
    return -1 if rc != 0 else 0


# ---------------------------------------------------------------------------------------
# The split-minibatch epoch driver (minibatches of at least SPLIT_MIN_BATCH rows)
#
# Each minibatch is cut into two halves at a place that depends only on its length.
# Half h runs forward, loss and backward into its own gradient buffer (grads, grads2);
# then the flat vector is cut into two segments, and the optimizer step on each adds
# the two halves' gradients as it reads them. With two threads each does one half and
# one segment, with BLAS on one thread each; with one thread, the same calls run one
# after the other. The arithmetic is the same either way, so the model is bitwise the
# same for every thread count. Two barriers per minibatch keep the phases apart.
# ---------------------------------------------------------------------------------------

# Minibatches shorter than this run whole (one gradient, the update fused into the
# backward pass): splitting below it cost more on one thread than two threads gained.
cdef Py_ssize_t SPLIT_MIN_BATCH = 128
# A minibatch split by rows is cut into K parts, K fixed by the shapes (never by the
# team): as many as give every part at least ROWS_PART_MIN rows, n_params /
# ROWS_PART_PACK rows and ROWS_PART_WORK rows x (multiply-adds per row of each
# product), and at least two. Each part packs every weight matrix again for its rows
# (BLAS copies its operand into panels), which costs about 1/rows of the part's
# products, more when the weights no longer fit in cache, and has a gradient buffer of
# its own that the optimizer step adds up. Calibrated on one epoch of 12000 rows
# (benchmarks/README.md, "Parts"): 784-256-128-10 at batch 1024 took 1.07x one
# thread's time with 4 parts of 256 rows and 1.20x with 8 of 128, against 2 of 512;
# 100-128-64-1 at batch 256 took 0.91x with 4 parts of 64 rows against 2 of 128.
cdef Py_ssize_t ROWS_PART_MIN = 64
cdef double ROWS_PART_PACK = 512
cdef double ROWS_PART_WORK = 1 << 20


cdef inline Py_ssize_t _part_rows(Py_ssize_t nb, int parts) noexcept nogil:
    """Rows of each part of a minibatch of nb rows cut into ``parts`` (the last one gets
    the rest, maybe none): nb / parts rounded up to a multiple of 8. Two parts are the
    two halves of ``split_rows``."""
    cdef Py_ssize_t h = ((nb + parts - 1) // parts + 7) // 8 * 8
    return h if h < nb else nb


cdef inline Py_ssize_t _split_rows(Py_ssize_t nb) noexcept nogil:
    """Rows of a block's first half: about half, rounded up to a multiple of 8."""
    return _part_rows(nb, 2)


cdef inline int _row_parts(double row_work, Py_ssize_t n_params,
                           Py_ssize_t batch_size) noexcept nogil:
    """Parts of a minibatch of batch_size rows split by rows, each row ``row_work``
    multiply-adds of each product (n_params when dense; see ROWS_PART_MIN)."""
    cdef double k = <double> (batch_size // ROWS_PART_MIN)
    cdef double by_pack = batch_size * ROWS_PART_PACK / n_params
    if by_pack < k:
        k = by_pack
    cdef double by_work = batch_size * row_work / ROWS_PART_WORK
    if by_work < k:
        k = by_work
    if k > FP_TEAM_MAX:
        k = FP_TEAM_MAX
    return 2 if k < 2 else <int> k


def split_rows(Py_ssize_t batch_size):
    """Rows of the larger half of a block of ``batch_size`` rows that L-BFGS's pass
    cuts in halves, or 0 when blocks of that length run whole (sizes its workspaces:
    two halves). Epochs cut their minibatches as ``epoch_partition`` says."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    return _split_rows(batch_size) if batch_size >= SPLIT_MIN_BATCH else 0


# Sparse minibatches are split by rows only when rows x (stored values per row x the first
# hidden width + the other layers' weights) reaches this: a minibatch of sparse rows on
# a small network is too little work for two threads (benchmarks/README.md, "Where the
# team pays": CSR row splits of 32-128 units at batch 128-256 took 1.05-1.58x one
# thread).
cdef double CSR_SPLIT_MIN_WORK = 1 << 20


cdef double _csr_row_work(Net* net, Py_ssize_t nnz, Py_ssize_t n_rows) noexcept nogil:
    """A sparse row's work: stored values per row x the first hidden width + the other
    layers' weights."""
    cdef Py_ssize_t l
    cdef double per_row = <double> nnz / n_rows * net.sizes[1] if n_rows > 0 else 0.0
    for l in range(1, net.n_layers):
        per_row += <double> net.sizes[l] * net.sizes[l + 1]
    return per_row


def csr_split(const Py_ssize_t[::1] sizes not None, Py_ssize_t nnz, Py_ssize_t n_rows,
              Py_ssize_t batch_size):
    """Whether sparse minibatches of ``batch_size`` rows of X (``nnz`` stored values in
    ``n_rows`` rows) on a network of layer ``sizes`` are split by rows: split lengths
    with work enough for two threads (``epoch_partition``)."""
    return epoch_partition(sizes, batch_size, nnz, n_rows)[0] == "rows"


def _set_csr_split_min_work(double work):
    """Set the smallest work of a sparse minibatch split by rows (for benchmarks and
    tests; see CSR_SPLIT_MIN_WORK); returns the old one."""
    global CSR_SPLIT_MIN_WORK
    old = CSR_SPLIT_MIN_WORK
    CSR_SPLIT_MIN_WORK = work
    return old


def _set_split_min_batch(Py_ssize_t rows):
    """Set the shortest minibatch that is split (for benchmarks); returns the old one."""
    global SPLIT_MIN_BATCH
    old = SPLIT_MIN_BATCH
    SPLIT_MIN_BATCH = max(rows, 1)
    return old


def _set_row_parts(min_rows=None, work=None, pack=None):
    """Set the fewest rows, the least work and the packing bound of a row part (for
    benchmarks and tests; see ROWS_PART_MIN); returns the old (min_rows, work, pack)."""
    global ROWS_PART_MIN, ROWS_PART_WORK, ROWS_PART_PACK
    old = (ROWS_PART_MIN, ROWS_PART_WORK, ROWS_PART_PACK)
    if min_rows is not None:
        ROWS_PART_MIN = max(<Py_ssize_t> min_rows, 1)
    if pack is not None:
        ROWS_PART_PACK = max(<double> pack, 1e-9)
    if work is not None:
        ROWS_PART_WORK = max(<double> work, 1.0)
    return old


def _set_unit_part_min(Py_ssize_t units):
    """Set the fewest units of a part of a layer cut by units (for benchmarks and
    tests; see UNIT_PART_MIN); returns the old one."""
    global UNIT_PART_MIN
    old = UNIT_PART_MIN
    UNIT_PART_MIN = max(units, 1)
    return old


cdef bint _team_interrupted(int tid, int nt, Py_ssize_t b, Py_ssize_t signal_every,
                            SplitShared* sh) noexcept nogil:
    """After minibatch b (from 1), every ``signal_every``: thread 0 checks for signals
    (it is the caller's thread), and the whole team learns at a barrier whether a signal
    handler raised (KeyboardInterrupt), so that all stop between the same minibatches.
    Every member must call it at the same minibatches."""
    cdef int rc
    if signal_every <= 0 or b % signal_every != 0:
        return False
    if tid == 0:
        with gil:
            rc = _check_signals()
        sh.stop = rc != 0
    fp_team_barrier(&sh.team, tid, nt)
    return sh.stop != 0


cdef inline bint _team_next(int tid, int* nt, int* seen, Py_ssize_t* start,
                            Py_ssize_t* b, Py_ssize_t* t, double* sq,
                            SplitShared* sh) noexcept nogil:
    """Between minibatches: who works on the next one. A member that thread 0 left
    behind sleeps until woken (then takes thread 0's loop state) or until the pass ends,
    or leaves at once when other fits need its core (returns True: leave the loop). Thread 0 alone wakes the team when its solo period
    is over. Results do not depend on it: the parts are the same for any team."""
    if nt[0] > 1:
        if fp_team_gen(&sh.team) == seen[0]:
            return False
        if tid == 0:
            nt[0] = 1
            return False
        if fp_team_quit(&sh.team) or fp_team_rest(&sh.team, seen) == FP_MODE_DONE:
            return True
        start[0] = sh.start
        b[0] = sh.b
        t[0] = sh.t
        sq[0] = sh.sq_now
        return False
    if tid == 0 and sh.team.n > 1 and fp_team_govern(&sh.team, 1) == FP_MODE_TEAM:
        sh.start = start[0]
        sh.b = b[0]
        sh.t = t[0]
        sh.sq_now = sq[0]
        fp_team_rejoin(&sh.team)
        seen[0] = fp_team_gen(&sh.team)
        nt[0] = sh.team.n
    return False


cdef inline void _team_last_barrier(int tid, int nt, SplitShared* sh) noexcept nogil:
    """The last barrier of a minibatch; thread 0 first decides whether it goes on alone."""
    if tid == 0:
        fp_team_govern(&sh.team, nt)
    fp_team_barrier(&sh.team, tid, nt)


cdef double _half_gradient(
    Net* net, const floating* params, const floating* Xb, const CSR* csr,
    Py_ssize_t rows, const floating* Yb, const floating* swb,
    floating* acts, floating* deltas, floating* grads,
) noexcept nogil:
    """Raw gradient sums of one half-minibatch into ``grads``; returns its loss sum."""
    if rows == 0:
        memset(grads, 0, net.n_params * sizeof(floating))
        return 0.0
    memset(grads + net.n_coef, 0, (net.n_params - net.n_coef) * sizeof(floating))
    return _block_gradient(net, params, Xb, csr, rows, Yb, swb, acts, deltas, grads,
                           <floating> 0.0)


cdef void _split_worker(Epoch* e, floating* params, int tid, int nt) noexcept nogil:
    """One team member's share of the epoch: parts h = tid, tid + nt, ... of every
    minibatch, then the same segments of the optimizer step. Every member runs the same
    loop over the minibatches (same lengths, same skip decisions), so they meet at every
    barrier."""
    cdef Net* net = e.net
    cdef SplitShared* sh = e.sh
    cdef int h, c, K = e.parts
    cdef floating* grads = <floating*> e.grads
    cdef floating* grads2 = <floating*> e.grads2
    cdef floating* acts = <floating*> e.acts
    cdef floating* deltas = <floating*> e.deltas
    cdef floating* state_1 = <floating*> e.state_1
    cdef floating* state_2 = <floating*> e.state_2
    cdef const floating* X = <const floating*> e.X
    cdef const floating* Y = <const floating*> e.Y
    cdef const floating* sample_weight = <const floating*> e.sample_weight
    cdef const Py_ssize_t* order = e.order
    cdef Py_ssize_t n = e.n, batch_size = e.batch_size, P = net.n_params
    cdef double alpha = e.alpha
    cdef int* bad = &sh.nonfinite[tid] if e.check_finite else NULL
    cdef unsigned long long fpu = fp_denormals_flush()
    cdef Step st
    _step_init(&st, e.solver, alpha, e.hyper)
    cdef int seen = 0  # the team's gen this member last saw
    if tid == 0:
        fp_team_open(&sh.team, nt)  # the team that started (maybe fewer than asked)
    cdef CSR my_csr
    cdef CSR* csr_h = NULL
    if e.csr != NULL:
        my_csr = e.csr[0]
        csr_h = &my_csr
    cdef Py_ssize_t n_feat = net.sizes[0], n_out = net.sizes[net.n_layers]
    cdef Py_ssize_t start = 0, nb, b = 0, r0, rows, pr, t = e.counter[0]
    cdef Py_ssize_t seg_lo, seg_hi, coef_hi
    cdef const floating* Xb
    cdef const floating* Yb
    cdef const floating* swb
    cdef double s, data, acc = 0.0, sq = _sum_squares(params, net.n_coef)
    while start < n:
        nb = batch_size if n - start > batch_size else n - start
        s = _weight_sum(sample_weight, order, start, nb)
        if s > 0:
            # -- each part: gather, forward, loss + delta, backward -------------------
            pr = _part_rows(nb, K)
            h = tid
            while h < K:
                r0 = h * pr if h * pr < nb else nb
                rows = pr if nb - r0 > pr else nb - r0
                _take_rows(start + r0, rows, r0, X, csr_h, Y, sample_weight, order,
                           n_feat, n_out, <floating*> e.x_buf, <floating*> e.y_buf,
                           <floating*> e.sw_buf, &Xb, &Yb, &swb, bad)
                sh.data[h] = _half_gradient(
                    net, params, Xb, csr_h, rows, Yb, swb, acts + h * net.work_size,
                    deltas + h * net.work_size, grads if h == 0 else grads2 + (h - 1) * P)
                h += nt
            fp_team_barrier(&sh.team, tid, nt)
            # -- the optimizer step, K segments of the flat vector --------------------
            # the parts' sums add up in part order, whoever runs which segment
            data = sh.data[0]
            for c in range(1, K):
                data += sh.data[c]
            acc += (data / s + 0.5 * alpha * sq / s) * nb
            st.scale = 1.0 / s
            if e.solver == SOLVER_ADAM:
                t += 1
                _adam_lr(&st, e.hyper, t)
            h = tid
            while h < K:
                seg_lo = P * h // K // 16 * 16
                seg_hi = P * (h + 1) // K // 16 * 16 if h < K - 1 else P
                coef_hi = net.n_coef if net.n_coef < seg_hi else seg_hi
                for c in range(1, K - 1):
                    _add_into(grads + seg_lo, grads2 + (c - 1) * P + seg_lo,
                              seg_hi - seg_lo)
                sh.sq[h] = _update_segment(
                    params, grads, grads2 + (K - 2) * P, state_1, state_2, seg_lo,
                    coef_hi - seg_lo if coef_hi > seg_lo else 0, seg_hi - seg_lo, &st)
                h += nt
            _team_last_barrier(tid, nt, sh)
            sq = sh.sq[0]
            for c in range(1, K):
                sq += sh.sq[c]
        start += nb
        b += 1
        if _team_interrupted(tid, nt, b, e.signal_every, sh):
            break
        if _team_next(tid, &nt, &seen, &start, &b, &t, &sq, sh):
            break
    if tid == 0:
        fp_team_end(&sh.team, nt)
        e.acc_out[0] += acc
        e.counter[0] = t
    fp_denormals_restore(fpu)


# What each team member runs (csrc/fp_team.h, fp_pool_run): the epoch's worker for
# member tid of nt, in the pass's precision.
cdef void _split_task_f(void* p, int tid, int nt) noexcept nogil:
    _split_worker(<Epoch*> p, <float*> (<Epoch*> p).params, tid, nt)


cdef void _split_task_d(void* p, int tid, int nt) noexcept nogil:
    _split_worker(<Epoch*> p, <double*> (<Epoch*> p).params, tid, nt)


# ---------------------------------------------------------------------------------------
# The unit-split epoch driver (whole minibatches of dense rows, on a big enough network)
#
# A minibatch too short to split by rows is cut by units instead: every layer's units
# (the columns of its output, the rows of its weights) fall into two parts at a place
# that depends only on the layer's width (``_unit_cut``). Part h of the forward product
# is A_{l-1} W_l[:, part]; of the backward ones, dW_l[part, :] = A_{l-1}[:, part]^T
# delta_l and delta_{l-1}[:, part] = delta_l W_l[part, :]^T. Rows part of W_l are read
# by nothing else in the minibatch, so the optimizer steps them right there. Each of
# the two threads does one part of every product (splitting the packing of the weights
# too, which a row split repeats); with one thread, the same calls run one after the
# other, so the model is bitwise the same for every thread count. A barrier after each
# layer, one around the loss and one per minibatch keep the phases apart.
# ---------------------------------------------------------------------------------------

# Whole minibatches are cut by units when rows x n_params reaches this (about a
# millisecond of products): below it the barriers cost more than the second core gains.
cdef Py_ssize_t UNITS_MIN_WORK = 1 << 20
# Dense minibatches of SPLIT_MIN_BATCH rows up to (not including) UNITS_OVER_ROWS_BATCH
# are cut by units rather than rows when rows x n_params reaches UNITS_OVER_ROWS_WORK.
# There each half of a row split packs all of a big layer's weights again for few rows,
# and steps both halves' gradient buffers (the A/B behind the numbers is in
# benchmarks/README.md, "Splits").
cdef Py_ssize_t UNITS_OVER_ROWS_BATCH = 192
cdef Py_ssize_t UNITS_OVER_ROWS_WORK = 1 << 24


# Layers cut by units are cut into K parts, K fixed by the shapes: the widest layer's
# units / UNIT_PART_MIN, and rows x n_params / UNITS_MIN_WORK, at least two. Every
# part packs the layer's input again (about 1/width of its products): on 12000 rows
# of 784-256-128-10 at batch 128, 4 parts took 1.07x one thread's time (1.11x two
# threads') against 2 (benchmarks/README.md, "Parts").
cdef Py_ssize_t UNIT_PART_MIN = 128


cdef inline Py_ssize_t _unit_width(Py_ssize_t c, int parts) noexcept nogil:
    """Units in each part of a layer of c units cut into ``parts``: c / parts rounded up
    to a multiple of 16 (whole SIMD vectors and BLAS panels); the last part gets the
    rest, maybe none. A layer of 16 units or fewer is not cut."""
    cdef Py_ssize_t w = ((c + parts - 1) // parts + 15) // 16 * 16
    return w if w < c else c


cdef inline void _unit_part(Py_ssize_t c, int h, int parts, Py_ssize_t* lo,
                            Py_ssize_t* hi) noexcept nogil:
    """Part h of a layer of c units cut into ``parts``: [lo, hi), maybe empty."""
    cdef Py_ssize_t w = _unit_width(c, parts)
    lo[0] = h * w if h * w < c else c
    hi[0] = lo[0] + w if lo[0] + w < c else c


cdef inline bint _units_split(Net* net, Py_ssize_t batch_size) noexcept nogil:
    """Whether dense minibatches of batch_size rows are cut by units: whole-minibatch
    lengths on a network big enough for two threads, and the shortest split lengths on
    a big network (see UNITS_OVER_ROWS_BATCH)."""
    if batch_size < SPLIT_MIN_BATCH:
        return batch_size >= (UNITS_MIN_WORK + net.n_params - 1) // net.n_params
    return (batch_size < UNITS_OVER_ROWS_BATCH
            and batch_size >= (UNITS_OVER_ROWS_WORK + net.n_params - 1) // net.n_params)


cdef inline int _unit_parts(Net* net, Py_ssize_t batch_size) noexcept nogil:
    """Parts of every layer of a minibatch cut by units (see UNIT_PART_MIN)."""
    cdef Py_ssize_t l, widest = 0
    for l in range(1, net.n_layers + 1):
        if net.sizes[l] > widest:
            widest = net.sizes[l]
    cdef double k = <double> (widest // UNIT_PART_MIN)
    cdef double by_work = <double> batch_size * net.n_params / UNITS_MIN_WORK
    if by_work < k:
        k = by_work
    if k > FP_TEAM_MAX:
        k = FP_TEAM_MAX
    return 2 if k < 2 else <int> k


def _set_units_min_work(Py_ssize_t work):
    """Set the smallest rows x n_params cut by units (for benchmarks and tests); returns
    the old one."""
    global UNITS_MIN_WORK
    old = UNITS_MIN_WORK
    UNITS_MIN_WORK = max(work, 1)
    return old


def _set_units_over_rows_work(Py_ssize_t work):
    """Set the smallest rows x n_params whose short split lengths are cut by units
    instead (for benchmarks and tests; a huge value keeps them split by rows); returns
    the old one."""
    global UNITS_OVER_ROWS_WORK
    old = UNITS_OVER_ROWS_WORK
    UNITS_OVER_ROWS_WORK = max(work, 1)
    return old


cdef void _units_worker(Epoch* e, floating* params, int tid, int nt) noexcept nogil:
    """One team member's parts of the epoch: parts h = tid, tid + nt, ... of every
    layer. Every member runs the same loop over the minibatches (same lengths, same skip
    decisions), so they meet at every barrier."""
    cdef Net* net = e.net
    cdef SplitShared* sh = e.sh
    cdef int h, c, l, L = net.n_layers, K = e.parts
    cdef floating* grads = <floating*> e.grads
    cdef floating* acts = <floating*> e.acts
    cdef floating* deltas = <floating*> e.deltas
    cdef floating* state_1 = <floating*> e.state_1
    cdef floating* state_2 = <floating*> e.state_2
    cdef floating* x_buf = <floating*> e.x_buf
    cdef floating* y_buf = <floating*> e.y_buf
    cdef floating* sw_buf = <floating*> e.sw_buf
    cdef const floating* X = <const floating*> e.X
    cdef const floating* Y = <const floating*> e.Y
    cdef const floating* sample_weight = <const floating*> e.sample_weight
    cdef const Py_ssize_t* order = e.order
    cdef Py_ssize_t n = e.n, batch_size = e.batch_size
    cdef double alpha = e.alpha
    cdef int* bad = &sh.nonfinite[tid] if e.check_finite else NULL
    cdef unsigned long long fpu = fp_denormals_flush()
    cdef Step st
    _step_init(&st, e.solver, alpha, e.hyper)
    cdef int seen = 0  # the team's gen this member last saw
    if tid == 0:
        fp_team_open(&sh.team, nt)  # the team that started (maybe fewer than asked)
    cdef Py_ssize_t n_feat = net.sizes[0], n_out = net.sizes[L]
    cdef Py_ssize_t last = net.a_off[L - 1], n_in, n_o, lo, hi, r0, rows
    cdef Py_ssize_t start = 0, nb, b = 0, t = e.counter[0]
    cdef const floating* Xb
    cdef const floating* Yb
    cdef const floating* swb
    cdef const floating* A_prev
    cdef const floating* ignored
    cdef floating* Z
    cdef floating* D
    cdef floating* D_prev
    cdef double s, data, acc = 0.0, sq = _sum_squares(params, net.n_coef)
    cdef double sq_part[FP_TEAM_MAX]
    # the output layer's units are not cut when it is narrow: its forward product and
    # the loss then run on thread 0 with no barrier between them
    cdef bint out_cut = _unit_width(n_out, K) < n_out
    while start < n:
        nb = batch_size if n - start > batch_size else n - start
        s = _weight_sum(sample_weight, order, start, nb)
        if s > 0:
            # -- gather: part h of the rows ------------------------------------------
            if order != NULL:
                h = tid
                while h < K:
                    r0 = nb * h // K
                    rows = nb * (h + 1) // K - r0
                    _take_rows(start + r0, rows, r0, X, NULL, Y, sample_weight, order,
                               n_feat, n_out, x_buf, y_buf, sw_buf, &ignored, &ignored,
                               &ignored, bad)
                    h += nt
                Xb = x_buf
                Yb = y_buf
                swb = sw_buf if sample_weight != NULL else NULL
                fp_team_barrier(&sh.team, tid, nt)
            else:
                Xb = X + start * n_feat
                Yb = Y + start * n_out
                swb = sample_weight + start if sample_weight != NULL else NULL
            # -- forward: part h of each layer's units --------------------------------
            A_prev = Xb
            for l in range(L):
                n_in = net.sizes[l]
                n_o = net.sizes[l + 1]
                Z = acts + net.a_off[l]
                h = tid
                while h < K:
                    _unit_part(n_o, h, K, &lo, &hi)
                    if hi > lo:
                        _gemm(False, False, <int> nb, <int> (hi - lo), <int> n_in,
                              <floating> 1.0, A_prev, <int> n_in,
                              params + net.w_off[l] + lo, <int> n_o,
                              <floating> 0.0, Z + lo, <int> n_o)
                        _bias_activation_cols(Z + lo, n_o, params + net.b_off[l] + lo,
                                              nb, hi - lo,
                                              net.activation if l < L - 1 else ACT_IDENTITY)
                    h += nt
                if l < L - 1 or out_cut:
                    fp_team_barrier(&sh.team, tid, nt)
                A_prev = Z
            # -- loss + delta_L on thread 0, then the step of the output intercepts ---
            st.scale = 1.0 / s
            if e.solver == SOLVER_ADAM:
                t += 1
                _adam_lr(&st, e.hyper, t)
            if tid == 0:
                memset(grads + net.b_off[L - 1], 0, n_out * sizeof(floating))
                data = _loss_delta(net, acts + last, Yb, swb, nb, deltas + last,
                                   grads + net.b_off[L - 1])
                acc += (data / s + 0.5 * alpha * sq / s) * nb
                _update_segment(params, grads, NULL, state_1, state_2, net.b_off[L - 1],
                                0, n_out, &st)
            fp_team_barrier(&sh.team, tid, nt)
            # -- backward: part h of each layer's inputs, stepped as soon as done -------
            h = tid
            while h < K:
                sq_part[h] = 0.0
                h += nt
            for l in range(L - 1, -1, -1):
                n_in = net.sizes[l]
                n_o = net.sizes[l + 1]
                A_prev = Xb if l == 0 else acts + net.a_off[l - 1]
                D = deltas + net.a_off[l]
                h = tid
                while h < K:
                    _unit_part(n_in, h, K, &lo, &hi)
                    if hi > lo:
                        _gemm(True, False, <int> (hi - lo), <int> n_o, <int> nb,
                              <floating> 1.0, A_prev + lo, <int> n_in, D, <int> n_o,
                              <floating> 0.0, grads + net.w_off[l] + lo * n_o, <int> n_o)
                        if l > 0:
                            D_prev = deltas + net.a_off[l - 1]
                            _gemm(False, True, <int> nb, <int> (hi - lo), <int> n_o,
                                  <floating> 1.0, D, <int> n_o,
                                  params + net.w_off[l] + lo * n_o, <int> n_o,
                                  <floating> 0.0, D_prev + lo, <int> n_in)
                            memset(grads + net.b_off[l - 1] + lo, 0,
                                   (hi - lo) * sizeof(floating))
                            _derivative_colsum(D_prev + lo, A_prev + lo, nb, hi - lo, n_in,
                                               net.activation, grads + net.b_off[l - 1] + lo)
                            # b_{l-1}[lo:hi] was last used in the forward pass
                            _update_segment(params, grads, NULL, state_1, state_2,
                                            net.b_off[l - 1] + lo, 0, hi - lo, &st)
                        # W_l[lo:hi, :] was read only by this part's delta product
                        sq_part[h] += _update_segment(
                            params, grads, NULL, state_1, state_2,
                            net.w_off[l] + lo * n_o, (hi - lo) * n_o, (hi - lo) * n_o, &st)
                    h += nt
                if l > 0:
                    fp_team_barrier(&sh.team, tid, nt)
            h = tid
            while h < K:
                sh.sq[h] = sq_part[h]
                h += nt
            # every part stepped (the next forward reads all of them), the sums shared
            _team_last_barrier(tid, nt, sh)
            sq = sh.sq[0]
            for c in range(1, K):
                sq += sh.sq[c]
        start += nb
        b += 1
        if _team_interrupted(tid, nt, b, e.signal_every, sh):
            break
        if _team_next(tid, &nt, &seen, &start, &b, &t, &sq, sh):
            break
    if tid == 0:
        fp_team_end(&sh.team, nt)
        e.acc_out[0] += acc
        e.counter[0] = t
    fp_denormals_restore(fpu)


cdef void _units_task_f(void* p, int tid, int nt) noexcept nogil:
    _units_worker(<Epoch*> p, <float*> (<Epoch*> p).params, tid, nt)


cdef void _units_task_d(void* p, int tid, int nt) noexcept nogil:
    _units_worker(<Epoch*> p, <double*> (<Epoch*> p).params, tid, nt)


cdef int _train_epoch_team(Epoch* e, fp_task_fn task, int n_threads,
                           int* nonfinite) except -1 nogil:
    """An epoch on a team of up to ``n_threads`` threads (at most one per part), each
    running ``task`` (the row-split or unit-split worker in the epoch's precision) over
    ``e``."""
    cdef SplitShared sh
    cdef int i
    for i in range(FP_TEAM_MAX):
        sh.data[i] = 0.0
        sh.sq[i] = 0.0
        sh.nonfinite[i] = 0
    sh.stop = 0
    e.sh = &sh
    if n_threads > e.parts:
        n_threads = e.parts
    fp_pool_run(task, e, fp_team_begin(&sh.team, n_threads))
    if nonfinite != NULL:
        for i in range(FP_TEAM_MAX):
            if sh.nonfinite[i]:
                nonfinite[0] = 1
    return -1 if sh.stop else 0


cdef int _epoch_parts(Net* net, Py_ssize_t batch_size, Py_ssize_t nnz, Py_ssize_t n_rows,
                      int* kind) noexcept nogil:
    """How minibatches of batch_size rows are cut (``kind``) and into how many parts;
    ``nnz < 0`` for a dense X, else the stored values of a sparse X of n_rows rows."""
    if nnz < 0 and _units_split(net, batch_size):
        kind[0] = PASS_UNITS
        return _unit_parts(net, batch_size)
    if batch_size >= SPLIT_MIN_BATCH:
        if nnz < 0:
            kind[0] = PASS_ROWS
            return _row_parts(<double> net.n_params, net.n_params, batch_size)
        if batch_size * _csr_row_work(net, nnz, n_rows) >= CSR_SPLIT_MIN_WORK:
            kind[0] = PASS_ROWS
            return _row_parts(_csr_row_work(net, nnz, n_rows), net.n_params, batch_size)
    kind[0] = PASS_WHOLE
    return 1


cdef int _epoch_net(Net* net, const Py_ssize_t[::1] sizes, int activation, int loss,
                    Py_ssize_t batch_size, Py_ssize_t nnz, Py_ssize_t n_rows,
                    int* kind) except 0:
    """Fill ``net`` for an epoch of minibatches of batch_size rows (see _epoch_parts;
    the caller frees net.sizes); return the parts. The workspaces of a row split hold
    ``parts`` blocks of ``_part_rows(batch_size, parts)`` rows."""
    cdef int parts
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    net[0] = _net_new(sizes, activation, loss, batch_size)
    parts = _epoch_parts(net, batch_size, nnz, n_rows, kind)
    if kind[0] == PASS_ROWS:
        _net_set_rows(net, _part_rows(batch_size, parts))
    return parts


def epoch_partition(const Py_ssize_t[::1] sizes not None, Py_ssize_t batch_size,
                    Py_ssize_t nnz=-1, Py_ssize_t n_rows=0):
    """How ``train_epoch`` (``nnz=-1``) or ``train_epoch_csr`` (X with ``nnz`` stored
    values in ``n_rows`` rows) cuts minibatches of ``batch_size`` rows on a network of
    layer ``sizes``: ``(kind, parts, rows)``.

    - ``("whole", 1, batch_size)``: one gradient per minibatch, the step fused in.
    - ``("rows", K, r)``: K parts of r rows (the last one gets the rest), each with its
      own workspace and gradient buffer: ``acts`` and ``deltas`` hold K x r x
      sum(sizes[1:]), ``grads2`` (K - 1) x n_params.
    - ``("units", K, batch_size)``: every layer's units in K parts; whole workspaces.

    The partition depends on the shapes only. A team of up to K threads runs the parts
    (a thread that owns several runs them in turn), so the model is bitwise the same
    for every thread count."""
    cdef Net net
    cdef int kind = PASS_WHOLE
    cdef int parts = _epoch_net(&net, sizes, ACT_RELU, LOSS_SQUARED, batch_size, nnz,
                                n_rows, &kind)
    try:
        return (("whole", "rows", "units")[kind], parts, _rows_for(&net))
    finally:
        free(net.sizes)


def unit_split(const Py_ssize_t[::1] sizes not None, Py_ssize_t batch_size):
    """Whether dense minibatches of ``batch_size`` rows on a network of layer ``sizes``
    are cut by units (``epoch_partition``; the workspaces are the usual)."""
    return epoch_partition(sizes, batch_size)[0] == "units"


cdef int _check_split(Net* net, int kind, int parts, Py_ssize_t n_acts, Py_ssize_t n_deltas,
                      Py_ssize_t n_grads2) except -1:
    """A row split needs a workspace per part and a gradient buffer for every part
    after the first."""
    if kind == PASS_ROWS:
        _check_len("acts", n_acts, parts * net.work_size)
        _check_len("deltas", n_deltas, parts * net.work_size)
        _check_len("grads2", n_grads2, (parts - 1) * net.n_params)
    return 0


cdef Epoch _epoch(
    Net* net, int parts, floating* params, floating* grads, floating* grads2,
    const floating* X, CSR* csr, Py_ssize_t n,
    const floating* Y, const floating* sample_weight, const Py_ssize_t* order,
    Py_ssize_t batch_size, double alpha,
    floating* acts, floating* deltas, floating* x_buf, floating* y_buf, floating* sw_buf,
    int solver, floating* state_1, floating* state_2, const double* hyper,
    Py_ssize_t* counter, double* acc_out, Py_ssize_t signal_every, bint check_finite,
) noexcept nogil:
    """An Epoch over these buffers (NULL for those the pass does not use)."""
    cdef Epoch e
    e.net = net
    e.parts = parts
    e.params = params
    e.grads = grads
    e.grads2 = grads2
    e.X = X
    e.csr = csr
    e.n = n
    e.Y = Y
    e.sample_weight = sample_weight
    e.order = order
    e.batch_size = batch_size
    e.alpha = alpha
    e.acts = acts
    e.deltas = deltas
    e.x_buf = x_buf
    e.y_buf = y_buf
    e.sw_buf = sw_buf
    e.solver = solver
    e.state_1 = state_1
    e.state_2 = state_2
    e.hyper = hyper
    e.counter = counter
    e.acc_out = acc_out
    e.signal_every = signal_every
    e.sh = NULL
    e.check_finite = check_finite
    return e


cdef int _run_epoch(Epoch* e, int kind, bint single, int n_threads,
                    int* nonfinite) except -1 nogil:
    """The epoch driver for the partition (``kind``) in the pass's precision
    (``single``: float): whole minibatches on the calling thread, row and unit splits
    on a team of up to n_threads threads."""
    cdef fp_task_fn task
    if kind == PASS_WHOLE:
        if single:
            return _train_epoch_impl(e, <float*> e.params, nonfinite)
        return _train_epoch_impl(e, <double*> e.params, nonfinite)
    if kind == PASS_UNITS:
        task = _units_task_f if single else _units_task_d
    else:
        task = _split_task_f if single else _split_task_d
    return _train_epoch_team(e, task, n_threads, nonfinite)


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
    if solver == SOLVER_ADAM:
        _check_len("state_2", n_state_2, net.n_params)
    elif solver != SOLVER_SGD:
        raise ValueError(f"unknown solver code {solver}")
    _check_len("hyper", n_hyper, 6)
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


def train_epoch(
    const Py_ssize_t[::1] sizes not None, int activation, int loss,
    floating[::1] params not None,                # INOUT (n_params,)
    floating[::1] grads not None,                 # scratch (n_params,)
    const floating[:, ::1] X not None,            # IN  (n_samples, sizes[0])
    const floating[:, ::1] Y not None,            # IN  (n_samples, sizes[-1])
    const floating[::1] sample_weight not None,   # IN  (n_samples,) or (0,) for none
    const Py_ssize_t[::1] order not None,         # IN  rows to visit, in order (each in [0, n)), or
                                         #     (0,) for all rows 0..n-1 in place
    Py_ssize_t batch_size, double alpha,
    floating[::1] acts not None, floating[::1] deltas not None,   # scratch (batch_size * sum(sizes[1:]),)
    floating[:, ::1] x_buf not None,              # scratch (batch_size, sizes[0]) gathered rows
    floating[:, ::1] y_buf not None,              # scratch (batch_size, sizes[-1])
    floating[::1] sw_buf not None,                # scratch (batch_size,)
    int solver,                          # 0 sgd, 1 adam
    floating[::1] state_1 not None,               # sgd: velocity; adam: first moment m
    floating[::1] state_2 not None,               # adam: second moment v (unused by sgd)
    const double[::1] hyper not None,             # (learning_rate, momentum, nesterov, beta_1, beta_2, epsilon)
    Py_ssize_t[::1] counter not None,             # (1,): adam's update count t, advanced in place
    floating[::1] grads2 not None,                # scratch ((K - 1) * n_params,) for a row split
                                         #     in K parts (epoch_partition), else unused
    int n_threads,                       # team size for split or unit-split minibatches
                                         #     (at most the parts are used): BLAS must run
                                         #     on one thread when it is 2 or more
    bint check_finite=False,             # check every gathered X row for NaN and infinity
):
    """One epoch of minibatch training, without the GIL and without allocating.

    For each minibatch (rows gathered by index into the reused buffers when ``order``
    is given; it may visit a subset, e.g. the training part of an early-stopping split): forward, loss and delta, backward, and one fused optimizer step on the
    flat parameter vector. Gradients are normalised by the batch's weight sum, with the
    L2 term alpha W, as scikit-learn does. A batch whose weights sum to zero carries no
    information and is skipped.

    How minibatches are cut is ``epoch_partition(sizes, batch_size)``, from the shapes
    alone: whole, split by rows into K parts (the workspaces then hold K parts of its
    rows, ``grads2`` the gradients of parts 1 to K - 1, and the optimizer step runs in K
    segments), or every layer cut by units into K parts (the usual workspaces).
    ``n_threads`` threads run the parts of a split; the result does not depend on it.

    With ``check_finite`` (and ``order`` given), every X row the epoch gathers is
    checked for NaN and infinity as it is copied, which costs next to nothing beside a
    separate pass over X. The epoch still runs to its end (non-finite values are safe
    for the kernels, only meaningless); then ``NonFiniteRowsError`` is raised, and the
    caller restores the parameters and the optimizer state it saved before.

    Returns the sum over batches of (batch loss x batch length), scikit-learn's
    ``accumulated_loss``: divide by n_samples for the epoch's loss.
    """
    cdef Py_ssize_t n = X.shape[0], sig
    cdef double acc = 0.0
    cdef int nonfinite = 0, kind = PASS_WHOLE, parts
    cdef Epoch e
    cdef Net net
    if check_finite and order.shape[0] == 0:
        raise ValueError("check_finite needs the rows gathered: pass order.")
    parts = _epoch_net(&net, sizes, activation, loss, batch_size, -1, 0, &kind)
    try:
        _check_split(&net, kind, parts, acts.shape[0], deltas.shape[0], grads2.shape[0])
        _check_rows("X", X.shape[0], n, X.shape[1], n, sizes[0])
        _check_epoch(&net, n, params.shape[0], grads.shape[0], Y.shape[0], Y.shape[1],
                     sample_weight.shape[0], order.shape[0], order, batch_size,
                     acts.shape[0], deltas.shape[0], True, x_buf.shape[0], x_buf.shape[1],
                     y_buf.shape[0], y_buf.shape[1], sw_buf.shape[0], solver,
                     state_1.shape[0], state_2.shape[0], hyper.shape[0], counter.shape[0])
        sig = _signal_interval()
        e = _epoch(
            &net, parts, &params[0], &grads[0],
            &grads2[0] if kind == PASS_ROWS else NULL, &X[0, 0], NULL,
            order.shape[0] if order.shape[0] > 0 else n, &Y[0, 0],
            &sample_weight[0] if sample_weight.shape[0] > 0 else NULL,
            &order[0] if order.shape[0] > 0 else NULL, batch_size, alpha,
            &acts[0], &deltas[0],
            &x_buf[0, 0] if order.shape[0] > 0 else NULL,
            &y_buf[0, 0] if order.shape[0] > 0 else NULL,
            &sw_buf[0] if order.shape[0] > 0 and sample_weight.shape[0] > 0 else NULL,
            solver, &state_1[0], &state_2[0] if solver == SOLVER_ADAM else NULL,
            &hyper[0], &counter[0], &acc, sig, check_finite)
        with nogil:
            _run_epoch(&e, kind, floating is float, n_threads,
                       &nonfinite if check_finite else NULL)
        if nonfinite:
            # imported here: the extension loads without the package (and so without
            # scikit-learn) until it has something to raise
            from fastprop.exceptions import NonFiniteRowsError
            raise NonFiniteRowsError(
                "X contains NaN or infinity (found in the rows gathered for training)."
            )
        return acc
    finally:
        free(net.sizes)



def train_epoch_csr(
    const Py_ssize_t[::1] sizes not None, int activation, int loss,
    floating[::1] params not None, floating[::1] grads not None,
    const floating[::1] X_data not None,          # IN  CSR X: values (nnz,)
    const Py_ssize_t[::1] X_indices not None,     # IN  (nnz,)
    const Py_ssize_t[::1] X_indptr not None,      # IN  (n_samples + 1,)
    const floating[:, ::1] Y not None, const floating[::1] sample_weight not None,
    const Py_ssize_t[::1] order not None, Py_ssize_t batch_size, double alpha,
    floating[::1] acts not None, floating[::1] deltas not None,
    floating[:, ::1] y_buf not None, floating[::1] sw_buf not None,
    int solver, floating[::1] state_1 not None, floating[::1] state_2 not None,
    const double[::1] hyper not None, Py_ssize_t[::1] counter not None,
    floating[::1] grads2 not None, int n_threads,
):
    """``train_epoch`` for a CSR X: minibatch rows are read in place by index (no
    gathering, no densifying), the first layer's products are sparse x dense, and
    minibatches are split by rows only (``epoch_partition(sizes, batch_size, nnz,
    n_rows)``), never by units."""
    cdef Py_ssize_t n, sig
    cdef double acc = 0.0
    cdef int kind = PASS_WHOLE, parts
    cdef CSR csr
    cdef Epoch e
    cdef Net net
    parts = _epoch_net(&net, sizes, activation, loss, batch_size, X_data.shape[0],
                       X_indptr.shape[0] - 1, &kind)
    try:
        _check_split(&net, kind, parts, acts.shape[0], deltas.shape[0], grads2.shape[0])
        n = _check_csr(X_data.shape[0], X_indices, X_indptr, sizes[0])
        _check_epoch(&net, n, params.shape[0], grads.shape[0], Y.shape[0], Y.shape[1],
                     sample_weight.shape[0], order.shape[0], order, batch_size,
                     acts.shape[0], deltas.shape[0], False, 0, 0,
                     y_buf.shape[0], y_buf.shape[1], sw_buf.shape[0], solver,
                     state_1.shape[0], state_2.shape[0], hyper.shape[0], counter.shape[0])
        csr.data = &X_data[0] if X_data.shape[0] > 0 else NULL
        csr.indices = &X_indices[0] if X_indices.shape[0] > 0 else NULL
        csr.indptr = &X_indptr[0]
        csr.rows = NULL
        csr.row0 = 0
        sig = _signal_interval()
        e = _epoch(
            &net, parts, &params[0], &grads[0],
            &grads2[0] if kind == PASS_ROWS else NULL, NULL, &csr,
            order.shape[0] if order.shape[0] > 0 else n, &Y[0, 0],
            &sample_weight[0] if sample_weight.shape[0] > 0 else NULL,
            &order[0] if order.shape[0] > 0 else NULL, batch_size, alpha,
            &acts[0], &deltas[0], NULL,
            &y_buf[0, 0] if order.shape[0] > 0 else NULL,
            &sw_buf[0] if order.shape[0] > 0 and sample_weight.shape[0] > 0 else NULL,
            solver, &state_1[0], &state_2[0] if solver == SOLVER_ADAM else NULL,
            &hyper[0], &counter[0], &acc, sig, False)
        with nogil:
            _run_epoch(&e, kind, floating is float, n_threads, NULL)
        return acc
    finally:
        free(net.sizes)
