# What the parts of fastprop's compiled core share (the .pxi files that _kernels.pyx
# includes): the C headers in csrc/, the codes of activations, losses, solvers and
# partitions (defined once, in csrc/fp_codes.h), and the structs that carry a pass's
# state.

from cython cimport floating

cdef extern from "fp_codes.h":
    # the one definition of every code; fastprop.core's ACTIVATION_CODES, LOSS_CODES
    # and SOLVER_CODES are built from these
    enum:
        ACT_IDENTITY "FP_ACT_IDENTITY"
        ACT_LOGISTIC "FP_ACT_LOGISTIC"
        ACT_TANH "FP_ACT_TANH"
        ACT_RELU "FP_ACT_RELU"
        ACT_LEAKY_RELU "FP_ACT_LEAKY_RELU"    # the activations after ReLU run in loops
        ACT_ELU "FP_ACT_ELU"                  #   of their own (fp_bias_act_ext,
        ACT_SOFTPLUS "FP_ACT_SOFTPLUS"        #   fp_deriv_ext)
        ACT_GELU "FP_ACT_GELU"                # gelu and silu keep their pre-activation
        ACT_SILU "FP_ACT_SILU"                #   Z (Net.z_shift)
        ACT_LAST "FP_ACT_LAST"
        LOSS_SQUARED "FP_LOSS_SQUARED"        # identity output
        LOSS_POISSON "FP_LOSS_POISSON"        # exp output
        LOSS_LOG "FP_LOSS_LOG"                # softmax output
        LOSS_BINARY_LOG "FP_LOSS_BINARY_LOG"  # logistic output
        LOSS_HUBER "FP_LOSS_HUBER"            # identity output
        LOSS_ABSOLUTE "FP_LOSS_ABSOLUTE"      # identity output
        SOLVER_SGD "FP_SOLVER_SGD"
        SOLVER_ADAM "FP_SOLVER_ADAM"
        SOLVER_RMSPROP "FP_SOLVER_RMSPROP"
        SOLVER_ADAMW "FP_SOLVER_ADAMW"
        PASS_WHOLE "FP_PASS_WHOLE"            # how a pass cuts its minibatches or
        PASS_ROWS "FP_PASS_ROWS"              #   blocks (epoch_partition)
        PASS_UNITS "FP_PASS_UNITS"

cdef extern from "fp_codes.h" nogil:
    # whether the activation's backward pass reads Z rather than A = f(Z) (gelu, silu)
    bint _act_keeps_z "FP_ACT_KEEPS_Z"(int act)

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
    void fp_bias_act_f(float* Z, Py_ssize_t ld, const float* b, Py_ssize_t n,
                       Py_ssize_t c, int act)
    void fp_bias_act_d(double* Z, Py_ssize_t ld, const double* b, Py_ssize_t n,
                       Py_ssize_t c, int act)
    void fp_deriv_colsum_f(float* D, const float* A, Py_ssize_t n, Py_ssize_t c,
                           Py_ssize_t ld, int act, float* gb)
    void fp_deriv_colsum_d(double* D, const double* A, Py_ssize_t n, Py_ssize_t c,
                           Py_ssize_t ld, int act, double* gb)
    void fp_bias_act_ext_f(float* Z, Py_ssize_t ld, float* K, const float* b,
                           Py_ssize_t n, Py_ssize_t c, int act)
    void fp_bias_act_ext_d(double* Z, Py_ssize_t ld, double* K, const double* b,
                           Py_ssize_t n, Py_ssize_t c, int act)
    void fp_deriv_ext_f(float* D, const float* A, const float* K, Py_ssize_t n,
                        Py_ssize_t c, Py_ssize_t ld, int act, float* gb)
    void fp_deriv_ext_d(double* D, const double* A, const double* K, Py_ssize_t n,
                        Py_ssize_t c, Py_ssize_t ld, int act, double* gb)
    int fp_copy_check_f(float* dst, const float* src, Py_ssize_t n)
    int fp_copy_check_d(double* dst, const double* src, Py_ssize_t n)
    bint fp_blas_warm_first(int dbl)
    bint fp_blas_is_warm(int dbl)

cdef extern from "fp_dropout.h" nogil:
    unsigned long long fp_dropout_key(unsigned long long seed, Py_ssize_t b, Py_ssize_t l)
    unsigned long long fp_dropout_threshold(double p)
    void fp_dropout_apply_f(float* A, Py_ssize_t ld, Py_ssize_t n, Py_ssize_t c,
                            unsigned long long key, Py_ssize_t r0, Py_ssize_t j0,
                            unsigned long long thr, float scale)
    void fp_dropout_apply_d(double* A, Py_ssize_t ld, Py_ssize_t n, Py_ssize_t c,
                            unsigned long long key, Py_ssize_t r0, Py_ssize_t j0,
                            unsigned long long thr, double scale)
    void fp_dropout_unscale_f(float* D, float* A, Py_ssize_t n, Py_ssize_t c,
                              Py_ssize_t ld, unsigned long long key, Py_ssize_t r0,
                              Py_ssize_t j0, unsigned long long thr, double scale)
    void fp_dropout_unscale_d(double* D, double* A, Py_ssize_t n, Py_ssize_t c,
                              Py_ssize_t ld, unsigned long long key, Py_ssize_t r0,
                              Py_ssize_t j0, unsigned long long thr, double scale)
    void fp_dropout_deriv_colsum_f(float* D, const float* A, Py_ssize_t n, Py_ssize_t c,
                                   Py_ssize_t ld, int act, float* gb,
                                   unsigned long long key, Py_ssize_t r0, Py_ssize_t j0,
                                   unsigned long long thr, double scale)
    void fp_dropout_deriv_colsum_d(double* D, const double* A, Py_ssize_t n,
                                   Py_ssize_t c, Py_ssize_t ld, int act, double* gb,
                                   unsigned long long key, Py_ssize_t r0, Py_ssize_t j0,
                                   unsigned long long thr, double scale)

cdef extern from "fp_optim.h" nogil:
    int fp_dispatch_enabled()
    double fp_sumsq_f(const float* a, Py_ssize_t n)
    double fp_sumsq_d(const double* a, Py_ssize_t n)
    double fp_grad_sumsq_f(const float* g, const float* p, Py_ssize_t n_coef,
                           Py_ssize_t n, float alpha, float scale)
    double fp_grad_sumsq_d(const double* g, const double* p, Py_ssize_t n_coef,
                           Py_ssize_t n, double alpha, double scale)
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
    double fp_rmsprop_f(float* p, const float* g1, const float* g2, float* v,
                        Py_ssize_t n_coef, Py_ssize_t n, float scale, float alpha,
                        float lr, float rho, float eps)
    double fp_rmsprop_d(double* p, const double* g1, const double* g2, double* v,
                        Py_ssize_t n_coef, Py_ssize_t n, double scale, double alpha,
                        double lr, double rho, double eps)
    double fp_adamw_f(float* p, const float* g1, const float* g2, float* m, float* v,
                      Py_ssize_t n_coef, Py_ssize_t n, float scale, float lr,
                      float decay, float bc1, float bc2, float b1, float b2, float eps)
    double fp_adamw_d(double* p, const double* g1, const double* g2, double* m,
                      double* v, Py_ssize_t n_coef, Py_ssize_t n, double scale,
                      double lr, double decay, double bc1, double bc2, double b1,
                      double b2, double eps)

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

cdef extern from "<math.h>" nogil:
    double _log_double "log"(double x)

cdef struct Net:
    int n_layers            # L, the number of weight layers
    Py_ssize_t* sizes       # L + 1 unit counts
    Py_ssize_t* w_off       # L offsets of W_l in the flat parameter vector
    Py_ssize_t* b_off       # L offsets of b_l
    Py_ssize_t* a_off       # L offsets of A_l / delta_l in the workspaces
    Py_ssize_t n_coef       # number of weights (the L2-penalised prefix)
    Py_ssize_t n_params
    Py_ssize_t work_size    # rows * sum(sizes[1:]): length the workspaces need, plus
                            #   rows * sum(sizes[1:-1]) when z_shift > 0
    Py_ssize_t z_shift      # gelu, silu: where Z_l of the hidden layers sits, after
                            #   A_l: at A_l + z_shift (z_shift = rows * sum(sizes[1:]));
                            #   0 for the activations that read A only
    int activation
    int loss
    int n_threads
    double huber_delta      # loss LOSS_HUBER: where it turns from quadratic to linear
    # training with dropout: the rate of each hidden layer (n_layers - 1 of them), or
    # NULL when no layer drops (every pass but a training epoch), and the epoch's seed
    # (csrc/fp_dropout.h)
    const double* dropout
    unsigned long long dropout_seed

cdef struct CSR:
    # A block of rows of a CSR matrix: the first layer's input when X is sparse.
    const void* data          # floating values (nnz,)
    const Py_ssize_t* indices # column of each value (nnz,), checked < n_features
    const Py_ssize_t* indptr  # (n_samples + 1,), checked monotone
    const Py_ssize_t* rows    # the block's row ids, or NULL for row0, row0 + 1, ...
    Py_ssize_t row0

cdef struct Step:
    # One optimizer step's scalars (the solver state arrays are passed alongside).
    int solver
    double scale          # 1 / (the batch's sample-weight sum)
    double alpha
    double lr             # sgd, rmsprop, adamw: learning rate;
                          # adam: lr sqrt(1 - b2^t) / (1 - b1^t)
    double momentum
    int nesterov
    double beta_1
    double beta_2
    double epsilon
    double rho            # rmsprop: the decay of the mean square
    double weight_decay   # adamw: lambda, the decoupled weight decay
    double decay          # adamw: 1 - lr lambda, the weights' shrink factor
    double bias_1         # adamw: 1 - beta_1^t
    double bias_2         # adamw: 1 - beta_2^t

cdef struct SplitShared:
    # What the team shares; everything else is per thread.
    double data[FP_TEAM_MAX]   # per part: its summed loss (row split)
    double sq[FP_TEAM_MAX]     # per part: its sum of squared weights
    double norm[FP_TEAM_MAX]   # per segment: its squared gradient norm (clipping)
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
    double max_norm       # clip each minibatch's gradient to this L2 norm; 0: off
    bint check_finite
