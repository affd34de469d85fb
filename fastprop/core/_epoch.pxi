# The epoch driver: one pass of minibatch training over the data, without the GIL and
# without allocating. Whole minibatches run on the calling thread (_train_epoch_impl);
# minibatches split by rows (_split_worker) or cut by units (_units_worker) run on a
# team, each member taking its parts of the fixed partition (_partition.pxi).

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
            _forward(net, params, Xb, e.csr, nb, acts, b, 0)
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
            elif e.solver == SOLVER_ADAMW:
                e.counter[0] += 1
                _adamw_bias(&st, e.counter[0])
            if e.max_norm > 0:
                sq = _backward_clipped_update(
                    net, params, Xb, e.csr, nb, acts, deltas, grads,
                    <floating*> e.state_1, <floating*> e.state_2, &st, e.max_norm, b)
            else:
                sq = _backward_update(net, params, Xb, e.csr, nb, acts, deltas, grads,
                                      <floating*> e.state_1, <floating*> e.state_2, &st, b)
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


# -- Minibatches split by rows ---------------------------------------------------------
# Each minibatch is cut into K parts of rows at places that depend only on its length
# and K (_part_rows). Part h runs forward, loss and backward into its own gradient
# buffer (grads for part 0, grads2 + (h - 1) n_params for the others); then the flat
# vector is cut into K segments, and the optimizer step on each adds the parts'
# gradients in part order as it reads them. A team of nt threads runs parts and
# segments h = tid, tid + nt, ... with BLAS on one thread each; one thread runs the same
# calls one after the other. The arithmetic is the same either way, so the model is
# bitwise the same for every thread count. Two barriers per minibatch keep the phases
# apart.

cdef double _part_gradient(
    Net* net, const floating* params, const floating* Xb, const CSR* csr,
    Py_ssize_t rows, const floating* Yb, const floating* swb,
    floating* acts, floating* deltas, floating* grads,
    Py_ssize_t b, Py_ssize_t r0,   # the minibatch, and where the part's rows start in it
) noexcept nogil:
    """Raw gradient sums of one part of a minibatch into ``grads``; returns its loss
    sum."""
    if rows == 0:
        memset(grads, 0, net.n_params * sizeof(floating))
        return 0.0
    memset(grads + net.n_coef, 0, (net.n_params - net.n_coef) * sizeof(floating))
    return _block_gradient(net, params, Xb, csr, rows, Yb, swb, acts, deltas, grads,
                           <floating> 0.0, b, r0)


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
                sh.data[h] = _part_gradient(
                    net, params, Xb, csr_h, rows, Yb, swb, acts + h * net.work_size,
                    deltas + h * net.work_size, grads if h == 0 else grads2 + (h - 1) * P,
                    b, r0)
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
            elif e.solver == SOLVER_ADAMW:
                t += 1
                _adamw_bias(&st, t)
            if e.max_norm > 0:
                _clipped_step_segments(e, params, grads, &st, tid, nt, True)
            else:
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


cdef void _clipped_step_segments(
    Epoch* e, floating* params, floating* grads, Step* st, int tid, int nt,
    bint add_parts,
) noexcept nogil:
    """The optimizer step of a team's minibatch with its gradient clipped to the global
    L2 norm e.max_norm, in the K segments of the flat vector the row split steps in:
    each segment (with ``add_parts``, first the sum of the parts' gradients into grads,
    in part order) gives its squared norm; after a barrier every member adds them in
    segment order, so all scale alike, and steps its segments. Sets sh.sq per
    segment."""
    cdef Net* net = e.net
    cdef SplitShared* sh = e.sh
    cdef int h, c, K = e.parts
    cdef Py_ssize_t P = net.n_params, seg_lo, seg_hi, coef_hi
    cdef floating* grads2 = <floating*> e.grads2
    cdef double total
    h = tid
    while h < K:
        seg_lo = P * h // K // 16 * 16
        seg_hi = P * (h + 1) // K // 16 * 16 if h < K - 1 else P
        coef_hi = net.n_coef if net.n_coef < seg_hi else seg_hi
        if add_parts:
            for c in range(1, K):
                _add_into(grads + seg_lo, grads2 + (c - 1) * P + seg_lo, seg_hi - seg_lo)
        sh.norm[h] = _grad_sumsq(grads + seg_lo, params + seg_lo,
                                 coef_hi - seg_lo if coef_hi > seg_lo else 0,
                                 seg_hi - seg_lo, st)
        h += nt
    fp_team_barrier(&sh.team, tid, nt)
    total = sh.norm[0]
    for c in range(1, K):
        total += sh.norm[c]
    _clip_norm(st, total, e.max_norm)
    h = tid
    while h < K:
        seg_lo = P * h // K // 16 * 16
        seg_hi = P * (h + 1) // K // 16 * 16 if h < K - 1 else P
        coef_hi = net.n_coef if net.n_coef < seg_hi else seg_hi
        sh.sq[h] = _update_segment(
            params, grads, NULL, <floating*> e.state_1, <floating*> e.state_2, seg_lo,
            coef_hi - seg_lo if coef_hi > seg_lo else 0, seg_hi - seg_lo, st)
        h += nt


# What each team member runs (csrc/fp_team.h, fp_pool_run): the epoch's worker for
# member tid of nt, in the pass's precision.
cdef void _split_task_f(void* p, int tid, int nt) noexcept nogil:
    _split_worker(<Epoch*> p, <float*> (<Epoch*> p).params, tid, nt)


cdef void _split_task_d(void* p, int tid, int nt) noexcept nogil:
    _split_worker(<Epoch*> p, <double*> (<Epoch*> p).params, tid, nt)


# -- Minibatches cut by units ----------------------------------------------------------
# Every layer's units (the columns of its output, the rows of its weights) fall into K
# parts at places that depend only on the layer's width and K (_unit_part). Part h of the
# forward product is A_{l-1} W_l[:, part]; of the backward ones, dW_l[part, :] =
# A_{l-1}[:, part]^T delta_l and delta_{l-1}[:, part] = delta_l W_l[part, :]^T. Rows part
# of W_l are read by nothing else in the minibatch, so the optimizer steps them right
# there. A team of nt threads runs parts h = tid, tid + nt, ... of every product
# (splitting the packing of the weights too, which a row split repeats); one thread runs
# the same calls one after the other, so the model is bitwise the same for every thread
# count. A barrier after each layer, one around the loss and one per minibatch keep the
# phases apart.

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
    cdef bint clip = e.max_norm > 0
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
                                              net.activation if l < L - 1 else ACT_IDENTITY,
                                              net.z_shift)
                        if _drops(net, l):
                            _dropout_cols(net, l, Z + lo, n_o, nb, hi - lo, b, 0, lo)
                    h += nt
                if l < L - 1 or out_cut:
                    fp_team_barrier(&sh.team, tid, nt)
                A_prev = Z
            # -- loss + delta_L on thread 0, then the step of the output intercepts ---
            st.scale = 1.0 / s
            if e.solver == SOLVER_ADAM:
                t += 1
                _adam_lr(&st, e.hyper, t)
            elif e.solver == SOLVER_ADAMW:
                t += 1
                _adamw_bias(&st, t)
            if tid == 0:
                memset(grads + net.b_off[L - 1], 0, n_out * sizeof(floating))
                data = _loss_delta(net, acts + last, Yb, swb, nb, deltas + last,
                                   grads + net.b_off[L - 1])
                acc += (data / s + 0.5 * alpha * sq / s) * nb
                if not clip:
                    _update_segment(params, grads, NULL, state_1, state_2,
                                    net.b_off[L - 1], 0, n_out, &st)
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
                            if _drops(net, l - 1):
                                _dropout_derivative_colsum(
                                    net, l - 1, D_prev + lo, A_prev + lo, nb, hi - lo, n_in,
                                    grads + net.b_off[l - 1] + lo, b, 0, lo)
                            else:
                                _derivative_colsum(D_prev + lo, A_prev + lo, nb, hi - lo,
                                                   n_in, net.activation,
                                                   grads + net.b_off[l - 1] + lo,
                                                   net.z_shift)
                            # b_{l-1}[lo:hi] was last used in the forward pass
                            if not clip:
                                _update_segment(params, grads, NULL, state_1, state_2,
                                                net.b_off[l - 1] + lo, 0, hi - lo, &st)
                        # W_l[lo:hi, :] was read only by this part's delta product
                        if not clip:
                            sq_part[h] += _update_segment(
                                params, grads, NULL, state_1, state_2,
                                net.w_off[l] + lo * n_o, (hi - lo) * n_o,
                                (hi - lo) * n_o, &st)
                    h += nt
                if l > 0:
                    fp_team_barrier(&sh.team, tid, nt)
            if clip:
                # the steps wait for the norm of the whole gradient
                fp_team_barrier(&sh.team, tid, nt)
                _clipped_step_segments(e, params, grads, &st, tid, nt, False)
            else:
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


cdef Epoch _epoch(
    Net* net, int parts, floating* params, floating* grads, floating* grads2,
    const floating* X, CSR* csr, Py_ssize_t n,
    const floating* Y, const floating* sample_weight, const Py_ssize_t* order,
    Py_ssize_t batch_size, double alpha,
    floating* acts, floating* deltas, floating* x_buf, floating* y_buf, floating* sw_buf,
    int solver, floating* state_1, floating* state_2, const double* hyper,
    Py_ssize_t* counter, double* acc_out, Py_ssize_t signal_every, bint check_finite,
    double max_norm,
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
    e.max_norm = max_norm
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


cdef int _set_dropout(Net* net, const double[::1] dropout,
                      unsigned long long seed) except -1:
    """Point ``net`` at the hidden layers' dropout rates (checked: one per hidden layer,
    each in [0, 1)); it stays off (NULL) when there are none or all are 0."""
    cdef Py_ssize_t l
    cdef bint on = False
    if dropout is None:
        return 0
    if dropout.shape[0] != net.n_layers - 1:
        raise ValueError(f"dropout must hold one rate per hidden layer "
                         f"({net.n_layers - 1}), got {dropout.shape[0]}.")
    for l in range(dropout.shape[0]):
        if not (0.0 <= dropout[l] < 1.0):
            raise ValueError(f"dropout rates must be in [0, 1), got {dropout[l]}.")
        if dropout[l] > 0:
            on = True
    if on:
        net.dropout = &dropout[0]
        net.dropout_seed = seed
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
    int solver,                          # 0 sgd, 1 adam, 2 rmsprop, 3 adamw
    floating[::1] state_1 not None,               # sgd: velocity; adam, adamw: first moment m;
                                         #     rmsprop: mean square v
    floating[::1] state_2 not None,               # adam, adamw: second moment v (unused by sgd, rmsprop)
    const double[::1] hyper not None,             # (learning_rate, momentum, nesterov, beta_1, beta_2, epsilon
                                         #     [, rho, weight_decay]: rmsprop, adamw)
    Py_ssize_t[::1] counter not None,             # (1,): adam's / adamw's update count t, advanced in place
    floating[::1] grads2 not None,                # scratch ((K - 1) * n_params,) for a row split
                                         #     in K parts (epoch_partition), else unused
    int n_threads,                       # team size for split or unit-split minibatches
                                         #     (at most the parts are used): BLAS must run
                                         #     on one thread when it is 2 or more
    bint check_finite=False,             # check every gathered X row for NaN and infinity
    double max_grad_norm=0.0,            # clip each minibatch's gradient to this global
                                         #     L2 norm; 0 for no clipping
    double huber_delta=1.0,              # loss huber's delta (> 0; other losses ignore it)
    const double[::1] dropout=None,      # (n_layers - 1,) dropout rate of each hidden layer,
                                         #     each in [0, 1), or None for none
    unsigned long long dropout_seed=0,   # the epoch's masks (csrc/fp_dropout.h)
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

    With ``max_grad_norm`` > 0, each minibatch's gradient (the L2 term included) is
    scaled down to that global L2 norm when it is longer, before the optimizer step
    (which then runs after the whole backward pass, not fused into it).
    With ``dropout``, hidden layer l's outputs are multiplied in training by a mask of
    0 (rate ``dropout[l]``) and 1 / (1 - dropout[l]) (inverted dropout), drawn from
    ``dropout_seed``, the minibatch's index in the epoch, the layer, the row's index in
    the minibatch and the unit's (``fastprop.reference.dropout_mask``): the same masks
    for every partition and thread count.

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
    _check_max_norm(max_grad_norm)
    parts = _epoch_net(&net, sizes, activation, loss, batch_size, -1, 0, &kind,
                       huber_delta)
    try:
        _set_dropout(&net, dropout, dropout_seed)
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
            solver, &state_1[0],
            &state_2[0] if solver == SOLVER_ADAM or solver == SOLVER_ADAMW else NULL,
            &hyper[0], &counter[0], &acc, sig, check_finite, max_grad_norm)
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
    floating[::1] grads2 not None, int n_threads, double max_grad_norm=0.0,
    double huber_delta=1.0,
    const double[::1] dropout=None, unsigned long long dropout_seed=0,
):
    """``train_epoch`` for a CSR X: minibatch rows are read in place by index (no
    gathering, no densifying), the first layer's products are sparse x dense, and
    minibatches are split by rows only (``epoch_partition(sizes, batch_size, nnz,
    n_rows)``), never by units. ``dropout`` and ``dropout_seed`` as in ``train_epoch``."""
    cdef Py_ssize_t n, sig
    cdef double acc = 0.0
    cdef int kind = PASS_WHOLE, parts
    cdef CSR csr
    cdef Epoch e
    cdef Net net
    _check_max_norm(max_grad_norm)
    parts = _epoch_net(&net, sizes, activation, loss, batch_size, X_data.shape[0],
                       X_indptr.shape[0] - 1, &kind, huber_delta)
    try:
        _set_dropout(&net, dropout, dropout_seed)
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
            solver, &state_1[0],
            &state_2[0] if solver == SOLVER_ADAM or solver == SOLVER_ADAMW else NULL,
            &hyper[0], &counter[0], &acc, sig, False, max_grad_norm)
        with nogil:
            _run_epoch(&e, kind, floating is float, n_threads, NULL)
        return acc
    finally:
        free(net.sizes)
